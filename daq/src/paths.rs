//! Where everything lives under the data directory; the one place that spells out paths.
//!
//! `wal/` holds WAL segments, `tables/<table>/date=YYYY-MM-DD/run=<run>/<id>.parquet` the
//! persisted files (Hive-style, so duckdb and pyarrow datasets read the partitions), and
//! `catalog.json` the list of files that count. A server named as one of several writers of
//! the same tables (`[storage] writer`) names its files `<writer>-<id>.parquet` and its
//! catalog `catalog.<writer>.json`, so writers never take each other's names.

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
        self.root.join(catalog_name(None))
    }

    /// Root of all Parquet files.
    pub fn tables_dir(&self) -> PathBuf {
        self.root.join("tables")
    }

    /// Relative path (from the data directory) of a Parquet file of `writer` (see
    /// [`file_of`]).
    pub fn parquet_relative(
        table: &str,
        date: &str,
        run: &str,
        writer: Option<&str>,
        file_id: u64,
    ) -> String {
        match writer {
            Some(writer) => {
                format!("tables/{table}/date={date}/run={run}/{writer}-{file_id:012}.parquet")
            }
            None => format!("tables/{table}/date={date}/run={run}/{file_id:012}.parquet"),
        }
    }

    /// Absolute path of a file given relative to the data directory.
    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

/// The catalog's file (or object) name of `writer`: `catalog.json`, or `catalog.<writer>.json`.
pub fn catalog_name(writer: Option<&str>) -> String {
    match writer {
        Some(writer) => format!("catalog.{writer}.json"),
        None => "catalog.json".to_string(),
    }
}

/// Whether the table file `path` (any path ending in its file name) is `writer`'s: its name is
/// `<writer>-<digits>.parquet…`, or, for the only writer, `<digits>.parquet…` (temporary and
/// merged names included), and it is not in a Delta log directory. A writer never removes
/// another's files as strays, nor from a Delta log.
pub fn file_of(writer: Option<&str>, path: &str) -> bool {
    if path.split('/').any(|part| part == "_delta_log") {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let id = match writer {
        Some(writer) => name.strip_prefix(writer).and_then(|r| r.strip_prefix('-')),
        None => Some(name),
    };
    id.is_some_and(|id| {
        let digits = id.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && id[digits..].starts_with(".parquet")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_belongs_to_the_writer_its_name_starts_with() {
        assert!(file_of(None, "date=d/run=r/000000000001.parquet"));
        assert!(file_of(None, "000000000001.parquet.tmp"));
        assert!(!file_of(None, "date=d/run=r/lab-a-000000000001.parquet"));
        assert!(file_of(
            Some("lab-a"),
            "date=d/run=r/lab-a-000000000001.parquet"
        ));
        assert!(file_of(
            Some("lab-1"),
            "r/lab-1-000000000001.parquet.merged"
        ));
        assert!(!file_of(
            Some("lab"),
            "date=d/run=r/lab-a-000000000001.parquet"
        ));
        assert!(!file_of(
            Some("lab"),
            "date=d/run=r/lab-1-000000000001.parquet"
        ));
        assert!(!file_of(
            Some("lab-a"),
            "date=d/run=r/lab-ab-000000000001.parquet"
        ));
        assert!(!file_of(Some("lab-a"), "date=d/run=r/000000000001.parquet"));
        assert!(!file_of(None, "half a file"));
        assert!(!file_of(
            None,
            "tables/t/_delta_log/00000000000000000003.json"
        ));
        assert!(!file_of(
            None,
            "tables/t/_delta_log/00000000000000000099.checkpoint.parquet"
        ));
        assert!(!file_of(None, "tables/t/date=d/run=r/000000000001.json"));
        assert_eq!(
            DataPaths::parquet_relative("photons", "2026-12-07", "r1", Some("lab-a"), 7),
            "tables/photons/date=2026-12-07/run=r1/lab-a-000000000007.parquet"
        );
        assert_eq!(catalog_name(Some("lab-a")), "catalog.lab-a.json");
    }
}
