//! A stack's `spec.tenantLimits`, applied through `prom_api.set_tenant_limits`.
//!
//! The operator remembers which tenants each stack set, in `_prom_operator.tenant_limits`, so
//! that it resets a tenant the stack no longer lists (and never one a person set in SQL).
//! A listed tenant's row is made exactly what the spec says: a field left out is the
//! connectors' flag again.

use promscale_crds::stack::TenantLimitsSpec;
use sqlx::{Connection, PgConnection};

use crate::database::DatabaseError;

/// The bookkeeping table, created on first use (statement by statement: extended protocol).
const SCHEMA: [&str; 2] = [
    "CREATE SCHEMA IF NOT EXISTS _prom_operator",
    "CREATE TABLE IF NOT EXISTS _prom_operator.tenant_limits (
        tenant     text PRIMARY KEY,
        stack_uid  text NOT NULL,
        stack      text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )",
];

/// Makes the database's tenant limits match the stack's; returns how many tenants changed.
pub async fn apply(
    connection: &mut PgConnection,
    stack_uid: &str,
    stack: &str,
    limits: &[TenantLimitsSpec],
) -> Result<i64, DatabaseError> {
    let mut tx = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('promscale-operator/tenant-limits'))")
        .execute(&mut *tx)
        .await?;
    let supported: bool = sqlx::query_scalar("SELECT to_regclass('_prom_catalog.tenant_limits') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await?;
    if !supported {
        if limits.is_empty() {
            return Ok(0);
        }
        return Err(DatabaseError::Refused(
            "spec.tenantLimits needs connectors of schema version 20 or later: upgrade the connectors, and the limits apply once they have upgraded the database".into(),
        ));
    }
    for statement in SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    let listed: Vec<String> = limits.iter().map(|l| l.tenant.clone()).collect();
    let mut changed: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM _prom_operator.tenant_limits o
              WHERE o.stack_uid = $1 AND NOT o.tenant = ANY($2) RETURNING o.tenant)
         SELECT count(prom_api.reset_tenant_limits(g.tenant)) FROM gone g",
    )
    .bind(stack_uid)
    .bind(&listed)
    .fetch_one(&mut *tx)
    .await?;
    for l in limits {
        // Set only where the row differs, so that a resync rewrites nothing that is right (and
        // a hand edit is undone): reset first, so that a field left out is the flag's again.
        let set: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT prom_api.reset_tenant_limits($1),
                        prom_api.set_tenant_limits($1, $2, $3, $4, $5, $6, $7, $8)
                  WHERE NOT EXISTS (
                        SELECT 1 FROM _prom_catalog.tenant_limits t
                         WHERE t.tenant = $1
                           AND (t.max_active_series, t.max_new_series_per_minute, t.ingestion_rate,
                                t.ingestion_burst, t.max_labels_per_series, t.max_label_name_length,
                                t.max_label_value_length)
                               IS NOT DISTINCT FROM ($2::int8, $3::int8, $4::float8, $5::float8, $6::int4,
                                                     $7::int4, $8::int4))) s",
        )
        .bind(&l.tenant)
        .bind(l.max_active_series)
        .bind(l.max_new_series_per_minute)
        .bind(l.ingestion_rate.map(|r| r as f64))
        .bind(l.ingestion_burst.map(|b| b as f64))
        .bind(l.max_labels_per_series)
        .bind(l.max_label_name_length)
        .bind(l.max_label_value_length)
        .fetch_one(&mut *tx)
        .await?;
        changed += set;
    }
    sqlx::query(
        "INSERT INTO _prom_operator.tenant_limits (tenant, stack_uid, stack)
         SELECT unnest($1::text[]), $2, $3
         ON CONFLICT (tenant) DO UPDATE SET stack_uid = excluded.stack_uid, stack = excluded.stack, applied_at = now()
          WHERE (_prom_operator.tenant_limits.stack_uid, _prom_operator.tenant_limits.stack)
                IS DISTINCT FROM (excluded.stack_uid, excluded.stack)",
    )
    .bind(&listed)
    .bind(stack_uid)
    .bind(stack)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changed)
}
