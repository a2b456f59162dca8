//! Dashboard query latency: the connector beside Prometheus 2.42 holding the same samples.
//!
//! A day (`--hours`) of counters and histogram buckets every 15 s goes into both through
//! remote write (the connector's compacted into series chunks but for the last hour, as in
//! steady state); then typical Grafana panels (rate, sum by, histogram_quantile) are run as
//! range queries over the last hour (15 s steps), the last day (5 min steps) and, with
//! `--hours 168`, the last week (30 min steps), alternating between the two servers, and the
//! median latencies and their ratio are printed.

use std::time::{Duration, Instant};

use clap::Parser;
use promscale_connector::storage::compaction::CompactionOptions;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::remote_write::post;
use promscale_e2e::remote_write::{encode, series};
use promscale_e2e::workload::Payload;

#[derive(Parser, Debug)]
#[command(about = "PromQL dashboard query latency: connector vs Prometheus on identical data")]
struct Args {
    /// Instances; each has 5 request counters and 8 histogram buckets.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Runs of each query on each server (the median is reported).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
}

const STEP_MS: i64 = 15_000;
const SENDERS: usize = 4;
const ROUNDS_PER_REQUEST: usize = 4;
const BUCKETS: [&str; 8] = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];

/// Labels and per-step increment of every series.
fn series_list(instances: usize) -> Vec<(Vec<(String, String)>, f64)> {
    let mut all = Vec::new();
    for i in 0..instances {
        let instance = format!("host-{i:03}:9100");
        for p in 0..5 {
            let labels = vec![
                ("__name__".to_string(), "http_requests_total".to_string()),
                ("instance".to_string(), instance.clone()),
                ("job".to_string(), "api".to_string()),
                ("path".to_string(), format!("/api/v{p}")),
            ];
            all.push((labels, ((i + p) % 7 + 1) as f64));
        }
        for (b, le) in BUCKETS.iter().enumerate() {
            let labels = vec![
                ("__name__".to_string(), "request_duration_seconds_bucket".to_string()),
                ("instance".to_string(), instance.clone()),
                ("job".to_string(), "api".to_string()),
                ("le".to_string(), le.to_string()),
            ];
            all.push((labels, (b + 1) as f64 * 3.0));
        }
    }
    all
}

/// payload[sender][request]: each sender owns a slice of the series and sends its rounds in
/// time order, as Prometheus' shards do.
fn payload(all: &[(Vec<(String, String)>, f64)], start_ms: i64, rounds: usize) -> Payload {
    let per_sender = all.len().div_ceil(SENDERS);
    all.chunks(per_sender)
        .map(|mine| {
            (0..rounds)
                .step_by(ROUNDS_PER_REQUEST)
                .map(|first| {
                    let last = (first + ROUNDS_PER_REQUEST).min(rounds);
                    let list = mine
                        .iter()
                        .map(|(labels, increment)| {
                            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                            let samples: Vec<(i64, f64)> = (first..last)
                                .map(|r| (start_ms + r as i64 * STEP_MS, r as f64 * increment))
                                .collect();
                            series(&l, &samples)
                        })
                        .collect();
                    vec![encode(list)]
                })
                .collect()
        })
        .collect()
}

/// Sends request i of every sender before any sender's request i + 1: Prometheus refuses
/// samples more than an hour older than the newest it holds, so no sender may run ahead.
async fn send_in_lockstep(
    client: &reqwest::Client,
    url: &str,
    payload: &Payload,
    requests: std::ops::Range<usize>,
) -> Duration {
    let started = Instant::now();
    for i in requests {
        let requests = payload.iter().filter_map(|sender| sender.get(i)).flatten().map(|body| {
            let (client, url, body) = (client.clone(), url.to_string(), body.clone());
            async move {
                let (status, text) = post(&client, &url, body).await.expect("request failed");
                assert!((200..300).contains(&status), "{url} answered {status}: {text}");
            }
        });
        futures::future::join_all(requests).await;
    }
    started.elapsed()
}

