//! The loop's endpoints on the main listener (SPEC §13), for each
//! connection `{name}`:
//!
//! - `POST /oauth/{name}/connect` (behind the JWT layer: the user's warden
//!   token) → `{"authorize_url"}`: the provider's URL with a single-use
//!   `state` bound to the token's `iss` and `sub`, expiring in ten
//!   minutes, and a PKCE S256 challenge;
//! - `GET /oauth/{name}/callback?code&state` (public: the provider sends
//!   the browser here) checks the state (unknown, replayed, expired or
//!   another connection's → 400, nothing stored), exchanges the code with
//!   the verifier and stores the tokens; `error=…` from the provider is a
//!   page saying so, nothing stored;
//! - `DELETE /oauth/{name}/connection` (the user's token) removes the
//!   user's record.
//!
//! The callback answers a short HTML page, or JSON when the client asks
//! for it (`Accept: application/json`); every answer carries the execution
//! key.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use tower::Service;

use super::seal::associated_data;
use super::vault::{PENDING_TTL, RecordId};
use super::{OauthConnections, Tokens, provider, seal_record};
use crate::auth::Principal;
use crate::body::{self, Body};
use crate::error::{json_error, json_response};
use crate::execution_key::ExecutionKey;
use crate::secret::SecretString;

/// Which endpoint of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /oauth/{name}/connect`.
    Connect,
    /// `GET /oauth/{name}/callback`.
    Callback,
    /// `DELETE /oauth/{name}/connection`.
    Connection,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Endpoint::Connect, Endpoint::Callback, Endpoint::Connection];

    /// Its path for connection `name`.
    pub fn path(self, name: &str) -> String {
        match self {
            Endpoint::Connect => super::connect_path(name),
            Endpoint::Callback => super::callback_path(name),
            Endpoint::Connection => super::connection_path(name),
        }
    }

    /// Whether the user's token is required (the callback is public).
    pub fn needs_token(self) -> bool {
        self != Endpoint::Callback
    }

    /// Its route label in metrics and logs.
    pub fn route_name(self) -> &'static str {
        match self {
            Endpoint::Connect => "warden-oauth-connect",
            Endpoint::Callback => "warden-oauth-callback",
            Endpoint::Connection => "warden-oauth-connection",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Connect => "POST",
            Endpoint::Callback => "GET",
            Endpoint::Connection => "DELETE",
        }
    }

    fn method(self) -> Method {
        match self {
            Endpoint::Connect => Method::POST,
            Endpoint::Callback => Method::GET,
            Endpoint::Connection => Method::DELETE,
        }
    }
}

/// A login loop in progress, as sealed under its state.
#[derive(Serialize, Deserialize)]
struct Pending {
    connection: String,
    iss: String,
    sub: String,
    verifier: SecretString,
    expires_at: i64,
}

fn pending_aad(state: &str) -> Vec<u8> {
    associated_data("pending", &[state])
}

/// One endpoint of one connection, as a tower service.
#[derive(Clone, Debug)]
pub struct EndpointService {
    connections: Arc<OauthConnections>,
    name: Arc<str>,
    endpoint: Endpoint,
}

impl EndpointService {
    /// The service of `endpoint` for connection `name`.
    pub fn new(connections: Arc<OauthConnections>, name: &str, endpoint: Endpoint) -> Self {
        Self {
            connections,
            name: name.into(),
            endpoint,
        }
    }
}

impl Service<Request<Body>> for EndpointService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let key = request.extensions().get::<ExecutionKey>().cloned();
            let key = key.as_ref();
            let method = this.endpoint.method();
            if request.method() != method {
                let mut response = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this endpoint does not take this method",
                    key,
                );
                response.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static(this.endpoint.allow()),
                );
                return Ok(response);
            }
            // No endpoint reads a body.
            let (request, _) = request.into_parts();
            Ok(match this.endpoint {
                Endpoint::Connect => this.connect(&request, key).await,
                Endpoint::Callback => this.callback(&request, key).await,
                Endpoint::Connection => this.unlink(&request, key).await,
            })
        })
    }
}

fn no_subject(key: Option<&ExecutionKey>) -> Response<Body> {
    json_error(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "the token has no sub, so it cannot have a connection",
        key,
    )
}

