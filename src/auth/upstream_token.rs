//! [`UpstreamTokenLayer`]: a token minted for the upstream (SPEC §12).
//!
//! Instead of the client's token or loose `X-User-*` headers, a route with
//! `upstream_token` sends its upstream a JWS that warden signs with
//! `issuer.signing_kid` for that upstream alone: `iss` (warden), `aud` (the
//! route's), `iat`, `exp` (the route's `ttl`, never past the caller's own
//! `exp`), a fresh `jti`, `txn` (the execution key of the request that
//! minted it) and the listed claims copied from the caller's verified
//! token; with `encrypt_to`, it is then encrypted to the upstream's public
//! key (a nested JWT, SPEC §12). It sits after the header policy, so the client's own
//! `Authorization` is already gone, and before credential injection.
//!
//! Tokens are cached per route and caller token (its `iss`, `sub`, `jti`,
//! `iat`, `exp` and the copied claims) until [`REUSE_MARGIN`] of their
//! lifetime is left, so a hot route signs once per caller and lifetime,
//! not once per request.

use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Request, Response, header};
use prometheus::IntCounter;
use serde_json::{Map, Value};
use tower::{Layer, Service};

use super::issue::TokenIssuer;
use super::jwe::{EncryptionKey, encrypt};
use super::jwt::Principal;
use crate::body::Body;
use crate::clock::unix_now;
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;

/// A minted token is reused while more than this share of its lifetime
/// (and at least [`MIN_LEFT`]) is left.
pub const REUSE_MARGIN: f64 = 0.2;

/// The least lifetime a reused token has left.
const MIN_LEFT: Duration = Duration::from_secs(2);

/// The most caller tokens one route keeps minted tokens for.
const MAX_CACHED: u64 = 10_000;

/// A route's `upstream_token`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTokenSettings {
    /// `aud` of the minted token: the upstream.
    pub aud: String,
    /// Its lifetime (capped by the caller's `exp`).
    pub ttl: Duration,
    /// Claims copied from the caller's token.
    pub claims: Vec<String>,
    /// The header it is sent in: `Authorization` (as `Bearer <token>`) or
    /// any other (the bare token).
    pub header: HeaderName,
    /// The kid of the upstream's public key it is encrypted to (a nested
    /// JWT), if any.
    pub encrypt_to: Option<String>,
}

/// One minted token, and until when it may be sent.
#[derive(Clone, Debug)]
struct Minted {
    value: HeaderValue,
    reuse_until: Instant,
}

/// Mints (or reuses) the route's upstream token for each verified caller.
#[derive(Clone, Debug)]
pub struct UpstreamTokenLayer {
    inner: Arc<Minter>,
}

#[derive(Debug)]
struct Minter {
    settings: UpstreamTokenSettings,
    issuer: Arc<TokenIssuer>,
    /// The upstream's public key, when the token goes encrypted (`Some(None)`:
    /// it should, but the key is missing, so nothing is sent).
    encrypt_to: Option<Option<Arc<EncryptionKey>>>,
    cache: moka::sync::Cache<String, Minted>,
    minted: IntCounter,
}

impl UpstreamTokenLayer {
    /// The layer for one route, signing with `issuer`, counting mints in
    /// `minted` (`warden_upstream_tokens_minted_total{route}`).
    pub fn new(
        settings: UpstreamTokenSettings,
        issuer: Arc<TokenIssuer>,
        encrypt_to: Option<Option<Arc<EncryptionKey>>>,
        minted: IntCounter,
    ) -> Self {
        Self {
            inner: Arc::new(Minter {
                cache: moka::sync::Cache::builder()
                    .max_capacity(MAX_CACHED)
                    .time_to_live(settings.ttl)
                    .build(),
                settings,
                issuer,
                encrypt_to,
                minted,
            }),
        }
    }
}

impl<S> Layer<S> for UpstreamTokenLayer {
    type Service = UpstreamToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpstreamToken {
            inner,
            minter: self.inner.clone(),
        }
    }
}

/// The service made by [`UpstreamTokenLayer`].
#[derive(Clone, Debug)]
pub struct UpstreamToken<S> {
    inner: S,
    minter: Arc<Minter>,
}

