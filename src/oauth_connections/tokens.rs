//! The users' access tokens in use: cached per (connection, issuer,
//! subject), read from the vault when not cached, refreshed with the
//! stored refresh token before they expire.
//!
//! One refresh per user at a time: each user has a slot whose lock the
//! refresh holds, so concurrent requests wait for it and then share its
//! result (a failure too: waiting callers do not ask the provider again one
//! after another). The refresh runs in a task of its own, so a client that
//! goes away cannot cancel it between the provider rotating the refresh
//! token and warden storing the new one.
//!
//! A cached token is used for at most [`REREAD_AFTER`] before the vault is
//! read again, so a connection removed elsewhere (another replica, the
//! CLI) or refreshed by another replica is seen within that time. An access
//! token known to be expired is never handed out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::vault::RecordId;
use super::{OauthConnections, Tokens, open_record, provider, seal_record};
use crate::execution_key::ExecutionKey;
use crate::secret::SecretString;

/// How long a cached token is used before the vault is read again.
pub const REREAD_AFTER: Duration = Duration::from_secs(60);
/// The least life an access token must have left to be injected.
const MIN_REMAINING: i64 = 5;
/// The shortest time between two refreshes forced by upstream 401s.
pub const MIN_FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a replica waits for another one's refresh of the same user.
const OTHER_REFRESH_WAIT: Duration = Duration::from_secs(12);
/// The most users whose tokens are kept in memory.
const MAX_USERS: u64 = 100_000;

/// Why the user must run the loop (again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// There is no record (or it does not open).
    NotConnected,
    /// The provider refused the refresh token.
    Refused,
    /// The access token expired and there is no refresh token.
    Expired,
}

impl Needed {
    /// The name of the reason in the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Needed::NotConnected => "not_connected",
            Needed::Refused => "refresh_refused",
            Needed::Expired => "expired",
        }
    }
}

/// Why no token.
#[derive(Clone, Debug)]
pub enum TokenFailure {
    /// The user must connect (again): 401 `connection_required`.
    Required(Needed),
    /// The provider or the vault cannot be used now: 502.
    Unavailable(String),
}

#[derive(Clone)]
struct Cached {
    token: SecretString,
    use_until: Instant,
}

#[derive(Default)]
struct Slot {
    cached: Arc<tokio::sync::Mutex<Option<Cached>>>,
    /// Bumped by every failed load, with its outcome.
    failures: AtomicU64,
    last_failure: std::sync::Mutex<Option<TokenFailure>>,
    last_forced: std::sync::Mutex<Option<Instant>>,
}

/// The tokens in use, by user. Outlives reloads.
pub struct TokenCache {
    slots: moka::sync::Cache<RecordId, Arc<Slot>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("users", &self.slots.entry_count())
            .finish()
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            slots: moka::sync::Cache::builder()
                .max_capacity(MAX_USERS)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }
}

impl TokenCache {
    fn slot(&self, id: &RecordId) -> Arc<Slot> {
        self.slots.get_with_by_ref(id, || Arc::new(Slot::default()))
    }

    /// Forgets the tokens of `id` (unlinked, or linked anew).
    pub fn forget(&self, id: &RecordId) {
        self.slots.invalidate(id);
    }

