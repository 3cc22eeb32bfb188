"""Hostile queries against a real `flowdaq serve` over HTTP: none may crash the server, hold it
for ever or swell it.

Each query of the corpus gets an answer or a clear 400 error naming the limit it hit; huge
results stream until the time limit cuts them; after the corpus the server still answers, its peak resident memory (VmHWM, from the kernel) stays
within the configured query memory plus a fixed margin, and a query whose client hung up stops
using the CPU.
"""
import http.client
import json
import os
import socket
import time
import urllib.request

import pytest

from conftest import vm_hwm_bytes

MiB = 1 << 20
MEMORY_LIMIT = 64 * MiB
MAX_RESULT = 8 * MiB
# Base of an idle server (code, DataFusion, allocator, buffers not yet filled), what the
# deepest accepted expression touches of a query thread's stack, and what DataFusion's
# operators allocate without reserving it from the pool (a group-by over 1e8 generated rows
# peaked at about 350 MiB above the base with a 64 MiB pool).
MARGIN = 512 * MiB

QUERY_LIMITS = f"""
[query]
timeout_s = 3
memory_limit_bytes = {MEMORY_LIMIT}
max_result_bytes = {MAX_RESULT}
max_sql_bytes = 262144
max_operators = 1024
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(server, query, timeout=60):
    request = urllib.request.Request(server.http + "/sql", data=query.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def chain(op, term, n):
    return f" {op} ".join([term] * n)


def assert_alive(server):
    status, body = post(server, "SELECT 40 + 2 AS answer")
    assert (status, body) == (200, [{"answer": 42}]), (status, body)
    assert server.process.poll() is None, "the server exited"


# (query, expected status, a fragment of the answer or of the error)
CORPUS = [
    # Long left-deep chains within max_operators: answered.
    ("SELECT " + chain("+", "1", 1000) + " AS n", 200, '"n": 1000'),
    ("SELECT " + chain("+", "1", 1023) + " AS n", 200, '"n": 1023'),
    ("SELECT count(*) AS n FROM generate_series(1, 1000) WHERE " + chain("AND", "value > 0", 500), 200, '"n": 1000'),
    ("SELECT count(*) AS n FROM generate_series(1, 1000) WHERE " + chain("OR", "value < 0", 499) + " OR value > 0",
     200, '"n": 1000'),
    ("SELECT count(*) AS n FROM spectra WHERE " + chain("AND", "seq >= 0", 500), 200, '"n": 0'),
    # Beyond max_operators: refused before planning.
    ("SELECT " + chain("+", "1", 1025), 400, "max_operators"),
    ("SELECT " + chain("*", "1", 60000), 400, "max_operators"),
    ("SELECT count(*) FROM generate_series(1, 10) WHERE " + chain("AND", "value > 0", 1000), 400, "max_operators"),
    ("SELECT count(*) FROM generate_series(1, 10) WHERE " + chain("OR", "value > 0", 1000), 400, "max_operators"),
    ("SELECT count(*) FROM generate_series(1, 10) WHERE " + chain("AND", "NOT value = 0", 3000), 400, "max_operators"),
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000, 400, "max_operators"),
    # Nested parentheses within max_operators: the parser's own recursion limit.
    ("SELECT " + "(" * 500 + "1" + ")" * 500, 400, "RecursionLimitExceeded"),
    # Longer than max_sql_bytes: refused while the body is read.
    ("SELECT '" + "x" * 300000 + "'", 413, "max_sql_bytes"),
    # Endless work: stopped by the time limit.
    ("SELECT count(*) FROM generate_series(1, 10000000000)", 400, "timeout_s"),
    ("SELECT value FROM range(1000000000) ORDER BY value DESC LIMIT 1", 400, "timeout_s"),
    # Huge results stream (test_huge_results_stream_and_are_cut_at_the_time_limit).
    # One enormous value built in one allocation, outside any pool: refused from the arguments.
    ("SELECT repeat('x', 2000000000)", 400, "at most"),
    ("SELECT length(lpad('a', 1000000000))", 400, "at most"),
    ("SELECT array_repeat(1, 1000000000)", 400, "at most"),
    ("SELECT max(length(repeat('x', 100000 + value % 2))) FROM generate_series(1, 100000)", 400, "at most"),
    # Memory-hungry operators: refused by the pool or stopped by the time limit.
    ("SELECT value % 10000000 AS k, count(*) FROM generate_series(1, 100000000) GROUP BY k ORDER BY k LIMIT 3",
     400, ""),
    ("SELECT count(DISTINCT value * 7919 % 1000000007) FROM generate_series(1, 100000000)", 400, ""),
]


def test_the_hostile_query_corpus_cannot_crash_hold_or_swell_the_server(server_factory):
    server = server_factory(extra_config=QUERY_LIMITS).start()
    pid = server.process.pid
    hwm_start = vm_hwm_bytes(pid)
    failures = []
    for query, want_status, fragment in CORPUS:
        started = time.monotonic()
        status, body = post(server, query)
        text = json.dumps(body)
        took = time.monotonic() - started
        label = query[:70] + ("..." if len(query) > 70 else "")
        print(f"{status} in {took:5.2f} s, VmHWM {vm_hwm_bytes(pid) / MiB:6.1f} MiB: {label} -> {text[:150]}")
        if status != want_status or fragment not in text:
            failures.append(f"{label}: got {status} {text[:300]}, wanted {want_status} with {fragment!r}")
        if status != 200:
            assert "error" in body, body
        assert server.process.poll() is None, f"the server died on {label}: {server.process.stderr.read()[-2000:]}"
        assert_alive(server)
    hwm_end = vm_hwm_bytes(pid)
    print(f"VmHWM {hwm_start / MiB:.1f} MiB at start, {hwm_end / MiB:.1f} MiB after {len(CORPUS)} hostile queries")
    assert not failures, "\n".join(failures)
    bound = MEMORY_LIMIT + MARGIN
    assert hwm_end <= bound, f"VmHWM {hwm_end / MiB:.1f} MiB > {bound / MiB:.0f} MiB (pool + margin)"


HUGE_RESULTS = [
    "SELECT * FROM generate_series(1, 10000000000)",
    "SELECT a.value, b.value FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b",
    "SELECT repeat('x', 1000) AS s FROM generate_series(1, 1000000000)",
]


def read_streamed(server, query, fmt):
    """POST `query`; read the answer in chunks, keeping only its size and last bytes. Returns
    (status, bytes read, last bytes, whether the body was cut)."""
    request = urllib.request.Request(server.http + f"/sql?format={fmt}", data=query.encode(), method="POST")
    size, tail, cut = 0, b"", False
    with urllib.request.urlopen(request, timeout=60) as response:
        status = response.status
        try:
            while chunk := response.read(1 << 20):
                size += len(chunk)
                tail = (tail + chunk)[-64:]
        except (http.client.IncompleteRead, ConnectionError):
            cut = True
    return status, size, tail, cut


def test_huge_results_stream_and_are_cut_at_the_time_limit(server_factory):
    # Results are not collected: they stream, in bounded memory, until the time limit stops
    # them, and a stopped result is cut, never ended as if it were complete.
    server = server_factory(extra_config=QUERY_LIMITS).start()
    pid = server.process.pid
    for query in HUGE_RESULTS:
        for fmt in ("json", "csv", "arrow"):
            started = time.monotonic()
            status, size, tail, cut = read_streamed(server, query, fmt)
            took = time.monotonic() - started
            print(f"{fmt:5} {size / MiB:8.1f} MiB in {took:5.2f} s, cut={cut}, "
                  f"VmHWM {vm_hwm_bytes(pid) / MiB:6.1f} MiB: {query[:60]}")
            assert status == 200
            assert cut, f"{query} ({fmt}) ended after {size} bytes: the time limit should have cut it"
            assert size > MAX_RESULT, f"only {size} bytes streamed before the cut"
            if fmt == "json":
                assert not tail.rstrip().endswith(b"]"), "a cut JSON result must not look complete"
            assert_alive(server)
    hwm = vm_hwm_bytes(pid)
    bound = MEMORY_LIMIT + MARGIN
    assert hwm <= bound, f"VmHWM {hwm / MiB:.1f} MiB > {bound / MiB:.0f} MiB (pool + margin) while streaming"
    status, body = post(server, "SELECT count(*) AS n FROM (SELECT * FROM generate_series(1, 10000000000)) LIMIT 1")
    assert status == 400 and "timeout_s" in body["error"], body


def test_the_deepest_accepted_chain_is_planned_on_the_query_threads(server_factory):
    # The configuration's ceiling for max_operators: chains that long still plan (slowly:
    # DataFusion's planning time grows with the square of a chain's length).
    server = server_factory(extra_config="[query]\nmax_operators = 4096\ntimeout_s = 600\n").start()
    status, body = post(server, "SELECT " + chain("+", "1", 4095) + " AS n", timeout=600)
    assert (status, body) == (200, [{"n": 4095}]), (status, str(body)[:300])
    status, body = post(server, "SELECT count(*) AS n FROM generate_series(1, 10) WHERE "
                        + chain("AND", "value > 0", 2040), timeout=600)
    assert (status, body) == (200, [{"n": 10}]), (status, str(body)[:300])
    assert_alive(server)
    status, body = post(server, "SELECT " + chain("+", "1", 4097))
    assert status == 400 and "max_operators" in body["error"], body


def test_a_query_whose_client_hung_up_stops(server_factory):
    server = server_factory(extra_config="[query]\ntimeout_s = 600\n").start()
    pid = server.process.pid
    host, port = server.ready["http"].rsplit(":", 1)
    query = b"SELECT count(*) FROM generate_series(1, 100000000000)"
    client = socket.create_connection((host, int(port)), timeout=10)
    client.sendall(b"POST /sql HTTP/1.1\r\nHost: flowdaq\r\nContent-Type: text/plain\r\n"
                   + f"Content-Length: {len(query)}\r\n\r\n".encode() + query)
    # Wait (bounded) until the query is visibly running: the server burns CPU.
    before = cpu_seconds(pid)
    for _ in range(200):
        time.sleep(0.05)
        if cpu_seconds(pid) - before >= 0.5:
            break
    else:
        pytest.fail("the query never started using the CPU")
    client.close()
    # Give the server time to notice the closed connection, then measure a quiet interval.
    settled = False
    for _ in range(20):
        mark = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - mark < 0.1:
            settled = True
            break
    assert settled, "the query kept running after its client hung up"
    assert_alive(server)
