"""Bluesky ingest: a real RunEngine with ophyd.sim devices publishes its documents to flowdaq's
[bluesky] socket through bluesky's own Publisher; runs, readings, spectra and PL features are
then checked in SQL against the documents the RunEngine emitted."""

import json
import pickle
import re
import subprocess
import sys

import msgpack
import msgpack_numpy
import numpy as np
import pytest
import zmq
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher
from bluesky.plans import count, scan
from bluesky.preprocessors import SupplementalData
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis, SynSignal

from conftest import ROOT, vm_hwm_bytes

PIXELS = 2048
WAVELENGTH_NM = np.linspace(400.0, 700.0, PIXELS)
PEAK_AT_ZERO_NM = 500.0
NM_PER_MOTOR_UNIT = 10.0

BLUESKY_CONFIG = """
[bluesky]
listen = "tcp://127.0.0.1:0"
prefix = "lab"
run_id_key = "sample"
condition_key = "condition"
[[bluesky.spectra]]
data_key = "spectrometer_intensity"
wavelength_key = "spectrometer_wavelength"
source = "spectrometer-bs"
integration_time_key = "spectrometer_exposure_time"
"""


def make_devices():
    """A motor that shifts the emission, and a 2048-pixel spectrometer whose PL peak sits at
    500 nm + 10 nm per motor unit (a Gaussian of 8 nm sigma over a flat background)."""
    motor = SynAxis(name="motor")

    def spectrum():
        center = PEAK_AT_ZERO_NM + NM_PER_MOTOR_UNIT * motor.readback.get()
        return 50.0 + 1000.0 * np.exp(-0.5 * ((WAVELENGTH_NM - center) / 8.0) ** 2)

    class Spectrometer(Device):
        intensity = Cpt(SynSignal, func=spectrum, kind="hinted")
        wavelength = Cpt(Signal, value=WAVELENGTH_NM, kind="config")
        exposure_time = Cpt(Signal, value=0.1, kind="config")

        def trigger(self):
            # A Device does not trigger its signals by itself: acquire a new spectrum.
            return self.intensity.trigger()

    spectrometer = Spectrometer(name="spectrometer")
    temperature = Signal(name="bath_temperature", value=24.5)
    return motor, spectrometer, temperature


# As docs/bluesky.md and the pickle refusal tell a lab to make it.
MSGPACK_NUMPY = msgpack_numpy.packb


@pytest.fixture
def publishers():
    """Publishers made by a test, closed at its end without waiting for unsent documents."""
    made = []
    yield made
    for publisher in made:
        publisher._socket.setsockopt(zmq.LINGER, 0)
        publisher.close()


def connect_publisher(server, serializer, made, prefix=b"lab", address=None, probes=500):
    """bluesky's Publisher pointed at flowdaq, once flowdaq's SUB has subscribed to it.

    A PUB socket drops what it sends before the subscriber's subscription arrives, so a probe
    of another prefix is sent through the Publisher's own socket until flowdaq has counted it
    (bounded: `probes` probes, each waited for 10 ms).
    """
    publisher = Publisher(address or server.ready["bluesky"], prefix=prefix, serializer=serializer)
    made.append(publisher)
    before = server.metrics()["bluesky"]["other_prefix_documents"]
    for _ in range(probes):
        publisher._socket.send(b"probe start {}")
        try:
            server.wait_for(lambda m: m["bluesky"]["other_prefix_documents"] > before, "probe",
                            attempts=1)
            return publisher
        except AssertionError:
            continue
    raise AssertionError("flowdaq never received a document from the Publisher")


def processed_after(server, count):
    return server.wait_for(lambda m: m["messages_processed"] >= count, f"{count} messages processed")


def wire_messages(documents, spectra_data_key="spectrometer_intensity"):
    """Wire messages the documents become: one per run-level document, and per event one for
    its spectrum (if it has one) and one for its scalar readings (if it has any)."""
    total = 0
    for name, doc in documents:
        if name == "event":
            keys = set(doc["data"])
            total += (spectra_data_key in keys) + bool(keys - {spectra_data_key})
        else:
            total += 1
    return total


