//! Command-line flags. Names follow Promscale's where one exists; every flag can also be set
//! through the `PROMSCALE_*` environment variable shown in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use promscale_process::LogFormat;
use promscale_promql::Semantics;

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

    /// Longest a client may take to send a request's headers; slower connections are closed.
    #[arg(long = "web.read-header-timeout", env = "PROMSCALE_WEB_READ_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub web_read_header_timeout: Duration,

    /// Longest a client may take to send a request's body; slower requests are answered 408.
    #[arg(long = "web.read-timeout", env = "PROMSCALE_WEB_READ_TIMEOUT", default_value = "1m", value_parser = humantime::parse_duration)]
    pub web_read_timeout: Duration,

    /// Most client connections served at once; further connections wait in the kernel's
    /// backlog until one closes.
    #[arg(
        long = "web.max-connections",
        env = "PROMSCALE_WEB_MAX_CONNECTIONS",
        default_value_t = 512
    )]
    pub web_max_connections: usize,

    /// Deduplicate Prometheus HA pairs: of the series carrying both --metrics.ha.cluster-label
    /// and --metrics.ha.replica-label (Prometheus' external labels), only the replica holding
    /// its cluster's lease is stored, without the replica label; a lease shared by every
    /// connector of the database. Series without both labels are stored as they are. See
    /// docs/high-availability.md.
    #[arg(long = "metrics.high-availability", env = "PROMSCALE_METRICS_HIGH_AVAILABILITY")]
    pub ha: bool,

    /// The external label naming an HA pair (with --metrics.high-availability).
    #[arg(
        long = "metrics.ha.cluster-label",
        env = "PROMSCALE_METRICS_HA_CLUSTER_LABEL",
        default_value = "cluster"
    )]
    pub ha_cluster_label: String,

    /// The external label naming a replica of an HA pair; not stored (with
    /// --metrics.high-availability).
    #[arg(
        long = "metrics.ha.replica-label",
        env = "PROMSCALE_METRICS_HA_REPLICA_LABEL",
        default_value = "__replica__"
    )]
    pub ha_replica_label: String,

    /// How long, in sample time, the leader of an HA pair may send nothing newer before the
    /// other replica takes over (with --metrics.high-availability).
    #[arg(
        long = "metrics.ha.lease-timeout",
        env = "PROMSCALE_METRICS_HA_LEASE_TIMEOUT",
        default_value = "1m",
        value_parser = humantime::parse_duration
    )]
    pub ha_lease_timeout: Duration,

    /// Keep tenants apart: every series is stored with a `__tenant__` label naming who wrote
    /// it, and every read (PromQL, series, labels, metadata, exemplars, remote read,
    /// status/tsdb, deletion) sees only the tenant it names. The tenant comes from
    /// --metrics.multi-tenancy.header, or from the credential of --auth.tenant-tokens-file
    /// that authenticated the request. See docs/multi-tenancy.md.
    #[arg(long = "metrics.multi-tenancy", env = "PROMSCALE_METRICS_MULTI_TENANCY")]
    pub multi_tenancy: bool,

    /// The HTTP header naming the tenant of a request (with --metrics.multi-tenancy);
    /// `THANOS-TENANT` for Thanos' convention.
    #[arg(
        long = "metrics.multi-tenancy.header",
        env = "PROMSCALE_METRICS_MULTI_TENANCY_HEADER",
        default_value = "X-Scope-OrgID"
    )]
    pub tenancy_header: String,

    /// Where a write's tenant comes from when its request names none (no header, no tenant
    /// credential): `none` refuses it; `label` takes each series' own `__tenant__` label, as
    /// Promscale did, for a trusted writer sending several tenants at once (series without it
    /// are refused); any other value is the tenant of such writes.
    #[arg(
        long = "metrics.multi-tenancy.default-write-tenant",
        env = "PROMSCALE_METRICS_MULTI_TENANCY_DEFAULT_WRITE_TENANT",
        default_value = "none"
    )]
    pub tenancy_default_write: String,

    /// Let a read name several tenants, separated by `|` in the tenant header (as Mimir's
    /// cross-tenant queries); their series then keep the `__tenant__` label. Tenant
    /// credentials still read their own tenant only.
    #[arg(
        long = "metrics.multi-tenancy.allow-cross-tenant-queries",
        env = "PROMSCALE_METRICS_MULTI_TENANCY_ALLOW_CROSS_TENANT_QUERIES"
    )]
    pub tenancy_cross_tenant: bool,

    /// Refuse series with more labels than this (`__name__` included), as Mimir's
    /// -validation.max-label-names-per-series: only those series are left out, with a 400
    /// naming them after the rest of the request is stored. 0: no limit.
    #[arg(
        long = "limits.max-labels-per-series",
        env = "PROMSCALE_LIMITS_MAX_LABELS_PER_SERIES",
        default_value_t = 0
    )]
    pub limits_max_labels: usize,

    /// Refuse series with a label name longer than this many bytes (as the label limit above).
    /// 0: no limit (names past 1024 bytes are always refused).
    #[arg(
        long = "limits.max-label-name-length",
        env = "PROMSCALE_LIMITS_MAX_LABEL_NAME_LENGTH",
        default_value_t = 0
    )]
    pub limits_max_label_name_bytes: usize,

    /// Refuse series with a label value longer than this many bytes (as the label limit
    /// above). 0: no limit.
    #[arg(
        long = "limits.max-label-value-length",
        env = "PROMSCALE_LIMITS_MAX_LABEL_VALUE_LENGTH",
        default_value_t = 0
    )]
    pub limits_max_label_value_bytes: usize,

    /// Samples and native histograms per second this connector accepts, all senders together;
    /// a request beyond is answered 429 and nothing of it is stored (Prometheus sends it again
    /// later). 0: no limit.
    #[arg(
        long = "limits.ingestion-rate",
        env = "PROMSCALE_LIMITS_INGESTION_RATE",
        default_value_t = 0.0,
        value_parser = parse_rate
    )]
    pub limits_ingestion_rate: f64,

    /// Samples that may arrive at once above --limits.ingestion-rate (a request larger than
    /// this passes when nothing else arrived for a while). 0: one second of the rate.
    #[arg(
        long = "limits.ingestion-burst",
        env = "PROMSCALE_LIMITS_INGESTION_BURST",
        default_value_t = 0.0,
        value_parser = parse_rate
    )]
    pub limits_ingestion_burst: f64,

    /// Active series (series with samples in the last 10 to 20 minutes) each tenant may have
    /// (the whole store without --metrics.multi-tenancy); beyond, new series are left out with
    /// a 400 naming them after the rest of the request is stored, and the series it has keep
    /// being written. Per tenant in SQL: prom_api.set_tenant_limits. 0: no limit.
    #[arg(
        long = "limits.max-active-series",
        env = "PROMSCALE_LIMITS_MAX_ACTIVE_SERIES",
        default_value_t = 0
    )]
    pub limits_max_active_series: u64,

    /// Active series each tenant may have of one metric (as --limits.max-active-series). Per
    /// metric in SQL: prom_api.set_metric_max_active_series, or a MetricPolicy's
    /// maxActiveSeries. 0: no limit.
    #[arg(
        long = "limits.max-active-series-per-metric",
        env = "PROMSCALE_LIMITS_MAX_ACTIVE_SERIES_PER_METRIC",
        default_value_t = 0
    )]
    pub limits_max_active_series_per_metric: u64,

    /// Series each tenant may create per minute (as --limits.max-active-series; a series left
    /// out is created when sent again once the minute has turned). 0: no limit.
    #[arg(
        long = "limits.max-new-series-per-minute",
        env = "PROMSCALE_LIMITS_MAX_NEW_SERIES_PER_MINUTE",
        default_value_t = 0
    )]
    pub limits_max_new_series_per_minute: u64,

    /// How often each connector reads the series limits set in SQL and the active and new
    /// series all connectors counted: replicas may together create up to this long's worth of
    /// series past a limit.
    #[arg(
        long = "limits.refresh-interval",
        env = "PROMSCALE_LIMITS_REFRESH_INTERVAL",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub limits_refresh_interval: Duration,

    /// Serve the admin API (/api/v1/admin/tsdb/delete_series and clean_tombstones), as
    /// Prometheus' flag of the same name; without it those endpoints answer 503. With
    /// authentication configured, only the common credentials (--auth.bearer-token-file,
    /// --auth.basic-username) may call them, not the read- or write-scoped ones.
    #[arg(long = "web.enable-admin-api", env = "PROMSCALE_WEB_ENABLE_ADMIN_API")]
    pub web_enable_admin_api: bool,

    /// Largest PromQL expression accepted, in bytes (longer queries are answered 400).
    #[arg(long = "web.max-query-bytes", env = "PROMSCALE_WEB_MAX_QUERY_BYTES", default_value_t = 64 << 10)]
    pub web_max_query_bytes: usize,

    /// Most samples one remote-read response may carry (all its queries together, whichever
    /// response type); a request asking for more is answered 400 "exceeded sample limit", as
    /// Prometheus' --storage.remote.read-sample-limit does, before anything is sent.
    #[arg(
        long = "web.max-read-samples",
        env = "PROMSCALE_WEB_MAX_READ_SAMPLES",
        default_value_t = 5_000_000
    )]
    pub web_max_read_samples: usize,

    /// Authentication, TLS and client certificates of the HTTP server.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// Samples more than this far ahead of the connector's clock are refused (the series'
    /// other samples, and the rest of the request, are stored; the answer is a 400 naming
    /// what was left out).
    #[arg(long = "ingest.max-future", env = "PROMSCALE_INGEST_MAX_FUTURE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub ingest_max_future: Duration,

    /// Exemplars kept per series, the newest (maintenance deletes older ones, and those past
    /// the metric's retention period); 0 stores none.
    #[arg(
        long = "exemplars.max-per-series",
        env = "PROMSCALE_EXEMPLARS_MAX_PER_SERIES",
        default_value_t = crate::storage::exemplars::DEFAULT_PER_SERIES
    )]
    pub exemplars_max_per_series: usize,

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

    /// How often, between maintenance runs, to merge the small head rows written since (a
    /// metric with a few samples per write batch costs a row of about 100 bytes each batch):
    /// recent samples stay as written for about twice this long (rows younger than a minute
    /// are never merged). One connector at a time does it, on one database connection; 0s
    /// leaves merging to maintenance. No effect when maintenance is off.
    #[arg(long = "maintenance.merge-interval", env = "PROMSCALE_MAINTENANCE_MERGE_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub maintenance_merge_interval: Duration,

    /// Metrics compacted at once by maintenance, each in a transaction and on a database
    /// connection of its own (taken from --db.connections-max, beside the one that holds the
    /// maintenance lock; at most half of what is left): compaction then uses that many of the
    /// database's CPU cores.
    #[arg(long = "maintenance.compaction-workers", env = "PROMSCALE_MAINTENANCE_COMPACTION_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub maintenance_compaction_workers: u16,

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

    /// Whose PromQL rules queries follow where Prometheus 2 and 3 answer differently:
    /// `prometheus3` (range, lookback and subquery windows leave out their start) or
    /// `prometheus2` (windows include both ends, as Prometheus 2.x has it).
    #[arg(
        long = "metrics.promql.semantics",
        env = "PROMSCALE_METRICS_PROMQL_SEMANTICS",
        default_value = "prometheus3",
        value_parser = parse_semantics
    )]
    pub promql_semantics: Semantics,

    /// PromQL features Prometheus keeps behind --enable-feature, by the same names
    /// (repeatable, or comma-separated): promql-experimental-functions (info, sort_by_label,
    /// limitk, ... as Prometheus marks them), promql-binop-fill-modifiers (fill, fill_left,
    /// fill_right), promql-delayed-name-removal (the metric name dropped when evaluation
    /// ends) and use-start-timestamps (accepted, but it changes no answer: the connector does
    /// not store start timestamps). None by default, as in Prometheus. Prometheus' other
    /// PromQL feature names are accepted and ignored with a warning (promql-duration-expr:
    /// always on).
    #[arg(
        long = "metrics.promql.enable-feature",
        env = "PROMSCALE_METRICS_PROMQL_ENABLE_FEATURE",
        value_delimiter = ',',
        action = clap::ArgAction::Append,
        value_parser = parse_feature
    )]
    pub promql_features: Vec<String>,

    /// Most samples a single query may hold in memory; beyond, it fails with a 422.
    #[arg(
        long = "metrics.promql.max-samples",
        env = "PROMSCALE_METRICS_PROMQL_MAX_SAMPLES",
        default_value_t = 50_000_000
    )]
    pub promql_max_samples: usize,

    /// Most raw samples one query may read from the database, all its selectors together
    /// (they are held in memory while it runs); beyond, it fails with a 422.
    #[arg(
        long = "metrics.promql.max-fetched-samples",
        env = "PROMSCALE_METRICS_PROMQL_MAX_FETCHED_SAMPLES",
        default_value_t = 200_000_000
    )]
    pub promql_max_fetched_samples: usize,

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

    /// Every flag's value as given or defaulted, secrets masked, for /api/v1/status/flags
    /// (filled by [`Config::parse_with_flags`]).
    #[arg(skip)]
    pub flag_values: std::collections::BTreeMap<String, String>,
}

