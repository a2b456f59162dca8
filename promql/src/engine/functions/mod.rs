//! Function calls: argument evaluation and the label rules of each family of functions.
//! The arithmetic lives in [`range`] (functions of a range's samples), [`math`] (functions of
//! one value) and [`histogram`] (quantiles).

pub mod extended;
pub mod histogram;
pub mod info;
mod math;
mod range;

use std::sync::Arc;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};
use regex::Regex;

use self::histogram::{bucket_quantile_with, Bucket};
use super::aggregate::is_valid_label_name;
use super::boundaries::window_start;
use super::eval::{check_unique_labels, At, Evaluator, HistogramStep};
use super::index::{GroupCache, StepGroups};
use crate::error::QueryError;
use crate::histogram::FloatHistogram;
use crate::labels::{Labels, METRIC_NAME};
use crate::value::{HistogramSample, InstantSample, Sample, Value};

/// How the engine evaluates a function, beyond its own arm in [`call`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A function of each series' samples in a range ([`range`]).
    Range,
    /// A function of a time, which takes `vector(time())` when called without arguments.
    Time,
    /// Any other function.
    Other,
}

/// Every function the engine evaluates: those of Prometheus 2.42 (`promql/parser/functions.go`)
/// and, at the end, those of Prometheus 3 it has. The one list of function names; the parser
/// may know others, which [`crate::parse`] refuses as unknown.
pub const FUNCTIONS: &[(&str, Kind)] = &[
    ("abs", Kind::Other),
    ("absent", Kind::Other),
    ("absent_over_time", Kind::Other),
    ("acos", Kind::Other),
    ("acosh", Kind::Other),
    ("asin", Kind::Other),
    ("asinh", Kind::Other),
    ("atan", Kind::Other),
    ("atanh", Kind::Other),
    ("avg_over_time", Kind::Range),
    ("ceil", Kind::Other),
    ("changes", Kind::Range),
    ("clamp", Kind::Other),
    ("clamp_max", Kind::Other),
    ("clamp_min", Kind::Other),
    ("cos", Kind::Other),
    ("cosh", Kind::Other),
    ("count_over_time", Kind::Range),
    ("day_of_month", Kind::Time),
    ("day_of_week", Kind::Time),
    ("day_of_year", Kind::Time),
    ("days_in_month", Kind::Time),
    ("deg", Kind::Other),
    ("delta", Kind::Range),
    ("deriv", Kind::Range),
    ("exp", Kind::Other),
    ("floor", Kind::Other),
    ("histogram_count", Kind::Other),
    ("histogram_fraction", Kind::Other),
    ("histogram_quantile", Kind::Other),
    ("histogram_sum", Kind::Other),
    ("holt_winters", Kind::Range),
    ("hour", Kind::Time),
    ("idelta", Kind::Range),
    ("increase", Kind::Range),
    ("irate", Kind::Range),
    ("label_join", Kind::Other),
    ("label_replace", Kind::Other),
    ("last_over_time", Kind::Range),
    ("ln", Kind::Other),
    ("log10", Kind::Other),
    ("log2", Kind::Other),
    ("max_over_time", Kind::Range),
    ("min_over_time", Kind::Range),
    ("minute", Kind::Time),
    ("month", Kind::Time),
    ("pi", Kind::Other),
    ("predict_linear", Kind::Range),
    ("present_over_time", Kind::Range),
    ("quantile_over_time", Kind::Range),
    ("rad", Kind::Other),
    ("rate", Kind::Range),
    ("resets", Kind::Range),
    ("round", Kind::Other),
    ("scalar", Kind::Other),
    ("sgn", Kind::Other),
    ("sin", Kind::Other),
    ("sinh", Kind::Other),
    ("sort", Kind::Other),
    ("sort_desc", Kind::Other),
    ("sqrt", Kind::Other),
    ("stddev_over_time", Kind::Range),
    ("stdvar_over_time", Kind::Range),
    ("sum_over_time", Kind::Range),
    ("tan", Kind::Other),
    ("tanh", Kind::Other),
    ("time", Kind::Other),
    ("timestamp", Kind::Other),
    ("vector", Kind::Other),
    ("year", Kind::Time),
    // Prometheus 3's, under either semantics (where Prometheus 2 has no such function,
    // nothing differs). Those the parser marks experimental, as Prometheus 3.16 does, need
    // `promql-experimental-functions` (see `crate::parse::check_features`).
    ("double_exponential_smoothing", Kind::Range),
    ("first_over_time", Kind::Range),
    ("histogram_avg", Kind::Other),
    ("histogram_stddev", Kind::Other),
    ("histogram_stdvar", Kind::Other),
    ("mad_over_time", Kind::Range),
    ("sort_by_label", Kind::Other),
    ("sort_by_label_desc", Kind::Other),
    ("ts_of_first_over_time", Kind::Range),
    ("ts_of_last_over_time", Kind::Range),
    ("ts_of_max_over_time", Kind::Range),
    ("ts_of_min_over_time", Kind::Range),
    ("histogram_quantiles", Kind::Other),
    ("info", Kind::Other),
    ("max_of", Kind::Other),
    ("min_of", Kind::Other),
    // The query's own start, end, range and step, in seconds.
    ("end", Kind::Other),
    ("range", Kind::Other),
    ("start", Kind::Other),
    ("step", Kind::Other),
];

/// The kind of the function `name`, `None` when the engine does not know it.
pub fn kind(name: &str) -> Option<Kind> {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
}

