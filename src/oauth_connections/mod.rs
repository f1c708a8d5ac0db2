//! Per-user upstream OAuth connections (SPEC §13): warden runs the OAuth
//! authorization-code loop (with PKCE) for each user, keeps the tokens the
//! provider grants sealed in a vault, refreshes them, and injects the
//! calling user's own access token on routes with
//! `inject = { connection = "NAME" }`.
//!
//! - [`seal`]: AES-256-GCM under a key derived from the master key, each
//!   record bound to its connection, issuer and subject;
//! - [`vault`]: the records (redb file, or Redis) and the loops in progress;
//! - [`provider`]: the authorization URL, the code exchange and the refresh;
//! - [`tokens`]: the access tokens in use, cached, refreshed one at a time
//!   per user;
//! - [`endpoints`]: `POST /oauth/{name}/connect`, `GET …/callback`,
//!   `DELETE …/connection`;
//! - [`inject`]: the `InjectConnectionLayer`.
//!
//! Sits with the request concerns: it reads the verified [`Principal`]
//! (from `auth`) and writes the token where `credentials` writes a
//! credential. Nothing here logs, audits or answers a token.

pub mod endpoints;
pub mod inject;
pub mod lasting;
pub mod provider;
pub mod seal;
pub mod tokens;
pub mod vault;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use self::seal::{SealError, Sealer, associated_data};
use self::tokens::TokenCache;
use self::vault::{RecordId, StoredRecord, Vault};
use crate::audit::AuditLog;
use crate::auth::Principal;
use crate::credentials::ClientAuth;
use crate::http_client::HttpsClient;
use crate::secret::SecretString;

/// One `[[oauth_connections]]` entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OauthConnectionSettings {
    /// Its name: the paths `/oauth/{name}/…` and a route's `connection`.
    pub name: String,
    /// The provider's authorization endpoint.
    pub authorize_url: String,
    /// The provider's token endpoint.
    pub token_url: String,
    /// warden's client id at the provider.
    pub client_id: String,
    /// warden's client secret at the provider.
    pub client_secret: SecretString,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// Where the provider sends the user back (`…/oauth/{name}/callback`).
    pub redirect_url: String,
    /// Extra authorization-request parameters (`audience`, `prompt`, …).
    pub authorize_params: BTreeMap<String, String>,
    /// Extra token-request parameters (`audience`, `resource`, …).
    pub token_params: BTreeMap<String, String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    pub client_auth: ClientAuth,
}

impl OauthConnectionSettings {
    /// Where a user starts the loop.
    pub fn connect_path(&self) -> String {
        connect_path(&self.name)
    }
}

/// `/oauth/{name}/connect`.
pub fn connect_path(name: &str) -> String {
    format!("/oauth/{name}/connect")
}

/// `/oauth/{name}/callback`: the path a connection's `redirect_url` must have.
pub fn callback_path(name: &str) -> String {
    format!("/oauth/{name}/callback")
}

/// `/oauth/{name}/connection`.
pub fn connection_path(name: &str) -> String {
    format!("/oauth/{name}/connection")
}

/// The tokens of one record, as sealed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, when the provider gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SecretString>,
    /// When the access token expires (seconds since the epoch), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Why a record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// It does not open.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// It opens to something warden did not write.
    #[error("the connection record is damaged")]
    Damaged,
}

fn record_aad(id: &RecordId) -> Vec<u8> {
    associated_data("record", &[&id.connection, &id.iss, &id.sub])
}

/// Seals `tokens` into the record of `id`.
pub fn seal_record(
    sealer: &Sealer,
    id: &RecordId,
    tokens: &Tokens,
    created: i64,
    scope: Option<String>,
) -> Result<StoredRecord, RecordError> {
    let plain =
        zeroize::Zeroizing::new(serde_json::to_vec(tokens).map_err(|_| RecordError::Damaged)?);
    let sealed = sealer.seal(&record_aad(id), &plain)?;
    Ok(StoredRecord {
        id: id.clone(),
        created,
        refreshed: crate::clock::unix_now(),
        expires_at: tokens.expires_at,
        scope,
        sealed: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
    })
}

