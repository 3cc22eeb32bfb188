//! The accept stage: one message in; its rows (raw and derived), a duplicate or a rejection
//! out.
//!
//! Accepting is everything a message needs before it can be committed. [`Screener`] does the
//! cheap, ordered part on the pipeline thread: the header and the resend check (before
//! anything decodes the payload, so a resent message never feeds a histogram window twice).
//! [`Acceptor`] does the rest on an accept worker: the payload decode and the feature
//! extractors. A failure at any step is a rejection with a reason; it never stops the stage.
//! Nothing here writes or acknowledges: that is the commit stage's job, in arrival order.

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use flowdaq_connectors::decode::{
    decode_after_header, decode_header, DecodeContext, DecodeError, DecodeLimits, RecordStreams,
};
use flowdaq_connectors::transport::Inbound;
use flowdaq_schemas::{Header, StreamKind, Table};

use super::commit::Seen;
use super::rejection::{first_bytes, Rejection};
use super::reply;
use super::Ack;
use crate::config::ServerConfig;
use crate::features::{FeatureExtractors, MessageOrigin, PhotonRecords};
use crate::metrics::{Metrics, SeqOf};

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
    /// The same key as a message accepted but not committed yet: decided at commit (a
    /// duplicate if that one is stored, accepted after all if it was refused).
    ResendOfPending { message: Box<Inbound>, key: SeqKey },
    /// Refused: becomes an `ingest_errors` row.
    Rejected {
        rejection: Rejection,
        reply: Option<Ack>,
        received_at: Instant,
        /// The seq key held for it since screening, to let go of.
        held: Option<SeqKey>,
    },
}

impl Accepted {
    /// A rejection of a message whose seq key was held since screening.
    fn releasing(self, key: SeqKey) -> Accepted {
        match self {
            Accepted::Rejected {
                rejection,
                reply,
                received_at,
                ..
            } => Accepted::Rejected {
                rejection,
                reply,
                received_at,
                held: Some(key),
            },
            other => other,
        }
    }
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

/// What screening and accepting read of the configuration.
#[derive(Clone)]
pub(super) struct AcceptContext {
    config: Arc<ServerConfig>,
    limits: DecodeLimits,
    metrics: Arc<Metrics>,
}

impl AcceptContext {
    pub(super) fn new(config: Arc<ServerConfig>, metrics: Arc<Metrics>) -> AcceptContext {
        let limits = DecodeLimits {
            max_message_bytes: config.ingest.max_message_bytes,
            reject_non_finite_intensities: config.ingest.reject_non_finite_intensities,
        };
        AcceptContext {
            config,
            limits,
            metrics,
        }
    }

    fn decode_context(&self, arrival_time_ns: i64) -> DecodeContext<'_> {
        DecodeContext {
            arrival_time_ns,
            default_run_id: &self.config.default_run_id,
            limits: &self.limits,
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
            held: None,
        }
    }
}

/// A message after screening.
pub(super) enum Screened {
    /// For the accept stage.
    Ready {
        message: Inbound,
        header: Header,
        key: SeqKey,
    },
    /// Answered already: a duplicate, or refused at its header.
    Done(Accepted),
}

/// The ordered first step of accepting: header, source check, resend check.
pub(super) struct Screener {
    context: AcceptContext,
}

impl Screener {
    pub(super) fn new(context: AcceptContext) -> Screener {
        Screener { context }
    }

    /// Screens one message; `seen` says what the commit stage knows of its key.
    pub(super) fn screen(
        &self,
        message: Inbound,
        seen: impl Fn(&str, &str, u64) -> Seen,
    ) -> Screened {
        let context = &self.context;
        if let Some(reason) = message.refusal.clone() {
            return Screened::Done(context.reject(&message, None, &DecodeError::Refused(reason)));
        }
        let ctx = context.decode_context(message.arrival_time_ns);
        let header = match decode_header(&message.frames, &ctx) {
            Ok(header) => header,
            Err((header, err)) => return Screened::Done(context.reject(&message, header, &err)),
        };
        let session = header.session.clone().unwrap_or_default();
        match seen(&header.source, &session, header.seq) {
            Seen::New => {}
            Seen::Committed => {
                context.metrics.duplicate(&header.source);
                return Screened::Done(Accepted::Duplicate {
                    reply: message
                        .reply_to
                        .clone()
                        .map(|to| (to, reply::duplicate(&header.source, header.seq))),
                    received_at: message.received_at,
                });
            }
            Seen::Pending => {
                let key = (header.source, session, header.seq);
                return Screened::Done(Accepted::ResendOfPending {
                    message: Box::new(message),
                    key,
                });
            }
        }
        if let Err(err) = context.check_source(&header.source) {
            return Screened::Done(context.reject(&message, Some(header), &err));
        }
        let key = (header.source.clone(), session, header.seq);
        Screened::Ready {
            message,
            header,
            key,
        }
    }
}

/// The accept stage's state for the sources of one worker: decoders and extractors that
/// carry state from message to message.
pub(super) struct Acceptor {
    context: AcceptContext,
    extractors: FeatureExtractors,
    record_streams: RecordStreams,
}

impl Acceptor {
    pub(super) fn new(context: AcceptContext, extractors: FeatureExtractors) -> Acceptor {
        Acceptor {
            context,
            extractors,
            record_streams: RecordStreams::default(),
        }
    }

    /// Decodes a screened message and runs the extractors on it.
    // The decoder's error carries the header (to attribute a rejection to its source and seq);
    // it is large, but only built for rejected messages.
    #[allow(clippy::result_large_err)]
    pub(super) fn accept(&mut self, message: Inbound, header: Header, key: SeqKey) -> Accepted {
        let context = &self.context;
        let ctx = context.decode_context(message.arrival_time_ns);
        let store_raw = context.stores_raw(&header.source);
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
            Err((header, err)) => return context.reject(&message, header, &err).releasing(key),
        };
        let header = &decoded.header;
        let size = message.size_bytes();
        context.metrics.accepted(
            SeqOf {
                source: &header.source,
                session: header.session.as_deref().unwrap_or_default(),
                seq: header.seq,
            },
            message.transport.name(),
            decoded.primary_rows() as u64,
            size,
        );
        let run_id = header
            .run_id
            .clone()
            .unwrap_or_else(|| context.config.default_run_id.clone());
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
            context.metrics.feature_failed(name);
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
            key,
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
            self.context.metrics.feature_failed(name);
            tracing::warn!(extractor = name, %err, "last windows not computed");
        }
        derived
    }
}

/// The table a stream's own rows go to (what `store_raw = false` drops).
fn own_table(stream: StreamKind) -> Table {
    match stream {
        StreamKind::Spectra => Table::Spectra,
        StreamKind::Photons => Table::Photons,
        StreamKind::PhaseTraces => Table::PhaseTraces,
        StreamKind::TcspcHistogram => Table::TcspcHistograms,
        StreamKind::Readings => Table::Readings,
        StreamKind::Run => Table::Runs,
    }
}
