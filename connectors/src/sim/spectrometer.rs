//! A simulated CCD spectrometer watching CsPbBr3 quantum dots in a flow reactor.
//!
//! PL is a Gaussian in energy whose centre and width follow the reaction condition with a
//! first-order lag (the reactor settling after a set-point change), on a dark offset with shot
//! and read noise, clipped at the ADC's saturation. Every value is from a seeded RNG, so tests
//! know the ground truth: the settled peak energy and width of each condition.

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;
use flowdaq_schemas::StreamKind;

/// hc in eV nm: `E = HC_EV_NM / lambda_nm`.
pub const HC_EV_NM: f64 = 1_239.841_98;
const ADC_SATURATION_COUNTS: f64 = 65_535.0;
const READ_NOISE_COUNTS: f64 = 12.0;

/// Configuration of a simulated PL spectrometer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedSpectrometerConfig {
    /// Source id of the stream.
    pub source: String,
    /// Run id stamped on the messages (the server's default run if absent).
    pub run_id: Option<String>,
    /// Pixels per spectrum.
    pub pixels: usize,
    /// First wavelength of the axis, nm.
    pub wavelength_min_nm: f64,
    /// Last wavelength of the axis, nm.
    pub wavelength_max_nm: f64,
    /// Integration time per spectrum, ms.
    pub integration_time_ms: f64,
    /// Spectra batched into one message.
    pub spectra_per_message: usize,
    /// Spectra taken under each condition before the next one starts.
    pub spectra_per_condition: usize,
    /// Settled PL peak energy of each condition, eV, cycled in order.
    pub peak_energies_ev: Vec<f64>,
    /// Settled PL FWHM of each condition, eV, cycled in order.
    pub fwhm_ev: Vec<f64>,
    /// Time constant of the approach to a new condition, in spectra.
    pub settle_spectra: f64,
    /// Peak height above the dark level, counts.
    pub peak_counts: f64,
    /// Dark level, counts.
    pub dark_counts: f64,
    /// Probe position along the reactor, mm.
    pub probe_position_mm: Option<f64>,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SimulatedSpectrometerConfig {
    fn default() -> Self {
        SimulatedSpectrometerConfig {
            source: "spectrometer-1".into(),
            run_id: None,
            pixels: 2048,
            wavelength_min_nm: 350.0,
            wavelength_max_nm: 1000.0,
            integration_time_ms: 10.0,
            spectra_per_message: 1,
            spectra_per_condition: 500,
            peak_energies_ev: vec![2.43, 2.47, 2.52, 2.45],
            fwhm_ev: vec![0.085, 0.095, 0.080, 0.090],
            settle_spectra: 40.0,
            peak_counts: 30_000.0,
            dark_counts: 1_000.0,
            probe_position_mm: Some(150.0),
            seed: 7,
        }
    }
}

impl SimulatedSpectrometerConfig {
    /// Builds the simulator.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for an empty condition list or a degenerate axis.
    pub fn build(&self) -> Result<SimulatedSpectrometer, ConnectorError> {
        let bad = |why: &str| {
            Err(ConnectorError::Config(format!(
                "simulated_spectrometer: {why}"
            )))
        };
        if self.peak_energies_ev.is_empty() || self.fwhm_ev.is_empty() {
            return bad("peak_energies_ev and fwhm_ev need at least one value");
        }
        // `!(max > min)` on purpose: a NaN bound must be refused too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let empty_range = !(self.wavelength_max_nm > self.wavelength_min_nm);
        if self.pixels < 2 || empty_range || self.wavelength_min_nm <= 0.0 {
            return bad("needs >= 2 pixels over an increasing, positive wavelength range");
        }
        if self.spectra_per_message == 0 || self.spectra_per_condition == 0 {
            return bad("spectra_per_message and spectra_per_condition must be > 0");
        }
        let step = (self.wavelength_max_nm - self.wavelength_min_nm) / (self.pixels - 1) as f64;
        let axis_nm = (0..self.pixels)
            .map(|i| self.wavelength_min_nm + step * i as f64)
            .collect();
        Ok(SimulatedSpectrometer {
            config: self.clone(),
            axis_nm,
            rng: SmallRng::seed_from_u64(self.seed),
            spectra_taken: 0,
            current_energy_ev: self.peak_energies_ev[0],
            current_fwhm_ev: self.fwhm_ev[0],
        })
    }
}

/// The running simulator; see the module doc for its model.
pub struct SimulatedSpectrometer {
    config: SimulatedSpectrometerConfig,
    axis_nm: Vec<f64>,
    rng: SmallRng,
    spectra_taken: u64,
    current_energy_ev: f64,
    current_fwhm_ev: f64,
}

