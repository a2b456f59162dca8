//! Names, labels and owner references shared by every object a stack owns.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use promscale_crds::PromscaleStack;

use crate::error::{Error, Result};

/// The identity of one stack's objects.
pub struct StackNames {
    pub stack: String,
    pub namespace: String,
    /// Name of the Deployment, Service, ServiceAccount, ConfigMap, Role, RoleBinding and PDB.
    pub connector: String,
    owner: OwnerReference,
}

impl StackNames {
    pub fn of(stack: &PromscaleStack) -> Result<Self> {
        let namespace = stack.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let mut owner = stack
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        // Foreground deletion of the stack waits for its objects to go first.
        owner.block_owner_deletion = Some(true);
        Ok(StackNames {
            connector: format!("{}-connector", stack.name_any()),
            stack: stack.name_any(),
            namespace,
            owner,
        })
    }

    /// The labels that select this stack's connector pods.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "promscale-connector".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.stack.clone()),
        ])
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector();
        labels.insert("app.kubernetes.io/component".into(), "connector".into());
        labels.insert("app.kubernetes.io/part-of".into(), "promscale".into());
        labels.insert("app.kubernetes.io/managed-by".into(), "promscale-operator".into());
        labels.insert("app.kubernetes.io/version".into(), env!("CARGO_PKG_VERSION").into());
        labels
    }

    /// Metadata of an owned object named after the connector: GC deletes it with the stack.
    pub fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.connector.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    /// The in-cluster host name of the Service.
    pub fn service_host(&self, cluster_domain: &str) -> String {
        format!("{}.{}.svc.{}", self.connector, self.namespace, cluster_domain)
    }

    /// The in-cluster base URL of the Service; https when the connectors serve TLS.
    pub fn service_url(&self, cluster_domain: &str, port: i32, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}:{port}", self.service_host(cluster_domain))
    }
}

/// Name of the connector's port in the pod and the Service: `https` when it serves TLS (so
/// that service meshes and other tools that go by port names do not take it for plain HTTP).
pub fn port_name(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}
