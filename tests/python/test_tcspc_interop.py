"""Interop test of the TCSPC wire path: a PTU file's raw records sent by the pyzmq example sender
(docs/examples/flowdaq_send.py, its own PTU reader), checked against ptufile's decoding of the
same file.

A real `flowdaq serve` process, real ZeroMQ sockets on 127.0.0.1; waiting is on /metrics, bounded.
"""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import ptufile

from conftest import ROOT

PTU = ROOT.parent / "shared" / "data" / "tcspc" / "hydraharp_t3_beads.ptu"
SOURCE = "hh-python"


def arrow_sql(server, query):
    status, body = server.sql_http(query, fmt="arrow")
    assert status == 200, body
    return pa.ipc.open_stream(body).read_all()


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
        [sys.executable, str(ROOT / "docs" / "examples" / "flowdaq_send.py"), server.pull,
         "--ptu", str(PTU), "--source", SOURCE, "--records-per-message", "10000"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    messages = -(-reference.number_records // 10000)
    assert f"sent {messages} messages" in result.stdout
    server.wait_for(lambda m: m["messages_processed"] >= messages, f"{messages} messages processed")
    metrics = server.metrics()
    assert metrics["messages_rejected"] == 0, metrics

    # Photon rows: every photon and marker of the file, with ptufile's channels and times.
    photons = arrow_sql(
        server,
        f"SELECT macro_time_ps, micro_time_ps, channel, marker_flags FROM photons "
        f"WHERE source = '{SOURCE}' ORDER BY seq, macro_time_ps, channel, micro_time_ps",
    )
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
    windows = arrow_sql(
        server,
        f"SELECT channel, photon_count, counts FROM tcspc_histograms WHERE source = '{SOURCE}' "
        "ORDER BY window_start_ps, channel",
    )
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
