//! Frame-level tests of the decoder: good messages of each stream and each way to be bad.

use super::*;
use crate::message::OutboundMessage;
use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, UInt64Type};
use flowdaq_schemas::Dtype;

const NOW_NS: i64 = 1_764_000_000_000_000_000;

fn decode(msg: &OutboundMessage) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: NOW_NS,
        default_run_id: "default",
        limits: &limits,
    };
    decode_message(&msg.frames(), &ctx)
}

fn axis(pixels: usize) -> Vec<f64> {
    (0..pixels).map(|i| 400.0 + 0.25 * i as f64).collect()
}

fn spectrum_msg(spectra: usize, pixels: usize) -> OutboundMessage {
    let counts: Vec<f32> = (0..spectra * pixels).map(|i| (i % 977) as f32).collect();
    let mut msg = OutboundMessage::new("spec-1", StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 10.0)
        .array_f64("wavelength_nm", &[pixels as u64], &axis(pixels))
        .array_f32(
            "intensity_counts",
            &[spectra as u64, pixels as u64],
            &counts,
        );
    msg.header.seq = 41;
    msg
}

fn reason(msg: &OutboundMessage) -> String {
    match decode(msg) {
        Ok(_) => panic!("message should have been rejected"),
        Err((_, err)) => err.to_string(),
    }
}

#[test]
fn spectra_decode_into_rows_and_one_calibration() {
    let decoded = decode(&spectrum_msg(3, 16)).expect("valid");
    assert_eq!(decoded.batches.len(), 2);
    let (table, spectra) = &decoded.batches[0];
    assert_eq!(*table, Table::Spectra);
    assert_eq!(spectra.num_rows(), 3);
    let counts = spectra
        .column_by_name("intensity_counts")
        .expect("column")
        .as_list::<i32>();
    let second = counts.value(1);
    let second = second.as_primitive::<Float32Type>();
    assert_eq!(second.len(), 16);
    assert_eq!(second.value(0), 16.0);
    let (table, calibration) = &decoded.batches[1];
    assert_eq!(*table, Table::SpectralCalibrations);
    assert_eq!(calibration.num_rows(), 1);
    let id = calibration
        .column_by_name("calibration_id")
        .expect("id")
        .as_primitive::<UInt64Type>();
    assert_eq!(id.value(0), axis_calibration_id(&axis(16)));
    let seq = spectra
        .column_by_name("seq")
        .expect("seq")
        .as_primitive::<UInt64Type>();
    assert!(seq.values().iter().all(|&s| s == 41));
}

#[test]
fn a_different_axis_gets_a_different_calibration_id() {
    let mut shifted = axis(16);
    shifted[3] += 1e-9;
    assert_ne!(
        axis_calibration_id(&axis(16)),
        axis_calibration_id(&shifted)
    );
}

#[test]
fn truncated_payload_is_rejected_with_sizes() {
    let mut msg = spectrum_msg(1, 16);
    msg.payload[1] = msg.payload[1].slice(0..60);
    let why = reason(&msg);
    assert!(why.contains("needs 64 bytes, frame has 60"), "{why}");
}

#[test]
fn wrong_dtype_is_rejected() {
    let msg = OutboundMessage::new("tcspc-1", StreamKind::Photons)
        .raw_array("macro_time_ps", Dtype::F64, &[2], vec![0; 16])
        .array_i32("micro_time_ps", &[2], &[1, 2])
        .array_u8("channel", &[2], &[0, 1]);
    assert!(reason(&msg).contains("dtype <f8 but must be one of [\"<i8\"]"));
}

#[test]
fn bad_json_and_unknown_stream_are_rejected() {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: NOW_NS,
        default_run_id: "d",
        limits: &limits,
    };
    let bad = [Bytes::from_static(b"{\"protocol\": 1, ")];
    let (header, err) = decode_message(&bad, &ctx).expect_err("bad json");
    assert!(header.is_none());
    assert!(err.to_string().starts_with("bad header JSON"));
    let unknown = spectrum_msg(1, 4).frames();
    let text = String::from_utf8(unknown[0].to_vec())
        .expect("utf8")
        .replace("\"spectra\"", "\"video\"");
    let frames = [Bytes::from(text), unknown[1].clone(), unknown[2].clone()];
    let (_, err) = decode_message(&frames, &ctx).expect_err("unknown stream");
    assert!(err.to_string().contains("unknown variant `video`"), "{err}");
}

