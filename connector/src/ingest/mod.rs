//! From a decoded request to committed samples.
//!
//! Requests are resolved to series ids concurrently, then queued; a few writer tasks take
//! whatever is queued, up to a size limit, and commit it in one transaction. Many small
//! remote-write requests thus share one commit (and one WAL flush), and every request is
//! answered only after the transaction holding its samples has committed. A request with
//! series the connector has not seen yet skips the queue: it creates them and writes its
//! samples in one transaction of its own.

mod activity;
pub mod ha;
pub mod rate_limit;
pub mod series_limits;

pub use activity::WriteActivity;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::metrics::Metrics;
use crate::model::Metadata;
use crate::model::Series;
use crate::remote_write::decode::DecodeError;
use crate::remote_write::decode::WriteBatch;
use crate::storage::metadata::upsert_metadata;
use crate::storage::samples::{head_rows, insert_head_rows, SampleBatch, SampleWriter};
use crate::storage::series::{Resolution, SeriesResolver};
use crate::storage::series_cache::SeriesId;
use crate::storage::StorageError;
use crate::storage::{exemplars, histograms};
use series_limits::{Admission, SeriesLimits};

/// How often a metadata entry seen again is written again (its `last_seen`).
const METADATA_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
/// Metadata entries remembered as upserted; beyond it the memory starts over.
const MAX_RECENT_METADATA: usize = 100_000;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Writer tasks, i.e. transactions in flight at once.
    pub writers: usize,
    /// Samples above which a writer stops adding queued requests to its transaction.
    pub max_batch_samples: usize,
    pub series_cache_entries: usize,
    /// Whether exemplars are stored (`--exemplars.max-per-series` above 0).
    pub store_exemplars: bool,
    /// The series limits; their tenant is a series' `__tenant__` label with
    /// `--metrics.multi-tenancy`, else "" (the whole store).
    pub series_limits: Option<Arc<SeriesLimits>>,
    pub multi_tenancy: bool,
}

struct Job {
    samples: SampleBatch,
    done: oneshot::Sender<Result<(), StorageError>>,
}

pub struct Ingestor {
    pool: PgPool,
    store_exemplars: bool,
    /// Metadata entries upserted lately, and when: remote write 2.0 sends metadata with
    /// every series of every request, and the catalog needs it at most once a minute.
    recent_metadata: std::sync::Mutex<HashMap<Metadata, Instant>>,
    resolver: SeriesResolver,
    queue: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    activity: Arc<WriteActivity>,
    series_limits: Option<Arc<SeriesLimits>>,
    multi_tenancy: bool,
}

/// What one request added.
#[derive(Debug, Default, PartialEq)]
pub struct IngestReport {
    pub samples: usize,
    /// Native histogram samples committed.
    pub histograms: usize,
    /// Valid exemplars accepted (stored, unless storing them is off).
    pub exemplars: usize,
    pub metadata: usize,
    /// New series a series limit left out, with the samples and histograms they held, and
    /// the tenant each belongs to.
    pub refused: Vec<(DecodeError, usize, String)>,
}

