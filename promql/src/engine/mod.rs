//! Runs queries: parse, fetch what the query will read, evaluate.

mod aggregate;
mod binary;
mod boundaries;
pub use boundaries::Semantics;
mod eval;
pub(crate) mod functions;
mod histogram_stats;
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
    /// `promql-delayed-name-removal`: functions and operators that drop the metric name mark
    /// it to be dropped when evaluation ends instead, so that `by (__name__)`, `on(__name__)`,
    /// `label_replace` and `label_join` still see it (and may keep it).
    pub delayed_name_removal: bool,
    /// `use-start-timestamps`: `rate`, `irate`, `increase` and `resets` of a selector take a
    /// sample whose start timestamp is after the previous sample for a counter reset
    /// (Prometheus' `isStartTimestampReset`). Only sources that keep start timestamps give
    /// any ([`crate::value::Series::start_times`]).
    pub use_start_timestamps: bool,
}

impl Features {
    /// The names this engine knows, as Prometheus' `--enable-feature` spells them.
    pub const NAMES: [&'static str; 4] = [
        "promql-experimental-functions",
        "promql-binop-fill-modifiers",
        "promql-delayed-name-removal",
        "use-start-timestamps",
    ];

    /// Every feature: what Prometheus' own PromQL test harness enables.
    pub const fn all() -> Features {
        Features {
            experimental_functions: true,
            binop_fill_modifiers: true,
            delayed_name_removal: true,
            use_start_timestamps: true,
        }
    }

    /// Prometheus' other PromQL feature names: accepted, and reported as ignored by
    /// [`Features::from_names`] (always on here, or not implemented).
    pub const IGNORED: [&'static str; 6] = [
        "promql-duration-expr",
        "promql-at-modifier",
        "promql-negative-offset",
        "promql-per-step-stats",
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
                "promql-delayed-name-removal" => features.delayed_name_removal = true,
                "use-start-timestamps" => features.use_start_timestamps = true,
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
        let original = query;
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
        let original = original.to_string();
        tokio::task::spawn_blocking(move || {
            let (value, mut annotations) = eval::evaluate(&expr, &data, start, end, step, &options, deadline)?;
            annotations.locate(&original, &expr);
            Ok((value, annotations))
        })
        .await
        .map_err(|e| QueryError::Execution(format!("query evaluation failed: {e}")))?
    }
}

