//! How much memory a request takes once decoded, read off its protobuf bytes before decoding.
//!
//! Protobuf lets a two-byte entry stand for a whole message: `0a 00` is an empty series,
//! which prost decodes into a struct of four vectors (96 bytes), and an empty label into two
//! `Bytes` (64). A body of empty entries within `--web.max-request-bytes` (64 MiB) would
//! decode into gigabytes. So the decoders first walk the wire bytes (no allocation, one
//! pass) adding up what each entry will cost: the in-memory size of every message of a
//! repeated field, of every element of a repeated scalar (packed or not) and the length of
//! every copied string, and, for remote write 2.0's label references, the labels they resolve
//! into. A request whose sum passes the budget the caller sets is refused before anything is
//! allocated, and so is one holding a protobuf group (which prost would skip unwalked). Real
//! remote-write 1.0 requests cost one to four times their protobuf size; 2.0's, whose
//! references are a byte or two each, up to about twenty times.
//!
//! prost has no hook for this (its `DecodeContext` bounds only recursion depth), hence the
//! walk here; it knows only the fields that allocate, everything else is skipped as prost
//! skips unknown fields. Malformed bytes end the walk: prost then reports them.

use std::mem::size_of;

use bytes::Bytes;

use super::{v2, BucketSpan, Exemplar, Histogram, Label, LabelMatcher, MetricMetadata, Query, Sample, TimeSeries};

/// The fields of a message that allocate when decoded.
pub struct Schema {
    fields: &'static [(u32, Field)],
}

