//! Where series are selected: the engine's series source on PostgreSQL. Label matchers
//! become series-id lookups on the label tables, then only the selected series' samples in
//! the needed time range are read ([`super::read`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use promql_parser::label::{MatchOp, Matcher};
use promscale_promql::labels::METRIC_NAME;
use promscale_promql::{HistogramSample, Labels, QueryError, Sample, SelectHints, Series, SeriesSource};

use super::read::ReadError;
use crate::model::Histogram;
use crate::tenancy::{ReadScope, TENANT_LABEL};
use sqlx::PgPool;

/// A series id is its metric's id shifted left by this many bits plus a number drawn from one
/// sequence for all series (`_prom_catalog.first_series_id`, migration 5).
const SERIES_ID_BITS: u32 = 40;

pub struct PgSeriesSource {
    pool: PgPool,
    /// The tenants a read may see (`--metrics.multi-tenancy`): a matcher every selection
    /// gets, so that no endpoint selects another tenant's series.
    scope: Option<ReadScope>,
}

/// A metric and the series of it that match a selector's label matchers.
pub struct SelectedSeries {
    pub table_name: String,
    pub ids: Vec<i64>,
    pub labels: Vec<Labels>,
}

/// A metric as selection needs it.
struct Metric {
    id: i32,
    table_name: String,
    positions: HashMap<String, i32>,
}

fn storage_error(e: sqlx::Error) -> QueryError {
    QueryError::Storage(format!("reading from the database failed: {e}"))
}

/// Milliseconds as a time PostgreSQL can hold (4713 BC to 294276 AD): open-ended ranges
/// are clamped to its limits (and chrono's).
pub(crate) fn to_time(ms: i64) -> DateTime<Utc> {
    const EARLIEST_MS: i64 = -210_000_000_000_000;
    const LATEST_MS: i64 = 8_000_000_000_000_000;
    DateTime::from_timestamp_millis(ms.clamp(EARLIEST_MS, LATEST_MS)).expect("within chrono's range")
}

impl PgSeriesSource {
    pub fn new(pool: PgPool) -> Self {
        PgSeriesSource { pool, scope: None }
    }

    /// A source that sees the series of `scope`'s tenants only (all series when None).
    pub fn scoped(pool: PgPool, scope: Option<ReadScope>) -> Self {
        PgSeriesSource { pool, scope }
    }

    /// Metrics (id, table, label key -> position) whose name satisfies every `__name__`
    /// matcher; one round trip, label positions included.
    async fn metrics(&self, matchers: &[&Matcher]) -> Result<Vec<Metric>, QueryError> {
        const SELECT: &str = "SELECT m.id, m.metric_name, m.table_name,
                   coalesce(array_agg(p.key) FILTER (WHERE p.key IS NOT NULL), '{}') AS keys,
                   coalesce(array_agg(p.pos) FILTER (WHERE p.key IS NOT NULL), '{}') AS positions
              FROM _prom_catalog.metric m
              LEFT JOIN _prom_catalog.label_key_position p ON p.metric_id = m.id";
        type Row = (i32, String, String, Vec<String>, Vec<i32>);
        let rows: Vec<Row> = match matchers.iter().find(|m| matches!(m.op, MatchOp::Equal)) {
            // No stored name holds a NUL byte (PostgreSQL text cannot), nor can it be bound.
            Some(eq) if eq.value.contains('\0') => return Ok(vec![]),
            Some(eq) => sqlx::query_as(&format!(
                "{SELECT} WHERE m.metric_name = $1 GROUP BY m.id ORDER BY m.id"
            ))
            .bind(&eq.value)
            .fetch_all(&self.pool)
            .await
            .map_err(storage_error)?,
            None => sqlx::query_as(&format!("{SELECT} GROUP BY m.id ORDER BY m.id"))
                .fetch_all(&self.pool)
                .await
                .map_err(storage_error)?,
        };
        Ok(rows
            .into_iter()
            .filter(|(_, name, ..)| matchers.iter().all(|m| m.is_match(name)))
            .map(|(id, _, table_name, keys, positions)| Metric {
                id,
                table_name,
                positions: keys.into_iter().zip(positions).collect(),
            })
            .collect())
    }

