"""flowdaq's client for conditions, outcomes, feature streams and SQL (pyzmq + pyarrow).

Why it exists: an optimizer (Ax, BoTorch, Atlas, Summit) that drives a flow reactor needs three
things from flowdaq, all specified in docs/feature-streams.md: register the condition it just
set, follow the feature rows and outcomes as they are computed, and never miss or double-count
a row even when it joins late, disconnects or reads too slowly. The PUB feature stream alone
cannot promise that (PUB drops for slow subscribers, and a late subscriber sees nothing of the
past), so every row carries a per-stream `stream_seq` and the control endpoint can replay any
range. This module does the bookkeeping once, so a loop can simply iterate over rows:

    client = Client("tcp://127.0.0.1:5561", "tcp://127.0.0.1:5560")
    client.register_condition("run-7", "c-0001", {"temperature": {"value": 140, "unit": "degC"}})
    with client.subscribe(["spectral_features/run-7/"]) as sub:
        for stream, row in sub:          # every row exactly once, in stream_seq order per stream
            ...

Only pyzmq is needed for JSON; pyarrow is imported when `format="arrow"` is used.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import zmq

from .errors import ControlError, ControlTimeout, FlowdaqError
from .sql import SqlConnection

JSON = "json"
ARROW = "arrow"
FORMATS = (JSON, ARROW)

Row = Dict[str, Any]


def stream_matches(stream: str, prefix: str) -> bool:
    """Whether `stream` (`{table}/{run_id}/{source}`) lies under `prefix`, by whole components.

    `""` matches everything; `"spectral_features"` and `"spectral_features/"` match every stream
    of that table (and not `spectral_features_x/...`); a full stream name matches only itself.
    """
    if not prefix:
        return True
    base = prefix.rstrip("/")
    return stream == base or stream.startswith(base + "/")


def decode_rows(payload: bytes, fmt: str):
    """A message payload as rows: a list of dicts for `json`, a `pyarrow.Table` for `arrow`."""
    if fmt == JSON:
        rows = json.loads(payload)
        if not isinstance(rows, list):
            raise FlowdaqError(f"json payload is not an array of rows: {str(rows)[:200]}")
        return rows
    if fmt == ARROW:
        import pyarrow as pa

        return pa.ipc.open_stream(payload).read_all()
    raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")


def arrow_to_rows(table) -> List[Row]:
    """Rows of an Arrow table as dicts. Timestamps become int nanoseconds since the epoch (UTC):
    Python's datetime has no nanoseconds, and pyarrow refuses to drop them silently."""
    import pyarrow as pa

    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        columns.append(column)
    return pa.table(columns, names=table.schema.names).to_pylist()


def _as_rows(rows) -> List[Row]:
    return rows if isinstance(rows, list) else arrow_to_rows(rows)


def _stream_of(topic: bytes, header: Mapping[str, Any]) -> str:
    """`{table}/{run_id}/{source}`: the header's `topic`, else the topic frame minus its format."""
    if header.get("topic"):
        return str(header["topic"])
    text = topic.decode()
    return text.split("/", 1)[1] if "/" in text else text


def _check_parameters(parameters: Mapping[str, Any]) -> None:
    """Refuse locally what the server would refuse: non-numeric or non-finite values."""
    for name, entry in parameters.items():
        value = entry.get("value") if isinstance(entry, Mapping) else entry
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"parameter {name!r}: value must be a finite number, not {value!r}")


