//! End to end in-process: simulated spectrometer -> real ZeroMQ PUSH -> server -> WAL ->
//! Parquet -> SQL, then a restart that must see the same rows from Parquet.

use std::time::Duration;

use flowdaq_connectors::runner::{run_connector, Pacing};
use flowdaq_connectors::sim::spectrometer::SimulatedSpectrometerConfig;
use flowdaq_connectors::ConnectorConfig;
use flowdaq_daq::ServerConfig;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig::embedded_pull_only(dir)
}

fn count(result: &flowdaq_daq::query::QueryResult) -> i64 {
    use arrow::array::AsArray;
    result.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectra_flow_from_socket_to_parquet_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = flowdaq_daq::start(config(dir.path())).await.expect("start");
    let pull = server.endpoints.pull.clone().expect("pull endpoint");
    let sim = ConnectorConfig::SimulatedSpectrometer(SimulatedSpectrometerConfig {
        spectra_per_message: 5,
        spectra_per_condition: 20,
        run_id: Some("e2e".into()),
        ..SimulatedSpectrometerConfig::default()
    });
    let connector = sim.build().expect("sim");
    // A bounded connector: stop after 20 messages by closing the shutdown channel's sender.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(run_connector(
        connector,
        pull.clone(),
        Pacing::RateHz(2000.0),
        stop,
    ));
    assert!(
        server
            .metrics
            .wait_processed(20, Duration::from_secs(30))
            .await,
        "20 messages in"
    );
    stop_tx.send(true).expect("stop");
    let sent = sender.await.expect("join").expect("sender");
    assert!(
        server
            .metrics
            .wait_processed(sent, Duration::from_secs(30))
            .await
    );

    let buffered = server
        .query
        .execute("SELECT count(*) FROM spectra WHERE run_id = 'e2e'")
        .await
        .expect("sql");
    assert_eq!(
        count(&buffered),
        (sent * 5) as i64,
        "buffered rows are queryable"
    );
    let conditions = server
        .query
        .execute("SELECT count(DISTINCT condition_id) FROM spectra")
        .await
        .expect("sql");
    assert!(count(&conditions) >= 2);
    server.shutdown().await.expect("shutdown");

    let files: Vec<_> = walk(&dir.path().join("tables/spectra"));
    assert!(!files.is_empty(), "Parquet written");
    let restarted = flowdaq_daq::start(config(dir.path()))
        .await
        .expect("restart");
    assert_eq!(
        restarted.replayed_rows, 0,
        "everything was persisted, nothing to replay"
    );
    let persisted = restarted
        .query
        .execute("SELECT count(*) FROM spectra")
        .await
        .expect("sql");
    assert_eq!(count(&persisted), (sent * 5) as i64);
    let calibrations = restarted
        .query
        .execute("SELECT count(*) FROM spectral_calibrations")
        .await
        .expect("sql");
    assert_eq!(count(&calibrations), 1, "one axis stored once");
    restarted.shutdown().await.expect("shutdown");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out
}
