"""`GET /metrics` in the Prometheus text format, parsed by `prometheus_client`'s own parser,
against a real `flowdaq serve`: names follow Prometheus conventions, and the values agree with
what was sent (messages, rows, a sequence gap per source, refused and timed-out queries).
"""

import urllib.request

import numpy as np
import zmq
from prometheus_client.parser import text_string_to_metric_families

from flowdaq.wire import spectrum_frames


def scrape(server):
    request = urllib.request.Request(server.http + "/metrics", headers=server.headers())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return list(text_string_to_metric_families(response.read().decode()))


def samples(families):
    """{(sample name, frozenset of labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }


def test_metrics_parse_as_prometheus_text_and_count_what_happened(server_factory):
    server = server_factory(extra_config="[query]\ntimeout_s = 1\n").start()
    wavelength_nm = np.linspace(400.0, 700.0, 32)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    sent_seqs = [0, 1, 2, 5, 6]  # 3 and 4 never arrive: one gap of two messages
    for seq in sent_seqs:
        push.send_multipart(spectrum_frames("spec-gap", seq, wavelength_nm, np.ones(32, dtype="<f4")))
    server.wait_processed(len(sent_seqs))
    push.close(linger=0)
    context.term()
    assert server.sql_http("DROP TABLE spectra")[0] == 400
    assert server.sql_http("SELECT count(*) FROM generate_series(1, 10000000000)")[0] == 400

    families = scrape(server)
    for family in families:
        assert family.name.startswith("flowdaq_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family
        assert family.documentation, f"{family.name} has no help text"
    values = samples(families)
    source = frozenset({("source", "spec-gap"), ("transport", "pull")})
    assert values[("flowdaq_ingest_messages_received_total", frozenset())] == len(sent_seqs)
    # Rows made durable: the spectra, their feature rows and the calibration stored once.
    assert values[("flowdaq_ingest_rows_total", frozenset())] == 2 * len(sent_seqs) + 1
    assert values[("flowdaq_source_rows_total", source)] == len(sent_seqs)
    assert values[("flowdaq_source_messages_total", source)] == len(sent_seqs)
    assert values[("flowdaq_source_missing_messages_total", source)] == 2
    assert values[("flowdaq_source_gaps_total", source)] == 1
    assert values[("flowdaq_source_last_seq", source)] == 6
    assert values[("flowdaq_query_errors_total", frozenset({("reason", "refused")}))] == 1
    assert values[("flowdaq_query_errors_total", frozenset({("reason", "timeout")}))] == 1
    assert values[("flowdaq_queries_total", frozenset())] >= 2
    assert values[("flowdaq_write_path_healthy", frozenset())] == 1
    assert values[("flowdaq_wal_group_commits_total", frozenset())] >= 1
    p99 = values[("flowdaq_ingest_receipt_to_durable_seconds", frozenset({("quantile", "0.99")}))]
    assert 0 < p99 < 60

    # The JSON view is the same counters.
    json_view = server.metrics()
    assert json_view["sources"]["spec-gap"]["missing_messages"] == 2
    assert json_view["query"]["timed_out"] == 1
