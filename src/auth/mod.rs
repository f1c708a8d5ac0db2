//! Authentication and authorization of requests on `auth = "jwt"` routes.
//!
//! - [`keys`]: the gateway's own key material;
//! - [`jwks`]: trusted issuers and their remote key sets;
//! - [`jwt`]: the pure verification function;
//! - [`scopes`]: what a route requires of a verified token;
//! - [`forward`]: claims towards the upstream, the token away from it;
//! - [`issue`] and [`login`]: the gateway's own tokens and endpoints;
//! - [`state`]: revocations and login-failure counters.
//!
//! [`JwtAuthLayer`] sits first in a route's stack: nothing reaches the header
//! policy or the upstream without passing it. It reads the one
//! `Authorization: Bearer` header, verifies the token through the shared
//! [`Authenticator`] (which caches verified tokens), checks the route's
//! scopes and claims, and puts the [`Principal`] (as `Arc<Principal>`) into
//! the request extensions. Rejections follow RFC 6750 (SPEC §4): 401
//! without an error code for a missing token, 400 `invalid_request` for two
//! `Authorization` headers, 401 `invalid_token` for a bad token, 403
//! `insufficient_scope` for a token that may not use the route; each carries
//! the execution key and a reason code that metrics count.

pub mod alg;
mod cache_admission;
pub mod forward;
pub mod issue;
pub mod jwk;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod login;
pub mod scopes;
pub mod state;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use prometheus::IntCounter;
use tower::{Layer, Service};

use crate::audit::AuditLog;
use crate::body::{Body, HttpService};
use crate::clock::unix_now;
use crate::error::json_error;
use crate::execution_key::ExecutionKey;
use crate::metrics::Metrics;
pub use jwt::{Principal, Reason, Rejection};
pub use scopes::RouteAuthz;

/// `[validation]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationSettings {
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
    /// Entries in the verified-token cache.
    pub cache_entries: u64,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
            // About 15 MiB at most: enough for the clients in flight, bounded
            // when every request brings a new token.
            cache_entries: 10_000,
        }
    }
}

/// The longest `validation.leeway` a config may set, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// The longest a verified token stays cached (less if it expires sooner),
/// so a key removed from a JWKS stops working within this time.
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(300);

struct CacheExpiry;

impl moka::Expiry<[u8; 32], Arc<Principal>> for CacheExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Principal>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let remaining = u64::try_from(value.exp.saturating_sub(unix_now())).unwrap_or(0);
        Some(Duration::from_secs(remaining).min(MAX_CACHE_LIFETIME))
    }
}

/// Verifies tokens against the gateway's keys and its trusted issuers,
/// with a cache of verified tokens. Shared by every route.
pub struct Authenticator {
    state: Arc<dyn state::AuthState>,
    own: Arc<jwt::KeySet>,
    issuers: Vec<Arc<jwks::TrustedIssuer>>,
    cache: moka::sync::Cache<[u8; 32], Arc<Principal>>,
    /// Which verified tokens go into the cache.
    admission: cache_admission::CacheAdmission,
    leeway: i64,
    max_token_bytes: usize,
    cache_hit: IntCounter,
    cache_miss: IntCounter,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("own_keys", &self.own.len())
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `own` keys and `issuers`; `state` holds the
    /// revoked token ids.
    pub fn new(
        own: jwt::KeySet,
        issuers: Vec<Arc<jwks::TrustedIssuer>>,
        state: Arc<dyn state::AuthState>,
        settings: &ValidationSettings,
        metrics: &Metrics,
    ) -> Self {
        Self {
            state,
            own: Arc::new(own),
            issuers,
            cache: moka::sync::Cache::builder()
                .max_capacity(settings.cache_entries)
                .expire_after(CacheExpiry)
                .build(),
            admission: cache_admission::CacheAdmission::new(settings.cache_entries),
            leeway: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
            max_token_bytes: settings.max_token_bytes,
            cache_hit: metrics.token_cache_requests.with_label_values(&["hit"]),
            cache_miss: metrics.token_cache_requests.with_label_values(&["miss"]),
        }
    }

    fn verify_now(&self, token: &str) -> Result<Principal, (Rejection, jwt::Unverified)> {
        let guards: Vec<_> = self.issuers.iter().map(|i| i.keys()).collect();
        let mut sets: Vec<&jwt::KeySet> = Vec::with_capacity(1 + guards.len());
        sets.push(&self.own);
        sets.extend(guards.iter().map(|g| &***g));
        jwt::verify(token, &sets, unix_now(), self.leeway)
    }

