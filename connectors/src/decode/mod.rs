//! Wire-protocol decoding: a multipart message in, Arrow rows for the right tables out.
//!
//! This is the gate every byte from the network passes. It must never panic or allocate from
//! an untrusted length before checking it against the configured limits: a bad frame becomes a
//! [`DecodeError`] with a reason a vendor can act on, and the caller files it in
//! `ingest_errors`. Decoding is pure (no I/O), so it is tested frame by frame.

// A rejection returns the header with its error so it can be attributed to its source and
// seq. The error tuple is large, but it is the cold path, taken once per bad message.
#![allow(clippy::result_large_err)]

mod arrays;
mod histogram;
mod ipc;
mod phase;
mod photons;
mod readings;
mod records;
mod run;
mod spectra;

use arrow_array::RecordBatch;
use bytes::Bytes;
use flowdaq_schemas::{Header, PayloadFormat, StreamKind, Table, WireError};

pub use readings::EVENT_TIME_ARRAY;
pub use records::{DecodedRecords, RecordStreams};
pub use run::DOCUMENTS as RUN_DOCUMENTS;
pub use spectra::axis_calibration_id;

/// Limits and defaults the decoder applies; taken from the server configuration.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Largest accepted message (all frames together), in bytes.
    pub max_message_bytes: u64,
    /// Refuse spectra whose intensities hold NaN or infinities.
    pub reject_non_finite_intensities: bool,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_message_bytes: 64 * 1024 * 1024,
            reject_non_finite_intensities: true,
        }
    }
}

/// What the decoder needs to know besides the frames.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// When the server received the message, ns since the Unix epoch (UTC).
    pub arrival_time_ns: i64,
    /// Run id for messages whose header names none.
    pub default_run_id: &'a str,
    /// Limits to enforce.
    pub limits: &'a DecodeLimits,
}

/// A decoded message: its header and the rows it contributes, per table.
#[derive(Debug)]
pub struct DecodedMessage {
    /// The validated header.
    pub header: Header,
    /// Rows for each table; the first entry is the stream's own table, except for raw records
    /// decoded by [`decode_message_deferred`], whose `photons` rows exist only once
    /// [`DecodedMessage::build_photons`] has built them.
    pub batches: Vec<(Table, RecordBatch)>,
    /// The raw PicoQuant records of a `photons` message, accepted and counted, decoded by
    /// whoever takes them.
    pub records: Option<DecodedRecords>,
}

impl DecodedMessage {
    /// Number of rows of the stream's own table (spectra, photons, trace chunks), counting the
    /// events of raw records whether or not their `photons` rows were built.
    pub fn primary_rows(&self) -> usize {
        match &self.records {
            Some(records) => records.rows(),
            None => self.batches.first().map(|(_, b)| b.num_rows()).unwrap_or(0),
        }
    }

    /// Builds the `photons` rows of raw records (first in `batches`), if there are records
    /// and the rows are not built yet. The records stay in [`DecodedMessage::records`].
    ///
    /// # Errors
    /// [`DecodeError`] if Arrow refuses the batch.
    pub fn build_photons(&mut self, ctx: &DecodeContext<'_>) -> Result<(), DecodeError> {
        let Some(records) = &self.records else {
            return Ok(());
        };
        if self.batches.iter().any(|(t, _)| *t == Table::Photons) {
            return Ok(());
        }
        let rows = photons::records_batch(&self.header, records, ctx)?;
        self.batches.splice(0..0, rows);
        Ok(())
    }
}

/// What a message's payload decodes to.
#[derive(Debug, Default)]
pub(crate) struct PayloadRows {
    batches: Vec<(Table, RecordBatch)>,
    records: Option<DecodedRecords>,
}

impl From<Vec<(Table, RecordBatch)>> for PayloadRows {
    fn from(batches: Vec<(Table, RecordBatch)>) -> Self {
        PayloadRows {
            batches,
            records: None,
        }
    }
}

/// Why a message was rejected. `Display` is the reason stored in `ingest_errors`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message had no frames at all.
    #[error("empty message: no header frame")]
    Empty,
    /// The message is larger than `max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Bytes received.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The header frame broke the protocol.
    #[error(transparent)]
    Header(#[from] WireError),
    /// A payload frame does not match what the header declared.
    #[error("payload: {0}")]
    Payload(String),
    /// Values that cannot be stored as measurements (NaN, absurd magnitudes).
    #[error("values: {0}")]
    Values(String),
    /// Arrow refused to build the batch (a bug or an inconsistent IPC payload).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The transport refused what arrived before it was a wire message (a Bluesky document
    /// that could not be translated); the reason is the transport's.
    #[error("{0}")]
    Refused(String),
}

