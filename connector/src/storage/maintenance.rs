//! Runs maintenance on a schedule: `prom_api.execute_maintenance()` (retention), then
//! [`compaction`](super::compaction) of the head into series chunks. Every connector runs the
//! schedule; a session advisory lock lets exactly one of them do the work at a time, and the
//! others skip that round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};

use super::compaction::{compact, CompactionOptions, CompactionStats};
use super::migrations::{ADVISORY_LOCK_NAMESPACE, MAINTENANCE_LOCK};
use crate::metrics::{Metrics, ResultLabel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done(CompactionStats),
    /// Another connector holds the maintenance lock.
    Skipped,
}

/// One maintenance run, unless another connector is running one.
pub async fn run_once(pool: &PgPool, compaction: &CompactionOptions) -> Result<Outcome, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(MAINTENANCE_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Outcome::Skipped);
    }
    let result = match sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(&mut *conn)
        .await
    {
        Ok(_) => compact(pool, compaction).await,
        Err(e) => Err(e),
    };
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *conn)
        .await;
    if result.is_err() || unlocked.is_err() {
        // The session may still hold the lock: close it rather than return it to the pool.
        let _ = conn.detach().close().await;
    }
    Ok(Outcome::Done(result?))
}

/// Runs maintenance every `interval`, forever.
pub async fn schedule(pool: PgPool, interval: Duration, compaction: CompactionOptions, metrics: Arc<Metrics>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = match run_once(&pool, &compaction).await {
            Ok(Outcome::Done(stats)) => {
                tracing::debug!(took = ?started.elapsed(), "maintenance done");
                metrics.samples_compacted.inc_by(stats.samples);
                metrics.head_rows_merged.inc_by(stats.head_rows_merged);
                metrics.samples_expired.inc_by(stats.expired);
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
