//! What the HTTP API asks of the catalog besides series: label names and values, metric
//! metadata, cardinality, and whether the database answers at all.

use sqlx::PgPool;

/// Every label name ever stored.
pub async fn label_names(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT key FROM _prom_catalog.label")
        .fetch_all(pool)
        .await
}

/// Every value ever stored for the label `key`.
pub async fn label_values(pool: &PgPool, key: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM _prom_catalog.label WHERE key = $1")
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

/// What `/api/v1/status/tsdb` reports: the top `limit` of each cardinality list, in order
/// (counts descending, then names in byte order), and the head's figures.
#[derive(Debug, Default)]
pub struct TsdbStatus {
    /// Every stored series.
    pub series: i64,
    /// Label pairs in use.
    pub label_pairs: i64,
    /// Rows of the head (samples not yet compacted: a committed write batch and metric each).
    pub head_rows: i64,
    /// The oldest and newest sample time of the head, float samples and native histograms, in
    /// milliseconds; None when the head is empty.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    pub series_by_metric: Vec<(String, i64)>,
    pub values_by_name: Vec<(String, i64)>,
    /// Bytes of label names and values per label name, as Prometheus counts them in memory
    /// (each string with a length prefix of 1 byte below 255 bytes, 4 above), once per series.
    pub bytes_by_name: Vec<(String, i64)>,
    pub series_by_pair: Vec<(String, i64)>,
}

/// Counts the whole catalog (`prom_info.label_cardinality`), ranking in the database, within
/// `timeout`.
pub async fn tsdb_status(pool: &PgPool, limit: i64, timeout: std::time::Duration) -> Result<TsdbStatus, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL statement_timeout = {}", timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        r#"WITH pairs AS MATERIALIZED (
               SELECT key, value, series FROM prom_info.label_cardinality
           ), by_name AS MATERIALIZED (
               SELECT key, count(*)::int8 AS values,
                      sum((octet_length(key) + CASE WHEN octet_length(key) < 255 THEN 1 ELSE 4 END
                           + octet_length(value) + CASE WHEN octet_length(value) < 255 THEN 1 ELSE 4 END) * series)::int8 AS bytes
                 FROM pairs GROUP BY key
           )
           (SELECT 'pairs', NULL, count(*)::int8 FROM pairs)
           UNION ALL
           (SELECT 'metric', value, series FROM pairs WHERE key = '__name__'
             ORDER BY series DESC, value COLLATE "C" LIMIT $1)
           UNION ALL
           (SELECT 'values', key, values FROM by_name ORDER BY values DESC, key COLLATE "C" LIMIT $1)
           UNION ALL
           (SELECT 'bytes', key, bytes FROM by_name ORDER BY bytes DESC, key COLLATE "C" LIMIT $1)
           UNION ALL
           (SELECT 'pair', key || '=' || value, series FROM pairs
             ORDER BY series DESC, (key || '=' || value) COLLATE "C" LIMIT $1)"#,
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let (series, head_rows, min_time, max_time): (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.series),
                h.rows,
                (extract(epoch FROM least(h.min_time, g.min_time)) * 1000)::int8,
                (extract(epoch FROM greatest(h.max_time, g.max_time)) * 1000)::int8
           FROM (SELECT count(*) AS rows, min(min_time) AS min_time, max(max_time) AS max_time
                   FROM _prom_catalog.head) h,
                (SELECT min(time) AS min_time, max(time) AS max_time FROM _prom_catalog.histogram) g",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut status = TsdbStatus {
        series,
        head_rows,
        min_time,
        max_time,
        ..TsdbStatus::default()
    };
    for (list, name, value) in rows {
        let name = name.unwrap_or_default();
        match list.as_str() {
            "pairs" => status.label_pairs = value,
            "metric" => status.series_by_metric.push((name, value)),
            "values" => status.values_by_name.push((name, value)),
            "bytes" => status.bytes_by_name.push((name, value)),
            _ => status.series_by_pair.push((name, value)),
        }
    }
    Ok(status)
}

/// The default retention period, in seconds.
pub async fn default_retention_seconds(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT extract(epoch FROM prom_api.get_default_retention_period())::float8")
        .fetch_one(pool)
        .await
}

/// One round trip, for readiness.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