impl<S> Service<Request<Body>> for UpstreamToken<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        use futures_util::future::Either;
        let principal = request.extensions().get::<Arc<Principal>>().cloned();
        let Some(principal) = principal else {
            // Only jwt routes take upstream_token: an unverified request
            // never reaches here. Refuse rather than send it without.
            let key = request.extensions().get::<ExecutionKey>();
            let error = GatewayError::new(
                ErrorCode::Internal,
                "the route's upstream token needs a verified caller",
            );
            return Either::Right(std::future::ready(Ok(error.into_response(key))));
        };
        let txn = request
            .extensions()
            .get::<ExecutionKey>()
            .map(|k| k.as_str().to_owned());
        match self.minter.token_for(&principal, txn.as_deref()) {
            Some(value) => {
                request
                    .headers_mut()
                    .insert(self.minter.settings.header.clone(), value);
                Either::Left(self.inner.call(request))
            }
            None => {
                let key = request.extensions().get::<ExecutionKey>();
                let error = GatewayError::new(
                    ErrorCode::Internal,
                    "the token for the upstream could not be signed",
                );
                Either::Right(std::future::ready(Ok(error.into_response(key))))
            }
        }
    }
}

impl Minter {
    /// The header value for `principal`'s request: cached, or minted now.
    fn token_for(&self, principal: &Principal, txn: Option<&str>) -> Option<HeaderValue> {
        let key = self.cache_key(principal);
        let now = Instant::now();
        if let Some(minted) = self.cache.get(&key)
            && minted.reuse_until > now
        {
            return Some(minted.value);
        }
        let (token, lifetime) = self.mint(principal, txn)?;
        let value = if self.settings.header == header::AUTHORIZATION {
            HeaderValue::try_from(format!("Bearer {token}")).ok()?
        } else {
            HeaderValue::try_from(token).ok()?
        };
        let left = lifetime.mul_f64(REUSE_MARGIN).max(MIN_LEFT);
        if let Some(reuse) = lifetime.checked_sub(left) {
            let minted = Minted {
                value: value.clone(),
                reuse_until: now + reuse,
            };
            self.cache.insert(key, minted);
        }
        Some(value)
    }

    /// Which caller token a minted one stands for: its issuer's `jti`
    /// (unique per token, RFC 7519 §4.1.7) with `exp`, or, for a token
    /// without one, a hash of everything the minted token is made from.
    fn cache_key(&self, principal: &Principal) -> String {
        if let Some(jti) = &principal.jti {
            let mut key = String::with_capacity(principal.iss.len() + jti.len() + 24);
            key.push_str(&principal.iss);
            key.push('\0');
            key.push_str(jti);
            key.push('\0');
            let _ = write!(key, "{}", principal.exp);
            return key;
        }
        let copied: Vec<Option<&Value>> = self
            .settings
            .claims
            .iter()
            .map(|name| principal.claims.get(name))
            .collect();
        let identity = serde_json::json!([
            principal.iss,
            principal.sub,
            principal.jti,
            principal.iat,
            principal.exp,
            copied
        ]);
        crate::crypto::sha256_hex(identity.to_string().as_bytes())
    }

    /// Signs a new token; its lifetime ends at the route's `ttl` or the
    /// caller's `exp`, whichever is first.
    fn mint(&self, principal: &Principal, txn: Option<&str>) -> Option<(String, Duration)> {
        let now = unix_now();
        let ttl = i64::try_from(self.settings.ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = now.saturating_add(ttl).min(principal.exp);
        let lifetime = Duration::from_secs(u64::try_from(exp - now).ok()?);
        let mut claims = Map::new();
        for name in &self.settings.claims {
            if let Some(value) = principal.claims.get(name) {
                claims.insert(name.clone(), value.clone());
            }
        }
        claims.insert("iss".into(), self.issuer.iss().into());
        claims.insert("aud".into(), self.settings.aud.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), exp.into());
        claims.insert(
            "jti".into(),
            uuid::Uuid::now_v7().hyphenated().to_string().into(),
        );
        if let Some(txn) = txn {
            claims.insert("txn".into(), txn.into());
        }
        let token = match self.issuer.sign(&claims) {
            Ok(token) => token,
            Err(err) => {
                tracing::error!(error = %err, "cannot sign the upstream token");
                return None;
            }
        };
        // A nested JWT: signed by warden, readable by the upstream alone.
        let token = match &self.encrypt_to {
            None => token,
            Some(None) => {
                tracing::error!("the upstream's encryption key is missing; no token is sent");
                return None;
            }
            Some(Some(key)) => match encrypt(key, token.as_bytes()) {
                Ok(encrypted) => encrypted,
                Err(err) => {
                    tracing::error!(error = %err, kid = key.kid(), "cannot encrypt the upstream token");
                    return None;
                }
            },
        };
        self.minted.inc();
        Some((token, lifetime))
    }
}