impl Ingestor {
    /// Starts the writer tasks; they end when the `Ingestor` is dropped and the queue drained.
    pub fn start(
        pool: PgPool,
        writer: Arc<dyn SampleWriter>,
        options: &IngestOptions,
        metrics: Arc<Metrics>,
        activity: Arc<WriteActivity>,
    ) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>(options.writers.max(1) * 64);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..options.writers.max(1) {
            tokio::spawn(write_loop(
                jobs.clone(),
                writer.clone(),
                options.max_batch_samples,
                metrics.clone(),
                activity.clone(),
            ));
        }
        Ingestor {
            resolver: SeriesResolver::new(pool.clone(), options.series_cache_entries),
            pool,
            store_exemplars: options.store_exemplars,
            recent_metadata: Default::default(),
            queue,
            metrics,
            activity,
            series_limits: options.series_limits.clone(),
            multi_tenancy: options.multi_tenancy,
        }
    }

    /// The tenant a series counts for in series limits.
    fn tenant_of<'s>(&self, series: &'s Series) -> &'s str {
        if !self.multi_tenancy {
            return "";
        }
        series
            .labels
            .iter()
            .find(|l| l.name() == crate::tenancy::TENANT_LABEL)
            .map_or("", |l| l.value())
    }

    /// Counts a committed write for series limits: the series it created and those it
    /// wrote; a failure is logged, never the request's.
    async fn count_for_limits(&self, batch: &WriteBatch, ids: &[SeriesId], admission: Option<Admission<'_>>) {
        if let Some(limits) = &self.series_limits {
            let series = batch.series.iter().zip(ids).map(|(s, &id)| (self.tenant_of(s), id));
            if let Err(e) = limits.committed(admission, series).await {
                tracing::warn!(error = %e, "counting series for series limits failed");
            }
        }
    }

    /// The series limits, which also hold the tenants' own limits set in SQL.
    pub fn series_limits(&self) -> Option<&SeriesLimits> {
        self.series_limits.as_deref()
    }

    pub fn activity(&self) -> &WriteActivity {
        &self.activity
    }

    pub fn cached_series(&self) -> usize {
        self.resolver.cached_series()
    }

    /// Stores a request; `Ok` means every sample and metadata entry in it is committed.
    pub async fn ingest(&self, batch: WriteBatch) -> Result<IngestReport, StorageError> {
        let resolution = self.resolver.lookup(&batch.series);
        self.metrics
            .series_cache_hits
            .inc_by(resolution.stats.cache_hits as u64);
        self.metrics
            .series_cache_misses
            .inc_by(resolution.stats.cache_misses as u64);
        let exemplars = if self.store_exemplars {
            batch.exemplar_count()
        } else {
            0
        };
        let not_stored = batch.exemplar_count() - exemplars;
        self.metrics
            .exemplars_dropped
            .inc_by((batch.exemplars_dropped + not_stored) as u64);
        self.metrics.metadata_dropped.inc_by(batch.metadata_dropped as u64);

        let (sample_count, refused) = if resolution.is_complete() {
            (self.write_queued(&batch, resolution.ids).await?, Vec::new())
        } else {
            self.write_with_new_series(&batch, resolution).await?
        };
        let refused_histograms: usize = refused.iter().map(|&(i, _)| batch.series[i].histograms.len()).sum();
        let refused_exemplars: usize = refused.iter().map(|&(i, _)| batch.series[i].exemplars.len()).sum();
        let fresh = self.fresh_metadata(&batch.metadata);
        upsert_metadata(&self.pool, &fresh).await?;
        self.remember_metadata(fresh);
        self.metrics.metadata_ingested.inc_by(batch.metadata.len() as u64);
        self.metrics
            .exemplars_ingested
            .inc_by(exemplars.saturating_sub(if self.store_exemplars { refused_exemplars } else { 0 }) as u64);
        let histograms = batch.histogram_count() - refused_histograms;
        self.metrics.histograms_ingested.inc_by(histograms as u64);
        let refused = refused
            .into_iter()
            .map(|(i, refusal)| {
                let s = &batch.series[i];
                let error = DecodeError::SeriesLimit {
                    series: crate::remote_write::decode::describe_series(&s.labels),
                    detail: refusal.detail(),
                    reason: refusal.reason(),
                };
                (
                    error,
                    s.samples.len() + s.histograms.len(),
                    self.tenant_of(s).to_string(),
                )
            })
            .collect();
        Ok(IngestReport {
            samples: sample_count,
            histograms,
            // Valid exemplars are accepted also when --exemplars.max-per-series 0 says not
            // to keep them: the sender has nothing to resend.
            exemplars: batch.exemplar_count() - refused_exemplars,
            metadata: batch.metadata.len(),
            refused,
        })
    }

    /// The entries of `metadata` not upserted within the last minute.
    fn fresh_metadata(&self, metadata: &[Metadata]) -> Vec<Metadata> {
        let recent = self.recent_metadata.lock().expect("not poisoned");
        metadata
            .iter()
            .filter(|m| recent.get(*m).is_none_or(|at| at.elapsed() >= METADATA_REFRESH))
            .cloned()
            .collect()
    }

    fn remember_metadata(&self, upserted: Vec<Metadata>) {
        let mut recent = self.recent_metadata.lock().expect("not poisoned");
        if recent.len() + upserted.len() > MAX_RECENT_METADATA {
            recent.clear();
        }
        let now = Instant::now();
        recent.extend(upserted.into_iter().map(|m| (m, now)));
    }

    /// The common case, every series known: the samples join the writers' queue and share
    /// a transaction with whatever else is queued.
    async fn write_queued(&self, batch: &WriteBatch, ids: Vec<SeriesId>) -> Result<usize, StorageError> {
        let samples = sample_batch(batch, &ids, self.store_exemplars);
        let sample_count = samples.len();
        if sample_count > 0 || !samples.exemplars.is_empty() || !samples.histograms.is_empty() {
            let (done, committed) = oneshot::channel();
            self.queue
                .send(Job { samples, done })
                .await
                .map_err(|_| StorageError::Unavailable("the connector is shutting down".into()))?;
            committed
                .await
                .map_err(|_| StorageError::Unavailable("the writer stopped before committing".into()))??;
            self.count_for_limits(batch, &ids, None).await;
            self.activity.committed(ids);
        }
        Ok(sample_count)
    }

    /// A request with series this connector has not seen (a rollout, a restart): its new
    /// labels and series and all its samples are written in one transaction of its own, so
    /// that the request costs one commit, and the ids are cached only once they exist.
    ///
    /// With series limits, the new series they refuse are left out, and returned (with
    /// their index in the request).
    async fn write_with_new_series(
        &self,
        batch: &WriteBatch,
        mut resolution: Resolution,
    ) -> Result<(usize, Vec<(usize, series_limits::Refusal)>), StorageError> {
        let started = Instant::now();
        let mut sample_count: usize = batch.series.iter().map(|s| s.samples.len()).sum();
        let mut admission = match self.series_limits.as_ref().filter(|l| l.any()) {
            Some(limits) => Some(limits.admission().await?),
            None => None,
        };
        let mut refused = Vec::new();
        let result: Result<u64, StorageError> = async {
            // With limits, the series that exist are looked up first, creating nothing, and
            // only the new ones a limit admits are created, labels and metrics included.
            let mut found = None;
            if let Some(admission) = admission.as_mut() {
                let (existing, new) = self.resolver.existing(&batch.series, &mut resolution).await?;
                found = Some(existing);
                let mut refused_series: HashMap<Vec<u8>, series_limits::Refusal> = HashMap::new();
                for (i, metric_id, identity) in new {
                    let s = &batch.series[i];
                    // A metric not created yet counts under a stand-in id of its name.
                    let metric = metric_id.unwrap_or_else(|| series_limits::new_metric_key(s.metric_name()));
                    if let Err(refusal) = admission.admit(self.tenant_of(s), metric) {
                        refused_series.insert(identity, refusal);
                    }
                }
                refused = resolution.leave_out(&refused_series);
            }
            let (mut tx, mut created) = self.resolver.create(&batch.series, &mut resolution).await?;
            if let Some(found) = found {
                created.merge(found);
            }
            sample_count -= refused
                .iter()
                .map(|&(i, _)| batch.series[i].samples.len())
                .sum::<usize>();
            let samples = sample_batch(batch, &resolution.ids, self.store_exemplars);
            let expired = if sample_count == 0 {
                0
            } else {
                insert_head_rows(&mut *tx, &head_rows(&samples)).await?
            };
            histograms::insert(&mut *tx, &samples.histograms).await?;
            exemplars::insert(&mut *tx, &samples.exemplars).await?;
            tx.commit().await?;
            if created.conflicted {
                self.metrics.series_creation_conflicts.inc();
            }
            let evicted = self.resolver.remember(created);
            self.metrics.series_cache_evictions.inc_by(evicted as u64);
            Ok(expired)
        }
        .await;
        record_write(&self.metrics, &self.activity, &result, sample_count, 1, started);
        result?;
        self.count_for_limits(batch, &resolution.ids, admission).await;
        if sample_count > 0 || batch.histogram_count() > 0 {
            self.activity
                .committed(resolution.ids.into_iter().filter(|&id| id != 0));
        }
        Ok((sample_count, refused))
    }
}

