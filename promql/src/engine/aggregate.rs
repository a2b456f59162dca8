//! Aggregation operators: sum, avg, count, min, max, group, stddev, stdvar, topk, bottomk,
//! quantile and count_values, with `by` and `without`, and Prometheus 3's limitk and
//! limit_ratio.
//!
//! The simple aggregations (sum, avg, count, min, max, group, stddev, stdvar) find each input
//! series' group in a [`GroupCache`] kept across steps and fold values as they come, group by
//! group.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{At, Evaluator, HistogramStep};
use super::functions::histogram::quantile;
use super::index::{GroupCache, StepGroups};
use crate::error::QueryError;
use crate::histogram::kahan_inc;
use crate::labels::Labels;
use crate::value::{format_value, InstantSample, Value};

pub fn eval(ev: &Evaluator, a: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = a.op.to_string();
    // sum adds native histograms too; count and group count them as any element (their
    // value plays no part); the other aggregations leave them out.
    let (input, histograms): (Vec<InstantSample>, Vec<InstantSample>) = match op.as_str() {
        "sum" | "avg" => ev
            .vector_with_histograms(&a.expr, t)?
            .into_iter()
            .partition(|s| s.h.is_none()),
        "limitk" | "limit_ratio" | "count_values" => (ev.vector_with_histograms(&a.expr, t)?, Vec::new()),
        "count" | "group" => (
            ev.vector_with_histograms(&a.expr, t)?
                .into_iter()
                .map(|s| InstantSample::float(s.labels, s.t, 0.0))
                .collect(),
            Vec::new(),
        ),
        // Prometheus 3 leaves histograms out of these, with an info.
        "topk" | "bottomk" | "min" | "max" | "stddev" | "stdvar" | "quantile" => {
            let (floats, histograms): (Vec<InstantSample>, Vec<InstantSample>) = ev
                .vector_with_histograms(&a.expr, t)?
                .into_iter()
                .partition(|s| s.h.is_none());
            if !histograms.is_empty() {
                // Prometheus places topk's and bottomk's at the aggregation, the others' at
                // what they aggregate.
                let at = if matches!(op.as_str(), "topk" | "bottomk") {
                    At::Whole
                } else {
                    At::Input
                };
                ev.info_at(at, crate::annotations::histogram_ignored_in_aggregation(&op));
            }
            (floats, Vec::new())
        }
        _ => (ev.vector(&a.expr, t)?, Vec::new()),
    };
    let grouping = |labels: &Labels| -> Labels {
        match &a.modifier {
            None => Labels::default(),
            Some(LabelModifier::Include(by)) => labels.keep(&by.labels),
            Some(LabelModifier::Exclude(without)) => labels.drop(&without.labels).without_metadata_labels(),
        }
    };
    // Under delayed name removal, a group's result is marked to drop the metric name when one
    // of its members is (Prometheus' `groupedAggregation.dropName`, the name itself only
    // there with `by (__name__)`); topk, bottomk, limitk and limit_ratio keep their elements'
    // marks, count_values marks nothing.
    let marked_groups: std::collections::HashSet<Labels> = if ev.delays_name_removal()
        && !matches!(
            op.as_str(),
            "topk" | "bottomk" | "limitk" | "limit_ratio" | "count_values"
        ) {
        input
            .iter()
            .chain(&histograms)
            .filter(|s| s.labels.name_to_drop())
            .map(|s| grouping(&s.labels))
            .collect()
    } else {
        Default::default()
    };
    // The groups of the float input, when histograms may share them.
    let float_groups: std::collections::HashSet<Labels> = if histograms.is_empty() {
        Default::default()
    } else {
        input.iter().map(|s| grouping(&s.labels)).collect()
    };
    let out = match op.as_str() {
        "topk" | "bottomk" => {
            let k = ev.scalar(a.param.as_ref().expect("parser requires a parameter"), t)?;
            // Prometheus 2.42 took a NaN k as no k at all.
            if k.is_nan() && ev.options.semantics == super::Semantics::Prometheus3 {
                return Err(QueryError::Execution("Parameter value is NaN".into()));
            }
            check_k(k)?;
            select_k(input, k, op == "topk", grouping)
        }
        "limitk" => {
            let k = ev.scalar(a.param.as_ref().expect("parser requires a parameter"), t)?;
            if k.is_nan() {
                return Err(QueryError::Execution("Parameter value is NaN".into()));
            }
            check_k(k)?;
            if k < 1.0 {
                return Ok(Value::Vector(Vec::new()));
            }
            // The first k of each group, in the input's order.
            groups(input, grouping)
                .into_iter()
                .flat_map(|(_, members)| members.into_iter().take(k as usize))
                .collect()
        }
        "limit_ratio" => {
            let r = ev.scalar(a.param.as_ref().expect("parser requires a parameter"), t)?;
            if r.is_nan() {
                return Err(QueryError::Execution("Ratio value is NaN".into()));
            }
            if !(-1.0..=1.0).contains(&r) {
                let to = r.clamp(-1.0, 1.0);
                ev.warn_at(At::Param, crate::annotations::invalid_ratio(r, to));
            }
            let r = r.clamp(-1.0, 1.0);
            if r == 0.0 {
                return Ok(Value::Vector(Vec::new()));
            }
            input.into_iter().filter(|s| in_ratio(&s.labels, r)).collect()
        }
        "quantile" => {
            let q = ev.scalar(a.param.as_ref().expect("parser requires a parameter"), t)?;
            if !(0.0..=1.0).contains(&q) {
                ev.warn_at(At::Param, crate::annotations::invalid_quantile(q));
            }
            groups(input, grouping)
                .into_iter()
                .map(|(labels, members)| {
                    let mut values: Vec<f64> = members.iter().map(|s| s.v).collect();
                    InstantSample {
                        labels,
                        t,
                        v: quantile(q, &mut values),
                        h: None,
                    }
                })
                .collect()
        }
        "count_values" => {
            let label = ev.string(a.param.as_ref().expect("parser requires a parameter"), t)?;
            if !is_valid_label_name(&label, ev.options.semantics) {
                return Err(QueryError::Execution(format!(
                    "invalid label name {}",
                    crate::byte_escapes::go_quote(&label)
                )));
            }
            // A histogram counts by its text, as Prometheus' `FloatHistogram.String` writes it.
            let relabeled = input.into_iter().map(|mut s| {
                let value = match s.h.take() {
                    Some(h) => h.to_string(),
                    None => format_value(s.v),
                };
                s.labels.set(&label, &value);
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
                    h: None,
                })
                .collect()
        }
        _ => {
            let op = Fold::of(&op, ev.options.semantics);
            let key = a as *const AggregateExpr as usize;
            ev.with_groups(key, |cache| fold_groups(cache, &input, op, grouping, t))
        }
    };
    let mut out = if histograms.is_empty() {
        out
    } else {
        sum_histograms(ev, op == "avg", out, &float_groups, histograms, grouping, t)
    };
    if !marked_groups.is_empty() {
        for s in &mut out {
            if marked_groups.contains(&s.labels) {
                s.labels = s.labels.clone().with_name_to_drop(true);
            }
        }
    }
    Ok(Value::Vector(out))
}

