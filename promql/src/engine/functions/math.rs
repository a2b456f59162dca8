//! Per-element functions of instant vectors, as Prometheus 2.42's `promql/functions.go`
//! computes them with Go's `math` and `time` packages.
//!
//! Where Go composes a result from other operations (log2, log10, deg, rad, round, the
//! clamps), the same operations are done in the same order, and the natural logarithm is
//! Go's amd64 algorithm, so ln, log2 and log10 agree with Prometheus on amd64 to the bit.
//! The other elementary functions (exp, sin, cosh, ...) are Rust's; Go has its own
//! implementations (for exp even a CPU-dependent one), which differ from Rust's in the
//! last bit for some inputs.

use chrono::{Datelike, Duration, NaiveDate};

/// Per-element functions of instant vectors; None drops the element (e.g. clamp with min > max).
/// args: the call's scalar arguments after the vector (round: [] or [to_nearest];
/// clamp: [min, max]; clamp_min: [min]; clamp_max: [max]).
///
/// The date functions read `v` as Unix seconds the way Go's `time.Unix(int64(v), 0).UTC()`
/// does on amd64 (see [`go_float_to_int64`]), so NaN, ±Inf and values beyond ±2^63 all
/// map to the same far-future instant, 292277026596-12-04 15:30:08 UTC, as in Prometheus.
pub fn element_function(name: &str, v: f64, args: &[f64]) -> Option<f64> {
    let out = match name {
        "abs" => v.abs(),
        "ceil" => v.ceil(),
        "floor" => v.floor(),
        "exp" => v.exp(),
        "sqrt" => v.sqrt(),
        "ln" => crate::gomath::log(v),
        "log2" => crate::gomath::log2(v),
        "log10" => crate::gomath::log10(v),
        "sgn" => {
            // Zero and NaN are returned unchanged, keeping the sign of -0.
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        }
        "round" => {
            let to_nearest = args.first().copied().unwrap_or(1.0);
            // Prometheus divides by the inverse because it is more often exact in binary
            // (0.1 is not, 10 is).
            let inverse = 1.0 / to_nearest;
            (v * inverse + 0.5).floor() / inverse
        }
        "clamp" => {
            let (min, max) = (*args.first()?, *args.get(1)?);
            if max < min {
                return None;
            }
            go_max(min, go_min(max, v))
        }
        "clamp_min" => go_max(*args.first()?, v),
        "clamp_max" => go_min(*args.first()?, v),
        "acos" => v.acos(),
        "acosh" => v.acosh(),
        "asin" => v.asin(),
        "asinh" => v.asinh(),
        "atan" => v.atan(),
        "atanh" => v.atanh(),
        "cos" => v.cos(),
        "cosh" => v.cosh(),
        "sin" => v.sin(),
        "sinh" => v.sinh(),
        "tan" => v.tan(),
        "tanh" => v.tanh(),
        "deg" => v * 180.0 / std::f64::consts::PI,
        "rad" => v * std::f64::consts::PI / 180.0,
        "day_of_month" => GoTime::unix(v).day() as f64,
        "day_of_week" => GoTime::unix(v).weekday() as f64,
        "day_of_year" => GoTime::unix(v).day_of_year() as f64,
        "days_in_month" => GoTime::unix(v).days_in_month() as f64,
        "hour" => GoTime::unix(v).hour() as f64,
        "minute" => GoTime::unix(v).minute() as f64,
        "month" => GoTime::unix(v).month() as f64,
        "year" => GoTime::unix(v).year() as f64,
        _ => return None,
    };
    Some(out)
}

