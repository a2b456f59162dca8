//! What the HTTP API asks of the catalog besides series: label names and values, metric
//! metadata, cardinality, and whether the database answers at all.

use sqlx::PgPool;

/// Every label name ever stored.
pub async fn label_names(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT key FROM _prom_catalog.label")
        .fetch_all(pool)
        .await
}

/// Every value ever stored for the label `key`, in the order they were stored (label ids are
/// drawn from a sequence).
pub async fn label_values(pool: &PgPool, key: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM _prom_catalog.label WHERE key = $1 ORDER BY id")
        .bind(key)
        .fetch_all(pool)
        .await
}

/// Metadata entries (family, type, help, unit), of one family or all, newest first within a
/// family.
pub async fn metadata(
    pool: &PgPool,
    family: Option<&str>,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT metric_family, type, help, unit FROM _prom_catalog.metadata
          WHERE $1::text IS NULL OR metric_family = $1 ORDER BY metric_family, last_seen DESC",
    )
    .bind(family)
    .fetch_all(pool)
    .await
}

/// Every label pair in use with its number of series (`prom_info.label_cardinality`).
pub async fn label_cardinality(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT key, value, series FROM prom_info.label_cardinality")
        .fetch_all(pool)
        .await
}

/// What `/api/v1/status/tsdb` reports of the store besides cardinality.
#[derive(Debug)]
pub struct HeadStats {
    /// Every series stored.
    pub series: i64,
    /// Rows of the head (samples not yet compacted: a committed write batch and metric each).
    pub head_rows: i64,
    /// The oldest and newest sample time of the head, float samples and native histograms, in
    /// milliseconds; None when the head is empty.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
}

pub async fn head_stats(pool: &PgPool) -> Result<HeadStats, sqlx::Error> {
    let (series, head_rows, min_time, max_time) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.series) AS series,
                h.rows AS head_rows,
                (extract(epoch FROM least(h.min_time, g.min_time)) * 1000)::int8 AS min_time,
                (extract(epoch FROM greatest(h.max_time, g.max_time)) * 1000)::int8 AS max_time
           FROM (SELECT count(*) AS rows, min(min_time) AS min_time, max(max_time) AS max_time
                   FROM _prom_catalog.head) h,
                (SELECT min(time) AS min_time, max(time) AS max_time FROM _prom_catalog.histogram) g",
    )
    .fetch_one(pool)
    .await?;
    Ok(HeadStats {
        series,
        head_rows,
        min_time,
        max_time,
    })
}

/// One round trip, for readiness.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