    /// Verifies `token` (cache first) and checks that it is not revoked.
    /// An unknown `kid` of a trusted issuer may trigger one refetch of its
    /// JWKS, then one more try.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, Rejection> {
        self.authenticate_detailed(token).await.map_err(|(r, _)| r)
    }

    /// [`Authenticator::authenticate`], also returning the verified
    /// principal of a token refused after verification (revoked), for the
    /// audit log.
    pub async fn authenticate_detailed(
        &self,
        token: &str,
    ) -> Result<Arc<Principal>, (Rejection, Option<Arc<Principal>>)> {
        let principal = self.verify(token).await?;
        if principal
            .jti
            .as_deref()
            .is_some_and(|jti| self.state.is_revoked(&principal.iss, jti))
        {
            let rejection = Rejection {
                reason: Reason::TokenRevoked,
                description: "token revoked",
            };
            return Err((rejection, Some(principal)));
        }
        Ok(principal)
    }

    /// The trusted issuer a token with an unknown `kid` claims to be from.
    fn issuer_to_refetch(
        &self,
        unverified: &jwt::Unverified,
    ) -> Option<(Arc<jwks::TrustedIssuer>, String)> {
        let iss = unverified.iss.as_deref()?;
        let kid = unverified.kid.clone()?;
        for issuer in &self.issuers {
            if issuer.iss() == iss {
                return Some((issuer.clone(), kid));
            }
        }
        None
    }

    /// Verifies `token`, cache first. On failure, also returns the signed
    /// claims when the signature verified (for the audit log).
    async fn verify(
        &self,
        token: &str,
    ) -> Result<Arc<Principal>, (Rejection, Option<Arc<Principal>>)> {
        if token.len() > self.max_token_bytes {
            let rejection = Rejection {
                reason: Reason::TokenTooLarge,
                description: "token too large",
            };
            return Err((rejection, None));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut cache_key = [0u8; 32];
        cache_key.copy_from_slice(digest.as_ref());
        if let Some(principal) = self.cache.get(&cache_key) {
            self.cache_hit.inc();
            return match principal.check_time(unix_now(), self.leeway) {
                Ok(()) => Ok(principal),
                Err(rejection) => Err((rejection, Some(principal))),
            };
        }
        self.cache_miss.inc();
        let signed = |(rejection, unverified): (Rejection, jwt::Unverified)| {
            (rejection, unverified.signed.map(|p| Arc::new(*p)))
        };
        let verified = match self.verify_now(token) {
            Err((rejection, unverified)) if rejection.reason == Reason::UnknownKid => {
                match self.issuer_to_refetch(&unverified) {
                    Some((issuer, kid)) if issuer.refetch_for_unknown_kid(&kid).await => {
                        self.verify_now(token).map_err(signed)
                    }
                    _ => Err((rejection, None)),
                }
            }
            other => other.map_err(signed),
        };
        let principal = Arc::new(verified?);
        if self.admission.admit(&cache_key) {
            self.cache.insert(cache_key, principal.clone());
        }
        Ok(principal)
    }
}

/// The token in the request, or why there is none usable.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let missing = Rejection {
        reason: Reason::MissingToken,
        description: "a bearer token is required",
    };
    let Some(value) = values.next() else {
        return Err(missing);
    };
    if values.next().is_some() {
        return Err(Rejection {
            reason: Reason::DuplicateAuthorization,
            description: "more than one Authorization header",
        });
    }
    let malformed = Rejection {
        reason: Reason::Malformed,
        description: "malformed Authorization header",
    };
    let text = value.to_str().map_err(|_| malformed)?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(missing);
    }
    Ok(token)
}

