//! Writes resolved samples into the head (`docs/storage.md`): the write side of the storage
//! format. Everything above it (HTTP, decoding, series resolution, batching) only hands over
//! [`SampleBatch`]es; [`HeadWriter`] encodes them ([`super::codec`]) and commits one row per
//! metric.

use futures::future::BoxFuture;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, Postgres};
use sqlx::PgPool;

use super::codec::{Block, BlockEncoder};
use super::exemplars::{self, ExemplarBatch};
use super::histograms::{self, HistogramBatch};
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

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

impl PgTimestamp {
    pub fn from_unix_ms(ms: i64) -> Self {
        PgTimestamp(ms.saturating_mul(1000).saturating_sub(PG_EPOCH_OFFSET_US))
    }

    pub fn unix_ms(self) -> i64 {
        (self.0 + PG_EPOCH_OFFSET_US).div_euclid(1000)
    }
}

/// Samples of any number of series and metrics, column by column, written together in one
/// transaction. The metric of each sample follows from its series id.
#[derive(Debug, Default, Clone)]
pub struct SampleBatch {
    pub series_ids: Vec<i64>,
    /// Unix milliseconds.
    pub times: Vec<i64>,
    pub values: Vec<f64>,
    /// Exemplars of the samples' series, written in the same transaction.
    pub exemplars: ExemplarBatch,
    /// Native histogram samples, written in the same transaction.
    pub histograms: HistogramBatch,
}

impl SampleBatch {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn push(&mut self, series_id: i64, time_ms: i64, value: f64) {
        self.series_ids.push(series_id);
        self.times.push(time_ms);
        self.values.push(value);
    }

    pub fn append(&mut self, other: SampleBatch) {
        if self.is_empty() && self.exemplars.is_empty() && self.histograms.is_empty() {
            *self = other;
            return;
        }
        self.series_ids.extend(other.series_ids);
        self.times.extend(other.times);
        self.values.extend(other.values);
        self.exemplars.append(other.exemplars);
        self.histograms.append(other.histograms);
    }

    /// Positions of the samples ordered by (series, time), the first of equal (series, time)
    /// pairs only: within a batch the sample that came first wins.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        // stable: equal keys keep their arrival order
        order.sort_by_key(|&i| (self.series_ids[i], self.times[i]));
        order.dedup_by_key(|&mut i| (self.series_ids[i], self.times[i]));
        order
    }
}

/// One head row: the samples of one metric in a batch, encoded.
#[derive(Debug)]
pub struct HeadRow {
    pub metric_id: i32,
    pub min_time: i64,
    pub max_time: i64,
    pub samples: i32,
    pub block: Block,
}

/// Encodes a batch into one head row per metric.
pub fn head_rows(batch: &SampleBatch) -> Vec<HeadRow> {
    let order = batch.order();
    let mut rows = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let metric_id = metric_of(batch.series_ids[order[i]]);
        let mut end = i;
        while end < order.len() && metric_of(batch.series_ids[order[end]]) == metric_id {
            end += 1;
        }
        let part = &order[i..end];
        let min_time = part.iter().map(|&k| batch.times[k]).min().unwrap_or_default();
        let max_time = part.iter().map(|&k| batch.times[k]).max().unwrap_or_default();
        let mut encoder = BlockEncoder::new(min_time, false);
        let (mut times, mut values) = (Vec::new(), Vec::new());
        let mut j = 0;
        while j < part.len() {
            let series = batch.series_ids[part[j]];
            times.clear();
            values.clear();
            while j < part.len() && batch.series_ids[part[j]] == series {
                times.push(batch.times[part[j]]);
                values.push(batch.values[part[j]]);
                j += 1;
            }
            encoder.push_run(series, &times, &values);
        }
        rows.push(HeadRow {
            metric_id,
            min_time,
            max_time,
            samples: part.len() as i32,
            block: encoder.finish(),
        });
        i = end;
    }
    rows
}

/// The metric id a series id carries in its high bits (see the catalog migration).
pub fn metric_of(series_id: i64) -> i32 {
    (series_id >> 40) as i32
}

/// Stores sample batches atomically: when the future resolves to `Ok(expired)`, every
/// sample of the batch is committed except `expired` ones, which lie beyond their metric's
/// retention period and are not kept; on `Err`, none is.
pub trait SampleWriter: Send + Sync + 'static {
    fn write<'a>(&'a self, batch: &'a SampleBatch) -> BoxFuture<'a, Result<u64, StorageError>>;
}

/// Writes batches into the head (`docs/storage.md`): one encoded row per metric, all in one
/// `INSERT`. Exceptions of all rows travel as one array, sliced per row in SQL.
/// The head always encodes values compactly; a metric's compression setting applies when
/// compaction writes its series chunks.
pub struct HeadWriter {
    pool: PgPool,
}

impl HeadWriter {
    pub fn new(pool: PgPool) -> Self {
        HeadWriter { pool }
    }
}

