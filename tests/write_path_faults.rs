//! The write path against a failing disk, in process, with real sockets and real files: the
//! WAL, the persister, the catalog and the WAL clean-up each fail at chosen operations
//! (`FaultyStorage`), and every acknowledged message must still be stored exactly once, before
//! and after a restart. A real full disk and `kill -9` are attacked by the interop tests.

use std::time::Duration;

use flowdaq_connectors::acked::{AckTiming, AckedSender};
use flowdaq_connectors::runner::PushSender;
use flowdaq_connectors::OutboundMessage;
use flowdaq_daq::storage::fault::errno::{EIO, EMFILE, ENOSPC};
use flowdaq_daq::storage::{Fault, FaultKind, FaultyStorage, Op};
use flowdaq_daq::{RunningServer, ServerConfig};
use flowdaq_schemas::StreamKind;

const PIXELS: usize = 512;

fn spectrum(source: &str, value: f32) -> OutboundMessage {
    let axis: Vec<f64> = (0..PIXELS).map(|i| 400.0 + i as f64 * 0.25).collect();
    let counts: Vec<f32> = (0..PIXELS).map(|i| value + (i % 7) as f32).collect();
    OutboundMessage::new(source, StreamKind::Spectra)
        .meta("kind", "sample")
        .meta("integration_time_ms", 10.0)
        .array_f64("wavelength_nm", &[PIXELS as u64], &axis)
        .array_f32("intensity_counts", &[PIXELS as u64], &counts)
}

fn config(dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::embedded_pull_only(dir);
    config.ingest.router = "tcp://127.0.0.1:0".into();
    config.features.spectral.enabled = false;
    config
}

fn timing() -> AckTiming {
    AckTiming {
        window: 64,
        resend_after: Duration::from_millis(400),
        retry_delay: Duration::from_millis(50),
        give_up_after: Duration::from_secs(60),
    }
}

async fn count(server: &RunningServer, sql: &str) -> i64 {
    use arrow::array::AsArray;
    let result = server.query.execute(sql).await.expect("sql");
    result.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0)
}

/// Polls `condition` every 10 ms, at most `seconds`; panics with `what` if it never holds.
async fn wait_until(what: &str, seconds: u64, mut condition: impl FnMut() -> bool) {
    for _ in 0..seconds * 100 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn files_under(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out
}

/// A copy of the data directory as a crash would leave it (everything the server fsynced is
/// in the copy): a server started on it recovers from the WAL, as after `kill -9`.
fn crash_copy(dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(from) = stack.pop() {
        let to = copy.path().join(from.strip_prefix(dir).expect("inside"));
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(&from).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                // A file may vanish while copying (a retired WAL segment): that is a crash too.
                let _ = std::fs::copy(&path, to.join(entry.file_name()));
            }
        }
    }
    copy
}

