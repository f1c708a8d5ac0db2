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
//!
//! This module routes between the endpoints and answers the JWKS and 405s
//! itself; the rest lives in its children, whose imports run one way:
//!
//! - `identity`: API keys, users, argon2 (hashing, verification on a
//!   bounded number of blocking threads);
//! - `response`: the token response and the RFC 6749 error answers;
//! - `request`: reading credentials and the body of a login request;
//! - `attempt`: one login attempt, throttled, counted and audited;
//! - `revoke`: the revocation endpoint.
//!
//! Reads the `ExecutionKey` extension (echoed in every answer) and the
//! `ConnectInfo` extension (throttling and audit).

mod attempt;
mod hashing;
mod identity;
mod request;
mod response;
mod revoke;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use prometheus::IntCounterVec;
use tower::Service;

use self::attempt::Login;
pub use self::identity::{
    ApiKeyIdentity, DEMO_API_KEY, DEMO_PASSWORD, HashPasswordError, UserIdentity, demo_credentials,
    hash_password,
};
use self::revoke::Revoke;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::auth::issue::{TokenIssuer, public_jwks};
use crate::auth::keys::LoadedKey;
use crate::body::{self, Body};
use crate::error::json_error;
use crate::execution_key::ExecutionKey;
use crate::shared_state::AuthState;
pub use hashing::MAX_M_COST_KIB;

/// The path of the public JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

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

/// The endpoints of this module, as one service.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<EndpointsInner>,
}

struct EndpointsInner {
    login: Login,
    revoke: Revoke,
    jwks: String,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("login", &self.inner.login.settings().map(|l| &l.path))
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
    /// Its decryption keys, whose public halves the JWKS publishes too.
    pub decryption_keys: &'a [Arc<crate::auth::jwe::DecryptionKey>],
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
        let login = Login::new(
            config.login.cloned(),
            config.issuer,
            config.state.clone(),
            config.audit.clone(),
            config.tokens_issued,
            config.login_failures,
        );
        let revoke = Revoke::new(config.authenticator, config.state, config.audit);
        Self {
            inner: Arc::new(EndpointsInner {
                login,
                revoke,
                jwks: public_jwks(config.keys, config.decryption_keys).to_string(),
            }),
        }
    }

    /// The exact (normalised) paths of the endpoints in force: the JWKS
    /// always, login and revocation when `[login]` is set.
    pub fn paths(&self) -> Vec<(String, Endpoint)> {
        let mut paths = vec![(JWKS_PATH.to_owned(), Endpoint::Jwks)];
        if let Some(login) = self.inner.login.settings() {
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
        let login = self.inner.login.settings()?;
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
                Endpoint::Login => inner.login.answer(request, key.as_ref()).await,
                Endpoint::Revoke => inner.revoke.answer(request, key.as_ref()).await,
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
