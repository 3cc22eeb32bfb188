//! The cross-correlation lag against scipy on the same traces.
//!
//! For each simulated trace pair, `scipy.signal.correlate(detrend(b), detrend(a), "full",
//! method="direct")` (no FFT: an independent algorithm) is searched over the same lag range,
//! and its peak refined by the same three-point parabola. The integer lag must be identical,
//! the refined lag within 1e-6 samples and the coefficient within 1e-9. Needs python with numpy
//! and scipy: `$FLOWDAQ_PYTHON`, else `~/.cache/flowdaq-venv/bin/python` (the test command
//! installs it); when neither runs, the test fails and says why.

mod flow_common;

use std::path::PathBuf;
use std::process::Command;

use flow_common::Sim;
use flowdaq_analytics::flow::CrossCorrelator;

const SCRIPT: &str = r#"
import sys
import numpy as np
from scipy.signal import correlate, correlation_lags, detrend
path, n, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
a, b = np.fromfile(path, dtype="<f8").reshape(2, n)
a, b = detrend(a, type="linear"), detrend(b, type="linear")
c = correlate(b, a, mode="full", method="direct")
lags = correlation_lags(len(b), len(a), mode="full")
ok = (np.abs(lags) >= lo) & (np.abs(lags) <= hi)
i = np.flatnonzero(ok)[np.argmax(c[ok])]
ym, y0, yp = c[i - 1], c[i], c[i + 1]
den = ym - 2 * y0 + yp
off = 0.5 * (ym - yp) / den if den < 0 else 0.0
coef = y0 / np.sqrt(np.dot(a, a) * np.dot(b, b))
print(int(lags[i]), repr(float(lags[i] + off)), repr(float(coef)))
"#;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOWDAQ_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/flowdaq-venv/bin/python");
    p.exists().then_some(p)
}

/// scipy's (integer lag, refined lag, coefficient), or why it could not be asked.
fn scipy_peak(
    py: &PathBuf,
    a: &[f64],
    b: &[f64],
    lo: usize,
    hi: usize,
    tag: &str,
) -> Result<(i64, f64, f64), String> {
    let path =
        std::env::temp_dir().join(format!("flowdaq_flow_ref_{}_{tag}.f64", std::process::id()));
    let bytes: Vec<u8> = a.iter().chain(b).flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let out = Command::new(py)
        .args(["-c", SCRIPT])
        .arg(&path)
        .args([a.len().to_string(), lo.to_string(), hi.to_string()])
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    let parse = |s: &str| s.parse::<f64>().map_err(|e| format!("{s}: {e}"));
    if f.len() != 3 {
        return Err(format!("unexpected output {text:?}"));
    }
    Ok((parse(f[0])? as i64, parse(f[1])?, parse(f[2])?))
}

#[test]
fn xcorr_lag_matches_scipy_correlate() {
    let py = python().expect(
        "no python for the scipy reference: set FLOWDAQ_PYTHON or run scripts/test-all.sh, \
         which creates ~/.cache/flowdaq-venv",
    );
    let probe = Command::new(&py)
        .args(["-c", "import numpy, scipy"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{} cannot import numpy and scipy (scripts/test-all.sh installs them)",
        py.display()
    );
    // (name, trace A, trace B, min lag, max lag)
    type Case = (String, Vec<f64>, Vec<f64>, usize, usize);
    let mut cases: Vec<Case> = Vec::new();
    for (k, (v, d, fs)) in [
        (40.0, 10.0, 1000.0),
        (12.0, 5.0, 1000.0),
        (90.0, 15.0, 2000.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sim = Sim::typical(900 + k as u64);
        sim.schedule = vec![(0.0, v)];
        sim.spacing_mm = d;
        sim.sample_rate_hz = fs;
        sim.duration_s = 8.0;
        let r = sim.run();
        // The analyzer's default range: 1..500 mm/s.
        let (lo, hi) = (
            (d / 500.0 * fs).floor() as usize,
            (d / 1.0 * fs).ceil() as usize,
        );
        let hi = hi.min(r.a.len() - 2);
        cases.push((format!("v{v}"), r.a.clone(), r.b.clone(), lo, hi));
        if k == 0 {
            cases.push(("swapped".into(), r.b.clone(), r.a.clone(), lo, hi));
            cases.push(("narrow".into(), r.a.clone(), r.b.clone(), 100, 400));
        }
    }
    let mut xc = CrossCorrelator::new();
    let mut worst: f64 = 0.0;
    for (tag, a, b, lo, hi) in &cases {
        let got = xc.peak(a, b, *lo, *hi).expect("peak");
        let (k, lag, coef) = match scipy_peak(&py, a, b, *lo, *hi, tag) {
            Ok(x) => x,
            Err(e) => panic!("{tag}: {e}"),
        };
        assert_eq!(got.lag_index, k, "{tag}: integer lag");
        assert!(
            (got.lag_samples - lag).abs() < 1e-6,
            "{tag}: {} vs scipy {lag}",
            got.lag_samples
        );
        assert!(
            (got.coefficient - coef).abs() < 1e-9,
            "{tag}: {} vs scipy {coef}",
            got.coefficient
        );
        worst = worst.max((got.lag_samples - lag).abs());
        eprintln!(
            "{tag}: lag {:.6} samples (scipy {lag:.6}), coefficient {:.4}",
            got.lag_samples, got.coefficient
        );
    }
    eprintln!(
        "{} cases agree with scipy; worst refined-lag difference {worst:e} samples",
        cases.len()
    );
}
