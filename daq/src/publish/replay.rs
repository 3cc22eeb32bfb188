//! Replay: everything a subscriber missed, by stream and sequence number.
//!
//! PUB drops what a subscriber cannot take and cannot reach one that was not connected, so a
//! subscriber asks here for the rows after the last `stream_seq` it holds. The rows come
//! through the SQL engine, which sees rows still in memory and rows already in Parquet alike,
//! and leave as the same three-frame messages as the live stream, so a client decodes both
//! with one routine.

use std::collections::BTreeMap;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use bytes::Bytes;
use flowdaq_schemas::STREAM_SEQ_COLUMN;
use serde_json::{json, Value};

use super::sequencer::{StreamDirectory, StreamKey};
use super::{encode_message, StreamFormat};
use crate::query::QueryEngine;

/// Why a replay request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request is malformed.
    #[error("invalid replay request: {0}")]
    Invalid(String),
    /// Reading or encoding the rows failed.
    #[error("replay failed: {0}")]
    Failed(String),
}

/// A parsed replay request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRequest {
    /// Streams whose name starts with this.
    pub prefix: String,
    /// Last seq held per stream; others start after 0.
    pub after: BTreeMap<String, u64>,
    /// Payload format.
    pub format: StreamFormat,
    /// Rows at most in this answer.
    pub max_rows: usize,
}

impl ReplayRequest {
    /// Parses a request; `max_rows` is capped at `limit`.
    ///
    /// # Errors
    /// [`ReplayError::Invalid`].
    pub fn from_json(request: &Value, limit: usize) -> Result<ReplayRequest, ReplayError> {
        let invalid = |m: &str| ReplayError::Invalid(m.to_string());
        let prefix = match request.get("prefix") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("prefix must be a string")),
        };
        let mut after = BTreeMap::new();
        match request.get("after") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (stream, seq) in map {
                    let seq = seq
                        .as_u64()
                        .ok_or_else(|| invalid("after values must be non-negative integers"))?;
                    after.insert(stream.clone(), seq);
                }
            }
            Some(_) => return Err(invalid("after must be an object {stream: seq}")),
        }
        let format = match request.get("format") {
            None | Some(Value::Null) => StreamFormat::Json,
            Some(Value::String(s)) => {
                StreamFormat::parse(s).ok_or_else(|| invalid("format must be json or arrow"))?
            }
            Some(_) => return Err(invalid("format must be json or arrow")),
        };
        let max_rows = match request.get("max_rows") {
            None | Some(Value::Null) => limit,
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("max_rows must be a positive integer"))?
                .min(limit as u64) as usize,
        };
        Ok(ReplayRequest {
            prefix,
            after,
            format,
            max_rows,
        })
    }
}

/// Whether stream `name` is selected by `prefix`, which names whole components: `""`, `"t/"`,
/// `"t/run"` and `"t/run/"` select `t/run/source`, but `"t/ru"` and `"t/run"` do not select
/// `t/run-2/source`.
fn matches_prefix(name: &str, prefix: &str) -> bool {
    if prefix.is_empty() || name == prefix {
        return true;
    }
    match name.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Answers a replay request: frame 0 is the summary, then (topic, header, payload) triples.
///
/// # Errors
/// [`ReplayError::Failed`] if a query or the encoding fails.
pub async fn answer(
    request: &ReplayRequest,
    directory: &StreamDirectory,
    query: &QueryEngine,
) -> Result<Vec<Bytes>, ReplayError> {
    let streams: Vec<(String, StreamKey)> = directory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(name, _)| matches_prefix(name, &request.prefix))
        .map(|(name, key)| (name.clone(), key.clone()))
        .collect();
    let mut frames = vec![Bytes::new()];
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0usize;
    let mut more = false;
    for (name, stream) in streams {
        let after = request.after.get(&name).copied().unwrap_or(0);
        let room = request.max_rows - rows;
        if room == 0 {
            more = true;
            break;
        }
        // One row beyond the room tells whether this stream has more.
        let sql = format!(
            "SELECT * FROM {} WHERE run_id = {} AND source = {} AND {STREAM_SEQ_COLUMN} > {after} \
             ORDER BY {STREAM_SEQ_COLUMN} LIMIT {}",
            stream.table.name(),
            quoted(&stream.run_id),
            quoted(&stream.source),
            room + 1
        );
        let result = query
            .execute(&sql)
            .await
            .map_err(|e| ReplayError::Failed(e.to_string()))?;
        if result.num_rows() == 0 {
            continue;
        }
        let batch = arrow::compute::concat_batches(&result.schema, &result.batches)
            .map_err(|e| ReplayError::Failed(e.to_string()))?;
        let batch = if batch.num_rows() > room {
            more = true;
            batch.slice(0, room)
        } else {
            batch
        };
        // SQL returns the table's columns with the table's schema metadata dropped; the rows
        // are the same.
        let message = encode_message(&stream, &batch, request.format)
            .map_err(|e| ReplayError::Failed(e.to_string()))?;
        rows += batch.num_rows();
        let last_seq = batch
            .column_by_name(STREAM_SEQ_COLUMN)
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .and_then(|seqs| seqs.values().last().copied());
        if let Some(seq) = last_seq {
            last.insert(name, seq);
        }
        frames.extend(message);
        if more {
            break;
        }
    }
    frames[0] =
        Bytes::from(json!({"ok": true, "rows": rows, "more": more, "last": last}).to_string());
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_whole_components() {
        let name = "spectral_features/run-7/spec-1";
        for prefix in [
            "",
            "spectral_features/",
            "spectral_features",
            "spectral_features/run-7",
            "spectral_features/run-7/",
            name,
        ] {
            assert!(matches_prefix(name, prefix), "{prefix:?}");
        }
        for prefix in [
            "spectral",
            "spectral_features/run-",
            "spectral_features/run-70/",
            "flow_features/",
        ] {
            assert!(!matches_prefix(name, prefix), "{prefix:?}");
        }
        assert!(!matches_prefix(
            "spectral_features/run-70/spec-1",
            "spectral_features/run-7"
        ));
    }

    #[test]
    fn requests_are_checked_and_capped() {
        let request = serde_json::json!({"prefix": "t/", "after": {"t/r/s": 4}, "format": "arrow", "max_rows": 10_000_000});
        let parsed = ReplayRequest::from_json(&request, 500).expect("valid");
        assert_eq!(parsed.max_rows, 500);
        assert_eq!(parsed.format, StreamFormat::Arrow);
        assert_eq!(parsed.after.get("t/r/s"), Some(&4));
        for bad in [
            serde_json::json!({"after": {"x": -1}}),
            serde_json::json!({"format": "xml"}),
            serde_json::json!({"max_rows": 0}),
            serde_json::json!({"prefix": 3}),
        ] {
            assert!(ReplayRequest::from_json(&bad, 10).is_err(), "{bad}");
        }
    }
}
