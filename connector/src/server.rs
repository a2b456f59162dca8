//! The HTTP server: routes, shared state, health endpoints.

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

    /// Whether the schema is migrated and the database answers, and if not, why.
    pub async fn database_ready(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("database schema not migrated yet".to_string());
        }
        let ping = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool)).await;
        match ping {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(crate::storage::StorageError::from(e).to_string()),
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
