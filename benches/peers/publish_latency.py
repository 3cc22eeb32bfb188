#!/usr/bin/env python3
"""Load generator: flowdaq's feature stream (PUB) against raw pyzmq PUB -> SUB fan-out.

Measures, in one run on one machine:
  (1) latency: PL spectra (Gaussian peak, one 2048-pixel spectrum per message) are pushed to a
      `flowdaq serve` at --rate (default 1,000/s) for --seconds; --subscribers (default 10)
      pyzmq SUB processes subscribed to `json/spectral_features/` take, for every row,
      time.time_ns() when the message arrived minus the row's `arrival_time_ns` (the server's
      receipt time of the spectrum; same machine clock): receipt -> feature row at a
      subscriber. p50 / p99 / max over all subscribers' rows, rows per subscriber, and gaps in
      `stream_seq`.
  (2) throughput: spectra pushed as fast as the server takes them for --seconds; feature rows/s
      delivered per subscriber and in total (sum over subscribers; subscribers read only the
      header frame here), the server's publish_messages / publish_dropped_messages.
  (3) baseline: raw pyzmq PUB -> the same SUB processes, the same 3-frame messages (topic,
      header, one JSON row shaped like a flowdaq row, its `arrival_time_ns` the send time) at
      the same rate, measured by the same code; ratios flowdaq / pyzmq.

The script starts the server itself (`flowdaq serve --config <temporary toml>`: loopback ports
chosen by the server, a temporary data directory, otherwise the server's defaults: fsync
"always", raw spectra stored unless --no-store-raw) and stops it with SIGTERM.

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/publish_latency.py [--rate 1000] [--seconds 10]
      [--subscribers 10] [--flowdaq BIN] [--json] [--no-store-raw] [--fsync never]
      [--skip-throughput] [--skip-baseline] [--baseline-only] [--keep-data]
With --json the last stdout line is one JSON object with everything (command line, server
config, per-phase and per-subscriber counts, latencies, /metrics deltas, a sample row). The
data directory is made under $TMPDIR (default /tmp) and removed at the end unless --keep-data.
The flowdaq binary defaults to $CARGO_TARGET_DIR/release/flowdaq (CARGO_TARGET_DIR defaults to
~/.cache/flowdaq-target); build it with `cargo build --release`.
"""
import argparse
import calendar
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))  # the flowdaq package, installed or not
from flowdaq.wire import spectrum_frames  # noqa: E402

SOURCE = "bench-spec"
TABLE = "spectral_features"
PREFIX = f"json/{TABLE}/"
# Run ids name the phase; subscribers pick their way of reading a message by the prefix.
WARM, LATENCY, THROUGHPUT = "warm", "lat", "tput"


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# -- time stamps -------------------------------------------------------------------------------

_MINUTES = {}


def rfc3339_ns(value):
    """Nanoseconds since the epoch of an RFC 3339 time stamp ("2026-12-01T10:00:00.123456789Z",
    any number of fraction digits, "Z" or a "+hh:mm" offset); integers pass through.

    Cheap: the epoch second of each minute is computed once and remembered."""
    if isinstance(value, int):
        return value
    base = _MINUTES.get(value[:16])
    if base is None:
        base = calendar.timegm(
            (int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]), 0)
        ) * 1_000_000_000
        if len(_MINUTES) > 4096:
            _MINUTES.clear()
        _MINUTES[value[:16]] = base
    ns = base + int(value[17:19]) * 1_000_000_000
    rest = value[19:]
    if rest[:1] == ".":
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        ns += int(rest[1:end][:9].ljust(9, "0"))
        rest = rest[end:]
    if rest and rest not in ("Z", "z", "+00:00", "-00:00"):
        sign = -1 if rest[0] == "-" else 1
        ns -= sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * 1_000_000_000
    return ns


def ns_to_rfc3339(ns):
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


# -- subscribers (one process each) ------------------------------------------------------------


