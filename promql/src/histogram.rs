//! Native-histogram arithmetic for PromQL, with Prometheus 3.16's semantics.
//!
//! [`FloatHistogram`] is the in-memory form of a native histogram (absolute bucket counts,
//! sparse buckets described by spans, exponential schemas -4..=8 or custom bucket bounds).
//! This module gives it what PromQL needs: bucket bounds and iteration ([`bucket_bound`],
//! [`FloatHistogram::all_buckets`]), `histogram_quantile` / `histogram_fraction` /
//! `histogram_stddev` / `histogram_stdvar`, the `buckets` array of the HTTP API
//! ([`api_buckets`]), the arithmetic behind `+`, `-`, `*`, `/` and aggregations
//! ([`FloatHistogram::add`], [`FloatHistogram::sub`], [`FloatHistogram::mul`],
//! [`FloatHistogram::div`], [`FloatHistogram::compact`]), the compensated sums and means of
//! Prometheus 3's `sum`, `avg`, `sum_over_time` and `avg_over_time`
//! ([`FloatHistogram::kahan_add`], [`CompensatedSum`]), counter-reset detection and the first
//! part of `rate`/`increase`/`delta` over histograms ([`histogram_rate`]).
//!
//! It is written by hand because no Rust crate implements Prometheus' native-histogram
//! semantics: the results depend on the exact order of Prometheus' float operations, on its
//! zero-bucket and span-merging rules, and even on Go's own `math.Log2` / `math.Exp2`
//! algorithms, which can differ in the last bit from the C library's. To answer bit for bit as
//! Prometheus does on linux/amd64, logarithms and powers of two come from [`crate::gomath`]
//! (the same fdlibm-derived algorithms as Go's standard library), and the
//! bucket-boundary fractions are computed once the way Prometheus' constant table was made.
//!
//! Annotations (warnings and infos) are not produced here, except that the `*_detailed`
//! variants report what Prometheus turns into infos for additions and rates.

use std::sync::LazyLock;

use crate::gomath::{exp2 as go_exp2, ldexp as go_ldexp, log2 as go_log2};

/// The schema number of histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// A run of consecutive buckets: `offset` buckets after the end of the previous span (for the
/// first span: the index of its first bucket), `length` buckets long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// The counter reset hints an aggregation saw among its inputs: Prometheus 3 warns of
/// conflicting counter resets when one said "reset" and another "not reset".
#[derive(Clone, Copy, Debug, Default)]
pub struct HintsSeen {
    reset: bool,
    not_reset: bool,
}

impl HintsSeen {
    pub fn see(&mut self, hint: CounterResetHint) {
        match hint {
            CounterResetHint::CounterReset => self.reset = true,
            CounterResetHint::NotCounterReset => self.not_reset = true,
            _ => {}
        }
    }

    pub fn collide(&self) -> bool {
        self.reset && self.not_reset
    }
}

/// What a histogram sample says about counter resets, as stored with native histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    #[default]
    Unknown,
    CounterReset,
    NotCounterReset,
    Gauge,
}

/// A native histogram with float counts, as PromQL computes with it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FloatHistogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    /// Absolute counts (not deltas).
    pub positive_buckets: Vec<f64>,
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of custom buckets (schema -53).
    pub custom_values: Vec<f64>,
}

/// One bucket with its bounds, whether each bound belongs to the bucket, its count and its
/// index within the schema (0 for the zero bucket).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
    pub count: f64,
    pub index: i32,
}

/// Why a histogram operation has no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// One operand has exponential buckets, the other custom buckets. PromQL turns this
    /// into the warning "vector contains a mix of histograms with exponential and custom
    /// buckets schemas for metric name ...".
    #[error("cannot apply this operation on histograms with a mix of exponential and custom bucket schemas")]
    IncompatibleSchema,
    /// The spans and buckets of a histogram do not fit together. Prometheus fails the
    /// query in this case.
    #[error("{0}")]
    InvalidLayout(String),
    /// [`histogram_rate`] was given fewer than two points.
    #[error("a histogram rate needs at least two points")]
    TooFewPoints,
}

/// What happened on the side during an addition or subtraction; Prometheus reports both as
/// annotations rather than errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ArithmeticInfo {
    /// One operand said "counter reset", the other "no counter reset"; the result's hint is
    /// then [`CounterResetHint::Unknown`].
    pub counter_reset_collision: bool,
    /// Both operands had custom buckets with different bounds; the result has the bounds
    /// both have in common ("mismatched custom buckets were reconciled").
    pub custom_bounds_reconciled: bool,
}

fn is_exponential_schema(schema: i32) -> bool {
    (EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema)
}

/// Adds `inc` to a running sum with a Neumaier compensation term, as Prometheus' Kahan
/// summation helper: the returned sum is the plain float sum, the compensation is kept apart.
/// Prometheus' `FloatHistogram.String`: count, sum, then every bucket with observations from
/// the lowest, in interval notation (`{count:20, sum:10, [-2,-1):2, [-0.001,0.001]:2}`).
impl std::fmt::Display for FloatHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::annotations::go_g;
        write!(f, "{{count:{}, sum:{}", go_g(self.count), go_g(self.sum))?;
        for b in self.all_buckets().iter().filter(|b| b.count != 0.0) {
            let (open, close) = (
                if b.lower_inclusive { '[' } else { '(' },
                if b.upper_inclusive { ']' } else { ')' },
            );
            write!(
                f,
                ", {open}{},{}{close}:{}",
                go_g(b.lower),
                go_g(b.upper),
                go_g(b.count)
            )?;
        }
        f.write_str("}")
    }
}

/// Whether two span lists lay out the same buckets, zero-length spans folded into the next
/// one (Prometheus' `spansMatch`).
pub fn spans_match(a: &[Span], b: &[Span]) -> bool {
    fn folded(spans: &[Span]) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::new();
        let mut pending = 0;
        for s in spans {
            if s.length == 0 {
                pending += s.offset;
                continue;
            }
            out.push(Span {
                offset: s.offset + pending,
                length: s.length,
            });
            pending = 0;
        }
        out
    }
    folded(a) == folded(b)
}

pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

// ---------------------------------------------------------------------------------------
// Bucket bounds.
// ---------------------------------------------------------------------------------------

/// The fractions in [0.5, 1) of the bucket bounds within a power of two, for schemas 0..=8
/// (entry `s` has `2^s` values, the `j`-th close to `2^(j / 2^s) / 2`).
///
/// Prometheus uses a table of constants here that is not correctly rounded: it was generated
/// (as its client library documents) by starting each schema at 0.5, taking every
/// odd-numbered bound as the previous bound times `2^(2^-s)` (Go's `math.Exp2`) and every
/// even-numbered one from the next-lower schema. Computing the table the same way, with the
/// same `exp2`, gives the very same numbers, so bucket bounds agree to the bit.
static BOUND_FRACTIONS: LazyLock<Vec<Vec<f64>>> = LazyLock::new(|| {
    let mut table: Vec<Vec<f64>> = Vec::with_capacity(EXPONENTIAL_SCHEMA_MAX as usize + 1);
    for schema in 0..=EXPONENTIAL_SCHEMA_MAX {
        let factor = go_exp2(go_exp2(f64::from(-schema)));
        let n = 1usize << schema;
        let mut bounds = Vec::with_capacity(n);
        bounds.push(0.5);
        for j in 0..n - 1 {
            let bound = if (j + 1) % 2 == 0 {
                table[schema as usize - 1][j / 2 + 1]
            } else {
                bounds[j] * factor
            };
            bounds.push(bound);
        }
        table.push(bounds);
    }
    table
});

/// The fraction in [0.5, 1) of the `j`-th bucket bound within a power of two, for schemas
/// 0..=8 (`0 <= j < 2^schema`).
fn bound_fraction(schema: i32, j: i32) -> f64 {
    BOUND_FRACTIONS[schema as usize][j as usize]
}

fn bound_exponential(index: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = i64::from(index) << (-schema).min(62);
        if exp == 1024 {
            // The bucket just below the one for ±Inf observations ends at the largest float.
            return f64::MAX;
        }
        return go_ldexp(1.0, exp);
    }
    if schema > EXPONENTIAL_SCHEMA_MAX {
        return f64::NAN;
    }
    let frac = bound_fraction(schema, index & ((1 << schema) - 1));
    let exp = i64::from(index >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    go_ldexp(frac, exp)
}

/// The upper bound of the positive bucket `index` in `schema` (the lower bound is the upper
/// bound of `index - 1`; negative buckets mirror positive ones). For exponential schemas the
/// bound is `2^(index / 2^schema)`, except that the last bucket below the one counting
/// infinite observations ends at `f64::MAX`. For custom buckets it is `custom_values[index]`,
/// `-Inf` for index -1 and `+Inf` for index `custom_values.len()`; other indexes (which
/// Prometheus refuses with a panic) and schemas above 8 give NaN.
pub fn bucket_bound(index: i32, schema: i32, custom_values: &[f64]) -> f64 {
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let len = custom_values.len() as i64;
        let idx = i64::from(index);
        return match idx {
            -1 => f64::NEG_INFINITY,
            i if i == len => f64::INFINITY,
            i if (0..len).contains(&i) => custom_values[i as usize],
            _ => f64::NAN,
        };
    }
    bound_exponential(index, schema)
}

fn target_idx(idx: i32, origin_schema: i32, target_schema: i32) -> i32 {
    (idx.wrapping_sub(1) >> (origin_schema - target_schema)).wrapping_add(1)
}

/// The bucket `index` on one side of a histogram, with Prometheus' inclusivity rules.
fn make_bucket(index: i32, count: f64, schema: i32, positive: bool, custom_values: &[f64]) -> Bucket {
    let (lower, upper) = if positive {
        (
            bucket_bound(index.wrapping_sub(1), schema, custom_values),
            bucket_bound(index, schema, custom_values),
        )
    } else {
        (
            -bucket_bound(index, schema, custom_values),
            -bucket_bound(index.wrapping_sub(1), schema, custom_values),
        )
    };
    let (lower_inclusive, upper_inclusive) = if schema == CUSTOM_BUCKETS_SCHEMA {
        (index == 0, true)
    } else {
        (lower < 0.0, upper > 0.0)
    };
    Bucket {
        lower,
        upper,
        lower_inclusive,
        upper_inclusive,
        count,
        index,
    }
}

// ---------------------------------------------------------------------------------------
// Bucket iteration.
// ---------------------------------------------------------------------------------------

/// Walks the buckets of one side upwards (away from zero), optionally merging them into a
/// lower-resolution `target` schema and skipping the buckets whose upper bound is at most
/// `start` (exponential schemas only). Stops early, without panicking, on layouts where the
/// spans ask for more buckets than there are.
struct ForwardIter<'a> {
    spans: &'a [Span],
    buckets: &'a [f64],
    custom_values: &'a [f64],
    schema: i32,
    target: i32,
    positive: bool,
    spans_idx: usize,
    idx_in_span: u32,
    buckets_idx: usize,
    orig_idx: i32,
    curr_idx: i32,
    curr_count: f64,
    start: f64,
    reached_start: bool,
}

impl<'a> ForwardIter<'a> {
    fn new(h: &'a FloatHistogram, positive: bool, start: f64, target: i32) -> Self {
        let (spans, buckets, custom_values): (&[Span], &[f64], &[f64]) = if positive {
            (&h.positive_spans, &h.positive_buckets, &h.custom_values)
        } else {
            (&h.negative_spans, &h.negative_buckets, &[])
        };
        ForwardIter {
            spans,
            buckets,
            custom_values,
            schema: h.schema,
            target,
            positive,
            spans_idx: 0,
            idx_in_span: 0,
            buckets_idx: 0,
            orig_idx: 0,
            curr_idx: 0,
            curr_count: 0.0,
            start,
            reached_start: start == 0.0,
        }
    }

    fn advance(&mut self) -> bool {
        loop {
            let Some(&first_span) = self.spans.get(self.spans_idx) else {
                return false;
            };
            let mut span = first_span;
            if self.schema == self.target {
                if self.buckets_idx == 0 {
                    self.curr_idx = span.offset;
                } else {
                    self.curr_idx = self.curr_idx.wrapping_add(1);
                }
                if self.buckets_idx >= self.buckets.len() {
                    return false;
                }
                while self.idx_in_span >= span.length {
                    self.idx_in_span = 0;
                    self.spans_idx += 1;
                    let Some(&next) = self.spans.get(self.spans_idx) else {
                        return false;
                    };
                    span = next;
                    self.curr_idx = self.curr_idx.wrapping_add(span.offset);
                }
                self.curr_count = self.buckets[self.buckets_idx];
                self.idx_in_span += 1;
                self.buckets_idx += 1;
            } else {
                let (mut orig_idx, mut spans_idx, mut idx_in_span) = (self.orig_idx, self.spans_idx, self.idx_in_span);
                let mut first_pass = true;
                self.curr_count = 0.0;
                'merge: loop {
                    if self.buckets_idx == 0 {
                        orig_idx = span.offset;
                    } else {
                        orig_idx = orig_idx.wrapping_add(1);
                    }
                    if self.buckets_idx >= self.buckets.len() {
                        if first_pass {
                            return false;
                        }
                        break 'merge;
                    }
                    while idx_in_span >= span.length {
                        idx_in_span = 0;
                        spans_idx += 1;
                        match self.spans.get(spans_idx) {
                            Some(&next) => span = next,
                            None if first_pass => return false,
                            None => break 'merge,
                        }
                        orig_idx = orig_idx.wrapping_add(span.offset);
                    }
                    let idx = target_idx(orig_idx, self.schema, self.target);
                    if first_pass {
                        self.curr_idx = idx;
                        first_pass = false;
                    } else if idx != self.curr_idx {
                        break 'merge;
                    }
                    self.curr_count += self.buckets[self.buckets_idx];
                    idx_in_span += 1;
                    self.buckets_idx += 1;
                    self.orig_idx = orig_idx;
                    self.spans_idx = spans_idx;
                    self.idx_in_span = idx_in_span;
                }
            }
            if !self.reached_start
                && is_exponential_schema(self.target)
                && bound_exponential(self.curr_idx, self.target) <= self.start
            {
                continue;
            }
            self.reached_start = true;
            return true;
        }
    }

    fn at(&self) -> Bucket {
        make_bucket(
            self.curr_idx,
            self.curr_count,
            self.target,
            self.positive,
            self.custom_values,
        )
    }
}

/// Walks the buckets of one side downwards (towards zero), from the end of the last span.
struct ReverseIter<'a> {
    spans: &'a [Span],
    buckets: &'a [f64],
    custom_values: &'a [f64],
    schema: i32,
    positive: bool,
    spans_idx: isize,
    idx_in_span: i64,
    buckets_idx: isize,
    curr_idx: i32,
    curr_count: f64,
}

impl<'a> ReverseIter<'a> {
    fn new(h: &'a FloatHistogram, positive: bool) -> Self {
        let (spans, buckets, custom_values): (&[Span], &[f64], &[f64]) = if positive {
            (&h.positive_spans, &h.positive_buckets, &h.custom_values)
        } else {
            (&h.negative_spans, &h.negative_buckets, &[])
        };
        let idx_in_span = spans.last().map_or(0, |s| i64::from(s.length) - 1);
        let curr_idx = spans
            .iter()
            .fold(0i32, |acc, s| acc.wrapping_add(s.offset).wrapping_add(s.length as i32));
        ReverseIter {
            spans,
            buckets,
            custom_values,
            schema: h.schema,
            positive,
            spans_idx: spans.len() as isize - 1,
            idx_in_span,
            buckets_idx: buckets.len() as isize - 1,
            curr_idx,
            curr_count: 0.0,
        }
    }

    fn advance(&mut self) -> bool {
        self.curr_idx = self.curr_idx.wrapping_sub(1);
        if self.buckets_idx < 0 {
            return false;
        }
        while self.idx_in_span < 0 {
            self.spans_idx -= 1;
            if self.spans_idx < 0 {
                return false;
            }
            let i = self.spans_idx as usize;
            self.idx_in_span = i64::from(self.spans[i].length) - 1;
            self.curr_idx = self.curr_idx.wrapping_sub(self.spans[i + 1].offset);
        }
        self.curr_count = self.buckets[self.buckets_idx as usize];
        self.buckets_idx -= 1;
        self.idx_in_span -= 1;
        true
    }

