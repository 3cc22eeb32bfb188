"""Interop tests of the feature stream (docs/feature-streams.md) against a real `flowdaq serve`.

pyzmq senders push PL spectra; the flowdaq Python package (python/) subscribes
to the PUB feature stream and repairs gaps through replays on the control endpoint. The
reference for "every row exactly once, in order" is the server's own SQL answer once the
sender has finished. Waiting is always on an observable condition (/metrics, SQL, rows
received) in a bounded loop; the one long sleep is the slow-subscriber scenario itself.
"""

import importlib.util
import json
import threading
import time

import numpy as np
import pytest
import zmq

from conftest import ROOT, vm_hwm_bytes
from flowdaq import Client, ControlError
from flowdaq.wire import spectrum_frames

MIB = 1024 * 1024


# -- helpers ---------------------------------------------------------------------------------


class SpectraSender(threading.Thread):
    """Pushes PL spectra (wire protocol v1, PUSH) round-robin over `sources` in a thread:
    `count` messages, or until stop(). `pace_s` sleeps between messages (0: flat out)."""

    def __init__(self, endpoint, run_id, sources, count=None, pixels=256, pace_s=0.0, max_count=400_000):
        super().__init__(daemon=True)
        self.endpoint, self.run_id, self.sources = endpoint, run_id, list(sources)
        self.count = count if count is not None else max_count
        self.pace_s = pace_s
        self.sent = 0
        self.error = None
        self._halt = threading.Event()
        self.axis = np.linspace(400.0, 800.0, pixels)
        energy = 1239.84198 / self.axis
        rng = np.random.default_rng(11)
        # A few spectra with different peaks, so the features differ from row to row.
        self.spectra = [
            (200.0 + 20000.0 * np.exp(-4 * np.log(2) * (energy - peak) ** 2 / 0.09**2)
             + rng.normal(0.0, 30.0, pixels)).astype("<f4")
            for peak in np.linspace(2.2, 2.5, 7)
        ]

    def run(self):
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 60_000)  # deliver everything sent before close
        push.connect(self.endpoint)
        seqs = {source: 0 for source in self.sources}
        try:
            while self.sent < self.count and not self._halt.is_set():
                source = self.sources[self.sent % len(self.sources)]
                frames = spectrum_frames(source, seqs[source], self.axis, self.spectra[self.sent % len(self.spectra)],
                                         run_id=self.run_id, instrument_time_ns=time.time_ns())
                while not push.poll(100, zmq.POLLOUT):  # the server is behind; PUSH waits
                    if self._halt.is_set():
                        return
                push.send_multipart(frames)
                seqs[source] += 1
                self.sent += 1
                if self.pace_s:
                    time.sleep(self.pace_s)
        except BaseException as err:
            self.error = err
        finally:
            push.close()
            context.term()

    def stop(self):
        self._halt.set()

    def finish(self, timeout_s=120):
        self.join(timeout_s)
        assert not self.is_alive(), "the sender did not finish"
        assert self.error is None, self.error


def metric(metrics, name):
    """A publish metric, top level (`publish_dropped_messages`) or nested (`publish.dropped_messages`)."""
    if name in metrics:
        return metrics[name]
    nested = metrics.get("publish", {})
    return nested.get(name, nested.get(name.removeprefix("publish_")))


def sql_rows(server, query):
    status, body = server.sql_http(query)
    assert status == 200, body
    return json.loads(body)


def sql_streams(server, run_id):
    """The reference: every spectral_features row of the run, per stream, in stream_seq order."""
    rows = sql_rows(server, "SELECT source, run_id, stream_seq FROM spectral_features "
                            f"WHERE run_id = '{run_id}' ORDER BY source, stream_seq")
    streams = {}
    for row in rows:
        streams.setdefault(f"spectral_features/{row['run_id']}/{row['source']}", []).append(
            (row["source"], row["run_id"], row["stream_seq"]))
    return streams


