//! Stream sequence numbers: every published row's place in its stream, assigned before the WAL.
//!
//! A subscriber that lost messages must be able to ask for "everything after 41" and get exactly
//! the rows it missed, from memory or from Parquet, before or after a restart. That only works if
//! the number is part of the row and durable with it, so the pipeline numbers each published
//! table's rows here (per stream `{table}/{run_id}/{source}`, +1 per row) just before the group
//! is written, and recovery reads the highest numbers back through SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, UInt64Array};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::{Table, STREAM_SEQ_COLUMN};

use crate::query::{QueryEngine, QueryError};

/// A stream's name: `{table}/{run_id}/{source}`.
pub fn stream_name(table: Table, run_id: &str, source: &str) -> String {
    format!("{}/{run_id}/{source}", table.name())
}

/// Where a stream's rows live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    /// The table.
    pub table: Table,
    /// The run.
    pub run_id: String,
    /// The source.
    pub source: String,
}

/// Every stream the server has numbered rows in, by name; shared with the replay service.
pub type StreamDirectory = Arc<Mutex<BTreeMap<String, StreamKey>>>;

/// Numbers the rows of published tables; see the module doc.
#[derive(Default)]
pub struct StreamSequencer {
    last: HashMap<(Table, String, String), u64>,
    directory: StreamDirectory,
}

/// A stream (table, run, source) and its highest number before a group, if it had one.
type UndoEntry = ((Table, String, String), Option<u64>);

/// Highest numbers before a group, to undo it if the group is not written.
#[derive(Default)]
pub struct Undo(Vec<UndoEntry>);

impl StreamSequencer {
    /// Reads the highest `stream_seq` of every stream from the tables (buffer and Parquet).
    ///
    /// # Errors
    /// [`QueryError`] if a table cannot be read.
    pub async fn recover(query: &QueryEngine) -> Result<StreamSequencer, QueryError> {
        let mut sequencer = StreamSequencer::default();
        for table in Table::ALL.into_iter().filter(|t| t.is_published()) {
            let sql = format!(
                "SELECT run_id, source, max({STREAM_SEQ_COLUMN}) AS last FROM {} GROUP BY run_id, source",
                table.name()
            );
            let result = query.execute(&sql).await?;
            for batch in &result.batches {
                let runs = batch.column(0).as_string::<i32>();
                let sources = batch.column(1).as_string::<i32>();
                let last = batch.column(2).as_primitive::<UInt64Type>();
                for row in 0..batch.num_rows() {
                    if last.is_valid(row) {
                        sequencer.note(table, runs.value(row), sources.value(row), last.value(row));
                    }
                }
            }
        }
        Ok(sequencer)
    }

    /// The directory of streams, for the replay service.
    pub fn directory(&self) -> StreamDirectory {
        self.directory.clone()
    }

    fn note(&mut self, table: Table, run_id: &str, source: &str, last: u64) {
        self.last
            .insert((table, run_id.to_string(), source.to_string()), last);
        let mut directory = self.directory.lock().unwrap_or_else(|p| p.into_inner());
        directory
            .entry(stream_name(table, run_id, source))
            .or_insert_with(|| StreamKey {
                table,
                run_id: run_id.to_string(),
                source: source.to_string(),
            });
    }

