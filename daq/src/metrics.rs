//! Counters and latency histograms of the ingest path, per source and overall.
//!
//! Sequence numbers, not sockets, are what reveal loss: every source's `seq` is tracked here,
//! and a jump forward counts the missing messages as a gap. The metrics are served as JSON by
//! `GET /metrics` and read by the demo's progress line and the load generator.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Per-source counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SourceStats {
    /// Transport the source was last seen on.
    pub transport: String,
    /// Accepted messages.
    pub messages: u64,
    /// Rows those messages carried (spectra, photons, trace chunks).
    pub rows: u64,
    /// Bytes received in accepted messages.
    pub bytes: u64,
    /// Rejected messages attributed to this source.
    pub rejected: u64,
    /// Highest `seq` seen in the source's most recent session.
    pub last_seq: Option<u64>,
    /// Messages missing according to `seq` (sum of the gap sizes).
    pub missing_messages: u64,
    /// Number of distinct gaps.
    pub gaps: u64,
    /// Messages whose `seq` was not above the last one (restart, reordering); resends of
    /// committed messages are counted in `duplicates` instead.
    pub seq_regressions: u64,
    /// Resends of messages already committed: acknowledged again, not stored again.
    pub duplicates: u64,
    /// Highest seq per session, most recent session first: gaps and regressions are counted
    /// within a session, since a new session is a counter that starts again.
    #[serde(skip)]
    pub(crate) session_seqs: Vec<(String, u64)>,
}

/// Sessions per source whose last seq is remembered for gap counting (a Bluesky source has one
/// per stream of the open run).
const SESSIONS_TRACKED: usize = 8;

impl SourceStats {
    /// Counts a gap or a regression of `seq` against the last seq of `session`.
    fn observe_seq(&mut self, session: &str, seq: u64) {
        let last = match self.session_seqs.iter().position(|(s, _)| s == session) {
            Some(at) => Some(self.session_seqs.remove(at).1),
            None => None,
        };
        let highest = match last {
            None => seq,
            Some(last) if seq > last => {
                let missing = seq - last - 1;
                if missing > 0 {
                    self.missing_messages += missing;
                    self.gaps += 1;
                    tracing::warn!(session, last, seq, missing, "sequence gap: messages lost");
                }
                seq
            }
            Some(last) => {
                self.seq_regressions += 1;
                last
            }
        };
        self.session_seqs.insert(0, (session.to_string(), highest));
        self.session_seqs.truncate(SESSIONS_TRACKED);
        self.last_seq = Some(highest);
    }
}

/// Which message: its source, session (empty for none) and seq.
#[derive(Debug, Clone, Copy)]
pub struct SeqOf<'a> {
    /// The source id.
    pub source: &'a str,
    /// The sender's session, empty if it gave none.
    pub session: &'a str,
    /// The message's seq.
    pub seq: u64,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Maximum, µs.
    pub max_us: u64,
}

/// A point-in-time copy of every metric.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    /// Messages received (accepted + rejected).
    pub messages_received: u64,
    /// Messages rejected into `ingest_errors`.
    pub messages_rejected: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// WAL group commits.
    pub wal_groups: u64,
    /// Write-path failures: WAL appends and rotations, persists, WAL clean-up.
    pub health: crate::health::HealthCounters,
    /// Messages not taken while the WAL refused a group: ROUTER messages nacked with
    /// `retry: true` and PUB messages dropped.
    pub not_durable_messages: u64,
    /// Messages waiting now, in order, for the WAL to take a held group (PULL messages, and
    /// ROUTER messages of connections owed a reply).
    pub waiting_messages: u64,
    /// Rows made durable and queryable.
    pub rows_ingested: u64,
    /// Messages a feature extractor failed on, by extractor (their raw rows were kept).
    pub feature_failures: BTreeMap<String, u64>,
    /// Receipt to durable in the WAL.
    pub receipt_to_durable: LatencySummary,
    /// Receipt to visible to SQL.
    pub receipt_to_queryable: LatencySummary,
    /// Per source id.
    pub sources: BTreeMap<String, SourceStats>,
    /// Feature-stream messages queued for at least one subscriber.
    pub publish_messages: u64,
    /// Feature-stream messages dropped for a subscriber whose queue was full (or whole groups
    /// dropped because the publisher was behind); subscribers recover them by replay.
    pub publish_dropped_messages: u64,
    /// Bytes queued for subscribers now.
    pub publish_queued_bytes: u64,
    /// Most bytes ever queued for one subscriber (never above its configured bound).
    pub publish_queued_bytes_max: u64,
    /// Subscribers connected.
    pub publish_subscribers: u64,
    /// Replay requests served.
    pub replay_requests: u64,
    /// Flight SQL connections open and refused.
    pub flight_sql: crate::doorway::DoorSnapshot,
    /// PostgreSQL connections open and refused.
    pub postgres: crate::doorway::DoorSnapshot,
    /// Bluesky documents read, refused and left out.
    pub bluesky: flowdaq_connectors::bluesky::BlueskyCountsSnapshot,
    /// Small files merged and files dropped by retention.
    pub compaction: crate::compactor::CompactionSnapshot,
    /// Delta Lake commits, and syncs that failed (with `[storage] delta_lake`).
    pub delta_lake: crate::delta_log::DeltaSyncStats,
}

