//! A simulated TCSPC card in histogram mode: one decay per message whose lifetime follows the
//! reaction condition, so the demo and tests see lifetimes, fits and phasors move with the
//! conditions and know the ground truth.
//!
//! Each photon is drawn as the instrument would see it: a Gaussian IRF delay plus an
//! exponential decay of the condition's lifetime, folded into the sync period; a uniform
//! background adds dark counts. Counting photons gives the histogram Poisson statistics
//! without any further noise model. Condition ids (`c-000`, `c-001`, ...) match the simulated
//! spectrometer's when both take the same time per condition.

use flowdaq_schemas::{Dtype, StreamKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal};
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;

/// Configuration (`type = "simulated_tcspc_histogram"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedTcspcHistogramConfig {
    /// Source id.
    pub source: String,
    /// Run id sent with every message.
    pub run_id: Option<String>,
    /// Bins per histogram.
    pub bins: usize,
    /// Bin width, ps.
    pub bin_width_ps: f64,
    /// Laser repetition rate, Hz (the period the decay folds into).
    pub sync_rate_hz: f64,
    /// Lifetime of each condition, ns, cycled in order.
    pub lifetimes_ns: Vec<f64>,
    /// FWHM of the Gaussian IRF, ps.
    pub irf_fwhm_ps: f64,
    /// Where the IRF peaks, ns from the start of the period.
    pub irf_center_ns: f64,
    /// Decay photons per histogram.
    pub photons_per_histogram: usize,
    /// Background counts per bin (uniform over the period).
    pub background_per_bin: f64,
    /// Histograms taken under each condition before the next one starts.
    pub histograms_per_condition: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for SimulatedTcspcHistogramConfig {
    fn default() -> Self {
        SimulatedTcspcHistogramConfig {
            source: "tcspc-1".into(),
            run_id: None,
            bins: 500,
            bin_width_ps: 100.0,
            sync_rate_hz: 20e6,
            lifetimes_ns: vec![6.0, 8.5, 11.0, 7.0],
            irf_fwhm_ps: 200.0,
            irf_center_ns: 2.0,
            photons_per_histogram: 100_000,
            background_per_bin: 2.0,
            histograms_per_condition: 20,
            seed: 11,
        }
    }
}

impl SimulatedTcspcHistogramConfig {
    /// Builds the simulator.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for an empty lifetime list, a non-positive width, rate or
    /// lifetime, or bins that do not fit in one sync period.
    pub fn build(&self) -> Result<SimulatedTcspcHistogram, ConnectorError> {
        let bad = |why: &str| {
            Err(ConnectorError::Config(format!(
                "simulated_tcspc_histogram: {why}"
            )))
        };
        if self.lifetimes_ns.is_empty() || self.lifetimes_ns.iter().any(|t| t.is_nan() || *t <= 0.0)
        {
            return bad("lifetimes_ns needs at least one positive lifetime");
        }
        if !(self.bin_width_ps > 0.0 && self.sync_rate_hz > 0.0 && self.irf_fwhm_ps > 0.0) {
            return bad("bin_width_ps, sync_rate_hz and irf_fwhm_ps must be positive");
        }
        let period_ps = 1e12 / self.sync_rate_hz;
        if self.bins == 0 || self.bins as f64 * self.bin_width_ps > period_ps * (1.0 + 1e-9) {
            return bad("bins x bin_width_ps must fit in one sync period");
        }
        if self.histograms_per_condition == 0
            || self.background_per_bin.is_nan()
            || self.background_per_bin < 0.0
        {
            return bad("histograms_per_condition must be > 0 and background_per_bin >= 0");
        }
        Ok(SimulatedTcspcHistogram {
            config: self.clone(),
            rng: SmallRng::seed_from_u64(self.seed),
            taken: 0,
        })
    }
}

/// The running simulator; see the module doc for its model.
pub struct SimulatedTcspcHistogram {
    config: SimulatedTcspcHistogramConfig,
    rng: SmallRng,
    taken: u64,
}

