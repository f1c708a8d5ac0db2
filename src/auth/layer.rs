//! [`JwtAuthLayer`]: a valid token with the route's scopes and claims, or
//! an RFC 6750 refusal.
//!
//! It sits first among a jwt route's own layers (after the request deadline
//! and the token-use observer): nothing reaches the header policy or the
//! upstream without passing it. It reads the one `Authorization: Bearer`
//! header, verifies the token through the shared [`Authenticator`], checks
//! the route's [`RouteAuthz`], and puts the [`Principal`] (as
//! `Arc<Principal>`) into the request extensions. Every answer, the
//! upstream's or its own 400/401/403, carries an [`AuthOutcome`] in its
//! extensions for the observers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

use super::authenticator::{Authenticator, Now, Verdict};
use super::jwt::Principal;
use super::outcome::AuthOutcome;
use super::rejection::{bearer_token, forbidden_response, rejection_response};
use super::scopes::RouteAuthz;
use crate::body::{Body, HttpService};
use crate::execution_key::ExecutionKey;

/// Requires a valid token with the route's scopes and claims.
#[derive(Clone, Debug)]
pub struct JwtAuthLayer {
    authenticator: Arc<Authenticator>,
    authz: Arc<RouteAuthz>,
}

impl JwtAuthLayer {
    /// The layer for one route.
    pub fn new(authenticator: Arc<Authenticator>, authz: RouteAuthz) -> Self {
        Self {
            authenticator,
            authz: Arc::new(authz),
        }
    }
}

impl Layer<HttpService> for JwtAuthLayer {
    type Service = JwtAuth;

    fn layer(&self, inner: HttpService) -> Self::Service {
        JwtAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`JwtAuthLayer`].
#[derive(Clone, Debug)]
pub struct JwtAuth {
    inner: HttpService,
    layer: JwtAuthLayer,
}

impl Service<Request<Body>> for JwtAuth {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = JwtFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Decides at once for every token but one whose `kid` a trusted
    /// issuer must be asked for: an allowed request goes on to the inner
    /// service in this call, with no future or service clone of its own.
    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let verdict = match bearer_token(request.headers()) {
            Ok(token) => match self.layer.authenticator.authenticate_now(token) {
                Now::Verdict(verdict) => verdict,
                Now::Refetch { .. } => return JwtFuture::Waiting(self.after_refetch(request)),
            },
            Err(rejection) => Err((rejection, None)),
        };
        match decide(&self.layer, verdict, &mut request) {
            Ok(principal) => JwtFuture::Allowed {
                inner: self.inner.call(request),
                principal: Some(principal),
            },
            Err(response) => JwtFuture::Refused(Some(response)),
        }
    }
}

impl JwtAuth {
    /// The slow path: the issuer's JWKS is fetched again (at most once per
    /// its refetch interval), then the token is decided.
    fn after_refetch(
        &mut self,
        mut request: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, Infallible>> {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let verdict = match bearer_token(request.headers()) {
                Ok(token) => layer.authenticator.authenticate_detailed(token).await,
                Err(rejection) => Err((rejection, None)),
            };
            match decide(&layer, verdict, &mut request) {
                Ok(principal) => {
                    JwtFuture::Allowed {
                        inner: inner.call(request),
                        principal: Some(principal),
                    }
                    .await
                }
                Err(response) => Ok(response),
            }
        })
    }
}

/// The route's answer to a verdict: the principal, put into the request's
/// extensions, or the 401/403 with its [`AuthOutcome`].
#[allow(clippy::result_large_err)] // the refusal is built once, here, and answered as it is
fn decide(
    layer: &JwtAuthLayer,
    verdict: Verdict,
    request: &mut Request<Body>,
) -> Result<Arc<Principal>, Response<Body>> {
    let principal = match verdict {
        Ok(principal) => principal,
        Err((rejection, known)) => {
            tracing::info!(reason = rejection.reason.as_str(), "token rejected");
            let mut response = rejection_response(rejection, None, execution_key(request));
            let outcome = AuthOutcome::denied(rejection.reason, known);
            response.extensions_mut().insert(outcome);
            return Err(response);
        }
    };
    if let Err(denied) = layer.authz.check(&principal, request.method()) {
        tracing::info!(
            reason = denied.reason.as_str(),
            "token lacks what the route requires"
        );
        let mut response = forbidden_response(
            &denied.needed,
            denied.claim.as_deref(),
            execution_key(request),
        );
        let outcome = AuthOutcome::denied(denied.reason, Some(principal));
        response.extensions_mut().insert(outcome);
        return Err(response);
    }
    request
        .extensions_mut()
        .insert(crate::extensions::AuthorizedUntil(principal.exp));
    request.extensions_mut().insert(principal.clone());
    Ok(principal)
}

/// The answer of [`JwtAuth`].
pub enum JwtFuture {
    /// Allowed: the inner service's answer, marked allowed unless a layer
    /// behind (the rate limit) refused it.
    Allowed {
        /// The inner service's future.
        inner: <HttpService as Service<Request<Body>>>::Future,
        /// Taken when the answer is marked.
        principal: Option<Arc<Principal>>,
    },
    /// Refused (401, 403); taken when polled.
    Refused(Option<Response<Body>>),
    /// Waiting for a trusted issuer's keys.
    Waiting(BoxFuture<'static, Result<Response<Body>, Infallible>>),
}

impl std::fmt::Debug for JwtFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtFuture::Allowed { .. } => "JwtFuture::Allowed",
            JwtFuture::Refused(_) => "JwtFuture::Refused",
            JwtFuture::Waiting(_) => "JwtFuture::Waiting",
        })
    }
}

impl std::future::Future for JwtFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every variant is Unpin (the inner futures are boxed).
        match self.get_mut() {
            JwtFuture::Allowed { inner, principal } => {
                let Ok(mut response) = std::task::ready!(inner.as_mut().poll(cx));
                if response.extensions().get::<AuthOutcome>().is_none()
                    && let Some(principal) = principal.take()
                {
                    response
                        .extensions_mut()
                        .insert(AuthOutcome::allowed(principal));
                }
                Poll::Ready(Ok(response))
            }
            // Polled again after it answered: nothing more comes.
            JwtFuture::Refused(response) => response
                .take()
                .map_or(Poll::Pending, |r| Poll::Ready(Ok(r))),
            JwtFuture::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// The request's key, read only when a refusal needs it: an allowed
/// request costs no copy.
fn execution_key<B>(request: &Request<B>) -> Option<&ExecutionKey> {
    request.extensions().get::<ExecutionKey>()
}
