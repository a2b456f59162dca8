//! Where native histograms are encoded for `STREAMED_XOR_CHUNKS` remote read: Prometheus'
//! histogram chunk encodings (`tsdb/chunkenc/histogram.go` for integer histograms,
//! `float_histogram.go` for float ones, `histogram_meta.go` for the layout, `varbit.go` for
//! the variable-width integers), which a Prometheus reading remote storage decodes. Written
//! by hand, like the XOR chunks: no crate encodes them.
//!
//! A chunk is a big-endian sample count (2 bytes), a header byte whose top two bits say how
//! the chunk began (unknown, counter reset, no counter reset, gauge), then a bit stream: the
//! layout (zero threshold, schema, spans, custom bounds) and the first histogram in full,
//! then each next one as deltas of deltas (integer counts, time) or XOR with the previous
//! value (floats). Every histogram of a chunk shares its layout, so a chunk is cut where the
//! layout changes, and where a counter reset happens: Prometheus' reader gives the first
//! histogram of a chunk the hint "unknown" (unless the chunk is a gauge's) and every later one
//! "no counter reset", so a histogram sent as a reset starts a chunk, and any other one of a
//! counter (whose hint is mostly unknown, as Prometheus sends scraped ones) starts one when
//! its count, zero count or a bucket went down, as Prometheus' appender decides. After a stale marker a chunk takes only
//! stale markers, as Prometheus' appender does.

use super::xor_chunk::{write_value, BitWriter, MAX_SAMPLES_PER_CHUNK};
use crate::prompb::histogram::{Count, ZeroCount};
use crate::prompb::{BucketSpan, Histogram};
use crate::remote_write::decode::absolute_counts;

pub const CHUNK_ENCODING_HISTOGRAM: i32 = 2;
pub const CHUNK_ENCODING_FLOAT_HISTOGRAM: i32 = 3;

/// Counter reset hints as the wire carries them.
const HINT_NO: i32 = 2;
const HINT_GAUGE: i32 = 3;

/// The header's top two bits.
const HEADER_COUNTER_RESET: u8 = 0b1000_0000;
const HEADER_NOT_COUNTER_RESET: u8 = 0b0100_0000;
const HEADER_GAUGE: u8 = 0b1100_0000;

/// An encoded chunk of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramChunk {
    /// [`CHUNK_ENCODING_HISTOGRAM`] or [`CHUNK_ENCODING_FLOAT_HISTOGRAM`].
    pub encoding: i32,
    pub min_time: i64,
    pub max_time: i64,
    pub data: Vec<u8>,
}

fn is_stale(h: &Histogram) -> bool {
    h.sum.to_bits() == promscale_promql::STALE_NAN_BITS
}

fn same_layout(a: &Histogram, b: &Histogram) -> bool {
    let bits = |x: &[f64], y: &[f64]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && bits(&a.custom_values, &b.custom_values)
}

/// Absolute bucket counts: integer histograms carry deltas between neighbouring buckets.
fn absolute(deltas: &[i64], counts: &[f64]) -> Vec<f64> {
    if counts.is_empty() {
        absolute_counts(deltas)
    } else {
        counts.to_vec()
    }
}

/// Whether `h` went down from `previous` (same layout) in its count, zero count or a bucket:
/// a counter reset, as Prometheus' appender finds one for a histogram whose hint is unknown.
fn went_down(previous: &Histogram, h: &Histogram) -> bool {
    let down = |a: &[f64], b: &[f64]| a.len() != b.len() || a.iter().zip(b).any(|(x, y)| y < x);
    h.count_value() < previous.count_value()
        || h.zero_count_value() < previous.zero_count_value()
        || down(
            &absolute(&previous.positive_deltas, &previous.positive_counts),
            &absolute(&h.positive_deltas, &h.positive_counts),
        )
        || down(
            &absolute(&previous.negative_deltas, &previous.negative_counts),
            &absolute(&h.negative_deltas, &h.negative_counts),
        )
}

