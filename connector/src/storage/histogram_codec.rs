//! Where a chunk of native histograms is encoded and decoded: the `data` and `floats` of a
//! row of `_prom_catalog.histogram_chunk` (migration 15), one series' histograms in time
//! order. The SQL function `_prom_catalog.decode_histogram_chunk` reads the same format for
//! `prom_info.native_histogram`, so it is hand-written here (no crate encodes it) and kept
//! simple enough for PL/pgSQL: varints only, every float as an element of `floats` (a
//! `float8[]`, which keeps each value's bits, NaN payloads of stale markers included).
//!
//! ```text
//! chunk     := n:uvarint  histogram*n
//! histogram := flags:u8  time  [layout]  counts
//! flags     := bit 0: an integer histogram (as sent); bits 1-2: the counter reset hint;
//!              bit 3: a layout follows (always for the first); bit 4: counts are floats
//! time      := the first: ms:zigzag; the second: its delta:zigzag; later: delta of delta:zigzag
//! layout    := schema:zigzag  [zero_threshold]  spans(positive)  spans(negative)
//!              custom:uvarint [custom value]*custom
//! spans     := pairs:uvarint (offset:zigzag length:zigzag)*pairs  buckets:uvarint
//! counts    := [sum]  then, when counts are floats: [count] [zero_count] [bucket]*;
//!              else count, zero_count and each bucket as zigzag deltas from the same field
//!              of the previous histogram (0 after a layout or a histogram of float counts)
//! ```
//!
//! Fields in `[brackets]` are the next elements of `floats`. Counts are integer-coded when
//! each is an integer of at most 2^53 in magnitude that reads back as the same bits (not -0):
//! a counter's buckets then cost about a byte each. A layout is written only when the schema,
//! zero threshold, spans or custom values change, which in a scraped series is rare.

use super::codec::{put_uvarint, put_zigzag, unzigzag, CorruptBlock, Reader};

/// A native histogram as stored: absolute bucket counts, spans as flat (offset, length)
/// pairs (`_prom_catalog.histogram`'s columns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredHistogram {
    /// Unix ms.
    pub time: i64,
    pub integer: bool,
    /// 0 unknown, 1 reset, 2 no reset, 3 gauge.
    pub reset_hint: i16,
    pub schema: i32,
    pub count: f64,
    pub sum: f64,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub positive_spans: Vec<i32>,
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<i32>,
    pub negative_buckets: Vec<f64>,
    pub custom_values: Vec<f64>,
}

/// The columns [`StoredHistogram`] is read from: `_prom_catalog.histogram`'s, its time as
/// Unix ms.
pub const HISTOGRAM_COLUMNS: &str = "(extract(epoch FROM time) * 1000)::int8 AS time, integer, reset_hint,
    schema, count, sum, zero_threshold, zero_count, positive_spans, positive_buckets, negative_spans,
    negative_buckets, custom_values";

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for StoredHistogram {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(StoredHistogram {
            time: row.try_get("time")?,
            integer: row.try_get("integer")?,
            reset_hint: row.try_get("reset_hint")?,
            schema: row.try_get("schema")?,
            count: row.try_get("count")?,
            sum: row.try_get("sum")?,
            zero_threshold: row.try_get("zero_threshold")?,
            zero_count: row.try_get("zero_count")?,
            positive_spans: row.try_get("positive_spans")?,
            positive_buckets: row.try_get("positive_buckets")?,
            negative_spans: row.try_get("negative_spans")?,
            negative_buckets: row.try_get("negative_buckets")?,
            custom_values: row.try_get("custom_values")?,
        })
    }
}

impl StoredHistogram {
    fn same_layout(&self, o: &StoredHistogram) -> bool {
        let bits =
            |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        self.schema == o.schema
            && self.zero_threshold.to_bits() == o.zero_threshold.to_bits()
            && self.positive_spans == o.positive_spans
            && self.negative_spans == o.negative_spans
            && self.positive_buckets.len() == o.positive_buckets.len()
            && self.negative_buckets.len() == o.negative_buckets.len()
            && bits(&self.custom_values, &o.custom_values)
    }

