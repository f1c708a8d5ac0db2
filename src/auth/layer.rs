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

use super::authenticator::Authenticator;
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
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let verified = match bearer_token(request.headers()) {
                Ok(token) => layer.authenticator.authenticate_detailed(token).await,
                Err(rejection) => Err((rejection, None)),
            };
            let principal = match verified {
                Ok(principal) => principal,
                Err((rejection, known)) => {
                    tracing::info!(reason = rejection.reason.as_str(), "token rejected");
                    let mut response = rejection_response(rejection, None, execution_key(&request));
                    let outcome = AuthOutcome::denied(rejection.reason, known);
                    response.extensions_mut().insert(outcome);
                    return Ok(response);
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
                    execution_key(&request),
                );
                let outcome = AuthOutcome::denied(denied.reason, Some(principal));
                response.extensions_mut().insert(outcome);
                return Ok(response);
            }
            request
                .extensions_mut()
                .insert(crate::extensions::AuthorizedUntil(principal.exp));
            request.extensions_mut().insert(principal.clone());
            let mut response = inner.call(request).await?;
            // A layer behind auth (the rate limit) may have refused it.
            if response.extensions().get::<AuthOutcome>().is_none() {
                response
                    .extensions_mut()
                    .insert(AuthOutcome::allowed(principal));
            }
            Ok(response)
        })
    }
}

/// The request's key, read only when a refusal needs it: an allowed
/// request costs no copy.
fn execution_key<B>(request: &Request<B>) -> Option<&ExecutionKey> {
    request.extensions().get::<ExecutionKey>()
}
