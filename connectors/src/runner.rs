//! Runs a connector: takes its messages, numbers them, paces them and sends them over ZeroMQ.
//!
//! This is the sending half of the transport for Rust-side connectors (simulators, replay,
//! the load generator). It connects a PUSH socket to the server's PULL endpoint, so a runner
//! blocks rather than drops when the server is behind.

use std::time::Duration;

use tokio::sync::watch;
use zeromq::{PushSocket, Socket, SocketSend, ZmqMessage};

use crate::connector::Connector;
use crate::message::OutboundMessage;

/// How fast a runner sends.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// As fast as the server accepts.
    Unpaced,
    /// At most this many messages per second.
    RateHz(f64),
}

/// Why a runner stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The socket failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zeromq::ZmqError),
    /// The connector failed.
    #[error(transparent)]
    Connector(#[from] crate::connector::ConnectorError),
    /// The server stopped answering an acknowledged sender.
    #[error(
        "{endpoint}: {messages} messages still unacknowledged after the server stopped answering"
    )]
    Unanswered {
        /// The ROUTER endpoint.
        endpoint: String,
        /// Messages neither acknowledged nor refused.
        messages: u64,
    },
}

/// A connected PUSH sender that numbers messages per source.
pub struct PushSender {
    socket: PushSocket,
    next_seq: u64,
}

impl PushSender {
    /// Connects to a server's PULL endpoint.
    ///
    /// # Errors
    /// The socket's error if the endpoint is unreachable or malformed.
    pub async fn connect(endpoint: &str) -> Result<PushSender, RunnerError> {
        let mut socket = PushSocket::new();
        socket.connect(endpoint).await?;
        Ok(PushSender {
            socket,
            next_seq: 0,
        })
    }

    /// Leaves `count` sequence numbers unused: a sender that dropped messages before sending
    /// them (an overflowing instrument buffer) skips their numbers so the server sees the loss.
    pub fn skip_seq(&mut self, count: u64) {
        self.next_seq += count;
    }

    /// Stamps the next `seq` on the message and sends it.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn send(&mut self, mut message: OutboundMessage) -> Result<u64, RunnerError> {
        let seq = self.next_seq;
        message.header.seq = seq;
        self.next_seq += 1;
        let frames = ZmqMessage::try_from(message.frames())
            .map_err(|_| zeromq::ZmqError::Other("empty message"))?;
        self.socket.send(frames).await?;
        Ok(seq)
    }
}

/// Sends every message of `connector` to `endpoint` until it is exhausted or `shutdown` fires.
/// Returns how many messages were sent. Messages without a `session` get one for this run: the
/// run's seq counter starts again, so the server must not take a second run (a file replayed
/// twice, a restarted simulator) for resends of the first and drop it as duplicates.
///
/// # Errors
/// [`RunnerError`] if the socket or the connector fails.
pub async fn run_connector(
    mut connector: Box<dyn Connector>,
    endpoint: String,
    pacing: Pacing,
    mut shutdown: watch::Receiver<bool>,
) -> Result<u64, RunnerError> {
    let mut sender = PushSender::connect(&endpoint).await?;
    let session = crate::acked::new_session();
    let mut ticker = match pacing {
        Pacing::Unpaced => None,
        Pacing::RateHz(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(ticker)
        }
    };
    let mut sent = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(ticker) = ticker.as_mut() {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = ticker.tick() => {}
            }
        }
        let Some(mut message) = connector.next_message()? else {
            break;
        };
        message
            .header
            .session
            .get_or_insert_with(|| session.clone());
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            result = sender.send(message) => { result?; }
        }
        sent += 1;
    }
    tracing::debug!(source = connector.source_id(), sent, "connector finished");
    Ok(sent)
}

/// Sends every message of `connector` to a server's ROUTER `endpoint` with acknowledgements,
/// resending until each is durable or refused; returns what the server answered.
///
/// # Errors
/// [`RunnerError`] if the socket or the connector fails, or the server stops answering.
pub async fn run_connector_acked(
    mut connector: Box<dyn Connector>,
    endpoint: &str,
) -> Result<crate::acked::AckStats, RunnerError> {
    let session = crate::acked::new_session();
    let mut sender =
        crate::acked::AckedSender::connect(endpoint, session, Default::default()).await?;
    while let Some(message) = connector.next_message()? {
        sender.send(message).await?;
    }
    let stats = sender.finish().await?;
    tracing::debug!(source = connector.source_id(), ?stats, "connector finished");
    Ok(stats)
}
