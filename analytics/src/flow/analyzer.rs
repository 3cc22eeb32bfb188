//! The per-window entry point: the two traces of a phase-sensor pair in, one row of flow
//! features (and the window's segments) out.
//!
//! [`FlowAnalyzer`] owns the configuration and every scratch buffer, so a stream of windows
//! allocates nothing once the buffers have grown. It runs the kernels of the sibling modules
//! in order (interfaces on both traces, matched-interface velocity, cross-correlation velocity,
//! their cross-check, segments, stability, design numbers) and turns every content problem into
//! a [`FlowFlags`] bit with null values, never a panic or an error.

use arrow_array::{Array, Float32Array, Float64Array};

use super::dimensionless::{design_numbers, DesignNumbers, FluidProperties};
use super::interfaces::{
    validate_sample_rate, DetectorOptions, Interface, InterfaceDetector, TraceSample,
};
use super::segments::{
    assign_lengths, classify_segments, phase_stats, segments_from_interfaces, Phase, PhaseStats,
    PlugPolarity, Segment, SegmentRules,
};
use super::stability::{longest_gap_s, segment_frequency_hz};
use super::velocity::{velocity_from_pairs, InterfaceMatcher, MatchedPair};
use super::xcorr::CrossCorrelator;
use super::{FlowError, FlowFlags};

/// A phase-sensor pair: two optical sensors on the tube, A upstream of B.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorPair {
    /// Distance from sensor A to sensor B along the tube (mm).
    pub spacing_mm: f64,
    /// Sample rate of both traces (Hz).
    pub sample_rate_hz: f64,
    /// Which level the plugs give.
    pub plug_polarity: PlugPolarity,
}

impl SensorPair {
    /// Checks spacing and sample rate.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`] for a non-positive or non-finite value.
    pub fn validate(&self) -> Result<(), FlowError> {
        if !(self.spacing_mm.is_finite() && self.spacing_mm > 0.0) {
            return Err(FlowError::InvalidOption {
                name: "spacing_mm",
                reason: "must be finite and > 0",
            });
        }
        validate_sample_rate(self.sample_rate_hz)
    }
}

/// Options of [`FlowAnalyzer`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlowOptions {
    /// Interface detection.
    pub detector: DetectorOptions,
    /// Plausible velocities `(min, max)` (mm/s): both velocity methods search lags between
    /// `spacing / max` and `spacing / min` (of either sign). Default (1, 500); the domain primer
    /// quotes 12-100 mm/s for a working reactor.
    pub velocity_range_mm_per_s: (f64, f64),
    /// Relative disagreement of the two velocity estimates above which a window is
    /// `VELOCITY_MISMATCH`. Default 0.03.
    pub velocity_tolerance: f64,
    /// Cross-correlation coefficient below which the cross-correlation velocity is null and the
    /// window `WEAK_CORRELATION`. Default 0.3.
    pub min_correlation: f64,
    /// No interface for longer than this (s) is `STOPPED_FLOW`. Default 2 s.
    pub stopped_flow_s: f64,
    /// A segment at least this many times the median of its phase is `MERGED_SEGMENT`.
    /// Default 1.6 (two coalesced plugs are about 2x).
    pub merged_ratio: f64,
    /// A segment at most this fraction of the median of its phase is `SPLIT_SEGMENT`.
    /// Default 0.6.
    pub split_ratio: f64,
    /// Largest median relative difference between the durations of the same segments at the
    /// two sensors under a velocity method's pairing before the pairing counts as slipped
    /// (`INCONSISTENT_MATCH`, that velocity null). Default 0.05.
    pub max_duration_mismatch: f64,
    /// Fluid properties for the design numbers; `None`: no design numbers.
    pub fluid: Option<FluidProperties>,
}

impl Default for FlowOptions {
    fn default() -> Self {
        Self {
            detector: DetectorOptions::default(),
            velocity_range_mm_per_s: (1.0, 500.0),
            velocity_tolerance: 0.03,
            min_correlation: 0.3,
            stopped_flow_s: 2.0,
            merged_ratio: 1.6,
            split_ratio: 0.6,
            max_duration_mismatch: 0.05,
            fluid: None,
        }
    }
}

