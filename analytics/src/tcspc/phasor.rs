//! Phasor coordinates of decays: a fit-free lifetime that works at a few hundred photons.
//!
//! `g_n = sum I_k cos(n w t_k) / sum I`, `s_n = sum I_k sin(n w t_k) / sum I` with `w = 2 pi f_sync`
//! and `t_k` the bins of one sync period. One FFT over the period gives every harmonic. The
//! instrument's own phasor (the IRF's) is divided out: modulation divided, phase subtracted.
//! A mono-exponential decay then lies on the semicircle `g = 1 / (1 + w^2 tau^2)`.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use super::{Result, TcspcError};

/// Phasor coordinates at one harmonic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phasor {
    /// Harmonic number `n` (1 = the sync frequency).
    pub harmonic: usize,
    /// Real coordinate `g`.
    pub g: f64,
    /// Imaginary coordinate `s`.
    pub s: f64,
}

impl Phasor {
    /// Modulation `sqrt(g^2 + s^2)`.
    pub fn modulation(&self) -> f64 {
        self.g.hypot(self.s)
    }

    /// Phase `atan2(s, g)` in rad.
    pub fn phase_rad(&self) -> f64 {
        self.s.atan2(self.g)
    }

    /// This phasor calibrated by a reference of lifetime zero (the IRF): the complex quotient,
    /// i.e. modulation divided by the reference's and the reference's phase subtracted.
    pub fn calibrated(&self, irf: &Phasor) -> Phasor {
        let den = irf.g * irf.g + irf.s * irf.s;
        Phasor {
            harmonic: self.harmonic,
            g: (self.g * irf.g + self.s * irf.s) / den,
            s: (self.s * irf.g - self.g * irf.s) / den,
        }
    }

    /// Apparent lifetimes `(tau_phase_ns, tau_modulation_ns)` at this harmonic of `sync_rate_hz`:
    /// `tau_phase = s / (g w)`, `tau_mod = sqrt(1 / m^2 - 1) / w`, `w = 2 pi n f_sync`.
    /// Equal for a mono-exponential decay; phase < modulation for a mixture.
    pub fn lifetimes_ns(&self, sync_rate_hz: f64) -> (f64, f64) {
        let w = 2.0 * std::f64::consts::PI * self.harmonic as f64 * sync_rate_hz * 1e-9;
        let m2 = self.g * self.g + self.s * self.s;
        (self.s / (self.g * w), (1.0 / m2 - 1.0).sqrt() / w)
    }
}

/// The phasor of a mono-exponential decay of `tau_ns` at harmonic `n` of `sync_rate_hz`.
pub fn semicircle_phasor(tau_ns: f64, harmonic: usize, sync_rate_hz: f64) -> Phasor {
    let wt = 2.0 * std::f64::consts::PI * harmonic as f64 * sync_rate_hz * 1e-9 * tau_ns;
    Phasor {
        harmonic,
        g: 1.0 / (1.0 + wt * wt),
        s: wt / (1.0 + wt * wt),
    }
}

/// Computes phasors of histograms over one sync period with a planned FFT and reused buffers.
pub struct PhasorCalculator {
    bins_per_period: usize,
    harmonics: usize,
    fft: Arc<dyn Fft<f64>>,
    buffer: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl std::fmt::Debug for PhasorCalculator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhasorCalculator")
            .field("bins_per_period", &self.bins_per_period)
            .field("harmonics", &self.harmonics)
            .finish()
    }
}

