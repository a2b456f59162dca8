//! The evaluation phase: computes an expression at one time from the fetched series.
//!
//! A range query is evaluated as one instant evaluation per step; subqueries evaluate their
//! inner expression the same way at their own steps. What does not change from step to step
//! is prepared once: each selector's labels without the metric name, whether its series
//! hold staleness markers, and where its last window ended, so that the next step's window
//! is found by searching forward from there rather than over the whole series.
//!
//! Limits apply while results are built, not after: the samples of the matrices under
//! construction (the range query's and those of enclosing subqueries) are counted together
//! against the sample limit at every step, and the deadline is checked at every step. The
//! recursion over the syntax tree grows its stack on the heap when it runs low, and time
//! arithmetic saturates, so that no query can overflow either.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Instant;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use super::boundaries::{after_window, window_start, Bounds};
use super::functions::extended;
use super::index::{GroupCache, MatrixBuilder};
use super::plan::{at_ms, duration_ms, offset_ms, selector_key, Fetched};
use super::{aggregate, binary, functions, EngineOptions};
use crate::error::QueryError;
use crate::histogram::{ArithmeticInfo, CounterResetHint, FloatHistogram};
use crate::labels::Labels;
use crate::positions::address;
use crate::syntax_markers::{mode, Mode};
use crate::value::{is_stale_histogram, HistogramSample, InstantSample, Sample, Series, Value};

pub use crate::value::STALE_NAN_BITS;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A selector's fetched series and what every step would otherwise recompute about them.
pub struct Selected<'a> {
    pub series: &'a [Series],
    /// Each series' labels without the metric name.
    pub without_name: Vec<Labels>,
    /// Whether no two series have the same labels without the metric name.
    pub unique_without_name: bool,
    /// Whether each series holds a staleness marker.
    has_stale: Vec<bool>,
    /// Per series, where the last window looked at began and ended: hints for the next.
    cursors: Vec<Cell<(usize, usize)>>,
    bounds: Bounds,
    /// Whether the selector is read for the count and sum of its histograms, with counter
    /// reset hints worked out as it is read (`histogram_stats.rs`).
    stats: bool,
}

impl<'a> Selected<'a> {
    fn new(series: &'a [Series], bounds: Bounds, stats: bool) -> Self {
        let without_name: Vec<Labels> = series.iter().map(|s| s.labels.without_metadata_labels()).collect();
        let mut seen = std::collections::HashSet::with_capacity(without_name.len());
        let unique_without_name = without_name.iter().all(|l| seen.insert(l));
        Selected {
            series,
            without_name,
            unique_without_name,
            has_stale: series.iter().map(|s| s.samples.iter().any(|x| is_stale(x.v))).collect(),
            cursors: series.iter().map(|_| Cell::new((0, 0))).collect(),
            bounds,
            stats,
        }
    }

