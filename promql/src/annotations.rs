//! Warnings and infos that evaluating a query collects, as Prometheus 3 returns them beside
//! the result (the API's `warnings` and `infos`): each message once. The messages are
//! Prometheus' own (`util/annotations`); each remembers the expression it is about, whose
//! start in the query the API appends as Prometheus does (` (1:25)`, [`Annotations::locate`]
//! and [`Annotations::as_strings`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use promql_parser::parser::Expr;

use crate::positions::{Lines, Positions};

/// An expression an annotation is about: its address in the tree, and whether it is meant as
/// the argument of a call or aggregation (which may start at a `+` before it, see
/// [`crate::positions::Place::outer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    pub node: usize,
    pub as_argument: bool,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Annotations {
    /// The messages, without positions.
    pub warnings: BTreeSet<String>,
    pub infos: BTreeSet<String>,
    /// Where in the query the expression of each message starts (`line:column`), once
    /// [`Annotations::locate`] found it.
    pub positions: BTreeMap<String, String>,
    /// What the API adds to a message before its position (histogram_quantile's forced
    /// monotonicity: the buckets, the largest correction, how many samples, when).
    pub details: BTreeMap<String, String>,
    /// The expressions each message was given for: the API places it at the last of them in
    /// Prometheus' order of evaluation, as Prometheus keeps the last of equal messages (the
    /// first for the forced monotonicity, which it merges into the first).
    sites: HashMap<String, Vec<Site>>,
    /// histogram_quantile's forced monotonicity, merged over series and steps until
    /// [`Annotations::finished`] words it: one per metric name it gives ("" for none).
    monotonicity: BTreeMap<String, Monotonicity>,
}

