"""Send spectra or TCSPC records to a flowdaq server with nothing but pyzmq and numpy.

This is the whole of wire protocol v1 for spectra, raw PicoQuant records and TCSPC histograms
(docs/wire-protocol.md): a JSON header frame, then one frame per array, little-endian, C order.
Copy it into an instrument driver.

    python flowdaq_send.py tcp://127.0.0.1:5555 --count 10           # simulated PL spectra
    python flowdaq_send.py tcp://127.0.0.1:5555 --ptu beads.ptu      # a PTU file's T2/T3 records

A TCSPC driver sends the 32-bit records as the device hands them over, in order and with
consecutive `seq` per source (overflow records make each record's time depend on the earlier
ones), and marks the acquisition's last message with `end_of_stream` so that the server writes
the source's last histogram window at once.

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


def header_frame(source, stream, seq, arrays, meta, run_id=None, condition_id=None,
                 instrument_time_ns=None, end_of_stream=False, session=None):
    """The JSON header frame of one message: `arrays` lists (name, dtype string, shape) of the
    frames that follow, in order; the optional keys are left out when not given. `session`
    names this life of the sender's seq counter (see "Exactly once" in docs/wire-protocol.md)."""
    header = {
        "protocol": 1,
        "source": source,
        "stream": stream,
        "seq": int(seq),
        "arrays": [{"name": name, "dtype": dtype, "shape": list(shape)} for name, dtype, shape in arrays],
        "meta": meta,
    }
    if session is not None:
        header["session"] = session
    if run_id is not None:
        header["run_id"] = run_id
    if condition_id is not None:
        header["condition_id"] = condition_id
    if instrument_time_ns is not None:
        header["instrument_time_ns"] = int(instrument_time_ns)
    if end_of_stream:
        header["end_of_stream"] = True
    return json.dumps(header).encode()


def spectrum_frames(source, seq, wavelength_nm, counts, kind="pl", integration_time_ms=10.0,
                    run_id=None, condition_id=None, probe_position_mm=None, instrument_time_ns=None,
                    session=None):
    """Return the multipart frames of one spectra message.

    `counts` is one spectrum (shape [pixels]) or a batch (shape [n_spectra, pixels]).
    """
    wavelength_nm = np.ascontiguousarray(wavelength_nm, dtype="<f8")
    counts = np.ascontiguousarray(counts, dtype="<f4")
    meta = {"kind": kind, "integration_time_ms": float(integration_time_ms)}
    if probe_position_mm is not None:
        meta["probe_position_mm"] = float(probe_position_mm)
    arrays = [("wavelength_nm", wavelength_nm.dtype.str, wavelength_nm.shape),
              ("intensity_counts", counts.dtype.str, counts.shape)]
    header = header_frame(source, "spectra", seq, arrays, meta, run_id=run_id, condition_id=condition_id,
                          instrument_time_ns=instrument_time_ns, session=session)
    return [header, wavelength_nm.tobytes(), counts.tobytes()]


def histogram_frames(source, seq, counts, bin_width_ps, sync_rate_hz, irf_counts=None, channel=0,
                     acquisition_time_s=None, run_id=None, condition_id=None):
    """Return the multipart frames of one tcspc_histogram message: the counts per micro-time bin
    of one channel from an instrument in histogram mode, optionally with the measured IRF (one
    value per bin) the server fits the decay with."""
    counts = np.ascontiguousarray(counts, dtype="<u4")
    meta = {"bin_width_ps": float(bin_width_ps), "sync_rate_hz": float(sync_rate_hz), "channel": int(channel)}
    if acquisition_time_s is not None:
        meta["acquisition_time_s"] = float(acquisition_time_s)
    arrays = [("counts", counts.dtype.str, counts.shape)]
    frames = [counts.tobytes()]
    if irf_counts is not None:
        irf_counts = np.ascontiguousarray(irf_counts, dtype="<f8")
        arrays.append(("irf_counts", irf_counts.dtype.str, irf_counts.shape))
        frames.append(irf_counts.tobytes())
    header = header_frame(source, "tcspc_histogram", seq, arrays, meta, run_id=run_id, condition_id=condition_id)
    return [header, *frames]


