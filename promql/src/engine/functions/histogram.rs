//! Quantiles as Prometheus 2.42's `promql/quantile.go` computes them: over the buckets of
//! a classic histogram (`histogram_quantile`) and over plain values (the `quantile`
//! aggregation and `quantile_over_time`).

use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// What making the counts of a classic histogram monotonic changed: the lowest and the
/// highest upper bound of a bucket raised, and the largest raise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForcedMonotonicity {
    pub min_bucket: f64,
    pub max_bucket: f64,
    pub max_diff: f64,
}

/// Prometheus 2.42 bucketQuantile (quantile.go): sort by upper bound, require +Inf bucket (else NaN),
/// coalesce buckets with equal upper bound, ensureMonotonic, q<0 → -Inf, q>1 → +Inf, NaN q → NaN,
/// < 2 buckets → NaN, observations == 0 → NaN, linear interpolation, lowest bucket lower bound 0 if
/// upper > 0, return the second-highest bound if the rank falls in +Inf bucket, etc.
///
/// Buckets with a NaN upper bound sort last, so their presence gives NaN (Go's sort leaves
/// them wherever its algorithm happens to, which is not worth imitating). No buckets at all
/// give NaN once `q` is in range.
///
/// `prometheus_3`: as Prometheus 3 does it instead, counts that differ from the one below by a
/// relative 1e-12 or less are taken as equal (in either direction), and what forcing
/// monotonicity changed is reported.
pub fn bucket_quantile_with(q: f64, mut buckets: Vec<Bucket>, prometheus_3: bool) -> (f64, Option<ForcedMonotonicity>) {
    if q.is_nan() {
        return (f64::NAN, None);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    buckets.sort_by(|a, b| nan_last(a.upper_bound, b.upper_bound));
    match buckets.last() {
        Some(last) if last.upper_bound == f64::INFINITY => {}
        _ => return (f64::NAN, None),
    }

    coalesce_buckets(&mut buckets);
    let forced = if prometheus_3 {
        ensure_monotonic_ignoring_small_deltas(&mut buckets)
    } else {
        ensure_monotonic(&mut buckets);
        None
    };
    (quantile_of_monotonic(q, &buckets), forced)
}

fn quantile_of_monotonic(q: f64, buckets: &[Bucket]) -> f64 {
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = go_search(buckets.len() - 1, |i| buckets[i].count >= rank);

    if b == buckets.len() - 1 {
        // The +Inf bucket has no width to interpolate in.
        return buckets[buckets.len() - 2].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        // Without a natural lower bound below a non-positive upper bound, the bound itself
        // is the best estimate.
        return buckets[0].upper_bound;
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Prometheus' `quantile` (used by the quantile aggregation and quantile_over_time): q<0 → -Inf,
/// q>1 → +Inf, empty → NaN, NaN q → NaN, rank = q*(n-1), linear interpolation between sorted values.
///
/// Sorts `values` in place, NaN first, as Prometheus' `vectorByValueHeap` does. As in
/// Prometheus, interpolating with weight 0 next to an infinity gives NaN (Inf * 0).
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| nan_first(*a, *b));

    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower_index = rank.floor().max(0.0);
    let upper_index = (n - 1.0).min(lower_index + 1.0);
    let weight = rank - rank.floor();
    values[lower_index as usize] * (1.0 - weight) + values[upper_index as usize] * weight
}

/// The fraction of a classic histogram's observations between `lower` and `upper`,
/// interpolating linearly inside buckets (Prometheus 3's `BucketFraction`): NaN without a
/// `+Inf` bucket, without observations or for a NaN bound; 0 when `lower >= upper`.
pub fn bucket_fraction(lower: f64, upper: f64, mut buckets: Vec<Bucket>) -> f64 {
    if buckets.is_empty() {
        return f64::NAN;
    }
    buckets.sort_by(|a, b| a.upper_bound.partial_cmp(&b.upper_bound).unwrap_or(Ordering::Equal));
    if buckets[buckets.len() - 1].upper_bound != f64::INFINITY {
        return f64::NAN;
    }
    coalesce_buckets(&mut buckets);
    let count = buckets[buckets.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if buckets[0].upper_bound <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, b) in buckets.iter().enumerate() {
        if i > 0 {
            lower_bound = buckets[i - 1].upper_bound;
        }
        let upper_bound = b.upper_bound;
        let interpolate = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                b.count
            } else {
                rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if !lower_set && lower_bound >= lower {
            (lower_rank, lower_set) = (rank, true);
        }
        if !upper_set && lower_bound >= upper {
            (upper_rank, upper_set) = (rank, true);
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            (lower_rank, lower_set) = (interpolate(lower), true);
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            (upper_rank, upper_set) = (interpolate(upper), true);
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// Merges buckets with the same upper bound (e.g. `le="0.2"` and `le="2e-1"`); `buckets`
/// must be sorted.
fn coalesce_buckets(buckets: &mut Vec<Bucket>) {
    let mut last = buckets[0];
    let mut i = 0;
    for j in 1..buckets.len() {
        let b = buckets[j];
        if b.upper_bound == last.upper_bound {
            last.count += b.count;
        } else {
            buckets[i] = last;
            last = b;
            i += 1;
        }
    }
    buckets[i] = last;
    buckets.truncate(i + 1);
}

/// Raises every count to at least the highest count below it. Bucket series are not
/// scraped or evaluated atomically, so (especially after rate()) a higher bucket can count
/// fewer observations than a lower one, which would break the binary search.
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let mut max = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
}

/// Prometheus 3's `ensureMonotonicAndIgnoreSmallDeltas`: a count within a relative 1e-12 of
/// the one kept below it becomes that one (float noise, either way); a lower count is raised to
/// it. What was raised (not noise) is reported.
fn ensure_monotonic_ignoring_small_deltas(buckets: &mut [Bucket]) -> Option<ForcedMonotonicity> {
    const TOLERANCE: f64 = 1e-12;
    let mut forced: Option<ForcedMonotonicity> = None;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, TOLERANCE) {
            b.count = prev;
            continue;
        }
        if curr < prev {
            b.count = prev;
            let f = forced.get_or_insert(ForcedMonotonicity {
                min_bucket: f64::INFINITY,
                max_bucket: f64::NEG_INFINITY,
                max_diff: 0.0,
            });
            if b.upper_bound < f.min_bucket {
                f.min_bucket = b.upper_bound;
            }
            if b.upper_bound > f.max_bucket {
                f.max_bucket = b.upper_bound;
            }
            if prev - curr > f.max_diff {
                f.max_diff = prev - curr;
            }
            continue;
        }
        prev = curr;
    }
    forced
}

/// Prometheus' `almost.Equal`: equal, both NaN, or within a relative `epsilon` (absolute
/// near zero).
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if (a.is_nan() && b.is_nan()) || a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Go's `sort.Search`: the smallest index in `[0, n)` for which `f` holds, assuming `f`
/// turns true once and stays true; `n` if it never holds. Imitated step by step so that
/// counts which break that assumption (NaN) give the same index as in Prometheus.
fn go_search(n: usize, f: impl Fn(usize) -> bool) -> usize {
    let (mut i, mut j) = (0, n);
    while i < j {
        let h = (i + j) / 2;
        if !f(h) {
            i = h + 1;
        } else {
            j = h;
        }
    }
    i
}

/// A total order with NaN above everything, and -0 equal to +0.
fn nan_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("neither is NaN"),
    }
}

