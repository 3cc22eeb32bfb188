//! A [`Storage`] that fails on purpose: the write path's tests run the real code against a
//! disk that fills up, returns EIO, runs out of file descriptors or tears a write in the
//! middle, at exactly the operation the test names. Not used by the server itself.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{LocalStorage, Storage, StorageFile};

/// The operations a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Creating a file (either mode).
    Create,
    /// Writing to a file.
    Write,
    /// `fdatasync` of a file.
    SyncData,
    /// `fsync` of a file.
    SyncAll,
    /// Changing a file's length.
    SetLen,
    /// Renaming.
    Rename,
    /// Removing a file.
    Remove,
    /// Creating directories.
    CreateDir,
    /// fsync of a directory.
    SyncDir,
}

/// How an operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fails with this OS error number (`libc` values: ENOSPC 28, EIO 5, EMFILE 24).
    Os(i32),
    /// For [`Op::Write`]: writes this many bytes of the buffer, then fails with ENOSPC.
    ShortWrite(usize),
}

/// Error numbers of the faults tests inject (Linux values).
pub mod errno {
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Too many open files.
    pub const EMFILE: i32 = 24;
}

/// One planned failure: the `skip`-th next matching operation and `times` after it fail.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Operation that fails.
    pub op: Op,
    /// Only paths containing this text match (empty: every path).
    pub path_contains: String,
    /// Matching operations to let through first.
    pub skip: u64,
    /// How many matching operations fail after those; `None`: every one until cleared.
    pub times: Option<u64>,
    /// How they fail.
    pub kind: FaultKind,
}

impl Fault {
    /// Every matching operation fails with `errno` until cleared.
    pub fn always(op: Op, path_contains: &str, errno: i32) -> Fault {
        Fault {
            op,
            path_contains: path_contains.to_string(),
            skip: 0,
            times: None,
            kind: FaultKind::Os(errno),
        }
    }

    /// The matching operation after `skip` others fails once with `kind`.
    pub fn once(op: Op, path_contains: &str, skip: u64, kind: FaultKind) -> Fault {
        Fault {
            op,
            path_contains: path_contains.to_string(),
            skip,
            times: Some(1),
            kind,
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    faults: Vec<Fault>,
    /// Bytes that may still be written; `None`: unlimited.
    space_left: Option<u64>,
    triggered: u64,
}

/// A file system that fails where it is told to; see the module doc.
#[derive(Debug, Default)]
pub struct FaultyStorage {
    plan: Mutex<Plan>,
}

impl FaultyStorage {
    /// A fault-free start; faults are added with [`FaultyStorage::inject`].
    pub fn new() -> Arc<FaultyStorage> {
        Arc::new(FaultyStorage::default())
    }

    fn lock(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every fault and the space limit: the disk is healthy again.
    pub fn heal(&self) {
        let mut plan = self.lock();
        plan.faults.clear();
        plan.space_left = None;
    }

    /// Lets only `bytes` more bytes be written (a filling disk); later writes are short, then
    /// fail with ENOSPC.
    pub fn limit_space(&self, bytes: u64) {
        self.lock().space_left = Some(bytes);
    }

    /// How many operations have failed on purpose so far.
    pub fn triggered(&self) -> u64 {
        self.lock().triggered
    }

    /// The fault that hits this operation now, if any (consuming its skip or times).
    fn check(&self, op: Op, path: &Path) -> Option<FaultKind> {
        let mut plan = self.lock();
        let text = path.to_string_lossy();
        let mut hit = None;
        for fault in plan.faults.iter_mut() {
            if fault.op != op || !text.contains(fault.path_contains.as_str()) {
                continue;
            }
            if fault.skip > 0 {
                fault.skip -= 1;
                continue;
            }
            match &mut fault.times {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            hit = Some(fault.kind);
            break;
        }
        if hit.is_some() {
            plan.triggered += 1;
        }
        hit
    }

    /// How many of `wanted` bytes the space limit lets through.
    fn take_space(&self, wanted: usize) -> usize {
        let mut plan = self.lock();
        match &mut plan.space_left {
            None => wanted,
            Some(left) => {
                let granted = (*left).min(wanted as u64);
                *left -= granted;
                if granted < wanted as u64 {
                    plan.triggered += 1;
                }
                granted as usize
            }
        }
    }

    /// Fails the operation if a fault says so (a short write counts as ENOSPC here).
    fn fail(&self, op: Op, path: &Path) -> io::Result<()> {
        match self.check(op, path) {
            Some(FaultKind::Os(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(FaultKind::ShortWrite(_)) => Err(io::Error::from_raw_os_error(errno::ENOSPC)),
            None => Ok(()),
        }
    }
}

/// A handle that lets [`FaultyFile`] reach the plan without a lifetime.
#[derive(Debug, Clone)]
struct Shared(Arc<FaultyStorage>);

struct FaultyFile {
    storage: Shared,
    path: PathBuf,
    inner: Box<dyn StorageFile>,
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let storage = &self.storage.0;
        match storage.check(Op::Write, &self.path) {
            Some(FaultKind::Os(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            Some(FaultKind::ShortWrite(bytes)) => {
                let bytes = bytes.min(buf.len());
                self.inner.write_all(&buf[..bytes])?;
                return Err(io::Error::from_raw_os_error(errno::ENOSPC));
            }
            None => {}
        }
        let granted = storage.take_space(buf.len());
        if granted == 0 && !buf.is_empty() {
            return Err(io::Error::from_raw_os_error(errno::ENOSPC));
        }
        self.inner.write(&buf[..granted])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl StorageFile for FaultyFile {
    fn sync_data(&mut self) -> io::Result<()> {
        self.storage.0.fail(Op::SyncData, &self.path)?;
        self.inner.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.storage.0.fail(Op::SyncAll, &self.path)?;
        self.inner.sync_all()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.storage.0.fail(Op::SetLen, &self.path)?;
        self.inner.set_len(len)
    }
}

/// The storage handed to the write path: the plan plus the real file system underneath.
impl Storage for Shared {
    fn create_new_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.0.fail(Op::Create, path)?;
        let inner = LocalStorage.create_new_append(path)?;
        Ok(Box::new(FaultyFile {
            storage: self.clone(),
            path: path.to_path_buf(),
            inner,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.0.fail(Op::Create, path)?;
        let inner = LocalStorage.create(path)?;
        Ok(Box::new(FaultyFile {
            storage: self.clone(),
            path: path.to_path_buf(),
            inner,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.fail(Op::Rename, to)?;
        LocalStorage.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.fail(Op::Remove, path)?;
        LocalStorage.remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.fail(Op::CreateDir, path)?;
        LocalStorage.create_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.fail(Op::SyncDir, path)?;
        LocalStorage.sync_dir(path)
    }
}

impl FaultyStorage {
    /// The storage to give the write path; faults injected into `self` apply to it.
    pub fn storage(self: &Arc<Self>) -> super::SharedStorage {
        Arc::new(Shared(self.clone()))
    }
}