def picoquant_record_frames(source, seq, records, record_type, macro_unit_ps, micro_bin_ps,
                            run_id=None, condition_id=None, end_of_stream=False):
    """Return the multipart frames of one photons message of raw PicoQuant TTTR records.

    `records` are 32-bit records exactly as read from the device or a PTU file; `record_type`
    is the PTU `TTResultFormat_TTTRRecType` code (0x01010304: HydraHarp v2 T3); `macro_unit_ps`
    is the sync period (T3) or global resolution (T2) and `micro_bin_ps` the micro-time bin, in
    ps. `end_of_stream` marks the source's last message of an acquisition.
    """
    records = np.ascontiguousarray(records, dtype="<u4")
    meta = {"record_type": int(record_type), "macro_unit_ps": float(macro_unit_ps),
            "micro_bin_ps": float(micro_bin_ps)}
    header = header_frame(source, "photons", seq, [("records", records.dtype.str, records.shape)], meta,
                          run_id=run_id, condition_id=condition_id, end_of_stream=end_of_stream)
    return [header, records.tobytes()]


# A Swabian Time Tagger `Tag`: type (0: time tag), reserved, missed events, channel, time in ps.
SWABIAN_TAG = np.dtype([("type", "u1"), ("reserved", "u1"), ("missed_events", "<u2"),
                        ("channel", "<i4"), ("time_ps", "<i8")])


def time_tag_frames(source, seq, channels, times_ps, detector_channels, sync_channel=None,
                    marker_channels=None, micro_bin_ps=1, run_id=None, end_of_stream=False):
    """Return the multipart frames of one photons message of time tags in the Swabian layout.

    `channels` and `times_ps` are the tags' input channels and times, in time order (a
    tagger's stream, as its `TimeTagStream` hands it over). `detector_channels` lists the
    input channels of detectors (position = output `channel`); with `sync_channel`, photons
    are timed against the last sync (micro time = delay since it), as in T3 mode.
    """
    tags = np.zeros(len(times_ps), dtype=SWABIAN_TAG)
    tags["channel"] = channels
    tags["time_ps"] = times_ps
    meta = {"detector_channels": [int(c) for c in detector_channels], "micro_bin_ps": int(micro_bin_ps)}
    if sync_channel is not None:
        meta["sync_channel"] = int(sync_channel)
    if marker_channels:
        meta["marker_channels"] = [int(c) for c in marker_channels]
    arrays = [("time_tags", "|u1", (len(tags), SWABIAN_TAG.itemsize))]
    header = header_frame(source, "photons", seq, arrays, meta, run_id=run_id, end_of_stream=end_of_stream)
    return [header, tags.tobytes()]


# PTU tag types whose 8-byte value is the length of data that follows the tag.
_PTU_SIZED_TAGS = {0x2001FFFF, 0x4001FFFF, 0x4002FFFF, 0xFFFFFFFF}
_PTU_FLOAT8 = 0x20000008