/// The RFC 6750 answer to a rejection.
pub fn rejection_response(
    rejection: Rejection,
    needed_scope: Option<&str>,
    key: Option<&ExecutionKey>,
) -> Response<Body> {
    let (status, error, challenge) = match rejection.reason {
        Reason::MissingToken => (
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "Bearer realm=\"warden\"".to_owned(),
        ),
        Reason::DuplicateAuthorization => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Bearer realm=\"warden\", error=\"invalid_request\"".to_owned(),
        ),
        Reason::InsufficientScope | Reason::ClaimMismatch => {
            let mut challenge = "Bearer realm=\"warden\", error=\"insufficient_scope\"".to_owned();
            if let Some(scope) = needed_scope.filter(|s| !s.is_empty()) {
                challenge.push_str(&format!(", scope=\"{scope}\""));
            }
            (StatusCode::FORBIDDEN, "insufficient_scope", challenge)
        }
        Reason::Malformed
        | Reason::TokenTooLarge
        | Reason::AlgNotAllowed
        | Reason::UnknownKid
        | Reason::CritUnsupported
        | Reason::SignatureInvalid
        | Reason::TokenExpired
        | Reason::TokenNotYetValid
        | Reason::IssuerMismatch
        | Reason::AudienceMismatch
        | Reason::TokenRevoked => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!(
                "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{}\"",
                rejection.description
            ),
        ),
    };
    let mut response = json_error(status, error, rejection.description, key);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Requires a valid token with the route's scopes and claims.
#[derive(Clone, Debug)]
pub struct JwtAuthLayer {
    authenticator: Arc<Authenticator>,
    authz: Arc<RouteAuthz>,
    route: Arc<str>,
    metrics: Metrics,
    audit: AuditLog,
    /// `warden_auth_decisions_total{route,"allow","ok"}`, resolved once: the
    /// common case costs no label lookup.
    allowed: IntCounter,
}

impl JwtAuthLayer {
    /// The layer for one route.
    pub fn new(
        authenticator: Arc<Authenticator>,
        authz: RouteAuthz,
        route: &str,
        metrics: Metrics,
        audit: AuditLog,
    ) -> Self {
        Self {
            allowed: metrics
                .auth_decisions
                .with_label_values(&[route, "allow", "ok"]),
            authenticator,
            authz: Arc::new(authz),
            route: route.into(),
            metrics,
            audit,
        }
    }
}

/// What the `token_use` audit event says about one request.
pub(crate) struct TokenUse<'a> {
    pub(crate) route: &'a str,
    pub(crate) method: &'a http::Method,
    pub(crate) path: &'a str,
    pub(crate) client_ip: Option<std::net::IpAddr>,
    /// The verified claims, when the signature verified.
    pub(crate) principal: Option<&'a Principal>,
    pub(crate) status: StatusCode,
    /// Why it was denied; ignored when allowed.
    pub(crate) reason: Reason,
    pub(crate) allowed: bool,
    pub(crate) started: Instant,
}

impl TokenUse<'_> {
    /// Writes the `token_use` audit event: for every request that presented
    /// a token, accepted or not, on any route or endpoint.
    pub(crate) fn audit(&self, audit: &AuditLog, key: Option<&ExecutionKey>) {
        /// The event's fields, borrowed: serialized without building a map.
        #[derive(serde::Serialize)]
        struct Event<'a> {
            #[serde(serialize_with = "crate::audit::as_text")]
            ts: humantime::Rfc3339Timestamp,
            event: &'static str,
            execution_key: Option<&'a str>,
            jti: Option<&'a str>,
            sub: Option<&'a str>,
            iss: Option<&'a str>,
            scope: Option<SpaceSeparated<'a>>,
            route: &'a str,
            method: &'a str,
            path: &'a str,
            status: u16,
            decision: &'static str,
            reason: &'static str,
            client_ip: Option<std::net::IpAddr>,
            latency_ms: f64,
        }
        let principal = self.principal;
        audit.send(&Event {
            ts: crate::audit::now_rfc3339(),
            event: "token_use",
            execution_key: key.map(ExecutionKey::as_str),
            jti: principal.and_then(|p| p.jti.as_deref()),
            sub: principal.and_then(|p| p.sub.as_deref()),
            iss: principal.map(|p| p.iss.as_str()),
            scope: principal.map(|p| SpaceSeparated(&p.scopes)),
            route: self.route,
            method: self.method.as_str(),
            path: self.path,
            status: self.status.as_u16(),
            decision: if self.allowed { "allow" } else { "deny" },
            reason: if self.allowed {
                "ok"
            } else {
                self.reason.as_str()
            },
            client_ip: self.client_ip,
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

/// Scopes as one space-separated string (RFC 6749 §3.3), written straight
/// into the event without an intermediate `String`.
struct SpaceSeparated<'a>(&'a [String]);

impl std::fmt::Display for SpaceSeparated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
        }
        Ok(())
    }
}

impl serde::Serialize for SpaceSeparated<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JwtAuthLayer {
    fn count(&self, decision: &str, reason: &str) {
        self.metrics
            .auth_decisions
            .with_label_values(&[&*self.route, decision, reason])
            .inc();
    }

