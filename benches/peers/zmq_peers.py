#!/usr/bin/env python3
"""Peer benchmark: flowdaq ingest against raw ZeroMQ (pyzmq -> pyzmq) for the same messages.

One run, same machine, same message bytes:
  (a) pyzmq PUSH -> pyzmq PULL over tcp://127.0.0.1 in two processes: the multipart message
      flowdaq's load generator sends (JSON header frame, a 2048 x f64 wavelength axis frame,
      a 2048 x f32 counts frame), as fast as libzmq moves it, for --seconds. That is the cost
      floor of the transport: the receiver only counts messages.
  (b) `flowdaq bench ingest --json` for the same seconds: the same message through the
      flowdaq server (decode, WAL with fsync, buffer, Parquet).
  (c) prints both rates and the ratio flowdaq / raw transport, plus flowdaq's latency figures.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/zmq_peers.py [--seconds 10] [--flowdaq BIN]
The flowdaq binary defaults to $CARGO_TARGET_DIR/release/flowdaq
(CARGO_TARGET_DIR defaults to ~/.cache/flowdaq-target); build it with `cargo build --release`.
"""
import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

PIXELS = 2048


def frames(pixels, spectra=1):
    header = {
        "protocol": 1,
        "source": "bench-0",
        "stream": "spectra",
        "seq": 0,
        "format": "arrays",
        "arrays": [
            {"name": "wavelength_nm", "dtype": "f64", "shape": [pixels]},
            {"name": "intensity_counts", "dtype": "f32", "shape": [spectra, pixels]},
        ],
        "meta": {"kind": "pl", "integration_time_ms": 1.0},
    }
    axis = (350.0 + 650.0 * np.arange(pixels) / pixels).astype("<f8")
    counts = (1000.0 + (np.arange(pixels * spectra) % 4096)).astype("<f4")
    return [json.dumps(header).encode(), axis.tobytes(), counts.tobytes()]


def push_worker(endpoint, seconds, pixels, spectra, result):
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.connect(endpoint)
    message = frames(pixels, spectra)
    sent = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        socket.send_multipart(message, copy=False)
        sent += 1
    socket.send_multipart([b"stop"])
    result.put(sent)
    socket.close(linger=-1)
    context.term()


def raw_zmq(seconds, pixels, spectra):
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    result = mp.Queue()
    worker = mp.Process(
        target=push_worker, args=(f"tcp://127.0.0.1:{port}", seconds, pixels, spectra, result)
    )
    received = 0
    message_bytes = sum(len(f) for f in frames(pixels, spectra))
    worker.start()
    first = None
    while True:
        parts = pull.recv_multipart(copy=False)
        if len(parts) == 1 and parts[0].bytes == b"stop":
            break
        if first is None:
            first = time.perf_counter()
        received += 1
    elapsed = time.perf_counter() - (first or time.perf_counter())
    sent = result.get(timeout=30)
    worker.join(timeout=30)
    pull.close()
    context.term()
    assert sent == received, f"raw zmq lost messages: sent {sent}, received {received}"
    rate = received / elapsed if elapsed > 0 else float("nan")
    return {
        "messages": received,
        "message_bytes": message_bytes,
        "messages_per_s": rate,
        "spectra_per_s": rate * spectra,
        "mb_per_s": rate * message_bytes / 1e6,
    }


def flowdaq(binary, seconds, pixels, spectra):
    out = subprocess.run(
        [
            binary, "bench", "ingest", "--json", "--seconds", str(seconds),
            "--pixels", str(pixels), "--spectra-per-message", str(spectra),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pixels", type=int, default=PIXELS)
    parser.add_argument("--spectra-per-message", type=int, default=1)
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/flowdaq-target"))
    parser.add_argument("--flowdaq", default=str(Path(target) / "release/flowdaq"))
    args = parser.parse_args()
    if not Path(args.flowdaq).exists():
        sys.exit(f"{args.flowdaq} not found: build it with `cargo build --release`")

    print(f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, {os.cpu_count()} cores")
    spectra = args.spectra_per_message
    print(f"{args.pixels} pixels, {spectra} spectra per message")
    raw = raw_zmq(args.seconds, args.pixels, spectra)
    print(
        f"raw pyzmq PUSH->PULL : {raw['spectra_per_s']:>10.0f} spectra/s "
        f"{raw['mb_per_s']:>8.1f} MB/s ({raw['message_bytes']} B/message)"
    )
    ours = flowdaq(args.flowdaq, args.seconds, args.pixels, spectra)
    print(
        f"flowdaq into WAL     : {ours['throughput_spectra_per_s']:>10.0f} spectra/s "
        f"{ours['throughput_mb_per_s']:>8.1f} MB/s ({ours['message_bytes']} B/message)"
    )
    print(
        f"flowdaq into Parquet : {ours['sustained_into_parquet_spectra_per_s']:>10.0f} spectra/s "
        f"(until the persister drained: {ours['phase1_persist_drain_seconds']:.2f} s after the senders stopped)"
    )
    print(
        f"latency at {ours['latency_rate_spectra_per_s']:.0f} spectra/s: receipt->durable "
        f"p50 {ours['receipt_to_durable_p50_us']} us p99 {ours['receipt_to_durable_p99_us']} us; "
        f"receipt->queryable p50 {ours['receipt_to_queryable_p50_us']} us "
        f"p99 {ours['receipt_to_queryable_p99_us']} us"
    )
    print(
        f"ratio flowdaq into WAL / raw zmq (spectra/s): "
        f"{ours['throughput_spectra_per_s'] / raw['spectra_per_s']:.2f}"
    )
    print(json.dumps({"raw_zmq": raw, "flowdaq": ours}))


if __name__ == "__main__":
    main()