impl DecodeError {
    /// The header, if it parsed: lets the caller attribute the error to a source.
    pub fn payload(msg: impl Into<String>) -> DecodeError {
        DecodeError::Payload(msg.into())
    }
}

/// Decodes one multipart message (header frame first).
///
/// On error the header is returned too when it parsed, so the rejection can be attributed to
/// its source and sequence number.
///
/// # Errors
/// [`DecodeError`] describing the first problem found.
pub fn decode_message(
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    decode_message_with(frames, ctx, None)
}

/// As [`decode_message`], with the per-source state that raw TCSPC records need to carry
/// overflows from one message to the next (the server's pipeline keeps one [`RecordStreams`]).
///
/// # Errors
/// As [`decode_message`].
pub fn decode_message_stateful(
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
    streams: &mut RecordStreams,
) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    decode_message_with(frames, ctx, Some(streams))
}

/// As [`decode_message_stateful`], but raw PicoQuant records are left as native events in
/// [`DecodedMessage::records`], without their `photons` rows: the caller builds them with
/// [`DecodedMessage::build_photons`] only if it stores them. The live photon path without
/// stored photons spends its time on histograms, not on rows it would throw away.
///
/// # Errors
/// As [`decode_message`].
pub fn decode_message_deferred(
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
    streams: &mut RecordStreams,
) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    decode_payload(frames, ctx, Some(streams))
}

fn decode_message_with(
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
    streams: Option<&mut RecordStreams>,
) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    let mut decoded = decode_payload(frames, ctx, streams)?;
    match decoded.build_photons(ctx) {
        Ok(()) => Ok(decoded),
        Err(err) => Err((Some(decoded.header), err)),
    }
}

fn decode_payload(
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
    streams: Option<&mut RecordStreams>,
) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    let header = decode_header(frames, ctx)?;
    decode_after_header(header, frames, ctx, streams)
}

/// The first step of decoding: the size limit, then the header frame. The server looks at
/// the header (is this message a resend?) before it decodes the payload.
///
/// # Errors
/// [`DecodeError`], with the header if it parsed (an oversized message's header is parsed
/// only to attribute the rejection).
pub fn decode_header(
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
) -> Result<Header, (Option<Header>, DecodeError)> {
    let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
    if total > ctx.limits.max_message_bytes {
        let header = frames.first().and_then(|f| Header::parse(f).ok());
        let err = DecodeError::Oversized {
            size: total,
            limit: ctx.limits.max_message_bytes,
        };
        return Err((header, err));
    }
    let header_frame = frames.first().ok_or((None, DecodeError::Empty))?;
    Header::parse(header_frame).map_err(|e| (None, e.into()))
}

/// The rest of [`decode_message_deferred`] once [`decode_header`] gave `header`: the payload
/// frames (`frames[1..]`) decoded into rows, raw PicoQuant records left undecoded.
///
/// # Errors
/// As [`decode_message`].
pub fn decode_after_header(
    header: Header,
    frames: &[Bytes],
    ctx: &DecodeContext<'_>,
    streams: Option<&mut RecordStreams>,
) -> Result<DecodedMessage, (Option<Header>, DecodeError)> {
    let payload = frames.get(1..).unwrap_or(&[]);
    let result = match header.format {
        PayloadFormat::Arrays => decode_arrays(&header, payload, ctx, streams),
        PayloadFormat::ArrowIpc => decode_ipc(&header, payload, ctx).map(PayloadRows::from),
    };
    match result {
        Ok(rows) => Ok(DecodedMessage {
            header,
            batches: rows.batches,
            records: rows.records,
        }),
        Err(err) => Err((Some(header), err)),
    }
}

fn decode_arrays(
    header: &Header,
    payload: &[Bytes],
    ctx: &DecodeContext<'_>,
    streams: Option<&mut RecordStreams>,
) -> Result<PayloadRows, DecodeError> {
    let arrays = arrays::PayloadArrays::new(header, payload)?;
    match header.stream {
        StreamKind::Readings => readings::from_arrays(header, &arrays, ctx).map(PayloadRows::from),
        StreamKind::Run => run::from_header(header, ctx).map(PayloadRows::from),
        StreamKind::Spectra => spectra::from_arrays(header, &arrays, ctx).map(PayloadRows::from),
        StreamKind::Photons => photons::from_arrays(header, &arrays, ctx, streams),
        StreamKind::PhaseTraces => phase::from_arrays(header, &arrays, ctx).map(PayloadRows::from),
        StreamKind::TcspcHistogram => {
            histogram::from_arrays(header, &arrays, ctx).map(PayloadRows::from)
        }
    }
}

