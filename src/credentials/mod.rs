//! Upstream credentials: stored encrypted, injected into proxied requests,
//! never shown again once stored (SPEC §6).
//!
//! - [`store`]: the encrypted file;
//! - [`oauth2`]: access tokens fetched, cached and refreshed;
//! - [`inject`]: the layer that puts a credential into a request.
//!
//! [`Credentials`] holds the current set behind an `ArcSwap`: the admin API
//! and the CLI change the file, then the set is swapped, so changes take
//! effect without a restart.

pub mod inject;
pub mod oauth2;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::secret::SecretString;
use store::{MasterKeySource, Store, StoreError};

/// `[credentials]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsSettings {
    /// The encrypted store.
    pub store: PathBuf,
    /// Where the master key comes from.
    pub master_key: MasterKeySource,
}

/// How an OAuth2 client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Form,
}

/// What a credential is, with its secret parts.
// No `deny_unknown_fields` on `Kind` and `Credential`: serde cannot combine
// it with `flatten`. The store is written only by warden; user input goes
// through `CredentialInput`, which denies unknown fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// An API key (default: header `X-Api-Key`).
    ApiKey {
        /// The key.
        value: SecretString,
    },
    /// Any secret value, at a location the store entry or route names.
    Secret {
        /// The value.
        value: SecretString,
    },
    /// HTTP Basic (`Authorization: Basic …`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: SecretString,
    },
    /// A fixed bearer token (`Authorization: Bearer …`).
    Bearer {
        /// The token.
        token: SecretString,
    },
    /// An OAuth2 client whose access tokens warden fetches and refreshes.
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: SecretString,
        /// The scope to ask for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// A refresh token, for the refresh-token grant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<SecretString>,
        /// Extra token-endpoint parameters (`audience`, `resource`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
        /// How the client authenticates.
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

impl Kind {
    /// The kind's name as the CLI and API spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::ApiKey { .. } => "api_key",
            Kind::Secret { .. } => "secret",
            Kind::Basic { .. } => "basic",
            Kind::Bearer { .. } => "bearer",
            Kind::Oauth2 { .. } => "oauth2",
        }
    }

    /// Where the kind goes when nothing says otherwise.
    pub fn default_location(&self) -> Option<Location> {
        match self {
            Kind::ApiKey { .. } => Some(Location::Header("X-Api-Key".into())),
            Kind::Secret { .. } => None,
            Kind::Basic { .. } | Kind::Bearer { .. } | Kind::Oauth2 { .. } => {
                Some(Location::Header("Authorization".into()))
            }
        }
    }
}

/// Where a credential goes in the upstream request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A header (replacing any client-sent one).
    Header(String),
    /// A query parameter (replacing any client-sent one).
    Query(String),
    /// `{credential}` in the route's upstream URL.
    Path,
    /// A top-level field of a JSON request body.
    Body(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Header(h) => write!(f, "header {h}"),
            Location::Query(q) => write!(f, "query {q}"),
            Location::Path => f.write_str("path"),
            Location::Body(b) => write!(f, "body {b}"),
        }
    }
}

/// One stored credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// What it is.
    #[serde(flatten)]
    pub kind: Kind,
    /// Where it goes, when not the kind's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// When it was stored first (seconds since the epoch).
    pub created: i64,
    /// When it was last changed.
    pub updated: i64,
}

impl Credential {
    /// A credential stored now.
    pub fn new(kind: Kind, location: Option<Location>) -> Self {
        let now = crate::clock::unix_now();
        Self {
            kind,
            location,
            created: now,
            updated: now,
        }
    }

    /// Where it goes: its own location, else its kind's default.
    pub fn location(&self) -> Option<Location> {
        self.location
            .clone()
            .or_else(|| self.kind.default_location())
    }

    /// What may be shown of it: never a secret.
    pub fn summary(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "kind": self.kind.name(),
            "location": self.location().map(|l| l.to_string()),
            "created": self.created,
            "updated": self.updated,
        })
    }
}

