//! Command-line flags; each is also an environment variable (see `--help`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
pub use promscale_process::LogFormat;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "promscale-operator",
    version,
    about = "Reconciles PromscaleStack and MetricPolicy resources into promscale-connector \
             Deployments, Services and database settings.",
    long_about = "Reconciles PromscaleStack and MetricPolicy resources into promscale-connector \
        Deployments, Services and database settings.\n\n\
        Connects to the Kubernetes API with its service account in a cluster, or with KUBECONFIG \
        outside. Only the replica holding the leader Lease reconciles; the others wait."
)]
pub struct Config {
    /// Image of promscale-connector for stacks that do not name one.
    #[arg(long = "connector.image", env = "PROMSCALE_OPERATOR_CONNECTOR_IMAGE", default_value_t = default_connector_image())]
    pub connector_image: String,

    /// Only reconcile resources in this namespace (default: all namespaces).
    #[arg(
        long = "watch-namespace",
        env = "PROMSCALE_OPERATOR_WATCH_NAMESPACE",
        default_value = ""
    )]
    pub watch_namespace: String,

    /// DNS suffix of the cluster, used in the endpoint URLs written into stack status.
    #[arg(
        long = "cluster-domain",
        env = "PROMSCALE_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// How often every stack is reconciled even when nothing changed (connector reports,
    /// database reachability, Secret changes).
    #[arg(long = "stack.resync-interval", env = "PROMSCALE_OPERATOR_STACK_RESYNC_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stack_resync_interval: Duration,

    /// How often every MetricPolicy is applied again (new metrics matching its regex, settings
    /// changed by hand in SQL).
    #[arg(long = "policy.resync-interval", env = "PROMSCALE_OPERATOR_POLICY_RESYNC_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub policy_resync_interval: Duration,

    /// A connector entry in stack status not refreshed for this long no longer counts as ready.
    #[arg(long = "connector.stale-after", env = "PROMSCALE_OPERATOR_CONNECTOR_STALE_AFTER", default_value = "1m", value_parser = humantime::parse_duration)]
    pub connector_stale_after: Duration,

    /// A connector entry not refreshed for this long is removed from stack status (its pod is gone).
    #[arg(long = "connector.forget-after", env = "PROMSCALE_OPERATOR_CONNECTOR_FORGET_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub connector_forget_after: Duration,

    /// How long to wait for a stack's database to accept a connection.
    #[arg(long = "db.connect-timeout", env = "PROMSCALE_OPERATOR_DB_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_connect_timeout: Duration,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long = "web.listen-address",
        env = "PROMSCALE_OPERATOR_WEB_LISTEN_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub web_listen_address: SocketAddr,

    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long = "leader-election", env = "PROMSCALE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader Lease (default: the pod's namespace from POD_NAMESPACE, else "default").
    #[arg(
        long = "leader-election.namespace",
        env = "PROMSCALE_OPERATOR_LEADER_ELECTION_NAMESPACE",
        default_value = ""
    )]
    pub leader_election_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long = "leader-election.lease-name",
        env = "PROMSCALE_OPERATOR_LEADER_ELECTION_LEASE_NAME",
        default_value = "promscale-operator"
    )]
    pub leader_election_lease_name: String,

    /// How long a leader's Lease lasts without renewal before another replica takes over.
    #[arg(long = "leader-election.lease-duration", env = "PROMSCALE_OPERATOR_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// This replica's identity in the Lease (default: POD_NAME, else the host name).
    #[arg(long = "leader-election.identity", env = "POD_NAME", default_value = "")]
    pub leader_election_identity: String,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing's target=level list.
    #[arg(long = "log.level", env = "PROMSCALE_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long = "log.format", env = "PROMSCALE_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,
}

/// The connector image of the same release as this operator.
pub fn default_connector_image() -> String {
    format!("ghcr.io/promscale-rs/promscale-connector:{}", env!("CARGO_PKG_VERSION"))
}
