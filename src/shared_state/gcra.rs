//! The generic cell rate algorithm (GCRA) that every rate limit counts
//! with, locally ([`LocalBuckets`]) and in Redis (the same arithmetic in a
//! Lua script, see [`super::redis`]).
//!
//! A policy of `requests` per `per` with `burst` lets one request through
//! every `per / requests` (the emission interval `T`) and up to `burst`
//! more at once (the tolerance `τ = burst × T`), as NGINX's
//! `limit_req rate=… burst=… nodelay` does. Per key only the theoretical
//! arrival time (TAT) of the next request is kept; a request at `now`
//! conforms when `TAT − τ ≤ now`, and then moves TAT to `max(TAT, now) + T`.
//!
//! Memory stays bounded under a flood of distinct keys: the local buckets
//! live in a cache of at most [`MAX_KEYS`] entries per route, each forgotten
//! once idle for `τ + T`, the time after which its bucket is full again
//! (so forgetting it changes no decision). One entry costs about 120 bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most keys one route's local buckets hold; the least recently used
/// go first beyond it.
pub const MAX_KEYS: u64 = 100_000;

/// One route's limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Requests let through per `per`.
    pub requests: u32,
    /// The window `requests` are counted in.
    pub per: Duration,
    /// Extra requests let through at once.
    pub burst: u32,
}

impl Policy {
    /// The emission interval `T`, in microseconds (at least 1).
    pub fn interval_micros(&self) -> u64 {
        let per = u64::try_from(self.per.as_micros()).unwrap_or(u64::MAX);
        (per / u64::from(self.requests.max(1))).max(1)
    }

    /// The tolerance `τ`, in microseconds.
    pub fn tolerance_micros(&self) -> u64 {
        self.interval_micros().saturating_mul(u64::from(self.burst))
    }

    /// How long an empty bucket takes to fill again: `τ + T`.
    pub fn refill(&self) -> Duration {
        Duration::from_micros(
            self.tolerance_micros()
                .saturating_add(self.interval_micros()),
        )
    }

    /// `per` in whole seconds (at least 1), for `RateLimit-Policy`'s `w`.
    pub fn window_secs(&self) -> u64 {
        self.per.as_secs().max(1)
    }
}

/// What the limit decided about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether it may go through.
    pub allowed: bool,
    /// How many more could go through right now.
    pub remaining: u64,
    /// How long until the bucket is full again.
    pub reset: Duration,
    /// When refused: how long until one request would conform.
    pub retry_after: Duration,
}

/// One GCRA step: `tat` and `now` in microseconds on any one clock.
/// Returns the decision and the TAT to store (unchanged when refused).
pub fn step(policy: &Policy, tat: u64, now: u64) -> (Decision, u64) {
    let interval = policy.interval_micros();
    let tolerance = policy.tolerance_micros();
    let tat = tat.max(now);
    if tat - now > tolerance {
        let wait = tat - now - tolerance;
        let decision = Decision {
            allowed: false,
            remaining: 0,
            reset: Duration::from_micros(tat - now),
            retry_after: Duration::from_micros(wait),
        };
        return (decision, tat);
    }
    let next = tat + interval;
    // `next − now ≤ τ + T`, so the slack is never negative.
    let slack = (now + tolerance + interval).saturating_sub(next);
    let decision = Decision {
        allowed: true,
        remaining: slack / interval,
        reset: Duration::from_micros(next - now),
        retry_after: Duration::ZERO,
    };
    (decision, next)
}

/// One route's buckets in this process.
#[derive(Debug)]
pub struct LocalBuckets {
    policy: Policy,
    /// TAT per key, in microseconds since `epoch`.
    tats: moka::sync::Cache<Box<str>, Arc<AtomicU64>>,
    epoch: Instant,
}

