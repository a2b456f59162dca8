//! Where samples are deleted: every float sample, native histogram and exemplar of the given
//! series in `[start, end]` (milliseconds, both included, as Prometheus' `delete_series`),
//! wherever it is stored: head rows, chunk blocks, series chunks, histogram rows and chunks,
//! exemplars.
//!
//! A stored row that holds deleted samples is decoded, the deleted samples dropped, and the
//! rest encoded again *in place*: a head row or chunk block row keeps its id, so the rule of
//! precedence between rows (on equal times, the row written first wins) is unchanged for
//! every sample kept; a row left empty is deleted. Every form of a series' data is filtered
//! by the same rule, so no duplicate that lost to a deleted sample comes back. Each metric is
//! handled in one transaction under the lock compaction, sealing and retention take
//! (`compaction::lock_metric_chunks`), so none of them moves samples under it; writers only
//! add rows, and what they add after the deletion began is kept.

use std::collections::{BTreeMap, HashSet};

use sqlx::{PgConnection, PgPool};

use super::codec::{self, BlockEncoder};
use super::compaction::{corrupt, lock_metric_chunks, raw_values};
use super::histogram_codec::{self, StoredHistogram};
use super::read::{StoredHeadRow, HEAD_COLUMNS};
use super::samples::{metric_of, quote_ident, PgTimestamp};

/// What a deletion removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
}

impl Deleted {
    fn add(&mut self, o: Deleted) {
        self.samples += o.samples;
        self.histograms += o.histograms;
        self.exemplars += o.exemplars;
    }
}

/// A time bound as PostgreSQL takes it: beyond its range, minus or plus infinity.
fn bound(ms: i64) -> PgTimestamp {
    const PG_MIN_MS: i64 = -210_866_803_200_000; // 4714-11-24 BC
    const PG_MAX_MS: i64 = 9_214_646_400_000_000; // 294000-01-01
    if ms < PG_MIN_MS {
        PgTimestamp(i64::MIN)
    } else if ms > PG_MAX_MS {
        PgTimestamp(i64::MAX)
    } else {
        PgTimestamp::from_unix_ms(ms)
    }
}

/// Deletes the data of `series_ids` in `[start_ms, end_ms]`, one metric at a time.
pub async fn delete(pool: &PgPool, series_ids: &[i64], start_ms: i64, end_ms: i64) -> Result<Deleted, sqlx::Error> {
    let mut by_metric: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &id in series_ids {
        by_metric.entry(metric_of(id)).or_default().push(id);
    }
    let mut total = Deleted::default();
    if start_ms > end_ms {
        return Ok(total);
    }
    for (metric_id, mut ids) in by_metric {
        ids.sort_unstable();
        ids.dedup();
        let mut tx = pool.begin().await?;
        lock_metric_chunks(&mut tx, metric_id).await?;
        let deleted = delete_in_metric(&mut tx, metric_id, &ids, start_ms, end_ms).await?;
        tx.commit().await?;
        total.add(deleted);
    }
    Ok(total)
}

