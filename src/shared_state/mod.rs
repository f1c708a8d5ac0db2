//! State that every replica must decide the same way (SPEC §10):
//! revocations, login-failure counters and rate-limit counters.
//!
//! Two backends behind the same types:
//!
//! - `memory` (the default): this process only ([`InMemoryState`], and the
//!   local rate-limit store in [`gcra`]);
//! - `redis`: shared by every replica that points at the same Redis
//!   ([`redis`]). The request path never waits on Redis to learn that a token
//!   is *not* revoked: each replica mirrors the revoked `jti`s in memory,
//!   kept current by pub/sub and a periodic full resynchronisation
//!   ([`revocations`]). Login counters and rate limits ask Redis (one Lua
//!   script per decision, every key with a TTL) and fall back to this
//!   replica's own counters while it cannot be reached, so throttling never
//!   switches off. [`health`] reports the outage once and counts errors.
//!
//! [`SharedState::start`] builds the backend a config names; it outlives
//! reloads (a change of `[shared_state]` takes a restart).

pub mod gcra;
pub mod health;
mod memory;
pub mod records;
pub mod redis;
mod revocations;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use memory::{FAILURE_WINDOW, InMemoryState};

use self::gcra::{Decision, LocalBuckets, Policy};
use self::health::Health;
use self::records::Records;
use self::redis::{Redis, RedisError};
use crate::metrics::Metrics;

/// Revocations and login-failure counters: the part of the shared state
/// that auth uses, whatever the backend.
pub trait AuthState: Send + Sync + fmt::Debug {
    /// Revokes the token `jti` of issuer `iss` until `until` (seconds since
    /// the epoch). Resolves once the revocation is stored where every
    /// replica sees it; [`Unavailable`] when it could not be (this replica
    /// refuses the token anyway).
    fn revoke<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), Unavailable>>;
    /// Whether the token `jti` of issuer `iss` is revoked. Local memory
    /// only: never waits on another process.
    fn is_revoked(&self, iss: &str, jti: &str) -> bool;
    /// Counts a login attempt for `subject` (a client address or an
    /// identity) as it begins, so attempts still in flight count too. When
    /// `limit` attempts are already counted in the current window, counts
    /// nothing and resolves to how long until the window ends.
    fn begin_attempt<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<(), Duration>>;
    /// Takes back an attempt of `subject` that succeeded (or was refused
    /// before any credential was checked): only failures stay counted.
    fn forgive(&self, subject: &str);
}

/// The shared backend could not store something every replica must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared state (Redis) cannot be reached")]
pub struct Unavailable;

/// Which backend holds the shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This process's memory.
    Memory,
    /// A Redis server shared by every replica.
    Redis {
        /// The environment variable that holds the URL (with its password).
        url_env: String,
    },
}

/// `[shared_state]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStateSettings {
    /// The backend.
    pub backend: Backend,
    /// Every key warden writes starts with it.
    pub key_prefix: String,
    /// The longest one Redis operation may take.
    pub timeout: Duration,
}

impl Default for SharedStateSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            key_prefix: "warden:".into(),
            timeout: Duration::from_millis(100),
        }
    }
}

/// Why the shared state could not be set up. Never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The variable `url_env` names is not set.
    #[error(
        "the environment variable {0} (named by [shared_state] url_env) is not set; set it to redis://[user:password@]host:port/db or rediss://…"
    )]
    MissingUrl(String),
    /// The URL is not one the Redis client accepts.
    #[error(
        "the Redis URL in {0} is not valid ({1}); expected redis://[user:password@]host:port/db or rediss://…"
    )]
    BadUrl(String, &'static str),
}

