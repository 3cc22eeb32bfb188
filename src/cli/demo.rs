//! `flowdaq demo`: the whole path in one command on embedded defaults.
//!
//! A server starts on ephemeral loopback ports, simulated instruments stream to it over real
//! ZeroMQ sockets while a progress line shows rates, a few deliberately malformed frames show
//! the error path, everything is persisted to Parquet, and SQL answers questions about the run.
//! The progress line shows the newest spectrum's peak energy and width, read with SQL from the
//! `spectral_features` rows the pipeline computed as the spectra arrived, with the plug velocity
//! a simulated phase-sensor pair measures and the reaction time it gives each spectrum. A
//! simulated TCSPC card sends decays whose lifetime follows the same conditions. The dashboard
//! (`GET /`) draws it all live; `--linger` keeps it streaming until interrupted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use clap::Args;
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::{run_connector, Pacing, PushSender};
use flowdaq_connectors::sim::phase_sensor::SimulatedPhaseSensorConfig;
use flowdaq_connectors::sim::spectrometer::SimulatedSpectrometerConfig;
use flowdaq_connectors::sim::tcspc_histogram::SimulatedTcspcHistogramConfig;
use flowdaq_connectors::ConnectorConfig;
use flowdaq_daq::config::{PolarityChoice, SensorPairConfig};
use flowdaq_daq::query::output::Format;
use flowdaq_daq::query::QueryEngine;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::{Dtype, StreamKind};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `flowdaq demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the instruments stream, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Spectra per second from the simulated spectrometer.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Data directory.
    #[arg(long, default_value = "./flowdaq-data")]
    pub data_dir: PathBuf,
    /// Keep the instruments streaming and the dashboard served until interrupted (Ctrl-C),
    /// then finish as usual.
    #[arg(long)]
    pub linger: bool,
    /// Address of the HTTP server (dashboard and SQL); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http: String,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started_ns = flowdaq_connectors::transport::now_ns();
    let run_id = format!("demo-{}", started_ns / 1_000_000_000);
    let mut config = ServerConfig {
        data_dir: args.data_dir.clone(),
        ..ServerConfig::default()
    };
    config.ingest.pull = "tcp://127.0.0.1:0".into();
    config.ingest.sub = "tcp://127.0.0.1:0".into();
    config.ingest.router = "tcp://127.0.0.1:0".into();
    config.http.listen = args.http.clone();
    config.publish.listen = "tcp://127.0.0.1:0".into();
    config.control.listen = "tcp://127.0.0.1:0".into();
    config.flight_sql.listen = "127.0.0.1:0".into();
    config.postgres.listen = "127.0.0.1:0".into();
    config.buffer.flush_interval_ms = 2_000;
    // Conditions last a few seconds here, not minutes: settle on a short window.
    config.outcomes.min_wait_s = 0.5;
    config.outcomes.window_s = 1.0;
    config.outcomes.min_samples = 5;
    // The simulated phase-sensor pair, 2 mm apart, 100 mm after the mixing point; its
    // velocity dates every spectrum (the spectrometer's probe sits at 60 mm).
    let phase = SimulatedPhaseSensorConfig {
        run_id: None,
        seconds_per_condition: args.duration / 4.0,
        ..SimulatedPhaseSensorConfig::default()
    };
    config.features.flow.pairs.insert(
        phase.source.clone(),
        SensorPairConfig {
            spacing_mm: phase.spacing_mm,
            position_mm: Some(100.0),
            plug_polarity: PolarityChoice::High,
        },
    );
    let server = flowdaq_daq::start(config)
        .await
        .context("starting the server")?;
    let pull = server.endpoints.pull.clone().context("no PULL endpoint")?;
    println!(
        "flowdaq demo: run {run_id}, data in {}",
        args.data_dir.display()
    );
    let http = server.http_addr.map(|a| a.to_string()).unwrap_or_default();
    println!("  server PULL {pull}  HTTP http://{http}");
    println!("  dashboard http://{http}/");
    if args.linger {
        println!("  streaming until interrupted (Ctrl-C)");
    }

    let spectra_per_condition = ((args.rate * args.duration) / 4.0).max(10.0) as usize;
    let spectrometer = ConnectorConfig::SimulatedSpectrometer(SimulatedSpectrometerConfig {
        run_id: Some(run_id.clone()),
        spectra_per_condition,
        settle_spectra: (spectra_per_condition as f64 / 8.0).max(1.0),
        probe_position_mm: Some(60.0),
        ..SimulatedSpectrometerConfig::default()
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(run_connector(
        spectrometer.build()?,
        pull.clone(),
        Pacing::RateHz(args.rate),
        stop.clone(),
    ));
    let phase_rate_hz = phase.sample_rate_hz / phase.chunk_samples as f64;
    let phase_sender = tokio::spawn(run_connector(
        ConnectorConfig::SimulatedPhaseSensor(SimulatedPhaseSensorConfig {
            run_id: Some(run_id.clone()),
            ..phase
        })
        .build()?,
        pull.clone(),
        Pacing::RateHz(phase_rate_hz),
        stop.clone(),
    ));
    // A TCSPC card in histogram mode, 4 decays a second, its lifetime following the same
    // conditions as the spectrometer.
    let tcspc_rate_hz = 4.0;
    let tcspc_sender = tokio::spawn(run_connector(
        ConnectorConfig::SimulatedTcspcHistogram(SimulatedTcspcHistogramConfig {
            run_id: Some(run_id.clone()),
            histograms_per_condition: ((tcspc_rate_hz * args.duration) / 4.0).max(1.0) as usize,
            ..SimulatedTcspcHistogramConfig::default()
        })
        .build()?,
        pull.clone(),
        Pacing::RateHz(tcspc_rate_hz),
        stop.clone(),
    ));
    let bad_sent = send_malformed_frames(&pull, &run_id).await?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {elapsed:>3} {msg}",
    )?);
    // Without a terminal the spinner is hidden: print the same line once a second instead.
    let plain = bar.is_hidden();
    let begin = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut ticks = 0u64;
    let mut latest = String::from("waiting for the first spectrum");
    let interrupted = super::serve::wait_for_signal();
    tokio::pin!(interrupted);
    while args.linger || begin.elapsed().as_secs_f64() < args.duration {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = &mut interrupted => break,
        }
        ticks += 1;
        if ticks.is_multiple_of(2) {
            // SQL over rows still in the write buffer: features are queryable on arrival.
            if let Some(line) = latest_features(&server.query, &run_id).await {
                latest = line;
            }
        }
        let metrics = server.metrics.snapshot();
        let stats = server.buffer.stats();
        let now = Instant::now();
        let rate =
            (metrics.messages_received - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, metrics.messages_received);
        let line = format!(
            "messages {:>6} ({rate:>4.0}/s)  buffered {:>5}  persisted {:>6} rows in {} files  rejected {}  p99 durable {} us  | {latest}",
            metrics.messages_received,
            stats.open_rows + stats.persisting_rows,
            stats.persisted_rows,
            stats.persisted_files,
            metrics.messages_rejected,
            metrics.receipt_to_durable.p99_us,
        );
        if plain {
            if ticks.is_multiple_of(4) {
                println!("{:>5.1}s {line}", begin.elapsed().as_secs_f64());
            }
        } else {
            bar.set_message(line);
            bar.tick();
        }
    }
    stop_tx.send(true)?;
    let sent = sender.await??;
    let phase_sent = phase_sender.await??;
    let tcspc_sent = tcspc_sender.await??;
    let all = sent + phase_sent + tcspc_sent + bad_sent;
    if !server
        .metrics
        .wait_processed(all, Duration::from_secs(30))
        .await
    {
        anyhow::bail!("server did not process all {all} messages");
    }
    bar.finish_with_message(format!(
        "{sent} spectra messages, {phase_sent} phase-trace chunks, {tcspc_sent} TCSPC histograms and {bad_sent} malformed frames sent"
    ));
    let query = server.query.clone();
    server.shutdown().await?;
    println!(
        "\nAll rows persisted to Parquet under {}/tables. SQL over them:\n",
        args.data_dir.display()
    );
    let recovered = flowdaq_daq::server::recover(
        &args.data_dir,
        false,
        flowdaq_daq::storage::LocalStorage::shared(),
    )?;
    drop(query);
    let engine = QueryEngine::new(
        recovered.buffer,
        &flowdaq_daq::config::QueryConfig::default(),
    )?;
    for (title, sql) in demo_queries(&run_id, started_ns) {
        println!("-- {title}\n{sql}");
        let result = engine.execute(&sql).await?;
        print!(
            "{}",
            String::from_utf8_lossy(&result.render(Format::Table)?)
        );
        println!();
    }
    println!(
        "Try: flowdaq sql \"SELECT count(*) FROM spectra\" --data-dir {}",
        args.data_dir.display()
    );
    Ok(())
}

/// The newest PL spectrum's features, from SQL, as `condition c2: peak 2.465 eV, FWHM 88 meV`.
async fn latest_features(query: &QueryEngine, run_id: &str) -> Option<String> {
    let sql = format!(
        "SELECT condition_id, peak_energy_ev, fwhm_ev, velocity_mm_per_s, reaction_time_s FROM spectral_features \
         WHERE run_id = '{run_id}' AND kind = 'pl' AND peak_energy_ev IS NOT NULL \
         ORDER BY arrival_time_ns DESC LIMIT 1"
    );
    let result = query.execute(&sql).await.ok()?;
    let batch = result.batches.iter().find(|b| b.num_rows() > 0)?;
    let condition = batch.column(0).as_string_opt::<i32>()?;
    let energy = batch.column(1).as_primitive_opt::<Float64Type>()?;
    let fwhm = batch.column(2).as_primitive_opt::<Float64Type>()?;
    let velocity = batch.column(3).as_primitive_opt::<Float64Type>()?;
    let reaction = batch.column(4).as_primitive_opt::<Float64Type>()?;
    let condition = if condition.is_null(0) {
        "-"
    } else {
        condition.value(0)
    };
    let flow = if velocity.is_valid(0) && reaction.is_valid(0) {
        format!(
            ", flow {:.1} mm/s, reaction time {:.2} s",
            velocity.value(0),
            reaction.value(0)
        )
    } else {
        ", flow: measuring".to_string()
    };
    Some(format!(
        "condition {condition}: peak {:.3} eV, FWHM {:.0} meV{flow}",
        energy.value(0),
        1000.0 * fwhm.value(0)
    ))
}

fn demo_queries(run_id: &str, started_ns: i64) -> Vec<(&'static str, String)> {
    vec![
        (
            "What arrived, per source and kind",
            format!(
                "SELECT source, kind, count(*) AS spectra, min(arrival_time_ns) AS first, max(arrival_time_ns) AS last \
                 FROM spectra WHERE run_id = '{run_id}' GROUP BY source, kind"
            ),
        ),
        (
            "Per condition: PL features extracted as the spectra arrived (spectral_features)",
            format!(
                "SELECT condition_id, count(*) AS spectra, \
                 round(avg(peak_energy_ev), 4) AS peak_energy_ev, round(stddev(peak_energy_ev), 4) AS sd_ev, \
                 round(avg(fwhm_ev) * 1000, 1) AS fwhm_mev, round(avg(peak_wavelength_nm), 2) AS peak_nm, \
                 round(avg(reaction_time_s), 2) AS reaction_time_s, \
                 sum(CASE WHEN quality_flags <> 0 THEN 1 ELSE 0 END) AS flagged \
                 FROM spectral_features WHERE run_id = '{run_id}' AND kind = 'pl' \
                 GROUP BY condition_id ORDER BY condition_id"
            ),
        ),
        (
            "Per condition: plug flow measured by the phase sensors (flow_features, 2 s windows)",
            format!(
                "SELECT condition_id, count(*) AS windows, round(avg(velocity_mm_per_s), 1) AS velocity_mm_per_s, \
                 round(avg(velocity_xcorr_mm_per_s), 1) AS xcorr_mm_per_s, round(avg(plug_length_mean_mm), 2) AS plug_mm, \
                 round(avg(segment_frequency_hz), 1) AS plugs_per_s, sum(merged_segments) AS merged, sum(split_segments) AS split \
                 FROM flow_features WHERE run_id = '{run_id}' GROUP BY condition_id ORDER BY condition_id"
            ),
        ),
        (
            "Per condition: the outcome an optimizer receives (condition_outcomes, steady-state detection)",
            format!(
                "SELECT condition_id, feature, settled, round(mean, 4) AS mean, round(std, 4) AS std, count, \
                 coalesce(reason, '') AS reason FROM condition_outcomes WHERE run_id = '{run_id}' \
                 AND feature = 'spectral_features.peak_energy_ev' ORDER BY condition_id"
            ),
        ),
        (
            "Cross-check in plain SQL: brightest pixel's energy (raw spectra joined to their calibration)",
            format!(
                "SELECT s.condition_id, count(*) AS spectra, \
                 round(avg(1239.84198 / array_element(c.wavelength_nm, \
                   CAST(array_position(s.intensity_counts, array_max(s.intensity_counts)) AS BIGINT))), 4) AS mean_peak_energy_ev \
                 FROM spectra s JOIN spectral_calibrations c \
                   ON s.source = c.source AND s.calibration_id = c.calibration_id \
                 WHERE s.run_id = '{run_id}' GROUP BY s.condition_id ORDER BY s.condition_id"
            ),
        ),
        (
            "Frames rejected during the run, with the reason",
            format!(
                "SELECT transport, source, seq, reason FROM ingest_errors \
                 WHERE arrival_time_ns >= to_timestamp_nanos({started_ns}) ORDER BY seq"
            ),
        ),
    ]
}

/// Sends three malformed frames (truncated, NaN-laden, unknown stream) from a separate source.
async fn send_malformed_frames(pull: &str, run_id: &str) -> anyhow::Result<u64> {
    let mut sender = PushSender::connect(pull).await?;
    let axis: Vec<f64> = (0..64).map(|i| 500.0 + i as f64).collect();
    let base = |kind: &str| {
        let mut message = OutboundMessage::new("bad-sender", StreamKind::Spectra)
            .meta("kind", kind)
            .meta("integration_time_ms", 5.0)
            .array_f64("wavelength_nm", &[64], &axis);
        message.header.run_id = Some(run_id.to_string());
        message
    };
    let truncated = base("pl").raw_array("intensity_counts", Dtype::F32, &[64], vec![0; 100]);
    let mut counts = vec![100.0f32; 64];
    counts[10] = f32::NAN;
    let nan = base("pl").array_f32("intensity_counts", &[64], &counts);
    let bad_kind = base("fluorescence").array_f32("intensity_counts", &[64], &[1.0; 64]);
    for message in [truncated, nan, bad_kind] {
        sender.send(message).await?;
    }
    Ok(3)
}
