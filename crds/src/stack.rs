//! `PromscaleStack`: the connectors in front of one PostgreSQL database.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration;

/// The port the connector container listens on; the Service's port is configurable.
pub const CONNECTOR_PORT: i32 = 9201;

/// A PromscaleStack runs promscale-connector in front of one PostgreSQL database: a Deployment,
/// a Service, the connector's RBAC for status reports, and the database-wide defaults for
/// retention, chunk interval and compression. Its status gives the remote-write and
/// remote-read URLs for Prometheus, and paste-ready Prometheus Operator `remoteWrite` and
/// `remoteRead` items with the credentials and TLS settings of `spec.auth`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "promscale.dev",
    version = "v1alpha1",
    kind = "PromscaleStack",
    namespaced,
    status = "PromscaleStackStatus",
    shortname = "pss",
    category = "promscale",
    derive = "PartialEq",
    doc = "A PromscaleStack runs promscale-connector in front of one PostgreSQL database.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.connector.replicas"),
    printcolumn(name = "Connectors", type_ = "string", json_path = ".status.connectorsReady", description = "connectors reporting ready / desired"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Remote Write", type_ = "string", json_path = ".status.endpoints.remoteWrite", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 52")
        .message("metadata.name must start with a letter, hold only lowercase letters, digits and '-', and be at most 52 characters (it names the connector's Service)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.auth) || !has(self.auth.tenantTokens) || (has(self.connector) && has(self.connector.multiTenancy))").message("auth.tenantTokens needs connector.multiTenancy (tenant credentials name tenants only when tenants are kept apart)"))]
pub struct PromscaleStackSpec {
    /// The connector pods.
    #[serde(default)]
    pub connector: ConnectorSpec,
    /// The PostgreSQL database the connectors store samples in.
    pub database: DatabaseSpec,
    /// Database-wide defaults for metrics no MetricPolicy covers.
    #[serde(default)]
    pub defaults: MetricDefaults,
    /// The Service in front of the connectors.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Authentication and TLS of the connectors' HTTP server, from Secrets (mounted as files,
    /// so rotated Secrets take effect without a restart). Without it every endpoint is open
    /// and served over plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Limits of single tenants, replacing `connector.limits` for them (the operator applies
    /// them through `prom_api.set_tenant_limits`, and resets a tenant taken off the list).
    /// Tenant `""` is the store without multi-tenancy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["tenant".into()]))]
    #[schemars(length(max = 1000))]
    pub tenant_limits: Vec<TenantLimitsSpec>,
}

/// One tenant's own limits; an absent field keeps the connectors' flag (0 is no limit).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimitsSpec {
    /// The tenant, as the connectors name it (1 to 150 letters, digits and `!-_.*'()`).
    #[x_kube(validation = Rule::new("self == '' || (self.matches('^[A-Za-z0-9!_.*\\'()-]{1,150}$') && self != '.' && self != '..')").message("a tenant is 1 to 150 letters, digits and !-_.*'(), not . or .. (\"\" for a store without multi-tenancy)"))]
    #[schemars(length(max = 150))]
    pub tenant: String,
    /// Active series (with samples in the last 10 to 20 minutes) the tenant may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_active_series: Option<i64>,
    /// Series the tenant may create per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_new_series_per_minute: Option<i64>,
    /// Samples a second each connector accepts from the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_rate: Option<u64>,
    /// Samples that may arrive at once above the tenant's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_burst: Option<u64>,
    /// Series of the tenant with more labels than this are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_labels_per_series: Option<i32>,
    /// Series of the tenant with a label name longer than this many bytes are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_label_name_length: Option<i32>,
    /// Series of the tenant with a label value longer than this many bytes are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_label_value_length: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSpec {
    /// Container image of promscale-connector; empty means the operator's default (its own version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the kubelet pulls the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Number of connector pods. Connectors are stateless; two or more keep ingestion going
    /// through node drains.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be between 0 and 100"))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the connector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Nodes the connector pods may run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra annotations on the connector pods (e.g. for a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Log level of the connector: error, warn, info, debug or trace.
    #[serde(default = "default_log_level")]
    #[x_kube(validation = Rule::new("self in ['error', 'warn', 'info', 'debug', 'trace']").message("logLevel must be one of error, warn, info, debug, trace"))]
    pub log_level: String,
    /// Whose PromQL rules queries follow where Prometheus 2 and 3 answer differently:
    /// `prometheus3` (the connector's default: range, lookback and subquery windows leave out
    /// their start, rates extrapolate as Prometheus 3) or `prometheus2` (as Prometheus 2.42).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql_semantics: Option<PromqlSemantics>,
    /// Deduplication of Prometheus HA pairs (the connector's `--metrics.high-availability`):
    /// of the series carrying both labels, only those of the replica holding its cluster's
    /// lease are stored, without the replica label. Present (`{}` for the defaults) turns it
    /// on. With the Prometheus Operator, set the Prometheus' `prometheusExternalLabelName` and
    /// `replicaExternalLabelName` to these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_availability: Option<HighAvailabilitySpec>,
    /// Limits of remote write (the connector's `--limits.*` flags); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// Tenants kept apart (the connector's `--metrics.multi-tenancy`): every series is stored
    /// with a `__tenant__` label, and every read sees one tenant's series (or several, where
    /// allowed). Present (`{}` for the defaults) turns it on. The tenant of a request is the
    /// one of its `spec.auth.tenantTokens` credential, else its tenant header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_tenancy: Option<MultiTenancySpec>,
    /// Extra command-line flags of promscale-connector, e.g. `--ingest.writers=8`
    /// (see `promscale-connector --help`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[x_kube(validation = Rule::new("self.all(a, !a.startsWith('--db.') && !a.startsWith('--web.listen-address') && !a.startsWith('--auth.'))").message("extraArgs must not set --db.*, --web.listen-address or --auth.*: they come from spec.database, the operator and spec.auth"))]
    pub extra_args: Vec<String>,
    /// Extra environment variables of the connector container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_env: Vec<EnvVar>,
}

