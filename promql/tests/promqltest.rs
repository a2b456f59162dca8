//! Runs Prometheus' own PromQL test scripts against our engine, the way Prometheus'
//! `promql/test.go` runs them against its own: those of v2.42.0 under Prometheus 2 semantics,
//! and those of v3.13.2 under Prometheus 3 semantics. Prometheus 3's format adds `eval range`,
//! `expect` lines (annotations and failures included), `load_with_nhcb`, native histogram
//! values and start timestamps (`metric@st` lines), which this runner reads too; a load line it
//! cannot read fails every later eval of its file, as test.go would fail the file. A few evals
//! of v3.13.2 expect what Prometheus' query API does not answer (Prometheus changed them since,
//! or the harness reads an annotation without the details the API gives); the engine answers
//! as the API of the Prometheus the side-by-side tests run, and the runner lists them apart
//! ([`DIFFERING_V3`]).
//!
//! The scripts are not part of this repository: they sit next to the checkout, in
//! `shared/promqltest/<version>`, and are only read from there.
//!
//! For every `eval`, test.go (v2.42) checks more than the instant query the line names:
//!
//! 1. the instant query at the eval time, against the expected lines;
//! 2. the same expression as a range query from t-1m to t+1m with a 1m step, comparing the
//!    points at t (except for `eval_ordered`: order is undefined across a range);
//! 3. unless the expression calls a function whose result depends on the evaluation time
//!    (`time()`, `timestamp()`, `predict_linear()`, `minute()`...) outside a subquery, the
//!    expression with every selector and subquery that is not inside a subquery pinned with
//!    `@ t`, run as 1 and 2 at -10t, 0, t/5, t and 10t (at -1s, 0 and 1s when t is 0): pinned
//!    to t, the result must not change with the evaluation time.
//!
//! Prometheus 3's `eval range` runs the range query alone and compares every step; its
//! instant evals skip step 2 for `start()`, `end()`, `range()` and `step()`, and for results
//! that are range vectors or strings (`expect range vector`, `expect string`).
//!
//! This runner does all of that; an eval passes when every query passes. Expected values match
//! with test.go's relative tolerance (1e-6), and NaN matches NaN.
//!
//! The engine is completed over several sessions, so the test is a ratchet: it fails when a
//! file passes fewer evals than its entry in the version's minimums ([`MINIMUM_PASSING`],
//! [`MINIMUM_PASSING_V3`]), and says when an entry can go up.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use promql_parser::label::{Matcher, Matchers};
use promql_parser::parser::{self as promql, AtModifier, BinModifier, Expr, LabelModifier, VectorMatchCardinality};
use promscale_promql::histogram::{spans_match, CounterResetHint, FloatHistogram, Span};
use promscale_promql::{
    Engine, EngineOptions, Features, HistogramSample, InstantSample, Labels, MemorySource, QueryError, Sample,
    Semantics, Value,
};
use regex::Regex;

/// A version of Prometheus' test scripts, and how its evals are run.
struct Suite {
    version: &'static str,
    /// The fewest evals of each file that must pass. Raise an entry whenever the engine
    /// passes more (the test prints the new numbers); never lower one to make the test pass.
    minimum: &'static [(&'static str, usize)],
    /// Entries that stand in for those of `minimum` (a suite sharing another's table).
    minimum_overrides: &'static [(&'static str, usize)],
    semantics: Semantics,
    /// The optional features on: those Prometheus' test harness of the version enables.
    features: Features,
    /// Evals that expect what Prometheus' query API does not answer (see [`DIFFERING_V3`]).
    differing: &'static [Differing],
}

/// An eval whose expectation is not what Prometheus' query API answers today, where the engine
/// follows the API: a later Prometheus changed the answer (the side-by-side test,
/// `e2e/tests/promql_vs_prometheus.rs`, checks the later answer against that Prometheus
/// wherever its data can hold the case), or the harness reads an annotation without what the
/// API adds to it.
struct Differing {
    file: &'static str,
    line: usize,
    why: &'static str,
}

/// Prometheus 3.13.2's evals whose expectation is not what the query API of Prometheus 3.16
/// (the Prometheus 3 reference built for the tests, `e2e/tools/prometheus3`) answers. Each must
/// fail; one that passes is taken off this list; each passes in 3.16's own copy of its script
/// (`evals_differing_from_3_13_2_pass_in_the_reference_prometheus_own_scripts`).
const DIFFERING_V3: &[Differing] = &[
    Differing {
        file: "fill-modifier.test",
        line: 185,
        why: "Prometheus 3.16 fills the left operand with `fill_left` under `group_right` too (3.13.2 \
              filled the right), as 3.16's own copy of the script expects",
    },
    Differing {
        file: "fill-modifier.test",
        line: 191,
        why: "Prometheus 3.16 fills the right operand with `fill_right` under `group_right` too (3.13.2 \
              filled the left), as 3.16's own copy of the script expects",
    },
    Differing {
        file: "type_and_unit.test",
        line: 265,
        why: "Prometheus 3.16 leaves `__type__` and `__unit__` out of vector matching, so \
              `ignoring(group)` matches, as 3.16's own copy of the script expects",
    },
];

/// Prometheus 2.42's scripts, under Prometheus 2 semantics.
const V2: Suite = Suite {
    version: "v2.42.0",
    minimum: MINIMUM_PASSING,
    minimum_overrides: &[],
    semantics: Semantics::Prometheus2,
    // Prometheus 2.42 had no delayed name removal nor start timestamps; the other features
    // only admit syntax that its scripts do not use.
    features: Features {
        delayed_name_removal: false,
        use_start_timestamps: false,
        ..Features::all()
    },
    differing: &[],
};

/// Prometheus 3.13.2's scripts, under Prometheus 3 semantics.
const V3: Suite = Suite {
    version: "v3.13.2",
    minimum: MINIMUM_PASSING_V3,
    minimum_overrides: &[],
    semantics: Semantics::Prometheus3,
    // What Prometheus 3's harness enables (promqltest's `TestParserOpts` and
    // `NewTestEngine`: delayed name removal and start timestamps included).
    features: Features::all(),
    differing: DIFFERING_V3,
};

/// Prometheus 3.13.2's scripts with every feature but delayed name removal: the connector
/// turns that one on only when asked (`--metrics.promql.enable-feature`), so its default
/// answers are checked too. Names dropped at once fail only where the scripts expect them
/// kept to the end.
const V3_NAMES_DROPPED_AT_ONCE: Suite = Suite {
    version: "v3.13.2",
    minimum: MINIMUM_PASSING_V3,
    // Of 30: 8 expect names kept to the end. Of 522: the info of histogram_quantile's forced
    // monotonicity names the metric only under delayed name removal, in Prometheus too.
    minimum_overrides: &[("name_label_dropping.test", 22), ("native_histograms.test", 521)],
    semantics: Semantics::Prometheus3,
    features: Features {
        delayed_name_removal: false,
        ..Features::all()
    },
    differing: DIFFERING_V3,
};

/// Prometheus 2.42's minimums. Target, every eval passing: 566 in all, each file's total in
/// its comment.
const MINIMUM_PASSING: &[(&str, usize)] = &[
    ("aggregators.test", 83),    // of 83
    ("at_modifier.test", 33),    // of 33
    ("collision.test", 2),       // of 2
    ("functions.test", 207),     // of 207
    ("histograms.test", 38),     // of 38
    ("literals.test", 20),       // of 20
    ("operators.test", 94),      // of 94
    ("selectors.test", 31),      // of 31
    ("staleness.test", 14),      // of 14
    ("subquery.test", 25),       // of 25
    ("trig_functions.test", 19), // of 19
];

/// Prometheus 3.13.2's minimums. Target, every eval passing: 2183 in all, each file's total in
/// its comment.
const MINIMUM_PASSING_V3: &[(&str, usize)] = &[
    ("aggregators.test", 160),        // of 160
    ("at_modifier.test", 71),         // of 71
    ("collision.test", 2),            // of 2
    ("duration_expression.test", 59), // of 59
    ("extended_vectors.test", 169),   // of 169
    ("fill-modifier.test", 44),       // of 46
    ("functions.test", 427),          // of 427
    ("histograms.test", 185),         // of 185
    ("info.test", 42),                // of 42
    ("limit.test", 37),               // of 37
    ("literals.test", 25),            // of 25
    ("name_label_dropping.test", 30), // of 30
    ("native_histograms.test", 522),  // of 522
    ("operators.test", 213),          // of 213
    ("range_queries.test", 18),       // of 18
    ("selectors.test", 31),           // of 31
    ("staleness.test", 17),           // of 17
    ("start_timestamps.test", 18),    // of 18
    ("subquery.test", 34),            // of 34
    ("trig_functions.test", 19),      // of 19
    ("type_and_unit.test", 57),       // of 58
];

/// Failures printed in detail; the others are only counted, so that logs stay readable.
const MAX_DETAILED_FAILURES: usize = 200;
/// Problems listed for one failing query, and characters kept of each printed line.
const MAX_PROBLEMS_SHOWN: usize = 4;
const MAX_LINE_CHARS: usize = 600;

/// test.go's relative tolerance between an expected and a computed value.
const EPSILON: f64 = 0.000001;
/// Prometheus' staleness marker: a NaN with this exact bit pattern.
use promscale_promql::STALE_NAN_BITS;

/// Functions whose result can change with the evaluation time even when their arguments are
/// pinned with `@`, so test.go does not pin expressions that call them (Prometheus'
/// `AtModifierUnsafeFunctions`).
const AT_MODIFIER_UNSAFE_FUNCTIONS: &[&str] = &[
    "end",
    "range",
    "start",
    "step",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
];

#[tokio::test]
async fn prometheus_promql_test_scripts() {
    run_suite(&V2).await;
}

#[tokio::test]
async fn prometheus_3_promql_test_scripts() {
    run_suite(&V3).await;
}

#[tokio::test]
async fn prometheus_3_promql_test_scripts_without_delayed_name_removal() {
    run_suite(&V3_NAMES_DROPPED_AT_ONCE).await;
}

/// Each eval of [`DIFFERING_V3`] passes in the copy of its script that the Prometheus 3 the
/// side-by-side tests run against (`e2e/tools/prometheus3`) carries in its own module: what
/// this engine answers there is what that Prometheus' own tests expect.
#[tokio::test]
async fn evals_differing_from_3_13_2_pass_in_the_reference_prometheus_own_scripts() {
    PROMETHEUS_3_COMPARISON.with(|c| c.set(true));
    let theirs = reference_scripts_dir();
    for d in DIFFERING_V3 {
        let ours = std::fs::read_to_string(testdata_dir(&V3).join(d.file)).unwrap();
        let command = ours.lines().nth(d.line - 1).unwrap().trim_end();
        let path = theirs.join(d.file);
        let their_text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<usize> = their_text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_end() == command)
            .map(|(i, _)| i + 1)
            .collect();
        assert!(
            !lines.is_empty(),
            "{}: {command:?} is not in {}",
            d.file,
            path.display()
        );
        let report = run_file(&V3, &path).await.unwrap();
        for line in lines {
            let failure = report.failures.iter().find(|f| f.line == line);
            assert!(
                failure.is_none(),
                "{}:{line} of the reference's scripts fails: {}",
                d.file,
                failure.map_or("", |f| f.reason.as_str())
            );
        }
    }
}

/// The test scripts of the reference Prometheus 3's module, which `e2e/tools/build.sh
/// prometheus3` (run by `make test`) places beside its binary.
fn reference_scripts_dir() -> PathBuf {
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/tools/build.sh");
    let out = std::process::Command::new("bash")
        .arg(&build)
        .args(["--path", "prometheus3"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", build.display()));
    let binary = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = binary.parent().map(|d| d.join("promqltest")).unwrap_or_default();
    assert!(
        out.status.success() && dir.is_dir(),
        "the reference Prometheus 3 and its test scripts are not there ({}): run \
         `e2e/tools/build.sh prometheus3` (`make test` does)",
        dir.display()
    );
    dir
}

async fn run_suite(suite: &Suite) {
    PROMETHEUS_3_COMPARISON.with(|c| c.set(suite.semantics == Semantics::Prometheus3));
    let dir = testdata_dir(suite);
    assert!(
        dir.is_dir(),
        "Prometheus' PromQL test scripts are missing: no folder {}. They are not part of this \
         repository; the checkout's sibling folder shared/promqltest/{} must hold them.",
        dir.display(),
        suite.version
    );
    let files = script_files(&dir);
    assert!(!files.is_empty(), "no *.test file in {}", dir.display());

    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        match run_file(suite, path).await {
            Ok(report) => reports.push(report),
            Err(problem) => problems.push(problem),
        }
    }
    print_failures(suite, &reports);
    print_unpinned(&reports);
    print_table(suite, &dir, &reports);
    problems.extend(ratchet_problems(suite, &files, &reports));
    assert!(problems.is_empty(), "PromQL test scripts:\n  {}", problems.join("\n  "));
}

/// `shared/promqltest/<version>` beside the repository checkout.
fn testdata_dir(suite: &Suite) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/promqltest")
        .join(suite.version)
}

