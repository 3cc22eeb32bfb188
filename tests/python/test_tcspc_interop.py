"""Interop test of the TCSPC wire path: a PTU file's raw records sent by the pyzmq example sender
(`python -m flowdaq.send`, the package's own PTU reader), checked against ptufile's decoding of the
same file.

A real `flowdaq serve` process, real ZeroMQ sockets on 127.0.0.1; waiting is on /metrics, bounded.
"""

import json
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute is used below)
import ptufile

from conftest import ROOT

PTU = ROOT / "connectors" / "tests" / "data" / "hydraharp_t3_beads.ptu"  # a copy of ../shared/data/tcspc/
SOURCE = "hh-python"


def test_ptu_records_sent_with_pyzmq_decode_and_histogram_as_ptufile_does(server_factory):
    reference = ptufile.PtuFile(str(PTU))
    decoded = reference.decode_records(reference.read_records())
    sync_period_s = reference.global_resolution
    micro_bin_ps = reference.tcspc_resolution * 1e12
    # The file's own clock, so the records go into the windows as they are; 1 s windows.
    config = (
        f"[sources.{SOURCE}]\nstore_raw = true\n"
        f"[features.tcspc.sources.{SOURCE}]\n"
        f"sync_rate_hz = {1.0 / sync_period_s!r}\nmicro_bin_ps = {micro_bin_ps!r}\n"
        "bin_width_native = 1\nchannels = 2\nwindow_s = 1.0\n"
    )
    server = server_factory(extra_config=config).start()
    result = subprocess.run(
        [sys.executable, "-m", "flowdaq.send", server.pull,
         "--ptu", str(PTU), "--source", SOURCE, "--records-per-message", "10000"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    messages = -(-reference.number_records // 10000)
    assert f"sent {messages} messages" in result.stdout
    server.wait_processed(messages)
    metrics = server.metrics()
    assert metrics["messages_rejected"] == 0, metrics

    # Photon rows: every photon and marker of the file, with ptufile's channels and times.
    photons = server.sql_arrow(
        f"SELECT macro_time_ps, micro_time_ps, channel, marker_flags FROM photons "
        f"WHERE source = '{SOURCE}' ORDER BY seq, macro_time_ps, channel, micro_time_ps")
    is_photon = decoded["channel"] >= 0
    is_marker = decoded["marker"] > 0
    flags = photons["marker_flags"].to_numpy()
    assert (flags == 0).sum() == is_photon.sum() == 73_787
    assert (flags != 0).sum() == is_marker.sum()
    ours = np.stack([photons["macro_time_ps"].to_numpy()[flags == 0],
                     photons["channel"].to_numpy()[flags == 0].astype(np.int64),
                     photons["micro_time_ps"].to_numpy()[flags == 0]])
    theirs = decoded[is_photon]
    expected = np.stack([np.round(theirs["time"] * sync_period_s * 1e12).astype(np.int64),
                         theirs["channel"].astype(np.int64),
                         np.round(theirs["dtime"] * micro_bin_ps).astype(np.int64)])
    order_ours = np.lexsort(ours[::-1])
    order_theirs = np.lexsort(expected[::-1])
    assert np.abs(ours[:, order_ours] - expected[:, order_theirs]).max() <= 1  # ps rounding

    # Histogram windows: summed over windows, ptufile's micro-time histogram of each channel.
    # The last message was marked end_of_stream, so the last window is written without a stop.
    windows = server.sql_arrow(
        f"SELECT channel, photon_count, counts FROM tcspc_histograms WHERE source = '{SOURCE}' "
        "ORDER BY window_start_ps, channel")
    histogram = reference.decode_histogram(dtime=0)
    assert windows.num_rows >= 2 * 2
    for channel in (0, 1):
        rows = windows.filter(pa.compute.equal(windows["channel"], channel))
        summed = np.sum([np.asarray(c, dtype=np.int64) for c in rows["counts"].to_pylist()], axis=0)
        # One sync period of 16 ps bins is 1563 bins here; ptufile's histogram ends at the last
        # micro time it saw, so it is compared padded with zeros.
        assert len(summed) >= histogram.shape[1]
        expected_counts = np.zeros(len(summed), dtype=np.int64)
        expected_counts[:histogram.shape[1]] = histogram[channel]
        assert np.array_equal(summed, expected_counts), f"channel {channel}"
        assert rows["photon_count"].to_numpy().sum() == histogram[channel].sum()

    status, body = server.sql_http(
        f"SELECT count(*) AS n FROM lifetime_features WHERE source = '{SOURCE}'")
    assert status == 200 and json.loads(body)[0]["n"] == windows.num_rows
    server.stop()

    # The persisted photons (macro times delta-encoded) read back by duckdb, as served.
    files = str(server.data_dir / "tables" / "photons" / "**" / "*.parquet")
    persisted = duckdb.sql(
        f"SELECT macro_time_ps, micro_time_ps, channel, marker_flags FROM read_parquet('{files}') "
        "ORDER BY seq, macro_time_ps, channel, micro_time_ps").fetchnumpy()
    assert len(persisted["macro_time_ps"]) == photons.num_rows
    import glob
    import pyarrow.parquet as pq
    for path in glob.glob(files, recursive=True):
        meta = pq.ParquetFile(path).metadata
        column = meta.schema.names.index("macro_time_ps")
        for group in range(meta.num_row_groups):
            assert "DELTA_BINARY_PACKED" in meta.row_group(group).column(column).encodings
    for name in photons.column_names:
        assert np.array_equal(persisted[name], photons[name].to_numpy()), name


def test_swabian_time_tags_sent_with_pyzmq_are_histogrammed_and_fitted(server_factory):
    import zmq
    from flowdaq.wire import time_tag_frames

    # A 40 MHz laser on input 1 of a time tagger, a detector on input 2: 100,000 photons, each
    # 3 ns + Gaussian IRF (200 ps FWHM) + an exponential decay of 2.5 ns after a sync pulse.
    period_ps, tau_ps, source = 25_000, 2_500.0, "tagger-python"
    rng = np.random.default_rng(7)
    photons = 100_000
    pulse = np.sort(rng.choice(2 * photons, photons, replace=False))
    arrival = pulse * period_ps + np.round(
        3_000 + rng.normal(0, 200 / 2.3548, photons) + rng.exponential(tau_ps, photons)
    ).astype(np.int64)
    syncs = np.arange(2 * photons + 2, dtype=np.int64) * period_ps
    times = np.concatenate([syncs, arrival])
    channels = np.concatenate([np.full(len(syncs), 1), np.full(photons, 2)])
    order = np.argsort(times, kind="stable")
    times, channels = times[order], channels[order]
    # What the server should make of them: the delay since the last sync, in 16 ps bins.
    delay = arrival - (arrival // period_ps) * period_ps
    expected = np.bincount(np.floor(delay / 16.0 + 0.5).astype(np.int64), minlength=1563)

    config = (
        f"[sources.{source}]\nstore_raw = true\n"
        f"[features.tcspc.sources.{source}]\n"
        "sync_rate_hz = 40.0e6\nmicro_bin_ps = 16.0\nchannels = 1\nwindow_s = 1.0\n"
        "irf_fwhm_ps = 200.0\n"
    )
    server = server_factory(extra_config=config).start()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    chunks = np.array_split(np.arange(len(times)), 10)
    for seq, rows in enumerate(chunks):
        push.send_multipart(time_tag_frames(
            source, seq, channels[rows], times[rows], detector_channels=[2], sync_channel=1,
            end_of_stream=seq == len(chunks) - 1))
    server.wait_processed(len(chunks))
    assert server.metrics()["messages_rejected"] == 0

    stored = server.sql_arrow(f"SELECT micro_time_ps FROM photons WHERE source = '{source}'")
    assert stored.num_rows == photons
    assert np.array_equal(np.sort(stored["micro_time_ps"].to_numpy()), np.sort(delay))
    # One 1 s window, closed by the last message: the histogram of the delays, bin for bin.
    windows = server.sql_arrow(f"SELECT counts FROM tcspc_histograms WHERE source = '{source}'")
    assert windows.num_rows == 1
    counts = np.asarray(windows["counts"][0].as_py(), dtype=np.int64)
    assert np.array_equal(counts, expected[: len(counts)]) and expected[len(counts):].sum() == 0
    fit = server.sql_arrow(f"SELECT tau_1_ns, converged FROM lifetime_features WHERE source = '{source}'")
    assert fit["converged"][0].as_py()
    assert abs(fit["tau_1_ns"][0].as_py() - tau_ps / 1000) < 0.02 * tau_ps / 1000
    push.close(linger=0)
    context.term()
    server.stop()
