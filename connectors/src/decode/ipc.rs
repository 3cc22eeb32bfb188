//! Payload of format `arrow_ipc`: one frame holding an Arrow IPC stream.
//!
//! Senders that already hold Arrow data (pyarrow, arrow-rs, a DataFusion client) send it as is;
//! the stream may hold several batches of one schema, which are concatenated.

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
    let reader = StreamReader::try_new(std::io::Cursor::new(frame.as_ref()), None)
        .map_err(|e| DecodeError::payload(format!("not an Arrow IPC stream: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DecodeError::payload(format!("corrupt Arrow IPC stream: {e}")))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
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
