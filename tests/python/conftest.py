"""Fixtures that run a real `flowdaq serve` process on ephemeral loopback ports."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]

import zmq  # noqa: E402

try:
    import flowdaq  # noqa: E402
except ImportError as err:
    raise pytest.UsageError(f"the flowdaq Python package is not installed ({err}): "
                            "scripts/test-all.sh runs `pip install ./python`") from None


def _installed_package_is_the_checkout():
    """The tests must exercise python/flowdaq as it is in this checkout, not an older install."""
    installed = Path(flowdaq.__file__).resolve().parent
    source = ROOT / "python" / "flowdaq"
    stale = [p.name for p in source.glob("*.py")
             if not (installed / p.name).exists() or (installed / p.name).read_bytes() != p.read_bytes()]
    if stale:
        raise pytest.UsageError(f"the installed flowdaq package ({installed}) differs from python/flowdaq in "
                                f"{sorted(stale)}: run `pip install ./python` (scripts/test-all.sh does)")


_installed_package_is_the_checkout()

_context_init = zmq.Context.__init__


def _non_blocky_context_init(self, *args, **kwargs):
    """Every test's zmq.Context closes without waiting for unsent messages: a test that fails
    before closing its sockets must fail, not hang the interpreter's exit (libzmq's default
    linger is forever)."""
    _context_init(self, *args, **kwargs)
    self.set(zmq.BLOCKY, 0)


zmq.Context.__init__ = _non_blocky_context_init


def flowdaq_bin():
    path = os.environ.get("FLOWDAQ_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "flowdaq-target"))
        path = str(Path(target) / "debug" / "flowdaq")
    if not Path(path).exists():
        pytest.fail(f"flowdaq binary not found at {path}: build it first (scripts/test-all.sh does)")
    return path


def _lines(text):
    return text if not text or text.endswith("\n") else text + "\n"


class Server:
    """A `flowdaq serve` child process and the endpoints it reported."""

    def __init__(self, data_dir, extra_config="", ingest="", publish="", control="", http="",
                 flight_sql="", postgres="", token=None, env=None):
        """`ingest`, `http`, `publish`, `control`, `flight_sql` and `postgres` are extra lines for those
        sections (a section cannot be opened twice in TOML); `extra_config` is appended as it
        is. `token` is sent as the bearer on HTTP requests; `env` is added to the process's
        environment."""
        self.data_dir = Path(data_dir)
        self.token = token
        self.env = env
        self.config_path = self.data_dir.parent / f"{self.data_dir.name}.toml"
        self.config_path.write_text(
            f'data_dir = "{self.data_dir}"\n'
            "[ingest]\n"
            'pull = "tcp://127.0.0.1:0"\nsub = "tcp://127.0.0.1:0"\nrouter = "tcp://127.0.0.1:0"\n'
            + _lines(ingest)
            + "[http]\nlisten = \"127.0.0.1:0\"\n"
            + _lines(http)
            + "[publish]\nlisten = \"tcp://127.0.0.1:0\"\n"
            + _lines(publish)
            + "[control]\nlisten = \"tcp://127.0.0.1:0\"\n"
            + _lines(control)
            + "[flight_sql]\nlisten = \"127.0.0.1:0\"\n"
            + _lines(flight_sql)
            + "[postgres]\nlisten = \"127.0.0.1:0\"\n"
            + _lines(postgres)
            + extra_config
        )
        self.process = None
        self.ready = None

    def start(self):
        self.process = subprocess.Popen(
            [flowdaq_bin(), "serve", "--config", str(self.config_path)],
            env={**os.environ, **(self.env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            err = self.process.stderr.read()
            raise RuntimeError(f"flowdaq serve exited before ready: {err}")
        self.ready = json.loads(line)
        assert self.ready["event"] == "ready"
        return self

    @property
    def pull(self):
        return self.ready["pull"]

    @property
    def sub(self):
        return self.ready["sub"]

    @property
    def router(self):
        return self.ready["router"]

    @property
    def publish(self):
        """The feature stream (PUB): connect a SUB."""
        return self.ready["publish"]

    @property
    def control(self):
        """The control endpoint (ROUTER): connect a REQ or DEALER."""
        return self.ready["control"]

    @property
    def http(self):
        return "http://" + self.ready["http"]

    @property
    def flight_sql(self):
        """The Flight SQL endpoint as an ADBC URI."""
        return "grpc://" + self.ready["flight_sql"]

    @property
    def postgres(self):
        """(host, port) of the PostgreSQL endpoint."""
        host, port = self.ready["postgres"].rsplit(":", 1)
        return host, int(port)

    def headers(self):
        """The bearer header of `token`, if any."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def metrics(self):
        request = urllib.request.Request(self.http + "/metrics/json", headers=self.headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, predicate, what, attempts=1000):
        """Poll /metrics until predicate(metrics) holds (bounded: attempts x 10 ms)."""
        for _ in range(attempts):
            metrics = self.metrics()
            if predicate(metrics):
                return metrics
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; metrics: {self.metrics()}")

    def wait_processed(self, count):
        """Wait (bounded) until the server has processed `count` messages; return the metrics."""
        return self.wait_for(lambda m: m["messages_processed"] >= count, f"{count} messages processed")

    def sql_arrow(self, query):
        """Answer `query` over HTTP as a pyarrow Table (the request must succeed)."""
        status, body = self.sql_http(query, fmt="arrow")
        assert status == 200, body
        return pa.ipc.open_stream(body).read_all()

    def sql_http(self, query, fmt="json"):
        request = urllib.request.Request(self.http + f"/sql?format={fmt}", data=query.encode(), method="POST",
                                         headers=self.headers())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def stop(self):
        """Graceful stop: SIGTERM, the server drains and persists, exit 0."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout=60)
            assert code == 0, self.process.stderr.read()

    def kill(self):
        """Crash: SIGKILL, nothing is flushed."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def vm_status(pid):
    """VmHWM and VmRSS of a process, in bytes, from /proc/<pid>/status (those it has: a
    process that has exited has neither)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) * 1024  # kB
    return values


def vm_hwm_bytes(pid):
    """The peak resident set (VmHWM) of a running process, in bytes; fails the test if the
    kernel does not report it."""
    hwm = vm_status(pid).get("VmHWM")
    if hwm is None:
        pytest.fail(f"no VmHWM in /proc/{pid}/status: cannot measure the server's memory")
    return hwm


def run_cli(*args):
    result = subprocess.run([flowdaq_bin(), *args], capture_output=True, text=True, timeout=120)
    return result


@pytest.fixture
def server_factory(tmp_path):
    servers = []

    def make(name="data", extra_config="", **sections):
        server = Server(tmp_path / name, extra_config, **sections)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()
