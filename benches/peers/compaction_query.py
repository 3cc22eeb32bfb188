#!/usr/bin/env python3
"""Query time over many small Parquet files, before and after compaction, beside DuckDB.

One run:
  1. `flowdaq serve` (release, compaction off, a persist every 50 ms) takes --bursts bursts of
     --per-burst 2048-pixel PL spectra over PUSH, each burst persisted before the next: one
     small file per burst and table;
  2. each query, --rounds times, through `POST /sql?format=arrow` and through DuckDB
     in-process over `read_parquet('<data>/tables/<table>/**/*.parquet')`; medians;
  3. the server restarts on the same data with compaction on (a round every 0.5 s, a 1 s query
     time limit so merges finish 6 s after they start) and runs until no `.merged` file is
     left; the queries again, answers checked equal to the first ones.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/compaction_query.py --flowdaq <release binary>
      [--bursts 400] [--per-burst 5] [--rounds 15]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import zmq

import sys
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from flowdaq.wire import spectrum_frames  # noqa: E402

QUERIES = {
    "features per condition": ("spectral_features",
                               "SELECT condition_id, count(*) AS n, avg(peak_energy_ev) AS peak_ev FROM {t} "
                               "GROUP BY condition_id ORDER BY condition_id"),
    "brightest pixel per spectrum": ("spectra",
                                     "SELECT count(*) AS n, avg(array_max(intensity_counts)) AS top FROM {t}"),
}


class Server:
    """`flowdaq serve` with PUSH and HTTP only, a persist every 50 ms; `extra` is appended to its
    configuration and `env` to its environment."""

    def __init__(self, binary, data_dir, compaction_interval_s, extra="", env=None, query_timeout_s=1):
        config = Path(data_dir).with_suffix(".toml")
        config.write_text(
            f'data_dir = "{data_dir}"\n[ingest]\npull = "tcp://127.0.0.1:0"\nsub = ""\nrouter = ""\n'
            '[http]\nlisten = "127.0.0.1:0"\n[publish]\nlisten = ""\n[control]\nlisten = ""\n'
            '[flight_sql]\nlisten = ""\n[postgres]\nlisten = ""\n'
            f'[buffer]\nflush_interval_ms = 50\n[query]\ntimeout_s = {query_timeout_s}\n'
            f'[compaction]\ninterval_s = {compaction_interval_s}\n' + extra)
        self.process = subprocess.Popen([binary, "serve", "--config", str(config)], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})})
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"flowdaq serve exited before ready: {config}")
        self.ready = json.loads(line)
        self.http = "http://" + self.ready["http"]

    def metrics(self):
        with urllib.request.urlopen(self.http + "/metrics/json", timeout=10) as response:
            return json.loads(response.read())

    def sql(self, query):
        request = urllib.request.Request(self.http + "/sql?format=arrow", data=query.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return pa.ipc.open_stream(response.read()).read_all()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=120)


def wait(predicate, what, seconds=300):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def feed(server, bursts, per_burst):
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.ready["pull"])
    axis = np.linspace(350.0, 1000.0, 2048)
    rng = np.random.default_rng(1)
    seq = 0
    for burst in range(bursts):
        for _ in range(per_burst):
            peak = 480.0 + 40.0 * ((burst // 50) % 4)
            counts = 1000 + 30000 * np.exp(-0.5 * ((axis - peak) / 8.0) ** 2) + rng.normal(0, 30, axis.size)
            push.send_multipart(spectrum_frames("spec-1", seq, axis, counts, run_id="bench",
                                                condition_id=f"c-{burst // 50}"))
            seq += 1

        def persisted(n=seq):
            m = server.metrics()
            return m["messages_processed"] >= n and m["buffer"]["open_rows"] == 0 and m["buffer"]["persisting_rows"] == 0
        wait(persisted, f"burst {burst}")
    push.close(0)
    context.term()


def files(data_dir, table):
    return sorted(Path(data_dir, "tables", table).rglob("*.parquet*"))


def timed(fn, rounds):
    answer = fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return answer, statistics.median(times)


def measure(server, data_dir, rounds):
    out = {}
    for name, (table, query) in QUERIES.items():
        flowdaq_answer, flowdaq_s = timed(lambda: server.sql(query.format(t=table)), rounds)
        pattern = f"read_parquet('{data_dir}/tables/{table}/**/*.parquet')"
        duck = duckdb.connect()
        duck_query = query.format(t=pattern).replace("array_max", "list_max")  # DuckDB's name
        duck_answer, duck_s = timed(lambda: duck.sql(duck_query).to_arrow_table(), rounds)
        out[name] = (flowdaq_answer.to_pylist(), flowdaq_s, duck_s, len(files(data_dir, table)))
        assert [list(r.values())[0] for r in flowdaq_answer.to_pylist()] == \
            [list(r.values())[0] for r in duck_answer.to_pylist()], name
    return out


def same(rows_a, rows_b):
    """Equal rows; floats to 1e-9 relative (a sum's order follows the file layout)."""
    def close(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1.0)
        return x == y
    return len(rows_a) == len(rows_b) and all(
        ra.keys() == rb.keys() and all(close(ra[k], rb[k]) for k in ra) for ra, rb in zip(rows_a, rows_b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowdaq", required=True)
    parser.add_argument("--bursts", type=int, default=400)
    parser.add_argument("--per-burst", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home() / ".cache") as root:
        data_dir = str(Path(root) / "data")
        server = Server(args.flowdaq, data_dir, 0)
        feed(server, args.bursts, args.per_burst)
        before = measure(server, data_dir, args.rounds)
        server.stop()
        server = Server(args.flowdaq, data_dir, 0.5)
        wait(lambda: server.metrics()["compaction"]["merges"] >= 1, "a merge")
        wait(lambda: not any(p.name.endswith(".merged") for t in ("spectra", "spectral_features")
                             for p in files(data_dir, t)) and server.metrics()["compaction"]["rounds"] >= 3,
             "merges finished")
        compaction = server.metrics()["compaction"]
        after = measure(server, data_dir, args.rounds)
        server.stop()
    print(f"{args.bursts} bursts x {args.per_burst} spectra; compaction: {compaction}")
    print("| query | files before -> after | flowdaq before | flowdaq after | DuckDB before | DuckDB after "
          "| flowdaq / DuckDB before | after |")
    print("|---|---|---|---|---|---|---|---|")
    for name in QUERIES:
        a, b = before[name], after[name]
        assert same(a[0], b[0]), f"{name}: the answer changed with compaction: {a[0]} {b[0]}"
        print(f"| {name} | {a[3]} -> {b[3]} | {a[1] * 1e3:.1f} ms | {b[1] * 1e3:.1f} ms | {a[2] * 1e3:.1f} ms | "
              f"{b[2] * 1e3:.1f} ms | {a[1] / a[2]:.2f} | {b[1] / b[2]:.2f} |")


if __name__ == "__main__":
    main()
