//! Property tests of everything that decodes bytes from outside: the remote-write body, the
//! remote-read request, the sample block codec of head rows and series chunks, and the XOR
//! chunks of streamed remote-read answers.
//!
//! Each property runs a few thousand cases (a few seconds in a debug build) with a fresh
//! random seed, so `make test` keeps fuzzing a little every time it runs. A failure prints
//! the shrunk input; keep it as a plain `#[test]` in the regression section at the end.

use std::collections::BTreeMap;

use bytes::Bytes;
use promql_parser::label::Matcher;
use promscale_connector::prompb::histogram::{Count, ZeroCount};
use promscale_connector::prompb::v2;
use promscale_connector::prompb::{
    BucketSpan, Exemplar, Histogram, Label, LabelMatcher, MetricMetadata, Query, ReadRequest, ResponseType, Sample,
    TimeSeries, WriteRequest,
};
use promscale_connector::remote_read::xor_chunk;
use promscale_connector::remote_write::decode::{decode_snappy, decode_v2_snappy};
use promscale_connector::storage::codec::{self, BlockEncoder};
use promscale_connector::storage::samples::{head_rows, SampleBatch};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use prost::Message;

/// The decompressed size limit bodies are decoded with (the connector's default
/// `--web.max-request-bytes` is larger; this keeps allocations small).
const LIMIT: usize = 1 << 20;

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
        max_shrink_time: 20_000,
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Floats of every kind: any bit pattern (NaN payloads included), the special values and the
/// exact decimals that the block codec stores as integers.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        1 => prop_oneof![
            Just(f64::NAN),
            Just(f64::from_bits(0x7ff0_0000_0000_0002)), // Prometheus' stale marker
            Just(f64::from_bits(0xfff8_0000_0000_0001)),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(-0.0),
            Just(f64::MIN_POSITIVE),
            Just(-5e-324),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(9_007_199_254_740_992.0),
            Just(0.1 + 0.2),
        ],
        4 => (-2_000_000i64..2_000_000, 0usize..6).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
        1 => (any::<i64>(), 0usize..16).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
    ]
}

/// Unix milliseconds at the edges of what the remote-write decoder accepts (PostgreSQL's
/// timestamptz range), and anything else.
fn any_timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => any::<i64>(),
        3 => 1_600_000_000_000i64..1_800_000_000_000,
        1 => prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            Just(-210_866_803_200_000), // 4714-11-24 BC, PostgreSQL's first day
            Just(-210_866_803_200_001),
            Just(i64::MAX / 1000),
            Just(i64::MAX / 1000 + 1),
            Just(i64::MIN / 1000),
        ],
        1 => -210_866_803_200_000i64..=i64::MAX / 1000,
    ]
}

/// Label names and values as bytes: valid names, empty, arbitrary bytes (invalid UTF-8),
/// text with NUL and non-ASCII characters, and long strings (up to about 10 kB).
fn any_label_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,10}".prop_map(String::into_bytes),
        2 => Just(b"__name__".to_vec()),
        1 => Just(Vec::new()),
        1 => vec(any::<u8>(), 0..16),
        2 => "[\\x00a-z:\\-. \u{e9}\u{2028}\u{fffd}\u{1F600}]{0,12}".prop_map(String::into_bytes),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => (1usize..2_500, "[a\\x00\u{e9}\u{1F600}]").prop_map(|(n, c)| c.repeat(n).into_bytes()),
    ]
}

/// Metric names: valid, empty, and a few invalid ones.
fn any_metric_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => any_label_bytes(),
    ]
}

fn label(name: Vec<u8>, value: Vec<u8>) -> Label {
    Label {
        name: Bytes::from(name),
        value: Bytes::from(value),
    }
}

fn samples(max: usize) -> impl Strategy<Value = Vec<Sample>> {
    vec(
        (any_timestamp(), any_f64()).prop_map(|(timestamp, value)| Sample { value, timestamp }),
        0..max,
    )
}

/// An exemplar of any shape: labels valid or not, any value and time.
fn any_exemplar() -> impl Strategy<Value = Exemplar> {
    (
        vec((any_label_bytes(), any_label_bytes()), 0..3),
        any_f64(),
        any_timestamp(),
    )
        .prop_map(|(pairs, value, timestamp)| Exemplar {
            labels: pairs.into_iter().map(|(n, v)| label(n, v)).collect(),
            value,
            timestamp,
        })
}

