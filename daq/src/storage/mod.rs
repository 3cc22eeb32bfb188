//! The file operations of the write path (WAL, Parquet files, catalog), behind one trait.
//!
//! Everything that can lose acknowledged data on a bad disk goes through [`Storage`], so the
//! same code runs on the real file system ([`LocalStorage`]) and, in tests, on
//! [`FaultyStorage`], which fails chosen operations with ENOSPC, EIO, EMFILE or a short write.
//! Reads (WAL replay, Parquet scans) stay on `std::fs`: a failed read loses nothing.

pub mod fault;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

pub use fault::{Fault, FaultKind, FaultyStorage, Op};

/// A file opened for writing by the write path.
pub trait StorageFile: Write + Send {
    /// `fdatasync`: the written bytes (and the size) are durable.
    ///
    /// # Errors
    /// The OS error; the bytes since the last successful sync are then in doubt.
    fn sync_data(&mut self) -> io::Result<()>;

    /// `fsync`: data and metadata are durable.
    ///
    /// # Errors
    /// As [`StorageFile::sync_data`].
    fn sync_all(&mut self) -> io::Result<()>;

    /// Cuts or extends the file to `len` bytes; later writes of an append-mode file go after it.
    ///
    /// # Errors
    /// The OS error.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The write path's file system.
pub trait Storage: Send + Sync {
    /// Creates a file that must not exist yet, for appending.
    ///
    /// # Errors
    /// The OS error (`AlreadyExists` if it exists).
    fn create_new_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;

    /// Creates (or truncates) a file for writing.
    ///
    /// # Errors
    /// The OS error.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;

    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// The OS error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Creates a directory and its parents.
    ///
    /// # Errors
    /// The OS error.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// fsyncs a directory, so that a created, renamed or removed entry is itself durable.
    ///
    /// # Errors
    /// The OS error.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// Shared handle to the write path's file system.
pub type SharedStorage = Arc<dyn Storage>;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalStorage;

impl LocalStorage {
    /// A shared handle to the real file system.
    pub fn shared() -> SharedStorage {
        Arc::new(LocalStorage)
    }
}

struct LocalFile(File);

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl StorageFile for LocalFile {
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for LocalStorage {
    fn create_new_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(LocalFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(LocalFile(File::create(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}
