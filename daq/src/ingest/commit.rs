//! The commit stage: accepted messages in arrival order in, one durable WAL entry per group
//! out; then the write buffer, the acknowledgements and the feature stream.
//!
//! Everything that needs one order lives here: condition tagging, stored-once calibrations,
//! outcome tracking, stream numbers, the seq ledger. A group whose WAL append fails is held,
//! not dropped: its messages were accepted (their data is already in the extractors' windows),
//! so it is retried until the WAL takes it, and only then acknowledged. Meanwhile the pipeline
//! nacks what it cannot take. Snapshots for the persister are taken here too, between two
//! groups, because the WAL rotation and the snapshot must see the same boundary.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;
use serde_json::json;
use tokio::sync::mpsc;

use flowdaq_connectors::transport::Inbound;

use super::accept::{Accepted, SeqKey};
use super::rejection::rejection_batch;
use super::{Ack, PipelineParts, StreamParts};
use crate::conditions::{condition_batch, ConditionTimes};
use crate::config::ServerConfig;
use crate::control::RegisterRequest;
use crate::health::Health;
use crate::ledger::{SeqLedger, SeqSpan, SpanBuilder};
use crate::metrics::Metrics;
use crate::wal::{Wal, WalError};
use crate::write_buffer::{Snapshot, WriteBuffer};

/// What the commit stage knows of a message's seq key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Never accepted.
    New,
    /// Durable: a resend.
    Committed,
    /// Accepted, its group not committed yet: a resend if that message is stored, not if it
    /// is refused (then this one is accepted after all).
    Pending,
}

/// Snapshots written or waiting for the persister; beyond this, rows stay open in the buffer
/// (whose byte bound then stops intake).
pub(super) const MAX_PERSISTING_SNAPSHOTS: usize = 2;

/// One group commit in the making, or held after a failed append.
#[derive(Default)]
pub(super) struct Group {
    batches: Vec<(Table, RecordBatch)>,
    spans: Vec<SeqSpan>,
    keys: Vec<SeqKey>,
    replies: Vec<Ack>,
    received: Vec<Instant>,
    rows: u64,
}

impl Group {
    /// Messages in the group.
    pub(super) fn messages(&self) -> usize {
        self.received.len()
    }
}

/// The commit stage's state; see the module doc.
pub(super) struct Committer {
    pub(super) config: Arc<ServerConfig>,
    wal: Wal,
    pub(super) buffer: Arc<WriteBuffer>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    snapshots: std::sync::mpsc::Sender<Arc<Snapshot>>,
    acks: mpsc::UnboundedSender<Ack>,
    seen_calibrations: HashSet<(String, u64)>,
    pub(super) streams: StreamParts,
    /// Committed seqs (as durable as the WAL).
    ledger: SeqLedger,
    /// Accepted seqs not committed yet.
    pending: HashSet<SeqKey>,
    /// Groups the WAL refused, oldest first, retried until it takes them.
    stalled: VecDeque<Group>,
}

impl Committer {
    pub(super) fn new(parts: PipelineParts) -> Committer {
        Committer {
            config: parts.config,
            wal: parts.wal,
            buffer: parts.buffer,
            metrics: parts.metrics,
            health: parts.health,
            snapshots: parts.snapshots,
            acks: parts.acks,
            seen_calibrations: parts.seen_calibrations,
            streams: parts.streams,
            ledger: parts.ledger,
            pending: HashSet::new(),
            stalled: VecDeque::new(),
        }
    }

    /// Whether `(source, session, seq)` is committed, accepted (not committed yet) or new.
    /// Without a session, seq 0 is a restarted counter, never a resend (see `crate::ledger`).
    pub(super) fn seen(&self, source: &str, session: &str, seq: u64) -> Seen {
        if session.is_empty() && seq == 0 {
            return Seen::New;
        }
        if self.ledger.is_committed(source, session, seq) {
            Seen::Committed
        } else if self
            .pending
            .contains(&(source.to_string(), session.to_string(), seq))
        {
            Seen::Pending
        } else {
            Seen::New
        }
    }

    /// Marks an accepted message's seq as taken until its group commits.
    pub(super) fn hold_key(&mut self, key: &SeqKey) {
        self.pending.insert(key.clone());
    }

    /// Whether a group is held after a failed append.
    pub(super) fn is_stalled(&self) -> bool {
        !self.stalled.is_empty()
    }

