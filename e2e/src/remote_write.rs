//! Builds and sends remote-write requests the way Prometheus does.

use promscale_connector::prompb::{v2, TimeSeries, WriteRequest};

pub use promscale_promql::STALE_NAN_BITS;

pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::from_pairs(labels, samples)
}

pub fn encode(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    WriteRequest {
        timeseries,
        metadata: vec![],
    }
    .to_snappy()
}

/// The same series as a remote-write 2.0 body: one symbols table (the empty string first),
/// labels (of series and exemplars) as references into it, metadata with each series when
/// given as `(type, help, unit)`.
pub fn encode_v2(timeseries: Vec<TimeSeries>, metadata: Option<(i32, &str, &str)>) -> Vec<u8> {
    let mut symbols: Vec<bytes::Bytes> = vec![bytes::Bytes::new()];
    let mut symbol = |s: &bytes::Bytes| -> u32 {
        match symbols.iter().position(|x| x == s) {
            Some(p) => p as u32,
            None => {
                symbols.push(s.clone());
                (symbols.len() - 1) as u32
            }
        }
    };
    let timeseries = timeseries
        .into_iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: ts
                .labels
                .iter()
                .flat_map(|l| [symbol(&l.name), symbol(&l.value)])
                .collect(),
            samples: ts
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            exemplars: ts
                .exemplars
                .iter()
                .map(|e| v2::Exemplar {
                    labels_refs: e
                        .labels
                        .iter()
                        .flat_map(|l| [symbol(&l.name), symbol(&l.value)])
                        .collect(),
                    value: e.value,
                    timestamp: e.timestamp,
                })
                .collect(),
            metadata: metadata.map(|(r#type, help, unit)| v2::Metadata {
                r#type,
                help_ref: symbol(&bytes::Bytes::copy_from_slice(help.as_bytes())),
                unit_ref: symbol(&bytes::Bytes::copy_from_slice(unit.as_bytes())),
            }),
            ..Default::default()
        })
        .collect();
    v2::Request { symbols, timeseries }.to_snappy()
}

/// POSTs a remote-write 2.0 body with Prometheus 3's headers; returns the status, the
/// `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written` counts (None when
/// absent) and the response text.
pub async fn post_v2(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> reqwest::Result<(u16, [Option<u64>; 3], String)> {
    let response = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let written = ["Samples", "Histograms", "Exemplars"].map(|what| {
        response
            .headers()
            .get(format!("X-Prometheus-Remote-Write-{what}-Written"))
            .and_then(|v| v.to_str().ok()?.parse().ok())
    });
    Ok((status, written, response.text().await.unwrap_or_default()))
}

/// POSTs a body with Prometheus' headers; returns the status and the response text.
pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Result<(u16, String)> {
    let response = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// A series' wire labels as one comparable key (`name="value",...`), for tests that compare
/// answers series by series.
pub fn label_key(labels: &[promscale_connector::prompb::Label]) -> String {
    labels
        .iter()
        .map(|l| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(&l.name),
                String::from_utf8_lossy(&l.value)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A value with no short decimal form (8 bytes each in a block, as an exception), different
/// for every series and point: series of them fill a time chunk past the chunk blocks' 1 MiB
/// quickly.
pub fn incompressible_value(series: i64, i: i64) -> f64 {
    f64::from_bits(
        0x3ff0_0000_0000_0000 | ((series * 1_000_003 + i).wrapping_mul(2_654_435_761) as u64 & 0xf_ffff_ffff_ffff),
    )
}

/// An integer native histogram of `observations`, all in one bucket of schema 1, as
/// Prometheus sends one (bucket deltas).
pub fn integer_histogram(timestamp: i64, observations: u64) -> promscale_connector::prompb::Histogram {
    use promscale_connector::prompb::histogram::{Count, ZeroCount};
    use promscale_connector::prompb::{BucketSpan, Histogram};
    Histogram {
        count: Some(Count::Int(observations)),
        sum: observations as f64 * 0.25,
        schema: 1,
        zero_threshold: 1e-128,
        zero_count: Some(ZeroCount::Int(0)),
        positive_spans: vec![BucketSpan { offset: -1, length: 2 }],
        positive_deltas: vec![observations as i64, -(observations as i64)],
        timestamp,
        ..Default::default()
    }
}
