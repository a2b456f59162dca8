//! Binary operators: arithmetic, comparisons (filtering or `bool`), set operators, and
//! vector matching with `on`/`ignoring`, `group_left`/`group_right` and Prometheus 3's
//! `fill`/`fill_left`/`fill_right` (a value for the side that has no match).

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use std::sync::Arc;

use super::eval::Evaluator;
use crate::error::QueryError;
use crate::histogram::FloatHistogram;
use crate::labels::{Labels, METRIC_NAME};
use crate::value::{InstantSample, Value};

pub fn eval(ev: &Evaluator, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = crate::trim_operators::operator_text(&b.op).into_owned();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    // Native histograms take part as Prometheus 3 defines it (`histogram_binop`): the set
    // operators match elements by labels only; the others leave out, with an info, the
    // elements whose types they are not defined for.
    let (lhs, rhs) = (ev.eval(&b.lhs, t)?, ev.eval(&b.rhs, t)?);
    match (lhs, rhs) {
        (Value::Scalar { .. }, Value::Scalar { .. }) if is_trim(&op) => Err(QueryError::Execution(format!(
            "operator {op:?} not allowed for Scalar operations"
        ))),
        (Value::Scalar { v: l, .. }, Value::Scalar { v: r, .. }) => {
            let (value, keep) = apply(&op, l, r);
            let v = if is_comparison(&op) {
                f64::from(u8::from(keep))
            } else {
                value
            };
            Ok(Value::Scalar { t, v })
        }
        (Value::Vector(l), Value::Scalar { v: r, .. }) => {
            Ok(Value::Vector(vector_scalar(ev, &op, l, r, false, return_bool)))
        }
        (Value::Scalar { v: l, .. }, Value::Vector(r)) => {
            Ok(Value::Vector(vector_scalar(ev, &op, r, l, true, return_bool)))
        }
        (Value::Vector(l), Value::Vector(r)) => {
            let default = BinModifier {
                card: VectorMatchCardinality::OneToOne,
                matching: None,
                return_bool: false,
                fill_values: Default::default(),
            };
            let modifier = b.modifier.as_ref().unwrap_or(&default);
            let out = match op.as_str() {
                "and" => and_unless(l, r, modifier, true),
                "unless" => and_unless(l, r, modifier, false),
                "or" => or(l, r, modifier),
                _ => vector_vector(ev, &op, l, r, modifier)?,
            };
            Ok(Value::Vector(out))
        }
        (l, r) => Err(QueryError::Execution(format!(
            "binary operator {op} is not defined between {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

/// Operators whose result is no longer the metric it came from; atan2 keeps the name in
/// Prometheus 2.42, comparisons keep it unless `bool` turns them into 0/1.
/// Whether `op` drops the metric name: arithmetic does, and under Prometheus 3 `atan2` too
/// (its `changesMetricSchema`; Prometheus 2 kept the name through `atan2`).
fn drops_metric_name(op: &str, semantics: super::Semantics) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "^" | "%") || (op == "atan2" && semantics == super::Semantics::Prometheus3)
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Prometheus 3's trim operators, defined for a native histogram and a float only.
fn is_trim(op: &str) -> bool {
    matches!(op, "</" | ">/")
}

/// The result of `l op r`, and for comparisons whether it holds (the value is then `l`).
fn apply(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (go_mod(l, r), true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => unreachable!("the parser only accepts known operators"),
    }
}

/// Go's math.Mod: the sign of the result follows the dividend; NaN for a zero divisor or
/// an infinite dividend.
fn go_mod(l: f64, r: f64) -> f64 {
    l % r
}

/// Prometheus 3's `vectorElemBinop` where a native histogram is an operand: a histogram
/// times a float (either side) or divided by one, the sum or difference of two histograms
/// (a difference is a gauge), two histograms equal or not (the value is the left one), and a
/// histogram trimmed at a float (`</`, `>/`).
/// `Err` with the annotation for what it is not defined for, or for histograms whose counter
/// reset hints collide: the element is left out.
fn histogram_binop(
    ev: &Evaluator,
    op: &str,
    l: (f64, Option<&Arc<FloatHistogram>>),
    r: (f64, Option<&Arc<FloatHistogram>>),
) -> Result<(f64, Option<Arc<FloatHistogram>>, bool), String> {
    use crate::annotations as a;
    let kind = |h: Option<&Arc<FloatHistogram>>| if h.is_some() { "histogram" } else { "float" };
    let incompatible = || Err(a::incompatible_types_in_binop(kind(l.1), op, kind(r.1)));
    let scaled = |h: &FloatHistogram, f: &dyn Fn(&mut FloatHistogram)| {
        let mut h = h.clone();
        f(&mut h);
        h.compact(0);
        Ok((0.0, Some(Arc::new(h)), true))
    };
    match (l.1, r.1, op) {
        (None, Some(h), "*") => scaled(h, &|h| h.mul(l.0)),
        (Some(h), None, "*") => scaled(h, &|h| h.mul(r.0)),
        (Some(h), None, "/") => scaled(h, &|h| h.div(r.0)),
        (Some(x), Some(y), "+" | "-") => {
            let result = if op == "+" {
                x.add_detailed(y)
            } else {
                x.sub_detailed(y)
            };
            let (mut h, info) = result.map_err(|_| a::incompatible_bucket_layout_in_binop(op))?;
            let operation = if op == "+" { "addition" } else { "subtraction" };
            if info.counter_reset_collision {
                return Err(a::counter_reset_collision(operation));
            }
            if info.custom_bounds_reconciled {
                ev.info(a::mismatched_custom_buckets(operation));
            }
            if op == "-" {
                h.counter_reset_hint = crate::histogram::CounterResetHint::Gauge;
            }
            h.compact(0);
            Ok((0.0, Some(Arc::new(h)), true))
        }
        (Some(h), None, "</" | ">/") => Ok((0.0, Some(Arc::new(h.trim(r.0, op == "</"))), true)),
        (Some(x), Some(y), "==") => Ok((0.0, Some(x.clone()), x.equals(y))),
        (Some(x), Some(y), "!=") => Ok((0.0, Some(x.clone()), !x.equals(y))),
        _ => incompatible(),
    }
}

fn vector_scalar(
    ev: &Evaluator,
    op: &str,
    vector: Vec<InstantSample>,
    scalar: f64,
    scalar_left: bool,
    return_bool: bool,
) -> Vec<InstantSample> {
    let drop_name = drops_metric_name(op, ev.options.semantics) || return_bool;
    vector
        .into_iter()
        .filter_map(|mut s| {
            if let Some(h) = s.h.take() {
                let (vector, scalar) = ((0.0, Some(&h)), (scalar, None));
                let (l, r) = if scalar_left {
                    (scalar, vector)
                } else {
                    (vector, scalar)
                };
                let (v, result, keep) = match histogram_binop(ev, op, l, r) {
                    Ok(result) => result,
                    Err(note) => {
                        ev.note(note);
                        return None;
                    }
                };
                // A comparison keeps the vector's value, whichever side the vector is on.
                let (mut v, mut result) = if is_comparison(op) && scalar_left {
                    (0.0, Some(h))
                } else {
                    (v, result)
                };
                if return_bool {
                    (v, result) = (f64::from(u8::from(keep)), None);
                } else if !keep {
                    return None;
                }
                s.v = v;
                s.h = result;
                if drop_name {
                    s.labels = ev.drop_name(&s.labels);
                }
                return Some(s);
            }
            if is_trim(op) {
                ev.note(crate::annotations::incompatible_types_in_binop("float", op, "float"));
                return None;
            }
            let (l, r) = if scalar_left { (scalar, s.v) } else { (s.v, scalar) };
            let (mut value, mut keep) = apply(op, l, r);
            // A comparison keeps the vector's value, whichever side the vector is on.
            if is_comparison(op) && scalar_left {
                value = r;
            }
            if return_bool {
                value = f64::from(u8::from(keep));
                keep = true;
            }
            if !keep {
                return None;
            }
            s.v = value;
            if drop_name {
                s.labels = ev.drop_name(&s.labels);
            }
            Some(s)
        })
        .collect()
}

/// The labels that decide which elements match.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ignoring)) => labels.drop(&ignoring.labels).without_metadata_labels(),
        None => labels.without_metadata_labels(),
    }
}

fn and_unless(l: Vec<InstantSample>, r: Vec<InstantSample>, m: &BinModifier, and: bool) -> Vec<InstantSample> {
    let right: HashSet<Labels> = r.iter().map(|s| signature(&s.labels, &m.matching)).collect();
    l.into_iter()
        .filter(|s| right.contains(&signature(&s.labels, &m.matching)) == and)
        .collect()
}

fn or(l: Vec<InstantSample>, r: Vec<InstantSample>, m: &BinModifier) -> Vec<InstantSample> {
    let left: HashSet<Labels> = l.iter().map(|s| signature(&s.labels, &m.matching)).collect();
    let mut out = l;
    out.extend(
        r.into_iter()
            .filter(|s| !left.contains(&signature(&s.labels, &m.matching))),
    );
    out
}

fn vector_vector(
    ev: &Evaluator,
    op: &str,
    l: Vec<InstantSample>,
    r: Vec<InstantSample>,
    m: &BinModifier,
) -> Result<Vec<InstantSample>, QueryError> {
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    // The "one" side is looked up by signature; the "many" side is iterated. Fill values
    // follow their sides.
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    let (fill_many, fill_one) = if one_to_many {
        (m.fill_values.rhs, m.fill_values.lhs)
    } else {
        (m.fill_values.lhs, m.fill_values.rhs)
    };
    if (many.is_empty() || one.is_empty()) && fill_many.is_none() && fill_one.is_none() {
        return Ok(Vec::new());
    }
    let mut one_by_sig: HashMap<Labels, InstantSample> = HashMap::new();
    let mut one_order: Vec<Labels> = Vec::new();
    for s in one {
        let sig = signature(&s.labels, &m.matching);
        if let Some(previous) = one_by_sig.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];\
                 many-to-many matching not allowed: matching labels must be unique on one side",
                match_group(&s.labels, &m.matching),
                s.labels,
                previous.labels
            )));
        }
        one_order.push(sig.clone());
        one_by_sig.insert(sig, s);
    }
    // Signatures of the "one" side that met an element of the other (a fill_left/right
    // value stands in only for those that did not), whether or not a comparison kept it.
    let mut met: HashSet<Labels> = HashSet::new();
    // An element standing in for a missing match: the matching labels and the fill value.
    let filled = |from: &InstantSample, v: f64| InstantSample {
        labels: match_labels(&from.labels, &m.matching),
        t: from.t,
        v,
        h: None,
    };
    let include = match &m.card {
        VectorMatchCardinality::ManyToOne(labels) | VectorMatchCardinality::OneToMany(labels) => labels.labels.clone(),
        _ => Vec::new(),
    };
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    let mut pairs: Vec<(InstantSample, InstantSample, Labels)> = Vec::new();
    for s in many {
        let sig = signature(&s.labels, &m.matching);
        let other = match (one_by_sig.get(&sig), fill_one) {
            (Some(other), _) => {
                met.insert(sig.clone());
                other.clone()
            }
            (None, Some(v)) => filled(&s, v),
            (None, None) => continue,
        };
        pairs.push((s, other, sig));
    }
    if let Some(v) = fill_many {
        for sig in &one_order {
            if !met.contains(sig) {
                let o = &one_by_sig[sig];
                pairs.push((filled(o, v), o.clone(), sig.clone()));
            }
        }
    }
    for (s, other, sig) in pairs {
        let (l, r) = if one_to_many { (&other, &s) } else { (&s, &other) };
        let (mut value, mut histogram, keep) = if l.h.is_none() && r.h.is_none() && !is_trim(op) {
            let (value, keep) = apply(op, l.v, r.v);
            (value, None, keep)
        } else {
            match histogram_binop(ev, op, (l.v, l.h.as_ref()), (r.v, r.h.as_ref())) {
                Ok(result) => result,
                Err(note) => {
                    ev.note(note);
                    continue;
                }
            }
        };
        // Prometheus 3 checks the matching before it filters: a comparison whose duplicate
        // matches would all be filtered out still fails, as the arithmetic would.
        let check_filtered = ev.options.semantics == super::Semantics::Prometheus3;
        if m.return_bool {
            (value, histogram) = (f64::from(u8::from(keep)), None);
        } else if !keep && !check_filtered {
            continue;
        }
        let labels = result_labels(ev, op, &s.labels, &other.labels, m, &include);
        let seen = matched.entry(sig).or_default();
        if one_to_one {
            if !seen.is_empty() {
                return Err(QueryError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                        .into(),
                ));
            }
        } else if seen.contains(&labels) {
            return Err(QueryError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        seen.insert(labels.clone());
        if !keep && !m.return_bool {
            continue;
        }
        out.push(InstantSample {
            labels,
            t: s.t,
            v: value,
            h: histogram,
        });
    }
    Ok(out)
}

