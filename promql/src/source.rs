//! Where series come from: the seam between the engine and storage.

use futures::future::BoxFuture;
use promql_parser::label::Matcher;

use crate::error::QueryError;
use crate::value::Series;

/// What the engine will do with a selection, so that a source can read less.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelectHints {
    /// Milliseconds, inclusive: every sample the query may look at lies in [start, end].
    pub start: i64,
    pub end: i64,
    /// The most samples the answer may hold; a source that would return more fails with
    /// [`QueryError::TooManySamples`], as early as it can tell (memory stays bounded).
    /// `None`: no limit.
    pub max_samples: Option<usize>,
    /// When the query looks only at windows spaced wider than they are long (a range query
    /// over a week at 30 min steps of `rate(x[5m])`): samples outside every window may be
    /// left out. `None`: the query may look at any sample in `[start, end]`.
    pub windows: Option<Windows>,
}

/// The windows a selector is evaluated over: `[end - width, end]` (closed, a superset of
/// Prometheus 2's closed and Prometheus 3's left-open windows) for every `end` from
/// `first_end` to `last_end` in steps of `step` (one window when `step` is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub first_end: i64,
    pub last_end: i64,
    pub step: i64,
    pub width: i64,
}

impl Windows {
    /// Whether `t` (ms) lies in one of the windows.
    pub fn contains(&self, t: i64) -> bool {
        if t > self.last_end {
            return false;
        }
        if t <= self.first_end || self.step <= 0 {
            return t >= self.first_end.saturating_sub(self.width);
        }
        // The first window end at or after t.
        let k = (t - self.first_end).div_euclid(self.step) + i64::from((t - self.first_end).rem_euclid(self.step) != 0);
        let end = self.first_end.saturating_add(k.saturating_mul(self.step));
        t >= end.saturating_sub(self.width)
    }
}

pub trait SeriesSource: Send + Sync {
    /// Every series matching all `matchers` that has samples in `[hints.start, hints.end]`,
    /// with those samples (more are allowed), in time order. Stale markers are kept. The
    /// series come in the order they were created, as Prometheus 3 reads its head: which of
    /// equal values `topk`, `bottomk` and `limitk` keep depends on it.
    fn select<'a>(
        &'a self,
        matchers: &'a [Matcher],
        hints: &'a SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, QueryError>>;
}

#[cfg(test)]
mod tests {
    use super::Windows;

    #[test]
    fn windows_hold_exactly_the_samples_of_each_step() {
        // Ends at 100, 160, 220; each 20 wide.
        let w = Windows {
            first_end: 100,
            last_end: 220,
            step: 60,
            width: 20,
        };
        let kept: Vec<i64> = (0..300).filter(|&t| w.contains(t)).collect();
        let expected: Vec<i64> = (80..=100).chain(140..=160).chain(200..=220).collect();
        assert_eq!(kept, expected);
        // An instant query: one window.
        let one = Windows {
            first_end: 100,
            last_end: 100,
            step: 0,
            width: 30,
        };
        let kept: Vec<i64> = (0..300).filter(|&t| one.contains(t)).collect();
        assert_eq!(kept, (70..=100).collect::<Vec<_>>());
        // Negative times and ends far out do not overflow.
        let far = Windows {
            first_end: -1_000,
            last_end: i64::MAX - 1,
            step: i64::MAX / 2,
            width: 10,
        };
        assert!(far.contains(-1_000) && far.contains(-1_010) && !far.contains(-1_011) && !far.contains(0));
    }
}