#[test]
fn nan_intensities_and_bad_axes_are_rejected() {
    let mut counts = vec![1.0f32; 8];
    counts[2] = f32::NAN;
    counts[5] = f32::INFINITY;
    let msg = OutboundMessage::new("s", StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 5)
        .array_f64("wavelength_nm", &[8], &axis(8))
        .array_f32("intensity_counts", &[8], &counts);
    assert!(reason(&msg).contains("2 of 8 intensity values are NaN or infinite"));
    let mut bent = axis(8);
    bent.swap(2, 3);
    let msg = OutboundMessage::new("s", StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 5)
        .array_f64("wavelength_nm", &[8], &bent)
        .array_f32("intensity_counts", &[8], &[1.0; 8]);
    assert!(reason(&msg).contains("strictly monotonic"));
}

#[test]
fn absurd_metadata_is_rejected() {
    let base = |k: &str, v: serde_json::Value| {
        OutboundMessage::new("s", StreamKind::Spectra)
            .meta("kind", "pl")
            .meta("integration_time_ms", 5)
            .meta(k, v)
            .array_f64("wavelength_nm", &[4], &axis(4))
            .array_f32("intensity_counts", &[4], &[1.0; 4])
    };
    assert!(reason(&base("integration_time_ms", (-1.0).into())).contains("outside"));
    assert!(reason(&base("kind", "video".into())).contains("is not one of"));
    assert!(reason(&base("probe_position_mm", 1e9.into())).contains("absurd"));
    assert!(reason(&base("colour", "red".into())).contains("unknown meta key"));
}

#[test]
fn oversized_messages_are_rejected_before_decoding() {
    let limits = DecodeLimits {
        max_message_bytes: 1000,
        ..DecodeLimits::default()
    };
    let ctx = DecodeContext {
        arrival_time_ns: NOW_NS,
        default_run_id: "d",
        limits: &limits,
    };
    let frames = spectrum_msg(1, 512).frames();
    let (header, err) = decode_message(&frames, &ctx).expect_err("too big");
    assert_eq!(header.map(|h| h.seq), Some(41));
    assert!(err.to_string().contains("exceeds the limit of 1000 bytes"));
}

#[test]
fn photons_and_phase_traces_decode() {
    let photons = OutboundMessage::new("tcspc-1", StreamKind::Photons)
        .array_i64("macro_time_ps", &[3], &[10, 20, 30])
        .array_i32("micro_time_ps", &[3], &[100, 200, 300])
        .array_u8("channel", &[3], &[0, 1, 0]);
    let decoded = decode(&photons).expect("photons");
    assert_eq!(decoded.primary_rows(), 3);
    let phase = OutboundMessage::new("phase-1", StreamKind::PhaseTraces)
        .meta("sample_rate_hz", 5000.0)
        .array_f32("sensor_a_volts", &[4], &[0.1, 0.2, 0.3, 0.4])
        .array_f32("sensor_b_volts", &[4], &[0.4, 0.3, 0.2, 0.1]);
    let decoded = decode(&phase).expect("phase");
    assert_eq!(decoded.primary_rows(), 1);
    let uneven = OutboundMessage::new("phase-1", StreamKind::PhaseTraces)
        .meta("sample_rate_hz", 5000.0)
        .array_f32("sensor_a_volts", &[4], &[0.1, 0.2, 0.3, 0.4])
        .array_f32("sensor_b_volts", &[3], &[0.4, 0.3, 0.2]);
    assert!(reason(&uneven).contains("differ in length"));
}

#[test]
fn arrow_ipc_spectra_match_the_arrays_form() {
    use arrow::ipc::writer::StreamWriter;
    use arrow_array::{builder::Float32Builder, builder::Float64Builder, builder::ListBuilder};
    let mut axes = ListBuilder::new(Float64Builder::new());
    let mut counts = ListBuilder::new(Float32Builder::new());
    for row in 0..2 {
        axes.values().append_slice(&axis(8));
        axes.append(true);
        counts.values().append_slice(&[row as f32; 8]);
        counts.append(true);
    }
    let batch = RecordBatch::try_from_iter([
        (
            "wavelength_nm",
            Arc::new(axes.finish()) as arrow_array::ArrayRef,
        ),
        ("intensity_counts", Arc::new(counts.finish())),
    ])
    .expect("batch");
    let mut buffer = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut buffer, &batch.schema()).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
    }
    let mut msg = OutboundMessage::new("spec-ipc", StreamKind::Spectra)
        .meta("kind", "absorbance")
        .meta("integration_time_ms", 2.5);
    msg.header.format = flowdaq_schemas::PayloadFormat::ArrowIpc;
    msg.payload.push(Bytes::from(buffer));
    let decoded = decode(&msg).expect("ipc");
    assert_eq!(decoded.primary_rows(), 2);
    assert_eq!(
        decoded.batches[1].1.num_rows(),
        1,
        "both rows share one calibration"
    );
}

