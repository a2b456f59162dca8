//! A data set loaded identically into the connector and a reference Prometheus, and the
//! comparison of their query API answers.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::connector::Connector;
use crate::postgres::TestPostgres;
use crate::prometheus::Prometheus;
use crate::remote_write::{encode, series, STALE_NAN_BITS};

pub const STEP_MS: i64 = 15_000;
/// Two hours of samples.
pub const POINTS: i64 = 480;

/// One series of the data set: its labels and its value at point `i` (None: no sample).
pub struct Generated {
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

/// Counters (one with a reset), gauges (one with many ties), a histogram, a series with gaps
/// longer than the lookback and a stale marker, and special values.
fn data_set() -> Vec<Generated> {
    let mut all = Vec::new();
    for (n, instance) in ["a", "b", "c"].into_iter().enumerate() {
        for (m, method) in ["get", "post"].into_iter().enumerate() {
            let rate = (n * 2 + m + 1) as f64;
            let reset = instance == "b" && method == "get";
            all.push(generated(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("instance", instance),
                    ("method", method),
                ],
                move |i| {
                    Some(if reset && i >= 200 {
                        (i - 200) as f64 * rate
                    } else {
                        i as f64 * rate
                    })
                },
            ));
        }
        let phase = n as f64;
        all.push(generated(
            &[("__name__", "node_temperature_celsius"), ("instance", instance)],
            move |i| Some(((i as f64 / 20.0 + phase).sin() * 10.0 * 100.0).round() / 100.0 + 40.0),
        ));
        for (le, share) in [("0.1", 0.2), ("0.5", 0.6), ("1", 0.9), ("+Inf", 1.0)] {
            all.push(generated(
                &[
                    ("__name__", "request_duration_seconds_bucket"),
                    ("instance", instance),
                    ("le", le),
                ],
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
    // A gauge of few distinct values: topk, bottomk, sort and friends meet ties at every
    // step, and must break them as Prometheus does.
    for k in 0..6 {
        all.push(generated(
            &[
                ("__name__", "demo_memory_usage_bytes"),
                ("instance", ["a", "b", "c"][k % 3]),
                ("service", ["x", "y"][k / 3]),
            ],
            move |i| Some(((i / 10 + k as i64 / 2) % 3) as f64 * 1e6),
        ));
    }
    all.push(generated(&[("__name__", "special_values"), ("kind", "nan")], |_| {
        Some(f64::NAN)
    }));
    all.push(generated(&[("__name__", "special_values"), ("kind", "inf")], |i| {
        Some(if i % 2 == 0 { f64::INFINITY } else { -1.5 })
    }));
    all
}

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

/// A query API result as comparable data: result type, and per label set the (time, value) points.
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

pub async fn get(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> (u16, Value) {
    let response = client.get(url).query(params).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Where the data set starts: aligned to the minute, ending about an hour ago, so that `now`
/// plays no part in any answer.
fn first_ms() -> i64 {
    (crate::recent_ms() - POINTS * STEP_MS) / 60_000 * 60_000
}

/// The data set loaded into a connector (on its own PostgreSQL) and into a reference
/// Prometheus through remote write. The connector keeps it in half-hour chunks and compresses
/// those that ended over an hour ago, so that queries read both storage forms.
pub struct Loaded {
    pub pg: TestPostgres,
    pub connector: Connector,
    pub reference: Prometheus,
    pub client: reqwest::Client,
    pub first_ms: i64,
    /// Which Prometheus the reference is: only Prometheus 3 gives warnings and infos of PromQL.
    pub version: crate::prometheus::Version,
}

impl Loaded {
    /// The data set in a connector with Prometheus 2 semantics and in Debian's Prometheus
    /// 2.42.
    pub async fn start() -> Self {
        Self::start_with(crate::prometheus::Version::Debian).await
    }

    /// The data set in a connector and in the reference Prometheus `version`: under Prometheus
    /// 2 semantics beside 2.42; with its defaults beside Prometheus 3, the experimental
    /// functions enabled in both.
    pub async fn start_with(version: crate::prometheus::Version) -> Self {
        Self::start_as(version, &[], reqwest::Client::new()).await
    }

    /// As [`Loaded::start_with`], with more connector flags, the data written and the answers
    /// compared through `client` (which may carry a credential or a tenant header: the
    /// reference Prometheus ignores them).
    pub async fn start_as(version: crate::prometheus::Version, extra_flags: &[&str], client: reqwest::Client) -> Self {
        use crate::prometheus::Version;
        let pg = TestPostgres::start();
        let connector_flags: &[&str] = match version {
            Version::Debian => &[
                "--maintenance.interval",
                "0s",
                "--metrics.promql.semantics",
                "prometheus2",
            ],
            Version::V3 => &[
                "--maintenance.interval",
                "0s",
                "--metrics.promql.enable-feature",
                "promql-experimental-functions,promql-binop-fill-modifiers",
            ],
        };
        let flags: Vec<&str> = connector_flags.iter().chain(extra_flags).copied().collect();
        let connector = Connector::start(&pg.uri(), &flags).await;
        let reference_flags: &[&str] = match version {
            Version::Debian => &["--web.enable-remote-write-receiver"],
            Version::V3 => &[
                "--web.enable-remote-write-receiver",
                "--enable-feature=promql-experimental-functions,promql-binop-fill-modifiers",
            ],
        };
        let reference = Prometheus::start_version(
            version,
            |_| "global: {scrape_interval: 1h}\n".to_string(),
            reference_flags,
        )
        .await;
        let first_ms = first_ms();
        let db = pg.pool().await;
        sqlx::query("SELECT prom_api.set_default_chunk_interval('30 minutes')")
            .execute(&db)
            .await
            .unwrap();
        let urls = [connector.url("/write"), reference.url("/api/v1/write")];
        // The first half is compacted into series chunks, the rest stays in the head:
        // queries read both.
        let bodies = requests(&data_set(), first_ms);
        let half = bodies.len() / 2;
        for (n, body) in bodies.into_iter().enumerate() {
            if n == half {
                let stats = crate::maintain(&db).await;
                assert!(stats.samples > 0, "some samples are compacted");
            }
            for url in &urls {
                let (status, text) = crate::remote_write::post(&client, url, body.clone()).await.unwrap();
                assert!(status == 204 || status == 200, "{url}: {status} {text}");
            }
        }
        Loaded {
            pg,
            connector,
            reference,
            client,
            first_ms,
            version,
        }
    }

    /// Runs every query at every case time against the reference and `tested` (a base URL);
    /// fails listing every difference. Gives how many of the reference's answers had warnings
    /// or infos (compared against Prometheus 3 only).
    pub async fn assert_same_answers(&self, tested: &str, queries: &[&str]) -> usize {
        let mut failures = Vec::new();
        let mut compared = 0;
        let mut annotated = 0;
        let annotations = self.version == crate::prometheus::Version::V3;
        for query in queries {
            for (path, params) in cases(query, self.first_ms) {
                compared += 1;
                let (differences, with_annotations) = compare_answers(
                    &self.client,
                    &self.reference.url(""),
                    tested,
                    path,
                    &params,
                    annotations,
                )
                .await;
                failures.extend(differences);
                annotated += usize::from(with_annotations);
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {compared} comparisons differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
        annotated
    }
}

/// Runs one API call against the reference and the tested server (base URLs); describes any
/// difference in status, result type, label sets or values, and with `annotations` in the
/// warnings and infos (each with its position in the query; in any order, as Prometheus lists
/// them).
pub async fn compare(
    client: &reqwest::Client,
    reference: &str,
    tested: &str,
    path: &str,
    params: &[(&str, String)],
    annotations: bool,
) -> Vec<String> {
    compare_answers(client, reference, tested, path, params, annotations)
        .await
        .0
}

/// [`compare`], and whether the reference's answer had warnings or infos.
async fn compare_answers(
    client: &reqwest::Client,
    reference: &str,
    tested: &str,
    path: &str,
    params: &[(&str, String)],
    annotations: bool,
) -> (Vec<String>, bool) {
    let (want_status, want) = get(client, &format!("{reference}{path}"), params).await;
    let (got_status, got) = get(client, &format!("{tested}{path}"), params).await;
    let describe = || format!("{path} {params:?}");
    if want_status != got_status {
        return (
            vec![format!(
                "{}: status {got_status}, reference {want_status}: {got}",
                describe()
            )],
            false,
        );
    }
    if want_status != 200 {
        return (Vec::new(), false);
    }
    let annotated = ["warnings", "infos"]
        .iter()
        .any(|key| want[key].as_array().is_some_and(|a| !a.is_empty()));
    let mut failures = Vec::new();
    for key in ["warnings", "infos"].into_iter().filter(|_| annotations) {
        let (got, want) = (annotations_of(&got, key), annotations_of(&want, key));
        if got != want {
            failures.push(format!("{} {key}:\n  got  {got:?}\n  want {want:?}", describe()));
        }
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
        return (failures, annotated);
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
    (failures, annotated)
}

/// The `key` (`warnings` or `infos`) of an API answer, sorted: Prometheus lists them in no
/// particular order.
pub fn annotations_of(answer: &Value, key: &str) -> Vec<String> {
    let mut messages: Vec<String> = answer[key]
        .as_array()
        .map(|a| a.iter().map(|m| m.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    messages.sort();
    messages
}

/// Instant evaluation times and range-query windows over the data set: aligned and unaligned,
/// in a gap, just after a stale marker.
fn cases(query: &str, first_ms: i64) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let last_ms = first_ms + (POINTS - 1) * STEP_MS;
    let seconds = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let instant_times = [
        last_ms,
        last_ms - 7 * 60_000 - 1_234,
        first_ms + 110 * STEP_MS,
        first_ms + 405 * STEP_MS,
        first_ms + 30 * 60_000 + 500,
    ];
    let ranges = [
        (first_ms + 600_000, last_ms, 60_000),
        (first_ms + 123_456, first_ms + 3_600_000, 47_000),
    ];
    let mut cases: Vec<(&str, Vec<(&str, String)>)> = instant_times
        .iter()
        .map(|&t| {
            (
                "/api/v1/query",
                vec![("query", query.to_string()), ("time", seconds(t))],
            )
        })
        .collect();
    for (start, end, step) in ranges {
        cases.push((
            "/api/v1/query_range",
            vec![
                ("query", query.to_string()),
                ("start", seconds(start)),
                ("end", seconds(end)),
                ("step", seconds(step)),
            ],
        ));
    }
    cases
}
