//! The write buffer: rows that are durable in the WAL but not yet in Parquet, kept queryable.
//!
//! Batches enter `open` as soon as their WAL group is durable. A snapshot moves everything
//! open into a persisting generation (still queryable) and hands it to the persister; when its
//! files are written, the catalog update and the removal of the generation happen under one
//! lock, so a query sees every row exactly once: from the buffer, or from Parquet, never both.
//! The buffer owns the in-memory catalog for that reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use crate::catalog::{Catalog, CatalogError, CatalogFile};
use crate::paths::DataPaths;

/// Rows moved out of `open`, on their way to Parquet.
#[derive(Debug)]
pub struct Snapshot {
    /// Generation number, increasing.
    pub generation: u64,
    /// Every batch of the snapshot lives in WAL segments `<=` this id.
    pub wal_through: u64,
    /// The batches, per table.
    pub batches: BTreeMap<Table, Vec<RecordBatch>>,
}

impl Snapshot {
    /// Total rows.
    pub fn rows(&self) -> usize {
        self.batches
            .values()
            .flatten()
            .map(RecordBatch::num_rows)
            .sum()
    }
}

#[derive(Default)]
struct State {
    open: BTreeMap<Table, Vec<RecordBatch>>,
    open_bytes: usize,
    open_rows: usize,
    open_since: Option<Instant>,
    persisting: Vec<Arc<Snapshot>>,
    catalog: Catalog,
    next_generation: u64,
}

/// What a query reads for one table at one instant.
#[derive(Debug, Default)]
pub struct TableChunks {
    /// Persisted files.
    pub files: Vec<CatalogFile>,
    /// Buffered batches (open and persisting).
    pub batches: Vec<RecordBatch>,
}

/// Buffered-row counts, for metrics and the demo's progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Rows in `open`.
    pub open_rows: usize,
    /// Arrow bytes in `open`.
    pub open_bytes: usize,
    /// Rows in persisting generations.
    pub persisting_rows: usize,
    /// Rows in catalogued Parquet files.
    pub persisted_rows: u64,
    /// Catalogued Parquet files.
    pub persisted_files: usize,
}

/// The queryable write buffer; see the module doc.
pub struct WriteBuffer {
    state: Mutex<State>,
    paths: DataPaths,
}

impl WriteBuffer {
    /// A buffer over an existing catalog.
    pub fn new(catalog: Catalog, paths: DataPaths) -> WriteBuffer {
        WriteBuffer {
            state: Mutex::new(State {
                catalog,
                ..State::default()
            }),
            paths,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that loses
        // rows (every mutation is a push or a swap), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds durable batches; they are queryable when this returns.
    pub fn insert(&self, batches: &[(Table, RecordBatch)]) {
        let mut state = self.lock();
        for (table, batch) in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            state.open_bytes += batch.get_array_memory_size();
            state.open_rows += batch.num_rows();
            state.open_since.get_or_insert_with(Instant::now);
            state.open.entry(*table).or_default().push(batch.clone());
        }
    }

    /// Bytes buffered in `open`, and how long ago the oldest open row arrived.
    pub fn open_load(&self) -> (usize, Option<std::time::Duration>) {
        let state = self.lock();
        (state.open_bytes, state.open_since.map(|t| t.elapsed()))
    }

    /// Moves everything open into a new persisting generation, or `None` if nothing is open.
    pub fn take_snapshot(&self, wal_through: u64) -> Option<Arc<Snapshot>> {
        let mut state = self.lock();
        if state.open.is_empty() {
            return None;
        }
        let batches = std::mem::take(&mut state.open);
        state.open_bytes = 0;
        state.open_rows = 0;
        state.open_since = None;
        let generation = state.next_generation;
        state.next_generation += 1;
        let snapshot = Arc::new(Snapshot {
            generation,
            wal_through,
            batches,
        });
        state.persisting.push(snapshot.clone());
        Some(snapshot)
    }

    /// Hands out `count` consecutive file ids.
    pub fn allocate_file_ids(&self, count: u64) -> u64 {
        let mut state = self.lock();
        let first = state.catalog.next_file_id;
        state.catalog.next_file_id += count;
        first
    }

    /// Records the snapshot's files in the catalog (saved atomically) and drops the snapshot
    /// from the buffer, in one step as seen by queries.
    ///
    /// # Errors
    /// [`CatalogError`] if the catalog cannot be saved; the snapshot then stays buffered.
    pub fn complete(
        &self,
        generation: u64,
        files: Vec<CatalogFile>,
        wal_through: u64,
    ) -> Result<(), CatalogError> {
        let mut state = self.lock();
        let mut next = state.catalog.clone();
        next.files.extend(files);
        next.wal_persisted_through = next.wal_persisted_through.max(wal_through);
        next.save(&self.paths.catalog_file())?;
        state.catalog = next;
        state.persisting.retain(|s| s.generation != generation);
        Ok(())
    }

    /// Files and buffered batches of one table, consistent with each other.
    pub fn chunks(&self, table: Table) -> TableChunks {
        let state = self.lock();
        let files = state.catalog.files_of(table.name()).cloned().collect();
        let mut batches: Vec<RecordBatch> = state
            .persisting
            .iter()
            .filter_map(|s| s.batches.get(&table))
            .flatten()
            .cloned()
            .collect();
        if let Some(open) = state.open.get(&table) {
            batches.extend(open.iter().cloned());
        }
        TableChunks { files, batches }
    }

    /// Current counts.
    pub fn stats(&self) -> BufferStats {
        let state = self.lock();
        BufferStats {
            open_rows: state.open_rows,
            open_bytes: state.open_bytes,
            persisting_rows: state.persisting.iter().map(|s| s.rows()).sum(),
            persisted_rows: state.catalog.files.iter().map(|f| f.rows).sum(),
            persisted_files: state.catalog.files.len(),
        }
    }

    /// The WAL watermark of the catalog.
    pub fn wal_persisted_through(&self) -> u64 {
        self.lock().catalog.wal_persisted_through
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, UInt64Array};

    fn batch(n: u64) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "seq",
            Arc::new(UInt64Array::from_iter_values(0..n)) as ArrayRef,
        )])
        .expect("batch")
    }

    #[test]
    fn rows_are_seen_once_through_snapshot_and_completion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffer = WriteBuffer::new(Catalog::default(), DataPaths::new(dir.path()));
        buffer.insert(&[(Table::Photons, batch(3))]);
        assert_eq!(buffer.chunks(Table::Photons).batches.len(), 1);
        let snapshot = buffer.take_snapshot(1).expect("snapshot");
        buffer.insert(&[(Table::Photons, batch(2))]);
        let during = buffer.chunks(Table::Photons);
        assert_eq!(
            during
                .batches
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            5
        );
        assert!(during.files.is_empty());
        let file = CatalogFile {
            table: "photons".into(),
            path: "p".into(),
            rows: 3,
            size_bytes: 1,
            min_arrival_time_ns: 0,
            max_arrival_time_ns: 0,
            run_id: "r".into(),
            date: "d".into(),
        };
        buffer
            .complete(snapshot.generation, vec![file], 1)
            .expect("complete");
        let after = buffer.chunks(Table::Photons);
        assert_eq!(after.files.len(), 1);
        assert_eq!(
            after
                .batches
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            2
        );
        assert_eq!(buffer.wal_persisted_through(), 1);
        assert_eq!(
            Catalog::load(&dir.path().join("catalog.json"))
                .expect("saved")
                .files
                .len(),
            1
        );
    }
}
