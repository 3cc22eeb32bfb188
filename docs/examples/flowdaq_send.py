"""Send spectra to a flowdaq server with nothing but pyzmq and numpy.

This is the whole of wire protocol v1 for spectra (docs/wire-protocol.md): a JSON header frame,
then one frame per array, little-endian, C order. Copy it into an instrument driver.

    python flowdaq_send.py tcp://127.0.0.1:5555 --count 10

Three socket patterns:
  * PUSH (lossless; blocks when the server is behind)       -> the server's PULL endpoint
  * PUB  (fan-out; the server counts gaps in `seq`)          -> the server's SUB endpoint
  * DEALER (acknowledged; keep a message until its ack)      -> the server's ROUTER endpoint
"""

import argparse
import json
import time

import numpy as np
import zmq


def spectrum_frames(source, seq, wavelength_nm, counts, kind="pl", integration_time_ms=10.0,
                    run_id=None, condition_id=None, probe_position_mm=None, instrument_time_ns=None):
    """Return the multipart frames of one spectra message.

    `counts` is one spectrum (shape [pixels]) or a batch (shape [n_spectra, pixels]).
    """
    wavelength_nm = np.ascontiguousarray(wavelength_nm, dtype="<f8")
    counts = np.ascontiguousarray(counts, dtype="<f4")
    meta = {"kind": kind, "integration_time_ms": float(integration_time_ms)}
    if probe_position_mm is not None:
        meta["probe_position_mm"] = float(probe_position_mm)
    header = {
        "protocol": 1,
        "source": source,
        "stream": "spectra",
        "seq": int(seq),
        "arrays": [
            {"name": "wavelength_nm", "dtype": wavelength_nm.dtype.str, "shape": list(wavelength_nm.shape)},
            {"name": "intensity_counts", "dtype": counts.dtype.str, "shape": list(counts.shape)},
        ],
        "meta": meta,
    }
    if run_id is not None:
        header["run_id"] = run_id
    if condition_id is not None:
        header["condition_id"] = condition_id
    if instrument_time_ns is not None:
        header["instrument_time_ns"] = int(instrument_time_ns)
    return [json.dumps(header).encode(), wavelength_nm.tobytes(), counts.tobytes()]


class AcknowledgedSender:
    """DEALER sender that keeps every message until the server acknowledges its `seq`.

    The server acknowledges only once the message is durable in its write-ahead log, so a
    sender that resends whatever is unacknowledged after a reconnect never loses data.
    """

    def __init__(self, context, endpoint):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.unacknowledged = {}

    def send(self, seq, frames):
        self.unacknowledged[seq] = frames
        self.socket.send_multipart(frames)

    def collect_acks(self, timeout_ms=100):
        """Read every acknowledgement available; return the decoded replies."""
        replies = []
        while self.socket.poll(timeout_ms):
            reply = json.loads(self.socket.recv_multipart()[-1])
            replies.append(reply)
            seq = reply.get("ack", reply.get("nack"))
            self.unacknowledged.pop(seq, None)
            timeout_ms = 0
        return replies

    def resend_unacknowledged(self):
        for seq in sorted(self.unacknowledged):
            self.socket.send_multipart(self.unacknowledged[seq])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint", help="the server's PULL endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--source", default="python-example")
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args()

    wavelength_nm = np.linspace(350.0, 1000.0, 2048)
    energy_ev = 1239.84198 / wavelength_nm
    rng = np.random.default_rng(1)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(args.endpoint)
    for seq in range(args.count):
        peak_ev = 2.45 + 0.01 * seq
        counts = 1000 + 30000 * np.exp(-4 * np.log(2) * (energy_ev - peak_ev) ** 2 / 0.09 ** 2)
        counts = counts + rng.normal(0, 20, counts.shape)
        push.send_multipart(spectrum_frames(args.source, seq, wavelength_nm, counts, run_id=args.run_id,
                                            instrument_time_ns=time.time_ns()))
    push.close(linger=5000)
    context.term()
    print(f"sent {args.count} spectra to {args.endpoint}")


if __name__ == "__main__":
    main()
