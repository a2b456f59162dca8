//! The operator's own metrics, served on `/metrics`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub controller: &'static str,
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ControllerLabel, Counter>,
    failures: Family<ErrorLabel, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciliations = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let leader = Gauge::default();
        registry.register(
            "promscale_operator_reconciliations",
            "Reconciliations started, by controller",
            reconciliations.clone(),
        );
        registry.register(
            "promscale_operator_reconcile_errors",
            "Reconciliations that failed and will be retried, by controller and reason",
            failures.clone(),
        );
        registry.register(
            "promscale_operator_reconcile_duration_seconds",
            "Time taken by one reconciliation, by controller",
            duration.clone(),
        );
        registry.register(
            "promscale_operator_leader",
            "1 while this replica holds the leader Lease and reconciles, else 0",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
        }
    }

    /// Counts a reconciliation and times it until the returned guard is dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciliations
            .get_or_create(&ControllerLabel { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    pub fn failed(&self, controller: &'static str, reason: &'static str) {
        self.failures.get_or_create(&ErrorLabel { controller, reason }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabel {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}
