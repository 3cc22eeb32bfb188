//! Interface detection: when a plug/carrier meniscus passes one optical sensor.
//!
//! The light level of a cheap phase sensor drifts (LED ageing, fouling, temperature), so a fixed
//! threshold slowly stops working. The thresholds here follow a running min/max envelope of the
//! trace: block minima and maxima (one pass, no per-sample allocation) slid over a window of
//! [`DetectorOptions::envelope_window_s`] and interpolated linearly between block centres. A
//! sample must cross `mid +- hysteresis` to change state, the half band being a fraction of the
//! local contrast but never less than six noise standard deviations (so noise cannot chatter,
//! and a trace of noise alone never reaches a threshold: a stopped flow stays quiet), and the
//! interface time is where the trace crosses `mid` itself, linearly interpolated between the two
//! samples around the crossing (sub-sample; rising and falling edges are treated alike, so a
//! segment's duration is unbiased). Where the local envelope is flatter than the contrast gate
//! (inside a long segment, a stopped flow) the state is held: noise never becomes an interface.
//! NaN and infinite samples are skipped; a crossing that straddles them is interpolated across.

use super::FlowError;

/// A trace sample type the kernels read (the phase-trace table stores `f32` volts).
pub trait TraceSample: Copy + Send + Sync + 'static {
    /// The sample as `f64`.
    fn to_f64(self) -> f64;
}

impl TraceSample for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl TraceSample for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// One detected interface on one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interface {
    /// Time of the mid-level crossing, seconds after the first sample (sub-sample resolution:
    /// sample `i` is at `i / sample_rate_hz`).
    pub time_s: f64,
    /// True when the voltage rises through the interface (a plug start if plugs read high,
    /// see [`PlugPolarity`](super::PlugPolarity)).
    pub rising: bool,
}

/// Options of the interface detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    /// Width of the running min/max envelope (s). The thresholds follow drift slower than this;
    /// it needs no relation to the segment length (inside a segment longer than the window the
    /// envelope flattens below the contrast gate and the state is simply held). Default 1 s.
    pub envelope_window_s: f64,
    /// Hysteresis band as a fraction of the local contrast: the state changes when a sample
    /// passes `mid +- hysteresis_fraction / 2 * (max - min)`, i.e. at 40 % / 60 % of the
    /// envelope for the default 0.2. Must lie in (0, 1).
    pub hysteresis_fraction: f64,
    /// Minimum contrast (V). A trace whose whole range is at or below it is
    /// [`CONSTANT_SIGNAL`](super::FlowFlags::CONSTANT_SIGNAL), and no interface is accepted
    /// where the local envelope is narrower. Must exceed the sensor's peak-to-peak noise.
    /// Default 0.05 V (configure it for your sensor; flowdaq's domain primer gives no value).
    pub min_contrast_v: f64,
    /// No interface is accepted where the local contrast is below this fraction of the largest
    /// local contrast of the trace (guards against noise during a stopped flow when the
    /// absolute gate is set low). Must lie in [0, 1). Default 0.25.
    pub min_relative_contrast: f64,
    /// The hysteresis half band is at least this many noise standard deviations, whatever the
    /// contrast, so that a trace of noise alone (a stopped flow) can never reach a threshold:
    /// the envelope of Gaussian noise stays within about 4 sigma of its centre. The noise is
    /// estimated from the 25th percentile of `|x[i] - x[i-1]|` over every 8th sample pair
    /// (robust to the edges). A plug train needs a contrast above twice this to be seen.
    /// Default 6.
    pub noise_band_sigma: f64,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            envelope_window_s: 1.0,
            hysteresis_fraction: 0.2,
            min_contrast_v: 0.05,
            min_relative_contrast: 0.25,
            noise_band_sigma: 6.0,
        }
    }
}

