"""What the dashboard costs a browser at a given ingest rate.

Starts `flowdaq demo --linger --rate R` (simulated spectrometer, phase sensors and TCSPC card
over real ZeroMQ), opens the dashboard in Debian's headless Chromium through Playwright, lets it
follow the run for a while, and reports, over the measured span: feature events the page
received per second, redraws per second, events it missed (lagged), the share of the page's main
thread spent in tasks and in script (Chrome DevTools Performance metrics), its JS heap, how far
the newest spectrum drawn is behind the newest one the server holds, and the server's ingest
rate.

    ~/.cache/flowdaq-venv/bin/python benches/peers/dashboard_load.py --flowdaq <release binary> --rate 1000
"""

import argparse
import json
import re
import signal
import subprocess
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def metrics(cdp):
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def page_state(page):
    return page.evaluate("({events: window.flowdaq.state.eventsReceived, redraws: window.flowdaq.state.redraws, "
                         "lagged: window.flowdaq.state.lagged, errors: window.flowdaq.state.errors.length, "
                         "spectrum_seq: window.flowdaq.state.spectrum ? window.flowdaq.state.spectrum.seq : null})")


def server_json(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowdaq", required=True, help="the flowdaq binary (a release build)")
    parser.add_argument("--rate", type=float, default=1000.0, help="spectra per second")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        demo = subprocess.Popen([args.flowdaq, "demo", "--linger", "--rate", str(args.rate), "--duration", "40",
                                 "--data-dir", data_dir], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = None
            for _ in range(20):
                match = re.search(r"dashboard (http://\S+)/", demo.stdout.readline())
                if match:
                    base = match.group(1)
                    break
            if base is None:
                raise SystemExit("flowdaq demo printed no dashboard URL")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                page.goto(base + "/")
                page.wait_for_timeout(args.warmup * 1000)
                m0, s0, t0 = metrics(cdp), page_state(page), time.monotonic()
                received0 = server_json(base, "/metrics/json")["messages_received"]
                page.wait_for_timeout(args.seconds * 1000)
                m1, s1, t1 = metrics(cdp), page_state(page), time.monotonic()
                server = server_json(base, "/metrics/json")
                span = t1 - t0
                behind = server["sources"]["spectrometer-1"]["last_seq"] - (s1["spectrum_seq"] or 0)
                print(f"rate asked {args.rate:.0f} spectra/s, measured over {span:.1f} s after {args.warmup:.0f} s")
                print(f"server: {(server['messages_received'] - received0) / span:.0f} messages/s received")
                print(f"page: {(s1['events'] - s0['events']) / span:.1f} feature events/s, "
                      f"{(s1['redraws'] - s0['redraws']) / span:.2f} redraws/s, {s1['lagged']} events missed, "
                      f"{s1['errors']} errors")
                print(f"page main thread: tasks {100 * (m1['TaskDuration'] - m0['TaskDuration']) / span:.1f} %, "
                      f"script {100 * (m1['ScriptDuration'] - m0['ScriptDuration']) / span:.1f} %, "
                      f"layout {100 * (m1['LayoutDuration'] - m0['LayoutDuration']) / span:.1f} %")
                print(f"page JS heap: {m1['JSHeapUsedSize'] / 2**20:.1f} MiB used")
                print(f"newest spectrum drawn: {behind} messages behind the newest the server holds")
                browser.close()
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=120)
            except subprocess.TimeoutExpired:
                demo.kill()


if __name__ == "__main__":
    main()
