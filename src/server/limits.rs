//! Request size limits: headers (431) and bodies (413).
//!
//! [`RequestLimitsLayer`] sits before routing and auth, so an oversized
//! request costs no parsing or crypto. Headers are measured as they would be
//! on the wire (`name: value\r\n`); a `Content-Length` above the limit is
//! refused at once; every body that is not already complete when the
//! request arrives (chunked ones too) is wrapped in
//! [`Limited`](crate::body::Limited), which fails the stream one byte past the
//! limit (the proxy then answers 413). A request without a body has nothing
//! to limit.
//!
//! hyper enforces the same header limit for HTTP/1.1 before the request is
//! even parsed (it answers 431 itself); this layer makes the limit exact, and
//! applies it to HTTP/2 too.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response, header};
use http_body::Body as _;
use tower::{Layer, Service};

use crate::body::{self, Body, Limited};
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;

/// Enforces `max_header_bytes` and `max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimitsLayer {
    max_header_bytes: usize,
    max_body_bytes: u64,
}

impl RequestLimitsLayer {
    /// Limits as configured in `[server]`.
    pub fn new(max_header_bytes: usize, max_body_bytes: u64) -> Self {
        Self {
            max_header_bytes,
            max_body_bytes,
        }
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimits {
            inner,
            limits: *self,
        }
    }
}

/// The service made by [`RequestLimitsLayer`].
#[derive(Clone, Debug)]
pub struct RequestLimits<S> {
    inner: S,
    limits: RequestLimitsLayer,
}

fn header_bytes<B>(request: &Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

impl<S> Service<Request<Body>> for RequestLimits<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let refuse = |code, description: String| {
            let key = request.extensions().get::<ExecutionKey>();
            Either::Right(ready(Ok(
                GatewayError::new(code, description).into_response(key)
            )))
        };
        if header_bytes(&request) > self.limits.max_header_bytes {
            return refuse(
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request headers exceed {} bytes",
                    self.limits.max_header_bytes
                ),
            );
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.limits.max_body_bytes) {
            return refuse(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request body exceeds {} bytes",
                    self.limits.max_body_bytes
                ),
            );
        }
        // A request without a body (most GETs) has nothing to limit.
        let request = if request.body().is_end_stream() {
            request
        } else {
            let limit = self.limits.max_body_bytes;
            request.map(|b| body::boxed(Limited::new(b, limit)))
        };
        Either::Left(self.inner.call(request))
    }
}
