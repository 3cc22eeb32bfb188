//! Replay of a PicoQuant TTTR file: the connector behind `type = "ptu_replay"`, so
//! `flowdaq replay file.ptu` sends the file's photons as a live TCSPC source would. PTU files,
//! the legacy `.ht3` (HydraHarp) and `.pt3` (PicoHarp) containers, which hold the same records
//! behind a fixed header, and Becker & Hickl SPC-130 files are told apart by their first bytes.
//!
//! PTU files reach many GB, so the file is never held in memory: records are read in chunks
//! of `records_per_message` records, decoded by the analytics crate's record decoder with one
//! [`DecoderState`] kept across chunks (an overflow record in one message shifts the times of
//! the next), and each chunk becomes one `photons` message. It must never panic on what it
//! reads: a bad header fails [`PtuReplayConfig::build`], a truncated record section ends the
//! replay with a [`ConnectorError::Format`] after everything readable has been sent.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flowdaq_analytics::tcspc::ptu::{HeaderLimits, PtuHeader};
use flowdaq_analytics::tcspc::records::{
    decode_records, DecodeCounts, DecoderState, PhotonColumns, RecordType, PQ_RECORD_BYTES,
};
use flowdaq_analytics::tcspc::tttr_file::read_tttr_header;
use flowdaq_analytics::tcspc::TcspcError;
use flowdaq_schemas::StreamKind;
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;

/// Default number of records read (and sent, at most, as rows) per message.
pub const DEFAULT_RECORDS_PER_MESSAGE: usize = 1 << 16;

/// Largest `records_per_message`: 4 Mi records make at most 4 Mi rows of 14 bytes (59 MB), under
/// the server's default 64 MiB message limit.
pub const MAX_RECORDS_PER_MESSAGE: usize = 1 << 22;

/// Configuration of a PTU file replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtuReplayConfig {
    /// The `.ptu` file to replay.
    pub path: PathBuf,
    /// Source id of the replayed stream.
    #[serde(default = "default_source")]
    pub source: String,
    /// Run id stamped on the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Records read per message, 1 to [`MAX_RECORDS_PER_MESSAGE`]. A message holds at most this
    /// many rows (fewer: overflow records make no row).
    #[serde(default = "default_records_per_message")]
    pub records_per_message: usize,
    /// Send marker records (rows with `marker_flags != 0`, e.g. FLIM line and frame clocks).
    /// When false only photons (and HydraHarp-family T2 sync rows) are sent.
    #[serde(default = "default_include_markers")]
    pub include_markers: bool,
    /// Micro-time bin width, ps, replacing what the file says. Becker & Hickl SPC files store
    /// none (it follows from the TAC range and gain in the separate `.set` file): without this
    /// their bins are taken as the macro-time period / 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_bin_ps: Option<f64>,
}

fn default_source() -> String {
    "replay-tcspc".into()
}

fn default_records_per_message() -> usize {
    DEFAULT_RECORDS_PER_MESSAGE
}

fn default_include_markers() -> bool {
    true
}

