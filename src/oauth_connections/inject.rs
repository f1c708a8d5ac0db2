//! [`InjectConnectionLayer`]: puts the calling user's own access token at
//! a connection into the upstream request (`inject = { connection = … }`).
//!
//! It sits where a route's credential would (innermost, after the header
//! policy) on a jwt route, and reads the verified `Arc<Principal>` the JWT
//! layer left: the token's `iss` and `sub` name the user's record. The
//! token goes in `Authorization: Bearer` by default, or at the route's
//! header or query location, replacing any client-sent value.
//!
//! Answers on its own: 401 `connection_required` (with the `connect` path:
//! the client's cue to run the loop) when the user has no connection or
//! the provider refused its refresh, 403 for a token without `sub`, 502
//! `upstream_credential_unavailable` when the provider or the vault cannot
//! be reached. An upstream 401 drops the access token and the request is
//! sent once more with a refreshed one, when its body can be replayed.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use super::OauthConnections;
use super::tokens::TokenFailure;
use super::vault::RecordId;
use crate::auth::Principal;
use crate::body::{Body, HttpService};
use crate::credentials::Location;
use crate::credentials::inject::{InjectionFailure, apply, failure_response, replayable};
use crate::error::json_response;
use crate::execution_key::ExecutionKey;
use crate::secret::SecretString;

/// A route's `inject = { connection = … }`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConnectionSettings {
    /// The `[[oauth_connections]]` name.
    pub connection: String,
    /// Where the token goes, when not `Authorization: Bearer`.
    pub location: Option<Location>,
}

/// Injects the user's token of one connection.
#[derive(Clone, Debug)]
pub struct InjectConnectionLayer {
    /// The connection's name.
    connection: Arc<str>,
    /// Where the token goes, resolved once: `Authorization` by default.
    location: Arc<Location>,
    /// Whether it goes as `Bearer <token>` (in `Authorization`).
    as_bearer: bool,
    connections: Arc<OauthConnections>,
    max_body_bytes: usize,
}

impl InjectConnectionLayer {
    /// The layer for one route.
    pub fn new(
        settings: InjectConnectionSettings,
        connections: Arc<OauthConnections>,
        max_body_bytes: u64,
    ) -> Self {
        Self {
            as_bearer: settings.location.as_ref().is_none_or(
                |l| matches!(l, Location::Header(h) if h.eq_ignore_ascii_case("authorization")),
            ),
            location: Arc::new(
                settings
                    .location
                    .unwrap_or_else(|| Location::Header("authorization".into())),
            ),
            connection: settings.connection.into(),
            connections,
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl Layer<HttpService> for InjectConnectionLayer {
    type Service = InjectConnection;

    fn layer(&self, inner: HttpService) -> Self::Service {
        InjectConnection {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`InjectConnectionLayer`].
#[derive(Clone, Debug)]
pub struct InjectConnection {
    inner: HttpService,
    layer: InjectConnectionLayer,
}

/// The 401 that tells the client to run the loop.
pub fn connection_required(name: &str, key: Option<&ExecutionKey>) -> Response<Body> {
    let connect = super::connect_path(name);
    let body = serde_json::json!({
        "error": "connection_required",
        "error_description": format!("connect your account at {name:?} first"),
        "connect": connect,
        "execution_key": key.map(ExecutionKey::as_str),
    });
    let mut response = json_response(StatusCode::UNAUTHORIZED, &body);
    let challenge =
        format!("Bearer realm=\"warden\", error=\"connection_required\", connect=\"{connect}\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

impl InjectConnection {
    async fn handle(self, request: Request<Body>) -> Response<Body> {
        let key = request.extensions().get::<ExecutionKey>().cloned();
        let name = &*self.layer.connection;
        let principal = request.extensions().get::<Arc<Principal>>().cloned();
        let Some(id) = principal.as_deref().and_then(|p| super::record_id(name, p)) else {
            return crate::error::json_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token has no sub, so it cannot have a connection",
                key.as_ref(),
            );
        };
        let connections = &self.layer.connections;
        let token = match connections.access_token(&id, None, key.as_ref()).await {
            Ok(token) => token,
            Err(failure) => return self.refused(&id, failure, key.as_ref()),
        };
        let (request, replay) = replayable(request).await;
        let first = match self.inject(request, &token).await {
            Ok(request) => self.send(request).await,
            Err(failure) => return failure_response(failure, key.as_ref()),
        };
        let Some(replay) = replay.filter(|_| first.status() == StatusCode::UNAUTHORIZED) else {
            return first;
        };
        if !connections.cache.may_force_refresh(&id) {
            return first;
        }
        tracing::info!(connection = %name, "the upstream refused the user's access token; refreshing it");
        let fresh = match connections
            .access_token(&id, Some(&token), key.as_ref())
            .await
        {
            Ok(fresh) => fresh,
            Err(failure) => return self.refused(&id, failure, key.as_ref()),
        };
        match self.inject(replay.request(), &fresh).await {
            Ok(request) => self.send(request).await,
            Err(failure) => failure_response(failure, key.as_ref()),
        }
    }

    async fn inject(
        &self,
        request: Request<Body>,
        token: &SecretString,
    ) -> Result<Request<Body>, InjectionFailure> {
        let value = if self.layer.as_bearer {
            SecretString::new(format!("Bearer {}", token.expose()))
        } else {
            token.clone()
        };
        apply(
            request,
            &self.layer.location,
            &value,
            self.layer.max_body_bytes,
        )
        .await
    }

    fn refused(
        &self,
        id: &RecordId,
        failure: TokenFailure,
        key: Option<&ExecutionKey>,
    ) -> Response<Body> {
        match failure {
            TokenFailure::Required(needed) => {
                self.layer
                    .connections
                    .audit
                    .event("connection_required", key)
                    .field("connection", id.connection.clone())
                    .field("iss", id.iss.clone())
                    .field("sub", id.sub.clone())
                    .field("reason", needed.as_str())
                    .send();
                connection_required(&id.connection, key)
            }
            TokenFailure::Unavailable(why) => {
                tracing::warn!(connection = %id.connection, error = %why, "no access token for the user's connection");
                failure_response(
                    InjectionFailure::Unavailable("the user's access token could not be obtained"),
                    key,
                )
            }
        }
    }

    async fn send(&self, request: Request<Body>) -> Response<Body> {
        let mut inner = self.inner.clone();
        match inner.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

impl Service<Request<Body>> for InjectConnection {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}
