//! The accept stage: one message in; its rows (raw and derived), a duplicate or a rejection
//! out.
//!
//! Accepting is everything a message needs before it can be committed: the header, the resend
//! check (before anything decodes the payload, so a resent message never feeds a histogram
//! window twice), the payload decode, and the feature extractors. A failure at any step is a
//! rejection with a reason; it never stops the stage. Nothing here writes or acknowledges:
//! that is the commit stage's job, in arrival order.

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use flowdaq_connectors::decode::{
    decode_after_header, decode_header, DecodeContext, DecodeError, DecodeLimits, RecordStreams,
};
use flowdaq_connectors::transport::Inbound;
use flowdaq_schemas::{Header, StreamKind, Table};

use super::rejection::{first_bytes, Rejection};
use super::reply;
use super::Ack;
use crate::config::ServerConfig;
use crate::features::{FeatureExtractors, MessageOrigin, PhotonRecords};
use crate::metrics::Metrics;

/// `(source, session, seq)`: what a resend has in common with the message it repeats.
pub(super) type SeqKey = (String, String, u64);

/// A message after the accept stage.
pub(super) enum Accepted {
    /// Rows to commit.
    Rows(AcceptedRows),
    /// Already committed (or accepted and waiting for its commit): acknowledged again.
    Duplicate {
        reply: Option<Ack>,
        received_at: Instant,
    },
    /// Refused: becomes an `ingest_errors` row.
    Rejected {
        rejection: Rejection,
        reply: Option<Ack>,
        received_at: Instant,
    },
}

/// The rows of an accepted message.
pub(super) struct AcceptedRows {
    /// Its seq key, committed with the group.
    pub key: SeqKey,
    /// Its run.
    pub run_id: String,
    /// The header named no condition: the commit stage tags the rows with the run's current one.
    pub tag_condition: bool,
    /// Its own rows (unless `store_raw = false`) and calibration rows.
    pub raw: Vec<(Table, RecordBatch)>,
    /// Rows the feature extractors derived from it.
    pub derived: Vec<(Table, RecordBatch)>,
    /// The acknowledgement to send once durable.
    pub reply: Option<Ack>,
    /// Receipt time, for latencies.
    pub received_at: Instant,
}

/// The accept stage's state: decoders and extractors that carry state from message to message.
pub(super) struct Acceptor {
    config: Arc<ServerConfig>,
    limits: DecodeLimits,
    extractors: FeatureExtractors,
    record_streams: RecordStreams,
    metrics: Arc<Metrics>,
}

impl Acceptor {
    pub(super) fn new(
        config: Arc<ServerConfig>,
        extractors: FeatureExtractors,
        metrics: Arc<Metrics>,
    ) -> Acceptor {
        let limits = DecodeLimits {
            max_message_bytes: config.ingest.max_message_bytes,
            reject_non_finite_intensities: config.ingest.reject_non_finite_intensities,
        };
        Acceptor {
            config,
            limits,
            extractors,
            record_streams: RecordStreams::default(),
            metrics,
        }
    }