    fn at(&self) -> Bucket {
        make_bucket(
            self.curr_idx,
            self.curr_count,
            self.schema,
            self.positive,
            self.custom_values,
        )
    }
}

impl FloatHistogram {
    /// Whether the histogram has custom bucket bounds (schema -53).
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// Narrows a bucket that overlaps the zero bucket so that it starts (or ends) at the
    /// zero threshold.
    fn clamp_to_zero_bucket(&self, mut b: Bucket) -> Bucket {
        let zt = self.zero_threshold;
        if b.upper < 0.0 && b.upper > -zt {
            b.upper = -zt;
        } else if b.lower > 0.0 && b.lower < zt {
            b.lower = zt;
        }
        b
    }

    /// The zero bucket, if iteration yields it: only with a positive zero count (and never
    /// for custom buckets, which have none).
    fn zero_bucket(&self) -> Option<Bucket> {
        (!self.uses_custom_buckets() && self.zero_count > 0.0).then_some(Bucket {
            lower: -self.zero_threshold,
            upper: self.zero_threshold,
            lower_inclusive: true,
            upper_inclusive: true,
            count: self.zero_count,
            index: 0,
        })
    }

    /// All buckets in ascending order: the negative buckets from the most negative one, the
    /// zero bucket if its count is positive, then the positive buckets. Buckets overlapping
    /// the zero bucket are narrowed to end at the zero threshold. Empty buckets inside the
    /// spans are included.
    pub fn all_buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::with_capacity(self.negative_buckets.len() + self.positive_buckets.len() + 1);
        let mut neg = ReverseIter::new(self, false);
        while neg.advance() {
            out.push(self.clamp_to_zero_bucket(neg.at()));
        }
        out.extend(self.zero_bucket());
        let mut pos = ForwardIter::new(self, true, 0.0, self.schema);
        while pos.advance() {
            out.push(self.clamp_to_zero_bucket(pos.at()));
        }
        out
    }

    /// All buckets in descending order: the positive buckets from the highest one, the zero
    /// bucket if its count is positive, then the negative buckets; the mirror image of
    /// [`FloatHistogram::all_buckets`].
    pub fn all_buckets_reverse(&self) -> Vec<Bucket> {
        let mut out = Vec::with_capacity(self.negative_buckets.len() + self.positive_buckets.len() + 1);
        let mut pos = ReverseIter::new(self, true);
        while pos.advance() {
            out.push(self.clamp_to_zero_bucket(pos.at()));
        }
        out.extend(self.zero_bucket());
        let mut neg = ForwardIter::new(self, false, 0.0, self.schema);
        while neg.advance() {
            out.push(self.clamp_to_zero_bucket(neg.at()));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// PromQL functions.
// ---------------------------------------------------------------------------------------

/// `histogram_quantile(q, h)` for a native histogram.
///
/// The rank `q × count` is looked up in the buckets, from below for q < 0.5 (or when the sum
/// is NaN, i.e. there may be NaN observations, which count but sit in no bucket) and from
/// above otherwise. Within the bucket found, custom buckets and the zero bucket interpolate
/// linearly, exponential buckets on a log scale. The zero bucket is taken to start (end) at
/// 0 when the histogram has only positive (negative) buckets; the first custom bucket starts
/// at 0 unless its upper bound is not positive (then that bound is the answer), and the last
/// custom bucket answers with its lower bound. q < 0 gives -Inf, q > 1 +Inf, an empty
/// histogram or a NaN q NaN; a rank beyond all buckets gives NaN if the sum is NaN, else the
/// upper bound of the last bucket looked at.
pub fn histogram_quantile(q: f64, h: &FloatHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    let forward = h.sum.is_nan() || q < 0.5;
    let (buckets, mut rank) = if forward {
        (h.all_buckets(), q * h.count)
    } else {
        (h.all_buckets_reverse(), (1.0 - q) * h.count)
    };
    let mut bucket = Bucket {
        lower: 0.0,
        upper: 0.0,
        lower_inclusive: false,
        upper_inclusive: false,
        count: 0.0,
        index: 0,
    };
    let mut count = 0.0;
    for b in buckets {
        bucket = b;
        if b.count == 0.0 {
            continue;
        }
        count += b.count;
        if count >= rank {
            break;
        }
    }
    if !h.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            bucket.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            bucket.upper = 0.0;
        }
    } else if h.uses_custom_buckets() {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return bucket.upper;
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return bucket.lower;
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return f64::NAN;
        }
        return bucket.upper;
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let fraction = rank / bucket.count;
    if h.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return bucket.lower + (bucket.upper - bucket.lower) * fraction;
    }
    let log_lower = go_log2(bucket.lower.abs());
    let log_upper = go_log2(bucket.upper.abs());
    if bucket.lower > 0.0 {
        return go_exp2(log_lower + (log_upper - log_lower) * fraction);
    }
    -go_exp2(log_upper + (log_lower - log_upper) * (1.0 - fraction))
}

/// The share of a bucket's width at or below `v` (`lower < v < upper`), linearly or on a
/// log scale (negative buckets mirrored).
fn fraction_below(b: &Bucket, v: f64, linear: bool) -> f64 {
    if linear {
        return (v - b.lower) / (b.upper - b.lower);
    }
    let log_lower = go_log2(b.lower.abs());
    let log_upper = go_log2(b.upper.abs());
    let log_v = go_log2(v.abs());
    if v > 0.0 {
        return (log_v - log_lower) / (log_upper - log_lower);
    }
    1.0 - ((log_v - log_upper) / (log_lower - log_upper))
}

impl FloatHistogram {
    /// `h </ rhs` (`upper`: the observations below `rhs`) or `h >/ rhs` (those above), as
    /// Prometheus 3.16's `TrimBuckets`: buckets wholly on the kept side stay, buckets on the
    /// other side empty, a bucket holding `rhs` keeps the share interpolated as
    /// [`histogram_fraction`] does (a bucket with an infinite bound is kept or emptied whole,
    /// as far as nothing is known about it). When anything was trimmed, count and sum are
    /// recomputed from the kept buckets, each at the midpoint of its kept part.
    pub fn trim(&self, rhs: f64, upper: bool) -> FloatHistogram {
        let mut h = self.clone();
        let custom = self.uses_custom_buckets();
        let (mut count, mut sum, mut trimmed) = (0.0, 0.0, false);
        let (mut has_positive, mut has_negative) = (false, false);
        for positive in [true, false] {
            let mut it = ForwardIter::new(self, positive, 0.0, self.schema);
            let counts = if positive {
                &mut h.positive_buckets
            } else {
                &mut h.negative_buckets
            };
            let mut i = 0;
            while it.advance() {
                let b = it.at();
                if b.count != 0.0 {
                    if positive {
                        has_positive = true;
                    } else {
                        has_negative = true;
                    }
                    let (keep, midpoint) = trim_bucket(&b, rhs, upper, positive, custom);
                    count += keep;
                    sum += midpoint * keep;
                    if counts[i] != keep {
                        counts[i] = keep;
                        trimmed = true;
                    }
                }
                i += 1;
            }
        }
        if h.zero_count > 0.0 {
            let (keep, midpoint) = trim_zero_bucket(&h, rhs, has_negative, has_positive, upper);
            if h.zero_count != keep {
                h.zero_count = keep;
                trimmed = true;
            }
            sum += midpoint * keep;
            count += keep;
        }
        if trimmed {
            h.count = count;
            h.sum = sum;
            h.compact(0);
        }
        h
    }
}

/// The count a bucket keeps when trimmed at `rhs`, and the midpoint of the kept part.
fn trim_bucket(b: &Bucket, rhs: f64, upper: bool, positive: bool, custom: bool) -> (f64, f64) {
    let (keep_all, holds_rhs) = if upper {
        (b.upper <= rhs, b.lower < rhs)
    } else {
        (b.lower >= rhs, b.upper > rhs)
    };
    if keep_all {
        return (b.count, trim_midpoint(b.lower, b.upper, positive, custom));
    }
    if !holds_rhs {
        return (0.0, 0.0);
    }
    if b.lower == f64::NEG_INFINITY || b.upper == f64::INFINITY {
        return trim_infinite_bucket(b, rhs, upper);
    }
    let below = if rhs <= b.lower {
        0.0
    } else if rhs >= b.upper {
        b.count
    } else {
        b.count * fraction_below(b, rhs, custom)
    };
    if upper {
        (below, trim_midpoint(b.lower, rhs, positive, custom))
    } else {
        (b.count - below, trim_midpoint(rhs, b.upper, positive, custom))
    }
}

/// [`trim_bucket`] of a bucket with an infinite bound, whose observations could lie anywhere:
/// a finite positive upper bound of a custom bucket makes its lower one 0.
fn trim_infinite_bucket(b: &Bucket, rhs: f64, upper: bool) -> (f64, f64) {
    let finite_or_zero = |x: f64| if x.is_infinite() { 0.0 } else { x };
    if b.lower == f64::NEG_INFINITY {
        if upper {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper.is_finite() {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, finite_or_zero(b.upper));
        }
        if rhs <= b.lower {
            return (b.count, 0.0);
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper.is_finite() {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, finite_or_zero(b.upper));
    }
    if upper || rhs < b.lower {
        return (0.0, finite_or_zero(b.lower));
    }
    (b.count, rhs)
}

/// [`trim_bucket`] of the zero bucket, which reaches only to the side that has buckets when
/// one side has none.
fn trim_zero_bucket(h: &FloatHistogram, rhs: f64, has_negative: bool, has_positive: bool, upper: bool) -> (f64, f64) {
    let (mut lower, mut top) = (-h.zero_threshold, h.zero_threshold);
    if has_negative && !has_positive {
        top = 0.0;
    }
    if has_positive && !has_negative {
        lower = 0.0;
    }
    let (fraction, midpoint) = if upper {
        if rhs <= lower {
            return (0.0, 0.0);
        }
        if rhs >= top {
            return (h.zero_count, (lower + top) / 2.0);
        }
        ((rhs - lower) / (top - lower), (lower + rhs) / 2.0)
    } else {
        if rhs <= lower {
            return (h.zero_count, (lower + top) / 2.0);
        }
        if rhs >= top {
            return (0.0, 0.0);
        }
        ((top - rhs) / (top - lower), (rhs + top) / 2.0)
    };
    (h.zero_count * fraction, midpoint)
}

/// Where the kept observations of a trimmed bucket are taken to lie: the arithmetic
/// midpoint for custom buckets, the geometric one for exponential buckets, the finite bound
/// (or half of it) when one is infinite.
fn trim_midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        return if upper > 0.0 { upper / 2.0 } else { upper };
    }
    if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let geometric = (lower * upper).abs().sqrt();
    if positive {
        geometric
    } else {
        -geometric
    }
}