fn script_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path()
        })
        .filter(|path| path.extension().is_some_and(|ext| ext == "test"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Running files and reporting

/// What happened to one file's evals.
struct FileReport {
    name: String,
    total: usize,
    passed: usize,
    failures: Vec<Failure>,
    /// Evals run without their `@`-pinned variants because promql-parser prints the pinned
    /// expression as something that parses differently: line and printed expression.
    unpinned: Vec<(usize, String)>,
    /// Evals also checked pinned with `@` at other times (the others call time-dependent
    /// functions, or fail before).
    pinned: usize,
}

struct Failure {
    line: usize,
    command: String,
    reason: String,
}

/// Runs one script. An `Err` is a problem with the script or this runner, not the engine.
async fn run_file(suite: &Suite, path: &Path) -> Result<FileReport, String> {
    let name = file_name(path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let commands = parse_script(&text).map_err(|e| format!("{name}: {e}"))?;
    let evals = commands.iter().filter(|c| matches!(c, Command::Eval(_))).count();
    let eval_lines = text.lines().filter(|l| l.starts_with("eval")).count();
    if evals != eval_lines {
        return Err(format!(
            "{name}: runner bug: parsed {evals} evals but {eval_lines} lines start with `eval`"
        ));
    }

    let mut report = FileReport {
        name,
        total: evals,
        passed: 0,
        failures: Vec::new(),
        unpinned: Vec::new(),
        pinned: 0,
    };
    for result in run_script(suite, &commands).await {
        report.pinned += usize::from(result.pinned);
        if let Some(printed) = result.unprintable {
            report.unpinned.push((result.line, printed));
        }
        match result.failure {
            None => report.passed += 1,
            Some(reason) => report.failures.push(Failure {
                line: result.line,
                command: result.command,
                reason,
            }),
        }
    }
    Ok(report)
}

fn differing<'s>(suite: &'s Suite, file: &str, line: usize) -> Option<&'s Differing> {
    suite.differing.iter().find(|s| s.file == file && s.line == line)
}

fn print_failures(suite: &Suite, reports: &[FileReport]) {
    let total: usize = reports.iter().map(|r| r.failures.len()).sum();
    let all = reports
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| (&r.name, f)));
    for (name, failure) in all.take(MAX_DETAILED_FAILURES) {
        if let Some(s) = differing(suite, name, failure.line) {
            println!("DIFFERS {name}:{}: {}", failure.line, truncate(&failure.command));
            println!("    {}", s.why);
            for line in failure.reason.lines() {
                println!("    {}", truncate(line));
            }
            continue;
        }
        println!("FAIL {name}:{}: {}", failure.line, truncate(&failure.command));
        for line in failure.reason.lines() {
            println!("    {}", truncate(line));
        }
    }
    if total > MAX_DETAILED_FAILURES {
        println!(
            "... and {} more failing evals, not shown",
            total - MAX_DETAILED_FAILURES
        );
    }
}

fn print_unpinned(reports: &[FileReport]) {
    let unpinned: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.unpinned
                .iter()
                .map(move |(line, printed)| format!("{}:{line}: {printed}", r.name))
        })
        .collect();
    if unpinned.is_empty() {
        return;
    }
    println!(
        "note: {} evals ran without their @-pinned variants, as promql-parser does not print the pinned \
         expression back faithfully:",
        unpinned.len()
    );
    for line in unpinned.iter().take(10) {
        println!("    {}", truncate(line));
    }
}

fn print_table(suite: &Suite, dir: &Path, reports: &[FileReport]) {
    println!(
        "\nPrometheus {} PromQL test scripts, from {}",
        suite.version,
        dir.display()
    );
    println!("{:<24} {:>13} {:>8}", "file", "passed/total", "minimum");
    for report in reports {
        let minimum = minimum_passing(suite, &report.name);
        let ratio = format!("{}/{}", report.passed, report.total);
        let hint = if report.passed > minimum {
            "  <- raise the minimum"
        } else {
            ""
        };
        println!("{:<24} {ratio:>13} {minimum:>8}{hint}", report.name);
    }
    let passed: usize = reports.iter().map(|r| r.passed).sum();
    let total: usize = reports.iter().map(|r| r.total).sum();
    println!("{:<24} {:>13}", "all", format!("{passed}/{total}"));
    if !suite.differing.is_empty() {
        println!(
            "Of the {} failing, {} expect what Prometheus' API does not answer (DIFFERS above).",
            total - passed,
            suite.differing.len()
        );
    }
    let pinned: usize = reports.iter().map(|r| r.pinned).sum();
    println!("Evals run as instant and range queries; {pinned} also ran pinned with @ at other times.");

    let raised: Vec<String> = reports
        .iter()
        .filter(|r| r.passed > minimum_passing(suite, &r.name))
        .map(|r| format!("    (\"{}\", {}), // of {}", r.name, r.passed, r.total))
        .collect();
    if !raised.is_empty() {
        println!(
            "More evals pass than the {} minimums require; raise these entries in promql/tests/promqltest.rs:",
            suite.version
        );
        println!("{}", raised.join("\n"));
    }
}

fn minimum_passing(suite: &Suite, name: &str) -> usize {
    suite
        .minimum_overrides
        .iter()
        .chain(suite.minimum)
        .find(|(file, _)| *file == name)
        .map_or(0, |(_, minimum)| *minimum)
}

/// Files that fell below their minimum, and table entries without a file.
fn ratchet_problems(suite: &Suite, files: &[PathBuf], reports: &[FileReport]) -> Vec<String> {
    let present: BTreeSet<String> = files.iter().map(|f| file_name(f)).collect();
    let missing = suite
        .minimum
        .iter()
        .chain(suite.minimum_overrides)
        .filter(|(name, _)| !present.contains(*name))
        .map(|(name, _)| format!("{name}: listed in MINIMUM_PASSING but not in the test data folder"));
    let regressed = reports
        .iter()
        .filter(|r| r.passed < minimum_passing(suite, &r.name))
        .map(|r| {
            format!(
                "{}: {} evals pass, fewer than the minimum of {}",
                r.name,
                r.passed,
                minimum_passing(suite, &r.name)
            )
        });
    let failed: BTreeSet<(&str, usize)> = reports
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| (r.name.as_str(), f.line)))
        .collect();
    let ran: BTreeSet<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    let differing_passing = suite
        .differing
        .iter()
        .filter(|s| ran.contains(s.file) && !failed.contains(&(s.file, s.line)))
        .map(|s| {
            format!(
                "{}:{}: passes, though listed in DIFFERING_V3; take it off the list",
                s.file, s.line
            )
        });
    missing.chain(regressed).chain(differing_passing).collect()
}

