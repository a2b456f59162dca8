//! Deleting series data through the admin API (`/api/v1/admin/tsdb/delete_series`): exact
//! to the millisecond in recent and compacted data alike, side by side with Prometheus 3
//! deleting the same; in chunk blocks, chunk tables, native histogram rows and chunks and
//! exemplars; the precedence of duplicates kept; off unless enabled.

use promscale_connector::prompb::{Exemplar, Label, TimeSeries};
use promscale_e2e::comparison::{compare, get};
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::{Prometheus, Version};
use promscale_e2e::remote_write::{
    encode, incompressible_value as raw_value, integer_histogram as histogram, post, series,
};
use promscale_e2e::{maintain, recent_ms};
use serde_json::Value;
use std::time::Duration;

const STEP_MS: i64 = 10_000;

/// Unix seconds with the milliseconds, as the API takes times.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The time of sample `i`: every 10 s, off the second by a few milliseconds.
fn time_of(first: i64, i: i64) -> i64 {
    first + i * STEP_MS + (i * 7) % 13
}

async fn delete(client: &reqwest::Client, base: &str, params: &[(&str, String)]) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/v1/admin/tsdb/delete_series"))
        .form(params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The raw samples of `selector` in `[from, to]` as (ms, value bits).
async fn raw(
    client: &reqwest::Client,
    connector: &Connector,
    selector: &str,
    from: i64,
    to: i64,
) -> Vec<Vec<(i64, u64)>> {
    let query = format!("{selector}[{}ms]", to - from + 1);
    let body = promscale_e2e::instant_query(client, &connector.url(""), &query, to).await;
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                    (t, p[1].as_str().unwrap().parse::<f64>().unwrap().to_bits())
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_series_data_answers_like_prometheus_3() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s", "--web.enable-admin-api"]).await;
    let reference = Prometheus::start_version(
        Version::V3,
        |_| "global: {scrape_interval: 1h}\n".to_string(),
        &["--web.enable-remote-write-receiver", "--web.enable-admin-api"],
    )
    .await;
    sqlx::query("SELECT prom_api.set_default_chunk_interval('30 minutes')")
        .execute(&db)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let (ours, theirs) = (connector.url(""), reference.url(""));

    // 540 samples (90 minutes) of four series; the first 360 compacted into chunks, the rest
    // left in the head.
    let points = 540;
    let first = (recent_ms() - points * STEP_MS) / 60_000 * 60_000;
    let pods = ["p0", "p1", "p2", "p3"];
    let send = |from: i64, to: i64| {
        let client = client.clone();
        let urls = [connector.url("/write"), reference.url("/api/v1/write")];
        async move {
            for start in (from..to).step_by(30) {
                let body = encode(
                    pods.iter()
                        .enumerate()
                        .map(|(n, pod)| {
                            let samples: Vec<(i64, f64)> = (start..(start + 30).min(to))
                                .map(|i| (time_of(first, i), (i * (n as i64 + 1)) as f64 * 0.5))
                                .collect();
                            series(&[("__name__", "del_requests_total"), ("pod", pod)], &samples)
                        })
                        .collect(),
                );
                for url in &urls {
                    let (status, text) = post(&client, url, body.clone()).await.unwrap();
                    assert!(status == 204 || status == 200, "{url}: {status} {text}");
                }
            }
        }
    };
    send(0, 360).await;
    assert!(maintain(&db).await.samples > 0, "some samples are compacted");
    send(360, points).await;

    let t = |i: i64| seconds(time_of(first, i));
    let deletions: Vec<Vec<(&str, String)>> = vec![
        // Across compacted and recent data, both ends on a sample: both deleted.
        vec![
            ("match[]", "del_requests_total{pod=\"p1\"}".to_string()),
            ("start", t(100)),
            ("end", t(400)),
        ],
        // A whole series.
        vec![("match[]", "del_requests_total{pod=\"p2\"}".to_string())],
        // Two selectors; ends a millisecond past and before a sample: those two kept.
        vec![
            ("match[]", "{__name__=\"del_requests_total\",pod=\"p0\"}".to_string()),
            ("match[]", "del_requests_total{pod=~\"p3\"}".to_string()),
            ("start", seconds(time_of(first, 200) + 1)),
            ("end", seconds(time_of(first, 230) - 1)),
        ],
        // Only recent data, with an RFC 3339 end.
        vec![
            ("match[]", "del_requests_total{pod=\"p3\"}".to_string()),
            ("start", t(500)),
            (
                "end",
                chrono::DateTime::from_timestamp_millis(time_of(first, 520))
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
        ],
    ];
    for (n, params) in deletions.iter().enumerate() {
        let (want, _) = delete(&client, &theirs, params).await;
        assert_eq!(want, 204, "{params:?}");
        if n == 0 {
            // The first through SQL, as a database user asks for it.
            let request = sql_delete(
                &db,
                "del_requests_total{pod=\"p1\"}",
                time_of(first, 100),
                time_of(first, 400),
            )
            .await;
            let (series, samples) = finished(&db, request).await;
            assert_eq!((series, samples), (1, 301));
            continue;
        }
        let (got, body) = delete(&client, &ours, params).await;
        assert_eq!(got, 204, "{params:?}: {body}");
    }
    let last = time_of(first, points - 1);
    let compare_all = |when: &'static str| {
        let client = client.clone();
        let (ours, theirs) = (ours.clone(), theirs.clone());
        async move {
            let mut failures = Vec::new();
            let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
                (
                    "/api/v1/query",
                    vec![
                        ("query", format!("del_requests_total[{}ms]", last - first + 1)),
                        ("time", seconds(last)),
                    ],
                ),
                (
                    "/api/v1/query_range",
                    vec![
                        ("query", "sum by (pod) (rate(del_requests_total[2m]))".to_string()),
                        ("start", seconds(first)),
                        ("end", seconds(last)),
                        ("step", "37".to_string()),
                    ],
                ),
            ];
            for (path, params) in &cases {
                failures.extend(compare(&client, &theirs, &ours, path, params, true).await);
            }
            assert!(failures.is_empty(), "{when}:\n{}", failures.join("\n"));
        }
    };
    compare_all("after deleting").await;
    // Exact: p1 lost 100..=400, p0 201..=229; p2 is gone.
    let p1 = raw(&client, &connector, "del_requests_total{pod=\"p1\"}", first, last).await;
    assert_eq!(p1[0].len() as i64, points - 301);
    let p0 = raw(&client, &connector, "del_requests_total{pod=\"p0\"}", first, last).await;
    assert_eq!(p0[0].len() as i64, points - 29);
    assert!(raw(&client, &connector, "del_requests_total{pod=\"p2\"}", first, last)
        .await
        .is_empty());

    // Compaction and sealing of what is left change nothing.
    maintain(&db).await;
    compare_all("after compacting the rest").await;

    // Bad requests are refused as Prometheus refuses them.
    for params in [
        vec![("start", t(1))],
        vec![
            ("match[]", "del_requests_total".to_string()),
            ("start", "yesterday".to_string()),
        ],
    ] {
        let (got, got_body) = delete(&client, &ours, &params).await;
        let (want, want_body) = delete(&client, &theirs, &params).await;
        assert_eq!(got, want, "{params:?}: {got_body} / {want_body}");
        assert_eq!(got_body["errorType"], want_body["errorType"], "{params:?}");
    }
    // Unlike Prometheus 3, which deletes every series without a pod label here, a selector
    // that matches the empty label set is refused, as /api/v1/series refuses it: months of
    // every metric are one typo away otherwise.
    let (got, body) = delete(&client, &ours, &[("match[]", "{pod=\"\"}".to_string())]).await;
    assert_eq!((got, &body["errorType"]), (400, &Value::from("bad_data")), "{body}");
    compare_all("after a refused deletion").await;
}

