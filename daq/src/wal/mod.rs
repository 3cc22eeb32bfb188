//! The write-ahead log: what makes a batch durable before anyone is told it arrived.
//!
//! Append-only segment files of checksummed entries, one entry per group commit (every batch
//! of the group and the seqs it commits, so replay keeps a group whole or drops it whole). A
//! group is written with one `write` and (by policy) one `fdatasync`; only after
//! [`Wal::append`] returns may the pipeline acknowledge a sender. A failed append is cut back
//! off the segment before anything else is appended (or, if even that fails, the segment is
//! abandoned for a new one), so an I/O error never leaves garbage in front of later entries. On
//! start-up the segments the catalog has not yet seen persisted are replayed, stopping at a
//! torn or corrupt tail. The WAL never depends on the buffer or the catalog.

mod entry;

use std::fs;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use crate::config::FsyncPolicy;
use crate::ledger::SeqSpan;
use crate::storage::{SharedStorage, StorageFile};

pub use entry::{EntryError, WalGroup};

/// Scratch capacity kept between appends; a larger group's buffer is released after it.
const SCRATCH_KEPT_BYTES: usize = 16 * 1024 * 1024;

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

/// The segment being appended to.
struct Segment {
    id: u64,
    file: Box<dyn StorageFile>,
    /// Bytes of complete, successfully appended entries: the file's valid length.
    valid_bytes: u64,
}

/// The append side of the WAL, owned by the ingest pipeline.
pub struct Wal {
    dir: PathBuf,
    fsync: FsyncPolicy,
    storage: SharedStorage,
    /// `None` after a failed append whose bytes could not be cut off, or a failed rotation:
    /// the next append starts a new segment first.
    segment: Option<Segment>,
    /// Id the next new segment gets; never reused, even if creating it failed half-way.
    next_id: u64,
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
    pub fn open(dir: &Path, fsync: FsyncPolicy, storage: SharedStorage) -> Result<Wal, WalError> {
        Wal::open_after(dir, fsync, storage, 0)
    }

