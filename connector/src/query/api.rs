//! The Prometheus HTTP query API: /api/v1/query, query_range, series, labels, label values,
//! metadata, buildinfo and the cardinality of status/tsdb, GET or form-encoded POST; and the
//! admin API's deletion, when enabled.
//!
//! Hostile requests are refused before they cost anything: queries (and `match[]` selectors)
//! nested deeper than the engine's limit, and range queries of more than 11,000 points per
//! series, counted without overflow whatever the times and step.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use promscale_promql::parse::MAX_DEPTH;
use promscale_promql::{Engine, EngineOptions};
use serde_json::json;

use super::json::{format_time, labels_object, query_response, success, success_warned, ApiError};
use super::params::{parse_duration, parse_limit, parse_time, unescape_label_name, Params};
use crate::model::is_valid_label_name;
use crate::server::AppState;
use crate::storage::select::PgSeriesSource;
use crate::storage::{catalog, exemplars};
use crate::tenancy::{ReadScope, TenantIdentity, TENANT_LABEL};

/// Prometheus refuses range queries of more points than this per series.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/tsdb", get(tsdb_status))
        .route("/api/v1/status/flags", get(flags))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(delete_series).put(delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(clean_tombstones).put(clean_tombstones),
        )
}

/// The admin API's answer while --web.enable-admin-api is off, as Prometheus'.
fn admin_disabled() -> ApiError {
    ApiError {
        kind: "unavailable",
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: "admin APIs disabled".to_string(),
    }
}

/// `/api/v1/admin/tsdb/delete_series`: deletes every sample, native histogram and exemplar of
/// the series any `match[]` selects in `[start, end]` (both included; the whole time line by
/// default), at once and for good (Prometheus writes tombstones and drops the data later):
/// 204 once committed.
async fn delete_series(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    if !app.enable_admin_api {
        return Err(admin_disabled());
    }
    let p = params(&q, &headers, &body);
    let selectors = selectors(&app, &p, true)?;
    let start = time_param(&p, "start", i64::MIN)?;
    let end = time_param(&p, "end", i64::MAX)?;
    let source = PgSeriesSource::scoped(app.pool.clone(), scope.clone());
    let mut ids = Vec::new();
    for matchers in &selectors {
        for selected in source.select_series(matchers).await? {
            ids.extend(selected.ids);
        }
    }
    let deleted = crate::storage::deletion::delete(&app.pool, &ids, start, end)
        .await
        .map_err(|e| match &e {
            // Not the connection: Prometheus' "internal" (the reason stays in the log).
            sqlx::Error::Database(db) if !db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57")) => {
                ApiError {
                    kind: "internal",
                    status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    message: "deleting failed; the reason is in the connector's log".to_string(),
                }
            }
            _ => storage_error(e),
        })?;
    tracing::info!(
        series = ids.len(),
        start,
        end,
        samples = deleted.samples,
        histograms = deleted.histograms,
        exemplars = deleted.exemplars,
        "deleted series data through the admin API"
    );
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `/api/v1/admin/tsdb/clean_tombstones`: deletion leaves no tombstones here, so there is
/// nothing to clean: 204, as Prometheus answers once it has cleaned.
async fn clean_tombstones(State(app): State<Arc<AppState>>) -> ApiResult {
    if !app.enable_admin_api {
        return Err(admin_disabled());
    }
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Prometheus' warning for a listing or a query result cut at `limit`.
const TRUNCATED: &str = "results truncated due to limit";

/// The `limit` parameter (0: none), refused as Prometheus 3 refuses it.
fn limit_param(p: &Params) -> Result<usize, ApiError> {
    parse_limit(p.get("limit")).map_err(|e| ApiError::bad_data(format!("invalid parameter \"limit\": {e}")))
}

/// Keeps the first `limit` entries of `items` (all when 0); the warnings to answer with.
fn truncate<T>(items: &mut Vec<T>, limit: usize) -> &'static [&'static str] {
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        &[TRUNCATED]
    } else {
        &[]
    }
}

/// A query's vector or matrix cut at `limit` series, with Prometheus' warning (scalars and
/// strings are never cut).
fn truncate_result(value: &mut promscale_promql::Value, annotations: &mut promscale_promql::Annotations, limit: usize) {
    let cut = match value {
        promscale_promql::Value::Vector(v) => !truncate(v, limit).is_empty(),
        promscale_promql::Value::Matrix(m) => !truncate(m, limit).is_empty(),
        _ => false,
    };
    if cut {
        annotations.warn(TRUNCATED.to_string());
    }
}