class PhaseStats:
    """What one subscriber saw of one run id (= one phase)."""

    def __init__(self):
        self.messages = 0
        self.rows = 0
        self.first_recv_ns = None
        self.last_recv_ns = None
        self.latencies_ns = []
        self.last_seq = {}  # stream -> last stream_seq seen
        self.gaps = 0
        self.lost_rows = 0  # rows skipped over by gaps
        self.repeated_rows = 0  # rows at or below the last seq seen
        self.inconsistent = 0  # header and rows disagree (count or first stream_seq)
        self.sample = None

    def seq(self, stream, first, last):
        previous = self.last_seq.get(stream, 0)
        if first > previous + 1:
            self.gaps += 1
            self.lost_rows += first - previous - 1
        elif first <= previous:
            self.repeated_rows += min(last, previous) - first + 1
        self.last_seq[stream] = max(previous, last)

    def report(self, index, run_id):
        return {
            "subscriber": index,
            "run_id": run_id,
            "messages": self.messages,
            "rows": self.rows,
            "first_recv_ns": self.first_recv_ns,
            "last_recv_ns": self.last_recv_ns,
            "latencies_ns": np.asarray(self.latencies_ns, dtype=np.int64).tobytes(),
            "gaps": self.gaps,
            "lost_rows": self.lost_rows,
            "repeated_rows": self.repeated_rows,
            "inconsistent": self.inconsistent,
            "last_seq": self.last_seq,
            "sample": self.sample,
        }


