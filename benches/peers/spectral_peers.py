#!/usr/bin/env python3
"""Peer benchmark: flowdaq's pl_features against scipy on the same 10,000 spectra, one core.

One run:
  (a) generates 10,000 synthetic 2048-pixel PL spectra (Gaussian line at 450-650 nm, 8-20 nm
      sigma, 1000 counts on a 200-count offset, Gaussian noise of 5 counts; fixed seed) and
      writes them as raw little-endian float32 to a temporary file;
  (b) times scipy per spectrum: find_peaks(prominence=50), then peak_widths(rel_height=0.5)
      given the prominences and bases find_peaks returned (so nothing is computed twice;
      calling peak_widths without them, as scipy's own example does, recomputes the
      prominences; measured here, that made no difference beyond the machine's noise);
  (c) runs the Rust example `spectral_throughput` on the same file, which times two kernels:
      `pl_features` (the same peaks and widths plus sub-pixel position, eV, integral, IQR,
      secondary peaks and flags, into Arrow columns) and `peaks_widths` (exactly scipy's
      outputs: every peak with prominence and bases, and every peak's width);
  (d) prints the rates, the ratios, and how well the two agree on the main peak FWHM;
  (e) then alternates the two, ROUNDS times (scipy on 2,000 of the spectra, then the Rust
      binary on all of them), and prints each round's ratios and their medians. On a shared
      machine whose speed drifts by tens of percent within minutes, a ratio of two rates taken
      seconds apart is the figure to quote; (b) and (c) can be a minute apart;
  (f) finally alternates them PAIRS times at a finer grain: scipy on 200 spectra (~45 ms),
      then one pass of each Rust kernel over all spectra (~20 ms each) in one kept process
      (the example's serve mode), and prints the median and quartiles of these ratios. The
      machine's speed changes over seconds, so pairs a few tens of milliseconds apart compare
      it with itself most closely: this is the headline figure.

The Rust binary comes from $SPECTRAL_THROUGHPUT_BIN, or is built with
`cargo build --release -p flowdaq-analytics --example spectral_throughput` using
$CARGO_TARGET_DIR (default ~/.cache/flowdaq-target-analytics).

Usage: python3 benches/peers/spectral_peers.py [n_spectra=10000]
Needs numpy and scipy (e.g. ~/.cache/flowdaq-venv/bin/python).
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.signal import find_peaks, peak_widths

ROOT = Path(__file__).resolve().parents[2]
PIXELS = 2048
PROMINENCE = 50.0
SEED = 20240611
ROUNDS = 5
ROUND_SPECTRA = 2000
PAIRS = 40
PAIR_SPECTRA = 200


def generate(n):
    rng = np.random.default_rng(SEED)
    x = np.linspace(300.0, 900.0, PIXELS)
    centers = rng.uniform(450.0, 650.0, n)
    sigmas = rng.uniform(8.0, 20.0, n)
    y = 200.0 + 1000.0 * np.exp(-0.5 * ((x[None, :] - centers[:, None]) / sigmas[:, None]) ** 2)
    y += rng.normal(0.0, 5.0, (n, PIXELS))
    return x, y.astype("<f4")


def scipy_pass(spectra):
    """The timed scipy work, per spectrum, plus the main-peak crossings for the comparison."""
    out = []
    for y in spectra:
        peaks, props = find_peaks(y, prominence=PROMINENCE)
        prom = (props["prominences"], props["left_bases"], props["right_bases"])
        w = peak_widths(y, peaks, rel_height=0.5, prominence_data=prom)
        out.append((peaks, prom, w))
    return out


def rust_binary():
    exe = os.environ.get("SPECTRAL_THROUGHPUT_BIN")
    if exe:
        return exe
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "flowdaq-target-analytics"))
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    subprocess.run(
        ["cargo", "build", "--release", "-p", "flowdaq-analytics", "--example", "spectral_throughput"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return str(Path(target) / "release" / "examples" / "spectral_throughput")


def fine_pairs(exe, path, as64):
    """(f): PAIRS triples (scipy rate, pl_features rate, peaks_widths rate), each taken within
    about 0.1 s, the Rust kernels by one kept process of the example in serve mode."""
    env = dict(os.environ, SPECTRAL_THROUGHPUT_SERVE="1")
    proc = subprocess.Popen(
        [exe, str(path), str(PIXELS), "1000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        while proc.stdout.readline().strip() != "ready":
            if proc.poll() is not None:
                raise RuntimeError("spectral_throughput ended before serving")

        def rust(kernel):
            proc.stdin.write(kernel + "\n")
            proc.stdin.flush()
            return float(proc.stdout.readline())

        out = []
        n = len(as64)
        for k in range(PAIRS):
            lo = (k * PAIR_SPECTRA) % max(n - PAIR_SPECTRA, 1)
            part = as64[lo: lo + PAIR_SPECTRA]
            t = time.perf_counter()
            scipy_pass(part)
            out.append((len(part) / (time.perf_counter() - t), rust("pl_features"), rust("peaks_widths")))
        return out
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    x, spectra = generate(n)
    exe = rust_binary()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spectra.f32"
        spectra.tofile(path)
        # scipy sees float64 arrays (find_peaks converts anyway; convert outside the timing).
        as64 = [row.astype(np.float64) for row in spectra]
        scipy_pass(as64[: min(200, n)])  # warm-up
        t = time.perf_counter()
        results = scipy_pass(as64)
        scipy_s = time.perf_counter() - t
        out = Path(tmp) / "rust.f64"

        def rust_run(out_path=None):
            args = [exe, str(path), str(PIXELS), "1000"] + ([str(out_path)] if out_path else [])
            proc = subprocess.run(args, capture_output=True, text=True, check=True)
            return dict(tok.split("=", 1) for tok in proc.stdout.split() if "=" in tok)

        rust = rust_run(out)
        pairs = np.fromfile(out, dtype="<f8").reshape(-1, 2)
        rounds = []
        for r in range(ROUNDS):
            lo = (r * ROUND_SPECTRA) % max(n - ROUND_SPECTRA, 1)
            part = as64[lo: lo + ROUND_SPECTRA]
            t = time.perf_counter()
            scipy_pass(part)
            scipy_rate_r = len(part) / (time.perf_counter() - t)
            r = rust_run()
            pl_r = float(r["pl_features_spectra_per_s_median"])
            pw_r = float(r["peaks_widths_spectra_per_s_median"])
            rounds.append((scipy_rate_r, pl_r, pw_r))

        pairs_fine = fine_pairs(exe, path, as64)

    # Agreement on the main (most prominent) peak's FWHM in nm.
    px = np.arange(PIXELS, dtype=np.float64)
    diffs, missing = [], 0
    for k, (peaks, prom, w) in enumerate(results):
        if len(peaks) == 0:
            missing += int(np.isfinite(pairs[k, 0]))
            continue
        m = sorted(range(len(peaks)), key=lambda i: (-prom[0][i], -spectra[k][peaks[i]], peaks[i]))[0]
        fwhm = abs(np.interp(w[3][m], px, x) - np.interp(w[2][m], px, x))
        if not np.isfinite(pairs[k, 0]):
            missing += 1
            continue
        diffs.append(abs(fwhm - pairs[k, 0]))
    scipy_rate = n / scipy_s
    pl_rate = float(rust["pl_features_spectra_per_s_median"])
    pw_rate = float(rust["peaks_widths_spectra_per_s_median"])
    print(f"spectra: {n} x {PIXELS} pixels, prominence >= {PROMINENCE}, scipy {scipy.__version__}, numpy {np.__version__}")
    print(f"scipy find_peaks + peak_widths:  {scipy_rate:,.0f} spectra/s (one core)")
    print(
        f"flowdaq pl_features:             {pl_rate:,.0f} spectra/s median, "
        f"{float(rust['pl_features_spectra_per_s_best']):,.0f} best (one core): {pl_rate / scipy_rate:,.1f}x"
    )
    print(
        f"flowdaq find_peaks + peak_width: {pw_rate:,.0f} spectra/s median, "
        f"{float(rust['peaks_widths_spectra_per_s_best']):,.0f} best (one core): {pw_rate / scipy_rate:,.1f}x"
    )
    for k, (sr, pl, pw) in enumerate(rounds, 1):
        print(
            f"interleaved round {k}: scipy {sr:,.0f} spectra/s; pl_features {pl:,.0f} ({pl / sr:,.1f}x); "
            f"find_peaks + peak_width {pw:,.0f} ({pw / sr:,.1f}x)"
        )
    pl_med = float(np.median([pl / sr for sr, pl, _ in rounds]))
    pw_med = float(np.median([pw / sr for sr, _, pw in rounds]))
    print(f"interleaved ratio, median of {len(rounds)} rounds: pl_features {pl_med:,.1f}x, find_peaks + peak_width {pw_med:,.1f}x")
    for name, k in (("pl_features", 1), ("find_peaks + peak_width", 2)):
        r = np.array([p[k] / p[0] for p in pairs_fine])
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        print(
            f"paired ratio, {len(r)} pairs ~0.1 s apart: {name} median {med:,.1f}x "
            f"(quartiles {q1:,.1f}-{q3:,.1f}x, min {r.min():,.1f}x, max {r.max():,.1f}x)"
        )
    print(
        f"main-peak FWHM agreement: max |rust - scipy| = {max(diffs, default=float('nan')):.3e} nm over {len(diffs)} spectra; "
        f"rows where only one side found a peak: {missing}"
    )


if __name__ == "__main__":
    main()