    /// Count, zero count and buckets, when all are exact integers (see the module comment).
    fn integer_counts(&self) -> Option<Vec<i64>> {
        let exact = |v: f64| -> Option<i64> {
            let i = v as i64;
            (v.is_finite() && v.abs() <= 9_007_199_254_740_992.0 && (i as f64).to_bits() == v.to_bits()).then_some(i)
        };
        let mut out = Vec::with_capacity(2 + self.positive_buckets.len() + self.negative_buckets.len());
        for v in [self.count, self.zero_count]
            .iter()
            .chain(&self.positive_buckets)
            .chain(&self.negative_buckets)
        {
            out.push(exact(*v)?);
        }
        Some(out)
    }
}

/// An encoded chunk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramChunk {
    pub data: Vec<u8>,
    pub floats: Vec<f64>,
}

const INTEGER: u8 = 1;
const LAYOUT: u8 = 8;
const FLOAT_COUNTS: u8 = 16;

fn put_spans(out: &mut Vec<u8>, spans: &[i32], buckets: usize) {
    put_uvarint(out, (spans.len() / 2) as u64);
    for pair in spans.chunks_exact(2) {
        put_zigzag(out, i64::from(pair[0]));
        put_zigzag(out, i64::from(pair[1]));
    }
    put_uvarint(out, buckets as u64);
}

/// Encodes `histograms` (one series, times strictly ascending).
pub fn encode(histograms: &[StoredHistogram]) -> HistogramChunk {
    let mut chunk = HistogramChunk::default();
    let out = &mut chunk.data;
    let floats = &mut chunk.floats;
    put_uvarint(out, histograms.len() as u64);
    let mut previous: Option<&StoredHistogram> = None;
    let mut previous_counts: Option<Vec<i64>> = None;
    let (mut previous_time, mut previous_delta) = (0i64, 0i64);
    for (i, h) in histograms.iter().enumerate() {
        let layout = previous.is_none_or(|p| !p.same_layout(h));
        let counts = h.integer_counts();
        let mut flags = (h.reset_hint.clamp(0, 3) as u8) << 1;
        if h.integer {
            flags |= INTEGER;
        }
        if layout {
            flags |= LAYOUT;
        }
        if counts.is_none() {
            flags |= FLOAT_COUNTS;
        }
        out.push(flags);
        match i {
            0 => put_zigzag(out, h.time),
            1 => {
                previous_delta = h.time.wrapping_sub(previous_time);
                put_zigzag(out, previous_delta);
            }
            _ => {
                let delta = h.time.wrapping_sub(previous_time);
                put_zigzag(out, delta.wrapping_sub(previous_delta));
                previous_delta = delta;
            }
        }
        previous_time = h.time;
        if layout {
            put_zigzag(out, i64::from(h.schema));
            floats.push(h.zero_threshold);
            put_spans(out, &h.positive_spans, h.positive_buckets.len());
            put_spans(out, &h.negative_spans, h.negative_buckets.len());
            put_uvarint(out, h.custom_values.len() as u64);
            floats.extend_from_slice(&h.custom_values);
        }
        floats.push(h.sum);
        match counts {
            Some(counts) => {
                let base = if layout { None } else { previous_counts.as_deref() };
                for (j, c) in counts.iter().enumerate() {
                    put_zigzag(out, c.wrapping_sub(base.map_or(0, |b| b[j])));
                }
                previous_counts = Some(counts);
            }
            None => {
                floats.push(h.count);
                floats.push(h.zero_count);
                floats.extend_from_slice(&h.positive_buckets);
                floats.extend_from_slice(&h.negative_buckets);
                previous_counts = None;
            }
        }
        previous = Some(h);
    }
    chunk
}

struct Floats<'a> {
    values: &'a [f64],
    at: usize,
}

impl Floats<'_> {
    fn next(&mut self) -> Result<f64, CorruptBlock> {
        let v = *self
            .values
            .get(self.at)
            .ok_or(CorruptBlock("histogram chunk: too few floats"))?;
        self.at += 1;
        Ok(v)
    }
}

/// At most this many buckets or custom values a histogram (Prometheus' schemas give a few
/// thousand at most): a corrupt length cannot make the decoder allocate without bound.
const MAX_FIELDS: u64 = 1 << 20;

fn read_len(r: &mut Reader<'_>) -> Result<usize, CorruptBlock> {
    let n = r.short_uvarint()?;
    if n > MAX_FIELDS {
        return Err(CorruptBlock("histogram chunk: length out of range"));
    }
    Ok(n as usize)
}

