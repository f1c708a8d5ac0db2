//! The dispatcher: check the authority, normalise the path once, pick the
//! built-in endpoint or the route, run its stack.
//!
//! [`Dispatcher`] is the last shared service; behind it each route has its
//! own stack, built once by the composition root. It rewrites the request URI
//! to the normalised path, so everything after it (auth, the header policy,
//! the upstream) sees the path the route was matched on, and it writes
//! [`RequestAuthority`] into the request extensions for the header policy.
//!
//! It answers on its own with 400 (an authority RFC 9112 refuses, a path that
//! cannot be normalised), 404 (no route) and 405 (the route does not take the
//! method, with `Allow`). It writes [`MatchedRoute`] into the response
//! extensions, for the access log and the audit.
//!
//! Built-in endpoints (login, revocation, JWKS) are given to it as exact
//! paths by the composition root; it does not know what they are.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, header};
use tower::Service;

use super::authority::authority_value;
use super::path::normalize_path;
use super::table::{Match, RouteKey, RouteTable};
use crate::access_log::MatchedRoute;
use crate::body::Body;
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;
use crate::extensions::RequestAuthority;

/// A route's label and its stack.
#[derive(Clone, Debug)]
pub struct RouteEntry<S> {
    /// How the route is labelled in metrics and logs.
    pub observed: MatchedRoute,
    /// Its stack.
    pub service: S,
}

/// Dispatches requests to the built-in endpoints and the route stacks.
#[derive(Debug)]
pub struct Dispatcher<S> {
    table: Arc<RouteTable<RouteEntry<S>>>,
    /// Exact paths answered before any route is looked up. A handful at
    /// most: comparing them costs less than hashing the path.
    builtin: Arc<[(Box<str>, RouteEntry<S>)]>,
}

impl<S> Clone for Dispatcher<S> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            builtin: self.builtin.clone(),
        }
    }
}

impl<S> Dispatcher<S> {
    /// A dispatcher over `routes`; each `builtin` entry answers its exact
    /// (normalised) path first.
    pub fn new(
        routes: Vec<(RouteKey, RouteEntry<S>)>,
        builtin: Vec<(String, RouteEntry<S>)>,
    ) -> Self {
        Self {
            table: Arc::new(RouteTable::new(routes)),
            builtin: builtin
                .into_iter()
                .map(|(path, entry)| (path.into_boxed_str(), entry))
                .collect(),
        }
    }
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

impl<S> Service<Request<Body>> for Dispatcher<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, RouteFuture<S::Future>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let refuse = |request: &Request<Body>, error: GatewayError| -> Self::Future {
            let key = request.extensions().get::<ExecutionKey>();
            Either::Left(ready(Ok(error.into_response(key))))
        };
        let authority = match authority_value(&request) {
            Ok(authority) => authority,
            Err(why) => return refuse(&request, GatewayError::new(ErrorCode::BadRequest, why)),
        };
        let path = match normalize_path(request.uri().path()) {
            Ok(path) => path,
            Err(err) => {
                let error = GatewayError::new(ErrorCode::BadRequest, err.to_string());
                return refuse(&request, error);
            }
        };
        let rewritten = match &path {
            Cow::Owned(normal) => match with_path(request.uri(), normal) {
                Some(uri) => Some(uri),
                // Never forward a path other than the one that was matched.
                None => {
                    let error =
                        GatewayError::new(ErrorCode::BadRequest, "the path cannot be normalised");
                    return refuse(&request, error);
                }
            },
            Cow::Borrowed(_) => None,
        };
        let builtin = self
            .builtin
            .iter()
            .find(|(exact, _)| **exact == *path)
            .map(|(_, entry)| entry);
        let found = match builtin {
            Some(entry) => entry.clone(),
            None => {
                let host = authority.as_ref().and_then(|a| a.to_str().ok());
                match self.table.lookup(host, &path, request.method()) {
                    Match::Found(entry) => entry.clone(),
                    Match::MethodNotAllowed(allowed) => {
                        let names: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
                        let error = GatewayError::new(
                            ErrorCode::MethodNotAllowed,
                            format!("this route does not take {}", request.method()),
                        );
                        let key = request.extensions().get::<ExecutionKey>();
                        let mut response = error.into_response(key);
                        if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
                            response.headers_mut().insert(header::ALLOW, value);
                        }
                        return Either::Left(ready(Ok(response)));
                    }
                    Match::NotFound => {
                        let error =
                            GatewayError::new(ErrorCode::NotFound, "no route matches this request");
                        return refuse(&request, error);
                    }
                }
            }
        };
        drop(path);
        if let Some(uri) = rewritten {
            *request.uri_mut() = uri;
        }
        if let Some(authority) = authority {
            request.extensions_mut().insert(RequestAuthority(authority));
        }
        let RouteEntry {
            observed,
            mut service,
        } = found;
        // Route stacks are always ready; calling directly keeps the future's
        // type concrete.
        Either::Right(RouteFuture {
            inner: service.call(request),
            observed: Some(observed),
        })
    }
}

pin_project_lite::pin_project! {
    /// A route stack's response, labelled with the route for the observers.
    pub struct RouteFuture<F> {
        #[pin]
        inner: F,
        observed: Option<MatchedRoute>,
    }
}

impl<F> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(observed) = this.observed.take() {
            response.extensions_mut().insert(observed);
        }
        Poll::Ready(Ok(response))
    }
}
