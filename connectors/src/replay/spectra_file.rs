//! Replay of a spectrometer's own export file, whatever its format: the connector behind
//! `type = "spectra_file"`.
//!
//! The file is parsed once at build time (so a bad file fails before anything is sent), then
//! each spectrum becomes one wire message, as a live spectrometer would send it. What the file
//! says about kind and integration time is used unless the configuration overrides it; header
//! details such as the serial number stay in [`SpectrumFile::meta`], because the wire protocol
//! refuses unknown `meta` keys on spectra.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;

use super::{read_spectra_file_as, spectrum_message, SpectraFileFormat, SpectrumFile};

/// Spectrum kinds the server accepts (`meta.kind` of the wire protocol).
pub const SPECTRUM_KINDS: [&str; 5] = ["pl", "absorbance", "sample", "dark", "reference"];

/// Kind sent when neither the configuration nor the file names one (as the CSV replay).
const DEFAULT_KIND: &str = "pl";

/// Integration time sent when neither the configuration nor the file states one, ms. The
/// server requires a positive value; a JASCO absorbance file, for one, has none.
pub const DEFAULT_INTEGRATION_TIME_MS: f64 = 1.0;

/// Configuration of a spectra file replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectraFileConfig {
    /// The file to replay.
    pub path: PathBuf,
    /// Source id of the replayed stream.
    #[serde(default = "default_source")]
    pub source: String,
    /// Spectrum kind (`pl`, `absorbance`, `sample`, `dark`, `reference`); overrides what the
    /// file implies. Without either, `pl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Integration time, ms; overrides the file's. Without either, 1 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_time_ms: Option<f64>,
    /// Run id stamped on the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The file's format; detected from its content (then its extension) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SpectraFileFormat>,
}

fn default_source() -> String {
    "replay".into()
}

impl SpectraFileConfig {
    /// A configuration with defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> SpectraFileConfig {
        SpectraFileConfig {
            path: path.into(),
            source: default_source(),
            kind: None,
            integration_time_ms: None,
            run_id: None,
            format: None,
        }
    }

    /// Reads and parses the file.
    ///
    /// # Errors
    /// [`ConnectorError::Io`] or [`ConnectorError::Format`] if the file cannot be read or
    /// parsed, [`ConnectorError::Config`] for an unknown kind or a non-positive integration
    /// time.
    pub fn build(&self) -> Result<SpectraFileReplay, ConnectorError> {
        let file = read_spectra_file_as(&self.path, self.format)?;
        self.replay(file)
    }

    /// Replays a file already parsed (by [`super::read_spectra_file`], say, to show it first).
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for an unknown kind or a non-positive integration time.
    pub fn replay(&self, file: SpectrumFile) -> Result<SpectraFileReplay, ConnectorError> {
        let kind = self
            .kind
            .clone()
            .or_else(|| file.kind_hint.clone())
            .unwrap_or_else(|| DEFAULT_KIND.to_string());
        if !SPECTRUM_KINDS.contains(&kind.as_str()) {
            return Err(ConnectorError::Config(format!(
                "kind {kind:?} is not one of {SPECTRUM_KINDS:?}"
            )));
        }
        let integration_time_ms = match self.integration_time_ms.or(file.integration_time_ms) {
            Some(ms) => ms,
            None => {
                tracing::warn!(
                    path = %self.path.display(),
                    "no integration time in the file or the configuration: sending {DEFAULT_INTEGRATION_TIME_MS} ms"
                );
                DEFAULT_INTEGRATION_TIME_MS
            }
        };
        if !(integration_time_ms.is_finite() && integration_time_ms > 0.0) {
            return Err(ConnectorError::Config(format!(
                "integration_time_ms = {integration_time_ms} must be positive"
            )));
        }
        Ok(SpectraFileReplay {
            source: self.source.clone(),
            run_id: self.run_id.clone(),
            kind,
            integration_time_ms,
            file,
            next: 0,
        })
    }
}

