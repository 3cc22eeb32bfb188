//! `flowdaq replay file.phu`: a PicoQuant histogram file's curves sent as `tcspc_histogram`
//! messages, one per curve, so each is fitted as a histogram from a live instrument would be.

use std::path::PathBuf;

use flowdaq_analytics::tcspc::phu::{parse_phu, PhuCurve};
use flowdaq_analytics::tcspc::ptu::HeaderLimits;
use flowdaq_schemas::StreamKind;
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;

/// Largest histogram file read (4,096 curves of 65,536 bins is 1 GiB; real files are far
/// smaller).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Replay of a `.phu` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhuReplayConfig {
    /// The `.phu` file to replay.
    pub path: PathBuf,
    /// Source id of the replayed histograms.
    #[serde(default = "default_source")]
    pub source: String,
    /// Run id stamped on the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

fn default_source() -> String {
    "replay-histograms".into()
}

impl PhuReplayConfig {
    /// Reads the whole file and checks every curve.
    ///
    /// # Errors
    /// [`ConnectorError::Io`] if the file cannot be read; [`ConnectorError::Format`] naming
    /// what is wrong with its header or curves.
    pub fn build(&self) -> Result<PhuReplay, ConnectorError> {
        let name = self.path.display().to_string();
        let io = |source| ConnectorError::Io {
            path: name.clone(),
            source,
        };
        let length = std::fs::metadata(&self.path).map_err(io)?.len();
        if length > MAX_FILE_BYTES {
            return Err(ConnectorError::Format {
                path: name,
                line: 0,
                reason: format!(
                    "{length} bytes: larger than any histogram file ({MAX_FILE_BYTES})"
                ),
            });
        }
        let bytes = std::fs::read(&self.path).map_err(io)?;
        let file =
            parse_phu(&bytes, &HeaderLimits::default()).map_err(|e| ConnectorError::Format {
                path: name.clone(),
                line: 0,
                reason: e.to_string(),
            })?;
        Ok(PhuReplay {
            source: self.source.clone(),
            run_id: self.run_id.clone(),
            curves: file.curves.into_iter(),
        })
    }
}

/// The curves of a histogram file, one message each, in file order.
pub struct PhuReplay {
    source: String,
    run_id: Option<String>,
    curves: std::vec::IntoIter<PhuCurve>,
}

impl PhuReplay {
    /// Curves not sent yet.
    pub fn remaining(&self) -> usize {
        self.curves.len()
    }
}

impl Connector for PhuReplay {
    fn source_id(&self) -> &str {
        &self.source
    }

    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        let Some(curve) = self.curves.next() else {
            return Ok(None);
        };
        let counts: Vec<u8> = curve.counts.iter().flat_map(|c| c.to_le_bytes()).collect();
        let mut message = OutboundMessage::new(&self.source, StreamKind::TcspcHistogram)
            .meta("bin_width_ps", curve.bin_width_ps)
            .meta("sync_rate_hz", curve.sync_rate_hz)
            .raw_array(
                "counts",
                flowdaq_schemas::Dtype::U32,
                &[curve.counts.len() as u64],
                counts,
            );
        if let Some(seconds) = curve.acquisition_time_s {
            message = message.meta("acquisition_time_s", seconds);
        }
        message.header.run_id = self.run_id.clone();
        if self.curves.len() == 0 {
            message = message.end_of_stream();
        }
        Ok(Some(message))
    }
}
