//! The access log and the request metrics, recorded when a response is done.
//!
//! [`AccessLogLayer`] sits just inside the execution key layer, so it sees every
//! request, including the ones the gateway answers itself. It counts the
//! bytes of both bodies (a request without a body is not wrapped: it logs
//! `bytes_in` 0) and, when the response body ends (or is dropped),
//! writes one access-log line and updates `warden_requests_total`,
//! `warden_request_duration_seconds` and `warden_in_flight_requests`.
//!
//! It reads, from the request, [`ConnectInfo`] (the client's address), the
//! `Host` (or HTTP/2 authority), the `User-Agent` and the protocol; from the
//! response extensions, [`MatchedRoute`] (set by the dispatcher),
//! [`UpstreamTiming`] (set by the proxy),
//! [`TokenSubject`] (set by the observers of auth when a token's signature
//! verified) and [`Fault`] (set on the gateway's own error answers, logged
//! as `fault`); and the `grpc-status` of the response head or trailers. The
//! path it logs is the request's path without the query string: queries may
//! carry secrets. Durations are milliseconds rounded to 3 decimals.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use std::future::Future;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::body::{self, Body, BoxError, ByteCount, Counted};
use crate::error::Fault;
use crate::execution_key::ExecutionKey;
use crate::extensions::ConnectInfo;
use crate::metrics::{Metrics, RouteMetrics, UNMATCHED_ROUTE};
use crate::trace::RequestSpan;

/// The route that handled a request, as the observers label it.
#[derive(Clone, Debug)]
pub struct MatchedRoute {
    /// The route's name.
    pub name: Arc<str>,
    /// Its metric handles.
    pub metrics: RouteMetrics,
}

/// The upstream a request was sent to, and how long it took to send its
/// response head. One extension for both: each one costs an allocation.
#[derive(Clone, Debug)]
pub struct UpstreamTiming {
    /// Until the response head arrived (or the request failed).
    pub elapsed: Duration,
    /// The target, `scheme://host:port`.
    pub address: Arc<str>,
}

/// Whose token a request carried, as the access log names it.
pub trait Subject: Send + Sync {
    /// The token's `sub`, when it has one.
    fn sub(&self) -> Option<&str>;
}

/// The subject of the token whose signature verified, for the log: the
/// verified claims themselves, shared, so noting them copies nothing.
#[derive(Clone)]
pub struct TokenSubject(pub Arc<dyn Subject>);

impl std::fmt::Debug for TokenSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TokenSubject").field(&self.0.sub()).finish()
    }
}

/// Records the access log and request metrics.
#[derive(Clone, Debug)]
pub struct AccessLogLayer {
    metrics: Metrics,
}

