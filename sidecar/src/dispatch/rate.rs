//! A destination's rate cap: a token bucket on tokio's clock, refilled
//! lazily. It only says how many attempts may start now and when the next
//! may; the destination loop sleeps until then.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32, now: Instant) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_second,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// When the next whole token is there.
    pub fn next_at(&self, now: Instant) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces() {
        let mut r = RateLimiter::new(10.0, 3, Instant::now());
        assert_eq!(r.available(Instant::now()), 3);
        for _ in 0..3 {
            r.take();
        }
        assert_eq!(r.available(Instant::now()), 0);
        assert_eq!(
            r.next_at(Instant::now()) - Instant::now(),
            Duration::from_millis(100)
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(r.available(Instant::now()), 2);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(r.available(Instant::now()), 3, "never more than the burst");
    }
}
