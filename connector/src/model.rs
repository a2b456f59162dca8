//! The domain types both sides of the connector share: a validated label, a series with its
//! samples, metric metadata. Decoders ([`crate::remote_write::decode`]) produce them; storage
//! ([`crate::storage`]) stores them.

use bytes::Bytes;

/// Samples are Prometheus' wire struct (`value`, `timestamp` in ms), kept as decoded: no copy.
pub use crate::prompb::Sample;

/// Native histogram samples are Prometheus' wire struct too, validated as Prometheus validates
/// them ([`crate::remote_write::decode`]): integer histograms with bucket deltas, float
/// histograms with bucket counts.
pub use crate::prompb::Histogram;

/// Label name of the metric name, as in Prometheus.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// A label name as Prometheus 3 accepts it (`model.UTF8Validation`): non-empty UTF-8,
/// without the NUL byte PostgreSQL text cannot hold.
pub fn is_valid_label_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&0) && std::str::from_utf8(name).is_ok()
}

/// A label whose name and value have been checked ([`is_valid_label_name`], UTF-8 value without
/// NUL, value not empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub(crate) name: Bytes,
    pub(crate) value: Bytes,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: Bytes::from(name.into()),
            value: Bytes::from(value.into()),
        }
    }
    pub fn name(&self) -> &str {
        // Checked to be UTF-8 in `validate_series`.
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
    pub samples: Vec<Sample>,
    /// Its native histogram samples.
    pub histograms: Vec<Histogram>,
    /// Its valid exemplars (the others are counted and dropped during validation).
    pub exemplars: Vec<Exemplar>,
}

/// An example observation of a series (typically with a `trace_id` label), validated: label
/// names and values as a series' own, at most [`MAX_EXEMPLAR_LABELS_RUNES`] characters of
/// them, a time PostgreSQL can hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// The labels as a JSON object (`{"trace_id":"..."}`), as stored.
    pub labels: String,
    pub value: f64,
    /// Unix milliseconds.
    pub timestamp: i64,
}

/// The most characters (names and values together) an exemplar's labels may have, as in
/// Prometheus (`exemplar.ExemplarMaxLabelSetLength`).
pub const MAX_EXEMPLAR_LABELS_RUNES: usize = 128;

impl Series {
    pub fn metric_name(&self) -> &str {
        self.labels
            .iter()
            .find(|l| l.name() == METRIC_NAME_LABEL)
            .map(Label::value)
            .unwrap_or_default()
    }

    /// Identity of the series for caching: names and values joined by 0xFF, a byte that
    /// never appears in UTF-8 text (names and values are UTF-8).
    pub fn identity(&self) -> Vec<u8> {
        let mut key = Vec::new();
        self.identity_into(&mut key);
        key
    }

    /// [`Series::identity`] written into `key` (emptied first), so that a buffer can serve
    /// many series.
    pub fn identity_into(&self, key: &mut Vec<u8>) {
        key.clear();
        key.reserve(self.labels.iter().map(|l| l.name.len() + l.value.len() + 2).sum());
        for l in &self.labels {
            key.extend_from_slice(&l.name);
            key.push(0xff);
            key.extend_from_slice(&l.value);
            key.push(0xff);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metadata {
    /// The tenant that sent it (`--metrics.multi-tenancy`; empty otherwise): each tenant sees
    /// its own metadata only.
    pub tenant: String,
    pub metric_family: String,
    pub r#type: &'static str,
    pub unit: String,
    pub help: String,
}
