//! Authentication of requests on `auth = "jwt"` routes.
//!
//! Token validation is not wired in yet: until it is, [`JwtAuthLayer`] fails
//! closed and answers every request with 401, so a route that asks for a
//! token can never be reached without one.

use std::task::{Context, Poll};

use futures_util::future::{Ready, ready};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::body::Body;
use crate::error::json_error;
use crate::execution_key::ExecutionKey;

/// Requires a valid token; for now, refuses every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct JwtAuthLayer;

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth { _inner: inner }
    }
}

/// The service made by [`JwtAuthLayer`].
#[derive(Clone, Debug)]
pub struct JwtAuth<S> {
    _inner: S,
}

impl<S, B> Service<Request<B>> for JwtAuth<S> {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Response<Body>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let key = request.extensions().get::<ExecutionKey>();
        let mut response = json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "token validation is not available in this build",
            key,
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"warden\""),
        );
        ready(Ok(response))
    }
}
