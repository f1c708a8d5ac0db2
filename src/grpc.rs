//! gRPC-aware refusals: [`GrpcRejectionLayer`] answers a gRPC client's
//! request that the gateway refuses itself the way gRPC clients read
//! (issue 14, SPEC §15).
//!
//! For a request whose `content-type` is `application/grpc` (or
//! `application/grpc+proto`, `application/grpc-web`…), an answer the
//! gateway made itself (it carries [`OwnAnswer`], which every JSON error
//! gets from [`crate::error::json_error`]) becomes a trailers-only response:
//! the same HTTP status and headers (`WWW-Authenticate`, `Retry-After`,
//! `X-Execution-Key`…), `content-type: application/grpc`, `grpc-status`
//! and a percent-encoded `grpc-message` as headers, and no body. The
//! upstream's answers, and every answer to a request that is not gRPC, pass
//! untouched.
//!
//! It sits in the shared stack inside the access log (which then logs the
//! `grpc_status` the client got) and outside the panic catcher, so a caught
//! panic's 500 is converted too.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::error::OwnAnswer;

/// Turns the gateway's own refusals of gRPC requests into gRPC statuses.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcRejectionLayer;

impl<S> Layer<S> for GrpcRejectionLayer {
    type Service = GrpcRejection<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcRejection { inner }
    }
}

/// The service made by [`GrpcRejectionLayer`].
#[derive(Clone, Debug)]
pub struct GrpcRejection<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for GrpcRejection<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        ResponseFuture {
            inner: self.inner.call(request),
            grpc,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcRejection`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        if !*this.grpc {
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(trailers_only(response)))
    }
}

/// Whether the request is a gRPC call: `content-type: application/grpc`,
/// alone or followed by `+format` or `-web`, any case, parameters allowed.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split(';').next().unwrap_or("").trim();
            essence.len() >= 16
                && essence.is_char_boundary(16)
                && essence[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(essence.as_bytes().get(16), None | Some(b'+' | b'-'))
        })
}

/// The gRPC status code for a refusal answered with `status`: the codes of
/// issue 14 (401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 429 →
/// RESOURCE_EXHAUSTED, 502/503 → UNAVAILABLE, 504 → DEADLINE_EXCEEDED), and
/// for the others the nearest gRPC meaning.
pub fn grpc_status_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 3,             // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 | 405 => 12,      // UNIMPLEMENTED: no such method here
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        500 => 13,            // INTERNAL
        502 | 503 => 14,      // UNAVAILABLE
        504 => 4,             // DEADLINE_EXCEEDED
        _ => 2,               // UNKNOWN
    }
}

/// `response` as a trailers-only gRPC answer, when the gateway made it.
fn trailers_only(response: Response<Body>) -> Response<Body> {
    let Some(answer) = response.extensions().get::<OwnAnswer>() else {
        return response;
    };
    let code = grpc_status_for(response.status());
    let message = grpc_message(answer.description());
    let (mut parts, _json) = response.into_parts();
    let headers = &mut parts.headers;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    Response::from_parts(parts, body::empty())
}

/// The gRPC percent-encoding of `grpc-message`: printable ASCII but `%`
/// as it is, every other byte as `%XX`.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))])
    }

    #[test]
    fn grpc_content_types_are_recognised_and_lookalikes_are_not() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc-web",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&headers(yes)), "{yes}");
        }
        for no in [
            "application/json",
            "application/grpcx",
            "application/grp",
            "text/plain",
        ] {
            assert!(!is_grpc(&headers(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn statuses_map_to_the_grpc_codes_clients_expect() {
        let code = |s: u16| grpc_status_for(StatusCode::from_u16(s).unwrap_or(StatusCode::OK));
        assert_eq!(code(401), 16);
        assert_eq!(code(403), 7);
        assert_eq!(code(429), 8);
        assert_eq!(code(502), 14);
        assert_eq!(code(503), 14);
        assert_eq!(code(504), 4);
        assert_eq!(code(418), 2);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_message("token expired"), "token expired");
        assert_eq!(grpc_message("100% sure"), "100%25 sure");
        assert_eq!(grpc_message("é\n"), "%C3%A9%0A");
    }
}
