//! The Redis backend: one connection manager (it reconnects by itself), one
//! Lua script per decision, every key under `key_prefix` and with a TTL,
//! every operation bounded by `[shared_state] timeout`.
//!
//! Keys (after the prefix):
//!
//! - `revoked`: a sorted set of `iss\0jti` scored by the time (seconds
//!   since the epoch) each stays revoked until; members past it are removed
//!   at every revocation, and the set expires with its last member. Each
//!   revocation is also published on the channel `revocations` as
//!   `<until> <iss>\0<jti>`.
//! - `login:<sha256 of the subject>`: failures in the current window (the
//!   key's TTL is the window), so no client address or identity is stored
//!   in clear.
//! - `rl:<route>:<sha256 of the key>`: a rate-limit bucket's TAT in
//!   microseconds of the Redis server's clock (one clock for the fleet),
//!   expiring once the bucket is full again.
//!
//! Errors never carry the URL: [`RedisError`] holds a category only.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use ::redis::{Client, Script};

use super::SharedStateSettings;
use super::gcra::{Decision, Policy};
use super::health::Health;

/// A failed Redis operation, by category (no URL, no password, no reply text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{category}")]
pub struct RedisError {
    category: &'static str,
}

impl RedisError {
    /// What kind of failure it was.
    pub fn category(&self) -> &'static str {
        self.category
    }

    const TIMEOUT: RedisError = RedisError {
        category: "timed out",
    };

    fn from_client(err: &::redis::RedisError) -> Self {
        use ::redis::ErrorKind;
        let category = if err.is_timeout() {
            "timed out"
        } else if err.is_connection_refusal() {
            "connection refused"
        } else if err.is_connection_dropped() {
            "connection dropped"
        } else {
            match err.kind() {
                ErrorKind::AuthenticationFailed => "authentication failed",
                ErrorKind::InvalidClientConfig => "invalid URL or client settings",
                ErrorKind::Io => "I/O error",
                ErrorKind::Parse | ErrorKind::UnexpectedReturnType => "unexpected reply",
                ErrorKind::Server(_) | ErrorKind::Extension => "error reply from the server",
                _ => "client error",
            }
        };
        RedisError { category }
    }
}

const REVOKE: &str = r"
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not held) or tonumber(held) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local ttl = tonumber(ARGV[2]) - now + 1
if redis.call('TTL', KEYS[1]) < ttl then
  redis.call('EXPIRE', KEYS[1], ttl)
end
redis.call('PUBLISH', ARGV[4], ARGV[2] .. ' ' .. ARGV[1])
return 1
";

const ATTEMPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return math.max(redis.call('PTTL', KEYS[1]), 1)
end
return -1
";

const FORGIVE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then
  redis.call('DECR', KEYS[1])
end
return 1
";

// The step of `super::gcra::step`, on the server's clock.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now, tat - now - tolerance}
end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
local slack = now + tolerance + interval - nxt
if slack < 0 then slack = 0 end
return {1, math.floor(slack / interval), nxt - now, 0}
";