def subscriber_main(index, endpoint, commands, results):
    """A pyzmq SUB on `endpoint`, subscribed to PREFIX, until told to quit.

    Per message: the receive time first, then the header. Run ids starting with LATENCY (and
    the baseline's) get every row parsed and its latency recorded; THROUGHPUT ones only the
    header read (rows counted from it) and the latency of the message's oldest row found by a
    string search; WARM ones announce their first row. Commands (a multiprocessing queue):
    ("connect", endpoint), ("finish", run_id, expected_rows, idle_s, max_s): keep receiving
    until that run has expected_rows rows, nothing came for idle_s or max_s passed, then
    report; ("quit",)."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, PREFIX.encode())
    sub.connect(endpoint)
    results.put(("hello", index, os.getpid()))
    stats = {}
    announced = set()
    finishing = None  # (run_id, expected, idle_s, deadline)
    last_activity = time.monotonic()
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    next_check = 0.0
    key = b'"arrival_time_ns":"'
    try:
        while True:
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.02
                try:
                    command = commands.get_nowait()
                except queue.Empty:
                    command = None
                if command is not None:
                    if command[0] == "quit":
                        return
                    if command[0] == "connect":
                        sub.connect(command[1])
                    elif command[0] == "finish":
                        _, run_id, expected, idle_s, max_s = command
                        finishing = (run_id, expected, idle_s, now + max_s)
                        last_activity = now
                if finishing is not None:
                    run_id, expected, idle_s, deadline = finishing
                    phase = stats.get(run_id)
                    done = phase is not None and phase.rows >= expected
                    if done or now - last_activity > idle_s or now > deadline:
                        results.put(("report", index, run_id, (phase or PhaseStats()).report(index, run_id)))
                        stats.pop(run_id, None)
                        finishing = None
            if not poller.poll(20):
                continue
            while True:
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received_ns = time.time_ns()
                last_activity = time.monotonic()
                header = json.loads(frames[1])
                run_id = header["run_id"]
                phase = stats.get(run_id)
                if phase is None:
                    phase = stats[run_id] = PhaseStats()
                    phase.first_recv_ns = received_ns
                phase.last_recv_ns = received_ns
                phase.messages += 1
                first, last, count = header["first_seq"], header["last_seq"], header["rows"]
                phase.seq(header["topic"], first, last)
                if run_id.startswith(THROUGHPUT):
                    phase.rows += count
                    at = frames[2].find(key)
                    if at >= 0:
                        end = frames[2].index(b'"', at + len(key))
                        stamp = frames[2][at + len(key):end].decode()
                        phase.latencies_ns.append(received_ns - rfc3339_ns(stamp))
                    if last - first + 1 != count:
                        phase.inconsistent += 1
                    continue
                rows = json.loads(frames[2])
                phase.rows += len(rows)
                if len(rows) != count or (rows and rows[0].get("stream_seq") != first):
                    phase.inconsistent += 1
                if run_id.startswith(WARM):
                    if run_id not in announced:
                        announced.add(run_id)
                        results.put(("first", index, run_id))
                    continue
                latencies = phase.latencies_ns
                for row in rows:
                    latencies.append(received_ns - rfc3339_ns(row["arrival_time_ns"]))
                if phase.sample is None and rows:
                    phase.sample = {"topic": frames[0].decode(), "header": header, "row": rows[0],
                                    "payload_bytes": len(frames[2])}
    finally:
        sub.close(linger=0)
        context.term()


class Subscribers:
    def __init__(self, count, endpoint, timeout_s):
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.processes = [
            ctx.Process(target=subscriber_main, args=(i, endpoint, self.commands[i], self.results), daemon=True)
            for i in range(count)
        ]
        self.pending = []  # results read while waiting for something else
        for process in self.processes:
            process.start()
        hello = self.collect("hello", count, timeout_s)
        if len(hello) < count:
            raise RuntimeError(f"only {len(hello)} of {count} subscriber processes started in {timeout_s} s")

    def collect(self, kind, count, timeout_s, run_id=None):
        """Up to `count` results of `kind` (for `run_id`), waiting at most timeout_s."""
        found = []
        keep = []
        for item in self.pending:
            if item[0] == kind and (run_id is None or item[2] == run_id) and len(found) < count:
                found.append(item)
            else:
                keep.append(item)
        self.pending = keep
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for process in self.processes:
                if not process.is_alive():
                    raise RuntimeError(f"subscriber process {process.pid} died (exit code {process.exitcode})")
            try:
                item = self.results.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if item[0] == kind and (run_id is None or item[2] == run_id):
                found.append(item)
            else:
                self.pending.append(item)
        return found

    def broadcast(self, *command):
        for q in self.commands:
            q.put(command)

    def finish(self, run_id, expected_rows, idle_s=3.0, max_s=60.0):
        self.broadcast("finish", run_id, expected_rows, idle_s, max_s)
        reports = self.collect("report", len(self.processes), max_s + 15.0, run_id=run_id)
        if len(reports) < len(self.processes):
            raise RuntimeError(f"{run_id}: only {len(reports)} of {len(self.processes)} subscribers reported")
        return sorted((item[3] for item in reports), key=lambda r: r["subscriber"])

    def close(self):
        self.broadcast("quit")
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


# -- the flowdaq server ------------------------------------------------------------------------


class Server:
    def __init__(self, binary, workdir, store_raw, fsync, timeout_s):
        self.workdir = Path(workdir)
        config = (
            f'data_dir = "{self.workdir / "data"}"\n'
            "[ingest]\n"
            'pull = "tcp://127.0.0.1:0"\nsub = ""\nrouter = ""\n'
            '[http]\nlisten = "127.0.0.1:0"\n'
            '[publish]\nlisten = "tcp://127.0.0.1:0"\n'
            '[control]\nlisten = "tcp://127.0.0.1:0"\n'
            '[flight_sql]\nlisten = "127.0.0.1:0"\n'
            '[postgres]\nlisten = "127.0.0.1:0"\n'
        )
        if fsync is not None:
            config += f'[wal]\nfsync = "{fsync}"\n'
        if not store_raw:
            config += f"[sources.{SOURCE}]\nstore_raw = false\n"
        self.config_path = self.workdir / "flowdaq.toml"
        self.config_path.write_text(config)
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.command = [binary, "serve", "--config", str(self.config_path)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.exit_code = None
        try:
            self.ready = self._wait_ready(timeout_s)
        except BaseException:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            raise

    def stderr_tail(self, lines=12):
        """The start of the server's stderr (the error; a backtrace follows it) and its end."""
        try:
            text = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if len(text) <= 2 * lines:
            return "\n".join(text)
        return "\n".join(text[:lines] + [f"[... {len(text) - 2 * lines} lines ...]"] + text[-lines:])

    def _wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            if "\n" in text:
                line = text.split("\n", 1)[0]
                try:
                    ready = json.loads(line)
                except json.JSONDecodeError:
                    raise RuntimeError(f"first stdout line of flowdaq serve is not JSON: {line!r}")
                if ready.get("event") != "ready":
                    raise RuntimeError(f"first stdout line of flowdaq serve is not the ready event: {line!r}")
                return ready
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"flowdaq serve exited with code {self.process.returncode} before it was ready:\n"
                    + self.stderr_tail()
                )
            time.sleep(0.05)
        raise RuntimeError(f"flowdaq serve printed no ready line within {timeout_s} s:\n" + self.stderr_tail())

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.ready['http']}/metrics/json", timeout=5) as response:
            return json.loads(response.read())

    def wait_metrics(self, predicate, what, timeout_s):
        deadline = time.monotonic() + timeout_s
        metrics = None
        while time.monotonic() < deadline:
            metrics = self.metrics()
            if predicate(metrics):
                return metrics
            if self.process.poll() is not None:
                raise RuntimeError(f"flowdaq serve exited (code {self.process.returncode}):\n" + self.stderr_tail())
            time.sleep(0.02)
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}; last /metrics: {metrics}")

    def stop(self, timeout_s=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.exit_code = self.process.wait(timeout=10)
                log(f"flowdaq serve did not stop within {timeout_s} s of SIGTERM; killed")
        else:
            self.exit_code = self.process.returncode
        return self.exit_code


# -- senders -----------------------------------------------------------------------------------


def paced(rate, seconds, send_one):
    """Calls send_one(i) at start + i / rate for i < rate * seconds: sleeps until ~200 us before
    each slot, then busy-waits. A late slot is sent at once (the schedule is absolute, so the
    mean rate holds). Returns the sender's own figures."""
    count = int(round(rate * seconds))
    interval_ns = 1e9 / rate
    start = time.perf_counter_ns() + 2_000_000
    late_ns = np.zeros(count, dtype=np.int64)
    for i in range(count):
        target = start + int(i * interval_ns)
        remaining = target - time.perf_counter_ns()
        if remaining > 300_000:
            time.sleep((remaining - 200_000) / 1e9)
        while time.perf_counter_ns() < target:
            pass
        late_ns[i] = time.perf_counter_ns() - target
        send_one(i)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return {
        "sent": count,
        "seconds": elapsed,
        "rate_per_s": count / elapsed if elapsed > 0 else float("nan"),
        "send_late_p99_us": float(np.percentile(late_ns, 99) / 1e3) if count else None,
        "send_late_max_us": float(late_ns.max() / 1e3) if count else None,
        "sends_late_over_1ms": int((late_ns > 1_000_000).sum()),
    }


class SpectraSender:
    """PUSH sender of PL spectra (Gaussian peak, --pixels) from one source, seq continuing across
    phases so the server sees no gap."""

    def __init__(self, endpoint, pixels):
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 10_000)
        self.push.setsockopt(zmq.SNDTIMEO, 200)
        self.push.connect(endpoint)
        self.axis = np.linspace(350.0, 1000.0, pixels)
        energy = 1239.84198 / self.axis
        rng = np.random.default_rng(7)
        self.spectra = [
            (1000.0 + 30000.0 * np.exp(-4 * np.log(2) * (energy - peak) ** 2 / 0.09**2)
             + rng.normal(0.0, 20.0, pixels)).astype("<f4")
            for peak in np.linspace(2.30, 2.50, 11)
        ]
        self.seq = 0
        self.message_bytes = sum(len(f) for f in self.frames("x"))

    def frames(self, run_id):
        return spectrum_frames(SOURCE, self.seq, self.axis, self.spectra[self.seq % len(self.spectra)],
                               run_id=run_id, instrument_time_ns=time.time_ns())

    def send(self, run_id, deadline=None):
        """One message; False if the server did not take it before `deadline` (monotonic).
        Without a deadline, a server that takes nothing for 30 s is an error."""
        frames = self.frames(run_id)
        give_up = time.monotonic() + 30.0
        while True:
            try:
                self.push.send_multipart(frames)
                self.seq += 1
                return True
            except zmq.Again:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    return False
                if deadline is None and now > give_up:
                    raise RuntimeError("the server took no spectrum for 30 s (PUSH blocked)")

    def flat_out(self, run_id, seconds):
        sent = 0
        start = time.perf_counter()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.send(run_id, deadline):
                sent += 1
        elapsed = time.perf_counter() - start
        return {"sent": sent, "seconds": elapsed, "rate_per_s": sent / elapsed}

    def close(self):
        self.push.close(linger=10_000)
        self.context.term()


