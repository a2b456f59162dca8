//! Turns the body of a remote-write request into validated series.
//!
//! Everything that can make a request unacceptable is checked here, before anything is
//! written, so that a request is either stored whole or refused whole: Prometheus drops a
//! request answered with 4xx, and a partly stored request would then be partly lost.

use bytes::Bytes;
use prost::Message;

use super::proto::{self, MetricType, WriteRequest};
use crate::storage::samples::PG_EPOCH_OFFSET_US;

/// Label name of the metric name, as in Prometheus.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// Why a request was refused. Every variant is the sender's fault (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("body is not valid snappy (block format expected, as remote-write 1.0 sends): {0}")]
    Snappy(String),
    #[error("decompressed body is {size} bytes, above the limit of {limit} bytes (raise --web.max-request-bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not a valid remote-write protobuf WriteRequest: {0}")]
    Protobuf(String),
    #[error("series {series} has no {METRIC_NAME_LABEL} label")]
    MissingMetricName { series: String },
    #[error("series {series} has an invalid metric name (must match [a-zA-Z_:][a-zA-Z0-9_:]*)")]
    InvalidMetricName { series: String },
    #[error("series {series} has an invalid label name {name:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)")]
    InvalidLabelName { series: String, name: String },
    #[error("series {series} has labels that are not sorted by name (remote-write requires sorted labels)")]
    UnsortedLabels { series: String },
    #[error("series {series} has the label {name:?} more than once")]
    DuplicateLabel { series: String, name: String },
    #[error("series {series} has a label that is not valid UTF-8")]
    InvalidUtf8 { series: String },
    #[error("series {series} has a sample at {timestamp} ms, outside the range PostgreSQL timestamps can hold")]
    TimestampOutOfRange { series: String, timestamp: i64 },
    #[error("series {series} carries native histograms, which this connector does not store yet; disable send_native_histograms in the remote_write config")]
    NativeHistograms { series: String },
}

/// A label whose name and value have been checked (valid name, UTF-8 value, value not empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    name: Bytes,
    value: Bytes,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: Bytes::from(name.into()),
            value: Bytes::from(value.into()),
        }
    }
    pub fn name(&self) -> &str {
        // Checked to be ASCII in `validate_series`.
        std::str::from_utf8(&self.name).unwrap_or_default()
    }
    pub fn value(&self) -> &str {
        // Checked to be UTF-8 in `validate_series`.
        std::str::from_utf8(&self.value).unwrap_or_default()
    }
}

/// One series of a request, validated; labels sorted by name and including `__name__`.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<Label>,
    pub samples: Vec<proto::Sample>,
}

impl Series {
    pub fn metric_name(&self) -> &str {
        self.labels
            .iter()
            .find(|l| l.name() == METRIC_NAME_LABEL)
            .map(Label::value)
            .unwrap_or_default()
    }

