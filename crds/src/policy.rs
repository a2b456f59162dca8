//! `MetricPolicy`: retention, chunk interval and compression for some metrics of a stack.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::duration;

/// A MetricPolicy sets retention, chunk interval and/or compression for the metrics of a
/// PromscaleStack that match its names or regex; what it leaves unset stays at the stack's
/// defaults. When two policies claim one metric, both report the conflict and one of them wins:
/// a policy naming the metric exactly beats a regex, then the older policy, then the
/// alphabetically first. Deleting a policy resets its metrics to the defaults.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "promscale.dev",
    version = "v1alpha1",
    kind = "MetricPolicy",
    namespaced,
    status = "MetricPolicyStatus",
    shortname = "mpol",
    category = "promscale",
    derive = "PartialEq",
    doc = "Retention, chunk interval and compression for the metrics of a PromscaleStack that match names or a regex.",
    printcolumn(name = "Stack", type_ = "string", json_path = ".spec.stackRef.name"),
    printcolumn(name = "Retention", type_ = "string", json_path = ".spec.retentionPeriod"),
    printcolumn(name = "Chunk", type_ = "string", json_path = ".spec.chunkInterval"),
    printcolumn(name = "Compression", type_ = "boolean", json_path = ".spec.compression"),
    printcolumn(name = "Metrics", type_ = "integer", json_path = ".status.appliedMetrics", description = "metrics the policy is applied to"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.retentionPeriod) || has(self.spec.chunkInterval) || has(self.spec.compression) || has(self.spec.maxActiveSeries)")
        .message("set at least one of spec.retentionPeriod, spec.chunkInterval, spec.compression or spec.maxActiveSeries")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricPolicySpec {
    /// The PromscaleStack (in this namespace) whose database the policy applies to.
    pub stack_ref: StackRef,
    /// Which metrics: exact names, a regex, or both.
    pub metrics: MetricSelector,
    /// How long samples of these metrics are kept, e.g. `3d`, `2y`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    #[schemars(length(max = 40))]
    pub retention_period: Option<String>,
    /// Time span of one chunk table of these metrics, e.g. `1h`; applies to chunks created from
    /// then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    #[schemars(length(max = 40))]
    pub chunk_interval: Option<String>,
    /// Whether closed chunks of these metrics are compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
    /// Active series (with samples in the last 10 to 20 minutes) each tenant may have of each
    /// of these metrics; beyond, new series are left out and the series it has keep being
    /// written. 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_active_series: Option<i64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StackRef {
    /// Name of the PromscaleStack.
    #[x_kube(validation = Rule::new("self != ''").message("stackRef.name must not be empty"))]
    pub name: String,
}

/// Metric names match exactly; the regex is anchored at both ends, as in PromQL
/// (`debug_.*` matches `debug_queue_depth`, not `app_debug_x`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.names) > 0 || has(self.regex)").message("metrics needs names, a regex, or both"))]
pub struct MetricSelector {
    /// Exact metric names: any non-empty UTF-8, as Prometheus 3 accepts them
    /// (`http.server.duration`).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(n, size(n) > 0)").message("metrics.names must not hold an empty name"))]
    #[schemars(length(max = 100), inner(length(max = 200)))]
    pub names: Vec<String>,
    /// A regular expression (RE2 syntax, as in PromQL's =~) over metric names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("metrics.regex must not be empty; leave it out instead"))]
    #[schemars(length(max = 1024))]
    pub regex: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricPolicyStatus {
    /// The `metadata.generation` the rest of this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Metrics in the database this policy's settings are applied to.
    #[serde(default)]
    pub applied_metrics: i32,
    /// Names listed in spec.metrics.names that the database does not hold yet; the policy is
    /// applied to them once they are written.
    #[serde(default)]
    pub pending_metrics: i32,
    /// Metrics also claimed by another policy of the same stack (at most 20 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<PolicyConflict>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConflict {
    /// The metric claimed twice or more.
    pub metric: String,
    /// Every policy claiming it.
    pub policies: Vec<String>,
    /// The policy whose settings apply.
    pub winner: String,
}
