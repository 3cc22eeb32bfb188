//! File replay: instrument files turned into the same wire messages a live instrument sends,
//! so `flowdaq replay` yields the same rows and features as a live stream.
pub mod csv_spectra;
