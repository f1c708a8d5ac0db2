//! Request framing (SPEC §16): one way to read where a body ends.
//!
//! [`RequestFramingLayer`] sits just outside the size limits, before routing,
//! so a request whose framing is in doubt never reaches a route, let alone
//! an upstream. hyper has already refused, with its own 400, what its
//! HTTP/1 parser cannot frame: several different `Content-Length`s or one
//! that is not a number, a `Transfer-Encoding` whose last coding is not
//! `chunked`, `Transfer-Encoding` in HTTP/1.0, control characters in a
//! header, whitespace before a header's colon. It lets through a
//! `Transfer-Encoding` that merely *ends* in `chunked` (`gzip, chunked`,
//! `chunked, chunked`, two header lines): a front proxy may read such a
//! request differently, so this layer answers it with 400 `bad_request`.
//! hyper leaves the header in `headers()` for HTTP/1.1 (HTTP/2 forbids it).
//!
//! It also wraps every streamed body in [`FromClient`], so that an error
//! while hyper reads the client's body (a bad chunk, a body cut short) is
//! marked as the client's: the proxy answers it with 400 `bad_request`
//! rather than 502. The wrapper goes on beneath the size limit, so the
//! limit's own error stays a 413.
//!
//! It reads and writes no extensions besides reading
//! [`ExecutionKey`] for its answer.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response, header};
use http_body::Body as _;
use tower::{Layer, Service};

use crate::body::{self, Body, FromClient};
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;

/// Refuses any `Transfer-Encoding` but `chunked`, and marks client body errors.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFramingLayer;

impl<S> Layer<S> for RequestFramingLayer {
    type Service = RequestFraming<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestFraming { inner }
    }
}

/// The service made by [`RequestFramingLayer`].
#[derive(Clone, Debug)]
pub struct RequestFraming<S> {
    inner: S,
}

/// Whether the request's `Transfer-Encoding` is absent or exactly one
/// `chunked` (any case, without the surrounding whitespace a field value
/// never includes).
pub fn transfer_encoding_is_plain(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => value
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    }
}

impl<S> Service<Request<Body>> for RequestFraming<S>
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
        if !transfer_encoding_is_plain(request.headers()) {
            let key = request.extensions().get::<ExecutionKey>();
            let mut response = GatewayError::new(
                ErrorCode::BadFraming,
                "the only Transfer-Encoding accepted is chunked",
            )
            .into_response(key);
            // The body's framing is in doubt, so is where the next request
            // would start: close the connection rather than read on.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return Either::Right(ready(Ok(response)));
        }
        // A request without a body (most GETs) has nothing to read.
        let request = if request.body().is_end_stream() {
            request
        } else {
            request.map(|b| body::boxed(FromClient::new(b)))
        };
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::TRANSFER_ENCODING, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_one_plain_chunked_is_accepted() {
        for good in [&[][..], &["chunked"], &["Chunked"], &["CHUNKED "]] {
            assert!(transfer_encoding_is_plain(&headers(good)), "{good:?}");
        }
        for bad in [
            &["chunked, chunked"][..],
            &["gzip, chunked"],
            &["chunked, identity"],
            &["chunked", "chunked"],
            &["gzip", "chunked"],
            &["chunked;q=1"],
            &["identity"],
            &[""],
        ] {
            assert!(!transfer_encoding_is_plain(&headers(bad)), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_listed_transfer_encoding_is_answered_400_without_calling_the_route() {
        use tower::ServiceExt as _;
        let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = called.clone();
        let inner = tower::service_fn(move |_: Request<Body>| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(Response::new(body::empty())) }
        });
        let request = Request::builder()
            .method("POST")
            .header(header::TRANSFER_ENCODING, "gzip, chunked")
            .body(body::full("x"))
            .expect("the test request builds");
        let response = RequestFramingLayer.layer(inner).oneshot(request).await;
        let status = response.map(|r| r.status()).ok();
        assert_eq!(status, Some(http::StatusCode::BAD_REQUEST));
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    }
}
