//! Lifetime fits: 1-3 exponentials reconvolved with the IRF, by Levenberg-Marquardt.
//!
//! The model is `y_k = sum_i a_i (IRF (x) exp(-t / tau_i))_k + b`, with a free sub-bin IRF shift
//! and, given the sync period, the tails of earlier pulses. Two statistics: Neyman-weighted least
//! squares, and Poisson maximum likelihood (LM on the signed square roots of the deviance terms,
//! whose sum of squares is the Poisson deviance). Starting values are automatic ([`guess`]).
//! Lifetimes are fitted as `ln tau` so they stay positive; errors are reported for `tau`.
//!
//! By default the fit covers the bins the data occupies ([`range::occupied_range`]); each fit
//! carries [`FitFlags`] beside `converged` (a background significantly below zero, a high
//! chi-square, a parameter at its limit, too few counts).

mod deviance;
mod flags;
mod guess;
mod model;
mod normal;
pub mod range;
pub mod special;

pub use flags::FitFlags;

use levenberg_marquardt::{LeastSquaresProblem, LevenbergMarquardt, TerminationReason};
use nalgebra::{DMatrix, DVector, Dyn, Owned};

use self::model::{exp_conv_on, IrfShape, TAU_MIN_BINS};
use self::normal::{sum, NormalEquations};
use super::{Result, TcspcError};

/// Default relative tolerance of [`FitConfig`]: `sqrt(f64::EPSILON)`, as MINPACK (and lmfit,
/// scipy's `leastsq`) use. Parameters then stop moving far below their statistical errors.
pub const DEFAULT_TOLERANCE: f64 = 1.490_116_119_384_765_6e-8;

/// FWHM of a Gaussian in units of its standard deviation, `2 sqrt(2 ln 2)`.
pub const GAUSSIAN_FWHM_PER_SIGMA: f64 = 2.354_820_045_030_949_3;

/// The statistic minimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitStatistic {
    /// Least squares with Neyman weights `1 / max(y, 1)`; biased low at a few counts per bin.
    NeymanLeastSquares,
    /// Poisson maximum likelihood (minimum deviance); unbiased down to ~1e3 photons.
    PoissonMle,
}

/// The instrument response function.
#[derive(Debug, Clone, PartialEq)]
pub enum Irf {
    /// A measured IRF histogram with the same bins as the decay (any scale; negative values
    /// are clamped to 0 and it is normalised to unit sum). Shifted by linear interpolation.
    Measured(Vec<f64>),
    /// A Gaussian IRF of the given FWHM, integrated over each bin. With `center_ns: None` the
    /// reference centre is t = 0 and the fitted shift is the IRF centre itself.
    Gaussian {
        /// Full width at half maximum in ns.
        fwhm_ns: f64,
        /// Centre in ns from the start of bin 0, if known.
        center_ns: Option<f64>,
    },
}

/// A parameter that is either fitted or held at a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Parameter {
    /// Fitted.
    Free,
    /// Held fixed at this value.
    Fixed(f64),
}

/// What to fit and how.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// Number of exponential components, 1 to 3.
    pub components: usize,
    /// Least squares or maximum likelihood.
    pub statistic: FitStatistic,
    /// Histogram bin width in ns.
    pub bin_width_ns: f64,
    /// Sync period in ns: if set, the tails of earlier pulses are included (periodic decay).
    /// Values shorter than the histogram are treated as the histogram length.
    pub period_ns: Option<f64>,
    /// Bins `[start, end)` that enter the statistic. Default (`None`): the bins the data
    /// occupies, found per histogram by [`range::occupied_range`] (empty instrument ranges at
    /// either end and the period's partial last bin left out); `Some((0, n_bins))` fits all.
    /// The model always spans the whole histogram.
    pub fit_range: Option<(usize, usize)>,
    /// Constant background in counts per bin.
    pub background: Parameter,
    /// IRF shift in ns (positive: later).
    pub shift: Parameter,
    /// Starting lifetimes in ns (first `components` used); automatic if `None`.
    pub initial_tau_ns: Option<[f64; 3]>,
    /// Relative tolerance on the statistic and the parameters (LM `ftol` / `xtol`).
    pub tolerance: f64,
    /// Evaluations allowed per parameter plus one (LM patience).
    pub patience: usize,
    /// Reduced chi-square above which a fit is flagged [`FitFlags::CHI_SQUARE_HIGH`].
    pub max_reduced_chi_square: f64,
    /// Photons in the fit range per component below which a fit is flagged
    /// [`FitFlags::FEW_COUNTS`].
    pub min_counts_per_component: f64,
}

/// Default [`FitConfig::max_reduced_chi_square`]: a right model over a few hundred bins gives
/// 1 +- 0.1, a missing component or a wrong range well above 1.5.
pub const DEFAULT_MAX_REDUCED_CHI_SQUARE: f64 = 1.5;

/// Default [`FitConfig::min_counts_per_component`]: at 1e4 photons a mono-exponential
/// lifetime has a relative standard error near 1 %.
pub const DEFAULT_MIN_COUNTS_PER_COMPONENT: f64 = 1e4;

impl FitConfig {
    /// Defaults: the occupied bins, free background and shift, no previous pulses, automatic
    /// start, tolerance `sqrt(f64::EPSILON)` (~1.5e-8, MINPACK's and so lmfit's default),
    /// patience 100, flags at [`DEFAULT_MAX_REDUCED_CHI_SQUARE`] and
    /// [`DEFAULT_MIN_COUNTS_PER_COMPONENT`].
    pub fn new(components: usize, statistic: FitStatistic, bin_width_ns: f64) -> Self {
        FitConfig {
            components,
            statistic,
            bin_width_ns,
            period_ns: None,
            fit_range: None,
            background: Parameter::Free,
            shift: Parameter::Free,
            initial_tau_ns: None,
            tolerance: DEFAULT_TOLERANCE,
            patience: 100,
            max_reduced_chi_square: DEFAULT_MAX_REDUCED_CHI_SQUARE,
            min_counts_per_component: DEFAULT_MIN_COUNTS_PER_COMPONENT,
        }
    }
}