impl AccessLogLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request<Body>> for AccessLog<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let key = request.extensions().get::<ExecutionKey>().cloned();
        let method = request.method().clone();
        let span_handle = request.extensions().get::<RequestSpan>().cloned();
        // The request's facts are copied only when the access log will print them.
        let facts = if tracing::enabled!(target: "warden::access", tracing::Level::INFO) {
            RequestFacts::of(&request)
        } else {
            RequestFacts::default()
        };
        // A request without a body (most GETs) needs no counter.
        let (request, bytes_in) = if request.body().is_end_stream() {
            (request, None)
        } else {
            let count = ByteCount::default();
            let counted = count.clone();
            (
                request.map(|b| body::boxed(Counted::new(b, counted))),
                Some(count),
            )
        };
        self.metrics.in_flight.inc();
        let span = tracing::info_span!(
            "request",
            execution_key = key.as_ref().map_or("", ExecutionKey::as_str),
            trace_id = key.as_ref().and_then(ExecutionKey::trace_id).unwrap_or(""),
        );
        // Recorded when the response body ends; or, if the client goes away
        // before the response starts, when the future is dropped (as 499).
        let pending = PendingRecord(Some(Record {
            metrics: self.metrics.clone(),
            started,
            key,
            method,
            facts,
            status: CLIENT_CLOSED_REQUEST,
            route: None,
            upstream: None,
            upstream_addr: None,
            sub: None,
            grpc_status: None,
            fault: None,
            bytes_in,
            bytes_out: 0,
            span: span_handle,
        }));
        ResponseFuture {
            inner: self.inner.call(request).instrument(span),
            pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AccessLog`]: hands the record to the response
    /// body, which records it when it ends.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        pending: PendingRecord,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>>,
{
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let (parts, inner) = response.into_parts();
        let record = this.pending.0.take().map(|mut record| {
            record.status = parts.status;
            record.route = parts.extensions.get::<MatchedRoute>().cloned();
            if let Some(upstream) = parts.extensions.get::<UpstreamTiming>() {
                record.upstream = Some(upstream.elapsed);
                record.upstream_addr = Some(upstream.address.clone());
            }
            record.sub = parts.extensions.get::<TokenSubject>().map(|s| s.0.clone());
            record.grpc_status = grpc_status(&parts.headers);
            record.fault = parts.extensions.get::<Fault>().copied();
            record
        });
        let body = body::boxed(RecordOnEnd { inner, record });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// nginx's status for a request whose client closed the connection before
/// the response: no real status was sent.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// A record not yet handed to the response body; records on drop.
struct PendingRecord(Option<Record>);

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            record.finish();
        }
    }
}

/// What the log line says of the request itself, kept before it moves on.
/// Header values and the URI share the request's buffers: keeping them
/// costs no copy of the text.
#[derive(Default)]
struct RequestFacts {
    uri: http::Uri,
    client_ip: Option<std::net::IpAddr>,
    host: Option<http::HeaderValue>,
    user_agent: Option<http::HeaderValue>,
    protocol: &'static str,
}

impl RequestFacts {
    fn of<B>(request: &Request<B>) -> Self {
        let headers = request.headers();
        Self {
            uri: request.uri().clone(),
            client_ip: request.extensions().get::<ConnectInfo>().map(|c| c.client),
            host: headers.get(http::header::HOST).cloned(),
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            protocol: protocol(request.version()),
        }
    }

    /// The `Host` header, or the HTTP/2 `:authority` (kept in the URI).
    fn host(&self) -> Option<&str> {
        match &self.host {
            Some(host) => host.to_str().ok(),
            None => self.uri.authority().map(http::uri::Authority::as_str),
        }
    }

    fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_ref().and_then(|v| v.to_str().ok())
    }
}

/// The protocol as access logs write it.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// The `grpc-status` of a response head or trailers, when it is a number.
fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Milliseconds, rounded to 3 decimals: `4004.52`, not `4004.5199269999994`.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// What is known about a request by the time its response starts.
struct Record {
    metrics: Metrics,
    started: Instant,
    key: Option<ExecutionKey>,
    method: Method,
    facts: RequestFacts,
    status: StatusCode,
    route: Option<MatchedRoute>,
    upstream: Option<Duration>,
    upstream_addr: Option<Arc<str>>,
    /// The token's subject, when its signature verified.
    sub: Option<Arc<dyn Subject>>,
    grpc_status: Option<u32>,
    /// Whose fault an error response was, when the gateway answered one.
    fault: Option<Fault>,
    /// `None` when the request had no body.
    bytes_in: Option<ByteCount>,
    bytes_out: u64,
    /// The request's exported span, ended here.
    span: Option<RequestSpan>,
}

impl Record {
    fn finish(self) {
        let elapsed = self.started.elapsed();
        let route = self.route.as_ref().map_or(UNMATCHED_ROUTE, |r| &r.name);
        self.metrics.in_flight.dec();
        match &self.route {
            Some(observed) => observed.metrics.requests.count(&self.method, self.status),
            None => self.metrics.count_request(route, &self.method, self.status),
        }
        if let Some(observed) = &self.route {
            observed
                .metrics
                .request_duration
                .observe(elapsed.as_secs_f64());
            if let (Some(upstream), Some(histogram)) =
                (self.upstream, &observed.metrics.upstream_duration)
            {
                histogram.observe(upstream.as_secs_f64());
            }
        }
        if let Some(span) = &self.span {
            span.finish(self.status.as_u16(), route);
        }
        tracing::info!(
            target: "warden::access",
            execution_key = self.key.as_ref().map_or("", ExecutionKey::as_str),
            trace_id = self.key.as_ref().and_then(ExecutionKey::trace_id),
            client_ip = self.facts.client_ip.map(tracing::field::display),
            host = self.facts.host(),
            user_agent = self.facts.user_agent(),
            protocol = self.facts.protocol,
            method = %self.method,
            path = self.facts.uri.path(),
            route,
            sub = self.sub.as_ref().and_then(|s| s.sub()),
            status = self.status.as_u16(),
            grpc_status = self.grpc_status,
            duration_ms = millis(elapsed),
            upstream_addr = self.upstream_addr.as_deref(),
            upstream_ms = self.upstream.map(millis),
            fault = self.fault.map(Fault::as_str),
            bytes_in = self.bytes_in.as_ref().map_or(0, ByteCount::get),
            bytes_out = self.bytes_out,
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the request when it ends or is dropped.
    struct RecordOnEnd {
        #[pin]
        inner: Body,
        record: Option<Record>,
    }

    impl PinnedDrop for RecordOnEnd {
        fn drop(this: Pin<&mut Self>) {
            if let Some(record) = this.project().record.take() {
                record.finish();
            }
        }
    }
}

impl http_body::Body for RecordOnEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(record) = this.record.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        record.bytes_out += data.len() as u64;
                    } else if let Some(status) = frame.trailers_ref().and_then(grpc_status) {
                        // gRPC sends its status in the trailers.
                        record.grpc_status = Some(status);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(record) = this.record.take() {
                    record.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
