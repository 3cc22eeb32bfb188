//! The HTTP face of a running server: `POST /sql`, `POST /conditions`, `GET /metrics`
//! (Prometheus text), `GET /metrics/json` (the same counters and more detail as JSON, for the
//! demo and scripts), `GET /health`.
//!
//! Data scientists and tools that do not speak ZeroMQ query here. `POST /sql` takes the SQL
//! text as the body and answers JSON (default), CSV or Arrow IPC, chosen by `?format=` or the
//! `Accept` header, streamed batch by batch as the query produces them; a refused or failing
//! query answers 400 with `{"error": ...}`, and one that fails after its first batch was sent
//! (a time limit reached mid-stream) has its body cut, never ended as if complete. Connections
//! are served under the limits of [`serve`]. With tokens configured, every route but
//! `/health` and the dashboard's files (`GET /`, [`dashboard`]) asks for
//! `Authorization: Bearer <token>` and answers 401 without it.

pub mod dashboard;
pub mod prometheus;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::query::output::{Format, Renderer};
use crate::query::QueryEngine;
use crate::write_buffer::WriteBuffer;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The SQL engine.
    pub query: QueryEngine,
    /// Ingest metrics.
    pub metrics: Arc<Metrics>,
    /// Buffer (for buffered/persisted row counts).
    pub buffer: Arc<WriteBuffer>,
    /// Where condition registrations go.
    pub registrations: crate::control::RegistrationSender,
    /// Time a request body may take to arrive.
    pub body_timeout: Duration,
    /// Largest `POST /sql` body (the query's `max_sql_bytes`).
    pub max_sql_bytes: usize,
    /// Connection counters.
    pub connections: Arc<serve::HttpCounters>,
    /// Tokens a request's bearer header must match (none configured: every request passes).
    pub tokens: crate::auth::Tokens,
    /// Committed feature rows, for `GET /events`.
    pub events: crate::publish::events::EventFeed,
}

/// Largest `POST /conditions` body.
const MAX_CONDITION_BYTES: usize = 1 << 20;

/// The body of a request, or the response that refuses it (408 when it is late, else 413);
/// `limit` says where `max_bytes` is set.
async fn body_of(
    state: &HttpState,
    body: Body,
    max_bytes: usize,
    limit: &'static str,
) -> Result<axum::body::Bytes, Response> {
    match serve::read_body(body, max_bytes, limit, state.body_timeout).await {
        Ok(bytes) => Ok(bytes),
        Err(err @ serve::BodyError::TimedOut(_)) => {
            state.connections.body_timed_out();
            Err(error(StatusCode::REQUEST_TIMEOUT, err.to_string()))
        }
        Err(err) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())),
    }
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    let guarded = Router::new()
        .route("/sql", post(sql))
        .route("/conditions", post(conditions))
        .route("/metrics", get(metrics_prometheus))
        .route("/metrics/json", get(metrics))
        .route("/events", get(events))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    guarded
        .route("/health", get(health))
        .merge(dashboard::routes())
        .with_state(state)
}

