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
