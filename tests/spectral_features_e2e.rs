//! `spectral_features` end to end: spectra with known peaks pushed over a real ZeroMQ socket,
//! features computed in the pipeline, queryable before and after persistence, kept for a source
//! whose raw spectra are not stored, and identical after a restart from Parquet.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::PushSender;
use flowdaq_daq::config::SourceConfig;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::StreamKind;

const PIXELS: usize = 2048;

fn axis_nm() -> Vec<f64> {
    (0..PIXELS)
        .map(|i| 350.0 + 450.0 * i as f64 / PIXELS as f64)
        .collect()
}

/// A Gaussian PL line on an offset; the truth the features must recover.
fn pl_spectrum(center_nm: f64, sigma_nm: f64) -> Vec<f32> {
    axis_nm()
        .iter()
        .map(|nm| (80.0 + 2000.0 * (-0.5 * ((nm - center_nm) / sigma_nm).powi(2)).exp()) as f32)
        .collect()
}

fn message(source: &str, condition: &str, center_nm: f64, spectra: usize) -> OutboundMessage {
    let counts: Vec<f32> = (0..spectra)
        .flat_map(|i| pl_spectrum(center_nm + 0.01 * i as f64, 9.0))
        .collect();
    let mut message = OutboundMessage::new(source, StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 10.0)
        .array_f64("wavelength_nm", &[PIXELS as u64], &axis_nm())
        .array_f32(
            "intensity_counts",
            &[spectra as u64, PIXELS as u64],
            &counts,
        );
    message.header.run_id = Some("features".into());
    message.header.condition_id = Some(condition.into());
    message
}

fn scalar_i64(result: &flowdaq_daq::query::QueryResult) -> i64 {
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

/// Per condition: (condition, rows, mean peak nm, mean FWHM nm), ordered by condition.
async fn per_condition(query: &flowdaq_daq::query::QueryEngine) -> Vec<(String, i64, f64, f64)> {
    let result = query
        .execute(
            "SELECT condition_id, count(*), avg(peak_wavelength_nm), avg(fwhm_nm) \
             FROM spectral_features WHERE run_id = 'features' \
             GROUP BY condition_id ORDER BY condition_id",
        )
        .await
        .expect("sql");
    let mut rows = Vec::new();
    for batch in &result.batches {
        let conditions = batch.column(0).as_string::<i32>();
        let counts = batch.column(1).as_primitive::<Int64Type>();
        let peaks = batch.column(2).as_primitive::<Float64Type>();
        let widths = batch.column(3).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            rows.push((
                conditions.value(row).to_string(),
                counts.value(row),
                peaks.value(row),
                widths.value(row),
            ));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_are_computed_on_arrival_persisted_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::embedded_pull_only(dir.path());
    config.sources.insert(
        "spec-features-only".into(),
        SourceConfig { store_raw: false },
    );
    let server = flowdaq_daq::start(config.clone()).await.expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut sender = PushSender::connect(&pull).await.expect("connect");
    let truth = [("c1", 515.0), ("c2", 498.5)];
    let mut sent = 0u64;
    for (condition, center) in truth {
        for _ in 0..3 {
            sender
                .send(message("spec-1", condition, center, 4))
                .await
                .expect("send");
            sender
                .send(message("spec-features-only", condition, center, 4))
                .await
                .expect("send");
            sent += 2;
        }
    }
    assert!(
        server
            .metrics
            .wait_processed(sent, Duration::from_secs(30))
            .await
    );

    // Queryable from the write buffer, before any Parquet exists.
    let live = per_condition(&server.query).await;
    let fwhm_truth = 2.0 * (2.0f64 * 2.0f64.ln()).sqrt() * 9.0;
    assert_eq!(live.len(), truth.len());
    for ((condition, rows, peak, fwhm), (expected_condition, center)) in live.iter().zip(truth) {
        assert_eq!(condition, expected_condition);
        assert_eq!(
            *rows,
            2 * 3 * 4,
            "one feature row per spectrum of both sources"
        );
        // Spectra within a message are offset by 0, 0.01, 0.02, 0.03 nm: mean +0.015.
        assert!(
            (peak - (center + 0.015)).abs() < 0.02,
            "{condition}: {peak}"
        );
        assert!((fwhm - fwhm_truth).abs() < 0.05, "{condition}: {fwhm}");
    }
    // Raw rows only for the source that stores them; every raw row has its feature row.
    let raw = server
        .query
        .execute("SELECT count(*) FROM spectra WHERE run_id = 'features'")
        .await
        .expect("sql");
    assert_eq!(scalar_i64(&raw), 2 * 3 * 4);
    let joined = server
        .query
        .execute(
            "SELECT count(*) FROM spectra s JOIN spectral_features f \
             ON s.source = f.source AND s.seq = f.seq AND s.spectrum_index = f.spectrum_index",
        )
        .await
        .expect("sql");
    assert_eq!(scalar_i64(&joined), 2 * 3 * 4);
    let failures = server.metrics.snapshot().feature_failures;
    assert!(failures.is_empty(), "{failures:?}");
    server.shutdown().await.expect("shutdown");

    let files = std::fs::read_dir(dir.path().join("tables/spectral_features"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(files > 0, "spectral_features persisted to Parquet");
    let restarted = flowdaq_daq::start(config).await.expect("restart");
    let persisted = per_condition(&restarted.query).await;
    assert_eq!(persisted.len(), live.len());
    for (after, before) in persisted.iter().zip(&live) {
        // Same rows; only the summation order of avg() may differ between buffer and Parquet.
        assert_eq!((&after.0, after.1), (&before.0, before.1));
        assert!((after.2 - before.2).abs() < 1e-9 && (after.3 - before.3).abs() < 1e-9);
    }
    restarted.shutdown().await.expect("shutdown");
}
