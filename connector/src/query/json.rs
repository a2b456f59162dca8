//! Prometheus' JSON shapes for query results and errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use promscale_promql::{format_value, Labels, QueryError, Value};
use serde_json::{json, Map};

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

pub fn query_data(value: &Value) -> serde_json::Value {
    match value {
        Value::Scalar { t, v } => json!({"resultType": "scalar", "result": [format_time(*t), format_value(*v)]}),
        Value::String { t, s } => json!({"resultType": "string", "result": [format_time(*t), s]}),
        Value::Vector(vector) => json!({
            "resultType": "vector",
            "result": vector.iter().map(|s| json!({
                "metric": labels_object(&s.labels),
                "value": [format_time(s.t), format_value(s.v)],
            })).collect::<Vec<_>>(),
        }),
        Value::Matrix(matrix) => json!({
            "resultType": "matrix",
            "result": matrix.iter().map(|s| json!({
                "metric": labels_object(&s.labels),
                "values": s.samples.iter().map(|p| json!([format_time(p.t), format_value(p.v)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
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
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_time(1_435_781_451_781).to_string(), "1435781451.781");
        assert_eq!(format_time(1_435_781_451_000).to_string(), "1435781451");
    }
}
