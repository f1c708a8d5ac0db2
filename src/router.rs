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

use futures_util::future::{BoxFuture, FutureExt};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, header};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

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
    ) -> Self {
        Self {
            table: Arc::new(table),
            endpoints,
            endpoint_entries: Arc::new(endpoint_entries),
        }
    }
}

fn request_host<B>(request: &Request<B>) -> Option<&str> {
    request
        .uri()
        .host()
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())
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
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let key = request.extensions().get::<ExecutionKey>().cloned();
        let refuse = |error: GatewayError| -> Self::Future {
            let response = error.into_response(key.as_ref());
            async move { Ok(response) }.boxed()
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
            None => match self
                .table
                .lookup(request_host(&request), &path, request.method())
            {
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
                    return async move { Ok(response) }.boxed();
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
        let RouteEntry { observed, service } = found;
        service
            .oneshot(request)
            .map(move |result| {
                result.map(|mut response| {
                    response.extensions_mut().insert(observed);
                    response
                })
            })
            .boxed()
    }
}
