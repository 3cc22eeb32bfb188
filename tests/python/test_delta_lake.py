"""Delta Lake tables beside flowdaq's files (`[storage] delta_lake = true`), read by Python
`deltalake` (and through it pyarrow datasets), readers flowdaq did not write:
- every table flowdaq wrote reads back from its Delta log with the rows flowdaq's SQL gives, while
  compaction merges files in the background and a reader reads again and again (never a missing
  file, never a row twice), and after a kill -9 and a restart;
- compaction commits as OPTIMIZE without a change of data, retention as DELETE;
- in an S3 bucket (moto), two servers with different sources write the same Delta tables at once:
  neither loses or duplicates a commit, each server's SQL and `deltalake` give the same rows."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import numpy as np
import pyarrow as pa
import pytest
import zmq
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from flowdaq.sender import AcknowledgedSender
from flowdaq.wire import spectrum_frames
from test_object_storage import S3_ENV, storage_config, wait_persisted

AXIS_NM = np.linspace(400.0, 700.0, 128)
PARTITION_COLUMNS = ("date", "run")


@pytest.fixture
def s3_process():
    """moto's S3 server in a process of its own on a free loopback port, and a boto3 client.
    Not in this process: some `deltalake` calls (history) hold the GIL while they wait for
    the store, which an in-process server then never answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"moto's S3 server exited with {process.returncode}")
                time.sleep(0.05)
        else:
            pytest.fail("moto's S3 server did not listen within 15 s")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        yield endpoint, client
    finally:
        process.terminate()
        process.wait(timeout=30)


def normalized_rows(table):
    """Rows of a pyarrow table as sorted JSON strings: timestamps as integer nanoseconds (the
    Delta schema declares them `long`), 64-bit unsigned integers as integers (Delta:
    `decimal(20,0)`), partition columns dropped, columns by name."""
    columns = {}
    for name in sorted(table.column_names):
        if name in PARTITION_COLUMNS:
            continue
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        values = column.to_pylist()
        if pa.types.is_decimal(column.type):
            values = [None if v is None else int(v) for v in values]
        columns[name] = values
    count = table.num_rows
    return sorted(json.dumps({k: v[i] for k, v in columns.items()}, sort_keys=True, default=str)
                  for i in range(count))


def delta_tables(data_dir):
    """Names of the tables under `data_dir` that have a Delta log."""
    return sorted(p.parent.name for p in (data_dir / "tables").glob("*/_delta_log"))


def send_spectra(server, source, seqs, run_id, session="delta"):
    context = zmq.Context()
    sender = AcknowledgedSender(context, server.router)
    rng = np.random.default_rng(seqs[0])
    try:
        for seq in seqs:
            peak = 480.0 + seq % 60
            counts = 40 + 8000 * np.exp(-0.5 * ((AXIS_NM - peak) / 9.0) ** 2) + rng.normal(0, 3, AXIS_NM.size)
            sender.send(seq, spectrum_frames(source, seq, AXIS_NM, counts, run_id=run_id,
                                             condition_id=f"c-{seq // 20}", session=session))
        assert sender.flush(silence_ms=2000, attempts=30), f"unacknowledged: {sorted(sender.unacknowledged)[:10]}"
    finally:
        sender.socket.close(0)
        context.term()


def assert_delta_matches_sql(server, table_uri, tables, storage_options=None):
    for name in tables:
        delta = DeltaTable(table_uri(name), storage_options=storage_options)
        from_delta = delta.to_pyarrow_table()
        from_sql = server.sql_arrow(f"SELECT * FROM {name}")
        assert from_delta.num_rows == from_sql.num_rows, name
        assert normalized_rows(from_delta) == normalized_rows(from_sql), name
        # pyarrow's dataset over the same snapshot reads the same rows.
        assert delta.to_pyarrow_dataset().count_rows() == from_sql.num_rows, name


def test_every_table_reads_back_from_its_delta_log_while_written_compacted_and_after_a_crash(server_factory):
    config = ("[buffer]\nflush_interval_ms = 100\n[query]\ntimeout_s = 2\n"
              "[compaction]\ninterval_s = 0.3\nmin_files = 4\n[storage]\ndelta_lake = true\n")
    server = server_factory(extra_config=config).start()
    spectra_uri = str(server.data_dir / "tables" / "spectra")

    # A reader reads the spectra table again and again while it is written and compacted.
    stop = threading.Event()
    reads, failures = [], []

    def read_while_written():
        while not stop.is_set():
            try:
                seqs = DeltaTable(spectra_uri).to_pyarrow_table(columns=["seq"]).column("seq").to_pylist()
            except TableNotFoundError as err:
                if reads:  # it existed: now it must go on existing
                    failures.append(f"the table vanished: {err!r}")
                    return
                stop.wait(0.01)  # not created yet: the first persist creates it
                continue
            except Exception as err:
                failures.append(repr(err))
                return
            reads.append(len(seqs))
            if len(seqs) != len(set(seqs)):
                failures.append(f"a row twice in one read: {len(seqs)} rows, {len(set(seqs))} distinct")
                return

    reader = threading.Thread(target=read_while_written, daemon=True)
    reader.start()
    try:
        for burst in range(10):
            send_spectra(server, "spec-d", list(range(burst * 20, burst * 20 + 20)), run_id="run-d")
            wait_persisted(server, f"burst {burst} persisted")
        server.wait_for(lambda m: m["compaction"]["merges"] >= 1, "a merge done", attempts=3000)
    finally:
        stop.set()
        reader.join(timeout=60)
    assert not failures, failures[:3]
    assert len(reads) >= 5 and reads == sorted(reads), f"a read went back in time: {reads[:50]}"

    tables = delta_tables(server.data_dir)
    assert {"spectra", "spectral_features", "spectral_calibrations"} <= set(tables), tables
    uri = lambda name: str(server.data_dir / "tables" / name)  # noqa: E731
    assert_delta_matches_sql(server, uri, tables)
    delta_metrics = server.metrics()["delta_lake"]
    assert delta_metrics["commits"] >= 10 and delta_metrics["failures"] == 0, delta_metrics
    assert not delta_metrics["behind"]
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        scraped = response.read().decode()
    scraped_commits = [float(line.split()[1]) for line in scraped.splitlines()
                       if line.startswith("flowdaq_delta_commits_total ")]
    assert scraped_commits and scraped_commits[0] >= delta_metrics["commits"], scraped[-2000:]
    operations = [c["operation"] for c in DeltaTable(spectra_uri).history()]
    assert "OPTIMIZE" in operations and "WRITE" in operations, operations
    for commit in DeltaTable(spectra_uri).history():
        if commit["operation"] == "OPTIMIZE":
            assert commit["flowdaq.writer"] == "flowdaq"

    # A crash with rows unpersisted: after the restart, the logs hold every acknowledged row once.
    send_spectra(server, "spec-d", list(range(200, 240)), run_id="run-d")
    server.kill()
    server.start()
    wait_persisted(server, "replayed rows persisted")
    assert server.sql_arrow("SELECT count(*) AS n FROM spectra").column("n").to_pylist() == [240]
    assert_delta_matches_sql(server, uri, delta_tables(server.data_dir))
    server.stop()
    catalog = json.loads((server.data_dir / "catalog.json").read_text())
    assert DeltaTable(spectra_uri).transaction_version("flowdaq") == catalog["wal_persisted_through"]