/// `sum` (or `avg`) where native histograms are among the input: each group of histograms
/// alone gets their sum (divided by their number for `avg`; compacted, as Prometheus does);
/// a group with floats and histograms together has no result, nor has one whose histograms
/// cannot be added (exponential and custom buckets mixed), each with Prometheus' warning, and
/// a group whose counter reset hints contradict each other gets a warning.
fn sum_histograms(
    ev: &Evaluator,
    average: bool,
    float_sums: Vec<InstantSample>,
    float_groups: &std::collections::HashSet<Labels>,
    histograms: Vec<InstantSample>,
    grouping: impl Fn(&Labels) -> Labels,
    t: i64,
) -> Vec<InstantSample> {
    use crate::histogram::{CompensatedSum, FloatHistogram};
    // Prometheus 3 sums with compensated steps, and averages as avg_over_time does.
    let prometheus_3 = ev.options.semantics == super::Semantics::Prometheus3;
    struct Group {
        sum: Option<FloatHistogram>,
        /// Under Prometheus 3 semantics, in place of `sum`.
        compensated: Option<CompensatedSum>,
        count: f64,
        /// One histogram said "counter reset" where the sum so far said "not reset" or the
        /// other way round (a gauge or an unknown hint on the way ends that, as in
        /// Prometheus' `adjustCounterReset`). Prometheus 3: one input said "counter reset"
        /// and another "not reset", whatever came between.
        collision: bool,
        hints: crate::histogram::HintsSeen,
    }
    let mut order: Vec<Labels> = Vec::new();
    let mut sums: HashMap<Labels, Group> = HashMap::new();
    for s in histograms {
        let Some(h) = s.h else { continue };
        let group = grouping(&s.labels);
        let g = sums.entry(group.clone()).or_insert_with(|| {
            order.push(group);
            Group {
                sum: None,
                compensated: None,
                count: 0.0,
                collision: false,
                hints: Default::default(),
            }
        });
        if prometheus_3 {
            g.hints.see(h.counter_reset_hint);
            g.collision = g.hints.collide();
            if g.count == 0.0 {
                g.compensated = Some(CompensatedSum::new(&h));
            } else if let Some(acc) = &mut g.compensated {
                let step = if average { acc.add_to_mean(&h) } else { acc.add(&h) };
                if ev
                    .annotate_sum_step(step, s.labels.get(crate::labels::METRIC_NAME))
                    .is_none()
                {
                    g.compensated = None;
                }
            }
            g.count += 1.0;
            continue;
        }
        g.sum = match (g.count == 0.0, g.sum.take()) {
            (true, _) => Some(h.as_ref().clone()),
            (false, Some(acc)) => ev
                .combine_histograms(
                    &acc,
                    &h,
                    HistogramStep::Aggregation,
                    s.labels.get(crate::labels::METRIC_NAME),
                )
                .map(|(sum, info)| {
                    g.collision |= info.counter_reset_collision;
                    sum
                }),
            (false, None) => None,
        };
        g.count += 1.0;
    }
    // A group with floats and histograms has no result: a float sum is labelled with its
    // group, a histogram group is known by its labels.
    let mut out: Vec<InstantSample> = float_sums
        .into_iter()
        .filter(|s| !sums.contains_key(&s.labels))
        .collect();
    for group in order {
        if float_groups.contains(&group) {
            ev.warn(crate::annotations::mixed_floats_histograms_aggregation());
            continue;
        }
        let Some(g) = sums.remove(&group) else { continue };
        if g.collision {
            ev.warn(crate::annotations::counter_reset_collision("aggregation"));
        }
        let result = match g.compensated {
            Some(acc) if average => Some(acc.mean()),
            Some(acc) => Some(acc.sum()),
            None => g.sum.map(|mut sum| {
                if average {
                    sum.div(g.count);
                }
                sum
            }),
        };
        if let Some(mut sum) = result {
            sum.compact(0);
            out.push(InstantSample {
                labels: group,
                t,
                v: 0.0,
                h: Some(std::sync::Arc::new(sum)),
            });
        }
    }
    out
}