    /// The samples of series `i` in the window of `width` ending at `reference`, staleness
    /// markers included.
    pub fn window(&self, i: usize, reference: i64, width: i64) -> &'a [Sample] {
        let samples = self.series[i].samples.as_slice();
        let (from_hint, to_hint) = self.cursors[i].get();
        let from = partition_point_from(samples, from_hint, |x| self.bounds.before_window(x.t, reference, width));
        let to = partition_point_from(samples, to_hint.max(from), |x| !after_window(x.t, reference)).max(from);
        self.cursors[i].set((from, to));
        &samples[from..to]
    }

    /// The samples of series `i` in the window, without staleness markers: the window itself
    /// or, when it holds markers, a copy in `buffer`.
    pub fn window_without_stale<'b>(
        &self,
        i: usize,
        reference: i64,
        width: i64,
        buffer: &'b mut Vec<Sample>,
    ) -> &'b [Sample]
    where
        'a: 'b,
    {
        let window = self.window(i, reference, width);
        if !self.has_stale[i] {
            return window;
        }
        buffer.clear();
        buffer.extend(window.iter().filter(|x| !is_stale(x.v)));
        buffer
    }

    /// The samples of series `i` in the window without staleness markers, as
    /// [`Selected::window_without_stale`] gives them, with their start timestamps beside them
    /// (empty when the series has none).
    pub fn window_with_start_times<'b>(
        &self,
        i: usize,
        reference: i64,
        width: i64,
        buffer: &'b mut Vec<Sample>,
        starts: &'b mut Vec<i64>,
    ) -> (&'b [Sample], &'b [i64])
    where
        'a: 'b,
    {
        let all_starts = self.series[i].start_times.as_slice();
        if all_starts.len() != self.series[i].samples.len() {
            return (self.window_without_stale(i, reference, width, buffer), &[]);
        }
        let window = self.window(i, reference, width);
        let (from, to) = self.cursors[i].get();
        let window_starts = &all_starts[from..to];
        if !self.has_stale[i] {
            return (window, window_starts);
        }
        buffer.clear();
        starts.clear();
        for (s, &start) in window.iter().zip(window_starts) {
            if !is_stale(s.v) {
                buffer.push(*s);
                starts.push(start);
            }
        }
        (buffer, starts)
    }

    /// The latest sample of series `i` at or before `reference`.
    fn latest(&self, i: usize, reference: i64) -> Option<Sample> {
        let samples = self.series[i].samples.as_slice();
        let (from_hint, to_hint) = self.cursors[i].get();
        let end = partition_point_from(samples, to_hint, |x| !after_window(x.t, reference));
        self.cursors[i].set((from_hint, end));
        end.checked_sub(1).map(|last| samples[last])
    }

    /// The native histograms of series `i` in the window of `width` ending at `reference`,
    /// staleness markers left out.
    pub fn histogram_window(&self, i: usize, reference: i64, width: i64) -> Vec<HistogramSample> {
        let histograms = self.series[i].histograms.as_slice();
        if histograms.is_empty() {
            return Vec::new();
        }
        let from = histograms.partition_point(|x| self.bounds.before_window(x.t, reference, width));
        let to = histograms.partition_point(|x| !after_window(x.t, reference)).max(from);
        let mut window: Vec<HistogramSample> = histograms[from..to]
            .iter()
            .filter(|x| !is_stale_histogram(&x.h))
            .cloned()
            .collect();
        if self.stats {
            // Read from the window's start on, the histogram at that very time included
            // (a left-open window leaves it out of the result, not out of the reading).
            let start = reference.saturating_sub(width);
            let previous = from
                .checked_sub(1)
                .map(|k| &histograms[k])
                .filter(|p| p.t >= start && !is_stale_histogram(&p.h));
            super::histogram_stats::hint_window(&mut window, previous.map(|p| p.h.as_ref()));
        }
        window
    }

    /// The latest native histogram of series `i` at or before `reference`.
    fn latest_histogram(&self, i: usize, reference: i64) -> Option<&'a HistogramSample> {
        let histograms = self.series[i].histograms.as_slice();
        let end = histograms.partition_point(|x| !after_window(x.t, reference));
        end.checked_sub(1).map(|last| &histograms[last])
    }

    /// The histogram of series `i` read just before `h` when reading from `start` on.
    fn histogram_before(&self, i: usize, h: &HistogramSample, start: i64) -> Option<&'a HistogramSample> {
        let histograms = self.series[i].histograms.as_slice();
        let at = histograms.partition_point(|x| x.t < h.t);
        at.checked_sub(1)
            .map(|k| &histograms[k])
            .filter(|p| p.t >= start && !is_stale_histogram(&p.h))
    }
}

/// `samples.partition_point(pred)` for a `pred` true of a prefix, searched from `hint`
/// outwards: forward by doubling steps when the point lies at or after the hint, which makes
/// consecutive steps' searches short and their memory accesses local.
fn partition_point_from(samples: &[Sample], hint: usize, pred: impl Fn(&Sample) -> bool) -> usize {
    let hint = hint.min(samples.len());
    if hint > 0 && !pred(&samples[hint - 1]) {
        return samples[..hint].partition_point(pred);
    }
    // Every sample before `lo` satisfies `pred`.
    let mut lo = hint;
    let mut step = 1;
    loop {
        let hi = lo + step;
        if hi > samples.len() {
            return lo + samples[lo..].partition_point(pred);
        }
        if !pred(&samples[hi - 1]) {
            return lo + samples[lo..hi - 1].partition_point(pred);
        }
        lo = hi;
        step *= 2;
    }
}

/// An instant selector's element: labels, sample time, float value, native histogram.
pub type InstantElement = (
    Labels,
    i64,
    f64,
    Option<std::sync::Arc<crate::histogram::FloatHistogram>>,
);

