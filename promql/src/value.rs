//! What queries evaluate to.

use std::sync::Arc;

use crate::histogram::FloatHistogram;
use crate::labels::Labels;

/// One sample: milliseconds since the Unix epoch and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// One native histogram sample: milliseconds since the Unix epoch and the histogram (shared:
/// selectors hand the same histogram to every step that sees it).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    pub t: i64,
    pub h: Arc<FloatHistogram>,
}

/// A series and its samples in time order: float samples and native histogram samples apart,
/// as Prometheus keeps them (a series may change from one kind to the other).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramSample>,
    /// The start timestamp of each float sample (ms; 0: unknown), beside `samples`, or
    /// empty when the source keeps none (as the connector's storage). Prometheus' TSDB keeps
    /// them for floats only; `rate`, `irate`, `increase` and `resets` read a later start as a
    /// counter reset (`use-start-timestamps`).
    pub start_times: Vec<i64>,
}

impl Series {
    /// A series of float samples.
    pub fn floats(labels: Labels, samples: Vec<Sample>) -> Self {
        Series {
            labels,
            samples,
            histograms: Vec::new(),
            start_times: Vec::new(),
        }
    }

    /// Its float and histogram samples together.
    pub fn len(&self) -> usize {
        self.samples.len() + self.histograms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.histograms.is_empty()
    }
}

/// One element of an instant vector: a float, or a native histogram when `h` is set (`v` is
/// then 0 and means nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub h: Option<Arc<FloatHistogram>>,
}

impl InstantSample {
    /// A float element.
    pub fn float(labels: Labels, t: i64, v: f64) -> Self {
        InstantSample { labels, t, v, h: None }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    Vector(Vec<InstantSample>),
    /// A range vector of an instant query, or the result of a range query.
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A sample value as Prometheus writes it (Go's `strconv.FormatFloat(v, 'f', -1, 64)`): the
/// shortest decimal that reads back exactly, never an exponent, NaN and ±Inf spelled out.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern (`value.StaleNaN`). The
/// one definition; storage, tests and benches use it from here.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether a native histogram is Prometheus' staleness marker for a histogram series: its
/// sum is the staleness NaN.
pub fn is_stale_histogram(h: &FloatHistogram) -> bool {
    h.sum.to_bits() == STALE_NAN_BITS
}
