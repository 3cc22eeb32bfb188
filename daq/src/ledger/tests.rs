//! The ledger against a plain set of committed messages, and its two special rules.

use std::collections::BTreeSet;

use super::*;
use crate::test_rng::Uniform;

/// Uniform integers in `0..n`.
struct TestRng(Uniform);

impl TestRng {
    fn new(seed: u64) -> TestRng {
        TestRng(Uniform(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1))
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.0.next() * n as f64) as u64).min(n - 1)
    }
}

fn span(source: &str, session: &str, first: u64, last: u64) -> SeqSpan {
    SeqSpan {
        source: source.into(),
        session: session.into(),
        first,
        last,
    }
}

#[test]
fn ranges_merge_and_answer_like_a_set() {
    let mut rng = TestRng::new(7);
    let mut ledger = SeqLedger::default();
    let mut set = BTreeSet::new();
    for _ in 0..3000 {
        let first = 1 + rng.below(400);
        let last = first + rng.below(4);
        ledger.commit(&span("s", "a", first, last));
        set.extend(first..=last);
        let probe = rng.below(420);
        assert_eq!(
            ledger.is_committed("s", "a", probe),
            set.contains(&probe),
            "seq {probe}"
        );
    }
    for seq in 0..420 {
        assert_eq!(
            ledger.is_committed("s", "a", seq),
            set.contains(&seq),
            "seq {seq}"
        );
    }
    let ranges = &ledger.sources["s"].sessions[0].ranges;
    assert!(
        ranges.windows(2).all(|w| w[0][1] + 1 < w[1][0]),
        "disjoint, non-adjacent: {ranges:?}"
    );
    assert_eq!(ledger.last_seq("s"), set.iter().next_back().copied());
}

#[test]
fn sessions_and_sources_are_apart() {
    let mut ledger = SeqLedger::default();
    ledger.commit(&span("s", "a", 1, 10));
    assert!(ledger.is_committed("s", "a", 5));
    assert!(
        !ledger.is_committed("s", "b", 5),
        "another session of the source"
    );
    assert!(!ledger.is_committed("t", "a", 5), "another source");
    ledger.commit(&span("s", "b", 1, 2));
    assert!(
        ledger.is_committed("s", "a", 5),
        "the earlier session is kept"
    );
    assert_eq!(
        ledger.last_seq("s"),
        Some(2),
        "last seq of the newest session"
    );
}

#[test]
fn without_a_session_seq_zero_restarts_the_counter() {
    let mut ledger = SeqLedger::default();
    ledger.commit(&span("s", "", 0, 99));
    assert!(ledger.is_committed("s", "", 42));
    assert!(
        !ledger.is_committed("s", "", 0),
        "seq 0 is a restart, never a duplicate"
    );
    ledger.commit(&span("s", "", 0, 0));
    assert!(
        !ledger.is_committed("s", "", 42),
        "the old counter's seqs are forgotten"
    );
    ledger.commit(&span("s", "", 1, 1));
    assert!(ledger.is_committed("s", "", 1));
    assert_eq!(ledger.last_seq("s"), Some(1));
}

#[test]
fn hostile_patterns_stay_bounded_and_forget_the_oldest() {
    let mut ledger = SeqLedger::default();
    for seq in (0..10 * MAX_RANGES_PER_SESSION as u64).map(|i| 1 + 2 * i) {
        ledger.commit(&span("s", "a", seq, seq));
    }
    let ranges = &ledger.sources["s"].sessions[0].ranges;
    assert_eq!(ranges.len(), MAX_RANGES_PER_SESSION);
    assert!(
        !ledger.is_committed("s", "a", 1),
        "the lowest range was forgotten"
    );
    assert!(ledger.is_committed("s", "a", ranges[MAX_RANGES_PER_SESSION - 1][0]));
    for session in 0..10 {
        ledger.commit(&span("s", &session.to_string(), 1, 1));
    }
    assert_eq!(ledger.sources["s"].sessions.len(), MAX_SESSIONS_PER_SOURCE);
    assert!(ledger.is_committed("s", "9", 1));
    assert!(
        !ledger.is_committed("s", "0", 1),
        "the least recent session was forgotten"
    );
}

#[test]
fn spans_of_a_group_replay_to_the_same_ledger() {
    let mut rng = TestRng::new(11);
    let mut live = SeqLedger::default();
    let mut spans = SpanBuilder::default();
    let mut next = [0u64; 3];
    for _ in 0..2000 {
        let source = rng.below(3) as usize;
        let session = if source == 2 { "" } else { "x" };
        let seq = match rng.below(20) {
            0 => 0,
            1 => next[source] + 5,
            _ => next[source],
        };
        next[source] = seq + 1;
        let name = format!("src{source}");
        live.commit(&span(&name, session, seq, seq));
        spans.push(&name, session, seq);
    }
    let spans = spans.finish();
    assert!(spans.len() < 2000, "consecutive seqs share a span");
    let mut replayed = SeqLedger::default();
    replayed.commit_all(&spans);
    for (source, session) in [("src0", "x"), ("src1", "x"), ("src2", "")] {
        for seq in 0..next.iter().max().copied().unwrap_or(0) + 2 {
            assert_eq!(
                live.is_committed(source, session, seq),
                replayed.is_committed(source, session, seq),
                "{source} {seq}"
            );
        }
        assert_eq!(live.last_seq(source), replayed.last_seq(source));
    }
}
