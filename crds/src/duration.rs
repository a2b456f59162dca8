//! Durations as Prometheus users write them (`90d`, `1h30m`, `2y`), for retention periods and
//! chunk intervals.
//!
//! The units stop at minutes: the database refuses retention periods and chunk intervals under
//! one minute, so the schema refuses them too, with a message, at `kubectl apply` time.

use std::fmt;

/// The CEL rule (and its message) every policy duration field carries.
pub const CEL_RULE: &str = "self.matches('^([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?$') \
     && self != '' && !self.matches('^(0+[ywdhm])+$')";
pub const CEL_MESSAGE: &str =
    "must be a duration of at least 1m written with the units y, w, d, h and m in that order, e.g. 90d, 2w, 1h30m";

/// A parsed duration, split the way PostgreSQL intervals are so that `90d` is stored as
/// `90 days` rather than `2160:00:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDuration {
    pub days: i32,
    pub minutes: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {CEL_MESSAGE}", self.0)
    }
}

impl std::error::Error for DurationError {}

impl MetricDuration {
    /// Parses the same language the CEL rule accepts; a year is 365 days and a week 7, as in
    /// Prometheus.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let err = || DurationError(text.to_string());
        let mut days: i64 = 0;
        let mut minutes: i64 = 0;
        let mut rest = text;
        let mut last_unit = 0; // index into UNITS: each unit at most once, in order
        const UNITS: [(char, i64, bool); 5] = [
            ('y', 365, true),
            ('w', 7, true),
            ('d', 1, true),
            ('h', 60, false),
            ('m', 1, false),
        ];
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let number: i64 = rest[..digits].parse().map_err(|_| err())?;
            let unit = rest[digits..].chars().next().ok_or_else(err)?;
            let position = UNITS.iter().position(|(u, _, _)| *u == unit).ok_or_else(err)?;
            if position < last_unit {
                return Err(err());
            }
            last_unit = position + 1;
            let (_, factor, is_days) = UNITS[position];
            let value = number.checked_mul(factor).ok_or_else(err)?;
            if is_days {
                days = days.checked_add(value).ok_or_else(err)?;
            } else {
                minutes = minutes.checked_add(value).ok_or_else(err)?;
            }
            rest = &rest[digits + 1..];
        }
        if days == 0 && minutes == 0 {
            return Err(err());
        }
        Ok(MetricDuration {
            days: i32::try_from(days).map_err(|_| err())?,
            minutes: i32::try_from(minutes).map_err(|_| err())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_style_durations_into_days_and_minutes() {
        assert_eq!(
            MetricDuration::parse("90d"),
            Ok(MetricDuration { days: 90, minutes: 0 })
        );
        assert_eq!(
            MetricDuration::parse("1y2w3d4h5m"),
            Ok(MetricDuration {
                days: 365 + 14 + 3,
                minutes: 245
            })
        );
        assert_eq!(
            MetricDuration::parse("1h30m"),
            Ok(MetricDuration { days: 0, minutes: 90 })
        );
        assert_eq!(
            MetricDuration::parse("36h"),
            Ok(MetricDuration { days: 0, minutes: 2160 })
        );
    }

    #[test]
    fn refuses_what_the_schema_refuses() {
        for bad in [
            "",
            "0d",
            "0h0m",
            "30s",
            "1m1h",
            "1d1d",
            "d",
            "1.5h",
            "-1d",
            "1 d",
            "99999999999y",
        ] {
            assert!(MetricDuration::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
