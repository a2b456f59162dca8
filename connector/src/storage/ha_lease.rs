//! Where the lease of a Prometheus HA cluster is taken, renewed and handed over, and where
//! standbys' requests are kept for a takeover (migration 17's `_prom_catalog.ha_decide`;
//! docs/high-availability.md). The decision is the database's, in one statement under the
//! lease row's lock, so every connector of a cluster agrees.

use std::time::Duration;

use sqlx::PgPool;

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
    /// Requests the leader sent as a standby and that are still to be written.
    pub pending: i64,
}

pub async fn decide(
    pool: &PgPool,
    cluster: &str,
    replica: &str,
    min_ms: i64,
    max_ms: i64,
    timeout: Duration,
) -> Result<Decision, sqlx::Error> {
    let (is_leader, fence, took_over, pending): (bool, PgTimestamp, bool, i64) = sqlx::query_as(
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

/// The requests `replica` kept as a standby, oldest first, at most `limit`: (id, body).
pub async fn kept(pool: &PgPool, cluster: &str, replica: &str, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, body FROM _prom_catalog.ha_standby WHERE cluster = $1 AND replica = $2 ORDER BY id LIMIT $3",
    )
    .bind(cluster)
    .bind(replica)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Drops kept requests once written.
pub async fn forget(pool: &PgPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM _prom_catalog.ha_standby WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}
