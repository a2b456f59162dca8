//! Compaction: head rows become series chunks, and closed time chunks are sealed into one
//! series chunk per series, or, when small, into chunk blocks in a table all metrics share
//! (`docs/storage.md`). Runs inside the connectors' maintenance, one connector at a time;
//! every batch is one transaction, so an interrupted compaction leaves each sample either in
//! the head or in a series chunk, never in both or neither.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::codec::{self, encode_series, merge_by_precedence, Block, BlockEncoder, CorruptBlock};
use super::read::{split_by_series, StoredHeadRow, HEAD_COLUMNS};
use super::samples::{head_rows, quote_ident, PackedExceptions, PgTimestamp, SampleBatch};

/// The key of the advisory lock that guards a metric's time chunks (taken by chunk creation
/// and retention too).
const CHUNK_LOCK_NAMESPACE: i32 = 7_355_609;

#[derive(Debug, Clone)]
pub struct CompactionOptions {
    /// Head rows written at least this long ago are compacted.
    pub head_age: Duration,
    /// Samples above which a compaction transaction takes no more head rows.
    pub max_batch_samples: usize,
    /// Time chunks that ended at least this long ago are sealed.
    pub seal_after: Duration,
    /// Metrics compacted (and chunks sealed) at once, each on a connection of its own.
    pub workers: usize,
    /// Small head rows written at least this long ago are merged (see [`merge_head`]).
    pub merge_after: Duration,
    /// Head rows with fewer samples than this count as small.
    pub merge_below_samples: usize,
    /// Exemplars kept per series by each run (see [`super::exemplars::trim`]).
    pub exemplars_per_series: usize,
    /// After a metric's chunks are sealed, its series with no sample in this long are packed
    /// into batches ([`super::packing`]).
    pub pack_after: Duration,
}

impl CompactionOptions {
    /// Compaction of the head as the maintenance schedule runs it.
    pub fn scheduled(head_age: Duration, workers: u16) -> Self {
        CompactionOptions {
            head_age,
            max_batch_samples: 2_000_000,
            seal_after: head_age + Duration::from_secs(30 * 60),
            pack_after: head_age + Duration::from_secs(30 * 60),
            workers: usize::from(workers).max(1),
            merge_after: Duration::from_secs(60),
            merge_below_samples: MERGE_BELOW_SAMPLES,
            exemplars_per_series: super::exemplars::DEFAULT_PER_SERIES,
        }
    }

    /// The light pass that runs between maintenance runs ([`merge_small_rows`]), one metric
    /// at a time: rows of fewer than [`LIGHT_MERGE_BELOW_SAMPLES`] samples written at least
    /// `interval` and at least a minute ago (a row written a minute ago has committed, short
    /// of a commit stalled that long; see [`merge_head`]).
    pub fn light_merge(interval: Duration) -> Self {
        CompactionOptions {
            workers: 1,
            merge_after: interval.max(Duration::from_secs(60)),
            merge_below_samples: LIGHT_MERGE_BELOW_SAMPLES,
            ..Self::merge_only()
        }
    }

    /// Only the merging of small head rows, of every age (benchmarks: the head as it stands
    /// between two maintenance runs, once the earlier writes are merged).
    pub fn merge_only() -> Self {
        let century = Duration::from_secs(100 * 365 * 86_400);
        CompactionOptions {
            head_age: century,
            max_batch_samples: 2_000_000,
            seal_after: century,
            pack_after: century,
            workers: 2,
            merge_after: Duration::ZERO,
            merge_below_samples: MERGE_BELOW_SAMPLES,
            exemplars_per_series: super::exemplars::DEFAULT_PER_SERIES,
        }
    }

    /// Everything at once: every head row, every chunk that has ended (tests, benchmarks).
    pub fn everything() -> Self {
        CompactionOptions {
            head_age: Duration::ZERO,
            max_batch_samples: 2_000_000,
            seal_after: Duration::ZERO,
            pack_after: Duration::ZERO,
            workers: 2,
            merge_after: Duration::ZERO,
            merge_below_samples: MERGE_BELOW_SAMPLES,
            exemplars_per_series: super::exemplars::DEFAULT_PER_SERIES,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub head_rows: u64,
    /// Samples taken from the head (repeats included).
    pub samples: u64,
    /// Samples dropped because their chunk lies beyond the metric's retention.
    pub expired: u64,
    pub series_chunks_written: u64,
    pub chunks_sealed: u64,
    /// Series packed into batches once their metric's chunks were sealed.
    pub series_packed: u64,
    /// Rows of chunk blocks written (by compaction into small chunks, and by sealing them).
    pub chunk_blocks_written: u64,
    /// Small head rows merged into bigger ones (and the rows that replaced them).
    pub head_rows_merged: u64,
    pub merged_rows_written: u64,
    /// Native histograms moved from rows into histogram chunks.
    pub histograms: u64,
}

impl CompactionStats {
    fn add(&mut self, o: CompactionStats) {
        self.head_rows += o.head_rows;
        self.samples += o.samples;
        self.expired += o.expired;
        self.series_chunks_written += o.series_chunks_written;
        self.chunks_sealed += o.chunks_sealed;
        self.series_packed += o.series_packed;
        self.chunk_blocks_written += o.chunk_blocks_written;
        self.head_rows_merged += o.head_rows_merged;
        self.merged_rows_written += o.merged_rows_written;
        self.histograms += o.histograms;
    }
}

/// Errors that say the database (or the connection) is in trouble, not that one metric's
/// data is at fault: those end the round. Data exceptions (22), integrity (23), objects
/// gone under us (42), limits (54), corrupt data (XX001) and a lock not had in time (55P03:
/// sealing gives up on a chunk its readers hold) only skip the metric or chunk.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => false,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            !(["22", "23", "42", "54"].iter().any(|c| code.starts_with(c)) || code == "XX001" || code == "55P03")
        }
        _ => true,
    }
}

