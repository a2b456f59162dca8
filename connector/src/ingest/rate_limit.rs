//! The ingestion rate limit (`--limits.ingestion-rate`): a token bucket of samples shared by
//! every remote-write request this connector receives. Hand-written: a bucket of one float
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

impl RateLimiter {
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
