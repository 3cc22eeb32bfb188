//! Whether the write path can keep its promises right now, and why not.
//!
//! The WAL and the persister report every failure and every recovery here; `GET /health`
//! answers 503 with the reasons while either is failing, and `GET /metrics` counts the
//! failures. A server that cannot make data durable must say so, not answer "ok".

use std::sync::Mutex;

use serde::Serialize;

/// One part that is failing now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    /// The last error.
    pub reason: String,
    /// When the part started failing, ns since the Unix epoch.
    pub since_ns: i64,
    /// Failures in a row.
    pub consecutive: u64,
}

/// Failure counters since start.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HealthCounters {
    /// WAL appends that failed (their groups were held and retried, not acknowledged).
    pub wal_errors: u64,
    /// WAL rotations that failed (the snapshot waited for the next attempt).
    pub wal_rotation_errors: u64,
    /// Persist attempts that failed (retried, in order, with back-off).
    pub persist_errors: u64,
    /// WAL segments that could not be deleted after their rows were persisted (they are
    /// deleted at the next start; nothing is replayed twice).
    pub wal_cleanup_errors: u64,
}

/// The write path's state as `GET /health` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthReport {
    /// `ok`, or `failing` if the WAL or the persister is failing.
    pub status: &'static str,
    /// The WAL's failure, if failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<Failure>,
    /// The persister's failure, if failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persister: Option<Failure>,
    /// Intake is paused because persistence is behind (not a failure: senders are slowed).
    pub backpressure: bool,
}

#[derive(Debug, Default)]
struct State {
    wal: Option<Failure>,
    persister: Option<Failure>,
    backpressure: bool,
    counters: HealthCounters,
}

/// Shared health of the write path; see the module doc.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

fn fail(slot: &mut Option<Failure>, reason: String) {
    match slot {
        Some(failure) => {
            failure.reason = reason;
            failure.consecutive += 1;
        }
        None => {
            *slot = Some(Failure {
                reason,
                since_ns: flowdaq_connectors::transport::now_ns(),
                consecutive: 1,
            })
        }
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A WAL append failed.
    pub fn wal_failed(&self, reason: String) {
        let mut state = self.lock();
        state.counters.wal_errors += 1;
        fail(&mut state.wal, reason);
    }

    /// A WAL rotation failed (appends go on; persisting waits for the next rotation, and the
    /// buffer's bound stops intake if it never comes).
    pub fn rotation_failed(&self) {
        self.lock().counters.wal_rotation_errors += 1;
    }

    /// The WAL took a group again.
    pub fn wal_ok(&self) {
        let mut state = self.lock();
        if state.wal.take().is_some() {
            tracing::info!("WAL appends work again");
        }
    }

    /// A persist attempt failed.
    pub fn persist_failed(&self, reason: String) {
        let mut state = self.lock();
        state.counters.persist_errors += 1;
        fail(&mut state.persister, reason);
    }

    /// A snapshot was persisted.
    pub fn persist_ok(&self) {
        let mut state = self.lock();
        if state.persister.take().is_some() {
            tracing::info!("persisting works again");
        }
    }

    /// Persisted WAL segments could not be deleted.
    pub fn cleanup_failed(&self) {
        self.lock().counters.wal_cleanup_errors += 1;
    }

    /// Intake paused (or resumed) because persistence is behind.
    pub fn set_backpressure(&self, on: bool) {
        self.lock().backpressure = on;
    }

    /// The report for `GET /health`.
    pub fn report(&self) -> HealthReport {
        let state = self.lock();
        let failing = state.wal.is_some() || state.persister.is_some();
        HealthReport {
            status: if failing { "failing" } else { "ok" },
            wal: state.wal.clone(),
            persister: state.persister.clone(),
            backpressure: state.backpressure,
        }
    }

    /// Counters for `GET /metrics`.
    pub fn counters(&self) -> HealthCounters {
        self.lock().counters.clone()
    }
}
