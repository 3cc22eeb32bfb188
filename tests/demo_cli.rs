//! The README's first command, as a user runs it: `flowdaq demo` streams simulated spectra over
//! ZeroMQ, prints live progress with the newest peak energy and width, persists Parquet and
//! answers SQL; then `flowdaq sql --data-dir` reads the features it left behind.

use std::process::Command;

const SETTLED_PEAK_ENERGIES_EV: [f64; 4] = [2.43, 2.47, 2.52, 2.45];

#[test]
fn demo_streams_shows_live_features_and_leaves_queryable_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_flowdaq"))
        .args(["demo", "--duration", "4", "--rate", "200", "--data-dir"])
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
}
