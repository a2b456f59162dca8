//! Multi-tenancy (`--metrics.multi-tenancy`): two tenants write the same metric names into
//! one connector. A tenant reading with its own credential answers exactly as a Prometheus 3
//! holding only its data, through the query API and remote read; no endpoint lets it read,
//! list, count or infer the other tenant's series, nor write into the other tenant; an
//! operator reads several tenants at once, each series with its `__tenant__` label. A real
//! Prometheus writes as a tenant through a tenant credential and through the tenant header.

use std::collections::BTreeSet;
use std::time::Duration;

use promscale_connector::prompb::{Exemplar, Label, LabelMatcher, MatchType, Query, ReadRequest, ReadResponse};
use promscale_e2e::comparison::{compare, get, Loaded, POINTS, STEP_MS};
use promscale_e2e::prometheus::{Prometheus, Version};
use promscale_e2e::remote_write::{encode, encode_v2, post, post_v2, series};
use prost::Message;
use serde_json::Value;

const ALPHA_TOKEN: &str = "alpha-secret-token";
const BETA_TOKEN: &str = "beta-secret-token";
const OPERATOR_TOKEN: &str = "operator-secret-token";

fn client_with(headers: &[(&str, &str)]) -> reqwest::Client {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    reqwest::Client::builder().default_headers(map).build().unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The queries compared with the reference, over every metric of the data set.
const QUERIES: &[&str] = &[
    "http_requests_total",
    "sum by (instance) (rate(http_requests_total[5m]))",
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "topk(2, demo_memory_usage_bytes)",
    "count({__name__=~\".+\"})",
    "flaky_up",
    "special_values",
    "max_over_time(node_temperature_celsius[20m:1m])",
    // As for a Prometheus without the label: nothing has it, everything lacks it.
    "count({__name__=~\".+\", __tenant__=~\".+\"})",
    "count({__name__=~\".+\", __tenant__=\"\"})",
    "absent(up{__tenant__=\"alpha\"})",
];

/// A remote-write 1.0 request of metadata alone, as Prometheus sends it.
fn metadata_request(family: &str, help: &str) -> Vec<u8> {
    promscale_connector::prompb::WriteRequest {
        timeseries: vec![],
        metadata: vec![promscale_connector::prompb::MetricMetadata {
            r#type: promscale_connector::prompb::MetricType::Counter as i32,
            metric_family_name: family.into(),
            help: help.into(),
            unit: String::new(),
        }],
    }
    .to_snappy()
}

/// Label sets of every series of a remote-read SAMPLES answer for `{__name__=~".+"}` over the
/// data set, with their sample counts; the status when it is not 200.
async fn remote_read_all(client: &reqwest::Client, url: &str, first_ms: i64) -> Result<Vec<(String, usize)>, u16> {
    let request = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: first_ms,
            end_timestamp_ms: first_ms + POINTS * STEP_MS,
            matchers: vec![LabelMatcher {
                r#type: MatchType::Re as i32,
                name: "__name__".into(),
                value: ".+".into(),
            }],
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let response = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return Err(status);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&response.bytes().await.unwrap())
        .unwrap();
    let mut out: Vec<(String, usize)> = ReadResponse::decode(raw.as_slice()).unwrap().results[0]
        .timeseries
        .iter()
        .map(|s| (promscale_e2e::remote_write::label_key(&s.labels), s.samples.len()))
        .collect();
    out.sort();
    Ok(out)
}