impl SimulatedTcspcHistogram {
    /// Index of the condition the n-th histogram is taken under.
    pub fn condition_index(&self, histogram: u64) -> usize {
        (histogram / self.config.histograms_per_condition as u64) as usize
    }

    /// The lifetime of a condition, ns: the ground truth.
    pub fn lifetime_ns(&self, condition: usize) -> f64 {
        self.config.lifetimes_ns[condition % self.config.lifetimes_ns.len()]
    }

    /// Draws the next histogram.
    fn next_histogram(&mut self) -> Vec<u32> {
        let config = &self.config;
        let tau_ns = self.lifetime_ns(self.condition_index(self.taken));
        self.taken += 1;
        let period_ns = 1e9 / config.sync_rate_hz;
        let bin_ns = config.bin_width_ps * 1e-3;
        let sigma_ns = config.irf_fwhm_ps * 1e-3 / (8.0 * std::f64::consts::LN_2).sqrt();
        let mut counts = vec![0u32; config.bins];
        // The distributions are valid for the positive values `build` checked.
        let (Ok(irf), Ok(decay)) = (
            Normal::new(config.irf_center_ns, sigma_ns),
            Exp::new(1.0 / tau_ns),
        ) else {
            return counts;
        };
        let mut count = |t_ns: f64| {
            let bin = (t_ns.rem_euclid(period_ns) / bin_ns) as usize;
            if let Some(c) = counts.get_mut(bin) {
                *c += 1;
            }
        };
        for _ in 0..config.photons_per_histogram {
            count(irf.sample(&mut self.rng) + decay.sample(&mut self.rng));
        }
        let background = (config.background_per_bin * config.bins as f64).round() as usize;
        for _ in 0..background {
            count(self.rng.random::<f64>() * config.bins as f64 * bin_ns);
        }
        counts
    }
}

impl Connector for SimulatedTcspcHistogram {
    fn source_id(&self) -> &str {
        &self.config.source
    }

    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        let condition_id = format!("c-{:03}", self.condition_index(self.taken));
        let counts = self.next_histogram();
        let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
        let mut message = OutboundMessage::new(&self.config.source, StreamKind::TcspcHistogram)
            .meta("bin_width_ps", self.config.bin_width_ps)
            .meta("sync_rate_hz", self.config.sync_rate_hz)
            .raw_array("counts", Dtype::U32, &[counts.len() as u64], bytes);
        message.header.run_id = self.config.run_id.clone();
        message.header.condition_id = Some(condition_id);
        message.header.instrument_time_ns = Some(crate::transport::now_ns());
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_follow_the_condition_lifetime() {
        let config = SimulatedTcspcHistogramConfig {
            histograms_per_condition: 2,
            background_per_bin: 0.0,
            photons_per_histogram: 200_000,
            ..Default::default()
        };
        let mut sim = config.build().expect("builds");
        for condition in 0..3 {
            let counts = sim.next_histogram();
            sim.next_histogram();
            assert_eq!(counts.len(), 500);
            assert_eq!(counts.iter().map(|c| *c as u64).sum::<u64>(), 200_000);
            // Past the IRF, the log-slope of the tail gives the lifetime.
            let (a, b) = (40usize, 240usize);
            let window = |i: usize| counts[i..i + 20].iter().map(|c| *c as f64).sum::<f64>();
            let tau_ns = (b - a) as f64 * 0.1 / (window(a) / window(b)).ln();
            let truth = sim.lifetime_ns(condition);
            assert!(
                (tau_ns - truth).abs() / truth < 0.05,
                "condition {condition}: {tau_ns} ns, true {truth} ns"
            );
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for config in [
            SimulatedTcspcHistogramConfig {
                lifetimes_ns: vec![],
                ..Default::default()
            },
            SimulatedTcspcHistogramConfig {
                lifetimes_ns: vec![-1.0],
                ..Default::default()
            },
            SimulatedTcspcHistogramConfig {
                bins: 600,
                ..Default::default()
            },
            SimulatedTcspcHistogramConfig {
                bin_width_ps: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(config.build().is_err(), "{config:?}");
        }
    }
}
