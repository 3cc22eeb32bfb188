//! Table files under the data directory: written under a temporary name, fsynced, renamed
//! into place and the directory fsynced, all through [`Storage`] so disk faults can be injected.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;

use super::{NewTableFile, TableFileReader, TableStore};
use crate::catalog::{Catalog, CatalogError};
use crate::paths::DataPaths;
use crate::storage::{SharedStorage, StorageFile};

/// The table files of a data directory on the local file system.
pub struct LocalTableStore {
    paths: DataPaths,
    storage: SharedStorage,
    writer: Option<String>,
}

impl LocalTableStore {
    /// Files under `paths`, written through `storage`.
    pub fn new(paths: DataPaths, storage: SharedStorage) -> LocalTableStore {
        LocalTableStore {
            paths,
            storage,
            writer: None,
        }
    }

    /// As one of several writers of the same tables, named `writer`.
    pub fn with_writer(mut self, writer: Option<String>) -> LocalTableStore {
        self.writer = writer;
        self
    }

    fn catalog_file(&self) -> PathBuf {
        self.paths
            .root()
            .join(crate::paths::catalog_name(self.writer.as_deref()))
    }

    /// As [`LocalTableStore::new`], shared.
    pub fn shared(paths: DataPaths, storage: SharedStorage) -> super::SharedTableStore {
        Arc::new(LocalTableStore::new(paths, storage))
    }
}

/// A file written under `<name>.tmp` until committed.
struct LocalNewFile {
    file: Option<Box<dyn StorageFile>>,
    temp: PathBuf,
    path: PathBuf,
    storage: SharedStorage,
}

impl Write for LocalNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl NewTableFile for LocalNewFile {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("file already committed"));
        };
        let done = (|| {
            file.sync_all()?;
            drop(file);
            self.storage.rename(&self.temp, &self.path)?;
            match self.path.parent() {
                Some(dir) => self.storage.sync_dir(dir),
                None => Ok(()),
            }
        })();
        if done.is_err() {
            // Renamed but its directory entry not durable: not there as far as we promise.
            let _ = self.storage.remove_file(&self.path);
            let _ = self.storage.remove_file(&self.temp);
        }
        done
    }
}

impl Drop for LocalNewFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.storage.remove_file(&self.temp);
        }
    }
}

impl TableStore for LocalTableStore {
    fn describe(&self) -> String {
        self.paths.root().display().to_string()
    }

    fn writer(&self) -> Option<&str> {
        self.writer.as_deref()
    }

    fn load_catalog(&self) -> Result<Catalog, CatalogError> {
        Catalog::load(&self.catalog_file())
    }

    fn save_catalog(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        catalog.save(self.storage.as_ref(), &self.catalog_file())
    }

    fn create(&self, relative: &str) -> io::Result<Box<dyn NewTableFile>> {
        let path = self.paths.resolve(relative);
        if let Some(dir) = path.parent() {
            self.storage.create_dir_all(dir)?;
        }
        let temp = self.paths.resolve(&format!("{relative}.tmp"));
        let file = self.storage.create(&temp)?;
        Ok(Box::new(LocalNewFile {
            file: Some(file),
            temp,
            path,
            storage: self.storage.clone(),
        }))
    }

    fn read(&self, relative: &str) -> io::Result<TableFileReader> {
        std::fs::File::open(self.paths.resolve(relative)).map(TableFileReader::File)
    }

    fn copy(&self, from: &str, to: &str) -> io::Result<()> {
        let to = self.paths.resolve(to);
        // A link, not a copy: the bytes are already durable under `from`.
        match std::fs::hard_link(self.paths.resolve(from), &to) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
        match to.parent() {
            Some(dir) => self.storage.sync_dir(dir),
            None => Ok(()),
        }
    }

    fn remove(&self, relative: &str) -> io::Result<()> {
        self.storage.remove_file(&self.paths.resolve(relative))
    }

    fn list_table_files(&self) -> io::Result<Vec<String>> {
        let root = self.paths.root();
        let mut files = Vec::new();
        let mut stack = vec![self.paths.tables_dir()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        Ok(files)
    }

    fn scan_url(&self) -> ObjectStoreUrl {
        ObjectStoreUrl::local_filesystem()
    }

    fn scan_location(&self, relative: &str) -> String {
        let absolute = self.paths.resolve(relative);
        let absolute = std::path::absolute(&absolute).unwrap_or(absolute);
        absolute
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string()
    }

    fn query_store(&self) -> Option<Arc<dyn object_store::ObjectStore>> {
        None
    }

    fn tables_root(&self) -> io::Result<(Arc<dyn object_store::ObjectStore>, url::Url)> {
        let tables = std::path::absolute(self.paths.tables_dir())?;
        let url = url::Url::from_directory_path(&tables)
            .map_err(|()| io::Error::other(format!("{} has no file URL", tables.display())))?;
        Ok((Arc::new(object_store::local::LocalFileSystem::new()), url))
    }
}

impl std::fmt::Debug for LocalTableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTableStore")
            .field("root", &self.paths.root())
            .finish_non_exhaustive()
    }
}
