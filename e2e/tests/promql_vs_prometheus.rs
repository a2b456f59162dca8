//! The connector's PromQL answers side by side with a real Prometheus 2.42 holding the same
//! samples: every query, instant and range, at aligned and unaligned times, must give the same
//! series, timestamps and values.

use std::collections::BTreeMap;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series, STALE_NAN_BITS};
use serde_json::Value;

const STEP_MS: i64 = 15_000;
/// Two hours of samples.
const POINTS: i64 = 480;

/// One series of the data set: its labels and its value at point `i` (None: no sample).
struct Generated {
    labels: Vec<(String, String)>,
    value: Box<dyn Fn(i64) -> Option<f64>>,
}

fn generated(labels: &[(&str, &str)], value: impl Fn(i64) -> Option<f64> + 'static) -> Generated {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    // Remote write requires labels sorted by name.
    labels.sort();
    Generated {
        labels,
        value: Box::new(value),
    }
}

/// Counters (one with a reset), gauges, a histogram, a series with gaps longer than the
/// lookback and a stale marker, and special values.
fn data_set() -> Vec<Generated> {
    let mut all = Vec::new();
    for (n, instance) in ["a", "b", "c"].into_iter().enumerate() {
        for (m, method) in ["get", "post"].into_iter().enumerate() {
            let rate = (n * 2 + m + 1) as f64;
            let reset = instance == "b" && method == "get";
            all.push(generated(
                &[("__name__", "http_requests_total"), ("job", "api"), ("instance", instance), ("method", method)],
                move |i| Some(if reset && i >= 200 { (i - 200) as f64 * rate } else { i as f64 * rate }),
            ));
        }
        let phase = n as f64;
        all.push(generated(
            &[("__name__", "node_temperature_celsius"), ("instance", instance)],
            move |i| Some(((i as f64 / 20.0 + phase).sin() * 10.0 * 100.0).round() / 100.0 + 40.0),
        ));
        for (le, share) in [("0.1", 0.2), ("0.5", 0.6), ("1", 0.9), ("+Inf", 1.0)] {
            all.push(generated(
                &[("__name__", "request_duration_seconds_bucket"), ("instance", instance), ("le", le)],
                move |i| Some((i as f64 * (n + 1) as f64 * 10.0 * share).floor()),
            ));
        }
        all.push(generated(
            &[("__name__", "request_duration_seconds_count"), ("instance", instance)],
            move |i| Some(i as f64 * (n + 1) as f64 * 10.0),
        ));
    }
    // Gone for 20 minutes (beyond the 5-minute lookback), back, then marked stale.
    all.push(generated(&[("__name__", "flaky_up"), ("instance", "x")], |i| match i {
        100..=179 => None,
        400 => Some(f64::from_bits(STALE_NAN_BITS)),
        401.. => None,
        _ => Some(1.0),
    }));
    all.push(generated(&[("__name__", "special_values"), ("kind", "nan")], |_| Some(f64::NAN)));
    all.push(generated(&[("__name__", "special_values"), ("kind", "inf")], |i| {
        Some(if i % 2 == 0 { f64::INFINITY } else { -1.5 })
    }));
    all
}

