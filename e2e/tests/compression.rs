//! Compressed chunks answer exactly like uncompressed ones, take a fraction of the space,
//! and take late samples without losing any.

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series, STALE_NAN_BITS};
use sqlx::{PgPool, Row};

const HOUR_MS: i64 = 3_600_000;
const STEP_MS: i64 = 15_000;

/// The sample of a generated series at position `i` and nominal time `t`.
type SampleAt = Box<dyn Fn(usize, i64) -> (i64, f64)>;

/// Three days at 15 s, ending a second ago, for series of every kind of value.
fn three_days(metric: &str) -> Vec<u8> {
    let end = recent_ms() + HOUR_MS - 1_000;
    let n = 3 * 24 * 3600 / 15;
    let times: Vec<i64> = (0..n).map(|i| end - (n - 1 - i) * STEP_MS).collect();
    let kinds: Vec<(&str, SampleAt)> = vec![
        ("integer_counter", Box::new(|i, t| (t, (i * 3) as f64))),
        // What a client parsing "1004.11" gets: the nearest double to a 2-decimal number.
        (
            "decimal_counter",
            Box::new(|i, t| (t, (100_000 + i * 137) as f64 / 100.0)),
        ),
        ("gauge", Box::new(|i, t| (t, ((i * 7919) % 1000) as f64 / 10.0))),
        // 0.1 + 0.2 has no short decimal form: stored raw.
        ("unscalable", Box::new(|i, t| (t, i as f64 * (0.1 + 0.2)))),
        ("jittered", Box::new(|i, t| (t + (i as i64 * 7) % 5 - 2, i as f64))),
        (
            "special",
            Box::new(|i, t| {
                let v = match i % 500 {
                    0 => f64::from_bits(STALE_NAN_BITS),
                    1 => f64::NAN,
                    2 => f64::INFINITY,
                    3 => f64::NEG_INFINITY,
                    _ => i as f64 / 4.0,
                };
                (t, v)
            }),
        ),
    ];
    let list = kinds
        .iter()
        .map(|(kind, f)| {
            let samples: Vec<(i64, f64)> = times.iter().enumerate().map(|(i, &t)| f(i, t)).collect();
            series(&[("__name__", metric), ("kind", kind)], &samples)
        })
        .collect();
    encode(list)
}

/// Every sample of the metric through its view: (kind, ms, value bits).
async fn view(db: &PgPool, metric: &str) -> Vec<(String, i64, u64)> {
    sqlx::query(&format!(
        "SELECT kind, (extract(epoch FROM time) * 1000)::int8 AS ms, value FROM prom_metric.{metric} ORDER BY kind, time"
    ))
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("kind"), r.get("ms"), r.get::<f64, _>("value").to_bits()))
    .collect()
}

async fn maintenance(db: &PgPool) {
    sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(db)
        .await
        .unwrap();
}

