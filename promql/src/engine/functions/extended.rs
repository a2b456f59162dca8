//! Functions of `anchored` and `smoothed` windows, and the values of such selectors on their
//! own: Prometheus 3's extended range selectors (see [`crate::syntax_markers`]).
//!
//! An anchored window `x[5m] anchored` reads back one lookback further than its range: its
//! left edge is the last sample at or before the range start, so `increase` and `delta` are
//! the plain difference of the edges (with counter resets corrected), without extrapolation,
//! and `changes`/`resets` count the step from that sample into the range. A smoothed window
//! reads one lookback beyond both ends and takes its edges by linear interpolation between the
//! samples around them. As in Prometheus 3.16 (`extendedRate`, `extendedHistogramRate`,
//! `extendFloats`, `smoothSeries`), with no start timestamps (not stored here), so that every
//! start-timestamp reset test there is false.

use std::sync::Arc;

use crate::annotations as a;
use crate::engine::eval::{Evaluator, HistogramStep};
use crate::error::QueryError;
use crate::histogram::{CounterResetHint, FloatHistogram};
use crate::syntax_markers::Mode;
use crate::value::{HistogramSample, Sample};

use super::WindowResult;

/// The functions each modifier may be used with, sorted as Prometheus lists them.
const ANCHORED_SAFE: [&str; 5] = ["changes", "delta", "increase", "rate", "resets"];
const SMOOTHED_SAFE: [&str; 3] = ["delta", "increase", "rate"];

/// Refuses a call of `name` over a selector with modifier `mode` that Prometheus refuses.
pub fn check_allowed(name: &str, mode: Mode) -> Result<(), QueryError> {
    let safe: &[&str] = match mode {
        Mode::Plain => return Ok(()),
        Mode::Anchored => &ANCHORED_SAFE,
        Mode::Smoothed => &SMOOTHED_SAFE,
    };
    if safe.contains(&name) {
        return Ok(());
    }
    Err(QueryError::Execution(format!(
        "{} modifier can only be used with: {} - not with {name}",
        mode.keyword(),
        safe.join(", ")
    )))
}

/// The window a selector with `mode` and a range of `range` ms reads at a reference time:
/// how far after the reference it ends, and how wide it is. Anchored reads one lookback more
/// before the range, smoothed one more on each side.
pub fn window(mode: Mode, range: i64, lookback: i64) -> (i64, i64) {
    let (before, after) = match mode {
        Mode::Plain => (0, 0),
        Mode::Anchored => (lookback, 0),
        Mode::Smoothed => (lookback, lookback),
    };
    (after, range.saturating_add(before).saturating_add(after))
}

/// The range of one step: `(start, end]`, its length in seconds as written (what a rate is
/// per), and whether its edges are interpolated.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub start: i64,
    pub end: i64,
    pub seconds: f64,
    pub smoothed: bool,
}

/// The index of the last sample at or before `start` among all but the last (or 0), and the
/// last sample's index: for smoothed ranges, the first at or after `end` (or the last).
fn edges<T>(points: &[T], time: impl Fn(&T) -> i64, range: Range) -> (usize, usize) {
    let last = points.len() - 1;
    let first = points[..last]
        .partition_point(|p| time(p) <= range.start)
        .saturating_sub(1);
    let last = if range.smoothed {
        points[..last].partition_point(|p| time(p) < range.end)
    } else {
        last
    };
    (first, last)
}

/// Linear interpolation at `t` between two samples; a counter that went down is taken as
/// restarted from 0.
fn interpolate(p1: Sample, p2: Sample, t: i64, is_counter: bool) -> f64 {
    let y1 = if is_counter && p2.v < p1.v { 0.0 } else { p1.v };
    y1 + (p2.v - y1) * (t - p1.t) as f64 / (p2.t - p1.t) as f64
}

/// The value at a range's left edge: the sample at or before it (interpolated towards the
/// next when smoothed), or the first sample when none is.
fn left_value(f: &[Sample], first: usize, start: i64, smoothed: bool, is_counter: bool) -> f64 {
    let p = f[first];
    if p.t >= start || !smoothed {
        return p.v;
    }
    interpolate(p, f[first + 1], start, is_counter)
}

