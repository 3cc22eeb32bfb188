//! `flowdaq replay <file>` on the real instrument files of `connectors/tests/data/`: the
//! replayed spectrum gets the same `spectral_features` row as the same spectrum sent live by a
//! sender that read the file on its own, and feature options come from `--config`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::PushSender;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::StreamKind;

const FEATURE_COLUMNS: &str =
    "peak_wavelength_nm, peak_energy_ev, fwhm_nm, fwhm_ev, peak_height_counts, \
     integrated_intensity_counts_nm, iqr_nm";

fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("connectors/tests/data")
        .join(name)
}

/// A reader independent of the replay code: the two numeric columns after the begin marker.
fn read_scope(path: &Path) -> (Vec<f64>, Vec<f32>) {
    let text = std::fs::read_to_string(path).expect("read .scope");
    let (mut axis, mut counts) = (Vec::new(), Vec::new());
    let mut in_data = false;
    for line in text.lines() {
        if line.contains("Begin Spectral Data") {
            in_data = true;
        } else if line.contains("End Spectral Data") {
            break;
        } else if in_data {
            let mut fields = line.split_whitespace();
            let (Some(x), Some(y)) = (fields.next(), fields.next()) else {
                continue;
            };
            axis.push(x.parse::<f64>().expect("wavelength"));
            counts.push(y.parse::<f64>().expect("counts") as f32);
        }
    }
    (axis, counts)
}

