//! Exemplars: what a real Prometheus 3 scrapes with exemplars and sends (remote write 1.0
//! and 2.0, `send_exemplars: true`) is stored and answered by `/api/v1/query_exemplars`
//! exactly as that Prometheus answers; SQL users see them in `prom_info.exemplar`;
//! maintenance keeps at most `--exemplars.max-per-series` of each series.

use promscale_connector::storage::compaction::CompactionOptions;
use promscale_e2e::comparison::get;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::target::StaticTarget;
use serde_json::Value;

/// An OpenMetrics exposition with exemplars on histogram buckets and on a counter (times
/// left out: Prometheus gives them the scrape's).
const EXPOSITION: &str = r#"# TYPE request_latency_seconds histogram
# HELP request_latency_seconds Latency of requests.
request_latency_seconds_bucket{le="0.1"} 5 # {trace_id="a1b2"} 0.05
request_latency_seconds_bucket{le="1.0"} 8 # {trace_id="c3d4",span_id="e5"} 0.5
request_latency_seconds_bucket{le="+Inf"} 9
request_latency_seconds_sum 3.2
request_latency_seconds_count 9
# TYPE jobs counter
jobs_total{"service.name"="checkout"} 42 # {trace_id="f6"} 1.0
# EOF
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_prometheus_3_sends_with_remote_write_1_are_answered_as_it_answers() {
    exemplars_arrive("prometheus.WriteRequest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_prometheus_3_sends_with_remote_write_2_are_answered_as_it_answers() {
    exemplars_arrive("io.prometheus.write.v2.Request").await;
}

/// A `query_exemplars` answer in a canonical order: series by labels, exemplars by time.
fn canonical(data: &Value) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = data
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|s| {
            let mut exemplars: Vec<String> = s["exemplars"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
                .collect();
            exemplars.sort();
            (s["seriesLabels"].to_string(), exemplars)
        })
        .collect();
    out.sort();
    out
}

