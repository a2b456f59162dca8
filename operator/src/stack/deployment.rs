//! Where a PromscaleStack becomes the connector Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use promscale_crds::stack::{SecretKeyRef, CONNECTOR_PORT};
use promscale_crds::PromscaleStackSpec;
use sha2::{Digest, Sha256};

use super::names::StackNames;

/// The user and group the connector runs as: not root, and the same number the images use.
pub const CONNECTOR_UID: i64 = 65532;
/// Pod annotation whose change rolls the pods when their configuration or credentials change.
pub const CONFIG_HASH_ANNOTATION: &str = "promscale.dev/config-hash";
/// The only writable path in the container (the root filesystem is read-only).
pub const TMP_DIR: &str = "/tmp";

pub struct DeploymentInput<'a> {
    pub names: &'a StackNames,
    pub spec: &'a PromscaleStackSpec,
    pub default_image: &'a str,
    /// The ConfigMap's data, hashed into the pod template.
    pub config: &'a BTreeMap<String, String>,
    /// `name@resourceVersion` of the database Secrets, hashed into the pod template.
    pub secret_versions: &'a [String],
}

pub fn deployment(input: &DeploymentInput) -> Deployment {
    let names = input.names;
    let connector = &input.spec.connector;
    let mut annotations = connector.pod_annotations.clone();
    annotations.insert(
        CONFIG_HASH_ANNOTATION.into(),
        config_hash(input.config, input.secret_versions),
    );

    Deployment {
        metadata: names.metadata(),
        spec: Some(DeploymentSpec {
            replicas: Some(connector.replicas),
            selector: LabelSelector {
                match_labels: Some(names.selector()),
                ..Default::default()
            },
            // A new pod is ready before an old one goes: ingestion never loses capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels()),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec(input)),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(input: &DeploymentInput) -> PodSpec {
    let connector = &input.spec.connector;
    PodSpec {
        service_account_name: Some(input.names.connector.clone()),
        automount_service_account_token: Some(true),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(CONNECTOR_UID),
            run_as_group: Some(CONNECTOR_UID),
            fs_group: Some(CONNECTOR_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container(input)],
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        image_pull_secrets: non_empty(connector.image_pull_secrets.clone()),
        node_selector: (!connector.node_selector.is_empty()).then(|| connector.node_selector.clone()),
        tolerations: non_empty(connector.tolerations.clone()),
        affinity: connector.affinity.clone(),
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    }
}

fn container(input: &DeploymentInput) -> Container {
    let connector = &input.spec.connector;
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    };
    Container {
        name: "connector".into(),
        image: Some(
            connector
                .image
                .clone()
                .unwrap_or_else(|| input.default_image.to_string()),
        ),
        image_pull_policy: connector.image_pull_policy.map(|p| p.as_str().to_string()),
        args: non_empty(connector.extra_args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: CONNECTOR_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: input.names.connector.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(env(input)),
        // The schema is migrated and the database answers: ready for writes.
        readiness_probe: Some(probe("/readyz", 10, 3)),
        // Only a hung process fails liveness; a database outage must not restart pods.
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: connector.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: TMP_DIR.into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The pod identity (for status reports) and the credentials, which come from Secrets and so
/// stay out of the ConfigMap.
fn env(input: &DeploymentInput) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret = |name: &str, reference: &SecretKeyRef| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: reference.name.clone(),
                key: reference.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let database = &input.spec.database;
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
    ];
    if let Some(uri) = &database.uri_secret_ref {
        env.push(secret("PROMSCALE_DB_URI", uri));
    }
    if let Some(password) = &database.password_secret_ref {
        env.push(secret("PROMSCALE_DB_PASSWORD", password));
    }
    env.extend(input.spec.connector.extra_env.iter().cloned());
    env
}

fn config_hash(config: &BTreeMap<String, String>, secret_versions: &[String]) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    for version in secret_versions {
        hasher.update(version.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}