pub fn call(ev: &Evaluator, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    for arg in &args {
        if let Expr::MatrixSelector(ms) = unwrap_parens(arg) {
            extended::check_allowed(name, crate::syntax_markers::mode(&ms.vs))?;
        }
    }
    let vector = |v: Vec<InstantSample>| -> Result<Value, QueryError> {
        check_unique_labels(&v)?;
        Ok(Value::Vector(v))
    };
    match name {
        "time" => Ok(Value::Scalar {
            t,
            v: t as f64 / 1000.0,
        }),
        // Prometheus 3 folds these into numbers before evaluating: subqueries see the outer
        // query's values.
        "start" | "end" | "range" | "step" => {
            let (start, end) = (ev.query_start as f64 / 1000.0, ev.query_end as f64 / 1000.0);
            let v = match name {
                "start" => start,
                "end" => end,
                "range" => end - start,
                _ if ev.query_start == ev.query_end => 0.0,
                _ => ev.query_step as f64 / 1000.0,
            };
            Ok(Value::Scalar { t, v })
        }
        "pi" => Ok(Value::Scalar {
            t,
            v: std::f64::consts::PI,
        }),
        "info" => info::eval(ev, c, t),
        "max_of" | "min_of" => {
            let (a, b) = (ev.scalar(args[0], t)?, ev.scalar(args[1], t)?);
            let v = if name == "max_of" {
                crate::gomath::max(a, b)
            } else {
                crate::gomath::min(a, b)
            };
            Ok(Value::Scalar { t, v })
        }
        "vector" => Ok(Value::Vector(vec![InstantSample {
            labels: Labels::default(),
            t,
            v: ev.scalar(args[0], t)?,
            h: None,
        }])),
        "scalar" => {
            let v = ev.vector(args[0], t)?;
            Ok(Value::Scalar {
                t,
                v: if v.len() == 1 { v[0].v } else { f64::NAN },
            })
        }
        "timestamp" => vector(timestamp(ev, args[0], t)?),
        "absent" => {
            let present = !ev.vector_with_histograms(args[0], t)?.is_empty();
            Ok(Value::Vector(absent(present, args[0], t)))
        }
        "absent_over_time" => {
            let present = !ev.matrix(args[0], t)?.is_empty();
            Ok(Value::Vector(absent(present, args[0], t)))
        }
        "sort" | "sort_desc" => {
            warn_of_sort_in_range_query(ev);
            let mut v = ev.vector(args[0], t)?;
            sort_by_value(&mut v, name == "sort_desc");
            Ok(Value::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            warn_of_sort_in_range_query(ev);
            let mut v = ev.vector_with_histograms(args[0], t)?;
            let names = args[1..]
                .iter()
                .map(|a| ev.string(a, t))
                .collect::<Result<Vec<String>, _>>()?;
            sort_by_labels(&mut v, &names, name == "sort_by_label_desc");
            Ok(Value::Vector(v))
        }
        // Functions of native histograms: float samples are skipped.
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
            let input = ev.vector_with_histograms(args[0], t)?;
            vector(
                input
                    .into_iter()
                    .filter_map(|s| {
                        let h = s.h?;
                        let v = match name {
                            "histogram_count" => h.count,
                            "histogram_sum" => h.sum,
                            "histogram_avg" => h.sum / h.count,
                            "histogram_stddev" => crate::histogram::stddev(&h),
                            _ => crate::histogram::stdvar(&h),
                        };
                        Some(InstantSample::float(ev.drop_name(&s.labels), t, v))
                    })
                    .collect(),
            )
        }
        "histogram_fraction" => {
            let lower = ev.scalar(args[0], t)?;
            let upper = ev.scalar(args[1], t)?;
            let input = ev.vector_with_histograms(args[2], t)?;
            let (native, classic) = native_and_classic(ev, &input);
            let mut out: Vec<InstantSample> = native
                .into_iter()
                .filter_map(|s| {
                    let h = s.h.as_deref()?;
                    let v = crate::histogram::histogram_fraction(lower, upper, h);
                    if has_nan_observations(h) {
                        ev.info_at(
                            At::Histograms,
                            crate::annotations::fraction_nan_observations(s.labels.get(METRIC_NAME)),
                        );
                    }
                    Some(InstantSample::float(ev.drop_name(&s.labels), t, v))
                })
                .collect();
            // Classic histograms (Prometheus 3: Prometheus 2.42 left them out): the buckets of
            // each series group (labels but `le`).
            let classic = if ev.options.semantics == super::Semantics::Prometheus3 {
                classic
            } else {
                Vec::new()
            };
            let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
            let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
            for (s, upper_bound) in classic {
                let mut key = s.labels.clone();
                key.remove("le");
                let at = *index.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[at].1.push(Bucket {
                    upper_bound,
                    count: s.v,
                });
            }
            out.extend(groups.into_iter().map(|(labels, buckets)| {
                InstantSample::float(
                    ev.drop_name(&labels),
                    t,
                    histogram::bucket_fraction(lower, upper, buckets),
                )
            }));
            vector(out)
        }
        "label_replace" => vector(label_replace(ev, &args, t)?),
        "label_join" => vector(label_join(ev, &args, t)?),
        "histogram_quantile" => {
            let q = ev.scalar(args[0], t)?;
            let input = ev.vector_with_histograms(args[1], t)?;
            vector(quantiles_of(ev, c, &input, (q, args[0]), t))
        }
        // Several quantiles at once, each series' told apart by the label `args[1]` (valued in
        // OpenMetrics' spelling: 0.5, 1.0).
        "histogram_quantiles" => {
            let label = ev.string(args[1], t)?;
            let input = ev.vector_with_histograms(args[0], t)?;
            let mut out = Vec::new();
            for &arg in &args[2..] {
                let q = ev.scalar(arg, t)?;
                let spelled = openmetrics_float(q);
                out.extend(quantiles_of(ev, c, &input, (q, arg), t).into_iter().map(|mut s| {
                    s.labels.set(&label, &spelled);
                    s
                }));
            }
            vector(out)
        }
        _ if kind(name) == Some(Kind::Range) => {
            let (out, unique) = range_call(ev, name, &args, t)?;
            if unique {
                Ok(Value::Vector(out))
            } else {
                vector(out)
            }
        }
        _ if kind(name) == Some(Kind::Time) && args.is_empty() => Ok(Value::Vector(vec![InstantSample {
            labels: Labels::default(),
            t,
            v: math::element_function(name, t as f64 / 1000.0, &[]).unwrap_or(f64::NAN),
            h: None,
        }])),
        _ => {
            let input = ev.vector(args[0], t)?;
            let scalars = args[1..]
                .iter()
                .map(|a| ev.scalar(a, t))
                .collect::<Result<Vec<f64>, _>>()?;
            vector(
                input
                    .into_iter()
                    .filter_map(|s| {
                        let v = math::element_function(name, s.v, &scalars)?;
                        Some(InstantSample {
                            labels: ev.drop_name(&s.labels),
                            t,
                            v,
                            h: None,
                        })
                    })
                    .collect(),
            )
        }
    }
}

