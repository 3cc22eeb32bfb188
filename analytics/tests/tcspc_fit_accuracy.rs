//! Bias and spread of fitted lifetimes on simulated decays: photons drawn one by one (Gaussian
//! IRF + exponential delay, folded over the sync period so earlier pulses leave their tails,
//! plus uniform background), total count Poisson, seeded. The fitter knows only the IRF FWHM:
//! IRF position, background and amplitude are free, starting values automatic.
//!
//! `mono_exponential_bias_within_bounds` asserts the stated bounds; the ignored
//! `write_accuracy_table` writes docs/tcspc-fit-accuracy.md:
//!     cargo test -p flowdaq-analytics --release --test tcspc_fit_accuracy -- --ignored

mod tcspc_common;

use flowdaq_analytics::tcspc::fit::{FitConfig, FitFlags, FitStatistic, Irf, LifetimeFitter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal, Poisson};

const BINS: usize = 1024;

/// One simulated measurement condition.
#[derive(Debug, Clone)]
struct Scenario {
    taus_ns: Vec<f64>,
    /// Photon fractions of the components.
    fractions: Vec<f64>,
    period_ns: f64,
    fwhm_ns: f64,
    center_ns: f64,
    /// Fraction of all counts that is uniform background.
    background: f64,
}

impl Scenario {
    fn mono(tau_ns: f64) -> Self {
        // Sync rate chosen as a lab would: the period covers several lifetimes where it can.
        let (period_ns, fwhm_ns) = match tau_ns {
            t if t <= 1.0 => (12.5, 0.1),
            t if t <= 3.0 => (25.0, 0.15),
            t if t <= 10.0 => (50.0, 0.15),
            t if t <= 25.0 => (100.0, 0.2),
            _ => (400.0, 0.2),
        };
        Self::with_period(tau_ns, period_ns, fwhm_ns)
    }

    fn with_period(tau_ns: f64, period_ns: f64, fwhm_ns: f64) -> Self {
        Scenario {
            taus_ns: vec![tau_ns],
            fractions: vec![1.0],
            period_ns,
            fwhm_ns,
            center_ns: 0.1 * period_ns,
            background: 0.02,
        }
    }

    fn bin_ns(&self) -> f64 {
        self.period_ns / BINS as f64
    }

    fn simulate(&self, rng: &mut StdRng, counts: f64, out: &mut [f64]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        let total = Poisson::new(counts).unwrap().sample(rng) as u64;
        let sigma = self.fwhm_ns / 2.354_820_045_030_949;
        let normal = Normal::new(self.center_ns, sigma).unwrap();
        let exps: Vec<Exp<f64>> = self
            .taus_ns
            .iter()
            .map(|t| Exp::new(1.0 / t).unwrap())
            .collect();
        let bw = self.bin_ns();
        for _ in 0..total {
            let t = if rng.random::<f64>() < self.background {
                rng.random::<f64>() * self.period_ns
            } else {
                tcspc_common::decay_photon_ns(rng, &normal, &exps, &self.fractions, self.period_ns)
            };
            let bin = (t / bw) as usize;
            if bin < BINS {
                out[bin] += 1.0;
            }
        }
    }

    fn fitter(&self, statistic: FitStatistic) -> LifetimeFitter {
        let mut config = FitConfig::new(self.taus_ns.len(), statistic, self.bin_ns());
        config.period_ns = Some(self.period_ns);
        LifetimeFitter::new(
            config,
            Irf::Gaussian {
                fwhm_ns: self.fwhm_ns,
                center_ns: None,
            },
            BINS,
        )
        .unwrap()
    }
}

/// Relative bias and spread of each lifetime over the repetitions that converged with every
/// lifetime inside its limits.
#[derive(Debug)]
struct Outcome {
    bias: Vec<f64>,
    spread: Vec<f64>,
    converged: usize,
    reps: usize,
}

