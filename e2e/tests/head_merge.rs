//! Small head rows (a metric with a few samples per write batch) are merged by maintenance
//! before compaction, and by a light pass between maintenance runs: the head then takes a fraction of the space, and every query answers
//! exactly as before, repeats included (the sample written first still wins).

use std::collections::BTreeMap;

use promscale_connector::storage::compaction::CompactionOptions;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::{maintain, maintain_with, recent_ms};
use sqlx::PgPool;

const STEP_MS: i64 = 15_000;

/// (series label, ms) -> value bits of every sample, through the user view.
async fn stored(db: &PgPool) -> BTreeMap<(String, i64), u64> {
    promscale_e2e::view_samples(db, "merge_gauge", "pod").await
}

async fn head_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.head")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn head_bytes(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(pg_column_size(h.*)), 0)::int8 FROM _prom_catalog.head h")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn range_query(client: &reqwest::Client, connector: &Connector, query: &str, start: i64, end: i64) -> String {
    promscale_e2e::query_range(client, &connector.url(""), query, start, end, 15).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_head_rows_are_merged_and_every_query_answers_as_before() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let client = reqwest::Client::new();
    let start = recent_ms() - 40 * STEP_MS;
    // 40 requests of one sample for each of 3 series: 40 head rows of 3 samples. Request 20
    // sends round 5 again with other values, and a NaN and a -0 go in on the way: the first
    // written value of a (series, time) must stay the one every read returns.
    let mut requests = Vec::new();
    for round in 0..40 {
        let t = start + round as i64 * STEP_MS;
        requests.push(
            (0..3)
                .map(|pod| {
                    let value = match (round, pod) {
                        (7, 0) => f64::NAN,
                        (8, 1) => -0.0,
                        _ => (round * 10 + pod) as f64 + 0.25,
                    };
                    (pod, t, value)
                })
                .collect::<Vec<_>>(),
        );
        if round == 20 {
            let t5 = start + 5 * STEP_MS;
            requests.push((0..3).map(|pod| (pod, t5, -1.0 - pod as f64)).collect());
        }
    }
    for samples in &requests {
        let body = encode(
            samples
                .iter()
                .map(|&(pod, t, v)| series(&[("__name__", "merge_gauge"), ("pod", &format!("p{pod}"))], &[(t, v)]))
                .collect(),
        );
        let (status, text) = post(&client, &connector.url("/write"), body).await.unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let end = start + 39 * STEP_MS;
    let queries = [
        "merge_gauge",
        "sum_over_time(merge_gauge[2m])",
        "max by (pod) (merge_gauge)",
    ];
    let mut before = vec![];
    for q in queries {
        before.push(range_query(&client, &connector, q, start, end).await);
    }
    let view_before = stored(&db).await;
    assert_eq!(view_before.len(), 120);
    assert_eq!(
        view_before[&("p1".to_string(), start + 5 * STEP_MS)],
        (51.25f64).to_bits()
    );
    let rows_before = head_rows(&db).await;
    let bytes_before = head_bytes(&db).await;
    assert_eq!(rows_before, 41);

    let stats = maintain_with(&db, &CompactionOptions::merge_only()).await;
    assert_eq!(
        (stats.head_rows_merged, stats.merged_rows_written, stats.samples),
        (41, 1, 0)
    );
    let rows_after = head_rows(&db).await;
    let bytes_after = head_bytes(&db).await;
    assert_eq!(rows_after, 1);
    assert!(
        bytes_after * 5 < bytes_before,
        "the merged head takes {bytes_after} bytes, the rows it replaced {bytes_before}"
    );
    assert_eq!(stored(&db).await, view_before, "the view answers as before the merge");
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&range_query(&client, &connector, q, start, end).await, expected, "{q}");
    }

    // A second pass finds nothing more to merge; later writes of a merged (series, time)
    // lose against it; compaction then keeps what the merged row holds.
    let body = encode(vec![series(
        &[("__name__", "merge_gauge"), ("pod", "p2")],
        &[(start + 30 * STEP_MS, 999.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    let again = maintain_with(&db, &CompactionOptions::merge_only()).await;
    assert_eq!(again.head_rows_merged, 0, "two rows are not worth merging");
    assert_eq!(stored(&db).await, view_before);
    let compacted = maintain(&db).await;
    assert_eq!(compacted.samples, 121);
    assert_eq!(
        stored(&db).await,
        view_before,
        "compaction keeps what the merged row held"
    );
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&range_query(&client, &connector, q, start, end).await, expected, "{q}");
    }
}

/// Rows of 1,000 samples or more stay as they are; the runs of small rows around one are
/// merged each on its own side, and a later small row repeating a time of the big one still
/// loses against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_head_rows_stay_and_the_small_ones_around_them_merge_on_their_side() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let client = reqwest::Client::new();
    let start = recent_ms() - 3_000_000;
    let write = |points: Vec<(i64, f64)>| {
        let (client, url) = (client.clone(), connector.url("/write"));
        async move {
            let body = encode(vec![series(&[("__name__", "merge_gauge"), ("pod", "p0")], &points)]);
            let (status, text) = post(&client, &url, body).await.unwrap();
            assert_eq!(status, 204, "{text}");
        }
    };
    for i in 0..5 {
        write(vec![(start + i * 1000, i as f64)]).await;
    }
    write((5..1205).map(|i| (start + i * 1000, i as f64)).collect()).await;
    for i in 0..10 {
        // The first five repeat times of the big row with other values.
        let t = if i < 5 {
            start + (100 + i) * 1000
        } else {
            start + (1300 + i) * 1000
        };
        write(vec![(t, -1.0 - i as f64)]).await;
    }
    let before = stored(&db).await;
    assert_eq!(before.len(), 5 + 1200 + 5);
    assert_eq!(before[&("p0".to_string(), start + 100_000)], 100f64.to_bits());
    let big_id: i64 = sqlx::query_scalar("SELECT id FROM _prom_catalog.head WHERE samples = 1200")
        .fetch_one(&db)
        .await
        .unwrap();

    let stats = maintain_with(&db, &CompactionOptions::merge_only()).await;
    assert_eq!((stats.head_rows_merged, stats.merged_rows_written), (15, 2));
    let rows: Vec<(i64, i32)> = sqlx::query_as("SELECT id, samples FROM _prom_catalog.head ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[1], (big_id, 1200), "the big row is left as it was");
    assert_eq!((rows[0].1, rows[2].1), (5, 10));
    assert_eq!(stored(&db).await, before);
    maintain(&db).await;
    assert_eq!(stored(&db).await, before);
}

/// Rows of a metric in the head.
async fn rows_of(db: &PgPool, metric: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.head h JOIN _prom_catalog.metric m ON m.id = h.metric_id
          WHERE m.metric_name = $1",
    )
    .bind(metric)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Between maintenance runs (here an hour apart), the light pass merges the small rows of the
/// last interval (`--maintenance.merge-interval`), and leaves alone rows big enough already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rows_are_merged_between_maintenance_runs() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(
        &pg.uri(),
        &["--maintenance.interval", "1h", "--maintenance.merge-interval", "1s"],
    )
    .await;
    let client = reqwest::Client::new();
    let start = recent_ms() - 10 * STEP_MS;
    // 8 requests, one at a time: each a row of 3 samples of `sparse_gauge` and a row of 300
    // of `dense_gauge` (at least LIGHT_MERGE_BELOW_SAMPLES: not merged by the light pass).
    for round in 0..8 {
        let t = start + round * STEP_MS;
        let mut list = Vec::new();
        for pod in 0..3 {
            let p = format!("p{pod}");
            list.push(series(
                &[("__name__", "sparse_gauge"), ("pod", &p)],
                &[(t, (round * 10 + pod) as f64)],
            ));
        }
        for pod in 0..300 {
            let p = format!("p{pod}");
            list.push(series(&[("__name__", "dense_gauge"), ("pod", &p)], &[(t, pod as f64)]));
        }
        let (status, text) = post(&client, &connector.url("/write"), encode(list)).await.unwrap();
        assert_eq!(status, 204, "{text}");
    }
    // As if written two minutes ago: the light pass merges no row younger than a minute.
    sqlx::query("UPDATE _prom_catalog.head SET written_at = written_at - interval '2 minutes'")
        .execute(&db)
        .await
        .unwrap();
    promscale_e2e::wait_for(
        "the light pass to merge sparse_gauge's rows",
        std::time::Duration::from_secs(30),
        || {
            let db = db.clone();
            async move { (rows_of(&db, "sparse_gauge").await <= 2).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        rows_of(&db, "dense_gauge").await,
        8,
        "rows of 300 samples stay as written"
    );
    let samples = promscale_e2e::view_samples(&db, "sparse_gauge", "pod").await;
    let expected: BTreeMap<(String, i64), u64> = (0..8)
        .flat_map(|round| {
            (0..3).map(move |pod| {
                (
                    (format!("p{pod}"), start + round * STEP_MS),
                    ((round * 10 + pod) as f64).to_bits(),
                )
            })
        })
        .collect();
    assert_eq!(samples, expected, "every sample, once, through the view");
    let answer = range_query(&client, &connector, "sum(sparse_gauge)", start, start + 7 * STEP_MS).await;
    let sums: Vec<String> = (0..8).map(|round| format!("\"{}\"", round * 30 + 3)).collect();
    for sum in &sums {
        assert!(answer.contains(sum.as_str()), "{sum} in {answer}");
    }
}