/// Where histogram_quantile had to raise bucket counts of classic histograms: the steps, the
/// bucket bounds, the largest raise, and how many more times than once.
#[derive(Debug, Clone, PartialEq)]
struct Monotonicity {
    min_t: i64,
    max_t: i64,
    min_bucket: f64,
    max_bucket: f64,
    max_diff: f64,
    merged: usize,
    sites: Vec<Site>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.warnings.is_empty() && self.infos.is_empty() && self.monotonicity.is_empty()
    }

    /// histogram_quantile made the bucket counts of a classic histogram monotonic at `t`: one
    /// info for the whole query, as Prometheus 3 merges them, or under delayed name removal
    /// one per metric, which it names (Prometheus gives `metric` only then; "" for none).
    pub fn forced_monotonicity(
        &mut self,
        metric: &str,
        t: i64,
        min_bucket: f64,
        max_bucket: f64,
        max_diff: f64,
        site: Option<Site>,
    ) {
        let Some(m) = self.monotonicity.get_mut(metric) else {
            let first = Monotonicity {
                min_t: t,
                max_t: t,
                min_bucket,
                max_bucket,
                max_diff,
                merged: 0,
                sites: site.into_iter().collect(),
            };
            self.monotonicity.insert(metric.to_string(), first);
            return;
        };
        m.min_t = m.min_t.min(t);
        m.max_t = m.max_t.max(t);
        if min_bucket < m.min_bucket {
            m.min_bucket = min_bucket;
        }
        if max_bucket > m.max_bucket {
            m.max_bucket = max_bucket;
        }
        if max_diff > m.max_diff {
            m.max_diff = max_diff;
        }
        m.merged += 1;
        add_site(&mut m.sites, site);
    }

    /// The annotations with those merged along the way worded among the infos.
    pub fn finished(mut self) -> Self {
        for (metric, m) in std::mem::take(&mut self.monotonicity) {
            let time = |t: i64| {
                chrono::DateTime::from_timestamp(t / 1000, 0)
                    .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default()
            };
            // The message the tests of Prometheus' harness see; its API adds the details.
            let message = format!(
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see \
                 https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile){}",
                if metric.is_empty() {
                    String::new()
                } else {
                    format!(" for metric name {metric:?}")
                }
            );
            let details = format!(
                ", from buckets {} to {}, with a max diff of {}, over {} samples from {} to {}",
                go_g(m.min_bucket),
                go_g(m.max_bucket),
                go_g_2(m.max_diff),
                m.merged + 1,
                time(m.min_t),
                time(m.max_t)
            );
            self.details.insert(message.clone(), details);
            for site in m.sites {
                self.remember(&message, Some(site));
            }
            self.infos.insert(message);
        }
        self
    }

    /// A warning about no expression in particular (the API's own).
    pub fn warn(&mut self, message: String) {
        self.warn_at(message, None);
    }

    /// A warning about the expression at `site`.
    pub fn warn_at(&mut self, message: String, site: Option<Site>) {
        self.remember(&message, site);
        self.warnings.insert(message);
    }

    /// An info about the expression at `site`.
    pub fn info_at(&mut self, message: String, site: Option<Site>) {
        self.remember(&message, site);
        self.infos.insert(message);
    }

    fn remember(&mut self, message: &str, site: Option<Site>) {
        // Raised for every series at every step: no allocation once known.
        match self.sites.get_mut(message) {
            Some(sites) => add_site(sites, site),
            None => {
                if let Some(site) = site {
                    self.sites.insert(message.to_string(), vec![site]);
                }
            }
        }
    }

    /// Finds where in `query` (as the user sent it; `expr` its tree, the one evaluated) the
    /// expression of each message starts.
    pub fn locate(&mut self, query: &str, expr: &Expr) {
        if self.sites.is_empty() {
            return;
        }
        let positions = Positions::of(query, expr);
        let lines = Lines::new(query);
        for (message, sites) in &self.sites {
            let placed = sites
                .iter()
                .filter_map(|site| positions.place(site.node).map(|place| (place, site.as_argument)));
            let chosen = if self.details.contains_key(message) {
                placed.min_by_key(|(place, _)| place.order)
            } else {
                placed.max_by_key(|(place, _)| place.order)
            };
            if let Some((place, as_argument)) = chosen {
                let offset = if as_argument { place.outer } else { place.own };
                self.positions.insert(message.clone(), lines.line_column(offset));
            }
        }
    }

    /// The warnings and the infos as Prometheus' API gives them: each with the position of its
    /// expression when known, at most `max_warnings` and `max_infos` of each (0: all), then a
    /// line saying how many more were left out.
    pub fn as_strings(&self, max_warnings: usize, max_infos: usize) -> (Vec<String>, Vec<String>) {
        let worded = |messages: &BTreeSet<String>, max: usize, kind: &str| {
            let mut out: Vec<String> = messages
                .iter()
                .take(if max == 0 { usize::MAX } else { max })
                .map(|m| {
                    let details = self.details.get(m).map_or("", String::as_str);
                    match self.positions.get(m) {
                        Some(at) => format!("{m}{details} ({at})"),
                        None => format!("{m}{details}"),
                    }
                })
                .collect();
            if messages.len() > out.len() {
                out.push(format!(
                    "{} more {kind} annotations omitted",
                    messages.len() - out.len()
                ));
            }
            out
        };
        (
            worded(&self.warnings, max_warnings, "warning"),
            worded(&self.infos, max_infos, "info"),
        )
    }
}

