//! Where series ids are resolved: label sets to series ids, from the cache, or in batches
//! from PostgreSQL, which creates metrics, labels, label positions and series on first
//! sight. New series are built here, as the arrays of label ids that the catalog stores, from
//! cached label ids and positions (migration 7): PostgreSQL is asked only for what this
//! connector has not seen yet, then inserts the series: those holding a recent label (a new
//! pod's, say) without lookups, by one COPY of rows encoded in [`super::copy`] (docs/storage.md,
//! "Recent series by COPY").

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};

use foldhash::{HashMap as FastMap, HashMapExt};

use sqlx::{PgPool, Postgres, Transaction};

use super::series_cache::{IdCache, SeriesCache, SeriesId};
use super::StorageError;
use crate::model::Series;

pub struct SeriesResolver {
    pool: PgPool,
    /// The recent label floor last read (migration 28): series holding a label above it are
    /// created without lookups. It only rises.
    label_floor: AtomicI32,
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

    /// Leaves out the missing series in `refused` (by identity, with why): they are not
    /// created and their ids stay 0. Returns each entry of the request left out, by index.
    pub fn leave_out<R: Clone>(&mut self, refused: &HashMap<Vec<u8>, R>) -> Vec<(usize, R)> {
        let mut left_out = Vec::new();
        self.missing.retain(|(i, identity)| match refused.get(identity) {
            Some(why) => {
                left_out.push((*i, why.clone()));
                false
            }
            None => true,
        });
        left_out
    }
}

/// The distinct series among missing entries: `unique[n]` is the first entry of the n-th
/// distinct series, `slot[k]` the distinct series of entry k (a request may repeat a series,
/// a sample per entry).
fn distinct(missing: &[(usize, Vec<u8>)]) -> (Vec<usize>, Vec<usize>) {
    let mut first_of: FastMap<&[u8], usize> = FastMap::with_capacity(missing.len());
    let mut unique: Vec<usize> = Vec::with_capacity(missing.len());
    let slot = missing
        .iter()
        .enumerate()
        .map(|(k, (_, identity))| {
            *first_of.entry(identity.as_slice()).or_insert_with(|| {
                unique.push(k);
                unique.len() - 1
            })
        })
        .collect();
    (unique, slot)
}

/// A series missing from the cache and not in the database: (index into the request, its
/// metric's id if the metric exists, its identity).
pub type NewSeries = (usize, Option<i32>, Vec<u8>);

/// Ids a transaction created or found, to be cached once it has committed (not before: ids
/// of a transaction that rolls back do not exist).
#[derive(Debug, Default)]
pub struct Created {
    series: Vec<(Vec<u8>, SeriesId)>,
    labels: Vec<(Vec<u8>, i32)>,
    /// Whether another writer was creating some of the same series at the same moment (the
    /// first transaction was rolled back and the series looked up in a second one).
    pub conflicted: bool,
}

impl Created {
    /// Adds what another lookup found.
    pub fn merge(&mut self, other: Created) {
        self.series.extend(other.series);
        self.labels.extend(other.labels);
        self.conflicted |= other.conflicted;
    }
}

