//! Shared auth state: revoked token ids and login-failure counters, behind
//! one small trait ([`AuthState`]) so that a shared backend (Redis, for
//! several replicas) can replace [`InMemoryState`] without touching the
//! request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::clock::unix_now;

/// The window login failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Revocations and login-failure counters.
pub trait AuthState: Send + Sync + std::fmt::Debug {
    /// Revokes the token `jti` of issuer `iss` until `exp` (seconds since
    /// the epoch) and past it by the longest leeway a config may allow.
    fn revoke(&self, iss: &str, jti: &str, exp: i64);
    /// Whether the token `jti` of issuer `iss` is revoked.
    fn is_revoked(&self, iss: &str, jti: &str) -> bool;
    /// Counts a login attempt for `subject` (a client address or an
    /// identity) as it begins, so attempts still in flight count too. When
    /// `limit` attempts are already counted in the current window, counts
    /// nothing and returns how long until the window ends.
    fn begin_attempt(&self, subject: &str, limit: u32) -> Result<(), Duration>;
    /// Takes back an attempt of `subject` that succeeded (or was refused
    /// before any credential was checked): only failures stay counted.
    fn forgive(&self, subject: &str);
}

#[derive(Debug)]
struct Window {
    started: Instant,
    failures: AtomicU32,
}

struct RevokedUntil;

/// How long past `exp` a revocation is kept: the longest `leeway` a config
/// may set, and a minute more, so leeway can never revive a revoked token.
pub const REVOCATION_MARGIN: Duration = Duration::from_secs(crate::auth::MAX_LEEWAY_SECS + 60);

impl moka::Expiry<String, i64> for RevokedUntil {
    fn expire_after_create(&self, _key: &String, exp: &i64, _now: Instant) -> Option<Duration> {
        let remaining = u64::try_from(exp.saturating_sub(unix_now())).unwrap_or(0);
        Some(Duration::from_secs(remaining) + REVOCATION_MARGIN)
    }
}

/// One key for an issuer's token id (`\0` cannot occur in either).
fn revocation_key(iss: &str, jti: &str) -> String {
    format!("{iss}\0{jti}")
}

/// [`AuthState`] in this process's memory, bounded in size.
#[derive(Debug)]
pub struct InMemoryState {
    revoked: moka::sync::Cache<String, i64>,
    /// Set at the first revocation: until then no token needs a lookup.
    any_revoked: AtomicBool,
    failures: moka::sync::Cache<String, Arc<Window>>,
    window: Duration,
}

impl InMemoryState {
    /// A state holding at most `max_revoked` revocations and
    /// `max_tracked` failure counters, counting failures per [`FAILURE_WINDOW`].
    pub fn new(max_revoked: u64, max_tracked: u64) -> Self {
        Self::with_window(max_revoked, max_tracked, FAILURE_WINDOW)
    }

    /// As [`InMemoryState::new`], with another failure window (for tests).
    pub fn with_window(max_revoked: u64, max_tracked: u64, window: Duration) -> Self {
        Self {
            revoked: moka::sync::Cache::builder()
                .max_capacity(max_revoked)
                .expire_after(RevokedUntil)
                .build(),
            any_revoked: AtomicBool::new(false),
            failures: moka::sync::Cache::builder()
                .max_capacity(max_tracked)
                .time_to_live(window)
                .build(),
            window,
        }
    }
}

impl Default for InMemoryState {
    fn default() -> Self {
        Self::new(1_000_000, 100_000)
    }
}

impl AuthState for InMemoryState {
    fn revoke(&self, iss: &str, jti: &str, exp: i64) {
        self.any_revoked.store(true, Ordering::Release);
        self.revoked.insert(revocation_key(iss, jti), exp);
    }

    fn is_revoked(&self, iss: &str, jti: &str) -> bool {
        self.any_revoked.load(Ordering::Acquire)
            && self.revoked.contains_key(&revocation_key(iss, jti))
    }

    fn begin_attempt(&self, subject: &str, limit: u32) -> Result<(), Duration> {
        let window = self.failures.get_with(subject.to_owned(), || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        let counted = window
            .failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        match counted {
            Ok(_) => Ok(()),
            Err(_) => Err(self
                .window
                .saturating_sub(window.started.elapsed())
                .max(Duration::from_secs(1))),
        }
    }

    fn forgive(&self, subject: &str) {
        if let Some(window) = self.failures.get(subject) {
            let _ = window
                .failures
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_holds_until_expiry() {
        let state = InMemoryState::default();
        state.revoke("https://a", "abc", unix_now() + 60);
        assert!(state.is_revoked("https://a", "abc"));
        assert!(!state.is_revoked("https://a", "abd"));
        assert!(
            !state.is_revoked("https://b", "abc"),
            "another issuer's jti"
        );
    }

    #[test]
    fn attempts_block_at_the_limit_and_successes_are_forgiven() {
        let state = InMemoryState::default();
        for _ in 0..3 {
            assert_eq!(state.begin_attempt("10.0.0.1", 3), Ok(()));
        }
        let blocked = state.begin_attempt("10.0.0.1", 3);
        assert!(blocked.is_err_and(|d| d <= FAILURE_WINDOW && d > Duration::from_secs(50)));
        state.forgive("10.0.0.1");
        assert_eq!(state.begin_attempt("10.0.0.1", 3), Ok(()));
        assert_eq!(state.begin_attempt("10.0.0.2", 3), Ok(()));
    }
}
