"""The live dashboard in a real browser: Debian's headless Chromium, driven by Playwright,
against a real server fed by the simulated instruments (`flowdaq demo --linger`) and by pyzmq.

The page must load with no console errors and no request beyond the server; each panel must
draw the rows SQL holds (the same spectrum, decay and model curve, every feature row of its
range once); a new condition must appear within 2 s; a token-guarded server must ask the page
for its token. A screenshot of each page is saved."""

import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import zmq
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from conftest import flowdaq_bin
from flowdaq.wire import spectrum_frames

CHROMIUM = "/usr/bin/chromium"
# Chromium as root in a closed network: no sandbox, nothing fetched in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The simulated TCSPC card's lifetime per condition (SimulatedTcspcHistogramConfig's default).
LIFETIMES_NS = [6.0, 8.5, 11.0, 7.0]


def artifacts_dir(tmp_path):
    path = Path(os.environ.get("FLOWDAQ_ARTIFACTS", tmp_path))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (scripts/test-all.sh does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A dashboard page with its console errors and every URL it requested."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1600})
        self.errors = []
        self.requests = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)

    def state(self, expression):
        return self.page.evaluate(f"JSON.parse(JSON.stringify({expression}))")

    def wait(self, expression, what, timeout_ms=60_000):
        """Polls `expression` in the page until it is true, for at most `timeout_ms`.
        (Playwright's wait_for_function evaluates a string, which the page's CSP forbids.)
        While the page (re)loads, its script is not there yet: that is "not yet"."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            try:
                if self.page.evaluate(f"Boolean(window.flowdaq && ({expression}))"):
                    return
            except PlaywrightError as err:
                if "navigat" not in str(err) and "undefined" not in str(err):
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the page did not show {what} within {timeout_ms} ms (errors: {self.errors}; page: "
                    + json.dumps(self.state("window.flowdaq && {run: window.flowdaq.state.run, loaded: "
                                            "window.flowdaq.state.loaded, spectral: window.flowdaq.state.spectral.length, "
                                            "pending: window.flowdaq.state.pending.length, drawn: window.flowdaq.state.drawn, "
                                            "errors: window.flowdaq.state.errors}")) + ")")
            self.page.wait_for_timeout(20)

    def screenshot(self, path):
        png = self.page.screenshot(path=str(path), full_page=True)
        image = Image.open(io.BytesIO(png)).convert("RGB")
        colours = len(image.resize((350, 400)).getcolors(maxcolors=1 << 20))
        assert image.size[0] >= 1000 and image.size[1] >= 1000, image.size
        assert colours > 50, f"the screenshot looks blank ({colours} colours)"
        return image


def non_blank_pixels(page, selector):
    """Pixels of a panel's canvases that differ from white: proof the panel drew."""
    return page.page.evaluate(
        """(selector) => {
            let n = 0;
            for (const canvas of document.querySelectorAll(selector + ' canvas')) {
                const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                for (let i = 0; i < data.length; i += 4) {
                    if (data[i + 3] > 0 && (data[i] < 240 || data[i + 1] < 240 || data[i + 2] < 240)) n++;
                }
            }
            return n;
        }""", selector)


