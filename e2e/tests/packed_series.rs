//! Series that stopped receiving samples are packed into batches once their metric's chunks
//! are sealed (migration 27, `docs/series-catalog.md`): a database written by version 26
//! upgrades in place, and once packed every reader answers exactly as before (PromQL, the
//! series and label APIs, the SQL views, the series lookups), a series still writing stays a
//! row, a packed series that writes again keeps its id through a connector that never saw it,
//! and later packings fold into the metric's batch.

use std::time::Duration;

use promscale_connector::storage::compaction::CompactionOptions;
use promscale_connector::storage::migrations::migrate_to;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::upgrade::{create_series_in_sql, upgraded_by_a_connector};
use promscale_e2e::{json, maintain_with, query_range};
use sqlx::PgPool;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const CHUNK_MS: i64 = 8 * HOUR_MS;
const METRIC: &str = "pk_gauge";

async fn write(client: &reqwest::Client, connector: &Connector, pods: &[String], times: &[i64]) {
    let body = encode(
        pods.iter()
            .enumerate()
            .map(|(n, pod)| {
                let samples: Vec<(i64, f64)> = times
                    .iter()
                    .map(|&t| (t, (n as f64) * 1000.0 + (t / MINUTE_MS % 997) as f64))
                    .collect();
                series(&[("__name__", METRIC), ("job", "pk"), ("pod", pod)], &samples)
            })
            .collect(),
    );
    let (status, text) = post(client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 204, "{text}");
}

/// Now, in whole seconds (ms), and the end of an 8 h chunk that closed at least three hours
/// ago.
fn now_and_closed_chunk_end() -> (i64, i64) {
    // recent_ms is an hour ago, in whole seconds.
    let now = promscale_e2e::recent_ms() + HOUR_MS;
    (now, (now - 3 * HOUR_MS) / CHUNK_MS * CHUNK_MS)
}

fn pods(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// What users see of the metric: PromQL over its whole span, with matchers that the batches'
/// label index answers and one that accepts series lacking the label, the series and label
/// value APIs, and its SQL view.
async fn answers(client: &reqwest::Client, connector: &Connector, db: &PgPool, start: i64, end: i64) -> Vec<String> {
    let mut out = Vec::new();
    for query in [
        METRIC.to_string(),
        format!("count({METRIC}{{pod=~\"dead-1.*\"}})"),
        format!("sum by (pod) ({METRIC}{{pod!~\"live-.*\", job=\"pk\"}})"),
        format!("count({METRIC}{{container=\"\"}})"),
    ] {
        out.push(query_range(client, &connector.url(""), &query, start, end, 600).await);
    }
    let window = [
        ("start", format!("{}", start as f64 / 1000.0)),
        ("end", format!("{}", end as f64 / 1000.0)),
    ];
    let mut series = json(
        client
            .post(connector.url("/api/v1/series"))
            .form(&[&[("match[]", format!("{METRIC}{{pod=~\".+\"}}"))][..], &window[..]].concat()),
    )
    .await;
    assert_eq!(series["status"], "success", "{series}");
    let list = series["data"].as_array_mut().unwrap();
    list.sort_by_key(|s| s.to_string());
    out.push(series["data"].to_string());
    let values = json(client.get(connector.url("/api/v1/label/pod/values"))).await;
    out.push(values["data"].to_string());
    let view = promscale_e2e::view_samples(db, METRIC, "pod").await;
    out.push(format!("{view:?}"));
    let cardinality: Vec<(String, i64)> =
        sqlx::query_as("SELECT metric_name::text, series FROM prom_info.metric_cardinality ORDER BY 1")
            .fetch_all(db)
            .await
            .unwrap();
    out.push(format!("{cardinality:?}"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(db)
        .await
        .unwrap();
    out.push(count.to_string());
    out
}

/// Each answer as before (named by position: the full answers run to thousands of lines).
fn same(before: &[String], after: &[String]) {
    assert_eq!(before.len(), after.len());
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        assert!(
            b == a,
            "answer {i} changed after packing: {:.300} ... became {:.300} ...",
            b,
            a
        );
    }
}

/// (series as rows, series in batches, batches) of the metric.
async fn layout(db: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.series_row r WHERE r.metric_id = m.id),
                (SELECT coalesce(sum(cardinality(b.series)), 0)::int8 FROM _prom_catalog.series_batch b WHERE b.metric_id = m.id),
                (SELECT count(*) FROM _prom_catalog.series_batch b WHERE b.metric_id = m.id)
           FROM _prom_catalog.metric m WHERE m.metric_name = $1",
    )
    .bind(METRIC)
    .fetch_one(db)
    .await
    .unwrap()
}