/// Opens the tokens of `record`, stored as the record of `id`: the
/// associated data is the identity the record was looked up by, never the
/// one it claims, so a record copied (unchanged) under another user's key
/// does not open.
pub fn open_record(
    sealer: &Sealer,
    id: &RecordId,
    record: &StoredRecord,
) -> Result<Tokens, RecordError> {
    if record.id != *id {
        return Err(RecordError::Damaged);
    }
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&record.sealed)
        .map_err(|_| RecordError::Damaged)?;
    let plain = sealer.open(&record_aad(id), &sealed)?;
    serde_json::from_slice(&plain).map_err(|_| RecordError::Damaged)
}

/// The connections of one generation: their settings, the vault and the
/// tokens in use (both outlive reloads), and the master key's sealer.
pub struct OauthConnections {
    settings: BTreeMap<String, Arc<OauthConnectionSettings>>,
    vault: Arc<Vault>,
    cache: Arc<TokenCache>,
    sealer: Sealer,
    client: HttpsClient<Full<Bytes>>,
    audit: AuditLog,
    refresh_total: prometheus::IntCounterVec,
}

impl std::fmt::Debug for OauthConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OauthConnections")
            .field("names", &self.settings.keys().collect::<Vec<_>>())
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

/// Why the connections cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The record key could not be made.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The vault cannot be opened, or its key cannot be loaded.
    #[error("{0}")]
    Vault(String),
    /// No HTTPS client.
    #[error("the HTTPS client for token endpoints cannot be built: {0}")]
    Client(String),
}

impl OauthConnections {
    /// The connections of `settings`, over `vault` and `cache`.
    pub fn new(
        settings: &[OauthConnectionSettings],
        vault: Arc<Vault>,
        cache: Arc<TokenCache>,
        sealer: Sealer,
        audit: AuditLog,
        refresh_total: prometheus::IntCounterVec,
    ) -> Result<Self, SetupError> {
        let client = crate::http_client::https_client(None)
            .map_err(|e| SetupError::Client(e.to_string()))?;
        Ok(Self {
            settings: settings
                .iter()
                .map(|s| (s.name.clone(), Arc::new(s.clone())))
                .collect(),
            vault,
            cache,
            sealer,
            client,
            audit,
            refresh_total,
        })
    }

    /// The connection called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<OauthConnectionSettings>> {
        self.settings.get(name)
    }

    /// The names of the connections.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.settings.keys().map(String::as_str)
    }

    /// Removes the record of `id` and forgets its tokens here; whether
    /// there was one. `by` says who, for the audit.
    pub async fn remove(
        &self,
        id: &RecordId,
        by: &'static str,
        key: Option<&crate::execution_key::ExecutionKey>,
    ) -> Result<bool, vault::VaultError> {
        let removed = self.vault.remove(id).await?;
        self.cache.forget(id);
        if removed {
            self.audit
                .event("connection_removed", key)
                .field("connection", id.connection.clone())
                .field("iss", id.iss.clone())
                .field("sub", id.sub.clone())
                .field("by", by)
                .send();
        }
        Ok(removed)
    }
}

impl OauthConnections {
    /// What an operator may see of every record: never a token.
    pub async fn summaries(&self) -> Result<Vec<serde_json::Value>, vault::VaultError> {
        Ok(self
            .vault
            .list()
            .await?
            .iter()
            .map(StoredRecord::summary)
            .collect())
    }

    /// Removes every record of `sub` at connection `name` (whatever the
    /// issuer); how many there were.
    pub async fn remove_subject(
        &self,
        name: &str,
        sub: &str,
        by: &'static str,
        key: Option<&crate::execution_key::ExecutionKey>,
    ) -> Result<usize, vault::VaultError> {
        let mut removed = 0;
        for record in self.vault.list().await? {
            if record.id.connection == name
                && record.id.sub == sub
                && self.remove(&record.id, by, key).await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The record id of `principal` at connection `name`, when its token has
/// a subject.
pub fn record_id(name: &str, principal: &Principal) -> Option<RecordId> {
    let sub = principal.sub.clone().filter(|s| !s.is_empty())?;
    Some(RecordId {
        connection: name.to_owned(),
        iss: principal.iss.clone(),
        sub,
    })
}