    /// Turns accepted messages (in arrival order) into one group: tagged, numbered, with the
    /// group's `ingest_errors` and settled outcomes. Also returns the resends of messages
    /// that turned out to be refused: they must be accepted after all.
    pub(super) fn assemble(&mut self, accepted: Vec<Accepted>) -> (Group, Vec<Inbound>) {
        let mut retry = Vec::new();
        let mut group = Group::default();
        let mut batches = Vec::new();
        let mut rejections = Vec::new();
        let mut spans = SpanBuilder::default();
        for message in accepted {
            match message {
                Accepted::Rows(mut rows) => {
                    if rows.tag_condition {
                        let conditions = &self.streams.conditions;
                        let tagged = conditions
                            .tag(&rows.run_id, &mut rows.raw)
                            .and_then(|()| conditions.tag(&rows.run_id, &mut rows.derived));
                        if let Err(err) = tagged {
                            tracing::error!(%err, "cannot tag rows with their condition");
                        }
                    }
                    for (table, batch) in rows.raw {
                        let batch = match table {
                            Table::SpectralCalibrations => self.new_calibrations(batch),
                            _ => Some(batch),
                        };
                        if let Some(batch) = batch {
                            group.rows += batch.num_rows() as u64;
                            batches.push((table, batch));
                        }
                    }
                    for (table, batch) in rows.derived {
                        self.streams.tracker.observe(table, &batch);
                        group.rows += batch.num_rows() as u64;
                        batches.push((table, batch));
                    }
                    let (source, session, seq) = &rows.key;
                    spans.push(source, session, *seq);
                    group.keys.push(rows.key);
                    group.replies.extend(rows.reply);
                    group.received.push(rows.received_at);
                }
                Accepted::Duplicate { reply, received_at } => {
                    group.replies.extend(reply);
                    group.received.push(received_at);
                }
                Accepted::ResendOfPending { message, key } => {
                    // The earlier message with this key is in this group or an earlier one.
                    if self.ledger.is_committed(&key.0, &key.1, key.2)
                        || self.pending.contains(&key)
                    {
                        self.metrics.duplicate(&key.0);
                        let reply = message
                            .reply_to
                            .clone()
                            .map(|to| (to, super::reply::duplicate(&key.0, key.2)));
                        group.replies.extend(reply);
                        group.received.push(message.received_at);
                    } else {
                        retry.push(*message);
                    }
                }
                Accepted::Rejected {
                    rejection,
                    reply,
                    received_at,
                    held,
                } => {
                    if let Some(key) = held {
                        self.pending.remove(&key);
                    }
                    rejections.push(rejection);
                    group.replies.extend(reply);
                    group.received.push(received_at);
                }
            }
        }
        if !rejections.is_empty() {
            match rejection_batch(&rejections) {
                Ok(batch) => batches.push((Table::IngestErrors, batch)),
                Err(err) => tracing::error!(%err, "cannot build ingest_errors rows"),
            }
        }
        self.take_outcomes(&mut batches);
        group.batches = self.sequence(coalesce_by_table(batches));
        group.spans = spans.finish();
        (group, retry)
    }

    /// Rows with no message behind them (windows closed at shutdown, timed-out outcomes) as
    /// a group of their own.
    pub(super) fn rows_group(&mut self, derived: Vec<(Table, RecordBatch)>) -> Group {
        let mut batches = Vec::new();
        let mut rows = 0;
        for (table, batch) in derived {
            self.streams.tracker.observe(table, &batch);
            rows += batch.num_rows() as u64;
            batches.push((table, batch));
        }
        self.take_outcomes(&mut batches);
        Group {
            batches: self.sequence(coalesce_by_table(batches)),
            rows,
            ..Group::default()
        }
    }

    /// Numbers the published rows. A schema bug keeps the raw rows rather than lose the group.
    fn sequence(&mut self, mut batches: Vec<(Table, RecordBatch)>) -> Vec<(Table, RecordBatch)> {
        if let Err(err) = self.streams.sequencer.sequence(&mut batches) {
            tracing::error!(%err, "cannot number published rows; they are not stored");
            batches.retain(|(t, _)| !t.is_published());
        }
        batches
    }

    /// Writes the group to the WAL and completes it, or holds it if the WAL refuses it (or
    /// an earlier group is held: groups commit in order). Returns whether it is durable.
    pub(super) fn commit(&mut self, group: Group) -> bool {
        if self.is_stalled() {
            self.stalled.push_back(group);
            return false;
        }
        self.append(group)
    }