/// What draws a decay: a fit's lifetimes and amplitudes (one per component), background and
/// shift, as a `lifetime_features` row keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct DecayParameters {
    /// Lifetimes, ns, one per component.
    pub tau_ns: Vec<f64>,
    /// Amplitudes, counts per bin at t = 0 before convolution, one per component.
    pub amplitude_counts: Vec<f64>,
    /// Background, counts per bin.
    pub background_counts: f64,
    /// Shift of the IRF, ns.
    pub shift_ns: f64,
}

/// Outcome of one fit. Unused component slots hold NaN. Components are sorted by lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct LifetimeFit {
    /// Number of components fitted.
    pub components: usize,
    /// Lifetimes in ns.
    pub tau_ns: [f64; 3],
    /// Standard errors of the lifetimes in ns.
    pub tau_stderr_ns: [f64; 3],
    /// Amplitudes `a_i`: counts per bin of each exponential at t = 0, before convolution.
    pub amplitude_counts: [f64; 3],
    /// Standard errors of the amplitudes.
    pub amplitude_stderr_counts: [f64; 3],
    /// Background in counts per bin.
    pub background_counts: f64,
    /// Standard error of the background (0 if fixed).
    pub background_stderr_counts: f64,
    /// IRF shift in ns.
    pub shift_ns: f64,
    /// Standard error of the shift in ns (0 if fixed).
    pub shift_stderr_ns: f64,
    /// `sum a_i tau_i / sum a_i`, ns.
    pub tau_amplitude_weighted_ns: f64,
    /// `sum a_i tau_i^2 / sum a_i tau_i`, ns.
    pub tau_intensity_weighted_ns: f64,
    /// Chi-square per degree of freedom: Neyman chi-square for least squares, Pearson
    /// chi-square (model variance) for maximum likelihood.
    pub reduced_chi_square: f64,
    /// Poisson deviance `2 sum (m - y + y ln(y / m))` over the fit range.
    pub poisson_deviance: f64,
    /// Bins fitted minus free parameters.
    pub degrees_of_freedom: usize,
    /// Model evaluations used.
    pub evaluations: usize,
    /// True when the optimizer met its tolerance and every parameter and the chi-square are
    /// finite. Says nothing of whether the model fits: see `flags`.
    pub converged: bool,
    /// Quality problems of the fit (chi-square, bounds, counts); [`FitFlags::OK`] if none.
    pub flags: FitFlags,
    /// The bins `[start, end)` that entered the statistic.
    pub fit_range: (usize, usize),
    /// The statistic used.
    pub statistic: FitStatistic,
}

impl LifetimeFit {
    /// The parameters that draw this fit's curve.
    pub fn parameters(&self) -> DecayParameters {
        let n = self.components.min(3);
        DecayParameters {
            tau_ns: self.tau_ns[..n].to_vec(),
            amplitude_counts: self.amplitude_counts[..n].to_vec(),
            background_counts: self.background_counts,
            shift_ns: self.shift_ns,
        }
    }
}

/// Which entries of the parameter vector are free: `[a_1..a_n, ln tau_1..ln tau_n, b?, shift?]`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    n: usize,
    free_b: bool,
    free_shift: bool,
}

impl Layout {
    fn len(&self) -> usize {
        2 * self.n + usize::from(self.free_b) + usize::from(self.free_shift)
    }
    fn b(&self) -> Option<usize> {
        self.free_b.then_some(2 * self.n)
    }
    fn shift(&self) -> Option<usize> {
        self.free_shift
            .then_some(2 * self.n + usize::from(self.free_b))
    }
}

/// Fits many histograms of the same shape, reusing the prepared IRF and all work buffers.
#[derive(Debug, Clone)]
pub struct LifetimeFitter {
    config: FitConfig,
    n_bins: usize,
    irf: IrfShape,
    /// The IRF on the sub-bin grid (same as `irf` when `oversample == 1`).
    fine_irf: IrfShape,
    /// Sub-bins per bin: a Gaussian IRF narrower than 2 bins (sigma) is not constant within a
    /// bin, so the model is evaluated on `ceil(2 / sigma)` (at most 16) sub-bins per bin.
    oversample: usize,
    period_bins: Option<f64>,
    /// The fit range of the histogram being fitted (the configured one, or the occupied bins).
    range: (usize, usize),
    /// First harmonic of the period (or of the histogram span) at each bin, for the start.
    harmonic: guess::Harmonic,
    /// Second harmonic, for the two lifetimes of a 2-exponential start.
    second_harmonic: guess::Harmonic,
    /// Use the AVX2 build of the bin loops when the CPU has it (tests turn it off to check the
    /// portable build gives the same fits).
    simd: bool,
    work: Work,
}

/// Buffers of one model evaluation, reused across evaluations and fits.
#[derive(Debug, Clone, Default)]
struct Work {
    irf: Vec<f64>,
    dirf: Vec<f64>,
    /// What `irf` (and `dirf`) hold, so an evaluation at the shift the starting values were
    /// found at (the first of every fit) reuses the IRF instead of recomputing it.
    irf_at: Option<IrfAt>,
    /// Per component: unit-amplitude curve, its tau derivative and its shift derivative.
    conv: Vec<Vec<f64>>,
    dconv_tau: Vec<Vec<f64>>,
    dconv_shift: Vec<Vec<f64>>,
    model: Vec<f64>,
    /// Residuals and d residual / d model over the fit range, at the current parameters.
    resid: Vec<f64>,
    drdm: Vec<f64>,
    /// Neyman weights `1 / sqrt(max(y, 1))` of the histogram being fitted, over the fit range,
    /// `1 / y` (infinite at 0, never used there) and `sqrt(y)`.
    weight: Vec<f64>,
    inv_y: Vec<f64>,
    sqrt_y: Vec<f64>,
    /// Per-bin terms of the fit summary.
    terms: Vec<f64>,
    /// Jacobian of the residuals, one column of `resid.len()` values per free parameter.
    jac: Vec<f64>,
    /// Normal equations at the current parameters, condensed for the LM crate.
    normal: NormalEquations,
    /// Buffers of the starting-value search.
    guess: guess::GuessScratch,
    /// Scratch of the default fit range.
    range_cumulative: Vec<f64>,
    /// Sub-bin grid buffers (`n_bins * oversample`), used when the IRF is oversampled.
    fine_irf: Vec<f64>,
    fine_dirf: Vec<f64>,
    fine_a: Vec<f64>,
    fine_b: Vec<f64>,
}

