//! Delta Lake transaction logs beside flowdaq's Parquet files, so Spark, Trino, DuckDB and
//! Python `deltalake` read the tables consistently while flowdaq writes them.
//!
//! flowdaq's catalog stays the source of truth of its write path (WAL watermark, seq ledger,
//! which files count). Each flowdaq table directory (`tables/<table>/`) is also a Delta table,
//! partitioned by `date` and `run` like the files, and [`DeltaLog::sync`] brings its log in line
//! with a saved catalog: one commit per table whose files changed, adding the files the
//! catalog gained and removing those it lost (a persist adds, a compaction replaces, retention
//! removes), with the catalog's WAL watermark as the commit's application transaction
//! (`txn`, app id `flowdaq` or `flowdaq-<writer>`). Because a sync is a difference between the
//! catalog and the log, a sync that failed, or never ran before a crash, is made good by the
//! next one; nothing is committed twice. Commits are Delta's conditional ones, retried over
//! concurrent writers by Delta's conflict rules; a writer only ever adds and removes its own
//! files (`<writer>-<id>.parquet` when it has a writer name).

mod schema;
mod store;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, Remove, Transaction};
use deltalake_core::logstore::{default_logstore, LogStoreRef, StorageConfig};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError};
use flowdaq_schemas::tables::Table;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use url::Url;

pub use schema::{delta_schema, SchemaError, PARTITION_COLUMNS};
pub use store::{DeltaSyncCounters, DeltaSyncStats, DeltaTableStore, REMOVED_FILE_GRACE};

use crate::catalog::{Catalog, CatalogFile};
use crate::compactor::MERGED_SUFFIX;

/// Why the Delta logs could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum DeltaLogError {
    /// A Delta operation failed (the store, a conflict, a corrupt log).
    #[error("Delta table {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// The error.
        source: DeltaTableError,
    },
    /// A table's schema has no Delta form.
    #[error("Delta table {table}: {source}")]
    Schema {
        /// The table.
        table: String,
        /// The error.
        source: SchemaError,
    },
    /// A catalog path outside `tables/<table>/`.
    #[error("catalog path {0} is not a table file")]
    Path(String),
    /// The runtime that drives the log's requests is gone.
    #[error("Delta log runtime stopped")]
    Stopped,
}

/// What one [`DeltaLog::sync`] committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Commits made (one per table that changed).
    pub commits: usize,
    /// Files added to Delta logs.
    pub added_files: usize,
    /// Files removed from Delta logs.
    pub removed_files: usize,
}

/// The Delta logs of every table under one `tables/` root.
pub struct DeltaLog {
    root_store: Arc<dyn ObjectStore>,
    tables_url: Url,
    writer: Option<String>,
    runtime: LogRuntime,
    tables: Mutex<HashMap<Table, DeltaTable>>,
    /// When each table's log was last read for [`DeltaLog::foreign_files`].
    refreshed: Mutex<HashMap<Table, std::time::Instant>>,
    /// Tables the last successful sync found files of this writer in (committed, or to be
    /// removed); `None` until one succeeded.
    had_files: Mutex<Option<HashSet<Table>>>,
    /// When this server's commits removed each file (catalog path), since start.
    removed_at: Mutex<HashMap<String, std::time::Instant>>,
}

/// Commit conflicts with another writer's commit that a sync retries at once (each retry reads
/// the log again and commits the difference from there).
const CONFLICT_RETRIES: usize = 3;

/// How often queries read a table's Delta log again for other writers' files.
pub const FOREIGN_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A runtime for the logs' requests, shut down without waiting when the log is dropped.
struct LogRuntime(Option<tokio::runtime::Runtime>);