pub struct Evaluator<'a> {
    pub query_start: i64,
    pub query_end: i64,
    /// The range query's step (0 for an instant query).
    pub query_step: i64,
    pub options: &'a EngineOptions,
    pub deadline: Instant,
    selected: HashMap<usize, Selected<'a>>,
    /// Groupings remembered across steps, by the address of their expression.
    groups: RefCell<HashMap<usize, GroupCache>>,
    /// Samples in the matrices being built by the range query and the subqueries that
    /// enclose the expression being evaluated.
    held: Cell<usize>,
    /// Warnings and infos so far.
    annotations: RefCell<crate::annotations::Annotations>,
    /// The expression whose evaluation is under way, which annotations are about.
    anchor: Cell<Anchor>,
    /// Whether the expression being evaluated is evaluated at more than one time: that of a
    /// range query, or inside a subquery (Prometheus gives a subquery an evaluator of its own).
    over_a_range: Cell<bool>,
}

/// Which expression an annotation is about, as Prometheus 3 places it: for a call, its first
/// argument; for an aggregation, the aggregated expression; for a binary operation or a
/// selector, itself. Some annotations name another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The call's first argument, the aggregation's expression, the operation itself.
    Input,
    /// An aggregation's parameter (`quantile(2, x)`).
    Param,
    /// The histograms a call reads (`histogram_quantile(0.9, here)`, `histogram_fraction(0,
    /// 1, here)`, `histogram_quantiles(here, "q", 0.5)`).
    Histograms,
    /// The call or aggregation itself (`sort` in a range query, `topk` of histograms).
    Whole,
    /// An argument of the call, by its address (`histogram_quantiles`' invalid quantile).
    Argument(usize),
}

/// The expression being evaluated, as addresses of the nodes [`At`] designates (0: none), and
/// whether those are arguments of it (a call's or an aggregation's) or itself.
#[derive(Clone, Copy, Debug, Default)]
struct Anchor {
    whole: usize,
    input: usize,
    param: usize,
    histograms: usize,
    arguments: bool,
}

impl Anchor {
    fn whole(expr: &Expr) -> Anchor {
        let whole = address(expr);
        Anchor {
            whole,
            input: whole,
            param: whole,
            histograms: whole,
            arguments: false,
        }
    }

    fn call(expr: &Expr, c: &promql_parser::parser::Call) -> Anchor {
        let whole = address(expr);
        let arg = |a: Option<&Box<Expr>>| a.map_or(whole, |a| address(a));
        let args = &c.args.args;
        Anchor {
            whole,
            input: arg(args.first()),
            param: arg(args.first()),
            histograms: if c.func.name == "histogram_quantiles" {
                arg(args.first())
            } else {
                arg(args.last())
            },
            arguments: !args.is_empty(),
        }
    }

    fn aggregation(expr: &Expr, a: &promql_parser::parser::AggregateExpr) -> Anchor {
        let input = address(&a.expr);
        Anchor {
            whole: address(expr),
            input,
            param: a.param.as_deref().map_or(input, address),
            histograms: input,
            arguments: true,
        }
    }

    fn site(self, at: At) -> Option<crate::annotations::Site> {
        let (node, as_argument) = match at {
            At::Input => (self.input, self.arguments),
            At::Param => (self.param, self.arguments),
            At::Histograms => (self.histograms, self.arguments),
            At::Whole => (self.whole, false),
            At::Argument(node) => (node, true),
        };
        (node != 0).then_some(crate::annotations::Site { node, as_argument })
    }
}

/// Evaluating an expression needs at most this much stack before it recurses again...
const STACK_RED_ZONE: usize = 128 * 1024;
/// ...and when less is left, it goes on on a new stack segment of this size.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