async fn delete_in_metric(
    tx: &mut PgConnection,
    metric_id: i32,
    ids: &[i64],
    start_ms: i64,
    end_ms: i64,
) -> Result<Deleted, sqlx::Error> {
    let wanted: HashSet<i64> = ids.iter().copied().collect();
    let doomed = |series: i64, t: i64| t >= start_ms && t <= end_ms && wanted.contains(&series);
    let (start, end) = (bound(start_ms), bound(end_ms));
    let raw = raw_values(&mut *tx, metric_id).await?;
    let mut deleted = Deleted::default();

    // Head rows: re-encoded as they were written (values never raw).
    let rows: Vec<StoredHeadRow> = sqlx::query_as(&format!(
        "SELECT {HEAD_COLUMNS} FROM _prom_catalog.head WHERE metric_id = $1 AND max_time >= $2 AND min_time <= $3"
    ))
    .bind(metric_id)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let samples = row.samples().map_err(corrupt)?;
        let Some((kept, removed)) = filtered(samples, doomed) else {
            continue;
        };
        deleted.samples += removed;
        match encode_runs(&kept, false) {
            None => {
                sqlx::query("DELETE FROM _prom_catalog.head WHERE id = $1")
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(e) => {
                sqlx::query(
                    "UPDATE _prom_catalog.head SET min_time = $2, max_time = $3, samples = $4, data = $5,
                            exceptions = $6, plain_series_ids = NULL, plain_times = NULL, plain_values = NULL
                      WHERE id = $1",
                )
                .bind(row.id)
                .bind(PgTimestamp::from_unix_ms(e.min_time))
                .bind(PgTimestamp::from_unix_ms(e.max_time))
                .bind(e.samples)
                .bind(&e.block.data)
                .bind((!e.block.exceptions.is_empty()).then_some(&e.block.exceptions))
                .execute(&mut *tx)
                .await?;
            }
        }
    }

    // Chunk blocks of the metric's time chunks that overlap the range.
    let (first, last) = (ids[0], ids[ids.len() - 1]);
    let blocks: Vec<StoredHeadRow> = sqlx::query_as(&format!(
        "SELECT {HEAD_COLUMNS} FROM (
             SELECT b.id, b.data, b.exceptions, NULL::bigint[] AS plain_series_ids,
                    NULL::timestamptz[] AS plain_times, NULL::float8[] AS plain_values
               FROM _prom_catalog.chunk c
               JOIN _prom_catalog.chunk_block b ON b.chunk_id = c.id
              WHERE c.metric_id = $1 AND c.start_time <= $3 AND c.end_time > $2
                AND b.last_series >= $4 AND b.first_series <= $5
                AND b.start_time <= $3 AND b.end_time >= $2) b"
    ))
    .bind(metric_id)
    .bind(start)
    .bind(end)
    .bind(first)
    .bind(last)
    .fetch_all(&mut *tx)
    .await?;
    for row in blocks {
        let samples = row.samples().map_err(corrupt)?;
        let Some((kept, removed)) = filtered(samples, doomed) else {
            continue;
        };
        deleted.samples += removed;
        match encode_runs(&kept, raw) {
            None => {
                sqlx::query("DELETE FROM _prom_catalog.chunk_block WHERE id = $1")
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(e) => {
                sqlx::query(
                    "UPDATE _prom_catalog.chunk_block SET first_series = $2, last_series = $3, start_time = $4,
                            end_time = $5, samples = $6, data = $7, exceptions = $8
                      WHERE id = $1",
                )
                .bind(row.id)
                .bind(e.first_series)
                .bind(e.last_series)
                .bind(PgTimestamp::from_unix_ms(e.min_time))
                .bind(PgTimestamp::from_unix_ms(e.max_time))
                .bind(e.samples)
                .bind(&e.block.data)
                .bind((!e.block.exceptions.is_empty()).then_some(&e.block.exceptions))
                .execute(&mut *tx)
                .await?;
            }
        }
    }

    // Series chunks of the time chunks that have a table: a series' chunks never overlap, so
    // (series, start time) names one.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name FROM _prom_catalog.chunk
          WHERE metric_id = $1 AND table_name IS NOT NULL AND start_time <= $3 AND end_time > $2
          ORDER BY start_time",
    )
    .bind(metric_id)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    for table in tables {
        let table = quote_ident(&table);
        type ChunkRow = (i64, PgTimestamp, Vec<u8>, Option<Vec<f64>>);
        let chunks: Vec<ChunkRow> = sqlx::query_as(&format!(
            "SELECT series_id, start_time, data, exceptions FROM _prom_chunks.{table}
              WHERE series_id = ANY($1) AND start_time <= $3 AND end_time >= $2"
        ))
        .bind(ids)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
        for (series, chunk_start, data, exceptions) in chunks {
            let samples = codec::decode(&data, exceptions.as_deref().unwrap_or(&[])).map_err(corrupt)?;
            let samples: Vec<_> = samples.into_iter().map(|(_, t, v)| (series, t, v)).collect();
            let Some((kept, removed)) = filtered(samples, doomed) else {
                continue;
            };
            deleted.samples += removed;
            if kept.is_empty() {
                sqlx::query(&format!(
                    "DELETE FROM _prom_chunks.{table} WHERE series_id = $1 AND start_time = $2"
                ))
                .bind(series)
                .bind(chunk_start)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            let times: Vec<i64> = kept.iter().map(|s| s.1).collect();
            let values: Vec<f64> = kept.iter().map(|s| s.2).collect();
            let block = codec::encode_series(&times, &values, raw);
            sqlx::query(&format!(
                "UPDATE _prom_chunks.{table} SET start_time = $3, end_time = $4, samples = $5, data = $6, exceptions = $7
                  WHERE series_id = $1 AND start_time = $2"
            ))
            .bind(series)
            .bind(chunk_start)
            .bind(PgTimestamp::from_unix_ms(times[0]))
            .bind(PgTimestamp::from_unix_ms(times[times.len() - 1]))
            .bind(times.len() as i32)
            .bind(&block.data)
            .bind((!block.exceptions.is_empty()).then_some(&block.exceptions))
            .execute(&mut *tx)
            .await?;
        }
    }

    // Native histograms: rows, then chunks (a series' chunks never overlap: end time names one).
    deleted.histograms +=
        sqlx::query("DELETE FROM _prom_catalog.histogram WHERE series_id = ANY($1) AND time >= $2 AND time <= $3")
            .bind(ids)
            .bind(start)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    type HistogramChunkRow = (i64, PgTimestamp, Vec<u8>, Vec<f64>);
    let chunks: Vec<HistogramChunkRow> = sqlx::query_as(
        "SELECT series_id, end_time, data, floats FROM _prom_catalog.histogram_chunk
          WHERE series_id = ANY($1) AND start_time <= $3 AND end_time >= $2",
    )
    .bind(ids)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    for (series, chunk_end, data, floats) in chunks {
        let histograms = histogram_codec::decode(&data, &floats).map_err(corrupt)?;
        let before = histograms.len();
        let kept: Vec<StoredHistogram> = histograms
            .into_iter()
            .filter(|h| !(h.time >= start_ms && h.time <= end_ms))
            .collect();
        if kept.len() == before {
            continue;
        }
        deleted.histograms += (before - kept.len()) as u64;
        if kept.is_empty() {
            sqlx::query("DELETE FROM _prom_catalog.histogram_chunk WHERE series_id = $1 AND end_time = $2")
                .bind(series)
                .bind(chunk_end)
                .execute(&mut *tx)
                .await?;
            continue;
        }
        let chunk = histogram_codec::encode(&kept);
        sqlx::query(
            "UPDATE _prom_catalog.histogram_chunk SET start_time = $3, end_time = $4, samples = $5, data = $6, floats = $7
              WHERE series_id = $1 AND end_time = $2",
        )
        .bind(series)
        .bind(chunk_end)
        .bind(PgTimestamp::from_unix_ms(kept[0].time))
        .bind(PgTimestamp::from_unix_ms(kept[kept.len() - 1].time))
        .bind(kept.len() as i32)
        .bind(&chunk.data)
        .bind(&chunk.floats)
        .execute(&mut *tx)
        .await?;
    }

    deleted.exemplars +=
        sqlx::query("DELETE FROM _prom_catalog.exemplar WHERE series_id = ANY($1) AND time >= $2 AND time <= $3")
            .bind(ids)
            .bind(start)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    Ok(deleted)
}