fn flowdaq(args: &[&str], data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flowdaq");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "flowdaq {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `flowdaq replay FILE --source SOURCE EXTRA... --data-dir DATA_DIR`, its output.
fn replay(file: &Path, source: &str, extra: &[&str], data_dir: &Path) -> String {
    let mut args = vec![
        "replay",
        file.to_str().expect("utf-8 path"),
        "--source",
        source,
    ];
    args.extend_from_slice(extra);
    flowdaq(&args, data_dir)
}

fn csv_values(csv: &str) -> Vec<f64> {
    let row = csv.lines().nth(1).expect("one data row");
    row.split(',')
        .map(|v| v.trim().parse::<f64>().expect("number"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_scope_file_gets_the_features_of_the_same_spectrum_sent_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scope = data_file("ocean_optics_usb2000_tsunami.scope");
    let replayed_dir = dir.path().join("replayed");
    let scope_arg = scope.to_str().expect("utf-8 path");
    let printed = flowdaq(&["replay", scope_arg, "--source", "usb2000"], &replayed_dir);
    assert!(
        printed.contains("OOIBase32 format, 1 spectra of 2048 pixels, kind pl, integration 8 ms"),
        "{printed}"
    );
    let replayed = flowdaq(
        &[
            "sql",
            "--format",
            "csv",
            &format!("SELECT {FEATURE_COLUMNS} FROM spectral_features WHERE source = 'usb2000'"),
        ],
        &replayed_dir,
    );
    let replayed = csv_values(&replayed);

    let live_dir = dir.path().join("live");
    let server = flowdaq_daq::start(ServerConfig::embedded_pull_only(&live_dir))
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let (axis, counts) = read_scope(&scope);
    assert_eq!(axis.len(), 2048);
    let message = OutboundMessage::new("usb2000", StreamKind::Spectra)
        .meta("kind", "pl")
        .meta("integration_time_ms", 8.0)
        .array_f64("wavelength_nm", &[axis.len() as u64], &axis)
        .array_f32("intensity_counts", &[counts.len() as u64], &counts);
    let mut sender = PushSender::connect(&pull).await.expect("connect");
    sender.send(message).await.expect("send");
    assert!(
        server
            .metrics
            .wait_processed(1, Duration::from_secs(30))
            .await
    );
    let live = server
        .query
        .execute(&format!(
            "SELECT {FEATURE_COLUMNS} FROM spectral_features WHERE source = 'usb2000'"
        ))
        .await
        .expect("sql");
    server.shutdown().await.expect("shutdown");
    let batch = &live.batches[0];
    let live: Vec<f64> = (0..batch.num_columns())
        .map(|c| batch.column(c).as_primitive::<Float64Type>().value(0))
        .collect();
    assert_eq!(replayed.len(), live.len());
    for (column, (r, l)) in replayed.iter().zip(&live).enumerate() {
        // The CSV rendering of f64 round-trips, so the values agree to the last bit.
        assert!(
            (r - l).abs() <= 1e-12 * l.abs().max(1.0),
            "column {column}: {r} vs {l}"
        );
    }
    // The laser line of this file sits near 787 nm (its brightest pixel is at 787.02 nm).
    assert!((live[0] - 787.0).abs() < 1.0, "{}", live[0]);
}

#[test]
fn replayed_jasco_absorbance_uses_the_feature_options_of_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("flowdaq.toml");
    // The PbSe band edge near 1448 nm is prominent by 0.14; 0.02 skips the NIR noise bumps.
    std::fs::write(
        &config,
        "[features.spectral]\nmin_exciton_prominence = 0.02\n",
    )
    .expect("write config");
    let data_dir = dir.path().join("data");
    let jasco = data_file("jasco_v570_pbse_qd_absorbance.txt");
    let printed = flowdaq(
        &[
            "replay",
            jasco.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        &data_dir,
    );
    assert!(
        printed.contains("1 spectra of 1801 pixels, kind absorbance"),
        "{printed}"
    );
    let csv = flowdaq(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT exciton_wavelength_nm, exciton_absorbance FROM spectral_features",
        ],
        &data_dir,
    );
    let values = csv_values(&csv);
    // scipy's find_peaks on the same file puts the first excitonic peak at 1448 nm, A = 0.42706
    // (analytics/tests/data/reference_exciton.csv).
    assert!((values[0] - 1448.0).abs() < 1.0, "{csv}");
    assert!((values[1] - 0.42706).abs() < 1e-3, "{csv}");
}

#[test]
fn replayed_ptu_file_is_histogrammed_and_fitted_with_every_photon_accounted_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let ptu = data_file("hydraharp_t3_beads.ptu");
    let printed = replay(&ptu, "hh400", &[], &data_dir);
    assert!(printed.contains("HydraHarpV2T3"), "{printed}");
    let sql = |query: &str| csv_values(&flowdaq(&["sql", "--format", "csv", query], &data_dir));
    // ptufile: 73,787 photons on channels 0 and 1, 100 markers.
    let stored = sql("SELECT count(*) FROM photons WHERE source = 'hh400' AND marker_flags = 0");
    assert_eq!(stored[0], 73_787.0);
    // Every photon is in a window: 10 whole 1 s windows, and the last, partial one written with
    // the file's last message (marked end_of_stream), which ends after its last photon.
    let windows = sql(
        "SELECT count(*), sum(photon_count), max(window_end_ps) FROM tcspc_histograms \
         WHERE source = 'hh400'",
    );
    assert_eq!(windows[1], 73_787.0, "{windows:?}");
    assert_eq!(windows[0], 22.0, "11 windows x 2 channels");
    let last_photon = sql("SELECT max(macro_time_ps) FROM photons WHERE source = 'hh400'");
    assert!(
        windows[2] > last_photon[0] && windows[2] < 11e12,
        "{windows:?} {last_photon:?}"
    );
    // Windows with >= 1000 photons are fitted, converge, and fit as well as Poisson allows.
    let fits = sql(
        "SELECT count(*), min(reduced_chi_square), max(reduced_chi_square) FROM lifetime_features \
         WHERE source = 'hh400' AND photon_count >= 1000 AND converged",
    );
    let attempted = sql(
        "SELECT count(*) FROM lifetime_features WHERE source = 'hh400' AND photon_count >= 1000",
    );
    assert_eq!(fits[0], attempted[0]);
    assert!(fits[0] >= 8.0, "{fits:?}");
    assert!(fits[1] > 0.8 && fits[2] < 1.25, "{fits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_a_running_server_delivers_every_message_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::embedded_pull_only(dir.path());
    config.ingest.router = "tcp://127.0.0.1:0".into();
    let server = flowdaq_daq::start(config).await.expect("start");
    let router = server.endpoints.router.clone().expect("router");
    let ptu = data_file("hydraharp_t3_beads.ptu");
    // The process exits right after its last send; every message must still arrive, including
    // the last one (end_of_stream).
    let printed = tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
            .args([
                "replay",
                ptu.to_str().expect("utf-8 path"),
                "--source",
                "hh-to",
            ])
            .args(["--to", &router])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run flowdaq");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    })
    .await
    .expect("join");
    let line = printed
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or_else(|| panic!("no summary line: {printed}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let sent: u64 = words[1].parse().expect("sent count");
    assert!(sent > 1, "{line}");
    assert!(
        line.contains(&format!("{sent} acknowledged")) && line.contains("0 refused"),
        "{line}"
    );
    assert!(
        server
            .metrics
            .wait_processed(sent, Duration::from_secs(30))
            .await
    );
    let photons = server
        .query
        .execute("SELECT count(*) FROM photons WHERE source = 'hh-to' AND marker_flags = 0")
        .await
        .expect("sql");
    let photons = photons.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(
        photons, 73_787,
        "every photon of the file (ptufile's count)"
    );
    let stats = server.metrics.snapshot().sources["hh-to"].clone();
    assert_eq!(
        (stats.messages, stats.missing_messages),
        (sent, 0),
        "{stats:?}"
    );
    server.shutdown().await.expect("shutdown");
}

/// The summary line of an embedded replay.
fn summary_line(printed: &str) -> String {
    printed
        .lines()
        .find(|l| l.starts_with("replayed "))
        .unwrap_or_else(|| panic!("no summary line: {printed}"))
        .to_string()
}

#[test]
fn replay_summary_is_exact_and_the_same_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let ptu = data_file("hydraharp_t3_beads.ptu");
    let first = summary_line(&replay(&ptu, "hh", &[], &data_dir));
    // 73,787 photons and 100 markers (ptufile); 11 windows x 2 channels. The same file again
    // into the same directory counts only its own rows.
    assert!(
        first.contains(
            "rows stored: photons 73887, tcspc_histograms 22, lifetime_features 22; 0 messages rejected"
        ),
        "{first}"
    );
    let second = summary_line(&replay(&ptu, "hh", &[], &data_dir));
    assert_eq!(
        first.split(": ").skip(1).collect::<Vec<_>>(),
        second.split(": ").skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn replay_takes_the_config_entry_of_its_source_and_flags_replace_only_what_they_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("flowdaq.toml");
    std::fs::write(
        &config,
        "[features.tcspc.sources.hh]\nsync_rate_hz = 39999960.0\nmicro_bin_ps = 16.0\n\
         channels = 1\ncomponents = 2\nbin_width_native = 4\nwindow_s = 1.0\n",
    )
    .expect("write config");
    let data_dir = dir.path().join("data");
    let ptu = data_file("hydraharp_t3_beads.ptu");
    let printed = replay(
        &ptu,
        "hh",
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--window-s",
            "5",
        ],
        &data_dir,
    );
    // One channel (the config's), 5 s windows (the flag's): 0-5, 5-10 and the last, partial one.
    assert!(
        summary_line(&printed).contains("tcspc_histograms 3, lifetime_features 3"),
        "{printed}"
    );
    let sql = |query: &str| csv_values(&flowdaq(&["sql", "--format", "csv", query], &data_dir));
    // Two components in the fitted windows (the last, short one has too few photons to fit)
    // and 4-bin histograms (1562 native bins -> 391), as the config says.
    let row = sql(
        "SELECT count(*) FILTER (WHERE components = 2), max(components), max(channel), \
         max(array_length(counts)) FROM lifetime_features JOIN tcspc_histograms \
         USING (source, window_start_ps, channel)",
    );
    assert_eq!(row, vec![2.0, 2.0, 0.0, 391.0]);
}

#[test]
fn legacy_and_spc_files_are_recognised_by_content_and_unknown_bytes_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    // An HT3 file under a misleading name is still read as what it is.
    let renamed = dir.path().join("beads_export.txt");
    std::fs::copy(data_file("tcspc_formats/hydraharp_t3_beads.ht3"), &renamed).expect("copy");
    let printed = replay(&renamed, "ht3", &[], &data_dir);
    assert!(printed.contains("HydraHarpV2T3"), "{printed}");
    // tttrlib: 29,969 photons and 31 markers.
    assert!(
        summary_line(&printed).contains("photons 30000,"),
        "{printed}"
    );
    let spc = data_file("tcspc_formats/hydraharp_t3_beads.spc");
    let printed = replay(&spc, "spc", &["--micro-bin-ps", "16"], &data_dir);
    assert!(printed.contains("BeckerHicklSpc130"), "{printed}");
    // tttrlib: 30,000 photons (the SPC writer turned the markers into photons).
    assert!(
        summary_line(&printed).contains("photons 30000,"),
        "{printed}"
    );
    // Bytes of no known format: refused, naming what flowdaq reads.
    let blob = dir.path().join("mystery.ptu");
    std::fs::write(&blob, [0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
        .args(["replay", blob.to_str().expect("utf-8"), "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run flowdaq");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not a format flowdaq reads") && stderr.contains("PT3 (PicoHarp T3)"),
        "{stderr}"
    );
}

#[test]
fn cary_export_replays_as_it_comes_off_the_instrument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let cary = data_file("cary60_two_samples.csv");
    let printed = replay(&cary, "cary", &[], &data_dir);
    assert!(
        printed.contains("Cary UV-vis CSV format, 2 spectra of 501 pixels, kind absorbance"),
        "{printed}"
    );
    assert!(
        summary_line(&printed).contains("spectra 2, spectral_features 2"),
        "{printed}"
    );
    // The %T sample, converted, and the absorbance sample give the same band edge: the curve's
    // local maximum at 502.52 nm.
    let csv = flowdaq(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT min(exciton_wavelength_nm), max(exciton_wavelength_nm) FROM spectral_features",
        ],
        &data_dir,
    );
    let values = csv_values(&csv);
    assert!(
        (values[0] - 502.52).abs() < 1.0 && (values[1] - 502.52).abs() < 1.0,
        "{csv}"
    );
    assert!((values[1] - values[0]).abs() < 0.1, "{csv}");
}