    /// Whether an upstream's 401 may force a refresh of `id` now (at most
    /// once per [`MIN_FORCED_REFRESH_INTERVAL`], so a client cannot make
    /// warden ask the provider once per request).
    pub fn may_force_refresh(&self, id: &RecordId) -> bool {
        let slot = self.slot(id);
        let Ok(mut last) = slot.last_forced.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < MIN_FORCED_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// When a token living until `expires_at`, granted at `granted`, is due for
/// refresh: at 80 % of its life, and at the latest 30 s before it expires.
fn refresh_at(granted: i64, expires_at: i64) -> i64 {
    let life = (expires_at - granted).max(0);
    let margin = if life > 30 {
        (life / 5).max(30)
    } else {
        life / 5
    };
    expires_at - margin
}

impl OauthConnections {
    /// The access token of `id` to inject: the cached one, the stored one,
    /// or a refreshed one. `stale` is a token the upstream just refused:
    /// it is not handed out again.
    pub async fn access_token(
        self: &Arc<Self>,
        id: &RecordId,
        stale: Option<&SecretString>,
        key: Option<&ExecutionKey>,
    ) -> Result<SecretString, TokenFailure> {
        let slot = self.cache.slot(id);
        let failures_seen = slot.failures.load(Ordering::Acquire);
        let mut cached = slot.cached.clone().lock_owned().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.use_until
            && stale.is_none_or(|s| s != &current.token)
        {
            return Ok(current.token.clone());
        }
        // A load that failed while this caller waited is its answer too.
        if slot.failures.load(Ordering::Acquire) != failures_seen
            && let Ok(last) = slot.last_failure.lock()
            && let Some(failure) = last.clone()
        {
            return Err(failure);
        }
        let this = self.clone();
        let (id, stale, key) = (id.clone(), stale.cloned(), key.cloned());
        let task_slot = slot.clone();
        let loaded = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let result = this.load(&id, stale.as_ref(), key.as_ref()).await;
            match &result {
                Ok(fresh) => *cached = Some(fresh.clone()),
                Err(failure) => {
                    *cached = None;
                    if let Ok(mut last) = task_slot.last_failure.lock() {
                        *last = Some(failure.clone());
                    }
                    task_slot.failures.fetch_add(1, Ordering::AcqRel);
                }
            }
            result
        }))
        .await
        .unwrap_or_else(|_| Err(TokenFailure::Unavailable("the token task failed".into())));
        loaded.map(|fresh| fresh.token)
    }

    /// Reads the record and refreshes it when due.
    async fn load(
        &self,
        id: &RecordId,
        stale: Option<&SecretString>,
        key: Option<&ExecutionKey>,
    ) -> Result<Cached, TokenFailure> {
        let Some(settings) = self.settings.get(&id.connection).cloned() else {
            return Err(TokenFailure::Unavailable(
                "the connection is not configured".into(),
            ));
        };
        let unavailable = |e: super::vault::VaultError| TokenFailure::Unavailable(e.to_string());
        let Some(record) = self.vault.get(id).await.map_err(unavailable)? else {
            return Err(TokenFailure::Required(Needed::NotConnected));
        };
        let tokens = match open_record(&self.sealer, id, &record) {
            Ok(tokens) => tokens,
            Err(err) => {
                tracing::error!(connection = %id.connection, sub = %id.sub, error = %err, "a connection record cannot be used; the user must connect again");
                return Err(TokenFailure::Required(Needed::NotConnected));
            }
        };
        let now = crate::clock::unix_now();
        let refused_now = stale.is_some_and(|s| s == &tokens.access_token);
        let usable = !refused_now
            && tokens
                .expires_at
                .is_none_or(|exp| exp - MIN_REMAINING > now);
        let due = tokens
            .expires_at
            .is_some_and(|exp| now >= refresh_at(record.refreshed, exp));
        if usable && !due {
            return Ok(cached(&tokens, record.refreshed));
        }
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            if usable {
                return Ok(cached(&tokens, record.refreshed));
            }
            if refused_now {
                // Refused by the upstream and nothing to refresh it with:
                // the record is of no more use.
                if let Err(err) = self.remove(id, "upstream", key).await {
                    tracing::warn!(connection = %id.connection, error = %err, "cannot remove the refused connection");
                }
                return Err(TokenFailure::Required(Needed::Refused));
            }
            return Err(TokenFailure::Required(Needed::Expired));
        };
        // One refresh per user across the fleet: a replica that finds
        // another refreshing serves the current token while it is still
        // good, else waits for the other's result.
        if !self.vault.lock_refresh(id).await {
            if usable {
                return Ok(cached(&tokens, record.refreshed));
            }
            return self.await_other_refresh(id, &record).await;
        }
        let refreshed = self
            .refresh(id, &settings, &record, &tokens, refresh_token, usable, key)
            .await;
        self.vault.unlock_refresh(id).await;
        refreshed
    }

    /// Waits (up to [`OTHER_REFRESH_WAIT`]) for another replica's refresh
    /// of `id` to change `record`, and uses what it stored.
    async fn await_other_refresh(
        &self,
        id: &RecordId,
        record: &super::vault::StoredRecord,
    ) -> Result<Cached, TokenFailure> {
        let deadline = Instant::now() + OTHER_REFRESH_WAIT;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match self.vault.get(id).await {
                Ok(None) => return Err(TokenFailure::Required(Needed::NotConnected)),
                Ok(Some(newer)) if newer != *record => {
                    return match open_record(&self.sealer, id, &newer) {
                        Ok(current) => Ok(cached(&current, newer.refreshed)),
                        Err(_) => Err(TokenFailure::Required(Needed::NotConnected)),
                    };
                }
                _ => {}
            }
        }
        Err(TokenFailure::Unavailable(
            "another replica's refresh of the connection did not finish in time".into(),
        ))
    }

    /// Trades the refresh token for new tokens and stores them.
    #[allow(clippy::too_many_arguments)]
    async fn refresh(
        &self,
        id: &RecordId,
        settings: &super::OauthConnectionSettings,
        record: &super::vault::StoredRecord,
        tokens: &Tokens,
        refresh_token: SecretString,
        usable: bool,
        key: Option<&ExecutionKey>,
    ) -> Result<Cached, TokenFailure> {
        let label = settings.name.as_str();
        match provider::refresh(&self.client, settings, &refresh_token).await {
            Ok(grant) => {
                self.refresh_total.with_label_values(&[label, "ok"]).inc();
                let now = crate::clock::unix_now();
                let fresh = Tokens {
                    access_token: grant.access_token,
                    // A provider that does not rotate keeps the one it has.
                    refresh_token: grant.refresh_token.or(Some(refresh_token)),
                    expires_at: grant.expires_in.map(|life| {
                        now.saturating_add(i64::try_from(life.as_secs()).unwrap_or(i64::MAX))
                    }),
                };
                let scope = grant.scope.or(record.scope.clone());
                // The refresh took time: a record removed (unlinked) or
                // replaced (linked anew) meanwhile is not written over.
                let current = self.vault.get(id).await.ok().flatten();
                if current.as_ref() != Some(record) {
                    tracing::info!(connection = %id.connection, sub = %id.sub, "the connection changed during its refresh; the refreshed tokens are dropped");
                    return Err(match current {
                        None => TokenFailure::Required(Needed::NotConnected),
                        Some(_) => TokenFailure::Unavailable(
                            "the connection changed during its refresh".into(),
                        ),
                    });
                }
                match seal_record(&self.sealer, id, &fresh, record.created, scope) {
                    Ok(sealed) => {
                        if let Err(err) = self.vault.put(&sealed).await {
                            tracing::error!(connection = %id.connection, sub = %id.sub, error = %err, "cannot store the refreshed connection tokens: the access token serves for a minute, and a rotated refresh token is lost (the user may have to connect again)");
                        }
                    }
                    Err(err) => {
                        tracing::error!(connection = %id.connection, error = %err, "cannot seal the refreshed connection tokens")
                    }
                }
                self.audit
                    .event("connection_refreshed", key)
                    .field("connection", id.connection.clone())
                    .field("iss", id.iss.clone())
                    .field("sub", id.sub.clone())
                    .field("expires_at", fresh.expires_at)
                    .send();
                Ok(cached(&fresh, now))
            }
            Err(provider::GrantError::Refused { status, error }) => {
                // Another replica may have refreshed (and rotated) first:
                // then the record holds a refresh token other than ours.
                if let Ok(Some(newer)) = self.vault.get(id).await
                    && let Ok(current) = open_record(&self.sealer, id, &newer)
                    && current.refresh_token.as_ref() != Some(&refresh_token)
                {
                    return Ok(cached(&current, newer.refreshed));
                }
                self.refresh_total
                    .with_label_values(&[label, "refused"])
                    .inc();
                tracing::warn!(connection = %id.connection, sub = %id.sub, %status, error = error.as_deref().unwrap_or(""), "the provider refused the refresh token; the user must connect again");
                if let Err(err) = self.remove(id, "provider", key).await {
                    tracing::warn!(connection = %id.connection, error = %err, "cannot remove the refused connection");
                }
                Err(TokenFailure::Required(Needed::Refused))
            }
            Err(err) => {
                self.refresh_total
                    .with_label_values(&[label, "error"])
                    .inc();
                tracing::warn!(connection = %id.connection, sub = %id.sub, error = %err, "connection token refresh failed");
                // A token due for refresh but not expired still serves.
                if usable {
                    let mut current = cached(tokens, record.refreshed);
                    current.use_until = Instant::now() + Duration::from_secs(1);
                    return Ok(current);
                }
                Err(TokenFailure::Unavailable(err.to_string()))
            }
        }
    }
}

/// The cache entry of `tokens`: used until due for refresh, and for at
/// most [`REREAD_AFTER`].
fn cached(tokens: &Tokens, granted: i64) -> Cached {
    let now = crate::clock::unix_now();
    let reread = Instant::now() + REREAD_AFTER;
    let use_until = match tokens.expires_at {
        Some(exp) => {
            let left = refresh_at(granted, exp).saturating_sub(now).max(0);
            reread.min(Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0)))
        }
        None => reread,
    };
    Cached {
        token: tokens.access_token.clone(),
        use_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_at_four_fifths_of_their_life_or_30_s_before() {
        assert_eq!(refresh_at(0, 3600), 2880);
        assert_eq!(refresh_at(0, 100), 70);
        assert_eq!(refresh_at(0, 10), 8);
        assert_eq!(refresh_at(100, 50), 50);
    }
}
