//! The ingest pipeline: messages in, durable and queryable rows and acknowledgements out.
//!
//! Two stages with one direction: [`accept`] (header and resend check on this thread, then
//! decode and features per message on the accept [`workers`], one per core, each owning the
//! state of its sources) and [`commit`] (in arrival order: tagging, numbering, one WAL entry
//! per group, write buffer, acknowledgements, feature stream). The loop takes everything
//! waiting, up to `max_group_messages` and `max_group_bytes`, as one group, so one fsync
//! covers it; under load the next group is accepted while the previous one is committed.
//!
//! It never stops for a bad message (a rejection is a row of `ingest_errors`), never blocks
//! good data for it, and bounds what it holds: while the WAL refuses a group, ROUTER senders
//! are nacked with `retry: true` (unless the held group owes their connection a reply: replies
//! keep their order per connection, so those wait), PUB messages are dropped and counted, and
//! PULL messages wait (their byte budget stops the sockets' reads); while the write buffer is at its bound, the
//! loop stops taking messages, so senders block. It runs on a dedicated thread (WAL writes and
//! fsync block). Condition registrations come through the same loop, so "every measurement
//! arriving after it" has one meaning.

mod accept;
mod commit;
mod rejection;
mod reply;
mod workers;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use flowdaq_connectors::transport::{Inbound, ReplyTo, TransportKind};
use flowdaq_schemas::Header;
use tokio::sync::mpsc;

use self::accept::{AcceptContext, Screened, Screener};
use self::commit::Committer;
use self::workers::{AcceptPool, Handed, Ready};
use crate::conditions::Conditions;
use crate::config::ServerConfig;
use crate::control::RegisterRequest;
use crate::health::Health;
use crate::ledger::SeqLedger;
use crate::metrics::Metrics;
use crate::outcomes::OutcomeTracker;
use crate::publish::sequencer::StreamSequencer;
use crate::publish::Publisher;
use crate::wal::Wal;
use crate::write_buffer::{Snapshot, WriteBuffer};

/// An acknowledgement to send back through the ROUTER socket.
pub type Ack = (ReplyTo, serde_json::Value);

/// The pipeline's part in conditions, outcomes and the feature stream.
pub struct StreamParts {
    /// Registered conditions, current per run.
    pub conditions: Conditions,
    /// Steady-state detection.
    pub tracker: OutcomeTracker,
    /// Numbers published rows.
    pub sequencer: StreamSequencer,
    /// Sends committed rows to subscribers, if publishing is on.
    pub publisher: Option<Publisher>,
    /// Sends committed rows to HTTP listeners (`GET /events`).
    pub events: crate::publish::events::EventFeed,
    /// Registrations from the control endpoint and HTTP.
    pub registrations: mpsc::Receiver<RegisterRequest>,
}

/// What the pipeline is built from (the server's start-up assembles it).
pub struct PipelineParts {
    /// Server configuration.
    pub config: Arc<ServerConfig>,
    /// The WAL, opened after recovery.
    pub wal: Wal,
    /// The write buffer, holding the replayed rows.
    pub buffer: Arc<WriteBuffer>,
    /// Ingest metrics.
    pub metrics: Arc<Metrics>,
    /// Write-path health.
    pub health: Arc<Health>,
    /// Where snapshots go to the persister.
    pub snapshots: std::sync::mpsc::Sender<Arc<Snapshot>>,
    /// Where acknowledgements go to the ROUTER socket.
    pub acks: mpsc::UnboundedSender<Ack>,
    /// `(source, calibration_id)` already stored.
    pub seen_calibrations: HashSet<(String, u64)>,
    /// Committed seqs, recovered from the catalog and the WAL.
    pub ledger: SeqLedger,
    /// Conditions, outcomes, stream numbers, publisher.
    pub streams: StreamParts,
}

/// The pipeline; see the module doc.
pub struct Pipeline {
    screener: Screener,
    pool: AcceptPool,
    committer: Committer,
    /// PULL messages taken while a group is held: they wait, in order, for the WAL.
    deferred: VecDeque<Inbound>,
    /// The group being accepted by the workers, committed next.
    in_flight: Option<InFlight>,
}

