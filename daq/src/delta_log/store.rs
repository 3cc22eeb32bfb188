//! A table store that keeps the Delta logs in line with every catalog it saves.
//!
//! The persister, the compactor, retention and start-up recovery all change files through a
//! [`TableStore`]; wrapping the store is the one place that sees every catalog save, and every
//! file deletion. A saved catalog is followed by a [`DeltaLog::sync`]; a failed sync does not
//! fail the save (the catalog, which holds the WAL watermark, is what an acknowledgement
//! depends on), and the next save's sync commits what this one could not. A file the Delta log
//! still names is never deleted: Delta readers would find it gone. Its deletion fails, and the
//! caller (the compactor's doomed list, the persister's leftovers) tries again later, once the
//! log's remove action is committed.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;

use super::DeltaLog;
use crate::catalog::{Catalog, CatalogError};
use crate::table_store::{NewTableFile, SharedTableStore, TableFileReader, TableStore};

/// A [`TableStore`] whose catalog saves are mirrored into Delta logs; see the module doc.
pub struct DeltaTableStore {
    inner: SharedTableStore,
    log: Arc<DeltaLog>,
    counters: Arc<DeltaSyncCounters>,
    reader_grace: Duration,
}

/// How long a file stays after this server's commit removed it from its Delta log, for readers
/// of the versions before (a Delta reader lists a version's files, then reads them).
pub const REMOVED_FILE_GRACE: Duration = Duration::from_secs(60);

/// Counts of the Delta syncs since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeltaSyncCounters {
    commits: AtomicU64,
    failures: AtomicU64,
    behind: AtomicBool,
}

impl DeltaSyncCounters {
    /// Current values.
    pub fn snapshot(&self) -> DeltaSyncStats {
        DeltaSyncStats {
            commits: self.commits.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            behind: self.behind.load(Ordering::Relaxed),
        }
    }
}

/// How the Delta logs have kept up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeltaSyncStats {
    /// Delta commits made since start.
    pub commits: u64,
    /// Syncs that failed since start (each retried by the next catalog save).
    pub failures: u64,
    /// The last sync failed: the Delta logs lack a change the catalog has.
    pub behind: bool,
}

impl DeltaTableStore {
    /// `inner`, with the Delta logs of `log` kept in line with its catalog, counted in
    /// `counters`.
    pub fn new(
        inner: SharedTableStore,
        log: Arc<DeltaLog>,
        counters: Arc<DeltaSyncCounters>,
    ) -> DeltaTableStore {
        DeltaTableStore {
            inner,
            log,
            counters,
            reader_grace: REMOVED_FILE_GRACE,
        }
    }

    /// With files kept `grace` after their removal from the log (instead of
    /// [`REMOVED_FILE_GRACE`]).
    pub fn with_reader_grace(mut self, grace: Duration) -> DeltaTableStore {
        self.reader_grace = grace;
        self
    }

    /// The Delta logs.
    pub fn log(&self) -> &Arc<DeltaLog> {
        &self.log
    }

    /// Commits and failures since start.
    pub fn sync_stats(&self) -> DeltaSyncStats {
        self.counters.snapshot()
    }

    /// Brings the Delta logs in line with `catalog` (at start-up: a crash may have come between
    /// a catalog save and its sync).
    pub fn sync(&self, catalog: &Catalog) {
        match self.log.sync(catalog) {
            Ok(report) => {
                self.counters.behind.store(false, Ordering::Relaxed);
                self.counters
                    .commits
                    .fetch_add(report.commits as u64, Ordering::Relaxed);
                if report.commits > 0 {
                    tracing::debug!(
                        commits = report.commits,
                        added = report.added_files,
                        removed = report.removed_files,
                        "Delta logs brought in line with the catalog"
                    );
                }
            }
            Err(err) => {
                self.counters.behind.store(true, Ordering::Relaxed);
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%err, "Delta logs behind the catalog; the next save retries");
            }
        }
    }
}

impl TableStore for DeltaTableStore {
    fn describe(&self) -> String {
        format!("{} (with Delta Lake logs)", self.inner.describe())
    }

    fn writer(&self) -> Option<&str> {
        self.inner.writer()
    }

    fn load_catalog(&self) -> Result<Catalog, CatalogError> {
        self.inner.load_catalog()
    }

    fn save_catalog(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        self.inner.save_catalog(catalog)?;
        self.sync(catalog);
        Ok(())
    }

    fn create(&self, relative: &str) -> io::Result<Box<dyn NewTableFile>> {
        self.inner.create(relative)
    }

    fn read(&self, relative: &str) -> io::Result<TableFileReader> {
        self.inner.read(relative)
    }

    fn copy(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.copy(from, to)
    }

    fn remove(&self, relative: &str) -> io::Result<()> {
        if self.log.names(relative) {
            return Err(io::Error::other(format!(
                "{relative} is still named by its Delta log; it is deleted once the log removes it"
            )));
        }
        if self.log.removed_within(relative, self.reader_grace) {
            return Err(io::Error::other(format!(
                "{relative} left its Delta log less than {:?} ago; kept for readers of older versions",
                self.reader_grace
            )));
        }
        self.inner.remove(relative)
    }

    fn list_table_files(&self) -> io::Result<Vec<String>> {
        let mut files = self.inner.list_table_files()?;
        files.retain(|file| !file.contains("/_delta_log/"));
        Ok(files)
    }

    fn scan_url(&self) -> ObjectStoreUrl {
        self.inner.scan_url()
    }

    fn scan_location(&self, relative: &str) -> String {
        self.inner.scan_location(relative)
    }

    fn query_store(&self) -> Option<Arc<dyn object_store::ObjectStore>> {
        self.inner.query_store()
    }

    fn other_writers_files(
        &self,
        table: flowdaq_schemas::Table,
    ) -> io::Result<Vec<crate::catalog::CatalogFile>> {
        if self.inner.writer().is_none() {
            return Ok(Vec::new());
        }
        self.log.foreign_files(table).map_err(io::Error::other)
    }

    fn recovered(&self, catalog: &Catalog) {
        self.sync(catalog);
    }

    fn tables_root(&self) -> io::Result<(Arc<dyn object_store::ObjectStore>, url::Url)> {
        self.inner.tables_root()
    }
}