/// The labels of the result of `many op one`. Arithmetic drops the metric name there and
/// then, even under delayed name removal (as Prometheus' `resultMetric` does); a `bool`
/// comparison drops it too, or under delayed name removal marks it to be dropped when
/// evaluation ends. Prometheus' `VectorBinop` marks nothing else: an element of `many` that
/// was marked is no longer marked once a comparison between vectors keeps it.
fn result_labels(ev: &Evaluator, op: &str, many: &Labels, one: &Labels, m: &BinModifier, include: &[String]) -> Labels {
    let delayed = ev.delays_name_removal();
    let mut labels = if drops_metric_name(op, ev.options.semantics) || (m.return_bool && !delayed) {
        many.without_metadata_labels()
    } else {
        many.clone()
    };
    if matches!(m.card, VectorMatchCardinality::OneToOne) {
        labels = match &m.matching {
            Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
            Some(LabelModifier::Exclude(ignoring)) => labels.drop(&ignoring.labels),
            None => labels,
        };
    }
    for name in include {
        labels.set(name, one.get(name));
    }
    labels.with_name_to_drop(m.return_bool && delayed)
}

/// The labels of an element that stands in for a missing match: the matching labels alone
/// (Prometheus' `matchLabels`).
fn match_labels(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ignoring)) => labels.drop(&ignoring.labels).without_metadata_labels(),
        None => labels.without_metadata_labels(),
    }
}

/// The labels a match group is known by in error messages.
fn match_group(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ignoring)) => {
            let mut names = ignoring.labels.clone();
            names.push(METRIC_NAME.into());
            labels.drop(&names)
        }
        None => labels.without_metadata_labels(),
    }
}
