//! Where samples are deleted: every float sample, native histogram and exemplar of the given
//! series in `[start, end]` (milliseconds, both included, as Prometheus' `delete_series`),
//! wherever it is stored: head rows, chunk blocks, series chunks, histogram rows and chunks,
//! exemplars.
//!
//! How each form is rewritten keeps what reads see of every sample kept (docs/storage.md,
//! "Deletion"):
//! - a head row holding deleted samples is encoded again *in place*: it keeps its id, so the
//!   rule of precedence between head rows (on equal times, the row written first wins) is
//!   unchanged; a row left empty is deleted. Head rows are read a few at a time.
//! - a time chunk whose blocks hold deleted samples has all its blocks merged by precedence,
//!   filtered and packed again, as sealing packs them: a rewritten block can be longer than
//!   the one it replaces (a hole in regular times codes longer), and blocks must fit a page.
//!   Blocks come before a chunk's table in precedence whatever their ids.
//! - a series chunk of a chunk table holding deleted samples is replaced by the rest, split
//!   to fit a page as compaction splits (a series' chunks never overlap, so splitting changes
//!   no precedence); the chunk is marked rewritten and unsealed, so that sealing rewrites its
//!   table and the space of the replaced rows is not lost.
//! - histogram chunks are encoded again in place (one series each, never overlapping);
//!   histogram rows and exemplars are deleted.
//!
//! Every form of a series' data is filtered by the same rule, so no duplicate that lost to a
//! deleted sample comes back. Each metric is handled in one transaction under the lock
//! compaction, sealing and retention take (`compaction::lock_metric_chunks`), so none of them
//! moves samples under it; writers only add head rows, and what they add once the deletion
//! has begun is kept. Metrics are committed one by one: a failure leaves the metrics before
//! it done, and the request can be sent again.

use std::collections::{BTreeMap, HashSet};

use sqlx::{PgPool, Postgres, Transaction};

use super::codec::{self, BlockEncoder};
use super::compaction::{
    chunk_block_samples, corrupt, encode_chunk_blocks, insert_chunk_blocks, insert_series_chunks, lock_metric_chunks,
    raw_values,
};
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
    let metrics = by_metric.len();
    for (done, (metric_id, mut ids)) in by_metric.into_iter().enumerate() {
        ids.sort_unstable();
        ids.dedup();
        let result = async {
            let mut tx = pool.begin().await?;
            lock_metric_chunks(&mut tx, metric_id).await?;
            let deleted = delete_in_metric(&mut tx, metric_id, &ids, start_ms, end_ms).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(deleted)
        }
        .await;
        match result {
            Ok(deleted) => total.add(deleted),
            Err(e) => {
                tracing::warn!(error = %e, metric_id, done, metrics, "deleting series data failed; the metrics before this one are done");
                return Err(e);
            }
        }
    }
    Ok(total)
}