fn read_i32(r: &mut Reader<'_>) -> Result<i32, CorruptBlock> {
    i32::try_from(unzigzag(r.short_uvarint()?)).map_err(|_| CorruptBlock("histogram chunk: value out of range"))
}

fn read_spans(r: &mut Reader<'_>) -> Result<(Vec<i32>, usize), CorruptBlock> {
    let pairs = read_len(r)?;
    let mut spans = Vec::with_capacity(pairs * 2);
    for _ in 0..pairs * 2 {
        spans.push(read_i32(r)?);
    }
    Ok((spans, read_len(r)?))
}

/// Decodes a chunk.
pub fn decode(data: &[u8], floats: &[f64]) -> Result<Vec<StoredHistogram>, CorruptBlock> {
    let mut r = Reader { data, pos: 0 };
    let mut f = Floats { values: floats, at: 0 };
    let n = r.short_uvarint()?;
    // Every histogram takes at least two bytes.
    if n > data.len() as u64 {
        return Err(CorruptBlock("histogram chunk: count out of range"));
    }
    let mut out: Vec<StoredHistogram> = Vec::with_capacity(n as usize);
    let mut previous_counts: Option<Vec<i64>> = None;
    let (mut time, mut delta) = (0i64, 0i64);
    for i in 0..n {
        let flags = r.byte()?;
        if flags >= 32 {
            return Err(CorruptBlock("histogram chunk: unknown flags"));
        }
        let t = unzigzag(r.short_uvarint()?);
        match i {
            0 => time = t,
            1 => {
                delta = t;
                time = time.wrapping_add(delta);
            }
            _ => {
                delta = delta.wrapping_add(t);
                time = time.wrapping_add(delta);
            }
        }
        let layout = flags & LAYOUT != 0;
        let mut h = if layout {
            let schema = read_i32(&mut r)?;
            let zero_threshold = f.next()?;
            let (positive_spans, positive) = read_spans(&mut r)?;
            let (negative_spans, negative) = read_spans(&mut r)?;
            let custom = read_len(&mut r)?;
            let mut custom_values = Vec::with_capacity(custom);
            for _ in 0..custom {
                custom_values.push(f.next()?);
            }
            StoredHistogram {
                schema,
                zero_threshold,
                positive_spans,
                positive_buckets: vec![0.0; positive],
                negative_spans,
                negative_buckets: vec![0.0; negative],
                custom_values,
                ..Default::default()
            }
        } else {
            out.last().ok_or(CorruptBlock("histogram chunk: no layout"))?.clone()
        };
        h.time = time;
        h.integer = flags & INTEGER != 0;
        h.reset_hint = i16::from((flags >> 1) & 3);
        h.sum = f.next()?;
        let (positive, negative) = (h.positive_buckets.len(), h.negative_buckets.len());
        if flags & FLOAT_COUNTS != 0 {
            h.count = f.next()?;
            h.zero_count = f.next()?;
            for b in h.positive_buckets.iter_mut().chain(h.negative_buckets.iter_mut()) {
                *b = f.next()?;
            }
            previous_counts = None;
        } else {
            let base = if layout { None } else { previous_counts.take() };
            let mut counts = Vec::with_capacity(2 + positive + negative);
            for j in 0..2 + positive + negative {
                let d = unzigzag(r.short_uvarint()?);
                counts.push(base.as_ref().map_or(0, |b: &Vec<i64>| b[j]).wrapping_add(d));
            }
            h.count = counts[0] as f64;
            h.zero_count = counts[1] as f64;
            for (b, c) in h
                .positive_buckets
                .iter_mut()
                .chain(h.negative_buckets.iter_mut())
                .zip(&counts[2..])
            {
                *b = *c as f64;
            }
            previous_counts = Some(counts);
        }
        out.push(h);
    }
    if r.pos != data.len() || f.at != floats.len() {
        return Err(CorruptBlock("histogram chunk: trailing data"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_bits(a: &StoredHistogram, b: &StoredHistogram) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        a.time == b.time
            && a.integer == b.integer
            && a.reset_hint == b.reset_hint
            && a.schema == b.schema
            && a.count.to_bits() == b.count.to_bits()
            && a.sum.to_bits() == b.sum.to_bits()
            && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
            && a.zero_count.to_bits() == b.zero_count.to_bits()
            && a.positive_spans == b.positive_spans
            && a.negative_spans == b.negative_spans
            && bits(&a.positive_buckets) == bits(&b.positive_buckets)
            && bits(&a.negative_buckets) == bits(&b.negative_buckets)
            && bits(&a.custom_values) == bits(&b.custom_values)
    }

    fn counter(time: i64, n: u64) -> StoredHistogram {
        StoredHistogram {
            time,
            integer: true,
            reset_hint: 0,
            schema: 3,
            count: (n * 6) as f64,
            sum: n as f64 * 0.137,
            zero_threshold: 2.938735877055719e-39,
            zero_count: n as f64,
            positive_spans: vec![-2, 3, 4, 2],
            positive_buckets: vec![n as f64, (2 * n) as f64, 0.0, n as f64, (n / 2) as f64],
            negative_spans: vec![],
            negative_buckets: vec![],
            custom_values: vec![],
        }
    }

    fn round_trip(hs: &[StoredHistogram]) -> HistogramChunk {
        let chunk = encode(hs);
        let back = decode(&chunk.data, &chunk.floats).unwrap();
        assert_eq!(back.len(), hs.len());
        for (a, b) in hs.iter().zip(&back) {
            assert!(same_bits(a, b), "{a:?}\n{b:?}");
        }
        chunk
    }

    #[test]
    fn a_scraped_counter_histogram_costs_a_few_bytes_besides_its_sum() {
        let hs: Vec<StoredHistogram> = (0..120)
            .map(|i| counter(1_700_000_000_000 + i * 15_000, 100 + i as u64 * 7))
            .collect();
        let chunk = round_trip(&hs);
        // flags, time and 7 counts a histogram, each about a byte; the sum in floats.
        assert!(chunk.data.len() < 120 * 12, "{} bytes", chunk.data.len());
        assert_eq!(chunk.floats.len(), 1 + 120);
    }

    #[test]
    fn every_kind_of_value_and_layout_comes_back_bit_for_bit() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut hs = vec![counter(-5, 3), counter(10, 4), counter(11, 4)];
        // A float histogram, a stale marker (its sum), -0 and a fraction among counts.
        hs.push(StoredHistogram {
            time: 20,
            integer: false,
            reset_hint: 3,
            count: 2.5,
            zero_count: -0.0,
            ..counter(20, 4)
        });
        hs.push(StoredHistogram {
            sum: stale,
            ..counter(30, 5)
        });
        // A new layout: negative buckets, another schema and threshold.
        hs.push(StoredHistogram {
            time: 1_000,
            schema: -4,
            zero_threshold: 0.0,
            negative_spans: vec![1, 1],
            negative_buckets: vec![9.0],
            reset_hint: 1,
            ..counter(1_000, 6)
        });
        // Custom buckets with an infinite count and huge integers.
        hs.push(StoredHistogram {
            time: 1_001,
            schema: -53,
            custom_values: vec![0.1, 0.5, f64::INFINITY],
            positive_spans: vec![0, 3],
            positive_buckets: vec![1.0, f64::INFINITY, 2.0],
            count: 9_007_199_254_740_992.0,
            reset_hint: 2,
            ..counter(1_001, 1)
        });
        hs.push(StoredHistogram {
            time: 1 << 60,
            schema: -53,
            custom_values: vec![0.1, 0.5, f64::INFINITY],
            positive_spans: vec![0, 3],
            positive_buckets: vec![1.0, 3.0, 2.0],
            count: 9_007_199_254_740_992.0,
            ..counter(1 << 60, 1)
        });
        round_trip(&hs);
        round_trip(&[]);
        round_trip(&hs[..1]);
    }

    #[test]
    fn corrupt_chunks_are_refused_not_trusted() {
        let chunk = encode(&[counter(1, 1), counter(2, 2)]);
        for cut in 0..chunk.data.len() {
            assert!(decode(&chunk.data[..cut], &chunk.floats).is_err(), "cut at {cut}");
        }
        assert!(decode(&chunk.data, &chunk.floats[1..]).is_err());
        let mut extra = chunk.floats.clone();
        extra.push(1.0);
        assert!(decode(&chunk.data, &extra).is_err());
        // A huge count of buckets.
        let mut bad = vec![1u8, LAYOUT, 2, 0];
        bad.extend([0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(decode(&bad, &[0.0]).is_err());
        // No layout for the first histogram.
        assert!(decode(&[1, 0, 2], &[1.0]).is_err());
    }
}
