//! Functions over the samples of one series in a range window, as Prometheus 2.42's
//! `promql/functions.go` computes them.
//!
//! Summations use Prometheus' Kahan–Neumaier compensation (`kahanSumInc`, in Prometheus
//! since 2.32) because 2.42 already does, and its rounding differs from naive summation.

use super::histogram::quantile;
use crate::engine::Semantics;
use crate::error::QueryError;
use crate::histogram::{FloatHistogram, HistogramError};
use crate::value::{HistogramSample, Sample};

/// [`RangeFunction::apply`] of the function called `name`.
#[cfg(test)]
pub fn range_function(
    name: &str,
    samples: &[Sample],
    range_start: i64,
    range_end: i64,
    args: &[f64],
) -> Result<Option<f64>, QueryError> {
    let Some(f) = RangeFunction::of(name) else {
        return Err(QueryError::Execution(format!("unknown range vector function: {name}")));
    };
    f.apply(samples, range_start, range_end, args, Semantics::Prometheus2)
}

/// The functions over a range window, resolved from their names once per call rather than
/// once per series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFunction {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    HoltWinters,
    Changes,
    Resets,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    StddevOverTime,
    StdvarOverTime,
    LastOverTime,
    PresentOverTime,
    QuantileOverTime,
    // Prometheus 3's.
    DoubleExponentialSmoothing,
    FirstOverTime,
    MadOverTime,
    TsOfFirstOverTime,
    TsOfLastOverTime,
    TsOfMaxOverTime,
    TsOfMinOverTime,
}

