//! Payload of format `arrow_ipc`: one frame holding an Arrow IPC stream.
//!
//! Senders that already hold Arrow data (pyarrow, arrow-rs, a DataFusion client) send it as is;
//! the stream may hold several batches of one schema, which are concatenated. Arrow's reader
//! allocates whatever length a message declares before reading it, so the stream's framing is
//! walked first: every declared metadata and body length, and every row count, must fit in the
//! frame that was actually received.

use arrow::ipc::reader::StreamReader;
use arrow_array::RecordBatch;
use bytes::Bytes;

use super::DecodeError;

/// Reads the single IPC frame of a message into one batch.
pub(crate) fn read_single_frame(payload: &[Bytes]) -> Result<RecordBatch, DecodeError> {
    let [frame] = payload else {
        return Err(DecodeError::payload(format!(
            "format arrow_ipc takes exactly one payload frame, got {}",
            payload.len()
        )));
    };
    check_framing(frame)?;
    let reader = StreamReader::try_new(std::io::Cursor::new(frame.as_ref()), None)
        .map_err(|e| DecodeError::payload(format!("not an Arrow IPC stream: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DecodeError::payload(format!("corrupt Arrow IPC stream: {e}")))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Most IPC messages (schema, dictionaries, batches) accepted in one stream.
const MAX_IPC_MESSAGES: usize = 4096;

/// Walks the IPC stream's messages without allocating: each declared metadata length and body
/// length must fit in the bytes left in `frame`, the metadata must be a valid flatbuffer
/// message, and a batch may not declare more rows than its body could hold (a row of any
/// column but a null one takes at least one bit; 64 more allow for all-null columns).
fn check_framing(frame: &[u8]) -> Result<(), DecodeError> {
    let bad = |what: String| DecodeError::payload(format!("not an Arrow IPC stream: {what}"));
    let mut at = 0usize;
    for _ in 0..MAX_IPC_MESSAGES {
        let Some(word) = read_u32(frame, at) else {
            return if at == frame.len() {
                Ok(())
            } else {
                Err(bad(format!(
                    "{} stray bytes at offset {at}",
                    frame.len() - at
                )))
            };
        };
        at += 4;
        let meta_len = if word == u32::MAX {
            let Some(len) = read_u32(frame, at) else {
                return Err(bad(format!(
                    "truncated after a continuation marker at offset {}",
                    at - 4
                )));
            };
            at += 4;
            len
        } else {
            word
        };
        let meta_len = i32::from_le_bytes(meta_len.to_le_bytes());
        if meta_len == 0 {
            return Ok(());
        }
        let left = frame.len() - at;
        let meta_len = usize::try_from(meta_len)
            .ok()
            .filter(|&len| len <= left)
            .ok_or_else(|| {
                bad(format!(
                    "message at offset {at} declares {meta_len} bytes of metadata, {left} remain"
                ))
            })?;
        let message = arrow::ipc::root_as_message(&frame[at..at + meta_len])
            .map_err(|e| bad(format!("corrupt message metadata at offset {at}: {e}")))?;
        at += meta_len;
        let left = frame.len() - at;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|&len| len <= left)
            .ok_or_else(|| {
                bad(format!(
                    "message declares a body of {} bytes, {left} remain",
                    message.bodyLength()
                ))
            })?;
        let max_rows = (body_len as i64).saturating_mul(8).saturating_add(64);
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(batch) = batch {
            let too_many = |rows: i64| !(0..=max_rows).contains(&rows);
            if too_many(batch.length()) {
                return Err(bad(format!(
                    "a batch declares {} rows in a body of {body_len} bytes",
                    batch.length()
                )));
            }
            for node in batch.nodes().iter().flatten() {
                if too_many(node.length()) || too_many(node.null_count()) {
                    return Err(bad(format!(
                        "a column declares {} values in a body of {body_len} bytes",
                        node.length()
                    )));
                }
            }
        }
        at += body_len;
    }
    Err(bad(format!("more than {MAX_IPC_MESSAGES} messages")))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// A named column of the IPC batch, or an error naming what is missing.
pub(crate) fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow_array::ArrayRef, DecodeError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DecodeError::payload(format!("Arrow IPC payload lacks column {name:?}")))
}

/// Refuses IPC columns the stream kind does not define.
pub(crate) fn only_columns(batch: &RecordBatch, allowed: &[&str]) -> Result<(), DecodeError> {
    match batch
        .schema()
        .fields()
        .iter()
        .find(|f| !allowed.contains(&f.name().as_str()))
    {
        Some(f) => Err(DecodeError::payload(format!(
            "unknown Arrow IPC column {:?}; expected {allowed:?}",
            f.name()
        ))),
        None => Ok(()),
    }
}

/// Refuses columns with nulls: measurements have no missing values on the wire.
pub(crate) fn no_nulls(name: &str, array: &dyn arrow_array::Array) -> Result<(), DecodeError> {
    if array.null_count() > 0 {
        Err(DecodeError::payload(format!(
            "Arrow IPC column {name:?} holds nulls"
        )))
    } else {
        Ok(())
    }
}
