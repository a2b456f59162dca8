//! Hostile queries against a real connector: none crashes it, holds memory beyond the sample
//! limit, overflows time arithmetic, or shows a client the database's own error text.
//! Every test ends by checking that the connector still answers `/healthz`.

use promscale_connector::embedded_db::StopMode;
use promscale_connector::prompb::{LabelMatcher, MatchType, Query, ReadRequest, ResponseType};
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series};
use prost::Message;
use serde_json::Value;

const GIB: u64 = 1 << 30;
const DATABASE_UNAVAILABLE: &str = "the database is unavailable; see the connector's log";

/// A form-encoded POST (queries longer than a URL may be), as Grafana sends them.
async fn post_form(client: &reqwest::Client, url: String, params: &[(&str, &str)]) -> (u16, Value) {
    let response = client.post(url).form(params).send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn get(client: &reqwest::Client, url: String, params: &[(&str, &str)]) -> (u16, Value) {
    let response = client.get(url).query(params).send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn assert_alive(client: &reqwest::Client, connector: &Connector) {
    let health = client
        .get(connector.url("/healthz"))
        .send()
        .await
        .expect("the connector answers");
    assert_eq!(health.status(), 200);
}

fn now_param() -> String {
    format!("{}", recent_ms() as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_queries_are_refused_and_the_rest_evaluated() {
    let pg = TestPostgres::start();
    // Queries of 200 kB pass the size limit here, so that the depth limit is what refuses them.
    let connector = Connector::start(&pg.uri(), &["--web.max-query-bytes=1000000"]).await;
    let client = reqwest::Client::new();
    let query = connector.url("/api/v1/query");
    let time = now_param();

    let ones = vec!["1"; 3000].join("+");
    let vectors: Vec<String> = (0..5000).map(|i| format!("vector({i})")).collect();
    let vectors = vectors.join(" or ");
    let parens = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let minus = format!("{}1", "-".repeat(100_000));
    for deep in [&ones, &vectors, &parens, &minus] {
        let (status, body) = post_form(&client, query.clone(), &[("query", deep), ("time", &time)]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "bad_data");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("nested too deeply"), "{error}");
        assert!(error.contains("1000 allowed"), "{error}");
    }
    // Selectors of the series API are parsed by the same rules.
    let (status, body) = post_form(&client, connector.url("/api/v1/series"), &[("match[]", &vectors)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nested too deeply"), "{body}");
    assert_alive(&client, &connector).await;

    // Up to the limit, queries are evaluated, however deep: chains, parentheses, calls.
    let cases = [
        (vec!["1"; 500].join("+"), "500"),
        (format!("{}vector(2){}", "(".repeat(900), ")".repeat(900)), "2"),
        (format!("{}vector(3){}", "abs(".repeat(900), ")".repeat(900)), "3"),
        (format!("{}vector(4){}", "sum(".repeat(450), ")".repeat(450)), "4"),
        (format!("{}4", "-(".repeat(450)) + &")".repeat(450), "4"),
    ];
    for (deep, want) in cases {
        let (status, body) = post_form(&client, query.clone(), &[("query", &deep), ("time", &time)]).await;
        assert_eq!(status, 200, "{}...: {body}", &deep[..40]);
        let result = &body["data"]["result"];
        let value = if body["data"]["resultType"] == "scalar" {
            &result[1]
        } else {
            &result[0]["value"][1]
        };
        assert_eq!(value, want, "{}...: {body}", &deep[..40]);
    }
    assert_alive(&client, &connector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_limit_applies_while_a_subquery_is_built() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--metrics.promql.max-samples", "2000000"]).await;
    let client = reqwest::Client::new();
    let time = now_param();
    // 31.5 billion steps: without a limit while building, the subquery would fill memory.
    let (status, body) = get(
        &client,
        connector.url("/api/v1/query"),
        &[("query", "count_over_time(vector(1)[365d:1ms])"), ("time", &time)],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution");
    assert_eq!(
        body["error"],
        "query processing would load too many samples into memory in query execution"
    );
    // The same inside a range query, where the range's own samples count too.
    let end = recent_ms() / 1000;
    let (start, end) = ((end - 600).to_string(), end.to_string());
    let (status, body) = get(
        &client,
        connector.url("/api/v1/query_range"),
        &[
            ("query", "max_over_time(count_over_time(vector(1)[1d:10ms])[1h:1s])"),
            ("start", &start),
            ("end", &end),
            ("step", "60"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution");
    let peak = connector.memory_bytes("VmHWM");
    assert!(peak < GIB, "the connector's resident memory peaked at {peak} bytes");
    assert_alive(&client, &connector).await;
    assert!(connector.memory_bytes("VmRSS") < GIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_times_and_steps_do_not_overflow() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let client = reqwest::Client::new();
    let range = connector.url("/api/v1/query_range");

    let (status, body) = get(
        &client,
        range.clone(),
        &[
            ("query", "vector(1)"),
            ("start", "-9e15"),
            ("end", "9e15"),
            ("step", "1"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "bad_data");
    assert_eq!(
        body["error"],
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    let peak = connector.memory_bytes("VmHWM");
    assert!(peak < GIB, "refused without allocating the points: peak {peak} bytes");

    for (name, value) in [("start", "-1e300"), ("end", "1e16")] {
        let mut params = vec![("query", "vector(1)"), ("start", "0"), ("end", "10"), ("step", "1")];
        params.iter_mut().find(|(k, _)| *k == name).unwrap().1 = value;
        let (status, body) = get(&client, range.clone(), &params).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("invalid parameter \"{name}\"")),
            "{body}"
        );
    }

    // A few steps at the very end of the millisecond range: the step after the last one
    // would overflow.
    let (status, body) = get(
        &client,
        range.clone(),
        &[
            ("query", "vector(1)"),
            ("start", "9223372036854000"),
            ("end", "9223372036854774"),
            ("step", "100"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["result"][0]["values"].as_array().unwrap().len(),
        8,
        "{body}"
    );

    // Offsets, ranges and @ beyond any time, at both ends.
    let extreme = [
        "up offset -4294967295y",
        "up offset 4294967295y",
        "rate(up[4294967295y])",
        "count_over_time(up[4294967295y] @ 9223372036854775)",
        "max_over_time(vector(1)[4294967295y:4294967295y] offset -4294967295y)",
        "predict_linear(up[4294967295y] offset -4294967295y, 4294967295)",
        "up @ 1e17",
        "timestamp(up @ -1e17)",
    ];
    for (start, end) in [
        ("-9223372036854774", "-9223372036854000"),
        ("9223372036854000", "9223372036854774"),
    ] {
        for q in extreme {
            let (status, body) = get(
                &client,
                range.clone(),
                &[("query", q), ("start", start), ("end", end), ("step", "100")],
            )
            .await;
            assert!(status == 200 || status == 400 || status == 422, "{q}: {status} {body}");
            let (status, body) = get(&client, connector.url("/api/v1/query"), &[("query", q), ("time", end)]).await;
            assert!(status == 200 || status == 400 || status == 422, "{q}: {status} {body}");
        }
    }
    let peak = connector.memory_bytes("VmHWM");
    assert!(peak < GIB, "the connector's resident memory peaked at {peak} bytes");
    assert_alive(&client, &connector).await;
}

/// A remote-read request for `up`: the status and the response's text.
async fn remote_read(client: &reqwest::Client, connector: &Connector) -> (u16, String) {
    let request = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: i64::MAX / 2,
            matchers: vec![LabelMatcher {
                r#type: MatchType::Eq as i32,
                name: "__name__".into(),
                value: "up".into(),
            }],
        }],
        accepted_response_types: vec![ResponseType::Samples as i32],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let response = client
        .post(connector.url("/read"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Every read endpoint answers 503 with the generic message, nothing of `secret`.
async fn assert_database_errors_hidden(client: &reqwest::Client, connector: &Connector, secrets: &[&str]) {
    let time = now_param();
    let endpoints = [
        (
            connector.url("/api/v1/query"),
            vec![("query", "up"), ("time", time.as_str())],
        ),
        (connector.url("/api/v1/series"), vec![("match[]", "up")]),
        (connector.url("/api/v1/labels"), vec![]),
        (connector.url("/api/v1/label/job/values"), vec![]),
        (connector.url("/api/v1/metadata"), vec![]),
    ];
    for (url, params) in endpoints {
        let (status, body) = get(client, url.clone(), &params).await;
        assert_eq!(status, 503, "{url}: {body}");
        assert_eq!(body["errorType"], "unavailable", "{url}: {body}");
        assert_eq!(body["error"], DATABASE_UNAVAILABLE, "{url}: {body}");
    }
    let (status, text) = remote_read(client, connector).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(text.trim(), DATABASE_UNAVAILABLE);
    let write = encode(vec![series(&[("__name__", "up"), ("job", "w")], &[(recent_ms(), 1.0)])]);
    let (status, text) = post(client, &connector.url("/write"), write).await.unwrap();
    assert_eq!(status, 503, "{text}");
    // /readyz checks the database at most once a second: it turns 503 within that.
    let ready = promscale_e2e::wait_for(
        "/readyz to report the failure",
        std::time::Duration::from_secs(10),
        || {
            let request = client.get(connector.url("/readyz")).send();
            async move {
                let response = request.await.ok()?;
                (response.status() == 503).then_some(())?;
                response.text().await.ok()
            }
        },
    )
    .await;
    for secret in secrets {
        assert!(!text.contains(secret), "/write told the client {text:?}");
        assert!(!ready.contains(secret), "/readyz told the client {ready:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_error_text_goes_to_the_log_not_to_clients() {
    let mut pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--db.connection-timeout", "2s"]).await;
    let client = reqwest::Client::new();
    let samples = [(recent_ms(), 1.0)];
    let body = encode(vec![series(&[("__name__", "up"), ("job", "a")], &samples)]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);

    // The connector's password stops working: its new connections are refused with
    // PostgreSQL's 'password authentication failed for user "..."'.
    // One session for all three statements: once the password changes, the pool could not
    // open another.
    let db = pg.pool().await;
    let mut session = db.acquire().await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *session)
        .await
        .unwrap();
    sqlx::query(&format!("ALTER ROLE \"{user}\" PASSWORD 'no-longer-the-connectors'"))
        .execute(&mut *session)
        .await
        .unwrap();
    // Every other client session, twice: one that was authenticating when the password
    // changed has no user name yet in pg_stat_activity, and gets in with the old password.
    for _ in 0..2 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .execute(&mut *session)
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    drop(session);
    db.close().await;
    assert_database_errors_hidden(&client, &connector, &["password", "authentication", &user]).await;
    let log = connector.log();
    assert!(
        log.contains("password authentication failed"),
        "the log keeps the details: {log}"
    );

    // The database is gone altogether.
    pg.stop(StopMode::Immediate);
    assert_database_errors_hidden(&client, &connector, &["password", "refused", "os error", &user]).await;
    assert_alive(&client, &connector).await;
}