/// A function of each series' samples in a range: the range vector is the only non-scalar
/// argument; the others are scalars in call order. Also tells whether the result's label
/// sets are known to be distinct (else the caller checks).
///
/// A range selector argument is read in place, each series' window found from the previous
/// step's and given the labels without name prepared once; a subquery is evaluated.
fn range_call(ev: &Evaluator, name: &str, args: &[&Expr], t: i64) -> Result<(Vec<InstantSample>, bool), QueryError> {
    let function = range::RangeFunction::of(name).expect("a range function");
    let position = args
        .iter()
        .position(|a| matches!(unwrap_parens(a), Expr::MatrixSelector(_) | Expr::Subquery(_)))
        .ok_or_else(|| QueryError::Execution(format!("{name} needs a range vector")))?;
    let (range_start, range_end) = range_bounds(ev, args[position], t);
    let scalars = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != position)
        .map(|(_, a)| ev.scalar(a, t))
        .collect::<Result<Vec<f64>, _>>()?;
    let mut scalars = scalars;
    if name == "predict_linear" {
        // The line is anchored at the evaluation time, whatever offset or @ the range has.
        scalars.push(t as f64);
    }
    // last_over_time (and Prometheus 3's first_over_time) only moves a sample in time, like
    // offset: it keeps the name.
    let keeps_name = matches!(
        function,
        range::RangeFunction::LastOverTime | range::RangeFunction::FirstOverTime
    );
    // The function of one series' window, with the warnings and infos it gives.
    let window_result = |labels: &Labels, samples: &[Sample], starts: &[i64], histograms: &[HistogramSample]| {
        let metric = labels.get(METRIC_NAME);
        let result = apply_window(
            ev,
            function,
            metric,
            (samples, starts),
            histograms,
            (range_start, range_end),
            &scalars,
        )?;
        match &result {
            Some((_, h)) => annotate_window(ev, function, metric, samples, histograms, &scalars, h.is_none()),
            None => annotate_mixed_window(ev, function, metric, samples, histograms),
        }
        Ok::<_, QueryError>(result)
    };
    if let Expr::MatrixSelector(ms) = unwrap_parens(args[position]) {
        let Some(sel) = ev.selected(&ms.vs) else {
            return Ok((Vec::new(), true));
        };
        let width = super::plan::duration_ms(ms.range);
        // The labels of series `i` without the name, prepared once; under delayed name
        // removal, with the name marked to be dropped (they stay distinct).
        let delayed = ev.delays_name_removal();
        let without_name = |i: usize| {
            if delayed {
                sel.series[i].labels.clone().with_name_to_drop(true)
            } else {
                sel.without_name[i].clone()
            }
        };
        let unique_without_name = delayed || sel.unique_without_name;
        let mut buffer = Vec::new();
        let mut out = Vec::with_capacity(sel.series.len());
        // Start timestamps reach the functions that read resets from them straight from a
        // selector: a subquery's points have none.
        let use_starts = ev.options.features.use_start_timestamps
            && matches!(
                function,
                range::RangeFunction::Rate
                    | range::RangeFunction::Increase
                    | range::RangeFunction::Irate
                    | range::RangeFunction::Resets
            );
        let mut start_buffer = Vec::new();
        let mode = crate::syntax_markers::mode(&ms.vs);
        if mode != crate::syntax_markers::Mode::Plain {
            // Anchored or smoothed: read around the range, then one of the functions
            // `check_allowed` let through.
            use range::RangeFunction as F;
            let (ahead, width) = extended::window(mode, width, ev.options.lookback_delta_ms);
            let range = extended::Range {
                start: range_start,
                end: range_end,
                seconds: ms.range.as_secs_f64(),
                smoothed: mode == crate::syntax_markers::Mode::Smoothed,
            };
            let reference = range_end.saturating_add(ahead);
            for (i, s) in sel.series.iter().enumerate() {
                // Prometheus' extended rate reads no start timestamps; its resets does.
                let (samples, starts) = if use_starts && function == F::Resets {
                    sel.window_with_start_times(i, reference, width, &mut buffer, &mut start_buffer)
                } else {
                    (sel.window_without_stale(i, reference, width, &mut buffer), &[][..])
                };
                let histograms = sel.histogram_window(i, reference, width);
                let metric = s.labels.get(METRIC_NAME);
                let result = match function {
                    F::Rate | F::Increase | F::Delta => {
                        let is_counter = function != F::Delta;
                        extended::rate(ev, metric, samples, &histograms, range, is_counter, function == F::Rate)
                    }
                    F::Changes | F::Resets => {
                        extended::anchored_from(samples, &histograms, range_start).map(|(f, h)| {
                            // `f` is a suffix of `samples`: its start timestamps are those of `starts`.
                            let f_starts = starts.get(samples.len() - f.len()..).unwrap_or(&[]);
                            (changes_or_resets(function == F::Resets, (f, f_starts), h), None)
                        })
                    }
                    _ => unreachable!("refused by check_allowed"),
                };
                let Some((v, h)) = result else { continue };
                if matches!(function, F::Rate | F::Increase) && !metric.is_empty() && !samples.is_empty() {
                    annotate_window(ev, function, metric, samples, &[], &scalars, true);
                }
                out.push(InstantSample {
                    labels: without_name(i),
                    t,
                    v,
                    h,
                });
            }
            return Ok((out, unique_without_name));
        }
        for (i, s) in sel.series.iter().enumerate() {
            let (samples, starts) = if use_starts {
                sel.window_with_start_times(i, range_end, width, &mut buffer, &mut start_buffer)
            } else {
                (sel.window_without_stale(i, range_end, width, &mut buffer), &[][..])
            };
            let histograms = sel.histogram_window(i, range_end, width);
            if let Some((v, h)) = window_result(&s.labels, samples, starts, &histograms)? {
                let labels = if keeps_name { s.labels.clone() } else { without_name(i) };
                out.push(InstantSample { labels, t, v, h });
            }
        }
        // A selector's series have distinct label sets.
        return Ok((out, keeps_name || unique_without_name));
    }
    let mut out = Vec::new();
    for s in ev.matrix(args[position], t)? {
        if let Some((v, h)) = window_result(&s.labels, &s.samples, &[], &s.histograms)? {
            // A subquery's series keep their own mark (last_over_time of a function of them).
            let labels = if keeps_name { s.labels } else { ev.drop_name(&s.labels) };
            out.push(InstantSample { labels, t, v, h });
        }
    }
    Ok((out, false))
}

