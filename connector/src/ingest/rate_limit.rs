//! The ingestion rate limit (`--limits.ingestion-rate`): a token bucket of samples shared by
//! every remote-write request this connector receives, one per tenant when tenants are kept
//! apart (`--metrics.multi-tenancy`), at a tenant's own rate where SQL sets one
//! (`prom_api.set_tenant_limits`). Hand-written: a bucket of one float
//! under a mutex is all it takes, and the crates of the field (governor) count cells of one
//! unit, not requests of thousands of samples at once.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    /// Samples a second.
    pub rate: f64,
    /// Most samples the bucket holds.
    pub burst: f64,
    state: Mutex<(f64, Instant)>,
}

/// The buckets of the connector: one for all writes, or one per tenant.
#[derive(Debug)]
pub struct RateLimits {
    /// The flags' rate (0: none) and burst (0: one second of the rate).
    pub rate: f64,
    pub burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_tenant: std::collections::HashMap<String, std::sync::Arc<RateLimiter>>,
    /// When full buckets were last dropped.
    swept: Option<Instant>,
}

/// Tenants' buckets kept at most: past it, full buckets (as a new one would be) are dropped,
/// at most once a second; tenants that still find no room share one bucket, [`OVERFLOW`], so
/// that naming ever new tenants neither escapes the limit nor takes memory without bound.
const MAX_BUCKETS: usize = 10_000;
const OVERFLOW: &str = "\u{0}overflow";

impl RateLimits {
    /// The flags' `rate` (0: no limit) and `burst` (0: one second of the rate).
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimits {
            rate,
            burst,
            buckets: Mutex::new(Default::default()),
        }
    }

    /// [`RateLimiter::try_take`] from the bucket of `tenant` ("" when tenants are not apart)
    /// at the flags' rate.
    pub fn try_take(&self, tenant: &str, n: usize) -> Result<(), u64> {
        self.try_take_at_rate(tenant, n, self.rate, self.burst)
    }

    /// [`RateLimits::try_take`] at a rate and burst of the tenant's own; a bucket made at
    /// another rate is made again (as full as it was, up to the new burst). Rate 0: no limit.
    pub fn try_take_at_rate(&self, tenant: &str, n: usize, rate: f64, burst: f64) -> Result<(), u64> {
        let Some(wanted) = RateLimiter::new(rate, burst) else {
            return Ok(());
        };
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let mut key = tenant;
            if !buckets.by_tenant.contains_key(tenant) && buckets.by_tenant.len() >= MAX_BUCKETS {
                let now = Instant::now();
                if buckets
                    .swept
                    .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1))
                {
                    buckets.swept = Some(now);
                    buckets.by_tenant.retain(|t, b| t == OVERFLOW || !b.is_full_at(now));
                }
                if buckets.by_tenant.len() >= MAX_BUCKETS {
                    key = OVERFLOW;
                }
            }
            let bucket = buckets
                .by_tenant
                .entry(key.to_string())
                .or_insert_with(|| std::sync::Arc::new(RateLimiter::new(rate, burst).expect("rate > 0")));
            if bucket.rate != wanted.rate || bucket.burst != wanted.burst {
                let (tokens, last) = *bucket.state.lock().unwrap_or_else(|e| e.into_inner());
                *wanted.state.lock().unwrap_or_else(|e| e.into_inner()) = (tokens.min(wanted.burst), last);
                *bucket = std::sync::Arc::new(wanted);
            }
            bucket.clone()
        };
        bucket.try_take(n)
    }
}

impl RateLimiter {
    /// Whether the bucket has refilled (it then acts as a new one).
    fn is_full_at(&self, now: Instant) -> bool {
        let (tokens, last) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate >= self.burst
    }

    /// None when `rate` is 0 (no limit); `burst` 0 is one second of the rate.
    pub fn new(rate: f64, burst: f64) -> Option<Self> {
        if rate <= 0.0 {
            return None;
        }
        let burst = if burst > 0.0 { burst } else { rate };
        Some(RateLimiter {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        })
    }

