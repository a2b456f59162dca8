//! Per-metric retention and chunk interval through the prom_api SQL functions, applied by
//! maintenance: whole chunks beyond retention disappear, everything else stays exact.
//! Time chunks are made by compaction, so each test compacts what it wrote.

use std::time::Duration;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::sum_metric;
use promscale_e2e::remote_write::{encode, post, series, STALE_NAN_BITS};
use promscale_e2e::{maintain, recent_ms, wait_for};
use sqlx::{PgPool, Row};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn now_ms() -> i64 {
    recent_ms() + HOUR_MS
}

/// When the ten days of samples end: just now, so that a chunk covers the present.
fn ten_days_end() -> i64 {
    now_ms() - 1_000
}

/// Samples of two series every hour for the ten days before `ten_days_end()`; one recent
/// stale marker and NaN.
fn ten_days_of_samples(metric: &str) -> Vec<u8> {
    let end = ten_days_end();
    let times: Vec<i64> = (0..240).map(|h| end - h * HOUR_MS).collect();
    let mut a: Vec<(i64, f64)> = times.iter().map(|&t| (t, (t / HOUR_MS) as f64)).collect();
    a[0].1 = f64::from_bits(STALE_NAN_BITS);
    a[1].1 = f64::NAN;
    a.reverse();
    let b: Vec<(i64, f64)> = times.iter().rev().map(|&t| (t, -((t / HOUR_MS) as f64))).collect();
    encode(vec![
        series(&[("__name__", metric), ("s", "a")], &a),
        series(&[("__name__", metric), ("s", "b")], &b),
    ])
}

async fn samples(db: &PgPool, table: &str) -> Vec<(String, i64, u64)> {
    sqlx::query(&format!(
        "SELECT s, (extract(epoch FROM time) * 1000)::int8 AS ms, value FROM prom_metric.\"{table}\" ORDER BY s, time"
    ))
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("s"), r.get("ms"), r.get::<f64, _>("value").to_bits()))
    .collect()
}

