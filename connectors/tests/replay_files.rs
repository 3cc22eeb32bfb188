//! Replay of real and synthetic spectrometer files: what each parser reads, format detection,
//! hostile input, and the server's own decoder accepting every message a replay sends.
//!
//! Expected values come from the files themselves, read here by deliberately naive code
//! (whitespace-split pairs between markers) that shares nothing with the parsers, or from
//! the data README (integration time, averages, pixel count of a USB2000).

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, Float64Type};
use flowdaq_connectors::decode::{decode_message, DecodeContext, DecodeLimits, DecodedMessage};
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::replay::csv_spectra::CsvSpectraConfig;
use flowdaq_connectors::replay::spectra_file::SPECTRUM_KINDS;
use flowdaq_connectors::replay::{
    detect_format, parse_spectra_text, read_spectra_file, read_spectra_file_as, SpectraFileConfig,
    SpectraFileFormat, SpectrumFile,
};
use flowdaq_connectors::{Connector, ConnectorConfig, ConnectorError};
use flowdaq_schemas::Table;

const SCOPE: &str = "ocean_optics_usb2000_tsunami.scope";
const JASCO: &str = "jasco_v570_pbse_qd_absorbance.txt";
const SPECTRASUITE: &str = "spectrasuite_usec.txt";
const OCEANVIEW: &str = "oceanview_decimal_comma.txt";

const ALL_FORMATS: [SpectraFileFormat; 4] = [
    SpectraFileFormat::OoiBase32,
    SpectraFileFormat::SpectraSuite,
    SpectraFileFormat::Jasco,
    SpectraFileFormat::Csv,
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn text_of(name: &str) -> String {
    std::fs::read_to_string(data(name)).expect("fixture readable")
}

/// A scratch file unique to this process and test; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "flowdaq-replay-files-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, bytes).expect("scratch writable");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whitespace-separated number pairs between `begin` and `end` (or the end of the text):
/// a reader that knows nothing of lines, headers or decimal commas but the one it is told.
fn naive_pairs(text: &str, begin: &str, end: Option<&str>, decimal_comma: bool) -> Vec<(f64, f64)> {
    let start = text.find(begin).expect("begin marker") + begin.len();
    let stop = end
        .and_then(|end| text[start..].find(end))
        .map_or(text.len(), |i| start + i);
    let numbers: Vec<f64> = text[start..stop]
        .split_whitespace()
        .map(|token| {
            let token = if decimal_comma {
                token.replace(',', ".")
            } else {
                token.to_string()
            };
            token.parse::<f64>().expect("numeric token")
        })
        .collect();
    assert_eq!(numbers.len() % 2, 0, "pairs");
    numbers.chunks(2).map(|pair| (pair[0], pair[1])).collect()
}

fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn decode(message: &OutboundMessage) -> DecodedMessage {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1_764_000_000_000_000_000,
        default_run_id: "default",
        limits: &limits,
    };
    match decode_message(&message.frames(), &ctx) {
        Ok(decoded) => decoded,
        Err((_, err)) => panic!("the server's decoder refused a replayed message: {err}"),
    }
}

fn drain(mut connector: Box<dyn Connector>) -> Vec<OutboundMessage> {
    let mut messages = Vec::new();
    while let Some(message) = connector.next_message().expect("message") {
        messages.push(message);
    }
    messages
}

fn spectra_file_config(json: serde_json::Value) -> ConnectorConfig {
    serde_json::from_value(json).expect("config parses")
}

// ---- real files -------------------------------------------------------------------------

