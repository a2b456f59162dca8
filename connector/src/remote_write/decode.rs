//! Turns the body of a remote-write request into validated series.
//!
//! Everything that can make data unstorable is checked here, before anything is written. A
//! body that is not a request at all is refused whole; a series that cannot be stored is left
//! out alone ([`WriteBatch::refused`]) and the rest is stored. The handler then answers 400
//! naming what was left out, as Mimir does: Prometheus does not resend a 4xx, and the good
//! series are already committed.

use bytes::Bytes;
use prost::Message;

use crate::model::{is_valid_label_name, Label, Metadata, Series, METRIC_NAME_LABEL};
use crate::prompb::{self as proto, MetricType, WriteRequest};
use crate::storage::samples::PG_EPOCH_OFFSET_US;

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
    #[error("series {series} has an invalid label name {name:?} (names are non-empty UTF-8, as Prometheus 3 accepts them, without NUL bytes)")]
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
    #[error("series {series} has a label value with a NUL byte, which PostgreSQL text cannot hold")]
    NulByte { series: String },
    #[error(
        "series {series} has a label name of {len} bytes, above the {MAX_LABEL_NAME_BYTES} this connector can index"
    )]
    LabelNameTooLong { series: String, len: usize },
    #[error(
        "series {series} has a metric name of {len} bytes, above the {MAX_LABEL_NAME_BYTES} this connector can index"
    )]
    MetricNameTooLong { series: String, len: usize },
    #[error("series {series} has {count} labels, above the {MAX_LABELS} this connector can index")]
    TooManyLabels { series: String, count: usize },
    #[error("series {series} has {count} samples more than {limit:?} ahead of the connector's clock (the latest at {latest} ms); they were left out")]
    TooFarInFuture {
        series: String,
        count: usize,
        latest: i64,
        limit: std::time::Duration,
    },
}

/// Longest label name (and metric name) stored: the catalog indexes names beside (keys of)
/// values, and an index entry holds ~2.7 kB.
pub const MAX_LABEL_NAME_BYTES: usize = 1024;
/// Most labels in one series: its label ids form one indexed array.
pub const MAX_LABELS: usize = 500;

impl DecodeError {
    /// The reason label of `promscale_ingest_series_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Snappy(_) | DecodeError::TooLarge { .. } | DecodeError::Protobuf(_) => "invalid_request",
            DecodeError::MissingMetricName { .. } => "invalid_metric_name",
            DecodeError::InvalidLabelName { .. }
            | DecodeError::UnsortedLabels { .. }
            | DecodeError::DuplicateLabel { .. }
            | DecodeError::InvalidUtf8 { .. } => "invalid_labels",
            DecodeError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            DecodeError::NativeHistograms { .. } => "native_histograms",
            DecodeError::NulByte { .. } => "nul_byte",
            DecodeError::LabelNameTooLong { .. }
            | DecodeError::MetricNameTooLong { .. }
            | DecodeError::TooManyLabels { .. } => "labels_too_large",
            DecodeError::TooFarInFuture { .. } => "too_far_in_future",
        }
    }
}

/// What was left out of a request: counts by reason, and the first few errors for the
/// answer (a request of millions of bad series costs no more memory than a few).
#[derive(Debug, Default, PartialEq)]
pub struct Refusals {
    /// The first [`Refusals::KEPT`] errors.
    pub first: Vec<DecodeError>,
    /// Series (or parts of series) and samples left out, by reason.
    pub by_reason: std::collections::BTreeMap<&'static str, (usize, usize)>,
    /// Series (or parts of series) left out in all.
    pub series: usize,
}

impl Refusals {
    pub const KEPT: usize = 3;

    /// Records a series (or part of one) left out, with the samples it held.
    pub fn push(&mut self, error: DecodeError, samples: usize) {
        let counts = self.by_reason.entry(error.reason()).or_default();
        counts.0 += 1;
        counts.1 += samples;
        self.series += 1;
        if self.first.len() < Self::KEPT {
            self.first.push(error);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }
}

/// A decoded request: what to store, and what was received but is not stored.
#[derive(Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<Series>,
    pub metadata: Vec<Metadata>,
    /// Metadata entries the catalog cannot hold (a NUL byte, a name or unit over 1024 bytes).
    pub metadata_dropped: usize,
    pub exemplars_dropped: usize,
    /// Series, or samples, that cannot be stored; the rest of the batch is.
    pub refused: Refusals,
}

