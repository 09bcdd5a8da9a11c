//! Token buckets shared by every Envoy worker.
//!
//! Each worker runs its own VM, so a bucket lives in proxy-wasm shared data
//! (one fixed key per bucket) and is updated with compare-and-swap: read
//! the bucket and its CAS, refill it lazily from the host clock, take a
//! token, write it back only if nobody wrote in between, else retry (a
//! bounded number of times). The host's semantics, which the fake store in
//! the tests mimics: the CAS is a global increasing number; a stale CAS is
//! refused; a write with no CAS (a key that was absent) always succeeds.
//!
//! The clock is the host's wall clock (ABI 0.2.1 offers no monotonic one),
//! so it may step backwards: the arithmetic saturates and a bucket only
//! refills once the clock passes the last refill again, so a step back
//! never mints tokens.
//!
//! Keys are never freed by the host, so per-client buckets are a fixed
//! number of slots per source: a client's address is hashed with a random
//! salt (kept in shared data, so every worker agrees) into one of them.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::ip;

/// One token, in the micro-tokens buckets count in.
const MICRO: u64 = 1_000_000;

/// CAS attempts before a request counts as limited. Each retry means
/// another worker took a token meanwhile, so running out means heavy load.
pub const MAX_CAS_ATTEMPTS: usize = 8;

/// Where the per-client salt lives (one for the whole VM id).
pub const SALT_KEY: &str = "edgehook.v1/rl/salt";

/// The shared-data calls a bucket needs, as the host offers them.
pub trait SharedStore {
    /// The value and its CAS; `(None, None)` when the key was never set.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes when `cas` is still current (or is `None`).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    /// Any other host failure; limits then fail open (signatures still
    /// protect the sidecar).
    Unavailable,
}

/// A bucket's shape: refill rate and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Micro-tokens per millisecond, which is tokens per second × 1000.
    micro_per_ms: u64,
    burst: u64,
}

pub const MIN_RPS: f64 = 0.001;
pub const MAX_RPS: f64 = 1_000_000.0;
pub const MAX_BURST: u64 = 1_000_000_000;

impl Limit {
    /// `None` outside `MIN_RPS..=MAX_RPS` or `1..=MAX_BURST`.
    pub fn new(rps: f64, burst: u64) -> Option<Limit> {
        if !(MIN_RPS..=MAX_RPS).contains(&rps) || !(1..=MAX_BURST).contains(&burst) {
            return None;
        }
        // In range, so the product is a small positive number.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micro_per_ms = (rps * 1000.0).round() as u64;
        Some(Limit {
            micro_per_ms: micro_per_ms.max(1),
            burst,
        })
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn capacity(&self) -> u64 {
        self.burst.saturating_mul(MICRO)
    }

    /// Seconds an empty bucket takes to fill: the window of the
    /// `RateLimit-Policy` header (quota = burst).
    pub fn window_s(&self) -> u64 {
        let ms = self.capacity().div_ceil(self.micro_per_ms);
        ms.div_ceil(1000).max(1)
    }
}

/// A bucket as stored: 16 bytes, micro-tokens then the last refill time in
/// nanoseconds, both little-endian u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub level: u64,
    pub last_ns: u64,
}

impl Bucket {
    pub fn full(limit: &Limit, now_ns: u64) -> Bucket {
        Bucket {
            level: limit.capacity(),
            last_ns: now_ns,
        }
    }

    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (level, last) = out.split_at_mut(8);
        level.copy_from_slice(&self.level.to_le_bytes());
        last.copy_from_slice(&self.last_ns.to_le_bytes());
        out
    }

    /// `None` for anything that is not 16 bytes (an absent or removed key).
    pub fn decode(bytes: &[u8]) -> Option<Bucket> {
        let (level, last) = bytes.split_first_chunk::<8>()?;
        let last: [u8; 8] = last.try_into().ok()?;
        Some(Bucket {
            level: u64::from_le_bytes(*level),
            last_ns: u64::from_le_bytes(last),
        })
    }

    /// Adds what the whole milliseconds since the last refill earned, and
    /// keeps the sub-millisecond rest for next time (callers less than a
    /// millisecond apart would otherwise never refill). A clock that went
    /// backwards earns nothing and does not move `last_ns` back.
    pub fn refill(&mut self, now_ns: u64, limit: &Limit) {
        let ms = now_ns.saturating_sub(self.last_ns) / 1_000_000;
        self.level = self
            .level
            .saturating_add(ms.saturating_mul(limit.micro_per_ms))
            .min(limit.capacity());
        self.last_ns = self.last_ns.saturating_add(ms.saturating_mul(1_000_000));
    }

    pub fn try_take(&mut self) -> bool {
        match self.level.checked_sub(MICRO) {
            Some(rest) => {
                self.level = rest;
                true
            }
            None => false,
        }
    }

    /// Milliseconds until one whole token is there.
    pub fn wait_ms(&self, limit: &Limit) -> u64 {
        MICRO
            .saturating_sub(self.level)
            .div_ceil(limit.micro_per_ms)
    }

    pub fn tokens(&self) -> u64 {
        self.level / MICRO
    }
}

