//! The router: normalise the path once, pick the route, run its stack.
//!
//! [`Router`] is the last shared service; behind it each route has its own
//! stack, built once at start-up. It rewrites the request URI to the
//! normalised path, so everything after it (auth, the header policy, the
//! upstream) sees the same path the route was matched on. It answers on its
//! own with 400 (a path that cannot be normalised), 404 (no route) and 405
//! (the route does not take the method, with `Allow`). It writes
//! [`ObservedRoute`] into the response extensions.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::Future;

use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, header};
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::auth::login::{Endpoint, Endpoints};
use crate::body::Body;
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;
use crate::observe::ObservedRoute;
use crate::routes::{Match, RouteTable, normalize_path};

/// A boxed service from request to response that never fails.
pub type HttpService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// A route's label and its stack.
#[derive(Clone, Debug)]
pub struct RouteEntry {
    /// How the route is labelled in metrics and logs.
    pub observed: ObservedRoute,
    /// Its stack (auth, header policy, upstream).
    pub service: HttpService,
}

/// Dispatches requests to the gateway's own endpoints and the route stacks.
#[derive(Clone, Debug)]
pub struct Router {
    /// No response head later than this after the request reached the router
    /// (`server.request_timeout`): bounds everything before the upstream's
    /// own timeout too, such as buffering a body for credential injection.
    deadline: std::time::Duration,
    table: Arc<RouteTable<RouteEntry>>,
    endpoints: Endpoints,
    endpoint_entries: Arc<HashMap<Endpoint, RouteEntry>>,
}

impl Router {
    /// A router over `table`; `endpoints` (login, revoke, JWKS) answer their
    /// exact paths before any route is looked up.
    pub fn new(
        table: RouteTable<RouteEntry>,
        endpoints: Endpoints,
        endpoint_entries: HashMap<Endpoint, RouteEntry>,
        deadline: std::time::Duration,
    ) -> Self {
        Self {
            deadline,
            table: Arc::new(table),
            endpoints,
            endpoint_entries: Arc::new(endpoint_entries),
        }
    }
}

/// The authority a request is for: the target URI's (absolute form, or
/// HTTP/2's `:authority`), else the one `Host` header (RFC 9112 §3.2.2).
/// Routing and `X-Forwarded-Host` both use this, so they cannot disagree.
///
/// Refuses what RFC 9112 §3.2 answers with 400: two `Host` headers, an
/// HTTP/1.1 request with neither a `Host` nor an absolute target, and a
/// `Host` that is not a plain `host[:port]`.
pub fn effective_host<B>(request: &Request<B>) -> Result<Option<&str>, &'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    let host = match host {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| "the Host header is not an authority")?;
            if !is_authority(text) {
                return Err("the Host header is not an authority");
            }
            Some(text)
        }
        None => None,
    };
    if let Some(authority) = request.uri().authority() {
        return Ok(Some(authority.as_str()));
    }
    if host.is_none() && request.version() == http::Version::HTTP_11 {
        return Err("an HTTP/1.1 request needs a Host header");
    }
    Ok(host)
}

/// `host[:port]`: a registered name or IPv4 address, or a bracketed IPv6
/// address, and a decimal port; no user info, no list.
fn is_authority(text: &str) -> bool {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after.strip_prefix(':') {
            Some(port) => ("v6", Some(port)),
            None if after.is_empty() => ("v6", None),
            None => return false,
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    host_ok && port_ok
}

fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")).ok()?,
        None => PathAndQuery::try_from(path).ok()?,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

impl Service<Request<Body>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, RouteFuture>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let key = request.extensions().get::<ExecutionKey>().cloned();
        let refuse = |error: GatewayError| -> Self::Future {
            Either::Left(ready(Ok(error.into_response(key.as_ref()))))
        };
        let host = match effective_host(&request) {
            Ok(host) => host.map(str::to_owned),
            Err(why) => return refuse(GatewayError::new(ErrorCode::BadRequest, why)),
        };
        let path = match normalize_path(request.uri().path()) {
            Ok(path) => path,
            Err(err) => return refuse(GatewayError::new(ErrorCode::BadRequest, err.to_string())),
        };
        let rewritten = match &path {
            Cow::Owned(normal) => match with_path(request.uri(), normal) {
                Some(uri) => Some(uri),
                // Never forward a path other than the one that was matched.
                None => {
                    return refuse(GatewayError::new(
                        ErrorCode::BadRequest,
                        "the path cannot be normalised",
                    ));
                }
            },
            Cow::Borrowed(_) => None,
        };
        let own = self
            .endpoints
            .endpoint(&path)
            .and_then(|endpoint| self.endpoint_entries.get(&endpoint));
        let found = match own {
            Some(entry) => entry.clone(),
            None => match self.table.lookup(host.as_deref(), &path, request.method()) {
                Match::Found(entry) => entry.clone(),
                Match::MethodNotAllowed(allowed) => {
                    let names: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
                    let mut response = GatewayError::new(
                        ErrorCode::MethodNotAllowed,
                        format!("this route does not take {}", request.method()),
                    )
                    .into_response(key.as_ref());
                    if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
                        response.headers_mut().insert(header::ALLOW, value);
                    }
                    return Either::Left(ready(Ok(response)));
                }
                Match::NotFound => {
                    return refuse(GatewayError::new(
                        ErrorCode::NotFound,
                        "no route matches this request",
                    ));
                }
            },
        };
        if let Some(uri) = rewritten {
            *request.uri_mut() = uri;
        }
        let RouteEntry {
            observed,
            mut service,
        } = found;
        // Route stacks are always ready; calling directly keeps the future's
        // type concrete.
        Either::Right(RouteFuture {
            inner: tokio::time::timeout(self.deadline, service.call(request)),
            observed: Some(observed),
            key,
        })
    }
}

pin_project_lite::pin_project! {
    /// A route stack's response, within `server.request_timeout`, labelled
    /// with the route for the observers.
    pub struct RouteFuture {
        #[pin]
        inner: tokio::time::Timeout<BoxFuture<'static, Result<Response<Body>, Infallible>>>,
        observed: Option<ObservedRoute>,
        key: Option<ExecutionKey>,
    }
}

impl Future for RouteFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => GatewayError::new(
                ErrorCode::UpstreamTimeout,
                "the request did not complete within request_timeout",
            )
            .into_response(this.key.as_ref()),
        };
        if let Some(observed) = this.observed.take() {
            response.extensions_mut().insert(observed);
        }
        Poll::Ready(Ok(response))
    }
}