/// The value at a range's right edge: the last sample at or before it, or when smoothed and
/// the sample lies after it, interpolated from the one before.
fn right_value(f: &[Sample], last: usize, end: i64, smoothed: bool, is_counter: bool) -> f64 {
    let p = f[last];
    if p.t <= end || last == 0 {
        return p.v;
    }
    if smoothed {
        interpolate(f[last - 1], p, end, is_counter)
    } else {
        f[last - 1].v
    }
}

/// `rate`, `increase` (counters) or `delta` of floats over an extended range.
fn float_rate(f: &[Sample], range: Range, is_counter: bool, is_rate: bool) -> Option<f64> {
    let (mut first, mut last) = edges(f, |s| s.t, range);
    if f[last].t <= range.start || (range.smoothed && f[first].t > range.end) {
        return None;
    }
    let left = left_value(f, first, range.start, range.smoothed, is_counter);
    let right = right_value(f, last, range.end, range.smoothed, is_counter);
    let mut result = right - left;
    if is_counter {
        // The edges already account for resets at them: only samples inside count.
        if f[first].t <= range.start {
            first += 1;
        }
        if f[last].t >= range.end {
            last = last.wrapping_sub(1);
        }
        let mut prev = left;
        let mut correction = 0.0;
        for p in f.get(first..last.wrapping_add(1)).unwrap_or(&[]) {
            if p.v < prev {
                correction += prev;
            }
            prev = p.v;
        }
        if right < prev {
            correction += prev;
        }
        result += correction;
    }
    if is_rate {
        result /= range.seconds;
    }
    Some(result)
}

/// Histogram interpolation at `t` between `(t1, h1)` and `(t2, h2)`; a counter reset is taken
/// as a restart from empty. None (warned) when the two cannot be combined.
fn interpolate_histograms(
    ev: &Evaluator,
    metric: &str,
    (t1, h1): (i64, &FloatHistogram),
    (t2, h2): (i64, &FloatHistogram),
    t: i64,
    is_counter: bool,
) -> Option<FloatHistogram> {
    if t == t1 {
        return Some(h1.clone());
    }
    if t == t2 {
        return Some(h2.clone());
    }
    let fraction = (t - t1) as f64 / (t2 - t1) as f64;
    if is_counter && h2.detect_reset(h1) {
        let mut h = h2.clone();
        h.mul(fraction);
        return Some(h);
    }
    let (mut result, _) = ev.combine_histograms(h2, h1, HistogramStep::Subtraction, metric)?;
    result.mul(fraction);
    ev.combine_histograms(&result, h1, HistogramStep::Addition, metric)
        .map(|(result, _)| result)
}

/// `rate`, `increase` or `delta` of native histograms over an extended range.
fn histogram_rate(
    ev: &Evaluator,
    metric: &str,
    h: &[HistogramSample],
    range: Range,
    is_counter: bool,
    is_rate: bool,
) -> Option<FloatHistogram> {
    let (first, last) = edges(h, |s| s.t, range);
    if h[last].t <= range.start || (range.smoothed && h[first].t > range.end) {
        return None;
    }
    let custom = h[first].h.uses_custom_buckets();
    for p in &h[first..=last] {
        if p.h.uses_custom_buckets() != custom {
            ev.warn(a::mixed_exponential_custom_histograms(metric));
            return None;
        }
        if is_counter && p.h.counter_reset_hint == CounterResetHint::Gauge {
            ev.warn(a::native_histogram_not_counter(metric));
        }
    }
    let point = |i: usize| (h[i].t, h[i].h.as_ref());
    let left = if range.smoothed && h[first].t < range.start {
        interpolate_histograms(ev, metric, point(first), point(first + 1), range.start, is_counter)?
    } else {
        h[first].h.as_ref().clone()
    };
    let right = if range.smoothed && last > 0 && h[last].t > range.end {
        interpolate_histograms(ev, metric, point(last - 1), point(last), range.end, is_counter)?
    } else {
        h[last].h.as_ref().clone()
    };
    if !is_counter
        && (left.counter_reset_hint != CounterResetHint::Gauge || right.counter_reset_hint != CounterResetHint::Gauge)
    {
        ev.warn(a::native_histogram_not_gauge(metric));
    }
    let (mut result, _) = ev.combine_histograms(&right, &left, HistogramStep::Subtraction, metric)?;
    if is_counter {
        if let Some(correction) = histogram_correction(ev, metric, h, (first, last), &left, &right, range)? {
            result = ev
                .combine_histograms(&result, &correction, HistogramStep::Addition, metric)?
                .0;
        }
    }
    if is_rate {
        result.div(range.seconds);
    }
    result.counter_reset_hint = CounterResetHint::Gauge;
    result.compact(0);
    Some(result)
}

