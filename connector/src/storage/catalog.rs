//! What the HTTP API asks of the catalog besides series: label names and values, metric
//! metadata, and whether the database answers at all.

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

/// One round trip, for readiness.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
