//! The stack's database-wide defaults, applied through `prom_api.set_default_*`.

use promscale_crds::duration::MetricDuration;
use promscale_crds::stack::MetricDefaults;
use sqlx::PgConnection;

use crate::database::DatabaseError;
use crate::interval::interval;

/// Sets each default that differs from the spec; returns how many changed.
pub async fn apply(connection: &mut PgConnection, defaults: &MetricDefaults) -> Result<i64, DatabaseError> {
    let parse =
        |text: &str| MetricDuration::parse(text).map_err(|e| DatabaseError::Refused(format!("spec.defaults: {e}")));
    let retention = interval(parse(&defaults.retention_period)?);
    let chunk = interval(parse(&defaults.chunk_interval)?);
    // Comparing first keeps a resync from rewriting settings that are already right.
    let changed: i64 = sqlx::query_scalar(
        "SELECT (CASE WHEN prom_api.get_default_retention_period() IS DISTINCT FROM $1
                      THEN prom_api.set_default_retention_period($1)::int ELSE 0 END)
              + (CASE WHEN prom_api.get_default_chunk_interval() IS DISTINCT FROM $2
                      THEN prom_api.set_default_chunk_interval($2)::int ELSE 0 END)
              + (CASE WHEN prom_api.get_default_compression_setting() IS DISTINCT FROM $3
                      THEN prom_api.set_default_compression_setting($3)::int ELSE 0 END)::bigint",
    )
    .bind(retention)
    .bind(chunk)
    .bind(defaults.compression)
    .fetch_one(&mut *connection)
    .await?;
    Ok(changed)
}