# -- figures -----------------------------------------------------------------------------------


def latency_summary(latencies_ns):
    if len(latencies_ns) == 0:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "min_ms": None, "mean_ms": None}
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    return {
        "count": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "min_ms": float(ms.min()),
        "mean_ms": float(ms.mean()),
    }


def summarize(reports, expected_rows, latency_label="latency"):
    """All subscribers' reports of one phase -> one dict (latency over every row of every
    subscriber, per-subscriber rows, gaps, rows/s)."""
    per = []
    everything = []
    for report in reports:
        latencies = np.frombuffer(report["latencies_ns"], dtype=np.int64)
        everything.append(latencies)
        span = None
        if report["first_recv_ns"] is not None and report["last_recv_ns"] is not None:
            span = (report["last_recv_ns"] - report["first_recv_ns"]) / 1e9
        per.append({
            "subscriber": report["subscriber"],
            "rows": report["rows"],
            "messages": report["messages"],
            "missing_rows": max(0, expected_rows - report["rows"]),
            "gaps": report["gaps"],
            "lost_rows_in_gaps": report["lost_rows"],
            "repeated_rows": report["repeated_rows"],
            "inconsistent_messages": report["inconsistent"],
            "receive_seconds": span,
            "rows_per_s": report["rows"] / span if span else None,
            latency_label: latency_summary(latencies),
        })
    allrows = np.concatenate(everything) if everything else np.zeros(0, dtype=np.int64)
    rates = [p["rows_per_s"] for p in per if p["rows_per_s"]]
    return {
        "expected_rows_per_subscriber": expected_rows,
        latency_label: latency_summary(allrows),
        "rows_total": int(sum(p["rows"] for p in per)),
        "rows_min": int(min(p["rows"] for p in per)) if per else 0,
        "rows_max": int(max(p["rows"] for p in per)) if per else 0,
        "gaps_total": int(sum(p["gaps"] for p in per)),
        "lost_rows_in_gaps_total": int(sum(p["lost_rows_in_gaps"] for p in per)),
        "missing_rows_total": int(sum(p["missing_rows"] for p in per)),
        "repeated_rows_total": int(sum(p["repeated_rows"] for p in per)),
        "inconsistent_messages_total": int(sum(p["inconsistent_messages"] for p in per)),
        "rows_per_s_per_subscriber_min": min(rates) if rates else None,
        "rows_per_s_per_subscriber_mean": float(np.mean(rates)) if rates else None,
        "rows_per_s_total": float(sum(rates)) if rates else None,
        "subscribers": per,
    }


