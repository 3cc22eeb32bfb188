"""TCSPC histograms sent as histograms by pyzmq (the flowdaq package's
`histogram_frames`) to a real `flowdaq serve`, fitted by the server, against scipy fitting the same
counts over the same bins with the same model: a Gaussian IRF convolved with an exponential,
periodic over the sync period, plus a constant background, by Poisson maximum likelihood.

The decay is drawn photon by photon (seeded), and the converter records 512 of the period's 782
bins, so the server's default fit range must find where the data ends.
"""

import numpy as np
from scipy.optimize import minimize
from scipy.special import erfc

from flowdaq.wire import histogram_frames

BINS, RECORDED = 782, 512
SYNC_RATE_HZ = 20e6
PERIOD_NS = 1e9 / SYNC_RATE_HZ
BIN_NS = PERIOD_NS / BINS
FWHM_NS = 0.2
TAU_NS, CENTER_NS = 4.0, 3.0


def simulated_counts(rng, photons=200_000, background=0.01):
    sigma = FWHM_NS / 2.354820045
    decay = rng.normal(CENTER_NS, sigma, photons) + rng.exponential(TAU_NS, photons)
    flat = rng.uniform(0, PERIOD_NS, int(photons * background))
    t = np.concatenate([decay, flat]) % PERIOD_NS
    bins = (t / BIN_NS).astype(int)
    counts = np.bincount(bins[bins < RECORDED], minlength=BINS)
    return counts.astype(np.uint32)


def scipy_fit(counts):
    """Poisson MLE of amplitude, lifetime, IRF centre and background over the recorded bins, the
    model integrated over each bin (ex-Gaussian CDF differences, four earlier pulses folded in)."""
    sigma = FWHM_NS / 2.354820045
    edges = np.arange(BINS + 1) * BIN_NS

    def exgauss_cdf(t, tau, mu):
        z = (t - mu) / sigma
        gauss = 0.5 * erfc(-z / np.sqrt(2))
        arg = sigma**2 / (2 * tau**2) - (t - mu) / tau
        tail = np.exp(np.minimum(arg, 700)) * 0.5 * erfc(-(z - sigma / tau) / np.sqrt(2))
        return gauss - tail

    def model(p):
        amplitude, tau, mu, background = p
        per_bin = np.zeros(BINS)
        for k in range(5):
            cdf = exgauss_cdf(edges + k * PERIOD_NS, tau, mu)
            per_bin += np.diff(cdf)
        return amplitude * per_bin + background

    y = counts[:RECORDED].astype(float)

    def deviance(p):
        m = np.maximum(model(p)[:RECORDED], 1e-12)
        return 2 * np.sum(m - y + np.where(y > 0, y * np.log(np.maximum(y, 1) / m), 0))

    start = [y.sum(), 3.0, 2.8, max(y[-20:].mean(), 0.1)]
    result = minimize(deviance, start, method="Nelder-Mead",
                      options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20000, "maxfev": 40000})
    assert result.success, result
    return result.x


def test_histogram_messages_fit_as_scipy_fits_the_same_counts(server_factory):
    import zmq

    rng = np.random.default_rng(7)
    histograms = [simulated_counts(rng) for _ in range(3)]
    server = server_factory().start()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    for seq, counts in enumerate(histograms):
        push.send_multipart(histogram_frames("hist-py", seq, counts, BIN_NS * 1e3, SYNC_RATE_HZ,
                                             acquisition_time_s=1.0))
    server.wait_processed(len(histograms))
    push.close(linger=0)
    context.term()

    rows = server.sql_arrow(
        "SELECT seq, tau_1_ns, background_counts, fit_range_end_ns, fit_flags, converged "
        "FROM lifetime_features WHERE source = 'hist-py' ORDER BY seq"
    ).to_pylist()
    assert [r["seq"] for r in rows] == [0, 1, 2], rows
    for row, counts in zip(rows, histograms):
        amplitude, tau, mu, background = scipy_fit(counts)
        assert row["converged"] and row["fit_flags"] == 0, row
        # The fit ends where the data does: the recorded bins, less any empty by chance at the end.
        end_bin = round(row["fit_range_end_ns"] / BIN_NS)
        assert end_bin <= RECORDED and counts[end_bin - 1] > 0 and not counts[end_bin:].any(), row
        # Same data, same model, same statistic: the same lifetime to well within its error.
        assert abs(row["tau_1_ns"] / tau - 1) < 2e-3, (row, tau)
        assert abs(row["tau_1_ns"] / TAU_NS - 1) < 0.01, row
        assert abs(row["background_counts"] - background) < 0.05 * max(background, 1), (row, background)
