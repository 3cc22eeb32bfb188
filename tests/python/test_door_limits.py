"""Connection limits at the Flight SQL and PostgreSQL doors of a real `flowdaq serve`.

Clients that connect and say nothing hold a door's slots; connections beyond `max_connections`
are closed at once and counted (in `/metrics/json` and the Prometheus text); once the held
connections go, ADBC and psycopg are served again.
"""
import json
import socket
import time
import urllib.request

from test_flight_sql import connect as flight_connect
from test_http_limits import closed_by_server
from test_postgres import connect as postgres_connect

MAX_CONNECTIONS = 4
EXTRA = 6


def metrics(server):
    with urllib.request.urlopen(server.http + "/metrics/json", timeout=10) as response:
        return json.loads(response.read())


def prometheus(server):
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        return response.read().decode()


def address(server, door):
    host, port = server.ready[door].rsplit(":", 1)
    return host, int(port)


def wait_until_none_open(server, door, deadline_s=30.0):
    """The door's counters once it reports no open connection (the server saw the closes)."""
    deadline = time.monotonic() + deadline_s
    while True:
        counters = metrics(server)[door]
        if counters["connections_open"] == 0:
            return counters
        if time.monotonic() > deadline:
            raise AssertionError(f"{door}: connections still open after {deadline_s} s: {counters}")
        time.sleep(0.05)


def hold_and_overflow(server, door):
    """Holds `MAX_CONNECTIONS` silent connections, opens `EXTRA` more; how many were closed at once."""
    held = [socket.create_connection(address(server, door), timeout=10) for _ in range(MAX_CONNECTIONS)]
    deadline = time.monotonic() + 30
    while metrics(server)[door]["connections_open"] < MAX_CONNECTIONS:
        assert time.monotonic() < deadline, f"{door}: the held connections were never admitted"
        time.sleep(0.05)
    extra = [socket.create_connection(address(server, door), timeout=10) for _ in range(EXTRA)]
    refused_at_once = 0
    for sock in extra:
        closed, received = closed_by_server(sock, deadline_s=5)
        refused_at_once += closed and not received
    for sock in held + extra:
        sock.close()
    return refused_at_once


def test_flight_sql_and_postgres_close_connections_beyond_their_limit(server_factory):
    limit = f"max_connections = {MAX_CONNECTIONS}\n"
    server = server_factory(flight_sql=limit, postgres=limit).start()

    for door in ("flight_sql", "postgres"):
        refused = hold_and_overflow(server, door)
        print(f"\n[{door}] {refused} of {EXTRA} connections beyond the limit closed at once")
        assert refused == EXTRA, (door, refused)
        counters = wait_until_none_open(server, door)
        assert counters["connections_refused"] == EXTRA, (door, counters)

    text = prometheus(server)
    for door in ("flight_sql", "postgres"):
        assert f"flowdaq_{door}_connections_refused_total {EXTRA}" in text, text
        assert f"flowdaq_{door}_connections_open 0" in text, text

    with flight_connect(server) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT 40 + 2 AS answer")
        assert cursor.fetch_arrow_table().to_pylist() == [{"answer": 42}]
    with postgres_connect(server) as conn:
        assert conn.execute("SELECT 40 + 2 AS answer").fetchall() == [(42,)]