fn truncate(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluating

struct EvalResult {
    line: usize,
    command: String,
    failure: Option<String>,
    /// The pinned expression, when it could not be used (see [`FileReport::unpinned`]).
    unprintable: Option<String>,
    pinned: bool,
}

async fn run_script(suite: &Suite, commands: &[Command]) -> Vec<EvalResult> {
    let engine = test_engine(suite);
    let mut source = MemorySource::new();
    let mut results = Vec::new();
    // A load this runner could not read in full fails every later eval of the file, as
    // test.go fails the file.
    let mut broken: Option<String> = None;
    for command in commands {
        match command {
            Command::Clear => source.clear(),
            Command::Unreadable(reason) => broken = Some(reason.clone()),
            Command::Eval(eval) if broken.is_some() => results.push(EvalResult {
                line: eval.line,
                command: eval.command.clone(),
                failure: broken.clone(),
                unprintable: None,
                pinned: false,
            }),
            Command::Load(series) => {
                for (labels, loaded) in series {
                    if loaded.start_times.is_empty() {
                        source.add(labels.clone(), loaded.samples.iter().copied());
                    } else {
                        source.add_with_start_times(
                            labels.clone(),
                            loaded.samples.iter().copied().zip(loaded.start_times.iter().copied()),
                        );
                    }
                    source.add_histograms(labels.clone(), loaded.histograms.iter().cloned());
                }
            }
            Command::Eval(eval) => results.push(run_eval(&engine, &source, eval).await),
        }
    }
    results
}

/// The engine configured as test.go configures Prometheus' (the lookback stays the default 5m).
fn test_engine(suite: &Suite) -> Engine {
    Engine::new(EngineOptions {
        max_samples: 10_000,
        timeout: Duration::from_secs(100),
        default_subquery_step_ms: 60_000,
        semantics: suite.semantics,
        features: suite.features,
        ..EngineOptions::default()
    })
}

async fn run_eval(engine: &Engine, source: &MemorySource, eval: &Eval) -> EvalResult {
    let mut result = EvalResult {
        line: eval.line,
        command: eval.command.clone(),
        failure: None,
        unprintable: None,
        pinned: false,
    };
    if let Some(reason) = &eval.unsupported {
        result.failure = Some(reason.clone());
        return result;
    }
    // test.go rejects the whole file when an expression does not parse; counting it as one
    // failed eval keeps the other evals' counts meaningful.
    // Duration expressions are computed for the query's step and range first, as the engine
    // computes them.
    let (step, span) = match (eval.range, eval.instant_only) {
        (Some((start, end, step)), false) => (step, end - start),
        _ => (0, 0),
    };
    let parsed = promscale_promql::durations::resolve(&eval.expr, step, span)
        .and_then(|text| promscale_promql::parse::parse_syntax(&text))
        .map_err(|e| e.to_string());
    let expr = match parsed {
        Ok(expr) => expr,
        Err(e) => {
            result.failure = Some(format!("the expression does not parse: {e}"));
            return result;
        }
    };
    if let (Some(range), false) = (eval.range, eval.instant_only) {
        // `eval range`: the range query alone (test.go's `execRangeEval`).
        if let Err(reason) = check_range_query(engine, source, eval, range).await {
            result.failure = Some(reason);
        }
        return result;
    }
    if let Err(reason) = check_query(engine, source, eval, &eval.expr, eval.time_ms).await {
        result.failure = Some(reason);
        return result;
    }
    match pin_to_eval_time(&expr, eval.time_ms) {
        Pinning::Unsafe => {}
        Pinning::Unprintable(printed) => result.unprintable = Some(printed),
        Pinning::Variants(pinned, times) => {
            result.pinned = true;
            for t in times {
                if let Err(reason) = check_query(engine, source, eval, &pinned, t).await {
                    result.failure = Some(format!("pinned as `{pinned}`, evaluated at {}:\n{reason}", fmt_ms(t)));
                    return result;
                }
            }
        }
    }
    result
}

/// One query of an eval, as an instant query and then in range mode (test.go's `exec`).
async fn check_query(engine: &Engine, source: &MemorySource, eval: &Eval, expr: &str, t: i64) -> Result<(), String> {
    let instant = match guarded(engine.instant_query_annotated(source, expr, t)).await {
        Outcome::Panic(message) => return Err(format!("instant query: the engine panicked: {message}")),
        Outcome::Error(e) if eval.kind == EvalKind::Fail => return expected_failure(eval, &e),
        Outcome::Error(e) => return Err(format!("instant query failed: {e}")),
        Outcome::Value((v, _)) if eval.kind == EvalKind::Fail => {
            return Err(format!("expected an error, got {}", describe_value(&v)));
        }
        Outcome::Value((v, annotations)) => {
            check_annotations(eval, &annotations).map_err(|e| format!("instant query: {e}"))?;
            v
        }
    };
    let ordered = eval.kind == EvalKind::Ordered;
    if let Some(want) = &eval.string {
        return match &instant {
            Value::String { s, .. } if s == want => Ok(()),
            other => Err(format!("expected string {want:?}, got {}", describe_value(other))),
        };
    }
    if let (Some(range), true) = (eval.range, eval.instant_only) {
        if ordered {
            return Err("expected ordered result, but query returned a matrix".into());
        }
        return compare_matrix(&eval.expected, &instant, range).map_err(|e| format!("instant query: {e}"));
    }
    compare(&eval.expected, &instant, ordered).map_err(|e| format!("instant query: {e}"))?;
    // Prometheus 3's test.go skips the range-mode check for the functions that answer
    // differently there.
    if query_context_functions().is_match(expr) {
        return Ok(());
    }

    let range = match guarded(engine.range_query(source, expr, t - 60_000, t + 60_000, 60_000)).await {
        Outcome::Panic(message) => return Err(format!("range query: the engine panicked: {message}")),
        Outcome::Error(e) => return Err(format!("range query failed: {e}")),
        Outcome::Value(v) => v,
    };
    if ordered {
        return Ok(());
    }
    if let Value::Matrix(series) = &range {
        matrix_sorted(series).map_err(|e| format!("range query: {e}"))?;
    }
    let middle = middle_step(&range, &instant, t).map_err(|e| format!("range query: {e}"))?;
    compare(&eval.expected, &middle, false).map_err(|e| format!("range query, step at t: {e}"))
}

/// An `eval range`: the range query's matrix against the expected series' values.
async fn check_range_query(
    engine: &Engine,
    source: &MemorySource,
    eval: &Eval,
    (start, end, step): (i64, i64, i64),
) -> Result<(), String> {
    match guarded(engine.range_query_annotated(source, &eval.expr, start, end, step)).await {
        Outcome::Panic(message) => Err(format!("range query: the engine panicked: {message}")),
        Outcome::Error(e) if eval.kind == EvalKind::Fail => expected_failure(eval, &e),
        Outcome::Error(e) => Err(format!("range query failed: {e}")),
        Outcome::Value((v, _)) if eval.kind == EvalKind::Fail => {
            Err(format!("expected an error, got {}", describe_value(&v)))
        }
        Outcome::Value((v, annotations)) => {
            check_annotations(eval, &annotations).map_err(|e| format!("range query: {e}"))?;
            compare_matrix(&eval.expected, &v, (start, end, step)).map_err(|e| format!("range query: {e}"))
        }
    }
}

/// test.go's `checkAnnotations`: `eval_warn`/`eval_info` want at least one; each `expect
/// warn`/`expect info` must match a warning (info) returned and each one returned must match
/// an expectation, when there are expectations of its kind; `expect no_warn`/`no_info` want
/// none.
fn check_annotations(eval: &Eval, got: &promscale_promql::Annotations) -> Result<(), String> {
    let kinds = [
        (
            "warn",
            &eval.expect_warnings,
            &got.warnings,
            eval.require_warning,
            eval.no_warnings,
        ),
        ("info", &eval.expect_infos, &got.infos, eval.require_info, eval.no_infos),
    ];
    for (kind, expected, actual, required, none) in kinds {
        if required && actual.is_empty() {
            return Err(format!("expected {kind} annotations but got none"));
        }
        if none && !actual.is_empty() {
            return Err(format!("unexpected {kind} annotations: {actual:?}"));
        }
        if expected.is_empty() {
            continue;
        }
        if actual.is_empty() {
            return Err(format!("expected {kind} annotations but none were found"));
        }
        for e in expected.iter() {
            if !actual.iter().any(|a| e.accepts(a)) {
                return Err(format!("expected {kind} annotation {e:?}, found {actual:?}"));
            }
        }
        for a in actual.iter() {
            if !expected.iter().any(|e| e.accepts(a)) {
                return Err(format!("unexpected {kind} annotation {a:?}"));
            }
        }
    }
    Ok(())
}

/// Whether the error of an eval expected to fail says what the script expects.
fn expected_failure(eval: &Eval, error: &str) -> Result<(), String> {
    match &eval.fail_message {
        Some(want) if !want.accepts(error) => Err(format!("expected the error {want:?}, got {error:?}")),
        _ => Ok(()),
    }
}

/// test.go's `compareResult` for a matrix: the same series, each with the expected values at
/// the expected steps (`start + i * step`; `_` for no point).
fn compare_matrix(expected: &Expected, got: &Value, (start, end, step): (i64, i64, i64)) -> Result<(), String> {
    if let Some(want) = expected.scalar {
        return Err(format!(
            "expected scalar {}, got {}",
            fmt_value(want),
            describe_value(got)
        ));
    }
    let Value::Matrix(series) = got else {
        return Err(format!("expected a matrix, got {}", describe_value(got)));
    };
    matrix_sorted(series)?;
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for s in series {
        let Some(values) = expected.range_series.get(&s.labels) else {
            problems.push(format!("unexpected series {}", s.labels));
            continue;
        };
        seen.insert(&s.labels);
        // test.go compares floats and histograms apart, each list in time order.
        let (mut want_floats, mut want_histograms) = (Vec::new(), Vec::new());
        for (i, v) in values.iter().enumerate() {
            let t = start.saturating_add((i as i64).saturating_mul(step));
            if t > end {
                problems.push(format!("{}: more values expected than the range has steps", s.labels));
                break;
            }
            match v {
                Some(item @ Item::Float(_)) => want_floats.push((t, item)),
                Some(item @ Item::Histogram(..)) => want_histograms.push((t, item)),
                None => {}
            }
        }
        let floats_same = want_floats.len() == s.samples.len()
            && want_floats
                .iter()
                .zip(&s.samples)
                .all(|((t, want), got)| *t == got.t && item_matches(want, got.v, None));
        let histograms_same = want_histograms.len() == s.histograms.len()
            && want_histograms
                .iter()
                .zip(&s.histograms)
                .all(|((t, want), got)| *t == got.t && item_matches(want, 0.0, Some(&got.h)));
        if !floats_same || !histograms_same {
            let want: Vec<String> = want_floats
                .iter()
                .chain(&want_histograms)
                .take(6)
                .map(|(t, v)| format!("{v}@{}", fmt_ms(*t)))
                .collect();
            let got: Vec<String> = s
                .samples
                .iter()
                .map(|p| format!("{}@{}", fmt_value(p.v), fmt_ms(p.t)))
                .chain(
                    s.histograms
                        .iter()
                        .map(|p| format!("{}@{}", fmt_histogram(&p.h), fmt_ms(p.t))),
                )
                .take(6)
                .collect();
            problems.push(format!(
                "{}: expected {} got {}",
                s.labels,
                want.join(" "),
                got.join(" ")
            ));
        }
    }
    for labels in expected.range_series.keys().filter(|l| !seen.contains(l)) {
        problems.push(format!("missing {labels}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(MAX_PROBLEMS_SHOWN);
    let mut message = format!(
        "{} series expected, {} returned",
        expected.range_series.len(),
        series.len()
    );
    for problem in &problems[..shown] {
        message.push_str("\n  ");
        message.push_str(problem);
    }
    Err(message)
}

/// test.go's `assertMatrixSorted`: a matrix's series come in label order.
fn matrix_sorted(series: &[promscale_promql::Series]) -> Result<(), String> {
    match series.windows(2).position(|w| w[0].labels > w[1].labels) {
        Some(i) => Err(format!(
            "matrix results should always be sorted by labels, but {} comes before {}",
            series[i].labels,
            series[i + 1].labels
        )),
        None => Ok(()),
    }
}

/// Prometheus 3's `start()`, `end()`, `range()` and `step()`: they answer differently in a
/// range query, so test.go does not compare the two.
fn query_context_functions() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(start|end|range|step)\(\)").expect("valid regex"))
}

/// The range query's points at `t`, shaped like the instant query's result for comparison.
fn middle_step(range: &Value, instant: &Value, t: i64) -> Result<Value, String> {
    let Value::Matrix(series) = range else {
        return Err(format!("got a {} instead of a matrix", range.type_name()));
    };
    let samples: Vec<InstantSample> = series
        .iter()
        .filter_map(|s| {
            let float = s.samples.iter().find(|p| p.t == t);
            let histogram = s.histograms.iter().find(|p| p.t == t);
            match (float, histogram) {
                (Some(p), _) => Some(InstantSample::float(s.labels.clone(), t, p.v)),
                (None, Some(h)) => Some(InstantSample {
                    labels: s.labels.clone(),
                    t,
                    v: 0.0,
                    h: Some(h.h.clone()),
                }),
                (None, None) => None,
            }
        })
        .collect();
    if !matches!(instant, Value::Scalar { .. }) {
        return Ok(Value::Vector(samples));
    }
    match samples.first() {
        Some(s) => Ok(Value::Scalar { t, v: s.v }),
        None => Err(format!("no point at {} for the scalar result", fmt_ms(t))),
    }
}

enum Outcome<T = Value> {
    Value(T),
    Error(String),
    Panic(String),
}

/// Runs a query so that an engine panic fails one eval instead of the whole test.
async fn guarded<T>(query: impl Future<Output = Result<T, QueryError>>) -> Outcome<T> {
    install_panic_capture();
    CAPTURING_PANICS.with(|c| c.set(true));
    let result = AssertUnwindSafe(query).catch_unwind().await;
    CAPTURING_PANICS.with(|c| c.set(false));
    match result {
        Ok(Ok(value)) => Outcome::Value(value),
        Ok(Err(e)) => Outcome::Error(e.to_string()),
        Err(payload) => {
            let captured = LAST_PANIC.with(|p| p.borrow_mut().take());
            Outcome::Panic(captured.unwrap_or_else(|| payload_message(payload.as_ref())))
        }
    }
}

thread_local! {
    // Each suite runs on its own test thread: whether its values compare as Prometheus 3's
    // test.go or as 2.42's compares them.
    static PROMETHEUS_3_COMPARISON: Cell<bool> = const { Cell::new(false) };
    // The queries run on the test's thread (tokio's current-thread runtime), so a thread-local
    // flag tells the hook which panics are the engine's, while other tests' panics print.
    static CAPTURING_PANICS: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps engine panics out of the log (hundreds of them while the engine is incomplete); their
/// message goes into the eval's failure instead.
fn install_panic_capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CAPTURING_PANICS.with(Cell::get) {
                return previous(info);
            }
            let location = info
                .location()
                .map(|l| format!(" ({}:{})", l.file(), l.line()))
                .unwrap_or_default();
            let message = format!("{}{location}", payload_message(info.payload()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
        }));
    });
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        return s.to_string();
    }
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "(no message)".to_string())
}

// ---------------------------------------------------------------------------------------------
// Comparing results (test.go's `compareResult`)

fn compare(expected: &Expected, got: &Value, ordered: bool) -> Result<(), String> {
    match got {
        Value::Vector(samples) => compare_vector(expected, samples, ordered),
        Value::Scalar { v, .. } => match expected.scalar {
            Some(want) if almost_equal(want, *v) => Ok(()),
            Some(want) => Err(format!("expected scalar {} but got {}", fmt_value(want), fmt_value(*v))),
            None => Err(format!(
                "expected {}, got scalar {}",
                describe_expected(expected),
                fmt_value(*v)
            )),
        },
        Value::Matrix(_) => Err(format!(
            "received range result on instant evaluation: {}",
            describe_value(got)
        )),
        Value::String { s, .. } => Err(format!("expected {}, got string {s:?}", describe_expected(expected))),
    }
}

/// Fails when test.go would: an unexpected series, a missing one, a value off by more than the
/// tolerance, or (for `eval_ordered`) a series at another position than its expected line.
fn compare_vector(expected: &Expected, samples: &[InstantSample], ordered: bool) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Some(want) = expected.scalar {
        problems.push(format!("expected scalar {}, got a vector", fmt_value(want)));
    }
    let mut seen = BTreeSet::new();
    for (index, sample) in samples.iter().enumerate() {
        let labels = &sample.labels;
        let got = got_item(sample.v, sample.h.as_ref());
        let Some((position, want)) = expected.series.get(labels) else {
            problems.push(format!("unexpected {labels} {got}"));
            continue;
        };
        if ordered && *position != index + 1 {
            problems.push(format!("{labels} at position {} but expected at {position}", index + 1));
        }
        if !item_matches(want, sample.v, sample.h.as_deref()) {
            problems.push(format!("{labels}: expected {want} but got {got}"));
        }
        seen.insert(labels);
    }
    let missing = expected.series.iter().filter(|(labels, _)| !seen.contains(labels));
    problems.extend(missing.map(|(labels, (_, want))| format!("missing {labels} {want}")));
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(MAX_PROBLEMS_SHOWN);
    let mut message = format!("{} samples expected, {} returned", expected.series.len(), samples.len());
    for problem in &problems[..shown] {
        message.push_str("\n  ");
        message.push_str(problem);
    }
    if problems.len() > shown {
        message.push_str(&format!("\n  ... {} more differences", problems.len() - shown));
    }
    Err(message)
}

