//! Run messages: one run-level document (a run's start, a stream descriptor, a reference to an
//! external file, the stop) as one `runs` row.
//!
//! The message has no payload; `meta` carries the fields SQL users filter on (plan, scan id,
//! exit status) and the whole document as `body`, stored as JSON text so nothing a run
//! recorded about itself is lost.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use flowdaq_schemas::{Header, Table};

use super::{check_meta_keys, DecodeContext, DecodeError, Provenance};

/// Document names a `run` message may carry.
pub const DOCUMENTS: [&str; 8] = [
    "start",
    "descriptor",
    "resource",
    "datum",
    "datum_page",
    "stream_resource",
    "stream_datum",
    "stop",
];
const META_KEYS: [&str; 8] = [
    "document",
    "run_uid",
    "document_uid",
    "plan_name",
    "scan_id",
    "exit_status",
    "reason",
    "body",
];
/// Longest accepted identifier or short text field, in bytes.
const MAX_FIELD_BYTES: usize = 256;

/// A short text field of `meta`: absent or null is `None`; anything but a string is refused.
fn meta_text<'h>(
    header: &'h Header,
    key: &str,
    max_bytes: usize,
) -> Result<Option<&'h str>, DecodeError> {
    match header.meta.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text))
            if text.len() <= max_bytes && !text.chars().any(char::is_control) =>
        {
            Ok(Some(text))
        }
        Some(other) => Err(DecodeError::payload(format!(
            "meta.{key} must be a string of at most {max_bytes} bytes without control characters, got {other}"
        ))),
    }
}

pub(crate) fn from_header(
    header: &Header,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    check_meta_keys(header, &META_KEYS)?;
    let document = meta_text(header, "document", MAX_FIELD_BYTES)?
        .ok_or_else(|| DecodeError::payload("meta.document is required"))?;
    if !DOCUMENTS.contains(&document) {
        return Err(DecodeError::payload(format!(
            "meta.document {document:?} is not one of {DOCUMENTS:?}"
        )));
    }
    let run_uid = meta_text(header, "run_uid", MAX_FIELD_BYTES)?
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| DecodeError::payload("meta.run_uid is required"))?;
    let document_uid = meta_text(header, "document_uid", MAX_FIELD_BYTES)?;
    let plan_name = meta_text(header, "plan_name", MAX_FIELD_BYTES)?;
    let exit_status = meta_text(header, "exit_status", MAX_FIELD_BYTES)?;
    // A failed plan's reason is a traceback: long, and many lines.
    let reason = match header.meta.get("reason") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.as_str()),
        Some(other) => {
            return Err(DecodeError::payload(format!(
                "meta.reason must be a string, got {other}"
            )))
        }
    };
    let scan_id = match header.meta.get("scan_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(value.as_i64().ok_or_else(|| {
            DecodeError::payload(format!("meta.scan_id must be an integer, got {value}"))
        })?),
    };
    let body = match header.meta.get("body") {
        None | Some(serde_json::Value::Null) => None,
        Some(value @ serde_json::Value::Object(_)) => Some(value.to_string()),
        Some(other) => {
            return Err(DecodeError::payload(format!(
                "meta.body must be the document as an object, got {other}"
            )))
        }
    };
    let mut columns = Provenance { header, ctx }.columns(1, None);
    columns.extend([
        Arc::new(StringArray::from(vec![document])) as ArrayRef,
        Arc::new(StringArray::from(vec![run_uid])),
        Arc::new(StringArray::from(vec![document_uid])),
        Arc::new(StringArray::from(vec![plan_name])),
        Arc::new(Int64Array::from(vec![scan_id])),
        Arc::new(StringArray::from(vec![exit_status])),
        Arc::new(StringArray::from(vec![reason])),
        Arc::new(StringArray::from(vec![body])),
    ]);
    Ok(vec![(
        Table::Runs,
        RecordBatch::try_new(Table::Runs.schema(), columns)?,
    )])
}
