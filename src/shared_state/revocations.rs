//! [`RedisAuthState`]: auth's shared state on Redis, with this replica's
//! memory in front.
//!
//! The request path reads the local mirror only. The mirror is kept by one
//! background task: subscribe to the revocation channel, load every
//! revocation in force (so nothing published while the subscription was
//! down is missed), then apply each message as it comes, with a full
//! resynchronisation every [`RESYNC_EVERY`] and whenever an outage ends.
//! Entries expire with their token, as in memory.
//!
//! When Redis holds fewer revocations than the mirror (it lost its data),
//! the mirror writes the missing ones back, so replicas started later still
//! refuse those tokens.
//!
//! A revocation that cannot be stored in Redis is answered 503 (never
//! reported as done), refused here at once, and kept as pending: the task
//! stores it in Redis once Redis answers again, so the fleet learns it
//! without the token's holder having to retry (at most [`MAX_PENDING`]).
//!
//! Login counters ask Redis and count locally as well, so when Redis cannot
//! answer in time the local count decides: throttling never switches off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::memory::{FAILURE_WINDOW, InMemoryState};
use super::redis::Redis;
use super::{AuthState, Unavailable};

/// How often the mirror reloads every revocation, whatever pub/sub said.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// How long the task first waits before subscribing again after a
/// failure; it doubles while Redis stays down, up to [`RETRY_AT_MOST`].
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_AT_MOST: Duration = Duration::from_secs(5);

/// How often revocations pending for Redis are tried again.
const PENDING_RETRY: Duration = Duration::from_secs(1);

/// The most revocations kept for Redis during one outage.
pub const MAX_PENDING: usize = 100_000;

/// Revocations made during an outage, to store once Redis is back.
type Pending = Mutex<Vec<(String, i64)>>;

/// Auth's state on Redis.
#[derive(Debug)]
pub struct RedisAuthState {
    redis: Arc<Redis>,
    local: Arc<InMemoryState>,
    pending: Arc<Pending>,
}

impl RedisAuthState {
    /// The state, and the task that keeps its mirror (abort it to stop).
    pub fn start(redis: Arc<Redis>) -> (Self, tokio::task::AbortHandle) {
        let local = Arc::new(InMemoryState::default());
        let pending = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(mirror(redis.clone(), local.clone(), pending.clone()));
        let state = Self {
            redis,
            local,
            pending,
        };
        (state, task.abort_handle())
    }
}

/// Stores the revocations still pending; those Redis refuses stay.
async fn flush(redis: &Redis, pending: &Pending) {
    let waiting = match pending.lock() {
        Ok(mut held) => std::mem::take(&mut *held),
        Err(_) => return,
    };
    let mut failed = Vec::new();
    let now = crate::clock::unix_now();
    let mut down = false;
    for (member, until) in waiting {
        if until <= now {
            continue;
        }
        // After one failure the rest wait for the next try.
        if down || redis.revoke(&member, until).await.is_err() {
            down = true;
            failed.push((member, until));
        }
    }
    if !failed.is_empty()
        && let Ok(mut held) = pending.lock()
    {
        held.extend(failed);
    }
}

/// `iss\0jti`: one member for an issuer's token id (`\0` is in neither).
fn member(iss: &str, jti: &str) -> String {
    format!("{iss}\0{jti}")
}

/// Applies `<until> <iss>\0<jti>` (a published revocation) to `local`.
fn apply(local: &InMemoryState, until: i64, member: &str) {
    if let Some((iss, jti)) = member.split_once('\0') {
        local.revoke_until(iss, jti, until);
    }
}

fn apply_message(local: &InMemoryState, payload: &str) {
    if let Some((until, member)) = payload.split_once(' ')
        && let Ok(until) = until.parse::<i64>()
    {
        apply(local, until, member);
    }
}

/// Loads every revocation in force into `local`, then stores what is
/// pending (once Redis has answered).
async fn resync(redis: &Redis, local: &InMemoryState, pending: &Pending) -> bool {
    match redis.revocations().await {
        Ok(all) => {
            for (member, until) in &all {
                apply(local, *until, member);
            }
            tracing::debug!(revocations = all.len(), "revocations resynchronised");
            flush(redis, pending).await;
            // Redis holds fewer than this replica: it lost data (restarted
            // without persistence, or failed over). What this replica still
            // holds goes back, so replicas started later learn it too.
            if local.revocation_count() > all.len() {
                write_back(redis, local, &all).await;
            }
            true
        }
        Err(_) => false,
    }
}