#[derive(Clone, Copy)]
enum Field {
    /// A repeated or optional message: `size` bytes per entry, plus what its fields cost.
    Message { size: usize, schema: &'static Schema },
    /// A repeated varint scalar, packed or not: `size` bytes per element.
    Varints { size: usize },
    /// A repeated 8-byte scalar (`double`), packed or not.
    Fixed64,
    /// A repeated `bytes` field kept as slices of the body: one `Bytes` per entry.
    SharedBytes,
    /// A `string` field, copied out of the body.
    Text,
}

impl Schema {
    fn field(&self, number: u32) -> Option<Field> {
        self.fields.iter().find(|(n, _)| *n == number).map(|&(_, f)| f)
    }
}

const LABEL: Schema = Schema { fields: &[] };
const SAMPLE: Schema = Schema { fields: &[] };
const EXEMPLAR: Schema = Schema {
    fields: &[(
        1,
        Field::Message {
            size: size_of::<Label>(),
            schema: &LABEL,
        },
    )],
};
const BUCKET_SPAN: Schema = Schema { fields: &[] };
const HISTOGRAM: Schema = Schema {
    fields: &[
        (
            8,
            Field::Message {
                size: size_of::<BucketSpan>(),
                schema: &BUCKET_SPAN,
            },
        ),
        (9, Field::Varints { size: size_of::<i64>() }),
        (10, Field::Fixed64),
        (
            11,
            Field::Message {
                size: size_of::<BucketSpan>(),
                schema: &BUCKET_SPAN,
            },
        ),
        (12, Field::Varints { size: size_of::<i64>() }),
        (13, Field::Fixed64),
        (16, Field::Fixed64),
    ],
};
const TIME_SERIES: Schema = Schema {
    fields: &[
        (
            1,
            Field::Message {
                size: size_of::<Label>(),
                schema: &LABEL,
            },
        ),
        (
            2,
            Field::Message {
                size: size_of::<Sample>(),
                schema: &SAMPLE,
            },
        ),
        (
            3,
            Field::Message {
                size: size_of::<Exemplar>(),
                schema: &EXEMPLAR,
            },
        ),
        (
            4,
            Field::Message {
                size: size_of::<Histogram>(),
                schema: &HISTOGRAM,
            },
        ),
    ],
};
const METRIC_METADATA: Schema = Schema {
    fields: &[(2, Field::Text), (4, Field::Text), (5, Field::Text)],
};

/// `prometheus.WriteRequest` (remote write 1.0).
pub const WRITE_REQUEST: Schema = Schema {
    fields: &[
        (
            1,
            Field::Message {
                size: size_of::<TimeSeries>(),
                schema: &TIME_SERIES,
            },
        ),
        (
            3,
            Field::Message {
                size: size_of::<MetricMetadata>(),
                schema: &METRIC_METADATA,
            },
        ),
    ],
};

const V2_SAMPLE: Schema = Schema { fields: &[] };
/// What a label reference of remote write 2.0 costs once decoded: the reference itself, and
/// half of the label it resolves into (name and value are two references).
const LABEL_REF: usize = size_of::<u32>() + size_of::<Label>() / 2;

const V2_EXEMPLAR: Schema = Schema {
    fields: &[(1, Field::Varints { size: LABEL_REF })],
};
const V2_METADATA: Schema = Schema { fields: &[] };
const V2_TIME_SERIES: Schema = Schema {
    fields: &[
        (1, Field::Varints { size: LABEL_REF }),
        (
            2,
            Field::Message {
                size: size_of::<v2::Sample>(),
                schema: &V2_SAMPLE,
            },
        ),
        (
            3,
            Field::Message {
                size: size_of::<Histogram>(),
                schema: &HISTOGRAM,
            },
        ),
        (
            4,
            Field::Message {
                size: size_of::<v2::Exemplar>(),
                schema: &V2_EXEMPLAR,
            },
        ),
        // Optional: held inline in the series; its entries cost nothing more.
        (
            5,
            Field::Message {
                size: 0,
                schema: &V2_METADATA,
            },
        ),
    ],
};

/// `io.prometheus.write.v2.Request` (remote write 2.0).
pub const WRITE_REQUEST_V2: Schema = Schema {
    fields: &[
        (4, Field::SharedBytes),
        (
            5,
            Field::Message {
                size: size_of::<v2::TimeSeries>(),
                schema: &V2_TIME_SERIES,
            },
        ),
    ],
};

const LABEL_MATCHER: Schema = Schema {
    fields: &[(2, Field::Text), (3, Field::Text)],
};
const QUERY: Schema = Schema {
    fields: &[(
        3,
        Field::Message {
            size: size_of::<LabelMatcher>(),
            schema: &LABEL_MATCHER,
        },
    )],
};

/// `prometheus.ReadRequest` (remote read).
pub const READ_REQUEST: Schema = Schema {
    fields: &[
        (
            1,
            Field::Message {
                size: size_of::<Query>(),
                schema: &QUERY,
            },
        ),
        (2, Field::Varints { size: size_of::<i32>() }),
    ],
};

/// Bytes the message in `wire` allocates once decoded (see the module comment); saturates.
/// `None` when the bytes hold a group (wire types 3 and 4, proto2's deprecated groups): no
/// remote-write or remote-read message has one, and prost skips a group whole, with
/// everything nested in it, without this walk seeing inside; such a body is refused.
pub fn decoded_size(wire: &[u8], schema: &Schema) -> Option<usize> {
    let mut total = 0usize;
    let mut buf = wire;
    while !buf.is_empty() {
        let Some((key, rest)) = varint(buf) else { break };
        buf = rest;
        let field = schema.field((key >> 3) as u32);
        let cost = match key & 7 {
            0 => {
                let Some((_, rest)) = varint(buf) else { break };
                buf = rest;
                match field {
                    Some(Field::Varints { size }) => size,
                    _ => 0,
                }
            }
            1 => {
                let Some(rest) = buf.get(8..) else { break };
                buf = rest;
                match field {
                    Some(Field::Fixed64) => 8,
                    _ => 0,
                }
            }
            5 => {
                let Some(rest) = buf.get(4..) else { break };
                buf = rest;
                0
            }
            2 => {
                let Some((len, rest)) = varint(buf) else { break };
                let Some(body) = usize::try_from(len).ok().and_then(|len| rest.get(..len)) else {
                    break;
                };
                buf = &rest[body.len()..];
                match field {
                    // The schemas are not recursive: the nesting is theirs, three levels at most.
                    Some(Field::Message { size, schema }) => size.saturating_add(decoded_size(body, schema)?),
                    // Packed: every varint ends in a byte below 0x80.
                    Some(Field::Varints { size }) => size.saturating_mul(body.iter().filter(|&&b| b < 0x80).count()),
                    Some(Field::Fixed64) => body.len(),
                    Some(Field::SharedBytes) => size_of::<Bytes>(),
                    Some(Field::Text) => body.len(),
                    _ => 0,
                }
            }
            3 | 4 => return None,
            // Unknown wire types: prost refuses them where the walk stops.
            _ => break,
        };
        total = total.saturating_add(cost);
    }
    Some(total)
}

/// A base-128 varint and what follows it.
fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::prompb::{ReadRequest, WriteRequest};

