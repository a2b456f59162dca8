//! Turns the body of a remote-write request into validated series.
//!
//! Everything that can make data unstorable is checked here, before anything is written. A
//! body that is not a request at all is refused whole; a series that cannot be stored is left
//! out alone ([`WriteBatch::refused`]) and the rest is stored. The handler then answers 400
//! naming what was left out, as Mimir does: Prometheus does not resend a 4xx, and the good
//! series are already committed.

use std::borrow::Cow;
use std::collections::BTreeSet;

use bytes::Bytes;
use prost::Message;

use crate::model::{
    is_valid_label_name, Exemplar, Label, Metadata, Series, MAX_EXEMPLAR_LABELS_RUNES, METRIC_NAME_LABEL,
};
use crate::prompb::{self as proto, decoded_size, v2, MetricType, WriteRequest};
use crate::storage::samples::PG_EPOCH_OFFSET_US;

/// Why a request was refused. Every variant is the sender's fault (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("body is not valid snappy (block format expected, as remote-write 1.0 sends): {0}")]
    Snappy(String),
    #[error("decompressed body is {size} bytes, above the limit of {limit} bytes (raise --web.max-request-bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("the request would take {cost} bytes of memory to decode, above the limit of {limit} bytes (four times --web.max-request-bytes): it holds too many small entries; send fewer series per request")]
    TooManyEntries { cost: usize, limit: usize },
    #[error("the body holds protobuf groups (wire types 3 and 4), which no remote-write message has")]
    Groups,
    #[error("body is not a valid remote-write protobuf WriteRequest: {0}")]
    Protobuf(String),
    #[error("body is not a valid remote-write 2.0 protobuf io.prometheus.write.v2.Request: {0}")]
    ProtobufV2(String),
    #[error("the symbols of a remote-write 2.0 request must start with the empty string")]
    SymbolsStart,
    #[error("series {series} of the request has {problem}")]
    BadReferences { series: usize, problem: String },
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
    #[error("series {series} has an invalid native histogram at {timestamp} ms: {problem}")]
    InvalidHistogram {
        series: String,
        timestamp: i64,
        problem: String,
    },
    #[error("series {series} has both samples and native histograms, which remote write 2.0 does not allow")]
    SamplesAndHistograms { series: String },
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
    #[error("series {series} has no valid {} label naming its tenant (1 to 150 letters, digits and !-_.*'()), and the request names none (--metrics.multi-tenancy.default-write-tenant=label)", crate::tenancy::TENANT_LABEL)]
    InvalidTenant { series: String },
    #[error("series {series} {detail} (--limits.{flag}, or per tenant prom_api.set_tenant_limits)")]
    OverLimit {
        series: String,
        /// The limit's flag, after `--limits.`.
        flag: &'static str,
        detail: String,
        reason: &'static str,
    },
    #[error("series {series} not created: {detail}")]
    SeriesLimit {
        series: String,
        detail: String,
        reason: &'static str,
    },
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
            DecodeError::Snappy(_)
            | DecodeError::TooLarge { .. }
            | DecodeError::TooManyEntries { .. }
            | DecodeError::Groups
            | DecodeError::Protobuf(_)
            | DecodeError::ProtobufV2(_)
            | DecodeError::SymbolsStart => "invalid_request",
            DecodeError::BadReferences { .. } => "invalid_references",
            DecodeError::MissingMetricName { .. } => "invalid_metric_name",
            DecodeError::InvalidLabelName { .. }
            | DecodeError::UnsortedLabels { .. }
            | DecodeError::DuplicateLabel { .. }
            | DecodeError::InvalidUtf8 { .. } => "invalid_labels",
            DecodeError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            DecodeError::InvalidHistogram { .. } => "invalid_histogram",
            DecodeError::SamplesAndHistograms { .. } => "samples_and_histograms",
            DecodeError::NulByte { .. } => "nul_byte",
            DecodeError::LabelNameTooLong { .. }
            | DecodeError::MetricNameTooLong { .. }
            | DecodeError::TooManyLabels { .. } => "labels_too_large",
            DecodeError::TooFarInFuture { .. } => "too_far_in_future",
            DecodeError::OverLimit { reason, .. } => reason,
            DecodeError::SeriesLimit { reason, .. } => reason,
            DecodeError::InvalidTenant { .. } => "invalid_tenant",
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
    /// Adds a validated series (`None`: nothing to store) with its exemplars as sent: the
    /// valid ones are kept, the others counted as dropped.
    fn push(&mut self, series: Option<Series>, exemplars: Vec<proto::Exemplar>) {
        let sent = exemplars.len();
        match series {
            Some(mut series) => {
                series.exemplars = valid_exemplars(exemplars);
                self.exemplars_dropped += sent - series.exemplars.len();
                if !series.samples.is_empty() || !series.histograms.is_empty() || !series.exemplars.is_empty() {
                    self.series.push(series);
                }
            }
            None => self.exemplars_dropped += sent,
        }
    }

    pub fn exemplar_count(&self) -> usize {
        self.series.iter().map(|s| s.exemplars.len()).sum()
    }

    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    pub fn histogram_count(&self) -> usize {
        self.series.iter().map(|s| s.histograms.len()).sum()
    }

    /// Leaves out samples and histograms later than `latest_ms` (Unix ms), and series left
    /// with none.
    /// Leaves out the series beyond the configured label limits (0: none), each counted with
    /// its reason; the others stay.
    /// A label named `ignored` (an HA pair's replica label, not stored) counts for none.
    pub fn refuse_over_label_limits(&mut self, limits: &crate::config::LabelLimits, ignored: Option<&str>) {
        if limits.max_labels == 0 && limits.max_name_bytes == 0 && limits.max_value_bytes == 0 {
            return;
        }
        let refused = &mut self.refused;
        self.series.retain(|series| {
            let over = |max: usize, len: usize| max > 0 && len > max;
            let counted = || series.labels.iter().filter(|l| Some(l.name()) != ignored);
            let count = counted().count();
            let problem = if over(limits.max_labels, count) {
                Some((
                    "max-labels-per-series",
                    format!("has {count} labels, above the limit of {}", limits.max_labels),
                    "max_labels_per_series",
                ))
            } else if let Some(l) = counted().find(|l| over(limits.max_name_bytes, l.name.len())) {
                Some((
                    "max-label-name-length",
                    format!(
                        "has a label name of {} bytes, above the limit of {}",
                        l.name.len(),
                        limits.max_name_bytes
                    ),
                    "label_name_too_long",
                ))
            } else {
                counted()
                    .find(|l| over(limits.max_value_bytes, l.value.len()))
                    .map(|l| {
                        (
                            "max-label-value-length",
                            format!(
                                "has a value of {} bytes for label {:?}, above the limit of {}",
                                l.value.len(),
                                l.name(),
                                limits.max_value_bytes
                            ),
                            "label_value_too_long",
                        )
                    })
            };
            let Some((flag, detail, reason)) = problem else {
                return true;
            };
            refused.push(
                DecodeError::OverLimit {
                    series: describe_series(&series.labels),
                    flag,
                    detail,
                    reason,
                },
                series.samples.len() + series.histograms.len(),
            );
            false
        });
    }

    pub fn refuse_later_than(&mut self, latest_ms: i64, limit: std::time::Duration) {
        let refused = &mut self.refused;
        let exemplars_dropped = &mut self.exemplars_dropped;
        self.series.retain_mut(|series| {
            // Exemplars too far ahead are left out too, as Prometheus does.
            let sent = series.exemplars.len();
            series.exemplars.retain(|e| e.timestamp <= latest_ms);
            *exemplars_dropped += sent - series.exemplars.len();
            if series.samples.is_empty() && series.histograms.is_empty() {
                return !series.exemplars.is_empty();
            }
            let before = series.samples.len() + series.histograms.len();
            let latest = (series.samples.iter().map(|s| s.timestamp))
                .chain(series.histograms.iter().map(|h| h.timestamp))
                .max()
                .unwrap_or(i64::MIN);
            if latest <= latest_ms {
                return true;
            }
            series.samples.retain(|s| s.timestamp <= latest_ms);
            series.histograms.retain(|h| h.timestamp <= latest_ms);
            let count = before - series.samples.len() - series.histograms.len();
            refused.push(
                DecodeError::TooFarInFuture {
                    series: describe_series(&series.labels),
                    count,
                    latest,
                    limit,
                },
                count,
            );
            !series.samples.is_empty() || !series.histograms.is_empty()
        });
    }
}

