//! Side by side with Prometheus 3 on identical data (the comparison data set, half of it
//! compacted): `/api/v1/status/tsdb` reports the same cardinality, and the `limit` parameter
//! of the series, labels, label values and query endpoints cuts the same answers with the
//! same warning, or refuses the same values.

use promscale_e2e::comparison::{get, Loaded};
use serde_json::Value;

/// The (name, value) entries of one of status/tsdb's lists.
fn entries(list: &Value) -> Vec<(String, u64)> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_u64().unwrap()))
        .collect()
}

/// Two top-N lists agree: the same counts in the same order, and the same names wherever a
/// count is above the list's last one (Prometheus orders equal counts by chance, so which
/// of several tied at the cut are listed is not compared).
fn same_top(what: &str, got: &[(String, u64)], want: &[(String, u64)], complete: bool) {
    let counts = |l: &[(String, u64)]| l.iter().map(|e| e.1).collect::<Vec<_>>();
    assert_eq!(
        counts(got),
        counts(want),
        "{what}: counts\n got  {got:?}\n want {want:?}"
    );
    let last = want.last().map_or(0, |e| e.1);
    let named = |l: &[(String, u64)]| {
        let mut names: Vec<_> = l.iter().filter(|e| complete || e.1 > last).cloned().collect();
        names.sort();
        names
    };
    assert_eq!(
        named(got),
        named(want),
        "{what}: entries\n got  {got:?}\n want {want:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardinality_and_limits_answer_like_prometheus_3() {
    let loaded = Loaded::start_with(promscale_e2e::prometheus::Version::V3).await;
    let client = &loaded.client;
    let ours = loaded.connector.url("");
    let theirs = loaded.reference.url("");

    // status/tsdb at several limits; at 10,000 every entry is listed and compared whole.
    for limit in [None, Some("3"), Some("10000")] {
        let params: Vec<(&str, String)> = limit.map(|l| ("limit", l.to_string())).into_iter().collect();
        let (got_status, got) = get(client, &format!("{ours}/api/v1/status/tsdb"), &params).await;
        let (want_status, want) = get(client, &format!("{theirs}/api/v1/status/tsdb"), &params).await;
        assert_eq!((got_status, want_status), (200, 200), "{got}\n{want}");
        let (got, want) = (&got["data"], &want["data"]);
        for field in ["numSeries", "numLabelPairs", "maxTime"] {
            assert_eq!(
                got["headStats"][field], want["headStats"][field],
                "headStats.{field}, limit {limit:?}"
            );
        }
        // Half of the data set is compacted: the head starts later than Prometheus' does.
        let (min, max) = (
            got["headStats"]["minTime"].as_i64().unwrap(),
            got["headStats"]["maxTime"].as_i64().unwrap(),
        );
        assert!(
            want["headStats"]["minTime"].as_i64().unwrap() < min && min < max,
            "head times {min}..{max}, Prometheus' {}",
            want["headStats"]
        );
        assert!(
            got["headStats"]["chunkCount"].as_i64().unwrap() > 0,
            "head rows: {}",
            got["headStats"]
        );
        for list in [
            "seriesCountByMetricName",
            "labelValueCountByLabelName",
            "memoryInBytesByLabelName",
            "seriesCountByLabelValuePair",
        ] {
            let (g, w) = (entries(&got[list]), entries(&want[list]));
            assert_eq!(w.len(), w.len().min(limit.map_or(10, |l| l.parse().unwrap())));
            same_top(&format!("{list}, limit {limit:?}"), &g, &w, limit == Some("10000"));
        }
    }
    // Limits status/tsdb refuses, with Prometheus' words.
    for bad in ["0", "-1", "ten", "10001"] {
        let params = [("limit", bad.to_string())];
        let (got_status, got) = get(client, &format!("{ours}/api/v1/status/tsdb"), &params).await;
        let (want_status, want) = get(client, &format!("{theirs}/api/v1/status/tsdb"), &params).await;
        assert_eq!(
            (got_status, &got["errorType"], &got["error"]),
            (want_status, &want["errorType"], &want["error"]),
            "limit {bad}"
        );
        assert_eq!(got_status, 400);
    }

    // status/runtimeinfo and status/flags in Prometheus' shape; no secret among the flags.
    let (status, got) = get(client, &format!("{ours}/api/v1/status/runtimeinfo"), &[]).await;
    let (_, want) = get(client, &format!("{theirs}/api/v1/status/runtimeinfo"), &[]).await;
    assert_eq!(status, 200, "{got}");
    let shape = |v: &Value| -> Vec<(String, &'static str)> {
        let mut fields: Vec<(String, &'static str)> = v["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    Value::Bool(_) => "bool",
                    Value::Number(_) => "number",
                    _ => "string",
                };
                (k.clone(), kind)
            })
            .collect();
        fields.sort();
        fields
    };
    assert_eq!(shape(&got), shape(&want));
    assert_eq!(got["data"]["storageRetention"], "90d");
    let (status, flags) = get(client, &format!("{ours}/api/v1/status/flags"), &[]).await;
    assert_eq!(status, 200, "{flags}");
    let flags = flags["data"].as_object().unwrap();
    assert!(flags.values().all(Value::is_string));
    assert_eq!(flags["maintenance.interval"], "0s");
    let uri = loaded.pg.uri();
    let password = uri
        .split("://")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .and_then(|u| u.split(':').nth(1))
        .unwrap();
    assert!(password.len() >= 8, "the test database has a password: {uri}");
    assert!(
        flags.values().all(|v| !v.as_str().unwrap().contains(password)),
        "{flags:?}"
    );

    // `limit` on listings and queries: the same data and warnings, or the same refusal.
    let at = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let t = loaded.first_ms + 300 * promscale_e2e::comparison::STEP_MS;
    let range = vec![
        ("query", "http_requests_total".to_string()),
        ("start", at(t - 3_600_000)),
        ("end", at(t)),
        ("step", "60".to_string()),
    ];
    let instant = |q: &str| vec![("query", q.to_string()), ("time", at(t))];
    let everything = ("match[]", "{__name__=~\".+\"}".to_string());
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/api/v1/series", vec![everything.clone()]),
        (
            "/api/v1/series",
            vec![everything.clone(), ("start", at(t - 600_000)), ("end", at(t))],
        ),
        ("/api/v1/labels", vec![]),
        (
            "/api/v1/labels",
            vec![("match[]", "node_temperature_celsius".to_string())],
        ),
        ("/api/v1/label/instance/values", vec![]),
        (
            "/api/v1/label/__name__/values",
            vec![("match[]", "{instance=\"a\"}".to_string())],
        ),
        ("/api/v1/query", instant("sort_desc(http_requests_total)")),
        ("/api/v1/query", instant("sort(node_temperature_celsius)")),
        ("/api/v1/query", instant("sum(http_requests_total)")),
        ("/api/v1/query_range", range),
    ];
    let (mut compared, mut truncated) = (0, 0);
    for (path, params) in &cases {
        for limit in ["", "0", "1", "2", "3", "1000", "-1", "2.5", "x"] {
            let mut params = params.clone();
            params.push(("limit", limit.to_string()));
            let (got_status, got) = get(client, &format!("{ours}{path}"), &params).await;
            let (want_status, want) = get(client, &format!("{theirs}{path}"), &params).await;
            let what = format!("{path} {params:?}");
            assert_eq!(got_status, want_status, "{what}\n got  {got}\n want {want}");
            if want_status != 200 {
                assert_eq!(
                    (&got["errorType"], &got["error"]),
                    (&want["errorType"], &want["error"]),
                    "{what}"
                );
                continue;
            }
            // Queries: the same series in the same order (values are compared by the PromQL
            // comparison tests). Listings: the first `limit` of Prometheus' whole answer in
            // sorted order (from its head alone, Prometheus keeps the first in the order the
            // series were created instead).
            let shape = |v: &Value| match v["data"].get("result") {
                Some(result) => Value::Array(result.as_array().unwrap().iter().map(|s| s["metric"].clone()).collect()),
                None => v["data"].clone(),
            };
            if path.contains("query") {
                assert_eq!(shape(&got), shape(&want), "{what}");
            } else {
                let mut whole_params = params.clone();
                whole_params.pop();
                let (_, whole) = get(client, &format!("{theirs}{path}"), &whole_params).await;
                let mut whole: Vec<Value> = whole["data"].as_array().unwrap().clone();
                let key = |v: &Value| -> Vec<(String, String)> {
                    match v.as_object() {
                        Some(labels) => {
                            let mut pairs: Vec<(String, String)> = labels
                                .iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                                .collect();
                            pairs.sort();
                            pairs
                        }
                        None => vec![(v.as_str().unwrap().to_string(), String::new())],
                    }
                };
                whole.sort_by_key(key);
                let n: usize = limit.parse().unwrap_or(0);
                if n > 0 {
                    whole.truncate(n);
                }
                let got_keys: Vec<_> = got["data"].as_array().unwrap().iter().map(key).collect();
                let want_keys: Vec<_> = whole.iter().map(key).collect();
                assert_eq!(got_keys, want_keys, "{what}");
            }
            assert_eq!(got.get("warnings"), want.get("warnings"), "{what}");
            compared += 1;
            truncated += usize::from(got.get("warnings").is_some());
        }
    }
    assert!(
        compared >= 50 && truncated >= 20,
        "{compared} answers compared, {truncated} truncated"
    );
}

