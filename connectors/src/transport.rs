//! The ZeroMQ transport: the only module that touches sockets on the ingest side.
//!
//! The server binds and peers connect (libzmq peers reconnect by themselves; the `zeromq` crate
//! cannot reconnect a PUSH or DEALER). The crate has no high-water mark, so this module never
//! relies on the socket to bound memory: every received message must first take permits for its
//! size from a byte semaphore, and the queue to the pipeline is bounded in messages too. When
//! either bound is reached, the receive loop stops reading and the sender's own queue fills.
//! Keep it small: if the crate cannot carry a requirement, this file is what gets swapped.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use zeromq::{PullSocket, RouterSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

/// Which socket a message came in on; it decides acknowledgement and gap semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// PUSH -> PULL: lossless, back-pressured.
    Pull,
    /// PUB -> SUB: fan-out, may drop; gaps are detected from `seq`.
    Sub,
    /// DEALER -> ROUTER: acknowledged once durable.
    Router,
}

impl TransportKind {
    /// Lower-case name, as stored in `ingest_errors.transport`.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Pull => "pull",
            TransportKind::Sub => "sub",
            TransportKind::Router => "router",
        }
    }
}

/// Where to send the acknowledgement of a ROUTER message.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    identity: Bytes,
    /// The sender put an empty delimiter frame before the header (REQ style); echo it back.
    delimited: bool,
}

impl ReplyTo {
    /// The ROUTER identity of the connection: replies to one identity must keep their order.
    pub fn identity(&self) -> &Bytes {
        &self.identity
    }
}

/// One received message on its way to the pipeline.
#[derive(Debug)]
pub struct Inbound {
    /// The socket it arrived on.
    pub transport: TransportKind,
    /// Header frame then payload frames (routing frames already removed).
    pub frames: Vec<Bytes>,
    /// For acknowledged mode: who to answer.
    pub reply_to: Option<ReplyTo>,
    /// Wall-clock receipt time, ns since the Unix epoch (UTC).
    pub arrival_time_ns: i64,
    /// Monotonic receipt time, for latency measurements.
    pub received_at: Instant,
    /// Byte budget held until the message is processed; dropping it frees the budget.
    pub budget: OwnedSemaphorePermit,
}

impl Inbound {
    /// Total payload size of the message in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.len() as u64).sum()
    }
}

/// Endpoints to bind, as ZeroMQ endpoint strings (`tcp://127.0.0.1:5555`, port 0 for any).
#[derive(Debug, Clone)]
pub struct BindConfig {
    /// PULL socket (lossless senders).
    pub pull: Option<String>,
    /// SUB socket (publishers connect to it).
    pub sub: Option<String>,
    /// ROUTER socket (acknowledged senders).
    pub router: Option<String>,
    /// Bound on bytes of received messages not yet processed.
    pub max_queued_bytes: usize,
}

/// The endpoints actually bound (ports resolved).
#[derive(Debug, Clone, Default)]
pub struct BoundEndpoints {
    /// PULL endpoint.
    pub pull: Option<String>,
    /// SUB endpoint.
    pub sub: Option<String>,
    /// ROUTER endpoint.
    pub router: Option<String>,
}

/// Sends acknowledgements back through the ROUTER socket.
#[derive(Clone)]
pub struct Acker {
    sender: Option<zeromq::RouterSendHalf>,
}

impl Acker {
    /// Sends one JSON acknowledgement frame to `reply_to`. Failures (peer gone) are logged:
    /// the sender keeps unacknowledged messages and will resend them.
    pub async fn send(&mut self, reply_to: &ReplyTo, body: &serde_json::Value) {
        let Some(sender) = self.sender.as_mut() else {
            return;
        };
        let mut frames = vec![reply_to.identity.clone()];
        if reply_to.delimited {
            frames.push(Bytes::new());
        }
        frames.push(Bytes::from(body.to_string()));
        let Ok(message) = ZmqMessage::try_from(frames) else {
            return;
        };
        if let Err(err) = sender.send(message).await {
            tracing::debug!(%err, "acknowledgement not delivered");
        }
    }
}

/// Transport errors: binding failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket could not bind its endpoint.
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// The socket's error.
        source: zeromq::ZmqError,
    },
}

