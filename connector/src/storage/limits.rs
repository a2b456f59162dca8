//! The SQL of series limits (`ingest/series_limits.rs`, migration 20): reading the limits
//! and the shared counts, marking series active, adding up the series created.

use std::collections::HashMap;

use sqlx::PgPool;

use super::samples::PgTimestamp;

/// A tenant's own limits (`prom_api.set_tenant_limits`); None: the connector's flag.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    pub max_active_series: Option<u64>,
    pub max_new_series_per_minute: Option<u64>,
    pub ingestion_rate: Option<f64>,
    pub ingestion_burst: Option<f64>,
    pub max_labels_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
}

type TenantRow = (
    String,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
);

/// What a refresh reads.
#[derive(Debug, Default)]
pub struct Read {
    pub tenants: Vec<(String, TenantLimits)>,
    /// (metric id, max active series).
    pub metrics: Vec<(i32, u64)>,
    /// (tenant, metric id, active series).
    pub active: Vec<(String, i32, u64)>,
    /// (tenant, series created in the minute).
    pub created: Vec<(String, u64)>,
}

fn unsigned(n: Option<i64>) -> Option<u64> {
    n.map(|n| n.max(0) as u64)
}

/// The limits, the active series counted since `since_s` (unix seconds, a window start) and
/// the series created in `minute`.
pub async fn read(pool: &PgPool, minute: i64, since_s: i64) -> Result<Read, sqlx::Error> {
    let since = PgTimestamp::from_unix_ms(since_s * 1000);
    let tenants: Vec<TenantRow> = sqlx::query_as(
        "SELECT tenant, max_active_series, max_new_series_per_minute, ingestion_rate, ingestion_burst,
                max_labels_per_series, max_label_name_length, max_label_value_length
           FROM _prom_catalog.tenant_limits",
    )
    .fetch_all(pool)
    .await?;
    let metrics: Vec<(i32, i64)> =
        sqlx::query_as("SELECT id, max_active_series FROM _prom_catalog.metric WHERE max_active_series IS NOT NULL")
            .fetch_all(pool)
            .await?;
    let active: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT tenant, (series_id >> 40)::int4, count(*) FROM _prom_catalog.active_series
          WHERE seen >= $1 GROUP BY 1, 2",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let created: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant, created FROM _prom_catalog.new_series_count WHERE minute = $1")
            .bind(minute)
            .fetch_all(pool)
            .await?;
    Ok(Read {
        tenants: tenants
            .into_iter()
            .map(|(t, active, new, rate, burst, labels, name, value)| {
                let size = |n: Option<i32>| n.map(|n| n.max(0) as usize);
                let limits = TenantLimits {
                    max_active_series: unsigned(active),
                    max_new_series_per_minute: unsigned(new),
                    ingestion_rate: rate,
                    ingestion_burst: burst,
                    max_labels_per_series: size(labels),
                    max_label_name_length: size(name),
                    max_label_value_length: size(value),
                };
                (t, limits)
            })
            .collect(),
        metrics: metrics.into_iter().map(|(m, l)| (m, l.max(0) as u64)).collect(),
        active: active.into_iter().map(|(t, m, n)| (t, m, n.max(0) as u64)).collect(),
        created: created.into_iter().map(|(t, n)| (t, n.max(0) as u64)).collect(),
    })
}

/// Marks series active in the window starting at `window_s` (unix seconds); returns those
/// that had no mark (not active until now). Rows are written in key order, so that
/// connectors marking the same series wait rather than deadlock.
pub async fn mark_active(
    pool: &PgPool,
    tenants: &[String],
    ids: &[i64],
    window_s: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut rows: Vec<(&String, i64)> = tenants.iter().zip(ids.iter().copied()).collect();
    rows.sort_unstable();
    let (tenants, ids): (Vec<&String>, Vec<i64>) = rows.into_iter().unzip();
    let rows = sqlx::query_as(
        "INSERT INTO _prom_catalog.active_series AS a (tenant, series_id, seen)
         SELECT t, s, $3 FROM unnest($1::text[], $2::int8[]) AS u(t, s)
         ON CONFLICT (tenant, series_id) DO UPDATE SET seen = EXCLUDED.seen WHERE a.seen < EXCLUDED.seen
         RETURNING a.tenant, a.series_id, (xmax = 0) AS inserted",
    )
    .bind(tenants)
    .bind(ids)
    .bind(PgTimestamp::from_unix_ms(window_s * 1000))
    .fetch_all(pool)
    .await?;
    let rows: Vec<(String, i64, bool)> = rows;
    Ok(rows
        .into_iter()
        .filter(|(_, _, inserted)| *inserted)
        .map(|(t, s, _)| (t, s))
        .collect())
}

/// Adds series created in `minute` (unix minutes) per tenant.
pub async fn add_created(pool: &PgPool, by_tenant: &HashMap<String, u64>, minute: i64) -> Result<(), sqlx::Error> {
    let mut rows: Vec<(String, i64)> = by_tenant.iter().map(|(t, &n)| (t.clone(), n as i64)).collect();
    rows.sort_unstable();
    let (tenants, counts): (Vec<String>, Vec<i64>) = rows.into_iter().unzip();
    sqlx::query(
        "INSERT INTO _prom_catalog.new_series_count AS c (tenant, minute, created)
         SELECT t, $3, n FROM unnest($1::text[], $2::int8[]) AS u(t, n)
         ON CONFLICT (tenant, minute) DO UPDATE SET created = c.created + EXCLUDED.created",
    )
    .bind(tenants)
    .bind(counts)
    .bind(minute)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets marks older than `since_s` and counts of minutes before `minute - 1`: one
/// connector at a time (the others skip it), in key order, as marks are written.
pub async fn forget(pool: &PgPool, minute: i64, since_s: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('promscale-series-limits-forget'))")
        .fetch_one(&mut *tx)
        .await?;
    if !ours {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM _prom_catalog.active_series a USING (
             SELECT tenant, series_id FROM _prom_catalog.active_series WHERE seen < $1
              ORDER BY tenant, series_id FOR UPDATE SKIP LOCKED) o
          WHERE a.tenant = o.tenant AND a.series_id = o.series_id",
    )
    .bind(PgTimestamp::from_unix_ms(since_s * 1000))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM _prom_catalog.new_series_count WHERE minute < $1")
        .bind(minute - 1)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
