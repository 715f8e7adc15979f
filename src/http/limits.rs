//! Per-client rate limiting on webhook routes (governor's keyed GCRA, one cell per peer
//! address), so one noisy sender cannot starve the others. Behind a load balancer every sender
//! shares the balancer's address: raise the limit there, or rely on the balancer's own limits.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};

/// Clients remembered before the idle ones are forgotten.
const REMEMBERED_CLIENTS: usize = 10_000;

/// A rate per client address, with bursts.
pub struct RateLimiter {
    /// Deliveries per second (0: no limit).
    rate: f64,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimiter {
    /// `rate` deliveries per second per client, bursts of `burst`; a rate of 0 disables it.
    pub fn new(rate: f64, burst: f64) -> Self {
        let quota = (rate > 0.0 && rate.is_finite())
            .then(|| Quota::with_period(Duration::from_secs_f64(1.0 / rate)))
            .flatten()
            .map(|quota| {
                let burst =
                    NonZeroU32::new(burst.clamp(1.0, f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
                quota.allow_burst(burst)
            });
        Self {
            rate,
            limiter: quota.map(DefaultKeyedRateLimiter::keyed),
        }
    }

    /// Whether this client may send one more delivery now.
    pub fn allow(&self, client: IpAddr) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if limiter.len() > REMEMBERED_CLIENTS {
            // Forget clients whose allowance has refilled anyway.
            limiter.retain_recent();
        }
        limiter.check_key(&client).is_ok()
    }

    /// The configured rate, for messages.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_client() {
        let limiter = RateLimiter::new(1.0, 3.0);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b), "another client is not starved");
        assert!(RateLimiter::new(0.0, 1.0).allow(a), "0 disables");
    }
}
