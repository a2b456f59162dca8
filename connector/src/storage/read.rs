//! Reads samples back for queries and remote read: the read side of the storage-format seam.
//!
//! A metric's samples live in uncompressed rows (`prom_data.<metric>`) and in compressed
//! per-series rows (`_prom_compressed.<metric>`, migration 3). Both are fetched in bulk, the
//! compressed ones still compressed, and decoded here: far cheaper than decompressing in SQL
//! and sending a row per sample. On TimescaleDB the metric table holds everything.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::samples::{quote_ident, PgTimestamp};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// 10^k as the SQL side's power_of_ten has them, so that decoding divides by the same
/// numbers encoding multiplied by.
const POWERS_OF_TEN: [f64; 13] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12];

/// One compressed row, as `_prom_catalog.compressed_samples` defines it.
struct CompressedRow {
    series_id: i64,
    start_time: PgTimestamp,
    time_deltas: Vec<i64>,
    value_scale: Option<i16>,
    value_deltas: Option<Vec<i64>>,
    raw_values: Option<Vec<f64>>,
    exception_positions: Option<Vec<i32>>,
    exception_values: Option<Vec<f64>>,
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for CompressedRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(CompressedRow {
            series_id: row.try_get("series_id")?,
            start_time: row.try_get("start_time")?,
            time_deltas: row.try_get("time_deltas")?,
            value_scale: row.try_get("value_scale")?,
            value_deltas: row.try_get("value_deltas")?,
            raw_values: row.try_get("raw_values")?,
            exception_positions: row.try_get("exception_positions")?,
            exception_values: row.try_get("exception_values")?,
        })
    }
}

impl CompressedRow {
    /// The row's samples as (Unix ms, value), exactly as they were written.
    fn decode(&self) -> Result<Vec<(i64, f64)>, String> {
        let corrupt = |what: &str| format!("compressed row of series {} is corrupt: {what}", self.series_id);
        let n = self.time_deltas.len();
        let mut out = Vec::with_capacity(n);
        let mut time_us = self.start_time.0;
        let mut scaled: i64 = 0;
        let mut next_exception = 0;
        for i in 0..n {
            time_us += self.time_deltas[i];
            let value = match (&self.raw_values, &self.value_deltas) {
                (Some(raw), _) => *raw.get(i).ok_or_else(|| corrupt("raw_values too short"))?,
                (None, Some(deltas)) => {
                    scaled = scaled.wrapping_add(*deltas.get(i).ok_or_else(|| corrupt("value_deltas too short"))?);
                    let positions = self.exception_positions.as_deref().unwrap_or(&[]);
                    if positions.get(next_exception) == Some(&(i as i32 + 1)) {
                        next_exception += 1;
                        *self
                            .exception_values
                            .as_ref()
                            .and_then(|v| v.get(next_exception - 1))
                            .ok_or_else(|| corrupt("exception_values too short"))?
                    } else {
                        let scale = self.value_scale.unwrap_or(0);
                        let power = POWERS_OF_TEN
                            .get(scale as usize)
                            .ok_or_else(|| corrupt("value_scale"))?;
                        scaled as f64 / power
                    }
                }
                (None, None) => return Err(corrupt("no values")),
            };
            out.push(((time_us + PG_EPOCH_OFFSET_US).div_euclid(1000), value));
        }
        Ok(out)
    }
}

