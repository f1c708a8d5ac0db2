//! One login attempt, from the client's address to the token: throttling,
//! checking the presented credentials, granting scopes and signing.
//!
//! Attempts are counted per client address (`ip:…`) and per identity
//! (`id:…`) as they begin, so parallel guesses are limited too, and taken
//! back unless they failed on credentials ([`Attempts`]). Each outcome is
//! counted in `warden_tokens_issued_total{method}` or
//! `warden_login_failures_total{reason}` and audited as `token_issued` or
//! `login_failed`.
//!
//! Produces the token response and every failure of
//! [`response`](super::response), including 429 once
//! `max_failures_per_minute` is reached. Reads the execution key (passed
//! in) and, through [`request`](super::request), the `ConnectInfo`
//! extension.

use std::sync::Arc;

use http::{Request, Response};
use prometheus::IntCounterVec;
use serde_json::{Map, Value};

use super::LoginSettings;
use super::identity::{PasswordChecker, api_key_by_secret, client_secret_matches};
use super::request::{self, LoginRequest, Presented};
use super::response::{Failure, failure_response, token_response};
use crate::audit::AuditLog;
use crate::auth::issue::{Grant, Issued, TokenIssuer};
use crate::body::Body;
use crate::execution_key::ExecutionKey;
use crate::shared_state::AuthState;

/// How a login attempt authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoginMethod {
    ApiKey,
    Basic,
    ClientCredentials,
}

impl LoginMethod {
    fn as_str(self) -> &'static str {
        match self {
            LoginMethod::ApiKey => "api_key",
            LoginMethod::Basic => "basic",
            LoginMethod::ClientCredentials => "client_credentials",
        }
    }
}

/// Who a token is for and what it may carry, once the credentials proved it.
struct Authenticated<'a> {
    method: LoginMethod,
    sub: String,
    role: Option<String>,
    scopes: &'a [String],
    claims: &'a Map<String, Value>,
}

/// `POST {login.path}`.
#[derive(Debug)]
pub(super) struct Login {
    settings: Option<LoginSettings>,
    issuer: Option<TokenIssuer>,
    state: Arc<dyn AuthState>,
    audit: AuditLog,
    tokens_issued: IntCounterVec,
    login_failures: IntCounterVec,
    passwords: PasswordChecker,
}

impl Login {
    pub(super) fn new(
        settings: Option<LoginSettings>,
        issuer: Option<TokenIssuer>,
        state: Arc<dyn AuthState>,
        audit: AuditLog,
        tokens_issued: IntCounterVec,
        login_failures: IntCounterVec,
    ) -> Self {
        Self {
            settings,
            issuer,
            state,
            audit,
            tokens_issued,
            login_failures,
            passwords: PasswordChecker::new(),
        }
    }

    /// `[login]`, when login is enabled.
    pub(super) fn settings(&self) -> Option<&LoginSettings> {
        self.settings.as_ref()
    }

    /// Answers a login request, counting and auditing the outcome.
    pub(super) async fn answer(
        &self,
        request: Request<Body>,
        key: Option<&ExecutionKey>,
    ) -> Response<Body> {
        let ip_text = request::client_ip(&request).map(|ip| ip.to_string());
        let limit = self
            .settings
            .as_ref()
            .map_or(u32::MAX, |l| l.max_failures_per_minute);
        let mut attempts = Attempts::new(&*self.state, limit);
        let result = self
            .try_login(request, key, ip_text.as_deref(), &mut attempts)
            .await;
        attempts.settle(matches!(&result, Err(failure) if failure.counts));
        match result {
            Ok((issued, method, sub)) => {
                self.tokens_issued
                    .with_label_values(&[method.as_str()])
                    .inc();
                self.audit
                    .event("token_issued", key)
                    .field("jti", issued.jti.clone())
                    .field("sub", sub)
                    .field("scope", issued.scope.clone())
                    .field("exp", issued.exp)
                    .field("method", method.as_str())
                    .field("client_ip", ip_text)
                    .send();
                token_response(&issued)
            }
            Err(failure) => {
                self.login_failures
                    .with_label_values(&[failure.reason])
                    .inc();
                self.audit
                    .event("login_failed", key)
                    .field("reason", failure.reason)
                    .field("client_ip", ip_text)
                    .field("identity", failure.identity.clone())
                    .send();
                failure_response(&failure, key)
            }
        }
    }

    async fn try_login(
        &self,
        request: Request<Body>,
        key: Option<&ExecutionKey>,
        client_ip: Option<&str>,
        attempts: &mut Attempts<'_>,
    ) -> Result<(Issued, LoginMethod, String), Failure> {
        let (Some(settings), Some(issuer)) = (&self.settings, &self.issuer) else {
            return Err(Failure::bad_request(
                "invalid_request",
                "login is not configured",
            ));
        };
        // The address first: a throttled client is refused before its
        // request is read.
        if let Some(ip) = client_ip {
            attempts.begin(format!("ip:{ip}")).await?;
        }
        let LoginRequest {
            presented,
            client_credentials,
            scope,
        } = request::read(request, &settings.api_key_header).await?;
        let who = self
            .authenticate(settings, presented, client_credentials, attempts)
            .await?;
        let granted = grant_scopes(who.scopes, scope.as_deref())?;
        let issued = issuer
            .issue(&Grant {
                sub: &who.sub,
                role: who.role.as_deref(),
                scopes: &granted,
                claims: Some(who.claims),
                txn: key.map(ExecutionKey::as_str),
                ttl: None,
            })
            .map_err(|err| {
                tracing::error!(error = %err, "signing a token failed");
                Failure::signing_failed()
            })?;
        Ok((issued, who.method, who.sub))
    }

