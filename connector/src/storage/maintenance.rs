//! Runs maintenance on a schedule: `prom_api.execute_maintenance()` (indexing new series,
//! retention), the bound on stored exemplars ([`exemplars::trim`]), then
//! [`compaction`](super::compaction) of the head into series chunks, then a vacuum of the table
//! the new series were indexed out of. Every connector runs the
//! schedule; a session advisory lock lets exactly one of them do the work at a time, and the
//! others skip that round. Between maintenance runs, a light pass trims exemplars, indexes the
//! series created since (`index_fresh_series`), merges the small head rows of the last
//! interval (`--maintenance.merge-interval`) and vacuums that table, under a lock of its own.

use std::sync::atomic::{AtomicU32, Ordering};
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
            Ok(_) => {
                let compacted = compact(pool, compaction).await;
                // `execute_maintenance` moved the fresh series: after the compaction, which
                // this must not hold up.
                vacuum_fresh_series(&mut conn).await;
                compacted
            }
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
    let moved = match index_fresh_series(&mut conn).await {
        Ok(moved) => moved,
        Err(e) => {
            tracing::warn!(error = %crate::storage::StorageError::from(e), "indexing new series failed; retrying at the next merge pass");
            0
        }
    };
    let result = match exemplars::trim(&mut conn, options.exemplars_per_series).await {
        Ok(_) => merge_small_rows(pool, options).await,
        Err(e) => Err(e),
    };
    if moved > 0 {
        vacuum_fresh_series(&mut conn).await;
    }
    unlock(conn, MERGE_LOCK, result.is_err()).await;
    Ok(Outcome::Done(result?))
}

/// Moves the series created since the last pass (written without the catalog's indexes,
/// migrations 22 and 24) into the indexed catalog; returns how many. The recent label floor
/// is raised first, in a transaction of its own (migration 28): the series of labels above
/// it, which their writers create without lookups, stay where those writers meet them.
pub async fn index_fresh_series(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let (floor, locked): (i32, bool) =
        sqlx::query_as("SELECT label_floor, locked FROM _prom_catalog.raise_recent_label_floor()")
            .fetch_one(&mut *conn)
            .await?;
    note_floor_raise(floor, locked);
    sqlx::query_scalar("SELECT _prom_catalog.index_fresh_series()")
        .fetch_one(conn)
        .await
}

/// Passes in a row whose raise of the recent label floor found it locked by writers.
static FLOOR_LOCKED_PASSES: AtomicU32 = AtomicU32::new(0);
/// Passes in a row after which that is worth a warning.
const FLOOR_LOCKED_WARN_AFTER: u32 = 5;

/// Warns when the floor has not risen for several passes in a row: each of those found a
/// writer of recent series whose transaction lasted past 200 ms, and the series of labels
/// created meanwhile stay unindexed (every writer and reader still finds them).
fn note_floor_raise(floor: i32, locked: bool) {
    if locked {
        FLOOR_LOCKED_PASSES.store(0, Ordering::Relaxed);
        return;
    }
    let passes = FLOOR_LOCKED_PASSES.fetch_add(1, Ordering::Relaxed) + 1;
    if passes.is_multiple_of(FLOOR_LOCKED_WARN_AFTER) {
        tracing::warn!(
            passes,
            floor,
            "the recent label floor stayed locked by writers of new series for this many passes in a row; their series stay in _prom_catalog.series_fresh until it rises (look for transactions of the connector's that last long)"
        );
    } else {
        tracing::debug!(
            passes,
            floor,
            "writers of new series kept the recent label floor locked"
        );
    }
}

/// Vacuums the table of fresh series once `index_fresh_series` (the merge pass's, or
/// maintenance's through `prom_api.execute_maintenance`) has emptied it, rather than waiting
/// for autovacuum: readers of fresh series scan that table, and a burst of new series (a
/// rollout's) would keep its pages. Only the rows no snapshot can see any more go, so under
/// load some wait for the next pass. Giving back the emptied trailing pages takes the table's
/// exclusive lock, which every reader and writer of series shares the table with (it is a
/// child of `_prom_catalog.series_row`): VACUUM only tries for it, gives up after 5 s of
/// trying, and stops when someone waits, so a pass can spend those seconds here, after its
/// merging. With `SKIP_LOCKED` it does not wait for another vacuum of the table (another
/// connector's pass, autovacuum). The labels index keeps its size: once the pages are
/// back, [`shrink_fresh_series_index`] rebuilds it. A failure holds up nothing: it is logged.
async fn vacuum_fresh_series(conn: &mut PgConnection) {
    if let Err(e) = sqlx::query("VACUUM (SKIP_LOCKED) _prom_catalog.series_fresh")
        .execute(&mut *conn)
        .await
    {
        tracing::warn!(error = %crate::storage::StorageError::from(e), "vacuuming _prom_catalog.series_fresh failed; autovacuum will do it");
    }
    shrink_fresh_series_index(conn).await;
}

/// Heap size of `_prom_catalog.series_fresh` up to which its labels index is rebuilt once it
/// has grown past [`FRESH_INDEX_SHRINK_BYTES`].
const FRESH_HEAP_SHRINK_BYTES: i64 = 128 * 1024;
const FRESH_INDEX_SHRINK_BYTES: i64 = 128 * 1024;

/// Rebuilds the labels index of `_prom_catalog.series_fresh` (the unique index of their hash,
/// migration 31) once a pass has emptied the table and the vacuum has given back its pages,
/// while the index still holds the space of an earlier burst: vacuum makes an index's empty
/// pages reusable but never gives them back, about 30 bytes a series of the largest burst of
/// new series between two passes, kept for good. The rebuild reads the heap, so it waits for
/// the heap to be small: it then takes a few pages, in milliseconds.
///
/// REINDEX takes the table's share lock (writers of new series wait behind it, and it waits
/// for them) and then the index's exclusive lock (so does anything planning a statement on
/// `_prom_catalog.series_row` or the view `_prom_catalog.series`): it waits at most 50 ms for each (`lock_timeout`) and runs for at
/// most 200 ms (`statement_timeout`), or leaves it to a later pass. A failure holds up nothing:
/// it is logged.
async fn shrink_fresh_series_index(conn: &mut PgConnection) {
    let oversized: Result<bool, sqlx::Error> = sqlx::query_scalar(
        "SELECT pg_relation_size('_prom_catalog.series_fresh_labels') > $1
            AND pg_relation_size('_prom_catalog.series_fresh') <= $2",
    )
    .bind(FRESH_INDEX_SHRINK_BYTES)
    .bind(FRESH_HEAP_SHRINK_BYTES)
    .fetch_one(&mut *conn)
    .await;
    let result = match oversized {
        Ok(false) => return,
        Ok(true) => reindex_fresh_series(conn).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tracing::debug!("rebuilt the labels index of _prom_catalog.series_fresh"),
        Err(e) if gave_up_waiting(&e) => {
            tracing::debug!("the labels index of _prom_catalog.series_fresh is in use; rebuilding it at a later pass")
        }
        Err(e) => {
            tracing::warn!(error = %crate::storage::StorageError::from(e), "rebuilding the labels index of _prom_catalog.series_fresh failed; retrying at a later pass")
        }
    }
}

async fn reindex_fresh_series(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '50ms'").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL statement_timeout = '200ms'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("REINDEX INDEX _prom_catalog.series_fresh_labels")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A lock not had within `lock_timeout` (55P03), the statement cut by `statement_timeout`
/// (57014), or a deadlock with a writer (40P01, with a `deadlock_timeout` under 50 ms).
fn gave_up_waiting(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("55P03" | "57014" | "40P01")))
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
