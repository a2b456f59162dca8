//! Remote read: a Prometheus with no data of its own and `remote_read` pointed at the
//! connector answers like the reference Prometheus that holds the data (SAMPLES, which is what
//! Prometheus 2.42 asks for), and STREAMED_XOR_CHUNKS responses carry exactly the samples of
//! the reference's own streamed response.

use std::collections::BTreeMap;

use promscale_connector::prompb::{
    ChunkedReadResponse, LabelMatcher, MatchType, Query, ReadRequest, ReadResponse, ResponseType,
};
use promscale_connector::remote_read::xor_chunk;
use promscale_e2e::comparison::{Loaded, POINTS, STEP_MS};
use promscale_e2e::prometheus::Prometheus;
use prost::Message;

const QUERIES: &[&str] = &[
    "http_requests_total",
    "rate(http_requests_total{method=\"get\"}[5m])",
    "sum by (instance) (increase(http_requests_total[10m]))",
    "flaky_up",
    "special_values",
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "max_over_time(node_temperature_celsius[20m:1m])",
    "{__name__=~\"node_.*|flaky_up\"}",
];

/// Series -> samples as (time, value bits), from either response type.
type Samples = BTreeMap<String, Vec<(i64, u64)>>;

/// Reads through remote read; `ours` also checks the connector's chunk size limit (Prometheus'
/// own head chunks may hold more).
async fn remote_read(
    client: &reqwest::Client,
    url: &str,
    query: &Query,
    response_type: ResponseType,
    ours: bool,
) -> Samples {
    let request = ReadRequest {
        queries: vec![query.clone()],
        accepted_response_types: vec![response_type as i32],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let response = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    let bytes = response.bytes().await.unwrap();
    let mut out = Samples::new();
    match response_type {
        ResponseType::Samples => {
            assert_eq!(content_type, "application/x-protobuf");
            let raw = snap::raw::Decoder::new().decompress_vec(&bytes).unwrap();
            for s in &ReadResponse::decode(raw.as_slice()).unwrap().results[0].timeseries {
                let samples = s.samples.iter().map(|p| (p.timestamp, p.value.to_bits())).collect();
                out.insert(promscale_e2e::remote_write::label_key(&s.labels), samples);
            }
        }
        ResponseType::StreamedXorChunks => {
            assert!(
                content_type.starts_with("application/x-streamed-protobuf"),
                "{content_type}"
            );
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let length = prost::encoding::decode_varint(&mut rest).unwrap() as usize;
                let crc = u32::from_be_bytes(rest[..4].try_into().unwrap());
                let message = &rest[4..4 + length];
                assert_eq!(crc32c::crc32c(message), crc, "frame checksum");
                rest = &rest[4 + length..];
                for s in ChunkedReadResponse::decode(message).unwrap().chunked_series {
                    let entry = out
                        .entry(promscale_e2e::remote_write::label_key(&s.labels))
                        .or_default();
                    for chunk in s.chunks {
                        let samples = xor_chunk::decode(&chunk.data).expect("a valid XOR chunk");
                        assert!(!ours || samples.len() <= 120, "{} samples in a chunk", samples.len());
                        assert_eq!(
                            (samples[0].0, samples.last().unwrap().0),
                            (chunk.min_time_ms, chunk.max_time_ms)
                        );
                        entry.extend(samples.into_iter().map(|(t, v)| (t, v.to_bits())));
                    }
                }
            }
        }
    }
    // Prometheus answers with the samples of whole chunks that overlap the range.
    out.values_mut()
        .for_each(|s| s.retain(|&(t, _)| t >= query.start_timestamp_ms && t <= query.end_timestamp_ms));
    out.retain(|_, s| !s.is_empty());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reading_remotely_answers_like_the_reference() {
    let loaded = Loaded::start().await;
    let read_url = loaded.connector.url("/read");
    let reader = Prometheus::start(
        move |_| {
            format!("global: {{scrape_interval: 1h}}\nremote_read:\n  - url: \"{read_url}\"\n    read_recent: true\n")
        },
        &[],
    )
    .await;
    loaded.assert_same_answers(&reader.url(""), QUERIES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_response_types_carry_exactly_the_stored_samples() {
    // Every field bound: an unbound one would be dropped, stopping its server.
    let Loaded {
        pg: _pg,
        connector,
        reference,
        client,
        first_ms,
        version: _,
    } = Loaded::start().await;
    let matcher = |t: MatchType, name: &str, value: &str| LabelMatcher {
        r#type: t as i32,
        name: name.into(),
        value: value.into(),
    };
    let queries = [
        // Everything, including the stale marker and NaN/Inf values.
        (
            vec![matcher(MatchType::Re, "__name__", ".+")],
            first_ms,
            first_ms + POINTS * STEP_MS,
        ),
        (
            vec![
                matcher(MatchType::Eq, "__name__", "http_requests_total"),
                matcher(MatchType::Neq, "method", "get"),
            ],
            first_ms + 1_000_000,
            first_ms + 2_000_000,
        ),
        (
            vec![
                matcher(MatchType::Nre, "instance", "a|b"),
                matcher(MatchType::Re, "__name__", "node_.*"),
            ],
            0,
            i64::MAX,
        ),
        (
            vec![matcher(MatchType::Eq, "__name__", "nothing_here")],
            first_ms,
            first_ms + 60_000,
        ),
    ];
    for (matchers, start, end) in queries {
        let query = Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers,
        };
        let want = remote_read(
            &client,
            &reference.url("/api/v1/read"),
            &query,
            ResponseType::StreamedXorChunks,
            false,
        )
        .await;
        let samples = remote_read(&client, &connector.url("/read"), &query, ResponseType::Samples, true).await;
        let streamed = remote_read(
            &client,
            &connector.url("/api/v1/read"),
            &query,
            ResponseType::StreamedXorChunks,
            true,
        )
        .await;
        assert_eq!(samples, want, "SAMPLES for {query:?}");
        assert_eq!(streamed, want, "STREAMED_XOR_CHUNKS for {query:?}");
    }
}
