//! promscale-connector: stores Prometheus remote-write samples in PostgreSQL.
//!
//! Request path: [`server`] routes `POST /write` to [`remote_write::handler`], which tells
//! remote write 1.0 from 2.0 by `Content-Type` and decodes and validates either
//! ([`remote_write::decode`], wire messages in [`prompb`], domain types in [`model`]), sets
//! each series' tenant when tenants are kept apart ([`tenancy`]), keeps one
//! replica of each Prometheus HA pair ([`ingest::ha`], its lease in [`storage::ha_lease`]) and
//! holds to the limits ([`ingest::rate_limit`]), then [`ingest`] resolves series ids
//! ([`storage::series`], cached in [`storage::series_cache`]) and queues the samples for a
//! writer that encodes ([`storage::codec`]) and commits them into
//! the head ([`storage::samples`]), their exemplars and native histograms beside them
//! ([`storage::exemplars`], [`storage::histograms`]). [`storage::maintenance`] applies retention and compacts the head
//! into series chunks ([`storage::compaction`]), and native histogram rows into histogram
//! chunks ([`storage::histogram_codec`]); `docs/storage.md` describes the layout. The
//! schema is created by [`storage::migrations`]; [`embedded_db`] runs a private PostgreSQL
//! when none is given.
//!
//! Read path: every read is scoped to its tenants ([`tenancy::ReadScope`]) when tenants are
//! kept apart. [`query::api`] serves the Prometheus HTTP API with the `promscale-promql`
//! engine (exemplars from [`storage::exemplars`]), [`remote_read`] serves remote read (its
//! streamed answers in Prometheus' XOR and histogram chunk encodings); both select series
//! through [`storage::select`] and read their samples through [`storage::read`] and their
//! native histograms through [`storage::histograms`]. The admin API's deletion rewrites
//! stored rows in [`storage::deletion`]; cardinality comes from [`storage::catalog`].

pub mod config;
pub mod embedded_db;
pub mod huge_pages;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod prompb;
pub mod query;
pub mod remote_read;
pub mod remote_write;
pub mod server;
pub mod stack_status;
pub mod storage;
pub mod tenancy;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::embedded_db::{EmbeddedPostgres, StopMode};
use crate::ingest::{IngestOptions, Ingestor, WriteActivity};
use crate::metrics::Metrics;
use crate::query::QueryOptions;
use crate::server::AppState;
use crate::stack_status::{PodIdentity, StatusReporter};
use crate::storage::migrations::{migrate, MigrationError};
use crate::storage::samples::HeadWriter;