impl RangeFunction {
    pub fn of(name: &str) -> Option<RangeFunction> {
        Some(match name {
            "rate" => RangeFunction::Rate,
            "increase" => RangeFunction::Increase,
            "delta" => RangeFunction::Delta,
            "irate" => RangeFunction::Irate,
            "idelta" => RangeFunction::Idelta,
            "deriv" => RangeFunction::Deriv,
            "predict_linear" => RangeFunction::PredictLinear,
            "holt_winters" => RangeFunction::HoltWinters,
            "changes" => RangeFunction::Changes,
            "resets" => RangeFunction::Resets,
            "avg_over_time" => RangeFunction::AvgOverTime,
            "min_over_time" => RangeFunction::MinOverTime,
            "max_over_time" => RangeFunction::MaxOverTime,
            "sum_over_time" => RangeFunction::SumOverTime,
            "count_over_time" => RangeFunction::CountOverTime,
            "stddev_over_time" => RangeFunction::StddevOverTime,
            "stdvar_over_time" => RangeFunction::StdvarOverTime,
            "last_over_time" => RangeFunction::LastOverTime,
            "present_over_time" => RangeFunction::PresentOverTime,
            "quantile_over_time" => RangeFunction::QuantileOverTime,
            "double_exponential_smoothing" => RangeFunction::DoubleExponentialSmoothing,
            "first_over_time" => RangeFunction::FirstOverTime,
            "mad_over_time" => RangeFunction::MadOverTime,
            "ts_of_first_over_time" => RangeFunction::TsOfFirstOverTime,
            "ts_of_last_over_time" => RangeFunction::TsOfLastOverTime,
            "ts_of_max_over_time" => RangeFunction::TsOfMaxOverTime,
            "ts_of_min_over_time" => RangeFunction::TsOfMinOverTime,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            RangeFunction::Rate => "rate",
            RangeFunction::Increase => "increase",
            RangeFunction::Delta => "delta",
            RangeFunction::Irate => "irate",
            RangeFunction::Idelta => "idelta",
            RangeFunction::Deriv => "deriv",
            RangeFunction::PredictLinear => "predict_linear",
            RangeFunction::HoltWinters => "holt_winters",
            RangeFunction::Changes => "changes",
            RangeFunction::Resets => "resets",
            RangeFunction::AvgOverTime => "avg_over_time",
            RangeFunction::MinOverTime => "min_over_time",
            RangeFunction::MaxOverTime => "max_over_time",
            RangeFunction::SumOverTime => "sum_over_time",
            RangeFunction::CountOverTime => "count_over_time",
            RangeFunction::StddevOverTime => "stddev_over_time",
            RangeFunction::StdvarOverTime => "stdvar_over_time",
            RangeFunction::LastOverTime => "last_over_time",
            RangeFunction::PresentOverTime => "present_over_time",
            RangeFunction::QuantileOverTime => "quantile_over_time",
            RangeFunction::DoubleExponentialSmoothing => "double_exponential_smoothing",
            RangeFunction::FirstOverTime => "first_over_time",
            RangeFunction::MadOverTime => "mad_over_time",
            RangeFunction::TsOfFirstOverTime => "ts_of_first_over_time",
            RangeFunction::TsOfLastOverTime => "ts_of_last_over_time",
            RangeFunction::TsOfMaxOverTime => "ts_of_max_over_time",
            RangeFunction::TsOfMinOverTime => "ts_of_min_over_time",
        }
    }

    /// This function over the samples of one series in a range window, evaluated at the window end.
    ///
    /// `samples`: the series' samples inside the window, time order, stale markers already removed.
    /// `range_start`/`range_end`: window bounds in ms (range_end = evaluation time after offset/@;
    /// range_start = range_end - range).
    /// `args`: the call's scalar arguments other than the range vector, in call order
    /// (quantile_over_time: [q]; predict_linear: [t seconds]; holt_winters: [sf, tf]; others: []).
    ///
    /// `predict_linear` accepts an optional second argument, the evaluation timestamp in ms:
    /// Prometheus anchors the regression at the evaluation time, not at the window end, which
    /// differs from `range_end` under `offset` or `@`. Without it, `range_end` is used.
    ///
    /// `semantics`: rate, increase and delta extrapolate as Prometheus 2.42 or as Prometheus 3
    /// does ([`extrapolated_rate`]).
    ///
    /// Ok(None) where Prometheus outputs no sample for this series (e.g. rate with < 2 samples).
    /// An empty `samples` always gives Ok(None) without checking arguments, because Prometheus
    /// never calls a range function for a series without samples in the window.
    pub fn apply(
        self,
        samples: &[Sample],
        range_start: i64,
        range_end: i64,
        args: &[f64],
        semantics: Semantics,
    ) -> Result<Option<f64>, QueryError> {
        self.apply_with_start_times(samples, &[], range_start, range_end, args, semantics)
    }

    /// [`RangeFunction::apply`] with the samples' start timestamps beside them (`starts`:
    /// one a sample, 0 where unknown; or empty): rate, increase, irate and resets also count
    /// a counter reset where a sample's start timestamp says one happened
    /// ([`start_time_reset`]).
    pub fn apply_with_start_times(
        self,
        samples: &[Sample],
        starts: &[i64],
        range_start: i64,
        range_end: i64,
        args: &[f64],
        semantics: Semantics,
    ) -> Result<Option<f64>, QueryError> {
        debug_assert!(starts.is_empty() || starts.len() == samples.len());
        if samples.is_empty() {
            return Ok(None);
        }
        let name = self.name();
        let v3 = semantics == Semantics::Prometheus3;
        let out = match self {
            RangeFunction::Rate => extrapolated_rate(samples, starts, range_start, range_end, true, true, v3),
            RangeFunction::Increase => extrapolated_rate(samples, starts, range_start, range_end, true, false, v3),
            RangeFunction::Delta => extrapolated_rate(samples, &[], range_start, range_end, false, false, v3),
            RangeFunction::Irate => instant_value(samples, starts, true),
            RangeFunction::Idelta => instant_value(samples, &[], false),
            RangeFunction::Deriv => {
                if samples.len() < 2 {
                    None
                } else {
                    // Anchoring at the first sample keeps x small, avoiding the precision loss
                    // of prometheus/prometheus#2674.
                    Some(linear_regression(samples, samples[0].t).0)
                }
            }
            RangeFunction::PredictLinear => {
                let duration = arg(name, args, 0)?;
                let intercept_time = match args.get(1) {
                    Some(&eval_ms) => eval_ms as i64,
                    None => range_end,
                };
                if samples.len() < 2 {
                    None
                } else {
                    let (slope, intercept) = linear_regression(samples, intercept_time);
                    Some(slope * duration + intercept)
                }
            }
            RangeFunction::HoltWinters | RangeFunction::DoubleExponentialSmoothing => {
                holt_winters(samples, arg(name, args, 0)?, arg(name, args, 1)?)?
            }
            RangeFunction::FirstOverTime => Some(samples[0].v),
            RangeFunction::MadOverTime => Some(mad_over_time(samples)),
            RangeFunction::TsOfFirstOverTime => Some(samples[0].t as f64 / 1000.0),
            RangeFunction::TsOfLastOverTime => Some(samples[samples.len() - 1].t as f64 / 1000.0),
            RangeFunction::TsOfMaxOverTime => Some(ts_of_extreme(samples, |cur, best| cur >= best)),
            RangeFunction::TsOfMinOverTime => Some(ts_of_extreme(samples, |cur, best| cur <= best)),
            RangeFunction::Changes => Some(changes(samples)),
            RangeFunction::Resets => Some(resets(samples, starts)),
            RangeFunction::AvgOverTime if v3 => Some(avg_over_time_v3(samples)),
            RangeFunction::AvgOverTime => Some(avg_over_time(samples)),
            RangeFunction::MinOverTime => Some(min_over_time(samples)),
            RangeFunction::MaxOverTime => Some(max_over_time(samples)),
            RangeFunction::SumOverTime => Some(sum_over_time(samples)),
            RangeFunction::CountOverTime => Some(samples.len() as f64),
            RangeFunction::StddevOverTime => Some(variance_over_time(samples).sqrt()),
            RangeFunction::StdvarOverTime => Some(variance_over_time(samples)),
            RangeFunction::LastOverTime => samples.last().map(|s| s.v),
            RangeFunction::PresentOverTime => Some(1.0),
            RangeFunction::QuantileOverTime => {
                let q = arg(name, args, 0)?;
                let mut values: Vec<f64> = samples.iter().map(|s| s.v).collect();
                Some(quantile(q, &mut values))
            }
        };
        Ok(out)
    }
}

fn arg(name: &str, args: &[f64], i: usize) -> Result<f64, QueryError> {
    args.get(i)
        .copied()
        .ok_or_else(|| QueryError::Execution(format!("{name}: missing scalar argument {}", i + 1)))
}

/// mad_over_time: the median of the absolute deviations from the median; NaN when any value
/// is NaN (Prometheus 3's `funcMadOverTime`).
fn mad_over_time(samples: &[Sample]) -> f64 {
    if samples.iter().any(|s| s.v.is_nan()) {
        return f64::NAN;
    }
    let mut values: Vec<f64> = samples.iter().map(|s| s.v).collect();
    let median = quantile(0.5, &mut values.clone());
    for v in &mut values {
        *v = (*v - median).abs();
    }
    quantile(0.5, &mut values)
}

/// The time, in seconds, of the last sample `better` than every one before it (a NaN so far
/// is beaten by anything), as Prometheus 3's `compareOverTime` with timestamps.
fn ts_of_extreme(samples: &[Sample], better: impl Fn(f64, f64) -> bool) -> f64 {
    let (mut best, mut at) = (samples[0].v, samples[0].t);
    for s in samples {
        if better(s.v, best) || best.is_nan() {
            best = s.v;
            at = s.t;
        }
    }
    at as f64 / 1000.0
}

/// rate, increase and delta with Prometheus' extrapolation. 2.42 lowers `durationToStart` to
/// the counter's zero point *before* comparing it with the extrapolation threshold, so a zero
/// point closer than the threshold is extrapolated to even when the first sample is far from
/// the window start; Prometheus 3 (`v3`) compares first, then takes the zero point only when
/// it is nearer than what the threshold left.
fn extrapolated_rate(
    samples: &[Sample],
    starts: &[i64],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
    v3: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let first = samples[0];
    let last = samples[samples.len() - 1];

    let mut result = last.v - first.v;
    if is_counter {
        for (k, pair) in samples.windows(2).enumerate() {
            if pair[1].v < pair[0].v || reset_by_start_time(samples, starts, k + 1) {
                result += pair[0].v;
            }
        }
    }

    let mut duration_to_start = seconds_between(range_start, first.t);
    let duration_to_end = seconds_between(last.t, range_end);
    let sampled_interval = seconds_between(first.t, last.t);
    let average_duration_between_samples = sampled_interval / (samples.len() - 1) as f64;
    let extrapolation_threshold = average_duration_between_samples * 1.1;

    if v3 {
        if duration_to_start >= extrapolation_threshold {
            duration_to_start = average_duration_between_samples / 2.0;
        }
        if is_counter && result > 0.0 && first.v >= 0.0 {
            duration_to_start = duration_to_start.min(sampled_interval * (first.v / result));
        }
        let mut duration_to_end = duration_to_end;
        if duration_to_end >= extrapolation_threshold {
            duration_to_end = average_duration_between_samples / 2.0;
        }
        let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
        if is_rate {
            factor /= seconds_between(range_start, range_end);
        }
        return Some(result * factor);
    }

    if is_counter && result > 0.0 && first.v >= 0.0 {
        // Extrapolating further back than the zero point would invent negative counter values.
        let duration_to_zero = sampled_interval * (first.v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }

    // A boundary farther than 110% of the average spacing suggests the series starts or
    // ends inside the window, so extrapolate only half a spacing there.
    let mut extrapolate_to_interval = sampled_interval;
    if duration_to_start < extrapolation_threshold {
        extrapolate_to_interval += duration_to_start;
    } else {
        extrapolate_to_interval += average_duration_between_samples / 2.0;
    }
    if duration_to_end < extrapolation_threshold {
        extrapolate_to_interval += duration_to_end;
    } else {
        extrapolate_to_interval += average_duration_between_samples / 2.0;
    }

    let mut factor = extrapolate_to_interval / sampled_interval;
    if is_rate {
        factor /= seconds_between(range_start, range_end);
    }
    Some(result * factor)
}

/// rate, increase and delta of a window of native histograms, as Prometheus 3 computes them
/// (`extrapolatedRate` over `histogramRate`): the difference of the last and first
/// histograms, counter resets added back, extrapolated to the window's edges (the threshold
/// checked before the zero point, which for histograms is where the count would reach 0).
/// `None` for fewer than two histograms or histograms that cannot be subtracted (exponential
/// and custom buckets mixed).
pub fn histogram_extrapolated_rate(
    points: &[HistogramSample],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Result<Option<HistogramRate>, HistogramError> {
    if points.len() < 2 {
        return Ok(None);
    }
    let refs: Vec<(i64, &FloatHistogram)> = points.iter().map(|p| (p.t, p.h.as_ref())).collect();
    let (mut result, reconciled) = crate::histogram::histogram_rate_detailed(&refs, is_counter)?;
    let (first, last) = (&points[0], &points[points.len() - 1]);
    let mut duration_to_start = seconds_between(range_start, first.t);
    let mut duration_to_end = seconds_between(last.t, range_end);
    let sampled_interval = seconds_between(first.t, last.t);
    let average_duration_between_samples = sampled_interval / (points.len() - 1) as f64;
    let extrapolation_threshold = average_duration_between_samples * 1.1;
    if duration_to_start >= extrapolation_threshold {
        duration_to_start = average_duration_between_samples / 2.0;
    }
    if is_counter && result.count > 0.0 && first.h.count >= 0.0 {
        let duration_to_zero = sampled_interval * (first.h.count / result.count);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= extrapolation_threshold {
        duration_to_end = average_duration_between_samples / 2.0;
    }
    let mut factor = if sampled_interval != 0.0 {
        (sampled_interval + duration_to_start + duration_to_end) / sampled_interval
    } else {
        1.0
    };
    if is_rate {
        factor /= seconds_between(range_start, range_end);
    }
    result.mul(factor);
    Ok(Some(HistogramRate {
        histogram: result,
        reconciled,
    }))
}

/// A rate, increase or delta of native histograms, and whether custom bucket bounds that
/// differed had to be reconciled on the way.
pub struct HistogramRate {
    pub histogram: FloatHistogram,
    pub reconciled: bool,
}

impl RangeFunction {
    /// The function of a window of native histograms, for those that have one (rate,
    /// increase, delta); `None` otherwise and when there is no result; an error for
    /// histograms that cannot be combined (exponential and custom buckets mixed).
    pub fn apply_to_histograms(
        self,
        points: &[HistogramSample],
        range_start: i64,
        range_end: i64,
    ) -> Result<Option<HistogramRate>, HistogramError> {
        match self {
            RangeFunction::Rate => histogram_extrapolated_rate(points, range_start, range_end, true, true),
            RangeFunction::Increase => histogram_extrapolated_rate(points, range_start, range_end, true, false),
            RangeFunction::Delta => histogram_extrapolated_rate(points, range_start, range_end, false, false),
            _ => Ok(None),
        }
    }
}

/// Seconds from `from` to `to` (milliseconds), without overflow whatever the times.
fn seconds_between(from: i64, to: i64) -> f64 {
    (i128::from(to) - i128::from(from)) as f64 / 1000.0
}

/// irate and idelta: the last two samples only.
fn instant_value(samples: &[Sample], starts: &[i64], is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let last = samples[samples.len() - 1];
    let previous = samples[samples.len() - 2];

    let mut result = if is_rate && (last.v < previous.v || reset_by_start_time(samples, starts, samples.len() - 1)) {
        // After a counter reset the counter restarted from zero.
        last.v
    } else {
        last.v - previous.v
    };

    let sampled_interval = last.t - previous.t;
    if sampled_interval == 0 {
        return None;
    }
    if is_rate {
        result /= sampled_interval as f64 / 1000.0;
    }
    Some(result)
}

/// Prometheus' `kahanSumInc`: one step of Neumaier's compensated summation, returning the
/// new sum and compensation.
fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Least-squares fit of value over seconds relative to `intercept_time` (ms); returns the
/// slope per second and the value at `intercept_time`.
fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
    let mut n = 0.0;
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    let init_y = samples[0].v;
    let mut const_y = true;
    for (i, s) in samples.iter().enumerate() {
        // A NaN first value never compares equal, so such series are not "constant" in 2.42.
        if const_y && i > 0 && s.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = seconds_between(intercept_time, s.t);
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(s.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * s.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        // The general formula would give NaN from rounding noise; a constant series has an
        // exact answer, except for infinities, where none is meaningful.
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;

    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// Double exponential smoothing. The factors are checked before the sample count, as in
/// Prometheus, so a single sample still reports invalid factors. NaN factors pass the
/// checks (all comparisons false) and give NaN, as in Prometheus.
fn holt_winters(samples: &[Sample], sf: f64, tf: f64) -> Result<Option<f64>, QueryError> {
    if sf <= 0.0 || sf >= 1.0 {
        return Err(QueryError::Execution(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
            go_fmt_f(sf)
        )));
    }
    if tf <= 0.0 || tf >= 1.0 {
        return Err(QueryError::Execution(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {}",
            go_fmt_f(tf)
        )));
    }
    if samples.len() < 2 {
        return Ok(None);
    }

    let mut s0 = 0.0;
    let mut s1 = samples[0].v;
    let mut b = samples[1].v - samples[0].v;
    for (i, s) in samples.iter().enumerate().skip(1) {
        let x = sf * s.v;
        // The initial trend is used as is for the first step (Prometheus' calcTrendValue).
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Ok(Some(s1))
}

fn changes(samples: &[Sample]) -> f64 {
    let mut changes = 0;
    for pair in samples.windows(2) {
        let (prev, cur) = (pair[0].v, pair[1].v);
        // NaN != NaN, but a series stuck at NaN has not changed.
        if cur != prev && !(cur.is_nan() && prev.is_nan()) {
            changes += 1;
        }
    }
    changes as f64
}

fn resets(samples: &[Sample], starts: &[i64]) -> f64 {
    (1..samples.len())
        .filter(|&k| samples[k].v < samples[k - 1].v || reset_by_start_time(samples, starts, k))
        .count() as f64
}

/// Whether sample `k` (> 0) restarted its counter after sample `k - 1`, as its start
/// timestamp tells ([`start_time_reset`]); never when there are no start timestamps.
fn reset_by_start_time(samples: &[Sample], starts: &[i64], k: usize) -> bool {
    !starts.is_empty() && start_time_reset(starts[k - 1], samples[k - 1].t, starts[k], samples[k].t)
}

/// Prometheus 3's `isStartTimestampReset`: whether a sample at `t` with start timestamp
/// `start` began counting after the previous sample (at `previous_t`, start
/// `previous_start`). 0 is an unknown start; a start after its own sample is invalid and
/// tells nothing. A start exactly at the previous sample is a reset for deltas (whose
/// previous start is known) and none for a cumulative series of unknown start (OTel).
pub fn start_time_reset(previous_start: i64, previous_t: i64, start: i64, t: i64) -> bool {
    if start == 0 || start > t || start < previous_t {
        return false;
    }
    if start > previous_t {
        return true;
    }
    previous_start != 0 && previous_start <= previous_t
}

/// Incremental mean, which cannot overflow where the plain sum would, with Kahan
/// compensation. Once the mean is infinite, finite values and infinities of the same sign
/// cannot change it, and the incremental formula would turn it into NaN (Inf - Inf).
fn avg_over_time(samples: &[Sample]) -> f64 {
    let (mut mean, mut c, mut count) = (0.0f64, 0.0, 0.0);
    for s in samples {
        count += 1.0;
        if mean.is_infinite() {
            if s.v.is_infinite() && (mean > 0.0) == (s.v > 0.0) {
                continue;
            }
            if !s.v.is_infinite() && !s.v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_sum_inc(s.v / count - mean / count, mean, c);
    }
    // The compensation of an infinite sum is NaN (Inf - Inf) and must not leak out.
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

/// Prometheus 3's avg_over_time: the compensated sum divided by the count while the sum stays
/// finite, then an incremental mean from where it would overflow.
fn avg_over_time_v3(samples: &[Sample]) -> f64 {
    let inc = crate::histogram::kahan_inc;
    let (mut sum, mut count) = (samples[0].v, 1.0);
    let (mut mean, mut c, mut incremental) = (0.0, 0.0, false);
    for (i, s) in samples.iter().enumerate().skip(1) {
        count = (i + 1) as f64;
        if !incremental {
            let (new_sum, new_c) = inc(s.v, sum, c);
            if !new_sum.is_infinite() {
                (sum, c) = (new_sum, new_c);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = inc(s.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// NaN loses against any number, but a window of NaNs gives NaN.
fn min_over_time(samples: &[Sample]) -> f64 {
    let mut min = samples[0].v;
    for s in samples {
        if s.v < min || min.is_nan() {
            min = s.v;
        }
    }
    min
}

fn max_over_time(samples: &[Sample]) -> f64 {
    let mut max = samples[0].v;
    for s in samples {
        if s.v > max || max.is_nan() {
            max = s.v;
        }
    }
    max
}

fn sum_over_time(samples: &[Sample]) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0);
    for s in samples {
        (sum, c) = kahan_sum_inc(s.v, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// Population variance by Welford's online algorithm, both running sums compensated.
fn variance_over_time(samples: &[Sample]) -> f64 {
    let mut count = 0.0;
    let (mut mean, mut c_mean) = (0.0, 0.0);
    let (mut aux, mut c_aux) = (0.0, 0.0);
    for s in samples {
        count += 1.0;
        let delta = s.v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (s.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Go's `%f`: six decimals, and Go's spellings of the special values.
fn go_fmt_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Samples `start + i*step` at `i*interval_ms` for i in 0..n, like the test scripts'
    /// `start+stepxN` notation.
    fn series(interval_ms: i64, values: &[f64]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: i as i64 * interval_ms,
                v,
            })
            .collect()
    }

    fn ramp(interval_ms: i64, start: f64, step: f64, n: usize) -> Vec<Sample> {
        let values: Vec<f64> = (0..n).map(|i| start + step * i as f64).collect();
        series(interval_ms, &values)
    }

    /// The samples a 2.42 window `[end - range, end]` holds.
    fn window(samples: &[Sample], end: i64, range: i64) -> Vec<Sample> {
        samples
            .iter()
            .copied()
            .filter(|s| s.t >= end - range && s.t <= end)
            .collect()
    }

    /// Evaluates `name` over the window of `range` ending at `end`, like `name(x[range])` at `end`.
    fn eval(name: &str, samples: &[Sample], end: i64, range: i64, args: &[f64]) -> Option<f64> {
        range_function(name, &window(samples, end, range), end - range, end, args).unwrap()
    }

    fn assert_close(got: Option<f64>, want: f64) {
        let got = got.expect("a sample");
        let tolerance = 1e-12 * want.abs().max(1.0);
        assert!((got - want).abs() <= tolerance, "got {got}, want {want}");
    }

    #[test]
    fn increase_extrapolates_to_window_and_handles_resets() {
        // functions.test: 0+10x10 and 0+10x5 0+10x5 at 5m, increase(x[50m]) at 50m.
        let foo = ramp(5 * MIN, 0.0, 10.0, 11);
        let mut bar = ramp(5 * MIN, 0.0, 10.0, 6);
        bar.extend(ramp(5 * MIN, 0.0, 10.0, 5).into_iter().map(|s| Sample {
            t: s.t + 30 * MIN,
            v: s.v,
        }));
        assert_eq!(eval("increase", &foo, 50 * MIN, 50 * MIN, &[]), Some(100.0));
        assert_eq!(eval("increase", &bar, 50 * MIN, 50 * MIN, &[]), Some(90.0));
        assert_eq!(eval("increase", &foo, 50 * MIN, 100 * MIN, &[]), Some(100.0));
        assert_eq!(eval("increase", &bar, 50 * MIN, 100 * MIN, &[]), Some(90.0));

        // 0 1 2 3 2 3 4 reads as 0 1 2 3 0 1 2 3 4: an increase of 7.
        let reset = series(5 * MIN, &[0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0]);
        assert_eq!(eval("increase", &reset, 30 * MIN, 30 * MIN, &[]), Some(7.0));
    }

    #[test]
    fn rate_per_second_with_resets_and_offsets() {
        let mut middle = ramp(5 * MIN, 0.0, 10.0, 5);
        middle.extend(ramp(5 * MIN, 0.0, 10.0, 6).into_iter().map(|s| Sample {
            t: s.t + 25 * MIN,
            v: s.v,
        }));
        assert_close(eval("rate", &middle, 50 * MIN, 50 * MIN, &[]), 0.03);

        // A reset in the last sample: 90 -> 0 -> 10 within [45m, 50m] gives 0 * factor.
        let mut end = ramp(5 * MIN, 0.0, 10.0, 10);
        end.push(Sample { t: 50 * MIN, v: 0.0 });
        end.push(Sample { t: 55 * MIN, v: 10.0 });
        assert_eq!(eval("rate", &end, 50 * MIN, 5 * MIN, &[]), Some(0.0));

        let window_series = ramp(5 * MIN, 0.0, 80.0, 11);
        assert_close(
            eval("rate", &window_series, 50 * MIN, 50 * MIN, &[]),
            0.26666666666666666,
        );

        // rate(x[10m] offset 5m) at 50m: the window ends at 45m.
        let a = ramp(5 * MIN, 0.0, 10.0, 11);
        let b = ramp(5 * MIN, 0.0, 20.0, 11);
        assert_close(eval("rate", &a, 45 * MIN, 10 * MIN, &[]), 0.03333333333333333);
        assert_close(eval("rate", &b, 45 * MIN, 10 * MIN, &[]), 0.06666666666666667);
    }

    #[test]
    fn rate_zero_point_cutoff() {
        // functions.test testcounter_zero_cutoff: load 4m, start+240x10, rate(x[20m]).
        let expected_at_10m = [0.5, 0.55, 0.6, 0.65, 0.7, 0.6];
        for (i, want) in expected_at_10m.iter().enumerate() {
            let s = ramp(4 * MIN, 60.0 * i as f64, 240.0, 11);
            assert_close(eval("rate", &s, 10 * MIN, 20 * MIN, &[]), *want);
            assert_close(eval("rate", &s, 50 * MIN, 20 * MIN, &[]), 0.6);
        }
    }

    #[test]
    fn rate_zero_point_is_compared_with_threshold_as_in_2_42() {
        // Samples 200, 440, 680 at 0, 4m, 8m; rate(x[20m]) at 10m. The window start is 600 s
        // before the first sample (beyond the 264 s threshold) but the zero point is only
        // 200 s back. 2.42 extrapolates to the zero point: (480 + 200 + 120) / 480 * 480 =
        // 800 over 1200 s. Later versions would cap at half a spacing and give 0.6.
        let s = ramp(4 * MIN, 200.0, 240.0, 3);
        assert_close(eval("rate", &s, 10 * MIN, 20 * MIN, &[]), 800.0 / 1200.0);
        // delta is not a counter and knows no zero point: 480 + 120 + 120 = 720.
        assert_close(eval("delta", &s, 10 * MIN, 20 * MIN, &[]), 720.0);
    }

    #[test]
    fn rate_negative_first_value_skips_zero_point() {
        // The zero point rule needs a non-negative first value: -10, 20, 50 over [0, 20s] at
        // 10s spacing, window [-10s, 20s]: start 10 s away (< 11 s threshold) is extrapolated.
        let s = series(10_000, &[-10.0, 20.0, 50.0]);
        let got = range_function("increase", &s, -10_000, 20_000, &[]).unwrap();
        assert_close(got, 60.0 * 30.0 / 20.0);
    }

    #[test]
    fn delta_and_idelta() {
        let foo = series(5 * MIN, &[0.0, 50.0, 100.0, 150.0, 200.0]);
        let bar = series(5 * MIN, &[200.0, 150.0, 100.0, 50.0, 0.0]);
        assert_eq!(eval("delta", &foo, 20 * MIN, 20 * MIN, &[]), Some(200.0));
        assert_eq!(eval("delta", &bar, 20 * MIN, 20 * MIN, &[]), Some(-200.0));

        let foo = series(5 * MIN, &[0.0, 50.0, 100.0, 150.0]);
        let bar = series(5 * MIN, &[0.0, 50.0, 100.0, 50.0]);
        assert_eq!(eval("idelta", &foo, 20 * MIN, 20 * MIN, &[]), Some(50.0));
        assert_eq!(eval("idelta", &bar, 20 * MIN, 20 * MIN, &[]), Some(-50.0));
    }

    #[test]
    fn irate_uses_last_two_samples() {
        let foo = ramp(5 * MIN, 0.0, 10.0, 11);
        let mut bar = ramp(5 * MIN, 0.0, 10.0, 6);
        bar.extend(ramp(5 * MIN, 0.0, 10.0, 5).into_iter().map(|s| Sample {
            t: s.t + 30 * MIN,
            v: s.v,
        }));
        assert_close(eval("irate", &foo, 50 * MIN, 50 * MIN, &[]), 0.03333333333333333);
        assert_close(eval("irate", &bar, 50 * MIN, 50 * MIN, &[]), 0.03333333333333333);
        // At 30m bar has just reset from 50 to 0: the rate is the new value over 300 s.
        assert_eq!(eval("irate", &bar, 30 * MIN, 50 * MIN, &[]), Some(0.0));
    }

    #[test]
    fn fewer_than_two_samples_give_nothing() {
        let one = [Sample { t: 0, v: 5.0 }];
        for name in ["rate", "increase", "delta", "irate", "idelta", "deriv"] {
            assert_eq!(range_function(name, &one, -MIN, 0, &[]).unwrap(), None, "{name}");
        }
        assert_eq!(range_function("predict_linear", &one, -MIN, 0, &[60.0]).unwrap(), None);
        assert_eq!(
            range_function("holt_winters", &one, -MIN, 0, &[0.5, 0.5]).unwrap(),
            None
        );
    }

    #[test]
    fn empty_windows_give_nothing_even_with_bad_arguments() {
        assert_eq!(range_function("holt_winters", &[], -MIN, 0, &[2.0, 0.1]).unwrap(), None);
        assert_eq!(range_function("count_over_time", &[], -MIN, 0, &[]).unwrap(), None);
    }

    #[test]
    fn deriv_and_predict_linear() {
        // functions.test: testcounter_reset_middle 0+10x4 0+10x5 at 5m.
        let mut s = ramp(5 * MIN, 0.0, 10.0, 5);
        s.extend(ramp(5 * MIN, 0.0, 10.0, 6).into_iter().map(|x| Sample {
            t: x.t + 25 * MIN,
            v: x.v,
        }));
        assert_close(eval("deriv", &s, 50 * MIN, 100 * MIN, &[]), 0.010606060606060607);
        assert_close(
            eval("predict_linear", &s, 50 * MIN, 100 * MIN, &[3600.0]),
            76.81818181818181,
        );

        // predict_linear(x[100m] @ 3000, 3600) at 10m and 70m: the window ends at 3000 s but
        // the regression is anchored at the evaluation time.
        let w = window(&s, 50 * MIN, 100 * MIN);
        let at = |eval_ms: i64| {
            range_function("predict_linear", &w, -50 * MIN, 50 * MIN, &[3600.0, eval_ms as f64]).unwrap()
        };
        assert_close(at(10 * MIN), 51.36363636363637);
        assert_close(at(70 * MIN), 89.54545454545455);

        let rising = ramp(5 * MIN, 0.0, 80.0, 11);
        assert_close(eval("deriv", &rising, 50 * MIN, 50 * MIN, &[]), 0.26666666666666666);
    }

    #[test]
    fn linear_regression_of_constant_series() {
        let flat = series(MIN, &[3.0, 3.0, 3.0]);
        assert_eq!(range_function("deriv", &flat, 0, 2 * MIN, &[]).unwrap(), Some(0.0));
        assert_eq!(
            range_function("predict_linear", &flat, 0, 2 * MIN, &[600.0]).unwrap(),
            Some(3.0)
        );
        let inf = series(MIN, &[f64::INFINITY, f64::INFINITY]);
        assert!(range_function("deriv", &inf, 0, MIN, &[]).unwrap().unwrap().is_nan());
    }

    #[test]
    fn holt_winters_follows_trends() {
        // functions.test: holt_winters(x[1m], 0.01, 0.1) at 8000s on a 10s-spaced ramp.
        for (step, want) in [(10.0, 8000.0), (20.0, 16000.0), (-20.0, -16000.0)] {
            let s = ramp(10_000, 0.0, step, 801);
            assert_close(eval("holt_winters", &s, 8_000_000, MIN, &[0.01, 0.1]), want);
        }
        let down = ramp(10_000, 8000.0, -10.0, 801);
        let got = eval("holt_winters", &down, 8_000_000, MIN, &[0.01, 0.1]).unwrap();
        assert!(got.abs() < 1e-9, "got {got}");
    }

    #[test]
    fn holt_winters_by_hand() {
        // s1=1, b=2; i=1: b stays 2, s1 = .5*3 + .5*(1+2) = 3; i=2: b = .5*(3-1) + .5*2 = 2,
        // s1 = .5*4 + .5*(3+2) = 4.5.
        let s = series(1000, &[1.0, 3.0, 4.0]);
        assert_eq!(
            range_function("holt_winters", &s, 0, 2000, &[0.5, 0.5]).unwrap(),
            Some(4.5)
        );
    }

    #[test]
    fn holt_winters_rejects_factors_like_go() {
        let s = series(1000, &[1.0]);
        let err = range_function("holt_winters", &s, 0, 1000, &[1.0, 0.5]).unwrap_err();
        assert_eq!(
            err,
            QueryError::Execution("invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000".into())
        );
        let err = range_function("holt_winters", &s, 0, 1000, &[0.5, -0.25]).unwrap_err();
        assert_eq!(
            err,
            QueryError::Execution("invalid trend factor. Expected: 0 < tf < 1, got: -0.250000".into())
        );
        let err = range_function("holt_winters", &s, 0, 1000, &[f64::INFINITY, 0.5]).unwrap_err();
        assert_eq!(
            err,
            QueryError::Execution("invalid smoothing factor. Expected: 0 < sf < 1, got: +Inf".into())
        );
        // NaN passes Go's comparisons.
        let two = series(1000, &[1.0, 2.0]);
        let nan = range_function("holt_winters", &two, 0, 1000, &[f64::NAN, 0.5]).unwrap();
        assert!(nan.unwrap().is_nan());
    }

    #[test]
    fn go_percent_f_formatting() {
        assert_eq!(go_fmt_f(0.1), "0.100000");
        assert_eq!(go_fmt_f(-0.0), "-0.000000");
        assert_eq!(go_fmt_f(1e20), "100000000000000000000.000000");
        // Exactly halfway at the sixth decimal: Go rounds half to even.
        assert_eq!(go_fmt_f(0.0078125), "0.007812");
        assert_eq!(go_fmt_f(f64::NAN), "NaN");
        assert_eq!(go_fmt_f(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn start_timestamps_tell_resets_as_prometheus_does() {
        // A start after the previous sample: a reset; before it or unknown: none.
        assert!(start_time_reset(0, 60_000, 90_000, 120_000));
        assert!(!start_time_reset(0, 60_000, 30_000, 120_000));
        assert!(!start_time_reset(0, 60_000, 0, 120_000));
        // A start after its own sample is invalid and tells nothing.
        assert!(!start_time_reset(0, 60_000, 130_000, 120_000));
        // At the previous sample: a delta (previous start known), or a cumulative series of
        // unknown start (previous start unknown, or invalid).
        assert!(start_time_reset(1, 60_000, 60_000, 120_000));
        assert!(!start_time_reset(0, 60_000, 60_000, 120_000));
        assert!(!start_time_reset(61_000, 60_000, 60_000, 120_000));

        // A counter 10, 20, 30 whose last sample started after the second: read as a reset.
        let samples = series(60_000, &[10.0, 20.0, 30.0]);
        let starts = [0, 0, 90_000];
        let f = |name: &str, starts: &[i64]| {
            RangeFunction::of(name)
                .unwrap()
                .apply_with_start_times(&samples, starts, 0, 120_000, &[], Semantics::Prometheus3)
                .unwrap()
        };
        assert_eq!(f("resets", &starts), Some(1.0));
        assert_eq!(f("resets", &[]), Some(0.0));
        // The increase counts the last value whole: 10 + 30 rather than 20.
        assert_close(f("increase", &starts), 40.0);
        assert_close(f("increase", &[]), 20.0);
        // irate: the last value over the last interval.
        assert_close(f("irate", &starts), 0.5);
        // Functions that do not look for resets ignore start timestamps.
        assert_close(f("delta", &starts), 20.0);
    }

    #[test]
    fn changes_and_resets() {
        let foo = series(5 * MIN, &[1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0]);
        let bar = series(5 * MIN, &[1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let biz = series(5 * MIN, &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let at = 50 * MIN;
        for (range, want) in [
            (5, [0.0, 0.0, 0.0]),
            (20, [1.0, 0.0, 0.0]),
            (30, [2.0, 1.0, 0.0]),
            (50, [3.0, 1.0, 0.0]),
        ] {
            let got: Vec<f64> = [&foo, &bar, &biz]
                .iter()
                .map(|s| eval("resets", s, at, range * MIN, &[]).unwrap())
                .collect();
            assert_eq!(got, want, "resets over {range}m");
        }
        for (range, want) in [(20, [3.0, 3.0, 0.0]), (30, [4.0, 5.0, 1.0]), (50, [8.0, 9.0, 1.0])] {
            let got: Vec<f64> = [&foo, &bar, &biz]
                .iter()
                .map(|s| eval("changes", s, at, range * MIN, &[]).unwrap())
                .collect();
            assert_eq!(got, want, "changes over {range}m");
        }

        let nans = series(5 * MIN, &[f64::NAN, f64::NAN, f64::NAN]);
        let mixed = series(5 * MIN, &[0.0, f64::NAN, 0.0]);
        assert_eq!(eval("changes", &nans, 15 * MIN, 15 * MIN, &[]), Some(0.0));
        assert_eq!(eval("changes", &mixed, 15 * MIN, 15 * MIN, &[]), Some(2.0));
    }

    fn over_time(name: &str, values: &[f64]) -> f64 {
        let s = series(10_000, values);
        range_function(name, &s, 0, MIN, &[]).unwrap().unwrap()
    }

    fn same(got: f64, want: f64) -> bool {
        (got.is_nan() && want.is_nan()) || got == want
    }

    #[test]
    fn avg_over_time_handles_infinities_and_overflow() {
        let inf = f64::INFINITY;
        // functions.test writes this as 9.988465674311579e+307, the same double.
        let big = 9.98846567431158e307;
        let cases: &[(&[f64], f64)] = &[
            (&[1.0, 2.0, 3.0, 4.0, 5.0], 3.0),
            (&[1.0, 2.0, 3.0, 4.0, inf], inf),
            (&[1.0, 2.0, 3.0, 4.0, -inf], -inf),
            (&[1.0, 2.0, 3.0, inf, -inf], f64::NAN),
            (&[inf, 0.0, inf], inf),
            (&[inf, inf, inf, -inf], f64::NAN),
            (&[1.0, 2.0, 3.0, -inf, -inf], -inf),
            (&[-inf, 0.0, -inf], -inf),
            (&[-inf, -inf, -inf, inf], f64::NAN),
            (&[1.0, 2.0, -inf, -inf, inf], f64::NAN),
            (&[big, big], big),
            (&[-big, -big, -big], -big),
            (&[-big, big], 0.0),
        ];
        for (values, want) in cases {
            let got = over_time("avg_over_time", values);
            assert!(same(got, *want), "avg_over_time({values:?}) = {got}, want {want}");
        }
        // The plain sum of the same values overflows.
        assert_eq!(over_time("sum_over_time", &[big, big]), inf);
    }

    #[test]
    fn sum_over_time_is_compensated() {
        // Naive summation gives 0 here; Neumaier's compensation keeps both ones.
        assert_eq!(over_time("sum_over_time", &[1.0, 1e100, 1.0, -1e100]), 2.0);
        assert_eq!(over_time("sum_over_time", &[0.1, 0.2, 0.3]), 0.6);
        assert_eq!(over_time("sum_over_time", &[f64::INFINITY, 1.0]), f64::INFINITY);
        assert!(over_time("sum_over_time", &[1.0, f64::NAN]).is_nan());
    }

    #[test]
    fn stddev_and_stdvar_over_time() {
        assert_close(Some(over_time("stdvar_over_time", &[0.0, 8.0, 8.0, 2.0, 3.0])), 10.56);
        let sd = over_time("stddev_over_time", &[0.0, 8.0, 8.0, 2.0, 3.0]);
        assert!((sd - 3.249615).abs() < 1e-6, "{sd}");
        // prometheus/prometheus#4927: identical values must give exactly zero.
        let v = 1.5990505637277868;
        assert_eq!(over_time("stdvar_over_time", &[v, v, v]), 0.0);
        assert_eq!(over_time("stddev_over_time", &[v, v, v]), 0.0);
        assert_eq!(over_time("stdvar_over_time", &[7.0]), 0.0);
    }

    #[test]
    fn min_max_last_over_time_with_nan() {
        let nan = f64::NAN;
        let cases: &[(&[f64], f64, f64, f64)] = &[
            (&[2.0, 0.0, 3.0], 0.0, 3.0, 3.0),
            (&[2.0, 0.0, nan], 0.0, 2.0, nan),
            (&[2.0, nan, 1.0], 1.0, 2.0, 1.0),
            (&[nan, 0.0, 1.0], 0.0, 1.0, 1.0),
            (&[nan, nan, nan], nan, nan, nan),
        ];
        for (values, min, max, last) in cases {
            assert!(same(over_time("min_over_time", values), *min), "min {values:?}");
            assert!(same(over_time("max_over_time", values), *max), "max {values:?}");
            assert!(same(over_time("last_over_time", values), *last), "last {values:?}");
        }
    }

    #[test]
    fn count_and_present_over_time() {
        assert_eq!(over_time("count_over_time", &[1.0, f64::NAN, 3.0]), 3.0);
        assert_eq!(over_time("present_over_time", &[f64::NAN]), 1.0);
    }

    #[test]
    fn quantile_over_time_interpolates() {
        let two = series(10_000, &[0.0, 1.0]);
        let three = series(10_000, &[0.0, 1.0, 2.0]);
        let uneven = series(10_000, &[0.0, 1.0, 4.0]);
        let q = |s: &[Sample], q: f64| range_function("quantile_over_time", s, 0, MIN, &[q]).unwrap().unwrap();
        let cases = [
            (0.0, [0.0, 0.0, 0.0]),
            (0.5, [0.5, 1.0, 1.0]),
            (0.75, [0.75, 1.5, 2.5]),
            (0.8, [0.8, 1.6, 2.8]),
            (1.0, [1.0, 2.0, 4.0]),
            (-1.0, [f64::NEG_INFINITY; 3]),
            (2.0, [f64::INFINITY; 3]),
        ];
        for (quant, want) in cases {
            let got = [q(&two, quant), q(&three, quant), q(&uneven, quant)];
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g - w).abs() < 1e-12 || g == &w,
                    "q={quant}: got {got:?}, want {want:?}"
                );
            }
        }
    }

    #[test]
    fn missing_arguments_and_unknown_names_are_errors() {
        let s = series(1000, &[1.0, 2.0]);
        assert!(matches!(
            range_function("quantile_over_time", &s, 0, 1000, &[]),
            Err(QueryError::Execution(_))
        ));
        assert!(matches!(
            range_function("no_such_function", &s, 0, 1000, &[]),
            Err(QueryError::Execution(_))
        ));
        assert!(matches!(
            range_function("no_such_function", &[], 0, 1000, &[]),
            Err(QueryError::Execution(_))
        ));
    }
}
