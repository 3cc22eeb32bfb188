use super::model::exp_conv;
use super::*;

/// Noiseless model histogram from the fitter's own model.
fn model(
    irf: &IrfShape,
    taus: &[f64],
    amps: &[f64],
    b: f64,
    shift: f64,
    period: Option<f64>,
    n: usize,
) -> Vec<f64> {
    let mut i = vec![0.0; n];
    irf.eval(shift, &mut i, None);
    let mut out = vec![b; n];
    let mut c = vec![0.0; n];
    for (t, a) in taus.iter().zip(amps) {
        exp_conv(&i, *t, period, &mut c, None);
        for (o, v) in out.iter_mut().zip(&c) {
            *o += a * v;
        }
    }
    out
}

#[test]
fn recovers_exact_parameters_from_noiseless_data() {
    let bw = 0.05;
    let shape = IrfShape::Gaussian {
        sigma: 0.1 / bw,
        center: 0.0,
    };
    for stat in [FitStatistic::NeymanLeastSquares, FitStatistic::PoissonMle] {
        for (taus, amps) in [
            (vec![3.0 / bw], vec![500.0]),
            (vec![0.8 / bw, 6.0 / bw], vec![300.0, 200.0]),
        ] {
            let y = model(&shape, &taus, &amps, 3.0, 40.0, Some(400.0), 300);
            let mut cfg = FitConfig::new(taus.len(), stat, bw);
            cfg.period_ns = Some(400.0 * bw);
            let irf = Irf::Gaussian {
                fwhm_ns: 0.1 * GAUSSIAN_FWHM_PER_SIGMA,
                center_ns: None,
            };
            let fit = fit_decay(&y, &irf, &cfg).unwrap();
            assert!(fit.converged, "{fit:?}");
            for (i, t) in taus.iter().enumerate() {
                assert!(
                    (fit.tau_ns[i] - t * bw).abs() < 1e-6 * t * bw,
                    "{stat:?} {fit:?}"
                );
                assert!(
                    (fit.amplitude_counts[i] - amps[i]).abs() < 1e-5 * amps[i],
                    "{fit:?}"
                );
            }
            assert!((fit.background_counts - 3.0).abs() < 1e-6, "{fit:?}");
            assert!((fit.shift_ns - 40.0 * bw).abs() < 1e-7, "{fit:?}");
            assert!(fit.reduced_chi_square < 1e-9);
        }
    }
}

