//! MetricPolicies on a real kube-apiserver and PostgreSQL: settings land in prom_info.metric,
//! conflicts are reported on both policies with a deterministic winner, new metrics are picked
//! up, hand edits are undone, and deleting a policy resets exactly what it set.

use std::time::Duration;

use kube::api::{Api, DeleteParams, ObjectMeta};
use promscale_crds::policy::{MetricSelector, StackRef};
use promscale_crds::stack::TenantLimitsSpec;
use promscale_crds::{MetricPolicy, MetricPolicySpec, PromscaleStack};
use promscale_e2e::k8s::{apply, events_about, has_condition, put_secret, uri_stack, wait_until};
use promscale_e2e::kube_cluster::KubeCluster;
use promscale_e2e::operator::Operator;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::wait_for;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(60);

fn policy(
    name: &str,
    names: &[&str],
    regex: Option<&str>,
    retention: Option<&str>,
    chunk: Option<&str>,
    compression: Option<bool>,
) -> MetricPolicy {
    MetricPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: MetricPolicySpec {
            stack_ref: StackRef { name: "metrics".into() },
            metrics: MetricSelector {
                names: names.iter().map(|s| s.to_string()).collect(),
                regex: regex.map(String::from),
            },
            retention_period: retention.map(String::from),
            chunk_interval: chunk.map(String::from),
            compression,
            max_active_series: None,
        },
        status: None,
    }
}

/// (retention, chunk interval, compression) of a metric as prom_info.metric shows them.
async fn settings(pool: &PgPool, metric: &str) -> (String, String, bool) {
    sqlx::query_as(
        "SELECT retention_period::text, chunk_interval::text, compression FROM prom_info.metric WHERE metric_name = $1",
    )
    .bind(metric)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("settings of {metric}: {e}"))
}

async fn wait_settings(pool: &PgPool, metric: &str, want: (&str, &str, bool)) {
    let want = (want.0.to_string(), want.1.to_string(), want.2);
    wait_for(&format!("{metric} to have settings {want:?}"), WAIT, || {
        let (pool, want) = (pool.clone(), want.clone());
        async move { (settings(&pool, metric).await == want).then_some(()) }
    })
    .await;
}

async fn create_metric(pool: &PgPool, metric: &str) {
    sqlx::query("SELECT _prom_catalog.get_or_create_metric($1)")
        .bind(metric)
        .execute(pool)
        .await
        .unwrap();
}

const DEFAULTS: (&str, &str, bool) = ("90 days", "08:00:00", true);

/// A kube-apiserver with the CRDs, PostgreSQL holding `metrics`, the operator, and a stack
/// `metrics` in namespace `default` whose database it is.
struct Setup {
    client: kube::Client,
    pool: PgPool,
    policies: Api<MetricPolicy>,
    stacks: Api<PromscaleStack>,
    _operator: Operator,
    _pg: TestPostgres,
    _cluster: KubeCluster,
}

impl Setup {
    async fn start(metrics: &[&str]) -> Setup {
        let cluster = KubeCluster::start().await;
        cluster.install_crds().await;
        let client = cluster.client().await;
        let pg = TestPostgres::start();
        let pool = pg.pool().await;
        promscale_connector::storage::migrations::migrate(&pool).await.unwrap();
        for metric in metrics {
            create_metric(&pool, metric).await;
        }
        put_secret(&client, "default", "metrics-db", "uri", &pg.uri()).await;
        let operator = Operator::start(&cluster.admin_kubeconfig(), &[]).await;
        let stacks: Api<PromscaleStack> = Api::namespaced(client.clone(), "default");
        apply(&stacks, &uri_stack("metrics", "default", "metrics-db")).await;
        Setup {
            policies: Api::namespaced(client.clone(), "default"),
            stacks,
            client,
            pool,
            _operator: operator,
            _pg: pg,
            _cluster: cluster,
        }
    }
}

