//! Frame-level tests of the `readings` and `run` streams: good messages and each way to be bad.

use super::*;
use crate::message::OutboundMessage;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};

fn decode(msg: &OutboundMessage) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1_764_000_000_000_000_000,
        default_run_id: "default",
        limits: &limits,
    };
    decode_message(&msg.frames(), &ctx)
}

fn reason(msg: &OutboundMessage) -> String {
    match decode(msg) {
        Ok(_) => panic!("message should have been rejected"),
        Err((_, err)) => err.to_string(),
    }
}

fn readings_msg() -> OutboundMessage {
    OutboundMessage::new("stage-1", StreamKind::Readings)
        .meta("stream_name", "primary")
        .meta("units", serde_json::json!({"temperature": "degC"}))
        .meta("text", serde_json::json!({"valve": ["open", null]}))
        .meta(
            "timestamps_ns",
            serde_json::json!({"temperature": [90, null]}),
        )
        .array_f64("temperature", &[2], &[24.5, f64::NAN])
        .array_i32("counts", &[2], &[7, -3])
        .array_i64(EVENT_TIME_ARRAY, &[2], &[100, 200])
}

#[test]
fn readings_become_one_row_per_key_and_event() {
    let decoded = decode(&readings_msg()).expect("valid");
    let (table, batch) = &decoded.batches[0];
    assert_eq!(*table, Table::Readings);
    assert_eq!(batch.num_rows(), 6);
    let column = |name: &str| batch.column_by_name(name).expect(name).clone();
    let keys: Vec<_> = column("data_key")
        .as_string::<i32>()
        .iter()
        .map(|k| k.unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "temperature",
            "counts",
            "valve",
            "temperature",
            "counts",
            "valve"
        ]
    );
    let values = column("value");
    let values = values.as_primitive::<Float64Type>();
    assert_eq!(values.value(0), 24.5);
    assert_eq!(values.value(1), 7.0);
    assert!(values.is_null(2) && values.is_null(3));
    assert_eq!(values.value(4), -3.0);
    let text = column("value_text");
    let text = text.as_string::<i32>();
    assert_eq!(text.value(2), "open");
    // A failed read is kept as its text, not as a number.
    assert_eq!(text.value(3), "NaN");
    assert!(text.is_null(5));
    let times = arrow::compute::cast(&column("event_time_ns"), &arrow_schema::DataType::Int64)
        .expect("cast");
    let times = times.as_primitive::<Int64Type>();
    assert_eq!((times.value(0), times.value(5)), (100, 200));
    let reading_times =
        arrow::compute::cast(&column("reading_time_ns"), &arrow_schema::DataType::Int64)
            .expect("cast");
    let reading_times = reading_times.as_primitive::<Int64Type>();
    assert_eq!(reading_times.value(0), 90);
    assert!(reading_times.is_null(1) && reading_times.is_null(3));
    let units = column("units");
    let units = units.as_string::<i32>();
    assert_eq!(units.value(0), "degC");
    assert!(units.is_null(1));
}

#[test]
fn readings_as_arrow_ipc_match_the_arrays_form() {
    use arrow_array::{Float64Array, Int64Array, StringArray};
    let batch = RecordBatch::try_from_iter([
        (
            "temperature",
            std::sync::Arc::new(Float64Array::from(vec![24.5, f64::NAN])) as arrow_array::ArrayRef,
        ),
        ("counts", std::sync::Arc::new(Int64Array::from(vec![7, -3]))),
        (
            "valve",
            std::sync::Arc::new(StringArray::from(vec![Some("open"), None])),
        ),
        (
            EVENT_TIME_ARRAY,
            std::sync::Arc::new(Int64Array::from(vec![100, 200])),
        ),
    ])
    .expect("batch");
    let mut frame = Vec::new();
    {
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut frame, &batch.schema()).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
    }
    let mut ipc = OutboundMessage::new("stage-1", StreamKind::Readings)
        .meta("stream_name", "primary")
        .meta(
            "timestamps_ns",
            serde_json::json!({"temperature": [90, null]}),
        )
        .meta("units", serde_json::json!({"temperature": "degC"}));
    ipc.header.format = PayloadFormat::ArrowIpc;
    ipc.payload.push(bytes::Bytes::from(frame));
    let from_ipc = decode(&ipc).expect("valid ipc");
    let from_arrays = decode(&readings_msg()).expect("valid arrays");
    assert_eq!(from_ipc.batches[0].1, from_arrays.batches[0].1);
}

#[test]
fn bad_readings_say_what_is_wrong() {
    let cases = [
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[2], &[1.0, 2.0])
                .array_f64("b", &[3], &[1.0, 2.0, 3.0]),
            "one value per event",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings).array_f64("a", &[1, 2], &[1.0, 2.0]),
            "one-dimensional",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .meta("colour", "red"),
            "unknown meta key",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .meta("units", serde_json::json!({"b": "mm"})),
            "not a reading",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .meta("text", serde_json::json!({"a": ["x"]})),
            "given twice",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .meta("text", serde_json::json!({"b": ["x", "y"]})),
            "2 values but the message holds 1 events",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings).array_f64("a", &[0], &[]),
            "at least one event",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .meta("timestamps_ns", serde_json::json!({"a": [1.5]})),
            "integer ns or null",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .meta("timestamps_ns", serde_json::json!({"a": [1, 2]})),
            "a list of 1 times",
        ),
        (
            OutboundMessage::new("s", StreamKind::Readings)
                .array_f64("a", &[1], &[1.0])
                .array_f64(EVENT_TIME_ARRAY, &[1], &[1.0]),
            "dtype <f8",
        ),
    ];
    for (msg, expected) in cases {
        let err = reason(&msg);
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
}

fn run_msg(document: &str) -> OutboundMessage {
    OutboundMessage::new("bluesky", StreamKind::Run)
        .meta("document", document)
        .meta("run_uid", "run-1")
        .meta("plan_name", "scan")
        .meta("scan_id", 4)
        .meta("body", serde_json::json!({"uid": "run-1", "sample": "QD"}))
}

#[test]
fn a_run_document_is_one_runs_row_with_its_body() {
    let decoded = decode(&run_msg("start")).expect("valid");
    let (table, batch) = &decoded.batches[0];
    assert_eq!(*table, Table::Runs);
    assert_eq!(batch.num_rows(), 1);
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .expect(name)
            .as_string::<i32>()
            .value(0)
            .to_string()
    };
    assert_eq!(text("document"), "start");
    assert_eq!(text("plan_name"), "scan");
    let body: serde_json::Value = serde_json::from_str(&text("body_json")).expect("json");
    assert_eq!(body["sample"], "QD");
    let scan_id = batch.column_by_name("scan_id").expect("scan_id");
    assert_eq!(scan_id.as_primitive::<Int64Type>().value(0), 4);
}

#[test]
fn bad_run_documents_say_what_is_wrong() {
    let mut with_array = run_msg("start").array_f64("x", &[1], &[1.0]);
    with_array.header.seq = 1;
    let cases = [
        (run_msg("event"), "is not one of"),
        (run_msg("start").meta("run_uid", ""), "run_uid is required"),
        (
            run_msg("start").meta("scan_id", "four"),
            "scan_id must be an integer",
        ),
        (
            run_msg("start").meta("body", "text"),
            "body must be the document",
        ),
        (
            run_msg("start").meta("plan_name", "a\nb"),
            "control characters",
        ),
        (with_array, "has no payload"),
    ];
    for (msg, expected) in cases {
        let err = reason(&msg);
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
}