impl FlowOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`] for a value outside its documented range.
    pub fn validate(&self) -> Result<(), FlowError> {
        let bad = |name, reason| Err(FlowError::InvalidOption { name, reason });
        self.detector.validate()?;
        let (lo, hi) = self.velocity_range_mm_per_s;
        if !(lo > 0.0 && hi > lo && hi.is_finite()) {
            return bad(
                "velocity_range_mm_per_s",
                "must satisfy 0 < min < max < inf",
            );
        }
        if !(self.velocity_tolerance.is_finite() && self.velocity_tolerance > 0.0) {
            return bad("velocity_tolerance", "must be finite and > 0");
        }
        if !(0.0..=1.0).contains(&self.min_correlation) {
            return bad("min_correlation", "must lie in [0, 1]");
        }
        if !(self.stopped_flow_s.is_finite() && self.stopped_flow_s > 0.0) {
            return bad("stopped_flow_s", "must be finite and > 0");
        }
        if !(self.merged_ratio.is_finite() && self.merged_ratio > 1.0) {
            return bad("merged_ratio", "must be finite and > 1");
        }
        if !(self.split_ratio > 0.0 && self.split_ratio < 1.0) {
            return bad("split_ratio", "must lie in (0, 1)");
        }
        if !(self.max_duration_mismatch.is_finite() && self.max_duration_mismatch > 0.0) {
            return bad("max_duration_mismatch", "must be finite and > 0");
        }
        if let Some(f) = &self.fluid {
            f.validate()?;
        }
        Ok(())
    }
}

/// The flow features of one window (one row of [`FlowFeatures`](super::FlowFeatures)).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowWindow {
    /// Time of the first sample (ns since the Unix epoch).
    pub window_start_ns: i64,
    /// Length of the analysed window (s): the common length of the two traces.
    pub duration_s: f64,
    /// The window's velocity (mm/s): the interface velocity, else the cross-correlation one.
    /// Negative when the sensors are swapped.
    pub velocity_mm_per_s: Option<f64>,
    /// `spacing / mean lag` of the matched interfaces (mm/s).
    pub velocity_interfaces_mm_per_s: Option<f64>,
    /// `spacing / lag` at the cross-correlation peak (mm/s); null when weak or at the limit.
    pub velocity_xcorr_mm_per_s: Option<f64>,
    /// Correlation coefficient at the cross-correlation peak.
    pub xcorr_coefficient: Option<f64>,
    /// Coefficient of variation of the per-pair velocities within the window.
    pub velocity_cv: Option<f64>,
    /// Interfaces matched between the sensors.
    pub matched_interfaces: u32,
    /// Interfaces detected at A.
    pub interfaces_a: u32,
    /// Interfaces detected at B.
    pub interfaces_b: u32,
    /// Plugs per second at A (Hz).
    pub segment_frequency_hz: Option<f64>,
    /// Plug statistics at A (regular plugs only).
    pub plugs: PhaseStats,
    /// Carrier statistics at A (regular segments only).
    pub carriers: PhaseStats,
    /// Segments flagged `MERGED_SEGMENT`.
    pub merged_segments: u32,
    /// Segments flagged `SPLIT_SEGMENT`.
    pub split_segments: u32,
    /// Longest span without an interface (s), the smaller of the two sensors' (a sensor that
    /// sees no train does not count; the whole window if neither does).
    pub longest_gap_s: f64,
    /// Design numbers at the window's velocity, when fluid properties are configured.
    pub design: Option<DesignNumbers>,
    /// Everything that went wrong.
    pub flags: FlowFlags,
}

/// Flow features of successive windows of one sensor pair, with all scratch reused.
#[derive(Debug)]
pub struct FlowAnalyzer {
    pair: SensorPair,
    opts: FlowOptions,
    detector: InterfaceDetector,
    matcher: InterfaceMatcher,
    xcorr: CrossCorrelator,
    interfaces_a: Vec<Interface>,
    interfaces_b: Vec<Interface>,
    pairs: Vec<MatchedPair>,
    check_pairs: Vec<MatchedPair>,
    segments: Vec<Segment>,
    scratch: Vec<f64>,
    conv_a: Vec<f64>,
    conv_b: Vec<f64>,
}

impl FlowAnalyzer {
    /// An analyzer for one sensor pair.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`] for an invalid pair or options.
    pub fn new(pair: SensorPair, opts: FlowOptions) -> Result<Self, FlowError> {
        pair.validate()?;
        opts.validate()?;
        Ok(Self {
            pair,
            opts,
            detector: InterfaceDetector::new(),
            matcher: InterfaceMatcher::new(),
            xcorr: CrossCorrelator::new(),
            interfaces_a: Vec::new(),
            interfaces_b: Vec::new(),
            pairs: Vec::new(),
            check_pairs: Vec::new(),
            segments: Vec::new(),
            scratch: Vec::new(),
            conv_a: Vec::new(),
            conv_b: Vec::new(),
        })
    }

    /// The sensor pair.
    pub fn pair(&self) -> &SensorPair {
        &self.pair
    }

    /// The options.
    pub fn options(&self) -> &FlowOptions {
        &self.opts
    }

    /// Interfaces at A of the last window (times relative to its start).
    pub fn interfaces_a(&self) -> &[Interface] {
        &self.interfaces_a
    }

    /// Interfaces at B of the last window.
    pub fn interfaces_b(&self) -> &[Interface] {
        &self.interfaces_b
    }

    /// Matched interface pairs of the last window.
    pub fn matched_pairs(&self) -> &[MatchedPair] {
        &self.pairs
    }

    /// Complete segments at A of the last window, with lengths and flags.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Analyses one window: `a` and `b` are the two sensors' voltages (V), sampled together
    /// from `window_start_ns` at the pair's sample rate. Traces of different lengths are cut to
    /// the shorter (`LENGTH_MISMATCH`). Never fails: content problems are flags.
    ///
    /// ```
    /// use flowdaq_analytics::flow::{FlowAnalyzer, FlowOptions, PlugPolarity, SensorPair};
    ///
    /// // Aperiodic 1 V / 2 V plug train at 1 kHz (parity of floor(k * golden ratio) for 60-sample
    /// // blocks k); sensor B 10 mm downstream at 40 mm/s sees it 250 samples later.
    /// let train = |i: usize| (((i / 60) as f64 * 1.618034) as usize % 2) as f32 + 1.0;
    /// let a: Vec<f32> = (250..10_250).map(train).collect();
    /// let b: Vec<f32> = (0..10_000).map(train).collect();
    /// let pair = SensorPair {
    ///     spacing_mm: 10.0,
    ///     sample_rate_hz: 1000.0,
    ///     plug_polarity: PlugPolarity::High,
    /// };
    /// let mut an = FlowAnalyzer::new(pair, FlowOptions::default()).unwrap();
    /// let w = an.analyze(0, &a, &b);
    /// assert!((w.velocity_interfaces_mm_per_s.unwrap() - 40.0).abs() < 1e-9);
    /// assert!((w.velocity_xcorr_mm_per_s.unwrap() - 40.0).abs() < 0.1);
    /// assert!(w.flags.is_ok(), "{}", w.flags);
    /// ```
    pub fn analyze<T: TraceSample>(
        &mut self,
        window_start_ns: i64,
        a: &[T],
        b: &[T],
    ) -> FlowWindow {
        let fs = self.pair.sample_rate_hz;
        let spacing = self.pair.spacing_mm;
        let polarity = self.pair.plug_polarity;
        let mut flags = FlowFlags::OK;
        let n = a.len().min(b.len());
        if a.len() != b.len() {
            flags |= FlowFlags::LENGTH_MISMATCH;
        }
        let (a, b) = (&a[..n], &b[..n]);
        let duration_s = n as f64 / fs;

        let det = &self.opts.detector;
        let sa = self.detector.run(a, fs, det, &mut self.interfaces_a);
        let sb = self.detector.run(b, fs, det, &mut self.interfaces_b);
        if sa.non_finite_samples + sb.non_finite_samples > 0 {
            flags |= FlowFlags::NON_FINITE_SAMPLES;
        }
        // No plug train at a sensor: no contrast, or nothing rose above the noise.
        let quiet_a = sa.constant || self.interfaces_a.is_empty();
        let quiet_b = sb.constant || self.interfaces_b.is_empty();
        let constant = quiet_a || quiet_b;
        if constant {
            flags |= FlowFlags::CONSTANT_SIGNAL;
        }
        let max_mismatch = self.opts.max_duration_mismatch;

        // Velocity 1: matched interfaces.
        let (vmin, vmax) = self.opts.velocity_range_mm_per_s;
        let lag_range_s = (spacing / vmax, spacing / vmin);
        self.pairs.clear();
        let mut v_if = None;
        if !constant {
            self.matcher.match_interfaces(
                &self.interfaces_a,
                &self.interfaces_b,
                lag_range_s,
                &mut self.pairs,
            );
            v_if = velocity_from_pairs(&self.pairs, spacing);
            if v_if.is_none() {
                flags |= FlowFlags::TOO_FEW_INTERFACES;
            } else if self
                .matcher
                .duration_mismatch(&self.interfaces_a, &self.interfaces_b, &self.pairs)
                .is_some_and(|m| !(m <= max_mismatch))
            {
                flags |= FlowFlags::INCONSISTENT_MATCH;
                v_if = None;
            }
        }

        // Velocity 2: cross-correlation of the raw traces, its lag checked against the
        // interfaces (the same segments must pair up, with the same durations).
        let (mut v_x, mut coefficient) = (None, None);
        if !constant {
            // `as usize` saturates; the correlator cuts the range to the trace.
            let min_lag = (lag_range_s.0 * fs).floor() as usize;
            let max_lag = (lag_range_s.1 * fs).ceil() as usize;
            if let Some(p) = self.xcorr.peak(a, b, min_lag, max_lag) {
                coefficient = Some(p.coefficient);
                if p.at_limit {
                    flags |= FlowFlags::LAG_AT_LIMIT;
                } else if !(p.coefficient >= self.opts.min_correlation) {
                    flags |= FlowFlags::WEAK_CORRELATION;
                } else if p.lag_samples != 0.0 {
                    let lag_s = p.lag_samples / fs;
                    self.matcher.match_at_lag(
                        &self.interfaces_a,
                        &self.interfaces_b,
                        lag_s,
                        &mut self.check_pairs,
                    );
                    let slipped = self
                        .matcher
                        .duration_mismatch(
                            &self.interfaces_a,
                            &self.interfaces_b,
                            &self.check_pairs,
                        )
                        .is_some_and(|m| !(m <= max_mismatch));
                    if slipped {
                        flags |= FlowFlags::INCONSISTENT_MATCH;
                    } else {
                        v_x = Some(spacing / lag_s);
                    }
                }
            }
        }

        let velocity = v_if.map(|v| v.velocity_mm_per_s).or(v_x);
        if velocity.is_some_and(|v| v < 0.0) || v_x.is_some_and(|v| v < 0.0) {
            flags |= FlowFlags::SENSORS_SWAPPED;
        }
        if let (Some(vi), Some(vx)) = (v_if, v_x) {
            let vi = vi.velocity_mm_per_s;
            if !((vx - vi).abs() <= self.opts.velocity_tolerance * vi.abs()) {
                flags |= FlowFlags::VELOCITY_MISMATCH;
            }
        }

        // Segments at A.
        segments_from_interfaces(&self.interfaces_a, polarity, &mut self.segments);
        let rules = SegmentRules {
            merged_ratio: self.opts.merged_ratio,
            split_ratio: self.opts.split_ratio,
            stopped_flow_s: self.opts.stopped_flow_s,
        };
        classify_segments(&mut self.segments, &rules, &mut self.scratch);
        assign_lengths(&mut self.segments, velocity);
        let count = |f: FlowFlags| self.segments.iter().filter(|s| s.flags == f).count() as u32;
        let (merged, split) = (
            count(FlowFlags::MERGED_SEGMENT),
            count(FlowFlags::SPLIT_SEGMENT),
        );
        if merged > 0 {
            flags |= FlowFlags::MERGED_SEGMENT;
        }
        if split > 0 {
            flags |= FlowFlags::SPLIT_SEGMENT;
        }

        // Stopped flow: the longest interface-free span while samples keep coming.
        let gap_a = longest_gap_s(&self.interfaces_a, duration_s);
        let gap_b = longest_gap_s(&self.interfaces_b, duration_s);
        let longest_gap = match (quiet_a, quiet_b) {
            (false, false) => gap_a.min(gap_b),
            (false, true) => gap_a,
            (true, false) => gap_b,
            (true, true) => duration_s,
        };
        let has_signal = sa.samples > sa.non_finite_samples || sb.samples > sb.non_finite_samples;
        if has_signal && longest_gap > self.opts.stopped_flow_s {
            flags |= FlowFlags::STOPPED_FLOW;
        }

        let design = match (&self.opts.fluid, velocity) {
            (Some(f), Some(v)) => Some(design_numbers(f, v)),
            _ => None,
        };
        if let Some(d) = &design {
            flags |= d.flags;
        }

        FlowWindow {
            window_start_ns,
            duration_s,
            velocity_mm_per_s: velocity,
            velocity_interfaces_mm_per_s: v_if.map(|v| v.velocity_mm_per_s),
            velocity_xcorr_mm_per_s: v_x,
            xcorr_coefficient: coefficient,
            velocity_cv: v_if.and_then(|v| v.velocity_cv),
            matched_interfaces: self.pairs.len() as u32,
            interfaces_a: self.interfaces_a.len() as u32,
            interfaces_b: self.interfaces_b.len() as u32,
            segment_frequency_hz: segment_frequency_hz(&self.interfaces_a, polarity),
            plugs: phase_stats(&self.segments, Phase::Plug),
            carriers: phase_stats(&self.segments, Phase::Carrier),
            merged_segments: merged,
            split_segments: split,
            longest_gap_s: longest_gap,
            design,
            flags,
        }
    }

    /// [`Self::analyze`] on Arrow arrays: `Float32` or `Float64` voltages, nulls treated as NaN
    /// samples. Null-free arrays of the same type are read in place; others are converted once
    /// into reused buffers.
    ///
    /// # Errors
    /// [`FlowError::UnsupportedType`] for other array types.
    pub fn analyze_arrays(
        &mut self,
        window_start_ns: i64,
        a: &dyn Array,
        b: &dyn Array,
    ) -> Result<FlowWindow, FlowError> {
        let any = |x: &dyn Array| x.null_count() > 0;
        if !any(a) && !any(b) {
            if let (Some(a), Some(b)) = (
                a.as_any().downcast_ref::<Float32Array>(),
                b.as_any().downcast_ref::<Float32Array>(),
            ) {
                return Ok(self.analyze(window_start_ns, a.values(), b.values()));
            }
            if let (Some(a), Some(b)) = (
                a.as_any().downcast_ref::<Float64Array>(),
                b.as_any().downcast_ref::<Float64Array>(),
            ) {
                return Ok(self.analyze(window_start_ns, a.values(), b.values()));
            }
        }
        let mut ca = std::mem::take(&mut self.conv_a);
        let mut cb = std::mem::take(&mut self.conv_b);
        let result = to_f64(a, "sensor_a", &mut ca)
            .and_then(|()| to_f64(b, "sensor_b", &mut cb))
            .map(|()| self.analyze(window_start_ns, &ca, &cb));
        self.conv_a = ca;
        self.conv_b = cb;
        result
    }
}

/// Copies a `Float32`/`Float64` array into `out` as `f64`, NaN for nulls.
fn to_f64(a: &dyn Array, what: &'static str, out: &mut Vec<f64>) -> Result<(), FlowError> {
    out.clear();
    let nulls = a.logical_nulls();
    let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
    if let Some(p) = a.as_any().downcast_ref::<Float32Array>() {
        out.extend(
            p.values()
                .iter()
                .enumerate()
                .map(|(i, &v)| if valid(i) { v as f64 } else { f64::NAN }),
        );
    } else if let Some(p) = a.as_any().downcast_ref::<Float64Array>() {
        out.extend(
            p.values()
                .iter()
                .enumerate()
                .map(|(i, &v)| if valid(i) { v } else { f64::NAN }),
        );
    } else {
        return Err(FlowError::UnsupportedType {
            what,
            data_type: a.data_type().clone(),
        });
    }
    Ok(())
}