/// The shift (bins) `Work::irf` was evaluated at, its support, and whether `Work::dirf` holds
/// the derivative at that shift.
#[derive(Debug, Clone, Copy)]
struct IrfAt {
    shift: f64,
    support: (usize, usize),
    with_derivative: bool,
}

impl LifetimeFitter {
    /// Prepares fits of `n_bins`-bin histograms.
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] for 0 or more than 3 components, fewer bins than 2x the
    /// parameters, a non-positive bin width, FWHM or period, a measured IRF of another length
    /// or without positive counts, or a fit range outside the histogram.
    pub fn new(config: FitConfig, irf: Irf, n_bins: usize) -> Result<Self> {
        let bad = |m: String| Err(TcspcError::InvalidArgument(m));
        if !(1..=3).contains(&config.components) {
            return bad(format!(
                "components {} must be 1, 2 or 3",
                config.components
            ));
        }
        if !(config.bin_width_ns.is_finite() && config.bin_width_ns > 0.0) {
            return bad(format!(
                "bin_width_ns {} must be finite and > 0",
                config.bin_width_ns
            ));
        }
        if let Some(p) = config.period_ns {
            if !(p.is_finite() && p > 0.0) {
                return bad(format!("period_ns {p} must be finite and > 0"));
            }
        }
        if !(config.tolerance.is_finite() && config.tolerance >= 0.0) || config.patience == 0 {
            return bad("tolerance must be >= 0 and patience > 0".into());
        }
        if !(config.max_reduced_chi_square > 0.0 && config.min_counts_per_component >= 0.0) {
            return bad(
                "max_reduced_chi_square must be > 0 and min_counts_per_component >= 0".into(),
            );
        }
        let range = config.fit_range.unwrap_or((0, n_bins));
        if range.0 >= range.1 || range.1 > n_bins {
            return bad(format!("fit range {range:?} outside 0..{n_bins}"));
        }
        if range.1 - range.0 < min_fit_bins(config.components) {
            return bad(format!(
                "{} bins are too few for {} components",
                range.1 - range.0,
                config.components
            ));
        }
        let shape = match irf {
            Irf::Measured(v) => {
                if v.len() != n_bins {
                    return bad(format!(
                        "measured IRF has {} bins, the histograms {n_bins}",
                        v.len()
                    ));
                }
                let clean: Vec<f64> = v
                    .iter()
                    .map(|x| if x.is_finite() { x.max(0.0) } else { 0.0 })
                    .collect();
                let sum: f64 = clean.iter().sum();
                if sum <= 0.0 {
                    return bad("measured IRF has no positive counts".into());
                }
                IrfShape::Measured(clean.iter().map(|x| x / sum).collect())
            }
            Irf::Gaussian { fwhm_ns, center_ns } => {
                if !(fwhm_ns.is_finite() && fwhm_ns > 0.0) {
                    return bad(format!("IRF FWHM {fwhm_ns} ns must be finite and > 0"));
                }
                let center = center_ns.unwrap_or(0.0);
                if !center.is_finite() {
                    return bad("IRF centre must be finite".into());
                }
                IrfShape::Gaussian {
                    sigma: fwhm_ns / GAUSSIAN_FWHM_PER_SIGMA / config.bin_width_ns,
                    center: center / config.bin_width_ns,
                }
            }
        };
        let n = config.components;
        let (oversample, fine_irf) = match shape {
            IrfShape::Gaussian { sigma, center } => {
                let s = oversample_factor(sigma);
                (
                    s,
                    IrfShape::Gaussian {
                        sigma: sigma * s as f64,
                        center: center * s as f64,
                    },
                )
            }
            IrfShape::Measured(_) => (1, shape.clone()),
        };
        let fine = if oversample > 1 {
            n_bins * oversample
        } else {
            0
        };
        let work = Work {
            irf: vec![0.0; n_bins],
            dirf: vec![0.0; n_bins],
            irf_at: None,
            conv: vec![vec![0.0; n_bins]; n],
            dconv_tau: vec![vec![0.0; n_bins]; n],
            dconv_shift: vec![vec![0.0; n_bins]; n],
            model: vec![0.0; n_bins],
            resid: vec![0.0; range.1 - range.0],
            drdm: vec![0.0; range.1 - range.0],
            weight: vec![0.0; range.1 - range.0],
            inv_y: vec![0.0; range.1 - range.0],
            sqrt_y: vec![0.0; range.1 - range.0],
            terms: vec![0.0; range.1 - range.0],
            jac: vec![0.0; (2 * n + 2) * (range.1 - range.0)],
            normal: NormalEquations::default(),
            guess: guess::GuessScratch::default(),
            range_cumulative: Vec::new(),
            fine_irf: vec![0.0; fine],
            fine_dirf: vec![0.0; fine],
            fine_a: vec![0.0; fine],
            fine_b: vec![0.0; fine],
        };
        let period_bins = config.period_ns.map(|p| p / config.bin_width_ns);
        let span = period_bins.map_or(n_bins as f64, |p| p.max(n_bins as f64));
        Ok(LifetimeFitter {
            harmonic: guess::Harmonic::new(n_bins, span, 1),
            second_harmonic: guess::Harmonic::new(n_bins, span, 2),
            simd: true,
            period_bins,
            config,
            n_bins,
            irf: shape,
            fine_irf,
            oversample,
            range,
            work,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FitConfig {
        &self.config
    }

    /// Width of the IRF in bins (standard deviation, or its equivalent for a measured IRF).
    fn irf_width_bins(&self) -> f64 {
        match &self.irf {
            IrfShape::Gaussian { sigma, .. } => *sigma,
            IrfShape::Measured(v) => {
                let peak = v.iter().cloned().fold(0.0, f64::max);
                // A Gaussian of unit area has peak 1 / (sigma sqrt(2 pi)).
                if peak > 0.0 {
                    (1.0 / (peak * (2.0 * std::f64::consts::PI).sqrt())).max(0.5)
                } else {
                    1.0
                }
            }
        }
    }

    #[inline(always)]
    fn guess(&mut self, y: &[f64]) -> guess::Guess {
        let n = self.config.components;
        let bw = self.config.bin_width_ns;
        let width = self.irf_width_bins();
        // Step window: about two IRF widths, widened at low counts so each side holds ~8 counts
        // per histogram-wide average bin.
        let total = sum(&y[self.range.0..self.range.1]);
        let fit_bins = (self.range.1 - self.range.0) as f64;
        let window = (2.0 * width + 1.0)
            .max(8.0 * fit_bins / total.max(1.0))
            .ceil() as usize;
        let rise = guess::rising_step(y, self.range, window, &mut self.work.guess.cumulative);
        let b = match self.config.background {
            Parameter::Fixed(v) => v,
            Parameter::Free => guess::background(y, self.range, rise, width),
        };
        let shift = match self.config.shift {
            Parameter::Fixed(v) => v / bw,
            Parameter::Free => rise - guess::irf_reference_position(&self.irf, self.n_bins),
        };
        // With the shift free and no oversampling, the first model evaluation needs this IRF
        // and its derivative at this very shift: computed once here, reused there.
        let with_derivative = self.oversample == 1 && matches!(self.config.shift, Parameter::Free);
        let w = &mut self.work;
        let support = self.irf.eval(
            shift,
            &mut w.irf,
            with_derivative.then_some(&mut w.dirf[..]),
        );
        w.irf_at = Some(IrfAt {
            shift,
            support,
            with_derivative,
        });
        let period = self.period_bins.map(|p| p.max(self.n_bins as f64));
        let span = period.unwrap_or(self.n_bins as f64);
        let (tau_phase, tau_mod) = guess::phasor_lifetimes(y, &self.work.irf, b, &self.harmonic)
            .unwrap_or((span / 8.0, span / 8.0));
        let clamp = |t: f64| t.clamp(0.3_f64.max(TAU_MIN_BINS), 50.0 * span);
        let (tau_phase, tau_mod) = (clamp(tau_phase), clamp(tau_mod.max(tau_phase)));
        let fixed_b = match self.config.background {
            Parameter::Fixed(v) => Some(v),
            Parameter::Free => None,
        };
        let grid = || guess::log_grid(tau_phase / 8.0, tau_mod * 4.0, if n == 2 { 10 } else { 9 });
        // Two components: the lifetimes the two harmonics' phasors give, else the grid.
        let phasor_pair = (n == 2 && self.config.initial_tau_ns.is_none())
            .then(|| {
                guess::biexponential_phasor(
                    y,
                    &self.work.irf,
                    b,
                    &self.harmonic,
                    &self.second_harmonic,
                    tau_phase,
                )
            })
            .flatten();
        let candidates: Vec<f64> = match (self.config.initial_tau_ns, phasor_pair) {
            (Some(t), _) => t[..n].iter().map(|v| clamp(v / bw)).collect(),
            (None, Some((t1, t2))) => vec![clamp(t1), clamp(t2)],
            (None, None) if n == 1 => vec![tau_phase],
            (None, None) => grid(),
        };
        let irf = std::mem::take(&mut self.work.irf);
        let solve = |candidates: &[f64], scratch: &mut guess::GuessScratch| {
            guess::best_combination(
                y, &irf, self.range, period, n, candidates, fixed_b, support, scratch,
            )
        };
        let mut solved = solve(&candidates, &mut self.work.guess);
        if solved.is_none() && phasor_pair.is_some() {
            solved = solve(&grid(), &mut self.work.guess);
        }
        self.work.irf = irf;
        match solved {
            Some((tau, amplitude, background)) => guess::Guess {
                tau,
                amplitude,
                background,
                shift,
            },
            None => {
                // No positive linear solution: fall back to spread lifetimes sharing the peak.
                let peak = y[self.range.0..self.range.1]
                    .iter()
                    .cloned()
                    .fold(0.0, f64::max);
                let tau: Vec<f64> = match n {
                    1 => vec![tau_phase],
                    2 => vec![tau_phase * 0.4, tau_mod * 1.5],
                    _ => vec![tau_phase * 0.25, tau_phase, tau_mod * 2.0],
                };
                let amplitude = vec![(peak - b).max(1.0) / n as f64; n];
                guess::Guess {
                    tau,
                    amplitude,
                    background: b,
                    shift,
                }
            }
        }
    }

    /// Fits one histogram (counts per bin, `n_bins` values).
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] if the length differs from `n_bins`;
    /// [`TcspcError::Fit`] if a count is negative or not finite, or the fit range holds no
    /// counts. A fit that runs but does not converge is returned with `converged: false`.
    pub fn fit(&mut self, histogram: &[f64]) -> Result<LifetimeFit> {
        if histogram.len() != self.n_bins {
            return Err(TcspcError::InvalidArgument(format!(
                "histogram has {} bins, fitter expects {}",
                histogram.len(),
                self.n_bins
            )));
        }
        let range = match self.config.fit_range {
            Some(range) => range,
            None => range::occupied_range(
                histogram,
                self.period_bins,
                min_fit_bins(self.config.components),
                &mut self.work.range_cumulative,
            ),
        };
        self.set_range(range);
        let mut fit = self.fit_dispatch(histogram)?;
        // A background a little below zero is noise (and clamping it would bias the lifetimes
        // of every low-count fit); one further below than its error allows is a wrong model.
        if fit.background_counts + NEGATIVE_BACKGROUND_STDERRS * fit.background_stderr_counts < 0.0
        {
            fit.flags.insert(FitFlags::NEGATIVE_BACKGROUND);
        }
        if sum(&histogram[range.0..range.1])
            < self.config.min_counts_per_component * self.config.components as f64
        {
            fit.flags.insert(FitFlags::FEW_COUNTS);
        }
        let chi2 = fit.reduced_chi_square;
        if chi2.is_nan() || chi2 > self.config.max_reduced_chi_square {
            fit.flags.insert(FitFlags::CHI_SQUARE_HIGH);
        }
        Ok(fit)
    }

    /// The model's counts in every bin of the histogram at a fit's parameters (lifetimes,
    /// amplitudes, background, shift), with this fitter's IRF and period: the curve the fit
    /// drew, for plots and residuals.
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] if the parameters hold another number of components.
    pub fn model_counts(&mut self, fit: &DecayParameters) -> Result<Vec<f64>> {
        let n = self.config.components;
        if fit.tau_ns.len() != n || fit.amplitude_counts.len() != n {
            return Err(TcspcError::InvalidArgument(format!(
                "parameters of {} lifetimes and {} amplitudes, the fitter has {n} components",
                fit.tau_ns.len(),
                fit.amplitude_counts.len()
            )));
        }
        let bw = self.config.bin_width_ns;
        let layout = Layout {
            n,
            free_b: true,
            free_shift: true,
        };
        let mut x = DVector::zeros(layout.len());
        for i in 0..n {
            x[i] = fit.amplitude_counts[i];
            x[n + i] = (fit.tau_ns[i] / bw).max(TAU_MIN_BINS).ln();
        }
        if let Some(i) = layout.b() {
            x[i] = fit.background_counts;
        }
        if let Some(i) = layout.shift() {
            x[i] = fit.shift_ns / bw;
        }
        self.set_range((0, self.n_bins));
        // The statistic's terms are evaluated too, against a flat histogram of ones (finite
        // weights); only the model is read.
        let ones = vec![1.0; self.n_bins];
        for v in [
            &mut self.work.weight,
            &mut self.work.inv_y,
            &mut self.work.sqrt_y,
        ] {
            v.fill(1.0);
        }
        let problem = self.problem(&ones, layout, (0.0, 0.0), &x);
        let work = problem.work;
        let model = work.model.clone();
        self.work = work;
        Ok(model)
    }

    /// Sizes the per-bin buffers of the fit range (reallocating only when the range grows).
    fn set_range(&mut self, range: (usize, usize)) {
        if range == self.range {
            return;
        }
        let len = range.1 - range.0;
        let w = &mut self.work;
        for v in [
            &mut w.resid,
            &mut w.drdm,
            &mut w.weight,
            &mut w.inv_y,
            &mut w.sqrt_y,
            &mut w.terms,
        ] {
            v.resize(len, 0.0);
        }
        w.jac.resize((2 * self.config.components + 2) * len, 0.0);
        self.range = range;
    }

    fn fit_dispatch(&mut self, histogram: &[f64]) -> Result<LifetimeFit> {
        #[cfg(target_arch = "x86_64")]
        if self.simd && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.fit_avx2(histogram) };
        }
        self.fit_inner(histogram)
    }

    /// [`LifetimeFitter::fit`] compiled for AVX2 (the starting values, the per-histogram
    /// weights and the summary run four doubles wide; model evaluations dispatch on their own).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fit_avx2(&mut self, histogram: &[f64]) -> Result<LifetimeFit> {
        self.fit_inner(histogram)
    }

    #[inline(always)]
    fn fit_inner(&mut self, histogram: &[f64]) -> Result<LifetimeFit> {
        // The length was checked by `fit`, the only way in.
        // A fold without early exit vectorises; the search for the culprit runs only on error.
        let all_valid = histogram
            .iter()
            .fold(true, |ok, v| ok & (0.0..f64::INFINITY).contains(v));
        if !all_valid {
            let bad = histogram
                .iter()
                .find(|v| !(v.is_finite() && **v >= 0.0))
                .copied()
                .unwrap_or(f64::NAN);
            return Err(TcspcError::Fit(format!(
                "count {bad} is negative or not finite"
            )));
        }
        let total = sum(&histogram[self.range.0..self.range.1]);
        if total <= 0.0 {
            return Err(TcspcError::Fit("no counts in the fit range".into()));
        }
        let g = self.guess(histogram);
        let layout = Layout {
            n: self.config.components,
            free_b: matches!(self.config.background, Parameter::Free),
            free_shift: matches!(self.config.shift, Parameter::Free),
        };
        let mut x = DVector::zeros(layout.len());
        for i in 0..layout.n {
            x[i] = g.amplitude[i];
            x[layout.n + i] = g.tau[i].max(TAU_MIN_BINS).ln();
        }
        if let Some(i) = layout.b() {
            x[i] = g.background;
        }
        if let Some(i) = layout.shift() {
            x[i] = g.shift;
        }
        let fixed_b = match self.config.background {
            Parameter::Fixed(v) => v,
            Parameter::Free => 0.0,
        };
        let fixed_shift = match self.config.shift {
            Parameter::Fixed(v) => v / self.config.bin_width_ns,
            Parameter::Free => 0.0,
        };
        let work = &mut self.work;
        for (((w, inv), sqrt), &y) in work
            .weight
            .iter_mut()
            .zip(work.inv_y.iter_mut())
            .zip(work.sqrt_y.iter_mut())
            .zip(&histogram[self.range.0..])
        {
            // sqrt(max(y, 1)) == max(sqrt(y), 1) exactly (sqrt is monotone and sqrt(1) = 1),
            // which saves a square root per bin.
            *sqrt = y.sqrt();
            *w = 1.0 / sqrt.max(1.0);
            *inv = 1.0 / y;
        }
        let lm = LevenbergMarquardt::new()
            .with_ftol(self.config.tolerance)
            .with_xtol(self.config.tolerance)
            .with_gtol(self.config.tolerance * 1e-2)
            .with_patience(self.config.patience);
        let bin_width_ns = self.config.bin_width_ns;
        let problem = self.problem(histogram, layout, (fixed_b, fixed_shift), &x);
        // The crate leaves the problem evaluated at the parameters it returns (it re-evaluates
        // the last accepted point when it stops on a rejected trial), so the model, residuals
        // and normal equations in `work` are those of the result.
        let (mut problem, report) = lm.minimize(problem);
        let result = problem.summarise(
            &report.termination,
            report.number_of_evaluations,
            bin_width_ns,
        );
        self.work = problem.work;
        Ok(result)
    }

    /// The problem of fitting `y` with `layout`'s free parameters (the others held at
    /// `fixed`: background, shift in bins), evaluated at `x`. It holds this fitter's work
    /// buffers: give them back with `self.work = problem.work`.
    fn problem<'a>(
        &'a mut self,
        y: &'a [f64],
        layout: Layout,
        fixed: (f64, f64),
        x: &DVector<f64>,
    ) -> Problem<'a> {
        let mut problem = Problem {
            y,
            range: self.range,
            statistic: self.config.statistic,
            layout,
            fixed_b: fixed.0,
            fixed_shift: fixed.1,
            irf: &self.irf,
            fine_irf: &self.fine_irf,
            oversample: self.oversample,
            period: self.period_bins,
            work: std::mem::take(&mut self.work),
            x: x.clone(),
            simd: self.simd,
        };
        problem.set_params(x);
        problem
    }
}

