"""Every worked query of docs/sql.md runs, as written, against a real `flowdaq serve` holding
data in every table it reads (the demo's simulated instruments would take minutes; here a few
spectra, a condition and its registration are enough for the queries to return rows)."""

import re

import numpy as np
import zmq

from conftest import ROOT
from flowdaq import Client
from flowdaq.wire import histogram_frames, spectrum_frames


def worked_queries():
    text = (ROOT / "docs" / "sql.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


def test_every_worked_query_of_the_sql_guide_runs(server_factory):
    queries = worked_queries()
    assert len(queries) >= 8, "docs/sql.md lost its worked queries"
    server = server_factory().start()
    context = zmq.Context()
    client = Client(server.control, server.publish, context=context)
    client.register_condition("demo", "c-1", {"temperature": {"value": 140, "unit": "degC"}})
    push = context.socket(zmq.PUSH)
    push.connect(server.pull)
    wavelength_nm = np.linspace(400.0, 700.0, 64)
    counts = (1000.0 * np.exp(-0.5 * ((wavelength_nm - 520.0) / 12.0) ** 2) + 3.0).astype("<f4")
    for seq in range(4):
        push.send_multipart(spectrum_frames("spec-1", seq, wavelength_nm, counts, run_id="demo", condition_id="c-1"))
    # One fitted decay (tau 4 ns, 40 ps bins, 20 MHz) for the lifetime queries.
    rng = np.random.default_rng(2)
    t_ns = (rng.normal(3.0, 0.085, 200_000) + rng.exponential(4.0, 200_000)) % 50.0
    decay = np.bincount((t_ns / 0.04).astype(int), minlength=1250)[:1250]
    push.send_multipart(histogram_frames("tcspc-1", 0, decay, 40.0, 20e6, run_id="demo", condition_id="c-1"))
    server.wait_processed(5)
    push.close(linger=0)
    context.term()

    answered = {}
    for query in queries:
        status, body = server.sql_http(query)
        assert status == 200, f"{query}\n-> {status} {body[:500]!r}"
        answered[query.split("\n", 1)[0]] = body
    pixels = server.sql_arrow(queries[0])
    assert pixels.num_rows == 20 and pixels.column("wavelength_nm")[0].as_py() == 400.0
    per_condition = server.sql_arrow(queries[1]).to_pylist()
    assert [(r["condition_id"], r["spectra"]) for r in per_condition] == [("c-1", 4)], per_condition
    assert abs(per_condition[0]["peak_energy_ev"] - 1239.84193 / 520.0) < 0.01
    (newest_decay,) = [server.sql_arrow(q).to_pylist() for q in queries if "lifetime_model_counts" in q]
    assert len(newest_decay) == 1 and newest_decay[0]["bins"] == 1250, newest_decay
    assert abs(newest_decay[0]["tau_1_ns"] - 4.0) < 0.1
    assert abs(newest_decay[0]["model_peak_counts"] - decay.max()) < 5 * np.sqrt(decay.max()), newest_decay
    parameters = server.sql_arrow(queries[3]).to_pylist()
    assert parameters == [{"run_id": "demo", "condition_id": "c-1", "name": "temperature", "value": 140.0,
                           "unit": "degC"}], parameters
