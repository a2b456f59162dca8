//! Which samples a selector sees: the one place that says whether range, lookback and
//! subquery windows include their start. Prometheus 2 includes both ends; Prometheus 3 made
//! them left-open (`(ref - width, ref]`). [`Semantics`] chooses (it also chooses the rate
//! extrapolation and avg_over_time of `functions/range.rs`; `docs/promql.md` lists every
//! difference); times saturate at the ends of the `i64` range rather than overflow.

/// Whose rules a query follows where Prometheus 2 and 3 evaluate differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Semantics {
    /// Prometheus 3: left-open windows.
    #[default]
    Prometheus3,
    /// Prometheus 2.42: windows closed at both ends (and its rate extrapolation and
    /// avg_over_time, see `docs/promql.md`).
    Prometheus2,
}

/// Window arithmetic under one [`Semantics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    left_open: bool,
}

impl Bounds {
    pub fn new(semantics: Semantics) -> Self {
        Bounds {
            left_open: semantics == Semantics::Prometheus3,
        }
    }

    /// Whether a sample at `t` lies in the window of `width` ending at `reference`.
    pub fn in_window(self, t: i64, reference: i64, width: i64) -> bool {
        !self.before_window(t, reference, width) && !after_window(t, reference)
    }

    /// Whether a sample at `t` comes before the window of `width` ending at `reference`: true
    /// of a prefix of any time-ordered series.
    pub fn before_window(self, t: i64, reference: i64, width: i64) -> bool {
        let start = window_start(reference, width);
        if self.left_open {
            t <= start
        } else {
            t < start
        }
    }

    /// The first multiple of `step` inside the window of `width` ending at `reference` (the
    /// first step of a subquery), or `None` when it lies beyond `i64`.
    pub fn first_step(self, reference: i64, width: i64, step: i64) -> Option<i64> {
        let (start, step) = (i128::from(window_start(reference, width)), i128::from(step.max(1)));
        let mut first = start.div_euclid(step) * step;
        if first < start || (self.left_open && first == start) {
            first += step;
        }
        i64::try_from(first).ok()
    }
}

/// Whether a sample at `t` comes after a window ending at `reference`: false of a prefix of
/// any time-ordered series.
pub fn after_window(t: i64, reference: i64) -> bool {
    t > reference
}

/// Where a window of `width` ending at `reference` begins (the boundary that rate
/// extrapolation measures from, whether or not the window includes it).
pub fn window_start(reference: i64, width: i64) -> i64 {
    reference.saturating_sub(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_3_leaves_the_start_out_and_prometheus_2_keeps_it() {
        let (v3, v2) = (Bounds::new(Semantics::Prometheus3), Bounds::new(Semantics::Prometheus2));
        // A 5m window ending at 10m: a sample at exactly 5m.
        assert!(!v3.in_window(300_000, 600_000, 300_000));
        assert!(v2.in_window(300_000, 600_000, 300_000));
        for b in [v3, v2] {
            assert!(b.in_window(300_001, 600_000, 300_000));
            assert!(b.in_window(600_000, 600_000, 300_000));
            assert!(!b.in_window(600_001, 600_000, 300_000));
        }
        // A subquery [10m:1m] at 10m: steps from 1m (Prometheus 3) or 0 (Prometheus 2).
        assert_eq!(v3.first_step(600_000, 600_000, 60_000), Some(60_000));
        assert_eq!(v2.first_step(600_000, 600_000, 60_000), Some(0));
        assert_eq!(v3.first_step(-7, 0, 5), Some(-5));
        assert_eq!(v3.first_step(-10, 0, 5), Some(-5));
        assert_eq!(v2.first_step(-10, 0, 5), Some(-10));
        assert_eq!(v2.first_step(i64::MAX, 0, 10), None);
        assert_eq!(v3.first_step(i64::MAX, 0, 7), None);
    }
}