impl SimulatedSpectrometer {
    /// The wavelength axis, nm.
    pub fn axis_nm(&self) -> &[f64] {
        &self.axis_nm
    }

    /// Index of the condition the n-th spectrum is taken under.
    pub fn condition_index(&self, spectrum: u64) -> usize {
        (spectrum / self.config.spectra_per_condition as u64) as usize
    }

    /// The condition id of the n-th spectrum, as sent on the wire.
    pub fn condition_id(&self, spectrum: u64) -> String {
        format!("c-{:03}", self.condition_index(spectrum))
    }

    /// Settled (peak energy eV, FWHM eV) of a condition: the ground truth.
    pub fn settled(&self, condition: usize) -> (f64, f64) {
        let energies = &self.config.peak_energies_ev;
        let widths = &self.config.fwhm_ev;
        (
            energies[condition % energies.len()],
            widths[condition % widths.len()],
        )
    }

    /// Draws the next spectrum into `out` (dark + PL + noise, clipped).
    fn next_spectrum(&mut self, out: &mut Vec<f32>) {
        let (target_energy, target_fwhm) = self.settled(self.condition_index(self.spectra_taken));
        let relax = 1.0 - (-1.0 / self.config.settle_spectra.max(1e-9)).exp();
        self.current_energy_ev += (target_energy - self.current_energy_ev) * relax;
        self.current_fwhm_ev += (target_fwhm - self.current_fwhm_ev) * relax;
        self.spectra_taken += 1;
        let width_term =
            4.0 * std::f64::consts::LN_2 / (self.current_fwhm_ev * self.current_fwhm_ev);
        let standard = standard_normal();
        for &lambda in &self.axis_nm {
            let energy = HC_EV_NM / lambda;
            let delta = energy - self.current_energy_ev;
            let signal = self.config.peak_counts * (-width_term * delta * delta).exp();
            let sigma = (signal + READ_NOISE_COUNTS * READ_NOISE_COUNTS).sqrt();
            let value = self.config.dark_counts + signal + sigma * standard.sample(&mut self.rng);
            out.push(value.clamp(0.0, ADC_SATURATION_COUNTS) as f32);
        }
    }
}

fn standard_normal() -> Normal<f64> {
    // Normal::new fails only for a negative or non-finite sigma; 1.0 is neither.
    Normal::new(0.0, 1.0).expect("standard normal")
}

impl Connector for SimulatedSpectrometer {
    fn source_id(&self) -> &str {
        &self.config.source
    }

    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        let spectra = self.config.spectra_per_message;
        let pixels = self.axis_nm.len();
        let condition_id = self.condition_id(self.spectra_taken);
        let mut counts = Vec::with_capacity(spectra * pixels);
        for _ in 0..spectra {
            self.next_spectrum(&mut counts);
        }
        let mut message = OutboundMessage::new(&self.config.source, StreamKind::Spectra)
            .meta("kind", "pl")
            .meta("integration_time_ms", self.config.integration_time_ms);
        if let Some(position) = self.config.probe_position_mm {
            message = message.meta("probe_position_mm", position);
        }
        message.header.run_id = self.config.run_id.clone();
        message.header.condition_id = Some(condition_id);
        message.header.instrument_time_ns = Some(crate::transport::now_ns());
        let message = message
            .array_f64("wavelength_nm", &[pixels as u64], &self.axis_nm)
            .array_f32(
                "intensity_counts",
                &[spectra as u64, pixels as u64],
                &counts,
            );
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_spectra_peak_at_the_condition_energy() {
        let config = SimulatedSpectrometerConfig {
            settle_spectra: 1.0,
            ..Default::default()
        };
        let mut sim = config.build().expect("builds");
        let mut counts = Vec::new();
        for _ in 0..20 {
            counts.clear();
            sim.next_spectrum(&mut counts);
        }
        let (argmax, _) =
            counts.iter().enumerate().fold(
                (0, f32::MIN),
                |best, (i, &c)| if c > best.1 { (i, c) } else { best },
            );
        let peak_ev = HC_EV_NM / sim.axis_nm()[argmax];
        assert!((peak_ev - 2.43).abs() < 0.01, "peak at {peak_ev} eV");
        assert_eq!(sim.condition_id(0), "c-000");
        assert_eq!(sim.condition_id(500), "c-001");
    }

    #[test]
    fn bad_configs_are_refused() {
        let empty = SimulatedSpectrometerConfig {
            peak_energies_ev: vec![],
            ..Default::default()
        };
        assert!(empty.build().is_err());
        let flat = SimulatedSpectrometerConfig {
            wavelength_max_nm: 100.0,
            ..Default::default()
        };
        assert!(flat.build().is_err());
    }
}