    /// Takes `n` samples from the bucket if it holds them (a request larger than the whole
    /// bucket passes when the bucket is full, and leaves it in debt of at most one bucket);
    /// otherwise takes nothing and says in how many whole seconds it will hold them.
    pub fn try_take(&self, n: usize) -> Result<(), u64> {
        self.try_take_at(n, Instant::now())
    }

    fn try_take_at(&self, n: usize, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        let wanted = (n as f64).min(self.burst);
        if tokens < wanted {
            *state = (tokens, now);
            return Err(((wanted - tokens) / self.rate).ceil().max(1.0) as u64);
        }
        *state = ((tokens - n as f64).max(-self.burst), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_tenant_has_a_bucket_of_its_own() {
        let limits = RateLimits::new(10.0, 100.0);
        assert_eq!(limits.try_take("a", 100), Ok(()));
        assert!(limits.try_take("a", 50).is_err());
        assert_eq!(limits.try_take("b", 100), Ok(()));
        assert!(limits.try_take("", 1).is_ok());
        // Ever new tenants past the most kept share one bucket (a rate slow enough that no
        // bucket refills while the test runs).
        let limits = RateLimits::new(0.001, 100.0);
        for n in 0..MAX_BUCKETS {
            assert_eq!(limits.try_take(&format!("t{n}"), 1), Ok(()));
        }
        assert_eq!(limits.try_take("new-1", 100), Ok(()));
        assert!(limits.try_take("new-2", 50).is_err());
        assert!(limits.buckets.lock().unwrap().by_tenant.len() <= MAX_BUCKETS + 1);
    }

    #[test]
    fn a_tenant_of_its_own_rate_has_its_bucket_at_that_rate() {
        let limits = RateLimits::new(0.0, 0.0);
        // No flag: no limit, but for a tenant with a rate of its own.
        assert_eq!(limits.try_take("a", 1_000_000), Ok(()));
        assert_eq!(limits.try_take_at_rate("b", 100, 10.0, 100.0), Ok(()));
        assert!(limits.try_take_at_rate("b", 50, 10.0, 100.0).is_err());
        // Its rate raised: the new rate applies at once.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(limits.try_take_at_rate("b", 50, 1000.0, 2000.0), Ok(()));
        let limits = RateLimits::new(0.0, 0.0);
        assert_eq!(limits.try_take_at_rate("c", 100, 0.001, 100.0), Ok(()));
        assert!(limits.try_take_at_rate("c", 1, 0.001, 100.0).is_err());
        assert!(
            limits.try_take_at_rate("c", 1, 0.001, 200.0).is_err(),
            "as empty as it was"
        );
        assert_eq!(limits.try_take_at_rate("c", 1, 0.0, 0.0), Ok(()), "rate 0: no limit");
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_holds_the_burst() {
        assert!(RateLimiter::new(0.0, 10.0).is_none());
        let limiter = RateLimiter::new(100.0, 200.0).unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(limiter.try_take_at(150, t0), Ok(()));
        assert_eq!(limiter.try_take_at(100, t0), Err(1), "50 left");
        assert_eq!(limiter.try_take_at(50, t0), Ok(()));
        // Half a second: 50 more.
        assert!(limiter.try_take_at(60, at(500)).is_err());
        assert_eq!(limiter.try_take_at(50, at(500)), Ok(()));
        // Long idle: full again, and no fuller.
        assert_eq!(
            limiter.try_take_at(1000, at(60_000)),
            Ok(()),
            "larger than the burst, bucket full"
        );
        // In debt of one bucket at most (not 800): 200 to pay back, then 1 more.
        assert_eq!(limiter.try_take_at(1, at(61_000)), Err(2));
        assert_eq!(limiter.try_take_at(1, at(62_100)), Ok(()));
    }
}