/// A group handed to the workers.
struct InFlight {
    handed: Handed,
    /// Messages answered at screening (duplicates, bad headers), by position.
    screened_out: Vec<(usize, accept::Accepted)>,
}

/// What the loop takes next.
enum Next {
    Message(Inbound),
    Registration(RegisterRequest),
    Idle,
    Closed,
}

/// How often outcomes of conditions whose data stopped are checked for their timeout.
const OUTCOME_TICK: Duration = Duration::from_secs(1);
/// First and longest wait between two attempts at a held group.
const STALL_RETRY_FIRST: Duration = Duration::from_millis(50);
const STALL_RETRY_MAX: Duration = Duration::from_secs(1);
/// Attempts at a held group once the server is stopping.
const STALL_ATTEMPTS_AT_SHUTDOWN: u32 = 3;
/// How long the loop waits for the persister to free room before it looks around again.
const ROOM_WAIT: Duration = Duration::from_millis(100);

impl Pipeline {
    /// A pipeline from its parts, with `workers` accept workers (at least one).
    ///
    /// # Errors
    /// [`crate::features::FeatureError`] if the feature options are refused or a worker
    /// cannot start.
    pub fn new(
        parts: PipelineParts,
        features: &crate::config::FeaturesConfig,
        workers: usize,
    ) -> Result<Pipeline, crate::features::FeatureError> {
        let context = AcceptContext::new(parts.config.clone(), parts.metrics.clone());
        let pool = AcceptPool::new(&context, features, workers)?;
        Ok(Pipeline {
            screener: Screener::new(context),
            pool,
            committer: Committer::new(parts),
            deferred: VecDeque::new(),
            in_flight: None,
        })
    }

