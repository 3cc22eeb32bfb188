//! TCSPC kernels: photon records in, micro-time histograms, lifetimes and phasors out.
//!
//! Fluorescence lifetime is flowdaq's quality probe for quantum dots, and photon streams are its
//! highest data rate, so everything here is a pure, allocation-conscious kernel: no file opening,
//! no async, no per-photon allocation, and hostile bytes produce a [`TcspcError`], never a panic.
//!
//! - [`records`]: raw 32-bit PicoQuant TTTR records and 64-bit time tags -> photon columns.
//! - [`ptu`]: the PicoQuant tagged header (PTU and PHU files) and a bounded-memory record reader.
//! - [`legacy`]: the fixed headers of legacy PicoQuant `.ht3` and `.pt3` files.
//! - [`tttr_file`]: which time-tagged format a file is, from its first bytes.
//! - [`histogram`]: micro-time histograms per channel, windows, count rates and pile-up.
//! - [`fit`]: multi-exponential reconvolution fits (Neyman least squares or Poisson MLE).
//! - [`phasor`]: IRF-calibrated phasor coordinates and phasor lifetimes.

pub mod fit;
pub mod histogram;
pub mod legacy;
pub mod phasor;
pub mod phu;
pub mod ptu;
pub mod records;
pub mod tttr_file;

/// Errors of every TCSPC kernel.
#[derive(Debug, thiserror::Error)]
pub enum TcspcError {
    /// The TTTR record type code is not one flowdaq decodes.
    #[error("unknown TTTR record type {0:#010x}")]
    UnknownRecordType(u32),
    /// A record buffer ended inside a record.
    #[error("buffer of {len} bytes is not a whole number of {record_bytes}-byte records")]
    PartialRecord {
        /// Length of the buffer in bytes.
        len: usize,
        /// Size of one record in bytes.
        record_bytes: usize,
    },
    /// Columns handed to one kernel had different lengths.
    #[error("column lengths differ: {0}")]
    LengthMismatch(String),
    /// An argument is out of its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The file does not start with the expected PicoQuant magic.
    #[error("not a PicoQuant {expected} file (magic {found:?})")]
    BadMagic {
        /// The file kind expected ("PTU" or "PHU").
        expected: &'static str,
        /// The first bytes found, lossily as text.
        found: String,
    },
    /// The input ended before a structure it declares.
    #[error("truncated input: {0}")]
    Truncated(String),
    /// The tagged header is malformed or declares absurd values.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// The caller's reader failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// Building an Arrow batch failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The data cannot be fitted (too few bins, no signal, non-finite values).
    #[error("cannot fit: {0}")]
    Fit(String),
}

/// Result alias of the TCSPC kernels.
pub type Result<T, E = TcspcError> = std::result::Result<T, E>;
