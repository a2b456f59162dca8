//! Nothing acknowledged is lost and nothing is stored twice when the connector is killed
//! mid-stream (`kill -9`) or compaction is cut off midway.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use promscale_connector::storage::compaction::CompactionOptions;
use promscale_connector::storage::maintenance::run_once;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::{maintain, recent_ms};
use sqlx::PgPool;

/// (series label, ms, value) of every sample of the metric, and how many rows the view has.
async fn stored(db: &PgPool, metric: &str) -> (BTreeSet<(String, i64, u64)>, usize) {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(&format!(
        "SELECT s, (extract(epoch FROM time) * 1000)::int8, value FROM prom_metric.{metric}"
    ))
    .fetch_all(db)
    .await
    .unwrap();
    let n = rows.len();
    (rows.into_iter().map(|(s, t, v)| (s, t, v.to_bits())).collect(), n)
}

/// Request `r` of sender `s`: 50 series, 4 samples each.
fn request(s: usize, r: usize, start: i64) -> (Vec<u8>, Vec<(String, i64, u64)>) {
    let mut samples = Vec::new();
    let list = (0..50)
        .map(|k| {
            let label = format!("{s}-{k}");
            let points: Vec<(i64, f64)> = (0..4)
                .map(|i| (start + (r * 4 + i) as i64 * 1_000, (r * 4 + i) as f64 + k as f64 / 10.0))
                .collect();
            samples.extend(points.iter().map(|&(t, v)| (label.clone(), t, v.to_bits())));
            series(&[("__name__", "killed"), ("s", &label)], &points)
        })
        .collect();
    (encode(list), samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_killed_mid_stream_loses_no_acknowledged_sample_and_retries_store_once() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let mut connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let start = recent_ms();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let client = reqwest::Client::new();
    // Four senders, each sending its requests in order until the connector goes away.
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let (client, url, acknowledged) = (client.clone(), connector.url("/write"), acknowledged.clone());
            tokio::spawn(async move {
                for r in 0..10_000 {
                    let (body, samples) = request(s, r, start);
                    match post(&client, &url, body).await {
                        Ok((204, _)) => acknowledged.lock().unwrap().extend(samples),
                        _ => return r,
                    }
                }
                10_000
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    connector.kill();
    let mut reached = Vec::new();
    for s in senders {
        reached.push(s.await.unwrap());
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty() && reached.iter().all(|&r| r < 10_000),
        "killed mid-stream: {reached:?}"
    );
    let (after_kill, rows) = stored(&db, "killed").await;
    assert!(
        after_kill.is_superset(&acknowledged),
        "every acknowledged sample is stored"
    );
    assert_eq!(rows, after_kill.len(), "none twice");

    // A new connector; the senders resend from their last acknowledged request, as
    // Prometheus does, so some samples arrive again.
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let mut all = BTreeSet::new();
    for (s, &last) in reached.iter().enumerate() {
        for r in 0..=last {
            let (body, samples) = request(s, r, start);
            all.extend(samples);
            if r + 2 >= last {
                assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
            }
        }
    }
    let (resent, rows) = stored(&db, "killed").await;
    assert_eq!(resent, all, "everything sent is stored");
    assert_eq!(rows, all.len(), "and once");
    maintain(&db).await;
    let (compacted, rows) = stored(&db, "killed").await;
    assert_eq!((compacted, rows), (all.clone(), all.len()), "the same after compaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_cut_off_midway_loses_nothing_and_stores_nothing_twice() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    // Fifteen metrics of ten days: compaction creates hundreds of chunk tables.
    let end = recent_ms();
    for m in 0..15 {
        let samples: Vec<(i64, f64)> = (0..240).map(|h| (end - h * 3_600_000, h as f64)).rev().collect();
        let body = encode(vec![
            series(&[("__name__", &format!("cut_{m}")), ("s", "a")], &samples),
            series(&[("__name__", &format!("cut_{m}")), ("s", "b")], &samples),
        ]);
        assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    }
    let mut before = Vec::new();
    for m in 0..15 {
        before.push(stored(&db, &format!("cut_{m}")).await);
    }
    let head = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _prom_catalog.head")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let initial = head().await;
    assert_eq!(initial, 15);

    let compaction = {
        let db = db.clone();
        tokio::spawn(async move { run_once(&db, &CompactionOptions::everything()).await })
    };
    // Cut every other session off once part of the head is compacted.
    promscale_e2e::wait_for("compaction to be under way", Duration::from_secs(60), || async {
        let left = head().await;
        (left < initial).then_some(())
    })
    .await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(cut > 0);
    let outcome = compaction.await.unwrap();
    let left = head().await;
    assert!(
        outcome.is_err() && left > 0,
        "compaction was cut off midway ({left} head rows left)"
    );
    for (m, expected) in before.iter().enumerate() {
        assert_eq!(
            &stored(&db, &format!("cut_{m}")).await,
            expected,
            "cut_{m} after the cut"
        );
    }
    // The next run finishes the job.
    maintain(&db).await;
    assert_eq!(head().await, 0);
    for (m, expected) in before.iter().enumerate() {
        assert_eq!(
            &stored(&db, &format!("cut_{m}")).await,
            expected,
            "cut_{m} after compaction"
        );
    }
}