/// A total order with NaN below everything, and -0 equal to +0.
fn nan_first(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).expect("neither is NaN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_quantile(q: f64, buckets: Vec<Bucket>) -> f64 {
        bucket_quantile_with(q, buckets, false).0
    }

    const INF: f64 = f64::INFINITY;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    fn assert_close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    // histograms.test's testhistogram at 50m, unsorted as series may arrive.
    fn positive() -> Vec<Bucket> {
        buckets(&[(1.0, 110.0), (0.1, 50.0), (INF, 120.0), (0.2, 70.0)])
    }

    fn negative() -> Vec<Bucket> {
        buckets(&[(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)])
    }

    #[test]
    fn out_of_range_and_nan_quantiles() {
        assert_eq!(bucket_quantile(-0.1, positive()), f64::NEG_INFINITY);
        assert_eq!(bucket_quantile(1.01, positive()), INF);
        assert!(bucket_quantile(f64::NAN, positive()).is_nan());
        // Range checks come before looking at the buckets.
        assert_eq!(bucket_quantile(2.0, vec![]), INF);
        assert!(bucket_quantile(0.5, vec![]).is_nan());
    }

    #[test]
    fn interpolates_within_buckets() {
        assert_eq!(bucket_quantile(0.0, positive()), 0.0);
        assert_close(bucket_quantile(0.2, positive()), 0.048);
        assert_close(bucket_quantile(0.5, positive()), 0.15);
        assert_close(bucket_quantile(0.8, positive()), 0.72);
        // The rank falls into the +Inf bucket: the highest finite bound.
        assert_eq!(bucket_quantile(1.0, positive()), 1.0);
    }

    #[test]
    fn non_positive_lowest_bucket_returns_its_bound() {
        assert_eq!(bucket_quantile(0.0, negative()), -0.2);
        assert_eq!(bucket_quantile(0.2, negative()), -0.2);
        assert_close(bucket_quantile(0.5, negative()), -0.15);
        assert_eq!(bucket_quantile(0.8, negative()), 0.3);
        assert_eq!(bucket_quantile(1.0, negative()), 0.3);
    }

    #[test]
    fn results_in_the_middle_of_buckets() {
        let b = || buckets(&[(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)]);
        assert_close(bucket_quantile(1.0 / 6.0, b()), 1.0);
        assert_close(bucket_quantile(0.5, b()), 3.0);
        assert_close(bucket_quantile(5.0 / 6.0, b()), 5.0);
    }

    #[test]
    fn aggregated_histogram() {
        // sum by (le) of request_duration_seconds_bucket's counts.
        let b = || buckets(&[(0.1, 10.0), (0.2, 19.0), (INF, 25.0)]);
        assert_close(bucket_quantile(0.3, b()), 0.075);
        assert_close(bucket_quantile(0.5, b()), 0.1277777777777778);
    }

    #[test]
    fn non_monotonic_buckets_are_enveloped() {
        let b = || {
            buckets(&[
                (0.1, 20.0),
                (1.0, 10.0),
                (10.0, 50.0),
                (100.0, 40.0),
                (1000.0, 90.0),
                (INF, 80.0),
            ])
        };
        assert_close(bucket_quantile(0.01, b()), 0.0045);
        assert_close(bucket_quantile(0.5, b()), 8.5);
        assert_close(bucket_quantile(0.99, b()), 979.75);
    }

    #[test]
    fn equal_upper_bounds_are_coalesced() {
        let b = || buckets(&[(0.1, 1.0), (0.2, 1.0), (0.2, 1.0), (0.2, 1.0), (INF, 4.0)]);
        assert_close(bucket_quantile(0.5, b()), 0.15);
        assert_close(bucket_quantile(0.75, b()), 0.2);
        assert_eq!(bucket_quantile(1.0, b()), 0.2);
        // Two +Inf buckets make one bucket: too few.
        assert!(bucket_quantile(0.5, buckets(&[(INF, 0.0), (INF, 0.0)])).is_nan());
        assert!(bucket_quantile(0.5, buckets(&[(INF, 5.0), (INF, 5.0)])).is_nan());
    }

    #[test]
    fn degenerate_histograms_give_nan() {
        // No observations.
        let empty = buckets(&[(0.1, 0.0), (0.2, 0.0), (INF, 0.0)]);
        assert!(bucket_quantile(0.2, empty).is_nan());
        // No +Inf bucket.
        assert!(bucket_quantile(0.5, buckets(&[(0.1, 1.0), (0.2, 2.0)])).is_nan());
        // A NaN bound sorts last, hiding the +Inf bucket.
        assert!(bucket_quantile(0.5, buckets(&[(0.1, 1.0), (f64::NAN, 1.0), (INF, 2.0)])).is_nan());
        // Only the +Inf bucket.
        assert!(bucket_quantile(0.5, buckets(&[(INF, 3.0)])).is_nan());
    }

    #[test]
    fn nan_observation_count_returns_highest_finite_bound() {
        // No count is >= a NaN rank, so the search runs into the +Inf bucket.
        let b = buckets(&[(1.0, 1.0), (2.0, 2.0), (INF, f64::NAN)]);
        assert_eq!(bucket_quantile(0.5, b), 2.0);
    }

    #[test]
    fn go_search_matches_sort_search() {
        let v = [1, 3, 5, 7];
        assert_eq!(go_search(v.len(), |i| v[i] >= 0), 0);
        assert_eq!(go_search(v.len(), |i| v[i] >= 4), 2);
        assert_eq!(go_search(v.len(), |i| v[i] >= 8), 4);
        assert_eq!(go_search(0, |_| true), 0);
        // Non-monotonic predicates: the binary search probes index 1 first, then 0.
        let w = [true, false, true];
        assert_eq!(go_search(w.len(), |i| w[i]), 2);
    }

    #[test]
    fn quantile_interpolates_between_sorted_values() {
        let cases: [(&[f64], f64, f64); 9] = [
            (&[0.0, 1.0], 0.8, 0.8),
            (&[2.0, 0.0, 1.0], 0.8, 1.6),
            (&[4.0, 1.0, 0.0], 0.8, 2.8),
            (&[0.0, 1.0, 4.0], 0.75, 2.5),
            (&[0.0, 1.0, 4.0], 0.5, 1.0),
            (&[0.0, 1.0, 4.0], 0.0, 0.0),
            (&[0.0, 1.0, 4.0], 1.0, 4.0),
            (&[42.0], 0.3, 42.0),
            (&[10.0, 20.0, 30.0, 40.0], 0.5, 25.0),
        ];
        for (values, q, want) in cases {
            let mut v = values.to_vec();
            assert_close(quantile(q, &mut v), want);
        }
    }

    #[test]
    fn quantile_special_cases() {
        assert!(quantile(0.5, &mut []).is_nan());
        assert!(quantile(f64::NAN, &mut [1.0, 2.0]).is_nan());
        assert_eq!(quantile(-1.0, &mut [1.0, 2.0]), f64::NEG_INFINITY);
        assert_eq!(quantile(2.0, &mut [1.0, 2.0]), INF);
        // Empty input beats out-of-range q.
        assert!(quantile(2.0, &mut []).is_nan());
    }

    #[test]
    fn quantile_sorts_nan_first_and_multiplies_infinities_by_zero() {
        let mut v = [3.0, f64::NAN, 1.0];
        assert_eq!(quantile(1.0, &mut v), 3.0);
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[1.0, 3.0]);
        assert!(quantile(0.0, &mut [3.0, f64::NAN, 1.0]).is_nan());
        // Weight 0 on the upper neighbour +Inf: 1*1 + Inf*0 = NaN, as in Prometheus.
        assert!(quantile(0.0, &mut [1.0, INF]).is_nan());
        // Even at q=1 the weight is 0: Inf*1 + Inf*0 = NaN.
        assert!(quantile(1.0, &mut [1.0, INF]).is_nan());
        assert_eq!(quantile(0.5, &mut [1.0, INF]), INF);
    }
}