def wait_all_features(server, run_id, sender):
    """After the sender finished: every message processed and its feature row queryable."""
    server.wait_for(lambda m: m["messages_processed"] >= sender.sent, f"{sender.sent} messages processed",
                    attempts=6000)
    query = f"SELECT count(*) AS n FROM spectral_features WHERE run_id = '{run_id}'"
    for _ in range(600):
        if sql_rows(server, query)[0]["n"] >= sender.sent:
            break
        time.sleep(0.05)
    streams = sql_streams(server, run_id)
    assert sum(map(len, streams.values())) == sender.sent, "one spectral_features row per PL spectrum"
    for stream, rows in streams.items():
        assert [seq for _, _, seq in rows] == list(range(1, len(rows) + 1)), f"{stream}: stream_seq has gaps"
    return streams


def read_rows(sub, got, done, timeout_s, what):
    """Read (stream, row) from the subscription into `got` until done() (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            have = {stream: len(rows) for stream, rows in got.items()}
            raise AssertionError(f"timed out waiting for {what}; holding {have}; stats {sub.stats}")
        item = sub.next(0.2)
        if item is not None:
            stream, row = item
            got.setdefault(stream, []).append((row["source"], row["run_id"], row["stream_seq"]))


def total(got):
    return sum(len(rows) for rows in got.values())


def assert_nothing_more(sub, got, quiet_s=1.5):
    """Once everything is held, a quiet period (including an idle replay) brings no extra row."""
    extra = []
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        item = sub.next(0.1)
        if item is not None:
            extra.append((item[0], item[1]["stream_seq"]))
    assert not extra, f"rows after the end: {extra[:10]}"


# -- tests -----------------------------------------------------------------------------------


def test_late_subscriber_gets_every_row_once_in_order(server_factory):
    server = server_factory("late").start()
    run_id = "late-join"
    sender = SpectraSender(server.pull, run_id, ["late-a", "late-b"], count=2000, pace_s=0.002)
    sender.start()
    # Join late: a quarter of the messages are in before the subscriber exists.
    server.wait_for(lambda m: m["messages_processed"] >= 500, "500 messages before the subscriber joins",
                    attempts=6000)
    client = Client(server.control, server.publish)
    got = {}
    with client.subscribe([f"spectral_features/{run_id}/"], from_start=True) as sub:
        read_rows(sub, got, lambda: not sender.is_alive(), 120, "the sender to finish")
        sender.finish()
        expected = wait_all_features(server, run_id, sender)
        read_rows(sub, got, lambda: total(got) >= total(expected), 60, "every row")
        assert_nothing_more(sub, got)
        stats = dict(sub.stats)
        held = sub.last_seq
    assert got == expected
    assert held == {stream: len(rows) for stream, rows in expected.items()}
    # Both paths were taken: the past came through the replay, the rest live.
    assert stats["replayed_rows"] > 0 and stats["live_rows"] > 0, stats
    assert metric(server.metrics(), "replay_requests") >= 1


def test_subscriber_that_disconnects_and_reconnects_gets_every_row_once_in_order(server_factory):
    server = server_factory("reconnect").start()
    run_id = "reconnect"
    total_messages = 2400
    sender = SpectraSender(server.pull, run_id, ["re-a", "re-b"], count=total_messages, pace_s=0.002)
    client = Client(server.control, server.publish)
    got = {}
    with client.subscribe([f"spectral_features/{run_id}/"], from_start=True) as sub:
        sender.start()
        read_rows(sub, got, lambda: total(got) >= 200, 60, "the first 200 rows")
        sub.pause()  # the SUB socket is closed: nothing reaches us
        away_from = server.metrics()["messages_processed"]
        assert away_from < total_messages - 400, "the sender finished too early to test a disconnection"
        server.wait_for(lambda m: m["messages_processed"] >= away_from + 400,
                        "400 messages published while the subscriber is away", attempts=6000)
        replays_before = sub.stats["replays"]
        sub.resume()
        read_rows(sub, got, lambda: not sender.is_alive(), 120, "the sender to finish")
        sender.finish()
        expected = wait_all_features(server, run_id, sender)
        read_rows(sub, got, lambda: total(got) >= total(expected), 60, "every row")
        assert_nothing_more(sub, got)
        stats = dict(sub.stats)
    assert got == expected
    assert stats["replays"] > replays_before and stats["replayed_rows"] >= 400, stats


# The slow-subscriber scenario: the subscriber stops reading for this long while the sender
# pushes as fast as the server takes spectra.
STALL_S = 30.0
# Raw pyzmq SUB sockets subscribed to everything (both formats) that never read at all: they
# multiply what a server that queued without bound would have to hold.
STALLED_RAW_SUBSCRIBERS = 16
# Absolute bound on the server's peak resident memory (VmHWM) over the whole test. What the
# server may legitimately hold with the configuration below: the ingest queue (16 MiB), the
# write buffer (features only, store_raw = false; persisted at 16 MiB), the publish queues of
# the 17 stalled subscribers (1 MiB each), one replay answer (<= 10,000 rows: ~10 MiB of JSON
# plus the Arrow batches and DataFusion's working memory behind it) and the debug binary with
# its runtime (130-160 MiB measured before the stall). That is about 240 MiB (250 MiB measured
# at the end); 512 MiB leaves 2x headroom for allocator slack. A server that queued without
# bound would instead grow with the backlog (17 subscribers x every row published during the
# stall: 500-600 MiB of JSON alone here), checked separately below.
MAX_SERVER_HWM_BYTES = 512 * MIB


def test_slow_subscriber_is_dropped_not_waited_for_and_catches_up_by_replay(server_factory):
    sources = ["slow-a", "slow-b"]
    server = server_factory(
        "slow",
        extra_config=(
            '[wal]\nfsync = "never"\n'
            "[buffer]\nflush_bytes = 16777216\n"
            + "".join(f"[sources.{source}]\nstore_raw = false\n" for source in sources)
        ),
        ingest=f"allow_unknown_sources = true\nmax_message_bytes = {MIB}\nmax_queued_bytes = {16 * MIB}\n",
        publish=f"max_queued_bytes_per_subscriber = {MIB}\n",
    ).start()
    pid = server.process.pid
    run_id = "slow"
    client = Client(server.control, server.publish)
    got = {}
    # A small receive high-water mark and kernel buffer: when nobody reads, the backlog lands
    # on the server quickly instead of in this process.
    stalled = []
    for _ in range(STALLED_RAW_SUBSCRIBERS):
        raw = client.context.socket(zmq.SUB)
        raw.setsockopt(zmq.RCVHWM, 1)
        raw.setsockopt(zmq.RCVBUF, 64 * 1024)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.SUBSCRIBE, b"")
        raw.connect(server.publish)
        stalled.append(raw)
    sub = client.subscribe([f"spectral_features/{run_id}/"], from_start=True, rcvhwm=16, rcvbuf=64 * 1024)
    server.wait_for(lambda m: metric(m, "publish_subscribers") >= STALLED_RAW_SUBSCRIBERS + 1,
                    "every subscriber connected")
    # No cap on the messages: the sender must still be sending when reading resumes (a live
    # message after the drops reveals the gap), however fast this machine sends meanwhile.
    sender = SpectraSender(server.pull, run_id, sources, pixels=256, max_count=100_000_000)
    try:
        sender.start()
        read_rows(sub, got, lambda: total(got) >= 200, 60, "the stream to flow")
        row_bytes = len(json.dumps(sql_rows(server, f"SELECT * FROM spectral_features WHERE run_id = '{run_id}' LIMIT 1")[0]))
        before = server.metrics()
        hwm_before = vm_hwm_bytes(pid)

        time.sleep(STALL_S)  # the scenario: features stream at full rate, nobody reads

        during = server.metrics()
        hwm_stalled = vm_hwm_bytes(pid)
        # Read again while the sender goes on: the messages queued before the drops come
        # first, then the first one after them reveals the gap, which a replay repairs.
        read_rows(sub, got, lambda: sub.stats["gaps"] > 0, 120, "the gap to be seen")
        sender.stop()
        sender.finish()
        assert during["messages_processed"] > before["messages_processed"], "the server stopped ingesting"
        expected = wait_all_features(server, run_id, sender)
        read_rows(sub, got, lambda: total(got) >= total(expected), 600, "the subscriber to catch up")
        assert_nothing_more(sub, got)
        stats = dict(sub.stats)
    finally:
        sender.stop()
        sub.close()
        for raw in stalled:
            raw.close(linger=0)
    metrics = server.metrics()
    hwm_end = vm_hwm_bytes(pid)
    # What an unbounded server would have queued during the stall, at least: the JSON of every
    # row for each subscriber (the raw ones also take the Arrow copies; not counted).
    backlog_bytes = ((during["messages_processed"] - before["messages_processed"]) * row_bytes
                     * (STALLED_RAW_SUBSCRIBERS + 1))
    print(f"slow subscriber: {sender.sent} spectra, {metric(metrics, 'publish_dropped_messages')} messages dropped, "
          f"queue max {metric(metrics, 'publish_queued_bytes_max')} B, backlog >= {backlog_bytes / MIB:.0f} MiB, "
          f"VmHWM {hwm_before / MIB:.0f} -> {hwm_stalled / MIB:.0f} -> {hwm_end / MIB:.0f} MiB, stats {stats}")

    assert got == expected
    assert stats["gaps"] > 0 and stats["replayed_rows"] > 0, stats
    assert metric(metrics, "publish_dropped_messages") > 0
    assert 0 < metric(metrics, "publish_queued_bytes_max") <= MIB
    assert metric(metrics, "publish_messages") > 0
    assert hwm_end < MAX_SERVER_HWM_BYTES, f"server VmHWM {hwm_end / MIB:.0f} MiB"
    # The stall must not cost memory in proportion to what was published meanwhile. (Ingest
    # queue, write buffer and publish queues filling up account for 40-70 MiB of growth.)
    assert backlog_bytes > 256 * MIB, "too little published during the stall to tell"
    assert hwm_stalled - hwm_before < backlog_bytes / 2, (
        f"VmHWM grew {(hwm_stalled - hwm_before) / MIB:.0f} MiB during a {backlog_bytes / MIB:.0f} MiB backlog")


OUTCOMES = """
[outcomes]
wait_residence_times = 3.0
min_wait_s = 2.0
window_s = 3.0
min_samples = 5
timeout_s = 120.0
[outcomes.features."spectral_features.peak_energy_ev"]
max_std = 0.005
max_drift = 0.003
"""


def test_example_optimizer_loop_gets_an_outcome_for_every_condition(server_factory):
    spec = importlib.util.spec_from_file_location("optimizer_loop", ROOT / "docs" / "examples" / "optimizer_loop.py")
    optimizer_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(optimizer_loop)

    server = server_factory("optimizer", extra_config=OUTCOMES + "[sources.sim-pl-1]\nstore_raw = false\n").start()
    run_id = "optimizer"
    result = optimizer_loop.main([
        "--control", server.control, "--publish", server.publish, "--pull", server.pull,
        "--run-id", run_id, "--iterations", "4", "--target-ev", "2.30", "--seed", "5",
        "--optimizer", "fallback", "--speedup", "20", "--outcome-timeout-s", "120",
    ])
    assert result["all_outcomes"], result
    registered = [c["condition_id"] for c in result["conditions"]]
    assert len(registered) == 4

    conditions = sql_rows(server, f"SELECT condition_id FROM conditions WHERE run_id = '{run_id}' ORDER BY condition_id")
    assert [r["condition_id"] for r in conditions] == registered
    outcomes = sql_rows(server, "SELECT condition_id, source, feature, settled, mean FROM condition_outcomes "
                                f"WHERE run_id = '{run_id}' ORDER BY condition_id")
    assert [r["condition_id"] for r in outcomes] == registered, "exactly one outcome per condition"
    assert {r["feature"] for r in outcomes} == {optimizer_loop.FEATURE}
    for condition, row in zip(result["conditions"], outcomes):
        assert condition["outcome"]["settled"] == row["settled"]
        if row["settled"]:
            # Settled means past the transient: the mean is the reactor's steady state.
            assert abs(row["mean"] - condition["expected_peak_ev"]) < 0.01, (condition, row)
    # The client helper on its own (a fresh subscription: replay, then live) finds the same rows.
    client = Client(server.control, server.publish)
    rows = client.wait_outcomes(run_id, registered, [optimizer_loop.FEATURE], timeout_s=30)
    assert [(r["condition_id"], r["settled"], r["mean"]) for r in rows] == [
        (r["condition_id"], r["settled"], r["mean"]) for r in outcomes]
    tagged = sql_rows(server, f"SELECT count(*) AS n FROM spectral_features WHERE run_id = '{run_id}' "
                              "AND condition_id IS NOT NULL")
    assert tagged[0]["n"] > 0, "spectra sent without condition_id were tagged with the current condition"


def test_register_condition_and_replay_in_both_formats(server_factory):
    server = server_factory("conditions").start()
    client = Client(server.control, server.publish)
    parameters = {"temperature": {"value": 140.0, "unit": "degC"}, "br_to_pb_ratio": 2.5}
    answer = client.register_condition("py-run", "c-0001", parameters, start_time_ns=1_764_583_200_000_000_000,
                                       registered_by="pytest")
    assert answer["ok"] and answer["condition_id"] == "c-0001"
    assert answer["start_time_ns"] == 1_764_583_200_000_000_000
    with pytest.raises(ControlError):
        client.register_condition("py-run", "c-0001", parameters)  # a pair registers once
    client.register_condition("py-run", "c-0002", {"temperature": 150.0}, registered_by="pytest")

    as_json = [(stream, row) for stream, _, rows in client.replay("conditions/py-run/") for row in rows]
    as_arrow = [(stream, table) for stream, _, table in client.replay("conditions/py-run/", format="arrow")]
    assert [(s, r["condition_id"], r["stream_seq"]) for s, r in as_json] == [
        ("conditions/py-run/pytest", "c-0001", 1), ("conditions/py-run/pytest", "c-0002", 2)]
    arrow_seqs = [seq for _, table in as_arrow for seq in table.column("stream_seq").to_pylist()]
    assert arrow_seqs == [1, 2]
    # `after` skips what is held; max_rows pages through `more`.
    assert [r["stream_seq"] for _, _, rows in client.replay("conditions/", after={"conditions/py-run/pytest": 1})
            for r in rows] == [2]
    assert [r["stream_seq"] for _, _, rows in client.replay("conditions/", max_rows=1) for r in rows] == [1, 2]


def test_server_sent_events_carry_every_committed_feature_row(server_factory):
    """`GET /events` over plain HTTP (what a browser's EventSource reads): after the response
    starts, every spectral_features row of the spectra pushed arrives in an `event: rows`, with
    its stream_seq, and equals the row SQL returns."""
    import http.client
    from urllib.parse import urlparse

    server = server_factory().start()
    address = urlparse(server.http)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", "/events")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type").startswith("text/event-stream")

    sender = SpectraSender(server.pull, "sse", ["sse-a", "sse-b"], count=40)
    sender.start()
    sender.join(timeout=60)
    assert sender.error is None and sender.sent == 40

    received = {}
    name = None
    while sum(len(v) for v in received.values()) < 40:  # bounded by the socket timeout
        line = response.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: ") and name == "rows":
            event = json.loads(line[len("data: "):])
            if event["table"] == "spectral_features":
                seqs = [row["stream_seq"] for row in event["rows"]]
                assert seqs == list(range(event["first_seq"], event["last_seq"] + 1)), event
                received.setdefault(event["source"], []).extend(event["rows"])
        elif line.startswith("data: ") and name == "lagged":
            raise AssertionError(f"a listener reading as fast as it can lagged: {line}")
    connection.close()

    for source, rows in received.items():
        stored = server.sql_arrow(
            f"SELECT stream_seq, peak_energy_ev FROM spectral_features WHERE source = '{source}' "
            "ORDER BY stream_seq").to_pylist()
        assert [r["stream_seq"] for r in rows] == [r["stream_seq"] for r in stored]
        assert [r["peak_energy_ev"] for r in rows] == [r["peak_energy_ev"] for r in stored]
    assert sorted(received) == ["sse-a", "sse-b"]