async fn start() -> (TestPostgres, Connector, PgPool) {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    (pg, connector, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_chunks_answer_exactly_like_uncompressed_ones_in_a_fraction_of_the_space() {
    let (_pg, connector, db) = start().await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &connector.url("/write"), three_days("cm"))
            .await
            .unwrap()
            .0,
        204
    );
    let before = view(&db, "cm").await;
    assert_eq!(before.len(), 6 * 3 * 24 * 240);
    let size_before: i64 = sqlx::query_scalar("SELECT size_bytes FROM prom_info.metric WHERE metric_name = 'cm'")
        .fetch_one(&db)
        .await
        .unwrap();

    maintenance(&db).await;

    assert_eq!(view(&db, "cm").await, before, "bit for bit, stale markers included");
    let row = sqlx::query(
        "SELECT total_chunks, compressed_chunks, size_bytes, compression_ratio::float8 AS ratio
           FROM prom_info.metric WHERE metric_name = 'cm'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let (total, compressed): (i64, i64) = (row.get("total_chunks"), row.get("compressed_chunks"));
    // Everything but the chunk being written (and the one created ahead) is compressed.
    assert!(
        compressed >= total - 2 && compressed >= 8,
        "{compressed} of {total} chunks compressed"
    );
    let ratio: f64 = row.get("ratio");
    assert!(ratio > 5.0, "compression ratio {ratio}");
    assert!(row.get::<i64, _>("size_bytes") < size_before / 3);

    // The encoding chosen per series: scaled integers where exact, raw values where not.
    let formats: Vec<(String, Option<i16>, bool, bool)> = sqlx::query_as(
        "SELECT DISTINCT (SELECT l.value FROM _prom_catalog.series s JOIN _prom_catalog.label l ON l.id = s.labels[2]
                           WHERE s.id = c.series_id),
                c.value_scale, c.raw_values IS NOT NULL, c.exception_positions IS NOT NULL
           FROM _prom_catalog.compressed_samples c ORDER BY 1, 2",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let format_of = |kind: &str| {
        formats
            .iter()
            .filter(|f| f.0 == kind)
            .map(|f| (f.1, f.2))
            .collect::<Vec<_>>()
    };
    assert_eq!(format_of("integer_counter"), [(Some(0), false)]);
    assert_eq!(format_of("decimal_counter"), [(Some(2), false)]);
    assert_eq!(format_of("gauge"), [(Some(1), false)]);
    assert_eq!(format_of("unscalable"), [(None, true)]);
    assert!(
        formats.iter().any(|f| f.0 == "special" && f.1.is_some() && f.3),
        "NaN and Inf kept as exceptions"
    );

    // A second run finds nothing more to do and changes nothing.
    maintenance(&db).await;
    assert_eq!(view(&db, "cm").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_samples_for_compressed_chunks_are_kept_and_merged() {
    let (_pg, connector, db) = start().await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &connector.url("/write"), three_days("late"))
            .await
            .unwrap()
            .0,
        204
    );
    maintenance(&db).await;
    let before = view(&db, "late").await;
    let (kind, old_ms, old_bits) = before.iter().find(|(k, _, _)| k == "gauge").cloned().unwrap();

    // A new series and a new timestamp of an old series land in compressed chunks; so does a
    // resent sample with another value, which must not replace the stored one.
    let late = encode(vec![
        series(&[("__name__", "late"), ("kind", "newcomer")], &[(old_ms, 42.0)]),
        series(
            &[("__name__", "late"), ("kind", &kind)],
            &[(old_ms + 1, 7.5), (old_ms, 99.0)],
        ),
    ]);
    let (status, text) = post(&client, &connector.url("/write"), late).await.unwrap();
    assert_eq!(status, 204, "{text}");
    let mixed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.chunk c JOIN _prom_catalog.metric m ON m.id = c.metric_id
          WHERE m.metric_name = 'late' AND c.table_name IS NOT NULL AND c.compressed_table_name IS NOT NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        mixed, 1,
        "the late samples wait in an uncompressed part of the compressed chunk"
    );
    let visible = view(&db, "late").await;
    assert!(visible.contains(&("newcomer".into(), old_ms, 42.0f64.to_bits())));
    assert!(visible.contains(&(kind.clone(), old_ms + 1, 7.5f64.to_bits())));

    maintenance(&db).await;
    let mut expected = before.clone();
    expected.push(("newcomer".into(), old_ms, 42.0f64.to_bits()));
    expected.push((kind.clone(), old_ms + 1, 7.5f64.to_bits()));
    expected.sort();
    let mut after = view(&db, "late").await;
    after.sort();
    assert_eq!(
        after, expected,
        "merged: nothing lost, the first value of a timestamp kept"
    );
    assert!(after.contains(&(kind, old_ms, old_bits)));
    let mixed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.chunk WHERE table_name IS NOT NULL AND compressed_table_name IS NOT NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(mixed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_follows_the_metric_and_default_settings() {
    let (_pg, connector, db) = start().await;
    let client = reqwest::Client::new();
    for metric in ["plain", "squeezed"] {
        assert_eq!(
            post(&client, &connector.url("/write"), three_days(metric))
                .await
                .unwrap()
                .0,
            204
        );
    }
    let get = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, bool>(sql).fetch_one(&db).await.unwrap() }
    };
    assert!(get("SELECT prom_api.get_default_compression_setting()").await);
    assert!(get("SELECT prom_api.set_metric_compression_setting('plain', false)").await);
    assert!(!get("SELECT prom_api.get_metric_compression_setting('plain')").await);
    assert!(get("SELECT prom_api.get_metric_compression_setting('squeezed')").await);
    maintenance(&db).await;
    let compressed = |metric: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT compressed_chunks FROM prom_info.metric WHERE metric_name = $1")
                .bind(metric)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(compressed("plain").await, 0);
    assert!(compressed("squeezed").await > 0);

    // Off by default now; "plain" follows the default again after a reset.
    assert!(get("SELECT prom_api.set_default_compression_setting(false)").await);
    assert!(get("SELECT prom_api.reset_metric_compression_setting('plain')").await);
    assert!(!get("SELECT prom_api.get_metric_compression_setting('plain')").await);
    maintenance(&db).await;
    assert_eq!(compressed("plain").await, 0);
    assert!(get("SELECT prom_api.set_default_compression_setting(true)").await);
    maintenance(&db).await;
    assert!(compressed("plain").await > 0);

    for (sql, message) in [
        (
            "SELECT prom_api.set_metric_compression_setting('nope', true)",
            "metric \"nope\" does not exist",
        ),
        (
            "SELECT prom_api.set_default_compression_setting(NULL)",
            "must be true or false",
        ),
        (
            "SELECT prom_api.set_metric_compression_setting('plain', NULL)",
            "must be true or false",
        ),
    ] {
        let err = sqlx::query(sql).execute(&db).await.expect_err(sql).to_string();
        assert!(err.contains(message), "{sql}: {err}");
    }
}
