//! What the connector does with every kind of input: refuses bodies that are not requests
//! with a 4xx and a message, leaves out series it cannot store while storing the others (and
//! says which in a 400), stores good ones exactly, and survives names that are hostile to SQL.

use bytes::Bytes;
use promscale_connector::prompb::MetricMetadata;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::sum_metric;
use promscale_e2e::remote_write::{encode, encode_v2, post, post_v2, series, STALE_NAN_BITS};
use prost::Message;
use sqlx::Row;

static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(promscale_e2e::recent_ms);

async fn metric_exists(db: &sqlx::PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _prom_catalog.metric WHERE metric_name = $1)")
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Samples of `metric` as SQL users see them: (value, Unix ms), in time order.
async fn stored(db: &sqlx::PgPool, metric: &str) -> Vec<(f64, i64)> {
    sqlx::query_as(&format!(
        "SELECT value, (extract(epoch FROM time) * 1000)::bigint FROM prom_metric.{metric} ORDER BY time"
    ))
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_and_bad_series_left_out_alone() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");

    // Bodies that are not a request at all: refused whole.
    for (case, body, message) in [
        ("bad snappy", b"this is not snappy at all".to_vec(), "snappy"),
        (
            "bad protobuf",
            snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap(),
            "protobuf",
        ),
    ] {
        let (status, text) = post(&client, &url, body).await.unwrap();
        assert_eq!(status, 400, "{case}: {text}");
        assert!(text.contains(message), "{case}: {text:?} should mention {message:?}");
    }

    // A series that cannot be stored is left out alone; the good one beside it is stored.
    let good = |i: i64| {
        series(
            &[("__name__", "innocent_bystander"), ("job", "x")],
            &[(*T0 + i, i as f64)],
        )
    };
    let mut invalid_utf8 = series(&[("__name__", "m"), ("a", "x")], &[(*T0, 1.0)]);
    invalid_utf8.labels[1].value = Bytes::from_static(&[0xc3, 0x28]);
    let mut nul = series(&[("__name__", "m"), ("a", "x")], &[(*T0, 1.0)]);
    nul.labels[1].value = Bytes::from_static(b"before\0after");
    // A native histogram whose spans promise more buckets than it has.
    let mut histogram = series(&[("__name__", "m")], &[]);
    histogram.histograms.push(promscale_connector::prompb::Histogram {
        count: Some(promscale_connector::prompb::histogram::Count::Int(1)),
        positive_spans: vec![promscale_connector::prompb::BucketSpan { offset: 0, length: 2 }],
        positive_deltas: vec![1],
        timestamp: *T0,
        ..Default::default()
    });
    let cases = vec![
        (
            "missing __name__",
            series(&[("job", "x")], &[(*T0, 1.0)]),
            "no __name__",
            "invalid_metric_name",
        ),
        (
            "empty label name",
            series(&[("", "v"), ("__name__", "m")], &[(*T0, 1.0)]),
            "invalid label name",
            "invalid_labels",
        ),
        (
            "NUL byte in a label name",
            series(&[("__name__", "m"), ("a\0b", "v")], &[(*T0, 1.0)]),
            "invalid label name",
            "invalid_labels",
        ),
        (
            "unsorted labels",
            series(&[("__name__", "m"), ("b", "1"), ("a", "2")], &[(*T0, 1.0)]),
            "not sorted",
            "invalid_labels",
        ),
        (
            "duplicate labels",
            series(&[("__name__", "m"), ("a", "1"), ("a", "2")], &[(*T0, 1.0)]),
            "more than once",
            "invalid_labels",
        ),
        (
            "timestamp out of range",
            series(&[("__name__", "m")], &[(i64::MAX / 2, 1.0)]),
            "outside the range",
            "timestamp_out_of_range",
        ),
        ("invalid UTF-8", invalid_utf8, "UTF-8", "invalid_labels"),
        ("NUL byte", nul, "NUL byte", "nul_byte"),
        (
            "invalid native histogram",
            histogram,
            "spans need 2 buckets, have 1",
            "invalid_histogram",
        ),
        (
            "two hours ahead",
            series(&[("__name__", "m")], &[(*T0 + 3 * 3_600_000, 1.0)]),
            "ahead of the connector's clock",
            "too_far_in_future",
        ),
    ];
    let case_count = cases.len();
    for (i, (case, bad, message, _)) in cases.iter().enumerate() {
        let i = i as i64;
        let (status, text) = post(&client, &url, encode(vec![good(i), bad.clone(), good(i + 1000)]))
            .await
            .unwrap();
        assert_eq!(status, 400, "{case}: {text}");
        assert!(text.contains(message), "{case}: {text:?} should mention {message:?}");
        assert!(text.contains("2 series stored; 1 left out"), "{case}: {text}");
    }
    // Every good sample is stored, once; nothing of the bad series is.
    let want: Vec<(f64, i64)> = (0..case_count as i64)
        .chain(1000..1000 + case_count as i64)
        .map(|i| (i as f64, *T0 + i))
        .collect();
    assert_eq!(stored(&db, "innocent_bystander").await, want);
    assert!(!metric_exists(&db, "m").await);

    // A series with some samples too far ahead keeps its others.
    let mixed = series(&[("__name__", "mixed")], &[(*T0, 1.0), (*T0 + 3 * 3_600_000, 2.0)]);
    let (status, text) = post(&client, &url, encode(vec![mixed])).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert_eq!(stored(&db, "mixed").await, [(1.0, *T0)]);

    // Labels Prometheus accepts are stored, values of any length included.
    let long = "x".repeat(5000);
    let longer = "y".repeat(100_000);
    let (status, text) = post(
        &client,
        &url,
        encode(vec![
            series(&[("__name__", "long_values"), ("v", &long)], &[(*T0, 1.0)]),
            series(&[("__name__", "long_values"), ("v", &longer)], &[(*T0, 2.0)]),
            series(&[("__name__", "long_values"), ("v", &longer)], &[(*T0 + 1, 3.0)]),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    let by_value: Vec<(i64, f64)> =
        sqlx::query_as("SELECT length(v)::bigint, value FROM prom_metric.long_values ORDER BY time, length(v)")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(by_value, [(5000, 1.0), (100_000, 2.0), (100_000, 3.0)]);
    let series_count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.series s JOIN _prom_catalog.metric m ON m.id = s.metric_id
          WHERE m.metric_name = 'long_values'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(series_count, 2, "one series per distinct long value");

    let wrong_encoding = client
        .post(&url)
        .header("Content-Encoding", "gzip")
        .body(encode(vec![good(0)]))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_encoding.status().as_u16(), 415);
    let unknown_message = client
        .post(&url)
        .header("Content-Encoding", "snappy")
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        )
        .body(encode(vec![good(0)]))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_message.status().as_u16(), 415);

    // The connector counts what it refused: requests by status code, left-out series and
    // samples by reason.
    let metrics = connector.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            r#"promscale_ingest_requests_total{{code="400"}} {}"#,
            2 + case_count + 1
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"promscale_ingest_requests_total{code="415"} 2"#),
        "{metrics}"
    );
    for (_, _, _, reason) in &cases {
        assert!(
            metrics.contains(&format!(
                r#"promscale_ingest_series_refused_total{{reason="{reason}"}}"#
            )),
            "{reason}: {metrics}"
        );
    }
    assert_eq!(
        sum_metric(&metrics, "promscale_ingest_series_refused_total"),
        Some((case_count + 1) as f64)
    );
    // One sample per case and one of `mixed`; the histogram series has no float sample.
    assert_eq!(
        sum_metric(&metrics, "promscale_ingest_samples_refused_total"),
        Some(case_count as f64)
    );
    assert!(connector.log().contains("remote-write request refused"));

    // The good series alone is accepted at both paths, with or without Content-Encoding.
    let (status, _) = post(&client, &url, encode(vec![good(0)])).await.unwrap();
    assert_eq!(status, 204);
    let (status, _) = post(&client, &connector.url("/api/v1/write"), encode(vec![good(0)]))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let plain = client.post(&url).body(encode(vec![good(0)])).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_values_and_timestamps_are_stored_bit_for_bit_and_retries_store_once() {
    let pg = TestPostgres::start();
    // Timestamps reach forward to 2100: accept samples that far ahead of the clock.
    let connector = Connector::start(&pg.uri(), &["--ingest.max-future=100years"]).await;
    let db = pg.pool().await;
    // Timestamps reach back to 1970: keep everything.
    sqlx::query("SELECT prom_api.set_default_retention_period('1000 years')")
        .execute(&db)
        .await
        .unwrap();
    let client = reqwest::Client::new();

    let values = [
        f64::NAN,
        f64::from_bits(STALE_NAN_BITS),
        f64::INFINITY,
        f64::NEG_INFINITY,
        // Not -0.0: proto3 encoders (prost, and Prometheus' gogo code) omit a double that
        // compares equal to 0, so -0.0 reaches any receiver as +0.0.
        -1e-300,
        f64::MIN_POSITIVE / 2.0, // subnormal
        f64::MAX,
        0.1 + 0.2,
    ];
    // Millisecond timestamps, including one before 1970 and one before PostgreSQL's epoch.
    let times = [
        *T0,
        *T0 + 1,
        *T0 + 999,
        -1_000,
        0,
        946_684_799_999,
        946_684_800_000,
        4_102_444_800_123,
    ];
    let samples: Vec<(i64, f64)> = times.iter().copied().zip(values).collect();
    let body = encode(vec![series(&[("__name__", "special_values")], &samples)]);
    for attempt in 0..2 {
        let (status, text) = post(&client, &connector.url("/write"), body.clone()).await.unwrap();
        assert_eq!(status, 204, "attempt {attempt}: {text}");
    }
    let rows = sqlx::query(
        "SELECT (extract(epoch FROM time) * 1000)::int8 AS ms, value FROM prom_data.special_values ORDER BY time",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let mut expected: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    expected.sort();
    let stored: Vec<(i64, u64)> = rows
        .iter()
        .map(|r| (r.get("ms"), r.get::<f64, _>("value").to_bits()))
        .collect();
    assert_eq!(stored, expected, "stored exactly once, bit for bit");

    // A retry that overlaps partly with stored samples stores only the new ones.
    let body = encode(vec![series(
        &[("__name__", "special_values")],
        &[(*T0, 123.0), (*T0 + 5_000, 7.0)],
    )]);
    let (status, _) = post(&client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 204);
    let (count, kept): (i64, f64) = sqlx::query_as(
        "SELECT count(*), (SELECT value FROM prom_data.special_values WHERE time = 'epoch'::timestamptz + $1 * interval '1 millisecond') FROM prom_data.special_values",
    )
    .bind(*T0)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(count, 9);
    assert!(kept.is_nan(), "the first value written for a timestamp wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_long_names_get_distinct_tables_and_quoted_columns() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();

    let long_a = format!("{}_alpha_total", "a_very_long_metric_name_prefix".repeat(4));
    let long_b = format!("{}_beta_total", "a_very_long_metric_name_prefix".repeat(4));
    let injection = "x'); DROP TABLE _prom_catalog.series; --";
    let request = encode(vec![
        series(&[("__name__", &long_a)], &[(*T0, 1.0)]),
        series(&[("__name__", &long_b)], &[(*T0, 2.0)]),
        // Byte order, as Prometheus sorts: "Select" < "__name__" < "select".
        series(
            &[
                ("Select", "upper"),
                ("__name__", "HTTP_Requests:rate5m"),
                ("select", "lower"),
            ],
            &[(*T0, 3.0)],
        ),
        series(
            &[
                ("__name__", "reserved_words"),
                ("labels", "l"),
                ("series_id", "s"),
                ("time", "t"),
                ("user", injection),
                ("value", "v"),
            ],
            &[(*T0, 4.0)],
        ),
        series(&[("__name__", "only_a_name")], &[(*T0, 5.0)]),
    ]);
    let (status, text) = post(&client, &connector.url("/write"), request).await.unwrap();
    assert_eq!(status, 204, "{text}");

    let tables: Vec<(String, String)> =
        sqlx::query_as("SELECT metric_name, table_name::text FROM _prom_catalog.metric ORDER BY metric_name")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(tables.len(), 5);
    let table_of = |metric: &str| tables.iter().find(|(m, _)| m == metric).unwrap().1.clone();
    assert!(table_of(&long_a).len() <= 63 && table_of(&long_b).len() <= 63);
    assert_ne!(table_of(&long_a), table_of(&long_b));
    assert_eq!(table_of("HTTP_Requests:rate5m"), "HTTP_Requests:rate5m");

    // Each long-named metric reads back through its own view.
    for (metric, value) in [(&long_a, 1.0), (&long_b, 2.0)] {
        let sql = format!("SELECT value FROM prom_metric.\"{}\"", table_of(metric));
        let v: f64 = sqlx::query_scalar(&sql).fetch_one(&db).await.unwrap();
        assert_eq!(v, value, "{metric}");
    }
    // Case-distinct label names are distinct columns.
    let row = sqlx::query(r#"SELECT "Select", "select", value FROM prom_metric."HTTP_Requests:rate5m""#)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        (row.get::<String, _>(0), row.get::<String, _>(1), row.get::<f64, _>(2)),
        ("upper".into(), "lower".into(), 3.0)
    );
    // Labels named like the view's own columns are renamed, and the injection is just a value.
    let row = sqlx::query(
        "SELECT time_label, value_label, labels_label, series_id_label, \"user\", value FROM prom_metric.reserved_words WHERE \"user\" = $1",
    )
    .bind(injection)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("time_label"), "t");
    assert_eq!(row.get::<String, _>("value_label"), "v");
    assert_eq!(row.get::<String, _>("labels_label"), "l");
    assert_eq!(row.get::<String, _>("series_id_label"), "s");
    assert_eq!(row.get::<f64, _>("value"), 4.0);
    let series_count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(series_count, 5, "the series table is intact");

    // A metric gaining a label key later gains a view column; old rows show NULL there.
    let request = encode(vec![series(
        &[("__name__", "only_a_name"), ("zone", "eu")],
        &[(*T0 + 1, 6.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), request).await.unwrap().0, 204);
    let zones: Vec<(Option<String>, f64)> =
        sqlx::query_as("SELECT zone, value FROM prom_metric.only_a_name ORDER BY time")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(zones, [(None, 5.0), (Some("eu".to_string()), 6.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_stored_once_per_distinct_entry() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let db = pg.pool().await;
    let entry = |help: &str| MetricMetadata {
        r#type: 1,
        metric_family_name: "http_requests_total".into(),
        help: help.into(),
        unit: String::new(),
    };
    let request = promscale_connector::prompb::WriteRequest {
        timeseries: vec![],
        metadata: vec![
            entry("Requests served."),
            entry("Requests served."),
            entry("Other help."),
            // The catalog cannot hold these: dropped and counted, the rest stored.
            entry("A NUL \0 in the help."),
            MetricMetadata {
                metric_family_name: "x".repeat(5000),
                ..entry("Too long a name.")
            },
        ],
    };
    let body = request.to_snappy();
    for _ in 0..2 {
        assert_eq!(
            post(&reqwest::Client::new(), &connector.url("/write"), body.clone())
                .await
                .unwrap()
                .0,
            204
        );
    }
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, help FROM _prom_catalog.metadata WHERE metric_family = 'http_requests_total' ORDER BY help",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("counter".into(), "Other help.".into()),
            ("counter".into(), "Requests served.".into())
        ]
    );
    let metrics = connector.metrics_text().await;
    assert_eq!(
        sum_metric(&metrics, "promscale_ingest_metadata_dropped_total"),
        Some(4.0)
    );
    let families: i64 = sqlx::query_scalar("SELECT count(DISTINCT metric_family) FROM _prom_catalog.metadata")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(families, 1);
}

/// One series with samples 8 hours apart over years: the request creates no table (the head
/// takes it in one row), samples beyond retention are dropped, and compaction creates at most
/// retention / chunk interval chunk tables, so the metric's view keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_spread_over_years_create_a_bounded_number_of_chunks() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    let tables = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('_prom_chunks', '_prom_compressed')",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    // A first sample creates the metric and its tables; what comes after is measured.
    let (status, _) = post(
        &client,
        &connector.url("/write"),
        encode(vec![series(&[("__name__", "spread")], &[(*T0, 0.0)])]),
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    let before = tables().await;
    let eight_hours = 8 * 3_600_000;
    let points: Vec<(i64, f64)> = (1..5000).map(|i| (*T0 - i * eight_hours, i as f64)).collect();
    let (status, text) = post(
        &client,
        &connector.url("/write"),
        encode(vec![series(&[("__name__", "spread")], &points)]),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(tables().await, before, "the write path creates no table");

    promscale_e2e::maintain(&db).await;
    let retention: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM prom_api.get_default_retention_period())::float8")
            .fetch_one(&db)
            .await
            .unwrap();
    let chunk: f64 = sqlx::query_scalar("SELECT extract(epoch FROM prom_api.get_default_chunk_interval())::float8")
        .fetch_one(&db)
        .await
        .unwrap();
    let chunks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.chunk c JOIN _prom_catalog.metric m ON m.id = c.metric_id
          WHERE m.metric_name = 'spread'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(
        chunks as f64 <= retention / chunk + 2.0,
        "{chunks} chunks for {retention}s / {chunk}s"
    );
    // Every sample within retention is there, through the view.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM prom_metric.spread")
        .fetch_one(&db)
        .await
        .unwrap();
    let within = 1
        + (1..5000)
            .filter(|i| (i * eight_hours) as f64 / 1000.0 < retention - 3600.0)
            .count() as i64;
    assert!(
        kept >= within && kept <= within + 4,
        "{kept} samples kept, {within} within retention"
    );
}

/// Remote write 2.0 on the same endpoint: stored like 1.0, with the written counts in the
/// answer's headers (on a partial 400 too); bad references cost their series only; a request
/// that is not one, or a message type the connector does not read, is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_is_stored_and_answered_to_the_letter() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    let url = connector.url("/api/v1/write");
    let t = *T0;

    let body = encode_v2(
        vec![
            series(
                &[("__name__", "rw2_total"), ("job", "a")],
                &[(t, 1.0), (t + 15_000, 2.0)],
            ),
            series(
                &[("__name__", "rw2_total"), ("job", "b")],
                &[(t, f64::from_bits(STALE_NAN_BITS))],
            ),
        ],
        Some((1, "Things counted.", "things")),
    );
    let (status, written, text) = post_v2(&client, &url, body).await.unwrap();
    assert_eq!((status, written), (204, [Some(3), Some(0), Some(0)]), "{text}");
    let bits: Vec<(f64, i64)> = stored(&db, "rw2_total").await;
    assert_eq!(bits.len(), 3);
    assert!(
        bits.iter().any(|(v, _)| v.to_bits() == STALE_NAN_BITS),
        "stale markers bit for bit"
    );
    let (kind, help, unit): (String, String, String) =
        sqlx::query_as("SELECT type, help, unit FROM _prom_catalog.metadata WHERE metric_family = 'rw2_total'")
            .fetch_one(&db)
            .await
            .expect("metadata sent with the series is stored");
    assert_eq!(
        (kind.as_str(), help.as_str(), unit.as_str()),
        ("counter", "Things counted.", "things")
    );

    // A series with a reference outside the symbols is left out alone: 400, the others are
    // committed and counted in the headers.
    let good = |i: i64| series(&[("__name__", "rw2_bystander")], &[(t + i, i as f64)]);
    let mut request = promscale_connector::prompb::v2::Request::decode(bytes::Bytes::from(
        snap::raw::Decoder::new()
            .decompress_vec(&encode_v2(vec![good(1), good(2), good(3)], None))
            .unwrap(),
    ))
    .unwrap();
    request.timeseries[1].labels_refs[1] = 4_000;
    let (status, written, text) = post_v2(&client, &url, request.to_snappy()).await.unwrap();
    assert_eq!((status, written), (400, [Some(2), Some(0), Some(0)]), "{text}");
    assert!(
        text.contains("outside the request's") && text.contains("2 series stored; 1 left out"),
        "{text}"
    );
    assert_eq!(stored(&db, "rw2_bystander").await, [(1.0, t + 1), (3.0, t + 3)]);

    // Not a request: refused whole, nothing written.
    let mut request = promscale_connector::prompb::v2::Request::decode(bytes::Bytes::from(
        snap::raw::Decoder::new()
            .decompress_vec(&encode_v2(vec![good(4)], None))
            .unwrap(),
    ))
    .unwrap();
    request.symbols[0] = bytes::Bytes::from_static(b"x");
    let (status, written, text) = post_v2(&client, &url, request.to_snappy()).await.unwrap();
    assert_eq!((status, written), (400, [Some(0), Some(0), Some(0)]), "{text}");
    assert!(text.contains("must start with the empty string"), "{text}");
    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap();
    let (status, _, text) = post_v2(&client, &url, garbage).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("io.prometheus.write.v2.Request"), "{text}");

    // Media types and messages it does not read: 415, without written counts.
    for content_type in [
        "application/json",
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/x-protobuf;proto",
    ] {
        let response = client
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", content_type)
            .body(encode_v2(vec![good(5)], None))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type}");
        assert!(response
            .headers()
            .get("X-Prometheus-Remote-Write-Samples-Written")
            .is_none());
    }
    // Remote write 1.0 answers carry no written counts, as Prometheus' own receiver's.
    let response = client
        .post(&url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf;proto=prometheus.WriteRequest")
        .body(encode(vec![good(6)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert!(response
        .headers()
        .get("X-Prometheus-Remote-Write-Samples-Written")
        .is_none());

    let metrics = connector.metrics_text().await;
    assert!(
        metrics.contains(r#"promscale_ingest_protocol_requests_total{protocol="2.0"} 4"#),
        "the four 2.0 requests read as such: {metrics}"
    );
}
