//! Packing of inactive series: the catalog rows of series that stopped receiving samples
//! become batches, one row of about [`BATCH_SERIES`] series of a metric
//! (`_prom_catalog.series_batch`, migration 27; `docs/series-catalog.md`). A row costs about
//! 220 bytes a series, a batch about 20: under Kubernetes' churn most of a metric's series
//! are dead ones, and for series that lived half an hour the rows alone cost more than their
//! samples. Run by compaction after it seals a metric's chunks; the SQL function does the
//! work in one transaction.

use std::time::Duration;

use sqlx::PgPool;

/// Series a batch holds (the last one of a metric fewer, until later packings fill it).
pub const BATCH_SERIES: i32 = 1_000;

/// Packs the series of `metric_id` with no compacted sample in the last `inactive_for`;
/// returns how many it packed.
pub async fn pack_inactive_series(pool: &PgPool, metric_id: i32, inactive_for: Duration) -> Result<u64, sqlx::Error> {
    let packed: i64 =
        sqlx::query_scalar("SELECT _prom_catalog.pack_inactive_series($1, now() - make_interval(secs => $2), $3)")
            .bind(metric_id)
            .bind(inactive_for.as_secs_f64())
            .bind(BATCH_SERIES)
            .fetch_one(pool)
            .await?;
    Ok(packed.max(0) as u64)
}

/// Vacuums the rows packing deleted and the batches it rewrote, rather than waiting for
/// autovacuum: lookups of live series probe the rows' indexes, and the space of packed rows
/// takes the series created next. `SKIP_LOCKED`: it does not wait for another vacuum of the
/// tables. A failure holds up nothing: it is logged.
pub async fn vacuum_after_packing(pool: &PgPool) {
    if let Err(e) = sqlx::query("VACUUM (SKIP_LOCKED) _prom_catalog.series_row, _prom_catalog.series_batch")
        .execute(pool)
        .await
    {
        tracing::warn!(error = %crate::storage::StorageError::from(e), "vacuuming the series rows after packing failed; autovacuum will do it");
    }
}