/// The feature stream as server-sent events: `event: rows` per stream part of each committed
/// group, `event: lagged` with `{"missed": n}` when this listener fell behind.
async fn events(
    State(state): State<HttpState>,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use crate::publish::events::FeedEvent;
    use axum::response::sse::{Event, KeepAlive, Sse};
    let listener = state.events.listen();
    let stream = futures::stream::unfold(listener, |mut listener| async move {
        let event = match listener.next().await? {
            FeedEvent::Rows(rows) => Event::default().event("rows").data(&*rows),
            FeedEvent::Lagged(missed) => Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{missed}}}")),
        };
        Some((Ok(event), listener))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Lets a request through when its bearer token is accepted; 401 otherwise.
async fn require_token(
    State(state): State<HttpState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.tokens.allows_bearer(header) {
        return next.run(request).await;
    }
    state.connections.unauthorized();
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized: send Authorization: Bearer <token>".into(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[derive(Debug, Deserialize)]
struct SqlParams {
    format: Option<String>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn choose_format(params: &SqlParams, headers: &HeaderMap) -> Result<Format, String> {
    if let Some(name) = &params.format {
        return Format::parse(name)
            .ok_or_else(|| format!("unknown format {name:?}: use json, csv or arrow"));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains("arrow") {
        Format::Arrow
    } else if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    })
}

async fn sql(
    State(state): State<HttpState>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match body_of(&state, body, state.max_sql_bytes, "[query] max_sql_bytes").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let format = match choose_format(&params, &headers) {
        Ok(format) => format,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be UTF-8 SQL text".into(),
        );
    };
    if format == Format::Table {
        return error(
            StatusCode::BAD_REQUEST,
            "format table is for the terminal: use json, csv or arrow".into(),
        );
    }
    let mut stream = match state.query.stream(text).await {
        Ok(stream) => stream,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    // Most failures show before the first batch: answer those with a status, not a cut body.
    let first = match stream.next().await {
        Some(Err(err)) => return error(StatusCode::BAD_REQUEST, err.to_string()),
        first => first,
    };
    let mut renderer = match Renderer::new(format, &stream.schema()) {
        Ok(renderer) => renderer,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    let head = renderer.take();
    let body = futures::stream::unfold(
        (Some(renderer), first, stream, Some(head)),
        |(renderer, pending, mut stream, head)| async move {
            if let Some(head) = head {
                return Some((Ok(Bytes::from(head)), (renderer, pending, stream, None)));
            }
            let mut renderer = renderer?;
            let next = match pending {
                Some(item) => Some(item),
                None => stream.next().await,
            };
            let chunk = match next {
                Some(Ok(batch)) => renderer.batch(&batch).map_err(|e| e.to_string()),
                Some(Err(err)) => Err(err.to_string()),
                None => {
                    let end = renderer.finish().map_err(|e| e.to_string());
                    return Some((
                        end.map(Bytes::from).map_err(stream_error),
                        (None, None, stream, None),
                    ));
                }
            };
            match chunk {
                Ok(bytes) => Some((Ok(Bytes::from(bytes)), (Some(renderer), None, stream, None))),
                // The status is sent: cutting the body is how the client learns of the failure.
                Err(message) => {
                    tracing::warn!(%message, "query failed while its result was streaming");
                    Some((Err(stream_error(message)), (None, None, stream, None)))
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response()
}

fn stream_error(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

/// `POST /conditions`: registers a condition (body as in `docs/feature-streams.md`); 200 once
/// durable, 400 with the reason otherwise.
async fn conditions(State(state): State<HttpState>, body: Body) -> Response {
    let body = match body_of(&state, body, MAX_CONDITION_BYTES, "1 MiB for a condition").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {err}")),
    };
    let answer = crate::control::register(&state.registrations, &request).await;
    let status = if answer.get("ok") == Some(&serde_json::Value::Bool(true)) {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(answer)).into_response()
}

/// `GET /health`: 200 while the write path keeps its promises, 503 with the reasons while the
/// WAL or the persister is failing.
async fn health(State(state): State<HttpState>) -> Response {
    let report = state.metrics.health.report();
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// `GET /metrics`: Prometheus text.
async fn metrics_prometheus(State(state): State<HttpState>) -> Response {
    let scrape = prometheus::Scrape {
        metrics: state.metrics.snapshot(),
        processed: state.metrics.processed(),
        buffer: state.buffer.stats(),
        health: state.metrics.health.report(),
        http: state.connections.snapshot(),
        query: state.query.counters(),
    };
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        prometheus::render(scrape),
    )
        .into_response()
}

/// `GET /metrics/json`: every counter as one JSON object.
async fn metrics(State(state): State<HttpState>) -> Response {
    let snapshot = state.metrics.snapshot();
    let buffer = state.buffer.stats();
    let mut value = serde_json::to_value(&snapshot).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "messages_processed".into(),
            state.metrics.processed().into(),
        );
        object.insert(
            "buffer".into(),
            serde_json::json!({
                "open_rows": buffer.open_rows,
                "open_bytes": buffer.open_bytes,
                "persisting_rows": buffer.persisting_rows,
                "persisting_bytes": buffer.persisting_bytes,
                "persisting_snapshots": buffer.persisting_snapshots,
                "persisted_rows": buffer.persisted_rows,
                "persisted_files": buffer.persisted_files,
            }),
        );
        object.insert(
            "http".into(),
            serde_json::to_value(state.connections.snapshot()).unwrap_or_default(),
        );
        object.insert(
            "query".into(),
            serde_json::to_value(state.query.counters()).unwrap_or_default(),
        );
    }
    Json(value).into_response()
}
