"""`flowdaq plot` draws its four pictures from what a real server stored: spectra of three
conditions and fitted TCSPC histograms sent with pyzmq. Each SVG is parsed and checked against
the rows it draws (points per series, the peak, the lifetime), and the same picture drawn from
the server and from the data directory after the server stopped is the same file."""

import re
import subprocess
import xml.etree.ElementTree as ElementTree

import numpy as np
import zmq

from conftest import flowdaq_bin
from flowdaq.wire import histogram_frames, spectrum_frames

SVG = "{http://www.w3.org/2000/svg}"
BLUE = "#0072B2"  # the first series colour of every picture
AXIS_NM = np.linspace(400.0, 700.0, 256)
PEAKS_NM = {"c-0": 500.0, "c-1": 520.0, "c-2": 540.0}
SIGMA_NM = 10.0
TAU_NS, BINS, BIN_PS, SYNC_HZ = 4.0, 1000, 40.0, 20e6


def decay_counts(rng, photons=300_000):
    period_ns = 1e9 / SYNC_HZ
    t = (rng.normal(3.0, 0.2 / 2.3548, photons) + rng.exponential(TAU_NS, photons)) % period_ns
    bins = (t / (BIN_PS * 1e-3)).astype(int)
    return np.bincount(bins[bins < BINS], minlength=BINS).astype(np.uint32)


def plot(*args):
    result = subprocess.run([flowdaq_bin(), "plot", *args], capture_output=True, text=True, timeout=120)
    return result


def drawn(path):
    """The SVG's circles (fill colours), polylines (point counts) and texts."""
    root = ElementTree.parse(path).getroot()
    circles = [c.get("fill") for c in root.iter(f"{SVG}circle")]
    polylines = [len(p.get("points").split()) for p in root.iter(f"{SVG}polyline")]
    texts = [" ".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]
    return circles, polylines, texts


def number_after(texts, prefix):
    for text in texts:
        match = re.search(re.escape(prefix) + r"\s*([0-9.]+)", text)
        if match:
            return float(match.group(1))
    raise AssertionError(f"no {prefix!r} in {texts}")


def test_the_four_pictures_from_a_server_and_from_its_data_directory(server_factory, tmp_path):
    server = server_factory().start()
    rng = np.random.default_rng(5)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    seq = 0
    for condition, peak in PEAKS_NM.items():
        for _ in range(4):
            counts = (1000.0 * np.exp(-0.5 * ((AXIS_NM - peak) / SIGMA_NM) ** 2) + 20.0).astype("<f4")
            push.send_multipart(spectrum_frames("spec-1", seq, AXIS_NM, counts, run_id="plots",
                                                condition_id=condition))
            seq += 1
    for hist_seq in range(3):
        push.send_multipart(histogram_frames("hist-1", hist_seq, decay_counts(rng), BIN_PS, SYNC_HZ,
                                             run_id="plots"))
    server.wait_processed(seq + 3)
    push.close(linger=0)
    context.term()

    pictures = {
        "spectrum": ["--source", "spec-1"],
        "decay": ["--source", "hist-1"],
        "phasor": [],
        "trend": ["--run-id", "plots"],
    }
    from_server = {}
    for kind, extra in pictures.items():
        path = tmp_path / f"server-{kind}.svg"
        result = plot(kind, "--server", server.http, "-o", str(path), *extra)
        assert result.returncode == 0, result.stderr
        from_server[kind] = path

    circles, polylines, texts = drawn(from_server["spectrum"])
    assert max(polylines) == len(AXIS_NM)
    assert abs(number_after(texts, "peak") - PEAKS_NM["c-2"]) < 0.5, texts  # the newest spectrum
    assert abs(number_after(texts, "FWHM") - 2.3548 * SIGMA_NM) < 0.5, texts

    circles, polylines, texts = drawn(from_server["decay"])
    tau = number_after(texts, "tau")
    assert abs(tau - TAU_NS) / TAU_NS < 0.02, texts
    newest = server.sql_arrow(
        "SELECT counts FROM tcspc_histograms WHERE source = 'hist-1' ORDER BY seq DESC LIMIT 1").to_pylist()
    nonzero = sum(1 for c in newest[0]["counts"] if c > 0)
    assert circles.count(BLUE) == nonzero + 1  # one per counted bin, one in the legend
    assert max(polylines) > BINS * 0.5  # the fitted curve

    circles, _, _ = drawn(from_server["phasor"])
    phasors = server.sql_arrow("SELECT count(*) AS n FROM lifetime_features WHERE phasor_g IS NOT NULL")
    assert circles.count(BLUE) == phasors.to_pylist()[0]["n"] + 1
    assert phasors.to_pylist()[0]["n"] == 3

    circles, _, texts = drawn(from_server["trend"])
    assert len(circles) == seq + len(PEAKS_NM)  # every value, and a legend mark per condition
    assert len(set(circles)) == len(PEAKS_NM)
    assert all(any(condition in t for t in texts) for condition in PEAKS_NM)

    missing = plot("spectrum", "--server", server.http, "--source", "nope", "-o", str(tmp_path / "x.svg"))
    assert missing.returncode != 0 and "no spectrum matches" in missing.stderr

    server.stop()
    for kind, extra in pictures.items():
        path = tmp_path / f"dir-{kind}.svg"
        result = plot(kind, "--data-dir", str(server.data_dir), "-o", str(path), *extra)
        assert result.returncode == 0, result.stderr
        assert path.read_bytes() == from_server[kind].read_bytes(), kind
