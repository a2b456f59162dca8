//! Policy durations as PostgreSQL intervals.

use promscale_crds::duration::MetricDuration;
use sqlx::postgres::types::PgInterval;

/// `90d` becomes `90 days`, `1h30m` becomes `01:30:00`: the interval a person would write.
pub fn interval(duration: MetricDuration) -> PgInterval {
    PgInterval {
        months: 0,
        days: duration.days,
        microseconds: i64::from(duration.minutes) * 60_000_000,
    }
}