type ApiResult = Result<Response, ApiError>;

fn params(query: &RawQuery, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::parse(query.0.as_deref(), headers, body)
}

fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(name) {
        None => Ok(default),
        Some(s) => parse_time(s).map_err(|e| ApiError::bad_data(format!("invalid parameter {name:?}: {e}"))),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The `query` parameter, within --web.max-query-bytes.
fn query_text<'p>(app: &AppState, p: &'p Params) -> Result<&'p str, ApiError> {
    let expr = p
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query must not be empty"))?;
    check_query_size(app, "query", expr)?;
    Ok(expr)
}

fn check_query_size(app: &AppState, what: &str, text: &str) -> Result<(), ApiError> {
    if text.len() > app.query.max_query_bytes {
        return Err(ApiError::bad_data(format!(
            "invalid parameter \"{what}\": {} bytes, above the limit of {} bytes (--web.max-query-bytes)",
            text.len(),
            app.query.max_query_bytes
        )));
    }
    Ok(())
}

/// The engine for one request: the connector's limits, shortened by a `timeout` parameter.
fn engine(app: &AppState, p: &Params) -> Result<Engine, ApiError> {
    let mut options = EngineOptions {
        timeout: app.query.timeout,
        max_samples: app.query.max_samples,
        max_fetched_samples: app.query.max_fetched_samples,
        lookback_delta_ms: app.query.lookback_delta.as_millis() as i64,
        semantics: app.query.semantics,
        features: app.query.features,
        ..EngineOptions::default()
    };
    if let Some(t) = p.get("timeout") {
        let ms = parse_duration(t).map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        options.timeout = options.timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    Ok(Engine::new(options))
}

async fn query(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let limit = limit_param(&p)?;
    let expr = query_text(&app, &p)?;
    let time = time_param(&p, "time", now_ms())?;
    let engine = engine(&app, &p)?;
    let source = PgSeriesSource::scoped(app.pool.clone(), scope.clone());
    let (mut value, mut annotations) =
        within_timeout(&engine, engine.instant_query_annotated(&source, expr, time)).await?;
    truncate_result(&mut value, &mut annotations, limit);
    Ok(query_response(&value, &annotations))
}

/// `/api/v1/query_exemplars`: the stored exemplars in `[start, end]` of every series any
/// selector of `query` selects, per series, as Prometheus answers (the endpoint Grafana
/// probes for exemplars).
async fn query_exemplars(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let text = query_text(&app, &p)?;
    let start = time_param(&p, "start", i64::MIN / 2)?;
    let end = time_param(&p, "end", i64::MAX / 2)?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    // Only the selectors matter here: Prometheus never evaluates the durations of this
    // query, so `step()` and `range()` take 1 s, which keeps every range positive.
    let text = promscale_promql::durations::resolve(text, 1000, 1000).map_err(|e| ApiError::bad_data(e.to_string()))?;
    let expr = promscale_promql::parse::parse_with(&text, MAX_DEPTH, app.query.features)
        .map_err(|e| ApiError::bad_data(e.to_string()))?;
    let source = PgSeriesSource::scoped(app.pool.clone(), scope.clone());
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for matchers in promscale_promql::parse::selectors(&expr) {
        for selected in source.select_series(&matchers).await? {
            let found = exemplars::read(&app.pool, &selected.ids, start, end)
                .await
                .map_err(storage_error)?;
            let mut by_series: std::collections::HashMap<i64, Vec<&exemplars::StoredExemplar>> =
                std::collections::HashMap::new();
            for e in &found {
                by_series.entry(e.0).or_default().push(e);
            }
            for (id, labels) in selected.ids.iter().zip(&selected.labels) {
                if !seen.insert(*id) {
                    continue;
                }
                let of_series: Vec<serde_json::Value> = by_series
                    .remove(id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, t, v, l)| json!({"labels": l, "value": super::json::format_sample_value(*v), "timestamp": format_time(*t)}))
                    .collect();
                if !of_series.is_empty() {
                    out.push(json!({"seriesLabels": labels_object(labels), "exemplars": of_series}));
                }
            }
        }
    }
    Ok(success(json!(out)))
}

