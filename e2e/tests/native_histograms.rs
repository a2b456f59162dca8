//! Native histograms: what a real Prometheus 3 scrapes from itself with native histograms
//! and sends (remote write 1.0 with `send_native_histograms: true`, and 2.0) is stored, and
//! remote read answers every histogram and sample as that Prometheus' own remote read does;
//! SQL users see them in `prom_info.native_histogram`; retention removes them; a database
//! of schema version 10 is upgraded in place.

use std::collections::BTreeMap;

use promscale_connector::prompb::histogram::{Count, ZeroCount};
use promscale_connector::prompb::{
    BucketSpan, Histogram, LabelMatcher, MatchType, Query, ReadRequest, ReadResponse, ResponseType,
};
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::{sum_metric, Prometheus};
use promscale_e2e::remote_write::{encode, integer_histogram, post, series};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_prometheus_3_sends_with_remote_write_1_are_read_back_as_it_holds_them() {
    histograms_arrive("prometheus.WriteRequest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_prometheus_3_sends_with_remote_write_2_are_read_back_as_it_holds_them() {
    histograms_arrive("io.prometheus.write.v2.Request").await;
}

/// A histogram as a user sees it, whatever its encoding: every bucket by index with a count
/// other than zero (Prometheus' chunks add empty buckets to a histogram when a later one in
/// the chunk has more), the counts as floats, bit for bit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Canonical {
    time: i64,
    float: bool,
    schema: i32,
    count: u64,
    sum: u64,
    zero_threshold: u64,
    zero_count: u64,
    positive: Vec<(i64, u64)>,
    negative: Vec<(i64, u64)>,
    custom_values: Vec<u64>,
}

fn buckets(spans: &[BucketSpan], deltas: &[i64], counts: &[f64]) -> Vec<(i64, u64)> {
    let mut absolute = counts.to_vec();
    if absolute.is_empty() {
        let mut current = 0i64;
        absolute = deltas
            .iter()
            .map(|d| {
                current += d;
                current as f64
            })
            .collect();
    }
    let mut out = Vec::new();
    let (mut index, mut at) = (0i64, 0usize);
    for span in spans {
        index += i64::from(span.offset);
        for _ in 0..span.length {
            if absolute[at] != 0.0 {
                out.push((index, absolute[at].to_bits()));
            }
            index += 1;
            at += 1;
        }
    }
    out
}

fn canonical(h: &Histogram) -> Canonical {
    let count = match h.count {
        Some(Count::Int(c)) => c as f64,
        Some(Count::Float(c)) => c,
        None => 0.0,
    };
    let zero_count = match h.zero_count {
        Some(ZeroCount::Int(c)) => c as f64,
        Some(ZeroCount::Float(c)) => c,
        None => 0.0,
    };
    Canonical {
        time: h.timestamp,
        float: matches!(h.count, Some(Count::Float(_))),
        schema: h.schema,
        count: count.to_bits(),
        sum: h.sum.to_bits(),
        zero_threshold: h.zero_threshold.to_bits(),
        zero_count: zero_count.to_bits(),
        positive: buckets(&h.positive_spans, &h.positive_deltas, &h.positive_counts),
        negative: buckets(&h.negative_spans, &h.negative_deltas, &h.negative_counts),
        custom_values: h.custom_values.iter().map(|v| v.to_bits()).collect(),
    }
}

type Answer = BTreeMap<String, (Vec<(i64, u64)>, Vec<Canonical>)>;

