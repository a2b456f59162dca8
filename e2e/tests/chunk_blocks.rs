//! Sealed time chunks of small metrics become chunk blocks in a table all metrics share, and
//! their own tables are dropped: every query, the SQL views and the series API answer
//! exactly as before, bit for bit; late samples reopen the chunk (the samples stored first
//! still win) and sealing turns it back into blocks; retention removes the blocks.

use std::collections::BTreeMap;

use promscale_connector::storage::codec::run_sizes;
use promscale_connector::storage::compaction::CompactionOptions;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, incompressible_value as raw_value, post, series};
use promscale_e2e::{json, maintain, maintain_with};
use sqlx::PgPool;

const STEP_MS: i64 = 15_000;
const HOUR_MS: i64 = 3_600_000;
const CHUNK_MS: i64 = 8 * HOUR_MS;
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// (pod, ms) -> value bits of every sample of `metric`, through its user view.
async fn stored(db: &PgPool, metric: &str) -> BTreeMap<(String, i64), u64> {
    promscale_e2e::view_samples(db, metric, "pod").await
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

/// Compaction of the whole head, sealing nothing.
fn compact_only() -> CompactionOptions {
    CompactionOptions {
        seal_after: std::time::Duration::from_secs(100 * 365 * 86_400),
        ..CompactionOptions::everything()
    }
}

/// Runs of each series in the blocks of `metric`'s chunks: series -> runs.
async fn runs_per_series(db: &PgPool, metric: &str) -> BTreeMap<i64, usize> {
    let blocks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT b.data FROM _prom_catalog.chunk_block b JOIN _prom_catalog.chunk c ON c.id = b.chunk_id
          JOIN _prom_catalog.metric m ON m.id = c.metric_id WHERE m.metric_name = $1",
    )
    .bind(metric)
    .fetch_all(db)
    .await
    .unwrap();
    let mut runs = BTreeMap::new();
    for data in blocks {
        for run in run_sizes(&data).unwrap() {
            *runs.entry(run.series).or_default() += 1;
        }
    }
    runs
}

async fn instant(client: &reqwest::Client, connector: &Connector, query: &str, t: i64) -> String {
    let answer = json(
        client
            .post(connector.url("/api/v1/query"))
            .form(&[("query", query), ("time", &format!("{}", t as f64 / 1000.0))]),
    )
    .await;
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

async fn range_query(client: &reqwest::Client, connector: &Connector, query: &str, start: i64, end: i64) -> String {
    promscale_e2e::query_range(client, &connector.url(""), query, start, end, 60).await
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
    let t5 = start + 5 * STEP_MS;
    for round in (0..rounds).step_by(50) {
        if round == 300 {
            // Half the samples compacted into blocks; the other half lands in blocks of a
            // second compaction, with a repeat of a stored (series, time) of another value.
            maintain_with(&db, &compact_only()).await;
            write(&client, &connector, &[("blk_gauge", "p1", t5, -1.0)]).await;
        }
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
    assert_eq!(
        view_before[&("p1".to_string(), t5)],
        51.25f64.to_bits(),
        "the stored value wins"
    );
    assert_eq!(instant(&client, &connector, "blk_gauge{pod=\"p1\"}", t5).await, "51.25");

    // The second half compacted: two compactions' blocks, no table.
    let compacted = maintain_with(&db, &compact_only()).await;
    assert_eq!(compacted.samples, 5 * (rounds as u64 - 300) + 1);
    assert_eq!((compacted.series_chunks_written, compacted.chunks_sealed), (0, 0));
    assert_eq!(layout(&db, "blk_gauge").await.0, 0, "a small chunk has no table");
    assert!(runs_per_series(&db, "blk_gauge").await.values().all(|&n| n == 2));
    assert_eq!(
        instant(&client, &connector, "blk_gauge{pod=\"p1\"}", t5).await,
        "51.25",
        "the block written first wins"
    );
    assert_eq!(stored(&db, "blk_gauge").await, view_before);
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&range_query(&client, &connector, q, start, end).await, expected, "{q}");
    }

    // Sealing packs them: one run per series.
    let stats = maintain(&db).await;
    assert_eq!(stats.samples, 0);
    assert!(stats.chunks_sealed >= 2 && stats.chunk_blocks_written >= 2, "{stats:?}");
    let (with_table, in_blocks, block_rows) = layout(&db, "blk_gauge").await;
    assert_eq!((with_table, in_blocks), (0, 1), "the sealed chunk keeps no table");
    assert_eq!(block_rows, 1, "4 series of 600 samples fill less than a page");
    assert_eq!(
        runs_per_series(&db, "blk_gauge")
            .await
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![1; 4]
    );
    assert_eq!(chunk_tables(&db, "blk_gauge").await, 0);
    assert_eq!(instant(&client, &connector, "blk_gauge{pod=\"p1\"}", t5).await, "51.25");
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

    // Retention drops the chunk with its blocks, and leaves the other metric alone.
    let counter_before = range_query(&client, &connector, "count(blk_counter)", start, end).await;
    assert!(counter_before.contains("\"1\""), "{counter_before}");
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
        counter_before
    );
}