#[test]
fn measured_irf_and_fixed_parameters() {
    let bw = 0.02;
    let base: Vec<f64> = (0..512)
        .map(|k| (-((k as f64 - 50.0) / 4.0).powi(2)).exp())
        .collect();
    let shape = IrfShape::Measured(base.iter().map(|v| v / base.iter().sum::<f64>()).collect());
    let y = model(&shape, &[100.0], &[1000.0], 0.0, 12.3, None, 512);
    let mut cfg = FitConfig::new(1, FitStatistic::PoissonMle, bw);
    cfg.background = Parameter::Fixed(0.0);
    let fit = fit_decay(&y, &Irf::Measured(base.clone()), &cfg).unwrap();
    assert!(
        fit.converged
            && (fit.tau_ns[0] - 2.0).abs() < 1e-6
            && (fit.shift_ns - 12.3 * bw).abs() < 1e-6,
        "{fit:?}"
    );
    assert_eq!(fit.background_stderr_counts, 0.0);
    cfg.shift = Parameter::Fixed(12.3 * bw);
    let fit = fit_decay(&y, &Irf::Measured(base), &cfg).unwrap();
    assert!(
        fit.converged && (fit.tau_ns[0] - 2.0).abs() < 1e-6 && fit.shift_stderr_ns == 0.0,
        "{fit:?}"
    );
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let irf = Irf::Gaussian {
        fwhm_ns: 0.1,
        center_ns: None,
    };
    let cfg = FitConfig::new(1, FitStatistic::PoissonMle, 0.05);
    assert!(fit_decay(&[0.0; 100], &irf, &cfg).is_err());
    assert!(fit_decay(
        &[1.0, f64::NAN, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        &irf,
        &cfg
    )
    .is_err());
    assert!(fit_decay(&[1.0; 3], &irf, &cfg).is_err());
    assert!(fit_decay(
        &[1.0; 100],
        &irf,
        &FitConfig::new(4, FitStatistic::PoissonMle, 0.05)
    )
    .is_err());
    assert!(fit_decay(&[1.0; 100], &Irf::Measured(vec![0.0; 100]), &cfg).is_err());
    assert!(fit_decay(&[1.0; 100], &Irf::Measured(vec![1.0; 99]), &cfg).is_err());
    // Flat data or a single spike: the fit runs and reports, whatever it converges to.
    let flat = fit_decay(&[5.0; 100], &irf, &cfg).unwrap();
    assert!(flat.tau_ns[0].is_finite() || !flat.converged);
    let mut spike = vec![0.0; 100];
    spike[99] = 1.0;
    let _ = fit_decay(
        &spike,
        &irf,
        &FitConfig::new(3, FitStatistic::NeymanLeastSquares, 0.05),
    )
    .unwrap();
}

#[test]
fn portable_and_avx2_builds_give_the_same_fits() {
    // Noisy decays (deterministic pseudo-Poisson) through both builds of the bin loops; on a
    // CPU without AVX2 both runs take the portable path and agree trivially.
    let bw = 25.0 / 256.0;
    let shape = IrfShape::Gaussian {
        sigma: 0.12 / bw,
        center: 0.0,
    };
    let clean = model(
        &shape,
        &[8.0, 30.0],
        &[400.0, 150.0],
        2.0,
        30.3,
        Some(256.0),
        256,
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noisy: Vec<f64> = clean
        .iter()
        .map(|&m| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            (m + m.sqrt() * (2.0 * u - 1.0) * 1.7).round().max(0.0)
        })
        .collect();
    let irf = Irf::Gaussian {
        fwhm_ns: 0.12 * GAUSSIAN_FWHM_PER_SIGMA,
        center_ns: None,
    };
    for stat in [FitStatistic::NeymanLeastSquares, FitStatistic::PoissonMle] {
        for k in [1, 2] {
            let mut cfg = FitConfig::new(k, stat, bw);
            cfg.period_ns = Some(25.0);
            let mut fast = LifetimeFitter::new(cfg.clone(), irf.clone(), 256).unwrap();
            let mut portable = LifetimeFitter::new(cfg, irf.clone(), 256).unwrap();
            portable.simd = false;
            let (a, b) = (fast.fit(&noisy).unwrap(), portable.fit(&noisy).unwrap());
            assert!(a.converged && b.converged, "{a:?} {b:?}");
            for i in 0..k {
                assert!(
                    (a.tau_ns[i] - b.tau_ns[i]).abs() < 1e-7 * a.tau_ns[i],
                    "{stat:?} {k}: {a:?} vs {b:?}"
                );
            }
            assert!((a.poisson_deviance - b.poisson_deviance).abs() < 1e-7 * a.poisson_deviance);
            assert!((a.reduced_chi_square - b.reduced_chi_square).abs() < 1e-7);
        }
    }
}

#[test]
fn the_model_at_a_fits_parameters_is_the_curve_it_fitted() {
    // A noiseless 2-component decay: the fitted model reproduces the histogram, and a Poisson
    // fit's model holds as many counts as the data over the fit range.
    let bw = 0.05;
    let shape = IrfShape::Gaussian {
        sigma: 0.1 / bw,
        center: 0.0,
    };
    let y = model(
        &shape,
        &[0.8 / bw, 6.0 / bw],
        &[300.0, 200.0],
        3.0,
        40.0,
        Some(400.0),
        300,
    );
    let mut config = FitConfig::new(2, FitStatistic::PoissonMle, bw);
    config.period_ns = Some(400.0 * bw);
    let irf = Irf::Gaussian {
        fwhm_ns: 0.1 * GAUSSIAN_FWHM_PER_SIGMA,
        center_ns: None,
    };
    let mut fitter = LifetimeFitter::new(config, irf, y.len()).expect("fitter");
    let fit = fitter.fit(&y).expect("fit");
    let curve = fitter.model_counts(&fit.parameters()).expect("model");
    assert_eq!(curve.len(), y.len());
    let worst = y
        .iter()
        .zip(&curve)
        .map(|(a, b)| (a - b).abs() / a.max(1.0))
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "model differs from the data by {worst}");
    let (start, end) = fit.fit_range;
    let data: f64 = y[start..end].iter().sum();
    let fitted: f64 = curve[start..end].iter().sum();
    assert!((data - fitted).abs() / data < 1e-6);
    let mut mono = fit.parameters();
    mono.tau_ns.truncate(1);
    mono.amplitude_counts.truncate(1);
    assert!(fitter.model_counts(&mono).is_err());
}
