"""Stress tests of the write path, from the outside: a full disk, kill -9 in the middle of
persisting, exhausted file descriptors and a minute of overload.

Every test runs a real `flowdaq serve` process (tests/python/conftest.py) and talks to it only
through its sockets, its HTTP endpoints and its data directory. What is checked is the contract
of docs/wire-protocol.md ("Acknowledgements", "Exactly once"): one reply per message, in order;
an acknowledged message is durable; a resend is acknowledged as a duplicate and stored once;
`retry: true` nacks while the disk is full, and recovery by itself when space returns; and the
memory bound of docs/configuration.md. Waiting is always on an observable condition (replies,
/metrics, /health), bounded; a test never skips, it fails with the reason.
"""

import collections
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest
import zmq

from conftest import ROOT, Server, flowdaq_bin, vm_hwm_bytes, vm_status
from flowdaq import AcknowledgedSender
from flowdaq.wire import spectrum_frames

PIXELS = 2048
MiB = 1024 * 1024
GiB = 1024 * MiB
WINDOW = 64  # messages sent and not yet answered, per connection
MEMORY_GUARD = 4 * GiB  # a server above this is killed: it would take the test machine down
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def axis():
    return np.linspace(350.0, 1000.0, PIXELS)


def random_counts(rng, shape=(PIXELS,)):
    """Random finite float32 bit patterns (with a subnormal and -0.0), so that comparing bit
    patterns really tests every bit."""
    values = rng.uniform(-1e6, 1e6, size=shape).astype("<f4")
    values.flat[0] = np.float32(1.401298464324817e-45)
    values.flat[-1] = np.float32(-0.0)
    return values


def poll_until(check, what, timeout_s, interval_s=0.1, describe=None):
    """Call `check()` until it returns a truthy value (bounded: timeout_s / interval_s
    attempts); return that value, or fail with `what` and `describe()`."""
    attempts = max(1, int(timeout_s / interval_s)) if interval_s else 1_000_000
    deadline = time.monotonic() + timeout_s
    last_error = None
    for _ in range(attempts):
        if time.monotonic() > deadline:
            break
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as err:  # server busy or restarting
            last_error = err
        time.sleep(interval_s)
    detail = describe() if describe else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last error: {last_error}; {detail}")


