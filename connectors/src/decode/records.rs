//! Raw PicoQuant TTTR records over the wire, accepted with overflow state kept per source.
//!
//! A `photons` message may carry the instrument's own 32-bit records (array `records`, meta
//! `record_type`, `macro_unit_ps`, `micro_bin_ps`) instead of decoded columns: four bytes per
//! event instead of fourteen, and the sender needs no decoder. Overflow (wrap-around) records
//! make each record's time depend on every record before it, so the decoding state of a source
//! carries from one message to the next; a message whose `seq` does not follow the previous one
//! of its source means records were lost, and the state is reset (the macro time then restarts
//! from the next overflow) and counted in [`RecordStreams::resets`]. Time tags (array
//! `time_tags`, 16-byte Swabian `Tag` records) work the same way: the last sync is carried.
//!
//! Records are only scanned on arrival (counted, the state moved past them); the message keeps
//! its frame as [`DecodedRecords`], and whoever takes it decodes the records into what it
//! needs, so photons that are histogrammed but not stored are never written out as rows.

use std::collections::HashMap;

use bytes::Bytes;
use flowdaq_analytics::tcspc::records::{
    decode_events, decode_into, decode_swabian_tags, scan_records, DecodeCounts, DecoderState,
    EventColumns, EventSink, PhotonColumns as DecodedPhotons, RecordType, TimeBase, TimeTagConfig,
    TimeTagState,
};
use flowdaq_schemas::Header;

use super::{meta_f64, DecodeError};

/// One message's raw PicoQuant records, accepted (whole records, counted, the source's state
/// moved past them) but decoded only by whoever takes them: into native events
/// ([`DecodedRecords::events`]) for the stored `photons` rows, or straight into a sink such as
/// a histogram windower ([`DecodedRecords::decode_into`]). A message's photons that are never
/// stored are never written anywhere but their histogram.
#[derive(Clone)]
pub struct DecodedRecords {
    /// The message's records frame, shared with the transport (little-endian 32-bit words).
    records: Bytes,
    record_type: RecordType,
    /// The message's `macro_unit_ps` and `micro_bin_ps`: native units to ps.
    pub time_base: TimeBase,
    /// The source's decoder state before this message.
    start: DecoderState,
    /// The records by kind.
    pub counts: DecodeCounts,
}

/// Shows the sizes and counts, not the megabytes of records.
impl std::fmt::Debug for DecodedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedRecords")
            .field("record_bytes", &self.records.len())
            .field("record_type", &self.record_type)
            .field("time_base", &self.time_base)
            .field("start", &self.start)
            .field("photons", &self.counts.photons)
            .field("markers", &self.counts.markers)
            .field("overflows", &self.counts.overflows)
            .finish()
    }
}

impl DecodedRecords {
    /// Rows the records give: photons, markers and (T2) syncs; overflows give none.
    pub fn rows(&self) -> usize {
        (self.counts.photons + self.counts.markers + self.counts.syncs) as usize
    }

    /// Decodes the records into `sink`, from the state the source had before this message.
    pub fn decode_into<S: EventSink>(&self, sink: &mut S) {
        let mut state = self.start;
        // Whole records were checked when the message was accepted, the only failure.
        let decoded = decode_into(self.record_type, &self.records, &mut state, sink);
        debug_assert!(decoded.is_ok());
    }

    /// The records as native-unit event columns.
    pub fn events(&self) -> EventColumns {
        let mut events = EventColumns::default();
        let mut state = self.start;
        let decoded = decode_events(self.record_type, &self.records, &mut state, &mut events);
        debug_assert!(decoded.is_ok());
        events
    }
}

/// Decoding state of every source sending raw records.
#[derive(Debug, Default)]
pub struct RecordStreams {
    sources: HashMap<String, (u64, DecoderState)>,
    tag_sources: HashMap<String, (u64, TimeTagState)>,
    resets: u64,
}

