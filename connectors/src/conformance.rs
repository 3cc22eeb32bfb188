//! The sender conformance kit: what an instrument vendor runs before a user finds out.
//!
//! `flowdaq check-sender` binds the server's sockets (PULL, SUB, ROUTER), takes a sender's
//! messages through the server's own decoder, and reports each rule of the wire protocol the
//! messages follow or break (with the message and the reason), per-source sequence gaps and
//! regressions, whether instrument timestamps ever go back, rates, and, on ROUTER, the
//! acknowledgements a real server would have sent. Nothing is stored. A report with any broken
//! rule, or fewer messages than expected, fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use flowdaq_schemas::{Header, WireError};

use crate::decode::{
    decode_message_stateful, DecodeContext, DecodeError, DecodeLimits, RecordStreams,
};
use crate::transport::{self, BindConfig, BoundEndpoints, TransportError, TransportKind};

/// Every rule the kit checks, in report order.
pub const RULES: [&str; 12] = [
    "a header frame comes first",
    "the message fits max_message_bytes",
    "the header is JSON of the protocol's schema",
    "the header says protocol 1",
    "arrays have little-endian numeric dtypes",
    "header fields are valid for the stream",
    "payload frames match the header's arrays",
    "values are finite and plausible",
    "an Arrow IPC payload is valid",
    "seq increases by 1 per source and session",
    "seq never goes back within a session (resends over ROUTER excepted)",
    "instrument_time_ns never goes back per source",
];

/// Examples kept per broken rule.
const EXAMPLES_PER_RULE: usize = 3;

/// What to listen on and for how long.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Sockets to bind, as the server would.
    pub bind: BindConfig,
    /// Messages to wait for.
    pub messages: u64,
    /// Longest wait for them, from the start.
    pub timeout: Duration,
    /// The server's decode limits.
    pub limits: DecodeLimits,
}

/// One message that broke a rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Violation {
    /// Its source, if the header said.
    pub source: Option<String>,
    /// Its seq, if the header said.
    pub seq: Option<u64>,
    /// The socket it came in on.
    pub transport: &'static str,
    /// Why the rule is broken.
    pub reason: String,
}

/// One rule's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleReport {
    /// The rule.
    pub rule: &'static str,
    /// Messages (or, for stream rules, occurrences) that broke it.
    pub broken: u64,
    /// The first few of them.
    pub examples: Vec<Violation>,
}

/// What one source sent.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SourceReport {
    /// Streams it sent (spectra, photons, ...).
    pub streams: Vec<String>,
    /// Messages accepted by the decoder.
    pub messages: u64,
    /// Rows those messages carry.
    pub rows: u64,
    /// Sessions seen (a sender restarted with a new session starts its seq again).
    pub sessions: Vec<String>,
    /// Lowest and highest seq.
    pub first_seq: Option<u64>,
    /// Highest seq.
    pub last_seq: Option<u64>,
    /// Messages missing by seq.
    pub missing_messages: u64,
    /// Times seq went back or repeated within a session (on PULL and SUB).
    pub seq_regressions: u64,
    /// Messages resent over ROUTER (seq not above the last): a server acknowledges them as
    /// duplicates.
    pub resends: u64,
    /// Messages that carried `instrument_time_ns`.
    pub timestamped_messages: u64,
    /// Times `instrument_time_ns` went back.
    pub time_regressions: u64,
    /// Accepted messages per second, first to last.
    pub messages_per_s: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Messages expected.
    pub expected_messages: u64,
    /// Messages received (accepted or not).
    pub messages: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds from the first message to the last.
    pub seconds: f64,
    /// Acknowledgements sent (ROUTER only): accepted messages acked, refused ones nacked.
    pub acks: u64,
    /// Nacks sent, with the reason a server gives.
    pub nacks: u64,
    /// Every rule, broken or not.
    pub rules: Vec<RuleReport>,
    /// Per source.
    pub sources: BTreeMap<String, SourceReport>,
    /// No rule broken and every expected message received.
    pub passed: bool,
}

/// The rule a decoder error breaks.
fn rule_of(error: &DecodeError) -> usize {
    match error {
        DecodeError::Empty => 0,
        DecodeError::Oversized { .. } => 1,
        DecodeError::Header(WireError::BadJson(_)) => 2,
        DecodeError::Header(WireError::UnsupportedVersion { .. }) => 3,
        DecodeError::Header(WireError::BadDtype(_)) => 4,
        DecodeError::Header(WireError::Invalid(_)) => 5,
        DecodeError::Payload(_) | DecodeError::Refused(_) => 6,
        DecodeError::Values(_) => 7,
        DecodeError::Arrow(_) => 8,
    }
}

