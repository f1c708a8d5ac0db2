//! OAuth2 access tokens for upstreams: fetched with the client-credentials
//! grant (RFC 6749 §4.4), or the refresh-token grant (§6) when a refresh
//! token is stored; cached; refreshed before they expire (at 80 % of their
//! life, and at the latest 30 s before `exp`).
//!
//! [`TokenManager::token`] holds one lock while it fetches, so concurrent
//! requests share one token request. A rotated refresh token is written
//! back to the store. A token known to be expired is never handed out: when
//! no fresh token can be had, the answer is an error (502
//! `upstream_credential_unavailable` at the injection layer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use prometheus::IntCounter;
use serde_json::Value;

use super::{ClientAuth, Credential, Credentials, Kind};
use crate::http_client::HttpsClient;
use crate::percent::{self, form_encode};
use crate::secret::SecretString;

/// How long one token request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// The lifetime assumed when the endpoint sends no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest lifetime believed (a huge `expires_in` is clamped to it).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The shortest time between two refreshes forced by upstream 401s.
pub const MIN_FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Why no token could be had; safe to log (no secret).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The credential is not an OAuth2 one.
    #[error("the credential is not an OAuth2 client")]
    NotOauth2,
    /// The request to the token endpoint failed.
    #[error("token endpoint request failed: {0}")]
    Request(String),
    /// The token endpoint answered an error.
    #[error("token endpoint answered {status}{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its OAuth2 `error` code, when it sent one.
        error: Option<String>,
    },
    /// The answer was not a token response.
    #[error("token endpoint answered something that is not a token response")]
    Malformed,
    /// The token request this caller waited for failed.
    #[error("the token request in progress failed")]
    RecentlyFailed,
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
    expires_at: Instant,
}

/// One OAuth2 credential's tokens.
pub struct TokenManager {
    name: String,
    credential: Arc<Credential>,
    credentials: Weak<Credentials>,
    client: HttpsClient<Full<Bytes>>,
    cached: tokio::sync::Mutex<Option<Cached>>,
    /// Failed token requests so far.
    failures: AtomicU64,
    /// When an upstream 401 last forced a refresh.
    last_forced: std::sync::Mutex<Option<Instant>>,
    /// The refresh token in use (it may rotate).
    refresh_token: std::sync::Mutex<Option<SecretString>>,
    ok: IntCounter,
    error: IntCounter,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("credential", &self.name)
            .finish_non_exhaustive()
    }
}

/// What identifies an OAuth2 client (not its refresh token, which rotates).
#[derive(PartialEq, Eq)]
struct ClientIdentity<'a> {
    token_url: &'a str,
    client_id: &'a str,
    client_secret: &'a SecretString,
    scope: &'a Option<String>,
    params: &'a std::collections::BTreeMap<String, String>,
    client_auth: ClientAuth,
}

fn client_identity(kind: &Kind) -> Option<ClientIdentity<'_>> {
    match kind {
        Kind::Oauth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            params,
            client_auth,
            ..
        } => Some(ClientIdentity {
            token_url,
            client_id,
            client_secret,
            scope,
            params,
            client_auth: *client_auth,
        }),
        _ => None,
    }
}

impl TokenManager {
    /// The manager of OAuth2 credential `name`.
    pub fn new(
        name: &str,
        credential: Arc<Credential>,
        credentials: Weak<Credentials>,
        refresh_total: &prometheus::IntCounterVec,
    ) -> Option<Self> {
        let refresh_token = match &credential.kind {
            Kind::Oauth2 { refresh_token, .. } => refresh_token.clone(),
            _ => return None,
        };
        let client = crate::http_client::https_client(None).ok()?;
        Some(Self {
            name: name.to_owned(),
            credentials,
            client,
            cached: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
            last_forced: std::sync::Mutex::new(None),
            refresh_token: std::sync::Mutex::new(refresh_token),
            ok: refresh_total.with_label_values(&[name, "ok"]),
            error: refresh_total.with_label_values(&[name, "error"]),
            credential,
        })
    }

    /// Whether this manager serves `credential`: the same client, and the
    /// refresh token it uses now (a token it rotated itself, or the one it
    /// started with). A refresh token an operator put in makes a new manager.
    pub fn is_for(&self, credential: &Credential) -> bool {
        let stored = match &credential.kind {
            Kind::Oauth2 { refresh_token, .. } => refresh_token.clone(),
            _ => return false,
        };
        let in_use = self.refresh_token.lock().ok().and_then(|t| t.clone());
        client_identity(&self.credential.kind) == client_identity(&credential.kind)
            && stored == in_use
    }

