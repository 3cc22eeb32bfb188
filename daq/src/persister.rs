//! The persister: turns a buffer snapshot into Parquet files, then retires its WAL segments.
//!
//! Files are zstd-compressed, partitioned by table / date / run, written under a temporary
//! name, fsynced and renamed into place; only then does the catalog learn of them, and only
//! after the catalog is saved are WAL segments deleted. A crash at any point leaves either the
//! WAL or the catalog holding every row; stray files not in the catalog are removed at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, UInt32Array};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use flowdaq_schemas::{Table, SCHEMA_VERSION_KEY};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::catalog::{CatalogError, CatalogFile};
use crate::config::ParquetConfig;
use crate::paths::DataPaths;
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
}

/// Rows of one (date, run) partition of one table.
struct Partition {
    date: String,
    run: String,
    batches: Vec<RecordBatch>,
}

impl Persister {
    /// A persister writing under `paths` and completing into `buffer`.
    pub fn new(paths: DataPaths, config: ParquetConfig, buffer: Arc<WriteBuffer>) -> Persister {
        Persister {
            paths,
            config,
            buffer,
        }
    }

    /// Persists one snapshot: files, catalog, then WAL segments.
    ///
    /// # Errors
    /// [`PersistError`]; nothing acknowledged is lost (the WAL still holds it).
    pub fn persist(&self, snapshot: &Snapshot) -> Result<Vec<CatalogFile>, PersistError> {
        let mut partitions: Vec<(Table, Partition)> = Vec::new();
        for (table, batches) in &snapshot.batches {
            for partition in partition(batches)? {
                partitions.push((*table, partition));
            }
        }
        let first_id = self.buffer.allocate_file_ids(partitions.len() as u64);
        let mut files = Vec::with_capacity(partitions.len());
        for (offset, (table, partition)) in partitions.into_iter().enumerate() {
            files.push(self.write_file(table, partition, first_id + offset as u64)?);
        }
        self.buffer
            .complete(snapshot.generation, files.clone(), snapshot.wal_through)?;
        wal::remove_segments_through(&self.paths.wal_dir(), snapshot.wal_through)?;
        Ok(files)
    }

    fn write_file(
        &self,
        table: Table,
        partition: Partition,
        file_id: u64,
    ) -> Result<CatalogFile, PersistError> {
        let relative =
            DataPaths::parquet_relative(table.name(), &partition.date, &partition.run, file_id);
        let path = self.paths.resolve(&relative);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PersistError::Io { path, source }
        };
        let dir = path.parent().unwrap_or(self.paths.root()).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let temp = path.with_extension("parquet.tmp");
        let rows: usize = partition.batches.iter().map(RecordBatch::num_rows).sum();
        let bytes: usize = partition
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let bytes_per_row = (bytes / rows.max(1)).max(1);
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
        {
            let file = std::fs::File::create(&temp).map_err(io(&temp))?;
            let mut writer = ArrowWriter::try_new(file, schema, Some(properties))?;
            for batch in &partition.batches {
                let times = arrival_times(batch);
                if let Some(times) = times {
                    for &t in times.values() {
                        min_time = min_time.min(t);
                        max_time = max_time.max(t);
                    }
                }
                writer.write(batch)?;
            }
            let file = writer.into_inner()?;
            file.sync_all().map_err(io(&temp))?;
        }
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        wal::sync_dir(&dir)?;
        let size_bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
        Ok(CatalogFile {
            table: table.name().to_string(),
            path: relative,
            rows: rows as u64,
            size_bytes,
            min_arrival_time_ns: min_time,
            max_arrival_time_ns: max_time,
            run_id: partition.run,
            date: partition.date,
        })
    }
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

/// Runs the persister on its own thread: snapshots in, files out, in order. A failed snapshot
/// is retried with back-off; if the channel closes while it still fails, it is left to the WAL
/// (replayed at the next start), which loses nothing.
///
/// # Errors
/// The OS error if the thread cannot be started.
pub fn spawn(
    persister: Persister,
    snapshots: std::sync::mpsc::Receiver<Arc<Snapshot>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("flowdaq-persister".into())
        .spawn(move || {
            for snapshot in snapshots {
                let mut attempt = 0u32;
                loop {
                    match persister.persist(&snapshot) {
                        Ok(files) => {
                            tracing::debug!(generation = snapshot.generation, files = files.len(), "persisted");
                            break;
                        }
                        Err(err) if attempt < 5 => {
                            attempt += 1;
                            tracing::error!(%err, attempt, "persist failed; retrying");
                            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
                        }
                        Err(err) => {
                            tracing::error!(%err, "persist failed; rows stay in the WAL for the next start");
                            break;
                        }
                    }
                }
            }
        })
}

/// Removes Parquet files (and temp files) under `tables/` that the catalog does not list:
/// leftovers of a crash between writing a file and saving the catalog.
pub fn remove_strays(paths: &DataPaths, known: &[CatalogFile]) -> usize {
    let known: std::collections::HashSet<std::path::PathBuf> =
        known.iter().map(|f| paths.resolve(&f.path)).collect();
    let mut removed = 0;
    let mut stack = vec![paths.tables_dir()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !known.contains(&path) && std::fs::remove_file(&path).is_ok() {
                tracing::warn!(path = %path.display(), "removed a file the catalog does not list");
                removed += 1;
            }
        }
    }
    removed
}