/// Standard errors below zero at which a background is flagged
/// [`FitFlags::NEGATIVE_BACKGROUND`].
pub const NEGATIVE_BACKGROUND_STDERRS: f64 = 3.0;

/// Fewest bins a fit of `components` exponentials runs over: twice the parameters.
fn min_fit_bins(components: usize) -> usize {
    2 * (2 * components + 2)
}

/// Fits one histogram: [`LifetimeFitter::new`] then [`LifetimeFitter::fit`].
///
/// # Errors
/// As those two.
///
/// # Example
/// ```
/// use flowdaq_analytics::tcspc::fit::*;
/// // A noiseless 4 ns decay on 256 bins of 50 ps, Gaussian IRF of 150 ps FWHM at 2 ns.
/// let (bw, tau) = (0.05, 4.0);
/// let irf = Irf::Gaussian { fwhm_ns: 0.15, center_ns: Some(2.0) };
/// let y: Vec<f64> = (0..256).map(|k| {
///     let t = (k as f64 + 0.5) * bw - 2.0;
///     if t > 0.0 { 1000.0 * (-t / tau).exp() + 2.0 } else { 2.0 }
/// }).collect();
/// let fit = fit_decay(&y, &irf, &FitConfig::new(1, FitStatistic::PoissonMle, bw))?;
/// assert!(fit.converged && (fit.tau_ns[0] - tau).abs() < 0.05);
/// # Ok::<(), flowdaq_analytics::tcspc::TcspcError>(())
/// ```
pub fn fit_decay(histogram: &[f64], irf: &Irf, config: &FitConfig) -> Result<LifetimeFit> {
    LifetimeFitter::new(config.clone(), irf.clone(), histogram.len())?.fit(histogram)
}