async fn time_query(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> (Duration, usize) {
    let started = Instant::now();
    let response = client.get(url).query(params).send().await.expect("query failed");
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("JSON answer");
    assert!(status.is_success(), "{url} {params:?}: {body}");
    let points = body["data"]["result"].as_array().map_or(0, |r| {
        r.iter().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum()
    });
    (started.elapsed(), points)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let all = series_list(args.instances);
    let rounds = (args.hours * 3_600_000 / STEP_MS) as usize;
    let now_ms = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let start_ms = now_ms - rounds as i64 * STEP_MS;
    let end_ms = start_ms + (rounds as i64 - 1) * STEP_MS;
    eprintln!("building {} series x {rounds} samples ...", all.len());
    let payload = payload(&all, start_ms, rounds);

    let pg = TestPostgres::start();
    // Beside Prometheus 2.42, with its rules where Prometheus 3's differ.
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--log.level",
            "warn",
            "--maintenance.interval",
            "0s",
            "--metrics.promql.semantics",
            "prometheus2",
        ],
    )
    .await;
    let prometheus = Prometheus::start(
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
    let samples = (all.len() * rounds) as f64;
    let db = pg.pool().await;
    // As in production: everything but the last hour is compacted into series chunks, the
    // last hour is in the head.
    let requests = payload[0].len();
    let last_hour = requests - (3_600_000 / STEP_MS) as usize / ROUNDS_PER_REQUEST;
    let mut took = send_in_lockstep(&client, &connector.url("/write"), &payload, 0..last_hour).await;
    // Every series is still writing: none is packed (maintenance packs series silent for
    // `--storage.head-age` + 30 minutes; the compacted samples end an hour ago).
    let options = CompactionOptions {
        pack_after: Duration::from_secs(2 * 3600),
        ..CompactionOptions::everything()
    };
    let stats = promscale_e2e::maintain_with(&db, &options).await;
    assert_eq!(stats.series_packed, 0);
    eprintln!("compacted {} samples", stats.samples);
    took += send_in_lockstep(&client, &connector.url("/write"), &payload, last_hour..requests).await;
    eprintln!("connector loaded: {:.0} samples/s", samples / took.as_secs_f64());
    let took = send_in_lockstep(&client, &prometheus.url("/api/v1/write"), &payload, 0..requests).await;
    eprintln!("prometheus loaded: {:.0} samples/s", samples / took.as_secs_f64());
    sqlx::query("VACUUM ANALYZE").execute(&db).await.unwrap();

    let queries = [
        "rate(http_requests_total[5m])",
        "sum by (instance) (rate(http_requests_total[5m]))",
        "sum(rate(http_requests_total{path=\"/api/v1\"}[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.9, sum by (instance, le) (rate(request_duration_seconds_bucket[5m])))",
    ];
    // Grafana's usual steps: 15 s over an hour, 5 min over a day, 30 min over a week. A
    // window is run when the data covers it (the longest one ends 10 min short of the data).
    let mut windows = vec![("1h", 3_600_000i64, 15_000i64)];
    if args.hours >= 24 {
        windows.push(("24h", 24 * 3_600_000 - 600_000, 300_000));
    }
    if args.hours >= 168 {
        windows.push(("7d", 168 * 3_600_000 - 600_000, 1_800_000));
    }
    println!(
        "\nquery latency, median of {} runs: {} series, {} h at 15 s ({} samples)",
        args.repetitions,
        all.len(),
        args.hours,
        all.len() * rounds
    );
    println!(
        "{:<92} {:>6} {:>11} {:>11} {:>7}",
        "query", "window", "connector", "prometheus", "ratio"
    );
    let mut ratios = Vec::new();
    for (window, length, step) in windows {
        for query in queries {
            let params = [
                ("query", query.to_string()),
                ("start", format!("{}", (end_ms - length) as f64 / 1000.0)),
                ("end", format!("{}", end_ms as f64 / 1000.0)),
                ("step", format!("{}", step as f64 / 1000.0)),
            ];
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let mut points = (0, 0);
            for _ in 0..args.repetitions {
                let (d, p) = time_query(&client, &connector.url("/api/v1/query_range"), &params).await;
                ours.push(d);
                points.0 = p;
                let (d, p) = time_query(&client, &prometheus.url("/api/v1/query_range"), &params).await;
                theirs.push(d);
                points.1 = p;
            }
            assert_eq!(points.0, points.1, "{query}: both answer with as many points");
            let (ours, theirs) = (median(ours), median(theirs));
            let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
            ratios.push(ratio);
            println!(
                "{query:<92} {window:>6} {:>9.1}ms {:>9.1}ms {ratio:>6.1}x",
                ours.as_secs_f64() * 1000.0,
                theirs.as_secs_f64() * 1000.0
            );
        }
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("geometric mean latency ratio (connector / prometheus): {geomean:.1}x");
}
