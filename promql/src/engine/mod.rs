//! Runs queries: parse, fetch what the query will read, evaluate.

mod aggregate;
mod binary;
mod boundaries;
pub use boundaries::Semantics;
mod eval;
pub(crate) mod functions;
mod index;
mod plan;

pub(crate) use plan::matchers;

use std::time::Duration;

use crate::annotations::Annotations;
use crate::error::QueryError;
use crate::source::SeriesSource;
use crate::value::Value;

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant vector selector looks for a sample (Prometheus'
    /// `--query.lookback-delta`, 5 minutes).
    pub lookback_delta_ms: i64,
    /// The step of subqueries that give none (Prometheus' global evaluation interval).
    pub default_subquery_step_ms: i64,
    /// The most samples a query may hold in memory at once (`--query.max-samples`).
    pub max_samples: usize,
    /// The most raw samples a query may read from storage, all its selectors together:
    /// what they read is held in memory while the query runs.
    pub max_fetched_samples: usize,
    /// How long a query may run (`--query.timeout`).
    pub timeout: Duration,
    /// The deepest expression tree a query may have (see [`crate::parse`]).
    pub max_depth: usize,
    /// Whose rules apply where Prometheus 2 and 3 differ (see [`boundaries`]).
    pub semantics: Semantics,
    /// Prometheus' optional PromQL features: none by default, as in Prometheus.
    pub features: Features,
}

/// The PromQL features Prometheus 3 keeps behind `--enable-feature`, by the same names.
/// (`promql-duration-expr` is no flag any more: duration expressions are always read.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `promql-experimental-functions`: the functions [`crate::FUNCTIONS`] marks experimental,
    /// and the aggregations `limitk` and `limit_ratio`.
    pub experimental_functions: bool,
    /// `promql-binop-fill-modifiers`: `fill`, `fill_left` and `fill_right` in vector matching.
    pub binop_fill_modifiers: bool,
}

impl Features {
    /// The names this engine knows, as Prometheus' `--enable-feature` spells them.
    pub const NAMES: [&'static str; 2] = ["promql-experimental-functions", "promql-binop-fill-modifiers"];

    /// Every feature: what Prometheus' own PromQL test harness enables.
    pub fn all() -> Features {
        Features {
            experimental_functions: true,
            binop_fill_modifiers: true,
        }
    }

    /// Prometheus' other PromQL feature names: accepted, and reported as ignored by
    /// [`Features::from_names`] (always on here, or not implemented).
    pub const IGNORED: [&'static str; 7] = [
        "promql-duration-expr",
        "promql-at-modifier",
        "promql-negative-offset",
        "promql-per-step-stats",
        "promql-delayed-name-removal",
        "promql-extended-range-selectors",
        "promql-unquoted-utf8-names",
    ];

    /// The features of a list of names, each possibly a comma-separated list itself (empty
    /// entries skipped), and the names among them this engine ignores.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(Features, Vec<&'a str>), String> {
        let mut features = Features::default();
        let mut ignored = Vec::new();
        for name in names
            .into_iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            match name {
                "promql-experimental-functions" => features.experimental_functions = true,
                "promql-binop-fill-modifiers" => features.binop_fill_modifiers = true,
                _ if Features::IGNORED.contains(&name) => ignored.push(name),
                other => {
                    return Err(format!(
                        "unknown PromQL feature {other:?}; known: {} (and, ignored: {})",
                        Features::NAMES.join(", "),
                        Features::IGNORED.join(", ")
                    ))
                }
            }
        }
        Ok((features, ignored))
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            default_subquery_step_ms: 60 * 1000,
            max_samples: 50_000_000,
            max_fetched_samples: 200_000_000,
            timeout: Duration::from_secs(120),
            max_depth: crate::parse::MAX_DEPTH,
            semantics: Semantics::default(),
            features: Features::default(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub options: EngineOptions,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Self {
        Engine { options }
    }

    /// Evaluates `query` at `time_ms`: a scalar, string, vector or (for a range selector or
    /// subquery) matrix.
    pub async fn instant_query(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        time_ms: i64,
    ) -> Result<Value, QueryError> {
        Ok(self.instant_query_annotated(source, query, time_ms).await?.0)
    }

    /// [`Engine::instant_query`] with the warnings and infos of its evaluation.
    pub async fn instant_query_annotated(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        time_ms: i64,
    ) -> Result<(Value, Annotations), QueryError> {
        self.run(source, query, time_ms, time_ms, 0).await
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms`: always a matrix (a
    /// scalar query gives one series without labels).
    pub async fn range_query(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, QueryError> {
        Ok(self
            .range_query_annotated(source, query, start_ms, end_ms, step_ms)
            .await?
            .0)
    }

    /// [`Engine::range_query`] with the warnings and infos of its evaluation.
    pub async fn range_query_annotated(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<(Value, Annotations), QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        self.run(source, query, start_ms, end_ms, step_ms).await
    }

    async fn run(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(Value, Annotations), QueryError> {
        // Boxed: fetched series are keyed by their selector's address, which must not change
        // when the tree moves to the evaluating thread.
        let query = crate::durations::resolve(query, step, end.saturating_sub(start))?;
        let expr = Box::new(crate::parse::parse_with(
            &query,
            self.options.max_depth,
            self.options.features,
        )?);
        // Prometheus 3 renamed holt_winters to double_exponential_smoothing.
        if self.options.semantics == Semantics::Prometheus3 && crate::parse::calls(&expr, "holt_winters") {
            return Err(QueryError::BadData(
                "unknown function with name \"holt_winters\"".into(),
            ));
        }
        let deadline = deadline_after(self.options.timeout);
        let data = plan::fetch(source, &expr, start, end, step, &self.options).await?;
        // Evaluation is CPU-bound: off the async workers, so that other requests go on.
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || eval::evaluate(&expr, &data, start, end, step, &options, deadline))
            .await
            .map_err(|e| QueryError::Execution(format!("query evaluation failed: {e}")))?
    }
}

/// The instant after which evaluation gives up; checked between steps.
fn deadline_after(timeout: Duration) -> std::time::Instant {
    std::time::Instant::now() + timeout
}