/// The sum of the histograms before each counter reset strictly inside the range: `None`
/// when combining failed (warned), `Some(None)` when there is none.
fn histogram_correction(
    ev: &Evaluator,
    metric: &str,
    h: &[HistogramSample],
    (first_index, last_index): (usize, usize),
    left: &FloatHistogram,
    right: &FloatHistogram,
    range: Range,
) -> Option<Option<FloatHistogram>> {
    // The first sample is represented by `left`.
    let mut first = first_index + 1;
    let mut prev = left;
    if range.smoothed && h[first_index].t < range.start && h[first_index + 1].h.detect_reset(&h[first_index].h) {
        // The left interpolation spanned that reset already.
        prev = &h[first_index + 1].h;
        first += 1;
    }
    // The last sample is represented by `right`, which inherits its hint.
    if first > last_index {
        return Some(None);
    }
    let mut correction: Option<FloatHistogram> = None;
    let mut add = |c: &FloatHistogram| -> Option<()> {
        correction = Some(match correction.take() {
            None => c.clone(),
            Some(sum) => ev.combine_histograms(&sum, c, HistogramStep::Addition, metric)?.0,
        });
        Some(())
    };
    for p in &h[first..last_index] {
        if p.h.detect_reset(prev) {
            add(prev)?;
        }
        prev = &p.h;
    }
    if right.detect_reset(prev) {
        add(prev)?;
    }
    Some(correction)
}

/// `rate`, `increase` or `delta` of one series' samples read for an extended `range`:
/// floats or histograms, not both.
pub fn rate(
    ev: &Evaluator,
    metric: &str,
    samples: &[Sample],
    histograms: &[HistogramSample],
    range: Range,
    is_counter: bool,
    is_rate: bool,
) -> Option<WindowResult> {
    match (samples.is_empty(), histograms.is_empty()) {
        (true, true) => None,
        (false, false) => {
            ev.warn(a::mixed_floats_histograms(metric));
            None
        }
        (false, true) => float_rate(samples, range, is_counter, is_rate).map(|v| (v, None)),
        (true, false) => {
            histogram_rate(ev, metric, histograms, range, is_counter, is_rate).map(|h| (0.0, Some(Arc::new(h))))
        }
    }
}

/// For `changes` and `resets` over an anchored range: the samples from the last one at or
/// before the range start (floats and histograms together), or `None` when no sample lies
/// inside the range.
pub fn anchored_from<'s>(
    samples: &'s [Sample],
    histograms: &'s [HistogramSample],
    start: i64,
) -> Option<(&'s [Sample], &'s [HistogramSample])> {
    let floats_before = samples.partition_point(|s| s.t <= start);
    let histograms_before = histograms.partition_point(|h| h.t <= start);
    if floats_before == samples.len() && histograms_before == histograms.len() {
        return None;
    }
    let anchor_float = floats_before.checked_sub(1);
    let anchor_histogram = histograms_before.checked_sub(1);
    let (f, h) = match (anchor_float, anchor_histogram) {
        (None, None) => (0, 0),
        (Some(f), None) => (f, 0),
        (Some(f), Some(h)) if samples[f].t >= histograms[h].t => (f, h + 1),
        (f, Some(h)) => (f.map_or(0, |f| f + 1), h),
    };
    Some((&samples[f..], &histograms[h..]))
}

/// The samples of an anchored or smoothed range selector on its own: its edges at `start`
/// and `end` (as the functions take them, for a gauge), and the samples strictly between.
pub fn extend_floats(f: &[Sample], start: i64, end: i64, smoothed: bool) -> Vec<Sample> {
    if f.is_empty() {
        return Vec::new();
    }
    let range = Range {
        start,
        end,
        seconds: 0.0,
        smoothed,
    };
    let (mut first, mut last) = edges(f, |s| s.t, range);
    if f[last].t <= start {
        return Vec::new();
    }
    let left = left_value(f, first, start, smoothed, false);
    let right = right_value(f, last, end, smoothed, false);
    if f[first].t <= start {
        first += 1;
    }
    if f[last].t >= end {
        last = last.wrapping_sub(1);
    }
    let mut out = Vec::with_capacity(last.wrapping_add(1).saturating_sub(first) + 2);
    out.push(Sample { t: start, v: left });
    out.extend_from_slice(f.get(first..last.wrapping_add(1)).unwrap_or(&[]));
    out.push(Sample { t: end, v: right });
    out
}