    #[test]
    fn a_body_of_empty_series_costs_a_series_struct_per_two_bytes() {
        let wire = [0x0a, 0x00].repeat(1000);
        assert_eq!(
            decoded_size(&wire, &WRITE_REQUEST),
            Some(1000 * size_of::<TimeSeries>())
        );
        let request = WriteRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 1000);
    }

    #[test]
    fn a_real_request_costs_a_few_times_its_size() {
        let series: Vec<TimeSeries> = (0..500)
            .map(|i| {
                let instance = format!("10.0.{}.{}:9100", i / 250, i % 250);
                TimeSeries::from_pairs(
                    &[
                        ("__name__", "node_cpu_seconds_total"),
                        ("cpu", "3"),
                        ("instance", &instance),
                        ("job", "node"),
                        ("mode", "idle"),
                    ],
                    &[(1_700_000_000_000 + i, 12345.67)],
                )
            })
            .collect();
        let wire = WriteRequest {
            timeseries: series,
            metadata: vec![],
        }
        .encode_to_vec();
        let cost = decoded_size(&wire, &WRITE_REQUEST).unwrap();
        let expected = 500 * (size_of::<TimeSeries>() + 5 * size_of::<Label>() + size_of::<Sample>());
        assert_eq!(cost, expected);
        assert!(cost < 4 * wire.len(), "{cost} for {} wire bytes", wire.len());
    }

    #[test]
    fn packed_and_unpacked_references_cost_the_same() {
        let series = v2::TimeSeries {
            labels_refs: vec![1, 2, 300, 4],
            ..Default::default()
        };
        let packed = v2::Request {
            symbols: vec![Bytes::new(), Bytes::from_static(b"a")],
            timeseries: vec![series],
        }
        .encode_to_vec();
        let expected = 2 * size_of::<Bytes>() + size_of::<v2::TimeSeries>() + 4 * LABEL_REF;
        assert_eq!(decoded_size(&packed, &WRITE_REQUEST_V2), Some(expected));
        // The same series with its references unpacked (field 1, wire type 0, four times).
        let mut unpacked = vec![0x22, 0x00, 0x22, 0x01, b'a', 0x2a, 0x09];
        unpacked.extend_from_slice(&[0x08, 1, 0x08, 2, 0x08, 0xac, 0x02, 0x08, 4]);
        let decoded = v2::Request::decode(unpacked.as_slice()).unwrap();
        assert_eq!(decoded.timeseries[0].labels_refs, vec![1, 2, 300, 4]);
        assert_eq!(decoded_size(&unpacked, &WRITE_REQUEST_V2), Some(expected));
    }

    #[test]
    fn matchers_cost_their_struct_and_text() {
        let wire = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1,
                matchers: vec![LabelMatcher {
                    r#type: 0,
                    name: "job".into(),
                    value: "node".into(),
                }],
            }],
            accepted_response_types: vec![0, 1],
        }
        .encode_to_vec();
        let expected = size_of::<Query>() + size_of::<LabelMatcher>() + 7 + 2 * size_of::<i32>();
        assert_eq!(decoded_size(&wire, &READ_REQUEST), Some(expected));
    }

    #[test]
    fn malformed_bytes_end_the_walk() {
        assert_eq!(decoded_size(&[0x0a, 0x05, 0x00], &WRITE_REQUEST), Some(0));
        assert_eq!(decoded_size(&[0xff; 20], &WRITE_REQUEST), Some(0));
    }

    #[test]
    fn a_group_anywhere_is_refused() {
        // An empty group of field 15 (start 0x7b, end 0x7c), then a thousand empty series:
        // prost skips the group and decodes the series.
        let mut wire = vec![0x7b, 0x7c];
        wire.extend([0x0a, 0x00].repeat(1000));
        assert_eq!(WriteRequest::decode(wire.as_slice()).unwrap().timeseries.len(), 1000);
        assert_eq!(decoded_size(&wire, &WRITE_REQUEST), None);
        // Inside a series.
        let nested = [0x0a, 0x02, 0x7b, 0x7c];
        assert_eq!(decoded_size(&nested, &WRITE_REQUEST), None);
        assert_eq!(decoded_size(&wire, &WRITE_REQUEST_V2), None);
        assert_eq!(decoded_size(&wire, &READ_REQUEST), None);
    }
}
