"""Compaction and retention in a running server: small Parquet files are merged in the
background while spectra stream in, and every answer stays the same, through flowdaq's SQL and
through duckdb reading the files with a directory glob (a reader that knows nothing of the
catalog), also after a restart; retention drops old raw spectra and keeps their features."""

import time
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import zmq
from prometheus_client.parser import text_string_to_metric_families

from flowdaq.wire import spectrum_frames

AXIS_NM = np.linspace(400.0, 700.0, 128)


def send_bursts(server, bursts, per_burst):
    """Sends `bursts` bursts of spectra, each persisted before the next (one file per burst)."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    rng = np.random.default_rng(4)
    seq = 0
    try:
        for burst in range(bursts):
            for _ in range(per_burst):
                peak = 500.0 + 10.0 * burst
                counts = 40 + 8000 * np.exp(-0.5 * ((AXIS_NM - peak) / 9.0) ** 2) + rng.normal(0, 3, AXIS_NM.size)
                push.send_multipart(spectrum_frames("spec-c", seq, AXIS_NM, counts, run_id="run-c",
                                                    condition_id=f"c-{burst}"))
                seq += 1
            server.wait_for(lambda m, n=seq: m["messages_processed"] >= n and m["buffer"]["open_rows"] == 0
                            and m["buffer"]["persisting_rows"] == 0, f"burst {burst} persisted", attempts=3000)
    finally:
        push.close(0)
        context.term()
    return seq


def parquet_files(data_dir, table):
    return sorted(Path(data_dir, "tables", table).rglob("*.parquet*"))


def glob_count(data_dir, table):
    pattern = str(Path(data_dir, "tables", table)) + "/**/*.parquet"
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall()[0][0]


def sql_column(server, query, column):
    return server.sql_arrow(query).column(column).to_pylist()


def test_small_files_are_merged_in_the_background_and_every_answer_stays_the_same(server_factory):
    config = ("[buffer]\nflush_interval_ms = 100\n[query]\ntimeout_s = 1\n"
              "[compaction]\ninterval_s = 0.5\nmin_files = 4\n")
    server = server_factory(extra_config=config).start()
    sent = send_bursts(server, bursts=8, per_burst=25)
    features_query = "SELECT seq, peak_energy_ev FROM spectral_features ORDER BY seq"
    peaks = sql_column(server, features_query, "peak_energy_ev")
    assert len(peaks) == sent
    # Merges happen, and each finishes (its .merged name gone) after the grace (timeout + 5 s).
    small_files = len(parquet_files(server.data_dir, "spectra"))
    assert small_files >= 8, parquet_files(server.data_dir, "spectra")

    def spectra_merged_and_finished():
        files = parquet_files(server.data_dir, "spectra")
        return len(files) < small_files and not any(p.name.endswith(".merged") for p in files)
    deadline = time.monotonic() + 60
    while not spectra_merged_and_finished():
        assert time.monotonic() < deadline, parquet_files(server.data_dir, "spectra")
        time.sleep(0.1)
    compaction = server.metrics()["compaction"]
    assert compaction["files_merged"] >= 4 and compaction["errors"] == 0, compaction
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        scraped = {s.name: s.value for f in text_string_to_metric_families(response.read().decode())
                   for s in f.samples}
    assert scraped["flowdaq_compaction_merges_total"] >= compaction["merges"]
    assert scraped["flowdaq_compaction_files_merged_total"] >= compaction["files_merged"]
    # flowdaq's SQL, and duckdb globbing the files, see every row once.
    assert sql_column(server, "SELECT count(*) AS n FROM spectra", "n") == [sent]
    assert glob_count(server.data_dir, "spectra") == sent
    assert glob_count(server.data_dir, "spectral_features") == sent
    assert sql_column(server, features_query, "peak_energy_ev") == peaks
    pattern = str(Path(server.data_dir, "tables", "spectral_features")) + "/**/*.parquet"
    from_files = duckdb.sql(f"SELECT peak_energy_ev FROM read_parquet('{pattern}') ORDER BY seq").fetchall()
    assert [row[0] for row in from_files] == peaks
    # After a restart the merged layout is what the catalog names.
    server.stop()
    server.start()
    assert sql_column(server, features_query, "peak_energy_ev") == peaks
    assert sql_column(server, "SELECT count(*) AS n FROM spectra", "n") == [sent]


def test_retention_drops_old_raw_spectra_and_keeps_their_features(server_factory):
    # Spectra are kept for a second (1.2e-5 days); features forever.
    config = ("[buffer]\nflush_interval_ms = 100\n[query]\ntimeout_s = 1\n"
              "[compaction]\ninterval_s = 0.5\n[retention]\nspectra = 1.2e-5\n")
    server = server_factory(extra_config=config).start()
    sent = send_bursts(server, bursts=3, per_burst=20)
    server.wait_for(lambda m: m["compaction"]["rows_expired"] >= sent, "the spectra expired", attempts=3000)
    assert sql_column(server, "SELECT count(*) AS n FROM spectra", "n") == [0]
    assert sql_column(server, "SELECT count(*) AS n FROM spectral_features", "n") == [sent]
    # The files go after the grace.
    deadline = time.monotonic() + 60
    while parquet_files(server.data_dir, "spectra"):
        assert time.monotonic() < deadline, parquet_files(server.data_dir, "spectra")
        time.sleep(0.1)
    assert glob_count(server.data_dir, "spectral_features") == sent