class Client:
    """Talks to one flowdaq server: `control` is its ROUTER endpoint, `publish` its PUB endpoint,
    `http` its HTTP base URL and `flight_sql` its Flight SQL address (all printed on
    `flowdaq serve`'s ready line; give those the calls need). `token` is sent with every request
    when the server has `[auth]` tokens (default: the FLOWDAQ_TOKEN environment variable)."""

    def __init__(self, control: Optional[str] = None, publish: Optional[str] = None,
                 context: Optional[zmq.Context] = None, token: Optional[str] = None, *,
                 http: Optional[str] = None, flight_sql: Optional[str] = None):
        self.control = control
        self.publish = publish
        self.token = token if token is not None else os.environ.get("FLOWDAQ_TOKEN")
        self.context = context or zmq.Context.instance()
        self._sql = SqlConnection(http, flight_sql, self.token) if (http or flight_sql) else None
        # Outcome rows seen by wait_outcomes, so rows read while waiting for one condition are
        # not lost for a later wait: (run_id, condition_id, feature) -> rows.
        self._outcomes: Dict[Tuple[str, str, str], List[Row]] = {}

    # -- SQL ----------------------------------------------------------------------------------

    def sql(self, query: str, parameters: Optional[Sequence[Any]] = None, output: str = "arrow",
            timeout_s: float = 60.0) -> Any:
        """The answer to a read-only SQL `query` as a pyarrow.Table (`output="arrow"`), a
        pandas or a polars DataFrame; over Flight SQL when available, else HTTP. `parameters`
        fill the query's `?` placeholders (Flight SQL only). Raises `QueryError` with the
        server's reason."""
        if self._sql is None:
            raise FlowdaqError("this client has no SQL address: pass http= or flight_sql=")
        return self._sql.query(query, parameters, output, timeout_s)

    # -- control endpoint -------------------------------------------------------------------

    def request(self, message: Mapping[str, Any], timeout_s: float = 10.0) -> List[bytes]:
        """Send one JSON request to the control endpoint; return the answer's frames.

        A fresh REQ socket per request: a REQ whose answer never came is stuck in its lockstep,
        so reusing one after a timeout would need a reconnect anyway.
        """
        if not self.control:
            raise FlowdaqError("this client has no control endpoint: pass control=")
        socket = self.context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            socket.connect(self.control)
            if self.token:
                message = {**message, "token": self.token}
            socket.send(json.dumps(message).encode())
            if not socket.poll(int(timeout_s * 1000), zmq.POLLIN):
                raise ControlTimeout(f"no answer from {self.control} to {message.get('op')!r} within {timeout_s} s")
            return socket.recv_multipart()
        finally:
            socket.close(linger=0)

    def register_condition(
        self,
        run_id: str,
        condition_id: str,
        parameters: Mapping[str, Any],
        start_time_ns: Optional[int] = None,
        registered_by: str = "client",
        timeout_s: float = 10.0,
    ) -> Dict[str, Any]:
        """Register a reaction condition; return the server's answer once the row is durable.

        `parameters` maps names to a number or `{"value": x, "unit": "u"}`. `start_time_ns` is
        when the condition took effect, on the instruments' clock (default: the server's
        arrival time). Raises ControlError if the server refuses (e.g. a second registration
        of the same `(run_id, condition_id)`). After a ControlTimeout the registration may
        still have happened: look for it (`replay("conditions/{run_id}/")`) before retrying.
        """
        _check_parameters(parameters)
        message: Dict[str, Any] = {
            "op": "register_condition",
            "run_id": run_id,
            "condition_id": condition_id,
            "parameters": dict(parameters),
            "registered_by": registered_by,
        }
        if start_time_ns is not None:
            message["start_time_ns"] = int(start_time_ns)
        frames = self.request(message, timeout_s)
        answer = json.loads(frames[0])
        if not answer.get("ok"):
            raise ControlError("register_condition", answer)
        return answer

    def replay(
        self,
        prefix: str = "",
        after: Optional[Mapping[str, int]] = None,
        format: str = JSON,
        max_rows: int = 50000,
        timeout_s: float = 60.0,
    ) -> Iterator[Tuple[str, Dict[str, Any], Any]]:
        """Yield `(stream, header, rows)` for every published row under `prefix` after `after`.

        `after` maps streams to the last `stream_seq` already held (others start after 0).
        `rows` is a list of dicts (`json`) or a `pyarrow.Table` (`arrow`), in `stream_seq`
        order. Asks again, with `after` advanced, for as long as the server says `more`.
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
        held = {stream: int(seq) for stream, seq in (after or {}).items()}
        while True:
            request = {"op": "replay", "prefix": prefix, "after": held, "format": format, "max_rows": int(max_rows)}
            frames = self.request(request, timeout_s)
            status = json.loads(frames[0])
            if not status.get("ok"):
                raise ControlError("replay", status)
            body = frames[1:]
            if len(body) % 3:
                raise FlowdaqError(f"replay answer has {len(body)} frames after the status, not triples")
            progressed = False
            for i in range(0, len(body), 3):
                topic, header_frame, payload = body[i : i + 3]
                header = json.loads(header_frame)
                stream = _stream_of(topic, header)
                if "last_seq" in header and int(header["last_seq"]) > held.get(stream, 0):
                    held[stream] = int(header["last_seq"])
                    progressed = True
                yield stream, header, decode_rows(payload, format)
            for stream, seq in (status.get("last") or {}).items():
                if int(seq) > held.get(stream, 0):
                    held[stream] = int(seq)
                    progressed = True
            if not status.get("more"):
                return
            if not progressed:
                raise FlowdaqError(f"replay of {prefix!r} says more but returned nothing new: {status}")

    # -- feature stream ---------------------------------------------------------------------

    def subscribe(self, prefixes: Sequence[str] | str = ("",), format: str = JSON, from_start: bool = True,
                  **options: Any) -> "Subscriber":
        """Subscribe to the streams under `prefixes` (`{table}/{run_id}/{source}` prefixes,
        without the format). See `Subscriber` for the options."""
        return Subscriber(self, prefixes, format=format, from_start=from_start, **options)

    def wait_outcomes(
        self,
        run_id: str,
        condition_ids: Iterable[str],
        features: Iterable[str],
        timeout_s: float,
        subscription: Optional["Subscriber"] = None,
        source: Optional[str] = None,
    ) -> List[Row]:
        """Read `condition_outcomes` rows until every (condition, feature) has one; return them.

        Settled or not: an unsettled outcome (`settled = false`, with its `reason`) is an
        outcome too. `features` are `table.column` names such as
        `spectral_features.peak_energy_ev`; `source` restricts to one instrument. Pass a
        long-lived `subscription` to `condition_outcomes/{run_id}/` to avoid replaying the run's
        outcomes on every call. Raises TimeoutError naming what is missing.
        """
        wanted = [(c, f) for c in condition_ids for f in features]
        own = subscription is None
        if own:
            subscription = self.subscribe([f"condition_outcomes/{run_id}/"], from_start=True)
        deadline = time.monotonic() + timeout_s

        def missing() -> List[Tuple[str, str]]:
            return [(c, f) for c, f in wanted if not self._held_outcomes(run_id, c, f, source)]

        try:
            while missing():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                item = subscription.next(remaining)
                if item is None:
                    continue
                _, row = item
                if "feature" in row and "condition_id" in row:
                    key = (row.get("run_id"), row.get("condition_id"), row.get("feature"))
                    self._outcomes.setdefault(key, []).append(row)
        finally:
            if own:
                subscription.close()
        absent = missing()
        if absent:
            raise TimeoutError(f"no outcome within {timeout_s} s for run {run_id!r}: {absent}")
        return [row for c, f in wanted for row in self._held_outcomes(run_id, c, f, source)]

    def wait_outcome(self, run_id: str, condition_id: str, feature: str, timeout_s: float,
                     source: Optional[str] = None) -> Row:
        """The outcome row of one condition and feature (settled or not); `TimeoutError` if
        none came within `timeout_s`. See `wait_outcomes` for several at once."""
        rows = self.wait_outcomes(run_id, [condition_id], [feature], timeout_s, source=source)
        return rows[-1]

    def _held_outcomes(self, run_id: str, condition_id: str, feature: str, source: Optional[str]) -> List[Row]:
        rows = self._outcomes.get((run_id, condition_id, feature), [])
        return [r for r in rows if source is None or r.get("source") == source]

    def close(self) -> None:
        """Close the SQL connection, if any; sockets live per request and per subscription."""
        if self._sql is not None:
            self._sql.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscriber:
    """Every row under some stream prefixes exactly once, in `stream_seq` order per stream.

    The recipe of docs/feature-streams.md: the SUB socket subscribes first; then (with
    `from_start`) everything already published is replayed; a live message whose rows are all
    held is dropped, one that starts beyond the next expected row (`first_seq > last + 1`) makes
    the client replay that stream after what it holds before it goes on. `pause()` closes the
    SUB socket (the server goes on publishing); `resume()` reopens it and replays what was
    missed. When no live message came for `idle_replay_s`, the client replays too: a row
    published before the subscription reached the server, or the last row of a stream that
    then fell silent, has no later row to reveal its absence.

    Replays are fetched a page (`replay_max_rows`) at a time, as next() needs rows, so catching
    up on a long backlog does not hold it all in memory. While a replay is under way the SUB
    socket is not read; what queues there meanwhile is either already held (dropped) or
    dropped by ZeroMQ and found again as a gap.

    Rows are dicts in both formats (`arrow` rows decoded by pyarrow, timestamps as int ns).

    Options: `idle_replay_s` (None disables idle replays), `connect_timeout_s` (how long to wait
    for the SUB connection before the first replay), `replay_max_rows`, `rcvhwm` and `rcvbuf`
    (ZeroMQ receive high-water mark in messages and kernel buffer in bytes; small values make a
    slow reader lose messages early instead of buffering them), `iter_timeout_s` (iteration
    stops after that long without a row; None: iterate forever).
    """

    def __init__(
        self,
        client: Client,
        prefixes: Sequence[str] | str = ("",),
        format: str = JSON,
        from_start: bool = True,
        idle_replay_s: Optional[float] = 1.0,
        connect_timeout_s: float = 5.0,
        replay_max_rows: int = 10000,
        rcvhwm: Optional[int] = None,
        rcvbuf: Optional[int] = None,
        iter_timeout_s: Optional[float] = None,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
        self.client = client
        self.prefixes: List[str] = [prefixes] if isinstance(prefixes, str) else list(prefixes)
        if not self.prefixes:
            raise ValueError("subscribe to at least one prefix ('' is everything)")
        self.format = format
        self.from_start = from_start
        self.idle_replay_s = idle_replay_s
        self.connect_timeout_s = connect_timeout_s
        self.replay_max_rows = replay_max_rows
        self.rcvhwm = rcvhwm
        self.rcvbuf = rcvbuf
        self.iter_timeout_s = iter_timeout_s
        self._last: Dict[str, int] = {}
        self._pending: Deque[Tuple[str, Row]] = collections.deque()
        self._replays: Deque[Iterator[Tuple[str, Dict[str, Any], Any]]] = collections.deque()
        self._deferred: Optional[Tuple[List[bytes], int]] = None  # a live message behind a gap, attempts
        self._socket: Optional[zmq.Socket] = None
        self._last_activity = time.monotonic()
        self._closed = False
        self.stats = {
            "live_messages": 0,   # live messages that carried at least one new row
            "live_rows": 0,       # rows delivered from live messages
            "duplicate_rows": 0,  # rows dropped because already held (live or replayed)
            "gaps": 0,            # live messages that started beyond the next expected row
            "replays": 0,         # replays started (initial, gap repair, resume, idle)
            "replayed_rows": 0,   # rows delivered from replays
        }
        self.resume()

    # -- public ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> Dict[str, int]:
        """The last `stream_seq` handed over or queued, per stream."""
        return dict(self._last)

    @property
    def paused(self) -> bool:
        return self._socket is None

    def next(self, timeout_s: Optional[float] = None) -> Optional[Tuple[str, Row]]:
        """The next `(stream, row)`, or None if none came within `timeout_s` (None: wait).
        While paused, only rows already queued or replayed are returned."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._work():
                continue
            if self._socket is None:
                return None
            if self._socket.poll(0, zmq.POLLIN):  # live messages already here come first
                self._on_live(self._socket.recv_multipart(), attempts=0)
                self._last_activity = time.monotonic()
                continue
            now = time.monotonic()
            wait = math.inf if deadline is None else deadline - now
            if self.idle_replay_s is not None:
                idle_due = self._last_activity + self.idle_replay_s - now
                if idle_due <= 0:
                    self._start_catch_up()
                    self._last_activity = now
                    continue
                wait = min(wait, idle_due)
            if wait <= 0:
                return None
            if self._socket.poll(None if wait == math.inf else max(1, int(wait * 1000)), zmq.POLLIN):
                self._on_live(self._socket.recv_multipart(), attempts=0)
                self._last_activity = time.monotonic()

    def __iter__(self) -> Iterator[Tuple[str, Row]]:
        while True:
            item = self.next(self.iter_timeout_s)
            if item is None:
                return
            yield item

    def catch_up(self) -> int:
        """Replay now everything after what is held (for `from_start`; otherwise for the
        streams seen so far) and queue it; return the number of rows queued."""
        before = len(self._pending)
        self._start_catch_up()
        while self._replays:
            self._work()
        return len(self._pending) - before

    def pause(self) -> None:
        """Close the SUB socket; rows already queued stay available to next()."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def resume(self) -> None:
        """(Re)open the SUB socket and wait for the connection; next() then replays what
        was missed before it reads live messages."""
        if self._closed:
            raise FlowdaqError("subscription is closed")
        if self._socket is not None:
            return
        socket = self.client.context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        if self.rcvhwm is not None:
            socket.setsockopt(zmq.RCVHWM, int(self.rcvhwm))
        if self.rcvbuf is not None:
            socket.setsockopt(zmq.RCVBUF, int(self.rcvbuf))
        for prefix in self.prefixes:
            socket.setsockopt(zmq.SUBSCRIBE, f"{self.format}/{prefix}".encode())
        self._connect_and_wait(socket)
        self._socket = socket
        if self.from_start or self._last:
            self._start_catch_up()
        self._last_activity = time.monotonic()

    def reconnect(self) -> None:
        self.pause()
        self.resume()

    def close(self) -> None:
        self.pause()
        self._replays.clear()
        self._closed = True

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _connect_and_wait(self, socket: zmq.Socket) -> None:
        """Connect and wait (bounded) until the ZeroMQ handshake is done, so the subscription
        is on its way to the server before the replay is asked for. Not a guarantee (the
        server applies it asynchronously): gap repair and idle replays cover the rest."""
        event = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
        monitor = socket.get_monitor_socket(event)
        try:
            socket.connect(self.client.publish)
            if monitor.poll(int(self.connect_timeout_s * 1000), zmq.POLLIN):
                monitor.recv_multipart()
        finally:
            socket.disable_monitor()
            monitor.close(linger=0)

    def _start_catch_up(self) -> None:
        if self.from_start:
            for prefix in self.prefixes:
                self._start_replay(prefix, {s: q for s, q in self._last.items() if stream_matches(s, prefix)})
        else:
            for stream, seq in self._last.items():
                self._start_replay(stream, {stream: seq})

    def _start_replay(self, prefix: str, after: Dict[str, int]) -> None:
        self.stats["replays"] += 1
        self._replays.append(self.client.replay(prefix, after, self.format, self.replay_max_rows))

    def _work(self) -> bool:
        """One step of pending replays (one message's rows), else the live message that waited
        for them. Returns False when there was nothing to do."""
        while self._replays:
            try:
                stream, _header, rows = next(self._replays[0])
            except StopIteration:
                self._replays.popleft()
                continue
            if any(stream_matches(stream, p) for p in self.prefixes):
                self.stats["replayed_rows"] += self._accept(stream, _as_rows(rows))
            return True
        if self._deferred is not None:
            frames, attempts = self._deferred
            self._deferred = None
            self._on_live(frames, attempts)
            return True
        return False

    def _accept(self, stream: str, rows: List[Row]) -> int:
        """Queue the rows not yet held; they must continue the stream without a gap."""
        held = self._last.get(stream, 0)
        taken = 0
        for row in rows:
            seq = int(row["stream_seq"])
            if seq <= held:
                self.stats["duplicate_rows"] += 1
                continue
            if seq != held + 1:
                raise FlowdaqError(f"{stream}: row {seq} follows {held}: rows are missing")
            self._pending.append((stream, row))
            held = seq
            taken += 1
        if taken:
            self._last[stream] = held
        return taken

    def _on_live(self, frames: List[bytes], attempts: int, max_attempts: int = 5) -> None:
        if len(frames) != 3:
            raise FlowdaqError(f"a live message has {len(frames)} frames, not 3 (topic, header, payload)")
        topic, header_frame, payload = frames
        header = json.loads(header_frame)
        stream = _stream_of(topic, header)
        if not any(stream_matches(stream, p) for p in self.prefixes):
            return  # a byte-prefix match of ZeroMQ that is not a component match
        first, last = int(header["first_seq"]), int(header["last_seq"])
        if stream not in self._last and not self.from_start:
            self._last[stream] = first - 1  # join the stream where we met it
        held = self._last.get(stream, 0)
        if last <= held:
            self.stats["duplicate_rows"] += last - first + 1
            return
        if first > held + 1:
            # Rows are missing: replay them, then come back to this message. A published row
            # is durable and so replayable; retries only cover a replay answered a moment early.
            if attempts >= max_attempts:
                raise FlowdaqError(f"{stream}: replays after {held} did not reach row {first - 1}")
            if attempts == 0:
                self.stats["gaps"] += 1
            else:
                time.sleep(0.05 * attempts)
            self._start_replay(stream, {stream: held})
            self._deferred = (frames, attempts + 1)
            return
        taken = self._accept(stream, _as_rows(decode_rows(payload, self.format)))
        if taken:
            self.stats["live_messages"] += 1
            self.stats["live_rows"] += taken