/// Running receive loops and what they bound.
pub struct Transport {
    /// The endpoints bound.
    pub endpoints: BoundEndpoints,
    /// Acknowledgement sender for acknowledged mode.
    pub acker: Acker,
    /// One task per socket; they end when `shutdown` turns true.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Binds the configured sockets and starts one receive loop per socket.
///
/// # Errors
/// [`TransportError::Bind`] if an endpoint cannot be bound.
pub async fn bind(
    config: &BindConfig,
    queue: mpsc::Sender<Inbound>,
    shutdown: watch::Receiver<bool>,
) -> Result<Transport, TransportError> {
    let budget = Arc::new(Semaphore::new(config.max_queued_bytes.max(1)));
    let max_permits = config.max_queued_bytes.max(1);
    let mut endpoints = BoundEndpoints::default();
    let mut tasks = Vec::new();
    let mut acker = Acker { sender: None };
    let bind_err = |endpoint: &str| {
        let endpoint = endpoint.to_string();
        move |source| TransportError::Bind { endpoint, source }
    };
    if let Some(endpoint) = &config.pull {
        let mut socket = PullSocket::new();
        let bound = socket.bind(endpoint).await.map_err(bind_err(endpoint))?;
        endpoints.pull = Some(bound.to_string());
        let source = Receiver {
            kind: TransportKind::Pull,
            queue: queue.clone(),
            budget: budget.clone(),
            max_permits,
        };
        tasks.push(tokio::spawn(source.run(socket, shutdown.clone())));
    }
    if let Some(endpoint) = &config.sub {
        let mut socket = SubSocket::new();
        let bound = socket.bind(endpoint).await.map_err(bind_err(endpoint))?;
        socket.subscribe("").await.map_err(bind_err(endpoint))?;
        endpoints.sub = Some(bound.to_string());
        let source = Receiver {
            kind: TransportKind::Sub,
            queue: queue.clone(),
            budget: budget.clone(),
            max_permits,
        };
        tasks.push(tokio::spawn(source.run(socket, shutdown.clone())));
    }
    if let Some(endpoint) = &config.router {
        let mut socket = RouterSocket::new();
        let bound = socket.bind(endpoint).await.map_err(bind_err(endpoint))?;
        endpoints.router = Some(bound.to_string());
        let (send_half, recv_half) = socket.split();
        acker.sender = Some(send_half);
        let source = Receiver {
            kind: TransportKind::Router,
            queue: queue.clone(),
            budget: budget.clone(),
            max_permits,
        };
        tasks.push(tokio::spawn(source.run(recv_half, shutdown.clone())));
    }
    Ok(Transport {
        endpoints,
        acker,
        tasks,
    })
}

/// One socket's receive loop.
struct Receiver {
    kind: TransportKind,
    queue: mpsc::Sender<Inbound>,
    budget: Arc<Semaphore>,
    max_permits: usize,
}

impl Receiver {
    async fn run<S: SocketRecv + Send>(self, mut socket: S, mut shutdown: watch::Receiver<bool>) {
        loop {
            let message = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                received = socket.recv() => received,
            };
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(transport = self.kind.name(), %err, "receive failed");
                    continue;
                }
            };
            let received_at = Instant::now();
            let arrival_time_ns = now_ns();
            let mut frames = message.into_vec();
            let reply_to = match self.kind {
                TransportKind::Router => {
                    let identity = if frames.is_empty() {
                        Bytes::new()
                    } else {
                        frames.remove(0)
                    };
                    let delimited = frames.first().is_some_and(|f| f.is_empty());
                    if delimited {
                        frames.remove(0);
                    }
                    Some(ReplyTo {
                        identity,
                        delimited,
                    })
                }
                _ => None,
            };
            let size: usize = frames.iter().map(Bytes::len).sum();
            let permits = size.clamp(1, self.max_permits).min(u32::MAX as usize) as u32;
            let budget = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                permit = self.budget.clone().acquire_many_owned(permits) => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let inbound = Inbound {
                transport: self.kind,
                frames,
                reply_to,
                arrival_time_ns,
                received_at,
                budget,
            };
            if self.queue.send(inbound).await.is_err() {
                break;
            }
        }
    }
}

/// Wall-clock time in ns since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
