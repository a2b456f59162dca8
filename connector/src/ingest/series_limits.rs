//! Series limits (docs/limits.md): how many active series a tenant may have, of all metrics
//! and of one metric, and how many series it may create a minute. Only new series are ever
//! refused; series a tenant has keep being written whatever the limits say.
//!
//! The limits come from the `--limits.*` flags, overridden per tenant and per metric in SQL
//! (`prom_api.set_tenant_limits`, `prom_api.set_metric_max_active_series`, migration 20).
//! Counts are shared through the database, since any replica may receive any series: the
//! series of limited tenants and metrics are marked in `_prom_catalog.active_series` once per
//! 10-minute window they receive samples in, and the series created are added up per tenant
//! and minute in `_prom_catalog.new_series_count`. Every `--limits.refresh-interval` (10 s)
//! a connector reads the limits and those counts, and adds what it created itself since; so
//! one connector enforces a limit exactly, and several replicas may together go past it by
//! what they create within one refresh.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sqlx::PgPool;

use crate::config::LabelLimits;
use crate::storage::limits::TenantLimits;
use crate::storage::series_cache::SeriesId;

/// A series is active for this long, and up to twice as long, after its last sample.
pub const WINDOW_SECONDS: i64 = 600;

/// The `--limits.*` flags of series (0: none), which apply to every tenant without a limit
/// of its own in SQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesLimitFlags {
    pub max_active_series: u64,
    pub max_active_series_per_metric: u64,
    pub max_new_series_per_minute: u64,
}

/// Which limit refused a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ActiveSeries { tenant: String, limit: u64 },
    MetricActiveSeries { tenant: String, limit: u64 },
    NewSeries { tenant: String, limit: u64 },
}

impl Refusal {
    /// The `reason` label of `/metrics`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ActiveSeries { .. } => "series_limit",
            Refusal::MetricActiveSeries { .. } => "metric_series_limit",
            Refusal::NewSeries { .. } => "new_series_limit",
        }
    }

    /// Why, for the answer: the limit, whose it is, and where it is set.
    pub fn detail(&self) -> String {
        fn whose(tenant: &str) -> String {
            if tenant.is_empty() {
                "the store".to_string()
            } else {
                format!("tenant {tenant:?}")
            }
        }
        match self {
            Refusal::ActiveSeries { tenant, limit } => format!(
                "{} has its limit of {limit} active series (series with samples in the last 10 to 20 minutes; --limits.max-active-series, or prom_api.set_tenant_limits)",
                whose(tenant)
            ),
            Refusal::MetricActiveSeries { tenant, limit } => format!(
                "{} has its limit of {limit} active series of this metric (--limits.max-active-series-per-metric, or prom_api.set_metric_max_active_series)",
                whose(tenant)
            ),
            Refusal::NewSeries { tenant, limit } => format!(
                "{} created its limit of {limit} new series this minute (--limits.max-new-series-per-minute, or prom_api.set_tenant_limits); it is created when sent again next minute",
                whose(tenant)
            ),
        }
    }
}

/// What the database said at the last refresh.
#[derive(Debug, Default)]
struct Snapshot {
    /// Whether this was read from the database (not the empty one before the first read).
    loaded: bool,
    /// Tenants' own limits.
    tenants: HashMap<String, TenantLimits>,
    /// Metrics' own limits of active series per tenant.
    metrics: HashMap<i32, u64>,
    /// Active series of tracked tenants, and of tracked metrics per tenant.
    active: HashMap<String, u64>,
    active_of_metric: HashMap<(String, i32), u64>,
    /// Series created this minute by all connectors, as of the refresh.
    minute: i64,
    created: HashMap<String, u64>,
}

/// Counts kept by this connector on top of the snapshot.
#[derive(Debug, Default)]
struct Local {
    active: HashMap<String, u64>,
    active_of_metric: HashMap<(String, i32), u64>,
    /// By tenant and unix minute.
    created: HashMap<(String, i64), u64>,
}

impl Local {
    fn add(&mut self, tenant: &str, metric: i32, minute: Option<i64>, n: i64) {
        fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, n: i64) {
            let v = map.entry(key).or_default();
            *v = v.saturating_add_signed(n);
        }
        bump(&mut self.active, tenant.to_string(), n);
        bump(&mut self.active_of_metric, (tenant.to_string(), metric), n);
        if let Some(minute) = minute {
            bump(&mut self.created, (tenant.to_string(), minute), n);
        }
    }
}

/// `since`: what this connector wrote to the database after the snapshot was read (a
/// refresh reads everything written before it: see `writes`); `pending`: series admitted by
/// requests that have not committed yet, so that requests at once share the room left.
#[derive(Debug, Default)]
struct Counts {
    since: Local,
    pending: Local,
}

