//! Bytes per sample on disk, side by side: the connector (head as written, as the light merge
//! pass leaves it, and once maintenance merged its small rows, series chunks after compaction, and its series and label catalog) beside Prometheus' own TSDB block
//! holding the very same samples. Also how fast compaction runs and how fast plain SQL
//! decodes samples through the views (no extension).
//!
//! Each shape is a fleet of series (counters and gauges every 15 s) that live for a while,
//! in closed chunks of the default 8 h interval: series of 30 minutes, of an hour (inside one
//! chunk, and across a chunk boundary), and of 8 hours. The connector stores them, then
//! maintenance compacts and seals them. A fresh Prometheus receiver takes the same requests,
//! and an admin-API snapshot writes its head out as a TSDB block (chunks + index), whose
//! size is Prometheus' figure.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use promscale_connector::storage::compaction::CompactionOptions;
use promscale_connector::storage::maintenance::{merge_once, Outcome};
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::workload::{dir_size, send_rounds, Payload, Workload};

#[derive(Parser, Debug)]
#[command(about = "Bytes per sample: the connector's head, series chunks and catalog vs Prometheus' TSDB block")]
struct Args {
    /// Series of the short-lived shapes (30 min, 1 h); a fifth of it for the 8 h shape.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
}

const HOUR_MS: i64 = 3_600_000;
const CHUNK_MS: i64 = 8 * HOUR_MS;
const STEP_MS: i64 = 15_000;

struct Shape {
    name: &'static str,
    series: usize,
    start_ms: i64,
    minutes: i64,
}

struct Figures {
    samples: f64,
    head: i64,
    light_head: i64,
    merged_head: i64,
    chunks: i64,
    catalog: i64,
    prometheus: u64,
    merge_rate: f64,
    compaction_rate: f64,
    sql_decode_rate: f64,
}

