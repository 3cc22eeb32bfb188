//! The persister: turns a buffer snapshot into Parquet files, then retires its WAL segments.
//!
//! Files are zstd-compressed, partitioned by table / date / run, and committed to the table
//! store (on a disk: written under a temporary name, fsynced and renamed into place; in an
//! object store: one PUT); only then does the catalog learn of them, and only after the
//! catalog is saved are WAL segments deleted. A crash at any point leaves either the
//! WAL or the catalog holding every row; stray files not in the catalog are removed at start.
//! Snapshots are persisted strictly in order and a failed one is retried (with back-off) until
//! it succeeds: a later snapshot never moves the watermark past one whose rows are not in
//! Parquet. A failed attempt removes the files it wrote; if its catalog save failed, only once
//! a later save succeeds (the failed save may have landed, naming them).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, UInt32Array};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use flowdaq_schemas::{Table, SCHEMA_VERSION_KEY};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::catalog::{CatalogError, CatalogFile};
use crate::config::ParquetConfig;
use crate::health::Health;
use crate::paths::DataPaths;
use crate::storage::SharedStorage;
use crate::table_store::NewTableFile;
use crate::wal;
use crate::write_buffer::{Snapshot, WriteBuffer};

/// Persist failures; the snapshot stays buffered and its WAL segments stay on disk.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// File-system error.
    #[error("persist {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Parquet encoding failure.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failure while partitioning.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The catalog could not be saved.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// WAL segments could not be removed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
}

/// Writes snapshots to Parquet.
pub struct Persister {
    paths: DataPaths,
    config: ParquetConfig,
    buffer: Arc<WriteBuffer>,
    storage: SharedStorage,
    health: Arc<Health>,
    /// Files of failed attempts still in the store: those whose removal failed, and those of an
    /// attempt whose catalog save failed (a save reported failed may still have reached the
    /// store, a timeout after the store took it, so its files must stay until a later save,
    /// which cannot name them, succeeds). Removed after the next successful persist.
    leftovers: std::sync::Mutex<Vec<String>>,
}

/// Where [`Persister::write_batches`] writes, and what its rows cost in memory.
pub(crate) struct FileTarget {
    /// The table.
    pub table: Table,
    /// Path of the file relative to the data directory.
    pub relative: String,
    /// Date partition.
    pub date: String,
    /// Run partition.
    pub run: String,
    /// Arrow bytes per row, for the row-group size.
    pub bytes_per_row: usize,
}

/// Rows of one (date, run) partition of one table.
struct Partition {
    date: String,
    run: String,
    batches: Vec<RecordBatch>,
}

impl Persister {
    /// A persister writing under `paths` through `storage` and completing into `buffer`;
    /// failures go to `health`.
    pub fn new(
        paths: DataPaths,
        config: ParquetConfig,
        buffer: Arc<WriteBuffer>,
        storage: SharedStorage,
        health: Arc<Health>,
    ) -> Persister {
        Persister {
            paths,
            config,
            buffer,
            storage,
            health,
            leftovers: Default::default(),
        }
    }

    /// The buffer whose catalog this persister completes (and whose table store it writes to).
    pub(crate) fn buffer(&self) -> Arc<WriteBuffer> {
        self.buffer.clone()
    }

    /// Persists one snapshot: files, catalog, then WAL segments. Once the catalog is saved the
    /// snapshot is persisted, whatever happens to the WAL segments' deletion (they are deleted
    /// at the next start instead, and never replayed: they are at or below the watermark).
    ///
    /// # Errors
    /// [`PersistError`]; nothing acknowledged is lost (the WAL still holds it), and the files
    /// this attempt wrote are removed (after a failed catalog save: once a later save succeeds).
    pub fn persist(&self, snapshot: &Snapshot) -> Result<Vec<CatalogFile>, PersistError> {
        let mut written = Vec::new();
        let result = self.write_and_catalog(snapshot, &mut written);
        let removable = {
            let mut leftovers = self
                .leftovers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &result {
                // A catalog naming none of the leftovers is saved.
                Ok(_) => std::mem::take(&mut *leftovers),
                Err(PersistError::Catalog(_)) => {
                    leftovers.append(&mut written);
                    Vec::new()
                }
                Err(_) => written,
            }
        };
        let kept = self.remove_files(removable);
        if !kept.is_empty() {
            self.leftovers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(kept);
        }
        let files = result?;
        let wal_dir = self.paths.wal_dir();
        if let Err(err) =
            wal::remove_segments_through(&self.storage, &wal_dir, snapshot.wal_through)
        {
            self.health.cleanup_failed();
            tracing::warn!(%err, "persisted WAL segments not deleted; deleted at the next start");
        }
        Ok(files)
    }

