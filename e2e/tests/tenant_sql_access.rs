//! SQL users confined to tenants (migration 21, docs/multi-tenancy.md "SQL"): two tenants
//! write through a connector with multi-tenancy; a PostgreSQL role bound to one tenant with
//! `prom_api.grant_tenant_access` reads exactly that tenant's series, samples, labels,
//! exemplars, native histograms and counts through every user view, and nothing of the
//! other's, not even through an error its own condition could raise; a role bound to both
//! sees both, an unbound admin everything; bound roles cannot read the catalog tables;
//! revoking takes the access away. A database of version 19 is upgraded and its existing
//! views then filter.

use std::collections::BTreeSet;
use std::str::FromStr;

use promscale_connector::prompb::{Exemplar, Label, TimeSeries};
use promscale_e2e::remote_write::{encode, integer_histogram, series};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

const STEP_MS: i64 = 15_000;

/// A pool logged in as `role` (password `secret`) on the test cluster.
async fn pool_as(uri: &str, role: &str) -> PgPool {
    let options = PgConnectOptions::from_str(uri)
        .unwrap()
        .username(role)
        .password("secret");
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("logging in as {role}: {e}"))
}

async fn run(db: &PgPool, sql: &str) {
    sqlx::query(sql)
        .execute(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The error a statement fails with (it must fail).
async fn error_of(db: &PgPool, sql: &str) -> String {
    match sqlx::query(sql).execute(db).await {
        Ok(_) => panic!("{sql} succeeded"),
        Err(e) => e.to_string(),
    }
}

async fn strings(db: &PgPool, sql: &str) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .collect()
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One tenant's write: `http_requests_total` for each instance (`points` samples from
/// `first_ms`), a metric of its own with an exemplar, and a native histogram series.
fn tenant_data(tenant: &str, instances: &[&str], first_ms: i64, points: i64) -> Vec<TimeSeries> {
    let times: Vec<i64> = (0..points).map(|i| first_ms + i * STEP_MS).collect();
    let mut out: Vec<TimeSeries> = instances
        .iter()
        .map(|instance| {
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("instance", instance),
                    ("job", "api"),
                ],
                &times.iter().map(|&t| (t, t as f64 / 1000.0)).collect::<Vec<_>>(),
            )
        })
        .collect();
    let own = format!("{tenant}_secret_total");
    let mut secret = series(
        &[("__name__", own.as_str()), ("team", &format!("{tenant}-payments"))],
        &times.iter().map(|&t| (t, 1.0)).collect::<Vec<_>>(),
    );
    secret.exemplars.push(Exemplar {
        labels: vec![Label {
            name: "trace_id".into(),
            value: format!("{tenant}-trace").into(),
        }],
        value: 1.0,
        timestamp: times[0],
    });
    out.push(secret);
    let mut histogram = series(&[("__name__", "latency_seconds"), ("instance", instances[0])], &[]);
    histogram.histograms = times.iter().map(|&t| integer_histogram(t, 4)).collect();
    out.push(histogram);
    out
}

async fn write_as(client: &reqwest::Client, url: &str, tenant: &str, body: Vec<TimeSeries>) {
    let response = client
        .post(url)
        .header("X-Scope-OrgID", tenant)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(encode(body))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 204, "{}", response.text().await.unwrap_or_default());
}

/// What a role bound to `tenants` must see, written as `alpha` (instances a, b) and `beta`
/// (instances c, d, e), `points` samples per series.
struct Expected {
    instances: BTreeSet<String>,
    tenants: BTreeSet<String>,
    samples: i64,
    series: i64,
    metrics: BTreeSet<String>,
    traces: BTreeSet<String>,
    histograms: i64,
}

