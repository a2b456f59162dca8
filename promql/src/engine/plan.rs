//! The fetch phase: which series and which time span each selector of a query reads.
//!
//! Every selector is fetched once, for the union of the times at which it will be
//! evaluated, widened by its lookback or range and shifted by its offset and `@`. When it is
//! evaluated at the query's own steps (not inside a subquery) and its windows are narrower
//! than the step, the source is told the windows too, and may leave out the samples between
//! them (a week of `rate(x[5m])` at 30 min steps looks at a sixth of the samples). This is the
//! only place that talks to the series source. Times saturate at the ends of the `i64`
//! range rather than overflow, and the tree is walked without recursion.

use std::collections::HashMap;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use crate::engine::functions::{extended, info};
use crate::engine::EngineOptions;
use crate::error::QueryError;
use crate::labels::METRIC_NAME;
use crate::source::{SelectHints, SeriesSource, Windows};
use crate::syntax_markers::{mode, Mode};
use crate::value::Series;

/// Series of each selector, keyed by the selector's address in the syntax tree.
pub type Fetched = HashMap<usize, Vec<Series>>;

pub fn selector_key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// A duration in milliseconds, at most `i64::MAX`.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(*d),
        Some(Offset::Neg(d)) => -duration_ms(*d),
    }
}

/// The fixed evaluation time an `@` modifier sets, if any.
pub fn at_ms(at: &Option<AtModifier>, query_start: i64, query_end: i64) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(query_start),
        Some(AtModifier::End) => Some(query_end),
        Some(AtModifier::At(t)) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => duration_ms(d),
            Err(e) => -duration_ms(e.duration()),
        }),
    }
}

/// All matchers of a selector, the metric name included (and the one that carries an
/// `anchored` or `smoothed` modifier left out).
pub fn matchers(vs: &VectorSelector) -> Vec<Matcher> {
    let mut all: Vec<Matcher> = crate::syntax_markers::without_markers(vs).cloned().collect();
    if let Some(name) = &vs.name {
        if !all.iter().any(|m| m.name == METRIC_NAME) {
            all.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
        }
    }
    all
}

/// The times at which an expression is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Times {
    /// Exactly `first`, `first + step`, ... up to `last` (`step` 0: `first` alone).
    Steps { first: i64, last: i64, step: i64 },
    /// Somewhere in `[start, end]` (inside subqueries).
    Span { start: i64, end: i64 },
}

impl Times {
    fn bounds(self) -> (i64, i64) {
        match self {
            Times::Steps { first, last, .. } => (first, last),
            Times::Span { start, end } => (start, end),
        }
    }

    /// The times `by` earlier; steps that would leave the `i64` range become the span they
    /// saturate to (their spacing is lost).
    fn shifted(self, by: i64) -> Times {
        match self {
            Times::Steps { first, last, step } => match (first.checked_sub(by), last.checked_sub(by)) {
                (Some(first), Some(last)) => Times::Steps { first, last, step },
                _ => Times::Span {
                    start: first.saturating_sub(by),
                    end: last.saturating_sub(by),
                },
            },
            Times::Span { start, end } => Times::Span {
                start: start.saturating_sub(by),
                end: end.saturating_sub(by),
            },
        }
    }
}

/// What a selector (or an `info` call) reads: its matchers, its span, and the windows within
/// it when they leave gaps.
struct Reads {
    matchers: Vec<Matcher>,
    from: i64,
    to: i64,
    windows: Option<Windows>,
}

struct Planner<'a> {
    query_start: i64,
    query_end: i64,
    options: &'a EngineOptions,
    reads: HashMap<usize, Reads>,
}