/// A float result, or a native histogram one.
type WindowResult = (f64, Option<Arc<FloatHistogram>>);

/// The warnings and infos Prometheus 3 gives a range function over one series' window that
/// had a result (`float`: a float one).
fn annotate_window(
    ev: &Evaluator,
    function: range::RangeFunction,
    metric: &str,
    samples: &[Sample],
    histograms: &[HistogramSample],
    scalars: &[f64],
    float: bool,
) {
    use crate::annotations as a;
    use crate::histogram::CounterResetHint::Gauge;
    use range::RangeFunction as F;
    // Checked only where it matters: this runs for every series at every step.
    let counter_name = || {
        ["_total", "_sum", "_count", "_bucket"]
            .iter()
            .any(|s| metric.ends_with(s))
    };
    match function {
        F::Rate | F::Increase if float && !metric.is_empty() && !counter_name() => {
            ev.info(a::possible_non_counter(metric))
        }
        F::Rate | F::Increase if histograms.iter().any(|h| h.h.counter_reset_hint == Gauge) => {
            ev.warn(a::native_histogram_not_counter(metric))
        }
        F::Delta
            if !float
                && [histograms.first(), histograms.last()]
                    .into_iter()
                    .flatten()
                    .any(|h| h.h.counter_reset_hint != Gauge) =>
        {
            ev.warn(a::native_histogram_not_gauge(metric))
        }
        F::Irate
            if !float
                && histograms[histograms.len().saturating_sub(2)..]
                    .iter()
                    .any(|h| h.h.counter_reset_hint == Gauge) =>
        {
            ev.warn(a::native_histogram_not_counter(metric))
        }
        F::Idelta
            if !float
                && histograms[histograms.len().saturating_sub(2)..]
                    .iter()
                    .any(|h| h.h.counter_reset_hint != Gauge) =>
        {
            ev.warn(a::native_histogram_not_gauge(metric))
        }
        F::QuantileOverTime if scalars.first().is_some_and(|q| !(0.0..=1.0).contains(q)) => {
            ev.warn(a::invalid_quantile(scalars[0]))
        }
        _ => {}
    }
    let ignores_histograms = matches!(
        function,
        F::MinOverTime
            | F::MaxOverTime
            | F::StddevOverTime
            | F::StdvarOverTime
            | F::QuantileOverTime
            | F::MadOverTime
            | F::TsOfMaxOverTime
            | F::TsOfMinOverTime
            | F::Deriv
            | F::PredictLinear
            | F::HoltWinters
            | F::DoubleExponentialSmoothing
    );
    if ignores_histograms && !samples.is_empty() && !histograms.is_empty() {
        ev.info(a::histogram_ignored_in_mixed_range(metric));
    }
}

/// The warnings of a range function over a window that had no result because floats and
/// histograms were mixed where the function takes one kind.
fn annotate_mixed_window(
    ev: &Evaluator,
    function: range::RangeFunction,
    metric: &str,
    samples: &[Sample],
    histograms: &[HistogramSample],
) {
    use range::RangeFunction as F;
    let mixed = !samples.is_empty() && !histograms.is_empty();
    if mixed
        && matches!(
            function,
            F::Rate | F::Increase | F::Delta | F::SumOverTime | F::AvgOverTime
        )
    {
        ev.warn(crate::annotations::mixed_floats_histograms(metric));
    }
    // irate and idelta of a float and a histogram (the last two samples).
    if matches!(function, F::Irate | F::Idelta) && !samples.is_empty() && !histograms.is_empty() {
        let mut last: Vec<(i64, bool)> = samples[samples.len().saturating_sub(2)..]
            .iter()
            .map(|s| (s.t, false))
            .chain(
                histograms[histograms.len().saturating_sub(2)..]
                    .iter()
                    .map(|h| (h.t, true)),
            )
            .collect();
        last.sort_by_key(|(t, _)| *t);
        if let [.., (_, a), (_, b)] = last[..] {
            if a != b {
                ev.warn(crate::annotations::mixed_floats_histograms(metric));
            }
        }
    }
    // A single float is too few for these; the histograms beside it were left out anyway.
    let needs_two = matches!(
        function,
        F::Deriv | F::PredictLinear | F::HoltWinters | F::DoubleExponentialSmoothing
    );
    if needs_two && samples.len() == 1 && !histograms.is_empty() {
        ev.info(crate::annotations::histogram_ignored_in_mixed_range(metric));
    }
}

