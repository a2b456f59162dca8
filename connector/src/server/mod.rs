//! The HTTP server: routes, shared state, health endpoints, and what clients are told when
//! the database fails ([`DATABASE_UNAVAILABLE`]: its own messages go to the log only).
//!
//! Around the routes: [`auth`] (who may call what), a body deadline (`--web.read-timeout`)
//! and size limit applied before any handler runs; [`listener`] accepts connections (limit,
//! header timeout, [`tls`]).

pub mod auth;
pub mod listener;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;

use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::query::QueryOptions;
use crate::{query, remote_read, remote_write};

/// The answer to a client when the database fails. The database's own message (which can
/// name users, hosts, tables or the reason a login failed) is logged instead.
pub const DATABASE_UNAVAILABLE: &str = "the database is unavailable; see the connector's log";

pub struct AppState {
    pub pool: PgPool,
    pub ingestor: Ingestor,
    pub metrics: Arc<Metrics>,
    pub max_request_bytes: usize,
    /// Samples further ahead of the clock are refused.
    pub max_future: Duration,
    /// Most samples in one remote-read response.
    pub max_read_samples: usize,
    pub query: QueryOptions,
    /// Label limits of remote write (--limits.max-label*).
    pub label_limits: crate::config::LabelLimits,
    /// The ingestion rate limit (--limits.ingestion-rate, or a tenant's own): one bucket per
    /// tenant.
    pub rate_limits: crate::ingest::rate_limit::RateLimits,
    /// How tenants are told apart (--metrics.multi-tenancy), when they are.
    pub tenancy: Option<crate::tenancy::TenancyOptions>,
    /// HA pair deduplication (--metrics.high-availability), when on.
    pub ha: Option<std::sync::Arc<crate::ingest::ha::Ha>>,
    /// Every flag's value, secrets masked (/api/v1/status/flags).
    pub flags: std::collections::BTreeMap<String, String>,
    /// When the connector started (/api/v1/status/runtimeinfo).
    pub started: chrono::DateTime<chrono::Utc>,
    /// Whether the admin API (deletion) is served (--web.enable-admin-api).
    pub enable_admin_api: bool,
    /// Set once the schema is migrated; writes before that are answered 503.
    pub migrated: AtomicBool,
    /// The last database check and when it was made: `/readyz` is open to anybody, and a
    /// flood of it must not take the database connections writes need.
    pub readiness: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// Whether the schema is migrated and the database answers, and if not, why (fit for
    /// clients: a database error's own text is logged, not returned).
    pub async fn database_ready(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("database schema not migrated yet".to_string());
        }
        if let Some((at, result)) = self.readiness.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if at.elapsed() < Duration::from_secs(1) {
                return result.clone();
            }
        }
        let result = self.check_database().await;
        *self.readiness.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), result.clone()));
        result
    }

    async fn check_database(&self) -> Result<(), String> {
        let ping = tokio::time::timeout(Duration::from_secs(2), crate::storage::catalog::ping(&self.pool)).await;
        match ping {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let e = crate::storage::StorageError::from(e);
                tracing::warn!(error = %e, "readiness check: the database is unavailable");
                Err(DATABASE_UNAVAILABLE.to_string())
            }
            Err(_) => Err("the database did not answer within 2s".to_string()),
        }
    }
}

/// What wraps the routes.
pub struct WebOptions {
    pub authenticator: Arc<auth::Authenticator>,
    /// Longest the client may take to send a request body.
    pub read_timeout: Duration,
}

pub fn router(state: Arc<AppState>, options: WebOptions) -> Router {
    let body_limits = BodyLimits {
        max_bytes: state.max_request_bytes,
        read_timeout: options.read_timeout,
    };
    routes(state)
        // Layers run outside in: authentication first, so that nobody unauthenticated
        // gets to send a body.
        .layer(middleware::from_fn_with_state(body_limits, read_body))
        .layer(middleware::from_fn_with_state(options.authenticator, auth::require))
}

#[derive(Clone, Copy)]
struct BodyLimits {
    max_bytes: usize,
    read_timeout: Duration,
}

/// Reads the whole body within the deadline and the size limit (every endpoint takes its
/// body whole), so that a slow or endless body cannot hold a connection and its memory.
/// Health checks (open to anybody) and GET or HEAD requests take no body: what an
/// unauthenticated client can make the server buffer is nothing.
async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let access = auth::Access::of_path(parts.uri.path());
    let takes_body =
        !matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD) && access != auth::Access::Open;
    let limit = if takes_body { limits.max_bytes } else { 0 };
    let write = access == auth::Access::Write;
    match tokio::time::timeout(limits.read_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large && !takes_body {
                (StatusCode::PAYLOAD_TOO_LARGE, "this request takes no body\n").into_response()
            } else if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body above the limit of {} bytes (--web.max-request-bytes)\n",
                        limits.max_bytes
                    ),
                )
                    .into_response()
            } else {
                (StatusCode::BAD_REQUEST, "the request body could not be read\n").into_response()
            }
        }
        // A write whose body was slow is answered 503, which Prometheus retries (a 408 it
        // would drop, losing the samples).
        Err(_) => (
            if write {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::REQUEST_TIMEOUT
            },
            format!(
                "request body not received within {:?} (--web.read-timeout)\n",
                limits.read_timeout
            ),
        )
            .into_response(),
    }
}

fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/write", post(remote_write::handler::write))
        .route("/api/v1/write", post(remote_write::handler::write))
        .route("/read", post(remote_read::handler::read))
        .route("/api/v1/read", post(remote_read::handler::read))
        .merge(query::api::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(state.max_request_bytes))
        .with_state(state)
}

/// Liveness: the process answers HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the schema is migrated and the database answers.
async fn readyz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    match app.database_ready().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    app.metrics
        .series_cache_entries
        .set(app.ingestor.cached_series() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.encode(),
    )
}
