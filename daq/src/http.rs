//! The HTTP face of a running server: `POST /sql`, `POST /conditions`, `GET /metrics`,
//! `GET /health`.
//!
//! Data scientists and tools that do not speak ZeroMQ query here. `POST /sql` takes the SQL
//! text as the body and answers JSON (default), CSV or Arrow IPC, chosen by `?format=` or the
//! `Accept` header; a refused or failing query answers 400 with `{"error": ...}`. Connections
//! are served under the limits of [`serve`].

pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::query::output::Format;
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
    Router::new()
        .route("/sql", post(sql))
        .route("/conditions", post(conditions))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
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
    let result = match state.query.execute(text).await {
        Ok(result) => result,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match result.render(format) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
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
    }
    Json(value).into_response()
}
