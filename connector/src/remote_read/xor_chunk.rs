//! Prometheus' XOR chunk encoding (the Gorilla paper's, as `tsdb/chunkenc/xor.go` lays it
//! out): a big-endian sample count, then timestamps as delta-of-delta and values as XOR with
//! the previous value, packed into a bit stream.

/// Prometheus cuts chunks at 120 samples.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

#[derive(Default)]
pub(super) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte.
    free: u8,
}

impl BitWriter {
    pub(super) fn bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if bit {
            *self.bytes.last_mut().expect("a byte") |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    /// The low `n` bits of `value`, most significant first.
    pub(super) fn bits(&mut self, value: u64, n: u8) {
        for i in (0..n).rev() {
            self.bit(value >> i & 1 == 1);
        }
    }

    pub(super) fn byte(&mut self, b: u8) {
        self.bits(u64::from(b), 8);
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bits written so far.
    #[cfg(test)]
    pub(super) fn bit_len(&self) -> usize {
        self.bytes.len() * 8 - usize::from(self.free)
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes samples (time order, at most [`MAX_SAMPLES_PER_CHUNK`]) into one chunk.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    assert!(
        samples.len() <= MAX_SAMPLES_PER_CHUNK,
        "chunks hold at most 120 samples"
    );
    let mut w = BitWriter::default();
    let (mut t_prev, mut t_delta_prev, mut v_prev) = (0i64, 0u64, 0u64);
    let (mut leading, mut trailing) = (0xffu8, 0u8);
    for (i, &(t, v)) in samples.iter().enumerate() {
        let bits = v.to_bits();
        match i {
            0 => {
                let mut buf = Vec::new();
                varint(((t << 1) ^ (t >> 63)) as u64, &mut buf);
                buf.iter().for_each(|&b| w.byte(b));
                w.bits(bits, 64);
            }
            1 => {
                let delta = t.wrapping_sub(t_prev) as u64;
                let mut buf = Vec::new();
                varint(delta, &mut buf);
                buf.iter().for_each(|&b| w.byte(b));
                write_value(&mut w, bits ^ v_prev, &mut leading, &mut trailing);
                t_delta_prev = delta;
            }
            _ => {
                let delta = t.wrapping_sub(t_prev) as u64;
                let dod = delta.wrapping_sub(t_delta_prev) as i64;
                let fits = |n: u32| -((1i64 << (n - 1)) - 1) <= dod && dod <= 1i64 << (n - 1);
                if dod == 0 {
                    w.bit(false);
                } else if fits(14) {
                    w.bits(0b10, 2);
                    w.bits(dod as u64, 14);
                } else if fits(17) {
                    w.bits(0b110, 3);
                    w.bits(dod as u64, 17);
                } else if fits(20) {
                    w.bits(0b1110, 4);
                    w.bits(dod as u64, 20);
                } else {
                    w.bits(0b1111, 4);
                    w.bits(dod as u64, 64);
                }
                write_value(&mut w, bits ^ v_prev, &mut leading, &mut trailing);
                t_delta_prev = delta;
            }
        }
        t_prev = t;
        v_prev = bits;
    }
    let mut out = (samples.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&w.bytes);
    out
}

pub(super) fn write_value(w: &mut BitWriter, xor: u64, leading_prev: &mut u8, trailing_prev: &mut u8) {
    if xor == 0 {
        w.bit(false);
        return;
    }
    w.bit(true);
    // Five bits hold the leading-zero count.
    let leading = (xor.leading_zeros() as u8).min(31);
    let trailing = xor.trailing_zeros() as u8;
    if *leading_prev != 0xff && leading >= *leading_prev && trailing >= *trailing_prev {
        w.bit(false);
        w.bits(xor >> *trailing_prev, 64 - *leading_prev - *trailing_prev);
        return;
    }
    *leading_prev = leading;
    *trailing_prev = trailing;
    w.bit(true);
    w.bits(u64::from(leading), 5);
    let significant = 64 - leading - trailing;
    // 64 significant bits do not fit in six; they are written as 0 and read back as 64.
    w.bits(u64::from(significant), 6);
    w.bits(xor >> trailing, significant);
}

struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.position / 8)?;
        let bit = byte >> (7 - self.position % 8) & 1 == 1;
        self.position += 1;
        Some(bit)
    }

