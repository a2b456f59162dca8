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
/// Series marks remembered by a connector at most; beyond, it starts over (and marks again).
const MAX_MARKS: usize = 10_000_000;

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

/// What this connector added since the last refresh.
#[derive(Debug, Default)]
struct Local {
    active: HashMap<String, u64>,
    active_of_metric: HashMap<(String, i32), u64>,
    /// By tenant and unix minute.
    created: HashMap<(String, i64), u64>,
}

/// What this connector created, in two parts: `current` since the running (or last) refresh
/// began reading, `previous` before it. Creations are added only once the database holds
/// them, so a refresh's read holds all of `previous`, which it drops once done.
#[derive(Debug, Default)]
struct Locals {
    current: Local,
    previous: Local,
}

impl Locals {
    fn active(&self, tenant: &str) -> u64 {
        [&self.current, &self.previous]
            .iter()
            .map(|l| l.active.get(tenant).copied().unwrap_or(0))
            .sum()
    }

    fn active_of_metric(&self, key: &(String, i32)) -> u64 {
        [&self.current, &self.previous]
            .iter()
            .map(|l| l.active_of_metric.get(key).copied().unwrap_or(0))
            .sum()
    }

    fn created(&self, key: &(String, i64)) -> u64 {
        [&self.current, &self.previous]
            .iter()
            .map(|l| l.created.get(key).copied().unwrap_or(0))
            .sum()
    }
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
    snapshot: RwLock<Arc<Snapshot>>,
    local: Mutex<Locals>,
    /// The window each series was last marked in.
    marks: Mutex<HashMap<SeriesId, i64>>,
}