pub fn evaluate(
    expr: &Expr,
    data: &Fetched,
    start: i64,
    end: i64,
    step: i64,
    options: &EngineOptions,
    deadline: Instant,
) -> Result<(Value, crate::annotations::Annotations), QueryError> {
    let stats = super::histogram_stats::stats_selectors(expr);
    let ev = Evaluator {
        query_start: start,
        query_end: end,
        query_step: step,
        options,
        deadline,
        selected: data
            .iter()
            .map(|(&key, series)| {
                let selected = Selected::new(series, Bounds::new(options.semantics), stats.contains(&key));
                (key, selected)
            })
            .collect(),
        groups: RefCell::new(HashMap::new()),
        held: Cell::new(0),
        annotations: RefCell::default(),
        anchor: Cell::new(Anchor::default()),
        over_a_range: Cell::new(start != end),
    };
    if step == 0 {
        let value = ev.eval(expr, start)?;
        ev.check_samples(count_samples(&value))?;
        let value = ev.drop_marked_names(value)?;
        return Ok((value, ev.annotations.into_inner().finished()));
    }
    match expr.value_type() {
        ValueType::Scalar | ValueType::Vector => {}
        other => {
            return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_description(other)
            )))
        }
    }
    let steps = (end.saturating_sub(start) / step).saturating_add(1) as usize;
    let mut series = MatrixBuilder::new(steps);
    let mut next = Some(start);
    while let Some(t) = next.filter(|&t| t <= end) {
        ev.check_deadline()?;
        match ev.eval(expr, t)? {
            Value::Scalar { v, .. } => series.push(Labels::default(), Sample { t, v }),
            Value::Vector(vector) => {
                for s in vector {
                    match s.h {
                        Some(h) => series.push_histogram(s.labels, HistogramSample { t, h }),
                        None => series.push(s.labels, Sample { t, v: s.v }),
                    }
                }
            }
            other => {
                return Err(QueryError::Execution(format!(
                    "unexpected {} in range query",
                    other.type_name()
                )))
            }
        }
        ev.check_samples(series.samples())?;
        ev.held.set(series.samples());
        next = t.checked_add(step);
    }
    let value = ev.drop_marked_names(Value::Matrix(series.finish()))?;
    Ok((value, ev.annotations.into_inner().finished()))
}

/// The series of a matrix with equal labels (once marked names are dropped) merged into one,
/// as Prometheus' `mergeSeriesWithSameLabelset` merges them: an error when two of them have
/// a sample at the same time. Series come in the order their first member came in.
fn merge_equal_series(matrix: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(matrix.len());
    let mut merged: Vec<Series> = Vec::with_capacity(matrix.len());
    let mut grown = Vec::new();
    for s in matrix {
        match index.get(&s.labels) {
            Some(&i) => {
                merged[i].samples.extend(s.samples);
                merged[i].histograms.extend(s.histograms);
                grown.push(i);
            }
            None => {
                index.insert(s.labels.clone(), merged.len());
                merged.push(s);
            }
        }
    }
    let same_labelset = || QueryError::Execution("vector cannot contain metrics with the same labelset".into());
    grown.sort_unstable();
    grown.dedup();
    for i in grown {
        let s = &mut merged[i];
        s.samples.sort_by_key(|x| x.t);
        s.histograms.sort_by_key(|x| x.t);
        if s.samples.windows(2).any(|w| w[0].t == w[1].t) || s.histograms.windows(2).any(|w| w[0].t == w[1].t) {
            return Err(same_labelset());
        }
        let float_times: std::collections::HashSet<i64> = s.samples.iter().map(|x| x.t).collect();
        if s.histograms.iter().any(|x| float_times.contains(&x.t)) {
            return Err(same_labelset());
        }
    }
    Ok(merged)
}

/// An arithmetic step between native histograms, as Prometheus' annotations name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramStep {
    Addition,
    Subtraction,
    /// An addition within `sum`, `avg`, `sum_over_time` or `avg_over_time`.
    Aggregation,
}

impl HistogramStep {
    fn name(self) -> &'static str {
        match self {
            HistogramStep::Addition => "addition",
            HistogramStep::Subtraction => "subtraction",
            HistogramStep::Aggregation => "aggregation",
        }
    }
}