def test_retention_removes_from_the_delta_log_as_a_change_of_data(server_factory):
    # Rows arrive now; a retention of a millionth of a day (86 ms) drops them at the next round.
    config = ("[buffer]\nflush_interval_ms = 100\n[query]\ntimeout_s = 1\n"
              "[compaction]\ninterval_s = 0.3\n[retention]\nspectra = 0.000001\n[storage]\ndelta_lake = true\n")
    server = server_factory(extra_config=config).start()
    send_spectra(server, "spec-r", list(range(0, 20)), run_id="run-r")
    spectra_uri = str(server.data_dir / "tables" / "spectra")
    server.wait_for(lambda m: m["compaction"]["files_expired"] >= 1, "spectra expired", attempts=3000)
    assert server.sql_arrow("SELECT count(*) AS n FROM spectra").column("n").to_pylist() == [0]
    delta = DeltaTable(spectra_uri)
    assert delta.to_pyarrow_table().num_rows == 0
    deletes = [c for c in delta.history() if c["operation"] == "DELETE"]
    assert deletes, [c["operation"] for c in delta.history()]
    # The features of those spectra are kept (no retention named for them).
    features = DeltaTable(str(server.data_dir / "tables" / "spectral_features")).to_pyarrow_table()
    assert features.num_rows == 20


def test_two_servers_write_the_same_delta_tables_in_a_bucket_at_once(server_factory, s3_process):
    endpoint, client = s3_process
    client.create_bucket(Bucket="lab")
    servers = []
    for writer in ("lab-a", "lab-b"):
        config = storage_config(endpoint, "shared", f'delta_lake = true\nwriter = "{writer}"\n')
        servers.append(server_factory(name=writer, extra_config=config, env=S3_ENV).start())
    errors = []

    def write(server, source, run_id):
        try:
            for burst in range(6):
                send_spectra(server, source, list(range(burst * 15, burst * 15 + 15)), run_id=run_id,
                             session=source)
                wait_persisted(server, f"{source} burst {burst} persisted")
        except Exception as err:
            errors.append(repr(err))

    threads = [threading.Thread(target=write, args=(server, f"spec-{w}", f"run-{w}"))
               for server, w in zip(servers, ("a", "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors

    storage_options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    uri = lambda name: f"s3://lab/shared/tables/{name}"  # noqa: E731
    spectra = DeltaTable(uri("spectra"), storage_options=storage_options)
    rows = spectra.to_pyarrow_table(columns=["source", "seq"]).to_pylist()
    assert len(rows) == 180, len(rows)
    assert len({(r["source"], r["seq"]) for r in rows}) == 180, "a row twice"
    history = spectra.history()
    writers = [c.get("flowdaq.writer") for c in history if c["operation"] == "WRITE"]
    assert writers.count("flowdaq-lab-a") >= 1 and writers.count("flowdaq-lab-b") >= 1, writers
    for writer in ("lab-a", "lab-b"):
        catalog = json.loads(client.get_object(Bucket="lab", Key=f"shared/catalog.{writer}.json")["Body"].read())
        assert spectra.transaction_version(f"flowdaq-{writer}") == catalog["wal_persisted_through"], writer

    # Each server answers with both writers' rows (the other's from the Delta log), as the log.
    for server in servers:
        # The other writer's last commit is seen once the log is read again (at most a second).
        answer = None
        for _ in range(300):
            answer = server.sql_arrow("SELECT count(*) AS n, count(DISTINCT source) AS sources FROM spectra").to_pylist()
            if answer == [{"n": 180, "sources": 2}]:
                break
            time.sleep(0.01)
        assert answer == [{"n": 180, "sources": 2}], answer
        assert_delta_matches_sql(server, uri, ["spectra", "spectral_features"], storage_options)
    keys = [k for k in (item["Key"] for item in client.list_objects_v2(Bucket="lab", Prefix="shared/")["Contents"])]
    assert "shared/catalog.lab-a.json" in keys and "shared/catalog.lab-b.json" in keys
    assert "shared/catalog.json" not in keys
