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

use crate::bluesky::{BlueskyConfig, BlueskyCounters, Translator};

/// Which socket a message came in on; it decides acknowledgement and gap semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// PUSH -> PULL: lossless, back-pressured.
    Pull,
    /// PUB -> SUB: fan-out, may drop; gaps are detected from `seq`.
    Sub,
    /// DEALER -> ROUTER: acknowledged once durable.
    Router,
    /// Bluesky documents on a SUB socket, translated: fan-out like `Sub`, never acknowledged.
    Bluesky,
}

impl TransportKind {
    /// Lower-case name, as stored in `ingest_errors.transport`.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Pull => "pull",
            TransportKind::Sub => "sub",
            TransportKind::Router => "router",
            TransportKind::Bluesky => "bluesky",
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
    /// Set when the transport itself refused what arrived (a Bluesky document it could not
    /// translate): `frames` holds it as it came, and the pipeline files it in
    /// `ingest_errors` with this reason.
    pub refusal: Option<String>,
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
    /// Bluesky documents: a SUB socket and its translator's configuration.
    pub bluesky: Option<BlueskyBind>,
    /// Bound on bytes of received messages not yet processed.
    pub max_queued_bytes: usize,
}

/// The Bluesky socket: where it binds or connects, and how documents map to messages.
#[derive(Debug, Clone)]
pub struct BlueskyBind {
    /// `[bluesky]` configuration.
    pub config: BlueskyConfig,
    /// Counters the translator keeps, read by the metrics endpoints.
    pub counters: Arc<BlueskyCounters>,
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
    /// Bluesky SUB endpoint (bound), if `listen` is set.
    pub bluesky: Option<String>,
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
    /// The Bluesky socket could not connect to a proxy.
    #[error("cannot connect to the Bluesky proxy at {endpoint}: {source}")]
    Connect {
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
    if let Some(bluesky) = config.bluesky.as_ref().filter(|b| b.config.enabled()) {
        let mut socket = SubSocket::new();
        if !bluesky.config.listen.is_empty() {
            let endpoint = &bluesky.config.listen;
            let bound = socket.bind(endpoint).await.map_err(bind_err(endpoint))?;
            endpoints.bluesky = Some(bound.to_string());
        }
        for endpoint in &bluesky.config.connect {
            socket
                .connect(endpoint)
                .await
                .map_err(|source| TransportError::Connect {
                    endpoint: endpoint.clone(),
                    source,
                })?;
        }
        socket.subscribe("").await.map_err(bind_err("bluesky"))?;
        let source = BlueskyReceiver {
            translator: Translator::new(bluesky.config.clone(), bluesky.counters.clone()),
            receiver: Receiver {
                kind: TransportKind::Bluesky,
                queue: queue.clone(),
                budget: budget.clone(),
                max_permits,
            },
        };
        tasks.push(tokio::spawn(source.run(socket, shutdown.clone())));
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
    /// The next message off `socket` with its receipt times, or `None` once the server is
    /// stopping. A failed receive is logged and skipped.
    async fn receive<S: SocketRecv + Send>(
        &self,
        socket: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<(Vec<Bytes>, Instant, i64)> {
        loop {
            let message = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return None,
                received = socket.recv() => received,
            };
            match message {
                Ok(message) => return Some((message.into_vec(), Instant::now(), now_ns())),
                Err(err) => tracing::warn!(transport = self.kind.name(), %err, "receive failed"),
            }
        }
    }

    async fn run<S: SocketRecv + Send>(self, mut socket: S, mut shutdown: watch::Receiver<bool>) {
        while let Some((mut frames, received_at, arrival_time_ns)) =
            self.receive(&mut socket, &mut shutdown).await
        {
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
            let arrived = Arrived {
                frames,
                reply_to,
                arrival_time_ns,
                received_at,
                refusal: None,
            };
            if !self.enqueue(arrived, &mut shutdown).await {
                break;
            }
        }
    }

    /// Takes the message's byte budget and queues it for the pipeline; false once the server
    /// is stopping.
    async fn enqueue(&self, arrived: Arrived, shutdown: &mut watch::Receiver<bool>) -> bool {
        let size: usize = arrived.frames.iter().map(Bytes::len).sum();
        let permits = size.clamp(1, self.max_permits).min(u32::MAX as usize) as u32;
        let budget = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return false,
            permit = self.budget.clone().acquire_many_owned(permits) => match permit {
                Ok(permit) => permit,
                Err(_) => return false,
            },
        };
        let inbound = Inbound {
            transport: self.kind,
            frames: arrived.frames,
            reply_to: arrived.reply_to,
            arrival_time_ns: arrived.arrival_time_ns,
            received_at: arrived.received_at,
            budget,
            refusal: arrived.refusal,
        };
        self.queue.send(inbound).await.is_ok()
    }
}

/// A message off a socket, before it holds its byte budget.
struct Arrived {
    frames: Vec<Bytes>,
    reply_to: Option<ReplyTo>,
    arrival_time_ns: i64,
    received_at: Instant,
    refusal: Option<String>,
}

/// The Bluesky socket's receive loop: each document is translated into wire messages (or
/// refusals), which are queued like any other socket's messages.
struct BlueskyReceiver {
    translator: Translator,
    receiver: Receiver,
}

impl BlueskyReceiver {
    async fn run(mut self, mut socket: SubSocket, mut shutdown: watch::Receiver<bool>) {
        while let Some((frames, received_at, arrival_time_ns)) =
            self.receiver.receive(&mut socket, &mut shutdown).await
        {
            let translated = match frames.as_slice() {
                [frame] => self.translator.translate(frame),
                _ => self.translator.refuse_frames(frames.len()),
            };
            let messages = translated.messages.into_iter().map(|m| (m.frames(), None));
            let refusals = translated
                .refusals
                .into_iter()
                .map(|r| (frames.clone(), Some(r.to_string())));
            for (frames, refusal) in messages.chain(refusals) {
                let arrived = Arrived {
                    frames,
                    reply_to: None,
                    arrival_time_ns,
                    received_at,
                    refusal,
                };
                if !self.receiver.enqueue(arrived, &mut shutdown).await {
                    return;
                }
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