PUBLISH_KEYS = ("publish_messages", "publish_dropped_messages", "publish_queued_bytes_max",
                "publish_subscribers", "messages_processed", "messages_received", "messages_rejected")


def metric_delta(before, after):
    out = {}
    for key in PUBLISH_KEYS:
        if key in after:
            out[key] = after[key] if key in ("publish_queued_bytes_max", "publish_subscribers") \
                else after[key] - before.get(key, 0)
    return out


# -- phases ------------------------------------------------------------------------------------


def warm_up(subscribers, send_one, run_id, count, timeout_s):
    """Send one message every 20 ms until every subscriber has a row of `run_id`, then drain
    what they still get. Returns the messages sent."""
    seen = set()
    sent = 0
    deadline = time.monotonic() + timeout_s
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"warm-up: after {timeout_s} s and {sent} messages only subscribers {sorted(seen)} "
                f"of {count} got a row")
        send_one()
        sent += 1
        for item in subscribers.collect("first", count - len(seen), 0.02, run_id=run_id):
            seen.add(item[1])
    subscribers.finish(run_id, sent, idle_s=0.5, max_s=10.0)
    return sent


def run_flowdaq(args, subscribers_holder, result):
    workdir = tempfile.mkdtemp(prefix="flowdaq-publish-bench-")
    result["workdir"] = workdir
    server = None
    sender = None
    try:
        try:
            server = Server(args.flowdaq, workdir, not args.no_store_raw, args.fsync, args.start_timeout)
        except (RuntimeError, OSError) as err:
            raise SystemExit(f"{args.flowdaq} serve --config ... did not start: {err}")
        ready = server.ready
        result["ready"] = ready
        if not ready.get("publish"):
            raise SystemExit(
                f"{args.flowdaq} has no feature stream: no \"publish\" endpoint in its ready line {json.dumps(ready)}")
        if not ready.get("http") or not ready.get("pull"):
            raise SystemExit(f"ready line lacks http or pull: {json.dumps(ready)}")
        result["server_config"] = server.config_path.read_text()
        log(f"flowdaq serve ready: {json.dumps(ready)}")

        subs = Subscribers(args.subscribers, ready["publish"], args.start_timeout)
        subscribers_holder.append(subs)
        server.wait_metrics(lambda m: m.get("publish_subscribers", 0) >= args.subscribers,
                            f"publish_subscribers == {args.subscribers}", args.start_timeout)
        sender = SpectraSender(ready["pull"], args.pixels)
        result["message_bytes"] = sender.message_bytes
        warm = warm_up(subs, lambda: sender.send(WARM), WARM, args.subscribers, args.start_timeout)
        result["warmup_spectra"] = warm
        log(f"all {args.subscribers} subscribers live after {warm} warm-up spectra")

        # Phase 1: latency at --rate.
        before = server.metrics()
        send = paced(args.rate, args.seconds, lambda i: sender.send(LATENCY))
        target = before.get("messages_processed", 0) + send["sent"]
        server.wait_metrics(lambda m: m.get("messages_processed", 0) >= target,
                            "the server to process the latency phase", 60)
        reports = subs.finish(LATENCY, send["sent"], idle_s=3.0, max_s=60.0)
        after = server.metrics()
        phase = summarize(reports, send["sent"])
        phase["sender"] = send
        phase["server"] = metric_delta(before, after)
        phase["server_receipt_to_durable"] = after.get("receipt_to_durable")
        result["latency_phase"] = phase
        samples = [r["sample"] for r in reports if r.get("sample")]
        result["sample"] = samples[0] if samples else None
        log(f"latency phase: {phase['latency']}")

        # Phase 2: throughput, flat out.
        if not args.skip_throughput:
            before = server.metrics()
            start = time.perf_counter()
            send = sender.flat_out(THROUGHPUT, args.seconds)
            target = before.get("messages_processed", 0) + send["sent"]
            server.wait_metrics(lambda m: m.get("messages_processed", 0) >= target,
                                "the server to process the throughput phase", 120)
            processed_s = time.perf_counter() - start
            reports = subs.finish(THROUGHPUT, send["sent"], idle_s=3.0, max_s=60.0)
            after = server.metrics()
            phase = summarize(reports, send["sent"], latency_label="oldest_row_latency")
            phase["sender"] = send
            phase["server"] = metric_delta(before, after)
            phase["server_spectra_per_s"] = send["sent"] / processed_s
            phase["server_publish_messages_per_s"] = phase["server"].get("publish_messages", 0) / processed_s
            result["throughput_phase"] = phase
            log(f"throughput phase: {phase['rows_per_s_total']} rows/s over all subscribers")
        result["final_metrics"] = {k: v for k, v in server.metrics().items()
                                   if k.startswith("publish") or k in PUBLISH_KEYS}
    finally:
        if sender is not None:
            sender.close()
        if server is not None:
            code = server.stop()
            result["server_exit_code"] = code
            if code not in (0, None):
                log(f"flowdaq serve exited with code {code}:\n{server.stderr_tail()}")
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)


