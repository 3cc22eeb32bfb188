//! Compaction and retention: the background task that keeps the Parquet layout fit for years.
//!
//! Every persist writes one file per table, date and run, so a long run leaves thousands of
//! small files that each query must open. Each round merges the small files of one table, date
//! and run (catalog order, so rows keep their persist order) into a file near
//! `target_file_bytes`, and drops the files of tables whose rows are older than their
//! `retention` days. Ingest never waits for it: it reads and writes files on its own thread and
//! takes the catalog only for the swap.
//!
//! Readers never see a half-done change:
//! - flowdaq's own queries read the catalog, swapped atomically (one save, one swap under the
//!   buffer's lock). A merged file enters the catalog under a name a directory glob does not
//!   match (`.parquet.merged`), so readers of the files (`read_parquet('.../*.parquet')`) keep
//!   seeing the files it replaces, which stay on disk for a grace period (the query time limit
//!   and a margin) so that queries planned before the swap can still open them.
//! - after the grace the merged file is linked (copied, in an object store) under its
//!   `.parquet` name, the catalog swapped
//!   to that name, and the replaced files deleted; glob readers see both only for the
//!   milliseconds of that swap. The `.merged` name is removed after another grace.
//!
//! A crash at any step leaves the catalog naming a complete set of files: start-up removes the
//! files it does not list and finishes any merge it names under its `.merged` name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::catalog::CatalogFile;
use crate::config::CompactionConfig;
use crate::paths::DataPaths;
use crate::persister::{FileTarget, PersistError, Persister};
use crate::table_store::SharedTableStore;
use crate::write_buffer::WriteBuffer;

/// The suffix of a merged file until its grace has passed.
pub(crate) const MERGED_SUFFIX: &str = ".merged";

/// Counters of the compactor, for `/metrics`.
#[derive(Debug, Default)]
pub struct CompactionCounters {
    rounds: AtomicU64,
    merges: AtomicU64,
    files_merged: AtomicU64,
    files_expired: AtomicU64,
    rows_expired: AtomicU64,
    errors: AtomicU64,
}

/// A snapshot of [`CompactionCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompactionSnapshot {
    /// Rounds run.
    pub rounds: u64,
    /// Merged files written.
    pub merges: u64,
    /// Small files replaced by merged ones.
    pub files_merged: u64,
    /// Files dropped by retention.
    pub files_expired: u64,
    /// Rows in the files dropped by retention.
    pub rows_expired: u64,
    /// Steps that failed (retried next round).
    pub errors: u64,
}

impl CompactionCounters {
    /// Current values.
    pub fn snapshot(&self) -> CompactionSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CompactionSnapshot {
            rounds: get(&self.rounds),
            merges: get(&self.merges),
            files_merged: get(&self.files_merged),
            files_expired: get(&self.files_expired),
            rows_expired: get(&self.rows_expired),
            errors: get(&self.errors),
        }
    }
}

/// A merged file in the catalog under its `.merged` name, and the files it replaced.
#[derive(Debug)]
struct PendingMerge {
    merged: CatalogFile,
    replaced: Vec<String>,
    since: Instant,
}

/// The compactor; see the module doc.
pub struct Compactor {
    writer: Persister,
    buffer: Arc<WriteBuffer>,
    tables: SharedTableStore,
    config: CompactionConfig,
    /// Per table, rows older than this many ns are dropped.
    retention_ns: Vec<(String, i64)>,
    grace: Duration,
    pending: Vec<PendingMerge>,
    /// Files out of the catalog (relative paths), deleted once their grace has passed.
    doomed: Vec<(String, Instant)>,
    /// Files written for a catalog change whose save failed: a save reported failed may still
    /// have reached the store, so they stay until a later save succeeds (then they are doomed,
    /// unless that catalog names them).
    unsure: Vec<String>,
    /// Whether each file read so far holds a layout of its table that the current one takes
    /// (the current layout, or an earlier one whose rows are conformed to it: added columns
    /// become nulls). Read once per file; a file of an unknown layout is never merged.
    mergeable: std::collections::HashMap<String, bool>,
    counters: Arc<CompactionCounters>,
}

