//! Versioned, idempotent schema migrations, applied at start-up.
//!
//! Connectors that start together against the same database take turns through a session
//! advisory lock, so each migration is applied exactly once; each runs in its own
//! transaction together with the row that records it.

use sqlx::{Connection, Executor, PgConnection, PgPool};

/// Arbitrary but fixed first key of every advisory lock the connector takes.
pub const ADVISORY_LOCK_NAMESPACE: i32 = 7_355_608;
const MIGRATION_LOCK: i32 = 0;
/// Second key of the lock that lets one connector at a time run maintenance.
pub const MAINTENANCE_LOCK: i32 = 3;
/// Second key of the lock that lets one connector at a time merge small head rows between
/// maintenance runs.
pub const MERGE_LOCK: i32 = 4;
/// Second key of the lock on `_prom_catalog.recent_label_floor` (migration 28): held shared by
/// writers creating series of recent labels, taken exclusive by the merge pass to raise it.
/// Used in SQL only; here so that no other lock takes the key.
pub const RECENT_LABEL_FLOOR_LOCK: i32 = 5;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "catalog",
        sql: include_str!("migrations/0001_catalog.sql"),
    },
    Migration {
        version: 2,
        name: "policies",
        sql: include_str!("migrations/0002_policies.sql"),
    },
    Migration {
        version: 3,
        name: "compression",
        sql: include_str!("migrations/0003_compression.sql"),
    },
    Migration {
        version: 4,
        name: "timescaledb",
        sql: include_str!("migrations/0004_timescaledb.sql"),
    },
    Migration {
        version: 5,
        name: "chunk_storage",
        sql: include_str!("migrations/0005_chunk_storage.sql"),
    },
    Migration {
        version: 6,
        name: "long_label_values",
        sql: include_str!("migrations/0006_long_label_values.sql"),
    },
    Migration {
        version: 7,
        name: "series_creation",
        sql: include_str!("migrations/0007_series_creation.sql"),
    },
    Migration {
        version: 8,
        name: "chunk_blocks",
        sql: include_str!("migrations/0008_chunk_blocks.sql"),
    },
    Migration {
        version: 9,
        name: "series_insert",
        sql: include_str!("migrations/0009_series_insert.sql"),
    },
    Migration {
        version: 10,
        name: "exemplars",
        sql: include_str!("migrations/0010_exemplars.sql"),
    },
    Migration {
        version: 11,
        name: "native_histograms",
        sql: include_str!("migrations/0011_native_histograms.sql"),
    },
    Migration {
        version: 12,
        name: "packed_values",
        sql: include_str!("migrations/0012_packed_values.sql"),
    },
    Migration {
        version: 13,
        name: "series_lookup",
        sql: include_str!("migrations/0013_series_lookup.sql"),
    },
    Migration {
        version: 14,
        name: "series_order",
        sql: include_str!("migrations/0014_series_order.sql"),
    },
    Migration {
        version: 15,
        name: "histogram_chunks",
        sql: include_str!("migrations/0015_histogram_chunks.sql"),
    },
    Migration {
        version: 16,
        name: "cardinality",
        sql: include_str!("migrations/0016_cardinality.sql"),
    },
    Migration {
        version: 17,
        name: "ha_leases",
        sql: include_str!("migrations/0017_ha_leases.sql"),
    },
    Migration {
        version: 18,
        name: "tenants",
        sql: include_str!("migrations/0018_tenants.sql"),
    },
    Migration {
        version: 19,
        name: "sql_deletion",
        sql: include_str!("migrations/0019_sql_deletion.sql"),
    },
    Migration {
        version: 20,
        name: "series_limits",
        sql: include_str!("migrations/0020_series_limits.sql"),
    },
    Migration {
        version: 21,
        name: "tenant_sql_access",
        sql: include_str!("migrations/0021_tenant_sql_access.sql"),
    },
    Migration {
        version: 22,
        name: "fresh_series",
        sql: include_str!("migrations/0022_fresh_series.sql"),
    },
    Migration {
        version: 23,
        name: "fresh_series_in_one_statement",
        sql: include_str!("migrations/0023_fresh_series_in_one_statement.sql"),
    },
    Migration {
        version: 24,
        name: "new_series_unindexed",
        sql: include_str!("migrations/0024_new_series_unindexed.sql"),
    },
    Migration {
        version: 25,
        name: "series_in_one_statement",
        sql: include_str!("migrations/0025_series_in_one_statement.sql"),
    },
    Migration {
        version: 26,
        name: "fresh_series_by_hash",
        sql: include_str!("migrations/0026_fresh_series_by_hash.sql"),
    },
    Migration {
        version: 27,
        name: "packed_series",
        sql: include_str!("migrations/0027_packed_series.sql"),
    },
    Migration {
        version: 28,
        name: "recent_series",
        sql: include_str!("migrations/0028_recent_series.sql"),
    },
    Migration {
        version: 29,
        name: "create_labels",
        sql: include_str!("migrations/0029_create_labels.sql"),
    },
    Migration {
        version: 30,
        name: "copied_recent_series",
        sql: include_str!("migrations/0030_copied_recent_series.sql"),
    },
    Migration {
        version: 31,
        name: "fresh_series_unique_hash",
        sql: include_str!("migrations/0031_fresh_series_unique_hash.sql"),
    },
];

pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database schema is at version {found}, newer than this connector knows ({known}); upgrade the connector"
    )]
    TooNew { found: i32, known: i32 },
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error("could not prepare migrations: {0}")]
    Database(#[from] sqlx::Error),
}

/// Brings the schema to the latest version; returns how many migrations were applied.
pub async fn migrate(pool: &PgPool) -> Result<usize, MigrationError> {
    migrate_to(pool, latest_version()).await
}

/// Brings the schema up to `version` (tests of upgrades start from an older version).
pub async fn migrate_to(pool: &PgPool, version: i32) -> Result<usize, MigrationError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = apply_pending(&mut conn, version).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(ADVISORY_LOCK_NAMESPACE)
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    if unlock.is_err() {
        // A connection whose unlock failed may still hold the lock: never reuse it.
        conn.detach();
    }
    result
}

async fn apply_pending(conn: &mut PgConnection, target: i32) -> Result<usize, MigrationError> {
    conn.execute(
        "CREATE SCHEMA IF NOT EXISTS _prom_catalog;
         CREATE TABLE IF NOT EXISTS _prom_catalog.migration (
             version    int PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());",
    )
    .await?;
    let current: i32 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _prom_catalog.migration")
        .fetch_one(&mut *conn)
        .await?;
    if current > latest_version() {
        return Err(MigrationError::TooNew {
            found: current,
            known: latest_version(),
        });
    }
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| m.version > current && m.version <= target) {
        let failed = |source| MigrationError::Failed {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = conn.begin().await?;
        tx.execute(m.sql).await.map_err(failed)?;
        sqlx::query("INSERT INTO _prom_catalog.migration (version, name) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "applied schema migration");
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_registered_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        let registered: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, registered);
        assert!(MIGRATIONS.iter().enumerate().all(|(i, m)| m.version == i as i32 + 1));
    }
}
