//! The connector's own metrics, served on `/metrics` in Prometheus' text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantReasonLabel {
    pub tenant: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub write_requests: Family<CodeLabel, Counter>,
    pub write_protocols: Family<ProtocolLabel, Counter>,
    pub samples_ingested: Counter,
    pub samples_expired: Counter,
    pub samples_compacted: Counter,
    pub head_rows_merged: Counter,
    pub metadata_ingested: Counter,
    pub exemplars_dropped: Counter,
    pub exemplars_ingested: Counter,
    pub histograms_ingested: Counter,
    pub metadata_dropped: Counter,
    pub series_refused: Family<ReasonLabel, Counter>,
    pub samples_refused: Family<ReasonLabel, Counter>,
    /// With --metrics.multi-tenancy: samples and native histograms committed, by tenant.
    pub tenant_samples_ingested: Family<TenantLabel, Counter>,
    /// With --metrics.multi-tenancy: samples refused, by tenant and reason.
    pub tenant_samples_refused: Family<TenantReasonLabel, Counter>,
    /// The tenants named in the per-tenant families (see [`Metrics::tenant_label`]).
    tenants_named: std::sync::Mutex<std::collections::HashSet<String>>,
    pub series_cache_hits: Counter,
    pub series_cache_misses: Counter,
    pub series_cache_evictions: Counter,
    pub series_creation_conflicts: Counter,
    pub series_cache_entries: Gauge,
    pub write_request_duration: Histogram,
    pub db_write_duration: Histogram,
    pub db_batch_samples: Histogram,
    pub db_batch_requests: Histogram,
    pub last_commit_timestamp: Gauge,
    pub maintenance_runs: Family<ResultLabel, Counter>,
    pub maintenance_duration: Histogram,
    pub ha_takeovers: Counter,
    pub ha_standby_samples: Counter,
    pub ha_fenced_samples: Counter,
    pub ha_replayed_samples: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Most tenants named in the per-tenant families; later ones are counted as `other`, so that a
/// writer naming ever new tenants cannot grow `/metrics` without bound.
const MAX_TENANT_LABELS: usize = 1_000;

