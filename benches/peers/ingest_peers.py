#!/usr/bin/env python3
"""Peer benchmark: flowdaq ingest against the disk and a bare ZeroMQ receiver, in one run.

The same sender processes (pyzmq PUSH, the message layout of python/flowdaq/wire.py:
JSON header, 2048 x f64 wavelength axis, n x 2048 x f32 counts) feed, for --seconds each:
  bare     a pyzmq PULL in its own process that only counts messages and spectra: the cost
           floor of the transport. Rate = spectra / (last receipt - first send).
  flowdaq  `flowdaq serve` (default configuration; loopback ephemeral ports; WAL fsync
           "always") on a fresh data directory. Rate = spectra visible to SQL
           (`SELECT count(*) FROM spectra` equals the spectra sent) / (that moment - first
           send); also the sender-side rate and the server's receipt -> queryable p50/p99.
Both at 1 and 16 spectra per message, alternating bare and flowdaq rounds (--rounds) to
control drift; each round and the median are reported. Further phases:
  wal      bytes the server writes to its WAL per spectrum: a fresh server (persisting
           deferred, so no segment is removed) takes a fixed number of messages of each size,
           and the WAL segment bytes are divided by the spectra.
  disk     append + os.fdatasync on the filesystem of the data directory for --disk-seconds
           per chunk size: one message's WAL bytes, and the mean WAL group flowdaq committed
           in its rounds (bytes/group at that load). MB/s and the equivalent spectra/s at the
           measured WAL bytes per spectrum.
  latency  a fresh server; one DEALER sender with a session, 1 spectrum per message paced at
           --latency-rate messages/s for --seconds: send -> ack per message on the client,
           the server's receipt -> durable / receipt -> queryable, and send -> row visible to
           `SELECT count(*) FROM spectra WHERE source = .. AND seq = X` for every
           --sql-sample-every'th message (that time includes one query's round trip).
  cpu      process CPU seconds (all threads) of the senders, the bare receiver and the server
           per spectrum, and the budget at the goal rate: cores / (0.8 x min(bare, disk)) us
           per spectrum, shared by senders and server on this machine; beside it, what pyarrow
           (Arrow C++) takes to write the same spectra to Parquet with flowdaq's encodings
           (zstd 3, byte-stream split, no dictionary): a floor for that one step.
The summary table gives flowdaq / bare, flowdaq / disk and flowdaq / min(bare, disk) (goal
>= 0.8) per message size, the CPU block, and the latency block (goal: p99 receipt ->
queryable < 10 ms at 1,000 spectra/s). --json prints one JSON object with every figure instead (progress on stderr).

Usage:
  ~/.cache/flowdaq-venv/bin/python benches/peers/ingest_peers.py [--seconds 10] [--rounds 2]
      [--senders 2] [--spectra-per-message 1 16] [--flowdaq BIN] [--data-root DIR] [--keep]
      [--json]
The flowdaq binary defaults to $CARGO_TARGET_DIR/release/flowdaq (CARGO_TARGET_DIR defaults
to ~/.cache/flowdaq-target); build it with `cargo build --release`. The data directories are
made under --data-root (default ~/.cache/flowdaq-bench, i.e. a real disk, not a tmpfs /tmp)
and removed at the end unless --keep. Linux only (/proc/mounts, fdatasync).
"""
import argparse
import ctypes
import datetime
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))  # the flowdaq package, installed or not

from flowdaq.wire import spectrum_frames  # noqa: E402

PIXELS = 2048
SEQ_MARK = 7777777777777  # placeholder seq in the header template, replaced per message
VARIANTS = 4  # pre-built counts frames a sender cycles through
SEND_TIMEOUT_MS = 30_000  # a send blocked this long (receiver gone or stuck) ends the sender
CHILDREN = []  # every process started, killed by cleanup()


# ---------------------------------------------------------------------------------------------
# processes


try:  # looked up once: _die_with_parent also runs between fork and exec
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent():
    """Linux: this process gets SIGKILL when the process that started it dies."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def cleanup():
    """Kill every child still running (senders, receivers, servers); bounded."""
    while CHILDREN:
        child = CHILDREN.pop()
        try:
            if isinstance(child, subprocess.Popen):
                if child.poll() is None:
                    child.kill()
                child.wait(timeout=10)
            else:
                if child.is_alive():
                    child.kill()
                child.join(timeout=10)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def _raise_exit(signum, _frame):
    print(f"interrupted by signal {signum}: stopping", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def start_process(target, *args):
    """Start `target(conn, *args)` in a spawned process; return (process, parent end of pipe)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, *args), daemon=True)
    CHILDREN.append(process)
    process.start()
    child.close()
    return process, parent


def recv_until(conn, deadline, what):
    """One message from a child's pipe, or an error at the deadline."""
    while time.monotonic() < deadline:
        if conn.poll(0.05):
            try:
                return conn.recv()
            except EOFError:
                raise RuntimeError(f"{what}: the child process exited without answering") from None
    raise RuntimeError(f"{what}: no answer before the deadline")


