//! File replay: instrument files turned into the same wire messages a live instrument sends,
//! so `flowdaq replay` yields the same rows and features as a live stream.
//!
//! Every spectra format parses into one [`SpectrumFile`] (axis, spectra, what the file says
//! about kind, integration time and instrument), and one connector,
//! [`spectra_file::SpectraFileReplay`], replays any of them. A parser must never panic on what
//! it reads: a malformed line is a [`ConnectorError::Format`] naming the line.
//!
//! To add a format: write one file here with a `SPEC` (sniffer, extensions, parser), add a
//! [`SpectraFileFormat`] variant and one line to `FORMATS`.

pub mod cary;
pub mod csv_spectra;
pub mod jasco;
pub mod ooibase32;
pub mod phu;
pub mod ptu;
pub mod spectra_file;
pub mod spectrasuite;
mod text;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::connector::ConnectorError;
use crate::message::OutboundMessage;
use flowdaq_schemas::StreamKind;

pub use phu::{PhuReplay, PhuReplayConfig};
pub use ptu::{PtuReplay, PtuReplayConfig};
pub use spectra_file::{SpectraFileConfig, SpectraFileReplay};

/// A spectra file in memory, whatever format it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumFile {
    /// The format the file was parsed as.
    pub format: SpectraFileFormat,
    /// Wavelength axis, nm, in the file's order (strictly ascending or strictly descending,
    /// finite and positive: checked by every parser, as the server would refuse it anyway).
    pub axis_nm: Vec<f64>,
    /// One vector of values per spectrum, each as long as `axis_nm`. Values are passed through
    /// as read, NaN or infinities included: whether to store them is the server's policy.
    pub spectra: Vec<Vec<f64>>,
    /// The spectrum kind the file itself implies (`absorbance` for a JASCO file in
    /// ABSORBANCE units), if any.
    pub kind_hint: Option<String>,
    /// Integration time the file states, ms.
    pub integration_time_ms: Option<f64>,
    /// When the spectrum was taken, ns since the Unix epoch (UTC), if the file says so
    /// unambiguously. None of the supported formats states a time zone, so parsers leave
    /// this `None` and keep the file's date text in `meta`.
    pub instrument_time_ns: Option<i64>,
    /// Everything else the header says: well-known entries under stable snake_case keys
    /// (`serial_number`, `spectra_averaged`, `boxcar_width`, `date`, ...) and the raw header
    /// under `header`. Local to the replay side: it is not sent, the wire protocol allows
    /// only `kind`, `integration_time_ms` and `probe_position_mm` in a spectrum's `meta`.
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// The spectra file formats replay understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpectraFileFormat {
    /// Ocean Optics OOIBase32 text export (`.scope` and friends).
    #[serde(rename = "ooibase32")]
    OoiBase32,
    /// Ocean Optics SpectraSuite or OceanView text export.
    #[serde(rename = "spectrasuite", alias = "oceanview")]
    SpectraSuite,
    /// JASCO Spectra Manager text export (JCAMP-like header, then `XYDATA`).
    #[serde(rename = "jasco")]
    Jasco,
    /// Generic delimited text: wavelength column then one column per spectrum.
    #[serde(rename = "csv")]
    Csv,
    /// Agilent Cary UV-vis CSV export: wavelength-value column pairs per sample, metadata after.
    #[serde(rename = "cary")]
    Cary,
}

impl SpectraFileFormat {
    /// Human-readable name of the format.
    pub fn name(self) -> &'static str {
        spec(self).name
    }
}

/// What the registry knows of a format: how to recognise it and how to parse it.
pub(crate) struct FormatSpec {
    pub format: SpectraFileFormat,
    pub name: &'static str,
    /// Lower-case file extensions that suggest the format when the content does not tell.
    pub extensions: &'static [&'static str],
    /// Whether the first lines of a file (line ends stripped) are in this format.
    pub sniff: fn(&[&str]) -> bool,
    /// Parses a whole file; the second argument is the path used in error messages.
    pub parse: fn(&str, &str) -> Result<SpectrumFile, ConnectorError>,
}

/// Registered formats, in sniffing order: the most specific markers first, CSV last.
static FORMATS: [FormatSpec; 5] = [
    ooibase32::SPEC,
    spectrasuite::SPEC,
    jasco::SPEC,
    cary::SPEC,
    csv_spectra::SPEC,
];

/// Lines looked at when sniffing; every supported header is much shorter.
const SNIFF_LINES: usize = 100;

fn spec(format: SpectraFileFormat) -> &'static FormatSpec {
    // Every variant has an entry (checked by a test), so the fallback is never taken.
    FORMATS
        .iter()
        .find(|s| s.format == format)
        .unwrap_or(&FORMATS[FORMATS.len() - 1])
}

