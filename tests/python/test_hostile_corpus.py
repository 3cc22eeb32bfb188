"""A hostile corpus against a real server: more than 10,000 messages over PULL, SUB and ROUTER
that break every rule of docs/wire-protocol.md, each alone and mixed in between good spectra.

The server must survive, store every good message exactly once, refuse every bad one with a
reason (a row of `ingest_errors`; for a DEALER sender also a nack naming the message whenever its
header parsed), stay within a memory bound read from the kernel (`VmHWM`), and stay responsive
after a burst of hostile Arrow IPC payloads.

The attack runs once (a module fixture) and each test checks one promise, so a failure names the
promise and, through the case names, the messages that broke it. The corpus is generated from a
seeded `random.Random`, so every run sends the same bytes. Waiting is always on something the
server reports (/metrics, DEALER replies), bounded.
"""

import json
import random
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest
import zmq

from conftest import Server, flowdaq_bin, vm_hwm_bytes
from flowdaq.wire import spectrum_frames

SEED = 0x5EED_2026
PIXELS = 2048
MAX_MESSAGE_BYTES = 1 << 20  # ingest.max_message_bytes of the attacked server
OVERSIZED_BYTES = 2 << 20  # what the oversized cases send
REPEATS = 15  # times each bad case is sent over each socket
FEW_REPEATS = 2  # ... except the 2 MiB ones and the continuation-marker IPC payloads (sent in a
#   burst of their own first): a server that allocates what those declare spends GiBs on each
ROUND = 150  # corpus messages per socket between two pacing waits
IPC_BURST = 72  # random continuation-marker IPC payloads sent alone, before the corpus
MEMORY_BOUND_KB = 1 << 20  # VmHWM at the end: 1 GiB
IPC_GROWTH_BOUND_KB = 64 << 10  # VmHWM growth over the IPC burst: 64 MiB
RESPONSE_BOUND_S = 10.0  # a good message after the IPC burst is acknowledged within this
WAIT_S = 120.0  # bound on every wait for something lossless (PUSH, DEALER)
PUB_WAIT_S = 5.0  # bound on the wait for a PUB message, which may have been dropped
HYDRAHARP_V2_T3 = 0x01010304

SOCKETS = ("push", "dealer", "pub")
TRANSPORT = {"push": "pull", "dealer": "router", "pub": "sub"}  # the server's name for each
GOOD_SOURCES = {s: [f"good-{s}-{x}" for x in "abc"] for s in SOCKETS}
GOOD_SOURCES["push"].append("g" * 128)  # the longest valid source name is good
HOSTILE_SOURCE = {s: f"hostile-{s}" for s in SOCKETS}
PROBE_SOURCE = "pub-probe"


# ---------------------------------------------------------------------------------------------
# Building blocks of the corpus
# ---------------------------------------------------------------------------------------------


def enc(value):
    return json.dumps(value).encode()