/// A spectra file being replayed, one spectrum per message.
#[derive(Debug)]
pub struct SpectraFileReplay {
    source: String,
    run_id: Option<String>,
    /// Resolved: configuration, else the file's hint, else `pl`.
    kind: String,
    /// Resolved: configuration, else the file's, else [`DEFAULT_INTEGRATION_TIME_MS`].
    integration_time_ms: f64,
    file: SpectrumFile,
    next: usize,
}

impl SpectraFileReplay {
    /// The parsed file.
    pub fn file(&self) -> &SpectrumFile {
        &self.file
    }

    /// The kind every message carries.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The integration time every message carries, ms.
    pub fn integration_time_ms(&self) -> f64 {
        self.integration_time_ms
    }
}

impl Connector for SpectraFileReplay {
    fn source_id(&self) -> &str {
        &self.source
    }

    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        let Some(spectrum) = self.file.spectra.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(spectrum_message(
            &self.source,
            self.run_id.as_deref(),
            &self.kind,
            self.integration_time_ms,
            self.file.instrument_time_ns,
            &self.file.axis_nm,
            spectrum,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> SpectrumFile {
        SpectrumFile {
            format: SpectraFileFormat::Csv,
            axis_nm: vec![500.0, 501.0],
            spectra: vec![vec![1.0, 2.0], vec![3.0, 4.0]],
            kind_hint: Some("absorbance".into()),
            integration_time_ms: Some(20.0),
            instrument_time_ns: Some(1_500_000_000_000_000_000),
            meta: serde_json::Map::new(),
        }
    }

    #[test]
    fn configuration_overrides_the_file_and_the_file_the_defaults() {
        let config = SpectraFileConfig::new("x.csv");
        let replay = config.replay(file()).expect("builds");
        assert_eq!(replay.kind(), "absorbance");
        assert_eq!(replay.integration_time_ms(), 20.0);
        let config = SpectraFileConfig {
            kind: Some("dark".into()),
            integration_time_ms: Some(5.0),
            ..SpectraFileConfig::new("x.csv")
        };
        let replay = config.replay(file()).expect("builds");
        assert_eq!(replay.kind(), "dark");
        assert_eq!(replay.integration_time_ms(), 5.0);
        let bare = SpectrumFile {
            kind_hint: None,
            integration_time_ms: None,
            ..file()
        };
        let replay = SpectraFileConfig::new("x.csv")
            .replay(bare)
            .expect("builds");
        assert_eq!(replay.kind(), DEFAULT_KIND);
        assert_eq!(replay.integration_time_ms(), DEFAULT_INTEGRATION_TIME_MS);
    }

    #[test]
    fn bad_overrides_are_configuration_errors() {
        let config = SpectraFileConfig {
            kind: Some("emission".into()),
            ..SpectraFileConfig::new("x.csv")
        };
        assert!(matches!(
            config.replay(file()),
            Err(ConnectorError::Config(_))
        ));
        let config = SpectraFileConfig {
            integration_time_ms: Some(0.0),
            ..SpectraFileConfig::new("x.csv")
        };
        assert!(matches!(
            config.replay(file()),
            Err(ConnectorError::Config(_))
        ));
    }

    #[test]
    fn one_message_per_spectrum_with_the_instrument_time() {
        let config = SpectraFileConfig {
            run_id: Some("run-7".into()),
            ..SpectraFileConfig::new("x.csv")
        };
        let mut replay = config.replay(file()).expect("builds");
        let mut sent = 0;
        while let Some(message) = replay.next_message().expect("message") {
            assert_eq!(message.header.instrument_time_ns, file().instrument_time_ns);
            assert_eq!(message.header.run_id.as_deref(), Some("run-7"));
            assert_eq!(message.header.meta["kind"], "absorbance");
            assert_eq!(message.header.meta["integration_time_ms"], 20.0);
            let counts: Vec<u8> = [3.0f32, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
            if sent == 1 {
                assert_eq!(message.payload[1].as_ref(), counts.as_slice());
            }
            sent += 1;
        }
        assert_eq!(sent, 2);
    }
}
