"""Sending measurements to flowdaq: PUSH for speed, DEALER for acknowledged, exactly-once delivery.

An instrument loop that may not lose a spectrum uses `Sender(endpoint)` on the server's ROUTER
endpoint: every message is kept until the server acknowledges it (only once it is durable in the
write-ahead log), resent after a `retry: true` nack or a silence, and a resend of a message the
server already holds is acknowledged as a duplicate, not stored twice. A loop that can afford to
block instead uses `Sender(endpoint, acknowledged=False)` on the PULL endpoint.

    with Sender("tcp://127.0.0.1:5557", source="spec-1") as sender:
        for spectrum in spectrometer:
            sender.send_spectrum(wavelength_nm, spectrum, run_id="run-7")
    # leaving the block flushes: every message acknowledged, or MessageRefused with the reason
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import zmq

from .errors import FlowdaqError, MessageRefused
from .wire import histogram_frames, picoquant_record_frames, read_ptu, readings_frames, spectrum_frames

Frames = List[bytes]


class AcknowledgedSender:
    """DEALER sender that keeps every message until the server acknowledges its `seq`.

    The server acknowledges only once the message is durable in its write-ahead log, and a
    resend of a message it already holds is acknowledged as a duplicate, not stored twice. So a
    sender that resends whatever is unacknowledged (after a `retry: true` nack, or after a
    silence, over a new connection) stores every message exactly once. Give every message of
    one counter the same `session` (docs/wire-protocol.md, "Exactly once").
    """

    def __init__(self, context: zmq.Context, endpoint: str):
        self.context = context
        self.endpoint = endpoint
        self.socket: Optional[zmq.Socket] = None
        self.unacknowledged: Dict[int, Frames] = {}
        self.refused: Dict[int, Any] = {}
        self.duplicates = 0
        self.connect()

    def connect(self) -> None:
        """(Re)connect: after a server restart the old connection is gone."""
        if self.socket is not None:
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(self.endpoint)

    def send(self, seq: int, frames: Frames) -> None:
        """Send one message and keep it until acknowledged."""
        self.unacknowledged[seq] = frames
        self.socket.send_multipart(frames)

    def collect_acks(self, timeout_ms: int = 100) -> List[Dict[str, Any]]:
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

    def resend_unacknowledged(self) -> None:
        """Send again, in seq order, every message not yet settled."""
        for seq in sorted(self.unacknowledged):
            self.socket.send_multipart(self.unacknowledged[seq])

    def flush(self, silence_ms: int = 2000, attempts: int = 30) -> bool:
        """Resend until every message is acknowledged or refused (bounded); return whether it was."""
        for _ in range(attempts):
            if not self.unacknowledged:
                return True
            if not self.collect_acks(silence_ms):
                self.connect()
            self.resend_unacknowledged()
        self.collect_acks(silence_ms)
        return not self.unacknowledged

    def close(self) -> None:
        """Close the socket; unacknowledged messages are dropped."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None