use std::sync::Arc;

#[test]
fn calibration_id_is_fnv1a_of_the_axis_bytes_whether_remembered_or_not() {
    // Independent FNV-1a 64 over the little-endian bytes.
    let reference = |axis: &[f64]| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for value in axis {
            for byte in value.to_le_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    };
    let axes: Vec<Vec<f64>> = (0..12)
        .map(|shift| {
            (0..64)
                .map(|i| 400.0 + i as f64 + 0.5 * shift as f64)
                .collect()
        })
        .collect();
    let bytes = |axis: &[f64]| -> Vec<u8> { axis.iter().flat_map(|x| x.to_le_bytes()).collect() };
    // Twice over more axes than are remembered: first checked, then evicted or recalled.
    for _ in 0..2 {
        for axis in &axes {
            assert_eq!(axis_calibration_id(axis), reference(axis));
            let checked = super::spectra::checked_axis(Dtype::F64, &bytes(axis)).expect("axis");
            assert_eq!(checked.id, reference(axis));
            let recalled = super::spectra::checked_axis(Dtype::F64, &bytes(axis)).expect("axis");
            assert!(
                Arc::ptr_eq(&checked, &recalled),
                "recalled, not checked again"
            );
            assert_eq!(recalled.values.values().as_ref(), axis.as_slice());
        }
    }
    // The same bytes as f32 are another axis: the dtype is part of what is remembered.
    let as_f32: Vec<u8> = axes[0]
        .iter()
        .flat_map(|x| (*x as f32).to_le_bytes())
        .collect();
    let f32_axis = super::spectra::checked_axis(Dtype::F32, &as_f32).expect("f32 axis");
    assert_eq!(
        f32_axis.id,
        reference(&axes[0]),
        "these f32 values are exact in f64"
    );
    // A refused axis is not remembered: refused every time.
    let bad = bytes(&[400.0, 399.0, 401.0]);
    for _ in 0..2 {
        assert!(super::spectra::checked_axis(Dtype::F64, &bad).is_err());
    }
    // -0.0 and 0.0 compare equal as floats but are different bytes, so different ids.
    assert_ne!(
        axis_calibration_id(&[1.0, -0.0]),
        axis_calibration_id(&[1.0, 0.0])
    );
}

/// 16-byte Swabian tags: type 0 (time tag), channel, time in ps.
fn swabian_tags(tags: &[(i32, i64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 * tags.len());
    for &(channel, time_ps) in tags {
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes.extend_from_slice(&channel.to_le_bytes());
        bytes.extend_from_slice(&time_ps.to_le_bytes());
    }
    bytes
}

fn tag_message(seq: u64, tags: &[(i32, i64)]) -> OutboundMessage {
    let bytes = swabian_tags(tags);
    let mut msg = OutboundMessage::new("tagger-1", StreamKind::Photons)
        .meta("sync_channel", 1)
        .meta("detector_channels", serde_json::json!([2, 3]))
        .meta("micro_bin_ps", 1)
        .array_u8("time_tags", &[tags.len() as u64, 16], &bytes);
    msg.header.seq = seq;
    msg
}

#[test]
fn time_tags_carry_the_last_sync_across_messages_and_reset_on_a_gap() {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: NOW_NS,
        default_run_id: "default",
        limits: &limits,
    };
    let mut streams = RecordStreams::default();
    // Sync (ch 1) every 12,500 ps; a photon on ch 3 at 3,000 ps after the second sync, sent in
    // the next message: its micro time needs the sync carried over.
    let first = tag_message(0, &[(1, 0), (2, 1_000), (1, 12_500)]);
    let second = tag_message(1, &[(3, 15_500), (1, 25_000)]);
    let mut micro = Vec::new();
    let mut channels = Vec::new();
    for msg in [&first, &second] {
        let decoded = decode_message_stateful(&msg.frames(), &ctx, &mut streams).expect("valid");
        if let Some((_, batch)) = decoded.batches.first() {
            let m = batch.column_by_name("micro_time_ps").expect("micro");
            micro.extend_from_slice(m.as_primitive::<arrow::datatypes::Int32Type>().values());
            let c = batch.column_by_name("channel").expect("channel");
            channels.extend_from_slice(c.as_primitive::<arrow::datatypes::UInt8Type>().values());
        }
    }
    assert_eq!(micro, vec![1_000, 3_000]);
    assert_eq!(
        channels,
        vec![0, 1],
        "detector_channels order gives the output channel"
    );
    assert_eq!(streams.resets(), 0);
    // seq 3 after 1: a message was lost, so the carried sync is forgotten and counted.
    let after_gap = tag_message(3, &[(3, 27_000), (1, 37_500), (2, 38_000)]);
    let decoded =
        decode_message_stateful(&after_gap.frames(), &ctx, &mut streams).expect("still valid");
    assert_eq!(streams.resets(), 1);
    let (_, batch) = decoded.batches.first().expect("rows");
    let m = batch.column_by_name("micro_time_ps").expect("micro");
    // The photon before the first new sync cannot be timed against a sync it never saw.
    assert_eq!(
        m.as_primitive::<arrow::datatypes::Int32Type>().values(),
        &[500]
    );
    // Without meta.detector_channels the message is refused with the reason.
    let mut bad = tag_message(4, &[(1, 50_000)]);
    bad.header.meta.remove("detector_channels");
    let err = decode_message_stateful(&bad.frames(), &ctx, &mut streams).expect_err("refused");
    assert!(err.1.to_string().contains("detector_channels"), "{}", err.1);
}

