#!/usr/bin/env python3
"""Persist and query rates with Parquet on the local disk against an S3 server, in one run.

Why: docs/performance.md answers "what does moving the Parquet files into an object store cost?"
with these figures. One run, for each store (the data directory, then moto's S3 server on
loopback, `[storage] url = "s3://bench/flowdaq"`):
  1. `flowdaq serve` (release, compaction off, a persist every 50 ms) takes --bursts bursts of
     --per-burst 2048-pixel PL spectra over PUSH, each burst persisted before the next is sent:
     one file per burst and table, one catalog save per burst. Reported: persists per second
     and spectra per second, wall time from the first send to the last burst persisted;
  2. each query, --rounds times, through `POST /sql?format=arrow`; medians;
  3. the peer: pyarrow reading every spectra file the catalog names from the same store
     (`pyarrow.fs.LocalFileSystem` / `S3FileSystem`), --rounds times; median.
Answers are checked equal between the stores. moto is a Python server: the S3 figures are an
upper bound on the cost of the protocol, not a forecast for AWS or MinIO.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/storage_peers.py --flowdaq <release binary>
      [--bursts 200] [--per-burst 5] [--rounds 9]
"""
import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import zmq
from moto.server import ThreadedMotoServer

import sys
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from flowdaq.wire import spectrum_frames  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compaction_query import Server, timed, wait  # noqa: E402  (compaction off: interval 0)

QUERIES = {
    "count per condition": "SELECT condition_id, count(*) AS n FROM spectra GROUP BY condition_id ORDER BY condition_id",
    "brightest pixel": "SELECT count(*) AS n, avg(array_max(intensity_counts)) AS top FROM spectra",
    "features per condition": ("SELECT condition_id, count(*) AS n, avg(peak_energy_ev) AS peak_ev "
                               "FROM spectral_features GROUP BY condition_id ORDER BY condition_id"),
}
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def feed(server, bursts, per_burst):
    """Sends the bursts, each persisted before the next; returns the wall seconds."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.ready["pull"])
    axis = np.linspace(350.0, 1000.0, 2048)
    rng = np.random.default_rng(1)
    frames = []
    for seq in range(bursts * per_burst):
        peak = 480.0 + 40.0 * ((seq // 250) % 4)
        counts = 1000 + 30000 * np.exp(-0.5 * ((axis - peak) / 8.0) ** 2) + rng.normal(0, 30, axis.size)
        frames.append(spectrum_frames("spec-1", seq, axis, counts, run_id="bench", condition_id=f"c-{seq // 250}"))
    start = time.perf_counter()
    seq = 0
    for _ in range(bursts):
        for _ in range(per_burst):
            push.send_multipart(frames[seq])
            seq += 1

        def persisted(n=seq):
            m = server.metrics()
            return m["messages_processed"] >= n and m["buffer"]["open_rows"] == 0 and m["buffer"]["persisting_rows"] == 0
        wait(persisted, f"{seq} spectra persisted")
    elapsed = time.perf_counter() - start
    push.close(0)
    context.term()
    return elapsed


def run_store(args, name, data_dir, storage, catalog_of, filesystem, root):
    server = Server(args.flowdaq, data_dir, 0, extra=storage, env=S3_ENV, query_timeout_s=120)
    try:
        feed_s = feed(server, args.bursts, args.per_burst)
        persists = server.metrics()["buffer"]
        out = {"feed_s": feed_s, "queries": {}}
        for label, query in QUERIES.items():
            answer, seconds = timed(lambda: server.sql(query), args.rounds)
            out["queries"][label] = (answer.to_pylist(), seconds)
    finally:
        server.stop()
    files = [f["path"] for f in catalog_of()["files"] if f["table"] == "spectra"]

    def read_all():
        return pa.concat_tables(pq.read_table(f"{root}/{f}", filesystem=filesystem) for f in files)
    table, out["pyarrow_s"] = timed(read_all, args.rounds)
    assert table.num_rows == args.bursts * args.per_burst, (name, table.num_rows)
    out["files"] = len(files)
    out["buffer"] = persists
    return out


def start_moto():
    """moto's S3 server on a loopback port with the bucket `bench`: (server, host, port, client)."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    client.create_bucket(Bucket="bench")
    return moto, host, port, client


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowdaq", required=True)
    parser.add_argument("--bursts", type=int, default=200)
    parser.add_argument("--per-burst", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    moto, host, port, client = start_moto()
    endpoint = f"http://{host}:{port}"
    try:
        with tempfile.TemporaryDirectory(dir=Path.home() / ".cache") as work:
            local_dir = Path(work) / "local"
            local = run_store(args, "local", str(local_dir), "",
                              lambda: json.loads((local_dir / "catalog.json").read_text()),
                              pyarrow.fs.LocalFileSystem(), str(local_dir))
            s3_storage = (f'[storage]\nurl = "s3://bench/flowdaq"\nendpoint = "{endpoint}"\n'
                          'allow_http = true\nregion = "us-east-1"\n')
            s3 = run_store(args, "s3", str(Path(work) / "s3"), s3_storage,
                           lambda: json.loads(client.get_object(Bucket="bench", Key="flowdaq/catalog.json")["Body"].read()),
                           pyarrow.fs.S3FileSystem(access_key="bench", secret_key="bench", region="us-east-1",
                                                   endpoint_override=f"{host}:{port}", scheme="http"),
                           "bench/flowdaq")
    finally:
        moto.stop()
    spectra = args.bursts * args.per_burst
    print(f"{datetime.date.today()}: {args.bursts} persists of {args.per_burst} 2048-pixel spectra "
          f"({local['files']} spectra files per store), moto {__import__('moto').__version__} on loopback")
    print("| measure | local disk | S3 (moto) | S3 / local |")
    print("|---|---|---|---|")
    print(f"| persists per second (one burst each, files + catalog) | {args.bursts / local['feed_s']:.1f} | "
          f"{args.bursts / s3['feed_s']:.1f} | {local['feed_s'] / s3['feed_s']:.2f} |")
    print(f"| spectra per second, sent and persisted | {spectra / local['feed_s']:.0f} | "
          f"{spectra / s3['feed_s']:.0f} | {local['feed_s'] / s3['feed_s']:.2f} |")
    for label in QUERIES:
        a, b = local["queries"][label], s3["queries"][label]
        assert a[0] == b[0] or label == "brightest pixel" and a[0][0]["n"] == b[0][0]["n"], (label, a[0], b[0])
        print(f"| SQL: {label} (flowdaq, median of {args.rounds}) | {a[1] * 1e3:.1f} ms | {b[1] * 1e3:.1f} ms "
              f"| {b[1] / a[1]:.2f} |")
    print(f"| peer: pyarrow reads every spectra file the catalog names | {local['pyarrow_s'] * 1e3:.1f} ms | "
          f"{s3['pyarrow_s'] * 1e3:.1f} ms | {s3['pyarrow_s'] / local['pyarrow_s']:.2f} |")


if __name__ == "__main__":
    main()