/// The least-squares problem handed to the `levenberg-marquardt` crate.
///
/// `set_params` evaluates the model and every derivative at once: LM asks for the Jacobian at
/// nearly every accepted point, and the derivative recursions share the model's passes.
struct Problem<'a> {
    y: &'a [f64],
    range: (usize, usize),
    statistic: FitStatistic,
    layout: Layout,
    fixed_b: f64,
    fixed_shift: f64,
    irf: &'a IrfShape,
    fine_irf: &'a IrfShape,
    oversample: usize,
    period: Option<f64>,
    work: Work,
    x: DVector<f64>,
    /// As [`LifetimeFitter`]'s `simd`.
    simd: bool,
}

/// Sub-bins per bin for a Gaussian IRF of `sigma` bins: `ceil(2 / sigma)`, 1 to 16.
fn oversample_factor(sigma: f64) -> usize {
    ((2.0 / sigma).ceil() as usize).clamp(1, 16)
}

/// Sums groups of `s` sub-bins into bins, times `scale`.
fn bin_down(fine: &[f64], s: usize, scale: f64, out: &mut [f64]) {
    for (o, chunk) in out.iter_mut().zip(fine.chunks_exact(s)) {
        *o = chunk.iter().sum::<f64>() * scale;
    }
}

/// The Poisson residual of a bin, in two halves: the signed square root of the bin's deviance
/// term and its derivative with respect to the model, for bin value `y` and model `m`, given
/// `inv_y = 1 / y` and `sqrt_y` (anything when `y <= 0`). Neyman residuals are `(y - m) w` with
/// precomputed weights.
///
/// Written with selects rather than branches so the bin loop vectorises: every case is computed
/// and the right one kept. Cases: a model at or below [`MODEL_FLOOR`] is evaluated at the floor
/// with no gradient; an empty bin contributes `2 m`; near `m = y` the derivative takes its limit.
///
/// This first half is the deviance term at the floored model. The bin loop runs in two passes
/// (this, then [`poisson_residual_from_term`]): in one pass the chained division, square root
/// and division per bin were latency-bound, with too few bins in flight to fill the divider.
#[inline(always)]
fn poisson_term(y: f64, inv_y: f64, m: f64) -> f64 {
    let m = if m <= MODEL_FLOOR { MODEL_FLOOR } else { m };
    deviance::deviance_term(y, inv_y, m)
}

