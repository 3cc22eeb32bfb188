"""`flowdaq check-sender`, the vendor conformance kit, driven by senders we did not write into it
(pyzmq through the flowdaq package): a good sender passes with exit 0; a DEALER sender gets the
acks and nacks a server would send; rule breaks give exit 1 and a report naming each rule."""

import json
import os
import subprocess

import numpy as np
import pytest
import zmq

from flowdaq import MessageRefused, Sender
from flowdaq.wire import header_frame, spectrum_frames

AXIS_NM = np.linspace(400.0, 700.0, 64)
COUNTS = (1000.0 * np.exp(-0.5 * ((AXIS_NM - 520.0) / 12.0) ** 2) + 3.0).astype("<f4")


def start_kit(*args):
    """`flowdaq check-sender ARGS --json`, and the endpoints of its ready line."""
    binary = os.environ.get("FLOWDAQ_BIN")
    if not binary:
        pytest.fail("FLOWDAQ_BIN is not set: scripts/test-all.sh sets it to the built flowdaq")
    process = subprocess.Popen([binary, "check-sender", *args, "--timeout-s", "60", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = json.loads(process.stdout.readline())
    assert ready["event"] == "ready", ready
    return process, ready


def finish(process):
    out, err = process.communicate(timeout=90)
    return process.returncode, json.loads(out.strip().splitlines()[-1]), err


def broken(report):
    return {rule["rule"]: rule["broken"] for rule in report["rules"] if rule["broken"]}


def test_a_good_push_sender_passes(tmp_path):
    process, ready = start_kit("--pull", "tcp://127.0.0.1:0", "--messages", "12")
    with Sender(ready["pull"], "vendor-good", acknowledged=False) as sender:
        for i in range(12):
            sender.send_spectrum(AXIS_NM, COUNTS, instrument_time_ns=1_000_000 + i)
    code, report, err = finish(process)
    assert code == 0, (report, err)
    assert report["passed"] and not broken(report), report
    source = report["sources"]["vendor-good"]
    assert source["messages"] == 12 and source["rows"] == 12 and source["timestamped_messages"] == 12
    assert source["streams"] == ["spectra"] and len(source["sessions"]) == 1


def test_a_dealer_sender_gets_acks_and_nacks_and_the_kit_fails_it():
    process, ready = start_kit("--router", "tcp://127.0.0.1:0", "--messages", "9")
    sender = Sender(ready["router"], "vendor-acked")
    for _ in range(5):
        sender.send_spectrum(AXIS_NM, COUNTS)
    sender.flush(timeout_s=30)
    # Resends over DEALER are legal (a server acknowledges them as duplicates): no violation.
    for seq in range(3):
        sender._dealer.send(seq, spectrum_frames("vendor-acked", seq, AXIS_NM, COUNTS, session=sender.session))
    sender.flush(timeout_s=30)
    with pytest.raises(MessageRefused) as refused:
        sender.send_spectrum(AXIS_NM, np.full(64, np.nan, dtype="<f4"))
        sender.flush(timeout_s=30)
    assert refused.value.seq == 5, refused.value
    sender.close()
    code, report, err = finish(process)
    assert code == 1, (report, err)
    assert report["acks"] == 8 and report["nacks"] == 1, report
    assert broken(report) == {"values are finite and plausible": 1}, report
    source = report["sources"]["vendor-acked"]
    assert source["resends"] == 3 and source["missing_messages"] == 0 and source["seq_regressions"] == 0, source


def test_rule_breaks_are_each_named_with_the_message():
    process, ready = start_kit("--pull", "tcp://127.0.0.1:0", "--messages", "5")
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(ready["pull"])
    good = spectrum_frames("vendor-bad", 0, AXIS_NM, COUNTS)
    wrong_version = json.loads(good[0])
    wrong_version["protocol"] = 2
    big_endian = header_frame("vendor-bad", "spectra", 2, [("wavelength_nm", ">f8", (64,)),
                                                          ("intensity_counts", "<f4", (64,))],
                              {"kind": "pl", "integration_time_ms": 10.0})
    for frames in (good, [json.dumps(wrong_version).encode(), *good[1:]], [big_endian, *good[1:]],
                   [b"", *good[1:]], spectrum_frames("vendor-bad", 9, AXIS_NM, COUNTS)):
        push.send_multipart(frames)
    code, report, err = finish(process)
    push.close(linger=0)
    context.term()
    assert code == 1, (report, err)
    assert broken(report) == {
        "the header says protocol 1": 1,
        "arrays have little-endian numeric dtypes": 1,
        "the header is JSON of the protocol's schema": 1,
        "seq increases by 1 per source and session": 1,
    }, report
    gap = next(rule for rule in report["rules"] if rule["rule"].startswith("seq increases"))
    assert gap["examples"][0]["seq"] == 9 and "8 missing" in gap["examples"][0]["reason"], gap
