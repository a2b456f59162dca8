//! The PodDisruptionBudget: node drains take connector pods down one at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::StackNames;

pub fn disruption_budget(names: &StackNames) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: names.metadata(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