/// Second half of the Poisson residual (see [`poisson_term`]): `(r, dr/dm)` given
/// `term = poisson_term(y, inv_y, m)`.
#[inline(always)]
fn poisson_residual_from_term(y: f64, sqrt_y: f64, m: f64, term: f64) -> (f64, f64) {
    let below = m <= MODEL_FLOOR;
    let m = if below { MODEL_FLOOR } else { m };
    let counted = y > 0.0;
    let root = term.max(0.0).sqrt();
    let u = m - y;
    let r = if u <= 0.0 { root } else { -root };
    // One division for both 1 / m and 1 / root (the root floored so that 0 stays finite).
    let root_floored = root.max(1e-150);
    let q = 1.0 / (m * root_floored);
    let (inv_m, inv_root) = (root_floored * q, m * q);
    let near = u.abs() < 1e-7 * y || root == 0.0;
    let d = if !counted {
        -inv_root
    } else if near {
        -sqrt_y * inv_m
    } else {
        -u.abs() * inv_m * inv_root
    };
    (r, if below { 0.0 } else { d })
}

/// Floor of the model for the likelihood (which needs m > 0).
const MODEL_FLOOR: f64 = 1e-10;
/// Largest `ln tau` evaluated (tau of e^25 bins is effectively a constant).
const LN_TAU_MAX: f64 = 25.0;