    /// A token that is not expired: the cached one, or a new one. Callers
    /// that arrive during a fetch wait for it.
    pub async fn token(self: &Arc<Self>) -> Result<SecretString, TokenError> {
        let failures_seen = self.failures.load(Ordering::Acquire);
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.refresh_at
        {
            return Ok(current.token.clone());
        }
        // A token request that failed while this caller waited for the
        // lock is its answer too: waiting callers share one failure rather
        // than asking the endpoint again one after another.
        if self.failures.load(Ordering::Acquire) != failures_seen {
            return match cached.as_ref() {
                Some(current) if Instant::now() < current.expires_at => Ok(current.token.clone()),
                _ => Err(TokenError::RecentlyFailed),
            };
        }
        // The fetch runs in a task of its own: a client that goes away
        // cannot cancel it between the endpoint rotating the refresh token
        // and warden storing the new one.
        let manager = self.clone();
        let fetched = tokio::spawn(async move { manager.fetch().await })
            .await
            .unwrap_or_else(|_| Err(TokenError::Request("the token request task failed".into())));
        match fetched {
            Ok(fresh) => {
                self.ok.inc();
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            Err(err) => {
                self.error.inc();
                self.failures.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(credential = %self.name, error = %err, "OAuth2 token refresh failed");
                // A token due for refresh but not yet expired still serves;
                // "now" is read again: the failed fetch took time.
                match cached.as_ref() {
                    Some(current) if Instant::now() < current.expires_at => {
                        Ok(current.token.clone())
                    }
                    _ => {
                        *cached = None;
                        Err(err)
                    }
                }
            }
        }
    }

    /// An upstream refused `stale`: drops it so the next call fetches a new
    /// one, and says whether the request should be sent again. A token
    /// already replaced by another request is retried with the new one
    /// without a fetch. Forced refreshes happen at most once per
    /// [`MIN_FORCED_REFRESH_INTERVAL`] per credential, so clients whose
    /// requests the upstream refuses for other reasons cannot make warden
    /// ask the token endpoint once per request.
    pub async fn invalidate(&self, stale: &SecretString) -> bool {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token != stale) {
            return true;
        }
        let Ok(mut last) = self.last_forced.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < MIN_FORCED_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        *cached = None;
        true
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let ClientIdentity {
            token_url,
            client_id,
            client_secret,
            scope,
            params,
            client_auth,
        } = client_identity(&self.credential.kind).ok_or(TokenError::NotOauth2)?;
        let refresh_token = self.refresh_token.lock().ok().and_then(|t| t.clone());
        let mut fields: Vec<(&str, &str)> = Vec::new();
        match &refresh_token {
            Some(refresh) => {
                fields.push(("grant_type", "refresh_token"));
                fields.push(("refresh_token", refresh.expose()));
            }
            None => fields.push(("grant_type", "client_credentials")),
        }
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        for (name, value) in params {
            fields.push((name, value));
        }
        if client_auth == ClientAuth::Form {
            fields.push(("client_id", client_id));
            fields.push(("client_secret", client_secret.expose()));
        }
        let body = zeroize::Zeroizing::new(form_encode(&fields));
        let mut request = Request::post(token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.as_bytes().to_vec())))
            .map_err(|e| TokenError::Request(e.to_string()))?;
        if client_auth == ClientAuth::Basic {
            use base64::Engine;
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            let pair = zeroize::Zeroizing::new(format!(
                "{}:{}",
                percent::encode(client_id),
                percent::encode(client_secret.expose()),
            ));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|e| TokenError::Request(e.to_string()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let started = Instant::now();
        // One deadline for the whole exchange, headers and body.
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| TokenError::Request(e.to_string()))?;
            let status = response.status();
            let body = crate::body::read_to_limit(response.into_body(), MAX_RESPONSE)
                .await
                .map_err(|e| TokenError::Request(e.to_string()))?;
            Ok::<_, TokenError>((status, body))
        };
        let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| TokenError::Request("timed out".into()))??;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(TokenError::Refused {
                status,
                error: json.get("error").and_then(Value::as_str).map(str::to_owned),
            });
        }
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Malformed)?;
        let lifetime = match json
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        {
            // A token that is already expired is not a token.
            Some(0) => return Err(TokenError::Malformed),
            Some(seconds) => Duration::from_secs(seconds.min(MAX_LIFETIME.as_secs())),
            None => DEFAULT_LIFETIME,
        };
        // A refresh token is kept only for a credential that uses the
        // refresh grant: one sent with a client-credentials answer would
        // switch the credential to a grant that expires with a session.
        if let Some(current) = &refresh_token
            && let Some(rotated) = json.get("refresh_token").and_then(Value::as_str)
        {
            let rotated = SecretString::new(rotated);
            if current != &rotated {
                self.keep_refresh_token(rotated).await;
            }
        }
        // Refresh at 80 % of the life, and at the latest 30 s before expiry.
        // At 80 % of the life, and at the latest 30 s before expiry; a token
        // living 30 s or less is refreshed at 80 % of its life.
        let latest = lifetime.saturating_sub(Duration::from_secs(30));
        let refresh_in = if latest.is_zero() {
            lifetime.mul_f64(0.8)
        } else {
            lifetime.mul_f64(0.8).min(latest)
        };
        Ok(Cached {
            token: SecretString::new(token),
            refresh_at: started + refresh_in,
            expires_at: started + lifetime,
        })
    }

    async fn keep_refresh_token(&self, rotated: SecretString) {
        if let Ok(mut current) = self.refresh_token.lock() {
            *current = Some(rotated.clone());
        }
        let Some(credentials) = self.credentials.upgrade() else {
            return;
        };
        let name = self.name.clone();
        // The store write locks a file and fsyncs: off the async workers.
        let stored =
            tokio::task::spawn_blocking(move || credentials.store_refresh_token(&name, rotated))
                .await;
        if !matches!(stored, Ok(Ok(()))) {
            tracing::error!(
                credential = %self.name,
                "cannot store the rotated refresh token; it is kept in memory only"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_everything_but_unreserved() {
        assert_eq!(
            form_encode(&[("grant_type", "client_credentials"), ("scope", "a b:c&d")]),
            "grant_type=client_credentials&scope=a%20b%3Ac%26d"
        );
    }
}
