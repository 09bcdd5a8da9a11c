//! When to try again: exponential backoff with full jitter, or an explicit
//! schedule, bounded by a number of attempts and an age; a receiver's
//! `Retry-After` is honoured up to the policy's cap. Pure: the caller passes
//! the attempt count, the age and the random source, so tests pin all three.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backoff {
    /// The delay after attempt n is drawn uniformly from
    /// `[0, min(max_delay, initial * 2^n)]`.
    Exponential { initial: Duration },
    /// The delay after attempt n is the n-th entry, as given.
    Schedule(Vec<Duration>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Cap on any delay, `Retry-After` included.
    pub max_delay: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        let (backoff, max_attempts) = match &c.schedule_ms {
            None => (
                Backoff::Exponential {
                    initial: Duration::from_millis(c.initial_ms),
                },
                c.max_attempts,
            ),
            Some(s) => {
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                (
                    Backoff::Schedule(s.iter().copied().map(Duration::from_millis).collect()),
                    c.max_attempts.min(len.saturating_add(1)),
                )
            }
        };
        RetryPolicy {
            backoff,
            max_delay: Duration::from_millis(c.max_delay_ms),
            max_attempts,
            max_age: Duration::from_secs(c.max_age_s),
        }
    }
}

impl RetryPolicy {
    /// The window the jittered delay after attempt `attempts` is drawn from:
    /// `min(max_delay, initial * 2^attempts)`, so the first retry comes
    /// after `initial` on average.
    pub fn window(&self, attempts: u32) -> Duration {
        match &self.backoff {
            Backoff::Exponential { initial } => {
                let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
                initial.saturating_mul(factor).min(self.max_delay)
            }
            Backoff::Schedule(s) => s
                .get(attempts.saturating_sub(1) as usize)
                .copied()
                .unwrap_or(Duration::ZERO),
        }
    }

    /// The delay before the next attempt, or `None` to give up.
    /// `attempts` counts attempts made so far (at least 1), `age` is the
    /// time since the first.
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
        let computed = match &self.backoff {
            Backoff::Exponential { .. } => {
                let window = self.window(attempts).as_millis() as u64;
                Duration::from_millis(rng.random_range(0..=window))
            }
            Backoff::Schedule(s) => *s.get(attempts.saturating_sub(1) as usize)?,
        };
        let delay = match retry_after {
            Some(asked) => asked.min(self.max_delay),
            None => computed,
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
        (&RetryConfig::default()).into()
    }

    fn svix() -> RetryPolicy {
        (&RetryConfig {
            schedule_ms: Some(vec![
                5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
            ]),
            max_delay_ms: 36_000_000,
            max_age_s: 200_000,
            ..RetryConfig::default()
        })
            .into()
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
        for attempts in 1..12 {
            let window = p.window(attempts);
            let delays: Vec<_> = (0..500)
                .map(|_| {
                    p.next_delay(attempts, Duration::ZERO, None, &mut rng)
                        .unwrap()
                })
                .collect();
            assert!(delays.iter().all(|d| *d <= window), "attempt {attempts}");
            let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
            assert!(
                *min < window / 10 && *max > window * 9 / 10,
                "full jitter covers the window: {min:?}..{max:?} of {window:?}"
            );
        }
        let first: Vec<_> = (0..1000)
            .map(|_| p.next_delay(1, Duration::ZERO, None, &mut rng).unwrap())
            .collect();
        let mean = first.iter().map(|d| d.as_millis()).sum::<u128>() / 1000;
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
    fn an_explicit_schedule_is_followed_exactly_then_ends() {
        let p = svix();
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<_> = (1..)
            .map_while(|n| p.next_delay(n, Duration::ZERO, None, &mut rng))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(delays, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(p.max_attempts, 8);
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
        assert_eq!(
            svix().next_delay(1, Duration::ZERO, Some(Duration::from_secs(60)), &mut rng),
            Some(Duration::from_secs(60))
        );
    }
}