/// A corrupt block as the database error it is reported as.
pub(super) fn corrupt(e: CorruptBlock) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// Compacts the head and seals closed chunks.
pub async fn compact(pool: &PgPool, options: &CompactionOptions) -> Result<CompactionStats, sqlx::Error> {
    let started = Instant::now();
    let mut stats = CompactionStats::default();
    // Every metric: one index probe each for those with nothing to compact.
    let metrics: Vec<i32> = sqlx::query_scalar("SELECT id FROM _prom_catalog.metric ORDER BY id")
        .fetch_all(pool)
        .await?;
    // A metric that fails (say, a corrupt row) is logged and skipped: the others go on.
    // Metrics are independent (each compaction locks its own metric's chunks), so several
    // are compacted at once.
    let mut failed = 0;
    let mut done = stream::iter(metrics.clone())
        .map(|metric_id| compact_metric(pool, metric_id, options))
        .buffer_unordered(options.workers.max(1));
    while let Some(result) = done.next().await {
        let (metric_stats, ok) = result?;
        stats.add(metric_stats);
        failed += usize::from(!ok);
    }
    let chunks: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT id, metric_id FROM _prom_catalog.chunk
          WHERE NOT sealed AND end_time <= now() - make_interval(secs => $1) ORDER BY metric_id, start_time",
    )
    .bind(options.seal_after.as_secs_f64())
    .fetch_all(pool)
    .await?;
    // A metric's chunks one after the other (they take the metric's lock), metrics at once.
    let mut by_metric: Vec<(i32, Vec<i32>)> = Vec::new();
    for (chunk_id, metric_id) in chunks {
        match by_metric.last_mut() {
            Some((m, ids)) if *m == metric_id => ids.push(chunk_id),
            _ => by_metric.push((metric_id, vec![chunk_id])),
        }
    }
    let mut sealed = stream::iter(by_metric)
        .map(|(metric_id, chunk_ids)| async move {
            let mut results = Vec::with_capacity(chunk_ids.len());
            for chunk_id in chunk_ids {
                let result = seal_chunk(pool, metric_id, chunk_id).await;
                let stop = matches!(&result, Err(e) if is_connection_error(e));
                results.push((Some(chunk_id), result));
                if stop {
                    break;
                }
            }
            // Once a chunk of the metric is sealed, its series that stopped receiving samples
            // go into batches (`docs/series-catalog.md`).
            if results.iter().any(|(_, r)| r.is_ok()) {
                let packed = super::packing::pack_inactive_series(pool, metric_id, options.pack_after)
                    .await
                    .map(|series| CompactionStats {
                        series_packed: series,
                        ..CompactionStats::default()
                    });
                results.push((None, packed));
            }
            (metric_id, results)
        })
        .buffer_unordered(options.workers.max(1));
    while let Some((metric_id, results)) = sealed.next().await {
        for (chunk_id, result) in results {
            match result {
                Ok(done) => stats.add(done),
                Err(e) if is_connection_error(&e) => return Err(e),
                Err(e) => {
                    match chunk_id {
                        Some(chunk_id) => {
                            tracing::warn!(chunk_id, metric_id, error = %e, "sealing a chunk failed; retrying next round")
                        }
                        None => tracing::warn!(
                            metric_id,
                            error = %e,
                            "packing the metric's inactive series failed; retrying after its next sealing"
                        ),
                    }
                    failed += 1;
                }
            }
        }
    }
    if stats.series_packed > 0 {
        super::packing::vacuum_after_packing(pool).await;
    }
    failed += merge_metrics(pool, metrics, options, &mut stats).await?;
    if failed > 0 {
        tracing::warn!(failed, "compaction skipped some metrics or chunks this round");
    }
    if stats.samples > 0 || stats.head_rows_merged > 0 || stats.histograms > 0 || stats.series_packed > 0 {
        tracing::info!(
            samples = stats.samples,
            head_rows = stats.head_rows,
            series_chunks = stats.series_chunks_written,
            sealed = stats.chunks_sealed,
            series_packed = stats.series_packed,
            chunk_blocks = stats.chunk_blocks_written,
            head_rows_merged = stats.head_rows_merged,
            expired = stats.expired,
            histograms = stats.histograms,
            took = ?started.elapsed(),
            "compacted the head"
        );
    }
    Ok(stats)
}

/// Merges the small head rows of `metrics` ([`merge_head`]), several metrics at once; returns
/// how many failed on their data (logged, retried next round).
async fn merge_metrics(
    pool: &PgPool,
    metrics: Vec<i32>,
    options: &CompactionOptions,
    stats: &mut CompactionStats,
) -> Result<usize, sqlx::Error> {
    let mut failed = 0;
    let mut merged = stream::iter(metrics)
        .map(|metric_id| async move { (metric_id, merge_head(pool, metric_id, options).await) })
        .buffer_unordered(options.workers.max(1));
    while let Some((metric_id, result)) = merged.next().await {
        match result {
            Ok(done) => stats.add(done),
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(metric_id, error = %e, "merging a metric's head rows failed; retrying next round");
                failed += 1;
            }
        }
    }
    Ok(failed)
}

/// Only the merging of small head rows, for the metrics that have enough of them (one scan
/// of the head finds those): the light pass that keeps recent samples compact between
/// maintenance runs (`--maintenance.merge-interval`).
pub async fn merge_small_rows(pool: &PgPool, options: &CompactionOptions) -> Result<CompactionStats, sqlx::Error> {
    let started = Instant::now();
    let metrics: Vec<i32> = sqlx::query_scalar(
        "SELECT metric_id FROM _prom_catalog.head
          WHERE samples < $1 AND written_at <= now() - make_interval(secs => $2)
          GROUP BY metric_id HAVING count(*) >= $3 ORDER BY metric_id",
    )
    .bind(i32::try_from(options.merge_below_samples).unwrap_or(i32::MAX))
    .bind(options.merge_after.as_secs_f64())
    .bind(MERGE_AT_LEAST_ROWS as i64)
    .fetch_all(pool)
    .await?;
    let mut stats = CompactionStats::default();
    let failed = merge_metrics(pool, metrics, options, &mut stats).await?;
    if failed > 0 {
        tracing::warn!(failed, "merging skipped some metrics this round");
    }
    if stats.head_rows_merged > 0 {
        tracing::debug!(
            head_rows_merged = stats.head_rows_merged,
            merged_rows = stats.merged_rows_written,
            took = ?started.elapsed(),
            "merged small head rows"
        );
    }
    Ok(stats)
}

/// Every head row of a metric old enough, batch after batch. `Ok((stats, false))` when the
/// metric failed on its data (logged; the caller goes on with the others); `Err` when the
/// database is unreachable.
async fn compact_metric(
    pool: &PgPool,
    metric_id: i32,
    options: &CompactionOptions,
) -> Result<(CompactionStats, bool), sqlx::Error> {
    let mut stats = CompactionStats::default();
    loop {
        match compact_head_batch(pool, metric_id, options).await {
            Ok(done) => {
                let empty = done.head_rows == 0;
                stats.add(done);
                if empty {
                    break;
                }
            }
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => {
                tracing::error!(metric_id, error = %e, "compacting a metric's head failed; skipping it this round");
                return Ok((stats, false));
            }
        }
    }
    loop {
        match super::histograms::compact_batch(pool, metric_id, options.head_age).await {
            Ok(0) => return Ok((stats, true)),
            Ok(taken) => stats.histograms += taken,
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => {
                tracing::error!(metric_id, error = %e, "compacting a metric's native histograms failed; skipping them this round");
                return Ok((stats, false));
            }
        }
    }
}

