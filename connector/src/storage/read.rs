//! Reads samples back for queries and remote read: the read side of the storage format
//! (`docs/storage.md`).
//!
//! A metric's samples live in chunk blocks (`_prom_catalog.chunk_block`, sealed small chunks),
//! series chunks (`_prom_compressed.<metric>`) and the head (`_prom_catalog.head`). All are
//! fetched still encoded and decoded here ([`super::codec`]), then merged per series: chunk
//! blocks first, then series chunks, then head rows in the order written, and on equal times
//! the sample stored first wins, as compaction will decide.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::codec::{self, merge_by_precedence, CorruptBlock, DecodedSample};
use super::samples::{metric_of, quote_ident, PgTimestamp};
use promscale_promql::Windows;

/// A head row as stored: an encoded block, or plain arrays (rows the upgrade from schema
/// version 4 wrote).
#[derive(Debug)]
pub struct StoredHeadRow {
    pub id: i64,
    pub data: Option<Vec<u8>>,
    pub exceptions: Option<Vec<f64>>,
    pub plain_series_ids: Option<Vec<i64>>,
    pub plain_times: Option<Vec<PgTimestamp>>,
    pub plain_values: Option<Vec<f64>>,
}

/// The columns [`StoredHeadRow`] is read from.
pub const HEAD_COLUMNS: &str = "id, data, exceptions, plain_series_ids, plain_times, plain_values";

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for StoredHeadRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(StoredHeadRow {
            id: row.try_get("id")?,
            data: row.try_get("data")?,
            exceptions: row.try_get("exceptions")?,
            plain_series_ids: row.try_get("plain_series_ids")?,
            plain_times: row.try_get("plain_times")?,
            plain_values: row.try_get("plain_values")?,
        })
    }
}

impl StoredHeadRow {
    /// Every sample of the row, by series then time.
    pub fn samples(&self) -> Result<Vec<DecodedSample>, CorruptBlock> {
        self.samples_of(|_| true)
    }

    /// The samples of the series `wanted` accepts, by series then time.
    pub fn samples_of(&self, wanted: impl Fn(i64) -> bool) -> Result<Vec<DecodedSample>, CorruptBlock> {
        if let Some(data) = &self.data {
            let mut out = Vec::new();
            codec::decode_selected_into(data, self.exceptions.as_deref().unwrap_or(&[]), wanted, &mut out)?;
            return Ok(out);
        }
        let (Some(ids), Some(times), Some(values)) = (&self.plain_series_ids, &self.plain_times, &self.plain_values)
        else {
            return Err(CorruptBlock("head row has neither a block nor arrays"));
        };
        if ids.len() != times.len() || ids.len() != values.len() {
            return Err(CorruptBlock("head row arrays differ in length"));
        }
        let mut out: Vec<DecodedSample> = (0..ids.len())
            .filter(|&i| wanted(ids[i]))
            .map(|i| (ids[i], times[i].unix_ms(), values[i]))
            .collect();
        out.sort_by_key(|s| (s.0, s.1));
        Ok(out)
    }
}

fn corrupt(e: CorruptBlock) -> ReadError {
    ReadError::Database(sqlx::Error::Decode(Box::new(e)))
}

/// Series chunks of series `$1` overlapping `[$2, $3]`, of metric `$4`. Series chunks lie
/// within their time chunk, so none starts before the first time chunk that ends after `$2`:
/// that bound prunes older partitions (at run time).
const CHUNKS_IN_RANGE: &str = "series_id = ANY($1) AND end_time >= $2 AND start_time <= $3
    AND start_time >= (SELECT coalesce(min(c.start_time), $2) FROM _prom_catalog.chunk c
                        WHERE c.metric_id = $4 AND c.end_time > $2)";

/// Chunk blocks of metric `$4` overlapping `[$2, $3]` that may hold one of the series `$1`.
const BLOCKS_IN_RANGE: &str = "chunk_id IN (SELECT c.id FROM _prom_catalog.chunk c
                        WHERE c.metric_id = $4 AND c.end_time > $2 AND c.start_time <= $3)
    AND last_series >= (SELECT min(s) FROM unnest($1::int8[]) s)
    AND first_series <= (SELECT max(s) FROM unnest($1::int8[]) s)
    AND end_time >= $2 AND start_time <= $3";

/// Why [`read_samples`] returned nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The selection holds more samples than the caller allowed; reading stopped there.
    #[error("the selection holds more than {0} samples")]
    TooManySamples(usize),
}