struct State {
    snapshot: MetricsSnapshot,
    durable_us: Histogram<u64>,
    queryable_us: Histogram<u64>,
}

/// Shared metrics; updated once per group commit, so one mutex is cheap enough.
pub struct Metrics {
    state: Mutex<State>,
    /// Feature-stream counters, updated by the PUB socket.
    pub publish: std::sync::Arc<crate::publish::zmtp::PubCounters>,
    /// Replay requests, updated by the control endpoint.
    pub replay_requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Write-path health, updated by the WAL's user and the persister.
    pub health: std::sync::Arc<crate::health::Health>,
    /// Flight SQL connections, counted by its door.
    pub flight_sql_door: std::sync::Arc<crate::doorway::DoorCounters>,
    /// PostgreSQL connections, counted by its door.
    pub postgres_door: std::sync::Arc<crate::doorway::DoorCounters>,
    /// Bluesky documents, counted by the translator.
    pub bluesky: std::sync::Arc<flowdaq_connectors::bluesky::BlueskyCounters>,
    /// Compaction and retention, counted by the compactor.
    pub compaction: std::sync::Arc<crate::compactor::CompactionCounters>,
    /// Delta Lake syncs, counted by the table store.
    pub delta_lake: std::sync::Arc<crate::delta_log::DeltaSyncCounters>,
    /// Messages fully processed (committed or failed), for waiters.
    processed: tokio::sync::watch::Sender<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        // Constant, valid bounds: 1 µs to 60 s at 3 significant digits.
        let histogram =
            || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Metrics {
            state: Mutex::new(State {
                snapshot: MetricsSnapshot::default(),
                durable_us: histogram(),
                queryable_us: histogram(),
            }),
            processed: tokio::sync::watch::Sender::new(0),
            publish: Default::default(),
            replay_requests: Default::default(),
            health: Default::default(),
            flight_sql_door: Default::default(),
            postgres_door: Default::default(),
            bluesky: Default::default(),
            compaction: Default::default(),
            delta_lake: Default::default(),
        }
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an accepted message and checks its `seq` for gaps.
    pub fn accepted(&self, message: SeqOf<'_>, transport: &str, rows: u64, bytes: u64) {
        let mut state = self.lock();
        let snapshot = &mut state.snapshot;
        snapshot.messages_received += 1;
        snapshot.bytes_received += bytes;
        let stats = snapshot
            .sources
            .entry(message.source.to_string())
            .or_default();
        if stats.transport != transport {
            stats.transport = transport.to_string();
        }
        stats.messages += 1;
        stats.rows += rows;
        stats.bytes += bytes;
        stats.observe_seq(message.session, message.seq);
    }

    /// Records a resend of a committed message.
    pub fn duplicate(&self, source: &str) {
        let mut state = self.lock();
        state.snapshot.messages_received += 1;
        state
            .snapshot
            .sources
            .entry(source.to_string())
            .or_default()
            .duplicates += 1;
    }

    /// Records a message not taken because the WAL is failing (nacked or dropped).
    pub fn not_durable(&self) {
        self.processed.send_modify(|n| *n += 1);
        let mut state = self.lock();
        state.snapshot.messages_received += 1;
        state.snapshot.not_durable_messages += 1;
    }

    /// Sets how many messages wait for a held group.
    pub fn set_waiting(&self, messages: usize) {
        self.lock().snapshot.waiting_messages = messages as u64;
    }

    /// Starts a source's seq tracking where the last run left it (from the seq ledger), so
    /// gaps and regressions across a restart are counted.
    pub fn resume_seq(&self, message: SeqOf<'_>) {
        let mut state = self.lock();
        let stats = state
            .snapshot
            .sources
            .entry(message.source.to_string())
            .or_default();
        if stats.session_seqs.len() < SESSIONS_TRACKED {
            stats
                .session_seqs
                .push((message.session.to_string(), message.seq));
        }
        if stats.last_seq.is_none() {
            stats.last_seq = Some(message.seq);
        }
    }

