//! Resolves label sets to series ids: from the cache, or in batches from PostgreSQL, which
//! creates metrics, labels and series on first sight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use super::series_cache::{SeriesCache, SeriesRef};
use super::StorageError;
use crate::remote_write::decode::Series;

pub struct SeriesResolver {
    pool: PgPool,
    cache: SeriesCache,
    /// metric name -> samples table name
    tables: Mutex<HashMap<String, Arc<str>>>,
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
            tables: Mutex::new(HashMap::new()),
        }
    }

    pub fn cached_series(&self) -> usize {
        self.cache.len()
    }

    /// Returns one `SeriesRef` per input series, in order.
    pub async fn resolve(&self, series: &[Series]) -> Result<(Vec<SeriesRef>, ResolveStats), StorageError> {
        let mut stats = ResolveStats::default();
        let mut resolved: Vec<Option<SeriesRef>> = Vec::with_capacity(series.len());
        // metric name -> indexes (into `series`) of the series missing from the cache
        let mut misses: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut identities: Vec<Option<Vec<u8>>> = vec![None; series.len()];
        for (i, s) in series.iter().enumerate() {
            let identity = s.identity();
            match self.cache.get(&identity) {
                Some(r) => {
                    stats.cache_hits += 1;
                    resolved.push(Some(r));
                }
                None => {
                    stats.cache_misses += 1;
                    resolved.push(None);
                    misses.entry(s.metric_name()).or_default().push(i);
                    identities[i] = Some(identity);
                }
            }
        }
        for (metric, indexes) in misses {
            let table = self.metric_table(metric).await?;
            let ids = self.create_series(metric, series, &indexes).await?;
            for (i, id) in indexes.into_iter().zip(ids) {
                let r = SeriesRef {
                    id,
                    table: table.clone(),
                };
                if let Some(identity) = identities[i].take() {
                    stats.evicted += self.cache.insert(identity, r.clone());
                }
                resolved[i] = Some(r);
            }
        }
        let resolved = resolved
            .into_iter()
            .map(|r| r.expect("every series resolved"))
            .collect();
        Ok((resolved, stats))
    }

    async fn metric_table(&self, metric: &str) -> Result<Arc<str>, StorageError> {
        if let Some(t) = self.tables.lock().expect("table cache poisoned").get(metric) {
            return Ok(t.clone());
        }
        let table: String = sqlx::query_scalar("SELECT table_name::text FROM _prom_catalog.get_or_create_metric($1)")
            .bind(metric)
            .fetch_one(&self.pool)
            .await?;
        let table: Arc<str> = Arc::from(table);
        self.tables
            .lock()
            .expect("table cache poisoned")
            .insert(metric.to_string(), table.clone());
        Ok(table)
    }

    /// Ids of `series[indexes]`, all of metric `metric`, in the order of `indexes`; one round trip.
    async fn create_series(
        &self,
        metric: &str,
        series: &[Series],
        indexes: &[usize],
    ) -> Result<Vec<i64>, StorageError> {
        let (mut idx, mut keys, mut values) = (vec![], vec![], vec![]);
        for (n, &i) in indexes.iter().enumerate() {
            for l in &series[i].labels {
                idx.push(n as i32);
                keys.push(l.name());
                values.push(l.value());
            }
        }
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.get_or_create_series_ids($1, $2, $3, $4)")
                .bind(metric)
                .bind(idx)
                .bind(keys)
                .bind(values)
                .fetch_all(&self.pool)
                .await?;
        let mut ids = vec![None; indexes.len()];
        for (n, id) in rows {
            if let Some(slot) = ids.get_mut(n as usize) {
                *slot = Some(id);
            }
        }
        ids.into_iter()
            .enumerate()
            .map(|(n, id)| {
                id.ok_or_else(|| {
                    StorageError::Unavailable(format!("database returned no id for series {n} of metric {metric:?}"))
                })
            })
            .collect()
    }
}