impl Drop for LogRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl DeltaLog {
    /// The logs of the tables under `tables_url` (a directory URL, `file:///data/tables/` or
    /// `s3://bucket/prefix/tables/`), reached through `root_store` (rooted at the URL's root).
    /// `writer` names this server among several writing the same tables.
    ///
    /// # Errors
    /// If the log's runtime cannot start.
    pub fn new(
        root_store: Arc<dyn ObjectStore>,
        tables_url: Url,
        writer: Option<String>,
    ) -> io::Result<DeltaLog> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowdaq-delta")
            .enable_all()
            .build()?;
        Ok(DeltaLog {
            root_store,
            tables_url,
            writer,
            runtime: LogRuntime(Some(runtime)),
            tables: Mutex::new(HashMap::new()),
            refreshed: Mutex::new(HashMap::new()),
            had_files: Mutex::new(None),
            removed_at: Mutex::new(HashMap::new()),
        })
    }

    /// The Delta table URL of `table`.
    pub fn table_url(&self, table: Table) -> Url {
        let mut url = self.tables_url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        // A table name is a plain identifier, so joining cannot fail or escape the root.
        url.join(&format!("{}/", table.name()))
            .unwrap_or_else(|_| self.tables_url.clone())
    }

    /// The application id of this writer's `txn` actions.
    pub fn app_id(&self) -> String {
        match &self.writer {
            Some(writer) => format!("flowdaq-{writer}"),
            None => "flowdaq".to_string(),
        }
    }

    /// Brings every table's Delta log in line with `catalog` (just saved): commits what it
    /// added and removed since the log last saw it. Tables whose files did not change get no
    /// commit; a table is created with its first file.
    ///
    /// # Errors
    /// The first table that failed; the others are still synced.
    pub fn sync(&self, catalog: &Catalog) -> Result<SyncReport, DeltaLogError> {
        let mut wanted: HashMap<Table, HashMap<String, &CatalogFile>> = HashMap::new();
        for file in &catalog.files {
            let (table, delta_path) = split_table_path(&file.path)?;
            wanted.entry(table).or_default().insert(delta_path, file);
        }
        let mut tables = self.lock_tables();
        let mut had_files = self
            .had_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut report = SyncReport::default();
        let mut first_error = None;
        let mut with_files = HashSet::new();
        for table in Table::ALL {
            let files = wanted.remove(&table).unwrap_or_default();
            if files.is_empty() {
                // A table this writer had no files in last time has none of its files to
                // remove now (after a start or a failure, every existing log is checked).
                if had_files.as_ref().is_some_and(|had| !had.contains(&table))
                    || !self.log_exists(&mut tables, table)
                {
                    continue;
                }
            }
            if !files.is_empty() {
                with_files.insert(table);
            }
            let mut conflicts = 0;
            let synced = loop {
                let synced =
                    self.sync_table(&mut tables, table, &files, catalog.wal_persisted_through);
                match &synced {
                    Err(DeltaLogError::Delta {
                        source: DeltaTableError::Transaction { .. },
                        ..
                    }) if conflicts < CONFLICT_RETRIES => {
                        // Another writer's commit won in a way Delta's rules do not retry
                        // (its removes, a read of the whole table): read the log again.
                        conflicts += 1;
                        tables.remove(&table);
                    }
                    _ => break synced,
                }
            };
            match synced {
                Ok(Some((added, removed))) => {
                    report.commits += 1;
                    report.added_files += added;
                    report.removed_files += removed;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "Delta log not brought in line with the catalog");
                    // The cached state may be behind a commit that landed: reload next time.
                    tables.remove(&table);
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => {
                *had_files = None;
                Err(err)
            }
            None => {
                *had_files = Some(with_files);
                Ok(report)
            }
        }
    }

    /// Whether the Delta log of its table names the catalog path `relative` as a live file,
    /// so it must not be deleted. `true` when that cannot be known (the log unreadable).
    pub fn names(&self, relative: &str) -> bool {
        let Ok((table, delta_path)) = split_table_path(relative) else {
            return false;
        };
        let mut tables = self.lock_tables();
        match self.loaded(&mut tables, table, false) {
            Ok(Some(loaded)) => live_paths(loaded).contains(&delta_path),
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(%err, path = relative, "cannot read the Delta log; the file is kept");
                true
            }
        }
    }

    /// Files the Delta log of `table` names, as catalog paths, every writer's.
    ///
    /// # Errors
    /// If the log cannot be read.
    pub fn live_files(&self, table: Table) -> Result<Vec<String>, DeltaLogError> {
        let mut tables = self.lock_tables();
        Ok(match self.loaded(&mut tables, table, true)? {
            Some(loaded) => {
                let mut files: Vec<String> = live_paths(loaded)
                    .into_iter()
                    .map(|path| format!("tables/{}/{path}", table.name()))
                    .collect();
                files.sort();
                files
            }
            None => Vec::new(),
        })
    }

    /// Whether this server's commit removed the catalog path `relative` from its Delta log
    /// less than `grace` ago: readers of the previous versions may still be reading it.
    pub fn removed_within(&self, relative: &str, grace: std::time::Duration) -> bool {
        let mut removed_at = self
            .removed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        removed_at.retain(|_, at| at.elapsed() < grace);
        removed_at.contains_key(relative)
    }

    /// Files of `table` that other writers committed to its Delta log, as catalog entries (rows,
    /// size, partitions and `arrival_time_ns` range from the log), so this server's queries
    /// read them beside its own. The log is read again at most once per
    /// [`FOREIGN_REFRESH`]; a query meanwhile sees the files as of the last read.
    ///
    /// # Errors
    /// If the log cannot be read.
    pub fn foreign_files(&self, table: Table) -> Result<Vec<CatalogFile>, DeltaLogError> {
        let mut tables = self.lock_tables();
        let refresh = {
            let mut refreshed = self
                .refreshed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = refreshed
                .get(&table)
                .is_none_or(|at| at.elapsed() >= FOREIGN_REFRESH);
            if due {
                refreshed.insert(table, std::time::Instant::now());
            }
            due
        };
        if !refresh && !tables.contains_key(&table) {
            // No log the last time it was looked for.
            return Ok(Vec::new());
        }
        let Some(loaded) = self.loaded(&mut tables, table, refresh)? else {
            return Ok(Vec::new());
        };
        let Ok(state) = loaded.snapshot() else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for file in state.log_data().iter() {
            let path = file.path();
            if self.owns(&path) || !written_by_flowdaq(&path) {
                continue;
            }
            let partitions = file.partition_values_map();
            let partition =
                |name: &str| partitions.get(name).cloned().flatten().unwrap_or_default();
            let (min_arrival_time_ns, max_arrival_time_ns) = file
                .stats()
                .as_deref()
                .and_then(arrival_time_range)
                .unwrap_or((i64::MIN, i64::MAX));
            files.push(CatalogFile {
                table: table.name().to_string(),
                path: format!("tables/{}/{path}", table.name()),
                rows: file.num_records().unwrap_or(0) as u64,
                size_bytes: u64::try_from(file.size()).unwrap_or(0),
                min_arrival_time_ns,
                max_arrival_time_ns,
                run_id: partition("run"),
                date: partition("date"),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn lock_tables(&self) -> MutexGuard<'_, HashMap<Table, DeltaTable>> {
        // Entries are replaced whole, so a poisoned map is still consistent.
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log_exists(&self, tables: &mut HashMap<Table, DeltaTable>, table: Table) -> bool {
        // Unreadable counts as existing, so the sync reports the error.
        !matches!(self.loaded(tables, table, false), Ok(None))
    }

    /// The table's log, loaded (and, with `refresh` or on first use, brought up to date), or
    /// `None` if the table has none yet.
    fn loaded<'a>(
        &self,
        tables: &'a mut HashMap<Table, DeltaTable>,
        table: Table,
        refresh: bool,
    ) -> Result<Option<&'a DeltaTable>, DeltaLogError> {
        let delta_error = |source| DeltaLogError::Delta {
            table: table.name().to_string(),
            source,
        };
        if let Some(loaded) = tables.get_mut(&table) {
            if refresh {
                let mut updated = loaded.clone();
                self.block_on(async move {
                    updated.update_incremental(None).await?;
                    Ok(updated)
                })
                .map_err(delta_error)
                .map(|updated| *loaded = updated)?;
            }
            return Ok(tables.get(&table));
        }
        let log_store = self.log_store(table);
        let loaded = self
            .block_on(async move {
                // A table without a log (on a disk, without even a directory) is no error.
                if !log_store.is_delta_table_location().await? {
                    return Ok(None);
                }
                let mut fresh = DeltaTable::new(log_store);
                fresh.load().await?;
                Ok(Some(fresh))
            })
            .map_err(delta_error)?;
        Ok(match loaded {
            Some(loaded) => Some(tables.entry(table).or_insert(loaded)),
            None => None,
        })
    }

    /// Commits the difference between the table's log and `files`; `(added, removed)` if
    /// there was one.
    fn sync_table(
        &self,
        tables: &mut HashMap<Table, DeltaTable>,
        table: Table,
        files: &HashMap<String, &CatalogFile>,
        wal_persisted_through: u64,
    ) -> Result<Option<(usize, usize)>, DeltaLogError> {
        let delta_error = |source| DeltaLogError::Delta {
            table: table.name().to_string(),
            source,
        };
        // The only writer knows the log from its own last commit; named writers read the
        // others' commits first. (Should another writer have committed after all, ours fails
        // as a conflict and is retried from a fresh read.)
        let refresh = self.writer.is_some();
        if self.loaded(tables, table, refresh)?.is_none() {
            let created = self.create(table)?;
            tables.insert(table, created);
        }
        let Some(current) = tables.get(&table) else {
            return Ok(None);
        };
        let live: HashSet<String> = live_paths(current)
            .into_iter()
            .filter(|path| self.owns(path))
            .collect();
        let added: Vec<(&String, &&CatalogFile)> = files
            .iter()
            .filter(|(path, _)| !live.contains(*path))
            .collect();
        let removed: Vec<&String> = live
            .iter()
            .filter(|path| !files.contains_key(*path))
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let has_arrival_time = table.schema().field_with_name("arrival_time_ns").is_ok();
        let compaction = compaction_paths(
            added.iter().map(|(path, _)| path.as_str()),
            removed.iter().map(|path| path.as_str()),
        );
        let data_change = |path: &str| !compaction.contains(path);
        let mut actions: Vec<Action> = Vec::with_capacity(added.len() + removed.len());
        for (path, file) in &added {
            actions.push(Action::Add(Add {
                path: (*path).clone(),
                partition_values: HashMap::from([
                    ("date".to_string(), Some(file.date.clone())),
                    ("run".to_string(), Some(file.run_id.clone())),
                ]),
                size: i64::try_from(file.size_bytes).unwrap_or(i64::MAX),
                modification_time: now_ms,
                data_change: data_change(path),
                stats: Some(file_stats(file, has_arrival_time)),
                ..Add::default()
            }));
        }
        for path in &removed {
            actions.push(Action::Remove(Remove {
                path: (*path).clone(),
                data_change: data_change(path),
                deletion_timestamp: Some(now_ms),
                extended_file_metadata: Some(false),
                ..Remove::default()
            }));
        }
        let operation = if removed.is_empty() {
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(PARTITION_COLUMNS.iter().map(|c| c.to_string()).collect()),
                predicate: None,
            }
        } else if removed.iter().all(|path| !data_change(path)) {
            DeltaOperation::Optimize {
                predicate: None,
                target_size: 0,
            }
        } else {
            DeltaOperation::Delete { predicate: None }
        };
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction {
                app_id: self.app_id(),
                version: i64::try_from(wal_persisted_through).unwrap_or(i64::MAX),
                last_updated: Some(now_ms),
            })
            .with_metadata([
                (
                    "flowdaq.wal_persisted_through".to_string(),
                    serde_json::Value::from(wal_persisted_through),
                ),
                (
                    "flowdaq.writer".to_string(),
                    serde_json::Value::from(self.app_id()),
                ),
            ]);
        let log_store = current.log_store();
        let mut snapshot_holder = current.clone();
        let counts = (added.len(), removed.len());
        let removed_paths: Vec<String> = removed
            .iter()
            .map(|path| format!("tables/{}/{path}", table.name()))
            .collect();
        let committed = self
            .block_on(async move {
                let state = snapshot_holder.snapshot()?.clone();
                let finalized = CommitBuilder::from(properties)
                    .with_actions(actions)
                    .build(Some(&state), log_store, operation)
                    .await?;
                snapshot_holder.state = Some(finalized.snapshot());
                Ok(snapshot_holder)
            })
            .map_err(delta_error)?;
        tables.insert(table, committed);
        let now = std::time::Instant::now();
        let mut removed_at = self
            .removed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        removed_at.extend(removed_paths.into_iter().map(|path| (path, now)));
        Ok(Some(counts))
    }

    /// Creates the table's log (version 0: protocol and schema), or loads it if another writer
    /// created it first.
    fn create(&self, table: Table) -> Result<DeltaTable, DeltaLogError> {
        let columns =
            schema::delta_columns(&table.schema()).map_err(|source| DeltaLogError::Schema {
                table: table.name().to_string(),
                source,
            })?;
        let log_store = self.log_store(table);
        let name = table.name().to_string();
        self.block_on(async move {
            let created = CreateBuilder::new()
                .with_log_store(log_store.clone())
                .with_table_name(name)
                .with_comment(
                    "written by flowdaq; time columns in nanoseconds since the Unix epoch",
                )
                .with_columns(columns)
                .with_partition_columns(PARTITION_COLUMNS)
                .with_save_mode(SaveMode::Ignore)
                // Version 0 or nothing: retried as version 1 after another writer's create,
                // it would replace that table's metadata under its other writers.
                .with_commit_properties(CommitProperties::default().with_max_retries(0))
                .await;
            match created {
                Ok(created) => Ok(created),
                // Another writer's version 0 landed between our check and our commit.
                Err(_) => {
                    let mut existing = DeltaTable::new(log_store);
                    existing.load().await?;
                    Ok(existing)
                }
            }
        })
        .map_err(|source| DeltaLogError::Delta {
            table: table.name().to_string(),
            source,
        })
    }

    fn log_store(&self, table: Table) -> LogStoreRef {
        let url = self.table_url(table);
        let prefix = StorePath::from_url_path(url.path()).unwrap_or_default();
        let prefixed: Arc<dyn ObjectStore> =
            Arc::new(PrefixStore::new(self.root_store.clone(), prefix));
        default_logstore(
            prefixed,
            self.root_store.clone(),
            &url,
            &StorageConfig::default(),
        )
    }

    /// Whether a file (its path in the Delta table) is this writer's to add and remove.
    fn owns(&self, delta_path: &str) -> bool {
        crate::paths::file_of(self.writer.as_deref(), delta_path)
    }

    fn block_on<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, DeltaTableError>> + Send + 'static,
    ) -> Result<T, DeltaTableError> {
        let Some(runtime) = &self.runtime.0 else {
            return Err(DeltaTableError::Generic("Delta log runtime stopped".into()));
        };
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = done_tx.send(work.await);
        });
        done_rx
            .recv()
            .unwrap_or_else(|_| Err(DeltaTableError::Generic("Delta log request dropped".into())))
    }
}

