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
    result = subprocess.run(
        [flowdaq_bin(), "replay", str(path), "--source", "ref", "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    photons = duckdb.sql(
        "SELECT macro_time_ps, micro_time_ps, channel FROM "
        f"read_parquet('{data_dir}/tables/photons/**/*.parquet', hive_partitioning = true) "
        "WHERE marker_flags = 0 ORDER BY macro_time_ps, channel, micro_time_ps"
    ).fetchnumpy()

    assert len(photons["channel"]) == photon.sum()
    order = np.lexsort((ref_micro, ref_channel, ref_macro))
    assert np.array_equal(photons["channel"].astype(np.int64), ref_channel[order])
    # Times in ps from each reader's own units: the same to within the rounding to whole ps.
    assert np.abs(photons["macro_time_ps"] - np.round(ref_macro[order] * period_ps)).max() <= 1
    ours_bins = np.round(photons["micro_time_ps"] / bin_ps).astype(np.int64)
    assert np.array_equal(np.bincount(ours_bins), np.bincount(ref_micro))