/// The header a chunk starting with `h` gets: a gauge's, a counter reset's when one starts
/// it (sent as one, or found), else what its hint says.
fn header(h: &Histogram, reset: bool) -> u8 {
    match h.reset_hint {
        HINT_GAUGE => HEADER_GAUGE,
        _ if reset || h.reset_hint == 1 => HEADER_COUNTER_RESET,
        HINT_NO => HEADER_NOT_COUNTER_RESET,
        _ => 0,
    }
}

/// Cuts one series' histograms (time order) into chunks and encodes them.
pub fn encode_series(histograms: &[Histogram]) -> Vec<HistogramChunk> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut reset = false;
    for i in 1..=histograms.len() {
        let mut found_reset = false;
        let cut = i == histograms.len() || {
            let (first, previous, h) = (&histograms[start], &histograms[i - 1], &histograms[i]);
            i - start >= MAX_SAMPLES_PER_CHUNK
                || h.is_float() != first.is_float()
                || (first.reset_hint == HINT_GAUGE) != (h.reset_hint == HINT_GAUGE)
                || (is_stale(previous) && !is_stale(h))
                // A stale marker fits any layout: Prometheus writes it without buckets.
                || !(is_stale(h) || same_layout(first, h))
                || match h.reset_hint {
                    HINT_GAUGE => false,
                    1 => true,
                    // Unknown or "no counter reset": a reset if something went down, as
                    // Prometheus' appender checks whatever the hint (never after a stale
                    // marker, which ends the chunk above).
                    _ => {
                        found_reset = !is_stale(h) && !is_stale(previous) && went_down(previous, h);
                        found_reset
                    }
                }
        };
        if cut {
            chunks.push(encode(&histograms[start..i], reset));
            start = i;
            reset = found_reset;
        }
    }
    chunks
}

/// Encodes histograms that share one chunk (see [`encode_series`]); `reset` when a counter
/// reset found by [`went_down`] starts it.
fn encode(histograms: &[Histogram], reset: bool) -> HistogramChunk {
    let first = &histograms[0];
    let float = first.is_float();
    let header = header(first, reset);
    let mut w = BitWriter::default();
    if float {
        FloatAppender::default().append_all(&mut w, histograms);
    } else {
        IntegerAppender::default().append_all(&mut w, histograms);
    }
    let mut data = (histograms.len() as u16).to_be_bytes().to_vec();
    data.push(header);
    data.extend_from_slice(w.bytes());
    HistogramChunk {
        encoding: if float {
            CHUNK_ENCODING_FLOAT_HISTOGRAM
        } else {
            CHUNK_ENCODING_HISTOGRAM
        },
        min_time: first.timestamp,
        max_time: histograms[histograms.len() - 1].timestamp,
        data,
    }
}

/// Whether `x` fits Prometheus' signed varbit class of `n` bits: -(2^(n-1) - 1) ..= 2^(n-1).
fn fits(x: i64, n: u32) -> bool {
    -((1i64 << (n - 1)) - 1) <= x && x <= 1i64 << (n - 1)
}

/// Prometheus' varbit classes: a prefix (of so many bits) before a value of so many bits;
/// 0 is a single 0 bit, and what fits none of them takes the prefix 0xff and 64 bits.
const VARBIT_CLASSES: [(u64, u8, u8); 7] = [
    (0b10, 2, 3),
    (0b110, 3, 6),
    (0b1110, 4, 9),
    (0b11110, 5, 12),
    (0b111110, 6, 18),
    (0b1111110, 7, 25),
    (0b11111110, 8, 56),
];

/// `x` in the first class `fits` takes (Prometheus' `putVarbitInt` and `putVarbitUint`).
fn put_varbit(w: &mut BitWriter, x: u64, fits: impl Fn(u32) -> bool) {
    if x == 0 {
        w.bit(false);
        return;
    }
    match VARBIT_CLASSES.iter().find(|(_, _, n)| fits(u32::from(*n))) {
        Some(&(prefix, prefix_bits, n)) => {
            w.bits(prefix, prefix_bits);
            w.bits(x, n);
        }
        None => {
            w.bits(0b1111_1111, 8);
            w.bits(x, 64);
        }
    }
}

/// A signed integer in 1 to 72 bits (`putVarbitInt`).
fn put_varbit_int(w: &mut BitWriter, x: i64) {
    put_varbit(w, x as u64, |n| fits(x, n));
}

