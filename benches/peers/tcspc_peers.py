#!/usr/bin/env python3
"""TCSPC kernels side by side with their Python peers, on the same inputs, in one run.

    $HOME/.cache/flowdaq-venv/bin/python benches/peers/tcspc_peers.py

Needs a venv with numpy scipy ptufile lmfit phasorpy (tttrlib and flimlib are timed when they
import). Builds and runs analytics/examples/tcspc_throughput.rs (release, target dir
$CARGO_TARGET_DIR or ~/.cache/flowdaq-target-analytics) on the same PTU files and histograms.

- decode + histogram of PTU files (the two real ones in ../shared/data/tcspc and a 4 Mi-record
  HydraHarp v2 T3 file written here): flowdaq from bytes in memory; tttrlib, ptufile from the
  page-cached file (they take a path);
- 1- and 2-exponential reconvolution fits of the same 1024-bin histograms: lmfit with the same
  model (analytics/tests/data/tcspc/tcspc_model.py), FLIMlib with its own model (no IRF shift,
  no earlier-pulse tails: a lower bound on its work);
- phasors of the same histograms (3 harmonics): phasorpy per histogram and batched;
- then FIT_ROUNDS rounds that alternate our fits (the example's `fits-only` mode, ~4 s) with
  lmfit's on the same histograms (1 s per case), printing each round's ratios and their
  median: on this shared machine, speeds drift by tens of percent within minutes, and the
  table above compares our rate with lmfit's taken a minute or more later.
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "analytics", "tests", "data", "tcspc"))
import make_reference as mr  # noqa: E402
import tcspc_model as tm  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tcspc"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/flowdaq-target-analytics"))


def per_call(fn, min_s=1.0):
    fn()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < min_s:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def big_ptu(path, records=4 << 20, seed=5):
    """HydraHarp v2 T3 records: a photon every ~20 syncs on 2 channels, overflows as needed."""
    rng = np.random.default_rng(seed)
    gaps = 1 + rng.exponential(20.0, records).astype(np.int64)
    sync = np.cumsum(gaps)
    wraps = sync // 1024
    micro = np.minimum(150 + rng.exponential(200.0, records), 1561).astype(np.uint32)
    ch = rng.integers(0, 2, records).astype(np.uint32)
    photons = (ch << 25) | (micro << 10) | (sync % 1024).astype(np.uint32)
    out = []
    prev = 0
    new_wrap = np.flatnonzero(np.diff(np.concatenate([[0], wraps])) > 0)
    last = 0
    for i in new_wrap:
        out.append(photons[last:i])
        n = int(wraps[i] - prev)
        out.append(np.array([(1 << 31) | (63 << 25) | n], np.uint32))
        prev = int(wraps[i])
        last = i
    out.append(photons[last:])
    recs = np.concatenate(out)[:records]
    with open(path, "wb") as f:
        f.write(mr.ptu_bytes(0x01010304, recs, True, 25e-9, 16e-12))
    return len(recs)


def histograms(seed=11, count=8):
    rng = np.random.default_rng(seed)
    n, period, fwhm, center = 1024, 25.0, 0.15, 3.0
    bw = period / n
    out = []
    for taus, fr in [([2.5], [1.0]), ([0.8, 4.0], [0.5, 0.5])]:
        for _ in range(count):
            y = mr.simulate(rng, n, bw, period, fwhm, center, taus, fr, 1e5, 0.02)
            out.append(dict(taus=taus, fractions=fr, y=y, bw=bw, period=period, fwhm=fwhm, center=center))
    return out


FIT_ROUNDS = 3


def run_rust(ptu, hist_file, fits_only=False):
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "flowdaq-analytics", "--example", "tcspc_throughput"],
                   cwd=ROOT, env=env, check=True)
    exe = os.path.join(TARGET, "release", "examples", "tcspc_throughput")
    res = subprocess.run([exe, ptu, hist_file] + (["fits-only"] if fits_only else []),
                         capture_output=True, text=True, check=True)
    figures = {}
    for line in res.stdout.splitlines():
        k, *v = line.split()
        figures[k] = [float(x) for x in v] if len(v) > 1 else float(v[0])
    return figures


def tttrlib_decode_hist(path):
    import tttrlib

    t = tttrlib.TTTR(path, "PTU")
    mt = np.asarray(t.micro_times)
    ch = np.asarray(t.routing_channels)
    ev = np.asarray(t.event_types)
    ph = ev == 0
    return [np.bincount(mt[ph & (ch == c)]) for c in np.unique(ch[ph])]


def ptufile_decode_hist(path):
    import ptufile

    with ptufile.PtuFile(path) as p:
        return p.decode_histogram(dtime=0)


def lmfit_fit(h, k, statistic):
    import lmfit

    n = len(h["y"])
    case = dict(components=k, statistic=statistic, period_bins=float(n), irf_kind="gaussian",
                irf_model=(h["fwhm"] / tm.FWHM_PER_SIGMA / h["bw"], 0.0))
    taus = [t / h["bw"] for t in h["taus"]]
    start = dict(tau_bins=[t * 1.1 for t in taus], amp=[1e5 * f / t for f, t in zip(h["fractions"], taus)],
                 background=2e3 / n, shift_bins=h["center"] / h["bw"] + 0.3)
    res = lmfit.minimize(tm.lmfit_residual, tm.make_lmfit_params(case, start), args=(h["y"], case), method="leastsq")
    return sorted(res.params[f"tau{i}"].value * h["bw"] for i in range(k))


def flimlib_fit(stack, h0, k):
    """FLIMlib multi-exponential fit of a stack with a Gaussian prompt at the true centre."""
    import flimlib

    n = stack.shape[1]
    sigma = h0["fwhm"] / tm.FWHM_PER_SIGMA / h0["bw"]
    irf = tm.gaussian_irf(n, sigma, h0["center"] / h0["bw"])
    irf = irf[irf > 1e-12 * irf.max()].astype(np.float32)
    taus = h0["taus"]
    param = [2e3 / n]
    for f, t in zip(h0["fractions"], taus):
        param += [1e5 * f / (t / h0["bw"]), t * 1.1]
    params = np.tile(np.asarray(param, np.float32), (stack.shape[0], 1))
    r = flimlib.GCI_marquardt_fitting_engine(h0["bw"], stack.astype(np.float32), params, instr=irf,
                                             noise_type="NOISE_POISSON_FIT", fit_start=0, fit_end=n)
    return r.param


def main():
    print("== TCSPC kernels vs peers (one run, this machine) ==")
    try:
        import tttrlib  # noqa: F401
        have_tttrlib = True
    except ImportError:
        have_tttrlib = False
        print("tttrlib not installed: decode peer skipped")
    try:
        import flimlib  # noqa: F401
        have_flimlib = True
    except ImportError:
        have_flimlib = False
        print("flimlib not installed: FLIMlib peer skipped")

    tmp = tempfile.mkdtemp(prefix="tcspc_peers_")
    big = os.path.join(tmp, "hydraharp_v2_t3_4Mi.ptu")
    nbig = big_ptu(big)
    hists = histograms()
    hist_file = os.path.join(tmp, "hists.txt")
    with open(hist_file, "w") as f:
        for stat in ["neyman", "mle"]:
            for h in hists:
                f.write(f"{h['bw']!r} {h['period']!r} {h['fwhm']!r} {len(h['taus'])} {stat} " + " ".join(str(int(v)) for v in h["y"]) + "\n")

    files = [(big, nbig)]
    for name in ["hydraharp_t3_beads.ptu", "picoharp_t3_hazelnut_z1.ptu"]:
        p = os.path.join(SHARED, name)
        if os.path.exists(p):
            import ptufile

            with ptufile.PtuFile(p) as pf:
                files.append((p, pf.number_records))
    rows = []
    rust_fit = None
    for path, nrec in files:
        fig = run_rust(path, hist_file)
        rust_fit = fig
        name = os.path.basename(path)
        r_fused = fig["decode_histogram_fused_records_per_s"]
        r_cols = fig["decode_columns_histogram_records_per_s"]
        rows.append((f"decode+histogram {name} ({nrec} records)", "flowdaq fused", r_fused, "records/s"))
        rows.append((f"decode+histogram {name}", "flowdaq columns+histogram", r_cols, "records/s"))
        if have_tttrlib:
            t = nrec / per_call(lambda: tttrlib_decode_hist(path))
            rows.append((f"decode+histogram {name}", "tttrlib", t, "records/s"))
            rows.append((f"decode+histogram {name}", "ratio flowdaq fused / tttrlib", r_fused / t, "x"))
        t = nrec / per_call(lambda: ptufile_decode_hist(path))
        rows.append((f"decode+histogram {name}", "ptufile decode_histogram", t, "records/s"))
        rows.append((f"decode+histogram {name}", "ratio flowdaq fused / ptufile", r_fused / t, "x"))

    # Fits.
    for k in [1, 2]:
        group = [h for h in hists if len(h["taus"]) == k]
        for stat in ["neyman", "mle"]:
            rust = rust_fit[f"fit_{k}exp_{stat}_fits_per_s"]
            idx = [0]

            def one():
                lmfit_fit(group[idx[0] % len(group)], k, stat)
                idx[0] += 1

            lm = 1.0 / per_call(one, min_s=3.0)
            rows.append((f"{k}-exp fit 1024 bins ({stat})", "flowdaq", rust, "fits/s"))
            rows.append((f"{k}-exp fit 1024 bins ({stat})", "lmfit (same model)", lm, "fits/s"))
            rows.append((f"{k}-exp fit 1024 bins ({stat})", "ratio flowdaq / lmfit", rust / lm, "x"))
            # Same optimum? compare first lifetimes on the first histograms.
            ours = rust_fit[f"fit_{k}exp_{stat}_tau0_ns"]
            ours = ours if isinstance(ours, list) else [ours]
            theirs = [lmfit_fit(h, k, stat)[0] for h in group[:3]]
            rows.append((f"{k}-exp fit ({stat}) tau1 ns, first 3", "flowdaq / lmfit",
                         " ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(ours[:3], theirs)), ""))
        if have_flimlib:
            stack = np.stack([h["y"] for h in group])
            reps = 20
            t = per_call(lambda: flimlib_fit(np.tile(stack, (reps, 1)), group[0], k), min_s=2.0)
            params = flimlib_fit(stack, group[0], k)
            taus = params[:, 2::2]
            rows.append((f"{k}-exp fit 1024 bins", "FLIMlib (own model, Poisson-fit noise)", reps * len(group) / t, "fits/s"))
            rows.append((f"{k}-exp fit 1024 bins", "ratio flowdaq mle / FLIMlib", rust_fit[f"fit_{k}exp_mle_fits_per_s"] / (reps * len(group) / t), "x"))
            rows.append((f"{k}-exp FLIMlib tau ns, first 3", "FLIMlib", " ".join(str(np.round(t_, 4)) for t_ in taus[:3]), ""))

    # Phasors.
    from phasorpy.phasor import phasor_from_signal

    ys = [h["y"] for h in hists]
    idx = [0]

    def ph():
        phasor_from_signal(ys[idx[0] % len(ys)], harmonic=[1, 2, 3])
        idx[0] += 1

    p1 = 1.0 / per_call(ph)
    stack = np.tile(np.stack(ys), (64, 1))
    pb = stack.shape[0] / per_call(lambda: phasor_from_signal(stack, axis=-1, harmonic=[1, 2, 3]))
    r = rust_fit["phasor_histograms_per_s"]
    rows.append(("phasor 1024 bins, 3 harmonics", "flowdaq (one histogram per call)", r, "histograms/s"))
    rows.append(("phasor 1024 bins, 3 harmonics", "phasorpy one histogram per call", p1, "histograms/s"))
    rows.append(("phasor 1024 bins, 3 harmonics", "phasorpy batch of 1024", pb, "histograms/s"))
    rows.append(("phasor 1024 bins, 3 harmonics", "ratio flowdaq / phasorpy per call", r / p1, "x"))
    rows.append(("phasor 1024 bins, 3 harmonics", "ratio flowdaq / phasorpy batch", r / pb, "x"))

    w = max(len(a) for a, *_ in rows)
    for what, who, value, unit in rows:
        v = f"{value:.3e}" if isinstance(value, float) and unit != "x" else (f"{value:.1f}" if isinstance(value, float) else value)
        print(f"{what:<{w}}  {who:<42} {v} {unit}")

    # Fits again, ours and lmfit's alternating, so each ratio is of two rates seconds apart.
    cases = [(k, stat) for k in [1, 2] for stat in ["neyman", "mle"]]
    ratios = {case: [] for case in cases}
    for r in range(FIT_ROUNDS):
        ours = run_rust(files[-1][0], hist_file, fits_only=True)
        line = []
        for k, stat in cases:
            group = [h for h in hists if len(h["taus"]) == k]
            idx = [0]

            def one():
                lmfit_fit(group[idx[0] % len(group)], k, stat)
                idx[0] += 1

            lm = 1.0 / per_call(one, min_s=1.0)
            rate = ours[f"fit_{k}exp_{stat}_fits_per_s"]
            ratios[(k, stat)].append(rate / lm)
            line.append(f"{k}-exp {stat} {rate:,.0f}/{lm:.1f} = {rate / lm:.0f}x")
        print(f"interleaved fit round {r + 1} (flowdaq/lmfit fits/s): " + ", ".join(line))
    print("interleaved fit ratios, median of rounds: " + ", ".join(
        f"{k}-exp {stat} {np.median(ratios[(k, stat)]):.0f}x" for k, stat in cases))


if __name__ == "__main__":
    main()
