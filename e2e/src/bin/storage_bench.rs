//! Bytes per sample on disk: the connector's head and series chunks (indexes
//! included) beside Prometheus' own TSDB holding the very same samples.
//!
//! The workload (counters and gauges every 15 s) fills one closed chunk: two hours that
//! ended over an hour ago. The connector stores it, then maintenance compresses it.
//! Prometheus' receiver takes the same requests, and an admin-API snapshot writes its head
//! out as a TSDB block, whose size is Prometheus' figure.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::workload::{dir_size, send_rounds, Workload};

#[derive(Parser, Debug)]
#[command(about = "Bytes per sample: uncompressed and compressed chunks vs Prometheus' TSDB")]
struct Args {
    /// Distinct series (a quarter each: integer counters, decimal counters, integer gauges,
    /// decimal gauges).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
}

const TWO_HOURS_MS: i64 = 2 * 3_600_000;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // The two-hour chunk before the last full one: closed, and older than compress_after.
    let chunk_end = now_ms / TWO_HOURS_MS * TWO_HOURS_MS - TWO_HOURS_MS;
    let workload = Workload {
        series: args.series,
        first_id: 0,
        senders: 4,
        batch: 2_000,
        start_ms: chunk_end - TWO_HOURS_MS,
        step_ms: 15_000,
        rounds: (TWO_HOURS_MS / 15_000) as usize,
    };
    eprintln!("building payload: {workload:?}");
    let payload = workload.payload();
    let samples = workload.samples() as f64;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();

    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--log.level", "warn", "--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    sqlx::query("SELECT prom_api.set_default_chunk_interval('2 hours')")
        .execute(&db)
        .await
        .unwrap();
    eprintln!("writing {samples} samples to the connector ...");
    let ingest = send_rounds(&client, &connector.url("/write"), &payload, 0..workload.rounds).await;
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
    eprintln!("compacting ...");
    let started = Instant::now();
    let stats = promscale_e2e::maintain(&db).await;
    let compress_time = started.elapsed();
    assert_eq!(stats.samples as f64, samples, "every sample was compacted");
    let compacted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(table_name)))), 0)::int8
           FROM _prom_catalog.chunk",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let still: i64 = sqlx::query_scalar("SELECT sum(samples)::int8 FROM _prom_catalog.series_chunk")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(still as f64, samples, "every sample is in a series chunk");
    let catalog: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('_prom_catalog.series') + pg_total_relation_size('_prom_catalog.label'))::int8",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    drop(connector);
    drop(pg);

    let prometheus = Prometheus::start(
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver", "--web.enable-admin-api"],
    )
    .await;
    eprintln!("writing the same samples to Prometheus ...");
    send_rounds(&client, &prometheus.url("/api/v1/write"), &payload, 0..workload.rounds).await;
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

    println!(
        "\nbytes per sample on disk: {} series, 15 s interval, one 2 h chunk ({samples} samples)",
        args.series
    );
    println!("{:<46} {:>14} {:>16}", "storage", "bytes", "bytes/sample");
    for (name, bytes) in [
        ("connector, head (before compaction)", head),
        ("connector, series chunks (+ index)", compacted),
        ("prometheus 2.42 TSDB block (chunks + index)", tsdb as i64),
    ] {
        println!("{name:<46} {bytes:>14} {:>16.2}", bytes as f64 / samples);
    }
    println!("series and label catalog (not per sample): {catalog} bytes");
    println!("series chunks / prometheus: {:.2}x", compacted as f64 / tsdb as f64);
    println!(
        "series chunks + catalog / prometheus: {:.2}x",
        (compacted + catalog) as f64 / tsdb as f64
    );
    println!(
        "ingest {:.0} samples/s, compaction {:.0} samples/s",
        samples / ingest.as_secs_f64(),
        samples / compress_time.as_secs_f64()
    );
}
