//! Simulated instruments: plausible data with known ground truth, for the demo and tests.
pub mod phase_sensor;
pub mod spectrometer;
pub mod tcspc_histogram;
pub mod tcspc_records;