async fn query_range(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let limit = limit_param(&p)?;
    let expr = query_text(&app, &p)?;
    let start = p
        .get("start")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp"))
        .and_then(|s| parse_time(s).map_err(|e| ApiError::bad_data(format!("invalid parameter \"start\": {e}"))))?;
    let end = p
        .get("end")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"end\": cannot parse \"\" to a valid timestamp"))
        .and_then(|s| parse_time(s).map_err(|e| ApiError::bad_data(format!("invalid parameter \"end\": {e}"))))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p
        .get("step")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration"))
        .and_then(|s| parse_duration(s).map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}"))))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // In i128: the span of two i64 times (say -9e15 s to 9e15 s) overflows i64.
    if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS_PER_SERIES) {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let engine = engine(&app, &p)?;
    let source = PgSeriesSource::scoped(app.pool.clone(), scope.clone());
    let (mut value, mut annotations) =
        within_timeout(&engine, engine.range_query_annotated(&source, expr, start, end, step)).await?;
    truncate_result(&mut value, &mut annotations, limit);
    Ok(query_response(&value, &annotations))
}

/// The engine checks its deadline between steps; this also bounds the time spent reading.
async fn within_timeout<T>(
    engine: &Engine,
    run: impl std::future::Future<Output = Result<T, promscale_promql::QueryError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(engine.options.timeout, run).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(promscale_promql::QueryError::Timeout("query execution").into()),
    }
}

/// The selectors of `match[]` parameters.
fn selectors(app: &AppState, p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let all = p.all("match[]");
    if all.is_empty() && required {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    for s in all {
        check_query_size(app, "match[]", s)?;
    }
    all.iter()
        .map(|s| match promscale_promql::parse::parse(s, MAX_DEPTH) {
            Ok(Expr::VectorSelector(vs)) => {
                let matchers = promscale_promql::parse::selector_matchers(&vs);
                if matchers.iter().all(|m| m.is_match("")) {
                    return Err(ApiError::bad_data(format!(
                        "invalid parameter \"match[]\": {s}: match[] must contain at least one non-empty matcher"
                    )));
                }
                Ok(matchers)
            }
            Ok(_) => Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {s}: expected a series selector"
            ))),
            Err(e) => Err(ApiError::bad_data(format!("invalid parameter \"match[]\": {e}"))),
        })
        .collect()
}