fn unavailable(why: &dyn std::fmt::Display, key: Option<&ExecutionKey>) -> Response<Body> {
    tracing::warn!(error = %why, "the connection vault cannot be used");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "connection_store_unavailable",
        "the connection store cannot be reached; retry",
        key,
    )
}

impl EndpointService {
    fn user(&self, request: &Parts) -> Option<RecordId> {
        let principal = request.extensions.get::<Arc<Principal>>()?;
        super::record_id(&self.name, principal)
    }

    async fn connect(&self, request: &Parts, key: Option<&ExecutionKey>) -> Response<Body> {
        let Some(id) = self.user(request) else {
            return no_subject(key);
        };
        let Some(settings) = self.connections.get(&self.name) else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such connection",
                key,
            );
        };
        match self.connections.vault.may_start(&id.key()).await {
            Ok(true) => {}
            Ok(false) => {
                let mut response = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_pending_connections",
                    "too many sign-ins were started for this account; finish one, or wait ten minutes",
                    key,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
                return response;
            }
            Err(err) => return unavailable(&err, key),
        }
        let (state, verifier) = match (provider::random_token(), provider::random_token()) {
            (Ok(state), Ok(verifier)) => (state, verifier),
            _ => return unavailable(&"the random source failed", key),
        };
        let pending = Pending {
            connection: id.connection.clone(),
            iss: id.iss.clone(),
            sub: id.sub.clone(),
            verifier: SecretString::new(verifier.clone()),
            expires_at: crate::clock::unix_now()
                + i64::try_from(PENDING_TTL.as_secs()).unwrap_or(600),
        };
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&pending).unwrap_or_default());
        let sealed = match self.connections.sealer.seal(&pending_aad(&state), &plain) {
            Ok(sealed) => sealed,
            Err(err) => return unavailable(&err, key),
        };
        if let Err(err) = self.connections.vault.put_pending(&state, sealed).await {
            return unavailable(&err, key);
        }
        let url = provider::authorize_url(settings, &state, &verifier);
        let body = serde_json::json!({
            "authorize_url": url,
            "expires_in": PENDING_TTL.as_secs(),
            "execution_key": key.map(ExecutionKey::as_str),
        });
        let mut response = json_response(StatusCode::OK, &body);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn callback(&self, request: &Parts, key: Option<&ExecutionKey>) -> Response<Body> {
        let page = Page::for_request(request, key);
        let query = crate::percent::form_fields(request.uri.query().unwrap_or("").as_bytes());
        let field = |name: &str| {
            let mut values = query
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            match (values.next(), values.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        };
        let state = field("state");
        let Some(settings) = self.connections.get(&self.name).cloned() else {
            return page.error(
                StatusCode::NOT_FOUND,
                "not_found",
                "There is no such connection.",
            );
        };
        let pending = match state {
            Some(state) => match self.take(state).await {
                Ok(pending) => pending,
                Err(err) => {
                    tracing::warn!(error = %err, "the connection vault cannot be used");
                    return page.error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "connection_store_unavailable",
                        "The connection store cannot be reached. Start again in a moment.",
                    );
                }
            },
            None => None,
        };
        if let Some(error) = field("error") {
            // The loop ends here either way: the state cannot be used again.
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            tracing::info!(connection = %self.name, %error, "the provider did not grant the connection");
            return page.error(
                StatusCode::BAD_REQUEST,
                "access_denied",
                &format!("The provider did not connect the account ({error}). Nothing was stored."),
            );
        }
        if state.is_none() {
            return page.error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The state parameter is missing.",
            );
        }
        let Some(pending) = pending else {
            return page.error(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "This sign-in link is unknown, expired or already used. Start again from the application.",
            );
        };
        if pending.connection != *self.name || pending.expires_at <= crate::clock::unix_now() {
            return page.error(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "This sign-in link is not for this connection, or it expired. Start again from the application.",
            );
        }
        let Some(code) = field("code").filter(|c| !c.is_empty()) else {
            return page.error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The code parameter is missing.",
            );
        };
        let grant = match provider::exchange_code(
            &self.connections.client,
            &settings,
            code,
            pending.verifier.expose(),
        )
        .await
        {
            Ok(grant) => grant,
            Err(err) => {
                tracing::warn!(connection = %self.name, error = %err, "the provider did not exchange the code");
                return page.error(
                    StatusCode::BAD_GATEWAY,
                    "connection_failed",
                    "The provider did not complete the connection. Nothing was stored; start again.",
                );
            }
        };
        let id = RecordId {
            connection: pending.connection,
            iss: pending.iss,
            sub: pending.sub,
        };
        let now = crate::clock::unix_now();
        let tokens = Tokens {
            access_token: grant.access_token,
            refresh_token: grant.refresh_token,
            expires_at: grant
                .expires_in
                .map(|life| now.saturating_add(i64::try_from(life.as_secs()).unwrap_or(i64::MAX))),
        };
        let stored = seal_record(
            &self.connections.sealer,
            &id,
            &tokens,
            now,
            grant.scope.clone(),
        )
        .map_err(|e| e.to_string());
        let stored = match stored {
            Ok(record) => self
                .connections
                .vault
                .put(&record)
                .await
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        if let Err(why) = stored {
            tracing::error!(connection = %self.name, error = %why, "cannot store the connection");
            return page.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "connection_store_unavailable",
                "The connection could not be stored. Start again in a moment.",
            );
        }
        self.connections.cache.forget(&id);
        self.connections
            .audit
            .event("connection_linked", key)
            .field("connection", id.connection.clone())
            .field("iss", id.iss.clone())
            .field("sub", id.sub.clone())
            .field("scope", grant.scope.clone())
            .field("refreshable", tokens.refresh_token.is_some())
            .send();
        page.connected(&id.connection, grant.scope.as_deref())
    }

    /// Takes the loop of `state`: `None` when unknown, used or expired.
    async fn take(&self, state: &str) -> Result<Option<Pending>, super::vault::VaultError> {
        let Some(sealed) = self.connections.vault.take_pending(state).await? else {
            return Ok(None);
        };
        // A state sealed by another gateway (another master key) is unknown here.
        Ok(self
            .connections
            .sealer
            .open(&pending_aad(state), &sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok()))
    }

    async fn unlink(&self, request: &Parts, key: Option<&ExecutionKey>) -> Response<Body> {
        let Some(id) = self.user(request) else {
            return no_subject(key);
        };
        match self.connections.remove(&id, "user", key).await {
            Ok(true) => json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "connection": id.connection,
                    "removed": true,
                    "execution_key": key.map(ExecutionKey::as_str),
                }),
            ),
            Ok(false) => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "there is no connection to remove",
                key,
            ),
            Err(err) => unavailable(&err, key),
        }
    }
}

