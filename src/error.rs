//! Errors that become responses.
//!
//! The stack never fails: every error is turned into a response here, with a
//! stable `error` code, a short description for people, and the request's
//! execution key. Whose fault it was (client, upstream, gateway) decides the
//! status, as pingora's errors do.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};
use crate::execution_key::ExecutionKey;

/// Whose fault an error is. It decides the status class (4xx, 502/504,
/// 500), and rides in the response extensions so the access log can say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong: the client can fix it.
    Client,
    /// The upstream failed or was too slow: the client can retry.
    Upstream,
    /// A bug or a broken state in the gateway.
    Gateway,
}

impl Fault {
    /// The value of the access log's `fault` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Gateway => "gateway",
        }
    }
}

/// What went wrong, as a client-facing code. Each variant has one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed (bad path, `%2F`, `..` above the root, …).
    BadRequest,
    /// No route matches the request.
    NotFound,
    /// A route matches the path, but not the method.
    MethodNotAllowed,
    /// The request's framing is broken (SPEC §16): a `Transfer-Encoding`
    /// other than exactly `chunked`, or a body that is not what its framing
    /// says (a bad chunk size, a missing CRLF, cut short). The client's
    /// fault, never the upstream's. Its wire code is `bad_request`.
    BadFraming,
    /// The request body is larger than `max_body_bytes`.
    PayloadTooLarge,
    /// The request headers are larger than `max_header_bytes`.
    HeadersTooLarge,
    /// The upstream refused or reset the connection, or answered garbage.
    BadGateway,
    /// The upstream did not answer within the route's timeout.
    UpstreamTimeout,
    /// The request did not complete within `server.request_timeout`. Its
    /// wire code is `upstream_timeout`, as SPEC §3 fixes for any timeout.
    RequestTimeout,
    /// A bug in the gateway (a caught panic, an impossible state).
    Internal,
    /// The audit log cannot be written and `[audit] on_failure = "refuse"`:
    /// a request that presents a token is not served unaudited.
    AuditUnavailable,
    /// A route's rate limit refused the request (SPEC §11).
    RateLimited,
    /// The shared state (Redis) cannot store what every replica must see,
    /// such as a revocation (SPEC §10).
    SharedStateUnavailable,
}

impl ErrorCode {
    /// Whose fault it is.
    pub fn fault(self) -> Fault {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::BadFraming
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::PayloadTooLarge
            | ErrorCode::HeadersTooLarge
            | ErrorCode::RateLimited => Fault::Client,
            ErrorCode::BadGateway | ErrorCode::UpstreamTimeout | ErrorCode::RequestTimeout => {
                Fault::Upstream
            }
            ErrorCode::Internal
            | ErrorCode::AuditUnavailable
            | ErrorCode::SharedStateUnavailable => Fault::Gateway,
        }
    }

    /// The HTTP status of this error: a 4xx for the client's faults, 502 or
    /// 504 for the upstream's, 500 for the gateway's (503 when a store the
    /// gateway depends on is out, which a client may retry).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadFraming => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout | ErrorCode::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::AuditUnavailable | ErrorCode::SharedStateUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable code in the JSON body's `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "invalid_request",
            ErrorCode::BadFraming => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::HeadersTooLarge => "request_header_fields_too_large",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::UpstreamTimeout | ErrorCode::RequestTimeout => "upstream_timeout",
            ErrorCode::Internal => "internal_error",
            ErrorCode::AuditUnavailable => "audit_unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SharedStateUnavailable => "shared_state_unavailable",
        }
    }
}

/// A client-facing error: a code and a description that is safe to show
/// (it never holds a token, a key or a secret).
#[derive(Clone, Debug)]
pub struct GatewayError {
    code: ErrorCode,
    description: String,
}

