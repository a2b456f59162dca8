//! Compaction: series chunks and chunk blocks answer exactly like the head they were made
//! from, take a fraction of its space, follow the compression setting, and take late samples
//! without losing any.

use std::collections::{BTreeMap, HashMap};

use promscale_connector::storage::codec::run_sizes;
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
    promscale_e2e::maintain(db).await;
}

/// Per kind of series: (bytes of encoded data, exceptions, samples) over its series chunks
/// and its runs in chunk blocks.
async fn encoding(db: &PgPool, metric: &str) -> Vec<(String, i64, i64, i64)> {
    let kinds: HashMap<i64, String> = sqlx::query_as(
        "SELECT s.id, l.value FROM _prom_catalog.series s JOIN _prom_catalog.label l ON l.id = s.labels[2]
          WHERE s.metric_id = (SELECT id FROM _prom_catalog.metric WHERE metric_name = $1)",
    )
    .bind(metric)
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut by_kind: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    /// (series, data, exceptions, samples) of a series chunk
    type SeriesChunk = (i64, Vec<u8>, Option<Vec<f64>>, i32);
    let chunks: Vec<SeriesChunk> = sqlx::query_as(&format!(
        "SELECT series_id, data, exceptions, samples FROM _prom_compressed.{metric}"
    ))
    .fetch_all(db)
    .await
    .unwrap();
    for (series, data, exceptions, samples) in chunks {
        let e = by_kind.entry(kinds[&series].clone()).or_default();
        e.0 += data.len() as i64;
        e.1 += exceptions.map_or(0, |x| x.len() as i64);
        e.2 += i64::from(samples);
    }
    let blocks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT b.data FROM _prom_catalog.chunk_block b JOIN _prom_catalog.chunk c ON c.id = b.chunk_id
          WHERE c.metric_id = (SELECT id FROM _prom_catalog.metric WHERE metric_name = $1)",
    )
    .bind(metric)
    .fetch_all(db)
    .await
    .unwrap();
    for data in blocks {
        for run in run_sizes(&data).unwrap() {
            let e = by_kind.entry(kinds[&run.series].clone()).or_default();
            e.0 += run.bytes as i64;
            e.1 += run.exceptions as i64;
            e.2 += run.samples as i64;
        }
    }
    by_kind.into_iter().map(|(k, (b, x, n))| (k, b, x, n)).collect()
}

/// Series with more than one series chunk in one time chunk where one would do (a series
/// chunk holds up to about 6 kB: a page with room to spare).
async fn split_series(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM _prom_catalog.series_chunk GROUP BY tableoid, series_id
                                 HAVING count(*) > 1
                                    AND sum(octet_length(data) + 8 * coalesce(cardinality(exceptions), 0)) <= 6000) x",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Series with more than one run in the blocks of one sealed chunk where one would do (a
