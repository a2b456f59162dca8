//! `POST /read` and `/api/v1/read`: remote read with either response type Prometheus asks
//! for, SAMPLES (one snappy-compressed message) or STREAMED_XOR_CHUNKS (a stream of framed
//! messages of XOR chunks, and of histogram chunks for native histograms). A database failure is a 503 whose text says only that (see
//! [`DATABASE_UNAVAILABLE`]); its details are logged.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes as WireBytes;
use promql_parser::label::{MatchOp, Matcher};
use promscale_promql::{Labels, SelectHints};
use prost::Message;

use super::histogram_chunk;
use super::xor_chunk::{self, MAX_SAMPLES_PER_CHUNK};
use crate::prompb::decoded_size::{decoded_size, READ_REQUEST};
use crate::prompb::{
    Chunk, ChunkedReadResponse, ChunkedSeries, LabelMatcher, MatchType, QueryResult, ReadRequest, ReadResponse,
    ReadSeries, ResponseType, CHUNK_ENCODING_XOR,
};
use crate::prompb::{Label, Sample};
use crate::remote_write::decode::memory_budget;
use crate::server::{AppState, DATABASE_UNAVAILABLE};
use crate::storage::select::{PgSeriesSource, SeriesWithHistograms};

/// Frames of a streamed response stay under about this size, as Prometheus' own do.
const MAX_FRAME_BYTES: usize = 1 << 20;

fn error(status: StatusCode, message: String) -> Response {
    tracing::warn!(%status, error = %message, "remote-read request failed");
    (status, message + "\n").into_response()
}

pub async fn read(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match decode_request(&body, app.max_request_bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut queries = Vec::with_capacity(request.queries.len());
    for q in &request.queries {
        match to_matchers(&q.matchers) {
            Ok(m) => queries.push((m, q.start_timestamp_ms, q.end_timestamp_ms)),
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    }
    let source = PgSeriesSource::new(app.pool.clone());
    let mut results = Vec::with_capacity(queries.len());
    // One budget for the whole response, whichever type: reading stops once it is spent.
    let mut budget = app.max_read_samples;
    for (matchers, start, end) in &queries {
        match source
            .select_with_histograms(
                matchers,
                &SelectHints {
                    start: *start,
                    end: *end,
                    max_samples: Some(budget),
                    windows: None,
                },
            )
            .await
        {
            Ok(series) => {
                let read: usize = series.iter().map(|s| s.series.samples.len() + s.histograms.len()).sum();
                budget = budget.saturating_sub(read);
                results.push(series);
            }
            Err(promscale_promql::QueryError::TooManySamples(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "exceeded sample limit ({}): ask for a shorter time range or fewer series, or raise --web.max-read-samples",
                        app.max_read_samples
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "remote-read request failed: the database is unavailable");
                return (StatusCode::SERVICE_UNAVAILABLE, format!("{DATABASE_UNAVAILABLE}\n")).into_response();
            }
        }
    }
    // The client lists the types it accepts, best first; none listed means SAMPLES.
    let chosen = if request.accepted_response_types.is_empty() {
        Some(ResponseType::Samples)
    } else {
        request
            .accepted_response_types
            .iter()
            .find_map(|&t| ResponseType::try_from(t).ok())
    };
    let Some(chosen) = chosen else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "none of the accepted response types {:?} is supported (SAMPLES, STREAMED_XOR_CHUNKS)",
                request.accepted_response_types
            ),
        );
    };
    if chosen == ResponseType::StreamedXorChunks {
        streamed_response(results)
    } else {
        samples_response(results)
    }
}