impl RecordStreams {
    /// Times a source's state was reset because its `seq` jumped.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Accepts one message's records with its source's carried state: counts them and moves
    /// the state past them, leaving the decoding to whoever takes them ([`DecodedRecords`]).
    pub(crate) fn decode(
        &mut self,
        header: &Header,
        records: Bytes,
    ) -> Result<DecodedRecords, DecodeError> {
        let code = header
            .meta
            .get("record_type")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                DecodeError::payload(
                    "meta.record_type (the PicoQuant record type code) is required with records",
                )
            })?;
        let record_type = u32::try_from(code)
            .ok()
            .and_then(|c| RecordType::from_code(c).ok())
            .ok_or_else(|| {
                DecodeError::payload(format!(
                    "meta.record_type {code:#x} is not a supported PicoQuant record type"
                ))
            })?;
        let time_base = TimeBase {
            macro_unit_ps: meta_f64(header, "macro_unit_ps")?.ok_or_else(|| {
                DecodeError::payload("meta.macro_unit_ps is required with records")
            })?,
            micro_bin_ps: meta_f64(header, "micro_bin_ps")?.ok_or_else(|| {
                DecodeError::payload("meta.micro_bin_ps is required with records")
            })?,
        };
        let (last_seq, state) = self
            .sources
            .entry(header.source.clone())
            .or_insert_with(|| (header.seq.wrapping_sub(1), DecoderState::default()));
        if header.seq != last_seq.wrapping_add(1) {
            state.reset();
            self.resets += 1;
            tracing::warn!(
                source = %header.source,
                expected = last_seq.wrapping_add(1),
                seq = header.seq,
                "records lost: TCSPC decoder state reset"
            );
        }
        time_base
            .validate()
            .map_err(|e| DecodeError::payload(format!("records: {e}")))?;
        let start = *state;
        let mut trial = start;
        let counts = scan_records(record_type, &records, &mut trial)
            .map_err(|e| DecodeError::payload(format!("records: {e}")))?;
        // Only a message of whole records advances the state.
        *state = trial;
        *last_seq = header.seq;
        Ok(DecodedRecords {
            records,
            record_type,
            time_base,
            start,
            counts,
        })
    }

    /// Decodes one message of 16-byte time tags (Swabian `Tag` layout) with its source's
    /// carried sync state (meta `detector_channels`, optional `sync_channel`,
    /// `marker_channels`, and `micro_bin_ps` with a sync channel).
    pub(crate) fn decode_tags(
        &mut self,
        header: &Header,
        tags: &[u8],
    ) -> Result<DecodedPhotons, DecodeError> {
        let channels = |key: &str| -> Result<Vec<i32>, DecodeError> {
            match header.meta.get(key) {
                None => Ok(Vec::new()),
                Some(value) => value
                    .as_array()
                    .and_then(|items| {
                        items
                            .iter()
                            .map(|v| v.as_i64().and_then(|c| i32::try_from(c).ok()))
                            .collect::<Option<Vec<i32>>>()
                    })
                    .ok_or_else(|| {
                        DecodeError::payload(format!(
                            "meta.{key} must be a list of channel numbers"
                        ))
                    }),
            }
        };
        let detector_channels = channels("detector_channels")?;
        if detector_channels.is_empty() {
            return Err(DecodeError::payload(
                "meta.detector_channels (the detector inputs, in output channel order) is required with time_tags",
            ));
        }
        let sync_channel = match header.meta.get("sync_channel") {
            None => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .and_then(|c| i32::try_from(c).ok())
                    .ok_or_else(|| {
                        DecodeError::payload("meta.sync_channel must be a channel number")
                    })?,
            ),
        };
        let micro_bin_ps = match header.meta.get("micro_bin_ps") {
            None => 1,
            Some(value) => value.as_i64().filter(|&b| b > 0).ok_or_else(|| {
                DecodeError::payload("meta.micro_bin_ps must be a positive integer")
            })?,
        };
        let config = TimeTagConfig {
            sync_channel,
            detector_channels,
            marker_channels: channels("marker_channels")?,
            micro_bin_ps,
        };
        let (last_seq, state) = self
            .tag_sources
            .entry(header.source.clone())
            .or_insert_with(|| (header.seq.wrapping_sub(1), TimeTagState::default()));
        if header.seq != last_seq.wrapping_add(1) {
            state.reset();
            self.resets += 1;
            tracing::warn!(source = %header.source, seq = header.seq, "time tags lost: sync state reset");
        }
        let mut trial = *state;
        let mut out = DecodedPhotons::default();
        decode_swabian_tags(tags, &config, &mut trial, &mut out)
            .map_err(|e| DecodeError::payload(format!("time_tags: {e}")))?;
        *state = trial;
        *last_seq = header.seq;
        Ok(out)
    }
}