/// test.go's `almostEqual`: equal within a relative error, or both NaN.
fn almost_equal(a: f64, b: f64) -> bool {
    if PROMETHEUS_3_COMPARISON.with(Cell::get) {
        return almost_equal_v3(a, b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let min_normal = f64::MIN_POSITIVE;
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < min_normal {
        return diff < EPSILON * min_normal;
    }
    diff / (a.abs() + b.abs()) < EPSILON
}

/// Prometheus 3's `almost.Equal`: a staleness marker equals only a staleness marker, and the
/// relative error is taken of a sum that cannot overflow to infinity.
fn almost_equal_v3(a: f64, b: f64) -> bool {
    let stale = |x: f64| x.to_bits() == STALE_NAN_BITS;
    if stale(a) || stale(b) {
        return stale(a) && stale(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let min_normal = f64::MIN_POSITIVE;
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < EPSILON * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

/// A result value as an [`Item`], for messages.
fn got_item(v: f64, h: Option<&Arc<FloatHistogram>>) -> Item {
    match h {
        Some(h) => Item::Histogram(h.clone(), true),
        None => Item::Float(v),
    }
}

/// test.go's comparison of an expected value with a result's float or histogram.
fn item_matches(want: &Item, v: f64, h: Option<&FloatHistogram>) -> bool {
    match (want, h) {
        (Item::Float(want), None) => almost_equal(*want, v),
        (Item::Histogram(want, hint_set), Some(got)) => histograms_match(want, got, *hint_set),
        _ => false,
    }
}

/// test.go's `compareNativeHistogram` of both histograms compacted: schema, count, sum,
/// custom bounds, zero bucket, spans and buckets (within the tolerance), and the counter
/// reset hint when the script gave it.
fn histograms_match(want: &FloatHistogram, got: &FloatHistogram, hint_set: bool) -> bool {
    let (mut want, mut got) = (want.clone(), got.clone());
    want.compact(0);
    got.compact(0);
    let buckets_match = |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| almost_equal(*x, *y));
    want.schema == got.schema
        && almost_equal(want.count, got.count)
        && almost_equal(want.sum, got.sum)
        && (want.schema != -53 || want.custom_values == got.custom_values)
        && want.zero_threshold == got.zero_threshold
        && almost_equal(want.zero_count, got.zero_count)
        && spans_match(&want.negative_spans, &got.negative_spans)
        && buckets_match(&want.negative_buckets, &got.negative_buckets)
        && spans_match(&want.positive_spans, &got.positive_spans)
        && buckets_match(&want.positive_buckets, &got.positive_buckets)
        && (!hint_set || want.counter_reset_hint == got.counter_reset_hint)
}

/// A histogram in the scripts' notation, for messages.
fn fmt_histogram(h: &FloatHistogram) -> String {
    format!(
        "{{{{schema:{} count:{} sum:{} z_bucket:{} buckets:{:?} n_buckets:{:?} hint:{:?}}}}}",
        h.schema, h.count, h.sum, h.zero_count, h.positive_buckets, h.negative_buckets, h.counter_reset_hint
    )
}

fn describe_expected(expected: &Expected) -> String {
    match (expected.scalar, expected.series.len()) {
        (Some(v), _) => format!("scalar {}", fmt_value(v)),
        (None, 0) => "an empty vector".to_string(),
        (None, n) => format!("a vector of {n} samples"),
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Scalar { v, .. } => format!("scalar {}", fmt_value(*v)),
        Value::String { s, .. } => format!("string {s:?}"),
        Value::Vector(samples) => {
            let first: Vec<String> = samples
                .iter()
                .take(3)
                .map(|s| format!("{} {}", s.labels, fmt_value(s.v)))
                .collect();
            let more = if samples.len() > 3 { ", ..." } else { "" };
            format!("vector of {} samples [{}{more}]", samples.len(), first.join(", "))
        }
        Value::Matrix(series) => format!("matrix of {} series", series.len()),
    }
}

fn fmt_value(v: f64) -> String {
    match v {
        _ if v.to_bits() == STALE_NAN_BITS => "stale".to_string(),
        _ if v.is_nan() => "NaN".to_string(),
        f64::INFINITY => "+Inf".to_string(),
        f64::NEG_INFINITY => "-Inf".to_string(),
        _ => v.to_string(),
    }
}

fn fmt_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

// ---------------------------------------------------------------------------------------------
// Pinning selectors with @ (test.go's `atModifierTestCases`)

#[derive(Debug, PartialEq)]
enum Pinning {
    /// The pinned expression and the times to evaluate it at.
    Variants(String, Vec<i64>),
    /// The expression calls a function whose result depends on the evaluation time.
    Unsafe,
    /// promql-parser printed the pinned expression as something that parses differently, so
    /// running it would test the printer rather than the engine.
    Unprintable(String),
}

fn pin_to_eval_time(expr: &Expr, time_ms: i64) -> Pinning {
    let mut pinned = expr.clone();
    if pin_selectors(&mut pinned, &at_time(time_ms)) {
        return Pinning::Unsafe;
    }
    let printed = pinned.to_string();
    let reparsed = promscale_promql::parse::parse_syntax(&printed).map(normalized);
    if reparsed.as_ref().ok() != Some(&normalized(pinned)) {
        return Pinning::Unprintable(printed);
    }
    let times = if time_ms == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * time_ms, 0, time_ms / 5, time_ms, 10 * time_ms]
    };
    Pinning::Variants(printed, times)
}

/// Pins every selector and subquery outside subqueries at `at`; true when the expression calls
/// an @-unsafe function outside subqueries.
fn pin_selectors(expr: &mut Expr, at: &AtModifier) -> bool {
    match expr {
        Expr::VectorSelector(vs) => {
            pin(&mut vs.at, at);
            false
        }
        Expr::MatrixSelector(ms) => {
            pin(&mut ms.vs.at, at);
            false
        }
        // test.go leaves a subquery's inside alone, calls included: the subquery's @ fixes it.
        Expr::Subquery(sq) => {
            pin(&mut sq.at, at);
            false
        }
        Expr::Call(call) => {
            let mut time_dependent = AT_MODIFIER_UNSAFE_FUNCTIONS.contains(&call.func.name);
            for arg in &mut call.args.args {
                time_dependent |= pin_selectors(arg, at);
            }
            time_dependent
        }
        Expr::Aggregate(agg) => {
            let param = agg.param.as_mut().is_some_and(|p| pin_selectors(p, at));
            pin_selectors(&mut agg.expr, at) | param
        }
        Expr::Binary(binary) => pin_selectors(&mut binary.lhs, at) | pin_selectors(&mut binary.rhs, at),
        Expr::Paren(paren) => pin_selectors(&mut paren.expr, at),
        Expr::Unary(unary) => pin_selectors(&mut unary.expr, at),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => false,
    }
}

/// `expr` without what promql-parser's printer drops but which does not change its meaning:
/// the order of matchers (sorted when printed, as Prometheus prints them), an empty `by ()` or
/// `ignoring()`.
fn normalized(mut expr: Expr) -> Expr {
    normalize(&mut expr);
    expr
}

fn normalize(expr: &mut Expr) {
    match expr {
        Expr::VectorSelector(vs) => sort_matchers(&mut vs.matchers),
        Expr::MatrixSelector(ms) => sort_matchers(&mut ms.vs.matchers),
        Expr::Aggregate(agg) => {
            if matches!(&agg.modifier, Some(LabelModifier::Include(by)) if by.labels.is_empty()) {
                agg.modifier = None;
            }
            normalize(&mut agg.expr);
            if let Some(param) = &mut agg.param {
                normalize(param);
            }
        }
        Expr::Subquery(sq) => normalize(&mut sq.expr),
        Expr::Call(call) => call.args.args.iter_mut().for_each(|arg| normalize(arg)),
        Expr::Binary(binary) => {
            normalize_bin_modifier(&mut binary.modifier);
            normalize(&mut binary.lhs);
            normalize(&mut binary.rhs);
        }
        Expr::Paren(paren) => normalize(&mut paren.expr),
        Expr::Unary(unary) => normalize(&mut unary.expr),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// `ignoring()` matches like no modifier at all, and is printed as nothing.
fn normalize_bin_modifier(modifier: &mut Option<BinModifier>) {
    if let Some(m) = modifier {
        if matches!(&m.matching, Some(LabelModifier::Exclude(labels)) if labels.labels.is_empty()) {
            m.matching = None;
        }
    }
    let plain =
        |m: &BinModifier| matches!(m.card, VectorMatchCardinality::OneToOne) && m.matching.is_none() && !m.return_bool;
    if modifier.as_ref().is_some_and(plain) {
        *modifier = None;
    }
}

fn sort_matchers(matchers: &mut Matchers) {
    let key = |m: &Matcher| (m.name.clone(), m.op.to_string(), m.value.clone());
    matchers.matchers.sort_by_key(key);
    for group in &mut matchers.or_matchers {
        group.sort_by_key(key);
    }
}

/// Keeps a numeric `@` but replaces `@ start()`/`@ end()`, as test.go does (in Go those leave the
/// timestamp unset); in an instant query both equal the evaluation time anyway.
fn pin(slot: &mut Option<AtModifier>, at: &AtModifier) {
    if !matches!(slot, Some(AtModifier::At(_))) {
        *slot = Some(at.clone());
    }
}

fn at_time(ms: i64) -> AtModifier {
    let offset = Duration::from_millis(ms.unsigned_abs());
    let time = if ms >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    };
    AtModifier::At(time)
}

// ---------------------------------------------------------------------------------------------
// Script parsing (test.go's `parse`, `parseLoad`, `parseEval`; the series notation of
// Prometheus' `ParseSeriesDesc`)

#[derive(Debug)]
enum Command {
    Clear,
    /// Each series' samples, timestamps computed; a series given twice keeps its last line.
    Load(BTreeMap<Labels, Loaded>),
    /// A load with a line this runner cannot read (why).
    Unreadable(String),
    Eval(Box<Eval>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvalKind {
    Plain,
    Ordered,
    Fail,
}

#[derive(Debug)]
struct Eval {
    /// 1-based line of the command, and the command itself, for messages.
    line: usize,
    command: String,
    kind: EvalKind,
    expr: String,
    time_ms: i64,
    expected: Expected,
    /// (start, end, step) of an `eval range`, or of the range vector an instant eval expects
    /// (`expect range vector from .. to .. step ..`).
    range: Option<(i64, i64, i64)>,
    /// An instant eval not repeated as a range query: its result is neither an instant
    /// vector nor a scalar (a range vector or a string).
    instant_only: bool,
    /// `expect string "..."`: the string an instant eval returns.
    string: Option<String>,
    /// What the error of an eval expected to fail must say.
    fail_message: Option<FailMessage>,
    /// Why this runner cannot check the eval (it fails, with this reason).
    unsupported: Option<String>,
    /// `expect warn`/`expect info` lines (a bare one accepts any message).
    expect_warnings: Vec<FailMessage>,
    expect_infos: Vec<FailMessage>,
    /// `eval_warn`/`eval_info`: at least one.
    require_warning: bool,
    require_info: bool,
    /// `expect no_warn`/`expect no_info`.
    no_warnings: bool,
    no_infos: bool,
}

/// `expect fail msg:` (the exact message) or `regex:` (a pattern it matches), as test.go has it.
#[derive(Debug)]
enum FailMessage {
    Exact(String),
    Pattern(Regex),
}

impl FailMessage {
    fn accepts(&self, message: &str) -> bool {
        match self {
            FailMessage::Exact(want) => want == message,
            FailMessage::Pattern(re) => re.is_match(message),
        }
    }
}

#[derive(Debug, Default, PartialEq)]
struct Expected {
    scalar: Option<f64>,
    /// Each expected series' 1-based position among the expected lines, and its value.
    series: BTreeMap<Labels, (usize, Item)>,
    /// Of a range eval: each expected series' values at the range's steps, `None` for none.
    range_series: BTreeMap<Labels, Vec<Option<Item>>>,
}

/// One value of a series line: a float, or a native histogram (`{{...}}`) with whether the
/// script gave its counter reset hint (test.go compares the hint only then).
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Float(f64),
    Histogram(Arc<FloatHistogram>, bool),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Float(v) => f.write_str(&fmt_value(*v)),
            Item::Histogram(h, _) => f.write_str(&fmt_histogram(h)),
        }
    }
}

/// Trimmed lines, comments blanked: like blank lines, they end a block.
fn script_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(str::trim)
        .map(|l| if l.starts_with('#') { "" } else { l })
        .collect()
}

fn parse_script(text: &str) -> Result<Vec<Command>, String> {
    let lines = script_lines(text);
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or_default().to_lowercase();
        let (command, next) = if word == "clear" {
            (Command::Clear, i + 1)
        } else if word == "load" || word == "load_with_nhcb" {
            parse_load(&lines, i)?
        } else if word.starts_with("eval") {
            parse_eval(&lines, i)?
        } else {
            return Err(at_line(i, format!("invalid command {line:?}")));
        };
        commands.push(command);
        i = next;
    }
    Ok(commands)
}

