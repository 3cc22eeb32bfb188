"""The flowdaq Python package (python/, installed with pip) against a real `flowdaq serve`.

`Sender` over DEALER delivers every spectrum exactly once, resends included, and raises the
server's reason for a refused message; over PUSH it delivers too. `Client.sql` answers the same
rows as pyarrow, pandas and polars tables over Flight SQL and over HTTP, binds parameters, and
raises the server's reason for a bad query. `python -m flowdaq.send` is the package's command.
"""

import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from flowdaq import Client, FlowdaqError, MessageRefused, QueryError, Sender

PIXELS = 128
AXIS_NM = np.linspace(400.0, 700.0, PIXELS)


def pl_counts(peak_nm, rng):
    return 2000.0 * np.exp(-0.5 * ((AXIS_NM - peak_nm) / 10.0) ** 2) + rng.uniform(0, 5, PIXELS)


def test_acknowledged_sender_stores_every_spectrum_once_and_clients_read_them(server_factory):
    server = server_factory().start()
    rng = np.random.default_rng(3)
    with Sender(server.router, "py-spec", max_unacknowledged=8) as sender:
        for i in range(30):
            sender.send_spectrum(AXIS_NM, pl_counts(500.0 + i, rng), run_id="pkg")
        # pyarrow input, two spectra in one message
        sender.send_spectrum(pa.array(AXIS_NM), np.stack([pl_counts(520.0, rng), pl_counts(540.0, rng)]),
                             run_id="pkg")
        sender.flush()
        assert sender.unacknowledged == 0
        # A resend of everything already held: acknowledged as duplicates, stored once.
        dealer = sender._dealer
        held = {seq: frames for seq, frames in enumerate(dealer_frames(sender, rng))}
        for seq, frames in held.items():
            dealer.send(seq, frames)
        sender.flush()
        assert sender.duplicates >= len(held), sender.duplicates

    flight = Client(http=server.http, flight_sql=server.flight_sql)
    http_only = Client(http=server.http)
    assert flight._sql.uses_flight_sql and not http_only._sql.uses_flight_sql
    query = "SELECT count(*) AS n, count(DISTINCT seq) AS messages FROM spectra WHERE run_id = 'pkg'"
    for client in (flight, http_only):
        table = client.sql(query)
        assert isinstance(table, pa.Table)
        assert table.to_pylist() == [{"n": 32, "messages": 31}]
        frame = client.sql("SELECT seq FROM spectra WHERE run_id = 'pkg' ORDER BY seq, spectrum_index LIMIT 3",
                           output="pandas")
        assert frame["seq"].tolist() == [0, 1, 2]
        polars_frame = client.sql(query, output="polars")
        assert polars_frame.to_dicts() == [{"n": 32, "messages": 31}]
        with pytest.raises(QueryError) as bad:
            client.sql("SELECT no_such_column FROM spectra")
        assert "no_such_column" in str(bad.value), bad.value
        client.close()

    answer = flight.sql("SELECT count(*) AS n FROM spectra WHERE run_id = ? AND seq < ?", ["pkg", 10])
    assert answer.to_pylist() == [{"n": 10}]
    with pytest.raises(FlowdaqError, match="Flight SQL"):
        http_only.sql("SELECT count(*) FROM spectra WHERE seq < ?", [3])
    with pytest.raises(FlowdaqError, match="no SQL address"):
        Client(server.control, server.publish).sql("SELECT 1")


def dealer_frames(sender, rng):
    """The frames of seq 0..4 again, as a restarted instrument would resend them (same session)."""
    from flowdaq.wire import spectrum_frames

    return [spectrum_frames(sender.source, seq, AXIS_NM, pl_counts(500.0 + seq, rng), run_id="pkg",
                            session=sender.session) for seq in range(5)]


def test_a_refused_message_raises_the_servers_reason_and_good_ones_are_kept(server_factory):
    server = server_factory().start()
    rng = np.random.default_rng(4)
    sender = Sender(server.router, "py-bad")
    sender.send_spectrum(AXIS_NM, pl_counts(500.0, rng))
    with pytest.raises(MessageRefused) as refused:
        sender.send_spectrum(AXIS_NM[:10], pl_counts(510.0, rng))  # axis and counts disagree
        sender.flush()
    assert refused.value.seq == 1 and refused.value.source == "py-bad"
    assert refused.value.reason, refused.value
    print(f"\n[client] refused: {refused.value}")
    sender.send_spectrum(AXIS_NM, pl_counts(520.0, rng))
    sender.flush()
    sender.close()
    rows = Client(http=server.http).sql("SELECT seq FROM spectra WHERE source = 'py-bad' ORDER BY seq")
    assert rows.column("seq").to_pylist() == [0, 2]