def sql(base, query, token=None):
    import urllib.request
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base + "/sql?format=json", data=query.encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start_demo(tmp_path, *args):
    process = subprocess.Popen(
        [flowdaq_bin(), "demo", "--linger", "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(20):
        line = process.stdout.readline()
        match = re.search(r"dashboard (http://\S+)/", line)
        if match:
            return process, match.group(1)
        if not line:
            break
    process.kill()
    raise AssertionError(f"flowdaq demo printed no dashboard URL: {process.stderr.read()}")


def rows_by_seq(rows):
    return {(r["source"], r["stream_seq"]): r for r in rows}


def test_demo_linger_serves_a_dashboard_that_draws_what_sql_holds(browser, tmp_path):
    # Conditions change every 2 s (duration / 4) and keep coming until interrupted.
    demo, base = start_demo(tmp_path, "--duration", "8", "--rate", "200")
    try:
        page = Page(browser, base + "/")
        page.wait("(() => { const d = window.flowdaq.state.drawn; return d.spectrum > 0 && d.decay > 0 && "
                  "d.model > 0 && d.phasor > 0 && d['panel-trends:peak_energy_ev'] > 0 && "
                  "d['panel-flow:velocity_mm_per_s'] > 0 && d['panel-flow:reaction_time_s'] > 0; })()",
                  "every panel drawn")
        run = page.state("window.flowdaq.state.run")
        assert run.startswith("demo-")

        # A new condition appears within 2 s of SQL first showing it.
        seen = {r["condition_id"] for r in sql(base, f"SELECT DISTINCT condition_id FROM spectral_features WHERE run_id = '{run}'")}
        deadline = time.monotonic() + 30
        new = None
        while new is None and time.monotonic() < deadline:
            now = {r["condition_id"] for r in sql(base, f"SELECT DISTINCT condition_id FROM spectral_features WHERE run_id = '{run}'")}
            fresh = sorted(now - seen)
            new = fresh[0] if fresh else None
        assert new is not None, f"no new condition within 30 s (seen {sorted(seen)})"
        page.wait(f"document.querySelector('#panel-conditions tr[data-condition=\"{new}\"]') !== null",
                  f"the new condition {new}", timeout_ms=2000)

        # Pause the page (live rows wait) and compare each panel, as last drawn, with SQL.
        page.page.click("#pause-button")
        redraws = page.state("window.flowdaq.state.redraws")
        page.wait(f"window.flowdaq.state.redraws >= {redraws + 2}", "a redraw after pausing")
        snapshot = page.state("{spectrum: window.flowdaq.state.spectrum, decay: window.flowdaq.state.decay, "
                              "spectral: window.flowdaq.state.spectral, flow: window.flowdaq.state.flow, "
                              "lifetimes: window.flowdaq.state.lifetimes, drawn: window.flowdaq.state.drawn}")

        s = snapshot["spectrum"]
        stored = sql(base, "SELECT s.intensity_counts, c.wavelength_nm FROM spectra s JOIN spectral_calibrations c "
                           "ON c.source = s.source AND c.calibration_id = s.calibration_id "
                           f"WHERE s.source = '{s['source']}' AND s.run_id = '{run}' AND s.seq = {s['seq']} "
                           f"AND s.spectrum_index = {s['spectrum_index']}")
        assert len(stored) == 1
        assert s["intensity_counts"] == stored[0]["intensity_counts"]
        assert s["wavelength_nm"] == stored[0]["wavelength_nm"]
        assert snapshot["drawn"]["spectrum"] == len(s["intensity_counts"])
        feature = sql(base, f"SELECT peak_wavelength_nm, fwhm_nm FROM spectral_features WHERE source = '{s['source']}' "
                            f"AND run_id = '{run}' AND seq = {s['seq']} AND spectrum_index = {s['spectrum_index']}")[0]
        assert s["peak_wavelength_nm"] == feature["peak_wavelength_nm"]
        assert s["fwhm_nm"] == feature["fwhm_nm"]

        d = snapshot["decay"]
        model = sql(base, "SELECT h.counts, lifetime_model_counts(h.counts, h.irf_counts, h.bin_width_ps, h.sync_rate_hz, "
                          "f.components, f.tau_1_ns, f.tau_2_ns, f.tau_3_ns, f.amplitude_1_counts, f.amplitude_2_counts, "
                          "f.amplitude_3_counts, f.background_counts, f.shift_ns, f.irf_fwhm_ps) AS model, f.tau_1_ns "
                          "FROM tcspc_histograms h JOIN lifetime_features f ON f.source = h.source AND f.run_id = h.run_id "
                          "AND f.seq = h.seq AND f.channel = h.channel AND f.window_start_ps = h.window_start_ps "
                          f"WHERE h.source = '{d['source']}' AND h.run_id = '{run}' AND h.seq = {d['seq']} "
                          f"AND h.channel = {d['channel']}")
        assert len(model) == 1
        assert d["counts"] == model[0]["counts"]
        assert d["model_counts"] == model[0]["model"]
        assert snapshot["drawn"]["model"] == len(d["model_counts"])
        # Ground truth: the simulated card's lifetime for the decay's condition.
        truth = LIFETIMES_NS[int(d["condition_id"].split("-")[1]) % len(LIFETIMES_NS)]
        assert abs(d["tau_1_ns"] - truth) / truth < 0.03, (d["tau_1_ns"], truth)
        # The model follows the data where the data is well above noise.
        counts, curve = np.array(d["counts"], float), np.array(d["model_counts"], float)
        strong = counts > 200
        assert np.all(np.abs(counts[strong] - curve[strong]) < 6 * np.sqrt(curve[strong]))

        # Every feature row of the page's range, once, with SQL's values.
        for table, rows, columns in [
            ("spectral_features", snapshot["spectral"], ["peak_energy_ev", "fwhm_ev", "reaction_time_s", "condition_id"]),
            ("flow_features", snapshot["flow"], ["velocity_mm_per_s", "condition_id"]),
            ("lifetime_features", snapshot["lifetimes"], ["phasor_g", "phasor_s", "tau_1_ns", "condition_id"]),
        ]:
            assert rows, f"the page holds no {table} rows"
            keys = [(r["source"], r["stream_seq"]) for r in rows]
            assert len(keys) == len(set(keys)), f"{table}: a row shown twice"
            for source in {r["source"] for r in rows}:
                seqs = [r["stream_seq"] for r in rows if r["source"] == source]
                expected = sql(base, f"SELECT * FROM {table} WHERE run_id = '{run}' AND source = '{source}' "
                                     f"AND stream_seq BETWEEN {min(seqs)} AND {max(seqs)} ORDER BY stream_seq")
                assert [r["stream_seq"] for r in expected] == sorted(seqs), f"{table}/{source}: rows missing"
                mine = rows_by_seq(rows)
                for row in expected:
                    shown = mine[(source, row["stream_seq"])]
                    for column in columns:
                        # Arrow's JSON leaves out null values.
                        assert shown.get(column) == row.get(column), (table, column, shown.get(column), row.get(column))
        # What the plots drew is what the page holds.
        pl = [r for r in snapshot["spectral"] if r["kind"] == "pl" and r.get("peak_energy_ev") is not None]
        assert snapshot["drawn"]["panel-trends:peak_energy_ev"] == len(pl)
        phasors = [r for r in snapshot["lifetimes"] if r.get("phasor_g") is not None and r.get("phasor_s") is not None]
        assert snapshot["drawn"]["phasor"] == len(phasors)

        # The conditions table lists every condition SQL knows, with its spectra count.
        counts = sql(base, f"SELECT condition_id, count(*) AS n FROM spectral_features WHERE run_id = '{run}' "
                           "GROUP BY condition_id")
        page.page.click("#pause-button")
        for row in counts:
            page.wait(f"document.querySelector('#panel-conditions tr[data-condition=\"{row['condition_id']}\"]') !== null",
                      f"condition {row['condition_id']}", timeout_ms=5000)

        # Ingest health: the demo's three malformed frames, with SQL's reasons.
        rejected = sql(base, "SELECT reason FROM ingest_errors")
        assert len(rejected) == 3
        page.wait("document.querySelectorAll('#panel-health .rejected tbody tr').length === 3", "3 rejected frames")
        shown = page.page.eval_on_selector_all("#panel-health .rejected tbody tr td:last-child", "tds => tds.map(t => t.textContent)")
        assert sorted(shown) == sorted(r["reason"] for r in rejected)

        for panel in ["#panel-spectrum", "#panel-trends", "#panel-decay", "#panel-phasor", "#panel-flow"]:
            assert non_blank_pixels(page, panel) > 500, f"{panel} drew nothing"
        page.screenshot(artifacts_dir(tmp_path) / "dashboard.png")
        assert page.errors == [], page.errors
        origin = urlparse(base).netloc
        outside = [u for u in page.requests if urlparse(u).netloc != origin and not u.startswith("data:")]
        assert outside == [], f"the page reached beyond the server: {outside}"
        page.page.close()
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=120)
    assert demo.returncode == 0, err
    assert "All rows persisted to Parquet" in out


TOKEN = "dashboard-test-token"


def test_a_token_guarded_server_asks_the_page_for_its_token(browser, server_factory, tmp_path):
    server = server_factory(extra_config=f'[auth]\ntokens = ["{TOKEN}"]\n', token=TOKEN).start()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    axis = np.linspace(400.0, 700.0, 512)
    rng = np.random.default_rng(3)

    def send(seq, condition, peak_nm, run_id="run-token"):
        counts = 50 + 20_000 * np.exp(-0.5 * ((axis - peak_nm) / 12.0) ** 2) + rng.normal(0, 5, axis.size)
        push.send_multipart(spectrum_frames("spec-a", seq, axis, counts, run_id=run_id,
                                            condition_id=condition, instrument_time_ns=time.time_ns()))

    try:
        for seq in range(20):
            send(seq, "c-0", 500.0)
        server.wait_processed(20)

        # Without the token the page shows no data and asks for one.
        anonymous = Page(browser, server.http + "/")
        anonymous.wait("!document.getElementById('token-form').hidden", "the token form")
        assert anonymous.state("window.flowdaq.state.spectral.length") == 0
        assert all("401" in e for e in anonymous.errors), anonymous.errors
        # Typing it in connects.
        anonymous.page.fill("#token-input", TOKEN)
        anonymous.page.click("#token-form button")
        anonymous.wait("window.flowdaq.state.drawn.spectrum > 0", "the spectrum after the token was given")
        anonymous.page.close()

        # A token in the URL's fragment (never sent to the server) is taken and removed from the URL.
        page = Page(browser, server.http + f"/#token={TOKEN}")
        page.wait("window.flowdaq.state.drawn.spectrum > 0 && window.flowdaq.state.drawn['panel-trends:peak_energy_ev'] === 20",
                  "the 20 spectra")
        assert TOKEN not in page.page.url
        assert page.state("window.flowdaq.state.spectrum.seq") == 19
        # A new condition appears within 2 s of its spectrum being processed.
        send(20, "c-1", 540.0)
        server.wait_processed(21)
        page.wait("document.querySelector('#panel-conditions tr[data-condition=\"c-1\"]') !== null", "condition c-1",
                  timeout_ms=2000)
        page.wait("window.flowdaq.state.spectrum.seq === 20", "the newest spectrum", timeout_ms=5000)
        peak = page.state("window.flowdaq.state.spectrum.peak_wavelength_nm")
        assert abs(peak - 540.0) < 1.0, peak
        # A second run appears in the run selector; choosing it shows its rows only.
        # The source's seq goes on counting across runs (a repeated seq is a duplicate).
        for seq in range(21, 26):
            send(seq, "c-9", 600.0, run_id="run-two")
        server.wait_processed(26)
        page.wait("Array.from(document.querySelectorAll('#run-select option')).some(o => o.value === 'run-two')",
                  "the second run in the selector", timeout_ms=5000)
        page.page.select_option("#run-select", "run-two")
        page.wait("window.flowdaq.state.spectrum && window.flowdaq.state.spectrum.run_id === 'run-two' && "
                  "window.flowdaq.state.drawn['panel-trends:peak_energy_ev'] === 5", "the second run's rows")
        assert page.state("window.flowdaq.state.spectral.map(r => r.run_id)") == ["run-two"] * 5
        page.screenshot(artifacts_dir(tmp_path) / "dashboard-token.png")
        assert page.errors == [], page.errors
    finally:
        push.close(0)
        context.term()
