//! Go's float functions as Prometheus computes with them: its `math.Log` as the amd64
//! assembly runs it, `Log2`, `Log10`, `Exp2`, `Frexp` and `Ldexp`, operation for operation.
//! The C library's functions are correctly rounded more often; Prometheus' answers are
//! not, and PromQL's must be Prometheus' to the bit. Used by the functions of one value
//! (`ln`, `log2`, `log10`), `min_of` and `max_of`, and by the native histogram arithmetic
//! ([`crate::histogram`]).

const SMALLEST_NORMAL: f64 = f64::MIN_POSITIVE;
const EXP_MASK: u64 = 0x7ff;
const EXP_SHIFT: u32 = 52;
const EXP_BIAS: i64 = 1023;

/// ln 2 split into a high part with trailing zero bits (0x3fe62e42fee00000) and the rest
/// (0x3dea39ef35793c76), as fdlibm splits it.
const LN2_HI: f64 = 0.6931471803691238;
const LN2_LO: f64 = 1.9082149292705877e-10;

/// The larger of two values, as Go's `math.Max`: +Inf wins over NaN, NaN over the rest, and
/// +0 over -0 (Rust's `f64::max` ignores NaN).
pub(crate) fn max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        return f64::INFINITY;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 && x == y {
        return if x.is_sign_negative() { y } else { x };
    }
    if x > y {
        x
    } else {
        y
    }
}

/// The smaller of two values, as Go's `math.Min`: -Inf wins over NaN, NaN over the rest, and
/// -0 over +0.
pub(crate) fn min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 && x == y {
        return if x.is_sign_negative() { x } else { y };
    }
    if x < y {
        x
    } else {
        y
    }
}

/// Splits `f` into a fraction in [0.5, 1) and a power of two, as Go's `math.Frexp`.
pub(crate) fn frexp(f: f64) -> (f64, i64) {
    if f == 0.0 || !f.is_finite() {
        return (f, 0);
    }
    let (f, mut exp) = if f.abs() < SMALLEST_NORMAL {
        (f * (1u64 << 52) as f64, -52)
    } else {
        (f, 0)
    };
    let mut bits = f.to_bits();
    exp += ((bits >> EXP_SHIFT) & EXP_MASK) as i64 - EXP_BIAS + 1;
    bits &= !(EXP_MASK << EXP_SHIFT);
    bits |= ((EXP_BIAS - 1) as u64) << EXP_SHIFT;
    (f64::from_bits(bits), exp)
}