/// A range function of one series' window of floats and native histograms, as Prometheus
/// computes it: rate, increase and delta of histograms alone (a window of both has no
/// result); count_over_time counts both, present_over_time sees either, last_over_time
/// takes the later; the other functions take the floats and leave the histograms out.
fn apply_window(
    ev: &Evaluator,
    function: range::RangeFunction,
    metric: &str,
    (samples, starts): (&[Sample], &[i64]),
    histograms: &[HistogramSample],
    (range_start, range_end): (i64, i64),
    scalars: &[f64],
) -> Result<Option<WindowResult>, QueryError> {
    use range::RangeFunction as F;
    let semantics = ev.options.semantics;
    if histograms.is_empty() {
        if samples.is_empty() {
            return Ok(None);
        }
        return Ok(function
            .apply_with_start_times(samples, starts, range_start, range_end, scalars, semantics)?
            .map(|v| (v, None)));
    }
    Ok(match function {
        F::Rate | F::Increase | F::Delta => {
            if !samples.is_empty() {
                return Ok(None);
            }
            match function.apply_to_histograms(histograms, range_start, range_end) {
                Ok(Some(rate)) => {
                    if rate.reconciled {
                        ev.info(crate::annotations::mismatched_custom_buckets("subtraction"));
                    }
                    Some((0.0, Some(Arc::new(rate.histogram))))
                }
                Ok(None) => None,
                Err(crate::histogram::HistogramError::IncompatibleSchema) => {
                    ev.warn(crate::annotations::mixed_exponential_custom_histograms(metric));
                    None
                }
                Err(_) => None,
            }
        }
        F::CountOverTime => Some(((samples.len() + histograms.len()) as f64, None)),
        F::Changes | F::Resets => Some((
            changes_or_resets(function == F::Resets, (samples, starts), histograms),
            None,
        )),
        F::Irate | F::Idelta => match instant_histogram_value(ev, metric, function == F::Irate, samples, histograms) {
            Some(result) => result,
            // The last two samples are floats.
            None => function
                .apply_with_start_times(samples, starts, range_start, range_end, scalars, semantics)?
                .map(|v| (v, None)),
        },
        // Prometheus 3: with compensated steps, a mean as `avg` takes it.
        F::SumOverTime | F::AvgOverTime if samples.is_empty() && semantics == super::Semantics::Prometheus3 => {
            let mut acc = crate::histogram::CompensatedSum::new(&histograms[0].h);
            // One input said "counter reset" and another "not reset" (Prometheus 3).
            let mut hints = crate::histogram::HintsSeen::default();
            for h in histograms {
                hints.see(h.h.counter_reset_hint);
            }
            for h in &histograms[1..] {
                let step = if function == F::AvgOverTime {
                    acc.add_to_mean(&h.h)
                } else {
                    acc.add(&h.h)
                };
                // Exponential and custom buckets mixed: no result.
                if ev.annotate_sum_step(step, metric).is_none() {
                    return Ok(None);
                }
            }
            if hints.collide() {
                ev.warn(crate::annotations::counter_reset_collision("aggregation"));
            }
            let result = if function == F::AvgOverTime {
                acc.mean()
            } else {
                acc.sum()
            };
            Some((0.0, Some(Arc::new(result))))
        }
        F::SumOverTime | F::AvgOverTime if samples.is_empty() => {
            let mut sum = histograms[0].h.as_ref().clone();
            let mut collision = false;
            for h in &histograms[1..] {
                // Exponential and custom buckets mixed: no result.
                let Some((s, info)) = ev.combine_histograms(&sum, &h.h, HistogramStep::Aggregation, metric) else {
                    return Ok(None);
                };
                collision |= info.counter_reset_collision;
                sum = s;
            }
            if collision {
                ev.warn(crate::annotations::counter_reset_collision("aggregation"));
            }
            if function == F::AvgOverTime {
                sum.div(histograms.len() as f64);
            }
            Some((0.0, Some(Arc::new(sum))))
        }
        // Floats and histograms mixed: no result.
        F::SumOverTime | F::AvgOverTime => None,
        F::PresentOverTime => Some((1.0, None)),
        F::LastOverTime => {
            let last_h = &histograms[histograms.len() - 1];
            match samples.last() {
                Some(last) if last.t > last_h.t => Some((last.v, None)),
                _ => Some((0.0, Some(last_h.h.clone()))),
            }
        }
        F::FirstOverTime => {
            let first_h = &histograms[0];
            match samples.first() {
                Some(first) if first.t < first_h.t => Some((first.v, None)),
                _ => Some((0.0, Some(first_h.h.clone()))),
            }
        }
        F::TsOfFirstOverTime => {
            let t = samples.first().map_or(i64::MAX, |s| s.t).min(histograms[0].t);
            Some((t as f64 / 1000.0, None))
        }
        F::TsOfLastOverTime => {
            let t = samples
                .last()
                .map_or(i64::MIN, |s| s.t)
                .max(histograms[histograms.len() - 1].t);
            Some((t as f64 / 1000.0, None))
        }
        _ if samples.is_empty() => None,
        _ => function
            .apply(samples, range_start, range_end, scalars, semantics)?
            .map(|v| (v, None)),
    })
}

