//! The HTTP query API's contract apart from PromQL results: parameters, error types and
//! codes, limits, and the series, labels, metadata and buildinfo endpoints.

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series};
use serde_json::{json, Value};

async fn get(client: &reqwest::Client, url: String, params: &[(&str, &str)]) -> (u16, Value) {
    let response = client.get(url).query(params).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn write_sample_data(client: &reqwest::Client, connector: &Connector) -> i64 {
    let t = recent_ms();
    let samples: Vec<(i64, f64)> = (0..20).map(|i| (t - (19 - i) * 15_000, i as f64)).collect();
    let body = encode(vec![
        series(&[("__name__", "up"), ("instance", "a:9100"), ("job", "node")], &samples),
        series(&[("__name__", "up"), ("instance", "b:9100"), ("job", "node")], &samples),
        series(&[("__name__", "process_cpu_seconds_total"), ("job", "app")], &samples),
    ]);
    assert_eq!(post(client, &connector.url("/write"), body).await.unwrap().0, 204);
    t
}

/// A request, and the HTTP status, error type and part of the message it must get.
type ErrorCase<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_prometheus_types_and_codes() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--metrics.promql.max-samples", "30"]).await;
    let client = reqwest::Client::new();
    let t = write_sample_data(&client, &connector).await;
    let now = format!("{}", t as f64 / 1000.0);
    let query = connector.url("/api/v1/query");
    let range = connector.url("/api/v1/query_range");
    let cases: Vec<ErrorCase> = vec![
        (query.clone(), vec![("query", "sum(")], 400, "bad_data", ""),
        // Experimental functions need --metrics.promql.enable-feature, as Prometheus' need
        // --enable-feature; duration expressions do not.
        (
            query.clone(),
            vec![("query", "info(up)")],
            400,
            "bad_data",
            "function \"info\" is not enabled",
        ),
        (
            query.clone(),
            vec![("query", "rate(up[1m]) + on() group_left fill(0) vector(1)")],
            400,
            "bad_data",
            "binop fill modifiers are experimental and not enabled",
        ),
        (
            query.clone(),
            vec![("query", "rate(up[0s-1m])")],
            400,
            "bad_data",
            "duration must be greater than 0",
        ),
        (
            query.clone(),
            vec![("query", "no_such_function(up)")],
            400,
            "bad_data",
            "no_such_function",
        ),
        (
            query.clone(),
            vec![("query", "up"), ("time", "yesterday")],
            400,
            "bad_data",
            "invalid parameter \"time\"",
        ),
        (query.clone(), vec![], 400, "bad_data", "query must not be empty"),
        (
            range.clone(),
            vec![("query", "up"), ("start", "100"), ("end", "50"), ("step", "10")],
            400,
            "bad_data",
            "end timestamp must not be before start time",
        ),
        (
            range.clone(),
            vec![("query", "up"), ("start", "0"), ("end", "100"), ("step", "0")],
            400,
            "bad_data",
            "zero or negative query resolution step",
        ),
        (
            range.clone(),
            vec![("query", "up"), ("start", "0"), ("end", "100000"), ("step", "1")],
            400,
            "bad_data",
            "11,000 points",
        ),
        (
            range.clone(),
            vec![("query", "up[5m]"), ("start", "0"), ("end", "100"), ("step", "10")],
            400,
            "bad_data",
            "range vector",
        ),
        // 2 series x 20 samples in 5 minutes: more than the 30 allowed.
        (
            query.clone(),
            vec![("query", "up[10m]"), ("time", &now)],
            422,
            "execution",
            "too many samples",
        ),
        // Millions of subquery steps cannot finish in 200ms (their results are empty, so the
        // sample limit, which applies while the subquery is built, does not stop them first).
        (
            query.clone(),
            vec![
                ("query", "count_over_time((vector(1) > 2)[1d:1ms])"),
                ("time", &now),
                ("timeout", "200ms"),
            ],
            503,
            "timeout",
            "query timed out",
        ),
    ];
    for (url, params, status, kind, message) in cases {
        let (got_status, body) = get(&client, url.clone(), &params).await;
        assert_eq!(got_status, status, "{url} {params:?}: {body}");
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["errorType"], kind, "{params:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains(message), "{params:?}: {body}");
    }
    // Form-encoded POST works like GET.
    let response = client
        .post(&query)
        .form(&[("query", "sum(up)"), ("time", now.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["result"][0]["value"][1], "38", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_labels_and_values_follow_match_and_time() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let client = reqwest::Client::new();
    let t = write_sample_data(&client, &connector).await;
    let (start, end) = (
        format!("{}", (t - 600_000) as f64 / 1000.0),
        format!("{}", t as f64 / 1000.0),
    );

    let (status, body) = get(
        &client,
        connector.url("/api/v1/series"),
        &[("match[]", "up{instance=~\"a.*\"}"), ("start", &start), ("end", &end)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!([{"__name__": "up", "instance": "a:9100", "job": "node"}])
    );

    // Outside the time range: nothing.
    let (_, body) = get(
        &client,
        connector.url("/api/v1/series"),
        &[("match[]", "up"), ("start", "0"), ("end", "100")],
    )
    .await;
    assert_eq!(body["data"], json!([]));

    let (status, body) = get(&client, connector.url("/api/v1/series"), &[]).await;
    assert_eq!((status, body["errorType"].as_str()), (400, Some("bad_data")), "{body}");

    let (_, body) = get(&client, connector.url("/api/v1/labels"), &[]).await;
    assert_eq!(body["data"], json!(["__name__", "instance", "job"]));
    let (_, body) = get(
        &client,
        connector.url("/api/v1/labels"),
        &[("match[]", "process_cpu_seconds_total")],
    )
    .await;
    assert_eq!(body["data"], json!(["__name__", "job"]));

    let (_, body) = get(&client, connector.url("/api/v1/label/job/values"), &[]).await;
    assert_eq!(body["data"], json!(["app", "node"]));
    let (_, body) = get(&client, connector.url("/api/v1/label/__name__/values"), &[]).await;
    assert_eq!(body["data"], json!(["process_cpu_seconds_total", "up"]));
    let (_, body) = get(
        &client,
        connector.url("/api/v1/label/instance/values"),
        &[("match[]", "up{instance=\"b:9100\"}")],
    )
    .await;
    assert_eq!(body["data"], json!(["b:9100"]));

    let (status, body) = get(&client, connector.url("/api/v1/status/buildinfo"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = get(&client, connector.url("/api/v1/metadata"), &[]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")), "{body}");
}
