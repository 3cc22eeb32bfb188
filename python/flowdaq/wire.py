"""The frames of flowdaq's wire protocol v1, built with nothing but numpy.

This is the whole of wire protocol v1 for spectra, raw PicoQuant records, TCSPC histograms and
scalar readings
(docs/wire-protocol.md): a JSON header frame, then one frame per array, little-endian, C order.
It depends on nothing else in this package, so an instrument driver may copy this one file.

A TCSPC driver sends the 32-bit records as the device hands them over, in order and with
consecutive `seq` per source (overflow records make each record's time depend on the earlier
ones), and marks the acquisition's last message with `end_of_stream` so that the server writes
the source's last histogram window at once.

Three socket patterns:
  * PUSH (lossless; blocks when the server is behind)       -> the server's PULL endpoint
  * PUB  (fan-out; the server counts gaps in `seq`)          -> the server's SUB endpoint
  * DEALER (acknowledged; keep a message until its ack)      -> the server's ROUTER endpoint
"""

import json

import numpy as np


def header_frame(source, stream, seq, arrays, meta, run_id=None, condition_id=None,
                 instrument_time_ns=None, end_of_stream=False, session=None):
    """The JSON header frame of one message: `arrays` lists (name, dtype string, shape) of the
    frames that follow, in order; the optional keys are left out when not given. `session`
    names this life of the sender's seq counter (see "Exactly once" in docs/wire-protocol.md)."""
    header = {
        "protocol": 1,
        "source": source,
        "stream": stream,
        "seq": int(seq),
        "arrays": [{"name": name, "dtype": dtype, "shape": list(shape)} for name, dtype, shape in arrays],
        "meta": meta,
    }
    if session is not None:
        header["session"] = session
    if run_id is not None:
        header["run_id"] = run_id
    if condition_id is not None:
        header["condition_id"] = condition_id
    if instrument_time_ns is not None:
        header["instrument_time_ns"] = int(instrument_time_ns)
    if end_of_stream:
        header["end_of_stream"] = True
    return json.dumps(header).encode()


def spectrum_frames(source, seq, wavelength_nm, counts, kind="pl", integration_time_ms=10.0,
                    run_id=None, condition_id=None, probe_position_mm=None, instrument_time_ns=None,
                    session=None):
    """Return the multipart frames of one spectra message.

    `counts` is one spectrum (shape [pixels]) or a batch (shape [n_spectra, pixels]).
    """
    wavelength_nm = np.ascontiguousarray(wavelength_nm, dtype="<f8")
    counts = np.ascontiguousarray(counts, dtype="<f4")
    meta = {"kind": kind, "integration_time_ms": float(integration_time_ms)}
    if probe_position_mm is not None:
        meta["probe_position_mm"] = float(probe_position_mm)
    arrays = [("wavelength_nm", wavelength_nm.dtype.str, wavelength_nm.shape),
              ("intensity_counts", counts.dtype.str, counts.shape)]
    header = header_frame(source, "spectra", seq, arrays, meta, run_id=run_id, condition_id=condition_id,
                          instrument_time_ns=instrument_time_ns, session=session)
    return [header, wavelength_nm.tobytes(), counts.tobytes()]


def histogram_frames(source, seq, counts, bin_width_ps, sync_rate_hz, irf_counts=None, channel=0,
                     acquisition_time_s=None, run_id=None, condition_id=None, session=None):
    """Return the multipart frames of one tcspc_histogram message: the counts per micro-time bin
    of one channel from an instrument in histogram mode, optionally with the measured IRF (one
    value per bin) the server fits the decay with."""
    counts = np.ascontiguousarray(counts, dtype="<u4")
    meta = {"bin_width_ps": float(bin_width_ps), "sync_rate_hz": float(sync_rate_hz), "channel": int(channel)}
    if acquisition_time_s is not None:
        meta["acquisition_time_s"] = float(acquisition_time_s)
    arrays = [("counts", counts.dtype.str, counts.shape)]
    frames = [counts.tobytes()]
    if irf_counts is not None:
        irf_counts = np.ascontiguousarray(irf_counts, dtype="<f8")
        arrays.append(("irf_counts", irf_counts.dtype.str, irf_counts.shape))
        frames.append(irf_counts.tobytes())
    header = header_frame(source, "tcspc_histogram", seq, arrays, meta, run_id=run_id, condition_id=condition_id,
                          session=session)
    return [header, *frames]


