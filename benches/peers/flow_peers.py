#!/usr/bin/env python3
"""Peer benchmark: flowdaq's phase-sensor kernels against numpy/scipy on the same traces, one core.

One run, for 10 s windows at 1 kHz and at 10 kHz:
  (a) simulates two phase-sensor traces (sensor B 10 mm downstream of A, 40 mm/s, 3 mm plugs
      and 4 mm carriers +-20 %, 1 V / 2.5 V levels, 30 mV noise, baseline and gain drift,
      0.3 ms timing jitter; fixed seed) and writes them as raw little-endian float64;
  (b) times a vectorized numpy hysteresis detector implementing flowdaq's algorithm (block
      min/max envelope slid over 1 s, thresholds interpolated between block centres, half band
      max(0.1 x contrast, 6 x noise sigma), state by forward fill, mid-level crossing
      interpolated linearly) on trace A;
  (c) times scipy: detrend(type="linear") of both traces, scipy.signal.correlate(b, a,
      method="fft"), the peak in the lag range of 1-500 mm/s and the same parabola;
  (d) runs `cargo bench -p flowdaq-analytics --bench flow -- --peers ...` on the same file
      (InterfaceDetector::detect on A, CrossCorrelator::peak on A and B; median and best of
      repeated passes, one thread);
  (e) prints both rates, the ratios, and how well the two sides agree (interface times, lag).

Rates are samples of one trace per second. Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/flow_peers.py
$CARGO_TARGET_DIR defaults to ~/.cache/flowdaq-target-analytics.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.signal import correlate, correlation_lags, detrend

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240917
SPACING_MM = 10.0
VELOCITY_MM_PER_S = 40.0
V_RANGE = (1.0, 500.0)
# DetectorOptions::default()
ENVELOPE_WINDOW_S = 1.0
HYSTERESIS_FRACTION = 0.2
MIN_CONTRAST_V = 0.05
MIN_RELATIVE_CONTRAST = 0.25
NOISE_BAND_SIGMA = 6.0


def simulate(fs, duration_s=10.0):
    """Two traces of a plug train passing sensor A, then B SPACING_MM downstream."""
    rng = np.random.default_rng(SEED + int(fs))
    n = int(round(duration_s * fs))
    v = VELOCITY_MM_PER_S
    lengths = []
    total, plug = 0.0, False
    while total < v * duration_s + SPACING_MM + 80.0:
        mean = 3.0 if plug else 4.0
        lengths.append((plug, mean * (1.0 + rng.uniform(-0.2, 0.2))))
        total += lengths[-1][1]
        plug = not plug
    t = np.arange(n) / fs
    traces = []
    offset = SPACING_MM + 20.0
    for at_mm in (0.0, SPACING_MM):
        pos = np.concatenate([[0.0], np.cumsum([l for _, l in lengths])[:-1]])
        is_plug = np.array([p for p, _ in lengths], dtype=float)
        target = pos - offset + at_mm
        before = target <= 0
        state0 = is_plug[before][-1] if before.any() else 0.0
        edge_t = target[~before] / v + rng.normal(0.0, 3e-4, (~before).sum())
        after = is_plug[~before]
        prev = np.concatenate([[state0], after[:-1]])
        level = np.full(n, state0)
        # Sum of tanh steps (edges are far apart compared with their 1 ms width).
        for te, a, b in zip(edge_t, prev, after):
            if te > duration_s + 0.05:
                break
            lo, hi = np.searchsorted(t, [te - 0.02, te + 0.02])
            level[hi:] += b - a
            level[lo:hi] += (b - a) * 0.5 * (1.0 + np.tanh((t[lo:hi] - te) / 1e-3))
        y = 1.0 + 1.5 * level
        gain = 1.0 + 0.1 * np.sin(2 * np.pi * t / rng.uniform(12, 18) + rng.uniform(0, 2 * np.pi))
        base = 0.3 * np.sin(2 * np.pi * t / rng.uniform(12, 18) + rng.uniform(0, 2 * np.pi))
        traces.append(y * gain + base + rng.normal(0.0, 0.03, n))
    return traces[0], traces[1]


def numpy_detect(x, fs):
    """flowdaq's interface detector, vectorized; returns interface times (s) and directions."""
    n = len(x)
    block = int(min(max(round(ENVELOPE_WINDOW_S * fs / 8), 1), n))
    nb = -(-n // block)
    pad = np.full(nb * block, np.nan)
    pad[:n] = x
    blocks = pad.reshape(nb, block)
    lo_b, hi_b = np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)
    if not (hi_b.max() - lo_b.min() > MIN_CONTRAST_V):
        return np.empty(0), np.empty(0, dtype=bool)
    h = 4
    lo_p = np.concatenate([np.full(h, np.inf), lo_b, np.full(h, np.inf)])
    hi_p = np.concatenate([np.full(h, -np.inf), hi_b, np.full(h, -np.inf)])
    win = np.lib.stride_tricks.sliding_window_view
    lo_e, hi_e = win(lo_p, 2 * h + 1).min(axis=1), win(hi_p, 2 * h + 1).max(axis=1)
    mid_b, con_b = 0.5 * (lo_e + hi_e), hi_e - lo_e
    contrast_max = con_b.max()
    d8 = np.abs(x[1::8] - x[0:-1:8]) if n > 1 else np.empty(0)
    sigma = np.partition(d8, len(d8) // 4)[len(d8) // 4] / 0.4506 if len(d8) >= 8 else 0.0
    gate = max(MIN_CONTRAST_V, MIN_RELATIVE_CONTRAST * contrast_max)
    i = np.arange(n, dtype=float)
    centres = np.arange(nb) * block + (block - 1) * 0.5
    mid = np.interp(i, centres, mid_b)
    con = np.interp(i, centres, con_b)
    half = np.maximum(0.5 * HYSTERESIS_FRACTION * con, NOISE_BAND_SIGMA * sigma)
    d = x - mid
    active = con >= gate
    ev = np.where((d > half) & active, 1, np.where((d < -half) & active, -1, 0))
    idx = np.maximum.accumulate(np.where(ev != 0, np.arange(n), -1))
    state = np.where(idx >= 0, ev[np.maximum(idx, 0)], 0)
    flips = np.flatnonzero((state[1:] != state[:-1]) & (state[:-1] != 0)) + 1
    rising = state[flips] == 1
    up = np.flatnonzero((d[:-1] < 0) & (d[1:] >= 0)) + 1
    down = np.flatnonzero((d[:-1] >= 0) & (d[1:] < 0)) + 1
    times = np.empty(len(flips))
    for sel, cross in ((rising, up), (~rising, down)):
        j = cross[np.searchsorted(cross, flips[sel], side="right") - 1]
        times[sel] = (j - 1) + d[j - 1] / (d[j - 1] - d[j])
    return times / fs, rising


def scipy_lag(a, b, lo, hi):
    a, b = detrend(a, type="linear"), detrend(b, type="linear")
    c = correlate(b, a, mode="full", method="fft")
    lags = correlation_lags(len(b), len(a), mode="full")
    ok = (np.abs(lags) >= lo) & (np.abs(lags) <= hi)
    i = np.flatnonzero(ok)[np.argmax(c[ok])]
    ym, y0, yp = c[i - 1], c[i], c[i + 1]
    den = ym - 2 * y0 + yp
    return lags[i] + (0.5 * (ym - yp) / den if den < 0 else 0.0)


def per_call(fn, min_s=1.0):
    fn()
    runs = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_s or len(runs) < 5:
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    runs.sort()
    return runs[len(runs) // 2], runs[0]


def rust(path, n, fs, lo, hi, out):
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "flowdaq-target-analytics"))
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    cmd = ["cargo", "bench", "-q", "-p", "flowdaq-analytics", "--bench", "flow", "--",
           "--peers", str(path), str(n), str(fs), str(lo), str(hi), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cargo bench failed:\n{proc.stderr}")
    return dict(tok.split("=", 1) for tok in proc.stdout.split() if "=" in tok)


def main():
    print(f"numpy {np.__version__}, scipy {scipy.__version__}; one core; rates in samples of one trace per second")
    rows = []
    for fs in (1000.0, 10000.0):
        a, b = simulate(fs)
        n = len(a)
        lo = int(np.floor(SPACING_MM / V_RANGE[1] * fs))
        hi = min(int(np.ceil(SPACING_MM / V_RANGE[0] * fs)), n - 2)
        with tempfile.TemporaryDirectory() as tmp:
            path, out = Path(tmp) / "traces.f64", Path(tmp) / "ifaces.f64"
            np.concatenate([a, b]).astype("<f8").tofile(path)
            r = rust(path, n, fs, lo, hi, out)
            rust_times = np.fromfile(out, dtype="<f8")
        np_med, np_best = per_call(lambda: numpy_detect(a, fs))
        sp_med, sp_best = per_call(lambda: scipy_lag(a, b, lo, hi))
        times, _ = numpy_detect(a, fs)
        lag = scipy_lag(a, b, lo, hi)
        same = len(times) == len(rust_times)
        worst = float(np.max(np.abs(times - rust_times))) if same and len(times) else float("nan")
        rd, rx = float(r["detect_samples_per_s_median"]), float(r["xcorr_samples_per_s_median"])
        print(f"\n{n} samples at {fs:.0f} Hz (10 s), lag range {lo}..{hi} samples")
        print(f"  interfaces: numpy {n / np_med / 1e6:8.1f} M/s   flowdaq {rd / 1e6:8.1f} M/s median "
              f"({float(r['detect_samples_per_s_best']) / 1e6:.1f} best)   ratio {rd * np_med / n:5.1f}x")
        print(f"  xcorr:      scipy {n / sp_med / 1e6:8.2f} M/s   flowdaq {rx / 1e6:8.2f} M/s median "
              f"({float(r['xcorr_samples_per_s_best']) / 1e6:.2f} best)   ratio {rx * sp_med / n:5.1f}x")
        print(f"  agreement:  {len(times)} numpy vs {len(rust_times)} flowdaq interfaces, "
              f"max |dt| = {worst:.2e} s; lag scipy {lag:.9f} vs flowdaq {float(r['lag_samples']):.9f} samples "
              f"(|diff| {abs(lag - float(r['lag_samples'])):.1e}; velocity {SPACING_MM * fs / lag:.4f} mm/s, "
              f"true {VELOCITY_MM_PER_S})")
        rows.append((fs, n, rd * np_med / n, rx * sp_med / n))
    print("\nratio summary (flowdaq / peer, medians): " + "; ".join(
        f"{fs:.0f} Hz: interfaces {ri:.1f}x, xcorr {rx:.1f}x" for fs, _, ri, rx in rows))


if __name__ == "__main__":
    main()