/// block row holds up to 8,000 bytes).
async fn split_in_blocks(db: &PgPool) -> i64 {
    let blocks: Vec<(i32, Vec<u8>)> = sqlx::query_as(
        "SELECT b.chunk_id, b.data FROM _prom_catalog.chunk_block b JOIN _prom_catalog.chunk c ON c.id = b.chunk_id
          WHERE c.sealed",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut runs: HashMap<(i32, i64), (usize, usize)> = HashMap::new();
    for (chunk, data) in blocks {
        for run in run_sizes(&data).unwrap() {
            let e = runs.entry((chunk, run.series)).or_default();
            e.0 += 1;
            e.1 += run.bytes + 8 * run.exceptions;
        }
    }
    runs.values().filter(|(n, bytes)| *n > 1 && *bytes <= 7_900).count() as i64
}

async fn head_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.head")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn start() -> (TestPostgres, Connector, PgPool) {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    (pg, connector, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_chunks_answer_exactly_like_the_head_in_a_fraction_of_the_space() {
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
    let head_before: i64 = sqlx::query_scalar("SELECT head_bytes FROM prom_info.metric WHERE metric_name = 'cm'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(head_before > 0);

    let stats = promscale_e2e::maintain(&db).await;
    assert_eq!(stats.samples as usize, before.len());
    assert_eq!(stats.expired, 0);

    assert_eq!(view(&db, "cm").await, before, "bit for bit, stale markers included");
    assert_eq!(head_rows(&db).await, 0);
    let row = sqlx::query(
        "SELECT total_chunks, sealed_chunks, size_bytes, head_bytes FROM prom_info.metric WHERE metric_name = 'cm'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let (total, sealed): (i64, i64) = (row.get("total_chunks"), row.get("sealed_chunks"));
    // Three days of 8 h chunks; all but the one still open are sealed.
    assert!(total >= 9 && sealed >= total - 1, "{sealed} of {total} chunks sealed");
    assert_eq!(row.get::<i64, _>("head_bytes"), 0);
    assert_eq!(
        split_series(&db).await,
        0,
        "one series chunk per series and sealed chunk"
    );
    assert_eq!(split_in_blocks(&db).await, 0, "one run per series and sealed chunk");

    // Decimal values as scaled integers, raw values where there is no short decimal form,
    // NaN and Inf as exceptions.
    let enc = encoding(&db, "cm").await;
    let of = |kind: &str| enc.iter().find(|e| e.0 == kind).cloned().unwrap();
    for kind in ["integer_counter", "decimal_counter", "gauge", "jittered"] {
        let (_, bytes, exceptions, samples) = of(kind);
        assert_eq!(exceptions, 0, "{kind}");
        assert!(
            (bytes as f64) < samples as f64 * 2.5,
            "{kind}: {bytes} bytes for {samples} samples"
        );
    }
    let (_, bytes, exceptions, samples) = of("unscalable");
    assert!(
        exceptions * 4 >= samples,
        "values with no short decimal form are kept raw: {exceptions} of {samples}, {bytes} bytes"
    );
    let (_, _, exceptions, _) = of("special");
    let not_finite = before
        .iter()
        .filter(|(k, _, bits)| k == "special" && !f64::from_bits(*bits).is_finite())
        .count();
    assert_eq!(
        exceptions as usize, not_finite,
        "NaN, the stale marker and Inf are exceptions"
    );

    // A second run finds nothing more to do and changes nothing.
    let again = promscale_e2e::maintain(&db).await;
    assert_eq!(
        (
            again.samples,
            again.series_chunks_written,
            again.chunk_blocks_written,
            again.chunks_sealed
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(view(&db, "cm").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_samples_for_compacted_chunks_are_kept_and_merged() {
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

    // A new series and a new timestamp of an old series land in a sealed chunk; so does a
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
    assert_eq!(head_rows(&db).await, 1, "the late samples wait in the head");
    let mut expected = before.clone();
    expected.push(("newcomer".into(), old_ms, 42.0f64.to_bits()));
    expected.push((kind.clone(), old_ms + 1, 7.5f64.to_bits()));
    expected.sort();
    let mut visible = view(&db, "late").await;
    visible.sort();
    assert_eq!(
        visible, expected,
        "visible at once; the first value of a timestamp kept"
    );

    maintenance(&db).await;
    let mut after = view(&db, "late").await;
    after.sort();
    assert_eq!(
        after, expected,
        "merged: nothing lost, the first value of a timestamp kept"
    );
    assert!(after.contains(&(kind, old_ms, old_bits)));
    assert_eq!(head_rows(&db).await, 0);
    assert_eq!(split_series(&db).await, 0, "the chunk was sealed again");
    assert_eq!(split_in_blocks(&db).await, 0, "the chunk was sealed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_follows_the_metric_and_default_settings() {
    let (_pg, connector, db) = start().await;
    let client = reqwest::Client::new();
    let get = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, bool>(sql).fetch_one(&db).await.unwrap() }
    };
    for metric in ["plain", "squeezed"] {
        assert_eq!(
            post(&client, &connector.url("/write"), three_days(metric))
                .await
                .unwrap()
                .0,
            204
        );
    }
    assert!(get("SELECT prom_api.get_default_compression_setting()").await);
    assert!(get("SELECT prom_api.set_metric_compression_setting('plain', false)").await);
    assert!(!get("SELECT prom_api.get_metric_compression_setting('plain')").await);
    assert!(get("SELECT prom_api.get_metric_compression_setting('squeezed')").await);
    maintenance(&db).await;
    // Share of the samples whose values are stored raw.
    let raw_share = |metric: &'static str| {
        let db = db.clone();
        async move {
            let e = encoding(&db, metric).await;
            let (exceptions, samples) = e.iter().fold((0, 0), |(x, n), k| (x + k.2, n + k.3));
            exceptions as f64 / samples as f64
        }
    };
    assert_eq!(raw_share("plain").await, 1.0, "compression off: every value raw");
    assert!(raw_share("squeezed").await < 0.2);
    let plain_before = view(&db, "plain").await;
    assert_eq!(plain_before.len(), 6 * 3 * 24 * 240, "and every sample kept");

    // Off by default now; "plain" follows the default again after a reset.
    assert!(get("SELECT prom_api.set_default_compression_setting(false)").await);
    assert!(get("SELECT prom_api.reset_metric_compression_setting('plain')").await);
    assert!(!get("SELECT prom_api.get_metric_compression_setting('plain')").await);
    assert!(get("SELECT prom_api.set_default_compression_setting(true)").await);
    assert!(get("SELECT prom_api.get_metric_compression_setting('plain')").await);
    // Series chunks are re-encoded under the new setting when they next change: here, when
    // a late sample of each series is merged into every chunk.
    let chunk_starts: Vec<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM start_time) * 1000)::int8 FROM _prom_catalog.chunk c
           JOIN _prom_catalog.metric m ON m.id = c.metric_id WHERE m.metric_name = 'plain'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let kinds = [
        "integer_counter",
        "decimal_counter",
        "gauge",
        "unscalable",
        "jittered",
        "special",
    ];
    let late = encode(
        kinds
            .iter()
            .map(|k| {
                let samples: Vec<(i64, f64)> = chunk_starts.iter().map(|&s| (s, 1.0)).collect();
                series(&[("__name__", "plain"), ("kind", k)], &samples)
            })
            .collect(),
    );
    assert_eq!(post(&client, &connector.url("/write"), late).await.unwrap().0, 204);
    maintenance(&db).await;
    // Values with no short decimal form stay raw whatever the setting; of the others, the
    // open time chunk (up to 8 of the 72 hours) may keep its old encoding until it is sealed.
    let scalable_raw_share = {
        let e = encoding(&db, "plain").await;
        let (exceptions, samples) = e
            .iter()
            .filter(|k| k.0 != "unscalable")
            .fold((0, 0), |(x, n), k| (x + k.2, n + k.3));
        exceptions as f64 / samples as f64
    };
    assert!(scalable_raw_share < 0.2, "compressed again: {scalable_raw_share}");
    let plain_after = view(&db, "plain").await;
    assert!(
        plain_before.iter().all(|s| plain_after.binary_search(s).is_ok()),
        "nothing lost"
    );

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
