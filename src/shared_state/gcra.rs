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
//! Memory stays bounded under a flood of distinct keys: one route's local
//! buckets hold at most [`MAX_KEYS`] keys. A shard that is full first
//! forgets the buckets that are full again (TAT passed: forgetting them
//! changes no decision), then the one closest to full. One entry costs
//! about 100 bytes with its key, held as a 64-byte hash when longer: at
//! most about 10 MB per route.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys one route's local buckets hold; the least recently used
/// go first beyond it.
pub const MAX_KEYS: u64 = 100_000;

/// Keys up to this length are held as they are; longer ones as a hash.
pub const MAX_KEY_BYTES: usize = 64;

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

/// One route's buckets in this process: TATs in a map split into
/// [`SHARDS`] locked shards (a lookup locks one shard for a hash and a
/// compare; no allocation once a key is held).
#[derive(Debug)]
pub struct LocalBuckets {
    policy: Policy,
    shards: Box<[Shard]>,
    /// Keys one shard may hold.
    per_shard: usize,
    hasher: std::hash::RandomState,
    epoch: Instant,
}

/// Makes room in a full shard: full buckets (TAT passed) go, since they
/// are the same as no bucket; if that is not an eighth of the shard, the
/// eighth closest to full goes too (the least lost), so that a flood of
/// new keys pays for this once every few thousand keys, not per key.
fn make_room(shard: &mut HashMap<Box<str>, u64>, now: u64, limit: usize) {
    shard.retain(|_, tat| *tat > now);
    if shard.len() < limit - limit / 8 {
        return;
    }
    let mut tats: Vec<u64> = shard.values().copied().collect();
    let cut = tats.len() / 8;
    let (_, threshold, _) = tats.select_nth_unstable(cut);
    let threshold = *threshold;
    shard.retain(|_, tat| *tat > threshold);
}

/// One lock's worth of buckets: TAT by key.
type Shard = Mutex<HashMap<Box<str>, u64>>;

/// How many shards one route's buckets are split into.
const SHARDS: usize = 64;

impl LocalBuckets {
    /// Empty buckets for `policy`.
    pub fn new(policy: Policy) -> Self {
        let per_shard = usize::try_from(MAX_KEYS).unwrap_or(usize::MAX) / SHARDS;
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hasher: std::hash::RandomState::new(),
            policy,
            epoch: Instant::now(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How many keys are held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |held| held.len()))
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one request of `key`. Keys longer than [`MAX_KEY_BYTES`]
    /// (a header's value, say) are held as their SHA-256, so memory is
    /// bounded in bytes, not only in entries.
    pub fn check(&self, key: &str) -> Decision {
        if key.len() > MAX_KEY_BYTES {
            let hashed = crate::crypto::sha256_hex(key.as_bytes());
            return self.check_short(&hashed);
        }
        self.check_short(key)
    }

    fn check_short(&self, key: &str) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let index = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % SHARDS;
        let Ok(mut shard) = self.shards[index].lock() else {
            // A panic while holding the lock: count as a fresh bucket.
            return step(&self.policy, now, now).0;
        };
        if let Some(tat) = shard.get_mut(key) {
            let (decision, next) = step(&self.policy, *tat, now);
            *tat = next;
            return decision;
        }
        if shard.len() >= self.per_shard {
            make_room(&mut shard, now, self.per_shard);
        }
        let (decision, next) = step(&self.policy, now, now);
        shard.insert(key.into(), next);
        decision
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
        let held = u64::try_from(buckets.len()).expect("a count fits u64");
        assert!(held <= MAX_KEYS, "{held} keys held");
        // The keys seen last are still counted.
        assert!(!buckets.check("10.1.212.191").allowed);
    }
}