def test_a_runengine_scan_lands_in_sql_with_run_metadata_readings_and_pl_features(server_factory, publishers):
    server = server_factory(extra_config=BLUESKY_CONFIG).start()
    motor, spectrometer, temperature = make_devices()
    publisher = connect_publisher(server, MSGPACK_NUMPY, publishers)
    documents = []
    engine = RunEngine({})
    engine.subscribe(publisher)
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    engine.preprocessors.append(SupplementalData(baseline=[temperature]))

    (scan_uid,) = engine(scan([spectrometer], motor, 0, 4, 5), sample="CsPbBr3 batch 7",
                         condition="cond-7")
    (count_uid,) = engine(count([spectrometer], num=2), sample="CsPbBr3 batch 8")
    processed_after(server, wire_messages(documents))

    metrics = server.metrics()
    bluesky = metrics["bluesky"]
    assert bluesky["start_documents"] == 2 and bluesky["stop_documents"] == 2, bluesky
    assert bluesky["refused_documents"] == 0 and bluesky["open_runs"] == 0, bluesky
    assert metrics["messages_rejected"] == 0, metrics
    for source in ("bluesky", "spectrometer-bs"):
        stats = metrics["sources"][source]
        # Two runs and two streams per run: each is its own counter, nothing lost or reversed.
        assert stats["seq_regressions"] == 0 and stats["missing_messages"] == 0, (source, stats)

    runs = server.sql_arrow(
        "SELECT document, run_id, condition_id, run_uid, document_uid, plan_name, scan_id, "
        "exit_status, body_json FROM runs ORDER BY run_uid = '%s' DESC, seq" % scan_uid
    ).to_pylist()
    scan_runs = [r for r in runs if r["run_uid"] == scan_uid]
    assert [r["document"] for r in scan_runs] == ["start", "descriptor", "descriptor", "stop"]
    start, stop = scan_runs[0], scan_runs[-1]
    assert start["run_id"] == "CsPbBr3_batch_7" and start["condition_id"] == "cond-7"
    assert start["plan_name"] == "scan" and start["scan_id"] == 1
    assert start["document_uid"] == scan_uid
    assert json.loads(start["body_json"])["sample"] == "CsPbBr3 batch 7"
    assert stop["exit_status"] == "success"
    descriptor_names = sorted(json.loads(r["body_json"])["name"] for r in scan_runs[1:3])
    assert descriptor_names == ["baseline", "primary"]
    count_runs = [r for r in runs if r["run_uid"] == count_uid]
    assert count_runs[0]["run_id"] == "CsPbBr3_batch_8" and count_runs[0]["condition_id"] is None
    assert count_runs[0]["scan_id"] == 2 and count_runs[-1]["exit_status"] == "success"

    # Spectra: the event's array, stored as float32, one row per event, seq = seq_num.
    primary = next(d for n, d in documents if n == "descriptor" and d["run_start"] == scan_uid
                   and d["name"] == "primary")
    events = [d for n, d in documents if n == "event" and d["descriptor"] == primary["uid"]]
    spectra = server.sql_arrow(
        "SELECT s.seq, s.run_id, s.integration_time_ms, s.intensity_counts, c.wavelength_nm "
        "FROM spectra s JOIN spectral_calibrations c USING (source, calibration_id) "
        "WHERE s.source = 'spectrometer-bs' AND s.run_id = 'CsPbBr3_batch_7' ORDER BY s.seq"
    ).to_pylist()
    assert [s["seq"] for s in spectra] == [e["seq_num"] for e in events] == [1, 2, 3, 4, 5]
    for row, event in zip(spectra, events):
        expected = np.asarray(event["data"]["spectrometer_intensity"], dtype=np.float32)
        assert np.array_equal(np.asarray(row["intensity_counts"], dtype=np.float32), expected)
        assert np.array_equal(row["wavelength_nm"], WAVELENGTH_NM)
        assert row["integration_time_ms"] == 100.0

    # PL features of every spectrum, tagged with the run's condition.
    features = server.sql_arrow(
        "SELECT seq, condition_id, peak_wavelength_nm FROM spectral_features "
        "WHERE source = 'spectrometer-bs' AND run_id = 'CsPbBr3_batch_7' ORDER BY seq"
    ).to_pylist()
    assert len(features) == 5
    for row, event in zip(features, events):
        expected_nm = PEAK_AT_ZERO_NM + NM_PER_MOTOR_UNIT * event["data"]["motor"]
        assert abs(row["peak_wavelength_nm"] - expected_nm) < 0.2, (row, expected_nm)
        assert row["condition_id"] == "cond-7"

    # Scalar readings in long form: every number of every event, per stream.
    readings = server.sql_arrow(
        "SELECT stream_name, seq, data_key, value, event_time_ns, reading_time_ns FROM readings "
        "WHERE run_id = 'CsPbBr3_batch_7' ORDER BY stream_name, seq, data_key"
    ).to_pylist()
    expected = []
    for name, doc in documents:
        if name != "event":
            continue
        descriptor = next(d for n, d in documents if n == "descriptor" and d["uid"] == doc["descriptor"])
        if descriptor["run_start"] != scan_uid:
            continue
        for key, value in doc["data"].items():
            if key != "spectrometer_intensity":
                expected.append((descriptor["name"], doc["seq_num"], key, float(value)))
    got = [(r["stream_name"], r["seq"], r["data_key"], r["value"]) for r in readings]
    assert got == sorted(expected)
    assert {r["data_key"] for r in readings} == {"motor", "motor_setpoint", "bath_temperature"}
    # The worked queries of docs/bluesky.md run as written and answer from these runs.
    guide = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "bluesky.md").read_text(), flags=re.S)
    queries = [q for block in guide for q in block.split(";") if q.strip()]
    assert len(queries) == 3, queries
    started = server.sql_arrow(queries[0]).to_pylist()
    assert [(r["run_id"], r["exit_status"]) for r in started] == [
        ("CsPbBr3_batch_7", "success"), ("CsPbBr3_batch_8", "success")]
    peaks = server.sql_arrow(queries[1]).to_pylist()
    assert [(r["motor_mm"], round(r["peak_wavelength_nm"])) for r in peaks] == [
        (float(m), 500 + 10 * m) for m in range(5)]
    samples = sorted(r["sample"] for r in server.sql_arrow(queries[2]).to_pylist())
    assert samples == ["CsPbBr3 batch 7", "CsPbBr3 batch 8"]

    first = events[0]
    first_motor = next(r for r in readings if r["data_key"] == "motor" and r["seq"] == 1
                       and r["stream_name"] == "primary")
    assert abs(first_motor["event_time_ns"].timestamp() - first["time"]) < 1e-5
    # Each reading also keeps the time its device reported for it.
    assert abs(first_motor["reading_time_ns"].timestamp() - first["timestamps"]["motor"]) < 1e-5


