//! Series limits (docs/limits.md): new series past a tenant's or a metric's limit of active
//! series, or past its new series of the minute, are left out with a 400 naming the limit,
//! while the rest of the request (series it has, other tenants' series) is stored; limits
//! come from flags and from SQL; replicas count each other's series through the database;
//! a connector restarted with an empty cache does not count series it already has as new.

use std::time::Duration;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::sum_metric;
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series};

fn tenant_client(tenant: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("X-Scope-OrgID", tenant.parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// How many series of `selector` hold a sample at `at_ms`.
async fn count(client: &reqwest::Client, connector: &Connector, selector: &str, at_ms: i64) -> f64 {
    let query = format!("count({selector})");
    let response = promscale_e2e::instant_query(client, &connector.url(""), &query, at_ms).await;
    assert_eq!(response["status"], "success", "{query}: {response}");
    response["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Series `first..last` of `metric`, each with one sample at `t`.
fn batch(metric: &str, range: std::ops::Range<usize>, t: i64) -> Vec<u8> {
    encode(
        range
            .map(|i| series(&[("__name__", metric), ("pod", &format!("p{i}"))], &[(t, i as f64)]))
            .collect(),
    )
}

/// Remote-writes `body` to `connector`: the status and the answer's text.
async fn write(client: &reqwest::Client, connector: &Connector, body: Vec<u8>) -> (u16, String) {
    post(client, &connector.url("/write"), body).await.unwrap()
}

fn refused_metric(text: &str, metric: &str, labels: &[&str]) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|x| l.contains(x)))
        .collect();
    sum_metric(&lines.join("\n"), metric).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_series_past_the_active_series_limit_are_left_out_and_known_ones_are_written() {
    let pg = TestPostgres::start();
    let args = ["--limits.max-active-series", "5", "--limits.refresh-interval", "200ms"];
    let mut connector = Connector::start(&pg.uri(), &args).await;
    let client = reqwest::Client::new();
    let t = recent_ms() - 60_000;

    let (status, text) = write(&client, &connector, batch("jobs", 0..3, t)).await;
    assert_eq!(status, 204, "{text}");
    // Three known and four new: two of the new are one too many.
    let (status, text) = write(&client, &connector, batch("jobs", 0..7, t + 15_000)).await;
    assert_eq!(status, 400, "{text}");
    for words in [
        "5 series stored; 2 left out",
        "not created: the store has its limit of 5 active series",
        "--limits.max-active-series",
        "\"pod\"=\"p5\"",
        "\"pod\"=\"p6\"",
    ] {
        assert!(text.contains(words), "{words:?} in {text}");
    }
    assert_eq!(count(&client, &connector, "jobs", t + 15_000).await, 5.0);
    // The known series got their sample of the refused request.
    assert_eq!(
        count(&client, &connector, "jobs{pod=\"p0\"} == 0", t + 15_000).await,
        1.0
    );
    let text = connector.metrics_text().await;
    assert_eq!(
        refused_metric(
            &text,
            "promscale_ingest_series_refused_total",
            &["reason=\"series_limit\""]
        ),
        2.0
    );

    // Past the limit, new series leave nothing behind in the catalog: not their label values,
    // not their metric.
    let db = pg.pool().await;
    let catalog = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT count(*) FROM _prom_catalog.label), (SELECT count(*) FROM _prom_catalog.metric)",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let before = catalog().await;
    let (status, text) = write(&client, &connector, batch("jobs", 100..150, t + 15_000)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("0 series stored; 50 left out"), "{text}");
    let (status, text) = write(&client, &connector, batch("brand_new_metric", 0..3, t + 15_000)).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(catalog().await, before);

    // Restarted, its cache empty: the five series it has are found, not counted as new, and
    // written; the two others are still left out.
    connector.stop();
    let connector = Connector::start(&pg.uri(), &args).await;
    let (status, text) = write(&client, &connector, batch("jobs", 0..7, t + 30_000)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("5 series stored; 2 left out"), "{text}");
    assert_eq!(count(&client, &connector, "jobs", t + 30_000).await, 5.0);

    // The marks of the active series are in the database for every replica.
    let marked: i64 = sqlx::query_scalar("SELECT active_series FROM prom_info.tenant_limits WHERE tenant = ''")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(marked, 5);

    // Two series that received nothing for 20 minutes are no longer active: two new ones
    // take their place.
    sqlx::query(
        "UPDATE _prom_catalog.active_series SET seen = seen - interval '20 minutes'
          WHERE series_id IN (SELECT id FROM _prom_catalog.series ORDER BY id LIMIT 2)",
    )
    .execute(&db)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, text) = write(&client, &connector, batch("jobs", 2..7, t + 45_000)).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(
        count(&client, &connector, "last_over_time(jobs[10s])", t + 45_000).await,
        5.0
    );
    assert_eq!(count(&client, &connector, "jobs", t + 45_000).await, 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_limits_set_in_sql_hold_across_replicas_and_leave_other_tenants_alone() {
    let pg = TestPostgres::start();
    let args = [
        "--metrics.multi-tenancy",
        "--limits.refresh-interval",
        "200ms",
        "--limits.max-active-series",
        "100",
    ];
    let a = Connector::start(&pg.uri(), &args).await;
    let b = Connector::start(&pg.uri(), &args).await;
    let db = pg.pool().await;
    let t = recent_ms() - 60_000;
    let (alpha, beta, gamma) = (tenant_client("alpha"), tenant_client("beta"), tenant_client("gamma"));

    // Bad input is refused with what to do.
    for (call, words) in [
        ("SELECT prom_api.set_tenant_limits('a|b', 1)", "invalid tenant"),
        ("SELECT prom_api.set_tenant_limits('alpha', -1)", "0 (no limit) or more"),
        (
            "SELECT prom_api.set_metric_max_active_series('no_such_metric', 1)",
            "does not exist",
        ),
    ] {
        let error = sqlx::query(call).execute(&db).await.unwrap_err().to_string();
        assert!(error.contains(words), "{call}: {error}");
    }

    sqlx::query("SELECT prom_api.set_tenant_limits('alpha', max_active_series => 4)")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("SELECT prom_api.set_tenant_limits('gamma', max_new_series_per_minute => 2)")
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Three of alpha's series through one replica, three more through the other: it counts
    // the first replica's from the database, and creates one.
    let (status, text) = write(&alpha, &a, batch("jobs", 0..3, t)).await;
    assert_eq!(status, 204, "{text}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, text) = write(&alpha, &b, batch("jobs", 3..6, t)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("1 series stored; 2 left out"), "{text}");
    assert!(
        text.contains("tenant \"alpha\" has its limit of 4 active series"),
        "{text}"
    );
    assert_eq!(count(&alpha, &a, "jobs", t).await, 4.0);

    // Beta is not alpha: the same six series, all created (the flag's 100 apply to it).
    let (status, text) = write(&beta, &a, batch("jobs", 0..6, t)).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(count(&beta, &a, "jobs", t).await, 6.0);

    // A metric's own limit, per tenant: beta may have two series of `queue`.
    let (status, text) = write(&beta, &a, batch("queue", 0..1, t)).await;
    assert_eq!(status, 204, "{text}");
    sqlx::query("SELECT prom_api.set_metric_max_active_series('queue', 2)")
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, text) = write(&beta, &b, batch("queue", 0..4, t + 1000)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("2 series stored; 2 left out"), "{text}");
    assert!(text.contains("active series of this metric"), "{text}");
    assert_eq!(count(&beta, &a, "queue", t + 1000).await, 2.0);

    // New series a minute: gamma may create two; three more are left out.
    let (status, text) = write(&gamma, &a, batch("jobs", 0..5, t)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("2 series stored; 3 left out"), "{text}");
    assert!(text.contains("created its limit of 2 new series this minute"), "{text}");

    // What SQL users see.
    let limits: Vec<(String, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
        "SELECT tenant, max_active_series, max_new_series_per_minute, active_series
           FROM prom_info.tenant_limits ORDER BY tenant",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        limits,
        vec![
            ("alpha".to_string(), Some(4), None, 4),
            ("beta".to_string(), None, None, 8),
            ("gamma".to_string(), None, Some(2), 2),
        ]
    );
    let of_metric: Vec<(String, i64, String, i64)> =
        sqlx::query_as("SELECT metric_name, max_active_series, tenant, active_series FROM prom_info.metric_limits")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(of_metric, vec![("queue".to_string(), 2, "beta".to_string(), 2)]);

    // Counted by tenant and reason.
    let text = a.metrics_text().await;
    assert_eq!(
        refused_metric(
            &text,
            "promscale_tenant_samples_refused_total",
            &["tenant=\"gamma\"", "reason=\"new_series_limit\""]
        ),
        3.0
    );
    let text = b.metrics_text().await;
    assert_eq!(
        refused_metric(
            &text,
            "promscale_tenant_samples_refused_total",
            &["tenant=\"alpha\"", "reason=\"series_limit\""]
        ),
        2.0
    );
    assert_eq!(
        refused_metric(
            &text,
            "promscale_tenant_samples_refused_total",
            &["tenant=\"beta\"", "reason=\"metric_series_limit\""]
        ),
        2.0
    );

    // Reset: alpha has the flag's 100 again.
    sqlx::query("SELECT prom_api.reset_tenant_limits('alpha')")
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, text) = write(&alpha, &b, batch("jobs", 3..6, t + 1000)).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(count(&alpha, &a, "jobs", t + 1000).await, 6.0);

    // A tenant's own label limits and ingestion rate (no flag sets either here).
    sqlx::query(
        "SELECT prom_api.set_tenant_limits('delta', max_labels_per_series => 2, ingestion_rate => 0.01,
                                           ingestion_burst => 10)",
    )
    .execute(&db)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let delta = tenant_client("delta");
    let wide = |tenant_series: usize| {
        encode(
            (0..tenant_series)
                .map(|i| {
                    series(
                        &[("__name__", "wide"), ("pod", &format!("p{i}")), ("zone", "z")],
                        &[(t, 1.0)],
                    )
                })
                .collect(),
        )
    };
    let narrow = encode(vec![series(&[("__name__", "narrow"), ("pod", "p0")], &[(t, 1.0)])]);
    let (status, text) = write(&delta, &a, narrow).await;
    assert_eq!(status, 204, "{text}");
    let (status, text) = write(&delta, &a, wide(1)).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("--limits.max-labels-per-series, or per tenant prom_api.set_tenant_limits"),
        "{text}"
    );
    // Beta, without limits of its own, writes the same series.
    let (status, text) = write(&beta, &a, wide(1)).await;
    assert_eq!(status, 204, "{text}");
    // Twenty samples at once are past delta's bucket of ten (nine left, refilled at 0.01 a
    // second).
    sqlx::query("SELECT prom_api.set_tenant_limits('delta', max_labels_per_series => 0)")
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, text) = write(&delta, &a, wide(20)).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("rate limit of 0.01 samples/s"), "{text}");
    let (status, text) = write(&beta, &a, wide(20)).await;
    assert_eq!(status, 204, "{text}");
    let rate: (Option<f64>, Option<f64>, Option<i32>) = sqlx::query_as(
        "SELECT ingestion_rate, ingestion_burst, max_labels_per_series FROM prom_info.tenant_limits WHERE tenant = 'delta'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(rate, (Some(0.01), Some(10.0), Some(0)));
}

/// A database of version 19 (before series limits) is upgraded in place: its series are
/// found, not created again nor counted as new, and count as active once written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_19_database_is_upgraded_and_its_series_are_not_new() {
    use promscale_connector::storage::migrations::migrate_to;
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 19).await.unwrap();
    for i in 0..3 {
        promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "jobs"), ("pod", &format!("p{i}"))]).await;
    }
    let connector = promscale_e2e::upgrade::upgraded_by_a_connector_with(
        &pg,
        &db,
        &[
            "--limits.max-active-series",
            "4",
            "--limits.max-new-series-per-minute",
            "3",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let t = recent_ms() - 60_000;
    let (status, text) = write(&client, &connector, batch("jobs", 0..3, t)).await;
    assert_eq!(status, 204, "{text}");
    let (status, text) = write(&client, &connector, batch("jobs", 0..5, t + 15_000)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("4 series stored; 1 left out"), "{text}");
    assert!(text.contains("limit of 4 active series"), "{text}");
    let series: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(series, 4);
    let (active, created): (i64, i64) =
        sqlx::query_as("SELECT active_series, new_series_this_minute FROM prom_info.tenant_limits WHERE tenant = ''")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(active, 4);
    assert!(created <= 1, "only p3 was new: {created}");
}