    /// Accepts one message; `seen` says whether a `(source, session, seq)` is already
    /// committed or accepted.
    // The decoder's error carries the header (to attribute a rejection to its source and seq);
    // it is large, but only built for rejected messages.
    #[allow(clippy::result_large_err)]
    pub(super) fn accept(
        &mut self,
        message: Inbound,
        seen: impl Fn(&str, &str, u64) -> bool,
    ) -> Accepted {
        let ctx = DecodeContext {
            arrival_time_ns: message.arrival_time_ns,
            default_run_id: &self.config.default_run_id,
            limits: &self.limits,
        };
        let header = match decode_header(&message.frames, &ctx) {
            Ok(header) => header,
            Err((header, err)) => return self.reject(&message, header, &err),
        };
        let session = header.session.clone().unwrap_or_default();
        if seen(&header.source, &session, header.seq) {
            self.metrics.duplicate(&header.source);
            return Accepted::Duplicate {
                reply: message
                    .reply_to
                    .clone()
                    .map(|to| (to, reply::duplicate(&header.source, header.seq))),
                received_at: message.received_at,
            };
        }
        if let Err(err) = self.check_source(&header.source) {
            return self.reject(&message, Some(header), &err);
        }
        let store_raw = self.stores_raw(&header.source);
        let decoded = decode_after_header(
            header,
            &message.frames,
            &ctx,
            Some(&mut self.record_streams),
        )
        .and_then(|mut decoded| {
            if !store_raw {
                return Ok(decoded);
            }
            match decoded.build_photons(&ctx) {
                Ok(()) => Ok(decoded),
                Err(e) => Err((Some(decoded.header), e)),
            }
        });
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err((header, err)) => return self.reject(&message, header, &err),
        };
        let header = &decoded.header;
        let size = message.size_bytes();
        self.metrics.accepted(
            &header.source,
            message.transport.name(),
            header.seq,
            decoded.primary_rows() as u64,
            size,
        );
        let run_id = header
            .run_id
            .clone()
            .unwrap_or_else(|| self.config.default_run_id.clone());
        let raw_photons = decoded.records.as_ref().map(|records| PhotonRecords {
            origin: MessageOrigin {
                arrival_time_ns: message.arrival_time_ns,
                instrument_time_ns: header.instrument_time_ns,
                source: &header.source,
                run_id: &run_id,
                condition_id: header.condition_id.as_deref(),
                seq: header.seq,
            },
            records,
        });
        let mut derived = Vec::new();
        let mut failures =
            self.extractors
                .extract(&decoded.batches, raw_photons.as_ref(), &mut derived);
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
        let own_table = own_table(header.stream);
        let mut raw = decoded.batches;
        if !store_raw {
            raw.retain(|(table, _)| *table != own_table);
        }
        let header = decoded.header;
        let reply = message
            .reply_to
            .map(|to| (to, reply::ack(&header.source, header.seq)));
        Accepted::Rows(AcceptedRows {
            key: (header.source, session, header.seq),
            run_id,
            tag_condition: header.condition_id.is_none(),
            raw,
            derived,
            reply,
            received_at: message.received_at,
        })
    }

    /// Rows of the windows still open when the server stops, so every photon received is in
    /// a histogram.
    pub(super) fn finish_all(&mut self) -> Vec<(Table, RecordBatch)> {
        let mut derived = Vec::new();
        for (name, err) in self.extractors.finish(None, &mut derived) {
            self.metrics.feature_failed(name);
            tracing::warn!(extractor = name, %err, "last windows not computed");
        }
        derived
    }

    fn reject(&self, message: &Inbound, header: Option<Header>, err: &DecodeError) -> Accepted {
        let reason = err.to_string();
        let size = message.size_bytes();
        let source = header.as_ref().map(|h| h.source.clone());
        let seq = header.as_ref().map(|h| h.seq);
        self.metrics.rejected(source.as_deref(), size);
        tracing::debug!(?source, %reason, "rejected message");
        let reply = message
            .reply_to
            .clone()
            .map(|to| (to, reply::refused(source.as_deref(), seq, &reason)));
        Accepted::Rejected {
            rejection: Rejection {
                arrival_time_ns: message.arrival_time_ns,
                transport: message.transport.name(),
                source,
                stream: header.as_ref().map(|h| h.stream.name()),
                seq,
                reason,
                raw_size_bytes: size,
                frame_count: message.frames.len() as u32,
                first_bytes: first_bytes(&message.frames),
            },
            reply,
            received_at: message.received_at,
        }
    }

    /// Whether a source's own rows (spectra, photons, traces) are stored; unlisted sources'
    /// are.
    fn stores_raw(&self, source: &str) -> bool {
        self.config.sources.get(source).is_none_or(|s| s.store_raw)
    }

    fn check_source(&self, source: &str) -> Result<(), DecodeError> {
        if self.config.ingest.allow_unknown_sources || self.config.sources.contains_key(source) {
            Ok(())
        } else {
            Err(DecodeError::payload(format!(
                "unknown source {source:?}: not listed under [sources] and allow_unknown_sources = false"
            )))
        }
    }
}

/// The table a stream's own rows go to (what `store_raw = false` drops).
fn own_table(stream: StreamKind) -> Table {
    match stream {
        StreamKind::Spectra => Table::Spectra,
        StreamKind::Photons => Table::Photons,
        StreamKind::PhaseTraces => Table::PhaseTraces,
    }
}
