//! Aggregation operators: sum, avg, count, min, max, group, stddev, stdvar, topk, bottomk,
//! quantile and count_values, with `by` and `without`.

use std::cmp::Ordering;
use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::Evaluator;
use super::functions::histogram::quantile;
use crate::error::QueryError;
use crate::labels::Labels;
use crate::value::{format_value, InstantSample, Value};

pub fn eval(ev: &Evaluator, a: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = a.op.to_string();
    let input = ev.vector(&a.expr, t)?;
    let grouping = |labels: &Labels| -> Labels {
        match &a.modifier {
            None => Labels::default(),
            Some(LabelModifier::Include(by)) => labels.keep(&by.labels),
            Some(LabelModifier::Exclude(without)) => labels.drop(&without.labels).without_metric_name(),
        }
    };
    let out = match op.as_str() {
        "topk" | "bottomk" => {
            let k = ev.scalar(a.param.as_ref().expect("parser requires a parameter"), t)?;
            select_k(input, k, op == "topk", grouping)
        }
        "quantile" => {
            let q = ev.scalar(a.param.as_ref().expect("parser requires a parameter"), t)?;
            groups(input, grouping)
                .into_iter()
                .map(|(labels, members)| {
                    let mut values: Vec<f64> = members.iter().map(|s| s.v).collect();
                    InstantSample {
                        labels,
                        t,
                        v: quantile(q, &mut values),
                    }
                })
                .collect()
        }
        "count_values" => {
            let label = ev.string(a.param.as_ref().expect("parser requires a parameter"), t)?;
            if !is_valid_label_name(&label) {
                return Err(QueryError::Execution(format!("invalid label name {label:?}")));
            }
            let relabeled = input.into_iter().map(|mut s| {
                s.labels.set(&label, &format_value(s.v));
                s
            });
            let label_in_group = |labels: &Labels| {
                let mut g = grouping(labels);
                g.set(&label, labels.get(&label));
                g
            };
            groups(relabeled.collect(), label_in_group)
                .into_iter()
                .map(|(labels, members)| InstantSample {
                    labels,
                    t,
                    v: members.len() as f64,
                })
                .collect()
        }
        _ => groups(input, grouping)
            .into_iter()
            .map(|(labels, members)| {
                let values: Vec<f64> = members.iter().map(|s| s.v).collect();
                InstantSample {
                    labels,
                    t,
                    v: fold(&op, &values),
                }
            })
            .collect(),
    };
    Ok(Value::Vector(out))
}

/// The input grouped by `key`, groups in the order their first member appears.
fn groups(input: Vec<InstantSample>, key: impl Fn(&Labels) -> Labels) -> Vec<(Labels, Vec<InstantSample>)> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<(Labels, Vec<InstantSample>)> = Vec::new();
    for s in input {
        let k = key(&s.labels);
        match index.get(&k) {
            Some(&i) => out[i].1.push(s),
            None => {
                index.insert(k.clone(), out.len());
                out.push((k, vec![s]));
            }
        }
    }
    out
}

/// The value of a group under the simple aggregations, computed in input order the way
/// Prometheus 2.42 does (which matters for floating-point results).
fn fold(op: &str, values: &[f64]) -> f64 {
    let first = values[0];
    match op {
        "sum" => values[1..].iter().fold(first, |acc, v| acc + v),
        "count" => values.len() as f64,
        "group" => 1.0,
        "max" => values[1..]
            .iter()
            .fold(first, |acc, &v| if acc < v || acc.is_nan() { v } else { acc }),
        "min" => values[1..]
            .iter()
            .fold(first, |acc, &v| if acc > v || acc.is_nan() { v } else { acc }),
        "avg" => {
            let mut mean = first;
            for (i, &v) in values.iter().enumerate().skip(1) {
                let count = (i + 1) as f64;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                // Each side divided by the count so that large values do not overflow.
                mean += v / count - mean / count;
            }
            mean
        }
        "stddev" | "stdvar" => {
            let (mut mean, mut sum_sq) = (first, 0.0);
            for (i, &v) in values.iter().enumerate().skip(1) {
                let delta = v - mean;
                mean += delta / (i + 1) as f64;
                sum_sq += delta * (v - mean);
            }
            let variance = sum_sq / values.len() as f64;
            if op == "stddev" {
                variance.sqrt()
            } else {
                variance
            }
        }
        _ => unreachable!("the parser only accepts known aggregations"),
    }
}

/// topk and bottomk: the k largest (smallest) of each group, NaN ranking below every number,
/// each group's winners ordered from best to worst.
fn select_k(input: Vec<InstantSample>, k: f64, top: bool, key: impl Fn(&Labels) -> Labels) -> Vec<InstantSample> {
    let k = if k.is_nan() { 0 } else { k as i64 };
    if k < 1 {
        return Vec::new();
    }
    let better = |a: f64, b: f64| -> Ordering {
        // Descending for topk, ascending for bottomk; NaN last either way.
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ if top => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
            _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        }
    };
    let mut out = Vec::new();
    for (_, mut members) in groups(input, key) {
        members.sort_by(|x, y| better(x.v, y.v));
        members.truncate(k as usize);
        out.extend(members);
    }
    out
}

pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
