"""Arrow Flight SQL against a real `flowdaq serve`, through clients we did not write: the ADBC
Flight SQL driver (DB-API, pandas, polars).

Answers are compared with `POST /sql` and with duckdb reading the same Parquet files. Catalog
listings, SqlInfo, prepared statements, read-only refusals, the query limits and tokens (bearer
header and handshake) are exercised over gRPC. Waiting is on observable conditions, bounded.
"""

import json

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import numpy as np
import polars as pl
import pyarrow.flight as flight
import pytest
import zmq

from conftest import vm_hwm_bytes
from flowdaq.wire import spectrum_frames

PIXELS = 64
TOKEN = "flight-token-0123456789abcdef"


def fill(server, messages=40):
    """Send `messages` spectra from two sources over PUSH; wait until processed."""
    rng = np.random.default_rng(7)
    wavelength_nm = np.linspace(400.0, 700.0, PIXELS)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    for seq in range(messages):
        source = "spec-a" if seq % 2 == 0 else "spec-b"
        peak = 480.0 + 40.0 * (seq % 5)
        counts = (1000.0 * np.exp(-0.5 * ((wavelength_nm - peak) / 12.0) ** 2) + rng.uniform(0, 5, PIXELS)).astype("<f4")
        push.send_multipart(spectrum_frames(source, seq // 2, wavelength_nm, counts, run_id="flight",
                                            condition_id=f"c-{seq % 4}"))
    server.wait_processed(messages)
    push.close(linger=0)
    context.term()


def connect(server, **kwargs):
    return flight_sql.connect(server.flight_sql, **kwargs)


QUERIES = [
    "SELECT count(*) AS n FROM spectra",
    "SELECT source, count(*) AS n, sum(seq) AS seqs FROM spectra GROUP BY source ORDER BY source",
    "SELECT condition_id, count(*) AS n FROM spectra GROUP BY condition_id ORDER BY condition_id",
    "SELECT seq, source, intensity_counts FROM spectra ORDER BY source, seq",
    "SELECT source, round(avg(peak_energy_ev), 9) AS peak_ev FROM spectral_features GROUP BY source ORDER BY source",
]


def duckdb_answer(data_dir, query):
    con = duckdb.connect()
    for table in ("spectra", "spectral_features"):
        pattern = str(data_dir / "tables" / table / "**" / "*.parquet")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = false)")
    return con.execute(query).to_arrow_table()


def normalised(table):
    """Rows as plain Python values, lists of floats as float32 bit patterns."""
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, list):
                row[key] = np.asarray(value, dtype="<f4").view("<u4").tolist()
    return rows


def test_adbc_answers_equal_http_and_duckdb_on_the_parquet(server_factory):
    server = server_factory().start()
    fill(server)
    server.stop()  # persist everything to Parquet
    server.start()
    with connect(server) as conn:
        cursor = conn.cursor()
        for query in QUERIES:
            cursor.execute(query)
            via_flight = cursor.fetch_arrow_table()
            via_http = server.sql_arrow(query)
            via_duckdb = duckdb_answer(server.data_dir, query)
            assert via_flight.num_rows > 0, query
            assert normalised(via_flight) == normalised(via_http), query
            assert normalised(via_flight) == normalised(via_duckdb), query

        # Into pandas and polars.
        cursor.execute(QUERIES[1])
        frame = cursor.fetch_df()
        assert frame["n"].tolist() == [20, 20] and frame["source"].tolist() == ["spec-a", "spec-b"]
        polars_frame = pl.read_database(QUERIES[2], connection=conn)
        assert polars_frame["n"].to_list() == [10, 10, 10, 10]

        # A prepared statement gives the same rows.
        cursor.adbc_prepare(QUERIES[0])
        cursor.execute(QUERIES[0])
        assert cursor.fetchall() == [(40,)]
        cursor.close()


