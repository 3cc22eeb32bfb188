"""Interop tests: pyzmq senders -> flowdaq server -> Parquet read back by pyarrow and duckdb.

Every test runs a real `flowdaq serve` process with real ZeroMQ sockets on 127.0.0.1; nothing
is mocked. Waiting is always on an observable condition (the server's /metrics), bounded.
"""

import json
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import zmq

from conftest import ROOT, run_cli
from flowdaq import AcknowledgedSender
from flowdaq.wire import spectrum_frames

KEEP_BUFFERED = "[buffer]\nflush_interval_ms = 600000\n"
PIXELS = 2048


def axis():
    return np.linspace(350.0, 1000.0, PIXELS)


def random_counts(rng, shape):
    # Random bit patterns of finite float32 values, so "bit for bit" really tests every bit.
    values = rng.uniform(-1e6, 1e6, size=shape).astype("<f4")
    values.flat[0] = np.float32(1.401298464324817e-45)  # a subnormal
    values.flat[-1] = np.float32(-0.0)
    return values


def read_spectra_pyarrow(data_dir):
    dataset = ds.dataset(str(data_dir / "tables" / "spectra"), format="parquet", partitioning="hive")
    return dataset.to_table().sort_by([("source", "ascending"), ("seq", "ascending"), ("spectrum_index", "ascending")])


def test_push_rows_are_queryable_buffered_and_read_back_bit_for_bit(server_factory):
    server = server_factory(extra_config=KEEP_BUFFERED).start()
    rng = np.random.default_rng(42)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    sent = {}
    for seq in range(12):
        shape = (3, PIXELS) if seq % 4 == 0 else (PIXELS,)
        counts = random_counts(rng, shape)
        push.send_multipart(spectrum_frames("push-1", seq, axis(), counts, run_id="interop", condition_id=f"c-{seq // 4}"))
        for index, row in enumerate(np.atleast_2d(counts)):
            sent[(seq, index)] = row
    server.wait_processed(12)

    # Rows still in the buffer are visible to SQL, through HTTP and through the data directory (WAL).
    query = "SELECT count(*) AS n FROM spectra WHERE run_id = 'interop'"
    via_server = run_cli("sql", query, "--server", server.http, "--format", "json")
    assert via_server.returncode == 0, via_server.stderr
    assert json.loads(via_server.stdout) == [{"n": len(sent)}]
    via_dir = run_cli("sql", query, "--data-dir", str(server.data_dir), "--format", "csv")
    assert via_dir.returncode == 0, via_dir.stderr
    assert via_dir.stdout.splitlines() == ["n", str(len(sent))]
    assert server.metrics()["buffer"]["persisted_rows"] == 0

    push.close(linger=0)
    context.term()
    server.stop()  # drains and persists

    table = read_spectra_pyarrow(server.data_dir)
    assert table.num_rows == len(sent)
    # Timestamps are checked elsewhere; pyarrow >= 26 without pandas cannot turn ns timestamps
    # into Python objects, so read back the columns compared here.
    compared = table.select(["seq", "spectrum_index", "intensity_counts", "run_id", "kind", "source"])
    for row in compared.to_pylist():
        expected = sent[(row["seq"], row["spectrum_index"])]
        got = np.asarray(row["intensity_counts"], dtype="<f4")
        assert got.view("<u4").tolist() == expected.view("<u4").tolist()
        assert row["run_id"] == "interop" and row["kind"] == "pl" and row["source"] == "push-1"

    files = sorted((server.data_dir / "tables" / "spectra").rglob("*.parquet"))
    assert files and all("date=" in str(f) and "run=interop" in str(f) for f in files)
    metadata = pq.read_metadata(files[0]).metadata
    assert metadata[b"flowdaq.schema_version"] == b"spectra/1"

    pattern = str(server.data_dir / "tables" / "spectra" / "**" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT seq, spectrum_index, intensity_counts FROM read_parquet('{pattern}', hive_partitioning = true) "
        "ORDER BY seq, spectrum_index"
    ).fetchall()
    assert len(rows) == len(sent)
    for seq, index, counts in rows:
        assert np.asarray(counts, dtype="<f4").view("<u4").tolist() == sent[(seq, index)].view("<u4").tolist()

    calibrations = ds.dataset(str(server.data_dir / "tables" / "spectral_calibrations"), format="parquet").to_table()
    assert calibrations.num_rows == 1, "one axis, stored once"
    assert np.array_equal(np.asarray(calibrations["wavelength_nm"][0].as_py()), axis())