#[test]
fn real_ooibase32_scope_file() {
    let text = text_of(SCOPE);
    let path = data(SCOPE);
    assert_eq!(detect_format(&text, &path), SpectraFileFormat::OoiBase32);
    // Content wins over a misleading extension.
    assert_eq!(
        detect_format(&text, Path::new("x.csv")),
        SpectraFileFormat::OoiBase32
    );
    let file = read_spectra_file(&path).expect("parses");
    assert_eq!(file.format, SpectraFileFormat::OoiBase32);

    let naive = naive_pairs(
        &text,
        ">>>>>Begin Spectral Data<<<<<",
        Some(">>>>>End Spectral Data<<<<<"),
        false,
    );
    // A USB2000 has a 2048-pixel detector; the naive count agrees.
    assert_eq!(naive.len(), 2048);
    assert_eq!(file.axis_nm.len(), naive.len());
    assert_eq!(file.spectra.len(), 1);
    let axis: Vec<f64> = naive.iter().map(|p| p.0).collect();
    let counts: Vec<f64> = naive.iter().map(|p| p.1).collect();
    assert_eq!(file.axis_nm, axis);
    assert_eq!(file.spectra[0], counts);
    assert_eq!(file.axis_nm.first(), Some(&339.95));
    assert_eq!(file.axis_nm.last(), Some(&1013.55));

    // README: 8 ms integration, 10 averages.
    assert_eq!(file.integration_time_ms, Some(8.0));
    assert_eq!(file.meta["spectra_averaged"], 10);
    assert_eq!(file.meta["boxcar_width"], 0);
    assert_eq!(file.meta["serial_number"], "USB2E2859");
    assert_eq!(file.meta["date"], "Monday, July 03, 2017, 07:30:30");
    assert_eq!(file.meta["end_marker"], true);
    assert_eq!(file.kind_hint, None);
    assert_eq!(file.instrument_time_ns, None);

    // The laser line: the brightest pixel, at 787.02 nm with 656.6 counts (line 1296 of the
    // file), found by the naive reader too.
    let peak = argmax(&file.spectra[0]);
    assert_eq!(peak, argmax(&counts));
    assert_eq!(peak, 1281);
    assert_eq!(file.axis_nm[peak], 787.02);
    assert_eq!(file.spectra[0][peak], 656.6);
}

#[test]
fn real_jasco_absorbance_file() {
    let text = text_of(JASCO);
    let path = data(JASCO);
    assert_eq!(detect_format(&text, &path), SpectraFileFormat::Jasco);
    let file = read_spectra_file(&path).expect("parses");
    assert_eq!(file.format, SpectraFileFormat::Jasco);

    let naive = naive_pairs(&text, "XYDATA", None, false);
    assert_eq!(naive.len(), 1801);
    assert_eq!(file.axis_nm.len(), 1801);
    assert_eq!(file.meta["npoints"], 1801);
    assert_eq!(file.kind_hint.as_deref(), Some("absorbance"));
    assert_eq!(file.integration_time_ms, None);
    // The file's order is kept: 2500 down to 700 nm in steps of DELTAX = -1.
    assert_eq!(file.axis_nm.first(), Some(&2500.0));
    assert_eq!(file.axis_nm.last(), Some(&700.0));
    assert_eq!(file.meta["deltax"], -1.0);
    assert!(file.axis_nm.windows(2).all(|w| w[1] - w[0] == -1.0));
    let axis: Vec<f64> = naive.iter().map(|p| p.0).collect();
    let values: Vec<f64> = naive.iter().map(|p| p.1).collect();
    assert_eq!(file.axis_nm, axis);
    assert_eq!(file.spectra, vec![values]);

    // The header's FIRSTY, MAXY and MINY describe the values the parser read.
    let header = file.meta["header"].as_object().expect("raw header");
    let number = |key: &str| -> f64 {
        header[key]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("numeric header entry")
    };
    let absorbance = &file.spectra[0];
    assert_eq!(absorbance[0], number("FIRSTY"));
    let max = absorbance.iter().copied().fold(f64::MIN, f64::max);
    let min = absorbance.iter().copied().fold(f64::MAX, f64::min);
    assert_eq!(max, number("MAXY"));
    assert_eq!(min, number("MINY"));
    assert_eq!(file.meta["origin"], "JASCO");
    assert_eq!(file.meta["date"], "10/01/25");
}

