//! Limits of remote write: series beyond the label limits are left out alone, with a 400
//! naming the limit once the rest of the request is stored; requests beyond the ingestion
//! rate are answered 429 with nothing stored, and pass again once the rate allows; all
//! counted in /metrics by reason.

use std::time::Duration;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::sum_metric;
use promscale_e2e::recent_ms;
use promscale_e2e::remote_write::{encode, post, series};

async fn count(client: &reqwest::Client, connector: &Connector, query: &str, at_ms: i64) -> f64 {
    let response = promscale_e2e::instant_query(client, &connector.url(""), query, at_ms).await;
    response["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn refused(connector: &Connector, metric: &str, reason: &str) -> f64 {
    let text = connector.metrics_text().await;
    let line = text
        .lines()
        .find(|l| l.starts_with(metric) && l.contains(&format!("reason=\"{reason}\"")))
        .unwrap_or_default();
    sum_metric(line, metric).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_over_the_label_limits_are_left_out_and_requests_over_the_rate_wait() {
    let pg = TestPostgres::start();
    let connector = Connector::start(
        &pg.uri(),
        &[
            "--limits.max-labels-per-series",
            "4",
            "--limits.max-label-name-length",
            "20",
            "--limits.max-label-value-length",
            "30",
            "--limits.ingestion-rate",
            "500",
            "--limits.ingestion-burst",
            "3000",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = connector.url("/write");
    let t = recent_ms();
    let long_value = "v".repeat(31);
    let body = encode(vec![
        series(&[("__name__", "fine"), ("a", "1"), ("b", "2"), ("c", "3")], &[(t, 1.0)]),
        series(
            &[("__name__", "wide"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
            &[(t, 1.0)],
        ),
        series(&[("__name__", "named"), ("a_label_name_of_21_by", "x")], &[(t, 1.0)]),
        series(&[("__name__", "valued"), ("a", &long_value)], &[(t, 1.0), (t + 1, 2.0)]),
    ]);
    let (status, text) = post(&client, &url, body).await.unwrap();
    assert_eq!(status, 400, "{text}");
    for words in [
        "1 series stored; 3 left out",
        "--limits.max-labels-per-series",
        "--limits.max-label-name-length",
        "--limits.max-label-value-length",
    ] {
        assert!(text.contains(words), "{words:?} in {text}");
    }
    assert_eq!(count(&client, &connector, "count(fine)", t).await, 1.0);
    for name in ["wide", "named", "valued"] {
        assert_eq!(
            count(&client, &connector, &format!("count({name})"), t).await,
            0.0,
            "{name}"
        );
    }
    let series_refused = "promscale_ingest_series_refused_total";
    assert_eq!(refused(&connector, series_refused, "max_labels_per_series").await, 1.0);
    assert_eq!(refused(&connector, series_refused, "label_name_too_long").await, 1.0);
    assert_eq!(
        refused(
            &connector,
            "promscale_ingest_samples_refused_total",
            "label_value_too_long"
        )
        .await,
        2.0
    );

    // 2,500 samples pass (the bucket holds 3,000); 2,500 more at once do not (they would
    // wait four seconds at 500 a second), nothing of them is stored, and the answer says
    // when to come back; five seconds later they pass.
    let batch = |metric: &'static str| {
        encode(
            (0..25)
                .map(|s| {
                    let samples: Vec<(i64, f64)> = (0..100).map(|i| (t - 100_000 + i * 1000, i as f64)).collect();
                    series(&[("__name__", metric), ("s", &s.to_string())], &samples)
                })
                .collect(),
        )
    };
    let (status, text) = post(&client, &url, batch("first")).await.unwrap();
    assert_eq!(status, 204, "{text}");
    let refused_answer = client
        .post(&url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(batch("second"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused_answer.status().as_u16(), 429);
    let retry_after: u64 = refused_answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry_after), "Retry-After: {retry_after}");
    let text = refused_answer.text().await.unwrap();
    assert!(
        text.contains("--limits.ingestion-rate") && text.contains("retry_on_http_429"),
        "{text}"
    );
    assert_eq!(count(&client, &connector, "count(second)", t).await, 0.0);
    assert_eq!(
        refused(&connector, "promscale_ingest_samples_refused_total", "rate_limited").await,
        2500.0
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, text) = post(&client, &url, batch("second")).await.unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(count(&client, &connector, "count(second)", t).await, 25.0);
}