/// A chunk that outgrows the blocks gets a table: what compaction writes from then on goes
/// there, the blocks keep precedence (a repeat in the table loses to them), and sealing
/// rewrites blocks and series chunks into one series chunk per series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_past_a_mebibyte_moves_to_a_table_and_keeps_precedence() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let client = reqwest::Client::new();
    let now = promscale_e2e::recent_ms();
    let chunk_end = (now - 2 * HOUR_MS) / CHUNK_MS * CHUNK_MS;
    let start = chunk_end - 7 * HOUR_MS;
    let series_count = 100;
    let write_rounds = |from: i64, to: i64| {
        let client = client.clone();
        let url = connector.url("/write");
        async move {
            for first in (from..to).step_by(20) {
                let body = encode(
                    (0..series_count)
                        .map(|s| {
                            let samples: Vec<(i64, f64)> = (first..(first + 20).min(to))
                                .map(|r| (start + r * STEP_MS, raw_value(s, r)))
                                .collect();
                            series(&[("__name__", "big_raw"), ("pod", &format!("p{s}"))], &samples)
                        })
                        .collect(),
                );
                let (status, text) = post(&client, &url, body).await.unwrap();
                assert_eq!(status, 204, "{text}");
            }
        }
    };
    // 800 rounds: 80,000 raw values, 640 kB: blocks.
    write_rounds(0, 800).await;
    maintain_with(&db, &compact_only()).await;
    assert_eq!(layout(&db, "big_raw").await.0, 0);
    // 600 more and a repeat of a stored time: past 1 MiB, into a table.
    write_rounds(800, 1400).await;
    let t10 = start + 10 * STEP_MS;
    let body = encode(vec![series(&[("__name__", "big_raw"), ("pod", "p3")], &[(t10, 7.0)])]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    let stats = maintain_with(&db, &compact_only()).await;
    assert!(stats.series_chunks_written >= 100, "{stats:?}");
    let (with_table, _, block_rows) = layout(&db, "big_raw").await;
    assert_eq!(with_table, 1, "the chunk got a table");
    assert!(block_rows > 0, "and kept its blocks");
    assert_eq!(chunk_tables(&db, "big_raw").await, 1);
    let original = raw_value(3, 10);
    let kept = instant(&client, &connector, "big_raw{pod=\"p3\"}", t10).await;
    assert_eq!(
        kept.parse::<f64>().unwrap(),
        original,
        "the block's value wins over the table's"
    );
    let view_count: i64 = sqlx::query_scalar("SELECT count(*) FROM prom_metric.big_raw")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(view_count, 1400 * series_count);
    let p3: f64 = sqlx::query_scalar(
        "SELECT value FROM prom_metric.big_raw WHERE pod = 'p3' AND time = to_timestamp($1 / 1000.0)",
    )
    .bind(t10 as f64)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(p3.to_bits(), original.to_bits(), "the view agrees");
    let before = range_query(&client, &connector, "big_raw", start, start + 1399 * STEP_MS).await;

    // Sealing: blocks merged into the table, one series chunk per series (split to fit).
    let sealed = maintain(&db).await;
    assert!(sealed.chunks_sealed >= 1, "{sealed:?}");
    let (with_table, _, block_rows) = layout(&db, "big_raw").await;
    assert_eq!((with_table, block_rows), (1, 0));
    let rows_per_series: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM _prom_compressed.big_raw GROUP BY series_id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(rows_per_series.len(), series_count as usize);
    assert!(
        rows_per_series.iter().all(|&n| n == 2),
        "11,200 raw bytes a series: two rows of up to 6 kB, {rows_per_series:?}"
    );
    assert_eq!(
        range_query(&client, &connector, "big_raw", start, start + 1399 * STEP_MS).await,
        before
    );
}
