//! What the Bluesky ingest has seen, for `/metrics`: documents by name, refusals, and what it
//! read but did not store.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters shared by the translator (which writes) and the metrics endpoints (which read).
#[derive(Debug, Default)]
pub struct BlueskyCounters {
    start: AtomicU64,
    descriptor: AtomicU64,
    event: AtomicU64,
    stop: AtomicU64,
    external: AtomicU64,
    refused: AtomicU64,
    other_prefix: AtomicU64,
    unstored_array_values: AtomicU64,
    open_runs: AtomicU64,
}

/// A copy of [`BlueskyCounters`].
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BlueskyCountsSnapshot {
    /// Start documents read.
    pub start_documents: u64,
    /// Descriptor documents read.
    pub descriptor_documents: u64,
    /// Events read (an event_page counts its events).
    pub events: u64,
    /// Stop documents read.
    pub stop_documents: u64,
    /// Resource and datum documents (references to external files) read.
    pub external_reference_documents: u64,
    /// Documents refused (each is an `ingest_errors` row).
    pub refused_documents: u64,
    /// Documents skipped because their Publisher prefix is not the configured one.
    pub other_prefix_documents: u64,
    /// Array values of events that no `[[bluesky.spectra]]` entry maps: read, not stored.
    pub unstored_array_values: u64,
    /// Runs started and not stopped yet.
    pub open_runs: u64,
}

impl BlueskyCounters {
    pub(super) fn document(&self, name: &str, events: u64) {
        let counter = match name {
            "start" => &self.start,
            "descriptor" => &self.descriptor,
            "event" | "event_page" => {
                self.event.fetch_add(events, Ordering::Relaxed);
                return;
            }
            "stop" => &self.stop,
            _ => &self.external,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused document.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn other_prefix(&self) {
        self.other_prefix.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn unstored_array_value(&self) {
        self.unstored_array_values.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_open_runs(&self, runs: usize) {
        self.open_runs.store(runs as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> BlueskyCountsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlueskyCountsSnapshot {
            start_documents: get(&self.start),
            descriptor_documents: get(&self.descriptor),
            events: get(&self.event),
            stop_documents: get(&self.stop),
            external_reference_documents: get(&self.external),
            refused_documents: get(&self.refused),
            other_prefix_documents: get(&self.other_prefix),
            unstored_array_values: get(&self.unstored_array_values),
            open_runs: get(&self.open_runs),
        }
    }
}
