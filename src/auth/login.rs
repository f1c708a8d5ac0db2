//! The gateway's own endpoints on the main listener: login, revocation and
//! the public JWKS (SPEC §5).
//!
//! - `POST {login.path}`: trades an API key (`login.api_key_header`), a
//!   user's `Authorization: Basic` password, or an OAuth2 client-credentials
//!   request (RFC 6749 §4.4: form body, client authenticated by Basic with an
//!   API-key id and key) for a token.
//! - `POST {login.path}/revoke`: revokes the presented bearer token's `jti`.
//! - `GET /.well-known/jwks.json`: the public keys.
//!
//! Failures answer like an OAuth2 token endpoint (RFC 6749 §5.2). A wrong
//! password and an unknown user take the same path (an unknown user is
//! checked against a dummy hash) and get the same answer. After
//! `max_failures_per_minute` failures per client address or per identity,
//! the answer is 429 with `Retry-After`. API keys are compared as SHA-256
//! digests in constant time; passwords are argon2id PHC strings.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use argon2::PasswordVerifier;
use base64::Engine;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use prometheus::IntCounterVec;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tower::Service;
use zeroize::Zeroizing;

use super::issue::{Grant, Issued, TokenIssuer, public_jwks};
use super::keys::LoadedKey;
use super::state::AuthState;
use super::{Authenticator, Principal, rejection_response};
use crate::audit::AuditLog;
use crate::body::{self, Body};
use crate::error::{json_error, json_response};
use crate::execution_key::ExecutionKey;
use crate::extensions::ConnectInfo;

/// The path of the public JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The largest login request body read.
const MAX_LOGIN_BODY: usize = 64 * 1024;

/// An API key that may log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    /// The key's id (the client id for client credentials).
    pub id: String,
    /// SHA-256 of the key.
    pub key_sha256: [u8; 32],
    /// `sub` of its tokens.
    pub sub: String,
    /// `role` of its tokens.
    pub role: Option<String>,
    /// The scopes it may have.
    pub scopes: Vec<String>,
    /// Extra claims for its tokens.
    pub claims: Map<String, Value>,
}

/// A user who may log in with Basic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    /// The user name (and `sub` of the user's tokens).
    pub username: String,
    /// The argon2id PHC string.
    pub password_argon2: String,
    /// `role` of the user's tokens.
    pub role: Option<String>,
    /// The scopes the user may have.
    pub scopes: Vec<String>,
    /// Extra claims for the user's tokens.
    pub claims: Map<String, Value>,
}

/// `[login]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginSettings {
    /// The login path (`/auth`); revocation is at `{path}/revoke`.
    pub path: String,
    /// The header carrying an API key.
    pub api_key_header: HeaderName,
    /// Failures per minute per client address and per identity before 429.
    pub max_failures_per_minute: u32,
    /// API keys.
    pub api_keys: Vec<ApiKeyIdentity>,
    /// Users.
    pub users: Vec<UserIdentity>,
}

/// The demo API key of the repo's `gateway.toml` (never for production).
pub const DEMO_API_KEY: &str = "demo-api-key-not-for-production";
/// The password of the demo user `demo` in the repo's `gateway.toml`.
pub const DEMO_PASSWORD: &str = "demo-password";

/// Warnings for demo credentials left in a config: an API key whose digest
/// is that of [`DEMO_API_KEY`], a user `demo` whose password is [`DEMO_PASSWORD`].
pub fn demo_credentials(settings: &LoginSettings) -> Vec<String> {
    let mut found = Vec::new();
    let demo_digest = sha256(DEMO_API_KEY.as_bytes());
    for key in &settings.api_keys {
        if bool::from(key.key_sha256.ct_eq(&demo_digest)) {
            found.push(format!(
                "API key {:?} is the demo key {DEMO_API_KEY:?}",
                key.id
            ));
        }
    }
    for user in settings.users.iter().filter(|u| u.username == "demo") {
        if verify_password(DEMO_PASSWORD.as_bytes(), &user.password_argon2) {
            found.push(format!(
                "user \"demo\" has the demo password {DEMO_PASSWORD:?}"
            ));
        }
    }
    found
}