/// A credential as given to `warden credentials set` or `PUT
/// /admin/credentials/{name}`: its kind, its non-secret fields and its
/// secrets, and at most one location.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialInput {
    /// `api_key`, `secret`, `basic`, `bearer` or `oauth2`.
    pub kind: String,
    /// The secret of `api_key`, `secret` and `bearer`; the password of
    /// `basic`; the client secret of `oauth2`.
    pub value: Option<SecretString>,
    /// `basic`: the user name.
    pub username: Option<String>,
    /// `oauth2`: the token endpoint.
    pub token_url: Option<String>,
    /// `oauth2`: the client id.
    pub client_id: Option<String>,
    /// `oauth2`: the scope.
    pub scope: Option<String>,
    /// `oauth2`: a refresh token.
    pub refresh_token: Option<SecretString>,
    /// `oauth2`: extra token-endpoint parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `oauth2`: `basic` (default) or `form`.
    pub client_auth: Option<ClientAuth>,
    /// Location: a header.
    pub header: Option<String>,
    /// Location: a query parameter.
    pub query: Option<String>,
    /// Location: the upstream URL's `{credential}`.
    #[serde(default)]
    pub path: bool,
    /// Location: a JSON body field.
    pub body: Option<String>,
}

/// Why a credential as given cannot be stored or used. Its text is shown
/// to the operator (CLI, admin API, config errors) as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a header name.
    #[error("{0:?} is not a header name")]
    HeaderName(String),
    /// Not a query parameter name.
    #[error("{0:?} is not a query parameter name")]
    QueryName(String),
    /// An empty body field name.
    #[error("the body field name is empty")]
    EmptyBodyField,
    /// More than one location.
    #[error("give at most one location: header, query, path or body")]
    TwoLocations,
    /// A token URL that does not parse.
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    /// A token URL over plain HTTP to another host.
    #[error("{0:?} must be https:// (http:// only to a loopback address)")]
    InsecureTokenUrl(String),
    /// A required field is missing or empty.
    #[error("{0} is required")]
    Required(&'static str),
    /// A Basic username that is empty or holds ':'.
    #[error("a username without ':' is required")]
    Username,
    /// An unknown kind.
    #[error("unknown kind {0:?}; use api_key, secret, basic, bearer or oauth2")]
    UnknownKind(String),
    /// A kind without a default location, and none given.
    #[error("a secret needs a location: header, query, path or body")]
    NoLocation,
    /// Basic credentials elsewhere than a header.
    #[error("basic credentials go in a header")]
    BasicOutsideHeader,
}

/// Checks an explicit location.
pub fn location_of(
    header: Option<&str>,
    query: Option<&str>,
    path: bool,
    body: Option<&str>,
) -> Result<Option<Location>, CredentialError> {
    let mut found = Vec::new();
    if let Some(h) = header {
        http::HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| CredentialError::HeaderName(h.to_owned()))?;
        found.push(Location::Header(h.to_owned()));
    }
    if let Some(q) = query {
        if q.is_empty() || q.contains(['&', '=', '#']) {
            return Err(CredentialError::QueryName(q.to_owned()));
        }
        found.push(Location::Query(q.to_owned()));
    }
    if path {
        found.push(Location::Path);
    }
    if let Some(b) = body {
        if b.is_empty() {
            return Err(CredentialError::EmptyBodyField);
        }
        found.push(Location::Body(b.to_owned()));
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(CredentialError::TwoLocations),
    }
}

/// Checks that `url` may be a token endpoint: https, or http to loopback.
pub fn check_token_url(url: &str) -> Result<(), CredentialError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| CredentialError::NotAUrl(url.to_owned()))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(CredentialError::InsecureTokenUrl(url.to_owned())),
    }
}

impl CredentialInput {
    /// Builds the credential; `created` is kept from `existing`.
    pub fn build(self, existing: Option<&Credential>) -> Result<Credential, CredentialError> {
        let secret = |what: &'static str| -> Result<SecretString, CredentialError> {
            self.value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or(CredentialError::Required(what))
        };
        let kind = match self.kind.as_str() {
            "api_key" => Kind::ApiKey {
                value: secret("the key")?,
            },
            "secret" => Kind::Secret {
                value: secret("the value")?,
            },
            "bearer" => Kind::Bearer {
                token: secret("the token")?,
            },
            "basic" => Kind::Basic {
                username: self
                    .username
                    .clone()
                    .filter(|u| !u.is_empty() && !u.contains(':'))
                    .ok_or(CredentialError::Username)?,
                password: secret("the password")?,
            },
            "oauth2" => {
                let token_url = self
                    .token_url
                    .clone()
                    .ok_or(CredentialError::Required("token_url"))?;
                check_token_url(&token_url)?;
                Kind::Oauth2 {
                    token_url,
                    client_id: self
                        .client_id
                        .clone()
                        .filter(|c| !c.is_empty())
                        .ok_or(CredentialError::Required("client_id"))?,
                    client_secret: secret("the client secret")?,
                    scope: self.scope.clone(),
                    refresh_token: self.refresh_token.clone().filter(|t| !t.is_empty()),
                    params: self.params.clone(),
                    client_auth: self.client_auth.unwrap_or_default(),
                }
            }
            other => {
                return Err(CredentialError::UnknownKind(other.to_owned()));
            }
        };
        let location = location_of(
            self.header.as_deref(),
            self.query.as_deref(),
            self.path,
            self.body.as_deref(),
        )?;
        if location.is_none() && kind.default_location().is_none() {
            return Err(CredentialError::NoLocation);
        }
        if matches!(kind, Kind::Basic { .. })
            && location
                .as_ref()
                .is_some_and(|l| !matches!(l, Location::Header(_)))
        {
            return Err(CredentialError::BasicOutsideHeader);
        }
        let mut credential = Credential::new(kind, location);
        if let Some(existing) = existing {
            credential.created = existing.created;
        }
        Ok(credential)
    }
}