/// Every seq 0..n of `source` is stored exactly once.
async fn exactly_once(server: &RunningServer, source: &str, n: i64) {
    let rows = count(
        server,
        &format!("SELECT count(*) FROM spectra WHERE source = '{source}'"),
    )
    .await;
    let distinct = count(
        server,
        &format!("SELECT count(DISTINCT seq) FROM spectra WHERE source = '{source}' AND seq < {n}"),
    )
    .await;
    assert_eq!((rows, distinct), (n, n), "{source}: rows and distinct seqs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_with_retry_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let server = flowdaq_daq::server::start_with_storage(config(dir.path()), faults.storage())
        .await
        .expect("start");
    let router = server.endpoints.router.clone().expect("router");
    let mut sender = AckedSender::connect(&router, "disk-full-test".into(), timing())
        .await
        .expect("connect");
    for i in 0..40 {
        sender.send(spectrum("full", i as f32)).await.expect("send");
    }
    // The disk fills: the next append writes part of its entry, then every write fails.
    faults.limit_space(3000);
    let more = tokio::spawn(async move {
        for i in 40..100 {
            sender.send(spectrum("full", i as f32)).await.expect("send");
        }
        sender.finish().await
    });
    let metrics = server.metrics.clone();
    wait_until("nacks while the WAL is failing", 30, || {
        let snapshot = metrics.snapshot();
        snapshot.health.wal_errors > 0 && snapshot.not_durable_messages > 0
    })
    .await;
    let report = server.metrics.health.report();
    assert_eq!(report.status, "failing");
    assert!(report
        .wal
        .expect("wal failure")
        .reason
        .contains("No space left"));
    // A condition registered now is refused at once as not durable, not left waiting.
    let registration = serde_json::json!({"op": "register_condition", "run_id": "r",
        "condition_id": "c-1", "parameters": {"temperature": {"value": 120.0, "unit": "degC"}}});
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        flowdaq_daq::control::register(&server.registrations, &registration),
    )
    .await
    .expect("answered while the WAL fails");
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not durable")),
        "{answer}"
    );
    faults.heal();
    let stats = more.await.expect("join").expect("every message answered");
    assert_eq!(stats.acknowledged, 100, "{stats:?}");
    assert!(stats.refused.is_empty(), "{stats:?}");
    assert!(stats.resent > 0, "messages were resent: {stats:?}");
    assert_eq!(server.metrics.health.report().status, "ok");
    exactly_once(&server, "full", 100).await;
    // A crash now: only the WAL holds the rows (nothing is due for Parquet yet).
    let crashed = crash_copy(dir.path());
    let recovered = flowdaq_daq::start(config(crashed.path()))
        .await
        .expect("recover");
    assert!(recovered.replayed_rows >= 100, "rows replayed from the WAL");
    exactly_once(&recovered, "full", 100).await;
    recovered.shutdown().await.expect("shutdown");
    server.shutdown().await.expect("shutdown");

    let restarted = flowdaq_daq::start(config(dir.path()))
        .await
        .expect("restart");
    exactly_once(&restarted, "full", 100).await;
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_persister_keeps_the_wal_and_persists_everything_in_order_once_healed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut config = config(dir.path());
    config.buffer.flush_interval_ms = 30;
    // Parquet files are written, but the first 7 cannot be renamed into place: more failed
    // attempts than any fixed retry count would allow before moving on to the next snapshot.
    faults.inject(Fault {
        op: Op::Rename,
        path_contains: ".parquet".into(),
        skip: 0,
        times: Some(7),
        kind: FaultKind::Os(EIO),
    });
    let server = flowdaq_daq::server::start_with_storage(config.clone(), faults.storage())
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut push = PushSender::connect(&pull).await.expect("connect");
    let mut sent = 0;
    for round in 0..4u64 {
        for i in 0..10 {
            push.send(spectrum("persist", i as f32))
                .await
                .expect("send");
            sent += 1;
        }
        assert!(
            server
                .metrics
                .wait_processed(sent, Duration::from_secs(30))
                .await
        );
        if round < 2 {
            // This round's rows become a snapshot of their own, which the persister fails on.
            let buffer = server.buffer.clone();
            wait_until("a snapshot", 30, || buffer.stats().open_rows == 0).await;
        }
    }
    // Two snapshots wait for the persister; later rows stay open rather than pile up.
    let stats = server.buffer.stats();
    assert_eq!(stats.persisting_snapshots, 2, "{stats:?}");
    assert_eq!(stats.open_rows, 20, "{stats:?}");
    let health = server.metrics.health.clone();
    wait_until("persist failures", 30, || {
        health.counters().persist_errors >= 2
    })
    .await;
    assert_eq!(server.metrics.health.report().status, "failing");
    assert!(server.metrics.health.report().persister.is_some());
    assert_eq!(server.buffer.stats().persisted_rows, 0);
    assert!(!files_under(&dir.path().join("wal"), ".wal").is_empty());
    // Rows stay queryable meanwhile.
    assert_eq!(
        count(&server, "SELECT count(*) FROM spectra").await,
        sent as i64
    );
    let buffer = server.buffer.clone();
    wait_until("everything persisted", 60, || {
        let stats = buffer.stats();
        stats.persisted_rows > sent && stats.persisting_snapshots == 0
    })
    .await;
    // Every spectrum and its one calibration row, each persisted once.
    assert_eq!(
        server.buffer.stats().persisted_rows,
        sent + 1,
        "each row persisted once"
    );
    let tables = dir.path().join("tables");
    assert!(
        files_under(&tables, ".tmp").is_empty(),
        "failed attempts removed their files"
    );
    assert_eq!(
        files_under(&tables, ".parquet").len(),
        server.buffer.stats().persisted_files,
        "no file outside the catalog"
    );
    assert_eq!(server.metrics.health.report().status, "ok");
    assert!(server.metrics.health.counters().persist_errors >= 7);
    exactly_once(&server, "persist", sent as i64).await;
    // A crash now recovers from the catalog and what is left of the WAL: nothing lost, nothing
    // twice (a watermark moved past a failed snapshot would lose its rows here).
    let crashed = crash_copy(dir.path());
    let mut crashed_config = config.clone();
    crashed_config.data_dir = crashed.path().to_path_buf();
    let recovered = flowdaq_daq::start(crashed_config).await.expect("recover");
    exactly_once(&recovered, "persist", sent as i64).await;
    recovered.shutdown().await.expect("shutdown");
    server.shutdown().await.expect("shutdown");

    let restarted = flowdaq_daq::start(config).await.expect("restart");
    assert_eq!(restarted.replayed_rows, 0);
    assert_eq!(
        count(&restarted, "SELECT count(*) FROM spectra").await,
        sent as i64
    );
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalog_save_or_wal_cleanup_never_stores_a_row_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut config = config(dir.path());
    config.buffer.flush_interval_ms = 30;
    // The first catalog save fails (its files must go), and persisted segments cannot be
    // deleted (the snapshot is persisted all the same, and never persisted again).
    faults.inject(Fault::once(
        Op::Rename,
        "catalog.json",
        0,
        FaultKind::Os(EIO),
    ));
    faults.inject(Fault::always(Op::Remove, ".wal", EIO));
    let server = flowdaq_daq::server::start_with_storage(config.clone(), faults.storage())
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut push = PushSender::connect(&pull).await.expect("connect");
    for i in 0..30 {
        push.send(spectrum("catalog", i as f32))
            .await
            .expect("send");
    }
    assert!(
        server
            .metrics
            .wait_processed(30, Duration::from_secs(30))
            .await
    );
    let buffer = server.buffer.clone();
    let health = server.metrics.health.clone();
    // A snapshot counts as persisted once its catalog is saved; the deletion of its WAL
    // segments comes after, so wait for that attempt as well.
    wait_until(
        "everything persisted and its segments' deletion tried",
        60,
        || {
            let stats = buffer.stats();
            stats.persisted_rows > 30
                && stats.open_rows == 0
                && stats.persisting_snapshots == 0
                && health.counters().wal_cleanup_errors >= 1
        },
    )
    .await;
    let counters = server.metrics.health.counters();
    assert!(counters.persist_errors >= 1, "{counters:?}");
    assert!(counters.wal_cleanup_errors >= 1, "{counters:?}");
    assert_eq!(
        server.buffer.stats().persisted_rows,
        31,
        "30 spectra and their calibration"
    );
    assert!(files_under(&dir.path().join("tables"), ".tmp").is_empty());
    exactly_once(&server, "catalog", 30).await;
    server.shutdown().await.expect("shutdown");
    assert!(
        !files_under(&dir.path().join("wal"), ".wal").is_empty(),
        "persisted segments were left behind"
    );
    let restarted = flowdaq_daq::start(config).await.expect("restart");
    assert_eq!(
        restarted.replayed_rows, 0,
        "segments at or below the watermark are not replayed"
    );
    exactly_once(&restarted, "catalog", 30).await;
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_running_out_at_rotation_never_block_persistence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut config = config(dir.path());
    config.buffer.flush_interval_ms = 30;
    let server = flowdaq_daq::server::start_with_storage(config.clone(), faults.storage())
        .await
        .expect("start");
    // A new WAL segment is created, but the directory cannot be opened to make it durable.
    faults.inject(Fault::always(Op::SyncDir, "wal", EMFILE));
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut push = PushSender::connect(&pull).await.expect("connect");
    for i in 0..20 {
        push.send(spectrum("fds", i as f32)).await.expect("send");
    }
    assert!(
        server
            .metrics
            .wait_processed(20, Duration::from_secs(30))
            .await
    );
    let health = server.metrics.health.clone();
    wait_until("failed rotations", 30, || {
        health.counters().wal_rotation_errors >= 2
    })
    .await;
    faults.heal();
    let buffer = server.buffer.clone();
    wait_until("everything persisted", 60, || {
        let stats = buffer.stats();
        stats.persisted_rows > 20 && stats.open_rows == 0 && stats.persisting_snapshots == 0
    })
    .await;
    exactly_once(&server, "fds", 20).await;
    server.shutdown().await.expect("shutdown");
    let restarted = flowdaq_daq::start(config).await.expect("restart");
    exactly_once(&restarted, "fds", 20).await;
    restarted.shutdown().await.expect("shutdown");
}