/// A request body: snappy (within `max_decompressed` bytes), then protobuf.
pub fn decode_request(body: &[u8], max_decompressed: usize) -> Result<ReadRequest, String> {
    let size = snap::raw::decompress_len(body)
        .map_err(|e| format!("the body is not snappy-compressed (block format): {e}"))?;
    if size > max_decompressed {
        return Err(format!(
            "decompressed body is {size} bytes, above the limit of {max_decompressed} bytes (raise --web.max-request-bytes)"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("the body is not snappy-compressed (block format): {e}"))?;
    let cost = decoded_size(&raw, &READ_REQUEST)
        .ok_or("the body holds protobuf groups (wire types 3 and 4), which no remote-read message has")?;
    let limit = memory_budget(max_decompressed);
    if cost > limit {
        return Err(format!(
            "the request would take {cost} bytes of memory to decode, above the limit of {limit} bytes (four times --web.max-request-bytes): it holds too many small entries"
        ));
    }
    ReadRequest::decode(raw.as_slice()).map_err(|e| format!("the body is not a remote-read request: {e}"))
}

/// The wire matchers as PromQL matchers; regular expressions compiled as PromQL does.
pub fn to_matchers(wire: &[LabelMatcher]) -> Result<Vec<Matcher>, String> {
    wire.iter()
        .map(|m| {
            let op = match MatchType::try_from(m.r#type) {
                Ok(MatchType::Eq) => MatchOp::Equal,
                Ok(MatchType::Neq) => MatchOp::NotEqual,
                Ok(t @ (MatchType::Re | MatchType::Nre)) => {
                    let re = Matcher::new_matcher(
                        promql_parser::parser::token::T_EQL_REGEX,
                        m.name.clone(),
                        m.value.clone(),
                    )
                    .map_err(|e| format!("invalid regular expression {:?}: {e}", m.value))?;
                    let MatchOp::Re(regex) = re.op else {
                        unreachable!("a regex matcher")
                    };
                    if t == MatchType::Re {
                        MatchOp::Re(regex)
                    } else {
                        MatchOp::NotRe(regex)
                    }
                }
                Err(_) => return Err(format!("unknown matcher type {}", m.r#type)),
            };
            Ok(Matcher {
                op,
                name: m.name.clone(),
                value: m.value.clone(),
            })
        })
        .collect()
}

fn wire_labels(labels: &Labels) -> Vec<Label> {
    labels
        .iter()
        .map(|(k, v)| Label {
            name: WireBytes::copy_from_slice(k.as_bytes()),
            value: WireBytes::copy_from_slice(v.as_bytes()),
        })
        .collect()
}

fn samples_response(results: Vec<Vec<SeriesWithHistograms>>) -> Response {
    let response = ReadResponse {
        results: results
            .into_iter()
            .map(|series| QueryResult {
                timeseries: series
                    .into_iter()
                    .map(|s| ReadSeries {
                        labels: wire_labels(&s.series.labels),
                        samples: s
                            .series
                            .samples
                            .iter()
                            .map(|p| Sample {
                                value: p.v,
                                timestamp: p.t,
                            })
                            .collect(),
                        histograms: s.histograms,
                    })
                    .collect(),
            })
            .collect(),
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&response.encode_to_vec())
        .expect("snappy can compress any input");
    (
        [
            (header::CONTENT_TYPE, "application/x-protobuf"),
            (header::CONTENT_ENCODING, "snappy"),
        ],
        body,
    )
        .into_response()
}

/// A series' samples cut into XOR chunks of at most 120 samples, and its native histograms
/// into histogram chunks, in time order.
fn chunked(series: &SeriesWithHistograms) -> ChunkedSeries {
    let mut chunks: Vec<Chunk> = series
        .series
        .samples
        .chunks(MAX_SAMPLES_PER_CHUNK)
        .map(|part| {
            let pairs: Vec<(i64, f64)> = part.iter().map(|s| (s.t, s.v)).collect();
            Chunk {
                min_time_ms: part[0].t,
                max_time_ms: part[part.len() - 1].t,
                r#type: CHUNK_ENCODING_XOR,
                data: xor_chunk::encode(&pairs),
            }
        })
        .collect();
    let floats_only = chunks.len();
    chunks.extend(
        histogram_chunk::encode_series(&series.histograms)
            .into_iter()
            .map(|c| Chunk {
                min_time_ms: c.min_time,
                max_time_ms: c.max_time,
                r#type: c.encoding,
                data: c.data,
            }),
    );
    if floats_only > 0 && chunks.len() > floats_only {
        chunks.sort_by_key(|c| (c.min_time_ms, c.max_time_ms));
    }
    ChunkedSeries {
        labels: wire_labels(&series.series.labels),
        chunks,
    }
}

/// One frame: the message's length as a varint, its CRC-32C (big-endian), the message.
fn frame(message: &ChunkedReadResponse, out: &mut Vec<u8>) {
    let bytes = message.encode_to_vec();
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    out.extend_from_slice(&bytes);
}

/// One frame a series, as Prometheus writes them (its reader takes the first series of each
/// frame only); a series whose chunks pass [`MAX_FRAME_BYTES`] with its labels continues in
/// the next frames.
fn streamed_response(results: Vec<Vec<SeriesWithHistograms>>) -> Response {
    let mut body = Vec::new();
    for (index, series) in results.into_iter().enumerate() {
        for s in &series {
            let ChunkedSeries { labels, chunks } = chunked(s);
            let room = MAX_FRAME_BYTES.saturating_sub(labels.iter().map(|l| l.encoded_len() + 2).sum());
            let mut pending: Vec<Chunk> = Vec::new();
            let mut pending_bytes = 0;
            let count = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                pending_bytes += chunk.encoded_len() + 4;
                pending.push(chunk);
                if pending_bytes >= room || i + 1 == count {
                    let message = ChunkedReadResponse {
                        chunked_series: vec![ChunkedSeries {
                            labels: labels.clone(),
                            chunks: std::mem::take(&mut pending),
                        }],
                        query_index: index as i64,
                    };
                    frame(&message, &mut body);
                    pending_bytes = 0;
                }
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
        )],
        Body::from(body),
    )
        .into_response()
}
