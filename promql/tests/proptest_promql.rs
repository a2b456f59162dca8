//! Property tests of the PromQL entry points: [`parse`] never panics, whatever the text, and
//! queries that parse evaluate (instant and range) to a value or an error, never a panic,
//! against a small in-memory data set with a small sample limit and a short timeout.
//!
//! Queries come from a small grammar of PromQL (selectors, every function the parser knows,
//! aggregations, operators with their modifiers, subqueries, offsets, `@`, numbers and
//! durations of every size), from a soup of its tokens, and from arbitrary text. Each property
//! runs a bounded number of cases with a fresh seed; a failure prints the shrunk query: keep
//! it as a plain `#[test]` in the regression section at the end.

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use promscale_promql::parse::{depth_bound, parse, MAX_DEPTH};
use promscale_promql::{
    Engine, EngineOptions, Labels, MemorySource, QueryError, Sample, SelectHints, SeriesSource, Value,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

/// `cases` cases, or as many as `PROPTEST_CASES` says, to fuzz longer by hand.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        max_shrink_iters: 2_000,
        max_shrink_time: 30_000,
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------
// The grammar
// ---------------------------------------------------------------------------------------

const METRICS: &[&str] = &[
    "up",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "gauge",
    "sparse",
    "missing",
];

/// Names promql-parser knows that the engine does not evaluate: [`parse`] refuses them as
/// unknown (used only by the loose grammar and the token soup).
const NEWER_FUNCTIONS: &[&str] = &["integral", "start_timestamp"];

/// Every function name the parser knows: the engine's table, then the newer ones.
static FUNCTIONS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    promscale_promql::FUNCTIONS
        .iter()
        .map(|&(name, ..)| name)
        .chain(NEWER_FUNCTIONS.iter().copied())
        .collect()
});

static RANGE_FUNCTIONS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    promscale_promql::FUNCTIONS
        .iter()
        .filter(|(_, kind)| *kind == promscale_promql::FunctionKind::Range)
        .map(|&(name, ..)| name)
        .collect()
});

const AGGREGATIONS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "group",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];

const BINARY_OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless", "atan2",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "0.5",
    "-1",
    "0.9",
    "1e308",
    "1e309",
    "-1e309",
    "1e-320",
    "Inf",
    "-Inf",
    "NaN",
    "0x1F",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    ".5",
    "5.",
    "1_000",
];

const DURATIONS: &[&str] = &[
    "0s",
    "1ms",
    "1s",
    "15s",
    "30s",
    "1m",
    "5m",
    "90s",
    "1h",
    "1h30m",
    "1d",
    "1w",
    "1y",
    "10y",
    "292y",
    "9999999999999d",
    "100000000000000y",
    "1.5",
    "1e300",
    "0.001",
    "60",
];

const LABELS: &[&str] = &["job", "instance", "code", "le", "__name__", "nope"];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    proptest::sample::select(list).prop_map(str::to_string)
}

fn matcher() -> impl Strategy<Value = String> + Clone {
    let value = prop_oneof![
        8 => pick(&["a", "b", "1", "200", "", ".*", ".+", "a|b", "0.1|\\\\+Inf", "up", "(?i)A", "5..", "+Inf", "\\n\\u00e9"]),
        1 => pick(&["(", "[a-", "x{2,1}", "\\\\", "\\+"]),
    ];
    (
        prop_oneof![6 => pick(&LABELS[..4]), 1 => pick(&LABELS[4..])],
        pick(&["=", "!=", "=~", "!~"]),
        value,
    )
        .prop_map(|(l, op, v)| format!("{l}{op}\"{v}\""))
}

fn modifier() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => Just(String::new()),
        1 => pick(DURATIONS).prop_map(|d| format!(" offset {d}")),
        1 => pick(DURATIONS).prop_map(|d| format!(" offset -{d}")),
        1 => prop_oneof![pick(NUMBERS), Just("start()".to_string()), Just("end()".to_string()), Just("300".to_string()), Just("-300".to_string())]
            .prop_map(|at| format!(" @ {at}")),
    ]
}