/// The names of a JSON array of strings, as a set.
fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The label sets of a `/api/v1/series` answer, as text.
fn series_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_series_through_every_endpoint() {
    let secrets = promscale_e2e::private_dir("tenancy-secrets");
    let tenants_file = secrets.path().join("tenants");
    std::fs::write(&tenants_file, format!("alpha:{ALPHA_TOKEN}\nbeta:{BETA_TOKEN}\n")).unwrap();
    let operator_file = secrets.path().join("operator");
    std::fs::write(&operator_file, OPERATOR_TOKEN).unwrap();
    let (tenants_path, operator_path) = (
        tenants_file.to_str().unwrap().to_string(),
        operator_file.to_str().unwrap().to_string(),
    );
    let alpha = client_with(&[("Authorization", &bearer(ALPHA_TOKEN))]);
    // Alpha's data: the comparison data set, in the connector and, alone, in the reference.
    let loaded = Loaded::start_as(
        Version::V3,
        &[
            "--metrics.multi-tenancy",
            "--metrics.multi-tenancy.allow-cross-tenant-queries",
            "--auth.tenant-tokens-file",
            &tenants_path,
            "--auth.bearer-token-file",
            &operator_path,
            "--web.enable-admin-api",
        ],
        alpha.clone(),
    )
    .await;
    let ours = loaded.connector.url("");
    let theirs = loaded.reference.url("");
    let first_ms = loaded.first_ms;
    let beta = client_with(&[("Authorization", &bearer(BETA_TOKEN))]);
    let operator =
        |tenants: &str| client_with(&[("Authorization", &bearer(OPERATOR_TOKEN)), ("X-Scope-OrgID", tenants)]);

    // Beta writes series of alpha's metrics with alpha's very labels (other values, a
    // sample between each two of alpha's), a metric of its own with an exemplar and
    // metadata, and one series labelled as alpha's (the label is replaced, not obeyed).
    let mut beta_series = Vec::new();
    let times: Vec<i64> = (0..POINTS).map(|i| first_ms + i * STEP_MS + 7_000).collect();
    for instance in ["a", "b", "c"] {
        for method in ["get", "post"] {
            let samples: Vec<(i64, f64)> = times.iter().map(|&t| (t, 1e9 + t as f64)).collect();
            beta_series.push(series(
                &[
                    ("__name__", "http_requests_total"),
                    ("instance", instance),
                    ("job", "api"),
                    ("method", method),
                ],
                &samples,
            ));
        }
    }
    let mut secret = series(
        &[("__name__", "beta_secret_total"), ("team", "beta-payments")],
        &times.iter().map(|&t| (t, 1.0)).collect::<Vec<_>>(),
    );
    secret.exemplars.push(Exemplar {
        labels: vec![Label {
            name: "trace_id".into(),
            value: "beta-trace".into(),
        }],
        value: 1.0,
        timestamp: times[10],
    });
    beta_series.push(secret);
    beta_series.push(series(
        &[("__name__", "beta_mislabelled"), ("__tenant__", "alpha")],
        &[(times[0], 5.0)],
    ));
    let (status, _, text) = post_v2(
        &beta,
        &format!("{ours}/write"),
        encode_v2(beta_series, Some((1, "Beta's own help text.", ""))),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    // Alpha describes the metric both write, in its own words.
    let (status, text) = post(
        &alpha,
        &format!("{ours}/write"),
        metadata_request("http_requests_total", "Alpha's help text."),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");

    // Alpha answers exactly as the Prometheus holding alpha's data alone: beta's series
    // carry the same labels, so any of them seen would change these answers.
    loaded.assert_same_answers(&ours, QUERIES).await;
    for (path, params) in [
        ("/api/v1/labels", vec![]),
        ("/api/v1/label/__name__/values", vec![]),
        ("/api/v1/label/instance/values", vec![]),
        ("/api/v1/labels", vec![("match[]", "{__name__=~\".+\"}".to_string())]),
    ] {
        let (got_status, got) = get(&alpha, &format!("{ours}{path}"), &params).await;
        let (_, want) = get(&alpha, &format!("{theirs}{path}"), &params).await;
        assert_eq!(got_status, 200, "{path}: {got}");
        assert_eq!(strings(&got["data"]), strings(&want["data"]), "{path} {params:?}");
    }
    // Label values with match[], and series with and without a time range (the catalog's and
    // the data's ways of finding them).
    let matching = ("match[]", "{__name__=~\"http.*|node.*\"}".to_string());
    let (_, got) = get(
        &alpha,
        &format!("{ours}/api/v1/label/instance/values"),
        std::slice::from_ref(&matching),
    )
    .await;
    let (_, want) = get(&alpha, &format!("{theirs}/api/v1/label/instance/values"), &[matching]).await;
    assert_eq!(strings(&got["data"]), strings(&want["data"]));
    let everything = ("match[]", "{__name__=~\".+\"}".to_string());
    let range = [
        everything.clone(),
        ("start", format!("{}", first_ms / 1000)),
        ("end", format!("{}", (first_ms + POINTS * STEP_MS) / 1000)),
    ];
    for params in [&range[..1], &range[..]] {
        let (_, got) = get(&alpha, &format!("{ours}/api/v1/series"), params).await;
        let (_, want) = get(&alpha, &format!("{theirs}/api/v1/series"), params).await;
        assert_eq!(series_set(&got["data"]), series_set(&want["data"]), "{params:?}");
    }
    let failures = compare(
        &alpha,
        &theirs,
        &ours,
        "/api/v1/query",
        &[
            ("query", "count by (__name__) ({__name__=~\".+\"})".to_string()),
            ("time", format!("{}", (first_ms + POINTS * STEP_MS) / 1000)),
        ],
        false,
    )
    .await;
    assert!(failures.is_empty(), "{failures:?}");

    // Nothing of beta's through any endpoint: not its names, values, metadata, exemplars,
    // counts, nor the tenant label itself.
    for (path, params) in [
        ("/api/v1/label/team/values", vec![]),
        ("/api/v1/label/__tenant__/values", vec![]),
        ("/api/v1/series", vec![("match[]", "beta_secret_total".to_string())]),
        ("/api/v1/series", vec![("match[]", "{__tenant__=\"beta\"}".to_string())]),
        ("/api/v1/series", vec![("match[]", "beta_mislabelled".to_string())]),
        (
            "/api/v1/query_exemplars",
            vec![("query", "{__name__=~\".+\"}".to_string())],
        ),
    ] {
        let (status, answer) = get(&alpha, &format!("{ours}{path}"), &params).await;
        assert_eq!(
            (status, &answer["data"]),
            (200, &serde_json::json!([])),
            "{path} {params:?}"
        );
    }
    let (_, labels) = get(&alpha, &format!("{ours}/api/v1/labels"), &[]).await;
    assert!(
        !strings(&labels["data"]).contains("__tenant__") && !strings(&labels["data"]).contains("team"),
        "{labels}"
    );
    let (_, metadata) = get(&alpha, &format!("{ours}/api/v1/metadata"), &[]).await;
    assert_eq!(
        metadata["data"],
        serde_json::json!({"http_requests_total": [{"type": "counter", "help": "Alpha's help text.", "unit": ""}]}),
        "{metadata}"
    );
    let (_, tsdb) = get(
        &alpha,
        &format!("{ours}/api/v1/status/tsdb"),
        &[("limit", "10000".into())],
    )
    .await;
    let (_, reference_tsdb) = get(
        &alpha,
        &format!("{theirs}/api/v1/status/tsdb"),
        &[("limit", "10000".into())],
    )
    .await;
    for field in ["numSeries", "numLabelPairs"] {
        assert_eq!(
            tsdb["data"]["headStats"][field], reference_tsdb["data"]["headStats"][field],
            "{field}: {tsdb}"
        );
    }
    let names = |v: &Value, list: &str| -> BTreeSet<(String, u64)> {
        v["data"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_u64().unwrap()))
            .collect()
    };
    for list in [
        "seriesCountByMetricName",
        "labelValueCountByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        assert_eq!(names(&tsdb, list), names(&reference_tsdb, list), "{list}");
    }
    let ours_read = remote_read_all(&alpha, &format!("{ours}/read"), first_ms)
        .await
        .unwrap();
    let theirs_read = remote_read_all(&alpha, &format!("{theirs}/api/v1/read"), first_ms)
        .await
        .unwrap();
    assert_eq!(ours_read, theirs_read, "remote read");
    // The same through the operator credential and the header, at the other path.
    let by_header = remote_read_all(&operator("alpha"), &format!("{ours}/api/v1/read"), first_ms)
        .await
        .unwrap();
    assert_eq!(by_header, theirs_read, "remote read with the tenant header");

    // A tenant credential never reads nor writes another tenant, whatever header it sends.
    let alpha_as_beta = client_with(&[("Authorization", &bearer(ALPHA_TOKEN)), ("X-Scope-OrgID", "beta")]);
    let (status, answer) = get(
        &alpha_as_beta,
        &format!("{ours}/api/v1/query"),
        &[("query", "beta_secret_total".into())],
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        remote_read_all(&alpha_as_beta, &format!("{ours}/read"), first_ms).await,
        Err(403)
    );
    let intruder = encode(vec![series(&[("__name__", "intruder")], &[(times[0], 1.0)])]);
    let (status, _) = post(&alpha_as_beta, &format!("{ours}/write"), intruder.clone())
        .await
        .unwrap();
    assert_eq!(status, 403);
    let alpha_both = client_with(&[("Authorization", &bearer(ALPHA_TOKEN)), ("X-Scope-OrgID", "alpha|beta")]);
    let (status, _) = get(&alpha_both, &format!("{ours}/api/v1/labels"), &[]).await;
    assert_eq!(status, 400);
    // Nor /metrics (every tenant's counts) nor the admin API.
    let status = alpha.get(format!("{ours}/metrics")).send().await.unwrap().status();
    assert_eq!(status, 401);
    let status = alpha
        .post(format!("{ours}/api/v1/admin/tsdb/delete_series"))
        .form(&[("match[]", "http_requests_total")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);

    // An operator credential must name its tenants; it may name several, and then sees
    // their series apart by the tenant label.
    let (status, answer) = get(&operator(""), &format!("{ours}/api/v1/labels"), &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("X-Scope-OrgID"), "{answer}");
    let both = operator("alpha|beta");
    let (_, tenants) = get(&both, &format!("{ours}/api/v1/label/__tenant__/values"), &[]).await;
    assert_eq!(
        strings(&tenants["data"]),
        BTreeSet::from(["alpha".into(), "beta".into()])
    );
    let at = first_ms + 100 * STEP_MS;
    let answer = promscale_e2e::instant_query(&both, &ours, "count by (__tenant__) (http_requests_total)", at).await;
    let mut counts: Vec<(String, String)> = answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["__tenant__"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [("alpha".into(), "6".into()), ("beta".into(), "6".into())]);
    // Beta's mislabelled series is beta's; beta sees its own things.
    let answer = promscale_e2e::instant_query(&both, &ours, "beta_mislabelled", times[0]).await;
    assert_eq!(answer["data"]["result"][0]["metric"]["__tenant__"], "beta", "{answer}");
    let (_, exemplars) = get(
        &beta,
        &format!("{ours}/api/v1/query_exemplars"),
        &[("query", "beta_secret_total".into())],
    )
    .await;
    assert_eq!(
        exemplars["data"][0]["exemplars"][0]["labels"]["trace_id"], "beta-trace",
        "{exemplars}"
    );
    let (_, metadata) = get(&beta, &format!("{ours}/api/v1/metadata"), &[]).await;
    assert_eq!(
        metadata["data"]["beta_secret_total"][0]["help"], "Beta's own help text.",
        "{metadata}"
    );

    // Deleting as beta deletes beta's series only: alpha's answers stay the reference's.
    let response = operator("beta")
        .post(format!("{ours}/api/v1/admin/tsdb/delete_series"))
        .form(&[("match[]", "http_requests_total")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let answer = promscale_e2e::instant_query(&beta, &ours, "count(http_requests_total)", at).await;
    assert_eq!(answer["data"]["result"], serde_json::json!([]), "{answer}");
    loaded.assert_same_answers(&ours, &QUERIES[..2]).await;

    // SQL users and operators see tenants apart.
    let db = loaded.pg.pool().await;
    let tenants: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT tenant, series, metrics FROM prom_info.tenant ORDER BY tenant")
            .fetch_all(&db)
            .await
            .unwrap();
    let reference_series = reference_tsdb["data"]["headStats"]["numSeries"].as_i64().unwrap();
    assert_eq!(
        tenants,
        [("alpha".to_string(), reference_series, 7), ("beta".to_string(), 8, 3)]
    );
    let secret_pairs: i64 = sqlx::query_scalar(
        "SELECT series FROM prom_info.tenant_label_cardinality WHERE tenant = 'beta' AND key = 'team'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(secret_pairs, 1);
    let metrics = operator("alpha")
        .get(format!("{ours}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ingested = |tenant: &str| -> f64 {
        let prefix = format!("promscale_tenant_samples_ingested_total{{tenant=\"{tenant}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    assert!(
        ingested("alpha") > 0.0 && ingested("beta") >= (7 * POINTS) as f64,
        "{metrics}"
    );
}

/// A real Prometheus 3 writes as a tenant both ways: with a tenant credential, and with the
/// operator credential and the tenant header (Prometheus' `remote_write.headers`); each
/// tenant then sees Prometheus' own series, a third sees none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_writes_as_a_tenant() {
    let secrets = promscale_e2e::private_dir("tenancy-prometheus");
    let tenants_file = secrets.path().join("tenants");
    std::fs::write(&tenants_file, format!("alpha:{ALPHA_TOKEN}\nbeta:{BETA_TOKEN}\n")).unwrap();
    let operator_file = secrets.path().join("operator");
    std::fs::write(&operator_file, OPERATOR_TOKEN).unwrap();
    let beta_file = secrets.path().join("beta");
    std::fs::write(&beta_file, BETA_TOKEN).unwrap();
    let pg = promscale_e2e::postgres::TestPostgres::start();
    let connector = promscale_e2e::connector::Connector::start(
        &pg.uri(),
        &[
            "--metrics.multi-tenancy",
            "--auth.tenant-tokens-file",
            tenants_file.to_str().unwrap(),
            "--auth.bearer-token-file",
            operator_file.to_str().unwrap(),
        ],
    )
    .await;
    let port = connector.port();
    let (beta_path, operator_path) = (beta_file.display().to_string(), operator_file.display().to_string());
    // Prometheus 3: Debian's 2.42 does not send `remote_write.headers`.
    let prometheus = Prometheus::start_v3(
        move |own_port| {
            format!(
                "global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ['127.0.0.1:{own_port}']
remote_write:
  - url: http://127.0.0.1:{port}/write
    authorization:
      credentials_file: {beta_path}
    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}}
  - url: http://127.0.0.1:{port}/write
    authorization:
      credentials_file: {operator_path}
    headers:
      X-Scope-OrgID: gamma
    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}}
"
            )
        },
        &[],
    )
    .await;
    let base = connector.url("");
    let up_of = |client: reqwest::Client| {
        let base = base.clone();
        async move {
            let (status, answer) = get(&client, &format!("{base}/api/v1/series"), &[("match[]", "up".into())]).await;
            assert_eq!(status, 200, "{answer}");
            answer["data"].as_array().unwrap().len()
        }
    };
    let beta = client_with(&[("Authorization", &bearer(BETA_TOKEN))]);
    let gamma = client_with(&[("Authorization", &bearer(OPERATOR_TOKEN)), ("X-Scope-OrgID", "gamma")]);
    promscale_e2e::wait_for(
        "both tenants to have Prometheus' up series",
        Duration::from_secs(60),
        || {
            let (beta, gamma) = (beta.clone(), gamma.clone());
            let up_of = &up_of;
            async move { (up_of(beta).await == 1 && up_of(gamma).await == 1).then_some(()) }
        },
    )
    .await;
    let alpha = client_with(&[("Authorization", &bearer(ALPHA_TOKEN))]);
    assert_eq!(up_of(alpha.clone()).await, 0);
    let (_, names) = get(&alpha, &format!("{base}/api/v1/label/__name__/values"), &[]).await;
    assert_eq!(names["data"], serde_json::json!([]), "{names}");
    // The series of each tenant are the same, without the tenant label.
    let (_, beta_series) = get(&beta, &format!("{base}/api/v1/series"), &[("match[]", "up".into())]).await;
    let (_, gamma_series) = get(&gamma, &format!("{base}/api/v1/series"), &[("match[]", "up".into())]).await;
    assert_eq!(beta_series["data"], gamma_series["data"]);
    assert!(beta_series["data"][0].get("__tenant__").is_none(), "{beta_series}");
    drop(prometheus);
}

/// Migrations 18 and 19 upgrade a database of version 17 in place: its series and metadata
/// stay readable, metadata sent again is not doubled, and its series can be deleted from SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_17_database_is_upgraded_in_place() {
    use promscale_connector::storage::migrations::migrate_to;
    let pg = promscale_e2e::postgres::TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 17).await.unwrap();
    promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "old_total"), ("job", "x")]).await;
    sqlx::query(
        "INSERT INTO _prom_catalog.metadata (metric_family, type, unit, help) VALUES ('old_total', 'counter', '', 'Old help.')",
    )
    .execute(&db)
    .await
    .unwrap();
    let connector = promscale_e2e::upgrade::upgraded_by_a_connector(&pg, &db).await;
    let client = reqwest::Client::new();
    let at = promscale_e2e::recent_ms();
    for body in [
        metadata_request("old_total", "Old help."),
        encode(vec![series(&[("__name__", "old_total"), ("job", "x")], &[(at, 1.0)])]),
    ] {
        let (status, text) = post(&client, &connector.url("/write"), body).await.unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let (_, metadata) = get(&client, &connector.url("/api/v1/metadata"), &[]).await;
    assert_eq!(
        metadata["data"],
        serde_json::json!({"old_total": [{"type": "counter", "help": "Old help.", "unit": ""}]})
    );
    let count = || async {
        let answer =
            promscale_e2e::instant_query(&client, &connector.url(""), "count_over_time(old_total[1h])", at).await;
        answer["data"]["result"].as_array().unwrap().len()
    };
    assert_eq!(count().await, 1);
    let request: i64 = sqlx::query_scalar("SELECT prom_api.delete_series('old_total{job=\"x\"}')")
        .fetch_one(&db)
        .await
        .unwrap();
    let outcome = promscale_e2e::sql_deletion(&db, request).await;
    assert_eq!(
        (outcome.status.as_str(), outcome.samples),
        ("done", Some(1)),
        "{outcome:?}"
    );
    assert_eq!(count().await, 0);
}
