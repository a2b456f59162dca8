//! Packing of inactive series: the catalog rows of series that stopped receiving samples
//! become batches, one row of about [`BATCH_SERIES`] series of a metric
//! (`_prom_catalog.series_batch`, migration 27; `docs/series-catalog.md`). A row costs about
//! 220 bytes a series, a batch about 20: under Kubernetes' churn most of a metric's series
//! are dead ones, and for series that lived half an hour the rows alone cost more than their
//! samples. Run by compaction after it seals a metric's chunks; the SQL function does the
//! work in one transaction.

use std::time::Duration;

use foldhash::{HashSet as FastSet, HashSetExt};
use futures::TryStreamExt;
use sqlx::PgPool;

use super::codec;

/// Series a batch holds (the last one of a metric fewer, until later packings fill it).
pub const BATCH_SERIES: i32 = 1_000;

/// Packs the series of `metric_id` with no sample in the last `inactive_for`; returns how
/// many it packed. The series of the metric's head rows (samples not compacted yet) are
/// live whatever their chunks say: their ids are read from the rows' run headers, a row at a
/// time, without decoding samples. A head row that cannot be read leaves the metric unpacked
/// this time (compaction reports the row).
pub async fn pack_inactive_series(pool: &PgPool, metric_id: i32, inactive_for: Duration) -> Result<u64, sqlx::Error> {
    let mut head_series: FastSet<i64> = FastSet::new();
    let mut rows = sqlx::query_as::<_, (Option<Vec<u8>>, Option<Vec<i64>>)>(
        "SELECT data, plain_series_ids FROM _prom_catalog.head WHERE metric_id = $1",
    )
    .bind(metric_id)
    .fetch(pool);
    while let Some((data, plain)) = rows.try_next().await? {
        match (data, plain) {
            (Some(data), _) => match codec::run_sizes(&data) {
                Ok(runs) => head_series.extend(runs.iter().map(|r| r.series)),
                Err(e) => {
                    tracing::warn!(metric_id, error = %e, "a head row of the metric cannot be read; its series are not packed this time");
                    return Ok(0);
                }
            },
            (None, Some(ids)) => head_series.extend(ids),
            (None, None) => return Ok(0),
        }
    }
    drop(rows);
    // In any order: the function aggregates them into ranges.
    let head_series: Vec<i64> = head_series.into_iter().collect();
    let packed: i64 =
        sqlx::query_scalar("SELECT _prom_catalog.pack_inactive_series($1, now() - make_interval(secs => $2), $3, $4)")
            .bind(metric_id)
            .bind(inactive_for.as_secs_f64())
            .bind(BATCH_SERIES)
            .bind(&head_series)
            .fetch_one(pool)
            .await?;
    Ok(packed.max(0) as u64)
}

/// Vacuums the rows packing deleted and the batches it rewrote, rather than waiting for
/// autovacuum: lookups of live series probe the rows' indexes, and the space of packed rows
/// takes the series created next. `SKIP_LOCKED`: it does not wait for another vacuum of the
/// tables; `TRUNCATE false`: it does not take their exclusive lock to give back trailing
/// pages, which every lookup and selection of series would wait behind (the space is kept
/// for the series created next). A failure holds up nothing: it is logged.
pub async fn vacuum_after_packing(pool: &PgPool) {
    if let Err(e) =
        sqlx::query("VACUUM (SKIP_LOCKED, TRUNCATE false) _prom_catalog.series_row, _prom_catalog.series_batch")
            .execute(pool)
            .await
    {
        tracing::warn!(error = %crate::storage::StorageError::from(e), "vacuuming the series rows after packing failed; autovacuum will do it");
    }
}
