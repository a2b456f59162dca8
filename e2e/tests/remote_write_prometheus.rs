//! A real Prometheus (Debian's 2.42, and 3.16 built from the Go module proxy) scrapes itself
//! and the connector and remote-writes into the connector (remote-write 1.0); every sample
//! Prometheus holds must then be in PostgreSQL, bit for bit, with its metadata.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::{Prometheus, Version};
use promscale_e2e::wait_for;
use sqlx::Row;

type Labels = BTreeMap<String, String>;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_prometheus_sends_is_stored_and_visible_through_the_views() {
    every_sample_is_stored(Version::Debian, "prometheus.WriteRequest").await;
}

/// The same from Prometheus 3 (its scrapes of classic metrics over remote-write 1.0, as it
/// sends by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_prometheus_3_sends_is_stored_and_visible_through_the_views() {
    every_sample_is_stored(Version::V3, "prometheus.WriteRequest").await;
}

/// The same from Prometheus 3 sending remote-write 2.0 (`io.prometheus.write.v2.Request`:
/// symbols, label references, metadata with each series, written-count answer headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_prometheus_3_sends_with_remote_write_2_is_stored() {
    every_sample_is_stored(Version::V3, "io.prometheus.write.v2.Request").await;
}

async fn every_sample_is_stored(version: Version, protobuf_message: &str) {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let connector_port = connector.port();
    let prometheus = Prometheus::start_version(
        version,
        |own_port| {
            format!(
                r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ['127.0.0.1:{own_port}']}}]
  - job_name: connector
    static_configs: [{{targets: ['127.0.0.1:{connector_port}']}}]
remote_write:
  - url: http://127.0.0.1:{connector_port}/write
    queue_config: {{batch_send_deadline: 500ms, max_samples_per_send: 500, min_backoff: 100ms}}
    metadata_config: {{send_interval: 1s}}
{protobuf}"#,
                // Prometheus 2.42 knows only 1.0 and has no such setting.
                protobuf = if version == Version::Debian {
                    String::new()
                } else {
                    format!("    protobuf_message: {protobuf_message}\n")
                }
            )
        },
        // Prometheus 3 sends metadata with remote-write 2.0 series only from its WAL.
        if protobuf_message == "io.prometheus.write.v2.Request" {
            &["--enable-feature=metadata-wal-records"]
        } else {
            &[]
        },
    )
    .await;

    // Prometheus applies discovered targets only every 5s, so scrapes start late; wait for
    // six scrapes of each target instead of a fixed time.
    wait_for("six scrapes of each target", Duration::from_secs(60), || async {
        let counts = prometheus
            .query("count_over_time(up[1m])", now_ms() as f64 / 1000.0)
            .await;
        let counts = counts.as_array()?;
        let enough = counts.len() == 2
            && counts
                .iter()
                .all(|c| c["value"][1].as_str().unwrap_or("0").parse::<f64>().unwrap_or(0.0) >= 6.0);
        enough.then_some(())
    })
    .await;
    let window_end_ms = now_ms() - 1_000;
    // Wait until Prometheus has sent everything up to the end of the window.
    wait_for("Prometheus to send the window", Duration::from_secs(60), || async {
        let sent = prometheus
            .own_metric("prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
            .await?;
        (sent * 1000.0 >= window_end_ms as f64 + 1000.0).then_some(())
    })
    .await;

    // Every raw sample Prometheus holds up to the window's end, except stale markers, which
    // the query API never returns.
    let expected = prometheus
        .query(r#"{__name__=~".+"}[10m]"#, window_end_ms as f64 / 1000.0)
        .await;
    let mut from_prometheus: HashMap<(Labels, i64), f64> = HashMap::new();
    for series in expected.as_array().unwrap() {
        let labels: Labels = serde_json::from_value(series["metric"].clone()).unwrap();
        for point in series["values"].as_array().unwrap() {
            let ts = (point[0].as_f64().unwrap() * 1000.0).round() as i64;
            let value: f64 = point[1].as_str().unwrap().parse().unwrap();
            from_prometheus.insert((labels.clone(), ts), value);
        }
    }
    // At least five scrapes of each target take part in the comparison.
    for job in ["prometheus", "connector"] {
        let ups = from_prometheus
            .keys()
            .filter(|(l, _)| l["__name__"] == "up" && l["job"] == job)
            .count();
        assert!(ups >= 5, "only {ups} scrapes of {job} to compare");
    }

    let db = pg.pool().await;
    let stored = stored_samples(&db, window_end_ms).await;
    let mut missing = vec![];
    for ((labels, ts), value) in &from_prometheus {
        match stored.get(&(labels.clone(), *ts)) {
            Some(bits) if *bits == value.to_bits() || (value.is_nan() && f64::from_bits(*bits).is_nan()) => {}
            other => missing.push(format!("{labels:?}@{ts}: prometheus {value}, stored {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} samples missing or different, e.g. {:?}",
        missing.len(),
        from_prometheus.len(),
        &missing[..missing.len().min(5)]
    );
    // Anything stored that Prometheus does not return must be a staleness marker.
    let extra: Vec<_> = stored
        .iter()
        .filter(|(k, bits)| !from_prometheus.contains_key(k) && **bits != 0x7ff0_0000_0000_0002)
        .collect();
    assert!(
        extra.is_empty(),
        "stored samples Prometheus does not have: {:?}",
        &extra[..extra.len().min(5)]
    );

    let failed = prometheus
        .own_metric("prometheus_remote_storage_samples_failed_total")
        .await
        .unwrap();
    assert_eq!(failed, 0.0, "Prometheus reports failed samples");
    let sent = prometheus
        .own_metric("prometheus_remote_storage_samples_total")
        .await
        .unwrap();
    let stored_total = count_all(&db).await;
    assert!(
        sent > 0.0 && stored_total as f64 >= sent * 0.9,
        "Prometheus sent {sent} samples, {stored_total} stored"
    );

    // The SQL surface: one view per metric with a column per label key.
    let rows = sqlx::query("SELECT job, instance, value FROM prom_metric.up ORDER BY time")
        .fetch_all(&db)
        .await
        .unwrap();
    let mut jobs: HashMap<String, String> = HashMap::new();
    for row in &rows {
        assert_eq!(row.get::<f64, _>("value"), 1.0);
        jobs.insert(row.get("job"), row.get("instance"));
    }
    assert_eq!(
        jobs.get("prometheus").map(String::as_str),
        Some(format!("127.0.0.1:{}", prometheus.port()).as_str())
    );
    assert_eq!(
        jobs.get("connector").map(String::as_str),
        Some(format!("127.0.0.1:{connector_port}").as_str())
    );
    let filtered: i64 = sqlx::query_scalar("SELECT count(*) FROM prom_metric.up WHERE job = 'connector'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(filtered > 0 && (filtered as usize) < rows.len());

    let keys: Vec<String> = sqlx::query_scalar("SELECT label_keys FROM prom_info.metric WHERE metric_name = 'up'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(keys, ["__name__", "instance", "job"]);
    let jobs: Vec<String> = sqlx::query_scalar("SELECT values FROM prom_info.label WHERE key = 'job'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(jobs, ["connector", "prometheus"]);

    // Metadata arrives too: a counter Prometheus documents about itself.
    let (kind, help): (String, String) = wait_for("metadata to arrive", Duration::from_secs(30), || async {
        sqlx::query_as(
            "SELECT type, help FROM _prom_catalog.metadata WHERE metric_family = 'prometheus_http_requests_total'",
        )
        .fetch_optional(&db)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(kind, "counter");
    assert!(!help.is_empty());

    // Every request came in the protocol configured.
    let metrics = connector.metrics_text().await;
    let version = if protobuf_message == "io.prometheus.write.v2.Request" {
        "2.0"
    } else {
        "1.0"
    };
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("promscale_ingest_protocol_requests_total"))
        .collect();
    assert!(
        requests.len() == 1 && requests[0].contains(&format!("protocol=\"{version}\"")),
        "{requests:?}"
    );
}

/// Every stored sample up to `until_ms`, keyed by label set and timestamp, value as bits.
async fn stored_samples(db: &sqlx::PgPool, until_ms: i64) -> HashMap<(Labels, i64), u64> {
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name::text FROM _prom_catalog.metric")
        .fetch_all(db)
        .await
        .unwrap();
    let mut out = HashMap::new();
    for table in tables {
        let sql = format!(
            "SELECT (SELECT jsonb_object_agg(l.key, l.value) FROM unnest(s.labels) AS lid
                       JOIN _prom_catalog.label l ON l.id = lid)::text AS labels,
                    (extract(epoch FROM d.time) * 1000)::int8 AS ms, d.value
               FROM prom_data.{} d JOIN _prom_catalog.series s ON s.id = d.series_id
              WHERE d.time <= 'epoch'::timestamptz + $1 * interval '1 millisecond'",
            promscale_connector::storage::samples::quote_ident(&table)
        );
        for row in sqlx::query(&sql).bind(until_ms).fetch_all(db).await.unwrap() {
            let labels: Labels = serde_json::from_str(row.get("labels")).unwrap();
            out.insert((labels, row.get("ms")), row.get::<f64, _>("value").to_bits());
        }
    }
    out
}

async fn count_all(db: &sqlx::PgPool) -> i64 {
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name::text FROM _prom_catalog.metric")
        .fetch_all(db)
        .await
        .unwrap();
    let mut total = 0;
    for table in tables {
        let sql = format!(
            "SELECT count(*) FROM prom_data.{}",
            promscale_connector::storage::samples::quote_ident(&table)
        );
        total += sqlx::query_scalar::<_, i64>(&sql).fetch_one(db).await.unwrap();
    }
    total
}