/// A native histogram of any shape: integer or float, valid or not (any schema, spans that
/// do not match the buckets, negative counts, custom bounds out of order).
fn any_histogram() -> impl Strategy<Value = Histogram> {
    let spans = || {
        vec(
            (-3i32..4, 0u32..4).prop_map(|(offset, length)| BucketSpan { offset, length }),
            0..3,
        )
    };
    (
        any::<bool>(),
        (any::<u64>(), any_f64(), any_f64(), any::<u64>()),
        (-6i32..10).prop_map(|s| if s == -6 { -53 } else { s }),
        (spans(), spans()),
        (vec(-3i64..5, 0..6), vec(-3i64..5, 0..6)),
        (vec(any_f64(), 0..6), vec(any_f64(), 0..6)),
        vec(any_f64(), 0..4),
        any_timestamp(),
    )
        .prop_map(
            |(float, (count, fcount, sum, zero), schema, (ps, ns), (pd, nd), (pc, nc), custom_values, timestamp)| {
                Histogram {
                    count: Some(if float {
                        Count::Float(fcount)
                    } else {
                        Count::Int(count % 8)
                    }),
                    sum,
                    schema,
                    zero_count: Some(if float {
                        ZeroCount::Float(fcount)
                    } else {
                        ZeroCount::Int(zero % 3)
                    }),
                    positive_spans: ps,
                    negative_spans: ns,
                    positive_deltas: if float { vec![] } else { pd },
                    negative_deltas: if float { vec![] } else { nd },
                    positive_counts: if float { pc } else { vec![] },
                    negative_counts: if float { nc } else { vec![] },
                    custom_values,
                    timestamp,
                    ..Default::default()
                }
            },
        )
}

/// A series of any shape: labels unsorted, duplicated, invalid or missing the metric name,
/// maybe with exemplars and native histograms.
fn any_series() -> impl Strategy<Value = TimeSeries> {
    (
        proptest::option::weighted(0.8, any_metric_name()),
        vec((any_label_bytes(), any_label_bytes()), 0..5),
        any::<bool>(),
        samples(8),
        vec(any_exemplar(), 0..2),
        prop_oneof![6 => Just(vec![]), 1 => vec(any_histogram(), 1..3)],
    )
        .prop_map(|(name, pairs, sort, samples, exemplars, histograms)| {
            let mut labels: Vec<Label> = pairs.into_iter().map(|(n, v)| label(n, v)).collect();
            if let Some(name) = name {
                labels.push(label(b"__name__".to_vec(), name));
            }
            if sort {
                labels.sort_by(|a, b| a.name.cmp(&b.name));
            }
            TimeSeries {
                labels,
                samples,
                exemplars,
                histograms,
            }
        })
}

/// A series the decoder must accept: a metric name and distinct, sorted label names as
/// Prometheus 3 accepts them (legacy ones and any non-empty UTF-8 without NUL), UTF-8 values (any characters but NUL, which PostgreSQL text cannot hold; empty
/// ones included, up to 10 kB), times PostgreSQL can hold.
fn valid_series() -> impl Strategy<Value = TimeSeries> {
    (
        prop_oneof![
            3 => "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
            1 => "[a-z.:\\-/ \"{}=\u{e9}\u{2028}\u{1F600}]{1,12}",
        ],
        proptest::collection::btree_map(
            prop_oneof![
                3 => "[a-zA-Z_][a-zA-Z0-9_]{0,10}",
                1 => "[a-z.:\\-/ \"{}=\u{e9}\u{2028}\u{1F600}]{1,12}",
            ],
            prop_oneof![
                4 => "[a-z:\\-. \u{e9}\u{2028}\u{1F600}]{0,12}",
                1 => any::<String>().prop_map(|s| s.replace('\0', "")),
                1 => (1usize..2_500, "[a\u{e9}\u{1F600}]").prop_map(|(n, c)| c.repeat(n)),
            ],
            0..5,
        ),
        vec(
            (-210_866_803_200_000i64..=i64::MAX / 1000, any_f64())
                .prop_map(|(timestamp, value)| Sample { value, timestamp }),
            1..10,
        ),
        vec(any_exemplar(), 0..2),
    )
        .prop_map(|(name, labels, samples, exemplars)| {
            let mut labels: BTreeMap<String, String> = labels;
            labels.remove("__name__");
            labels.insert("__name__".to_string(), name);
            TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(n, v)| label(n.into_bytes(), v.into_bytes()))
                    .collect(),
                samples,
                exemplars,
                histograms: vec![],
            }
        })
}

fn any_metadata() -> impl Strategy<Value = MetricMetadata> {
    (any::<i32>(), ".{0,10}", ".{0,10}", ".{0,10}").prop_map(|(r#type, metric_family_name, help, unit)| {
        MetricMetadata {
            r#type,
            metric_family_name,
            help,
            unit,
        }
    })
}

fn any_write_request() -> impl Strategy<Value = WriteRequest> {
    (
        vec(prop_oneof![1 => any_series(), 1 => valid_series()], 0..5),
        vec(any_metadata(), 0..3),
    )
        .prop_map(|(timeseries, metadata)| WriteRequest { timeseries, metadata })
}

/// Edits to apply to a valid encoding: (kind, position, byte).
fn mutations() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    vec((0u8..5, any::<usize>(), any::<u8>()), 1..6)
}