impl<'a> Planner<'a> {
    /// Records what `expr` reads when evaluated at `times`.
    fn walk(&mut self, expr: &'a Expr, times: Times) {
        let mut pending = vec![(expr, times)];
        while let Some((expr, times)) = pending.pop() {
            match expr {
                Expr::VectorSelector(vs) => {
                    let lookback = self.options.lookback_delta_ms;
                    // A smoothed value looks a lookback to either side.
                    let (ahead, width) = match mode(vs) {
                        Mode::Smoothed => extended::window(Mode::Smoothed, 0, lookback),
                        _ => (0, lookback),
                    };
                    self.record(vs, times, width, ahead)
                }
                Expr::MatrixSelector(ms) => {
                    let (ahead, width) =
                        extended::window(mode(&ms.vs), duration_ms(ms.range), self.options.lookback_delta_ms);
                    self.record(&ms.vs, times, width, ahead)
                }
                Expr::Subquery(sq) => {
                    // Inner steps are aligned to the subquery's own step: only their span
                    // is known here.
                    let (start, end) = self.shift(&sq.at, &sq.offset, times).bounds();
                    let span = Times::Span {
                        start: start.saturating_sub(duration_ms(sq.range)),
                        end,
                    };
                    pending.push((&sq.expr, span));
                }
                Expr::Aggregate(a) => {
                    pending.push((&a.expr, times));
                    if let Some(p) = &a.param {
                        pending.push((p, times));
                    }
                }
                Expr::Unary(u) => pending.push((&u.expr, times)),
                Expr::Binary(b) => {
                    pending.push((&b.lhs, times));
                    pending.push((&b.rhs, times));
                }
                Expr::Paren(p) => pending.push((&p.expr, times)),
                // `info`'s second argument is selector syntax for the info series, not a
                // vector: they are read under the call's own key.
                Expr::Call(c) if c.func.name == "info" => {
                    let (at, offset) = info::reference(&c.args.args[0], self.query_start, self.query_end);
                    let times = match at {
                        Some(t) => Times::Steps {
                            first: t,
                            last: t,
                            step: 0,
                        },
                        None => times,
                    };
                    let key = info::key(c);
                    let matchers = info::series_matchers(c);
                    self.record_reads(key, || matchers, times.shifted(offset), self.options.lookback_delta_ms);
                    pending.push((&c.args.args[0], times));
                }
                Expr::Call(c) => pending.extend(c.args.args.iter().map(|arg| (arg.as_ref(), times))),
                Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
            }
        }
    }

    /// The times after an `@` (one fixed time) and an offset.
    fn shift(&self, at: &Option<AtModifier>, offset: &Option<Offset>, times: Times) -> Times {
        let times = match at_ms(at, self.query_start, self.query_end) {
            Some(t) => Times::Steps {
                first: t,
                last: t,
                step: 0,
            },
            None => times,
        };
        times.shifted(offset_ms(offset))
    }

    /// Records what `vs` reads at `times`: windows of `width` ending `ahead` after each.
    fn record(&mut self, vs: &'a VectorSelector, times: Times, width: i64, ahead: i64) {
        let times = self.shift(&vs.at, &vs.offset, times).shifted(ahead.saturating_neg());
        self.record_reads(selector_key(vs), || matchers(vs), times, width);
    }

    fn record_reads(&mut self, key: usize, matchers: impl FnOnce() -> Vec<Matcher>, times: Times, width: i64) {
        let (start, end) = times.bounds();
        // Windows narrower than their spacing leave samples no step looks at.
        let windows = match times {
            Times::Steps { first, last, step } if step == 0 || first == last || width < step => Some(Windows {
                first_end: first,
                last_end: last,
                step,
                width,
            }),
            _ => None,
        };
        let reads = self.reads.entry(key).or_insert_with(|| Reads {
            matchers: matchers(),
            from: i64::MAX,
            to: i64::MIN,
            windows,
        });
        reads.from = reads.from.min(start.saturating_sub(width));
        reads.to = reads.to.max(end);
        if reads.windows != windows {
            reads.windows = None;
        }
    }
}