/// The ids of the series of `pod`, wherever they are.
async fn ids_of(db: &PgPool, pod: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT s.id FROM _prom_catalog.series s
          WHERE s.labels @> ARRAY[(SELECT l.id FROM _prom_catalog.label l WHERE l.key = 'pod' AND l.value = $1)]
          ORDER BY s.id",
    )
    .bind(pod)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_that_stopped_are_packed_and_answer_exactly_as_before() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    // Three series of a version 26 catalog, moved into its indexed rows by its merge pass.
    migrate_to(&db, 26).await.unwrap();
    let mut old_ids = Vec::new();
    for pod in pods("old", 3) {
        old_ids.push(create_series_in_sql(&db, &[("__name__", METRIC), ("job", "pk"), ("pod", &pod)]).await);
    }
    sqlx::query("SELECT _prom_catalog.index_fresh_series()")
        .execute(&db)
        .await
        .unwrap();
    let connector = upgraded_by_a_connector(&pg, &db).await;
    let client = reqwest::Client::new();

    // Twenty minutes of samples in an 8 h chunk that closed at least three hours ago: the
    // old series and 30 more stop there; 10 live series go on until five minutes ago.
    let (now, chunk_end) = now_and_closed_chunk_end();
    let dead_times: Vec<i64> = (0..20).map(|i| chunk_end - 2 * HOUR_MS + i * MINUTE_MS).collect();
    let live_times: Vec<i64> = (0..25).map(|i| now - 30 * MINUTE_MS + i * MINUTE_MS).collect();
    let (dead, live) = (pods("dead", 30), pods("live", 10));
    write(&client, &connector, &pods("old", 3), &dead_times).await;
    write(&client, &connector, &dead, &dead_times).await;
    write(&client, &connector, &["gap-0".to_string()], &dead_times).await;
    write(&client, &connector, &live, &dead_times).await;
    write(&client, &connector, &live, &live_times).await;
    // A series silent since the old chunk (created before the live ones) that writes again:
    // its new sample is still in the head when maintenance packs.
    let compact_only = CompactionOptions {
        seal_after: Duration::from_secs(100 * 365 * 86_400),
        pack_after: Duration::from_secs(100 * 365 * 86_400),
        ..CompactionOptions::everything()
    };
    assert_eq!(maintain_with(&db, &compact_only).await.series_packed, 0);
    write(&client, &connector, &["gap-0".to_string()], &[now - MINUTE_MS]).await;
    assert_eq!(
        ids_of(&db, "old-1").await,
        vec![old_ids[1]],
        "the upgraded catalog's series keep their ids"
    );

    let (start, end) = (dead_times[0] - HOUR_MS, now);
    let before = answers(&client, &connector, &db, start, end).await;
    assert_eq!(layout(&db).await, (44, 0, 0));

    // Maintenance seals the closed chunk, then packs the series with nothing in the last hour
    // (the head, written less than half an hour ago, stays as it is).
    let options = CompactionOptions {
        pack_after: Duration::from_secs(3600),
        head_age: Duration::from_secs(1800),
        ..CompactionOptions::everything()
    };
    let stats = maintain_with(&db, &options).await;
    assert!(stats.chunks_sealed >= 1, "{stats:?}");
    assert_eq!(stats.series_packed, 33, "{stats:?}");
    assert_eq!(
        layout(&db).await,
        (11, 33, 1),
        "the live series stay rows, the one writing again too, the others one batch"
    );
    same(&before, &answers(&client, &connector, &db, start, end).await);
    // Again: nothing more to pack.
    assert_eq!(maintain_with(&db, &options).await.series_packed, 0);

    // A connector that never saw them (a restart, another replica) writes again for a packed
    // series, an old one and a new pod: the packed ones keep their ids, one series is new.
    let dead_3 = ids_of(&db, "dead-3").await;
    assert_eq!(dead_3.len(), 1);
    let second = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let late = now - 2 * MINUTE_MS;
    write(
        &client,
        &second,
        &["dead-3".to_string(), "old-1".to_string(), "new-0".to_string()],
        &[late],
    )
    .await;
    assert_eq!(ids_of(&db, "dead-3").await, dead_3);
    assert_eq!(ids_of(&db, "old-1").await, vec![old_ids[1]]);
    assert_eq!(ids_of(&db, "new-0").await.len(), 1);
    assert_eq!(layout(&db).await, (12, 33, 1));
    let answer = json(client.post(second.url("/api/v1/query")).form(&[
        ("query", format!("{METRIC}{{pod=\"dead-3\"}}")),
        ("time", format!("{}", late as f64 / 1000.0)),
    ]))
    .await;
    let expected = (late / MINUTE_MS % 997).to_string();
    assert_eq!(answer["data"]["result"][0]["value"][1], expected.as_str(), "{answer}");
    // The series limits' lookup finds a packed series by name.
    let found: Vec<(i32, Option<i64>)> =
        sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.existing_series($1, $2, $3, $4)")
            .bind(vec![METRIC; 2])
            .bind(vec![3i32; 2])
            .bind(vec!["__name__", "job", "pod", "__name__", "job", "pod"])
            .bind(vec![METRIC, "pk", "dead-7", METRIC, "pk", "gone"])
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(found, vec![(0, Some(ids_of(&db, "dead-7").await[0])), (1, None)]);

    // Later, every series is inactive (none counted in the head): the live ones and gap-0
    // join the metric's batch. The new pod, created after every series of the last chunk and
    // with no compacted sample, stays a row.
    let metric_id: i32 = sqlx::query_scalar("SELECT id FROM _prom_catalog.metric WHERE metric_name = $1")
        .bind(METRIC)
        .fetch_one(&db)
        .await
        .unwrap();
    let packed: i64 =
        sqlx::query_scalar("SELECT _prom_catalog.pack_inactive_series($1, now() + interval '1 day', 1000, '{}')")
            .bind(metric_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(packed, 11);
    assert_eq!(layout(&db).await, (1, 44, 1));
    let after = answers(&client, &second, &db, start, end).await;
    // What changed since: the late samples (10 live series still in the lookback, and the
    // 3 written late), and one more series.
    let at_late = json(client.post(second.url("/api/v1/query")).form(&[
        ("query", format!("count({METRIC})")),
        ("time", format!("{}", late as f64 / 1000.0)),
    ]))
    .await;
    assert_eq!(at_late["data"]["result"][0]["value"][1], "13", "{at_late}");
    assert_eq!(
        after[after.len() - 1],
        (before[before.len() - 1].parse::<i64>().unwrap() + 1).to_string()
    );
    let series_api = &after[4];
    assert!(
        series_api.contains("\"new-0\"") && series_api.contains("\"dead-3\""),
        "{series_api}"
    );
}

