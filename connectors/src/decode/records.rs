//! Raw PicoQuant TTTR records over the wire, decoded with overflow state kept per source.
//!
//! A `photons` message may carry the instrument's own 32-bit records (array `records`, meta
//! `record_type`, `macro_unit_ps`, `micro_bin_ps`) instead of decoded columns: four bytes per
//! event instead of fourteen, and the sender needs no decoder. Overflow (wrap-around) records
//! make each record's time depend on every record before it, so the decoding state of a source
//! carries from one message to the next; a message whose `seq` does not follow the previous one
//! of its source means records were lost, and the state is reset (the macro time then restarts
//! from the next overflow) and counted in [`RecordStreams::resets`].

use std::collections::HashMap;

use flowdaq_analytics::tcspc::records::{
    decode_records, DecoderState, PhotonColumns as DecodedPhotons, RecordType, TimeBase,
};
use flowdaq_schemas::Header;

use super::{meta_f64, DecodeError};

/// Decoding state of every source sending raw records.
#[derive(Debug, Default)]
pub struct RecordStreams {
    sources: HashMap<String, (u64, DecoderState)>,
    resets: u64,
}

impl RecordStreams {
    /// Times a source's state was reset because its `seq` jumped.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Decodes one message's records with its source's carried state.
    pub(crate) fn decode(
        &mut self,
        header: &Header,
        records: &[u8],
    ) -> Result<DecodedPhotons, DecodeError> {
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
        let mut trial = state.clone();
        let mut out = DecodedPhotons::default();
        decode_records(record_type, time_base, records, &mut trial, &mut out)
            .map_err(|e| DecodeError::payload(format!("records: {e}")))?;
        // Only a message that decoded whole advances the state.
        *state = trial;
        *last_seq = header.seq;
        Ok(out)
    }
}