class Sender:
    """One source's messages to one flowdaq server, numbered by `seq` in one `session`.

    `endpoint` is the server's ROUTER endpoint when `acknowledged` (the default) or its PULL
    endpoint otherwise (both printed on `flowdaq serve`'s ready line). `session` names this life
    of the seq counter (default: a fresh random one), so a restarted sender's seq 0 is new data,
    not a duplicate. Arrays may be numpy arrays, pyarrow arrays or anything numpy converts.
    With acknowledgements, `flush()` (also on leaving a `with` block) waits until the server
    holds every message and raises `MessageRefused` with the server's reason for any it refused.
    """

    def __init__(self, endpoint: str, source: str, *, acknowledged: bool = True,
                 session: Optional[str] = None, context: Optional[zmq.Context] = None,
                 max_unacknowledged: int = 1000):
        self.source = source
        self.session = session or uuid.uuid4().hex
        self.seq = 0
        self.acknowledged = acknowledged
        self.max_unacknowledged = max_unacknowledged
        self._context = context or zmq.Context.instance()
        if acknowledged:
            self._dealer: Optional[AcknowledgedSender] = AcknowledgedSender(self._context, endpoint)
            self._push: Optional[zmq.Socket] = None
        else:
            self._dealer = None
            self._push = self._context.socket(zmq.PUSH)
            self._push.connect(endpoint)

    # -- messages ---------------------------------------------------------------------------

    def send_spectrum(self, wavelength_nm: Any, counts: Any, *, kind: str = "pl",
                      integration_time_ms: float = 10.0, run_id: Optional[str] = None,
                      condition_id: Optional[str] = None, instrument_time_ns: Optional[int] = None) -> int:
        """Send one spectrum, or several (a 2-D `counts`, one row per spectrum) sharing one
        wavelength axis; return its seq."""
        return self.send_frames(lambda seq: spectrum_frames(
            self.source, seq, _array(wavelength_nm, "<f8"), _array(counts, "<f4"), kind=kind,
            integration_time_ms=integration_time_ms, run_id=run_id, condition_id=condition_id,
            instrument_time_ns=instrument_time_ns, session=self.session))

    def send_histogram(self, counts: Any, bin_width_ps: float, sync_rate_hz: float, *,
                       irf_counts: Any = None, channel: int = 0, run_id: Optional[str] = None,
                       condition_id: Optional[str] = None) -> int:
        """Send one TCSPC decay histogram (and optionally its measured IRF); return its seq."""
        irf = None if irf_counts is None else _array(irf_counts, "<f8")
        return self.send_frames(lambda seq: histogram_frames(
            self.source, seq, _array(counts, "<u4"), bin_width_ps, sync_rate_hz, irf_counts=irf,
            channel=channel, run_id=run_id, condition_id=condition_id, session=self.session))

    def send_readings(self, values: Dict[str, Any], *, event_time_ns: Any = None,
                      stream_name: Optional[str] = None, units: Optional[Dict[str, str]] = None,
                      run_id: Optional[str] = None, condition_id: Optional[str] = None) -> int:
        """Send scalar readings (a pump rate, a bath temperature): `values` maps each key to one
        value per event (a number, a sequence or array of them, or strings); return its seq."""
        return self.send_frames(lambda seq: readings_frames(
            self.source, seq, values, event_time_ns=event_time_ns, stream_name=stream_name,
            units=units, run_id=run_id, condition_id=condition_id, session=self.session))

    def send_ptu(self, path: str, records_per_message: int = 65536, run_id: Optional[str] = None) -> int:
        """Send a PicoQuant PTU file's records, the last message marked `end_of_stream`; return
        the number of messages."""
        tags, records = read_ptu(path)
        record_type = tags["TTResultFormat_TTTRRecType"]
        macro_unit_ps = tags["MeasDesc_GlobalResolution"] * 1e12
        micro_bin_ps = tags.get("MeasDesc_Resolution", 0.0) * 1e12
        starts = range(0, len(records), records_per_message)
        for index, start in enumerate(starts):
            chunk = records[start:start + records_per_message]
            last = index == len(starts) - 1
            self.send_frames(lambda seq: picoquant_record_frames(
                self.source, seq, chunk, record_type, macro_unit_ps, micro_bin_ps, run_id=run_id,
                end_of_stream=last, session=self.session))
        return len(starts)

    def send_spectra_file(self, path: str, *, kind: str = "pl", integration_time_ms: float = 10.0,
                          run_id: Optional[str] = None) -> int:
        """Send the spectra of a delimited text file as one message; return its seq.

        The file's first column is the wavelength in nm and each further column one spectrum
        (comma, semicolon, tab or space separated); lines that are not all numbers (titles,
        headers, metadata) are skipped. Vendor exports with their own layouts (Ocean Optics,
        JASCO, Agilent Cary, PicoQuant) are read by `flowdaq replay FILE --to ENDPOINT`.
        """
        table = read_spectra_text(path)
        return self.send_spectrum(table[:, 0], table[:, 1:].T, kind=kind,
                                  integration_time_ms=integration_time_ms, run_id=run_id)

    def send_frames(self, build: Callable[[int], Frames]) -> int:
        """Send the frames `build(seq)` returns under the next seq; return that seq. With
        acknowledgements, waits for replies while `max_unacknowledged` messages are pending."""
        seq = self.seq
        frames = build(seq)
        self.seq += 1
        if self._dealer is None:
            self._push.send_multipart(frames)
            return seq
        self._dealer.send(seq, frames)
        self._dealer.collect_acks(0)
        if len(self._dealer.unacknowledged) >= self.max_unacknowledged:
            self._settle(self.max_unacknowledged - 1, timeout_s=60.0, silence_s=1.0)
        self._raise_refused()
        return seq

    # -- delivery ---------------------------------------------------------------------------

    @property
    def unacknowledged(self) -> int:
        """Messages sent and not yet acknowledged (0 without acknowledgements)."""
        return len(self._dealer.unacknowledged) if self._dealer else 0

    @property
    def duplicates(self) -> int:
        """Resends the server already held (acknowledged as duplicates, stored once)."""
        return self._dealer.duplicates if self._dealer else 0

    def flush(self, timeout_s: float = 60.0, silence_s: float = 1.0) -> None:
        """Wait until the server holds every message sent so far.

        Replies are read as they come; after `silence_s` without one, the connection is renewed
        and every unacknowledged message resent (the server acknowledges a message it already
        holds as a duplicate and stores it once). A message nacked with `retry: true` (not
        durable now, e.g. a full disk) is resent after a back-off. Raises `MessageRefused` for a
        message the server refused for good (its reason attached), `FlowdaqError` when messages
        are still unacknowledged after `timeout_s`. Without acknowledgements nothing is known of
        delivery: this returns at once.
        """
        if self._dealer is not None:
            self._settle(0, timeout_s, silence_s)

    def _settle(self, pending: int, timeout_s: float, silence_s: float) -> None:
        """Read replies until at most `pending` messages are unacknowledged, resending after a
        silence or a `retry` nack; `MessageRefused` or `FlowdaqError` as `flush` says."""
        deadline = time.monotonic() + timeout_s
        backoff_s = 0.05
        while len(self._dealer.unacknowledged) > pending and time.monotonic() < deadline:
            replies = self._dealer.collect_acks(int(silence_s * 1000))
            self._raise_refused()
            if not replies:
                self._dealer.connect()
                self._dealer.resend_unacknowledged()
            elif any(reply.get("retry") for reply in replies):
                time.sleep(backoff_s)  # the server asked to retry later: back off, then resend
                backoff_s = min(2 * backoff_s, 2.0)
                self._dealer.resend_unacknowledged()
        self._raise_refused()
        if len(self._dealer.unacknowledged) > pending:
            waiting = sorted(self._dealer.unacknowledged)
            raise FlowdaqError(f"{len(waiting)} messages of {self.source!r} unacknowledged after "
                               f"{timeout_s} s (first seq {waiting[0]})")

    def close(self, linger_s: float = 5.0) -> None:
        """Close the socket (a PUSH socket lingers up to `linger_s` to hand over what is queued)."""
        if self._dealer is not None:
            self._dealer.close()
        if self._push is not None:
            self._push.close(linger=int(linger_s * 1000))

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self.close()

    def _raise_refused(self) -> None:
        if self._dealer is not None and self._dealer.refused:
            seq, reason = next(iter(self._dealer.refused.items()))
            self._dealer.refused.pop(seq)
            raise MessageRefused(self.source, seq, reason)


def read_spectra_text(path: str) -> np.ndarray:
    """The numeric rows of a delimited text file, as a 2-D array (rows x columns).

    Raises `ValueError` naming the file when it holds no numeric rows or rows of different widths.
    """
    rows: List[List[float]] = []
    with open(path, encoding="utf-8", errors="replace") as text:
        for line in text:
            fields = [f for f in line.replace(",", " ").replace(";", " ").replace("\t", " ").split() if f]
            try:
                values = [float(f) for f in fields]
            except ValueError:
                continue
            if len(values) >= 2:
                rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no rows of numbers (wavelength, then one column per spectrum)")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: numeric rows of different widths {sorted(widths)}")
    return np.asarray(rows, dtype="<f8")


def _array(values: Any, dtype: str) -> np.ndarray:
    """`values` (numpy, pyarrow or a sequence) as a C-ordered numpy array of `dtype`."""
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy(zero_copy_only=False) if _is_arrow(values) else values.to_numpy()
    return np.ascontiguousarray(np.asarray(values), dtype=dtype)


def _is_arrow(values: Any) -> bool:
    return type(values).__module__.startswith("pyarrow")

