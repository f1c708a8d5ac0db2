//! Where connection records live: an embedded redb file by default (one
//! file beside the credential store; every write is one ACID transaction,
//! fsynced before it returns), or the shared Redis when `[shared_state]`
//! is Redis, so every replica serves every user. Records arrive here
//! sealed ([`super::seal`]): the vault stores bytes and the identity and
//! timestamps an operator may list, never a token in clear.
//!
//! The vault also holds the login loops in progress (`state` → the
//! sealed PKCE verifier and who asked), each for ten minutes and taken at
//! most once: in this process's memory with the embedded vault (a restart
//! forgets them; the user starts again), in Redis (`GETDEL`) with Redis.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::shared_state::records::Records;

/// The records table of the embedded vault: key → stored record (JSON).
const TABLE: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("connections");
/// The Redis hash of the records (after `[shared_state] key_prefix`).
pub const REDIS_TABLE: &str = "connections";
/// The longest one replica holds a user's refresh lock (more than a token
/// request may take).
pub const REFRESH_LOCK: Duration = Duration::from_secs(15);
/// How long a login loop may take.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// The most login loops one user may start in [`PENDING_TTL`]: a token
/// holder cannot fill the vault (or crowd out other users' loops).
pub const MAX_PENDING_PER_USER: u64 = 10;
/// The most login loops in progress this process keeps (beyond it, moka
/// evicts the least useful).
const MAX_PENDING: u64 = 100_000;

/// Whose record it is: the connection, and the token's issuer and subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordId {
    /// The `[[oauth_connections]]` name.
    pub connection: String,
    /// The `iss` of the user's token.
    pub iss: String,
    /// The `sub` of the user's token.
    pub sub: String,
}

impl RecordId {
    /// The record's key in the store (a JSON array: unambiguous).
    pub fn key(&self) -> String {
        serde_json::json!([self.connection, self.iss, self.sub]).to_string()
    }
}

/// One record as stored: what may be listed in clear, and the sealed tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Whose it is.
    #[serde(flatten)]
    pub id: RecordId,
    /// When the connection was made (seconds since the epoch).
    pub created: i64,
    /// When its tokens last changed.
    pub refreshed: i64,
    /// When the access token expires, when the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The scope the provider granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The tokens, sealed (base64url).
    pub sealed: String,
}

impl StoredRecord {
    /// What an operator sees: never a token, sealed or not.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "connection": self.id.connection,
            "iss": self.id.iss,
            "sub": self.id.sub,
            "created": self.created,
            "refreshed": self.refreshed,
            "expires_at": self.expires_at,
            "scope": self.scope,
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        serde_json::from_slice(bytes).map_err(|_| VaultError::Damaged)
    }
}

/// A vault problem. Never holds a token or the Redis URL.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The embedded file cannot be opened or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A record that is not one warden wrote.
    #[error("a stored connection record is damaged")]
    Damaged,
    /// Redis did not answer.
    #[error("the shared state is unavailable ({0})")]
    Unavailable(&'static str),
    /// A blocking task failed.
    #[error("the vault task failed")]
    Task,
}

enum Backend {
    Embedded {
        db: Arc<redb::Database>,
        path: PathBuf,
    },
    Redis(Records),
}

/// The records and the login loops in progress.
pub struct Vault {
    backend: Backend,
    pending: moka::sync::Cache<String, Arc<Vec<u8>>>,
    /// Loops started per user in the current window (embedded vault).
    started: moka::sync::Cache<String, Arc<std::sync::atomic::AtomicU64>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Embedded { path, .. } => write!(f, "Vault({})", path.display()),
            Backend::Redis(_) => f.write_str("Vault(redis)"),
        }
    }
}

/// The embedded vault's file for the credential store at `store`:
/// `credentials.store` → `credentials.connections.redb`, beside it.
pub fn embedded_path(store: &Path) -> PathBuf {
    store.with_extension("connections.redb")
}

fn file_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> VaultError + '_ {
    move |err| VaultError::File {
        path: path.to_owned(),
        reason: err.to_string(),
    }
}

