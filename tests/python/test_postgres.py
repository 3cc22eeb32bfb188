"""The PostgreSQL wire protocol against a real `flowdaq serve`, through clients we did not write:
Debian's `psql` and psycopg 3 (extended protocol with bound parameters, and the simple protocol
through a client-side cursor), plus the queries a Grafana PostgreSQL data source sends.

Answers are compared with `POST /sql`; writes, engine settings and the query limits are
attacked; tokens are enforced as passwords.
"""

import os
import shutil
import subprocess

import psycopg
import pytest

from test_flight_sql import QUERIES, fill, normalised

TOKEN = "postgres-token-0123456789ab"


def psql_binary():
    path = shutil.which("psql")
    if path is None:
        pytest.fail("psql not found: scripts/test-all.sh installs Debian's postgresql-client")
    return path


def psql(server, *args, password=None):
    host, port = server.postgres
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if password:
        env["PGPASSWORD"] = password
    return subprocess.run(
        [psql_binary(), "-h", host, "-p", str(port), "-U", "lab", "-d", "flowdaq", "-X", "-v", "ON_ERROR_STOP=1",
         *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )


def connect(server, **kwargs):
    host, port = server.postgres
    return psycopg.connect(host=host, port=port, user="lab", dbname="flowdaq", connect_timeout=10, **kwargs)


def test_psql_and_psycopg_answer_as_http_does(server_factory):
    server = server_factory().start()
    fill(server)
    aggregates = [q for q in QUERIES if "intensity_counts" not in q]

    answer = psql(server, "-At", "-F", ",", "-c", "SELECT source, count(*) FROM spectra GROUP BY source ORDER BY source")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["spec-a,20", "spec-b,20"]
    tables = psql(server, "-c", "\\dt")
    assert tables.returncode == 0, tables.stderr
    assert "spectra" in tables.stdout and "condition_outcomes" in tables.stdout, tables.stdout
    described = psql(server, "-c", "\\d spectra")
    assert described.returncode == 0, described.stderr
    assert "intensity_counts" in described.stdout, described.stdout

    with connect(server, autocommit=False) as conn:  # psycopg opens a transaction: BEGIN passes
        for query in aggregates:
            rows = conn.execute(query).fetchall()
            names = [c.name for c in conn.execute(query).description]
            expected = normalised(server.sql_arrow(query))
            assert [dict(zip(names, row)) for row in rows] == expected, query
        # Bound parameters (extended protocol).
        count = conn.execute("SELECT count(*) FROM spectra WHERE source = %s AND seq >= %s", ("spec-b", 5)).fetchone()
        assert count == (15,)
        # The simple protocol.
        with psycopg.ClientCursor(conn) as cursor:
            cursor.execute("SELECT count(*) FROM spectra WHERE source = %s", ("spec-a",))
            assert cursor.fetchone() == (20,)
        # A spectrum comes back as a list of floats.
        spectrum = conn.execute("SELECT intensity_counts FROM spectra ORDER BY source, seq LIMIT 1").fetchone()[0]
        assert len(spectrum) == 64 and all(isinstance(v, float) for v in spectrum)


GRAFANA_QUERIES = [
    # Health check of the data source.
    "SELECT 1",
    # Table picker.
    "SELECT quote_ident(table_name) AS \"table\" FROM information_schema.tables "
    "WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog', '_timescaledb_cache', "
    "'_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config', 'timescaledb_information', "
    "'timescaledb_experimental') AND table_type = 'BASE TABLE' ORDER BY 1",
    # Column picker.
    "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" FROM information_schema.columns "
    "WHERE quote_ident(table_name) = 'spectral_features' ORDER BY 1",
    # A time series panel, its $__timeGroupAlias and $__timeFilter macros expanded by Grafana.
    "SELECT floor(extract(epoch from arrival_time_ns)/60)*60 AS \"time\", avg(peak_energy_ev) AS \"peak_energy_ev\" "
    "FROM spectral_features WHERE arrival_time_ns BETWEEN '2020-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' "
    "GROUP BY 1 ORDER BY 1",
    # A table panel.
    "SELECT run_id, condition_id, feature, mean, std, settled FROM condition_outcomes ORDER BY run_id LIMIT 100",
]


def test_the_queries_of_a_grafana_data_source_are_answered(server_factory):
    server = server_factory().start()
    fill(server, messages=8)
    with connect(server, autocommit=True) as conn:
        for query in GRAFANA_QUERIES:
            conn.execute(query).fetchall()
        tables = [row[0] for row in conn.execute(GRAFANA_QUERIES[1]).fetchall()]
        assert "spectra" in tables and "spectral_features" in tables, tables
        columns = [row[0] for row in conn.execute(GRAFANA_QUERIES[2]).fetchall()]
        assert "peak_energy_ev" in columns
        series = conn.execute(GRAFANA_QUERIES[3]).fetchall()
        assert series and all(row[1] is not None for row in series)


def test_writes_engine_settings_and_limits_are_refused(server_factory):
    server = server_factory(extra_config="[query]\ntimeout_s = 2\n").start()
    with connect(server, autocommit=True) as conn:
        for statement in (
            "CREATE TABLE t (a INT)",
            "INSERT INTO spectra (source) VALUES ('x')",
            "DROP TABLE spectra",
            "SET datafusion.execution.target_partitions = 1000",
            "SELECT 1; DELETE FROM spectra",
        ):
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(statement)
            assert "read-only" in str(refused.value) or "not allowed" in str(refused.value), refused.value
        with pytest.raises(psycopg.Error) as slow:
            conn.execute("SELECT count(*) FROM generate_series(1, 10000000000)").fetchall()
        assert "timeout_s" in str(slow.value), slow.value
        # A streamed result is stopped at the time limit too, not only its planning.
        with pytest.raises(psycopg.Error) as cut:
            with conn.cursor() as cursor:
                cursor.execute("SELECT value FROM generate_series(1, 10000000000)")
                while cursor.fetchmany(100000):
                    pass
        assert "timeout_s" in str(cut.value), cut.value
        with pytest.raises(psycopg.Error) as deep:
            conn.execute("SELECT " + " + ".join(["1"] * 2000))
        assert "max_operators" in str(deep.value)
        # The connection still answers, and settings of the connection itself pass.
        conn.execute("SET application_name = 'grafana'")
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
    assert server.metrics()["query"]["timed_out"] >= 2


def test_the_password_must_be_a_token(server_factory):
    server = server_factory(extra_config=f'[auth]\ntokens = ["{TOKEN}"]\n', token=TOKEN).start()
    for password in (None, "", "wrong-token-0123456789"):
        with pytest.raises(psycopg.OperationalError):
            connect(server, password=password).close()
    with connect(server, password=TOKEN, autocommit=True) as conn:
        assert conn.execute("SELECT 7").fetchone() == (7,)
    answer = psql(server, "-At", "-c", "SELECT 8", password=TOKEN)
    assert answer.returncode == 0 and answer.stdout.strip() == "8", answer.stderr
    refused = psql(server, "-At", "-w", "-c", "SELECT 9", password="wrong-token-0123456789")
    assert refused.returncode != 0
