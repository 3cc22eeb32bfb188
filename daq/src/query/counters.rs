//! How many queries ran and how each failed, for `/metrics`: an operator sees refused,
//! limited and timed-out queries rise before users complain.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::limits::LimitError;
use super::QueryError;

/// Counters shared by every clone of an engine.
#[derive(Debug, Default)]
pub struct QueryCounters {
    started: AtomicU64,
    refused: AtomicU64,
    limited: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`QueryCounters`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct QueryCountersSnapshot {
    /// Statements received.
    pub started: u64,
    /// Refused by the read-only guard.
    pub refused: u64,
    /// Stopped by a size, complexity or result limit.
    pub limited: u64,
    /// Stopped by the time limit.
    pub timed_out: u64,
    /// Failed otherwise (unknown table, type error, memory pool exhausted, ...).
    pub failed: u64,
}

impl QueryCounters {
    pub(super) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `error` under its kind.
    pub(super) fn failed(&self, error: &QueryError) {
        let counter = match error {
            QueryError::ReadOnly(_) => &self.refused,
            QueryError::Limit(LimitError::TimedOut { .. }) => &self.timed_out,
            QueryError::Limit(_) => &self.limited,
            QueryError::DataFusion(_) | QueryError::Aborted(_) | QueryError::Threads(_) => {
                &self.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> QueryCountersSnapshot {
        QueryCountersSnapshot {
            started: self.started.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}
