//! Where a chunk is encoded: the sample *block* format of head rows and series chunks (see
//! `docs/storage.md`), and its decoder.
//!
//! Hand-written because the format is ours: it must stay byte for byte what the SQL decoder
//! (`_prom_catalog.decode_block`, migration 5) reads, so that plain PostgreSQL can show every
//! sample. Timestamps are run-length coded deltas; values that are exact decimals are coded
//! as varint deltas of their scaled integer; everything else (NaN and the stale marker, ±Inf,
//! -0, values with no short decimal form) goes to a separate list of exceptions, kept as a
//! `float8[]` so that SQL returns it bit for bit.

/// 10^k as the SQL side's `power_of_ten` has them: decoding divides by the very numbers
/// encoding checked against.
pub const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// The scale byte of a run whose values are all exceptions.
pub const RAW_SCALE: u8 = 255;
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
/// More samples than any block holds: a corrupt length must not allocate without bound.
const MAX_BLOCK_SAMPLES: usize = 1 << 24;
/// The largest time, in absolute value, that a block holds (Unix ms, about 73 million years
/// either side of 1970; PostgreSQL's timestamps span far less). Within it, every difference of
/// differences of times fits the 64-bit tokens.
pub const MAX_ABS_TIME_MS: i64 = 1 << 61;

/// An encoded block: `data` and the `exceptions` it refers to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    pub data: Vec<u8>,
    pub exceptions: Vec<f64>,
}

