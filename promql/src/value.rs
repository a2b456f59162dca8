//! What queries evaluate to.

use std::sync::Arc;

use crate::histogram::FloatHistogram;
use crate::labels::Labels;

/// One sample: milliseconds since the Unix epoch and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// One native histogram sample: milliseconds since the Unix epoch and the histogram (shared:
/// selectors hand the same histogram to every step that sees it).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    pub t: i64,
    pub h: Arc<FloatHistogram>,
}

/// A series and its samples in time order: float samples and native histogram samples apart,
/// as Prometheus keeps them (a series may change from one kind to the other).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramSample>,
    /// The start timestamp of each float sample (ms; 0: unknown), beside `samples`, or
    /// empty when the source keeps none (as the connector's storage). Prometheus' TSDB keeps
    /// them for floats only; `rate`, `irate`, `increase` and `resets` read a later start as a
    /// counter reset (`use-start-timestamps`).
    pub start_times: Vec<i64>,
}

impl Series {
    /// A series of float samples.
    pub fn floats(labels: Labels, samples: Vec<Sample>) -> Self {
        Series {
            labels,
            samples,
            histograms: Vec::new(),
            start_times: Vec::new(),
        }
    }

    /// Its float and histogram samples together.
    pub fn len(&self) -> usize {
        self.samples.len() + self.histograms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.histograms.is_empty()
    }
}

/// One element of an instant vector: a float, or a native histogram when `h` is set (`v` is
/// then 0 and means nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub h: Option<Arc<FloatHistogram>>,
}

impl InstantSample {
    /// A float element.
    pub fn float(labels: Labels, t: i64, v: f64) -> Self {
        InstantSample { labels, t, v, h: None }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    Vector(Vec<InstantSample>),
    /// A range vector of an instant query, or the result of a range query.
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A sample value as Prometheus writes it (Go's `strconv.FormatFloat(v, 'f', -1, 64)`): the
/// shortest decimal that reads back exactly, never an exponent, NaN and ±Inf spelled out.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        let mut out = Vec::new();
        write_decimal(&mut out, v);
        String::from_utf8(out).expect("digits, a sign and a point are ASCII")
    }
}

/// Writes a finite value as [`format_value`] spells it, laid out from `ryu`'s shortest digits:
/// where two shortest spellings are equally near the value, Go (and `ryu`) take the even last
/// digit and Rust's `Display` the other one (`2783070097523.9062`, not `...063`), and `Display`
/// goes through `core::fmt`, which took a third of the connector's CPU time writing range
/// query answers. `ryu` writes `1e16` and `1.0` where Go writes `10000000000000000` and `1`,
/// hence the layout here.
pub fn write_decimal(out: &mut Vec<u8>, v: f64) {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(v).as_bytes();
    let Some(e) = text.iter().position(|&b| b == b'e') else {
        out.extend_from_slice(text.strip_suffix(b".0").unwrap_or(text));
        return;
    };
    // `d.ddde[-]x`: the digits, and how many of them come before the decimal point.
    let (negative, mantissa) = match text[..e].split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, &text[..e]),
    };
    let exponent: i32 = std::str::from_utf8(&text[e + 1..])
        .ok()
        .and_then(|x| x.parse().ok())
        .expect("ryu writes an integer exponent");
    let digits: Vec<u8> = mantissa.iter().copied().filter(|&b| b != b'.').collect();
    let before_point = exponent + 1;
    if negative {
        out.push(b'-');
    }
    if before_point <= 0 {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + before_point.unsigned_abs() as usize, b'0');
        out.extend_from_slice(&digits);
    } else if before_point as usize >= digits.len() {
        out.extend_from_slice(&digits);
        out.resize(out.len() + before_point as usize - digits.len(), b'0');
    } else {
        let (whole, fraction) = digits.split_at(before_point as usize);
        out.extend_from_slice(whole);
        out.push(b'.');
        out.extend_from_slice(fraction);
    }
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern (`value.StaleNaN`). The
/// one definition; storage, tests and benches use it from here.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether a native histogram is Prometheus' staleness marker for a histogram series: its
/// sum is the staleness NaN.
pub fn is_stale_histogram(h: &FloatHistogram) -> bool {
    h.sum.to_bits() == STALE_NAN_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_spelled_as_go_spells_them() {
        // Go's strconv.FormatFloat(v, 'f', -1, 64), which Prometheus' jsonutil.MarshalFloat
        // calls, for values whose two shortest spellings are equally near: the even digit.
        // Rust's Display writes the other one (...063, ...3).
        for (bits, go) in [
            (4793026131454566208_u64, "2783070097523.9062"),
            (4836505346428592365, "2161636471855163.2"),
            (4822045159354406740, "240536177979578.62"),
            (14055829384065246709, "-1149636667324797.2"),
        ] {
            let mut out = Vec::new();
            write_decimal(&mut out, f64::from_bits(bits));
            assert_eq!(String::from_utf8(out).unwrap(), go);
        }
        // Every magnitude (the answers' own exponent form starts outside [1e-6, 1e21)), from random bit patterns,
        // decimals as exporters send them, integers, powers of ten and their neighbours: the
        // shortest digits that read back as the value, as Display's, except for such ties.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut values: Vec<f64> = vec![0.0, -0.0, 1.0, -1.0, 0.1, 1e-6, 1e21_f64.next_down(), 5e-324];
        for exponent in -6..21 {
            let p = 10f64.powi(exponent);
            values.extend([p, -p, p.next_up(), p.next_down(), 1.5 * p, 123_456_789.0 * p / 1e8]);
        }
        for _ in 0..200_000 {
            let r = next();
            values.push(f64::from_bits(r));
            values.push((r % 1_000_000_000) as f64 / 10f64.powi((r >> 40) as i32 % 12));
            values.push((r >> 11) as f64 * 10f64.powi((r % 27) as i32 - 10));
        }
        let (mut checked, mut ties) = (0, 0);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let mut out = Vec::new();
            write_decimal(&mut out, v);
            let ours = String::from_utf8(out).unwrap();
            let display = format!("{v}");
            assert_eq!(ours.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{ours}");
            if ours != display {
                let last = |s: &str| s.bytes().last().unwrap() - b'0';
                assert!(
                    ours.len() == display.len() && last(&ours) % 2 == 0 && last(&ours).abs_diff(last(&display)) == 1,
                    "{ours} against {display}"
                );
                ties += 1;
            }
            checked += 1;
        }
        assert!(
            checked > 300_000 && ties < checked / 100,
            "{checked} values, {ties} ties"
        );
    }
}
