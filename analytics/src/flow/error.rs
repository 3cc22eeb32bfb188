//! The one error type of the flow kernels.
//!
//! Errors are for calls that cannot be answered at all: a configuration that makes no physical
//! sense (zero sensor spacing, a velocity range upside down), a velocity schedule out of time
//! order, inputs of the wrong Arrow type. Problems of the *data* (NaN samples, a constant trace,
//! swapped sensors, a stopped flow) are never errors: they become [`FlowFlags`](super::FlowFlags).

use arrow_schema::{ArrowError, DataType};

/// Errors of the flow kernels.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// An option or configured quantity is out of its documented range.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// Option name.
        name: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A velocity schedule entry is out of time order.
    #[error("velocity schedule entry {index}: {reason}")]
    InvalidSchedule {
        /// Index of the offending entry.
        index: usize,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Two inputs that go row by row have different lengths.
    #[error("{what} has length {actual}, expected {expected}")]
    LengthMismatch {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// An Arrow input has a type the kernel does not take.
    #[error("{what}: unsupported Arrow type {data_type}")]
    UnsupportedType {
        /// Which input.
        what: &'static str,
        /// The type given.
        data_type: DataType,
    },
    /// Arrow refused to build an output array.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}