pub async fn fetch(
    source: &dyn SeriesSource,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    options: &EngineOptions,
) -> Result<Fetched, QueryError> {
    let mut planner = Planner {
        query_start: start,
        query_end: end,
        options,
        reads: HashMap::new(),
    };
    // The last step `evaluate` takes: `start + k * step <= end` (in i128: the span may exceed
    // i64).
    let last = if step > 0 && end >= start {
        let span = i128::from(end) - i128::from(start);
        i64::try_from(i128::from(start) + span / i128::from(step) * i128::from(step)).unwrap_or(end)
    } else {
        start
    };
    planner.walk(
        expr,
        Times::Steps {
            first: start,
            last,
            step: step.max(0),
        },
    );
    let mut fetched = Fetched::new();
    let mut budget = options.max_fetched_samples;
    for (key, reads) in planner.reads {
        let hints = SelectHints {
            start: reads.from,
            end: reads.to,
            max_samples: Some(budget),
            windows: reads.windows,
        };
        let mut series = source.select(&reads.matchers, &hints).await?;
        if options.semantics == super::Semantics::Prometheus2 {
            // Prometheus 2.42 reads them (mostly) in labels order, Prometheus 3 in the order
            // the source gives: which of equal values topk and bottomk keep follows.
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        let read: usize = series.iter().map(Series::len).sum();
        budget = budget
            .checked_sub(read)
            .ok_or(QueryError::TooManySamples("reading series"))?;
        fetched.insert(key, series);
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;

    /// Remembers the hints of every selection; holds no series.
    #[derive(Default)]
    struct Recording(Mutex<Vec<SelectHints>>);

    impl SeriesSource for Recording {
        fn select<'a>(
            &'a self,
            _matchers: &'a [Matcher],
            hints: &'a SelectHints,
        ) -> BoxFuture<'a, Result<Vec<Series>, QueryError>> {
            self.0.lock().unwrap().push(hints.clone());
            Box::pin(async { Ok(vec![]) })
        }
    }

    fn hints(query: &str, start: i64, end: i64, step: i64) -> Vec<SelectHints> {
        let source = Recording::default();
        let expr = crate::parse::parse(query, 100).unwrap();
        let options = EngineOptions::default();
        futures::executor::block_on(fetch(&source, &expr, start, end, step, &options)).unwrap();
        source.0.into_inner().unwrap()
    }

    const MIN: i64 = 60_000;

    #[test]
    fn windows_narrower_than_the_step_are_given_to_the_source() {
        let week = 7 * 24 * 60 * MIN;
        let [h] = hints("rate(x[5m])", 0, week, 30 * MIN).try_into().unwrap();
        assert_eq!(
            h.windows,
            Some(Windows {
                first_end: 0,
                last_end: week,
                step: 30 * MIN,
                width: 5 * MIN
            })
        );
        assert_eq!((h.start, h.end), (-5 * MIN, week));
        // Shifted by the offset; the last step is the last one at or before the end.
        let [h] = hints("x offset 1h", 0, 100 * MIN + 7, 10 * MIN).try_into().unwrap();
        assert_eq!(
            h.windows,
            Some(Windows {
                first_end: -60 * MIN,
                last_end: 40 * MIN,
                step: 10 * MIN,
                width: 5 * MIN
            })
        );
        // An instant query: one window.
        let [h] = hints("x[1m]", 30 * MIN, 30 * MIN, 0).try_into().unwrap();
        assert_eq!(
            h.windows.map(|w| (w.first_end, w.last_end, w.width)),
            Some((30 * MIN, 30 * MIN, MIN))
        );
    }

    #[test]
    fn no_windows_where_they_touch_or_steps_are_not_the_query_steps() {
        // The lookback (5m) spans the 1m steps.
        assert_eq!(hints("x", 0, 60 * MIN, MIN)[0].windows, None);
        // Inside a subquery the inner steps are its own.
        assert_eq!(
            hints("max_over_time(rate(x[1m])[1h:30m])", 0, 600 * MIN, 60 * MIN)[0].windows,
            None
        );
        // Steps shifted beyond the i64 range lose their spacing.
        assert_eq!(
            hints("x[5ms] offset 20ms", i64::MIN + 10, i64::MIN + 1_000, 100)[0].windows,
            None
        );
    }

    #[test]
    fn the_last_step_is_found_when_the_span_exceeds_i64() {
        let (start, end) = (-9_223_372_036_854_775_000i64, 1_000_000i64);
        let step = i64::try_from((i128::from(end) - i128::from(start)) / 2).unwrap();
        let [h] = hints("x", start, end, step).try_into().unwrap();
        assert_eq!(h.end, end);
        assert_eq!(h.windows.map(|w| w.last_end), Some(end));
    }
}