impl Default for ConnectorSpec {
    fn default() -> Self {
        ConnectorSpec {
            image: None,
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            replicas: default_replicas(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            pod_annotations: BTreeMap::new(),
            log_level: default_log_level(),
            promql_semantics: None,
            high_availability: None,
            limits: None,
            multi_tenancy: None,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

fn default_log_level() -> String {
    "info".to_string()
}

/// `spec.connector.highAvailability`: the connector's `--metrics.ha.*` flags.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HighAvailabilitySpec {
    /// The external label naming an HA pair; `cluster` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub cluster_label: Option<String>,
    /// The external label naming a replica of a pair, not stored; `__replica__` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub replica_label: Option<String>,
    /// How long, in sample time, a pair's leader may send nothing newer before the other
    /// replica takes over, e.g. `30s`, `1m`, `2m30s`; `1m` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && !self.matches('^(0+[hms])+$')").message("leaseTimeout must be a positive duration written with h, m and s in that order, e.g. 30s, 1m, 2m30s"))]
    #[schemars(length(max = 20))]
    pub lease_timeout: Option<String>,
}

/// `spec.connector.multiTenancy`: the connector's `--metrics.multi-tenancy.*` flags.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MultiTenancySpec {
    /// The HTTP header naming a request's tenant; `X-Scope-OrgID` by default (`THANOS-TENANT`
    /// for Thanos' convention). Prometheus sends it with `remoteWrite[].headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$')").message("multiTenancy.header must be an HTTP header name"))]
    pub header: Option<String>,
    /// The tenant of writes that name none: absent refuses them; `label` takes each
    /// series' own `__tenant__` label (a trusted writer sending several tenants); any other
    /// value is a tenant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 150))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!*\\'()_.-]+$') && self != '.' && self != '..'").message("multiTenancy.defaultWriteTenant must be label or a tenant name: letters, digits and !-_.*'()"))]
    pub default_write_tenant: Option<String>,
    /// Reads may name several tenants, separated by `|` in the header; their series keep
    /// the `__tenant__` label. Tenant credentials still read their own tenant only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cross_tenant_queries: Option<bool>,
}

/// `spec.connector.limits`: the connector's `--limits.*` flags (0 or absent: no limit).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Series with more labels than this are left out (the rest of a request is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_labels_per_series: Option<u32>,
    /// Series with a label name longer than this many bytes are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_label_name_length: Option<u32>,
    /// Series with a label value longer than this many bytes are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_label_value_length: Option<u32>,
    /// Samples a second each connector accepts; beyond, requests are answered 429 (set the
    /// Prometheus' `queueConfig.retryOnRateLimit: true`, or it drops them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_rate: Option<u64>,
    /// Samples that may arrive at once above the rate; one second of it by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_burst: Option<u64>,
    /// Active series (with samples in the last 10 to 20 minutes) each tenant may have (the
    /// whole store without multi-tenancy); beyond, new series are left out and the series it
    /// has keep being written. Per tenant in SQL: `prom_api.set_tenant_limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_active_series: Option<u64>,
    /// Active series each tenant may have of one metric; per metric: a MetricPolicy's
    /// `maxActiveSeries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_active_series_per_metric: Option<u64>,
    /// Series each tenant may create per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_new_series_per_minute: Option<u64>,
}

/// `spec.connector.promqlSemantics`: the connector's `--metrics.promql.semantics`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PromqlSemantics {
    Prometheus3,
    Prometheus2,
}

