#!/usr/bin/env python3
"""A/B of two builds of the `spectral_throughput` example, optionally against scipy, in one run.

Why: on this kind of shared machine the speed of one core drifts by tens of percent over
seconds, so two builds timed a minute apart (or two runs of spectral_peers.py) cannot tell a
5-20 % change from noise. Here both builds are kept running in serve mode
(SPECTRAL_THROUGHPUT_SERVE) on the same spectra and asked for passes in turn, so each
comparison is between passes a few milliseconds apart.

Modes:
  default   ABBA quads: A, B, B, A passes over 5,000 of the peers' spectra (~10 ms each); per
            quad the ratio (B1 + B2) / (A1 + A2). Prints the median, mean +- standard error and
            quartiles of the quad ratios. An A/A run (the same binary twice) on this host gave
            a median of 0.98, mean 1.012 +- 0.010, quartiles 0.91-1.07: differences below
            ~3 % are noise.
  --scipy   pairs as in spectral_peers.py (f): scipy find_peaks + peak_widths on 200 spectra,
            then one pass of each build over all 10,000 spectra (order alternated), so both
            builds' ratios to scipy come from the same scipy timings.

Usage: python3 benches/peers/spectral_ab.py A_BIN B_BIN [--kernel pl_features|peaks_widths]
       [--quads 300] [--scipy] [--pairs 60]
Binaries: `cargo build --release -p flowdaq-analytics --example spectral_throughput`, copied
aside for each build. Needs numpy and scipy (e.g. ~/.cache/flowdaq-venv/bin/python).
"""
import argparse
import math
import os
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spectral_peers as peers  # noqa: E402  (same spectra, same scipy work)


class Server:
    """One build of the example in serve mode over the spectra file."""

    def __init__(self, exe, path, batch):
        env = dict(os.environ, SPECTRAL_THROUGHPUT_SERVE="1")
        self.proc = subprocess.Popen(
            [exe, str(path), str(peers.PIXELS), str(batch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        while self.proc.stdout.readline().strip() != "ready":
            if self.proc.poll() is not None:
                raise RuntimeError(f"{exe} ended before serving")

    def rate(self, kernel):
        self.proc.stdin.write(kernel + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def summary(label, ratios):
    q = st.quantiles(ratios, n=4)
    sem = st.stdev(ratios) / math.sqrt(len(ratios))
    return (
        f"{label}: median {st.median(ratios):.3f}, mean {st.mean(ratios):.3f} +- {sem:.3f}, "
        f"quartiles {q[0]:.3f}-{q[2]:.3f} ({len(ratios)} samples)"
    )


def abba(a, b, kernel, quads):
    ratios, ra, rb = [], [], []
    for _ in range(quads):
        a1, b1, b2, a2 = a.rate(kernel), b.rate(kernel), b.rate(kernel), a.rate(kernel)
        ra += [a1, a2]
        rb += [b1, b2]
        ratios.append((b1 + b2) / (a1 + a2))
    print(f"{kernel}: A median {st.median(ra):,.0f} spectra/s, B median {st.median(rb):,.0f}")
    print(summary(f"{kernel} B/A per ABBA quad", ratios))


def with_scipy(a, b, kernel, pairs, spectra):
    as64 = [row.astype(np.float64) for row in spectra]
    peers.scipy_pass(as64[: peers.PAIR_SPECTRA])  # warm-up
    sc, ra, rb = [], [], []
    n = len(as64)
    for k in range(pairs):
        lo = (k * peers.PAIR_SPECTRA) % max(n - peers.PAIR_SPECTRA, 1)
        part = as64[lo: lo + peers.PAIR_SPECTRA]
        t = time.perf_counter()
        peers.scipy_pass(part)
        s = len(part) / (time.perf_counter() - t)
        if k % 2 == 0:
            x, y = a.rate(kernel), b.rate(kernel)
        else:
            y, x = b.rate(kernel), a.rate(kernel)
        sc.append(s)
        ra.append(x)
        rb.append(y)
    print(f"scipy median {st.median(sc):,.0f} spectra/s; A median {st.median(ra):,.0f}; "
          f"B median {st.median(rb):,.0f} ({kernel})")
    print(summary("A / scipy", [x / s for x, s in zip(ra, sc)]))
    print(summary("B / scipy", [y / s for y, s in zip(rb, sc)]))
    print(summary("B / A", [y / x for x, y in zip(ra, rb)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--kernel", default="pl_features", choices=["pl_features", "peaks_widths"])
    ap.add_argument("--quads", type=int, default=300)
    ap.add_argument("--scipy", action="store_true")
    ap.add_argument("--pairs", type=int, default=60)
    args = ap.parse_args()
    _, spectra = peers.generate(10_000)
    if not args.scipy:
        spectra = spectra[:5_000]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spectra.f32"
        spectra.tofile(path)
        batch = 1000 if args.scipy else len(spectra)
        a, b = Server(args.a, path, batch), Server(args.b, path, batch)
        try:
            if args.scipy:
                with_scipy(a, b, args.kernel, args.pairs, spectra)
            else:
                abba(a, b, args.kernel, args.quads)
        finally:
            a.close()
            b.close()


if __name__ == "__main__":
    main()