/// changes() or resets() over a window of floats and histograms in time order, as Prometheus
/// 3 counts them: a switch between a float and a histogram counts as both; two histograms
/// differ unless equal in every count, and reset when the later one went down.
fn changes_or_resets(resets: bool, (samples, starts): (&[Sample], &[i64]), histograms: &[HistogramSample]) -> f64 {
    enum Point<'a> {
        /// A value and its start timestamp (0: unknown).
        F(f64, i64),
        H(&'a FloatHistogram),
    }
    let mut points: Vec<(i64, Point)> = samples
        .iter()
        .enumerate()
        .map(|(k, s)| (s.t, Point::F(s.v, starts.get(k).copied().unwrap_or(0))))
        .chain(histograms.iter().map(|h| (h.t, Point::H(&h.h))))
        .collect();
    points.sort_by_key(|(t, _)| *t);
    let mut count = 0;
    for pair in points.windows(2) {
        let counted = match (&pair[0].1, &pair[1].1) {
            (&Point::F(prev, prev_start), &Point::F(cur, start)) if resets => {
                cur < prev || range::start_time_reset(prev_start, pair[0].0, start, pair[1].0)
            }
            (Point::F(prev, _), Point::F(cur, _)) => cur != prev && !(cur.is_nan() && prev.is_nan()),
            (Point::H(prev), Point::H(cur)) if resets => cur.detect_reset(prev),
            (Point::H(prev), Point::H(cur)) => !cur.equals(prev),
            _ => true,
        };
        count += usize::from(counted);
    }
    count as f64
}

/// irate() or idelta() of a window with histograms, as Prometheus 3's `instantValue`: when
/// the last two samples (floats and histograms together) are histograms, the later one less
/// the earlier (unless irate sees a reset), a gauge histogram, per second for irate; a float
/// and a histogram: no result. `None` when the last two are floats (the float functions
/// apply).
fn instant_histogram_value(
    ev: &Evaluator,
    metric: &str,
    is_rate: bool,
    samples: &[Sample],
    histograms: &[HistogramSample],
) -> Option<Option<WindowResult>> {
    if samples.len() + histograms.len() < 2 {
        return Some(None);
    }
    let last_floats = &samples[samples.len().saturating_sub(2)..];
    let last_histograms = &histograms[histograms.len().saturating_sub(2)..];
    // The last two by time; a histogram at the time of a float comes after it, as in Go.
    let mut last: Vec<(i64, Option<&HistogramSample>, f64)> = last_floats.iter().map(|s| (s.t, None, s.v)).collect();
    for h in last_histograms {
        let p = (h.t, Some(h), 0.0);
        match last.len() {
            0 => last.push(p),
            1 if h.t < last[0].0 => last.insert(0, p),
            1 => last.push(p),
            _ if h.t < last[0].0 => {}
            _ if h.t > last[1].0 => {
                last[0] = last[1];
                last[1] = p;
            }
            _ => last[0] = p,
        }
    }
    let (earlier, later) = (last[0], last[1]);
    let (a, b) = match (earlier.1, later.1) {
        (None, None) => return None,
        (Some(a), Some(b)) => (a, b),
        _ => return Some(None),
    };
    let interval = later.0 - earlier.0;
    if interval == 0 {
        return Some(None);
    }
    let mut result = b.h.as_ref().clone();
    if !is_rate || !b.h.detect_reset(&a.h) {
        let Some((difference, _)) = ev.combine_histograms(&result, &a.h, HistogramStep::Subtraction, metric) else {
            return Some(None);
        };
        result = difference;
    }
    result.counter_reset_hint = crate::histogram::CounterResetHint::Gauge;
    result.compact(0);
    if is_rate {
        result.div(interval as f64 / 1000.0);
    }
    Some(Some((0.0, Some(Arc::new(result)))))
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// The window a range argument covers.
fn range_bounds(ev: &Evaluator, arg: &Expr, t: i64) -> (i64, i64) {
    use super::plan::{at_ms, duration_ms, offset_ms};
    let (at, offset, range) = match unwrap_parens(arg) {
        Expr::MatrixSelector(ms) => (&ms.vs.at, &ms.vs.offset, ms.range),
        Expr::Subquery(sq) => (&sq.at, &sq.offset, sq.range),
        _ => unreachable!("checked by the caller"),
    };
    let end = at_ms(at, ev.query_start, ev.query_end)
        .unwrap_or(t)
        .saturating_sub(offset_ms(offset));
    let start = window_start(end, duration_ms(range));
    (start, end)
}

fn timestamp(ev: &Evaluator, arg: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
    // Of a plain selector, the time of each sample itself, not of the evaluation (a smoothed
    // one's too: Prometheus reads the sample, not the interpolation).
    if let Expr::VectorSelector(vs) = unwrap_parens(arg) {
        return Ok(ev
            .latest_of(super::plan::selector_key(vs), ev.reference_time(vs, t))
            .into_iter()
            .map(|(labels, sample_t, _, _)| InstantSample {
                labels: ev.drop_name(&labels),
                t,
                v: sample_t as f64 / 1000.0,
                h: None,
            })
            .collect());
    }
    Ok(ev
        .vector(arg, t)?
        .into_iter()
        .map(|s| InstantSample {
            labels: ev.drop_name(&s.labels),
            t,
            v: s.t as f64 / 1000.0,
            h: None,
        })
        .collect())
}

/// One sample valued 1 when the argument is empty, labelled with the selector's equality
/// matchers.
fn absent(present: bool, arg: &Expr, t: i64) -> Vec<InstantSample> {
    if present {
        return Vec::new();
    }
    let selector = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels = Labels::default();
    if let Some(vs) = selector {
        // As Prometheus 2.42: a label matched once for equality is kept; any other matcher on
        // it (a second equality included) removes it.
        let mut seen = std::collections::HashSet::new();
        for m in crate::syntax_markers::without_markers(vs).filter(|m| m.name != METRIC_NAME) {
            if matches!(m.op, MatchOp::Equal) && seen.insert(m.name.as_str()) {
                labels.set(&m.name, &m.value);
            } else {
                labels.remove(&m.name);
            }
        }
    }
    vec![InstantSample {
        labels,
        t,
        v: 1.0,
        h: None,
    }]
}

/// Ascending (or descending) by value, NaN last either way.
fn sort_by_value(v: &mut [InstantSample], descending: bool) {
    v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if descending => b.v.partial_cmp(&a.v).unwrap(),
        _ => a.v.partial_cmp(&b.v).unwrap(),
    });
}