/// `frac × 2^exp`, correctly rounded also into the subnormal range, as Go's `math.Ldexp`.
pub(crate) fn ldexp(frac: f64, exp: i64) -> f64 {
    if frac == 0.0 || !frac.is_finite() {
        return frac;
    }
    let (frac, e) = if frac.abs() < SMALLEST_NORMAL {
        (frac * (1u64 << 52) as f64, -52)
    } else {
        (frac, 0)
    };
    let mut bits = frac.to_bits();
    let mut exp = exp
        .saturating_add(e)
        .saturating_add(((bits >> EXP_SHIFT) & EXP_MASK) as i64 - EXP_BIAS);
    if exp < -1075 {
        return 0.0f64.copysign(frac);
    }
    if exp > 1023 {
        return if frac < 0.0 { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    let mut m = 1.0;
    if exp < -1022 {
        exp += 53;
        m = 1.0 / (1u64 << 53) as f64;
    }
    bits &= !(EXP_MASK << EXP_SHIFT);
    bits |= ((exp + EXP_BIAS) as u64) << EXP_SHIFT;
    m * f64::from_bits(bits)
}

/// Go's `math.Log` as its amd64 assembly computes it (FreeBSD's `e_log.c` algorithm,
/// operation for operation). It is not always correctly rounded, unlike the system `ln`:
/// ln(0.01) is -4.605170185988092 in Go, -4.605170185988091 correctly rounded. Like the
/// assembly, it reads the exponent field without normalising subnormals first, so
/// subnormal inputs give a wrong result (ln(5e-324) = -709.09 rather than -744.44);
/// Prometheus on amd64 shows the same.
pub(crate) fn log(x: f64) -> f64 {
    // The assembly's constants, by bit pattern.
    const HALF_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const L1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
    const L2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
    const L3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
    const L4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
    const L5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
    const L6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
    const L7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);

    let bits = x.to_bits();
    if bits & !(1 << 63) == 0 {
        return f64::NEG_INFINITY;
    }
    if (bits as i64) < 0 {
        return f64::NAN;
    }
    if bits >= f64::INFINITY.to_bits() {
        return x;
    }
    let mut f1 = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0.5f64.to_bits());
    let mut k = (((bits >> 52) & 0x7ff) as i32 - 0x3fe) as f64;
    // The assembly's comparison is "not less than" with the operands swapped: f1 <= √2/2.
    if f1 <= HALF_SQRT_2 {
        k -= 1.0;
        f1 *= 2.0;
    }
    let f = f1 - 1.0;
    let s = f / (2.0 + f);
    let s2 = s * s;
    let s4 = s2 * s2;
    let t1 = s2 * (L1 + s4 * (L3 + s4 * (L5 + s4 * L7)));
    let t2 = s4 * (L2 + s4 * (L4 + s4 * L6));
    let r = t1 + t2;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// Go's `math.Log2`: exact for powers of two, otherwise ln of the mantissa scaled plus the
/// exponent.
pub(crate) fn log2(x: f64) -> f64 {
    let (frac, exp) = frexp(x);
    if frac == 0.5 {
        return (exp - 1) as f64;
    }
    log(frac) * std::f64::consts::LOG2_E + exp as f64
}

/// Go's `math.Log10`: ln scaled, rather than a dedicated log10.
pub(crate) fn log10(x: f64) -> f64 {
    log(x) * std::f64::consts::LOG10_E
}

/// `2^x` with the algorithm of Go's `math.Exp2` (the portable one, used on amd64).
pub(crate) fn exp2(x: f64) -> f64 {
    const OVERFLOW: f64 = 1023.9999999999999;
    const UNDERFLOW: f64 = -1074.0;
    // fdlibm's exponential polynomial (bits 0x3fc5555555555555, ...).
    const P1: f64 = 0.16666666666666666;
    const P2: f64 = -0.0027777777777015593;
    const P3: f64 = 6.613756321437934e-05;
    const P4: f64 = -1.6533902205465252e-06;
    const P5: f64 = 4.1381367970572385e-08;
    if x.is_nan() {
        return x;
    }
    if x > OVERFLOW {
        return f64::INFINITY;
    }
    if x < UNDERFLOW {
        return 0.0;
    }
    // Round half away from zero, then truncate (the float-to-int conversion truncates).
    let k: i64 = if x > 0.0 {
        (x + 0.5) as i64
    } else if x < 0.0 {
        (x - 0.5) as i64
    } else {
        0
    };
    let t = x - k as f64;
    let hi = t * LN2_HI;
    let lo = -t * LN2_LO;
    let r = hi - lo;
    let tt = r * r;
    let c = r - tt * (P1 + tt * (P2 + tt * (P3 + tt * (P4 + tt * P5))));
    let y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    ldexp(y, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_min_answer_as_go_does_where_rust_differs() {
        // Rust's f64::max and f64::min drop a NaN; Go's keep it, unless an infinity wins.
        assert!(max(f64::NAN, 3.0).is_nan() && max(3.0, f64::NAN).is_nan());
        assert!(min(f64::NAN, 3.0).is_nan() && min(3.0, f64::NAN).is_nan());
        assert_eq!(max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert_eq!(min(f64::NEG_INFINITY, f64::NAN), f64::NEG_INFINITY);
        // Signed zeros: +0 is the larger, -0 the smaller, in either order.
        assert!(max(-0.0, 0.0).is_sign_positive() && max(0.0, -0.0).is_sign_positive());
        assert!(min(-0.0, 0.0).is_sign_negative() && min(0.0, -0.0).is_sign_negative());
        assert_eq!((max(-2.0, -5.0), min(-2.0, -5.0)), (-2.0, -5.0));
    }
}