/// Everything remote read answers (SAMPLES) for `matchers` in `[start, end]` ms, by series.
async fn remote_read(client: &reqwest::Client, url: &str, matchers: Vec<LabelMatcher>, start: i64, end: i64) -> Answer {
    let request = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
        }],
        accepted_response_types: vec![ResponseType::Samples as i32],
    };
    let response = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(
            snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&response.bytes().await.unwrap())
        .unwrap();
    let mut out = Answer::new();
    for s in &ReadResponse::decode(raw.as_slice()).unwrap().results[0].timeseries {
        // Prometheus answers with whole chunks that overlap the range.
        let samples: Vec<(i64, u64)> = s
            .samples
            .iter()
            .filter(|p| (start..=end).contains(&p.timestamp))
            .map(|p| (p.timestamp, p.value.to_bits()))
            .collect();
        let histograms: Vec<Canonical> = s
            .histograms
            .iter()
            .filter(|h| (start..=end).contains(&h.timestamp))
            .map(canonical)
            .collect();
        if !samples.is_empty() || !histograms.is_empty() {
            out.insert(promscale_e2e::remote_write::label_key(&s.labels), (samples, histograms));
        }
    }
    out
}

fn matcher(r#type: MatchType, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: r#type as i32,
        name: name.into(),
        value: value.into(),
    }
}

