//! Everything that talks to PostgreSQL: the block format ([`codec`]), the write path into the
//! head ([`samples`]; exemplars and native histograms beside it in [`exemplars`] and
//! [`histograms`]), series ids ([`series`]), [`compaction`] into series chunks, [`packing`] of inactive series into batches, [`deletion`]
//! of series data (asked for in SQL: [`deletion_queue`]), series
//! selection by label matchers ([`select`]), reading samples ([`read`]), and what the HTTP
//! API asks of the catalog ([`catalog`]). See `docs/storage.md`. No SQL lives outside this
//! module.

pub mod catalog;
pub mod codec;
pub mod compaction;
pub mod copy;
pub mod deletion;
pub mod deletion_queue;
pub mod error;
pub mod exemplars;
pub mod ha_lease;
pub mod histogram_codec;
pub mod histograms;
pub mod limits;
pub mod maintenance;
pub mod metadata;
pub mod migrations;
pub mod packing;
pub mod read;
pub mod samples;
pub mod select;
pub mod series;
pub mod series_cache;

pub use error::StorageError;

/// Sets up a new session of the connector's pool. No JIT compilation: sessions look series
/// up, insert and read rows by index and decode samples in Rust, and PostgreSQL compiles by
/// estimated cost (a lookup of 2000 series was estimated past `jit_optimize_above_cost` and
/// spent 350 ms compiling to run for 10: `docs/storage.md`, "Series creation"). And READ
/// COMMITTED whatever the database's or role's default: series creation relies on each
/// statement's new snapshot to keep a series from being stored twice (migration 24). Set
/// once connected rather than as startup options, which connection poolers such as
/// PgBouncer refuse.
pub async fn set_up_session(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('jit', 'off', false), \
                set_config('default_transaction_isolation', 'read committed', false)",
    )
    .execute(conn)
    .await?;
    Ok(())
}