impl PtuReplayConfig {
    /// A configuration with defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> PtuReplayConfig {
        PtuReplayConfig {
            path: path.into(),
            source: default_source(),
            run_id: None,
            records_per_message: DEFAULT_RECORDS_PER_MESSAGE,
            include_markers: true,
            micro_bin_ps: None,
        }
    }

    /// Opens the file and reads its header; records are read later, one chunk per message.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for `records_per_message` out of range;
    /// [`ConnectorError::Io`] if the file cannot be opened or read;
    /// [`ConnectorError::Format`] (line 0) if it is not a PTU file, its header is truncated or
    /// malformed, or its record type is not one flowdaq decodes.
    pub fn build(&self) -> Result<PtuReplay, ConnectorError> {
        self.check()?;
        let file = File::open(&self.path).map_err(|source| ConnectorError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        self.replay_reader(BufReader::new(file), &self.path.display().to_string())
    }

    /// Replays PTU bytes from any reader (a pipe, a socket, bytes in memory) instead of
    /// `self.path`; `name` only names the input in errors.
    ///
    /// # Errors
    /// As [`PtuReplayConfig::build`].
    pub fn replay_reader(
        &self,
        mut reader: impl Read + Send + 'static,
        name: &str,
    ) -> Result<PtuReplay, ConnectorError> {
        self.check()?;
        let mut header = read_tttr_header(&mut reader, &HeaderLimits::default())
            .map_err(|e| tcspc_error(name, e))?;
        if let Some(micro_bin_ps) = self.micro_bin_ps {
            header.resolution_s = micro_bin_ps * 1e-12;
        }
        check_micro_time_range(&header, name)?;
        Ok(PtuReplay {
            source: self.source.clone(),
            run_id: self.run_id.clone(),
            include_markers: self.include_markers,
            name: name.to_string(),
            reader: Box::new(reader),
            header,
            buffer: vec![0; self.records_per_message * PQ_RECORD_BYTES],
            columns: PhotonColumns::with_capacity(self.records_per_message),
            state: DecoderState::default(),
            records_read: 0,
            counts: DecodeCounts::default(),
            pending_error: None,
            held: None,
            done: false,
        })
    }

    fn check(&self) -> Result<(), ConnectorError> {
        if let Some(v) = self.micro_bin_ps {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConnectorError::Config(format!(
                    "micro_bin_ps = {v} must be finite and > 0"
                )));
            }
        }
        if !(1..=MAX_RECORDS_PER_MESSAGE).contains(&self.records_per_message) {
            return Err(ConnectorError::Config(format!(
                "records_per_message = {} must be in 1..={MAX_RECORDS_PER_MESSAGE}",
                self.records_per_message
            )));
        }
        Ok(())
    }
}

/// The error of a header or record problem, naming the input.
fn tcspc_error(name: &str, error: TcspcError) -> ConnectorError {
    let reason = match error {
        TcspcError::Io(source) => {
            return ConnectorError::Io {
                path: name.to_string(),
                source,
            }
        }
        TcspcError::UnknownRecordType(code) => format!(
            "unsupported PTU record type {code:#010x} (flowdaq decodes PicoHarp 300, \
             HydraHarp 400, TimeHarp 260, MultiHarp and PicoHarp 330 T2/T3 records)"
        ),
        other => other.to_string(),
    };
    format_error(name, reason)
}

fn format_error(name: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Format {
        path: name.to_string(),
        line: 0,
        reason: reason.into(),
    }
}

/// Refuses a header whose micro-time resolution would push T3 micro times past `i32` ps (the
/// wire type): every message would be rejected by the server, so fail before sending any.
fn check_micro_time_range(header: &PtuHeader, name: &str) -> Result<(), ConnectorError> {
    let max_bin = header.record_type.micro_time_range().saturating_sub(1) as f64;
    let max_micro_ps = max_bin * header.resolution_s * 1e12;
    if max_micro_ps > f64::from(i32::MAX) {
        return Err(format_error(
            name,
            format!(
                "MeasDesc_Resolution of {} s puts micro times up to {max_micro_ps:.3e} ps, \
                 beyond the wire protocol's i32 micro_time_ps",
                header.resolution_s
            ),
        ));
    }
    Ok(())
}

/// A PTU file being replayed, one chunk of records per message.
///
/// Memory is one chunk buffer and one set of decoded columns, reused, whatever the file size.
///
/// Truncated files: the header's `TTResult_NumberOfRecords` is the end of the replay (0: read
/// to the end of the input). If the input ends before it, or inside a record, every whole
/// record before that point is still decoded and sent, and the call after the last message
/// returns [`ConnectorError::Format`] saying where the input ended; calls after that return
/// `Ok(None)`. Records beyond the declared count are ignored.
pub struct PtuReplay {
    source: String,
    run_id: Option<String>,
    include_markers: bool,
    /// The input's name for errors (the path).
    name: String,
    /// Positioned at the next unread record.
    reader: Box<dyn Read + Send>,
    header: PtuHeader,
    /// Raw bytes of one chunk: `records_per_message` records.
    buffer: Vec<u8>,
    /// Decoded rows of the current chunk; cleared, not reallocated, per message.
    columns: PhotonColumns,
    /// The accumulated overflow offset, carried from chunk to chunk.
    state: DecoderState,
    records_read: u64,
    /// What the records decoded so far held, markers included even when not sent.
    counts: DecodeCounts,
    /// A truncation found while reading the last chunk, reported once that chunk is sent.
    pending_error: Option<ConnectorError>,
    /// No more records will be read.
    done: bool,
    /// The message read ahead: it goes out when the next one is ready, or marked
    /// `end_of_stream` when none follows.
    held: Option<OutboundMessage>,
}

