//! Where native histograms are stored and read (`_prom_catalog.histogram`, migration 11).
//!
//! Histograms ride with their samples as exemplars do: a [`HistogramBatch`] is part of a
//! [`SampleBatch`](super::samples::SampleBatch), inserted in the transaction that writes the
//! samples' head rows, so a histogram is acknowledged only once committed. One row per
//! (series, time) in a readable form (absolute bucket counts, spans as flat pairs); one sent
//! again is stored once, the first kept. Retention deletes them with their metric's other
//! data (`_prom_catalog.maintain_metric`). They are not compacted into chunks yet:
//! `docs/storage.md` says what that costs.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::samples::PgTimestamp;
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

type Row = (
    i64,
    i64,
    bool,
    i16,
    i32,
    f64,
    f64,
    f64,
    f64,
    Vec<i32>,
    Vec<f64>,
    Vec<i32>,
    Vec<f64>,
    Vec<f64>,
);

const SELECT_ROWS: &str =
    "SELECT series_id, (extract(epoch FROM time) * 1000)::int8, integer, reset_hint, schema, count, sum,
                zero_threshold, zero_count, positive_spans, positive_buckets, negative_spans,
                negative_buckets, custom_values
           FROM _prom_catalog.histogram
          WHERE series_id = ANY($1) AND time >= $2 AND time <= $3
          ORDER BY series_id, time
          LIMIT $4";

/// The rows of `series_ids` in `[start, end]`, at most `limit` of them.
async fn rows(
    pool: &PgPool,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(SELECT_ROWS)
        .bind(series_ids)
        .bind(start)
        .bind(end)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
}

/// Which of `series_ids` have a histogram in `[start, end]`.
pub async fn series_with_data(
    pool: &PgPool,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.id FROM unnest($1::int8[]) AS s(id)
          WHERE EXISTS (SELECT 1 FROM _prom_catalog.histogram h
                         WHERE h.series_id = s.id AND h.time >= $2 AND h.time <= $3)",
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
        .map(|row| {
            let (series_id, time, _, reset_hint, schema, count, sum, zero_threshold, zero_count, ps, pb, ns, nb, cv) =
                row;
            let spans = |flat: Vec<i32>| -> Vec<Span> {
                unflatten_spans(&flat)
                    .into_iter()
                    .map(|(offset, length)| Span { offset, length })
                    .collect()
            };
            let histogram = FloatHistogram {
                counter_reset_hint: match reset_hint {
                    1 => CounterResetHint::CounterReset,
                    2 => CounterResetHint::NotCounterReset,
                    3 => CounterResetHint::Gauge,
                    _ => CounterResetHint::Unknown,
                },
                schema,
                zero_threshold,
                zero_count,
                count,
                sum,
                positive_spans: spans(ps),
                negative_spans: spans(ns),
                positive_buckets: pb,
                negative_buckets: nb,
                custom_values: cv,
            };
            (series_id, time, histogram)
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
        .map(from_row)
        .collect())
}

/// Spans as stored: (offset, length) pairs, flattened.
fn unflatten_spans(flat: &[i32]) -> Vec<(i32, u32)> {
    flat.chunks_exact(2).map(|p| (p[0], p[1] as u32)).collect()
}

fn from_row(row: Row) -> (i64, Histogram) {
    let (series_id, timestamp, integer, reset_hint, schema, count, sum, zero_threshold, zero_count, ps, pb, ns, nb, cv) =
        row;
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
        sum,
        schema,
        zero_threshold,
        positive_spans: spans(ps),
        negative_spans: spans(ns),
        reset_hint: i32::from(reset_hint),
        timestamp,
        custom_values: cv,
        ..Default::default()
    };
    if integer {
        h.count = Some(Count::Int(count as u64));
        h.zero_count = Some(ZeroCount::Int(zero_count as u64));
        h.positive_deltas = deltas(&pb);
        h.negative_deltas = deltas(&nb);
    } else {
        h.count = Some(Count::Float(count));
        h.zero_count = Some(ZeroCount::Float(zero_count));
        h.positive_counts = pb;
        h.negative_counts = nb;
    }
    (series_id, h)
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
        let row: Row = (
            7,
            1000,
            true,
            0,
            3,
            9.0,
            1.5,
            0.001,
            0.0,
            vec![-3, 2, 1, 2],
            vec![2.0, 5.0, 1.0, 1.0],
            vec![],
            vec![],
            vec![],
        );
        let (_, h) = from_row(row);
        assert_eq!(h.positive_deltas, vec![2, 3, -4, 0]);
        assert_eq!(h.positive_spans[0], BucketSpan { offset: -3, length: 2 });
        assert_eq!(h.count, Some(Count::Int(9)));
    }
}