#[test]
fn replayed_real_files_pass_the_servers_decoder() {
    for (name, kind, integration_ms) in [(SCOPE, "pl", 8.0), (JASCO, "absorbance", 1.0)] {
        let path = data(name);
        let file = read_spectra_file(&path).expect("parses");
        let config = spectra_file_config(serde_json::json!({
            "type": "spectra_file",
            "path": path,
            "source": "uvvis-1",
            "run_id": "run-1",
        }));
        let messages = drain(config.build().expect("builds"));
        assert_eq!(messages.len(), 1, "{name}");
        let message = &messages[0];
        let keys: Vec<&str> = message.header.meta.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["integration_time_ms", "kind"], "{name}");

        let decoded = decode(message);
        let (table, spectra) = &decoded.batches[0];
        assert_eq!(*table, Table::Spectra);
        assert_eq!(spectra.num_rows(), 1);
        let kinds = spectra
            .column_by_name("kind")
            .expect("kind")
            .as_string::<i32>();
        assert_eq!(kinds.value(0), kind, "{name}");
        let times = spectra
            .column_by_name("integration_time_ms")
            .expect("integration time")
            .as_primitive::<Float64Type>();
        assert_eq!(times.value(0), integration_ms, "{name}");
        let run = spectra
            .column_by_name("run_id")
            .expect("run")
            .as_string::<i32>();
        assert_eq!(run.value(0), "run-1");
        let stored = spectra
            .column_by_name("intensity_counts")
            .expect("counts")
            .as_list::<i32>()
            .value(0);
        let stored = stored.as_primitive::<Float32Type>().values();
        let expected: Vec<f32> = file.spectra[0].iter().map(|&v| v as f32).collect();
        assert_eq!(stored, expected.as_slice(), "{name}");

        let (table, calibrations) = &decoded.batches[1];
        assert_eq!(*table, Table::SpectralCalibrations);
        let axis = calibrations
            .column_by_name("wavelength_nm")
            .expect("axis")
            .as_list::<i32>()
            .value(0);
        assert_eq!(
            axis.as_primitive::<Float64Type>().values(),
            file.axis_nm.as_slice(),
            "{name}: the axis reaches the server in the file's order"
        );
    }
}

#[test]
fn every_kind_the_replay_allows_is_one_the_server_accepts() {
    let file = read_spectra_file(data(SPECTRASUITE)).expect("parses");
    for kind in SPECTRUM_KINDS {
        let config = SpectraFileConfig {
            kind: Some(kind.to_string()),
            ..SpectraFileConfig::new(data(SPECTRASUITE))
        };
        let mut replay = config.replay(file.clone()).expect("builds");
        let message = replay.next_message().expect("ok").expect("one message");
        let decoded = decode(&message);
        assert_eq!(decoded.primary_rows(), 1, "{kind}");
    }
}

// ---- synthetic Ocean Optics exports ------------------------------------------------------

#[test]
fn spectrasuite_file_with_usec_integration() {
    let text = text_of(SPECTRASUITE);
    let path = data(SPECTRASUITE);
    assert_eq!(detect_format(&text, &path), SpectraFileFormat::SpectraSuite);
    let file = read_spectra_file(&path).expect("parses");
    let naive = naive_pairs(
        &text,
        ">>>>>Begin Processed Spectral Data<<<<<",
        Some(">>>>>End Processed Spectral Data<<<<<"),
        false,
    );
    assert_eq!(file.axis_nm, naive.iter().map(|p| p.0).collect::<Vec<_>>());
    assert_eq!(
        file.spectra[0],
        naive.iter().map(|p| p.1).collect::<Vec<_>>()
    );
    assert_eq!(file.meta["pixels"], naive.len());
    // 250000 usec.
    assert_eq!(file.integration_time_ms, Some(250.0));
    assert_eq!(file.meta["serial_number"], "MAYP11278");
    assert_eq!(file.meta["spectra_averaged"], 4);
    assert_eq!(file.meta["software"], "SpectraSuite");

    let messages = drain(
        spectra_file_config(serde_json::json!({"type": "spectra_file", "path": path}))
            .build()
            .expect("builds"),
    );
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].header.meta["integration_time_ms"], 250.0);
    decode(&messages[0]);
}

