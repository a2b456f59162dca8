//! The evaluation phase: computes an expression at one time from the fetched series.
//!
//! A range query is evaluated as one instant evaluation per step; subqueries evaluate their
//! inner expression the same way at their own steps.

use std::collections::BTreeMap;
use std::time::Instant;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use super::boundaries::{in_window, window_start};
use super::plan::{at_ms, offset_ms, selector_key, Fetched};
use super::{aggregate, binary, functions, EngineOptions};
use crate::error::QueryError;
use crate::labels::Labels;
use crate::value::{InstantSample, Sample, Series, Value};

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

pub struct Evaluator<'a> {
    pub data: &'a Fetched,
    pub query_start: i64,
    pub query_end: i64,
    pub options: &'a EngineOptions,
    pub deadline: Instant,
}

pub fn evaluate(
    expr: &Expr,
    data: &Fetched,
    start: i64,
    end: i64,
    step: i64,
    options: &EngineOptions,
    deadline: Instant,
) -> Result<Value, QueryError> {
    let ev = Evaluator {
        data,
        query_start: start,
        query_end: end,
        options,
        deadline,
    };
    if step == 0 {
        let value = ev.eval(expr, start)?;
        ev.check_samples(count_samples(&value))?;
        return Ok(value);
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
    let mut series: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
    let mut t = start;
    while t <= end {
        ev.check_deadline()?;
        match ev.eval(expr, t)? {
            Value::Scalar { v, .. } => series.entry(Labels::default()).or_default().push(Sample { t, v }),
            Value::Vector(vector) => {
                for s in vector {
                    series.entry(s.labels).or_default().push(Sample { t, v: s.v });
                }
            }
            other => {
                return Err(QueryError::Execution(format!(
                    "unexpected {} in range query",
                    other.type_name()
                )))
            }
        }
        ev.check_samples(series.values().map(Vec::len).sum::<usize>())?;
        t += step;
    }
    Ok(Value::Matrix(
        series
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect(),
    ))
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
        Value::Matrix(m) => m.iter().map(|s| s.samples.len()).sum(),
    }
}

impl Evaluator<'_> {
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
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar { t, v: n.val }),
            Expr::StringLiteral(s) => Ok(Value::String { t, s: s.val.clone() }),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar { t, v } => Ok(Value::Scalar { t, v: -v }),
                Value::Vector(vector) => {
                    let negated: Vec<InstantSample> = vector
                        .into_iter()
                        .map(|s| InstantSample {
                            labels: s.labels.without_metric_name(),
                            t: s.t,
                            v: -s.v,
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
            Expr::VectorSelector(vs) => Ok(Value::Vector(
                self.instant_selector(vs, t)
                    .into_iter()
                    .map(|(labels, _, v)| InstantSample { labels, t, v })
                    .collect(),
            )),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range_selector(ms, t))),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, t)?)),
            Expr::Aggregate(a) => aggregate::eval(self, a, t),
            Expr::Binary(b) => binary::eval(self, b, t),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Extension(_) => Err(QueryError::Execution("extension expressions are not supported".into())),
        }
    }

    /// The fixed time of an `@` modifier, or `t`, shifted back by the offset.
    fn reference_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        at_ms(&vs.at, self.query_start, self.query_end).unwrap_or(t) - offset_ms(&vs.offset)
    }

    fn series(&self, vs: &VectorSelector) -> &[Series] {
        self.data.get(&selector_key(vs)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Each series' latest sample within the lookback window before `t`, unless that sample is
    /// a staleness marker: (labels, sample time, value).
    pub fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<(Labels, i64, f64)> {
        let reference = self.reference_time(vs, t);
        let lookback = self.options.lookback_delta_ms;
        self.series(vs)
            .iter()
            .filter_map(|s| {
                let end = s.samples.partition_point(|x| x.t <= reference);
                let last = s.samples[..end].last()?;
                (in_window(last.t, reference, lookback) && !is_stale(last.v))
                    .then(|| (s.labels.clone(), last.t, last.v))
            })
            .collect()
    }

    /// Each series' samples within the range before `t`, staleness markers left out.
    pub fn range_selector(&self, ms: &MatrixSelector, t: i64) -> Vec<Series> {
        let reference = self.reference_time(&ms.vs, t);
        let range = ms.range.as_millis() as i64;
        self.series(&ms.vs)
            .iter()
            .filter_map(|s| {
                // Samples are in time order: find the window by binary search.
                let from = s
                    .samples
                    .partition_point(|x| !in_window(x.t, reference, range) && x.t < reference);
                let to = s.samples.partition_point(|x| x.t <= reference);
                let samples: Vec<Sample> = s.samples[from..to.max(from)]
                    .iter()
                    .filter(|x| in_window(x.t, reference, range) && !is_stale(x.v))
                    .copied()
                    .collect();
                (!samples.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    samples,
                })
            })
            .collect()
    }

    /// The inner expression at every multiple of the subquery's step within its range.
    pub fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<Vec<Series>, QueryError> {
        let reference = at_ms(&sq.at, self.query_start, self.query_end).unwrap_or(t) - offset_ms(&sq.offset);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map(|s| s.as_millis() as i64)
            .filter(|&s| s > 0)
            .unwrap_or(self.options.default_subquery_step_ms);
        let start = window_start(reference, range);
        let mut inner_t = start.div_euclid(step) * step;
        if inner_t < start {
            inner_t += step;
        }
        let mut series: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        while inner_t <= reference {
            self.check_deadline()?;
            match self.eval(&sq.expr, inner_t)? {
                Value::Scalar { v, .. } => series
                    .entry(Labels::default())
                    .or_default()
                    .push(Sample { t: inner_t, v }),
                Value::Vector(vector) => {
                    for s in vector {
                        series.entry(s.labels).or_default().push(Sample { t: inner_t, v: s.v });
                    }
                }
                other => {
                    return Err(QueryError::Execution(format!(
                        "subquery of a {} is not allowed",
                        other.type_name()
                    )))
                }
            }
            inner_t += step;
        }
        let out: Vec<Series> = series
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect();
        self.check_samples(out.iter().map(|s| s.samples.len()).sum())?;
        Ok(out)
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

    pub fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
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
