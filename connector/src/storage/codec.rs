//! Where a chunk is encoded: the sample *block* format of head rows and series chunks (see
//! `docs/storage.md`), and its decoder.
//!
//! Hand-written because the format is ours: it must stay byte for byte what the SQL decoder
//! (`_prom_catalog.decode_block`, migrations 5 and 12) reads, so that plain PostgreSQL can show every
//! sample. Timestamps are run-length coded deltas; values that are exact decimals are coded
//! as deltas of their scaled integer, either as varint tokens or bit-packed (frame of
//! reference, common trailing zeros shifted out), whichever is shorter for the run; everything
//! else (NaN and the stale marker, ±Inf, -0, values with no short decimal form) goes to a
//! separate list of exceptions, kept as a `float8[]` so that SQL returns it bit for bit.

/// 10^k as the SQL side's `power_of_ten` has them: decoding divides by the very numbers
/// encoding checked against.
pub const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// The scale byte of a run whose values are all exceptions.
pub const RAW_SCALE: u8 = 255;
/// Scale bytes from `PACKED_SCALE` to `PACKED_SCALE + 15` mark a run whose values are
/// bit-packed, at decimal scale `byte - PACKED_SCALE` (schema version 12 and later).
pub const PACKED_SCALE: u8 = 16;

/// The decimal scale of a run whose scale byte marks it bit-packed, `None` for any other run.
pub fn packed_scale(scale_byte: u8) -> Option<u8> {
    scale_byte.checked_sub(PACKED_SCALE).filter(|&k| k < 16)
}
/// Bit-packed deltas are at most this wide, their shift included: scaled values lie within
/// ±(2^53 - 1), their deltas within ±2^54, the deltas' distances from the median within
/// ±2^55, and those zig-zagged below 2^56.
const MAX_PACKED_BITS: u32 = 56;
/// The largest magnitude of a scaled value (2^53 - 1), of a delta between two (2^54), as the
/// decoders check them: a corrupt block is refused rather than read as wrapped numbers.
const MAX_SCALED: i64 = (1 << 53) - 1;
const MAX_DELTA: i64 = 1 << 54;
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
    packing: bool,
    scratch_tokens: Vec<u8>,
    scratch_packed: Vec<u8>,
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
            packing: true,
            scratch_tokens: Vec::new(),
            scratch_packed: Vec::new(),
        }
    }

    /// Codes every run's values as tokens, never bit-packed, as schema versions 5 to 11 did:
    /// for tests that write a database of those versions.
    pub fn without_packing(mut self) -> Self {
        self.packing = false;
        self
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
        let power = POWERS_OF_TEN[scale as usize];
        let scaled_values: Vec<Option<i64>> = values.iter().map(|&v| scaled(v, power)).collect();
        // Tokens suit runs of equal values and single samples (head rows as written), bit
        // packing runs of changing values; the shorter wins, tokens on a tie.
        let (tokens, packed) = (&mut self.scratch_tokens, &mut self.scratch_packed);
        tokens.clear();
        packed.clear();
        put_tokens(tokens, &scaled_values);
        if self.packing && values.len() > 2 {
            put_packed(packed, &scaled_values);
        }
        if !packed.is_empty() && packed.len() < tokens.len() {
            out.push(PACKED_SCALE + scale);
            out.extend_from_slice(packed);
        } else {
            out.push(scale);
            out.extend_from_slice(tokens);
        }
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

/// Codes a run's scaled values bit-packed: the positions of its exceptions (`None`), then
/// the other values as the first one and the differences between neighbours. Each
/// difference is stored as its distance from the run's median difference, shifted right by
/// the trailing zero bits those distances share and zig-zagged, in `width` bits, least
/// significant bit first. The differences that do not fit (a counter reset, the jump over an
/// exception, a spike) are *patches*: their slot holds 0 and the difference itself follows the
/// bits, so that one outlier does not widen every other sample.
///
/// ```text
/// packed := e:uvarint  gap:uvarint * e  (position - previous position - 1, from -1)
///           first:zigzag                                    (k = n - e >= 1 values)
///           [base:zigzag  shift:u8  width:u8  bits  p:uvarint  (gap:uvarint  delta:zigzag) * p]
/// ```
///
/// The bracketed part is present when k >= 2: `bits` holds ceil((k-1) * width / 8) bytes, the
/// patches' positions count among the k - 1 differences. A counter with increments up to 50
/// costs 6 bits a sample, a gauge that moves in steps of 4096 the bits of its range of steps,
/// a counter growing by a constant amount almost nothing.
fn put_packed(out: &mut Vec<u8>, seq: &[Option<i64>]) {
    let exceptions = seq.iter().filter(|x| x.is_none()).count();
    put_uvarint(out, exceptions as u64);
    let mut previous: i64 = -1;
    for (i, x) in seq.iter().enumerate() {
        if x.is_none() {
            put_uvarint(out, (i as i64 - previous - 1) as u64);
            previous = i as i64;
        }
    }
    let values: Vec<i64> = seq.iter().flatten().copied().collect();
    let Some(&first) = values.first() else {
        // Not reached (a run is packed only when at most half of it are exceptions); an
        // empty `out` makes the caller keep the tokens.
        debug_assert!(false, "a packed run holds at least one value");
        out.clear();
        return;
    };
    put_zigzag(out, first);
    if values.len() < 2 {
        return;
    }
    let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let mut sorted = deltas.clone();
    sorted.sort_unstable();
    let base = sorted[sorted.len() / 2];
    let distances: Vec<i64> = deltas.iter().map(|d| d.wrapping_sub(base)).collect();
    let mut plan = PackingPlan::choose(&deltas, &distances, common_shift(distances.iter()));
    // Outliers may share fewer trailing zeros than the rest: try the shift of the others.
    if plan.patched(&distances).next().is_some() {
        let kept = distances.iter().filter(|&&x| !plan.is_patch(x));
        let other = PackingPlan::choose(&deltas, &distances, common_shift(kept));
        if other.cost < plan.cost {
            plan = other;
        }
    }
    debug_assert!(plan.shift + plan.width <= MAX_PACKED_BITS);
    put_zigzag(out, base);
    out.push(plan.shift as u8);
    out.push(plan.width as u8);
    let (mut acc, mut bits): (u64, u32) = (0, 0);
    for &x in &distances {
        if !plan.is_patch(x) {
            acc |= zigzag(x >> plan.shift) << bits;
        }
        bits += plan.width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
    let patches: Vec<usize> = plan.patched(&distances).collect();
    put_uvarint(out, patches.len() as u64);
    let mut previous: i64 = -1;
    for i in patches {
        put_uvarint(out, (i as i64 - previous - 1) as u64);
        put_zigzag(out, deltas[i]);
        previous = i as i64;
    }
}

/// The trailing zero bits that all of `xs` share (0 when they are all 0).
fn common_shift<'a>(xs: impl Iterator<Item = &'a i64>) -> u32 {
    let all = xs.fold(0u64, |acc, &x| acc | x as u64);
    if all == 0 {
        0
    } else {
        all.trailing_zeros()
    }
}

/// The shift and width of a packed run, and what they cost in bytes.
struct PackingPlan {
    shift: u32,
    width: u32,
    cost: usize,
}

impl PackingPlan {
    /// The width, at this shift, that makes the bits and the patches shortest.
    fn choose(deltas: &[i64], distances: &[i64], shift: u32) -> Self {
        // Bytes the patches cost, by the bit length of the slot they would otherwise need;
        // distances that are no multiple of 2^shift are patches at any width.
        let mut by_length = [0usize; 65];
        let mut always = 0usize;
        for (&d, &x) in deltas.iter().zip(distances) {
            let cost = 1 + uvarint_len(zigzag(d));
            if x & ((1i64 << shift) - 1) != 0 {
                always += cost;
            } else {
                by_length[(64 - zigzag(x >> shift).leading_zeros()) as usize] += cost;
            }
        }
        let n = distances.len();
        let mut patched: usize = by_length.iter().sum();
        let mut best = PackingPlan {
            shift,
            width: 0,
            cost: usize::MAX,
        };
        for width in 0..=MAX_PACKED_BITS.saturating_sub(shift) {
            patched -= by_length[width as usize];
            let cost = (n * width as usize).div_ceil(8) + patched + always;
            if cost < best.cost {
                best = PackingPlan { shift, width, cost };
            }
        }
        best
    }

    fn is_patch(&self, x: i64) -> bool {
        x & ((1i64 << self.shift) - 1) != 0 || zigzag(x >> self.shift) >> self.width != 0
    }

    /// The positions of the patches among `distances`.
    fn patched<'a>(&'a self, distances: &'a [i64]) -> impl Iterator<Item = usize> + 'a {
        (0..distances.len()).filter(move |&i| self.is_patch(distances[i]))
    }
}

fn uvarint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
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
            next_exception += skip_run(&mut r, n)?.exceptions;
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
        if let Some(decimal) = packed_scale(scale) {
            let power = POWERS_OF_TEN[decimal as usize];
            let packed = Packed::read(&mut r, n)?;
            let run = &mut out[first..];
            // The exceptions' slots first (in order, as the list of exceptions has them),
            // then the k = n - e values into the others.
            for &p in &packed.exceptions {
                run[p].2 = take_exception(exceptions, &mut next_exception)?;
            }
            let (mut slot, mut skip) = (0, packed.exceptions.iter().peekable());
            let mut in_range = true;
            packed.for_each_value(|m| {
                while skip.next_if(|&&p| p == slot).is_some() {
                    slot += 1;
                }
                in_range &= (-MAX_SCALED..=MAX_SCALED).contains(&m);
                run[slot].2 = m as f64 / power;
                slot += 1;
            });
            if !in_range {
                return Err(CorruptBlock("packed value out of range"));
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
    /// How its values are coded: at decimal scale 0 to 15 as tokens, at scale
    /// `scale - PACKED_SCALE` bit-packed, or all raw ([`RAW_SCALE`]).
    pub scale: u8,
    pub series: i64,
    pub samples: usize,
    pub bytes: usize,
    pub exceptions: usize,
    /// Bits a value takes in a bit-packed run, its shift included (0 otherwise).
    pub packed_bits: u32,
    /// Deltas of a bit-packed run stored whole as patches (0 otherwise).
    pub patches: usize,
}

impl RunSize {
    /// Whether the run's values are bit-packed.
    pub fn is_packed(&self) -> bool {
        packed_scale(self.scale).is_some()
    }
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
        let values = skip_run(&mut r, n)?;
        out.push(RunSize {
            scale: values.scale,
            packed_bits: values.packed_bits,
            patches: values.patches,
            series,
            samples: n,
            bytes: r.pos - start,
            exceptions: values.exceptions,
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
/// returns how its values are coded and how many exceptions they take.
fn skip_run(r: &mut Reader<'_>, n: usize) -> Result<RunValues, CorruptBlock> {
    skip_times(r, n)?;
    skip_values(r, n)
}

/// Parses the times of a run of `n` samples (its first time and the tokens after it).
fn skip_times(r: &mut Reader<'_>, n: usize) -> Result<(), CorruptBlock> {
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
    Ok(())
}

/// How the values of a run are coded (see [`RunSize`]).
struct RunValues {
    scale: u8,
    exceptions: usize,
    packed_bits: u32,
    patches: usize,
}

/// Parses the values of a run of `n` samples.
fn skip_values(r: &mut Reader<'_>, n: usize) -> Result<RunValues, CorruptBlock> {
    let scale = r.byte()?;
    let coded = |exceptions| RunValues {
        scale,
        exceptions,
        packed_bits: 0,
        patches: 0,
    };
    if scale == RAW_SCALE {
        return Ok(coded(n));
    }
    if packed_scale(scale).is_some() {
        let packed = Packed::read(r, n)?;
        return Ok(RunValues {
            scale,
            exceptions: packed.exceptions.len(),
            packed_bits: packed.shift + packed.width,
            patches: packed.patches.len(),
        });
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
    Ok(coded(exceptions))
}

/// The bit-packed values of a run of `n` samples (see [`put_packed`]), parsed and checked but
/// not yet unpacked.
struct Packed<'a> {
    /// Positions in the run of the values that are exceptions, ascending.
    exceptions: Vec<usize>,
    first: i64,
    base: i64,
    shift: u32,
    width: u32,
    /// How many differences `bits` holds (k - 1).
    count: usize,
    bits: &'a [u8],
    /// (position among the differences, difference), ascending.
    patches: Vec<(usize, i64)>,
}

impl<'a> Packed<'a> {
    fn read(r: &mut Reader<'a>, n: usize) -> Result<Self, CorruptBlock> {
        // Every field is at most 9 bytes long, as the SQL decoder reads them.
        let e = r.short_uvarint()?;
        if e >= n as u64 {
            return Err(CorruptBlock("bad count of packed exceptions"));
        }
        let exceptions = read_positions(r, e, n as u64, "bad position of a packed exception")?;
        let k = n - e as usize;
        let first = unzigzag(r.short_uvarint()?);
        if !(-MAX_SCALED..=MAX_SCALED).contains(&first) {
            return Err(CorruptBlock("packed value out of range"));
        }
        let mut packed = Packed {
            exceptions,
            first,
            base: 0,
            shift: 0,
            width: 0,
            count: k - 1,
            bits: &[],
            patches: Vec::new(),
        };
        if k >= 2 {
            packed.base = unzigzag(r.short_uvarint()?);
            if !(-MAX_DELTA..=MAX_DELTA).contains(&packed.base) {
                return Err(CorruptBlock("packed delta out of range"));
            }
            packed.shift = u32::from(r.byte()?);
            packed.width = u32::from(r.byte()?);
            if packed.shift + packed.width > MAX_PACKED_BITS {
                return Err(CorruptBlock("bad width of packed values"));
            }
            let bytes = (packed.count as u64 * u64::from(packed.width)).div_ceil(8);
            if bytes > (r.data.len() - r.pos) as u64 {
                return Err(CorruptBlock("truncated"));
            }
            packed.bits = &r.data[r.pos..r.pos + bytes as usize];
            r.pos += bytes as usize;
            let p = r.short_uvarint()?;
            if p > packed.count as u64 {
                return Err(CorruptBlock("bad count of patches"));
            }
            // Grown as read: each patch takes bytes of the block, a corrupt count no memory.
            let mut next: u64 = 0;
            for _ in 0..p {
                let position = next.saturating_add(r.short_uvarint()?);
                if position >= packed.count as u64 {
                    return Err(CorruptBlock("bad position of a patch"));
                }
                let delta = unzigzag(r.short_uvarint()?);
                if !(-MAX_DELTA..=MAX_DELTA).contains(&delta) {
                    return Err(CorruptBlock("packed delta out of range"));
                }
                packed.patches.push((position as usize, delta));
                next = position + 1;
            }
        }
        Ok(packed)
    }

    /// Calls `f` with each of the k scaled values, in order.
    fn for_each_value(&self, mut f: impl FnMut(i64)) {
        let mask = if self.width == 0 {
            0
        } else {
            u64::MAX >> (64 - self.width)
        };
        let mut m = self.first;
        f(m);
        // Bits not yet used, least significant first: at most 7 + 56 of them.
        let (mut acc, mut held, mut next_byte) = (0u64, 0u32, 0usize);
        let mut patches = self.patches.iter();
        let mut patch = patches.next();
        for i in 0..self.count {
            while held < self.width {
                acc |= u64::from(self.bits.get(next_byte).copied().unwrap_or(0)) << held;
                next_byte += 1;
                held += 8;
            }
            let u = acc & mask;
            acc >>= self.width;
            held -= self.width;
            let delta = match patch {
                Some(&(at, delta)) if at == i => {
                    patch = patches.next();
                    delta
                }
                _ => self.base.wrapping_add(unzigzag(u) << self.shift),
            };
            m = m.wrapping_add(delta);
            f(m);
        }
    }
}

/// `count` ascending positions below `limit`, each coded as its gap after the previous one.
fn read_positions(r: &mut Reader<'_>, count: u64, limit: u64, error: &'static str) -> Result<Vec<usize>, CorruptBlock> {
    // Grown as read: each position takes a byte of the block, a corrupt count no memory.
    let mut positions = Vec::new();
    let mut next: u64 = 0;
    for _ in 0..count {
        let position = next.saturating_add(r.short_uvarint()?);
        if position >= limit {
            return Err(CorruptBlock(error));
        }
        positions.push(position as usize);
        next = position + 1;
    }
    Ok(positions)
}

pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl Reader<'_> {
    pub(super) fn byte(&mut self) -> Result<u8, CorruptBlock> {
        let b = *self.data.get(self.pos).ok_or(CorruptBlock("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64, CorruptBlock> {
        self.varint_of(64)
    }

    fn zigzag(&mut self) -> Result<i64, CorruptBlock> {
        Ok(unzigzag(self.uvarint()?))
    }

    /// A varint of at most 9 bytes (63 bits), as the fields of packed runs are.
    pub(super) fn short_uvarint(&mut self) -> Result<u64, CorruptBlock> {
        self.varint_of(63)
    }

    /// A varint of at most `bits` bits' worth of 7-bit groups.
    fn varint_of(&mut self, bits: u32) -> Result<u64, CorruptBlock> {
        let mut x: u64 = 0;
        for shift in (0..bits).step_by(7) {
            let b = self.byte()?;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(CorruptBlock("varint too long"))
    }
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

pub(super) fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

pub(super) fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

pub(super) fn put_zigzag(out: &mut Vec<u8>, x: i64) {
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

    /// The scale byte of the only run of a one-run block.
    fn scale_byte(block: &Block) -> u8 {
        run_sizes(&block.data).unwrap()[0].scale
    }

    #[test]
    fn changing_values_are_bit_packed_in_the_bits_their_range_needs() {
        let times: Vec<i64> = (0..120).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // a gauge that moves in pages of 4096 bytes over a range of 10,000 pages: deltas
        // of 15 bits once their common 12 trailing zero bits are shifted out
        let memory: Vec<f64> = (0..120)
            .map(|_| (1_000_000_000 + (next() % 10_000) * 4096) as f64)
            .collect();
        let b = roundtrip(&[(1, times.clone(), memory)], false);
        assert_eq!(scale_byte(&b), PACKED_SCALE);
        assert!(b.data.len() <= 119 * 15 / 8 + 32, "{} bytes", b.data.len());
        // a counter with increments of 0 to 49: 6 bits a sample
        let mut total = 1000.0;
        let counter: Vec<f64> = (0..120)
            .map(|_| {
                total += (next() % 50) as f64;
                total
            })
            .collect();
        let b = roundtrip(&[(1, times.clone(), counter)], false);
        assert_eq!(scale_byte(&b), PACKED_SCALE);
        assert!(b.data.len() <= 119 * 6 / 8 + 24, "{} bytes", b.data.len());
        // decimals: a counter of centiseconds
        let mut seconds = 12.5;
        let cpu: Vec<f64> = (0..120)
            .map(|_| {
                seconds = ((seconds * 100.0_f64).round() + (next() % 1500) as f64) / 100.0;
                seconds
            })
            .collect();
        let b = roundtrip(&[(1, times.clone(), cpu)], false);
        assert_eq!(scale_byte(&b), PACKED_SCALE + 2);
        assert!(b.data.len() <= 119 * 11 / 8 + 28, "{} bytes", b.data.len());
        // a constant stays run-length coded
        let b = roundtrip(&[(1, times, vec![3.0; 120])], false);
        assert_eq!(scale_byte(&b), 0);
    }

    #[test]
    fn packed_runs_keep_their_exceptions_in_place() {
        let times: Vec<i64> = (0..40).map(|i| i * 15_000).collect();
        let mut values: Vec<f64> = (0..40).map(|i| (i * i * 37 % 1001) as f64).collect();
        values[0] = f64::NAN;
        values[17] = -0.0;
        values[18] = f64::INFINITY;
        values[39] = f64::from_bits(STALE);
        let b = roundtrip(
            &[
                (4, times.clone(), values.clone()),
                (9, times[..3].to_vec(), vec![1.0, f64::NAN, 2.0]),
                (12, times, values),
            ],
            false,
        );
        assert_eq!(b.exceptions.len(), 9);
        assert_eq!(
            run_sizes(&b.data)
                .unwrap()
                .iter()
                .map(|r| r.exceptions)
                .collect::<Vec<_>>(),
            vec![4, 1, 4]
        );
        let mut selected = Vec::new();
        decode_selected_into(&b.data, &b.exceptions, |s| s == 12, &mut selected).unwrap();
        assert_eq!(selected.len(), 40);
        assert_eq!(selected[39].2.to_bits(), STALE);
        assert_eq!(selected[17].2.to_bits(), (-0.0f64).to_bits());
        assert_eq!(selected[20].2, (400 * 37 % 1001) as f64);
    }

    #[test]
    fn packed_runs_take_the_widest_deltas_as_patches() {
        const EXACT: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
        let times: Vec<i64> = (0..60).map(|i| i * 15_000).collect();
        // swings across the whole exact range, then a counter, a reset and a spike
        let mut values: Vec<f64> = vec![EXACT, -EXACT, EXACT, -EXACT, EXACT];
        values.extend((0..55).map(|i| (i * 3 % 7 + i * 10) as f64));
        values[30] = 0.0;
        values[45] = -EXACT;
        let b = roundtrip(&[(2, times, values)], false);
        assert_eq!(scale_byte(&b), PACKED_SCALE);
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
        // Packed runs: a block of one run of 3 samples 1 ms apart, then the packed values.
        let packed = |values: &[u8]| [&[0u8, 1, 0, 3, 0, 4, 1, PACKED_SCALE][..], values].concat();
        let values = |data: &[u8]| decode(data, &[]).unwrap().iter().map(|s| s.2).collect::<Vec<_>>();
        assert_eq!(values(&packed(&[0, 2, 0, 0, 2, 8, 0])), vec![1.0, 1.0, 2.0]);
        assert_eq!(
            values(&packed(&[0, 2, 0, 0, 0, 1, 1, 20])),
            vec![1.0, 1.0, 11.0],
            "a patch"
        );
        for (values, error) in [
            (&[3u8, 0, 0, 0][..], "bad count of packed exceptions"),
            (&[1, 3, 2], "bad position of a packed exception"),
            (&[2, 1, 1], "bad position of a packed exception"),
            (&[0, 2, 0, 50, 7, 0], "bad width of packed values"),
            (&[0, 2, 0, 0, 9], "truncated"),
            (&[0, 2, 0, 0, 2], "truncated"),
            (&[0, 2, 0, 0, 2, 8, 0, 0], "trailing bytes"),
            (&[0, 2, 0, 0, 2, 8, 3], "bad count of patches"),
            (&[0, 2, 0, 0, 2, 8, 1, 2, 5], "bad position of a patch"),
            (&[1, 1, 2, 0, 0, 0, 0], "too few exceptions"),
            // values beyond ±(2^53 - 1), deltas beyond ±2^54, fields longer than 9 bytes
            (&[0, 128, 128, 128, 128, 128, 128, 128, 32], "packed value out of range"),
            (
                &[0, 2, 130, 128, 128, 128, 128, 128, 128, 64, 0, 0, 0],
                "packed delta out of range",
            ),
            (
                &[
                    0, 254, 255, 255, 255, 255, 255, 255, 31, 128, 128, 128, 128, 128, 128, 128, 64, 0, 0, 0,
                ],
                "packed value out of range",
            ),
            (
                &[0, 2, 0, 0, 0, 1, 0, 130, 128, 128, 128, 128, 128, 128, 64],
                "packed delta out of range",
            ),
            (&[128, 128, 128, 128, 128, 128, 128, 128, 128, 0], "varint too long"),
        ] {
            assert_eq!(decode(&packed(values), &[]), Err(CorruptBlock(error)), "{values:?}");
        }
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