/// The samples and histograms of a request, by series id, with their exemplars if they are
/// stored.
fn sample_batch(batch: &WriteBatch, ids: &[SeriesId], with_exemplars: bool) -> SampleBatch {
    let mut samples = SampleBatch::default();
    // Id 0: a series a limit left out.
    for (series, &id) in batch.series.iter().zip(ids).filter(|(_, &id)| id != 0) {
        for s in &series.samples {
            samples.push(id, s.timestamp, s.value);
        }
        for h in &series.histograms {
            samples.histograms.push(id, h.clone());
        }
        if with_exemplars {
            for e in &series.exemplars {
                samples.exemplars.push(id, e.timestamp, e.value, e.labels.clone());
            }
        }
    }
    samples
}

/// Counts a write transaction in the connector's metrics and status.
fn record_write(
    metrics: &Metrics,
    activity: &WriteActivity,
    result: &Result<u64, StorageError>,
    samples: usize,
    requests: usize,
    started: Instant,
) {
    metrics.db_write_duration.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(expired) => {
            metrics.samples_ingested.inc_by(samples as u64 - expired);
            metrics.samples_expired.inc_by(*expired);
            metrics.db_batch_samples.observe(samples as f64);
            metrics.db_batch_requests.observe(requests as f64);
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            metrics.last_commit_timestamp.set(now.as_secs() as i64);
            activity.write_finished(None);
        }
        Err(e) => {
            tracing::warn!(error = %e, requests, samples, "writing samples failed");
            activity.write_finished(Some(e.to_string()));
        }
    }
}

async fn write_loop(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    writer: Arc<dyn SampleWriter>,
    max_batch_samples: usize,
    metrics: Arc<Metrics>,
    activity: Arc<WriteActivity>,
) {
    loop {
        let mut taken = Vec::new();
        {
            let mut jobs = jobs.lock().await;
            let Some(first) = jobs.recv().await else {
                return;
            };
            // Histograms and exemplars count as samples: a transaction stays bounded whatever
            // a job holds.
            let weight = |b: &SampleBatch| b.len() + b.histograms.len() + b.exemplars.len();
            let mut samples = weight(&first.samples);
            taken.push(first);
            while samples < max_batch_samples {
                match jobs.try_recv() {
                    Ok(job) => {
                        samples += weight(&job.samples);
                        taken.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let mut dones = Vec::with_capacity(taken.len());
        let mut merged = SampleBatch::default();
        for job in taken {
            merged.append(job.samples);
            dones.push(job.done);
        }
        let started = Instant::now();
        let result = writer.write(&merged).await;
        record_write(&metrics, &activity, &result, merged.len(), dones.len(), started);
        for done in dones {
            // The request may have been abandoned by its client; nothing to do then.
            let _ = done.send(result.clone().map(|_| ()));
        }
    }
}
