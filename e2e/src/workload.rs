//! A reproducible Prometheus-like workload for the benchmarks: series of a node-exporter-like
//! fleet, scraped every `step_ms`, cut into remote-write requests the way Prometheus' shards
//! send them. Each sender owns every n-th series, so every series stays in time order
//! (Prometheus' own receiver requires that).

use std::time::{Duration, Instant};

pub use promscale_connector::remote_write::handler::Protocol;

use crate::remote_write::{encode, encode_v2, post, post_v2, series};

#[derive(Debug, Clone)]
pub struct Workload {
    pub series: usize,
    /// The id of the first series: a workload starting at `series` has the same metrics and
    /// entirely new series (other instances), as after a rollout.
    pub first_id: usize,
    /// Concurrent senders (Prometheus' shards).
    pub senders: usize,
    /// Samples per request (Prometheus' max_samples_per_send).
    pub batch: usize,
    pub start_ms: i64,
    pub step_ms: i64,
    pub rounds: usize,
}

/// Pre-encoded request bodies: `payload[sender][round]` holds that sender's requests.
pub type Payload = Vec<Vec<Vec<Vec<u8>>>>;

/// A small deterministic generator (SplitMix64), so every run sends the same values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Workload {
    /// Labels of series `id`: 100 metrics, hosts of 100 series each.
    fn labels(id: usize) -> [(String, String); 5] {
        [
            (
                "__name__".into(),
                format!("bench_metric_{}_{}", id % 100, Self::kind_name(id)),
            ),
            ("cpu".into(), (id % 8).to_string()),
            ("env".into(), "production".into()),
            (
                "instance".into(),
                format!("10.0.{}.{}:9100", id / 100 / 250, id / 100 % 250),
            ),
            ("job".into(), "node".into()),
        ]
    }

    fn kind_name(id: usize) -> &'static str {
        [
            "requests_total",
            "cpu_seconds_total",
            "memory_bytes",
            "temperature_celsius",
        ][id % 4]
    }

    /// The next value of series `id` after `previous`, at `round`: integer and decimal
    /// counters, and integer and decimal gauges, as exporters report them.
    fn next_value(id: usize, round: usize, previous: f64) -> f64 {
        let r = mix(((id as u64) << 32) ^ round as u64);
        match id % 4 {
            0 => previous + (r % 50) as f64,
            1 => ((previous * 100.0).round() + (r % 1500) as f64) / 100.0,
            2 => (1_000_000_000 + (r % 10_000) * 4096) as f64,
            _ => ((previous * 10.0).round() + (r % 11) as f64 - 5.0) / 10.0,
        }
    }

    fn initial_value(id: usize) -> f64 {
        match id % 4 {
            3 => 45.0,
            _ => (mix(id as u64) % 1000) as f64,
        }
    }

    pub fn samples(&self) -> usize {
        self.series * self.rounds
    }

    /// Remote-write 1.0 bodies.
    pub fn payload(&self) -> Payload {
        self.payload_in(Protocol::V1)
    }

    /// Bodies of the given protocol (the same series and samples either way).
    pub fn payload_in(&self, protocol: Protocol) -> Payload {
        // Series go to senders as Prometheus' queue manager gives them to shards: by series
        // reference (the order the head created them in) modulo the shard count. The series
        // of one target (consecutive here) are spread over every sender, so a new target's
        // labels are wanted by all of them at once, as after a real rollout.
        (0..self.senders)
            .map(|sender| {
                let ids: Vec<usize> = (sender..self.series)
                    .step_by(self.senders)
                    .map(|i| i + self.first_id)
                    .collect();
                let labels: Vec<[(String, String); 5]> = ids.iter().map(|&id| Self::labels(id)).collect();
                let mut values: Vec<f64> = ids.iter().map(|&id| Self::initial_value(id)).collect();
                (0..self.rounds)
                    .map(|round| {
                        let ts = self.start_ms + round as i64 * self.step_ms;
                        for (v, &id) in values.iter_mut().zip(&ids) {
                            *v = Self::next_value(id, round, *v);
                        }
                        (0..ids.len())
                            .collect::<Vec<_>>()
                            .chunks(self.batch)
                            .map(|chunk| {
                                let list = chunk
                                    .iter()
                                    .map(|&i| {
                                        let l: Vec<(&str, &str)> =
                                            labels[i].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                                        series(&l, &[(ts, values[i])])
                                    })
                                    .collect();
                                match protocol {
                                    Protocol::V1 => encode(list),
                                    Protocol::V2 => encode_v2(list, None),
                                }
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

/// Sends rounds `rounds` of the payload to `url`, every sender concurrently, each request
/// after the previous one's answer; returns the time taken. Panics on any non-2xx answer.
pub async fn send_rounds(
    client: &reqwest::Client,
    url: &str,
    payload: &Payload,
    rounds: std::ops::Range<usize>,
) -> Duration {
    send_rounds_timed(client, url, payload, rounds).await.0
}

/// [`send_rounds`], also returning the longest any single request took.
pub async fn send_rounds_timed(
    client: &reqwest::Client,
    url: &str,
    payload: &Payload,
    rounds: std::ops::Range<usize>,
) -> (Duration, Duration) {
    send_rounds_timed_as(client, url, payload, rounds, Protocol::V1).await
}

/// [`send_rounds_timed`] of bodies of the given protocol, sent with its headers.
pub async fn send_rounds_timed_as(
    client: &reqwest::Client,
    url: &str,
    payload: &Payload,
    rounds: std::ops::Range<usize>,
    protocol: Protocol,
) -> (Duration, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = payload
        .iter()
        .map(|sender| {
            let (client, url) = (client.clone(), url.to_string());
            let bodies: Vec<Vec<u8>> = sender[rounds.clone()].iter().flatten().cloned().collect();
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for body in bodies {
                    let sent = Instant::now();
                    let (status, text) = match protocol {
                        Protocol::V1 => post(&client, &url, body).await,
                        Protocol::V2 => post_v2(&client, &url, body)
                            .await
                            .map(|(status, _, text)| (status, text)),
                    }
                    .expect("request failed");
                    assert!((200..300).contains(&status), "{url} answered {status}: {text}");
                    slowest = slowest.max(sent.elapsed());
                }
                slowest
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    (started.elapsed(), slowest)
}

/// Total size of the files under `dir`, in bytes.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
