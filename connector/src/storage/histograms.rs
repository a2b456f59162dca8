//! Where native histograms are stored and read (`_prom_catalog.histogram`, migration 11).
//!
//! Histograms ride with their samples as exemplars do: a [`HistogramBatch`] is part of a
//! [`SampleBatch`](super::samples::SampleBatch), inserted in the transaction that writes the
//! samples' head rows, so a histogram is acknowledged only once committed. One row per
//! (series, time) in a readable form (absolute bucket counts, spans as flat pairs); one sent
//! again is stored once, the first kept. Maintenance moves rows older than the head age into
//! histogram chunks ([`compact_batch`], `_prom_catalog.histogram_chunk`, migration 15; the
//! format is [`super::histogram_codec`]'s), and reads take both in one statement. Retention
//! deletes rows and chunks with their metric's other data (`_prom_catalog.maintain_metric`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgPool;

use super::compaction::corrupt;
use super::histogram_codec::{self, StoredHistogram, HISTOGRAM_COLUMNS};
use super::samples::{PackedExceptions, PgTimestamp};
use promscale_promql::histogram::{CounterResetHint, FloatHistogram, Span};

use crate::model::Histogram;
use crate::prompb::histogram::{Count, ZeroCount};
use crate::prompb::BucketSpan;

/// Histogram samples by series id, in arrival order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HistogramBatch {
    pub series_ids: Vec<i64>,
    pub histograms: Vec<Histogram>,
}

impl HistogramBatch {
    pub fn len(&self) -> usize {
        self.histograms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histograms.is_empty()
    }

    pub fn push(&mut self, series_id: i64, histogram: Histogram) {
        self.series_ids.push(series_id);
        self.histograms.push(histogram);
    }

    pub fn append(&mut self, other: HistogramBatch) {
        self.series_ids.extend(other.series_ids);
        self.histograms.extend(other.histograms);
    }
}

/// A PostgreSQL array literal of `values` (`{1,2.5,NaN}`); floats print the shortest text that
/// reads back as the same bits (Rust's `Display`), which PostgreSQL's `float8in` reads exactly.
fn array_literal<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    let mut out = String::from("{");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

fn spans_literal(spans: &[BucketSpan]) -> String {
    array_literal(spans.iter().flat_map(|s| [i64::from(s.offset), i64::from(s.length)]))
}

fn buckets_literal(integer: bool, deltas: &[i64], counts: &[f64]) -> String {
    if integer {
        array_literal(crate::remote_write::decode::absolute_counts(deltas))
    } else {
        array_literal(counts.iter().copied())
    }
}

/// Inserts a batch (the first of equal (series, time) pairs wins, in the batch and against
/// what is stored).
pub async fn insert<'e>(executor: impl sqlx::PgExecutor<'e>, batch: &HistogramBatch) -> Result<(), sqlx::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len();
    let mut times = Vec::with_capacity(n);
    let mut integer = Vec::with_capacity(n);
    let mut reset_hint = Vec::with_capacity(n);
    let mut schema = Vec::with_capacity(n);
    let mut count = Vec::with_capacity(n);
    let mut sum = Vec::with_capacity(n);
    let mut zero_threshold = Vec::with_capacity(n);
    let mut zero_count = Vec::with_capacity(n);
    let mut positive_spans = Vec::with_capacity(n);
    let mut positive_buckets = Vec::with_capacity(n);
    let mut negative_spans = Vec::with_capacity(n);
    let mut negative_buckets = Vec::with_capacity(n);
    let mut custom_values = Vec::with_capacity(n);
    for h in &batch.histograms {
        let is_integer = !h.is_float();
        times.push(PgTimestamp::from_unix_ms(h.timestamp));
        integer.push(is_integer);
        reset_hint.push(h.reset_hint.clamp(0, 3) as i16);
        schema.push(h.schema);
        count.push(h.count_value());
        sum.push(h.sum);
        zero_threshold.push(h.zero_threshold);
        zero_count.push(h.zero_count_value());
        positive_spans.push(spans_literal(&h.positive_spans));
        positive_buckets.push(buckets_literal(is_integer, &h.positive_deltas, &h.positive_counts));
        negative_spans.push(spans_literal(&h.negative_spans));
        negative_buckets.push(buckets_literal(is_integer, &h.negative_deltas, &h.negative_counts));
        custom_values.push(array_literal(h.custom_values.iter().copied()));
    }
    sqlx::query(
        "INSERT INTO _prom_catalog.histogram (series_id, time, integer, reset_hint, schema, count, sum,
                zero_threshold, zero_count, positive_spans, positive_buckets, negative_spans,
                negative_buckets, custom_values)
         SELECT DISTINCT ON (h.s, h.t) h.s, h.t, h.i, h.r, h.sc, h.c, h.su, h.zt, h.zc,
                h.ps::int[], h.pb::float8[], h.ns::int[], h.nb::float8[], h.cv::float8[]
           FROM unnest($1::int8[], $2::timestamptz[], $3::bool[], $4::int2[], $5::int4[], $6::float8[],
                       $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::text[], $12::text[],
                       $13::text[], $14::text[])
                WITH ORDINALITY AS h(s, t, i, r, sc, c, su, zt, zc, ps, pb, ns, nb, cv, n)
          ORDER BY h.s, h.t, h.n
         ON CONFLICT (series_id, time) DO NOTHING",
    )
    .bind(&batch.series_ids)
    .bind(times)
    .bind(integer)
    .bind(reset_hint)
    .bind(schema)
    .bind(count)
    .bind(sum)
    .bind(zero_threshold)
    .bind(zero_count)
    .bind(positive_spans)
    .bind(positive_buckets)
    .bind(negative_spans)
    .bind(negative_buckets)
    .bind(custom_values)
    .execute(executor)
    .await?;
    Ok(())
}