/// Hashes a password the way `warden hash-password` does: argon2id with
/// OWASP's parameters (m = 19 MiB, t = 2, p = 1), salt from aws-lc-rs.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::PasswordHasher;
    use aws_lc_rs::rand::SecureRandom;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random source failed".to_owned())?;
    argon2::Argon2::default()
        .hash_password_with_salt(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of no one's password, so an unknown user costs what a wrong
/// password costs.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"warden: no such user").unwrap_or_default())
}

fn verify_password(password: &[u8], phc: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password, phc)
        .is_ok()
}

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

/// An OAuth2-style failure (RFC 6749 §5.2).
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    /// For the metric and the audit event; never shown to the client.
    reason: &'static str,
    /// The identity, only when it exists (for the audit event).
    identity: Option<String>,
    /// Counts towards throttling.
    counts: bool,
    retry_after: Option<Duration>,
}

fn invalid_client(reason: &'static str, identity: Option<String>) -> Failure {
    Failure {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: "invalid credentials",
        reason,
        identity,
        counts: true,
        retry_after: None,
    }
}

fn bad_request(error: &'static str, description: &'static str) -> Failure {
    Failure {
        status: StatusCode::BAD_REQUEST,
        error,
        description,
        reason: error,
        identity: None,
        counts: false,
        retry_after: None,
    }
}

/// The endpoints of this module, as one service.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<EndpointsInner>,
}

struct EndpointsInner {
    login: Option<LoginSettings>,
    issuer: Option<TokenIssuer>,
    jwks: String,
    authenticator: Arc<Authenticator>,
    state: Arc<dyn AuthState>,
    audit: AuditLog,
    tokens_issued: IntCounterVec,
    login_failures: IntCounterVec,
    argon2_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("login", &self.inner.login.as_ref().map(|l| &l.path))
            .finish_non_exhaustive()
    }
}

/// Which endpoint a path is, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST {login.path}`.
    Login,
    /// `POST {login.path}/revoke`.
    Revoke,
    /// `GET /.well-known/jwks.json`.
    Jwks,
}

impl Endpoint {
    /// The route label of the endpoint in metrics and logs.
    pub fn route_name(self) -> &'static str {
        match self {
            Endpoint::Login => "warden-login",
            Endpoint::Revoke => "warden-revoke",
            Endpoint::Jwks => "warden-jwks",
        }
    }
}

/// Everything [`Endpoints`] needs.
#[derive(Debug)]
pub struct EndpointsConfig<'a> {
    /// `[login]`, when login is enabled.
    pub login: Option<&'a LoginSettings>,
    /// The token issuer, when a signing key is configured.
    pub issuer: Option<TokenIssuer>,
    /// The gateway's keys, for the JWKS.
    pub keys: &'a [Arc<LoadedKey>],
    /// Verifies tokens presented for revocation.
    pub authenticator: Arc<Authenticator>,
    /// Revocations and failure counters.
    pub state: Arc<dyn AuthState>,
    /// The audit log.
    pub audit: AuditLog,
    /// `warden_tokens_issued_total{method}`.
    pub tokens_issued: IntCounterVec,
    /// `warden_login_failures_total{reason}`.
    pub login_failures: IntCounterVec,
}

impl Endpoints {
    /// The endpoints for `config`.
    pub fn new(config: EndpointsConfig<'_>) -> Self {
        // Warm the dummy hash now, not on the first unknown user.
        let _ = dummy_hash();
        Self {
            inner: Arc::new(EndpointsInner {
                login: config.login.cloned(),
                issuer: config.issuer,
                jwks: public_jwks(config.keys).to_string(),
                authenticator: config.authenticator,
                state: config.state,
                audit: config.audit,
                tokens_issued: config.tokens_issued,
                login_failures: config.login_failures,
                argon2_slots: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, usize::from),
                ),
            }),
        }
    }

    /// The exact (normalised) paths of the endpoints in force: the JWKS
    /// always, login and revocation when `[login]` is set.
    pub fn paths(&self) -> Vec<(String, Endpoint)> {
        let mut paths = vec![(JWKS_PATH.to_owned(), Endpoint::Jwks)];
        if let Some(login) = &self.inner.login {
            paths.push((login.path.clone(), Endpoint::Login));
            paths.push((format!("{}/revoke", login.path), Endpoint::Revoke));
        }
        paths
    }

    /// The endpoint at `path` (normalised), if any.
    pub fn endpoint(&self, path: &str) -> Option<Endpoint> {
        if path == JWKS_PATH {
            return Some(Endpoint::Jwks);
        }
        let login = self.inner.login.as_ref()?;
        if path == login.path {
            Some(Endpoint::Login)
        } else if path.strip_prefix(login.path.as_str()) == Some("/revoke") {
            Some(Endpoint::Revoke)
        } else {
            None
        }
    }

    /// The service for one endpoint.
    pub fn service(&self, endpoint: Endpoint) -> EndpointService {
        EndpointService {
            endpoints: self.clone(),
            endpoint,
        }
    }
}