const QUERIES: &[&str] = &[
    // Selectors, matchers, offset, @.
    "http_requests_total",
    "http_requests_total{method=\"get\"}",
    "http_requests_total{instance=~\"a|b\", method!=\"post\"}",
    "{__name__=~\"http_.*\", instance!~\"c\"}",
    "http_requests_total offset 10m",
    "node_temperature_celsius @ end()",
    "flaky_up",
    "special_values",
    "nonexistent_metric",
    // Range functions.
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "irate(http_requests_total[1m])",
    "delta(node_temperature_celsius[15m])",
    "idelta(node_temperature_celsius[5m])",
    "deriv(node_temperature_celsius[10m])",
    "predict_linear(node_temperature_celsius[30m], 600)",
    "holt_winters(node_temperature_celsius[10m], 0.5, 0.5)",
    "changes(flaky_up[1h])",
    "resets(http_requests_total[1h])",
    "avg_over_time(node_temperature_celsius[10m])",
    "min_over_time(node_temperature_celsius[10m])",
    "max_over_time(node_temperature_celsius[10m])",
    "sum_over_time(node_temperature_celsius[10m])",
    "count_over_time(flaky_up[30m])",
    "stddev_over_time(node_temperature_celsius[10m])",
    "stdvar_over_time(node_temperature_celsius[10m])",
    "last_over_time(node_temperature_celsius[10m])",
    "present_over_time(flaky_up[10m])",
    "quantile_over_time(0.9, node_temperature_celsius[30m])",
    "absent_over_time(flaky_up[5m])",
    "rate(http_requests_total[5m] offset 30m)",
    // Aggregations.
    "sum(rate(http_requests_total[5m]))",
    "sum by (instance) (rate(http_requests_total[5m]))",
    "sum without (method) (http_requests_total)",
    "avg(node_temperature_celsius)",
    "count(http_requests_total)",
    "min by (method) (http_requests_total)",
    "max(node_temperature_celsius)",
    "group by (instance) (http_requests_total)",
    "stddev(node_temperature_celsius)",
    "stdvar(node_temperature_celsius)",
    "topk(2, http_requests_total)",
    "bottomk(1, node_temperature_celsius)",
    "quantile(0.5, node_temperature_celsius)",
    "count_values(\"value\", flaky_up)",
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(request_duration_seconds_bucket[10m])))",
    // Binary operators.
    "http_requests_total * 2",
    "2 ^ node_temperature_celsius / 1e10",
    "node_temperature_celsius > 45",
    "node_temperature_celsius > bool 45",
    "http_requests_total % 7",
    "rate(http_requests_total[5m]) / on(instance) group_left sum by (instance) (rate(http_requests_total[5m]))",
    "request_duration_seconds_count / ignoring(le) group_right request_duration_seconds_bucket",
    "http_requests_total{method=\"get\"} and on(instance) node_temperature_celsius > 42",
    "http_requests_total or node_temperature_celsius",
    "http_requests_total unless on(instance) node_temperature_celsius > 45",
    "atan2(node_temperature_celsius, 10)",
    "-node_temperature_celsius",
    "1 + 2 * 3",
    "time() - 100",
    // Instant-vector functions.
    "abs(-node_temperature_celsius)",
    "ceil(node_temperature_celsius)",
    "floor(node_temperature_celsius)",
    "round(node_temperature_celsius, 0.5)",
    "sqrt(node_temperature_celsius)",
    "exp(node_temperature_celsius / 10)",
    "ln(node_temperature_celsius)",
    "log2(node_temperature_celsius)",
    "log10(node_temperature_celsius)",
    "clamp(node_temperature_celsius, 38, 44)",
    "clamp_min(node_temperature_celsius, 41)",
    "clamp_max(node_temperature_celsius, 41)",
    "sgn(node_temperature_celsius - 40)",
    "timestamp(node_temperature_celsius)",
    "scalar(sum(http_requests_total))",
    "vector(1)",
    "absent(nonexistent_metric{job=\"x\"})",
    "absent(http_requests_total)",
    "sort(node_temperature_celsius)",
    "sort_desc(node_temperature_celsius)",
    "label_replace(node_temperature_celsius, \"host\", \"$1-host\", \"instance\", \"(.*)\")",
    "label_join(http_requests_total, \"id\", \"/\", \"instance\", \"method\")",
    "hour(timestamp(node_temperature_celsius))",
    "minute()",
    "day_of_week()",
    "days_in_month()",
    "sin(node_temperature_celsius)",
    "deg(node_temperature_celsius)",
    // Subqueries.
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(node_temperature_celsius[20m:2m] offset 5m)",
];

/// Samples of every series, sent in time order (Prometheus' receiver refuses older samples
/// once newer ones are in).
fn requests(data: &[Generated], first_ms: i64) -> Vec<Vec<u8>> {
    (0..POINTS)
        .collect::<Vec<_>>()
        .chunks(20)
        .map(|points| {
            let series_list = data
                .iter()
                .filter_map(|g| {
                    let samples: Vec<(i64, f64)> = points
                        .iter()
                        .filter_map(|&i| (g.value)(i).map(|v| (first_ms + i * STEP_MS, v)))
                        .collect();
                    let labels: Vec<(&str, &str)> = g.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    (!samples.is_empty()).then(|| series(&labels, &samples))
                })
                .collect();
            encode(series_list)
        })
        .collect()
}