impl Config {
    /// Parses the command line and the environment, keeping every flag's value as text.
    pub fn parse_with_flags() -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Config::command().get_matches();
        let mut config = Config::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        config.flag_values = flag_values(&Config::command(), &matches);
        config
    }

    pub fn series_limit_flags(&self) -> crate::ingest::series_limits::SeriesLimitFlags {
        crate::ingest::series_limits::SeriesLimitFlags {
            max_active_series: self.limits_max_active_series,
            max_active_series_per_metric: self.limits_max_active_series_per_metric,
            max_new_series_per_minute: self.limits_max_new_series_per_minute,
        }
    }

    pub fn label_limits(&self) -> LabelLimits {
        LabelLimits {
            max_labels: self.limits_max_labels,
            max_name_bytes: self.limits_max_label_name_bytes,
            max_value_bytes: self.limits_max_label_value_bytes,
        }
    }
}

/// The label limits of remote write (`--limits.*`; 0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelLimits {
    pub max_labels: usize,
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

/// What a secret looks like in /api/v1/status/flags, as Prometheus masks them.
const MASKED: &str = "<secret>";

/// Each flag (by its long name) with its value as given or defaulted (several joined by a
/// comma), as Prometheus' /api/v1/status/flags lists them; `--db.password` and the password
/// of a `--db.uri` masked.
pub fn flag_values(command: &clap::Command, matches: &clap::ArgMatches) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let id = arg.get_id().as_str();
        let value = match matches.try_get_raw(id) {
            Ok(Some(values)) => values
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        };
        let value = match long {
            "db.password" if !value.is_empty() => MASKED.to_string(),
            "db.uri" => mask_uri_password(&value),
            _ => value,
        };
        out.insert(long.to_string(), value);
    }
    out
}

