//! Fits and phasors checked against independent implementations on the same histograms:
//! lmfit (same model, tcspc_model.py) and phasorpy, both run by data/tcspc/make_reference.py on
//! photon-by-photon simulated decays. The Rust fitter starts from its own automatic guesses;
//! lmfit was started near the truth.

#[path = "data/tcspc/reference.rs"]
mod reference;

use flowdaq_analytics::tcspc::fit::{FitConfig, FitStatistic, Irf, LifetimeFitter};
use flowdaq_analytics::tcspc::phasor::{Phasor, PhasorCalculator};

fn cases() -> Vec<reference::Case> {
    reference::parse(
        &std::fs::read_to_string(reference::data_dir().join("fit_reference.txt")).unwrap(),
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn fits_agree_with_lmfit() {
    let cases = cases();
    assert!(cases.len() >= 6);
    for c in &cases {
        let y = c.f64s("histogram");
        let k = c.i64("components") as usize;
        let statistic = match c.str("statistic") {
            "neyman" => FitStatistic::NeymanLeastSquares,
            _ => FitStatistic::PoissonMle,
        };
        let mut config = FitConfig::new(k, statistic, c.f64("bin_width_ns"));
        config.period_ns = Some(c.f64("period_ns"));
        let irf = match c.str("irf_kind") {
            "gaussian" => Irf::Gaussian {
                fwhm_ns: c.f64("irf_fwhm_ns"),
                center_ns: None,
            },
            _ => Irf::Measured(c.f64s("irf")),
        };
        let mut fitter = LifetimeFitter::new(config, irf, y.len()).unwrap();
        let fit = fitter.fit(&y).unwrap();
        assert!(fit.converged, "{}: {fit:?}", c.name);
        assert_eq!(c.i64("lmfit_success"), 1);
        let (tau, tau_se) = (c.f64s("lmfit_tau_ns"), c.f64s("lmfit_tau_stderr_ns"));
        let (amp, amp_se) = (c.f64s("lmfit_amplitude"), c.f64s("lmfit_amplitude_stderr"));
        println!(
            "{}: tau {:?} vs lmfit {:?}; {} evaluations",
            c.name,
            &fit.tau_ns[..k],
            tau,
            fit.evaluations
        );
        // Same optimum: every parameter within 1/1000 of its standard error of lmfit's value
        // (the statistic is flat to that level, so closer agreement measures only tolerances).
        let close = |what: &str, ours: f64, theirs: f64, se: f64| {
            assert!(
                (ours - theirs).abs() <= 1e-3 * se,
                "{} {what}: {ours} vs lmfit {theirs} (se {se})",
                c.name
            );
        };
        for i in 0..k {
            close("tau", fit.tau_ns[i], tau[i], tau_se[i]);
            close("amplitude", fit.amplitude_counts[i], amp[i], amp_se[i]);
            assert!(
                rel(fit.tau_stderr_ns[i], tau_se[i]) < 1e-3,
                "{} tau se {i}: {} vs {}",
                c.name,
                fit.tau_stderr_ns[i],
                tau_se[i]
            );
            assert!(
                rel(fit.amplitude_stderr_counts[i], amp_se[i]) < 1e-3,
                "{} a se {i}",
                c.name
            );
        }
        let b_se = c.f64("lmfit_background_stderr");
        close(
            "background",
            fit.background_counts,
            c.f64("lmfit_background"),
            b_se,
        );
        assert!(
            rel(fit.background_stderr_counts, b_se) < 1e-3,
            "{} b se",
            c.name
        );
        let shift_se = c.f64("lmfit_shift_stderr_ns");
        close("shift", fit.shift_ns, c.f64("lmfit_shift_ns"), shift_se);
        assert!(
            rel(fit.shift_stderr_ns, shift_se) < 1e-2,
            "{} shift se {} vs {shift_se}",
            c.name,
            fit.shift_stderr_ns
        );
        assert!(
            rel(fit.reduced_chi_square, c.f64("lmfit_reduced_chi_square")) < 1e-4,
            "{} chi2 {} vs {}",
            c.name,
            fit.reduced_chi_square,
            c.f64("lmfit_reduced_chi_square")
        );
        // The fits must also be right: within 5 standard errors of the simulated lifetimes.
        for (i, t) in c.f64s("true_tau_ns").iter().enumerate() {
            assert!(
                (fit.tau_ns[i] - t).abs() < 5.0 * fit.tau_stderr_ns[i],
                "{} tau {i} {} vs true {t}",
                c.name,
                fit.tau_ns[i]
            );
        }
    }
}

#[test]
fn phasors_agree_with_phasorpy() {
    for c in &cases() {
        let y = c.f64s("histogram");
        let irf = c.f64s("irf");
        let sync = c.f64("sync_rate_hz");
        let mut calc = PhasorCalculator::new(y.len(), 3).unwrap();
        let mut d = [Phasor::default(); 3];
        let mut r = [Phasor::default(); 3];
        calc.phasors(&y, 0.0, &mut d).unwrap();
        calc.phasors(&irf, 0.0, &mut r).unwrap();
        let (g, s) = (c.f64s("phasorpy_g"), c.f64s("phasorpy_s"));
        let (ig, is) = (c.f64s("phasorpy_irf_g"), c.f64s("phasorpy_irf_s"));
        let (cg, cs) = (
            c.f64s("phasorpy_calibrated_g"),
            c.f64s("phasorpy_calibrated_s"),
        );
        let (tp, tm) = (
            c.f64s("phasorpy_tau_phase_ns"),
            c.f64s("phasorpy_tau_modulation_ns"),
        );
        for h in 0..3 {
            assert_eq!(d[h].harmonic, h + 1);
            assert!(
                (d[h].g - g[h]).abs() < 1e-9 && (d[h].s - s[h]).abs() < 1e-9,
                "{} h{}: {:?} vs {} {}",
                c.name,
                h + 1,
                d[h],
                g[h],
                s[h]
            );
            assert!(
                (r[h].g - ig[h]).abs() < 1e-9 && (r[h].s - is[h]).abs() < 1e-9,
                "{} irf h{}",
                c.name,
                h + 1
            );
            let cal = d[h].calibrated(&r[h]);
            assert!(
                (cal.g - cg[h]).abs() < 1e-9 && (cal.s - cs[h]).abs() < 1e-9,
                "{} cal h{}: {cal:?} vs {} {}",
                c.name,
                h + 1,
                cg[h],
                cs[h]
            );
            let (p, m) = cal.lifetimes_ns(sync);
            assert!(
                rel(p, tp[h]) < 1e-9 && rel(m, tm[h]) < 1e-9,
                "{} tau h{}: {p} {m} vs {} {}",
                c.name,
                h + 1,
                tp[h],
                tm[h]
            );
        }
    }
}
