//! Prometheus' JSON shapes for query results and errors.
//!
//! Query results, which can hold millions of points, are written straight to the response
//! body ([`query_response`]) rather than built as a `serde_json::Value` first. A database
//! failure's own text is logged, never sent: clients get [`DATABASE_UNAVAILABLE`].

use std::io::Write;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use promscale_promql::histogram::{api_buckets, FloatHistogram};
use promscale_promql::{Annotations, Labels, QueryError, Value};
use serde_json::{json, Map};

use crate::server::DATABASE_UNAVAILABLE;

/// The most warnings, and the most infos, an answer lists (Prometheus' API: 10 each, then a
/// line saying how many more there were).
const MAX_ANNOTATIONS: usize = 10;

/// Milliseconds as Unix seconds, a JSON number with up to three decimals.
pub fn format_time(ms: i64) -> serde_json::Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

pub fn labels_object(labels: &Labels) -> serde_json::Value {
    let mut map = Map::new();
    for (k, v) in labels.iter() {
        map.insert(k.to_string(), json!(v));
    }
    serde_json::Value::Object(map)
}

/// A native histogram as Prometheus 3's API writes it: count, sum, and its buckets with a
/// count (boundary rule, lower and upper bound, count), numbers as strings.
#[cfg(test)]
fn histogram_object(h: &FloatHistogram) -> serde_json::Value {
    let mut object = Map::new();
    object.insert("count".into(), json!(format_sample_value(h.count)));
    object.insert("sum".into(), json!(format_sample_value(h.sum)));
    let buckets = api_buckets(h);
    if !buckets.is_empty() {
        let buckets: Vec<serde_json::Value> = buckets
            .into_iter()
            .map(|(rule, lower, upper, count)| {
                json!([
                    rule,
                    format_sample_value(lower),
                    format_sample_value(upper),
                    format_sample_value(count)
                ])
            })
            .collect();
        object.insert("buckets".into(), json!(buckets));
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
pub fn query_data(value: &Value) -> serde_json::Value {
    match value {
        Value::Scalar { t, v } => {
            json!({"resultType": "scalar", "result": [format_time(*t), promscale_promql::format_value(*v)]})
        }
        Value::String { t, s } => json!({"resultType": "string", "result": [format_time(*t), s]}),
        Value::Vector(vector) => json!({
            "resultType": "vector",
            "result": vector.iter().map(|s| match &s.h {
                None => json!({
                    "metric": labels_object(&s.labels),
                    "value": [format_time(s.t), format_sample_value(s.v)],
                }),
                Some(h) => json!({
                    "metric": labels_object(&s.labels),
                    "histogram": [format_time(s.t), histogram_object(h)],
                }),
            }).collect::<Vec<_>>(),
        }),
        Value::Matrix(matrix) => json!({
            "resultType": "matrix",
            "result": matrix.iter().map(|s| {
                let mut series = Map::new();
                series.insert("metric".into(), labels_object(&s.labels));
                if !s.samples.is_empty() || s.histograms.is_empty() {
                    series.insert("values".into(), s.samples.iter().map(|p| json!([format_time(p.t), format_sample_value(p.v)])).collect());
                }
                if !s.histograms.is_empty() {
                    series.insert("histograms".into(), s.histograms.iter().map(|p| json!([format_time(p.t), histogram_object(&p.h)])).collect());
                }
                serde_json::Value::Object(series)
            }).collect::<Vec<_>>(),
        }),
    }
}

/// A successful query's response: `{"status":"success","data":{"resultType":...,"result":...}}`,
/// the same JSON as [`success`] of [`query_data`] would give.
pub fn query_response(value: &Value, annotations: &Annotations) -> Response {
    let mut body = Vec::with_capacity(64 + estimated_size(value));
    write_query_response(&mut body, value, annotations).expect("writing to memory");
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn estimated_size(value: &Value) -> usize {
    match value {
        Value::Scalar { .. } | Value::String { .. } => 64,
        Value::Vector(v) => v.len() * 128,
        Value::Matrix(m) => m.iter().map(|s| 128 + s.samples.len() * 24).sum(),
    }
}

/// Prometheus' query response: the result, then the evaluation's `warnings` and `infos`
/// when there are any.
fn write_query_response(out: &mut Vec<u8>, value: &Value, annotations: &Annotations) -> std::io::Result<()> {
    out.extend_from_slice(br#"{"status":"success","data":{"resultType":""#);
    out.extend_from_slice(value.type_name().as_bytes());
    out.extend_from_slice(br#"","result":"#);
    match value {
        Value::Scalar { t, v } => {
            out.push(b'[');
            write_time(out, *t)?;
            out.push(b',');
            serde_json::to_writer(&mut *out, &promscale_promql::format_value(*v))?;
            out.push(b']');
        }
        Value::String { t, s } => {
            out.push(b'[');
            write_time(out, *t)?;
            out.push(b',');
            serde_json::to_writer(&mut *out, s)?;
            out.push(b']');
        }
        Value::Vector(vector) => {
            out.push(b'[');
            for (i, s) in vector.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"metric":"#);
                write_labels(out, &s.labels)?;
                match &s.h {
                    None => {
                        out.extend_from_slice(br#","value":"#);
                        write_point(out, s.t, s.v)?;
                    }
                    Some(h) => {
                        out.extend_from_slice(br#","histogram":"#);
                        write_histogram_point(out, s.t, h)?;
                    }
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        Value::Matrix(matrix) => {
            out.push(b'[');
            for (i, s) in matrix.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"metric":"#);
                write_labels(out, &s.labels)?;
                // As Prometheus: "values" when the series has floats, "histograms" when it
                // has native histograms.
                if !s.samples.is_empty() || s.histograms.is_empty() {
                    out.extend_from_slice(br#","values":["#);
                    for (j, p) in s.samples.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        write_point(out, p.t, p.v)?;
                    }
                    out.push(b']');
                }
                if !s.histograms.is_empty() {
                    out.extend_from_slice(br#","histograms":["#);
                    for (j, p) in s.histograms.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        write_histogram_point(out, p.t, &p.h)?;
                    }
                    out.push(b']');
                }
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.push(b'}');
    // As Prometheus' API: each with where its expression starts in the query, at most 10 of
    // each kind.
    let (warnings, infos) = annotations.as_strings(MAX_ANNOTATIONS, MAX_ANNOTATIONS);
    for (key, messages) in [("warnings", &warnings), ("infos", &infos)] {
        if !messages.is_empty() {
            write!(out, ",\"{key}\":")?;
            serde_json::to_writer(&mut *out, messages)?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_labels(out: &mut Vec<u8>, labels: &Labels) -> std::io::Result<()> {
    out.push(b'{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, v)?;
    }
    out.push(b'}');
    Ok(())
}

/// `[time, "value"]`, as [`format_time`] and [`promscale_promql::format_value`] write them.
fn write_point(out: &mut Vec<u8>, t: i64, v: f64) -> std::io::Result<()> {
    out.push(b'[');
    write_time(out, t)?;
    out.push(b',');
    write_number(out, v)?;
    out.push(b']');
    Ok(())
}

/// A sample's value as Prometheus' API writes it (`jsonutil.MarshalFloat`): as
/// [`promscale_promql::format_value`] does, except that magnitudes below 1e-6 or from 1e21 up
/// take an exponent of at least two digits (`1e-07`, `1.5e+21`), as Go's `'e'` format, with the
/// same shortest digits.
/// Scalars are written without exponent, as Prometheus writes them.
pub fn format_sample_value(v: f64) -> String {
    if takes_exponent(v) {
        // ryu's shortest digits, as Go's (see promscale_promql::write_decimal); it writes these
        // magnitudes with an exponent.
        let mut buffer = ryu::Buffer::new();
        let text = buffer.format_finite(v);
        let (mantissa, exponent) = text
            .split_once('e')
            .expect("ryu writes an exponent from 1e16 up and below 1e-5");
        let exponent: i32 = exponent.parse().expect("an integer exponent");
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs());
    }
    promscale_promql::format_value(v)
}

/// Whether Prometheus writes a sample's value with an exponent: a finite magnitude below 1e-6
/// or from 1e21 up, as `jsonutil.MarshalFloat` decides.
fn takes_exponent(v: f64) -> bool {
    let abs = v.abs();
    abs != 0.0 && v.is_finite() && !(1e-6..1e21).contains(&abs)
}

/// A sample's value as a JSON string ([`format_sample_value`]).
fn write_number(out: &mut Vec<u8>, v: f64) -> std::io::Result<()> {
    out.push(b'"');
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if takes_exponent(v) {
        out.extend_from_slice(format_sample_value(v).as_bytes());
    } else {
        promscale_promql::write_decimal(out, v);
    }
    out.push(b'"');
    Ok(())
}

/// `[time, {"count":..,"sum":..,"buckets":[[rule,"lower","upper","count"],..]}]`, as
/// Prometheus 3 writes a native histogram sample.
fn write_histogram_point(out: &mut Vec<u8>, t: i64, h: &FloatHistogram) -> std::io::Result<()> {
    out.push(b'[');
    write_time(out, t)?;
    out.extend_from_slice(br#",{"count":"#);
    write_number(out, h.count)?;
    out.extend_from_slice(br#","sum":"#);
    write_number(out, h.sum)?;
    let buckets = api_buckets(h);
    if !buckets.is_empty() {
        out.extend_from_slice(br#","buckets":["#);
        for (i, (rule, lower, upper, count)) in buckets.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write!(out, "[{rule},")?;
            write_number(out, lower)?;
            out.push(b',');
            write_number(out, upper)?;
            out.push(b',');
            write_number(out, count)?;
            out.push(b']');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}]");
    Ok(())
}

fn write_time(out: &mut Vec<u8>, ms: i64) -> std::io::Result<()> {
    if ms % 1000 == 0 {
        out.extend_from_slice(itoa::Buffer::new().format(ms / 1000).as_bytes());
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, &(ms as f64 / 1000.0)).map_err(std::io::Error::other)
    }
}

pub fn success(data: serde_json::Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// [`success`] with `warnings` after the data when there are any, as Prometheus answers a
/// truncated listing.
pub fn success_warned(data: serde_json::Value, warnings: &[&str]) -> Response {
    if warnings.is_empty() {
        return success(data);
    }
    axum::Json(json!({"status": "success", "data": data, "warnings": warnings})).into_response()
}

/// An API error: Prometheus' error type and HTTP status.
pub struct ApiError {
    pub kind: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            kind: "bad_data",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        if let QueryError::Storage(detail) = &e {
            // The database's message can name users, hosts, tables: for the log only.
            tracing::warn!(error = %detail, "query failed: the database is unavailable");
            return ApiError {
                kind: "unavailable",
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: DATABASE_UNAVAILABLE.to_string(),
            };
        }
        let (kind, status) = match &e {
            QueryError::BadData(_) => ("bad_data", StatusCode::BAD_REQUEST),
            QueryError::Execution(_) | QueryError::TooManySamples(_) => ("execution", StatusCode::UNPROCESSABLE_ENTITY),
            QueryError::Timeout(_) => ("timeout", StatusCode::SERVICE_UNAVAILABLE),
            QueryError::Storage(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        };
        ApiError {
            kind,
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_an_exponent_read_back_exactly() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut checked = 0;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f64::from_bits(state);
            if !takes_exponent(v) {
                continue;
            }
            let text = format_sample_value(v);
            let (mantissa, exponent) = text.split_once('e').unwrap();
            assert!(
                exponent.len() >= 3 && (exponent.starts_with('+') || exponent.starts_with('-')),
                "{text}"
            );
            assert!(!mantissa.ends_with(".0"), "{text}");
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{text}");
            checked += 1;
        }
        assert!(checked > 90_000, "{checked}");
    }

    #[test]
    fn times_are_seconds_with_up_to_three_decimals() {
        let mut out = Vec::new();
        for ms in [-1_000, 0, 1_700_000_000_000, 1_700_000_000_123] {
            write_time(&mut out, ms).unwrap();
            out.push(b' ');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "-1 0 1700000000 1700000000.123 ");
    }

    #[test]
    fn warnings_and_infos_follow_the_data_only_when_there_are_some() {
        let value = Value::Scalar { t: 1_000, v: 1.0 };
        let mut body = Vec::new();
        write_query_response(&mut body, &value, &Annotations::default()).unwrap();
        let plain: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(plain.get("warnings"), None);
        assert_eq!(plain.get("infos"), None);

        let mut annotations = Annotations::default();
        annotations.warn("PromQL warning: w".into());
        annotations.info_at("PromQL info: \"i\"".into(), None);
        let mut body = Vec::new();
        write_query_response(&mut body, &value, &annotations).unwrap();
        let annotated: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(annotated["data"], plain["data"]);
        assert_eq!(annotated["warnings"], json!(["PromQL warning: w"]));
        assert_eq!(annotated["infos"], json!(["PromQL info: \"i\""]));
    }

    #[test]
    fn at_most_ten_warnings_are_listed_then_how_many_more() {
        let mut annotations = Annotations::default();
        for i in 0..12 {
            annotations.warn(format!("PromQL warning: w{i:02}"));
        }
        let mut body = Vec::new();
        write_query_response(&mut body, &Value::Scalar { t: 0, v: 1.0 }, &annotations).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let warnings = answer["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 11, "{warnings:?}");
        assert_eq!(warnings[9], "PromQL warning: w09");
        assert_eq!(warnings[10], "2 more warning annotations omitted");
    }

    #[test]
    fn values_and_times_as_prometheus_writes_them() {
        assert_eq!(promscale_promql::format_value(1.0), "1");
        assert_eq!(promscale_promql::format_value(0.1), "0.1");
        assert_eq!(promscale_promql::format_value(1e21), "1000000000000000000000");
        assert_eq!(promscale_promql::format_value(f64::NEG_INFINITY), "-Inf");
        // Sample values (not scalars) take an exponent at the extremes, as Go's 'e' format.
        assert_eq!(format_sample_value(1e21), "1e+21");
        assert_eq!(format_sample_value(-1.5e300), "-1.5e+300");
        assert_eq!(format_sample_value(1e-7), "1e-07");
        assert_eq!(format_sample_value(3.25e-7), "3.25e-07");
        assert_eq!(format_sample_value(1e-6), "0.000001");
        assert_eq!(format_sample_value(5e-324), "5e-324");
        assert_eq!(format_sample_value(0.0), "0");
        assert_eq!(format_sample_value(123.5), "123.5");
        assert_eq!(format_time(1_435_781_451_781).to_string(), "1435781451.781");
        assert_eq!(format_time(1_435_781_451_000).to_string(), "1435781451");
    }

    #[test]
    fn database_errors_are_not_sent_to_clients() {
        let e = ApiError::from(QueryError::Storage(
            "password authentication failed for user \"promscale\" (SQLSTATE 28P01)".into(),
        ));
        assert_eq!((e.kind, e.status), ("unavailable", StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(e.message, DATABASE_UNAVAILABLE);
    }

    #[test]
    fn written_responses_are_the_json_of_query_data() {
        use promscale_promql::histogram::Span;
        use promscale_promql::{HistogramSample, InstantSample, Sample, Series};
        use std::sync::Arc;
        let histogram = Arc::new(FloatHistogram {
            schema: 0,
            count: 7.0,
            sum: -1.5,
            zero_threshold: 0.001,
            zero_count: 1.0,
            positive_spans: vec![Span { offset: 0, length: 2 }],
            positive_buckets: vec![2.0, 0.0],
            negative_spans: vec![Span { offset: -1, length: 1 }],
            negative_buckets: vec![4.0],
            ..Default::default()
        });
        let labels = Labels::from_pairs(&[("__name__", "up"), ("quote", "a\"b\\c\n\u{1}é")]);
        let values = [
            Value::Scalar { t: 1_500, v: f64::NAN },
            Value::String {
                t: -2_000,
                s: "x\"y".into(),
            },
            Value::Vector(vec![]),
            Value::Vector(vec![
                InstantSample::float(labels.clone(), 1_435_781_451_781, 0.1),
                InstantSample::float(Labels::default(), 0, f64::NEG_INFINITY),
                InstantSample {
                    labels: Labels::from_pairs(&[("h", "1")]),
                    t: 5,
                    v: 0.0,
                    h: Some(histogram.clone()),
                },
            ]),
            Value::Matrix(vec![]),
            Value::Matrix(vec![
                Series {
                    start_times: Vec::new(),
                    labels,
                    histograms: vec![],
                    samples: vec![
                        Sample { t: 1, v: 1e21 },
                        Sample { t: -1_001, v: -0.0 },
                        Sample {
                            t: 5_000,
                            v: f64::INFINITY,
                        },
                    ],
                },
                Series::floats(Labels::default(), vec![Sample { t: 2_000, v: 3.25e-7 }]),
                Series {
                    start_times: Vec::new(),
                    labels: Labels::from_pairs(&[("h", "1")]),
                    samples: vec![],
                    histograms: vec![HistogramSample {
                        t: 7_500,
                        h: histogram.clone(),
                    }],
                },
                Series {
                    start_times: Vec::new(),
                    labels: Labels::from_pairs(&[("h", "2")]),
                    samples: vec![Sample { t: 1_000, v: 2.0 }],
                    histograms: vec![HistogramSample {
                        t: 2_000,
                        h: Arc::new(FloatHistogram::default()),
                    }],
                },
            ]),
        ];
        for value in values {
            let mut body = Vec::new();
            write_query_response(&mut body, &value, &Annotations::default()).unwrap();
            let written: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let want = json!({"status": "success", "data": query_data(&value)});
            assert_eq!(written, want, "{}", String::from_utf8_lossy(&body));
        }
    }
}
