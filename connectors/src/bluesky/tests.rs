//! The translator against hand-written document sequences: what each document becomes, and
//! that what it produces passes the wire-protocol decoder.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::decode::{decode_message, DecodeContext, DecodeLimits};
use crate::message::OutboundMessage;
use flowdaq_schemas::{StreamKind, Table};

const RUN: &str = "11111111-2222-4333-8444-555555555555";
const DESCRIPTOR: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

fn config() -> BlueskyConfig {
    BlueskyConfig {
        listen: "tcp://127.0.0.1:0".into(),
        run_id_key: "sample".into(),
        condition_key: "condition".into(),
        spectra: vec![SpectrumMapping {
            data_key: "spec_intensity".into(),
            wavelength_key: "spec_wavelength".into(),
            source: Some("spec-1".into()),
            kind: "pl".into(),
            integration_time_key: None,
            integration_time_ms: Some(50.0),
        }],
        ..BlueskyConfig::default()
    }
}

fn frame(name: &str, body: serde_json::Value) -> Vec<u8> {
    let mut frame = format!(" {name} ").into_bytes();
    frame.extend(serde_json::to_vec(&body).expect("json"));
    frame
}

fn translator() -> (Translator, Arc<BlueskyCounters>) {
    let counters = Arc::new(BlueskyCounters::default());
    (Translator::new(config(), counters.clone()), counters)
}

fn open_run(translator: &mut Translator) {
    let start = translator.translate(&frame(
        "start",
        json!({"uid": RUN, "time": 1.5, "sample": "CsPbBr3 batch 7", "condition": "c-1",
               "plan_name": "scan", "scan_id": 3}),
    ));
    assert!(start.refusals.is_empty(), "{:?}", start.refusals);
    let descriptor = translator.translate(&frame(
        "descriptor",
        json!({"uid": DESCRIPTOR, "run_start": RUN, "time": 1.6, "name": "primary",
               "data_keys": {
                   "spec_intensity": {"dtype": "array", "shape": [4], "source": "SIM:s"},
                   "motor": {"dtype": "number", "shape": [], "source": "SIM:m", "units": "mm"},
               },
               "configuration": {"spec": {"data": {"spec_wavelength": [500.0, 501.0, 502.0, 503.0]}}}}),
    ));
    assert!(descriptor.refusals.is_empty(), "{:?}", descriptor.refusals);
}

fn decoded_table(message: &OutboundMessage) -> Table {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 0,
        default_run_id: "default",
        limits: &limits,
    };
    match decode_message(&message.frames(), &ctx) {
        Ok(decoded) => decoded.batches[0].0,
        Err((_, err)) => panic!("{:?} does not decode: {err}", message.header),
    }
}

#[test]
fn a_run_becomes_run_spectra_and_readings_messages_that_decode() {
    let (mut translator, counters) = translator();
    open_run(&mut translator);
    let page = translator.translate(&frame(
        "event_page",
        json!({"descriptor": DESCRIPTOR, "seq_num": [1, 2], "time": [2.0, 3.0], "uid": ["a", "b"],
               "data": {"spec_intensity": [[1, 5, 9, 2], [1, 6, 9, 2]], "motor": [0.5, 1.5]},
               "timestamps": {"spec_intensity": [2.0, 3.0], "motor": [2.0, 3.0]}}),
    ));
    assert!(page.refusals.is_empty(), "{:?}", page.refusals);
    let stop = translator.translate(&frame(
        "stop",
        json!({"uid": "stop-1", "run_start": RUN, "time": 4.0, "exit_status": "success"}),
    ));
    let kinds: Vec<(StreamKind, &str, u64)> = page
        .messages
        .iter()
        .map(|m| (m.header.stream, m.header.source.as_str(), m.header.seq))
        .collect();
    assert_eq!(
        kinds,
        [
            (StreamKind::Spectra, "spec-1", 1),
            (StreamKind::Readings, "bluesky", 1),
            (StreamKind::Spectra, "spec-1", 2),
            (StreamKind::Readings, "bluesky", 2),
        ]
    );
    for message in &page.messages {
        assert_eq!(message.header.session.as_deref(), Some(DESCRIPTOR));
        assert_eq!(message.header.run_id.as_deref(), Some("CsPbBr3_batch_7"));
        assert_eq!(message.header.condition_id.as_deref(), Some("c-1"));
    }
    assert_eq!(
        page.messages[1].header.instrument_time_ns,
        Some(2_000_000_000)
    );
    assert_eq!(page.messages[0].header.meta["integration_time_ms"], 50.0);
    let tables: Vec<Table> = page.messages.iter().map(decoded_table).collect();
    assert_eq!(
        tables,
        [
            Table::Spectra,
            Table::Readings,
            Table::Spectra,
            Table::Readings
        ]
    );
    let stop = &stop.messages[0];
    assert_eq!((stop.header.stream, stop.header.seq), (StreamKind::Run, 3));
    assert!(stop.header.end_of_stream);
    assert_eq!(decoded_table(stop), Table::Runs);
    let counts = counters.snapshot();
    assert_eq!(
        (
            counts.start_documents,
            counts.events,
            counts.stop_documents,
            counts.open_runs
        ),
        (1, 2, 1, 0)
    );
}