impl Problem<'_> {
    fn tau(&self, i: usize) -> f64 {
        self.x[self.layout.n + i]
            .clamp(TAU_MIN_BINS.ln(), LN_TAU_MAX)
            .exp()
    }
    fn background(&self) -> f64 {
        self.layout.b().map_or(self.fixed_b, |i| self.x[i])
    }
    fn shift(&self) -> f64 {
        // A shift beyond the histogram makes the model zero; keep it finite and bounded.
        let lim = self.y.len() as f64;
        self.layout
            .shift()
            .map_or(self.fixed_shift, |i| self.x[i])
            .clamp(-lim, lim)
    }

    #[inline(always)]
    fn summarise(
        &mut self,
        termination: &TerminationReason,
        evaluations: usize,
        bw: f64,
    ) -> LifetimeFit {
        let n = self.layout.n;
        let p = self.layout.len();
        let (start, end) = self.range;
        let dof = (end - start).saturating_sub(p);
        // Per-bin terms go through a buffer and a multi-accumulator sum: a loop that adds into
        // one float cannot be vectorised (the compiler may not reorder the additions).
        let w = &mut self.work;
        let (y, model) = (&self.y[start..end], &w.model[start..end]);
        let terms = &mut w.terms;
        for ((t, (&y, &m)), &wt) in terms.iter_mut().zip(y.iter().zip(model)).zip(&w.weight) {
            let u = (y - m.max(MODEL_FLOOR)) * wt;
            *t = u * u;
        }
        let chi2 = sum(terms);
        for (t, (&y, &m)) in terms.iter_mut().zip(y.iter().zip(model)) {
            let m = m.max(MODEL_FLOOR);
            *t = (y - m) * (y - m) / m;
        }
        let pearson = sum(terms);
        let deviance = match self.statistic {
            FitStatistic::NeymanLeastSquares => {
                for ((t, (&y, &m)), &inv_y) in
                    terms.iter_mut().zip(y.iter().zip(model)).zip(&w.inv_y)
                {
                    *t = deviance::deviance_term(y, inv_y, m.max(MODEL_FLOOR));
                }
                sum(terms)
            }
            // The residuals are the signed roots of these very terms (at the floor where the
            // model is below it), evaluated at the final parameters.
            FitStatistic::PoissonMle => normal::dot(&w.resid, &w.resid),
        };
        let reduced = match self.statistic {
            FitStatistic::NeymanLeastSquares => chi2,
            FitStatistic::PoissonMle => pearson,
        } / dof.max(1) as f64;
        // Covariance (J^T J)^-1 in the internal parameters.
        let jtj = self.work.normal.jtj();
        let stderr: Vec<f64> = match jtj.clone().cholesky() {
            Some(ch) => ch
                .inverse()
                .diagonal()
                .iter()
                .map(|v| v.max(0.0).sqrt())
                .collect(),
            None => match jtj.try_inverse() {
                Some(inv) => inv
                    .diagonal()
                    .iter()
                    .map(|v| if *v >= 0.0 { v.sqrt() } else { f64::NAN })
                    .collect(),
                None => vec![f64::NAN; p],
            },
        };
        let mut comps: Vec<(f64, f64, f64, f64)> = (0..n)
            .map(|i| {
                let tau = self.tau(i);
                (tau * bw, tau * bw * stderr[n + i], self.x[i], stderr[i])
            })
            .collect();
        comps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut fit = LifetimeFit {
            components: n,
            tau_ns: [f64::NAN; 3],
            tau_stderr_ns: [f64::NAN; 3],
            amplitude_counts: [f64::NAN; 3],
            amplitude_stderr_counts: [f64::NAN; 3],
            background_counts: self.background(),
            background_stderr_counts: self.layout.b().map_or(0.0, |i| stderr[i]),
            shift_ns: self.shift() * bw,
            shift_stderr_ns: self.layout.shift().map_or(0.0, |i| stderr[i] * bw),
            tau_amplitude_weighted_ns: 0.0,
            tau_intensity_weighted_ns: 0.0,
            reduced_chi_square: reduced,
            poisson_deviance: deviance,
            degrees_of_freedom: dof,
            evaluations,
            converged: false,
            flags: FitFlags::OK,
            fit_range: self.range,
            statistic: self.statistic,
        };
        let (mut sa, mut sat, mut satt) = (0.0, 0.0, 0.0);
        for (i, (tau, tau_se, a, a_se)) in comps.into_iter().enumerate() {
            fit.tau_ns[i] = tau;
            fit.tau_stderr_ns[i] = tau_se;
            fit.amplitude_counts[i] = a;
            fit.amplitude_stderr_counts[i] = a_se;
            sa += a;
            sat += a * tau;
            satt += a * tau * tau;
        }
        fit.tau_amplitude_weighted_ns = sat / sa;
        fit.tau_intensity_weighted_ns = satt / sat;
        let ok_termination = termination.was_successful()
            || matches!(termination, TerminationReason::NoImprovementPossible(_));
        let in_bounds = (0..n).all(|i| {
            let l = self.x[n + i];
            l.is_finite() && l > TAU_MIN_BINS.ln() && l < LN_TAU_MAX
        }) && self.shift().abs() <= self.y.len() as f64;
        if !in_bounds {
            fit.flags.insert(FitFlags::PARAMETER_AT_BOUND);
        }
        fit.converged =
            ok_termination && self.x.iter().all(|v| v.is_finite()) && reduced.is_finite();
        fit
    }
}

impl LeastSquaresProblem<f64, Dyn, Dyn> for Problem<'_> {
    type ResidualStorage = Owned<f64, Dyn>;
    type JacobianStorage = Owned<f64, Dyn, Dyn>;
    type ParameterStorage = Owned<f64, Dyn>;

    fn set_params(&mut self, x: &DVector<f64>) {
        self.x.copy_from(x);
        #[cfg(target_arch = "x86_64")]
        if self.simd && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.evaluate_avx2() };
            return;
        }
        self.evaluate();
    }

    fn params(&self) -> DVector<f64> {
        self.x.clone()
    }

    fn residuals(&self) -> Option<DVector<f64>> {
        Some(self.work.normal.residuals())
    }

    fn jacobian(&self) -> Option<DMatrix<f64>> {
        Some(self.work.normal.jacobian())
    }
}

