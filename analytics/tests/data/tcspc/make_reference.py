#!/usr/bin/env python3
"""Generate the reference data the flowdaq TCSPC tests compare against (independent readers).

Run from anywhere with the venv that has numpy scipy ptufile lmfit phasorpy (tttrlib optional):
    $HOME/.cache/flowdaq-venv/bin/python analytics/tests/data/tcspc/make_reference.py

Writes, beside this script:
- ptu_reference.txt: ptufile's decode of the two real PTU files in ../shared/data/tcspc/
  (counts per channel, markers per bit pattern, overflow records, full micro-time histograms),
  plus tttrlib's counts for comparison when tttrlib is installed.
- synthetic/<type>.ptu + synthetic/<type>.expected.txt: for every PicoQuant record type, a small
  PTU file of random spec-valid records written here, and ptufile's decode of it.
- fit_reference.txt: simulated decays (photon by photon, seeded) and lmfit's fit of each with
  the same model (tcspc_model.py), and phasorpy's phasors of the same histograms.
The text format is one `key value value ...` line per item; `case NAME` starts a block.
"""
import io
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tcspc_model as tm  # noqa: E402

DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "..", "shared", "data", "tcspc"))
if not os.path.isdir(DATA):
    DATA = "/work/shared/data/tcspc"


def line(key, values):
    if isinstance(values, (list, tuple, np.ndarray)):
        return key + " " + " ".join(fmt(v) for v in values) + "\n"
    return f"{key} {fmt(values)}\n"


def fmt(v):
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


# ---------------------------------------------------------------- real files
def real_files():
    import ptufile

    try:
        import tttrlib
    except ImportError:  # optional
        tttrlib = None
    out = []
    for name in ["hydraharp_t3_beads.ptu", "picoharp_t3_hazelnut_z1.ptu"]:
        path = os.path.join(DATA, name)
        with ptufile.PtuFile(path) as p:
            rec = p.decode_records()
            photons = rec[rec["channel"] >= 0]
            special = rec[rec["channel"] < 0]
            markers = special[special["marker"] > 0]
            overflows = int((special["marker"] == 0).sum())
            nch = int(photons["channel"].max()) + 1
            nbins = int(photons["dtime"].max()) + 1
            out.append(f"case {name}\n")
            out.append(line("record_type", int(p.tags["TTResultFormat_TTTRRecType"])))
            out.append(line("records", int(p.number_records)))
            out.append(line("header_len", int(p._data_offset)))
            out.append(line("sync_rate_hz", float(p.tags["TTResult_SyncRate"])))
            out.append(line("global_resolution_s", float(p.global_resolution)))
            out.append(line("resolution_s", float(p.tcspc_resolution)))
            out.append(line("photons_per_channel", [int((photons["channel"] == c).sum()) for c in range(nch)]))
            out.append(line("markers_per_pattern", [int((markers["marker"] == m).sum()) for m in range(16)]))
            out.append(line("overflows", overflows))
            total = np.zeros(nbins, np.int64)
            for c in range(nch):
                h = np.bincount(photons["dtime"][photons["channel"] == c].astype(np.int64), minlength=nbins)
                total += h
                out.append(line(f"histogram_{c}", h))
            out.append(line("histogram_peak_bin", int(np.argmax(total))))
            # ptufile's own histogram routine over one period (drops micro times >= the period).
            hist = p.decode_histogram(dtime=0)
            out.append(line("ptufile_period_histogram_sum", [int(v) for v in hist.sum(axis=1)]))
            out.append(line("first_photon_time", int(photons["time"][0])))
            out.append(line("last_photon_time", int(photons["time"][-1])))
            out.append(line("last_photon_dtime", int(photons["dtime"][-1])))
        if tttrlib is not None:
            t = tttrlib.TTTR(path, "PTU")
            ev = np.asarray(t.event_types)
            out.append(line("tttrlib_events", len(ev)))
            out.append(line("tttrlib_photons", int((ev == 0).sum())))
            out.append(line("tttrlib_markers", int((ev == 1).sum())))
        out.append("end\n")
    with open(os.path.join(HERE, "ptu_reference.txt"), "w") as f:
        f.write("# ptufile (and tttrlib) decode of the real PTU files; make_reference.py\n")
        f.writelines(out)


