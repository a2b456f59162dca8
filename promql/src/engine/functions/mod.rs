//! Function calls: argument evaluation and the label rules of each family of functions.
//! The arithmetic lives in [`range`] (functions of a range's samples), [`math`] (functions of
//! one value) and [`histogram`] (quantiles).

pub mod histogram;
mod math;
mod range;

use std::collections::HashMap;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};
use regex::Regex;

use self::histogram::{bucket_quantile, Bucket};
use super::aggregate::is_valid_label_name;
use super::boundaries::window_start;
use super::eval::{check_unique_labels, Evaluator};
use crate::error::QueryError;
use crate::labels::{Labels, METRIC_NAME};
use crate::value::{InstantSample, Series, Value};

const RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "predict_linear",
    "holt_winters",
    "changes",
    "resets",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "quantile_over_time",
];

const TIME_FUNCTIONS: &[&str] = &[
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

pub fn call(ev: &Evaluator, c: &Call, t: i64) -> Result<Value, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let vector = |v: Vec<InstantSample>| -> Result<Value, QueryError> {
        check_unique_labels(&v)?;
        Ok(Value::Vector(v))
    };
    match name {
        "time" => Ok(Value::Scalar {
            t,
            v: t as f64 / 1000.0,
        }),
        "pi" => Ok(Value::Scalar {
            t,
            v: std::f64::consts::PI,
        }),
        "vector" => Ok(Value::Vector(vec![InstantSample {
            labels: Labels::default(),
            t,
            v: ev.scalar(args[0], t)?,
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
            let present = !ev.vector(args[0], t)?.is_empty();
            Ok(Value::Vector(absent(present, args[0], t)))
        }
        "absent_over_time" => {
            let present = !ev.matrix(args[0], t)?.is_empty();
            Ok(Value::Vector(absent(present, args[0], t)))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.vector(args[0], t)?;
            sort_by_value(&mut v, name == "sort_desc");
            Ok(Value::Vector(v))
        }
        "label_replace" => vector(label_replace(ev, &args, t)?),
        "label_join" => vector(label_join(ev, &args, t)?),
        "histogram_quantile" => {
            let q = ev.scalar(args[0], t)?;
            vector(histogram_quantile(q, ev.vector(args[1], t)?, t))
        }
        _ if RANGE_FUNCTIONS.contains(&name) => vector(range_call(ev, name, &args, t)?),
        _ if TIME_FUNCTIONS.contains(&name) && args.is_empty() => Ok(Value::Vector(vec![InstantSample {
            labels: Labels::default(),
            t,
            v: math::element_function(name, t as f64 / 1000.0, &[]).unwrap_or(f64::NAN),
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
                            labels: s.labels.without_metric_name(),
                            t,
                            v,
                        })
                    })
                    .collect(),
            )
        }
    }
}

/// A function of each series' samples in a range: the range vector is the only non-scalar
/// argument; the others are scalars in call order.
fn range_call(ev: &Evaluator, name: &str, args: &[&Expr], t: i64) -> Result<Vec<InstantSample>, QueryError> {
    let position = args
        .iter()
        .position(|a| matches!(unwrap_parens(a), Expr::MatrixSelector(_) | Expr::Subquery(_)))
        .ok_or_else(|| QueryError::Execution(format!("{name} needs a range vector")))?;
    let (range_start, range_end, series) = range_argument(ev, args[position], t)?;
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
    let mut out = Vec::new();
    for s in series {
        if let Some(v) = range::range_function(name, &s.samples, range_start, range_end, &scalars)? {
            // last_over_time only moves a sample in time, like offset: it keeps the name.
            let labels = if name == "last_over_time" {
                s.labels
            } else {
                s.labels.without_metric_name()
            };
            out.push(InstantSample { labels, t, v });
        }
    }
    Ok(out)
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// The window a range argument covers and its series.
fn range_argument(ev: &Evaluator, arg: &Expr, t: i64) -> Result<(i64, i64, Vec<Series>), QueryError> {
    use super::plan::{at_ms, offset_ms};
    let (at, offset, range) = match unwrap_parens(arg) {
        Expr::MatrixSelector(ms) => (&ms.vs.at, &ms.vs.offset, ms.range),
        Expr::Subquery(sq) => (&sq.at, &sq.offset, sq.range),
        _ => unreachable!("checked by the caller"),
    };
    let end = at_ms(at, ev.query_start, ev.query_end).unwrap_or(t) - offset_ms(offset);
    let start = window_start(end, range.as_millis() as i64);
    Ok((start, end, ev.matrix(arg, t)?))
}

fn timestamp(ev: &Evaluator, arg: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
    // Of a plain selector, the time of each sample itself, not of the evaluation.
    if let Expr::VectorSelector(vs) = unwrap_parens(arg) {
        return Ok(ev
            .instant_selector(vs, t)
            .into_iter()
            .map(|(labels, sample_t, _)| InstantSample {
                labels: labels.without_metric_name(),
                t,
                v: sample_t as f64 / 1000.0,
            })
            .collect());
    }
    Ok(ev
        .vector(arg, t)?
        .into_iter()
        .map(|s| InstantSample {
            labels: s.labels.without_metric_name(),
            t,
            v: s.t as f64 / 1000.0,
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
        for m in vs.matchers.matchers.iter().filter(|m| m.name != METRIC_NAME) {
            if matches!(m.op, MatchOp::Equal) && seen.insert(m.name.as_str()) {
                labels.set(&m.name, &m.value);
            } else {
                labels.remove(&m.name);
            }
        }
    }
    vec![InstantSample { labels, t, v: 1.0 }]
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

fn label_replace(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Vec<InstantSample>, QueryError> {
    let input = ev.vector(args[0], t)?;
    let destination = ev.string(args[1], t)?;
    let replacement = ev.string(args[2], t)?;
    let source = ev.string(args[3], t)?;
    let pattern = ev.string(args[4], t)?;
    let regex = Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| QueryError::Execution(format!("invalid regular expression in label_replace(): {pattern}: {e}")))?;
    if !is_valid_label_name(&destination) {
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
            }
            s
        })
        .collect())
}

fn label_join(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Vec<InstantSample>, QueryError> {
    let input = ev.vector(args[0], t)?;
    let destination = ev.string(args[1], t)?;
    let separator = ev.string(args[2], t)?;
    let sources = args[3..]
        .iter()
        .map(|a| ev.string(a, t))
        .collect::<Result<Vec<String>, _>>()?;
    if !is_valid_label_name(&destination) {
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
            s
        })
        .collect())
}

/// Buckets grouped by their labels without `le`; series without a parsable `le` are ignored.
/// The result drops the metric name, so buckets of two histograms with otherwise equal labels
/// collide, an error as in Prometheus 2.42.
fn histogram_quantile(q: f64, input: Vec<InstantSample>, t: i64) -> Vec<InstantSample> {
    let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in input {
        let Some(upper_bound) = parse_go_float(s.labels.get("le")) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(Bucket {
            upper_bound,
            count: s.v,
        });
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| InstantSample {
            labels: labels.without_metric_name(),
            t,
            v: bucket_quantile(q, buckets),
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