/// Asks for a deletion in SQL (`prom_api.delete_series`, times to the millisecond); its id.
async fn sql_delete(db: &sqlx::PgPool, selector: &str, start_ms: i64, end_ms: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT prom_api.delete_series($1, 'epoch'::timestamptz + $2 * interval '1 millisecond',
                                       'epoch'::timestamptz + $3 * interval '1 millisecond')",
    )
    .bind(selector)
    .bind(start_ms)
    .bind(end_ms)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits for a connector to carry out a deletion asked for in SQL; the series and samples it
/// deleted, which must have gone without error.
async fn finished(db: &sqlx::PgPool, request: i64) -> (i64, i64) {
    let outcome = promscale_e2e::sql_deletion(db, request).await;
    assert_eq!(outcome.status, "done", "{outcome:?}");
    (outcome.series.unwrap(), outcome.samples.unwrap())
}

/// `prom_api.drop_metric` empties one metric and no other; bad requests are refused when
/// asked for, or recorded as failed with the reason when the selector is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_asked_for_in_sql_are_carried_out_and_reported() {
    let (_pg, db, connector, first) = in_yesterdays_chunk().await;
    let client = reqwest::Client::new();
    let samples: Vec<(i64, f64)> = (0..200).map(|i| (first + i * STEP_MS, i as f64)).collect();
    // An awkward name: quotes and a backslash must survive the selector drop_metric builds.
    let awkward = "gone\"total\\";
    let body = encode(vec![
        series(&[("__name__", awkward), ("pod", "a")], &samples),
        series(&[("__name__", awkward), ("pod", "b")], &samples),
        series(&[("__name__", "kept_total"), ("pod", "a")], &samples),
    ]);
    let (status, text) = post(&client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 204, "{text}");
    // Half compacted into the chunk, half in the head.
    assert!(maintain(&db).await.samples > 0);
    let body = encode(vec![series(
        &[("__name__", awkward), ("pod", "a")],
        &[(first + 300 * STEP_MS, 1.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    let request: i64 = sqlx::query_scalar("SELECT prom_api.drop_metric($1)")
        .bind(awkward)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(finished(&db, request).await, (2, 401));
    let count = |selector: &'static str| {
        let client = client.clone();
        let base = connector.url("");
        async move {
            let answer = promscale_e2e::instant_query(
                &client,
                &base,
                &format!("count_over_time({selector}[1d])"),
                first + 400 * STEP_MS,
            )
            .await;
            answer["data"]["result"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("{__name__=\"gone\\\"total\\\\\"}").await, 0);
    assert_eq!(count("kept_total").await, 1);

    // Refused at once: no such metric, times the wrong way round, no selector.
    for (sql, message) in [
        ("SELECT prom_api.drop_metric('nope')", "there is no metric"),
        (
            "SELECT prom_api.delete_series('up', now(), now() - interval '1 hour')",
            "must not be after",
        ),
        ("SELECT prom_api.delete_series('  ')", "needs a series selector"),
    ] {
        let error = sqlx::query(sql).execute(&db).await.unwrap_err().to_string();
        assert!(error.contains(message), "{sql}: {error}");
    }
    // Recorded as failed, with the reason: not a selector, or one that matches everything.
    for (selector, reason) in [
        ("rate(kept_total[5m])", "series selector"),
        ("{pod=\"\"}", "non-empty matcher"),
    ] {
        let request: i64 = sqlx::query_scalar("SELECT prom_api.delete_series($1)")
            .bind(selector)
            .fetch_one(&db)
            .await
            .unwrap();
        let outcome = promscale_e2e::sql_deletion(&db, request).await;
        assert_eq!(outcome.status, "failed", "{selector}: {outcome:?}");
        let error = outcome.error.unwrap_or_default();
        assert!(error.contains(reason), "{selector}: {error}");
    }
    assert_eq!(count("kept_total").await, 1);
}

/// A database and a connector with the admin API whose metrics have day-long time chunks,
/// and a time an hour into yesterday's: what is written from there lies in one closed chunk.
async fn in_yesterdays_chunk() -> (TestPostgres, sqlx::PgPool, Connector, i64) {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s", "--web.enable-admin-api"]).await;
    sqlx::query("SELECT prom_api.set_default_chunk_interval('1 day')")
        .execute(&db)
        .await
        .unwrap();
    let day = 86_400_000;
    (pg, db, connector, (recent_ms() - day) / day * day + 3_600_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_reaches_chunk_tables_histograms_and_exemplars_and_keeps_precedence() {
    let (pg, db, connector, first) = in_yesterdays_chunk().await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");
    let at = |i: i64| first + i * STEP_MS;
    let pods = 100;
    let write_rounds = |from: i64, to: i64| {
        let client = client.clone();
        let url = url.clone();
        async move {
            for start in (from..to).step_by(50) {
                let body = encode(
                    (0..pods)
                        .map(|s| {
                            let samples: Vec<(i64, f64)> = (start..(start + 50).min(to))
                                .map(|i| (at(i), raw_value(s, i)))
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
    // 1400 raw values per series, 1.1 MB: the time chunk gets a table; the first 800 stay in
    // its blocks.
    write_rounds(0, 800).await;
    maintain(&db).await;
    write_rounds(800, 1400).await;
    // A repeat of a stored time with another value: the stored one wins, before and after.
    let body = encode(vec![series(
        &[("__name__", "big_raw"), ("pod", "p4")],
        &[(at(10), 7.0)],
    )]);
    assert_eq!(post(&client, &url, body).await.unwrap().0, 204);
    maintain(&db).await;
    let with_table: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.chunk c JOIN _prom_catalog.metric m ON m.id = c.metric_id
          WHERE m.metric_name = 'big_raw' AND c.table_name IS NOT NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(with_table, 1, "the time chunk has a table");
    // One more round in the head.
    write_rounds(1400, 1450).await;

    // Native histograms: 40 of one series, the first 20 compacted into a chunk; exemplars of
    // a float series.
    let hist = |from: i64, to: i64| TimeSeries {
        labels: vec![Label {
            name: "__name__".into(),
            value: "del_hist".into(),
        }],
        histograms: (from..to).map(|i| histogram(at(i), i as u64 + 1)).collect(),
        ..Default::default()
    };
    assert_eq!(post(&client, &url, encode(vec![hist(0, 20)])).await.unwrap().0, 204);
    maintain(&db).await;
    assert_eq!(post(&client, &url, encode(vec![hist(20, 40)])).await.unwrap().0, 204);
    let mut with_exemplars = series(
        &[("__name__", "del_ex")],
        &(0..10).map(|i| (at(i), i as f64)).collect::<Vec<_>>(),
    );
    with_exemplars.exemplars = (0..10)
        .map(|i| Exemplar {
            labels: vec![Label {
                name: "trace_id".into(),
                value: format!("t{i}").into(),
            }],
            value: i as f64,
            timestamp: at(i),
        })
        .collect();
    assert_eq!(post(&client, &url, encode(vec![with_exemplars])).await.unwrap().0, 204);

    let base = connector.url("");
    let deletions = [
        // In the blocks and the table and the head at once.
        ("big_raw{pod=\"p3\"}", at(700), at(1420)),
        // In the table only.
        ("big_raw{pod=\"p7\"}", at(900), at(1000)),
        // Next to a time sent twice (the second copy in the table, behind the blocks).
        ("big_raw{pod=\"p4\"}", at(11), at(12)),
        ("del_hist", at(15), at(25)),
        ("del_ex", at(3), at(5)),
    ];
    for (selector, start, end) in deletions {
        let (status, body) = delete(
            &client,
            &base,
            &[
                ("match[]", selector.to_string()),
                ("start", seconds(start)),
                ("end", seconds(end)),
            ],
        )
        .await;
        assert_eq!(status, 204, "{selector}: {body}");
    }

    let expected = |pod: i64, gone: std::ops::RangeInclusive<i64>| -> Vec<(i64, u64)> {
        (0..1450)
            .filter(|i| !gone.contains(i))
            .map(|i| (at(i), raw_value(pod, i).to_bits()))
            .collect()
    };
    let check = |when: &'static str| {
        let client = client.clone();
        let connector = &connector;
        async move {
            for (pod, gone) in [(3, 700..=1420), (7, 900..=1000), (4, 11..=12), (5, -1..=-1)] {
                let got = raw(
                    &client,
                    connector,
                    &format!("big_raw{{pod=\"p{pod}\"}}"),
                    at(0),
                    at(1449),
                )
                .await;
                assert_eq!(got.len(), 1, "{when}: p{pod}");
                assert_eq!(got[0], expected(pod, gone), "{when}: p{pod}");
            }
        }
    };
    check("after deleting").await;
    // Sealing and compaction afterwards keep it so.
    maintain(&db).await;
    check("after maintenance").await;

    let histograms: Vec<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM time) * 1000)::int8 FROM prom_info.native_histogram
          WHERE metric_name = 'del_hist' ORDER BY time",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let kept: Vec<i64> = (0..40).filter(|i| !(15..=25).contains(i)).map(at).collect();
    assert_eq!(histograms, kept);
    let exemplars: Vec<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM time) * 1000)::int8 FROM prom_info.exemplar WHERE metric_name = 'del_ex' ORDER BY time",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let kept: Vec<i64> = (0..10).filter(|i| !(3..=5).contains(i)).map(at).collect();
    assert_eq!(exemplars, kept);

    // Without --web.enable-admin-api: Prometheus' answer, and nothing deleted.
    let plain = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let (status, body) = delete(&client, &plain.url(""), &[("match[]", "big_raw".to_string())]).await;
    assert_eq!(
        (status, &body["errorType"], &body["error"]),
        (503, &Value::from("unavailable"), &Value::from("admin APIs disabled"))
    );
    let got = raw(&client, &connector, "big_raw{pod=\"p5\"}", at(0), at(1449)).await;
    assert_eq!(got[0].len(), 1450);
}

/// Rewritten rows keep their precedence: a head row or a chunk block written before
/// another holding the same time keeps winning once a deletion has rewritten it; and the
/// blocks of a chunk are rewritten into rows that fit a page even when what they hold takes
/// more room than before (compression turned off since they were written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_rows_keep_precedence_and_fit() {
    use promscale_connector::storage::compaction::CompactionOptions;
    let (_pg, db, connector, first) = in_yesterdays_chunk().await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");
    let base = connector.url("");
    let at = |i: i64| first + i * 15_000;
    let write = |name: &'static str, samples: Vec<(i64, f64)>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let body = encode(vec![series(&[("__name__", name)], &samples)]);
            assert_eq!(post(&client, &url, body).await.unwrap().0, 204);
        }
    };
    let compact_only = CompactionOptions {
        seal_after: Duration::from_secs(100 * 365 * 86_400),
        ..CompactionOptions::everything()
    };
    let one = |name: &'static str| {
        let client = client.clone();
        let connector = &connector;
        async move { raw(&client, connector, name, at(0), at(10)).await }
    };

    // Two head rows: the first holds t1 = 1 and t2, the second t1 = 2.
    write("dup_head", vec![(at(1), 1.0), (at(2), 5.0)]).await;
    write("dup_head", vec![(at(1), 2.0)]).await;
    // Two chunk blocks of one unsealed chunk, appended by two compactions, alike.
    write("dup_block", vec![(at(1), 1.0), (at(2), 5.0)]).await;
    promscale_e2e::maintain_with(&db, &compact_only).await;
    write("dup_block", vec![(at(1), 2.0)]).await;
    promscale_e2e::maintain_with(&db, &compact_only).await;
    let blocks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _prom_catalog.chunk_block b JOIN _prom_catalog.chunk c ON c.id = b.chunk_id
          JOIN _prom_catalog.metric m ON m.id = c.metric_id WHERE m.metric_name = 'dup_block'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(blocks, 2);
    for name in ["dup_head", "dup_block"] {
        assert_eq!(
            one(name).await,
            vec![vec![(at(1), 1f64.to_bits()), (at(2), 5f64.to_bits())]],
            "{name}"
        );
        let (status, body) = delete(
            &client,
            &base,
            &[
                ("match[]", name.to_string()),
                ("start", seconds(at(2))),
                ("end", seconds(at(2))),
            ],
        )
        .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            one(name).await,
            vec![vec![(at(1), 1f64.to_bits())]],
            "{name}: the first written still wins"
        );
    }

    // 1200 steady gauges of 240 samples at regular times, sealed into packed blocks.
    let gauges = 1200;
    for part in (0..240).step_by(120) {
        let body = encode(
            (0..gauges)
                .map(|g| {
                    let samples: Vec<(i64, f64)> = (part..part + 120).map(|i| (at(i), (g % 10) as f64)).collect();
                    series(&[("__name__", "regular"), ("g", &format!("g{g}"))], &samples)
                })
                .collect(),
        );
        assert_eq!(post(&client, &url, body).await.unwrap().0, 204);
    }
    maintain(&db).await;
    // Compression turned off since: what is rewritten is written raw, 8 bytes a value, so
    // a block rewritten as it was would no longer fit a page.
    sqlx::query("SELECT prom_api.set_metric_compression_setting('regular', false)")
        .execute(&db)
        .await
        .unwrap();
    let (status, body) = delete(
        &client,
        &base,
        &[
            ("match[]", "regular".to_string()),
            ("start", seconds(at(100))),
            ("end", seconds(at(110))),
        ],
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, counted) = get(
        &client,
        &connector.url("/api/v1/query"),
        &[
            ("query", format!("count_over_time(regular[{}ms])", at(239) - at(0) + 1)),
            ("time", seconds(at(239))),
        ],
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    let counts = counted["data"]["result"].as_array().unwrap();
    assert_eq!(counts.len(), gauges as usize);
    assert!(counts.iter().all(|c| c["value"][1] == "229"), "{counted}");
}