def synthetic_row():
    """A spectral_features row as the server writes it (JSON writer: nulls left out)."""
    return {
        "arrival_time_ns": "2026-01-01T00:00:00.000000000Z",
        "instrument_time_ns": "2026-01-01T00:00:00.000000000Z",
        "source": SOURCE, "run_id": "base", "seq": 0, "spectrum_index": 0, "kind": "pl",
        "integration_time_ms": 10.0, "peak_wavelength_nm": 516.3427734375, "peak_energy_ev": 2.401234567890123,
        "fwhm_nm": 19.87654321098765, "fwhm_ev": 0.09012345678901234, "peak_height_counts": 30987.5,
        "peak_prominence_counts": 29987.25, "integrated_intensity_counts_nm": 1234567.890123,
        "iqr_nm": 13.456789012345, "peak_count": 1, "secondary_peaks": [], "quality_flags": 0,
        "quality_flag_names": "", "stream_seq": 1,
    }


def run_baseline(args, subscribers_holder, template, template_name, result):
    """Raw pyzmq PUB -> the same subscribers: one row per message, paced like phase 1."""
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)  # an XPUB to see the subscriptions arrive; sends like a PUB
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        if subscribers_holder:
            subs = subscribers_holder[0]
            subs.broadcast("connect", endpoint)
        else:
            subs = Subscribers(args.subscribers, endpoint, args.start_timeout)
            subscribers_holder.append(subs)
        subscribed = 0
        deadline = time.monotonic() + args.start_timeout
        while subscribed < args.subscribers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline: {subscribed} of {args.subscribers} subscriptions arrived")
            if pub.poll(100):
                if pub.recv()[:1] == b"\x01":
                    subscribed += 1
        row = dict(template)
        seqs = {}
        source = row.get("source", SOURCE)

        def publish(run_id):
            seq = seqs[run_id] = seqs.get(run_id, 0) + 1
            row["run_id"] = run_id
            row["stream_seq"] = seq
            row["seq"] = seq
            stream = f"{TABLE}/{run_id}/{source}"
            now = time.time_ns()
            row["arrival_time_ns"] = ns_to_rfc3339(now)
            row["instrument_time_ns"] = row["arrival_time_ns"]
            header = {"topic": stream, "table": TABLE, "run_id": run_id, "source": source, "format": "json",
                      "first_seq": seq, "last_seq": seq, "rows": 1, "schema_version": 2}
            pub.send_multipart([f"json/{stream}".encode(), json.dumps(header).encode(),
                                json.dumps([row], separators=(",", ":")).encode()])

        warm = warm_up(subs, lambda: publish("warm-base"), "warm-base", args.subscribers, args.start_timeout)
        send = paced(args.rate, args.seconds, lambda i: publish(LATENCY + "-base"))
        reports = subs.finish(LATENCY + "-base", send["sent"], idle_s=3.0, max_s=60.0)
        phase = summarize(reports, send["sent"])
        phase["sender"] = send
        phase["warmup_messages"] = warm
        phase["payload_bytes"] = len(json.dumps([row], separators=(",", ":")))
        phase["row_template"] = template_name
        result["baseline"] = phase
        log(f"baseline pyzmq: {phase['latency']}")
    finally:
        pub.close(linger=0)
        context.term()