impl Problem<'_> {
    /// [`Problem::evaluate`] compiled for AVX2: the bin loops (recursion tails, residuals,
    /// Jacobian columns, dot products) run four doubles wide instead of two.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn evaluate_avx2(&mut self) {
        self.evaluate();
    }

    /// Evaluates the model, the residuals, the Jacobian and the condensed normal equations at
    /// `self.x`. Everything it calls in a bin loop is `#[inline(always)]`, so it is compiled for
    /// the caller's target features.
    #[inline(always)]
    fn evaluate(&mut self) {
        let n = self.layout.n;
        let shift = self.shift();
        let b = self.background();
        let taus: [f64; 3] = std::array::from_fn(|i| if i < n { self.tau(i) } else { 1.0 });
        let w = &mut self.work;
        let want_shift = self.layout.free_shift;
        let s = self.oversample;
        w.model.iter_mut().for_each(|m| *m = b);
        if s == 1 {
            let support = match w.irf_at {
                Some(at)
                    if at.shift.to_bits() == shift.to_bits()
                        && (at.with_derivative || !want_shift) =>
                {
                    at.support
                }
                _ => {
                    let support =
                        self.irf
                            .eval(shift, &mut w.irf, want_shift.then_some(&mut w.dirf[..]));
                    w.irf_at = Some(IrfAt {
                        shift,
                        support,
                        with_derivative: want_shift,
                    });
                    support
                }
            };
            for (i, &tau) in taus.iter().enumerate().take(n) {
                exp_conv_on(
                    &w.irf,
                    support,
                    tau,
                    self.period,
                    &mut w.conv[i],
                    Some(&mut w.dconv_tau[i]),
                );
                if want_shift {
                    exp_conv_on(
                        &w.dirf,
                        support,
                        tau,
                        self.period,
                        &mut w.dconv_shift[i],
                        None,
                    );
                }
            }
        } else {
            // Sub-bin grid: times scale by s; a bin is the mean of its s sub-bins (amplitudes
            // stay counts per bin), d/dtau and d/dshift pick up a factor s from the time scale.
            let sf = s as f64;
            let support = self.fine_irf.eval(
                shift * sf,
                &mut w.fine_irf,
                want_shift.then_some(&mut w.fine_dirf[..]),
            );
            let period = self.period.map(|p| p * sf);
            for (i, &tau) in taus.iter().enumerate().take(n) {
                exp_conv_on(
                    &w.fine_irf,
                    support,
                    tau * sf,
                    period,
                    &mut w.fine_a,
                    Some(&mut w.fine_b),
                );
                bin_down(&w.fine_a, s, 1.0 / sf, &mut w.conv[i]);
                bin_down(&w.fine_b, s, 1.0, &mut w.dconv_tau[i]);
                if want_shift {
                    exp_conv_on(&w.fine_dirf, support, tau * sf, period, &mut w.fine_a, None);
                    bin_down(&w.fine_a, s, 1.0, &mut w.dconv_shift[i]);
                }
            }
        }
        for i in 0..n {
            let a = self.x[i];
            for (m, c) in w.model.iter_mut().zip(&w.conv[i]) {
                *m += a * c;
            }
        }
        let (start, end) = self.range;
        let w = &mut self.work;
        match self.statistic {
            FitStatistic::NeymanLeastSquares => {
                for (r, ((d, wt), (y, m))) in w.resid.iter_mut().zip(
                    w.drdm
                        .iter_mut()
                        .zip(&w.weight)
                        .zip(self.y[start..end].iter().zip(&w.model[start..end])),
                ) {
                    *r = (y - m) * wt;
                    *d = -wt;
                }
            }
            FitStatistic::PoissonMle => {
                // Two passes (see `poisson_term`): deviance terms into `resid`, then their roots.
                for ((r, (&y, &m)), &inv_y) in w
                    .resid
                    .iter_mut()
                    .zip(self.y[start..end].iter().zip(&w.model[start..end]))
                    .zip(&w.inv_y)
                {
                    *r = poisson_term(y, inv_y, m);
                }
                for (((r, d), (&y, &m)), &sqrt_y) in w
                    .resid
                    .iter_mut()
                    .zip(w.drdm.iter_mut())
                    .zip(self.y[start..end].iter().zip(&w.model[start..end]))
                    .zip(&w.sqrt_y)
                {
                    (*r, *d) = poisson_residual_from_term(y, sqrt_y, m, *r);
                }
            }
        }
        self.fill_jacobian();
        let w = &mut self.work;
        w.normal.build(&w.jac, self.layout.len(), &w.resid);
    }

    /// Writes the Jacobian of the residuals into `work.jac`, one column per free parameter.
    #[inline(always)]
    fn fill_jacobian(&mut self) {
        let (start, end) = self.range;
        let rows = end - start;
        let n = self.layout.n;
        let taus: [f64; 3] = std::array::from_fn(|i| if i < n { self.tau(i) } else { 1.0 });
        let w = &mut self.work;
        let drdm = &w.drdm;
        let (jac, _) = w.jac.split_at_mut(self.layout.len() * rows);
        let mut cols = jac.chunks_exact_mut(rows);
        let mut col = || cols.next().unwrap_or_default();
        for i in 0..n {
            for ((j, d), c) in col().iter_mut().zip(drdm).zip(&w.conv[i][start..end]) {
                *j = d * c;
            }
        }
        for (i, &tau) in taus.iter().enumerate().take(n) {
            // Derivative with respect to ln tau is a tau d/dtau; zero where tau is clamped.
            let l = self.x[n + i];
            let scale = if l > TAU_MIN_BINS.ln() && l < LN_TAU_MAX {
                self.x[i] * tau
            } else {
                0.0
            };
            for ((j, d), c) in col().iter_mut().zip(drdm).zip(&w.dconv_tau[i][start..end]) {
                *j = d * scale * c;
            }
        }
        if self.layout.free_b {
            col().copy_from_slice(drdm);
        }
        if self.layout.free_shift {
            let out = col();
            out.fill(0.0);
            for i in 0..n {
                let a = self.x[i];
                for (o, c) in out.iter_mut().zip(&w.dconv_shift[i][start..end]) {
                    *o += a * c;
                }
            }
            for (o, d) in out.iter_mut().zip(drdm) {
                *o *= d;
            }
        }
    }
}

#[cfg(test)]
mod tests;