#[test]
fn repeated_string_columns_are_valid_and_equal_to_row_by_row() {
    for (value, rows) in [("spec-1", 5), ("é-ünïcode", 3), ("", 4), ("x", 0)] {
        let fast = repeated_string(value, rows);
        arrow::array::Array::to_data(&fast).validate_full().unwrap();
        let slow = arrow_array::StringArray::from_iter_values(std::iter::repeat_n(value, rows));
        assert_eq!(fast, slow, "{value:?} x {rows}");
    }
}

/// A HydraHarp v2 T3 message: an overflow (3 x 1024 syncs), photons on channels 0 and 1 and a
/// marker, then a message of only an overflow.
fn raw_records_message(seq: u64, records: &[u32]) -> OutboundMessage {
    let bytes: Vec<u8> = records.iter().flat_map(|r| r.to_le_bytes()).collect();
    let mut msg = OutboundMessage::new("tcspc-1", StreamKind::Photons)
        .meta(
            "record_type",
            flowdaq_analytics::tcspc::records::RecordType::HydraHarpV2T3.code(),
        )
        .meta("macro_unit_ps", 25_000.0)
        .meta("micro_bin_ps", 16.0)
        .raw_array("records", Dtype::U32, &[records.len() as u64], bytes);
    msg.header.seq = seq;
    msg
}

#[test]
fn deferred_raw_records_are_native_events_and_build_the_same_photons_rows() {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: NOW_NS,
        default_run_id: "default",
        limits: &limits,
    };
    let overflow = |wraps: u32| (1u32 << 31) | (63 << 25) | wraps;
    let photon = |channel: u32, bin: u32, sync: u32| (channel << 25) | (bin << 10) | sync;
    let marker = |bits: u32, sync: u32| (1u32 << 31) | (bits << 25) | sync;
    let records = [
        overflow(3),
        photon(0, 100, 7),
        photon(1, 250, 9),
        marker(2, 11),
    ];
    let msg = raw_records_message(0, &records);

    let mut deferred_streams = RecordStreams::default();
    let mut deferred =
        decode_message_deferred(&msg.frames(), &ctx, &mut deferred_streams).expect("valid records");
    assert!(deferred.batches.is_empty(), "no photons rows until built");
    assert_eq!(deferred.primary_rows(), 3, "two photons and a marker");
    let events = deferred.records.as_ref().expect("records").events();
    assert_eq!(
        events.macro_time,
        vec![3 * 1024 + 7, 3 * 1024 + 9, 3 * 1024 + 11]
    );
    assert_eq!(events.micro_time_bins, vec![100, 250, 0]);
    assert_eq!(events.channel, vec![0, 1, 0]);
    assert_eq!(events.marker_flags, vec![0, 0, 2]);

    let mut eager_streams = RecordStreams::default();
    let eager =
        decode_message_stateful(&msg.frames(), &ctx, &mut eager_streams).expect("valid records");
    deferred.build_photons(&ctx).expect("builds");
    deferred
        .build_photons(&ctx)
        .expect("a second call is a no-op");
    assert_eq!(deferred.batches.len(), 1);
    assert_eq!(deferred.batches, eager.batches);
    let (table, batch) = &eager.batches[0];
    assert_eq!(*table, Table::Photons);
    let macro_ps = batch.column_by_name("macro_time_ps").expect("macro");
    assert_eq!(
        macro_ps
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values(),
        &[
            (3 * 1024 + 7) * 25_000,
            (3 * 1024 + 9) * 25_000,
            (3 * 1024 + 11) * 25_000
        ]
    );
    let micro_ps = batch.column_by_name("micro_time_ps").expect("micro");
    assert_eq!(
        micro_ps
            .as_primitive::<arrow::datatypes::Int32Type>()
            .values(),
        &[1_600, 4_000, 0]
    );

    // Only an overflow: no rows either way, but the carried state moved on by 1024 syncs.
    let only_overflow = raw_records_message(1, &[overflow(1)]);
    let mut deferred =
        decode_message_deferred(&only_overflow.frames(), &ctx, &mut deferred_streams)
            .expect("valid");
    deferred.build_photons(&ctx).expect("nothing to build");
    assert!(deferred.batches.is_empty());
    assert_eq!(deferred.primary_rows(), 0);
    let next = raw_records_message(2, &[photon(0, 1, 5)]);
    let decoded =
        decode_message_deferred(&next.frames(), &ctx, &mut deferred_streams).expect("valid");
    let events = decoded.records.expect("records").events();
    assert_eq!(events.macro_time, vec![4 * 1024 + 5]);
    assert_eq!(deferred_streams.resets(), 0);
}