/// The result of asking a bucket for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed {
        remaining: u64,
    },
    Limited {
        wait_ms: u64,
    },
    /// Every CAS attempt lost to another worker.
    Contended,
}

/// The host's CAS counter starts at 1 and would take 2^32 writes to get here.
const CREATE_ONLY_CAS: u32 = u32::MAX;

/// Takes one token from the bucket at `key`. A refused request writes
/// nothing: refilling is a pure function of the stored state and the
/// clock, so deferring it loses nothing, and a flood of refused requests
/// then costs reads only.
pub fn take(
    store: &dyn SharedStore,
    key: &str,
    now_ns: u64,
    limit: &Limit,
) -> Result<Take, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (raw, cas) = store.get(key);
        // A key never written has no CAS, and a write without one is
        // unconditional: two workers creating the same bucket would each
        // overwrite the other's take. The host accepts any CAS for a missing
        // key and refuses a stale one for an existing key, so a CAS no live
        // key carries makes the first write create-only.
        let cas = Some(cas.unwrap_or(CREATE_ONLY_CAS));
        let mut bucket = raw
            .as_deref()
            .and_then(Bucket::decode)
            .unwrap_or_else(|| Bucket::full(limit, now_ns));
        bucket.refill(now_ns, limit);
        if !bucket.try_take() {
            return Ok(Take::Limited {
                wait_ms: bucket.wait_ms(limit),
            });
        }
        match store.set(key, &bucket.encode(), cas) {
            Ok(()) => {
                return Ok(Take::Allowed {
                    remaining: bucket.tokens(),
                });
            }
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Take::Contended)
}

/// Which of a source's two limits refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Per client address, before the signature is checked.
    PerClient,
    /// Per source, on verified requests only.
    Verified,
}

impl Policy {
    /// The policy name in the `RateLimit-Policy` and `RateLimit` headers.
    pub fn name(self) -> &'static str {
        match self {
            Policy::PerClient => "per_client",
            Policy::Verified => "verified",
        }
    }
}

/// A refusal: which limit, its shape, and how long until a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub policy: Policy,
    pub limit: Limit,
    pub wait_ms: u64,
}

impl Limited {
    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_s(&self) -> u64 {
        self.wait_ms.div_ceil(1000).max(1)
    }
}

/// A source's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_client: Option<Limit>,
    pub verified: Option<Limit>,
    /// How many per-client buckets the source has.
    pub client_slots: u32,
}

pub const DEFAULT_CLIENT_SLOTS: u32 = 4096;
pub const MAX_CLIENT_SLOTS: u32 = 1 << 20;

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_client: None,
            verified: None,
            client_slots: DEFAULT_CLIENT_SLOTS,
        }
    }
}

/// The buckets of one request, at one instant.
pub struct Limiter<'a> {
    pub store: &'a dyn SharedStore,
    pub now_ns: u64,
}

