//! `flowdaq replay <file>`: an instrument file sent through the wire protocol, either to a
//! running server (`--to`) or into a data directory through an embedded server, so a replayed
//! file takes exactly the path of a live stream.
//!
//! The format is found from the file's first bytes, never its name: time-tagged files by their
//! magic (or an SPC frame), text by being text; anything else is refused with the list of
//! formats flowdaq reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flowdaq_analytics::tcspc::legacy::legacy_kind;
use flowdaq_analytics::tcspc::ptu::{PHU_MAGIC, PTU_MAGIC};
use flowdaq_analytics::tcspc::tttr_file::READABLE_FORMATS;
use flowdaq_connectors::replay::phu::PhuReplayConfig;
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
    /// The file, recognised from its content whatever its name. Time-tagged (photons,
    /// histograms, lifetimes): PicoQuant PTU (T2/T3 of every PicoQuant instrument), legacy
    /// PicoQuant HT3 (HydraHarp T3) and PT3 (PicoHarp T3), Becker & Hickl SPC-130/134/140/
    /// 150/160/830 FIFO (.spc; see --micro-bin-ps). Histograms: PicoQuant PHU (.phu), each
    /// curve one tcspc_histogram message (seq = its position), fitted. Spectra (text): Ocean Optics OOIBase32
    /// (.scope) and SpectraSuite/OceanView, JASCO, Agilent Cary UV-vis CSV (column pairs per
    /// sample, %T converted to absorbance), or CSV (wavelength column, then one column per
    /// spectrum).
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
    /// Spectra file format: ooibase32, spectrasuite (oceanview), jasco, cary, csv. Detected
    /// from the content if absent.
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
    /// Time-tagged files: histogram window, s (aligned to the file's sync clock); default:
    /// the --config entry's, else 1 s.
    #[arg(long)]
    pub window_s: Option<f64>,
    /// Time-tagged files: detector channels histogrammed and fitted; default: the --config
    /// entry's, else 2.
    #[arg(long)]
    pub channels: Option<usize>,
    /// Time-tagged files: FWHM of the Gaussian IRF of the fits, ps; default: the --config
    /// entry's, else 200.
    #[arg(long)]
    pub irf_fwhm_ps: Option<f64>,
    /// Time-tagged files: micro-time bin width, ps, replacing the file's. Becker & Hickl SPC
    /// files store none (it is in their .set file): default the macro period / 4096.
    #[arg(long)]
    pub micro_bin_ps: Option<f64>,
    /// Server configuration (TOML) for the embedded server: its `[features]` options decide
    /// the features computed, as on a live server. For a time-tagged file, its
    /// `[features.tcspc.sources.<--source>]` entry is used as written (components, bins,
    /// fit range, IRF ...), with only the flags given on the command line replacing what
    /// they name; without an entry, the file's timing and the defaults above. Its sockets
    /// and data_dir are ignored.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// What one kind of file needs: its connector, the SQL that shows its features afterwards,
/// and any analysis the embedded server must be told about (PTU timing comes from the file).
struct Prepared {
    connector: Box<dyn Connector>,
    features_title: &'static str,
    features_sql: fn(&str, &str, i64) -> String,
    /// The tables this kind of file fills, counted in the summary.
    tables: &'static [&'static str],
    tcspc: Option<TcspcSourceConfig>,
}