    /// `token_use`: for every request that presented a token, accepted or not.
    fn audit_use(&self, key: Option<&ExecutionKey>, usage: TokenUse<'_>) {
        usage.audit(&self.audit, key);
    }
}

impl Layer<HttpService> for JwtAuthLayer {
    type Service = JwtAuth;

    fn layer(&self, inner: HttpService) -> Self::Service {
        JwtAuth {
            inner,
            layer: Arc::new(self.clone()),
        }
    }
}

/// The service made by [`JwtAuthLayer`].
#[derive(Clone, Debug)]
pub struct JwtAuth {
    inner: HttpService,
    layer: Arc<JwtAuthLayer>,
}

impl Service<Request<Body>> for JwtAuth {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let started = Instant::now();
            let key = request.extensions().get::<ExecutionKey>().cloned();
            // What the audit event needs of the request, kept before it moves on.
            let method = request.method().clone();
            // A clone of the URI shares its buffer: no copy of the path.
            let uri = request.uri().clone();
            let client_ip = request
                .extensions()
                .get::<crate::extensions::ConnectInfo>()
                .map(|c| c.remote.ip());
            let verified = match bearer_token(request.headers()) {
                Ok(token) => layer.authenticator.authenticate_detailed(token).await,
                Err(rejection) => Err((rejection, None)),
            };
            let principal = match verified {
                Ok(principal) => principal,
                Err((rejection, known)) => {
                    layer.count("deny", rejection.reason.as_str());
                    tracing::info!(reason = rejection.reason.as_str(), "token rejected");
                    let response = rejection_response(rejection, None, key.as_ref());
                    // A request without a bearer token presented none to audit.
                    if rejection.reason != Reason::MissingToken {
                        let usage = TokenUse {
                            route: &layer.route,
                            method: &method,
                            path: uri.path(),
                            client_ip,
                            principal: known.as_deref(),
                            status: response.status(),
                            reason: rejection.reason,
                            allowed: false,
                            started,
                        };
                        layer.audit_use(key.as_ref(), usage);
                    }
                    return Ok(response);
                }
            };
            if let Err(denied) = layer.authz.check(&principal, request.method()) {
                layer.count("deny", denied.reason.as_str());
                tracing::info!(
                    reason = denied.reason.as_str(),
                    "token lacks what the route requires"
                );
                let description = match denied.reason {
                    Reason::ClaimMismatch => "a required claim is missing or not allowed",
                    _ => "the token lacks a required scope",
                };
                let rejection = Rejection {
                    reason: denied.reason,
                    description,
                };
                // The scope attribute names scopes; a claim mismatch is not one.
                let needed =
                    (denied.reason == Reason::InsufficientScope).then_some(denied.needed.as_str());
                let response = rejection_response(rejection, needed, key.as_ref());
                let usage = TokenUse {
                    route: &layer.route,
                    method: &method,
                    path: uri.path(),
                    client_ip,
                    principal: Some(&principal),
                    status: response.status(),
                    reason: denied.reason,
                    allowed: false,
                    started,
                };
                layer.audit_use(key.as_ref(), usage);
                return Ok(response);
            }
            layer.allowed.inc();
            request.extensions_mut().insert(principal.clone());
            let response = inner.call(request).await?;
            let usage = TokenUse {
                route: &layer.route,
                method: &method,
                path: uri.path(),
                client_ip,
                principal: Some(&principal),
                status: response.status(),
                reason: Reason::MissingToken,
                allowed: true,
                started,
            };
            layer.audit_use(key.as_ref(), usage);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_single() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(
            bearer_token(&HeaderMap::from_iter([(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(b"Bearer \xff").unwrap_or(HeaderValue::from_static("x"))
            )]))
            .map_err(|r| r.reason),
            Err(Reason::Malformed)
        );
        assert_eq!(bearer_token(&headers(&["bEaReR   abc"])), Ok("abc"));
        let reason = |h: &[&'static str]| {
            bearer_token(&headers(h))
                .map(str::to_owned)
                .map_err(|r| r.reason)
        };
        assert_eq!(reason(&[]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Basic dXNlcjpwYXNz"]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Bearer"]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Bearer  "]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Bearer a b"]), Ok("a b".to_owned()));
        assert_eq!(
            reason(&["Bearer a", "Bearer b"]),
            Err(Reason::DuplicateAuthorization)
        );
    }
}
