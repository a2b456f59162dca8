//! Where series ids are resolved: label sets to series ids, from the cache, or in batches
//! from PostgreSQL, which creates metrics, labels, label positions and series on first
//! sight. New series are built here, as the arrays of label ids that the catalog stores, from
//! cached label ids and positions (migration 7): PostgreSQL is asked only for what this
//! connector has not seen yet, then inserts the series.

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, Transaction};

use super::series_cache::{IdCache, SeriesCache, SeriesId};
use super::StorageError;
use crate::model::Series;

pub struct SeriesResolver {
    pool: PgPool,
    cache: SeriesCache,
    /// Label ids by `name 0xFF value`.
    labels: IdCache<i32>,
    /// (metric id, position) by `metric name 0xFF label name`.
    positions: IdCache<(i32, i32)>,
}

/// What one cache lookup found, for the connector's own metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResolveStats {
    pub cache_hits: usize,
    pub cache_misses: usize,
}

/// The series of a request as the caches know them: `ids[i]` is series i's id, 0 for the
/// series still to be created ([`SeriesResolver::create`]).
#[derive(Debug, Default)]
pub struct Resolution {
    pub ids: Vec<SeriesId>,
    /// (index into the request's series, identity) of the series not in the cache.
    missing: Vec<(usize, Vec<u8>)>,
    pub stats: ResolveStats,
}

impl Resolution {
    /// Whether every series has its id (no series to create).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Ids a transaction created or found, to be cached once it has committed (not before: ids
/// of a transaction that rolls back do not exist).
#[derive(Debug, Default)]
pub struct Created {
    series: Vec<(Vec<u8>, SeriesId)>,
    labels: Vec<(Vec<u8>, i32)>,
}

impl SeriesResolver {
    pub fn new(pool: PgPool, cache_entries: usize) -> Self {
        SeriesResolver {
            pool,
            cache: SeriesCache::new(cache_entries),
            labels: IdCache::new(cache_entries),
            positions: IdCache::new(cache_entries),
        }
    }

    pub fn cached_series(&self) -> usize {
        self.cache.len()
    }

    /// The ids the cache knows, and which series are missing.
    pub fn lookup(&self, series: &[Series]) -> Resolution {
        let mut resolution = Resolution {
            ids: Vec::with_capacity(series.len()),
            ..Default::default()
        };
        for (i, s) in series.iter().enumerate() {
            let identity = s.identity();
            match self.cache.get(&identity) {
                Some(id) => {
                    resolution.stats.cache_hits += 1;
                    resolution.ids.push(id);
                }
                None => {
                    resolution.stats.cache_misses += 1;
                    resolution.ids.push(0);
                    resolution.missing.push((i, identity));
                }
            }
        }
        resolution
    }

    /// Creates (or finds) the missing series of `resolution` and fills in their ids, in a
    /// transaction it returns open: the caller adds the samples that need them and commits,
    /// then passes `Created` to [`SeriesResolver::remember`]. Metrics and label positions are
    /// created beforehand in transactions of their own (they involve view changes), and
    /// before the returned one begins, so that a request never holds one connection while
    /// waiting for another.
    pub async fn create(
        &self,
        series: &[Series],
        resolution: &mut Resolution,
    ) -> Result<(Transaction<'static, Postgres>, Created), StorageError> {
        let missing = std::mem::take(&mut resolution.missing);
        // What this batch needs, with what the caches know: keys are "metric 0xFF label name"
        // for positions and "label name 0xFF value" for labels (0xFF occurs in no UTF-8 text).
        let mut positions: HashMap<Vec<u8>, Option<(i32, i32)>> = HashMap::new();
        let mut labels: HashMap<Vec<u8>, Option<i32>> = HashMap::new();
        for (i, _) in &missing {
            let s = &series[*i];
            let metric = s.metric_name().as_bytes();
            for l in &s.labels {
                let key = joined(metric, &l.name);
                if let std::collections::hash_map::Entry::Vacant(e) = positions.entry(key) {
                    let known = self.positions.get(e.key());
                    e.insert(known);
                }
                let key = joined(&l.name, &l.value);
                if let std::collections::hash_map::Entry::Vacant(e) = labels.entry(key) {
                    let known = self.labels.get(e.key());
                    e.insert(known);
                }
            }
        }
        self.fetch_positions(&mut positions).await?;
        let mut tx = self.pool.begin().await?;
        let mut created = Created {
            labels: fetch_labels(&mut tx, &mut labels).await?,
            series: Vec::with_capacity(missing.len()),
        };

        // Each series once (a request may repeat one, a sample per entry): `unique[n]` is the
        // first entry of the n-th distinct series, `slot[k]` the distinct series of entry k.
        let mut first_of: HashMap<&[u8], usize> = HashMap::with_capacity(missing.len());
        let mut unique: Vec<usize> = Vec::with_capacity(missing.len());
        let slot: Vec<usize> = missing
            .iter()
            .enumerate()
            .map(|(k, (_, identity))| {
                *first_of.entry(identity.as_slice()).or_insert_with(|| {
                    unique.push(k);
                    unique.len() - 1
                })
            })
            .collect();

        // The dense labels array of each series: label ids by position, 0 for a key it lacks.
        let mut wanted: Vec<(i32, Vec<i32>)> = Vec::with_capacity(unique.len());
        for &k in &unique {
            let s = &series[missing[k].0];
            let metric = s.metric_name().as_bytes();
            let mut metric_id = 0;
            let mut array: Vec<i32> = Vec::with_capacity(s.labels.len());
            for l in &s.labels {
                let (m, pos) = positions[&joined(metric, &l.name)].ok_or_else(missing_id)?;
                let id = labels[&joined(&l.name, &l.value)].ok_or_else(missing_id)?;
                let slot = usize::try_from(pos - 1).map_err(|_| missing_id())?;
                if array.len() <= slot {
                    array.resize(slot + 1, 0);
                }
                array[slot] = id;
                metric_id = m;
            }
            wanted.push((metric_id, array));
        }
        // Sent in labels order, so that concurrent creators wait on each other in one order.
        let mut order: Vec<usize> = (0..wanted.len()).collect();
        order.sort_by(|&a, &b| wanted[a].1.cmp(&wanted[b].1));
        let (mut metric_ids, mut counts, mut flat) = (vec![], vec![], vec![]);
        for &n in &order {
            metric_ids.push(wanted[n].0);
            counts.push(wanted[n].1.len() as i32);
            flat.extend_from_slice(&wanted[n].1);
        }
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.create_series($1, $2, $3)")
                .bind(metric_ids)
                .bind(counts)
                .bind(flat)
                .fetch_all(&mut *tx)
                .await?;
        let mut ids = vec![None; unique.len()];
        for (sent, id) in rows {
            if let Some(&n) = order.get(sent as usize) {
                ids[n] = Some(id);
            }
        }
        for ((i, identity), n) in missing.into_iter().zip(slot) {
            let id = ids[n].ok_or_else(|| {
                StorageError::Unavailable(format!("database returned no id for series {i} of the request"))
            })?;
            resolution.ids[i] = id;
            created.series.push((identity, id));
        }
        Ok((tx, created))
    }

