//! `info(v, {selector})`: Prometheus 3's join of a vector with the data labels of info
//! metrics (`target_info` unless the selector names others), by the identifying labels
//! `instance` and `job`, as its `promql/info.go` does.
//!
//! At each step the info series are taken as a vector selector would take them (their latest
//! sample within the lookback, at the first argument's `@` and offset when all of its
//! selectors share one), restricted to those whose `instance` and `job` appear among the base
//! series (per pattern of which of the two a series has), and the newest per info metric and
//! identifying labels is kept. Each base series gains the labels of its info series that it
//! lacks (all of them, or those the selector names), or is left out when none matches and a
//! matcher of the selector refuses the empty value. Series that are info series themselves
//! pass unchanged. Prometheus gathers the identifying labels over every step of a range
//! query; here they are those of the step, which differs only in which conflicts between
//! info series no base series joins it reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Call, Expr};

use super::super::eval::{check_unique_labels, Evaluator};
use super::super::plan::{at_ms, offset_ms};
use crate::error::QueryError;
use crate::labels::{is_metadata_label, Labels, METRIC_NAME};
use crate::value::{InstantSample, Value};

const TARGET_INFO: &str = "target_info";
/// The labels that tie a series to its info series.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// The key the info series of `call` are fetched under: the call's address in the tree.
pub fn key(call: &Call) -> usize {
    call as *const Call as usize
}

/// The matchers of the second argument (none without one).
fn selector_matchers(call: &Call) -> Vec<Matcher> {
    match call.args.args.get(1).map(|a| a.as_ref()) {
        Some(Expr::VectorSelector(vs)) => super::super::plan::matchers(vs),
        _ => Vec::new(),
    }
}

/// The `__name__` matchers that select info metrics: those given when one is positive; with
/// only negative ones, those after `__name__=~".+_info"`; without any, `target_info`.
fn name_matchers(given: Vec<Matcher>) -> Vec<Matcher> {
    if given.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Re(_))) {
        return given;
    }
    if given.is_empty() {
        return vec![Matcher::new(MatchOp::Equal, METRIC_NAME, TARGET_INFO)];
    }
    static ANY_INFO: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let any_info = ANY_INFO.get_or_init(|| regex::Regex::new("^(?:.+_info)$").expect("a valid regular expression"));
    let mut all = vec![Matcher::new(MatchOp::Re(any_info.clone()), METRIC_NAME, ".+_info")];
    all.extend(given);
    all
}

/// What the info series of `call` are selected by: the selector's data label matchers and
/// the effective name matchers.
pub fn series_matchers(call: &Call) -> Vec<Matcher> {
    let (names, mut data): (Vec<Matcher>, Vec<Matcher>) =
        selector_matchers(call).into_iter().partition(|m| m.name == METRIC_NAME);
    data.extend(name_matchers(names));
    data
}

/// The `@` time and offset at which the info series are read: those of the first argument's
/// selectors (an enclosing subquery's offsets add up until an `@` anchors them) when every
/// vector-producing path has a selector and all agree on the time they refer to; else the
/// evaluation time.
pub fn reference(expr: &Expr, query_start: i64, query_end: i64) -> (Option<i64>, i64) {
    #[derive(Clone, Copy)]
    struct Reference {
        at: Option<i64>,
        offset: i64,
    }
    impl Reference {
        fn same(self, other: Reference) -> bool {
            match (self.at, other.at) {
                (Some(a), Some(b)) => a.saturating_sub(self.offset) == b.saturating_sub(other.offset),
                (None, None) => self.offset == other.offset,
                _ => false,
            }
        }
    }
    struct Walk {
        first: Option<Reference>,
        uniform: bool,
        reference_free: bool,
        start: i64,
        end: i64,
    }
    /// Whether `expr` has a selector on every vector-producing path; `subqueries` are the
    /// enclosing ones, innermost last.
    fn inspect(w: &mut Walk, expr: &Expr, subqueries: &mut Vec<(Option<i64>, i64)>) -> bool {
        use promql_parser::parser::value::ValueType;
        if !matches!(expr.value_type(), ValueType::Vector | ValueType::Matrix) {
            return false;
        }
        let vs = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(vs) = vs {
            let mut r = Reference {
                at: at_ms(&vs.at, w.start, w.end),
                offset: offset_ms(&vs.offset),
            };
            for &(at, offset) in subqueries.iter().rev() {
                if r.at.is_some() {
                    break;
                }
                r.offset = r.offset.saturating_add(offset);
                r.at = at;
            }
            match w.first {
                None => w.first = Some(r),
                Some(first) if !first.same(r) => w.uniform = false,
                Some(_) => {}
            }
            return true;
        }
        let children: Vec<&Expr> = match expr {
            // The second argument is selector syntax, not a vector.
            Expr::Call(c) if c.func.name == "info" => vec![&c.args.args[0]],
            _ => crate::parse::children(expr),
        };
        let subquery = match expr {
            Expr::Subquery(sq) => Some((at_ms(&sq.at, w.start, w.end), offset_ms(&sq.offset))),
            _ => None,
        };
        if let Some(s) = subquery {
            subqueries.push(s);
        }
        let mut has_selector = false;
        for child in children {
            // One level per level of the query, which may be as deep as evaluation goes.
            has_selector |= stacker::maybe_grow(128 * 1024, 4 * 1024 * 1024, || inspect(w, child, subqueries));
        }
        if subquery.is_some() {
            subqueries.pop();
        }
        if !has_selector {
            w.reference_free = true;
        }
        has_selector
    }
    let mut w = Walk {
        first: None,
        uniform: true,
        reference_free: false,
        start: query_start,
        end: query_end,
    };
    inspect(&mut w, expr, &mut Vec::new());
    match w.first {
        Some(r) if w.uniform && !w.reference_free => (r.at, r.offset),
        _ => (None, 0),
    }
}