fn decode_ipc(
    header: &Header,
    payload: &[Bytes],
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    let batch = ipc::read_single_frame(payload)?;
    match header.stream {
        StreamKind::Spectra => spectra::from_ipc(header, &batch, ctx),
        StreamKind::Photons => photons::from_ipc(header, &batch, ctx),
        StreamKind::PhaseTraces => phase::from_ipc(header, &batch, ctx),
        StreamKind::TcspcHistogram => histogram::from_ipc(header, &batch, ctx),
        StreamKind::Readings => readings::from_ipc(header, &batch, ctx),
        // The header check refuses a `run` message of format `arrow_ipc`.
        StreamKind::Run => run::from_header(header, ctx),
    }
}

/// The provenance columns shared by every stream table, repeated for `rows` rows.
pub(crate) struct Provenance<'a> {
    pub header: &'a Header,
    pub ctx: &'a DecodeContext<'a>,
}

impl Provenance<'_> {
    pub fn run_id(&self) -> &str {
        self.header
            .run_id
            .as_deref()
            .unwrap_or(self.ctx.default_run_id)
    }

    /// Arrival, instrument time, source, run, condition and seq columns for `rows` rows.
    /// `instrument_times_ns` overrides the header's single instrument time row by row.
    pub fn columns(
        &self,
        rows: usize,
        instrument_times_ns: Option<Vec<i64>>,
    ) -> Vec<arrow_array::ArrayRef> {
        // A constant column by fill, not from a vector of options (that builds a validity
        // bitmap bit by bit).
        let instrument = match (instrument_times_ns, self.header.instrument_time_ns) {
            (Some(times), _) => TimestampNanosecondArray::from(times),
            (None, Some(time)) => TimestampNanosecondArray::from_value(time, rows),
            (None, None) => TimestampNanosecondArray::new_null(rows),
        };
        use arrow_array::{StringArray, TimestampNanosecondArray, UInt64Array};
        use std::sync::Arc;
        vec![
            Arc::new(
                TimestampNanosecondArray::from_value(self.ctx.arrival_time_ns, rows)
                    .with_timezone("UTC"),
            ),
            Arc::new(instrument.with_timezone("UTC")),
            Arc::new(repeated_string(&self.header.source, rows)),
            Arc::new(repeated_string(self.run_id(), rows)),
            Arc::new(match self.header.condition_id.as_deref() {
                Some(id) => repeated_string(id, rows),
                None => StringArray::new_null(rows),
            }),
            Arc::new(UInt64Array::from_value(self.header.seq, rows)),
        ]
    }
}

/// `value` repeated `rows` times, built with bulk copies rather than row by row: a message of
/// raw TCSPC records decodes to hundreds of thousands of rows, and these constant columns were
/// a large share of the work.
pub fn repeated_string(value: &str, rows: usize) -> arrow_array::StringArray {
    use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
    let len = value.len();
    match len
        .checked_mul(rows)
        .and_then(|total| i32::try_from(total).ok())
    {
        Some(_) => {
            // Offsets 0, len, 2 len, ... cannot overflow i32 (checked above) and are monotonic.
            let offsets: ScalarBuffer<i32> = (0..=rows).map(|i| (i * len) as i32).collect();
            let values = Buffer::from_vec(value.repeat(rows).into_bytes());
            // SAFETY: the values are `rows` copies of a `&str`, so valid UTF-8, and every offset
            // is a multiple of its length, so a character boundary within them; the offsets
            // start at 0, never decrease and end at the buffer's length.
            unsafe {
                arrow_array::StringArray::new_unchecked(OffsetBuffer::new(offsets), values, None)
            }
        }
        // Beyond 2 GiB of text: arrow's own builder (which reports the overflow).
        None => arrow_array::StringArray::from_iter_values(std::iter::repeat_n(value, rows)),
    }
}

/// Reads a required finite number from the header's `meta` object.
pub(crate) fn meta_f64(header: &Header, key: &str) -> Result<Option<f64>, DecodeError> {
    match header.meta.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(DecodeError::Values(format!(
                "meta.{key} must be a finite number, got {value}"
            ))),
        },
    }
}

/// Refuses `meta` keys the stream kind does not define, so typos do not pass silently.
pub(crate) fn check_meta_keys(header: &Header, allowed: &[&str]) -> Result<(), DecodeError> {
    match header.meta.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(DecodeError::payload(format!(
            "unknown meta key {key:?} for stream {}; allowed: {allowed:?}",
            header.stream.name()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod readings_tests;
