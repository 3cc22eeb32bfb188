//! Phase-sensor ("flow") kernels: two optical traces in, velocity, segments, residence time
//! and flow-regime numbers out.
//!
//! Two cheap optical sensors a known distance apart on the tube see the light change as
//! plug/carrier interfaces pass (domain primer s. 4). Everything flowdaq knows about the flow
//! comes from those two voltage traces, and the reaction time of every spectrum comes from the
//! flow: so these kernels measure the velocity twice (matched interfaces and cross-correlation,
//! cross-checked), never guess on bad data (flags and nulls, never a panic), and integrate the
//! velocity history exactly for the reaction time. No I/O, no async, no per-sample allocation.
//!
//! - [`interfaces`]: interface detection with drift-following hysteresis thresholds.
//! - [`segments`]: plugs and carrier segments, merged/split/stopped classification.
//! - [`velocity`]: velocity from interfaces matched between the two sensors.
//! - [`xcorr`]: velocity from the FFT cross-correlation of the traces (parabolic sub-sample).
//! - [`stability`]: segment frequency, coefficients of variation, interface-free gaps.
//! - [`dimensionless`]: Re, Ca, We, Bo, Pe, diffusion time and Damkohler number, with flags.
//! - [`residence`]: reaction time of each spectrum from a piecewise-constant velocity schedule.
//! - [`analyzer`]: [`FlowAnalyzer`], the per-window entry point tying the kernels together.
//! - [`output`]: the per-window and per-segment Arrow outputs.
//! - [`flags`]: the quality bitmask.

// `!(a > b)` is deliberate throughout: it is true for NaN, which must take the safe branch.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod analyzer;
pub mod dimensionless;
mod error;
pub mod flags;
pub mod interfaces;
pub mod output;
pub mod residence;
pub mod segments;
pub mod stability;
pub mod velocity;
pub mod xcorr;

pub use analyzer::{FlowAnalyzer, FlowOptions, FlowWindow, SensorPair};
pub use dimensionless::{
    design_numbers, DesignNumbers, FluidProperties, PhaseProperties, WettingPhase,
};
pub use error::FlowError;
pub use flags::FlowFlags;
pub use interfaces::{DetectorOptions, Interface, InterfaceDetector, TraceSample, TraceSummary};
pub use output::{FlowFeatures, FlowFeaturesBuilder, FlowSegments, FlowSegmentsBuilder};
pub use residence::{reaction_times, ReactorGeometry, ResidenceTimes, VelocitySchedule};
pub use segments::{
    assign_lengths, classify_segments, phase_stats, segments_from_interfaces, Phase, PhaseStats,
    PlugPolarity, Segment, SegmentRules,
};
pub use stability::{coefficient_of_variation, longest_gap_s, segment_frequency_hz};
pub use velocity::{velocity_from_pairs, InterfaceMatcher, InterfaceVelocity, MatchedPair};
pub use xcorr::{CrossCorrelator, XcorrPeak};
