//! Where exemplars are stored, read and trimmed (`_prom_catalog.exemplar`, migration 10).
//!
//! Exemplars ride with their samples: [`ExemplarBatch`] is part of a
//! [`SampleBatch`](super::samples::SampleBatch) and is inserted in the transaction that
//! writes the samples' head rows, so an exemplar is acknowledged with them. One row per
//! (series, time); one sent again is stored once, the first kept. Maintenance keeps at most
//! `--exemplars.max-per-series` of each series (the newest) and none older than the metric's
//! retention period.

use sqlx::PgPool;

/// Exemplars kept per series unless `--exemplars.max-per-series` says otherwise.
pub const DEFAULT_PER_SERIES: usize = 100;

use super::samples::PgTimestamp;

/// Exemplars by series id, in arrival order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExemplarBatch {
    pub series_ids: Vec<i64>,
    /// Unix milliseconds.
    pub times: Vec<i64>,
    pub values: Vec<f64>,
    /// Each a JSON object of the exemplar's labels.
    pub labels: Vec<String>,
}

impl ExemplarBatch {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn push(&mut self, series_id: i64, time_ms: i64, value: f64, labels: String) {
        self.series_ids.push(series_id);
        self.times.push(time_ms);
        self.values.push(value);
        self.labels.push(labels);
    }

    pub fn append(&mut self, other: ExemplarBatch) {
        self.series_ids.extend(other.series_ids);
        self.times.extend(other.times);
        self.values.extend(other.values);
        self.labels.extend(other.labels);
    }
}

/// Inserts a batch (the first of equal (series, time) pairs wins, in the batch and against
/// what is stored).
pub async fn insert<'e>(executor: impl sqlx::PgExecutor<'e>, batch: &ExemplarBatch) -> Result<(), sqlx::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO _prom_catalog.exemplar (series_id, time, value, labels)
         SELECT DISTINCT ON (e.s, e.t) e.s, e.t, e.v, e.l::jsonb
           FROM unnest($1::int8[], $2::timestamptz[], $3::float8[], $4::text[]) WITH ORDINALITY AS e(s, t, v, l, n)
          ORDER BY e.s, e.t, e.n
         ON CONFLICT (series_id, time) DO NOTHING",
    )
    .bind(&batch.series_ids)
    .bind(
        batch
            .times
            .iter()
            .map(|&t| PgTimestamp::from_unix_ms(t))
            .collect::<Vec<_>>(),
    )
    .bind(&batch.values)
    .bind(&batch.labels)
    .execute(executor)
    .await?;
    Ok(())
}

/// One stored exemplar: series id, Unix ms, value, labels as a JSON object.
pub type StoredExemplar = (i64, i64, f64, serde_json::Value);

/// The exemplars of `series_ids` in `[start, end]` (Unix ms), by series and time.
pub async fn read(pool: &PgPool, series_ids: &[i64], start: i64, end: i64) -> Result<Vec<StoredExemplar>, sqlx::Error> {
    sqlx::query_as(
        "SELECT series_id, (extract(epoch FROM time) * 1000)::int8, value, labels
           FROM _prom_catalog.exemplar
          WHERE series_id = ANY($1) AND time >= $2 AND time <= $3
          ORDER BY series_id, time",
    )
    .bind(series_ids)
    // Clamped to what PostgreSQL can hold: any start and end are valid here.
    .bind(super::select::to_time(start))
    .bind(super::select::to_time(end))
    .fetch_all(pool)
    .await
}

/// Deletes the exemplars beyond the newest `per_series` of each series, and those older than
/// their metric's retention period (one range delete per metric); returns how many went. A
/// bound of 0 (this connector stores none) leaves the table alone: other connectors may.
pub async fn trim(conn: &mut sqlx::PgConnection, per_series: usize) -> Result<u64, sqlx::Error> {
    if per_series == 0 {
        return Ok(0);
    }
    let beyond = sqlx::query(
        "DELETE FROM _prom_catalog.exemplar e
          USING (SELECT series_id, time
                   FROM (SELECT series_id, time,
                                row_number() OVER (PARTITION BY series_id ORDER BY time DESC) AS newest
                           FROM _prom_catalog.exemplar) n
                  WHERE n.newest > $1) r
          WHERE e.series_id = r.series_id AND e.time = r.time",
    )
    .bind(i64::try_from(per_series).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    let expired = sqlx::query(
        "DELETE FROM _prom_catalog.exemplar e
          USING (SELECT m.id, now() - _prom_catalog.metric_retention_period(m.id) AS cutoff
                   FROM _prom_catalog.metric m) r
          WHERE e.series_id >= (r.id::int8 << 40) AND e.series_id < ((r.id::int8 + 1) << 40)
            AND e.time < r.cutoff",
    )
    .execute(&mut *conn)
    .await?;
    Ok(beyond.rows_affected() + expired.rows_affected())
}