async fn histograms_arrive(protobuf_message: &str) {
    let pg = TestPostgres::start();
    // info() is one of the functions both keep behind a flag of the same name.
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--maintenance.interval",
            "0s",
            "--metrics.promql.enable-feature",
            "promql-experimental-functions",
        ],
    )
    .await;
    let connector_port = connector.port();
    let prometheus = Prometheus::start_v3(
        |port| {
            format!(
                r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    scrape_protocols: [PrometheusProto]
    scrape_native_histograms: true
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
remote_write:
  - url: http://127.0.0.1:{connector_port}/write
    send_native_histograms: true
    protobuf_message: {protobuf_message}
    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_shards: 1}}
"#
            )
        },
        // info() and the other functions Prometheus 3 keeps behind a flag, and duration
        // expressions.
        &["--enable-feature=promql-experimental-functions,promql-duration-expr"],
    )
    .await;
    let last = prometheus.last_scrape_sent("self").await;
    let end = (last * 1000.0).round() as i64;
    let start = end - 20_000;

    let client = reqwest::Client::new();
    let matchers = || {
        vec![
            matcher(MatchType::Eq, "job", "self"),
            matcher(MatchType::Re, "__name__", ".+"),
        ]
    };
    let want = remote_read(&client, &prometheus.url("/api/v1/read"), matchers(), start, end).await;
    let got = remote_read(&client, &connector.url("/read"), matchers(), start, end).await;
    let histogram_series: Vec<&String> = want
        .iter()
        .filter(|(_, (_, h))| !h.is_empty())
        .map(|(k, _)| k)
        .collect();
    assert!(
        histogram_series.len() >= 5,
        "Prometheus holds native histograms of its own to compare: {histogram_series:?}"
    );
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (series, expected) in &want {
        assert_eq!(&got[series], expected, "{series}");
    }
    for failed in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_histograms_failed_total",
    ] {
        assert_eq!(prometheus.own_metric(failed).await.unwrap_or(0.0), 0.0, "{failed}");
    }
    // The rows written so far become histogram chunks (what maintenance does once they are
    // older than the head age); everything below reads them from there, and remote read
    // still answers what Prometheus holds, bit for bit.
    let db = pg.pool().await;
    let (rows_before, row_bytes): (i64, f64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(pg_column_size(h.*)), 0)::float8 FROM _prom_catalog.histogram h")
            .fetch_one(&db)
            .await
            .unwrap();
    let compacted = promscale_e2e::maintain(&db).await;
    assert!(compacted.histograms >= rows_before as u64, "{compacted:?}");
    let (in_chunks, chunk_bytes): (i64, f64) = sqlx::query_as(
        "SELECT coalesce(sum(samples), 0)::int8,
                coalesce(sum(pg_column_size(c.*)), 0)::float8 FROM _prom_catalog.histogram_chunk c",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(in_chunks >= rows_before, "{in_chunks} histograms in chunks");
    let (per_row, per_chunked) = (row_bytes / rows_before as f64, chunk_bytes / in_chunks as f64);
    eprintln!("native histograms: {per_row:.0} bytes a row, {per_chunked:.1} bytes each in chunks");
    assert!(
        per_chunked * 4.0 < per_row,
        "chunks cost {per_chunked:.1} bytes a histogram, rows {per_row:.0}"
    );
    let got = remote_read(&client, &connector.url("/read"), matchers(), start, end).await;
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (series, expected) in &want {
        assert_eq!(&got[series], expected, "{series}, compacted");
    }

    let metrics = connector.metrics_text().await;
    let stored: usize = want.values().map(|(_, h)| h.len()).sum();
    assert!(sum_metric(&metrics, "promscale_ingest_histograms_total").unwrap() >= stored as f64);

    // PromQL: selectors, range selectors, the functions of native histograms, rate, increase
    // and sum answer as Prometheus 3 does on the same data (computed values to 1e-12:
    // Prometheus sums with Kahan compensation).
    // Half a scrape interval off the scrapes: no sample sits on a window boundary, where a
    // connector run with --metrics.promql.semantics prometheus2 would differ.
    let at = format!("{:.3}", (end - 1_500) as f64 / 1000.0);
    let name = "prometheus_http_request_duration_seconds";
    for (query, exact) in [
        (name.to_string(), true),
        (format!(r#"{name}{{handler="/metrics"}}[9500ms]"#), true),
        (format!("histogram_count({name})"), true),
        (format!("histogram_sum({name})"), true),
        (format!("histogram_quantile(0.9, {name})"), false),
        (format!("histogram_quantile(0.5, {name})"), false),
        (format!("histogram_fraction(0, 0.01, {name})"), false),
        (format!("histogram_count({name}) > 0"), true),
        (format!("rate({name}[1m])"), false),
        // An info beside the result: go_goroutines is a gauge.
        ("rate(go_goroutines[1m])".to_string(), false),
        (format!(r#"increase({name}{{handler="/metrics"}}[30s])"#), false),
        (format!("sum(rate({name}[1m]))"), false),
        (format!("sum by (handler) ({name})"), false),
        (format!("histogram_quantile(0.9, sum(rate({name}[1m])))"), false),
        (format!("histogram_count(rate({name}[1m]))"), false),
        (format!("count({name})"), true),
        (format!("count by (handler) ({name})"), true),
        (format!("group({name})"), true),
        (format!("absent({name}) or vector(1)"), true),
        (
            format!(r#"label_replace({name}, "route", "$1", "handler", "(.*)")"#),
            true,
        ),
        (format!(r#"{name}{{handler="/metrics"}} or vector(0)"#), true),
        (format!(r#"{name} and on(handler) {name}{{handler="/metrics"}}"#), true),
        (format!("count_over_time({name}[1m])"), true),
        (format!("last_over_time({name}[1m])"), true),
        (format!("present_over_time({name}[1m])"), true),
        (format!(r#"{name}{{handler="/metrics"}} * 2"#), false),
        (format!(r#"0.5 * {name}{{handler="/metrics"}}"#), false),
        (format!("rate({name}[1m]) / 4"), false),
        (format!("-1 * {name}"), false),
        (format!("-{name}"), false),
        (
            format!(r#"{name}{{handler="/metrics"}} + {name}{{handler="/metrics"}}"#),
            false,
        ),
        (
            format!(r#"{name} - ignoring(handler) group_left {name}{{handler="/metrics"}}"#),
            false,
        ),
        // Not defined between a histogram and a float: left out, with an info.
        (format!(r#"{name}{{handler="/metrics"}} + 1 or vector(1)"#), true),
        // info(): the data labels of info metrics joined by instance and job.
        (
            r#"info(go_goroutines, {__name__="prometheus_build_info"})"#.to_string(),
            true,
        ),
        (
            r#"info(rate(go_goroutines[1m]), {__name__="go_info", version=~"go.+"})"#.to_string(),
            false,
        ),
        (
            r#"info(go_goroutines, {__name__=~"go_.+_info|prometheus_build_info"})"#.to_string(),
            true,
        ),
        // Duration expressions.
        (format!("rate({name}[30s+30s])"), false),
        (format!(r#"{name}{{handler="/metrics"}} offset (250 * 2ms)"#), true),
        (
            format!(r#"increase({name}{{handler="/metrics"}}[(10 % 6) * 15s])"#),
            false,
        ),
        // Extended range selectors: anchored and smoothed windows, on floats and histograms.
        (
            format!(r#"increase({name}{{handler="/metrics"}}[30s] anchored)"#),
            false,
        ),
        (format!("histogram_count(rate({name}[1m] smoothed))"), false),
        ("delta(go_goroutines[1m] anchored)".to_string(), false),
        ("rate(prometheus_http_requests_total[1m] smoothed)".to_string(), false),
        (
            "increase(prometheus_http_requests_total[10s] smoothed offset 2s)".to_string(),
            false,
        ),
        ("changes(go_goroutines[1m] anchored)".to_string(), true),
        ("resets(prometheus_http_requests_total[1m] anchored)".to_string(), true),
        ("go_goroutines smoothed".to_string(), false),
        ("go_goroutines[30s] anchored".to_string(), false),
        // Trim operators: the observations below or above a value.
        (format!("histogram_count({name} </ 0.01)"), false),
        (format!(r#"{name}{{handler="/metrics"}} >/ 0.001"#), false),
        // How numbers are spelled: sample values take an exponent at the extremes, scalars
        // do not.
        ("vector(1e-7)".to_string(), true),
        ("vector(-2.5e21)".to_string(), true),
        ("scalar(vector(1e-7))".to_string(), true),
    ] {
        let params = [("query", query.clone()), ("time", at.clone())];
        compare_json(
            &client,
            &prometheus.url("/api/v1/query"),
            &connector.url("/api/v1/query"),
            &params,
            exact,
        )
        .await;
    }
    // The info is there to compare: Prometheus 3 says a gauge might not be a counter, and
    // where in the query (line 1, column 6: the selector).
    let params = [("query", "rate(go_goroutines[1m])".to_string()), ("time", at.clone())];
    let (_, answer) = promscale_e2e::comparison::get(&client, &connector.url("/api/v1/query"), &params).await;
    assert_eq!(
        answer["infos"],
        serde_json::json!([
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"go_goroutines\" (1:6)"
        ])
    );
    let range = [
        ("query", format!(r#"{name}{{handler="/metrics"}}"#)),
        ("start", format!("{:.3}", (end - 11_500) as f64 / 1000.0)),
        ("end", at.clone()),
        ("step", "1".to_string()),
    ];
    compare_json(
        &client,
        &prometheus.url("/api/v1/query_range"),
        &connector.url("/api/v1/query_range"),
        &range,
        true,
    )
    .await;

    // Series of native histograms are found in a time range, as Grafana asks for them.
    let window = [
        ("match[]", name.to_string()),
        ("start", format!("{:.3}", (end - 11_500) as f64 / 1000.0)),
        ("end", at.clone()),
    ];
    // Prometheus answers label values and names from every series of a block that overlaps
    // the range (its head holds series created since, e.g. of its own remote-read handler,
    // not sent yet): the connector's, exact, are those of the series Prometheus lists.
    let series_of = |answer: &serde_json::Value| {
        let mut items: Vec<BTreeMap<String, String>> = serde_json::from_value(answer["data"].clone()).unwrap();
        items.sort();
        items
    };
    let (_, want_series) = promscale_e2e::comparison::get(&client, &prometheus.url("/api/v1/series"), &window).await;
    let (_, got_series) = promscale_e2e::comparison::get(&client, &connector.url("/api/v1/series"), &window).await;
    let listed = series_of(&want_series);
    assert!(!listed.is_empty());
    assert_eq!(series_of(&got_series), listed, "/api/v1/series");
    let strings =
        |answer: serde_json::Value| -> Vec<String> { serde_json::from_value(answer["data"].clone()).unwrap() };
    let (_, handlers) =
        promscale_e2e::comparison::get(&client, &connector.url("/api/v1/label/handler/values"), &window).await;
    let mut expected: Vec<String> = listed.iter().filter_map(|s| s.get("handler").cloned()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(strings(handlers), expected, "/api/v1/label/handler/values");
    let (_, names) = promscale_e2e::comparison::get(&client, &connector.url("/api/v1/labels"), &window).await;
    let mut expected: Vec<String> = listed.iter().flat_map(|s| s.keys().cloned()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(strings(names), expected, "/api/v1/labels");

    // A second Prometheus 3 reading them through remote read answers as the first.
    let connector_port = connector.port();
    let reader = Prometheus::start_v3(
        |_| format!("remote_read:\n  - url: http://127.0.0.1:{connector_port}/read\n    read_recent: true\n"),
        &[],
    )
    .await;
    // Streamed chunks (Prometheus 3 asks for them first): one series a frame, XOR chunks for
    // floats, histogram chunks for native histograms.
    for query in [
        format!(r#"{name}{{handler="/metrics"}}"#),
        name.to_string(),
        format!("histogram_count({name})"),
        format!("rate({name}[1m])"),
        "prometheus_http_requests_total".to_string(),
        r#"{__name__=~"go_.*|process_.*"}"#.to_string(),
    ] {
        let params = [("query", query), ("time", at.clone())];
        compare_json(
            &client,
            &prometheus.url("/api/v1/query"),
            &reader.url("/api/v1/query"),
            &params,
            true,
        )
        .await;
    }

    // SQL users read them with their series' labels: the count of the last histogram of
    // the HTTP handler Prometheus scrapes itself through.
    let (key, (_, histograms)) = want
        .iter()
        .find(|(k, (_, h))| {
            k.contains("prometheus_http_request_duration_seconds") && k.contains("/metrics") && !h.is_empty()
        })
        .expect("Prometheus' /metrics handler histogram");
    let last = histograms.last().unwrap();
    let (count, buckets): (f64, i64) = sqlx::query_as(
        "SELECT count, (SELECT count(*) FROM unnest(positive_buckets) b WHERE b <> 0)
           FROM prom_info.native_histogram
          WHERE metric_name = 'prometheus_http_request_duration_seconds'
            AND series_labels->>'handler' = '/metrics' AND time = to_timestamp($1 / 1000.0)",
    )
    .bind(last.time as f64)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(count.to_bits(), last.count, "{key}");
    assert_eq!(buckets as usize, last.positive.len(), "{key}");
}

/// The `data` of an API answer with its results in label order.
fn sorted_data(mut answer: serde_json::Value) -> serde_json::Value {
    let data = answer["data"].take();
    let mut results = data["result"].as_array().cloned().unwrap_or_default();
    results.sort_by_key(|r| r["metric"].to_string());
    serde_json::json!({"resultType": data["resultType"], "result": results})
}

/// Every number in two JSON answers equal to 1e-12, relative (strings that parse as numbers
/// compared as numbers); everything else exactly.
fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::String(x), Value::String(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) || (x.is_nan() && y.is_nan()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

async fn compare_json(client: &reqwest::Client, reference: &str, tested: &str, params: &[(&str, String)], exact: bool) {
    let (want_status, want) = promscale_e2e::comparison::get(client, reference, params).await;
    let (got_status, got) = promscale_e2e::comparison::get(client, tested, params).await;
    assert_eq!((got_status, want_status), (200, 200), "{params:?}: {got} / {want}");
    // The same warnings and infos (in any order, as Prometheus lists them), each with where
    // its expression starts in the query.
    for key in ["warnings", "infos"] {
        use promscale_e2e::comparison::annotations_of;
        assert_eq!(
            annotations_of(&got, key),
            annotations_of(&want, key),
            "{params:?}: {key}"
        );
    }
    let (want, got) = (sorted_data(want), sorted_data(got));
    assert!(
        !want["result"].as_array().unwrap().is_empty(),
        "{params:?}: Prometheus answers something to compare (the connector answers {got})"
    );
    if exact {
        assert_eq!(got, want, "{params:?}");
    } else {
        assert!(close(&got, &want), "{params:?}:\n got  {got}\n want {want}");
    }
}

/// Migration 11 upgrades a database of version 10 in place: a series version 10 created gets
/// the histograms sent for it, under its own id; one sent again is stored once (the first
/// kept); retention (`prom_api.execute_maintenance`) removes those past the metric's period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_10_database_is_upgraded_and_its_series_keep_histograms_within_retention() {
    use promscale_connector::storage::migrations::migrate_to;
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 10).await.unwrap();
    let old_id = promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "old")]).await;
    let connector = promscale_e2e::upgrade::upgraded_by_a_connector(&pg, &db).await;
    sqlx::query("SELECT prom_api.set_metric_retention_period('old', INTERVAL '2 days')")
        .execute(&db)
        .await
        .unwrap();
    let now = promscale_e2e::recent_ms();
    let day = 86_400_000;
    let client = reqwest::Client::new();
    let mut old = series(&[("__name__", "old")], &[]);
    old.histograms = vec![integer_histogram(now - 3 * day, 4), integer_histogram(now, 8)];
    let (status, text) = post(&client, &connector.url("/write"), encode(vec![old.clone()]))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    // Sent again with another count at the same time: the first stays.
    old.histograms = vec![integer_histogram(now, 9)];
    let (status, text) = post(&client, &connector.url("/write"), encode(vec![old]))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    let stored = || async {
        sqlx::query_as::<_, (i64, f64)>("SELECT series_id, count FROM _prom_catalog.histogram ORDER BY time")
            .fetch_all(&db)
            .await
            .unwrap()
    };
    assert_eq!(stored().await, vec![(old_id, 4.0), (old_id, 8.0)]);
    sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        stored().await,
        vec![(old_id, 8.0)],
        "the histogram past retention is gone"
    );
    // Read back exactly as sent.
    let answer = remote_read(
        &client,
        &connector.url("/read"),
        vec![matcher(MatchType::Eq, "__name__", "old")],
        now - day,
        now,
    )
    .await;
    assert_eq!(
        answer["__name__=\"old\""].1,
        vec![canonical(&integer_histogram(now, 8))]
    );
}

/// Prometheus' stale marker, the sum of a stale native histogram.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Migration 15 upgrades a database of version 14 in place, and maintenance moves native
/// histograms (those version 14 wrote and later ones) into histogram chunks: read back bit
/// for bit by remote read and SQL, a histogram sent again after compaction stored once (the
/// first kept), a series' small chunk grown by later histograms, histograms of a metric with
/// compression turned off left as rows, and chunks past retention removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_of_a_version_14_database_are_compacted_into_chunks_bit_for_bit() {
    use promscale_connector::storage::migrations::migrate_to;
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 14).await.unwrap();
    let latency = promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "latency")]).await;
    // An hour into one of the default 8-hour time chunks, hours ago: histogram chunks do not
    // span two time chunks, and the histograms below all fall in one (those of 3 days before
    // too).
    let period = 8 * 3_600_000;
    let recent = promscale_e2e::recent_ms();
    let now = recent - recent.rem_euclid(period) - period + 3_600_000;
    // Written by version 14, in its form: absolute counts, flat spans.
    for (t, n) in [(now - 60_000, 4), (now - 45_000, 5)] {
        sqlx::query(
            "INSERT INTO _prom_catalog.histogram VALUES ($1, to_timestamp($2 / 1000.0), true, 0, 1, $3, $3 * 0.25,
                    1e-128, 0, '{-1,2}', ARRAY[$3, 0]::float8[], '{}', '{}', '{}')",
        )
        .bind(latency)
        .bind(t as f64)
        .bind(n as f64)
        .execute(&db)
        .await
        .unwrap();
    }
    let connector = promscale_e2e::upgrade::upgraded_by_a_connector(&pg, &db).await;
    let client = reqwest::Client::new();
    let write = |series: Vec<promscale_connector::prompb::TimeSeries>| {
        let client = client.clone();
        let url = connector.url("/write");
        async move {
            let (status, text) = post(&client, &url, encode(series)).await.unwrap();
            assert_eq!(status, 204, "{text}");
        }
    };
    let float = Histogram {
        count: Some(Count::Float(2.5)),
        zero_count: Some(ZeroCount::Float(0.0)),
        positive_counts: vec![1.5, 1.0],
        positive_deltas: vec![],
        reset_hint: 3,
        ..integer_histogram(now - 15_000, 0)
    };
    let stale = Histogram {
        sum: f64::from_bits(STALE_NAN),
        count: Some(Count::Int(0)),
        positive_spans: vec![],
        positive_deltas: vec![],
        ..integer_histogram(now - 14_000, 0)
    };
    let custom = Histogram {
        schema: -53,
        zero_threshold: 0.0,
        custom_values: vec![0.1, 1.0],
        positive_spans: vec![BucketSpan { offset: 0, length: 3 }],
        positive_deltas: vec![1, 1, -1],
        count: Some(Count::Int(4)),
        reset_hint: 1,
        ..integer_histogram(now, 4)
    };
    let mut series_of_latency = series(&[("__name__", "latency")], &[]);
    series_of_latency.histograms = vec![integer_histogram(now - 30_000, 6), float, stale, custom];
    let day = 86_400_000;
    let mut expiring = series(&[("__name__", "expiring")], &[]);
    expiring.histograms = vec![
        integer_histogram(now - 3 * day, 1),
        integer_histogram(now - 3 * day + 60_000, 2),
    ];
    let mut plain = series(&[("__name__", "plain")], &[]);
    plain.histograms = vec![integer_histogram(now, 3)];
    write(vec![series_of_latency, expiring, plain]).await;
    sqlx::query("SELECT prom_api.set_metric_compression_setting('plain', false)")
        .execute(&db)
        .await
        .unwrap();

    let matchers = || vec![matcher(MatchType::Re, "__name__", "latency|expiring|plain")];
    let read_url = connector.url("/read");
    let read = || remote_read(&client, &read_url, matchers(), now - 4 * day, now + day);
    let view = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT concat_ws(' ', metric_name, series_labels, time, count, sum, schema, zero_threshold,
                    zero_count, positive_spans, positive_buckets, negative_spans, negative_buckets,
                    custom_values, integer, reset_hint)
               FROM prom_info.native_histogram ORDER BY series_id, time",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let stored_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _prom_catalog.histogram")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let chunks = || async {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT m.metric_name, c.samples FROM _prom_catalog.histogram_chunk c
               JOIN _prom_catalog.series s ON s.id = c.series_id JOIN _prom_catalog.metric m ON m.id = s.metric_id
              ORDER BY c.series_id, c.end_time",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let before = read().await;
    assert_eq!(before["__name__=\"latency\""].1.len(), 6);
    assert_eq!(
        before["__name__=\"latency\""].1[4].sum, STALE_NAN,
        "the stale marker's bits"
    );
    let view_before = view().await;
    assert_eq!(view_before.len(), 9);

    let stats = promscale_e2e::maintain(&db).await;
    assert_eq!(stats.histograms, 8, "{stats:?}");
    assert_eq!(stored_rows().await, 1, "the metric without compression keeps its row");
    assert_eq!(chunks().await, vec![("latency".into(), 6), ("expiring".into(), 2)]);
    assert_eq!(read().await, before, "remote read of the chunks");
    assert_eq!(view().await, view_before, "prom_info.native_histogram of the chunks");
    // prom_api.native_histograms reads a time range of a metric, rows and chunks, as the view
    // filtered by time does.
    let in_range = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>(sql)
                .bind((now - 45_000) as f64)
                .bind((now - 14_000) as f64)
                .fetch_all(&db)
                .await
                .unwrap()
        }
    };
    let from_view = in_range(
        "SELECT concat_ws(' ', series_id, series_labels, time, count, sum, schema, zero_threshold, zero_count,
                positive_spans, positive_buckets, negative_spans, negative_buckets, custom_values, integer, reset_hint)
           FROM prom_info.native_histogram
          WHERE metric_name = 'latency' AND time BETWEEN to_timestamp($1 / 1000.0) AND to_timestamp($2 / 1000.0)
          ORDER BY series_id, time",
    )
    .await;
    let from_function = in_range(
        "SELECT concat_ws(' ', series_id, series_labels, time, count, sum, schema, zero_threshold, zero_count,
                positive_spans, positive_buckets, negative_spans, negative_buckets, custom_values, integer, reset_hint)
           FROM prom_api.native_histograms('latency', to_timestamp($1 / 1000.0), to_timestamp($2 / 1000.0))",
    )
    .await;
    assert_eq!(from_view.len(), 4, "{from_view:?}");
    assert_eq!(from_function, from_view);
    // A Prometheus 3 reading them through remote read (streamed histogram chunks, decoded by
    // Prometheus itself) sees what the connector answers: integer, float and custom-bucket
    // histograms, a gauge, a counter reset and a stale marker.
    let connector_port = connector.port();
    let reader = Prometheus::start_v3(
        |_| format!("remote_read:\n  - url: http://127.0.0.1:{connector_port}/read\n    read_recent: true\n"),
        &[],
    )
    .await;
    let range = [
        ("query", "latency".to_string()),
        ("start", format!("{}", (now - 70_000) / 1000)),
        ("end", format!("{}", (now + 20_000) / 1000)),
        ("step", "1".to_string()),
    ];
    compare_json(
        &client,
        &connector.url("/api/v1/query_range"),
        &reader.url("/api/v1/query_range"),
        &range,
        true,
    )
    .await;

    // Sent again after compaction, with another count: the first stays, in reads and in the
    // chunk that compaction writes again.
    let mut again = series(&[("__name__", "latency")], &[]);
    again.histograms = vec![integer_histogram(now - 60_000, 40)];
    write(vec![again]).await;
    assert_eq!(read().await, before, "the first histogram of a time wins");
    assert_eq!(view().await, view_before);
    // And a later one grows the series' small chunk rather than starting another.
    let mut later = series(&[("__name__", "latency")], &[]);
    later.histograms = vec![integer_histogram(now + 15_000, 7)];
    write(vec![later]).await;
    let stats = promscale_e2e::maintain(&db).await;
    assert_eq!(stats.histograms, 2, "{stats:?}");
    assert_eq!(stored_rows().await, 1);
    assert_eq!(chunks().await, vec![("latency".into(), 7), ("expiring".into(), 2)]);
    let mut expected = before.clone();
    expected
        .get_mut("__name__=\"latency\"")
        .unwrap()
        .1
        .push(canonical(&integer_histogram(now + 15_000, 7)));
    assert_eq!(read().await, expected);
    let (count,): (f64,) = sqlx::query_as(
        "SELECT count FROM prom_info.native_histogram WHERE metric_name = 'latency' AND time = to_timestamp($1 / 1000.0)",
    )
    .bind((now - 60_000) as f64)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(count, 4.0, "the histogram version 14 stored");
    // One in the next time chunk starts a histogram chunk of its own, although the last one is
    // small: retention drops chunks whole, and none spans two time chunks.
    let mut next_period = series(&[("__name__", "latency")], &[]);
    next_period.histograms = vec![integer_histogram(now + period, 8)];
    write(vec![next_period]).await;
    promscale_e2e::maintain(&db).await;
    assert_eq!(
        chunks().await,
        vec![("latency".into(), 7), ("latency".into(), 1), ("expiring".into(), 2)]
    );
    expected
        .get_mut("__name__=\"latency\"")
        .unwrap()
        .1
        .push(canonical(&integer_histogram(now + period, 8)));
    assert_eq!(read().await, expected);

    // Retention drops the chunks wholly past it.
    sqlx::query("SELECT prom_api.set_metric_retention_period('expiring', INTERVAL '2 days')")
        .execute(&db)
        .await
        .unwrap();
    promscale_e2e::maintain(&db).await;
    assert_eq!(chunks().await, vec![("latency".into(), 7), ("latency".into(), 1)]);
    expected.remove("__name__=\"expiring\"");
    assert_eq!(read().await, expected);
}
