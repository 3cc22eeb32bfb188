//! The acknowledged sender: a DEALER that keeps every message until the server says it is
//! durable, and resends what it did not hear about.
//!
//! It is the sending half of the exactly-once recipe of `docs/wire-protocol.md`: every message
//! carries this sender's `session` and its `seq`; unacknowledged messages are resent (after a
//! silence, a reconnect, or a `retry: true` nack), and the server acknowledges a resend of a
//! message it already holds as a duplicate instead of storing it twice. A `retry: false` nack
//! is final: the message is refused and reported. [`AckedSender::finish`] returns only when
//! every message is acknowledged or refused, so a caller that exits after it loses nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::message::OutboundMessage;
use crate::runner::RunnerError;

/// What the server answered, per message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckStats {
    /// Messages handed to [`AckedSender::send`].
    pub sent: u64,
    /// Acknowledged as durable (including duplicates).
    pub acknowledged: u64,
    /// Acknowledged as already durable: resends of messages the server held.
    pub duplicates: u64,
    /// Refused for good, with the server's reason.
    pub refused: Vec<(u64, String)>,
    /// Messages sent again.
    pub resent: u64,
}

/// Timing of an [`AckedSender`].
#[derive(Debug, Clone, Copy)]
pub struct AckTiming {
    /// Messages sent and not yet answered, at most.
    pub window: usize,
    /// Silence after which unanswered messages are resent over a new connection.
    pub resend_after: Duration,
    /// Wait before resending a message nacked with `retry: true`.
    pub retry_delay: Duration,
    /// Give up once nothing has been acknowledged for this long.
    pub give_up_after: Duration,
}

