//! Builds and sends remote-write requests the way Prometheus does.

use promscale_connector::prompb::{TimeSeries, WriteRequest};

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