def test_pub_sequence_gaps_are_counted(server_factory):
    server = server_factory().start()
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.connect(server.sub)
    counts = np.ones(PIXELS, dtype="<f4")
    # PUB drops until the subscription has propagated: probe until the server sees a message.
    for probe in range(500):
        pub.send_multipart(spectrum_frames("pub-probe", probe, axis(), counts))
        if "pub-probe" in server.metrics()["sources"]:
            break
    else:
        pytest.fail("subscription never became live")
    dropped = {10, 11, 50}
    for seq in range(100):
        if seq not in dropped:
            pub.send_multipart(spectrum_frames("pub-gappy", seq, axis(), counts))
    metrics = server.wait_for(
        lambda m: m["sources"].get("pub-gappy", {}).get("last_seq") == 99, "the last published message"
    )
    stats = metrics["sources"]["pub-gappy"]
    assert stats["missing_messages"] == len(dropped)
    assert stats["gaps"] == 2
    assert stats["messages"] == 100 - len(dropped)
    assert stats["transport"] == "sub"
    pub.close(linger=0)
    context.term()


def test_acknowledged_rows_survive_kill_9(server_factory):
    server = server_factory("acked", extra_config=KEEP_BUFFERED).start()
    context = zmq.Context()
    sender = AcknowledgedSender(context, server.router)
    rng = np.random.default_rng(7)
    sent = {}
    for seq in range(40):
        counts = random_counts(rng, (PIXELS,))
        sent[seq] = counts
        sender.send(seq, spectrum_frames("acked-1", seq, axis(), counts, run_id="crash"))
    acks = []
    for _ in range(200):
        acks += sender.collect_acks(timeout_ms=50)
        if not sender.unacknowledged:
            break
    assert not sender.unacknowledged, f"unacknowledged: {sorted(sender.unacknowledged)}"
    assert sorted(a["ack"] for a in acks) == list(range(40))
    sender.socket.close(linger=0)
    context.term()

    server.kill()  # kill -9: nothing persisted, only the WAL has the rows
    assert not list((server.data_dir / "tables").rglob("*.parquet")) if (server.data_dir / "tables").exists() else True

    restarted = server_factory("acked", extra_config=KEEP_BUFFERED).start()
    assert restarted.ready["replayed_rows"] >= 40
    table = restarted.sql_arrow(
        "SELECT seq, intensity_counts FROM spectra WHERE source = 'acked-1' ORDER BY seq"
    )
    assert table["seq"].to_pylist() == list(range(40))
    for seq, counts in zip(table["seq"].to_pylist(), table["intensity_counts"].to_pylist()):
        assert np.asarray(counts, dtype="<f4").view("<u4").tolist() == sent[seq].view("<u4").tolist()
    restarted.stop()
    persisted = read_spectra_pyarrow(restarted.data_dir)
    assert persisted.filter(pa.compute.equal(persisted["source"], "acked-1")).num_rows == 40


