//! The seq ledger: which `(source, session, seq)` the server has committed, kept durably.
//!
//! It is what makes a resend harmless. A sender that did not hear an acknowledgement resends;
//! if the ledger already holds that message, the server acknowledges it again as a duplicate
//! instead of storing it twice, before anything decodes it (a duplicate must not feed a TCSPC
//! window twice either). The ledger lives in every WAL group (the spans it commits) and in the
//! catalog (the whole ledger as of the WAL watermark), so it survives restarts, and so does gap
//! and regression counting, which starts from the last committed seq.
//!
//! A sender whose counter restarts is told apart by `session` (any string it keeps for the
//! life of its counter). Without a session, seq 0 means the counter restarted: the source's
//! sessionless ranges are forgotten, so a re-run that counts from 0 again is stored, not
//! mistaken for resends (the one thing given up: a resend of seq 0 itself is stored twice).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Disjoint seq ranges kept per session; beyond this the lowest are forgotten (a resend of
/// a forgotten message would be stored twice: duplicates, never loss).
const MAX_RANGES_PER_SESSION: usize = 1024;
/// Sessions kept per source, most recently committed first.
const MAX_SESSIONS_PER_SOURCE: usize = 4;
/// Sources kept; beyond this the least recently committed source is forgotten.
const MAX_SOURCES: usize = 65_536;

/// Consecutive seqs of one source and session, inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSpan {
    /// The sending source.
    pub source: String,
    /// The sender's session (empty: none given).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// First seq.
    pub first: u64,
    /// Last seq (inclusive).
    pub last: u64,
}

/// Committed seqs of one session: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SessionSeqs {
    session: String,
    ranges: Vec<[u64; 2]>,
}

impl SessionSeqs {
    fn contains(&self, seq: u64) -> bool {
        let at = self.ranges.partition_point(|r| r[1] < seq);
        self.ranges.get(at).is_some_and(|r| r[0] <= seq)
    }

    fn insert(&mut self, first: u64, last: u64) {
        // Ranges overlapping or adjacent to [first, last] merge with it.
        let lo = self
            .ranges
            .partition_point(|r| r[1].saturating_add(1) < first);
        let hi = self
            .ranges
            .partition_point(|r| r[0] <= last.saturating_add(1));
        let (mut first, mut last) = (first, last);
        if lo < hi {
            first = first.min(self.ranges[lo][0]);
            last = last.max(self.ranges[hi - 1][1]);
        }
        self.ranges.splice(lo..hi, [[first, last]]);
        if self.ranges.len() > MAX_RANGES_PER_SESSION {
            let excess = self.ranges.len() - MAX_RANGES_PER_SESSION;
            self.ranges.drain(..excess);
        }
    }

    fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r[1])
    }
}

/// One source's sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SourceSeqs {
    /// Most recently committed first.
    sessions: Vec<SessionSeqs>,
    /// Commit counter value of the last commit, to find the least recently used source.
    tick: u64,
}

/// What the server has committed, per source; see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqLedger {
    sources: BTreeMap<String, SourceSeqs>,
    tick: u64,
}

impl SeqLedger {
    /// Whether the message `(source, session, seq)` is already committed.
    pub fn is_committed(&self, source: &str, session: &str, seq: u64) -> bool {
        if session.is_empty() && seq == 0 {
            return false;
        }
        self.sources
            .get(source)
            .and_then(|s| s.sessions.iter().find(|x| x.session == session))
            .is_some_and(|s| s.contains(seq))
    }

    /// Records one committed span (also used when replaying the WAL, in commit order).
    pub fn commit(&mut self, span: &SeqSpan) {
        self.tick += 1;
        let tick = self.tick;
        if !self.sources.contains_key(&span.source) && self.sources.len() >= MAX_SOURCES {
            self.forget_least_recent_source();
        }
        let source = self.sources.entry(span.source.clone()).or_default();
        source.tick = tick;
        let at = source
            .sessions
            .iter()
            .position(|s| s.session == span.session);
        let mut session = match at {
            Some(at) => source.sessions.remove(at),
            None => SessionSeqs {
                session: span.session.clone(),
                ranges: Vec::new(),
            },
        };
        if span.session.is_empty() && span.first == 0 {
            session.ranges.clear();
        }
        session.insert(span.first.min(span.last), span.last.max(span.first));
        source.sessions.insert(0, session);
        source.sessions.truncate(MAX_SESSIONS_PER_SOURCE);
    }

    /// Records every span, in order.
    pub fn commit_all(&mut self, spans: &[SeqSpan]) {
        for span in spans {
            self.commit(span);
        }
    }

    /// The highest committed seq of the source's most recent session, to continue counting
    /// gaps after a restart.
    pub fn last_seq(&self, source: &str) -> Option<u64> {
        self.sources.get(source)?.sessions.first()?.max()
    }

    /// Every source and session the ledger knows, with its last seq; a source's most recent
    /// session first.
    pub fn last_seqs(&self) -> impl Iterator<Item = (&str, &str, u64)> + '_ {
        self.sources.iter().flat_map(|(name, s)| {
            s.sessions.iter().filter_map(move |session| {
                Some((name.as_str(), session.session.as_str(), session.max()?))
            })
        })
    }

    fn forget_least_recent_source(&mut self) {
        if let Some(oldest) = self
            .sources
            .iter()
            .min_by_key(|(_, s)| s.tick)
            .map(|(name, _)| name.clone())
        {
            self.sources.remove(&oldest);
        }
    }
}

/// Builds the spans of a group: consecutive seqs of one source and session become one span.
#[derive(Debug, Default)]
pub struct SpanBuilder {
    spans: Vec<SeqSpan>,
}

impl SpanBuilder {
    /// Adds one committed message.
    pub fn push(&mut self, source: &str, session: &str, seq: u64) {
        if let Some(last) = self.spans.iter_mut().rev().find(|s| s.source == source) {
            if last.session == session && last.last.checked_add(1) == Some(seq) {
                last.last = seq;
                return;
            }
        }
        self.spans.push(SeqSpan {
            source: source.to_string(),
            session: session.to_string(),
            first: seq,
            last: seq,
        });
    }

    /// The spans, in commit order.
    pub fn finish(self) -> Vec<SeqSpan> {
        self.spans
    }

    /// Whether no message was added.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests;