impl SeriesResolver {
    pub fn new(pool: PgPool, cache_entries: usize) -> Self {
        SeriesResolver {
            pool,
            label_floor: AtomicI32::new(0),
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
        // One buffer for the identities of the series found (almost all of them): only those
        // missing are kept, and so allocated.
        let mut identity = Vec::new();
        for (i, s) in series.iter().enumerate() {
            s.identity_into(&mut identity);
            match self.cache.get(&identity) {
                Some(id) => {
                    resolution.stats.cache_hits += 1;
                    resolution.ids.push(id);
                }
                None => {
                    resolution.stats.cache_misses += 1;
                    resolution.ids.push(0);
                    resolution.missing.push((i, identity.clone()));
                }
            }
        }
        resolution
    }

    /// With series limits, before anything is created: which of the series missing from the
    /// cache exist, looked up without creating anything (their metric, label positions,
    /// labels and series all found: `existing_series`, migration 20). Those found get their
    /// ids and leave the missing ones; the ids are for [`SeriesResolver::remember`] once the
    /// request commits. Returns the others, new for sure: (index into the request, metric
    /// id if the metric exists, identity), the first entry of each distinct series.
    pub async fn existing(
        &self,
        series: &[Series],
        resolution: &mut Resolution,
    ) -> Result<(Created, Vec<NewSeries>), StorageError> {
        let missing = std::mem::take(&mut resolution.missing);
        let (unique, slot) = distinct(&missing);
        let (mut metrics, mut counts, mut keys, mut values) = (vec![], vec![], vec![], vec![]);
        for &k in &unique {
            let s = &series[missing[k].0];
            metrics.push(s.metric_name());
            counts.push(s.labels.len() as i32);
            keys.extend(s.labels.iter().map(|l| l.name()));
            values.extend(s.labels.iter().map(|l| l.value()));
        }
        let rows: Vec<(i32, Option<i32>, Option<i64>)> =
            sqlx::query_as("SELECT idx, metric_id, series_id FROM _prom_catalog.existing_series($1, $2, $3, $4)")
                .bind(&metrics)
                .bind(&counts)
                .bind(&keys)
                .bind(&values)
                .fetch_all(&self.pool)
                .await?;
        let mut found: Vec<(Option<i32>, Option<i64>)> = vec![(None, None); unique.len()];
        for (n, metric, id) in rows {
            if let Some(slot) = usize::try_from(n).ok().and_then(|n| found.get_mut(n)) {
                *slot = (metric, id);
            }
        }
        let mut created = Created::default();
        let mut new = Vec::new();
        let mut still_missing = Vec::with_capacity(missing.len());
        for (k, ((i, identity), n)) in missing.into_iter().zip(slot).enumerate() {
            match found[n] {
                (_, Some(id)) => {
                    resolution.ids[i] = id;
                    created.series.push((identity, id));
                }
                (metric, None) => {
                    if unique[n] == k {
                        new.push((i, metric, identity.clone()));
                    }
                    still_missing.push((i, identity));
                }
            }
        }
        resolution.missing = still_missing;
        Ok((created, new))
    }

    /// Creates (or finds) the missing series of `resolution` and fills in their ids, in a
    /// transaction it returns open: the caller adds the samples that need them and commits,
    /// then passes `Created` to [`SeriesResolver::remember`]. Metrics and label positions
    /// (they involve view changes) and labels (every remote-write shard wants a new pod's
    /// labels at once) are created beforehand in transactions of their own, and before the
    /// returned one begins, so that a request never holds one connection while waiting for
    /// another. The series of a label above the recent label floor are created without
    /// lookups (ids from `draw_recent_series_ids`, rows by COPY: migration 30), the others by
    /// `create_series`.
    pub async fn create(
        &self,
        series: &[Series],
        resolution: &mut Resolution,
    ) -> Result<(Transaction<'static, Postgres>, Created), StorageError> {
        let missing = std::mem::take(&mut resolution.missing);
        let (unique, slot) = distinct(&missing);

        // What these series need, with what the caches know: keys are "metric 0xFF label
        // name" for positions and "label name 0xFF value" for labels (0xFF occurs in no UTF-8
        // text). `needs[n]` holds, for each label of distinct series n, its two keys' places.
        let mut positions: Keys<(i32, i32)> = Keys::default();
        let mut labels: Keys<i32> = Keys::default();
        let mut scratch = Vec::new();
        let needs: Vec<Vec<(usize, usize)>> = unique
            .iter()
            .map(|&k| {
                let s = &series[missing[k].0];
                let metric = s.metric_name().as_bytes();
                s.labels
                    .iter()
                    .map(|l| {
                        join_into(&mut scratch, metric, &l.name);
                        let p = positions.place(&scratch, &self.positions);
                        join_into(&mut scratch, &l.name, &l.value);
                        (p, labels.place(&scratch, &self.labels))
                    })
                    .collect()
            })
            .collect();
        self.fetch_positions(&mut positions).await?;
        // Labels are created in a transaction of their own, which commits at once: the other
        // writers that want a new label (every shard wants a new pod's) wait for that
        // statement only, not for this request's series and samples.
        let labels_found = fetch_labels(&self.pool, &mut labels).await?;
        let mut tx = self.pool.begin().await?;
        let mut created = Created {
            labels: labels_found,
            series: Vec::with_capacity(missing.len()),
            conflicted: false,
        };

        // The dense labels array of each series: label ids by position, 0 for a key it lacks;
        // and its highest label id.
        let mut wanted = SeriesArrays::default();
        for need in &needs {
            let mut metric_id = 0;
            let mut array: Vec<i32> = Vec::with_capacity(need.len());
            for &(p, l) in need {
                let (m, pos) = positions.values[p].ok_or_else(missing_id)?;
                let id = labels.values[l].ok_or_else(missing_id)?;
                let slot = usize::try_from(pos - 1).map_err(|_| missing_id())?;
                if array.len() <= slot {
                    array.resize(slot + 1, 0);
                }
                array[slot] = id;
                metric_id = m;
            }
            wanted.push(metric_id, &array);
        }
        // Series holding a label newer than the floor last seen are created without lookups
        // (migration 28); the database answers those it does not take for recent (the floor
        // rose since) with no id, and they join the others, which create_series looks up
        // and creates. Ids are drawn in the order of the request within each statement (the
        // order series are read in, as Prometheus' head reads them in the order it created
        // them).
        let floor = self.label_floor.load(Ordering::Relaxed);
        let mut ids: Vec<Option<SeriesId>> = vec![None; unique.len()];
        let recent: Vec<usize> = (0..wanted.len()).filter(|&n| wanted.highest[n] > floor).collect();
        if !recent.is_empty() {
            let subset = wanted.select(&recent);
            let recent_ids = match self.copy_recent(&mut tx, &subset).await {
                Ok(recent_ids) => recent_ids,
                Err(e) if is_creation_conflict(&e) => {
                    // Another writer created some of these series at the same moment (or two
                    // of them are one): this transaction is undone, the ids it drew are not
                    // reused, and create_recent_series finds the other writer's series.
                    tx.rollback().await?;
                    tx = self.pool.begin().await?;
                    created.conflicted = true;
                    self.insert_recent(&mut tx, &subset).await?
                }
                // The rows are the connector's own (ids drawn, labels resolved): a failure to
                // write them says nothing about the request's data, so it is one to retry
                // (a 5xx), never a refusal that would make Prometheus drop the samples.
                Err(e) => {
                    return Err(match StorageError::from(e) {
                        StorageError::Rejected(m) => StorageError::Unavailable(format!("writing new series: {m}")),
                        other => other,
                    })
                }
            };
            for (&n, id) in recent.iter().zip(recent_ids) {
                ids[n] = id;
            }
        }
        let rest: Vec<usize> = (0..wanted.len()).filter(|&n| ids[n].is_none()).collect();
        if !rest.is_empty() {
            let subset = wanted.select(&rest);
            let rows: Vec<(i32, i64)> =
                sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.create_series($1, $2, $3)")
                    .bind(&subset.metric_ids)
                    .bind(&subset.counts)
                    .bind(&subset.flat)
                    .fetch_all(&mut *tx)
                    .await?;
            for (sent, id) in rows {
                if let Some(&n) = usize::try_from(sent).ok().and_then(|k| rest.get(k)) {
                    ids[n] = Some(id);
                }
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

    /// Draws the ids of the series of `recent` whose recent label is above the floor
    /// (`draw_recent_series_ids`, migration 30) and writes those series into series_fresh
    /// with COPY; answers each series' id, `None` for those the floor no longer takes for
    /// recent. A series another writer created meanwhile fails the COPY (a conflict at
    /// `series_fresh`'s unique index, or a deadlock with it), which leaves `tx` aborted.
    async fn copy_recent(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        recent: &SeriesArrays,
    ) -> Result<Vec<Option<i64>>, sqlx::Error> {
        let (ids, label_floor): (Vec<Option<i64>>, Option<i32>) =
            sqlx::query_as("SELECT series_ids, label_floor FROM _prom_catalog.draw_recent_series_ids($1, $2)")
                .bind(&recent.metric_ids)
                .bind(&recent.highest)
                .fetch_one(&mut **tx)
                .await?;
        let ids = self
            .answered("draw_recent_series_ids", ids, label_floor, recent.len())
            .map_err(sqlx::Error::Protocol)?;
        // In one order, the labels', so that two connectors copying some of the same series
        // wait for each other in one order (create_recent_series inserts in another: a
        // deadlock with it, or on one row two writers insert at once, ends in 40P01 after
        // deadlock_timeout, and the request's series are then looked up).
        let mut rows: Vec<(i64, usize)> = ids
            .iter()
            .enumerate()
            .filter_map(|(n, id)| id.map(|id| (id, n)))
            .collect();
        if rows.is_empty() {
            return Ok(ids);
        }
        rows.sort_unstable_by(|a, b| recent.labels(a.1).cmp(recent.labels(b.1)));
        let body = super::copy::series_rows(rows.iter().map(|&(id, n)| (id, recent.metric_ids[n], recent.labels(n))));
        let mut copy = tx
            .copy_in_raw("COPY _prom_catalog.series_fresh (id, metric_id, labels) FROM STDIN (FORMAT binary)")
            .await?;
        copy.send(body).await?;
        copy.finish().await?;
        Ok(ids)
    }

    /// The series of `recent` created as create_recent_series does (migration 28), which
    /// finds those another writer created meanwhile; answers each series' id, `None` for
    /// those the floor no longer takes for recent.
    async fn insert_recent(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        recent: &SeriesArrays,
    ) -> Result<Vec<Option<i64>>, StorageError> {
        let (ids, label_floor): (Vec<Option<i64>>, Option<i32>) =
            sqlx::query_as("SELECT series_ids, label_floor FROM _prom_catalog.create_recent_series($1, $2, $3, $4)")
                .bind(&recent.metric_ids)
                .bind(&recent.counts)
                .bind(&recent.flat)
                .bind(&recent.highest)
                .fetch_one(&mut **tx)
                .await?;
        self.answered("create_recent_series", ids, label_floor, recent.len())
            .map_err(StorageError::Unavailable)
    }

    /// Learns the floor a function of recent series answered, and checks that it answered an
    /// id (or none) for each of the `series` it was given.
    fn answered(
        &self,
        function: &str,
        ids: Vec<Option<i64>>,
        label_floor: Option<i32>,
        series: usize,
    ) -> Result<Vec<Option<i64>>, String> {
        if let Some(floor) = label_floor {
            self.label_floor.fetch_max(floor, Ordering::Relaxed);
        }
        if ids.len() != series {
            return Err(format!("{function} answered {} ids for {series} series", ids.len()));
        }
        Ok(ids)
    }

    /// Caches what a committed transaction created; returns how many series entries had to
    /// be evicted to make room.
    pub fn remember(&self, created: Created) -> usize {
        self.labels.insert_many(created.labels);
        self.cache.insert_many(created.series)
    }

    /// Fills in the metric id and position of every (metric, label name) pair not cached,
    /// creating what is missing in a transaction of its own, and caches them.
    async fn fetch_positions(&self, positions: &mut Keys<(i32, i32)>) -> Result<(), StorageError> {
        let found = fetch_unknown(
            &self.pool,
            "SELECT idx, metric_id, pos FROM _prom_catalog.get_or_create_label_positions($1, $2)",
            positions,
            |(n, metric_id, pos): (i32, i32, i32)| (n, (metric_id, pos)),
        )
        .await?;
        self.positions.insert_many(found);
        Ok(())
    }
}

/// The distinct keys a batch of new series needs, each with its value once known.
struct Keys<V> {
    place_of: FastMap<Vec<u8>, usize>,
    keys: Vec<Vec<u8>>,
    values: Vec<Option<V>>,
}

impl<V> Default for Keys<V> {
    fn default() -> Self {
        Keys {
            place_of: FastMap::new(),
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<V: Copy> Keys<V> {
    /// The place of `key`, added with what `cache` knows of it when first seen (the key is
    /// copied only then: most keys of a batch repeat).
    fn place(&mut self, key: &[u8], cache: &IdCache<V>) -> usize {
        if let Some(&place) = self.place_of.get(key) {
            return place;
        }
        let place = self.keys.len();
        self.place_of.insert(key.to_vec(), place);
        self.keys.push(key.to_vec());
        self.values.push(cache.get(key));
        place
    }
}

/// Series to create, as create_series takes them: metric ids, label counts and the labels
/// arrays end to end; and each series' highest label id (create_recent_series' recent label).
#[derive(Default, Clone)]
struct SeriesArrays {
    metric_ids: Vec<i32>,
    counts: Vec<i32>,
    flat: Vec<i32>,
    highest: Vec<i32>,
    /// Where each series' labels start in `flat`.
    starts: Vec<usize>,
}

impl SeriesArrays {
    fn push(&mut self, metric_id: i32, labels: &[i32]) {
        self.metric_ids.push(metric_id);
        self.counts.push(labels.len() as i32);
        self.starts.push(self.flat.len());
        self.flat.extend_from_slice(labels);
        self.highest.push(labels.iter().copied().max().unwrap_or(0));
    }

    fn len(&self) -> usize {
        self.metric_ids.len()
    }

    fn labels(&self, n: usize) -> &[i32] {
        &self.flat[self.starts[n]..self.starts[n] + self.counts[n] as usize]
    }

    /// The series at `which` (places in increasing order): these arrays themselves when that
    /// is every series, else a copy of those.
    fn select(&self, which: &[usize]) -> Cow<'_, SeriesArrays> {
        if which.len() == self.len() {
            Cow::Borrowed(self)
        } else {
            Cow::Owned(self.subset(which))
        }
    }

    /// The series at `which`, in that order.
    fn subset(&self, which: &[usize]) -> SeriesArrays {
        let mut subset = SeriesArrays::default();
        for &n in which {
            subset.push(self.metric_ids[n], self.labels(n));
        }
        subset
    }
}

/// Fills in the id of every label pair not cached, creating the missing labels (in a
/// transaction of their own when `executor` is the pool); returns them, for the cache.
async fn fetch_labels<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    labels: &mut Keys<i32>,
) -> Result<Vec<(Vec<u8>, i32)>, StorageError> {
    fetch_unknown(
        executor,
        "SELECT idx, label_id FROM _prom_catalog.create_labels($1, $2)",
        labels,
        |(n, id): (i32, i32)| (n, id),
    )
    .await
}

/// Fills in the values of `wanted` not known yet (keys are [`join_into`] pairs) through
/// `query`, which takes the pairs' two strings as two arrays and answers with `idx` (the
/// pair's place among those sent, from 0) and its value, as `row` reads them; returns what it
/// found.
async fn fetch_unknown<'e, V: Copy, R>(
    executor: impl sqlx::PgExecutor<'e>,
    query: &'static str,
    wanted: &mut Keys<V>,
    mut row: impl FnMut(R) -> (i32, V),
) -> Result<Vec<(Vec<u8>, V)>, StorageError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let unknown: Vec<usize> = (0..wanted.keys.len()).filter(|&p| wanted.values[p].is_none()).collect();
    if unknown.is_empty() {
        return Ok(vec![]);
    }
    let (firsts, seconds): (Vec<&str>, Vec<&str>) = unknown.iter().map(|&p| split(&wanted.keys[p])).unzip();
    let rows: Vec<R> = sqlx::query_as(query)
        .bind(firsts)
        .bind(seconds)
        .fetch_all(executor)
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    for r in rows {
        let (n, value) = row(r);
        if let Some(&p) = unknown.get(n as usize) {
            wanted.values[p] = Some(value);
            found.push((wanted.keys[p].clone(), value));
        }
    }
    Ok(found)
}

/// Makes `key` `a 0xFF b`: a cache key of two UTF-8 strings.
fn join_into(key: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    key.clear();
    key.extend_from_slice(a);
    key.push(0xff);
    key.extend_from_slice(b);
}

/// The two strings of a [`join_into`] key.
fn split(key: &[u8]) -> (&str, &str) {
    let at = key.iter().position(|&b| b == 0xff).unwrap_or(key.len());
    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or_default()
    }
    (text(&key[..at]), text(key.get(at + 1..).unwrap_or_default()))
}

/// Whether creating series failed because another writer created some of them at the same
/// moment: a unique violation of `series_fresh`'s index of its labels' hash (migration 31;
/// an exclusion violation up to migration 30), or a deadlock while waiting for its
/// transaction. Another series of the same 64-bit hash fails the COPY alike;
/// `create_recent_series` then answers it no id, and `create_series` none either while its
/// labels are recent, so the request is answered 503 until the merge pass has moved the other
/// series or raised the floor past this one's (migration 31).
fn is_creation_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("23505") | Some("23P01") | Some("40P01")))
}

fn missing_id() -> StorageError {
    StorageError::Unavailable(
        "the database returned no id for a label of a new series; the request can be retried".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::SeriesArrays;

    #[test]
    fn a_subset_keeps_each_series_labels_and_highest_label() {
        let mut all = SeriesArrays::default();
        all.push(7, &[1, 10]);
        all.push(8, &[3, 0, 20]);
        all.push(7, &[1, 12, 5]);
        assert_eq!(all.highest, [10, 20, 12]);
        let subset = all.subset(&[2, 0]);
        assert_eq!(subset.metric_ids, [7, 7]);
        assert_eq!(subset.counts, [3, 2]);
        assert_eq!(subset.flat, [1, 12, 5, 1, 10]);
        assert_eq!(subset.highest, [12, 10]);
        assert_eq!(subset.labels(1), [1, 10]);
    }
}
