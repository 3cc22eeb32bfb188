//! The feature stream as server-sent events: what a browser (`EventSource`, the dashboard) or
//! `curl -N` follows over HTTP, where a ZeroMQ subscriber cannot go.
//!
//! After each group commit the pipeline hands the published tables' rows here as well as to
//! the PUB socket. They are encoded as JSON only while someone listens: one event per stream
//! part, carrying the header the PUB stream sends and the rows. A listener that falls more than
//! [`CAPACITY`] events behind is told how many it missed and goes on; `stream_seq` and replay
//! (`docs/feature-streams.md`) fill the gap.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::{Table, STREAM_SEQ_COLUMN};
use tokio::sync::broadcast;

use super::sequencer::stream_name;
use super::split_streams;
use crate::query::output::{self, Format};

/// Events held for the slowest listener; beyond, it is told it lagged.
pub const CAPACITY: usize = 256;

/// Where committed feature rows go for HTTP listeners. Cloning shares the feed.
#[derive(Clone)]
pub struct EventFeed {
    sender: broadcast::Sender<Arc<str>>,
}

impl Default for EventFeed {
    fn default() -> Self {
        EventFeed {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

/// What a listener receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// One stream part: `{"topic", "table", "run_id", "source", "first_seq", "last_seq",
    /// "schema_version", "rows": [...]}`.
    Rows(Arc<str>),
    /// This many events were dropped for this listener.
    Lagged(u64),
}

/// A listener's end of the feed.
pub struct Listener {
    receiver: broadcast::Receiver<Arc<str>>,
}

impl Listener {
    /// The next event, or `None` once the server stops.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        match self.receiver.recv().await {
            Ok(rows) => Some(FeedEvent::Rows(rows)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(FeedEvent::Lagged(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl EventFeed {
    /// A new listener, receiving what is published from now on.
    pub fn listen(&self) -> Listener {
        Listener {
            receiver: self.sender.subscribe(),
        }
    }

    /// Sends the published tables' rows of a committed group to every listener; encodes
    /// nothing when no one listens. Never blocks.
    pub fn publish(&self, batches: &[(Table, RecordBatch)]) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for (table, batch) in batches {
            if !table.is_published() || batch.num_rows() == 0 {
                continue;
            }
            let parts = match split_streams(*table, batch) {
                Ok(parts) => parts,
                Err(err) => {
                    tracing::error!(%err, table = table.name(), "cannot split rows for events");
                    continue;
                }
            };
            for (stream, part) in parts {
                match encode(*table, &stream.run_id, &stream.source, &part) {
                    // Sending fails only when every listener has gone.
                    Ok(event) => drop(self.sender.send(event)),
                    Err(err) => tracing::error!(%err, "cannot encode rows for events"),
                }
            }
        }
    }
}

/// One event's JSON: the stream's header and its rows.
fn encode(
    table: Table,
    run_id: &str,
    source: &str,
    part: &RecordBatch,
) -> Result<Arc<str>, arrow::error::ArrowError> {
    let seqs = part
        .column_by_name(STREAM_SEQ_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>());
    let header = serde_json::json!({
        "topic": stream_name(table, run_id, source),
        "table": table.name(),
        "run_id": run_id,
        "source": source,
        "first_seq": seqs.and_then(|s| s.values().first().copied()),
        "last_seq": seqs.and_then(|s| s.values().last().copied()),
        "schema_version": table.schema_version(),
    })
    .to_string();
    let rows = output::render(std::slice::from_ref(part), None, Format::Json)?;
    let rows = String::from_utf8_lossy(&rows);
    // The header object, reopened to take the rows as its last member.
    let open = header.strip_suffix('}').unwrap_or(&header);
    Ok(Arc::from(format!("{open},\"rows\":{}}}", rows.trim_end())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    fn rows(run: &str, source: &str, seqs: &[u64]) -> RecordBatch {
        let n = seqs.len();
        let schema = Schema::new(vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("peak_energy_ev", DataType::Float64, true),
            Field::new(STREAM_SEQ_COLUMN, DataType::UInt64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![run; n])),
                Arc::new(StringArray::from(vec![source; n])),
                Arc::new(Float64Array::from(vec![2.4; n])),
                Arc::new(UInt64Array::from(seqs.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[tokio::test]
    async fn listeners_get_one_event_per_stream_and_a_count_when_they_fall_behind() {
        let feed = EventFeed::default();
        // No listener: nothing is encoded or held.
        feed.publish(&[(Table::SpectralFeatures, rows("r", "a", &[1]))]);
        let mut listener = feed.listen();
        let mut group = rows("r", "a", &[2, 3]);
        group =
            arrow::compute::concat_batches(&group.schema(), &[group.clone(), rows("r", "b", &[1])])
                .expect("concat");
        feed.publish(&[
            (Table::SpectralFeatures, group),
            (Table::Spectra, rows("r", "a", &[9])),
        ]);
        let Some(FeedEvent::Rows(first)) = listener.next().await else {
            panic!("rows expected");
        };
        let first: serde_json::Value = serde_json::from_str(&first).expect("json");
        assert_eq!(first["topic"], "spectral_features/r/a");
        assert_eq!(
            (first["first_seq"].as_u64(), first["last_seq"].as_u64()),
            (Some(2), Some(3))
        );
        assert_eq!(first["rows"].as_array().map(Vec::len), Some(2));
        assert_eq!(first["rows"][1]["stream_seq"], 3);
        let Some(FeedEvent::Rows(second)) = listener.next().await else {
            panic!("rows expected");
        };
        assert!(second.contains("\"source\":\"b\""), "{second}");
        // The unpublished table sent nothing; a listener that does not read is told what it lost.
        for seq in 0..(CAPACITY as u64 + 10) {
            feed.publish(&[(Table::SpectralFeatures, rows("r", "a", &[seq]))]);
        }
        assert_eq!(listener.next().await, Some(FeedEvent::Lagged(10)));
        assert!(matches!(listener.next().await, Some(FeedEvent::Rows(_))));
    }
}