fn selector() -> impl Strategy<Value = String> + Clone {
    (
        prop_oneof![3 => pick(METRICS), 1 => Just(String::new())],
        vec(matcher(), 0..3),
    )
        .prop_map(|(name, matchers)| {
            if matchers.is_empty() && name.is_empty() {
                "{__name__=~\".+\"}".to_string()
            } else if matchers.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", matchers.join(","))
            }
        })
}

fn matrix() -> impl Strategy<Value = String> + Clone {
    (selector(), pick(DURATIONS), modifier()).prop_map(|(s, d, m)| format!("{s}[{d}]{m}"))
}

fn grouping() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        2 => Just(String::new()),
        1 => (pick(&["by", "without"]), vec(pick(LABELS), 0..3)).prop_map(|(k, l)| format!(" {k} ({}) ", l.join(", "))),
    ]
}

fn vector_matching() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => Just(String::new()),
        1 => Just(" bool".to_string()),
        1 => (pick(&["on", "ignoring"]), vec(pick(LABELS), 0..3)).prop_map(|(k, l)| format!(" {k}({})", l.join(","))),
        1 => (pick(&["on", "ignoring"]), vec(pick(LABELS), 0..2), pick(&["group_left", "group_right"]), vec(pick(LABELS), 0..2))
            .prop_map(|(k, l, g, e)| format!(" {k}({}) {g}({})", l.join(","), e.join(","))),
    ]
}

/// Durations of ranges and subqueries: mostly of minutes, sometimes tiny or huge (`0s` is
/// left to the loose grammar: the parser refuses it).
fn range_duration() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        6 => pick(&["15s", "30s", "1m", "5m", "90s", "10m", "1h"]),
        1 => pick(&["1ms", "1s", "1d", "1w", "1y", "10y", "9999999999999d"]),
    ]
}

/// Subquery steps: none (the default step), usual ones, tiny and huge ones.
fn step() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => Just(String::new()),
        4 => pick(&["15s", "30s", "1m", "5m"]),
        1 => pick(&["1ms", "1s", "1h", "1d", "1y", "1.5", "100000000000000y"]),
    ]
}

/// A scalar: numbers of every size, functions giving scalars, and `scalar()` of a vector.
fn scalar_leaf() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        6 => pick(&NUMBERS[..NUMBERS.len() - 1]),
        1 => pick(&["time()", "pi()", "scalar(up)", "scalar(sum(gauge))", "scalar(sparse)", "-Inf", "(1 + 2)"]),
    ]
}