/// The exceptions of several blocks as one `float8[]` parameter, with each block's offset and
/// length in it: an insert takes block i's as `$all[off + 1 : off + len]`, NULL when empty.
#[derive(Debug, Default)]
pub struct PackedExceptions {
    pub all: Vec<f64>,
    pub offsets: Vec<i32>,
    pub lengths: Vec<i32>,
}

impl PackedExceptions {
    pub fn push(&mut self, exceptions: &[f64]) {
        self.offsets.push(self.all.len() as i32);
        self.lengths.push(exceptions.len() as i32);
        self.all.extend_from_slice(exceptions);
    }
}

/// Inserts encoded head rows in one statement. A row whose samples all lie beyond its
/// metric's retention period is not stored; returns how many samples were left out so.
/// `written_at` is the time of the insert, not of the transaction's start (`now()`): a row
/// then gets its id and its age at once, which the merging of head rows relies on (a row
/// written a minute ago has committed or been rolled back, short of a stalled commit).
/// A metric's retention is read by a subquery, as `_prom_catalog.metric_retention_period`
/// reads it: that SQL function is not inlined, and calling it for each metric of a request
/// took a fifth of the statement's time.
pub async fn insert_head_rows<'e>(executor: impl sqlx::PgExecutor<'e>, rows: &[HeadRow]) -> Result<u64, sqlx::Error> {
    let mut exceptions = PackedExceptions::default();
    for r in rows {
        exceptions.push(&r.block.exceptions);
    }
    let expired: i64 = sqlx::query_scalar(
        "WITH u AS (
             SELECT u.*,
                    coalesce(u.hi < now() - (SELECT coalesce(m.retention_period,
                                                             (SELECT d.value::interval FROM _prom_catalog.default_setting d
                                                               WHERE d.key = 'retention_period'))
                                               FROM _prom_catalog.metric m WHERE m.id = u.m), false) AS expired
               FROM unnest($1::int4[], $2::timestamptz[], $3::timestamptz[], $4::int4[], $5::bytea[], $6::int4[], $7::int4[])
                    AS u(m, lo, hi, n, d, off, len)
         ), inserted AS (
             INSERT INTO _prom_catalog.head (metric_id, min_time, max_time, samples, data, exceptions, written_at)
             SELECT u.m, u.lo, u.hi, u.n, u.d, CASE WHEN u.len > 0 THEN $8[u.off + 1 : u.off + u.len] END,
                    clock_timestamp()
               FROM u WHERE NOT u.expired
         )
         SELECT coalesce(sum(u.n) FILTER (WHERE u.expired), 0)::int8 FROM u",
    )
    .bind(rows.iter().map(|r| r.metric_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| PgTimestamp::from_unix_ms(r.min_time)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| PgTimestamp::from_unix_ms(r.max_time)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.samples).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.block.data.as_slice()).collect::<Vec<_>>())
    .bind(exceptions.offsets)
    .bind(exceptions.lengths)
    .bind(exceptions.all)
    .fetch_one(executor)
    .await?;
    Ok(expired as u64)
}

impl SampleWriter for HeadWriter {
    fn write<'a>(&'a self, batch: &'a SampleBatch) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            if batch.exemplars.is_empty() && batch.histograms.is_empty() {
                if batch.is_empty() {
                    return Ok(0);
                }
                // One statement is one transaction: it commits whole or not at all.
                return Ok(insert_head_rows(&self.pool, &head_rows(batch)).await?);
            }
            // Exemplars and histograms may come without samples (Prometheus sends exemplars
            // apart, and a histogram series has no float samples).
            let mut tx = self.pool.begin().await?;
            let expired = if batch.is_empty() {
                0
            } else {
                insert_head_rows(&mut *tx, &head_rows(batch)).await?
            };
            histograms::insert(&mut *tx, &batch.histograms).await?;
            exemplars::insert(&mut *tx, &batch.exemplars).await?;
            tx.commit().await?;
            Ok(expired)
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
    fn a_batch_becomes_one_row_per_metric_and_the_first_of_repeats_wins() {
        let mut b = SampleBatch::default();
        let (a, c) = ((1i64 << 40) + 5, (2i64 << 40) + 1);
        b.push(c, 2_000, 1.0);
        b.push(a, 9_000, 2.0);
        b.push(a, 3_000, 3.0);
        b.push(a, 3_000, 4.0);
        let rows = head_rows(&b);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].metric_id, rows[0].min_time, rows[0].max_time, rows[0].samples),
            (1, 3_000, 9_000, 2)
        );
        let decoded = super::super::codec::decode(&rows[0].block.data, &rows[0].block.exceptions).unwrap();
        assert_eq!(decoded, vec![(a, 3_000, 3.0), (a, 9_000, 2.0)]);
        assert_eq!(rows[1].metric_id, 2);
    }

    #[test]
    fn timestamps_convert_both_ways() {
        assert_eq!(PgTimestamp::from_unix_ms(946_684_800_001), PgTimestamp(1000));
        assert_eq!(PgTimestamp(1000).unix_ms(), 946_684_800_001);
        assert_eq!(PgTimestamp::from_unix_ms(-5).unix_ms(), -5);
    }
}
