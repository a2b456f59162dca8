//! `POST /read` and `/api/v1/read`: remote read with either response type Prometheus asks
//! for, SAMPLES (one snappy-compressed message) or STREAMED_XOR_CHUNKS (a stream of framed
//! messages of XOR chunks, and of histogram chunks for native histograms). A database failure is a 503 whose text says only that (see
//! [`DATABASE_UNAVAILABLE`]); its details are logged.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
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
use crate::tenancy::TenantIdentity;

fn error(status: StatusCode, message: String) -> Response {
    tracing::warn!(%status, error = %message, "remote-read request failed");
    (status, message + "\n").into_response()
}

pub async fn read(
    State(app): State<Arc<AppState>>,
    identity: Option<Extension<TenantIdentity>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scope = match crate::tenancy::read_scope(app.tenancy.as_ref(), &headers, identity.as_deref()) {
        Ok(scope) => scope,
        Err(e) => return error(e.status(), e.to_string()),
    };
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
    let source = PgSeriesSource::scoped(app.pool.clone(), scope);
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

/// A series' samples cut into XOR chunks of at most 120 samples and its native histograms
/// into histogram chunks, in time order without overlap: Prometheus' reader plays a series'
/// chunks one after the other, so a series that has both (a native histogram series that went
/// stale gets float stale markers) is cut where the kind changes; of a float and a histogram
/// at the same millisecond the float is kept, as Prometheus' reader keeps it.
fn chunked(series: &SeriesWithHistograms) -> ChunkedSeries {
    let samples = &series.series.samples;
    let histograms = &series.histograms;
    let mut chunks: Vec<Chunk> = Vec::new();
    let xor = |part: &[promscale_promql::Sample], chunks: &mut Vec<Chunk>| {
        for part in part.chunks(MAX_SAMPLES_PER_CHUNK) {
            let pairs: Vec<(i64, f64)> = part.iter().map(|s| (s.t, s.v)).collect();
            chunks.push(Chunk {
                min_time_ms: part[0].t,
                max_time_ms: part[part.len() - 1].t,
                r#type: CHUNK_ENCODING_XOR,
                data: xor_chunk::encode(&pairs),
            });
        }
    };
    let (mut f, mut h) = (0, 0);
    while f < samples.len() || h < histograms.len() {
        // The next run of one kind: floats up to the next histogram, or histograms up to the
        // next float.
        if h == histograms.len() || (f < samples.len() && samples[f].t <= histograms[h].timestamp) {
            let until = histograms.get(h).map_or(i64::MAX, |x| x.timestamp);
            let end = f + samples[f..].partition_point(|s| s.t <= until);
            xor(&samples[f..end], &mut chunks);
            f = end;
            // A histogram at the time of the last float is left out.
            while h < histograms.len() && f > 0 && histograms[h].timestamp == samples[f - 1].t {
                h += 1;
            }
        } else {
            let until = samples.get(f).map_or(i64::MAX, |s| s.t);
            let end = h + histograms[h..].partition_point(|x| x.timestamp < until);
            chunks.extend(
                histogram_chunk::encode_series(&histograms[h..end])
                    .into_iter()
                    .map(|c| Chunk {
                        min_time_ms: c.min_time,
                        max_time_ms: c.max_time,
                        r#type: c.encoding,
                        data: c.data,
                    }),
            );
            h = end;
        }
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

/// One frame a series, whole: Prometheus' reader takes the first series of each frame only,
/// and reads a series continued in a second frame as another series of the same labels.
/// (Prometheus' own server splits a series past `--storage.remote.read-max-bytes-in-frame`;
/// its reader accepts frames up to its `chunked_read_limit`, 50 MB by default. A response is
/// bounded by `--web.max-read-samples`, 5 million samples by default: about 10 MB of floats,
/// but a single series of millions of native histograms can pass the reader's limit, which
/// it then reports as an error.)
fn streamed_response(results: Vec<Vec<SeriesWithHistograms>>) -> Response {
    let mut body = Vec::new();
    for (index, series) in results.into_iter().enumerate() {
        for s in &series {
            let message = ChunkedReadResponse {
                chunked_series: vec![chunked(s)],
                query_index: index as i64,
            };
            frame(&message, &mut body);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::histogram::{Count, ZeroCount};
    use crate::prompb::{BucketSpan, Histogram};
    use promscale_promql::{Sample, Series};

    fn histogram(t: i64) -> Histogram {
        Histogram {
            count: Some(Count::Int(2)),
            zero_count: Some(ZeroCount::Int(0)),
            sum: 1.0,
            positive_spans: vec![BucketSpan { offset: 0, length: 1 }],
            positive_deltas: vec![2],
            reset_hint: 2,
            timestamp: t,
            ..Default::default()
        }
    }

    #[test]
    fn a_series_of_floats_and_histograms_is_chunked_in_time_order_without_overlap() {
        let series = SeriesWithHistograms {
            series: Series {
                start_times: Vec::new(),
                labels: Labels::default(),
                samples: [1, 2, 3, 7, 9].iter().map(|&t| Sample { t, v: 0.0 }).collect(),
                histograms: vec![],
            },
            // The one at 3 shares its millisecond with a float: the float is kept.
            histograms: [3, 4, 5, 6, 8].iter().map(|&t| histogram(t)).collect(),
        };
        let chunks: Vec<(i32, i64, i64)> = chunked(&series)
            .chunks
            .iter()
            .map(|c| (c.r#type, c.min_time_ms, c.max_time_ms))
            .collect();
        let h = histogram_chunk::CHUNK_ENCODING_HISTOGRAM;
        assert_eq!(
            chunks,
            vec![
                (CHUNK_ENCODING_XOR, 1, 3),
                (h, 4, 6),
                (CHUNK_ENCODING_XOR, 7, 7),
                (h, 8, 8),
                (CHUNK_ENCODING_XOR, 9, 9)
            ]
        );
        // Histograms only, floats only.
        let only = |samples: Vec<Sample>, histograms: Vec<Histogram>| {
            chunked(&SeriesWithHistograms {
                series: Series {
                    start_times: Vec::new(),
                    labels: Labels::default(),
                    samples,
                    histograms: vec![],
                },
                histograms,
            })
            .chunks
            .len()
        };
        assert_eq!(only(vec![], (0..130).map(histogram).collect()), 2);
        assert_eq!(only((0..130).map(|t| Sample { t, v: 1.0 }).collect(), vec![]), 2);
    }
}
