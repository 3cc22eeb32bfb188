"""Slow and idle HTTP clients against a real `flowdaq serve`: none may hold the server.

Clients trickling their headers (slowloris), sending a body a byte at a time, or sitting idle
are closed after the configured timeouts; connections beyond `max_connections` are closed at
once; every refusal is counted in `/metrics`; and the server answers queries afterwards.
"""
import json
import socket
import urllib.request

LIMITS = "header_timeout_s = 1\nbody_timeout_s = 1\nmax_connections = 24\n"


def connect(server):
    host, port = server.ready["http"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_server(sock, deadline_s=10.0):
    """True once the server closes `sock` (EOF or reset), reading whatever it answered."""
    sock.settimeout(deadline_s)
    received = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except ConnectionResetError:
        return True, received
    except socket.timeout:
        return False, received


def http_metrics(server):
    with urllib.request.urlopen(server.http + "/metrics/json", timeout=10) as response:
        return json.loads(response.read())["http"]


def answers(server):
    status, body = server.sql_http("SELECT 40 + 2 AS answer")
    return status == 200 and json.loads(body) == [{"answer": 42}]


def test_slow_headers_slow_bodies_and_idle_connections_are_closed(server_factory):
    server = server_factory(http=LIMITS).start()

    # Slowloris: a request line and an unfinished header, the rest never sent.
    slow_headers = [connect(server) for _ in range(10)]
    for sock in slow_headers:
        sock.sendall(b"POST /sql HTTP/1.1\r\nHost: flowdaq\r\nX-Slow: ")
    # Idle: connected, nothing sent.
    idle = [connect(server) for _ in range(10)]
    # A body promised, only its first bytes sent.
    slow_body = connect(server)
    slow_body.sendall(b"POST /sql HTTP/1.1\r\nHost: flowdaq\r\nContent-Length: 64\r\n\r\nSELECT")

    for sock in slow_headers:
        closed, _ = closed_by_server(sock)
        assert closed, "a client trickling its headers was never closed"
    for sock in idle:
        closed, _ = closed_by_server(sock)
        assert closed, "an idle connection was never closed"
    closed, answer = closed_by_server(slow_body)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout_s" in answer, answer[:400]

    counters = http_metrics(server)
    print(f"\n[http] after slow clients: {counters}")
    assert counters["header_timeouts"] >= 20, counters
    assert counters["body_timeouts"] == 1, counters
    assert answers(server)
    for sock in slow_headers + idle + [slow_body]:
        sock.close()


def test_connections_beyond_the_limit_are_closed_at_once_and_counted(server_factory):
    server = server_factory(http=LIMITS).start()
    held = [connect(server) for _ in range(24)]
    # Each held connection has sent part of a request, so the server has taken it.
    for sock in held:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    extra = [connect(server) for _ in range(16)]
    refused_at_once = 0
    for sock in extra:
        closed, received = closed_by_server(sock, deadline_s=0.9)
        refused_at_once += closed and not received
    print(f"\n[http] {refused_at_once} of {len(extra)} connections beyond the limit closed at once")
    assert refused_at_once == len(extra), refused_at_once
    # The held ones time out; then the server takes requests again.
    for sock in held:
        closed, _ = closed_by_server(sock)
        assert closed
    counters = http_metrics(server)
    print(f"[http] {counters}")
    assert counters["connections_refused"] >= len(extra), counters
    assert counters["connections_open"] <= 1, counters  # this request's own connection
    assert answers(server)
    for sock in held + extra:
        sock.close()


def test_an_oversized_sql_body_is_refused_with_413(server_factory):
    server = server_factory(extra_config="[query]\nmax_sql_bytes = 4096\n").start()
    status, body = server.sql_http("SELECT '" + "x" * 10000 + "'")
    assert status == 413, (status, body[:200])
    assert b"4096" in body, body[:300]
    assert answers(server)