/// A decoded sample of a block: series id (the sum of run deltas), Unix ms, value.
pub type DecodedSample = (i64, i64, f64);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("corrupt sample block: {0}")]
pub struct CorruptBlock(pub &'static str);

/// Builds a block from runs. Runs must come in ascending series order (ids from 0 up), each
/// with strictly ascending times within [`MAX_ABS_TIME_MS`] of 1970.
pub struct BlockEncoder {
    block: Block,
    base_ms: i64,
    runs: u64,
    previous_series: i64,
    body: Vec<u8>,
    raw_values: bool,
}

impl BlockEncoder {
    /// `base_ms` should be near the block's times (its minimum is best); with `raw_values`
    /// every value goes to the exceptions (compression off).
    pub fn new(base_ms: i64, raw_values: bool) -> Self {
        BlockEncoder {
            block: Block::default(),
            base_ms,
            runs: 0,
            previous_series: 0,
            body: Vec::new(),
            raw_values,
        }
    }

    /// Appends one series' samples (non-empty, strictly ascending times, each within
    /// [`MAX_ABS_TIME_MS`]).
    pub fn push_run(&mut self, series_id: i64, times: &[i64], values: &[f64]) {
        debug_assert!(!times.is_empty() && times.len() == values.len());
        debug_assert!(times.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(
            times[0] >= -MAX_ABS_TIME_MS && times[times.len() - 1] <= MAX_ABS_TIME_MS,
            "times beyond ±MAX_ABS_TIME_MS cannot be coded"
        );
        debug_assert!(series_id >= self.previous_series);
        let out = &mut self.body;
        put_uvarint(out, (series_id - self.previous_series) as u64);
        self.previous_series = series_id;
        self.runs += 1;
        put_uvarint(out, times.len() as u64);
        // times: the first, then the deltas between neighbours as a token stream
        put_zigzag(out, times[0].wrapping_sub(self.base_ms));
        let deltas: Vec<Option<i64>> = times.windows(2).map(|w| Some(w[1] - w[0])).collect();
        put_tokens(out, &deltas);
        // values
        let scale = if self.raw_values { None } else { run_scale(values) };
        let Some(scale) = scale else {
            out.push(RAW_SCALE);
            self.block.exceptions.extend_from_slice(values);
            return;
        };
        out.push(scale);
        let power = POWERS_OF_TEN[scale as usize];
        let scaled_values: Vec<Option<i64>> = values.iter().map(|&v| scaled(v, power)).collect();
        put_tokens(out, &scaled_values);
        self.block.exceptions.extend(
            values
                .iter()
                .zip(&scaled_values)
                .filter(|(_, m)| m.is_none())
                .map(|(v, _)| *v),
        );
    }

    pub fn finish(mut self) -> Block {
        let mut data = Vec::with_capacity(self.body.len() + 12);
        put_zigzag(&mut data, self.base_ms);
        put_uvarint(&mut data, self.runs);
        data.append(&mut self.body);
        self.block.data = data;
        self.block
    }
}

/// Encodes a single series' samples (a series chunk: one run, delta 0).
pub fn encode_series(times: &[i64], values: &[f64], raw_values: bool) -> Block {
    let mut encoder = BlockEncoder::new(times[0], raw_values);
    encoder.push_run(0, times, values);
    encoder.finish()
}

/// Codes a sequence of integers as tokens over the differences between neighbours, starting
/// from 0: `None` is token 0 (an exception; the running value stays), one unchanged value is
/// token 1, a run of `r >= 2` unchanged values is token 2 followed by `r`, and any other
/// change `d` is `zigzag(d) + 2`.
fn put_tokens(out: &mut Vec<u8>, seq: &[Option<i64>]) {
    let mut current: i64 = 0;
    let mut i = 0;
    while i < seq.len() {
        match seq[i] {
            None => {
                put_uvarint(out, 0);
                i += 1;
            }
            Some(x) if x == current => {
                let mut run = 1;
                while i + run < seq.len() && seq[i + run] == Some(current) {
                    run += 1;
                }
                if run == 1 {
                    put_uvarint(out, 1);
                } else {
                    put_uvarint(out, 2);
                    put_uvarint(out, run as u64);
                }
                i += run;
            }
            Some(x) => {
                put_uvarint(out, zigzag(x.wrapping_sub(current)) + 2);
                current = x;
                i += 1;
            }
        }
    }
}

/// `round(v * power)` when dividing it by `power` gives back exactly `v`.
fn scaled(v: f64, power: f64) -> Option<i64> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    let x = (v * power).round();
    if x.abs() >= MAX_EXACT {
        return None;
    }
    ((x / power).to_bits() == v.to_bits()).then_some(x as i64)
}

/// The fewest decimal places that write `v` exactly, up to 15.
fn decimal_places(v: f64) -> Option<u8> {
    (0..POWERS_OF_TEN.len() as u8).find(|&k| scaled(v, POWERS_OF_TEN[k as usize]).is_some())
}

/// The scale of a run: the largest any of its values needs, or none (all raw) when more than
/// half of the values would be exceptions at it.
fn run_scale(values: &[f64]) -> Option<u8> {
    let scale = values.iter().filter_map(|&v| decimal_places(v)).max()?;
    let power = POWERS_OF_TEN[scale as usize];
    let exceptions = values.iter().filter(|&&v| scaled(v, power).is_none()).count();
    (exceptions * 2 <= values.len()).then_some(scale)
}

/// Every sample of a block, in block order (by series, then time).
pub fn decode(data: &[u8], exceptions: &[f64]) -> Result<Vec<DecodedSample>, CorruptBlock> {
    let mut out = Vec::new();
    decode_into(data, exceptions, &mut out)?;
    Ok(out)
}

/// Appends the samples of a block to `out`.
pub fn decode_into(data: &[u8], exceptions: &[f64], out: &mut Vec<DecodedSample>) -> Result<(), CorruptBlock> {
    decode_selected_into(data, exceptions, |_| true, out)
}

/// Appends the samples of the series `wanted` accepts to `out`; the runs of the others are
/// parsed (to find where the next run starts and which exceptions they hold) but their
/// samples are neither computed nor stored: a head row holds every series of its metric,
/// and a selective query wants a few.
pub fn decode_selected_into(
    data: &[u8],
    exceptions: &[f64],
    wanted: impl Fn(i64) -> bool,
    out: &mut Vec<DecodedSample>,
) -> Result<(), CorruptBlock> {
    let mut r = Reader { data, pos: 0 };
    // The limit is the block's: `out` may already hold samples of other blocks.
    let before = out.len();
    let base = r.zigzag()?;
    let runs = r.uvarint()?;
    let mut series: i64 = 0;
    let mut next_exception = 0usize;
    for _ in 0..runs {
        series = series.wrapping_add(r.uvarint()? as i64);
        let n = r.uvarint()? as usize;
        if n == 0 || n > MAX_BLOCK_SAMPLES - (out.len() - before) {
            return Err(CorruptBlock("bad run length"));
        }
        if !wanted(series) {
            // The exception list is shared by the runs: count the skipped run's.
            next_exception += skip_run(&mut r, n)?;
            if next_exception > exceptions.len() {
                return Err(CorruptBlock("too few exceptions"));
            }
            continue;
        }
        let first = out.len();
        let mut t = base.wrapping_add(r.zigzag()?);
        out.push((series, t, 0.0));
        let mut delta: i64 = 0;
        while out.len() - first < n {
            match r.uvarint()? {
                0 => return Err(CorruptBlock("exception token among times")),
                token @ (1 | 2) => {
                    let run = if token == 1 { 1 } else { r.uvarint()? };
                    if run == 0 || run > (n - (out.len() - first)) as u64 {
                        return Err(CorruptBlock("bad run of equal time deltas"));
                    }
                    for _ in 0..run {
                        t = t.wrapping_add(delta);
                        out.push((series, t, 0.0));
                    }
                }
                token => {
                    delta = delta.wrapping_add(unzigzag(token - 2));
                    t = t.wrapping_add(delta);
                    out.push((series, t, 0.0));
                }
            }
        }
        let scale = r.byte()?;
        if scale == RAW_SCALE {
            for s in &mut out[first..] {
                s.2 = take_exception(exceptions, &mut next_exception)?;
            }
            continue;
        }
        let power = *POWERS_OF_TEN.get(scale as usize).ok_or(CorruptBlock("bad scale"))?;
        let mut m: i64 = 0;
        let mut i = first;
        while i < out.len() {
            match r.uvarint()? {
                0 => {
                    out[i].2 = take_exception(exceptions, &mut next_exception)?;
                    i += 1;
                }
                token @ (1 | 2) => {
                    let run = if token == 1 { 1 } else { r.uvarint()? };
                    if run == 0 || run > (out.len() - i) as u64 {
                        return Err(CorruptBlock("bad run of equal values"));
                    }
                    let run = run as usize;
                    for s in &mut out[i..i + run] {
                        s.2 = m as f64 / power;
                    }
                    i += run;
                }
                token => {
                    m = m.wrapping_add(unzigzag(token - 2));
                    out[i].2 = m as f64 / power;
                    i += 1;
                }
            }
        }
    }
    if r.pos != data.len() {
        return Err(CorruptBlock("trailing bytes"));
    }
    Ok(())
}

/// What one run of a block takes: its series, samples, bytes of `data` (run header
/// included) and entries of the exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSize {
    pub series: i64,
    pub samples: usize,
    pub bytes: usize,
    pub exceptions: usize,
}

