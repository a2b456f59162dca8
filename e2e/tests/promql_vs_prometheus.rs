//! The connector's PromQL answers side by side with a real Prometheus holding the same
//! samples: every query, instant and range, at aligned and unaligned times, must give the same
//! series, timestamps and values. Against Prometheus 2.42 with the connector's Prometheus 2
//! semantics, and against Prometheus 3 with its defaults.

use promscale_e2e::comparison::Loaded;

const QUERIES: &[&str] = &[
    // Selectors, matchers, offset, @.
    "http_requests_total",
    "http_requests_total{method=\"get\"}",
    "http_requests_total{instance=~\"a|b\", method!=\"post\"}",
    "{__name__=~\"http_.*\", instance!~\"c\"}",
    "http_requests_total offset 10m",
    "node_temperature_celsius @ end()",
    "flaky_up",
    "special_values",
    "nonexistent_metric",
    // Range functions.
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "irate(http_requests_total[1m])",
    "delta(node_temperature_celsius[15m])",
    "idelta(node_temperature_celsius[5m])",
    "deriv(node_temperature_celsius[10m])",
    "predict_linear(node_temperature_celsius[30m], 600)",
    "changes(flaky_up[1h])",
    "resets(http_requests_total[1h])",
    "avg_over_time(node_temperature_celsius[10m])",
    "min_over_time(node_temperature_celsius[10m])",
    "max_over_time(node_temperature_celsius[10m])",
    "sum_over_time(node_temperature_celsius[10m])",
    "count_over_time(flaky_up[30m])",
    "stddev_over_time(node_temperature_celsius[10m])",
    "stdvar_over_time(node_temperature_celsius[10m])",
    "last_over_time(node_temperature_celsius[10m])",
    "present_over_time(flaky_up[10m])",
    "quantile_over_time(0.9, node_temperature_celsius[30m])",
    "absent_over_time(flaky_up[5m])",
    "rate(http_requests_total[5m] offset 30m)",
    // Aggregations.
    "sum(rate(http_requests_total[5m]))",
    "sum by (instance) (rate(http_requests_total[5m]))",
    "sum without (method) (http_requests_total)",
    "avg(node_temperature_celsius)",
    "count(http_requests_total)",
    "min by (method) (http_requests_total)",
    "max(node_temperature_celsius)",
    "group by (instance) (http_requests_total)",
    "stddev(node_temperature_celsius)",
    "stdvar(node_temperature_celsius)",
    "topk(2, http_requests_total)",
    "bottomk(1, node_temperature_celsius)",
    // Ties: which of equal series survive follows Prometheus' heap.
    "topk(2, demo_memory_usage_bytes)",
    "topk(5, demo_memory_usage_bytes)",
    "topk without(instance) (2, demo_memory_usage_bytes)",
    "bottomk by (service) (1, demo_memory_usage_bytes)",
    "topk(1, demo_memory_usage_bytes) by (instance)",
    "quantile(0.3, demo_memory_usage_bytes)",
    "count_values(\"bytes\", demo_memory_usage_bytes)",
    "max by (service) (demo_memory_usage_bytes)",
    "stddev by (instance) (demo_memory_usage_bytes)",
    "demo_memory_usage_bytes == on(instance, service) group_left topk by (service) (1, demo_memory_usage_bytes)",
    "quantile(0.5, node_temperature_celsius)",
    "count_values(\"value\", flaky_up)",
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(request_duration_seconds_bucket[10m])))",
    // Binary operators.
    "http_requests_total * 2",
    "2 ^ node_temperature_celsius / 1e10",
    "node_temperature_celsius > 45",
    "node_temperature_celsius > bool 45",
    "http_requests_total % 7",
    "rate(http_requests_total[5m]) / on(instance) group_left sum by (instance) (rate(http_requests_total[5m]))",
    "request_duration_seconds_count / ignoring(le) group_right request_duration_seconds_bucket",
    "http_requests_total{method=\"get\"} and on(instance) node_temperature_celsius > 42",
    "http_requests_total or node_temperature_celsius",
    "http_requests_total unless on(instance) node_temperature_celsius > 45",
    "atan2(node_temperature_celsius, 10)",
    "-node_temperature_celsius",
    "1 + 2 * 3",
    "time() - 100",
    // Instant-vector functions.
    "abs(-node_temperature_celsius)",
    "ceil(node_temperature_celsius)",
    "floor(node_temperature_celsius)",
    "round(node_temperature_celsius, 0.5)",
    "sqrt(node_temperature_celsius)",
    "exp(node_temperature_celsius / 10)",
    "ln(node_temperature_celsius)",
    "log2(node_temperature_celsius)",
    "log10(node_temperature_celsius)",
    "clamp(node_temperature_celsius, 38, 44)",
    "clamp_min(node_temperature_celsius, 41)",
    "clamp_max(node_temperature_celsius, 41)",
    "sgn(node_temperature_celsius - 40)",
    "timestamp(node_temperature_celsius)",
    "scalar(sum(http_requests_total))",
    "vector(1)",
    "absent(nonexistent_metric{job=\"x\"})",
    "absent(http_requests_total)",
    "sort(node_temperature_celsius)",
    "sort_desc(node_temperature_celsius)",
    "label_replace(node_temperature_celsius, \"host\", \"$1-host\", \"instance\", \"(.*)\")",
    "label_join(http_requests_total, \"id\", \"/\", \"instance\", \"method\")",
    "hour(timestamp(node_temperature_celsius))",
    "minute()",
    "day_of_week()",
    "days_in_month()",
    "sin(node_temperature_celsius)",
    "deg(node_temperature_celsius)",
    // Subqueries.
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(node_temperature_celsius[20m:2m] offset 5m)",
];