#[test]
fn oceanview_file_with_decimal_commas() {
    let text = text_of(OCEANVIEW);
    let path = data(OCEANVIEW);
    assert_eq!(detect_format(&text, &path), SpectraFileFormat::SpectraSuite);
    let file = read_spectra_file(&path).expect("parses");
    let naive = naive_pairs(&text, ">>>>>Begin Spectral Data<<<<<", None, true);
    assert_eq!(naive.len(), 6);
    assert_eq!(file.axis_nm, naive.iter().map(|p| p.0).collect::<Vec<_>>());
    assert_eq!(
        file.spectra[0],
        naive.iter().map(|p| p.1).collect::<Vec<_>>()
    );
    assert_eq!(file.axis_nm[0], 345.39);
    assert_eq!(file.spectra[0][0], 2364.445);
    assert_eq!(file.spectra[0][4], -1.5);
    // 1,500000E-1 s.
    assert_eq!(file.integration_time_ms, Some(150.0));
    assert_eq!(file.meta["software"], "OceanView");
    assert_eq!(file.meta["serial_number"], "FLMS15016");
    assert_eq!(file.meta["spectra_averaged"], 3);
    assert_eq!(file.meta["boxcar_width"], 1);
    assert_eq!(file.meta["end_marker"], false);
}

// ---- detection and configuration ---------------------------------------------------------

#[test]
fn detection_falls_back_to_the_extension_then_csv() {
    let plain = "500\t1\n501\t2\n";
    assert_eq!(
        detect_format(plain, Path::new("a.txt")),
        SpectraFileFormat::Csv
    );
    assert_eq!(
        detect_format(plain, Path::new("a.scope")),
        SpectraFileFormat::OoiBase32
    );
    assert_eq!(
        detect_format(plain, Path::new("a.CSV")),
        SpectraFileFormat::Csv
    );
    // A headerless .scope file is read as OOIBase32 and says what is missing.
    let scratch = Scratch::new("headerless.scope", plain.as_bytes());
    let err = read_spectra_file(&scratch.0).expect_err("no markers");
    assert!(
        err.to_string()
            .contains("no '>>>>>Begin Spectral Data<<<<<' marker"),
        "{err}"
    );
    // An explicit format overrides detection.
    let file = read_spectra_file_as(&scratch.0, Some(SpectraFileFormat::Csv)).expect("csv");
    assert_eq!(file.axis_nm, vec![500.0, 501.0]);
    // Any Ocean-style marker file that is not OOIBase32 goes to the SpectraSuite reader.
    let marked = "Jaz Data File\n>>>>>Begin Spectral Data<<<<<\n500\t1\n";
    assert_eq!(
        detect_format(marked, Path::new("j.txt")),
        SpectraFileFormat::SpectraSuite
    );
}

#[test]
fn spectra_file_config_round_trips_and_refuses_typos() {
    let json = serde_json::json!({
        "type": "spectra_file",
        "path": "/data/x.txt",
        "kind": "absorbance",
        "integration_time_ms": 12.5,
        "format": "jasco",
    });
    let config = spectra_file_config(json.clone());
    let ConnectorConfig::SpectraFile(inner) = &config else {
        panic!("wrong variant: {config:?}");
    };
    assert_eq!(inner.format, Some(SpectraFileFormat::Jasco));
    assert_eq!(inner.source, "replay");
    let back = serde_json::to_value(&config).expect("serialises");
    assert_eq!(back["type"], "spectra_file");
    let again: ConnectorConfig = serde_json::from_value(back).expect("round trip");
    assert_eq!(config, again);
    let typo = serde_json::json!({"type": "spectra_file", "path": "x", "fromat": "csv"});
    assert!(serde_json::from_value::<ConnectorConfig>(typo).is_err());
    let bad_format = serde_json::json!({"type": "spectra_file", "path": "x", "format": "spc"});
    assert!(serde_json::from_value::<ConnectorConfig>(bad_format).is_err());
}

#[test]
fn csv_spectra_connector_still_works() {
    let scratch = Scratch::new(
        "wide.csv",
        b"wavelength,a,b\n500,1,10\n501,2,20\n502,3,30\n",
    );
    let config = ConnectorConfig::CsvSpectra(CsvSpectraConfig {
        path: scratch.0.clone(),
        source: "csv-1".into(),
        kind: "pl".into(),
        integration_time_ms: 3.0,
        run_id: None,
    });
    let messages = drain(config.build().expect("builds"));
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(decode(message).primary_rows(), 1);
    }
    // The same file through the generic replay, format detected from the extension.
    let config =
        spectra_file_config(serde_json::json!({"type": "spectra_file", "path": scratch.0}));
    let messages = drain(config.build().expect("builds"));
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].header.meta["kind"], "pl");
}