def join_all(processes, seconds=30):
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# messages and senders


def message_template(source, spectra, pixels, session=None):
    """(header prefix, header suffix, [payload frames] x VARIANTS): a message is
    prefix + str(seq) + suffix followed by one variant's payload frames. The frames come from
    flowdaq.wire.spectrum_frames, built once."""
    rng = np.random.default_rng(zlib.crc32(source.encode()))
    wavelength_nm = np.linspace(350.0, 1000.0, pixels)
    energy_ev = 1239.84198 / wavelength_nm
    variants, prefix, suffix = [], None, None
    for v in range(VARIANTS):
        peak_ev = 2.3 + 0.05 * rng.random((spectra, 1))
        counts = 1000 + 30000 * np.exp(-4 * np.log(2) * (energy_ev - peak_ev) ** 2 / 0.09 ** 2)
        counts = (counts + rng.normal(0, 20, counts.shape)).astype("<f4")
        if spectra == 1:
            counts = counts[0]
        header, axis, payload = spectrum_frames(source, SEQ_MARK, wavelength_nm, counts, session=session)
        parts = header.split(str(SEQ_MARK).encode())
        assert len(parts) == 2, header
        prefix, suffix = parts
        variants.append([axis, payload])
    return prefix, suffix, variants


def push_sender(conn, endpoint, source, spectra, pixels, seconds, max_messages, hwm, start_event):
    """Send as fast as the socket takes them for `seconds` (or `max_messages`); report."""
    _die_with_parent()
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, hwm)
    socket.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    socket.setsockopt(zmq.LINGER, SEND_TIMEOUT_MS)
    socket.connect(endpoint)
    prefix, suffix, variants = message_template(source, spectra, pixels)
    message_bytes = len(prefix) + len(suffix) + 1 + sum(len(f) for f in variants[0])
    report = {"source": source, "messages": 0, "spectra": 0, "first_send": None, "last_send": None,
              "message_bytes": message_bytes, "cpu_seconds": 0.0, "error": None}
    try:
        conn.send({"ready": True})
        if not start_event.wait(120):
            report["error"] = "no start signal"
            return
        seq = 0
        limit = max_messages if max_messages else 1 << 62
        cpu_start = time.process_time()
        first = time.monotonic()
        end = first + seconds
        while seq < limit:
            now = time.monotonic()
            if now >= end:
                break
            header = prefix + str(seq).encode() + suffix
            try:
                socket.send_multipart([header, *variants[seq % VARIANTS]], copy=False)
            except zmq.Again:
                report["error"] = f"send blocked for {SEND_TIMEOUT_MS} ms at seq {seq}"
                break
            seq += 1
        report.update(messages=seq, spectra=seq * spectra, first_send=first, last_send=time.monotonic(),
                      cpu_seconds=time.process_time() - cpu_start)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which fails the round
        report["error"] = repr(err)
    finally:
        conn.send(report)
        socket.close()
        context.term()  # waits (up to the linger) until the queued messages are out


def bare_receiver(conn, spectrum_bytes, hwm, max_seconds):
    """PULL on loopback that only counts messages and spectra (length of the last frame)."""
    _die_with_parent()
    context = zmq.Context()
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.RCVHWM, hwm)  # libzmq's default, 1000
    socket.setsockopt(zmq.LINGER, 0)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    conn.send({"endpoint": f"tcp://127.0.0.1:{port}"})
    messages = spectra = 0
    first = last = None
    expected = None
    deadline = time.monotonic() + max_seconds
    cpu_start = time.process_time()
    try:
        while time.monotonic() < deadline:
            if expected is not None and messages >= expected:
                break
            if socket.poll(50):
                for _ in range(4096):
                    try:
                        parts = socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    last = time.monotonic()
                    if first is None:
                        first = last
                    messages += 1
                    spectra += len(parts[-1]) // spectrum_bytes
            if conn.poll(0):
                expected = conn.recv()["expected_messages"]
    finally:
        conn.send({"messages": messages, "spectra": spectra, "first_receipt": first, "last_receipt": last,
                   "cpu_seconds": time.process_time() - cpu_start})
        socket.close()
        context.term()


def run_senders(endpoint, n, spectra, pixels, seconds, hwm, tag, max_messages=0):
    """Start n push_sender processes, start them together, return their reports."""
    ctx = mp.get_context("spawn")
    start_event = ctx.Event()
    started = []
    try:
        for i in range(n):
            started.append(start_process(push_sender, endpoint, f"{tag}-{i}", spectra, pixels, seconds,
                                         max_messages, hwm, start_event))
        deadline = time.monotonic() + 120
        for _, conn in started:
            recv_until(conn, deadline, "sender start-up")
        start_event.set()
        deadline = time.monotonic() + seconds + SEND_TIMEOUT_MS / 1000 + 60
        reports = [recv_until(conn, deadline, "sender report") for _, conn in started]
        join_all([p for p, _ in started], SEND_TIMEOUT_MS / 1000 + 10)
    finally:
        for process, _ in started:
            if process.is_alive():
                process.kill()
    errors = [r["error"] for r in reports if r["error"]]
    if errors:
        raise RuntimeError(f"senders failed: {errors}")
    return reports


