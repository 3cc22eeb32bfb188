//! The ingest pipeline: decode, commit to the WAL, make queryable, acknowledge.
//!
//! It runs on one dedicated thread (WAL writes and fsync block) and takes messages in groups:
//! everything waiting, up to `max_group_messages`, is decoded, written to the WAL with one
//! fsync, inserted into the write buffer, and only then acknowledged. A bad frame becomes an
//! `ingest_errors` row in the same group; it never stops the loop or delays good frames. The
//! pipeline also decides when to snapshot the buffer for the persister, because the WAL
//! rotation and the snapshot must happen between the same two groups.
//!
//! Condition registrations come through the same thread, so "every measurement arriving after
//! it" has one meaning: the order in which this loop takes things. Before a group is written,
//! the rows of published tables are numbered per stream; after, they go to the feature stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, StringArray, TimestampNanosecondArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use flowdaq_connectors::decode::{
    decode_message_deferred, DecodeContext, DecodeLimits, RecordStreams,
};
use flowdaq_connectors::transport::{Inbound, ReplyTo};
use flowdaq_schemas::Table;
use serde_json::json;
use tokio::sync::mpsc;

use crate::conditions::{condition_batch, ConditionTimes, Conditions};
use crate::config::ServerConfig;
use crate::control::RegisterRequest;
use crate::features::{FeatureExtractors, MessageOrigin, PhotonRecords};
use crate::metrics::Metrics;
use crate::outcomes::OutcomeTracker;
use crate::publish::sequencer::StreamSequencer;
use crate::publish::Publisher;
use crate::wal::Wal;
use crate::write_buffer::{Snapshot, WriteBuffer};

/// Bytes of a rejected message kept in `ingest_errors.first_bytes`.
const FIRST_BYTES_KEPT: usize = 256;

/// An acknowledgement to send back through the ROUTER socket.
pub type Ack = (ReplyTo, serde_json::Value);

/// The pipeline's state; see the module doc.
pub struct Pipeline {
    config: Arc<ServerConfig>,
    limits: DecodeLimits,
    wal: Wal,
    buffer: Arc<WriteBuffer>,
    metrics: Arc<Metrics>,
    snapshots: std::sync::mpsc::Sender<Arc<Snapshot>>,
    acks: mpsc::UnboundedSender<Ack>,
    seen_calibrations: HashSet<(String, u64)>,
    extractors: FeatureExtractors,
    record_streams: RecordStreams,
    streams: StreamParts,
}

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
    /// Registrations from the control endpoint and HTTP.
    pub registrations: mpsc::Receiver<RegisterRequest>,
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

/// One rejected message, on its way to `ingest_errors`.
struct Rejection {
    arrival_time_ns: i64,
    transport: &'static str,
    source: Option<String>,
    stream: Option<&'static str>,
    seq: Option<u64>,
    reason: String,
    raw_size_bytes: u64,
    frame_count: u32,
    first_bytes: Vec<u8>,
}

