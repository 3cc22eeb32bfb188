//! The write buffer: rows that are durable in the WAL but not yet in Parquet, kept queryable.
//!
//! Batches enter `open` as soon as their WAL group is durable. A snapshot moves everything
//! open into a persisting generation (still queryable) and hands it to the persister; when its
//! files are written, the catalog update and the removal of the generation happen under one
//! lock, so a query sees every row exactly once: from the buffer, or from Parquet, never both.
//! The buffer owns the in-memory catalog for that reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use crate::catalog::{Catalog, CatalogError, CatalogFile};
use crate::ledger::SeqLedger;
use crate::paths::DataPaths;
use crate::storage::SharedStorage;
use crate::table_store::{LocalTableStore, SharedTableStore};

/// Rows moved out of `open`, on their way to Parquet.
#[derive(Debug)]
pub struct Snapshot {
    /// Generation number, increasing.
    pub generation: u64,
    /// Every batch of the snapshot lives in WAL segments `<=` this id.
    pub wal_through: u64,
    /// The batches, per table.
    pub batches: BTreeMap<Table, Vec<RecordBatch>>,
    /// Arrow bytes of the batches.
    pub bytes: usize,
    /// Committed seqs as of `wal_through`, saved with the catalog.
    pub ledger: SeqLedger,
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
    persisting_bytes: usize,
    /// Shared, so a change copies it outside the lock and a query clones no file list.
    catalog: Arc<Catalog>,
    /// The catalog's files per table, in catalog order, built when the catalog changes.
    files_by_table: HashMap<String, Arc<Vec<CatalogFile>>>,
    /// The next Parquet file id; saved into each catalog written.
    next_file_id: u64,
    next_generation: u64,
}

/// The catalog's files grouped by table, in catalog order.
fn files_by_table(catalog: &Catalog) -> HashMap<String, Arc<Vec<CatalogFile>>> {
    let mut tables: HashMap<String, Vec<CatalogFile>> = HashMap::new();
    for file in &catalog.files {
        tables
            .entry(file.table.clone())
            .or_default()
            .push(file.clone());
    }
    tables
        .into_iter()
        .map(|(table, files)| (table, Arc::new(files)))
        .collect()
}

/// What a query reads for one table at one instant.
#[derive(Debug, Default)]
pub struct TableChunks {
    /// Persisted files (shared with the catalog: taking them copies nothing).
    pub files: Arc<Vec<CatalogFile>>,
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
    /// Arrow bytes in persisting generations.
    pub persisting_bytes: usize,
    /// Snapshots written or waiting to be written.
    pub persisting_snapshots: usize,
    /// Rows in catalogued Parquet files.
    pub persisted_rows: u64,
    /// Catalogued Parquet files.
    pub persisted_files: usize,
}

/// The queryable write buffer; see the module doc.
pub struct WriteBuffer {
    state: Mutex<State>,
    /// Signalled when a snapshot completes and its bytes leave the buffer.
    room: Condvar,
    /// Held from reading the catalog to swapping in its saved successor, so the persister and
    /// the compactor never save over each other's change.
    catalog_writer: Mutex<()>,
    /// Where the catalog is saved and the files it names live.
    tables: SharedTableStore,
}

impl WriteBuffer {
    /// A buffer over an existing catalog of the data directory `paths`, saving it through
    /// `storage`.
    pub fn new(catalog: Catalog, paths: DataPaths, storage: SharedStorage) -> WriteBuffer {
        WriteBuffer::with_tables(catalog, LocalTableStore::shared(paths, storage))
    }

    /// A buffer over an existing catalog of `tables`, saving it there.
    pub fn with_tables(catalog: Catalog, tables: SharedTableStore) -> WriteBuffer {
        WriteBuffer {
            state: Mutex::new(State {
                files_by_table: files_by_table(&catalog),
                next_file_id: catalog.next_file_id,
                catalog: Arc::new(catalog),
                ..State::default()
            }),
            room: Condvar::new(),
            catalog_writer: Mutex::new(()),
            tables,
        }
    }