/// The format of a file: by content first (first line, section markers), then by extension,
/// else generic CSV.
pub fn detect_format(text: &str, path: &Path) -> SpectraFileFormat {
    let head: Vec<&str> = text::numbered_lines(text)
        .take(SNIFF_LINES)
        .map(|(_, line)| line)
        .collect();
    if let Some(found) = FORMATS.iter().find(|s| (s.sniff)(&head)) {
        return found.format;
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    FORMATS
        .iter()
        .find(|s| s.extensions.contains(&extension.as_str()))
        .map_or(SpectraFileFormat::Csv, |s| s.format)
}

/// Parses text already in memory as `format`; `path` only names the file in errors.
///
/// # Errors
/// [`ConnectorError::Format`] with the line of the first problem (line 0 for the file as a
/// whole: empty, no data, counts that do not add up).
pub fn parse_spectra_text(
    text: &str,
    path: &str,
    format: SpectraFileFormat,
) -> Result<SpectrumFile, ConnectorError> {
    if text.trim().is_empty() {
        return Err(text::format_error(path, 0, "the file is empty"));
    }
    (spec(format).parse)(text, path)
}

/// Reads a spectra file, detecting its format with [`detect_format`].
///
/// # Errors
/// [`ConnectorError::Io`] if the file cannot be read, [`ConnectorError::Format`] if it does
/// not parse.
pub fn read_spectra_file(path: impl AsRef<Path>) -> Result<SpectrumFile, ConnectorError> {
    read_spectra_file_as(path, None)
}

/// Reads a spectra file as `format`, or the detected format when `None`.
///
/// Bytes that are not UTF-8 (a Latin-1 `µ` in a header) are replaced rather than refused:
/// every number these formats hold is ASCII.
///
/// # Errors
/// As [`read_spectra_file`].
pub fn read_spectra_file_as(
    path: impl AsRef<Path>,
    format: Option<SpectraFileFormat>,
) -> Result<SpectrumFile, ConnectorError> {
    let path = path.as_ref();
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ConnectorError::Io {
        path: display.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let format = format.unwrap_or_else(|| detect_format(&text, path));
    parse_spectra_text(&text, &display, format)
}

/// The wire message of one replayed spectrum, as a live spectrometer would send it.
pub(crate) fn spectrum_message(
    source: &str,
    run_id: Option<&str>,
    kind: &str,
    integration_time_ms: f64,
    instrument_time_ns: Option<i64>,
    axis_nm: &[f64],
    spectrum: &[f64],
) -> OutboundMessage {
    let pixels = axis_nm.len() as u64;
    let counts: Vec<f32> = spectrum.iter().map(|&v| v as f32).collect();
    let mut message = OutboundMessage::new(source, StreamKind::Spectra)
        .meta("kind", kind)
        .meta("integration_time_ms", integration_time_ms)
        .array_f64("wavelength_nm", &[pixels], axis_nm)
        .array_f32("intensity_counts", &[pixels], &counts);
    message.header.run_id = run_id.map(str::to_string);
    message.header.instrument_time_ns = instrument_time_ns;
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_registered_once() {
        for format in [
            SpectraFileFormat::OoiBase32,
            SpectraFileFormat::SpectraSuite,
            SpectraFileFormat::Jasco,
            SpectraFileFormat::Cary,
            SpectraFileFormat::Csv,
        ] {
            let entries = FORMATS.iter().filter(|s| s.format == format).count();
            assert_eq!(entries, 1, "{format:?}");
        }
    }

    #[test]
    fn format_names_round_trip_through_serde() {
        for (format, name) in [
            (SpectraFileFormat::OoiBase32, "ooibase32"),
            (SpectraFileFormat::SpectraSuite, "spectrasuite"),
            (SpectraFileFormat::Jasco, "jasco"),
            (SpectraFileFormat::Csv, "csv"),
            (SpectraFileFormat::Cary, "cary"),
        ] {
            let json = serde_json::to_value(format).expect("serialises");
            assert_eq!(json, serde_json::json!(name));
            let back: SpectraFileFormat = serde_json::from_value(json).expect("parses");
            assert_eq!(back, format);
        }
        let alias: SpectraFileFormat =
            serde_json::from_value(serde_json::json!("oceanview")).expect("alias");
        assert_eq!(alias, SpectraFileFormat::SpectraSuite);
    }

    #[test]
    fn empty_text_is_refused_by_every_parser() {
        for spec in &FORMATS {
            let err = parse_spectra_text(" \r\n\n", "e.txt", spec.format).expect_err("empty");
            assert_eq!(err.to_string(), "e.txt:0: the file is empty");
        }
    }
}