/// Runs the connector until `shutdown` completes, then drains requests and stops the
/// embedded database if it started one.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let identity = PodIdentity::from_parts(&config.k8s_stack_name, &config.k8s_pod_name, &config.k8s_pod_namespace)?;
    // Credentials and certificates are checked before anything starts: a typo in a path
    // must not leave an open or half-working server behind.
    let tenancy = crate::tenancy::TenancyOptions::from_config(&config)?;
    let authenticator = server::auth::Authenticator::from_config(&config.auth)?;
    let tls = match server::tls::TlsFiles::from_config(&config.auth)? {
        Some(files) => {
            tracing::info!(
                client_certificates = files.requires_client_certificates(),
                "serving HTTPS only"
            );
            Some(Arc::new(server::tls::ReloadingTls::new(files)?))
        }
        None => None,
    };
    if tenancy.is_some() && config.auth.tenant_tokens_file.is_none() {
        tracing::warn!(
            header = config.tenancy_header,
            "multi-tenancy without --auth.tenant-tokens-file: the tenant header is trusted as sent; keep clients that could name another tenant away from the connector"
        );
    }
    if !authenticator.is_enabled() {
        tracing::warn!(
            "no --auth.* credentials configured: anyone who reaches the listen address can write and read every series"
        );
    }
    let (features, ignored) = promscale_promql::Features::from_names(config.promql_features.iter().map(String::as_str))
        .map_err(|e| anyhow!("--metrics.promql.enable-feature: {e}"))?;
    if !ignored.is_empty() {
        tracing::warn!(
            features = ignored.join(","),
            "--metrics.promql.enable-feature: Prometheus' feature is always on or not implemented here, ignored"
        );
    }
    let (connect_options, embedded) = database(&config).await?;
    // Each session as `storage::set_up_session` sets it up.
    let pool = PgPoolOptions::new()
        .max_connections(config.db_connections_max)
        .acquire_timeout(config.db_connection_timeout)
        .after_connect(|conn, _| Box::pin(storage::set_up_session(conn)))
        .connect_lazy_with(connect_options.application_name("promscale-connector"));

    let metrics = Arc::new(Metrics::new());
    let series_limits = Arc::new(crate::ingest::series_limits::SeriesLimits::new(
        pool.clone(),
        config.series_limit_flags(),
    ));
    let ingest_options = IngestOptions {
        writers: config.ingest_writers,
        max_batch_samples: config.ingest_max_batch_samples,
        series_cache_entries: config.cache_series_max_entries,
        store_exemplars: config.exemplars_max_per_series > 0,
        series_limits: Some(series_limits.clone()),
        multi_tenancy: tenancy.is_some(),
    };
    let writer = Arc::new(HeadWriter::new(pool.clone()));
    let state = Arc::new(AppState {
        pool: pool.clone(),
        ingestor: Ingestor::start(
            pool.clone(),
            writer,
            &ingest_options,
            metrics.clone(),
            Arc::new(WriteActivity::new(identity.is_some())),
        ),
        metrics,
        max_request_bytes: config.web_max_request_bytes,
        max_read_samples: config.web_max_read_samples,
        max_future: config.ingest_max_future,
        query: QueryOptions {
            timeout: config.promql_query_timeout,
            max_samples: config.promql_max_samples,
            max_fetched_samples: config.promql_max_fetched_samples,
            max_query_bytes: config.web_max_query_bytes,
            lookback_delta: config.promql_lookback_delta,
            semantics: config.promql_semantics,
            features,
        },
        ha: config.ha.then(|| {
            Arc::new(crate::ingest::ha::Ha::new(crate::ingest::ha::HaOptions {
                cluster_label: config.ha_cluster_label.clone(),
                replica_label: config.ha_replica_label.clone(),
                lease_timeout: config.ha_lease_timeout,
                per_tenant: tenancy.is_some(),
            }))
        }),
        label_limits: config.label_limits(),
        rate_limits: crate::ingest::rate_limit::RateLimits::new(
            config.limits_ingestion_rate,
            config.limits_ingestion_burst,
        ),
        tenancy,
        flags: config.flag_values.clone(),
        started: chrono::Utc::now(),
        enable_admin_api: config.web_enable_admin_api,
        migrated: Default::default(),
        readiness: Default::default(),
    });

    {
        let state = state.clone();
        let interval = config
            .limits_refresh_interval
            .max(std::time::Duration::from_millis(100));
        tokio::spawn(series_limits.refresh_loop(interval, move || state.is_ready()));
    }

    let listener = tokio::net::TcpListener::bind(config.web_listen_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; choose another --web.listen-address",
                config.web_listen_address
            )
        })?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening for remote write on /write and /api/v1/write");
    print_prometheus_snippet(address, tls.is_some(), authenticator.is_enabled());

    // Each worker takes a connection, beside the maintenance lock's: leave half to ingest.
    let workers = config.maintenance_compaction_workers.min(
        u16::try_from(config.db_connections_max.saturating_sub(2) / 2)
            .unwrap_or(u16::MAX)
            .max(1),
    );
    let migrator = tokio::spawn(migrate_until_done(
        pool.clone(),
        state.clone(),
        config.maintenance_interval,
        storage::compaction::CompactionOptions {
            exemplars_per_series: config.exemplars_max_per_series,
            ..storage::compaction::CompactionOptions::scheduled(config.storage_head_age, workers)
        },
        (!config.maintenance_merge_interval.is_zero()).then(|| {
            (
                config.maintenance_merge_interval,
                storage::compaction::CompactionOptions {
                    exemplars_per_series: config.exemplars_max_per_series,
                    ..storage::compaction::CompactionOptions::light_merge(config.maintenance_merge_interval)
                },
            )
        }),
    ));
    // One shutdown signal, seen by the HTTP server and by the status reporter.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    // Deletions asked for in SQL (prom_api.delete_series), once the schema is migrated.
    tokio::spawn(storage::deletion_queue::listen(
        pool.clone(),
        {
            let state = state.clone();
            move || state.is_ready()
        },
        stop.clone(),
    ));
    let reporter = match identity {
        Some(identity) => {
            tracing::info!(stack = %identity.stack, pod = %identity.pod, namespace = %identity.namespace, "reporting into the PromscaleStack's status");
            let reporter = StatusReporter::new(identity, state.clone()).await?;
            Some(tokio::spawn(
                reporter.run(config.k8s_status_interval, stop.clone().cancelled_owned()),
            ))
        }
        None => None,
    };
    let app = server::router(
        state,
        server::WebOptions {
            authenticator: Arc::new(authenticator),
            read_timeout: config.web_read_timeout,
        },
    );
    let server = server::listener::serve(
        listener,
        app,
        server::listener::ServeOptions {
            header_timeout: config.web_read_header_timeout,
            write_stall_timeout: config.web_read_timeout,
            max_connections: config.web_max_connections,
            tls,
            drain_timeout: Duration::from_secs(30),
        },
        stop.clone(),
    );
    let result = tokio::select! {
        () = server => Ok(()),
        migrated = migrator => match migrated {
            Ok(Err(e)) => Err(anyhow!(e)),
            Ok(Ok(())) => unreachable!("the migrator only returns on fatal errors"),
            Err(e) => Err(anyhow!("migration task failed: {e}")),
        },
    };
    stop.cancel();
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    pool.close().await;
    if let Some(mut pg) = embedded {
        tokio::task::spawn_blocking(move || pg.stop(StopMode::Fast)).await??;
        tracing::info!("stopped the embedded PostgreSQL");
    }
    result
}