/// The simple aggregations of `input` by group, groups in the order their first member
/// appears.
fn fold_groups(
    cache: &mut GroupCache,
    input: &[InstantSample],
    op: Fold,
    grouping: impl Fn(&Labels) -> Labels,
    t: i64,
) -> Vec<InstantSample> {
    cache.begin_step(input.len());
    let mut step = StepGroups::new();
    for s in input {
        let (g, _) = cache
            .group_of(&s.labels, |l| Some((grouping(l), 0.0)))
            .expect("every series has a group");
        let (acc, new) = step.get_or_insert(g, || Acc::new(op, s.v));
        if !new {
            acc.add(op, s.v);
        }
    }
    step.slots
        .into_iter()
        .map(|(g, acc)| InstantSample {
            labels: cache.groups[g].clone(),
            t,
            v: acc.finish(op),
            h: None,
        })
        .collect()
}

/// The aggregations computed by folding a group's values in input order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fold {
    Sum,
    Count,
    Group,
    Max,
    Min,
    Avg,
    Stddev,
    Stdvar,
    /// Prometheus 3's stddev and stdvar: as Prometheus 2's, except that a group whose first
    /// value is NaN or ±Inf answers NaN (Prometheus 2 answered 0 for a group of one).
    StddevV3,
    StdvarV3,
    /// Prometheus 3's: a compensated sum.
    SumCompensated,
    /// Prometheus 3's: the compensated sum divided by the count while the sum stays finite,
    /// an incremental mean from where it would overflow.
    AvgCompensated,
}