    /// Identity of the series for caching: names and values joined by 0xFF, a byte that
    /// appears neither in valid label names (ASCII) nor in UTF-8 text.
    pub fn identity(&self) -> Vec<u8> {
        let len = self.labels.iter().map(|l| l.name.len() + l.value.len() + 2).sum();
        let mut key = Vec::with_capacity(len);
        for l in &self.labels {
            key.extend_from_slice(&l.name);
            key.push(0xff);
            key.extend_from_slice(&l.value);
            key.push(0xff);
        }
        key
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Metadata {
    pub metric_family: String,
    pub r#type: &'static str,
    pub unit: String,
    pub help: String,
}

/// A decoded request: what to store, and what was received but is not stored.
#[derive(Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<Series>,
    pub metadata: Vec<Metadata>,
    pub exemplars_dropped: usize,
}

impl WriteBatch {
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// Decompresses (snappy block format), decodes and validates one remote-write body.
pub fn decode_snappy(body: &[u8], max_decompressed: usize) -> Result<WriteBatch, DecodeError> {
    let size = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if size > max_decompressed {
        return Err(DecodeError::TooLarge {
            size,
            limit: max_decompressed,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    decode_protobuf(Bytes::from(raw))
}

/// Decodes and validates an uncompressed `WriteRequest`.
pub fn decode_protobuf(raw: Bytes) -> Result<WriteBatch, DecodeError> {
    let request = WriteRequest::decode(raw).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let mut batch = WriteBatch::default();
    for ts in request.timeseries {
        batch.exemplars_dropped += ts.exemplars.len();
        if let Some(series) = validate_series(ts)? {
            batch.series.push(series);
        }
    }
    batch.metadata = request
        .metadata
        .into_iter()
        .filter(|m| !m.metric_family_name.is_empty())
        .map(|m| Metadata {
            r#type: MetricType::try_from(m.r#type)
                .unwrap_or(MetricType::Unknown)
                .as_prometheus_str(),
            metric_family: m.metric_family_name,
            unit: m.unit,
            help: m.help,
        })
        .collect();
    Ok(batch)
}

/// PostgreSQL's timestamptz range, in microseconds since 2000-01-01 (`MIN_TIMESTAMP` and
/// `END_TIMESTAMP` in PostgreSQL's `datatype/timestamp.h`).
const PG_MIN_MICROS: i64 = -211_813_488_000_000_000;
const PG_END_MICROS: i64 = 9_223_371_331_200_000_000;

/// Converts Prometheus milliseconds to PostgreSQL's timestamptz representation, if it fits.
pub fn unix_millis_to_pg_micros(ms: i64) -> Option<i64> {
    let pg = ms.checked_mul(1000)?.checked_sub(PG_EPOCH_OFFSET_US)?;
    (PG_MIN_MICROS..PG_END_MICROS).contains(&pg).then_some(pg)
}

/// Checks one series; `Ok(None)` for a series with nothing to store.
fn validate_series(ts: proto::TimeSeries) -> Result<Option<Series>, DecodeError> {
    let describe = || describe_labels(&ts.labels);
    if !ts.histograms.is_empty() {
        return Err(DecodeError::NativeHistograms { series: describe() });
    }
    let mut has_name = false;
    for (i, label) in ts.labels.iter().enumerate() {
        if i > 0 {
            let prev = &ts.labels[i - 1].name;
            if *prev == label.name {
                return Err(DecodeError::DuplicateLabel {
                    series: describe(),
                    name: String::from_utf8_lossy(&label.name).into_owned(),
                });
            }
            if *prev > label.name {
                return Err(DecodeError::UnsortedLabels { series: describe() });
            }
        }
        if std::str::from_utf8(&label.value).is_err() {
            return Err(DecodeError::InvalidUtf8 { series: describe() });
        }
        if label.name == METRIC_NAME_LABEL.as_bytes() {
            if label.value.is_empty() {
                continue;
            }
            if !is_valid_metric_name(&label.value) {
                return Err(DecodeError::InvalidMetricName { series: describe() });
            }
            has_name = true;
        } else if !is_valid_label_name(&label.name) {
            return Err(DecodeError::InvalidLabelName {
                series: describe(),
                name: String::from_utf8_lossy(&label.name).into_owned(),
            });
        }
    }
    if !has_name {
        return Err(DecodeError::MissingMetricName { series: describe() });
    }
    for s in &ts.samples {
        if unix_millis_to_pg_micros(s.timestamp).is_none() {
            return Err(DecodeError::TimestampOutOfRange {
                series: describe(),
                timestamp: s.timestamp,
            });
        }
    }
    if ts.samples.is_empty() {
        return Ok(None);
    }
    // A label with an empty value is the same as no label at all in Prometheus.
    let labels = ts
        .labels
        .into_iter()
        .filter(|l| !l.value.is_empty())
        .map(|l| Label {
            name: l.name,
            value: l.value,
        })
        .collect();
    Ok(Some(Series {
        labels,
        samples: ts.samples,
    }))
}

pub fn is_valid_label_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

pub fn is_valid_metric_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b':')
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
        }
        None => false,
    }
}

/// `{a="b", c="d"}` for error messages, cut short for absurdly long label sets.
fn describe_labels(labels: &[proto::Label]) -> String {
    let mut out = String::from("{");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&String::from_utf8_lossy(&l.name));
        out.push('=');
        out.push_str(&format!("{:?}", String::from_utf8_lossy(&l.value)));
        if out.len() > 300 {
            out.push_str(", ...");
            break;
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::TimeSeries;

    fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries::from_pairs(labels, samples)
    }

