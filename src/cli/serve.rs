//! `flowdaq serve`: run the server until Ctrl-C or SIGTERM, then drain and persist.

use std::path::PathBuf;

use anyhow::Context;
use flowdaq_daq::ServerConfig;

/// Runs the server.
pub async fn run(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match config {
        Some(path) => ServerConfig::from_file(&path)?,
        None => ServerConfig::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    let server = flowdaq_daq::start(config)
        .await
        .context("starting the server")?;
    // One parseable line for scripts and tests that start `flowdaq serve` with port 0.
    let ready = serde_json::json!({
        "event": "ready",
        "pull": server.endpoints.pull,
        "sub": server.endpoints.sub,
        "router": server.endpoints.router,
        "bluesky": server.endpoints.bluesky,
        "http": server.http_addr.map(|a| a.to_string()),
        "flight_sql": server.flight_sql_addr.map(|a| a.to_string()),
        "postgres": server.postgres_addr.map(|a| a.to_string()),
        "publish": server.publish_endpoint,
        "control": server.control_endpoint,
        "replayed_rows": server.replayed_rows,
    });
    println!("{ready}");
    wait_for_signal().await;
    tracing::info!("shutting down: draining and persisting");
    server.shutdown().await.context("shutting down")?;
    Ok(())
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
