//! Time for due dates. Due times are stored on disk and must mean the same
//! thing after a restart, so they are unix milliseconds, not `Instant`s.
//! While running, the sidecar counts from the wall clock read at start on
//! tokio's monotonic clock: a wall-clock step does not make every retry
//! fire at once, and tests can drive the whole dispatcher on tokio's paused
//! clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The wall clock now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    /// Anchored to the wall clock now.
    pub fn system() -> Clock {
        Clock {
            base_ms: now_ms(),
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.base_ms.saturating_add(elapsed)
    }

    /// The instant at which `now_ms()` reaches `at_ms` (now, if it has).
    pub fn instant_at(&self, at_ms: i64) -> Instant {
        let ahead = at_ms.saturating_sub(self.now_ms());
        Instant::now() + Duration::from_millis(u64::try_from(ahead).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_the_tokio_clock() {
        let c = Clock::system();
        let start = c.now_ms();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(c.now_ms() - start, 90_000);
        let at = c.instant_at(start + 100_000);
        assert_eq!(at - Instant::now(), Duration::from_secs(10));
        assert_eq!(c.instant_at(start), Instant::now());
    }
}