impl GatewayError {
    /// An error with `code` and a description for people.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Renders the error as the JSON response of SPEC §3:
    /// `{"error", "error_description", "execution_key"}`.
    pub fn into_response(self, key: Option<&ExecutionKey>) -> Response<Body> {
        let mut response = json_error(
            self.code.status(),
            self.code.as_str(),
            &self.description,
            key,
        );
        response.extensions_mut().insert(self.code.fault());
        response
    }
}

/// A JSON error response with `error`, `error_description` and `execution_key`.
/// Shared by every part of the gateway that answers on its own.
pub fn json_error(
    status: StatusCode,
    error: &str,
    description: &str,
    key: Option<&ExecutionKey>,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "execution_key": key.map(ExecutionKey::as_str),
    });
    let mut response = json_response(status, &body);
    response.extensions_mut().insert(OwnAnswer {
        description: description.into(),
    });
    response
}

/// Marks an error answer the gateway made itself (not the upstream's), with
/// its description. Written by [`json_error`], so by every refusal; read by
/// [`crate::grpc::GrpcRejectionLayer`], which answers gRPC clients the gRPC way.
#[derive(Clone, Debug)]
pub struct OwnAnswer {
    description: Box<str>,
}

impl OwnAnswer {
    /// The error's description, safe to show (no token, key or secret).
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// A JSON response that no cache keeps (`Cache-Control: no-store`): the
/// gateway's own answers are about one request and may name tokens.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Turns a panic in the inner service into a 500 that carries the request's
/// execution key, so it is answered, logged and counted like any error.
/// (tower-http's `CatchPanicLayer` cannot see the request when it answers.)
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// The service made by [`CatchPanicLayer`].
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for CatchPanic<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
        >,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use std::panic::AssertUnwindSafe;
        let key = request.extensions().get::<ExecutionKey>().cloned();
        // A panic while building the future, or while polling it.
        let inner = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))).ok();
        CatchPanicFuture { inner, key }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CatchPanic`]: `inner` is `None` when building
    /// the future panicked.
    pub struct CatchPanicFuture<F> {
        #[pin]
        inner: Option<F>,
        key: Option<ExecutionKey>,
    }
}

impl<F> std::future::Future for CatchPanicFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, std::convert::Infallible>>,
{
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::panic::AssertUnwindSafe;
        let this = self.project();
        let polled = match this.inner.as_pin_mut() {
            Some(inner) => std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))),
            None => Err(Box::new("building the response future panicked") as _),
        };
        match polled {
            Ok(poll) => poll,
            Err(_) => {
                tracing::error!("a request handler panicked; answered 500");
                std::task::Poll::Ready(Ok(GatewayError::new(
                    ErrorCode::Internal,
                    "the gateway failed to handle this request",
                )
                .into_response(this.key.as_ref())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::BadFraming,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::HeadersTooLarge,
        ErrorCode::BadGateway,
        ErrorCode::UpstreamTimeout,
        ErrorCode::RequestTimeout,
        ErrorCode::Internal,
        ErrorCode::AuditUnavailable,
        ErrorCode::RateLimited,
        ErrorCode::SharedStateUnavailable,
    ];

    #[test]
    fn whose_fault_it_is_decides_the_status_class() {
        for code in ALL {
            let status = code.status();
            match code.fault() {
                Fault::Client => assert!(status.is_client_error(), "{code:?}"),
                Fault::Upstream => assert!(
                    status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT,
                    "{code:?}"
                ),
                // 503 only when the gateway refuses to serve unaudited.
                Fault::Gateway => assert!(
                    status == StatusCode::INTERNAL_SERVER_ERROR
                        || (matches!(
                            code,
                            ErrorCode::AuditUnavailable | ErrorCode::SharedStateUnavailable
                        ) && status == StatusCode::SERVICE_UNAVAILABLE),
                    "{code:?}"
                ),
            }
        }
    }

    #[test]
    fn an_error_answer_carries_its_fault_for_the_access_log() {
        let response = GatewayError::new(ErrorCode::RequestTimeout, "slow").into_response(None);
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.extensions().get::<Fault>(), Some(&Fault::Upstream));
    }
}