def test_refused_documents_are_kept_aside_and_the_runs_around_them_still_land(server_factory, publishers):
    server = server_factory(extra_config=BLUESKY_CONFIG).start()

    # bluesky's default serializer, pickle: refused with the way out.
    pickled = connect_publisher(server, pickle.dumps, publishers)
    pickled("start", {"uid": "0b1e6c9e-1111-4c7b-9a51-1f2b0e6b0a01", "time": 1.0})
    processed_after(server, 1)

    # JSON documents written by hand: an event of a descriptor flowdaq never saw, then a run
    # with an event_page whose seq_nums skip one, an external (file-backed) key, its resource
    # and datum, and a reading that failed (NaN).
    publisher = connect_publisher(server, lambda doc: json.dumps(doc).encode(), publishers)
    run_uid = "7d3f0c52-2c1f-4d8e-9a3e-3d8b1c2a9f10"
    descriptor_uid = "9f1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
    documents = [
        ("event", {"uid": "e0", "descriptor": "00000000-dead-4bee-8f00-000000000000", "seq_num": 1,
                   "time": 10.0, "data": {"x": 1.0}, "timestamps": {"x": 10.0}, "filled": {}}),
        ("start", {"uid": run_uid, "time": 100.0, "plan_name": "grid", "sample": "QD-12"}),
        ("descriptor", {"uid": descriptor_uid, "run_start": run_uid, "time": 100.1, "name": "primary",
                        "data_keys": {
                            "temperature": {"dtype": "number", "shape": [], "source": "SIM:t", "units": "degC"},
                            "camera_image": {"dtype": "array", "shape": [512, 512], "source": "SIM:cam",
                                             "external": "FILESTORE:"},
                            "state": {"dtype": "string", "shape": [], "source": "SIM:state"},
                        }}),
        ("resource", {"uid": "res-1", "run_start": run_uid, "spec": "AD_HDF5", "root": "/data",
                      "resource_path": "run7.h5", "resource_kwargs": {}, "path_semantics": "posix"}),
        ("datum", {"datum_id": "res-1/0", "resource": "res-1", "datum_kwargs": {"point_number": 0}}),
        ("event_page", {"descriptor": descriptor_uid, "seq_num": [1, 2, 4], "time": [101.0, 102.0, 104.0],
                        "uid": ["p1", "p2", "p4"],
                        "data": {"temperature": [25.0, "NaN", 25.5], "camera_image": ["res-1/0", "res-1/1", "res-1/3"],
                                 "state": ["idle", "busy", "idle"]},
                        "timestamps": {"temperature": [101.0, 102.0, 104.0], "camera_image": [101.0, 102.0, 104.0],
                                       "state": [101.0, 102.0, 104.0]},
                        "filled": {}}),
        ("stop", {"uid": "stop-1", "run_start": run_uid, "time": 105.0, "exit_status": "abort",
                  "reason": "user pressed stop", "num_events": {"primary": 4}}),
    ]
    for name, doc in documents:
        publisher(name, doc)
    # pickle (1) + orphan event (1) + start, descriptor, resource, datum, 3 readings, stop (8)
    metrics = processed_after(server, 1 + 1 + 8)
    assert metrics["bluesky"]["refused_documents"] == 2, metrics["bluesky"]

    errors = server.sql_arrow(
        "SELECT transport, reason, first_bytes FROM ingest_errors ORDER BY arrival_time_ns").to_pylist()
    assert [e["transport"] for e in errors] == ["bluesky", "bluesky"]
    assert "pickled" in errors[0]["reason"] and "serializer=" in errors[0]["reason"]
    assert errors[0]["first_bytes"].startswith(b"lab start \x80")
    assert "descriptor" in errors[1]["reason"] and "unknown" in errors[1]["reason"]

    runs = server.sql_arrow(
        "SELECT document, run_id, document_uid, exit_status, reason FROM runs ORDER BY seq").to_pylist()
    assert [r["document"] for r in runs] == ["start", "descriptor", "resource", "datum", "stop"]
    assert {r["run_id"] for r in runs} == {"QD-12"}
    assert runs[3]["document_uid"] == "res-1/0"
    assert runs[4]["exit_status"] == "abort" and runs[4]["reason"] == "user pressed stop"

    readings = server.sql_arrow(
        "SELECT seq, data_key, value, value_text, units FROM readings ORDER BY seq, data_key").to_pylist()
    got = [(r["seq"], r["data_key"], r["value"], r["value_text"], r["units"]) for r in readings]
    assert got == [
        (1, "camera_image", None, "res-1/0", None),
        (1, "state", None, "idle", None),
        (1, "temperature", 25.0, None, "degC"),
        (2, "camera_image", None, "res-1/1", None),
        (2, "state", None, "busy", None),
        (2, "temperature", None, "NaN", "degC"),
        (4, "camera_image", None, "res-1/3", None),
        (4, "state", None, "idle", None),
        (4, "temperature", 25.5, None, "degC"),
    ]
    stats = server.metrics()["sources"]["bluesky"]
    assert stats["missing_messages"] == 1 and stats["gaps"] == 1, stats