impl LocalBuckets {
    /// Empty buckets for `policy`.
    pub fn new(policy: Policy) -> Self {
        // The config keeps refills within a day; the cap keeps the cache
        // builder's own limit out of reach whatever an embedder passes.
        let idle = policy
            .refill()
            .clamp(Duration::from_secs(1), Duration::from_secs(365 * 86_400));
        Self {
            tats: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(idle)
                .build(),
            policy,
            epoch: Instant::now(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How many keys are held now (after pending evictions).
    pub fn len(&self) -> u64 {
        self.tats.run_pending_tasks();
        self.tats.entry_count()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: &str) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let tat = match self.tats.get(key) {
            Some(tat) => tat,
            None => self
                .tats
                .get_with(key.into(), || Arc::new(AtomicU64::new(0))),
        };
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let (decision, next) = step(&self.policy, current, now);
            if !decision.allowed {
                return decision;
            }
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(requests: u32, per_secs: u64, burst: u32) -> Policy {
        Policy {
            requests,
            per: Duration::from_secs(per_secs),
            burst,
        }
    }

    #[test]
    fn a_fresh_key_takes_one_plus_the_burst_at_once() {
        let p = policy(60, 60, 2);
        let mut tat = 0;
        let now = 1_000_000_000;
        let mut allowed = 0;
        for _ in 0..10 {
            let (d, next) = step(&p, tat, now);
            tat = next;
            allowed += u32::from(d.allowed);
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn remaining_counts_down_and_retry_after_is_the_wait_for_one() {
        let p = policy(60, 60, 2); // one a second, two more at once
        let now = 5_000_000;
        let (d1, tat) = step(&p, 0, now);
        assert_eq!((d1.allowed, d1.remaining), (true, 2));
        assert_eq!(d1.reset, Duration::from_secs(1));
        let (d2, tat) = step(&p, tat, now);
        let (d3, tat) = step(&p, tat, now);
        assert_eq!((d2.remaining, d3.remaining), (1, 0));
        assert_eq!(d3.reset, Duration::from_secs(3));
        let (d4, same) = step(&p, tat, now);
        assert!(!d4.allowed);
        assert_eq!(same, tat, "a refusal does not move the TAT");
        assert_eq!(d4.retry_after, Duration::from_secs(1));
        // One interval later exactly one more conforms.
        let later = now + 1_000_000;
        let (d5, tat) = step(&p, tat, later);
        assert!(d5.allowed);
        assert!(!step(&p, tat, later).0.allowed);
    }

    #[test]
    fn over_a_window_at_most_requests_plus_burst_pass() {
        let p = policy(100, 60, 20);
        let mut tat = 0;
        let mut passed = 0;
        // A request every 10 ms for one minute: 6,000 offered.
        for i in 0..6_000u64 {
            let (d, next) = step(&p, tat, 1_000_000 + i * 10_000);
            tat = next;
            passed += u64::from(d.allowed);
        }
        assert!((100..=121).contains(&passed), "{passed} passed");
    }

    #[test]
    fn without_burst_requests_are_spaced_by_the_interval() {
        let p = policy(10, 1, 0);
        let (first, tat) = step(&p, 0, 0);
        assert!(first.allowed);
        assert_eq!(first.remaining, 0);
        assert!(!step(&p, tat, 99_999).0.allowed);
        assert!(step(&p, tat, 100_000).0.allowed);
    }

    #[test]
    fn local_buckets_are_per_key() {
        let buckets = LocalBuckets::new(policy(1, 60, 0));
        assert!(buckets.check("a").allowed);
        assert!(!buckets.check("a").allowed);
        assert!(buckets.check("b").allowed);
    }

    #[test]
    fn local_buckets_stay_bounded_under_distinct_keys() {
        let buckets = LocalBuckets::new(policy(1, 60, 0));
        for i in 0..(MAX_KEYS + 20_000) {
            buckets.check(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
        }
        assert!(buckets.len() <= MAX_KEYS, "{} keys held", buckets.len());
    }
}