/// (id, samples, written_at) of the metric's head rows written at least `age` ago, in id
/// order, the first 100,000.
async fn head_candidates(
    conn: &mut PgConnection,
    metric_id: i32,
    age: Duration,
) -> Result<Vec<(i64, i32, PgTimestamp)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, samples, written_at FROM _prom_catalog.head
          WHERE metric_id = $1 AND written_at <= now() - make_interval(secs => $2) ORDER BY id LIMIT 100000",
    )
    .bind(metric_id)
    .bind(age.as_secs_f64())
    .fetch_all(conn)
    .await
}

/// The metric's head rows of the given ids, in id order. The ids go in as a relation, not
/// `id = ANY($2)`: the head has no index on id, and a filter comparing each of a metric's
/// rows with every id of the batch is quadratic.
async fn head_rows_by_id(
    conn: &mut PgConnection,
    metric_id: i32,
    ids: &[i64],
) -> Result<Vec<StoredHeadRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {HEAD_COLUMNS} FROM _prom_catalog.head
           WHERE metric_id = $1 AND id IN (SELECT unnest($2::int8[])) ORDER BY id"
    ))
    .bind(metric_id)
    .bind(ids)
    .fetch_all(conn)
    .await
}

async fn delete_head_rows(conn: &mut PgConnection, metric_id: i32, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM _prom_catalog.head WHERE metric_id = $1 AND id IN (SELECT unnest($2::int8[]))")
        .bind(metric_id)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Head rows with fewer samples than this are merged by maintenance; bigger ones stay as
/// they are.
const MERGE_BELOW_SAMPLES: usize = 1_000;
/// The same for the light pass between maintenance runs: rows of fewer samples cost more
/// than half a byte a sample in row overhead (about 100 bytes a row).
pub const LIGHT_MERGE_BELOW_SAMPLES: usize = 200;
/// Fewest consecutive small rows worth merging.
const MERGE_AT_LEAST_ROWS: usize = 4;
/// Most samples in a merged head row.
const MERGED_ROW_SAMPLES: usize = 20_000;

/// Merges a metric's small head rows written at least `merge_after` ago: each run of at
/// least [`MERGE_AT_LEAST_ROWS`] consecutive rows (in id order) of fewer than
/// `merge_below_samples` samples becomes rows of up to [`MERGED_ROW_SAMPLES`], so that
/// recent data stays compact whatever the write pattern: a metric with a few samples per
/// write batch otherwise costs a row (about 100 bytes) and a run header per series for every
/// batch, until compaction. Rows already big are never rewritten. Each merged row takes the
/// highest id of the consecutive rows it replaces, so that the rule of precedence between
/// head rows (on equal times, the row written first wins) is kept; its `written_at` is the
/// oldest of theirs, so that no sample stays in the head longer.
async fn merge_head(
    pool: &PgPool,
    metric_id: i32,
    options: &CompactionOptions,
) -> Result<CompactionStats, sqlx::Error> {
    let mut stats = CompactionStats::default();
    let mut tx = pool.begin().await?;
    let candidates = head_candidates(&mut tx, metric_id, options.merge_after).await?;
    let small = |c: &(i64, i32, PgTimestamp)| (c.1.max(0) as usize) < options.merge_below_samples;
    if candidates.iter().filter(|c| small(c)).count() < MERGE_AT_LEAST_ROWS {
        return Ok(stats);
    }
    // Consecutive in id order means consecutive among all the metric's rows: a younger row
    // with a lower id (its transaction began earlier) would sit between two candidates; then
    // wait for the next round.
    let last = candidates[candidates.len() - 1].0;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.head WHERE metric_id = $1 AND id <= $2")
        .bind(metric_id)
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
    if before != candidates.len() as i64 {
        return Ok(stats);
    }
    lock_metric_chunks(&mut tx, metric_id).await?;
    let mut start = 0;
    while start < candidates.len() {
        if !small(&candidates[start]) {
            start += 1;
            continue;
        }
        let mut end = start;
        let mut samples = 0usize;
        while end < candidates.len()
            && small(&candidates[end])
            && samples + (candidates[end].1.max(0) as usize) <= MERGED_ROW_SAMPLES
        {
            samples += candidates[end].1.max(0) as usize;
            end += 1;
        }
        let group = &candidates[start..end];
        start = end;
        if group.len() < MERGE_AT_LEAST_ROWS {
            continue;
        }
        let ids: Vec<i64> = group.iter().map(|c| c.0).collect();
        let rows = head_rows_by_id(&mut tx, metric_id, &ids).await?;
        if rows.len() != ids.len() {
            // Gone since the candidates were read (retention): next round.
            continue;
        }
        let mut batch = SampleBatch::default();
        for row in &rows {
            for (series, time, value) in row.samples().map_err(corrupt)? {
                batch.push(series, time, value);
            }
        }
        let merged = head_rows(&batch);
        let [row] = merged.as_slice() else {
            return Err(corrupt(CorruptBlock(
                "a metric's head rows hold samples of other metrics",
            )));
        };
        delete_head_rows(&mut tx, metric_id, &ids).await?;
        let written_at = group.iter().map(|c| c.2).min().expect("a group is never empty");
        sqlx::query(
            "INSERT INTO _prom_catalog.head (id, metric_id, min_time, max_time, samples, written_at, data, exceptions)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ids[ids.len() - 1])
        .bind(metric_id)
        .bind(PgTimestamp::from_unix_ms(row.min_time))
        .bind(PgTimestamp::from_unix_ms(row.max_time))
        .bind(row.samples)
        .bind(written_at)
        .bind(&row.block.data)
        .bind((!row.block.exceptions.is_empty()).then_some(&row.block.exceptions))
        .execute(&mut *tx)
        .await?;
        stats.head_rows_merged += ids.len() as u64;
        stats.merged_rows_written += 1;
    }
    tx.commit().await?;
    Ok(stats)
}

/// A time chunk as compaction needs it.
#[derive(Debug, Clone)]
struct Chunk {
    id: i32,
    start_time: PgTimestamp,
    end_time: PgTimestamp,
    /// `None` once the chunk was sealed into blocks (until late samples need a table again).
    table_name: Option<String>,
    sealed: bool,
    rewritten: bool,
}

const CHUNK_COLUMNS: &str = "id, start_time, end_time, table_name::text AS table_name, sealed, rewritten";

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for Chunk {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Chunk {
            id: row.try_get("id")?,
            start_time: row.try_get("start_time")?,
            end_time: row.try_get("end_time")?,
            table_name: row.try_get("table_name")?,
            sealed: row.try_get("sealed")?,
            rewritten: row.try_get("rewritten")?,
        })
    }
}