/// Migration 16 adds the cardinality views to a database of version 15 in place: series that
/// version 15 created are counted, and so are those written after the upgrade, in SQL and by
/// `/api/v1/status/tsdb`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_15_catalog_is_counted_after_the_cardinality_upgrade() {
    use promscale_connector::storage::migrations::migrate_to;
    use promscale_e2e::remote_write::{encode, post, series};
    let pg = promscale_e2e::postgres::TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 15).await.unwrap();
    for instance in ["a", "b", "c"] {
        promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "up"), ("instance", instance)]).await;
    }
    promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "node_load1"), ("instance", "a")]).await;
    let connector = promscale_e2e::upgrade::upgraded_by_a_connector(&pg, &db).await;
    let client = reqwest::Client::new();
    let t = promscale_e2e::recent_ms();
    let body = encode(vec![
        series(&[("__name__", "up"), ("instance", "d")], &[(t, 1.0)]),
        series(&[("__name__", "up"), ("instance", "a")], &[(t, 1.0)]),
    ]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);

    let metrics: Vec<(String, i64)> =
        sqlx::query_as("SELECT metric_name, series FROM prom_info.metric_cardinality ORDER BY metric_name")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(metrics, vec![("node_load1".to_string(), 1), ("up".to_string(), 4)]);
    let pairs: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT key, value, series FROM prom_info.label_cardinality ORDER BY key, value")
            .fetch_all(&db)
            .await
            .unwrap();
    let pair = |k: &str, v: &str, n: i64| (k.to_string(), v.to_string(), n);
    assert_eq!(
        pairs,
        vec![
            pair("__name__", "node_load1", 1),
            pair("__name__", "up", 4),
            pair("instance", "a", 2),
            pair("instance", "b", 1),
            pair("instance", "c", 1),
            pair("instance", "d", 1),
        ]
    );

    let (status, body) = promscale_e2e::comparison::get(
        &client,
        &connector.url("/api/v1/status/tsdb"),
        &[("limit", "2".to_string())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["headStats"]["numSeries"], 5);
    assert_eq!(data["headStats"]["numLabelPairs"], 6);
    // Only the samples written after the upgrade are in the head.
    assert_eq!(
        (
            data["headStats"]["minTime"].as_i64(),
            data["headStats"]["maxTime"].as_i64()
        ),
        (Some(t), Some(t))
    );
    assert_eq!(
        entries(&data["seriesCountByMetricName"]),
        vec![("up".to_string(), 4), ("node_load1".to_string(), 1)]
    );
    assert_eq!(
        entries(&data["labelValueCountByLabelName"]),
        vec![("instance".to_string(), 4), ("__name__".to_string(), 2)]
    );
    assert_eq!(
        entries(&data["seriesCountByLabelValuePair"]),
        vec![("__name__=up".to_string(), 4), ("instance=a".to_string(), 2)]
    );
    // "__name__" (8 + 1) and "up" (2 + 1) in 4 series, "node_load1" (10 + 1) in one; each
    // "instance" (8 + 1) with a one-letter value (1 + 1) in 5.
    assert_eq!(
        entries(&data["memoryInBytesByLabelName"]),
        vec![("__name__".to_string(), 12 * 4 + 20), ("instance".to_string(), 11 * 5)]
    );
}
