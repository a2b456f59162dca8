//! Where the lease of a Prometheus HA cluster is taken, renewed and handed over, and where
//! standbys' requests are kept for a takeover (migration 17's `_prom_catalog.ha_decide`;
//! docs/high-availability.md). The decision is the database's, in one statement under the
//! lease row's lock, so every connector of a cluster agrees.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use super::samples::PgTimestamp;

/// What a request of one replica is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The replica holds the lease: its samples later than `fence_ms` are stored.
    pub is_leader: bool,
    /// For the leader, the previous leader's newest sample when it took over (nothing at or
    /// before it is taken from this one); for a standby, the leader's newest sample.
    pub fence_ms: i64,
    /// The lease changed hands (or was first taken) with this request.
    pub took_over: bool,
    /// The leader has requests from its time as a standby still to write.
    pub pending: bool,
}

pub async fn decide(
    pool: &PgPool,
    cluster: &str,
    replica: &str,
    min_ms: i64,
    max_ms: i64,
    timeout: Duration,
) -> Result<Decision, sqlx::Error> {
    let (is_leader, fence, took_over, pending): (bool, PgTimestamp, bool, bool) = sqlx::query_as(
        "SELECT is_leader, fence, took_over, pending
           FROM _prom_catalog.ha_decide($1, $2, $3, $4, $5 * interval '1 millisecond')",
    )
    .bind(cluster)
    .bind(replica)
    .bind(PgTimestamp::from_unix_ms(min_ms))
    .bind(PgTimestamp::from_unix_ms(max_ms))
    .bind(timeout.as_millis() as f64)
    .fetch_one(pool)
    .await?;
    Ok(Decision {
        is_leader,
        fence_ms: fence.unix_ms(),
        took_over,
        pending,
    })
}

/// Keeps a standby's request (a remote-write 1.0 body of its series) for a takeover.
pub async fn keep_standby(
    pool: &PgPool,
    cluster: &str,
    replica: &str,
    min_ms: i64,
    max_ms: i64,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO _prom_catalog.ha_standby (cluster, replica, min_time, max_time, body) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(cluster)
    .bind(replica)
    .bind(PgTimestamp::from_unix_ms(min_ms))
    .bind(PgTimestamp::from_unix_ms(max_ms))
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// The leader's write of samples up to `max_ms` has committed.
pub async fn committed(pool: &PgPool, cluster: &str, replica: &str, max_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT _prom_catalog.ha_committed($1, $2, $3)")
        .bind(cluster)
        .bind(replica)
        .bind(PgTimestamp::from_unix_ms(max_ms))
        .execute(pool)
        .await?;
    Ok(())
}

/// The oldest request `replica` kept as a standby that no other transaction is writing,
/// locked until `tx` ends: (id, body). None when there is none, or when `replica` no longer
/// leads `cluster` behind `fence_ms` (the lease moved since: what is left is for a later
/// takeover, with its own fence).
pub async fn claim_kept(
    tx: &mut Transaction<'_, Postgres>,
    cluster: &str,
    replica: &str,
    fence_ms: i64,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.body FROM _prom_catalog.ha_standby s
          WHERE s.cluster = $1 AND s.replica = $2
            AND EXISTS (SELECT 1 FROM _prom_catalog.ha_lease l WHERE l.cluster = $1 AND l.leader = $2 AND l.fence = $3)
          ORDER BY s.id LIMIT 1
          FOR UPDATE OF s SKIP LOCKED",
    )
    .bind(cluster)
    .bind(replica)
    .bind(PgTimestamp::from_unix_ms(fence_ms))
    .fetch_optional(&mut **tx)
    .await
}

/// Drops a kept request (claimed in `tx`) once written.
pub async fn forget(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM _prom_catalog.ha_standby WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