impl PhasorCalculator {
    /// A calculator for periods of `bins_per_period` histogram bins and harmonics `1..=harmonics`.
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] if `bins_per_period < 2` or the harmonics are 0 or reach
    /// the Nyquist limit `bins_per_period / 2`.
    pub fn new(bins_per_period: usize, harmonics: usize) -> Result<Self> {
        if bins_per_period < 2 || harmonics == 0 || harmonics >= bins_per_period.div_ceil(2) {
            return Err(TcspcError::InvalidArgument(format!(
                "{harmonics} harmonics of a {bins_per_period}-bin period (need 1 <= harmonics < bins / 2)"
            )));
        }
        let fft = FftPlanner::new().plan_fft_forward(bins_per_period);
        let scratch = vec![Complex::default(); fft.get_inplace_scratch_len()];
        Ok(PhasorCalculator {
            bins_per_period,
            harmonics,
            fft,
            buffer: vec![Complex::default(); bins_per_period],
            scratch,
        })
    }

    /// Number of harmonics computed.
    pub fn harmonics(&self) -> usize {
        self.harmonics
    }

    /// Writes the phasors of `histogram` at harmonics `1..=harmonics` into `out` and returns the
    /// background-free total count.
    ///
    /// Bin `k` of the histogram sits at phase `2 pi k / bins_per_period`; a histogram longer than
    /// the period is folded onto it (bin `k` adds to `k mod bins_per_period`), a shorter one is
    /// zero-padded. `background_per_bin` is subtracted from every histogram bin first. An empty
    /// histogram gives NaN coordinates.
    ///
    /// # Errors
    /// [`TcspcError::LengthMismatch`] if `out.len() != harmonics`.
    ///
    /// # Example
    /// ```
    /// use flowdaq_analytics::tcspc::phasor::PhasorCalculator;
    /// let mut calc = PhasorCalculator::new(8, 2)?;
    /// let mut out = [Default::default(); 2];
    /// calc.phasors(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0, &mut out)?;
    /// assert_eq!((out[0].g, out[0].s), (1.0, 0.0)); // a delta at t = 0 is the reference point
    /// # Ok::<(), flowdaq_analytics::tcspc::TcspcError>(())
    /// ```
    pub fn phasors(
        &mut self,
        histogram: &[f64],
        background_per_bin: f64,
        out: &mut [Phasor],
    ) -> Result<f64> {
        if out.len() != self.harmonics {
            return Err(TcspcError::LengthMismatch(format!(
                "{} outputs for {} harmonics",
                out.len(),
                self.harmonics
            )));
        }
        self.buffer.iter_mut().for_each(|c| *c = Complex::default());
        let p = self.bins_per_period;
        for chunk in histogram.chunks(p) {
            for (b, &v) in self.buffer.iter_mut().zip(chunk) {
                b.re += v - background_per_bin;
            }
        }
        self.fft
            .process_with_scratch(&mut self.buffer, &mut self.scratch);
        let total = self.buffer[0].re;
        for (h, o) in out.iter_mut().enumerate() {
            let c = self.buffer[h + 1];
            *o = Phasor {
                harmonic: h + 1,
                g: c.re / total,
                s: -c.im / total,
            };
        }
        Ok(total)
    }
}

impl Default for Phasor {
    fn default() -> Self {
        Phasor {
            harmonic: 1,
            g: 0.0,
            s: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_exponential_lies_on_the_semicircle_after_calibration() {
        // Periodic exponential sampled over a full period, convolved with a shifted delta IRF.
        let (bins, sync_hz, tau_ns) = (1000usize, 20e6, 7.0);
        let period_ns = 1e9 / sync_hz;
        let dt = period_ns / bins as f64;
        let shift = 37usize;
        let decay: Vec<f64> = (0..bins)
            .map(|k| {
                let t = ((k + bins - shift) % bins) as f64 * dt;
                (-t / tau_ns).exp() / (1.0 - (-period_ns / tau_ns).exp())
            })
            .collect();
        let mut irf = vec![0.0; bins];
        irf[shift] = 1.0;
        let mut calc = PhasorCalculator::new(bins, 3).unwrap();
        let mut d = [Phasor::default(); 3];
        let mut r = [Phasor::default(); 3];
        calc.phasors(&decay, 0.0, &mut d).unwrap();
        calc.phasors(&irf, 0.0, &mut r).unwrap();
        for h in 0..3 {
            let c = d[h].calibrated(&r[h]);
            // Sampling a continuous exponential at bin starts: the discrete-time phasor.
            let x = (-dt / tau_ns).exp();
            let z = Complex::new(1.0 - x, 0.0)
                / (Complex::new(1.0, 0.0)
                    - x * Complex::from_polar(
                        1.0,
                        2.0 * std::f64::consts::PI * (h + 1) as f64 / bins as f64,
                    ));
            assert!(
                (c.g - z.re).abs() < 1e-12 && (c.s - z.im).abs() < 1e-12,
                "{c:?} vs {z}"
            );
            let (tp, tm) = semicircle_phasor(tau_ns, h + 1, sync_hz).lifetimes_ns(sync_hz);
            assert!(
                (tp - tau_ns).abs() < 1e-12 && (tm - tau_ns).abs() < 1e-12,
                "{tp} {tm}"
            );
        }
    }

    #[test]
    fn background_and_folding() {
        let mut calc = PhasorCalculator::new(4, 1).unwrap();
        let mut out = [Phasor::default()];
        // 8 bins folded onto 4: [1,0,0,0] + [1,0,0,0]; background 0.5 removed from every bin.
        let total = calc
            .phasors(&[1.5, 0.5, 0.5, 0.5, 1.5, 0.5, 0.5, 0.5], 0.5, &mut out)
            .unwrap();
        assert_eq!(total, 2.0);
        assert!((out[0].g - 1.0).abs() < 1e-15 && out[0].s.abs() < 1e-15);
        assert!(calc.phasors(&[1.0], 0.0, &mut []).is_err());
        assert!(PhasorCalculator::new(4, 2).is_err());
    }
}
