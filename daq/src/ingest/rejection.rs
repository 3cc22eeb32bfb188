//! A refused message on its way to `ingest_errors`: what is kept of it for inspection.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, StringArray, TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

/// Bytes of a rejected message kept in `ingest_errors.first_bytes`.
const FIRST_BYTES_KEPT: usize = 256;

/// One rejected message.
pub(super) struct Rejection {
    pub arrival_time_ns: i64,
    pub transport: &'static str,
    pub source: Option<String>,
    pub stream: Option<&'static str>,
    pub seq: Option<u64>,
    pub reason: String,
    pub raw_size_bytes: u64,
    pub frame_count: u32,
    pub first_bytes: Vec<u8>,
}

/// The first bytes of a message's frames, for `ingest_errors.first_bytes`.
pub(super) fn first_bytes(frames: &[bytes::Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIRST_BYTES_KEPT);
    for frame in frames {
        let room = FIRST_BYTES_KEPT - out.len();
        out.extend_from_slice(&frame[..frame.len().min(room)]);
        if out.len() == FIRST_BYTES_KEPT {
            break;
        }
    }
    out
}

/// The `ingest_errors` rows of `rejections`.
pub(super) fn rejection_batch(
    rejections: &[Rejection],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(
                rejections.iter().map(|r| r.arrival_time_ns),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rejections.iter().map(|r| r.transport),
        )),
        Arc::new(StringArray::from_iter(
            rejections.iter().map(|r| r.source.as_deref()),
        )),
        Arc::new(StringArray::from_iter(rejections.iter().map(|r| r.stream))),
        Arc::new(UInt64Array::from_iter(rejections.iter().map(|r| r.seq))),
        Arc::new(StringArray::from_iter_values(
            rejections.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rejections.iter().map(|r| r.raw_size_bytes),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rejections.iter().map(|r| r.frame_count),
        )),
        Arc::new(BinaryArray::from_iter_values(
            rejections.iter().map(|r| r.first_bytes.as_slice()),
        )),
    ];
    RecordBatch::try_new(Table::IngestErrors.schema(), columns)
}
