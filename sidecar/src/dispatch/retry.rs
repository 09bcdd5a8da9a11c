//! When to try again: exponential backoff with full jitter, bounded by a
//! cap, a number of attempts and an age. Pure: the caller passes the clock
//! and the random source, so tests pin both.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl From<RetryConfig> for RetryPolicy {
    fn from(c: RetryConfig) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(c.initial_ms),
            max_delay: Duration::from_millis(c.max_delay_ms),
            max_attempts: c.max_attempts,
            max_age: Duration::from_secs(c.max_age_s),
        }
    }
}

impl RetryPolicy {
    /// The window the delay after attempt `attempts` is drawn from:
    /// `min(max_delay, initial * 2^attempts)`, so the first retry comes
    /// after `initial` on average.
    pub fn window(&self, attempts: u32) -> Duration {
        let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before the next attempt, or `None` to give up.
    /// `attempts` counts attempts made so far, `age` is the time since the
    /// first. A receiver's `Retry-After` is honoured up to `max_delay`.
    pub fn next_delay(
        &self,
        attempts: u32,
        age: Duration,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let window = self.window(attempts);
        let jittered = Duration::from_millis(rng.random_range(0..=window.as_millis() as u64));
        let delay = match retry_after {
            Some(asked) => asked.min(self.max_delay),
            None => jittered,
        };
        if age.saturating_add(delay) > self.max_age {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryConfig::default().into()
    }

    #[test]
    fn windows_double_then_cap() {
        let p = policy();
        assert_eq!(p.window(1), Duration::from_secs(10));
        assert_eq!(p.window(2), Duration::from_secs(20));
        assert_eq!(p.window(10), Duration::from_secs(3600));
        assert_eq!(p.window(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_inside_the_window_and_spreads() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<_> = (0..1000)
            .map(|_| p.next_delay(1, Duration::ZERO, None, &mut rng).unwrap())
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        let mean = delays.iter().map(|d| d.as_millis()).sum::<u128>() / 1000;
        assert!(
            (4000..6000).contains(&mean),
            "mean {mean} ms should be about the initial 5 s"
        );
    }

    #[test]
    fn gives_up_on_attempts_or_age() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(p.next_delay(11, Duration::ZERO, None, &mut rng).is_some());
        assert!(p.next_delay(12, Duration::ZERO, None, &mut rng).is_none());
        assert!(
            p.next_delay(
                1,
                Duration::from_secs(86_400),
                Some(Duration::from_secs(1)),
                &mut rng
            )
            .is_none()
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(30)), &mut rng),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(7200)), &mut rng),
            Some(Duration::from_secs(3600))
        );
    }
}
