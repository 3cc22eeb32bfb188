"""Parquet files and the catalog in an S3-compatible object store (moto's S3 server on
loopback): a server with `[storage] url = "s3://..."` persists there and answers SQL from there,
pyarrow reads the same rows straight from the bucket, `flowdaq sql --config` reads it after the
server stops; and a store that is unreachable for a while (a forwarder in front of it cut) delays
persistence but loses nothing that was acknowledged, through a kill -9 while it is down; and a
new data directory beside an existing prefix (a new machine) loses nothing to a kill -9; a second
server on the same prefix is refused rather than overwriting the first's catalog."""

import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest
import zmq
from moto.server import ThreadedMotoServer

from conftest import flowdaq_bin
from flowdaq.sender import AcknowledgedSender
from flowdaq.wire import spectrum_frames

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
AXIS_NM = np.linspace(400.0, 700.0, 64)


@pytest.fixture
def s3():
    """moto's S3 server on an ephemeral loopback port, and a boto3 client of it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        yield endpoint, client
    finally:
        server.stop()


class Forwarder:
    """A TCP forwarder in front of the S3 server. `cut()` drops every open connection and
    refuses new ones (accepted, then closed at once) until `restore()`."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.connections = set()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            with self.lock:  # cut() holds it too: a connection is either cut or refused
                if not self.open.is_set():
                    self.refused += 1
                    client.close()
                    upstream.close()
                    continue
                self.connections.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        with self.lock:
            self.open.clear()
            for s in self.connections:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()

    def restore(self):
        self.open.set()

    def close(self):
        self.cut()
        self.listener.close()


def storage_config(endpoint, prefix, extra="", flush_interval_ms=100):
    """Persist every `flush_interval_ms`, no compaction (the tests compare the bucket's keys
    with the files persisted), and the store at `endpoint`."""
    return (f"[buffer]\nflush_interval_ms = {flush_interval_ms}\n[compaction]\ninterval_s = 0\n"
            f'[storage]\nurl = "s3://lab/{prefix}"\nendpoint = "{endpoint}"\nallow_http = true\n'
            f'region = "us-east-1"\n{extra}')


def send_acknowledged(server, sender, seqs, session="s3-session"):
    """Sends spectra `seqs` through `sender` and waits (bounded) until every one is acknowledged."""
    rng = np.random.default_rng(seqs[0])
    for seq in seqs:
        counts = 50 + 4000 * np.exp(-0.5 * ((AXIS_NM - 520.0 - seq % 30) / 8.0) ** 2) + rng.normal(0, 2, AXIS_NM.size)
        sender.send(seq, spectrum_frames("spec-s3", seq, AXIS_NM, counts, run_id="run-s3", session=session))
    assert sender.flush(silence_ms=2000, attempts=30), f"unacknowledged: {sorted(sender.unacknowledged)[:10]}"


def wait_persisted(server, what, attempts=3000):
    return server.wait_for(lambda m: m["buffer"]["open_rows"] == 0 and m["buffer"]["persisting_rows"] == 0,
                           what, attempts=attempts)


def bucket_keys(client, prefix):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="lab", Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def test_files_and_catalog_go_to_the_bucket_and_pyarrow_reads_the_same_rows(server_factory, s3, tmp_path):
    endpoint, client = s3
    client.create_bucket(Bucket="lab")
    server = server_factory(extra_config=storage_config(endpoint, "flowdaq"), env=S3_ENV).start()
    context = zmq.Context()
    sender = AcknowledgedSender(context, server.router)
    try:
        for burst in range(3):
            send_acknowledged(server, sender, list(range(burst * 20, burst * 20 + 20)))
            wait_persisted(server, f"burst {burst} persisted")
    finally:
        sender.socket.close(0)
        context.term()

    keys = bucket_keys(client, "flowdaq/")
    assert "flowdaq/catalog.json" in keys
    spectra_keys = [k for k in keys if k.startswith("flowdaq/tables/spectra/") and k.endswith(".parquet")]
    assert len(spectra_keys) >= 3, keys
    assert not (server.data_dir / "tables").exists(), "Parquet went to the local disk"
    assert not (server.data_dir / "catalog.json").exists()

    answer = server.sql_arrow("SELECT seq, intensity_counts FROM spectra ORDER BY seq")
    assert answer.column("seq").to_pylist() == list(range(60))

    # pyarrow, straight from the bucket, the files the catalog names.
    catalog = json.loads(client.get_object(Bucket="lab", Key="flowdaq/catalog.json")["Body"].read())
    files = [f["path"] for f in catalog["files"] if f["table"] == "spectra"]
    assert sorted("flowdaq/" + f for f in files) == spectra_keys
    fs = pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                                 endpoint_override=endpoint.removeprefix("http://"), scheme="http")
    read = pa.concat_tables(pq.read_table(f"lab/flowdaq/{f}", filesystem=fs) for f in files)
    read = read.sort_by("seq")
    assert read.column("seq").to_pylist() == list(range(60))
    assert read.column("intensity_counts").to_pylist() == answer.column("intensity_counts").to_pylist()
    assert sum(f["rows"] for f in catalog["files"] if f["table"] == "spectra") == 60

    # After the server stops, `flowdaq sql --config` reads the same bucket.
    server.stop()
    result = subprocess.run([flowdaq_bin(), "sql", "--config", str(server.config_path), "--format", "json",
                             "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM spectra"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **S3_ENV})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 60, "d": 60}]


