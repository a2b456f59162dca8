//! Metric and label names outside the legacy character set, as Prometheus 3 accepts them
//! (`http.server.duration`, `service.name`, OpenTelemetry's names): stored as sent, answered
//! by PromQL with quoted selectors and groupings exactly as a real Prometheus 3 holding the
//! same samples answers, listed by the series and label APIs (names in a URL path also in
//! Prometheus 3's `U__` escaping), and readable from SQL through the metric's view; and what
//! a real Prometheus 3 scrapes with UTF-8 names arrives as scraped.

use promscale_e2e::comparison::{compare, get};
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::target::StaticTarget;
use serde_json::Value;

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 120;

/// The series: label pairs (sorted by name, as remote write requires) and a per-point slope.
fn data() -> Vec<(Vec<(&'static str, &'static str)>, f64)> {
    let mut all = Vec::new();
    for (n, service) in ["checkout", "cart"].into_iter().enumerate() {
        for (m, route) in ["/a", "/b/{id}"].into_iter().enumerate() {
            all.push((
                vec![
                    ("__name__", "http.server.duration"),
                    ("http.route", route),
                    ("service.name", service),
                ],
                (n * 2 + m + 1) as f64,
            ));
        }
    }
    for (n, pod) in ["café-1", "pod/2"].into_iter().enumerate() {
        all.push((
            vec![("__name__", "legacy_total"), ("job", "api"), ("k8s.pod.name", pod)],
            (n + 5) as f64,
        ));
    }
    all.push((vec![("__name__", "温度"), ("größe", "groß")], 0.5));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_names_are_stored_and_answered_as_prometheus_3_answers() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let reference = Prometheus::start_v3(
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let client = reqwest::Client::new();
    let first_ms = (promscale_e2e::recent_ms() - POINTS * STEP_MS) / 60_000 * 60_000;
    let data = data();
    for chunk in (0..POINTS).collect::<Vec<_>>().chunks(30) {
        let body = encode(
            data.iter()
                .map(|(labels, slope)| {
                    let samples: Vec<(i64, f64)> = chunk
                        .iter()
                        .map(|&i| (first_ms + i * STEP_MS, i as f64 * slope))
                        .collect();
                    series(labels, &samples)
                })
                .collect(),
        );
        for url in [connector.url("/write"), reference.url("/api/v1/write")] {
            let (status, text) = post(&client, &url, body.clone()).await.unwrap();
            assert!(status == 204 || status == 200, "{url}: {status} {text}");
        }
    }

    // PromQL: selectors, matchers and groupings on quoted names, at evaluation times between
    // samples (range edges are where Prometheus 2 and 3 differ, which is another issue's).
    let last_ms = first_ms + (POINTS - 1) * STEP_MS;
    let seconds = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let queries = [
        r#"{"http.server.duration"}"#,
        r#"{"http.server.duration", "service.name"="checkout"}"#,
        r#"{"http.server.duration", "http.route"=~"/b/.*"}"#,
        r#"{__name__="http.server.duration", "service.name"!="cart"}"#,
        r#"sum by ("service.name") (rate({"http.server.duration"}[5m]))"#,
        r#"sum without ("http.route") ({"http.server.duration"})"#,
        r#"max_over_time({"http.server.duration", "service.name"="cart"}[10m])"#,
        r#"legacy_total{"k8s.pod.name"="café-1"}"#,
        r#"count by ("k8s.pod.name", job) (legacy_total)"#,
        r#"{"温度", "größe"="groß"} * 2"#,
        r#"{"http.server.duration"} / on ("service.name", "http.route") group_left {"http.server.duration"}"#,
        r#"{__name__=~"http[.]server.*|温度"}"#,
    ];
    let mut failures = Vec::new();
    let mut compared = 0;
    for query in queries {
        let mut calls: Vec<(&str, Vec<(&str, String)>)> = [last_ms - 7_500, first_ms + 40 * STEP_MS + 3_000]
            .into_iter()
            .map(|t| {
                (
                    "/api/v1/query",
                    vec![("query", query.to_string()), ("time", seconds(t))],
                )
            })
            .collect();
        calls.push((
            "/api/v1/query_range",
            vec![
                ("query", query.to_string()),
                ("start", seconds(first_ms + 10 * STEP_MS + 7_500)),
                ("end", seconds(last_ms)),
                ("step", "60".to_string()),
            ],
        ));
        for (path, params) in calls {
            // Only answers with data compare anything.
            let (status, want) = get(&client, &reference.url(path), &params).await;
            assert_eq!(status, 200, "{path} {params:?}: the reference answered {want}");
            assert!(
                want["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
                "{path} {params:?}: the reference found nothing: {want}"
            );
            compared += 1;
            failures.extend(compare(&client, &reference.url(""), &connector.url(""), path, &params, true).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons differ:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A NUL byte no stored name or value can hold: nothing matches, as in Prometheus 3.
    for query in [
        r#"{__name__="\x00"}"#,
        r#"{"http.server.duration", "service.name"="a\x00"}"#,
    ] {
        let params = [("query", query.to_string()), ("time", seconds(last_ms))];
        for base in [reference.url(""), connector.url("")] {
            let (status, answer) = get(&client, &format!("{base}/api/v1/query"), &params).await;
            assert_eq!(
                (status, &answer["data"]["result"]),
                (200, &serde_json::json!([])),
                "{base} {query}: {answer}"
            );
        }
    }

    // The series and label APIs list the same names and values as Prometheus 3.
    let range = [("start", seconds(first_ms)), ("end", seconds(last_ms))];
    let mut calls: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "/api/v1/series".into(),
            vec![("match[]", r#"{"http.server.duration", "service.name"="cart"}"#.into())],
        ),
        ("/api/v1/series".into(), vec![("match[]", r#"{"温度"}"#.into())]),
        ("/api/v1/labels".into(), vec![]),
        ("/api/v1/label/__name__/values".into(), vec![]),
        ("/api/v1/label/service.name/values".into(), vec![]),
        ("/api/v1/label/U__service_2e_name/values".into(), vec![]),
        ("/api/v1/label/U__k8s_2e_pod_2e_name/values".into(), vec![]),
        ("/api/v1/label/gr%C3%B6%C3%9Fe/values".into(), vec![]),
        (
            "/api/v1/label/http.route/values".into(),
            vec![("match[]", r#"{"service.name"="checkout"}"#.into())],
        ),
    ];
    for (_, params) in &mut calls {
        params.extend(range.iter().cloned());
    }
    for (path, params) in &calls {
        let (want_status, want) = get(&client, &reference.url(path), params).await;
        let (got_status, got) = get(&client, &connector.url(path), params).await;
        assert_eq!(want_status, 200, "{path} {params:?}: the reference answered {want}");
        assert_eq!(got_status, 200, "{path} {params:?}: {got}");
        assert_eq!(sorted(&got["data"]), sorted(&want["data"]), "{path} {params:?}");
        assert!(
            want["data"].as_array().is_some_and(|a| !a.is_empty()),
            "{path} {params:?}: the comparison must compare something"
        );
    }
    // Names no series can have: no values, as Prometheus 3 answers.
    for path in [
        "/api/v1/label/a%00b/values",
        "/api/v1/label/U__a_0_/values",
        "/api/v1/label/no.such/values",
    ] {
        let (want_status, want) = get(&client, &reference.url(path), &[]).await;
        let (got_status, got) = get(&client, &connector.url(path), &[]).await;
        assert_eq!(
            (got_status, &got["data"]),
            (want_status, &want["data"]),
            "{path}: {got}"
        );
        assert_eq!(got["data"], serde_json::json!([]), "{path}");
    }

    // SQL users read the samples through the metric's view, a column per label name.
    let db = pg.pool().await;
    let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
        r#"SELECT "service.name", "http.route", count(*), max(value)
             FROM prom_metric."http.server.duration" GROUP BY 1, 2 ORDER BY 1, 2"#,
    )
    .fetch_all(&db)
    .await
    .expect("the view of a metric with a UTF-8 name, with UTF-8 label columns");
    let expected: Vec<(String, String, i64, f64)> = vec![
        ("cart".into(), "/a".into(), POINTS, (POINTS - 1) as f64 * 3.0),
        ("cart".into(), "/b/{id}".into(), POINTS, (POINTS - 1) as f64 * 4.0),
        ("checkout".into(), "/a".into(), POINTS, (POINTS - 1) as f64),
        ("checkout".into(), "/b/{id}".into(), POINTS, (POINTS - 1) as f64 * 2.0),
    ];
    assert_eq!(rows, expected);
    let pods: Vec<String> =
        sqlx::query_scalar(r#"SELECT DISTINCT "k8s.pod.name" FROM prom_metric.legacy_total ORDER BY 1"#)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(pods, ["café-1", "pod/2"]);
    let count: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM prom_metric."温度" WHERE "größe" = 'groß'"#)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, POINTS);
}

/// A JSON array with its elements in a canonical order (APIs need not agree on order).
fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_array().into_iter().flatten().map(Value::to_string).collect();
    out.sort();
    out
}

/// The exposition a Prometheus 3 target serves when its scraper allows UTF-8 names (text
/// format 1.0.0, names quoted).
const UTF8_EXPOSITION: &str = r#"# HELP "http.server.requests" Requests served.
# TYPE "http.server.requests" counter
{"http.server.requests","service.name"="checkout","http.route"="/a"} 42
{"http.server.requests","service.name"="cart","http.route"="/b/{id}"} 7
# TYPE legacy_gauge gauge
legacy_gauge{"k8s.pod.name"="café-1"} 3.5
"#;

/// A real Prometheus 3 scrapes a target exposing UTF-8 names and remote-writes to the
/// connector: every sample it holds of that target is answered by the connector's query API
/// with the same names, times and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_prometheus_3_scrapes_with_utf8_names_arrives_as_scraped() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let target = StaticTarget::start(
        "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        UTF8_EXPOSITION,
    )
    .await;
    let connector_port = connector.port();
    let target_address = target.address();
    let prometheus = Prometheus::start_v3(
        |_| {
            format!(
                r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: utf8
    static_configs: [{{targets: ['{target_address}']}}]
remote_write:
  - url: http://127.0.0.1:{connector_port}/write
    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_shards: 1}}
"#
            )
        },
        &[],
    )
    .await;
    let query = r#"{job="utf8"}[1m]"#;
    // Half a scrape interval after the last scrape: no sample sits on the range's edge.
    let at = prometheus.last_scrape_sent("utf8").await + 0.5;
    assert!(
        target.last_accept().is_some_and(|a| a.contains("escaping=allow-utf-8")),
        "Prometheus 3 asks for UTF-8 names: {:?}",
        target.last_accept()
    );
    let want = prometheus.query(query, at).await;
    assert!(!want.as_array().unwrap().is_empty(), "Prometheus holds the scrapes");
    let names: Vec<&str> = want
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str())
        .collect();
    for name in ["http.server.requests", "legacy_gauge", "up"] {
        assert!(names.contains(&name), "Prometheus scraped {name}: {names:?}");
    }
    let client = reqwest::Client::new();
    let params = [("query", query.to_string()), ("time", format!("{at:.3}"))];
    let failures = compare(
        &client,
        &prometheus.url(""),
        &connector.url(""),
        "/api/v1/query",
        &params,
        true,
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for failed in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
    ] {
        assert_eq!(prometheus.own_metric(failed).await.unwrap_or(0.0), 0.0, "{failed}");
    }
}