/// `histogram_fraction(lower, upper, h)`: the estimated share of observations between the two
/// values, interpolating as [`histogram_quantile`] does (linearly in custom buckets and the
/// zero bucket, on a log scale in exponential buckets; nothing is interpolated within a
/// bucket with an infinite bound). An empty histogram or a NaN bound gives NaN, `lower >=
/// upper` gives 0. With a NaN sum the observations outside all buckets (NaNs) count in the
/// denominator only.
pub fn histogram_fraction(lower: f64, upper: f64, h: &FloatHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let buckets = h.all_buckets();
    let (mut count, mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut consumed = 0;
    for b in &buckets {
        consumed += 1;
        let mut b = *b;
        count += b.count;
        let mut zero_bucket = false;
        if h.uses_custom_buckets() {
            if b.lower == f64::NEG_INFINITY && b.upper > 0.0 {
                b.lower = 0.0;
            }
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        let linear = h.uses_custom_buckets() || zero_bucket;
        let interpolate = |v: f64| {
            if linear {
                if b.lower == f64::NEG_INFINITY {
                    return b.count;
                }
                rank + b.count * fraction_below(&b, v, true)
            } else {
                rank + b.count * fraction_below(&b, v, false)
            }
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    if h.sum.is_nan() {
        for b in &buckets[consumed..] {
            count += b.count;
        }
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / h.count
}

/// `histogram_stdvar(h)`: the variance of the observations, estimated by putting each
/// bucket's observations at its midpoint (arithmetic for custom buckets, 0 for the zero
/// bucket, geometric for exponential buckets), summed with compensation as Prometheus does.
pub fn stdvar(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut variance, mut compensation) = (0.0, 0.0);
    for bucket in h.all_buckets() {
        if bucket.count == 0.0 {
            continue;
        }
        let val = if h.uses_custom_buckets() {
            (bucket.upper + bucket.lower) / 2.0
        } else if bucket.lower <= 0.0 && bucket.upper >= 0.0 {
            0.0
        } else {
            let geometric = (bucket.upper * bucket.lower).sqrt();
            if bucket.upper < 0.0 {
                -geometric
            } else {
                geometric
            }
        };
        let delta = val - mean;
        (variance, compensation) = kahan_inc(bucket.count * delta * delta, variance, compensation);
    }
    variance += compensation;
    variance / h.count
}

/// `histogram_stddev(h)`: the square root of [`stdvar`].
pub fn stddev(h: &FloatHistogram) -> f64 {
    stdvar(h).sqrt()
}

/// The `buckets` array Prometheus' HTTP API writes for a histogram: every bucket of
/// [`FloatHistogram::all_buckets`] whose count is not zero, as (boundary rule, lower, upper,
/// count). Boundary rule: 0 = lower exclusive and upper inclusive, 1 = lower inclusive and
/// upper exclusive, 2 = both exclusive, 3 = both inclusive.
pub fn api_buckets(h: &FloatHistogram) -> Vec<(u8, f64, f64, f64)> {
    h.all_buckets()
        .into_iter()
        .filter(|b| b.count != 0.0)
        .map(|b| {
            let rule = match (b.lower_inclusive, b.upper_inclusive) {
                (false, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (true, true) => 3,
            };
            (rule, b.lower, b.upper, b.count)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Layout checks and resolution changes.
// ---------------------------------------------------------------------------------------

const ERR_NEGATIVE_OFFSET: &str = "histogram has a span whose offset is negative";
const ERR_SPANS_BUCKETS_MISMATCH: &str = "histogram spans specify different number of buckets than provided";
const ERR_INDEX_OUT_OF_RANGE: &str = "histogram has a span whose bucket index is out of range";

/// Checks that the spans fit the number of buckets, as Prometheus does before it reduces a
/// histogram's resolution.
fn check_spans(spans: &[Span], num_buckets: usize) -> Result<(), HistogramError> {
    let mut span_buckets: u64 = 0;
    let mut end_idx: i64 = 0;
    for (n, span) in spans.iter().enumerate() {
        if n > 0 && span.offset < 0 {
            return Err(HistogramError::InvalidLayout(format!(
                "span number {} with offset {}: {ERR_NEGATIVE_OFFSET}",
                n + 1,
                span.offset
            )));
        } else if n == 0 && span.offset == i32::MIN {
            return Err(HistogramError::InvalidLayout(format!(
                "span number {} starts at bucket index {}: {ERR_INDEX_OUT_OF_RANGE}",
                n + 1,
                span.offset
            )));
        }
        span_buckets += u64::from(span.length);
        end_idx += i64::from(span.offset) + i64::from(span.length);
        if end_idx - 1 > i64::from(i32::MAX) {
            return Err(HistogramError::InvalidLayout(format!(
                "span number {} ends at bucket index {}: {ERR_INDEX_OUT_OF_RANGE}",
                n + 1,
                end_idx - 1
            )));
        }
    }
    if span_buckets != num_buckets as u64 {
        return Err(HistogramError::InvalidLayout(format!(
            "spans need {span_buckets} buckets, have {num_buckets} buckets: {ERR_SPANS_BUCKETS_MISMATCH}"
        )));
    }
    Ok(())
}

/// Merges the buckets of one side into the lower-resolution `target` schema.
fn reduce_resolution_buckets(
    spans: &[Span],
    buckets: &[f64],
    origin: i32,
    target: i32,
) -> Result<(Vec<Span>, Vec<f64>), HistogramError> {
    reduce_resolution_compensated(spans, buckets, None, origin, target).map(|(spans, buckets, _)| (spans, buckets))
}

/// One side's spans, buckets and the buckets' Kahan compensation terms.
type CompensatedBuckets = (Vec<Span>, Vec<f64>, Vec<f64>);

/// [`reduce_resolution_buckets`], and with `compensation` (the Kahan compensation terms of
/// `buckets`) Prometheus' `kahanReduceResolution`: buckets merged with compensated steps, and
/// the compensation terms of the merged buckets (empty without).
fn reduce_resolution_compensated(
    spans: &[Span],
    buckets: &[f64],
    compensation: Option<&[f64]>,
    origin: i32,
    target: i32,
) -> Result<CompensatedBuckets, HistogramError> {
    let mut target_spans: Vec<Span> = Vec::new();
    let mut target_buckets: Vec<f64> = Vec::new();
    let mut target_compensation: Vec<f64> = Vec::new();
    let compensation_of = |i: usize| compensation.and_then(|c| c.get(i).copied()).unwrap_or(0.0);
    let mut bucket_idx: i32 = 0;
    let mut bucket_count_idx = 0usize;
    let mut last_target_idx: i32 = 0;
    for (n, span) in spans.iter().enumerate() {
        if n > 0 && span.offset < 0 {
            return Err(HistogramError::InvalidLayout(format!(
                "span number {} with offset {}: {ERR_NEGATIVE_OFFSET}",
                n + 1,
                span.offset
            )));
        }
        bucket_idx = bucket_idx.wrapping_add(span.offset);
        for _ in 0..span.length {
            let Some(&count) = buckets.get(bucket_count_idx) else {
                return Err(HistogramError::InvalidLayout(format!(
                    "have {} buckets but spans need more: {ERR_SPANS_BUCKETS_MISMATCH}",
                    buckets.len()
                )));
            };
            let idx = target_idx(bucket_idx, origin, target);
            let c = compensation_of(bucket_count_idx);
            if target_spans.is_empty() {
                target_spans.push(Span { offset: idx, length: 1 });
                target_buckets.push(count);
                target_compensation.push(c);
                last_target_idx = idx;
            } else if last_target_idx == idx {
                let last = target_buckets.last_mut().expect("a bucket per target span");
                if compensation.is_some() {
                    let last_c = target_compensation.last_mut().expect("a term per bucket");
                    (*last, *last_c) = kahan_inc(count, *last, *last_c);
                    (*last, *last_c) = kahan_inc(c, *last, *last_c);
                } else {
                    *last += count;
                }
            } else if last_target_idx.wrapping_add(1) == idx {
                target_spans.last_mut().expect("checked non-empty").length += 1;
                last_target_idx = last_target_idx.wrapping_add(1);
                target_buckets.push(count);
                target_compensation.push(c);
            } else if last_target_idx.wrapping_add(1) < idx {
                target_spans.push(Span {
                    offset: idx.wrapping_sub(last_target_idx).wrapping_sub(1),
                    length: 1,
                });
                last_target_idx = idx;
                target_buckets.push(count);
                target_compensation.push(c);
            }
            bucket_idx = bucket_idx.wrapping_add(1);
            bucket_count_idx += 1;
        }
    }
    if bucket_count_idx != buckets.len() {
        return Err(HistogramError::InvalidLayout(format!(
            "spans need {bucket_count_idx} buckets, have {} buckets: {ERR_SPANS_BUCKETS_MISMATCH}",
            buckets.len()
        )));
    }
    if compensation.is_none() {
        target_compensation.clear();
    }
    Ok((target_spans, target_buckets, target_compensation))
}

/// Removes empty buckets at the edges of spans, and runs of more than `max_empty` empty
/// buckets inside them; drops empty spans; merges spans that touch or, with `max_empty > 0`,
/// are at most `max_empty` buckets apart (filling the gap with empty buckets).
fn compact_buckets(buckets: &mut Vec<f64>, spans: &mut Vec<Span>, max_empty: usize) {
    let max_empty_i = i64::try_from(max_empty).unwrap_or(i64::MAX);
    let nothing_to_do = !buckets.contains(&0.0)
        && !spans
            .iter()
            .any(|s| i64::from(s.offset) <= max_empty_i || s.length == 0);
    if nothing_to_do {
        return;
    }

    // Fold spans that directly follow the previous one into it.
    if spans.len() > 1 {
        let mut i_span = 0;
        for i in 1..spans.len() {
            let span = spans[i];
            if span.offset == 0 {
                spans[i_span].length += span.length;
                continue;
            }
            i_span += 1;
            spans[i_span] = span;
        }
        spans.truncate(i_span + 1);
    }
    // Drop spans without buckets, passing their offset on to the next span.
    let mut i_span = 0;
    for i in 0..spans.len() {
        let span = spans[i];
        if span.length == 0 {
            if i + 1 < spans.len() {
                spans[i + 1].offset = spans[i + 1].offset.wrapping_add(span.offset);
            }
            continue;
        }
        spans[i_span] = span;
        i_span += 1;
    }
    spans.truncate(i_span);
    if spans.is_empty() {
        buckets.clear();
        return;
    }

    let mut i_bucket = 0usize;
    let mut i_span = 0usize;
    let mut pos_in_span: u32 = 0;
    while i_bucket < buckets.len() && i_span < spans.len() {
        // How many empty buckets start here, within the current span.
        let mut n_empty = 0usize;
        let mut current = buckets[i_bucket];
        while (n_empty as u64 + u64::from(pos_in_span)) < u64::from(spans[i_span].length) && current == 0.0 {
            n_empty += 1;
            if n_empty + i_bucket >= buckets.len() {
                break;
            }
            current = buckets[n_empty + i_bucket];
        }
        if n_empty > 0 {
            let left_in_span = (spans[i_span].length - pos_in_span) as usize;
            if pos_in_span > 0 && n_empty < left_in_span && n_empty <= max_empty {
                i_bucket += n_empty;
                pos_in_span += n_empty as u32;
                continue;
            }
            buckets.drain(i_bucket..i_bucket + n_empty);
            if pos_in_span == 0 {
                if n_empty == spans[i_span].length as usize {
                    let offset = spans[i_span].offset;
                    spans.remove(i_span);
                    if spans.len() > i_span {
                        spans[i_span].offset = spans[i_span].offset.wrapping_add(offset).wrapping_add(n_empty as i32);
                    }
                    continue;
                }
                spans[i_span].length -= n_empty as u32;
                spans[i_span].offset = spans[i_span].offset.wrapping_add(n_empty as i32);
                continue;
            }
            let new_span = Span {
                offset: n_empty as i32,
                length: spans[i_span].length - pos_in_span - n_empty as u32,
            };
            spans[i_span].length = pos_in_span;
            i_span += 1;
            pos_in_span = 0;
            if new_span.length == 0 {
                if i_span < spans.len() {
                    spans[i_span].offset = spans[i_span].offset.wrapping_add(n_empty as i32);
                }
                continue;
            }
            spans.insert(i_span, new_span);
            continue;
        }
        i_bucket += 1;
        pos_in_span += 1;
        if pos_in_span >= spans[i_span].length {
            pos_in_span = 0;
            i_span += 1;
        }
    }
    if max_empty == 0 || buckets.is_empty() {
        return;
    }

    // Merge spans separated by few enough empty buckets.
    let mut i_bucket = spans[0].length as usize;
    let mut i_span = 1;
    while i_span < spans.len() {
        let offset = spans[i_span].offset;
        if i64::from(offset) > max_empty_i || offset < 0 {
            i_bucket += spans[i_span].length as usize;
            i_span += 1;
            continue;
        }
        let offset = offset as usize;
        let length = spans[i_span].length as usize;
        spans[i_span - 1].length += offset as u32 + spans[i_span].length;
        spans.remove(i_span);
        let at = i_bucket.min(buckets.len());
        buckets.splice(at..at, std::iter::repeat_n(0.0, offset));
        i_bucket += offset + length;
    }
}

/// Adds (or, with `negative`, subtracts) the buckets of B into those of A, creating the
/// buckets A lacks. With an exponential schema, B's leading buckets that end at or below
/// `threshold` (the zero bucket's width) are left out.
///
/// With `compensation_a`, Prometheus' `kahanAddBuckets`: A's Kahan compensation terms (in
/// A's layout, kept in it) and B's (`compensation_b`), if it has any; each bucket of B (then
/// its compensation) is added with a compensated step.
#[allow(clippy::too_many_arguments)]
fn add_buckets(
    schema: i32,
    threshold: f64,
    negative: bool,
    spans_a: &mut Vec<Span>,
    buckets_a: &mut Vec<f64>,
    spans_b: &[Span],
    buckets_b: &[f64],
    mut compensation_a: Option<&mut Vec<f64>>,
    compensation_b: Option<&[f64]>,
) -> Result<(), HistogramError> {
    // Adds `b` (and its compensation `cb`) to A's bucket `i`; false when there is none.
    let add_at = |buckets_a: &mut Vec<f64>, compensation: Option<&mut Vec<f64>>, i: usize, b: f64, cb: f64| {
        let Some(a) = buckets_a.get_mut(i) else {
            return false;
        };
        match compensation {
            Some(ca) => {
                let Some(c) = ca.get_mut(i) else {
                    return false;
                };
                (*a, *c) = kahan_inc(b, *a, *c);
                if cb != 0.0 {
                    (*a, *c) = kahan_inc(cb, *a, *c);
                }
            }
            None => *a += b,
        }
        true
    };
    // Inserts `b` (and its compensation `cb`) as A's bucket `i`.
    let insert_at = |buckets_a: &mut Vec<f64>, compensation: Option<&mut Vec<f64>>, i: usize, b: f64, cb: f64| {
        buckets_a.insert(i, b);
        if let Some(ca) = compensation {
            let at = i.min(ca.len());
            ca.insert(at, cb);
        }
    };
    let bad_layout = || {
        HistogramError::InvalidLayout(format!(
            "spans need more buckets than provided: {ERR_SPANS_BUCKETS_MISMATCH}"
        ))
    };
    let mut i_span: isize = -1;
    let mut i_bucket: isize = -1;
    let mut i_in_span: i64 = 0;
    let mut index_a: i32 = 0;
    let mut index_b: i32 = 0;
    let mut b_idx_b = 0usize;
    let mut lower_than_threshold = true;
    for span_b in spans_b {
        index_b = index_b.wrapping_add(span_b.offset);
        for _ in 0..span_b.length {
            'bucket: {
                if lower_than_threshold
                    && is_exponential_schema(schema)
                    && bound_exponential(index_b, schema) <= threshold
                {
                    break 'bucket;
                }
                lower_than_threshold = false;
                let mut bucket_b = *buckets_b.get(b_idx_b).ok_or_else(bad_layout)?;
                let mut bucket_compensation_b = compensation_b.and_then(|cb| cb.get(b_idx_b).copied()).unwrap_or(0.0);
                if negative {
                    bucket_b *= -1.0;
                    bucket_compensation_b *= -1.0;
                }
                if i_span == -1 {
                    if spans_a.is_empty() || spans_a[0].offset > index_b {
                        // The new bucket comes before all of A's.
                        insert_at(
                            buckets_a,
                            compensation_a.as_deref_mut(),
                            0,
                            bucket_b,
                            bucket_compensation_b,
                        );
                        if !spans_a.is_empty() && spans_a[0].offset == index_b.wrapping_add(1) {
                            spans_a[0].length += 1;
                            spans_a[0].offset -= 1;
                            break 'bucket;
                        }
                        spans_a.insert(
                            0,
                            Span {
                                offset: index_b,
                                length: 1,
                            },
                        );
                        if spans_a.len() > 1 {
                            spans_a[1].offset = spans_a[1].offset.wrapping_sub(index_b.wrapping_add(1));
                        }
                        break 'bucket;
                    } else if spans_a[0].offset == index_b {
                        if !add_at(
                            buckets_a,
                            compensation_a.as_deref_mut(),
                            0,
                            bucket_b,
                            bucket_compensation_b,
                        ) {
                            return Err(bad_layout());
                        }
                        break 'bucket;
                    }
                    i_span = 0;
                    i_bucket = 0;
                    i_in_span = 0;
                    index_a = spans_a[0].offset;
                }
                let mut delta_index = i64::from(index_b) - i64::from(index_a);
                loop {
                    let remaining_in_span = i64::from(spans_a[i_span as usize].length) - i_in_span;
                    if delta_index < remaining_in_span {
                        // The bucket is in the current span.
                        i_bucket += delta_index as isize;
                        i_in_span += delta_index;
                        if !add_at(
                            buckets_a,
                            compensation_a.as_deref_mut(),
                            i_bucket as usize,
                            bucket_b,
                            bucket_compensation_b,
                        ) {
                            return Err(bad_layout());
                        }
                        break;
                    }
                    delta_index -= remaining_in_span;
                    i_bucket += remaining_in_span as isize;
                    i_span += 1;
                    let next = i_span as usize;
                    if next == spans_a.len() || delta_index < i64::from(spans_a[next].offset) {
                        // The bucket is in the gap after the previous span (or after all).
                        if i_bucket as usize > buckets_a.len() {
                            return Err(bad_layout());
                        }
                        insert_at(
                            buckets_a,
                            compensation_a.as_deref_mut(),
                            i_bucket as usize,
                            bucket_b,
                            bucket_compensation_b,
                        );
                        if delta_index == 0 {
                            // Right after the previous span: extend it.
                            if next < spans_a.len() {
                                spans_a[next].offset -= 1;
                            }
                            i_span -= 1;
                            let prev = i_span as usize;
                            i_in_span = i64::from(spans_a[prev].length);
                            spans_a[prev].length += 1;
                        } else if next < spans_a.len() && delta_index == i64::from(spans_a[next].offset) - 1 {
                            // Right before the next span: extend that one.
                            i_in_span = 0;
                            spans_a[next].offset -= 1;
                            spans_a[next].length += 1;
                        } else {
                            // Somewhere in between: a span of its own.
                            i_in_span = 0;
                            if next < spans_a.len() {
                                spans_a[next].offset = spans_a[next].offset.wrapping_sub((delta_index + 1) as i32);
                            }
                            spans_a.insert(
                                next,
                                Span {
                                    offset: delta_index as i32,
                                    length: 1,
                                },
                            );
                        }
                        break 'bucket;
                    }
                    // Try the start of the next span.
                    delta_index -= i64::from(spans_a[next].offset);
                    i_in_span = 0;
                }
            }
            index_a = index_b;
            index_b = index_b.wrapping_add(1);
            b_idx_b += 1;
        }
    }
    Ok(())
}

/// Drops the buckets that are empty together with their compensation terms and rebuilds
/// the spans around the others (Prometheus' `kahanCompact` with no empty buckets kept).
fn compact_compensated(spans: &mut Vec<Span>, buckets: &mut Vec<f64>, terms: &mut Vec<f64>) {
    let mut kept: Vec<(i32, f64, f64)> = Vec::with_capacity(buckets.len());
    let mut index: i32 = 0;
    let mut i = 0;
    for (n, span) in spans.iter().enumerate() {
        index = if n == 0 {
            span.offset
        } else {
            index.wrapping_add(span.offset)
        };
        for _ in 0..span.length {
            let (Some(&b), c) = (buckets.get(i), terms.get(i).copied().unwrap_or(0.0)) else {
                break;
            };
            if b != 0.0 || c != 0.0 {
                kept.push((index, b, c));
            }
            index = index.wrapping_add(1);
            i += 1;
        }
    }
    spans.clear();
    buckets.clear();
    terms.clear();
    let mut last: Option<i32> = None;
    for (index, b, c) in kept {
        match (last, spans.last_mut()) {
            (Some(l), Some(span)) if index == l.wrapping_add(1) => span.length += 1,
            (Some(l), _) => spans.push(Span {
                offset: index.wrapping_sub(l).wrapping_sub(1),
                length: 1,
            }),
            (None, _) => spans.push(Span {
                offset: index,
                length: 1,
            }),
        }
        buckets.push(b);
        terms.push(c);
        last = Some(index);
    }
}

/// A compensated sum finished: the sum with its compensation terms added in, as Prometheus
/// adds them (`Add`) when a sum, `avg` or `*_over_time` is done.
pub fn compensated(sum: FloatHistogram, terms: Option<&FloatHistogram>) -> FloatHistogram {
    match terms {
        Some(c) => sum.add(c).unwrap_or(sum),
        None => sum,
    }
}

/// A sum or mean of native histograms folded as Prometheus 3 folds them in `sum`, `avg`,
/// `sum_over_time` and `avg_over_time`: with compensated steps
/// ([`FloatHistogram::kahan_add`]), and for a mean, the sum divided at the end as long as it
/// does not overflow, an incremental mean from the step that would make it overflow on.
#[derive(Clone, Debug)]
pub struct CompensatedSum {
    sum: FloatHistogram,
    /// The compensation terms of `sum` (or of `mean`, once there is one).
    terms: Option<FloatHistogram>,
    /// The incremental mean, once the sum would have overflowed.
    mean: Option<FloatHistogram>,
    count: f64,
}

impl CompensatedSum {
    pub fn new(first: &FloatHistogram) -> Self {
        CompensatedSum {
            sum: first.clone(),
            terms: None,
            mean: None,
            count: 1.0,
        }
    }

    /// Adds `h` to a sum. On error (exponential and custom buckets) the sum is unchanged.
    pub fn add(&mut self, h: &FloatHistogram) -> Result<ArithmeticInfo, HistogramError> {
        let (sum, terms, info) = self.sum.kahan_add(h, self.terms.as_ref())?;
        (self.sum, self.terms) = (sum, Some(terms));
        self.count += 1.0;
        Ok(info)
    }

    /// Adds `h` to a mean.
    pub fn add_to_mean(&mut self, h: &FloatHistogram) -> Result<ArithmeticInfo, HistogramError> {
        self.count += 1.0;
        let count = self.count;
        if self.mean.is_none() {
            let (sum, terms, info) = self.sum.kahan_add(h, self.terms.as_ref())?;
            if !sum.has_overflow() {
                (self.sum, self.terms) = (sum, Some(terms));
                return Ok(info);
            }
            let mut mean = self.sum.clone();
            mean.div(count - 1.0);
            if let Some(terms) = &mut self.terms {
                terms.div(count - 1.0);
            }
            self.mean = Some(mean);
        }
        let q = (count - 1.0) / count;
        if let Some(terms) = &mut self.terms {
            terms.mul(q);
        }
        let mut to_add = h.clone();
        to_add.div(count);
        let mean = self.mean.as_mut().expect("set above");
        mean.mul(q);
        let (new_mean, terms, info) = mean.kahan_add(&to_add, self.terms.as_ref())?;
        (*mean, self.terms) = (new_mean, Some(terms));
        Ok(info)
    }

    /// The sum, its compensation added in.
    pub fn sum(self) -> FloatHistogram {
        compensated(self.sum, self.terms.as_ref())
    }

    /// The mean, its compensation added in.
    pub fn mean(self) -> FloatHistogram {
        if let Some(mean) = self.mean {
            return compensated(mean, self.terms.as_ref());
        }
        let mut sum = self.sum;
        sum.div(self.count);
        let terms = self.terms.map(|mut terms| {
            terms.div(self.count);
            terms
        });
        compensated(sum, terms.as_ref())
    }
}

/// The custom bounds two histograms have in common.
fn intersect_custom_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Adds (or subtracts) two custom-bucket sides with different bounds after mapping both onto
/// the common bounds (each bucket goes to the first common bound at or above its own upper
/// bound). Buckets that end up empty (with no pending compensation) are left out. With
/// `compensation_a` (A's Kahan compensation terms), those are added in after each bucket of A,
/// as Prometheus' KahanAdd does; the compensation terms of the result come last.
fn add_custom_buckets_with_mismatches(
    negative: bool,
    a: &FloatHistogram,
    b: &FloatHistogram,
    common: &[f64],
    compensation_a: Option<&[f64]>,
) -> CompensatedBuckets {
    let mut target = vec![0.0; common.len() + 1];
    let mut compensation = vec![0.0; common.len() + 1];
    let mut map = |spans: &[Span], buckets: &[f64], bounds: &[f64], negative: bool, extra: Option<&[f64]>| {
        let mut src_idx: i64 = 0;
        let mut bucket_idx = 0usize;
        let mut common_idx = 0usize;
        for span in spans {
            src_idx += i64::from(span.offset);
            for _ in 0..span.length {
                if let Some(&value) = buckets.get(bucket_idx) {
                    let mut t = target.len() - 1;
                    if (0..bounds.len() as i64).contains(&src_idx) {
                        let src_bound = bounds[src_idx as usize];
                        while common_idx < common.len() {
                            if common[common_idx] >= src_bound {
                                t = common_idx;
                                break;
                            }
                            common_idx += 1;
                        }
                    }
                    let inc = if negative { -value } else { value };
                    (target[t], compensation[t]) = kahan_inc(inc, target[t], compensation[t]);
                    if let Some(&c) = extra.and_then(|e| e.get(bucket_idx)).filter(|_| !negative) {
                        (target[t], compensation[t]) = kahan_inc(c, target[t], compensation[t]);
                    }
                }
                src_idx += 1;
                bucket_idx += 1;
            }
        }
    };
    map(
        &a.positive_spans,
        &a.positive_buckets,
        &a.custom_values,
        false,
        compensation_a,
    );
    map(&b.positive_spans, &b.positive_buckets, &b.custom_values, negative, None);

    let mut spans: Vec<Span> = Vec::new();
    let mut buckets = Vec::new();
    let mut compensations = Vec::new();
    let mut last_idx: i32 = -1;
    for (i, (&value, &comp)) in target.iter().zip(&compensation).enumerate() {
        if value == 0.0 && comp == 0.0 {
            continue;
        }
        buckets.push(value);
        compensations.push(comp);
        let idx = i as i32;
        match spans.last_mut() {
            Some(last) if idx == last_idx + 1 => last.length += 1,
            Some(_) => spans.push(Span {
                offset: idx - last_idx - 1,
                length: 1,
            }),
            None => spans.push(Span { offset: idx, length: 1 }),
        }
        last_idx = idx;
    }
    (spans, buckets, compensations)
}

// ---------------------------------------------------------------------------------------
// Histogram arithmetic.
// ---------------------------------------------------------------------------------------

impl FloatHistogram {
    /// A copy as Prometheus copies histograms: custom-bucket histograms lose the fields
    /// they do not use (zero bucket, negative buckets).
    fn prometheus_copy(&self) -> FloatHistogram {
        let mut c = self.clone();
        if self.uses_custom_buckets() {
            c.zero_threshold = 0.0;
            c.zero_count = 0.0;
            c.negative_spans.clear();
            c.negative_buckets.clear();
        } else {
            c.custom_values.clear();
        }
        c
    }

    /// A copy reduced to the lower (or equal) exponential `target` schema.
    fn copy_to_schema(&self, target: i32) -> Result<FloatHistogram, HistogramError> {
        if target == self.schema {
            return Ok(self.prometheus_copy());
        }
        let (positive_spans, positive_buckets) =
            reduce_resolution_buckets(&self.positive_spans, &self.positive_buckets, self.schema, target)?;
        let (negative_spans, negative_buckets) =
            reduce_resolution_buckets(&self.negative_spans, &self.negative_buckets, self.schema, target)?;
        Ok(FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: target,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            count: self.count,
            sum: self.sum,
            positive_spans,
            negative_spans,
            positive_buckets,
            negative_buckets,
            custom_values: Vec::new(),
        })
    }

    /// Whether both histograms are the same, bit for bit in their counts and sum, whatever their
    /// counter reset hints and however their empty spans are laid out (Prometheus' `Equals`).
    pub fn equals(&self, other: &FloatHistogram) -> bool {
        fn same_floats(a: &[f64], b: &[f64]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        }
        self.schema == other.schema
            && self.count.to_bits() == other.count.to_bits()
            && self.sum.to_bits() == other.sum.to_bits()
            && (self.schema != CUSTOM_BUCKETS_SCHEMA || self.custom_values == other.custom_values)
            && self.zero_threshold == other.zero_threshold
            && self.zero_count.to_bits() == other.zero_count.to_bits()
            && spans_match(&self.negative_spans, &other.negative_spans)
            && same_floats(&self.negative_buckets, &other.negative_buckets)
            && spans_match(&self.positive_spans, &other.positive_spans)
            && same_floats(&self.positive_buckets, &other.positive_buckets)
    }

    /// Multiplies all counts and the sum by `factor`; a negative factor makes the histogram a
    /// gauge histogram.
    pub fn mul(&mut self, factor: f64) {
        self.zero_count *= factor;
        self.count *= factor;
        self.sum *= factor;
        self.positive_buckets.iter_mut().for_each(|b| *b *= factor);
        self.negative_buckets.iter_mut().for_each(|b| *b *= factor);
        if factor < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    /// Divides all counts and the sum by `scalar`. Dividing by zero keeps only the (now
    /// infinite or NaN) count, sum and zero count and removes all buckets; a negative scalar
    /// makes the histogram a gauge histogram.
    pub fn div(&mut self, scalar: f64) {
        self.zero_count /= scalar;
        self.count /= scalar;
        self.sum /= scalar;
        if scalar == 0.0 {
            self.positive_buckets.clear();
            self.negative_buckets.clear();
            self.positive_spans.clear();
            self.negative_spans.clear();
            return;
        }
        self.positive_buckets.iter_mut().for_each(|b| *b /= scalar);
        self.negative_buckets.iter_mut().for_each(|b| *b /= scalar);
        if scalar < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    /// Normalises the bucket layout as Prometheus' `Compact`: no empty buckets at the edges of
    /// spans, no runs of more than `max_empty_buckets` empty buckets inside a span, no empty
    /// spans, and spans at most `max_empty_buckets` apart merged. Bucket values stay as they
    /// are.
    pub fn compact(&mut self, max_empty_buckets: usize) {
        compact_buckets(&mut self.positive_buckets, &mut self.positive_spans, max_empty_buckets);
        compact_buckets(&mut self.negative_buckets, &mut self.negative_spans, max_empty_buckets);
    }

    /// Reduces the resolution to the exponential `target_schema`, merging buckets. Does
    /// nothing where Prometheus refuses: for custom buckets, a custom target, a target not
    /// below the current schema, or spans that do not fit the buckets (see
    /// [`FloatHistogram::try_reduce_resolution`] for the reason).
    pub fn reduce_resolution(&mut self, target_schema: i32) {
        let _ = self.try_reduce_resolution(target_schema);
    }

    /// [`FloatHistogram::reduce_resolution`], saying why nothing was done. On error the
    /// histogram is unchanged.
    pub fn try_reduce_resolution(&mut self, target_schema: i32) -> Result<(), HistogramError> {
        if self.uses_custom_buckets() {
            return Err(HistogramError::InvalidLayout(
                "cannot reduce resolution when there are custom buckets".to_owned(),
            ));
        }
        if target_schema == CUSTOM_BUCKETS_SCHEMA {
            return Err(HistogramError::InvalidLayout(
                "cannot reduce resolution to custom buckets schema".to_owned(),
            ));
        }
        if target_schema >= self.schema {
            return Err(HistogramError::InvalidLayout(format!(
                "cannot reduce resolution from schema {} to {}",
                self.schema, target_schema
            )));
        }
        let positive =
            reduce_resolution_buckets(&self.positive_spans, &self.positive_buckets, self.schema, target_schema)?;
        let negative =
            reduce_resolution_buckets(&self.negative_spans, &self.negative_buckets, self.schema, target_schema)?;
        (self.positive_spans, self.positive_buckets) = positive;
        (self.negative_spans, self.negative_buckets) = negative;
        self.schema = target_schema;
        Ok(())
    }

    /// The zero count this histogram would have with the (larger or equal) zero threshold
    /// `larger`, and the threshold actually needed: if `larger` falls inside a populated
    /// bucket, it grows to that bucket's outer bound and the bucket is counted in.
    fn zero_count_for_larger_threshold(&self, mut larger: f64) -> (f64, f64) {
        if larger == self.zero_threshold {
            return (self.zero_count, larger);
        }
        'outer: loop {
            let mut zero_count = self.zero_count;
            let mut it = ForwardIter::new(self, true, 0.0, self.schema);
            while it.advance() {
                let b = it.at();
                if b.lower >= larger {
                    break;
                }
                zero_count += b.count;
                if b.upper > larger {
                    if b.count != 0.0 {
                        larger = b.upper;
                    }
                    break;
                }
            }
            let mut it = ForwardIter::new(self, false, 0.0, self.schema);
            while it.advance() {
                let b = it.at();
                if b.upper <= -larger {
                    break;
                }
                zero_count += b.count;
                if b.lower < -larger {
                    if b.count != 0.0 {
                        larger = -b.lower;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (zero_count, larger);
        }
    }

    /// Empties the buckets inside the zero bucket (their counts are already part of the zero
    /// count) and compacts.
    fn trim_buckets_in_zero_bucket(&mut self) {
        let zt = self.zero_threshold;
        let mut positive = 0;
        let mut it = ForwardIter::new(self, true, 0.0, self.schema);
        while it.advance() && it.at().lower < zt {
            positive += 1;
        }
        let mut negative = 0;
        let mut it = ForwardIter::new(self, false, 0.0, self.schema);
        while it.advance() && it.at().upper > -zt {
            negative += 1;
        }
        self.positive_buckets.iter_mut().take(positive).for_each(|b| *b = 0.0);
        self.negative_buckets.iter_mut().take(negative).for_each(|b| *b = 0.0);
        self.compact(0);
    }

    /// Widens this histogram's or the other's zero bucket until both have the same threshold,
    /// one that does not cut through a populated bucket of either. Changes only `self`;
    /// returns the zero count `other` would have.
    fn reconcile_zero_buckets(&mut self, other: &FloatHistogram) -> f64 {
        let mut other_zero_count = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        while other_threshold != self.zero_threshold {
            if other_threshold.is_nan() || self.zero_threshold.is_nan() {
                // Prometheus would loop for ever here.
                break;
            }
            if self.zero_threshold > other_threshold {
                (other_zero_count, other_threshold) = other.zero_count_for_larger_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                (self.zero_count, self.zero_threshold) = self.zero_count_for_larger_threshold(other_threshold);
                self.trim_buckets_in_zero_bucket();
            }
        }
        other_zero_count
    }

    /// Combines the counter reset hints of two operands; true on a reset/no-reset collision.
    fn adjust_counter_reset(&mut self, other: &FloatHistogram) -> bool {
        use CounterResetHint::*;
        match (self.counter_reset_hint, other.counter_reset_hint) {
            (a, b) if a == b => false,
            (Gauge, _) => false,
            (_, Gauge) => {
                self.counter_reset_hint = Gauge;
                false
            }
            (Unknown, _) => false,
            (_, Unknown) => {
                self.counter_reset_hint = Unknown;
                false
            }
            _ => {
                self.counter_reset_hint = Unknown;
                true
            }
        }
    }

    fn add_or_sub(
        &self,
        other: &FloatHistogram,
        negative: bool,
    ) -> Result<(FloatHistogram, ArithmeticInfo), HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        if other.schema != self.schema {
            let to_reduce = if other.schema < self.schema { self } else { other };
            check_spans(&to_reduce.positive_spans, to_reduce.positive_buckets.len())?;
            check_spans(&to_reduce.negative_spans, to_reduce.negative_buckets.len())?;
        }
        let mut h = self.clone();
        let mut info = ArithmeticInfo {
            counter_reset_collision: h.adjust_counter_reset(other),
            ..Default::default()
        };
        if !h.uses_custom_buckets() {
            let other_zero_count = h.reconcile_zero_buckets(other);
            if negative {
                h.zero_count -= other_zero_count;
            } else {
                h.zero_count += other_zero_count;
            }
        }
        if negative {
            h.count -= other.count;
            h.sum -= other.sum;
        } else {
            h.count += other.count;
            h.sum += other.sum;
        }

        if h.uses_custom_buckets() {
            if h.custom_values == other.custom_values {
                add_buckets(
                    h.schema,
                    h.zero_threshold,
                    negative,
                    &mut h.positive_spans,
                    &mut h.positive_buckets,
                    &other.positive_spans,
                    &other.positive_buckets,
                    None,
                    None,
                )?;
            } else {
                info.custom_bounds_reconciled = true;
                let common = intersect_custom_bounds(&h.custom_values, &other.custom_values);
                (h.positive_spans, h.positive_buckets, _) =
                    add_custom_buckets_with_mismatches(negative, &h, other, &common, None);
                h.custom_values = common;
            }
            return Ok((h, info));
        }

        let reduced_other;
        let other = if other.schema < h.schema {
            (h.positive_spans, h.positive_buckets) =
                reduce_resolution_buckets(&h.positive_spans, &h.positive_buckets, h.schema, other.schema)?;
            (h.negative_spans, h.negative_buckets) =
                reduce_resolution_buckets(&h.negative_spans, &h.negative_buckets, h.schema, other.schema)?;
            h.schema = other.schema;
            other
        } else if other.schema > h.schema {
            reduced_other = other.copy_to_schema(h.schema)?;
            &reduced_other
        } else {
            other
        };
        add_buckets(
            h.schema,
            h.zero_threshold,
            negative,
            &mut h.positive_spans,
            &mut h.positive_buckets,
            &other.positive_spans,
            &other.positive_buckets,
            None,
            None,
        )?;
        add_buckets(
            h.schema,
            h.zero_threshold,
            negative,
            &mut h.negative_spans,
            &mut h.negative_buckets,
            &other.negative_spans,
            &other.negative_buckets,
            None,
            None,
        )?;
        Ok((h, info))
    }

    /// `self + other`, as Prometheus' `FloatHistogram.Add`: the higher-resolution operand is
    /// reduced to the lower schema, the narrower zero bucket widened to the wider one, missing
    /// buckets created; custom-bucket histograms with different bounds are added on the bounds
    /// they share. The result is not compacted (call [`FloatHistogram::compact`]).
    pub fn add(&self, other: &FloatHistogram) -> Result<FloatHistogram, HistogramError> {
        self.add_detailed(other).map(|(h, _)| h)
    }

    /// [`FloatHistogram::add`], also reporting a counter-reset-hint collision and whether
    /// custom bounds had to be reconciled.
    pub fn add_detailed(&self, other: &FloatHistogram) -> Result<(FloatHistogram, ArithmeticInfo), HistogramError> {
        self.add_or_sub(other, false)
    }

    /// `self - other`, as Prometheus' `FloatHistogram.Sub` (see [`FloatHistogram::add`]). Like
    /// Prometheus' method it combines the counter reset hints as an addition does; PromQL's
    /// `-` operator makes the result a gauge histogram afterwards.
    pub fn sub(&self, other: &FloatHistogram) -> Result<FloatHistogram, HistogramError> {
        self.sub_detailed(other).map(|(h, _)| h)
    }

    /// [`FloatHistogram::sub`], also reporting what [`FloatHistogram::add_detailed`] reports.
    pub fn sub_detailed(&self, other: &FloatHistogram) -> Result<(FloatHistogram, ArithmeticInfo), HistogramError> {
        self.add_or_sub(other, true)
    }

    /// Whether a count, the sum, a bucket or a custom bound is infinite (Prometheus'
    /// `HasOverflow`).
    pub fn has_overflow(&self) -> bool {
        [self.zero_count, self.count, self.sum]
            .iter()
            .chain(&self.positive_buckets)
            .chain(&self.negative_buckets)
            .chain(&self.custom_values)
            .any(|v| v.is_infinite())
    }

    /// The Kahan compensation terms of a sum starting at this histogram: its layout, every
    /// term 0 (Prometheus' `newCompensationHistogram`).
    fn compensation_for(&self) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: 0.0,
            count: 0.0,
            sum: 0.0,
            positive_spans: self.positive_spans.clone(),
            negative_spans: self.negative_spans.clone(),
            positive_buckets: vec![0.0; self.positive_buckets.len()],
            negative_buckets: if self.uses_custom_buckets() {
                Vec::new()
            } else {
                vec![0.0; self.negative_buckets.len()]
            },
            custom_values: self.custom_values.clone(),
        }
    }

    /// [`FloatHistogram::zero_count_for_larger_threshold`] summed with compensated steps, the
    /// compensation terms `c` of the buckets (in this histogram's layout) included: the zero
    /// count, the threshold and the zero count's compensation term.
    fn zero_count_for_larger_threshold_compensated(
        &self,
        mut larger: f64,
        c: Option<&FloatHistogram>,
    ) -> (f64, f64, f64) {
        let c_zero = c.map_or(0.0, |c| c.zero_count);
        if larger == self.zero_threshold {
            return (self.zero_count, larger, c_zero);
        }
        let term = |buckets: Option<&Vec<f64>>, i: usize| buckets.and_then(|b| b.get(i).copied()).unwrap_or(0.0);
        'outer: loop {
            let (mut zero_count, mut zero_c) = (self.zero_count, c_zero);
            let mut it = ForwardIter::new(self, true, 0.0, self.schema);
            let mut i = 0;
            while it.advance() {
                let b = it.at();
                if b.lower >= larger {
                    break;
                }
                (zero_count, zero_c) = kahan_inc(b.count, zero_count, zero_c);
                if c.is_some() {
                    (zero_count, zero_c) = kahan_inc(term(c.map(|c| &c.positive_buckets), i), zero_count, zero_c);
                }
                if b.upper > larger {
                    if b.count != 0.0 {
                        larger = b.upper;
                    }
                    break;
                }
                i += 1;
            }
            let mut it = ForwardIter::new(self, false, 0.0, self.schema);
            let mut i = 0;
            while it.advance() {
                let b = it.at();
                if b.upper <= -larger {
                    break;
                }
                (zero_count, zero_c) = kahan_inc(b.count, zero_count, zero_c);
                if c.is_some() {
                    (zero_count, zero_c) = kahan_inc(term(c.map(|c| &c.negative_buckets), i), zero_count, zero_c);
                }
                if b.lower < -larger {
                    if b.count != 0.0 {
                        larger = -b.lower;
                        continue 'outer;
                    }
                    break;
                }
                i += 1;
            }
            return (zero_count, larger, zero_c);
        }
    }

    /// [`FloatHistogram::reconcile_zero_buckets`] for a compensated sum: `c` (the compensation
    /// terms, in this histogram's layout) follows this histogram's changes. Returns the zero
    /// count `other` would have and its compensation term.
    fn reconcile_zero_buckets_compensated(&mut self, other: &FloatHistogram, c: &mut FloatHistogram) -> (f64, f64) {
        let (mut other_zero_count, mut other_c) = (other.zero_count, 0.0);
        let mut other_threshold = other.zero_threshold;
        while other_threshold != self.zero_threshold {
            if other_threshold.is_nan() || self.zero_threshold.is_nan() {
                break;
            }
            if self.zero_threshold > other_threshold {
                (other_zero_count, other_threshold, other_c) =
                    other.zero_count_for_larger_threshold_compensated(self.zero_threshold, None);
            }
            if other_threshold > self.zero_threshold {
                let (zero_count, threshold, c_zero) =
                    self.zero_count_for_larger_threshold_compensated(other_threshold, Some(c));
                (self.zero_count, self.zero_threshold, c.zero_count) = (zero_count, threshold, c_zero);
                // Empty the buckets now inside the zero bucket, and their terms, and drop them.
                let zt = self.zero_threshold;
                let mut positive = 0;
                let mut it = ForwardIter::new(self, true, 0.0, self.schema);
                while it.advance() && it.at().lower < zt {
                    positive += 1;
                }
                let mut negative = 0;
                let mut it = ForwardIter::new(self, false, 0.0, self.schema);
                while it.advance() && it.at().upper > -zt {
                    negative += 1;
                }
                self.positive_buckets.iter_mut().take(positive).for_each(|b| *b = 0.0);
                self.negative_buckets.iter_mut().take(negative).for_each(|b| *b = 0.0);
                c.positive_buckets.iter_mut().take(positive).for_each(|b| *b = 0.0);
                c.negative_buckets.iter_mut().take(negative).for_each(|b| *b = 0.0);
                compact_compensated(
                    &mut self.positive_spans,
                    &mut self.positive_buckets,
                    &mut c.positive_buckets,
                );
                compact_compensated(
                    &mut self.negative_spans,
                    &mut self.negative_buckets,
                    &mut c.negative_buckets,
                );
            }
        }
        (other_zero_count, other_c)
    }

    /// `self + other` with compensated (Kahan-Neumaier) steps, as Prometheus'
    /// `FloatHistogram.KahanAdd`: `c` holds the compensation terms of `self` (none at the start
    /// of a sum), and the sum comes with the new terms, in its own layout. What
    /// [`FloatHistogram::add_detailed`] reports, too. The sum is finished by adding the terms
    /// in ([`compensated`]).
    pub fn kahan_add(
        &self,
        other: &FloatHistogram,
        c: Option<&FloatHistogram>,
    ) -> Result<(FloatHistogram, FloatHistogram, ArithmeticInfo), HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        if other.schema != self.schema {
            let to_reduce = if other.schema < self.schema { self } else { other };
            check_spans(&to_reduce.positive_spans, to_reduce.positive_buckets.len())?;
            check_spans(&to_reduce.negative_spans, to_reduce.negative_buckets.len())?;
        }
        let mut h = self.clone();
        let mut c = match c {
            Some(c)
                if c.positive_buckets.len() == h.positive_buckets.len()
                    && c.negative_buckets.len() == h.negative_buckets.len() =>
            {
                c.clone()
            }
            _ => h.compensation_for(),
        };
        let mut info = ArithmeticInfo {
            counter_reset_collision: h.adjust_counter_reset(other),
            ..Default::default()
        };
        if !h.uses_custom_buckets() {
            let (other_zero_count, other_c) = h.reconcile_zero_buckets_compensated(other, &mut c);
            (h.zero_count, c.zero_count) = kahan_inc(other_zero_count, h.zero_count, c.zero_count);
            (h.zero_count, c.zero_count) = kahan_inc(other_c, h.zero_count, c.zero_count);
        }
        (h.count, c.count) = kahan_inc(other.count, h.count, c.count);
        (h.sum, c.sum) = kahan_inc(other.sum, h.sum, c.sum);

        if h.uses_custom_buckets() {
            if h.custom_values == other.custom_values {
                add_buckets(
                    h.schema,
                    h.zero_threshold,
                    false,
                    &mut h.positive_spans,
                    &mut h.positive_buckets,
                    &other.positive_spans,
                    &other.positive_buckets,
                    Some(&mut c.positive_buckets),
                    None,
                )?;
            } else {
                info.custom_bounds_reconciled = true;
                let common = intersect_custom_bounds(&h.custom_values, other.custom_values.as_slice());
                (h.positive_spans, h.positive_buckets, c.positive_buckets) =
                    add_custom_buckets_with_mismatches(false, &h, other, &common, Some(&c.positive_buckets));
                c.custom_values = common.clone();
                h.custom_values = common;
            }
            c.positive_spans = h.positive_spans.clone();
            return Ok((h, c, info));
        }

        // The other's buckets at the lower of the two schemas, with the compensation terms
        // of their merging.
        type Side = (Vec<Span>, Vec<f64>, Option<Vec<f64>>);
        let (other_positive, other_negative): (Side, Side) = if other.schema < h.schema {
            for positive in [true, false] {
                let (spans, buckets, terms) = if positive {
                    (&h.positive_spans, &h.positive_buckets, &c.positive_buckets)
                } else {
                    (&h.negative_spans, &h.negative_buckets, &c.negative_buckets)
                };
                let reduced = reduce_resolution_compensated(spans, buckets, Some(terms), h.schema, other.schema)?;
                if positive {
                    (h.positive_spans, h.positive_buckets, c.positive_buckets) = reduced;
                } else {
                    (h.negative_spans, h.negative_buckets, c.negative_buckets) = reduced;
                }
            }
            h.schema = other.schema;
            (
                (other.positive_spans.clone(), other.positive_buckets.clone(), None),
                (other.negative_spans.clone(), other.negative_buckets.clone(), None),
            )
        } else {
            let side = |spans: &[Span], buckets: &[f64]| -> Result<Side, HistogramError> {
                if other.schema == h.schema || buckets.is_empty() {
                    return Ok((spans.to_vec(), buckets.to_vec(), None));
                }
                let zeros = vec![0.0; buckets.len()];
                let (spans, buckets, terms) =
                    reduce_resolution_compensated(spans, buckets, Some(&zeros), other.schema, h.schema)?;
                Ok((spans, buckets, Some(terms)))
            };
            (
                side(&other.positive_spans, &other.positive_buckets)?,
                side(&other.negative_spans, &other.negative_buckets)?,
            )
        };
        add_buckets(
            h.schema,
            h.zero_threshold,
            false,
            &mut h.positive_spans,
            &mut h.positive_buckets,
            &other_positive.0,
            &other_positive.1,
            Some(&mut c.positive_buckets),
            other_positive.2.as_deref(),
        )?;
        add_buckets(
            h.schema,
            h.zero_threshold,
            false,
            &mut h.negative_spans,
            &mut h.negative_buckets,
            &other_negative.0,
            &other_negative.1,
            Some(&mut c.negative_buckets),
            other_negative.2.as_deref(),
        )?;
        c.schema = h.schema;
        c.zero_threshold = h.zero_threshold;
        c.positive_spans = h.positive_spans.clone();
        c.negative_spans = h.negative_spans.clone();
        Ok((h, c, info))
    }

    /// Whether this histogram, following `previous` in a counter series, starts over: its hint
    /// says so (or says the opposite, then false), or a count went down (total count, zero
    /// count, any bucket, taking a widened zero bucket and a lower resolution into account),
    /// or the resolution went up, the zero bucket shrank or cuts into a populated bucket, or
    /// it switched from exponential to custom buckets. Custom bounds that differ are compared
    /// on the bounds both share.
    pub fn detect_reset(&self, previous: &FloatHistogram) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < previous.count {
            return true;
        }
        if self.uses_custom_buckets() {
            if !previous.uses_custom_buckets() {
                return true;
            }
            if self.custom_values != previous.custom_values {
                return self.detect_reset_with_mismatched_custom_bounds(previous);
            }
        }
        if self.schema > previous.schema {
            return true;
        }
        if self.zero_threshold < previous.zero_threshold {
            return true;
        }
        let (previous_zero_count, new_threshold) = previous.zero_count_for_larger_threshold(self.zero_threshold);
        if new_threshold != self.zero_threshold {
            return true;
        }
        if self.zero_count < previous_zero_count {
            return true;
        }
        for positive in [true, false] {
            let mut curr = ForwardIter::new(self, positive, self.zero_threshold, self.schema);
            let mut prev = ForwardIter::new(previous, positive, self.zero_threshold, self.schema);
            if detect_reset_in_buckets(&mut curr, &mut prev) {
                return true;
            }
        }
        false
    }

    /// Reset detection between custom-bucket histograms with different bounds: at each bound
    /// both have, the counts accumulated since the previous shared bound must not have gone
    /// down.
    fn detect_reset_with_mismatched_custom_bounds(&self, previous: &FloatHistogram) -> bool {
        let curr_bounds = &self.custom_values;
        let prev_bounds = &previous.custom_values;
        let mut curr = ForwardIter::new(self, true, 0.0, CUSTOM_BUCKETS_SCHEMA);
        let mut prev = ForwardIter::new(previous, true, 0.0, CUSTOM_BUCKETS_SCHEMA);
        let mut curr_state = RollupState::default();
        let mut prev_state = RollupState::default();
        let (mut ci, mut pi) = (0usize, 0usize);
        while ci <= curr_bounds.len() && pi <= prev_bounds.len() {
            let curr_bound = curr_bounds.get(ci).copied().unwrap_or(f64::INFINITY);
            let prev_bound = prev_bounds.get(pi).copied().unwrap_or(f64::INFINITY);
            if curr_bound == prev_bound {
                let curr_sum = curr_state.rollup(&mut curr, curr_bound);
                let prev_sum = prev_state.rollup(&mut prev, curr_bound);
                if curr_sum < prev_sum {
                    return true;
                }
                ci += 1;
                pi += 1;
            } else if curr_bound < prev_bound {
                ci += 1;
            } else {
                pi += 1;
            }
        }
        false
    }
}

/// Where a walk over custom buckets stands while counts are summed up to successive bounds.
#[derive(Default)]
struct RollupState {
    started: bool,
    has_more: bool,
    bucket: Option<Bucket>,
}

impl RollupState {
    /// Sums the counts of the not yet counted buckets that end at or below `bound`.
    fn rollup(&mut self, it: &mut ForwardIter<'_>, bound: f64) -> f64 {
        if self.started && !self.has_more {
            return 0.0;
        }
        if !self.started {
            self.started = true;
            if !it.advance() {
                self.has_more = false;
                return 0.0;
            }
            self.bucket = Some(it.at());
        }
        let mut sum = 0.0;
        while let Some(b) = self.bucket.filter(|b| b.upper <= bound) {
            sum += b.count;
            if !it.advance() {
                self.bucket = None;
                self.has_more = false;
                return sum;
            }
            self.bucket = Some(it.at());
        }
        self.has_more = true;
        sum
    }
}

/// Whether any bucket of `prev` is populated and missing from `curr`, or has a higher count
/// than the same bucket in `curr`.
fn detect_reset_in_buckets(curr: &mut ForwardIter<'_>, prev: &mut ForwardIter<'_>) -> bool {
    // True if any of prev's remaining buckets (from the current one) is populated.
    fn rest_populated(prev: &mut ForwardIter<'_>) -> bool {
        loop {
            if prev.curr_count != 0.0 {
                return true;
            }
            if !prev.advance() {
                return false;
            }
        }
    }
    if !prev.advance() {
        return false;
    }
    if !curr.advance() {
        return rest_populated(prev);
    }
    loop {
        while curr.curr_idx < prev.curr_idx {
            if !curr.advance() {
                return rest_populated(prev);
            }
        }
        if curr.curr_idx > prev.curr_idx {
            if prev.curr_count != 0.0 {
                return true;
            }
        } else if curr.curr_count < prev.curr_count {
            return true;
        }
        if !prev.advance() {
            return false;
        }
    }
}

/// The histogram part of `rate`, `increase` and `delta` before extrapolation: the last point
/// minus the first, at the lowest schema among the points. For counters (`is_counter`), the
/// value before each counter reset is added back, and the first point is ignored (taken as
/// empty) if the second one already starts over. The result is a gauge histogram, compacted.
/// Errors where Prometheus returns nothing: exponential and custom buckets mixed (PromQL warns
/// "vector contains a mix of histograms with exponential and custom buckets schemas"), a
/// broken bucket layout, or fewer than two points. The timestamps are not used (Prometheus'
/// start-timestamp handling does not apply to stored histograms without start times).
pub fn histogram_rate(points: &[(i64, &FloatHistogram)], is_counter: bool) -> Result<FloatHistogram, HistogramError> {
    histogram_rate_detailed(points, is_counter).map(|(h, _)| h)
}

/// [`histogram_rate`], also saying whether custom bounds had to be reconciled (Prometheus'
/// info "mismatched custom buckets were reconciled").
pub fn histogram_rate_detailed(
    points: &[(i64, &FloatHistogram)],
    is_counter: bool,
) -> Result<(FloatHistogram, bool), HistogramError> {
    let (Some(&(_, first)), Some(&(_, last))) = (points.first(), points.last()) else {
        return Err(HistogramError::TooFewPoints);
    };
    if points.len() < 2 {
        return Err(HistogramError::TooFewPoints);
    }
    let empty_first;
    let mut prev = first;
    let mut using_custom = prev.uses_custom_buckets();
    if is_counter {
        let second = points[1].1;
        if second.detect_reset(prev) {
            empty_first = FloatHistogram {
                schema: second.schema,
                custom_values: second.custom_values.clone(),
                ..Default::default()
            };
            prev = &empty_first;
            using_custom = second.uses_custom_buckets();
        }
    }
    if last.uses_custom_buckets() != using_custom {
        return Err(HistogramError::IncompatibleSchema);
    }
    let mut min_schema = last.schema.min(prev.schema);
    if is_counter {
        for &(_, curr) in &points[1..points.len() - 1] {
            min_schema = min_schema.min(curr.schema);
            if curr.uses_custom_buckets() != using_custom {
                return Err(HistogramError::IncompatibleSchema);
            }
        }
    }
    let mut reconciled = false;
    let (mut h, info) = last.copy_to_schema(min_schema)?.sub_detailed(prev)?;
    reconciled |= info.custom_bounds_reconciled;
    if is_counter {
        for &(_, curr) in &points[1..] {
            if curr.detect_reset(prev) {
                let (sum, info) = h.add_detailed(prev)?;
                h = sum;
                reconciled |= info.custom_bounds_reconciled;
            }
            prev = curr;
        }
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    h.compact(0);
    Ok((h, reconciled))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;

    fn spans(s: &[(i32, u32)]) -> Vec<Span> {
        s.iter().map(|&(offset, length)| Span { offset, length }).collect()
    }

    /// An exponential histogram; `pos`/`neg` are (spans, buckets).
    #[allow(clippy::type_complexity)]
    fn exp(
        schema: i32,
        zero: (f64, f64),
        count: f64,
        sum: f64,
        pos: (&[(i32, u32)], &[f64]),
        neg: (&[(i32, u32)], &[f64]),
    ) -> FloatHistogram {
        FloatHistogram {
            schema,
            zero_threshold: zero.0,
            zero_count: zero.1,
            count,
            sum,
            positive_spans: spans(pos.0),
            positive_buckets: pos.1.to_vec(),
            negative_spans: spans(neg.0),
            negative_buckets: neg.1.to_vec(),
            ..Default::default()
        }
    }

    /// A histogram with custom bounds `cv`.
    fn nhcb(cv: &[f64], count: f64, sum: f64, ps: &[(i32, u32)], pb: &[f64]) -> FloatHistogram {
        FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count,
            sum,
            positive_spans: spans(ps),
            positive_buckets: pb.to_vec(),
            custom_values: cv.to_vec(),
            ..Default::default()
        }
    }

    /// The notation of Prometheus' test scripts: `buckets:[..]` from index `offset`.
    fn script(schema: i32, count: f64, sum: f64, zero: (f64, f64), pos: &[f64], neg: &[f64]) -> FloatHistogram {
        let p = [(0, pos.len() as u32)];
        let n = [(0, neg.len() as u32)];
        exp(
            schema,
            zero,
            count,
            sum,
            (if pos.is_empty() { &[] } else { &p }, pos),
            (if neg.is_empty() { &[] } else { &n }, neg),
        )
    }

    fn assert_close(got: f64, want: f64) {
        let ok = got == want || (got - want).abs() <= 1e-12 * want.abs().max(1e-300);
        assert!(ok, "got {got:?}, want {want:?}");
    }

    fn same(got: f64, want: f64) {
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "got {got:?}, want {want:?}"
        );
    }

    // --- Bounds --------------------------------------------------------------------------

    /// `2^(j/n) / 2` in double-double (about 100 correct bits), by repeated square roots.
    fn exact_fraction(j: u32, n: u32) -> (f64, f64) {
        fn two_sum(a: f64, b: f64) -> (f64, f64) {
            let s = a + b;
            let bb = s - a;
            (s, (a - (s - bb)) + (b - bb))
        }
        fn mul((ah, al): (f64, f64), (bh, bl): (f64, f64)) -> (f64, f64) {
            let p = ah * bh;
            let e = ah.mul_add(bh, -p) + (ah * bl + al * bh);
            two_sum(p, e)
        }
        fn sqrt((ah, al): (f64, f64)) -> (f64, f64) {
            let s = ah.sqrt();
            let p = s * s;
            let e = s.mul_add(s, -p);
            two_sum(s, (((ah - p) - e) + al) / (2.0 * s))
        }
        let mut root = (2.0, 0.0);
        let mut k = n;
        while k > 1 {
            root = sqrt(root);
            k /= 2;
        }
        let mut v = (0.5, 0.0);
        for _ in 0..j {
            v = mul(v, root);
        }
        v
    }

    #[test]
    fn bound_fractions_are_the_powers_of_two_prometheus_tabulates() {
        for schema in 1..=8 {
            let n = 1u32 << schema;
            let mut previous = 0.0;
            for j in 0..n {
                // Bucket j of schema s ends at 2 × fraction j.
                let x = bucket_bound(j as i32, schema, &[]) / 2.0;
                assert!((0.5..1.0).contains(&x) && x > previous, "schema {schema}, j {j}: {x}");
                previous = x;
                // x^(2^s) = 2^(j - 2^s); raising to the 2^s-th power multiplies the relative
                // error by 2^s, so the tolerance scales with it.
                let power = x.powi(n as i32);
                let target = 2f64.powi(j as i32 - n as i32);
                assert!(
                    ((power - target) / target).abs() <= 1e-15 * f64::from(n),
                    "schema {schema}, j {j}: {x}^{n} = {power}, want {target}"
                );
                // Prometheus' table is not correctly rounded; it is within 4 ulps.
                let (hi, lo) = exact_fraction(j, n);
                let error = ((x - hi) - lo).abs();
                let ulp = f64::from_bits(x.to_bits() + 1) - x;
                assert!(
                    error <= 4.0 * ulp,
                    "schema {schema}, j {j}: {x} is {} ulps off",
                    error / ulp
                );
            }
        }
        // Spot checks against Prometheus' constants (not the correctly rounded √½ = …476).
        same(bucket_bound(1, 1, &[]) / 2.0, 0.7071067811865475);
        same(bucket_bound(3, 2, &[]) / 2.0, 0.8408964152537144);
        same(bucket_bound(101, 8, &[]) / 2.0, 0.6572577939746774);
        same(bucket_bound(255, 8, &[]) / 2.0, 0.9972960560854698);
        // Schema s reuses schema s-1's values at even positions.
        same(bucket_bound(128, 8, &[]), bucket_bound(1, 1, &[]));
    }

    #[test]
    fn bucket_bound_special_cases() {
        same(bucket_bound(3, 0, &[]), 8.0);
        same(bucket_bound(-3, 0, &[]), 0.125);
        same(bucket_bound(1, -2, &[]), 16.0);
        same(bucket_bound(-1, -4, &[]), 2f64.powi(-16));
        same(bucket_bound(2, 3, &[]), 2f64.powf(0.25));
        same(bucket_bound(-6, 2, &[]), 0.25 * 0.7071067811865475 * 2.0);
        // The last regular bucket ends at the largest float, the next one (±Inf) at Inf.
        same(bucket_bound(1024, 0, &[]), f64::MAX);
        same(bucket_bound(1025, 0, &[]), INF);
        same(bucket_bound(1024 << 8, 8, &[]), f64::MAX);
        same(bucket_bound(512, -1, &[]), f64::MAX);
        same(bucket_bound(64, -4, &[]), f64::MAX);
        same(bucket_bound(65, -4, &[]), INF);
        // Down into the subnormal range, rounded as Go's Ldexp rounds.
        same(bucket_bound(-1074, 0, &[]), 5e-324);
        same(bucket_bound(-1075, 0, &[]), 0.0);
        // Custom bounds.
        let cv = [-2.0, 3.0];
        same(bucket_bound(-1, CUSTOM_BUCKETS_SCHEMA, &cv), -INF);
        same(bucket_bound(0, CUSTOM_BUCKETS_SCHEMA, &cv), -2.0);
        same(bucket_bound(1, CUSTOM_BUCKETS_SCHEMA, &cv), 3.0);
        same(bucket_bound(2, CUSTOM_BUCKETS_SCHEMA, &cv), INF);
        assert!(bucket_bound(3, CUSTOM_BUCKETS_SCHEMA, &cv).is_nan());
        assert!(bucket_bound(0, 9, &[]).is_nan());
    }

    // --- Iteration -----------------------------------------------------------------------

    fn b(lower: f64, upper: f64, li: bool, ui: bool, count: f64, index: i32) -> Bucket {
        Bucket {
            lower,
            upper,
            lower_inclusive: li,
            upper_inclusive: ui,
            count,
            index,
        }
    }

    #[test]
    fn all_buckets_ascending_and_descending() {
        // Zero bucket [-0.6, 0.6] overlaps (-1,-0.5] and (0.5,1].
        let h = exp(
            0,
            (0.6, 2.0),
            10.0,
            1.0,
            (&[(0, 2), (1, 1)], &[1.0, 0.0, 3.0]),
            (&[(0, 2)], &[4.0, 5.0]),
        );
        let want = vec![
            b(-2.0, -1.0, true, false, 5.0, 1),
            b(-1.0, -0.6, true, false, 4.0, 0),
            b(-0.6, 0.6, true, true, 2.0, 0),
            b(0.6, 1.0, false, true, 1.0, 0),
            b(1.0, 2.0, false, true, 0.0, 1),
            b(4.0, 8.0, false, true, 3.0, 3),
        ];
        assert_eq!(h.all_buckets(), want);
        let mut reversed = want;
        reversed.reverse();
        assert_eq!(h.all_buckets_reverse(), reversed);

        // No zero bucket without a positive zero count.
        let h = exp(0, (0.001, 0.0), 1.0, 1.0, (&[(0, 1)], &[1.0]), (&[], &[]));
        assert_eq!(h.all_buckets(), vec![b(0.5, 1.0, false, true, 1.0, 0)]);
    }

    #[test]
    fn custom_buckets_include_the_lower_bound_of_the_first_bucket_only() {
        let h = nhcb(&[5.0, 10.0], 4.0, 5.0, &[(0, 3)], &[1.0, 2.0, 1.0]);
        let want = vec![
            b(-INF, 5.0, true, true, 1.0, 0),
            b(5.0, 10.0, false, true, 2.0, 1),
            b(10.0, INF, false, true, 1.0, 2),
        ];
        assert_eq!(h.all_buckets(), want);
        assert_eq!(h.all_buckets_reverse(), want.into_iter().rev().collect::<Vec<_>>());
        assert!(h.uses_custom_buckets());
    }

    // --- Quantile and fraction ------------------------------------------------------------

    #[test]
    fn quantile_as_in_prometheus_test_scripts() {
        let h1 = script(0, 12.0, 100.0, (0.001, 2.0), &[2.0, 3.0, 0.0, 1.0, 4.0], &[]);
        for (q, want) in [
            (1.001, INF),
            (1.0, 16.0),
            (0.99, 15.67072476139083),
            (0.9, 12.99603834169977),
            (0.6, 4.594793419988138),
            (0.5, 1.5874010519681994),
            (0.1, 0.0006),
            (0.0, 0.0),
            (-1.0, -INF),
        ] {
            assert_close(histogram_quantile(q, &h1), want);
        }
        let h2 = script(0, 12.0, 100.0, (0.001, 2.0), &[], &[2.0, 3.0, 0.0, 1.0, 4.0]);
        for (q, want) in [
            (1.0, 0.0),
            (0.99, -0.00006),
            (0.9, -0.0006),
            (0.5, -1.5874010519681996),
            (0.1, -12.996038341699768),
            (0.0, -16.0),
        ] {
            assert_close(histogram_quantile(q, &h2), want);
        }
        let h3 = script(
            0,
            24.0,
            100.0,
            (0.001, 4.0),
            &[2.0, 3.0, 0.0, 1.0, 4.0],
            &[2.0, 3.0, 0.0, 1.0, 4.0],
        );
        for (q, want) in [
            (0.99, 15.34822590920423),
            (0.9, 10.556063286183155),
            (0.7, 1.2030250360821164),
            (0.55, 0.0006),
            (0.5, 0.0),
            (0.45, -0.0006),
            (0.3, -1.2030250360821169),
            (0.1, -10.556063286183155),
            (0.0, -16.0),
        ] {
            assert_close(histogram_quantile(q, &h3), want);
        }
        // The interpolation does not depend on the schema. The test scripts compare with a
        // tolerance; bit for bit, Prometheus (Go's Exp2) answers 2^0.5 one ulp below √2.
        same(
            histogram_quantile(0.5, &script(-1, 5.0, 6.0, (0.0, 0.0), &[0.0, 5.0], &[])),
            2.0,
        );
        let go_sqrt2 = f64::from_bits(std::f64::consts::SQRT_2.to_bits() - 1);
        assert_close(
            histogram_quantile(0.5, &script(0, 5.0, 4.0, (0.0, 0.0), &[0.0, 5.0], &[])),
            SQRT_2,
        );
        same(
            histogram_quantile(0.5, &script(0, 5.0, 4.0, (0.0, 0.0), &[0.0, 5.0], &[])),
            go_sqrt2,
        );
        same(
            histogram_quantile(0.5, &script(0, 5.0, 4.0, (0.0, 0.0), &[0.0, 0.0, 5.0], &[])),
            2.82842712474619,
        );
        same(
            histogram_quantile(0.5, &script(1, 5.0, 4.0, (0.0, 0.0), &[0.0, 0.0, 5.0], &[])),
            1.6817928305074292,
        );
        same(
            histogram_quantile(0.5, &script(1, 5.0, 4.0, (0.0, 0.0), &[], &[0.0, 0.0, 5.0])),
            -1.6817928305074292,
        );
        same(
            histogram_quantile(0.5, &script(0, 4.0, 5.0, (0.0, 0.0), &[1.0, 2.0, 1.0], &[])),
            go_sqrt2,
        );
    }

    #[test]
    fn quantile_with_nan_observations() {
        // Observed {1.5, 3, NaN}: the rank is looked up from below, the NaN counts in the rank.
        let nan = exp(0, (0.0, 0.0), 3.0, f64::NAN, (&[(1, 2)], &[1.0, 1.0]), (&[], &[]));
        assert_close(histogram_quantile(0.2, &nan), 1.515716566510398);
        same(histogram_quantile(0.2, &nan), 1.5157165665103982);
        assert!(histogram_quantile(0.9, &nan).is_nan());
        let no_nan = exp(0, (0.0, 0.0), 2.0, 4.5, (&[(1, 2)], &[1.0, 1.0]), (&[], &[]));
        same(histogram_quantile(0.3, &no_nan), 1.515716566510398);
        let three = exp(0, (0.0, 0.0), 5.0, f64::NAN, (&[(1, 3)], &[1.0, 2.0, 1.0]), (&[], &[]));
        same(histogram_quantile(0.4, &three), 2.82842712474619);
        // Observations {-Inf, 1.5, 100000, +Inf}: NaN sum without NaN observations.
        let mut pos = vec![0.0; 65];
        pos[0] = 1.0;
        pos[1] = 1.0;
        pos[64] = 1.0;
        let inf_obs = exp(-4, (0.0, 0.0), 4.0, f64::NAN, (&[(1, 65)], &pos), (&[(65, 1)], &[1.0]));
        same(histogram_quantile(0.375, &inf_obs), 256.0);
        same(histogram_fraction(-INF, 256.0, &inf_obs), 0.375);
        // Special cases.
        assert!(histogram_quantile(f64::NAN, &no_nan).is_nan());
        assert!(histogram_quantile(0.5, &FloatHistogram::default()).is_nan());
    }

    #[test]
    fn quantile_with_custom_buckets() {
        let h = nhcb(&[5.0, 10.0], 4.0, 5.0, &[(0, 3)], &[1.0, 2.0, 1.0]);
        // The first bucket starts at 0, the last one answers with its lower bound.
        same(histogram_quantile(0.0, &h), 0.0);
        same(histogram_quantile(0.1, &h), 2.0);
        same(histogram_quantile(0.5, &h), 7.5);
        same(histogram_quantile(0.9, &h), 10.0);
        same(histogram_quantile(1.0, &h), 10.0);
        // A first bucket ending at or below zero answers with its upper bound.
        let negative = nhcb(&[-2.0, 3.0], 2.0, 0.0, &[(0, 2)], &[1.0, 1.0]);
        same(histogram_quantile(0.1, &negative), -2.0);
        same(histogram_quantile(0.75, &negative), 0.5);
    }

    #[test]
    fn fraction() {
        let single = script(0, 4.0, 5.0, (0.0, 0.0), &[1.0, 2.0, 1.0], &[]);
        same(histogram_fraction(1.0, 2.0, &single), 0.5);
        same(histogram_fraction(0.0, 8.0, &single), 1.0);
        same(histogram_fraction(2.0, 1.0, &single), 0.0);
        assert!(histogram_fraction(f64::NAN, 1.0, &single).is_nan());
        assert!(histogram_fraction(-INF, INF, &FloatHistogram::default()).is_nan());
        // Inverse of the quantile, on a log scale within exponential buckets.
        let var_res = script(1, 5.0, 4.0, (0.0, 0.0), &[0.0, 0.0, 5.0], &[]);
        assert_close(histogram_fraction(0.0, 1.6817928305074292, &var_res), 0.5);
        let var_res_neg = script(0, 5.0, 4.0, (0.0, 0.0), &[], &[0.0, 0.0, 5.0]);
        same(histogram_fraction(-2.82842712474619, 0.0, &var_res_neg), 0.5);
        // Observations outside all buckets (NaNs) only count in the denominator.
        let nan = exp(0, (0.0, 0.0), 3.0, f64::NAN, (&[(1, 2)], &[1.0, 1.0]), (&[], &[]));
        assert_close(histogram_fraction(-INF, 1.515716566510398, &nan), 0.2);
        assert_close(histogram_fraction(-INF, INF, &nan), 2.0 / 3.0);
        // Linear in the zero bucket, which starts at 0 with only positive buckets.
        let zero = script(0, 4.0, 1.0, (1.0, 2.0), &[0.0, 2.0], &[]);
        same(histogram_fraction(0.0, 0.5, &zero), 0.25);
        same(histogram_fraction(-1.0, 0.5, &zero), 0.25);
        // Custom buckets: linear, the first bucket from 0, nothing interpolated up to Inf.
        let h = nhcb(&[5.0, 10.0], 4.0, 5.0, &[(0, 3)], &[1.0, 2.0, 1.0]);
        same(histogram_fraction(-INF, 7.5, &h), 0.5);
        same(histogram_fraction(0.0, 2.5, &h), 0.125);
        same(histogram_fraction(10.0, 1e9, &h), 0.0);
        same(histogram_fraction(10.0, INF, &h), 0.25);
    }

    // --- stddev / stdvar ------------------------------------------------------------------

    #[test]
    fn stddev_and_stdvar_as_in_prometheus_test_scripts() {
        let h1 = script(
            2,
            4.0,
            10.0,
            (0.0, 0.0),
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0],
            &[],
        );
        assert_close(stddev(&h1), 1.0787993180043811);
        assert_close(stdvar(&h1), 1.163807968526718);
        let h2 = script(8, 10.0, 10.0, (0.0, 0.0), &[1.0, 2.0, 3.0, 4.0], &[]);
        assert_close(stddev(&h2), 0.0048960313898237465);
        assert_close(stdvar(&h2), 2.3971123370139447e-05);
        let mut pos = vec![0.0; 55];
        pos[13] = 1.0;
        pos[24] = 1.0;
        pos[26] = 1.0;
        pos[54] = 1.0;
        let mut neg = vec![0.0; 47];
        neg[24] = 1.0;
        neg[46] = 1.0;
        let mut h3 = script(3, 7.0, 62.0, (0.0, 1.0), &pos, &neg);
        assert_close(stddev(&h3), 42.94723640026);
        assert_close(stdvar(&h3), 1844.4651144196398);
        h3.sum = f64::NAN;
        assert!(stddev(&h3).is_nan());
        h3.sum = INF;
        same(stdvar(&h3), INF);
        let h4 = script(
            0,
            10.0,
            -112946.0,
            (0.0, 0.0),
            &[],
            &[
                0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0,
            ],
        );
        assert_close(stddev(&h4), 27556.344499842);
        assert_close(stdvar(&h4), 759352122.1939945);
        let h5 = script(0, 10.0, -100.0, (0.0, 0.0), &[], &[0.0, 0.0, 0.0, 0.0, 10.0]);
        assert_close(stddev(&h5), 1.3137084989848);
        assert_close(stdvar(&h5), 1.725830020304794);
        // Custom buckets use arithmetic midpoints (7.5 and 15 here, mean 10); the first
        // bucket reaches down to -Inf, which makes the variance infinite.
        let h = nhcb(&[5.0, 10.0], 2.0, 15.0, &[(1, 1)], &[2.0]);
        same(stdvar(&h), 0.0);
        let h = nhcb(&[5.0, 10.0, 20.0], 2.0, 20.0, &[(1, 2)], &[1.0, 1.0]);
        same(stdvar(&h), 15.625);
        let h = nhcb(&[5.0, 10.0, 20.0], 2.0, 20.0, &[(0, 2)], &[1.0, 1.0]);
        same(stdvar(&h), INF);
    }

    // --- HTTP API -------------------------------------------------------------------------

    #[test]
    fn api_buckets_as_the_http_api_writes_them() {
        // The example of Prometheus' JSON codec.
        let h = exp(
            0,
            (0.25, 3.0),
            42.0,
            34593.34,
            (&[(-1, 2), (1, 1), (0, 1)], &[12.0, 21.0, 6.0, 0.0]),
            (&[], &[]),
        );
        assert_eq!(
            api_buckets(&h),
            vec![
                (3, -0.25, 0.25, 3.0),
                (0, 0.25, 0.5, 12.0),
                (0, 0.5, 1.0, 21.0),
                (0, 2.0, 4.0, 6.0)
            ]
        );
        // Negative buckets include their lower bound; empty ones are left out.
        let h = exp(0, (0.0, 0.0), 1.0, -1.5, (&[], &[]), (&[(0, 2)], &[0.0, 1.0]));
        assert_eq!(api_buckets(&h), vec![(1, -2.0, -1.0, 1.0)]);
        // Custom buckets: the first one is closed, the others left-open.
        let h = nhcb(&[5.0, 10.0], 4.0, 5.0, &[(0, 3)], &[1.0, 2.0, 1.0]);
        assert_eq!(
            api_buckets(&h),
            vec![(3, -INF, 5.0, 1.0), (0, 5.0, 10.0, 2.0), (0, 10.0, INF, 1.0)]
        );
    }

    // --- Arithmetic -----------------------------------------------------------------------

    #[test]
    fn compensated_sums_keep_what_large_values_cancel_out() {
        // Buckets and sums of 1e100 that cancel out, as in Prometheus' native_histograms.test.
        let big = |sign: f64| script(0, 1.0, sign * 1e100, (0.001, 0.0), &[sign * 1e100, 1.0], &[]);
        let small = script(0, 1.0, 1.0, (0.001, 1.0), &[1.0], &[2.0]);
        let mut plain = small.clone();
        let mut acc = CompensatedSum::new(&small);
        for h in [big(1.0), small.clone(), big(-1.0)] {
            plain = plain.add(&h).unwrap();
            acc.add(&h).unwrap();
        }
        assert_eq!((plain.sum, plain.positive_buckets[0]), (0.0, 0.0));
        let mut sum = acc.sum();
        sum.compact(0);
        assert_eq!(sum, script(0, 4.0, 2.0, (0.001, 2.0), &[2.0, 2.0], &[4.0]));
        // Layouts that differ: the finer schema reduced, the narrower zero bucket widened,
        // the compensation terms following.
        let fine = script(1, 2.0, 1e100, (0.0001, 0.0), &[1e100, 3.0], &[]);
        let coarse = script(0, 1.0, -1e100, (0.001, 1.0), &[-1e100], &[]);
        let mut acc = CompensatedSum::new(&fine);
        acc.add(&coarse).unwrap();
        acc.add(&script(0, 1.0, 5.0, (0.001, 0.0), &[1.0], &[])).unwrap();
        let mut sum = acc.sum();
        sum.compact(0);
        assert_eq!(
            (sum.schema, sum.zero_threshold, sum.sum, sum.count),
            (0, 0.001, 5.0, 4.0)
        );
        assert_eq!(sum.positive_buckets, [1.0, 3.0]);
        // Exponential and custom buckets do not add up.
        assert!(CompensatedSum::new(&small)
            .add(&nhcb(&[1.0], 1.0, 1.0, &[(0, 1)], &[1.0]))
            .is_err());
    }

    #[test]
    fn compensated_means_go_incremental_where_the_sum_would_overflow() {
        let h = |count: f64, sum: f64| script(0, count, sum, (0.001, 0.0), &[], &[]);
        let mut acc = CompensatedSum::new(&h(f64::MAX, 1.0));
        acc.add_to_mean(&h(f64::MAX, 3.0)).unwrap();
        acc.add_to_mean(&h(0.0, 2.0)).unwrap();
        let mean = acc.mean();
        assert_close(mean.count, f64::MAX / 3.0 * 2.0);
        assert_close(mean.sum, 2.0);
        let mut acc = CompensatedSum::new(&h(1.0, 1e100));
        for x in [h(1.0, 1.0), h(1.0, -1e100), h(1.0, 1.0)] {
            acc.add_to_mean(&x).unwrap();
        }
        let mean = acc.mean();
        assert_eq!((mean.count, mean.sum), (1.0, 0.5));
    }

    #[test]
    fn add_merges_layouts_as_prometheus() {
        // "non-overlapping spans" of Prometheus' tests.
        let a = exp(
            0,
            (0.001, 11.0),
            30.0,
            2.345,
            (&[(-2, 2), (2, 3)], &[1.0, 0.0, 3.0, 4.0, 7.0]),
            (&[(3, 2), (3, 2)], &[3.0, 1.0, 5.0, 6.0]),
        );
        let b = exp(
            0,
            (0.001, 8.0),
            21.0,
            1.234,
            (&[(0, 2), (3, 3)], &[5.0, 4.0, 2.0, 3.0, 6.0]),
            (&[(-9, 2), (3, 2)], &[1.0, 1.0, 4.0, 4.0]),
        );
        let want = exp(
            0,
            (0.001, 19.0),
            51.0,
            3.579,
            (&[(-2, 4), (0, 6)], &[1.0, 0.0, 5.0, 4.0, 3.0, 4.0, 7.0, 2.0, 3.0, 6.0]),
            (
                &[(-9, 2), (3, 2), (5, 2), (3, 2)],
                &[1.0, 1.0, 4.0, 4.0, 3.0, 1.0, 5.0, 6.0],
            ),
        );
        assert_eq!(a.add(&b).unwrap(), want);

        // "schema change combined with larger zero bucket in second histogram".
        let a = exp(
            0,
            (0.01, 8.0),
            21.0,
            1.234,
            (&[(-2, 5), (0, 3)], &[2.0, 5.0, 4.0, 2.0, 3.0, 6.0, 2.0, 5.0]),
            (&[(4, 2), (1, 2)], &[1.0, 1.0, 4.0, 4.0]),
        );
        let b = exp(
            1,
            (0.25, 12.0),
            30.0,
            2.345,
            (&[(-3, 2), (5, 5)], &[1.0, 0.0, 3.0, 2.0, 2.0, 3.0, 4.0]),
            (&[(6, 3), (6, 4)], &[3.0, 0.5, 0.5, 2.0, 3.0, 2.0, 4.0]),
        );
        let want = exp(
            0,
            (0.25, 22.0),
            51.0,
            3.579,
            (&[(-1, 7)], &[6.0, 4.0, 2.0, 6.0, 10.0, 9.0, 5.0]),
            (&[(3, 3), (1, 3)], &[3.0, 2.0, 1.0, 4.0, 9.0, 6.0]),
        );
        let (sum, info) = a.add_detailed(&b).unwrap();
        assert_eq!(sum, want);
        assert_eq!(info, ArithmeticInfo::default());
    }

    #[test]
    fn add_custom_buckets_reconciles_different_bounds() {
        let a = nhcb(&[1.0, 2.5], 10.0, 100.0, &[(0, 3)], &[2.0, 3.0, 5.0]);
        let b = nhcb(&[1.0, 2.0, 3.0], 8.0, 80.0, &[(0, 4)], &[1.0, 2.0, 3.0, 2.0]);
        let (sum, info) = a.add_detailed(&b).unwrap();
        assert_eq!(sum, nhcb(&[1.0], 18.0, 180.0, &[(0, 2)], &[3.0, 15.0]));
        assert!(info.custom_bounds_reconciled);
        // Same bounds: bucket by bucket.
        let c = nhcb(&[1.0, 2.5], 4.0, 1.0, &[(1, 2)], &[1.0, 3.0]);
        assert_eq!(
            a.add(&c).unwrap(),
            nhcb(&[1.0, 2.5], 14.0, 101.0, &[(0, 3)], &[2.0, 4.0, 8.0])
        );
        // Exponential and custom buckets do not mix.
        let e = script(0, 1.0, 1.0, (0.0, 0.0), &[1.0], &[]);
        assert_eq!(a.add(&e), Err(HistogramError::IncompatibleSchema));
        assert_eq!(
            e.sub(&a).unwrap_err().to_string(),
            "cannot apply this operation on histograms with a mix of exponential and custom bucket schemas"
        );
    }

    #[test]
    fn counter_reset_hints_of_sums() {
        let mut a = script(0, 1.0, 1.0, (0.0, 0.0), &[1.0], &[]);
        let mut b = a.clone();
        a.counter_reset_hint = CounterResetHint::CounterReset;
        b.counter_reset_hint = CounterResetHint::NotCounterReset;
        let (sum, info) = a.add_detailed(&b).unwrap();
        assert!(info.counter_reset_collision);
        assert_eq!(sum.counter_reset_hint, CounterResetHint::Unknown);
        b.counter_reset_hint = CounterResetHint::Gauge;
        assert_eq!(a.add(&b).unwrap().counter_reset_hint, CounterResetHint::Gauge);
        // Sub combines hints the same way.
        assert_eq!(a.sub(&b).unwrap().counter_reset_hint, CounterResetHint::Gauge);
    }

    #[test]
    fn sub_with_mismatched_custom_bounds_as_in_prometheus_test_scripts() {
        let a = nhcb(&[10.0], 1.0, 1.0, &[(0, 1)], &[1.0]);
        let b = nhcb(&[2.0, 10.0], 1.0, 1.0, &[(0, 1)], &[1.0]);
        let (diff, info) = a.sub_detailed(&b).unwrap();
        assert!(info.custom_bounds_reconciled);
        assert_eq!(diff, nhcb(&[10.0], 0.0, 0.0, &[], &[]));
        let a = exp(0, (0.0, 0.0), 5.0, 3.0, (&[(0, 2)], &[2.0, 3.0]), (&[], &[]));
        let b = exp(0, (0.0, 0.0), 1.0, 1.0, (&[(1, 2)], &[1.0, 4.0]), (&[], &[]));
        assert_eq!(
            a.sub(&b).unwrap(),
            exp(0, (0.0, 0.0), 4.0, 2.0, (&[(0, 3)], &[2.0, 2.0, -4.0]), (&[], &[]))
        );
    }

    #[test]
    fn compact_as_in_prometheus_tests() {
        let compacted = |pos: (&[(i32, u32)], &[f64]), neg: (&[(i32, u32)], &[f64]), max: usize| {
            let mut h = exp(0, (0.0, 0.0), 0.0, 0.0, pos, neg);
            h.compact(max);
            (
                h.positive_spans,
                h.positive_buckets,
                h.negative_spans,
                h.negative_buckets,
            )
        };
        let pb = [0.0, 0.0, 1.0, 0.0, 0.0, 3.3, 4.2, 0.1, 3.3];
        let nb = [3.1, 3.0, 1.234e5, 1000.0, 0.0, 3.0, 4.0];
        assert_eq!(
            compacted((&[(-4, 6), (3, 3)], &pb), (&[(0, 2), (3, 5)], &nb), 0),
            (
                spans(&[(-2, 1), (2, 1), (3, 3)]),
                vec![1.0, 3.3, 4.2, 0.1, 3.3],
                spans(&[(0, 2), (3, 2), (1, 2)]),
                vec![3.1, 3.0, 1.234e5, 1000.0, 3.0, 4.0]
            )
        );
        assert_eq!(
            compacted((&[(-4, 6), (3, 3)], &pb), (&[(0, 2), (3, 5)], &nb), 2),
            (
                spans(&[(-2, 4), (3, 3)]),
                vec![1.0, 0.0, 0.0, 3.3, 4.2, 0.1, 3.3],
                spans(&[(0, 2), (3, 5)]),
                nb.to_vec()
            )
        );
        assert_eq!(
            compacted((&[(-4, 6), (3, 3)], &pb), (&[(0, 2), (3, 5)], &nb), 3),
            (
                spans(&[(-2, 10)]),
                vec![1.0, 0.0, 0.0, 3.3, 0.0, 0.0, 0.0, 4.2, 0.1, 3.3],
                spans(&[(0, 10)]),
                vec![3.1, 3.0, 0.0, 0.0, 0.0, 1.234e5, 1000.0, 0.0, 3.0, 4.0]
            )
        );
        // A span of empty buckets disappears, its offset goes to the next span.
        let (ps, pb_out, _, _) = compacted((&[(-4, 3), (2, 2), (3, 4)], &pb), (&[], &[]), 0);
        assert_eq!((ps, pb_out), (spans(&[(-2, 1), (7, 4)]), vec![1.0, 3.3, 4.2, 0.1, 3.3]));
        // Zero offsets and zero lengths disappear.
        assert_eq!(
            compacted(
                (&[(-2, 1), (0, 3), (0, 0), (2, 1)], &[1.0, 3.3, 4.2, 0.1, 3.3]),
                (&[], &[]),
                0
            )
            .0,
            spans(&[(-2, 4), (2, 1)])
        );
        // Only empty buckets: nothing left.
        assert_eq!(
            compacted((&[(-4, 2), (3, 1)], &[0.0, 0.0, 0.0]), (&[], &[]), 1).0,
            vec![]
        );
    }

    #[test]
    fn mul_and_div() {
        let mut h = exp(0, (0.1, 1.0), 3.0, 6.0, (&[(0, 1)], &[1.0]), (&[(0, 1)], &[1.0]));
        h.mul(2.0);
        assert_eq!(
            h,
            exp(0, (0.1, 2.0), 6.0, 12.0, (&[(0, 1)], &[2.0]), (&[(0, 1)], &[2.0]))
        );
        h.div(-2.0);
        assert_eq!(h.counter_reset_hint, CounterResetHint::Gauge);
        assert_eq!((h.count, h.sum, h.positive_buckets[0]), (-3.0, -6.0, -1.0));
        h.div(0.0);
        assert_eq!((h.count, h.zero_count), (-INF, -INF));
        assert!(h.positive_spans.is_empty() && h.negative_buckets.is_empty());
    }

    #[test]
    fn reduce_resolution_as_in_prometheus_tests() {
        let layout: &[(i32, u32)] = &[(-2, 4), (0, 0), (3, 2)];
        let counts = [1.0, 3.0, 1.0, 2.0, 1.0, 1.0];
        let mut h = exp(
            0,
            (0.0, 0.0),
            0.0,
            0.0,
            (layout, &counts),
            (&[(0, 4), (0, 0), (3, 2)], &counts),
        );
        h.reduce_resolution(-1);
        let want = exp(
            -1,
            (0.0, 0.0),
            0.0,
            0.0,
            (&[(-1, 3), (1, 1)], &[1.0, 4.0, 2.0, 2.0]),
            (&[(0, 3), (1, 1)], &[1.0, 4.0, 2.0, 2.0]),
        );
        assert_eq!(h, want);
        let mut bad = exp(0, (0.0, 0.0), 0.0, 0.0, (layout, &counts[..5]), (&[], &[]));
        assert_eq!(
            bad.try_reduce_resolution(-1).unwrap_err().to_string(),
            "have 5 buckets but spans need more: histogram spans specify different number of buckets than provided"
        );
        let mut bad = exp(
            0,
            (0.0, 0.0),
            0.0,
            0.0,
            (&[(-2, 4), (-1, 0), (3, 2)], &counts),
            (&[], &[]),
        );
        assert_eq!(
            bad.try_reduce_resolution(-1).unwrap_err().to_string(),
            "span number 2 with offset -1: histogram has a span whose offset is negative"
        );
        let before = bad.clone();
        bad.reduce_resolution(-1);
        assert_eq!(bad, before);
    }

    // --- Counter resets and rates ---------------------------------------------------------

    #[test]
    fn detect_reset_as_in_prometheus_tests() {
        let previous = exp(
            0,
            (0.01, 5.5),
            3493.3,
            2349209.324,
            (&[(-2, 2), (1, 3)], &[1.0, 1.23, 3.3, 4.2, 0.1]),
            (&[(3, 2), (3, 2)], &[3.1, 3.0, 1.234e5, 1000.0]),
        );
        // The zero bucket grows over populated buckets whose counts it takes over.
        let mut wider = previous.clone();
        wider.zero_threshold = 1.0;
        wider.zero_count = 7.73;
        wider.positive_spans = spans(&[(1, 3)]);
        wider.positive_buckets = vec![3.3, 4.2, 0.1];
        assert!(!wider.detect_reset(&previous));
        // ... but not into the middle of one.
        let mut cut = previous.clone();
        cut.zero_threshold = 0.3;
        assert!(cut.detect_reset(&previous));
        // A shrinking zero bucket, a growing schema and a disappearing bucket are resets.
        let mut narrower = previous.clone();
        narrower.zero_threshold = 0.001;
        assert!(narrower.detect_reset(&previous));
        assert!(!previous.detect_reset(&previous));
        assert!(FloatHistogram::default().detect_reset(&previous));
        assert!(!previous.detect_reset(&FloatHistogram::default()));
        // Lower resolution: the previous buckets are merged before comparing.
        let finer = exp(
            1,
            (0.01, 5.5),
            3493.3,
            2349209.324,
            (
                &[(-5, 4), (2, 6)],
                &[0.4, 0.6, 1.0, 0.23, 2.0, 1.3, 1.2, 3.0, 0.05, 0.05],
            ),
            (&[(5, 4), (6, 4)], &[2.0, 1.1, 2.0, 1.0, 0.234e5, 1e5, 500.0, 500.0]),
        );
        let mut up = previous.clone();
        up.positive_buckets = vec![1.0, 1.23, 4.3, 4.2, 0.1];
        assert!(!up.detect_reset(&finer));
        let mut down = previous.clone();
        down.positive_buckets = vec![1.0, 1.23, 2.3, 4.2, 0.1];
        assert!(down.detect_reset(&finer));
        assert!(finer.detect_reset(&previous));
        // Hints short-cut the comparison.
        let mut hinted = FloatHistogram {
            counter_reset_hint: CounterResetHint::NotCounterReset,
            ..Default::default()
        };
        assert!(!hinted.detect_reset(&previous));
        hinted.counter_reset_hint = CounterResetHint::CounterReset;
        assert!(hinted.detect_reset(&FloatHistogram::default()));
    }

    #[test]
    fn detect_reset_with_mismatched_custom_bounds() {
        let previous = nhcb(
            &[0.0, 1.0, 3.0, 5.0],
            100.0,
            500.0,
            &[(1, 4)],
            &[10.0, 15.0, 20.0, 25.0],
        );
        let current = nhcb(
            &[0.0, 1.0, 2.0, 3.0, 5.0],
            100.0,
            500.0,
            &[(1, 5)],
            &[10.0, 16.0, 10.0, 5.0, 25.0],
        );
        assert!(current.detect_reset(&previous));
        let previous = nhcb(&[0.0, 1.0, 2.0], 100.0, 500.0, &[(1, 3)], &[10.0, 20.0, 20.0]);
        let current = nhcb(
            &[0.0, 1.0, 2.0, 3.0],
            100.0,
            500.0,
            &[(1, 4)],
            &[100.0, 200.0, 8.0, 7.0],
        );
        assert!(current.detect_reset(&previous));
        let current = nhcb(
            &[0.0, 1.0, 2.0, 3.0],
            100.0,
            500.0,
            &[(1, 4)],
            &[100.0, 200.0, 18.0, 7.0],
        );
        assert!(!current.detect_reset(&previous));
        // Custom after exponential buckets is a reset.
        assert!(current.detect_reset(&script(0, 1.0, 1.0, (0.0, 0.0), &[1.0], &[])));
    }

    #[test]
    fn rate_of_counter_histograms() {
        let h = |count: f64, pos: &[f64]| script(0, count, count, (0.0, 0.0), pos, &[]);
        let (p0, p1, p2, p3) = (
            h(3.0, &[1.0, 2.0]),
            h(7.0, &[2.0, 5.0]),
            h(2.0, &[0.0, 2.0]),
            h(5.0, &[1.0, 4.0]),
        );
        // The counter restarts between p1 and p2: p1 is added back.
        let rate = histogram_rate(&[(0, &p0), (1, &p1), (2, &p2), (3, &p3)], true).unwrap();
        let mut want = h(9.0, &[2.0, 7.0]);
        want.counter_reset_hint = CounterResetHint::Gauge;
        assert_eq!(rate, want);
        // As a gauge: just last minus first, compacted.
        let rate = histogram_rate(&[(0, &p0), (1, &p1), (2, &p2), (3, &p3)], false).unwrap();
        let mut want = h(2.0, &[]);
        want.positive_spans = spans(&[(1, 1)]);
        want.positive_buckets = vec![2.0];
        want.counter_reset_hint = CounterResetHint::Gauge;
        assert_eq!(rate, want);
        // A reset right after the first point: the first point is taken as empty.
        let rate = histogram_rate(&[(0, &p1), (1, &p2), (2, &p3)], true).unwrap();
        let mut want = h(5.0, &[1.0, 4.0]);
        want.counter_reset_hint = CounterResetHint::Gauge;
        assert_eq!(rate, want);
        // The lowest schema of all points wins.
        let mut fine = script(1, 1.0, 1.0, (0.0, 0.0), &[1.0], &[]);
        fine.schema = 1;
        let rate = histogram_rate(&[(0, &fine), (1, &p1)], true).unwrap();
        assert_eq!(
            (rate.schema, rate.count, &rate.positive_buckets),
            (0, 6.0, &vec![1.0, 5.0])
        );
        // Errors.
        let custom = nhcb(&[5.0], 1.0, 1.0, &[(0, 1)], &[1.0]);
        assert_eq!(
            histogram_rate(&[(0, &p0), (1, &custom)], false),
            Err(HistogramError::IncompatibleSchema)
        );
        assert_eq!(histogram_rate(&[(0, &p0)], true), Err(HistogramError::TooFewPoints));
    }

    #[test]
    fn rate_reconciles_custom_bounds() {
        let a = nhcb(&[5.0, 10.0], 2.0, 2.0, &[(0, 2)], &[1.0, 1.0]);
        let b = nhcb(&[10.0], 5.0, 5.0, &[(0, 1)], &[5.0]);
        let mut hint = b.clone();
        hint.counter_reset_hint = CounterResetHint::NotCounterReset;
        let (rate, reconciled) = histogram_rate_detailed(&[(0, &a), (1, &hint)], true).unwrap();
        assert!(reconciled);
        let mut want = nhcb(&[10.0], 3.0, 3.0, &[(0, 1)], &[3.0]);
        want.counter_reset_hint = CounterResetHint::Gauge;
        assert_eq!(rate, want);
    }
}