/// A result as comparable data: result type, and per label set the (time, value) points.
fn normalise(data: &Value) -> (String, BTreeMap<String, Vec<(f64, f64)>>) {
    let kind = data["resultType"].as_str().unwrap_or_default().to_string();
    let value = |v: &Value| -> f64 {
        match v.as_str().unwrap_or_default() {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().unwrap(),
        }
    };
    let point = |p: &Value| (p[0].as_f64().unwrap(), value(&p[1]));
    let mut out = BTreeMap::new();
    match kind.as_str() {
        "scalar" | "string" => {
            out.insert(String::new(), vec![point(&data["result"])]);
        }
        _ => {
            for s in data["result"].as_array().unwrap() {
                let key = s["metric"].to_string();
                let points = match s.get("values") {
                    Some(values) => values.as_array().unwrap().iter().map(point).collect(),
                    None => vec![point(&s["value"])],
                };
                out.insert(key, points);
            }
        }
    }
    (kind, out)
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

async fn get(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> (u16, Value) {
    let response = client.get(url).query(params).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_answers_like_prometheus() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let prometheus = Prometheus::start(
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let client = reqwest::Client::new();
    // Aligned to the step, ending about an hour ago, so that `now` plays no part.
    let first_ms = (recent_ms() - POINTS * STEP_MS) / 60_000 * 60_000;
    let data = data_set();
    for body in requests(&data, first_ms) {
        for url in [connector.url("/write"), prometheus.url("/api/v1/write")] {
            let (status, text) = post(&client, &url, body.clone()).await.unwrap();
            assert!(status == 204 || status == 200, "{url}: {status} {text}");
        }
    }
    let last_ms = first_ms + (POINTS - 1) * STEP_MS;
    let instant_times = [
        last_ms,
        last_ms - 7 * 60_000 - 1_234,  // unaligned
        first_ms + 110 * STEP_MS,      // inside flaky_up's gap
        first_ms + 405 * STEP_MS,      // just after the stale marker
        first_ms + 30 * 60_000 + 500,  // unaligned, early
    ];
    let ranges = [
        (first_ms + 600_000, last_ms, 60_000),
        (first_ms + 123_456, first_ms + 3_600_000, 47_000),
    ];

    let mut failures = Vec::new();
    let mut compared = 0;
    for query in QUERIES {
        let mut cases: Vec<(&str, Vec<(&str, String)>)> = instant_times
            .iter()
            .map(|t| ("/api/v1/query", vec![("query", query.to_string()), ("time", format!("{}", *t as f64 / 1000.0))]))
            .collect();
        for (start, end, step) in ranges {
            cases.push((
                "/api/v1/query_range",
                vec![
                    ("query", query.to_string()),
                    ("start", format!("{}", start as f64 / 1000.0)),
                    ("end", format!("{}", end as f64 / 1000.0)),
                    ("step", format!("{}", step as f64 / 1000.0)),
                ],
            ));
        }
        for (path, params) in cases {
            let (want_status, want) = get(&client, &prometheus.url(path), &params).await;
            let (got_status, got) = get(&client, &connector.url(path), &params).await;
            compared += 1;
            let describe = || format!("{path} {params:?}");
            if want_status != got_status {
                failures.push(format!("{}: status {got_status}, Prometheus {want_status}: {got}", describe()));
                continue;
            }
            if want_status != 200 {
                continue;
            }
            let (want_kind, want_series) = normalise(&want["data"]);
            let (got_kind, got_series) = normalise(&got["data"]);
            if want_kind != got_kind || want_series.keys().ne(got_series.keys()) {
                failures.push(format!(
                    "{}:\n  got  {got_kind} {:?}\n  want {want_kind} {:?}",
                    describe(),
                    got_series.keys().collect::<Vec<_>>(),
                    want_series.keys().collect::<Vec<_>>()
                ));
                continue;
            }
            for (labels, want_points) in &want_series {
                let got_points = &got_series[labels];
                let same = want_points.len() == got_points.len()
                    && want_points
                        .iter()
                        .zip(got_points)
                        .all(|(w, g)| w.0 == g.0 && same_value(w.1, g.1));
                if !same {
                    failures.push(format!(
                        "{} {labels}:\n  got  {:?}\n  want {:?}",
                        describe(),
                        &got_points[..got_points.len().min(5)],
                        &want_points[..want_points.len().min(5)]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