impl std::fmt::Debug for PtuReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtuReplay")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("record_type", &self.header.record_type)
            .field("records_read", &self.records_read)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl PtuReplay {
    /// The parsed header, every tag included.
    pub fn header(&self) -> &PtuHeader {
        &self.header
    }

    /// The file's record format.
    pub fn record_type(&self) -> RecordType {
        self.header.record_type
    }

    /// Sync (laser) rate, Hz, if the file records one.
    pub fn sync_rate_hz(&self) -> Option<f64> {
        self.header.sync_rate_hz
    }

    /// Micro-time bin width, ps (0 for T2 files).
    pub fn resolution_ps(&self) -> f64 {
        self.header.resolution_s * 1e12
    }

    /// Macro-time unit, ps: the sync period for T3 files, the time-tag unit for T2 files.
    pub fn global_resolution_ps(&self) -> f64 {
        self.header.global_resolution_s * 1e12
    }

    /// Number of records the header declares (0: unknown, read to the end of the file).
    pub fn number_of_records(&self) -> u64 {
        self.header.number_of_records
    }

    /// Records read so far.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// What the records read so far held: photons per channel, markers, overflows, invalid
    /// records (skipped, as by PicoQuant's own reader).
    pub fn counts(&self) -> &DecodeCounts {
        &self.counts
    }

    /// One line describing the file, for a CLI to print before replaying it.
    pub fn summary(&self) -> String {
        let path = Path::new(&self.name)
            .file_name()
            .map_or(self.name.clone(), |n| n.to_string_lossy().into_owned());
        let records = match self.number_of_records() {
            0 => "records not counted in the header".to_string(),
            n => format!("{n} records"),
        };
        let sync = self
            .sync_rate_hz()
            .map_or("sync rate not recorded".to_string(), |hz| {
                format!("sync {:.6} MHz", hz / 1e6)
            });
        format!(
            "{path}: {:?} (record type {:#010x}), {records}, {sync}, resolution {:.3} ps",
            self.record_type(),
            self.record_type().code(),
            self.resolution_ps()
        )
    }

    /// Reads the next chunk of whole records into `buffer` and returns how many it holds;
    /// 0 at the end. Records a truncation in `pending_error` and sets `done` at the end.
    fn read_chunk(&mut self) -> Result<usize, ConnectorError> {
        let capacity = self.buffer.len() / PQ_RECORD_BYTES;
        let declared = self.header.number_of_records;
        let want_records = if declared == 0 {
            capacity
        } else {
            // Fits in usize: bounded by `capacity`.
            declared
                .saturating_sub(self.records_read)
                .min(capacity as u64) as usize
        };
        if want_records == 0 {
            self.done = true;
            return Ok(0);
        }
        let want = want_records * PQ_RECORD_BYTES;
        let mut filled = 0;
        while filled < want {
            match self.reader.read(&mut self.buffer[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.done = true;
                    return Err(ConnectorError::Io {
                        path: self.name.clone(),
                        source,
                    });
                }
            }
        }
        let whole = filled / PQ_RECORD_BYTES;
        let trailing = filled % PQ_RECORD_BYTES;
        let held = self.records_read + whole as u64;
        if filled < want {
            self.done = true;
            let expected = if declared == 0 {
                String::new()
            } else {
                format!(" of the {declared} the header declares")
            };
            if trailing != 0 {
                self.pending_error = Some(format_error(
                    &self.name,
                    format!(
                        "truncated: the file ends inside record {held}{expected} \
                         ({trailing} trailing bytes); the {held} whole records were sent"
                    ),
                ));
            } else if declared != 0 {
                self.pending_error = Some(format_error(
                    &self.name,
                    format!(
                        "truncated: the header declares {declared} records, the file holds \
                         {held}; those were sent"
                    ),
                ));
            }
        }
        self.records_read = held;
        Ok(whole)
    }

    /// Drops marker rows from `columns`, keeping the order of the others.
    fn drop_markers(&mut self) {
        let c = &mut self.columns;
        let mut kept = 0;
        for i in 0..c.marker_flags.len() {
            if c.marker_flags[i] == 0 {
                c.macro_time_sync[kept] = c.macro_time_sync[i];
                c.macro_time_ps[kept] = c.macro_time_ps[i];
                c.micro_time_bins[kept] = c.micro_time_bins[i];
                c.micro_time_ps[kept] = c.micro_time_ps[i];
                c.channel[kept] = c.channel[i];
                c.marker_flags[kept] = 0;
                kept += 1;
            }
        }
        c.macro_time_sync.truncate(kept);
        c.macro_time_ps.truncate(kept);
        c.micro_time_bins.truncate(kept);
        c.micro_time_ps.truncate(kept);
        c.channel.truncate(kept);
        c.marker_flags.truncate(kept);
    }

    fn message(&self) -> OutboundMessage {
        let c = &self.columns;
        let shape = [c.len() as u64];
        let mut message = OutboundMessage::new(&self.source, StreamKind::Photons)
            .array_i64("macro_time_ps", &shape, &c.macro_time_ps)
            .array_i32("micro_time_ps", &shape, &c.micro_time_ps)
            .array_u8("channel", &shape, &c.channel)
            .array_u8("marker_flags", &shape, &c.marker_flags);
        message.header.run_id = self.run_id.clone();
        message
    }
}