def test_malformed_frames_are_kept_aside_and_good_frames_keep_flowing(server_factory):
    server = server_factory().start()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    good = lambda seq, source="mixed": spectrum_frames(source, seq, axis(), np.full(PIXELS, 5.0, "<f4"))
    header, wavelengths, counts = good(1)
    nan_counts = np.full(PIXELS, 5.0, "<f4")
    nan_counts[7] = np.nan
    wrong_dtype = json.loads(header)
    wrong_dtype["arrays"][1]["dtype"] = "<f8"
    unknown_stream = json.loads(header)
    unknown_stream["stream"] = "video"
    oversized = json.loads(header)
    oversized["arrays"][1]["shape"] = [40000, PIXELS]
    bad = [
        ("truncated", [header, wavelengths, counts[:-100]], "truncated or wrong dtype/shape"),
        ("wrong dtype", [json.dumps(wrong_dtype).encode(), wavelengths, counts], "truncated or wrong dtype/shape"),
        ("bad json", [b'{"protocol": 1, "source": ', wavelengths, counts], "bad header JSON"),
        ("unknown stream", [json.dumps(unknown_stream).encode(), wavelengths, counts], "unknown variant `video`"),
        ("nan", spectrum_frames("mixed", 4, axis(), nan_counts), "NaN or infinite"),
        ("oversized", [json.dumps(oversized).encode(), wavelengths, bytes(70 * 1024 * 1024)], "exceeds the limit"),
    ]
    push.send_multipart(good(0))
    for seq, (_, frames, _) in enumerate(bad):
        push.send_multipart(frames)
        push.send_multipart(good(seq, source="other"))
    push.send_multipart(good(10))
    total = 2 + 2 * len(bad)
    metrics = server.wait_processed(total)
    assert metrics["messages_rejected"] == len(bad)
    assert metrics["sources"]["other"]["messages"] == len(bad)

    status, body = server.sql_http("SELECT transport, source, stream, seq, reason, raw_size_bytes, first_bytes FROM ingest_errors")
    assert status == 200, body
    errors = json.loads(body)
    assert len(errors) == len(bad)
    reasons = [e["reason"] for e in errors]
    for name, _, expected in bad:
        assert any(expected in r for r in reasons), f"{name}: {expected!r} not in {reasons}"
    assert all(e["transport"] == "pull" and e["raw_size_bytes"] > 0 for e in errors)
    status, body = server.sql_http("SELECT source, count(*) AS n FROM spectra GROUP BY source ORDER BY source")
    assert json.loads(body) == [{"source": "mixed", "n": 2}, {"source": "other", "n": len(bad)}]
    push.close(linger=0)
    context.term()
    server.stop()


FORBIDDEN = [
    "CREATE TABLE t (a INT)",
    "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp'",
    "INSERT INTO spectra SELECT * FROM spectra",
    "DELETE FROM spectra",
    "UPDATE spectra SET seq = 0",
    "DROP TABLE spectra",
    "COPY spectra TO '/tmp/stolen.parquet'",
    "CREATE VIEW v AS SELECT 1",
    "SET datafusion.execution.batch_size = 1",
]


def test_sql_is_read_only(server_factory):
    server = server_factory().start()
    for statement in FORBIDDEN:
        status, body = server.sql_http(statement)
        assert status == 400, statement
        assert "read-only" in json.loads(body)["error"], (statement, body)
    for escape in ["SELECT * FROM read_parquet('/etc/passwd')", "SELECT * FROM '/etc/passwd'"]:
        status, body = server.sql_http(escape)
        assert status == 400, escape
    cli = run_cli("sql", "DROP TABLE spectra", "--server", server.http)
    assert cli.returncode != 0 and "read-only" in cli.stderr
    status, body = server.sql_http("SELECT count(*) AS n FROM spectra")
    assert status == 200 and json.loads(body) == [{"n": 0}]
    server.stop()


def test_arrow_ipc_payload_from_pyarrow(server_factory):
    server = server_factory().start()
    rng = np.random.default_rng(3)
    counts = [random_counts(rng, (PIXELS,)) for _ in range(4)]
    batch = pa.record_batch({
        "wavelength_nm": pa.array([axis()] * 4, type=pa.list_(pa.float64())),
        "intensity_counts": pa.array(counts, type=pa.list_(pa.float32())),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    header = {"protocol": 1, "source": "ipc-1", "stream": "spectra", "seq": 0, "format": "arrow_ipc",
              "meta": {"kind": "absorbance", "integration_time_ms": 3.0}}
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    push.send_multipart([json.dumps(header).encode(), sink.getvalue().to_pybytes()])
    server.wait_processed(1)
    table = server.sql_arrow("SELECT spectrum_index, intensity_counts FROM spectra ORDER BY spectrum_index")
    assert table.num_rows == 4
    for index, row in enumerate(table["intensity_counts"].to_pylist()):
        assert np.asarray(row, dtype="<f4").view("<u4").tolist() == counts[index].view("<u4").tolist()
    push.close(linger=0)
    context.term()
    server.stop()


def test_example_sender_runs_against_the_server(server_factory):
    server = server_factory().start()
    result = subprocess.run(
        [sys.executable, "-m", "flowdaq.send", server.pull, "--count", "7",
         "--run-id", "example"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    server.wait_processed(7)
    status, body = server.sql_http("SELECT count(*) AS n FROM spectra WHERE run_id = 'example' AND source = 'python-example'")
    assert json.loads(body) == [{"n": 7}]
    server.stop()
