//! The connector's identity and the one permission it needs: writing its own entry into its
//! stack's status.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::names::StackNames;

pub fn service_account(names: &StackNames) -> ServiceAccount {
    ServiceAccount {
        metadata: names.metadata(),
        ..Default::default()
    }
}

/// Read and status-patch this one stack, nothing else.
pub fn role(names: &StackNames) -> Role {
    Role {
        metadata: names.metadata(),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![promscale_crds::GROUP.into()]),
                resources: Some(vec!["promscalestacks".into()]),
                resource_names: Some(vec![names.stack.clone()]),
                verbs: vec!["get".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![promscale_crds::GROUP.into()]),
                resources: Some(vec!["promscalestacks/status".into()]),
                resource_names: Some(vec![names.stack.clone()]),
                verbs: vec!["get".into(), "patch".into()],
                ..Default::default()
            },
        ]),
    }
}

pub fn role_binding(names: &StackNames) -> RoleBinding {
    RoleBinding {
        metadata: names.metadata(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: names.connector.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names.connector.clone(),
            namespace: Some(names.namespace.clone()),
            ..Default::default()
        }]),
    }
}