// ---- hostile input -----------------------------------------------------------------------

fn format_error(result: Result<SpectrumFile, ConnectorError>) -> (usize, String) {
    match result {
        Err(ConnectorError::Format { line, reason, .. }) => (line, reason),
        Err(other) => panic!("expected a format error, got {other}"),
        Ok(file) => panic!(
            "expected a format error, parsed {} points",
            file.axis_nm.len()
        ),
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

#[test]
fn empty_and_blank_files_are_refused() {
    for (name, bytes) in [("empty.txt", &b""[..]), ("blank.scope", &b"\r\n \r\n"[..])] {
        let scratch = Scratch::new(name, bytes);
        let (line, reason) = format_error(read_spectra_file(&scratch.0));
        assert_eq!((line, reason.as_str()), (0, "the file is empty"));
    }
    let err = read_spectra_file(data("no_such_file.scope")).expect_err("missing");
    assert!(matches!(err, ConnectorError::Io { .. }));
}

#[test]
fn truncated_files_are_refused() {
    // OOIBase32 cut inside the header: no data at all.
    let scope = text_of(SCOPE);
    let in_header = &scope[..scope.find("Spectra Averaged").expect("header entry")];
    let (_, reason) = format_error(parse_spectra_text(
        in_header,
        "s",
        SpectraFileFormat::OoiBase32,
    ));
    assert!(reason.starts_with("no '>>>>>Begin"), "{reason}");
    // OOIBase32 cut just after a wavelength: the half row is named.
    let row = scope.find("787.02\t").expect("peak row") + "787.02\t".len();
    let (line, reason) = format_error(parse_spectra_text(
        &scope[..row],
        "s",
        SpectraFileFormat::OoiBase32,
    ));
    assert_eq!(line, line_at(&scope, row));
    assert_eq!(line, 1296);
    assert!(
        reason.starts_with("expected a wavelength and one value, found 1"),
        "{reason}"
    );

    // JASCO cut at a line boundary: NPOINTS no longer matches.
    let jasco = text_of(JASCO);
    let cut = jasco.find("1000.0000\t").expect("row at 1000 nm");
    let (line, reason) = format_error(parse_spectra_text(
        &jasco[..cut],
        "j",
        SpectraFileFormat::Jasco,
    ));
    assert_eq!(
        line,
        line_at(&jasco, jasco.find("NPOINTS").expect("NPOINTS"))
    );
    let kept = naive_pairs(&jasco[..cut], "XYDATA", None, false).len();
    assert!(
        reason.starts_with(&format!("NPOINTS is 1801 but {kept} data rows")),
        "{reason}"
    );
    // JASCO cut inside the header.
    let (_, reason) = format_error(parse_spectra_text(
        &jasco[..jasco.find("XYDATA").expect("XYDATA")],
        "j",
        SpectraFileFormat::Jasco,
    ));
    assert!(reason.starts_with("no XYDATA line"), "{reason}");

    // SpectraSuite cut before its end marker: fewer rows than the declared pixels.
    let suite = text_of(SPECTRASUITE);
    let cut = suite.find("500.92").expect("row");
    let (_, reason) = format_error(parse_spectra_text(
        &suite[..cut],
        "ss",
        SpectraFileFormat::SpectraSuite,
    ));
    assert!(
        reason.starts_with("the header declares 8 pixels but 5 data rows"),
        "{reason}"
    );
}

#[test]
fn npoints_mismatch_and_non_numeric_rows_are_refused() {
    let jasco = text_of(JASCO);
    let more = jasco.replace("NPOINTS\t1801", "NPOINTS\t1802");
    let (_, reason) = format_error(parse_spectra_text(&more, "j", SpectraFileFormat::Jasco));
    assert!(
        reason.starts_with("NPOINTS is 1802 but 1801 data rows"),
        "{reason}"
    );
    let word = jasco.replace("NPOINTS\t1801", "NPOINTS\tmany");
    let (_, reason) = format_error(parse_spectra_text(&word, "j", SpectraFileFormat::Jasco));
    assert!(reason.contains("is not a whole number"), "{reason}");

    let scope = text_of(SCOPE);
    let at = scope.find("656.600").expect("peak value");
    let garbled = scope.replacen("656.600", "656.6OO", 1);
    let (line, reason) = format_error(parse_spectra_text(
        &garbled,
        "s",
        SpectraFileFormat::OoiBase32,
    ));
    assert_eq!(line, line_at(&scope, at));
    assert_eq!(reason, "value \"656.6OO\" is not a number");

    let swapped = jasco.replacen("1000.0000\t", "1000.0000\t\t1.0\t", 1);
    let (line, reason) = format_error(parse_spectra_text(&swapped, "j", SpectraFileFormat::Jasco));
    assert_eq!(
        line,
        line_at(&jasco, jasco.find("1000.0000\t").expect("row"))
    );
    assert!(
        reason.starts_with("expected a wavelength and one value, found 3"),
        "{reason}"
    );
}

/// A tiny deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn garbage_and_mutated_files_give_errors_not_panics() {
    let mut rng = Lcg(7);
    // Random bytes, invalid UTF-8 included.
    for round in 0..50 {
        let bytes: Vec<u8> = (0..(rng.next() % 4096)).map(|_| rng.next() as u8).collect();
        let scratch = Scratch::new(&format!("garbage-{round}.bin"), &bytes);
        for format in ALL_FORMATS {
            // Random bytes may happen to parse as a one-column CSV; they must never panic.
            let _ = read_spectra_file_as(&scratch.0, Some(format));
        }
        assert!(read_spectra_file(&scratch.0).is_err(), "round {round}");
    }
    // Real files with a line deleted, duplicated or a byte replaced, read as every format.
    let sources = [
        text_of(SCOPE),
        text_of(JASCO),
        text_of(SPECTRASUITE),
        text_of(OCEANVIEW),
    ];
    for source in &sources {
        let lines: Vec<&str> = source.split('\n').collect();
        for _ in 0..40 {
            let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let at = (rng.next() as usize) % mutated.len();
            match rng.next() % 3 {
                0 => {
                    mutated.remove(at);
                }
                1 => {
                    let copy = mutated[at].clone();
                    mutated.insert(at, copy);
                }
                _ => {
                    let replacement =
                        [">", ":", "\t", ",", "x", "-", "9", "\u{b5}"][(rng.next() % 8) as usize];
                    let line = &mutated[at];
                    let cut = line
                        .char_indices()
                        .map(|(i, _)| i)
                        .nth((rng.next() as usize) % line.chars().count().max(1))
                        .unwrap_or(0);
                    mutated[at] = format!("{}{replacement}{}", &line[..cut], &line[cut..]);
                }
            }
            let text = mutated.join("\n");
            for format in ALL_FORMATS {
                if let Ok(file) = parse_spectra_text(&text, "m", format) {
                    assert!(file.spectra.iter().all(|s| s.len() == file.axis_nm.len()));
                    assert!(!file.axis_nm.is_empty());
                }
            }
        }
    }
}

#[test]
fn headers_without_data_are_refused() {
    let cases = [
        (
            SpectraFileFormat::OoiBase32,
            "OOIBase32 Version 1.0.1.6 Data File\nIntegration Time (msec): 8\n>>>>>Begin Spectral Data<<<<<\n>>>>>End Spectral Data<<<<<\n",
            "no data rows after the begin marker",
        ),
        (
            SpectraFileFormat::SpectraSuite,
            "SpectraSuite Data File\nNumber of Pixels in Processed Spectrum: 2048\n",
            "no '>>>>>Begin Spectral Data<<<<<' marker",
        ),
        (
            SpectraFileFormat::Jasco,
            "ORIGIN\tJASCO\nNPOINTS\t1801\nXYDATA\n\n",
            "no data rows after XYDATA",
        ),
        (SpectraFileFormat::Csv, "wavelength,counts\n", "no data rows"),
    ];
    for (format, text, expected) in cases {
        let path = Path::new("h.txt");
        assert_eq!(detect_format(text, path), format, "{text:?}");
        let (_, reason) = format_error(parse_spectra_text(text, "h.txt", format));
        assert!(reason.starts_with(expected), "{format:?}: {reason}");
    }
}
