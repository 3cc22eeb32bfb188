//! The control endpoint: a ZeroMQ ROUTER where clients register conditions and ask for replays.
//!
//! Optimizers and pump controllers speak ZeroMQ already (they send or subscribe), so the two
//! requests they make of the server go over the same kind of socket: one JSON frame in, a
//! multipart answer out (REQ and DEALER clients both work). A registration is handed to the
//! ingest pipeline, which owns the order of everything written, and is answered only once its
//! row is durable; a replay is answered from the SQL engine in its own task, so a long replay
//! never holds up a registration. With tokens configured, each request carries one in its
//! `token` field.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use zeromq::{RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::conditions::Registration;
use crate::publish::replay::{self, ReplayRequest};
use crate::publish::sequencer::StreamDirectory;
use crate::query::QueryEngine;

/// A registration on its way to the pipeline, with where to send the answer.
pub struct RegisterRequest {
    /// The parsed registration.
    pub registration: Registration,
    /// Receives `{"ok": true, ...}` once durable, or the error.
    pub reply: oneshot::Sender<Value>,
}

/// The pipeline's inbox for registrations.
pub type RegistrationSender = mpsc::Sender<RegisterRequest>;

/// Registers a condition from a JSON request; the answer is the JSON to send back.
pub async fn register(sender: &RegistrationSender, request: &Value) -> Value {
    let registration = match Registration::from_json(request) {
        Ok(r) => r,
        Err(err) => return json!({"ok": false, "error": err.to_string()}),
    };
    let (reply, answer) = oneshot::channel();
    if sender
        .send(RegisterRequest {
            registration,
            reply,
        })
        .await
        .is_err()
    {
        return json!({"ok": false, "error": "the server is shutting down"});
    }
    answer
        .await
        .unwrap_or_else(|_| json!({"ok": false, "error": "the server is shutting down"}))
}

/// What the control endpoint needs.
#[derive(Clone)]
pub struct ControlState {
    /// Where registrations go.
    pub registrations: RegistrationSender,
    /// Streams known, for replay.
    pub directory: StreamDirectory,
    /// SQL engine, for replay.
    pub query: QueryEngine,
    /// Rows per replay answer at most.
    pub max_replay_rows: usize,
    /// Replay requests served (for `/metrics`).
    pub replay_requests: Arc<std::sync::atomic::AtomicU64>,
    /// Tokens a request's `token` field must match (none configured: any request passes).
    pub tokens: crate::auth::Tokens,
}

/// Binds the ROUTER and serves requests until `shutdown`. Returns the bound endpoint and task.
///
/// # Errors
/// The socket's error if it cannot bind.
pub async fn serve(
    endpoint: &str,
    state: ControlState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(String, JoinHandle<()>), zeromq::ZmqError> {
    let mut socket = RouterSocket::new();
    let bound = socket.bind(endpoint).await?.to_string();
    let (send_half, mut recv_half) = socket.split();
    let send_half = Arc::new(Mutex::new(send_half));
    let task = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                m = recv_half.recv() => m,
            };
            let mut frames = match message {
                Ok(m) => m.into_vec(),
                Err(err) => {
                    tracing::warn!(%err, "control endpoint receive failed");
                    continue;
                }
            };
            if frames.is_empty() {
                continue;
            }
            let identity = frames.remove(0);
            let delimited = frames.first().is_some_and(|f| f.is_empty());
            if delimited {
                frames.remove(0);
            }
            let state = state.clone();
            let sender = send_half.clone();
            tokio::spawn(async move {
                let answer = handle(&state, frames.first().map(|f| f.as_ref())).await;
                let mut out = vec![identity];
                if delimited {
                    out.push(Bytes::new());
                }
                out.extend(answer);
                if let Ok(message) = ZmqMessage::try_from(out) {
                    if let Err(err) = sender.lock().await.send(message).await {
                        tracing::debug!(%err, "control answer not delivered");
                    }
                }
            });
        }
    });
    Ok((bound, task))
}

async fn handle(state: &ControlState, request: Option<&[u8]>) -> Vec<Bytes> {
    let error = |message: String| {
        vec![Bytes::from(
            json!({"ok": false, "error": message}).to_string(),
        )]
    };
    let Some(request) = request else {
        return error("empty request".into());
    };
    let request: Value = match serde_json::from_slice(request) {
        Ok(v) => v,
        Err(err) => return error(format!("request is not JSON: {err}")),
    };
    if !state
        .tokens
        .allows(request.get("token").and_then(Value::as_str))
    {
        return error("unauthorized: the request needs a valid \"token\"".into());
    }
    match request.get("op").and_then(Value::as_str) {
        Some("register_condition") => {
            vec![Bytes::from(
                register(&state.registrations, &request).await.to_string(),
            )]
        }
        Some("replay") => {
            state
                .replay_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let parsed = match ReplayRequest::from_json(&request, state.max_replay_rows) {
                Ok(r) => r,
                Err(err) => return error(err.to_string()),
            };
            match replay::answer(&parsed, &state.directory, &state.query).await {
                Ok(frames) => frames,
                Err(err) => error(err.to_string()),
            }
        }
        Some(other) => error(format!("unknown op {other:?} (register_condition, replay)")),
        None => error("request needs an \"op\"".into()),
    }
}