/// A stored series chunk.
struct SeriesChunkRow {
    series_id: i64,
    start_time: PgTimestamp,
    end_time: PgTimestamp,
    data: Vec<u8>,
    exceptions: Option<Vec<f64>>,
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for SeriesChunkRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(SeriesChunkRow {
            series_id: row.try_get("series_id")?,
            start_time: row.try_get("start_time")?,
            end_time: row.try_get("end_time")?,
            data: row.try_get("data")?,
            exceptions: row.try_get("exceptions")?,
        })
    }
}

impl SeriesChunkRow {
    fn samples(&self) -> Result<Vec<(i64, f64)>, sqlx::Error> {
        Ok(codec::decode(&self.data, self.exceptions.as_deref().unwrap_or(&[]))
            .map_err(corrupt)?
            .into_iter()
            .map(|(_, t, v)| (t, v))
            .collect())
    }
}

pub(super) async fn lock_metric_chunks(conn: &mut PgConnection, metric_id: i32) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(CHUNK_LOCK_NAMESPACE)
        .bind(metric_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the metric's compression is turned off.
pub(super) async fn raw_values(conn: &mut PgConnection, metric_id: i32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT NOT _prom_catalog.metric_compression($1)")
        .bind(metric_id)
        .fetch_one(conn)
        .await
}

/// One transaction: up to `max_batch_samples` of the metric's oldest head rows into series
/// chunks.
async fn compact_head_batch(
    pool: &PgPool,
    metric_id: i32,
    options: &CompactionOptions,
) -> Result<CompactionStats, sqlx::Error> {
    let mut stats = CompactionStats::default();
    let mut tx = pool.begin().await?;
    let candidates = head_candidates(&mut tx, metric_id, options.head_age).await?;
    let mut ids = Vec::new();
    let mut taken = 0usize;
    for (id, samples, _) in candidates {
        if taken >= options.max_batch_samples {
            break;
        }
        ids.push(id);
        taken += samples.max(0) as usize;
    }
    if ids.is_empty() {
        return Ok(stats);
    }
    lock_metric_chunks(&mut tx, metric_id).await?;
    let raw = raw_values(&mut tx, metric_id).await?;
    let rows = head_rows_by_id(&mut tx, metric_id, &ids).await?;
    stats.head_rows = rows.len() as u64;

    // Per series, one list per head row, in the order written.
    let mut lists: HashMap<i64, Vec<Vec<(i64, f64)>>> = HashMap::new();
    for row in &rows {
        let decoded = row.samples().map_err(corrupt)?;
        stats.samples += decoded.len() as u64;
        split_by_series(decoded, |_| true, |_| true, &mut lists);
    }

    // Each series' samples, cut along the time chunks.
    let mut chunks: Vec<Chunk> = sqlx::query_as(&format!(
        "SELECT {CHUNK_COLUMNS} FROM _prom_catalog.chunk WHERE metric_id = $1 ORDER BY start_time"
    ))
    .bind(metric_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut expired_up_to = i64::MIN;
    // chunk id -> series -> samples
    let mut by_chunk: HashMap<i32, HashMap<i64, Vec<(i64, f64)>>> = HashMap::new();
    let mut series_ids: Vec<i64> = lists.keys().copied().collect();
    series_ids.sort_unstable();
    for series in series_ids {
        let samples = merge_by_precedence(lists.remove(&series).unwrap_or_default());
        for (t, v) in samples {
            if t <= expired_up_to {
                stats.expired += 1;
                continue;
            }
            let chunk_id = match chunk_holding(&chunks, t) {
                Some(id) => id,
                None => {
                    let created: Option<Chunk> = sqlx::query_as(&format!(
                        "SELECT {CHUNK_COLUMNS} FROM _prom_catalog.get_or_create_chunk($1, $2) WHERE id IS NOT NULL"
                    ))
                    .bind(metric_id)
                    .bind(PgTimestamp::from_unix_ms(t))
                    .fetch_optional(&mut *tx)
                    .await?;
                    match created {
                        Some(c) => {
                            let (id, pos) = (c.id, chunks.partition_point(|x| x.start_time < c.start_time));
                            chunks.insert(pos, c);
                            id
                        }
                        None => {
                            expired_up_to = t;
                            stats.expired += 1;
                            continue;
                        }
                    }
                }
            };
            by_chunk
                .entry(chunk_id)
                .or_default()
                .entry(series)
                .or_default()
                .push((t, v));
        }
    }

    for (chunk_id, new) in by_chunk {
        let chunk = chunks.iter().find(|c| c.id == chunk_id).expect("known chunk").clone();
        let (series_chunks, blocks) = merge_into_chunk(&mut tx, &chunk, new, raw).await?;
        stats.series_chunks_written += series_chunks;
        stats.chunk_blocks_written += blocks;
        if chunk.sealed {
            sqlx::query("UPDATE _prom_catalog.chunk SET sealed = false WHERE id = $1")
                .bind(chunk.id)
                .execute(&mut *tx)
                .await?;
        }
    }
    delete_head_rows(&mut tx, metric_id, &ids).await?;
    tx.commit().await?;
    Ok(stats)
}

/// The id of the chunk (of `chunks`, sorted by start) that holds time `t`.
fn chunk_holding(chunks: &[Chunk], t: i64) -> Option<i32> {
    let pos = chunks.partition_point(|c| c.start_time.unix_ms() <= t);
    let c = chunks.get(pos.checked_sub(1)?)?;
    // A chunk's end is exclusive, and may fall between milliseconds only if set by hand.
    (PgTimestamp::from_unix_ms(t) < c.end_time).then_some(c.id)
}

/// Writes `new` samples (per series, ascending) into the chunk. A chunk without a table
/// takes them as chunk blocks appended to its others (reads give the earlier blocks
/// precedence) while it holds less than [`BLOCK_CHUNK_MAX_BYTES`]; past that it gets a table.
/// In a table they are merged with the series chunks they overlap; stored samples win over
/// new ones at equal times. Returns how many series chunks and chunk block rows were written.
/// A chunk whose rows were replaced is marked `rewritten`, so that sealing rewrites its table.
async fn merge_into_chunk(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &Chunk,
    mut new: HashMap<i64, Vec<(i64, f64)>>,
    raw: bool,
) -> Result<(u64, u64), sqlx::Error> {
    let table_name = match &chunk.table_name {
        Some(name) => name.clone(),
        None => {
            let mut series: Vec<(i64, Vec<(i64, f64)>)> = new.drain().filter(|(_, s)| !s.is_empty()).collect();
            series.sort_unstable_by_key(|(id, _)| *id);
            let rows = encode_chunk_blocks(&series, raw);
            let stored = chunk_block_size(tx, chunk.id).await?;
            let adding_bytes: i64 = rows.iter().map(|r| r.bytes() as i64).sum();
            let adding_samples: i64 = rows.iter().map(|r| i64::from(r.samples)).sum();
            if stored.bytes + adding_bytes < BLOCK_CHUNK_MAX_BYTES
                && stored.samples + adding_samples < BLOCK_CHUNK_MAX_SAMPLES
            {
                return Ok((0, insert_chunk_blocks(tx, chunk.id, &rows).await?));
            }
            new = series.into_iter().collect();
            sqlx::query_scalar("SELECT _prom_catalog.chunk_table($1)::text")
                .bind(chunk.id)
                .fetch_one(&mut **tx)
                .await?
        }
    };
    let table = quote_ident(&table_name);
    let series: Vec<i64> = new.keys().copied().collect();
    // Only the series chunks the new samples overlap are read (and replaced).
    let (los, his): (Vec<PgTimestamp>, Vec<PgTimestamp>) = series
        .iter()
        .map(|id| {
            let s = &new[id];
            (
                PgTimestamp::from_unix_ms(s.first().map_or(0, |x| x.0)),
                PgTimestamp::from_unix_ms(s.last().map_or(0, |x| x.0)),
            )
        })
        .unzip();
    let existing: Vec<SeriesChunkRow> = sqlx::query_as(&format!(
        "SELECT c.series_id, c.start_time, c.end_time, c.data, c.exceptions
           FROM _prom_chunks.{table} c JOIN unnest($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS n(s, lo, hi)
             ON c.series_id = n.s AND c.start_time <= n.hi AND c.end_time >= n.lo
          ORDER BY c.series_id, c.start_time"
    ))
    .bind(&series)
    .bind(&los)
    .bind(&his)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored: HashMap<i64, Vec<SeriesChunkRow>> = HashMap::new();
    for row in existing {
        stored.entry(row.series_id).or_default().push(row);
    }
    let (mut delete_ids, mut delete_starts) = (Vec::new(), Vec::new());
    let mut out: Vec<(i64, Vec<(i64, f64)>)> = Vec::with_capacity(new.len());
    let mut series_sorted = series;
    series_sorted.sort_unstable();
    for id in series_sorted {
        let samples = new.remove(&id).unwrap_or_default();
        if samples.is_empty() {
            continue;
        }
        let (lo, hi) = (samples[0].0, samples[samples.len() - 1].0);
        let mut old: Vec<(i64, f64)> = Vec::new();
        for row in stored.remove(&id).unwrap_or_default() {
            if row.start_time.unix_ms() <= hi && row.end_time.unix_ms() >= lo {
                old.extend(row.samples()?);
                delete_ids.push(id);
                delete_starts.push(row.start_time);
            }
        }
        old.sort_by_key(|s| s.0);
        out.push((id, merge_by_precedence(vec![old, samples])));
    }
    if !delete_ids.is_empty() {
        sqlx::query(&format!(
            "DELETE FROM _prom_chunks.{table} c USING unnest($1::int8[], $2::timestamptz[]) AS d(s, t)
              WHERE c.series_id = d.s AND c.start_time = d.t"
        ))
        .bind(&delete_ids)
        .bind(&delete_starts)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE _prom_catalog.chunk SET rewritten = true WHERE id = $1 AND NOT rewritten")
            .bind(chunk.id)
            .execute(&mut **tx)
            .await?;
    }
    insert_series_chunks(tx, &table_name, &out, raw).await?;
    Ok((out.len() as u64, 0))
}

/// The most bytes of block and exceptions one series chunk row holds: rows stay within a
/// page (the columns are stored PLAIN, with no TOAST), and longer series chunks are split.
const MAX_ROW_BYTES: usize = 6_000;

/// Splits a series' samples (non-empty, ascending) into halves, and those into halves, until
/// each part encoded alone takes at most `max_bytes` of block and exceptions and holds at
/// most `max_samples` (a single sample is never split); appends each part with its block.
fn split_to_fit<'a>(
    samples: &'a [(i64, f64)],
    raw: bool,
    max_bytes: usize,
    max_samples: usize,
    out: &mut Vec<(&'a [(i64, f64)], Block)>,
) {
    let times: Vec<i64> = samples.iter().map(|s| s.0).collect();
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let block = encode_series(&times, &values, raw);
    if (block.data.len() + 8 * block.exceptions.len() > max_bytes || samples.len() > max_samples) && samples.len() > 1 {
        let (a, b) = samples.split_at(samples.len() / 2);
        split_to_fit(a, raw, max_bytes, max_samples, out);
        split_to_fit(b, raw, max_bytes, max_samples, out);
        return;
    }
    out.push((samples, block));
}

/// Encodes a series' samples into one or more series chunks of at most [`MAX_ROW_BYTES`]:
/// (first time, last time, samples, block).
fn encode_rows(samples: &[(i64, f64)], raw: bool, out: &mut Vec<(i64, i64, i32, Block)>) {
    let mut parts = Vec::new();
    split_to_fit(samples, raw, MAX_ROW_BYTES, usize::MAX, &mut parts);
    out.extend(
        parts
            .into_iter()
            .map(|(part, block)| (part[0].0, part[part.len() - 1].0, part.len() as i32, block)),
    );
}

/// Writes series chunks into a chunk table, then indexes it if it has grown large enough.
pub(super) async fn insert_series_chunks(
    tx: &mut Transaction<'_, Postgres>,
    table_name: &str,
    chunks: &[(i64, Vec<(i64, f64)>)],
    raw: bool,
) -> Result<(), sqlx::Error> {
    let quoted_table = quote_ident(table_name);
    let mut rows = Vec::new();
    // Parameters stay bounded: a few thousand series per statement.
    for part in chunks.chunks(5_000) {
        let mut ids = Vec::with_capacity(part.len());
        let (mut starts, mut ends, mut counts, mut datas) = (vec![], vec![], vec![], vec![]);
        let mut exceptions = PackedExceptions::default();
        for (id, samples) in part {
            rows.clear();
            encode_rows(samples, raw, &mut rows);
            for (start, end, count, block) in rows.drain(..) {
                ids.push(*id);
                starts.push(PgTimestamp::from_unix_ms(start));
                ends.push(PgTimestamp::from_unix_ms(end));
                counts.push(count);
                exceptions.push(&block.exceptions);
                datas.push(block.data);
            }
        }
        sqlx::query(&format!(
            "INSERT INTO _prom_chunks.{quoted_table} (series_id, start_time, end_time, samples, data, exceptions)
             SELECT u.s, u.lo, u.hi, u.n, u.d, CASE WHEN u.len > 0 THEN $8[u.off + 1 : u.off + u.len] END
               FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::int4[], $5::bytea[], $6::int4[], $7::int4[])
                    AS u(s, lo, hi, n, d, off, len)"
        ))
        .bind(&ids)
        .bind(&starts)
        .bind(&ends)
        .bind(&counts)
        .bind(&datas)
        .bind(&exceptions.offsets)
        .bind(&exceptions.lengths)
        .bind(&exceptions.all)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("SELECT _prom_catalog.index_chunk_table($1)")
        .bind(table_name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A sealed chunk whose samples take less than this (encoded) goes into chunk blocks rather
/// than keeping a table of its own: a chunk table costs about 50 kB whatever it holds (its
/// free-space and visibility maps, its index, its last page), most of the disk of a metric
/// with few series; a chunk block row costs about 70 bytes.
const BLOCK_CHUNK_MAX_BYTES: i64 = 1 << 20;

/// And fewer samples than this: regular series of constant values take a few bytes for
/// millions of samples, and sealing a small chunk decodes it whole.
const BLOCK_CHUNK_MAX_SAMPLES: i64 = 1 << 21;

/// The most samples a chunk block row holds (the decoder takes up to 2^24 a block).
const MAX_BLOCK_ROW_SAMPLES: usize = 1 << 20;

/// Seals a closed time chunk. A small one becomes chunk blocks (rows of
/// `_prom_catalog.chunk_block` holding whole series of the chunk) and its table is dropped; a
/// larger one is rewritten into a fresh table holding one series chunk per series. Rewrites
/// rather than updates in place: a closed chunk takes no more inserts, so the space of deleted
/// rows would never be reused. A chunk that already holds one series chunk per series and no
/// replaced rows is only marked.
async fn seal_chunk(pool: &PgPool, metric_id: i32, chunk_id: i32) -> Result<CompactionStats, sqlx::Error> {
    let mut stats = CompactionStats::default();
    let mut tx = pool.begin().await?;
    // Replacing the table waits for the queries reading it, and queries arriving meanwhile
    // wait behind it: give up after a few seconds rather than stall the metric's readers.
    // (Set after the metric's own lock, which only maintenance and retention take.)
    lock_metric_chunks(&mut tx, metric_id).await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    let Some(chunk): Option<Chunk> = sqlx::query_as(&format!(
        "SELECT {CHUNK_COLUMNS} FROM _prom_catalog.chunk WHERE id = $1 AND NOT sealed"
    ))
    .bind(chunk_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(stats);
    };
    let raw = raw_values(&mut tx, metric_id).await?;
    // What the chunk holds: blocks from an earlier sealing (late samples unsealed it since),
    // and the series chunks of its table.
    let blocks = chunk_block_size(&mut tx, chunk.id).await?;
    let table = table_size_of(&mut tx, &chunk).await?;
    let small =
        blocks.bytes + table.bytes < BLOCK_CHUNK_MAX_BYTES && blocks.samples + table.samples < BLOCK_CHUNK_MAX_SAMPLES;
    if small {
        // Blocks and series chunks alike become packed blocks, unless they already are one
        // compaction's worth of blocks and nothing else.
        if chunk.table_name.is_some() || blocks.rows > 1 {
            let blocks = chunk_block_samples(&mut tx, chunk.id).await?;
            let all = merged_series(&mut tx, chunk.table_name.as_deref(), None, blocks).await?;
            sqlx::query("DELETE FROM _prom_catalog.chunk_block WHERE chunk_id = $1")
                .bind(chunk.id)
                .execute(&mut *tx)
                .await?;
            let rows = encode_chunk_blocks(&all, raw);
            stats.chunk_blocks_written += insert_chunk_blocks(&mut tx, chunk.id, &rows).await?;
            sqlx::query("SELECT _prom_catalog.drop_chunk_table($1)")
                .bind(chunk.id)
                .execute(&mut *tx)
                .await?;
        }
    } else {
        if table.rows > table.series || chunk.rewritten || blocks.rows > 0 {
            let name: String = match &chunk.table_name {
                Some(name) => name.clone(),
                None => {
                    sqlx::query_scalar("SELECT _prom_catalog.chunk_table($1)::text")
                        .bind(chunk.id)
                        .fetch_one(&mut *tx)
                        .await?
                }
            };
            let samples = chunk_block_samples(&mut tx, chunk.id).await?;
            stats.series_chunks_written += rewrite_chunk_table(&mut tx, metric_id, &chunk, &name, samples, raw).await?;
        }
    }
    sqlx::query("UPDATE _prom_catalog.chunk SET sealed = true WHERE id = $1")
        .bind(chunk.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    stats.chunks_sealed = 1;
    Ok(stats)
}

/// What a chunk's blocks, or its table, hold.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    rows: i64,
    /// Distinct series (counted for a table only).
    series: i64,
    /// Bytes of block and exceptions.
    bytes: i64,
    samples: i64,
}

impl From<(i64, i64, i64, i64)> for Held {
    fn from((rows, series, bytes, samples): (i64, i64, i64, i64)) -> Self {
        Held {
            rows,
            series,
            bytes,
            samples,
        }
    }
}

/// What the chunk's blocks hold.
async fn chunk_block_size(tx: &mut Transaction<'_, Postgres>, chunk_id: i32) -> Result<Held, sqlx::Error> {
    sqlx::query_as::<_, (i64, i64, i64, i64)>(
        "SELECT count(*) AS rows, 0::int8 AS series,
                coalesce(sum(octet_length(data) + 8 * coalesce(cardinality(exceptions), 0)), 0)::int8 AS bytes,
                coalesce(sum(samples), 0)::int8 AS samples
           FROM _prom_catalog.chunk_block WHERE chunk_id = $1",
    )
    .bind(chunk_id)
    .fetch_one(&mut **tx)
    .await
    .map(Held::from)
}

/// What the chunk's table holds, if it has one.
async fn table_size_of(tx: &mut Transaction<'_, Postgres>, chunk: &Chunk) -> Result<Held, sqlx::Error> {
    let Some(table) = &chunk.table_name else {
        return Ok(Held::default());
    };
    sqlx::query_as::<_, (i64, i64, i64, i64)>(&format!(
        "SELECT count(*) AS rows, count(DISTINCT series_id) AS series,
                coalesce(sum(octet_length(data) + 8 * coalesce(cardinality(exceptions), 0)), 0)::int8 AS bytes,
                coalesce(sum(samples), 0)::int8 AS samples
           FROM _prom_chunks.{}",
        quote_ident(table)
    ))
    .fetch_one(&mut **tx)
    .await
    .map(Held::from)
}

/// Rewrites the chunk's table `old` into a fresh one with one series chunk per series (split
/// only to fit a page), the samples of `blocks` merged in first (they were stored first), and
/// puts it in the old one's place. Returns the series chunks written.
async fn rewrite_chunk_table(
    tx: &mut Transaction<'_, Postgres>,
    metric_id: i32,
    chunk: &Chunk,
    old: &str,
    mut blocks: HashMap<i64, Vec<(i64, f64)>>,
    raw: bool,
) -> Result<u64, sqlx::Error> {
    let mut written = 0;
    let new_name: String = sqlx::query_scalar("SELECT _prom_catalog.new_chunk_table($1, $2)::text")
        .bind(metric_id)
        .bind(format!("{}_sealed", chunk.id))
        .fetch_one(&mut **tx)
        .await?;
    let mut ids: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT series_id FROM _prom_chunks.{}",
        quote_ident(old)
    ))
    .fetch_all(&mut **tx)
    .await?;
    ids.extend(blocks.keys().copied());
    ids.sort_unstable();
    ids.dedup();
    for part in ids.chunks(5_000) {
        let part_blocks = part.iter().filter_map(|id| blocks.remove_entry(id)).collect();
        let out = merged_series(tx, Some(old), Some(part), part_blocks).await?;
        insert_series_chunks(tx, &new_name, &out, raw).await?;
        written += out.len() as u64;
    }
    sqlx::query("DELETE FROM _prom_catalog.chunk_block WHERE chunk_id = $1")
        .bind(chunk.id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT _prom_catalog.replace_chunk_table($1, $2)")
        .bind(chunk.id)
        .bind(&new_name)
        .execute(&mut **tx)
        .await?;
    Ok(written)
}

/// Every series of the chunk table `table` (only `only`, when given; ascending ids) with its
/// samples merged by precedence: those of `blocks` first, then the series chunks in order.
/// Series with no sample left are dropped.
async fn merged_series(
    tx: &mut Transaction<'_, Postgres>,
    table: Option<&str>,
    only: Option<&[i64]>,
    mut blocks: HashMap<i64, Vec<(i64, f64)>>,
) -> Result<Vec<(i64, Vec<(i64, f64)>)>, sqlx::Error> {
    let table = table.map(quote_ident);
    let rows: Vec<SeriesChunkRow> = match (&table, only) {
        (None, _) => Vec::new(),
        (Some(table), Some(ids)) => {
            sqlx::query_as(&format!(
                "SELECT series_id, start_time, end_time, data, exceptions FROM _prom_chunks.{table}
                  WHERE series_id = ANY($1) ORDER BY series_id, start_time"
            ))
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?
        }
        (Some(table), None) => {
            sqlx::query_as(&format!(
                "SELECT series_id, start_time, end_time, data, exceptions FROM _prom_chunks.{table}
                  ORDER BY series_id, start_time"
            ))
            .fetch_all(&mut **tx)
            .await?
        }
    };
    let mut out: Vec<(i64, Vec<(i64, f64)>)> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let id = rows[i].series_id;
        let mut lists = vec![blocks.remove(&id).unwrap_or_default()];
        while i < rows.len() && rows[i].series_id == id {
            lists.push(rows[i].samples()?);
            i += 1;
        }
        out.push((id, merge_by_precedence(lists)));
    }
    // Series only the blocks hold.
    out.extend(blocks);
    out.sort_unstable_by_key(|(id, _)| *id);
    out.retain(|(_, s)| !s.is_empty());
    Ok(out)
}

/// The samples of a chunk's blocks, per series, in time order; on equal times the block
/// written first wins.
pub(super) async fn chunk_block_samples(
    tx: &mut Transaction<'_, Postgres>,
    chunk_id: i32,
) -> Result<HashMap<i64, Vec<(i64, f64)>>, sqlx::Error> {
    let rows: Vec<(Vec<u8>, Option<Vec<f64>>)> =
        sqlx::query_as("SELECT data, exceptions FROM _prom_catalog.chunk_block WHERE chunk_id = $1 ORDER BY id")
            .bind(chunk_id)
            .fetch_all(&mut **tx)
            .await?;
    let mut lists: HashMap<i64, Vec<Vec<(i64, f64)>>> = HashMap::new();
    for (data, exceptions) in rows {
        let decoded = codec::decode(&data, exceptions.as_deref().unwrap_or(&[])).map_err(corrupt)?;
        split_by_series(decoded, |_| true, |_| true, &mut lists);
    }
    Ok(lists
        .into_iter()
        .map(|(series, lists)| (series, merge_by_precedence(lists)))
        .collect())
}

/// A row of chunk blocks: whole runs of consecutive series.
pub(super) struct ChunkBlockRow {
    first_series: i64,
    last_series: i64,
    start: i64,
    end: i64,
    samples: i32,
    block: Block,
}

impl ChunkBlockRow {
    fn bytes(&self) -> usize {
        self.block.data.len() + 8 * self.block.exceptions.len()
    }
}

/// The most bytes of block and exceptions a chunk block row holds. Rows are packed to fill
/// a page (8192 bytes less the page header, a line pointer, the tuple header, the other
/// columns and the exceptions array's header: about 8,070), since a closed chunk's table is
/// never written again.
const MAX_BLOCK_ROW_BYTES: usize = 8_000;

/// Packs series (ascending ids, each with ascending times) into chunk block rows of at most
/// [`MAX_BLOCK_ROW_BYTES`]; a series too long for one row is split over several.
pub(super) fn encode_chunk_blocks(series: &[(i64, Vec<(i64, f64)>)], raw: bool) -> Vec<ChunkBlockRow> {
    type Piece<'a> = (i64, &'a [(i64, f64)]);
    /// Encodes `pieces` as one row, or as several if the estimate fell short.
    fn flush(pieces: &[Piece<'_>], raw: bool, rows: &mut Vec<ChunkBlockRow>) {
        if pieces.is_empty() {
            return;
        }
        let start = pieces.iter().map(|p| p.1[0].0).min().unwrap_or(0);
        let end = pieces.iter().map(|p| p.1[p.1.len() - 1].0).max().unwrap_or(0);
        let mut encoder = BlockEncoder::new(start, raw);
        let mut samples = 0;
        for (id, run) in pieces {
            let times: Vec<i64> = run.iter().map(|s| s.0).collect();
            let values: Vec<f64> = run.iter().map(|s| s.1).collect();
            encoder.push_run(*id, &times, &values);
            samples += run.len() as i32;
        }
        let block = encoder.finish();
        let too_big = block.data.len() + 8 * block.exceptions.len() > MAX_BLOCK_ROW_BYTES
            || samples as usize > MAX_BLOCK_ROW_SAMPLES;
        if too_big && pieces.len() > 1 {
            let (a, b) = pieces.split_at(pieces.len() / 2);
            flush(a, raw, rows);
            flush(b, raw, rows);
            return;
        }
        rows.push(ChunkBlockRow {
            first_series: pieces[0].0,
            last_series: pieces[pieces.len() - 1].0,
            start,
            end,
            samples,
            block,
        });
    }
    // (series, samples) pieces, each with its size encoded alone plus the few bytes more a
    // run's header costs in a shared block
    let mut pieces: Vec<(Piece<'_>, usize)> = Vec::new();
    let mut parts = Vec::new();
    for (id, samples) in series {
        if !samples.is_empty() {
            split_to_fit(
                samples,
                raw,
                MAX_BLOCK_ROW_BYTES - 40,
                MAX_BLOCK_ROW_SAMPLES,
                &mut parts,
            );
            pieces.extend(
                parts
                    .drain(..)
                    .map(|(part, block)| ((*id, part), block.data.len() + 8 * block.exceptions.len() + 8)),
            );
        }
    }
    let mut rows = Vec::new();
    let mut current: Vec<Piece<'_>> = Vec::new();
    let (mut bytes, mut samples) = (32, 0);
    for (piece, size) in pieces {
        if bytes + size > MAX_BLOCK_ROW_BYTES || samples + piece.1.len() > MAX_BLOCK_ROW_SAMPLES {
            flush(&current, raw, &mut rows);
            current.clear();
            (bytes, samples) = (32, 0);
        }
        samples += piece.1.len();
        current.push(piece);
        bytes += size;
    }
    flush(&current, raw, &mut rows);
    rows
}

/// Writes chunk block rows (from [`encode_chunk_blocks`]) for a chunk; returns how many.
pub(super) async fn insert_chunk_blocks(
    tx: &mut Transaction<'_, Postgres>,
    chunk_id: i32,
    rows: &[ChunkBlockRow],
) -> Result<u64, sqlx::Error> {
    let mut written = 0;
    // Parameters stay bounded: a few thousand rows per statement.
    for part in rows.chunks(2_000) {
        let (mut firsts, mut lasts, mut starts, mut ends, mut counts) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut datas, mut exceptions) = (vec![], PackedExceptions::default());
        for row in part {
            firsts.push(row.first_series);
            lasts.push(row.last_series);
            starts.push(PgTimestamp::from_unix_ms(row.start));
            ends.push(PgTimestamp::from_unix_ms(row.end));
            counts.push(row.samples);
            datas.push(row.block.data.as_slice());
            exceptions.push(&row.block.exceptions);
        }
        sqlx::query(
            "INSERT INTO _prom_catalog.chunk_block
                    (chunk_id, first_series, last_series, start_time, end_time, samples, data, exceptions)
             SELECT $1, u.f, u.l, u.lo, u.hi, u.n, u.d, CASE WHEN u.len > 0 THEN $10[u.off + 1 : u.off + u.len] END
               FROM unnest($2::int8[], $3::int8[], $4::timestamptz[], $5::timestamptz[], $6::int4[], $7::bytea[],
                           $8::int4[], $9::int4[]) AS u(f, l, lo, hi, n, d, off, len)",
        )
        .bind(chunk_id)
        .bind(&firsts)
        .bind(&lasts)
        .bind(&starts)
        .bind(&ends)
        .bind(&counts)
        .bind(&datas)
        .bind(&exceptions.offsets)
        .bind(&exceptions.lengths)
        .bind(&exceptions.all)
        .execute(&mut **tx)
        .await?;
        written += part.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_rows(series: &[(i64, Vec<(i64, f64)>)], raw: bool) -> Vec<ChunkBlockRow> {
        let rows = encode_chunk_blocks(series, raw);
        let mut decoded: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
        for row in &rows {
            assert!(row.bytes() <= MAX_BLOCK_ROW_BYTES, "{} bytes", row.bytes());
            assert!(row.samples as usize <= MAX_BLOCK_ROW_SAMPLES, "{} samples", row.samples);
            let samples = codec::decode(&row.block.data, &row.block.exceptions).unwrap();
            assert_eq!(samples.len(), row.samples as usize);
            for (s, t, v) in samples {
                assert!((row.first_series..=row.last_series).contains(&s));
                assert!((row.start..=row.end).contains(&t));
                decoded.entry(s).or_default().push((t, v));
            }
        }
        for (id, samples) in series {
            let got = &decoded[id];
            assert_eq!(got.len(), samples.len(), "series {id}");
            assert!(got
                .iter()
                .zip(samples)
                .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits()));
        }
        rows
    }

    #[test]
    fn chunk_blocks_fill_pages_and_split_what_does_not_fit() {
        // 300 small series share rows; one long series of raw values is split over several.
        let mut series: Vec<(i64, Vec<(i64, f64)>)> = (0..300)
            .map(|i| (1000 + i, (0..120).map(|k| (k * 15_000, (i * 7 + k) as f64)).collect()))
            .collect();
        series.push((
            5000,
            (0..3000)
                .map(|k| (k * 15_000, f64::from_bits(0x3ff0_0000_0000_0001 + k as u64)))
                .collect(),
        ));
        let rows = check_rows(&series, false);
        let long = rows
            .iter()
            .filter(|r| r.first_series <= 5000 && r.last_series >= 5000)
            .count();
        assert!(long >= 3, "3000 raw values take {long} rows");
        let total: usize = rows.iter().map(|r| r.bytes()).sum();
        assert!(
            rows.len() <= total / 7000 + 2,
            "{} rows for {total} bytes: pages are filled",
            rows.len()
        );
        check_rows(&series, true);
    }

    #[test]
    fn chunk_block_rows_hold_at_most_a_million_samples() {
        // Constant series on a regular grid cost a few bytes for any number of samples.
        let series: Vec<(i64, Vec<(i64, f64)>)> = (0..6)
            .map(|i| (i, (0..400_000).map(|k| (k * 1_000, 1.0)).collect()))
            .collect();
        let rows = check_rows(&series, false);
        assert!(rows.len() >= 3, "{} rows for 2.4 million samples", rows.len());
    }
}
