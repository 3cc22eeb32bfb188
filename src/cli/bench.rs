//! `flowdaq bench ingest`: the end-to-end load generator.
//!
//! Starts a server in-process on loopback with a fresh data directory, then (1) pushes
//! 2048-pixel spectra from several PUSH senders as fast as the server takes them and reports
//! spectra/s and MB/s into the WAL and on into Parquet, and (2) sends at a fixed rate and
//! reports p50/p99 latency from receipt to durable and to queryable. Senders share the
//! machine's cores with the server; that is stated beside the figures in docs/performance.md.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::PushSender;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::StreamKind;

/// Load generators.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Spectra over ZeroMQ into WAL and Parquet: throughput and latency.
    Ingest(IngestArgs),
    /// Raw TCSPC records over ZeroMQ: decoded photons per second, with zero loss checked.
    Photons(PhotonArgs),
}

/// Arguments of `flowdaq bench photons`.
#[derive(Debug, Args)]
pub struct PhotonArgs {
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// HydraHarp v2 T3 records per message.
    #[arg(long, default_value_t = 262_144)]
    pub records_per_message: usize,
    /// Store the decoded photons (off: only count them and feed the TCSPC features).
    #[arg(long)]
    pub store_raw: bool,
    /// Also compute tcspc_histograms and lifetime_features (1 s windows, 1-exp fits).
    #[arg(long)]
    pub features: bool,
    /// Messages sent but not yet processed at most: the sender waits for the server beyond
    /// this, so the sending phase is as long as asked and the rate is the server's.
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `flowdaq bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent PUSH senders in the throughput phase.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Pixels per spectrum.
    #[arg(long, default_value_t = 2048)]
    pub pixels: usize,
    /// Spectra per message.
    #[arg(long, default_value_t = 1)]
    pub spectra_per_message: usize,
    /// Spectra per second in the latency phase.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a bench.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Photons(args) => photons(args).await,
    }
}

fn spectrum_message(pixels: usize, spectra: usize) -> OutboundMessage {
    let axis: Vec<f64> = (0..pixels)
        .map(|i| 350.0 + 650.0 * i as f64 / pixels as f64)
        .collect();
    let counts: Vec<f32> = (0..pixels * spectra)
        .map(|i| 1000.0 + (i % 4096) as f32)
        .collect();
    OutboundMessage::new("bench", StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 1.0)
        .array_f64("wavelength_nm", &[pixels as u64], &axis)
        .array_f32(
            "intensity_counts",
            &[spectra as u64, pixels as u64],
            &counts,
        )
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("flowdaq-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let config = ServerConfig::embedded_pull_only(&data_dir);
    let server = flowdaq_daq::start(config)
        .await
        .context("starting the server")?;
    let pull = server.endpoints.pull.clone().context("no PULL endpoint")?;
    let message = spectrum_message(args.pixels, args.spectra_per_message);
    let message_bytes: usize = message.frames().iter().map(|f| f.len()).sum();

    // Phase 1: throughput.
    let phase = Duration::from_secs_f64(args.seconds);
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for sender_index in 0..args.senders.max(1) {
        let pull = pull.clone();
        let mut message = message.clone();
        message.header.source = format!("bench-{sender_index}");
        tasks.push(tokio::spawn(async move {
            let mut sender = PushSender::connect(&pull).await?;
            let mut sent = 0u64;
            while begin.elapsed() < phase {
                sender.send(message.clone()).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await??;
    }
    let all_in = server
        .metrics
        .wait_processed(sent, Duration::from_secs(120))
        .await;
    let durable_elapsed = begin.elapsed().as_secs_f64();
    anyhow::ensure!(all_in, "server did not process all {sent} messages");
    let spectra = sent as f64 * args.spectra_per_message as f64;

    // Phase 2: latency at a fixed rate, in steady state: first let the persister finish the
    // snapshots of phase 1, whose Parquet encoding and fsyncs would otherwise compete with it.
    let drain_begin = Instant::now();
    while server.buffer.stats().persisting_rows > 0
        && drain_begin.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_seconds = drain_begin.elapsed().as_secs_f64();
    server.metrics.reset_latencies();
    let messages_per_second = args.rate / args.spectra_per_message as f64;
    let mut sender = PushSender::connect(&pull).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / messages_per_second));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let latency_begin = Instant::now();
    let mut latency_sent = 0u64;
    let mut latency_message = message.clone();
    latency_message.header.source = "bench-latency".into();
    while latency_begin.elapsed() < phase {
        ticker.tick().await;
        sender.send(latency_message.clone()).await?;
        latency_sent += 1;
    }
    anyhow::ensure!(
        server
            .metrics
            .wait_processed(sent + latency_sent, Duration::from_secs(60))
            .await,
        "server did not process the latency phase"
    );
    let metrics = server.metrics.snapshot();

    // Everything into Parquet.
    let persist_begin = Instant::now();
    server.shutdown().await?;
    let persist_seconds = persist_begin.elapsed().as_secs_f64();
    let parquet_bytes = dir_size(&data_dir.join("tables"));
    let _ = std::fs::remove_dir_all(&data_dir);

    let report = serde_json::json!({
        "pixels": args.pixels,
        "spectra_per_message": args.spectra_per_message,
        "message_bytes": message_bytes,
        "senders": args.senders,
        "throughput_spectra_per_s": spectra / durable_elapsed,
        "throughput_mb_per_s": sent as f64 * message_bytes as f64 / durable_elapsed / 1e6,
        // Phase 1's spectra over the time until the persister had written every snapshot of
        // them; the last flush_bytes or less were still in the WAL and buffer at that moment.
        "sustained_into_parquet_spectra_per_s": spectra / (durable_elapsed + drain_seconds),
        "phase1_persist_drain_seconds": drain_seconds,
        "final_persist_seconds": persist_seconds,
        "parquet_bytes": parquet_bytes,
        "latency_rate_spectra_per_s": args.rate,
        "receipt_to_durable_p50_us": metrics.receipt_to_durable.p50_us,
        "receipt_to_durable_p99_us": metrics.receipt_to_durable.p99_us,
        "receipt_to_queryable_p50_us": metrics.receipt_to_queryable.p50_us,
        "receipt_to_queryable_p99_us": metrics.receipt_to_queryable.p99_us,
        "latency_samples": metrics.receipt_to_durable.count,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn photons(args: PhotonArgs) -> anyhow::Result<()> {
    use flowdaq_daq::config::{SourceConfig, StatisticChoice, TcspcSourceConfig};
    let data_dir =
        std::env::temp_dir().join(format!("flowdaq-bench-photons-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = ServerConfig::embedded_pull_only(&data_dir);
    // 40 MHz sync, 16 ps bins: the HydraHarp of the reference file.
    let sync_rate_hz = 40e6;
    config.sources.insert(
        "tcspc-bench".into(),
        SourceConfig {
            store_raw: args.store_raw,
        },
    );
    if args.features {
        config.features.tcspc.sources.insert(
            "tcspc-bench".into(),
            TcspcSourceConfig {
                bin_width_native: 8,
                channels: 2,
                statistic: StatisticChoice::PoissonMle,
                ..TcspcSourceConfig::new(sync_rate_hz, 16.0)
            },
        );
    }
    let server = flowdaq_daq::start(config)
        .await
        .context("starting the server")?;
    let pull = server.endpoints.pull.clone().context("no PULL endpoint")?;
    let records =
        flowdaq_connectors::sim::tcspc_records::hydraharp_t3_records(args.records_per_message);
    let overflows = records.chunks_exact(4).filter(|r| r[3] & 0x80 != 0).count() as u64;
    let photons_per_message = args.records_per_message as u64 - overflows;
    let message = OutboundMessage::new("tcspc-bench", StreamKind::Photons)
        .meta(
            "record_type",
            flowdaq_analytics::tcspc::records::RecordType::HydraHarpV2T3.code(),
        )
        .meta("macro_unit_ps", 1e12 / sync_rate_hz)
        .meta("micro_bin_ps", 16.0)
        .raw_array(
            "records",
            flowdaq_schemas::Dtype::U32,
            &[args.records_per_message as u64],
            records,
        );
    let mut sender = PushSender::connect(&pull).await?;
    let phase = Duration::from_secs_f64(args.seconds);
    let begin = Instant::now();
    let mut sent = 0u64;
    let max_in_flight = args.max_in_flight.max(1);
    while begin.elapsed() < phase {
        // The crate's PUSH queues without bound; this window is the backpressure it lacks.
        if sent >= max_in_flight {
            anyhow::ensure!(
                server
                    .metrics
                    .wait_processed(sent + 1 - max_in_flight, Duration::from_secs(60))
                    .await,
                "server processed nothing for 60 s ({sent} messages sent)"
            );
        }
        sender.send(message.clone()).await?;
        sent += 1;
    }
    anyhow::ensure!(
        server
            .metrics
            .wait_processed(sent, Duration::from_secs(300))
            .await,
        "server did not process all {sent} messages"
    );
    let elapsed = begin.elapsed().as_secs_f64();
    let metrics = server.metrics.snapshot();
    let stats = metrics
        .sources
        .get("tcspc-bench")
        .cloned()
        .unwrap_or_default();
    let photons_sent = sent * photons_per_message;
    // Zero loss: every message accepted, and every photon counted as a row of the source.
    anyhow::ensure!(
        metrics.messages_rejected == 0 && stats.rows == photons_sent,
        "loss: sent {photons_sent} photons, the server counted {} ({} rejected)",
        stats.rows,
        metrics.messages_rejected
    );
    server.shutdown().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    let report = serde_json::json!({
        "records_per_message": args.records_per_message,
        "max_in_flight": max_in_flight,
        "store_raw": args.store_raw,
        "features": args.features,
        "messages": sent,
        "photons": photons_sent,
        "photons_per_s": photons_sent as f64 / elapsed,
        "records_mb_per_s": sent as f64 * 4.0 * args.records_per_message as f64 / elapsed / 1e6,
        "seconds_until_all_processed": elapsed,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}