    /// The identity `presented` proves. A user or client named in Basic is
    /// throttled before its secret is checked, so a throttled guess does not
    /// learn whether it was right.
    async fn authenticate<'s>(
        &self,
        settings: &'s LoginSettings,
        presented: Presented,
        client_credentials: bool,
        attempts: &mut Attempts<'_>,
    ) -> Result<Authenticated<'s>, Failure> {
        match presented {
            Presented::ApiKey(secret) => {
                let identity = api_key_by_secret(&settings.api_keys, &secret)
                    .ok_or_else(|| Failure::invalid_client("bad_api_key", None))?;
                attempts.begin(format!("id:{}", identity.id)).await?;
                Ok(Authenticated {
                    method: LoginMethod::ApiKey,
                    sub: identity.sub.clone(),
                    role: identity.role.clone(),
                    scopes: &identity.scopes,
                    claims: &identity.claims,
                })
            }
            Presented::Basic { user, secret } if client_credentials => {
                attempts.begin(format!("id:{user}")).await?;
                let identity = settings.api_keys.iter().find(|k| k.id == user);
                let matches = client_secret_matches(identity, secret.as_bytes());
                match identity {
                    Some(identity) if matches => Ok(Authenticated {
                        method: LoginMethod::ClientCredentials,
                        sub: identity.sub.clone(),
                        role: identity.role.clone(),
                        scopes: &identity.scopes,
                        claims: &identity.claims,
                    }),
                    Some(identity) => Err(Failure::invalid_client(
                        "bad_client_secret",
                        Some(identity.id.clone()),
                    )),
                    None => Err(Failure::invalid_client("unknown_client", None)),
                }
            }
            Presented::Basic { user, secret } => {
                attempts.begin(format!("id:{user}")).await?;
                let identity = settings.users.iter().find(|u| u.username == user);
                let ok = self.passwords.verify(identity, secret).await;
                match identity {
                    Some(identity) if ok => Ok(Authenticated {
                        method: LoginMethod::Basic,
                        sub: identity.username.clone(),
                        role: identity.role.clone(),
                        scopes: &identity.scopes,
                        claims: &identity.claims,
                    }),
                    Some(identity) => Err(Failure::invalid_client(
                        "bad_password",
                        Some(identity.username.clone()),
                    )),
                    None => Err(Failure::invalid_client("unknown_user", None)),
                }
            }
            Presented::None => Err(Failure::invalid_client("missing_credentials", None)),
        }
    }
}

/// The attempts one login request has begun, per subject (`ip:…`, `id:…`).
struct Attempts<'a> {
    state: &'a dyn AuthState,
    limit: u32,
    begun: Vec<String>,
}

impl<'a> Attempts<'a> {
    fn new(state: &'a dyn AuthState, limit: u32) -> Self {
        Self {
            state,
            limit,
            begun: Vec::new(),
        }
    }

    /// Counts an attempt for `subject`, or refuses it with 429.
    async fn begin(&mut self, subject: String) -> Result<(), Failure> {
        match self.state.begin_attempt(&subject, self.limit).await {
            Ok(()) => {
                self.begun.push(subject);
                Ok(())
            }
            Err(wait) => Err(Failure::throttled(wait)),
        }
    }

    /// Ends the request: its attempts stay counted only if it `failed` on
    /// credentials, so a malformed request or a success costs no budget.
    fn settle(self, failed: bool) {
        if !failed {
            for subject in &self.begun {
                self.state.forgive(subject);
            }
        }
    }
}

/// The granted scopes: all allowed, or the requested subset.
fn grant_scopes(allowed: &[String], requested: Option<&str>) -> Result<Vec<String>, Failure> {
    match requested.map(str::split_ascii_whitespace) {
        None => Ok(allowed.to_vec()),
        Some(words) => {
            let mut granted = Vec::new();
            for word in words {
                if !allowed.iter().any(|a| a == word) {
                    return Err(Failure::bad_request(
                        "invalid_scope",
                        "a requested scope is not allowed for this client",
                    ));
                }
                if !granted.iter().any(|g: &String| g == word) {
                    granted.push(word.to_owned());
                }
            }
            if granted.is_empty() {
                Ok(allowed.to_vec())
            } else {
                Ok(granted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_a_subset_of_the_allowed() {
        let allowed = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(grant_scopes(&allowed, None).ok(), Some(allowed.clone()));
        assert_eq!(
            grant_scopes(&allowed, Some("b")).ok(),
            Some(vec!["b".to_owned()])
        );
        assert_eq!(
            grant_scopes(&allowed, Some("a c")).err().map(|f| f.error),
            Some("invalid_scope")
        );
    }
}
