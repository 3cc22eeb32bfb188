// temporary profiling probe (deleted after use)
use flowdaq_analytics::tcspc::fit::{FitConfig, FitStatistic, Irf, LifetimeFitter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal};
#[test]
fn prof() {
    let mut rng = StdRng::seed_from_u64(2);
    let (period, n) = (25.0f64, 1024usize);
    let irf = Normal::new(3.0, 0.15 / 2.3548).unwrap();
    let e = Exp::new(1.0 / 2.5).unwrap();
    let mut h = vec![0.0; n];
    for i in 0..100_000 {
        let t = if i % 50 == 0 { rng.random::<f64>() * period } else { { let v: f64 = irf.sample(&mut rng) + e.sample(&mut rng); v.rem_euclid(period) } };
        h[((t / period * n as f64) as usize).min(n - 1)] += 1.0;
    }
    for (tol, name) in [(1e-10, "1e-10"), (1e-8, "1e-8"), (1e-6, "1e-6")] {
        let mut cfg = FitConfig::new(1, FitStatistic::NeymanLeastSquares, period / n as f64);
        cfg.period_ns = Some(period);
        cfg.tolerance = tol;
        let mut f = LifetimeFitter::new(cfg, Irf::Gaussian { fwhm_ns: 0.15, center_ns: None }, n).unwrap();
        let t0 = std::time::Instant::now();
        let mut r = None;
        for _ in 0..200 { r = Some(f.fit(&h).unwrap()); }
        let r = r.unwrap();
        println!("tol {name}: {:.1} us/fit, evals {}, tau {}", t0.elapsed().as_secs_f64() / 200.0 * 1e6, r.evaluations, r.tau_ns[0]);
    }
}