impl std::fmt::Debug for SeriesLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesLimits")
            .field("flags", &self.flags)
            .field("any", &self.any())
            .finish_non_exhaustive()
    }
}

pub struct SeriesLimits {
    pool: PgPool,
    flags: SeriesLimitFlags,
    /// Whether any limit exists at all: when not, writes pay nothing.
    any: AtomicBool,
    /// Locked after `counts` when both are.
    snapshot: RwLock<Arc<Snapshot>>,
    counts: Mutex<Counts>,
    /// Held shared by each write of marks and counts from its database statement until its
    /// local count, exclusively by a refresh while it reads: so a refresh reads every write
    /// counted locally before it and none counted after, and `since` starts over empty.
    writes: tokio::sync::RwLock<()>,
    /// The window being marked, and the series marked in it.
    marks: Mutex<(i64, HashSet<SeriesId>)>,
}

/// The new series one request may create, reserved as they are admitted; released if the
/// request does not commit.
pub struct Admission<'a> {
    limits: &'a SeriesLimits,
    minute: i64,
    /// (tenant, metric id) of each series admitted.
    admitted: Vec<(String, i32)>,
    counted: bool,
}

/// The id a new series of a metric not created yet counts under until it is: negative, so
/// never a real metric's, and the same for every series of that metric.
pub fn new_metric_key(metric_name: &str) -> i32 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    metric_name.hash(&mut hasher);
    -((hasher.finish() & 0x3fff_ffff) as i32) - 1
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

impl SeriesLimits {
    pub fn new(pool: PgPool, flags: SeriesLimitFlags) -> Self {
        let any = flags != SeriesLimitFlags::default();
        SeriesLimits {
            pool,
            flags,
            any: AtomicBool::new(any),
            snapshot: Default::default(),
            counts: Default::default(),
            writes: Default::default(),
            marks: Default::default(),
        }
    }

