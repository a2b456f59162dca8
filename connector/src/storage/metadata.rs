//! Stores the metric metadata (TYPE, HELP, UNIT) Prometheus sends along with samples.

use std::collections::HashSet;

use sqlx::PgPool;

use super::StorageError;
use crate::model::Metadata;

/// Inserts metadata entries, or marks them seen again: entries without a tenant into
/// `_prom_catalog.metadata`, a tenant's into `_prom_catalog.tenant_metadata`.
pub async fn upsert_metadata(pool: &PgPool, metadata: &[Metadata]) -> Result<(), StorageError> {
    // ON CONFLICT DO UPDATE may touch a row only once per statement.
    let unique: HashSet<&Metadata> = metadata.iter().collect();
    let (untenanted, tenanted): (Vec<&Metadata>, Vec<&Metadata>) =
        unique.into_iter().partition(|m| m.tenant.is_empty());
    if !untenanted.is_empty() {
        let (families, types, units, helps) = columns(&untenanted);
        sqlx::query(
            "INSERT INTO _prom_catalog.metadata (metric_family, type, unit, help)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (metric_family, type, unit, md5(help)) DO UPDATE SET last_seen = now()",
        )
        .bind(families)
        .bind(types)
        .bind(units)
        .bind(helps)
        .execute(pool)
        .await?;
    }
    if !tenanted.is_empty() {
        let tenants: Vec<&str> = tenanted.iter().map(|m| m.tenant.as_str()).collect();
        let (families, types, units, helps) = columns(&tenanted);
        sqlx::query(
            "INSERT INTO _prom_catalog.tenant_metadata (tenant, metric_family, type, unit, help)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
             ON CONFLICT (tenant, metric_family, type, unit, md5(help)) DO UPDATE SET last_seen = now()",
        )
        .bind(tenants)
        .bind(families)
        .bind(types)
        .bind(units)
        .bind(helps)
        .execute(pool)
        .await?;
    }
    Ok(())
}

type Columns<'a> = (Vec<&'a str>, Vec<&'static str>, Vec<&'a str>, Vec<&'a str>);

fn columns<'a>(entries: &[&'a Metadata]) -> Columns<'a> {
    (
        entries.iter().map(|m| m.metric_family.as_str()).collect(),
        entries.iter().map(|m| m.r#type).collect(),
        entries.iter().map(|m| m.unit.as_str()).collect(),
        entries.iter().map(|m| m.help.as_str()).collect(),
    )
}