/// `%XX` escapes of a URI component decoded (others kept as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection URI with its password (in the user part or a parameter naming a password)
/// masked.
fn mask_uri_password(uri: &str) -> String {
    let mut out = uri.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, MASKED);
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, params) = out.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|p| match p.split_once('=') {
                // Any parameter naming a password (password, sslpassword), however encoded.
                Some((k, _)) if percent_decoded(k).to_ascii_lowercase().contains("password") => format!("{k}={MASKED}"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

/// Who may use the HTTP server. With no credentials configured every endpoint is open (the
/// connector logs a warning); with any, every endpoint but `/healthz` and `/readyz` needs
/// one. Write endpoints accept the common and the write credentials, read endpoints (remote
/// read, the query API, `/metrics`) the common and the read credentials. Secret files are
/// read again when they change, so a rotated Secret takes effect without a restart.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthConfig {
    /// File of tenant credentials, one `tenant:token` per line (with --metrics.multi-tenancy):
    /// each bearer token may write and read (remote write, remote read, the query API) its
    /// tenant's series only, whatever tenant header it sends. Read again when it changes.
    #[arg(long = "auth.tenant-tokens-file", env = "PROMSCALE_AUTH_TENANT_TOKENS_FILE")]
    pub tenant_tokens_file: Option<PathBuf>,

    /// File holding a bearer token accepted on every endpoint (Prometheus' `authorization`).
    #[arg(long = "auth.bearer-token-file", env = "PROMSCALE_AUTH_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<PathBuf>,

    /// User name for HTTP basic auth on every endpoint (Prometheus' `basic_auth`); needs
    /// --auth.basic-password-file.
    #[arg(long = "auth.basic-username", env = "PROMSCALE_AUTH_BASIC_USERNAME")]
    pub basic_username: Option<String>,

    /// File holding the basic-auth password of --auth.basic-username.
    #[arg(long = "auth.basic-password-file", env = "PROMSCALE_AUTH_BASIC_PASSWORD_FILE")]
    pub basic_password_file: Option<PathBuf>,

    /// File holding a bearer token accepted on write endpoints only.
    #[arg(
        long = "auth.write.bearer-token-file",
        env = "PROMSCALE_AUTH_WRITE_BEARER_TOKEN_FILE"
    )]
    pub write_bearer_token_file: Option<PathBuf>,

    /// Basic-auth user accepted on write endpoints only; needs --auth.write.basic-password-file.
    #[arg(long = "auth.write.basic-username", env = "PROMSCALE_AUTH_WRITE_BASIC_USERNAME")]
    pub write_basic_username: Option<String>,

    /// File holding the password of --auth.write.basic-username.
    #[arg(
        long = "auth.write.basic-password-file",
        env = "PROMSCALE_AUTH_WRITE_BASIC_PASSWORD_FILE"
    )]
    pub write_basic_password_file: Option<PathBuf>,

    /// File holding a bearer token accepted on read endpoints only.
    #[arg(long = "auth.read.bearer-token-file", env = "PROMSCALE_AUTH_READ_BEARER_TOKEN_FILE")]
    pub read_bearer_token_file: Option<PathBuf>,

    /// Basic-auth user accepted on read endpoints only; needs --auth.read.basic-password-file.
    #[arg(long = "auth.read.basic-username", env = "PROMSCALE_AUTH_READ_BASIC_USERNAME")]
    pub read_basic_username: Option<String>,

    /// File holding the password of --auth.read.basic-username.
    #[arg(
        long = "auth.read.basic-password-file",
        env = "PROMSCALE_AUTH_READ_BASIC_PASSWORD_FILE"
    )]
    pub read_basic_password_file: Option<PathBuf>,

    /// PEM certificate chain of the HTTP server; with --auth.tls-key-file, serves HTTPS only.
    /// Read again when the file changes.
    #[arg(long = "auth.tls-cert-file", env = "PROMSCALE_AUTH_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --auth.tls-cert-file.
    #[arg(long = "auth.tls-key-file", env = "PROMSCALE_AUTH_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM bundle of certificate authorities; when set, clients must present a certificate
    /// signed by one of them (mutual TLS).
    #[arg(long = "auth.tls-client-ca-file", env = "PROMSCALE_AUTH_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
}