impl Fold {
    fn of(op: &str, semantics: super::Semantics) -> Fold {
        let v3 = semantics == super::Semantics::Prometheus3;
        match op {
            "sum" if v3 => Fold::SumCompensated,
            "avg" if v3 => Fold::AvgCompensated,
            "stddev" if v3 => Fold::StddevV3,
            "stdvar" if v3 => Fold::StdvarV3,
            "sum" => Fold::Sum,
            "count" => Fold::Count,
            "group" => Fold::Group,
            "max" => Fold::Max,
            "min" => Fold::Min,
            "avg" => Fold::Avg,
            "stddev" => Fold::Stddev,
            "stdvar" => Fold::Stdvar,
            _ => unreachable!("the parser only accepts known aggregations"),
        }
    }
}

/// A group's value so far under a simple aggregation, computed in input order the way
/// Prometheus 2.42 does (which matters for floating-point results): `value` is the sum,
/// extreme or mean, `sum_sq` the sum of squared deviations for stddev and stdvar.
struct Acc {
    count: usize,
    value: f64,
    sum_sq: f64,
    /// Kahan compensation of `value` (or of `mean` once `incremental`).
    c: f64,
    mean: f64,
    incremental: bool,
}

impl Acc {
    fn new(op: Fold, first: f64) -> Acc {
        let nan_start = matches!(op, Fold::StddevV3 | Fold::StdvarV3) && !first.is_finite();
        Acc {
            count: 1,
            value: first,
            sum_sq: if nan_start { f64::NAN } else { 0.0 },
            c: 0.0,
            mean: first,
            incremental: false,
        }
    }