impl Vault {
    /// Opens (or creates, mode 0600) the embedded vault at `path`. Other
    /// processes (`warden connections`) may open it at the same time; one
    /// write runs at a time.
    pub fn open_embedded(path: &Path) -> Result<Self, VaultError> {
        let fail = file_error(path);
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(&e))?;
        }
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| fail(&e))?;
        let write = db.begin_write().map_err(|e| fail(&e))?;
        write.open_table(TABLE).map_err(|e| fail(&e))?;
        write.commit().map_err(|e| fail(&e))?;
        Ok(Self {
            backend: Backend::Embedded {
                db: Arc::new(db),
                path: path.to_owned(),
            },
            pending: pending_cache(),
            started: started_cache(),
        })
    }

    /// The vault in Redis.
    pub fn redis(records: Records) -> Self {
        Self {
            backend: Backend::Redis(records),
            pending: pending_cache(),
            started: started_cache(),
        }
    }

    /// Where the records are, for messages.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Embedded { path, .. } => path.display().to_string(),
            Backend::Redis(_) => "the shared Redis".into(),
        }
    }

    /// The record of `id`, if stored.
    pub async fn get(&self, id: &RecordId) -> Result<Option<StoredRecord>, VaultError> {
        let key = id.key();
        let bytes = match &self.backend {
            Backend::Embedded { db, path } => {
                let (db, path) = (db.clone(), path.clone());
                blocking(move || {
                    let fail = file_error(&path);
                    let read = db.begin_read().map_err(|e| fail(&e))?;
                    let table = read.open_table(TABLE).map_err(|e| fail(&e))?;
                    let value = table.get(key.as_str()).map_err(|e| fail(&e))?;
                    Ok(value.map(|v| v.value().to_vec()))
                })
                .await?
            }
            Backend::Redis(records) => records.get(&key).await.map_err(unavailable)?,
        };
        bytes.map(|b| StoredRecord::from_bytes(&b)).transpose()
    }

    /// Stores `record` (replacing the one of its id).
    pub async fn put(&self, record: &StoredRecord) -> Result<(), VaultError> {
        self.put_all(vec![record.clone()]).await
    }

    /// Stores every record in one transaction.
    pub async fn put_all(&self, records: Vec<StoredRecord>) -> Result<(), VaultError> {
        let rows: Vec<(String, Vec<u8>)> =
            records.iter().map(|r| (r.id.key(), r.to_bytes())).collect();
        match &self.backend {
            Backend::Embedded { db, path } => {
                let (db, path) = (db.clone(), path.clone());
                blocking(move || {
                    let fail = file_error(&path);
                    let write = db.begin_write().map_err(|e| fail(&e))?;
                    {
                        let mut table = write.open_table(TABLE).map_err(|e| fail(&e))?;
                        for (key, value) in &rows {
                            table
                                .insert(key.as_str(), value.as_slice())
                                .map_err(|e| fail(&e))?;
                        }
                    }
                    write.commit().map_err(|e| fail(&e))
                })
                .await
            }
            Backend::Redis(records) => records.put_all(&rows).await.map_err(unavailable),
        }
    }

    /// Removes the record of `id`; whether there was one.
    pub async fn remove(&self, id: &RecordId) -> Result<bool, VaultError> {
        let key = id.key();
        match &self.backend {
            Backend::Embedded { db, path } => {
                let (db, path) = (db.clone(), path.clone());
                blocking(move || {
                    let fail = file_error(&path);
                    let write = db.begin_write().map_err(|e| fail(&e))?;
                    let removed = {
                        let mut table = write.open_table(TABLE).map_err(|e| fail(&e))?;
                        table.remove(key.as_str()).map_err(|e| fail(&e))?.is_some()
                    };
                    write.commit().map_err(|e| fail(&e))?;
                    Ok(removed)
                })
                .await
            }
            Backend::Redis(records) => records.remove(&key).await.map_err(unavailable),
        }
    }

    /// Every record, ordered by connection, issuer and subject.
    pub async fn list(&self) -> Result<Vec<StoredRecord>, VaultError> {
        let rows = match &self.backend {
            Backend::Embedded { db, path } => {
                let (db, path) = (db.clone(), path.clone());
                blocking(move || {
                    let fail = file_error(&path);
                    let read = db.begin_read().map_err(|e| fail(&e))?;
                    let table = read.open_table(TABLE).map_err(|e| fail(&e))?;
                    let mut rows = Vec::new();
                    for row in table.iter().map_err(|e| fail(&e))? {
                        let (key, value) = row.map_err(|e| fail(&e))?;
                        rows.push((key.value().to_owned(), value.value().to_vec()));
                    }
                    Ok(rows)
                })
                .await?
            }
            Backend::Redis(records) => records.all().await.map_err(unavailable)?,
        };
        // One damaged record does not hide the others; nor is a record
        // stored under another identity's key listed as that identity's.
        let mut records: Vec<StoredRecord> = rows
            .iter()
            .filter_map(|(key, bytes)| match StoredRecord::from_bytes(bytes) {
                Ok(record) if record.id.key() == *key => Some(record),
                Ok(_) => {
                    tracing::warn!(vault = %self.location(), "skipping a connection record stored under another identity's key");
                    None
                }
                Err(err) => {
                    tracing::warn!(vault = %self.location(), error = %err, "skipping a damaged connection record");
                    None
                }
            })
            .collect();
        records.sort_by(|a, b| {
            (&a.id.connection, &a.id.iss, &a.id.sub).cmp(&(&b.id.connection, &b.id.iss, &b.id.sub))
        });
        Ok(records)
    }

    /// Takes the fleet-wide refresh lock of `id` (for [`REFRESH_LOCK`] at
    /// most): `false` when another replica refreshes that user now. The
    /// embedded vault has one process: always `true`. A Redis that does not
    /// answer grants it (the refresh then runs as it would alone).
    pub async fn lock_refresh(&self, id: &RecordId) -> bool {
        match &self.backend {
            Backend::Embedded { .. } => true,
            Backend::Redis(records) => records
                .try_lock(&id.key(), REFRESH_LOCK)
                .await
                .unwrap_or(true),
        }
    }

    /// Gives the refresh lock of `id` back.
    pub async fn unlock_refresh(&self, id: &RecordId) {
        if let Backend::Redis(records) = &self.backend {
            let _ = records.unlock(&id.key()).await;
        }
    }

    /// Counts a loop started by `owner`; `false` once they started
    /// [`MAX_PENDING_PER_USER`] within [`PENDING_TTL`].
    pub async fn may_start(&self, owner: &str) -> Result<bool, VaultError> {
        let count = match &self.backend {
            Backend::Embedded { .. } => self
                .started
                .get_with_by_ref(owner, || Arc::new(std::sync::atomic::AtomicU64::new(0)))
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                .saturating_add(1),
            Backend::Redis(records) => records
                .count_in_window(owner, PENDING_TTL)
                .await
                .map_err(unavailable)?,
        };
        Ok(count <= MAX_PENDING_PER_USER)
    }

    /// Keeps a login loop's sealed state under `state` for [`PENDING_TTL`].
    pub async fn put_pending(&self, state: &str, sealed: Vec<u8>) -> Result<(), VaultError> {
        match &self.backend {
            Backend::Embedded { .. } => {
                self.pending.insert(state.to_owned(), Arc::new(sealed));
                Ok(())
            }
            Backend::Redis(records) => records
                .put_pending(state, &sealed, PENDING_TTL)
                .await
                .map_err(unavailable),
        }
    }

    /// Takes the login loop of `state`: once, and only within its time.
    pub async fn take_pending(&self, state: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match &self.backend {
            Backend::Embedded { .. } => Ok(self.pending.remove(state).map(Arc::unwrap_or_clone)),
            Backend::Redis(records) => records.take_pending(state).await.map_err(unavailable),
        }
    }
}

fn pending_cache() -> moka::sync::Cache<String, Arc<Vec<u8>>> {
    moka::sync::Cache::builder()
        .max_capacity(MAX_PENDING)
        .time_to_live(PENDING_TTL)
        .build()
}

fn started_cache() -> moka::sync::Cache<String, Arc<std::sync::atomic::AtomicU64>> {
    moka::sync::Cache::builder()
        .max_capacity(MAX_PENDING)
        .time_to_live(PENDING_TTL)
        .build()
}

fn unavailable(err: crate::shared_state::redis::RedisError) -> VaultError {
    VaultError::Unavailable(err.category())
}

/// Runs a file operation off the async workers (a commit fsyncs).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, VaultError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| VaultError::Task)?
}