pub fn type_description(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

fn count_samples(value: &Value) -> usize {
    match value {
        Value::Scalar { .. } | Value::String { .. } => 1,
        Value::Vector(v) => v.len(),
        Value::Matrix(m) => m.iter().map(Series::len).sum(),
    }
}

impl<'a> Evaluator<'a> {
    /// Whether functions and operators that drop the metric name only mark it, to be dropped
    /// when evaluation ends (Prometheus' `promql-delayed-name-removal`).
    pub fn delays_name_removal(&self) -> bool {
        self.options.features.delayed_name_removal
    }

    /// `labels` as a function or operator that drops the metric name leaves them: without it
    /// (nor `__type__` and `__unit__`), or under delayed name removal with it, marked to be
    /// dropped when evaluation ends.
    pub fn drop_name(&self, labels: &Labels) -> Labels {
        if self.delays_name_removal() {
            labels.clone().with_name_to_drop(true)
        } else {
            labels.without_metadata_labels()
        }
    }

    /// The result of the query with the names marked to be dropped dropped, as Prometheus'
    /// `cleanupMetricLabels` does when evaluation ends: two elements of a vector left with the
    /// same labels are an error, and series of a matrix left with the same labels are merged
    /// (an error if they have samples at the same time). Nothing changes without delayed name
    /// removal, which alone marks names.
    fn drop_marked_names(&self, value: Value) -> Result<Value, QueryError> {
        if !self.delays_name_removal() {
            return Ok(value);
        }
        match value {
            Value::Vector(mut vector) => {
                if !vector.iter().any(|s| s.labels.name_to_drop()) {
                    return Ok(Value::Vector(vector));
                }
                for s in &mut vector {
                    s.labels = s.labels.with_marked_name_dropped();
                }
                check_unique_labels(&vector)?;
                Ok(Value::Vector(vector))
            }
            Value::Matrix(mut matrix) => {
                if !matrix.iter().any(|s| s.labels.name_to_drop()) {
                    return Ok(Value::Matrix(matrix));
                }
                for s in &mut matrix {
                    s.labels = s.labels.with_marked_name_dropped();
                }
                let mut matrix = merge_equal_series(matrix)?;
                matrix.sort_by(|a, b| a.labels.cmp(&b.labels));
                Ok(Value::Matrix(matrix))
            }
            other => Ok(other),
        }
    }

    /// Adds a warning to the query's annotations, about the input of the call, aggregation
    /// or operation being evaluated (see [`At`]).
    pub fn warn(&self, message: String) {
        self.warn_at(At::Input, message);
    }

    /// Adds a warning about the expression `at` designates.
    pub fn warn_at(&self, at: At, message: String) {
        let site = self.anchor.get().site(at);
        self.annotations.borrow_mut().warn_at(message, site);
    }

    /// `a + b`, or `a - b` for a subtraction, annotated as Prometheus'
    /// `addHistogramWithAnnotations` and `subHistogramWithAnnotations` annotate it: custom
    /// bucket bounds reconciled give an info naming the step; exponential and custom buckets
    /// mixed give the warning for `metric`, and no result. The caller decides what a counter
    /// reset collision means.
    pub fn combine_histograms(
        &self,
        a: &FloatHistogram,
        b: &FloatHistogram,
        step: HistogramStep,
        metric: &str,
    ) -> Option<(FloatHistogram, ArithmeticInfo)> {
        let result = if step == HistogramStep::Subtraction {
            a.sub_detailed(b)
        } else {
            a.add_detailed(b)
        };
        match result {
            Ok((h, info)) => {
                if info.custom_bounds_reconciled {
                    self.info(crate::annotations::mismatched_custom_buckets(step.name()));
                }
                Some((h, info))
            }
            Err(_) => {
                self.warn(crate::annotations::mixed_exponential_custom_histograms(metric));
                None
            }
        }
    }

    /// Annotates a step of a compensated sum of native histograms
    /// ([`crate::histogram::CompensatedSum`]) as [`Evaluator::combine_histograms`] annotates
    /// an addition within an aggregation; `None` when the histograms could not be added.
    pub fn annotate_sum_step(
        &self,
        step: Result<ArithmeticInfo, crate::histogram::HistogramError>,
        metric: &str,
    ) -> Option<ArithmeticInfo> {
        match step {
            Ok(info) => {
                if info.custom_bounds_reconciled {
                    self.info(crate::annotations::mismatched_custom_buckets(
                        HistogramStep::Aggregation.name(),
                    ));
                }
                Some(info)
            }
            Err(_) => {
                self.warn(crate::annotations::mixed_exponential_custom_histograms(metric));
                None
            }
        }
    }

    /// Notes that histogram_quantile forced the buckets of a classic histogram of `metric`
    /// monotonic at `t`: the info names the metric under delayed name removal only, as
    /// Prometheus' does (without, the name is gone by then).
    pub fn forced_monotonicity(&self, metric: &str, t: i64, f: super::functions::histogram::ForcedMonotonicity) {
        let metric = if self.delays_name_removal() { metric } else { "" };
        self.annotations.borrow_mut().forced_monotonicity(
            metric,
            t,
            f.min_bucket,
            f.max_bucket,
            f.max_diff,
            self.anchor.get().site(At::Histograms),
        );
    }

    /// Adds an info to the query's annotations, about the input of the call, aggregation or
    /// operation being evaluated (see [`At`]).
    pub fn info(&self, message: String) {
        self.info_at(At::Input, message);
    }

    /// Adds an info about the expression `at` designates.
    pub fn info_at(&self, at: At, message: String) {
        let site = self.anchor.get().site(at);
        self.annotations.borrow_mut().info_at(message, site);
    }

    /// Runs `f` as the evaluation of `anchor`'s expression: what it annotates is about that.
    fn anchored<R>(&self, anchor: Anchor, f: impl FnOnce() -> R) -> R {
        let outer = self.anchor.replace(anchor);
        let result = f();
        self.anchor.set(outer);
        result
    }

    /// Adds a message to the warnings or the infos, as its prefix says.
    pub fn note(&self, message: String) {
        if message.starts_with("PromQL info") {
            self.info(message);
        } else {
            self.warn(message);
        }
    }

    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout("query execution"));
        }
        Ok(())
    }

    pub fn check_samples(&self, n: usize) -> Result<(), QueryError> {
        if n > self.options.max_samples {
            return Err(QueryError::TooManySamples("query execution"));
        }
        Ok(())
    }

    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        // Each level of the tree recurses through here: however deep the tree and whatever
        // the frames' sizes (debug builds' are large), the stack cannot overflow.
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || self.eval_here(expr, t))
    }

    fn eval_here(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar { t, v: n.val }),
            Expr::StringLiteral(s) => Ok(Value::String { t, s: s.val.clone() }),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar { t, v } => Ok(Value::Scalar { t, v: -v }),
                Value::Vector(vector) => {
                    // A native histogram is negated as multiplied by -1 (a gauge histogram).
                    let negated: Vec<InstantSample> = vector
                        .into_iter()
                        .map(|s| InstantSample {
                            labels: self.drop_name(&s.labels),
                            t: s.t,
                            v: -s.v,
                            h: s.h.map(|h| {
                                let mut h = (*h).clone();
                                h.mul(-1.0);
                                std::sync::Arc::new(h)
                            }),
                        })
                        .collect();
                    check_unique_labels(&negated)?;
                    Ok(Value::Vector(negated))
                }
                other => Err(QueryError::Execution(format!(
                    "unary minus is not defined on a {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => self.anchored(Anchor::whole(expr), || {
                Ok(Value::Vector(
                    self.instant_selector(vs, t)
                        .into_iter()
                        .map(|(labels, _, v, h)| InstantSample { labels, t, v, h })
                        .collect(),
                ))
            }),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range_selector(ms, t)?)),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, t)?)),
            Expr::Aggregate(a) => self.anchored(Anchor::aggregation(expr, a), || aggregate::eval(self, a, t)),
            Expr::Binary(b) => self.anchored(Anchor::whole(expr), || binary::eval(self, b, t)),
            Expr::Call(c) => self.anchored(Anchor::call(expr, c), || functions::call(self, c, t)),
            Expr::Extension(_) => Err(QueryError::Execution("extension expressions are not supported".into())),
        }
    }

    /// The fixed time of an `@` modifier, or `t`, shifted back by the offset.
    pub fn reference_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        at_ms(&vs.at, self.query_start, self.query_end)
            .unwrap_or(t)
            .saturating_sub(offset_ms(&vs.offset))
    }

    /// The fetched series of a selector.
    pub fn selected(&self, vs: &VectorSelector) -> Option<&Selected<'a>> {
        self.selected.get(&selector_key(vs))
    }

    /// The grouping remembered for the expression at `key`.
    pub fn with_groups<R>(&self, key: usize, f: impl FnOnce(&mut GroupCache) -> R) -> R {
        f(self.groups.borrow_mut().entry(key).or_default())
    }

    /// Each series' latest sample (float or native histogram) within the lookback window
    /// before `t`, unless that sample is a staleness marker: (labels, sample time, value,
    /// histogram).
    pub fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<InstantElement> {
        if mode(vs) == Mode::Smoothed {
            return self.smoothed_selector(vs, t);
        }
        self.latest_of(selector_key(vs), self.reference_time(vs, t))
    }

    /// A `smoothed` selector's series at `t`: each one's value there, interpolated from the
    /// samples within a lookback on either side.
    fn smoothed_selector(&self, vs: &VectorSelector, t: i64) -> Vec<InstantElement> {
        let Some(sel) = self.selected(vs) else {
            return Vec::new();
        };
        let reference = self.reference_time(vs, t);
        let (ahead, width) = extended::window(Mode::Smoothed, 0, self.options.lookback_delta_ms);
        let end = reference.saturating_add(ahead);
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        for (i, s) in sel.series.iter().enumerate() {
            let samples = sel.window_without_stale(i, end, width, &mut buffer);
            let histograms = sel.histogram_window(i, end, width);
            let metric = s.labels.get(crate::labels::METRIC_NAME);
            if let Some((v, h)) = extended::smoothed_value(self, metric, samples, &histograms, reference) {
                out.push((s.labels.clone(), t, v, h));
            }
        }
        out
    }

    /// As [`Evaluator::instant_selector`], for the series fetched under `key` (a selector's
    /// or an `info` call's), at `reference`.
    pub fn latest_of(&self, key: usize, reference: i64) -> Vec<InstantElement> {
        let Some(sel) = self.selected.get(&key) else {
            return Vec::new();
        };
        let lookback = self.options.lookback_delta_ms;
        let mut out = Vec::with_capacity(sel.series.len());
        for (i, s) in sel.series.iter().enumerate() {
            // The later of the latest float and the latest histogram; nothing when that one is
            // a staleness marker or lies before the lookback window.
            let latest = match (sel.latest(i, reference), sel.latest_histogram(i, reference)) {
                (Some(f), h) if h.is_none_or(|h| h.t < f.t) => Some((f.t, f.v, None, is_stale(f.v))),
                (_, Some(h)) => {
                    let mut histogram = h.h.clone();
                    if sel.stats && !is_stale_histogram(&histogram) {
                        let previous = sel.histogram_before(i, h, reference.saturating_sub(lookback));
                        let hint = super::histogram_stats::hint_after(&histogram, previous.map(|p| p.h.as_ref()));
                        if hint != histogram.counter_reset_hint {
                            std::sync::Arc::make_mut(&mut histogram).counter_reset_hint = hint;
                        }
                    }
                    Some((h.t, 0.0, Some(histogram), is_stale_histogram(&h.h)))
                }
                _ => None,
            };
            if let Some((sample_t, v, h, stale)) = latest {
                if sel.bounds.in_window(sample_t, reference, lookback) && !stale {
                    out.push((s.labels.clone(), sample_t, v, h));
                }
            }
        }
        out
    }

    /// Each series' samples within the range before `t`, staleness markers left out.
    ///
    /// Anchored or smoothed, each series' floats between values at the range's two edges, as
    /// the functions that take such a range see them (histograms are refused).
    pub fn range_selector(&self, ms: &MatrixSelector, t: i64) -> Result<Vec<Series>, QueryError> {
        let Some(sel) = self.selected(&ms.vs) else {
            return Ok(Vec::new());
        };
        let reference = self.reference_time(&ms.vs, t);
        let range = duration_ms(ms.range);
        let mode = mode(&ms.vs);
        let (ahead, width) = extended::window(mode, range, self.options.lookback_delta_ms);
        let end = reference.saturating_add(ahead);
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        for (i, s) in sel.series.iter().enumerate() {
            let samples = sel.window_without_stale(i, end, width, &mut buffer);
            let histograms = sel.histogram_window(i, end, width);
            if mode != Mode::Plain {
                if !histograms.is_empty() {
                    return Err(QueryError::Execution(format!(
                        "{} modifier is not supported with histograms",
                        mode.keyword()
                    )));
                }
                let start = window_start(reference, range);
                let floats = extended::extend_floats(samples, start, reference, mode == Mode::Smoothed);
                if !floats.is_empty() {
                    out.push(Series {
                        labels: s.labels.clone(),
                        samples: floats,
                        histograms: Vec::new(),
                        start_times: Vec::new(),
                    });
                }
                continue;
            }
            if !samples.is_empty() || !histograms.is_empty() {
                out.push(Series {
                    labels: s.labels.clone(),
                    samples: samples.to_vec(),
                    histograms,
                    start_times: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// The inner expression at every multiple of the subquery's step within its range.
    pub fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<Vec<Series>, QueryError> {
        let reference = at_ms(&sq.at, self.query_start, self.query_end)
            .unwrap_or(t)
            .saturating_sub(offset_ms(&sq.offset));
        let range = duration_ms(sq.range);
        let step = sq
            .step
            .map(duration_ms)
            .filter(|&s| s > 0)
            .unwrap_or(self.options.default_subquery_step_ms);
        // The first multiple of the step in the window (none when it lies beyond i64).
        let first = Bounds::new(self.options.semantics).first_step(reference, range, step);
        let steps = first.map_or(0, |first| {
            (reference.saturating_sub(first) / step).saturating_add(1).max(0)
        });
        let mut series = MatrixBuilder::new(steps as usize);
        // Samples held by the enclosing range query and subqueries: this one's come on top.
        let outer = self.held.get();
        let outer_range = self.over_a_range.replace(steps > 1);
        let unhint_resets = self.options.semantics == super::Semantics::Prometheus3;
        let mut next = first;
        while let Some(inner_t) = next.filter(|&t| t <= reference) {
            self.check_deadline()?;
            match self.eval(&sq.expr, inner_t)? {
                Value::Scalar { v, .. } => series.push(Labels::default(), Sample { t: inner_t, v }),
                Value::Vector(vector) => {
                    for s in vector {
                        match s.h {
                            Some(mut h) => {
                                // Prometheus 3 forgets the counter reset hints of a subquery's
                                // histograms: its steps may skip the sample that says "reset",
                                // or repeat it. Resets are then found by comparing counts.
                                if unhint_resets
                                    && matches!(
                                        h.counter_reset_hint,
                                        CounterResetHint::CounterReset | CounterResetHint::NotCounterReset
                                    )
                                {
                                    std::sync::Arc::make_mut(&mut h).counter_reset_hint = CounterResetHint::Unknown;
                                }
                                series.push_histogram(s.labels, HistogramSample { t: inner_t, h })
                            }
                            None => series.push(s.labels, Sample { t: inner_t, v: s.v }),
                        }
                    }
                }
                other => {
                    return Err(QueryError::Execution(format!(
                        "subquery of a {} is not allowed",
                        other.type_name()
                    )))
                }
            }
            let held = outer.saturating_add(series.samples());
            self.check_samples(held)?;
            self.held.set(held);
            next = inner_t.checked_add(step);
        }
        self.held.set(outer);
        self.over_a_range.set(outer_range);
        Ok(series.finish())
    }

    /// Whether the expression being evaluated is evaluated at more than one time (a range
    /// query's step, or a subquery's).
    pub fn over_a_range(&self) -> bool {
        self.over_a_range.get()
    }

    /// Evaluates an argument that must be a scalar.
    pub fn scalar(&self, expr: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Value::Scalar { v, .. } => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates an argument that must be an instant vector, for a consumer of floats: native
    /// histogram elements are left out (Prometheus' float functions, aggregations and
    /// operators skip them).
    pub fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
        let mut v = self.vector_with_histograms(expr, t)?;
        v.retain(|s| s.h.is_none());
        Ok(v)
    }

    /// Evaluates an argument that must be an instant vector, native histograms included.
    pub fn vector_with_histograms(&self, expr: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn matrix(&self, expr: &Expr, t: i64) -> Result<Vec<Series>, QueryError> {
        match self.eval(expr, t)? {
            Value::Matrix(m) => Ok(m),
            other => Err(QueryError::Execution(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn string(&self, expr: &Expr, t: i64) -> Result<String, QueryError> {
        match self.eval(expr, t)? {
            Value::String { s, .. } => Ok(s),
            other => Err(QueryError::Execution(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }
}

/// Fails when two elements of a vector have the same labels, as Prometheus does after
/// functions and operators that change labels.
pub fn check_unique_labels(vector: &[InstantSample]) -> Result<(), QueryError> {
    let mut seen = std::collections::HashSet::with_capacity(vector.len());
    for s in vector {
        if !seen.insert(&s.labels) {
            return Err(QueryError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}