/// Well-typed PromQL: instant vectors built from selectors, functions (with their argument
/// types), aggregations, operators, subqueries, offsets and `@`.
fn typed_vector() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        6 => (selector(), modifier()).prop_map(|(s, m)| format!("{s}{m}")),
        3 => (pick(RANGE_FUNCTIONS.as_slice()), selector(), range_duration(), modifier()).prop_map(|(f, s, r, m)| format!("{f}({s}[{r}]{m})")),
        1 => scalar_leaf().prop_map(|s| format!("vector({s})")),
        1 => pick(&["minute()", "year()", "day_of_week()", "days_in_month()", "hour(up)", "month(gauge)"]),
    ];
    leaf.prop_recursive(5, 40, 3, |v| {
        let s = prop_oneof![3 => scalar_leaf(), 1 => v.clone().prop_map(|e| format!("scalar({e})"))];
        prop_oneof![
            // operators
            4 => (v.clone(), pick(BINARY_OPERATORS), vector_matching(), v.clone())
                .prop_map(|(a, op, m, b)| format!("{a} {op}{m} {b}")),
            2 => (v.clone(), pick(&BINARY_OPERATORS[..12]), pick(&["", " bool"]), s.clone(), any::<bool>())
                .prop_map(|(a, op, b, x, left)| if left { format!("{a} {op}{b} {x}") } else { format!("{x} {op}{b} {a}") }),
            1 => v.clone().prop_map(|e| format!("-({e})")),
            1 => v.clone().prop_map(|e| format!("({e})")),
            // functions of a vector, with their scalar and string arguments
            2 => (pick(&["abs", "ceil", "floor", "exp", "ln", "log2", "log10", "sqrt", "sgn", "acos", "acosh", "asin",
                "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "sort", "sort_desc",
                "absent", "timestamp", "histogram_count", "histogram_sum", "day_of_month", "day_of_year",
                "minute"]), v.clone())
                .prop_map(|(f, e)| format!("{f}({e})")),
            2 => (pick(&["round", "clamp_min", "clamp_max"]), v.clone(), s.clone()).prop_map(|(f, e, x)| format!("{f}({e}, {x})")),
            1 => (v.clone(), s.clone(), s.clone()).prop_map(|(e, a, b)| format!("clamp({e}, {a}, {b})")),
            1 => (s.clone(), v.clone()).prop_map(|(q, e)| format!("histogram_quantile({q}, {e})")),
            1 => s.clone().prop_map(|q| format!("histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))")),
            1 => (s.clone(), s.clone(), v.clone()).prop_map(|(a, b, e)| format!("histogram_fraction({a}, {b}, {e})")),
            1 => (v.clone(), pick(&["job", "instance", "x", "__name__", "1bad", ""]), pick(&["$1", "${1}x", ""]), pick(LABELS), pick(&["(.*)", "(a)|(b)", "[", ".+"]))
                .prop_map(|(e, d, r, src, re)| format!("label_replace({e}, \"{d}\", \"{r}\", \"{src}\", \"{re}\")")),
            1 => (v.clone(), pick(&["job", "x", "__name__"]), vec(pick(LABELS), 0..3))
                .prop_map(|(e, d, src)| format!("label_join({e}, \"{d}\", \"-\"{})", src.iter().map(|l| format!(", \"{l}\"")).collect::<String>())),
            // functions of a range: range selectors and subqueries
            3 => (pick(RANGE_FUNCTIONS.as_slice()), v.clone(), range_duration(), step(), modifier())
                .prop_map(|(f, e, r, st, m)| format!("{f}(({e})[{r}:{st}]{m})")),
            1 => (v.clone(), range_duration(), step(), s.clone()).prop_map(|(e, r, st, x)| format!("predict_linear(({e})[{r}:{st}], {x})")),
            1 => (s.clone(), v.clone(), range_duration(), step()).prop_map(|(q, e, r, st)| format!("quantile_over_time({q}, ({e})[{r}:{st}])")),
            1 => (Just("holt_winters"), selector(), range_duration(), s.clone(), s.clone())
                .prop_map(|(f, sel, r, a, b)| format!("{f}({sel}[{r}], {a}, {b})")),
            // aggregations
            3 => (pick(&AGGREGATIONS[..8]), grouping(), v.clone()).prop_map(|(a, g, e)| format!("{a}{g}({e})")),
            2 => (pick(&["topk", "bottomk", "quantile"]), grouping(), s.clone(), v.clone()).prop_map(|(a, g, x, e)| format!("{a}{g}({x}, {e})")),
            1 => (grouping(), pick(&["v", "job", "__name__", "1bad", ""]), v.clone()).prop_map(|(g, l, e)| format!("count_values{g}(\"{l}\", {e})")),
        ]
    })
}

/// A query of any type: mostly instant vectors, also scalars, strings and range vectors.
fn typed_query() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => typed_vector(),
        1 => (scalar_leaf(), pick(&BINARY_OPERATORS[..12]), scalar_leaf()).prop_map(|(a, op, b)| {
            let bool_ = if op.len() == 2 || op == "<" || op == ">" { " bool" } else { "" };
            format!("{a} {op}{bool_} {b}")
        }),
        1 => (typed_vector(), range_duration(), step(), modifier()).prop_map(|(e, r, st, m)| format!("({e})[{r}:{st}]{m}")),
        1 => (selector(), range_duration(), modifier()).prop_map(|(s, r, m)| format!("{s}[{r}]{m}")),
        1 => pick(&["\"a\"", "\"\""]),
    ]
}