/// The samples of a row (by series, then time) without the doomed ones, and how many those
/// were; `None` when none is.
fn filtered(
    samples: Vec<codec::DecodedSample>,
    doomed: impl Fn(i64, i64) -> bool,
) -> Option<(Vec<codec::DecodedSample>, u64)> {
    let before = samples.len();
    let kept: Vec<_> = samples.into_iter().filter(|&(s, t, _)| !doomed(s, t)).collect();
    let removed = (before - kept.len()) as u64;
    (removed > 0).then_some((kept, removed))
}

/// A row's samples encoded again: its block and bounds.
struct Encoded {
    block: codec::Block,
    min_time: i64,
    max_time: i64,
    first_series: i64,
    last_series: i64,
    samples: i32,
}

/// Encodes samples sorted by series then time as one block of runs; `None` when there are
/// none.
fn encode_runs(samples: &[codec::DecodedSample], raw: bool) -> Option<Encoded> {
    let min_time = samples.iter().map(|s| s.1).min()?;
    let max_time = samples.iter().map(|s| s.1).max()?;
    let mut encoder = BlockEncoder::new(min_time, raw);
    let (mut times, mut values) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < samples.len() {
        let series = samples[i].0;
        times.clear();
        values.clear();
        while i < samples.len() && samples[i].0 == series {
            times.push(samples[i].1);
            values.push(samples[i].2);
            i += 1;
        }
        encoder.push_run(series, &times, &values);
    }
    Some(Encoded {
        block: encoder.finish(),
        min_time,
        max_time,
        first_series: samples[0].0,
        last_series: samples[samples.len() - 1].0,
        samples: samples.len() as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_encoded_again_without_its_deleted_samples() {
        let samples = vec![
            (5, 10, 1.0),
            (5, 20, f64::from_bits(0x7ff0_0000_0000_0002)),
            (7, 10, -0.0),
            (7, 30, 4.5),
        ];
        let (kept, removed) = filtered(samples.clone(), |s, t| s == 7 && t <= 10).unwrap();
        assert_eq!(removed, 1);
        let e = encode_runs(&kept, false).unwrap();
        let back = codec::decode(&e.block.data, &e.block.exceptions).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in back.iter().zip(&kept) {
            assert_eq!((a.0, a.1, a.2.to_bits()), (b.0, b.1, b.2.to_bits()));
        }
        assert_eq!(
            (e.min_time, e.max_time, e.first_series, e.last_series, e.samples),
            (10, 30, 5, 7, 3)
        );
        assert!(filtered(samples, |_, t| t > 30).is_none());
        assert!(encode_runs(&[], true).is_none());
    }
}