/// The head as the light merge pass (`--maintenance.merge-interval`, 1 minute) leaves it: the
/// samples written a minute at a time, the pass run after each minute (VACUUM FULL: in a
/// running system the space merged rows freed takes later writes).
async fn light_merged_head(client: &reqwest::Client, shape: &Shape, workload: &Workload, payload: &Payload) -> i64 {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--log.level", "warn", "--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    eprintln!("{}: writing a minute at a time, merging after each ...", shape.name);
    let per_minute = (60_000 / STEP_MS) as usize;
    // As the pass finds rows when it runs: every row written before it is at least a minute
    // old (the pass's own floor), which the bench cannot wait for.
    let options = CompactionOptions {
        merge_after: Duration::ZERO,
        ..CompactionOptions::light_merge(Duration::ZERO)
    };
    for first in (0..workload.rounds).step_by(per_minute) {
        send_rounds(
            client,
            &connector.url("/write"),
            payload,
            first..(first + per_minute).min(workload.rounds),
        )
        .await;
        match merge_once(&db, &options).await.expect("merging") {
            Outcome::Done(_) => {}
            Outcome::Skipped => panic!("another connector holds the merge lock"),
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT sum(samples)::int8 FROM _prom_catalog.head")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored as usize, workload.samples(), "merging kept every sample");
    sqlx::query("VACUUM FULL _prom_catalog.head")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&db).await.unwrap();
    sqlx::query_scalar("SELECT pg_total_relation_size('_prom_catalog.head')")
        .fetch_one(&db)
        .await
        .unwrap()
}

async fn measure(client: &reqwest::Client, shape: &Shape) -> Figures {
    let workload = Workload {
        series: shape.series,
        first_id: 0,
        senders: 4,
        batch: 2_000,
        start_ms: shape.start_ms,
        step_ms: STEP_MS,
        rounds: (shape.minutes * 60_000 / STEP_MS) as usize,
    };
    eprintln!("{}: building payload: {workload:?}", shape.name);
    let payload = workload.payload();
    let samples = workload.samples() as f64;

    let light_head = light_merged_head(client, shape, &workload, &payload).await;

    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--log.level", "warn", "--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    eprintln!("{}: writing {samples} samples to the connector ...", shape.name);
    send_rounds(client, &connector.url("/write"), &payload, 0..workload.rounds).await;
    let stored: i64 = sqlx::query_scalar("SELECT sum(samples)::int8 FROM _prom_catalog.head")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored as f64, samples);
    sqlx::query("CHECKPOINT").execute(&db).await.unwrap();
    let head: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('_prom_catalog.head')")
        .fetch_one(&db)
        .await
        .unwrap();
    // The head as it stands between maintenance runs: the small rows of earlier writes
    // merged (VACUUM FULL: in a running system the space they freed takes later writes).
    let merge_started = Instant::now();
    promscale_e2e::maintain_with(&db, &CompactionOptions::merge_only()).await;
    let merge_rate = samples / merge_started.elapsed().as_secs_f64();
    sqlx::query("VACUUM FULL _prom_catalog.head")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&db).await.unwrap();
    let merged_head: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('_prom_catalog.head')")
        .fetch_one(&db)
        .await
        .unwrap();
    let started = Instant::now();
    let stats = promscale_e2e::maintain(&db).await;
    let compaction_rate = samples / started.elapsed().as_secs_f64();
    assert_eq!(stats.samples as f64, samples, "every sample was compacted");
    let compacted: i64 = sqlx::query_scalar(
        "SELECT (coalesce((SELECT sum(samples) FROM _prom_catalog.series_chunk), 0)
                 + coalesce((SELECT sum(samples) FROM _prom_catalog.chunk_block), 0))::int8",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        compacted as f64, samples,
        "every sample is in a series chunk or a chunk block"
    );
    // Sealing rewrote the blocks compaction had written into packed ones (VACUUM FULL: in a
    // running system the space the first ones took takes later compactions' blocks).
    sqlx::query("VACUUM FULL _prom_catalog.chunk_block")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&db).await.unwrap();
    let chunks: i64 = sqlx::query_scalar(
        "SELECT (coalesce(sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(table_name)))), 0)
                 + pg_total_relation_size('_prom_catalog.chunk_block'))::int8
           FROM _prom_catalog.chunk",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let (rows, blocks, data, exceptions, heap, index): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.series_chunk), (SELECT count(*) FROM _prom_catalog.chunk_block),
                ((SELECT coalesce(sum(octet_length(data)), 0) FROM _prom_catalog.series_chunk)
                 + (SELECT coalesce(sum(octet_length(data)), 0) FROM _prom_catalog.chunk_block))::int8,
                ((SELECT coalesce(sum(cardinality(exceptions)), 0) FROM _prom_catalog.series_chunk)
                 + (SELECT coalesce(sum(cardinality(exceptions)), 0) FROM _prom_catalog.chunk_block))::int8,
                (coalesce((SELECT sum(pg_relation_size(to_regclass('_prom_chunks.' || quote_ident(table_name)))) FROM _prom_catalog.chunk), 0)
                 + pg_relation_size('_prom_catalog.chunk_block'))::int8,
                (coalesce((SELECT sum(pg_indexes_size(to_regclass('_prom_chunks.' || quote_ident(table_name)))) FROM _prom_catalog.chunk), 0)
                 + pg_indexes_size('_prom_catalog.chunk_block'))::int8",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    eprintln!(
        "{}: {rows} series chunks, {blocks} chunk block rows, {:.1} bytes of data and {:.2} exceptions per sample; heap {heap} bytes, indexes {index} bytes",
        shape.name,
        data as f64 / samples,
        exceptions as f64 / samples
    );
    let packed: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(cardinality(series)), 0)::int8 FROM _prom_catalog.series_batch")
            .fetch_one(&db)
            .await
            .unwrap();
    // Packing moved the series out of their rows (VACUUM FULL: in a running system the space
    // they leave in the rows' heap and indexes takes the series created later).
    sqlx::query("VACUUM FULL _prom_catalog.series_row")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&db).await.unwrap();
    let catalog: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('_prom_catalog.series_row') + pg_total_relation_size('_prom_catalog.series_fresh')
                 + pg_total_relation_size('_prom_catalog.series_batch') + pg_total_relation_size('_prom_catalog.packed_label_high')
                 + pg_total_relation_size('_prom_catalog.label'))::int8",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    // Where the catalog's bytes go: each table's heap and each of its indexes.
    let parts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_relation_size(c.oid)
           FROM pg_class c
          WHERE c.oid IN ('_prom_catalog.series_row'::regclass, '_prom_catalog.series_fresh'::regclass,
                          '_prom_catalog.series_batch'::regclass, '_prom_catalog.label'::regclass)
             OR c.oid IN (SELECT indexrelid FROM pg_index
                           WHERE indrelid IN ('_prom_catalog.series_row'::regclass, '_prom_catalog.series_fresh'::regclass,
                                              '_prom_catalog.series_batch'::regclass, '_prom_catalog.label'::regclass))
             OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE oid = '_prom_catalog.series_batch'::regclass)
          ORDER BY 2 DESC",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let series_count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    eprintln!(
        "{}: catalog of {series_count} series, {packed} of them packed: {}",
        shape.name,
        parts
            .iter()
            .map(|(name, bytes)| format!("{name} {:.0} B/series", *bytes as f64 / series_count as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let decoded: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.samples")
        .fetch_one(&db)
        .await
        .unwrap();
    let sql_decode_rate = decoded as f64 / started.elapsed().as_secs_f64();
    assert_eq!(decoded as f64, samples);
    drop(connector);
    drop(pg);

    let prometheus = Prometheus::start(
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver", "--web.enable-admin-api"],
    )
    .await;
    eprintln!("{}: writing the same samples to Prometheus ...", shape.name);
    send_rounds(client, &prometheus.url("/api/v1/write"), &payload, 0..workload.rounds).await;
    let snapshot: serde_json::Value = client
        .post(prometheus.url("/api/v1/admin/tsdb/snapshot"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = snapshot["data"]["name"].as_str().expect("snapshot name");
    let tsdb = dir_size(&prometheus.data_dir().join("snapshots").join(name));
    Figures {
        samples,
        head,
        light_head,
        merged_head,
        chunks,
        catalog,
        prometheus: tsdb,
        merge_rate,
        compaction_rate,
        sql_decode_rate,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // An 8 h chunk boundary with a whole closed chunk before it, at least an hour ago.
    let boundary = (now_ms - HOUR_MS) / CHUNK_MS * CHUNK_MS;
    let shapes = [
        Shape {
            name: "series of 30 min",
            series: args.series,
            start_ms: boundary - 4 * HOUR_MS,
            minutes: 30,
        },
        Shape {
            name: "series of 1 h",
            series: args.series,
            start_ms: boundary - 4 * HOUR_MS,
            minutes: 60,
        },
        Shape {
            name: "series of 1 h across a chunk boundary",
            series: args.series,
            start_ms: boundary - 30 * 60_000,
            minutes: 60,
        },
        Shape {
            name: "series of 8 h",
            series: args.series / 5,
            start_ms: boundary - CHUNK_MS,
            minutes: 480,
        },
    ];
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let mut rows = Vec::new();
    for shape in &shapes {
        rows.push(measure(&client, shape).await);
    }

    println!("\nbytes per sample on disk: counters and gauges every 15 s, default 8 h chunks");
    println!(
        "{:<40} {:>9} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>10} {:>7} {:>9} {:>12} {:>12}",
        "shape",
        "samples",
        "head",
        "light",
        "merged",
        "chunks",
        "catalog",
        "total",
        "prometheus",
        "ratio",
        "merge/s",
        "compaction/s",
        "SQL decode/s"
    );
    for (shape, f) in shapes.iter().zip(&rows) {
        let per = |bytes: f64| bytes / f.samples;
        let total = (f.chunks + f.catalog) as f64;
        println!(
            "{:<40} {:>9} {:>8.2} {:>7.2} {:>7.2} {:>8.2} {:>8.2} {:>9.2} {:>10.2} {:>6.2}x {:>9.0} {:>12.0} {:>12.0}",
            format!("{} ({} series)", shape.name, shape.series),
            f.samples,
            per(f.head as f64),
            per(f.light_head as f64),
            per(f.merged_head as f64),
            per(f.chunks as f64),
            per(f.catalog as f64),
            per(total),
            per(f.prometheus as f64),
            total / f.prometheus as f64,
            f.merge_rate,
            f.compaction_rate,
            f.sql_decode_rate,
        );
    }
    println!(
        "head: recent samples as written; light: the head as the 1-minute light merge pass leaves it (in a running system"
    );
    println!("the last one to two minutes of writes are still as written); merged: the head once maintenance merged its small rows (as it stands");
    println!("between maintenance runs, before compaction); chunks: series chunks, chunk blocks and their indexes after compaction and sealing;");
    println!("merge/s and compaction/s: samples a second of the merge pass and of compaction (of the merged head)");
    println!(
        "catalog: series and label tables with their indexes; total = chunks + catalog; ratio = total / prometheus"
    );
}
