//! The whole-request deadline: `server.request_timeout`.
//!
//! [`RequestDeadlineLayer`] sits outermost in every route's stack and in
//! front of every built-in endpoint, so it bounds everything a request waits
//! for once it is routed: verifying a token that needs a JWKS refetch,
//! buffering a body for credential injection, the upstream. The upstream's
//! own (shorter) timeout still answers first when it is the one that runs
//! out. A request still unanswered at the deadline gets 504
//! `upstream_timeout`, with its execution key.
//!
//! A route's own `timeout` is folded in: its deadline is the shorter of the
//! two, so each request arms one timer, not one here and one around the
//! upstream call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::Body;
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;

/// Answers 504 when the inner service takes longer than the deadline.
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadlineLayer {
    deadline: Duration,
    /// Whether the route's upstream timeout is the one that runs out.
    upstream_bound: bool,
}

impl RequestDeadlineLayer {
    /// A deadline of `deadline` from the time the request is routed.
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            upstream_bound: false,
        }
    }

    /// A route's deadline: `request_timeout`, or the route's upstream
    /// `timeout` when it is shorter.
    pub fn for_route(request_timeout: Duration, route_timeout: Duration) -> Self {
        Self {
            deadline: request_timeout.min(route_timeout),
            upstream_bound: route_timeout < request_timeout,
        }
    }
}

impl<S> Layer<S> for RequestDeadlineLayer {
    type Service = RequestDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestDeadline {
            inner,
            deadline: self.deadline,
            upstream_bound: self.upstream_bound,
        }
    }
}

/// The service made by [`RequestDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct RequestDeadline<S> {
    inner: S,
    deadline: Duration,
    upstream_bound: bool,
}

impl<S> Service<Request<Body>> for RequestDeadline<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let key = request.extensions().get::<ExecutionKey>().cloned();
        DeadlineFuture {
            inner: tokio::time::timeout(self.deadline, self.inner.call(request)),
            key,
            deadline: self.deadline,
            upstream_bound: self.upstream_bound,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of the inner service, or a 504 at the deadline.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        key: Option<ExecutionKey>,
        deadline: Duration,
        upstream_bound: bool,
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match std::task::ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_elapsed) if *this.upstream_bound => {
                tracing::warn!(
                    timeout_ms = this.deadline.as_millis() as u64,
                    "upstream timed out"
                );
                GatewayError::new(
                    ErrorCode::UpstreamTimeout,
                    "the upstream did not answer in time",
                )
                .into_response(this.key.as_ref())
            }
            Err(_elapsed) => GatewayError::new(
                ErrorCode::RequestTimeout,
                "the request did not complete within request_timeout",
            )
            .into_response(this.key.as_ref()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(response: Response<Body>) -> serde_json::Value {
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice(&body).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_deadline_is_answered_504_with_its_key() {
        let slow = tower::service_fn(|_request: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new(crate::body::empty()))
        });
        let mut service = RequestDeadlineLayer::new(Duration::from_secs(1)).layer(slow);
        let key = ExecutionKey::generate();
        let mut request = Request::new(crate::body::empty());
        request.extensions_mut().insert(key.clone());
        let Ok(response) = service.call(request).await;
        assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
        let json = json_of(response).await;
        assert_eq!(json["error"], "upstream_timeout");
        assert_eq!(json["execution_key"], key.as_str());
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_timeout_shorter_than_request_timeout_is_the_one_timer() {
        let slow = tower::service_fn(|_request: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new(crate::body::empty()))
        });
        let layer =
            RequestDeadlineLayer::for_route(Duration::from_secs(30), Duration::from_secs(2));
        let mut service = layer.layer(slow);
        let started = tokio::time::Instant::now();
        let Ok(response) = service.call(Request::new(crate::body::empty())).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "the route's timeout ran out"
        );
        assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
        let json = json_of(response).await;
        assert_eq!(json["error"], "upstream_timeout");
        assert_eq!(
            json["error_description"],
            "the upstream did not answer in time"
        );
    }
}