    /// Runs until `inbound` is closed and drained, then writes the last windows and snapshots
    /// what is left.
    pub fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, runtime: tokio::runtime::Handle) {
        let tick = self
            .committer
            .config
            .buffer
            .flush_interval()
            .min(Duration::from_millis(500));
        let mut registrations_open = true;
        let mut last_tick = std::time::Instant::now();
        let mut stall_delay = STALL_RETRY_FIRST;
        loop {
            if last_tick.elapsed() >= OUTCOME_TICK {
                last_tick = std::time::Instant::now();
                self.complete_in_flight();
                self.committer.outcome_tick();
            }
            if self.committer.is_stalled() {
                self.complete_in_flight();
                match self.wait_while_stalled(&mut inbound, &runtime, stall_delay) {
                    Some(true) => stall_delay = STALL_RETRY_FIRST,
                    Some(false) => stall_delay = (stall_delay * 2).min(STALL_RETRY_MAX),
                    None => break,
                }
                continue;
            }
            if self.over_buffer_bound() {
                self.complete_in_flight();
                self.committer.health.set_backpressure(true);
                self.committer.maybe_snapshot(false);
                self.committer
                    .buffer
                    .wait_for_room(self.buffer_bound(), ROOM_WAIT);
                if inbound.is_closed() && self.committer.buffer.stats().persisting_snapshots > 0 {
                    // Stopping while the persister cannot keep up: what is queued waits for
                    // the next start (unacknowledged), the buffered rows are in the WAL.
                    if self.over_buffer_bound() {
                        tracing::warn!(
                            "stopping with the write buffer full; queued messages not taken"
                        );
                        break;
                    }
                }
                continue;
            }
            self.committer.health.set_backpressure(false);
            let first = match self.deferred.pop_front() {
                Some(message) => message,
                None => {
                    if inbound.is_empty() {
                        // Nothing else waiting: commit what the workers have now, not later.
                        self.complete_in_flight();
                    }
                    let registrations = &mut self.committer.streams.registrations;
                    let next = runtime.block_on(async {
                        tokio::select! {
                            biased;
                            r = registrations.recv(), if registrations_open => match r {
                                Some(r) => Next::Registration(r),
                                None => Next::Idle,
                            },
                            m = tokio::time::timeout(tick, inbound.recv()) => match m {
                                Ok(Some(m)) => Next::Message(m),
                                Ok(None) => Next::Closed,
                                Err(_elapsed) => Next::Idle,
                            },
                        }
                    });
                    match next {
                        Next::Message(message) => message,
                        Next::Closed => break,
                        Next::Registration(request) => {
                            // Everything that arrived before it is committed untagged by it.
                            self.complete_in_flight();
                            self.committer.register(request);
                            continue;
                        }
                        Next::Idle => {
                            self.complete_in_flight();
                            let registrations = &self.committer.streams.registrations;
                            registrations_open =
                                !registrations.is_closed() || !registrations.is_empty();
                            self.committer.maybe_snapshot(false);
                            continue;
                        }
                    }
                }
            };
            let group = self.take_group(first, &mut inbound);
            let handed = self.hand_out(group);
            // The previous group commits while the workers accept this one.
            self.complete_in_flight();
            self.in_flight = Some(handed);
            self.committer.maybe_snapshot(false);
        }
        self.complete_in_flight();
        self.finish();
    }

    /// `first` and whatever else is waiting (deferred messages first), up to the group bounds.
    fn take_group(
        &mut self,
        first: Inbound,
        inbound: &mut mpsc::Receiver<Inbound>,
    ) -> Vec<Inbound> {
        let ingest = &self.committer.config.ingest;
        let (max_messages, max_bytes) = (ingest.max_group_messages.max(1), ingest.max_group_bytes);
        let mut bytes = first.size_bytes();
        let mut group = Vec::with_capacity(max_messages.min(64));
        group.push(first);
        while group.len() < max_messages && bytes < max_bytes as u64 {
            let next = match self.deferred.pop_front() {
                Some(message) => message,
                None => match inbound.try_recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            bytes += next.size_bytes();
            group.push(next);
        }
        group
    }

    /// Screens a group's messages here (header, resend check) and hands the rest to the
    /// accept workers.
    fn hand_out(&mut self, group: Vec<Inbound>) -> InFlight {
        let mut ready = Vec::with_capacity(group.len());
        let mut screened_out = Vec::new();
        for (position, message) in group.into_iter().enumerate() {
            let committer = &self.committer;
            let screened = self.screener.screen(message, |source, session, seq| {
                committer.seen(source, session, seq)
            });
            match screened {
                Screened::Ready {
                    message,
                    header,
                    key,
                } => {
                    self.committer.hold_key(&key);
                    ready.push(Ready {
                        position,
                        message,
                        header,
                        key,
                    });
                }
                Screened::Done(accepted) => screened_out.push((position, accepted)),
            }
        }
        InFlight {
            handed: self.pool.hand_out(ready),
            screened_out,
        }
    }

    /// Collects the group in flight from the workers and commits it.
    fn complete_in_flight(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let mut accepted = self.pool.collect(in_flight.handed);
        accepted.extend(in_flight.screened_out);
        accepted.sort_unstable_by_key(|(position, _)| *position);
        let (group, retry) = self
            .committer
            .assemble(accepted.into_iter().map(|(_, a)| a).collect());
        self.committer.commit(group);
        // Resends of messages that were refused: accepted after all, next.
        for message in retry.into_iter().rev() {
            self.deferred.push_front(message);
        }
    }

    fn process_group(&mut self, group: Vec<Inbound>) {
        self.complete_in_flight();
        let handed = self.hand_out(group);
        self.in_flight = Some(handed);
        self.complete_in_flight();
    }

    /// While a group is held: waits up to `delay` for a message (nacked, dropped or deferred
    /// by transport), then retries the group. `Some(true)` once it is durable, `Some(false)`
    /// if it is still held, `None` if the intake closed (the server is stopping) and the group
    /// still failed a few more times.
    fn wait_while_stalled(
        &mut self,
        inbound: &mut mpsc::Receiver<Inbound>,
        runtime: &tokio::runtime::Handle,
        delay: Duration,
    ) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + delay;
        let mut closed = false;
        loop {
            let registrations = &mut self.committer.streams.registrations;
            let next = runtime.block_on(async {
                tokio::select! {
                    biased;
                    Some(r) = registrations.recv() => Ok(Next::Registration(r)),
                    m = tokio::time::timeout_at(deadline, inbound.recv()) => m.map(|m| match m {
                        Some(m) => Next::Message(m),
                        None => Next::Closed,
                    }),
                }
            });
            match next {
                Ok(Next::Message(message)) => {
                    self.while_stalled(message);
                    self.committer.metrics.set_waiting(self.deferred.len());
                }
                // Answered "not durable" at once, not left waiting.
                Ok(Next::Registration(request)) => self.committer.register(request),
                Ok(Next::Closed) => {
                    closed = true;
                    break;
                }
                Ok(Next::Idle) | Err(_) => break,
            }
        }
        if self.committer.retry_stalled() {
            self.committer.metrics.set_waiting(0);
            return Some(true);
        }
        if closed {
            for _ in 1..STALL_ATTEMPTS_AT_SHUTDOWN {
                std::thread::sleep(delay);
                if self.committer.retry_stalled() {
                    return Some(true);
                }
            }
            tracing::error!("stopping with a group the WAL refused: not acknowledged, not stored");
            return None;
        }
        Some(false)
    }

    /// A message that arrives while a group is held. Replies to one connection keep their
    /// order: a ROUTER message from a connection still owed a reply (by a held group, or by an
    /// earlier waiting message) waits too; others are nacked at once.
    fn while_stalled(&mut self, message: Inbound) {
        match message.transport {
            TransportKind::Pull => self.deferred.push_back(message),
            TransportKind::Sub | TransportKind::Bluesky => self.committer.metrics.not_durable(),
            TransportKind::Router => {
                let Some(to) = message.reply_to.clone() else {
                    return;
                };
                let owed = self.committer.owes_reply(&to)
                    || self.deferred.iter().any(|m| {
                        m.reply_to
                            .as_ref()
                            .is_some_and(|r| r.identity() == to.identity())
                    });
                if owed {
                    self.deferred.push_back(message);
                    return;
                }
                let reason = self.committer.stall_reason();
                let header = message.frames.first().and_then(|f| Header::parse(f).ok());
                let (source, seq) = header.map_or((None, None), |h| (Some(h.source), Some(h.seq)));
                let body = reply::not_durable(source.as_deref(), seq, &reason);
                self.committer.send_reply((to, body));
                self.committer.metrics.not_durable();
            }
        }
    }

    /// The write buffer's bound in bytes (open and persisting together).
    fn buffer_bound(&self) -> usize {
        self.committer.config.buffer.max_buffered_bytes
    }

    fn over_buffer_bound(&self) -> bool {
        let stats = self.committer.buffer.stats();
        stats.open_bytes + stats.persisting_bytes >= self.buffer_bound()
    }

    /// At shutdown: the windows still open, deferred messages if the WAL takes them, and the
    /// last snapshot.
    fn finish(&mut self) {
        if !self.committer.is_stalled() && !self.deferred.is_empty() {
            let deferred: Vec<Inbound> = self.deferred.drain(..).collect();
            self.process_group(deferred);
        }
        let derived = self.pool.finish_all();
        if !derived.is_empty() && !self.committer.is_stalled() {
            let group = self.committer.rows_group(derived);
            if !self.committer.commit(group) {
                tracing::error!("WAL append failed; last windows not written");
            }
        }
        self.committer.maybe_snapshot(true);
    }
}
pub fn known_calibrations(
    batches: &[RecordBatch],
    tables: &dyn crate::table_store::TableStore,
    files: &[crate::catalog::CatalogFile],
) -> HashSet<(String, u64)> {
    let mut known = HashSet::new();
    let mut add = |batch: &RecordBatch| {
        let (Some(sources), Some(ids)) = (
            batch.column_by_name("source"),
            batch.column_by_name("calibration_id"),
        ) else {
            return;
        };
        let (Some(sources), Some(ids)) = (
            sources.as_string_opt::<i32>(),
            ids.as_primitive_opt::<UInt64Type>(),
        ) else {
            return;
        };
        for row in 0..batch.num_rows() {
            if sources.is_valid(row) {
                known.insert((sources.value(row).to_string(), ids.value(row)));
            }
        }
    };
    batches.iter().for_each(&mut add);
    for file in files {
        let reader = tables
            .read(&file.path)
            .map_err(parquet::errors::ParquetError::from)
            .and_then(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new)
            .and_then(|b| b.build());
        match reader {
            Ok(reader) => reader.flatten().for_each(|b| add(&b)),
            Err(err) => tracing::warn!(path = %file.path, %err, "cannot read calibrations"),
        }
    }
    known
}

#[cfg(test)]
mod tests;