/// A client sending `token` as its bearer token.
fn tenant_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// What a tenant sees of the catalog: its label names and values, its series, the
/// cardinality status of its series.
async fn tenant_view(client: &reqwest::Client, connector: &Connector, start: i64, end: i64) -> Vec<String> {
    let window = [
        ("start", format!("{}", start as f64 / 1000.0)),
        ("end", format!("{}", end as f64 / 1000.0)),
    ];
    let mut out = Vec::new();
    for (path, params) in [
        ("/api/v1/labels", vec![]),
        ("/api/v1/label/pod/values", vec![]),
        ("/api/v1/label/__name__/values", vec![]),
        ("/api/v1/series", vec![("match[]", format!("{METRIC}{{pod=~\".+\"}}"))]),
        ("/api/v1/status/tsdb", vec![("limit", "1000".to_string())]),
        (
            "/api/v1/query_range",
            vec![("query", format!("count({METRIC})")), ("step", "600".to_string())],
        ),
    ] {
        let params: Vec<(&str, String)> = params.into_iter().chain(window.iter().cloned()).collect();
        let mut answer = json(client.get(connector.url(path)).query(&params)).await;
        assert_eq!(answer["status"], "success", "{path}: {answer}");
        if let Some(list) = answer["data"].as_array_mut() {
            list.sort_by_key(|v| v.to_string());
        }
        // The head's figures change as maintenance compacts it; the counts of series do not.
        if let Some(head) = answer.pointer_mut("/data/headStats").and_then(|h| h.as_object_mut()) {
            head.retain(|k, _| k == "numSeries" || k == "numLabelPairs");
        }
        out.push(format!("{path}: {}", answer["data"]));
    }
    out
}