def sender_summary(reports):
    first = min(r["first_send"] for r in reports)
    last = max(r["last_send"] for r in reports)
    messages = sum(r["messages"] for r in reports)
    spectra = sum(r["spectra"] for r in reports)
    return {
        "messages": messages,
        "spectra": spectra,
        "message_bytes": reports[0]["message_bytes"],
        "first_send": first,
        "send_seconds": last - first,
        "sender_spectra_per_s": spectra / (last - first) if last > first else float("nan"),
        "sender_cpu_us_per_spectrum": sum(r["cpu_seconds"] for r in reports) / max(1, spectra) * 1e6,
    }


# ---------------------------------------------------------------------------------------------
# flowdaq server


class Server:
    """A `flowdaq serve` child on ephemeral loopback ports (as tests/python/conftest.py)."""

    def __init__(self, binary, data_dir, extra_config=""):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.config_path = self.data_dir.parent / f"{self.data_dir.name}.toml"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.config_path.write_text(
            f'data_dir = "{self.data_dir}"\n'
            "[ingest]\n"
            'pull = "tcp://127.0.0.1:0"\nsub = "tcp://127.0.0.1:0"\nrouter = "tcp://127.0.0.1:0"\n'
            '[http]\nlisten = "127.0.0.1:0"\n'
            '[publish]\nlisten = "tcp://127.0.0.1:0"\n'
            '[control]\nlisten = "tcp://127.0.0.1:0"\n'
            '[flight_sql]\nlisten = "127.0.0.1:0"\n'
            '[postgres]\nlisten = "127.0.0.1:0"\n'
            '[wal]\nfsync = "always"\n'
            + extra_config
        )
        self.process = None
        self.ready = None
        self.http = None

    def start(self, timeout=120):
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [self.binary, "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=_die_with_parent,
        )
        log.close()
        CHILDREN.append(self.process)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.kill()
            raise RuntimeError(f"flowdaq serve not ready within {timeout} s: {self.log_tail()}")
        self.ready = json.loads(line)
        assert self.ready["event"] == "ready", line
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep draining
        self.http = Http(self.ready["http"])
        return self

    def log_tail(self, chars=2000):
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pull(self):
        return self.ready["pull"]

    @property
    def router(self):
        return self.ready["router"]

    def metrics(self):
        return json.loads(self.http.request("GET", "/metrics/json"))

    def count(self, sql):
        rows = json.loads(self.http.request("POST", "/sql?format=json", sql.encode()))
        return int(next(iter(rows[0].values()))) if rows else 0

    def wait_count(self, sql, expected, timeout):
        """Poll `sql` (a count) until it equals expected; return the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.count(sql)
            now = time.monotonic()
            if got >= expected:
                if got != expected:
                    raise RuntimeError(f"{sql}: {got} rows, expected {expected}")
                return now
            if now > deadline:
                raise RuntimeError(f"{sql}: {got} of {expected} rows after {timeout} s")
            time.sleep(0.01)

    def wal_bytes(self):
        return sum(p.stat().st_size for p in (self.data_dir / "wal").glob("*.wal"))

    def stop(self, timeout=30):
        """SIGTERM (the server persists what it holds), SIGKILL after `timeout`."""
        if self.http:
            self.http.close()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class Http:
    """One kept-alive HTTP/1.1 connection; reconnects once on a broken connection."""

    def __init__(self, hostport, timeout=60):
        self.hostport = hostport
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.hostport, timeout=self.timeout)
                self.conn.request(method, path, body=body)
                response = self.conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:500]!r}")
                return data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---------------------------------------------------------------------------------------------
# phases


def filesystem_of(path):
    """(mount point, fstype, device) of the filesystem holding path, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("/", "?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, mount, fstype = line.split()[:3]
                mount = mount.replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[0]):
                    best = (mount, fstype, device)
    except OSError:
        pass
    return best


