//! A destination's circuit breaker. Consecutive failed attempts open it;
//! while open no attempt starts (so none is spent); after a cool-down one
//! probe is let through (half-open). The probe's success closes it; its
//! failure opens it again for twice as long, up to a cap, so a destination
//! that stays down is asked less and less often. Time comes from the caller
//! (tokio's clock), so tests drive it on a paused clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl From<&BreakerConfig> for BreakerPolicy {
    fn from(c: &BreakerConfig) -> Self {
        BreakerPolicy {
            failures: c.failures,
            cooldown: Duration::from_millis(c.cooldown_ms),
            max_cooldown: Duration::from_millis(c.max_cooldown_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    inner: Inner,
    consecutive_failures: u32,
    /// Times it opened since it was last closed: sets the cool-down.
    trips: u32,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            inner: Inner::Closed,
            consecutive_failures: 0,
            trips: 0,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many attempts may start now: any number when closed, none while
    /// open, one probe once the cool-down is over.
    pub fn allowance(&mut self, now: Instant) -> usize {
        if let Inner::Open { until } = self.inner
            && now >= until
        {
            self.inner = Inner::HalfOpen { probing: false };
        }
        match self.inner {
            Inner::Closed => usize::MAX,
            Inner::Open { .. } | Inner::HalfOpen { probing: true } => 0,
            Inner::HalfOpen { probing: false } => 1,
        }
    }

    /// An attempt starts; returns whether it is the half-open probe.
    pub fn started(&mut self) -> bool {
        if self.inner == (Inner::HalfOpen { probing: false }) {
            self.inner = Inner::HalfOpen { probing: true };
            return true;
        }
        false
    }

    /// The destination answered (2xx, or a 4xx that is the event's fault).
    pub fn succeeded(&mut self) {
        self.inner = Inner::Closed;
        self.consecutive_failures = 0;
        self.trips = 0;
    }

    /// An attempt failed in a way that says the destination is unwell.
    pub fn failed(&mut self, now: Instant, probe: bool) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.inner {
            Inner::Closed if self.consecutive_failures >= self.policy.failures => self.open(now),
            Inner::HalfOpen { .. } if probe => self.open(now),
            // Attempts that started before it opened change nothing.
            _ => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.trips = self.trips.saturating_add(1);
        self.inner = Inner::Open {
            until: now + self.cooldown(),
        };
    }

    /// The current (or, when closed, the next) cool-down.
    pub fn cooldown(&self) -> Duration {
        let factor = 1u32
            .checked_shl(self.trips.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.policy
            .cooldown
            .saturating_mul(factor)
            .min(self.policy.max_cooldown)
    }

    /// When an open breaker lets a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_a_growing_cooldown() {
        let mut b = Breaker::new(policy());
        let now = Instant::now;
        for _ in 0..2 {
            assert_eq!(b.allowance(now()), usize::MAX);
            b.started();
            b.failed(now(), false);
        }
        assert_eq!(b.state(now()), BreakerState::Closed);
        b.succeeded();
        for _ in 0..3 {
            b.started();
            b.failed(now(), false);
        }
        assert_eq!(b.state(now()), BreakerState::Open);
        assert_eq!(b.allowance(now()), 0, "nothing starts while open");
        assert_eq!(b.reopens_at(), Some(now() + Duration::from_secs(5)));

        // Each failed probe doubles the cool-down, up to the cap.
        for expected in [5, 10, 20, 30, 30] {
            tokio::time::advance(Duration::from_secs(expected) - Duration::from_millis(1)).await;
            assert_eq!(b.allowance(now()), 0, "still cooling down ({expected} s)");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(b.state(now()), BreakerState::HalfOpen);
            assert_eq!(b.allowance(now()), 1, "one probe");
            assert!(b.started());
            assert_eq!(b.allowance(now()), 0, "only one probe at a time");
            b.failed(now(), true);
            assert_eq!(b.state(now()), BreakerState::Open);
        }

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.allowance(now()), 1);
        assert!(b.started());
        b.succeeded();
        assert_eq!(b.state(now()), BreakerState::Closed);
        assert_eq!(b.allowance(now()), usize::MAX);
        assert_eq!(
            b.cooldown(),
            Duration::from_secs(5),
            "closing resets the cool-down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_of_old_attempts_do_not_reopen_a_half_open_breaker() {
        let mut b = Breaker::new(policy());
        for _ in 0..3 {
            b.failed(Instant::now(), false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.allowance(Instant::now()), 1);
        b.failed(Instant::now(), false);
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
    }
}