/// Series matching any of the selectors with samples in `[start, end]`, deduplicated, sorted
/// by labels (as Prometheus answers once its data is in blocks): a `limit` keeps the first.
async fn matching_series(
    app: &AppState,
    p: &Params,
    selectors: &[Vec<Matcher>],
    scope: &Option<ReadScope>,
) -> Result<Vec<promscale_promql::Labels>, ApiError> {
    let source = PgSeriesSource::scoped(app.pool.clone(), scope.clone());
    let mut out = Vec::new();
    if p.get("start").is_none() && p.get("end").is_none() {
        // Every series ever stored: the catalog answers, no sample is read.
        for matchers in selectors {
            for selected in source.select_series(matchers).await? {
                out.extend(selected.labels);
            }
        }
    } else {
        // Series with data in the range, found from chunk and head-row bounds: no sample is
        // read, so a Grafana variable over months costs what one over an hour does.
        let start = time_param(p, "start", i64::MIN / 2)?;
        let end = time_param(p, "end", i64::MAX / 2)?;
        for matchers in selectors {
            out.extend(source.series_in_range(matchers, start, end).await?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn series(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let limit = limit_param(&p)?;
    let selectors = selectors(&app, &p, true)?;
    let mut series = matching_series(&app, &p, &selectors, &scope).await?;
    let warnings = truncate(&mut series, limit);
    Ok(success_warned(
        json!(series.iter().map(labels_object).collect::<Vec<_>>()),
        warnings,
    ))
}

async fn labels(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    q: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = params(&q, &headers, &body);
    let limit = limit_param(&p)?;
    let selectors = selectors(&app, &p, false)?;
    let mut names: Vec<String> = if selectors.is_empty() {
        match &scope {
            None => catalog::label_names(&app.pool).await.map_err(storage_error)?,
            Some(scope) => {
                let ids = tenant_ids(&app, scope).await?;
                catalog::tenant_label_names(&app.pool, &ids, scope.hides_label(), app.query.timeout)
                    .await
                    .map_err(|e| catalog_error(e, "listing label names"))?
            }
        }
    } else {
        let series = matching_series(&app, &p, &selectors, &scope).await?;
        series
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.to_string()))
            .collect()
    };
    names.sort();
    names.dedup();
    let warnings = truncate(&mut names, limit);
    Ok(success_warned(json!(names), warnings))
}

async fn label_values(
    State(app): State<Arc<AppState>>,
    Scoped(scope): Scoped,
    Path(name): Path<String>,
    q: RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let name = unescape_label_name(&name);
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    // A name no stored series can have (a NUL byte) has no values, as in Prometheus.
    if !is_valid_label_name(name.as_bytes()) {
        return Ok(success(json!([])));
    }
    let p = params(&q, &headers, &Bytes::new());
    let limit = limit_param(&p)?;
    let selectors = selectors(&app, &p, false)?;
    let mut values: Vec<String> = if selectors.is_empty() {
        match &scope {
            None => catalog::label_values(&app.pool, &name).await.map_err(storage_error)?,
            // A tenant reading alone does not see its tenant label (nor any other tenant's).
            Some(scope) if scope.hides_label() && name == TENANT_LABEL => Vec::new(),
            Some(scope) => {
                let ids = tenant_ids(&app, scope).await?;
                catalog::tenant_label_values(&app.pool, &name, &ids, app.query.timeout)
                    .await
                    .map_err(|e| catalog_error(e, "listing label values"))?
            }
        }
    } else {
        let series = matching_series(&app, &p, &selectors, &scope).await?;
        series
            .iter()
            .map(|l| l.get(&name).to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    values.sort();
    values.dedup();
    let warnings = truncate(&mut values, limit);
    Ok(success_warned(json!(values), warnings))
}

async fn metadata(State(app): State<Arc<AppState>>, Scoped(scope): Scoped, q: RawQuery) -> ApiResult {
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let rows = catalog::metadata(&app.pool, p.get("metric"), scope.as_ref().map(ReadScope::tenants))
        .await
        .map_err(storage_error)?;
    let limit: Option<usize> = p
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|&l| l >= 0)
        .map(|l| l as usize);
    let mut out = serde_json::Map::new();
    for (family, kind, help, unit) in rows {
        if limit.is_some_and(|l| out.len() >= l && !out.contains_key(&family)) {
            break;
        }
        let entry = out.entry(family).or_insert_with(|| json!([]));
        entry
            .as_array_mut()
            .expect("an array")
            .push(json!({"type": kind, "help": help, "unit": unit}));
    }
    Ok(success(serde_json::Value::Object(out)))
}

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("PROMSCALE_REVISION").unwrap_or("unknown"),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// `/api/v1/status/flags`: every flag's value as given or defaulted, as Prometheus lists its
/// own (secrets masked).
async fn flags(State(app): State<Arc<AppState>>) -> Response {
    success(json!(app.flags))
}

/// `/api/v1/status/runtimeinfo` in Prometheus' shape, with what a connector has of it: the Go
/// runtime's fields are those of a process without one (GOMAXPROCS: the cores it may use),
/// the retention the database's default.
async fn runtimeinfo(State(app): State<Arc<AppState>>) -> ApiResult {
    let retention = catalog::default_retention_seconds(&app.pool)
        .await
        .map_err(storage_error)?;
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let rfc3339 = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(success(json!({
        "startTime": rfc3339(app.started),
        "CWD": cwd,
        "hostname": hostname,
        "serverTime": rfc3339(chrono::Utc::now()),
        "reloadConfigSuccess": true,
        "lastConfigTime": rfc3339(app.started),
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": prometheus_duration((retention * 1000.0) as i64),
    })))
}

/// A duration as Prometheus writes one (`model.Duration`): years and weeks only when they
/// divide it (`90d`, `2w`, `1y`), then days down to milliseconds (`1d1h30m`, `0s`).
fn prometheus_duration(ms: i64) -> String {
    if ms <= 0 {
        return "0s".to_string();
    }
    const UNITS: [(&str, i64, bool); 7] = [
        ("y", 365 * 86_400_000, true),
        ("w", 7 * 86_400_000, true),
        ("d", 86_400_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ];
    let mut rest = ms;
    let mut out = String::new();
    for (unit, size, exact) in UNITS {
        if (exact && rest % size != 0) || rest < size {
            continue;
        }
        out.push_str(&format!("{}{unit}", rest / size));
        rest %= size;
    }
    out
}

/// `/api/v1/status/tsdb`: cardinality in Prometheus' shape, the top `limit` (10 by default, at
/// most 10,000) of series per metric name, distinct values per label name, bytes of label
/// values per label name (as Prometheus counts them: name and value with their length
/// prefixes, once per series) and series per label pair, over every stored series (Prometheus
/// reports its head). `headStats` counts every stored series; its times are those of the
/// samples not yet compacted, `chunkCount` the rows holding them (Prometheus: its head
/// chunks). Equal counts are ordered by name (Prometheus leaves their order to chance).
/// Counted and ranked in the database within the query timeout (`--metrics.promql.query-timeout`).
/// A tenant's read (`--metrics.multi-tenancy`) counts its own series only, and its
/// `headStats` has no times nor `chunkCount` (an empty head's values): they are every
/// tenant's.
async fn tsdb_status(State(app): State<Arc<AppState>>, Scoped(scope): Scoped, q: RawQuery) -> ApiResult {
    const MAX_LIMIT: usize = 10_000;
    let p = params(&q, &HeaderMap::new(), &Bytes::new());
    let limit = match p.get("limit") {
        None => 10,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 && n as u64 <= MAX_LIMIT as u64 => n as usize,
            Ok(n) if n > MAX_LIMIT as i64 => {
                return Err(ApiError::bad_data(format!("limit must not exceed {MAX_LIMIT}")));
            }
            _ => return Err(ApiError::bad_data("limit must be a positive number")),
        },
    };
    let ids = match &scope {
        Some(scope) => Some(tenant_ids(&app, scope).await?),
        None => None,
    };
    let counted = match (&scope, &ids) {
        (Some(scope), Some(ids)) => catalog::Counted::Tenants {
            label_ids: ids,
            hide_tenant: scope.hides_label(),
        },
        _ => catalog::Counted::All,
    };
    let status = catalog::tsdb_status(&app.pool, counted, limit as i64, app.query.timeout)
        .await
        .map_err(|e| catalog_error(e, "counting the catalog"))?;
    let list = |items: Vec<(String, i64)>| {
        items
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>()
    };
    Ok(success(json!({
        "headStats": {
            "numSeries": status.series,
            "numLabelPairs": status.label_pairs,
            "chunkCount": status.head_rows,
            // Prometheus' values for an empty head.
            "minTime": status.min_time.unwrap_or(i64::MAX),
            "maxTime": status.max_time.unwrap_or(i64::MIN),
        },
        "seriesCountByMetricName": list(status.series_by_metric),
        "labelValueCountByLabelName": list(status.values_by_name),
        "memoryInBytesByLabelName": list(status.bytes_by_name),
        "seriesCountByLabelValuePair": list(status.series_by_pair),
    })))
}

/// The tenants a request may read (None: tenants are not kept apart), from its tenant
/// credential (put in the request by `server::auth`) or its tenant header; refused in
/// Prometheus' error shape (400, or 403 for a credential naming another tenant).
struct Scoped(Option<ReadScope>);

impl FromRequestParts<Arc<AppState>> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ApiError> {
        let identity = parts.extensions.get::<TenantIdentity>();
        crate::tenancy::read_scope(app.tenancy.as_ref(), &parts.headers, identity)
            .map(Scoped)
            .map_err(|e| ApiError {
                kind: "bad_data",
                status: e.status(),
                message: e.to_string(),
            })
    }
}

/// The label ids of a scope's tenants.
async fn tenant_ids(app: &AppState, scope: &ReadScope) -> Result<Vec<i32>, ApiError> {
    catalog::tenant_label_ids(&app.pool, scope.tenants())
        .await
        .map_err(storage_error)
}

/// A statement cancelled by its timeout is the query's timeout (503); anything else a storage
/// error.
fn catalog_error(e: sqlx::Error, what: &'static str) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
            ApiError::from(promscale_promql::QueryError::Timeout(what))
        }
        _ => storage_error(e),
    }
}

fn storage_error(e: sqlx::Error) -> ApiError {
    ApiError::from(promscale_promql::QueryError::Storage(format!(
        "reading from the database failed: {e}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_prometheus_writes_them() {
        assert_eq!(prometheus_duration(90 * 86_400_000), "90d");
        assert_eq!(prometheus_duration(14 * 86_400_000), "2w");
        assert_eq!(prometheus_duration(365 * 86_400_000), "1y");
        assert_eq!(prometheus_duration(365 * 86_400_000 + 5_400_000), "365d1h30m");
        assert_eq!(prometheus_duration(0), "0s");
        assert_eq!(prometheus_duration(1_500), "1s500ms");
    }

    #[test]
    fn listings_are_cut_at_the_limit_with_a_warning() {
        let mut names = vec!["a", "b", "c"];
        assert!(truncate(&mut names, 0).is_empty());
        assert!(truncate(&mut names, 3).is_empty());
        assert_eq!(truncate(&mut names, 2), &[TRUNCATED]);
        assert_eq!(names, vec!["a", "b"]);
    }
}