impl Compactor {
    /// A compactor writing with `writer` (the persister's encodings and table store) into
    /// its buffer's catalog; `retention` is days per table name, `grace` how long a file out
    /// of the catalog stays.
    pub fn new(
        writer: Persister,
        config: CompactionConfig,
        retention: &std::collections::BTreeMap<String, f64>,
        grace: Duration,
        counters: Arc<CompactionCounters>,
    ) -> Compactor {
        let buffer = writer.buffer();
        Compactor {
            writer,
            tables: buffer.tables(),
            buffer,
            config,
            retention_ns: retention
                .iter()
                .map(|(table, days)| (table.clone(), (days * 86_400e9) as i64))
                .collect(),
            grace,
            pending: Vec::new(),
            doomed: Vec::new(),
            unsure: Vec::new(),
            mergeable: Default::default(),
            counters,
        }
    }

    /// Finishes, at once, every merge the catalog names under its `.merged` name: for start-up,
    /// before any query can hold the files.
    pub fn finish_merges_at_start(&mut self) {
        for file in self.buffer.catalog_files() {
            if file.path.ends_with(MERGED_SUFFIX) {
                let merge = PendingMerge {
                    merged: file,
                    replaced: Vec::new(),
                    since: Instant::now(),
                };
                if let Err(err) = self.finish(&merge, Instant::now()) {
                    tracing::warn!(%err, "cannot finish a merge at start; retried later");
                    self.pending.push(merge);
                }
            }
        }
        self.delete_doomed(None);
    }