def test_an_unreachable_store_delays_persistence_and_loses_no_acknowledged_row(server_factory, s3):
    endpoint, client = s3
    client.create_bucket(Bucket="lab")
    host, port = endpoint.removeprefix("http://").split(":")
    forwarder = Forwarder(host, int(port))
    config = storage_config(forwarder.endpoint, "outage", "request_timeout_s = 1\nretry_timeout_s = 1\n")
    server = server_factory(extra_config=config, env=S3_ENV).start()
    context = zmq.Context()
    sender = AcknowledgedSender(context, server.router)
    try:
        send_acknowledged(server, sender, list(range(0, 30)))
        wait_persisted(server, "first rows persisted")
        before = len(bucket_keys(client, "outage/tables/"))

        forwarder.cut()
        # Ingest goes on acknowledging from the WAL while no persist can reach the store.
        send_acknowledged(server, sender, list(range(30, 90)))
        down = server.wait_for(lambda m: m["health"]["persist_errors"] >= 2 and m["buffer"]["persisting_rows"] > 0,
                               "persist attempts failing against the cut store", attempts=6000)
        assert forwarder.refused > 0
        assert len(bucket_keys(client, "outage/tables/")) == before
        counted = server.sql_arrow("SELECT count(*) AS n FROM spectra").column("n").to_pylist()
        assert counted == [90], f"buffered rows must stay queryable: {counted}, {down['buffer']}"

        # Persistence resumes by itself when the store is back.
        forwarder.restore()
        wait_persisted(server, "persisted after the store came back", attempts=6000)
        assert len(bucket_keys(client, "outage/tables/")) > before

        # Down again, then a crash: acknowledged rows are in the WAL, persisted at the next start.
        forwarder.cut()
        send_acknowledged(server, sender, list(range(90, 120)))
        server.wait_for(lambda m: m["buffer"]["persisting_rows"] > 0 or m["buffer"]["open_rows"] > 0,
                        "rows waiting for the store")
        server.kill()
        forwarder.restore()
        server.start()
        wait_persisted(server, "replayed rows persisted", attempts=6000)
        answer = server.sql_arrow("SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, "
                                  "max(seq) AS hi FROM spectra").to_pylist()
        assert answer == [{"n": 120, "d": 120, "lo": 0, "hi": 119}]
        assert server.metrics()["health"]["persist_errors"] == 0
        catalog = json.loads(client.get_object(Bucket="lab", Key="outage/catalog.json")["Body"].read())
        assert sum(f["rows"] for f in catalog["files"] if f["table"] == "spectra") == 120
    finally:
        sender.socket.close(0)
        context.term()
        server.kill()
        forwarder.close()


def test_a_new_data_directory_beside_an_existing_prefix_loses_nothing_to_a_crash(server_factory, s3):
    endpoint, client = s3
    client.create_bucket(Bucket="lab")
    first = server_factory(name="first-machine", extra_config=storage_config(endpoint, "moved"), env=S3_ENV).start()
    context = zmq.Context()
    sender = AcknowledgedSender(context, first.router)
    try:
        send_acknowledged(first, sender, list(range(0, 30)), session="first")
        wait_persisted(first, "the first machine's rows persisted")
        first.stop()
        catalog = json.loads(client.get_object(Bucket="lab", Key="moved/catalog.json")["Body"].read())
        assert catalog["wal_persisted_through"] >= 1

        # Another machine takes over the prefix with an empty data directory; its rows stay in
        # its WAL (no persist for a minute) when it is killed.
        config = storage_config(endpoint, "moved", flush_interval_ms=60000)
        second = server_factory(name="second-machine", extra_config=config, env=S3_ENV).start()
        sender.endpoint = second.router
        sender.connect()
        send_acknowledged(second, sender, list(range(30, 60)), session="second")
        assert second.metrics()["buffer"]["open_rows"] > 0, "the rows must be unpersisted at the crash"
        second.kill()
        second.start()
        assert second.sql_arrow("SELECT count(*) AS n FROM spectra").column("n").to_pylist() == [60]
        second.stop()
        catalog = json.loads(client.get_object(Bucket="lab", Key="moved/catalog.json")["Body"].read())
        assert sum(f["rows"] for f in catalog["files"] if f["table"] == "spectra") == 60
    finally:
        sender.socket.close(0)
        context.term()


def health(server):
    request = urllib.request.Request(server.http + "/health")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def test_a_second_server_on_the_same_prefix_is_refused_not_overwriting_the_catalog(server_factory, s3):
    endpoint, client = s3
    client.create_bucket(Bucket="lab")
    config = storage_config(endpoint, "contended")
    first = server_factory(name="first", extra_config=config, env=S3_ENV).start()
    second = server_factory(name="second", extra_config=config, env=S3_ENV).start()
    context = zmq.Context()
    first_sender = AcknowledgedSender(context, first.router)
    second_sender = AcknowledgedSender(context, second.router)
    try:
        # Both read the empty catalog at start; the first writes one, then the second tries.
        send_acknowledged(first, first_sender, list(range(0, 20)), session="first")
        wait_persisted(first, "the first server's rows persisted")
        send_acknowledged(second, second_sender, list(range(0, 20)), session="second")
        failing = second.wait_for(lambda m: m["health"]["persist_errors"] >= 1, "the second server's persist refused")
        reason = health(second)["persister"]["reason"]
        assert "another writer" in reason, reason
        assert failing["buffer"]["persisting_rows"] > 0, "its rows wait in its WAL and buffer"
        # The first server's catalog is intact and it goes on persisting.
        send_acknowledged(first, first_sender, list(range(20, 40)), session="first")
        wait_persisted(first, "the first server persists on")
        catalog = json.loads(client.get_object(Bucket="lab", Key="contended/catalog.json")["Body"].read())
        assert sum(f["rows"] for f in catalog["files"] if f["table"] == "spectra") == 40
        assert first.sql_arrow("SELECT count(*) AS n FROM spectra").column("n").to_pylist() == [40]
    finally:
        for sender in (first_sender, second_sender):
            sender.socket.close(0)
        context.term()