/// Flips, overwrites, inserts and removes bytes, and truncates.
fn mutate(data: &mut Vec<u8>, edits: &[(u8, usize, u8)]) {
    for &(kind, position, byte) in edits {
        if data.is_empty() {
            data.push(byte);
            continue;
        }
        let i = position % data.len();
        match kind {
            0 => data[i] ^= 1 << (byte % 8),
            1 => data[i] = byte,
            2 => data.insert(i, byte),
            3 => {
                data.remove(i);
            }
            _ => data.truncate(i),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Remote write
// ---------------------------------------------------------------------------------------

/// `WriteRequest` as it is on the wire, with each sample's value as its bits: prost (like
/// Prometheus' Go code) leaves a `double` field out when it equals 0.0, which -0.0 does, so
/// the connector's own types would send -0.0 as +0.0. The decoder must keep any bits it gets.
#[derive(Clone, PartialEq, prost::Message)]
struct WireRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<WireSeries>,
    #[prost(message, repeated, tag = "3")]
    metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<WireSample>,
    #[prost(message, repeated, tag = "3")]
    exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<Histogram>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct WireSample {
    /// A `double` on the wire: the same 8 bytes, fixed64.
    #[prost(fixed64, tag = "1")]
    value_bits: u64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// The request's protobuf encoding, every sample value's bits included.
fn encode_exactly(request: &WriteRequest) -> Vec<u8> {
    WireRequest {
        timeseries: request
            .timeseries
            .iter()
            .map(|ts| WireSeries {
                labels: ts.labels.clone(),
                samples: ts
                    .samples
                    .iter()
                    .map(|s| WireSample {
                        value_bits: s.value.to_bits(),
                        timestamp: s.timestamp,
                    })
                    .collect(),
                exemplars: ts.exemplars.clone(),
                histograms: ts.histograms.clone(),
            })
            .collect(),
        metadata: request.metadata.clone(),
    }
    .encode_to_vec()
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

/// A series' labels as the decoder hands them on: UTF-8, empty values left out, by name.
type LabelKey = Vec<(String, String)>;
/// A sample's time and the bits of its value.
type SampleBits = (i64, u64);

fn label_key(labels: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Option<LabelKey> {
    let mut key = Vec::new();
    for (name, value) in labels {
        if value.is_empty() {
            continue;
        }
        key.push((String::from_utf8(name).ok()?, String::from_utf8(value).ok()?));
    }
    key.sort();
    Some(key)
}

fn sample_bits(s: &Sample) -> SampleBits {
    (s.timestamp, s.value.to_bits())
}

/// What a decoded request may hold: every accepted series has the labels of some series of
/// the request, and each of its samples is, bit for bit, a sample of such a series. Series
/// left out (whole request refused, or bad series skipped) are not checked.
fn check_accepted(request: &WriteRequest, body: &[u8]) {
    let Ok(batch) = decode_snappy(body, LIMIT) else {
        return;
    };
    let mut sent: BTreeMap<LabelKey, Vec<SampleBits>> = BTreeMap::new();
    for ts in &request.timeseries {
        let pairs = ts.labels.iter().map(|l| (l.name.to_vec(), l.value.to_vec()));
        if let Some(key) = label_key(pairs) {
            sent.entry(key).or_default().extend(ts.samples.iter().map(sample_bits));
        }
    }
    for series in &batch.series {
        let key = label_key(
            series
                .labels
                .iter()
                .map(|l| (l.name().as_bytes().to_vec(), l.value().as_bytes().to_vec())),
        )
        .expect("accepted labels are UTF-8");
        assert!(
            series.labels.iter().all(|l| !l.value().is_empty()),
            "accepted series with an empty label value: {key:?}"
        );
        let Some(candidates) = sent.get(&key) else {
            panic!("accepted series {key:?} is not in the request");
        };
        // Exemplars come in series of their own (without samples) from Prometheus.
        assert!(
            !series.samples.is_empty() || !series.exemplars.is_empty(),
            "accepted series {key:?} with neither samples nor exemplars"
        );
        for e in &series.exemplars {
            let sent = request.timeseries.iter().flat_map(|ts| &ts.exemplars);
            assert!(
                // (prost leaves out a -0.0 value: it arrives as 0.0)
                sent.clone().any(|x| x.timestamp == e.timestamp
                    && (x.value.to_bits() == e.value.to_bits() || (x.value == 0.0 && e.value == 0.0))),
                "exemplar {e:?} of {key:?} is not one that was sent"
            );
        }
        for s in &series.samples {
            assert!(
                candidates.contains(&sample_bits(s)),
                "sample {:?} (bits {:#x}) of {key:?} is not one that was sent",
                s,
                s.value.to_bits()
            );
        }
    }
}

proptest! {
    #![proptest_config(config(4_000))]

    /// (a) Any bytes: an answer, never a panic.
    #[test]
    fn remote_write_arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..256)) {
        let _ = decode_snappy(&body, LIMIT);
    }

    /// (a) Any bytes, snappy-compressed: the protobuf decoder and validation see them whole.
    #[test]
    fn remote_write_arbitrary_protobuf_never_panics(raw in vec(any::<u8>(), 0..512)) {
        let _ = decode_snappy(&snappy(&raw), LIMIT);
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    /// (b) Well-formed protobuf with any labels, values and times: no panic, and whatever
    /// is accepted was sent.
    #[test]
    fn remote_write_structured_requests_never_panic(request in any_write_request()) {
        check_accepted(&request, &snappy(&encode_exactly(&request)));
    }

    /// (c) A valid body with a few bytes changed, inserted, removed or cut off, before or
    /// after compression.
    #[test]
    fn remote_write_mutated_bodies_never_panic(
        request in vec(valid_series(), 1..4).prop_map(|timeseries| WriteRequest { timeseries, metadata: vec![] }),
        edits in mutations(),
        compressed in any::<bool>(),
    ) {
        let mut raw = encode_exactly(&request);
        let body = if compressed {
            let mut body = snappy(&raw);
            mutate(&mut body, &edits);
            body
        } else {
            mutate(&mut raw, &edits);
            snappy(&raw)
        };
        // Samples of a mutated body may be new ones: only check that it does not panic.
        let _ = decode_snappy(&body, LIMIT);
    }

    /// (d) A request of valid series is accepted whole: every series, with every sample's
    /// time and the bits of its value unchanged.
    #[test]
    fn remote_write_valid_requests_round_trip_bit_for_bit(series in vec(valid_series(), 0..5)) {
        let request = WriteRequest { timeseries: series, metadata: vec![] };
        let batch = decode_snappy(&snappy(&encode_exactly(&request)), LIMIT).expect("a valid request is accepted");
        let mut expected: Vec<(LabelKey, Vec<SampleBits>)> = request
            .timeseries
            .iter()
            .map(|ts| {
                let pairs = ts.labels.iter().map(|l| (l.name.to_vec(), l.value.to_vec()));
                (label_key(pairs).unwrap(), ts.samples.iter().map(sample_bits).collect())
            })
            .collect();
        let mut got: Vec<(LabelKey, Vec<SampleBits>)> = batch
            .series
            .iter()
            .map(|s| {
                let pairs = s.labels.iter().map(|l| (l.name().as_bytes().to_vec(), l.value().as_bytes().to_vec()));
                (label_key(pairs).unwrap(), s.samples.iter().map(sample_bits).collect())
            })
            .collect();
        expected.sort();
        got.sort();
        prop_assert_eq!(got, expected);
    }
}

/// A remote-write 1.0 request as 2.0 sends it: one symbols table (the empty string first,
/// the rest in `order`, a permutation seed), labels as references into it.
fn to_v2(request: &WriteRequest, shuffle: u64) -> v2::Request {
    let mut strings: Vec<Bytes> = request
        .timeseries
        .iter()
        .flat_map(|ts| ts.labels.iter().chain(ts.exemplars.iter().flat_map(|e| &e.labels)))
        .flat_map(|l| [l.name.clone(), l.value.clone()])
        .filter(|s| !s.is_empty())
        .collect();
    strings.sort();
    strings.dedup();
    // Any order of symbols is valid: rotate them by the seed.
    if !strings.is_empty() {
        let by = (shuffle as usize) % strings.len();
        strings.rotate_left(by);
    }
    let mut symbols = vec![Bytes::new()];
    symbols.extend(strings);
    let position = |s: &Bytes| symbols.iter().position(|x| x == s).unwrap() as u32;
    v2::Request {
        timeseries: request
            .timeseries
            .iter()
            .map(|ts| v2::TimeSeries {
                labels_refs: ts
                    .labels
                    .iter()
                    .flat_map(|l| [position(&l.name), position(&l.value)])
                    .collect(),
                samples: ts
                    .samples
                    .iter()
                    .map(|s| v2::Sample {
                        value: s.value,
                        timestamp: s.timestamp,
                        start_timestamp: s.timestamp.wrapping_sub(1),
                    })
                    .collect(),
                histograms: ts.histograms.clone(),
                exemplars: ts
                    .exemplars
                    .iter()
                    .map(|e| v2::Exemplar {
                        labels_refs: e
                            .labels
                            .iter()
                            .flat_map(|l| [position(&l.name), position(&l.value)])
                            .collect(),
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        symbols: symbols.clone(),
    }
}

/// What a decoded batch holds, comparable across protocols: label sets with sample bits,
/// exemplars and histograms, the refusal reasons, the exemplars dropped.
type Outcome = (
    Vec<(LabelKey, Vec<SampleBits>, Vec<(String, SampleBits)>, Vec<Vec<u8>>)>,
    Vec<&'static str>,
    usize,
);

fn outcome(body: &[u8], v2: bool) -> Option<Outcome> {
    let batch = if v2 {
        decode_v2_snappy(body, LIMIT)
    } else {
        decode_snappy(body, LIMIT)
    }
    .ok()?;
    let mut series: Vec<_> = batch
        .series
        .iter()
        .map(|s| {
            let pairs = s
                .labels
                .iter()
                .map(|l| (l.name().as_bytes().to_vec(), l.value().as_bytes().to_vec()));
            let exemplars = s
                .exemplars
                .iter()
                .map(|e| (e.labels.clone(), (e.timestamp, e.value.to_bits())))
                .collect();
            (
                label_key(pairs).unwrap(),
                s.samples.iter().map(sample_bits).collect(),
                exemplars,
                s.histograms.iter().map(Message::encode_to_vec).collect(),
            )
        })
        .collect();
    series.sort();
    let mut reasons: Vec<&'static str> = batch.refused.first.iter().map(|e| e.reason()).collect();
    reasons.sort();
    Some((series, reasons, batch.exemplars_dropped))
}

proptest! {
    #![proptest_config(config(4_000))]

    /// (e) Remote write 2.0, any bytes: an answer, never a panic.
    #[test]
    fn remote_write_2_arbitrary_bytes_never_panic(raw in vec(any::<u8>(), 0..512), compress in any::<bool>()) {
        let body = if compress { snappy(&raw) } else { raw };
        let _ = decode_v2_snappy(&body, LIMIT);
    }

    /// (f) Remote write 2.0 carries what 1.0 carries: the same series, good or bad, sent
    /// either way, give the same stored series, sample bits and refusals, whatever the order
    /// of the symbols (and of a series' labels, which 2.0 sorts on receipt).
    #[test]
    fn remote_write_2_stores_what_1_0_stores(
        series in vec(prop_oneof![1 => any_series(), 2 => valid_series()], 0..5),
        shuffle in any::<u64>(),
    ) {
        let mut request = WriteRequest { timeseries: series, metadata: vec![] };
        // 2.0 does not allow samples and histograms in one series (1.0 does).
        for ts in &mut request.timeseries {
            if !ts.samples.is_empty() {
                ts.histograms.clear();
            }
        }
        // 2.0 labels are sorted on receipt, as Prometheus does; 1.0 requires them sorted.
        let mut sorted = request.clone();
        for ts in &mut sorted.timeseries {
            ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let v1 = outcome(&snappy(&encode_exactly(&sorted)), false);
        let v2 = outcome(&to_v2(&request, shuffle).to_snappy(), true);
        // proto3 encoders (prost's here, Go's in Prometheus) leave out a value equal to 0,
        // -0.0 included: it arrives as 0.0 whichever the protocol.
        let zero = |(t, b): SampleBits| (t, if b == (-0.0f64).to_bits() { 0 } else { b });
        let unsigned_zero = |o: Option<Outcome>| {
            o.map(|(series, reasons, dropped)| {
                let series = series
                    .into_iter()
                    .map(|(k, bits, exemplars, histograms)| {
                        (
                            k,
                            bits.into_iter().map(zero).collect::<Vec<_>>(),
                            exemplars.into_iter().map(|(l, b)| (l, zero(b))).collect::<Vec<_>>(),
                            histograms,
                        )
                    })
                    .collect::<Vec<_>>();
                (series, reasons, dropped)
            })
        };
        prop_assert_eq!(unsigned_zero(v2), unsigned_zero(v1));
    }
}

// ---------------------------------------------------------------------------------------
// Remote read
// ---------------------------------------------------------------------------------------

/// The handler's own decoding, `None` for what it refuses.
fn decode_read_request(body: &[u8]) -> Option<ReadRequest> {
    promscale_connector::remote_read::handler::decode_request(body, LIMIT).ok()
}

/// The handler's own matcher conversion, one matcher at a time.
fn convert_matcher(m: &LabelMatcher) -> Result<Matcher, String> {
    promscale_connector::remote_read::handler::to_matchers(std::slice::from_ref(m)).map(|mut v| v.remove(0))
}

fn any_matcher_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9_]{0,8}",
        3 => "[a-z.*+?|()\\[\\]{}^$\\\\0-9,]{0,16}",
        1 => any::<String>(),
        1 => Just("(?i)".to_string()),
        1 => Just("a{100}{10}".to_string()),
        1 => Just("\\".to_string()),
        1 => Just("(?P<x>".to_string()),
    ]
}

fn any_read_request() -> impl Strategy<Value = ReadRequest> {
    let matcher = (-1i32..5, "[a-zA-Z_]{0,6}|.{0,6}", any_matcher_value())
        .prop_map(|(r#type, name, value)| LabelMatcher { r#type, name, value });
    let query = (any_timestamp(), any_timestamp(), vec(matcher, 0..4)).prop_map(
        |(start_timestamp_ms, end_timestamp_ms, matchers)| Query {
            start_timestamp_ms,
            end_timestamp_ms,
            matchers,
        },
    );
    (
        vec(query, 0..4),
        vec(
            prop_oneof![
                Just(ResponseType::Samples as i32),
                Just(ResponseType::StreamedXorChunks as i32),
                any::<i32>()
            ],
            0..3,
        ),
    )
        .prop_map(|(queries, accepted_response_types)| ReadRequest {
            queries,
            accepted_response_types,
        })
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn remote_read_arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..256), compress in any::<bool>()) {
        let body = if compress { snappy(&body) } else { body };
        if let Some(request) = decode_read_request(&body) {
            for q in &request.queries {
                for m in &q.matchers {
                    let _ = convert_matcher(m);
                }
            }
        }
    }

    /// A request survives encoding, compression and decoding unchanged, and every matcher
    /// converts (or is refused) without a panic; converted matchers answer for any value.
    #[test]
    fn remote_read_requests_round_trip_and_matchers_convert(
        request in any_read_request(),
        edits in proptest::option::of(mutations()),
        probe in ".{0,8}",
    ) {
        let mut body = snappy(&request.encode_to_vec());
        if let Some(edits) = &edits {
            mutate(&mut body, edits);
        }
        let decoded = decode_read_request(&body);
        if edits.is_none() {
            prop_assert_eq!(decoded.as_ref(), Some(&request));
        }
        for q in decoded.iter().flat_map(|r| &r.queries) {
            for m in &q.matchers {
                if let Ok(matcher) = convert_matcher(m) {
                    let _ = matcher.is_match(&probe);
                    let _ = matcher.is_match("");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sample blocks (storage::codec)
// ---------------------------------------------------------------------------------------

/// Strictly ascending times. The codec's times are PostgreSQL timestamps, so the spans here
/// stay within what [`codec::MAX_ABS_TIME_MS`] allows.
fn ascending_times(max_len: usize) -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        // scrape-like: a start, then steps with jitter, repeated steps, and jumps
        (
            -codec::MAX_ABS_TIME_MS / 2..codec::MAX_ABS_TIME_MS / 2,
            vec(
                prop_oneof![4 => Just(15_000i64), 2 => 14_990i64..15_010, 1 => 1i64..3, 1 => 1i64..1i64 << 40],
                0..max_len
            ),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                let mut times = vec![t];
                for s in steps {
                    t += s;
                    times.push(t);
                }
                times
            }),
        // anything in the allowed range, sorted
        vec(-codec::MAX_ABS_TIME_MS..=codec::MAX_ABS_TIME_MS, 1..max_len).prop_map(|mut times| {
            times.sort_unstable();
            times.dedup();
            times
        }),
        // the extremes of the range
        Just(vec![-codec::MAX_ABS_TIME_MS, codec::MAX_ABS_TIME_MS]),
        Just(vec![
            -codec::MAX_ABS_TIME_MS,
            -codec::MAX_ABS_TIME_MS + 1,
            codec::MAX_ABS_TIME_MS
        ]),
        Just(vec![
            -codec::MAX_ABS_TIME_MS,
            codec::MAX_ABS_TIME_MS - 1,
            codec::MAX_ABS_TIME_MS
        ]),
    ]
}

/// Values in runs: mostly from a small pool (repeats, exact decimals, specials), counters,
/// gauges in steps of 4096 with resets, stale markers and jumps anywhere within ±2^53 (what
/// bit packing and its patches must get right), or any.
fn block_values(n: usize) -> impl Strategy<Value = Vec<f64>> {
    const EXACT: i64 = (1 << 53) - 1;
    prop_oneof![
        vec(any_f64(), n),
        vec(
            prop_oneof![
                6 => (-100i64..100).prop_map(|p| p * 4096),
                1 => Just(i64::MAX),
                1 => Just(i64::MIN),
                1 => -EXACT..=EXACT,
            ],
            n
        )
        .prop_map(|steps| {
            let mut m: i64 = 0;
            steps
                .iter()
                .map(|&s| match s {
                    i64::MIN => f64::from_bits(0x7ff0_0000_0000_0002),
                    i64::MAX => {
                        m = 0;
                        0.0
                    }
                    s if s.abs() >= 1 << 20 => {
                        m = s;
                        m as f64
                    }
                    s => {
                        m = (m + s).clamp(-EXACT, EXACT);
                        m as f64
                    }
                })
                .collect()
        }),
        (vec(any_f64(), 1..4), vec(0usize..4, n))
            .prop_map(|(pool, picks)| picks.iter().map(|&i| pool[i % pool.len()]).collect()),
        (-1_000_000i64..1_000_000, 0usize..4, vec(0i64..50, n)).prop_map(|(start, k, steps)| {
            let mut m = start;
            steps
                .iter()
                .map(|s| {
                    m += s;
                    m as f64 / 10f64.powi(k as i32)
                })
                .collect()
        }),
    ]
}

fn run(max_len: usize) -> impl Strategy<Value = (Vec<i64>, Vec<f64>)> {
    ascending_times(max_len).prop_flat_map(|times| {
        let n = times.len();
        (Just(times), block_values(n))
    })
}

/// Runs of a block: ascending series ids, each with its times and values.
fn block_runs() -> impl Strategy<Value = Vec<(i64, Vec<i64>, Vec<f64>)>> {
    (
        0i64..1 << 50,
        vec((prop_oneof![Just(0i64), 1i64..4, 1i64..1 << 40], run(40)), 1..6),
    )
        .prop_map(|(first, runs)| {
            let mut id = first;
            runs.into_iter()
                .map(|(step, (times, values))| {
                    id += step;
                    (id, times, values)
                })
                .collect()
        })
}

fn encode_runs(runs: &[(i64, Vec<i64>, Vec<f64>)], base: i64, raw: bool) -> codec::Block {
    let mut encoder = BlockEncoder::new(base, raw);
    for (id, times, values) in runs {
        encoder.push_run(*id, times, values);
    }
    encoder.finish()
}

fn decoded_bits(decoded: &[codec::DecodedSample]) -> Vec<(i64, i64, u64)> {
    decoded.iter().map(|&(s, t, v)| (s, t, v.to_bits())).collect()
}

proptest! {
    #![proptest_config(config(3_000))]

    /// Runs of any ids, times and values come back bit for bit, whatever the base time and
    /// with compression on or off.
    #[test]
    fn block_round_trips_bit_for_bit(
        runs in block_runs(),
        base in prop_oneof![Just(None), (-codec::MAX_ABS_TIME_MS..=codec::MAX_ABS_TIME_MS).prop_map(Some)],
        raw in any::<bool>(),
    ) {
        let base = base.unwrap_or_else(|| runs.iter().map(|r| r.1[0]).min().unwrap());
        let block = encode_runs(&runs, base, raw);
        let expected: Vec<(i64, i64, u64)> = runs
            .iter()
            .flat_map(|(id, t, v)| t.iter().zip(v).map(move |(&t, &v)| (*id, t, v.to_bits())))
            .collect();
        let decoded = codec::decode(&block.data, &block.exceptions).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded_bits(&decoded), expected.clone());
        // decode_into appends after what the buffer holds
        let mut buffer = vec![(-1, -1, 0.5)];
        codec::decode_into(&block.data, &block.exceptions, &mut buffer).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded_bits(&buffer[1..]), expected.clone());
        if raw {
            prop_assert_eq!(block.exceptions.len(), decoded.len());
        }
        // Decoding some series only gives exactly theirs, whatever the exceptions of the
        // skipped runs.
        for parity in [0, 1] {
            let mut selected = Vec::new();
            codec::decode_selected_into(&block.data, &block.exceptions, |s| s.rem_euclid(2) == parity, &mut selected)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want: Vec<(i64, i64, u64)> = expected.iter().copied().filter(|s| s.0.rem_euclid(2) == parity).collect();
            prop_assert_eq!(decoded_bits(&selected), want);
        }
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    /// A single series chunk, as compaction writes them.
    #[test]
    fn series_chunk_round_trips_bit_for_bit((times, values) in run(200), raw in any::<bool>()) {
        let block = codec::encode_series(&times, &values, raw);
        let decoded = codec::decode(&block.data, &block.exceptions).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected: Vec<(i64, i64, u64)> = times.iter().zip(&values).map(|(&t, &v)| (0, t, v.to_bits())).collect();
        prop_assert_eq!(decoded_bits(&decoded), expected);
    }

    /// Head rows of a write batch: one block per metric, holding each (series, time) once
    /// (the first sample sent wins), bit for bit.
    #[test]
    fn head_rows_hold_every_sample_of_a_batch(
        samples in vec(
            (
                prop_oneof![(0i64..3, 0i64..4).prop_map(|(m, s)| (m << 40) | s), 0i64..1 << 50],
                prop_oneof![1_700_000_000_000i64..1_700_000_100_000, -210_866_803_200_000i64..=i64::MAX / 1000],
                any_f64(),
            ),
            1..60,
        ),
    ) {
        let mut batch = SampleBatch::default();
        let mut expected: BTreeMap<(i64, i64), u64> = BTreeMap::new();
        for &(series, t, v) in &samples {
            batch.push(series, t, v);
            expected.entry((series, t)).or_insert(v.to_bits());
        }
        let mut got: BTreeMap<(i64, i64), u64> = BTreeMap::new();
        let mut total = 0;
        for row in head_rows(&batch) {
            let decoded = codec::decode(&row.block.data, &row.block.exceptions).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded.len(), row.samples as usize);
            for (series, t, v) in decoded {
                prop_assert_eq!(series >> 40, i64::from(row.metric_id));
                prop_assert!(row.min_time <= t && t <= row.max_time);
                got.insert((series, t), v.to_bits());
                total += 1;
            }
        }
        prop_assert_eq!(total, expected.len());
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    #![proptest_config(config(5_000))]

    /// Any bytes and exceptions: a block or an error, never a panic.
    #[test]
    fn block_decoder_never_panics_on_arbitrary_bytes(
        data in vec(any::<u8>(), 0..64),
        exceptions in vec(any_f64(), 0..6),
    ) {
        let _ = codec::decode(&data, &exceptions);
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    /// A valid block with bytes changed or cut, or exceptions missing or added.
    #[test]
    fn block_decoder_never_panics_on_mutated_blocks(
        runs in block_runs(),
        raw in any::<bool>(),
        edits in mutations(),
        exceptions_kept in any::<prop::sample::Index>(),
        extra_exceptions in vec(any_f64(), 0..3),
    ) {
        let base = runs.iter().map(|r| r.1[0]).min().unwrap();
        let mut block = encode_runs(&runs, base, raw);
        mutate(&mut block.data, &edits);
        let kept = exceptions_kept.index(block.exceptions.len() + 1);
        block.exceptions.truncate(kept);
        block.exceptions.extend(extra_exceptions);
        let _ = codec::decode(&block.data, &block.exceptions);
    }
}

// ---------------------------------------------------------------------------------------
// XOR chunks (remote read's STREAMED_XOR_CHUNKS)
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1_000))]

    /// Up to 120 samples of any times in order and any values come back bit for bit.
    #[test]
    fn xor_chunk_round_trips_bit_for_bit(
        samples in prop_oneof![
            (any::<i64>(), vec((prop_oneof![Just(15_000i64), 14_000i64..16_000, 0i64..1 << 21, any::<i64>()], any_f64()), 0..120))
                .prop_map(|(start, steps)| {
                    let mut t = start;
                    steps.into_iter().map(|(s, v)| { t = t.wrapping_add(s); (t, v) }).collect::<Vec<_>>()
                }),
            vec((any::<i64>(), any_f64()), 0..=120).prop_map(|mut s| { s.sort_by_key(|x| x.0); s }),
        ],
    ) {
        let decoded = xor_chunk::decode(&xor_chunk::encode(&samples)).ok_or_else(|| TestCaseError::fail("not decodable"))?;
        let expected: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        let got: Vec<(i64, u64)> = decoded.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn xor_chunk_decoder_never_panics(
        chunk in prop_oneof![
            vec(any::<u8>(), 0..64),
            (vec((any_timestamp(), any_f64()), 1..30), mutations()).prop_map(|(mut s, edits)| {
                s.sort_by_key(|x| x.0);
                let mut chunk = xor_chunk::encode(&s);
                mutate(&mut chunk, &edits);
                chunk
            }),
        ],
    ) {
        let _ = xor_chunk::decode(&chunk);
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: inputs the properties above once failed on
// ---------------------------------------------------------------------------------------

/// The XOR decoder's additions overflowed on times more than i64::MAX apart (a debug-build
/// panic; garbage in release).
#[test]
fn xor_chunk_times_far_apart_round_trip() {
    for samples in [
        vec![(i64::MIN, 1.0), (i64::MAX, 2.0)],
        vec![(i64::MIN, 1.0), (0, 2.0), (i64::MAX, 3.0)],
        vec![(1_192_848_760_936_866_483, 0.0), (i64::MIN, 0.0)],
    ] {
        let decoded = xor_chunk::decode(&xor_chunk::encode(&samples)).expect("decodable");
        assert_eq!(decoded, samples);
    }
}

/// A value window of 31 leading zeros and 64 significant bits made the XOR decoder's
/// trailing-zero count underflow: two samples (t=0, value 0), then delta 0 and a changed value
/// with a new window, leading 0b11111, significant 0b000000 (read as 64).
#[test]
fn xor_chunk_value_window_wider_than_64_bits_is_malformed() {
    let chunk = [
        0,
        2,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0b1111_1110,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    assert_eq!(xor_chunk::decode(&chunk), None);
}

/// -0.0 on the wire comes out as -0.0 (prost, and Prometheus' Go encoder, leave a -0.0 value
/// out as the proto3 default, so it usually arrives as +0.0; when sent, its sign is kept).
#[test]
fn remote_write_negative_zero_keeps_its_sign() {
    let request = WriteRequest {
        timeseries: vec![TimeSeries::from_pairs(&[("__name__", "a")], &[(0, -0.0)])],
        metadata: vec![],
    };
    let batch = decode_snappy(&snappy(&encode_exactly(&request)), LIMIT).unwrap();
    assert_eq!(batch.series[0].samples[0].value.to_bits(), (-0.0f64).to_bits());
}
