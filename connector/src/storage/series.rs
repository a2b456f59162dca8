//! Resolves label sets to series ids: from the cache, or in batches from PostgreSQL, which
//! creates metrics (and their samples tables), labels and series on first sight.

use sqlx::PgPool;

use super::series_cache::{SeriesCache, SeriesId};
use super::StorageError;
use crate::model::Series;

pub struct SeriesResolver {
    pool: PgPool,
    cache: SeriesCache,
}

/// What one resolution did, for the connector's own metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResolveStats {
    pub cache_hits: usize,
    pub cache_misses: usize,
    pub evicted: usize,
}

impl SeriesResolver {
    pub fn new(pool: PgPool, cache_entries: usize) -> Self {
        SeriesResolver {
            pool,
            cache: SeriesCache::new(cache_entries),
        }
    }

    pub fn cached_series(&self) -> usize {
        self.cache.len()
    }

    /// Returns the id of every input series, in order.
    pub async fn resolve(&self, series: &[Series]) -> Result<(Vec<SeriesId>, ResolveStats), StorageError> {
        let mut stats = ResolveStats::default();
        let mut ids: Vec<SeriesId> = Vec::with_capacity(series.len());
        // (index into `series`, identity) of the series missing from the cache
        let mut missing: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let identity = s.identity();
            match self.cache.get(&identity) {
                Some(id) => {
                    stats.cache_hits += 1;
                    ids.push(id);
                }
                None => {
                    stats.cache_misses += 1;
                    ids.push(0);
                    missing.push((i, identity));
                }
            }
        }
        if !missing.is_empty() {
            let created = self.create_series(series, &missing).await?;
            for ((i, identity), id) in missing.into_iter().zip(created) {
                stats.evicted += self.cache.insert(identity, id);
                ids[i] = id;
            }
        }
        Ok((ids, stats))
    }

    /// Ids of the `missing` series, in order, whatever their metrics; one round trip.
    async fn create_series(
        &self,
        series: &[Series],
        missing: &[(usize, Vec<u8>)],
    ) -> Result<Vec<SeriesId>, StorageError> {
        let (mut metrics, mut idx, mut keys, mut values) = (vec![], vec![], vec![], vec![]);
        for (n, (i, _)) in missing.iter().enumerate() {
            metrics.push(series[*i].metric_name());
            for l in &series[*i].labels {
                idx.push(n as i32);
                keys.push(l.name());
                values.push(l.value());
            }
        }
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.get_or_create_series_ids($1, $2, $3, $4)")
                .bind(metrics)
                .bind(idx)
                .bind(keys)
                .bind(values)
                .fetch_all(&self.pool)
                .await?;
        let mut ids = vec![None; missing.len()];
        for (n, id) in rows {
            if let Some(slot) = ids.get_mut(n as usize) {
                *slot = Some(id);
            }
        }
        ids.into_iter()
            .enumerate()
            .map(|(n, id)| {
                id.ok_or_else(|| {
                    StorageError::Unavailable(format!("database returned no id for series {n} of the batch"))
                })
            })
            .collect()
    }
}
