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

use crate::engine::EngineOptions;
use crate::error::QueryError;
use crate::labels::METRIC_NAME;
use crate::source::{SelectHints, SeriesSource, Windows};
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

/// All matchers of a selector, the metric name included.
pub fn matchers(vs: &VectorSelector) -> Vec<Matcher> {
    let mut all = vs.matchers.matchers.clone();
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

    fn shifted(self, by: i64) -> Times {
        match self {
            Times::Steps { first, last, step } => Times::Steps {
                first: first.saturating_sub(by),
                last: last.saturating_sub(by),
                step,
            },
            Times::Span { start, end } => Times::Span {
                start: start.saturating_sub(by),
                end: end.saturating_sub(by),
            },
        }
    }
}

/// What a selector reads: its span, and the windows within it when they leave gaps.
struct Reads<'a> {
    vs: &'a VectorSelector,
    from: i64,
    to: i64,
    windows: Option<Windows>,
}

struct Planner<'a> {
    query_start: i64,
    query_end: i64,
    options: &'a EngineOptions,
    reads: HashMap<usize, Reads<'a>>,
}

impl<'a> Planner<'a> {
    /// Records what `expr` reads when evaluated at `times`.
    fn walk(&mut self, expr: &'a Expr, times: Times) {
        let mut pending = vec![(expr, times)];
        while let Some((expr, times)) = pending.pop() {
            match expr {
                Expr::VectorSelector(vs) => self.record(vs, times, self.options.lookback_delta_ms),
                Expr::MatrixSelector(ms) => self.record(&ms.vs, times, duration_ms(ms.range)),
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

    fn record(&mut self, vs: &'a VectorSelector, times: Times, width: i64) {
        let times = self.shift(&vs.at, &vs.offset, times);
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
        let reads = self.reads.entry(selector_key(vs)).or_insert(Reads {
            vs,
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
    let last = if step > 0 {
        start.saturating_add(end.saturating_sub(start) / step * step)
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
        let series = source.select(&matchers(reads.vs), &hints).await?;
        let read: usize = series.iter().map(|s| s.samples.len()).sum();
        budget = budget
            .checked_sub(read)
            .ok_or(QueryError::TooManySamples("reading series"))?;
        fetched.insert(key, series);
    }
    Ok(fetched)
}
