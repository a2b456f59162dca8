//! Deduplication of a Prometheus HA pair (`--metrics.high-availability`): two real
//! Prometheus servers scrape the same target with the same `cluster` and different
//! `__replica__` external labels; one replica's samples are stored, without the replica
//! label; when the leader is killed the other takes over, and the stored series has neither
//! a gap nor a doubled stretch across the failover.

use std::time::Duration;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::{sum_metric, Prometheus};
use promscale_e2e::wait_for;

fn replica_config(replica: &str, connector_port: u16) -> String {
    format!(
        "global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    cluster: c1
    __replica__: {replica}
scrape_configs:
  - job_name: target
    static_configs:
      - targets: ['127.0.0.1:{connector_port}']
remote_write:
  - url: http://127.0.0.1:{connector_port}/write
    queue_config:
      batch_send_deadline: 200ms
      min_backoff: 50ms
      max_backoff: 500ms
"
    )
}

async fn leader(db: &sqlx::PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT leader FROM prom_info.ha_lease WHERE cluster = 'c1'")
        .fetch_optional(db)
        .await
        .unwrap()
}

async fn connector_metric(connector: &Connector, metric: &str) -> f64 {
    let text = connector.metrics_text().await;
    sum_metric(&text, metric).unwrap_or(0.0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_pair_is_stored_once_and_fails_over_without_a_gap() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--maintenance.interval",
            "0s",
            "--metrics.high-availability",
            "--metrics.ha.lease-timeout",
            "5s",
        ],
    )
    .await;
    let port = connector.port();
    let started = now_ms();
    let mut first = Prometheus::start(|_| replica_config("r1", port), &[]).await;
    wait_for("r1 to take the lease", Duration::from_secs(60), || async {
        (leader(&db).await.as_deref() == Some("r1")).then_some(())
    })
    .await;
    let second = Prometheus::start(|_| replica_config("r2", port), &[]).await;
    wait_for(
        "r2's samples to arrive as a standby's",
        Duration::from_secs(60),
        || async { (connector_metric(&connector, "promscale_ha_standby_samples_total").await > 0.0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        leader(&db).await.as_deref(),
        Some("r1"),
        "the leader keeps its lease while it sends"
    );

    first.kill();
    wait_for("r2 to take over", Duration::from_secs(60), || async {
        (leader(&db).await.as_deref() == Some("r2")).then_some(())
    })
    .await;
    wait_for("r2's kept samples to be written", Duration::from_secs(60), || async {
        (connector_metric(&connector, "promscale_ha_replayed_samples_total").await > 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let until = now_ms() - 1_000;

    // The target's `up` as stored: one series, the cluster label kept, the replica dropped.
    let client = reqwest::Client::new();
    let query = format!("up{{job=\"target\"}}[{}ms]", until - started);
    let response = promscale_e2e::instant_query(&client, &connector.url(""), &query, until).await;
    let result = response["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "one series for the pair: {response}");
    assert_eq!(result[0]["metric"]["cluster"], "c1");
    assert!(
        result[0]["metric"].get("__replica__").is_none(),
        "{}",
        result[0]["metric"]
    );
    let times: Vec<i64> = result[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap() * 1000.0).round() as i64)
        .collect();
    assert!(times.len() >= 10, "{times:?}");
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Scraped every second: without the standby's kept samples the handover would leave a
    // gap of the lease timeout (5 s); two replicas' scrapes interleaved are gaps well under a
    // second, which only the one handover from r1 to r2 may have.
    let missing: Vec<&i64> = gaps.iter().filter(|&&g| g > 3_500).collect();
    assert!(missing.is_empty(), "gaps {missing:?} in {times:?}");
    let doubled = gaps.iter().filter(|&&g| g < 500).count();
    assert!(
        doubled <= 1,
        "{doubled} samples closer than half a scrape interval: {gaps:?}"
    );
    drop(second);
}

/// Migration 17 adds the lease to a database of version 16 in place; then, request by
/// request: the first replica takes the lease, the other's samples are kept aside, and when
/// it sends past the lease it takes over and what it kept since the leader's last sample is
/// written, nothing at or before that sample; the old leader is a standby from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_16_database_takes_leases_and_hands_them_over_at_the_fence() {
    use promscale_connector::storage::migrations::migrate_to;
    use promscale_e2e::remote_write::{encode, post, series};
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 16).await.unwrap();
    promscale_e2e::upgrade::create_series_in_sql(&db, &[("__name__", "old"), ("job", "x")]).await;
    // Turned on through the environment, as the operator does.
    let connector = Connector::spawn_with_env(
        Some(&pg.uri()),
        &["--maintenance.interval", "0s"],
        &[
            ("PROMSCALE_METRICS_HIGH_AVAILABILITY", "true"),
            ("PROMSCALE_METRICS_HA_LEASE_TIMEOUT", "10s"),
        ],
    );
    connector.wait_ready(Duration::from_secs(60)).await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");
    let t0 = promscale_e2e::recent_ms();
    let send = |replica: &'static str, offsets: Vec<i64>, value: f64| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let samples: Vec<(i64, f64)> = offsets.iter().map(|o| (t0 + o, value)).collect();
            let body = encode(vec![
                series(
                    &[("__name__", "up"), ("__replica__", replica), ("cluster", "c1")],
                    &samples,
                ),
                // The replica label alone: not known to be a pair, stored as sent.
                series(&[("__name__", "solo"), ("__replica__", replica)], &samples),
                series(&[("__name__", "single"), ("job", "y")], &samples),
            ]);
            let (status, text) = post(&client, &url, body).await.unwrap();
            assert_eq!(status, 204, "{text}");
        }
    };
    let seconds = |from: i64, to: i64, off: i64| (from..=to).map(|s| s * 1000 + off).collect::<Vec<_>>();
    send("r1", seconds(0, 5, 0), 1.0).await;
    assert_eq!(leader(&db).await.as_deref(), Some("r1"));
    send("r2", seconds(0, 5, 500), 2.0).await;
    send("r2", seconds(6, 14, 500), 2.0).await;
    assert_eq!(
        leader(&db).await.as_deref(),
        Some("r1"),
        "r2 has not gone past r1's lease"
    );
    // Past r1's newest sample (t0 + 5 s) plus 10 s: r2 takes over.
    send("r2", vec![15_500], 2.0).await;
    assert_eq!(leader(&db).await.as_deref(), Some("r2"));
    // What r2 kept is written in the background, then dropped.
    wait_for("r2's kept requests to be written", Duration::from_secs(30), || async {
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.ha_standby WHERE replica = 'r2'")
            .fetch_one(&db)
            .await
            .unwrap();
        (kept == 0).then_some(())
    })
    .await;
    send("r1", vec![16_000], 1.0).await;

    let base = connector.url("");
    let stored = |name: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let response = promscale_e2e::instant_query(&client, &base, &format!("{name}[30s]"), t0 + 20_000).await;
            let result = response["data"]["result"].as_array().unwrap().clone();
            assert_eq!(result.len(), 1, "{name}: {response}");
            let points: Vec<(i64, String)> = result[0]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64 - t0,
                        p[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (result[0]["metric"].clone(), points)
        }
    };
    let mut want: Vec<(i64, String)> = seconds(0, 5, 0).into_iter().map(|o| (o, "1".to_string())).collect();
    want.extend(seconds(5, 15, 500).into_iter().map(|o| (o, "2".to_string())));
    let (labels, points) = stored("up").await;
    assert_eq!(labels, serde_json::json!({"__name__": "up", "cluster": "c1"}));
    assert_eq!(points, want);
    let solo = promscale_e2e::instant_query(
        &client,
        &base,
        "sum by (__replica__) (count_over_time(solo[30s]))",
        t0 + 20_000,
    )
    .await;
    let mut by_replica: Vec<(String, String)> = solo["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["__replica__"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_replica.sort();
    assert_eq!(
        by_replica,
        vec![
            ("r1".to_string(), "7".to_string()),
            ("r2".to_string(), "16".to_string())
        ]
    );
    // Series without the labels are stored as sent, from every request.
    let single = promscale_e2e::instant_query(&client, &base, "count_over_time(single[30s])", t0 + 20_000).await;
    assert_eq!(single["data"]["result"][0]["value"][1], "23", "{single}");
    // The version 16 catalog is intact.
    let (status, old) = promscale_e2e::comparison::get(
        &client,
        &connector.url("/api/v1/series"),
        &[("match[]", "old".to_string())],
    )
    .await;
    assert_eq!((status, old["data"].as_array().map(Vec::len)), (200, Some(1)), "{old}");
}
