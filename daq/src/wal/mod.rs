//! The write-ahead log: what makes a batch durable before anyone is told it arrived.
//!
//! Append-only segment files of checksummed entries, one Arrow IPC batch each. A group of
//! batches is written with one `write` and (by policy) one `fsync`; only after [`Wal::append`]
//! returns may the pipeline acknowledge a sender. On start-up the segments the catalog has not
//! yet seen persisted are replayed, stopping at a torn or corrupt tail, so nothing acknowledged
//! is lost by a crash. The WAL never depends on the buffer or the catalog.

mod entry;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use crate::config::FsyncPolicy;

pub use entry::EntryError;

/// WAL failures.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// File-system error on the WAL directory.
    #[error("wal {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A batch could not be encoded.
    #[error("wal encoding: {0}")]
    Encode(#[from] EntryError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How durable an append is once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written and fsynced: survives a crash and a power cut.
    Synced,
    /// Written to the OS: survives a process crash, not a power cut.
    Written,
}

/// The append side of the WAL, owned by the ingest pipeline.
pub struct Wal {
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_id: u64,
    file: File,
    segment_bytes: u64,
    scratch: Vec<u8>,
}

/// Name of a segment file.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// Ids of the segment files present, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut ids = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".wal")
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Wal {
    /// Opens a new segment after every existing one (existing segments are only replayed).
    ///
    /// # Errors
    /// [`WalError::Io`] if the directory or file cannot be created.
    pub fn open(dir: &Path, fsync: FsyncPolicy) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let next = list_segments(dir)?.last().map_or(1, |last| last + 1);
        let file = create_segment(dir, next)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            fsync,
            segment_id: next,
            file,
            segment_bytes: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends a group of batches with one write and, under `fsync = "always"`, one fsync.
    /// When this returns `Ok`, every batch of the group is as durable as the returned value
    /// says, and may be acknowledged.
    ///
    /// # Errors
    /// [`WalError`]; then none of the group may be acknowledged.
    pub fn append(&mut self, batches: &[(Table, RecordBatch)]) -> Result<Durability, WalError> {
        self.scratch.clear();
        for (table, batch) in batches {
            entry::encode(*table, batch, &mut self.scratch)?;
        }
        let path = segment_path(&self.dir, self.segment_id);
        self.file.write_all(&self.scratch).map_err(io_err(&path))?;
        self.segment_bytes += self.scratch.len() as u64;
        match self.fsync {
            FsyncPolicy::Always => {
                self.file.sync_data().map_err(io_err(&path))?;
                Ok(Durability::Synced)
            }
            FsyncPolicy::Never => Ok(Durability::Written),
        }
    }

    /// Closes the current segment and starts the next one. Returns the id of the closed
    /// segment: every batch appended so far lives in segments up to and including it.
    ///
    /// # Errors
    /// [`WalError::Io`] if the new segment cannot be created.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        let closed = self.segment_id;
        let path = segment_path(&self.dir, closed);
        self.file.sync_all().map_err(io_err(&path))?;
        self.file = create_segment(&self.dir, closed + 1)?;
        self.segment_id = closed + 1;
        self.segment_bytes = 0;
        Ok(closed)
    }

    /// Bytes written to the current segment.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }
}

fn create_segment(dir: &Path, id: u64) -> Result<File, WalError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(file)
}

/// fsyncs a directory so that a created, renamed or removed entry is itself durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Deletes every segment whose id is `<= through`: their batches are safely in Parquet.
///
/// # Errors
/// [`WalError::Io`] if a segment cannot be removed.
pub fn remove_segments_through(dir: &Path, through: u64) -> Result<usize, WalError> {
    let mut removed = 0;
    for id in list_segments(dir)?.into_iter().filter(|&id| id <= through) {
        let path = segment_path(dir, id);
        fs::remove_file(&path).map_err(io_err(&path))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Batches in WAL order.
    pub batches: Vec<(Table, RecordBatch)>,
    /// Highest segment id read.
    pub last_segment: Option<u64>,
    /// Segments whose tail was torn or corrupt (the rest of that segment was skipped).
    pub torn_segments: Vec<(u64, String)>,
}

/// Reads every batch in segments with id `> after`, in order. A torn or corrupt tail ends its
/// segment (a crash mid-write leaves one); it is reported, never fatal.
///
/// # Errors
/// [`WalError::Io`] if a segment cannot be read.
pub fn replay(dir: &Path, after: u64) -> Result<Replay, WalError> {
    let mut replay = Replay::default();
    for id in list_segments(dir)?.into_iter().filter(|&id| id > after) {
        let path = segment_path(dir, id);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let mut offset = 0;
        while offset < bytes.len() {
            match entry::decode(&bytes[offset..]) {
                Ok((table, batch, used)) => {
                    replay.batches.push((table, batch));
                    offset += used;
                }
                Err(err) => {
                    tracing::warn!(segment = id, offset, %err, "WAL segment has a torn tail; rest skipped");
                    replay.torn_segments.push((id, err.to_string()));
                    break;
                }
            }
        }
        replay.last_segment = Some(id);
    }
    Ok(replay)
}

#[cfg(test)]
mod tests;
