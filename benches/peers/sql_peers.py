#!/usr/bin/env python3
"""Peer benchmark: flowdaq's SQL doors against DuckDB in-process, on the same Parquet files.

Why: docs/performance.md answers "how much slower is a query through flowdaq than DuckDB on its
Parquet files?" with these figures. One run:
  1. a fresh `flowdaq serve` (loopback, ephemeral ports) takes --photons simulated photons as
     `photons` column messages over PUSH (20 MHz laser, 5 Mcps, micro time = 1 ns IRF with
     100 ps jitter + 3 ns decay, 4 channels; fixed seed); once /metrics/json counts them all
     processed, SIGTERM (all persisted to Parquet) and a restart on the same data directory;
  2. each query through duckdb (one connection, a view over read_parquet(<data>/tables/photons/
     **/*.parquet, hive_partitioning = false) made before timing), http (`POST /sql?format=
     arrow`, one kept-alive connection, pyarrow.ipc) and flight (Flight SQL through ADBC),
     each answer an Arrow table. count, group by channel and a 50 ps histogram must be equal
     everywhere, every time; the median micro time over the middle half of the macro times
     (approx_percentile_cont / DuckDB's approx_quantile) within 1 % of DuckDB's exact
     quantile_cont, and flowdaq's answers are checked for being identical;
  3. a warm-up round, then --pairs rounds with the engine order rotated: per query the median
     seconds per engine and the median of the per-round ratios flowdaq / duckdb;
  4. after the server stops: median wall time of 20 `flowdaq sql --data-dir DIR "SELECT 1"`.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/sql_peers.py [--photons 10500000] [--pairs 9]
      [--flowdaq BIN] [--data-root DIR] [--out results.json] [--keep]
Needs pyzmq numpy pyarrow duckdb adbc-driver-flightsql. --flowdaq defaults to
$CARGO_TARGET_DIR/release/flowdaq (CARGO_TARGET_DIR: ~/.cache/flowdaq-target); the data goes
under --data-root (default ~/.cache/flowdaq-bench, a real disk), removed unless --keep.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import numpy as np
import pyarrow as pa
from pyarrow import ipc
import zmq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))  # the flowdaq package, installed or not

from flowdaq.wire import header_frame  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest_peers  # noqa: E402  (its Server, Http and child-process clean-up)
from ingest_peers import _raise_exit, cleanup  # noqa: E402

SOURCE = "tcspc-0"
SEED = 20250611
PERIOD_PS = 50_000  # 20 MHz laser
PHOTONS_PER_PULSE = 0.25  # 5 Mcps
IRF_CENTER_PS, IRF_SIGMA_PS, LIFETIME_PS = 1_000.0, 100.0, 3_000.0
CHANNEL_WEIGHTS = [0.4, 0.3, 0.2, 0.1]
ENGINES = ("duckdb", "http", "flight")
PERCENTILE_TOLERANCE = 0.01  # of the exact median
STARTUP_RUNS = 20


class Server(ingest_peers.Server):
    """ingest_peers' `flowdaq serve` child (every port ephemeral, Flight SQL included), waiting
    on processed messages and stopped strictly."""

    def wait_processed(self, messages, timeout):
        """Poll /metrics/json (bounded) until `messages` messages are processed."""
        deadline = time.monotonic() + timeout
        while (done := json.loads(self.http.request("GET", "/metrics/json"))["messages_processed"]) < messages:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{done}/{messages} messages processed after {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout=300):
        """SIGTERM: the server drains and persists to Parquet; it must exit 0."""
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise RuntimeError(f"flowdaq serve did not stop within {timeout} s") from None
        if code != 0:
            raise RuntimeError(f"flowdaq serve exited {code} on SIGTERM: {self.log_tail()}")


def photon_columns(rng, n, first_pulse):
    """n photons after laser pulse `first_pulse`: macro_time_ps, micro_time_ps, channel, last pulse."""
    pulses = first_pulse + np.cumsum(rng.geometric(PHOTONS_PER_PULSE, n))
    micro = IRF_CENTER_PS + rng.normal(0.0, IRF_SIGMA_PS, n) + rng.exponential(LIFETIME_PS, n)
    micro = np.mod(micro, PERIOD_PS).astype("<i4")  # a late photon shows up in the next period
    channel = rng.choice(len(CHANNEL_WEIGHTS), n, p=CHANNEL_WEIGHTS).astype("u1")
    return (pulses * PERIOD_PS).astype("<i8"), micro, channel, int(pulses[-1])


def fill(server, photons, per_message, timeout):
    """Send `photons` photons over PUSH, wait until the server has processed them; messages sent."""
    rng = np.random.default_rng(SEED)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 60_000)
    push.connect(server.ready["pull"])
    seq = sent = pulse = 0
    try:
        while sent < photons:
            n = min(per_message, photons - sent)
            macro, micro, channel, pulse = photon_columns(rng, n, pulse)
            arrays = [("macro_time_ps", "<i8", (n,)), ("micro_time_ps", "<i4", (n,)), ("channel", "|u1", (n,))]
            try:
                push.send_multipart([header_frame(SOURCE, "photons", seq, arrays, {}),
                                     macro.tobytes(), micro.tobytes(), channel.tobytes()])
            except zmq.Again:
                raise RuntimeError(f"send of message {seq} blocked for 60 s: {server.log_tail()}") from None
            seq, sent = seq + 1, sent + n
        server.wait_processed(seq, timeout)
    finally:
        push.close(linger=0)
        context.term()
    return seq


def queries(lo, hi):
    """({name: {engine: sql}}, DuckDB's exact median): the percentile over [lo, hi) of macro times."""
    where = f"WHERE macro_time_ps >= {lo} AND macro_time_ps < {hi}"
    same = {
        "count": "SELECT count(*) FROM photons",
        "group_by_channel": "SELECT channel, count(*) AS n FROM photons GROUP BY channel ORDER BY channel",
        "histogram_50ps": "SELECT floor(micro_time_ps / 50) AS bin, count(*) AS n FROM photons GROUP BY bin "
                          "ORDER BY bin",
    }
    plan = {name: dict.fromkeys(ENGINES, sql) for name, sql in same.items()}
    ours = f"SELECT approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY micro_time_ps) AS p FROM photons {where}"
    plan["median_range"] = {"duckdb": f"SELECT approx_quantile(micro_time_ps, 0.5) AS p FROM photons {where}",
                            "http": ours, "flight": ours}
    return plan, f"SELECT quantile_cont(micro_time_ps, 0.5) FROM photons {where}"


def main():
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/flowdaq-target"))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowdaq", default=str(Path(target) / "release/flowdaq"), help="flowdaq binary")
    parser.add_argument("--photons", type=int, default=10_500_000, help="rows of photons (default 10.5 M)")
    parser.add_argument("--photons-per-message", type=int, default=262_144)
    parser.add_argument("--pairs", type=int, default=9, help="timed rounds after the warm-up (default 9)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on ingest processing (s)")
    parser.add_argument("--data-root", default=str(Path.home() / ".cache/flowdaq-bench"))
    parser.add_argument("--out", help="also write the figures as JSON to this path")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    if not Path(args.flowdaq).exists():
        sys.exit(f"{args.flowdaq} not found: build it with `cargo build --release`")
    signal.signal(signal.SIGTERM, _raise_exit)

    def log(text=""):
        print(text, flush=True)

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    binary = Path(args.flowdaq).resolve()
    built = datetime.datetime.fromtimestamp(binary.stat().st_mtime).isoformat(timespec="seconds")
    versions = {"duckdb": duckdb.__version__, "pyarrow": pa.__version__,
                "adbc_driver_flightsql": adbc_driver_flightsql.__version__, "python": platform.python_version()}
    log(f"$ {command}")
    log(f"date {date}; {os.cpu_count()} cores, Linux {platform.release()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()))
    log(f"flowdaq {binary} (built {built})")
    Path(args.data_root).mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="sql-peers-", dir=args.data_root))
    data_dir = run_dir / "data"
    server = Server(str(binary), data_dir)
    times = {}  # query -> engine -> [s per timed round]
    medians = {engine: [] for engine in ENGINES}  # every answer to the percentile query
    try:
        t = time.monotonic()
        server.start()
        messages = fill(server, args.photons, args.photons_per_message, args.timeout)
        server.stop()
        log(f"ingest: {args.photons} photons in {messages} messages, processed and persisted in "
            f"{time.monotonic() - t:.1f} s")
        server.start()
        files = sorted((data_dir / "tables" / "photons").rglob("*.parquet"))
        if not files:
            raise RuntimeError(f"no Parquet files under {data_dir / 'tables' / 'photons'}")
        parquet_bytes = sum(f.stat().st_size for f in files)
        con = duckdb.connect()
        pattern = str(data_dir / "tables" / "photons" / "**" / "*.parquet")
        con.execute(f"CREATE VIEW photons AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = false)")
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        n_rows, lo, hi = con.execute(
            "SELECT count(*), min(macro_time_ps), max(macro_time_ps) FROM photons").fetchall()[0]
        if n_rows != args.photons:
            raise RuntimeError(f"duckdb reads {n_rows} photons from the Parquet files, {args.photons} were sent")
        range_lo, range_hi = lo + (hi - lo) // 4, lo + 3 * (hi - lo) // 4
        plan, exact_sql = queries(range_lo, range_hi)
        exact = float(con.execute(exact_sql).fetchall()[0][0])
        log(f"photons: {n_rows} rows in {len(files)} Parquet files, {parquet_bytes / 1e6:.1f} MB; macro times "
            f"{lo / 1e12:.3f}-{hi / 1e12:.3f} s, percentile over [{range_lo}, {range_hi}) ps, exact median "
            f"{exact:.1f} ps; duckdb threads {threads}")
        flight = flight_sql.connect("grpc://" + server.ready["flight_sql"], autocommit=True)
        cursor = flight.cursor()

        def run(engine, sql):
            if engine == "duckdb":
                return con.sql(sql).to_arrow_table()
            if engine == "http":
                return ipc.open_stream(server.http.request("POST", "/sql?format=arrow", sql.encode())).read_all()
            cursor.execute(sql)
            return cursor.fetch_arrow_table()

        reference = {}  # query -> rows of duckdb's warm-up answer (duckdb runs first in round 0)
        for r in range(args.pairs + 1):  # round 0 is the warm-up
            order = ENGINES[r % 3:] + ENGINES[:r % 3]
            for name, per_engine in plan.items():
                for engine in order:
                    t = time.perf_counter()
                    table = run(engine, per_engine[engine])
                    elapsed = time.perf_counter() - t
                    got = [tuple(row.values()) for row in table.to_pylist()]  # names differ: count(*)
                    if name == "median_range":
                        medians[engine].append(float(got[0][0]))
                        if abs(got[0][0] - exact) > PERCENTILE_TOLERANCE * exact:
                            raise RuntimeError(f"{engine}: median {got[0][0]} is not within "
                                               f"{PERCENTILE_TOLERANCE:.0%} of the exact {exact}")
                    elif reference.setdefault(name, got) != got:
                        raise RuntimeError(f"{name}: {engine} answers {got[:5]}..., duckdb {reference[name][:5]}...")
                    if r:
                        times.setdefault(name, {e: [] for e in ENGINES})[engine].append(elapsed)
            log("warm-up: answers agree" if r == 0 else f"round {r} ({'/'.join(order)}): " + "  ".join(
                f"{name} " + "/".join(f"{times[name][e][-1] * 1e3:.1f}" for e in ENGINES) for name in plan)
                + " ms (duckdb/http/flight)")
        cursor.close()
        flight.close()
        server.stop()
        startup = []
        for _ in range(STARTUP_RUNS):
            t = time.perf_counter()
            result = subprocess.run([str(binary), "sql", "--data-dir", str(data_dir), "SELECT 1"],
                                    capture_output=True, text=True, timeout=120)
            startup.append(time.perf_counter() - t)
            if result.returncode != 0:
                raise RuntimeError(f"flowdaq sql exited {result.returncode}: {result.stderr[-2000:]}")
    finally:
        cleanup()
        if args.keep:
            log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    summary = {}
    for name, per_engine in times.items():
        s = {f"{e}_median_s": statistics.median(per_engine[e]) for e in ENGINES}
        for e in ("http", "flight"):
            s[f"{e}_over_duckdb"] = statistics.median(a / b for a, b in zip(per_engine[e], per_engine["duckdb"]))
        summary[name] = s
    ours = medians["http"] + medians["flight"]
    identical = len(set(ours)) == 1
    log(f"\nSummary: medians of {args.pairs} rounds (s); flowdaq / duckdb = median of the per-round ratios")
    log(f"{'query':<18} {'duckdb s':>10} {'http s':>10} {'flight s':>10} {'http/duckdb':>12} {'flight/duckdb':>14}")
    for name, s in summary.items():
        log(f"{name:<18} {s['duckdb_median_s']:>10.4f} {s['http_median_s']:>10.4f} {s['flight_median_s']:>10.4f} "
            f"{s['http_over_duckdb']:>12.2f} {s['flight_over_duckdb']:>14.2f}")
    log(f"median micro time over the range: exact {exact:.1f} ps; duckdb approx_quantile "
        f"{sorted(set(medians['duckdb']))}; flowdaq approx_percentile_cont {sorted(set(ours))} "
        f"({len(ours)} answers, http and flight: {'identical' if identical else 'NOT identical'})")
    startup_ms = statistics.median(startup) * 1e3
    log(f"`flowdaq sql --data-dir DIR \"SELECT 1\"`: median wall {startup_ms:.1f} ms over {STARTUP_RUNS} runs "
        f"(min {min(startup) * 1e3:.1f}, max {max(startup) * 1e3:.1f})")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": command, "date": date, "cores": os.cpu_count(), "kernel": platform.release(),
            "versions": versions, "duckdb_threads": threads, "flowdaq": {"binary": str(binary), "built": built},
            "photons": n_rows, "messages": messages, "parquet_files": len(files), "parquet_bytes": parquet_bytes,
            "pairs": args.pairs, "queries": plan, "summary": summary, "times_s": times,
            "percentile": {"exact_ps": exact, "range_ps": [range_lo, range_hi], "answers": medians,
                           "flowdaq_identical": identical},
            "sql_startup": {"runs": STARTUP_RUNS, "median_ms": startup_ms, "wall_ms": [x * 1e3 for x in startup]},
        }, indent=1))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
    finally:
        cleanup()