impl Limiter<'_> {
    /// The per-client limit of `source`, for `client` (`None` when the
    /// address is unknown: such requests share one bucket).
    pub fn per_client(
        &self,
        source: &str,
        limits: &RateLimits,
        client: Option<IpAddr>,
    ) -> Result<(), Limited> {
        let Some(limit) = limits.per_client else {
            return Ok(());
        };
        let identity = client.map(ip::limit_identity).unwrap_or_default();
        let slot = client_slot(client_salt(self.store), &identity, limits.client_slots);
        let key = format!("edgehook.v1/rl/{source}/client/{slot}");
        self.take(&key, Policy::PerClient, limit)
    }

    /// The per-source limit of verified requests.
    pub fn verified(&self, source: &str, limits: &RateLimits) -> Result<(), Limited> {
        let Some(limit) = limits.verified else {
            return Ok(());
        };
        self.take(
            &format!("edgehook.v1/rl/{source}/verified"),
            Policy::Verified,
            limit,
        )
    }

    fn take(&self, key: &str, policy: Policy, limit: Limit) -> Result<(), Limited> {
        match take(self.store, key, self.now_ns, &limit) {
            Ok(Take::Allowed { .. }) | Err(_) => Ok(()),
            Ok(Take::Limited { wait_ms }) => Err(Limited {
                policy,
                limit,
                wait_ms,
            }),
            Ok(Take::Contended) => Err(Limited {
                policy,
                limit,
                wait_ms: 1000,
            }),
        }
    }
}

/// The VM-wide salt of client slots, created on first use. Two workers may
/// create it at once and one write wins; both read it back, and every
/// later call reads the stored one, so the workers agree from then on.
pub fn client_salt(store: &dyn SharedStore) -> u64 {
    let read = |store: &dyn SharedStore| {
        let (raw, _) = store.get(SALT_KEY);
        raw.and_then(|b| b.as_slice().try_into().ok())
            .map(u64::from_le_bytes)
    };
    if let Some(salt) = read(store) {
        return salt;
    }
    let fresh = random_u64();
    let _ = store.set(SALT_KEY, &fresh.to_le_bytes(), None);
    read(store).unwrap_or(fresh)
}