async fn exemplars_arrive(protobuf_message: &str) {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let target = StaticTarget::start("application/openmetrics-text; version=1.0.0; charset=utf-8", EXPOSITION).await;
    let connector_port = connector.port();
    let target_address = target.address();
    let prometheus = Prometheus::start_v3(
        |_| {
            format!(
                r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: exemplars
    static_configs: [{{targets: ['{target_address}']}}]
remote_write:
  - url: http://127.0.0.1:{connector_port}/write
    send_exemplars: true
    protobuf_message: {protobuf_message}
    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_shards: 1}}
"#
            )
        },
        &["--enable-feature=exemplar-storage,promql-duration-expr"],
    )
    .await;
    let last = prometheus.last_scrape_sent("exemplars").await;
    let (start, end) = (last - 30.0, last + 0.5);

    let client = reqwest::Client::new();
    // The last query starts 300,000 years ago: beyond what PostgreSQL can hold, which is no
    // reason for an error.
    for (query, start) in [
        ("request_latency_seconds_bucket", format!("{start:.3}")),
        (
            r#"rate(request_latency_seconds_bucket{le="1.0"}[1m]) + on() group_left sum({"jobs_total"})"#,
            format!("{start:.3}"),
        ),
        (
            r#"{__name__=~"request_latency_seconds_bucket|jobs_total"}"#,
            format!("{start:.3}"),
        ),
        ("request_latency_seconds_bucket", "-9999999999999".to_string()),
        // A duration expression, as a Grafana panel of Prometheus 3 may hold one.
        (
            r#"rate(request_latency_seconds_bucket[30s+30s])"#,
            format!("{start:.3}"),
        ),
    ] {
        let params = [
            ("query", query.to_string()),
            ("start", start),
            ("end", format!("{end:.3}")),
        ];
        let (want_status, want) = get(&client, &prometheus.url("/api/v1/query_exemplars"), &params).await;
        let (got_status, got) = get(&client, &connector.url("/api/v1/query_exemplars"), &params).await;
        assert_eq!((want_status, got_status), (200, 200), "{query}: {want} / {got}");
        let want = canonical(&want["data"]);
        // Prometheus keeps an exemplar seen again (same labels and value) once.
        assert!(
            want.len() >= 2,
            "{query}: Prometheus holds exemplars to compare: {want:?}"
        );
        assert_eq!(canonical(&got["data"]), want, "{query}");
    }
    for failed in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_exemplars_failed_total",
    ] {
        assert_eq!(prometheus.own_metric(failed).await.unwrap_or(0.0), 0.0, "{failed}");
    }

    // SQL users see them with their series' labels.
    let db = pg.pool().await;
    let traces: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT exemplar_labels->>'trace_id' FROM prom_info.exemplar
          WHERE metric_name = 'request_latency_seconds_bucket' AND series_labels->>'le' = '1.0'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(traces, ["c3d4"]);

    // Maintenance keeps the newest of each series, as many as configured: five exemplars of
    // one series sent directly, three of them with labels Prometheus would refuse (over 128
    // characters), which are left out and not counted as written.
    let mut series = promscale_e2e::remote_write::series(&[("__name__", "trimmed_total")], &[(last_ms(last), 1.0)]);
    series.exemplars = (0..5)
        .map(|i| promscale_connector::prompb::Exemplar {
            labels: vec![promscale_connector::prompb::Label {
                name: "trace_id".into(),
                value: if i < 3 { format!("t{i}") } else { "x".repeat(200) }.into(),
            }],
            value: i as f64,
            timestamp: last_ms(last) - 1000 * (5 - i),
        })
        .collect();
    let body = promscale_e2e::remote_write::encode(vec![series.clone()]);
    let (status, text) = promscale_e2e::remote_write::post(&client, &connector.url("/write"), body)
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    let (_, written, _) = promscale_e2e::remote_write::post_v2(
        &client,
        &connector.url("/write"),
        promscale_e2e::remote_write::encode_v2(vec![series], None),
    )
    .await
    .unwrap();
    assert_eq!(
        written,
        [Some(1), Some(0), Some(3)],
        "3 valid exemplars accepted (stored once)"
    );
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT exemplar_labels->>'trace_id' FROM prom_info.exemplar WHERE metric_name = 'trimmed_total' ORDER BY time",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(stored, ["t0", "t1", "t2"]);
    promscale_e2e::maintain_with(
        &db,
        &CompactionOptions {
            exemplars_per_series: 2,
            ..CompactionOptions::everything()
        },
    )
    .await;
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT exemplar_labels->>'trace_id' FROM prom_info.exemplar WHERE metric_name = 'trimmed_total' ORDER BY time",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(stored, ["t1", "t2"], "the two newest are kept");
    let per_series: Vec<i64> = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.exemplar GROUP BY series_id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert!(per_series.iter().all(|&n| n <= 2), "{per_series:?}");
}

fn last_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// Migration 10 upgrades a database of version 9 in place: a series version 9 created gets
/// the exemplars sent for it, under its own id, and SQL users see them with its labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_9_database_is_upgraded_and_its_series_get_exemplars() {
    use promscale_connector::storage::migrations::migrate_to;
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 9).await.unwrap();
    let old_id = promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "old_total"), ("k", "a")]).await;
    let connector = promscale_e2e::upgrade::upgraded_by_a_connector(&pg, &db).await;
    let t = promscale_e2e::recent_ms();
    let mut series = promscale_e2e::remote_write::series(&[("__name__", "old_total"), ("k", "a")], &[(t, 1.0)]);
    series.exemplars.push(promscale_connector::prompb::Exemplar {
        labels: vec![promscale_connector::prompb::Label {
            name: "trace_id".into(),
            value: "upgraded".into(),
        }],
        value: 0.5,
        timestamp: t,
    });
    let client = reqwest::Client::new();
    let (status, text) = promscale_e2e::remote_write::post(
        &client,
        &connector.url("/write"),
        promscale_e2e::remote_write::encode(vec![series]),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    let (series_id, k, trace): (i64, String, String) = sqlx::query_as(
        "SELECT series_id, series_labels->>'k', exemplar_labels->>'trace_id' FROM prom_info.exemplar WHERE metric_name = 'old_total'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((series_id, k.as_str(), trace.as_str()), (old_id, "a", "upgraded"));
}
