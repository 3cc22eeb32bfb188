//! Spectral kernels: PL and UV-vis spectra in, the features the optimizer and chemists use out.
//!
//! A batch of spectra is an Arrow list array (one list per spectrum, Float32 or Float64 pixels)
//! sharing one wavelength axis (one per calibration). Kernels walk the list offsets over the flat
//! child buffer, reuse one set of scratch buffers for the whole batch and return Arrow arrays
//! sized to the number of spectra. They never do I/O and never panic on hostile data: bad rows
//! get [`QualityFlags`] and nulls, bad calls get a [`SpectralError`].
//!
//! - [`axis`]: the validated wavelength axis (ascending or descending, non-uniform), nm <-> eV.
//! - [`mod@preprocess`]: dark subtraction and absorbance `A = -log10((S - D) / (R - D))`.
//! - [`smoothing`]: Savitzky-Golay smoothing (scipy `savgol_filter(mode="interp")`).
//! - [`baseline`]: linear edge baseline and asymmetric least squares (pybaselines `asls`).
//! - [`peaks`]: local maxima with prominence, exactly as `scipy.signal.find_peaks`/`peak_prominences`.
//! - [`width`]: widths at a relative height (scipy `peak_widths`) and sub-pixel peak position.
//! - [`integrate`]: trapezoid integral and emission quantiles (interquartile range).
//! - [`features`]: the PL entry points [`pl_features`] and [`PlAnalyzer`] (the same with the
//!   axis prepared once per calibration) and their output schema.
//! - [`mod@absorbance`]: the absorbance entry points [`absorbance_features`] and
//!   [`AbsorbanceAnalyzer`] (band edge, OD, size).
//! - [`plqy`]: relative photoluminescence quantum yield against a reference dye.
//! - [`size`]: effective-mass (Brus) size from the band-edge energy, material constants.
//! - [`flags`]: the quality bitmask.

// `!(a > b)` is deliberate throughout: it is true for NaN, which must take the safe branch.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod absorbance;
pub mod axis;
pub mod baseline;
mod error;
pub mod features;
pub mod flags;
mod input;
pub mod integrate;
mod output;
pub mod peaks;
pub mod plqy;
pub mod preprocess;
mod scan;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod size;
pub mod smoothing;
pub mod width;

pub use absorbance::{
    absorbance_features, AbsorbanceAnalyzer, AbsorbanceFeatures, AbsorbanceOptions, BeerLambert,
};
pub use axis::{ev_to_nm, nm_to_ev, WavelengthAxis, HC_EV_NM};
pub use baseline::{AslsParams, Baseline};
pub use error::SpectralError;
pub use features::{pl_features, PeakOptions, PlAnalyzer, PlFeatures};
pub use flags::QualityFlags;
pub use peaks::{find_peaks, Peak, PeakScratch};
pub use plqy::{relative_plqy, PlqyReference};
pub use preprocess::{absorbance, dark_subtract, preprocess, Preprocessing};
pub use size::MaterialConstants;
pub use smoothing::SavitzkyGolay;
pub use width::{peak_width, PeakWidth};