/// Range results are ordered by labels whatever the query sorts.
fn warn_of_sort_in_range_query(ev: &Evaluator) {
    if ev.over_a_range() {
        ev.warn_at(At::Whole, crate::annotations::sort_in_range_query());
    }
}

/// sort_by_label(_desc): by the named labels' values in natural order (digit runs compare as
/// numbers), ties by the whole label set, as Prometheus 3's `funcSortByLabel`.
fn sort_by_labels(v: &mut [InstantSample], names: &[String], descending: bool) {
    v.sort_by(|a, b| {
        let by_labels = names
            .iter()
            .map(|name| natural_cmp(a.labels.get(name), b.labels.get(name)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.labels.cmp(&b.labels));
        if descending {
            by_labels.reverse()
        } else {
            by_labels
        }
    });
}

/// Natural order, as the natsort package Prometheus uses where that package is consistent:
/// runs of ASCII digits against runs of other characters, two digit runs as integers (when
/// they fit an int64), anything else as strings, a prefix first. Unlike natsort's `Compare`
/// (which has both `"" < "x"` and `"x" < ""` false, and `"1"` and `"01"` each before the
/// other) it is a total order, as Rust's sort needs; equal numbers of different spellings
/// fall back to their text.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn chunks(s: &str) -> Vec<&str> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let order = match (x.parse::<i64>(), y.parse::<i64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n).then_with(|| x.cmp(y)),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    ca.len().cmp(&cb.len())
}

fn label_replace(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Vec<InstantSample>, QueryError> {
    let input = ev.vector_with_histograms(args[0], t)?;
    let destination = ev.string(args[1], t)?;
    let replacement = ev.string(args[2], t)?;
    let source = ev.string(args[3], t)?;
    let pattern = ev.string(args[4], t)?;
    let regex = Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| QueryError::Execution(format!("invalid regular expression in label_replace(): {pattern}: {e}")))?;
    if !is_valid_label_name(&destination, ev.options.semantics) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {destination}"
        )));
    }
    Ok(input
        .into_iter()
        .map(|mut s| {
            if let Some(captures) = regex.captures(s.labels.get(&source)) {
                let mut value = String::new();
                captures.expand(&replacement, &mut value);
                s.labels.set(&destination, &value);
                if destination == METRIC_NAME {
                    // A name set anew is kept (delayed name removal).
                    s.labels = s.labels.with_name_to_drop(false);
                }
            }
            s
        })
        .collect())
}

fn label_join(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Vec<InstantSample>, QueryError> {
    let input = ev.vector_with_histograms(args[0], t)?;
    let destination = ev.string(args[1], t)?;
    let separator = ev.string(args[2], t)?;
    let sources = args[3..]
        .iter()
        .map(|a| ev.string(a, t))
        .collect::<Result<Vec<String>, _>>()?;
    if ev.options.semantics == super::Semantics::Prometheus3 {
        if let Some(bad) = sources.iter().find(|s| !is_valid_label_name(s, ev.options.semantics)) {
            return Err(QueryError::Execution(format!(
                "invalid source label name in label_join(): {bad}"
            )));
        }
    }
    if !is_valid_label_name(&destination, ev.options.semantics) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {destination}"
        )));
    }
    Ok(input
        .into_iter()
        .map(|mut s| {
            let joined: Vec<&str> = sources.iter().map(|name| s.labels.get(name)).collect();
            let value = joined.join(&separator);
            s.labels.set(&destination, &value);
            if destination == METRIC_NAME {
                // A name set anew is kept (delayed name removal).
                s.labels = s.labels.with_name_to_drop(false);
            }
            s
        })
        .collect())
}

/// Buckets grouped by their labels without `le`; series without a parsable `le` are ignored.
/// The result drops the metric name, so buckets of two histograms with otherwise equal labels
/// collide, an error as in Prometheus 2.42. Each series' group and bound are remembered in
/// `cache` across steps.
/// The `q` quantile of every histogram of `input`: native ones first, then the classic ones'
/// buckets grouped, as Prometheus; a warning for a `q` outside [0, 1], about the argument
/// that gave it.
fn quantiles_of(
    ev: &Evaluator,
    c: &Call,
    input: &[InstantSample],
    (q, q_arg): (f64, &Expr),
    t: i64,
) -> Vec<InstantSample> {
    if !(0.0..=1.0).contains(&q) {
        ev.warn_at(
            At::Argument(crate::positions::address(q_arg)),
            crate::annotations::invalid_quantile(q),
        );
    }
    let (native, classic) = native_and_classic(ev, input);
    let mut out: Vec<InstantSample> = native
        .into_iter()
        .filter_map(|s| {
            let h = s.h.as_deref()?;
            let v = crate::histogram::histogram_quantile(q, h);
            // NaN observations count in the count but in no bucket (the sum is NaN).
            let metric = s.labels.get(METRIC_NAME);
            if h.sum.is_nan() && h.count > 0.0 && !q.is_nan() {
                if v.is_nan() {
                    ev.info_at(At::Histograms, crate::annotations::quantile_nan_result(metric));
                } else if has_nan_observations(h) {
                    ev.info_at(At::Histograms, crate::annotations::quantile_nan_skew(metric));
                }
            }
            Some(InstantSample::float(ev.drop_name(&s.labels), t, v))
        })
        .collect();
    let classic: Vec<InstantSample> = classic.into_iter().map(|(s, _)| s.clone()).collect();
    let key = c as *const Call as usize;
    out.extend(ev.with_groups(key, |cache| histogram_quantile(ev, cache, q, &classic, t)));
    out
}

