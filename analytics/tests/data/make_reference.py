#!/usr/bin/env python3
"""Regenerate the scipy/pybaselines reference data used by analytics/tests/spectral_reference.rs.

Run from anywhere (numpy, scipy and pybaselines required):

    python3 -m venv ~/.cache/flowdaq-venv
    ~/.cache/flowdaq-venv/bin/pip install numpy scipy pybaselines
    ~/.cache/flowdaq-venv/bin/python analytics/tests/data/make_reference.py

Inputs: the two real instrument files copied beside this script
(ocean_optics_usb2000_tsunami.scope, jasco_v570_pbse_qd_absorbance.txt; originals in
../shared/data/spectra/, from wright-group/WrightTools datasets) and synthetic spectra drawn
here with a fixed seed. Synthetic values are rounded to float32 before anything is computed,
so the Rust side (Float32 spectra) sees exactly the numbers scipy saw.

Outputs (small CSV, one record per line, no quoting):
  reference_spectra.csv  name,v0,v1,...            ("axis" row = wavelength axis in nm)
  reference_cases.csv    spectrum,min_prominence,n_peaks
  reference_peaks.csv    spectrum,min_prominence,index,height,prominence,left_base,right_base,
                         width,width_height,left_ip,right_ip   (find_peaks + peak_prominences
                         + peak_widths(rel_height=0.5))
  reference_pl.csv       spectrum,min_prominence,main_index,fwhm_nm,left_nm,right_nm
                         (most prominent peak; crossings mapped to nm with np.interp)
  reference_savgol.csv   spectrum,window,polyorder,v0,...   (savgol_filter, mode="interp")
  reference_asls.csv     spectrum,lam,p,v0,...              (pybaselines asls baseline)
  reference_exciton.csv  spectrum,min_prominence,savgol_window,savgol_polyorder,index,
                         wavelength_nm,height,prominence   (longest-wavelength peak)
"""
from pathlib import Path

import numpy as np
import scipy
from scipy.signal import find_peaks, peak_prominences, peak_widths, savgol_filter

HERE = Path(__file__).resolve().parent
PROMINENCES = [1.0, 20.0, 100.0]


def read_scope(path):
    lines = path.read_text().splitlines()
    start = lines.index(">>>>>Begin Spectral Data<<<<<") + 1
    rows = [ln.split() for ln in lines[start:] if ln and not ln.startswith(">>>>>")]
    data = np.array(rows, dtype=np.float64)
    return data[:, 0], data[:, 1]


def read_jasco(path):
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "XYDATA") + 1
    rows = [ln.split() for ln in lines[start:] if ln.strip()]
    data = np.array(rows, dtype=np.float64)
    return data[:, 0], data[:, 1]


def synthetic():
    rng = np.random.default_rng(20240611)
    n = 1024
    i = np.arange(n, dtype=np.float64)
    axis = 400.0 + 0.3 * i + 2e-5 * i * i  # non-uniform, like a real grating dispersion
    out = {}

    def gauss(c, s):
        return np.exp(-0.5 * ((i - c) / s) ** 2)

    def lorentz(c, g):
        return 1.0 / (1.0 + ((i - c) / g) ** 2)

    out["gauss_noise"] = 150.0 + 1000.0 * gauss(400.3, 12.0) + rng.normal(0, 4.0, n)
    out["lorentz_slope"] = 50.0 + 0.2 * i + 800.0 * lorentz(611.7, 8.0) + rng.normal(0, 3.0, n)
    eta = 0.4  # pseudo-Voigt main peak plus a nanoplatelet side peak
    out["voigt_two"] = (
        100.0
        + 900.0 * (eta * lorentz(500.2, 10.0) + (1 - eta) * gauss(500.2, 10.0 / np.sqrt(2 * np.log(2))))
        + 250.0 * gauss(380.0, 6.0)
        + rng.normal(0, 5.0, n)
    )
    out["counts_integer"] = rng.poisson(20.0 + 60.0 * gauss(300.0, 20.0)).astype(np.float64)
    out["plateau_saturated"] = np.minimum(4000.0, 100.0 + 6000.0 * gauss(700.0, 15.0)) + np.round(
        rng.normal(0, 2.0, n)
    ) * (gauss(700.0, 15.0) < 0.6)
    out["noise_only"] = 200.0 + rng.normal(0, 10.0, n)
    # Few counts per pixel: many equal values, so plateaus and tied bases against real scipy.
    out["counts_low"] = rng.poisson(2.0 + 6.0 * gauss(512.0, 40.0) + 3.0 * gauss(200.0, 10.0)).astype(np.float64)
    return axis, {k: v.astype(np.float32).astype(np.float64) for k, v in out.items()}


