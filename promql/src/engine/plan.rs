//! The fetch phase: which series and which time span each selector of a query reads.
//!
//! Every selector is fetched once, for the union of the times at which it will be
//! evaluated, widened by its lookback or range and shifted by its offset and `@`. This is the
//! only place that talks to the series source. Times saturate at the ends of the `i64`
//! range rather than overflow, and the tree is walked without recursion.

use std::collections::HashMap;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use crate::engine::EngineOptions;
use crate::error::QueryError;
use crate::labels::METRIC_NAME;
use crate::source::{SelectHints, SeriesSource};
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

struct Planner<'a> {
    query_start: i64,
    query_end: i64,
    options: &'a EngineOptions,
    spans: HashMap<usize, (&'a VectorSelector, i64, i64)>,
}

impl<'a> Planner<'a> {
    /// Records what `expr` reads when evaluated at times in `[start, end]`.
    fn walk(&mut self, expr: &'a Expr, start: i64, end: i64) {
        let mut pending = vec![(expr, start, end)];
        while let Some((expr, start, end)) = pending.pop() {
            match expr {
                Expr::VectorSelector(vs) => self.record(vs, start, end, self.options.lookback_delta_ms),
                Expr::MatrixSelector(ms) => self.record(&ms.vs, start, end, duration_ms(ms.range)),
                Expr::Subquery(sq) => {
                    let (start, end) = self.shift(&sq.at, &sq.offset, start, end);
                    pending.push((&sq.expr, start.saturating_sub(duration_ms(sq.range)), end));
                }
                Expr::Aggregate(a) => {
                    pending.push((&a.expr, start, end));
                    if let Some(p) = &a.param {
                        pending.push((p, start, end));
                    }
                }
                Expr::Unary(u) => pending.push((&u.expr, start, end)),
                Expr::Binary(b) => {
                    pending.push((&b.lhs, start, end));
                    pending.push((&b.rhs, start, end));
                }
                Expr::Paren(p) => pending.push((&p.expr, start, end)),
                Expr::Call(c) => pending.extend(c.args.args.iter().map(|arg| (arg.as_ref(), start, end))),
                Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
            }
        }
    }

    fn shift(&self, at: &Option<AtModifier>, offset: &Option<Offset>, start: i64, end: i64) -> (i64, i64) {
        let (start, end) = match at_ms(at, self.query_start, self.query_end) {
            Some(t) => (t, t),
            None => (start, end),
        };
        let offset = offset_ms(offset);
        (start.saturating_sub(offset), end.saturating_sub(offset))
    }

    fn record(&mut self, vs: &'a VectorSelector, start: i64, end: i64, width: i64) {
        let (start, end) = self.shift(&vs.at, &vs.offset, start, end);
        let span = self.spans.entry(selector_key(vs)).or_insert((vs, i64::MAX, i64::MIN));
        span.1 = span.1.min(start.saturating_sub(width));
        span.2 = span.2.max(end);
    }
}

pub async fn fetch(
    source: &dyn SeriesSource,
    expr: &Expr,
    start: i64,
    end: i64,
    options: &EngineOptions,
) -> Result<Fetched, QueryError> {
    let mut planner = Planner {
        query_start: start,
        query_end: end,
        options,
        spans: HashMap::new(),
    };
    planner.walk(expr, start, end);
    let mut fetched = Fetched::new();
    let mut budget = options.max_fetched_samples;
    for (key, (vs, from, to)) in planner.spans {
        let hints = SelectHints {
            start: from,
            end: to,
            max_samples: Some(budget),
        };
        let series = source.select(&matchers(vs), &hints).await?;
        let read: usize = series.iter().map(|s| s.samples.len()).sum();
        budget = budget
            .checked_sub(read)
            .ok_or(QueryError::TooManySamples("reading series"))?;
        fetched.insert(key, series);
    }
    Ok(fetched)
}