impl Connector for PtuReplay {
    fn source_id(&self) -> &str {
        &self.source
    }

    /// The next chunk's events as one `photons` message: `macro_time_ps` (absolute since the
    /// start of the file), `micro_time_ps`, `channel`, `marker_flags`. No `meta`: the server
    /// refuses any `meta` key on photons, so the sync rate and resolution stay in
    /// [`PtuReplay::header`]. Chunks without a single row (only overflow records) are skipped,
    /// as the server refuses an empty photons message. No `instrument_time_ns` either: the
    /// file's creation time states no time zone.
    ///
    /// The file's last message sets `end_of_stream`, so the server writes the source's last
    /// histogram window with it. Which message is last is known only once the next chunk is
    /// read (it may hold only overflow records), so each message is held until the next one
    /// is ready. A read or decode error ends the stream the same way: the held message goes
    /// out marked, and the error is returned by the following call.
    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        loop {
            match self.next_chunk_message() {
                Ok(Some(next)) => {
                    if let Some(previous) = self.held.replace(next) {
                        return Ok(Some(previous));
                    }
                }
                Ok(None) => return Ok(self.held.take().map(OutboundMessage::end_of_stream)),
                Err(error) => match self.held.take() {
                    Some(previous) => {
                        self.pending_error = Some(error);
                        return Ok(Some(previous.end_of_stream()));
                    }
                    None => return Err(error),
                },
            }
        }
    }
}

