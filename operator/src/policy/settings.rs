//! Applying a MetricPolicy's settings in the database, through `prom_api`.
//!
//! The operator remembers which settings of which metric each policy set, in
//! `_prom_operator.metric_policy`, so that it resets exactly those (and never a setting a person
//! made in SQL) when a policy lets go of a metric, drops a setting, or is deleted. All changes
//! of one policy happen in one transaction, serialized with every other policy by an advisory
//! lock.

use sqlx::postgres::types::PgInterval;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use crate::database::DatabaseError;

/// The bookkeeping table, created on first use (statement by statement: extended protocol).
const SCHEMA: [&str; 4] = [
    "CREATE SCHEMA IF NOT EXISTS _prom_operator",
    "CREATE TABLE IF NOT EXISTS _prom_operator.metric_policy (
        metric_name      text PRIMARY KEY,
        policy_uid       text NOT NULL,
        policy           text NOT NULL,
        retention_period interval,
        chunk_interval   interval,
        compression      boolean,
        applied_at       timestamptz NOT NULL DEFAULT now()
    )",
    "CREATE INDEX IF NOT EXISTS metric_policy_uid ON _prom_operator.metric_policy (policy_uid)",
    // Operators before series limits made the table without it.
    "ALTER TABLE _prom_operator.metric_policy ADD COLUMN IF NOT EXISTS max_active_series bigint",
];

/// What a policy asks for; `None` leaves that setting to the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Desired {
    pub retention: Option<PgInterval>,
    pub chunk: Option<PgInterval>,
    pub compression: Option<bool>,
    pub max_active_series: Option<i64>,
}

/// Whose settings these are: the policy's uid (a policy deleted and created again under the
/// same name is another owner) and its `namespace/name` for people reading the table.
pub struct Owner<'a> {
    pub uid: &'a str,
    pub name: &'a str,
}

#[derive(Clone, Copy)]
enum Setting {
    Retention,
    Chunk,
    Compression,
    MaxActiveSeries,
}

const SETTINGS: [Setting; 4] = [
    Setting::Retention,
    Setting::Chunk,
    Setting::Compression,
    Setting::MaxActiveSeries,
];

impl Setting {
    fn column(self) -> &'static str {
        match self {
            Setting::Retention => "retention_period",
            Setting::Chunk => "chunk_interval",
            Setting::Compression => "compression",
            Setting::MaxActiveSeries => "max_active_series",
        }
    }

    fn sql_type(self) -> &'static str {
        match self {
            Setting::Retention | Setting::Chunk => "interval",
            Setting::Compression => "boolean",
            Setting::MaxActiveSeries => "bigint",
        }
    }

    fn function(self) -> &'static str {
        match self {
            Setting::Retention => "retention_period",
            Setting::Chunk => "chunk_interval",
            Setting::Compression => "compression_setting",
            Setting::MaxActiveSeries => "max_active_series",
        }
    }

    fn bind<'q>(
        self,
        query: sqlx::query::QueryScalar<'q, Postgres, i64, sqlx::postgres::PgArguments>,
        desired: &Desired,
    ) -> sqlx::query::QueryScalar<'q, Postgres, i64, sqlx::postgres::PgArguments> {
        match self {
            Setting::Retention => query.bind(desired.retention),
            Setting::Chunk => query.bind(desired.chunk),
            Setting::Compression => query.bind(desired.compression),
            Setting::MaxActiveSeries => query.bind(desired.max_active_series),
        }
    }
}