    /// Records a rejected message.
    pub fn rejected(&self, source: Option<&str>, bytes: u64) {
        let mut state = self.lock();
        state.snapshot.messages_received += 1;
        state.snapshot.messages_rejected += 1;
        state.snapshot.bytes_received += bytes;
        if let Some(source) = source {
            state
                .snapshot
                .sources
                .entry(source.to_string())
                .or_default()
                .rejected += 1;
        }
    }

    /// Records a group commit: rows made durable and each message's latencies.
    pub fn committed(&self, rows: u64, durable: &[Duration], queryable: &[Duration]) {
        self.processed.send_modify(|n| *n += durable.len() as u64);
        let mut state = self.lock();
        state.snapshot.wal_groups += 1;
        state.snapshot.rows_ingested += rows;
        for d in durable {
            let _ = state
                .durable_us
                .record((d.as_micros() as u64).clamp(1, 60_000_000));
        }
        for d in queryable {
            let _ = state
                .queryable_us
                .record((d.as_micros() as u64).clamp(1, 60_000_000));
        }
    }

    /// Records a message that the extractor `name` could not analyse.
    pub fn feature_failed(&self, name: &str) {
        *self
            .lock()
            .snapshot
            .feature_failures
            .entry(name.to_string())
            .or_default() += 1;
    }

    /// Waits until at least `messages` messages have been processed (durable and queryable,
    /// or failed) since start, or `timeout` passes. Returns whether the count was reached.
    pub async fn wait_processed(&self, messages: u64, timeout: Duration) -> bool {
        let mut receiver = self.processed.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|n| *n >= messages))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Messages processed so far.
    pub fn processed(&self) -> u64 {
        *self.processed.borrow()
    }

    /// Clears the latency histograms (the load generator measures one phase at a time).
    pub fn reset_latencies(&self) {
        let mut state = self.lock();
        state.durable_us.reset();
        state.queryable_us.reset();
    }

    /// A copy of every metric.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let state = self.lock();
        let mut snapshot = state.snapshot.clone();
        snapshot.receipt_to_durable = summary(&state.durable_us);
        snapshot.receipt_to_queryable = summary(&state.queryable_us);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let load_usize = |a: &std::sync::atomic::AtomicUsize| {
            a.load(std::sync::atomic::Ordering::Relaxed) as u64
        };
        snapshot.publish_messages = load(&self.publish.messages);
        snapshot.publish_dropped_messages = load(&self.publish.dropped_messages);
        snapshot.publish_queued_bytes = load_usize(&self.publish.queued_bytes);
        snapshot.publish_queued_bytes_max = load_usize(&self.publish.queued_bytes_max);
        snapshot.publish_subscribers = load_usize(&self.publish.subscribers);
        snapshot.replay_requests = load(&self.replay_requests);
        snapshot.health = self.health.counters();
        snapshot.flight_sql = self.flight_sql_door.snapshot();
        snapshot.postgres = self.postgres_door.snapshot();
        snapshot.bluesky = self.bluesky.snapshot();
        snapshot.compaction = self.compaction.snapshot();
        snapshot.delta_lake = self.delta_lake.snapshot();
        snapshot
    }
}

fn summary(h: &Histogram<u64>) -> LatencySummary {
    LatencySummary {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_the_missing_messages() {
        let metrics = Metrics::default();
        let seq_of = |session, seq| SeqOf {
            source: "pub-1",
            session,
            seq,
        };
        for seq in [0, 1, 2, 5, 6, 10] {
            metrics.accepted(seq_of("", seq), "sub", 1, 10);
        }
        metrics.accepted(seq_of("", 3), "sub", 1, 10);
        let stats = &metrics.snapshot().sources["pub-1"];
        assert_eq!(stats.missing_messages, 2 + 3);
        assert_eq!(stats.gaps, 2);
        assert_eq!(stats.seq_regressions, 1);
        assert_eq!(stats.last_seq, Some(10));
    }

    #[test]
    fn each_session_is_its_own_counter() {
        // Two interleaved streams of one source (a run's primary and baseline events), then a
        // new run whose counters start at 1 again: no gap, no regression; a real gap in one
        // stream is still seen.
        let metrics = Metrics::default();
        let seq_of = |session, seq| SeqOf {
            source: "bluesky",
            session,
            seq,
        };
        for (session, seq) in [
            ("baseline-a", 1),
            ("primary-a", 1),
            ("primary-a", 2),
            ("baseline-a", 2),
            ("primary-b", 1),
            ("primary-b", 4),
        ] {
            metrics.accepted(seq_of(session, seq), "bluesky", 1, 10);
        }
        let stats = &metrics.snapshot().sources["bluesky"];
        assert_eq!(stats.seq_regressions, 0);
        assert_eq!((stats.gaps, stats.missing_messages), (1, 2));
        assert_eq!(stats.last_seq, Some(4));
    }
}
