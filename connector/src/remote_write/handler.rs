//! `POST /write` and `POST /api/v1/write`: answers so that Prometheus does the right thing.
//! 2xx only once the samples are committed; 4xx for data that can never be stored
//! (Prometheus drops it); 5xx when the database is unavailable (Prometheus retries), with
//! the database's own message in the log, not in the answer. A request with some series that
//! cannot be stored has the others committed first, then gets a 400 naming what was left
//! out: Prometheus does not resend it, and nothing storable is lost.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::decode::{decode_snappy, DecodeError, Refusals};
use crate::metrics::{CodeLabel, ReasonLabel};
use crate::server::{AppState, DATABASE_UNAVAILABLE};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("unsupported Content-Encoding {0:?}: remote-write 1.0 bodies are snappy-compressed")]
    UnsupportedEncoding(String),
    #[error("unsupported Content-Type {0:?}: only remote-write 1.0 (prometheus.WriteRequest) is accepted")]
    UnsupportedProtocol(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("not ready: the database schema is not migrated yet")]
    NotReady,
    #[error("{stored} series stored; {} left out: {}", refused.series, describe_refused(refused))]
    PartlyRefused { stored: usize, refused: Refusals },
}

/// The first few reasons, then how many more.
fn describe_refused(refused: &Refusals) -> String {
    let mut out: Vec<String> = refused.first.iter().map(ToString::to_string).collect();
    if refused.series > refused.first.len() {
        out.push(format!("and {} more", refused.series - refused.first.len()));
    }
    out.join("; ")
}

impl WriteError {
    pub fn status(&self) -> StatusCode {
        match self {
            WriteError::UnsupportedEncoding(_) | WriteError::UnsupportedProtocol(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            WriteError::Decode(_)
            | WriteError::Storage(StorageError::Rejected(_))
            | WriteError::PartlyRefused { .. } => StatusCode::BAD_REQUEST,
            WriteError::Storage(StorageError::Unavailable(_)) | WriteError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the client is told; the log gets the whole error.
    pub fn client_message(&self) -> String {
        match self {
            WriteError::Storage(StorageError::Unavailable(_)) => DATABASE_UNAVAILABLE.to_string(),
            // The database's words stay in the log: they can name tables, roles and settings.
            WriteError::Storage(StorageError::Rejected(_)) => {
                "the database refused this request's data; the reason is in the connector's log".to_string()
            }
            other => other.to_string(),
        }
    }
}

pub async fn write(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let result = store(&app, &headers, &body).await;
    let status = match &result {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(e) => {
            let status = e.status();
            tracing::warn!(status = status.as_u16(), error = %e, "remote-write request refused");
            status
        }
    };
    app.metrics
        .write_requests
        .get_or_create(&CodeLabel { code: status.as_u16() })
        .inc();
    app.metrics
        .write_request_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => status.into_response(),
        Err(e) => (status, format!("{}\n", e.client_message())).into_response(),
    }
}

async fn store(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), WriteError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(encoding.as_bytes());
        if !encoding.eq_ignore_ascii_case("snappy") {
            return Err(WriteError::UnsupportedEncoding(encoding.into_owned()));
        }
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let content_type = String::from_utf8_lossy(content_type.as_bytes());
        if content_type.contains("proto=") && !content_type.contains("proto=prometheus.WriteRequest") {
            return Err(WriteError::UnsupportedProtocol(content_type.into_owned()));
        }
    }
    let mut batch = decode_snappy(body, app.max_request_bytes)?;
    if !app.is_ready() {
        return Err(WriteError::NotReady);
    }
    let latest_ms = chrono::Utc::now()
        .timestamp_millis()
        .saturating_add(app.max_future.as_millis() as i64);
    batch.refuse_later_than(latest_ms, app.max_future);
    let refused = std::mem::take(&mut batch.refused);
    let stored = batch.series.len();
    app.ingestor.ingest(batch).await?;
    if refused.is_empty() {
        return Ok(());
    }
    for (&reason, &(series, samples)) in &refused.by_reason {
        let reason = ReasonLabel { reason };
        app.metrics.series_refused.get_or_create(&reason).inc_by(series as u64);
        app.metrics
            .samples_refused
            .get_or_create(&reason)
            .inc_by(samples as u64);
    }
    Err(WriteError::PartlyRefused { stored, refused })
}
