//! [`InMemoryState`]: revocations and login-failure counters in this
//! process's memory, bounded in size. The `memory` backend, and the local
//! mirror and fallback of the Redis one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{AuthState, Unavailable};
use crate::clock::unix_now;

/// The window login failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    started: Instant,
    failures: AtomicU32,
}

/// Each revocation expires at the time it was revoked until.
struct RevokedUntil;

impl moka::Expiry<String, i64> for RevokedUntil {
    fn expire_after_create(&self, _key: &String, until: &i64, _now: Instant) -> Option<Duration> {
        Some(remaining(*until))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        until: &i64,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(*until))
    }
}

fn remaining(until: i64) -> Duration {
    Duration::from_secs(u64::try_from(until.saturating_sub(unix_now())).unwrap_or(0))
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

impl InMemoryState {
    /// Revokes `jti` of `iss` until `until` (seconds since the epoch); a
    /// later `until` for the same token extends it, an earlier one does not
    /// shorten it.
    pub fn revoke_until(&self, iss: &str, jti: &str, until: i64) {
        self.any_revoked.store(true, Ordering::Release);
        let key = revocation_key(iss, jti);
        if self.revoked.get(&key).is_some_and(|held| held >= until) {
            return;
        }
        self.revoked.insert(key, until);
    }

    /// How many revocations are held (a moment ago).
    pub fn revocation_count(&self) -> usize {
        self.revoked.run_pending_tasks();
        usize::try_from(self.revoked.entry_count()).unwrap_or(usize::MAX)
    }

    /// Every revocation held, as `iss\0jti` and the time it holds until.
    pub fn revocations(&self) -> Vec<(String, i64)> {
        self.revoked
            .iter()
            .map(|(key, until)| ((*key).clone(), until))
            .collect()
    }

    /// Whether `jti` of `iss` is revoked.
    pub fn is_revoked(&self, iss: &str, jti: &str) -> bool {
        self.any_revoked.load(Ordering::Acquire)
            && self.revoked.contains_key(&revocation_key(iss, jti))
    }

    /// [`AuthState::begin_attempt`], at once.
    pub fn begin_attempt_now(&self, subject: &str, limit: u32) -> Result<(), Duration> {
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

    /// [`AuthState::forgive`].
    pub fn forgive_now(&self, subject: &str) {
        if let Some(window) = self.failures.get(subject) {
            let _ = window
                .failures
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

impl AuthState for InMemoryState {
    fn revoke<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        self.revoke_until(iss, jti, until);
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_revoked(&self, iss: &str, jti: &str) -> bool {
        InMemoryState::is_revoked(self, iss, jti)
    }

    fn begin_attempt<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(std::future::ready(self.begin_attempt_now(subject, limit)))
    }

    fn forgive(&self, subject: &str) {
        self.forgive_now(subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_holds_until_expiry() {
        let state = InMemoryState::default();
        state.revoke_until("https://a", "abc", unix_now() + 60);
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
            assert_eq!(state.begin_attempt_now("10.0.0.1", 3), Ok(()));
        }
        let blocked = state.begin_attempt_now("10.0.0.1", 3);
        assert!(blocked.is_err_and(|d| d <= FAILURE_WINDOW && d > Duration::from_secs(50)));
        state.forgive_now("10.0.0.1");
        assert_eq!(state.begin_attempt_now("10.0.0.1", 3), Ok(()));
        assert_eq!(state.begin_attempt_now("10.0.0.2", 3), Ok(()));
    }
}