/// An unsigned integer in 1 to 72 bits (`putVarbitUint`).
fn put_varbit_uint(w: &mut BitWriter, x: u64) {
    put_varbit(w, x, |n| x.leading_zeros() >= 64 - n);
}

/// The zero threshold: one byte for 0 and for powers of two from 2^-243 to 2^10 (the
/// default, 2^-128, among them), else 255 and the float (`putZeroThreshold`).
fn put_zero_threshold(w: &mut BitWriter, threshold: f64) {
    if threshold == 0.0 {
        w.byte(0);
        return;
    }
    match frexp(threshold) {
        Some((frac, exp)) if frac == 0.5 && (-242..=11).contains(&exp) => w.byte((exp + 243) as u8),
        _ => {
            w.byte(255);
            w.bits(threshold.to_bits(), 64);
        }
    }
}

/// Go's `math.Frexp` for finite values other than zero: `x = frac * 2^exp`, `0.5 <= |frac| < 1`.
fn frexp(x: f64) -> Option<(f64, i32)> {
    if !x.is_finite() || x == 0.0 {
        return None;
    }
    let (mut x, mut shift) = (x, 0);
    if x.abs() < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first.
        x *= (1u64 << 52) as f64;
        shift = -52;
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    Some((frac, exp + shift))
}

/// A custom bucket bound: multiples of 0.001 from 0 to 33554.430 as an unsigned varbit of
/// the thousandths plus one, others as a 0 bit and the float (`putCustomBound`).
fn put_custom_bound(w: &mut BitWriter, bound: f64) {
    let thousandths = bound * 1000.0;
    let whole = (bound * 1000.0).round() as u64 as f64 / 1000.0 == bound;
    if !(0.0..=33_554_430.0).contains(&thousandths) || !whole {
        w.bit(false);
        w.bits(bound.to_bits(), 64);
        return;
    }
    put_varbit_uint(w, thousandths.round() as u64 + 1);
}

fn put_spans(w: &mut BitWriter, spans: &[BucketSpan]) {
    put_varbit_uint(w, spans.len() as u64);
    for s in spans {
        put_varbit_uint(w, u64::from(s.length));
        put_varbit_int(w, i64::from(s.offset));
    }
}

/// The layout the first histogram of a chunk writes; a stale marker writes an empty one.
fn put_layout(w: &mut BitWriter, h: &Histogram) {
    if is_stale(h) {
        put_zero_threshold(w, 0.0);
        put_varbit_int(w, 0);
        put_spans(w, &[]);
        put_spans(w, &[]);
        return;
    }
    put_zero_threshold(w, h.zero_threshold);
    put_varbit_int(w, i64::from(h.schema));
    put_spans(w, &h.positive_spans);
    put_spans(w, &h.negative_spans);
    // Custom bounds only for the custom-buckets schema.
    if h.schema == -53 {
        put_varbit_uint(w, h.custom_values.len() as u64);
        for &bound in &h.custom_values {
            put_custom_bound(w, bound);
        }
    }
}

/// What the integer appender keeps between histograms.
#[derive(Default)]
struct IntegerAppender {
    t: i64,
    t_delta: i64,
    count: u64,
    count_delta: i64,
    zero_count: u64,
    zero_count_delta: i64,
    sum: u64,
    leading: u8,
    trailing: u8,
    positive: Vec<i64>,
    positive_delta: Vec<i64>,
    negative: Vec<i64>,
    negative_delta: Vec<i64>,
}

