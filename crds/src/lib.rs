//! The custom resources of promscale-rs, group `promscale.dev`, version `v1alpha1`:
//!
//! - [`PromscaleStack`]: a connector Deployment and Service in front of one PostgreSQL database,
//!   with the database-wide defaults for retention, chunk interval and compression;
//! - [`MetricPolicy`]: retention, chunk interval and compression for the metrics of a stack
//!   that match names or a regex.
//!
//! These Rust types are the single source of truth: the YAML under `crds/` and in the Helm chart
//! is generated from them (`make crds`), and a test fails when the checked-in YAML drifts.

pub mod conditions;
pub mod duration;
pub mod policy;
pub mod stack;

pub use policy::{MetricPolicy, MetricPolicySpec, MetricPolicyStatus};
pub use stack::{ConnectorStatus, PromscaleStack, PromscaleStackSpec, PromscaleStackStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const GROUP: &str = "promscale.dev";

/// Every CRD of the project, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![PromscaleStack::crd(), MetricPolicy::crd()]
}

/// The file name each CRD is written to (`<group>_<plural>.yaml`, as controller-gen names them).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

const HEADER: &str = "# Generated from the Rust types in crds/src by `make crds`; do not edit.\n";

/// The YAML document of a CRD, with a header saying where it comes from.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd).expect("a CRD always serializes");
    format!("{HEADER}---\n{body}")
}

/// The same CRD as a template of the Helm chart: installed and upgraded with the release
/// (Helm's `crds/` folder is never upgraded), kept when the release is uninstalled, so that
/// uninstalling the operator never deletes anybody's stacks and policies.
pub fn to_chart_template(crd: &CustomResourceDefinition) -> String {
    let mut crd = crd.clone();
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("helm.sh/resource-policy".into(), "keep".into());
    let body = serde_saphyr::to_string(&crd).expect("a CRD always serializes");
    let labels = "metadata:\n  labels:\n    {{- include \"promscale-operator.labels\" . | nindent 4 }}\n";
    let body = body.replacen("metadata:\n", labels, 1);
    format!("{{{{- if .Values.crds.install }}}}\n{HEADER}{body}{{{{- end }}}}\n")
}