/// Go's `math.Max`: +Inf wins over NaN, NaN over everything else, and +0 over -0. Rust's
/// `f64::max` instead ignores NaN.
fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && x == y {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN over everything else, and -0 over +0.
fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && x == y {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else if x < y {
        x
    } else {
        y
    }
}

/// Go's float64 to int64 conversion as compiled for amd64 (CVTTSD2SQ), where Prometheus
/// is mostly run: truncation toward zero, and the "integer indefinite" value i64::MIN for
/// NaN, infinities and anything out of range. (On arm64 Go saturates instead and maps NaN
/// to 0; Rust's `as` does the same as arm64, hence this function.)
fn go_float_to_int64(v: f64) -> i64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if v.is_nan() || !(-TWO_63..TWO_63).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

const SECONDS_PER_DAY: u64 = 86_400;
const DAYS_PER_400_YEARS: u64 = 146_097;
/// Go's `absoluteZeroYear`: Go counts time from this year (≡ 1 mod 400) in an unsigned
/// 64-bit second counter, which is where its wrap-around for huge Unix times comes from.
const ABSOLUTE_ZERO_YEAR: i64 = -292_277_022_399;
/// Go's `unixToInternal + internalToAbsolute`: Unix seconds to absolute seconds.
const UNIX_TO_ABSOLUTE: i64 = 62_135_596_800 + 9_223_371_966_579_724_800;

/// A UTC instant as Go's `time.Time` computes its calendar fields: from seconds since
/// Jan 1 of [`ABSOLUTE_ZERO_YEAR`], modulo 2^64. For every Unix time chrono can represent
/// this agrees with chrono; beyond that it reproduces Go's wrapped dates.
struct GoTime {
    abs: u64,
}

/// The calendar date of an absolute second count.
struct GoDate {
    year: i64,
    month: u32,
    day: u32,
    day_of_year: u32,
}

impl GoTime {
    /// Go's `time.Unix(int64(v), 0).UTC()`.
    fn unix(v: f64) -> GoTime {
        let sec = go_float_to_int64(v);
        GoTime {
            abs: sec.wrapping_add(UNIX_TO_ABSOLUTE) as u64,
        }
    }

    fn date(&self) -> GoDate {
        absolute_date(self.abs)
    }

    fn year(&self) -> i64 {
        self.date().year
    }

    fn month(&self) -> u32 {
        self.date().month
    }

    fn day(&self) -> u32 {
        self.date().day
    }

    fn day_of_year(&self) -> u32 {
        self.date().day_of_year
    }

    fn hour(&self) -> u64 {
        self.abs % SECONDS_PER_DAY / 3600
    }

    fn minute(&self) -> u64 {
        self.abs % 3600 / 60
    }

    /// Sunday = 0. The absolute epoch is a Monday; Go adds a day's seconds without
    /// overflow checks, so wrap as it does.
    fn weekday(&self) -> u64 {
        self.abs.wrapping_add(SECONDS_PER_DAY) % (7 * SECONDS_PER_DAY) / SECONDS_PER_DAY
    }

    /// Prometheus' `32 - time.Date(year, month, 32, ...).Day()`: day 32 normalises into
    /// the next month, 31 days after the first of this one.
    fn days_in_month(&self) -> u32 {
        let date = self.date();
        let first_of_month = self.abs - self.abs % SECONDS_PER_DAY - u64::from(date.day - 1) * SECONDS_PER_DAY;
        let day_32 = first_of_month.wrapping_add(31 * SECONDS_PER_DAY);
        32 - absolute_date(day_32).day
    }
}

/// Go's `absDate`, with chrono supplying the calendar within one 400-year cycle (which
/// repeats exactly, weekdays included, since 146097 days are whole weeks).
fn absolute_date(abs: u64) -> GoDate {
    let days = abs / SECONDS_PER_DAY;
    let cycles = days / DAYS_PER_400_YEARS;
    let in_cycle = days % DAYS_PER_400_YEARS;
    let cycle_start = NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date");
    let date = cycle_start + Duration::days(in_cycle as i64);
    GoDate {
        year: ABSOLUTE_ZERO_YEAR + 400 * cycles as i64 + i64::from(date.year() - 1),
        month: date.month(),
        day: date.day(),
        day_of_year: date.ordinal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, v: f64) -> f64 {
        element_function(name, v, &[]).unwrap()
    }

    fn same(got: f64, want: f64) -> bool {
        (got.is_nan() && want.is_nan()) || (got == want && got.is_sign_negative() == want.is_sign_negative())
    }

    #[test]
    fn exp_ln_sqrt_from_the_test_scripts() {
        assert_eq!(f("exp", 10.0), 22026.465794806718);
        assert_eq!(f("exp", 20.0), 485165195.4097903);
        assert_eq!(f("exp", -10.0), 4.5399929762484854e-05);
        assert_eq!(f("exp", 0.0), 1.0);
        // functions.test: 2.302585092994046, which is LN_10.
        assert_eq!(f("ln", 10.0), std::f64::consts::LN_10);
        assert_eq!(f("ln", 20.0), 2.995732273553991);
        assert_eq!(f("ln", 0.0), f64::NEG_INFINITY);
        assert_eq!(f("ln", -0.0), f64::NEG_INFINITY);
        assert_eq!(f("ln", f64::INFINITY), f64::INFINITY);
        assert!(f("ln", f64::NAN).is_nan());
        assert!(f("ln", f64::NEG_INFINITY).is_nan());
        assert!(f("ln", -10.0).is_nan());
        assert_eq!(f("sqrt", 10.0), 3.1622776601683795);
        assert_eq!(f("sqrt", 20.0), 4.47213595499958);
        assert!(f("sqrt", -1.0).is_nan());
    }

    #[test]
    fn ln_is_gos_amd64_algorithm() {
        // Values from Go 1.26 on amd64, where the system ln gives -4.605170185988091 and
        // -0.5447271754416722 for the first two.
        assert_eq!(f("ln", 0.01), -4.605170185988092);
        assert_eq!(f("ln", 0.58), -0.544727175441672);
        assert_eq!(f("ln", std::f64::consts::FRAC_1_SQRT_2), -0.3465735902799726);
        // Go's assembly misreads subnormals.
        assert_eq!(f("ln", 5e-324), -709.0895657128241);
    }

    #[test]
    fn log2_and_log10_as_go_computes_them() {
        // Go 1.26 on amd64 gives 3.321928094887362 = LOG2_10 for log2(10); functions.test
        // writes 3.3219280948873626, one bit above, which its tolerance of 1e-6 accepts.
        assert_eq!(f("log2", 10.0), std::f64::consts::LOG2_10);
        assert_eq!(f("log2", 20.0), 4.321928094887363);
        assert_eq!(f("log2", 8.0), 3.0);
        assert_eq!(f("log2", 0.5), -1.0);
        assert_eq!(f("log2", 0.0), f64::NEG_INFINITY);
        assert_eq!(f("log2", f64::INFINITY), f64::INFINITY);
        assert!(f("log2", -10.0).is_nan());
        assert!(f("log2", -8.0).is_nan());
        assert!(f("log2", f64::NAN).is_nan());
        // The smallest subnormal is 2^-1074.
        assert_eq!(f("log2", f64::from_bits(1)), -1074.0);

        assert_eq!(f("log10", 10.0), 1.0);
        assert_eq!(f("log10", 20.0), 1.301029995663981);
        assert_eq!(f("log10", 1000.0), 3.0);
        assert_eq!(f("log10", 0.0), f64::NEG_INFINITY);
        assert!(f("log10", -1.0).is_nan());
    }

    #[test]
    fn frexp_matches_go() {
        assert_eq!(crate::gomath::frexp(8.0), (0.5, 4));
        assert_eq!(crate::gomath::frexp(10.0), (0.625, 4));
        assert_eq!(crate::gomath::frexp(-3.0), (-0.75, 2));
        assert_eq!(crate::gomath::frexp(f64::MIN_POSITIVE), (0.5, -1021));
        assert_eq!(crate::gomath::frexp(f64::from_bits(3)), (0.75, -1072));
        assert_eq!(crate::gomath::frexp(0.0), (0.0, 0));
    }

    #[test]
    fn sgn_keeps_zero_and_nan() {
        assert_eq!(f("sgn", f64::NEG_INFINITY), -1.0);
        assert_eq!(f("sgn", f64::INFINITY), 1.0);
        assert_eq!(f("sgn", -50.0), -1.0);
        assert_eq!(f("sgn", 100.0), 1.0);
        assert!(same(f("sgn", 0.0), 0.0));
        assert!(same(f("sgn", -0.0), -0.0));
        assert!(f("sgn", f64::NAN).is_nan());
    }

    #[test]
    fn round_to_nearest() {
        let round = |v: f64, args: &[f64]| element_function("round", v, args).unwrap();
        assert_eq!(round(2.5, &[]), 3.0);
        // Ties go up, also for negative numbers.
        assert_eq!(round(-2.5, &[]), -2.0);
        assert_eq!(round(-2.6, &[]), -3.0);
        assert_eq!(round(1.25, &[0.1]), 1.3);
        assert_eq!(round(1.234, &[0.1]), 1.2);
        assert_eq!(round(0.05, &[0.1]), 0.1);
        assert_eq!(round(17.0, &[5.0]), 15.0);
        assert_eq!(round(17.5, &[5.0]), 20.0);
        assert_eq!(round(1234.0, &[100.0]), 1200.0);
        // floor(-0.4 + 0.5) is +0: small negatives do not round to -0.
        assert!(same(round(-0.4, &[]), 0.0));
        assert!(same(round(-0.0, &[]), 0.0));
        assert!(round(f64::NAN, &[]).is_nan());
        assert_eq!(round(f64::INFINITY, &[]), f64::INFINITY);
        // Rounding to 0 multiplies by +Inf.
        assert!(round(1.5, &[0.0]).is_nan());
    }

    #[test]
    fn clamps_from_the_test_scripts() {
        let values = [-50.0, 0.0, 100.0];
        let apply = |name: &str, args: &[f64]| -> Vec<Option<f64>> {
            values.iter().map(|&v| element_function(name, v, args)).collect()
        };
        assert_eq!(apply("clamp_max", &[75.0]), [Some(-50.0), Some(0.0), Some(75.0)]);
        assert_eq!(apply("clamp_min", &[-25.0]), [Some(-25.0), Some(0.0), Some(100.0)]);
        assert_eq!(apply("clamp", &[-25.0, 75.0]), [Some(-25.0), Some(0.0), Some(75.0)]);
        assert_eq!(apply("clamp", &[5.0, -5.0]), [None, None, None]);
        for args in [[0.0, f64::NAN], [f64::NAN, 0.0]] {
            for got in apply("clamp", &args) {
                assert!(got.unwrap().is_nan(), "clamp(_, {args:?})");
            }
        }
    }

    #[test]
    fn clamps_follow_go_nan_and_infinity_rules() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        // NaN input stays NaN, where Rust's f64::max would pick the bound.
        assert!(element_function("clamp_min", nan, &[0.0]).unwrap().is_nan());
        assert!(element_function("clamp_max", nan, &[0.0]).unwrap().is_nan());
        assert!(element_function("clamp", nan, &[0.0, 1.0]).unwrap().is_nan());
        // Infinities beat NaN in Go: Max(NaN, +Inf) = +Inf, Min(NaN, -Inf) = -Inf.
        assert_eq!(element_function("clamp_min", inf, &[nan]), Some(inf));
        assert_eq!(element_function("clamp_max", -inf, &[nan]), Some(-inf));
        // clamp(-Inf, 0, NaN) = Max(0, Min(NaN, -Inf)) = Max(0, -Inf) = 0.
        assert_eq!(element_function("clamp", -inf, &[0.0, nan]), Some(0.0));
        // Signed zeros: Max prefers +0, Min prefers -0.
        assert!(same(element_function("clamp_min", -0.0, &[0.0]).unwrap(), 0.0));
        assert!(same(element_function("clamp_max", 0.0, &[-0.0]).unwrap(), -0.0));
        // Missing arguments drop the element rather than panic.
        assert_eq!(element_function("clamp", 1.0, &[0.0]), None);
    }

    #[test]
    fn trigonometry() {
        let pi = std::f64::consts::PI;
        assert_eq!(f("deg", pi), 180.0);
        assert_eq!(f("rad", 180.0), pi);
        assert_eq!(f("deg", 1.0), 57.29577951308232);
        assert_eq!(f("sin", 0.0), 0.0);
        assert_eq!(f("cos", 0.0), 1.0);
        assert_eq!(f("tan", 0.0), 0.0);
        assert_eq!(f("asin", 1.0), pi / 2.0);
        assert_eq!(f("acos", 1.0), 0.0);
        assert_eq!(f("atan", f64::INFINITY), pi / 2.0);
        assert_eq!(f("sinh", 0.0), 0.0);
        assert_eq!(f("cosh", 0.0), 1.0);
        assert_eq!(f("tanh", f64::INFINITY), 1.0);
        assert_eq!(f("asinh", 0.0), 0.0);
        assert_eq!(f("acosh", 1.0), 0.0);
        assert_eq!(f("atanh", 1.0), f64::INFINITY);
        assert!(f("acosh", 0.5).is_nan());
        assert!(f("asin", 2.0).is_nan());
        assert!((f("sin", pi / 6.0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn date_functions_from_the_test_scripts() {
        // 2006-01-02 22:04:05 UTC, a Monday.
        let t = 1136239445.0;
        assert_eq!(f("year", t), 2006.0);
        assert_eq!(f("month", t), 1.0);
        assert_eq!(f("day_of_month", t), 2.0);
        assert_eq!(f("day_of_year", t), 2.0);
        assert_eq!(f("day_of_week", t), 1.0);
        assert_eq!(f("hour", t), 22.0);
        assert_eq!(f("minute", t), 4.0);
        // The epoch: a Thursday.
        assert_eq!(f("year", 0.0), 1970.0);
        assert_eq!(f("day_of_week", 0.0), 4.0);
        assert_eq!(f("days_in_month", 0.0), 31.0);
        // Around the 2008 leap second.
        assert_eq!(f("year", 1230767999.0), 2008.0);
        assert_eq!(f("year", 1230768000.0), 2009.0);
        // Leap years.
        assert_eq!(f("month", 1456790399.0) + f("day_of_month", 1456790399.0) / 100.0, 2.29);
        assert_eq!(f("month", 1456790400.0) + f("day_of_month", 1456790400.0) / 100.0, 3.01);
        assert_eq!(f("day_of_year", 1483191420.0), 366.0);
        assert_eq!(f("day_of_year", 1672493820.0), 365.0);
        assert_eq!(f("days_in_month", 1454284800.0), 29.0);
        assert_eq!(f("days_in_month", 1485907200.0), 28.0);
        assert_eq!(f("days_in_month", 951782400.0), 29.0); // Feb 2000, divisible by 400.
        assert_eq!(f("days_in_month", 4105123200.0), 28.0); // Feb 2100, not a leap year.
        assert_eq!(f("days_in_month", 1669852800.0), 31.0); // Dec 2022.
    }

    #[test]
    fn date_functions_truncate_fractions_toward_zero() {
        // 59.9 s is still minute 0; -0.5 s truncates to 0, not to -1 (which would be 1969).
        assert_eq!(f("minute", 59.9), 0.0);
        assert_eq!(f("year", -0.5), 1970.0);
        assert_eq!(f("year", -1.0), 1969.0);
        assert_eq!(f("day_of_week", -1.0), 3.0);
        assert_eq!(f("hour", -1.0), 23.0);
        // Before the common era: 0000-12-31 (year 0 exists in Go's proleptic calendar).
        let year_zero_end = -62135596801.0;
        assert_eq!(f("year", year_zero_end), 0.0);
        assert_eq!(f("day_of_year", year_zero_end), 366.0);
    }

    #[test]
    fn date_functions_agree_with_chrono_in_its_range() {
        use chrono::{DateTime, Timelike};
        let mut t: i64 = -8_000_000_000_000;
        while t < 8_000_000_000_000 {
            let d = DateTime::from_timestamp(t, 0).unwrap();
            let v = t as f64;
            assert_eq!(f("year", v), f64::from(d.year()), "{t}");
            assert_eq!(f("month", v), f64::from(d.month()), "{t}");
            assert_eq!(f("day_of_month", v), f64::from(d.day()), "{t}");
            assert_eq!(f("day_of_year", v), f64::from(d.ordinal()), "{t}");
            assert_eq!(
                f("day_of_week", v),
                f64::from(d.weekday().num_days_from_sunday()),
                "{t}"
            );
            assert_eq!(f("hour", v), f64::from(d.hour()), "{t}");
            assert_eq!(f("minute", v), f64::from(d.minute()), "{t}");
            t += 9_876_543_211;
        }
    }

    #[test]
    fn date_functions_of_nan_and_infinities_wrap_like_go() {
        // Go on amd64 turns these into int64 min, and time.Unix of that wraps to
        // 292277026596-12-04 15:30:08 UTC (a Sunday): one second after the well-known
        // time.Unix(math.MaxInt64, 0) = 292277026596-12-04 15:30:07.
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e19, -1e19] {
            assert_eq!(f("year", v), 292277026596.0, "{v}");
            assert_eq!(f("month", v), 12.0);
            assert_eq!(f("day_of_month", v), 4.0);
            assert_eq!(f("hour", v), 15.0);
            assert_eq!(f("minute", v), 30.0);
            assert_eq!(f("days_in_month", v), 31.0);
            assert_eq!(f("day_of_year", v), 339.0);
            assert_eq!(f("day_of_week", v), 0.0);
        }
        let max = GoTime {
            abs: i64::MAX.wrapping_add(UNIX_TO_ABSOLUTE) as u64,
        };
        assert_eq!((max.year(), max.month(), max.day()), (292277026596, 12, 4));
        assert_eq!((max.hour(), max.minute(), max.abs % 60), (15, 30, 7));
    }

    #[test]
    fn go_float_to_int64_is_amd64s() {
        assert_eq!(go_float_to_int64(1.9), 1);
        assert_eq!(go_float_to_int64(-1.9), -1);
        assert_eq!(go_float_to_int64(f64::NAN), i64::MIN);
        assert_eq!(go_float_to_int64(9.3e18), i64::MIN);
        assert_eq!(go_float_to_int64(-9_223_372_036_854_775_808.0), i64::MIN);
        assert_eq!(
            go_float_to_int64(9_223_372_036_854_774_784.0),
            9_223_372_036_854_774_784
        );
    }

    #[test]
    fn unknown_names_drop_the_element() {
        assert_eq!(element_function("no_such_function", 1.0, &[]), None);
        assert_eq!(element_function("rate", 1.0, &[]), None);
    }
}