def disk_bandwidth(directory, chunk_bytes, seconds, rotate_bytes=256 << 20):
    """Append chunk_bytes + fdatasync for `seconds` (new file every rotate_bytes, as WAL
    segments): MB/s, fdatasync calls/s and the latency of write + fdatasync."""
    data = os.urandom(chunk_bytes)
    path = os.path.join(directory, "disk-probe.bin")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    fd = os.open(path, flags, 0o644)
    written = in_file = calls = 0
    latencies = []
    try:
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
            latencies.append(time.monotonic() - t)
            written += chunk_bytes
            in_file += chunk_bytes
            calls += 1
            if in_file >= rotate_bytes:
                os.close(fd)
                fd = os.open(path, flags, 0o644)
                in_file = 0
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
        os.unlink(path)
    ms = np.array(latencies) * 1e3
    return {
        "chunk_bytes": chunk_bytes,
        "seconds": elapsed,
        "mb_per_s": written / elapsed / 1e6,
        "fdatasyncs_per_s": calls / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def calibrate_wal(args, run_dir, sizes):
    """WAL bytes per spectrum per message size, on a server that defers persisting (so no
    segment is removed): send a fixed number of messages, wait until SQL sees them, sum the
    segment sizes."""
    server = Server(args.flowdaq, run_dir / "calibration",
                    "[buffer]\nflush_interval_ms = 3600000\n").start()
    out = {}
    try:
        total = 0
        for spectra in sizes:
            messages = max(20, 400 // spectra)
            before = server.wal_bytes()
            groups_before = server.metrics()["wal_groups"]
            reports = run_senders(server.pull, 1, spectra, args.pixels, 60.0, args.hwm,
                                  f"calibration-{spectra}", max_messages=messages)
            sent = sender_summary(reports)
            total += sent["spectra"]
            server.wait_count("SELECT count(*) FROM spectra", total, args.visible_timeout)
            wal = server.wal_bytes() - before
            groups = server.metrics()["wal_groups"] - groups_before
            out[spectra] = {
                "messages": sent["messages"],
                "spectra": sent["spectra"],
                "wal_bytes": wal,
                "wal_groups": groups,
                "wal_bytes_per_spectrum": wal / sent["spectra"],
                "frame_bytes_per_spectrum": sent["message_bytes"] / spectra,
            }
    finally:
        server.stop()
    return out


def parquet_floor(pixels, spectra=20_000):
    """CPU us per spectrum for pyarrow to write `spectra` spectra (List<float32>) plus a seq
    column to Parquet in memory with flowdaq's settings; best of 3."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    x = np.arange(pixels)
    peak = 1000 * np.exp(-((x - pixels / 2) / 80.0) ** 2) + 50
    counts = (peak + rng.normal(0, 5, (spectra, pixels))).astype(np.float32)
    offsets = pa.array(np.arange(0, (spectra + 1) * pixels, pixels, dtype=np.int32))
    table = pa.table({"intensity_counts": pa.ListArray.from_arrays(offsets, pa.array(counts.ravel())),
                      "seq": pa.array(np.arange(spectra, dtype=np.uint64))})
    best = math.inf
    for _ in range(3):
        sink = io.BytesIO()
        start = time.process_time()
        pq.write_table(table, sink, compression="zstd", compression_level=3, use_dictionary=False,
                       use_byte_stream_split=["intensity_counts.list.element"], write_statistics=["seq"])
        best = min(best, time.process_time() - start)
    return {"pyarrow": pa.__version__, "cpu_us_per_spectrum": best / spectra * 1e6,
            "bytes_per_spectrum": len(sink.getvalue()) / spectra}


def process_cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_round(args, spectra, tag):
    spectrum_bytes = 4 * args.pixels
    receiver, conn = start_process(bare_receiver, spectrum_bytes, 1000,
                                   args.seconds + SEND_TIMEOUT_MS / 1000 + 300)
    try:
        endpoint = recv_until(conn, time.monotonic() + 120, "receiver start-up")["endpoint"]
        sent = sender_summary(run_senders(endpoint, args.senders, spectra, args.pixels,
                                          args.seconds, args.hwm, tag))
        conn.send({"expected_messages": sent["messages"]})
        got = recv_until(conn, time.monotonic() + args.visible_timeout, "receiver report")
        join_all([receiver], 10)
    finally:
        if receiver.is_alive():
            receiver.kill()
    if got["messages"] != sent["messages"] or got["spectra"] != sent["spectra"]:
        raise RuntimeError(f"bare receiver got {got}, senders sent {sent}")
    elapsed = got["last_receipt"] - sent["first_send"]
    return {
        **sent,
        "receiver_cpu_us_per_spectrum": got["cpu_seconds"] / max(1, sent["spectra"]) * 1e6,
        "seconds": elapsed,
        "spectra_per_s": sent["spectra"] / elapsed,
        "mb_per_s": sent["messages"] * sent["message_bytes"] / elapsed / 1e6,
    }


def flowdaq_round(args, run_dir, spectra, tag):
    server = Server(args.flowdaq, run_dir / tag).start()
    try:
        cpu_start = process_cpu_seconds(server.process.pid)
        sent = sender_summary(run_senders(server.pull, args.senders, spectra, args.pixels,
                                          args.seconds, args.hwm, tag))
        visible = server.wait_count("SELECT count(*) FROM spectra", sent["spectra"], args.visible_timeout)
        server_cpu = process_cpu_seconds(server.process.pid) - cpu_start
        metrics = server.metrics()
    finally:
        server.stop()
        if not args.keep:  # rounds can write gigabytes: free them now, and let the disk settle
            shutil.rmtree(server.data_dir, ignore_errors=True)
            os.sync()
    elapsed = visible - sent["first_send"]
    processed = metrics["messages_processed"]
    return {
        **sent,
        "server_cpu_us_per_spectrum": server_cpu / max(1, sent["spectra"]) * 1e6,
        "seconds": elapsed,
        "spectra_per_s": sent["spectra"] / elapsed,
        "mb_per_s": sent["messages"] * sent["message_bytes"] / elapsed / 1e6,
        "wal_groups": metrics["wal_groups"],
        "messages_per_group": processed / max(1, metrics["wal_groups"]),
        "receipt_to_durable": metrics["receipt_to_durable"],
        "receipt_to_queryable": metrics["receipt_to_queryable"],
        "persisted_files": metrics.get("buffer", {}).get("persisted_files"),
    }


def dealer_sender(conn, endpoint, source, session, pixels, rate, seconds, sample_every, start_event):
    """One DEALER, 1 spectrum per message paced at `rate`/s: send -> ack per message; every
    sample_every'th (seq, send time) goes to the parent as it is sent."""
    _die_with_parent()
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, 100_000)
    socket.connect(endpoint)
    prefix, suffix, variants = message_template(source, 1, pixels, session=session)
    n = int(rate * seconds)
    t_send = np.full(n, np.nan)
    t_ack = np.full(n, np.nan)
    state = {"nacks": 0, "duplicates": 0, "errors": []}

    def drain(timeout_ms):
        while socket.poll(timeout_ms):
            reply = json.loads(socket.recv_multipart()[-1])
            now = time.monotonic()
            if "ack" in reply and reply["ack"] is not None and 0 <= reply["ack"] < n:
                t_ack[reply["ack"]] = now
                state["duplicates"] += bool(reply.get("duplicate"))
            else:
                state["nacks"] += 1
                if len(state["errors"]) < 5:
                    state["errors"].append(reply)
            timeout_ms = 0

    conn.send({"ready": True})
    if not start_event.wait(120):
        conn.send(("done", {"error": "no start signal"}))
        return
    start = time.monotonic() + 0.01
    seq = 0
    while seq < n:
        due = start + seq / rate
        now = time.monotonic()
        if now < due:
            drain(max(1, math.ceil((due - now) * 1000)) if due - now > 0.0002 else 0)
            continue
        header = prefix + str(seq).encode() + suffix
        t = time.monotonic()
        socket.send_multipart([header, *variants[seq % VARIANTS]], copy=False)
        t_send[seq] = t
        if sample_every and seq % sample_every == 0:
            conn.send(("sample", seq, t))
        seq += 1
        drain(0)
    deadline = time.monotonic() + 30
    while np.isnan(t_ack).sum() > state["nacks"] and time.monotonic() < deadline:
        drain(100)
    acked = ~np.isnan(t_ack)
    us = (t_ack[acked] - t_send[acked]) * 1e6
    conn.send(("done", {
        "messages": n,
        "acked": int(acked.sum()),
        "nacks": state["nacks"],
        "duplicates": state["duplicates"],
        "nack_examples": state["errors"],
        "send_rate_per_s": (n - 1) / (t_send[-1] - t_send[0]) if n > 1 else float("nan"),
        "ack_p50_us": float(np.percentile(us, 50)) if len(us) else None,
        "ack_p99_us": float(np.percentile(us, 99)) if len(us) else None,
        "ack_max_us": float(us.max()) if len(us) else None,
        "error": None,
    }))
    socket.close()
    context.term()


def latency_phase(args, run_dir):
    server = Server(args.flowdaq, run_dir / "latency").start()
    source = "latency-0"
    session = f"ingest-peers-{os.getpid()}-{time.time_ns()}"
    ctx = mp.get_context("spawn")
    start_event = ctx.Event()
    visible_us, stale = [], 0
    query_ms = []
    try:
        sender, conn = start_process(dealer_sender, server.router, source, session, args.pixels,
                                     args.latency_rate, args.seconds, args.sql_sample_every, start_event)
        recv_until(conn, time.monotonic() + 120, "latency sender start-up")
        start_event.set()
        deadline = time.monotonic() + args.seconds + 120
        result = None
        while result is None:
            message = recv_until(conn, deadline, "latency sender")
            if message[0] == "done":
                result = message[1]
                break
            _, seq, t_sent = message
            if time.monotonic() - t_sent > 0.05:  # still busy with an earlier sample: skip
                stale += 1
                continue
            sql = f"SELECT count(*) FROM spectra WHERE source = '{source}' AND seq = {seq}"
            poll_deadline = time.monotonic() + 10
            while True:
                t_query = time.monotonic()
                got = server.count(sql)
                now = time.monotonic()
                if got >= 1:
                    visible_us.append((now - t_sent) * 1e6)
                    query_ms.append((now - t_query) * 1e3)
                    break
                if now > poll_deadline:
                    raise RuntimeError(f"seq {seq} not visible to SQL after 10 s")
        join_all([sender], 30)
        if result.get("error"):
            raise RuntimeError(f"latency sender: {result['error']}")
        server.wait_count(f"SELECT count(*) FROM spectra WHERE source = '{source}'", result["acked"],
                          args.visible_timeout)
        metrics = server.metrics()
    finally:
        server.stop()
    result.update(
        rate_per_s=args.latency_rate,
        seconds=args.seconds,
        receipt_to_durable=metrics["receipt_to_durable"],
        receipt_to_queryable=metrics["receipt_to_queryable"],
        sql_samples=len(visible_us),
        sql_samples_skipped=stale,
        send_to_sql_p50_us=float(np.percentile(visible_us, 50)) if visible_us else None,
        send_to_sql_p99_us=float(np.percentile(visible_us, 99)) if visible_us else None,
        send_to_sql_max_us=float(max(visible_us)) if visible_us else None,
        sql_query_p50_ms=float(np.percentile(query_ms, 50)) if query_ms else None,
    )
    return result


# ---------------------------------------------------------------------------------------------
# main


def main():
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/flowdaq-target"))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowdaq", default=str(Path(target) / "release/flowdaq"), help="flowdaq binary")
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time of each round (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="bare + flowdaq rounds per message size (default 2)")
    parser.add_argument("--senders", type=int, default=2, help="sender processes (default 2)")
    parser.add_argument("--spectra-per-message", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--pixels", type=int, default=PIXELS)
    parser.add_argument("--hwm", type=int, default=16, help="SNDHWM of the PUSH senders, messages (default 16)")
    parser.add_argument("--disk-seconds", type=float, default=3.0, help="per chunk size (default 3)")
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="messages/s (default 1000)")
    parser.add_argument("--sql-sample-every", type=int, default=100, help="0: no SQL visibility samples")
    parser.add_argument("--visible-timeout", type=float, default=180.0,
                        help="bound on waiting for rows to become visible (s)")
    parser.add_argument("--data-root", default=str(Path.home() / ".cache/flowdaq-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress on stderr)")
    args = parser.parse_args()
    if not Path(args.flowdaq).exists():
        sys.exit(f"{args.flowdaq} not found: build it with `cargo build --release`")
    out = sys.stderr if args.json else sys.stdout

    def log(text=""):
        print(text, file=out, flush=True)

    signal.signal(signal.SIGTERM, _raise_exit)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    Path(args.data_root).mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="ingest-peers-", dir=args.data_root))
    mount, fstype, device = filesystem_of(run_dir)
    vfs = os.statvfs(run_dir)
    binary = Path(args.flowdaq).resolve()
    report = {
        "command": command,
        "date": date,
        "host": {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                 "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()},
        "flowdaq": {"binary": str(binary),
                    "mtime": datetime.datetime.fromtimestamp(binary.stat().st_mtime).isoformat(timespec="seconds")},
        "filesystem": {"data_dir": str(run_dir), "mount": mount, "fstype": fstype, "device": device,
                       "free_gb": vfs.f_bavail * vfs.f_frsize / 1e9},
        "params": {k: getattr(args, k) for k in ("seconds", "rounds", "senders", "spectra_per_message", "pixels",
                                                 "hwm", "disk_seconds", "latency_rate", "sql_sample_every")},
    }
    log(f"$ {command}")
    log(f"date {date}; {os.cpu_count()} cores, Linux {platform.release()}, pyzmq {zmq.__version__}, "
        f"libzmq {zmq.zmq_version()}")
    log(f"flowdaq {binary} (built {report['flowdaq']['mtime']})")
    log(f"data dir {run_dir}: {fstype} on {device} (mount {mount}), {report['filesystem']['free_gb']:.0f} GB free")
    if fstype in ("tmpfs", "ramfs", "overlay"):
        log(f"WARNING: {fstype} is not a disk: fdatasync figures will not be the disk's; use --data-root")
    log(f"{args.senders} PUSH senders x {args.seconds:g} s per round, SNDHWM {args.hwm}, {args.pixels} pixels "
        f"(f32 counts, f64 axis), {args.rounds} rounds per message size")
    sizes = args.spectra_per_message
    try:
        log("\n[wal] WAL bytes per spectrum (fresh server, persisting deferred)")
        wal = calibrate_wal(args, run_dir, sizes)
        report["wal"] = {str(k): v for k, v in wal.items()}
        for spectra, c in wal.items():
            log(f"  {spectra:>3} spectra/message: {c['wal_bytes']} B in {c['wal_groups']} groups for "
                f"{c['spectra']} spectra = {c['wal_bytes_per_spectrum']:.0f} B/spectrum "
                f"(frames: {c['frame_bytes_per_spectrum']:.0f} B/spectrum)")

        rounds = {spectra: {"bare": [], "flowdaq": []} for spectra in sizes}
        for spectra in sizes:
            for r in range(args.rounds):
                tag = f"r{r}-s{spectra}"
                bare = bare_round(args, spectra, f"bare-{tag}")
                rounds[spectra]["bare"].append(bare)
                log(f"[round {r + 1}, {spectra:>2} spectra/msg] bare    {bare['spectra_per_s']:>9.0f} spectra/s "
                    f"{bare['mb_per_s']:>7.1f} MB/s ({bare['spectra']} spectra in {bare['seconds']:.2f} s; CPU per "
                    f"spectrum: senders {bare['sender_cpu_us_per_spectrum']:.1f} us, receiver "
                    f"{bare['receiver_cpu_us_per_spectrum']:.1f} us)")
                ours = flowdaq_round(args, run_dir, spectra, f"flowdaq-{tag}")
                rounds[spectra]["flowdaq"].append(ours)
                q = ours["receipt_to_queryable"]
                log(f"[round {r + 1}, {spectra:>2} spectra/msg] flowdaq {ours['spectra_per_s']:>9.0f} spectra/s "
                    f"{ours['mb_per_s']:>7.1f} MB/s visible in SQL ({ours['spectra']} spectra in "
                    f"{ours['seconds']:.2f} s; senders {ours['sender_spectra_per_s']:.0f}/s over "
                    f"{ours['send_seconds']:.2f} s; {ours['messages_per_group']:.1f} msg/WAL group; "
                    f"receipt->queryable p50 {q['p50_us'] / 1e3:.2f} ms p99 {q['p99_us'] / 1e3:.2f} ms; CPU per "
                    f"spectrum: senders {ours['sender_cpu_us_per_spectrum']:.1f} us, server "
                    f"{ours['server_cpu_us_per_spectrum']:.1f} us)")
        report["rounds"] = {str(k): v for k, v in rounds.items()}

        log("\n[disk] append + fdatasync")
        chunks = {}  # chunk bytes -> what it stands for
        for spectra in sizes:
            per_spectrum = wal[spectra]["wal_bytes_per_spectrum"]
            one = int(round(per_spectrum * spectra))
            group_msgs = statistics.median(r["messages_per_group"] for r in rounds[spectra]["flowdaq"])
            group = int(round(per_spectrum * spectra * group_msgs))
            chunks.setdefault(one, []).append(f"1 message of {spectra}")
            chunks.setdefault(group, []).append(f"flowdaq's median group at {spectra}/msg ({group_msgs:.1f} msgs)")
        disk = {}
        for chunk in sorted(chunks):
            d = disk_bandwidth(run_dir, chunk, args.disk_seconds)
            d["stands_for"] = chunks[chunk]
            disk[chunk] = d
            log(f"  {chunk:>10} B chunks: {d['mb_per_s']:>8.1f} MB/s {d['fdatasyncs_per_s']:>7.0f} fdatasync/s "
                f"(write+fdatasync p50 {d['p50_ms']:.2f} ms p99 {d['p99_ms']:.2f} ms) - {'; '.join(chunks[chunk])}")
        report["disk"] = list(disk.values())

        log(f"\n[latency] DEALER, 1 spectrum/message at {args.latency_rate:g}/s for {args.seconds:g} s")
        latency = latency_phase(args, run_dir)
        report["latency"] = latency

        summary = {}
        for spectra in sizes:
            per_spectrum = wal[spectra]["wal_bytes_per_spectrum"]
            bare = statistics.median(r["spectra_per_s"] for r in rounds[spectra]["bare"])
            ours = statistics.median(r["spectra_per_s"] for r in rounds[spectra]["flowdaq"])
            group_msgs = statistics.median(r["messages_per_group"] for r in rounds[spectra]["flowdaq"])
            group_chunk = int(round(per_spectrum * spectra * group_msgs))
            one_chunk = int(round(per_spectrum * spectra))
            disk_eq = disk[group_chunk]["mb_per_s"] * 1e6 / per_spectrum
            disk_one = disk[one_chunk]["mb_per_s"] * 1e6 / per_spectrum
            summary[str(spectra)] = {
                "bare_spectra_per_s": bare,
                "disk_spectra_per_s": disk_eq,
                "disk_chunk_bytes": group_chunk,
                "disk_one_message_spectra_per_s": disk_one,
                "flowdaq_spectra_per_s": ours,
                "flowdaq_sender_spectra_per_s": statistics.median(
                    r["sender_spectra_per_s"] for r in rounds[spectra]["flowdaq"]),
                "flowdaq_over_bare": ours / bare,
                "flowdaq_over_disk": ours / disk_eq,
                "flowdaq_over_min": ours / min(bare, disk_eq),
                "receipt_to_queryable_p50_us": statistics.median(
                    r["receipt_to_queryable"]["p50_us"] for r in rounds[spectra]["flowdaq"]),
                "receipt_to_queryable_p99_us": statistics.median(
                    r["receipt_to_queryable"]["p99_us"] for r in rounds[spectra]["flowdaq"]),
                "bare_sender_cpu_us_per_spectrum": statistics.median(
                    r["sender_cpu_us_per_spectrum"] for r in rounds[spectra]["bare"]),
                "bare_receiver_cpu_us_per_spectrum": statistics.median(
                    r["receiver_cpu_us_per_spectrum"] for r in rounds[spectra]["bare"]),
                "flowdaq_sender_cpu_us_per_spectrum": statistics.median(
                    r["sender_cpu_us_per_spectrum"] for r in rounds[spectra]["flowdaq"]),
                "flowdaq_server_cpu_us_per_spectrum": statistics.median(
                    r["server_cpu_us_per_spectrum"] for r in rounds[spectra]["flowdaq"]),
            }
            goal = 0.8 * min(bare, disk_eq)
            cores = os.cpu_count() or 1
            summary[str(spectra)]["cpu_budget_us_per_spectrum_at_goal"] = cores / goal * 1e6
        report["summary"] = summary
        report["parquet_floor"] = parquet_floor(args.pixels)
    finally:
        cleanup()
        if args.keep:
            log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    if args.json:
        print(json.dumps(report))
        return
    log(f"\nSummary (medians of {args.rounds} rounds; spectra/s; disk = fdatasync'd appends of flowdaq's median "
        f"WAL group, at the measured WAL bytes/spectrum)")
    log(f"{'spectra/msg':>11} {'bare':>9} {'disk':>9} {'flowdaq':>9} {'fd/bare':>8} {'fd/disk':>8} "
        f"{'fd/min':>7} {'goal':>5}  {'disk 1 msg':>10} {'fd sender':>9} {'q p50 ms':>8} {'q p99 ms':>8}")
    for spectra, s in summary.items():
        ok = "ok" if s["flowdaq_over_min"] >= 0.8 else "MISS"
        log(f"{spectra:>11} {s['bare_spectra_per_s']:>9.0f} {s['disk_spectra_per_s']:>9.0f} "
            f"{s['flowdaq_spectra_per_s']:>9.0f} {s['flowdaq_over_bare']:>8.2f} {s['flowdaq_over_disk']:>8.2f} "
            f"{s['flowdaq_over_min']:>7.2f} {ok:>5}  {s['disk_one_message_spectra_per_s']:>10.0f} "
            f"{s['flowdaq_sender_spectra_per_s']:>9.0f} {s['receipt_to_queryable_p50_us'] / 1e3:>8.2f} "
            f"{s['receipt_to_queryable_p99_us'] / 1e3:>8.2f}")
    log(f"\nCPU per spectrum (us; medians) and the budget at the goal rate ({os.cpu_count()} cores / "
        f"(0.8 x lower bound)), which the senders and the server share on this machine:")
    log(f"{'spectra/msg':>11} {'bare snd':>9} {'bare rcv':>9} {'fd snd':>9} {'fd server':>9} {'budget':>9} "
        f"{'server max':>10}")
    for spectra, s in summary.items():
        room = s["cpu_budget_us_per_spectrum_at_goal"] - s["flowdaq_sender_cpu_us_per_spectrum"]
        log(f"{spectra:>11} {s['bare_sender_cpu_us_per_spectrum']:>9.1f} {s['bare_receiver_cpu_us_per_spectrum']:>9.1f} "
            f"{s['flowdaq_sender_cpu_us_per_spectrum']:>9.1f} {s['flowdaq_server_cpu_us_per_spectrum']:>9.1f} "
            f"{s['cpu_budget_us_per_spectrum_at_goal']:>9.1f} {room:>10.1f}")
    floor = report["parquet_floor"]
    log(f"pyarrow {floor['pyarrow']} writing the same spectra to Parquet (zstd 3, byte-stream split): "
        f"{floor['cpu_us_per_spectrum']:.1f} us CPU per spectrum ({floor['bytes_per_spectrum']:.0f} B)")
    lat = latency
    d, q = lat["receipt_to_durable"], lat["receipt_to_queryable"]
    ok = "ok" if q["p99_us"] < 10_000 else "MISS"
    log(f"\nLatency at {lat['rate_per_s']:g} spectra/s for {lat['seconds']:g} s (sent at {lat['send_rate_per_s']:.0f}/s, "
        f"{lat['acked']}/{lat['messages']} acked, {lat['nacks']} nacks):")
    log(f"  send -> ack (client)        p50 {lat['ack_p50_us'] / 1e3:7.2f} ms  p99 {lat['ack_p99_us'] / 1e3:7.2f} ms  "
        f"max {lat['ack_max_us'] / 1e3:7.2f} ms")
    log(f"  receipt -> durable (server) p50 {d['p50_us'] / 1e3:7.2f} ms  p99 {d['p99_us'] / 1e3:7.2f} ms  "
        f"max {d['max_us'] / 1e3:7.2f} ms")
    log(f"  receipt -> queryable        p50 {q['p50_us'] / 1e3:7.2f} ms  p99 {q['p99_us'] / 1e3:7.2f} ms  "
        f"max {q['max_us'] / 1e3:7.2f} ms  (goal p99 < 10 ms: {ok})")
    if lat["sql_samples"]:
        log(f"  send -> row in SQL          p50 {lat['send_to_sql_p50_us'] / 1e3:7.2f} ms  p99 "
            f"{lat['send_to_sql_p99_us'] / 1e3:7.2f} ms  max {lat['send_to_sql_max_us'] / 1e3:7.2f} ms  "
            f"({lat['sql_samples']} samples, every {args.sql_sample_every}th message, {lat['sql_samples_skipped']} "
            f"skipped; includes one query, p50 {lat['sql_query_p50_ms']:.2f} ms)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
    finally:
        cleanup()