    /// Where the catalog is saved and the files it names live.
    pub fn tables(&self) -> SharedTableStore {
        self.tables.clone()
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
    /// `ledger` is the seq ledger as of `wal_through`.
    pub fn take_snapshot(&self, wal_through: u64, ledger: SeqLedger) -> Option<Arc<Snapshot>> {
        let mut state = self.lock();
        if state.open.is_empty() {
            return None;
        }
        let batches = std::mem::take(&mut state.open);
        let bytes = state.open_bytes;
        state.persisting_bytes += bytes;
        state.open_bytes = 0;
        state.open_rows = 0;
        state.open_since = None;
        let generation = state.next_generation;
        state.next_generation += 1;
        let snapshot = Arc::new(Snapshot {
            generation,
            wal_through,
            batches,
            bytes,
            ledger,
        });
        state.persisting.push(snapshot.clone());
        Some(snapshot)
    }

    /// Hands out `count` consecutive file ids.
    pub fn allocate_file_ids(&self, count: u64) -> u64 {
        let mut state = self.lock();
        let first = state.next_file_id;
        state.next_file_id += count;
        first
    }

    /// Records the snapshot's files in the catalog (saved atomically, with the snapshot's WAL
    /// watermark and seq ledger) and drops the snapshot from the buffer, in one step as seen
    /// by queries. The catalog is written outside the lock; only the swap happens under it.
    /// Snapshots must complete in generation order: the watermark says every segment up to it
    /// is in Parquet.
    ///
    /// # Errors
    /// [`CatalogError`] if the catalog cannot be saved; the snapshot then stays buffered.
    pub fn complete(
        &self,
        snapshot: &Snapshot,
        files: Vec<CatalogFile>,
    ) -> Result<(), CatalogError> {
        self.change_catalog(
            |next| {
                next.files.extend(files);
                next.wal_persisted_through = next.wal_persisted_through.max(snapshot.wal_through);
                next.seq_ledger = snapshot.ledger.clone();
            },
            |state| {
                state
                    .persisting
                    .retain(|s| s.generation != snapshot.generation);
                state.persisting_bytes = state.persisting_bytes.saturating_sub(snapshot.bytes);
            },
        )?;
        self.room.notify_all();
        Ok(())
    }

    /// Replaces catalogued files: those whose path is in `removed` leave the catalog, `added`
    /// take the place of the first of them (or go last), saved atomically and swapped in as
    /// one step for queries. The files themselves are not touched.
    ///
    /// # Errors
    /// [`CatalogError`] if the catalog cannot be saved; it then stays as it was.
    pub fn replace_files(
        &self,
        removed: &[String],
        added: Vec<CatalogFile>,
    ) -> Result<(), CatalogError> {
        self.change_catalog(
            |next| {
                let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
                let at = next
                    .files
                    .iter()
                    .position(|f| removed.contains(f.path.as_str()))
                    .unwrap_or(next.files.len());
                next.files.retain(|f| !removed.contains(f.path.as_str()));
                let at = at.min(next.files.len());
                next.files.splice(at..at, added);
            },
            |_| {},
        )
    }

    /// Applies `change` to a copy of the catalog, saves it (outside the buffer's lock), then
    /// swaps it in together with `also`, in one step as seen by queries. One change at a time.
    /// Under the lock only an `Arc` is cloned and swapped: copying and indexing a catalog of
    /// 100k files takes milliseconds, and ingest commits wait for this lock.
    fn change_catalog(
        &self,
        change: impl FnOnce(&mut Catalog),
        also: impl FnOnce(&mut State),
    ) -> Result<(), CatalogError> {
        let _writer = self
            .catalog_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (current, next_file_id) = {
            let state = self.lock();
            (state.catalog.clone(), state.next_file_id)
        };
        let mut next = Catalog::clone(&current);
        drop(current);
        next.next_file_id = next_file_id;
        change(&mut next);
        self.tables.save_catalog(&next)?;
        let index = files_by_table(&next);
        let mut state = self.lock();
        // Ids handed out while the catalog was saved are in the next save (`next_file_id`
        // only grows), and never handed out again.
        state.catalog = Arc::new(next);
        state.files_by_table = index;
        also(&mut state);
        Ok(())
    }

    /// Every catalogued file, in catalog order.
    pub fn catalog_files(&self) -> Vec<CatalogFile> {
        let catalog = self.lock().catalog.clone();
        catalog.files.clone()
    }

    /// Waits until the buffer (open and persisting) holds fewer than `max_bytes`, or `timeout`
    /// passes. Returns whether there is room.
    pub fn wait_for_room(&self, max_bytes: usize, timeout: std::time::Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .room
            .wait_timeout_while(state, timeout, |s| {
                s.open_bytes + s.persisting_bytes >= max_bytes
            })
            .unwrap_or_else(|p| p.into_inner());
        state.open_bytes + state.persisting_bytes < max_bytes
    }

    /// Files and buffered batches of one table, consistent with each other.
    pub fn chunks(&self, table: Table) -> TableChunks {
        let state = self.lock();
        let files = state
            .files_by_table
            .get(table.name())
            .cloned()
            .unwrap_or_default();
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
            persisting_bytes: state.persisting_bytes,
            persisting_snapshots: state.persisting.len(),
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
        let buffer = WriteBuffer::new(
            Catalog::default(),
            DataPaths::new(dir.path()),
            crate::storage::LocalStorage::shared(),
        );
        buffer.insert(&[(Table::Photons, batch(3))]);
        assert_eq!(buffer.chunks(Table::Photons).batches.len(), 1);
        let snapshot = buffer
            .take_snapshot(1, SeqLedger::default())
            .expect("snapshot");
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
        buffer.complete(&snapshot, vec![file]).expect("complete");
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

    fn file(table: &str, path: &str) -> CatalogFile {
        CatalogFile {
            table: table.into(),
            path: path.into(),
            rows: 1,
            size_bytes: 1,
            min_arrival_time_ns: 0,
            max_arrival_time_ns: 0,
            run_id: "r".into(),
            date: "d".into(),
        }
    }

    fn paths_of(chunks: &TableChunks) -> Vec<&str> {
        chunks.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn each_table_sees_its_files_in_catalog_order_and_a_taken_list_stays_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog {
            files: vec![
                file("photons", "a"),
                file("spectra", "s"),
                file("photons", "b"),
            ],
            next_file_id: 7,
            ..Catalog::default()
        };
        let buffer = WriteBuffer::new(
            catalog,
            DataPaths::new(dir.path()),
            crate::storage::LocalStorage::shared(),
        );
        let before = buffer.chunks(Table::Photons);
        assert_eq!(paths_of(&before), ["a", "b"]);
        assert_eq!(paths_of(&buffer.chunks(Table::Spectra)), ["s"]);
        assert!(buffer.chunks(Table::Runs).files.is_empty());
        // Ids handed out before a save are in the saved catalog.
        assert_eq!(buffer.allocate_file_ids(3), 7);
        buffer
            .replace_files(&["a".into(), "b".into()], vec![file("photons", "ab")])
            .expect("replace");
        assert_eq!(paths_of(&buffer.chunks(Table::Photons)), ["ab"]);
        assert_eq!(paths_of(&buffer.chunks(Table::Spectra)), ["s"]);
        assert_eq!(paths_of(&before), ["a", "b"], "a query's list is its own");
        let saved = Catalog::load(&dir.path().join("catalog.json")).expect("saved");
        assert_eq!(saved.next_file_id, 10);
        let saved: Vec<&str> = saved.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(saved, ["ab", "s"]);
        assert_eq!(buffer.allocate_file_ids(1), 10);
    }
}
