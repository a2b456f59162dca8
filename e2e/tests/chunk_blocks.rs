//! Sealed time chunks of small metrics become chunk blocks in a table all metrics share, and
//! their own tables are dropped: every query, the SQL views and the series API answer
//! exactly as before, bit for bit; late samples reopen the chunk (the samples stored first
//! still win) and sealing turns it back into blocks; retention removes the blocks.

use std::collections::BTreeMap;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::{json, maintain};
use sqlx::PgPool;

const STEP_MS: i64 = 15_000;
const HOUR_MS: i64 = 3_600_000;
const CHUNK_MS: i64 = 8 * HOUR_MS;
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// (pod, ms) -> value bits of every sample of `metric`, through its user view.
async fn stored(db: &PgPool, metric: &str) -> BTreeMap<(String, i64), u64> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(&format!(
        "SELECT pod, (extract(epoch FROM time) * 1000)::int8, value FROM prom_metric.{metric}"
    ))
    .fetch_all(db)
    .await
    .unwrap();
    let n = rows.len();
    let map: BTreeMap<_, _> = rows.into_iter().map(|(s, t, v)| ((s, t), v.to_bits())).collect();
    assert_eq!(map.len(), n, "the view shows each sample once");
    map
}

/// (chunks with a table, chunks in blocks only, block rows) of `metric`.
async fn layout(db: &PgPool, metric: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE c.table_name IS NOT NULL),
                count(*) FILTER (WHERE c.id IS NOT NULL AND c.table_name IS NULL),
                (SELECT count(*) FROM _prom_catalog.chunk_block b JOIN _prom_catalog.chunk c2 ON c2.id = b.chunk_id
                  WHERE c2.metric_id = m.id)
           FROM _prom_catalog.metric m LEFT JOIN _prom_catalog.chunk c ON c.metric_id = m.id
          WHERE m.metric_name = $1 GROUP BY m.id",
    )
    .bind(metric)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Tables attached under the metric's parent of series chunks.
async fn chunk_tables(db: &PgPool, metric: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits i
          WHERE i.inhparent = (SELECT format('_prom_compressed.%I', table_name)::regclass
                                 FROM _prom_catalog.metric WHERE metric_name = $1)",
    )
    .bind(metric)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn range_query(client: &reqwest::Client, connector: &Connector, query: &str, start: i64, end: i64) -> String {
    let response = json(client.post(connector.url("/api/v1/query_range")).form(&[
        ("query", query),
        ("start", &format!("{}", start as f64 / 1000.0)),
        ("end", &format!("{}", end as f64 / 1000.0)),
        ("step", "60"),
    ]))
    .await;
    assert_eq!(response["status"], "success", "{query}: {response}");
    response["data"].to_string()
}