pub(crate) fn describe_series(labels: &[Label]) -> String {
    let wire: Vec<proto::Label> = labels
        .iter()
        .map(|l| proto::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect();
    describe_labels(&wire)
}

/// Decompresses (snappy block format), decodes and validates one remote-write 1.0 body.
pub fn decode_snappy(body: &[u8], max_decompressed: usize) -> Result<WriteBatch, DecodeError> {
    let raw = decompress(body, max_decompressed)?;
    within_memory_budget(&raw, &decoded_size::WRITE_REQUEST, max_decompressed)?;
    decode_protobuf(raw)
}

/// Decompresses (snappy block format), decodes and validates one remote-write 2.0 body.
pub fn decode_v2_snappy(body: &[u8], max_decompressed: usize) -> Result<WriteBatch, DecodeError> {
    let raw = decompress(body, max_decompressed)?;
    within_memory_budget(&raw, &decoded_size::WRITE_REQUEST_V2, max_decompressed)?;
    decode_v2_protobuf(raw)
}

/// What decoding a request may allocate: four times the largest body accepted, well above
/// what real requests take (one to four times their size), and bounded whatever the body
/// holds ([`decoded_size`]).
pub fn memory_budget(max_decompressed: usize) -> usize {
    max_decompressed.saturating_mul(4)
}

fn within_memory_budget(raw: &[u8], schema: &decoded_size::Schema, max_decompressed: usize) -> Result<(), DecodeError> {
    let cost = decoded_size::decoded_size(raw, schema).ok_or(DecodeError::Groups)?;
    let limit = memory_budget(max_decompressed);
    if cost > limit {
        return Err(DecodeError::TooManyEntries { cost, limit });
    }
    Ok(())
}

/// The snappy block format, refused beyond `max_decompressed` bytes before decompressing.
fn decompress(body: &[u8], max_decompressed: usize) -> Result<Bytes, DecodeError> {
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
    Ok(Bytes::from(raw))
}

/// Decodes and validates an uncompressed `io.prometheus.write.v2.Request`: each series'
/// label references are resolved into the labels remote write 1.0 would have carried, then
/// validated exactly as 1.0 series are. A series with references outside the symbols (or an
/// odd number of label references) is left out alone, like any other bad series. Per-series
/// metadata is kept under the metric's family name; start timestamps are accepted and not
/// stored.
pub fn decode_v2_protobuf(raw: Bytes) -> Result<WriteBatch, DecodeError> {
    let request = v2::Request::decode(raw).map_err(|e| DecodeError::ProtobufV2(e.to_string()))?;
    if request.symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(DecodeError::SymbolsStart);
    }
    let symbols = &request.symbols;
    let mut text = SymbolText::new(symbols.len());
    let mut batch = WriteBatch::default();
    let mut metadata: BTreeSet<Metadata> = BTreeSet::new();
    let mut metadata_unreadable = 0;
    for (n, ts) in request.timeseries.into_iter().enumerate() {
        let samples = ts.samples.len();
        let resolved = resolve_labels(n, &ts.labels_refs, symbols).and_then(|labels| {
            let entry = ts.metadata.map(|m| resolve_metadata(n, &m, symbols)).transpose()?;
            Ok((labels, entry))
        });
        let (labels, entry) = match resolved {
            Ok(resolved) => resolved,
            Err(error) => {
                batch.refused.push(error, samples);
                continue;
            }
        };
        let text_checked = text.all_valid(&ts.labels_refs, symbols);
        let name = labels
            .iter()
            .find(|l| l.name == METRIC_NAME_LABEL.as_bytes())
            .map(|l| l.value.clone());
        let exemplars: Vec<proto::Exemplar> = ts
            .exemplars
            .iter()
            .filter_map(|e| {
                // An exemplar whose references do not resolve is dropped, as an invalid one.
                let labels = resolve_labels(n, &e.labels_refs, symbols).ok()?;
                Some(proto::Exemplar {
                    labels,
                    value: e.value,
                    timestamp: e.timestamp,
                })
            })
            .collect();
        batch.exemplars_dropped += ts.exemplars.len() - exemplars.len();
        let series = proto::TimeSeries {
            labels,
            samples: ts
                .samples
                .iter()
                .map(|s| proto::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                })
                .collect(),
            exemplars: Vec::new(),
            histograms: ts.histograms,
        };
        if !series.samples.is_empty() && !series.histograms.is_empty() {
            batch.exemplars_dropped += exemplars.len();
            let series_text = describe_labels(&series.labels);
            batch.refused.push(
                DecodeError::SamplesAndHistograms { series: series_text },
                samples + series.histograms.len(),
            );
            continue;
        }
        let with_exemplars = !exemplars.is_empty();
        match validate_series(series, with_exemplars, text_checked) {
            Ok(stored) => {
                match (entry, name) {
                    (Some(Some((kind, help, unit))), Some(name)) => {
                        let family = family_name(std::str::from_utf8(&name).unwrap_or_default(), kind);
                        if kind != MetricType::Unknown || !help.is_empty() || !unit.is_empty() {
                            metadata.insert(Metadata {
                                tenant: String::new(),
                                r#type: kind.as_prometheus_str(),
                                metric_family: family.to_string(),
                                unit,
                                help,
                            });
                        }
                    }
                    (Some(None), _) => metadata_unreadable += 1,
                    _ => {}
                }
                batch.push(stored, exemplars);
            }
            Err(error) => {
                batch.exemplars_dropped += exemplars.len();
                batch.refused.push(error, samples);
            }
        }
    }
    let received = metadata.len();
    batch.metadata = metadata.into_iter().filter(storable_metadata).collect();
    batch.metadata_dropped = received - batch.metadata.len() + metadata_unreadable;
    Ok(batch)
}