# -- output ------------------------------------------------------------------------------------


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def print_table(result):
    args = result["args"]
    print(f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, {os.cpu_count()} cores, "
          f"load average {result['loadavg_start'][0]:.2f} at start, {result['loadavg_end'][0]:.2f} at end")
    print(f"{args['subscribers']} subscribers (pyzmq SUB, one process each, prefix {PREFIX!r}), "
          f"{args['pixels']}-pixel PL spectra, 1 per message ({result.get('message_bytes', '-')} B), "
          f"--rate {args['rate']:g}/s, --seconds {args['seconds']:g}")
    if not args["baseline_only"]:
        print(f"server: {args['flowdaq']}, fsync {args['fsync'] or 'always (default)'}, "
              f"raw spectra {'not stored' if args['no_store_raw'] else 'stored'}")
    lat = result.get("latency_phase")
    base = result.get("baseline")
    print()
    print("Latency: receipt of the spectrum by the server -> its feature row at a subscriber "
          "(baseline: send -> receipt), over every row of every subscriber")
    print(f"{'':34}{'rows':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'gaps':>7}{'missing':>9}{'sent/s':>10}")
    for name, phase in (("flowdaq feature stream", lat), ("raw pyzmq PUB->SUB (baseline)", base)):
        if phase:
            l = phase["latency"]
            print(f"{name:34}{phase['rows_total']:>10,}{fmt(l['p50_ms'], 3):>10}{fmt(l['p99_ms'], 3):>10}"
                  f"{fmt(l['max_ms'], 3):>10}{phase['gaps_total']:>7}{phase['missing_rows_total']:>9}"
                  f"{fmt(phase['sender']['rate_per_s'], 0):>10}")
    ratio = result.get("ratio_flowdaq_over_pyzmq")
    if ratio:
        print(f"ratio flowdaq / pyzmq: p50 {ratio['p50']:.1f}x, p99 {ratio['p99']:.1f}x")
    sample = result.get("sample")
    if sample:
        print(f"a feature row as received: arrival_time_ns = {sample['row'].get('arrival_time_ns')!r}, "
              f"stream_seq = {sample['row'].get('stream_seq')!r}, {len(sample['row'])} columns, "
              f"payload {sample['payload_bytes']} B; header {json.dumps(sample['header'])}")
    if lat:
        goal = lat["latency"]["p99_ms"]
        print(f"goal p99 < 5 ms: {'met' if goal is not None and goal < 5 else 'NOT met'} ({fmt(goal, 3)} ms)")
        print("rows per subscriber: " + " ".join(str(s["rows"]) for s in lat["subscribers"])
              + f" (expected {lat['expected_rows_per_subscriber']} each)")
        print("p99 per subscriber (ms): " + " ".join(fmt(s["latency"]["p99_ms"], 2) for s in lat["subscribers"]))
        print(f"sender: late by > 1 ms {lat['sender']['sends_late_over_1ms']} times, "
              f"p99 late {fmt(lat['sender']['send_late_p99_us'], 0)} us; server: "
              + ", ".join(f"{k} {v}" for k, v in lat["server"].items()))
    tput = result.get("throughput_phase")
    if tput:
        print()
        print("Throughput: spectra pushed as fast as the server takes them; subscribers read headers only")
        print(f"server: {fmt(tput['server_spectra_per_s'], 0)} spectra/s processed, "
              f"{fmt(tput['server_publish_messages_per_s'], 0)} feature messages/s published; "
              + ", ".join(f"{k} {v}" for k, v in tput["server"].items()))
        print(f"feature rows/s per subscriber: min {fmt(tput['rows_per_s_per_subscriber_min'], 0)}, "
              f"mean {fmt(tput['rows_per_s_per_subscriber_mean'], 0)}; total over "
              f"{len(tput['subscribers'])} subscribers {fmt(tput['rows_per_s_total'], 0)} rows/s")
        print("rows per subscriber: " + " ".join(str(s["rows"]) for s in tput["subscribers"])
              + f" (expected {tput['expected_rows_per_subscriber']} each); gaps {tput['gaps_total']}, "
              f"rows lost in gaps {tput['lost_rows_in_gaps_total']}, missing {tput['missing_rows_total']}")
        o = tput["oldest_row_latency"]
        print(f"latency of each message's oldest row under load: p50 {fmt(o['p50_ms'], 1)} ms, "
              f"p99 {fmt(o['p99_ms'], 1)} ms, max {fmt(o['max_ms'], 1)} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/flowdaq-target"))
    parser.add_argument("--flowdaq", default=str(Path(target) / "release/flowdaq"), help="the flowdaq binary")
    parser.add_argument("--rate", type=float, default=1000.0, help="spectra (and baseline messages) per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--pixels", type=int, default=2048)
    parser.add_argument("--no-store-raw", action="store_true", help="[sources.bench-spec] store_raw = false")
    parser.add_argument("--fsync", choices=("always", "never"), default=None,
                        help="[wal] fsync; default: the server's (always). `never` separates the fsync's share")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--baseline-only", action="store_true", help="only the raw pyzmq fan-out (no server)")
    parser.add_argument("--start-timeout", type=float, default=30.0, help="bound on each start-up wait, s")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--json", action="store_true", help="also print one JSON object with everything")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.subscribers <= 0:
        parser.error("--rate, --seconds and --subscribers must be > 0")
    if not args.baseline_only and not Path(args.flowdaq).exists():
        sys.exit(f"{args.flowdaq} not found: build it with `cargo build --release` (or pass --flowdaq)")

    result = {
        "command": [sys.executable, *sys.argv],
        "args": vars(args),
        "versions": {"python": sys.version.split()[0], "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                     "numpy": np.__version__},
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    holder = []
    status = 0
    try:
        if not args.baseline_only:
            run_flowdaq(args, holder, result)
        if not args.skip_baseline:
            template, name = synthetic_row(), "synthetic spectral_features row"
            if result.get("sample") and isinstance(result["sample"].get("row"), dict):
                template, name = result["sample"]["row"], "a row flowdaq published in this run"
            run_baseline(args, holder, template, name, result)
    except RuntimeError as err:
        log(f"error: {err}")
        result["error"] = str(err)
        status = 1
    finally:
        for subs in holder:
            subs.close()
    result["loadavg_end"] = os.getloadavg()
    lat, base = result.get("latency_phase"), result.get("baseline")
    if lat and base and base["latency"]["p50_ms"] and lat["latency"]["p50_ms"] is not None:
        result["ratio_flowdaq_over_pyzmq"] = {
            "p50": lat["latency"]["p50_ms"] / base["latency"]["p50_ms"],
            "p99": lat["latency"]["p99_ms"] / base["latency"]["p99_ms"],
        }
    if lat:
        result["goal_p99_under_5ms_met"] = lat["latency"]["p99_ms"] is not None and lat["latency"]["p99_ms"] < 5.0
    print_table(result)
    if args.json:
        print(json.dumps(result, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
