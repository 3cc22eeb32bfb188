//! Replay of spectra from a generic CSV file: first column the wavelength (nm), every further
//! column one spectrum.
//!
//! Delimiters may be commas, semicolons, tabs or runs of spaces; lines starting with `#` and a
//! single non-numeric header row are skipped. Each spectrum column becomes one wire message, so
//! a replayed file travels exactly the path of a live stream.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;
use flowdaq_schemas::StreamKind;

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

/// A parsed CSV file: the axis and its spectra.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSpectra {
    /// Wavelength axis, nm.
    pub axis_nm: Vec<f64>,
    /// One vector of intensities per spectrum column.
    pub spectra: Vec<Vec<f64>>,
}

/// Parses CSV text (see the module doc for the accepted layout).
///
/// # Errors
/// [`ConnectorError::Format`] with the line number of the first malformed line.
pub fn parse_csv_spectra(text: &str, path: &str) -> Result<CsvSpectra, ConnectorError> {
    let mut axis_nm = Vec::new();
    let mut spectra: Vec<Vec<f64>> = Vec::new();
    let mut seen_header = false;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed
            .split(|c: char| c == ',' || c == ';' || c == '\t' || c == ' ')
            .filter(|f| !f.is_empty())
            .collect();
        let numbers: Result<Vec<f64>, _> = fields.iter().map(|f| f.parse::<f64>()).collect();
        let fail = |reason: String| ConnectorError::Format {
            path: path.to_string(),
            line: index + 1,
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
    Ok(CsvSpectra { axis_nm, spectra })
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
    parsed: CsvSpectra,
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
        let pixels = self.parsed.axis_nm.len() as u64;
        let counts: Vec<f32> = spectrum.iter().map(|&v| v as f32).collect();
        let mut message = OutboundMessage::new(&self.config.source, StreamKind::Spectra)
            .meta("kind", self.config.kind.as_str())
            .meta("integration_time_ms", self.config.integration_time_ms)
            .array_f64("wavelength_nm", &[pixels], &self.parsed.axis_nm)
            .array_f32("intensity_counts", &[pixels], &counts);
        message.header.run_id = self.config.run_id.clone();
        Ok(Some(message))
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
}
