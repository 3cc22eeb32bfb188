//! Where the Parquet files and the catalog live: the data directory, or an object store.
//!
//! The WAL always stays on the local disk (it is what makes an acknowledgement durable); the
//! files that are done with it — Parquet files and the catalog that names them — go through a
//! [`TableStore`]. [`LocalTableStore`] keeps them under the data directory (fsynced, renamed
//! into place, through [`crate::storage::Storage`] so tests can inject disk faults);
//! [`ObjectTableStore`] puts them in an S3-compatible bucket, where a PUT is atomic. The
//! persister, the compactor and the query engine see only this trait, so both layouts share
//! every rule about when a file counts.

mod local;
mod object;

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use parquet::file::reader::{ChunkReader, Length};

pub use local::LocalTableStore;
pub(crate) use object::check_s3_url;
pub use object::{ObjectTableStore, S3Settings};

use crate::catalog::{Catalog, CatalogError};

/// Shared handle to the table store.
pub type SharedTableStore = Arc<dyn TableStore>;

/// A file being written; nothing is visible under its name until [`NewTableFile::commit`].
/// Dropped uncommitted, it leaves nothing behind (best effort: start-up removes what the
/// catalog does not list).
pub trait NewTableFile: Write + Send {
    /// Makes the written bytes durable and visible under the file's name, at once.
    ///
    /// # Errors
    /// The I/O or store error; the file may still have landed (a PUT whose answer was lost),
    /// which is harmless: a file no catalog names is never read, and start-up removes it.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// Parquet files and the catalog of one flowdaq data set. Paths are relative to its root
/// (`tables/<table>/date=…/run=…/<id>.parquet`, as [`crate::paths::DataPaths`] spells them).
pub trait TableStore: Send + Sync {
    /// Where the files are, for logs (`/data/flowdaq`, `s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// This server's name among several writers of the same tables (see
    /// [`crate::paths::file_of`]); `None` for the only writer.
    fn writer(&self) -> Option<&str>;

    /// The catalog, or an empty one if none was saved yet.
    ///
    /// # Errors
    /// [`CatalogError`] if it exists but cannot be read or parsed.
    fn load_catalog(&self) -> Result<Catalog, CatalogError>;

    /// Replaces the catalog atomically: a reader (or a crash) sees the old one or the new one.
    ///
    /// # Errors
    /// [`CatalogError::Io`]; which catalog is in place is then unknown (the new one may have
    /// landed before the failure), so the caller keeps every file either names.
    fn save_catalog(&self, catalog: &Catalog) -> Result<(), CatalogError>;

    /// Starts writing the file `relative`.
    ///
    /// # Errors
    /// The I/O error.
    fn create(&self, relative: &str) -> io::Result<Box<dyn NewTableFile>>;

    /// A file, for a Parquet reader: opened on a disk (read as the reader goes), fetched
    /// whole from an object store.
    ///
    /// # Errors
    /// The I/O or store error (`NotFound` if it does not exist).
    fn read(&self, relative: &str) -> io::Result<TableFileReader>;