async fn series_api(client: &reqwest::Client, connector: &Connector, start: i64, end: i64) -> String {
    let response = json(client.post(connector.url("/api/v1/series")).form(&[
        ("match[]", "{__name__=~\"blk_.*\"}"),
        ("start", &format!("{}", start as f64 / 1000.0)),
        ("end", &format!("{}", end as f64 / 1000.0)),
    ]))
    .await;
    assert_eq!(response["status"], "success", "{response}");
    let mut series: Vec<String> = response["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    series.sort();
    series.join("\n")
}

async fn write(client: &reqwest::Client, connector: &Connector, samples: &[(&str, &str, i64, f64)]) {
    let body = encode(
        samples
            .iter()
            .map(|&(metric, pod, t, v)| series(&[("__name__", metric), ("pod", pod)], &[(t, v)]))
            .collect(),
    );
    let (status, text) = post(client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 204, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_sealed_chunks_become_blocks_and_answer_exactly_as_before() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let client = reqwest::Client::new();
    let now = promscale_e2e::recent_ms();
    // 2.5 hours of samples inside an 8 h chunk that closed more than 90 minutes ago.
    let chunk_end = (now - 2 * HOUR_MS) / CHUNK_MS * CHUNK_MS;
    let start = chunk_end - 3 * HOUR_MS;
    let rounds = 600;
    let end = start + (rounds - 1) * STEP_MS;
    for round in (0..rounds).step_by(50) {
        let mut samples = Vec::new();
        for r in round..(round + 50).min(rounds) {
            let t = start + r * STEP_MS;
            for pod in 0..4 {
                let value = match (r, pod) {
                    (7, 0) => f64::NAN,
                    (9, 2) => f64::from_bits(STALE_NAN),
                    (10, 3) => f64::INFINITY,
                    (11, 3) => 0.1 + 0.2,
                    _ => (r * 10 + pod) as f64 + 0.25,
                };
                samples.push(("blk_gauge", ["p0", "p1", "p2", "p3"][pod as usize], t, value));
            }
            samples.push(("blk_counter", "p0", t, (r * 3) as f64));
        }
        write(&client, &connector, &samples).await;
    }
    let queries = [
        "blk_gauge",
        "sum_over_time(blk_gauge[5m])",
        "rate(blk_counter[5m])",
        "max by (pod) (blk_gauge)",
    ];
    let mut before = vec![];
    for q in queries {
        before.push(range_query(&client, &connector, q, start, end).await);
    }
    let series_before = series_api(&client, &connector, start, end).await;
    assert_eq!(series_before.lines().count(), 5, "{series_before}");
    let view_before = stored(&db, "blk_gauge").await;
    assert_eq!(view_before.len(), 4 * rounds as usize);
    assert_eq!(view_before[&("p2".to_string(), start + 9 * STEP_MS)], STALE_NAN);

    let stats = maintain(&db).await;
    assert_eq!(stats.samples, 5 * rounds as u64);
    assert!(stats.chunks_sealed >= 2 && stats.chunk_blocks_written >= 2, "{stats:?}");
    let (with_table, in_blocks, block_rows) = layout(&db, "blk_gauge").await;
    assert_eq!((with_table, in_blocks), (0, 1), "the sealed chunk keeps no table");
    assert!(block_rows >= 1);
    assert_eq!(chunk_tables(&db, "blk_gauge").await, 0);
    assert_eq!(
        stored(&db, "blk_gauge").await,
        view_before,
        "the view answers as before sealing"
    );
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&range_query(&client, &connector, q, start, end).await, expected, "{q}");
    }
    assert_eq!(series_api(&client, &connector, start, end).await, series_before);

    // Late samples: a new series, a repeat of a stored (series, time) with another value (the
    // stored one wins), and a new time between two stored ones.
    let t5 = start + 5 * STEP_MS;
    write(
        &client,
        &connector,
        &[
            ("blk_gauge", "p9", t5, 9.5),
            ("blk_gauge", "p1", t5, -1.0),
            ("blk_gauge", "p2", t5 + 7_000, 77.0),
        ],
    )
    .await;
    let mut expected = view_before.clone();
    expected.insert(("p9".to_string(), t5), 9.5f64.to_bits());
    expected.insert(("p2".to_string(), t5 + 7_000), 77f64.to_bits());
    assert_eq!(
        stored(&db, "blk_gauge").await,
        expected,
        "late samples are seen before compaction"
    );
    let again = maintain(&db).await;
    assert_eq!((again.samples, again.chunks_sealed), (3, 1), "{again:?}");
    assert_eq!(layout(&db, "blk_gauge").await.0, 0, "sealed back into blocks");
    assert_eq!(chunk_tables(&db, "blk_gauge").await, 0);
    assert_eq!(stored(&db, "blk_gauge").await, expected, "the stored samples still win");
    let p1 = json(client.post(connector.url("/api/v1/query")).form(&[
        ("query", "blk_gauge{pod=\"p1\"}"),
        ("time", &format!("{}", t5 as f64 / 1000.0)),
    ]))
    .await;
    assert_eq!(p1["data"]["result"][0]["value"][1], "51.25", "{p1}");
    // The counter's chunk was sealed once and left alone.
    assert_eq!(
        range_query(&client, &connector, queries[2], start, end).await,
        before[2]
    );

    // Retention drops the chunk with its blocks.
    sqlx::query("SELECT prom_api.set_metric_retention_period('blk_gauge', interval '1 hour')")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(layout(&db, "blk_gauge").await, (0, 0, 0));
    assert!(stored(&db, "blk_gauge").await.is_empty());
    assert_eq!(
        range_query(&client, &connector, "count(blk_counter)", start, end).await,
        before_count(&client, &connector, start, end).await
    );
}

/// `count(blk_counter)` as it stands; the counter is untouched by the gauge's retention.
async fn before_count(client: &reqwest::Client, connector: &Connector, start: i64, end: i64) -> String {
    let answer = range_query(client, connector, "count(blk_counter)", start, end).await;
    assert!(answer.contains("\"1\""), "{answer}");
    answer
}