/// Removes the copies of the store that a crash left behind (at start and
/// reload), saying how many. Not fatal: the store itself is still usable,
/// and a read-only directory cannot hold new leftovers anyway.
fn log_leftovers(store: &Store) {
    match store.remove_leftovers() {
        Ok(0) => {}
        Ok(removed) => tracing::warn!(
            removed,
            store = %store.path().display(),
            "removed temporary copies of the credential store left by an interrupted write"
        ),
        Err(err) => tracing::warn!(
            error = %err,
            "cannot remove temporary copies of the credential store left by an interrupted write"
        ),
    }
}

/// The credentials in force, and the store they come from.
pub struct Credentials {
    store: Option<Store>,
    current: ArcSwap<BTreeMap<String, Arc<Credential>>>,
    oauth: Mutex<BTreeMap<String, Arc<oauth2::TokenManager>>>,
    refresh_total: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("names", &self.current.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Opens the store (when configured) and loads its credentials.
    pub fn open(
        settings: Option<&CredentialsSettings>,
        refresh_total: prometheus::IntCounterVec,
    ) -> Result<Self, StoreError> {
        let store = match settings {
            Some(settings) => {
                let key = store::MasterKey::load(&settings.master_key)?;
                let store = Store::new(settings.store.clone(), key);
                log_leftovers(&store);
                Some(store)
            }
            None => None,
        };
        let credentials = Self {
            store,
            current: ArcSwap::from_pointee(BTreeMap::new()),
            oauth: Mutex::new(BTreeMap::new()),
            refresh_total,
        };
        credentials.reload()?;
        Ok(credentials)
    }

    /// Reads the store again and swaps the set in.
    pub fn reload(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let contents = store.read()?;
        let set: BTreeMap<String, Arc<Credential>> = contents
            .credentials
            .into_iter()
            .map(|(name, credential)| (name, Arc::new(credential)))
            .collect();
        // A changed OAuth2 client gets a new token manager.
        if let Ok(mut managers) = self.oauth.lock() {
            managers.retain(|name, manager| set.get(name).is_some_and(|c| manager.is_for(c)));
        }
        self.current.store(Arc::new(set));
        Ok(())
    }

    /// The credential called `name`, now.
    pub fn get(&self, name: &str) -> Option<Arc<Credential>> {
        self.current.load().get(name).cloned()
    }

    /// Names and summaries, never secrets.
    pub fn list(&self) -> Vec<serde_json::Value> {
        self.current
            .load()
            .iter()
            .map(|(name, credential)| credential.summary(name))
            .collect()
    }

    /// The store, when configured.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The token manager of the OAuth2 credential `name`.
    pub fn token_manager(
        self: &Arc<Self>,
        name: &str,
        credential: &Arc<Credential>,
    ) -> Option<Arc<oauth2::TokenManager>> {
        let mut managers = self.oauth.lock().ok()?;
        if let Some(manager) = managers.get(name).filter(|m| m.is_for(credential)) {
            return Some(manager.clone());
        }
        let manager = Arc::new(oauth2::TokenManager::new(
            name,
            credential.clone(),
            Arc::downgrade(self),
            &self.refresh_total,
        )?);
        managers.insert(name.to_owned(), manager.clone());
        Some(manager)
    }

    /// Stores a rotated refresh token of the OAuth2 credential `name`.
    pub(crate) fn store_refresh_token(
        &self,
        name: &str,
        token: SecretString,
    ) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.update(|contents| {
            if let Some(credential) = contents.credentials.get_mut(name)
                && let Kind::Oauth2 { refresh_token, .. } = &mut credential.kind
            {
                *refresh_token = Some(token);
                credential.updated = crate::clock::unix_now();
            }
        })?;
        // The in-memory set follows the store (whatever else changed in it).
        self.reload()?;
        Ok(())
    }
}