impl Pipeline {
    /// A pipeline writing to `wal` and `buffer`.
    // Built in one place (the server's start-up), from parts that have nothing in common.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<ServerConfig>,
        wal: Wal,
        buffer: Arc<WriteBuffer>,
        metrics: Arc<Metrics>,
        snapshots: std::sync::mpsc::Sender<Arc<Snapshot>>,
        acks: mpsc::UnboundedSender<Ack>,
        seen_calibrations: HashSet<(String, u64)>,
        extractors: FeatureExtractors,
        streams: StreamParts,
    ) -> Pipeline {
        let limits = DecodeLimits {
            max_message_bytes: config.ingest.max_message_bytes,
            reject_non_finite_intensities: config.ingest.reject_non_finite_intensities,
        };
        Pipeline {
            config,
            limits,
            wal,
            buffer,
            metrics,
            snapshots,
            acks,
            seen_calibrations,
            extractors,
            record_streams: RecordStreams::default(),
            streams,
        }
    }

    /// Runs until `inbound` is closed and drained, then snapshots what is left.
    pub fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, runtime: tokio::runtime::Handle) {
        let tick = self
            .config
            .buffer
            .flush_interval()
            .min(Duration::from_millis(500));
        let max_group = self.config.ingest.max_group_messages;
        let mut registrations_open = true;
        let mut last_tick = std::time::Instant::now();
        loop {
            if last_tick.elapsed() >= OUTCOME_TICK {
                last_tick = std::time::Instant::now();
                self.outcome_tick();
            }
            let registrations = &mut self.streams.registrations;
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
            let first = match next {
                Next::Message(message) => message,
                Next::Closed => break,
                Next::Registration(request) => {
                    self.register(request);
                    continue;
                }
                Next::Idle => {
                    registrations_open = !self.streams.registrations.is_closed()
                        || !self.streams.registrations.is_empty();
                    self.maybe_snapshot(false);
                    continue;
                }
            };
            let mut group = Vec::with_capacity(max_group.min(64));
            group.push(first);
            while group.len() < max_group {
                match inbound.try_recv() {
                    Ok(message) => group.push(message),
                    Err(_) => break,
                }
            }
            self.process_group(group);
            self.maybe_snapshot(false);
        }
        self.finish_features();
        self.maybe_snapshot(true);
    }

    /// Writes the rows of the windows still open when the streams end, so every photon
    /// received is in a histogram, as one last group.
    fn finish_features(&mut self) {
        let mut derived = Vec::new();
        for (name, err) in self.extractors.finish(None, &mut derived) {
            self.metrics.feature_failed(name);
            tracing::warn!(extractor = name, %err, "last windows not computed");
        }
        if derived.is_empty() {
            return;
        }
        for (table, batch) in &derived {
            self.streams.tracker.observe(*table, batch);
        }
        let rows = derived.iter().map(|(_, b)| b.num_rows() as u64).sum();
        match self.commit(derived) {
            Ok(batches) => {
                self.buffer.insert(&batches);
                self.metrics.committed(rows, &[], &[]);
                self.publish(&batches);
            }
            Err(err) => tracing::error!(%err, "WAL append failed; last windows not written"),
        }
    }

    fn maybe_snapshot(&mut self, force: bool) {
        let (open_bytes, age) = self.buffer.open_load();
        let due = open_bytes >= self.config.buffer.flush_bytes
            || age.is_some_and(|a| a >= self.config.buffer.flush_interval())
            || (force && age.is_some());
        if !due {
            return;
        }
        match self.wal.rotate() {
            Ok(through) => {
                if let Some(snapshot) = self.buffer.take_snapshot(through) {
                    if self.snapshots.send(snapshot).is_err() {
                        tracing::error!("persister has stopped; rows stay in the WAL");
                    }
                }
            }
            Err(err) => tracing::error!(%err, "WAL rotation failed; persisting later"),
        }
    }

    // The decode errors carry the message's header (to attribute a rejection to its source and
    // seq), as in the connectors' decode module; they are built only for rejected messages.
    #[allow(clippy::result_large_err)]
    fn process_group(&mut self, group: Vec<Inbound>) {
        let mut batches: Vec<(Table, RecordBatch)> = Vec::new();
        let mut rejections: Vec<Rejection> = Vec::new();
        let mut replies: Vec<Option<(ReplyTo, serde_json::Value)>> =
            Vec::with_capacity(group.len());
        let mut rows = 0u64;
        for message in &group {
            let ctx = DecodeContext {
                arrival_time_ns: message.arrival_time_ns,
                default_run_id: &self.config.default_run_id,
                limits: &self.limits,
            };
            let size = message.size_bytes();
            // Raw TCSPC records are only scanned here; their photons rows are built only if
            // they are stored, and the extractors decode them straight into their own sinks.
            let decoded = decode_message_deferred(&message.frames, &ctx, &mut self.record_streams)
                .and_then(|decoded| match self.check_source(&decoded.header.source) {
                    Ok(()) => Ok(decoded),
                    Err(e) => Err((Some(decoded.header), e)),
                })
                .and_then(|mut decoded| {
                    if !self.stores_raw(&decoded.header.source) {
                        return Ok(decoded);
                    }
                    match decoded.build_photons(&ctx) {
                        Ok(()) => Ok(decoded),
                        Err(e) => Err((Some(decoded.header), e)),
                    }
                });
            let reply = match decoded {
                Ok(mut decoded) => {
                    if decoded.header.condition_id.is_none() {
                        let run_id = decoded
                            .header
                            .run_id
                            .as_deref()
                            .unwrap_or(&self.config.default_run_id);
                        if let Err(err) = self.streams.conditions.tag(run_id, &mut decoded.batches)
                        {
                            tracing::error!(%err, "cannot tag rows with their condition");
                        }
                    }
                    let header = &decoded.header;
                    let primary_rows = decoded.primary_rows() as u64;
                    self.metrics.accepted(
                        &header.source,
                        message.transport.name(),
                        header.seq,
                        primary_rows,
                        size,
                    );
                    let store_raw = self.stores_raw(&header.source);
                    let run_id = header
                        .run_id
                        .as_deref()
                        .unwrap_or(&self.config.default_run_id);
                    let raw_photons = decoded.records.as_ref().map(|records| PhotonRecords {
                        origin: MessageOrigin {
                            arrival_time_ns: message.arrival_time_ns,
                            instrument_time_ns: header.instrument_time_ns,
                            source: &header.source,
                            run_id,
                            condition_id: header
                                .condition_id
                                .as_deref()
                                .or_else(|| self.streams.conditions.current(run_id)),
                            seq: header.seq,
                        },
                        records,
                    });
                    let mut derived = Vec::new();
                    let mut failures = self.extractors.extract(
                        &decoded.batches,
                        raw_photons.as_ref(),
                        &mut derived,
                    );
                    if header.end_of_stream {
                        // The acquisition ended: its open windows close with this message.
                        failures.extend(self.extractors.finish(Some(&header.source), &mut derived));
                    }
                    for (name, err) in failures {
                        self.metrics.feature_failed(name);
                        tracing::warn!(
                            source = %header.source,
                            seq = header.seq,
                            extractor = name,
                            %err,
                            "features not computed; raw rows kept"
                        );
                    }
                    // Unstored raw records have no rows here at all (their photons rows are
                    // never built), so skipping index 0 never drops another table's rows.
                    for (index, (table, batch)) in decoded.batches.into_iter().enumerate() {
                        if index == 0 && !store_raw {
                            continue;
                        }
                        let batch = match table {
                            Table::SpectralCalibrations => self.new_calibrations(batch),
                            _ => Some(batch),
                        };
                        if let Some(batch) = batch {
                            rows += batch.num_rows() as u64;
                            batches.push((table, batch));
                        }
                    }
                    for (table, batch) in derived {
                        self.streams.tracker.observe(table, &batch);
                        rows += batch.num_rows() as u64;
                        batches.push((table, batch));
                    }
                    json!({"ack": decoded.header.seq, "source": decoded.header.source})
                }
                Err((header, err)) => {
                    let reason = err.to_string();
                    let source = header.as_ref().map(|h| h.source.clone());
                    self.metrics.rejected(source.as_deref(), size);
                    tracing::debug!(?source, %reason, "rejected message");
                    let seq = header.as_ref().map(|h| h.seq);
                    rejections.push(Rejection {
                        arrival_time_ns: message.arrival_time_ns,
                        transport: message.transport.name(),
                        source: source.clone(),
                        stream: header.as_ref().map(|h| h.stream.name()),
                        seq,
                        reason: reason.clone(),
                        raw_size_bytes: size,
                        frame_count: message.frames.len() as u32,
                        first_bytes: first_bytes(&message.frames),
                    });
                    json!({"nack": seq, "source": source, "error": reason})
                }
            };
            replies.push(message.reply_to.clone().map(|to| (to, reply)));
        }
        if !rejections.is_empty() {
            match rejection_batch(&rejections) {
                Ok(batch) => batches.push((Table::IngestErrors, batch)),
                Err(err) => tracing::error!(%err, "cannot build ingest_errors rows"),
            }
        }
        self.take_outcomes(&mut batches);
        let batches = match self.commit(batches) {
            Ok(batches) => batches,
            Err(err) => {
                tracing::error!(%err, "WAL append failed; group not acknowledged");
                self.metrics.wal_failed(group.len() as u64);
                for (to, _) in replies.into_iter().flatten() {
                    let _ = self.acks.send((
                        to,
                        json!({"nack": null, "error": format!("not durable: {err}")}),
                    ));
                }
                return;
            }
        };
        let durable: Vec<Duration> = group.iter().map(|m| m.received_at.elapsed()).collect();
        self.buffer.insert(&batches);
        let queryable: Vec<Duration> = group.iter().map(|m| m.received_at.elapsed()).collect();
        for reply in replies.into_iter().flatten() {
            let _ = self.acks.send(reply);
        }
        self.metrics.committed(rows, &durable, &queryable);
        self.publish(&batches);
    }

    /// Coalesces, numbers the published rows and writes the group to the WAL. On failure the
    /// numbers are given back and nothing was written.
    fn commit(
        &mut self,
        batches: Vec<(Table, RecordBatch)>,
    ) -> Result<Vec<(Table, RecordBatch)>, crate::wal::WalError> {
        let mut batches = coalesce_by_table(batches);
        let undo = match self.streams.sequencer.sequence(&mut batches) {
            Ok(undo) => undo,
            Err(err) => {
                // A schema bug: keep the raw rows rather than lose the group.
                tracing::error!(%err, "cannot number published rows; they are not stored");
                batches.retain(|(t, _)| !t.is_published());
                Default::default()
            }
        };
        if let Err(err) = self.wal.append(&batches) {
            self.streams.sequencer.undo(undo);
            return Err(err);
        }
        Ok(batches)
    }

    fn publish(&self, batches: &[(Table, RecordBatch)]) {
        if let Some(publisher) = &self.streams.publisher {
            publisher.publish(batches);
        }
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
    fn outcome_tick(&mut self) {
        self.streams
            .tracker
            .tick(flowdaq_connectors::transport::now_ns());
        let mut batches = Vec::new();
        self.take_outcomes(&mut batches);
        if batches.is_empty() {
            return;
        }
        match self.commit(batches) {
            Ok(batches) => {
                self.buffer.insert(&batches);
                self.publish(&batches);
            }
            Err(err) => tracing::error!(%err, "WAL append failed; outcomes not written"),
        }
    }

    /// Registers a condition: its row (and the outcomes of the condition it supersedes) in one
    /// group commit, then the answer.
    fn register(&mut self, request: RegisterRequest) {
        let RegisterRequest {
            registration,
            reply,
        } = request;
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
        match self.commit(batches) {
            Ok(batches) => {
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
                self.publish(&batches);
                tracing::info!(run_id = %registration.run_id, condition_id = %registration.condition_id, "condition registered");
            }
            Err(err) => {
                let _ = reply.send(json!({"ok": false, "error": format!("not durable: {err}")}));
            }
        }
    }

    /// Whether a source's own rows (spectra, photons, traces) are stored; unlisted sources'
    /// are.
    fn stores_raw(&self, source: &str) -> bool {
        self.config.sources.get(source).is_none_or(|s| s.store_raw)
    }

    fn check_source(&self, source: &str) -> Result<(), flowdaq_connectors::decode::DecodeError> {
        if self.config.ingest.allow_unknown_sources || self.config.sources.contains_key(source) {
            Ok(())
        } else {
            Err(flowdaq_connectors::decode::DecodeError::payload(format!(
                "unknown source {source:?}: not listed under [sources] and allow_unknown_sources = false"
            )))
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
fn coalesce_by_table(batches: Vec<(Table, RecordBatch)>) -> Vec<(Table, RecordBatch)> {
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

fn first_bytes(frames: &[bytes::Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIRST_BYTES_KEPT);
    for frame in frames {
        let room = FIRST_BYTES_KEPT - out.len();
        out.extend_from_slice(&frame[..frame.len().min(room)]);
        if out.len() == FIRST_BYTES_KEPT {
            break;
        }
    }
    out
}

fn rejection_batch(rejections: &[Rejection]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(
                rejections.iter().map(|r| r.arrival_time_ns),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rejections.iter().map(|r| r.transport),
        )),
        Arc::new(StringArray::from_iter(
            rejections.iter().map(|r| r.source.as_deref()),
        )),
        Arc::new(StringArray::from_iter(rejections.iter().map(|r| r.stream))),
        Arc::new(UInt64Array::from_iter(rejections.iter().map(|r| r.seq))),
        Arc::new(StringArray::from_iter_values(
            rejections.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rejections.iter().map(|r| r.raw_size_bytes),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rejections.iter().map(|r| r.frame_count),
        )),
        Arc::new(BinaryArray::from_iter_values(
            rejections.iter().map(|r| r.first_bytes.as_slice()),
        )),
    ];
    RecordBatch::try_new(Table::IngestErrors.schema(), columns)
}

/// Reads `(source, calibration_id)` pairs already stored, so a restart does not store an axis
/// twice. `batches` are buffered calibration rows; `files` their Parquet files.
pub fn known_calibrations(
    batches: &[RecordBatch],
    files: &[std::path::PathBuf],
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
    for path in files {
        let reader = std::fs::File::open(path)
            .map_err(parquet::errors::ParquetError::from)
            .and_then(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new)
            .and_then(|b| b.build());
        match reader {
            Ok(reader) => reader.flatten().for_each(|b| add(&b)),
            Err(err) => tracing::warn!(path = %path.display(), %err, "cannot read calibrations"),
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(seqs: &[u64]) -> RecordBatch {
        let rejections: Vec<Rejection> = seqs
            .iter()
            .map(|&seq| Rejection {
                arrival_time_ns: 1,
                transport: "pull",
                source: Some("s".into()),
                stream: None,
                seq: Some(seq),
                reason: "r".into(),
                raw_size_bytes: 1,
                frame_count: 1,
                first_bytes: vec![1],
            })
            .collect();
        rejection_batch(&rejections).expect("batch")
    }

    #[test]
    fn a_group_becomes_one_batch_per_table_in_order() {
        let photons = RecordBatch::new_empty(Table::Photons.schema());
        let batches = vec![
            (Table::IngestErrors, errors(&[1, 2])),
            (Table::Photons, photons.clone()),
            (Table::IngestErrors, errors(&[3])),
        ];
        let out = coalesce_by_table(batches);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, Table::IngestErrors);
        assert_eq!(out[1].0, Table::Photons);
        let seqs = out[0]
            .1
            .column_by_name("seq")
            .expect("seq")
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
