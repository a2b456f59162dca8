//! Where a PromscaleStack becomes the connector Deployment.
//!
//! `spec.auth` becomes a read-only projected volume of the Secret keys it names (tokens,
//! passwords, the TLS certificate, key and client CA) under [`AUTH_DIR`], the connector flags
//! pointing at those files, and `secretKeyRef` environment variables for basic-auth user names.
//! Secret values never pass through here: the builder sees references only, and the kubelet
//! updates the mounted files when a Secret changes (the connector reads them again).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, SeccompProfile, SecretKeySelector, SecretProjection, SecurityContext, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use promscale_crds::stack::{AuthSpec, BasicAuth, SecretKeyRef, CONNECTOR_PORT, TLS_CERT_KEY, TLS_KEY_KEY};
use promscale_crds::PromscaleStackSpec;
use sha2::{Digest, Sha256};

use super::names::StackNames;

/// The user and group the connector runs as: not root, and the same number the images use.
pub const CONNECTOR_UID: i64 = 65532;
/// Pod annotation whose change rolls the pods when their configuration or credentials change.
pub const CONFIG_HASH_ANNOTATION: &str = "promscale.dev/config-hash";
/// The only writable path in the container (the root filesystem is read-only).
pub const TMP_DIR: &str = "/tmp";
/// Where the Secret keys of `spec.auth` are mounted, read-only.
pub const AUTH_DIR: &str = "/etc/promscale/auth";
/// Mode of the mounted Secret files: readable by their owner (root) and the pod's fsGroup,
/// which is the connector's group; nobody may write them.
pub const AUTH_FILE_MODE: i32 = 0o440;
const AUTH_VOLUME: &str = "auth";

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
        volumes: Some(volumes(input.spec.auth.as_ref())),
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
    let auth = input.spec.auth.as_ref();
    let tls = auth.is_some_and(|a| a.tls.is_some());
    let port_name = super::names::port_name(tls);
    // With TLS the connector serves HTTPS only, /healthz and /readyz included.
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port_name.into()),
            scheme: Some(if tls { "HTTPS" } else { "HTTP" }.into()),
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
        args: non_empty(
            auth_args(auth)
                .into_iter()
                .chain(connector.extra_args.iter().cloned())
                .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some(port_name.into()),
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
        volume_mounts: Some(volume_mounts(auth)),
        ..Default::default()
    }
}

