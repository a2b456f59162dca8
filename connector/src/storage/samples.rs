//! Writes resolved samples into the metric tables: the one seam behind which the on-disk
//! sample format lives. Everything above it (HTTP, decoding, series resolution, batching)
//! only hands over [`SampleBatch`]es, so a different layout (for example compressed
//! per-series chunks) replaces [`RowPerSampleWriter`] and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

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

/// Samples of one metric table, column by column.
#[derive(Debug, Default, Clone)]
pub struct TableSamples {
    pub series_ids: Vec<i64>,
    pub times: Vec<PgTimestamp>,
    pub values: Vec<f64>,
}

impl TableSamples {
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

    /// Orders rows by (series, time) so that index insertions touch neighbouring pages.
    fn sorted(&self) -> TableSamples {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_unstable_by_key(|&i| (self.series_ids[i], self.times[i]));
        TableSamples {
            series_ids: order.iter().map(|&i| self.series_ids[i]).collect(),
            times: order.iter().map(|&i| self.times[i]).collect(),
            values: order.iter().map(|&i| self.values[i]).collect(),
        }
    }
}

/// Samples for any number of metric tables, written together in one transaction.
#[derive(Debug, Default, Clone)]
pub struct SampleBatch {
    pub tables: HashMap<Arc<str>, TableSamples>,
}

impl SampleBatch {
    pub fn len(&self) -> usize {
        self.tables.values().map(TableSamples::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append(&mut self, other: SampleBatch) {
        if self.tables.is_empty() {
            self.tables = other.tables;
            return;
        }
        for (table, samples) in other.tables {
            let into = self.tables.entry(table).or_default();
            into.series_ids.extend(samples.series_ids);
            into.times.extend(samples.times);
            into.values.extend(samples.values);
        }
    }
}

/// Stores sample batches atomically: when the future resolves to `Ok`, every sample of the
/// batch is committed; on `Err`, none is.
pub trait SampleWriter: Send + Sync + 'static {
    fn write<'a>(&'a self, batch: &'a SampleBatch) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// The seed's layout: one row `(time, value, series_id)` per sample. Samples already stored
/// (Prometheus resends after a timeout) are skipped through the unique (series_id, time) index.
pub struct RowPerSampleWriter {
    pool: PgPool,
}

impl RowPerSampleWriter {
    pub fn new(pool: PgPool) -> Self {
        RowPerSampleWriter { pool }
    }
}

impl SampleWriter for RowPerSampleWriter {
    fn write<'a>(&'a self, batch: &'a SampleBatch) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut tables: Vec<_> = batch.tables.iter().filter(|(_, s)| !s.is_empty()).collect();
            // A fixed table order keeps concurrent writers from deadlocking on each other.
            tables.sort_by(|a, b| a.0.cmp(b.0));
            for (table, samples) in tables {
                let samples = samples.sorted();
                let sql = format!(
                    "INSERT INTO prom_data.{} (time, value, series_id) \
                     SELECT * FROM unnest($1::timestamptz[], $2::float8[], $3::int8[]) \
                     ON CONFLICT DO NOTHING",
                    quote_ident(table)
                );
                sqlx::query(&sql)
                    .bind(&samples.times)
                    .bind(&samples.values)
                    .bind(&samples.series_ids)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
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
        let mut t = TableSamples::default();
        t.push(2, PgTimestamp(5), 1.0);
        t.push(1, PgTimestamp(9), 2.0);
        t.push(1, PgTimestamp(3), 3.0);
        let s = t.sorted();
        assert_eq!(s.series_ids, [1, 1, 2]);
        assert_eq!(s.times, [PgTimestamp(3), PgTimestamp(9), PgTimestamp(5)]);
        assert_eq!(s.values, [3.0, 2.0, 1.0]);
    }
}