#[tokio::test]
async fn policies_apply_conflict_pick_up_new_metrics_and_reset_on_delete() {
    let setup = Setup::start(&["debug_queue_depth", "debug_cache_misses", "http_requests_total"]).await;
    let (pool, policies, client) = (setup.pool.clone(), setup.policies.clone(), setup.client.clone());

    // --- "metrics matching debug_.* keep 3 days, chunk 1 h, uncompressed"
    apply(
        &policies,
        &policy("debug", &[], Some("debug_.*"), Some("3d"), Some("1h"), Some(false)),
    )
    .await;
    let debug = wait_until(&policies, "debug", "applied", WAIT, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", "Applied"))
    })
    .await;
    assert_eq!(debug.status.as_ref().unwrap().applied_metrics, 2);
    assert!(debug
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .contains(&"promscale.dev/reset-metric-settings".to_string()));
    wait_settings(&pool, "debug_queue_depth", ("3 days", "01:00:00", false)).await;
    wait_settings(&pool, "debug_cache_misses", ("3 days", "01:00:00", false)).await;
    assert_eq!(
        settings(&pool, "http_requests_total").await,
        (DEFAULTS.0.into(), DEFAULTS.1.into(), DEFAULTS.2)
    );

    // --- a second policy naming one of them exactly: it wins, both report the conflict
    apply(
        &policies,
        &policy(
            "queue",
            &["debug_queue_depth", "not_written_yet"],
            None,
            Some("7d"),
            None,
            None,
        ),
    )
    .await;
    wait_settings(&pool, "debug_queue_depth", ("7 days", DEFAULTS.1, DEFAULTS.2)).await;
    for name in ["debug", "queue"] {
        let conflicted = wait_until(&policies, name, "reporting the conflict", WAIT, |p| {
            p.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Degraded", "True", "Conflict"))
        })
        .await;
        let status = conflicted.status.unwrap();
        assert_eq!(status.conflicts.len(), 1, "{name}: {:?}", status.conflicts);
        assert_eq!(status.conflicts[0].metric, "debug_queue_depth");
        assert_eq!(status.conflicts[0].policies, vec!["debug", "queue"]);
        assert_eq!(status.conflicts[0].winner, "queue");
    }
    let queue = policies.get("queue").await.unwrap().status.unwrap();
    assert_eq!((queue.applied_metrics, queue.pending_metrics), (1, 1));
    assert_eq!(policies.get("debug").await.unwrap().status.unwrap().applied_metrics, 1);
    wait_settings(&pool, "debug_cache_misses", ("3 days", "01:00:00", false)).await;
    let warnings: Vec<_> = events_about(&client, "default", "queue")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(warnings.contains(&"Conflict".to_string()), "{warnings:?}");

    // --- a named metric written later is picked up
    create_metric(&pool, "not_written_yet").await;
    wait_settings(&pool, "not_written_yet", ("7 days", DEFAULTS.1, DEFAULTS.2)).await;
    wait_until(&policies, "queue", "counting the new metric", WAIT, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.applied_metrics == 2 && s.pending_metrics == 0)
    })
    .await;

    // --- a setting changed by hand in SQL is set back
    sqlx::query("SELECT prom_api.set_metric_retention_period('debug_cache_misses', INTERVAL '1 day')")
        .execute(&pool)
        .await
        .unwrap();
    wait_settings(&pool, "debug_cache_misses", ("3 days", "01:00:00", false)).await;

    // --- deleting the winner resets what it set; the other policy takes the metric over
    policies.delete("queue", &DeleteParams::default()).await.unwrap();
    wait_for("the queue policy to be gone", WAIT, || {
        let policies = policies.clone();
        async move { policies.get_opt("queue").await.unwrap().is_none().then_some(()) }
    })
    .await;
    wait_settings(&pool, "not_written_yet", DEFAULTS).await;
    wait_settings(&pool, "debug_queue_depth", ("3 days", "01:00:00", false)).await;
    wait_until(&policies, "debug", "free of conflicts", WAIT, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| has_condition(&s.conditions, "Degraded", "False", "AsExpected") && s.applied_metrics == 2)
    })
    .await;

    // --- narrowing the regex releases the metrics it no longer matches; dropping a setting resets it
    apply(
        &policies,
        &policy("debug", &[], Some("debug_cache.*"), Some("3d"), None, Some(false)),
    )
    .await;
    wait_settings(&pool, "debug_queue_depth", DEFAULTS).await;
    wait_settings(&pool, "debug_cache_misses", ("3 days", DEFAULTS.1, false)).await;

    // --- a setting a person made in SQL on a metric no policy covers is left alone
    sqlx::query("SELECT prom_api.set_metric_retention_period('http_requests_total', INTERVAL '2 years')")
        .execute(&pool)
        .await
        .unwrap();

    // --- deleting the last policy resets everything it set, and nothing else
    policies.delete("debug", &DeleteParams::default()).await.unwrap();
    wait_settings(&pool, "debug_cache_misses", DEFAULTS).await;
    wait_for("the operator's bookkeeping to be empty", WAIT, || {
        let pool = pool.clone();
        async move {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_operator.metric_policy")
                .fetch_one(&pool)
                .await
                .ok()?;
            (rows == 0).then_some(())
        }
    })
    .await;
    assert_eq!(settings(&pool, "http_requests_total").await.0, "2 years");
    let reasons: Vec<_> = events_about(&client, "default", "debug")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"SettingsReset".to_string()), "{reasons:?}");

    // --- a regex that does not compile is reported, and nothing is applied
    apply(
        &policies,
        &policy("broken", &[], Some("debug_(.*"), Some("3d"), None, None),
    )
    .await;
    let broken = wait_until(&policies, "broken", "reporting the bad regex", WAIT, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| has_condition(&s.conditions, "Degraded", "True", "InvalidSpec"))
    })
    .await;
    let message = promscale_e2e::k8s::condition(&broken.status.unwrap().conditions, "Ready")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("spec.metrics.regex does not compile"), "{message}");
    assert_eq!(
        settings(&pool, "debug_cache_misses").await,
        (DEFAULTS.0.into(), DEFAULTS.1.into(), DEFAULTS.2)
    );
}