    fn append(&mut self, group: Group) -> bool {
        if group.batches.is_empty() && group.spans.is_empty() {
            self.complete(group);
            return true;
        }
        match self.wal.append(&group.batches, &group.spans) {
            Ok(_) => {
                self.health.wal_ok();
                self.complete(group);
                true
            }
            Err(err) => {
                tracing::error!(%err, messages = group.messages(), "WAL append failed; group held and retried");
                self.health.wal_failed(err.to_string());
                self.stalled.push_front(group);
                false
            }
        }
    }

    /// Whether a held group owes a reply to the connection `to`: its later messages must
    /// then wait too, or their replies would overtake.
    pub(super) fn owes_reply(&self, to: &flowdaq_connectors::transport::ReplyTo) -> bool {
        self.stalled
            .iter()
            .flat_map(|g| g.replies.iter())
            .any(|(owed, _)| owed.identity() == to.identity())
    }

    /// Tries the held groups again, in order. Returns whether none is held any more.
    pub(super) fn retry_stalled(&mut self) -> bool {
        while let Some(group) = self.stalled.pop_front() {
            if !self.append(group) {
                return false;
            }
        }
        true
    }

    /// Sends a reply to a ROUTER sender (the acknowledgement task sends them in order).
    pub(super) fn send_reply(&self, reply: Ack) {
        let _ = self.acks.send(reply);
    }

    /// The reason the WAL gave last, for nacks while a group is held.
    pub(super) fn stall_reason(&self) -> String {
        self.health
            .report()
            .wal
            .map_or_else(|| "write-ahead log failing".to_string(), |f| f.reason)
    }

    /// After a durable append: the ledger, the buffer, the acknowledgements, the stream.
    fn complete(&mut self, group: Group) {
        self.ledger.commit_all(&group.spans);
        for key in &group.keys {
            self.pending.remove(key);
        }
        let durable: Vec<Duration> = group.received.iter().map(Instant::elapsed).collect();
        self.buffer.insert(&group.batches);
        let queryable: Vec<Duration> = group.received.iter().map(Instant::elapsed).collect();
        for reply in group.replies {
            let _ = self.acks.send(reply);
        }
        self.metrics.committed(group.rows, &durable, &queryable);
        if let Some(publisher) = &self.streams.publisher {
            publisher.publish(&group.batches);
        }
        self.streams.events.publish(&group.batches);
    }

    fn take_outcomes(&mut self, batches: &mut Vec<(Table, RecordBatch)>) {
        match self
            .streams
            .tracker
            .take_rows(flowdaq_connectors::transport::now_ns())
        {
            Ok(Some(outcomes)) => batches.push((Table::ConditionOutcomes, outcomes)),
            Ok(None) => {}
            Err(err) => tracing::error!(%err, "cannot build condition_outcomes rows"),
        }
    }

    /// Writes the outcomes of conditions that timed out while their data had stopped.
    pub(super) fn outcome_tick(&mut self) {
        if self.is_stalled() {
            return;
        }
        self.streams
            .tracker
            .tick(flowdaq_connectors::transport::now_ns());
        let group = self.rows_group(Vec::new());
        if !group.batches.is_empty() {
            self.commit(group);
        }
    }

    /// Registers a condition: its row (and the outcomes of the condition it supersedes) in one
    /// group commit, then the answer. Refused at once while the WAL is failing.
    pub(super) fn register(&mut self, request: RegisterRequest) {
        let RegisterRequest {
            registration,
            reply,
        } = request;
        if self.is_stalled() {
            let reason = self.stall_reason();
            let _ = reply.send(json!({"ok": false, "error": format!("not durable: {reason}")}));
            return;
        }
        if let Err(err) = self.streams.conditions.check(&registration) {
            let _ = reply.send(json!({"ok": false, "error": err.to_string()}));
            return;
        }
        let arrival_time_ns = flowdaq_connectors::transport::now_ns();
        let start_time_ns = registration.start_time_ns.unwrap_or(arrival_time_ns);
        let row = match condition_batch(&registration, arrival_time_ns, start_time_ns) {
            Ok(row) => row,
            Err(err) => {
                let _ = reply.send(json!({"ok": false, "error": err.to_string()}));
                return;
            }
        };
        let times = ConditionTimes {
            start_time_ns,
            registered_at_ns: arrival_time_ns,
        };
        self.streams.tracker.condition_started(
            &registration.run_id,
            &registration.condition_id,
            times,
        );
        let mut batches = vec![(Table::Conditions, row)];
        self.take_outcomes(&mut batches);
        match self.append_or_undo(batches) {
            Ok(batches) => {
                self.health.wal_ok();
                self.streams.conditions.apply(
                    &registration.run_id,
                    &registration.condition_id,
                    times,
                );
                self.buffer.insert(&batches);
                self.metrics.committed(0, &[], &[]);
                let _ = reply.send(json!({
                    "ok": true,
                    "run_id": registration.run_id,
                    "condition_id": registration.condition_id,
                    "start_time_ns": start_time_ns,
                }));
                if let Some(publisher) = &self.streams.publisher {
                    publisher.publish(&batches);
                }
                self.streams.events.publish(&batches);
                tracing::info!(run_id = %registration.run_id, condition_id = %registration.condition_id, "condition registered");
            }
            Err(err) => {
                self.health.wal_failed(err.to_string());
                let _ = reply.send(json!({"ok": false, "error": format!("not durable: {err}")}));
            }
        }
    }