def ipc_bytes(columns):
    """An Arrow IPC stream (schema + one batch) of `columns` (name -> pyarrow array)."""
    batch = pa.record_batch(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def ipc_schema_only(schema):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    return sink.getvalue().to_pybytes()


class Blocks:
    """Frames the cases share (built once; the random ones are drawn per message)."""

    def __init__(self, rng):
        np_rng = np.random.default_rng(rng.getrandbits(32))
        self.axis = np.linspace(350.0, 1000.0, PIXELS)
        self.axis_bytes = self.axis.astype("<f8").tobytes()
        self.counts = [np_rng.uniform(0.0, 60000.0, PIXELS).astype("<f4") for _ in range(8)]
        self.counts_bytes = self.counts[0].tobytes()
        axes = pa.array([self.axis] * 2, type=pa.list_(pa.float64()))
        counts = pa.array([c for c in self.counts[:2]], type=pa.list_(pa.float32()))
        self.ipc_spectra = ipc_bytes({"wavelength_nm": axes, "intensity_counts": counts})
        self.ipc_extra_column = ipc_bytes(
            {"wavelength_nm": axes, "intensity_counts": counts, "colour": pa.array(["red", "blue"])})
        self.ipc_missing_counts = ipc_bytes({"wavelength_nm": axes})
        self.ipc_missing_axis = ipc_bytes({"intensity_counts": counts})
        self.ipc_string_counts = ipc_bytes({
            "wavelength_nm": axes,
            "intensity_counts": pa.array([["a"] * PIXELS, ["b"] * PIXELS], type=pa.list_(pa.string())),
        })
        self.ipc_flat_axis = ipc_bytes({
            "wavelength_nm": pa.array([400.0, 500.0]), "intensity_counts": counts})
        self.ipc_short_row = ipc_bytes({
            "wavelength_nm": axes,
            "intensity_counts": pa.array([self.counts[0], self.counts[1][:-1]], type=pa.list_(pa.float32())),
        })
        self.ipc_null_counts = ipc_bytes({
            "wavelength_nm": axes,
            "intensity_counts": pa.array([self.counts[0].tolist(), None], type=pa.list_(pa.float32())),
        })
        self.ipc_schema_only = ipc_schema_only(
            pa.schema([("wavelength_nm", pa.list_(pa.float64())), ("intensity_counts", pa.list_(pa.float32()))]))
        self.ipc_negative_photons = ipc_bytes({
            "macro_time_ps": pa.array([5, -1, 7], type=pa.int64()),
            "micro_time_ps": pa.array([1, 2, 3], type=pa.int32()),
            "channel": pa.array([0, 1, 0], type=pa.uint8()),
        })
        self.ipc_phase_extra = ipc_bytes({
            "sensor_a_volts": pa.array([0.1, 0.2], type=pa.float32()),
            "sensor_b_volts": pa.array([0.3, 0.4], type=pa.float32()),
            "sensor_c_volts": pa.array([0.5, 0.6], type=pa.float32()),
        })


class Parts:
    """What one case's builder gets: the randomness, the message's source and seq, the blocks."""

    def __init__(self, rng, blocks, source, seq):
        self.rng, self.blocks, self.source, self.seq = rng, blocks, source, seq

    def spectra_header(self):
        return {
            "protocol": 1, "source": self.source, "stream": "spectra", "seq": self.seq,
            "arrays": [{"name": "wavelength_nm", "dtype": "<f8", "shape": [PIXELS]},
                       {"name": "intensity_counts", "dtype": "<f4", "shape": [PIXELS]}],
            "meta": {"kind": "pl", "integration_time_ms": 10.0},
        }

    def spectra(self, mutate=None, payload=None):
        """A spectra message whose header `mutate` changed, with `payload` frames (default: a
        valid axis and spectrum)."""
        header = self.spectra_header()
        if mutate:
            mutate(header)
        if payload is None:
            payload = [self.blocks.axis_bytes, self.blocks.counts_bytes]
        return [enc(header), *payload]

    def axis_with(self, index, value):
        axis = self.blocks.axis.copy()
        axis[index] = value
        return axis.astype("<f8").tobytes()

    def counts_with(self, index, value, dtype="<f4"):
        counts = self.blocks.counts[0].astype(dtype)
        counts[index] = value
        return counts.tobytes()

    def photons(self, macro=(1, 2, 3), micro=(4, 5, 6), channel=(0, 1, 0), arrays=None, meta=None):
        macro = np.asarray(macro, "<i8")
        micro = np.asarray(micro, "<i4")
        channel = np.asarray(channel, "|u1")
        header = {
            "protocol": 1, "source": self.source, "stream": "photons", "seq": self.seq,
            "arrays": arrays or [{"name": "macro_time_ps", "dtype": "<i8", "shape": [len(macro)]},
                                 {"name": "micro_time_ps", "dtype": "<i4", "shape": [len(micro)]},
                                 {"name": "channel", "dtype": "|u1", "shape": [len(channel)]}],
        }
        if meta is not None:
            header["meta"] = meta
        frames = [enc(header), macro.tobytes(), micro.tobytes(), channel.tobytes()]
        return frames[: 1 + len(header["arrays"])]  # one frame per declared array

    def records(self, meta, dtype="<u4", extra_array=False):
        records = np.arange(1, 65, dtype="<u4")
        frame = records.astype(dtype).tobytes()
        arrays = [{"name": "records", "dtype": dtype, "shape": [len(records)]}]
        frames = [frame]
        if extra_array:
            arrays.append({"name": "channel", "dtype": "|u1", "shape": [len(records)]})
            frames.append(bytes(len(records)))
        header = {"protocol": 1, "source": self.source, "stream": "photons", "seq": self.seq,
                  "arrays": arrays, "meta": meta}
        return [enc(header), *frames]

    def phase(self, a=None, b=None, meta=None, dtype="<f4", a_shape=None):
        a = np.linspace(-1.0, 1.0, 256) if a is None else np.asarray(a, dtype=float)
        b = np.linspace(1.0, -1.0, 256) if b is None else np.asarray(b, dtype=float)
        header = {
            "protocol": 1, "source": self.source, "stream": "phase_traces", "seq": self.seq,
            "arrays": [{"name": "sensor_a_volts", "dtype": dtype, "shape": a_shape or [len(a)]},
                       {"name": "sensor_b_volts", "dtype": dtype, "shape": [len(b)]}],
            "meta": {"sample_rate_hz": 1.0e6} if meta is None else meta,
        }
        return [enc(header), a.astype(dtype).tobytes(), b.astype(dtype).tobytes()]

    def ipc(self, *payload, stream="spectra", meta=None):
        header = {"protocol": 1, "source": self.source, "stream": stream, "seq": self.seq,
                  "format": "arrow_ipc"}
        if meta is not None:
            header["meta"] = meta
        elif stream == "spectra":
            header["meta"] = {"kind": "pl", "integration_time_ms": 10.0}
        elif stream == "phase_traces":
            header["meta"] = {"sample_rate_hz": 1.0e6}
        return [enc(header), *payload]

    def continuation_108(self):
        """The 108-byte payload: a continuation marker, then a metadata length of 2 GiB - 1."""
        return b"\xff\xff\xff\xff" + (0x7FFFFFFF).to_bytes(4, "little") + self.rng.randbytes(100)

    def continuation_random(self):
        """A continuation marker, a huge declared metadata length, then a few random bytes."""
        length = self.rng.randrange(1 << 26, 1 << 31)
        return b"\xff\xff\xff\xff" + length.to_bytes(4, "little") + self.rng.randbytes(self.rng.randrange(0, 2048))


def header_as_list(header):
    """The header's values as a JSON array, in the order of the server's `Header` fields."""
    return [header["protocol"], header["source"], header["stream"], header["seq"], None, None, None, None,
            "arrays", header["arrays"], header["meta"], False]


def setter(path, value):
    """A header mutation that sets header[path...] = value."""
    def mutate(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def dropper(*path):
    def mutate(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


@dataclass(frozen=True)
class Case:
    """One way to break the protocol: `build(parts)` gives the frames; `header_parsed` says
    whether the server can read the header (the bad part is in the payload or meta), in which
    case its rejection must name the message's source and seq."""

    name: str
    header_parsed: bool
    build: object


def bad_cases():
    """Every bad case of the corpus, by name."""
    cases = []

    def case(name, header_parsed, build):
        cases.append(Case(name, header_parsed, build))

    def header(name, mutate):  # the header frame itself breaks a rule: it does not parse
        case(f"header: {name}", False, lambda p: p.spectra(mutate))

    def spectra(name, mutate=None, payload=None):  # the header parses; the bad part is after it
        case(f"spectra: {name}", True, lambda p: p.spectra(mutate, payload(p) if payload else None))

    # The header frame: not a header at all.
    case("empty message", False, lambda p: [b""])
    case("empty header frame before a payload", False, lambda p: [b"", p.blocks.axis_bytes])
    case("header not JSON", False, lambda p: [b'{"protocol": 1, "source": ', p.blocks.axis_bytes])
    case("header random bytes", False, lambda p: [p.rng.randbytes(p.rng.randrange(1, 300)), p.blocks.axis_bytes])
    case("header not UTF-8", False, lambda p: [
        p.spectra()[0].replace(p.source.encode(), b"bad\xff\xfe\xc3\x28"), p.blocks.axis_bytes, p.blocks.counts_bytes])
    case("header UTF-16", False,
         lambda p: [json.dumps(p.spectra_header()).encode("utf-16"), p.blocks.axis_bytes, p.blocks.counts_bytes])
    for name, text in [("array", b"[1, 2, 3]"), ("string", b'"spectra"'), ("number", b"42"),
                       ("null", b"null"), ("true", b"true"), ("empty object", b"{}")]:
        case(f"header JSON {name}, not a header object", False, lambda p, t=text: [t, p.blocks.axis_bytes])
    case("header nested in an object", False, lambda p: [enc({"header": p.spectra_header()})])
    # JSON, but not the objects the protocol describes, even though they carry the right values.
    case("header JSON array of the header's values in field order", False,
         lambda p: [enc(header_as_list(p.spectra_header())), p.blocks.axis_bytes, p.blocks.counts_bytes])
    header("array descriptors as JSON lists",
           lambda h: h.update(arrays=[[a["name"], a["dtype"], a["shape"]] for a in h["arrays"]]))
    header("stream as an object", setter(("stream",), {"spectra": None}))
    header("format as an object", setter(("format",), {"arrays": None}))
    case("header: duplicate key", False, lambda p: [
        p.spectra()[0].replace(b'"seq": ', b'"seq": 0, "seq": ', 1), p.blocks.axis_bytes, p.blocks.counts_bytes])
    case("header JSON followed by garbage", False, lambda p: [p.spectra()[0] + b" trailing", p.blocks.axis_bytes])

    # Required keys and their types.
    for key in ("protocol", "source", "stream", "seq"):
        header(f"missing {key}", dropper(key))
    for name, path, value in [
        ("protocol as a string", ("protocol",), "1"), ("protocol as a float", ("protocol",), 1.5),
        ("source as a number", ("source",), 42), ("source as a list", ("source",), ["a"]),
        ("stream as a number", ("stream",), 1), ("seq as a string", ("seq",), "7"),
        ("seq as a float", ("seq",), 7.5), ("seq as a whole float", ("seq",), 7.0),
        ("seq as a boolean", ("seq",), True), ("protocol as a whole float", ("protocol",), 1.0),
        ("meta as a list", ("meta",), ["kind", "pl"]), ("arrays as an object", ("arrays",), {"a": 1}),
        ("format as a number", ("format",), 1), ("end_of_stream as a string", ("end_of_stream",), "yes"),
        ("instrument_time_ns as a string", ("instrument_time_ns",), "now"),
        ("run_id as a number", ("run_id",), 5), ("array shape as a string", ("arrays", 0, "shape"), "2048"),
        ("array name as a number", ("arrays", 0, "name"), 3),
    ]:
        header(name, setter(path, value))
    header("array without dtype", dropper("arrays", 0, "dtype"))
    header("array without shape", dropper("arrays", 1, "shape"))
    header("unknown key in an array descriptor", setter(("arrays", 0, "unit"), "nm"))
    for version in (0, 2, -1, 2**32):
        header(f"protocol {version}", setter(("protocol",), version))
    for name, value in [("empty", ""), ("129 characters", "s" * 129), ("with a space", "bad source"),
                        ("with a slash", "a/b"), ("path traversal", "../etc"), ("leading dot", ".hidden"),
                        ("non-ASCII", "spektrometer-\u00fc"), ("NUL", "a\x00b"), ("newline", "a\nb")]:
        header(f"source {name}", setter(("source",), value))
    header("session with bad characters", setter(("session",), "s e s"))
    header("run_id with a leading dot", setter(("run_id",), ".run"))
    header("condition_id of 129 characters", setter(("condition_id",), "c" * 129))
    header("unknown stream", setter(("stream",), "video"))
    header("stream in capitals", setter(("stream",), "SPECTRA"))
    header("negative seq", setter(("seq",), -1))
    header("seq beyond u64", setter(("seq",), 2**64))
    header("unknown header key", setter(("colour",), "red"))
    header("unknown format", setter(("format",), "hdf5"))
    header("format arrays with no arrays", setter(("arrays",), []))
    header("format arrow_ipc with arrays descriptors", setter(("format",), "arrow_ipc"))
    for dtype in (">f4", ">f8", "<f16", "<U8", "|b1", "|O", "<c8", "f4", ""):
        header(f"dtype {dtype!r}", setter(("arrays", 1, "dtype"), dtype))
    header("axis dtype big-endian", setter(("arrays", 0, "dtype"), ">f8"))
    header("negative shape", setter(("arrays", 1, "shape"), [-PIXELS]))
    header("shape beyond u64", setter(("arrays", 1, "shape"), [2**64]))
    case("header: meta value NaN (not JSON)", False,
         lambda p: [p.spectra()[0].replace(b'"integration_time_ms": 10.0', b'"integration_time_ms": NaN'),
                    p.blocks.axis_bytes, p.blocks.counts_bytes])

    # Spectra meta.
    spectra("unknown meta key", setter(("meta", "colour"), "red"))
    spectra("meta without kind", dropper("meta", "kind"))
    spectra("meta kind unknown", setter(("meta", "kind"), "fluorescence"))
    spectra("meta kind a number", setter(("meta", "kind"), 3))
    spectra("meta without integration_time_ms", dropper("meta", "integration_time_ms"))
    for value in (0, -1.0, 3_600_001, 1e300, "10"):
        spectra(f"integration_time_ms {value!r}", setter(("meta", "integration_time_ms"), value))
    spectra("probe_position_mm absurd", setter(("meta", "probe_position_mm"), 1e7))
    spectra("empty meta", setter(("meta",), {}))
    # Arrays and frames.
    spectra("2 arrays declared, 1 frame", payload=lambda p: [p.blocks.axis_bytes])
    spectra("2 arrays declared, 3 frames", payload=lambda p: [p.blocks.axis_bytes, p.blocks.counts_bytes, b"\0" * 8])
    spectra("2 arrays declared, no frames", payload=lambda p: [])
    spectra("shape product overflows u64", setter(("arrays", 1, "shape"), [2**32, 2**32]))
    spectra("byte length overflows u64", setter(("arrays", 1, "shape"), [2**62]))
    spectra("huge declared shape, small frame", setter(("arrays", 1, "shape"), [2**20, PIXELS]))
    spectra("intensity frame short", payload=lambda p: [p.blocks.axis_bytes, p.blocks.counts_bytes[:-100]])
    spectra("intensity frame long", payload=lambda p: [p.blocks.axis_bytes, p.blocks.counts_bytes + b"\0" * 4])
    spectra("intensity frame empty", payload=lambda p: [p.blocks.axis_bytes, b""])
    spectra("axis frame short", payload=lambda p: [p.blocks.axis_bytes[:-8], p.blocks.counts_bytes])
    spectra("axis frame empty", payload=lambda p: [b"", p.blocks.counts_bytes])
    spectra("axis of integers", setter(("arrays", 0, "dtype"), "<i8"))
    spectra("axis two-dimensional", setter(("arrays", 0, "shape"), [2, PIXELS // 2]))
    spectra("axis not monotonic", payload=lambda p: [p.axis_with(100, 300.0), p.blocks.counts_bytes])
    spectra("axis constant", payload=lambda p: [np.full(PIXELS, 500.0).tobytes(), p.blocks.counts_bytes])
    spectra("axis NaN", payload=lambda p: [p.axis_with(7, np.nan), p.blocks.counts_bytes])
    spectra("axis infinite", payload=lambda p: [p.axis_with(-1, np.inf), p.blocks.counts_bytes])
    spectra("axis negative", payload=lambda p: [p.axis_with(0, -350.0), p.blocks.counts_bytes])
    spectra("axis zero", payload=lambda p: [p.axis_with(0, 0.0), p.blocks.counts_bytes])
    spectra("axis beyond 1e6 nm", payload=lambda p: [p.axis_with(-1, 2e6), p.blocks.counts_bytes])
    case("spectra: axis empty", True, lambda p: p.spectra(
        lambda h: (setter(("arrays", 0, "shape"), [0])(h), setter(("arrays", 1, "shape"), [0])(h)), [b"", b""]))
    spectra("intensity NaN", payload=lambda p: [p.blocks.axis_bytes, p.counts_with(11, np.nan)])
    spectra("intensity +inf", payload=lambda p: [p.blocks.axis_bytes, p.counts_with(0, np.inf)])
    spectra("intensity -inf", payload=lambda p: [p.blocks.axis_bytes, p.counts_with(-1, -np.inf)])
    case("spectra: intensity NaN as <f8", True, lambda p: p.spectra(
        setter(("arrays", 1, "dtype"), "<f8"), [p.blocks.axis_bytes, p.counts_with(5, np.nan, "<f8")]))
    case("spectra: intensity overflowing float32 (<f8 1e300)", True, lambda p: p.spectra(
        setter(("arrays", 1, "dtype"), "<f8"), [p.blocks.axis_bytes, p.counts_with(5, 1e300, "<f8")]))
    case("spectra: 2-D intensity with wrong pixel count", True, lambda p: p.spectra(
        setter(("arrays", 1, "shape"), [3, PIXELS - 1]), [p.blocks.axis_bytes, bytes(3 * (PIXELS - 1) * 4)]))
    case("spectra: 3-D intensity", True, lambda p: p.spectra(
        setter(("arrays", 1, "shape"), [1, 1, PIXELS]), [p.blocks.axis_bytes, p.blocks.counts_bytes]))
    case("spectra: zero spectra", True, lambda p: p.spectra(
        setter(("arrays", 1, "shape"), [0, PIXELS]), [p.blocks.axis_bytes, b""]))
    spectra("missing intensity array", dropper("arrays", 1), lambda p: [p.blocks.axis_bytes])
    spectra("missing axis array", dropper("arrays", 0), lambda p: [p.blocks.counts_bytes])
    spectra("unknown array", setter(("arrays", 1, "name"), "dark_counts"))
    spectra("duplicate array names", lambda h: h["arrays"][1].update(name="wavelength_nm", dtype="<f8"),
            lambda p: [p.blocks.axis_bytes, p.blocks.axis_bytes])
    for name, desc, frame in [
        ("instrument_time_ns of the wrong shape", {"name": "instrument_time_ns", "dtype": "<i8", "shape": [2]}, bytes(16)),
        ("instrument_time_ns of the wrong dtype", {"name": "instrument_time_ns", "dtype": "<f8", "shape": [1]}, bytes(8)),
    ]:
        case(f"spectra: {name}", True, lambda p, d=desc, f=frame: p.spectra(
            lambda h: h["arrays"].append(d), [p.blocks.axis_bytes, p.blocks.counts_bytes, f]))

    # Photons.
    case("photons: negative macro time", True, lambda p: p.photons(macro=(1, -2, 3)))
    case("photons: negative micro time", True, lambda p: p.photons(micro=(4, -5, 6)))
    case("photons: no photons", True, lambda p: p.photons(macro=(), micro=(), channel=()))
    case("photons: missing channel", True, lambda p: p.photons(arrays=[
        {"name": "macro_time_ps", "dtype": "<i8", "shape": [3]}, {"name": "micro_time_ps", "dtype": "<i4", "shape": [3]}]))
    case("photons: micro time of another length", True, lambda p: p.photons(micro=(4, 5)))
    case("photons: channel of the wrong dtype", True, lambda p: p.photons(arrays=[
        {"name": "macro_time_ps", "dtype": "<i8", "shape": [3]}, {"name": "micro_time_ps", "dtype": "<i4", "shape": [3]},
        {"name": "channel", "dtype": "|i1", "shape": [3]}]))
    case("photons: meta key on columns", True, lambda p: p.photons(meta={"record_type": HYDRAHARP_V2_T3}))
    # Raw PicoQuant records.
    good_meta = {"record_type": HYDRAHARP_V2_T3, "macro_unit_ps": 25000.0, "micro_bin_ps": 1.0}
    case("records: unsupported record_type", True, lambda p: p.records({**good_meta, "record_type": 12345}))
    case("records: record_type as a string", True, lambda p: p.records({**good_meta, "record_type": "0x01010304"}))
    case("records: no meta", True, lambda p: p.records({}))
    case("records: missing record_type", True,
         lambda p: p.records({k: v for k, v in good_meta.items() if k != "record_type"}))
    case("records: missing macro_unit_ps", True,
         lambda p: p.records({k: v for k, v in good_meta.items() if k != "macro_unit_ps"}))
    case("records: unknown meta key", True, lambda p: p.records({**good_meta, "sync_rate_hz": 4e7}))
    case("records: of dtype <u2", True, lambda p: p.records(good_meta, dtype="<u2"))
    case("records: with another array", True, lambda p: p.records(good_meta, extra_array=True))
    # Phase traces.
    case("phase: traces of different lengths", True, lambda p: p.phase(b=np.zeros(255)))
    case("phase: sample_rate_hz 0", True, lambda p: p.phase(meta={"sample_rate_hz": 0}))
    case("phase: sample_rate_hz negative", True, lambda p: p.phase(meta={"sample_rate_hz": -1e6}))
    case("phase: sample_rate_hz above 1e9", True, lambda p: p.phase(meta={"sample_rate_hz": 1e10}))
    case("phase: sample_rate_hz a string", True, lambda p: p.phase(meta={"sample_rate_hz": "fast"}))
    case("phase: sample_rate_hz missing", True, lambda p: p.phase(meta={}))
    case("phase: unknown meta key", True, lambda p: p.phase(meta={"sample_rate_hz": 1e6, "gain": 2}))
    case("phase: volts NaN", True, lambda p: p.phase(a=np.full(256, np.nan)))
    case("phase: volts absurd", True, lambda p: p.phase(a=np.full(256, 1e5)))
    case("phase: no samples", True, lambda p: p.phase(a=[], b=[]))
    case("phase: integer samples", True, lambda p: p.phase(dtype="<i4"))
    case("phase: two-dimensional trace", True, lambda p: p.phase(a_shape=[16, 16]))
    case("header: phase sample_rate_hz Infinity (not JSON)", False,
         lambda p: [p.phase()[0].replace(b"1000000.0", b"Infinity")] + p.phase()[1:])

    # Arrow IPC payloads.
    case("ipc: no payload frame", True, lambda p: p.ipc())
    case("ipc: two payload frames", True, lambda p: p.ipc(p.blocks.ipc_spectra, p.blocks.ipc_spectra))
    case("ipc: empty payload frame", True, lambda p: p.ipc(b""))
    case("ipc: random bytes", True, lambda p: p.ipc(p.rng.randbytes(p.rng.randrange(1, 4096))))
    case("ipc: truncated stream (half)", True, lambda p: p.ipc(p.blocks.ipc_spectra[: len(p.blocks.ipc_spectra) // 2]))
    case("ipc: truncated stream (in the schema)", True, lambda p: p.ipc(p.blocks.ipc_spectra[:40]))
    case("ipc: truncated stream (last batch byte)", True, lambda p: p.ipc(p.blocks.ipc_spectra[:-9]))
    case("ipc: schema but no batch", True, lambda p: p.ipc(p.blocks.ipc_schema_only))
    case("ipc: extra column", True, lambda p: p.ipc(p.blocks.ipc_extra_column))
    case("ipc: missing intensity column", True, lambda p: p.ipc(p.blocks.ipc_missing_counts))
    case("ipc: missing axis column", True, lambda p: p.ipc(p.blocks.ipc_missing_axis))
    case("ipc: intensities as strings", True, lambda p: p.ipc(p.blocks.ipc_string_counts))
    case("ipc: axis not a list", True, lambda p: p.ipc(p.blocks.ipc_flat_axis))
    case("ipc: row shorter than its axis", True, lambda p: p.ipc(p.blocks.ipc_short_row))
    case("ipc: null spectrum", True, lambda p: p.ipc(p.blocks.ipc_null_counts))
    case("ipc: spectra without meta", True, lambda p: p.ipc(p.blocks.ipc_spectra, meta={}))
    case("ipc: photons with a negative macro time", True, lambda p: p.ipc(p.blocks.ipc_negative_photons, stream="photons"))
    case("ipc: phase traces with an extra column", True, lambda p: p.ipc(p.blocks.ipc_phase_extra, stream="phase_traces"))
    case("ipc: spectra columns for a photons stream", True, lambda p: p.ipc(p.blocks.ipc_spectra, stream="photons"))
    case("ipc: the 108-byte continuation payload", True, lambda p: p.ipc(p.continuation_108()))
    case("ipc: random continuation payload, huge metadata length", True, lambda p: p.ipc(p.continuation_random()))

    # Oversized: over max_message_bytes, with a header that parses and with one that does not.
    case("oversized: 2 MiB with a valid header", True, lambda p: p.spectra(
        setter(("arrays", 1, "shape"), [OVERSIZED_BYTES // 4 // PIXELS, PIXELS]),
        [p.blocks.axis_bytes, bytes(OVERSIZED_BYTES)]))
    case("oversized: 2 MiB with a garbage header", False, lambda p: [b"\0garbage", bytes(OVERSIZED_BYTES)])

    names = [c.name for c in cases]
    duplicates = [n for n, k in Counter(names).items() if k > 1]
    assert not duplicates, f"case names must be unique: {duplicates}"
    return cases


# ---------------------------------------------------------------------------------------------
# The corpus, message by message
# ---------------------------------------------------------------------------------------------


@dataclass
class Message:
    name: str  # the case, or "good"
    frames: list
    good: bool
    header_parsed: bool
    source: str | None  # when the header parses (for a bad message: when it should)
    seq: int | None
    key: tuple = ()  # a bad message: (hostile source, seq) its builder was given, parsed or not


def expensive(case):
    return case.name.startswith("oversized") or "continuation payload" in case.name


class Corpus:
    """One socket's messages: every bad case REPEATS times (the expensive ones fewer), shuffled,
    each after 0-2 good spectra messages of the socket's good sources (consecutive seq per
    source)."""

    def __init__(self, rng, blocks, cases, socket):
        self.rng, self.blocks, self.socket = rng, blocks, socket
        self.hostile = HOSTILE_SOURCE[socket]
        self.next_good = {s: 0 for s in GOOD_SOURCES[socket]}
        self.next_bad = 0
        self.schedule = [c for c in cases for _ in range(FEW_REPEATS if expensive(c) else REPEATS)]
        rng.shuffle(self.schedule)

    def good(self, source=None):
        source = source or self.rng.choice(GOOD_SOURCES[self.socket])
        seq = self.next_good[source]
        self.next_good[source] += 1
        counts = self.blocks.counts[self.rng.randrange(len(self.blocks.counts))]
        return Message("good", spectrum_frames(source, seq, self.blocks.axis, counts), True, True, source, seq)

    def bad(self, case):
        seq = self.next_bad
        self.next_bad += 1
        frames = case.build(Parts(self.rng, self.blocks, self.hostile, seq))
        if case.header_parsed:  # the catalogue's own consistency: the header names this message
            header = json.loads(frames[0])
            assert (header["source"], header["seq"]) == (self.hostile, seq), case.name
            return Message(case.name, frames, False, True, self.hostile, seq, (self.hostile, seq))
        return Message(case.name, frames, False, False, None, None, (self.hostile, seq))

    def __iter__(self):
        for case in self.schedule:
            for _ in range(self.rng.choice((0, 0, 1, 1, 2))):
                yield self.good()
            yield self.bad(case)


# ---------------------------------------------------------------------------------------------
# Senders and what they saw
# ---------------------------------------------------------------------------------------------


class Sender:
    """One pyzmq socket and the bookkeeping of what went through it."""

    def __init__(self, context, kind, endpoint):
        self.kind = kind
        self.socket = context.socket({"push": zmq.PUSH, "dealer": zmq.DEALER, "pub": zmq.PUB}[kind])
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDTIMEO, int(WAIT_S * 1000))  # a dead server fails, not hangs
        self.socket.connect(endpoint)
        self.good = Counter()  # source -> good messages sent
        self.bad = Counter()  # case name -> sent
        self.bad_parsed = Counter()  # (source, seq) -> sent, for bad messages whose header parses
        self.bad_names = {}  # (hostile source, seq) -> case name, for every bad message
        # DEALER: replies expected, in order, and what came back.
        self.expected = deque()
        self.replies = 0
        self.reply_problems = defaultdict(list)  # case name -> problems
        self.reasons = {}  # case name -> first refusal reason
        self.acked_at = {}  # (source, seq) -> monotonic time of its ack

    @property
    def sent(self):
        return sum(self.good.values()) + sum(self.bad.values())

    def send(self, message):
        self.socket.send_multipart(message.frames)
        if message.good:
            self.good[message.source] += 1
        else:
            self.bad[message.name] += 1
            self.bad_names[message.key] = message.name
            if message.header_parsed:
                self.bad_parsed[(message.source, message.seq)] += 1
        if self.kind == "dealer":
            self.expected.append(message)

    def drain(self, timeout_ms=0):
        """DEALER: read every reply available (waiting up to `timeout_ms` for the first)."""
        while self.kind == "dealer" and self.socket.poll(timeout_ms, zmq.POLLIN):
            self.check_reply(self.socket.recv_multipart())
            timeout_ms = 0

    def check_reply(self, frames):
        """Replies come in the order the messages arrived: match each with its message."""
        self.replies += 1
        if not self.expected:
            self.reply_problems["(no message)"].append(f"unexpected reply {frames!r}")
            return
        message = self.expected.popleft()
        problems = self.reply_problems[message.name]
        try:
            reply = json.loads(frames[-1])
        except ValueError:
            problems.append(f"seq {message.seq}: reply is not JSON: {frames!r}")
            return
        if message.good:
            if reply == {"ack": message.seq, "source": message.source}:
                self.acked_at[(message.source, message.seq)] = time.monotonic()
            else:
                problems.append(f"{message.source} seq {message.seq}: expected an ack, got {reply}")
            return
        self.reasons.setdefault(message.name, reply.get("error"))
        expected = {"nack": message.seq, "source": message.source, "retry": False}
        got = {key: reply.get(key, "<missing>") for key in expected}
        if "ack" in reply or got != expected:
            problems.append(f"expected {expected} (+ error), got {reply}")
        elif not isinstance(reply.get("error"), str) or not reply["error"].strip():
            problems.append(f"nack without a reason: {reply}")
        elif set(reply) != {"nack", "source", "error", "retry"}:
            problems.append(f"unexpected keys in {reply}")

    def problems(self):
        return {name: found for name, found in self.reply_problems.items() if found}


# ---------------------------------------------------------------------------------------------
# The attack
# ---------------------------------------------------------------------------------------------


def health_status(server):
    try:
        with urllib.request.urlopen(server.http + "/health", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def poll(predicate, timeout_s, between=None):
    """Call predicate() until it holds or `timeout_s` passes; `between()` runs between tries
    (e.g. reading DEALER replies) and waits a little. Returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        if between:
            between()
        else:
            time.sleep(0.01)


class Tail:
    """Reads a pipe of the server (so its logs can never fill it and block it), keeping the end."""

    def __init__(self, pipe):
        self.lines = deque(maxlen=200)
        self.thread = threading.Thread(target=self.run, args=(pipe,), daemon=True)
        self.thread.start()

    def run(self, pipe):
        for line in pipe:
            self.lines.append(line.rstrip())

    def text(self):
        return "\n".join(self.lines)


@dataclass(repr=False)
class Attack:
    server: Server
    senders: dict = field(default_factory=dict)
    error: str | None = None
    hwm_start_kb: int = 0
    hwm_after_ipc_kb: int = 0
    hwm_end_kb: int = 0
    ipc_burst: int = 0
    ack_after_burst_s: float | None = None
    pub_probes_sent: int = 0
    pub_rounds_unconfirmed: int = 0
    metrics: dict | None = None
    spectra: dict | None = None
    errors: list | None = None
    hostile_stored: list | None = None
    stderr: Tail | None = None

    def __repr__(self):
        return f"Attack(server at {self.server.http})"

    def require_completed(self):
        if self.error:
            pytest.fail(f"the attack did not complete:\n{self.error}\n--- server stderr (tail) ---\n"
                        f"{self.stderr.text() if self.stderr else ''}")


def run_attack(attack, rng):
    server = attack.server
    blocks = Blocks(rng)
    cases = bad_cases()
    by_name = {c.name: c for c in cases}
    context = zmq.Context()
    senders = attack.senders
    senders.update({kind: Sender(context, kind, endpoint)
                    for kind, endpoint in (("push", server.pull), ("dealer", server.router), ("pub", server.sub))})
    push, dealer, pub = senders["push"], senders["dealer"], senders["pub"]
    corpora = {kind: Corpus(rng, blocks, cases, kind) for kind in SOCKETS}
    try:
        # 1. The hostile IPC payloads alone, over DEALER, then one good message: how much memory
        #    they cost and how soon the good one is acknowledged after them.
        attack.hwm_start_kb = vm_hwm_bytes(server.process.pid) // 1024
        burst = [corpora["dealer"].bad(by_name["ipc: the 108-byte continuation payload"])]
        burst += [corpora["dealer"].bad(by_name["ipc: random continuation payload, huge metadata length"])
                  for _ in range(IPC_BURST)]
        attack.ipc_burst = len(burst)
        for message in burst:
            dealer.send(message)
        good = corpora["dealer"].good()
        dealer.send(good)
        sent_at = time.monotonic()
        key = (good.source, good.seq)
        poll(lambda: key in dealer.acked_at or not dealer.expected, RESPONSE_BOUND_S, lambda: dealer.drain(10))
        if key in dealer.acked_at:
            attack.ack_after_burst_s = dealer.acked_at[key] - sent_at
        poll(lambda: not dealer.expected, WAIT_S, lambda: dealer.drain(10))
        server.wait_processed(dealer.sent)
        attack.hwm_after_ipc_kb = vm_hwm_bytes(server.process.pid) // 1024

        # 2. PUB drops until the subscription has propagated: probe until the server sees one.
        for probe in range(1000):
            pub.socket.send_multipart(spectrum_frames(PROBE_SOURCE, probe, blocks.axis, blocks.counts[0]))
            attack.pub_probes_sent += 1
            if PROBE_SOURCE in server.metrics()["sources"]:
                break
        else:
            raise AssertionError("the PUB connection never became live")

        # 3. The corpus, round by round on all three sockets. Each socket's round ends with a good
        #    message; the next round starts once the server has taken it (PUB may drop it: then
        #    after PUB_WAIT_S), so PUB is paced and the lossless sockets never wait unboundedly.
        streams = {kind: iter(corpora[kind]) for kind in SOCKETS}
        live = set(SOCKETS)
        while live:
            markers = {}
            for kind in SOCKETS:
                if kind not in live:
                    continue
                for _ in range(ROUND):
                    message = next(streams[kind], None)
                    if message is None:
                        live.discard(kind)
                        break
                    senders[kind].send(message)
                marker = corpora[kind].good()
                senders[kind].send(marker)
                markers[kind] = marker
                dealer.drain()

            def taken(kind):
                marker = markers.get(kind)
                if marker is None:
                    return True
                if kind == "dealer":
                    return not dealer.expected
                last_seq = server.metrics()["sources"].get(marker.source, {}).get("last_seq")
                return last_seq is not None and last_seq >= marker.seq

            lossless = poll(lambda: taken("push") and taken("dealer"), WAIT_S, lambda: dealer.drain(10))
            assert lossless, f"PUSH/DEALER round not taken within {WAIT_S} s; metrics: {server.metrics()}"
            if not poll(lambda: taken("pub"), PUB_WAIT_S):
                attack.pub_rounds_unconfirmed += 1

        # 4. Everything taken is committed: processed == received, every DEALER reply in.
        poll(lambda: not dealer.expected, WAIT_S, lambda: dealer.drain(10))
        server.wait_for(lambda m: m["messages_processed"] == m["messages_received"]
                        and m["messages_received"] >= push.sent + dealer.sent,
                        "every message received to be processed", attempts=int(WAIT_S * 100))
        dealer.drain(200)  # a reply beyond one per message would show up here
        attack.metrics = server.metrics()
        status, body = server.sql_http(
            "SELECT source, count(*) AS n, count(DISTINCT seq) AS distinct_seq, min(seq) AS lo, max(seq) AS hi "
            "FROM spectra GROUP BY source")
        assert status == 200, body
        attack.spectra = {row["source"]: row for row in json.loads(body)}
        status, body = server.sql_http("SELECT transport, source, stream, seq, reason FROM ingest_errors")
        assert status == 200, body
        attack.errors = json.loads(body)
        attack.hostile_stored = []  # (table, source, seq) of rows from bad messages: must stay empty
        for table in ("spectra", "photons", "phase_traces"):
            status, body = server.sql_http(
                f"SELECT DISTINCT source, seq FROM {table} WHERE source LIKE 'hostile-%'")
            assert status == 200, body
            attack.hostile_stored += [(table, row["source"], row["seq"]) for row in json.loads(body)]
        attack.hwm_end_kb = vm_hwm_bytes(server.process.pid) // 1024
    finally:
        for sender in senders.values():
            sender.socket.close(linger=0)
        context.term()


@pytest.fixture(scope="module")
def attack(tmp_path_factory):
    flowdaq_bin()  # fails with the reason if the binary is missing
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    server = Server(data_dir, ingest=f"max_message_bytes = {MAX_MESSAGE_BYTES}")
    server.start()
    result = Attack(server, stderr=Tail(server.process.stderr))
    Tail(server.process.stdout)
    started = time.monotonic()
    try:
        run_attack(result, random.Random(SEED))
    except Exception:  # noqa: BLE001 - every test reports it, with the server's last words
        result.error = traceback.format_exc()
    sent = sum(s.sent for s in result.senders.values())
    print(f"\nhostile corpus: {sent} messages in {time.monotonic() - started:.1f} s "
          f"({', '.join(f'{k}: {s.sent}' for k, s in result.senders.items())}); "
          f"VmHWM {result.hwm_start_kb} kB at start, {result.hwm_end_kb} kB at the end")
    yield result
    server.kill()


# ---------------------------------------------------------------------------------------------
# The promises
# ---------------------------------------------------------------------------------------------


def test_the_corpus_breaks_every_rule_many_times(attack):
    attack.require_completed()
    total = sum(s.sent for s in attack.senders.values())
    assert total >= 10_000, total
    names = {c.name for c in bad_cases()}
    for kind, sender in attack.senders.items():
        assert set(sender.bad) == names, f"{kind}: cases never sent: {names - set(sender.bad)}"
        assert sum(sender.good.values()) > 1000, (kind, sender.good)


def test_the_server_survives_and_is_healthy(attack):
    server = attack.server
    assert server.process.poll() is None, (
        f"the server exited with {server.process.returncode}:\n{attack.stderr.text()}")
    assert health_status(server) == 200
    attack.require_completed()


def test_every_good_message_is_stored_exactly_once(attack):
    attack.require_completed()
    stored = attack.spectra
    for kind in ("push", "dealer"):
        for source, sent in attack.senders[kind].good.items():
            row = stored.get(source)
            assert row is not None, f"{kind}: nothing of {source} stored ({sent} sent)"
            assert (row["n"], row["distinct_seq"], row["lo"], row["hi"]) == (sent, sent, 0, sent - 1), (kind, row)
    # PUB may drop: what arrived is stored once, and every gap is counted by the server.
    pub = attack.senders["pub"]
    dropped = 0
    for source, sent in pub.good.items():
        row = stored.get(source)
        assert row is not None, f"pub: nothing of {source} stored ({sent} sent)"
        assert row["n"] == row["distinct_seq"] <= sent and row["hi"] < sent, row
        stats = attack.metrics["sources"][source]
        assert stats["messages"] == row["n"] and stats["duplicates"] == 0, stats
        assert stats["missing_messages"] == (row["hi"] - row["lo"] + 1) - row["n"], (source, stats, row)
        dropped += sent - row["n"]
    print(f"\nPUB: {dropped} good messages dropped of {sum(pub.good.values())}; "
          f"{attack.pub_rounds_unconfirmed} rounds unconfirmed")
    expected_sources = {s for sender in attack.senders.values() for s in sender.good} | {PROBE_SOURCE}
    unexpected = set(stored) - expected_sources - set(HOSTILE_SOURCE.values())  # hostile: the next test
    assert not unexpected, f"rows of sources nobody sent: {unexpected}"
    assert all(row["n"] == row["distinct_seq"] for row in stored.values()), stored


def test_every_bad_message_is_refused_with_a_reason(attack):
    attack.require_completed()
    metrics, errors = attack.metrics, attack.errors
    names = {}
    for sender in attack.senders.values():
        names.update(sender.bad_names)
    stored = Counter(names[(source, seq)] for _, source, seq in attack.hostile_stored)
    assert not stored, "bad messages were stored instead of refused (case: times):\n" + "\n".join(
        f"  {name}: {count}" for name, count in sorted(stored.items()))
    by_transport = Counter(e["transport"] for e in errors)
    push, dealer, pub = (attack.senders[k] for k in ("push", "dealer", "pub"))
    assert by_transport["pull"] == sum(push.bad.values()), by_transport
    assert by_transport["router"] == sum(dealer.bad.values()), by_transport
    assert by_transport["sub"] <= sum(pub.bad.values()), by_transport
    assert metrics["messages_rejected"] == len(errors), (metrics["messages_rejected"], len(errors))
    assert metrics["messages_rejected"] == by_transport["pull"] + by_transport["router"] + by_transport["sub"]
    assert all(isinstance(e.get("reason"), str) and e["reason"].strip() for e in errors)
    # Attribution: the rows of messages whose header parsed name their source and seq, exactly.
    for kind, sender in attack.senders.items():
        rows = [e for e in errors if e["transport"] == TRANSPORT[kind]]
        # (The JSON answer leaves out null columns.)
        attributed = Counter((e["source"], e["seq"]) for e in rows if e.get("source") is not None)
        unattributed = sum(1 for e in rows if e.get("source") is None)
        sent_unparsed = sum(sender.bad.values()) - sum(sender.bad_parsed.values())
        if kind == "pub":
            assert not attributed - sender.bad_parsed, f"pub: unexpected rows {attributed - sender.bad_parsed}"
            assert unattributed <= sent_unparsed
        else:
            assert attributed == sender.bad_parsed, (
                f"{kind}: missing {sender.bad_parsed - attributed}, unexpected {attributed - sender.bad_parsed}")
            assert unattributed == sent_unparsed, (kind, unattributed, sent_unparsed)
        for source in {s for s, _ in attributed}:
            assert metrics["sources"][source]["messages"] == 0, metrics["sources"][source]
    print(f"\nrefused: {by_transport['pull']} over PUSH, {by_transport['router']} over DEALER, "
          f"{by_transport['sub']} of {sum(pub.bad.values())} over PUB; received {metrics['messages_received']}")
    # The server's received count adds up: every PUSH and DEALER message, and what PUB delivered.
    pub_delivered = by_transport["sub"] + sum(
        attack.spectra[s]["n"] for s in list(pub.good) + [PROBE_SOURCE] if s in attack.spectra)
    assert pub_delivered <= pub.sent + attack.pub_probes_sent
    assert metrics["messages_received"] == push.sent + dealer.sent + pub_delivered, (
        metrics["messages_received"], push.sent, dealer.sent, pub_delivered)


def test_a_good_message_after_hostile_ipc_payloads_is_acknowledged_promptly(attack):
    attack.require_completed()
    print(f"\nack of a good message sent right after {attack.ipc_burst} hostile IPC payloads: "
          f"{attack.ack_after_burst_s if attack.ack_after_burst_s is None else f'{attack.ack_after_burst_s:.3f} s'}")
    assert attack.ack_after_burst_s is not None, f"no ack within {RESPONSE_BOUND_S} s"


def test_memory_high_water_mark_is_bounded(attack):
    attack.require_completed()
    print(f"\nVmHWM: start {attack.hwm_start_kb / 1024:.1f} MiB, after the IPC burst "
          f"{attack.hwm_after_ipc_kb / 1024:.1f} MiB, end {attack.hwm_end_kb / 1024:.1f} MiB")
    assert attack.hwm_end_kb <= MEMORY_BOUND_KB, f"VmHWM {attack.hwm_end_kb} kB > {MEMORY_BOUND_KB} kB"


def test_dealer_gets_one_reply_per_message_naming_it(attack):
    attack.require_completed()
    dealer = attack.senders["dealer"]
    assert not dealer.expected, f"{len(dealer.expected)} DEALER messages never got a reply"
    assert dealer.replies == dealer.sent, (dealer.replies, dealer.sent)
    print("\nwhy each case was refused (first DEALER nack):")
    for name in sorted(dealer.reasons):
        print(f"  {name}: {dealer.reasons[name]}")
    problems = dealer.problems()
    report = "\n".join(f"{name} ({len(found)} of {dealer.bad.get(name, sum(dealer.good.values()))}): {found[0]}"
                       for name, found in sorted(problems.items()))
    assert not problems, f"{len(problems)} cases got a reply that breaks the contract:\n{report}"


def test_hostile_ipc_payloads_cost_little_memory(attack):
    attack.require_completed()
    growth = attack.hwm_after_ipc_kb - attack.hwm_start_kb
    print(f"\nVmHWM growth over {attack.ipc_burst} hostile IPC payloads: {growth / 1024:.1f} MiB")
    assert growth < IPC_GROWTH_BOUND_KB, f"VmHWM grew by {growth} kB over the IPC burst"
