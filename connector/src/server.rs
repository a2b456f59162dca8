//! The HTTP server: routes, shared state, health endpoints, and what clients are told when
//! the database fails ([`DATABASE_UNAVAILABLE`]: its own messages go to the log only).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
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
    pub query: QueryOptions,
    /// Set once the schema is migrated; writes before that are answered 503.
    pub migrated: AtomicBool,
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
        let ping = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool)).await;
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

pub fn router(state: Arc<AppState>) -> Router {
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
