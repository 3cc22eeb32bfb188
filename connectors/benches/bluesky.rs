//! Bluesky ingest cost per event: one msgpack-numpy `event` document holding a 2048-pixel
//! spectrum and three scalar readings, read (`parse`), translated into its wire messages, and
//! translated then decoded into its Arrow rows (what the transport and an accept worker pay
//! per event).
//!
//!     cargo bench -p flowdaq-connectors --bench bluesky

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowdaq_connectors::bluesky::{BlueskyConfig, BlueskyCounters, SpectrumMapping, Translator};
use flowdaq_connectors::decode::{decode_message, DecodeContext, DecodeLimits};
use rmpv::Value as M;

const RUN: &str = "11111111-2222-4333-8444-555555555555";
const DESCRIPTOR: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const PIXELS: usize = 2048;

fn frame(name: &str, document: &M) -> Vec<u8> {
    let mut frame = format!(" {name} ").into_bytes();
    rmpv::encode::write_value(&mut frame, document).expect("encodes");
    frame
}

fn ndarray(values: &[f64]) -> M {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    M::Map(vec![
        (M::Binary(b"nd".to_vec()), M::Boolean(true)),
        (M::Binary(b"type".to_vec()), M::from("<f8")),
        (M::Binary(b"kind".to_vec()), M::Binary(Vec::new())),
        (
            M::Binary(b"shape".to_vec()),
            M::Array(vec![M::from(values.len() as u64)]),
        ),
        (M::Binary(b"data".to_vec()), M::Binary(data)),
    ])
}

fn map(entries: Vec<(&str, M)>) -> M {
    M::Map(entries.into_iter().map(|(k, v)| (M::from(k), v)).collect())
}

fn bench_event(c: &mut Criterion) {
    let axis: Vec<f64> = (0..PIXELS).map(|i| 400.0 + 0.15 * i as f64).collect();
    let spectrum: Vec<f64> = axis
        .iter()
        .map(|nm| 50.0 + 1000.0 * (-0.5 * ((nm - 520.0) / 8.0f64).powi(2)).exp())
        .collect();
    let config = BlueskyConfig {
        listen: "tcp://127.0.0.1:0".into(),
        spectra: vec![SpectrumMapping {
            data_key: "spec_intensity".into(),
            wavelength_key: "spec_wavelength".into(),
            source: Some("spec-1".into()),
            kind: "pl".into(),
            integration_time_key: None,
            integration_time_ms: Some(100.0),
        }],
        ..BlueskyConfig::default()
    };
    let number = |source: &str| {
        map(vec![
            ("dtype", M::from("number")),
            ("shape", M::Array(Vec::new())),
            ("source", M::from(source)),
        ])
    };
    let start = frame(
        "start",
        &map(vec![("uid", M::from(RUN)), ("time", M::F64(1.0))]),
    );
    let descriptor = frame(
        "descriptor",
        &map(vec![
            ("uid", M::from(DESCRIPTOR)),
            ("run_start", M::from(RUN)),
            ("name", M::from("primary")),
            ("time", M::F64(1.0)),
            (
                "data_keys",
                map(vec![
                    (
                        "spec_intensity",
                        map(vec![
                            ("dtype", M::from("array")),
                            ("shape", M::Array(vec![M::from(PIXELS as u64)])),
                            ("source", M::from("SIM:spec")),
                        ]),
                    ),
                    ("motor", number("SIM:motor")),
                    ("motor_setpoint", number("SIM:motor_setpoint")),
                    ("bath_temperature", number("SIM:t")),
                ]),
            ),
            (
                "configuration",
                map(vec![(
                    "spec",
                    map(vec![(
                        "data",
                        map(vec![("spec_wavelength", ndarray(&axis))]),
                    )]),
                )]),
            ),
        ]),
    );
    let event = |seq: u64| {
        frame(
            "event",
            &map(vec![
                ("descriptor", M::from(DESCRIPTOR)),
                ("seq_num", M::from(seq)),
                ("time", M::F64(2.0)),
                ("uid", M::from("e")),
                (
                    "data",
                    map(vec![
                        ("spec_intensity", ndarray(&spectrum)),
                        ("motor", M::F64(1.5)),
                        ("motor_setpoint", M::F64(1.5)),
                        ("bath_temperature", M::F64(24.5)),
                    ]),
                ),
                ("timestamps", map(vec![("motor", M::F64(2.0))])),
            ]),
        )
    };
    let event_frame = event(1);
    let mut translator = Translator::new(config, Arc::new(BlueskyCounters::default()));
    for document in [&start, &descriptor] {
        assert!(translator.translate(document).refusals.is_empty());
    }
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1_764_000_000_000_000_000,
        default_run_id: "bench",
        limits: &limits,
    };
    let mut g = c.benchmark_group("bluesky_event_2048px");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| flowdaq_connectors::bluesky::document::parse(&event_frame).map(|d| d.body.len()))
    });
    g.bench_function("translate", |b| {
        b.iter(|| translator.translate(&event_frame).messages.len())
    });
    g.bench_function("translate_and_decode", |b| {
        b.iter(|| {
            let translated = translator.translate(&event_frame);
            translated
                .messages
                .iter()
                .map(|m| match decode_message(&m.frames(), &ctx) {
                    Ok(decoded) => decoded.batches.len(),
                    Err((_, err)) => panic!("{err}"),
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_event);
criterion_main!(benches);