impl PtuReplay {
    /// The message of the next chunk that holds rows, without lookahead; `None` at the end.
    fn next_chunk_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        loop {
            if let Some(error) = self.pending_error.take() {
                return Err(error);
            }
            if self.done {
                return Ok(None);
            }
            let records = self.read_chunk()?;
            if records == 0 {
                continue;
            }
            self.columns.clear();
            let counts = decode_records(
                self.header.record_type,
                self.header.time_base(),
                &self.buffer[..records * PQ_RECORD_BYTES],
                &mut self.state,
                &mut self.columns,
            )
            .map_err(|e| {
                self.done = true;
                tcspc_error(&self.name, e)
            })?;
            self.counts.merge(&counts);
            if !self.include_markers {
                self.drop_markers();
            }
            if self.columns.is_empty() {
                continue;
            }
            return Ok(Some(self.message()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal HydraHarp v2 T3 PTU file: 25 ns syncs, 16 ps bins.
    fn ptu(declared: i64, records: &[u32]) -> Vec<u8> {
        fn tag(name: &str, typ: u32, value: [u8; 8]) -> Vec<u8> {
            let mut entry = vec![0u8; 48];
            entry[..name.len()].copy_from_slice(name.as_bytes());
            entry[32..36].copy_from_slice(&(-1i32).to_le_bytes());
            entry[36..40].copy_from_slice(&typ.to_le_bytes());
            entry[40..48].copy_from_slice(&value);
            entry
        }
        const INT8: u32 = 0x1000_0008;
        const FLOAT8: u32 = 0x2000_0008;
        // Magic "PQTTTR" and version "1.0.00", each NUL-padded to 8 bytes.
        let mut bytes = [&b"PQTTTR\0\0"[..], b"1.0.00\0\0"].concat();
        bytes.extend(tag(
            "TTResultFormat_TTTRRecType",
            INT8,
            0x0101_0304i64.to_le_bytes(),
        ));
        bytes.extend(tag(
            "TTResult_NumberOfRecords",
            INT8,
            declared.to_le_bytes(),
        ));
        bytes.extend(tag(
            "MeasDesc_GlobalResolution",
            FLOAT8,
            25e-9f64.to_le_bytes(),
        ));
        bytes.extend(tag("MeasDesc_Resolution", FLOAT8, 16e-12f64.to_le_bytes()));
        bytes.extend(tag("TTResult_SyncRate", FLOAT8, 40e6f64.to_le_bytes()));
        bytes.extend(tag("Header_End", 0xFFFF_0008, [0; 8]));
        for r in records {
            bytes.extend(r.to_le_bytes());
        }
        bytes
    }

    fn photon(channel: u32, dtime: u32, nsync: u32) -> u32 {
        (channel << 25) | (dtime << 10) | nsync
    }

    const OVERFLOW: u32 = 0xFE00_0001;
    const MARKER_2: u32 = (1 << 31) | (2 << 25) | 5;

    fn replay(config: &PtuReplayConfig, bytes: Vec<u8>) -> PtuReplay {
        config
            .replay_reader(std::io::Cursor::new(bytes), "mem.ptu")
            .expect("header parses")
    }

    #[test]
    fn config_defaults_and_typos() {
        let json = serde_json::json!({"path": "a.ptu"});
        let config: PtuReplayConfig = serde_json::from_value(json).expect("defaults");
        assert_eq!(config, PtuReplayConfig::new("a.ptu"));
        assert_eq!(config.source, "replay-tcspc");
        assert_eq!(config.records_per_message, 65_536);
        assert!(config.include_markers);
        let typo = serde_json::json!({"path": "a.ptu", "records_per_msg": 3});
        assert!(serde_json::from_value::<PtuReplayConfig>(typo).is_err());
        let zero = PtuReplayConfig {
            records_per_message: 0,
            ..PtuReplayConfig::new("a.ptu")
        };
        assert!(matches!(zero.build(), Err(ConnectorError::Config(_))));
    }

    #[test]
    fn overflow_only_chunks_are_skipped_and_carried() {
        // Chunks of 2 records: [photon, overflow] [overflow, overflow] [marker, photon].
        let records = [
            photon(0, 10, 3),
            OVERFLOW,
            OVERFLOW,
            OVERFLOW,
            MARKER_2,
            photon(1, 20, 7),
        ];
        let config = PtuReplayConfig {
            records_per_message: 2,
            run_id: Some("run-1".into()),
            ..PtuReplayConfig::new("mem.ptu")
        };
        let mut replay = replay(&config, ptu(6, &records));
        assert_eq!(replay.sync_rate_hz(), Some(40e6));
        assert!((replay.resolution_ps() - 16.0).abs() < 1e-9);
        let first = replay.next_message().expect("ok").expect("message");
        assert_eq!(first.header.run_id.as_deref(), Some("run-1"));
        assert!(first.header.meta.is_empty());
        assert_eq!(first.payload[0].as_ref(), 75_000i64.to_le_bytes());
        let second = replay.next_message().expect("ok").expect("message");
        // Three overflows of 1024 syncs of 25 ns before the last two rows.
        let syncs = 3 * 1024;
        let macro_ps: Vec<u8> = [(syncs + 5) * 25_000i64, (syncs + 7) * 25_000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(second.payload[0].as_ref(), macro_ps.as_slice());
        assert_eq!(second.payload[3].as_ref(), [2u8, 0]);
        assert!(!first.header.end_of_stream && second.header.end_of_stream);
        assert!(replay.next_message().expect("ok").is_none());
        assert_eq!(replay.counts().overflows, 3);
        assert_eq!(replay.records_read(), 6);
    }

    /// Only the last message is marked, also when the file's last chunk holds only overflow
    /// records (so the last message is known only after reading past it), and when the file
    /// is truncated (the message before the error ends the stream).
    #[test]
    fn the_last_message_marks_the_end_of_the_stream() {
        let config = PtuReplayConfig {
            records_per_message: 2,
            ..PtuReplayConfig::new("mem.ptu")
        };
        let marks = |bytes: Vec<u8>| {
            let mut replay = replay(&config, bytes);
            let mut marks = Vec::new();
            while let Ok(Some(message)) = replay.next_message() {
                marks.push(message.header.end_of_stream);
            }
            marks
        };
        let photons: Vec<u32> = (1..=5).map(|k| photon(0, k, k)).collect();
        assert_eq!(marks(ptu(5, &photons)), [false, false, true]);
        let mut trailing_overflows = photons[..4].to_vec();
        trailing_overflows.extend([OVERFLOW, OVERFLOW]);
        assert_eq!(marks(ptu(6, &trailing_overflows)), [false, true]);
        assert_eq!(marks(ptu(1, &photons[..1])), [true]);
        let mut truncated = ptu(9, &photons);
        truncated.push(0xAB);
        assert_eq!(marks(truncated), [false, false, true]);
    }

    #[test]
    fn markers_can_be_left_out() {
        let config = PtuReplayConfig {
            include_markers: false,
            ..PtuReplayConfig::new("mem.ptu")
        };
        let mut replay = replay(&config, ptu(3, &[MARKER_2, photon(1, 20, 7), MARKER_2]));
        let message = replay.next_message().expect("ok").expect("message");
        assert_eq!(message.header.arrays[0].shape, [1]);
        assert_eq!(message.payload[2].as_ref(), [1u8]);
        assert!(replay.next_message().expect("ok").is_none());
        assert_eq!(replay.counts().markers, 2);
        let mut markers_only = self::replay(&config, ptu(1, &[MARKER_2]));
        assert!(markers_only.next_message().expect("ok").is_none());
    }

    #[test]
    fn a_short_record_section_sends_what_it_holds_then_fails_once() {
        let mut bytes = ptu(10, &[photon(0, 1, 1), photon(0, 2, 2), photon(0, 3, 3)]);
        bytes.extend([0xAB, 0xCD]);
        let config = PtuReplayConfig {
            records_per_message: 2,
            ..PtuReplayConfig::new("mem.ptu")
        };
        let mut replay = replay(&config, bytes);
        let mut rows = 0;
        let error = loop {
            match replay.next_message() {
                Ok(Some(m)) => rows += m.header.arrays[0].shape[0],
                Ok(None) => panic!("a truncation must be reported"),
                Err(e) => break e.to_string(),
            }
        };
        assert_eq!(rows, 3);
        assert!(error.contains("ends inside record 3"), "{error}");
        assert!(error.contains("of the 10 the header declares"), "{error}");
        assert!(replay.next_message().expect("then the end").is_none());
    }

    #[test]
    fn undeclared_count_reads_to_the_end() {
        let mut replay = replay(
            &PtuReplayConfig::new("mem.ptu"),
            ptu(0, &[photon(0, 1, 1), photon(1, 2, 2)]),
        );
        let message = replay.next_message().expect("ok").expect("message");
        assert_eq!(message.header.arrays[0].shape, [2]);
        assert!(replay.next_message().expect("ok").is_none());
        assert!(replay.summary().contains("records not counted"));
    }
}