#[test]
fn a_spectrum_that_cannot_be_read_costs_only_itself() {
    let (mut translator, counters) = translator();
    open_run(&mut translator);
    let event = translator.translate(&frame(
        "event",
        json!({"descriptor": DESCRIPTOR, "seq_num": 1, "time": 2.0, "uid": "a",
               "data": {"spec_intensity": "not an array", "motor": 0.5},
               "timestamps": {}}),
    ));
    assert_eq!(event.refusals.len(), 1);
    assert!(event.refusals[0].to_string().contains("spec_intensity"));
    assert_eq!(event.messages.len(), 1);
    assert_eq!(event.messages[0].header.stream, StreamKind::Readings);
    assert_eq!(counters.snapshot().refused_documents, 1);
}

#[test]
fn documents_of_runs_not_open_are_refused_and_a_run_that_never_stops_is_forgotten() {
    let (mut translator, counters) = translator();
    let orphan = translator.translate(&frame(
        "event",
        json!({"descriptor": DESCRIPTOR, "seq_num": 1, "time": 2.0, "data": {}}),
    ));
    assert!(orphan.refusals[0].to_string().contains("unknown"));
    open_run(&mut translator);
    for i in 0..64 {
        let uid = format!("{i:08}-0000-4000-8000-000000000000");
        let start = translator.translate(&frame("start", json!({"uid": uid, "time": 1.0})));
        assert!(start.refusals.is_empty());
    }
    assert_eq!(counters.snapshot().open_runs, 64);
    // The first run was the longest open: forgotten, with its descriptor.
    let late = translator.translate(&frame(
        "event",
        json!({"descriptor": DESCRIPTOR, "seq_num": 2, "time": 2.0, "data": {"motor": 1.0}}),
    ));
    assert_eq!(late.refusals.len(), 1);
    let stop = translator.translate(&frame("stop", json!({"run_start": RUN, "time": 3.0})));
    assert!(stop.refusals[0].to_string().contains("not open"));
}

#[test]
fn other_prefixes_are_skipped_and_oversized_documents_refused_unread() {
    let counters = Arc::new(BlueskyCounters::default());
    let mut translator = Translator::new(
        BlueskyConfig {
            prefix: "lab".into(),
            max_document_bytes: 2048,
            ..config()
        },
        counters.clone(),
    );
    let other = translator.translate(b"other start {\"uid\": \"x\"}");
    assert!(other.messages.is_empty() && other.refusals.is_empty());
    let mut big = b"lab start ".to_vec();
    big.extend(std::iter::repeat_n(b' ', 4096));
    let refused = translator.translate(&big);
    assert!(refused.refusals[0]
        .to_string()
        .contains("max_document_bytes"));
    let counts = counters.snapshot();
    assert_eq!(
        (counts.other_prefix_documents, counts.refused_documents),
        (1, 1)
    );
}

#[test]
fn configurations_that_make_no_sense_are_refused() {
    let base = config();
    let mut no_time = base.clone();
    no_time.spectra[0].integration_time_ms = None;
    let mut same_source = base.clone();
    same_source.spectra[0].source = Some("bluesky".into());
    let mut bad_kind = base.clone();
    bad_kind.spectra[0].kind = "raman".into();
    let mut twice = base.clone();
    twice.spectra.push(twice.spectra[0].clone());
    for (config, expected) in [
        (no_time, "integration_time"),
        (same_source, "own"),
        (bad_kind, "raman"),
        (twice, "mapped twice"),
    ] {
        let err = config.validate().expect_err(expected);
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
    assert_eq!(base.validate(), Ok(()));
}

#[test]
fn one_run_cannot_hold_unbounded_streams() {
    let (mut translator, _) = translator();
    open_run(&mut translator);
    let mut refused = 0;
    for i in 0..1100 {
        let uid = format!("{i:08}-1111-4000-8000-000000000000");
        let descriptor = translator.translate(&frame(
            "descriptor",
            json!({"uid": uid, "run_start": RUN, "time": 1.0, "name": "s", "data_keys": {}}),
        ));
        refused += descriptor.refusals.len();
    }
    // 1024 held, the run's first one among them.
    assert_eq!(refused, 1100 + 1 - 1024);
    let stop = translator.translate(&frame("stop", json!({"run_start": RUN, "time": 3.0})));
    assert!(stop.refusals.is_empty());
    let after = translator.translate(&frame(
        "descriptor",
        json!({"uid": "ffffffff-1111-4000-8000-000000000000", "run_start": RUN, "time": 1.0,
               "data_keys": {}}),
    ));
    assert!(after.refusals[0].to_string().contains("not open"));
}