impl PromqlSemantics {
    /// The value of the connector's `--metrics.promql.semantics`.
    pub fn as_str(self) -> &'static str {
        match self {
            PromqlSemantics::Prometheus3 => "prometheus3",
            PromqlSemantics::Prometheus2 => "prometheus2",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Where the database is: either a Secret key holding a whole URI, or host, port, database and
/// user with a Secret key holding the password. The password is handed to the connector
/// through a secretKeyRef and never copied into a ConfigMap, status or log.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.uriSecretRef) != has(self.host)").message("set exactly one of database.uriSecretRef or database.host"))]
#[x_kube(validation = Rule::new("!has(self.host) || (has(self.user) && has(self.passwordSecretRef))").message("database.host needs database.user and database.passwordSecretRef"))]
#[x_kube(validation = Rule::new("!has(self.uriSecretRef) || (!has(self.user) && !has(self.passwordSecretRef) && !has(self.port) && !has(self.dbname))").message("with database.uriSecretRef, put user, password, port and dbname into the URI"))]
pub struct DatabaseSpec {
    /// A key of a Secret in the stack's namespace holding a URI such as
    /// `postgres://user:password@host:5432/dbname?sslmode=require`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_secret_ref: Option<SecretKeyRef>,
    /// Host name or IP address of PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("database.host must not be empty"))]
    pub host: Option<String>,
    /// Port of PostgreSQL (default 5432).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("database.port must be between 1 and 65535"))]
    pub port: Option<i32>,
    /// Database name (default: the user name, as in libpq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    /// User to connect as; it needs to create schemas in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A key of a Secret in the stack's namespace holding the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// TLS towards PostgreSQL, as libpq's sslmode; overrides an sslmode in the URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<SslMode>,
}

/// A key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("the Secret name must not be empty"))]
    pub name: String,
    /// Key in the Secret's data.
    #[x_kube(validation = Rule::new("self != ''").message("the Secret key must not be empty"))]
    pub key: String,
}

/// Who may use the connectors' HTTP API, and TLS. Credentials come from Secrets in the stack's
/// namespace (Prometheus Operator style key selectors); passwords, tokens and keys are mounted
/// into the connector pods as read-only files and never copied into the ConfigMap, the pod's
/// environment or the status. With any credentials set, every endpoint but `/healthz` and
/// `/readyz` needs one: write endpoints accept the common and the `write` credentials, read
/// endpoints (remote read, the query API, `/metrics`) the common and the `read` ones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret key holding a bearer token accepted on every endpoint
    /// (`Authorization: Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretKeyRef>,
    /// HTTP basic auth accepted on every endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Credentials accepted on the write endpoints only (remote write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Credentials>,
    /// Credentials accepted on the read endpoints only (remote read, the query API, `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Credentials>,
    /// Serve HTTPS only (probes included), optionally requiring client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// A Secret key holding tenant credentials, one `tenant:token` line each (with
    /// `spec.connector.multiTenancy`): each bearer token writes and reads its tenant's series
    /// only (remote write, remote read, the query API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_tokens: Option<SecretKeyRef>,
}

impl AuthSpec {
    /// The credentials write requests are checked against, most specific first.
    pub fn write_credentials(&self) -> impl Iterator<Item = Credential<'_>> {
        credentials(self.write.as_ref(), self)
    }

    /// The credentials read requests are checked against, most specific first.
    pub fn read_credentials(&self) -> impl Iterator<Item = Credential<'_>> {
        credentials(self.read.as_ref(), self)
    }
}