    /// Removes `paths` from the table store; returns those that could not be removed.
    fn remove_files(&self, paths: Vec<String>) -> Vec<String> {
        let tables = self.buffer.tables();
        paths
            .into_iter()
            .filter(|path| match tables.remove(path) {
                Ok(()) => false,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
                Err(err) => {
                    tracing::warn!(%path, %err, "cannot remove a file of a failed persist; retried after the next persist");
                    true
                }
            })
            .collect()
    }

    fn write_and_catalog(
        &self,
        snapshot: &Snapshot,
        written: &mut Vec<String>,
    ) -> Result<Vec<CatalogFile>, PersistError> {
        let mut partitions: Vec<(Table, Partition)> = Vec::new();
        for (table, batches) in &snapshot.batches {
            for partition in partition(batches)? {
                partitions.push((*table, partition));
            }
        }
        let first_id = self.buffer.allocate_file_ids(partitions.len() as u64);
        let mut files = Vec::with_capacity(partitions.len());
        for (offset, (table, partition)) in partitions.into_iter().enumerate() {
            files.push(self.write_file(table, partition, first_id + offset as u64, written)?);
        }
        self.buffer.complete(snapshot, files.clone())?;
        Ok(files)
    }

    /// Writes one partition's file; its path is pushed to `written` once it is there, so a
    /// later failure can remove it.
    fn write_file(
        &self,
        table: Table,
        partition: Partition,
        file_id: u64,
        written: &mut Vec<String>,
    ) -> Result<CatalogFile, PersistError> {
        let tables = self.buffer.tables();
        let relative = DataPaths::parquet_relative(
            table.name(),
            &partition.date,
            &partition.run,
            tables.writer(),
            file_id,
        );
        let rows: usize = partition.batches.iter().map(RecordBatch::num_rows).sum();
        let bytes: usize = partition
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let target = FileTarget {
            table,
            relative,
            date: partition.date,
            run: partition.run,
            bytes_per_row: (bytes / rows.max(1)).max(1),
        };
        self.write_batches(target, partition.batches.into_iter().map(Ok), written)
    }