    /// As [`Wal::open`], numbering the new segment above `persisted_through` too: the catalog's
    /// watermark, which may lie past every segment on this disk (a new or wiped data directory
    /// beside a catalog kept in an object store). A segment numbered at or below it would be
    /// taken for persisted, deleted and never replayed.
    ///
    /// # Errors
    /// [`WalError::Io`] if the directory or file cannot be created.
    pub fn open_after(
        dir: &Path,
        fsync: FsyncPolicy,
        storage: SharedStorage,
        persisted_through: u64,
    ) -> Result<Wal, WalError> {
        storage.create_dir_all(dir).map_err(io_err(dir))?;
        let next_id = list_segments(dir)?
            .last()
            .map_or(1, |last| last + 1)
            .max(persisted_through + 1);
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            fsync,
            storage,
            segment: None,
            next_id,
            scratch: Vec::new(),
        };
        wal.start_segment()?;
        Ok(wal)
    }

    fn start_segment(&mut self) -> Result<(), WalError> {
        let id = self.next_id;
        self.next_id += 1;
        let path = segment_path(&self.dir, id);
        let file = self
            .storage
            .create_new_append(&path)
            .map_err(io_err(&path))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(io_err(&self.dir))?;
        self.segment = Some(Segment {
            id,
            file,
            valid_bytes: 0,
        });
        Ok(())
    }

    /// Appends one group (its batches and the seqs it commits) as one entry, with one write
    /// and, under `fsync = "always"`, one fdatasync. When this returns `Ok`, the whole group is
    /// as durable as the returned value says, and may be acknowledged.
    ///
    /// # Errors
    /// [`WalError`]; then none of the group may be acknowledged, and the segment is as it was
    /// before the call (or abandoned: the next append goes to a new segment).
    pub fn append(
        &mut self,
        batches: &[(Table, RecordBatch)],
        seqs: &[SeqSpan],
    ) -> Result<Durability, WalError> {
        self.scratch.clear();
        let encoded = entry::encode(batches, seqs, &mut self.scratch);
        let result = match encoded {
            Ok(()) => self.write_scratch(),
            Err(err) => Err(err.into()),
        };
        if self.scratch.capacity() > SCRATCH_KEPT_BYTES {
            self.scratch = Vec::new();
        }
        result
    }

    fn write_scratch(&mut self) -> Result<Durability, WalError> {
        if self.segment.is_none() {
            self.start_segment()?;
        }
        let Some(segment) = self.segment.as_mut() else {
            return Err(io_err(&self.dir)(std::io::Error::other("no WAL segment")));
        };
        let path = segment_path(&self.dir, segment.id);
        let written = segment
            .file
            .write_all(&self.scratch)
            .and_then(|()| match self.fsync {
                FsyncPolicy::Always => segment.file.sync_data(),
                FsyncPolicy::Never => Ok(()),
            });
        match written {
            Ok(()) => {
                segment.valid_bytes += self.scratch.len() as u64;
                Ok(match self.fsync {
                    FsyncPolicy::Always => Durability::Synced,
                    FsyncPolicy::Never => Durability::Written,
                })
            }
            Err(err) => {
                // Cut the partial or unsynced entry off, so the next entry follows valid ones.
                let valid = segment.valid_bytes;
                let cut = segment.file.set_len(valid).and_then(|()| match self.fsync {
                    FsyncPolicy::Always => segment.file.sync_data(),
                    FsyncPolicy::Never => Ok(()),
                });
                if let Err(cut_err) = cut {
                    tracing::error!(segment = segment.id, %cut_err, "cannot cut a failed WAL append off; abandoning the segment");
                    self.segment = None;
                }
                Err(io_err(&path)(err))
            }
        }
    }

    /// Closes the current segment and starts the next one. Returns the id of the closed
    /// segment: every group appended so far lives in segments up to and including it.
    ///
    /// # Errors
    /// [`WalError::Io`] if the current segment cannot be synced or the next one created; the
    /// WAL then goes on appending (to the current segment, or to a new one if it was lost).
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        if let Some(segment) = self.segment.as_mut() {
            let path = segment_path(&self.dir, segment.id);
            segment.file.sync_all().map_err(io_err(&path))?;
        }
        // Every id below next_id is closed once the current segment is synced (or abandoned).
        let closed = self.next_id - 1;
        let previous = self.segment.take();
        match self.start_segment() {
            Ok(()) => Ok(closed),
            Err(err) => {
                self.segment = previous;
                Err(err)
            }
        }
    }

    /// Bytes of valid entries in the current segment.
    pub fn segment_bytes(&self) -> u64 {
        self.segment.as_ref().map_or(0, |s| s.valid_bytes)
    }
}

/// fsyncs a directory so that a created, renamed or removed entry is itself durable.
pub fn sync_dir(storage: &SharedStorage, dir: &Path) -> Result<(), WalError> {
    storage.sync_dir(dir).map_err(io_err(dir))
}

/// Deletes every segment whose id is `<= through`: their batches are safely in Parquet.
///
/// # Errors
/// [`WalError::Io`] if a segment cannot be removed.
pub fn remove_segments_through(
    storage: &SharedStorage,
    dir: &Path,
    through: u64,
) -> Result<usize, WalError> {
    let mut removed = 0;
    for id in list_segments(dir)?.into_iter().filter(|&id| id <= through) {
        let path = segment_path(dir, id);
        storage.remove_file(&path).map_err(io_err(&path))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(storage, dir)?;
    }
    Ok(removed)
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Groups in WAL order.
    pub groups: Vec<WalGroup>,
    /// Highest segment id read.
    pub last_segment: Option<u64>,
    /// Segments whose tail was torn or corrupt (the rest of that segment was skipped).
    pub torn_segments: Vec<(u64, String)>,
}

impl Replay {
    /// Every batch of every group, in WAL order.
    pub fn batches(&self) -> impl Iterator<Item = &(Table, RecordBatch)> + '_ {
        self.groups.iter().flat_map(|g| g.batches.iter())
    }

    /// Rows replayed.
    pub fn rows(&self) -> usize {
        self.batches().map(|(_, b)| b.num_rows()).sum()
    }
}

/// Reads every group in segments with id `> after`, in order. A torn or corrupt tail ends its
/// segment (a crash mid-write, or a failed append that could not be cut off); it is reported,
/// never fatal.
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
                Ok((group, used)) => {
                    replay.groups.push(group);
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