/// The callback's answer: HTML for a browser, JSON when asked for.
struct Page {
    json: bool,
    key: Option<ExecutionKey>,
}

impl Page {
    fn for_request(request: &Parts, key: Option<&ExecutionKey>) -> Self {
        let json = request
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/json"));
        Self {
            json,
            key: key.cloned(),
        }
    }

    fn error(&self, status: StatusCode, code: &str, text: &str) -> Response<Body> {
        if self.json {
            return json_error(status, code, text, self.key.as_ref());
        }
        self.html(status, "Not connected", text)
    }

    fn connected(&self, name: &str, scope: Option<&str>) -> Response<Body> {
        if self.json {
            return json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "connected": name,
                    "scope": scope,
                    "execution_key": self.key.as_ref().map(ExecutionKey::as_str),
                }),
            );
        }
        self.html(
            StatusCode::OK,
            "Connected",
            &format!("Your account at {name} is connected. You can close this page."),
        )
    }

    fn html(&self, status: StatusCode, title: &str, text: &str) -> Response<Body> {
        let key = self.key.as_ref().map(ExecutionKey::as_str).unwrap_or("");
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{}</p><p><small>Execution key: {}</small></p></body></html>\n",
            escape(text),
            escape(key),
        );
        let mut response = Response::new(body::full(page));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Nothing on the page runs, loads, or can be framed or sniffed.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if let Some(key) = self
            .key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(k.as_str()).ok())
        {
            headers.insert("x-execution-key", key);
        }
        response
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
