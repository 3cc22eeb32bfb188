"""The flowdaq TCSPC reconvolution model in NumPy, term for term as analytics/src/tcspc/fit/model.rs.

Used by make_reference.py (lmfit reference fits) and benches/peers/tcspc_peers.py (lmfit timing),
so both fit exactly the model the Rust fitter fits: a bin-constant IRF convolved with continuous
exponentials integrated over each bin (closed form), plus the tails of earlier pulses.
"""
import numpy as np
from scipy.signal import lfilter
from scipy.special import erfc

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def gaussian_irf(n, sigma_bins, center_bins):
    """Gaussian of `sigma_bins` centred at `center_bins`, integrated over bins [k, k+1)."""
    j = np.arange(n, dtype=float)
    a = (j - center_bins) / sigma_bins
    b = a + 1.0 / sigma_bins
    s = 1.0 / np.sqrt(2.0)
    right = 0.5 * (erfc(a * s) - erfc(b * s))
    left = 0.5 * (erfc(-b * s) - erfc(-a * s))
    mid = 1.0 - 0.5 * (erfc(b * s) + erfc(-a * s))
    return np.where(a >= 0, right, np.where(b <= 0, left, mid))


def shift_measured(irf, shift):
    """Measured (unit-sum) IRF shifted right by `shift` bins with linear interpolation."""
    n = len(irf)
    whole = np.floor(shift)
    f = shift - whole
    src = np.arange(n) - int(whole)

    def at(idx):
        out = np.zeros(n)
        ok = (idx >= 0) & (idx < n)
        out[ok] = irf[idx[ok]]
        return out

    return (1.0 - f) * at(src) + f * at(src - 1)


def exp_conv(irf, tau, period=None):
    """Expected counts per bin of exp(-t/tau) (amplitude 1 per bin at t=0) convolved with irf."""
    n = len(irf)
    tau = max(tau, 0.02)
    q = 1.0 / tau
    e = np.exp(-q)
    ome = -np.expm1(-q)
    k0 = tau * tau * (q + np.expm1(-q))
    k1 = tau * tau * ome * ome
    acc = lfilter([0.0, 1.0], [1.0, -e], irf)  # A_k = sum_{j<k} irf_j e^(k-1-j)
    if period is None:
        return irf * k0 + k1 * acc
    p = max(period, n)
    s = k1 / (-np.expm1(-p * q))
    g = np.exp(q)
    w = np.exp(-(p - 1.0) * q)
    back = lfilter([w], [1.0, -g], irf[::-1])[::-1]  # C_k = w irf_k + g C_{k+1}
    return irf * k0 + s * (acc + back)


def oversample_factor(sigma_bins):
    """Sub-bins per bin for a Gaussian IRF: ceil(2 / sigma), 1 to 16 (as the Rust fitter)."""
    return int(min(max(np.ceil(2.0 / sigma_bins), 1), 16))


def model(n, irf_kind, irf, taus, amps, background, shift, period=None):
    """Full model: irf_kind 'gaussian' (irf = (sigma_bins, center_bins)) or 'measured' (unit sum).

    A Gaussian IRF narrower than 2 bins is evaluated on ceil(2 / sigma) sub-bins per bin and the
    sub-bins averaged back, since the IRF is not constant within a bin then.
    """
    s = 1
    if irf_kind == "gaussian":
        sigma, center = irf
        s = oversample_factor(sigma)
        r = gaussian_irf(n * s, sigma * s, (center + shift) * s)
    else:
        r = shift_measured(irf, shift)
    out = np.full(n, float(background))
    p = None if period is None else max(period, n) * s
    for t, a in zip(taus, amps):
        c = exp_conv(r, t * s, p)
        out += a * c.reshape(n, s).mean(axis=1)
    return out


def residuals(y, m, statistic, lo=0, hi=None):
    """Neyman residuals or signed square roots of the Poisson deviance terms."""
    y = y[lo:hi]
    m = m[lo:hi]
    if statistic == "neyman":
        return (y - m) / np.sqrt(np.maximum(y, 1.0))
    m = np.maximum(m, 1e-10)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.where(y > 0, 2.0 * (m - y + y * np.log(np.where(y > 0, y, 1.0) / m)), 2.0 * m)
    return np.sign(y - m) * np.sqrt(np.maximum(dev, 0.0))


def make_lmfit_params(case, start):
    """lmfit Parameters a_i, tau_i (bins), b, shift (bins) from a dict of start values."""
    import lmfit

    p = lmfit.Parameters()
    for i, (t, a) in enumerate(zip(start["tau_bins"], start["amp"])):
        p.add(f"a{i}", value=a)
        p.add(f"tau{i}", value=t)
    p.add("b", value=start["background"], vary=case.get("fit_background", True))
    p.add("shift", value=start["shift_bins"], vary=case.get("fit_shift", True))
    return p


def lmfit_residual(params, y, case):
    n = len(y)
    k = case["components"]
    taus = [params[f"tau{i}"].value for i in range(k)]
    amps = [params[f"a{i}"].value for i in range(k)]
    m = model(n, case["irf_kind"], case["irf_model"], taus, amps, params["b"].value, params["shift"].value, case.get("period_bins"))
    lo, hi = case.get("fit_range", (0, n))
    return residuals(y, m, case["statistic"], lo, hi)