def test_push_sender_and_the_send_command(server_factory):
    server = server_factory().start()
    rng = np.random.default_rng(5)
    with Sender(server.pull, "py-push", acknowledged=False) as sender:
        for i in range(12):
            sender.send_spectrum(AXIS_NM, pl_counts(500.0 + i, rng), run_id="push")
    result = subprocess.run(
        [sys.executable, "-m", "flowdaq.send", server.router, "--acknowledged", "--count", "5",
         "--source", "py-command", "--run-id", "push"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    server.wait_processed(17)
    rows = Client(http=server.http).sql(
        "SELECT source, count(*) AS n FROM spectra WHERE run_id = 'push' GROUP BY source ORDER BY source")
    assert rows.to_pylist() == [{"source": "py-command", "n": 5}, {"source": "py-push", "n": 12}]


def test_a_spectra_text_file_and_one_outcome(server_factory, tmp_path):
    server = server_factory(extra_config=(
        "[outcomes]\nwait_residence_times = 0.0\nmin_wait_s = 0.2\nwindow_s = 0.5\nmin_samples = 5\n"
        "timeout_s = 60.0\n[outcomes.features.\"spectral_features.peak_energy_ev\"]\n"
        "max_std = 0.05\nmax_drift = 0.05\n")).start()
    rng = np.random.default_rng(6)
    path = tmp_path / "export.csv"
    a, b = pl_counts(510.0, rng), pl_counts(530.0, rng)
    lines = ["Sample export, two spectra", "wavelength_nm;spectrum_a;spectrum_b"]
    lines += [f"{w:.3f};{x:.3f};{y:.3f}" for w, x, y in zip(AXIS_NM, a, b)]
    lines.append("end of data")
    path.write_text("\n".join(lines) + "\n")
    client = Client(server.control, server.publish, http=server.http)
    with Sender(server.router, "py-file") as sender:
        assert sender.send_spectra_file(str(path), run_id="file") == 0
    table = client.sql("SELECT intensity_counts FROM spectra WHERE source = 'py-file' ORDER BY spectrum_index")
    stored = np.array(table.column("intensity_counts").to_pylist(), dtype="<f4")
    expected = np.array([[float(f"{x:.3f}") for x in spectrum] for spectrum in (a, b)], dtype="<f4")
    np.testing.assert_array_equal(stored, expected)

    # A condition, spectra under it until its outcome is published.
    client.register_condition("file", "c-1", {"temperature": {"value": 140, "unit": "degC"}})
    stop = threading.Event()

    def keep_sending():
        with Sender(server.pull, "py-steady", acknowledged=False) as steady:
            while not stop.is_set():
                steady.send_spectrum(AXIS_NM, pl_counts(510.0, rng), run_id="file",
                                     instrument_time_ns=time.time_ns())
                stop.wait(0.02)

    sending = threading.Thread(target=keep_sending)
    sending.start()
    try:
        outcome = client.wait_outcome("file", "c-1", "spectral_features.peak_energy_ev", timeout_s=60)
    finally:
        stop.set()
        sending.join(timeout=30)
    assert outcome["condition_id"] == "c-1" and outcome["source"] == "py-steady", outcome
    assert outcome["settled"] and outcome["count"] >= 5, outcome

    bad = tmp_path / "empty.csv"
    bad.write_text("no numbers here\n")
    with Sender(server.router, "py-file-2") as sender, pytest.raises(ValueError, match="no rows of numbers"):
        sender.send_spectra_file(str(bad))


def test_readings_from_a_driver_land_one_row_per_key_and_event(server_factory):
    """A pump controller's readings through `Sender.send_readings`, acknowledged: numbers (a
    pyarrow array and a numpy one), a text state, units and event times, one row per key and
    event; a reading with the wrong number of values is refused with the server's reason."""
    server = server_factory().start()
    times_ns = np.array([1_000, 2_000, 3_000], dtype=np.int64) + 1_764_000_000_000_000_000
    with Sender(server.router, "pump-1") as sender:
        sender.send_readings(
            {"flow_ul_per_min": pa.array([10.0, 12.5, float("nan")]),
             "pressure_bar": np.array([1.2, 1.3, 1.4]),
             "state": ["run", "run", "stall"]},
            event_time_ns=times_ns, stream_name="pump", units={"flow_ul_per_min": "uL/min"},
            run_id="pumps")
    rows = Client(http=server.http).sql(
        "SELECT event_index, data_key, value, value_text, units, stream_name, run_id FROM readings "
        "ORDER BY event_index, data_key").to_pylist()
    got = [(r["event_index"], r["data_key"], r["value"], r["value_text"], r["units"]) for r in rows]
    assert got == [
        (0, "flow_ul_per_min", 10.0, None, "uL/min"), (0, "pressure_bar", 1.2, None, None),
        (0, "state", None, "run", None),
        (1, "flow_ul_per_min", 12.5, None, "uL/min"), (1, "pressure_bar", 1.3, None, None),
        (1, "state", None, "run", None),
        (2, "flow_ul_per_min", None, "NaN", "uL/min"), (2, "pressure_bar", 1.4, None, None),
        (2, "state", None, "stall", None),
    ]
    assert {(r["stream_name"], r["run_id"]) for r in rows} == {("pump", "pumps")}
    with Sender(server.pull, "pump-2", acknowledged=False) as push, \
            pytest.raises(ValueError, match="has 2 values"):
        push.send_readings({"a": [1.0], "b": [1.0, 2.0]})
    sender = Sender(server.router, "pump-3")
    with pytest.raises(MessageRefused) as refused:
        sender.send_readings({"a": [1.0]}, units={"b": "mm"})
        sender.flush()
    assert "not a reading" in refused.value.reason
    sender.close()