/// A histogram row with its series id.
struct Taken {
    series_id: i64,
    histogram: StoredHistogram,
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for Taken {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Taken {
            series_id: row.try_get("series_id")?,
            histogram: StoredHistogram::from_row(row)?,
        })
    }
}

/// A row as [`select_rows`] answers it: a histogram row, or a chunk (its series id and its
/// `data` and `floats`; the histogram columns then NULL).
enum Fetched {
    Row(Taken),
    Chunk {
        series_id: i64,
        data: Vec<u8>,
        floats: Vec<f64>,
    },
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for Fetched {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(match (row.try_get("data")?, row.try_get("floats")?) {
            (Some(data), Some(floats)) => Fetched::Chunk {
                series_id: row.try_get("series_id")?,
                data,
                floats,
            },
            _ => Fetched::Row(Taken::from_row(row)?),
        })
    }
}

/// Rows and chunks in one statement, so from one snapshot: compaction moves histograms from
/// rows into chunks atomically, and each is seen once.
fn select_rows() -> String {
    format!(
        "SELECT series_id, {HISTOGRAM_COLUMNS}, NULL::bytea AS data, NULL::float8[] AS floats
           FROM _prom_catalog.histogram
          WHERE series_id = ANY($1) AND time >= $2 AND time <= $3
         UNION ALL
         SELECT series_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                data, floats
           FROM _prom_catalog.histogram_chunk
          WHERE series_id = ANY($1) AND end_time >= $2 AND start_time <= $3"
    )
}

/// The histograms of `series_ids` in `[start, end]`, by series and time, at most `limit` of
/// them, so that a caller over its budget
/// finds out without holding them all. On equal (series, time), a chunk's histogram (stored
/// first) wins over a row's.
async fn rows(
    pool: &PgPool,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(i64, StoredHistogram)>, sqlx::Error> {
    let range = start.timestamp_millis()..=end.timestamp_millis();
    let mut compacted: Vec<(i64, StoredHistogram)> = Vec::new();
    let mut recent: Vec<(i64, StoredHistogram)> = Vec::new();
    let sql = select_rows();
    let mut fetched = sqlx::query_as::<_, Fetched>(&sql)
        .bind(series_ids)
        .bind(start)
        .bind(end)
        .fetch(pool);
    // Neither chunks nor rows repeat a (series, time) among themselves: past `limit` of
    // either, there are more than `limit` in all.
    while compacted.len() <= limit && recent.len() <= limit {
        let Some(row) = fetched.try_next().await? else {
            break;
        };
        match row {
            Fetched::Chunk {
                series_id,
                data,
                floats,
            } => compacted.extend(
                histogram_codec::decode(&data, &floats)
                    .map_err(corrupt)?
                    .into_iter()
                    .filter(|h| range.contains(&h.time))
                    .map(|h| (series_id, h)),
            ),
            Fetched::Row(taken) => recent.push((taken.series_id, taken.histogram)),
        }
    }
    drop(fetched);
    compacted.extend(recent);
    // Stable: a chunk's histogram stays ahead of a row's of the same time, and is kept.
    compacted.sort_by_key(|(s, h)| (*s, h.time));
    compacted.dedup_by_key(|(s, h)| (*s, h.time));
    compacted.truncate(limit);
    Ok(compacted)
}

/// Which of `series_ids` have a histogram in `[start, end]`, or a chunk overlapping it (as
/// Prometheus answers from the series of the blocks that overlap a range).
pub async fn series_with_data(
    pool: &PgPool,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.id FROM unnest($1::int8[]) AS s(id)
          WHERE EXISTS (SELECT 1 FROM _prom_catalog.histogram h
                         WHERE h.series_id = s.id AND h.time >= $2 AND h.time <= $3)
             OR EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk c
                         WHERE c.series_id = s.id AND c.end_time >= $2 AND c.start_time <= $3)",
    )
    .bind(series_ids)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await
}