/// A PromQL expression from a loose grammar: often well-typed, often not.
fn query() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => (selector(), modifier()).prop_map(|(s, m)| format!("{s}{m}")),
        2 => pick(NUMBERS),
        1 => pick(&["\"a\"", "\"\"", "'x'", "`raw`", "\"\\u00e9\""]),
        1 => pick(&["time()", "pi()", "vector(1)", "minute()", "year()"]),
        2 => (pick(RANGE_FUNCTIONS.as_slice()), matrix()).prop_map(|(f, m)| format!("{f}({m})")),
        1 => matrix(),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            3 => (inner.clone(), pick(BINARY_OPERATORS), vector_matching(), inner.clone())
                .prop_map(|(a, op, m, b)| format!("{a} {op}{m} {b}")),
            1 => (pick(&["-", "+"]), inner.clone()).prop_map(|(op, e)| format!("{op}{e}")),
            1 => inner.clone().prop_map(|e| format!("({e})")),
            3 => (pick(FUNCTIONS.as_slice()), vec(prop_oneof![3 => inner.clone(), 1 => matrix(), 1 => pick(NUMBERS), 1 => pick(&["\"a\"", "\"job\"", "\"(.*)\"", "\"$1\"", "\"\"", "\"1x\""])], 0..5))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            2 => (pick(RANGE_FUNCTIONS.as_slice()), inner.clone(), pick(DURATIONS), prop_oneof![Just(String::new()), pick(DURATIONS)], modifier())
                .prop_map(|(f, e, range, step, m)| format!("{f}(({e})[{range}:{step}]{m})")),
            1 => (pick(&["predict_linear", "quantile_over_time", "holt_winters"]), matrix(), pick(NUMBERS), pick(NUMBERS))
                .prop_map(|(f, m, a, b)| match f.as_str() {
                    "predict_linear" => format!("{f}({m}, {a})"),
                    "quantile_over_time" => format!("{f}({a}, {m})"),
                    _ => format!("{f}({m}, {a}, {b})"),
                }),
            3 => (pick(AGGREGATIONS), grouping(), prop_oneof![pick(NUMBERS), Just("\"v\"".to_string()), inner.clone()], inner.clone())
                .prop_map(|(a, g, p, e)| match a.as_str() {
                    "topk" | "bottomk" | "quantile" | "count_values" | "limitk" | "limit_ratio" => {
                        format!("{a}{g}({p}, {e})")
                    }
                    _ => format!("{a}{g}({e})"),
                }),
            1 => (inner.clone(), pick(DURATIONS), prop_oneof![Just(String::new()), pick(DURATIONS)], modifier())
                .prop_map(|(e, range, step, m)| format!("({e})[{range}:{step}]{m}")),
            1 => (pick(&["histogram_quantile", "histogram_fraction"]), pick(NUMBERS), inner.clone())
                .prop_map(|(f, q, e)| if f == "histogram_fraction" { format!("{f}(0, {q}, {e})") } else { format!("{f}({q}, sum by (le) (rate({e}[5m])))") }),
            1 => (inner.clone(), pick(&["job", "instance", "x", "__name__", "1bad"]), pick(&["(.*)", "$1", "[", "a"]))
                .prop_map(|(e, l, r)| format!("label_replace({e}, \"{l}\", \"$1\", \"job\", \"{r}\")")),
        ]
    })
}

/// Tokens of PromQL, to be put together in any order.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pick(&[
            "(", ")", "{", "}", "[", "]", ",", ":", "@", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "#", "\n", "\"", "'", "`", "=", "=~", "!~", "!=", "start()", "end()", "-", "+",
            "*", "/", "%", "^", "==", "<", ">", "<=", ">=", "and", "or", "unless", "atan2", " ", "\\", "$", "__name__",
            "le", "nan", "inf", "e", "x", ".", "\u{e9}", "\0",
        ]),
        2 => pick(METRICS),
        2 => pick(FUNCTIONS.as_slice()),
        1 => pick(AGGREGATIONS),
        2 => pick(NUMBERS),
        2 => pick(DURATIONS),
        1 => matcher(),
    ]
}