    /// Numbers and appends `batches`, giving the numbers back if the append fails.
    fn append_or_undo(
        &mut self,
        batches: Vec<(Table, RecordBatch)>,
    ) -> Result<Vec<(Table, RecordBatch)>, WalError> {
        let mut batches = coalesce_by_table(batches);
        let undo = match self.streams.sequencer.sequence(&mut batches) {
            Ok(undo) => undo,
            Err(err) => {
                tracing::error!(%err, "cannot number published rows; they are not stored");
                batches.retain(|(t, _)| !t.is_published());
                Default::default()
            }
        };
        if let Err(err) = self.wal.append(&batches, &[]) {
            self.streams.sequencer.undo(undo);
            return Err(err);
        }
        Ok(batches)
    }

    /// Rotates the WAL and hands the open rows to the persister when they are due (size or
    /// age), unless a group is held or the persister already has enough to do. `force` (at
    /// shutdown) snapshots whatever is open.
    pub(super) fn maybe_snapshot(&mut self, force: bool) {
        if self.is_stalled() {
            return;
        }
        let (open_bytes, age) = self.buffer.open_load();
        let due = open_bytes >= self.config.buffer.flush_bytes
            || age.is_some_and(|a| a >= self.config.buffer.flush_interval())
            || (force && age.is_some());
        if !due {
            return;
        }
        if !force && self.buffer.stats().persisting_snapshots >= MAX_PERSISTING_SNAPSHOTS {
            return;
        }
        match self.wal.rotate() {
            Ok(through) => {
                if let Some(snapshot) = self.buffer.take_snapshot(through, self.ledger.clone()) {
                    if self.snapshots.send(snapshot).is_err() {
                        tracing::error!("persister has stopped; rows stay in the WAL");
                    }
                }
            }
            Err(err) => {
                self.health.rotation_failed();
                tracing::error!(%err, "WAL rotation failed; persisting later");
            }
        }
    }

    /// Keeps only calibration rows not stored before, so each axis is stored once per source.
    fn new_calibrations(&mut self, batch: RecordBatch) -> Option<RecordBatch> {
        let sources = batch.column_by_name("source")?.as_string::<i32>().clone();
        let ids = batch
            .column_by_name("calibration_id")?
            .as_primitive::<UInt64Type>()
            .clone();
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                Some(
                    self.seen_calibrations
                        .insert((sources.value(row).to_string(), ids.value(row))),
                )
            })
            .collect();
        if keep.true_count() == 0 {
            return None;
        }
        arrow::compute::filter_record_batch(&batch, &keep).ok()
    }
}

/// One batch per table for the whole group (in first-seen table order), so the WAL, the write
/// buffer and the Parquet writer handle a few large batches instead of one small batch per
/// message. A table whose batches cannot be concatenated (which would be a schema bug) keeps
/// them as they are.
pub(super) fn coalesce_by_table(batches: Vec<(Table, RecordBatch)>) -> Vec<(Table, RecordBatch)> {
    let mut by_table: Vec<(Table, Vec<RecordBatch>)> = Vec::new();
    for (table, batch) in batches {
        match by_table.iter_mut().find(|(t, _)| *t == table) {
            Some((_, list)) => list.push(batch),
            None => by_table.push((table, vec![batch])),
        }
    }
    let mut out = Vec::with_capacity(by_table.len());
    for (table, list) in by_table {
        if list.len() == 1 {
            out.extend(list.into_iter().map(|b| (table, b)));
            continue;
        }
        match arrow::compute::concat_batches(&list[0].schema(), &list) {
            Ok(batch) => out.push((table, batch)),
            Err(err) => {
                tracing::error!(%err, table = table.name(), "cannot coalesce a group's batches");
                out.extend(list.into_iter().map(|b| (table, b)));
            }
        }
    }
    out
}
