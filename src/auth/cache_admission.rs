//! Admission to the verified-token cache: a token is cached the second time
//! it is verified, not the first.
//!
//! Most tokens are used many times, and pay for their verification once
//! more; a flood of one-use tokens (a load test, an attacker minting tokens
//! with a stolen key, a client that fetches a token per request) never
//! reaches the cache, so it costs neither the insertion (the cache's
//! bookkeeping costs about as much as an HMAC check) nor the eviction of the
//! tokens that are in real use. This is TinyLFU's "doorkeeper" in its
//! simplest form: one slot per hash bucket holding the fingerprint of the
//! last token verified there, read and written without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Remembers which tokens were verified once already.
#[derive(Debug)]
pub struct CacheAdmission {
    slots: Box<[AtomicU64]>,
    mask: usize,
}

impl CacheAdmission {
    /// The admission filter of a cache of `entries`: as many slots, rounded up to
    /// a power of two, between 1,024 and 1,048,576 (8 bytes each).
    pub fn new(entries: u64) -> Self {
        let wanted = usize::try_from(entries).unwrap_or(usize::MAX);
        let len = wanted.clamp(1 << 10, 1 << 20).next_power_of_two();
        Self {
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len - 1,
        }
    }

    /// Whether the token with this SHA-256 `digest` should be cached: true
    /// when it was verified before (and its slot not taken by another token
    /// since), false the first time, which is remembered.
    pub fn admit(&self, digest: &[u8; 32]) -> bool {
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, ..] = *digest;
        let fingerprint = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
        let bucket = u64::from_le_bytes([i, j, k, l, m, n, o, p]);
        // Truncation is the point: the low bits pick the slot.
        let slot = &self.slots[bucket as usize & self.mask];
        slot.swap(fingerprint, Ordering::Relaxed) == fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: u8) -> [u8; 32] {
        crate::crypto::sha256(&[seed])
    }

    #[test]
    fn a_token_is_admitted_from_its_second_verification_on() {
        let admission = CacheAdmission::new(10_000);
        let token = digest(1);
        assert!(!admission.admit(&token));
        assert!(admission.admit(&token));
        assert!(admission.admit(&token));
    }

    #[test]
    fn one_use_tokens_are_never_admitted() {
        let admission = CacheAdmission::new(10_000);
        let admitted = (0..=255)
            .filter(|&seed| admission.admit(&digest(seed)))
            .count();
        assert_eq!(admitted, 0);
    }

    #[test]
    fn the_table_is_a_bounded_power_of_two() {
        assert_eq!(CacheAdmission::new(0).slots.len(), 1024);
        assert_eq!(CacheAdmission::new(10_000).slots.len(), 16_384);
        assert_eq!(CacheAdmission::new(u64::MAX).slots.len(), 1 << 20);
    }
}