/// One endpoint as a tower service.
#[derive(Clone, Debug)]
pub struct EndpointService {
    endpoints: Endpoints,
    endpoint: Endpoint,
}

impl Service<Request<Body>> for EndpointService {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.endpoints.inner.clone();
        let endpoint = self.endpoint;
        Box::pin(async move {
            let key = request.extensions().get::<ExecutionKey>().cloned();
            let expected = match endpoint {
                Endpoint::Jwks => Method::GET,
                Endpoint::Login | Endpoint::Revoke => Method::POST,
            };
            if request.method() != expected
                && !(endpoint == Endpoint::Jwks && request.method() == Method::HEAD)
            {
                let mut response = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this endpoint does not take this method",
                    key.as_ref(),
                );
                let allow = if expected == Method::GET {
                    "GET, HEAD"
                } else {
                    "POST"
                };
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return Ok(response);
            }
            Ok(match endpoint {
                Endpoint::Jwks => jwks_response(&inner.jwks),
                Endpoint::Login => inner.login(request, key.as_ref()).await,
                Endpoint::Revoke => inner.revoke(request, key.as_ref()).await,
            })
        })
    }
}

fn jwks_response(jwks: &str) -> Response<Body> {
    let mut response = Response::new(body::full(jwks.to_owned()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The client's credentials, as presented.
enum Presented {
    ApiKey(Zeroizing<Vec<u8>>),
    Basic {
        user: String,
        secret: Zeroizing<String>,
    },
    None,
}

fn basic_credentials(
    headers: &http::HeaderMap,
) -> Result<Option<(String, Zeroizing<String>)>, Failure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_request(
            "invalid_request",
            "more than one Authorization header",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid_client("malformed_credentials", None))?;
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Err(invalid_client("malformed_credentials", None));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid_client("unsupported_scheme", None));
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| invalid_client("malformed_credentials", None))?,
    );
    let text =
        std::str::from_utf8(&decoded).map_err(|_| invalid_client("malformed_credentials", None))?;
    let (user, secret) = text
        .split_once(':')
        .ok_or_else(|| invalid_client("malformed_credentials", None))?;
    Ok(Some((user.to_owned(), Zeroizing::new(secret.to_owned()))))
}