async fn delete_in_metric(
    tx: &mut Transaction<'_, Postgres>,
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

    // Head rows overlapping the range, a few at a time: encoded again as written (values
    // never raw), in place.
    let head_ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM _prom_catalog.head WHERE metric_id = $1 AND max_time >= $2 AND min_time <= $3 ORDER BY id",
    )
    .bind(metric_id)
    .bind(start)
    .bind(end)
    .fetch_all(&mut **tx)
    .await?;
    for part in head_ids.chunks(64) {
        let rows: Vec<StoredHeadRow> = sqlx::query_as(&format!(
            "SELECT {HEAD_COLUMNS} FROM _prom_catalog.head WHERE id = ANY($1)"
        ))
        .bind(part)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let samples = row.samples().map_err(corrupt)?;
            let Some((kept, removed)) = filtered(samples, doomed) else {
                continue;
            };
            deleted.samples += removed;
            match encode_runs(&kept) {
                None => {
                    sqlx::query("DELETE FROM _prom_catalog.head WHERE id = $1")
                        .bind(row.id)
                        .execute(&mut **tx)
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
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
    }

    // The metric's time chunks overlapping the range, one at a time.
    let (first, last) = (ids[0], ids[ids.len() - 1]);
    let chunks: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT id, table_name::text FROM _prom_catalog.chunk
          WHERE metric_id = $1 AND start_time <= $3 AND end_time > $2 ORDER BY start_time",
    )
    .bind(metric_id)
    .bind(start)
    .bind(end)
    .fetch_all(&mut **tx)
    .await?;
    for (chunk_id, table) in chunks {
        // Blocks: rewritten whole when one of them holds a deleted sample.
        let candidates: Vec<(Vec<u8>, Option<Vec<f64>>)> = sqlx::query_as(
            "SELECT data, exceptions FROM _prom_catalog.chunk_block
              WHERE chunk_id = $1 AND last_series >= $4 AND first_series <= $5 AND start_time <= $3 AND end_time >= $2",
        )
        .bind(chunk_id)
        .bind(start)
        .bind(end)
        .bind(first)
        .bind(last)
        .fetch_all(&mut **tx)
        .await?;
        let mut touched = false;
        for (data, exceptions) in &candidates {
            let decoded = codec::decode(data, exceptions.as_deref().unwrap_or(&[])).map_err(corrupt)?;
            if decoded.iter().any(|&(s, t, _)| doomed(s, t)) {
                touched = true;
                break;
            }
        }
        drop(candidates);
        if touched {
            let merged = chunk_block_samples(tx, chunk_id).await?;
            let mut series: Vec<(i64, Vec<(i64, f64)>)> = Vec::with_capacity(merged.len());
            for (id, samples) in merged {
                let before = samples.len();
                let kept: Vec<(i64, f64)> = samples.into_iter().filter(|&(t, _)| !doomed(id, t)).collect();
                deleted.samples += (before - kept.len()) as u64;
                if !kept.is_empty() {
                    series.push((id, kept));
                }
            }
            series.sort_unstable_by_key(|(id, _)| *id);
            sqlx::query("DELETE FROM _prom_catalog.chunk_block WHERE chunk_id = $1")
                .bind(chunk_id)
                .execute(&mut **tx)
                .await?;
            insert_chunk_blocks(tx, chunk_id, &encode_chunk_blocks(&series, raw)).await?;
        }

        // Series chunks of the chunk's table: each one holding a deleted sample is replaced
        // by what is left of it.
        let Some(table) = table else { continue };
        let quoted = quote_ident(&table);
        type ChunkRow = (i64, PgTimestamp, Vec<u8>, Option<Vec<f64>>);
        let rows: Vec<ChunkRow> = sqlx::query_as(&format!(
            "SELECT series_id, start_time, data, exceptions FROM _prom_chunks.{quoted}
              WHERE series_id = ANY($1) AND start_time <= $3 AND end_time >= $2"
        ))
        .bind(ids)
        .bind(start)
        .bind(end)
        .fetch_all(&mut **tx)
        .await?;
        let mut replaced = false;
        for (series, chunk_start, data, exceptions) in rows {
            let decoded = codec::decode(&data, exceptions.as_deref().unwrap_or(&[])).map_err(corrupt)?;
            let before = decoded.len();
            let kept: Vec<(i64, f64)> = decoded
                .into_iter()
                .filter(|&(_, t, _)| !doomed(series, t))
                .map(|(_, t, v)| (t, v))
                .collect();
            if kept.len() == before {
                continue;
            }
            deleted.samples += (before - kept.len()) as u64;
            replaced = true;
            sqlx::query(&format!(
                "DELETE FROM _prom_chunks.{quoted} WHERE series_id = $1 AND start_time = $2"
            ))
            .bind(series)
            .bind(chunk_start)
            .execute(&mut **tx)
            .await?;
            if !kept.is_empty() {
                insert_series_chunks(tx, &table, &[(series, kept)], raw).await?;
            }
        }
        if replaced {
            sqlx::query("UPDATE _prom_catalog.chunk SET rewritten = true, sealed = false WHERE id = $1")
                .bind(chunk_id)
                .execute(&mut **tx)
                .await?;
        }
    }

    // Native histograms: rows, then chunks (a series' chunks never overlap: end time names one).
    deleted.histograms += delete_timed_rows(tx, "histogram", ids, start, end).await?;
    type HistogramChunkRow = (i64, PgTimestamp, Vec<u8>, Vec<f64>);
    let chunks: Vec<HistogramChunkRow> = sqlx::query_as(
        "SELECT series_id, end_time, data, floats FROM _prom_catalog.histogram_chunk
          WHERE series_id = ANY($1) AND start_time <= $3 AND end_time >= $2",
    )
    .bind(ids)
    .bind(start)
    .bind(end)
    .fetch_all(&mut **tx)
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
                .execute(&mut **tx)
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
        .execute(&mut **tx)
        .await?;
    }

    deleted.exemplars += delete_timed_rows(tx, "exemplar", ids, start, end).await?;
    Ok(deleted)
}

/// Deletes the rows of `_prom_catalog.<table>` (a table of this module's choosing, keyed by
/// series and time) of `ids` in `[start, end]`; how many.
async fn delete_timed_rows(
    tx: &mut Transaction<'_, Postgres>,
    table: &'static str,
    ids: &[i64],
    start: PgTimestamp,
    end: PgTimestamp,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(&format!(
        "DELETE FROM _prom_catalog.{table} WHERE series_id = ANY($1) AND time >= $2 AND time <= $3"
    ))
    .bind(ids)
    .bind(start)
    .bind(end)
    .execute(&mut **tx)
    .await?
    .rows_affected())
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
    samples: i32,
}

/// Encodes samples sorted by series then time as one block of runs, as head rows are
/// written; `None` when there are none.
fn encode_runs(samples: &[codec::DecodedSample]) -> Option<Encoded> {
    let min_time = samples.iter().map(|s| s.1).min()?;
    let max_time = samples.iter().map(|s| s.1).max()?;
    let mut encoder = BlockEncoder::new(min_time, false);
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
        let e = encode_runs(&kept).unwrap();
        let back = codec::decode(&e.block.data, &e.block.exceptions).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in back.iter().zip(&kept) {
            assert_eq!((a.0, a.1, a.2.to_bits()), (b.0, b.1, b.2.to_bits()));
        }
        assert_eq!((e.min_time, e.max_time, e.samples), (10, 30, 3));
        assert!(filtered(samples, |_, t| t > 30).is_none());
        assert!(encode_runs(&[]).is_none());
    }
}