fn at_line(index: usize, message: impl std::fmt::Display) -> String {
    format!("line {}: {message}", index + 1)
}

/// Parses the `load` at `lines[i]` and its series; returns the index after the block.
fn parse_load(lines: &[&str], i: usize) -> Result<(Command, usize), String> {
    let caps = load_re()
        .captures(lines[i])
        .ok_or_else(|| at_line(i, "invalid load command"))?;
    let interval = parse_duration(&caps[1]).map_err(|e| at_line(i, e))?;
    let mut series = BTreeMap::new();
    let mut j = i + 1;
    let mut unreadable = None;
    // The start timestamps of the next series line (`metric@st offsets`), as test.go's
    // `parseLoad` pairs them.
    let mut pending_starts: Option<(Labels, Vec<Option<i64>>, usize)> = None;
    while j < lines.len() && !lines[j].is_empty() {
        let parsed = match parse_start_time_line(lines[j]) {
            Some(Ok((labels, offsets))) if pending_starts.is_none() => {
                pending_starts = Some((labels, offsets, j));
                j += 1;
                continue;
            }
            Some(Ok(_)) => Err("an @st line follows another".to_string()),
            Some(Err(e)) => Err(e),
            None => parse_series_items(lines[j]).and_then(|(labels, items)| {
                let starts = match pending_starts.take() {
                    None => None,
                    Some((st_labels, _, _)) if st_labels != labels => {
                        return Err("the @st line before names another series".to_string())
                    }
                    Some((_, offsets, _)) if offsets.len() != items.len() => {
                        return Err(format!(
                            "the @st line before has {} values, this line {}",
                            offsets.len(),
                            items.len()
                        ))
                    }
                    Some((_, offsets, _)) => Some(offsets),
                };
                Ok((labels, loaded_every(interval, &items, starts.as_deref())))
            }),
        };
        match parsed {
            Ok((labels, loaded)) => {
                series.insert(labels, loaded);
            }
            Err(e) => {
                unreadable
                    .get_or_insert_with(|| format!("line {}: this runner cannot load {:?}: {e}", j + 1, lines[j]));
            }
        }
        j += 1;
    }
    if let Some((_, _, line)) = pending_starts {
        unreadable.get_or_insert_with(|| format!("line {}: @st line without a series line after it", line + 1));
    }
    if let Some(reason) = unreadable {
        return Ok((Command::Unreadable(reason), j));
    }
    if lines[i].starts_with("load_with_nhcb") {
        match custom_bucket_histograms(&series) {
            Some(converted) => series.extend(converted),
            None => {
                return Ok((
                    Command::Unreadable(format!("line {}: a classic histogram does not convert", i + 1)),
                    j,
                ))
            }
        }
    }
    Ok((Command::Load(series), j))
}

/// `load_with_nhcb`: the classic histograms among the loaded series (`<name>_bucket` with
/// `le`, `<name>_count`, `<name>_sum`) also as native histograms with custom buckets, series
/// `<name>` without `le`, one per time they have samples at, as test.go converts them
/// (`convertnhcb`). A histogram that does not convert (buckets not cumulative, count not
/// the last bucket's) is left out, as test.go would refuse the whole load.
fn custom_bucket_histograms(series: &BTreeMap<Labels, Loaded>) -> Option<Vec<(Labels, Loaded)>> {
    #[derive(Default)]
    struct Temp {
        buckets: Vec<(f64, f64)>,
        count: Option<f64>,
        sum: f64,
        broken: bool,
    }
    let mut by_base: BTreeMap<Labels, BTreeMap<i64, Temp>> = BTreeMap::new();
    for (labels, loaded) in series {
        let name = labels.get("__name__");
        let (base_name, part) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 2)
        } else {
            continue;
        };
        let le = if part == 0 {
            match labels.get("le").parse::<f64>() {
                Ok(le) if !le.is_nan() => le,
                _ => continue,
            }
        } else {
            0.0
        };
        let pairs: Vec<(String, String)> = labels
            .iter()
            .filter(|(n, _)| *n != "le")
            .map(|(n, v)| {
                (
                    n.to_string(),
                    if n == "__name__" {
                        base_name.to_string()
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect();
        let times = by_base.entry(Labels::new(pairs)).or_default();
        for s in &loaded.samples {
            let temp = times.entry(s.t).or_default();
            match part {
                0 => {
                    if s.v < 0.0 {
                        temp.broken = true;
                    }
                    let at = temp.buckets.partition_point(|(b, _)| *b < le);
                    if temp.buckets.get(at).is_none_or(|(b, _)| *b != le) {
                        temp.buckets.insert(at, (le, s.v));
                    }
                }
                1 => temp.count = Some(s.v),
                _ => temp.sum = s.v,
            }
        }
    }
    let mut out = Vec::new();
    for (labels, times) in by_base {
        let mut items = Vec::new();
        let mut at = Vec::new();
        for (t, temp) in times {
            let h = convert_custom_buckets(temp.buckets, temp.count, temp.sum, temp.broken)?;
            at.push(t);
            items.push(Some(Item::Histogram(Arc::new(h), false)));
        }
        // Times are not evenly spaced in general: hints as loaded_every gives them, then the
        // real times.
        let mut loaded = loaded_every(1, &items, None);
        for (h, t) in loaded.histograms.iter_mut().zip(at) {
            h.t = t;
        }
        out.push((labels, loaded));
    }
    Some(out)
}

/// convertnhcb's `Convert`: cumulative bucket counts to a custom-bucket histogram (a +Inf
/// bucket of the count added when missing), compacted.
fn convert_custom_buckets(
    mut buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    broken: bool,
) -> Option<FloatHistogram> {
    if broken || buckets.windows(2).any(|w| w[1].1 < w[0].1) {
        return None;
    }
    let count = match count {
        Some(c) if c >= 0.0 => c,
        Some(_) => return None,
        None => buckets.last()?.1,
    };
    if buckets.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
        buckets.push((f64::INFINITY, count));
    }
    if buckets.last()?.1 != count {
        return None;
    }
    let mut previous = 0.0;
    let mut h = FloatHistogram {
        schema: -53,
        count,
        sum,
        positive_spans: vec![Span {
            offset: 0,
            length: buckets.len() as u32,
        }],
        ..Default::default()
    };
    for (le, c) in &buckets {
        h.positive_buckets.push(c - previous);
        previous = *c;
        if le.is_finite() {
            h.custom_values.push(*le);
        }
    }
    h.compact(0);
    Some(h)
}

/// A loaded series: its floats, and its native histograms with the counter reset hints a TSDB
/// gives them when it reads them back (test.go loads into a real TSDB): a gauge histogram
/// stays a gauge; of the others, the first of a chunk is `Unknown`, and each later one
/// `NotCounterReset`. A TSDB starts a chunk after a float or a gauge histogram, at a counter
/// reset (detected, or hinted `reset`), and when the schema or the zero threshold changes;
/// so Prometheus never reads `CounterReset` back (its chunkenc's `counterResetHint`,
/// prometheus/prometheus#15346).
///
/// A float sample's start timestamp is its time plus the offset of the `@st` line before its
/// series line (0, unknown, where omitted); histograms get none, as Prometheus' TSDB keeps
/// none for them yet.
#[derive(Debug, Default)]
struct Loaded {
    samples: Vec<Sample>,
    /// Beside `samples`, or empty without an `@st` line.
    start_times: Vec<i64>,
    histograms: Vec<HistogramSample>,
}

fn loaded_every(interval_ms: i64, items: &[Option<Item>], start_offsets: Option<&[Option<i64>]>) -> Loaded {
    let mut loaded = Loaded::default();
    let mut previous: Option<Arc<FloatHistogram>> = None;
    for (k, item) in items.iter().enumerate() {
        let t = k as i64 * interval_ms;
        match item {
            None => {}
            Some(Item::Float(v)) => {
                loaded.samples.push(Sample { t, v: *v });
                if let Some(offsets) = start_offsets {
                    loaded.start_times.push(offsets[k].map_or(0, |offset| t + offset));
                }
                previous = None;
            }
            Some(Item::Histogram(h, _)) => {
                let mut h = (**h).clone();
                if h.counter_reset_hint != CounterResetHint::Gauge {
                    let new_chunk = match &previous {
                        None => true,
                        Some(p) => {
                            p.counter_reset_hint == CounterResetHint::Gauge
                                || p.schema != h.schema
                                || p.zero_threshold != h.zero_threshold
                                || h.detect_reset(p)
                        }
                    };
                    h.counter_reset_hint = if new_chunk {
                        CounterResetHint::Unknown
                    } else {
                        CounterResetHint::NotCounterReset
                    };
                }
                let h = Arc::new(h);
                previous = Some(h.clone());
                loaded.histograms.push(HistogramSample { t, h });
            }
        }
    }
    loaded
}

/// A series and the start timestamp offset of each of its values (None: omitted).
type StartTimeLine = (Labels, Vec<Option<i64>>);

/// A start timestamp line, `metric{labels}@st offsets` (test.go's `isSTLine` and
/// `parseSTLine`): the series and each value's offset in ms (None: omitted). None when the
/// line is no such line.
fn parse_start_time_line(line: &str) -> Option<Result<StartTimeLine, String>> {
    let line = line.trim();
    let space = line.find([' ', '\t'])?;
    let metric = line[..space].strip_suffix("@st")?;
    Some((|| {
        let (labels, _) = parse_series_items(&format!("{metric} _"))?;
        let mut offsets = Vec::new();
        for item in line[space..].split_whitespace() {
            offsets.extend(parse_start_time_item(item).map_err(|e| format!("invalid @st item {item:?}: {e}"))?);
        }
        Ok((labels, offsets))
    })())
}

/// One item of an `@st` sequence (test.go's `parseSTItem`): `_`, `_xN` (N omitted),
/// `<d>` (one), `<d>xN` (N+1 equal) or `<d>+<d>xN` / `<d>-<d>xN` (N+1 stepping), each `<d>`
/// a duration of one unit with an optional sign.
fn parse_start_time_item(item: &str) -> Result<Vec<Option<i64>>, String> {
    if item == "_" {
        return Ok(vec![None]);
    }
    if let Some(n) = item.strip_prefix("_x") {
        let n: usize = n.parse().ok().filter(|&n| n > 0).ok_or("invalid repeat count")?;
        return Ok(vec![None; n]);
    }
    let (base, rest) = signed_duration_prefix(item)?;
    if rest.is_empty() {
        return Ok(vec![Some(base)]);
    }
    let (delta, rest) = match rest.as_bytes()[0] {
        b'x' => (0, rest),
        b'+' => signed_duration_prefix(&rest[1..])?,
        b'-' => {
            let (d, rest) = signed_duration_prefix(&rest[1..])?;
            (-d, rest)
        }
        other => return Err(format!("unexpected {:?} after the duration", other as char)),
    };
    let n: usize = rest
        .strip_prefix('x')
        .ok_or("expected x<count> after the step")?
        .parse()
        .map_err(|_| "invalid repeat count")?;
    Ok((0..=n as i64).map(|k| Some(base + k * delta)).collect())
}

/// A duration of one unit with an optional sign at the start of `s` (test.go's
/// `parseDurationPrefix`), in ms, and the rest of `s`.
fn signed_duration_prefix(s: &str) -> Result<(i64, &str), String> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("expected digits in duration {s:?}"));
    }
    let unit = unsigned[digits..]
        .bytes()
        .take_while(|b| b.is_ascii_alphabetic() && *b != b'x')
        .count();
    let ms = parse_duration(&unsigned[..digits + unit])?;
    Ok((if negative { -ms } else { ms }, &unsigned[digits + unit..]))
}

