//! A ZeroMQ PUB socket with a byte budget per subscriber and counted drops.
//!
//! The `zeromq` crate's PUB queues up to 100,000 messages per subscriber and drops silently
//! when that is full; a subscriber that stops reading can therefore pin 100,000 feature
//! messages in the server's memory, and nobody learns that it lost any. The feature stream must
//! instead stay within a configured memory bound and show its drops, so this module speaks the
//! PUB side of ZMTP 3.0 (greeting, NULL mechanism, READY, subscriptions as `\x01topic`
//! messages or 3.1 SUBSCRIBE commands, framed messages) over tokio TCP, with one bounded queue
//! per subscriber: a message that does not fit a subscriber's remaining budget is dropped for
//! that subscriber and counted. Any ZeroMQ SUB (libzmq, pyzmq, the `zeromq` crate) connects.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A connection that has not completed the ZMTP handshake by then is closed.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest subscription or command frame accepted from a subscriber.
const MAX_INBOUND_FRAME_BYTES: u64 = 64 * 1024;

/// Counters of the stream, read by `/metrics`.
#[derive(Debug, Default)]
pub struct PubCounters {
    /// Messages handed to at least one subscriber's queue.
    pub messages: AtomicU64,
    /// (message, subscriber) pairs dropped because the subscriber's queue was full.
    pub dropped_messages: AtomicU64,
    /// Bytes queued now, all subscribers.
    pub queued_bytes: AtomicUsize,
    /// Most bytes ever queued for one subscriber.
    pub queued_bytes_max: AtomicUsize,
    /// Subscribers connected now.
    pub subscribers: AtomicUsize,
    /// Connections refused (over `max_subscribers`, or not a SUB speaking ZMTP 3).
    pub refused_connections: AtomicU64,
}

/// Limits of the socket.
#[derive(Debug, Clone, Copy)]
pub struct PubLimits {
    /// Bytes queued per subscriber at most.
    pub max_queued_bytes_per_subscriber: usize,
    /// Subscribers at most.
    pub max_subscribers: usize,
}

type Frames = Arc<[Bytes]>;

struct Subscriber {
    id: u64,
    subscriptions: Mutex<Vec<Vec<u8>>>,
    queue: mpsc::UnboundedSender<(Frames, usize)>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Subscriber {
    fn wants(&self, topic: &[u8]) -> bool {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|prefix| topic.starts_with(prefix))
    }
}

/// The PUB socket; cheap to clone.
#[derive(Clone)]
pub struct PubSocket {
    subscribers: Arc<Mutex<Vec<Arc<Subscriber>>>>,
    counters: Arc<PubCounters>,
    limits: PubLimits,
}

/// Why the socket could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {endpoint}: {source}")]
pub struct BindError {
    endpoint: String,
    source: std::io::Error,
}