def read_ptu(path):
    """Read a PicoQuant PTU file: `(tags, records)`, the header tags by name (numbers only;
    strings and blobs are skipped) and the 32-bit TTTR records as a numpy array."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[:6].tobytes() != b"PQTTTR":
        raise ValueError(f"{path}: not a PTU file")
    offset, tags = 16, {}
    while True:
        if offset + 48 > len(data):
            raise ValueError(f"{path}: header ends without Header_End")
        ident = data[offset:offset + 32].tobytes().split(b"\0", 1)[0].decode("ascii", "replace")
        index, kind = np.frombuffer(data[offset + 32:offset + 40].tobytes(), dtype="<i4")
        kind = int(kind) & 0xFFFFFFFF
        raw = data[offset + 40:offset + 48].tobytes()
        offset += 48
        if kind in _PTU_SIZED_TAGS:
            offset += int(np.frombuffer(raw, dtype="<i8")[0])
            continue
        value = float(np.frombuffer(raw, dtype="<f8")[0]) if kind == _PTU_FLOAT8 else int(
            np.frombuffer(raw, dtype="<i8")[0])
        tags[ident if index < 0 else f"{ident}[{index}]"] = value
        if ident == "Header_End":
            break
    count = int(tags.get("TTResult_NumberOfRecords", (len(data) - offset) // 4))
    records = np.frombuffer(data[offset:offset + 4 * count].tobytes(), dtype="<u4")
    return tags, records


def send_ptu(push, source, path, records_per_message=65536, run_id=None):
    """Send a PTU file's records as raw-records messages, the last one marked end_of_stream;
    return the number of messages."""
    tags, records = read_ptu(path)
    record_type = tags["TTResultFormat_TTTRRecType"]
    # T3: the global resolution is the sync period; the resolution is the micro-time bin.
    macro_unit_ps = tags["MeasDesc_GlobalResolution"] * 1e12
    micro_bin_ps = tags.get("MeasDesc_Resolution", 0.0) * 1e12
    starts = range(0, len(records), records_per_message)  # no records: no message
    for seq, start in enumerate(starts):
        push.send_multipart(picoquant_record_frames(
            source, seq, records[start:start + records_per_message], record_type, macro_unit_ps,
            micro_bin_ps, run_id=run_id, end_of_stream=seq == len(starts) - 1))
    return len(starts)


class AcknowledgedSender:
    """DEALER sender that keeps every message until the server acknowledges its `seq`.

    The server acknowledges only once the message is durable in its write-ahead log, and a
    resend of a message it already holds is acknowledged as a duplicate, not stored twice. So a
    sender that resends whatever is unacknowledged (after a `retry: true` nack, or after a
    silence, over a new connection) stores every message exactly once. Give every message of
    one counter the same `session` (docs/wire-protocol.md, "Exactly once").
    """

    def __init__(self, context, endpoint):
        self.context = context
        self.endpoint = endpoint
        self.socket = None
        self.unacknowledged = {}
        self.refused = {}
        self.duplicates = 0
        self.connect()

    def connect(self):
        """(Re)connect: after a server restart the old connection is gone."""
        if self.socket is not None:
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(self.endpoint)

    def send(self, seq, frames):
        self.unacknowledged[seq] = frames
        self.socket.send_multipart(frames)

    def collect_acks(self, timeout_ms=100):
        """Read every reply available; return the decoded replies. An ack (plain or duplicate)
        or a final nack (`retry: false`) settles its message; a `retry: true` nack keeps it."""
        replies = []
        while self.socket.poll(timeout_ms):
            reply = json.loads(self.socket.recv_multipart()[-1])
            replies.append(reply)
            if "ack" in reply:
                self.duplicates += bool(reply.get("duplicate"))
                self.unacknowledged.pop(reply["ack"], None)
            elif not reply.get("retry") and reply.get("nack") is not None:
                self.refused[reply["nack"]] = reply.get("error")
                self.unacknowledged.pop(reply["nack"], None)
            timeout_ms = 0
        return replies

    def resend_unacknowledged(self):
        for seq in sorted(self.unacknowledged):
            self.socket.send_multipart(self.unacknowledged[seq])

    def flush(self, silence_ms=2000, attempts=30):
        """Resend until every message is acknowledged or refused (bounded); return whether it was."""
        for _ in range(attempts):
            if not self.unacknowledged:
                return True
            if not self.collect_acks(silence_ms):
                self.connect()
            self.resend_unacknowledged()
        self.collect_acks(silence_ms)
        return not self.unacknowledged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint", help="the server's PULL endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--source", default="python-example")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--ptu", default=None, help="send this PTU file's records instead of spectra")
    parser.add_argument("--records-per-message", type=int, default=65536)
    args = parser.parse_args()

    if args.ptu:
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.connect(args.endpoint)
        messages = send_ptu(push, args.source, args.ptu, args.records_per_message, run_id=args.run_id)
        push.close(linger=5000)
        context.term()
        print(f"sent {messages} messages of {args.ptu} records to {args.endpoint}")
        return

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