/// The shared state of this process: auth's part and the rate-limit
/// counters, on the configured backend.
#[derive(Clone)]
pub struct SharedState {
    auth: Arc<dyn AuthState>,
    redis: Option<Arc<Redis>>,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// The backend `settings` name. With Redis, starts the revocation
    /// mirror's background task (it ends when `tasks` are aborted) but does
    /// not wait for Redis: a replica starts, degraded, while Redis is down.
    pub fn start(
        settings: &SharedStateSettings,
        metrics: &Metrics,
        tasks: &mut Vec<tokio::task::AbortHandle>,
    ) -> Result<Self, StartError> {
        let health = Health::new(metrics);
        match &settings.backend {
            Backend::Memory => Ok(Self::in_memory(Arc::new(InMemoryState::default()), health)),
            Backend::Redis { url_env } => {
                let url =
                    std::env::var(url_env).map_err(|_| StartError::MissingUrl(url_env.clone()))?;
                let redis = Redis::connect(&url, settings, health)
                    .map_err(|err| StartError::BadUrl(url_env.clone(), err.category()))?;
                let redis = Arc::new(redis);
                let (auth, task) = revocations::RedisAuthState::start(redis.clone());
                tasks.push(task);
                Ok(Self {
                    auth: Arc::new(auth),
                    redis: Some(redis),
                })
            }
        }
    }

    /// This process's memory only, with `auth` as the auth state (a test's,
    /// or the default); `health` reports it up (memory always is).
    pub fn in_memory(auth: Arc<dyn AuthState>, health: Health) -> Self {
        health.set_up();
        Self { auth, redis: None }
    }

    /// Revocations and login counters.
    pub fn auth(&self) -> Arc<dyn AuthState> {
        self.auth.clone()
    }

    /// The records of `table` in Redis, when the backend is Redis.
    pub fn records(&self, table: &str) -> Option<Records> {
        self.redis.clone().map(|redis| Records::new(redis, table))
    }

    /// The records of `table` in the Redis `settings` name, for a command
    /// that runs without the gateway (no mirror task, no metrics).
    pub fn records_for_tool(
        settings: &SharedStateSettings,
        table: &str,
    ) -> Result<Option<Records>, StartError> {
        let Backend::Redis { url_env } = &settings.backend else {
            return Ok(None);
        };
        let url = std::env::var(url_env).map_err(|_| StartError::MissingUrl(url_env.clone()))?;
        let metrics = Metrics::new(prometheus::Registry::new())
            .map_err(|_| StartError::BadUrl(url_env.clone(), "metrics could not be set up"))?;
        let redis = Redis::connect(&url, settings, Health::new(&metrics))
            .map_err(|err| StartError::BadUrl(url_env.clone(), err.category()))?;
        Ok(Some(Records::new(Arc::new(redis), table)))
    }

    /// A rate-limit counter for one route's policy, on this backend.
    pub fn rate_limiter(&self, route: &str, policy: Policy) -> RateLimiter {
        RateLimiter {
            local: Arc::new(LocalBuckets::new(policy.clone())),
            // The policy is in the name: a changed limit starts afresh, as
            // it does in memory, rather than reading state kept by another.
            redis: self.redis.clone().map(|redis| {
                let prefix = redis.key(&format!(
                    "rl:{route}:{}-{}-{}:",
                    policy.requests,
                    policy.per.as_secs(),
                    policy.burst
                ));
                (redis, Arc::<str>::from(prefix))
            }),
        }
    }
}

/// The counters of one route's rate limit: fleet-wide in Redis when the
/// backend is Redis (falling back to this replica's while it is down),
/// else this replica's.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    local: Arc<LocalBuckets>,
    redis: Option<(Arc<Redis>, Arc<str>)>,
}

impl RateLimiter {
    /// Whether the backend must be asked over the network (so the decision
    /// is a future worth awaiting).
    pub fn is_remote(&self) -> bool {
        self.redis.is_some()
    }

    /// Counts one request of `key` in this replica's buckets.
    pub fn check_local(&self, key: &str) -> Decision {
        self.local.check(key)
    }

    /// Counts one request of `key`: in Redis when there is one and it
    /// answers in time, else locally.
    pub async fn check(&self, key: &str) -> Decision {
        let Some((redis, prefix)) = &self.redis else {
            return self.local.check(key);
        };
        let mut name = String::with_capacity(prefix.len() + 64);
        name.push_str(prefix);
        name.push_str(&crate::crypto::sha256_hex(key.as_bytes()));
        match redis.gcra(&name, self.local.policy()).await {
            Ok(decision) => decision,
            Err(RedisError { .. }) => self.local.check(key),
        }
    }
}