/// The budget of one request's new series, taken from as they are admitted.
pub struct Admission<'a> {
    limits: &'a SeriesLimits,
    snapshot: Arc<Snapshot>,
    minute: i64,
    /// Per tenant: admitted in this request.
    admitted: HashMap<String, u64>,
    admitted_of_metric: HashMap<(String, i32), u64>,
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
            local: Default::default(),
            marks: Default::default(),
        }
    }

    /// Whether some limit may refuse a series now.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    fn tenant_limits(&self, snapshot: &Snapshot, tenant: &str) -> (u64, u64) {
        let own = snapshot.tenants.get(tenant).copied().unwrap_or_default();
        (
            own.max_active_series.unwrap_or(self.flags.max_active_series),
            own.max_new_series_per_minute
                .unwrap_or(self.flags.max_new_series_per_minute),
        )
    }

    /// A tenant's own ingestion rate and burst, if set in SQL.
    pub fn ingestion_rate(&self, tenant: &str) -> Option<(f64, Option<f64>)> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let own = snapshot.tenants.get(tenant)?;
        own.ingestion_rate.map(|rate| (rate, own.ingestion_burst))
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
        if !self.snapshot.read().unwrap_or_else(|e| e.into_inner()).loaded {
            self.refresh().await?;
        }
        Ok(self.admission_now())
    }

    fn admission_now(&self) -> Admission<'_> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone();
        Admission {
            limits: self,
            snapshot,
            minute: now_seconds().div_euclid(60),
            admitted: HashMap::new(),
            admitted_of_metric: HashMap::new(),
        }
    }

    /// Marks the series of limited tenants and metrics that received samples (in a
    /// committed transaction) as active in the current window, once per window; the marks
    /// are written in a statement of their own.
    pub async fn mark_active(&self, series: impl IntoIterator<Item = (&str, SeriesId)>) -> Result<(), sqlx::Error> {
        if !self.any() {
            return Ok(());
        }
        let window = now_seconds().div_euclid(WINDOW_SECONDS) * WINDOW_SECONDS;
        let (mut tenants, mut ids) = (Vec::new(), Vec::new());
        {
            let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone();
            let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            if marks.len() >= MAX_MARKS {
                marks.clear();
            }
            let mut seen = HashSet::new();
            for (tenant, id) in series {
                if id == 0 || !seen.insert(id) {
                    continue;
                }
                if !self.tracks(&snapshot, tenant, crate::storage::samples::metric_of(id)) {
                    continue;
                }
                if marks.insert(id, window) != Some(window) {
                    tenants.push(tenant.to_string());
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        match crate::storage::limits::mark_active(&self.pool, &tenants, &ids, window).await {
            Ok(newly_active) => {
                // Series active from now on count here until the next refresh reads them.
                let mut locals = self.local.lock().unwrap_or_else(|e| e.into_inner());
                for (tenant, id) in newly_active {
                    let metric = crate::storage::samples::metric_of(id);
                    *locals
                        .current
                        .active_of_metric
                        .entry((tenant.clone(), metric))
                        .or_default() += 1;
                    *locals.current.active.entry(tenant).or_default() += 1;
                }
                Ok(())
            }
            Err(e) => {
                // Marked again with their next samples.
                let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
                for id in &ids {
                    marks.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Adds the series a committed transaction created to the counts of their minute.
    pub async fn created(&self, by_tenant: &HashMap<String, u64>, minute: i64) -> Result<(), sqlx::Error> {
        if by_tenant.is_empty() {
            return Ok(());
        }
        crate::storage::limits::add_created(&self.pool, by_tenant, minute).await
    }

    /// Reads the limits and counts again.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let current = std::mem::take(&mut local.current);
            let previous = &mut local.previous;
            for (k, n) in current.active {
                *previous.active.entry(k).or_default() += n;
            }
            for (k, n) in current.active_of_metric {
                *previous.active_of_metric.entry(k).or_default() += n;
            }
            for (k, n) in current.created {
                *previous.created.entry(k).or_default() += n;
            }
        }
        let now = now_seconds();
        let minute = now.div_euclid(60);
        let since = now.div_euclid(WINDOW_SECONDS) * WINDOW_SECONDS - WINDOW_SECONDS;
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
        {
            let mut current = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            *current = Arc::new(snapshot);
            local.previous = Local::default();
        }
        self.any.store(any, Ordering::Relaxed);
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
    /// Whether a new series of `tenant` and `metric_id` may be created; if so it counts
    /// from now on.
    pub fn admit(&mut self, tenant: &str, metric_id: i32) -> Result<(), Refusal> {
        let limits = self.limits;
        let (max_active, max_new) = limits.tenant_limits(&self.snapshot, tenant);
        let max_of_metric = limits.metric_limit(&self.snapshot, metric_id);
        if max_active == 0 && max_new == 0 && max_of_metric == 0 {
            return Ok(());
        }
        let local = limits.local.lock().unwrap_or_else(|e| e.into_inner());
        let here = self.admitted.get(tenant).copied().unwrap_or(0);
        if max_active > 0 {
            let active = self.snapshot.active.get(tenant).copied().unwrap_or(0) + local.active(tenant) + here;
            if active >= max_active {
                return Err(Refusal::ActiveSeries {
                    tenant: tenant.to_string(),
                    limit: max_active,
                });
            }
        }
        let key = (tenant.to_string(), metric_id);
        if max_of_metric > 0 {
            let active = self.snapshot.active_of_metric.get(&key).copied().unwrap_or(0)
                + local.active_of_metric(&key)
                + self.admitted_of_metric.get(&key).copied().unwrap_or(0);
            if active >= max_of_metric {
                return Err(Refusal::MetricActiveSeries {
                    tenant: tenant.to_string(),
                    limit: max_of_metric,
                });
            }
        }
        if max_new > 0 {
            let stored = if self.snapshot.minute == self.minute {
                self.snapshot.created.get(tenant).copied().unwrap_or(0)
            } else {
                0
            };
            let mine = local.created(&(tenant.to_string(), self.minute));
            if stored + mine + here >= max_new {
                return Err(Refusal::NewSeries {
                    tenant: tenant.to_string(),
                    limit: max_new,
                });
            }
        }
        drop(local);
        *self.admitted.entry(tenant.to_string()).or_default() += 1;
        *self.admitted_of_metric.entry(key).or_default() += 1;
        Ok(())
    }

    /// The series this request created per tenant, and the minute, for
    /// [`SeriesLimits::created`].
    pub fn created(&self) -> (&HashMap<String, u64>, i64) {
        (&self.admitted, self.minute)
    }

    /// Counts the series this request created in their minute, once the database holds
    /// them (committed and counted); they count as active once marked
    /// ([`SeriesLimits::mark_active`]).
    pub fn counted(self) {
        let limits = self.limits;
        let mut locals = limits.local.lock().unwrap_or_else(|e| e.into_inner());
        let local = &mut locals.current;
        for (tenant, n) in self.admitted {
            *local.created.entry((tenant, self.minute)).or_default() += n;
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
        SeriesLimits::new(pool, flags)
    }

    #[tokio::test]
    async fn new_series_are_admitted_up_to_each_limit() {
        let l = limits(SeriesLimitFlags {
            max_active_series: 3,
            max_active_series_per_metric: 2,
            max_new_series_per_minute: 0,
        });
        let mut a = l.admission_now();
        assert!(a.admit("a", 1).is_ok());
        assert!(a.admit("a", 1).is_ok());
        assert_eq!(a.admit("a", 1).unwrap_err().reason(), "metric_series_limit");
        assert!(a.admit("a", 2).is_ok());
        assert_eq!(a.admit("a", 3).unwrap_err().reason(), "series_limit");
        // Another tenant has limits of its own.
        assert!(a.admit("b", 1).is_ok());
        assert_eq!(a.created().0.get("a"), Some(&3));
        a.counted();
        // Series marked active count for the next request, until the next refresh.
        l.local.lock().unwrap().current.active.insert("a".into(), 3);
        let mut next = l.admission_now();
        assert_eq!(next.admit("a", 4).unwrap_err().reason(), "series_limit");
        assert!(next.admit("b", 4).is_ok());
    }

    #[tokio::test]
    async fn new_series_per_minute_and_the_database_counts_add_up() {
        let l = limits(SeriesLimitFlags {
            max_new_series_per_minute: 2,
            ..Default::default()
        });
        {
            let mut snapshot = Snapshot {
                minute: now_seconds().div_euclid(60),
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
        let mut a = l.admission_now();
        if a.minute != a.snapshot.minute {
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

    #[test]
    fn without_limits_nothing_is_tracked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = limits(SeriesLimitFlags::default());
            assert!(!l.any());
            let mut a = l.admission_now();
            assert!(a.admit("a", 1).is_ok());
            // No database is asked: the pool points nowhere.
            l.mark_active([("a", 1i64 << 40 | 1)]).await.unwrap();
        });
    }
}