def test_a_document_sent_on_a_raw_pub_socket_with_a_second_frame_is_refused(server_factory):
    """Not what a Publisher sends: a two-frame message. Refused, counted, the server goes on."""
    server = server_factory(extra_config=BLUESKY_CONFIG).start()
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(server.ready["bluesky"])
    try:
        for _ in range(500):
            pub.send_multipart([b"lab start", b"{}"])
            try:
                server.wait_for(lambda m: m["bluesky"]["refused_documents"] > 0, "refusal", attempts=1)
                break
            except AssertionError:
                continue
        # The refusal is counted when it is read; its ingest_errors row is queryable once the
        # message is processed (committed).
        server.wait_processed(1)
        errors = server.sql_arrow("SELECT reason FROM ingest_errors LIMIT 1").to_pylist()
        assert errors and "one frame" in errors[0]["reason"], errors
        assert server.process.poll() is None
    finally:
        pub.close()


def start_proxy(in_address="tcp://127.0.0.1", out_address="tcp://127.0.0.1"):
    """bluesky's own 0MQ Proxy in a child process, and the endpoints it bound."""
    proxy = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from bluesky.callbacks.zmq import Proxy\n"
         "p = Proxy(in_address=sys.argv[1], out_address=sys.argv[2])\n"
         "print(p.in_port, p.out_port, flush=True)\n"
         "p.start()\n", in_address, out_address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proxy.stdout.readline()
    if not line:
        proxy.kill()
        raise AssertionError(f"the proxy did not start: {proxy.stderr.read()}")
    # The ports as the proxy reports them: endpoints, tcp://127.0.0.1:<port>.
    in_endpoint, out_endpoint = line.split()
    return proxy, in_endpoint, out_endpoint