impl DetectorOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`] for a value outside its documented range.
    pub fn validate(&self) -> Result<(), FlowError> {
        let bad = |name, reason| Err(FlowError::InvalidOption { name, reason });
        if !(self.envelope_window_s.is_finite() && self.envelope_window_s > 0.0) {
            return bad("envelope_window_s", "must be finite and > 0");
        }
        if !(self.hysteresis_fraction > 0.0 && self.hysteresis_fraction < 1.0) {
            return bad("hysteresis_fraction", "must lie in (0, 1)");
        }
        if !(self.min_contrast_v.is_finite() && self.min_contrast_v > 0.0) {
            return bad("min_contrast_v", "must be finite and > 0");
        }
        if !(self.min_relative_contrast >= 0.0 && self.min_relative_contrast < 1.0) {
            return bad("min_relative_contrast", "must lie in [0, 1)");
        }
        if !(self.noise_band_sigma.is_finite() && self.noise_band_sigma >= 0.0) {
            return bad("noise_band_sigma", "must be finite and >= 0");
        }
        Ok(())
    }
}

/// What the detector saw of one trace, besides its interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TraceSummary {
    /// Samples in the trace.
    pub samples: usize,
    /// NaN or infinite samples (skipped).
    pub non_finite_samples: usize,
    /// Largest local envelope contrast `max - min` (V); 0 for a constant trace.
    pub contrast_v: f64,
    /// Estimated noise standard deviation (V); 0 for a constant trace.
    pub noise_v: f64,
    /// The trace's whole range is at or below `min_contrast_v` (or it has no finite sample).
    pub constant: bool,
}

/// Envelope blocks per envelope window: the envelope at block `j` is the min/max over blocks
/// `j - 4 ..= j + 4`.
const BLOCKS_PER_WINDOW: usize = 8;
const HALF_WIDTH_BLOCKS: usize = BLOCKS_PER_WINDOW / 2;

/// Checks a sample rate.
pub(crate) fn validate_sample_rate(sample_rate_hz: f64) -> Result<(), FlowError> {
    if sample_rate_hz.is_finite() && sample_rate_hz > 0.0 {
        Ok(())
    } else {
        Err(FlowError::InvalidOption {
            name: "sample_rate_hz",
            reason: "must be finite and > 0",
        })
    }
}

/// Reusable scratch of the interface detector (block envelopes); one per thread.
#[derive(Debug, Default, Clone)]
pub struct InterfaceDetector {
    block_lo: Vec<f64>,
    block_hi: Vec<f64>,
    mid: Vec<f64>,
    contrast: Vec<f64>,
    diffs: Vec<f64>,
}

impl InterfaceDetector {
    /// An empty detector; buffers grow to the largest trace seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Detects the interfaces of one trace into `out` (cleared first), in time order; rising
    /// and falling interfaces alternate.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`] for a non-positive sample rate or invalid options. The
    /// trace's content never errors (see [`TraceSummary`]).
    ///
    /// ```
    /// use flowdaq_analytics::flow::{DetectorOptions, InterfaceDetector};
    ///
    /// // 1 kHz square wave: 1 V carrier, 2 V plugs from 100 to 300 ms and from 500 to 700 ms.
    /// let trace: Vec<f32> = (0..1000)
    ///     .map(|i| if (100..300).contains(&i) || (500..700).contains(&i) { 2.0 } else { 1.0 })
    ///     .collect();
    /// let mut out = Vec::new();
    /// let summary = InterfaceDetector::new()
    ///     .detect(&trace, 1000.0, &DetectorOptions::default(), &mut out)
    ///     .unwrap();
    /// assert!(!summary.constant);
    /// let times: Vec<f64> = out.iter().map(|i| i.time_s).collect();
    /// // The mid level is crossed halfway between samples 99 and 100, and so on.
    /// assert_eq!(times, vec![0.0995, 0.2995, 0.4995, 0.6995]);
    /// assert!(out[0].rising && !out[1].rising);
    /// ```
    pub fn detect<T: TraceSample>(
        &mut self,
        trace: &[T],
        sample_rate_hz: f64,
        opts: &DetectorOptions,
        out: &mut Vec<Interface>,
    ) -> Result<TraceSummary, FlowError> {
        validate_sample_rate(sample_rate_hz)?;
        opts.validate()?;
        Ok(self.run(trace, sample_rate_hz, opts, out))
    }

    /// [`Self::detect`] with validated arguments.
    pub(crate) fn run<T: TraceSample>(
        &mut self,
        trace: &[T],
        sample_rate_hz: f64,
        opts: &DetectorOptions,
        out: &mut Vec<Interface>,
    ) -> TraceSummary {
        out.clear();
        let n = trace.len();
        let mut summary = TraceSummary {
            samples: n,
            constant: true,
            ..TraceSummary::default()
        };
        if n == 0 {
            return summary;
        }
        // `as usize` saturates for absurdly long windows; the clamp keeps it in range.
        let block = ((opts.envelope_window_s * sample_rate_hz / BLOCKS_PER_WINDOW as f64).round()
            as usize)
            .clamp(1, n);
        summary.non_finite_samples = self.block_extrema(trace, block);
        let (gmin, gmax) = self
            .block_lo
            .iter()
            .zip(&self.block_hi)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (&lo, &hi)| {
                (a.min(lo), b.max(hi))
            });
        // NaN-safe: a trace without finite samples has gmax - gmin = -inf.
        if !(gmax - gmin > opts.min_contrast_v) {
            return summary;
        }
        summary.constant = false;
        let contrast_max = self.envelope();
        summary.contrast_v = contrast_max;
        summary.noise_v = self.noise_sigma(trace);
        let gate = opts
            .min_contrast_v
            .max(opts.min_relative_contrast * contrast_max);
        let mut h = Hysteresis {
            state: State::Unknown,
            prev_i: f64::NAN,
            prev_d: f64::NAN,
            cross: f64::NAN,
            gate,
            half_fraction: 0.5 * opts.hysteresis_fraction,
            noise_half: opts.noise_band_sigma * summary.noise_v,
            sample_rate_hz,
        };
        self.scan(trace, block, &mut h, out);
        summary
    }

    /// Minimum and maximum of the finite samples of each block; returns the non-finite count.
    fn block_extrema<T: TraceSample>(&mut self, trace: &[T], block: usize) -> usize {
        self.block_lo.clear();
        self.block_hi.clear();
        let mut bad = 0usize;
        for chunk in trace.chunks(block) {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &v in chunk {
                let v = v.to_f64();
                // False for NaN and +-inf: such samples leave the extrema untouched.
                let ok = v.abs() < f64::INFINITY;
                bad += usize::from(!ok);
                lo = if ok && v < lo { v } else { lo };
                hi = if ok && v > hi { v } else { hi };
            }
            self.block_lo.push(lo);
            self.block_hi.push(hi);
        }
        bad
    }

    /// Slides the block extrema into the envelope; fills `mid` and `contrast` per block (NaN
    /// where the window holds no finite sample) and returns the largest local contrast.
    fn envelope(&mut self) -> f64 {
        let nb = self.block_lo.len();
        self.mid.clear();
        self.contrast.clear();
        let mut contrast_max: f64 = 0.0;
        for j in 0..nb {
            let r = j.saturating_sub(HALF_WIDTH_BLOCKS)..(j + HALF_WIDTH_BLOCKS + 1).min(nb);
            let lo = self.block_lo[r.clone()]
                .iter()
                .fold(f64::INFINITY, |a, &b| a.min(b));
            let hi = self.block_hi[r]
                .iter()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            if lo.is_finite() && hi.is_finite() {
                let c = hi - lo;
                contrast_max = contrast_max.max(c);
                self.mid.push(0.5 * (lo + hi));
                self.contrast.push(c);
            } else {
                self.mid.push(f64::NAN);
                self.contrast.push(f64::NAN);
            }
        }
        contrast_max
    }

    /// Noise standard deviation from the 25th percentile of `|x[i] - x[i-1]|` over every 8th
    /// pair: for white noise `x[i] - x[i-1] ~ N(0, 2 sigma^2)`, whose absolute value has its
    /// 25th percentile at `0.4506 sigma`. Edges inflate only the upper quantiles.
    fn noise_sigma<T: TraceSample>(&mut self, trace: &[T]) -> f64 {
        const P25_OF_ABS_DIFF_PER_SIGMA: f64 = 0.450_6;
        self.diffs.clear();
        self.diffs.extend(
            trace
                .windows(2)
                .step_by(8)
                .map(|w| (w[1].to_f64() - w[0].to_f64()).abs())
                .filter(|d| d.is_finite()),
        );
        if self.diffs.len() < 8 {
            return 0.0;
        }
        let k = self.diffs.len() / 4;
        let (_, &mut q, _) = self.diffs.select_nth_unstable_by(k, f64::total_cmp);
        q / P25_OF_ABS_DIFF_PER_SIGMA
    }

    /// Runs the hysteresis state machine with thresholds interpolated between block centres.
    fn scan<T: TraceSample>(
        &self,
        trace: &[T],
        block: usize,
        h: &mut Hysteresis,
        out: &mut Vec<Interface>,
    ) {
        let n = trace.len();
        let nb = self.mid.len();
        // Block j's centre is at sample j * block + (block - 1) / 2; samples from
        // ceil(centre_j) to ceil(centre_{j+1}) interpolate between blocks j and j + 1.
        let off = block / 2;
        let centre0 = (block as f64 - 1.0) * 0.5;
        let inv_block = 1.0 / block as f64;
        // Before the first centre: flat at block 0.
        for (i, &x) in trace.iter().enumerate().take(off.min(n)) {
            h.feed(i, x.to_f64(), self.mid[0], self.contrast[0], out);
        }
        for j in 0..nb.saturating_sub(1) {
            let start = j * block + off;
            let end = ((j + 1) * block + off).min(n);
            let (m0, c0) = (self.mid[j], self.contrast[j]);
            let dm = (self.mid[j + 1] - m0) * inv_block;
            let dc = (self.contrast[j + 1] - c0) * inv_block;
            let c = j as f64 * block as f64 + centre0;
            for (k, &x) in trace[start..end].iter().enumerate() {
                let i = start + k;
                let u = i as f64 - c;
                h.feed(i, x.to_f64(), m0 + u * dm, c0 + u * dc, out);
            }
        }
        // After the last centre: flat at the last block.
        let last = nb - 1;
        let start = (last * block + off).min(n);
        for (k, &x) in trace[start..].iter().enumerate() {
            h.feed(
                start + k,
                x.to_f64(),
                self.mid[last],
                self.contrast[last],
                out,
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Low,
    High,
}

/// The hysteresis state machine over (sample, mid, local contrast) triples.
struct Hysteresis {
    state: State,
    /// Index and `x - mid` of the previous finite sample.
    prev_i: f64,
    prev_d: f64,
    /// Time (in samples) of the last mid crossing towards the other state, NaN if none yet.
    cross: f64,
    /// Local contrast below which the state is held.
    gate: f64,
    /// Half band as a fraction of the local contrast.
    half_fraction: f64,
    /// Smallest half band (V): `noise_band_sigma` noise standard deviations.
    noise_half: f64,
    sample_rate_hz: f64,
}

impl Hysteresis {
    #[inline(always)]
    fn feed(&mut self, i: usize, x: f64, mid: f64, contrast: f64, out: &mut Vec<Interface>) {
        let d = x - mid;
        // NaN or infinite sample, or no envelope here: skip; the next crossing interpolates
        // across the gap from the previous finite sample.
        if !(d.abs() < f64::INFINITY) {
            return;
        }
        let half = (self.half_fraction * contrast).max(self.noise_half);
        let fi = i as f64;
        match self.state {
            State::Low => {
                if self.prev_d < 0.0 && d >= 0.0 {
                    self.cross = self.crossing(fi, d);
                }
                if d > half && contrast >= self.gate {
                    self.emit(fi, true, out);
                    self.state = State::High;
                }
            }
            State::High => {
                if self.prev_d >= 0.0 && d < 0.0 {
                    self.cross = self.crossing(fi, d);
                }
                if d < -half && contrast >= self.gate {
                    self.emit(fi, false, out);
                    self.state = State::Low;
                }
            }
            State::Unknown => {
                if contrast >= self.gate {
                    if d > half {
                        self.state = State::High;
                    } else if d < -half {
                        self.state = State::Low;
                    }
                }
            }
        }
        self.prev_i = fi;
        self.prev_d = d;
    }

    /// Sub-sample index where `x - mid` crosses zero between the previous sample and this one.
    #[inline(always)]
    fn crossing(&self, fi: f64, d: f64) -> f64 {
        self.prev_i + (fi - self.prev_i) * (self.prev_d / (self.prev_d - d))
    }

    #[inline(always)]
    fn emit(&mut self, fi: f64, rising: bool, out: &mut Vec<Interface>) {
        // A crossing is always recorded before the far threshold is passed (the state was
        // entered on the other side of mid); the fallback only guards the invariant.
        let t = if self.cross.is_finite() {
            self.cross
        } else {
            fi
        };
        out.push(Interface {
            time_s: t / self.sample_rate_hz,
            rising,
        });
        self.cross = f64::NAN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(trace: &[f64], fs: f64) -> (Vec<Interface>, TraceSummary) {
        let mut out = Vec::new();
        let s = InterfaceDetector::new()
            .detect(trace, fs, &DetectorOptions::default(), &mut out)
            .unwrap();
        (out, s)
    }

    #[test]
    fn linear_edge_crossing_is_interpolated() {
        // Ramp from 0 to 2 V over samples 100..=104: mid (1 V) at sample 102 exactly, then a
        // ramp down with mid between samples 301 and 302.
        let mut y = vec![0.0; 500];
        for (k, v) in y.iter_mut().enumerate().skip(100).take(200) {
            *v = (0.5 * (k as f64 - 100.0)).min(2.0);
        }
        y[300] = 2.0;
        y[301] = 1.5;
        y[302] = 0.25;
        let (out, s) = detect(&y, 1000.0);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!((out[0].time_s - 0.102).abs() < 1e-12 && out[0].rising);
        // 1.5 -> 0.25 crosses 1.0 at 301 + 0.5 / 1.25 = 301.4.
        assert!((out[1].time_s - 0.3014).abs() < 1e-12 && !out[1].rising);
        assert_eq!(s.non_finite_samples, 0);
        assert!((s.contrast_v - 2.0).abs() < 1e-12);
    }

    #[test]
    fn nan_gap_is_interpolated_across_and_counted() {
        let mut y: Vec<f64> = (0..400).map(|i| if i < 200 { 0.0 } else { 1.0 }).collect();
        y[199] = f64::NAN;
        y[200] = f64::INFINITY;
        // Previous finite: 198 (d = -0.5), next finite: 201 (d = +0.5): crossing at 199.5.
        let (out, s) = detect(&y, 1000.0);
        assert_eq!(s.non_finite_samples, 2);
        assert_eq!(out.len(), 1);
        assert!((out[0].time_s - 0.1995).abs() < 1e-12);
    }

    #[test]
    fn constant_noise_and_empty_traces_have_no_interfaces() {
        let (out, s) = detect(&[], 1000.0);
        assert!(out.is_empty() && s.constant);
        let flat: Vec<f64> = (0..5000)
            .map(|i| 1.0 + 0.01 * ((i * 7919) % 13) as f64 / 13.0)
            .collect();
        let (out, s) = detect(&flat, 1000.0);
        assert!(out.is_empty() && s.constant);
        let nan = vec![f64::NAN; 100];
        let (out, s) = detect(&nan, 1000.0);
        assert!(out.is_empty() && s.constant && s.non_finite_samples == 100);
    }

    #[test]
    fn hysteresis_ignores_chatter_around_mid() {
        // Low 0, high 1; around t = 200 the signal wobbles 0.45 / 0.55 (inside the 0.4-0.6
        // band) before settling high: one interface at the last upward mid crossing.
        let mut y = vec![0.0; 600];
        for (i, v) in y.iter_mut().enumerate().skip(200) {
            *v = if i < 210 {
                if i % 2 == 0 {
                    0.55
                } else {
                    0.45
                }
            } else {
                1.0
            };
        }
        let (out, _) = detect(&y, 1000.0);
        assert_eq!(out.len(), 1);
        // Last upward crossing: 0.45 at 209 -> 1.0 at 210 crosses 0.5 at 209 + 0.05 / 0.55.
        let want = (209.0 + 0.05 / 0.55) / 1000.0;
        assert!((out[0].time_s - want).abs() < 1e-12, "{:?}", out[0]);
    }

    /// Gaussian noise from a fixed-seed generator (Box-Muller over an LCG).
    fn gaussian(n: usize, sigma: f64) -> Vec<f64> {
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect()
    }

    #[test]
    fn noise_alone_never_reaches_the_band_but_a_train_in_the_same_noise_does() {
        let fs = 1000.0;
        let noise = gaussian(30_000, 0.03);
        // Noise on a drifting level (0.3 V over 30 s): range far above the 0.05 V minimum.
        let quiet: Vec<f64> = noise
            .iter()
            .enumerate()
            .map(|(i, e)| 1.0 + 0.3 * (i as f64 / 30_000.0) + e)
            .collect();
        let (out, s) = detect(&quiet, fs);
        assert!(!s.constant && out.is_empty(), "{} interfaces", out.len());
        assert!(
            (s.noise_v - 0.03).abs() < 0.003,
            "noise estimate {}",
            s.noise_v
        );
        // A 1 V square train (period 200 samples) in the same noise: every edge, no extra.
        let train: Vec<f64> = quiet
            .iter()
            .enumerate()
            .map(|(i, v)| v + f64::from(u8::from((i / 100) % 2 == 1)))
            .collect();
        let (out, s) = detect(&train, fs);
        assert!(
            (s.noise_v - 0.03).abs() < 0.003,
            "noise estimate {}",
            s.noise_v
        );
        assert_eq!(out.len(), 299);
        for (k, i) in out.iter().enumerate() {
            let want = ((k + 1) * 100) as f64 - 0.5;
            assert!((i.time_s * fs - want).abs() < 0.5, "{k}: {}", i.time_s * fs);
        }
    }

    #[test]
    fn rejects_bad_options() {
        let mut d = InterfaceDetector::new();
        let mut out = Vec::new();
        assert!(d
            .detect(&[0.0f32; 4], 0.0, &DetectorOptions::default(), &mut out)
            .is_err());
        let o = DetectorOptions {
            hysteresis_fraction: 1.0,
            ..Default::default()
        };
        assert!(d.detect(&[0.0f32; 4], 1e3, &o, &mut out).is_err());
    }
}