/// One credential of [`AuthSpec`], by reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    BearerToken(&'a SecretKeyRef),
    BasicAuth(&'a BasicAuth),
}

fn credentials<'a>(specific: Option<&'a Credentials>, common: &'a AuthSpec) -> impl Iterator<Item = Credential<'a>> {
    let specific = specific.into_iter().flat_map(|c| {
        c.bearer_token
            .iter()
            .map(Credential::BearerToken)
            .chain(c.basic_auth.iter().map(Credential::BasicAuth))
    });
    let common = common
        .bearer_token
        .iter()
        .map(Credential::BearerToken)
        .chain(common.basic_auth.iter().map(Credential::BasicAuth));
    specific.chain(common)
}

/// Credentials of one kind of endpoint: a bearer token, basic auth, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.bearerToken) || has(self.basicAuth)").message("auth.write and auth.read need bearerToken, basicAuth or both"))]
pub struct Credentials {
    /// A Secret key holding a bearer token (`Authorization: Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretKeyRef>,
    /// HTTP basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
}

/// HTTP basic auth: user name and password, each a key of a Secret (as in the Prometheus
/// Operator). The user name reaches the connector through a `secretKeyRef` environment
/// variable (a change of it rolls the pods), the password as a mounted file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// A Secret key holding the user name.
    pub username: SecretKeyRef,
    /// A Secret key holding the password.
    pub password: SecretKeyRef,
}

/// HTTPS for the connectors' HTTP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.clientCertSecretName) || has(self.clientCA)").message("auth.tls.clientCertSecretName is the certificate Prometheus presents to a connector that requires client certificates: it needs auth.tls.clientCA"))]
pub struct TlsSpec {
    /// Name of a `kubernetes.io/tls` Secret in the stack's namespace whose `tls.crt` and
    /// `tls.key` are the server certificate (chain) and key. The certificate must be valid for
    /// the Service's name, `<stack>-connector.<namespace>.svc.<cluster domain>`.
    #[x_kube(validation = Rule::new("self != ''").message("auth.tls.secretName must not be empty"))]
    pub secret_name: String,
    /// A Secret key holding the CA certificate(s) that signed the server certificate, which
    /// Prometheus verifies the connectors with (the status' `tlsConfig.ca`); default: key
    /// `ca.crt` of `secretName`, which cert-manager writes. Not mounted into the connectors.
    #[serde(default, rename = "serverCA", skip_serializing_if = "Option::is_none")]
    pub server_ca: Option<SecretKeyRef>,
    /// A Secret key holding the CA certificate(s) client certificates must be signed by; when
    /// set, clients without such a certificate are refused (mutual TLS).
    #[serde(default, rename = "clientCA", skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<SecretKeyRef>,
    /// Name of a `kubernetes.io/tls` Secret holding the client certificate (`tls.crt`, signed
    /// by `clientCA`) and key (`tls.key`) for Prometheus to present. Only named in the status'
    /// `prometheusRemoteWrite`/`prometheusRemoteRead`; the connectors do not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("auth.tls.clientCertSecretName must not be empty"))]
    pub client_cert_secret_name: Option<String>,
}

/// The key of a `kubernetes.io/tls` Secret holding the certificate (chain).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The key of a `kubernetes.io/tls` Secret holding the private key.
pub const TLS_KEY_KEY: &str = "tls.key";
/// Where cert-manager puts the issuing CA's certificate in a `kubernetes.io/tls` Secret.
pub const TLS_CA_KEY: &str = "ca.crt";

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling, as the connector's `--db.ssl-mode` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Database-wide defaults, applied through `prom_api.set_default_*`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricDefaults {
    /// How long samples are kept, e.g. `90d`, `1y`.
    #[serde(default = "default_retention")]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    #[schemars(length(max = 40))]
    pub retention_period: String,
    /// Time span of one chunk table, e.g. `8h`.
    #[serde(default = "default_chunk_interval")]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    #[schemars(length(max = 40))]
    pub chunk_interval: String,
    /// Whether closed chunks are compressed.
    #[serde(default = "default_compression")]
    pub compression: bool,
}

impl Default for MetricDefaults {
    fn default() -> Self {
        MetricDefaults {
            retention_period: default_retention(),
            chunk_interval: default_chunk_interval(),
            compression: default_compression(),
        }
    }
}

