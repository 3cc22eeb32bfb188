//! flowdaq-analytics: the numbers flowdaq extracts from raw instrument data.
//!
//! Every function here is a pure kernel over Arrow arrays or plain slices, in the style of the
//! arrow-rs compute kernels: whole batches in, preallocated outputs, nulls handled explicitly,
//! no per-row allocation. Nothing here does I/O, spawns tasks or knows about DataFusion; the
//! server (`flowdaq-daq`) wires these kernels into its pipeline and its SQL functions.
//!
//! - [`spectral`]: PL and absorption spectra (peak, FWHM in nm and eV, absorbance, PLQY, size).
//! - [`tcspc`]: photon time tags (record decoding, histograms, lifetime fits, phasors).
//! - [`flow`]: phase-sensor traces (interfaces, velocity, segments, residence time, Re/Ca/We/Bo/Pe).

mod bitmask;
pub mod flow;
pub mod spectral;
pub mod tcspc;