/// One name of `--metrics.promql.enable-feature`, checked.
fn parse_feature(text: &str) -> Result<String, String> {
    promscale_promql::Features::from_names([text])?;
    Ok(text.trim().to_string())
}

/// A rate or a burst of samples: a finite number, 0 or more.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{text:?} is not a number of samples, 0 or more")),
    }
}

/// `--metrics.promql.semantics`: `prometheus3` or `prometheus2`.
fn parse_semantics(text: &str) -> Result<Semantics, String> {
    match text {
        "prometheus3" => Ok(Semantics::Prometheus3),
        "prometheus2" => Ok(Semantics::Prometheus2),
        other => Err(format!("{other:?} is neither prometheus3 nor prometheus2")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_listed_with_secrets_masked() {
        use clap::{CommandFactory, FromArgMatches};
        let args = [
            "promscale-connector",
            "--db.uri",
            "postgres://prom:hunter2@db:5432/metrics?sslmode=require&password=hunter3&pass%77ord=hunter4&sslpassword=hunter5",
            "--metrics.promql.enable-feature",
            "promql-experimental-functions",
        ];
        let matches = super::Config::command().get_matches_from(args);
        assert!(super::Config::from_arg_matches(&matches).is_ok());
        let flags = super::flag_values(&super::Config::command(), &matches);
        assert_eq!(
            flags["db.uri"],
            "postgres://prom:<secret>@db:5432/metrics?sslmode=require&password=<secret>&pass%77ord=<secret>&sslpassword=<secret>"
        );
        assert!(flags.values().all(|v| !v.contains("hunter")), "{flags:?}");
        assert_eq!(flags["metrics.promql.enable-feature"], "promql-experimental-functions");
        assert_eq!(flags["web.enable-admin-api"], "false");
        assert_eq!(flags["metrics.ha.lease-timeout"], "1m");
        assert_eq!(super::mask_uri_password("postgres://db/x"), "postgres://db/x");
        assert_eq!(super::mask_uri_password("postgres://u@db/x"), "postgres://u@db/x");
    }

    use clap::Parser;

    use super::Config;

    #[test]
    fn promql_features_repeat_or_come_comma_separated_and_unknown_names_are_refused() {
        let config = Config::try_parse_from([
            "promscale-connector",
            "--metrics.promql.enable-feature",
            "promql-experimental-functions,promql-duration-expr",
            "--metrics.promql.enable-feature=promql-binop-fill-modifiers,promql-delayed-name-removal",
            "--metrics.promql.enable-feature=use-start-timestamps",
        ])
        .unwrap();
        let (features, ignored) =
            promscale_promql::Features::from_names(config.promql_features.iter().map(String::as_str)).unwrap();
        assert_eq!(features, promscale_promql::Features::all());
        assert_eq!(ignored, ["promql-duration-expr"]);
        let none = Config::try_parse_from(["promscale-connector"]).unwrap();
        assert!(none.promql_features.is_empty());
        let error = Config::try_parse_from(["promscale-connector", "--metrics.promql.enable-feature=promql-wishes"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown PromQL feature \"promql-wishes\""), "{error}");
    }
}