def http_json(url, timeout=10):
    """GET `url`: (status, decoded JSON body); 503 and other HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, body.decode(errors="replace")


def health(server, timeout=10):
    return http_json(server.http + "/health", timeout=timeout)


def metrics(server, timeout=10):
    return http_json(server.http + "/metrics/json", timeout=timeout)[1]


def try_metrics(server, timeout=2):
    try:
        return metrics(server, timeout=timeout)
    except (OSError, urllib.error.URLError, ValueError) as err:
        return {"unavailable": repr(err)}


def wait_healthy(server, timeout_s=30):
    return poll_until(lambda: health(server, timeout=5)[0] == 200, "/health 200", timeout_s, 0.2,
                      describe=lambda: f"health: {safe_health(server)}; metrics: {try_metrics(server)}; "
                                       f"stderr tail:\n{server.stderr_text()}")


def safe_health(server):
    try:
        return health(server, timeout=5)
    except (OSError, urllib.error.URLError, ValueError) as err:
        return repr(err)


def assert_exactly_once(server, source, sent):
    """Every message of `sent` (seq -> its float32 counts, one spectrum per message) is a row of
    `spectra` exactly once, with the same bits; and there is nothing else for the source."""
    summary = server.sql_arrow(
        f"SELECT count(*) AS n, count(DISTINCT seq) AS d FROM spectra WHERE source = '{source}'"
    ).to_pylist()[0]
    table = server.sql_arrow(
        f"SELECT seq, intensity_counts FROM spectra WHERE source = '{source}' ORDER BY seq"
    )
    seqs = table["seq"].to_pylist()
    counted = collections.Counter(seqs)
    missing = sorted(set(sent) - set(counted))
    extra = sorted(set(counted) - set(sent))
    doubled = sorted(seq for seq, n in counted.items() if n > 1)
    assert not missing and not extra and not doubled and summary["n"] == summary["d"] == len(sent), (
        f"{source}: expected {len(sent)} messages exactly once; count(*)={summary['n']}, "
        f"count(DISTINCT seq)={summary['d']}; missing {len(missing)}: {missing[:20]}; "
        f"stored twice or more {len(doubled)}: {doubled[:20]}; unexpected {len(extra)}: {extra[:20]}"
    )
    flat = pc.list_flatten(table["intensity_counts"]).to_numpy(zero_copy_only=False)
    stored = np.asarray(flat, dtype="<f4").reshape(len(seqs), PIXELS).view("<u4")
    expected = np.stack([sent[seq] for seq in seqs]).view("<u4")
    wrong = [seq for seq, got, want in zip(seqs, stored, expected) if not np.array_equal(got, want)]
    assert not wrong, f"{source}: {len(wrong)} messages stored with other bits than sent: {wrong[:20]}"
    return summary


def tmp_files(data_dir):
    return sorted(str(p.relative_to(data_dir)) for p in Path(data_dir).rglob("*.tmp"))


def mount_tmpfs(directory, size_mib):
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(directory)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"mount -t tmpfs failed ({result.returncode}): {result.stderr.strip()}")


def unmount(directory):
    result = subprocess.run(["umount", str(directory)], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        lazy = subprocess.run(["umount", "-l", str(directory)], capture_output=True, text=True, timeout=30)
        assert lazy.returncode == 0, f"could not unmount {directory}: {result.stderr} / {lazy.stderr}"


def free_bytes(directory):
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def fill(path, size):
    """Write `size` bytes to `path` (real pages: tmpfs counts them)."""
    chunk = b"\xa5" * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        f.flush()
        os.fsync(f.fileno())


def tcp_port(endpoint):
    return int(endpoint.rsplit(":", 1)[1])


class StressServer(Server):
    """`Server` with its stderr and stdout drained by threads (a server that logs a lot under
    stress must never block on a full pipe), an optional open-files limit, and `restarted()`."""

    def __init__(self, data_dir, extra_config="", nofile=None, **sections):
        super().__init__(data_dir, extra_config, **sections)
        self.args = (data_dir, extra_config, nofile, sections)
        self.nofile = nofile
        self.stderr_lines = collections.deque(maxlen=300)
        self.stderr_head = []
        self.stderr_count = 0
        self.memory_guard_tripped = None

    def restarted(self):
        """A new server on the same data directory and configuration, started."""
        data_dir, extra_config, nofile, sections = self.args
        return StressServer(data_dir, extra_config, nofile=nofile, **sections).start()

    def _drain(self, stream, keep):
        for line in stream:
            if keep:
                line = ANSI.sub("", line.rstrip("\n"))
                self.stderr_count += 1
                if len(self.stderr_head) < 8:
                    self.stderr_head.append(line)
                self.stderr_lines.append(line)

    def _guard_memory(self, process):
        """Safety net for the machine: a server far beyond its memory bound is killed (and the
        test fails saying so) before it takes the host down."""
        while process.poll() is None:
            try:
                rss = vm_status(process.pid).get("VmRSS", 0)
            except OSError:
                return
            if rss > MEMORY_GUARD:
                self.memory_guard_tripped = rss
                process.kill()
                return
            time.sleep(0.2)

    def stderr_text(self, lines=20):
        tail = list(self.stderr_lines)[-lines:]
        head = self.stderr_head[: max(0, self.stderr_count - len(tail))]
        text = "\n".join(head)
        if head:
            text += f"\n... ({self.stderr_count} stderr lines in all) ...\n"
        return text + "\n".join(tail)

    def start(self):
        nofile = self.nofile
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        self.process = subprocess.Popen(
            [flowdaq_bin(), "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
        )
        _RUNNING.append(self)
        threading.Thread(target=self._drain, args=(self.process.stderr, True), daemon=True).start()
        threading.Thread(target=self._guard_memory, args=(self.process,), daemon=True).start()
        line = self.process.stdout.readline()
        if not line:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            time.sleep(0.2)  # let the drain thread read the last lines (diagnostics only)
            raise AssertionError(f"flowdaq serve exited before ready (code {self.process.poll()}):\n"
                                 f"{self.stderr_text()}")
        self.ready = json.loads(line)
        assert self.ready["event"] == "ready", line
        threading.Thread(target=self._drain, args=(self.process.stdout, False), daemon=True).start()
        return self

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def assert_alive(self, when):
        assert self.memory_guard_tripped is None, (
            f"the server's resident memory reached {self.memory_guard_tripped / GiB:.1f} GiB {when} (killed by "
            f"the test's {MEMORY_GUARD / GiB:.0f} GiB guard); stderr:\n{self.stderr_text()}")
        assert self.alive(), (f"the server died {when}: exit code {self.process.poll()}; stderr:\n"
                              f"{self.stderr_text()}")

    def stop(self, timeout=120):
        """Graceful stop (SIGTERM: drain and persist); it must exit 0."""
        self.assert_alive("before a clean stop")
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"no clean stop within {timeout} s; stderr tail:\n{self.stderr_text()}")
        assert code == 0, f"clean stop exited {code}; stderr tail:\n{self.stderr_text()}"


_RUNNING = []


@pytest.fixture
def running():
    """Kills every StressServer a test started, whatever happened."""
    yield _RUNNING
    while _RUNNING:
        _RUNNING.pop().kill()


class TrackingSender(AcknowledgedSender):
    """`AcknowledgedSender` that also checks and records what the protocol promises: one reply
    per message, in the order the messages were sent on the connection; and counts what
    happened. `outstanding` is the number of messages sent on this connection still without a
    reply, to bound what is in flight."""

    def __init__(self, context, endpoint, source):
        self.source = source
        self.in_flight = collections.deque()
        self.sends = 0
        self.replies = 0
        self.acked = set()
        self.acks = 0
        self.retry_nacks = 0
        self.retry_nacked = set()
        self.reconnects = -1
        self.listener = None
        self.order_violations = 0
        self.violation_examples = []
        super().__init__(context, endpoint)

    @property
    def outstanding(self):
        return len(self.in_flight)

    def connect(self):
        super().connect()
        # A send must never hang the test: a DEALER blocks at its high-water mark.
        self.socket.setsockopt(zmq.SNDTIMEO, 30000)
        self.in_flight.clear()
        self.reconnects += 1

    def send(self, seq, frames):
        super().send(seq, frames)
        self.in_flight.append(seq)
        self.sends += 1

    def resend_unacknowledged(self):
        pending = sorted(self.unacknowledged)
        super().resend_unacknowledged()
        self.in_flight.extend(pending)
        self.sends += len(pending)

    def collect_acks(self, timeout_ms=100):
        replies = super().collect_acks(timeout_ms)
        for reply in replies:
            self.replies += 1
            seq = reply["ack"] if "ack" in reply else reply.get("nack")
            expected = self.in_flight[0] if self.in_flight else None
            if seq == expected and reply.get("source") == self.source:
                self.in_flight.popleft()
            else:
                # Recorded, not raised at once, so that a test goes on to check the data too.
                self.order_violations += 1
                if len(self.violation_examples) < 5:
                    self.violation_examples.append(
                        f"expected the reply to seq {expected} (next of {len(self.in_flight)} in flight), got "
                        f"{ {k: v for k, v in reply.items() if k != 'error'} }")
                if seq in self.in_flight:
                    self.in_flight.remove(seq)
            if "ack" in reply:
                self.acked.add(seq)
                self.acks += 1
            elif reply.get("retry"):
                assert str(reply.get("error", "")).startswith("not durable"), reply
                self.retry_nacks += 1
                self.retry_nacked.add(seq)
            if self.listener:
                self.listener(reply)
        return replies

    def send_windowed(self, seq, frames, window=WINDOW, patience_s=1.5, timeout_s=30):
        """Send once fewer than `window` messages await a reply. A server may hold a whole group
        unanswered while its WAL fails (acknowledged late, and the connection's later messages
        wait behind it so replies keep their order), so after `patience_s` of silence this
        follows the recipe of docs/wire-protocol.md: reconnect and resend everything
        unacknowledged (a new connection is nacked with `retry: true` at once). False if no room
        came within `timeout_s`."""
        start = last_reply = time.monotonic()
        while self.outstanding >= window:
            if time.monotonic() - start > timeout_s:
                return False
            if self.collect_acks(50):
                last_reply = time.monotonic()
            elif time.monotonic() - last_reply > patience_s:
                self.connect()
                self.resend_unacknowledged()
                last_reply = time.monotonic()
        self.send(seq, frames)
        self.collect_acks(0)
        return True

    def flush_bounded(self, rounds=3, silence_ms=2000, attempts=30):
        """`flush()` (resend, reconnect after a silence) up to `rounds` times."""
        for _ in range(rounds):
            if self.flush(silence_ms=silence_ms, attempts=attempts):
                return True
        return not self.unacknowledged

    def flush_all(self, server, when):
        """Resend until every message is acknowledged (bounded); none may be refused for good."""
        flushed = self.flush_bounded()
        server.assert_alive(when)
        assert flushed, (
            f"{len(self.unacknowledged)} messages still unacknowledged {when}: "
            f"{sorted(self.unacknowledged)[:20]}; {self.summary()}; health {safe_health(server)}; "
            f"stderr tail:\n{server.stderr_text()}")
        assert not self.refused, f"refused for good (retry: false): {dict(list(self.refused.items())[:5])}"

    def assert_replies_in_order(self):
        """The protocol: one reply per message, in the order the connection sent them."""
        assert not self.order_violations, (
            f"{self.order_violations} replies not in the order of the messages on their connection "
            f"(or for no message in flight); first: {self.violation_examples}")

    def summary(self):
        return (f"sends {self.sends} (incl. resends), replies {self.replies}, acks {self.acks}, "
                f"duplicate acks {self.duplicates}, retry nacks {self.retry_nacks}, refused {len(self.refused)}, "
                f"unacknowledged {len(self.unacknowledged)}, reconnects {self.reconnects}, "
                f"replies out of order {self.order_violations}")


# --------------------------------------------------------------------------------------------
# 1. Full disk, then space freed
# --------------------------------------------------------------------------------------------


def test_full_disk_then_space_freed_loses_no_acknowledged_message(tmp_path, running):
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a tmpfs (CI runs the Python tests as root); "
                    f"running as uid {os.geteuid()}")
    disk = tmp_path / "disk"
    mount_tmpfs(disk, 64)
    source, session = "fulldisk-1", "full-disk-session-1"
    context = zmq.Context()
    server = restarted = None
    try:
        server = StressServer(disk / "data", extra_config="[buffer]\nflush_interval_ms = 200\n")
        filler = disk / "filler.bin"
        fill(filler, free_bytes(disk) - 3 * MiB)
        print(f"\n[full disk] tmpfs 64 MiB, {free_bytes(disk) / MiB:.1f} MiB left after the filler")
        server.start()

        sender = TrackingSender(context, server.router, source)
        acked_while_full = []
        full = {"on": False}
        sender.listener = lambda r: acked_while_full.append(r["ack"]) if full["on"] and "ack" in r else None
        rng = np.random.default_rng(11)
        sent = {}

        def send_next():
            seq = len(sent)
            sent[seq] = random_counts(rng)
            assert sender.send_windowed(seq, spectrum_frames(source, seq, axis(), sent[seq], session=session)), (
                f"the server answered nothing for 30 s while {sender.outstanding} messages waited "
                f"(seq {seq}); {sender.summary()}; health {safe_health(server)}; stderr tail:\n{server.stderr_text()}")

        # Phase A: send until the disk is full: retry nacks and /health 503 (bounded).
        health_503 = None
        deadline = time.monotonic() + 90
        while len(sent) < 20000 and time.monotonic() < deadline:
            send_next()
            if sender.retry_nacks and len(sent) % 10 == 0:
                status, body = health(server)
                if status == 503:
                    health_503 = body
                    break
        server.assert_alive("while the disk filled")
        assert sender.retry_nacks, (
            f"no `retry: true` nack after {len(sent)} messages on a full disk ({free_bytes(disk)} bytes free); "
            f"{sender.summary()}; health {safe_health(server)}; metrics {try_metrics(server)}")
        assert health_503 is not None, (
            f"/health never answered 503 while the WAL nacked ({sender.retry_nacks} retry nacks, "
            f"{len(sent)} messages); last health {safe_health(server)}")
        assert health_503.get("status") == "failing" and (health_503.get("wal") or health_503.get("persister")), health_503
        full_at = len(sent)
        print(f"[full disk] full after {full_at} messages; /health 503: {json.dumps(health_503)[:400]}")

        # Phase B: ~100 more while the disk is still full: nacked with retry or held, never lost.
        full["on"] = True
        acks_before, nacks_before = sender.acks, sender.retry_nacks
        for _ in range(100):
            send_next()
        # Held messages may stay unanswered until the WAL takes them: read what comes within ~2 s.
        for _ in range(20):
            sender.collect_acks(100)
        status_full, body_full = health(server)
        m_full = metrics(server)
        server.assert_alive("while the disk was full")
        full["on"] = False
        print(f"[full disk] while full: {len(sent) - full_at} more sent, {sender.retry_nacks - nacks_before} "
              f"retry nacks, {sender.acks - acks_before} acks ({len(acked_while_full)} acked while full), "
              f"{sender.outstanding} without reply yet; health {status_full}; "
              f"metrics.health {m_full.get('health')}, not_durable_messages {m_full.get('not_durable_messages')}")
        assert m_full["health"]["wal_errors"] > 0, f"retry nacks but no WAL error counted: {m_full['health']}"
        assert m_full["not_durable_messages"] > 0, m_full

        # Space returns: the server must resume by itself; resend until everything is acknowledged.
        filler.unlink()
        sender.flush_all(server, "after the disk was freed")
        assert sender.acked == set(sent), f"acked but never sent: {sorted(sender.acked - set(sent))[:20]}"
        healthy = wait_healthy(server)
        server.assert_alive("after the disk was freed")
        print(f"[full disk] after freeing: {sender.summary()}; health ok: {healthy}")

        server.kill()  # kill -9: what was acknowledged must be in the WAL or the catalog
        restarted = server.restarted()
        print(f"[full disk] restarted after kill -9: replayed_rows {restarted.ready.get('replayed_rows')}")
        summary = assert_exactly_once(restarted, source, sent)
        status, body = health(restarted)
        assert status == 200 and body.get("status") == "ok", f"/health after recovery: {status} {body}"
        print(f"[full disk] messages sent {len(sent)} (sends incl. resends {sender.sends}), nacked with retry "
              f"{sender.retry_nacks} (distinct {len(sender.retry_nacked)}), acked {len(sender.acked)}, "
              f"duplicates {sender.duplicates}; stored {summary['n']} rows, each once")
        restarted.stop()
        sender.assert_replies_in_order()
    finally:
        for s in (restarted, server):
            if s is not None:
                s.kill()
        context.destroy(linger=0)
        unmount(disk)


# --------------------------------------------------------------------------------------------
# 2. kill -9 while persisting, resends, exactly once
# --------------------------------------------------------------------------------------------


def test_kill_9_during_persist_and_resend_give_every_message_exactly_once(tmp_path, running):
    source, session = "killer-1", "kill9-session-1"
    server = StressServer(tmp_path / "data", extra_config="[buffer]\nflush_interval_ms = 50\n").start()
    context = zmq.Context()
    sender = TrackingSender(context, server.router, source)
    rng = np.random.default_rng(22)
    sent = {}

    def send_next():
        seq = len(sent)
        sent[seq] = random_counts(rng)
        assert sender.send_windowed(seq, spectrum_frames(source, seq, axis(), sent[seq], session=session)), (
            f"no reply for 30 s (seq {seq}); {sender.summary()}; stderr tail:\n{server.stderr_text()}")

    # After k acknowledgements in each round; rounds with `mid_persist` wait (bounded) until a
    # snapshot is being persisted and kill at once.
    rounds = [(40, False), (7, True), (180, False), (90, True), (260, True)]
    kills = []
    try:
        for k, mid_persist in rounds:
            acked_at_start = len(sender.acked)
            deadline = time.monotonic() + 60
            while len(sender.acked) - acked_at_start < k and time.monotonic() < deadline:
                send_next()
            assert len(sender.acked) - acked_at_start >= k, (
                f"only {len(sender.acked) - acked_at_start} of {k} acks within 60 s; {sender.summary()}")
            persisting_seen = False
            if mid_persist:
                for _ in range(300):
                    send_next()
                    buffer = metrics(server, timeout=5)["buffer"]
                    if buffer["persisting_snapshots"] > 0:
                        persisting_seen = True
                        break
            server.assert_alive("before kill -9")
            server.kill()
            left = tmp_files(server.data_dir)
            kills.append((len(sent), len(sender.acked), len(sender.unacknowledged), persisting_seen, len(left)))
            server = server.restarted()
            sender.endpoint = server.router
            sender.connect()
            sender.resend_unacknowledged()
            print(f"\n[kill -9] killed after {len(sent)} messages ({len(sender.acked)} acked, "
                  f"{len(sender.unacknowledged)} to resend, mid-persist observed: {persisting_seen}, "
                  f".tmp files left by the crash: {len(left)}); replayed_rows {server.ready.get('replayed_rows')}")
        for _ in range(100):
            send_next()
        sender.flush_all(server, "after the last restart")
        server_duplicates = metrics(server)["sources"].get(source, {}).get("duplicates")
        server.stop()

        n = len(sent)
        assert not tmp_files(server.data_dir), f"*.tmp left after a clean stop: {tmp_files(server.data_dir)}"
        pattern = str(server.data_dir / "tables" / "spectra" / "**" / "*.parquet")
        [(files_n, files_d)] = duckdb.sql(
            f"SELECT count(*), count(DISTINCT seq) FROM read_parquet('{pattern}', hive_partitioning = true) "
            f"WHERE source = '{source}'").fetchall()
        assert files_n == files_d == n, (
            f"duckdb over the Parquet files after a clean stop: {files_n} rows, {files_d} distinct seqs, "
            f"expected {n} (orphan or missing files?)")

        final = server.restarted()
        assert_exactly_once(final, source, sent)
        assert not tmp_files(final.data_dir), tmp_files(final.data_dir)
        final.stop()
        print(f"[kill -9] {len(kills)} kills at (sent, acked, to resend, mid-persist, .tmp left): {kills}")
        print(f"[kill -9] {n} messages, each stored once; {sender.summary()}; duplicates counted by the "
              f"last server life: {server_duplicates}")
        sender.assert_replies_in_order()
    finally:
        context.destroy(linger=0)


# --------------------------------------------------------------------------------------------
# 3. File descriptors exhausted, then freed
# --------------------------------------------------------------------------------------------


def test_descriptors_exhausted_then_freed(tmp_path, running):
    source, session = "fds-1", "fds-session-1"
    server = StressServer(tmp_path / "data", extra_config="[buffer]\nflush_interval_ms = 100\n",
                          nofile=256).start()
    pid = server.process.pid
    context = zmq.Context()
    sender = TrackingSender(context, server.router, source)
    rng = np.random.default_rng(33)
    sent = {}
    idle = []
    watchdog_stop = threading.Event()
    deaths = []

    def watchdog():
        while not watchdog_stop.wait(0.1):
            if server.process.poll() is not None:
                deaths.append(server.process.poll())
                return

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        # A few messages before, to have something persisted and a healthy baseline.
        for _ in range(20):
            seq = len(sent)
            sent[seq] = random_counts(rng)
            assert sender.send_windowed(seq, spectrum_frames(source, seq, axis(), sent[seq], session=session))
        for _ in range(100):
            sender.collect_acks(50)
            if not sender.unacknowledged:
                break
        assert not sender.unacknowledged, f"baseline not acknowledged: {sender.summary()}"

        ports = [tcp_port(server.router), tcp_port(server.pull)]
        connect_errors = 0
        for i in range(400):
            try:
                idle.append(socket.create_connection(("127.0.0.1", ports[i % 2]), timeout=5))
            except OSError:
                connect_errors += 1
        fds = []
        for _ in range(20):  # watch the server's descriptors for ~2 s (bounded)
            try:
                fds.append(len(os.listdir(f"/proc/{pid}/fd")))
            except OSError:
                break
            time.sleep(0.1)
        print(f"\n[fds] {len(idle)} idle connections open ({connect_errors} failed); server descriptors "
              f"(limit 256): max {max(fds, default=None)}, last {fds[-1] if fds else None}")

        # Send while the descriptors are exhausted; some may not get through.
        stalled = 0
        for _ in range(200):
            seq = len(sent)
            sent[seq] = random_counts(rng)
            frames = spectrum_frames(source, seq, axis(), sent[seq], session=session)
            sender.collect_acks(0)
            if sender.outstanding >= WINDOW:
                stalled += 1
                sender.unacknowledged[seq] = frames  # kept for the resend, not sent now
                continue
            try:
                sender.send(seq, frames)
            except zmq.Again:
                pass  # send() keeps it in `unacknowledged` for the resend
        for _ in range(10):
            sender.collect_acks(100)
        during_health = safe_health(server)
        server.assert_alive("while its descriptors were exhausted")
        print(f"[fds] while exhausted: {sender.summary()}; {stalled} messages held back (window full); "
              f"health {str(during_health)[:300]}")

        for s in idle:
            s.close()
        idle.clear()
        sender.flush_all(server, "after the idle connections were closed")
        server.assert_alive("after the descriptors were freed")
        wait_healthy(server)
        n = len(sent)
        final_metrics = poll_until(
            lambda: (lambda m: m if m["buffer"]["persisted_rows"] >= n and m["buffer"]["open_rows"] == 0
                     and m["buffer"]["persisting_snapshots"] == 0 else None)(metrics(server, timeout=5)),
            f"all {n} rows persisted (persisted_rows >= {n}, open_rows == 0, persisting_snapshots == 0)", 60, 0.2,
            describe=lambda: f"metrics: {try_metrics(server)}; stderr tail:\n{server.stderr_text()}")
        print(f"[fds] recovered: buffer {final_metrics['buffer']}, health counters {final_metrics['health']}; "
              f"{sender.summary()}")
        watchdog_stop.set()
        assert not deaths, f"the server died (exit {deaths}); stderr tail:\n{server.stderr_text()}"
        server.stop()

        final = server.restarted()
        assert_exactly_once(final, source, sent)
        final.stop()
        print(f"[fds] {n} messages, each stored once")
        sender.assert_replies_in_order()
    finally:
        watchdog_stop.set()
        for s in idle:
            s.close()
        context.destroy(linger=0)


# --------------------------------------------------------------------------------------------
# 4. A minute of overload
# --------------------------------------------------------------------------------------------

OVERLOAD_SENDER = r"""
import json, sys, time
import numpy as np
import zmq
from flowdaq.wire import spectrum_frames