/// The instant after which evaluation gives up; checked between steps.
fn deadline_after(timeout: Duration) -> std::time::Instant {
    std::time::Instant::now() + timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::memory::MemorySource;
    use crate::value::Sample;

    /// Two counters of one job, every 5m from 0 (`metric_total` 0 60 120, `another_total` 60
    /// 120 180), and `a` (1 at 0) and `b` (3 at 0, 4 at 10m), every 10m.
    fn source() -> MemorySource {
        let mut s = MemorySource::new();
        let every = |step: i64, values: &[f64]| -> Vec<Sample> {
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| Sample { t: i as i64 * step, v })
                .collect()
        };
        let series = |name: &str| Labels::from_pairs(&[("__name__", name), ("env", "1")]);
        s.add(series("metric_total"), every(300_000, &[0.0, 60.0, 120.0]));
        s.add(series("another_total"), every(300_000, &[60.0, 120.0, 180.0]));
        s.add(Labels::from_pairs(&[("__name__", "a")]), every(600_000, &[1.0]));
        s.add(Labels::from_pairs(&[("__name__", "b")]), every(600_000, &[3.0, 4.0]));
        s
    }

    fn engine(delayed_name_removal: bool) -> Engine {
        Engine::new(EngineOptions {
            features: Features {
                delayed_name_removal,
                ..Features::all()
            },
            ..EngineOptions::default()
        })
    }

    /// The instant query at 10m, each element as `labels value`, or the error.
    async fn at_10m(engine: &Engine, query: &str) -> String {
        match engine.instant_query(&source(), query, 600_000).await {
            Ok(Value::Vector(v)) => v
                .iter()
                .map(|s| format!("{} {}", s.labels, s.v))
                .collect::<Vec<_>>()
                .join("; "),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[tokio::test]
    async fn resets_reads_start_timestamps_over_anchored_and_mixed_windows() {
        // A counter 10, 20, 30, 40 at 0, 1m, 2m, 3m that restarted at 1m30s: the sample at 2m
        // started after the one before it.
        let counter = Labels::from_pairs(&[("__name__", "c_total")]);
        let mut s = MemorySource::new();
        s.add_with_start_times(
            counter.clone(),
            [
                (0, 10.0, 0),
                (60_000, 20.0, 0),
                (120_000, 30.0, 90_000),
                (180_000, 40.0, 0),
            ]
            .map(|(t, v, start)| (Sample { t, v }, start)),
        );
        let at_3m = |engine: Engine, query: &'static str| {
            let s = s.clone();
            async move {
                match engine.instant_query(&s, query, 180_000).await.unwrap() {
                    Value::Vector(v) => v.iter().map(|x| x.v).collect::<Vec<_>>(),
                    other => panic!("{other:?}"),
                }
            }
        };
        for query in ["resets(c_total[3m])", "resets(c_total[3m] anchored)"] {
            assert_eq!(at_3m(engine(true), query).await, vec![1.0], "{query}");
            let without = Engine::new(EngineOptions {
                features: Features {
                    use_start_timestamps: false,
                    ..Features::all()
                },
                ..EngineOptions::default()
            });
            assert_eq!(at_3m(without, query).await, vec![0.0], "{query} without the feature");
        }
        // A subquery's points carry no start timestamps.
        assert_eq!(at_3m(engine(true), "resets(c_total[3m:1m])").await, vec![0.0]);
    }

    #[tokio::test]
    async fn delayed_name_removal_keeps_the_name_until_the_end() {
        let (off, on) = (engine(false), engine(true));
        for (query, without, with) in [
            // The name is there for label_replace to keep...
            (
                r#"label_replace(rate(metric_total[10m]), "__name__", "$1", "__name__", "(.+)")"#,
                r#"{env="1"} 0.2"#,
                r#"{__name__="metric_total", env="1"} 0.2"#,
            ),
            (
                r#"label_replace(rate(metric_total[10m]), "was", "$1", "__name__", "(.+)")"#,
                r#"{env="1"} 0.2"#,
                r#"{env="1", was="metric_total"} 0.2"#,
            ),
            // ...and for `by (__name__)` to group by, dropped when evaluation ends.
            (
                r#"sum by (__name__) (rate({env="1"}[10m]))"#,
                "error: vector cannot contain metrics with the same labelset",
                "error: vector cannot contain metrics with the same labelset",
            ),
            (
                r#"sum by (env) (rate({env="1"}[10m]))"#,
                "error: vector cannot contain metrics with the same labelset",
                r#"{env="1"} 0.4"#,
            ),
            (r#"sum by (__name__) (metric_total * 2)"#, "{} 240", "{} 240"),
            (
                r#"sum by (__name__) (metric_total)"#,
                r#"{__name__="metric_total"} 120"#,
                r#"{__name__="metric_total"} 120"#,
            ),
            // Arithmetic between vectors drops it there and then.
            (
                r#"sum by (__name__) (metric_total + another_total)"#,
                "{} 300",
                "{} 300",
            ),
            (
                r#"metric_total <= bool another_total"#,
                r#"{env="1"} 1"#,
                r#"{env="1"} 1"#,
            ),
            // As Prometheus' VectorBinop, a comparison between vectors keeps the name of an
            // element whose name a function had marked.
            (
                r#"rate(metric_total[10m]) > (another_total * 0)"#,
                r#"{env="1"} 0.2"#,
                r#"{__name__="metric_total", env="1"} 0.2"#,
            ),
            (r#"rate(metric_total[10m]) > 0"#, r#"{env="1"} 0.2"#, r#"{env="1"} 0.2"#),
            (
                r#"topk(1, sum by (__name__, env) (rate(metric_total[10m])))"#,
                r#"{env="1"} 0.2"#,
                r#"{env="1"} 0.2"#,
            ),
        ] {
            assert_eq!(at_10m(&off, query).await, without, "{query} without");
            assert_eq!(at_10m(&on, query).await, with, "{query} with");
        }
    }

    #[tokio::test]
    async fn series_left_with_the_same_labels_merge_when_their_steps_do_not_overlap() {
        let source = source();
        for delayed in [false, true] {
            let got = engine(delayed)
                .range_query(&source, "-a or -b", 0, 1_200_000, 600_000)
                .await
                .unwrap();
            let Value::Matrix(m) = got else { panic!("{got:?}") };
            assert_eq!(m.len(), 1, "{m:?}");
            assert_eq!(m[0].labels, Labels::default());
            let points: Vec<(i64, f64)> = m[0].samples.iter().map(|s| (s.t, s.v)).collect();
            assert_eq!(points, [(0, -1.0), (600_000, -4.0)], "delayed: {delayed}");
        }
        // Overlapping, they are an error.
        let got = engine(true)
            .range_query(&source, r#"rate({env="1"}[10m])"#, 600_000, 600_000, 60_000)
            .await;
        assert!(
            matches!(&got, Err(QueryError::Execution(m)) if m == "vector cannot contain metrics with the same labelset"),
            "{got:?}"
        );
    }

    #[test]
    fn delayed_name_removal_is_named_as_in_prometheus() {
        let (features, ignored) = Features::from_names(["promql-delayed-name-removal"]).unwrap();
        assert!(features.delayed_name_removal && ignored.is_empty());
        assert!(!Features::default().delayed_name_removal);
    }

    /// The API's warnings and infos of an instant query at 10m.
    async fn annotations_at_10m(query: &str) -> (Vec<String>, Vec<String>) {
        let (_, annotations) = engine(false)
            .instant_query_annotated(&source(), query, 600_000)
            .await
            .unwrap();
        annotations.as_strings(0, 0)
    }

    #[tokio::test]
    async fn annotations_end_with_where_their_expression_starts_in_the_query() {
        let not_a_counter =
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"b\"";
        // rate's info is about its argument: line 2, column 8 (`b`).
        let (_, infos) = annotations_at_10m("sum by (env) (\n  rate(b[20m] @ 600 offset -1s)\n)").await;
        assert_eq!(infos, [format!("{not_a_counter} (2:8)")]);
        // The same message twice: the position of the last evaluated, as Prometheus keeps it.
        let (_, infos) = annotations_at_10m("rate(b[20m]) + on() group_left rate(b[20m])").await;
        assert_eq!(infos, [format!("{not_a_counter} (1:37)")]);
        // An aggregation's parameter out of range: about the parameter (with its sign).
        let (warnings, _) = annotations_at_10m("quantile(-2, b)").await;
        assert_eq!(
            warnings,
            ["PromQL warning: quantile value should be between 0 and 1, got -2 (1:10)"]
        );
        // Several quantiles: about the one out of range; the buckets' warning about the
        // histograms, the first argument there.
        let (warnings, _) = annotations_at_10m("histogram_quantiles(b, \"q\", 0.5, 2)").await;
        assert_eq!(
            warnings,
            [
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"\" for metric name \"b\" (1:21)",
                "PromQL warning: quantile value should be between 0 and 1, got 2 (1:34)"
            ]
        );
        // In a range query, the last in Prometheus' order of evaluation (the right operand,
        // evaluated over the whole range after the left), though the left one raises it at
        // the last step and the right one only at the first.
        let (_, annotations) = engine(false)
            .range_query_annotated(
                &source(),
                "rate(b[11m]) or rate(b[11m] offset -10m)",
                0,
                600_000,
                60_000,
            )
            .await
            .unwrap();
        assert_eq!(annotations.as_strings(0, 0).1, [format!("{not_a_counter} (1:22)")]);
        // sort in a range query: about the call itself.
        let (_, annotations) = engine(false)
            .range_query_annotated(&source(), "1 + sort(b)", 0, 600_000, 60_000)
            .await
            .unwrap();
        assert_eq!(
            annotations.as_strings(0, 0).0,
            [
                "PromQL warning: sort is ineffective for range queries since results are always ordered by labels (1:5)"
            ]
        );
    }
}