/// A connection to the shared Redis, with the scripts and the prefix.
pub struct Redis {
    client: Client,
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
    health: Health,
    revoke: Script,
    attempt: Script,
    forgive: Script,
    gcra: Script,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client of the Redis at `url`; connects lazily, at the first
    /// operation, so a replica starts while Redis is down.
    pub fn connect(
        url: &str,
        settings: &SharedStateSettings,
        health: Health,
    ) -> Result<Self, RedisError> {
        let client = Client::open(url).map_err(|err| RedisError::from_client(&err))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|err| RedisError::from_client(&err))?;
        Ok(Self {
            client,
            manager,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            health,
            revoke: Script::new(REVOKE),
            attempt: Script::new(ATTEMPT),
            forgive: Script::new(FORGIVE),
            gcra: Script::new(GCRA),
        })
    }

    /// The full name of key `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The health this connection reports into.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Runs `operation` within the timeout, reporting the result to health.
    async fn run<T, F>(&self, operation: &'static str, future: F) -> Result<T, RedisError>
    where
        F: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(RedisError::from_client(&err)),
            Err(_) => Err(RedisError::TIMEOUT),
        };
        match &result {
            Ok(_) => self.health.set_up(),
            Err(err) => self.health.failed(operation, err.category()),
        }
        result
    }

    /// Runs one command within the timeout, reporting to health.
    pub(super) async fn query<T: ::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        command: ::redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.manager.clone();
        let reply = command.query_async::<T>(&mut connection);
        self.run(operation, reply).await
    }

    /// Stores a revocation of `member` (`iss\0jti`) until `until` and
    /// publishes it.
    pub async fn revoke(&self, member: &str, until: i64) -> Result<(), RedisError> {
        let mut connection = self.manager.clone();
        let now = crate::clock::unix_now();
        let mut invocation = self.revoke.key(self.key("revoked"));
        invocation
            .arg(member)
            .arg(until)
            .arg(now)
            .arg(self.key("revocations"));
        let reply = invocation.invoke_async::<i64>(&mut connection);
        self.run("revoke", reply).await.map(drop)
    }

    /// Every revocation in force, with the time it holds until.
    pub async fn revocations(&self) -> Result<Vec<(String, i64)>, RedisError> {
        let mut connection = self.manager.clone();
        let now = crate::clock::unix_now();
        let mut command = ::redis::cmd("ZRANGEBYSCORE");
        command
            .arg(self.key("revoked"))
            .arg(now)
            .arg("+inf")
            .arg("WITHSCORES");
        let query = command.query_async::<Vec<(String, f64)>>(&mut connection);
        // The whole set may be large: a resynchronisation gets longer.
        let all = match tokio::time::timeout(self.timeout * 50, query).await {
            Ok(Ok(all)) => Ok(all),
            Ok(Err(err)) => Err(RedisError::from_client(&err)),
            Err(_) => Err(RedisError::TIMEOUT),
        };
        match &all {
            Ok(_) => self.health.set_up(),
            Err(err) => self.health.failed("resync", err.category()),
        }
        #[allow(clippy::cast_possible_truncation)]
        all.map(|all| {
            all.into_iter()
                .map(|(member, score)| (member, score as i64))
                .collect()
        })
    }

    /// A subscription to the revocation channel.
    pub async fn subscribe(&self) -> Result<PubSub, RedisError> {
        let channel = self.key("revocations");
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok(pubsub)
        };
        let connect_timeout = self.timeout.max(Duration::from_millis(500));
        match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(err)) => {
                let err = RedisError::from_client(&err);
                self.health.failed("subscribe", err.category());
                Err(err)
            }
            Err(_) => {
                self.health
                    .failed("subscribe", RedisError::TIMEOUT.category());
                Err(RedisError::TIMEOUT)
            }
        }
    }

    /// Counts an attempt of `subject` in the fleet's window; `Err(wait)`
    /// when `limit` are already counted.
    pub async fn begin_attempt(
        &self,
        subject: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), Duration>, RedisError> {
        let mut connection = self.manager.clone();
        let mut invocation = self.attempt.key(self.login_key(subject));
        invocation
            .arg(limit)
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let reply = invocation.invoke_async::<i64>(&mut connection);
        let wait = self.run("login_attempt", reply).await?;
        Ok(match u64::try_from(wait) {
            Ok(ms) => Err(Duration::from_millis(ms).max(Duration::from_secs(1))),
            Err(_) => Ok(()),
        })
    }

    /// Takes back one attempt of `subject`.
    pub async fn forgive(&self, subject: &str) -> Result<(), RedisError> {
        let mut connection = self.manager.clone();
        let invocation = self.forgive.key(self.login_key(subject));
        let reply = invocation.invoke_async::<i64>(&mut connection);
        self.run("login_forgive", reply).await.map(drop)
    }

    fn login_key(&self, subject: &str) -> String {
        self.key(&format!(
            "login:{}",
            crate::crypto::sha256_hex(subject.as_bytes())
        ))
    }

    /// One GCRA step for the bucket `key` (a full key name).
    pub async fn gcra(&self, key: &str, policy: &Policy) -> Result<Decision, RedisError> {
        let mut connection = self.manager.clone();
        let mut invocation = self.gcra.key(key);
        invocation
            .arg(policy.interval_micros())
            .arg(policy.tolerance_micros());
        let reply = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut connection);
        let (allowed, remaining, reset, wait) = self.run("rate_limit", reply).await?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset: micros(reset),
            retry_after: micros(wait),
        })
    }
}