/// Runs `reps` simulations and fits them with every statistic in `stats` (same histograms).
fn run(s: &Scenario, counts: f64, reps: usize, stats: &[FitStatistic], seed: u64) -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fitters: Vec<LifetimeFitter> = stats.iter().map(|&st| s.fitter(st)).collect();
    let k = s.taus_ns.len();
    let mut taus: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); k]; stats.len()];
    let mut hist = vec![0.0; BINS];
    for _ in 0..reps {
        s.simulate(&mut rng, counts, &mut hist);
        for (f, fitter) in fitters.iter_mut().enumerate() {
            let fit = fitter.fit(&hist).expect("fit runs");
            if fit.converged && !fit.flags.contains(FitFlags::PARAMETER_AT_BOUND) {
                for (i, per_component) in taus[f].iter_mut().enumerate() {
                    per_component.push(fit.tau_ns[i]);
                }
            }
        }
    }
    taus.into_iter()
        .map(|per| {
            let converged = per[0].len();
            let (mut bias, mut spread) = (Vec::new(), Vec::new());
            for (i, v) in per.iter().enumerate() {
                let n = v.len().max(1) as f64;
                let mean = v.iter().sum::<f64>() / n;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
                bias.push(mean / s.taus_ns[i] - 1.0);
                spread.push(var.sqrt() / s.taus_ns[i]);
            }
            Outcome {
                bias,
                spread,
                converged,
                reps,
            }
        })
        .collect()
}

#[test]
fn mono_exponential_bias_within_bounds() {
    // Bounds: MLE |bias| < 2 % at 1e3 counts; |bias| < 1 % and spread < 1 % at 1e5 counts.
    for (i, tau) in [0.5, 5.0, 20.0, 50.0].into_iter().enumerate() {
        let s = Scenario::mono(tau);
        let low = &run(&s, 1e3, 200, &[FitStatistic::PoissonMle], 100 + i as u64)[0];
        println!("tau {tau} ns, 1e3 counts, MLE: {low:?}");
        assert!(low.converged * 100 >= low.reps * 98, "tau {tau}: {low:?}");
        assert!(
            low.bias[0].abs() < 0.02,
            "tau {tau} ns at 1e3 counts: bias {:.4}",
            low.bias[0]
        );
        let high = &run(&s, 1e5, 20, &[FitStatistic::PoissonMle], 200 + i as u64)[0];
        println!("tau {tau} ns, 1e5 counts, MLE: {high:?}");
        assert_eq!(high.converged, high.reps);
        assert!(
            high.bias[0].abs() < 0.01 && high.spread[0] < 0.01,
            "tau {tau} ns at 1e5 counts: {high:?}"
        );
    }
}

#[test]
fn bi_exponential_recovers_both_lifetimes_at_high_counts() {
    let s = Scenario {
        taus_ns: vec![1.0, 5.0],
        fractions: vec![0.5, 0.5],
        period_ns: 50.0,
        fwhm_ns: 0.15,
        center_ns: 5.0,
        background: 0.01,
    };
    for o in run(
        &s,
        1e6,
        5,
        &[FitStatistic::PoissonMle, FitStatistic::NeymanLeastSquares],
        7,
    ) {
        println!("bi-exponential 1e6: {o:?}");
        assert_eq!(o.converged, o.reps);
        assert!(o.bias.iter().all(|b| b.abs() < 0.02), "{o:?}");
    }
}

