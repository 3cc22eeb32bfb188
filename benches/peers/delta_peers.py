#!/usr/bin/env python3
"""What Delta Lake logs cost a persist, and how Python `deltalake` reads what flowdaq wrote.

Why: docs/performance.md answers "what does `[storage] delta_lake = true` cost, and how fast do
Delta readers read flowdaq's tables?" with these figures. One run, for each store (the data
directory, then moto's S3 server on loopback) and each setting (`delta_lake` off, then on):
  1. `flowdaq serve` (release, compaction off, a persist every 50 ms) takes --bursts bursts of
     --per-burst 2048-pixel PL spectra, each burst persisted before the next (one file per burst
     and table, one catalog save, and with Delta one commit per table changed). Reported:
     persists per second, wall time from the first send to the last burst persisted;
  2. with Delta on, the peer: Python `deltalake` opening the spectra table and reading it whole
     (`DeltaTable(...).to_pyarrow_table()`), --rounds times, median; beside it flowdaq's SQL
     reading the same columns (`SELECT * FROM spectra` as Arrow over HTTP), median.
Row counts are checked equal. moto is a Python server on the same cores: the S3 figures are an
upper bound on the protocol's cost, not a forecast for AWS or MinIO.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/delta_peers.py --flowdaq <release binary>
      [--bursts 200] [--per-burst 5] [--rounds 5]
"""
import argparse
import datetime
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import deltalake
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compaction_query import Server, timed  # noqa: E402
from storage_peers import S3_ENV, feed  # noqa: E402


def moto_process():
    """moto's S3 server in a process of its own (some `deltalake` calls hold the GIL while they
    wait for the store, which an in-process server then never answers), with the bucket
    `bench`: (process, endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.terminate()
        raise RuntimeError("moto's S3 server did not listen within 15 s")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket="bench")
    return process, endpoint


def run(args, data_dir, storage, table_uri, storage_options):
    server = Server(args.flowdaq, data_dir, 0, extra=storage, env=S3_ENV, query_timeout_s=120)
    out = {}
    try:
        out["feed_s"] = feed(server, args.bursts, args.per_burst)
        if table_uri:
            sql, out["sql_s"] = timed(lambda: server.sql("SELECT * FROM spectra"), args.rounds)
            out["sql_rows"] = sql.num_rows
    finally:
        server.stop()
    if table_uri:
        read, out["deltalake_s"] = timed(
            lambda: DeltaTable(table_uri, storage_options=storage_options).to_pyarrow_table(), args.rounds)
        assert read.num_rows == out["sql_rows"] == args.bursts * args.per_burst, (read.num_rows, out["sql_rows"])
        out["versions"] = DeltaTable(table_uri, storage_options=storage_options).version()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowdaq", required=True)
    parser.add_argument("--bursts", type=int, default=200)
    parser.add_argument("--per-burst", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    moto, endpoint = moto_process()
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    results = {}
    try:
        with tempfile.TemporaryDirectory(dir=Path.home() / ".cache") as work:
            for store in ("local", "s3"):
                for delta in (False, True):
                    name = f"{store}-{'delta' if delta else 'plain'}"
                    data_dir = Path(work) / name
                    storage = "[storage]\n"
                    if store == "s3":
                        storage += (f'url = "s3://bench/{name}"\nendpoint = "{endpoint}"\n'
                                    'allow_http = true\nregion = "us-east-1"\n')
                    storage += f"delta_lake = {'true' if delta else 'false'}\n"
                    uri = None
                    if delta:
                        uri = (str(data_dir / "tables" / "spectra") if store == "local"
                               else f"s3://bench/{name}/tables/spectra")
                    results[name] = run(args, str(data_dir), storage, uri, options if store == "s3" else None)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    print(f"{datetime.date.today()}: {args.bursts} persists of {args.per_burst} 2048-pixel spectra, "
          f"deltalake {deltalake.__version__}, moto {__import__('moto').__version__} on loopback")
    print("| measure | local disk | S3 (moto) |")
    print("|---|---|---|")
    for setting in ("plain", "delta"):
        cells = [f"{args.bursts / results[f'{s}-{setting}']['feed_s']:.1f}" for s in ("local", "s3")]
        print(f"| persists per second, delta_lake = {setting == 'delta'} | {cells[0]} | {cells[1]} |")
    cells = [f"{results[f'{s}-plain']['feed_s'] / results[f'{s}-delta']['feed_s']:.2f}" for s in ("local", "s3")]
    print(f"| ratio, with Delta / without | {cells[0]} | {cells[1]} |")
    for label, key in (("flowdaq SQL, SELECT * FROM spectra (Arrow over HTTP)", "sql_s"),
                       ("peer: Python deltalake, DeltaTable(...).to_pyarrow_table()", "deltalake_s")):
        cells = [f"{results[f'{s}-delta'][key] * 1e3:.0f} ms" for s in ("local", "s3")]
        print(f"| {label}, median of {args.rounds} | {cells[0]} | {cells[1]} |")
    cells = [f"{results[f'{s}-delta']['deltalake_s'] / results[f'{s}-delta']['sql_s']:.2f}" for s in ("local", "s3")]
    print(f"| ratio, deltalake / flowdaq | {cells[0]} | {cells[1]} |")
    print(f"| Delta versions of the spectra table | {results['local-delta']['versions']} | "
          f"{results['s3-delta']['versions']} |")


if __name__ == "__main__":
    main()
