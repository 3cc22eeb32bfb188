//! The README's first command, as a user runs it: `flowdaq demo` streams simulated spectra over
//! ZeroMQ, prints live progress with the newest peak energy and width, persists Parquet and
//! answers SQL; then `flowdaq sql --data-dir` reads the features it left behind.

use std::process::Command;

const SETTLED_PEAK_ENERGIES_EV: [f64; 4] = [2.43, 2.47, 2.52, 2.45];
/// The simulated phase sensors' velocity per condition (its defaults), mm/s.
const VELOCITIES_MM_PER_S: [f64; 4] = [12.0, 30.0, 60.0, 100.0];

#[test]
fn demo_streams_shows_live_features_and_leaves_queryable_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
        .args(["demo", "--duration", "8", "--rate", "100", "--data-dir"])
        .arg(&data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flowdaq demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Without a terminal the progress goes to stdout as plain lines, with live features.
    let live_lines = stdout.lines().filter(|l| l.contains(" eV, FWHM ")).count();
    assert!(live_lines >= 1, "no live feature line:\n{stdout}");
    assert!(
        stdout.contains(" mm/s, reaction time "),
        "no live flow:\n{stdout}"
    );
    assert!(stdout.contains("spectral_features"), "{stdout}");
    assert!(stdout.contains("ingest_errors"), "{stdout}");

    let sql = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
        .args(["sql", "--format", "csv", "--data-dir"])
        .arg(&data_dir)
        .arg(
            "SELECT condition_id, avg(peak_energy_ev) AS e, count(*) AS n FROM spectral_features \
             WHERE kind = 'pl' GROUP BY condition_id ORDER BY condition_id",
        )
        .output()
        .expect("run flowdaq sql");
    let table = String::from_utf8_lossy(&sql.stdout);
    assert!(
        sql.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&sql.stderr)
    );
    // Rows: condition_id (c-000, c-001, ...), mean energy, spectra. The simulator cycles
    // through the settled energies; the last condition may have just begun, so only conditions
    // with at least 100 spectra (of 200 per condition) are held to their settled value.
    let rows: Vec<(f64, u64)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',').skip(1);
            Some((
                fields.next()?.trim().parse().ok()?,
                fields.next()?.trim().parse().ok()?,
            ))
        })
        .collect();
    let full: Vec<(usize, f64)> = rows
        .iter()
        .enumerate()
        .filter(|(_, (_, spectra))| *spectra >= 100)
        .map(|(index, (mean, _))| (index, *mean))
        .collect();
    assert!(full.len() >= 4, "{table}");
    // Each condition's mean includes the transient from the previous one, so allow 15 meV.
    for (index, mean) in full {
        let settled = SETTLED_PEAK_ENERGIES_EV[index % SETTLED_PEAK_ENERGIES_EV.len()];
        assert!(
            (mean - settled).abs() < 0.015,
            "{mean} vs {settled}\n{table}"
        );
    }

    // The phase sensors: 2 s windows aligned with the 2 s conditions, each within 1 %.
    let flow = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
        .args(["sql", "--format", "csv", "--data-dir"])
        .arg(&data_dir)
        .arg(
            "SELECT condition_id, velocity_mm_per_s FROM flow_features \
             WHERE velocity_mm_per_s IS NOT NULL ORDER BY window_start_ns",
        )
        .output()
        .expect("run flowdaq sql");
    let flow = String::from_utf8_lossy(&flow.stdout);
    let mut windows = 0;
    for line in flow.lines().skip(1) {
        let mut fields = line.split(',');
        let condition: usize = fields
            .next()
            .and_then(|c| c.trim().strip_prefix("c-")?.parse().ok())
            .unwrap_or_else(|| panic!("condition in {line}"));
        let velocity: f64 = fields
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("velocity in {line}"));
        let truth = VELOCITIES_MM_PER_S[condition % VELOCITIES_MM_PER_S.len()];
        assert!((velocity - truth).abs() < 0.01 * truth, "{line}\n{flow}");
        windows += 1;
    }
    assert!(windows >= 3, "{flow}");
}