    /// Writes `batches` as the Parquet file `target` names, with the table's encodings, and
    /// commits it to the table store (on a disk: temp name, fsync, rename, directory fsync; in
    /// an object store: one PUT). Its path is pushed to `written` once committed, so a later
    /// failure can remove it. On a disk the batches are written as they come: a file need not
    /// fit in memory.
    pub(crate) fn write_batches(
        &self,
        target: FileTarget,
        batches: impl IntoIterator<Item = Result<RecordBatch, PersistError>>,
        written: &mut Vec<String>,
    ) -> Result<CatalogFile, PersistError> {
        let FileTarget {
            table,
            relative,
            date,
            run,
            bytes_per_row,
        } = target;
        let io = |path: &str| {
            let path = path.to_string();
            move |source| PersistError::Io { path, source }
        };
        let row_group_rows =
            (self.config.row_group_target_bytes / bytes_per_row).clamp(1024, 1 << 20);
        let level = ZstdLevel::try_new(self.config.zstd_level)?;
        let mut properties = WriterProperties::builder();
        if table == Table::Photons {
            // Photon times rise within a message and are all distinct: a dictionary never pays
            // (the writer hashed every value before giving up on it), while the deltas of
            // DELTA_BINARY_PACKED are a few bits each.
            let macro_time = ColumnPath::from("macro_time_ps");
            properties = properties
                .set_column_dictionary_enabled(macro_time.clone(), false)
                .set_column_encoding(macro_time, Encoding::DELTA_BINARY_PACKED);
        }
        for column in measurement_columns(&table.schema())? {
            // Measured floats (pixels, volts, fit values) are nearly all distinct: the writer
            // would hash every value into a dictionary before giving up on it. Split into byte
            // streams instead, which zstd compresses better than plain floats.
            properties = properties
                .set_column_dictionary_enabled(column.path.clone(), false)
                .set_column_encoding(column.path.clone(), self.config.float_encoding());
            if column.in_list {
                // The min and max of a page of pixels prune no query (filters name scalar
                // columns), and computing them was a tenth of the writer's time.
                properties =
                    properties.set_column_statistics_enabled(column.path, EnabledStatistics::None);
            }
        }
        let properties = properties
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                SCHEMA_VERSION_KEY.to_string(),
                format!("{}/{}", table.name(), table.schema_version()),
            )]))
            .build();
        let schema = table.schema();
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        let mut rows = 0usize;
        let size_bytes = {
            let file = self
                .buffer
                .tables()
                .create(&relative)
                .map_err(io(&relative))?;
            let file = CountingFile {
                inner: file,
                bytes: 0,
            };
            let mut writer = ArrowWriter::try_new(file, schema, Some(properties))?;
            for batch in batches {
                let batch = batch?;
                rows += batch.num_rows();
                let times = arrival_times(&batch);
                if let Some(times) = times {
                    for &t in times.values() {
                        min_time = min_time.min(t);
                        max_time = max_time.max(t);
                    }
                }
                writer.write(&batch)?;
            }
            let file = writer.into_inner()?;
            let bytes = file.bytes;
            file.inner.commit().map_err(io(&relative))?;
            bytes
        };
        written.push(relative.clone());
        Ok(CatalogFile {
            table: table.name().to_string(),
            path: relative,
            rows: rows as u64,
            size_bytes,
            min_arrival_time_ns: min_time,
            max_arrival_time_ns: max_time,
            run_id: run,
            date,
        })
    }
}

/// A float column of a table, as the Parquet writer names it.
struct FloatColumn {
    path: ColumnPath,
    /// An element of a list (a spectrum's pixels, a trace's samples), not a scalar.
    in_list: bool,
}

/// The float columns of `schema` (list elements included).
fn measurement_columns(
    schema: &arrow::datatypes::Schema,
) -> Result<Vec<FloatColumn>, PersistError> {
    let descriptor = parquet::arrow::ArrowSchemaConverter::new().convert(schema)?;
    Ok(descriptor
        .columns()
        .iter()
        .filter(|c| {
            matches!(
                c.physical_type(),
                parquet::basic::Type::FLOAT | parquet::basic::Type::DOUBLE
            )
        })
        .map(|c| FloatColumn {
            path: c.path().clone(),
            in_list: c.max_rep_level() > 0,
        })
        .collect())
}

fn arrival_times(
    batch: &RecordBatch,
) -> Option<&arrow::array::PrimitiveArray<TimestampNanosecondType>> {
    batch
        .column_by_name("arrival_time_ns")?
        .as_primitive_opt::<TimestampNanosecondType>()
}

/// `YYYY-MM-DD` (UTC) of a ns timestamp.
fn date_of(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d")
        .to_string()
}