impl std::fmt::Debug for DeltaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaLog")
            .field("tables_url", &self.tables_url.as_str())
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

/// `tables/<table>/<rest>` as the table and `<rest>`, the file's path in the Delta table.
fn split_table_path(relative: &str) -> Result<(Table, String), DeltaLogError> {
    let bad = || DeltaLogError::Path(relative.to_string());
    let rest = relative.strip_prefix("tables/").ok_or_else(bad)?;
    let (name, path) = rest.split_once('/').ok_or_else(bad)?;
    let table = Table::from_name(name).ok_or_else(bad)?;
    if path.is_empty() || path.starts_with("_delta_log/") {
        return Err(bad());
    }
    Ok((table, path.to_string()))
}

/// Paths (in the Delta table) of the files its loaded log names.
fn live_paths(table: &DeltaTable) -> HashSet<String> {
    match table.snapshot() {
        Ok(state) => state
            .log_data()
            .iter()
            .map(|file| file.path().into_owned())
            .collect(),
        Err(_) => HashSet::new(),
    }
}

/// The paths of a difference that belong to compactions, not changes of data: a merged file
/// added under its `.merged` name and the files of its directory removed with it (the files
/// it replaces), and a finished merge (its final name added, its `.merged` name removed).
/// Streaming readers skip them (`dataChange: false`); everything else is a change of data.
fn compaction_paths<'a>(
    added: impl Iterator<Item = &'a str> + Clone,
    removed: impl Iterator<Item = &'a str> + Clone,
) -> HashSet<&'a str> {
    let directory = |path: &'a str| path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let removed_set: HashSet<&str> = removed.clone().collect();
    let mut compaction = HashSet::new();
    let mut merged_dirs = HashSet::new();
    for path in added {
        if path.ends_with(MERGED_SUFFIX) {
            compaction.insert(path);
            merged_dirs.insert(directory(path));
        } else if let Some(merged) = removed_set.get(format!("{path}{MERGED_SUFFIX}").as_str()) {
            compaction.insert(path);
            compaction.insert(*merged);
        }
    }
    for path in removed {
        if !path.ends_with(MERGED_SUFFIX) && merged_dirs.contains(directory(path)) {
            compaction.insert(path);
        }
    }
    compaction
}

