//! The `Connector` extension point: anything that turns an instrument into wire messages.
//!
//! A connector only produces messages; it never touches a socket. The [`crate::runner`] sends
//! what it produces to the server over ZeroMQ, so a Rust connector travels the same path as a
//! vendor's Python sender and gets the same validation. To add one: write a file with a
//! documented serde config (`deny_unknown_fields`) that builds it, and add one variant to
//! [`ConnectorConfig`].

use serde::{Deserialize, Serialize};

use crate::message::OutboundMessage;
use crate::replay::csv_spectra::CsvSpectraConfig;
use crate::replay::phu::PhuReplayConfig;
use crate::replay::ptu::PtuReplayConfig;
use crate::replay::spectra_file::SpectraFileConfig;
use crate::sim::phase_sensor::SimulatedPhaseSensorConfig;
use crate::sim::spectrometer::SimulatedSpectrometerConfig;
use crate::sim::tcspc_histogram::SimulatedTcspcHistogramConfig;

/// Why a connector could not produce a message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connector's configuration is inconsistent.
    #[error("invalid connector configuration: {0}")]
    Config(String),
    /// A file being replayed could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file being replayed is not in the expected format.
    #[error("{path}:{line}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A source of wire messages (an instrument driver, a file replay, a simulator).
pub trait Connector: Send {
    /// The source id stamped on every message.
    fn source_id(&self) -> &str;

    /// The next message to send, or `Ok(None)` once the source is exhausted. The runner sets
    /// `seq`; a connector that knows its instrument's own counter may set `instrument_time_ns`.
    ///
    /// # Errors
    /// [`ConnectorError`] if the source cannot produce a valid message.
    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError>;
}

/// Every built-in connector, selected by `type` in configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConnectorConfig {
    /// Simulated CsPbBr3 PL spectrometer.
    SimulatedSpectrometer(SimulatedSpectrometerConfig),
    /// Simulated optical phase-sensor pair on a segmented-flow tube.
    SimulatedPhaseSensor(SimulatedPhaseSensorConfig),
    /// Simulated TCSPC card in histogram mode, one decay per condition-dependent lifetime.
    SimulatedTcspcHistogram(SimulatedTcspcHistogramConfig),
    /// Replay of a CSV file of spectra.
    CsvSpectra(CsvSpectraConfig),
    /// Replay of a spectrometer's export file (OOIBase32, SpectraSuite/OceanView, JASCO, CSV).
    SpectraFile(SpectraFileConfig),
    /// Replay of a PicoQuant PTU (TTTR) file as a photons stream.
    PtuReplay(PtuReplayConfig),
    /// Replay of a PicoQuant histogram file (.phu) as tcspc_histogram messages.
    PhuReplay(PhuReplayConfig),
}

impl ConnectorConfig {
    /// Builds the connector the configuration describes.
    ///
    /// # Errors
    /// [`ConnectorError`] if the configuration is inconsistent or a file cannot be read.
    pub fn build(&self) -> Result<Box<dyn Connector>, ConnectorError> {
        match self {
            ConnectorConfig::SimulatedSpectrometer(config) => Ok(Box::new(config.build()?)),
            ConnectorConfig::SimulatedPhaseSensor(config) => Ok(Box::new(config.build()?)),
            ConnectorConfig::SimulatedTcspcHistogram(config) => Ok(Box::new(config.build()?)),
            ConnectorConfig::CsvSpectra(config) => Ok(Box::new(config.build()?)),
            ConnectorConfig::SpectraFile(config) => Ok(Box::new(config.build()?)),
            ConnectorConfig::PtuReplay(config) => Ok(Box::new(config.build()?)),
            ConnectorConfig::PhuReplay(config) => Ok(Box::new(config.build()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_through_toml_shaped_json() {
        let json = serde_json::json!({"type": "simulated_spectrometer", "source": "sim-1"});
        let config: ConnectorConfig = serde_json::from_value(json).expect("parses with defaults");
        let back = serde_json::to_value(&config).expect("serialises");
        let again: ConnectorConfig = serde_json::from_value(back).expect("round trip");
        assert_eq!(config, again);
        let typo =
            serde_json::json!({"type": "simulated_spectrometer", "source": "s", "pixles": 3});
        assert!(serde_json::from_value::<ConnectorConfig>(typo).is_err());
    }
}
