//! The feature stream: every feature row and outcome, published live and replayable.
//!
//! Optimizers and dashboards subscribe instead of polling SQL. After each group commit the
//! pipeline hands the published tables' rows (already numbered by [`sequencer`]) to the
//! [`Publisher`], which splits them per stream `{table}/{run_id}/{source}` and sends each part
//! as `json/...` and `arrow/...` topics through [`zmtp`]'s bounded PUB socket, encoding a format
//! only if someone subscribes to it. A subscriber that lost messages sees the gap in
//! `stream_seq` and asks [`replay`] for the rest. The same rows go to HTTP listeners as
//! server-sent events ([`events`]). `docs/feature-streams.md` is the contract.

pub mod events;
pub mod replay;
pub mod sequencer;
pub mod zmtp;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{AsArray, UInt32Array};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowdaq_schemas::{Table, STREAM_SEQ_COLUMN};
use tokio::sync::mpsc;

use crate::query::output::{self, Format};
use sequencer::{stream_name, StreamKey};
use zmtp::PubSocket;

/// Groups waiting to be published at most; beyond, a group is dropped (and counted), and
/// subscribers recover it through replay.
const MAX_PENDING_GROUPS: usize = 1024;

/// Payload formats of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// A JSON array of row objects.
    Json,
    /// An Arrow IPC stream with one batch.
    Arrow,
}

impl StreamFormat {
    /// The topic prefix and header value.
    pub fn name(self) -> &'static str {
        match self {
            StreamFormat::Json => "json",
            StreamFormat::Arrow => "arrow",
        }
    }

    /// Parses `json` or `arrow`.
    pub fn parse(name: &str) -> Option<StreamFormat> {
        match name {
            "json" => Some(StreamFormat::Json),
            "arrow" => Some(StreamFormat::Arrow),
            _ => None,
        }
    }
}

/// The three frames of one message: topic, header, payload.
///
/// # Errors
/// Arrow's error if the rows cannot be encoded.
pub fn encode_message(
    stream: &StreamKey,
    batch: &RecordBatch,
    format: StreamFormat,
) -> Result<Vec<Bytes>, arrow::error::ArrowError> {
    let seqs = batch
        .column_by_name(STREAM_SEQ_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!(
                "{}: rows without {STREAM_SEQ_COLUMN}",
                stream.table.name()
            ))
        })?;
    let name = stream_name(stream.table, &stream.run_id, &stream.source);
    let header = serde_json::json!({
        "topic": name,
        "table": stream.table.name(),
        "run_id": stream.run_id,
        "source": stream.source,
        "format": format.name(),
        "first_seq": seqs.values().first(),
        "last_seq": seqs.values().last(),
        "rows": batch.num_rows(),
        "schema_version": stream.table.schema_version(),
    });
    let payload = match format {
        StreamFormat::Json => output::render(std::slice::from_ref(batch), None, Format::Json)?,
        StreamFormat::Arrow => output::render(
            std::slice::from_ref(batch),
            Some(batch.schema()),
            Format::Arrow,
        )?,
    };
    Ok(vec![
        Bytes::from(format!("{}/{name}", format.name())),
        Bytes::from(header.to_string()),
        Bytes::from(payload),
    ])
}

/// Splits a published table's batch into one batch per stream, in first-row order.
///
/// # Errors
/// Arrow's error if `run_id`/`source` are missing.
pub fn split_streams(
    table: Table,
    batch: &RecordBatch,
) -> Result<Vec<(StreamKey, RecordBatch)>, arrow::error::ArrowError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("no {name} column")))
    };
    let (runs, sources) = (column("run_id")?, column("source")?);
    let mut rows: BTreeMap<(&str, &str), (usize, Vec<u32>)> = BTreeMap::new();
    for row in 0..batch.num_rows() {
        let order = rows.len();
        rows.entry((runs.value(row), sources.value(row)))
            .or_insert_with(|| (order, Vec::new()))
            .1
            .push(row as u32);
    }
    let mut streams: Vec<(usize, StreamKey, RecordBatch)> = Vec::with_capacity(rows.len());
    for ((run, source), (order, indices)) in rows {
        let key = StreamKey {
            table,
            run_id: run.to_string(),
            source: source.to_string(),
        };
        let part = if indices.len() == batch.num_rows() {
            batch.clone()
        } else {
            arrow::compute::take_record_batch(batch, &UInt32Array::from(indices))?
        };
        streams.push((order, key, part));
    }
    streams.sort_by_key(|(order, _, _)| *order);
    Ok(streams.into_iter().map(|(_, k, b)| (k, b)).collect())
}

/// Hands committed rows to the publishing task; owned by the pipeline.
#[derive(Clone)]
pub struct Publisher {
    groups: mpsc::Sender<Vec<(Table, RecordBatch)>>,
    counters: Arc<zmtp::PubCounters>,
}

impl Publisher {
    /// Starts the task that encodes and sends what [`Publisher::publish`] is given.
    pub fn spawn(
        socket: PubSocket,
        formats: Vec<StreamFormat>,
        counters: Arc<zmtp::PubCounters>,
    ) -> (Publisher, tokio::task::JoinHandle<()>) {
        let (groups, mut receiver) = mpsc::channel::<Vec<(Table, RecordBatch)>>(MAX_PENDING_GROUPS);
        let task = tokio::spawn(async move {
            while let Some(group) = receiver.recv().await {
                for (table, batch) in group {
                    if let Err(err) = send_table(&socket, &formats, table, &batch) {
                        tracing::error!(%err, table = table.name(), "cannot publish rows");
                    }
                }
            }
        });
        (Publisher { groups, counters }, task)
    }

    /// Publishes the published tables' rows of a committed group; never blocks.
    pub fn publish(&self, batches: &[(Table, RecordBatch)]) {
        let group: Vec<(Table, RecordBatch)> = batches
            .iter()
            .filter(|(t, b)| t.is_published() && b.num_rows() > 0)
            .cloned()
            .collect();
        if group.is_empty() {
            return;
        }
        if self.groups.try_send(group).is_err() {
            self.counters
                .dropped_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("feature stream behind: a group was not published (replay has it)");
        }
    }
}

fn send_table(
    socket: &PubSocket,
    formats: &[StreamFormat],
    table: Table,
    batch: &RecordBatch,
) -> Result<(), arrow::error::ArrowError> {
    for (stream, part) in split_streams(table, batch)? {
        let name = stream_name(table, &stream.run_id, &stream.source);
        for format in formats {
            let topic = format!("{}/{name}", format.name());
            if socket.wanted(topic.as_bytes()) {
                socket.publish(encode_message(&stream, &part, *format)?);
            }
        }
    }
    Ok(())
}