/// The native histograms and the classic buckets (with their upper bound) of `input`, as
/// Prometheus 3's `resetHistograms` sorts them: a bucket whose `le` is missing or not a
/// number is left out with a warning, and a native histogram with the very labels of a
/// classic histogram (`le` aside) is left out together with that histogram, with a warning.
fn native_and_classic<'v>(
    ev: &Evaluator,
    input: &'v [InstantSample],
) -> (Vec<&'v InstantSample>, Vec<(&'v InstantSample, f64)>) {
    let (native, floats): (Vec<&InstantSample>, Vec<&InstantSample>) = input.iter().partition(|s| s.h.is_some());
    let mut classic: Vec<(&InstantSample, f64)> = Vec::with_capacity(floats.len());
    for s in floats {
        match parse_go_float(s.labels.get("le")).filter(|le| !le.is_nan()) {
            Some(le) => classic.push((s, le)),
            None => ev.warn_at(
                At::Histograms,
                crate::annotations::bad_bucket_label(s.labels.get(METRIC_NAME), s.labels.get("le")),
            ),
        }
    }
    if native.is_empty() || classic.is_empty() {
        return (native, classic);
    }
    let mut signatures: std::collections::HashSet<Labels> = classic
        .iter()
        .map(|(s, _)| {
            let mut key = s.labels.clone();
            key.remove("le");
            key
        })
        .collect();
    let mut mixed = std::collections::HashSet::new();
    let native = native
        .into_iter()
        .filter(|s| {
            if signatures.remove(&s.labels) {
                ev.warn_at(
                    At::Histograms,
                    crate::annotations::mixed_classic_native_histograms(s.labels.get(METRIC_NAME)),
                );
                mixed.insert(s.labels.clone());
                return false;
            }
            !mixed.contains(&s.labels)
        })
        .collect();
    classic.retain(|(s, _)| {
        let mut key = s.labels.clone();
        key.remove("le");
        !mixed.contains(&key)
    });
    (native, classic)
}

/// Whether a histogram observed NaNs: its sum is NaN and its buckets hold fewer observations
/// than its count.
fn has_nan_observations(h: &FloatHistogram) -> bool {
    let in_buckets: f64 =
        h.zero_count + h.positive_buckets.iter().sum::<f64>() + h.negative_buckets.iter().sum::<f64>();
    h.sum.is_nan() && in_buckets < h.count
}

/// Prometheus' `FormatOpenMetricsFloat`: Go's `%g`, with `.0` after a whole number.
fn openmetrics_float(v: f64) -> String {
    let text = crate::annotations::go_g(v);
    if v.is_finite() && !text.contains(['e', '.']) {
        format!("{text}.0")
    } else {
        text
    }
}

fn histogram_quantile(
    ev: &Evaluator,
    cache: &mut GroupCache,
    q: f64,
    input: &[InstantSample],
    t: i64,
) -> Vec<InstantSample> {
    cache.begin_step(input.len());
    let mut step = StepGroups::new();
    for s in input {
        let found = cache.group_of(&s.labels, |labels| {
            let upper_bound = parse_go_float(labels.get("le"))?;
            let mut key = labels.clone();
            key.remove("le");
            Some((key, upper_bound))
        });
        let Some((g, upper_bound)) = found else {
            continue;
        };
        step.get_or_insert(g, Vec::new).0.push(Bucket {
            upper_bound,
            count: s.v,
        });
    }
    let prometheus_3 = ev.options.semantics == super::Semantics::Prometheus3;
    step.slots
        .into_iter()
        .map(|(g, buckets)| {
            let (v, forced) = bucket_quantile_with(q, buckets, prometheus_3);
            if let Some(forced) = forced {
                ev.forced_monotonicity(cache.groups[g].get(METRIC_NAME), t, forced);
            }
            InstantSample {
                labels: ev.drop_name(&cache.groups[g]),
                t,
                v,
                h: None,
            }
        })
        .collect()
}

/// Go's strconv.ParseFloat for the spellings bucket bounds use.
fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "" => None,
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_is_total_and_numeric() {
        use std::cmp::Ordering::*;
        assert_eq!(natural_cmp("a2", "a10"), Less);
        assert_eq!(natural_cmp("", "x"), Less);
        assert_eq!(natural_cmp("x", ""), Greater);
        assert_eq!(natural_cmp("1", "01"), natural_cmp("01", "1").reverse());
        assert_ne!(natural_cmp("1", "01"), Equal);
        // Thirty series, some without the label: sorting must not panic, and they come first.
        let mut v: Vec<InstantSample> = (0..30)
            .map(|i| {
                let pairs = if i % 3 == 0 {
                    vec![]
                } else {
                    vec![("l".to_string(), format!("v{}", 30 - i))]
                };
                InstantSample::float(
                    Labels::new([pairs, vec![("i".to_string(), i.to_string())]].concat()),
                    0,
                    0.0,
                )
            })
            .collect();
        sort_by_labels(&mut v, &["l".to_string()], false);
        assert!(v[..10].iter().all(|s| s.labels.get("l").is_empty()));
        let values: Vec<&str> = v[10..].iter().map(|s| s.labels.get("l")).collect();
        assert_eq!(values.first(), Some(&"v1"));
        assert_eq!(values.last(), Some(&"v29"));
    }
}