/// Parses the `eval` at `lines[i]` and its expected results; returns the index after them.
/// Both script formats: Prometheus 2.42's (`eval[_fail|_ordered] instant at`) and Prometheus
/// 3's, which adds `eval range from .. to .. step ..`, `expect ...` lines and
/// `expected_fail_message`/`expected_fail_regexp` (test.go's `parseEval`).
fn parse_eval(lines: &[&str], i: usize) -> Result<(Command, usize), String> {
    let mut eval = Eval {
        line: i + 1,
        command: lines[i].to_string(),
        kind: EvalKind::Plain,
        expr: String::new(),
        time_ms: 0,
        expected: Expected::default(),
        range: None,
        instant_only: false,
        string: None,
        fail_message: None,
        unsupported: None,
        expect_warnings: Vec::new(),
        expect_infos: Vec::new(),
        require_warning: false,
        require_info: false,
        no_warnings: false,
        no_infos: false,
    };
    let modifier;
    if let Some(caps) = eval_re().captures(lines[i]) {
        modifier = caps.get(1).map(|m| m.as_str().to_string());
        let at = caps.get(2).map_or("", |m| m.as_str());
        eval.time_ms = parse_duration(at).map_err(|e| at_line(i, e))?;
        eval.expr = caps[3].to_string();
    } else if let Some(caps) = eval_range_re().captures(lines[i]) {
        modifier = caps.get(1).map(|m| m.as_str().to_string());
        let duration = |k: usize| parse_duration(&caps[k]).map_err(|e| at_line(i, e));
        let (start, end, step) = (duration(2)?, duration(3)?, duration(4)?);
        eval.range = Some((start, end, step));
        eval.time_ms = start;
        eval.expr = caps[5].to_string();
    } else {
        return Err(at_line(
            i,
            "invalid evaluation command: eval[_fail|_warn|_info|_ordered] instant [at <offset>] <query> or eval[_fail|_warn|_info] range from <from> to <to> step <step> <query>",
        ));
    }
    match modifier.as_deref() {
        Some("fail") => eval.kind = EvalKind::Fail,
        Some("ordered") => eval.kind = EvalKind::Ordered,
        Some("warn") => eval.require_warning = true,
        Some("info") => eval.require_info = true,
        _ => {}
    }
    let is_range = eval.range.is_some();
    let mut position = 1;
    let mut j = i + 1;
    while j < lines.len() && !lines[j].is_empty() {
        let line = lines[j];
        j += 1;
        if eval.kind == EvalKind::Fail {
            if let Some(message) = line.strip_prefix("expected_fail_message") {
                eval.fail_message = Some(FailMessage::Exact(message.trim().to_string()));
                break;
            }
            if let Some(pattern) = line.strip_prefix("expected_fail_regexp") {
                let re = Regex::new(pattern.trim()).map_err(|e| at_line(j - 1, e))?;
                eval.fail_message = Some(FailMessage::Pattern(re));
                break;
            }
        }
        if let Some(caps) = expect_range_re().captures(line) {
            let duration = |k: usize| parse_duration(&caps[k]).map_err(|e| at_line(j - 1, e));
            let (start, end, step) = (duration(1)?, duration(2)?, duration(3)?);
            eval.range = Some((start, end, step));
            eval.time_ms = end;
            eval.instant_only = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("expect string") {
            let (text, _) = parse_string_literal(rest.trim()).map_err(|e| at_line(j - 1, e))?;
            eval.string = Some(text);
            eval.instant_only = true;
            continue;
        }
        if line.split(' ').next() == Some("expect") {
            let caps = expect_re()
                .captures(line)
                .ok_or_else(|| at_line(j - 1, format!("invalid expect line {line:?}")))?;
            match &caps[1] {
                "ordered" => eval.kind = EvalKind::Ordered,
                "fail" => {
                    eval.kind = EvalKind::Fail;
                    eval.fail_message = match (caps.get(2).map(|m| m.as_str()), caps.get(3)) {
                        (Some("regex"), Some(p)) => Some(FailMessage::Pattern(
                            Regex::new(p.as_str().trim()).map_err(|e| at_line(j - 1, e))?,
                        )),
                        (Some(_), Some(m)) => Some(FailMessage::Exact(m.as_str().trim().to_string())),
                        _ => None,
                    };
                }
                "no_warn" => eval.no_warnings = true,
                "no_info" => eval.no_infos = true,
                kind => {
                    let matcher = match (caps.get(2).map(|m| m.as_str()), caps.get(3)) {
                        (Some("regex"), Some(p)) => {
                            FailMessage::Pattern(Regex::new(p.as_str().trim()).map_err(|e| at_line(j - 1, e))?)
                        }
                        (Some(_), Some(m)) => FailMessage::Exact(m.as_str().trim().to_string()),
                        _ => FailMessage::Pattern(any_message().clone()),
                    };
                    if kind == "warn" {
                        eval.expect_warnings.push(matcher);
                    } else {
                        eval.expect_infos.push(matcher);
                    }
                }
            }
            continue;
        }
        if let Some(v) = parse_go_number(line) {
            eval.expected.scalar = Some(v);
            break;
        }
        let (labels, values) = match parse_series_items(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                eval.unsupported = Some(format!("this runner cannot read the expected line {line:?}: {e}"));
                continue;
            }
        };
        if is_range || eval.range.is_some() {
            eval.expected.range_series.insert(labels, values);
        } else {
            let [Some(v)] = &values[..] else {
                return Err(at_line(j - 1, "an expected sample needs exactly one value"));
            };
            eval.expected.series.insert(labels, (position, v.clone()));
        }
        position += 1;
    }
    Ok((Command::Eval(Box::new(eval)), j))
}

fn load_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^load(?:_with_nhcb)?\s+(.+?)$").expect("valid regex"))
}

fn eval_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$").expect("valid regex")
    })
}

/// A bare `expect warn`/`expect info`: any message.
fn any_message() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new("^.*$").expect("valid regex"))
}

fn eval_range_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$")
            .expect("valid regex")
    })
}

fn expect_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$").expect("valid regex")
    })
}

fn expect_range_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^expect\s+range\s+vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$").expect("valid regex")
    })
}

/// Prometheus' duration notation (`1h30m`, `10s`, `0`), in milliseconds.
fn parse_duration(text: &str) -> Result<i64, String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(
            r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$",
        )
        .expect("valid regex")
    });
    const UNIT_MS: [i64; 7] = [365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1];
    match text {
        "0" => return Ok(0),
        "" => return Err("empty duration string".to_string()),
        _ => {}
    }
    let caps = re
        .captures(text)
        .ok_or_else(|| format!("not a valid duration string: {text:?}"))?;
    let out_of_range = || format!("duration out of range: {text:?}");
    let mut total: i64 = 0;
    for (unit, ms) in UNIT_MS.iter().enumerate() {
        if let Some(count) = caps.get(unit + 1) {
            let count: i64 = count.as_str().parse().map_err(|_| out_of_range())?;
            let part = count.checked_mul(*ms).ok_or_else(out_of_range)?;
            total = total.checked_add(part).ok_or_else(out_of_range)?;
        }
    }
    Ok(total)
}

/// `metric{label="value", ...} values...`; `values` has `None` for each `_` (no sample).
fn parse_series_desc(line: &str) -> Result<(Labels, Vec<Option<f64>>), String> {
    let (labels, rest) = parse_metric(line)?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("unexpected {rest:?} after the series' labels"));
    }
    let mut values = Vec::new();
    for item in rest.split_whitespace() {
        values.extend(parse_value_item(item).map_err(|e| format!("in {item:?}: {e}"))?);
    }
    Ok((labels, values))
}

/// `metric{label="value", ...} items...`: like [`parse_series_desc`], with native histogram
/// items too (`{{...}}`, `{{...}}xN`, `{{...}}+{{...}}xN`, `{{...}}-{{...}}xN`, as Prometheus'
/// series notation has them).
fn parse_series_items(line: &str) -> Result<(Labels, Vec<Option<Item>>), String> {
    let (labels, rest) = parse_metric(line)?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("unexpected {rest:?} after the series' labels"));
    }
    let mut items = Vec::new();
    for token in split_outside(rest, "{{", "}}") {
        if token.starts_with("{{") {
            items.extend(
                parse_histogram_item(token)
                    .map_err(|e| format!("in {token:?}: {e}"))?
                    .into_iter()
                    .map(Some),
            );
        } else {
            let values = parse_value_item(token).map_err(|e| format!("in {token:?}: {e}"))?;
            items.extend(values.into_iter().map(|v| v.map(Item::Float)));
        }
    }
    Ok((labels, items))
}

/// The whitespace-separated words of `text`, whitespace between `open` and `close` kept.
fn split_outside<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut words = Vec::new();
    let (mut depth, mut start) = (0usize, None);
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with(open) {
            depth += 1;
            start.get_or_insert(i);
            i += open.len();
            continue;
        }
        if depth > 0 && rest.starts_with(close) {
            depth -= 1;
            i += close.len();
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c.is_whitespace() && depth == 0 {
            if let Some(from) = start.take() {
                words.push(&text[from..i]);
            }
        } else {
            start.get_or_insert(i);
        }
        i += c.len_utf8();
    }
    if let Some(from) = start {
        words.push(&text[from..]);
    }
    words
}

/// One histogram item and its repetitions; `a+bxN` adds `b` N times (`-` subtracts), and
/// every value then counts as giving its hint when `b` gives one (test.go's
/// `histogramsSeries`).
fn parse_histogram_item(token: &str) -> Result<Vec<Item>, String> {
    let (first, first_hint, rest) = parse_histogram_literal(token)?;
    if rest.is_empty() {
        return Ok(vec![Item::Histogram(Arc::new(first), first_hint)]);
    }
    if rest.starts_with('x') {
        return Ok(vec![
            Item::Histogram(Arc::new(first), first_hint);
            parse_times(rest)? + 1
        ]);
    }
    let subtract = match rest.as_bytes()[0] {
        b'+' => false,
        b'-' => true,
        _ => return Err(format!("unexpected {rest:?} after a histogram")),
    };
    let (inc, inc_hint, rest) = parse_histogram_literal(&rest[1..])?;
    let times = parse_times(rest)?;
    let mut current = first;
    let mut items = vec![Item::Histogram(Arc::new(current.clone()), inc_hint)];
    for _ in 0..times {
        if current.schema > inc.schema {
            return Err(format!("cannot merge from schema {} to {}", inc.schema, current.schema));
        }
        current = if subtract { current.sub(&inc) } else { current.add(&inc) }.map_err(|e| format!("{e:?}"))?;
        items.push(Item::Histogram(Arc::new(current.clone()), inc_hint));
    }
    Ok(items)
}

/// `{{key:value ...}}` at the start of `text`: the histogram, whether it gave its counter
/// reset hint, and the text after it (test.go's `buildHistogramFromMap`: bucket lists are
/// absolute counts in one span starting at `offset`).
fn parse_histogram_literal(text: &str) -> Result<(FloatHistogram, bool, &str), String> {
    let body = text.strip_prefix("{{").ok_or("expected `{{`")?;
    let end = body.find("}}").ok_or("unterminated histogram")?;
    let (body, rest) = (&body[..end], &body[end + 2..]);
    let mut h = FloatHistogram::default();
    let mut hint_set = false;
    let (mut positive, mut negative) = ((Vec::new(), 0i32), (Vec::new(), 0i32));
    let number = |v: &str| parse_go_number(v).ok_or_else(|| format!("invalid number {v:?}"));
    let integer = |v: &str| {
        parse_go_int(v)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("invalid integer {v:?}"))
    };
    let list = |v: &str| -> Result<Vec<f64>, String> {
        let inner = v
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .ok_or_else(|| format!("expected a [list] at {v:?}"))?;
        inner.split_whitespace().map(number).collect()
    };
    for field in split_outside(body, "[", "]") {
        let (key, value) = field
            .split_once(':')
            .ok_or_else(|| format!("expected key:value at {field:?}"))?;
        match key {
            "schema" => h.schema = integer(value)?,
            "sum" => h.sum = number(value)?,
            "count" => h.count = number(value)?,
            "z_bucket" => h.zero_count = number(value)?,
            "z_bucket_w" => h.zero_threshold = number(value)?,
            "custom_values" => h.custom_values = list(value)?,
            "buckets" => positive.0 = list(value)?,
            "offset" => positive.1 = integer(value)?,
            "n_buckets" => negative.0 = list(value)?,
            "n_offset" => negative.1 = integer(value)?,
            "counter_reset_hint" => {
                hint_set = true;
                h.counter_reset_hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(format!("unknown counter_reset_hint {other:?}")),
                };
            }
            other => return Err(format!("unknown histogram field {other:?}")),
        }
    }
    let spans = |(buckets, offset): &(Vec<f64>, i32)| -> Vec<Span> {
        if buckets.is_empty() {
            return Vec::new();
        }
        vec![Span {
            offset: *offset,
            length: buckets.len() as u32,
        }]
    };
    h.positive_spans = spans(&positive);
    h.negative_spans = spans(&negative);
    h.positive_buckets = positive.0;
    h.negative_buckets = negative.0;
    Ok((h, hint_set, rest))
}