/// Replays the file.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let file_config = match &args.config {
        Some(path) => Some(ServerConfig::from_file(path)?),
        None => None,
    };
    let prepared = match sniff(&args.file)? {
        FileKind::TimeTagged => prepare_tttr(&args, file_config.as_ref())?,
        FileKind::Histograms => prepare_histograms(&args, file_config.as_ref())?,
        FileKind::Text => prepare_spectra(&args)?,
    };
    let Prepared {
        connector,
        features_title,
        features_sql,
        tables,
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
    if let Some(file) = file_config {
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
    let rejected = server.metrics.snapshot().messages_rejected;
    // Every message is processed (durable and queryable), so these counts are final.
    let mut stored = Vec::new();
    for table in tables {
        let sql = format!(
            "SELECT count(*) AS n FROM {table} WHERE {}",
            this_replay(&args.source, &run_id, started_ns)
        );
        let rows = match server.query.execute(&sql).await {
            Ok(result) => count_of(&result.render(Format::Csv)?),
            Err(err) => Err(err.to_string()),
        };
        stored.push(match rows {
            Ok(n) => format!("{table} {n}"),
            Err(err) => format!("{table} unknown ({err})"),
        });
    }
    let features = server
        .query
        .execute(&features_sql(&args.source, &run_id, started_ns))
        .await;
    server.shutdown().await?;
    if !processed {
        bail!("the server did not process all {sent} messages within 60 s");
    }
    println!(
        "replayed {sent} messages into {}: rows stored: {}; {rejected} messages rejected",
        args.data_dir.display(),
        stored.join(", ")
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

/// The SQL condition selecting the rows of this replay: its source and run, arrived since it
/// started.
fn this_replay(source: &str, run_id: &str, started_ns: i64) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    format!(
        "source = '{}' AND run_id = '{}' AND arrival_time_ns >= to_timestamp_nanos({started_ns})",
        quote(source),
        quote(run_id)
    )
}

/// The number a one-cell `count(*)` result holds, from its CSV rendering.
fn count_of(csv: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(csv);
    text.lines()
        .nth(1)
        .and_then(|cell| cell.trim().parse().ok())
        .ok_or_else(|| format!("unexpected count result {text:?}"))
}

/// What a file holds, from its first bytes.
enum FileKind {
    TimeTagged,
    Histograms,
    Text,
}

/// Tells time-tagged files (PicoQuant magics, legacy idents, an SPC first frame) from text;
/// refuses other binary content by naming the readable formats.
fn sniff(path: &std::path::Path) -> anyhow::Result<FileKind> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(4096)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    let word = head
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if head.starts_with(PHU_MAGIC) {
        return Ok(FileKind::Histograms);
    }
    if head.starts_with(PTU_MAGIC) || legacy_kind(&head).is_some() || word & 0x8000_0000 != 0 {
        return Ok(FileKind::TimeTagged);
    }
    // Text: no NUL byte and valid UTF-8 (a multi-byte character cut at the 4 KiB mark aside).
    let valid_utf8 = match std::str::from_utf8(&head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    if !head.contains(&0) && valid_utf8 {
        return Ok(FileKind::Text);
    }
    bail!(
        "{}: not a format flowdaq reads (binary content without a known magic). \
         Time-tagged: {READABLE_FORMATS}; histograms: PicoQuant PHU; spectra: text exports of Ocean Optics (OOIBase32, \
         SpectraSuite/OceanView), JASCO, Agilent Cary, or CSV",
        path.display()
    )
}

/// The lifetimes of what this replay sent, first 20 windows and channels.
fn lifetime_features_query(source: &str, run_id: &str, started_ns: i64) -> String {
    format!(
        "SELECT window_start_ps, channel, photon_count, round(count_rate_hz) AS rate_hz, pile_up, \
         round(tau_1_ns, 3) AS tau_ns, round(tau_1_stderr_ns, 3) AS tau_sd_ns, \
         round(reduced_chi_square, 2) AS chi2_red, round(phasor_g, 4) AS g, round(phasor_s, 4) AS s, \
         converged, fit_flag_names AS flags, fit_error FROM lifetime_features WHERE {} \
         ORDER BY window_start_ps, channel LIMIT 20",
        this_replay(source, run_id, started_ns)
    )
}

/// The features of what this replay sent, first 20 spectra.
fn spectral_features_query(source: &str, run_id: &str, started_ns: i64) -> String {
    format!(
        "SELECT seq, spectrum_index, kind, round(peak_wavelength_nm, 3) AS peak_nm, \
         round(peak_energy_ev, 4) AS peak_ev, round(fwhm_nm, 3) AS fwhm_nm, \
         round(exciton_wavelength_nm, 2) AS exciton_nm, round(exciton_absorbance, 4) AS exciton_a, \
         quality_flag_names AS flags FROM spectral_features WHERE {} \
         ORDER BY seq, spectrum_index LIMIT 20",
        this_replay(source, run_id, started_ns)
    )
}

fn prepare_spectra(args: &ReplayArgs) -> anyhow::Result<Prepared> {
    let format = match &args.format {
        Some(name) => Some(
            serde_json::from_value::<SpectraFileFormat>(serde_json::Value::String(name.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "unknown --format {name:?}: use ooibase32, spectrasuite, jasco, cary or csv"
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
        tables: &["spectra", "spectral_features"],
        tcspc: None,
    })
}

fn prepare_histograms(
    args: &ReplayArgs,
    file_config: Option<&ServerConfig>,
) -> anyhow::Result<Prepared> {
    let config = PhuReplayConfig {
        path: args.file.clone(),
        source: args.source.clone(),
        run_id: args.run_id.clone(),
    };
    let replay = config
        .build()
        .with_context(|| format!("reading {}", args.file.display()))?;
    println!(
        "{}: PicoQuant histogram file, {} curves",
        args.file.display(),
        replay.remaining()
    );
    // A histogram message carries its own timing; the fit options come from the --config
    // entry if there is one, else the defaults.
    let tcspc = file_config
        .and_then(|c| c.features.tcspc.sources.get(&args.source))
        .cloned();
    Ok(Prepared {
        connector: Box::new(replay),
        features_title: "lifetimes (lifetime_features; one row per curve)",
        features_sql: lifetime_features_query,
        tables: &["tcspc_histograms", "lifetime_features"],
        tcspc,
    })
}

fn prepare_tttr(args: &ReplayArgs, file_config: Option<&ServerConfig>) -> anyhow::Result<Prepared> {
    let config = PtuReplayConfig {
        source: args.source.clone(),
        run_id: args.run_id.clone(),
        micro_bin_ps: args.micro_bin_ps,
        ..PtuReplayConfig::new(&args.file)
    };
    let replay = config
        .build()
        .with_context(|| format!("reading {}", args.file.display()))?;
    println!("{}", replay.summary());
    let configured = file_config.and_then(|c| c.features.tcspc.sources.get(&args.source));
    let mut tcspc = match configured {
        Some(entry) => entry.clone(),
        None => {
            let sync_rate_hz = replay
                .sync_rate_hz()
                .context("the file states no sync rate: not a T3 file, cannot histogram")?;
            TcspcSourceConfig {
                channels: 2,
                statistic: StatisticChoice::PoissonMle,
                ..TcspcSourceConfig::new(sync_rate_hz, replay.resolution_ps())
            }
        }
    };
    // The command line replaces only what it names.
    if let Some(window_s) = args.window_s {
        tcspc.window_s = window_s;
        tcspc.window_photons = None;
    }
    if let Some(channels) = args.channels {
        tcspc.channels = channels;
    }
    if let Some(irf_fwhm_ps) = args.irf_fwhm_ps {
        tcspc.irf_fwhm_ps = irf_fwhm_ps;
    }
    if let Some(micro_bin_ps) = args.micro_bin_ps {
        tcspc.micro_bin_ps = micro_bin_ps;
    }
    Ok(Prepared {
        connector: Box::new(replay),
        features_title:
            "lifetimes (lifetime_features; the file's last message closes the last, partial window)",
        features_sql: lifetime_features_query,
        tables: &["photons", "tcspc_histograms", "lifetime_features"],
        tcspc: Some(tcspc),
    })
}
