//! Writes resolved samples into the metric tables: the one seam behind which the on-disk
//! sample format lives. Everything above it (HTTP, decoding, series resolution, batching)
//! only hands over [`SampleBatch`]es, so a different layout (for example compressed
//! per-series chunks) replaces [`RowPerSampleWriter`] and nothing else.

use futures::future::BoxFuture;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, Postgres};
use sqlx::PgPool;

use super::StorageError;

/// A `timestamptz` in PostgreSQL's own representation (microseconds since 2000-01-01), so
/// that Prometheus' millisecond timestamps reach the database without any rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgTimestamp(pub i64);

impl sqlx::Type<Postgres> for PgTimestamp {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(1184))
    }
}

impl PgHasArrayType for PgTimestamp {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(1185))
    }
}

impl sqlx::Encode<'_, Postgres> for PgTimestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }
}

impl sqlx::Decode<'_, Postgres> for PgTimestamp {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
        Ok(PgTimestamp(i64::from_be_bytes(bytes)))
    }
}

/// Samples of any number of series and metrics, column by column, written together in one
/// transaction. The metric of each sample follows from its series id.
#[derive(Debug, Default, Clone)]
pub struct SampleBatch {
    pub series_ids: Vec<i64>,
    pub times: Vec<PgTimestamp>,
    pub values: Vec<f64>,
}

impl SampleBatch {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn push(&mut self, series_id: i64, time: PgTimestamp, value: f64) {
        self.series_ids.push(series_id);
        self.times.push(time);
        self.values.push(value);
    }

    pub fn append(&mut self, other: SampleBatch) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.series_ids.extend(other.series_ids);
        self.times.extend(other.times);
        self.values.extend(other.values);
    }

    /// Orders rows by (series, time): rows of one metric table become neighbours, and index
    /// insertions touch neighbouring pages.
    fn sorted(&self) -> SampleBatch {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_unstable_by_key(|&i| (self.series_ids[i], self.times[i]));
        SampleBatch {
            series_ids: order.iter().map(|&i| self.series_ids[i]).collect(),
            times: order.iter().map(|&i| self.times[i]).collect(),
            values: order.iter().map(|&i| self.values[i]).collect(),
        }
    }
}

/// Stores sample batches atomically: when the future resolves to `Ok(expired)`, every
/// sample of the batch is committed except `expired` ones, which lie beyond their metric's
/// retention period and are not kept; on `Err`, none is.
pub trait SampleWriter: Send + Sync + 'static {
    fn write<'a>(&'a self, batch: &'a SampleBatch) -> BoxFuture<'a, Result<u64, StorageError>>;
}

/// The seed's layout: one row `(time, value, series_id)` per sample in the metric's table.
///
/// All rows go in one call of `_prom_catalog.insert_samples`, which creates missing time
/// chunks and inserts through `_prom_catalog.samples`; PostgreSQL routes each row to its
/// metric table (a partition, by series id) and chunk (by time). One statement per batch,
/// however many metrics it holds. Samples already stored (Prometheus resends after a
/// timeout) make the plain insert fail as a whole; the batch is then written again skipping
/// them. The plain insert comes first because ON CONFLICT costs about half again as much per
/// row, and duplicates are rare.
///
/// On a schema created with TimescaleDB (migration 4), metric tables are hypertables and
/// `_prom_timescaledb.insert_samples` takes the same arguments instead.
pub struct RowPerSampleWriter {
    pool: PgPool,
    insert_statement: tokio::sync::OnceCell<&'static str>,
}

const UNIQUE_VIOLATION: &str = "23505";

impl RowPerSampleWriter {
    pub fn new(pool: PgPool) -> Self {
        RowPerSampleWriter {
            pool,
            insert_statement: Default::default(),
        }
    }

    /// Asked once, after the migrations (nothing is written before them).
    async fn insert_statement(&self) -> Result<&'static str, sqlx::Error> {
        self.insert_statement
            .get_or_try_init(|| async {
                let timescaledb: bool = sqlx::query_scalar("SELECT _prom_catalog.uses_timescaledb()")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(if timescaledb {
                    "SELECT _prom_timescaledb.insert_samples($1, $2, $3, $4)"
                } else {
                    "SELECT _prom_catalog.insert_samples($1, $2, $3, $4)"
                })
            })
            .await
            .copied()
    }

    async fn insert(&self, batch: &SampleBatch, skip_duplicates: bool) -> Result<u64, sqlx::Error> {
        let expired: i64 = sqlx::query_scalar(self.insert_statement().await?)
            .bind(&batch.times)
            .bind(&batch.values)
            .bind(&batch.series_ids)
            .bind(skip_duplicates)
            .fetch_one(&self.pool)
            .await?;
        Ok(expired as u64)
    }
}

impl SampleWriter for RowPerSampleWriter {
    fn write<'a>(&'a self, batch: &'a SampleBatch) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(0);
            }
            let batch = batch.sorted();
            // Each statement is its own transaction: it commits whole or not at all.
            match self.insert(&batch, false).await {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                    Ok(self.insert(&batch, true).await?)
                }
                other => Ok(other?),
            }
        })
    }
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` always may: in double quotes, with
/// embedded double quotes doubled. Every user-derived name goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("up"), "\"up\"");
        assert_eq!(quote_ident("a\"; DROP TABLE x; --"), "\"a\"\"; DROP TABLE x; --\"");
    }

    #[test]
    fn sorts_rows_by_series_then_time() {
        let mut t = SampleBatch::default();
        t.push(2, PgTimestamp(5), 1.0);
        t.push(1, PgTimestamp(9), 2.0);
        t.push(1, PgTimestamp(3), 3.0);
        let s = t.sorted();
        assert_eq!(s.series_ids, [1, 1, 2]);
        assert_eq!(s.times, [PgTimestamp(3), PgTimestamp(9), PgTimestamp(5)]);
        assert_eq!(s.values, [3.0, 2.0, 1.0]);
    }
}