impl WriteBatch {
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Leaves out samples later than `latest_ms` (Unix ms), and series left with none.
    pub fn refuse_later_than(&mut self, latest_ms: i64, limit: std::time::Duration) {
        let refused = &mut self.refused;
        self.series.retain_mut(|series| {
            let before = series.samples.len();
            let latest = series.samples.iter().map(|s| s.timestamp).max().unwrap_or(i64::MIN);
            if latest <= latest_ms {
                return true;
            }
            series.samples.retain(|s| s.timestamp <= latest_ms);
            let count = before - series.samples.len();
            refused.push(
                DecodeError::TooFarInFuture {
                    series: describe_series(&series.labels),
                    count,
                    latest,
                    limit,
                },
                count,
            );
            !series.samples.is_empty()
        });
    }
}

fn describe_series(labels: &[Label]) -> String {
    let wire: Vec<proto::Label> = labels
        .iter()
        .map(|l| proto::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect();
    describe_labels(&wire)
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
        let samples = ts.samples.len();
        match validate_series(ts) {
            Ok(Some(series)) => batch.series.push(series),
            Ok(None) => {}
            Err(error) => batch.refused.push(error, samples),
        }
    }
    let received = request
        .metadata
        .iter()
        .filter(|m| !m.metric_family_name.is_empty())
        .count();
    batch.metadata = request
        .metadata
        .into_iter()
        // Metadata is descriptive: an entry the catalog cannot hold (a NUL byte, a name or unit
        // too long to index) is dropped rather than cost the samples beside it.
        .filter(|m| {
            !m.metric_family_name.is_empty()
                && m.metric_family_name.len() <= MAX_LABEL_NAME_BYTES
                && m.unit.len() <= MAX_LABEL_NAME_BYTES
                && ![&m.metric_family_name, &m.unit, &m.help]
                    .iter()
                    .any(|s| s.contains('\0'))
        })
        .map(|m| Metadata {
            r#type: MetricType::try_from(m.r#type)
                .unwrap_or(MetricType::Unknown)
                .as_prometheus_str(),
            metric_family: m.metric_family_name,
            unit: m.unit,
            help: m.help,
        })
        .collect();
    batch.metadata_dropped = received - batch.metadata.len();
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
    if ts.labels.len() > MAX_LABELS {
        return Err(DecodeError::TooManyLabels {
            series: describe(),
            count: ts.labels.len(),
        });
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
        if label.value.contains(&0) {
            return Err(DecodeError::NulByte { series: describe() });
        }
        if label.name.len() > MAX_LABEL_NAME_BYTES {
            return Err(DecodeError::LabelNameTooLong {
                series: describe(),
                len: label.name.len(),
            });
        }
        if label.name == METRIC_NAME_LABEL.as_bytes() {
            if label.value.is_empty() {
                continue;
            }
            // Any UTF-8 without NUL, as Prometheus 3 accepts it: checked above as a value.
            if label.value.len() > MAX_LABEL_NAME_BYTES {
                return Err(DecodeError::MetricNameTooLong {
                    series: describe(),
                    len: label.value.len(),
                });
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

/// `{a="b", c="d"}` for error messages, cut short for absurdly long label sets.
fn describe_labels(labels: &[proto::Label]) -> String {
    let mut out = String::from("{");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Names and values are cut short: either can be kilobytes long.
        let brief = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            match text.char_indices().nth(100) {
                Some((cut, _)) => (text[..cut].to_string(), "..."),
                None => (text.into_owned(), ""),
            }
        };
        let (name, more) = brief(&l.name);
        out.push_str(&name);
        out.push_str(more);
        out.push('=');
        let (value, more) = brief(&l.value);
        out.push_str(&format!("{value:?}{more}"));
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
    fn accepts_utf8_names_as_prometheus_3_does() {
        let body = encode(vec![ts(
            &[
                ("__name__", "http.server.duration"),
                ("http.route", "/a"),
                ("service.name", "checkout"),
                ("ünïcödé 名前", "x"),
            ],
            &[(1000, 1.0)],
        )]);
        let batch = decode_snappy(&body, 1 << 20).unwrap();
        assert!(batch.refused.is_empty(), "{:?}", batch.refused);
        assert_eq!(batch.series[0].metric_name(), "http.server.duration");
        let names: Vec<_> = batch.series[0].labels.iter().map(Label::name).collect();
        assert_eq!(names, ["__name__", "http.route", "service.name", "ünïcödé 名前"]);
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
            (ts(&[("", "x"), ("__name__", "up")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::InvalidLabelName { .. })
            }),
            (ts(&[("__name__", "up"), ("a\0b", "x")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::InvalidLabelName { .. })
            }),
            (ts(&[("__name__", "up\0")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::NulByte { .. })
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
        let mut nul = ts(&[("__name__", "up"), ("a", "x")], &[(1, 1.0)]);
        nul.labels[1].value = Bytes::from_static(b"x\0y");
        let mut invalid_utf8 = ts(&[("__name__", "up"), ("a", "x")], &[(1, 1.0)]);
        invalid_utf8.labels[1].value = Bytes::from_static(&[0xff, 0xfe]);
        let mut invalid_utf8_name = ts(&[("__name__", "up"), ("a", "x")], &[(1, 1.0)]);
        invalid_utf8_name.labels[1].name = Bytes::from_static(&[0xc3, 0x28]);
        let long_name = "n".repeat(MAX_LABEL_NAME_BYTES + 1);
        let many: Vec<(String, String)> = (0..=MAX_LABELS)
            .map(|i| (format!("l{i:04}"), "v".to_string()))
            .collect();
        let mut many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        many.insert(0, ("__name__", "up"));
        let mut cases = cases;
        cases.extend([
            (nul, (|e| matches!(e, DecodeError::NulByte { .. })) as Check),
            (invalid_utf8, |e| matches!(e, DecodeError::InvalidUtf8 { .. })),
            (invalid_utf8_name, |e| matches!(e, DecodeError::InvalidLabelName { .. })),
            (ts(&[("__name__", &long_name)], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::MetricNameTooLong { .. })
            }),
            (ts(&[("__name__", "up"), (&long_name, "x")], &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::LabelNameTooLong { .. })
            }),
            (ts(&many, &[(1, 1.0)]), |e| {
                matches!(e, DecodeError::TooManyLabels { .. })
            }),
        ]);
        for (series, check) in cases {
            // The bad series is left out alone: the good ones around it stay.
            let body = encode(vec![
                ts(&[("__name__", "fine")], &[(1, 1.0)]),
                series,
                ts(&[("__name__", "fine_too")], &[(2, 2.0), (3, 3.0)]),
            ]);
            let batch = decode_snappy(&body, 1 << 20).unwrap();
            let names: Vec<_> = batch.series.iter().map(Series::metric_name).collect();
            assert_eq!(names, ["fine", "fine_too"]);
            assert_eq!(batch.refused.series, 1);
            assert_eq!(batch.refused.by_reason.values().copied().collect::<Vec<_>>(), [(1, 1)]);
            let err = &batch.refused.first[0];
            assert!(check(err), "unexpected error {err}");
            assert!(err.to_string().len() < 1000, "messages stay short: {err}");
        }
    }

    #[test]
    fn long_label_values_are_accepted_and_described_briefly() {
        let long = "v".repeat(100_000);
        let body = encode(vec![ts(&[("__name__", "up"), ("a", &long)], &[(1, 1.0)])]);
        let batch = decode_snappy(&body, 1 << 20).unwrap();
        assert_eq!(batch.series[0].labels[1].value().len(), 100_000);
        assert!(describe_series(&batch.series[0].labels).len() < 300);
    }

    #[test]
    fn samples_too_far_ahead_are_left_out_alone() {
        let body = encode(vec![
            ts(&[("__name__", "a")], &[(1, 1.0), (5_000, 2.0), (9_000, 3.0)]),
            ts(&[("__name__", "b")], &[(8_000, 1.0)]),
            ts(&[("__name__", "c")], &[(2, 1.0)]),
        ]);
        let mut batch = decode_snappy(&body, 1 << 20).unwrap();
        batch.refuse_later_than(4_000, std::time::Duration::from_secs(600));
        let kept: Vec<_> = batch
            .series
            .iter()
            .map(|s| (s.metric_name(), s.samples.len()))
            .collect();
        assert_eq!(kept, [("a", 1), ("c", 1)]);
        assert_eq!(batch.refused.series, 2);
        assert_eq!(batch.refused.by_reason["too_far_in_future"], (2, 3));
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