/// A metric name and/or a `{...}` label set; returns the labels and the text after them.
fn parse_metric(text: &str) -> Result<(Labels, &str), String> {
    let name_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_len);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut pairs = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".to_string(), name.to_string()));
    }
    let rest = match rest.strip_prefix('{') {
        Some(body) => parse_label_set(body, &mut pairs)?,
        None if name.is_empty() => return Err(format!("expected a metric name or labels: {text:?}")),
        None => rest,
    };
    Ok((Labels::new(pairs), rest))
}

/// The inside of `{...}` (opening brace consumed); returns the text after the closing brace.
fn parse_label_set<'a>(mut text: &'a str, pairs: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok(rest);
        }
        let name_len = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        if name_len == 0 || text.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a label name at {text:?}"));
        }
        let name = &text[..name_len];
        let after_name = text[name_len..].trim_start();
        let after_eq = after_name
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label {name}"))?;
        let (value, rest) = parse_string_literal(after_eq.trim_start())?;
        pairs.push((name.to_string(), value));
        text = rest.trim_start();
        if let Some(rest) = text.strip_prefix(',') {
            text = rest;
        } else if !text.starts_with('}') {
            return Err(format!("expected `,` or `}}` at {text:?}"));
        }
    }
}

/// A PromQL string: double- or single-quoted with Go escapes, or backquoted raw.
fn parse_string_literal(text: &str) -> Result<(String, &str), String> {
    let quote = text.chars().next().filter(|q| matches!(q, '"' | '\'' | '`'));
    let Some(quote) = quote else {
        return Err(format!("expected a quoted string at {text:?}"));
    };
    let body = &text[1..];
    if quote == '`' {
        let end = body.find('`').ok_or("unterminated raw string")?;
        return Ok((body[..end].to_string(), &body[end + 1..]));
    }
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            _ if c == quote => return Ok((value, &body[i + 1..])),
            '\\' => value.push(unescape(&mut chars)?),
            '\n' => break,
            _ => value.push(c),
        }
    }
    Err("unterminated string".to_string())
}

/// The character of the escape sequence after a backslash, as Go's `strconv.Unquote` reads it.
fn unescape(chars: &mut std::str::CharIndices) -> Result<char, String> {
    let (_, c) = chars.next().ok_or("unterminated escape")?;
    let mut digits = |count: usize, radix: u32| -> Result<u32, String> {
        let text: String = chars.by_ref().take(count).map(|(_, d)| d).collect();
        u32::from_str_radix(&text, radix).map_err(|_| format!("invalid escape digits {text:?}"))
    };
    let code = match c {
        'a' => 0x07,
        'b' => 0x08,
        'f' => 0x0c,
        'n' => 0x0a,
        'r' => 0x0d,
        't' => 0x09,
        'v' => 0x0b,
        '\\' | '\'' | '"' => u32::from(c),
        'x' => digits(2, 16)?,
        'u' => digits(4, 16)?,
        'U' => digits(8, 16)?,
        '0'..='7' => c.to_digit(8).unwrap_or_default() * 64 + digits(2, 8)?,
        _ => return Err(format!("unknown escape sequence \\{c}")),
    };
    char::from_u32(code).ok_or_else(|| format!("invalid character code {code}"))
}

/// One space-separated item of a series' values: `_` (no sample), `_xN` (N times no sample),
/// `v`, `vxN` (v, N+1 times) or `v+dxN` / `v-dxN` (v then N more, each adding ±d).
fn parse_value_item(item: &str) -> Result<Vec<Option<f64>>, String> {
    if let Some(rest) = item.strip_prefix('_') {
        return match rest {
            "" => Ok(vec![None]),
            _ => Ok(vec![None; parse_times(rest)?]),
        };
    }
    let (start, rest) = parse_series_value(item)?;
    if rest.is_empty() {
        return Ok(vec![Some(start)]);
    }
    if rest.starts_with('x') {
        return Ok(vec![Some(start); parse_times(rest)? + 1]);
    }
    let (step, rest) = parse_signed_number(rest)?;
    let count = parse_times(rest)?;
    // Repeated addition, not start + k*step, for the same rounding as Prometheus.
    let mut value = start;
    let mut values = vec![Some(value)];
    for _ in 0..count {
        value += step;
        values.push(Some(value));
    }
    Ok(values)
}

/// `xN`, the repetition count.
fn parse_times(text: &str) -> Result<usize, String> {
    let digits = text
        .strip_prefix('x')
        .ok_or_else(|| format!("expected `x<count>` at {text:?}"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid repetition count {digits:?}"));
    }
    digits
        .parse()
        .map_err(|_| format!("invalid repetition count {digits:?}"))
}

/// A value at the start of `text`: a number, optionally signed, or `stale`.
fn parse_series_value(text: &str) -> Result<(f64, &str), String> {
    if text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let (word, rest) = split_identifier(text);
        if word == "stale" {
            return Ok((f64::from_bits(STALE_NAN_BITS), rest));
        }
    }
    if text.starts_with(['+', '-']) {
        return parse_signed_number(text);
    }
    parse_number(text)
}

fn parse_signed_number(text: &str) -> Result<(f64, &str), String> {
    if let Some(rest) = text.strip_prefix('+') {
        return parse_number(rest);
    }
    let rest = text
        .strip_prefix('-')
        .ok_or_else(|| format!("expected `+` or `-` at {text:?}"))?;
    parse_number(rest).map(|(v, rest)| (-v, rest))
}

/// An unsigned number at the start of `text`: decimal, as Prometheus' lexer reads one in a
/// series (no hexadecimal: `0x5` is 0 repeated), or `Inf`/`NaN` in any case.
fn parse_number(text: &str) -> Result<(f64, &str), String> {
    if text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let (word, rest) = split_identifier(text);
        return match word.to_ascii_lowercase().as_str() {
            "inf" => Ok((f64::INFINITY, rest)),
            "nan" => Ok((f64::NAN, rest)),
            _ => Err(format!("expected a number or `stale`, got {word:?}")),
        };
    }
    let end = scan_number(text);
    if end == 0 {
        return Err(format!("expected a number at {text:?}"));
    }
    let (number, rest) = text.split_at(end);
    if rest.starts_with(|c: char| (c.is_ascii_alphanumeric() || c == '_') && c != 'x') {
        return Err(format!("bad number or duration syntax at {text:?}"));
    }
    let value = parse_go_number(number).ok_or_else(|| format!("invalid number {number:?}"))?;
    Ok((value, rest))
}

/// Length of the decimal number (digits, fraction, exponent) at the start of `text`.
fn scan_number(text: &str) -> usize {
    let bytes = text.as_bytes();
    let digits_from = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = digits_from(0);
    if bytes.get(end) == Some(&b'.') {
        end = digits_from(end + 1);
    }
    if end == 0 || (end == 1 && bytes[0] == b'.') {
        return 0;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        end = digits_from(end + 1 + sign);
    }
    end
}

