//! `flowdaq replay <file>`: an instrument file sent through the wire protocol, either to a
//! running server (`--to`) or into a data directory through an embedded server, so a replayed
//! file takes exactly the path of a live stream.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flowdaq_connectors::replay::{SpectraFileConfig, SpectraFileFormat};
use flowdaq_connectors::runner::{run_connector, Pacing};
use flowdaq_connectors::Connector;
use flowdaq_daq::query::output::Format;
use flowdaq_daq::ServerConfig;

/// Arguments of `flowdaq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The file: Ocean Optics .scope (OOIBase32) or SpectraSuite/OceanView text, JASCO text,
    /// or CSV spectra (wavelength column, then one column per spectrum).
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
    /// File format: ooibase32, spectrasuite, jasco, csv. Detected from the content if absent.
    #[arg(long)]
    pub format: Option<String>,
    /// Spectrum kind (pl, absorbance, sample, dark, reference); default: what the file says,
    /// else pl.
    #[arg(long)]
    pub kind: Option<String>,
    /// Integration time, ms; default: what the file says, else 1 ms.
    #[arg(long)]
    pub integration_time_ms: Option<f64>,
    /// Run id.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Server configuration (TOML) for the embedded server: its `[features]` options decide
    /// the features computed, as on a live server. Its sockets and data_dir are ignored.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Replays the file.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let format = match &args.format {
        Some(name) => Some(
            serde_json::from_value::<SpectraFileFormat>(serde_json::Value::String(name.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "unknown --format {name:?}: use ooibase32, spectrasuite, jasco or csv"
                    )
                })?,
        ),
        None => None,
    };
    let config = SpectraFileConfig {
        path: args.file.clone(),
        source: args.source.clone(),
        kind: args.kind.clone(),
        integration_time_ms: args.integration_time_ms,
        run_id: args.run_id.clone(),
        format,
    };
    let replay = config
        .build()
        .with_context(|| format!("reading {}", args.file.display()))?;
    println!(
        "{}: {} format, {} spectra of {} pixels, kind {}, integration {} ms",
        args.file.display(),
        replay.file().format.name(),
        replay.file().spectra.len(),
        replay.file().axis_nm.len(),
        replay.kind(),
        replay.integration_time_ms()
    );
    let kind = replay.kind().to_string();
    let connector: Box<dyn Connector> = Box::new(replay);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    if let Some(endpoint) = &args.to {
        let sent = run_connector(connector, endpoint.clone(), Pacing::Unpaced, stop).await?;
        println!("sent {sent} messages to {endpoint}");
        return Ok(());
    }
    let started_ns = flowdaq_connectors::transport::now_ns();
    let mut server_config = ServerConfig::embedded_pull_only(&args.data_dir);
    if let Some(path) = &args.config {
        let file = ServerConfig::from_file(path)?;
        server_config.features = file.features;
        server_config.default_run_id = file.default_run_id;
    }
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| server_config.default_run_id.clone());
    let server = flowdaq_daq::start(server_config)
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
    let features = server
        .query
        .execute(&features_query(&args.source, &run_id, started_ns))
        .await;
    server.shutdown().await?;
    if !processed {
        bail!("the server did not process all {sent} messages within 60 s");
    }
    println!(
        "replayed {sent} messages into {}: {} rows stored, {} rejected",
        args.data_dir.display(),
        metrics.rows_ingested,
        metrics.messages_rejected
    );
    match features {
        Ok(result) if result.num_rows() > 0 => {
            println!("features (spectral_features):");
            print!(
                "{}",
                String::from_utf8_lossy(&result.render(Format::Table)?)
            );
        }
        Ok(_) => println!("no features: {kind} spectra get none"),
        Err(err) => tracing::warn!(%err, "could not read back the features"),
    }
    Ok(())
}

/// The features of what this replay sent, first 20 spectra.
fn features_query(source: &str, run_id: &str, started_ns: i64) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    format!(
        "SELECT seq, spectrum_index, kind, round(peak_wavelength_nm, 3) AS peak_nm, \
         round(peak_energy_ev, 4) AS peak_ev, round(fwhm_nm, 3) AS fwhm_nm, \
         round(exciton_wavelength_nm, 2) AS exciton_nm, round(exciton_absorbance, 4) AS exciton_a, \
         quality_flag_names AS flags FROM spectral_features \
         WHERE source = '{}' AND run_id = '{}' AND arrival_time_ns >= to_timestamp_nanos({started_ns}) \
         ORDER BY seq, spectrum_index LIMIT 20",
        quote(source),
        quote(run_id)
    )
}