fn any_query_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => typed_query(),
        2 => query(),
        3 => vec(token(), 0..24).prop_map(|t| t.concat()),
        2 => vec(token(), 0..24).prop_map(|t| t.join(" ")),
        1 => any::<String>(),
        1 => "[ -~]{0,40}",
        // a query from the grammar with a piece cut off or doubled
        1 => (query(), any::<prop::sample::Index>(), any::<bool>()).prop_map(|(q, i, double)| {
            let mut cut = i.index(q.len() + 1);
            while !q.is_char_boundary(cut) {
                cut -= 1;
            }
            if double { format!("{q}{}", &q[cut..]) } else { q[..cut].to_string() }
        }),
    ]
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Runs `test` on a thread with a large stack: the grammar's strategies nest deeply, and
/// generating from them in a debug build takes more than a test thread's 2 MiB.
fn with_large_stack(test: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(test)
        .expect("a thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A runtime whose worker has the default 2 MiB stack, like the connector's: queries are
/// parsed, planned (and, by the engine, evaluated) on threads of the usual size.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Any text parses or is refused as bad data; what parses is no deeper than the bound the
/// depth check relies on.
#[test]
fn parse_never_panics() {
    with_large_stack(|| {
        let runtime = runtime();
        TestRunner::new(config(5_000))
            .run(&any_query_text(), |text| {
                let parsed = runtime.block_on(runtime.spawn(async move {
                    let parsed = parse(&text, MAX_DEPTH)
                        .map(|expr| (depth_bound(&text), promscale_promql::parse::tree_depth(&expr)));
                    (text, parsed)
                }));
                let (text, parsed) = parsed.map_err(|e| TestCaseError::fail(format!("parse panicked: {e}")))?;
                match parsed {
                    Ok((bound, depth)) => {
                        prop_assert!(
                            bound >= depth,
                            "{text:?}: depth bound {bound} below the tree's depth {depth}"
                        )
                    }
                    Err(QueryError::BadData(_)) => {}
                    Err(e) => prop_assert!(false, "{text:?}: parse failed with {e:?}, not bad data"),
                }
                Ok(())
            })
            .unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// A few series of each kind over 20 minutes (15 s scrapes), with resets, gaps, NaN, stale
/// markers, infinities and huge values.
fn dataset() -> MemorySource {
    let mut source = MemorySource::new();
    let scrape = |n: i64| (0..n).map(|i| i * 15_000 - 60_000);
    for (job, instance) in [("a", "1"), ("a", "2"), ("b", "1")] {
        source.add(
            Labels::from_pairs(&[("__name__", "up"), ("job", job), ("instance", instance)]),
            scrape(84).map(|t| Sample {
                t,
                v: if (t / 15_000 + instance.len() as i64) % 7 == 0 {
                    0.0
                } else {
                    1.0
                },
            }),
        );
    }
    for code in ["200", "500"] {
        source.add(
            Labels::from_pairs(&[("__name__", "http_requests_total"), ("job", "a"), ("code", code)]),
            scrape(84).map(|t| Sample {
                t,
                v: ((t / 15_000) % 30 * 7) as f64, // resets every 30 scrapes
            }),
        );
    }
    for (le, scale) in [("0.1", 1.0), ("1", 3.0), ("10", 4.0), ("+Inf", 5.0), ("NaN", 5.0)] {
        source.add(
            Labels::from_pairs(&[
                ("__name__", "http_request_duration_seconds_bucket"),
                ("job", "a"),
                ("le", le),
            ]),
            scrape(84).map(|t| Sample {
                t,
                v: (t / 15_000) as f64 * scale,
            }),
        );
    }
    let odd = [
        f64::NAN,
        f64::from_bits(STALE),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e308,
        -1e308,
        5e-324,
        0.5,
        -3.0,
    ];
    source.add(
        Labels::from_pairs(&[("__name__", "gauge"), ("job", "a")]),
        scrape(84).map(|t| Sample {
            t,
            v: odd[(t / 15_000).rem_euclid(odd.len() as i64) as usize],
        }),
    );
    source.add(
        Labels::from_pairs(&[("__name__", "gauge"), ("job", "b"), ("instance", "1")]),
        scrape(84).step_by(5).map(|t| Sample { t, v: t as f64 }),
    );
    source.add(
        Labels::from_pairs(&[("__name__", "sparse"), ("job", "a")]),
        [Sample { t: 300_000, v: 42.0 }],
    );
    source
}

/// Evaluation times: inside the data, around it, and at the ends of i64.
fn eval_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => -120_000i64..1_400_000,
        1 => prop_oneof![Just(0i64), Just(300_000), Just(i64::MAX), Just(i64::MIN), Just(i64::MAX / 1000 * 1000), Just(i64::MIN / 1000 * 1000)],
        1 => any::<i64>(),
    ]
}

/// (start, end, step) of a range query, at most 30 steps.
fn range() -> impl Strategy<Value = (i64, i64, i64)> {
    (
        eval_time(),
        0i64..30,
        prop_oneof![Just(15_000i64), Just(60_000), 1i64..100_000, Just(1), Just(i64::MAX)],
    )
        .prop_map(|(start, n, step)| (start, start.saturating_add(n.saturating_mul(step)), step))
}

fn engine() -> Engine {
    Engine::new(EngineOptions {
        max_samples: 5_000,
        timeout: Duration::from_millis(100),
        features: promscale_promql::Features::all(),
        ..EngineOptions::default()
    })
}

/// A panic during evaluation surfaces as the error of the task that ran it.
fn check(query: &str, result: Result<Value, QueryError>) -> Result<(), TestCaseError> {
    if let Err(e) = &result {
        let message = e.to_string();
        prop_assert!(
            !message.contains("panicked"),
            "{query:?}: evaluation panicked: {message}"
        );
    }
    Ok(())
}

#[test]
fn queries_that_parse_evaluate_without_panicking() {
    with_large_stack(|| {
        let runtime = runtime();
        let source = Arc::new(dataset());
        let engine = Arc::new(engine());
        let strategy = (
            prop_oneof![6 => typed_query(), 2 => query(), 1 => any_query_text()],
            eval_time(),
            range(),
        );
        TestRunner::new(config(1_500))
            .run(&strategy, |(query, time, (start, end, step))| {
                if parse(&query, MAX_DEPTH).is_err() {
                    return Ok(());
                }
                let (source, engine) = (source.clone(), engine.clone());
                let task = runtime.spawn(async move {
                    let instant = engine.instant_query(&*source, &query, time).await;
                    let range = engine.range_query(&*source, &query, start, end, step).await;
                    (query, instant, range)
                });
                let (query, instant, range) = runtime
                    .block_on(task)
                    .map_err(|e| TestCaseError::fail(format!("planning panicked: {e}")))?;
                check(&query, instant)?;
                check(&query, range)
            })
            .unwrap();
    });
}

/// The dataset, read whole: a source that ignores the windows in the hints.
struct WholeSpans(MemorySource);

impl SeriesSource for WholeSpans {
    fn select<'a>(
        &'a self,
        matchers: &'a [promql_parser::label::Matcher],
        hints: &'a SelectHints,
    ) -> futures::future::BoxFuture<'a, Result<Vec<promscale_promql::Series>, QueryError>> {
        Box::pin(async move {
            let whole = SelectHints {
                windows: None,
                ..hints.clone()
            };
            self.0.select(matchers, &whole).await
        })
    }
}

/// A source may leave out the samples between the windows the planner gives it (a week at
/// 30 min steps of `rate(x[5m])` reads a sixth of the samples): answers must not change.
#[test]
fn range_queries_answer_the_same_when_only_their_windows_are_read() {
    with_large_stack(|| {
        let runtime = runtime();
        let windowed = Arc::new(dataset());
        let whole = Arc::new(WholeSpans(dataset()));
        // A run that times out is not compared (the other may have finished).
        let engine = Arc::new(engine());
        // Half the ranges start on the dataset's scrape times, so that samples fall exactly
        // on window edges.
        // Their ends are sometimes past the last step.
        let aligned = (
            (-8i64..90),
            0i64..30,
            prop_oneof![Just(15_000i64), Just(60_000), Just(300_000), Just(45_000)],
            0i64..3,
        )
            .prop_map(|(k, n, step, past)| (k * 15_000, k * 15_000 + n * step + past * step / 3, step));
        // Half the queries are plain selectors and range functions, where every sample of a
        // window counts.
        let plain = (
            pick(RANGE_FUNCTIONS.as_slice()),
            pick(METRICS),
            pick(&["15s", "30s", "45s", "1m", "90s"]),
            modifier(),
            0..3,
        )
            .prop_map(|(f, m, r, at, shape)| match shape {
                0 => format!("{f}({m}[{r}]{at})"),
                1 => format!("sum by (job) ({f}({m}[{r}]{at}))"),
                _ => format!("{m}{at}"),
            });
        let strategy = (
            prop_oneof![typed_query(), plain],
            prop_oneof![range(), aligned],
            eval_time(),
        );
        TestRunner::new(config(1_500))
            .run(&strategy, |(query, (start, end, step), time)| {
                let (windowed, whole, engine) = (windowed.clone(), whole.clone(), engine.clone());
                let task = runtime.spawn(async move {
                    let answers = [
                        engine.range_query(&*windowed, &query, start, end, step).await,
                        engine.range_query(&*whole, &query, start, end, step).await,
                        engine.instant_query(&*windowed, &query, time).await,
                        engine.instant_query(&*whole, &query, time).await,
                    ];
                    (query, answers.map(|a| format!("{a:?}")))
                });
                let (query, [range_windowed, range_whole, instant_windowed, instant_whole]) = runtime
                    .block_on(task)
                    .map_err(|e| TestCaseError::fail(format!("evaluation panicked: {e}")))?;
                let timed_out = |a: &String| a.contains("Timeout(");
                if [&range_windowed, &range_whole, &instant_windowed, &instant_whole]
                    .into_iter()
                    .any(timed_out)
                {
                    return Ok(());
                }
                prop_assert_eq!(
                    range_windowed,
                    range_whole,
                    "range query {:?} from {} to {} by {}",
                    query,
                    start,
                    end,
                    step
                );
                prop_assert_eq!(instant_windowed, instant_whole, "instant query {:?} at {}", query, time);
                Ok(())
            })
            .unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// Regressions: inputs the properties above once failed on
// ---------------------------------------------------------------------------------------

/// Functions the parser knows but Prometheus 2.42 does not were evaluated anyway: to an empty
/// vector (`histogram_avg(up)`) or to a misleading type error (`sort_by_label(up, "job")`:
/// "expected scalar, got string"). They are evaluated as Prometheus 3 does now; what the
/// engine does not evaluate (`integral`) is an unknown function.
#[test]
fn functions_newer_than_prometheus_2_42_are_evaluated_as_prometheus_3_does() {
    let runtime = runtime();
    let source = dataset();
    let engine = engine();
    let run = |q: &str| runtime.block_on(engine.instant_query(&source, q, 300_000));
    // Functions of native histograms skip float samples.
    assert_eq!(run("histogram_avg(up)"), Ok(Value::Vector(vec![])));
    // sort_by_label orders by the label, whatever the input order.
    let Ok(Value::Vector(sorted)) = run("sort_by_label(up, \"instance\")") else {
        panic!("sort_by_label did not return a vector")
    };
    let instances: Vec<&str> = sorted.iter().map(|s| s.labels.get("instance")).collect();
    let mut expected = instances.clone();
    expected.sort();
    assert!(!instances.is_empty());
    assert_eq!(instances, expected);
    // double_exponential_smoothing is Prometheus 2's holt_winters renamed (compared as text:
    // NaN is not NaN); Prometheus 3 no longer knows holt_winters.
    let prometheus_2 = Engine::new(EngineOptions {
        semantics: promscale_promql::Semantics::Prometheus2,
        features: promscale_promql::Features::all(),
        ..EngineOptions::default()
    });
    // Prometheus 2 reads series in labels order, Prometheus 3 in the order they were created.
    let by_labels = |r: Result<Value, QueryError>| match r {
        Ok(Value::Vector(mut v)) => {
            v.sort_by(|a, b| a.labels.cmp(&b.labels));
            format!("{v:?}")
        }
        other => format!("{other:?}"),
    };
    assert_eq!(
        by_labels(run("double_exponential_smoothing(gauge[5m], 0.5, 0.5)")),
        by_labels(runtime.block_on(prometheus_2.instant_query(&source, "holt_winters(gauge[5m], 0.5, 0.5)", 300_000)))
    );
    match run("holt_winters(gauge[5m], 0.5, 0.5)") {
        Err(QueryError::BadData(m)) => assert!(m.contains("unknown function"), "{m}"),
        other => panic!("{other:?}"),
    }
    // info() without any target_info series leaves its argument as it is.
    assert_eq!(run("info(up)"), run("up"));
    match run("integral(up[5m])") {
        Err(QueryError::BadData(m)) => assert!(m.contains("unknown function"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// `histogram_fraction` of float samples failed with "expected instant vector, got scalar";
/// Prometheus 2.42 skips float samples in the functions of native histograms, Prometheus 3
/// takes classic histogram buckets in histogram_fraction.
#[test]
fn functions_of_native_histograms_skip_float_samples() {
    let runtime = runtime();
    let source = dataset();
    let engine = engine();
    let prometheus_2 = Engine::new(EngineOptions {
        semantics: promscale_promql::Semantics::Prometheus2,
        features: promscale_promql::Features::all(),
        ..EngineOptions::default()
    });
    let fraction = "histogram_fraction(0, 1, http_request_duration_seconds_bucket)";
    for (engine, query) in [
        (&prometheus_2, fraction),
        (&engine, "histogram_count(up)"),
        (&engine, "histogram_sum(up)"),
    ] {
        let value = runtime.block_on(engine.instant_query(&source, query, 300_000));
        assert_eq!(value, Ok(Value::Vector(vec![])), "{query}");
    }
    match runtime.block_on(engine.instant_query(&source, fraction, 300_000)) {
        Ok(Value::Vector(v)) => assert!(!v.is_empty() && v.iter().all(|s| (0.0..=1.0).contains(&s.v))),
        other => panic!("{other:?}"),
    }
}

/// Prometheus warns that sort is ineffective wherever it is evaluated over a range: in a
/// range query, and inside a subquery of an instant query (a subquery has an evaluator of its
/// own), but not in an instant query.
#[test]
fn sort_warns_where_it_is_evaluated_over_a_range() {
    let runtime = runtime();
    let source = dataset();
    let engine = engine();
    let warned = |annotations: promscale_promql::Annotations| {
        annotations.warnings.iter().any(|w| w.contains("sort is ineffective"))
    };
    let instant = |q: &str| {
        runtime
            .block_on(engine.instant_query_annotated(&source, q, 300_000))
            .unwrap()
            .1
    };
    assert!(!warned(instant("sort(up)")));
    assert!(warned(instant("max_over_time(sort(up)[5m:1m])")));
    let range = runtime
        .block_on(engine.range_query_annotated(&source, "sort(up)", 0, 300_000, 60_000))
        .unwrap()
        .1;
    assert!(warned(range));
}
