//! What the HTTP API asks of the catalog besides series: label names and values, metric
//! metadata, cardinality, and whether the database answers at all.

use sqlx::PgPool;

use crate::tenancy::TENANT_LABEL;

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

/// The ids of the tenant labels of `tenants` (those that have any series).
pub async fn tenant_label_ids(pool: &PgPool, tenants: &[String]) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM _prom_catalog.label WHERE key = $1 AND value = ANY($2)")
        .bind(TENANT_LABEL)
        .bind(tenants)
        .fetch_all(pool)
        .await
}

/// A transaction whose statements are cancelled past `timeout` (SQLSTATE 57014).
async fn timed(
    pool: &PgPool,
    timeout: std::time::Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL statement_timeout = {}", timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The series `(id, labels)` carrying one of the labels of the int4[] parameter `param`: the
/// rows through their GIN index, and the packed series of the batches whose label ids say
/// they may hold one (through the batches' GIN index, migration 27), rather than the view
/// `_prom_catalog.series`, which would unnest every batch.
fn series_with_any_of(param: &str) -> String {
    format!(
        "(SELECT r.id, r.labels FROM _prom_catalog.series_row r WHERE r.labels && {param}
          UNION ALL
          SELECT e.id, e.labels FROM _prom_catalog.series_batch b CROSS JOIN LATERAL unnest(b.series) AS e
           WHERE b.label_ids && {param} AND e.labels && {param})"
    )
}

/// The label names of the series carrying one of the labels `tenant_ids`, the tenant label
/// itself left out when `hide_tenant`; every series of those tenants is read, within
/// `timeout`.
pub async fn tenant_label_names(
    pool: &PgPool,
    tenant_ids: &[i32],
    hide_tenant: bool,
    timeout: std::time::Duration,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = timed(pool, timeout).await?;
    let names = sqlx::query_scalar(&format!(
        "SELECT DISTINCT l.key FROM _prom_catalog.label l
          WHERE l.id IN (SELECT DISTINCT u.id FROM {} s CROSS JOIN LATERAL unnest(s.labels) u(id)
                          WHERE u.id <> 0)
            AND NOT ($2 AND l.key = $3)",
        series_with_any_of("$1")
    ))
    .bind(tenant_ids)
    .bind(hide_tenant)
    .bind(TENANT_LABEL)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(names)
}

/// The values of the label `key` among the series carrying one of the labels `tenant_ids`:
/// each value of the key looked for among those series through the GIN index on labels (and
/// among the packed ones through the batches'), within `timeout`.
pub async fn tenant_label_values(
    pool: &PgPool,
    key: &str,
    tenant_ids: &[i32],
    timeout: std::time::Duration,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = timed(pool, timeout).await?;
    let values = sqlx::query_scalar(
        "SELECT l.value FROM _prom_catalog.label l
          WHERE l.key = $1
            AND (EXISTS (SELECT 1 FROM _prom_catalog.series_row s WHERE s.labels @> ARRAY[l.id] AND s.labels && $2)
                 OR EXISTS (SELECT 1 FROM _prom_catalog.series_batch b CROSS JOIN LATERAL unnest(b.series) AS e
                             WHERE b.label_ids @> ARRAY[l.id] AND b.label_ids && $2
                               AND e.labels @> ARRAY[l.id] AND e.labels && $2))",
    )
    .bind(key)
    .bind(tenant_ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(values)
}

/// Metadata entries (family, type, help, unit), of one family or all, newest first within a
/// family; with `tenants`, only what those tenants sent (an entry sent by several once).
pub async fn metadata(
    pool: &PgPool,
    family: Option<&str>,
    tenants: Option<&[String]>,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    match tenants {
        None => {
            sqlx::query_as(
                "SELECT metric_family, type, help, unit FROM _prom_catalog.metadata
                  WHERE $1::text IS NULL OR metric_family = $1 ORDER BY metric_family, last_seen DESC",
            )
            .bind(family)
            .fetch_all(pool)
            .await
        }
        Some(tenants) => {
            sqlx::query_as(
                "SELECT metric_family, type, help, unit FROM _prom_catalog.tenant_metadata
                  WHERE ($1::text IS NULL OR metric_family = $1) AND tenant = ANY($2)
                  GROUP BY metric_family, type, help, unit
                  ORDER BY metric_family, max(last_seen) DESC",
            )
            .bind(family)
            .bind(tenants)
            .fetch_all(pool)
            .await
        }
    }
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

/// Whose series [`tsdb_status`] counts.
pub enum Counted<'a> {
    All,
    /// The series carrying one of these (tenant) labels, the tenant label itself left out
    /// when `hide_tenant`; the head's figures are not given (they are every tenant's).
    Tenants {
        label_ids: &'a [i32],
        hide_tenant: bool,
    },
}

/// Counts the whole catalog (`prom_info.label_cardinality`), or some tenants' series, ranking
/// in the database, within `timeout`.
pub async fn tsdb_status(
    pool: &PgPool,
    counted: Counted<'_>,
    limit: i64,
    timeout: std::time::Duration,
) -> Result<TsdbStatus, sqlx::Error> {
    let mut tx = timed(pool, timeout).await?;
    let (pairs, label_ids, hide_tenant) = match counted {
        Counted::All => (
            "SELECT key, value, series FROM prom_info.label_cardinality".to_string(),
            None,
            false,
        ),
        Counted::Tenants { label_ids, hide_tenant } => (
            format!(
                "SELECT l.key, l.value, c.series
                   FROM (SELECT u.id, count(*) AS series FROM {} s
                          CROSS JOIN LATERAL unnest(s.labels) AS u(id)
                          WHERE u.id <> 0 GROUP BY u.id) c
                   JOIN _prom_catalog.label l ON l.id = c.id
                  WHERE NOT ($3 AND l.key = $4)",
                series_with_any_of("$2")
            ),
            Some(label_ids),
            hide_tenant,
        ),
    };
    let sql = format!(
        r#"WITH pairs AS MATERIALIZED (
               {pairs}
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
             ORDER BY series DESC, (key || '=' || value) COLLATE "C" LIMIT $1)"#
    );
    let query = sqlx::query_as(&sql).bind(limit);
    let query = match label_ids {
        Some(ids) => query.bind(ids).bind(hide_tenant).bind(TENANT_LABEL),
        None => query,
    };
    let rows: Vec<(String, Option<String>, i64)> = query.fetch_all(&mut *tx).await?;
    if let Some(label_ids) = label_ids {
        let series: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {} s", series_with_any_of("$1")))
            .bind(label_ids)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut status = TsdbStatus {
            series,
            ..TsdbStatus::default()
        };
        status.fill(rows);
        return Ok(status);
    }
    let (series, head_rows, min_time, max_time): (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.series_row)
                  + (SELECT coalesce(sum(cardinality(series)), 0) FROM _prom_catalog.series_batch)::int8,
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
    status.fill(rows);
    Ok(status)
}

impl TsdbStatus {
    /// The lists and the pair count from the ranking query's rows.
    fn fill(&mut self, rows: Vec<(String, Option<String>, i64)>) {
        let status = self;
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
    }
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