const RULE_GAP: usize = 9;
const RULE_SEQ_BACK: usize = 10;
const RULE_TIME_BACK: usize = 11;

/// Per-source sequence and time tracking while checking.
#[derive(Default)]
struct SourceState {
    report: SourceReport,
    /// Last seq per session ("" for none).
    last_seq: BTreeMap<String, u64>,
    last_time_ns: Option<i64>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

/// Collects the report message by message.
struct Checker {
    rules: Vec<RuleReport>,
    sources: BTreeMap<String, SourceState>,
    streams: RecordStreams,
    messages: u64,
    bytes: u64,
    acks: u64,
    nacks: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            rules: RULES
                .iter()
                .map(|rule| RuleReport {
                    rule,
                    broken: 0,
                    examples: Vec::new(),
                })
                .collect(),
            sources: BTreeMap::new(),
            streams: RecordStreams::default(),
            messages: 0,
            bytes: 0,
            acks: 0,
            nacks: 0,
            first: None,
            last: None,
        }
    }

    fn broke(&mut self, rule: usize, violation: Violation) {
        let report = &mut self.rules[rule];
        report.broken += 1;
        if report.examples.len() < EXAMPLES_PER_RULE {
            report.examples.push(violation);
        }
    }

    /// Checks one message; the acknowledgement a server would send, for ROUTER.
    fn check(
        &mut self,
        frames: &[bytes::Bytes],
        transport: TransportKind,
        limits: &DecodeLimits,
        arrival_time_ns: i64,
    ) -> serde_json::Value {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.messages += 1;
        self.bytes += frames.iter().map(|f| f.len() as u64).sum::<u64>();
        let ctx = DecodeContext {
            arrival_time_ns,
            default_run_id: "check",
            limits,
        };
        match decode_message_stateful(frames, &ctx, &mut self.streams) {
            Ok(decoded) => {
                let rows = decoded.primary_rows() as u64;
                self.accepted(&decoded.header, rows, transport, now);
                json!({"ack": decoded.header.seq, "source": decoded.header.source})
            }
            Err((header, error)) => {
                let reason = error.to_string();
                let (source, seq) = match &header {
                    Some(h) => (Some(h.source.clone()), Some(h.seq)),
                    None => (None, None),
                };
                self.broke(
                    rule_of(&error),
                    Violation {
                        source: source.clone(),
                        seq,
                        transport: transport.name(),
                        reason: reason.clone(),
                    },
                );
                json!({"nack": seq, "source": source, "error": reason, "retry": false})
            }
        }
    }

    fn accepted(&mut self, header: &Header, rows: u64, transport: TransportKind, now: Instant) {
        let state = self.sources.entry(header.source.clone()).or_default();
        let report = &mut state.report;
        report.messages += 1;
        report.rows += rows;
        let stream = serde_json::to_value(header.stream)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        if !report.streams.contains(&stream) {
            report.streams.push(stream);
        }
        let session = header.session.clone().unwrap_or_default();
        if !session.is_empty() && !report.sessions.contains(&session) {
            report.sessions.push(session.clone());
        }
        report.first_seq = Some(report.first_seq.map_or(header.seq, |s| s.min(header.seq)));
        report.last_seq = Some(report.last_seq.map_or(header.seq, |s| s.max(header.seq)));
        state.first_at.get_or_insert(now);
        state.last_at = Some(now);
        let mut broken = Vec::new();
        let previous = state.last_seq.get(&session).copied();
        state.last_seq.insert(
            session,
            previous.map_or(header.seq, |last| last.max(header.seq)),
        );
        match previous {
            Some(last) if header.seq == last + 1 => {}
            Some(last) if header.seq > last + 1 => {
                report.missing_messages += header.seq - last - 1;
                broken.push((
                    RULE_GAP,
                    format!(
                        "seq {} follows {last}: {} missing",
                        header.seq,
                        header.seq - last - 1
                    ),
                ));
            }
            // DEALER senders resend what was not acknowledged in time: legal, and stored once.
            Some(_) if transport == TransportKind::Router => report.resends += 1,
            Some(last) => {
                report.seq_regressions += 1;
                broken.push((
                    RULE_SEQ_BACK,
                    format!("seq {} after {last} in the same session", header.seq),
                ));
            }
            None => {}
        }
        if let Some(time_ns) = header.instrument_time_ns {
            report.timestamped_messages += 1;
            if let Some(last) = state.last_time_ns {
                if time_ns < last {
                    report.time_regressions += 1;
                    broken.push((
                        RULE_TIME_BACK,
                        format!("instrument_time_ns {time_ns} after {last}"),
                    ));
                }
            }
            state.last_time_ns = Some(time_ns);
        }
        for (rule, reason) in broken {
            self.broke(
                rule,
                Violation {
                    source: Some(header.source.clone()),
                    seq: Some(header.seq),
                    transport: transport.name(),
                    reason,
                },
            );
        }
    }

    fn report(self, expected_messages: u64) -> Report {
        let seconds = match (self.first, self.last) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let sources = self
            .sources
            .into_iter()
            .map(|(name, state)| {
                let mut report = state.report;
                if let (Some(first), Some(last)) = (state.first_at, state.last_at) {
                    let span = last.duration_since(first).as_secs_f64();
                    if span > 0.0 {
                        report.messages_per_s = (report.messages.saturating_sub(1)) as f64 / span;
                    }
                }
                (name, report)
            })
            .collect();
        let passed = self.rules.iter().all(|r| r.broken == 0) && self.messages >= expected_messages;
        Report {
            expected_messages,
            messages: self.messages,
            bytes: self.bytes,
            seconds,
            acks: self.acks,
            nacks: self.nacks,
            rules: self.rules,
            sources,
            passed,
        }
    }
}