def run_count(server, publisher, sample, num=3):
    """A count plan of the simulated spectrometer published through `publisher`; waits until
    flowdaq processed its messages."""
    _, spectrometer, _ = make_devices()
    documents = []
    engine = RunEngine({})
    engine.subscribe(publisher)
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    before = server.metrics()["messages_processed"]
    engine(count([spectrometer], num=num), sample=sample)
    processed_after(server, before + wire_messages(documents))


def test_documents_through_a_bluesky_0mq_proxy_land_too_after_the_proxy_restarts(server_factory, publishers):
    """flowdaq SUB-connects to a running bluesky-0MQ-proxy (bluesky's own Proxy class, on
    loopback ports it chose) instead of binding a socket of its own; when the proxy is killed
    and started again on the same ports, flowdaq reconnects by itself."""
    proxy, in_endpoint, out_endpoint = start_proxy()
    try:
        config = BLUESKY_CONFIG.replace('listen = "tcp://127.0.0.1:0"', f'connect = ["{out_endpoint}"]')
        server = server_factory(extra_config=config).start()
        assert server.ready["bluesky"] is None  # nothing bound: only connected
        publisher = connect_publisher(server, MSGPACK_NUMPY, publishers, address=in_endpoint)
        run_count(server, publisher, "via proxy")

        proxy.kill()
        proxy.wait(timeout=30)
        proxy, _, _ = start_proxy(in_endpoint, out_endpoint)
        publisher = connect_publisher(server, MSGPACK_NUMPY, publishers, address=in_endpoint, probes=3000)
        run_count(server, publisher, "after restart", num=2)
        rows = server.sql_arrow(
            "SELECT run_id, count(*) AS n FROM spectral_features GROUP BY run_id ORDER BY run_id").to_pylist()
        assert rows == [{"run_id": "after_restart", "n": 2}, {"run_id": "via_proxy", "n": 3}]
    finally:
        proxy.kill()
        proxy.wait(timeout=30)


def hostile_documents(rng):
    """(name, frame) pairs that break Bluesky's framing, its serializers or the event model: random
    bytes, cut and bit-flipped msgpack of real documents, absurd nesting and declared sizes, wrong
    types in every field the translator reads, numpy maps that lie, orphans."""
    run, descriptor = "5e1f0c52-2c1f-4d8e-9a3e-3d8b1c2a9f10", "6a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
    real = [
        ("start", {"uid": run, "time": 1.0, "plan_name": "scan", "scan_id": 1}),
        ("descriptor", {"uid": descriptor, "run_start": run, "time": 1.0, "name": "primary",
                        "data_keys": {"spectrometer_intensity": {"dtype": "array", "shape": [64], "source": "s"},
                                      "x": {"dtype": "number", "shape": [], "source": "x"}},
                        "configuration": {"spectrometer": {"data": {"spectrometer_wavelength": np.linspace(400, 700, 64)}}}}),
        ("event", {"uid": "e", "descriptor": descriptor, "seq_num": 1, "time": 2.0,
                   "data": {"spectrometer_intensity": np.ones(64), "x": 1.0}, "timestamps": {"x": 2.0}}),
        ("stop", {"uid": "s", "run_start": run, "time": 3.0, "exit_status": "success"}),
    ]
    packed = [(name, msgpack_numpy.packb(doc)) for name, doc in real]
    cases = []
    for _ in range(600):
        cases.append(("random", b"lab " + rng.bytes(int(rng.integers(0, 400)))))
    for _ in range(600):
        name, body = packed[int(rng.integers(len(packed)))]
        cut = body[: int(rng.integers(0, len(body)))]
        cases.append(("cut", b"lab " + name.encode() + b" " + cut))
    for _ in range(1200):
        name, body = packed[int(rng.integers(len(packed)))]
        flipped = bytearray(body)
        for _ in range(int(rng.integers(1, 6))):
            flipped[int(rng.integers(len(flipped)))] ^= 1 << int(rng.integers(8))
        cases.append(("flipped", b"lab " + name.encode() + b" " + bytes(flipped)))
    wrong_types = [
        ("start", {"uid": 7}), ("start", {"uid": "../../etc"}), ("start", {"time": "now"}),
        ("descriptor", {"uid": descriptor, "run_start": "nope", "data_keys": {}}),
        ("descriptor", {"uid": descriptor, "run_start": run, "data_keys": [1, 2]}),
        ("event", {"descriptor": descriptor, "seq_num": "1", "time": 1.0, "data": {}}),
        ("event", {"descriptor": descriptor, "seq_num": 1, "time": 1.0, "data": [1]}),
        ("event_page", {"descriptor": descriptor, "seq_num": [1, 2], "time": [1.0], "data": {"x": [1]}}),
        ("event_page", {"descriptor": descriptor, "seq_num": 5, "time": 1.0, "data": {}}),
        ("stop", {"run_start": 12}), ("datum", {"resource": "none", "datum_id": "d"}),
        ("bulk_events", {}), ("start", []), ("start", "text"),
    ]
    for name, doc in wrong_types * 40:
        cases.append(("wrong-type", b"lab " + name.encode() + b" " + json.dumps(doc).encode()))
    deep = b"\x81\xa1x" + b"\x91" * 50_000 + b"\xc0"
    claims = b"\x81\xa1x\xdd\xff\xff\xff\xff"
    lying_numpy = msgpack.packb({"x": {b"nd": True, b"type": "<f8", b"shape": [1 << 40], b"data": b"\0" * 8}})
    odd_dtype = msgpack.packb({"x": {b"nd": True, b"type": "<U8", b"shape": [1], b"data": b"\0" * 32}})
    for body in (deep, claims, lying_numpy, odd_dtype) * 50:
        cases.append(("declared", b"lab event " + body))
    rng.shuffle(cases)
    return cases


