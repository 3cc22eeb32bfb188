//! Simulated instruments: plausible data with known ground truth, for the demo and tests.
pub mod spectrometer;