/// The runs of a block with what each takes, without decoding their samples (how well a
/// block's series compress, from SQL tools and tests).
pub fn run_sizes(data: &[u8]) -> Result<Vec<RunSize>, CorruptBlock> {
    let mut r = Reader { data, pos: 0 };
    r.zigzag()?;
    let runs = r.uvarint()?;
    let mut series: i64 = 0;
    let mut out = Vec::new();
    for _ in 0..runs {
        let start = r.pos;
        series = series.wrapping_add(r.uvarint()? as i64);
        let n = r.uvarint()? as usize;
        if n == 0 || n > MAX_BLOCK_SAMPLES {
            return Err(CorruptBlock("bad run length"));
        }
        let exceptions = skip_run(&mut r, n)?;
        out.push(RunSize {
            series,
            samples: n,
            bytes: r.pos - start,
            exceptions,
        });
    }
    if r.pos != data.len() {
        return Err(CorruptBlock("trailing bytes"));
    }
    Ok(out)
}

fn take_exception(exceptions: &[f64], next: &mut usize) -> Result<f64, CorruptBlock> {
    let v = *exceptions.get(*next).ok_or(CorruptBlock("too few exceptions"))?;
    *next += 1;
    Ok(v)
}

/// Parses one run of `n` samples without computing them, checking it as decoding does;
/// returns how many exceptions it holds.
fn skip_run(r: &mut Reader<'_>, n: usize) -> Result<usize, CorruptBlock> {
    r.zigzag()?;
    let mut seen = 1usize;
    while seen < n {
        match r.uvarint()? {
            0 => return Err(CorruptBlock("exception token among times")),
            token @ (1 | 2) => {
                let run = if token == 1 { 1 } else { r.uvarint()? };
                if run == 0 || run > (n - seen) as u64 {
                    return Err(CorruptBlock("bad run of equal time deltas"));
                }
                seen += run as usize;
            }
            _ => seen += 1,
        }
    }
    let scale = r.byte()?;
    if scale == RAW_SCALE {
        return Ok(n);
    }
    if scale as usize >= POWERS_OF_TEN.len() {
        return Err(CorruptBlock("bad scale"));
    }
    let (mut done, mut exceptions) = (0usize, 0usize);
    while done < n {
        match r.uvarint()? {
            0 => {
                exceptions += 1;
                done += 1;
            }
            token @ (1 | 2) => {
                let run = if token == 1 { 1 } else { r.uvarint()? };
                if run == 0 || run > (n - done) as u64 {
                    return Err(CorruptBlock("bad run of equal values"));
                }
                done += run as usize;
            }
            _ => done += 1,
        }
    }
    Ok(exceptions)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CorruptBlock> {
        let b = *self.data.get(self.pos).ok_or(CorruptBlock("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64, CorruptBlock> {
        let mut x: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(CorruptBlock("varint too long"))
    }

    fn zigzag(&mut self) -> Result<i64, CorruptBlock> {
        Ok(unzigzag(self.uvarint()?))
    }
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn put_zigzag(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, zigzag(x));
}

/// Merges per-series sample lists given in order of precedence: on equal times the sample of
/// the earlier list wins. Each list must be in ascending time order.
pub fn merge_by_precedence(lists: Vec<Vec<(i64, f64)>>) -> Vec<(i64, f64)> {
    let mut lists: Vec<Vec<(i64, f64)>> = lists.into_iter().filter(|l| !l.is_empty()).collect();
    let strictly_ascending = |l: &Vec<(i64, f64)>| l.windows(2).all(|w| w[0].0 < w[1].0);
    match lists.len() {
        0 => return Vec::new(),
        1 if strictly_ascending(&lists[0]) => return lists.pop().unwrap(),
        _ => {}
    }
    // Lists that do not overlap in time (a series' chunks, or its runs in head rows of
    // successive writes) need no precedence: they are joined in time order.
    let mut by_start: Vec<usize> = (0..lists.len()).collect();
    by_start.sort_by_key(|&i| lists[i][0].0);
    if lists.iter().all(strictly_ascending)
        && by_start
            .windows(2)
            .all(|w| lists[w[0]][lists[w[0]].len() - 1].0 < lists[w[1]][0].0)
    {
        let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        for i in by_start {
            out.append(&mut lists[i]);
        }
        return out;
    }
    let mut all: Vec<(i64, usize, f64)> = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    for (rank, list) in lists.into_iter().enumerate() {
        all.extend(list.into_iter().map(|(t, v)| (t, rank, v)));
    }
    all.sort_by_key(|&(t, rank, _)| (t, rank));
    all.dedup_by_key(|s| s.0);
    all.into_iter().map(|(t, _, v)| (t, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: u64 = 0x7ff0_0000_0000_0002;

    fn roundtrip(runs: &[(i64, Vec<i64>, Vec<f64>)], raw: bool) -> Block {
        let mut enc = BlockEncoder::new(runs[0].1[0], raw);
        for (id, t, v) in runs {
            enc.push_run(*id, t, v);
        }
        let block = enc.finish();
        let decoded = decode(&block.data, &block.exceptions).unwrap();
        let expected: Vec<(i64, i64, u64)> = runs
            .iter()
            .flat_map(|(id, t, v)| t.iter().zip(v).map(move |(&t, &v)| (*id, t, v.to_bits())))
            .collect();
        let got: Vec<(i64, i64, u64)> = decoded.iter().map(|&(s, t, v)| (s, t, v.to_bits())).collect();
        assert_eq!(got, expected);
        block
    }

    #[test]
    fn every_kind_of_value_comes_back_bit_for_bit() {
        let times: Vec<i64> = (0..12).map(|i| 1_700_000_000_000 + i * 15_000 + (i % 3)).collect();
        let values = vec![
            f64::from_bits(STALE),
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            0.1 + 0.2,
            1004.11,
            1e300,
            -5e-324,
            1.5e-7,
            42.0,
        ];
        roundtrip(&[(7, times.clone(), values.clone())], false);
        roundtrip(&[(7, times, values)], true);
    }

    #[test]
    fn regular_counters_cost_about_a_byte_per_sample_and_constants_almost_nothing() {
        let times: Vec<i64> = (0..480).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let counter: Vec<f64> = (0..480).map(|i| (i * 37 % 50 + i * 40) as f64 / 100.0).collect();
        let constant = vec![1.0; 480];
        let b = roundtrip(&[(1, times.clone(), counter)], false);
        assert!(b.data.len() < 480 * 2 + 16, "{} bytes", b.data.len());
        assert!(b.exceptions.is_empty());
        let b = roundtrip(&[(1, times, constant)], false);
        assert!(b.data.len() < 24, "{} bytes", b.data.len());
        // Jitter of a few milliseconds costs a byte, not a group.
        let jittered: Vec<i64> = (0..480).map(|i| 1_700_000_000_000 + i * 15_000 + (i * 7) % 5).collect();
        let b = roundtrip(&[(1, jittered, vec![1.0; 480])], false);
        assert!(b.data.len() < 480 + 24, "{} bytes", b.data.len());
        let long: Vec<i64> = (0..100_000).map(|i| i * 1000).collect();
        let b = roundtrip(&[(1, long, vec![0.5; 100_000])], false);
        assert!(b.data.len() < 24, "{} bytes", b.data.len());
    }

    #[test]
    fn many_series_in_one_block_keep_their_ids() {
        let runs: Vec<(i64, Vec<i64>, Vec<f64>)> = (0..50)
            .map(|s| {
                (
                    (3 << 40) + s * 3,
                    vec![1_000 + s, 16_000 + s],
                    vec![s as f64 / 7.0, f64::from_bits(STALE)],
                )
            })
            .collect();
        roundtrip(&runs, false);
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics() {
        let times: Vec<i64> = (0..100).map(|i| i * 1000).collect();
        let values: Vec<f64> = (0..100).map(|i| (i % 7) as f64 * 0.5).collect();
        let block = encode_series(&times, &values, false);
        for cut in 0..block.data.len() {
            let _ = decode(&block.data[..cut], &block.exceptions);
        }
        let mut x: u64 = 1;
        for _ in 0..2000 {
            let garbage: Vec<u8> = (0..32)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&garbage, &[1.0]);
        }
        assert!(decode(&block.data, &[]).is_ok());
        // Runs claiming more samples than fit: errors, not overflows or huge allocations.
        assert_eq!(
            decode(&[0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0], &[]),
            Err(CorruptBlock("bad run length"))
        );
        let mut huge_run = vec![0, 1, 0, 3, 0, 2];
        huge_run.extend([0xff; 9]);
        huge_run.push(0x01);
        assert_eq!(
            decode(&huge_run, &[]),
            Err(CorruptBlock("bad run of equal time deltas"))
        );
        assert_eq!(
            decode(&[0, 1, 0, 1, 0, 0, 0], &[]),
            Err(CorruptBlock("too few exceptions"))
        );
    }

    #[test]
    fn merging_prefers_earlier_lists() {
        let merged = merge_by_precedence(vec![vec![(1, 1.0), (3, 3.0)], vec![(2, 2.0), (3, 30.0), (6, 6.0)]]);
        assert_eq!(merged, vec![(1, 1.0), (2, 2.0), (3, 3.0), (6, 6.0)]);
    }

    #[test]
    fn run_sizes_account_for_every_byte_and_exception() {
        let block = roundtrip(
            &[
                (3, vec![10, 20, 30], vec![1.0, f64::NAN, 3.0]),
                (9, vec![15], vec![0.1 + 0.2]),
            ],
            false,
        );
        let sizes = run_sizes(&block.data).unwrap();
        assert_eq!(
            sizes
                .iter()
                .map(|r| (r.series, r.samples, r.exceptions))
                .collect::<Vec<_>>(),
            vec![(3, 3, 1), (9, 1, 1)]
        );
        let header = block.data.len() - sizes.iter().map(|r| r.bytes).sum::<usize>();
        assert!((2..=12).contains(&header), "block header of {header} bytes");
        assert!(run_sizes(&block.data[..block.data.len() - 1]).is_err());
    }

    #[test]
    fn merging_joins_lists_apart_in_time_in_time_order() {
        // given later stretch first, as blocks of several rows may come
        let merged = merge_by_precedence(vec![
            vec![(7, 7.0), (9, 9.0)],
            vec![],
            vec![(1, 1.0), (3, 3.0)],
            vec![(4, 4.0)],
        ]);
        assert_eq!(merged, vec![(1, 1.0), (3, 3.0), (4, 4.0), (7, 7.0), (9, 9.0)]);
        // touching at one time: precedence decides, the earlier list wins
        let merged = merge_by_precedence(vec![vec![(3, 30.0), (5, 5.0)], vec![(1, 1.0), (3, 3.0)]]);
        assert_eq!(merged, vec![(1, 1.0), (3, 30.0), (5, 5.0)]);
        // a repeat inside one list is settled too
        let merged = merge_by_precedence(vec![vec![(1, 1.0), (1, 10.0)], vec![(5, 5.0)]]);
        assert_eq!(merged, vec![(1, 1.0), (5, 5.0)]);
    }
}
