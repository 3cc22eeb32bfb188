"""Time-tagged files in every container flowdaq reads, replayed with `flowdaq replay` and read back
from the Parquet it wrote by duckdb, against tttrlib reading the same file in the same run.

The containers (connectors/tests/data/tcspc_formats/) hold the first 30,000 events of the real
HydraHarp file, written by tttrlib 0.26.2: HT3 and Becker & Hickl SPC-130. The whole PTU file
itself is compared too. tttrlib labels events by the record bits, so for these files its photons
(event type 0) are flowdaq's photons (marker_flags = 0), channel for channel.
"""

import subprocess

import duckdb
import numpy as np
import pytest
import tttrlib

from conftest import ROOT, flowdaq_bin

DATA = ROOT / "connectors" / "tests" / "data"

CASES = [
    # (file, tttrlib container, extra replay arguments)
    (DATA / "hydraharp_t3_beads.ptu", "PTU", []),
    (DATA / "tcspc_formats" / "hydraharp_t3_beads.ht3", "HT3", []),
    # SPC files store no bin width: tell flowdaq the one tttrlib assumes (period / 4096).
    (DATA / "tcspc_formats" / "hydraharp_t3_beads.spc", "SPC-130", ["--micro-bin-ps", "6.103515625"]),
]


def replay(path, data_dir, *extra):
    """`flowdaq replay` of one file into a new data directory (it must succeed)."""
    result = subprocess.run(
        [flowdaq_bin(), "replay", str(path), "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def table_of(data_dir, table):
    """The Parquet of one table of a data directory, for duckdb."""
    return f"read_parquet('{data_dir}/tables/{table}/**/*.parquet', hive_partitioning = true)"


@pytest.mark.parametrize("path,container,extra", CASES, ids=[c[1] for c in CASES])
def test_replayed_container_matches_tttrlib(tmp_path, path, container, extra):
    reference = tttrlib.TTTR(str(path), container)
    photon = np.asarray(reference.event_types) == 0
    ref_macro = np.asarray(reference.macro_times, dtype=np.int64)[photon]
    ref_micro = np.asarray(reference.micro_times, dtype=np.int64)[photon]
    ref_channel = np.asarray(reference.routing_channels, dtype=np.int64)[photon]
    period_ps = reference.header.macro_time_resolution * 1e12
    bin_ps = reference.header.micro_time_resolution * 1e12

    data_dir = tmp_path / "data"
    replay(path, data_dir, "--source", "ref", *extra)
    photons = duckdb.sql(
        f"SELECT macro_time_ps, micro_time_ps, channel FROM {table_of(data_dir, 'photons')} "
        "WHERE marker_flags = 0 ORDER BY macro_time_ps, channel, micro_time_ps"
    ).fetchnumpy()

    assert len(photons["channel"]) == photon.sum()
    order = np.lexsort((ref_micro, ref_channel, ref_macro))
    assert np.array_equal(photons["channel"].astype(np.int64), ref_channel[order])
    # Times in ps from each reader's own units: the same to within the rounding to whole ps.
    assert np.abs(photons["macro_time_ps"] - np.round(ref_macro[order] * period_ps)).max() <= 1
    ours_bins = np.round(photons["micro_time_ps"] / bin_ps).astype(np.int64)
    assert np.array_equal(np.bincount(ours_bins), np.bincount(ref_micro))


def test_ptufile_written_decay_filling_part_of_the_period_replays_within_one_percent(tmp_path):
    """ptufile's writer (a third party's PTU) holding decays whose histogram covers 512 of the
    period's 782 bins, as a converter range shorter than the sync period leaves them; default
    replay options. Truth: 4 ns and 25 ns decays drawn photon by photon (seeded)."""
    import ptufile

    rng = np.random.default_rng(3)
    for tau_ns, period_ns in [(4.0, 50.0), (25.0, 320.0)]:
        bin_ns = period_ns / 782
        photons = 1_000_000
        t = rng.normal(0.05 * period_ns, 0.2 / 2.354820045, photons) + rng.exponential(tau_ns, photons)
        t = np.concatenate([t, rng.uniform(0, period_ns, photons // 100)]) % period_ns
        bins = (t / bin_ns).astype(int)
        histogram = np.bincount(bins[bins < 512], minlength=512).astype(np.uint32)
        path = tmp_path / f"decay_{tau_ns:g}ns.ptu"
        ptufile.imwrite(path, histogram.reshape(1, 1, 512), period_ns * 1e-9, bin_ns * 1e-9)

        data_dir = tmp_path / f"data_{tau_ns:g}"
        replay(path, data_dir, "--source", "written", "--window-s", "10")
        rows = duckdb.sql(
            "SELECT photon_count, tau_1_ns, fit_flags, fit_range_end_ns, background_counts FROM "
            f"{table_of(data_dir, 'lifetime_features')} WHERE channel = 0"
        ).fetchall()
        assert len(rows) == 1, rows
        photon_count, tau, flags, range_end_ns, background = rows[0]
        assert photon_count == histogram.sum()
        assert abs(tau / tau_ns - 1) < 0.01, (tau_ns, rows)
        # ptufile's writer puts one photon on every sync, which is pile-up by any measure (bit 16);
        # no other flag.
        assert flags == 16 and background >= 0, rows
        assert range_end_ns <= 512 * bin_ns + 1e-6, rows


def write_phu(path, curves, resolution_s, sync_rate_hz, stop_after_ms):
    """A PicoQuant histogram file laid out as PicoQuant's own readers (and ptufile) read it:
    magic `PQHISTO`, version, tagged header (32-byte ident, index, type, 8-byte value) ending in
    `Header_End`, then each curve's u32 counts at its `HistResDscr_DataOffset`."""
    import struct
    int8, float8, empty8 = 0x10000008, 0x20000008, 0xFFFF0008
    tags = [("Measurement_Mode", -1, int8, 0), ("Measurement_SubMode", -1, int8, 0),
            ("HistoResult_NumberOfCurves", -1, int8, len(curves))]
    per_curve = []
    for i, counts in enumerate(curves):
        per_curve += [("HistResDscr_CurveIndex", i, int8, i),
                      ("HistResDscr_MDescResolution", i, float8, resolution_s),
                      ("HistResDscr_HWBaseResolution", i, float8, resolution_s),
                      ("HistResDscr_SyncRate", i, int8, int(sync_rate_hz)),
                      ("HistResDscr_MDescStopAfter", i, int8, stop_after_ms),
                      ("HistResDscr_HistogramBins", i, int8, len(counts)),
                      ("HistResDscr_DataOffset", i, int8, None)]
    all_tags = tags + per_curve + [("Header_End", -1, empty8, 0)]
    offset = 16 + 48 * len(all_tags)
    blobs = []
    for i, counts in enumerate(curves):
        blob = np.ascontiguousarray(counts, dtype="<u4").tobytes()
        per_curve[7 * i + 6] = ("HistResDscr_DataOffset", i, int8, offset)
        blobs.append(blob)
        offset += len(blob)
    all_tags = tags + per_curve + [("Header_End", -1, empty8, 0)]
    out = bytearray(b"PQHISTO\0" + b"1.1.00\0\0")
    for name, index, kind, value in all_tags:
        out += name.encode().ljust(32, b"\0") + struct.pack("<iI", index, kind)
        out += struct.pack("<d", value) if kind == float8 else struct.pack("<q", value)
    for blob in blobs:
        out += blob
    path.write_bytes(bytes(out))


def test_a_histogram_file_replays_one_fitted_curve_per_curve_as_ptufile_reads_it(tmp_path):
    """Three decays (2, 4 and 8 ns, 1e6 photons each, 200 ps IRF, 16 ps bins over a 50 ns
    period) in a .phu file: ptufile reads our file's curves back as written, and `flowdaq
    replay` stores each as a tcspc_histograms row with those counts and a lifetime within 1 %."""
    import ptufile
    rng = np.random.default_rng(11)
    bin_ns, bins = 0.016, 3125
    truths = [2.0, 4.0, 8.0]
    curves = []
    for tau in truths:
        t = (rng.normal(5.0, 0.2 / 2.3548, 1_000_000) + rng.exponential(tau, 1_000_000)) % (bins * bin_ns)
        curves.append(np.bincount((t / bin_ns).astype(int), minlength=bins)[:bins].astype(np.uint32))
    path = tmp_path / "decays.phu"
    write_phu(path, curves, bin_ns * 1e-9, 20e6, 10_000)
    with ptufile.PhuFile(path) as reference:
        assert reference.number_histograms == 3
        for ours, theirs in zip(curves, reference.histograms()):
            assert np.array_equal(ours, theirs)

    data_dir = tmp_path / "data"
    replay(path, data_dir, "--source", "phu")
    rows = duckdb.sql(
        f"SELECT h.seq, h.counts, f.tau_1_ns, f.converged FROM {table_of(data_dir, 'tcspc_histograms')} h "
        f"JOIN {table_of(data_dir, 'lifetime_features')} f USING (source, seq) ORDER BY h.seq"
    ).fetchall()
    assert [r[0] for r in rows] == [0, 1, 2]
    for (seq, counts, tau_ns, converged), expected, truth in zip(rows, curves, truths):
        assert np.array_equal(np.asarray(counts), expected)
        assert converged and abs(tau_ns - truth) / truth < 0.01, (seq, tau_ns, truth)


def test_a_truncated_histogram_file_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "cut.phu"
    write_phu(path, [np.ones(1000, dtype=np.uint32)], 16e-12, 20e6, 1000)
    path.write_bytes(path.read_bytes()[:-100])
    result = subprocess.run([flowdaq_bin(), "replay", str(path), "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "curve 0" in result.stderr and "bytes" in result.stderr, result.stderr
