//! Warnings and infos that evaluating a query collects, as Prometheus 3 returns them beside
//! the result (the API's `warnings` and `infos`): each message once. The messages are
//! Prometheus' own (`util/annotations`), without the position suffix Prometheus appends
//! (promql-parser keeps no positions).

use std::collections::BTreeSet;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: BTreeSet<String>,
    pub infos: BTreeSet<String>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.warnings.is_empty() && self.infos.is_empty()
    }

    pub fn warn(&mut self, message: String) {
        self.warnings.insert(message);
    }

    pub fn info(&mut self, message: String) {
        self.infos.insert(message);
    }
}

/// `rate` or `increase` of floats of a metric whose name does not say it is a counter.
pub fn possible_non_counter(metric: &str) -> String {
    format!("PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}")
}

/// An aggregation that leaves native histograms out (topk, min, quantile, ...).
pub fn histogram_ignored_in_aggregation(aggregation: &str) -> String {
    format!("PromQL info: ignored histogram in {aggregation} aggregation")
}

/// A function of floats over a range that also held histograms, which it left out.
pub fn histogram_ignored_in_mixed_range(metric: &str) -> String {
    format!(
        "PromQL info: ignored histograms in a range containing both floats and histograms for metric name {metric:?}"
    )
}

/// rate, increase or delta over a range of floats and histograms together: no result.
pub fn mixed_floats_histograms(metric: &str) -> String {
    format!("PromQL warning: encountered a mix of histograms and floats for metric name {metric:?}")
}

pub fn native_histogram_not_counter(metric: &str) -> String {
    format!("PromQL warning: this native histogram metric is not a counter: {metric:?}")
}

pub fn native_histogram_not_gauge(metric: &str) -> String {
    format!("PromQL warning: this native histogram metric is not a gauge: {metric:?}")
}

/// A quantile outside [0, 1] (or NaN) for `quantile`, `quantile_over_time` or
/// `histogram_quantile`.
pub fn invalid_quantile(q: f64) -> String {
    format!(
        "PromQL warning: quantile value should be between 0 and 1, got {}",
        go_g(q)
    )
}

/// A range query whose result is sorted: range results are always ordered by labels.
pub fn sort_in_range_query() -> String {
    "PromQL warning: sort is ineffective for range queries since results are always ordered by labels".to_string()
}

/// A classic histogram bucket whose `le` is missing or not a number.
pub fn bad_bucket_label(metric: &str, le: &str) -> String {
    with_metric_name(
        format!("PromQL warning: bucket label \"le\" is missing or has a malformed value of {le:?}"),
        metric,
    )
}

/// histogram_quantile over classic and native histograms of the same series group.
pub fn mixed_classic_native_histograms(metric: &str) -> String {
    with_metric_name(
        "PromQL warning: vector contains a mix of classic and native histograms".to_string(),
        metric,
    )
}

/// A binary operator between a float and a histogram (or two histograms) that it does not
/// define: the element is left out.
pub fn incompatible_types_in_binop(left: &str, operator: &str, right: &str) -> String {
    format!("PromQL info: incompatible sample types encountered for binary operator {operator:?}: {left} {operator} {right}")
}

/// Prometheus' `maybeAddMetricName`.
fn with_metric_name(message: String, metric: &str) -> String {
    if metric.is_empty() {
        message
    } else {
        format!("{message} for metric name {metric:?}")
    }
}

/// Go's `%g` for the values a quantile warning shows.
fn go_g(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}
