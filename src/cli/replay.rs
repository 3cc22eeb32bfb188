//! `flowdaq replay <file>`: an instrument file sent through the wire protocol, either to a
//! running server (`--to`) or into a data directory through an embedded server, so a replayed
//! file takes exactly the path of a live stream.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flowdaq_connectors::replay::csv_spectra::CsvSpectraConfig;
use flowdaq_connectors::runner::{run_connector, Pacing};
use flowdaq_connectors::ConnectorConfig;
use flowdaq_daq::ServerConfig;

/// Arguments of `flowdaq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The file: CSV spectra (.csv, .tsv, .txt).
    pub file: PathBuf,
    /// PULL endpoint of a running server; without it an embedded server writes to --data-dir.
    #[arg(long)]
    pub to: Option<String>,
    /// Data directory for the embedded server.
    #[arg(long, default_value = "./flowdaq-data")]
    pub data_dir: PathBuf,
    /// Source id of the replayed stream.
    #[arg(long, default_value = "replay")]
    pub source: String,
    /// Spectrum kind: pl, absorbance, sample, dark, reference.
    #[arg(long, default_value = "pl")]
    pub kind: String,
    /// Integration time of the spectra, ms.
    #[arg(long, default_value_t = 1.0)]
    pub integration_time_ms: f64,
    /// Run id.
    #[arg(long)]
    pub run_id: Option<String>,
}

/// Replays the file.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let extension = args
        .file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let connector = match extension.as_str() {
        "csv" | "tsv" | "txt" => ConnectorConfig::CsvSpectra(CsvSpectraConfig {
            path: args.file.clone(),
            source: args.source.clone(),
            kind: args.kind.clone(),
            integration_time_ms: args.integration_time_ms,
            run_id: args.run_id.clone(),
        }),
        other => bail!("cannot replay .{other} files yet: supported are .csv, .tsv, .txt spectra"),
    };
    let connector = connector.build()?;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    if let Some(endpoint) = &args.to {
        let sent = run_connector(connector, endpoint.clone(), Pacing::Unpaced, stop).await?;
        println!("sent {sent} messages to {endpoint}");
        return Ok(());
    }
    let config = ServerConfig::embedded_pull_only(&args.data_dir);
    let server = flowdaq_daq::start(config)
        .await
        .context("starting the embedded server")?;
    let endpoint = server
        .endpoints
        .pull
        .clone()
        .context("embedded server has no PULL endpoint")?;
    let sent = run_connector(connector, endpoint.clone(), Pacing::Unpaced, stop).await?;
    let processed = server
        .metrics
        .wait_processed(sent, Duration::from_secs(60))
        .await;
    let metrics = server.metrics.snapshot();
    server.shutdown().await?;
    if !processed {
        bail!("the server did not process all {sent} messages within 60 s");
    }
    println!(
        "replayed {sent} messages from {} into {}: {} rows stored, {} rejected",
        args.file.display(),
        args.data_dir.display(),
        metrics.rows_ingested,
        metrics.messages_rejected
    );
    Ok(())
}
