//! Admission at every TCP door of the query side: HTTP, Flight SQL and PostgreSQL.
//!
//! Each door takes at most `max_connections` at once; a connection beyond that is closed as
//! soon as it is accepted, and counted, so a flood of clients costs a descriptor for a moment
//! and nothing else. An accept that fails (out of descriptors) backs off instead of spinning.
//! One loop serves all three doors, so they count and refuse alike.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a door waits after a failed accept (out of descriptors, for instance).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections open and refused at one door.
#[derive(Debug, Default)]
pub struct DoorCounters {
    open: AtomicU64,
    refused: AtomicU64,
}

/// A copy of [`DoorCounters`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DoorSnapshot {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
}

impl DoorCounters {
    /// The counters now.
    pub fn snapshot(&self) -> DoorSnapshot {
        DoorSnapshot {
            connections_open: self.open.load(Ordering::Relaxed),
            connections_refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// One door: a listener with a connection limit.
pub struct Doorway {
    name: &'static str,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    counters: Arc<DoorCounters>,
}

impl Doorway {
    /// A door named `name` (for logs) on `listener`, admitting `max_connections` at once.
    pub fn new(
        name: &'static str,
        listener: TcpListener,
        max_connections: usize,
        counters: Arc<DoorCounters>,
    ) -> Doorway {
        Doorway {
            name,
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            counters,
        }
    }

    /// The next connection within the limit, with TCP_NODELAY set (responses go out in
    /// several writes; with Nagle's algorithm the last would wait for the client's delayed
    /// ACK, 40 ms on Linux). Connections beyond the limit are closed and counted meanwhile.
    pub async fn admit(&self) -> Admitted {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    tracing::warn!(door = self.name, %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(door = self.name, "connection refused: max_connections open");
                continue;
            };
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(door = self.name, %err, "cannot set TCP_NODELAY");
            }
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            return Admitted {
                stream,
                slot: Slot {
                    _permit: slot,
                    counters: self.counters.clone(),
                },
            };
        }
    }

    /// Admitted connections as a stream, for servers that take one (tonic).
    pub fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Admitted>> {
        futures::stream::unfold(self, |door| async move {
            let admitted = door.admit().await;
            Some((Ok(admitted), door))
        })
    }
}

/// An admitted connection: its socket, and its slot, which keeps it counted as open until
/// dropped (the two can be parted for servers that want a bare `TcpStream`).
pub struct Admitted {
    /// The socket.
    pub stream: TcpStream,
    /// The connection's place among `max_connections`.
    pub slot: Slot,
}

/// A place among a door's `max_connections`, freed when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    counters: Arc<DoorCounters>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