impl PubSocket {
    /// Binds `endpoint` (`tcp://host:port`, port 0 for any) and accepts subscribers until
    /// `shutdown` turns true. Returns the socket, the bound endpoint and the accept task.
    ///
    /// # Errors
    /// [`BindError`] if the address is malformed or taken.
    pub async fn bind(
        endpoint: &str,
        limits: PubLimits,
        counters: Arc<PubCounters>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(PubSocket, String, JoinHandle<()>), BindError> {
        let err = |source| BindError {
            endpoint: endpoint.to_string(),
            source,
        };
        let address = endpoint.strip_prefix("tcp://").ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "only tcp:// endpoints",
            ))
        })?;
        let listener = TcpListener::bind(address).await.map_err(err)?;
        let bound = format!("tcp://{}", listener.local_addr().map_err(err)?);
        let socket = PubSocket {
            subscribers: Arc::new(Mutex::new(Vec::new())),
            counters,
            limits,
        };
        let accepting = socket.clone();
        let task = tokio::spawn(async move {
            let mut next_id = 0u64;
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        next_id += 1;
                        let socket = accepting.clone();
                        let stop = shutdown.clone();
                        tokio::spawn(async move {
                            if let Err(err) = socket.serve(stream, next_id, stop).await {
                                tracing::debug!(%peer, %err, "feature subscriber left");
                            }
                        });
                    }
                    Err(err) => {
                        // Out of descriptors, the connection stays in the backlog and the
                        // next accept fails at once: pause rather than spin.
                        tracing::warn!(%err, "accept failed on the feature stream");
                        tokio::select! {
                            _ = shutdown.wait_for(|s| *s) => break,
                            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                        }
                    }
                }
            }
            accepting.lock().clear();
        });
        Ok((socket, bound, task))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any subscriber's subscriptions match `topic` (so encoding it is worth it).
    pub fn wanted(&self, topic: &[u8]) -> bool {
        self.lock().iter().any(|s| s.wants(topic))
    }

    /// Queues a message (`frames[0]` is the topic) for every matching subscriber that has room;
    /// never blocks.
    pub fn publish(&self, frames: Vec<Bytes>) {
        let Some(topic) = frames.first() else {
            return;
        };
        let size: usize = frames.iter().map(Bytes::len).sum();
        let topic = topic.clone();
        let frames: Frames = frames.into();
        let mut delivered = false;
        for subscriber in self.lock().iter() {
            if !subscriber.wants(&topic) {
                continue;
            }
            let queued = subscriber.queued_bytes.load(Ordering::Acquire);
            if queued + size > self.limits.max_queued_bytes_per_subscriber {
                self.counters
                    .dropped_messages
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let now = subscriber.queued_bytes.fetch_add(size, Ordering::AcqRel) + size;
            self.counters
                .queued_bytes
                .fetch_add(size, Ordering::Relaxed);
            self.counters
                .queued_bytes_max
                .fetch_max(now, Ordering::Relaxed);
            if subscriber.queue.send((frames.clone(), size)).is_err() {
                subscriber.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                self.counters
                    .queued_bytes
                    .fetch_sub(size, Ordering::Relaxed);
                continue;
            }
            delivered = true;
        }
        if delivered {
            self.counters.messages.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn serve(
        self,
        stream: TcpStream,
        id: u64,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let (mut reader, writer) = stream.into_split();
        let mut writer = BufWriter::with_capacity(256 * 1024, writer);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut reader, &mut writer))
            .await
            .map_err(|_| std::io::Error::other("no ZMTP handshake within 10 s"))??;
        if self.lock().len() >= self.limits.max_subscribers {
            self.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return Err(std::io::Error::other("too many subscribers"));
        }
        let (queue, mut outbound) = mpsc::unbounded_channel::<(Frames, usize)>();
        let subscriber = Arc::new(Subscriber {
            id,
            subscriptions: Mutex::new(Vec::new()),
            queue,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
        });
        self.lock().push(subscriber.clone());
        self.counters.subscribers.fetch_add(1, Ordering::Relaxed);

        let counters = self.counters.clone();
        let queued = subscriber.queued_bytes.clone();
        let write_task = tokio::spawn(async move {
            while let Some((frames, size)) = outbound.recv().await {
                let written = write_message(&mut writer, &frames).await;
                queued.fetch_sub(size, Ordering::AcqRel);
                counters.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                written?;
                if outbound.is_empty() {
                    writer.flush().await?;
                }
            }
            Ok::<(), std::io::Error>(())
        });
        let result = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => Ok(()),
            read = read_subscriptions(&mut reader, &subscriber) => read,
        };
        self.lock().retain(|s| s.id != id);
        self.counters.subscribers.fetch_sub(1, Ordering::Relaxed);
        write_task.abort();
        // Whatever was still queued is released with the task; settle the counters.
        let left = subscriber.queued_bytes.swap(0, Ordering::AcqRel);
        self.counters
            .queued_bytes
            .fetch_sub(left, Ordering::Relaxed);
        result
    }
}

/// Greeting and NULL-mechanism READY exchange; refuses peers that are not ZMTP 3 SUBs.
async fn handshake<R, W>(reader: &mut R, writer: &mut W) -> std::io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut greeting = [0u8; 64];
    greeting[0] = 0xFF;
    greeting[9] = 0x7F;
    greeting[10] = 3; // version 3.0: subscriptions arrive as messages
    greeting[11] = 0;
    greeting[12..16].copy_from_slice(b"NULL");
    writer.write_all(&greeting).await?;
    writer.flush().await?;
    let mut peer = [0u8; 64];
    reader.read_exact(&mut peer).await?;
    if peer[0] != 0xFF || peer[9] != 0x7F || peer[10] < 3 || &peer[12..16] != b"NULL" {
        return Err(std::io::Error::other(
            "peer does not speak ZMTP 3 with the NULL mechanism",
        ));
    }
    let mut ready = Vec::with_capacity(32);
    ready.push(5u8);
    ready.extend_from_slice(b"READY");
    ready.push(11);
    ready.extend_from_slice(b"Socket-Type");
    ready.extend_from_slice(&3u32.to_be_bytes());
    ready.extend_from_slice(b"PUB");
    write_frame(writer, &ready, 0x04).await?;
    writer.flush().await?;
    let (flags, body) = read_frame(reader).await?;
    if flags & 0x04 == 0 || !body.starts_with(b"\x05READY") {
        return Err(std::io::Error::other("peer did not send READY"));
    }
    let socket_type = ready_property(&body[6..], b"Socket-Type");
    if !matches!(socket_type.as_deref(), Some(b"SUB") | Some(b"XSUB")) {
        return Err(std::io::Error::other(format!(
            "peer socket type {:?} cannot subscribe",
            socket_type.map(|t| String::from_utf8_lossy(&t).into_owned())
        )));
    }
    Ok(())
}