/// Appends the samples of `decoded` (by series, then time) whose time `keep` accepts to
/// `out`, one list per series, for the series `wanted` accepts (asked once per series).
pub(super) fn split_by_series(
    decoded: Vec<DecodedSample>,
    keep: impl Fn(i64) -> bool,
    wanted: impl Fn(i64) -> bool,
    out: &mut HashMap<i64, Vec<Vec<(i64, f64)>>>,
) -> usize {
    let mut kept = 0;
    let mut i = 0;
    while i < decoded.len() {
        let series = decoded[i].0;
        let run = decoded[i..]
            .iter()
            .position(|s| s.0 != series)
            .unwrap_or(decoded.len() - i);
        if wanted(series) {
            let list: Vec<(i64, f64)> = decoded[i..i + run]
                .iter()
                .filter(|s| keep(s.1))
                .map(|&(_, t, v)| (t, v))
                .collect();
            if !list.is_empty() {
                kept += list.len();
                out.entry(series).or_default().push(list);
            }
        }
        i += run;
    }
    kept
}

/// Whether a sample at `t` is wanted: within `[start_ms, end_ms]` and, when given, one of the
/// query's `windows`.
fn time_filter(start_ms: i64, end_ms: i64, windows: Option<&Windows>) -> impl Fn(i64) -> bool + '_ {
    move |t| (start_ms..=end_ms).contains(&t) && windows.is_none_or(|w| w.contains(t))
}

/// Samples of the given series of one metric with times in `[start, end]` (Unix ms) and, when
/// given, in one of `windows` (samples no step of the query looks at are left out), in time
/// order, per series id. Past `max_samples` samples (counted before duplicates are merged
/// away) it stops decoding and fails with [`ReadError::TooManySamples`].
pub async fn read_samples(
    pool: &PgPool,
    table_name: &str,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    windows: Option<&Windows>,
    max_samples: usize,
) -> Result<HashMap<i64, Vec<(i64, f64)>>, ReadError> {
    if series_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
    let keep = time_filter(start_ms, end_ms, windows);
    let table = quote_ident(table_name);
    let metric_id = metric_of(series_ids[0]);
    // The head, the series chunks and the chunk blocks in one statement, so in one
    // snapshot: compaction and sealing move samples from one to the other atomically, so
    // each is seen once here. Series chunks lie within their time chunk, so none starts
    // before the first time chunk that ends after `start`: that bound prunes older
    // partitions (at run time).
    let rows = sqlx::query(&format!(
        "SELECT 2::int2 AS kind, NULL::bigint AS series_id, NULL::timestamptz AS start_time, {HEAD_COLUMNS}
           FROM _prom_catalog.head
          WHERE metric_id = $4 AND max_time >= $2 AND min_time <= $3
         UNION ALL
         SELECT 1::int2, series_id, start_time, NULL::bigint, data, exceptions,
                NULL::bigint[], NULL::timestamptz[], NULL::float8[]
           FROM _prom_compressed.{table}
          WHERE {CHUNKS_IN_RANGE}
         UNION ALL
         SELECT 0::int2, NULL::bigint, start_time, id, data, exceptions,
                NULL::bigint[], NULL::timestamptz[], NULL::float8[]
           FROM _prom_catalog.chunk_block
          WHERE {BLOCKS_IN_RANGE}"
    ))
    .bind(series_ids)
    .bind(start)
    .bind(end)
    .bind(metric_id)
    .fetch_all(pool)
    .await?;
    let mut head_rows: Vec<StoredHeadRow> = Vec::new();
    // (series, start time, data, exceptions) of each series chunk
    type ChunkRow = (i64, DateTime<Utc>, Vec<u8>, Option<Vec<f64>>);
    let mut chunk_rows: Vec<ChunkRow> = Vec::new();
    let mut block_rows: Vec<StoredHeadRow> = Vec::new();
    for row in &rows {
        use sqlx::{FromRow, Row};
        match row.try_get::<i16, _>("kind")? {
            // a chunk block row has the layout of a head row
            0 => block_rows.push(StoredHeadRow::from_row(row)?),
            1 => {
                let data: Option<Vec<u8>> = row.try_get("data")?;
                chunk_rows.push((
                    row.try_get("series_id")?,
                    row.try_get("start_time")?,
                    data.unwrap_or_default(),
                    row.try_get("exceptions")?,
                ));
            }
            _ => head_rows.push(StoredHeadRow::from_row(row)?),
        }
    }
    drop(rows);
    head_rows.sort_by_key(|r| r.id);
    block_rows.sort_by_key(|r| r.id);
    chunk_rows.sort_by_key(|r| (r.0, r.1));
    let chunk_rows = chunk_rows
        .into_iter()
        .map(|(series, _, data, exceptions)| (series, data, exceptions));

    // Per series, the lists in order of precedence: one per chunk block row in the order
    // written, one for its series chunks (they do not overlap), then one per head row.
    let mut lists: HashMap<i64, Vec<Vec<(i64, f64)>>> = HashMap::new();
    let wanted: HashSet<i64> = series_ids.iter().copied().collect();
    let mut kept = 0usize;
    // Chunk blocks and head rows alike: each row a list per series it holds.
    let add_rows = |rows: &[StoredHeadRow], lists: &mut HashMap<i64, Vec<Vec<(i64, f64)>>>, kept: &mut usize| {
        for row in rows {
            let decoded = row.samples_of(|s| wanted.contains(&s)).map_err(corrupt)?;
            *kept += split_by_series(decoded, &keep, |s| wanted.contains(&s), lists);
            if *kept > max_samples {
                return Err(ReadError::TooManySamples(max_samples));
            }
        }
        Ok(())
    };
    add_rows(&block_rows, &mut lists, &mut kept)?;
    let mut buffer = Vec::new();
    let mut chunked: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
    for (series, data, exceptions) in chunk_rows {
        buffer.clear();
        codec::decode_into(&data, exceptions.as_deref().unwrap_or(&[]), &mut buffer).map_err(corrupt)?;
        let list = chunked.entry(series).or_default();
        let before = list.len();
        list.extend(buffer.iter().filter(|s| keep(s.1)).map(|&(_, t, v)| (t, v)));
        kept += list.len() - before;
        if kept > max_samples {
            return Err(ReadError::TooManySamples(max_samples));
        }
    }
    for (series, list) in chunked {
        lists.entry(series).or_default().push(list);
    }
    add_rows(&head_rows, &mut lists, &mut kept)?;
    Ok(lists
        .into_iter()
        .map(|(series, lists)| (series, merge_by_precedence(lists)))
        .filter(|(_, samples)| !samples.is_empty())
        .collect())
}

