//! Opaque records in the shared Redis, for concerns that keep per-user data
//! every replica must see (the OAuth connections of SPEC §13).
//!
//! Values are bytes the caller has already sealed: this module stores and
//! returns them, never looks inside. Keys (after the prefix):
//!
//! - `<table>` is a hash, one field per record. Records are kept until
//!   removed: they are not state that expires on its own, so these are the
//!   one kind of key without a TTL;
//! - `<table>:pending:<sha256 of the id>` is a short-lived value (its TTL is
//!   the caller's), taken at most once ([`Records::take_pending`] is `GETDEL`, Redis 6.2 or later).

use std::sync::Arc;
use std::time::Duration;

use super::redis::{Redis, RedisError};

/// The records of one table (a hash) and its short-lived values.
#[derive(Clone, Debug)]
pub struct Records {
    redis: Arc<Redis>,
    table: String,
}

impl Records {
    pub(super) fn new(redis: Arc<Redis>, table: &str) -> Self {
        let table = redis.key(table);
        Self { redis, table }
    }

    /// The record `field`, if stored.
    pub async fn get(&self, field: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut command = ::redis::cmd("HGET");
        command.arg(&self.table).arg(field);
        self.redis.query("records_get", command).await
    }

    /// Stores every `(field, value)` at once (one `HSET`: all or none).
    pub async fn put_all(&self, records: &[(String, Vec<u8>)]) -> Result<(), RedisError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut command = ::redis::cmd("HSET");
        command.arg(&self.table);
        for (field, value) in records {
            command.arg(field).arg(value);
        }
        self.redis
            .query::<i64>("records_put", command)
            .await
            .map(drop)
    }

    /// Removes record `field`; whether it was there.
    pub async fn remove(&self, field: &str) -> Result<bool, RedisError> {
        let mut command = ::redis::cmd("HDEL");
        command.arg(&self.table).arg(field);
        let removed: i64 = self.redis.query("records_remove", command).await?;
        Ok(removed > 0)
    }

    /// Every record.
    pub async fn all(&self) -> Result<Vec<(String, Vec<u8>)>, RedisError> {
        let mut command = ::redis::cmd("HGETALL");
        command.arg(&self.table);
        self.redis.query("records_list", command).await
    }

    /// Keeps `value` under `id` for `ttl`.
    pub async fn put_pending(
        &self,
        id: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut command = ::redis::cmd("SET");
        command
            .arg(self.pending_key(id))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        self.redis.query::<()>("pending_put", command).await
    }

    /// Counts one more use of `owner` in a window of `ttl` (from its first
    /// use); the count so far, this one included.
    pub async fn count_in_window(&self, owner: &str, ttl: Duration) -> Result<u64, RedisError> {
        let key = format!(
            "{}:pending-count:{}",
            self.table,
            crate::crypto::sha256_hex(owner.as_bytes())
        );
        // The window is set before anything is counted in it, so no
        // failure between the two commands leaves a count that never ends.
        let mut start = ::redis::cmd("SET");
        start
            .arg(&key)
            .arg(0)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("NX");
        self.redis
            .query::<Option<String>>("pending_count", start)
            .await?;
        let mut command = ::redis::cmd("INCR");
        command.arg(&key);
        self.redis.query("pending_count", command).await
    }

    /// Takes the lock `name` for at most `ttl`, unless another replica
    /// holds it: whether this one now does.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, RedisError> {
        let mut command = ::redis::cmd("SET");
        command
            .arg(self.lock_key(name))
            .arg(1)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("NX");
        let taken: Option<String> = self.redis.query("lock", command).await?;
        Ok(taken.is_some())
    }

    /// Gives the lock `name` back.
    pub async fn unlock(&self, name: &str) -> Result<(), RedisError> {
        let mut command = ::redis::cmd("DEL");
        command.arg(self.lock_key(name));
        self.redis.query::<i64>("lock", command).await.map(drop)
    }

    fn lock_key(&self, name: &str) -> String {
        format!(
            "{}:lock:{}",
            self.table,
            crate::crypto::sha256_hex(name.as_bytes())
        )
    }

    /// Takes the value under `id`: the first caller gets it, later ones
    /// (on any replica) get nothing.
    pub async fn take_pending(&self, id: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut command = ::redis::cmd("GETDEL");
        command.arg(self.pending_key(id));
        self.redis.query("pending_take", command).await
    }

    fn pending_key(&self, id: &str) -> String {
        format!(
            "{}:pending:{}",
            self.table,
            crate::crypto::sha256_hex(id.as_bytes())
        )
    }
}