/// A policy's series limit lands in the database where connectors read it
/// (`prom_info.metric_limits`), a change of the policy replaces a hand edit, and deleting
/// the policy gives the metric the connectors' flag again; the stack's `tenantLimits` land in
/// `prom_info.tenant_limits`, and a tenant taken off the list is reset.
#[tokio::test]
async fn a_policy_sets_the_series_limit_of_its_metrics() {
    let setup = Setup::start(&["kube_pod_labels", "kube_pod_info"]).await;
    let (pool, policies) = (setup.pool.clone(), setup.policies.clone());
    let mut limited = policy("pods", &["kube_pod_labels"], None, None, None, None);
    limited.spec.max_active_series = Some(20_000);
    apply(&policies, &limited).await;

    let limits = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT DISTINCT metric_name, max_active_series FROM prom_info.metric_limits ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let want = vec![("kube_pod_labels".to_string(), 20_000)];
    wait_for("the policy's series limit", WAIT, || async {
        (limits().await == want).then_some(())
    })
    .await;
    // The retention of the metric is left alone.
    assert_eq!(
        settings(&pool, "kube_pod_labels").await,
        (DEFAULTS.0.into(), DEFAULTS.1.into(), DEFAULTS.2)
    );

    sqlx::query("SELECT prom_api.set_metric_max_active_series('kube_pod_labels', 5)")
        .execute(&pool)
        .await
        .unwrap();
    // The operator resyncs policies on its interval; a change of the policy applies at once.
    limited.spec.max_active_series = Some(30_000);
    apply(&policies, &limited).await;
    let want = vec![("kube_pod_labels".to_string(), 30_000)];
    wait_for("the changed series limit", WAIT, || async {
        (limits().await == want).then_some(())
    })
    .await;

    policies.delete("pods", &DeleteParams::default()).await.unwrap();
    wait_for("the limit reset", WAIT, || async {
        limits().await.is_empty().then_some(())
    })
    .await;

    // Tenants' limits from the stack; a tenant set by hand in SQL is not the stack's.
    sqlx::query("SELECT prom_api.set_tenant_limits('team-c', max_active_series => 5)")
        .execute(&pool)
        .await
        .unwrap();
    let mut stack = uri_stack("metrics", "default", "metrics-db");
    stack.spec.tenant_limits = vec![
        TenantLimitsSpec {
            tenant: "team-a".into(),
            max_active_series: Some(1000),
            ingestion_rate: Some(500),
            ..Default::default()
        },
        TenantLimitsSpec {
            tenant: "team-b".into(),
            max_new_series_per_minute: Some(10),
            ..Default::default()
        },
    ];
    apply(&setup.stacks, &stack).await;
    let tenants = || async {
        sqlx::query_as::<_, (String, Option<i64>, Option<i64>, Option<f64>)>(
            "SELECT tenant, max_active_series, max_new_series_per_minute, ingestion_rate
               FROM prom_info.tenant_limits ORDER BY tenant",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let want = vec![
        ("team-a".to_string(), Some(1000), None, Some(500.0)),
        ("team-b".to_string(), None, Some(10), None),
        ("team-c".to_string(), Some(5), None, None),
    ];
    wait_for("the stack's tenant limits", WAIT, || async {
        (tenants().await == want).then_some(())
    })
    .await;
    // Team-b off the list: its limits are the flags' again; team-c's stay.
    stack.spec.tenant_limits.truncate(1);
    apply(&setup.stacks, &stack).await;
    let want = vec![
        ("team-a".to_string(), Some(1000), None, Some(500.0)),
        ("team-c".to_string(), Some(5), None, None),
    ];
    wait_for("team-b's limits reset", WAIT, || async {
        (tenants().await == want).then_some(())
    })
    .await;
}

/// An operator newer than the connectors: on a database of schema version 19 (before series
/// limits) a policy's retention still applies, and one asking for `maxActiveSeries` is
/// refused with what to do.
#[tokio::test]
async fn policies_apply_to_a_database_older_than_series_limits() {
    use promscale_operator::policy::settings::{apply, Desired, Owner};
    let pg = TestPostgres::start();
    let pool = pg.pool().await;
    promscale_connector::storage::migrations::migrate_to(&pool, 19)
        .await
        .unwrap();
    create_metric(&pool, "old_metric").await;
    let mut connection = pool.acquire().await.unwrap();
    let owner = Owner {
        uid: "0a1b",
        name: "default/old",
    };
    let three_days = sqlx::postgres::types::PgInterval {
        months: 0,
        days: 3,
        microseconds: 0,
    };
    let desired = Desired {
        retention: Some(three_days),
        chunk: None,
        compression: None,
        max_active_series: None,
    };
    let changed = apply(&mut connection, &owner, &["old_metric".to_string()], &desired)
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(settings(&pool, "old_metric").await.0, "3 days");
    let limited = Desired {
        max_active_series: Some(100),
        ..desired
    };
    let e = apply(&mut connection, &owner, &["old_metric".to_string()], &limited)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("schema version 20"), "{e}");
}
