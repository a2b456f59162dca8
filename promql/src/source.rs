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
}

pub trait SeriesSource: Send + Sync {
    /// Every series matching all `matchers` that has samples in `[hints.start, hints.end]`,
    /// with those samples (more are allowed), in time order. Stale markers are kept.
    fn select<'a>(
        &'a self,
        matchers: &'a [Matcher],
        hints: &'a SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, QueryError>>;
}