fn expected(tenants: &[&str], points: i64) -> Expected {
    let mut e = Expected {
        instances: BTreeSet::new(),
        tenants: set(tenants),
        samples: 0,
        series: 0,
        metrics: BTreeSet::from(["http_requests_total".to_string(), "latency_seconds".to_string()]),
        traces: BTreeSet::new(),
        histograms: 0,
    };
    for tenant in tenants {
        let instances: &[&str] = if *tenant == "alpha" {
            &["a", "b"]
        } else {
            &["c", "d", "e"]
        };
        e.instances.extend(instances.iter().map(|s| s.to_string()));
        e.samples += instances.len() as i64 * points;
        e.series += instances.len() as i64;
        e.metrics.insert(format!("{tenant}_secret_total"));
        e.traces.insert(format!("{tenant}-trace"));
        e.histograms += points;
    }
    e
}

/// Reads every user view as `db`'s role and compares with what its tenants wrote.
async fn assert_sees(db: &PgPool, who: &str, e: &Expected) {
    let samples = count(db, "SELECT count(*) FROM prom_metric.http_requests_total").await;
    assert_eq!(samples, e.samples, "{who}: samples of prom_metric.http_requests_total");
    assert_eq!(
        count(db, "SELECT count(*) FROM prom_data.http_requests_total").await,
        e.samples,
        "{who}: prom_data"
    );
    assert_eq!(
        strings(db, "SELECT DISTINCT instance FROM prom_metric.http_requests_total").await,
        e.instances,
        "{who}: instances"
    );
    assert_eq!(
        strings(db, "SELECT DISTINCT __tenant__ FROM prom_metric.http_requests_total").await,
        e.tenants,
        "{who}: tenants in the view"
    );
    // The values are those written (time in seconds).
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM prom_metric.http_requests_total WHERE value <> extract(epoch FROM time)::float8"
        )
        .await,
        0,
        "{who}: values"
    );
    for tenant in ["alpha", "beta"] {
        let n = count(db, &format!("SELECT count(*) FROM prom_metric.{tenant}_secret_total")).await;
        assert_eq!(
            n > 0,
            e.tenants.contains(tenant),
            "{who}: {tenant}_secret_total has {n} samples"
        );
    }
    assert_eq!(
        strings(db, "SELECT metric_name FROM prom_info.metric").await,
        e.metrics,
        "{who}: prom_info.metric"
    );
    assert_eq!(
        strings(db, "SELECT metric_name FROM prom_info.metric_cardinality").await,
        e.metrics,
        "{who}: prom_info.metric_cardinality"
    );
    assert_eq!(
        count(
            db,
            "SELECT series FROM prom_info.metric_cardinality WHERE metric_name = 'http_requests_total'"
        )
        .await,
        e.series,
        "{who}: series of http_requests_total"
    );
    let values = |key: &str| format!("SELECT unnest(values) FROM prom_info.label WHERE key = '{key}'");
    assert_eq!(
        strings(db, &values("instance")).await,
        e.instances,
        "{who}: prom_info.label"
    );
    assert_eq!(
        strings(db, &values("__tenant__")).await,
        e.tenants,
        "{who}: prom_info.label"
    );
    assert_eq!(
        strings(
            db,
            "SELECT value FROM prom_info.label_cardinality WHERE key = 'instance'"
        )
        .await,
        e.instances,
        "{who}: prom_info.label_cardinality"
    );
    assert_eq!(
        count(
            db,
            "SELECT coalesce(sum(series), 0)::int8 FROM prom_info.label_cardinality WHERE key = 'job' AND value = 'api'"
        )
        .await,
        e.series,
        "{who}: series of job=api"
    );
    assert_eq!(
        strings(db, "SELECT tenant FROM prom_info.tenant").await,
        e.tenants,
        "{who}: prom_info.tenant"
    );
    assert_eq!(
        strings(db, "SELECT DISTINCT tenant FROM prom_info.tenant_label_cardinality").await,
        e.tenants,
        "{who}: prom_info.tenant_label_cardinality"
    );
    assert_eq!(
        strings(db, "SELECT tenant FROM prom_info.tenant_limits").await,
        e.tenants,
        "{who}: prom_info.tenant_limits"
    );
    assert_eq!(
        strings(db, "SELECT exemplar_labels->>'trace_id' FROM prom_info.exemplar").await,
        e.traces,
        "{who}: prom_info.exemplar"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM prom_info.native_histogram").await,
        e.histograms,
        "{who}: prom_info.native_histogram"
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM prom_api.native_histograms('latency_seconds', '-infinity', 'infinity')"
        )
        .await,
        e.histograms,
        "{who}: prom_api.native_histograms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_bound_to_tenants_see_only_their_tenants_in_sql() {
    let pg = promscale_e2e::postgres::TestPostgres::start();
    let admin = pg.pool().await;
    let connector = promscale_e2e::connector::Connector::start(
        &pg.uri(),
        &["--metrics.multi-tenancy", "--maintenance.interval", "0s"],
    )
    .await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");
    // Half the samples compacted into chunks, half in the head.
    let (points, half) = (40, 20);
    let first = promscale_e2e::recent_ms() - 2 * 3_600_000;
    write_as(&client, &url, "alpha", tenant_data("alpha", &["a", "b"], first, half)).await;
    write_as(
        &client,
        &url,
        "beta",
        tenant_data("beta", &["c", "d", "e"], first + 1000, half),
    )
    .await;
    promscale_e2e::maintain(&admin).await;
    assert_eq!(count(&admin, "SELECT count(*) FROM _prom_catalog.head").await, 0);
    let later = first + half * STEP_MS;
    write_as(&client, &url, "alpha", tenant_data("alpha", &["a", "b"], later, half)).await;
    write_as(
        &client,
        &url,
        "beta",
        tenant_data("beta", &["c", "d", "e"], later + 1000, half),
    )
    .await;

    // Limits of both tenants (migration 20): their rows are filtered as the rest.
    for tenant in ["alpha", "beta"] {
        run(
            &admin,
            &format!("SELECT prom_api.set_tenant_limits('{tenant}', max_active_series => 1000)"),
        )
        .await;
    }
    for role in ["alice", "bob", "carol", "team_alpha"] {
        run(&admin, &format!("CREATE ROLE {role} LOGIN PASSWORD 'secret'")).await;
    }
    run(&admin, "GRANT team_alpha TO carol").await;
    let bound: Vec<String> = sqlx::query_scalar("SELECT unnest(prom_api.grant_tenant_access('alice', ARRAY['alpha']))")
        .fetch_all(&admin)
        .await
        .unwrap();
    assert_eq!(bound, ["alpha"]);
    let bound: Vec<String> =
        sqlx::query_scalar("SELECT unnest(prom_api.grant_tenant_access('bob', ARRAY['beta', 'alpha', 'beta']))")
            .fetch_all(&admin)
            .await
            .unwrap();
    assert_eq!(bound, ["alpha", "beta"]);
    run(
        &admin,
        "SELECT prom_api.grant_tenant_access('team_alpha', ARRAY['alpha'])",
    )
    .await;

    // Bad names, unknown roles, and roles that would read around the views are refused.
    let e = error_of(
        &admin,
        "SELECT prom_api.grant_tenant_access('alice', ARRAY['alpha|beta'])",
    )
    .await;
    assert!(e.contains("invalid tenant name 'alpha|beta'"), "{e}");
    let e = error_of(&admin, "SELECT prom_api.grant_tenant_access('alice', ARRAY['..'])").await;
    assert!(e.contains("invalid tenant name"), "{e}");
    let e = error_of(&admin, "SELECT prom_api.grant_tenant_access('alice', ARRAY[]::text[])").await;
    assert!(e.contains("name at least one tenant"), "{e}");
    let e = error_of(&admin, "SELECT prom_api.grant_tenant_access('nobody', ARRAY['alpha'])").await;
    assert!(e.contains("role nobody does not exist"), "{e}");
    let e = error_of(&admin, "SELECT prom_api.revoke_tenant_access('Nobody \"x')").await;
    assert!(e.contains(r#"role "Nobody ""x" does not exist"#), "{e}");
    let e = error_of(
        &admin,
        "SELECT prom_api.grant_tenant_access(current_user, ARRAY['alpha'])",
    )
    .await;
    assert!(e.contains("superuser"), "{e}");
    run(&admin, "CREATE ROLE snooper LOGIN PASSWORD 'secret'").await;
    run(&admin, "GRANT USAGE ON SCHEMA _prom_catalog TO snooper").await;
    run(&admin, "GRANT SELECT ON _prom_catalog.series TO snooper").await;
    let e = error_of(&admin, "SELECT prom_api.grant_tenant_access('snooper', ARRAY['alpha'])").await;
    assert!(e.contains("role snooper has rights on _prom_catalog.series"), "{e}");

    // A new metric of alpha's, after the binding: its views are granted too.
    write_as(
        &client,
        &url,
        "alpha",
        vec![series(&[("__name__", "later_total"), ("job", "new")], &[(later, 1.0)])],
    )
    .await;
    write_as(
        &client,
        &url,
        "beta",
        vec![series(
            &[("__name__", "later_total"), ("job", "new")],
            &[(later, 2.0), (later + STEP_MS, 2.0)],
        )],
    )
    .await;

    let alice = pool_as(&pg.uri(), "alice").await;
    let mut alpha = expected(&["alpha"], points);
    alpha.metrics.insert("later_total".into());
    assert_sees(&alice, "alice (alpha)", &alpha).await;
    assert_eq!(count(&alice, "SELECT count(*) FROM prom_metric.later_total").await, 1);
    // A member of a bound role is confined to its tenants.
    let carol = pool_as(&pg.uri(), "carol").await;
    assert_sees(&carol, "carol (member of team_alpha)", &alpha).await;
    let bob = pool_as(&pg.uri(), "bob").await;
    let mut both = expected(&["alpha", "beta"], points);
    both.metrics.insert("later_total".into());
    assert_sees(&bob, "bob (alpha, beta)", &both).await;
    assert_sees(&admin, "the admin", &both).await;
    assert_eq!(count(&admin, "SELECT count(*) FROM prom_metric.later_total").await, 3);

    // A condition of alice's own that fails on a row of beta's never sees one.
    assert_eq!(
        count(
            &alice,
            "SELECT count(*) FROM prom_metric.http_requests_total WHERE 1 / (CASE WHEN instance = 'c' THEN 0 ELSE 1 END) = 1"
        )
        .await,
        alpha.samples
    );
    assert_eq!(
        count(
            &alice,
            "SELECT count(*) FROM prom_info.exemplar WHERE 1 / (CASE WHEN exemplar_labels->>'trace_id' = 'beta-trace' THEN 0 ELSE 1 END) = 1"
        )
        .await,
        2,
        "alpha's two exemplars"
    );
    // The catalog is out of reach, and so is deleting.
    for table in ["series", "label", "head", "chunk_block", "tenant_access", "samples"] {
        let e = error_of(&alice, &format!("SELECT * FROM _prom_catalog.{table} LIMIT 1")).await;
        assert!(e.contains("permission denied"), "{table}: {e}");
    }
    let e = error_of(&alice, "SELECT prom_api.delete_series('{job=\"api\"}')").await;
    assert!(e.contains("permission denied"), "{e}");
    let e = error_of(&alice, "SELECT prom_api.grant_tenant_access('alice', ARRAY['beta'])").await;
    assert!(e.contains("permission denied"), "{e}");
    // Bindings: a bound role sees its own, the admin every one.
    assert_eq!(
        strings(&alice, "SELECT role_name::text FROM prom_info.tenant_access").await,
        set(&["alice"])
    );
    assert_eq!(
        strings(&carol, "SELECT role_name::text FROM prom_info.tenant_access").await,
        set(&["team_alpha"])
    );
    assert_eq!(
        strings(&admin, "SELECT role_name::text FROM prom_info.tenant_access").await,
        set(&["alice", "bob", "team_alpha"])
    );

    // Revoking takes the binding and the rights it gave: alice reads nothing now.
    let revoked: bool = sqlx::query_scalar("SELECT prom_api.revoke_tenant_access('alice')")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(revoked);
    let revoked_again: bool = sqlx::query_scalar("SELECT prom_api.revoke_tenant_access('alice')")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(!revoked_again);
    drop(alice);
    let alice = pool_as(&pg.uri(), "alice").await;
    for view in ["prom_metric.http_requests_total", "prom_info.label", "prom_info.tenant"] {
        let e = error_of(&alice, &format!("SELECT * FROM {view} LIMIT 1")).await;
        assert!(e.contains("permission denied"), "{view}: {e}");
    }
    // A role neither bound nor able to read the catalog gets none of the histograms from the
    // SECURITY DEFINER function (it could otherwise SET ROLE to such a role to escape its
    // tenants).
    run(&admin, "CREATE ROLE dave LOGIN PASSWORD 'secret'").await;
    run(&admin, "GRANT USAGE ON SCHEMA prom_api, _prom_catalog TO dave").await;
    let dave = pool_as(&pg.uri(), "dave").await;
    let e = error_of(
        &dave,
        "SELECT count(*) FROM prom_api.native_histograms('latency_seconds', '-infinity', 'infinity')",
    )
    .await;
    assert!(e.contains("permission denied"), "{e}");
    assert_eq!(
        strings(&admin, "SELECT role_name::text FROM prom_info.tenant_access").await,
        set(&["bob", "team_alpha"])
    );
    // Bob, rebound to beta alone, sees beta's only.
    run(&admin, "SELECT prom_api.grant_tenant_access('bob', ARRAY['beta'])").await;
    let mut beta = expected(&["beta"], points);
    beta.metrics.insert("later_total".into());
    assert_sees(&bob, "bob (beta)", &beta).await;
}

/// Migration 20 upgrades a database of version 19 in place: a view that version 19 made
/// filters for a bound role once upgraded, and shows everything to the admin as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_19_database_is_upgraded_and_its_views_filter() {
    use promscale_connector::storage::migrations::migrate_to;
    let pg = promscale_e2e::postgres::TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 19).await.unwrap();
    let mut ids = Vec::new();
    for (tenant, instance) in [("alpha", "a"), ("beta", "b"), ("beta", "c")] {
        ids.push(
            promscale_e2e::upgrade::create_series_in_sql(
                &db,
                &[
                    ("__name__", "old_total"),
                    ("__tenant__", tenant),
                    ("instance", instance),
                ],
            )
            .await,
        );
    }
    let at = promscale_e2e::recent_ms();
    // A head row in the plain form every version since 5 reads: 10 samples per series.
    sqlx::query(
        "INSERT INTO _prom_catalog.head (metric_id, min_time, max_time, samples, plain_series_ids, plain_times, plain_values)
         SELECT ($1 >> 40)::int4, to_timestamp($2 / 1000.0), to_timestamp($2 / 1000.0) + interval '135 s', 30,
                array_agg(s ORDER BY s, i), array_agg(to_timestamp($2 / 1000.0) + i * interval '15 s' ORDER BY s, i),
                array_agg(i::float8 ORDER BY s, i)
           FROM unnest($3::int8[]) s, generate_series(0, 9) i",
    )
    .bind(ids[0])
    .bind(at)
    .bind(&ids)
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM prom_metric.old_total").await, 30);
    run(&db, "CREATE ROLE alice LOGIN PASSWORD 'secret'").await;
    let _connector = promscale_e2e::upgrade::upgraded_by_a_connector(&pg, &db).await;
    run(&db, "SELECT prom_api.grant_tenant_access('alice', ARRAY['alpha'])").await;
    let alice = pool_as(&pg.uri(), "alice").await;
    assert_eq!(count(&alice, "SELECT count(*) FROM prom_metric.old_total").await, 10);
    assert_eq!(
        strings(&alice, "SELECT DISTINCT instance FROM prom_metric.old_total").await,
        set(&["a"])
    );
    assert_eq!(count(&alice, "SELECT count(*) FROM prom_data.old_total").await, 10);
    assert_eq!(
        strings(&alice, "SELECT tenant FROM prom_info.tenant").await,
        set(&["alpha"])
    );
    assert_eq!(count(&db, "SELECT count(*) FROM prom_metric.old_total").await, 30);
    assert_eq!(
        strings(&db, "SELECT tenant FROM prom_info.tenant").await,
        set(&["alpha", "beta"])
    );
}