fn ready_property(mut properties: &[u8], wanted: &[u8]) -> Option<Vec<u8>> {
    while let Some((&name_len, rest)) = properties.split_first() {
        let name_len = name_len as usize;
        let name = rest.get(..name_len)?;
        let len_bytes: [u8; 4] = rest.get(name_len..name_len + 4)?.try_into().ok()?;
        let value_len = u32::from_be_bytes(len_bytes) as usize;
        let value = rest.get(name_len + 4..name_len + 4 + value_len)?;
        if name.eq_ignore_ascii_case(wanted) {
            return Some(value.to_vec());
        }
        properties = &rest[name_len + 4 + value_len..];
    }
    None
}

async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let flags = reader.read_u8().await?;
    let size = if flags & 0x02 != 0 {
        reader.read_u64().await?
    } else {
        u64::from(reader.read_u8().await?)
    };
    if size > MAX_INBOUND_FRAME_BYTES {
        return Err(std::io::Error::other(format!(
            "subscriber sent a {size}-byte frame"
        )));
    }
    let mut body = vec![0u8; size as usize];
    reader.read_exact(&mut body).await?;
    Ok((flags, body))
}

async fn write_frame<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    body: &[u8],
    flags: u8,
) -> std::io::Result<()> {
    if body.len() > 255 {
        writer.write_u8(flags | 0x02).await?;
        writer.write_u64(body.len() as u64).await?;
    } else {
        writer.write_u8(flags).await?;
        writer.write_u8(body.len() as u8).await?;
    }
    writer.write_all(body).await
}

async fn write_message<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    frames: &[Bytes],
) -> std::io::Result<()> {
    for (index, frame) in frames.iter().enumerate() {
        let more = if index + 1 < frames.len() { 0x01 } else { 0x00 };
        write_frame(writer, frame, more).await?;
    }
    Ok(())
}

/// Applies the subscriber's (un)subscriptions until it disconnects.
async fn read_subscriptions<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    subscriber: &Subscriber,
) -> std::io::Result<()> {
    loop {
        let (flags, body) = read_frame(reader).await?;
        let change = if flags & 0x04 != 0 {
            // ZMTP 3.1 commands; PING and others need no answer from a PUB without heartbeats.
            if let Some(topic) = body.strip_prefix(b"\x09SUBSCRIBE") {
                Some((true, topic.to_vec()))
            } else {
                body.strip_prefix(b"\x06CANCEL")
                    .map(|topic| (false, topic.to_vec()))
            }
        } else {
            match body.split_first() {
                Some((1, topic)) => Some((true, topic.to_vec())),
                Some((0, topic)) => Some((false, topic.to_vec())),
                _ => None,
            }
        };
        let Some((subscribe, topic)) = change else {
            continue;
        };
        let mut subscriptions = subscriber
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if subscribe {
            subscriptions.push(topic);
        } else if let Some(index) = subscriptions.iter().position(|s| *s == topic) {
            subscriptions.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_properties_are_found_by_name() {
        let mut body = Vec::new();
        body.push(8);
        body.extend_from_slice(b"Identity");
        body.extend_from_slice(&0u32.to_be_bytes());
        body.push(11);
        body.extend_from_slice(b"Socket-Type");
        body.extend_from_slice(&3u32.to_be_bytes());
        body.extend_from_slice(b"SUB");
        assert_eq!(ready_property(&body, b"socket-type"), Some(b"SUB".to_vec()));
        assert_eq!(ready_property(&body, b"Missing"), None);
        assert_eq!(ready_property(&body[..5], b"Socket-Type"), None);
    }
}