    /// Whether some limit may refuse a series now.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn tenant_limits(&self, snapshot: &Snapshot, tenant: &str) -> (u64, u64) {
        let own = snapshot.tenants.get(tenant).copied().unwrap_or_default();
        (
            own.max_active_series.unwrap_or(self.flags.max_active_series),
            own.max_new_series_per_minute
                .unwrap_or(self.flags.max_new_series_per_minute),
        )
    }

    /// A tenant's own ingestion rate and burst where SQL sets them: (rate, burst), either
    /// None for the flag's.
    pub fn ingestion_rate(&self, tenant: &str) -> (Option<f64>, Option<f64>) {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        snapshot
            .tenants
            .get(tenant)
            .map_or((None, None), |own| (own.ingestion_rate, own.ingestion_burst))
    }

    /// A tenant's label limits: its own where set in SQL, else `flags`.
    pub fn label_limits(&self, tenant: &str, flags: LabelLimits) -> LabelLimits {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        match snapshot.tenants.get(tenant) {
            Some(own) => LabelLimits {
                max_labels: own.max_labels_per_series.unwrap_or(flags.max_labels),
                max_name_bytes: own.max_label_name_length.unwrap_or(flags.max_name_bytes),
                max_value_bytes: own.max_label_value_length.unwrap_or(flags.max_value_bytes),
            },
            None => flags,
        }
    }

    fn metric_limit(&self, snapshot: &Snapshot, metric_id: i32) -> u64 {
        snapshot
            .metrics
            .get(&metric_id)
            .copied()
            .unwrap_or(self.flags.max_active_series_per_metric)
    }

    /// Whether the active series of `tenant` of `metric_id` are counted.
    fn tracks(&self, snapshot: &Snapshot, tenant: &str, metric_id: i32) -> bool {
        let (active, _) = self.tenant_limits(snapshot, tenant);
        active > 0 || self.metric_limit(snapshot, metric_id) > 0
    }

    /// Starts deciding on the new series of one request; the first one of a connector reads
    /// the counts first, so that a connector that has just started does not take the series
    /// the store has for none.
    pub async fn admission(&self) -> Result<Admission<'_>, sqlx::Error> {
        if !self.snapshot().loaded {
            self.refresh().await?;
        }
        Ok(Admission {
            limits: self,
            minute: now_seconds().div_euclid(60),
            admitted: Vec::new(),
            counted: false,
        })
    }

    /// After a request's transaction committed: adds the series it created (`admission`) to
    /// the counts of their minute, and marks the series of limited tenants and metrics that
    /// received samples active in the current window (once per window each). Statements of
    /// their own; a failure is returned, the request is not.
    pub async fn committed(
        &self,
        admission: Option<Admission<'_>>,
        series: impl IntoIterator<Item = (&str, SeriesId)>,
    ) -> Result<(), sqlx::Error> {
        if !self.any() && admission.is_none() {
            return Ok(());
        }
        let window = now_seconds().div_euclid(WINDOW_SECONDS) * WINDOW_SECONDS;
        let (mut tenants, mut ids) = (Vec::new(), Vec::new());
        {
            let snapshot = self.snapshot();
            let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            if marks.0 != window {
                *marks = (window, HashSet::new());
            }
            for (tenant, id) in series {
                if id == 0 || !self.tracks(&snapshot, tenant, crate::storage::samples::metric_of(id)) {
                    continue;
                }
                if marks.1.insert(id) {
                    tenants.push(tenant.to_string());
                    ids.push(id);
                }
            }
        }
        let _writing = self.writes.read().await;
        let mut created: HashMap<String, u64> = HashMap::new();
        if let Some(a) = &admission {
            for (tenant, _) in &a.admitted {
                *created.entry(tenant.clone()).or_default() += 1;
            }
        }
        let counted = if created.is_empty() {
            Ok(())
        } else {
            let minute = admission.as_ref().map_or(0, |a| a.minute);
            crate::storage::limits::add_created(&self.pool, &created, minute).await
        };
        let marked = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            crate::storage::limits::mark_active(&self.pool, &tenants, &ids, window).await
        };
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut a) = admission {
                a.counted = true;
                for (tenant, metric) in &a.admitted {
                    counts.pending.add(tenant, *metric, Some(a.minute), -1);
                    if counted.is_ok() {
                        *counts.since.created.entry((tenant.clone(), a.minute)).or_default() += 1;
                    }
                }
            }
            if let Ok(newly_active) = &marked {
                for (tenant, id) in newly_active {
                    counts
                        .since
                        .add(tenant, crate::storage::samples::metric_of(*id), None, 1);
                }
            }
        }
        if marked.is_err() {
            // Marked again with their next samples.
            let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                marks.1.remove(id);
            }
        }
        counted.and(marked.map(|_| ()))
    }

    /// Reads the limits and counts again; then forgets marks and counts too old to matter.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let now = now_seconds();
        let minute = now.div_euclid(60);
        let since = now.div_euclid(WINDOW_SECONDS) * WINDOW_SECONDS - WINDOW_SECONDS;
        {
            let _reading = self.writes.write().await;
            let read = crate::storage::limits::read(&self.pool, minute, since).await?;
            let mut snapshot = Snapshot {
                tenants: read.tenants.into_iter().collect(),
                metrics: read.metrics.into_iter().collect(),
                minute,
                loaded: true,
                ..Default::default()
            };
            for (tenant, metric, n) in read.active {
                *snapshot.active.entry(tenant.clone()).or_default() += n;
                snapshot.active_of_metric.insert((tenant, metric), n);
            }
            snapshot.created = read.created.into_iter().collect();
            let any = self.flags != SeriesLimitFlags::default()
                || snapshot
                    .tenants
                    .values()
                    .any(|t| t.max_active_series.unwrap_or(0) > 0 || t.max_new_series_per_minute.unwrap_or(0) > 0)
                || snapshot.metrics.values().any(|&l| l > 0);
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
            counts.since = Local::default();
            self.any.store(any, Ordering::Relaxed);
        }
        if let Err(e) = crate::storage::limits::forget(&self.pool, minute, since).await {
            tracing::debug!(error = %e, "forgetting old series marks failed; the next refresh tries again");
        }
        Ok(())
    }

    /// Refreshes every `interval` once `ready` (the schema migrated) until the process
    /// ends; a failed read keeps the last.
    pub async fn refresh_loop(self: Arc<Self>, interval: Duration, ready: impl Fn() -> bool) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            if !ready() {
                continue;
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading the series limits failed; the last ones read still apply");
            }
        }
    }
}

impl Admission<'_> {
    /// Whether a new series of `tenant` and `metric_id` may be created; if so, it takes its
    /// room at once.
    pub fn admit(&mut self, tenant: &str, metric_id: i32) -> Result<(), Refusal> {
        let limits = self.limits;
        let mut counts = limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = limits.snapshot();
        let (max_active, max_new) = limits.tenant_limits(&snapshot, tenant);
        let max_of_metric = limits.metric_limit(&snapshot, metric_id);
        if max_active == 0 && max_new == 0 && max_of_metric == 0 {
            return Ok(());
        }
        let of = |l: &Local| {
            (
                l.active.get(tenant).copied().unwrap_or(0),
                l.active_of_metric
                    .get(&(tenant.to_string(), metric_id))
                    .copied()
                    .unwrap_or(0),
                l.created.get(&(tenant.to_string(), self.minute)).copied().unwrap_or(0),
            )
        };
        let (since, pending) = (of(&counts.since), of(&counts.pending));
        if max_active > 0 {
            let active = snapshot.active.get(tenant).copied().unwrap_or(0) + since.0 + pending.0;
            if active >= max_active {
                return Err(Refusal::ActiveSeries {
                    tenant: tenant.to_string(),
                    limit: max_active,
                });
            }
        }
        if max_of_metric > 0 {
            let active = snapshot
                .active_of_metric
                .get(&(tenant.to_string(), metric_id))
                .copied()
                .unwrap_or(0)
                + since.1
                + pending.1;
            if active >= max_of_metric {
                return Err(Refusal::MetricActiveSeries {
                    tenant: tenant.to_string(),
                    limit: max_of_metric,
                });
            }
        }
        if max_new > 0 {
            let stored = if snapshot.minute == self.minute {
                snapshot.created.get(tenant).copied().unwrap_or(0)
            } else {
                0
            };
            if stored + since.2 + pending.2 >= max_new {
                return Err(Refusal::NewSeries {
                    tenant: tenant.to_string(),
                    limit: max_new,
                });
            }
        }
        counts.pending.add(tenant, metric_id, Some(self.minute), 1);
        self.admitted.push((tenant.to_string(), metric_id));
        Ok(())
    }

    /// Series admitted, per tenant.
    #[cfg(test)]
    fn created(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for (tenant, _) in &self.admitted {
            *out.entry(tenant.clone()).or_default() += 1;
        }
        out
    }
}