/// Random bits from the host (WASI `random_get` in Envoy), through the
/// randomly keyed hasher std seeds from it.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The slot of a client. The salt is secret and random, so nobody can pick
/// addresses that land in a provider's slot and spend its budget.
pub fn client_slot(salt: u64, identity: &[u8], slots: u32) -> u32 {
    let digest = Sha256::new()
        .chain_update(salt.to_le_bytes())
        .chain_update(identity)
        .finalize();
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    let n = u64::from_le_bytes(first) % u64::from(slots.max(1));
    u32::try_from(n).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Shared data as the host keeps it: a global CAS counter, stale CAS
    /// refused, a write without CAS always accepted.
    #[derive(Default)]
    pub struct FakeStore {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        pub sets: Cell<usize>,
    }

    impl SharedStore for FakeStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let mut map = self.map.borrow_mut();
            if let (Some(want), Some((_, current))) = (cas, map.get(key))
                && want != *current
            {
                return Err(StoreError::CasMismatch);
            }
            self.next_cas.set(self.next_cas.get() + 1);
            map.insert(key.to_string(), (value.to_vec(), self.next_cas.get()));
            self.sets.set(self.sets.get() + 1);
            Ok(())
        }
    }

    /// Another worker that takes a token from `key` between our read and
    /// our write, `races` times.
    struct RacingStore<'a> {
        inner: &'a FakeStore,
        races: Cell<usize>,
        limit: Limit,
        now_ns: u64,
    }

    impl SharedStore for RacingStore<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                take(self.inner, key, self.now_ns, &self.limit).unwrap();
            }
            self.inner.set(key, value, cas)
        }
    }

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn limit(rps: f64, burst: u64) -> Limit {
        Limit::new(rps, burst).unwrap()
    }

    fn allowed(store: &dyn SharedStore, now: u64, l: &Limit) -> bool {
        matches!(take(store, "k", now, l).unwrap(), Take::Allowed { .. })
    }

    #[test]
    fn a_fresh_bucket_allows_its_burst_then_refills_at_the_rate() {
        let store = FakeStore::default();
        let l = limit(10.0, 5);
        let t0 = 1_700_000_000 * S;
        let granted = (0..20).filter(|_| allowed(&store, t0, &l)).count();
        assert_eq!(granted, 5, "the burst, no more");
        assert_eq!(
            take(&store, "k", t0, &l).unwrap(),
            Take::Limited { wait_ms: 100 }
        );
        // 10/s: one token per 100 ms, none before.
        assert!(!allowed(&store, t0 + 99 * MS, &l));
        assert!(allowed(&store, t0 + 100 * MS, &l));
        assert!(!allowed(&store, t0 + 150 * MS, &l));
        // A long pause refills to the burst, never beyond.
        let later = t0 + 3600 * S;
        let granted = (0..20).filter(|_| allowed(&store, later, &l)).count();
        assert_eq!(granted, 5);
    }

    #[test]
    fn sub_millisecond_callers_still_refill() {
        let store = FakeStore::default();
        let l = limit(1000.0, 1);
        let t0 = 10 * S;
        assert!(allowed(&store, t0, &l));
        // Callers every 0.4 ms: each whole millisecond earns one token.
        let granted = (1..=50)
            .filter(|i| allowed(&store, t0 + i * 400_000, &l))
            .count();
        assert_eq!(granted, 20, "20 ms at 1000/s");
    }

    #[test]
    fn a_clock_that_steps_back_mints_nothing() {
        let store = FakeStore::default();
        let l = limit(10.0, 2);
        let t0 = 7_200 * S;
        assert!(allowed(&store, t0, &l) && allowed(&store, t0, &l));
        assert!(!allowed(&store, t0, &l));
        // The clock jumps back an hour, then crawls forward: nothing until
        // it passes the last refill again.
        let back = t0 - 3600 * S;
        assert!(!allowed(&store, back, &l));
        assert!(!allowed(&store, back + 1800 * S, &l));
        assert!(!allowed(&store, t0 + 99 * MS, &l));
        assert!(allowed(&store, t0 + 100 * MS, &l));
        // And from zero (a host that reports no time) nothing panics.
        assert!(!allowed(&store, 0, &l));
        let mut b = Bucket {
            level: 0,
            last_ns: u64::MAX,
        };
        b.refill(0, &l);
        assert_eq!(
            b,
            Bucket {
                level: 0,
                last_ns: u64::MAX
            }
        );
        let mut b = Bucket {
            level: u64::MAX,
            last_ns: 0,
        };
        b.refill(u64::MAX, &limit(MAX_RPS, MAX_BURST));
        assert_eq!(b.level, MAX_BURST * MICRO);
    }

    #[test]
    fn fractional_rates() {
        let store = FakeStore::default();
        let l = limit(0.5, 1);
        let t0 = 5 * S;
        assert!(allowed(&store, t0, &l));
        assert_eq!(
            take(&store, "k", t0, &l).unwrap(),
            Take::Limited { wait_ms: 2000 }
        );
        assert!(!allowed(&store, t0 + 1999 * MS, &l));
        assert!(allowed(&store, t0 + 2000 * MS, &l));
        assert_eq!(l.window_s(), 2);
        assert_eq!(limit(200.0, 400).window_s(), 2);
        assert_eq!(limit(1000.0, 1).window_s(), 1);
    }

    #[test]
    fn refused_requests_write_nothing() {
        let store = FakeStore::default();
        let l = limit(1.0, 1);
        assert!(allowed(&store, S, &l));
        let writes = store.sets.get();
        for _ in 0..100 {
            assert!(!allowed(&store, S, &l));
        }
        assert_eq!(store.sets.get(), writes);
    }

    #[test]
    fn a_lost_race_retries_and_no_token_is_counted_twice() {
        let inner = FakeStore::default();
        let l = limit(1.0, 5);
        let now = 50 * S;
        // The other worker wins three times; our take still lands, and the
        // bucket shows all four takes.
        let racing = RacingStore {
            inner: &inner,
            races: Cell::new(3),
            limit: l,
            now_ns: now,
        };
        assert!(matches!(
            take(&racing, "k", now, &l).unwrap(),
            Take::Allowed { remaining: 1 }
        ));
        assert!(allowed(&inner, now, &l));
        assert!(!allowed(&inner, now, &l), "exactly 5 tokens were taken");
    }

    #[test]
    fn endless_contention_is_bounded_and_counts_as_limited() {
        let inner = FakeStore::default();
        let l = limit(1.0, 1_000);
        let racing = RacingStore {
            inner: &inner,
            races: Cell::new(usize::MAX),
            limit: l,
            now_ns: S,
        };
        assert_eq!(take(&racing, "k", S, &l).unwrap(), Take::Contended);
        let limiter = Limiter {
            store: &racing,
            now_ns: S,
        };
        let limits = RateLimits {
            verified: Some(l),
            ..RateLimits::default()
        };
        let refused = limiter.verified("src", &limits).unwrap_err();
        assert_eq!(refused.policy, Policy::Verified);
        assert_eq!(refused.retry_after_s(), 1);
    }

    #[test]
    fn cas_on_an_absent_key_succeeds_and_odd_values_read_as_full() {
        let store = FakeStore::default();
        assert_eq!(store.set("new", b"x", Some(42)), Ok(()));
        assert_eq!(
            store.set("new", b"y", Some(42)),
            Err(StoreError::CasMismatch)
        );
        // A removed key (empty value) or a foreign value is a fresh bucket.
        store.set("k", b"", None).unwrap();
        let l = limit(1.0, 2);
        assert!(allowed(&store, S, &l) && allowed(&store, S, &l));
        assert!(!allowed(&store, S, &l));
        assert_eq!(Bucket::decode(&[0; 15]), None);
        let b = Bucket {
            level: 7,
            last_ns: 9,
        };
        assert_eq!(Bucket::decode(&b.encode()), Some(b));
    }

    #[test]
    fn limits_are_checked() {
        assert!(Limit::new(0.0, 1).is_none());
        assert!(Limit::new(-1.0, 1).is_none());
        assert!(Limit::new(f64::NAN, 1).is_none());
        assert!(Limit::new(f64::INFINITY, 1).is_none());
        assert!(Limit::new(1.0, 0).is_none());
        assert!(Limit::new(1.0, MAX_BURST + 1).is_none());
        assert!(Limit::new(MIN_RPS, 1).is_some());
    }

    #[test]
    fn per_client_buckets_are_per_address_and_the_salt_is_shared() {
        let store = FakeStore::default();
        let limits = RateLimits {
            per_client: Some(limit(1.0, 2)),
            ..RateLimits::default()
        };
        store.set(SALT_KEY, &7u64.to_le_bytes(), None).unwrap();
        let limiter = Limiter {
            store: &store,
            now_ns: S,
        };
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        assert!(limiter.per_client("s", &limits, a).is_ok());
        assert!(limiter.per_client("s", &limits, a).is_ok());
        let refused = limiter.per_client("s", &limits, a).unwrap_err();
        assert_eq!(refused.policy, Policy::PerClient);
        assert_eq!(refused.retry_after_s(), 1);
        // Another address (in another slot) and another source are untouched.
        let slot = |addr: Option<IpAddr>| {
            client_slot(
                client_salt(&store),
                &ip::limit_identity(addr.unwrap()),
                limits.client_slots,
            )
        };
        assert_ne!(slot(a), slot(b));
        assert!(limiter.per_client("s", &limits, b).is_ok());
        assert!(limiter.per_client("t", &limits, a).is_ok());
        // No limit configured: always allowed, nothing stored.
        let sets = store.sets.get();
        assert!(limiter.per_client("s", &RateLimits::default(), a).is_ok());
        assert_eq!(store.sets.get(), sets);

        assert_eq!(client_salt(&store), 7, "the stored salt is used");
        let fresh = FakeStore::default();
        let salt = client_salt(&fresh);
        assert_eq!(client_salt(&fresh), salt, "created once, then read");
    }

    #[test]
    fn slots_spread_clients_and_stay_in_range() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..=255u8 {
            let s = client_slot(7, &[4, 10, 0, 0, i], 64);
            assert!(s < 64);
            seen.insert(s);
        }
        assert!(seen.len() > 48, "{} of 64 slots used", seen.len());
        assert_eq!(client_slot(7, b"x", 0), 0);
        assert_ne!(
            (0..32)
                .map(|i| client_slot(1, &[i], 1 << 20))
                .collect::<Vec<_>>(),
            (0..32)
                .map(|i| client_slot(2, &[i], 1 << 20))
                .collect::<Vec<_>>(),
            "the salt changes the mapping"
        );
    }
}
