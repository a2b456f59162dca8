//! Runs `prom_api.execute_maintenance()` (retention, chunks ahead) on a schedule. Every
//! connector runs the schedule; a session advisory lock lets exactly one of them do the work
//! at a time, and the others skip that round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};

use super::migrations::{ADVISORY_LOCK_NAMESPACE, MAINTENANCE_LOCK};
use crate::metrics::{Metrics, ResultLabel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Another connector holds the maintenance lock.
    Skipped,
}

/// One maintenance run, unless another connector is running one.
pub async fn run_once(pool: &PgPool) -> Result<Outcome, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(MAINTENANCE_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Outcome::Skipped);
    }
    let result = sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(&mut *conn)
        .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *conn)
        .await;
    if result.is_err() || unlocked.is_err() {
        // The session may still hold the lock: close it rather than return it to the pool.
        let _ = conn.detach().close().await;
    }
    result?;
    Ok(Outcome::Done)
}

/// Runs maintenance every `interval`, forever.
pub async fn schedule(pool: PgPool, interval: Duration, metrics: Arc<Metrics>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = match run_once(&pool).await {
            Ok(Outcome::Done) => {
                tracing::debug!(took = ?started.elapsed(), "maintenance done");
                "done"
            }
            Ok(Outcome::Skipped) => {
                tracing::debug!("maintenance skipped: another connector is running it");
                "skipped"
            }
            Err(e) => {
                tracing::warn!(error = %crate::storage::StorageError::from(e), "maintenance failed; retrying at the next interval");
                "failed"
            }
        };
        metrics.maintenance_runs.get_or_create(&ResultLabel { result }).inc();
        metrics.maintenance_duration.observe(started.elapsed().as_secs_f64());
    }
}