/// Makes the database match the policy for the metrics it won; returns how many settings of
/// how many metrics changed.
pub async fn apply(
    connection: &mut PgConnection,
    owner: &Owner<'_>,
    won: &[String],
    desired: &Desired,
) -> Result<i64, DatabaseError> {
    let mut tx = begin(connection).await?;
    // Series limits came with schema version 20: on an older database (connectors not yet
    // upgraded) the other settings still apply.
    let has_series_limits: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                         WHERE attrelid = '_prom_catalog.metric'::regclass
                           AND attname = 'max_active_series' AND NOT attisdropped)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !has_series_limits && desired.max_active_series.is_some() {
        return Err(DatabaseError::Refused(
            "maxActiveSeries needs connectors of schema version 20 or later: upgrade the connectors, and the policy applies once they have upgraded the database".into(),
        ));
    }
    let mut changed = 0;
    for setting in SETTINGS {
        if matches!(setting, Setting::MaxActiveSeries) && !has_series_limits {
            continue;
        }
        // Reset what this policy set and no longer wants, and what a policy that lost the
        // metric to this one set where this one leaves the default.
        let reset = format!(
            "SELECT count(prom_api.reset_metric_{function}(o.metric_name))
               FROM _prom_operator.metric_policy o
               JOIN _prom_catalog.metric m USING (metric_name)
              WHERE o.{column} IS NOT NULL
                AND ((o.policy_uid = $1 AND (NOT o.metric_name = ANY($2) OR $3::{ty} IS NULL))
                  OR (o.policy_uid <> $1 AND o.metric_name = ANY($2) AND $3::{ty} IS NULL))",
            function = setting.function(),
            column = setting.column(),
            ty = setting.sql_type(),
        );
        let query = sqlx::query_scalar::<_, i64>(&reset)
            .bind(owner.uid.to_string())
            .bind(won.to_vec());
        changed += setting.bind(query, desired).fetch_one(&mut *tx).await?;

        // Set what differs; comparing the actual value also undoes changes made by hand.
        let set = format!(
            "SELECT count(prom_api.set_metric_{function}(m.metric_name, $2::{ty}))
               FROM _prom_catalog.metric m
              WHERE m.metric_name = ANY($1) AND $2::{ty} IS NOT NULL
                AND m.{column} IS DISTINCT FROM $2::{ty}",
            function = setting.function(),
            column = setting.column(),
            ty = setting.sql_type(),
        );
        let query = sqlx::query_scalar::<_, i64>(&set).bind(won.to_vec());
        changed += setting.bind(query, desired).fetch_one(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM _prom_operator.metric_policy WHERE policy_uid = $1 AND NOT metric_name = ANY($2)")
        .bind(owner.uid.to_string())
        .bind(won.to_vec())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO _prom_operator.metric_policy
                (metric_name, policy_uid, policy, retention_period, chunk_interval, compression,
                 max_active_series)
         SELECT unnest($1::text[]), $2, $3, $4, $5, $6, $7
         ON CONFLICT (metric_name) DO UPDATE
            SET policy_uid = excluded.policy_uid, policy = excluded.policy,
                retention_period = excluded.retention_period, chunk_interval = excluded.chunk_interval,
                compression = excluded.compression, max_active_series = excluded.max_active_series,
                applied_at = now()
          WHERE (_prom_operator.metric_policy.policy_uid, _prom_operator.metric_policy.policy,
                 _prom_operator.metric_policy.retention_period, _prom_operator.metric_policy.chunk_interval,
                 _prom_operator.metric_policy.compression, _prom_operator.metric_policy.max_active_series)
                IS DISTINCT FROM (excluded.policy_uid, excluded.policy, excluded.retention_period,
                                  excluded.chunk_interval, excluded.compression, excluded.max_active_series)",
    )
    .bind(won.to_vec())
    .bind(owner.uid.to_string())
    .bind(owner.name.to_string())
    .bind(desired.retention)
    .bind(desired.chunk)
    .bind(desired.compression)
    .bind(desired.max_active_series)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changed)
}

/// Resets every setting the policy set, for a deleted policy: the same as applying a policy
/// that wins no metric and sets nothing. Returns how many settings were reset.
pub async fn release(connection: &mut PgConnection, owner_uid: &str) -> Result<i64, DatabaseError> {
    let owner = Owner {
        uid: owner_uid,
        name: "",
    };
    let nothing = Desired {
        retention: None,
        chunk: None,
        compression: None,
        max_active_series: None,
    };
    apply(connection, &owner, &[], &nothing).await
}

/// Every metric the database holds.
pub async fn metric_names(connection: &mut PgConnection) -> Result<Vec<String>, DatabaseError> {
    Ok(
        sqlx::query_scalar("SELECT metric_name FROM _prom_catalog.metric ORDER BY metric_name")
            .fetch_all(&mut *connection)
            .await?,
    )
}

async fn begin(connection: &mut PgConnection) -> Result<Transaction<'_, Postgres>, DatabaseError> {
    let mut tx = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('promscale-operator/metric-policy'))")
        .execute(&mut *tx)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    Ok(tx)
}