async fn database(config: &Config) -> anyhow::Result<(PgConnectOptions, Option<EmbeddedPostgres>)> {
    if !config.db_uri.is_empty() || !config.db_host.is_empty() {
        return Ok((external_database(config)?, None));
    }
    let dir = config.embedded_dir.clone();
    let bin_dir = config.embedded_pg_bin_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, bin_dir.as_deref()))
        .await?
        .context("no --db.uri or --db.host given, and the embedded PostgreSQL could not be started")?;
    tracing::info!(uri = %pg.redacted_uri(), "started the embedded PostgreSQL (no --db.uri given)");
    let options = pg
        .uri()
        .parse::<PgConnectOptions>()
        .map_err(|_| anyhow!("embedded database URI is invalid"))?;
    Ok((options, Some(pg)))
}

/// The URI, if any, with each of --db.host, --db.port, ... overriding its part.
fn external_database(config: &Config) -> anyhow::Result<PgConnectOptions> {
    let mut options = if config.db_uri.is_empty() {
        PgConnectOptions::new_without_pgpass()
    } else {
        // The parse error may quote the URI, password included: never pass it on.
        config.db_uri.parse::<PgConnectOptions>().map_err(|_| {
            anyhow!("--db.uri (PROMSCALE_DB_URI) is not a valid PostgreSQL URI; expected postgres://user:password@host:5432/dbname?sslmode=...")
        })?
    };
    if !config.db_host.is_empty() {
        options = options.host(&config.db_host);
    }
    if let Some(port) = config.db_port {
        options = options.port(port);
    }
    if let Some(name) = &config.db_name {
        options = options.database(name);
    }
    if let Some(user) = &config.db_user {
        options = options.username(user);
    }
    if let Some(password) = &config.db_password {
        options = options.password(password);
    }
    if let Some(mode) = &config.db_ssl_mode {
        let mode = mode.parse::<sqlx::postgres::PgSslMode>().map_err(|_| {
            anyhow!("--db.ssl-mode {mode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")
        })?;
        options = options.ssl_mode(mode);
    }
    Ok(options)
}

/// Migrates the schema, retrying while the database is unreachable, then marks the connector
/// ready and runs scheduled maintenance forever. Returns only on errors that retrying cannot
/// fix.
async fn migrate_until_done(
    pool: PgPool,
    state: Arc<AppState>,
    maintenance_interval: Duration,
    compaction: storage::compaction::CompactionOptions,
    merges: Option<(Duration, storage::compaction::CompactionOptions)>,
) -> Result<(), MigrationError> {
    let mut delay = Duration::from_millis(500);
    loop {
        match migrate(&pool).await {
            Ok(applied) => {
                tracing::info!(applied, "database schema is up to date");
                state.migrated.store(true, Ordering::Release);
                if maintenance_interval.is_zero() {
                    return std::future::pending().await;
                }
                if let Some((interval, options)) = merges {
                    tokio::spawn(storage::maintenance::schedule_merges(
                        pool.clone(),
                        interval,
                        options,
                        state.metrics.clone(),
                    ));
                }
                storage::maintenance::schedule(pool, maintenance_interval, compaction, state.metrics.clone()).await;
                unreachable!("maintenance runs forever");
            }
            Err(e @ MigrationError::TooNew { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot migrate the database schema yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn print_prometheus_snippet(address: SocketAddr, tls: bool, auth: bool) {
    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        address.ip().to_string()
    };
    let scheme = if tls { "https" } else { "http" };
    let mut snippet = format!(
        "remote_write:\n  - url: \"{scheme}://{host}:{}/write\"\n",
        address.port()
    );
    if auth {
        snippet.push_str("    authorization:\n      credentials_file: /path/to/the/token  # or basic_auth\n");
    }
    if tls {
        snippet.push_str("    tls_config:\n      ca_file: /path/to/the/ca.crt\n");
    }
    println!("\npromscale-connector is listening on {address}. Add this to prometheus.yml:\n\n{snippet}");
}