# ---------------------------------------------------------------- synthetic record types
TAG = dict(Empty8=0xFFFF0008, Bool8=8, Int8=0x10000008, Float8=0x20000008, AnsiString=0x4001FFFF)


def tag(name, typ, val, idx=-1):
    n = name.encode().ljust(32, b"\0")
    extra = b""
    if typ == "Float8":
        v = struct.pack("<d", val)
    elif typ == "AnsiString":
        b = val.encode() + b"\0"
        extra = b.ljust((len(b) + 7) // 8 * 8, b"\0")
        v = struct.pack("<q", len(extra))
    else:
        v = struct.pack("<q", int(val))
    return n + struct.pack("<iI", idx, TAG[typ]) + v + extra


def ptu_bytes(rectype, records, t3, global_res, res):
    h = b"PQTTTR\0\0" + b"1.0.00\0\0"
    h += tag("File_Comment", "AnsiString", "flowdaq synthetic records from the format specification")
    h += tag("Measurement_Mode", "Int8", 3 if t3 else 2)
    h += tag("Measurement_SubMode", "Int8", 0)
    h += tag("TTResultFormat_TTTRRecType", "Int8", rectype)
    h += tag("TTResultFormat_BitsPerRecord", "Int8", 32)
    h += tag("TTResult_NumberOfRecords", "Int8", len(records))
    h += tag("MeasDesc_GlobalResolution", "Float8", global_res)
    h += tag("MeasDesc_Resolution", "Float8", res)
    h += tag("TTResult_SyncRate", "Int8", 40000000)
    h += tag("Header_End", "Empty8", 0)
    return h + np.asarray(records, "<u4").tobytes()


TYPES = {
    "picoharp_t2": (0x00010203, False),
    "picoharp_t3": (0x00010303, True),
    "hydraharp_v1_t2": (0x00010204, False),
    "hydraharp_v1_t3": (0x00010304, True),
    "hydraharp_v2_t2": (0x01010204, False),
    "hydraharp_v2_t3": (0x01010304, True),
    "timeharp260n_t2": (0x00010205, False),
    "timeharp260n_t3": (0x00010305, True),
    "timeharp260p_t2": (0x00010206, False),
    "timeharp260p_t3": (0x00010306, True),
    "generic_t2": (0x00010207, False),
    "generic_t3": (0x00010307, True),
}


def random_records(name, rng, count):
    v1 = "v1" in name
    recs = []
    for _ in range(count):
        u = rng.random()
        if name.startswith("picoharp_t3"):
            if u < 0.08:
                recs.append((15 << 28) | int(rng.integers(0, 1 << 16)))  # overflow (marker bits 0)
            elif u < 0.14:
                recs.append((15 << 28) | (int(rng.integers(1, 16)) << 16) | int(rng.integers(0, 1 << 16)))
            else:
                recs.append((int(rng.integers(1, 5)) << 28) | (int(rng.integers(0, 4096)) << 16) | int(rng.integers(0, 1 << 16)))
        elif name.startswith("picoharp_t2"):
            if u < 0.08:
                recs.append((15 << 28) | (int(rng.integers(0, 1 << 24)) << 4))  # overflow
            elif u < 0.14:
                recs.append((15 << 28) | (int(rng.integers(0, 1 << 24)) << 4) | int(rng.integers(1, 16)))
            else:
                recs.append((int(rng.integers(0, 4)) << 28) | int(rng.integers(0, 1 << 28)))
        elif name.endswith("t3"):
            if u < 0.08:
                n = 0 if v1 or rng.random() < 0.5 else int(rng.integers(1, 1024))
                recs.append((1 << 31) | (63 << 25) | n)
            elif u < 0.14:
                recs.append((1 << 31) | (int(rng.integers(1, 16)) << 25) | int(rng.integers(0, 1024)))
            else:
                recs.append((int(rng.integers(0, 64)) << 25) | (int(rng.integers(0, 1 << 15)) << 10) | int(rng.integers(0, 1024)))
        else:  # HydraHarp-family T2
            if u < 0.08:
                # ptufile 2026.2.6 computes 2^25 * n in 32 bits (wrong for n >= 128), while
                # PicoQuant's format (and flowdaq) use 64 bits: compare only where both agree.
                # records/tests.rs checks n = 1000 against the specification directly.
                n = 0 if v1 or rng.random() < 0.5 else int(rng.integers(1, 128))
                recs.append((1 << 31) | (63 << 25) | n)
            elif u < 0.14:
                recs.append((1 << 31) | (int(rng.integers(1, 16)) << 25) | int(rng.integers(0, 1 << 25)))
            elif u < 0.20:
                recs.append((1 << 31) | int(rng.integers(0, 1 << 25)))  # sync
            else:
                # Photon channels from 1: ptufile reports T2 syncs as channel 0 too.
                recs.append((int(rng.integers(1, 63)) << 25) | int(rng.integers(0, 1 << 25)))
    return recs


def synthetic_records():
    import ptufile

    rng = np.random.default_rng(20240611)
    for name, (code, t3) in TYPES.items():
        recs = random_records(name, rng, 400)
        data = ptu_bytes(code, recs, t3, 25e-9 if t3 else 1e-12, 16e-12 if t3 else 1e-12)
        with open(os.path.join(HERE, "synthetic", name + ".ptu"), "wb") as f:
            f.write(data)
        p = ptufile.PtuFile(io.BytesIO(data))
        dec = p.decode_records()
        # Overflow records: channel < 0 and marker 0. Everything else is a row.
        keep = ~((dec["channel"] < 0) & (dec["marker"] == 0))
        rows = dec[keep]
        with open(os.path.join(HERE, "synthetic", name + ".expected.txt"), "w") as f:
            f.write(f"# ptufile {ptufile.__version__} decode of {name}.ptu (overflow records dropped)\n")
            f.write(line("record_type", code))
            f.write(line("overflows", int((~keep).sum())))
            f.write(line("time", rows["time"]))
            f.write(line("dtime", rows["dtime"] if t3 else np.zeros(len(rows), int)))
            f.write(line("channel", rows["channel"]))
            f.write(line("marker", rows["marker"]))


# ---------------------------------------------------------------- fits and phasors
def simulate(rng, n, bin_ns, period_ns, fwhm_ns, center_ns, taus_ns, fractions, counts, bg_fraction, irf_tail_ns=0.0):
    """Photon-by-photon decay histogram over [0, n * bin_ns) with earlier pulses folded in."""
    total = rng.poisson(counts)
    nb = rng.binomial(total, bg_fraction)
    ns = total - nb
    sigma = fwhm_ns / tm.FWHM_PER_SIGMA
    comp = rng.choice(len(taus_ns), size=ns, p=fractions)
    t = center_ns + rng.normal(0.0, sigma, ns) + rng.exponential(np.asarray(taus_ns)[comp])
    if irf_tail_ns > 0:
        t += rng.exponential(irf_tail_ns, ns)
    t = np.mod(t, period_ns)
    t = np.concatenate([t, rng.uniform(0.0, period_ns, nb)])
    h, _ = np.histogram(t, bins=n, range=(0.0, n * bin_ns))
    return h.astype(float)


def simulate_irf(rng, n, bin_ns, fwhm_ns, center_ns, counts, tail_ns):
    sigma = fwhm_ns / tm.FWHM_PER_SIGMA
    t = center_ns + rng.normal(0.0, sigma, counts) + rng.exponential(tail_ns, counts)
    h, _ = np.histogram(t, bins=n, range=(0.0, n * bin_ns))
    return h.astype(float)


CASES = [
    # name, stat, taus, fractions, counts, bg, period_ns, fwhm, center, irf kind
    dict(name="mono_neyman_1e5", statistic="neyman", taus_ns=[2.5], fractions=[1.0], counts=1e5, bg=0.02, period_ns=25.0, fwhm_ns=0.15, center_ns=3.0, irf="gaussian"),
    dict(name="mono_mle_2e3", statistic="mle", taus_ns=[2.5], fractions=[1.0], counts=2e3, bg=0.02, period_ns=25.0, fwhm_ns=0.15, center_ns=3.0, irf="gaussian"),
    dict(name="mono_mle_tail_30ns", statistic="mle", taus_ns=[30.0], fractions=[1.0], counts=1e5, bg=0.01, period_ns=50.0, fwhm_ns=0.3, center_ns=5.0, irf="gaussian"),
    dict(name="bi_neyman_measured_irf", statistic="neyman", taus_ns=[0.8, 4.0], fractions=[0.5, 0.5], counts=1e6, bg=0.01, period_ns=25.0, fwhm_ns=0.12, center_ns=2.0, irf="measured"),
    dict(name="bi_mle_1e5", statistic="mle", taus_ns=[1.0, 6.0], fractions=[0.4, 0.6], counts=1e5, bg=0.01, period_ns=25.0, fwhm_ns=0.15, center_ns=3.0, irf="gaussian"),
    dict(name="tri_neyman_1e6", statistic="neyman", taus_ns=[0.3, 2.0, 9.0], fractions=[0.3, 0.4, 0.3], counts=1e6, bg=0.005, period_ns=50.0, fwhm_ns=0.1, center_ns=2.0, irf="gaussian"),
]


def fits_and_phasors():
    import lmfit
    from phasorpy.lifetime import phasor_calibrate, phasor_to_apparent_lifetime
    from phasorpy.phasor import phasor_from_signal

    rng = np.random.default_rng(7)
    n = 1024
    harmonics = [1, 2, 3]
    out = []
    for c in CASES:
        bin_ns = c["period_ns"] / n
        sigma_bins = c["fwhm_ns"] / tm.FWHM_PER_SIGMA / bin_ns
        tail = 0.03
        y = simulate(rng, n, bin_ns, c["period_ns"], c["fwhm_ns"], c["center_ns"], c["taus_ns"], c["fractions"], c["counts"], c["bg"],
                     irf_tail_ns=tail if c["irf"] == "measured" else 0.0)
        case = dict(components=len(c["taus_ns"]), statistic=c["statistic"], period_bins=n * 1.0)
        if c["irf"] == "gaussian":
            irf_hist = tm.gaussian_irf(n, sigma_bins, c["center_ns"] / bin_ns)
            case["irf_kind"] = "gaussian"
            case["irf_model"] = (sigma_bins, 0.0)
            shift0 = c["center_ns"] / bin_ns
        else:
            irf_hist = simulate_irf(rng, n, bin_ns, c["fwhm_ns"], c["center_ns"], 100000, tail)
            case["irf_kind"] = "measured"
            case["irf_model"] = irf_hist / irf_hist.sum()
            shift0 = 0.0
        photons = c["counts"] * (1 - c["bg"])
        taus_bins = [t / bin_ns for t in c["taus_ns"]]
        start = dict(
            tau_bins=[t * 1.1 for t in taus_bins],
            amp=[photons * f / t for f, t in zip(c["fractions"], taus_bins)],
            background=c["counts"] * c["bg"] / n,
            shift_bins=shift0 + 0.3,
        )
        params = tm.make_lmfit_params(case, start)
        res = lmfit.minimize(tm.lmfit_residual, params, args=(y, case), method="leastsq", scale_covar=False,
                             ftol=1e-13, xtol=1e-13, max_nfev=20000)
        k = case["components"]
        order = np.argsort([res.params[f"tau{i}"].value for i in range(k)])
        tau_ns = [res.params[f"tau{i}"].value * bin_ns for i in order]
        tau_se = [res.params[f"tau{i}"].stderr * bin_ns for i in order]
        amp = [res.params[f"a{i}"].value for i in order]
        amp_se = [res.params[f"a{i}"].stderr for i in order]
        m = tm.model(n, case["irf_kind"], case["irf_model"], [res.params[f"tau{i}"].value for i in range(k)],
                     [res.params[f"a{i}"].value for i in range(k)], res.params["b"].value, res.params["shift"].value, case["period_bins"])
        nfree = 2 * k + 2
        if c["statistic"] == "neyman":
            redchi = float(np.sum((y - m) ** 2 / np.maximum(y, 1.0)) / (n - nfree))
        else:
            mm = np.maximum(m, 1e-10)
            redchi = float(np.sum((y - mm) ** 2 / mm) / (n - nfree))
        out.append(f"case {c['name']}\n")
        out.append(line("statistic", c["statistic"]))
        out.append(line("components", k))
        out.append(line("bin_width_ns", bin_ns))
        out.append(line("period_ns", c["period_ns"]))
        out.append(line("sync_rate_hz", 1e9 / c["period_ns"]))
        out.append(line("irf_kind", c["irf"]))
        out.append(line("irf_fwhm_ns", c["fwhm_ns"]))
        out.append(line("true_tau_ns", c["taus_ns"]))
        out.append(line("histogram", y))
        out.append(line("irf", irf_hist))
        out.append(line("lmfit_success", int(res.success)))
        out.append(line("lmfit_nfev", res.nfev))
        out.append(line("lmfit_tau_ns", tau_ns))
        out.append(line("lmfit_tau_stderr_ns", tau_se))
        out.append(line("lmfit_amplitude", amp))
        out.append(line("lmfit_amplitude_stderr", amp_se))
        out.append(line("lmfit_background", res.params["b"].value))
        out.append(line("lmfit_background_stderr", res.params["b"].stderr))
        out.append(line("lmfit_shift_ns", res.params["shift"].value * bin_ns))
        out.append(line("lmfit_shift_stderr_ns", res.params["shift"].stderr * bin_ns))
        out.append(line("lmfit_reduced_chi_square", redchi))
        # phasorpy: raw phasors of decay and IRF, calibrated, apparent lifetimes.
        mean, re, im = phasor_from_signal(y, harmonic=harmonics)
        rmean, rre, rim = phasor_from_signal(irf_hist, harmonic=harmonics)
        f_mhz = 1e3 / c["period_ns"]
        cre, cim = phasor_calibrate(re, im, rmean, rre, rim, frequency=f_mhz, lifetime=0.0, harmonic=harmonics)
        tph, tmod = phasor_to_apparent_lifetime(cre, cim, frequency=f_mhz * np.asarray(harmonics))
        out.append(line("phasorpy_g", re))
        out.append(line("phasorpy_s", im))
        out.append(line("phasorpy_irf_g", rre))
        out.append(line("phasorpy_irf_s", rim))
        out.append(line("phasorpy_calibrated_g", cre))
        out.append(line("phasorpy_calibrated_s", cim))
        out.append(line("phasorpy_tau_phase_ns", tph))
        out.append(line("phasorpy_tau_modulation_ns", tmod))
        out.append("end\n")
        print(f"{c['name']}: lmfit tau_ns={np.round(tau_ns, 4)} success={res.success} nfev={res.nfev} redchi={redchi:.3f}")
    with open(os.path.join(HERE, "fit_reference.txt"), "w") as f:
        f.write("# simulated decays, lmfit fits (tcspc_model.py) and phasorpy phasors; make_reference.py\n")
        f.writelines(out)


if __name__ == "__main__":
    real_files()
    synthetic_records()
    fits_and_phasors()
    print("reference data written to", HERE)