#[test]
#[ignore = "writes docs/tcspc-fit-accuracy.md; run with --release -- --ignored"]
fn write_accuracy_table() {
    let stats = [FitStatistic::PoissonMle, FitStatistic::NeymanLeastSquares];
    let counts: [(f64, usize); 4] = [(1e3, 1000), (1e4, 400), (1e5, 100), (1e6, 30)];
    let mut md = String::new();
    md.push_str("# TCSPC lifetime fit accuracy\n\n");
    md.push_str("Bias (mean fitted / true - 1) and spread (standard deviation / true) of fitted lifetimes on\n");
    md.push_str("simulated decays, by `analytics/tests/tcspc_fit_accuracy.rs`:\n\n");
    md.push_str(
        "    cargo test -p flowdaq-analytics --release --test tcspc_fit_accuracy -- --ignored\n\n",
    );
    md.push_str("Each histogram: 1024 bins over one sync period; photons drawn one by one (Gaussian IRF +\n");
    md.push_str(
        "exponential delay, folded over the period so earlier pulses leave their tails) plus 2 %\n",
    );
    md.push_str("(bi-exponential: 1 %) uniform background; total count Poisson. The fitter is told only the IRF\n");
    md.push_str(
        "FWHM and the period: IRF position, background and amplitudes are free, starting values\n",
    );
    md.push_str("automatic. MLE = Poisson maximum likelihood, Neyman = least squares with weights 1/max(y,1).\n");
    md.push_str("Asserted in the normal test run (`mono_exponential_bias_within_bounds`): MLE |bias| < 2 % at\n");
    md.push_str("1e3 counts, |bias| < 1 % and spread < 1 % at 1e5 counts, for tau = 0.5, 5, 20, 50 ns at the\n");
    md.push_str("periods of the first five blocks below. The last block (50 ns at a 100 ns period) shows why the\n");
    md.push_str("sync rate must leave room for the decay: lifetime and background trade off and the spread grows.\n\n");
    md.push_str("## Mono-exponential\n\n");
    md.push_str("| tau (ns) | period (ns) | IRF FWHM (ns) | counts | reps | MLE bias | MLE spread | Neyman bias | Neyman spread | converged (MLE / Neyman) |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut seed = 1000;
    // The last row is a deliberately poor choice: 50 ns at a 100 ns period (10 MHz), where the
    // decay falls only to e^-2 before the next pulse and lifetime and background trade off.
    let mut scenarios: Vec<Scenario> = [0.5, 2.0, 5.0, 20.0, 50.0]
        .into_iter()
        .map(Scenario::mono)
        .collect();
    scenarios.push(Scenario::with_period(50.0, 100.0, 0.2));
    for s in scenarios {
        let tau = s.taus_ns[0];
        for &(c, reps) in &counts {
            seed += 1;
            let o = run(&s, c, reps, &stats, seed);
            md.push_str(&format!(
                "| {tau} | {} | {} | {c:.0e} | {reps} | {:+.2} % | {:.2} % | {:+.2} % | {:.2} % | {} / {} |\n",
                s.period_ns,
                s.fwhm_ns,
                100.0 * o[0].bias[0],
                100.0 * o[0].spread[0],
                100.0 * o[1].bias[0],
                100.0 * o[1].spread[0],
                o[0].converged,
                o[1].converged,
            ));
            println!("{}", md.lines().last().unwrap());
        }
    }
    md.push_str("\n## Bi-exponential (tau 1 ns and 5 ns, half the photons each, period 50 ns, IRF 0.15 ns)\n\n");
    md.push_str("| counts | reps | MLE bias tau1 / tau2 | MLE spread tau1 / tau2 | Neyman bias tau1 / tau2 | Neyman spread tau1 / tau2 | converged (MLE / Neyman) |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    let s = Scenario {
        taus_ns: vec![1.0, 5.0],
        fractions: vec![0.5, 0.5],
        period_ns: 50.0,
        fwhm_ns: 0.15,
        center_ns: 5.0,
        background: 0.01,
    };
    for (c, reps) in [(1e4, 200), (1e5, 100), (1e6, 30)] {
        seed += 1;
        let o = run(&s, c, reps, &stats, seed);
        md.push_str(&format!(
            "| {c:.0e} | {reps} | {:+.2} % / {:+.2} % | {:.2} % / {:.2} % | {:+.2} % / {:+.2} % | {:.2} % / {:.2} % | {} / {} |\n",
            100.0 * o[0].bias[0],
            100.0 * o[0].bias[1],
            100.0 * o[0].spread[0],
            100.0 * o[0].spread[1],
            100.0 * o[1].bias[0],
            100.0 * o[1].bias[1],
            100.0 * o[1].spread[0],
            100.0 * o[1].spread[1],
            o[0].converged,
            o[1].converged,
        ));
        println!("{}", md.lines().last().unwrap());
    }
    md.push_str("\nReading: the spread is the precision of one measurement; the bias is what averaging cannot\n");
    md.push_str("remove. Neyman weighting underestimates low-count bins and biases lifetimes at low counts;\n");
    md.push_str("use maximum likelihood below ~1e5 counts.\n");
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/tcspc-fit-accuracy.md");
    std::fs::write(&path, md).unwrap();
    println!("wrote {}", path.display());
}
