//! Conditions, steady-state outcomes and the feature stream, end to end over real sockets.
//!
//! An optimizer's view: conditions are registered (control endpoint and HTTP), PL spectra
//! whose peak energy follows a known transient to a known settled value are pushed over ZeroMQ
//! with no condition in their headers, and a ZeroMQ SUB (the `zeromq` crate's, not ours) follows
//! the outcomes live. The outcome must equal the settled value within noise and must not be
//! decided before the transient has died out; a condition that never settles gets an unsettled
//! outcome with the reason; replay returns every feature row exactly once across pages; and
//! after a restart the stream numbers and the current condition carry on.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use bytes::Bytes;
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::PushSender;
use flowdaq_daq::config::OutcomeFeatureConfig;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::StreamKind;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeromq::{ReqSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

const PIXELS: usize = 512;
const RUN: &str = "opt";
const SECOND_NS: i64 = 1_000_000_000;
const T0_NS: i64 = 1_764_000_000 * SECOND_NS;
const HC_EV_NM: f64 = 1239.841984;
/// Allowed drift over the 2 s window, eV.
const MAX_DRIFT_EV: f64 = 0.0015;
const WINDOW_S: f64 = 2.0;

fn axis_nm() -> Vec<f64> {
    (0..PIXELS)
        .map(|i| 420.0 + 200.0 * i as f64 / PIXELS as f64)
        .collect()
}

/// One PL spectrum peaking at `energy_ev`, stamped at `time_ns` on the instrument clock.
fn spectrum(seq: u64, time_ns: i64, energy_ev: f64) -> OutboundMessage {
    let center_nm = HC_EV_NM / energy_ev;
    let counts: Vec<f32> = axis_nm()
        .iter()
        .map(|nm| (50.0 + 3000.0 * (-0.5 * ((nm - center_nm) / 8.0).powi(2)).exp()) as f32)
        .collect();
    let mut message = OutboundMessage::new("spec-1", StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 10.0)
        .array_f64("wavelength_nm", &[PIXELS as u64], &axis_nm())
        .array_f32("intensity_counts", &[PIXELS as u64], &counts);
    message.header.run_id = Some(RUN.into());
    message.header.seq = seq;
    message.header.instrument_time_ns = Some(time_ns);
    message
}

/// Pushes `energies_ev[i]` at `start_ns + i x 100 ms` and waits until the server has them all.
async fn push_condition(
    server: &flowdaq_daq::RunningServer,
    push: &mut PushSender,
    seq: &mut u64,
    start_ns: i64,
    energies_ev: impl Iterator<Item = f64>,
) {
    for (i, energy) in energies_ev.enumerate() {
        let time_ns = start_ns + i as i64 * SECOND_NS / 10;
        push.send(spectrum(*seq, time_ns, energy))
            .await
            .expect("send");
        *seq += 1;
    }
    let processed = server
        .metrics
        .wait_processed(*seq, Duration::from_secs(60))
        .await;
    assert!(processed, "{} messages not processed within 60 s", *seq);
}

/// Deterministic noise in [-1, 1] (a fixed sequence, so the test cannot flake).
fn jitter(i: u64) -> f64 {
    ((i as f64 * 12.9898).sin() * 43_758.545).fract()
}

async fn control(endpoint: &str, request: Value) -> Vec<Bytes> {
    let mut req = ReqSocket::new();
    req.connect(endpoint).await.expect("connect control");
    req.send(ZmqMessage::from(request.to_string()))
        .await
        .expect("send request");
    let reply = tokio::time::timeout(Duration::from_secs(30), req.recv())
        .await
        .expect("control answers within 30 s")
        .expect("reply");
    reply.into_vec()
}

async fn http_post(address: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect http");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let status: u16 = response[9..12].parse().expect("status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn register(condition: &str, start_ns: i64, temperature: f64) -> Value {
    json!({"op": "register_condition", "run_id": RUN, "condition_id": condition,
           "parameters": {"temperature": {"value": temperature, "unit": "degC"}, "br_to_pb_ratio": 2.0},
           "start_time_ns": start_ns, "registered_by": "test-optimizer"})
}

fn json_frame(frame: &Bytes) -> Value {
    serde_json::from_slice(frame).expect("json frame")
}

fn outcome_sql_row(
    batch: &arrow::record_batch::RecordBatch,
    row: usize,
) -> (String, bool, Option<String>, f64, i64, i64) {
    let text = |name: &str| batch.column_by_name(name).expect(name).as_string::<i32>();
    let reason = text("reason");
    (
        text("condition_id").value(row).to_string(),
        batch
            .column_by_name("settled")
            .expect("settled")
            .as_boolean()
            .value(row),
        reason.is_valid(row).then(|| reason.value(row).to_string()),
        batch
            .column_by_name("mean")
            .expect("mean")
            .as_primitive::<Float64Type>()
            .value(row),
        batch
            .column_by_name("first_ns")
            .expect("first")
            .as_primitive::<Int64Type>()
            .value(row),
        batch
            .column_by_name("last_ns")
            .expect("last")
            .as_primitive::<Int64Type>()
            .value(row),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_settle_after_the_transient_stream_live_and_replay_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::embedded_pull_only(dir.path());
    config.publish.listen = "tcp://127.0.0.1:0".into();
    config.control.listen = "tcp://127.0.0.1:0".into();
    config.http.listen = "127.0.0.1:0".into();
    config.outcomes.min_wait_s = 1.0;
    config.outcomes.window_s = WINDOW_S;
    config.outcomes.min_samples = 8;
    config.outcomes.timeout_s = 120.0;
    config.outcomes.features = BTreeMap::from([(
        "spectral_features.peak_energy_ev".to_string(),
        OutcomeFeatureConfig {
            max_std: 0.002,
            max_drift: MAX_DRIFT_EV,
        },
    )]);
    let server = flowdaq_daq::start(config.clone()).await.expect("start");
    let control_at = server.control_endpoint.clone().expect("control");
    let http = server.http_addr.expect("http");

    // A live subscriber; a warm-up registration on another run proves its subscription is in
    // place before the data flows (bounded: 50 attempts).
    let mut sub = SubSocket::new();
    sub.connect(server.publish_endpoint.as_deref().expect("publish"))
        .await
        .expect("connect sub");
    sub.subscribe("json/condition_outcomes/")
        .await
        .expect("subscribe");
    sub.subscribe("json/conditions/warmup/")
        .await
        .expect("subscribe");
    let mut subscribed = false;
    for attempt in 0..50 {
        let answer = control(
            &control_at,
            json!({"op": "register_condition", "run_id": "warmup", "condition_id": format!("w{attempt}")}),
        )
        .await;
        assert_eq!(json_frame(&answer[0])["ok"], true);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the subscription never reached the server");

    // c-1: transient 2.45 -> 2.40 eV (tau 1.5 s), 20 s at 10 spectra/s, registered over ZeroMQ.
    let (settled_1, step_1, tau_s, noise_ev) = (2.40, 0.05, 1.5, 0.0004);
    let answer = control(&control_at, register("c-1", T0_NS, 120.0)).await;
    assert_eq!(json_frame(&answer[0])["ok"], true, "{:?}", answer);
    let again = control(&control_at, register("c-1", T0_NS, 120.0)).await;
    assert!(json_frame(&again[0])["error"]
        .as_str()
        .is_some_and(|e| e.contains("already registered")));
    let mut push = PushSender::connect(server.endpoints.pull.as_deref().expect("pull"))
        .await
        .expect("connect push");
    let mut seq = 0u64;
    let transient = (0..200u64).map(|i| {
        let t_s = i as f64 * 0.1;
        settled_1 + step_1 * (-t_s / tau_s).exp() + noise_ev * jitter(i)
    });
    push_condition(&server, &mut push, &mut seq, T0_NS, transient).await;

    // c-2 over HTTP: a ramp that never settles, 10 s.
    let t2 = T0_NS + 20 * SECOND_NS;
    let (status, body) =
        http_post(http, "/conditions", &register("c-2", t2, 130.0).to_string()).await;
    assert_eq!((status, &body["ok"]), (200, &json!(true)), "{body}");
    let (status, body) = http_post(http, "/conditions", "{\"run_id\": \"opt\"}").await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("condition_id is required")));
    let ramp = (0..100u64).map(|i| 2.30 + 0.004 * i as f64);
    push_condition(&server, &mut push, &mut seq, t2, ramp).await;

    // c-3: steady at 2.52 eV from the start, 10 s.
    let t3 = T0_NS + 30 * SECOND_NS;
    let answer = control(&control_at, register("c-3", t3, 140.0)).await;
    assert_eq!(json_frame(&answer[0])["ok"], true);
    let steady = (0..100u64).map(|i| 2.52 + noise_ev * jitter(1000 + i));
    push_condition(&server, &mut push, &mut seq, t3, steady).await;

    // Live: the three outcomes, once each, numbered 1, 2, 3 in their stream.
    let mut live = Vec::new();
    while live.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), sub.recv())
            .await
            .expect("outcome within 30 s")
            .expect("message")
            .into_vec();
        let topic = String::from_utf8(message[0].to_vec()).expect("topic");
        if !topic.starts_with("json/condition_outcomes/") {
            continue;
        }
        assert_eq!(topic, format!("json/condition_outcomes/{RUN}/spec-1"));
        let header = json_frame(&message[1]);
        let rows: Vec<Value> = serde_json::from_slice(&message[2]).expect("rows");
        assert_eq!(header["rows"].as_u64(), Some(rows.len() as u64));
        live.extend(rows);
    }
    let live_seqs: Vec<u64> = live
        .iter()
        .map(|r| r["stream_seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(live_seqs, vec![1, 2, 3]);
    let live_conditions: Vec<&str> = live
        .iter()
        .map(|r| r["condition_id"].as_str().expect("c"))
        .collect();
    // c-2 closes (superseded) when c-3 is registered, before c-3 settles.
    assert_eq!(live_conditions, vec!["c-1", "c-2", "c-3"]);

    let result = server
        .query
        .execute(
            "SELECT condition_id, settled, reason, mean, CAST(first_time_ns AS BIGINT) AS first_ns, \
             CAST(last_time_ns AS BIGINT) AS last_ns FROM condition_outcomes \
             WHERE run_id = 'opt' ORDER BY condition_id",
        )
        .await
        .expect("sql");
    let batch = arrow::compute::concat_batches(&result.schema, &result.batches).expect("concat");
    assert_eq!(batch.num_rows(), 3);
    let (c1, settled, _, mean, first_ns, last_ns) = outcome_sql_row(&batch, 0);
    assert_eq!((c1.as_str(), settled), ("c-1", true));
    // Within noise plus what the configured drift tolerance lets the tail of the transient add:
    // a window is accepted once the exponential moves at most MAX_DRIFT_EV across it.
    assert!(
        (mean - settled_1).abs() < MAX_DRIFT_EV + 3.0 * noise_ev,
        "c-1 mean {mean}"
    );
    // Not before settling: until t_bound the transient alone moves more than twice the allowed
    // drift within one window, so no steady window can end before it.
    let t_bound_s =
        WINDOW_S + tau_s * (step_1 * (1.0 - (-WINDOW_S / tau_s).exp()) / (2.0 * MAX_DRIFT_EV)).ln();
    let last_s = (last_ns - T0_NS) as f64 / 1e9;
    assert!(
        last_s >= t_bound_s,
        "c-1 decided at {last_s} s, transient lasts to {t_bound_s} s"
    );
    let residual_at_window_start = step_1 * (-((first_ns - T0_NS) as f64 / 1e9) / tau_s).exp();
    assert!(
        residual_at_window_start < 0.003,
        "{residual_at_window_start}"
    );
    let (c2, settled, reason, _, _, _) = outcome_sql_row(&batch, 1);
    assert_eq!((c2.as_str(), settled), ("c-2", false));
    assert!(reason.is_some_and(|r| r.contains("superseded by condition \"c-3\"")));
    let (c3, settled, _, mean, _, _) = outcome_sql_row(&batch, 2);
    assert_eq!((c3.as_str(), settled), ("c-3", true));
    assert!((mean - 2.52).abs() < 3.0 * noise_ev, "c-3 mean {mean}");

    // Every spectrum was tagged with the condition current when it arrived.
    let tagged = server
        .query
        .execute(
            "SELECT condition_id, count(*) FROM spectral_features WHERE run_id = 'opt' \
             GROUP BY condition_id ORDER BY condition_id",
        )
        .await
        .expect("sql");
    let tagged = arrow::compute::concat_batches(&tagged.schema, &tagged.batches).expect("concat");
    let counts: Vec<(String, i64)> = (0..tagged.num_rows())
        .map(|r| {
            (
                tagged.column(0).as_string::<i32>().value(r).to_string(),
                tagged.column(1).as_primitive::<Int64Type>().value(r),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            ("c-1".into(), 200),
            ("c-2".into(), 100),
            ("c-3".into(), 100)
        ]
    );

    // Replay in pages of 150 rows, as Arrow: every spectral feature row once, in order.
    let mut after = serde_json::Map::new();
    let mut replayed: Vec<u64> = Vec::new();
    for _page in 0..10 {
        let frames = control(
            &control_at,
            json!({"op": "replay", "prefix": "spectral_features/opt/", "after": after,
                   "format": "arrow", "max_rows": 150}),
        )
        .await;
        let summary = json_frame(&frames[0]);
        assert_eq!(summary["ok"], true, "{summary}");
        for triple in frames[1..].chunks(3) {
            assert_eq!(triple[0].as_ref(), b"arrow/spectral_features/opt/spec-1");
            let reader = arrow::ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(triple[2].to_vec()),
                None,
            )
            .expect("arrow ipc");
            for batch in reader {
                let batch = batch.expect("batch");
                let seqs = batch
                    .column_by_name("stream_seq")
                    .expect("seq")
                    .as_primitive::<UInt64Type>();
                replayed.extend(seqs.values().iter());
            }
        }
        for (stream, last) in summary["last"].as_object().expect("last") {
            after.insert(stream.clone(), last.clone());
        }
        if summary["more"] == false {
            break;
        }
    }
    assert_eq!(replayed, (1..=400).collect::<Vec<u64>>());

    // Restart: numbering and the current condition carry on; registrations stay unique.
    server.shutdown().await.expect("shutdown");
    let server = flowdaq_daq::start(config).await.expect("restart");
    let control_at = server.control_endpoint.clone().expect("control");
    let answer = control(&control_at, register("c-3", t3, 140.0)).await;
    assert!(json_frame(&answer[0])["error"]
        .as_str()
        .is_some_and(|e| e.contains("already registered")));
    let mut push = PushSender::connect(server.endpoints.pull.as_deref().expect("pull"))
        .await
        .expect("connect push");
    push.send(spectrum(seq, t3 + 11 * SECOND_NS, 2.52))
        .await
        .expect("send");
    assert!(
        server
            .metrics
            .wait_processed(1, Duration::from_secs(30))
            .await
    );
    let last = server
        .query
        .execute(
            "SELECT condition_id, stream_seq FROM spectral_features WHERE run_id = 'opt' \
             ORDER BY stream_seq DESC LIMIT 1",
        )
        .await
        .expect("sql");
    let last = &last.batches[0];
    assert_eq!(last.column(0).as_string::<i32>().value(0), "c-3");
    assert_eq!(last.column(1).as_primitive::<UInt64Type>().value(0), 401);
    let answer = control(&control_at, register("c-4", t3 + 20 * SECOND_NS, 150.0)).await;
    assert_eq!(json_frame(&answer[0])["ok"], true);
    let conditions = server
        .query
        .execute("SELECT max(stream_seq) FROM conditions WHERE run_id = 'opt'")
        .await
        .expect("sql");
    assert_eq!(
        conditions.batches[0]
            .column(0)
            .as_primitive::<UInt64Type>()
            .value(0),
        4
    );
    server.shutdown().await.expect("shutdown");
}