impl Default for AckTiming {
    fn default() -> Self {
        AckTiming {
            window: 256,
            resend_after: Duration::from_secs(2),
            retry_delay: Duration::from_millis(200),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// A message kept until it is answered.
struct Unanswered {
    frames: Vec<Bytes>,
    /// Nacked with `retry: true`: resend at this time.
    retry_at: Option<Instant>,
}

/// A DEALER sender with acknowledgements; see the module doc.
pub struct AckedSender {
    endpoint: String,
    socket: DealerSocket,
    session: String,
    next_seq: u64,
    unanswered: BTreeMap<u64, Unanswered>,
    timing: AckTiming,
    stats: AckStats,
    last_progress: Instant,
}

impl AckedSender {
    /// Connects to a server's ROUTER endpoint. `session` names this sender's seq counter; a
    /// new process should use a new one (see [`new_session`]).
    ///
    /// # Errors
    /// The socket's error.
    pub async fn connect(
        endpoint: &str,
        session: String,
        timing: AckTiming,
    ) -> Result<AckedSender, RunnerError> {
        let mut socket = DealerSocket::new();
        socket.connect(endpoint).await?;
        Ok(AckedSender {
            endpoint: endpoint.to_string(),
            socket,
            session,
            next_seq: 0,
            unanswered: BTreeMap::new(),
            timing,
            stats: AckStats::default(),
            last_progress: Instant::now(),
        })
    }

    /// Stamps session and the next seq on `message`, waits for room in the window, sends it.
    /// Returns its seq.
    ///
    /// # Errors
    /// [`RunnerError`] if the socket fails or the server stays silent past `give_up_after`.
    pub async fn send(&mut self, mut message: OutboundMessage) -> Result<u64, RunnerError> {
        while self.unanswered.len() >= self.timing.window.max(1) {
            self.answer_or_resend().await?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        message.header.seq = seq;
        message.header.session = Some(self.session.clone());
        let frames = message.frames();
        self.transmit(&frames).await?;
        self.unanswered.insert(
            seq,
            Unanswered {
                frames,
                retry_at: None,
            },
        );
        self.stats.sent += 1;
        Ok(seq)
    }

    /// Waits until every message sent is acknowledged or refused, resending as needed.
    ///
    /// # Errors
    /// [`RunnerError::Unanswered`] if the server stays silent past `give_up_after`.
    pub async fn finish(mut self) -> Result<AckStats, RunnerError> {
        while !self.unanswered.is_empty() {
            self.answer_or_resend().await?;
        }
        Ok(self.stats)
    }

    async fn transmit(&mut self, frames: &[Bytes]) -> Result<(), RunnerError> {
        let message = ZmqMessage::try_from(frames.to_vec())
            .map_err(|_| zeromq::ZmqError::Other("empty message"))?;
        self.socket.send(message).await?;
        Ok(())
    }

    /// Takes one answer, or after a silence (or when a retry is due) resends.
    async fn answer_or_resend(&mut self) -> Result<(), RunnerError> {
        if self.last_progress.elapsed() > self.timing.give_up_after {
            return Err(RunnerError::Unanswered {
                endpoint: self.endpoint.clone(),
                messages: self.unanswered.len() as u64,
            });
        }
        let next_retry = self.unanswered.values().filter_map(|u| u.retry_at).min();
        let wait = match next_retry {
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .min(self.timing.resend_after),
            None => self.timing.resend_after,
        };
        match tokio::time::timeout(wait, self.socket.recv()).await {
            Ok(Ok(reply)) => {
                self.take_reply(&reply);
                Ok(())
            }
            Ok(Err(err)) => Err(err.into()),
            Err(_silence) => {
                let now = Instant::now();
                let due: Vec<u64> = self
                    .unanswered
                    .iter()
                    .filter(|(_, u)| u.retry_at.is_some_and(|at| at <= now))
                    .map(|(seq, _)| *seq)
                    .collect();
                if due.is_empty() {
                    // Silence: the connection may be gone (the server restarted); this crate
                    // does not reconnect a DEALER, so connect a new one and resend everything.
                    self.reconnect().await?;
                    let all: Vec<u64> = self.unanswered.keys().copied().collect();
                    self.resend(&all).await
                } else {
                    self.resend(&due).await
                }
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), RunnerError> {
        let mut socket = DealerSocket::new();
        socket.connect(&self.endpoint).await?;
        self.socket = socket;
        Ok(())
    }

    async fn resend(&mut self, seqs: &[u64]) -> Result<(), RunnerError> {
        for seq in seqs {
            let Some(frames) = self.unanswered.get_mut(seq).map(|u| {
                u.retry_at = None;
                u.frames.clone()
            }) else {
                continue;
            };
            self.transmit(&frames).await?;
            self.stats.resent += 1;
        }
        Ok(())
    }

    fn take_reply(&mut self, reply: &ZmqMessage) {
        let Some(body) = reply.iter().rev().find(|f| !f.is_empty()) else {
            return;
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
            tracing::warn!("unreadable reply from the server");
            return;
        };
        if let Some(seq) = body.get("ack").and_then(serde_json::Value::as_u64) {
            if self.unanswered.remove(&seq).is_some() {
                self.stats.acknowledged += 1;
                if body.get("duplicate").and_then(serde_json::Value::as_bool) == Some(true) {
                    self.stats.duplicates += 1;
                }
                self.last_progress = Instant::now();
            }
            return;
        }
        let Some(seq) = body.get("nack").and_then(serde_json::Value::as_u64) else {
            tracing::warn!(%body, "nack without a seq");
            return;
        };
        let retry = body.get("retry").and_then(serde_json::Value::as_bool) == Some(true);
        if retry {
            let retry_at = Instant::now() + self.timing.retry_delay;
            if let Some(unanswered) = self.unanswered.get_mut(&seq) {
                unanswered.retry_at = Some(retry_at);
            }
        } else if self.unanswered.remove(&seq).is_some() {
            let reason = body
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("refused")
                .to_string();
            self.stats.refused.push((seq, reason));
            self.last_progress = Instant::now();
        }
    }
}

/// A session name unlikely to repeat: the process id and the start time.
pub fn new_session() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{now:x}", std::process::id())
}