impl IntegerAppender {
    fn append_all(mut self, w: &mut BitWriter, histograms: &[Histogram]) {
        self.leading = 0xff;
        for (i, h) in histograms.iter().enumerate() {
            let stale = is_stale(h);
            // A stale marker carries its sum only.
            let (count, zero_count, positive, negative): (u64, u64, &[i64], &[i64]) = if stale {
                (0, 0, &[], &[])
            } else {
                // Integer chunks hold integer histograms: counts as sent, all 64 bits.
                let count = match h.count {
                    Some(Count::Int(c)) => c,
                    _ => h.count_value() as u64,
                };
                let zero_count = match h.zero_count {
                    Some(ZeroCount::Int(c)) => c,
                    _ => h.zero_count_value() as u64,
                };
                (count, zero_count, &h.positive_deltas, &h.negative_deltas)
            };
            let (mut t_delta, mut count_delta, mut zero_count_delta) = (0, 0, 0);
            if i == 0 {
                put_layout(w, h);
                self.positive = vec![0; positive.len()];
                self.positive_delta = vec![0; positive.len()];
                self.negative = vec![0; negative.len()];
                self.negative_delta = vec![0; negative.len()];
                put_varbit_int(w, h.timestamp);
                put_varbit_uint(w, count);
                put_varbit_uint(w, zero_count);
                w.bits(h.sum.to_bits(), 64);
                for &b in positive.iter().chain(negative) {
                    put_varbit_int(w, b);
                }
            } else {
                t_delta = h.timestamp.wrapping_sub(self.t);
                count_delta = (count as i64).wrapping_sub(self.count as i64);
                zero_count_delta = (zero_count as i64).wrapping_sub(self.zero_count as i64);
                let (count_dod, zero_count_dod) = if stale {
                    (0, 0)
                } else {
                    (
                        count_delta.wrapping_sub(self.count_delta),
                        zero_count_delta.wrapping_sub(self.zero_count_delta),
                    )
                };
                put_varbit_int(w, t_delta.wrapping_sub(self.t_delta));
                put_varbit_int(w, count_dod);
                put_varbit_int(w, zero_count_dod);
                write_value(w, h.sum.to_bits() ^ self.sum, &mut self.leading, &mut self.trailing);
                for (j, &b) in positive.iter().enumerate() {
                    let delta = b.wrapping_sub(self.positive[j]);
                    put_varbit_int(w, delta.wrapping_sub(self.positive_delta[j]));
                    self.positive_delta[j] = delta;
                }
                for (j, &b) in negative.iter().enumerate() {
                    let delta = b.wrapping_sub(self.negative[j]);
                    put_varbit_int(w, delta.wrapping_sub(self.negative_delta[j]));
                    self.negative_delta[j] = delta;
                }
            }
            self.t = h.timestamp;
            self.t_delta = t_delta;
            self.count = count;
            self.count_delta = count_delta;
            self.zero_count = zero_count;
            self.zero_count_delta = zero_count_delta;
            self.positive[..positive.len()].copy_from_slice(positive);
            self.negative[..negative.len()].copy_from_slice(negative);
            self.sum = h.sum.to_bits();
        }
    }
}

/// A float and the leading and trailing zero counts of its last XOR.
#[derive(Clone, Copy)]
struct XorValue {
    bits: u64,
    leading: u8,
    trailing: u8,
}

impl XorValue {
    fn new(v: f64) -> Self {
        XorValue {
            bits: v.to_bits(),
            leading: 0xff,
            trailing: 0,
        }
    }

    fn write(&mut self, w: &mut BitWriter, v: f64) {
        write_value(w, v.to_bits() ^ self.bits, &mut self.leading, &mut self.trailing);
        self.bits = v.to_bits();
    }
}

/// What the float appender keeps between histograms.
#[derive(Default)]
struct FloatAppender {
    t: i64,
    t_delta: i64,
    count: Option<XorValue>,
    zero_count: Option<XorValue>,
    sum: Option<XorValue>,
    positive: Vec<XorValue>,
    negative: Vec<XorValue>,
}