def fmt(v):
    return repr(float(v))


def main():
    axis, spectra = synthetic()
    scope_x, scope_y = read_scope(HERE / "ocean_optics_usb2000_tsunami.scope")
    jasco_x, jasco_y = read_jasco(HERE / "jasco_v570_pbse_qd_absorbance.txt")

    with open(HERE / "reference_spectra.csv", "w") as f:
        f.write("axis," + ",".join(fmt(v) for v in axis) + "\n")
        for name, y in spectra.items():
            f.write(name + "," + ",".join(fmt(v) for v in y) + "\n")

    cases, peaks_rows, pl_rows = [], [], []
    # counts_low gets thresholds of a few counts so that both the walk path (few candidates)
    # and the stack path (many) meet tied values.
    sets = [(name, y, axis, [1.0, 3.0, 6.0, 8.0] if name == "counts_low" else PROMINENCES) for name, y in spectra.items()]
    sets.append(("scope", scope_y, scope_x, [5.0, 50.0]))
    for name, y, x, proms in sets:
        for p in proms:
            pk, props = find_peaks(y, prominence=p)
            prom = peak_prominences(y, pk)
            w = peak_widths(y, pk, rel_height=0.5, prominence_data=prom)
            cases.append(f"{name},{fmt(p)},{len(pk)}")
            for k in range(len(pk)):
                peaks_rows.append(
                    ",".join(
                        [name, fmt(p), str(pk[k]), fmt(y[pk[k]]), fmt(prom[0][k]), str(prom[1][k]), str(prom[2][k])]
                        + [fmt(w[j][k]) for j in range(4)]
                    )
                )
            if len(pk):
                # main peak: most prominent, ties -> higher, then first
                order = sorted(range(len(pk)), key=lambda k: (-prom[0][k], -y[pk[k]], pk[k]))
                m = order[0]
                px = np.arange(len(x), dtype=np.float64)
                left_nm = np.interp(w[2][m], px, x)
                right_nm = np.interp(w[3][m], px, x)
                pl_rows.append(f"{name},{fmt(p)},{pk[m]},{fmt(abs(right_nm - left_nm))},{fmt(left_nm)},{fmt(right_nm)}")

    (HERE / "reference_cases.csv").write_text("\n".join(cases) + "\n")
    (HERE / "reference_peaks.csv").write_text("\n".join(peaks_rows) + "\n")
    (HERE / "reference_pl.csv").write_text("\n".join(pl_rows) + "\n")

    with open(HERE / "reference_savgol.csv", "w") as f:
        for name in ["gauss_noise", "voigt_two"]:
            for window, order in [(11, 3), (21, 2), (5, 4)]:
                s = savgol_filter(spectra[name], window, order)
                f.write(f"{name},{window},{order}," + ",".join(fmt(v) for v in s) + "\n")

    try:
        from pybaselines.whittaker import asls
    except ImportError:  # keep the rest usable without pybaselines
        asls = None
    if asls is not None:
        with open(HERE / "reference_asls.csv", "w") as f:
            for name, lam, p in [("lorentz_slope", 1e5, 0.01), ("voigt_two", 1e6, 0.001), ("gauss_noise", 1e4, 0.05)]:
                base, _ = asls(spectra[name], lam=lam, p=p)
                f.write(f"{name},{fmt(lam)},{fmt(p)}," + ",".join(fmt(v) for v in base) + "\n")

    with open(HERE / "reference_exciton.csv", "w") as f:
        for p, sg in [(0.02, None), (0.05, None), (0.02, (11, 3))]:
            y = jasco_y if sg is None else savgol_filter(jasco_y, sg[0], sg[1])
            pk, props = find_peaks(y, prominence=p)
            # longest wavelength: the JASCO axis is descending, so the smallest index
            k = int(np.argmax(jasco_x[pk]))
            w, o = sg if sg else (0, 0)
            f.write(
                f"jasco,{fmt(p)},{w},{o},{pk[k]},{fmt(jasco_x[pk[k]])},{fmt(y[pk[k]])},{fmt(props['prominences'][k])}\n"
            )
    print("scipy", scipy.__version__, "->", HERE)


if __name__ == "__main__":
    main()