/// `application/x-www-form-urlencoded` fields.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let replaced = s.replace('+', " ");
        let bytes = replaced.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(hex) = replaced.get(i + 1..i + 3)
                && let Ok(value) = u8::from_str_radix(hex, 16)
            {
                out.push(value);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The granted scopes: all allowed, or the requested subset.
fn grant_scopes(allowed: &[String], requested: Option<&str>) -> Result<Vec<String>, Failure> {
    match requested.map(str::split_ascii_whitespace) {
        None => Ok(allowed.to_vec()),
        Some(words) => {
            let mut granted = Vec::new();
            for word in words {
                if !allowed.iter().any(|a| a == word) {
                    return Err(bad_request(
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

impl EndpointsInner {
    fn client_ip(request: &Request<Body>) -> Option<IpAddr> {
        request
            .extensions()
            .get::<ConnectInfo>()
            .map(|c| c.remote.ip())
    }

    async fn login(&self, request: Request<Body>, key: Option<&ExecutionKey>) -> Response<Body> {
        let client_ip = Self::client_ip(&request);
        let ip_text = client_ip.map(|ip| ip.to_string());
        // Attempts are counted as they begin (so parallel guesses are
        // limited too) and taken back unless they failed on credentials.
        let mut attempts = Vec::new();
        let result = self
            .try_login(request, key, ip_text.as_deref(), &mut attempts)
            .await;
        let counts = matches!(&result, Err(failure) if failure.counts);
        if !counts {
            for subject in &attempts {
                self.state.forgive(subject);
            }
        }
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

    /// Counts an attempt for `subject`, or refuses it with 429.
    fn attempt(&self, subject: String, attempts: &mut Vec<String>) -> Result<(), Failure> {
        let limit = self
            .login
            .as_ref()
            .map_or(u32::MAX, |l| l.max_failures_per_minute);
        match self.state.begin_attempt(&subject, limit) {
            Ok(()) => {
                attempts.push(subject);
                Ok(())
            }
            Err(wait) => Err(Failure {
                status: StatusCode::TOO_MANY_REQUESTS,
                error: "slow_down",
                description: "too many failed attempts; try again later",
                reason: "throttled",
                identity: None,
                counts: false,
                retry_after: Some(wait),
            }),
        }
    }

    async fn try_login(
        &self,
        request: Request<Body>,
        key: Option<&ExecutionKey>,
        client_ip: Option<&str>,
        attempts: &mut Vec<String>,
    ) -> Result<(Issued, LoginMethod, String), Failure> {
        let (Some(settings), Some(issuer)) = (&self.login, &self.issuer) else {
            return Err(bad_request("invalid_request", "login is not configured"));
        };
        if let Some(ip) = client_ip {
            self.attempt(format!("ip:{ip}"), attempts)?;
        }
        let (parts, body) = request.into_parts();
        let presented = match parts.headers.get(&settings.api_key_header) {
            Some(value) => Presented::ApiKey(Zeroizing::new(value.as_bytes().to_vec())),
            None => match basic_credentials(&parts.headers)? {
                Some((user, secret)) => Presented::Basic { user, secret },
                None => Presented::None,
            },
        };
        let body = body::read_to_limit(body, MAX_LOGIN_BODY)
            .await
            .map_err(|_| bad_request("invalid_request", "the request body could not be read"))?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let (grant_type, requested_scope) = match content_type.as_deref() {
            Some("application/x-www-form-urlencoded") => {
                let fields = form_fields(&body);
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                (get("grant_type"), get("scope"))
            }
            _ if body.is_empty() => (None, None),
            Some("application/json") | None => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(map)) => match map.get("scope") {
                    None => (None, None),
                    Some(Value::String(s)) => (None, Some(s.clone())),
                    Some(_) => {
                        return Err(bad_request("invalid_request", "scope must be a string"));
                    }
                },
                _ => {
                    return Err(bad_request(
                        "invalid_request",
                        "the body must be a JSON object or a form",
                    ));
                }
            },
            Some(_) => return Err(bad_request("invalid_request", "unsupported content type")),
        };
        if let Some(grant) = &grant_type
            && grant != "client_credentials"
        {
            return Err(bad_request(
                "unsupported_grant_type",
                "only the client_credentials grant is supported",
            ));
        }

        let (method, sub, role, scopes, claims) = match presented {
            Presented::ApiKey(secret) => {
                let digest = sha256(&secret);
                // Compare with every key, without stopping at a match.
                let mut found = None;
                for identity in &settings.api_keys {
                    if bool::from(identity.key_sha256.ct_eq(&digest)) {
                        found = Some(identity);
                    }
                }
                let identity = found.ok_or_else(|| invalid_client("bad_api_key", None))?;
                self.attempt(format!("id:{}", identity.id), attempts)?;
                (
                    LoginMethod::ApiKey,
                    identity.sub.clone(),
                    identity.role.clone(),
                    &identity.scopes,
                    &identity.claims,
                )
            }
            Presented::Basic { user, secret } if grant_type.is_some() => {
                self.attempt(format!("id:{user}"), attempts)?;
                let identity = settings.api_keys.iter().find(|k| k.id == user);
                let expected = identity.map_or([0u8; 32], |k| k.key_sha256);
                let matches = bool::from(expected.ct_eq(&sha256(secret.as_bytes())));
                match identity {
                    Some(identity) if matches => (
                        LoginMethod::ClientCredentials,
                        identity.sub.clone(),
                        identity.role.clone(),
                        &identity.scopes,
                        &identity.claims,
                    ),
                    Some(identity) => {
                        return Err(invalid_client(
                            "bad_client_secret",
                            Some(identity.id.clone()),
                        ));
                    }
                    None => return Err(invalid_client("unknown_client", None)),
                }
            }
            Presented::Basic { user, secret } => {
                self.attempt(format!("id:{user}"), attempts)?;
                let identity = settings.users.iter().find(|u| u.username == user);
                let phc =
                    identity.map_or_else(|| dummy_hash().to_owned(), |u| u.password_argon2.clone());
                // Argon2 is deliberately slow and takes 19 MiB: off the async
                // workers, and no more at once than there are cores.
                let permit = self.argon2_slots.acquire().await;
                let ok =
                    tokio::task::spawn_blocking(move || verify_password(secret.as_bytes(), &phc))
                        .await
                        .unwrap_or(false);
                drop(permit);
                match identity {
                    Some(identity) if ok => (
                        LoginMethod::Basic,
                        identity.username.clone(),
                        identity.role.clone(),
                        &identity.scopes,
                        &identity.claims,
                    ),
                    Some(identity) => {
                        return Err(invalid_client(
                            "bad_password",
                            Some(identity.username.clone()),
                        ));
                    }
                    None => return Err(invalid_client("unknown_user", None)),
                }
            }
            Presented::None => return Err(invalid_client("missing_credentials", None)),
        };
        let granted = grant_scopes(scopes, requested_scope.as_deref())?;
        let issued = issuer
            .issue(&Grant {
                sub: &sub,
                role: role.as_deref(),
                scopes: &granted,
                claims: Some(claims),
                txn: key.map(ExecutionKey::as_str),
                ttl: None,
            })
            .map_err(|err| {
                tracing::error!(error = %err, "signing a token failed");
                Failure {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error: "server_error",
                    description: "the token could not be signed",
                    reason: "signing_failed",
                    identity: None,
                    counts: false,
                    retry_after: None,
                }
            })?;
        Ok((issued, method, sub))
    }

    /// `POST {login.path}/revoke`. Its answer carries an [`AuthOutcome`](super::AuthOutcome),
    /// so it is audited as a `token_use` like any request that presents a token.
    async fn revoke(&self, request: Request<Body>, key: Option<&ExecutionKey>) -> Response<Body> {
        let token = match super::bearer_token(request.headers()) {
            Ok(token) => token.to_owned(),
            Err(rejection) => return rejection_response(rejection, None, key),
        };
        let (response, principal, denied) =
            match self.authenticator.authenticate_detailed(&token).await {
                Ok(principal) => (self.revoke_token(&principal, key), Some(principal), None),
                Err((rejection, known)) => (
                    rejection_response(rejection, None, key),
                    known,
                    Some(rejection),
                ),
            };
        let mut response = response;
        let outcome = match denied {
            None => principal.map(super::AuthOutcome::allowed),
            Some(rejection) => Some(super::AuthOutcome::denied(rejection.reason, principal)),
        };
        if let Some(outcome) = outcome {
            response.extensions_mut().insert(outcome);
        }
        response
    }

    fn revoke_token(&self, principal: &Principal, key: Option<&ExecutionKey>) -> Response<Body> {
        let Some(jti) = principal.jti.clone() else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the token has no jti, so it cannot be revoked",
                key,
            );
        };
        self.state.revoke(&principal.iss, &jti, principal.exp);
        self.audit
            .event("token_revoked", key)
            .field("jti", jti.clone())
            .field("iss", principal.iss.clone())
            .field("sub", principal.sub.clone())
            .field("exp", principal.exp)
            .field("by", "token_holder")
            .send();
        let body = serde_json::json!({ "revoked": true, "jti": jti, "execution_key": key.map(ExecutionKey::as_str) });
        json_response(StatusCode::OK, &body)
    }
}

fn token_response(issued: &Issued) -> Response<Body> {
    let body = serde_json::json!({
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    let mut response = json_response(StatusCode::OK, &body);
    let headers = response.headers_mut();
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Authorization, X-Execution-Key"),
    );
    if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", issued.token)) {
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    response
}

fn failure_response(failure: &Failure, key: Option<&ExecutionKey>) -> Response<Body> {
    let mut response = json_error(failure.status, failure.error, failure.description, key);
    let headers = response.headers_mut();
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if failure.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"warden\""),
        );
    }
    if let Some(wait) = failure.retry_after {
        let seconds = wait.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            headers.insert(header::RETRY_AFTER, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_decode_percent_and_plus() {
        let fields =
            form_fields(b"grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite");
        assert_eq!(
            fields,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "orders:read orders:write".into())
            ]
        );
    }

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

    #[test]
    fn password_hashes_verify_and_wrong_passwords_do_not() {
        let hash = hash_password(b"correct horse").unwrap_or_default();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(b"correct horse", &hash));
        assert!(!verify_password(b"battery staple", &hash));
    }
}
