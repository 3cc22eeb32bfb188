//! Replay of spectra from a generic CSV file: first column the wavelength (nm), every further
//! column one spectrum.
//!
//! Delimiters may be commas, semicolons, tabs or runs of spaces; lines starting with `#` and a
//! single non-numeric header row are skipped. The wavelength column must be strictly
//! ascending or strictly descending (the server refuses anything else). Each spectrum column
//! becomes one wire message, so a replayed file travels exactly the path of a live stream.
//!
//! This is also the fallback format of [`super::SpectraFileReplay`]: a file no other format
//! claims is read as CSV.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;

use super::text::{check_axis, numbered_lines};
use super::{spectrum_message, FormatSpec, SpectraFileFormat, SpectrumFile};

pub(crate) const SPEC: FormatSpec = FormatSpec {
    format: SpectraFileFormat::Csv,
    name: "CSV",
    extensions: &["csv", "tsv"],
    // The fallback: claims nothing by content, so the specific formats are tried first.
    sniff: |_| false,
    parse: parse_csv_spectra,
};

/// Configuration of a CSV spectra replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSpectraConfig {
    /// The file to replay.
    pub path: PathBuf,
    /// Source id of the replayed stream.
    #[serde(default = "default_source")]
    pub source: String,
    /// Spectrum kind (`pl`, `absorbance`, `sample`, `dark`, `reference`).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Integration time the spectra were taken with, ms.
    #[serde(default = "default_integration_ms")]
    pub integration_time_ms: f64,
    /// Run id stamped on the messages.
    #[serde(default)]
    pub run_id: Option<String>,
}

fn default_source() -> String {
    "replay".into()
}
fn default_kind() -> String {
    "pl".into()
}
fn default_integration_ms() -> f64 {
    1.0
}

/// Parses CSV text (see the module doc for the accepted layout). The file states no kind,
/// integration time or instrument time.
///
/// # Errors
/// [`ConnectorError::Format`] with the line number of the first malformed line.
pub fn parse_csv_spectra(text: &str, path: &str) -> Result<SpectrumFile, ConnectorError> {
    let mut axis_nm = Vec::new();
    let mut axis_lines = Vec::new();
    let mut spectra: Vec<Vec<f64>> = Vec::new();
    let mut seen_header = false;
    for (line_no, line) in numbered_lines(text) {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed
            .split([',', ';', '\t', ' '])
            .filter(|f| !f.is_empty())
            .collect();
        let numbers: Result<Vec<f64>, _> = fields.iter().map(|f| f.parse::<f64>()).collect();
        let fail = |reason: String| ConnectorError::Format {
            path: path.to_string(),
            line: line_no,
            reason,
        };
        let numbers = match numbers {
            Ok(numbers) => numbers,
            Err(_) if !seen_header && axis_nm.is_empty() => {
                seen_header = true;
                continue;
            }
            Err(err) => return Err(fail(format!("not a number: {err}"))),
        };
        if numbers.len() < 2 {
            return Err(fail(
                "need a wavelength and at least one intensity column".into(),
            ));
        }
        if spectra.is_empty() {
            spectra = vec![Vec::new(); numbers.len() - 1];
        } else if numbers.len() - 1 != spectra.len() {
            return Err(fail(format!(
                "{} columns, expected {}",
                numbers.len(),
                spectra.len() + 1
            )));
        }
        axis_nm.push(numbers[0]);
        axis_lines.push(line_no);
        for (column, value) in spectra.iter_mut().zip(&numbers[1..]) {
            column.push(*value);
        }
    }
    if axis_nm.is_empty() {
        return Err(ConnectorError::Format {
            path: path.to_string(),
            line: 0,
            reason: "no data rows".into(),
        });
    }
    check_axis(path, &axis_nm, &axis_lines)?;
    Ok(SpectrumFile {
        format: SpectraFileFormat::Csv,
        axis_nm,
        spectra,
        kind_hint: None,
        integration_time_ms: None,
        instrument_time_ns: None,
        meta: serde_json::Map::new(),
    })
}

impl CsvSpectraConfig {
    /// Reads and parses the file.
    ///
    /// # Errors
    /// [`ConnectorError`] if the file cannot be read or parsed.
    pub fn build(&self) -> Result<CsvSpectraReplay, ConnectorError> {
        let display = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConnectorError::Io {
            path: display.clone(),
            source,
        })?;
        let parsed = parse_csv_spectra(&text, &display)?;
        Ok(CsvSpectraReplay {
            config: self.clone(),
            parsed,
            next: 0,
        })
    }
}

/// A CSV file being replayed, one spectrum per message.
pub struct CsvSpectraReplay {
    config: CsvSpectraConfig,
    parsed: SpectrumFile,
    next: usize,
}

impl Connector for CsvSpectraReplay {
    fn source_id(&self) -> &str {
        &self.config.source
    }

    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        let Some(spectrum) = self.parsed.spectra.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(spectrum_message(
            &self.config.source,
            self.config.run_id.as_deref(),
            &self.config.kind,
            self.config.integration_time_ms,
            None,
            &self.parsed.axis_nm,
            spectrum,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wide_csv_with_header_and_comments() {
        let text = "# exported\nwavelength_nm,a,b\n500,1,10\n501;2;20\n502\t3\t30\n";
        let parsed = parse_csv_spectra(text, "t.csv").expect("parses");
        assert_eq!(parsed.axis_nm, vec![500.0, 501.0, 502.0]);
        assert_eq!(
            parsed.spectra,
            vec![vec![1.0, 2.0, 3.0], vec![10.0, 20.0, 30.0]]
        );
    }

    #[test]
    fn reports_the_line_of_a_ragged_row() {
        let err = parse_csv_spectra("500,1,2\n501,1\n", "r.csv").expect_err("ragged");
        assert_eq!(err.to_string(), "r.csv:2: 2 columns, expected 3");
        let err = parse_csv_spectra("500,1\n501,x\n", "r.csv").expect_err("text");
        assert!(err.to_string().starts_with("r.csv:2: not a number"));
    }

    #[test]
    fn refuses_an_axis_the_server_would_refuse() {
        let err = parse_csv_spectra("500,1\n502,1\n501,1\n", "m.csv").expect_err("order");
        assert!(err
            .to_string()
            .starts_with("m.csv:3: wavelength 501 nm follows 502 nm"));
        let err = parse_csv_spectra("500,1\nNaN,1\n", "m.csv").expect_err("nan");
        assert!(
            err.to_string().starts_with("m.csv:2: wavelength NaN"),
            "{err}"
        );
        let file = parse_csv_spectra("502,1\n501,2\n", "d.csv").expect("descending");
        assert_eq!(file.axis_nm, vec![502.0, 501.0]);
    }
}
