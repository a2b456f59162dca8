//! Runs maintenance on a schedule: `prom_api.execute_maintenance()` (indexing new series,
//! retention), the bound on
//! stored exemplars ([`exemplars::trim`]), then [`compaction`](super::compaction) of the head
//! into series chunks. Every connector runs the
//! schedule; a session advisory lock lets exactly one of them do the work at a time, and the
//! others skip that round. Between maintenance runs, a light pass trims exemplars, indexes the
//! series created since (`index_fresh_series`) and merges the small head rows of the last
//! interval (`--maintenance.merge-interval`), under a lock of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::compaction::{compact, merge_small_rows, CompactionOptions, CompactionStats};
use super::exemplars;
use super::migrations::{ADVISORY_LOCK_NAMESPACE, MAINTENANCE_LOCK, MERGE_LOCK};
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
    if !try_lock(&mut conn, MAINTENANCE_LOCK).await? {
        return Ok(Outcome::Skipped);
    }
    let result = match sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(&mut *conn)
        .await
    {
        Ok(_) => match exemplars::trim(&mut conn, compaction.exemplars_per_series).await {
            Ok(_) => compact(pool, compaction).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    unlock(conn, MAINTENANCE_LOCK, result.is_err()).await;
    Ok(Outcome::Done(result?))
}

/// One light pass merging small head rows ([`merge_small_rows`]), unless another connector is
/// running one. It has a lock of its own, so that maintenance goes on beside it: a metric's
/// merges and compactions take turns on the metric's chunk lock.
pub async fn merge_once(pool: &PgPool, options: &CompactionOptions) -> Result<Outcome, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    if !try_lock(&mut conn, MERGE_LOCK).await? {
        return Ok(Outcome::Skipped);
    }
    // Series are indexed for lookups and matchers only: a failure there holds up no merge.
    if let Err(e) = index_fresh_series(&mut conn).await {
        tracing::warn!(error = %crate::storage::StorageError::from(e), "indexing new series failed; retrying at the next merge pass");
    }
    let result = match exemplars::trim(&mut conn, options.exemplars_per_series).await {
        Ok(_) => merge_small_rows(pool, options).await,
        Err(e) => Err(e),
    };
    unlock(conn, MERGE_LOCK, result.is_err()).await;
    Ok(Outcome::Done(result?))
}

/// Moves the series created with a label of their own transaction (written without the
/// catalog's indexes, migration 22) into the indexed catalog; returns how many.
pub async fn index_fresh_series(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT _prom_catalog.index_fresh_series()")
        .fetch_one(conn)
        .await
}

/// Takes the session advisory lock `key` if no other session holds it.
async fn try_lock(conn: &mut PgConnection, key: i32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(key)
        .fetch_one(conn)
        .await
}

/// Releases the lock `key`; after a failure, or when releasing fails, the session may still
/// hold it: it is closed rather than returned to the pool.
async fn unlock(mut conn: PoolConnection<Postgres>, key: i32, failed: bool) {
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(key)
        .execute(&mut *conn)
        .await;
    if failed || unlocked.is_err() {
        let _ = conn.detach().close().await;
    }
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

/// Runs the light merge pass every `interval`, forever.
pub async fn schedule_merges(pool: PgPool, interval: Duration, options: CompactionOptions, metrics: Arc<Metrics>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match merge_once(&pool, &options).await {
            Ok(Outcome::Done(stats)) => {
                metrics.head_rows_merged.inc_by(stats.head_rows_merged);
            }
            Ok(Outcome::Skipped) => tracing::debug!("merging skipped: another connector is merging"),
            Err(e) => {
                tracing::warn!(error = %crate::storage::StorageError::from(e), "merging small head rows failed; retrying at the next interval")
            }
        }
    }
}