/// Packed series of several tenants: each tenant's label names and values, series,
/// cardinality and queries are what they were, and no tenant sees another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_their_packed_series_and_only_theirs() {
    let secrets = promscale_e2e::private_dir("packed-tenants");
    let tenants_file = secrets.path().join("tenants");
    std::fs::write(&tenants_file, "alpha:alpha-token\nbeta:beta-token\n").unwrap();
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--maintenance.interval",
            "0s",
            "--metrics.multi-tenancy",
            "--auth.tenant-tokens-file",
            tenants_file.to_str().unwrap(),
        ],
    )
    .await;
    let (alpha, beta) = (tenant_client("alpha-token"), tenant_client("beta-token"));
    let (now, chunk_end) = now_and_closed_chunk_end();
    let times: Vec<i64> = (0..20).map(|i| chunk_end - 2 * HOUR_MS + i * MINUTE_MS).collect();
    // Alpha's pods and beta's, and a pod of the same name in both.
    let (alpha_pods, beta_pods) = (
        [pods("a", 40), vec!["shared".to_string()]].concat(),
        [pods("b", 15), vec!["shared".to_string()]].concat(),
    );
    for (client, pods) in [(&alpha, &alpha_pods), (&beta, &beta_pods)] {
        let body = encode(
            pods.iter()
                .map(|pod| {
                    let samples: Vec<(i64, f64)> = times.iter().map(|&t| (t, 1.0)).collect();
                    series(&[("__name__", METRIC), ("job", "pk"), ("pod", pod)], &samples)
                })
                .collect(),
        );
        let (status, text) = post(client, &connector.url("/write"), body).await.unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let (start, end) = (times[0] - HOUR_MS, now);
    let before = (
        tenant_view(&alpha, &connector, start, end).await,
        tenant_view(&beta, &connector, start, end).await,
    );
    assert!(
        before.0[1].contains("\"a-3\"") && !before.0[1].contains("\"b-3\""),
        "{}",
        before.0[1]
    );
    let stats = maintain_with(
        &db,
        &CompactionOptions {
            pack_after: Duration::from_secs(3600),
            ..CompactionOptions::everything()
        },
    )
    .await;
    assert_eq!(stats.series_packed, 57, "{stats:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series_row")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    same(&before.0, &tenant_view(&alpha, &connector, start, end).await);
    same(&before.1, &tenant_view(&beta, &connector, start, end).await);
}

/// A version 26 database with a view of the user's own over the series table and a role
/// granted SELECT on that table upgrades: the view keeps working (on the live rows, with a
/// warning), and the role reads the new view of every series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_user_views_and_grants_of_the_series_table() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 26).await.unwrap();
    let id = create_series_in_sql(&db, &[("__name__", METRIC), ("job", "pk"), ("pod", "p")]).await;
    for statement in [
        "CREATE VIEW public.my_series AS SELECT * FROM _prom_catalog.series",
        "CREATE ROLE series_auditor LOGIN",
        "GRANT USAGE ON SCHEMA _prom_catalog TO series_auditor",
        "GRANT SELECT ON _prom_catalog.series TO series_auditor",
    ] {
        sqlx::query(statement).execute(&db).await.unwrap();
    }
    migrate_to(&db, promscale_connector::storage::migrations::latest_version())
        .await
        .unwrap();
    let mine: Vec<i64> = sqlx::query_scalar("SELECT id FROM public.my_series")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(mine, vec![id]);
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = '_prom_catalog.series'::regclass")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(kind, "v");
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE series_auditor")
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: Vec<i64> = sqlx::query_scalar("SELECT id FROM _prom_catalog.series")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec![id]);
    tx.rollback().await.unwrap();
}
