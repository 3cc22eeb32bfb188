//! The conformance kit against the built-in connectors: simulators and file replays must pass
//! every rule a vendor's sender is held to; a sender that breaks rules must fail, each broken
//! rule named. Real ZeroMQ sockets on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use flowdaq_connectors::conformance::{check, render, CheckConfig, Report, RULES};
use flowdaq_connectors::decode::DecodeLimits;
use flowdaq_connectors::runner::{run_connector, Pacing};
use flowdaq_connectors::transport::BindConfig;
use flowdaq_connectors::{ConnectorConfig, OutboundMessage};
use flowdaq_schemas::StreamKind;
use tokio::sync::{oneshot, watch};
use zeromq::{PushSocket, Socket, SocketSend, ZmqMessage};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn check_config(messages: u64) -> CheckConfig {
    CheckConfig {
        bind: BindConfig {
            bluesky: None,
            pull: Some("tcp://127.0.0.1:0".into()),
            sub: None,
            router: None,
            max_queued_bytes: 256 << 20,
        },
        messages,
        timeout: Duration::from_secs(60),
        limits: DecodeLimits {
            max_message_bytes: 64 << 20,
            reject_non_finite_intensities: true,
        },
    }
}

/// Starts the kit for `messages` messages; the PULL endpoint it bound and the running check.
async fn start_check(messages: u64) -> (String, tokio::task::JoinHandle<Report>) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let checking = tokio::spawn(async move {
        check(&check_config(messages), move |bound| {
            let _ = ready_tx.send(bound.pull.clone());
        })
        .await
        .expect("bind")
    });
    let endpoint = ready_rx.await.expect("ready").expect("pull bound");
    (endpoint, checking)
}

/// The kit's report on the first `messages` messages of a built-in connector.
async fn check_connector(config: serde_json::Value, messages: u64) -> Report {
    let config: ConnectorConfig = serde_json::from_value(config).expect("connector config");
    let (endpoint, checking) = start_check(messages).await;
    let (_stop_tx, stop_rx) = watch::channel(false);
    let connector = config.build().expect("connector");
    let sending = tokio::spawn(run_connector(connector, endpoint, Pacing::Unpaced, stop_rx));
    let report = checking.await.expect("check task");
    sending.abort();
    report
}

/// How many messages a finite connector sends in all.
fn messages_of(config: &serde_json::Value) -> u64 {
    let config: ConnectorConfig = serde_json::from_value(config.clone()).expect("connector config");
    let mut connector = config.build().expect("connector");
    let mut messages = 0;
    while connector.next_message().expect("message").is_some() {
        messages += 1;
    }
    messages
}

fn assert_passes(name: &str, report: &Report) {
    let broken: Vec<_> = report.rules.iter().filter(|r| r.broken > 0).collect();
    assert!(
        report.passed && broken.is_empty(),
        "{name}: {broken:?}, {} of {} messages",
        report.messages,
        report.expected_messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_connectors_pass_every_rule() {
    let ptu = serde_json::json!({"type": "ptu_replay", "source": "tcspc-1",
                                 "path": data("hydraharp_t3_beads.ptu"), "records_per_message": 16384});
    let spectra_file = serde_json::json!({"type": "spectra_file", "source": "jasco",
                                          "path": data("jasco_v570_pbse_qd_absorbance.txt")});
    let cases = [
        (
            "simulated spectrometer",
            // 256 pixels: the simulation's noise is slow in unoptimized test builds.
            serde_json::json!({"type": "simulated_spectrometer", "source": "sim-pl", "pixels": 256,
                               "spectra_per_message": 4}),
            10,
        ),
        (
            "simulated phase sensor",
            serde_json::json!({"type": "simulated_phase_sensor", "source": "sim-phase"}),
            8,
        ),
        ("PTU replay (every message)", ptu.clone(), messages_of(&ptu)),
        (
            "spectra file replay (every message)",
            spectra_file.clone(),
            messages_of(&spectra_file),
        ),
    ];
    for (name, config, messages) in cases {
        assert!(messages > 0, "{name}");
        let report = check_connector(config, messages).await;
        assert_passes(name, &report);
        assert_eq!(report.messages, messages, "{name}");
        let source = report.sources.values().next().expect("one source");
        assert_eq!(source.messages, messages, "{name}");
        assert!(source.rows > 0, "{name}: {source:?}");
    }
}

/// The frames of a spectrum from `source` with `seq` and an instrument time.
fn spectrum(source: &str, seq: u64, time_ns: i64) -> Vec<Bytes> {
    let axis: Vec<f64> = (0..16).map(|i| 400.0 + f64::from(i)).collect();
    let counts: Vec<f32> = (0..16).map(|i| 100.0 + i as f32).collect();
    let mut message = OutboundMessage::new(source, StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 10.0)
        .array_f64("wavelength_nm", &[16], &axis)
        .array_f32("intensity_counts", &[16], &counts);
    message.header.seq = seq;
    message.header.instrument_time_ns = Some(time_ns);
    message.frames()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_breaks_rules_fails_with_each_rule_named() {
    let (endpoint, checking) = start_check(6).await;
    let mut socket = PushSocket::new();
    socket.connect(&endpoint).await.expect("connect");
    let mut short = spectrum("vendor", 5, 5_000);
    if let Some(last) = short.last_mut() {
        *last = last.slice(..8);
    }
    let messages = [
        spectrum("vendor", 0, 2_000),
        spectrum("vendor", 3, 3_000), // seq jumps from 0 to 3: two messages missing
        spectrum("vendor", 4, 1_000), // the instrument clock goes back
        spectrum("vendor", 2, 4_000), // seq goes back
        vec![Bytes::from_static(b"{not json")],
        short, // a payload shorter than its header says
    ];
    for frames in messages {
        let message = ZmqMessage::try_from(frames).expect("frames");
        socket.send(message).await.expect("send");
    }
    let report = checking.await.expect("check task");
    assert!(!report.passed);
    let broken = |rule: &str| {
        report
            .rules
            .iter()
            .find(|r| r.rule == rule)
            .map_or(0, |r| r.broken)
    };
    for rule in [RULES[2], RULES[6], RULES[9], RULES[10], RULES[11]] {
        assert_eq!(broken(rule), 1, "{rule}: {report:#?}");
    }
    assert_eq!(report.rules.iter().map(|r| r.broken).sum::<u64>(), 5);
    let vendor = &report.sources["vendor"];
    assert_eq!(vendor.missing_messages, 2);
    assert_eq!(vendor.seq_regressions, 1);
    assert_eq!(vendor.time_regressions, 1);
    let text = render(&report);
    assert!(text.contains("FAIL payload frames match"), "{text}");
    assert!(text.ends_with("FAIL\n"), "{text}");
}