fn histogram_msg() -> OutboundMessage {
    OutboundMessage::new("hist-1", StreamKind::TcspcHistogram)
        .meta("bin_width_ps", 16.0)
        .meta("sync_rate_hz", 40.0e6)
}

#[test]
fn histogram_messages_as_arrays_and_as_arrow_ipc_give_the_same_row() {
    use arrow::ipc::writer::StreamWriter;
    let counts = [0u32, 5, 100, 40, 7];
    let arrays = histogram_msg()
        .meta("acquisition_time_s", 2.0)
        .array_i64("counts", &[5], &counts.map(i64::from))
        .array_f64("irf_counts", &[5], &[0.0, 9.0, 1.0, 0.0, 0.0]);
    let batch = RecordBatch::try_from_iter([
        (
            "counts",
            Arc::new(arrow_array::UInt32Array::from(counts.to_vec())) as arrow_array::ArrayRef,
        ),
        (
            "irf_counts",
            Arc::new(arrow_array::Float64Array::from(vec![
                0.0, 9.0, 1.0, 0.0, 0.0,
            ])),
        ),
    ])
    .expect("batch");
    let mut buffer = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut buffer, &batch.schema()).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
    }
    let mut ipc = histogram_msg().meta("acquisition_time_s", 2.0);
    ipc.header.format = flowdaq_schemas::PayloadFormat::ArrowIpc;
    ipc.payload.push(Bytes::from(buffer));
    let from_arrays = decode(&arrays).expect("arrays");
    let from_ipc = decode(&ipc).expect("ipc");
    assert_eq!(from_arrays.batches, from_ipc.batches);
    let (table, row) = &from_arrays.batches[0];
    assert_eq!(*table, Table::TcspcHistograms);
    let photons = row.column_by_name("photon_count").expect("photons");
    assert_eq!(photons.as_primitive::<UInt64Type>().value(0), 152);
    let end = row.column_by_name("window_end_ps").expect("end");
    assert_eq!(
        end.as_primitive::<arrow::datatypes::Int64Type>().value(0),
        2_000_000_000_000
    );
}

#[test]
fn bad_histogram_messages_say_what_is_wrong() {
    let with = |counts: &[f64]| histogram_msg().array_f64("counts", &[counts.len() as u64], counts);
    for (msg, expected) in [
        (with(&[1.0, f64::NAN, 2.0]), "whole numbers"),
        (with(&[1.0, -1.0, 2.0]), "whole numbers"),
        (with(&[1.0, 5e9, 2.0]), "whole numbers"),
        (with(&[1.0]), "2 to 65536"),
        (with(&[1.0, 2.0]).meta("channel", 64), "meta.channel"),
        (
            with(&[1.0, 2.0]).meta("bin_width_ps", -1.0),
            "meta.bin_width_ps",
        ),
        (
            with(&[1.0, 2.0]).meta("acquisition_time_s", -1.0),
            "acquisition_time_s",
        ),
        (with(&[1.0, 2.0]).meta("window", 1), "unknown meta key"),
        (
            with(&[1.0, 2.0]).array_f64("irf_counts", &[2], &[0.0, 0.0]),
            "positive sum",
        ),
        (
            histogram_msg().array_f64("irf_counts", &[2], &[1.0, 1.0]),
            "counts is required",
        ),
    ] {
        let why = reason(&msg);
        assert!(why.contains(expected), "{why} (expected {expected:?})");
    }
}
