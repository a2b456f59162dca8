//! PostgreSQL crashes in the middle of a steady remote-write load and comes back. Every
//! request acknowledged with 2xx must be in the database afterwards; during the outage the
//! connector must answer 5xx (so Prometheus retries), never 4xx (which makes it drop data).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promscale_connector::embedded_db::StopMode;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::wait_for;

static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(promscale_e2e::recent_ms);
const SENDERS: usize = 4;
const SERIES_PER_REQUEST: usize = 10;

/// Request `k` of sender `s`: one sample for each of the sender's series, at a time and with
/// a value that identify the request.
fn request(sender: usize, k: usize) -> Vec<u8> {
    let sender_label = sender.to_string();
    let series_list = (0..SERIES_PER_REQUEST)
        .map(|n| {
            let n = n.to_string();
            series(
                &[("__name__", "outage_probe"), ("n", &n), ("sender", &sender_label)],
                &[(*T0 + k as i64 * 1000, (sender * 1_000_000 + k) as f64)],
            )
        })
        .collect();
    encode(series_list)
}

#[derive(Default)]
struct Outcomes {
    /// (sender, k) -> HTTP status, or 0 for a transport error
    status: BTreeMap<(usize, usize), u16>,
    /// when each acknowledgement arrived
    acked_at: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_samples_survive_a_database_crash_and_writes_resume() {
    let mut pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--db.connection-timeout", "1s"]).await;
    let url = connector.url("/write");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (client, url, outcomes, stop) = (client.clone(), url.clone(), outcomes.clone(), stop.clone());
            tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) && k < 5_000 {
                    let status = post(&client, &url, request(sender, k))
                        .await
                        .map(|(s, _)| s)
                        .unwrap_or(0);
                    {
                        let mut o = outcomes.lock().unwrap();
                        o.status.insert((sender, k), status);
                        if (200..300).contains(&status) {
                            o.acked_at.push(Instant::now());
                        }
                    }
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| pg.stop(StopMode::Immediate));
    let crashed_at = Instant::now();
    let readyz = reqwest::get(connector.url("/readyz")).await.unwrap();
    assert_eq!(readyz.status().as_u16(), 503, "not ready while the database is down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| pg.restart());
    let restarted_at = Instant::now();
    wait_for("writes to be acknowledged again", Duration::from_secs(60), || async {
        let o = outcomes.lock().unwrap();
        (o.acked_at.iter().filter(|t| **t > restarted_at).count() >= SENDERS * 5).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let acked: Vec<_> = outcomes
        .status
        .iter()
        .filter(|(_, s)| (200..300).contains(*s))
        .map(|(k, _)| *k)
        .collect();
    let refused: Vec<_> = outcomes
        .status
        .iter()
        .filter(|(_, s)| !(200..300).contains(*s))
        .collect();
    assert!(
        outcomes.acked_at.iter().any(|t| *t < crashed_at),
        "writes were acknowledged before the crash"
    );
    assert!(!refused.is_empty(), "some writes were refused during the outage");
    assert!(
        refused.iter().all(|(_, s)| (500..600).contains(*s)),
        "during an outage the connector answers 5xx, never 4xx: {refused:?}"
    );

    // Nothing acknowledged was lost.
    let db = pg.pool().await;
    let stored: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT sender, ((extract(epoch FROM time) * 1000)::int8 - $1) / 1000 AS k, count(*)
           FROM prom_metric.outage_probe GROUP BY 1, 2",
    )
    .bind(*T0)
    .fetch_all(&db)
    .await
    .unwrap();
    let stored: BTreeMap<(usize, usize), i64> = stored
        .into_iter()
        .map(|(s, k, n)| ((s.parse().unwrap(), k as usize), n))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|k| stored.get(k) != Some(&(SERIES_PER_REQUEST as i64)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged requests lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );

    // Prometheus retries what was refused; afterwards every sample is stored exactly once.
    for ((sender, k), _) in &refused {
        let (status, text) = post(&client, &url, request(*sender, *k)).await.unwrap();
        assert_eq!(status, 204, "retry of ({sender}, {k}): {text}");
    }
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (series_id, time)) FROM prom_data.outage_probe")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(rows, (outcomes.status.len() * SERIES_PER_REQUEST) as i64);
    assert_eq!(rows, distinct);
}