def readings_frames(source, seq, values, event_time_ns=None, stream_name=None, units=None,
                    run_id=None, condition_id=None, session=None):
    """Return the multipart frames of one readings message: `values` maps each key (a motor, a
    temperature, a pump rate) to one value per event (a number, or a list/array of them) or to
    strings (kept as text readings). `event_time_ns` gives each event's time; `units` maps keys
    to their unit. Each key of each event becomes one `readings` row."""
    arrays, frames, text = [], [], {}
    events = None
    for key, value in values.items():
        column = np.atleast_1d(np.asarray(value))
        if events is None:
            events = len(column)
        if len(column) != events:
            raise ValueError(f"{key!r} has {len(column)} values, the others {events}")
        if column.dtype.kind in "biuf":
            column = np.ascontiguousarray(column, dtype="<f8")
            arrays.append((key, column.dtype.str, column.shape))
            frames.append(column.tobytes())
        else:
            text[key] = [None if v is None else str(v) for v in column.tolist()]
    if event_time_ns is not None:
        times = np.ascontiguousarray(np.atleast_1d(event_time_ns), dtype="<i8")
        arrays.append(("event_time_ns", times.dtype.str, times.shape))
        frames.append(times.tobytes())
    if not arrays:
        raise ValueError("a readings message needs at least one number (or event_time_ns)")
    meta = {}
    if stream_name is not None:
        meta["stream_name"] = stream_name
    if units:
        meta["units"] = dict(units)
    if text:
        meta["text"] = text
    header = header_frame(source, "readings", seq, arrays, meta, run_id=run_id, condition_id=condition_id,
                          session=session)
    return [header, *frames]


def picoquant_record_frames(source, seq, records, record_type, macro_unit_ps, micro_bin_ps,
                            run_id=None, condition_id=None, end_of_stream=False, session=None):
    """Return the multipart frames of one photons message of raw PicoQuant TTTR records.

    `records` are 32-bit records exactly as read from the device or a PTU file; `record_type`
    is the PTU `TTResultFormat_TTTRRecType` code (0x01010304: HydraHarp v2 T3); `macro_unit_ps`
    is the sync period (T3) or global resolution (T2) and `micro_bin_ps` the micro-time bin, in
    ps. `end_of_stream` marks the source's last message of an acquisition.
    """
    records = np.ascontiguousarray(records, dtype="<u4")
    meta = {"record_type": int(record_type), "macro_unit_ps": float(macro_unit_ps),
            "micro_bin_ps": float(micro_bin_ps)}
    header = header_frame(source, "photons", seq, [("records", records.dtype.str, records.shape)], meta,
                          run_id=run_id, condition_id=condition_id, end_of_stream=end_of_stream,
                          session=session)
    return [header, records.tobytes()]


# A Swabian Time Tagger `Tag`: type (0: time tag), reserved, missed events, channel, time in ps.
SWABIAN_TAG = np.dtype([("type", "u1"), ("reserved", "u1"), ("missed_events", "<u2"),
                        ("channel", "<i4"), ("time_ps", "<i8")])


def time_tag_frames(source, seq, channels, times_ps, detector_channels, sync_channel=None,
                    marker_channels=None, micro_bin_ps=1, run_id=None, end_of_stream=False):
    """Return the multipart frames of one photons message of time tags in the Swabian layout.

    `channels` and `times_ps` are the tags' input channels and times, in time order (a
    tagger's stream, as its `TimeTagStream` hands it over). `detector_channels` lists the
    input channels of detectors (position = output `channel`); with `sync_channel`, photons
    are timed against the last sync (micro time = delay since it), as in T3 mode.
    """
    tags = np.zeros(len(times_ps), dtype=SWABIAN_TAG)
    tags["channel"] = channels
    tags["time_ps"] = times_ps
    meta = {"detector_channels": [int(c) for c in detector_channels], "micro_bin_ps": int(micro_bin_ps)}
    if sync_channel is not None:
        meta["sync_channel"] = int(sync_channel)
    if marker_channels:
        meta["marker_channels"] = [int(c) for c in marker_channels]
    arrays = [("time_tags", "|u1", (len(tags), SWABIAN_TAG.itemsize))]
    header = header_frame(source, "photons", seq, arrays, meta, run_id=run_id, end_of_stream=end_of_stream)
    return [header, tags.tobytes()]


# PTU tag types whose 8-byte value is the length of data that follows the tag.
_PTU_SIZED_TAGS = {0x2001FFFF, 0x4001FFFF, 0x4002FFFF, 0xFFFFFFFF}
_PTU_FLOAT8 = 0x20000008


def read_ptu(path):
    """Read a PicoQuant PTU file: `(tags, records)`, the header tags by name (numbers only;
    strings and blobs are skipped) and the 32-bit TTTR records as a numpy array."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[:6].tobytes() != b"PQTTTR":
        raise ValueError(f"{path}: not a PTU file")
    offset, tags = 16, {}
    while True:
        if offset + 48 > len(data):
            raise ValueError(f"{path}: header ends without Header_End")
        ident = data[offset:offset + 32].tobytes().split(b"\0", 1)[0].decode("ascii", "replace")
        index, kind = np.frombuffer(data[offset + 32:offset + 40].tobytes(), dtype="<i4")
        kind = int(kind) & 0xFFFFFFFF
        raw = data[offset + 40:offset + 48].tobytes()
        offset += 48
        if kind in _PTU_SIZED_TAGS:
            offset += int(np.frombuffer(raw, dtype="<i8")[0])
            continue
        value = float(np.frombuffer(raw, dtype="<f8")[0]) if kind == _PTU_FLOAT8 else int(
            np.frombuffer(raw, dtype="<i8")[0])
        tags[ident if index < 0 else f"{ident}[{index}]"] = value
        if ident == "Header_End":
            break
    count = int(tags.get("TTResult_NumberOfRecords", (len(data) - offset) // 4))
    records = np.frombuffer(data[offset:offset + 4 * count].tobytes(), dtype="<u4")
    return tags, records
