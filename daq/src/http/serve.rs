//! Serving HTTP connections under limits, so slow or idle clients cannot hold the server.
//!
//! axum's own `serve` sets no timeouts: a client trickling its headers (slowloris), sending a
//! body a byte at a time or keeping thousands of connections idle holds a task and a descriptor
//! each, for ever. Here each connection is served by hyper with a header timeout (which also
//! closes a connection idle between requests), bodies are read under a time limit by the
//! handlers ([`read_body`]), and connections beyond `max_connections` are closed as soon as
//! they are accepted. Every refusal is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;

use crate::doorway::{Admitted, DoorCounters, Doorway};

/// The limits connections are served under.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time to send a request's headers; also how long an idle connection stays open.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl HttpLimits {
    /// The limits of `config`.
    pub fn from_config(config: &crate::config::HttpConfig) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs_f64(config.header_timeout_s),
            body_timeout: Duration::from_secs_f64(config.body_timeout_s),
            max_connections: config.max_connections,
        }
    }
}

/// What the connection limits did, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    door: Arc<DoorCounters>,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    unauthorized: AtomicU64,
}

/// A copy of [`HttpCounters`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct HttpCountersSnapshot {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed because headers did not arrive in time (or idle too long).
    pub header_timeouts: u64,
    /// Requests answered 408 because the body did not arrive in time.
    pub body_timeouts: u64,
    /// Requests answered 401 for want of an accepted token.
    pub unauthorized: u64,
}

impl HttpCounters {
    /// The counters now.
    pub fn snapshot(&self) -> HttpCountersSnapshot {
        let door = self.door.snapshot();
        HttpCountersSnapshot {
            connections_open: door.connections_open,
            connections_refused: door.connections_refused,
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            body_timeouts: self.body_timeouts.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
        }
    }

    pub(super) fn body_timed_out(&self) {
        self.body_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not all of it arrived in time.
    #[error("the request body did not arrive within {0:?} ([http] body_timeout_s)")]
    TimedOut(Duration),
    /// Larger than allowed, or the connection failed.
    #[error("cannot read the request body (at most {max_bytes} bytes, {limit}): {reason}")]
    Unreadable {
        /// The limit.
        max_bytes: usize,
        /// Where the limit is set.
        limit: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Reads a whole request body of at most `max_bytes` (set where `limit` says) within `timeout`.
///
/// # Errors
/// [`BodyError`].
pub async fn read_body(
    body: Body,
    max_bytes: usize,
    limit: &'static str,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => Err(BodyError::Unreadable {
            max_bytes,
            limit,
            reason: err.to_string(),
        }),
        Err(_) => Err(BodyError::TimedOut(timeout)),
    }
}

/// Serves `router` on `listener` until `stop` resolves; connections still open then get a few
/// seconds to finish their request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let door = Doorway::new(
        "http",
        listener,
        limits.max_connections,
        counters.door.clone(),
    );
    let mut stopping = stop.clone();
    loop {
        let admitted = tokio::select! {
            admitted = door.admit() => admitted,
            () = stopped(&mut stopping) => return,
        };
        let Admitted { stream, slot } = admitted;
        let service = TowerToHyperService::new(router.clone());
        let counters = counters.clone();
        let header_timeout = limits.header_timeout;
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(5), connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(err) = result {
                if err.is_timeout() {
                    counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::debug!(%err, "http connection ended with an error");
                }
            }
            drop(slot);
        });
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