async fn scalar<T>(db: &PgPool, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn chunk_bounds(db: &PgPool, metric: &str) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM c.start_time) * 1000)::int8, (extract(epoch FROM c.end_time) * 1000)::int8
           FROM _prom_catalog.chunk c JOIN _prom_catalog.metric m ON m.id = c.metric_id
          WHERE m.metric_name = $1 ORDER BY c.start_time",
    )
    .bind(metric)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_chunks_and_keeps_the_rest_bit_for_bit() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &connector.url("/write"), ten_days_of_samples("kept_metric"))
            .await
            .unwrap()
            .0,
        204
    );
    assert_eq!(
        post(&client, &connector.url("/write"), ten_days_of_samples("short_metric"))
            .await
            .unwrap()
            .0,
        204
    );
    maintain(&db).await;

    // Default: 8-hour chunks aligned to the epoch, covering every sample, none overlapping.
    let chunks = chunk_bounds(&db, "short_metric").await;
    let eight_hours = 8 * HOUR_MS;
    let last_sample = ten_days_end();
    let first_sample = last_sample - 239 * HOUR_MS;
    let expected_chunks = (last_sample / eight_hours - first_sample / eight_hours + 1) as usize;
    assert_eq!(chunks.len(), expected_chunks);
    assert!(chunks.iter().all(|(s, e)| e - s == eight_hours && s % eight_hours == 0));
    assert!(chunks.windows(2).all(|w| w[0].1 <= w[1].0));
    let (total_chunks, chunk_interval): (i64, String) = sqlx::query_as(
        "SELECT total_chunks, chunk_interval::text FROM prom_info.metric WHERE metric_name = 'short_metric'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (total_chunks as usize, chunk_interval.as_str()),
        (expected_chunks, "08:00:00")
    );
    let before = samples(&db, "short_metric").await;
    let kept_before = samples(&db, "kept_metric").await;
    assert_eq!(before.len(), 480);

    // Three days for one metric; maintenance drops its chunks that end before now - 3 days.
    assert!(
        scalar::<bool>(
            &db,
            "SELECT prom_api.set_metric_retention_period('short_metric', '3 days')"
        )
        .await
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_retention_period('short_metric')::text").await,
        "3 days"
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_retention_period('kept_metric')::text").await,
        "90 days"
    );
    maintain(&db).await;

    let horizon = now_ms() - 3 * DAY_MS;
    let surviving: Vec<_> = chunks.iter().filter(|(_, end)| *end > horizon).copied().collect();
    assert_eq!(chunk_bounds(&db, "short_metric").await, surviving);
    let oldest_kept = surviving[0].0;
    let expected: Vec<_> = before.iter().filter(|(_, t, _)| *t >= oldest_kept).cloned().collect();
    assert!(expected.len() < before.len() && !expected.is_empty());
    assert_eq!(
        samples(&db, "short_metric").await,
        expected,
        "the rest is intact, NaN and stale marker included"
    );
    assert_eq!(
        samples(&db, "kept_metric").await,
        kept_before,
        "other metrics keep their 90 days"
    );
    let orphans: i64 = scalar(
        &db,
        "SELECT count(*) FROM pg_tables t WHERE t.schemaname = '_prom_chunks'
            AND NOT EXISTS (SELECT 1 FROM _prom_catalog.chunk c WHERE t.tablename = c.table_name)",
    )
    .await;
    assert_eq!(orphans, 0, "dropped chunks leave no tables behind");
    let orphan_blocks: i64 = scalar(
        &db,
        "SELECT count(*) FROM _prom_catalog.chunk_block b
          WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.chunk c WHERE c.id = b.chunk_id)",
    )
    .await;
    assert_eq!(orphan_blocks, 0, "dropped chunks leave no blocks behind");
    let blocks: i64 = scalar(&db, "SELECT count(*) FROM _prom_catalog.chunk_block").await;
    assert!(blocks > 0, "the chunks kept keep their blocks");

    // Samples for the dropped range are acknowledged but not stored.
    let late = encode(vec![series(
        &[("__name__", "short_metric"), ("s", "a")],
        &[(recent_ms() - 6 * DAY_MS, 1.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), late).await.unwrap().0, 204);
    assert_eq!(samples(&db, "short_metric").await, expected);
    let metrics = connector.metrics_text().await;
    assert_eq!(
        sum_metric(&metrics, "promscale_ingest_samples_expired_total"),
        Some(1.0),
        "{metrics}"
    );

    // Back to the default: 90 days again, and the same late sample is stored.
    assert!(scalar::<bool>(&db, "SELECT prom_api.reset_metric_retention_period('short_metric')").await);
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_retention_period('short_metric')::text").await,
        "90 days"
    );
    let late = encode(vec![series(
        &[("__name__", "short_metric"), ("s", "a")],
        &[(recent_ms() - 6 * DAY_MS, 1.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), late).await.unwrap().0, 204);
    assert_eq!(samples(&db, "short_metric").await.len(), expected.len() + 1);
    maintain(&db).await;
    assert_eq!(
        samples(&db, "short_metric").await.len(),
        expected.len() + 1,
        "and compacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_interval_applies_to_new_chunks_per_metric_and_by_default() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    let write = |metric: &'static str, t: i64| {
        let body = encode(vec![series(&[("__name__", metric)], &[(t, 1.0)])]);
        let (client, url, db) = (client.clone(), connector.url("/write"), db.clone());
        async move {
            assert_eq!(post(&client, &url, body).await.unwrap().0, 204);
            maintain(&db).await;
        }
    };
    // The start of an 8 h chunk far enough back that every sample written below (up to
    // base + 10 h) is in the past whatever the time of day.
    let base = recent_ms() / (8 * HOUR_MS) * (8 * HOUR_MS) - 16 * HOUR_MS;
    write("hourly", base + 30 * 60_000).await;
    assert_eq!(chunk_bounds(&db, "hourly").await, [(base, base + 8 * HOUR_MS)]);

    assert!(scalar::<bool>(&db, "SELECT prom_api.set_metric_chunk_interval('hourly', '1 hour')").await);
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_chunk_interval('hourly')::text").await,
        "01:00:00"
    );
    // Existing chunks keep their bounds; new ones are an hour long, aligned to the hour.
    write("hourly", base + 8 * HOUR_MS + 90 * 60_000).await;
    write("hourly", base - 30 * 60_000).await;
    assert_eq!(
        chunk_bounds(&db, "hourly").await,
        [
            (base - HOUR_MS, base),
            (base, base + 8 * HOUR_MS),
            (base + 9 * HOUR_MS, base + 10 * HOUR_MS)
        ]
    );

    // A new default applies to metrics without their own setting, not to "hourly".
    assert!(scalar::<bool>(&db, "SELECT prom_api.set_default_chunk_interval('2 hours')").await);
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_default_chunk_interval()::text").await,
        "02:00:00"
    );
    write("two_hourly", base + 30 * 60_000).await;
    assert_eq!(chunk_bounds(&db, "two_hourly").await, [(base, base + 2 * HOUR_MS)]);
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_chunk_interval('hourly')::text").await,
        "01:00:00"
    );
    assert!(scalar::<bool>(&db, "SELECT prom_api.reset_metric_chunk_interval('hourly')").await);
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_chunk_interval('hourly')::text").await,
        "02:00:00"
    );
    // A sample between differently sized chunks gets a chunk clipped to the gap.
    write("hourly", base + 8 * HOUR_MS + 30 * 60_000).await;
    let chunks = chunk_bounds(&db, "hourly").await;
    assert!(chunks.contains(&(base + 8 * HOUR_MS, base + 9 * HOUR_MS)), "{chunks:?}");
    assert!(chunks.windows(2).all(|w| w[0].1 <= w[1].0), "no overlap: {chunks:?}");

    assert!(scalar::<bool>(&db, "SELECT prom_api.set_default_retention_period('30 days')").await);
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_default_retention_period()::text").await,
        "30 days"
    );
    let retention: String = scalar(
        &db,
        "SELECT retention_period::text FROM prom_info.metric WHERE metric_name = 'two_hourly'",
    )
    .await;
    assert_eq!(retention, "30 days");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_raise_errors_that_say_what_is_wrong() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let body = encode(vec![series(&[("__name__", "known")], &[(recent_ms(), 1.0)])]);
    assert_eq!(
        post(&reqwest::Client::new(), &connector.url("/write"), body)
            .await
            .unwrap()
            .0,
        204
    );
    let cases = [
        (
            "SELECT prom_api.set_metric_retention_period('unknown', '1 day')",
            "metric \"unknown\" does not exist",
        ),
        (
            "SELECT prom_api.get_metric_chunk_interval('unknown')",
            "metric \"unknown\" does not exist",
        ),
        (
            "SELECT prom_api.reset_metric_retention_period('unknown')",
            "metric \"unknown\" does not exist",
        ),
        (
            "SELECT prom_api.set_metric_retention_period('known', '-1 day')",
            "retention period must be at least 00:01:00",
        ),
        (
            "SELECT prom_api.set_metric_chunk_interval('known', '0')",
            "chunk interval must be at least 00:01:00",
        ),
        (
            "SELECT prom_api.set_default_chunk_interval(NULL)",
            "chunk interval must be at least 00:01:00, got NULL",
        ),
        (
            "SELECT prom_api.set_default_retention_period('-5 days')",
            "retention period must be at least",
        ),
    ];
    for (sql, message) in cases {
        let err = sqlx::query(sql).execute(&db).await.expect_err(sql).to_string();
        assert!(err.contains(message), "{sql}: {err}");
    }
    // Nothing changed.
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_metric_retention_period('known')::text").await,
        "90 days"
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT prom_api.get_default_chunk_interval()::text").await,
        "08:00:00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_run_maintenance_on_their_own_one_at_a_time() {
    let pg = TestPostgres::start();
    let args = ["--maintenance.interval", "300ms", "--storage.head-age", "0s"];
    let first = Connector::start(&pg.uri(), &args).await;
    let second = Connector::start(&pg.uri(), &args).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &first.url("/write"), ten_days_of_samples("auto_metric"))
            .await
            .unwrap()
            .0,
        204
    );
    sqlx::query("SELECT prom_api.set_metric_retention_period('auto_metric', '2 days')")
        .execute(&db)
        .await
        .unwrap();
    let horizon = now_ms() - 2 * DAY_MS;
    wait_for(
        "scheduled maintenance to compact the head and drop the expired chunks",
        Duration::from_secs(30),
        || async {
            let chunks = chunk_bounds(&db, "auto_metric").await;
            let head: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.head")
                .fetch_one(&db)
                .await
                .unwrap();
            (head == 0 && !chunks.is_empty() && chunks.iter().all(|(_, end)| *end > horizon)).then_some(())
        },
    )
    .await;
    // Both keep running it; none of the runs failed, even when they met.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut done = 0.0;
    for c in [&first, &second] {
        let text = c.metrics_text().await;
        assert!(
            !text.contains(r#"promscale_maintenance_runs_total{result="failed"}"#),
            "{text}"
        );
        done += sum_metric(&text, "promscale_maintenance_runs_total").unwrap_or(0.0);
    }
    assert!(done >= 4.0, "only {done} maintenance runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_maintenance_leaves_a_consistent_catalog() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    // Forty metrics with ten days of chunks each, all expiring at once.
    for m in 0..40 {
        let body = ten_days_of_samples(&format!("interrupted_{m}"));
        assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    }
    maintain(&db).await;
    sqlx::query("SELECT prom_api.set_default_retention_period('1 day')")
        .execute(&db)
        .await
        .unwrap();

    // Maintenance runs metric by metric; the chunk lock of the 20th (held here, as a
    // compaction would) stops it midway, where it is killed.
    let mut holder = db.acquire().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_lock(7355609, (SELECT id FROM _prom_catalog.metric WHERE metric_name = 'interrupted_20'))",
    )
    .execute(&mut *holder)
    .await
    .unwrap();
    let mut session = db.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *session)
        .await
        .unwrap();
    let maintenance = tokio::spawn(async move {
        sqlx::query("CALL prom_api.execute_maintenance()")
            .execute(&mut *session)
            .await
            .map(|_| ())
    });
    wait_for(
        "maintenance waiting for the held lock",
        Duration::from_secs(30),
        || async {
            let waiting: bool = sqlx::query_scalar(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
            )
            .bind(pid)
            .fetch_one(&db)
            .await
            .unwrap();
            waiting.then_some(())
        },
    )
    .await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&db)
        .await
        .unwrap();
    let interrupted = maintenance.await.unwrap();
    // A session lock outlives its use: release it before the connection goes back to the pool.
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    // Every table a chunk names exists and is attached; every chunk table belongs to a chunk;
    // every chunk block belongs to a chunk.
    let consistent = "SELECT
        (SELECT count(*) FROM _prom_catalog.chunk c
          WHERE c.table_name IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid WHERE k.relname = c.table_name)) +
        (SELECT count(*) FROM pg_tables t WHERE t.schemaname = '_prom_chunks'
          AND NOT EXISTS (SELECT 1 FROM _prom_catalog.chunk c WHERE t.tablename = c.table_name)) +
        (SELECT count(*) FROM _prom_catalog.chunk_block b
          WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.chunk c WHERE c.id = b.chunk_id))";
    assert_eq!(
        scalar::<i64>(&db, consistent).await,
        0,
        "catalog and chunk tables agree after the interruption"
    );
    assert!(interrupted.is_err(), "maintenance was not interrupted");
    let horizon = now_ms() - DAY_MS;
    let expired = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM _prom_catalog.chunk WHERE end_time <= 'epoch'::timestamptz + $1 * interval '1 millisecond'",
        )
        .bind(horizon)
        .fetch_one(&db)
        .await
        .unwrap()
    };
    assert!(expired().await > 0, "the interrupted run left work undone");
    // A later run finishes the job.
    sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(scalar::<i64>(&db, consistent).await, 0);
    assert_eq!(expired().await, 0);
}

/// Plain PostgreSQL needs no extension: the TimescaleDB path of schema version 4 is gone,
/// metrics are views over the head and their series chunks, and time chunks are plain tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_postgresql_needs_no_extension() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let body = encode(vec![series(&[("__name__", "native")], &[(recent_ms(), 1.0)])]);
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    assert_eq!(
        scalar::<i64>(
            &db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = '_prom_timescaledb'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'").await,
        0
    );
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT relkind::text FROM pg_class WHERE oid = 'prom_data.native'::regclass"
        )
        .await,
        "v",
        "a view of the decoded samples"
    );
    maintain(&db).await;
    assert_eq!(
        scalar::<i64>(
            &db,
            "SELECT total_chunks FROM prom_info.metric WHERE metric_name = 'native'"
        )
        .await,
        1,
        "the chunk the sample was compacted into"
    );
    assert_eq!(scalar::<i64>(&db, "SELECT count(*) FROM prom_data.native").await, 1);
}