/// Sends `count` spectra of `source` in `session` (seqs from 0) and returns the answers.
async fn send_session(
    router: &str,
    source: &str,
    session: &str,
    count: usize,
) -> flowdaq_connectors::acked::AckStats {
    let mut sender = AckedSender::connect(router, session.into(), timing())
        .await
        .expect("connect");
    for i in 0..count {
        sender.send(spectrum(source, i as f32)).await.expect("send");
    }
    sender.finish().await.expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_are_acknowledged_as_duplicates_within_a_run_and_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = flowdaq_daq::start(config(dir.path())).await.expect("start");
    let router = server.endpoints.router.clone().expect("router");
    let first = send_session(&router, "once", "session-a", 20).await;
    assert_eq!((first.acknowledged, first.duplicates), (20, 0), "{first:?}");
    let resent = send_session(&router, "once", "session-a", 20).await;
    assert_eq!(
        (resent.acknowledged, resent.duplicates),
        (20, 20),
        "{resent:?}"
    );
    exactly_once(&server, "once", 20).await;
    // After a crash the ledger comes from the WAL.
    let crashed = crash_copy(dir.path());
    let recovered = flowdaq_daq::start(config(crashed.path()))
        .await
        .expect("recover");
    let recovered_router = recovered.endpoints.router.clone().expect("router");
    let after_crash = send_session(&recovered_router, "once", "session-a", 21).await;
    assert_eq!(
        (after_crash.acknowledged, after_crash.duplicates),
        (21, 20),
        "{after_crash:?}"
    );
    exactly_once(&recovered, "once", 21).await;
    recovered.shutdown().await.expect("shutdown");
    assert_eq!(server.metrics.snapshot().sources["once"].duplicates, 20);
    server.shutdown().await.expect("shutdown");

    // After a clean stop the ledger comes from the catalog.
    let restarted = flowdaq_daq::start(config(dir.path()))
        .await
        .expect("restart");
    let router = restarted.endpoints.router.clone().expect("router");
    let again = send_session(&router, "once", "session-a", 30).await;
    assert_eq!(
        (again.acknowledged, again.duplicates),
        (30, 20),
        "{again:?}"
    );
    exactly_once(&restarted, "once", 30).await;
    // Another session of the same source is new data with its own seqs.
    let other = send_session(&router, "once", "session-b", 5).await;
    assert_eq!((other.acknowledged, other.duplicates), (5, 0), "{other:?}");
    assert_eq!(
        count(
            &restarted,
            "SELECT count(*) FROM spectra WHERE source = 'once'"
        )
        .await,
        35
    );
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_counting_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = flowdaq_daq::start(config(dir.path())).await.expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut push = PushSender::connect(&pull).await.expect("connect");
    for i in 0..5 {
        push.send(spectrum("gappy", i as f32)).await.expect("send");
    }
    assert!(
        server
            .metrics
            .wait_processed(5, Duration::from_secs(30))
            .await
    );
    server.shutdown().await.expect("shutdown");

    let restarted = flowdaq_daq::start(config(dir.path()))
        .await
        .expect("restart");
    let pull = restarted.endpoints.pull.clone().expect("pull");
    let mut push = PushSender::connect(&pull).await.expect("connect");
    push.skip_seq(10);
    push.send(spectrum("gappy", 0.0)).await.expect("send");
    assert!(
        restarted
            .metrics
            .wait_processed(1, Duration::from_secs(30))
            .await
    );
    let stats = restarted.metrics.snapshot().sources["gappy"].clone();
    assert_eq!(
        (stats.gaps, stats.missing_messages),
        (1, 5),
        "seqs 5-9 are missing: {stats:?}"
    );
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_stops_at_the_buffer_bound_while_persistence_is_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut config = config(dir.path());
    config.buffer.flush_interval_ms = 20;
    config.buffer.flush_bytes = 256 * 1024;
    config.buffer.max_buffered_bytes = 1024 * 1024;
    config.ingest.max_message_bytes = 256 * 1024;
    config.ingest.max_queued_bytes = 256 * 1024;
    config.ingest.max_group_bytes = 64 * 1024;
    faults.inject(Fault::always(Op::Write, ".parquet", ENOSPC));
    let server = flowdaq_daq::server::start_with_storage(config.clone(), faults.storage())
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let sender = tokio::spawn(async move {
        let mut push = PushSender::connect(&pull).await.expect("connect");
        for i in 0..1500 {
            push.send(spectrum("bound", i as f32)).await.expect("send");
        }
    });
    let health = server.metrics.health.clone();
    let buffer = server.buffer.clone();
    // One group's rows may go over the bound (the check is between groups).
    let slack = 2 * config.ingest.max_group_bytes;
    let mut peak = 0;
    wait_until("intake to stop at the bound", 60, || {
        let stats = buffer.stats();
        peak = peak.max(stats.open_bytes + stats.persisting_bytes);
        health.report().backpressure
    })
    .await;
    let processed = server.metrics.processed();
    assert!(
        processed < 1500,
        "intake stopped before everything was taken ({processed})"
    );
    for _ in 0..50 {
        let stats = buffer.stats();
        peak = peak.max(stats.open_bytes + stats.persisting_bytes);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        peak <= config.buffer.max_buffered_bytes + slack,
        "buffered {peak} bytes"
    );
    faults.heal();
    sender.await.expect("sender");
    assert!(
        server
            .metrics
            .wait_processed(1500, Duration::from_secs(60))
            .await
    );
    exactly_once(&server, "bound", 1500).await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_of_a_refused_message_is_accepted_not_taken_for_a_duplicate() {
    use zeromq::{Socket, SocketSend, ZmqMessage};
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let server = flowdaq_daq::server::start_with_storage(config(dir.path()), faults.storage())
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut push = zeromq::PushSocket::new();
    push.connect(&pull).await.expect("connect");
    let frames = |seq: u64, broken: bool| {
        let mut message = spectrum("fixed", seq as f32);
        message.header.seq = seq;
        let mut frames = message.frames();
        if broken {
            let counts = frames[2].clone();
            frames[2] = counts.slice(..counts.len() - 4);
        }
        ZmqMessage::try_from(frames).expect("frames")
    };
    // The WAL refuses seq 0's group, so the rest are screened while it is held, each before
    // any of them is refused: seq 1 broken three times, then right; seq 2 right twice.
    faults.inject(Fault::always(Op::Write, ".wal", ENOSPC));
    push.send(frames(0, false)).await.expect("send");
    let health = server.metrics.health.clone();
    wait_until("a held group", 30, || health.counters().wal_errors > 0).await;
    let rest = [
        frames(1, true),
        frames(1, true),
        frames(1, true),
        frames(1, false),
        frames(2, false),
        frames(2, false),
    ];
    for message in rest {
        push.send(message).await.expect("send");
    }
    // Each retry of the held group comes after a wait that takes every message that arrived:
    // two more retries and the six messages are in.
    let errors = health.counters().wal_errors;
    wait_until("two more retries", 30, || {
        health.counters().wal_errors >= errors + 2
    })
    .await;
    faults.heal();
    assert!(
        server
            .metrics
            .wait_processed(7, Duration::from_secs(30))
            .await
    );
    exactly_once(&server, "fixed", 3).await;
    assert_eq!(
        count(&server, "SELECT count(*) FROM ingest_errors").await,
        3
    );
    let stats = server.metrics.snapshot().sources["fixed"].clone();
    assert_eq!((stats.rejected, stats.duplicates), (3, 1), "{stats:?}");
    server.shutdown().await.expect("shutdown");
}