fn volumes(auth: Option<&AuthSpec>) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let files = auth.map(auth_files).unwrap_or_default();
    if !files.is_empty() {
        // One projection per Secret (in the order first named), holding only the keys used.
        let mut sources: Vec<SecretProjection> = Vec::new();
        for file in &files {
            let item = KeyToPath {
                key: file.secret.key.clone(),
                path: file.path.clone(),
                mode: None,
            };
            match sources.iter_mut().find(|s| s.name == file.secret.name) {
                Some(source) => source.items.get_or_insert_with(Vec::new).push(item),
                None => sources.push(SecretProjection {
                    name: file.secret.name.clone(),
                    items: Some(vec![item]),
                    // A missing Secret or key keeps the pod from starting instead of
                    // starting it without the credentials.
                    optional: Some(false),
                }),
            }
        }
        volumes.push(Volume {
            name: AUTH_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(AUTH_FILE_MODE),
                sources: Some(
                    sources
                        .into_iter()
                        .map(|secret| VolumeProjection {
                            secret: Some(secret),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
    }
    volumes
}

fn volume_mounts(auth: Option<&AuthSpec>) -> Vec<VolumeMount> {
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: TMP_DIR.into(),
        ..Default::default()
    }];
    if auth.is_some_and(|a| !auth_files(a).is_empty()) {
        mounts.push(VolumeMount {
            name: AUTH_VOLUME.into(),
            mount_path: AUTH_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

/// One Secret key of `spec.auth` mounted as a file, and the connector flag naming it.
struct AuthFile {
    flag: &'static str,
    /// Relative to [`AUTH_DIR`].
    path: String,
    secret: SecretKeyRef,
}

/// Every Secret key `spec.auth` mounts, in the order of the connector's flags.
fn auth_files(auth: &AuthSpec) -> Vec<AuthFile> {
    let mut files = Vec::new();
    let scopes = [
        (
            "",
            auth.bearer_token.as_ref(),
            auth.basic_auth.as_ref(),
            ["--auth.bearer-token-file", "--auth.basic-password-file"],
        ),
        (
            "write/",
            auth.write.as_ref().and_then(|c| c.bearer_token.as_ref()),
            auth.write.as_ref().and_then(|c| c.basic_auth.as_ref()),
            ["--auth.write.bearer-token-file", "--auth.write.basic-password-file"],
        ),
        (
            "read/",
            auth.read.as_ref().and_then(|c| c.bearer_token.as_ref()),
            auth.read.as_ref().and_then(|c| c.basic_auth.as_ref()),
            ["--auth.read.bearer-token-file", "--auth.read.basic-password-file"],
        ),
    ];
    for (dir, token, basic, [token_flag, password_flag]) in scopes {
        if let Some(token) = token {
            files.push(AuthFile {
                flag: token_flag,
                path: format!("{dir}bearer-token"),
                secret: token.clone(),
            });
        }
        if let Some(basic) = basic {
            files.push(AuthFile {
                flag: password_flag,
                path: format!("{dir}basic-password"),
                secret: basic.password.clone(),
            });
        }
    }
    if let Some(tokens) = &auth.tenant_tokens {
        files.push(AuthFile {
            flag: "--auth.tenant-tokens-file",
            path: "tenants/tokens".into(),
            secret: tokens.clone(),
        });
    }
    if let Some(tls) = &auth.tls {
        let key = |key: &str| SecretKeyRef {
            name: tls.secret_name.clone(),
            key: key.into(),
        };
        files.push(AuthFile {
            flag: "--auth.tls-cert-file",
            path: format!("tls/{TLS_CERT_KEY}"),
            secret: key(TLS_CERT_KEY),
        });
        files.push(AuthFile {
            flag: "--auth.tls-key-file",
            path: format!("tls/{TLS_KEY_KEY}"),
            secret: key(TLS_KEY_KEY),
        });
        if let Some(ca) = &tls.client_ca {
            files.push(AuthFile {
                flag: "--auth.tls-client-ca-file",
                path: "tls/client-ca.crt".into(),
                secret: ca.clone(),
            });
        }
    }
    files
}

/// The connector flags naming the mounted files; they come before `extraArgs`.
fn auth_args(auth: Option<&AuthSpec>) -> Vec<String> {
    auth.map(auth_files)
        .unwrap_or_default()
        .into_iter()
        .map(|file| format!("{}={AUTH_DIR}/{}", file.flag, file.path))
        .collect()
}

/// The basic-auth user names: flag values of the connector, so environment variables from the
/// Secret (not secret, but kept out of the ConfigMap with the rest of the credentials).
pub fn auth_usernames(auth: &AuthSpec) -> Vec<(&'static str, &SecretKeyRef)> {
    fn basic(b: Option<&BasicAuth>) -> Option<&SecretKeyRef> {
        b.map(|b| &b.username)
    }
    [
        ("PROMSCALE_AUTH_BASIC_USERNAME", basic(auth.basic_auth.as_ref())),
        (
            "PROMSCALE_AUTH_WRITE_BASIC_USERNAME",
            basic(auth.write.as_ref().and_then(|c| c.basic_auth.as_ref())),
        ),
        (
            "PROMSCALE_AUTH_READ_BASIC_USERNAME",
            basic(auth.read.as_ref().and_then(|c| c.basic_auth.as_ref())),
        ),
    ]
    .into_iter()
    .filter_map(|(name, reference)| reference.map(|r| (name, r)))
    .collect()
}

/// Every Secret key `spec.auth` has the connector use, mounted or in the environment: what
/// must exist before a connector pod can start.
pub fn auth_secret_keys(auth: &AuthSpec) -> Vec<SecretKeyRef> {
    let mut keys: Vec<SecretKeyRef> = auth_usernames(auth).into_iter().map(|(_, r)| r.clone()).collect();
    keys.extend(auth_files(auth).into_iter().map(|f| f.secret));
    keys
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
    if let Some(auth) = &input.spec.auth {
        for (name, username) in auth_usernames(auth) {
            env.push(secret(name, username));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use promscale_crds::stack::{Credentials, DatabaseSpec, TlsSpec};
    use promscale_crds::PromscaleStack;

    fn key(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    fn spec(auth: Option<AuthSpec>) -> PromscaleStackSpec {
        let connector = promscale_crds::stack::ConnectorSpec {
            extra_args: vec!["--ingest.writers=2".into()],
            ..Default::default()
        };
        PromscaleStackSpec {
            connector,
            database: DatabaseSpec {
                uri_secret_ref: Some(key("metrics-db", "uri")),
                ..Default::default()
            },
            defaults: Default::default(),
            service: Default::default(),
            auth,
            tenant_limits: Vec::new(),
        }
    }

    /// Every kind of credential, each from its own place, sharing Secrets as users do.
    fn full_auth() -> AuthSpec {
        AuthSpec {
            bearer_token: Some(key("metrics-auth", "token")),
            basic_auth: Some(BasicAuth {
                username: key("metrics-auth", "username"),
                password: key("metrics-auth", "password"),
            }),
            write: Some(Credentials {
                bearer_token: Some(key("metrics-write", "token")),
                basic_auth: Some(BasicAuth {
                    username: key("metrics-write", "username"),
                    password: key("metrics-write", "password"),
                }),
            }),
            read: Some(Credentials {
                bearer_token: None,
                basic_auth: Some(BasicAuth {
                    username: key("metrics-read", "user"),
                    password: key("metrics-read", "pass"),
                }),
            }),
            tls: Some(TlsSpec {
                secret_name: "metrics-tls".into(),
                server_ca: None,
                client_ca: Some(key("metrics-client-ca", "ca.crt")),
                client_cert_secret_name: Some("prometheus-client".into()),
            }),
            tenant_tokens: Some(key("metrics-tenants", "tokens")),
        }
    }

    fn build(spec: &PromscaleStackSpec) -> Deployment {
        let mut stack = PromscaleStack::new("metrics", spec.clone());
        stack.metadata = ObjectMeta {
            name: Some("metrics".into()),
            namespace: Some("monitoring".into()),
            uid: Some("0a1b2c3d".into()),
            ..Default::default()
        };
        let names = StackNames::of(&stack).unwrap();
        let config = BTreeMap::from([("PROMSCALE_LOG_LEVEL".to_string(), "info".to_string())]);
        deployment(&DeploymentInput {
            names: &names,
            spec,
            default_image: "connector:test",
            config: &config,
            secret_versions: &["metrics-db@1".to_string()],
        })
    }

    fn pod(deployment: &Deployment) -> PodSpec {
        deployment.spec.clone().unwrap().template.spec.unwrap()
    }

    fn scheme(probe: &Option<Probe>) -> (Option<String>, IntOrString) {
        let get = probe.clone().unwrap().http_get.unwrap();
        (get.scheme, get.port)
    }

    #[test]
    fn promql_semantics_become_the_connector_environment_which_extra_args_may_override() {
        let mut stack = spec(None);
        stack.connector.promql_semantics = Some(promscale_crds::stack::PromqlSemantics::Prometheus2);
        let mut object = PromscaleStack::new("metrics", stack.clone());
        object.metadata.namespace = Some("monitoring".into());
        object.metadata.uid = Some("0a1b2c3d".into());
        let names = StackNames::of(&object).unwrap();
        let env = super::super::config_map::connector_env(&names, &stack);
        assert_eq!(env["PROMSCALE_METRICS_PROMQL_SEMANTICS"], "prometheus2");
        assert!(!super::super::config_map::connector_env(&names, &spec(None))
            .contains_key("PROMSCALE_METRICS_PROMQL_SEMANTICS"));
        // Not a flag: one in extraArgs is not given twice.
        assert_eq!(
            pod(&build(&stack)).containers[0].args.clone().unwrap(),
            vec!["--ingest.writers=2"]
        );
    }

    #[test]
    fn without_auth_nothing_is_mounted_and_probes_speak_http() {
        let deployment = build(&spec(None));
        let pod = pod(&deployment);
        let container = &pod.containers[0];
        assert_eq!(container.args.clone().unwrap(), vec!["--ingest.writers=2"]);
        assert_eq!(
            pod.volumes
                .clone()
                .unwrap()
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            vec!["tmp"]
        );
        assert_eq!(container.volume_mounts.clone().unwrap().len(), 1);
        assert!(!container
            .env
            .clone()
            .unwrap()
            .iter()
            .any(|e| e.name.starts_with("PROMSCALE_AUTH")));
        let http = (Some("HTTP".to_string()), IntOrString::String("http".into()));
        assert_eq!(scheme(&container.readiness_probe), http);
        assert_eq!(scheme(&container.liveness_probe), http);
        assert_eq!(container.ports.clone().unwrap()[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn auth_becomes_flags_on_mounted_files_username_variables_and_https_probes() {
        let deployment = build(&spec(Some(full_auth())));
        let pod = pod(&deployment);
        let container = &pod.containers[0];
        assert_eq!(
            container.args.clone().unwrap(),
            vec![
                "--auth.bearer-token-file=/etc/promscale/auth/bearer-token",
                "--auth.basic-password-file=/etc/promscale/auth/basic-password",
                "--auth.write.bearer-token-file=/etc/promscale/auth/write/bearer-token",
                "--auth.write.basic-password-file=/etc/promscale/auth/write/basic-password",
                "--auth.read.basic-password-file=/etc/promscale/auth/read/basic-password",
                "--auth.tenant-tokens-file=/etc/promscale/auth/tenants/tokens",
                "--auth.tls-cert-file=/etc/promscale/auth/tls/tls.crt",
                "--auth.tls-key-file=/etc/promscale/auth/tls/tls.key",
                "--auth.tls-client-ca-file=/etc/promscale/auth/tls/client-ca.crt",
                "--ingest.writers=2",
            ]
        );

        // One read-only projected volume, one projection per Secret with only the keys used.
        let volumes = pod.volumes.clone().unwrap();
        let auth = volumes.iter().find(|v| v.name == "auth").expect("the auth volume");
        let projected = auth.projected.clone().unwrap();
        assert_eq!(projected.default_mode, Some(0o440));
        type Source = (String, Vec<(String, String)>, Option<bool>);
        let sources: Vec<Source> = projected
            .sources
            .unwrap()
            .into_iter()
            .map(|s| {
                let s = s.secret.expect("Secrets only");
                let items = s.items.unwrap().into_iter().map(|i| (i.key, i.path)).collect();
                (s.name, items, s.optional)
            })
            .collect();
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
            items.iter().map(|(k, p)| (k.to_string(), p.to_string())).collect()
        };
        assert_eq!(
            sources,
            vec![
                (
                    "metrics-auth".to_string(),
                    pairs(&[("token", "bearer-token"), ("password", "basic-password")]),
                    Some(false)
                ),
                (
                    "metrics-write".to_string(),
                    pairs(&[("token", "write/bearer-token"), ("password", "write/basic-password")]),
                    Some(false)
                ),
                (
                    "metrics-read".to_string(),
                    pairs(&[("pass", "read/basic-password")]),
                    Some(false)
                ),
                (
                    "metrics-tenants".to_string(),
                    pairs(&[("tokens", "tenants/tokens")]),
                    Some(false)
                ),
                (
                    "metrics-tls".to_string(),
                    pairs(&[("tls.crt", "tls/tls.crt"), ("tls.key", "tls/tls.key")]),
                    Some(false)
                ),
                (
                    "metrics-client-ca".to_string(),
                    pairs(&[("ca.crt", "tls/client-ca.crt")]),
                    Some(false)
                ),
            ]
        );
        let mount = container
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "auth")
            .expect("the auth mount");
        assert_eq!(mount.mount_path, AUTH_DIR);
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.sub_path, None, "subPath mounts are never updated by the kubelet");
        // The files are readable by the connector's group, which the pod's fsGroup makes theirs.
        assert_eq!(pod.security_context.clone().unwrap().fs_group, Some(CONNECTOR_UID));

        // User names: secretKeyRef variables.
        let env = container.env.clone().unwrap();
        let usernames: Vec<(String, String, String)> = env
            .iter()
            .filter(|e| e.name.starts_with("PROMSCALE_AUTH_"))
            .map(|e| {
                assert_eq!(e.value, None, "{} must not carry a value", e.name);
                let r = e.value_from.clone().unwrap().secret_key_ref.unwrap();
                (e.name.clone(), r.name, r.key)
            })
            .collect();
        let triple = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            usernames,
            vec![
                triple("PROMSCALE_AUTH_BASIC_USERNAME", "metrics-auth", "username"),
                triple("PROMSCALE_AUTH_WRITE_BASIC_USERNAME", "metrics-write", "username"),
                triple("PROMSCALE_AUTH_READ_BASIC_USERNAME", "metrics-read", "user"),
            ]
        );

        // HTTPS only: probes and the port's name say so.
        let https = (Some("HTTPS".to_string()), IntOrString::String("https".into()));
        assert_eq!(scheme(&container.readiness_probe), https);
        assert_eq!(scheme(&container.liveness_probe), https);
        assert_eq!(container.ports.clone().unwrap()[0].name.as_deref(), Some("https"));
    }

    #[test]
    fn tls_alone_mounts_the_certificate_and_switches_the_probes() {
        let auth = AuthSpec {
            tls: Some(TlsSpec {
                secret_name: "metrics-tls".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let deployment = build(&spec(Some(auth)));
        let container = &pod(&deployment).containers[0];
        assert_eq!(
            container.args.clone().unwrap(),
            vec![
                "--auth.tls-cert-file=/etc/promscale/auth/tls/tls.crt",
                "--auth.tls-key-file=/etc/promscale/auth/tls/tls.key",
                "--ingest.writers=2",
            ]
        );
        assert_eq!(scheme(&container.liveness_probe).0.as_deref(), Some("HTTPS"));
    }

    #[test]
    fn no_credential_is_inlined_only_references() {
        let spec = spec(Some(full_auth()));
        let deployment = build(&spec);
        let container = &pod(&deployment).containers[0];
        // Every environment variable the operator sets comes from the downward API or a Secret.
        for var in container.env.clone().unwrap() {
            assert_eq!(var.value, None, "{} has an inline value", var.name);
            let from = var.value_from.unwrap();
            assert!(
                from.field_ref.is_some() || from.secret_key_ref.is_some(),
                "{}",
                var.name
            );
        }
        // The --auth flags name files under the mount, nothing else.
        for arg in container.args.clone().unwrap() {
            if let Some(flag) = arg.strip_prefix("--auth.") {
                let (_, value) = flag.split_once('=').unwrap();
                assert!(value.starts_with(&format!("{AUTH_DIR}/")), "{arg}");
            }
        }
        // Secrets reach the pod only as secretKeyRef and projected Secret volumes.
        let json = serde_json::to_value(&deployment).unwrap();
        let text = json.to_string();
        for forbidden in [
            "\"stringData\"",
            "\"secret\":{\"secretName\"",
            "configMapKeyRef",
            "\"configMap\":",
        ] {
            assert!(!text.contains(forbidden), "{forbidden} in {text}");
        }
        // Nothing of auth goes into the ConfigMap.
        let mut stack = PromscaleStack::new("metrics", spec.clone());
        stack.metadata.namespace = Some("monitoring".into());
        stack.metadata.uid = Some("0a1b2c3d".into());
        let names = StackNames::of(&stack).unwrap();
        let config = super::super::config_map::connector_env(&names, &spec);
        assert!(config.keys().all(|k| !k.contains("AUTH")), "{config:?}");
    }

    #[test]
    fn the_secrets_to_check_are_every_mounted_key_and_username() {
        let keys = auth_secret_keys(&full_auth());
        let names: Vec<String> = keys.iter().map(|k| format!("{}/{}", k.name, k.key)).collect();
        assert_eq!(
            names,
            vec![
                "metrics-auth/username",
                "metrics-write/username",
                "metrics-read/user",
                "metrics-auth/token",
                "metrics-auth/password",
                "metrics-write/token",
                "metrics-write/password",
                "metrics-read/pass",
                "metrics-tenants/tokens",
                "metrics-tls/tls.crt",
                "metrics-tls/tls.key",
                "metrics-client-ca/ca.crt",
            ]
        );
    }
}