    fn encode(series: Vec<TimeSeries>) -> Vec<u8> {
        WriteRequest {
            timeseries: series,
            metadata: vec![],
        }
        .to_snappy()
    }

    #[test]
    fn accepts_a_valid_request_and_drops_empty_labels() {
        let body = encode(vec![ts(
            &[("__name__", "up"), ("empty", ""), ("job", "a")],
            &[(1000, 1.0)],
        )]);
        let batch = decode_snappy(&body, 1 << 20).unwrap();
        assert_eq!(batch.series.len(), 1);
        assert_eq!(batch.series[0].metric_name(), "up");
        let names: Vec<_> = batch.series[0].labels.iter().map(Label::name).collect();
        assert_eq!(names, ["__name__", "job"]);
    }

    #[test]
    fn refuses_each_kind_of_bad_series() {
        type Check = fn(&DecodeError) -> bool;
        let cases: Vec<(TimeSeries, Check)> = vec![
            (ts(&[("job", "a")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::MissingMetricName { .. })
            }),
            (ts(&[("__name__", "")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::MissingMetricName { .. })
            }),
            (ts(&[("__name__", "1up")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::InvalidMetricName { .. })
            }),
            (ts(&[("__name__", "up"), ("bad-name", "x")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::InvalidLabelName { .. })
            }),
            (ts(&[("__name__", "up"), ("b", "x"), ("a", "y")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::UnsortedLabels { .. })
            }),
            (ts(&[("__name__", "up"), ("a", "x"), ("a", "y")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::DuplicateLabel { .. })
            }),
            (ts(&[("__name__", "up")], &[(i64::MAX, 1.0)]), |e| {
                matches!(e, DecodeError::TimestampOutOfRange { .. })
            }),
        ];
        for (series, check) in cases {
            let body = encode(vec![ts(&[("__name__", "fine")], &[(1, 1.0)]), series]);
            let err = decode_snappy(&body, 1 << 20).unwrap_err();
            assert!(check(&err), "unexpected error {err}");
        }
    }

    #[test]
    fn refuses_invalid_utf8_values() {
        let mut series = ts(&[("__name__", "up"), ("a", "x")], &[(1, 1.0)]);
        series.labels[1].value = Bytes::from_static(&[0xff, 0xfe]);
        let err = decode_snappy(&encode(vec![series]), 1 << 20).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidUtf8 { .. }));
    }

    #[test]
    fn refuses_bad_snappy_bad_protobuf_and_oversized_bodies() {
        assert!(matches!(
            decode_snappy(b"definitely not snappy", 1 << 20),
            Err(DecodeError::Snappy(_))
        ));
        let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(matches!(
            decode_snappy(&garbage, 1 << 20),
            Err(DecodeError::Protobuf(_))
        ));
        let big = encode(vec![ts(&[("__name__", "up")], &[(1, 1.0); 100])]);
        assert!(matches!(decode_snappy(&big, 100), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn identity_separates_names_from_values() {
        let a = Series {
            labels: vec![Label::new("__name__", "m"), Label::new("ab", "c")],
            samples: vec![],
        };
        let b = Series {
            labels: vec![Label::new("__name__", "m"), Label::new("a", "bc")],
            samples: vec![],
        };
        assert_ne!(a.identity(), b.identity());
    }

    #[test]
    fn timestamps_convert_exactly_within_postgres_range() {
        assert_eq!(unix_millis_to_pg_micros(946_684_800_000), Some(0));
        assert_eq!(unix_millis_to_pg_micros(946_684_800_001), Some(1000));
        assert_eq!(unix_millis_to_pg_micros(i64::MIN), None);
    }
}
