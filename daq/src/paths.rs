//! Where everything lives under the data directory; the one place that spells out paths.
//!
//! `wal/` holds WAL segments, `tables/<table>/date=YYYY-MM-DD/run=<run>/<id>.parquet` the
//! persisted files (Hive-style, so duckdb and pyarrow datasets read the partitions), and
//! `catalog.json` the list of files that count.

use std::path::{Path, PathBuf};

/// Paths under one data directory.
#[derive(Debug, Clone)]
pub struct DataPaths {
    root: PathBuf,
}

impl DataPaths {
    /// Paths under `root`.
    pub fn new(root: &Path) -> DataPaths {
        DataPaths {
            root: root.to_path_buf(),
        }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// WAL segment directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// The catalog file.
    pub fn catalog_file(&self) -> PathBuf {
        self.root.join("catalog.json")
    }

    /// Root of all Parquet files.
    pub fn tables_dir(&self) -> PathBuf {
        self.root.join("tables")
    }

    /// Relative path (from the data directory) of a Parquet file.
    pub fn parquet_relative(table: &str, date: &str, run: &str, file_id: u64) -> String {
        format!("tables/{table}/date={date}/run={run}/{file_id:012}.parquet")
    }

    /// Absolute path of a file given relative to the data directory.
    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}