fn default_retention() -> String {
    "90d".to_string()
}

fn default_chunk_interval() -> String {
    "8h".to_string()
}

fn default_compression() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'").message("service.nodePort needs service.type NodePort or LoadBalancer"))]
pub struct ServiceSpec {
    /// ClusterIP, NodePort or LoadBalancer.
    #[serde(rename = "type", default)]
    pub type_: ServiceType,
    /// Port of the Service (remote write, remote read and the query API share it).
    #[serde(default = "default_service_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("service.port must be between 1 and 65535"))]
    pub port: i32,
    /// Node port, for type NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("service.nodePort must be between 1 and 65535"))]
    pub node_port: Option<i32>,
    /// Annotations on the Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            type_: ServiceType::default(),
            port: default_service_port(),
            node_port: None,
            annotations: BTreeMap::new(),
        }
    }
}

fn default_service_port() -> i32 {
    CONNECTOR_PORT
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Written by the operator (everything but `connectors`) and by each connector pod (its own
/// entry of `connectors`), each through server-side apply with its own field manager.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PromscaleStackStatus {
    /// The `metadata.generation` the rest of this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Where Prometheus and query clients reach the connectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// An item for `spec.remoteWrite` of a Prometheus Operator `Prometheus` (or, in snake
    /// case, `remote_write` of prometheus.yml), with the URL, credentials and TLS settings of
    /// `spec.auth` as references to the same Secrets; write credentials are preferred over
    /// common ones, a bearer token over basic auth. The Secrets must be in the Prometheus'
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_remote_write: Option<PrometheusRemoteEndpoint>,
    /// An item for `spec.remoteRead` of a Prometheus Operator `Prometheus`, like
    /// `prometheusRemoteWrite` but with the read credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_remote_read: Option<PrometheusRemoteEndpoint>,
    /// Connectors reporting ready recently, over desired replicas, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors_ready: Option<String>,
    /// One entry per connector pod, written by that pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub connectors: Vec<ConnectorStatus>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// For `remoteWrite[].url` of a Prometheus (or Prometheus Operator `Prometheus`); https
    /// with `spec.auth.tls`.
    pub remote_write: String,
    /// For `remoteRead[].url`.
    pub remote_read: String,
    /// Base URL of the Prometheus HTTP query API (Grafana, promtool).
    pub query: String,
}

/// One item of a Prometheus Operator `Prometheus`' `spec.remoteWrite` or `spec.remoteRead`
/// (monitoring.coreos.com/v1), restricted to the fields the operator fills in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRemoteEndpoint {
    /// The remote-write or remote-read URL (https with `spec.auth.tls`).
    pub url: String,
    /// A bearer token: `type: Bearer` and the Secret key holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<PrometheusAuthorization>,
    /// Basic auth: the Secret keys of the user name and the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// How Prometheus verifies the connectors' certificate, and its client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<PrometheusTlsConfig>,
    /// Remote read only: also read the time range Prometheus holds locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_recent: Option<bool>,
}

/// The `authorization` of a Prometheus Operator remote endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAuthorization {
    /// The authentication scheme, `Bearer`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The Secret key holding the token.
    pub credentials: SecretKeyRef,
}

/// The `tlsConfig` of a Prometheus Operator remote endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusTlsConfig {
    /// The CA certificate to verify the connectors' certificate with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PrometheusSecretOrConfigMap>,
    /// The client certificate Prometheus presents (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PrometheusSecretOrConfigMap>,
    /// The Secret key holding the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<SecretKeyRef>,
    /// The name the connectors' certificate must carry: the Service's host name in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A Secret key, in the Prometheus Operator's `{secret: {name, key}}` form.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSecretOrConfigMap {
    /// The Secret and its key.
    pub secret: SecretKeyRef,
}

/// What one connector pod reports about itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// Name of the pod.
    pub pod: String,
    /// Version of promscale-connector.
    pub version: String,
    /// Schema migrated and database reachable (what /readyz answers).
    pub ready: bool,
    /// Samples committed per second over the last report interval.
    pub samples_per_second: f64,
    /// Series that received samples during the last report interval.
    pub active_series: i64,
    /// When samples were last committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_write: Option<Time>,
    /// The last error seen while writing, if the last write failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the pod wrote this entry; entries not refreshed for a while are not counted.
    pub last_report_time: Time,
}
