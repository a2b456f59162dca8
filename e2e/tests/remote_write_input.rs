//! What the connector does with every kind of input: refuses bad requests whole with a 4xx
//! and a message, stores good ones exactly, and survives names that are hostile to SQL.

use bytes::Bytes;
use promscale_connector::remote_write::proto::MetricMetadata;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series, STALE_NAN_BITS};
use sqlx::Row;

static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(promscale_e2e::recent_ms);

async fn metric_exists(db: &sqlx::PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _prom_catalog.metric WHERE metric_name = $1)")
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_whole_with_a_message() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let db = pg.pool().await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");

    let good = || series(&[("__name__", "innocent_bystander"), ("job", "x")], &[(*T0, 1.0)]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad snappy", b"this is not snappy at all".to_vec(), "snappy"),
        (
            "bad protobuf",
            snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap(),
            "protobuf",
        ),
        (
            "missing __name__",
            encode(vec![good(), series(&[("job", "x")], &[(*T0, 1.0)])]),
            "no __name__",
        ),
        (
            "invalid metric name",
            encode(vec![good(), series(&[("__name__", "0abc")], &[(*T0, 1.0)])]),
            "invalid metric name",
        ),
        (
            "invalid label name",
            encode(vec![
                good(),
                series(&[("__name__", "m"), ("bad-label", "v")], &[(*T0, 1.0)]),
            ]),
            "invalid label name",
        ),
        (
            "unsorted labels",
            encode(vec![
                good(),
                series(&[("__name__", "m"), ("b", "1"), ("a", "2")], &[(*T0, 1.0)]),
            ]),
            "not sorted",
        ),
        (
            "duplicate labels",
            encode(vec![
                good(),
                series(&[("__name__", "m"), ("a", "1"), ("a", "2")], &[(*T0, 1.0)]),
            ]),
            "more than once",
        ),
        (
            "timestamp out of range",
            encode(vec![good(), series(&[("__name__", "m")], &[(i64::MAX / 2, 1.0)])]),
            "outside the range",
        ),
    ];
    for (case, body, message) in cases {
        let (status, text) = post(&client, &url, body).await.unwrap();
        assert_eq!(status, 400, "{case}: {text}");
        assert!(
            text.contains(message),
            "{case}: message {text:?} should mention {message:?}"
        );
    }

    let mut invalid_utf8 = series(&[("__name__", "m"), ("a", "x")], &[(*T0, 1.0)]);
    invalid_utf8.labels[1].value = Bytes::from_static(&[0xc3, 0x28]);
    let (status, text) = post(&client, &url, encode(vec![good(), invalid_utf8])).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("UTF-8"), "{text}");

    let mut histogram = series(&[("__name__", "m")], &[]);
    histogram.histograms.push(Bytes::from_static(b""));
    let (status, text) = post(&client, &url, encode(vec![good(), histogram])).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("native histograms"), "{text}");

    let wrong_encoding = client
        .post(&url)
        .header("Content-Encoding", "gzip")
        .body(encode(vec![good()]))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_encoding.status().as_u16(), 415);
    let remote_write_2 = client
        .post(&url)
        .header("Content-Encoding", "snappy")
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .body(encode(vec![good()]))
        .send()
        .await
        .unwrap();
    assert_eq!(remote_write_2.status().as_u16(), 415);

    // None of the refused requests stored anything, not even their valid series.
    assert!(!metric_exists(&db, "innocent_bystander").await);
    assert!(!metric_exists(&db, "m").await);

    // The connector counts what it refused, by status code.
    let metrics = reqwest::get(connector.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"promscale_ingest_requests_total{code="400"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"promscale_ingest_requests_total{code="415"} 2"#),
        "{metrics}"
    );
    assert!(connector.log().contains("remote-write request refused"));

    // And the same valid series alone is accepted, at both paths, with or without the
    // Content-Encoding header.
    let (status, _) = post(&client, &url, encode(vec![good()])).await.unwrap();
    assert_eq!(status, 204);
    let (status, _) = post(&client, &connector.url("/api/v1/write"), encode(vec![good()]))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let plain = client.post(&url).body(encode(vec![good()])).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 204);
    assert!(metric_exists(&db, "innocent_bystander").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_values_and_timestamps_are_stored_bit_for_bit_and_retries_store_once() {
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
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
    let request = promscale_connector::remote_write::proto::WriteRequest {
        timeseries: vec![],
        metadata: vec![
            entry("Requests served."),
            entry("Requests served."),
            entry("Other help."),
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
}
