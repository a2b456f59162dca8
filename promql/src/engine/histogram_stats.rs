//! Selectors read for the count and sum of their native histograms only, and the counter
//! reset hints they give, as Prometheus' `HistogramStatsIterator` gives them.
//!
//! Under `histogram_count`, `histogram_sum`, `histogram_avg` (and `timestamp`, `absent`, which
//! look at no value), Prometheus reads a selector's histograms through an iterator that works
//! out counter resets as it goes: a histogram whose hint is "unknown" (the first of a stored
//! chunk, as every reset starts one) gets "reset" or "not reset" by comparison with the
//! histogram the iterator read before it, when it read one in the same window. So
//! `histogram_count(sum(x))` can warn about conflicting counter resets where `sum(x)` cannot.
//! No subquery, and no function, aggregation or comparison that needs the buckets, may lie
//! between the selector and such a function (Prometheus' `detectHistogramStatsDecoding`).

use std::collections::HashSet;
use std::sync::Arc;

use promql_parser::parser::Expr;

use crate::engine::plan::selector_key;
use crate::histogram::{CounterResetHint, FloatHistogram};
use crate::value::HistogramSample;

/// The keys ([`selector_key`]) of the selectors of `expr` read for count and sum.
pub fn stats_selectors(expr: &Expr) -> HashSet<usize> {
    let mut out = HashSet::new();
    // (expression, a stats function above it, something needing buckets above it)
    let mut pending = vec![(expr, false, false)];
    while let Some((expr, stats, needs_buckets)) = pending.pop() {
        match expr {
            Expr::VectorSelector(vs) => {
                if stats && !needs_buckets {
                    out.insert(selector_key(vs));
                }
            }
            Expr::MatrixSelector(ms) => {
                if stats && !needs_buckets {
                    out.insert(selector_key(&ms.vs));
                }
            }
            Expr::Subquery(sq) => pending.push((&sq.expr, stats, true)),
            Expr::Aggregate(a) => {
                let buckets = needs_buckets || a.op.to_string() == "count_values";
                pending.push((&a.expr, stats, buckets));
                if let Some(p) = &a.param {
                    pending.push((p, stats, buckets));
                }
            }
            Expr::Unary(u) => pending.push((&u.expr, stats, needs_buckets)),
            Expr::Binary(b) => {
                let op = b.op.to_string();
                let buckets = needs_buckets || op == "==" || op == "!=";
                pending.push((&b.lhs, stats, buckets));
                pending.push((&b.rhs, stats, buckets));
            }
            Expr::Paren(p) => pending.push((&p.expr, stats, needs_buckets)),
            Expr::Call(c) => {
                let (stats, needs_buckets) = match c.func.name {
                    "histogram_count" | "histogram_sum" | "histogram_avg" | "timestamp" | "absent" => {
                        (true, needs_buckets)
                    }
                    "histogram_quantile"
                    | "histogram_quantiles"
                    | "histogram_fraction"
                    | "histogram_stddev"
                    | "histogram_stdvar"
                    | "changes" => (stats, true),
                    _ => (stats, needs_buckets),
                };
                pending.extend(c.args.args.iter().map(|arg| (arg.as_ref(), stats, needs_buckets)));
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    out
}

/// A counter reset hint worked out for a histogram read after `previous`, as the iterator
/// gives it: a known hint stays; an unknown one becomes "reset" or "not reset" when the
/// histogram before it was read too.
pub fn hint_after(h: &FloatHistogram, previous: Option<&FloatHistogram>) -> CounterResetHint {
    match (h.counter_reset_hint, previous) {
        (CounterResetHint::Unknown, Some(p)) if h.detect_reset(p) => CounterResetHint::CounterReset,
        (CounterResetHint::Unknown, Some(_)) => CounterResetHint::NotCounterReset,
        (hint, _) => hint,
    }
}

/// [`hint_after`] for each histogram of a window, in order, the first one after `previous`.
pub fn hint_window(histograms: &mut [HistogramSample], previous: Option<&FloatHistogram>) {
    let mut before: Option<Arc<FloatHistogram>> = previous.map(|p| Arc::new(p.clone()));
    for s in histograms.iter_mut() {
        let original = s.h.clone();
        let hint = hint_after(&s.h, before.as_deref());
        if hint != s.h.counter_reset_hint {
            Arc::make_mut(&mut s.h).counter_reset_hint = hint;
        }
        before = Some(original);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(query: &str) -> usize {
        let expr = promql_parser::parser::parse(query).unwrap();
        stats_selectors(&expr).len()
    }

    #[test]
    fn selectors_under_count_and_sum_functions_only() {
        assert_eq!(keys("histogram_count(sum(x))"), 1);
        assert_eq!(keys("histogram_sum(rate(x[5m])) + histogram_avg(y)"), 2);
        assert_eq!(keys("sum(x)"), 0);
        assert_eq!(keys("histogram_count(histogram_quantile(0.5, x))"), 0);
        assert_eq!(keys("histogram_count(sum_over_time(x[5m:1m]))"), 0);
        assert_eq!(keys("histogram_count(x == y)"), 0);
        assert_eq!(keys("histogram_count(count_values(\"v\", x))"), 0);
        assert_eq!(keys("histogram_quantile(0.5, histogram_count(x))"), 0);
    }

    #[test]
    fn unknown_hints_are_worked_out_from_the_histogram_before() {
        let h = |count: f64| {
            Arc::new(FloatHistogram {
                count,
                ..Default::default()
            })
        };
        let mut window = vec![
            HistogramSample { t: 1, h: h(3.0) },
            HistogramSample { t: 2, h: h(2.0) },
            HistogramSample { t: 3, h: h(4.0) },
        ];
        hint_window(&mut window, None);
        let hints: Vec<_> = window.iter().map(|s| s.h.counter_reset_hint).collect();
        assert_eq!(
            hints,
            vec![
                CounterResetHint::Unknown,
                CounterResetHint::CounterReset,
                CounterResetHint::NotCounterReset
            ]
        );
        let mut window = vec![HistogramSample { t: 2, h: h(2.0) }];
        hint_window(&mut window, Some(&h(1.0)));
        assert_eq!(window[0].h.counter_reset_hint, CounterResetHint::NotCounterReset);
    }
}