endpoint, source, seconds, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
variants = [rng.uniform(0.0, 65535.0, size=(16, 2048)).astype("<f4") for _ in range(8)]
axis = np.linspace(350.0, 1000.0, 2048)
context = zmq.Context()
push = context.socket(zmq.PUSH)
push.setsockopt(zmq.SNDHWM, 16)  # block on the server, not fill our own queue
push.connect(endpoint)
sent = sent_bytes = 0
start = time.monotonic()
deadline = start + seconds
while time.monotonic() < deadline:
    frames = spectrum_frames(source, sent, axis, variants[sent % len(variants)])
    while time.monotonic() < deadline:
        if push.poll(100, zmq.POLLOUT):
            try:
                push.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                continue
            sent += 1
            sent_bytes += sum(len(f) for f in frames)
            break
print(json.dumps({"source": source, "sent": sent, "bytes": sent_bytes,
                  "seconds": time.monotonic() - start}), flush=True)
push.close(linger=300000)  # deliver what is still queued (PUSH is lossless)
context.term()
"""


def test_a_minute_of_overload_stays_under_1_gib(tmp_path, running):
    seconds = float(os.environ.get("FLOWDAQ_OVERLOAD_SECONDS", "60"))
    server = StressServer(tmp_path / "data").start()
    pid = server.process.pid
    env = dict(os.environ)
    senders = []
    rss_max = 0
    samples = 0
    backpressure_seen = False
    health_503 = 0
    http_errors = 0

    def sample():
        nonlocal rss_max, samples, backpressure_seen, health_503, http_errors
        try:
            rss_max = max(rss_max, vm_status(pid)["VmRSS"])
            samples += 1
        except OSError:
            pass
        try:
            status, body = health(server, timeout=2)
            backpressure_seen |= bool(isinstance(body, dict) and body.get("backpressure"))
            health_503 += status == 503
        except (OSError, urllib.error.URLError, ValueError):
            http_errors += 1

    try:
        start = time.monotonic()
        for i in range(3):
            senders.append(subprocess.Popen(
                [sys.executable, "-c", OVERLOAD_SENDER, server.pull, f"overload-{i}", str(seconds), str(100 + i)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        # Sample every 0.5 s while the senders run (they exit once their queues are delivered).
        for _ in range(int((seconds + 240) / 0.5)):
            if all(p.poll() is not None for p in senders):
                break
            sample()
            server.assert_alive("under overload")
            time.sleep(0.5)
        reports = []
        for p in senders:
            assert p.poll() is not None, (f"a sender did not finish within {seconds + 240:.0f} s: the server "
                                          f"stopped taking messages? metrics {try_metrics(server)}")
            out, err = p.communicate(timeout=10)
            assert p.returncode == 0 and out.strip(), f"sender failed ({p.returncode}): {err}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        total = sum(r["sent"] for r in reports)
        sent_bytes = sum(r["bytes"] for r in reports)

        # Drain: every message processed (bounded, ~3 min), sampling on.
        drained = None
        for _ in range(int(180 / 0.5)):
            sample()
            server.assert_alive("while draining")
            m = try_metrics(server, timeout=5)
            if m.get("messages_processed", -1) >= total:
                drained = m
                break
            time.sleep(0.5)
        assert drained is not None, (f"{total} messages sent, not all processed within 3 min: "
                                     f"{try_metrics(server)}; stderr tail:\n{server.stderr_text()}")
        elapsed = time.monotonic() - start
        hwm = vm_hwm_bytes(pid)
        rows = {r["source"]: r["n"] for r in server.sql_arrow(
            "SELECT source, count(*) AS n FROM spectra WHERE source LIKE 'overload-%' GROUP BY source").to_pylist()}
        expected = {r["source"]: 16 * r["sent"] for r in reports}
        status, final_health = health(server)
        print(f"\n[overload] {seconds:.0f} s, 3 PUSH senders, 16 x {PIXELS} px per message: {total} messages, "
              f"{sent_bytes / 1e6:.0f} MB; offered {sent_bytes / 1e6 / seconds:.1f} MB/s; stored "
              f"{16 * total / elapsed:.0f} spectra/s over {elapsed:.0f} s (send + drain); VmHWM "
              f"{hwm / MiB:.0f} MiB, max VmRSS sampled {rss_max / MiB:.0f} MiB ({samples} samples); "
              f"/health backpressure seen: {backpressure_seen}; 503 answers {health_503}; "
              f"health requests failed {http_errors}; final health {status} {final_health}")
        print(f"[overload] per sender: {reports}; stored rows {rows}")
        assert rows == expected, f"PUSH is lossless: stored rows per source {rows}, expected {expected}"
        assert hwm <= GiB, f"peak resident memory {hwm / MiB:.0f} MiB > 1 GiB (max sampled VmRSS {rss_max / MiB:.0f} MiB)"
    finally:
        for p in senders:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        server.kill()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)  # can be many GB