/// Whether a file of a Delta table is one a flowdaq server wrote (`<digits>.parquet…` or
/// `<writer>-<digits>.parquet…`): only those are read as other writers' files.
fn written_by_flowdaq(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    crate::paths::file_of(None, name)
        || name
            .rsplit_once('-')
            .is_some_and(|(writer, _)| crate::paths::file_of(Some(writer), name))
}

/// The `arrival_time_ns` range of a file's Delta statistics, if they hold it.
fn arrival_time_range(stats: &str) -> Option<(i64, i64)> {
    let stats: serde_json::Value = serde_json::from_str(stats).ok()?;
    Some((
        stats["minValues"]["arrival_time_ns"].as_i64()?,
        stats["maxValues"]["arrival_time_ns"].as_i64()?,
    ))
}

/// A file's Delta statistics: its row count, and the range of `arrival_time_ns` for data
/// skipping where the table has that column.
fn file_stats(file: &CatalogFile, has_arrival_time: bool) -> String {
    let stats = if has_arrival_time {
        serde_json::json!({
            "numRecords": file.rows,
            "minValues": { "arrival_time_ns": file.min_arrival_time_ns },
            "maxValues": { "arrival_time_ns": file.max_arrival_time_ns },
            "nullCount": { "arrival_time_ns": 0 },
        })
    } else {
        serde_json::json!({ "numRecords": file.rows })
    };
    stats.to_string()
}

#[cfg(test)]
mod tests;