impl Drop for Admission<'_> {
    /// A request that did not commit gives its room back.
    fn drop(&mut self) {
        if self.counted || self.admitted.is_empty() {
            return;
        }
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (tenant, metric) in &self.admitted {
            counts.pending.add(tenant, *metric, Some(self.minute), -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(flags: SeriesLimitFlags) -> SeriesLimits {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .expect("lazy pool");
        let l = SeriesLimits::new(pool, flags);
        *l.snapshot.write().unwrap() = Arc::new(Snapshot {
            loaded: true,
            minute: now_seconds().div_euclid(60),
            ..Default::default()
        });
        l
    }

    fn admission(l: &SeriesLimits) -> Admission<'_> {
        Admission {
            limits: l,
            minute: now_seconds().div_euclid(60),
            admitted: Vec::new(),
            counted: false,
        }
    }

    #[tokio::test]
    async fn new_series_are_admitted_up_to_each_limit_and_requests_at_once_share_the_room() {
        let l = limits(SeriesLimitFlags {
            max_active_series: 3,
            max_active_series_per_metric: 2,
            max_new_series_per_minute: 0,
        });
        let mut a = admission(&l);
        assert!(a.admit("a", 1).is_ok());
        assert!(a.admit("a", 1).is_ok());
        assert_eq!(a.admit("a", 1).unwrap_err().reason(), "metric_series_limit");
        // A request running at the same time sees the room the first one took.
        let mut b = admission(&l);
        assert!(b.admit("a", 2).is_ok());
        assert_eq!(a.admit("a", 3).unwrap_err().reason(), "series_limit");
        // Another tenant has limits of its own.
        assert!(a.admit("b", 1).is_ok());
        assert_eq!(a.created().get("a"), Some(&2));
        // A request that does not commit gives its room back.
        drop(b);
        assert!(a.admit("a", 3).is_ok());
        assert_eq!(a.admit("a", 4).unwrap_err().reason(), "series_limit");
    }

    #[tokio::test]
    async fn new_series_per_minute_and_the_database_counts_add_up() {
        let l = limits(SeriesLimitFlags {
            max_new_series_per_minute: 2,
            ..Default::default()
        });
        let minute = now_seconds().div_euclid(60);
        {
            let mut snapshot = Snapshot {
                loaded: true,
                minute,
                ..Default::default()
            };
            snapshot.created.insert("a".into(), 1);
            snapshot.tenants.insert(
                "c".into(),
                TenantLimits {
                    max_new_series_per_minute: Some(0),
                    ..Default::default()
                },
            );
            *l.snapshot.write().unwrap() = Arc::new(snapshot);
        }
        let mut a = admission(&l);
        if a.minute != minute {
            return; // the minute turned between the two lines: nothing to check
        }
        assert!(a.admit("a", 1).is_ok());
        let refused = a.admit("a", 1).unwrap_err();
        assert_eq!(refused.reason(), "new_series_limit");
        assert!(
            refused.detail().contains("tenant \"a\" created its limit of 2"),
            "{}",
            refused.detail()
        );
        // A tenant whose own limit is 0 has none.
        for _ in 0..5 {
            assert!(a.admit("c", 1).is_ok());
        }
    }

    #[tokio::test]
    async fn without_limits_nothing_is_tracked() {
        let l = limits(SeriesLimitFlags::default());
        assert!(!l.any());
        let mut a = admission(&l);
        assert!(a.admit("a", 1).is_ok());
        // No database is asked (the pool points nowhere): nothing to count or mark.
        let mut a = admission(&l);
        a.counted = true;
        l.committed(None, [("a", 1i64 << 40 | 1)]).await.unwrap();
    }
}