impl Metrics {
    /// The `tenant` label value a tenant is counted under.
    pub fn tenant_label(&self, tenant: &str) -> String {
        let mut named = self.tenants_named.lock().unwrap_or_else(|e| e.into_inner());
        if named.contains(tenant) {
            return tenant.to_string();
        }
        if named.len() < MAX_TENANT_LABELS {
            named.insert(tenant.to_string());
            return tenant.to_string();
        }
        "other".to_string()
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            write_requests: Family::default(),
            write_protocols: Family::default(),
            samples_ingested: Counter::default(),
            samples_expired: Counter::default(),
            samples_compacted: Counter::default(),
            head_rows_merged: Counter::default(),
            metadata_ingested: Counter::default(),
            exemplars_dropped: Counter::default(),
            exemplars_ingested: Counter::default(),
            histograms_ingested: Counter::default(),
            metadata_dropped: Counter::default(),
            series_refused: Family::default(),
            samples_refused: Family::default(),
            tenant_samples_ingested: Family::default(),
            tenant_samples_refused: Family::default(),
            tenants_named: Default::default(),
            series_cache_hits: Counter::default(),
            series_cache_misses: Counter::default(),
            series_cache_evictions: Counter::default(),
            series_creation_conflicts: Counter::default(),
            series_cache_entries: Gauge::default(),
            write_request_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            db_write_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            db_batch_samples: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            db_batch_requests: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            last_commit_timestamp: Gauge::default(),
            maintenance_runs: Family::default(),
            maintenance_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            ha_takeovers: Counter::default(),
            ha_standby_samples: Counter::default(),
            ha_fenced_samples: Counter::default(),
            ha_replayed_samples: Counter::default(),
            registry: Registry::default(),
        };
        let build_info: Family<VersionLabel, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "promscale_build_info",
            "Version of this connector; always 1",
            build_info,
        );
        registry.register(
            "promscale_ingest_requests",
            "Remote-write requests answered, by HTTP status code",
            m.write_requests.clone(),
        );
        registry.register(
            "promscale_ingest_protocol_requests",
            "Remote-write requests received, by protocol version (1.0, 2.0)",
            m.write_protocols.clone(),
        );
        registry.register(
            "promscale_ingest_samples",
            "Samples committed to the database",
            m.samples_ingested.clone(),
        );
        registry.register(
            "promscale_ingest_samples_expired",
            "Samples received and not kept because they lie beyond their metric's retention period (dropped by compaction)",
            m.samples_expired.clone(),
        );
        registry.register(
            "promscale_compaction_samples",
            "Samples moved from the head into series chunks",
            m.samples_compacted.clone(),
        );
        registry.register(
            "promscale_compaction_head_rows_merged",
            "Small head rows merged into bigger ones before compaction",
            m.head_rows_merged.clone(),
        );
        registry.register(
            "promscale_ingest_metadata",
            "Metric metadata entries stored",
            m.metadata_ingested.clone(),
        );
        registry.register(
            "promscale_ingest_metadata_dropped",
            "Metadata entries received and not stored because the catalog cannot hold them (a NUL byte, a name or unit over 1024 bytes)",
            m.metadata_dropped.clone(),
        );
        registry.register(
            "promscale_ingest_exemplars_dropped",
            "Exemplars received and not stored: invalid (labels over 128 characters, bad names, a time PostgreSQL cannot hold), of a series left out, or with --exemplars.max-per-series 0",
            m.exemplars_dropped.clone(),
        );
        registry.register(
            "promscale_ingest_exemplars",
            "Exemplars committed to the database",
            m.exemplars_ingested.clone(),
        );
        registry.register(
            "promscale_ingest_histograms",
            "Native histogram samples committed to the database",
            m.histograms_ingested.clone(),
        );
        registry.register(
            "promscale_ingest_series_refused",
            "Series (or parts of series) left out of remote-write requests whose other series were stored, by reason",
            m.series_refused.clone(),
        );
        registry.register(
            "promscale_ingest_samples_refused",
            "Samples left out of remote-write requests whose other samples were stored, by reason",
            m.samples_refused.clone(),
        );
        registry.register(
            "promscale_tenant_samples_ingested",
            "Samples and native histograms committed, by tenant (with --metrics.multi-tenancy)",
            m.tenant_samples_ingested.clone(),
        );
        registry.register(
            "promscale_tenant_samples_refused",
            "Samples and native histograms refused, by tenant and reason (with --metrics.multi-tenancy; rate_limited included)",
            m.tenant_samples_refused.clone(),
        );
        registry.register(
            "promscale_ha_takeovers",
            "HA leases this connector gave to a replica (the first of a cluster, or a standby taking over from a leader that stopped sending)",
            m.ha_takeovers.clone(),
        );
        registry.register(
            "promscale_ha_standby_samples",
            "Samples and native histograms received from HA standbys, not stored (kept aside for a takeover while newer than the leader's)",
            m.ha_standby_samples.clone(),
        );
        registry.register(
            "promscale_ha_fenced_samples",
            "Samples and native histograms of an HA leader at or before the previous leader's newest, not stored",
            m.ha_fenced_samples.clone(),
        );
        registry.register(
            "promscale_ha_replayed_samples",
            "Samples and native histograms a standby sent before it took over, stored after the takeover",
            m.ha_replayed_samples.clone(),
        );
        registry.register(
            "promscale_series_cache_hits",
            "Series ids found in the connector's cache",
            m.series_cache_hits.clone(),
        );
        registry.register(
            "promscale_series_cache_misses",
            "Series ids looked up in or created by the database",
            m.series_cache_misses.clone(),
        );
        registry.register(
            "promscale_series_cache_evictions",
            "Series dropped from the cache to respect --cache.series-max-entries",
            m.series_cache_evictions.clone(),
        );
        registry.register(
            "promscale_series_creation_conflicts",
            "Requests whose COPY of new series met some already created (by another connector, at the same moment or since the last merge pass, or by this one before a restart): their transaction was rolled back and the series looked up",
            m.series_creation_conflicts.clone(),
        );
        registry.register(
            "promscale_series_cache_entries",
            "Series currently cached",
            m.series_cache_entries.clone(),
        );
        registry.register(
            "promscale_ingest_request_duration_seconds",
            "Time from receiving a remote-write request to answering it",
            m.write_request_duration.clone(),
        );
        registry.register(
            "promscale_ingest_db_write_duration_seconds",
            "Time to write and commit one batch of samples",
            m.db_write_duration.clone(),
        );
        registry.register(
            "promscale_ingest_db_batch_samples",
            "Samples per database transaction",
            m.db_batch_samples.clone(),
        );
        registry.register(
            "promscale_ingest_db_batch_requests",
            "Remote-write requests committed together in one transaction",
            m.db_batch_requests.clone(),
        );
        registry.register(
            "promscale_ingest_last_commit_timestamp_seconds",
            "Unix time of the last successful sample commit",
            m.last_commit_timestamp.clone(),
        );
        registry.register(
            "promscale_maintenance_runs",
            "Scheduled maintenance runs, by result: done, skipped (another connector ran it) or failed",
            m.maintenance_runs.clone(),
        );
        registry.register(
            "promscale_maintenance_duration_seconds",
            "Time taken by scheduled maintenance runs",
            m.maintenance_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
