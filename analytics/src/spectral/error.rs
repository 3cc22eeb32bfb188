//! The one error type of the spectral kernels.
//!
//! Errors are for calls that cannot be answered at all (a malformed axis, a spectrum whose length
//! does not match its axis, nonsensical options). Problems of a single spectrum's *content*
//! (NaN pixels, saturation, no peak) are never errors: they become quality flags on its row.

use arrow_schema::{ArrowError, DataType};

/// Errors of the spectral kernels.
#[derive(Debug, thiserror::Error)]
pub enum SpectralError {
    /// The wavelength axis has no pixel.
    #[error("the wavelength axis is empty")]
    EmptyAxis,
    /// A wavelength is NaN, infinite, zero or negative.
    #[error("wavelength axis value {value} at pixel {index} is not a finite positive wavelength")]
    InvalidAxisValue {
        /// Pixel index of the offending value.
        index: usize,
        /// The offending value (nm).
        value: f64,
    },
    /// The wavelength axis is neither strictly increasing nor strictly decreasing.
    #[error("the wavelength axis is not strictly monotonic at pixel {index}")]
    AxisNotMonotonic {
        /// First pixel index that breaks the monotonic order.
        index: usize,
    },
    /// A spectrum's pixel count differs from the axis length.
    #[error("spectrum {row} has {actual} pixels but the wavelength axis has {expected}")]
    LengthMismatch {
        /// Row (spectrum index) in the batch.
        row: usize,
        /// Axis length.
        expected: usize,
        /// Pixels in the spectrum.
        actual: usize,
    },
    /// A calibration spectrum (dark, reference) or a second input array has the wrong length.
    #[error("{what} has length {actual}, expected {expected}")]
    InputLength {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// The array is not a list of Float32 or Float64 spectra.
    #[error("expected a List, LargeList or FixedSizeList of Float32 or Float64, got {0}")]
    UnsupportedType(DataType),
    /// An option is out of its documented range.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// Option name.
        name: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A configured wavelength lies outside the (windowed) axis.
    #[error("{what} {nm} nm lies outside the wavelength range [{min}, {max}] nm")]
    OutsideAxis {
        /// Which configured wavelength.
        what: &'static str,
        /// The configured wavelength (nm).
        nm: f64,
        /// Shortest wavelength of the range (nm).
        min: f64,
        /// Longest wavelength of the range (nm).
        max: f64,
    },
    /// A slice kernel was given NaN or infinite values.
    #[error("the spectrum contains NaN or infinite values")]
    NonFiniteValues,
    /// The output would not fit Arrow's 32-bit list offsets.
    #[error("output of {0} values exceeds the 32-bit list offset range")]
    TooLarge(usize),
    /// Arrow refused to build an output array.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}