def test_catalog_listing_and_sql_info_for_client_tools(server_factory):
    server = server_factory().start()
    with connect(server) as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "flowdaq", info
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = {
            table["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            for table in schema["db_schema_tables"] or []
        }
        assert {"spectra", "spectral_features", "photons", "conditions", "condition_outcomes"} <= tables, tables
        schema = conn.adbc_get_table_schema("spectra")
        assert "intensity_counts" in schema.names and "seq" in schema.names
        assert set(conn.adbc_get_table_types()) >= {"TABLE"}


def test_flight_sql_is_read_only_and_keeps_the_query_limits(server_factory):
    server = server_factory(extra_config="[query]\ntimeout_s = 2\n").start()
    with connect(server) as conn:
        cursor = conn.cursor()
        for statement in ("CREATE TABLE t AS SELECT 1", "DELETE FROM spectra", "COPY spectra TO '/tmp/x.parquet'"):
            with pytest.raises(adbc_driver_manager.Error) as refused:
                cursor.execute(statement)
                cursor.fetch_arrow_table()
            assert "read-only" in str(refused.value).lower() or "not allowed" in str(refused.value).lower(), refused.value
        with pytest.raises(adbc_driver_manager.Error) as slow:
            cursor.execute("SELECT count(*) FROM generate_series(1, 10000000000)")
            cursor.fetch_arrow_table()
        assert "timeout_s" in str(slow.value), slow.value
        with pytest.raises(adbc_driver_manager.Error) as unknown:
            cursor.execute("SELECT nope FROM spectra")
            cursor.fetch_arrow_table()
        assert "nope" in str(unknown.value)
        cursor.close()
    metrics = server.metrics()["query"]
    assert metrics["refused"] >= 1 and metrics["timed_out"] == 1, metrics


def test_a_large_result_streams_in_bounded_memory(server_factory):
    server = server_factory(extra_config="[query]\nmax_result_bytes = 1048576\ntimeout_s = 120\n").start()
    before = vm_hwm_bytes(server.process.pid)
    rows = 0
    with connect(server) as conn:
        cursor = conn.cursor()
        # 20 M rows of 8 bytes: 160 MB of Arrow, 150 times max_result_bytes, streamed.
        cursor.execute("SELECT value FROM generate_series(1, 20000000)")
        reader = cursor.fetch_record_batch()
        total = 0
        for batch in reader:
            rows += batch.num_rows
            total += int(np.asarray(batch.column(0)).sum())
        cursor.close()
    assert rows == 20_000_000 and total == 20_000_000 * 20_000_001 // 2
    grown = vm_hwm_bytes(server.process.pid) - before
    assert grown < 100 * 2**20, f"the server's peak RSS grew by {grown / 2**20:.0f} MiB while streaming"


def test_tokens_guard_flight_sql_by_bearer_or_handshake(server_factory):
    server = server_factory(extra_config=f'[auth]\ntokens = ["{TOKEN}"]\n', token=TOKEN).start()
    with pytest.raises(adbc_driver_manager.Error) as refused:
        with connect(server) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1 AS one")
            cursor.fetch_arrow_table()
    assert "unauthenticated" in str(refused.value).lower() or "token" in str(refused.value).lower(), refused.value

    bearer = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {TOKEN}"}
    with connect(server, db_kwargs=bearer) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1 AS one")
        assert cursor.fetchall() == [(1,)]
        cursor.close()

    handshake = {"username": "lab", "password": TOKEN}
    with connect(server, db_kwargs=handshake) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 2 AS two")
        assert cursor.fetchall() == [(2,)]
        cursor.close()

    with pytest.raises(adbc_driver_manager.Error):
        with connect(server, db_kwargs={"username": "lab", "password": "wrong-token-0123456789"}) as conn:
            conn.cursor().execute("SELECT 3")
    assert json.dumps(server.ready)  # the server is still up and answering
    status, _ = server.sql_http("SELECT 4")
    assert status == 200


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def statement_descriptor(sql):
    """The FlightDescriptor of a Flight SQL CommandStatementQuery, encoded by hand (protobuf Any)."""
    command = _field(1, sql.encode())
    any_message = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + _field(2, command)
    return flight.FlightDescriptor.for_command(any_message)


def test_tickets_can_be_fetched_again_and_unfetched_statements_do_not_block_others(server_factory):
    """GetFlightInfo starts a statement's query for the DoGet that follows; a ticket fetched twice,
    or never, must not change what any client gets."""
    import pyarrow.flight as flight

    server = server_factory().start()
    fill(server)
    client = flight.FlightClient(server.flight_sql)
    sql = "SELECT source, count(*) AS n FROM spectra GROUP BY source ORDER BY source"
    expected = [{"source": "spec-a", "n": 20}, {"source": "spec-b", "n": 20}]

    info = client.get_flight_info(statement_descriptor(sql))
    ticket = info.endpoints[0].ticket
    assert info.schema.names == ["source", "n"]
    assert client.do_get(ticket).read_all().to_pylist() == expected
    assert client.do_get(ticket).read_all().to_pylist() == expected, "a ticket fetched again runs again"

    # More statements than the server keeps waiting, none fetched: every ticket still answers.
    tickets = [client.get_flight_info(statement_descriptor(f"SELECT {i} AS i")).endpoints[0].ticket
               for i in range(100)]
    for i in (0, 63, 64, 99):
        assert client.do_get(tickets[i]).read_all().to_pylist() == [{"i": i}]
    with connect(server) as conn, conn.cursor() as cursor:
        cursor.execute(sql)
        assert cursor.fetch_arrow_table().to_pylist() == expected
    client.close()


def test_prepared_statements_bind_parameters_as_values(server_factory):
    server = server_factory().start()
    fill(server)
    with connect(server) as conn, conn.cursor() as cursor:
        sql = "SELECT count(*) AS n FROM spectra WHERE source = ? AND seq >= ?"
        parameters = cursor.adbc_prepare(sql)
        assert parameters is not None and parameters.names == ["$1", "$2"], parameters

        cursor.execute(sql, ("spec-a", 5))
        assert cursor.fetchall() == [(15,)]
        for source, expected in (("spec-b", 20), ("spec-c", 0)):
            cursor.execute("SELECT count(*) AS n FROM spectra WHERE source = ?", (source,))
            assert cursor.fetchall() == [(expected,)]
        cursor.execute("SELECT count(*) AS n FROM spectra WHERE source = $1 AND seq < $2", ("spec-a", 3))
        assert cursor.fetchall() == [(3,)]
        # A value is a value: text that looks like SQL matches nothing.
        cursor.execute("SELECT count(*) AS n FROM spectra WHERE source = ?", ("spec-a' OR '1'='1",))
        assert cursor.fetchall() == [(0,)]
        # The same answers arrive in pandas.
        frame = pd_read(conn, "SELECT seq FROM spectra WHERE source = ? ORDER BY seq LIMIT 3", ("spec-b",))
        assert frame["seq"].tolist() == [0, 1, 2]

        with pytest.raises(adbc_driver_manager.Error) as refused:
            cursor.execute("SELECT count(*) FROM spectra WHERE source = ? AND seq = ?", ("spec-a",))
            cursor.fetchall()
        print(f"\n[flight_sql] one value for two placeholders: {refused.value}")
        with pytest.raises(adbc_driver_manager.Error) as refused:
            cursor.execute("SELECT count(*) FROM spectra WHERE source = ? AND seq = $2", ("spec-a", 1))
            cursor.fetchall()
        assert "not both" in str(refused.value), refused.value
    status, _ = server.sql_http("SELECT 1")
    assert status == 200


def pd_read(conn, sql, parameters):
    """A parameterised query into pandas through the ADBC cursor."""
    with conn.cursor() as cursor:
        cursor.execute(sql, parameters)
        return cursor.fetch_df()