/// Adds `site` to `sites` unless it is there already.
fn add_site(sites: &mut Vec<Site>, site: Option<Site>) {
    if let Some(site) = site.filter(|s| !sites.contains(s)) {
        sites.push(site);
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

/// A binary operator between a float and a histogram (or two histograms) that it does not
/// define: the element is left out.
pub fn incompatible_types_in_binop(left: &str, operator: &str, right: &str) -> String {
    format!("PromQL info: incompatible sample types encountered for binary operator {operator:?}: {left} {operator} {right}")
}

/// Histograms added or subtracted whose counter reset hints contradict each other.
pub fn counter_reset_collision(operation: &str) -> String {
    format!("PromQL warning: conflicting counter resets during histogram {operation}")
}

/// Histograms with custom buckets of different bounds combined on the bounds they share
/// (`operation`: addition, subtraction or aggregation).
pub fn mismatched_custom_buckets(operation: &str) -> String {
    format!("PromQL info: mismatched custom buckets were reconciled during {operation}")
}

/// A binary operator between histograms with exponential and custom buckets: no result.
pub fn incompatible_bucket_layout_in_binop(operator: &str) -> String {
    format!("PromQL warning: incompatible bucket layout encountered for binary operator {operator}")
}

/// A classic histogram bucket whose `le` is missing or not a number: left out.
pub fn bad_bucket_label(metric: &str, le: &str) -> String {
    with_metric_name(
        format!("PromQL warning: bucket label \"le\" is missing or has a malformed value of {le:?}"),
        metric,
    )
}

/// A native histogram with the labels of a classic one: both left out.
pub fn mixed_classic_native_histograms(metric: &str) -> String {
    with_metric_name(
        "PromQL warning: vector contains a mix of classic and native histograms".into(),
        metric,
    )
}

pub fn quantile_nan_result(metric: &str) -> String {
    with_metric_name(
        "PromQL info: input to histogram_quantile has NaN observations, result is NaN".into(),
        metric,
    )
}

pub fn quantile_nan_skew(metric: &str) -> String {
    with_metric_name(
        "PromQL info: input to histogram_quantile has NaN observations, result is skewed higher".into(),
        metric,
    )
}

pub fn fraction_nan_observations(metric: &str) -> String {
    with_metric_name(
        "PromQL info: input to histogram_fraction has NaN observations, which are excluded from all fractions".into(),
        metric,
    )
}

/// Prometheus' `maybeAddMetricName`.
fn with_metric_name(message: String, metric: &str) -> String {
    if metric.is_empty() {
        message
    } else {
        format!("{message} for metric name {metric:?}")
    }
}

/// `sum` or `avg` of a group of floats and histograms: no result.
pub fn mixed_floats_histograms_aggregation() -> String {
    "PromQL warning: encountered a mix of histograms and floats for aggregation".to_string()
}

/// Histograms with exponential and custom buckets in one sum: no result.
pub fn mixed_exponential_custom_histograms(metric: &str) -> String {
    format!("PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name {metric:?}")
}

/// limit_ratio with a ratio beyond [-1, 1], capped to `to`.
pub fn invalid_ratio(r: f64, to: f64) -> String {
    format!(
        "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
        go_g(r),
        go_g(to)
    )
}

/// Go's `%g` (and `%v`) of a float: the shortest digits, in exponent form below 1e-4 and
/// from 1e6 on.
pub fn go_g(v: f64) -> String {
    go_float(v, 6)
}

/// Go's `%.2g`: two significant digits, trailing zeros dropped, with an exponent when it is
/// below -4 or at least the digits shown.
pub fn go_g_2(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return go_g(v);
    }
    let rounded = format!("{v:.1e}");
    let (mantissa, exponent) = rounded.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} has an integer exponent");
    let digits = mantissa.trim_start_matches('-').replace('.', "");
    let digits = digits.trim_end_matches('0').len().max(1) as i32;
    let mut shown = 2;
    if shown > digits && digits > exponent {
        shown = digits;
    }
    if exponent < -4 || exponent >= shown {
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{}", rounded.parse::<f64>().expect("a float"))
    }
}

fn go_float(v: f64, exponent_from: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest digits that read back the same, as Go's.
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} has an integer exponent");
    if exponent < -4 || exponent >= exponent_from {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_go_prints_them() {
        for (v, g) in [
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (-1e-5, "-1e-05"),
            (0.0001, "0.0001"),
            (1.5, "1.5"),
            (9.223372036854776e18, "9.223372036854776e+18"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(go_g(v), g, "{v}");
        }
        for (v, g) in [
            (1.0, "1"),
            (5.0, "5"),
            (12.0, "12"),
            (123.0, "1.2e+02"),
            (1000.0, "1e+03"),
            (0.05, "0.05"),
            (0.123, "0.12"),
            (1.15e-5, "1.2e-05"),
            (-3.0, "-3"),
        ] {
            assert_eq!(go_g_2(v), g, "{v}");
        }
    }

    #[test]
    fn forced_monotonicity_is_one_info_merged_over_steps() {
        let mut a = Annotations::default();
        a.forced_monotonicity("", 3_000_000, 10.0, 100.0, 1.0, None);
        a.forced_monotonicity("", 3_060_000, 1.0, 1000.0, 0.5, None);
        let a = a.finished();
        assert_eq!(
            a.as_strings(0, 0).1,
            [
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see \
              https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile), \
              from buckets 1 to 1000, with a max diff of 1, over 2 samples from 1970-01-01T00:50:00Z \
              to 1970-01-01T00:51:00Z"
            ]
        );
        // The message itself, as Prometheus' test harness reads it, is without the details.
        assert_eq!(
            a.infos.iter().collect::<Vec<_>>(),
            [
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see \
              https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)"
            ]
        );
    }
}