/// The histograms of `series_ids` in `[start, end]` as the PromQL engine computes on them,
/// by series and time: (series id, Unix ms, histogram); at most `limit` of them, so that a
/// caller over its sample limit finds out without holding them all.
pub async fn read_for_promql(
    pool: &PgPool,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(i64, i64, FloatHistogram)>, sqlx::Error> {
    Ok(rows(pool, series_ids, start, end, limit)
        .await?
        .into_iter()
        .map(|(series_id, h)| {
            let spans = |flat: Vec<i32>| -> Vec<Span> {
                unflatten_spans(&flat)
                    .into_iter()
                    .map(|(offset, length)| Span { offset, length })
                    .collect()
            };
            let histogram = FloatHistogram {
                counter_reset_hint: match h.reset_hint {
                    1 => CounterResetHint::CounterReset,
                    2 => CounterResetHint::NotCounterReset,
                    3 => CounterResetHint::Gauge,
                    _ => CounterResetHint::Unknown,
                },
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count: h.zero_count,
                count: h.count,
                sum: h.sum,
                positive_spans: spans(h.positive_spans),
                negative_spans: spans(h.negative_spans),
                positive_buckets: h.positive_buckets,
                negative_buckets: h.negative_buckets,
                custom_values: h.custom_values,
            };
            (series_id, h.time, histogram)
        })
        .collect())
}

/// The histograms of `series_ids` in `[start, end]`, by series and time, as
/// Prometheus sends them (integer histograms with bucket deltas); at most `limit`.
pub async fn read(
    pool: &PgPool,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(i64, Histogram)>, sqlx::Error> {
    Ok(rows(pool, series_ids, start, end, limit)
        .await?
        .into_iter()
        .map(|(series_id, h)| (series_id, to_wire(h)))
        .collect())
}

/// Spans as stored: (offset, length) pairs, flattened.
fn unflatten_spans(flat: &[i32]) -> Vec<(i32, u32)> {
    flat.chunks_exact(2).map(|p| (p[0], p[1] as u32)).collect()
}

fn to_wire(stored: StoredHistogram) -> Histogram {
    let spans = |flat: Vec<i32>| -> Vec<BucketSpan> {
        unflatten_spans(&flat)
            .into_iter()
            .map(|(offset, length)| BucketSpan { offset, length })
            .collect()
    };
    let deltas = |counts: &[f64]| -> Vec<i64> {
        let mut previous = 0i64;
        counts
            .iter()
            .map(|&c| {
                let c = c as i64;
                let d = c.wrapping_sub(previous);
                previous = c;
                d
            })
            .collect()
    };
    let mut h = Histogram {
        sum: stored.sum,
        schema: stored.schema,
        zero_threshold: stored.zero_threshold,
        positive_spans: spans(stored.positive_spans),
        negative_spans: spans(stored.negative_spans),
        reset_hint: i32::from(stored.reset_hint),
        timestamp: stored.time,
        custom_values: stored.custom_values,
        ..Default::default()
    };
    if stored.integer {
        h.count = Some(Count::Int(stored.count as u64));
        h.zero_count = Some(ZeroCount::Int(stored.zero_count as u64));
        h.positive_deltas = deltas(&stored.positive_buckets);
        h.negative_deltas = deltas(&stored.negative_buckets);
    } else {
        h.count = Some(Count::Float(stored.count));
        h.zero_count = Some(ZeroCount::Float(stored.zero_count));
        h.positive_counts = stored.positive_buckets;
        h.negative_counts = stored.negative_buckets;
    }
    h
}

/// Histogram rows a compaction transaction takes at most.
const COMPACT_BATCH_ROWS: i64 = 20_000;
/// A series' last chunk with fewer histograms than this takes the next ones in (rewritten
/// with them), so that chunks grow to a few hundred histograms over maintenance runs.
const GROW_CHUNKS_BELOW: i32 = 240;
/// Histograms a chunk holds at most (about 10 to 20 kB for histograms of 20 buckets).
const MAX_CHUNK_HISTOGRAMS: usize = 480;

/// One transaction: up to 20,000 (`COMPACT_BATCH_ROWS`) of the metric's histogram rows older than
/// `head_age` into chunks (merged with the chunks of their series they overlap, and with the
/// series' last chunk while it is small and in the same time chunk of the metric; no chunk
/// spans two time chunks); returns how many rows it took. Nothing is taken for
/// a metric whose compression is turned off: its histograms stay rows.
pub async fn compact_batch(pool: &PgPool, metric_id: i32, head_age: Duration) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    super::compaction::lock_metric_chunks(&mut tx, metric_id).await?;
    if super::compaction::raw_values(&mut tx, metric_id).await? {
        return Ok(0);
    }
    let first_series = i64::from(metric_id) << 40;
    let taken: Vec<Taken> = sqlx::query_as(&format!(
        "DELETE FROM _prom_catalog.histogram h
          USING (SELECT series_id AS s, time AS t FROM _prom_catalog.histogram
                  WHERE series_id >= $1 AND series_id < $2 AND time <= now() - make_interval(secs => $3)
                  ORDER BY series_id, time LIMIT $4) o
          WHERE h.series_id = o.s AND h.time = o.t
         RETURNING series_id, {HISTOGRAM_COLUMNS}"
    ))
    .bind(first_series)
    .bind(first_series + (1 << 40))
    .bind(head_age.as_secs_f64())
    .bind(COMPACT_BATCH_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    if taken.is_empty() {
        return Ok(0);
    }
    let taken_rows = taken.len() as u64;
    let mut new: BTreeMap<i64, Vec<StoredHistogram>> = BTreeMap::new();
    for Taken { series_id, histogram } in taken {
        new.entry(series_id).or_default().push(histogram);
    }
    for hs in new.values_mut() {
        hs.sort_by_key(|h| h.time);
    }
    // Chunks stay within one of the metric's time chunks (aligned to the epoch, as those of
    // float samples are), so that retention, which drops whole chunks, keeps nothing much
    // longer than it keeps floats.
    let interval: i64 = sqlx::query_scalar(
        "SELECT greatest((extract(epoch FROM _prom_catalog.metric_chunk_interval($1)) * 1000)::int8, 60000)",
    )
    .bind(metric_id)
    .fetch_one(&mut *tx)
    .await?;
    let series: Vec<i64> = new.keys().copied().collect();
    let lows: Vec<PgTimestamp> = new.values().map(|hs| PgTimestamp::from_unix_ms(hs[0].time)).collect();
    let highs: Vec<PgTimestamp> = new
        .values()
        .map(|hs| PgTimestamp::from_unix_ms(hs[hs.len() - 1].time))
        .collect();
    let periods: Vec<PgTimestamp> = new
        .values()
        .map(|hs| PgTimestamp::from_unix_ms(hs[0].time - hs[0].time.rem_euclid(interval)))
        .collect();
    // The chunks the new histograms overlap, and the last one before them while small and in
    // the same time chunk: taken out to be written again with them. Chunks of a series never
    // overlap, so neither do the merged ones.
    let replaced: Vec<(i64, Vec<u8>, Vec<f64>)> = sqlx::query_as(
        "WITH wanted AS (
             SELECT w.series_id, w.end_time
               FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $5::timestamptz[]) AS n(s, lo, hi, period)
              CROSS JOIN LATERAL (
                    SELECT c.series_id, c.end_time FROM _prom_catalog.histogram_chunk c
                     WHERE c.series_id = n.s AND c.end_time >= n.lo AND c.start_time <= n.hi
                    UNION ALL
                    SELECT p.series_id, p.end_time
                      FROM (SELECT c.series_id, c.start_time, c.end_time, c.samples FROM _prom_catalog.histogram_chunk c
                             WHERE c.series_id = n.s AND c.end_time < n.lo
                             ORDER BY c.end_time DESC LIMIT 1) p
                     WHERE p.samples < $4 AND p.start_time >= n.period) w
         )
         DELETE FROM _prom_catalog.histogram_chunk c USING wanted w
          WHERE c.series_id = w.series_id AND c.end_time = w.end_time
         RETURNING c.series_id, c.data, c.floats",
    )
    .bind(&series)
    .bind(lows)
    .bind(highs)
    .bind(GROW_CHUNKS_BELOW)
    .bind(periods)
    .fetch_all(&mut *tx)
    .await?;
    let mut old: BTreeMap<i64, Vec<StoredHistogram>> = BTreeMap::new();
    for (series_id, data, floats) in replaced {
        old.entry(series_id)
            .or_default()
            .extend(histogram_codec::decode(&data, &floats).map_err(corrupt)?);
    }
    let (mut ids, mut starts, mut ends, mut counts, mut datas) = (vec![], vec![], vec![], vec![], vec![]);
    let mut floats = PackedExceptions::default();
    for (series_id, recent) in new {
        // What was stored first wins on equal times: the chunks' histograms, then the rows'.
        let mut all = old.remove(&series_id).unwrap_or_default();
        all.extend(recent);
        all.sort_by_key(|h| h.time);
        all.dedup_by_key(|h| h.time);
        let pieces = all
            .chunk_by(|a, b| a.time.div_euclid(interval) == b.time.div_euclid(interval))
            .flat_map(|period| period.chunks(MAX_CHUNK_HISTOGRAMS));
        for piece in pieces {
            let chunk = histogram_codec::encode(piece);
            ids.push(series_id);
            starts.push(PgTimestamp::from_unix_ms(piece[0].time));
            ends.push(PgTimestamp::from_unix_ms(piece[piece.len() - 1].time));
            counts.push(piece.len() as i32);
            datas.push(chunk.data);
            floats.push(&chunk.floats);
        }
    }
    sqlx::query(
        "INSERT INTO _prom_catalog.histogram_chunk (series_id, start_time, end_time, samples, data, floats)
         SELECT u.s, u.lo, u.hi, u.n, u.d, coalesce($8[u.off + 1 : u.off + u.len], '{}')
           FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::int4[], $5::bytea[], $6::int4[], $7::int4[])
                AS u(s, lo, hi, n, d, off, len)",
    )
    .bind(ids)
    .bind(starts)
    .bind(ends)
    .bind(counts)
    .bind(datas)
    .bind(floats.offsets)
    .bind(floats.lengths)
    .bind(floats.all)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(taken_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_keep_every_float_exactly() {
        let values = [
            0.1,
            -0.0,
            1e300,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            123456789.125,
        ];
        assert_eq!(
            array_literal([0.1, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN]),
            "{0.1,-0,inf,-inf,NaN}"
        );
        for v in values {
            let text = v.to_string();
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{text}");
        }
        assert_eq!(
            spans_literal(&[
                BucketSpan { offset: -3, length: 2 },
                BucketSpan { offset: 1, length: 4 }
            ]),
            "{-3,2,1,4}"
        );
    }

    #[test]
    fn integer_buckets_are_stored_absolute_and_read_back_as_deltas() {
        assert_eq!(buckets_literal(true, &[2, 3, -4, 0], &[]), "{2,5,1,1}");
        let stored = StoredHistogram {
            time: 1000,
            integer: true,
            reset_hint: 0,
            schema: 3,
            count: 9.0,
            sum: 1.5,
            zero_threshold: 0.001,
            zero_count: 0.0,
            positive_spans: vec![-3, 2, 1, 2],
            positive_buckets: vec![2.0, 5.0, 1.0, 1.0],
            negative_spans: vec![],
            negative_buckets: vec![],
            custom_values: vec![],
        };
        let h = to_wire(stored);
        assert_eq!(h.positive_deltas, vec![2, 3, -4, 0]);
        assert_eq!(h.positive_spans[0], BucketSpan { offset: -3, length: 2 });
        assert_eq!(h.count, Some(Count::Int(9)));
    }
}