/// Samples of the given series of one metric with times in `[start, end]` (Unix ms), in time
/// order, per series id. Where a late sample waits uncompressed beside a compressed one at the
/// same time, the compressed (earlier written) value wins, as compression will decide.
pub async fn read_samples(
    pool: &PgPool,
    table_name: &str,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<HashMap<i64, Vec<(i64, f64)>>, sqlx::Error> {
    let table = quote_ident(table_name);
    let rows: Vec<(i64, Vec<PgTimestamp>, Vec<f64>)> = sqlx::query_as(&format!(
        "SELECT series_id, array_agg(time ORDER BY time), array_agg(value ORDER BY time)
           FROM prom_data.{table}
          WHERE series_id = ANY($1) AND time >= $2 AND time <= $3
          GROUP BY series_id"
    ))
    .bind(series_ids)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<i64, Vec<(i64, f64)>> = rows
        .into_iter()
        .map(|(id, times, values)| {
            let samples = times
                .into_iter()
                .zip(values)
                .map(|(t, v)| ((t.0 + PG_EPOCH_OFFSET_US).div_euclid(1000), v))
                .collect();
            (id, samples)
        })
        .collect();

    let compressed_exists: bool =
        sqlx::query_scalar("SELECT to_regclass(format('_prom_compressed.%I', $1::text)) IS NOT NULL")
            .bind(table_name)
            .fetch_one(pool)
            .await?;
    if !compressed_exists {
        return Ok(out);
    }
    let rows: Vec<CompressedRow> = sqlx::query_as(&format!(
        "SELECT series_id, start_time, time_deltas, value_scale, value_deltas, raw_values,
                exception_positions, exception_values
           FROM _prom_compressed.{table}
          WHERE series_id = ANY($1) AND end_time >= $2 AND start_time <= $3
          ORDER BY series_id, start_time"
    ))
    .bind(series_ids)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
    let mut compressed: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
    for row in rows {
        let samples = row.decode().map_err(|e| sqlx::Error::Decode(e.into()))?;
        compressed
            .entry(row.series_id)
            .or_default()
            .extend(samples.into_iter().filter(|&(t, _)| t >= start_ms && t <= end_ms));
    }
    for (id, packed) in compressed {
        let rows = out.remove(&id).unwrap_or_default();
        out.insert(id, merge(packed, rows));
    }
    Ok(out)
}

/// Merges two time-ordered sample lists; on equal times the first list's sample wins.
fn merge(preferred: Vec<(i64, f64)>, other: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    if other.is_empty() {
        return preferred;
    }
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    let (mut a, mut b) = (preferred.into_iter().peekable(), other.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => out.push(a.next().unwrap()),
            (Some(x), Some(y)) if x.0 > y.0 => out.push(b.next().unwrap()),
            (Some(_), Some(_)) => {
                out.push(a.next().unwrap());
                b.next();
            }
            (Some(_), None) => out.extend(a.by_ref()),
            (None, Some(_)) => out.extend(b.by_ref()),
            (None, None) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_order_and_prefers_the_first_list() {
        let merged = merge(vec![(1, 1.0), (3, 3.0), (5, 5.0)], vec![(2, 2.0), (3, 30.0), (6, 6.0)]);
        assert_eq!(merged, vec![(1, 1.0), (2, 2.0), (3, 3.0), (5, 5.0), (6, 6.0)]);
    }

    #[test]
    fn compressed_rows_decode_scaled_raw_and_exceptional_values() {
        let row = CompressedRow {
            series_id: 1,
            start_time: PgTimestamp(0),
            time_deltas: vec![0, 15_000_000, 15_000_000],
            value_scale: Some(2),
            value_deltas: Some(vec![100_411, 0, 5]),
            raw_values: None,
            exception_positions: Some(vec![2]),
            exception_values: Some(vec![f64::from_bits(0x7ff0_0000_0000_0002)]),
        };
        let decoded = row.decode().unwrap();
        let epoch_ms = PG_EPOCH_OFFSET_US / 1000;
        assert_eq!(decoded[0], (epoch_ms, 1004.11));
        assert_eq!(
            (decoded[1].0, decoded[1].1.to_bits()),
            (epoch_ms + 15_000, 0x7ff0_0000_0000_0002)
        );
        assert_eq!(decoded[2], (epoch_ms + 30_000, 1004.16));
        let raw = CompressedRow {
            raw_values: Some(vec![0.1 + 0.2]),
            value_deltas: None,
            time_deltas: vec![0],
            ..row
        };
        assert_eq!(raw.decode().unwrap(), vec![(epoch_ms, 0.1 + 0.2)]);
    }
}
