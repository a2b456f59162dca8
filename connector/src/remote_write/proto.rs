//! Prometheus remote-write 1.0 messages (`prometheus/prompb/types.proto`, `remote.proto`).
//!
//! Declared with prost derives instead of generated from `.proto` files so the build needs no
//! `protoc`. Label names and values are kept as `Bytes` slices of the decompressed request:
//! decoding then allocates no strings, and UTF-8 is checked once during validation.

use bytes::Bytes;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars are not stored; kept opaque so that they can be counted.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub exemplars: Vec<Bytes>,
    /// Native histograms are not stored yet; kept opaque so that a request carrying them is
    /// refused instead of silently losing data.
    #[prost(bytes = "bytes", repeated, tag = "4")]
    pub histograms: Vec<Bytes>,
}

impl TimeSeries {
    /// A series from `(name, value)` label pairs and `(timestamp ms, value)` samples, as
    /// clients, tests and benchmarks build them.
    pub fn from_pairs(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Self {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: Bytes::copy_from_slice(n.as_bytes()),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
            ..Default::default()
        }
    }
}

impl WriteRequest {
    /// The request as a remote-write 1.0 body: protobuf, snappy block format.
    pub fn to_snappy(&self) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(self))
            .expect("snappy can compress any input")
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

impl MetricType {
    /// The spelling Prometheus uses in its `/api/v1/metadata` answers.
    pub fn as_prometheus_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Gaugehistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::Stateset => "stateset",
        }
    }
}