/// Whether the metric name of `labels` matches every one of `names`.
fn is_info_series(labels: &Labels, names: &[Matcher]) -> bool {
    names.iter().all(|m| m.is_match(labels.get(METRIC_NAME)))
}

/// The identifying labels' values of `labels` ("" where absent).
fn identity(labels: &Labels) -> [&str; 2] {
    [labels.get(IDENTIFYING[0]), labels.get(IDENTIFYING[1])]
}

pub fn eval(ev: &Evaluator, call: &Call, t: i64) -> Result<Value, QueryError> {
    let base = ev.vector_with_histograms(&call.args.args[0], t)?;
    let given = selector_matchers(call);
    let names = name_matchers(given.iter().filter(|m| m.name == METRIC_NAME).cloned().collect());
    // The selector's matchers by label name, the metric name's left out.
    let mut data: BTreeMap<&str, Vec<&Matcher>> = BTreeMap::new();
    for m in given.iter().filter(|m| m.name != METRIC_NAME) {
        data.entry(m.name.as_str()).or_default().push(m);
    }
    let ignored: Vec<bool> = base.iter().map(|s| is_info_series(&s.labels, &names)).collect();

    // Which identifying values the base series have, per pattern of presence.
    let mut patterns: BTreeMap<[bool; 2], [BTreeSet<&str>; 2]> = BTreeMap::new();
    for (s, _) in base.iter().zip(&ignored).filter(|(_, &ignored)| !ignored) {
        let values = identity(&s.labels);
        let present = values.map(|v| !v.is_empty());
        if present == [false, false] {
            continue;
        }
        let sets = patterns.entry(present).or_default();
        for (set, v) in sets.iter_mut().zip(values) {
            if !v.is_empty() {
                set.insert(v);
            }
        }
    }
    let selected = |labels: &Labels| {
        let values = identity(labels);
        patterns.iter().any(|(present, sets)| {
            (0..2).all(|i| {
                if present[i] {
                    sets[i].contains(values[i])
                } else {
                    values[i].is_empty()
                }
            })
        })
    };

    // The newest info sample per (info metric, identifying labels).
    let (at, offset) = reference(&call.args.args[0], ev.query_start, ev.query_end);
    let reference = at.unwrap_or(t).saturating_sub(offset);
    let mut newest: HashMap<(&str, [&str; 2]), (&Labels, i64)> = HashMap::new();
    let infos = ev.latest_of(key(call), reference);
    for (labels, sample_t, _, h) in &infos {
        if !selected(labels) {
            continue;
        }
        if h.is_some() {
            return Err(QueryError::Execution("info sample should be float".into()));
        }
        let sig = (labels.get(METRIC_NAME), identity(labels));
        match newest.get(&sig) {
            Some(&(existing, existing_t)) if existing_t == *sample_t => {
                return Err(QueryError::Execution(format!(
                    "found duplicate series for info metric: existing {existing} @ {existing_t}, new {labels} @ {sample_t}"
                )));
            }
            Some(&(_, existing_t)) if existing_t > *sample_t => {}
            _ => {
                newest.insert(sig, (labels, *sample_t));
            }
        }
    }
    let info_names: BTreeSet<&str> = infos.iter().map(|(l, ..)| l.get(METRIC_NAME)).collect();

    let mut out = Vec::with_capacity(base.len());
    for (s, ignored) in base.iter().zip(ignored) {
        if ignored {
            out.push(s.clone());
            continue;
        }
        let mut added: BTreeMap<&str, &str> = BTreeMap::new();
        let mut matched = false;
        for name in &info_names {
            let Some(&(info, _)) = newest.get(&(*name, identity(&s.labels))) else {
                continue;
            };
            matched = true;
            for (k, v) in info.iter() {
                if is_metadata_label(k) || (!data.is_empty() && !data.contains_key(k)) {
                    continue;
                }
                if added.get(k).is_some_and(|&a| a != v) {
                    return Err(QueryError::Execution(format!("conflicting label: {k}")));
                }
                if !s.labels.has(k) {
                    added.insert(k, v);
                }
            }
        }
        if !matched && data.values().flatten().any(|m| !m.is_match("")) {
            continue;
        }
        let mut labels = s.labels.clone();
        for (k, v) in added {
            labels.set(k, v);
        }
        out.push(InstantSample { labels, ..s.clone() });
    }
    check_unique_labels(&out)?;
    Ok(Value::Vector(out))
}
