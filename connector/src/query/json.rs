//! Prometheus' JSON shapes for query results and errors.
//!
//! Query results, which can hold millions of points, are written straight to the response
//! body ([`query_response`]) rather than built as a `serde_json::Value` first. A database
//! failure's own text is logged, never sent: clients get [`DATABASE_UNAVAILABLE`].

use std::io::Write;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use promscale_promql::{Labels, QueryError, Value};
use serde_json::{json, Map};

use crate::server::DATABASE_UNAVAILABLE;

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

#[cfg(test)]
pub fn query_data(value: &Value) -> serde_json::Value {
    match value {
        Value::Scalar { t, v } => {
            json!({"resultType": "scalar", "result": [format_time(*t), promscale_promql::format_value(*v)]})
        }
        Value::String { t, s } => json!({"resultType": "string", "result": [format_time(*t), s]}),
        Value::Vector(vector) => json!({
            "resultType": "vector",
            "result": vector.iter().map(|s| json!({
                "metric": labels_object(&s.labels),
                "value": [format_time(s.t), promscale_promql::format_value(s.v)],
            })).collect::<Vec<_>>(),
        }),
        Value::Matrix(matrix) => json!({
            "resultType": "matrix",
            "result": matrix.iter().map(|s| json!({
                "metric": labels_object(&s.labels),
                "values": s.samples.iter().map(|p| json!([format_time(p.t), promscale_promql::format_value(p.v)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
    }
}

/// A successful query's response: `{"status":"success","data":{"resultType":...,"result":...}}`,
/// the same JSON as [`success`] of [`query_data`] would give.
pub fn query_response(value: &Value) -> Response {
    let mut body = Vec::with_capacity(64 + estimated_size(value));
    write_query_response(&mut body, value).expect("writing to memory");
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

fn write_query_response(out: &mut Vec<u8>, value: &Value) -> std::io::Result<()> {
    out.extend_from_slice(br#"{"status":"success","data":{"resultType":""#);
    out.extend_from_slice(value.type_name().as_bytes());
    out.extend_from_slice(br#"","result":"#);
    match value {
        Value::Scalar { t, v } => write_point(out, *t, *v)?,
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
                out.extend_from_slice(br#","value":"#);
                write_point(out, s.t, s.v)?;
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
                out.extend_from_slice(br#","values":["#);
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_point(out, p.t, p.v)?;
                }
                out.extend_from_slice(b"]}");
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b"}}");
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
    out.extend_from_slice(b",\"");
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        // format_value's spelling, without its allocation.
        write!(out, "{v}")?;
    }
    out.extend_from_slice(b"\"]");
    Ok(())
}

fn write_time(out: &mut Vec<u8>, ms: i64) -> std::io::Result<()> {
    if ms % 1000 == 0 {
        write!(out, "{}", ms / 1000)
    } else {
        serde_json::to_writer(&mut *out, &(ms as f64 / 1000.0)).map_err(std::io::Error::other)
    }
}

pub fn success(data: serde_json::Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
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
    fn values_and_times_as_prometheus_writes_them() {
        assert_eq!(promscale_promql::format_value(1.0), "1");
        assert_eq!(promscale_promql::format_value(0.1), "0.1");
        assert_eq!(promscale_promql::format_value(1e21), "1000000000000000000000");
        assert_eq!(promscale_promql::format_value(f64::NEG_INFINITY), "-Inf");
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
        use promscale_promql::{InstantSample, Sample, Series};
        let labels = Labels::from_pairs(&[("__name__", "up"), ("quote", "a\"b\\c\n\u{1}é")]);
        let values = [
            Value::Scalar { t: 1_500, v: f64::NAN },
            Value::String {
                t: -2_000,
                s: "x\"y".into(),
            },
            Value::Vector(vec![]),
            Value::Vector(vec![
                InstantSample {
                    labels: labels.clone(),
                    t: 1_435_781_451_781,
                    v: 0.1,
                },
                InstantSample {
                    labels: Labels::default(),
                    t: 0,
                    v: f64::NEG_INFINITY,
                },
            ]),
            Value::Matrix(vec![]),
            Value::Matrix(vec![
                Series {
                    labels,
                    samples: vec![
                        Sample { t: 1, v: 1e21 },
                        Sample { t: -1_001, v: -0.0 },
                        Sample {
                            t: 5_000,
                            v: f64::INFINITY,
                        },
                    ],
                },
                Series {
                    labels: Labels::default(),
                    samples: vec![Sample { t: 2_000, v: 3.25e-7 }],
                },
            ]),
        ];
        for value in values {
            let mut body = Vec::new();
            write_query_response(&mut body, &value).unwrap();
            let written: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let want = json!({"status": "success", "data": query_data(&value)});
            assert_eq!(written, want, "{}", String::from_utf8_lossy(&body));
        }
    }
}