    /// Ids of the labels of `key` whose value the matcher accepts. Matching happens here, in
    /// Rust, so that regular expressions follow Prometheus' syntax (RE2), not PostgreSQL's.
    async fn matching_label_ids(&self, m: &Matcher) -> Result<Vec<i32>, QueryError> {
        if m.name.contains('\0') || (m.op == MatchOp::Equal && m.value.contains('\0')) {
            return Ok(vec![]);
        }
        let rows: Vec<(i32, String)> = match &m.op {
            MatchOp::Equal => sqlx::query_as("SELECT id, value FROM _prom_catalog.label
                  WHERE key = $1 AND _prom_catalog.label_value_key(value) = _prom_catalog.label_value_key($2) AND value = $2")
                .bind(&m.name)
                .bind(&m.value)
                .fetch_all(&self.pool)
                .await
                .map_err(storage_error)?,
            _ => sqlx::query_as("SELECT id, value FROM _prom_catalog.label WHERE key = $1")
                .bind(&m.name)
                .fetch_all(&self.pool)
                .await
                .map_err(storage_error)?,
        };
        Ok(rows
            .into_iter()
            .filter(|(_, v)| m.is_match(v))
            .map(|(id, _)| id)
            .collect())
    }

    /// The series of `metric_id` that every label matcher accepts (a missing label counts as
    /// the empty value, as in Prometheus).
    async fn series_of_metric(
        &self,
        metric: &Metric,
        matchers: &[&Matcher],
        label_ids: &mut HashMap<usize, Vec<i32>>,
    ) -> Result<Vec<(i64, Vec<i32>)>, QueryError> {
        let (metric_id, positions) = (metric.id, &metric.positions);
        let mut conditions = Vec::new();
        // What the batches of packed series must hold for one of theirs to match (GIN).
        let mut batch_conditions = Vec::new();
        let mut arrays: Vec<Vec<i32>> = Vec::new();
        for (i, m) in matchers.iter().enumerate() {
            let accepts_empty = m.is_match("");
            let Some(&pos) = positions.get(&m.name) else {
                // No series of this metric has the label: all of them have the empty value.
                if accepts_empty {
                    continue;
                }
                return Ok(Vec::new());
            };
            if let std::collections::hash_map::Entry::Vacant(e) = label_ids.entry(i) {
                e.insert(self.matching_label_ids(m).await?);
            }
            arrays.push(label_ids[&i].clone());
            let param = arrays.len() + 1;
            // `&&` lets the GIN index on labels find the candidates; the position check then
            // makes sure the id sits under this label key.
            conditions.push(if accepts_empty {
                format!("(coalesce(s.labels[{pos}], 0) = 0 OR s.labels[{pos}] = ANY(${param}))")
            } else {
                batch_conditions.push(format!(" AND b.label_ids && ${param}::int4[]"));
                format!("s.labels && ${param}::int4[] AND s.labels[{pos}] = ANY(${param})")
            });
        }
        // A metric's series are the id range that starts at its id << SERIES_ID_BITS: rows
        // (live series) by that range, and the metric's batches of packed series that may
        // hold a match (migration 27), unnested.
        let mut sql = format!(
            "SELECT s.id, s.labels FROM \
               (SELECT r.id, r.labels FROM _prom_catalog.series_row r \
                 WHERE r.id >= $1::int8 << {SERIES_ID_BITS} AND r.id < ($1::int8 + 1) << {SERIES_ID_BITS} \
                UNION ALL \
                SELECT e.id, e.labels FROM _prom_catalog.series_batch b CROSS JOIN LATERAL unnest(b.series) AS e \
                 WHERE b.metric_id = $1{}) s \
              WHERE true",
            batch_conditions.concat()
        );
        for c in &conditions {
            sql.push_str(" AND ");
            sql.push_str(c);
        }
        // In the order they were created, as Prometheus' head gives them.
        sql.push_str(" ORDER BY s.id");
        let mut query = sqlx::query_as(&sql).bind(metric_id);
        for a in arrays {
            query = query.bind(a);
        }
        query.fetch_all(&self.pool).await.map_err(storage_error)
    }

    /// Turns label-id arrays into label sets.
    async fn label_sets(&self, series: &[(i64, Vec<i32>)]) -> Result<Vec<Labels>, QueryError> {
        let mut ids: Vec<i32> = series
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .filter(|&id| id != 0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let pairs: HashMap<i32, (String, String)> = sqlx::query_as::<_, (i32, String, String)>(
            "SELECT id, key, value FROM _prom_catalog.label WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(storage_error)?
        .into_iter()
        .filter(|(_, k, _)| !(k == TENANT_LABEL && self.scope.as_ref().is_some_and(ReadScope::hides_label)))
        .map(|(id, k, v)| (id, (k, v)))
        .collect();
        Ok(series
            .iter()
            .map(|(_, l)| Labels::new(l.iter().filter_map(|id| pairs.get(id).cloned()).collect()))
            .collect())
    }

    /// The series every matcher accepts, per metric, with their labels; metrics and series
    /// in the order they were created.
    pub async fn select_series(&self, matchers: &[Matcher]) -> Result<Vec<SelectedSeries>, QueryError> {
        let tenant = self.scope.as_ref().map(ReadScope::matcher);
        let mut asked = Vec::with_capacity(matchers.len());
        for m in matchers {
            // A tenant reading alone has no tenant label, as a Prometheus holding only its
            // data: its matchers on the label see the empty value.
            if m.name == TENANT_LABEL && self.scope.as_ref().is_some_and(ReadScope::hides_label) {
                if m.is_match("") {
                    continue;
                }
                return Ok(Vec::new());
            }
            asked.push(m);
        }
        let (name, labels): (Vec<&Matcher>, Vec<&Matcher>) =
            asked.into_iter().chain(&tenant).partition(|m| m.name == METRIC_NAME);
        let mut label_ids = HashMap::new();
        let mut out = Vec::new();
        for metric in self.metrics(&name).await? {
            let series = self.series_of_metric(&metric, &labels, &mut label_ids).await?;
            let table_name = metric.table_name;
            if series.is_empty() {
                continue;
            }
            let labels = self.label_sets(&series).await?;
            out.push(SelectedSeries {
                table_name,
                ids: series.into_iter().map(|(id, _)| id).collect(),
                labels,
            });
        }
        Ok(out)
    }

    /// The label sets of the series every matcher accepts that have data in `[start, end]`
    /// (see [`super::read::series_with_data`]); no sample is read.
    pub async fn series_in_range(&self, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<Labels>, QueryError> {
        let mut out = Vec::new();
        for selected in self.select_series(matchers).await? {
            let mut found = super::read::series_with_data(
                &self.pool,
                &selected.table_name,
                &selected.ids,
                to_time(start),
                to_time(end),
            )
            .await
            .map_err(|e| match e {
                ReadError::TooManySamples(_) => QueryError::TooManySamples("reading series"),
                ReadError::Database(e) => storage_error(e),
            })?;
            // Series of native histograms have their data apart.
            let unseen: Vec<i64> = selected.ids.iter().copied().filter(|id| !found.contains(id)).collect();
            if !unseen.is_empty() {
                found.extend(
                    super::histograms::series_with_data(&self.pool, &unseen, to_time(start), to_time(end))
                        .await
                        .map_err(storage_error)?,
                );
            }
            out.extend(
                selected
                    .ids
                    .iter()
                    .zip(selected.labels)
                    .filter(|(id, _)| found.contains(id))
                    .map(|(_, labels)| labels),
            );
        }
        Ok(out)
    }

    /// The float samples of the selected series in `[hints.start, hints.end]` (and in its
    /// windows, when the hints have them), one list per id of `selected`, in its order.
    async fn floats_by_id(
        &self,
        selected: &SelectedSeries,
        hints: &SelectHints,
        max_samples: usize,
    ) -> Result<Vec<Vec<Sample>>, QueryError> {
        let mut by_id = crate::storage::read::read_samples(
            &self.pool,
            &selected.table_name,
            &selected.ids,
            to_time(hints.start),
            to_time(hints.end),
            hints.windows.as_ref(),
            max_samples,
        )
        .await
        .map_err(|e| match e {
            ReadError::TooManySamples(_) => QueryError::TooManySamples("reading series"),
            ReadError::Database(e) => storage_error(e),
        })?;
        Ok(selected
            .ids
            .iter()
            .map(|id| {
                by_id
                    .remove(id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, v)| Sample { t, v })
                    .collect()
            })
            .collect())
    }

    /// The samples and native histograms of the selected series in `[hints.start,
    /// hints.end]` (and in its windows, when the hints have them), as the engine takes them,
    /// each with its series id, in the order of `selected`; series without any left out.
    pub async fn read_samples(
        &self,
        selected: SelectedSeries,
        hints: &SelectHints,
        max_samples: usize,
    ) -> Result<Vec<(i64, Series)>, QueryError> {
        let samples = self.floats_by_id(&selected, hints, max_samples).await?;
        let read: usize = samples.iter().map(Vec::len).sum();
        let mut histograms: HashMap<i64, Vec<HistogramSample>> = HashMap::new();
        // One more than the budget allows: enough to tell it is exceeded.
        let limit = max_samples.saturating_sub(read).saturating_add(1);
        let rows = super::histograms::read_for_promql(
            &self.pool,
            &selected.ids,
            to_time(hints.start),
            to_time(hints.end),
            limit,
        )
        .await
        .map_err(storage_error)?;
        if read.saturating_add(rows.len()) > max_samples {
            return Err(QueryError::TooManySamples("reading series"));
        }
        for (id, t, h) in rows {
            // Only the windows' histograms, as only the windows' floats are read.
            if hints.windows.is_some_and(|w| !w.contains(t)) {
                continue;
            }
            histograms
                .entry(id)
                .or_default()
                .push(HistogramSample { t, h: Arc::new(h) });
        }
        Ok(selected
            .labels
            .into_iter()
            .zip(samples)
            .zip(&selected.ids)
            .map(|((labels, samples), &id)| {
                let series = Series {
                    labels,
                    samples,
                    histograms: histograms.remove(&id).unwrap_or_default(),
                    // Start timestamps are not stored.
                    start_times: Vec::new(),
                };
                (id, series)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect())
    }
}

/// A series as remote read returns it: its float samples and its native histograms.
pub struct SeriesWithHistograms {
    pub series: Series,
    pub histograms: Vec<Histogram>,
}

impl PgSeriesSource {
    /// What remote read answers: every series the matchers select with its samples and native
    /// histograms in `[hints.start, hints.end]`, by labels; a histogram counts as a sample
    /// against `hints.max_samples`.
    pub async fn select_with_histograms(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<Vec<SeriesWithHistograms>, QueryError> {
        let mut out = Vec::new();
        let mut budget = hints.max_samples.unwrap_or(usize::MAX);
        for selected in self.select_series(matchers).await? {
            let floats = self.floats_by_id(&selected, hints, budget).await?;
            let read: usize = floats.iter().map(Vec::len).sum();
            budget = budget
                .checked_sub(read)
                .ok_or(QueryError::TooManySamples("reading series"))?;
            let limit = budget.saturating_add(1);
            let rows = super::histograms::read(
                &self.pool,
                &selected.ids,
                to_time(hints.start),
                to_time(hints.end),
                limit,
            )
            .await
            .map_err(storage_error)?;
            budget = budget
                .checked_sub(rows.len())
                .ok_or(QueryError::TooManySamples("reading series"))?;
            let mut histograms: HashMap<i64, Vec<Histogram>> = HashMap::new();
            for (id, h) in rows {
                histograms.entry(id).or_default().push(h);
            }
            for ((id, labels), samples) in selected.ids.iter().zip(selected.labels).zip(floats) {
                let histograms = histograms.remove(id).unwrap_or_default();
                if !samples.is_empty() || !histograms.is_empty() {
                    out.push(SeriesWithHistograms {
                        series: Series::floats(labels, samples),
                        histograms,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.series.labels.cmp(&b.series.labels));
        Ok(out)
    }
}

impl SeriesSource for PgSeriesSource {
    fn select<'a>(
        &'a self,
        matchers: &'a [Matcher],
        hints: &'a SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, QueryError>> {
        Box::pin(async move {
            let mut out: Vec<(i64, Series)> = Vec::new();
            let mut budget = hints.max_samples.unwrap_or(usize::MAX);
            for selected in self.select_series(matchers).await? {
                let series = self.read_samples(selected, hints, budget).await?;
                let read: usize = series.iter().map(|(_, s)| s.len()).sum();
                budget = budget
                    .checked_sub(read)
                    .ok_or(QueryError::TooManySamples("reading series"))?;
                out.extend(series);
            }
            // In the order they were created, across metrics too: the order Prometheus' head
            // gives series in, which decides which of equal values topk, bottomk and limitk
            // keep. A series id is its metric's base plus a number drawn from one sequence.
            if out
                .windows(2)
                .any(|w| w[0].0 >> SERIES_ID_BITS != w[1].0 >> SERIES_ID_BITS)
            {
                out.sort_by_key(|(id, _)| id & ((1 << SERIES_ID_BITS) - 1));
            }
            Ok(out.into_iter().map(|(_, s)| s).collect())
        })
    }
}