/// Binds the configured sockets, calls `ready` with what was bound, checks messages until
/// `messages` arrived or `timeout` passed, and returns the report.
///
/// # Errors
/// [`TransportError`] when a socket cannot be bound.
pub async fn check(
    config: &CheckConfig,
    ready: impl FnOnce(&BoundEndpoints),
) -> Result<Report, TransportError> {
    let (queue_tx, mut queue_rx) = mpsc::channel(64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut bound = transport::bind(&config.bind, queue_tx, shutdown_rx).await?;
    ready(&bound.endpoints);
    let mut checker = Checker::new();
    let deadline = tokio::time::Instant::now() + config.timeout;
    while checker.messages < config.messages {
        let inbound = match tokio::time::timeout_at(deadline, queue_rx.recv()).await {
            Ok(Some(inbound)) => inbound,
            Ok(None) | Err(_) => break,
        };
        let reply = checker.check(
            &inbound.frames,
            inbound.transport,
            &config.limits,
            inbound.arrival_time_ns,
        );
        if let Some(reply_to) = &inbound.reply_to {
            if reply.get("ack").is_some() {
                checker.acks += 1;
            } else {
                checker.nacks += 1;
            }
            bound.acker.send(reply_to, &reply).await;
        }
    }
    let _ = shutdown_tx.send(true);
    for task in bound.tasks.drain(..) {
        let _ = task.await;
    }
    Ok(checker.report(config.messages))
}

/// The report as text, one line per rule and per source.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let rate = |n: f64| {
        if report.seconds > 0.0 {
            n / report.seconds
        } else {
            0.0
        }
    };
    let _ = writeln!(
        out,
        "{} of {} expected messages, {:.1} kB, in {:.2} s ({:.1} messages/s){}",
        report.messages,
        report.expected_messages,
        report.bytes as f64 / 1e3,
        report.seconds,
        rate(report.messages.saturating_sub(1) as f64),
        if report.acks + report.nacks > 0 {
            format!("; {} acknowledged, {} refused", report.acks, report.nacks)
        } else {
            String::new()
        }
    );
    for rule in &report.rules {
        let verdict = if rule.broken == 0 { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "{verdict} {} ({} broken)", rule.rule, rule.broken);
        for example in &rule.examples {
            let _ = writeln!(
                out,
                "       {} seq {} ({}): {}",
                example.source.as_deref().unwrap_or("?"),
                example.seq.map_or("?".into(), |s| s.to_string()),
                example.transport,
                example.reason
            );
        }
    }
    for (name, source) in &report.sources {
        let _ = writeln!(
            out,
            "source {name} ({}): {} messages, {} rows, seq {}..{}, {} missing, {} regressions, \
             {} resends, {} of {} timestamped ({} went back), {:.1} messages/s, sessions {}",
            source.streams.join(", "),
            source.messages,
            source.rows,
            source.first_seq.map_or("-".into(), |s| s.to_string()),
            source.last_seq.map_or("-".into(), |s| s.to_string()),
            source.missing_messages,
            source.seq_regressions,
            source.resends,
            source.timestamped_messages,
            source.messages,
            source.time_regressions,
            source.messages_per_s,
            if source.sessions.is_empty() {
                "none".to_string()
            } else {
                source.sessions.len().to_string()
            }
        );
    }
    let _ = writeln!(
        out,
        "{}",
        if report.passed {
            "PASS"
        } else if report.messages < report.expected_messages {
            "FAIL: fewer messages than expected (or a rule broken)"
        } else {
            "FAIL"
        }
    );
    out
}