def test_a_hostile_document_corpus_is_refused_and_kept_aside_and_good_runs_still_land(server_factory, publishers):
    """About 3,000 hostile Bluesky frames on one PUB socket: the server stays up within its memory
    bound, every refusal is an ingest_errors row, every frame is accounted for, and a real run
    sent right after lands whole."""
    rng = np.random.default_rng(0xB1E5)
    cases = hostile_documents(rng)
    server = server_factory(extra_config=BLUESKY_CONFIG).start()
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)  # queue rather than drop: every frame must arrive
    pub.connect(server.ready["bluesky"])
    try:
        for _ in range(500):  # the subscription must have arrived before the corpus is sent
            pub.send(b"probe start {}")
            try:
                server.wait_for(lambda m: m["bluesky"]["other_prefix_documents"] > 0, "probe", attempts=1)
                break
            except AssertionError:
                continue
        probes = server.metrics()["bluesky"]["other_prefix_documents"]
        for _, frame in cases:
            pub.send(frame)

        def seen(m):
            b = m["bluesky"]
            return (b["start_documents"] + b["descriptor_documents"] + b["events"] + b["stop_documents"]
                    + b["external_reference_documents"] + b["refused_documents"] + b["other_prefix_documents"])

        # Bit flips can turn a frame into another prefix, a valid document or an event_page of
        # several events: every frame is seen, in one of these counters, at least once.
        metrics = server.wait_for(lambda m: seen(m) >= probes + len(cases), "every hostile frame", attempts=3000)
        assert server.process.poll() is None
        refused = metrics["bluesky"]["refused_documents"]
        assert refused >= len(cases) * 0.9, metrics["bluesky"]
        # Each refusal is a message to the pipeline: rejected at screening, then committed.
        server.wait_for(lambda m: m["messages_rejected"] >= refused
                        and m["messages_processed"] >= m["messages_received"], "refusals committed")
        errors = server.sql_arrow("SELECT count(*) AS n FROM ingest_errors WHERE transport = 'bluesky'").to_pylist()
        # A document refused in part (one of an event_page's events) is one row per part.
        assert errors[0]["n"] >= refused, (errors, refused)
        hwm_kb = vm_hwm_bytes(server.process.pid) // 1024
        assert hwm_kb < 1 << 20, f"VmHWM {hwm_kb} kB"
        print(f"\n[bluesky hostile] {len(cases)} frames, {refused} refused, VmHWM {hwm_kb / 1024:.0f} MiB")
    finally:
        pub.close()

    motor, spectrometer, _ = make_devices()
    publisher = connect_publisher(server, MSGPACK_NUMPY, publishers)
    documents = []
    engine = RunEngine({})
    engine.subscribe(publisher)
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    before = server.metrics()["messages_processed"]
    engine(count([spectrometer], num=4), sample="after the storm")
    processed_after(server, before + wire_messages(documents))
    rows = server.sql_arrow(
        "SELECT count(*) AS n FROM spectral_features WHERE run_id = 'after_the_storm'").to_pylist()
    assert rows == [{"n": 4}]