/// Which of the given series of one metric have data in `[start, end]`, without reading
/// samples: a series chunk overlapping the range, or a run in a head row overlapping it. Like
/// Prometheus' (whose blocks answer by their time span), the answer can include a series
/// whose head-row neighbours, not its own samples, fall in the range.
pub async fn series_with_data(
    pool: &PgPool,
    table_name: &str,
    series_ids: &[i64],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<HashSet<i64>, ReadError> {
    if series_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let table = quote_ident(table_name);
    let metric_id = metric_of(series_ids[0]);
    let mut found: HashSet<i64> = sqlx::query_scalar::<_, i64>(&format!(
        "SELECT DISTINCT series_id FROM _prom_compressed.{table}
          WHERE {CHUNKS_IN_RANGE}"
    ))
    .bind(series_ids)
    .bind(start)
    .bind(end)
    .bind(metric_id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let wanted: HashSet<i64> = series_ids.iter().copied().filter(|s| !found.contains(s)).collect();
    if wanted.is_empty() {
        return Ok(found);
    }
    // Chunk blocks and head rows hold several series each: their runs say which.
    let head_rows: Vec<StoredHeadRow> = sqlx::query_as(&format!(
        "SELECT {HEAD_COLUMNS} FROM _prom_catalog.head
          WHERE metric_id = $4 AND max_time >= $2 AND min_time <= $3
         UNION ALL
         SELECT 0::bigint, data, exceptions, NULL::bigint[], NULL::timestamptz[], NULL::float8[]
           FROM _prom_catalog.chunk_block
          WHERE {BLOCKS_IN_RANGE}"
    ))
    .bind(series_ids)
    .bind(start)
    .bind(end)
    .bind(metric_id)
    .fetch_all(pool)
    .await?;
    for row in &head_rows {
        let seen = std::cell::RefCell::new(Vec::new());
        // Every run is parsed past: the filter only notes which series the row holds.
        row.samples_of(|s| {
            if wanted.contains(&s) {
                seen.borrow_mut().push(s);
            }
            false
        })
        .map_err(corrupt)?;
        found.extend(seen.into_inner());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_head_rows_decode_sorted() {
        let row = StoredHeadRow {
            id: 1,
            data: None,
            exceptions: None,
            plain_series_ids: Some(vec![2, 1, 1]),
            plain_times: Some(vec![
                PgTimestamp::from_unix_ms(5),
                PgTimestamp::from_unix_ms(9),
                PgTimestamp::from_unix_ms(3),
            ]),
            plain_values: Some(vec![1.0, 2.0, 3.0]),
        };
        assert_eq!(row.samples().unwrap(), vec![(1, 3, 3.0), (1, 9, 2.0), (2, 5, 1.0)]);
    }

    #[test]
    fn splitting_keeps_wanted_series_within_the_range() {
        let mut out = HashMap::new();
        split_by_series(
            vec![(1, 1, 1.0), (1, 5, 5.0), (2, 2, 2.0), (3, 3, 3.0)],
            |t| (2..=5).contains(&t),
            |s| s != 3,
            &mut out,
        );
        assert_eq!(out[&1], vec![vec![(5, 5.0)]]);
        assert_eq!(out[&2], vec![vec![(2, 2.0)]]);
        assert!(!out.contains_key(&3));
    }
}