    fn bits(&mut self, n: u8) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            v = v << 1 | u64::from(self.bit()?);
        }
        Some(v)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bits(8)?;
            v |= (b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
}

/// Decodes a chunk; None when it is malformed.
pub fn decode(chunk: &[u8]) -> Option<Vec<(i64, f64)>> {
    let count = u16::from_be_bytes([*chunk.first()?, *chunk.get(1)?]) as usize;
    let mut r = BitReader {
        bytes: &chunk[2..],
        position: 0,
    };
    let mut out = Vec::with_capacity(count);
    let (mut t, mut delta, mut bits) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0u8, 0u8);
    for i in 0..count {
        match i {
            0 => {
                let z = r.varint()?;
                t = (z >> 1) as i64 ^ -((z & 1) as i64);
                bits = r.bits(64)?;
            }
            _ => {
                if i == 1 {
                    delta = r.varint()? as i64;
                } else {
                    let mut prefix = 0;
                    while prefix < 4 && r.bit()? {
                        prefix += 1;
                    }
                    let width = [0, 14, 17, 20, 64][prefix];
                    if width > 0 {
                        let raw = r.bits(width)?;
                        // The encoder's ranges include +2^(width-1), so only values above it
                        // are negative, as Prometheus reads them.
                        let dod = if width < 64 && raw > 1u64 << (width - 1) {
                            raw as i64 - (1i64 << width)
                        } else {
                            raw as i64
                        };
                        delta = delta.wrapping_add(dod);
                    }
                }
                // Wrapping, as the encoder's differences and Prometheus' Go code are: times
                // more than i64::MAX apart are still one step.
                t = t.wrapping_add(delta);
                if r.bit()? {
                    if r.bit()? {
                        leading = r.bits(5)? as u8;
                        let significant = match r.bits(6)? as u8 {
                            0 => 64,
                            n => n,
                        };
                        // A window wider than 64 bits is corrupt (the encoder never writes one).
                        trailing = 64u8.checked_sub(leading + significant)?;
                    }
                    let significant = 64 - leading - trailing;
                    bits ^= r.bits(significant)? << trailing;
                }
            }
        }
        out.push((t, f64::from_bits(bits)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(samples: &[(i64, f64)]) {
        let decoded = decode(&encode(samples)).expect("decodable");
        assert_eq!(decoded.len(), samples.len());
        for (a, b) in decoded.iter().zip(samples) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
    }

    #[test]
    fn every_kind_of_step_and_value_survives() {
        roundtrip(&[]);
        roundtrip(&[(-5, 1.5)]);
        let regular: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, i as f64 * 0.1))
            .collect();
        roundtrip(&regular);
        // Jitter in every delta-of-delta size class, and values with few and many changed bits.
        // 8_192 and 23_192 hit the upper edge of the 14-bit class exactly.
        let steps = [
            15_000,
            15_001,
            14_000,
            22_192,
            100_000,
            15_000,
            1_000_000,
            1,
            100_000_000_000,
            15_000,
        ];
        let values = [
            0.0,
            f64::NAN,
            f64::INFINITY,
            -0.0,
            1e300,
            42.0,
            42.0,
            f64::from_bits(0x7ff0_0000_0000_0002),
            3.25,
            -1.0,
        ];
        let mut t = 0i64;
        let mixed: Vec<(i64, f64)> = steps
            .iter()
            .zip(values)
            .map(|(s, v)| {
                t += s;
                (t, v)
            })
            .collect();
        roundtrip(&mixed);
    }

    #[test]
    fn layout_matches_prometheus() {
        // One sample: count 1, zigzag varint of t=1 (2), then the value's 64 bits.
        assert_eq!(encode(&[(1, 1.0)]), [0, 1, 2, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        // A second, equal value 10 ms later: varint delta 10, then a single 0 bit.
        assert_eq!(
            encode(&[(1, 1.0), (11, 1.0)]),
            [0, 2, 2, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 10, 0]
        );
    }
}
