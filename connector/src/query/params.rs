//! Request parameters of the HTTP API, parsed the way Prometheus parses them, except that
//! times and durations that do not fit in `i64` milliseconds are refused rather than wrapped.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use chrono::DateTime;

/// Parameters from the URL and, for form-encoded POSTs, the body; repeated keys kept.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, Vec<String>>);

impl Params {
    pub fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        let mut add = |bytes: &[u8]| {
            for (k, v) in form_urlencoded::parse(bytes) {
                params.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        };
        if let Some(q) = query {
            add(q.as_bytes());
        }
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            add(body);
        }
        Params(params)
    }

    /// The first value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A time as Unix seconds (with a fraction) or RFC 3339, in milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(seconds) = s.parse::<f64>() {
        if seconds.is_finite() {
            let whole = seconds.trunc();
            // Prometheus rounds the fraction to milliseconds.
            let millis = ((seconds - whole) * 1000.0).round();
            // `as` saturates: a time beyond i64 seconds fails the multiplication.
            return (whole as i64)
                .checked_mul(1000)
                .and_then(|ms| ms.checked_add(millis as i64))
                .ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp. It overflows int64"));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    Err(format!("cannot parse {s:?} to a valid timestamp"))
}

/// The `limit` of the series, labels, label values and query endpoints, as Prometheus 3
/// reads it: absent or empty is no limit (0), otherwise a non-negative integer.
pub fn parse_limit(s: Option<&str>) -> Result<usize, String> {
    let Some(s) = s else { return Ok(0) };
    // Go's strconv.Atoi: an optional sign, then decimal digits.
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {s:?}: invalid syntax"));
    }
    let n: i64 = s
        .parse()
        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: value out of range"))?;
    usize::try_from(n).map_err(|_| "limit must be non-negative".to_string())
}

/// A duration as seconds (with a fraction) or as Prometheus writes them (`1h30m`, `15s`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("cannot parse {s:?} to a valid duration");
    if let Ok(seconds) = s.parse::<f64>() {
        let ms = seconds * 1000.0;
        if !ms.is_finite() || ms >= i64::MAX as f64 || ms <= i64::MIN as f64 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms.round() as i64);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    // Largest unit first; each at most once and in this order, as model.ParseDuration requires.
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let (mut total, mut rest, mut next_rank) = (0i64, s, 0);
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let n: i64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let rank = if rest.starts_with("ms") {
            6
        } else {
            UNITS
                .iter()
                .position(|(u, _)| rest.starts_with(u))
                .ok_or_else(invalid)?
        };
        if rank < next_rank {
            return Err(invalid());
        }
        next_rank = rank + 1;
        let (unit, ms) = UNITS[rank];
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        rest = &rest[unit.len()..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_are_read_as_prometheus_reads_them() {
        assert_eq!(parse_limit(None), Ok(0));
        assert_eq!(parse_limit(Some("0")), Ok(0));
        assert_eq!(parse_limit(Some("+7")), Ok(7));
        assert_eq!(parse_limit(Some("-1")), Err("limit must be non-negative".to_string()));
        assert_eq!(
            parse_limit(Some("1.5")),
            Err("strconv.Atoi: parsing \"1.5\": invalid syntax".to_string())
        );
        assert_eq!(
            parse_limit(Some("99999999999999999999")),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".to_string())
        );
    }

    use super::*;

    #[test]
    fn times_as_prometheus_reads_them() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Ok(1_435_781_451_000));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert!(parse_time("yesterday").unwrap_err().contains("valid timestamp"));
        assert_eq!(parse_time("-9e15"), Ok(-9_000_000_000_000_000_000));
        assert!(parse_time("1e16").unwrap_err().contains("overflows"));
        assert!(parse_time("-1e300").unwrap_err().contains("overflows"));
    }

    #[test]
    fn durations_as_prometheus_writes_them() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1m"), Ok(60_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1d2h3m4s5ms"), Ok(93_784_005));
        assert_eq!(parse_duration("2w"), Ok(1_209_600_000));
        assert!(parse_duration("30m1h").is_err(), "units out of order");
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}

/// A label name from a URL path (`/api/v1/label/<name>/values`): Prometheus 3 lets clients
/// write a name that is awkward in a path (a `/`, say) in its "values" escaping, `U__`
/// followed by the name with `_` written `__` and any other character that is not a legacy
/// name character written as its code point in hex between underscores (`U__http_2e_route`
/// is `http.route`). A name that does not decode is taken as written, as Prometheus does.
pub fn unescape_label_name(name: &str) -> String {
    let Some(escaped) = name.strip_prefix("U__") else {
        return name.to_string();
    };
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        let mut code: u32 = 0;
        let mut digits = 0;
        loop {
            match chars.next() {
                Some('_') if digits == 0 => {
                    out.push('_');
                    break;
                }
                Some('_') => match char::from_u32(code) {
                    Some(decoded) => {
                        out.push(decoded);
                        break;
                    }
                    None => return name.to_string(),
                },
                // At most five hex digits, as Prometheus' decoder reads them.
                Some(h) if digits < 5 && h.is_ascii_hexdigit() => {
                    code = code * 16 + h.to_digit(16).expect("a hex digit");
                    digits += 1;
                }
                _ => return name.to_string(),
            }
        }
    }
    out
}

#[cfg(test)]
mod label_name_tests {
    use super::unescape_label_name;

    #[test]
    fn values_escaping_decodes_as_prometheus_3_does() {
        for (path, name) in [
            ("job", "job"),
            ("http.route", "http.route"),
            ("U__http_2e_route", "http.route"),
            ("U__service_2e_name", "service.name"),
            ("U__my__label", "my_label"),
            ("U__a_2f_b", "a/b"),
            ("U__caf_e9_", "café"),
            ("U__smile_1F600_", "smile\u{1F600}"),
            ("U__a_10FFF_", "a\u{10fff}"),
            ("U__", ""),
            // What does not decode is taken as written.
            ("U__a_2e", "U__a_2e"),
            ("U__a_zz_", "U__a_zz_"),
            ("U__a_", "U__a_"),
            ("U__a_1234567_", "U__a_1234567_"),
            ("U__a_0000e9_", "U__a_0000e9_"),
            ("U__a_10ffff_", "U__a_10ffff_"),
            ("U__a_d800_", "U__a_d800_"),
            ("U__a_110000_", "U__a_110000_"),
        ] {
            assert_eq!(unescape_label_name(path), name, "{path}");
        }
    }
}