/// The labels of series `n` from its references into `symbols`.
fn resolve_labels(n: usize, refs: &[u32], symbols: &[Bytes]) -> Result<Vec<proto::Label>, DecodeError> {
    if !refs.len().is_multiple_of(2) {
        return Err(DecodeError::BadReferences {
            series: n,
            problem: format!("an odd number of labels_refs ({})", refs.len()),
        });
    }
    if refs.len() / 2 > MAX_LABELS {
        return Err(DecodeError::TooManyLabels {
            series: format!("{n} of the request"),
            count: refs.len() / 2,
        });
    }
    let mut labels = Vec::with_capacity(refs.len() / 2);
    for pair in refs.chunks_exact(2) {
        labels.push(proto::Label {
            name: symbol(n, pair[0], symbols)?,
            value: symbol(n, pair[1], symbols)?,
        });
    }
    // Sorted on receipt, as Prometheus' receiver does (duplicates are still refused); senders
    // send them sorted, which is checked first.
    if !labels.is_sorted_by(|a, b| a.name <= b.name) {
        labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(labels)
}

/// Which symbols of a remote-write 2.0 request are text a label can hold (UTF-8 without NUL),
/// each checked once: a request's symbols are shared by many series (a metric name, a pod, a
/// job), and a series whose label symbols are all such text skips those checks in
/// [`validate_series`].
struct SymbolText(Vec<Checked>);

#[derive(Clone, Copy, PartialEq)]
enum Checked {
    Not,
    Valid,
    Invalid,
}

impl SymbolText {
    fn new(symbols: usize) -> Self {
        SymbolText(vec![Checked::Not; symbols])
    }

    /// Whether every symbol `refs` names is such text (references checked to be within the
    /// symbols beforehand; one outside them answers false).
    fn all_valid(&mut self, refs: &[u32], symbols: &[Bytes]) -> bool {
        refs.iter().all(|&r| {
            let Some(state) = self.0.get_mut(r as usize) else {
                return false;
            };
            if *state == Checked::Not {
                let s = &symbols[r as usize];
                *state = if std::str::from_utf8(s).is_ok() && !s.contains(&0) {
                    Checked::Valid
                } else {
                    Checked::Invalid
                };
            }
            *state == Checked::Valid
        })
    }
}

/// The type, help and unit of series `n`'s metadata: an error for references outside the
/// symbols (the series is left out, as Prometheus does), `None` for help or unit text that is
/// not UTF-8 (the metadata alone is dropped).
fn resolve_metadata(
    n: usize,
    metadata: &v2::Metadata,
    symbols: &[Bytes],
) -> Result<Option<(MetricType, String, String)>, DecodeError> {
    let help = symbol(n, metadata.help_ref, symbols)?;
    let unit = symbol(n, metadata.unit_ref, symbols)?;
    let text = |b: Bytes| String::from_utf8(b.to_vec()).ok();
    Ok(text(help).zip(text(unit)).map(|(help, unit)| {
        (
            MetricType::try_from(metadata.r#type).unwrap_or(MetricType::Unknown),
            help,
            unit,
        )
    }))
}

fn symbol(n: usize, reference: u32, symbols: &[Bytes]) -> Result<Bytes, DecodeError> {
    symbols
        .get(reference as usize)
        .cloned()
        .ok_or_else(|| DecodeError::BadReferences {
            series: n,
            problem: format!(
                "a reference ({reference}) outside the request's {} symbols",
                symbols.len()
            ),
        })
}

/// The family a series' metadata describes: remote write 2.0 sends it with each series, so
/// the `_bucket`, `_sum` and `_count` series of a histogram (`_gsum`, `_gcount` of a gauge
/// histogram, `_sum`, `_count` of a summary) name their family without the suffix, as the
/// exposition's TYPE line does. Counters keep their name: `foo_total` is the family in the
/// text format, while OpenMetrics' TYPE line says `foo`, which 2.0 does not tell apart.
fn family_name(series_name: &str, kind: MetricType) -> &str {
    let suffixes: &[&str] = match kind {
        MetricType::Histogram => &["_bucket", "_sum", "_count"],
        MetricType::Gaugehistogram => &["_bucket", "_gsum", "_gcount", "_sum", "_count"],
        MetricType::Summary => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| series_name.strip_suffix(s))
        .filter(|family| !family.is_empty())
        .unwrap_or(series_name)
}

/// Metadata is descriptive: an entry the catalog cannot hold (a NUL byte, a name or unit too
/// long to index) is dropped rather than cost the samples beside it.
fn storable_metadata(m: &Metadata) -> bool {
    !m.metric_family.is_empty()
        && m.metric_family.len() <= MAX_LABEL_NAME_BYTES
        && m.unit.len() <= MAX_LABEL_NAME_BYTES
        && ![&m.metric_family, &m.unit, &m.help].iter().any(|s| s.contains('\0'))
}

/// Decodes and validates an uncompressed `WriteRequest`.
pub fn decode_protobuf(raw: Bytes) -> Result<WriteBatch, DecodeError> {
    let request = WriteRequest::decode(raw).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let mut batch = WriteBatch::default();
    for mut ts in request.timeseries {
        let samples = ts.samples.len();
        let exemplars = std::mem::take(&mut ts.exemplars);
        match validate_series(ts, !exemplars.is_empty(), false) {
            Ok(series) => batch.push(series, exemplars),
            Err(error) => {
                batch.exemplars_dropped += exemplars.len();
                batch.refused.push(error, samples);
            }
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
        .filter(|m| !m.metric_family_name.is_empty())
        .map(|m| Metadata {
            tenant: String::new(),
            r#type: MetricType::try_from(m.r#type)
                .unwrap_or(MetricType::Unknown)
                .as_prometheus_str(),
            metric_family: m.metric_family_name,
            unit: m.unit,
            help: m.help,
        })
        .filter(storable_metadata)
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

/// Checks one series; `Ok(None)` for a series with nothing to store (no samples, and no
/// exemplars when `with_exemplars` is false: Prometheus sends exemplars in series of their
/// own, without samples). `text_checked` says every label name and value is already known to
/// be UTF-8 without NUL ([`SymbolText`]), so that those checks are skipped.
fn validate_series(
    ts: proto::TimeSeries,
    with_exemplars: bool,
    text_checked: bool,
) -> Result<Option<Series>, DecodeError> {
    let describe = || describe_labels(&ts.labels);
    // A name's text is checked as a value's is (or was as its symbol), and it is not empty.
    let name_ok = |name: &[u8]| {
        if text_checked {
            !name.is_empty()
        } else {
            is_valid_label_name(name)
        }
    };
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
        if !text_checked {
            if std::str::from_utf8(&label.value).is_err() {
                return Err(DecodeError::InvalidUtf8 { series: describe() });
            }
            if label.value.contains(&0) {
                return Err(DecodeError::NulByte { series: describe() });
            }
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
            // Any UTF-8 without NUL, as Prometheus 3 accepts it: checked above as a value, or
            // as its symbol ([`SymbolText`]).
            if label.value.len() > MAX_LABEL_NAME_BYTES {
                return Err(DecodeError::MetricNameTooLong {
                    series: describe(),
                    len: label.value.len(),
                });
            }
            has_name = true;
        } else if !name_ok(&label.name) {
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
    for h in &ts.histograms {
        let problem = if unix_millis_to_pg_micros(h.timestamp).is_none() {
            Some("its time is outside the range PostgreSQL timestamps can hold".to_string())
        } else {
            histogram_problem(h)
        };
        if let Some(problem) = problem {
            return Err(DecodeError::InvalidHistogram {
                series: describe(),
                timestamp: h.timestamp,
                problem,
            });
        }
    }
    if ts.samples.is_empty() && ts.histograms.is_empty() && !with_exemplars {
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
        histograms: ts.histograms,
        exemplars: Vec::new(),
    }))
}

/// The lowest and highest exponential schema, and the custom-buckets schema
/// (`model/histogram/generic.go`).
const EXPONENTIAL_SCHEMAS: std::ops::RangeInclusive<i32> = -4..=8;
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// What is wrong with a native histogram, checked as Prometheus' `Histogram.Validate` and
/// `FloatHistogram.Validate` check it, plus what its wire form can get wrong besides
/// (integer and float counts mixed).
fn histogram_problem(h: &proto::Histogram) -> Option<String> {
    use proto::histogram::{Count, ZeroCount};
    let float = h.is_float();
    if matches!(
        (float, h.zero_count),
        (true, Some(ZeroCount::Int(_))) | (false, Some(ZeroCount::Float(_)))
    ) {
        return Some("it mixes integer and float counts".into());
    }
    let has_deltas = !h.positive_deltas.is_empty() || !h.negative_deltas.is_empty();
    let has_counts = !h.positive_counts.is_empty() || !h.negative_counts.is_empty();
    if float && has_deltas {
        return Some("it is a float histogram with bucket deltas (float histograms send bucket counts)".into());
    }
    if !float && has_counts {
        return Some("it is an integer histogram with bucket counts (integer histograms send bucket deltas)".into());
    }
    // Float histograms' counts are checked where they are; integer ones' are made absolute.
    let (positive, negative): (Cow<[f64]>, Cow<[f64]>) = if float {
        (Cow::Borrowed(&h.positive_counts), Cow::Borrowed(&h.negative_counts))
    } else {
        (
            Cow::Owned(absolute_counts(&h.positive_deltas)),
            Cow::Owned(absolute_counts(&h.negative_deltas)),
        )
    };
    let zero_count = h.zero_count_value();
    if h.schema == CUSTOM_BUCKETS_SCHEMA {
        if let Some(problem) = custom_bounds_problem(&h.custom_values, &h.positive_spans, positive.len()) {
            return Some(format!("custom buckets: {problem}"));
        }
        if zero_count != 0.0 {
            return Some("custom buckets: must have zero count of 0".into());
        }
        if h.zero_threshold != 0.0 {
            return Some("custom buckets: must have zero threshold of 0".into());
        }
        if !h.negative_spans.is_empty() {
            return Some("custom buckets: must not have negative spans".into());
        }
        if !negative.is_empty() {
            return Some("custom buckets: must not have negative buckets".into());
        }
    } else if EXPONENTIAL_SCHEMAS.contains(&h.schema) {
        for (side, spans, buckets) in [
            ("positive", &h.positive_spans, &positive),
            ("negative", &h.negative_spans, &negative),
        ] {
            if let Some(problem) = spans_problem(spans, buckets.len()) {
                return Some(format!("{side} side: {problem}"));
            }
        }
        if let Some(problem) = negative_bucket(&negative) {
            return Some(format!("negative side: {problem}"));
        }
        if float && zero_count < 0.0 {
            return Some(format!("zero bucket has observation count of {zero_count}"));
        }
        if !h.custom_values.is_empty() {
            return Some("histogram with exponential schema must not have custom bounds".into());
        }
    } else {
        return Some(format!(
            "histogram has an invalid schema, which must be between {} and {} for exponential buckets, or {CUSTOM_BUCKETS_SCHEMA} for custom buckets, got schema {}",
            EXPONENTIAL_SCHEMAS.start(),
            EXPONENTIAL_SCHEMAS.end(),
            h.schema
        ));
    }
    match h.count {
        Some(Count::Float(count)) if count < 0.0 => {
            return Some(format!("observation count is {count}"));
        }
        _ => {}
    }
    if let Some(problem) = negative_bucket(&positive) {
        return Some(format!("positive side: {problem}"));
    }
    if !float {
        // Integer histograms: the buckets and the zero bucket hold every observation but NaN
        // ones (which only the count and a NaN sum record). Sums wrap as Go's uint64 do.
        let in_buckets = integer_total(&h.positive_deltas)
            .wrapping_add(integer_total(&h.negative_deltas))
            .wrapping_add(match h.zero_count {
                Some(ZeroCount::Int(c)) => c,
                _ => 0,
            });
        let count = match h.count {
            Some(Count::Int(c)) => c,
            _ => 0,
        };
        if h.sum.is_nan() {
            if in_buckets > count {
                return Some(format!(
                    "{in_buckets} observations found in buckets, but the Count field is {count}: histogram's observation count should be at least the number of observations found in the buckets"
                ));
            }
        } else if in_buckets != count {
            return Some(format!(
                "{in_buckets} observations found in buckets, but the Count field is {count}: histogram's observation count should equal the number of observations found in the buckets (in absence of NaN)"
            ));
        }
    }
    None
}

/// Bucket counts from an integer histogram's deltas (each relative to the bucket before).
pub fn absolute_counts(deltas: &[i64]) -> Vec<f64> {
    let mut current = 0i64;
    deltas
        .iter()
        .map(|&d| {
            current = current.wrapping_add(d);
            current as f64
        })
        .collect()
}

/// The observations in an integer histogram's buckets, summed as Prometheus sums them.
fn integer_total(deltas: &[i64]) -> u64 {
    let mut current = 0i64;
    let mut total = 0u64;
    for &d in deltas {
        current = current.wrapping_add(d);
        total = total.wrapping_add(current as u64);
    }
    total
}

fn negative_bucket(counts: &[f64]) -> Option<String> {
    counts.iter().enumerate().find(|(_, &c)| c < 0.0).map(|(i, c)| {
        format!(
            "bucket number {} has observation count of {c}: histogram has a bucket whose observation count is negative",
            i + 1
        )
    })
}

fn spans_problem(spans: &[proto::BucketSpan], buckets: usize) -> Option<String> {
    let mut span_buckets = 0u64;
    let mut end = 0i64;
    for (n, span) in spans.iter().enumerate() {
        if n > 0 && span.offset < 0 {
            return Some(format!(
                "span number {} with offset {}: histogram has a span whose offset is negative",
                n + 1,
                span.offset
            ));
        }
        if n == 0 && span.offset == i32::MIN {
            return Some(format!(
                "span number {} starts at bucket index {}: histogram has a span whose bucket index is out of range",
                n + 1,
                span.offset
            ));
        }
        span_buckets += u64::from(span.length);
        end += i64::from(span.offset) + i64::from(span.length);
        if end - 1 > i64::from(i32::MAX) {
            return Some(format!(
                "span number {} ends at bucket index {}: histogram has a span whose bucket index is out of range",
                n + 1,
                end - 1
            ));
        }
    }
    (span_buckets != buckets as u64).then(|| {
        format!("spans need {span_buckets} buckets, have {buckets} buckets: histogram spans specify different number of buckets than provided")
    })
}

fn custom_bounds_problem(bounds: &[f64], spans: &[proto::BucketSpan], buckets: usize) -> Option<String> {
    let mut prev = f64::NEG_INFINITY;
    for (i, &bound) in bounds.iter().enumerate() {
        if bound.is_nan() {
            return Some("histogram custom bounds must not be NaN".into());
        }
        if i > 0 && bound <= prev {
            return Some(format!(
                "previous bound is {prev} and current is {bound}: histogram custom bounds must be in strictly increasing order"
            ));
        }
        prev = bound;
    }
    if prev == f64::INFINITY {
        return Some("last +Inf bound must not be explicitly defined: histogram custom bounds must be finite".into());
    }
    let mut span_buckets = 0u64;
    let mut total_length = 0i64;
    for (n, span) in spans.iter().enumerate() {
        if span.offset < 0 {
            return Some(format!(
                "span number {} with offset {}: histogram has a span whose offset is negative",
                n + 1,
                span.offset
            ));
        }
        span_buckets += u64::from(span.length);
        total_length += i64::from(span.length) + i64::from(span.offset);
    }
    if span_buckets != buckets as u64 {
        return Some(format!(
            "spans need {span_buckets} buckets, have {buckets} buckets: histogram spans specify different number of buckets than provided"
        ));
    }
    if (bounds.len() as i64 + 1) < total_length {
        return Some(format!(
            "only {} custom bounds defined which is insufficient to cover total span length of {total_length}: histogram custom bounds are too few",
            bounds.len()
        ));
    }
    None
}

/// The exemplars Prometheus would keep, as stored: label names and values as a series' own
/// (empty values dropped), at most [`MAX_EXEMPLAR_LABELS_RUNES`] characters of labels, a
/// time PostgreSQL can hold; the others are left out (and counted by the caller).
fn valid_exemplars(exemplars: Vec<proto::Exemplar>) -> Vec<Exemplar> {
    exemplars
        .into_iter()
        .filter_map(|e| {
            unix_millis_to_pg_micros(e.timestamp)?;
            let mut labels = serde_json::Map::new();
            let mut runes = 0;
            for l in &e.labels {
                let name = std::str::from_utf8(&l.name)
                    .ok()
                    .filter(|_| is_valid_label_name(&l.name))?;
                let value = std::str::from_utf8(&l.value).ok().filter(|v| !v.contains('\0'))?;
                runes += name.chars().count() + value.chars().count();
                if !value.is_empty() && labels.insert(name.to_string(), value.into()).is_some() {
                    return None;
                }
            }
            (runes <= MAX_EXEMPLAR_LABELS_RUNES).then(|| Exemplar {
                labels: serde_json::Value::Object(labels).to_string(),
                value: e.value,
                timestamp: e.timestamp,
            })
        })
        .collect()
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
        // Names are quoted like values: any UTF-8 is a name now.
        let (name, more) = brief(&l.name);
        out.push_str(&format!("{name:?}{more}"));
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

    #[test]
    fn label_limits_leave_out_only_the_series_beyond_them_and_ignore_the_replica_label() {
        let series = |labels: &[(&str, &str)]| Series {
            labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            samples: vec![crate::prompb::Sample {
                value: 1.0,
                timestamp: 1,
            }],
            histograms: vec![],
            exemplars: vec![],
        };
        let mut batch = WriteBatch {
            series: vec![
                series(&[("__name__", "a"), ("__replica__", "r1"), ("b", "1"), ("c", "2")]),
                series(&[("__name__", "a"), ("b", "1"), ("c", "2"), ("d", "3")]),
                series(&[("__name__", "a"), ("b", "a-long-value")]),
            ],
            ..Default::default()
        };
        let limits = crate::config::LabelLimits {
            max_labels: 3,
            max_name_bytes: 0,
            max_value_bytes: 10,
        };
        batch.refuse_over_label_limits(&limits, Some("__replica__"));
        assert_eq!(batch.series.len(), 1, "the replica label counts for nothing");
        assert_eq!(batch.refused.series, 2);
        assert_eq!(batch.refused.by_reason["max_labels_per_series"], (1, 1));
        assert_eq!(batch.refused.by_reason["label_value_too_long"], (1, 1));
        assert!(batch.refused.first[0]
            .to_string()
            .contains("--limits.max-labels-per-series"));
    }
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
            histograms: vec![],
            exemplars: vec![],
        };
        let b = Series {
            labels: vec![Label::new("__name__", "m"), Label::new("a", "bc")],
            samples: vec![],
            histograms: vec![],
            exemplars: vec![],
        };
        assert_ne!(a.identity(), b.identity());
    }

    #[test]
    fn timestamps_convert_exactly_within_postgres_range() {
        assert_eq!(unix_millis_to_pg_micros(946_684_800_000), Some(0));
        assert_eq!(unix_millis_to_pg_micros(946_684_800_001), Some(1000));
        assert_eq!(unix_millis_to_pg_micros(i64::MIN), None);
    }

    /// A remote-write 2.0 request from series of (labels, samples, metadata), with its own
    /// symbols table (the empty string first).
    struct V2 {
        symbols: Vec<String>,
        request: v2::Request,
    }

    impl V2 {
        fn new() -> Self {
            V2 {
                symbols: vec![String::new()],
                request: v2::Request::default(),
            }
        }

        fn symbol(&mut self, s: &str) -> u32 {
            match self.symbols.iter().position(|x| x == s) {
                Some(p) => p as u32,
                None => {
                    self.symbols.push(s.to_string());
                    (self.symbols.len() - 1) as u32
                }
            }
        }

        fn series(
            mut self,
            labels: &[(&str, &str)],
            samples: &[(i64, f64)],
            metadata: Option<(i32, &str, &str)>,
        ) -> Self {
            let labels_refs = labels
                .iter()
                .flat_map(|(n, v)| [self.symbol(n), self.symbol(v)])
                .collect();
            let metadata = metadata.map(|(r#type, help, unit)| v2::Metadata {
                r#type,
                help_ref: self.symbol(help),
                unit_ref: self.symbol(unit),
            });
            self.request.timeseries.push(v2::TimeSeries {
                labels_refs,
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| v2::Sample {
                        value,
                        timestamp,
                        start_timestamp: 0,
                    })
                    .collect(),
                metadata,
                ..Default::default()
            });
            self
        }

        fn body(mut self) -> Vec<u8> {
            self.request.symbols = self.symbols.into_iter().map(Bytes::from).collect();
            self.request.to_snappy()
        }
    }

    #[test]
    fn remote_write_2_resolves_symbols_into_the_same_series_as_1_0() {
        let mut request = V2::new()
            .series(
                &[("__name__", "http_requests_total"), ("job", "api")],
                &[(1000, 1.0), (2000, 2.5)],
                Some((1, "Requests served.", "")),
            )
            .series(
                &[("__name__", "rpc_duration_seconds_bucket"), ("le", "0.5")],
                &[(1000, f64::from_bits(0x7ff0_0000_0000_0002))],
                Some((3, "Durations.", "seconds")),
            );
        // Start timestamps in both layouts are accepted.
        request.request.timeseries[0].created_timestamp = 500;
        request.request.timeseries[0].samples[0].start_timestamp = 500;
        // An exemplar whose labels resolve is kept; one with a reference outside the symbols
        // is dropped and counted.
        let (k, v) = (request.symbol("trace_id"), request.symbol("abc"));
        request.request.timeseries[0].exemplars = vec![
            v2::Exemplar {
                labels_refs: vec![k, v],
                value: 1.5,
                timestamp: 1500,
            },
            v2::Exemplar {
                labels_refs: vec![k, 999],
                value: 2.0,
                timestamp: 1600,
            },
        ];
        let batch = decode_v2_snappy(&request.body(), 1 << 20).unwrap();
        assert!(batch.refused.is_empty(), "{:?}", batch.refused);
        let v1 = decode_snappy(
            &encode(vec![
                ts(
                    &[("__name__", "http_requests_total"), ("job", "api")],
                    &[(1000, 1.0), (2000, 2.5)],
                ),
                ts(
                    &[("__name__", "rpc_duration_seconds_bucket"), ("le", "0.5")],
                    &[(1000, f64::from_bits(0x7ff0_0000_0000_0002))],
                ),
            ]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(batch.series.len(), 2);
        for (a, b) in batch.series.iter().zip(&v1.series) {
            assert_eq!(a.labels, b.labels);
            let bits = |s: &Series| {
                s.samples
                    .iter()
                    .map(|x| (x.timestamp, x.value.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(a), bits(b));
        }
        assert_eq!(batch.exemplars_dropped, 1);
        assert_eq!(
            batch.series[0].exemplars,
            [Exemplar {
                labels: r#"{"trace_id":"abc"}"#.into(),
                value: 1.5,
                timestamp: 1500
            }]
        );
        // Metadata under the family's name: a histogram's _bucket series names its family.
        let families: Vec<(&str, &str, &str, &str)> = batch
            .metadata
            .iter()
            .map(|m| (m.metric_family.as_str(), m.r#type, m.help.as_str(), m.unit.as_str()))
            .collect();
        assert_eq!(
            families,
            [
                ("http_requests_total", "counter", "Requests served.", ""),
                ("rpc_duration_seconds", "histogram", "Durations.", "seconds"),
            ]
        );
    }

    #[test]
    fn remote_write_2_bad_references_cost_only_their_series() {
        let good = |v: V2| v.series(&[("__name__", "fine")], &[(1, 1.0)], None);
        type Break = Box<dyn Fn(&mut v2::Request)>;
        let cases: Vec<(&str, Break)> = vec![
            (
                "an odd number of labels_refs",
                Box::new(|r: &mut v2::Request| r.timeseries[1].labels_refs.push(1)),
            ),
            (
                "a reference (999)",
                Box::new(|r: &mut v2::Request| r.timeseries[1].labels_refs[1] = 999),
            ),
            (
                "a reference (777)",
                Box::new(|r: &mut v2::Request| r.timeseries[1].metadata.as_mut().unwrap().help_ref = 777),
            ),
        ];
        for (problem, break_it) in cases {
            let mut request = good(good(V2::new()).series(&[("__name__", "bad")], &[(1, 1.0)], Some((2, "", ""))));
            break_it(&mut request.request);
            let batch = decode_v2_snappy(&request.body(), 1 << 20).unwrap();
            assert_eq!(batch.series.len(), 2, "{problem}");
            assert_eq!(batch.refused.series, 1, "{problem}");
            let message = batch.refused.first[0].to_string();
            assert!(
                message.contains(problem) && message.contains("series 1"),
                "{problem}: {message}"
            );
            assert_eq!(batch.refused.first[0].reason(), "invalid_references");
        }
        // Samples and histograms in one series: the series is left out, as the spec says;
        // a series of histograms alone is stored.
        let mut request = good(V2::new()).series(&[("__name__", "h")], &[(5, 1.0)], None);
        request.request.timeseries[1]
            .histograms
            .push(histogram_tests::integer());
        let mut request = request.series(&[("__name__", "h2")], &[], None);
        request.request.timeseries[2]
            .histograms
            .push(histogram_tests::integer());
        let batch = decode_v2_snappy(&request.body(), 1 << 20).unwrap();
        assert_eq!((batch.series.len(), batch.refused.series), (2, 1));
        assert_eq!(batch.refused.first[0].reason(), "samples_and_histograms");
        assert_eq!(batch.histogram_count(), 1);
    }

    #[test]
    fn remote_write_2_checks_each_symbol_as_1_0_checks_each_label() {
        // A bad symbol costs the series that name it, with 1.0's error, and the series beside
        // them that share its other symbols are stored; a symbol that is checked once and
        // found bad stays bad for every later series.
        let label = |n: &[u8], v: &[u8]| proto::Label {
            name: Bytes::copy_from_slice(n),
            value: Bytes::copy_from_slice(v),
        };
        let good = vec![label(b"__name__", b"up"), label(b"job", b"api")];
        let bad_ones: Vec<Vec<proto::Label>> = vec![
            vec![label(b"__name__", b"up"), label(b"job", b"\xff\xfe")],
            vec![label(b"__name__", b"up"), label(b"job", b"a\0b")],
            vec![label(b"__name__", b"up"), label(b"\xffjob", b"api")],
            vec![label(b"__name__", b"up"), label(b"j\0b", b"api")],
            vec![label(b"", b"api"), label(b"__name__", b"up")],
            vec![label(b"__name__", b"\xff"), label(b"job", b"api")],
        ];
        for bad in bad_ones {
            let series = [good.clone(), bad.clone(), bad.clone(), good.clone()];
            let mut symbols = vec![Bytes::new()];
            let mut symbol = |b: &Bytes| match symbols.iter().position(|s| s == b) {
                Some(p) => p as u32,
                None => {
                    symbols.push(b.clone());
                    (symbols.len() - 1) as u32
                }
            };
            let timeseries = series
                .iter()
                .map(|labels| v2::TimeSeries {
                    labels_refs: labels
                        .iter()
                        .flat_map(|l| [symbol(&l.name), symbol(&l.value)])
                        .collect(),
                    samples: vec![v2::Sample {
                        value: 1.0,
                        timestamp: 1,
                        start_timestamp: 0,
                    }],
                    ..Default::default()
                })
                .collect();
            let v2_batch = decode_v2_snappy(&v2::Request { symbols, timeseries }.to_snappy(), 1 << 20).unwrap();
            let v1_batch = decode_snappy(
                &encode(
                    series
                        .iter()
                        .map(|labels| TimeSeries {
                            labels: labels.clone(),
                            samples: vec![proto::Sample {
                                value: 1.0,
                                timestamp: 1,
                            }],
                            ..Default::default()
                        })
                        .collect(),
                ),
                1 << 20,
            )
            .unwrap();
            assert_eq!(v2_batch.refused.series, 2, "{bad:?}");
            assert_eq!(v2_batch.refused, v1_batch.refused, "{bad:?}");
            let labels = |b: &WriteBatch| b.series.iter().map(|s| s.labels.clone()).collect::<Vec<_>>();
            assert_eq!(labels(&v2_batch).len(), 2);
            assert_eq!(labels(&v2_batch), labels(&v1_batch));
        }
    }

    #[test]
    fn remote_write_2_requests_that_are_not_one_are_refused_whole() {
        let mut request = V2::new().series(&[("__name__", "up")], &[(1, 1.0)], None);
        request.symbols[0] = "up".into();
        assert_eq!(
            decode_v2_snappy(&request.body(), 1 << 20),
            Err(DecodeError::SymbolsStart)
        );
        let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(matches!(
            decode_v2_snappy(&garbage, 1 << 20),
            Err(DecodeError::ProtobufV2(_))
        ));
        let big = V2::new().series(&[("__name__", "up")], &[(1, 1.0); 100], None).body();
        assert!(matches!(decode_v2_snappy(&big, 100), Err(DecodeError::TooLarge { .. })));
        // An empty request is a valid one.
        assert_eq!(decode_v2_snappy(&V2::new().body(), 1 << 20), Ok(WriteBatch::default()));
    }

    #[test]
    fn exemplars_are_kept_as_prometheus_keeps_them() {
        let label = |n: &str, v: &str| proto::Label {
            name: Bytes::copy_from_slice(n.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        };
        let exemplar = |labels: Vec<proto::Label>, timestamp: i64| proto::Exemplar {
            labels,
            value: 0.25,
            timestamp,
        };
        let mut series = ts(&[("__name__", "latency_bucket"), ("le", "0.5")], &[(1000, 3.0)]);
        series.exemplars = vec![
            exemplar(
                vec![label("trace_id", "abc"), label("span.id", "x"), label("empty", "")],
                900,
            ),
            // 128 characters of labels at most (names and values), as in Prometheus.
            exemplar(vec![label("trace_id", &"é".repeat(120))], 910),
            exemplar(vec![label("trace_id", &"é".repeat(121))], 920),
            exemplar(vec![label("trace_id", "a\0b")], 930),
            exemplar(vec![label("", "x")], 940),
            exemplar(vec![], i64::MAX),
            exemplar(vec![], 950),
        ];
        let mut no_samples = ts(&[("__name__", "other")], &[]);
        no_samples.exemplars = vec![exemplar(vec![], 960)];
        let batch = decode_snappy(&encode(vec![series, no_samples]), 1 << 20).unwrap();
        let kept: Vec<(&str, i64)> = batch.series[0]
            .exemplars
            .iter()
            .map(|e| (e.labels.as_str(), e.timestamp))
            .collect();
        let long = format!(r#"{{"trace_id":"{}"}}"#, "é".repeat(120));
        assert_eq!(
            kept,
            [
                (r#"{"span.id":"x","trace_id":"abc"}"#, 900),
                (long.as_str(), 910),
                ("{}", 950)
            ]
        );
        assert_eq!(batch.exemplars_dropped, 4);
        // Prometheus sends exemplars in series of their own, without samples: kept.
        assert_eq!(batch.series[1].metric_name(), "other");
        assert_eq!(batch.exemplar_count(), 4);
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;
    use crate::prompb::histogram::{Count, ZeroCount};
    use crate::prompb::{BucketSpan, Histogram, TimeSeries};

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    /// Buckets 1, 2 (indexes 0, 1) and 1 (index 3), one in the zero bucket: five observations.
    pub fn integer() -> Histogram {
        Histogram {
            count: Some(Count::Int(5)),
            sum: 12.5,
            schema: 0,
            zero_threshold: 1e-128,
            zero_count: Some(ZeroCount::Int(1)),
            positive_spans: vec![span(0, 2), span(1, 1)],
            positive_deltas: vec![1, 1, -1],
            timestamp: 1_700_000_000_000,
            ..Default::default()
        }
    }

    fn float() -> Histogram {
        Histogram {
            count: Some(Count::Float(5.5)),
            sum: -3.0,
            schema: 3,
            zero_count: Some(ZeroCount::Float(0.5)),
            negative_spans: vec![span(-2, 2)],
            negative_counts: vec![2.0, 3.0],
            timestamp: 1_700_000_000_000,
            ..Default::default()
        }
    }

    fn custom() -> Histogram {
        Histogram {
            count: Some(Count::Int(3)),
            sum: 0.7,
            schema: CUSTOM_BUCKETS_SCHEMA,
            positive_spans: vec![span(0, 1), span(2, 1)],
            positive_deltas: vec![2, -1],
            custom_values: vec![0.1, 0.5, 1.0],
            timestamp: 1_700_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn valid_histograms_of_every_kind_pass() {
        for h in [integer(), float(), custom()] {
            assert_eq!(histogram_problem(&h), None, "{h:?}");
        }
        for schema in -4..=8 {
            assert_eq!(histogram_problem(&Histogram { schema, ..integer() }), None);
        }
        // NaN observations count only in the count (and make the sum NaN).
        let nan = Histogram {
            sum: f64::NAN,
            count: Some(Count::Int(7)),
            ..integer()
        };
        assert_eq!(histogram_problem(&nan), None);
        // An empty histogram is valid.
        assert_eq!(histogram_problem(&Histogram::default()), None);
    }

    #[test]
    fn invalid_histograms_are_refused_as_prometheus_refuses_them() {
        let cases: Vec<(Histogram, &str)> = vec![
            (Histogram { schema: 9, ..integer() }, "invalid schema"),
            (
                Histogram {
                    schema: -5,
                    ..integer()
                },
                "invalid schema",
            ),
            (
                Histogram {
                    positive_deltas: vec![1, 1, -3],
                    ..integer()
                },
                "negative",
            ),
            (
                Histogram {
                    positive_deltas: vec![1, 1],
                    ..integer()
                },
                "spans need 3 buckets, have 2",
            ),
            (
                Histogram {
                    positive_spans: vec![span(0, 2), span(-1, 1)],
                    ..integer()
                },
                "offset is negative",
            ),
            (
                Histogram {
                    positive_spans: vec![span(i32::MIN, 3)],
                    ..integer()
                },
                "out of range",
            ),
            (
                Histogram {
                    positive_spans: vec![span(i32::MAX, 3)],
                    ..integer()
                },
                "out of range",
            ),
            (
                Histogram {
                    count: Some(Count::Int(6)),
                    ..integer()
                },
                "should equal",
            ),
            (
                Histogram {
                    count: Some(Count::Int(4)),
                    sum: f64::NAN,
                    ..integer()
                },
                "at least",
            ),
            (
                Histogram {
                    zero_count: Some(ZeroCount::Float(1.0)),
                    ..integer()
                },
                "mixes integer and float",
            ),
            (
                Histogram {
                    positive_counts: vec![1.0],
                    ..integer()
                },
                "integer histogram with bucket counts",
            ),
            (
                Histogram {
                    positive_deltas: vec![1],
                    ..float()
                },
                "float histogram with bucket deltas",
            ),
            (
                Histogram {
                    negative_counts: vec![2.0, -3.0],
                    ..float()
                },
                "negative side",
            ),
            (
                Histogram {
                    count: Some(Count::Float(-1.0)),
                    ..float()
                },
                "observation count is -1",
            ),
            (
                Histogram {
                    zero_count: Some(ZeroCount::Float(-0.5)),
                    ..float()
                },
                "zero bucket",
            ),
            (
                Histogram {
                    custom_values: vec![1.0],
                    ..float()
                },
                "must not have custom bounds",
            ),
            (
                Histogram {
                    custom_values: vec![0.1, 0.5],
                    ..custom()
                },
                "insufficient",
            ),
            (
                Histogram {
                    custom_values: vec![0.5, 0.1, 1.0],
                    ..custom()
                },
                "strictly increasing",
            ),
            (
                Histogram {
                    custom_values: vec![0.1, 0.5, f64::INFINITY],
                    ..custom()
                },
                "must be finite",
            ),
            (
                Histogram {
                    custom_values: vec![0.1, f64::NAN, 1.0],
                    ..custom()
                },
                "NaN",
            ),
            (
                Histogram {
                    zero_count: Some(ZeroCount::Int(1)),
                    count: Some(Count::Int(4)),
                    ..custom()
                },
                "zero count of 0",
            ),
            (
                Histogram {
                    zero_threshold: 0.001,
                    ..custom()
                },
                "zero threshold of 0",
            ),
            (
                Histogram {
                    negative_spans: vec![span(0, 1)],
                    negative_deltas: vec![1],
                    ..custom()
                },
                "negative spans",
            ),
        ];
        for (h, problem) in cases {
            let found = histogram_problem(&h).unwrap_or_else(|| panic!("{h:?} should be refused ({problem})"));
            assert!(found.contains(problem), "{found:?} should mention {problem:?}");
        }
    }

    #[test]
    fn a_bad_histogram_costs_its_series_only_and_good_ones_are_kept() {
        let mut bad = TimeSeries::from_pairs(&[("__name__", "bad")], &[]);
        bad.histograms.push(Histogram {
            positive_deltas: vec![-1, 2, 0],
            ..integer()
        });
        let mut good = TimeSeries::from_pairs(&[("__name__", "good")], &[(1_700_000_000_000, 1.0)]);
        good.histograms.push(integer());
        good.histograms.push(Histogram {
            timestamp: 1_700_000_015_000,
            ..float()
        });
        let body = WriteRequest {
            timeseries: vec![bad, good],
            metadata: vec![],
        }
        .to_snappy();
        let batch = decode_snappy(&body, 1 << 20).unwrap();
        assert_eq!(batch.series.len(), 1);
        assert_eq!((batch.sample_count(), batch.histogram_count()), (1, 2));
        assert_eq!(batch.refused.first[0].reason(), "invalid_histogram");
        let message = batch.refused.first[0].to_string();
        assert!(message.contains("bad") && message.contains("negative"), "{message}");
    }

    #[test]
    fn histograms_too_far_ahead_are_left_out() {
        let mut ts = TimeSeries::from_pairs(&[("__name__", "h")], &[]);
        ts.histograms.push(integer());
        ts.histograms.push(Histogram {
            timestamp: 1_800_000_000_000,
            ..integer()
        });
        let body = WriteRequest {
            timeseries: vec![ts],
            metadata: vec![],
        }
        .to_snappy();
        let mut batch = decode_snappy(&body, 1 << 20).unwrap();
        batch.refuse_later_than(1_750_000_000_000, std::time::Duration::from_secs(600));
        assert_eq!(batch.histogram_count(), 1);
        assert_eq!(batch.refused.by_reason["too_far_in_future"], (1, 1));
    }
}