/// A smoothed instant selector's value of one series at `t`, from its samples within a
/// lookback on both sides: the sample at `t`, or the line between the ones around it, or the
/// last one before it when none follows.
pub fn smoothed_value(
    ev: &Evaluator,
    metric: &str,
    samples: &[Sample],
    histograms: &[HistogramSample],
    t: i64,
) -> Option<(f64, Option<Arc<FloatHistogram>>)> {
    match (samples.is_empty(), histograms.is_empty()) {
        (true, true) => None,
        (false, false) => {
            ev.warn(a::mixed_floats_histograms(metric));
            None
        }
        (false, true) => {
            let i = samples.partition_point(|s| s.t < t);
            match samples.get(i) {
                Some(s) if s.t == t => Some((s.v, None)),
                Some(&next) if i > 0 => Some((interpolate(samples[i - 1], next, t, false), None)),
                None if i > 0 => Some((samples[i - 1].v, None)),
                _ => None,
            }
        }
        (true, false) => {
            let i = histograms.partition_point(|h| h.t < t);
            match histograms.get(i) {
                Some(h) if h.t == t => Some((0.0, Some(h.h.clone()))),
                Some(next) if i > 0 => {
                    let prev = &histograms[i - 1];
                    if prev.h.uses_custom_buckets() != next.h.uses_custom_buckets() {
                        ev.warn(a::mixed_exponential_custom_histograms(metric));
                        return None;
                    }
                    let is_counter = prev.h.counter_reset_hint != CounterResetHint::Gauge
                        || next.h.counter_reset_hint != CounterResetHint::Gauge;
                    interpolate_histograms(ev, metric, (prev.t, &prev.h), (next.t, &next.h), t, is_counter)
                        .map(|h| (0.0, Some(Arc::new(h))))
                }
                None if i > 0 => {
                    // The hint told how it followed its predecessor, not how the value does.
                    let mut h = histograms[i - 1].h.as_ref().clone();
                    h.counter_reset_hint = CounterResetHint::Unknown;
                    Some((0.0, Some(Arc::new(h))))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
        points.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    #[test]
    fn anchored_increase_is_the_difference_of_the_edges() {
        // 1 2 3 4 5 at 0s..60s, then a reset to 9: increase over (65s - 60s, 65s] anchored.
        let f = samples(&[(0, 1.0), (15_000, 2.0), (30_000, 3.0), (45_000, 4.0), (60_000, 5.0)]);
        let range = Range {
            start: 5_000,
            end: 65_000,
            seconds: 60.0,
            smoothed: false,
        };
        assert_eq!(float_rate(&f, range, true, false), Some(4.0));
        // A counter reset inside the range is corrected for.
        let f = samples(&[(0, 5.0), (15_000, 6.0), (30_000, 1.0), (45_000, 2.0)]);
        let range = Range {
            start: 0,
            end: 45_000,
            seconds: 45.0,
            smoothed: false,
        };
        assert_eq!(float_rate(&f, range, true, false), Some(6.0 - 5.0 + 2.0));
    }

    #[test]
    fn smoothed_edges_are_interpolated() {
        let f = samples(&[(0, 0.0), (10_000, 10.0), (20_000, 20.0)]);
        let range = Range {
            start: 5_000,
            end: 15_000,
            seconds: 10.0,
            smoothed: true,
        };
        assert_eq!(float_rate(&f, range, false, false), Some(10.0));
        assert_eq!(
            extend_floats(&f, 5_000, 15_000, true),
            samples(&[(5_000, 5.0), (10_000, 10.0), (15_000, 15.0)])
        );
    }

    #[test]
    fn modifiers_refuse_functions_prometheus_refuses() {
        assert!(check_allowed("rate", Mode::Smoothed).is_ok());
        let e = check_allowed("resets", Mode::Smoothed).unwrap_err().to_string();
        assert!(e.contains("smoothed modifier can only be used with: delta, increase, rate - not with resets"));
        assert!(check_allowed("resets", Mode::Anchored).is_ok());
        assert!(check_allowed("deriv", Mode::Anchored).is_err());
    }
}