    /// Makes `to` a durable copy of `from` (on a disk a link, and an existing `to` stays; in an
    /// object store a copy over it: the same bytes, as callers use it).
    ///
    /// # Errors
    /// The I/O or store error.
    fn copy(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// The I/O or store error (`NotFound` if it was not there).
    fn remove(&self, relative: &str) -> io::Result<()>;

    /// Every file under `tables/`, relative paths, in no particular order.
    ///
    /// # Errors
    /// The I/O or store error.
    fn list_table_files(&self) -> io::Result<Vec<String>>;

    /// The URL of the object store DataFusion reads the files from.
    fn scan_url(&self) -> ObjectStoreUrl;

    /// The location of `relative` in [`TableStore::scan_url`]'s store.
    fn scan_location(&self, relative: &str) -> String;

    /// The store to register with DataFusion under [`TableStore::scan_url`], if it is not the
    /// local file system DataFusion knows already.
    fn query_store(&self) -> Option<Arc<dyn object_store::ObjectStore>>;

    /// The `tables/` directory as a URL (`file:///data/tables/`, `s3://bucket/prefix/tables/`)
    /// and a client of the store rooted at that URL's root, for the Delta logs beside the
    /// files.
    ///
    /// # Errors
    /// If the directory has no URL (a relative path that cannot be made absolute).
    fn tables_root(&self) -> io::Result<(Arc<dyn object_store::ObjectStore>, url::Url)>;

    /// Called once at start-up with the catalog recovered, before stray files are removed: a
    /// store that mirrors the catalog elsewhere (the Delta logs) catches up with a save a
    /// crash interrupted.
    fn recovered(&self, _catalog: &Catalog) {}

    /// Files of `table` that other writers of the same tables committed (to its Delta log),
    /// for queries to read beside this server's own; none for the only writer.
    ///
    /// # Errors
    /// If they cannot be listed.
    fn other_writers_files(
        &self,
        _table: flowdaq_schemas::Table,
    ) -> io::Result<Vec<crate::catalog::CatalogFile>> {
        Ok(Vec::new())
    }
}

/// A table file to read: an open local file, or an object's bytes.
#[derive(Debug)]
pub enum TableFileReader {
    /// A file on the local disk.
    File(std::fs::File),
    /// An object fetched from the store.
    Bytes(Bytes),
}

impl Length for TableFileReader {
    fn len(&self) -> u64 {
        match self {
            TableFileReader::File(file) => file.len(),
            TableFileReader::Bytes(bytes) => bytes.len() as u64,
        }
    }
}

impl ChunkReader for TableFileReader {
    type T = Box<dyn io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            TableFileReader::File(file) => Box::new(file.get_read(start)?),
            TableFileReader::Bytes(bytes) => Box::new(bytes.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            TableFileReader::File(file) => file.get_bytes(start, length),
            TableFileReader::Bytes(bytes) => bytes.get_bytes(start, length),
        }
    }
}

/// The table store `config` names: the data directory `paths` (written through `storage`), or
/// an S3 bucket; with Delta logs if it says so, their syncs counted in `delta_counters`.
///
/// # Errors
/// If the object store's client cannot be built.
pub fn open(
    config: &crate::config::StorageConfig,
    paths: crate::paths::DataPaths,
    storage: crate::storage::SharedStorage,
    delta_counters: Arc<crate::delta_log::DeltaSyncCounters>,
) -> io::Result<SharedTableStore> {
    let writer = (!config.writer.is_empty()).then(|| config.writer.clone());
    let store: SharedTableStore = match config.s3() {
        None => Arc::new(LocalTableStore::new(paths, storage).with_writer(writer.clone())),
        Some(settings) => Arc::new(ObjectTableStore::s3(&settings)?.with_writer(writer.clone())),
    };
    if !config.delta_lake {
        return Ok(store);
    }
    let (root_store, tables_url) = store.tables_root()?;
    let log = crate::delta_log::DeltaLog::new(root_store, tables_url, writer)?;
    Ok(Arc::new(crate::delta_log::DeltaTableStore::new(
        store,
        Arc::new(log),
        delta_counters,
    )))
}

/// Removes the files of `listed` (from [`TableStore::list_table_files`]) that are this
/// writer's ([`crate::paths::file_of`]) and that the catalog does not name: leftovers of a
/// crash between writing a file and saving the catalog. Returns how many were removed.
pub fn remove_strays(
    tables: &dyn TableStore,
    known: &[crate::catalog::CatalogFile],
    listed: Vec<String>,
) -> usize {
    let known: std::collections::HashSet<&str> = known.iter().map(|f| f.path.as_str()).collect();
    let mut removed = 0;
    for file in listed {
        if known.contains(file.as_str()) || !crate::paths::file_of(tables.writer(), &file) {
            continue;
        }
        match tables.remove(&file) {
            Ok(()) => {
                tracing::warn!(path = %file, "removed a file the catalog does not list");
                removed += 1;
            }
            Err(err) => {
                tracing::warn!(path = %file, %err, "cannot remove a file the catalog does not list")
            }
        }
    }
    removed
}

#[cfg(test)]
pub(crate) mod faulty_object_store;
#[cfg(test)]
pub(crate) mod tests;
