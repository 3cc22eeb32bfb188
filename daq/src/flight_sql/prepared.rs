//! Prepared-statement handles that carry the statement whole: its SQL and, once bound, its
//! parameter values.
//!
//! A Flight SQL client binds parameters by sending them with DoPut; the server may answer with
//! a new handle, which the client then uses. Here that handle holds the SQL and the bound row
//! (as Arrow IPC), so the server keeps no state per statement and any handle it issued can be
//! run by any server over the same data. `?` placeholders are numbered `$1`, `$2`, ... when the
//! statement is prepared, so values bind by position.

use std::io::Cursor;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;

/// Marks a handle with bound values (SQL text never starts with a NUL byte).
const BOUND_PREFIX: &[u8] = b"\0bound:";

/// Bytes of bound values a handle may carry.
pub const MAX_BOUND_BYTES: usize = 1 << 20;

/// Why a handle or a set of values was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreparedError {
    /// Not a handle this server issued.
    #[error("not a prepared statement handle of flowdaq: {0}")]
    Handle(String),
    /// Values that cannot be bound.
    #[error("{0}")]
    Values(String),
}

/// A statement ready to run: SQL and the values for its placeholders (none if unbound).
#[derive(Debug, PartialEq)]
pub struct Prepared {
    /// SQL with numbered placeholders.
    pub sql: String,
    /// `$1`, `$2`, ... in order.
    pub params: Vec<ScalarValue>,
}

/// The handle of `sql` with `values` (one row, a column per placeholder) bound.
///
/// # Errors
/// [`PreparedError::Values`] unless `values` is one row of at most [`MAX_BOUND_BYTES`].
pub fn bind(sql: &str, values: &[RecordBatch]) -> Result<Vec<u8>, PreparedError> {
    let rows: usize = values.iter().map(RecordBatch::num_rows).sum();
    let Some(batch) = values.iter().find(|batch| batch.num_rows() == 1) else {
        return Err(PreparedError::Values(format!(
            "bind one row of values per query (got {rows} rows)"
        )));
    };
    if rows != 1 {
        return Err(PreparedError::Values(format!(
            "bind one row of values per query (got {rows} rows)"
        )));
    }
    let ipc = ipc_bytes(batch).map_err(|e| PreparedError::Values(e.to_string()))?;
    if ipc.len() > MAX_BOUND_BYTES {
        return Err(PreparedError::Values(format!(
            "bound values of {} bytes: at most {MAX_BOUND_BYTES}",
            ipc.len()
        )));
    }
    let sql_len = u32::try_from(sql.len())
        .map_err(|_| PreparedError::Values("the statement is too long".into()))?;
    let mut handle = BOUND_PREFIX.to_vec();
    handle.extend_from_slice(&sql_len.to_le_bytes());
    handle.extend_from_slice(sql.as_bytes());
    handle.extend_from_slice(&ipc);
    Ok(handle)
}

/// The statement a handle holds.
///
/// # Errors
/// [`PreparedError::Handle`] for bytes this server did not issue.
pub fn decode(handle: &[u8]) -> Result<Prepared, PreparedError> {
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| PreparedError::Handle("the SQL is not UTF-8".into()))
    };
    let Some(rest) = handle.strip_prefix(BOUND_PREFIX) else {
        return Ok(Prepared {
            sql: text(handle)?,
            params: Vec::new(),
        });
    };
    let truncated = || PreparedError::Handle("truncated".into());
    let length: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(truncated)?;
    let sql_end = 4 + u32::from_le_bytes(length) as usize;
    let sql = text(rest.get(4..sql_end).ok_or_else(truncated)?)?;
    let ipc = rest.get(sql_end..).ok_or_else(truncated)?;
    if ipc.len() > MAX_BOUND_BYTES {
        return Err(PreparedError::Handle("bound values too large".into()));
    }
    let bad = |e: ArrowError| PreparedError::Handle(format!("bound values: {e}"));
    let mut reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(bad)?;
    let batch = reader
        .next()
        .ok_or_else(|| PreparedError::Handle("no bound values".into()))?
        .map_err(bad)?;
    if batch.num_rows() != 1 {
        return Err(PreparedError::Handle("bound values are not one row".into()));
    }
    let params = batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PreparedError::Handle(format!("bound values: {e}")))?;
    Ok(Prepared { sql, params })
}

fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn row(source: &str, seq: i64) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("0", Arc::new(StringArray::from(vec![source])) as _),
            ("1", Arc::new(Int64Array::from(vec![seq])) as _),
        ])
        .expect("batch")
    }

    #[test]
    fn bound_handles_carry_sql_and_values() {
        let sql = "SELECT * FROM spectra WHERE source = $1 AND seq > $2";
        let handle = bind(sql, &[row("spec-a", 7)]).expect("bind");
        assert_eq!(
            decode(&handle).expect("decode"),
            Prepared {
                sql: sql.into(),
                params: vec![
                    ScalarValue::Utf8(Some("spec-a".into())),
                    ScalarValue::Int64(Some(7))
                ],
            }
        );
        assert_eq!(
            decode(sql.as_bytes()).expect("plain"),
            Prepared {
                sql: sql.into(),
                params: Vec::new()
            }
        );
    }

    #[test]
    fn only_one_row_binds_and_broken_handles_are_refused() {
        let two = datafusion::arrow::compute::concat_batches(
            &row("a", 1).schema(),
            &[row("a", 1), row("b", 2)],
        )
        .expect("concat");
        assert!(bind("SELECT $1", &[two]).is_err());
        assert!(bind("SELECT $1", &[]).is_err());
        let handle = bind("SELECT $1, $2", &[row("a", 1)]).expect("bind");
        // Cut in the length, in the SQL, and in the batch (the last 8 bytes end the stream).
        for cut in [8, 12, handle.len() - 16] {
            assert!(
                matches!(decode(&handle[..cut]), Err(PreparedError::Handle(_))),
                "cut at {cut}"
            );
        }
        assert!(decode(b"\0bound:\xff\xff\xff\xffSELECT").is_err());
    }
}