impl FloatAppender {
    fn append_all(mut self, w: &mut BitWriter, histograms: &[Histogram]) {
        for (i, h) in histograms.iter().enumerate() {
            let stale = is_stale(h);
            let (count, zero_count, positive, negative): (f64, f64, &[f64], &[f64]) = if stale {
                (0.0, 0.0, &[], &[])
            } else {
                (
                    h.count_value(),
                    h.zero_count_value(),
                    &h.positive_counts,
                    &h.negative_counts,
                )
            };
            let mut t_delta = 0;
            match (self.count.as_mut(), self.zero_count.as_mut(), self.sum.as_mut()) {
                (Some(c), Some(z), Some(s)) if i > 0 => {
                    t_delta = h.timestamp.wrapping_sub(self.t);
                    put_varbit_int(w, t_delta.wrapping_sub(self.t_delta));
                    c.write(w, count);
                    z.write(w, zero_count);
                    s.write(w, h.sum);
                    for (x, &b) in self.positive.iter_mut().zip(positive) {
                        x.write(w, b);
                    }
                    for (x, &b) in self.negative.iter_mut().zip(negative) {
                        x.write(w, b);
                    }
                }
                _ => {
                    put_layout(w, h);
                    put_varbit_int(w, h.timestamp);
                    for v in [count, zero_count, h.sum].iter().chain(positive).chain(negative) {
                        w.bits(v.to_bits(), 64);
                    }
                    self.count = Some(XorValue::new(count));
                    self.zero_count = Some(XorValue::new(zero_count));
                    self.sum = Some(XorValue::new(h.sum));
                    self.positive = positive.iter().map(|&b| XorValue::new(b)).collect();
                    self.negative = negative.iter().map(|&b| XorValue::new(b)).collect();
                }
            }
            self.t = h.timestamp;
            self.t_delta = t_delta;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_thresholds_take_a_byte_when_powers_of_two() {
        for (threshold, byte) in [
            (2f64.powi(-128), 116u8),
            (1.0, 244),
            (1024.0, 254),
            (2f64.powi(-243), 1),
        ] {
            let mut w = BitWriter::default();
            put_zero_threshold(&mut w, threshold);
            assert_eq!(w.bytes(), &[byte], "{threshold}");
        }
        for threshold in [0.001, 2048.0, 2f64.powi(-244), 5e-324, 3.0] {
            let mut w = BitWriter::default();
            put_zero_threshold(&mut w, threshold);
            assert_eq!(w.bytes().len(), 9, "{threshold}");
            assert_eq!(w.bytes()[0], 255);
        }
        assert_eq!(frexp(8.0), Some((0.5, 4)));
        assert_eq!(frexp(-3.0), Some((-0.75, 2)));
        assert_eq!(frexp(5e-324), Some((0.5, -1073)));
    }

    #[test]
    fn varbit_integers_take_the_classes_prometheus_gives_them() {
        let width = |x: i64| {
            let mut w = BitWriter::default();
            put_varbit_int(&mut w, x);
            w.bit_len()
        };
        assert_eq!(
            [
                0,
                1,
                -3,
                4,
                5,
                -31,
                32,
                256,
                2048,
                131_072,
                16_777_216,
                1 << 55,
                i64::MAX
            ]
            .map(width),
            [1, 5, 5, 5, 9, 9, 9, 13, 17, 24, 32, 64, 72]
        );
        let width = |x: u64| {
            let mut w = BitWriter::default();
            put_varbit_uint(&mut w, x);
            w.bit_len()
        };
        assert_eq!(
            [0, 7, 8, 63, 64, 33_554_431, u64::MAX].map(width),
            [1, 5, 9, 9, 13, 32, 72]
        );
    }

    fn histogram(t: i64, hint: i32, n: u64) -> Histogram {
        Histogram {
            count: Some(Count::Int(n * 3)),
            zero_count: Some(ZeroCount::Int(n)),
            sum: n as f64 * 1.5,
            schema: 0,
            zero_threshold: 2f64.powi(-128),
            positive_spans: vec![BucketSpan { offset: 0, length: 2 }],
            positive_deltas: vec![n as i64, 0],
            reset_hint: hint,
            timestamp: t,
            ..Default::default()
        }
    }

    #[test]
    fn chunks_are_cut_where_prometheus_could_not_read_back_the_same_histograms() {
        let stale = Histogram {
            sum: f64::from_bits(promscale_promql::STALE_NAN_BITS),
            ..histogram(0, 2, 0)
        };
        let mut hs = vec![histogram(1, 0, 1), histogram(2, 2, 2), histogram(3, 2, 3)];
        // A counter reset, a new layout, a stale marker then another, a float histogram, gauges.
        hs.push(histogram(4, 1, 1));
        hs.push(Histogram {
            schema: 1,
            ..histogram(5, 2, 2)
        });
        hs.push(Histogram {
            timestamp: 6,
            ..stale.clone()
        });
        hs.push(Histogram { timestamp: 7, ..stale });
        hs.push(histogram(8, 2, 4));
        hs.push(Histogram {
            count: Some(Count::Float(2.5)),
            zero_count: Some(ZeroCount::Float(0.0)),
            positive_deltas: vec![],
            positive_counts: vec![1.5, 1.0],
            ..histogram(9, 2, 0)
        });
        hs.push(histogram(10, 3, 1));
        hs.push(histogram(11, 3, 2));
        let chunks = encode_series(&hs);
        let cut: Vec<(i32, i64, i64, u16, u8)> = chunks
            .iter()
            .map(|c| {
                (
                    c.encoding,
                    c.min_time,
                    c.max_time,
                    u16::from_be_bytes([c.data[0], c.data[1]]),
                    c.data[2],
                )
            })
            .collect();
        assert_eq!(
            cut,
            vec![
                (CHUNK_ENCODING_HISTOGRAM, 1, 3, 3, 0),
                (CHUNK_ENCODING_HISTOGRAM, 4, 4, 1, HEADER_COUNTER_RESET),
                (CHUNK_ENCODING_HISTOGRAM, 5, 7, 3, HEADER_NOT_COUNTER_RESET),
                (CHUNK_ENCODING_HISTOGRAM, 8, 8, 1, HEADER_NOT_COUNTER_RESET),
                (CHUNK_ENCODING_FLOAT_HISTOGRAM, 9, 9, 1, HEADER_NOT_COUNTER_RESET),
                (CHUNK_ENCODING_HISTOGRAM, 10, 11, 2, HEADER_GAUGE),
            ]
        );
        // Hints unknown, as Prometheus sends scraped histograms: one chunk until a count goes
        // down.
        let unknown: Vec<Histogram> = [3, 4, 4, 9, 2, 5]
            .iter()
            .enumerate()
            .map(|(t, &n)| histogram(t as i64, 0, n))
            .collect();
        let cut: Vec<(i64, u8)> = encode_series(&unknown)
            .iter()
            .map(|c| (c.min_time, c.data[2]))
            .collect();
        assert_eq!(cut, vec![(0, 0), (4, HEADER_COUNTER_RESET)]);
        let mut bucket_down = unknown[..2].to_vec();
        bucket_down[1].positive_deltas = vec![2, 10];
        bucket_down[1].count = Some(Count::Int(100));
        assert_eq!(encode_series(&bucket_down).len(), 2, "a bucket that went down");
        // Sent as "no counter reset" but went down: a reset all the same.
        let mut said_no = unknown.clone();
        said_no.iter_mut().for_each(|h| h.reset_hint = HINT_NO);
        assert_eq!(encode_series(&said_no).len(), 2);
        let many: Vec<Histogram> = (0..250).map(|i| histogram(i, 2, i as u64)).collect();
        let sizes: Vec<u16> = encode_series(&many)
            .iter()
            .map(|c| u16::from_be_bytes([c.data[0], c.data[1]]))
            .collect();
        assert_eq!(sizes, vec![120, 120, 10]);
    }

    #[test]
    fn the_first_histogram_is_laid_out_as_prometheus_writes_it() {
        // Layout: threshold byte 116, schema 0 (1 bit), one span (length 2, offset 0), no
        // negative spans; then t = 1 (5 bits), count 3 (5), zero count 1 (5), the sum (64),
        // buckets 1 and 0 (5 + 1).
        let chunk = &encode_series(&[histogram(1, 0, 1)])[0];
        let mut w = BitWriter::default();
        w.byte(116);
        for (value, n) in [
            (0u64, 1u8),
            (0b10_001, 5),
            (0b10_010, 5),
            (0, 1),
            (0, 1),
            (0b10_001, 5),
            (0b10_011, 5),
            (0b10_001, 5),
        ] {
            w.bits(value, n);
        }
        w.bits(1.5f64.to_bits(), 64);
        w.bits(0b10_001, 5);
        w.bit(false);
        assert_eq!(&chunk.data[3..], w.bytes());
    }
}