    /// Appends `stream_seq` to every batch of a published table. Returns what [`Self::undo`]
    /// needs if the group is then not written.
    ///
    /// # Errors
    /// Arrow's error if a batch lacks `run_id`/`source` or does not match its table's schema.
    pub fn sequence(
        &mut self,
        batches: &mut [(Table, RecordBatch)],
    ) -> Result<Undo, arrow::error::ArrowError> {
        let mut undo = Vec::new();
        for (table, batch) in batches.iter_mut() {
            if !table.is_published() {
                continue;
            }
            let missing = |name: &str| {
                arrow::error::ArrowError::SchemaError(format!(
                    "{}: published rows need a {name} column",
                    table.name()
                ))
            };
            let runs = batch
                .column_by_name("run_id")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| missing("run_id"))?
                .clone();
            let sources = batch
                .column_by_name("source")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| missing("source"))?
                .clone();
            let mut seqs = Vec::with_capacity(batch.num_rows());
            let mut previous: Option<(&str, &str, u64)> = None;
            for row in 0..batch.num_rows() {
                let (run, source) = (runs.value(row), sources.value(row));
                // Rows of one stream are usually adjacent: skip the map lookup for them.
                let next = match previous {
                    Some((r, s, last)) if r == run && s == source => last + 1,
                    _ => {
                        if let Some((r, s, last)) = previous {
                            self.store(*table, r, s, last, &mut undo);
                        }
                        self.last
                            .get(&(*table, run.to_string(), source.to_string()))
                            .map_or(1, |last| last + 1)
                    }
                };
                seqs.push(next);
                previous = Some((run, source, next));
            }
            if let Some((r, s, last)) = previous {
                self.store(*table, r, s, last, &mut undo);
            }
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns.push(std::sync::Arc::new(UInt64Array::from(seqs)));
            *batch = RecordBatch::try_new(table.schema(), columns)?;
        }
        Ok(Undo(undo))
    }

    fn store(
        &mut self,
        table: Table,
        run: &str,
        source: &str,
        last: u64,
        undo: &mut Vec<UndoEntry>,
    ) {
        let key = (table, run.to_string(), source.to_string());
        let before = self.last.get(&key).copied();
        if !undo.iter().any(|(k, _)| *k == key) {
            undo.push((key, before));
        }
        self.note(table, run, source, last);
    }

    /// Gives back the numbers of a group that was not written.
    pub fn undo(&mut self, undo: Undo) {
        for (key, before) in undo.0.into_iter().rev() {
            match before {
                Some(last) => {
                    self.last.insert(key, last);
                }
                None => {
                    self.last.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;

    use super::*;

    fn outcome_like(rows: &[(&str, &str)]) -> RecordBatch {
        // A conditions-shaped batch is the smallest published table to build by hand.
        let registration = crate::conditions::Registration::from_json(&serde_json::json!({
            "run_id": "r", "condition_id": "c"
        }))
        .expect("valid");
        let one = crate::conditions::condition_batch(&registration, 1, 1).expect("row");
        let batches: Vec<RecordBatch> = rows
            .iter()
            .map(|(run, source)| {
                let mut columns = one.columns().to_vec();
                let index = |name| one.schema().index_of(name).expect("column");
                columns[index("run_id")] = Arc::new(StringArray::from(vec![*run]));
                columns[index("source")] = Arc::new(StringArray::from(vec![*source]));
                RecordBatch::try_new(one.schema(), columns).expect("row")
            })
            .collect();
        arrow::compute::concat_batches(&one.schema(), &batches).expect("concat")
    }

    fn seqs(batch: &RecordBatch) -> Vec<u64> {
        batch
            .column_by_name(STREAM_SEQ_COLUMN)
            .expect("seq")
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn each_stream_counts_from_one_without_gaps_across_groups() {
        let mut sequencer = StreamSequencer::default();
        let mut group = vec![(
            Table::Conditions,
            outcome_like(&[
                ("r1", "a"),
                ("r1", "a"),
                ("r1", "b"),
                ("r2", "a"),
                ("r1", "a"),
            ]),
        )];
        sequencer.sequence(&mut group).expect("sequenced");
        assert_eq!(group[0].1.schema(), Table::Conditions.schema());
        assert_eq!(seqs(&group[0].1), vec![1, 2, 1, 1, 3]);
        let mut next = vec![(Table::Conditions, outcome_like(&[("r1", "b"), ("r1", "a")]))];
        sequencer.sequence(&mut next).expect("sequenced");
        assert_eq!(seqs(&next[0].1), vec![2, 4]);
        let names: Vec<String> = sequencer
            .directory()
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            names,
            vec!["conditions/r1/a", "conditions/r1/b", "conditions/r2/a"]
        );
    }

    #[test]
    fn a_group_that_is_not_written_gives_its_numbers_back() {
        let mut sequencer = StreamSequencer::default();
        let mut first = vec![(Table::Conditions, outcome_like(&[("r1", "a")]))];
        sequencer.sequence(&mut first).expect("sequenced");
        let mut failed = vec![(Table::Conditions, outcome_like(&[("r1", "a"), ("r1", "z")]))];
        let undo = sequencer.sequence(&mut failed).expect("sequenced");
        sequencer.undo(undo);
        let mut retry = vec![(Table::Conditions, outcome_like(&[("r1", "a"), ("r1", "z")]))];
        sequencer.sequence(&mut retry).expect("sequenced");
        assert_eq!(seqs(&retry[0].1), vec![2, 1]);
    }
}
