//! Stores the metric metadata (TYPE, HELP, UNIT) Prometheus sends along with samples.

use std::collections::HashSet;

use sqlx::PgPool;

use super::StorageError;
use crate::model::Metadata;

pub async fn upsert_metadata(pool: &PgPool, metadata: &[Metadata]) -> Result<(), StorageError> {
    // ON CONFLICT DO UPDATE may touch a row only once per statement.
    let unique: HashSet<&Metadata> = metadata.iter().collect();
    if unique.is_empty() {
        return Ok(());
    }
    let (mut families, mut types, mut units, mut helps) = (vec![], vec![], vec![], vec![]);
    for m in unique {
        families.push(m.metric_family.as_str());
        types.push(m.r#type);
        units.push(m.unit.as_str());
        helps.push(m.help.as_str());
    }
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
    Ok(())
}