    /// Caches what a committed transaction created; returns how many series entries had to
    /// be evicted to make room.
    pub fn remember(&self, created: Created) -> usize {
        for (key, id) in created.labels {
            self.labels.insert(key, id);
        }
        created
            .series
            .into_iter()
            .map(|(identity, id)| self.cache.insert(identity, id))
            .sum()
    }

    /// Fills in the metric id and position of every (metric, label name) pair not cached,
    /// creating what is missing in a transaction of its own, and caches them.
    async fn fetch_positions(&self, positions: &mut HashMap<Vec<u8>, Option<(i32, i32)>>) -> Result<(), StorageError> {
        let found = fetch_unknown(
            &self.pool,
            "SELECT idx, metric_id, pos FROM _prom_catalog.get_or_create_label_positions($1, $2)",
            positions,
            |(n, metric_id, pos): (i32, i32, i32)| (n, (metric_id, pos)),
        )
        .await?;
        for (key, position) in found {
            self.positions.insert(key, position);
        }
        Ok(())
    }
}

/// Fills in the id of every label pair not cached, creating labels in `tx`; returns them,
/// to be cached once `tx` has committed.
async fn fetch_labels(
    tx: &mut sqlx::PgConnection,
    labels: &mut HashMap<Vec<u8>, Option<i32>>,
) -> Result<Vec<(Vec<u8>, i32)>, StorageError> {
    fetch_unknown(
        tx,
        "SELECT idx, label_id FROM _prom_catalog.get_or_create_label_ids($1, $2)",
        labels,
        |(n, id): (i32, i32)| (n, id),
    )
    .await
}

/// Fills in the entries of `wanted` not known yet (keys are [`joined`] pairs) through
/// `query`, which takes the pairs' two strings as two arrays and answers with `idx` (the
/// pair's place, from 0) and its value, as `row` reads them; returns what it found.
async fn fetch_unknown<'e, V: Copy, R>(
    executor: impl sqlx::PgExecutor<'e>,
    query: &'static str,
    wanted: &mut HashMap<Vec<u8>, Option<V>>,
    row: impl Fn(R) -> (i32, V),
) -> Result<Vec<(Vec<u8>, V)>, StorageError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let unknown: Vec<Vec<u8>> = wanted
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    if unknown.is_empty() {
        return Ok(vec![]);
    }
    let (firsts, seconds): (Vec<String>, Vec<String>) = unknown
        .iter()
        .map(|k| {
            let (a, b) = split(k);
            (a.to_owned(), b.to_owned())
        })
        .unzip();
    let rows: Vec<R> = sqlx::query_as(query)
        .bind(firsts)
        .bind(seconds)
        .fetch_all(executor)
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    for r in rows {
        let (n, value) = row(r);
        if let Some(key) = unknown.get(n as usize) {
            wanted.insert(key.clone(), Some(value));
            found.push((key.clone(), value));
        }
    }
    Ok(found)
}

/// `a 0xFF b`: a cache key of two UTF-8 strings.
fn joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + 1 + b.len());
    key.extend_from_slice(a);
    key.push(0xff);
    key.extend_from_slice(b);
    key
}

/// The two strings of a [`joined`] key.
fn split(key: &[u8]) -> (&str, &str) {
    let at = key.iter().position(|&b| b == 0xff).unwrap_or(key.len());
    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or_default()
    }
    (text(&key[..at]), text(key.get(at + 1..).unwrap_or_default()))
}

fn missing_id() -> StorageError {
    StorageError::Unavailable(
        "the database returned no id for a label of a new series; the request can be retried".into(),
    )
}