/// Prometheus 2 only: Prometheus 3 renamed it `double_exponential_smoothing`.
const PROMETHEUS_2_QUERIES: &[&str] = &["holt_winters(node_temperature_celsius[10m], 0.5, 0.5)"];

/// Prometheus 3 only: its new functions, duration expressions, extended range selectors.
const PROMETHEUS_3_QUERIES: &[&str] = &[
    // Prometheus 3 reads series in the order they were created, as the connector does; 2.42
    // mostly in labels order (the connector under Prometheus 2 semantics too), but not
    // always, which this query's ties show.
    "bottomk(3, demo_memory_usage_bytes)",
    "double_exponential_smoothing(node_temperature_celsius[10m], 0.5, 0.5)",
    "mad_over_time(node_temperature_celsius[10m])",
    "first_over_time(node_temperature_celsius[10m])",
    "ts_of_max_over_time(node_temperature_celsius[10m])",
    "ts_of_last_over_time(flaky_up[10m])",
    "limitk(2, demo_memory_usage_bytes)",
    "limit_ratio(0.5, demo_memory_usage_bytes)",
    "sort_by_label(demo_memory_usage_bytes, \"service\", \"instance\")",
    "histogram_fraction(0, 0.5, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "rate(http_requests_total[5m+1m])",
    "http_requests_total offset (step() * 2)",
    "increase(http_requests_total[10m] anchored)",
    "rate(http_requests_total[5m] smoothed)",
    "delta(node_temperature_celsius[15m] smoothed)",
    "delta(node_temperature_celsius[15m] anchored)",
    "changes(flaky_up[1h] anchored)",
    "resets(http_requests_total[1h] anchored)",
    "node_temperature_celsius smoothed",
    "flaky_up smoothed",
    // Warnings and infos, each ending with where the expression it is about starts: over
    // lines, after label lists, offsets and `@`, at a parameter, a signed number, a call.
    "sum by (instance) (\n  rate(node_temperature_celsius[5m])\n)",
    "# a comment first\nincrease(\n  node_temperature_celsius[5m] offset 1m\n)",
    "max by (instance) (rate(demo_memory_usage_bytes[5m] @ end())) * on(instance) group_left max by (instance) (rate(node_temperature_celsius[5m] offset 1m))",
    "quantile(1.5, node_temperature_celsius) + on() group_left quantile(-0.5, node_temperature_celsius)",
    "quantile_over_time(2, node_temperature_celsius[10m])",
    "histogram_quantile(1.5, rate(request_duration_seconds_bucket[5m]))",
    "limit_ratio(1.5, demo_memory_usage_bytes)",
    "-sort_desc(rate(node_temperature_celsius[5m]))",
    // The fill modifiers, under group_right too (where Prometheus 3.16 answers otherwise
    // than 3.13.2's scripts expect): each side misses an instance the other has.
    "node_temperature_celsius{instance!=\"a\"} * on(instance) group_right fill_left(1) http_requests_total{instance!=\"c\"}",
    "node_temperature_celsius{instance!=\"a\"} * on(instance) group_right fill_right(0) http_requests_total{instance!=\"c\"}",
    "node_temperature_celsius{instance!=\"a\"} + on(instance) group_right fill(-1) http_requests_total{instance!=\"c\"}",
    "node_temperature_celsius{instance!=\"a\"} - on(instance) fill_right(2) max by (instance) (http_requests_total{instance!=\"c\"})",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_answers_like_prometheus() {
    let loaded = Loaded::start().await;
    let queries: Vec<&str> = QUERIES.iter().chain(PROMETHEUS_2_QUERIES).copied().collect();
    loaded.assert_same_answers(&loaded.connector.url(""), &queries).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_answers_like_prometheus_3() {
    let loaded = Loaded::start_with(promscale_e2e::prometheus::Version::V3).await;
    let queries: Vec<&str> = QUERIES.iter().chain(PROMETHEUS_3_QUERIES).copied().collect();
    let annotated = loaded.assert_same_answers(&loaded.connector.url(""), &queries).await;
    // Prometheus 3 warns and informs about some: those answers' warnings and infos were
    // compared too, positions included.
    assert!(
        annotated >= 40,
        "only {annotated} answers of Prometheus 3 had warnings or infos"
    );
}
