//! The catalog: which Parquet files exist, what they hold, and how far the WAL is persisted.
//!
//! A file counts only once it is in the catalog; the catalog is rewritten atomically (temp
//! file, fsync, rename, fsync of the directory), so after a crash it names either the old set
//! of files or the new one, never half. `wal_persisted_through` tells replay which WAL
//! segments are already in Parquet and must not be replayed twice, and `seq_ledger` which
//! messages those segments committed (the WAL groups after the watermark hold the rest).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ledger::SeqLedger;
use crate::storage::Storage;

/// Catalog failures.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// File-system error.
    #[error("catalog {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The catalog file is not valid.
    #[error("catalog {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// One persisted Parquet file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// Table name.
    pub table: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// File size, bytes.
    pub size_bytes: u64,
    /// Earliest `arrival_time_ns` in the file.
    pub min_arrival_time_ns: i64,
    /// Latest `arrival_time_ns` in the file.
    pub max_arrival_time_ns: i64,
    /// Run partition (`_none` for tables without runs).
    pub run_id: String,
    /// Date partition, `YYYY-MM-DD` (UTC).
    pub date: String,
}

/// The catalog's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version of this file.
    pub version: u32,
    /// Every WAL segment with id `<=` this is fully persisted.
    pub wal_persisted_through: u64,
    /// Next file id to hand out.
    pub next_file_id: u64,
    /// Persisted files, in persist order.
    pub files: Vec<CatalogFile>,
    /// Committed `(source, session, seq)` as of `wal_persisted_through`.
    #[serde(default)]
    pub seq_ledger: SeqLedger,
}

impl Catalog {
    /// Loads the catalog, or an empty one if the file does not exist.
    ///
    /// # Errors
    /// [`CatalogError`] if it exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let display = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt {
                path: display,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog {
                version: 1,
                ..Catalog::default()
            }),
            Err(source) => Err(CatalogError::Io {
                path: display,
                source,
            }),
        }
    }

    /// Writes the catalog atomically: a temp file, fsynced, renamed over the old one, and the
    /// directory fsynced. A failure removes the temp file and leaves the old catalog in place.
    ///
    /// # Errors
    /// [`CatalogError::Io`].
    pub fn save(&self, storage: &dyn Storage, path: &Path) -> Result<(), CatalogError> {
        let io = |source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        };
        let temp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        let written = (|| {
            let mut file = storage.create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            drop(file);
            storage.rename(&temp, path)
        })();
        if let Err(err) = written {
            let _ = storage.remove_file(&temp);
            return Err(io(err));
        }
        if let Some(dir) = path.parent() {
            storage.sync_dir(dir).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.json");
        assert_eq!(Catalog::load(&path).expect("empty").files.len(), 0);
        let file = CatalogFile {
            table: "spectra".into(),
            path: "tables/spectra/x.parquet".into(),
            rows: 3,
            size_bytes: 10,
            min_arrival_time_ns: 1,
            max_arrival_time_ns: 2,
            run_id: "r".into(),
            date: "2026-11-25".into(),
        };
        let catalog = Catalog {
            version: 1,
            wal_persisted_through: 4,
            next_file_id: 2,
            files: vec![file],
            seq_ledger: SeqLedger::default(),
        };
        catalog
            .save(&crate::storage::LocalStorage, &path)
            .expect("save");
        assert_eq!(Catalog::load(&path).expect("load"), catalog);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, b"{ not json").expect("corrupt");
        assert!(matches!(
            Catalog::load(&path),
            Err(CatalogError::Corrupt { .. })
        ));
    }
}
