//! Command-line flags. Names follow Promscale's where one exists; every flag can also be set
//! through the `PROMSCALE_*` environment variable shown in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use promscale_process::LogFormat;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "promscale-connector",
    version,
    about = "Long-term store for Prometheus metrics on PostgreSQL.",
    long_about = "Long-term store for Prometheus metrics on PostgreSQL.\n\n\
        Prometheus remote-writes to /write (or /api/v1/write); samples are stored in one table per \
        metric, queryable with SQL through the prom_metric and prom_info views.\n\n\
        Without --db.uri the connector starts and owns a private PostgreSQL cluster under \
        --embedded.dir (using the installed PostgreSQL server binaries)."
)]
pub struct Config {
    /// PostgreSQL connection URI, e.g. postgres://user:password@host:5432/dbname?sslmode=require.
    /// When empty, an embedded PostgreSQL is started under --embedded.dir.
    #[arg(
        long = "db.uri",
        env = "PROMSCALE_DB_URI",
        hide_env_values = true,
        default_value = ""
    )]
    pub db_uri: String,

    /// PostgreSQL host; with --db.user, --db.password and friends, an alternative to --db.uri
    /// (each of them also overrides the matching part of --db.uri).
    #[arg(long = "db.host", env = "PROMSCALE_DB_HOST", default_value = "")]
    pub db_host: String,

    /// PostgreSQL port.
    #[arg(long = "db.port", env = "PROMSCALE_DB_PORT")]
    pub db_port: Option<u16>,

    /// Database name (default: the user name).
    #[arg(long = "db.name", env = "PROMSCALE_DB_NAME")]
    pub db_name: Option<String>,

    /// User to connect as.
    #[arg(long = "db.user", env = "PROMSCALE_DB_USER")]
    pub db_user: Option<String>,

    /// Password of --db.user. Prefer the environment variable: flags are visible in `ps`.
    #[arg(long = "db.password", env = "PROMSCALE_DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,

    /// TLS towards PostgreSQL: disable, allow, prefer, require, verify-ca or verify-full (libpq's sslmode).
    #[arg(long = "db.ssl-mode", env = "PROMSCALE_DB_SSL_MODE")]
    pub db_ssl_mode: Option<String>,

    /// Maximum number of connections to PostgreSQL.
    #[arg(
        long = "db.connections-max",
        env = "PROMSCALE_DB_CONNECTIONS_MAX",
        default_value_t = 16
    )]
    pub db_connections_max: u32,

    /// How long a request waits for a database connection before it is answered with 503
    /// (so that Prometheus retries instead of timing out).
    #[arg(long = "db.connection-timeout", env = "PROMSCALE_DB_CONNECTION_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_connection_timeout: Duration,

    /// Address to serve remote write, health and metrics on.
    #[arg(
        long = "web.listen-address",
        env = "PROMSCALE_WEB_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9201"
    )]
    pub web_listen_address: SocketAddr,

    /// Largest remote-write body accepted, in bytes, compressed and decompressed.
    #[arg(long = "web.max-request-bytes", env = "PROMSCALE_WEB_MAX_REQUEST_BYTES", default_value_t = 64 << 20)]
    pub web_max_request_bytes: usize,

    /// Concurrent database transactions writing samples.
    #[arg(long = "ingest.writers", env = "PROMSCALE_INGEST_WRITERS", default_value_t = 4)]
    pub ingest_writers: usize,

    /// Samples above which queued requests stop being merged into one transaction.
    #[arg(
        long = "ingest.max-batch-samples",
        env = "PROMSCALE_INGEST_MAX_BATCH_SAMPLES",
        default_value_t = 50_000
    )]
    pub ingest_max_batch_samples: usize,

    /// Series ids kept in memory; a miss costs a database lookup.
    #[arg(
        long = "cache.series-max-entries",
        env = "PROMSCALE_CACHE_SERIES_MAX_ENTRIES",
        default_value_t = 1_000_000
    )]
    pub cache_series_max_entries: usize,

    /// How often to apply retention and compact the head into series chunks (one connector at
    /// a time does it); 0s disables scheduled maintenance: recent samples then stay in the
    /// head, uncompacted, until a connector with maintenance runs.
    #[arg(long = "maintenance.interval", env = "PROMSCALE_MAINTENANCE_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub maintenance_interval: Duration,

    /// How long written samples stay in the head (one row per write batch and metric) before
    /// maintenance compacts them into per-series chunks. Longer makes bigger, better
    /// compressed chunks; recent data costs more space while in the head.
    #[arg(long = "storage.head-age", env = "PROMSCALE_STORAGE_HEAD_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub storage_head_age: Duration,

    /// Longest a PromQL query may run; the API answers 503 "timeout" after that.
    #[arg(long = "metrics.promql.query-timeout", env = "PROMSCALE_METRICS_PROMQL_QUERY_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub promql_query_timeout: Duration,

    /// How far back an instant selector looks for the latest sample of a series.
    #[arg(long = "metrics.promql.lookback-delta", env = "PROMSCALE_METRICS_PROMQL_LOOKBACK_DELTA", default_value = "5m", value_parser = humantime::parse_duration)]
    pub promql_lookback_delta: Duration,

    /// Most samples a single query may hold in memory; beyond, it fails with a 422.
    #[arg(
        long = "metrics.promql.max-samples",
        env = "PROMSCALE_METRICS_PROMQL_MAX_SAMPLES",
        default_value_t = 50_000_000
    )]
    pub promql_max_samples: usize,

    /// Folder of the embedded PostgreSQL cluster, used when --db.uri is empty.
    #[arg(
        long = "embedded.dir",
        env = "PROMSCALE_EMBEDDED_DIR",
        default_value = ".data/embedded-postgres"
    )]
    pub embedded_dir: PathBuf,

    /// Folder holding initdb, pg_ctl and postgres for the embedded cluster
    /// (default: the newest /usr/lib/postgresql/*/bin, else the folder of initdb on PATH).
    #[arg(long = "embedded.pg-bin-dir", env = "PROMSCALE_EMBEDDED_PG_BIN_DIR")]
    pub embedded_pg_bin_dir: Option<PathBuf>,

    /// Name of the PromscaleStack this connector belongs to. With --k8s.pod-name and
    /// --k8s.pod-namespace (set by the operator's Deployment), the connector reports its state
    /// into the stack's status.connectors.
    #[arg(long = "k8s.stack-name", env = "PROMSCALE_STACK_NAME", default_value = "")]
    pub k8s_stack_name: String,

    /// Name of this pod (the Deployment passes it through the downward API).
    #[arg(long = "k8s.pod-name", env = "POD_NAME", default_value = "")]
    pub k8s_pod_name: String,

    /// Namespace of this pod and of its PromscaleStack.
    #[arg(long = "k8s.pod-namespace", env = "POD_NAMESPACE", default_value = "")]
    pub k8s_pod_namespace: String,

    /// How often the connector writes its entry in the stack's status.
    #[arg(long = "k8s.status-interval", env = "PROMSCALE_K8S_STATUS_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub k8s_status_interval: Duration,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing's target=level list.
    #[arg(long = "log.level", env = "PROMSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long = "log.format", env = "PROMSCALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,
}