    fn add(&mut self, op: Fold, v: f64) {
        self.count += 1;
        let acc = self.value;
        match op {
            Fold::Sum => self.value += v,
            Fold::Count | Fold::Group => {}
            Fold::Max => {
                if acc < v || acc.is_nan() {
                    self.value = v;
                }
            }
            Fold::Min => {
                if acc > v || acc.is_nan() {
                    self.value = v;
                }
            }
            Fold::Avg => {
                let count = self.count as f64;
                if acc.is_infinite() {
                    if v.is_infinite() && (acc > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                // Each side divided by the count so that large values do not overflow.
                self.value += v / count - acc / count;
            }
            Fold::Stddev | Fold::Stdvar | Fold::StddevV3 | Fold::StdvarV3 => {
                let delta = v - acc;
                self.value += delta / self.count as f64;
                self.sum_sq += delta * (v - self.value);
            }
            Fold::SumCompensated => (self.value, self.c) = kahan_inc(v, self.value, self.c),
            Fold::AvgCompensated => {
                let count = self.count as f64;
                if !self.incremental {
                    let (sum, c) = kahan_inc(v, self.value, self.c);
                    if !sum.is_infinite() {
                        (self.value, self.c) = (sum, c);
                        return;
                    }
                    self.incremental = true;
                    self.mean = self.value / (count - 1.0);
                    self.c /= count - 1.0;
                }
                let q = (count - 1.0) / count;
                (self.mean, self.c) = kahan_inc(v / count, q * self.mean, q * self.c);
            }
        }
    }

    fn finish(&self, op: Fold) -> f64 {
        match op {
            Fold::Sum | Fold::Max | Fold::Min | Fold::Avg => self.value,
            Fold::Count => self.count as f64,
            Fold::Group => 1.0,
            Fold::Stdvar | Fold::StdvarV3 => self.sum_sq / self.count as f64,
            Fold::Stddev | Fold::StddevV3 => (self.sum_sq / self.count as f64).sqrt(),
            Fold::SumCompensated => self.value + self.c,
            Fold::AvgCompensated if self.incremental => self.mean + self.c,
            Fold::AvgCompensated => self.value / self.count as f64 + self.c / self.count as f64,
        }
    }
}

/// Prometheus' bounds on the k of topk, bottomk and limitk (a k below 1 gives nothing).
fn check_k(k: f64) -> Result<(), QueryError> {
    use crate::annotations::go_g;
    if k <= i64::MIN as f64 {
        return Err(QueryError::Execution(format!(
            "Scalar value {} underflows int64",
            go_g(k)
        )));
    }
    if k >= i64::MAX as f64 {
        return Err(QueryError::Execution(format!(
            "Scalar value {} overflows int64",
            go_g(k)
        )));
    }
    Ok(())
}

/// Whether limit_ratio(`r`) keeps the series `labels`: its place in [0, 1), from the hash
/// of its labels, below `r` (or, for a negative `r`, at or above `1 + r`), so that the same
/// series are kept at every step and `limit_ratio(r)` and `limit_ratio(-(1 - r))` split a
/// vector in two (Prometheus' `HashRatioSampler`).
fn in_ratio(labels: &Labels, r: f64) -> bool {
    let offset = labels_hash(labels) as f64 / u64::MAX as f64;
    (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
}

/// Prometheus 3's `Labels.Hash()`: xxHash64 of its label encoding (each name and value
/// after its length, one byte below 255, else 255 and three bytes little-endian), so that
/// limit_ratio picks the series Prometheus picks.
fn labels_hash(labels: &Labels) -> u64 {
    let mut data = Vec::new();
    let mut put = |s: &str| {
        let n = s.len();
        if n < 255 {
            data.push(n as u8);
        } else {
            data.extend_from_slice(&[255, n as u8, (n >> 8) as u8, (n >> 16) as u8]);
        }
        data.extend_from_slice(s.as_bytes());
    };
    for (name, value) in labels.iter() {
        put(name);
        put(value);
    }
    xxhash_rust::xxh64::xxh64(&data, 0)
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

/// topk and bottomk as Prometheus selects them: per group, a binary heap of at most k
/// elements (the worst on top: the smallest for topk, NaN worst of all) takes each element in
/// input order, replacing its top only when strictly better, with Go's `container/heap`
/// moves; so which of tied elements survive is Prometheus' choice, not "first wins". Each
/// group's survivors then come best first (Go's `sort.Sort` of a reversed heap, which sorts
/// by insertion at these sizes).
fn select_k(input: Vec<InstantSample>, k: f64, top: bool, key: impl Fn(&Labels) -> Labels) -> Vec<InstantSample> {
    let k = if k.is_nan() { 0 } else { k as i64 };
    if k < 1 {
        return Vec::new();
    }
    // `vectorByValueHeap.Less` (topk) and `vectorByReverseValueHeap.Less` (bottomk).
    let less = |a: f64, b: f64| a.is_nan() || if top { a < b } else { a > b };
    // Whether `v` replaces the heap's top: strictly better, or a number against a NaN.
    let beats = |v: f64, worst: f64| (if top { worst < v } else { worst > v }) || (worst.is_nan() && !v.is_nan());
    let mut out = Vec::new();
    for (_, members) in groups(input, key) {
        let k = (k as usize).min(members.len());
        let mut heap: Vec<InstantSample> = Vec::with_capacity(k);
        for s in members {
            if heap.len() < k {
                heap.push(s);
                let last = heap.len() - 1;
                heap_up(&mut heap, last, &less);
            } else if beats(s.v, heap[0].v) {
                heap[0] = s;
                if k > 1 && !heap_down(&mut heap, 0, &less) {
                    heap_up(&mut heap, 0, &less);
                }
            }
        }
        // sort.Sort(sort.Reverse(heap)): by insertion, the reversed order's Less.
        for i in 1..heap.len() {
            let mut j = i;
            while j > 0 && less(heap[j - 1].v, heap[j].v) {
                heap.swap(j, j - 1);
                j -= 1;
            }
        }
        out.extend(heap);
    }
    out
}

/// Go's `container/heap` `up`.
fn heap_up(heap: &mut [InstantSample], mut j: usize, less: &impl Fn(f64, f64) -> bool) {
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(heap[j].v, heap[i].v) {
            break;
        }
        heap.swap(i, j);
        j = i;
    }
}

/// Go's `container/heap` `down`; whether the element moved.
fn heap_down(heap: &mut [InstantSample], i0: usize, less: &impl Fn(f64, f64) -> bool) -> bool {
    let n = heap.len();
    let mut i = i0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(heap[j1 + 1].v, heap[j1].v) {
            j = j1 + 1;
        }
        if !less(heap[j].v, heap[i].v) {
            break;
        }
        heap.swap(i, j);
        i = j;
    }
    i > i0
}

/// Whether functions and `count_values` may create a label of this name: under Prometheus 3
/// any UTF-8 but the empty string (`model.UTF8Validation`), under Prometheus 2 the legacy
/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str, semantics: super::Semantics) -> bool {
    if semantics == super::Semantics::Prometheus3 {
        return !name.is_empty() && crate::byte_escapes::is_utf8(name);
    }
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_valid_as_each_prometheus_validates_them() {
        use crate::engine::Semantics::{Prometheus2, Prometheus3};
        for (name, v2, v3) in [
            ("job", true, true),
            ("_a1", true, true),
            ("aÅz", false, true),
            ("1a", false, true),
            ("with space", false, true),
            ("", false, false),
        ] {
            assert_eq!(
                is_valid_label_name(name, Prometheus2),
                v2,
                "{name:?} under Prometheus 2"
            );
            assert_eq!(
                is_valid_label_name(name, Prometheus3),
                v3,
                "{name:?} under Prometheus 3"
            );
        }
        // Bytes that are not UTF-8, written as escapes in the query.
        let not_utf8 = match crate::parse::parse_syntax(r#""a\xc5z""#).unwrap() {
            promql_parser::parser::Expr::StringLiteral(s) => s.val,
            other => panic!("{other:?}"),
        };
        assert!(!is_valid_label_name(&not_utf8, Prometheus3));
    }

    fn sample(name: &str, v: f64) -> InstantSample {
        InstantSample::float(Labels::new(vec![("s".to_string(), name.to_string())]), 0, v)
    }

    #[test]
    fn topk_keeps_the_tied_elements_prometheus_heap_keeps() {
        // topk(3) of a=1 b=1 c=1 d=5 e=1: d replaces the heap's top (a), which then sinks
        // below b; Prometheus answers d, then b and c, not the first two ones.
        let input: Vec<InstantSample> = [("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 5.0), ("e", 1.0)]
            .into_iter()
            .map(|(n, v)| sample(n, v))
            .collect();
        let names =
            |out: Vec<InstantSample>| -> Vec<String> { out.iter().map(|s| s.labels.get("s").to_string()).collect() };
        assert_eq!(
            names(select_k(input.clone(), 3.0, true, |_| Labels::default())),
            ["d", "b", "c"]
        );
        // bottomk(2) of the same: the heap keeps its first two ones, the largest on top.
        assert_eq!(
            names(select_k(input.clone(), 2.0, false, |_| Labels::default())),
            ["a", "b"]
        );
        // A NaN is the worst for both and is replaced by any number.
        let with_nan = vec![sample("n", f64::NAN), sample("x", 2.0), sample("y", 3.0)];
        assert_eq!(
            names(select_k(with_nan.clone(), 2.0, true, |_| Labels::default())),
            ["y", "x"]
        );
        assert_eq!(names(select_k(with_nan, 2.0, false, |_| Labels::default())), ["x", "y"]);
        assert!(select_k(input, f64::NAN, true, |_| Labels::default()).is_empty());
    }
}