fn split_identifier(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Go's `strconv.ParseInt(s, 0, 64)` then `strconv.ParseFloat(s, 64)`, as test.go reads
/// numbers: `010` is octal, `0x1f` hexadecimal, `Inf`/`NaN` in any case. (Go also accepts
/// `_` digit separators and hexadecimal floats; the scripts use neither.)
fn parse_go_number(text: &str) -> Option<f64> {
    parse_go_int(text)
        .map(|n| n as f64)
        .or_else(|| text.parse::<f64>().ok())
}

fn parse_go_int(text: &str) -> Option<i64> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = match body.get(..2) {
        Some("0x" | "0X") => (16, &body[2..]),
        Some("0o" | "0O") => (8, &body[2..]),
        Some("0b" | "0B") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

// ---------------------------------------------------------------------------------------------
// Tests of the runner itself, independent of the engine

#[cfg(test)]
mod runner_tests {
    use super::*;

    fn values(text: &str) -> Vec<Option<f64>> {
        parse_series_desc(&format!("m {text}")).unwrap().1
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs)
    }

    fn samples(pairs: &[(i64, f64)]) -> Vec<Sample> {
        pairs.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    #[test]
    fn value_notation_expands_like_prometheus() {
        assert_eq!(values("1+2x3"), [Some(1.0), Some(3.0), Some(5.0), Some(7.0)]);
        assert_eq!(values("1-2x3"), [Some(1.0), Some(-1.0), Some(-3.0), Some(-5.0)]);
        assert_eq!(values("-1+1x1 +2"), [Some(-1.0), Some(0.0), Some(2.0)]);
        assert_eq!(values("1x3"), [Some(1.0); 4]);
        assert_eq!(values("0x2"), [Some(0.0); 3], "no hexadecimal in series: 0 repeated");
        assert_eq!(values("_ 1 _x2 2"), [None, Some(1.0), None, None, Some(2.0)]);
        assert_eq!(
            values("1e3 .5 010 -0.25"),
            [Some(1000.0), Some(0.5), Some(8.0), Some(-0.25)]
        );
        assert_eq!(
            values("Inf -Inf +inf"),
            [Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(f64::INFINITY)]
        );
        let special = values("NaN stale");
        assert!(special[0].unwrap().is_nan() && special[0].unwrap().to_bits() != STALE_NAN_BITS);
        assert_eq!(special[1].unwrap().to_bits(), STALE_NAN_BITS);
        assert!(values("").is_empty());
        for bad in ["1+", "1+2", "1x", "abc", "1y", "_y", "-stale", "Infx2"] {
            assert!(
                parse_series_desc(&format!("m {bad}")).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn series_descriptors_give_labels() {
        let (got, vals) = parse_series_desc(r#"http_requests{job="api-server", instance="0"} 1"#).unwrap();
        assert_eq!(
            got,
            labels(&[("__name__", "http_requests"), ("job", "api-server"), ("instance", "0")])
        );
        assert_eq!(vals, [Some(1.0)]);
        let (got, _) = parse_series_desc(r#"{__name__="x",a="b c, d}",} 2"#).unwrap();
        assert_eq!(got, labels(&[("__name__", "x"), ("a", "b c, d}")]));
        assert_eq!(parse_series_desc("{} 3").unwrap().0, Labels::default());
        let (got, _) = parse_series_desc(r#"m{a='q"\'', b=`\n`, c="\x41\u00e9\101\"\\"}"#).unwrap();
        assert_eq!(
            got,
            labels(&[("__name__", "m"), ("a", "q\"'"), ("b", "\\n"), ("c", "Aé\u{41}\"\\")])
        );
        assert_eq!(
            parse_series_desc("metric:rate_5m 1").unwrap().0,
            labels(&[("__name__", "metric:rate_5m")])
        );
        for bad in ["{a=1} 1", "{a} 1", r#"{a="1" 1"#, r#"m{a="1"}1"#, "1 2"] {
            assert!(parse_series_desc(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn durations_and_numbers_read_like_go() {
        assert_eq!(parse_duration("1m"), Ok(60_000));
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1ms"), Ok(1));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("0h"), Ok(0));
        assert_eq!(parse_duration("1d1w").ok(), None, "units must come largest first");
        assert_eq!(parse_duration("").ok(), None);
        assert_eq!(parse_duration("5").ok(), None);
        assert_eq!(parse_go_number("0x10"), Some(16.0));
        assert_eq!(parse_go_number("010"), Some(8.0));
        assert_eq!(parse_go_number("-0.0000002"), Some(-0.0000002));
        assert_eq!(parse_go_number("+Inf"), Some(f64::INFINITY));
        assert!(parse_go_number("NaN").unwrap().is_nan());
        assert_eq!(parse_go_number("{} 1"), None);
        assert_eq!(parse_go_number("metric 1"), None);
    }

    #[test]
    fn scripts_parse_into_commands() {
        let script = r#"
            # a comment
            load 5m
              metric{a="1"} 1 _ 3
              other 1+1x1
              other 7

            eval instant at 1h30m sum(metric)
            	{} 4
            	metric{a="1"} NaN
            # a comment ends a block too
            eval_ordered instant at 10s  topk(1, metric)
              metric{a="1"} 3

            eval_fail instant at 0m ceil(x)

            eval instant at 50m 1 + 1
              2
            eval instant at 0 absent_series

            clear
        "#;
        let commands = parse_script(script).unwrap();
        assert_eq!(commands.len(), 7, "{commands:#?}");

        let Command::Load(series) = &commands[0] else {
            panic!("not a load: {:?}", commands[0])
        };
        assert_eq!(
            series[&labels(&[("__name__", "metric"), ("a", "1")])].samples,
            samples(&[(0, 1.0), (600_000, 3.0)])
        );
        assert_eq!(
            series[&labels(&[("__name__", "other")])].samples,
            samples(&[(0, 7.0)]),
            "the last line wins"
        );

        let Command::Eval(sum) = &commands[1] else {
            panic!("not an eval: {:?}", commands[1])
        };
        assert_eq!(
            (sum.line, sum.kind, sum.expr.as_str(), sum.time_ms),
            (8, EvalKind::Plain, "sum(metric)", 5_400_000)
        );
        assert_eq!(sum.expected.series[&Labels::default()], (1, Item::Float(4.0)));
        assert!(matches!(
            sum.expected.series[&labels(&[("__name__", "metric"), ("a", "1")])].1,
            Item::Float(v) if v.is_nan()
        ));

        let Command::Eval(top) = &commands[2] else {
            panic!("not an eval: {:?}", commands[2])
        };
        assert_eq!(
            (top.kind, top.expr.as_str(), top.time_ms),
            (EvalKind::Ordered, "topk(1, metric)", 10_000)
        );
        assert_eq!(top.expected.series.len(), 1);

        let Command::Eval(fail) = &commands[3] else {
            panic!("not an eval: {:?}", commands[3])
        };
        assert_eq!((fail.kind, fail.expected.series.is_empty()), (EvalKind::Fail, true));

        let Command::Eval(scalar) = &commands[4] else {
            panic!("not an eval: {:?}", commands[4])
        };
        assert_eq!((scalar.expected.scalar, scalar.time_ms), (Some(2.0), 3_000_000));

        let Command::Eval(empty) = &commands[5] else {
            panic!("not an eval: {:?}", commands[5])
        };
        assert_eq!(
            empty.expected,
            Expected::default(),
            "the scalar ended the previous block"
        );
        assert!(matches!(commands[6], Command::Clear));
    }

    #[test]
    fn prometheus_3_scripts_parse_and_matrices_compare() {
        let script = "load 1m\n  m{a=\"1\"} 1 2 3\n  h {{schema:0 count:1}}\n\n\
            eval range from 0 to 2m step 1m m\n  m{a=\"1\"} 1 _ 3\n\n\
            eval instant at 1m m\n  expect fail msg: bad thing\n\n\
            eval instant at 2m m[2m]\n  expect range vector from 1m to 2m step 1m\n  m{a=\"1\"} 2 3\n\n\
            eval instant at 0 \"x\"\n  expect string \"x\"\n\n\
            eval instant at 0 m\n  expect warn\n\n\
            eval instant at 0 m\n  {} {{count:1}}\n";
        let commands = parse_script(script).unwrap();
        let Command::Load(loaded) = &commands[0] else {
            panic!("not a load: {:?}", commands[0])
        };
        let h = &loaded[&labels(&[("__name__", "h")])];
        assert_eq!((h.samples.len(), h.histograms.len()), (0, 1));
        assert_eq!((h.histograms[0].h.schema, h.histograms[0].h.count), (0, 1.0));
        let evals: Vec<&Eval> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Eval(e) => Some(&**e),
                _ => None,
            })
            .collect();
        assert_eq!(evals[0].range, Some((0, 120_000, 60_000)));
        let a = labels(&[("__name__", "m"), ("a", "1")]);
        assert_eq!(
            evals[0].expected.range_series[&a],
            vec![Some(Item::Float(1.0)), None, Some(Item::Float(3.0))]
        );
        assert_eq!(evals[1].kind, EvalKind::Fail);
        assert!(evals[1].fail_message.as_ref().unwrap().accepts("bad thing"));
        assert!(!evals[1].fail_message.as_ref().unwrap().accepts("other"));
        assert_eq!(
            (evals[2].range, evals[2].instant_only, evals[2].time_ms),
            (Some((60_000, 120_000, 60_000)), true, 120_000)
        );
        assert_eq!(evals[3].string.as_deref(), Some("x"));
        assert_eq!(
            (evals[4].expect_warnings.len(), evals[4].unsupported.is_none()),
            (1, true)
        );
        assert!(evals[4].expect_warnings[0].accepts("PromQL warning: anything"));
        assert!(evals[5].unsupported.is_none(), "histogram values are read");
        assert!(matches!(
            &evals[5].expected.series[&Labels::default()].1,
            Item::Histogram(h, false) if h.count == 1.0
        ));

        let matrix = |points: &[(i64, f64)]| {
            Value::Matrix(vec![promscale_promql::Series {
                labels: a.clone(),
                samples: points.iter().map(|&(t, v)| Sample { t, v }).collect(),
                histograms: vec![],
                start_times: vec![],
            }])
        };
        let range = (0, 120_000, 60_000);
        assert_eq!(
            compare_matrix(&evals[0].expected, &matrix(&[(0, 1.0), (120_000, 3.0)]), range),
            Ok(())
        );
        assert!(compare_matrix(
            &evals[0].expected,
            &matrix(&[(0, 1.0), (60_000, 2.0), (120_000, 3.0)]),
            range
        )
        .is_err());
        assert!(compare_matrix(&evals[0].expected, &matrix(&[(0, 1.0), (120_000, 3.5)]), range).is_err());
        assert!(compare_matrix(&Expected::default(), &matrix(&[(0, 1.0)]), range).is_err());
    }

    #[test]
    fn histogram_notation_expands_and_loads_with_tsdb_hints() {
        let (_, items) = parse_series_items(
            "m {{schema:0 count:1 sum:2 buckets:[1] offset:1}}+{{count:2 buckets:[2] offset:1}}x2 _ {{count:1}}x1",
        )
        .unwrap();
        let counts: Vec<Option<f64>> = items
            .iter()
            .map(|i| match i {
                Some(Item::Histogram(h, _)) => Some(h.count),
                _ => None,
            })
            .collect();
        assert_eq!(
            counts,
            vec![Some(1.0), Some(3.0), Some(5.0), None, Some(1.0), Some(1.0)]
        );
        let Some(Item::Histogram(third, _)) = &items[2] else {
            panic!("not a histogram")
        };
        assert_eq!((third.sum, third.positive_buckets.clone()), (2.0, vec![5.0]));
        assert_eq!(third.positive_spans, vec![Span { offset: 1, length: 1 }]);

        // Read back from a TSDB: unknown first, then not-reset, and unknown again where counts
        // fell (a new chunk).
        let loaded = loaded_every(60_000, &items, None);
        let hints: Vec<CounterResetHint> = loaded.histograms.iter().map(|h| h.h.counter_reset_hint).collect();
        assert_eq!(
            hints,
            vec![
                CounterResetHint::Unknown,
                CounterResetHint::NotCounterReset,
                CounterResetHint::NotCounterReset,
                CounterResetHint::Unknown,
                CounterResetHint::NotCounterReset,
            ]
        );
        let (_, gauges) =
            parse_series_items("g {{count:3 counter_reset_hint:gauge}} {{count:1 counter_reset_hint:gauge}}").unwrap();
        assert!(loaded_every(1, &gauges, None)
            .histograms
            .iter()
            .all(|h| h.h.counter_reset_hint == CounterResetHint::Gauge));

        // Compared as test.go compares: compacted, empty spans folded, hint only when given.
        let with = |spans: Vec<Span>, buckets: Vec<f64>| FloatHistogram {
            count: 2.0,
            positive_spans: spans,
            positive_buckets: buckets,
            counter_reset_hint: CounterResetHint::NotCounterReset,
            ..Default::default()
        };
        let a = with(vec![Span { offset: 0, length: 2 }], vec![1.0, 1.0]);
        let b = with(
            vec![
                Span { offset: 0, length: 0 },
                Span { offset: 0, length: 2 },
                Span { offset: 3, length: 1 },
            ],
            vec![1.0, 1.0, 0.0],
        );
        assert!(histograms_match(&a, &b, false));
        let mut c = a.clone();
        c.counter_reset_hint = CounterResetHint::Gauge;
        assert!(histograms_match(&a, &c, false));
        assert!(!histograms_match(&a, &c, true));
        assert!(!histograms_match(
            &a,
            &with(vec![Span { offset: 1, length: 2 }], vec![1.0, 1.0]),
            false
        ));
    }

    #[test]
    fn malformed_scripts_are_rejected() {
        for bad in [
            "loud 5m",
            "load\n",
            "load 5x\n m 1",
            "eval instant 1",
            "eval instant at 5 x",
            "eval range from 0 to 1m x",
            "eval instant at 1m x\n expect nothing",
            "eval instant at 1m x\n m 1 2",
            "eval instant at 1m x\n m",
            "EVAL instant at 1m x",
            "eval instant at 1m x\nclear",
        ] {
            assert!(parse_script(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn values_compare_with_tolerance() {
        assert!(almost_equal(f64::NAN, f64::from_bits(STALE_NAN_BITS)));
        assert!(almost_equal(1.0, 1.0 + 1e-9));
        assert!(!almost_equal(1.0, 1.0001));
        assert!(almost_equal(f64::INFINITY, f64::INFINITY));
        assert!(!almost_equal(f64::INFINITY, f64::NEG_INFINITY));
        assert!(!almost_equal(0.0, 1e-300));
        assert!(!almost_equal(1.0, f64::NAN));

        let a = labels(&[("a", "1")]);
        let b = labels(&[("a", "2")]);
        let expected = Expected {
            scalar: None,
            series: BTreeMap::from([(a.clone(), (1, Item::Float(1.0))), (b.clone(), (2, Item::Float(2.0)))]),
            range_series: BTreeMap::new(),
        };
        let s = |l: &Labels, v: f64| InstantSample::float(l.clone(), 0, v);
        assert_eq!(compare_vector(&expected, &[s(&a, 1.0), s(&b, 2.0)], true), Ok(()));
        assert_eq!(compare_vector(&expected, &[s(&b, 2.0), s(&a, 1.0)], false), Ok(()));
        assert!(compare_vector(&expected, &[s(&b, 2.0), s(&a, 1.0)], true).is_err());
        assert!(compare_vector(&expected, &[s(&a, 1.0)], false).is_err());
        assert!(compare_vector(&expected, &[s(&a, 1.0), s(&b, 2.1)], false).is_err());
        assert!(compare_vector(&Expected::default(), &[s(&a, 1.0)], false).is_err());
        assert_eq!(compare(&Expected::default(), &Value::Vector(Vec::new()), false), Ok(()));
        assert!(compare(&Expected::default(), &Value::Scalar { t: 0, v: 1.0 }, false).is_err());
    }

    #[test]
    fn selectors_are_pinned_like_test_go() {
        let pinned = |expr: &str, t: i64| pin_to_eval_time(&promql::parse(expr).unwrap(), t);
        let Pinning::Variants(text, times) = pinned("sum(rate(m[5m])) + on(a) x offset 1m", 3_000_000) else {
            panic!("expected variants");
        };
        assert_eq!(
            text,
            promql::parse("sum(rate(m[5m] @ 3000)) + on(a) x @ 3000 offset 1m")
                .unwrap()
                .to_string()
        );
        assert_eq!(times, [-30_000_000, 0, 600_000, 3_000_000, 30_000_000]);

        let Pinning::Variants(text, times) = pinned("max_over_time(m[1m:10s]) + m @ 100", 0) else {
            panic!("expected variants");
        };
        let want = promql::parse("max_over_time(m[1m:10s] @ 0) + m @ 100")
            .unwrap()
            .to_string();
        assert_eq!(text, want, "a subquery's inside and an existing @ stay as they are");
        assert_eq!(times, [-1000, 0, 1000]);

        let Pinning::Variants(text, _) = pinned(r#"sum by () (m{b="1", a="2"})"#, 60_000) else {
            panic!("matcher order and an empty `by ()` do not change the meaning");
        };
        assert_eq!(text, r#"sum(m{a="2",b="1"} @ 60.000)"#);
        assert!(matches!(pinned("a + ignoring() b", 60_000), Pinning::Variants(..)));
        assert!(matches!(pinned("a and ignoring() b", 60_000), Pinning::Variants(..)));
        assert!(matches!(pinned("a > bool ignoring() b", 60_000), Pinning::Variants(..)));
        assert_eq!(pinned("time() - m", 60_000), Pinning::Unsafe);
        assert_eq!(pinned("timestamp(m)", 60_000), Pinning::Unsafe);
        assert!(matches!(
            pinned("sum_over_time(timestamp(m)[5m:1m])", 60_000),
            Pinning::Variants(..)
        ));
    }
}