/// Stores in Redis the revocations `local` holds that `stored` lacks.
async fn write_back(redis: &Redis, local: &InMemoryState, stored: &[(String, i64)]) {
    let known: std::collections::HashSet<&str> =
        stored.iter().map(|(member, _)| member.as_str()).collect();
    let now = crate::clock::unix_now();
    let missing: Vec<(String, i64)> = local
        .revocations()
        .into_iter()
        .filter(|(member, until)| *until > now && !known.contains(member.as_str()))
        .collect();
    if missing.is_empty() {
        return;
    }
    tracing::warn!(
        revocations = missing.len(),
        "the shared state lacked revocations this replica holds (Redis lost data?); writing them back"
    );
    for (member, until) in missing {
        if redis.revoke(&member, until).await.is_err() {
            return;
        }
    }
}

fn has_pending(pending: &Pending) -> bool {
    pending.lock().is_ok_and(|held| !held.is_empty())
}

/// The mirror's task: runs until aborted.
async fn mirror(redis: Arc<Redis>, local: Arc<InMemoryState>, pending: Arc<Pending>) {
    let mut backoff = RETRY_AFTER;
    loop {
        let Ok(pubsub) = redis.subscribe().await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_AT_MOST);
            continue;
        };
        backoff = RETRY_AFTER;
        let mut messages = pubsub.into_on_message();
        // Subscribed first, loaded second: a revocation published in
        // between is in the load or in the stream, never in neither.
        resync(&redis, &local, &pending).await;
        let mut every = tokio::time::interval(RESYNC_EVERY);
        every.reset();
        let mut retry = tokio::time::interval(PENDING_RETRY);
        retry.reset();
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        if let Ok(payload) = message.get_payload::<String>() {
                            apply_message(&local, &payload);
                        }
                    }
                    // The connection closed: Redis went away.
                    None => {
                        redis.health().failed("subscribe", "connection dropped");
                        break;
                    }
                },
                _ = every.tick() => {
                    resync(&redis, &local, &pending).await;
                }
                _ = retry.tick(), if has_pending(&pending) => {
                    flush(&redis, &pending).await;
                }
                () = redis.health().recovered() => {
                    resync(&redis, &local, &pending).await;
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

impl AuthState for RedisAuthState {
    fn revoke<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        // Refused here at once, whatever Redis answers.
        self.local.revoke_until(iss, jti, until);
        Box::pin(async move {
            let member = member(iss, jti);
            if self.redis.revoke(&member, until).await.is_ok() {
                return Ok(());
            }
            if let Ok(mut held) = self.pending.lock()
                && held.len() < MAX_PENDING
            {
                held.push((member, until));
            }
            Err(Unavailable)
        })
    }

    fn is_revoked(&self, iss: &str, jti: &str) -> bool {
        self.local.is_revoked(iss, jti)
    }

    fn begin_attempt<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(async move {
            let here = self.local.begin_attempt_now(subject, limit);
            match self
                .redis
                .begin_attempt(subject, limit, FAILURE_WINDOW)
                .await
            {
                Ok(fleet) => fleet,
                Err(_) => here,
            }
        })
    }

    fn forgive(&self, subject: &str) {
        self.local.forgive_now(subject);
        let redis = self.redis.clone();
        let subject = subject.to_owned();
        tokio::spawn(async move {
            let _ = redis.forgive(&subject).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_revocation_reaches_the_mirror() {
        let local = InMemoryState::default();
        let until = crate::clock::unix_now() + 60;
        apply_message(&local, &format!("{until} https://a\0abc"));
        assert!(local.is_revoked("https://a", "abc"));
        assert!(!local.is_revoked("https://a", "abd"));
    }

    #[test]
    fn malformed_messages_are_ignored() {
        let local = InMemoryState::default();
        for payload in [
            "",
            "x",
            "12",
            "abc https://a\0abc",
            "99999999999 no-separator",
        ] {
            apply_message(&local, payload);
        }
        assert!(!local.is_revoked("https://a", "abc"));
    }
}
