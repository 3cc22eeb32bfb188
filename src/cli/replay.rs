//! `flowdaq replay <file>`: an instrument file sent through the wire protocol, either to a
//! running server (`--to`) or into a data directory through an embedded server, so a replayed
//! file takes exactly the path of a live stream.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flowdaq_connectors::replay::ptu::PtuReplayConfig;
use flowdaq_connectors::replay::{SpectraFileConfig, SpectraFileFormat};
use flowdaq_connectors::runner::{run_connector, run_connector_acked, Pacing};
use flowdaq_connectors::Connector;
use flowdaq_daq::config::{StatisticChoice, TcspcSourceConfig};
use flowdaq_daq::query::output::Format;
use flowdaq_daq::ServerConfig;

/// Arguments of `flowdaq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The file: PicoQuant .ptu (T3 records: photons, histograms, lifetimes), Ocean Optics
    /// .scope (OOIBase32) or SpectraSuite/OceanView text, JASCO text, or CSV spectra
    /// (wavelength column, then one column per spectrum).
    pub file: PathBuf,
    /// ROUTER endpoint of a running server (default port 5557): messages are sent with
    /// acknowledgements and resent until every one is durable. Without it an embedded server
    /// writes to --data-dir.
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
    /// PTU files: histogram window, s (aligned to the file's sync clock).
    #[arg(long, default_value_t = 1.0)]
    pub window_s: f64,
    /// PTU files: detector channels histogrammed and fitted.
    #[arg(long, default_value_t = 2)]
    pub channels: usize,
    /// PTU files: FWHM of the Gaussian IRF of the fits, ps.
    #[arg(long, default_value_t = 200.0)]
    pub irf_fwhm_ps: f64,
    /// Server configuration (TOML) for the embedded server: its `[features]` options decide
    /// the features computed, as on a live server. Its sockets and data_dir are ignored.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// What one kind of file needs: its connector, the SQL that shows its features afterwards,
/// and any analysis the embedded server must be told about (PTU timing comes from the file).
struct Prepared {
    connector: Box<dyn Connector>,
    features_title: &'static str,
    features_sql: fn(&str, &str, i64) -> String,
    tcspc: Option<TcspcSourceConfig>,
}

/// Replays the file.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let is_ptu = args
        .file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("ptu"));
    let prepared = if is_ptu {
        prepare_ptu(&args)?
    } else {
        prepare_spectra(&args)?
    };
    let Prepared {
        connector,
        features_title,
        features_sql,
        tcspc,
    } = prepared;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    if let Some(endpoint) = &args.to {
        let stats = run_connector_acked(connector, endpoint).await?;
        println!(
            "sent {} messages to {endpoint}: {} acknowledged ({} as duplicates), {} refused, {} resent",
            stats.sent,
            stats.acknowledged,
            stats.duplicates,
            stats.refused.len(),
            stats.resent
        );
        for (seq, reason) in &stats.refused {
            println!("  seq {seq} refused: {reason}");
        }
        if !stats.refused.is_empty() {
            bail!("{} messages refused by the server", stats.refused.len());
        }
        return Ok(());
    }
    let started_ns = flowdaq_connectors::transport::now_ns();
    let mut server_config = ServerConfig::embedded_pull_only(&args.data_dir);
    if let Some(path) = &args.config {
        let file = ServerConfig::from_file(path)?;
        server_config.features = file.features;
        server_config.default_run_id = file.default_run_id;
    }
    if let Some(tcspc) = tcspc {
        server_config
            .features
            .tcspc
            .sources
            .insert(args.source.clone(), tcspc);
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
        .execute(&features_sql(&args.source, &run_id, started_ns))
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
            println!("{features_title}:");
            print!(
                "{}",
                String::from_utf8_lossy(&result.render(Format::Table)?)
            );
        }
        Ok(_) => println!("no {features_title}"),
        Err(err) => tracing::warn!(%err, "could not read back the features"),
    }
    Ok(())
}

/// The lifetimes of what this replay sent, first 20 windows and channels.
fn lifetime_features_query(source: &str, run_id: &str, started_ns: i64) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    format!(
        "SELECT window_start_ps, channel, photon_count, round(count_rate_hz) AS rate_hz, pile_up, \
         round(tau_1_ns, 3) AS tau_ns, round(tau_1_stderr_ns, 3) AS tau_sd_ns, \
         round(reduced_chi_square, 2) AS chi2_red, round(phasor_g, 4) AS g, round(phasor_s, 4) AS s, \
         converged, fit_error FROM lifetime_features \
         WHERE source = '{}' AND run_id = '{}' AND arrival_time_ns >= to_timestamp_nanos({started_ns}) \
         ORDER BY window_start_ps, channel LIMIT 20",
        quote(source),
        quote(run_id)
    )
}

/// The features of what this replay sent, first 20 spectra.
fn spectral_features_query(source: &str, run_id: &str, started_ns: i64) -> String {
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

fn prepare_spectra(args: &ReplayArgs) -> anyhow::Result<Prepared> {
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
    Ok(Prepared {
        connector: Box::new(replay),
        features_title: "features (spectral_features)",
        features_sql: spectral_features_query,
        tcspc: None,
    })
}

fn prepare_ptu(args: &ReplayArgs) -> anyhow::Result<Prepared> {
    let config = PtuReplayConfig {
        source: args.source.clone(),
        run_id: args.run_id.clone(),
        ..PtuReplayConfig::new(&args.file)
    };
    let replay = config
        .build()
        .with_context(|| format!("reading {}", args.file.display()))?;
    println!("{}", replay.summary());
    let sync_rate_hz = replay
        .sync_rate_hz()
        .context("the PTU header has no sync rate: not a T3 file, cannot histogram")?;
    let tcspc = TcspcSourceConfig {
        channels: args.channels,
        window_s: args.window_s,
        statistic: StatisticChoice::PoissonMle,
        irf_fwhm_ps: args.irf_fwhm_ps,
        ..TcspcSourceConfig::new(sync_rate_hz, replay.resolution_ps())
    };
    Ok(Prepared {
        connector: Box::new(replay),
        features_title:
            "lifetimes (lifetime_features; the file's last message closes the last, partial window)",
        features_sql: lifetime_features_query,
        tcspc: Some(tcspc),
    })
}
