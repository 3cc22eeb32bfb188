#!/usr/bin/env python3
"""Peer benchmark: reading one Bluesky event document, flowdaq against bluesky's own path.

Why: docs/performance.md answers "what does flowdaq pay per Bluesky event, next to what a
bluesky RemoteDispatcher pays to read the same frame?" with these figures. One run:
  1. the criterion bench `connectors/benches/bluesky.rs` (an event of a 2048-pixel f64 spectrum
     and three scalars, msgpack-numpy): flowdaq reading it (`parse`), translating it into its
     wire messages (`translate`) and decoding those into Arrow rows (`translate_and_decode`);
  2. in this process, the same event built with msgpack_numpy.packb, split and read with
     msgpack_numpy.unpackb as a RemoteDispatcher with that deserializer does (best of 5
     repeats of 20,000);
  3. a table of the medians in µs and the ratios flowdaq / Python.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/bluesky_peers.py [--measurement-time 5]
Needs numpy msgpack msgpack-numpy, and cargo. The bench builds in $CARGO_TARGET_DIR
(default ~/.cache/flowdaq-target-release).
"""
import argparse
import datetime
import json
import os
import subprocess
import timeit
from pathlib import Path

import msgpack_numpy
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PIXELS = 2048
GROUP = "bluesky_event_2048px"


def python_read_us():
    axis = 400.0 + 0.15 * np.arange(PIXELS)
    spectrum = 50.0 + 1000.0 * np.exp(-0.5 * ((axis - 520.0) / 8.0) ** 2)
    event = {"descriptor": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "seq_num": 1, "time": 2.0,
             "uid": "e", "data": {"spec_intensity": spectrum, "motor": 1.5, "motor_setpoint": 1.5,
                                  "bath_temperature": 24.5},
             "timestamps": {"motor": 2.0}}
    frame = b" event " + msgpack_numpy.packb(event)

    def read():
        prefix, name, document = frame.split(b" ", 2)
        return msgpack_numpy.unpackb(document)

    number = 20_000
    best = min(timeit.repeat(read, number=number, repeat=5)) / number
    return best * 1e6, len(frame)


def flowdaq_us(measurement_time):
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "flowdaq-target-release"))
    env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
    subprocess.run(
        ["cargo", "bench", "--workspace", "--locked", "--bench", "bluesky", "--",
         "--warm-up-time", "1", "--measurement-time", str(measurement_time), "--noplot"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    figures = {}
    for name in ("parse", "translate", "translate_and_decode"):
        estimates = target / "criterion" / GROUP / name / "new" / "estimates.json"
        figures[name] = json.loads(estimates.read_text())["median"]["point_estimate"] / 1000.0
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measurement-time", type=float, default=5.0)
    args = parser.parse_args()
    flowdaq = flowdaq_us(args.measurement_time)
    python, frame_bytes = python_read_us()
    print(f"Bluesky event, {PIXELS}-pixel f64 spectrum + 3 scalars, msgpack-numpy, {frame_bytes} bytes;"
          f" {datetime.date.today()}")
    print("| step | flowdaq | Python msgpack_numpy.unpackb | flowdaq / Python |")
    print("|---|---|---|---|")
    for name, label in (("parse", "read the document"),
                        ("translate", "read + wire messages"),
                        ("translate_and_decode", "read + wire messages + Arrow rows")):
        us = flowdaq[name]
        print(f"| {label} | {us:.1f} µs ({1e6 / us:,.0f} events/s) | {python:.1f} µs | {us / python:.2f} |")


if __name__ == "__main__":
    main()