/// Splits batches into (date, run) partitions, keeping row order within each.
fn partition(batches: &[RecordBatch]) -> Result<Vec<Partition>, PersistError> {
    let mut parts: BTreeMap<(String, String), Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches {
        let Some(times) = arrival_times(batch) else {
            continue;
        };
        let runs = batch.column_by_name("run_id").map(|c| c.as_string::<i32>());
        let key_of = |row: usize| {
            let day = times.value(row).div_euclid(86_400_000_000_000);
            let run = runs.map_or("_none", |r| {
                if r.is_null(row) {
                    "_none"
                } else {
                    r.value(row)
                }
            });
            (day, run)
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let first = key_of(0);
        if (1..batch.num_rows()).all(|row| key_of(row) == first) {
            let key = (date_of(times.value(0)), first.1.to_string());
            parts.entry(key).or_default().push(batch.clone());
            continue;
        }
        let mut rows_of: BTreeMap<(i64, &str), Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            rows_of.entry(key_of(row)).or_default().push(row as u32);
        }
        for ((day, run), rows) in rows_of {
            let indices = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c.as_ref(), &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let taken = RecordBatch::try_new(batch.schema(), columns)?;
            parts
                .entry((date_of(day * 86_400_000_000_000), run.to_string()))
                .or_default()
                .push(taken);
        }
    }
    Ok(parts
        .into_iter()
        .map(|((date, run), batches)| Partition { date, run, batches })
        .collect())
}

/// Longest wait between two attempts at a failing snapshot.
const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
/// Attempts at a failing snapshot once the server is stopping, before it is left to the WAL.
const ATTEMPTS_WHILE_STOPPING: u32 = 3;

/// Runs the persister on its own thread: snapshots in, files out, strictly in order. A failed
/// snapshot is retried with back-off until it succeeds, and no later snapshot is persisted
/// before it. Once `stopping` is set, a snapshot that still fails after a few attempts ends the
/// thread: it and every later one stay in the WAL, replayed at the next start.
///
/// # Errors
/// The OS error if the thread cannot be started.
pub fn spawn(
    persister: Persister,
    snapshots: std::sync::mpsc::Receiver<Arc<Snapshot>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    std::thread::Builder::new()
        .name("flowdaq-persister".into())
        .spawn(move || {
            for snapshot in snapshots {
                let mut delay = std::time::Duration::from_millis(50);
                let mut attempts_while_stopping = 0;
                loop {
                    match persister.persist(&snapshot) {
                        Ok(files) => {
                            persister.health.persist_ok();
                            tracing::debug!(generation = snapshot.generation, files = files.len(), "persisted");
                            break;
                        }
                        Err(err) => {
                            persister.health.persist_failed(err.to_string());
                            if stopping.load(Ordering::Acquire) {
                                attempts_while_stopping += 1;
                                if attempts_while_stopping >= ATTEMPTS_WHILE_STOPPING {
                                    tracing::error!(%err, "persist failed while stopping; rows stay in the WAL for the next start");
                                    return;
                                }
                            }
                            tracing::error!(%err, retry_in_ms = delay.as_millis() as u64, "persist failed; retrying");
                            // Back-off between attempts, cut short when the server stops.
                            let until = std::time::Instant::now() + delay;
                            while std::time::Instant::now() < until && !stopping.load(Ordering::Acquire) {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                            }
                            delay = (delay * 2).min(MAX_RETRY_DELAY);
                        }
                    }
                }
            }
        })
}

/// Counts what goes through to the file, so the size is known without a `stat`.
struct CountingFile {
    inner: Box<dyn NewTableFile>,
    bytes: u64,
}

impl std::io::Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A persister over a fresh local data directory at `dir`, with its write buffer: the setup of
/// tests that need real Parquet files.
#[cfg(test)]
pub(crate) fn local_for_tests(
    dir: &std::path::Path,
    config: ParquetConfig,
) -> (DataPaths, Arc<WriteBuffer>, Persister) {
    let paths = DataPaths::new(dir);
    std::fs::create_dir_all(paths.wal_dir()).expect("wal dir");
    let storage = crate::storage::LocalStorage::shared();
    let buffer = Arc::new(WriteBuffer::new(
        crate::catalog::Catalog::default(),
        paths.clone(),
        storage.clone(),
    ));
    let persister = Persister::new(
        paths.clone(),
        config,
        buffer.clone(),
        storage,
        Default::default(),
    );
    (paths, buffer, persister)
}

#[cfg(test)]
pub(crate) mod tests;