    /// One round at `now_ns` (wall clock, for retention) and `now` (for graces).
    pub fn round(&mut self, now_ns: i64, now: Instant) {
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        self.delete_doomed(Some(now));
        self.finish_due_merges(now);
        if let Err(err) = self.expire(now_ns, now) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%err, "retention failed; retried next round");
        }
        if let Err(err) = self.merge_small_files(now) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%err, "compaction failed; retried next round");
        }
    }

    /// Runs rounds every `interval` until `stop` is dropped or sent to.
    pub fn run(mut self, interval: Duration, stop: std::sync::mpsc::Receiver<()>) {
        loop {
            match stop.recv_timeout(interval) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            self.round(now_ns, Instant::now());
        }
    }

    fn delete_doomed(&mut self, now: Option<Instant>) {
        if self.doomed.is_empty() {
            return;
        }
        let grace = self.grace;
        let tables = self.tables.clone();
        // Whatever doomed it, a file the catalog names now is never deleted.
        let catalogued = self.catalogued_paths();
        self.doomed.retain(|(path, since)| {
            if catalogued.contains(path) {
                tracing::warn!(%path, "a file out of the catalog is back in it: kept");
                return false;
            }
            if now.is_some_and(|now| now.duration_since(*since) < grace) {
                return true;
            }
            match tables.remove(path) {
                Ok(()) => false,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
                Err(err) => {
                    tracing::warn!(%path, %err, "cannot delete a file out of the catalog; retried");
                    true
                }
            }
        });
    }

    /// The paths the catalog names now.
    fn catalogued_paths(&self) -> std::collections::HashSet<String> {
        self.buffer
            .catalog_files()
            .into_iter()
            .map(|f| f.path)
            .collect()
    }

    /// After a successful catalog save: the files of failed saves that it does not name are
    /// out of the catalog for good.
    fn doom_unsure(&mut self, now: Instant) {
        if self.unsure.is_empty() {
            return;
        }
        let catalogued = self.catalogued_paths();
        // A pending merge's final name is copied again when its finish is retried: not doomed.
        let retried: std::collections::HashSet<&str> = self
            .pending
            .iter()
            .filter_map(|merge| merge.merged.path.strip_suffix(MERGED_SUFFIX))
            .collect();
        let (keep, doom): (Vec<String>, Vec<String>) = std::mem::take(&mut self.unsure)
            .into_iter()
            .filter(|path| !catalogued.contains(path))
            .partition(|path| retried.contains(path.as_str()));
        self.unsure = keep;
        self.doomed.extend(doom.into_iter().map(|path| (path, now)));
    }

    fn finish_due_merges(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.pending);
        for merge in pending {
            if now.duration_since(merge.since) < self.grace {
                self.pending.push(merge);
                continue;
            }
            if let Err(err) = self.finish(&merge, now) {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%err, "cannot finish a merge; retried next round");
                self.pending.push(merge);
            }
        }
    }

    /// Links (or copies) the merged file under its `.parquet` name, swaps the catalog to it,
    /// deletes the replaced files and dooms the `.merged` name.
    fn finish(&mut self, merge: &PendingMerge, now: Instant) -> Result<(), PersistError> {
        let merged_relative = &merge.merged.path;
        let final_relative = merged_relative
            .strip_suffix(MERGED_SUFFIX)
            .unwrap_or(merged_relative)
            .to_string();
        self.tables
            .copy(merged_relative, &final_relative)
            .map_err(|source| PersistError::Io {
                path: final_relative.clone(),
                source,
            })?;
        let renamed_path = final_relative.clone();
        let renamed = CatalogFile {
            path: final_relative,
            ..merge.merged.clone()
        };
        if let Err(err) = self
            .buffer
            .replace_files(std::slice::from_ref(merged_relative), vec![renamed])
        {
            self.unsure.push(renamed_path);
            return Err(err.into());
        }
        self.doom_unsure(now);
        // Out of the catalog since the merge, a grace ago: deleted now.
        for replaced in &merge.replaced {
            self.doomed.push((replaced.clone(), merge.since));
        }
        self.doomed.push((merged_relative.clone(), now));
        self.delete_doomed(Some(now));
        Ok(())
    }

    /// Drops the files of tables with retention whose newest row is older than it.
    fn expire(&mut self, now_ns: i64, now: Instant) -> Result<(), PersistError> {
        if self.retention_ns.is_empty() {
            return Ok(());
        }
        let expired: Vec<CatalogFile> = self
            .buffer
            .catalog_files()
            .into_iter()
            .filter(|f| !f.path.ends_with(MERGED_SUFFIX))
            .filter(|f| {
                self.retention_ns.iter().any(|(table, keep_ns)| {
                    *table == f.table && f.max_arrival_time_ns < now_ns.saturating_sub(*keep_ns)
                })
            })
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = expired.iter().map(|f| f.path.clone()).collect();
        self.buffer.replace_files(&paths, Vec::new())?;
        self.doom_unsure(now);
        self.counters
            .files_expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        self.counters.rows_expired.fetch_add(
            expired.iter().map(|f| f.rows).sum::<u64>(),
            Ordering::Relaxed,
        );
        for file in expired {
            tracing::info!(path = %file.path, rows = file.rows, "dropped by retention");
            self.doomed.push((file.path.clone(), now));
        }
        Ok(())
    }

    /// Merges the small files of each (table, date, run) that has at least `min_files`.
    fn merge_small_files(&mut self, now: Instant) -> Result<(), PersistError> {
        let small = self.config.target_file_bytes / 2;
        let mut groups: std::collections::BTreeMap<(String, String, String), Vec<CatalogFile>> =
            Default::default();
        let files = self.buffer.catalog_files();
        let catalogued: std::collections::HashSet<&str> =
            files.iter().map(|f| f.path.as_str()).collect();
        self.mergeable
            .retain(|path, _| catalogued.contains(path.as_str()));
        for file in files {
            if file.size_bytes < small
                && !file.path.ends_with(MERGED_SUFFIX)
                && self.mergeable.get(&file.path) != Some(&false)
            {
                groups
                    .entry((file.table.clone(), file.date.clone(), file.run_id.clone()))
                    .or_default()
                    .push(file);
            }
        }
        for ((table, _, _), files) in groups {
            let Some(table) = Table::from_name(&table) else {
                continue;
            };
            let mut picked = Vec::new();
            let mut bytes = 0;
            for file in files {
                if bytes >= self.config.target_file_bytes {
                    break;
                }
                if !self.is_mergeable(table, &file) {
                    continue;
                }
                bytes += file.size_bytes;
                picked.push(file);
            }
            if picked.len() >= self.config.min_files {
                self.merge(table, picked, now)?;
            }
        }
        Ok(())
    }

    /// Whether `file`'s rows can be written in `table`'s current layout: its Arrow schema, read
    /// from the footer once, conforms (an earlier version's file is merged, its missing
    /// columns as nulls). A file that cannot be read now is left out of this round only.
    fn is_mergeable(&mut self, table: Table, file: &CatalogFile) -> bool {
        if let Some(known) = self.mergeable.get(&file.path) {
            return *known;
        }
        let schema = self
            .tables
            .read(&file.path)
            .ok()
            .and_then(|bytes| ParquetRecordBatchReaderBuilder::try_new(bytes).ok())
            .map(|b| b.schema().clone());
        match schema {
            Some(schema) => {
                let mergeable = table.conform(RecordBatch::new_empty(schema)).is_ok();
                if !mergeable {
                    tracing::warn!(path = %file.path, "a file of an unknown layout is not merged");
                }
                self.mergeable.insert(file.path.clone(), mergeable);
                mergeable
            }
            None => false,
        }
    }

    /// Writes `files` (one table, date and run) as one `.merged` file and swaps it in.
    fn merge(
        &mut self,
        table: Table,
        files: Vec<CatalogFile>,
        now: Instant,
    ) -> Result<(), PersistError> {
        let first = &files[0];
        let id = self.buffer.allocate_file_ids(1);
        let relative = DataPaths::parquet_relative(
            table.name(),
            &first.date,
            &first.run_id,
            self.tables.writer(),
            id,
        ) + MERGED_SUFFIX;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let size: u64 = files.iter().map(|f| f.size_bytes).sum();
        let target = FileTarget {
            table,
            relative,
            date: first.date.clone(),
            run: first.run_id.clone(),
            // Arrow rows are several times their compressed Parquet size.
            bytes_per_row: ((4 * size) / rows.max(1)).max(1) as usize,
        };
        let tables = self.tables.clone();
        let batches = files.iter().flat_map(move |file| {
            let reader = tables
                .read(&file.path)
                .map_err(|source| PersistError::Io {
                    path: file.path.clone(),
                    source,
                })
                .and_then(|bytes| Ok(ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?));
            let batches: Box<dyn Iterator<Item = Result<RecordBatch, PersistError>>> = match reader
            {
                // Rows of an earlier layout take the current one (added columns as nulls).
                Ok(reader) => Box::new(
                    reader.map(move |b| Ok(table.conform(b.map_err(PersistError::from)?)?)),
                ),
                Err(err) => Box::new(std::iter::once(Err(err))),
            };
            batches
        });
        let mut written = Vec::new();
        let result = self
            .writer
            .write_batches(target, batches, &mut written)
            .and_then(|merged| {
                if merged.rows != rows {
                    return Err(PersistError::Io {
                        path: merged.path.clone(),
                        source: std::io::Error::other(format!(
                            "merged {} rows, the files hold {rows}",
                            merged.rows
                        )),
                    });
                }
                let replaced: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
                self.buffer.replace_files(&replaced, vec![merged.clone()])?;
                Ok((merged, replaced))
            });
        match result {
            Ok((merged, replaced)) => {
                self.doom_unsure(now);
                self.counters.merges.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .files_merged
                    .fetch_add(replaced.len() as u64, Ordering::Relaxed);
                tracing::info!(path = %merged.path, files = replaced.len(), rows, "merged small files");
                self.pending.push(PendingMerge {
                    merged,
                    replaced,
                    since: now,
                });
                Ok(())
            }
            Err(err) => {
                if matches!(err, PersistError::Catalog(_)) {
                    self.unsure.extend(written);
                } else {
                    for path in written {
                        let _ = self.tables.remove(&path);
                    }
                }
                Err(err)
            }
        }
    }
}

/// Starts the compactor's thread: a round every `interval` until the returned sender is
/// dropped.
///
/// # Errors
/// If the thread cannot be started.
pub fn spawn(
    compactor: Compactor,
    interval: Duration,
) -> std::io::Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("flowdaq-compactor".into())
        .spawn(move || compactor.run(interval, stop_rx))?;
    Ok((stop_tx, handle))
}

#[cfg(test)]
mod tests;
