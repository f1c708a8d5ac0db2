//! [`InjectCredentialLayer`]: puts a stored credential into the upstream
//! request.
//!
//! It sits innermost in a route's stack, after the header policy, just
//! before the upstream client, so nothing after it can undo or leak it. It
//! reads the route's credential by name from [`Credentials`] (so changes
//! take effect without a restart) and writes it at its location, replacing
//! any client-sent value there: a header (marked sensitive), a query
//! parameter, `{credential}` in the upstream URL (through [`PathCredential`]
//! in the request extensions), or a top-level field of a JSON body (the
//! body is buffered, bounded by `max_body_bytes`; a body that is not a JSON
//! object is 400). The client's `Authorization` never reaches an upstream
//! that gets a credential.
//!
//! For OAuth2 credentials, an upstream 401 drops the token and the request
//! is sent once more with a fresh one, when its body can be replayed (no
//! body, or a buffered one of at most 64 KiB). No credential → 502
//! `upstream_credential_unavailable`.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use super::{Credential, Credentials, Kind, Location};
use crate::body::{self, Body, HttpService};
use crate::error::json_error;
use crate::execution_key::ExecutionKey;
use crate::extensions::{InjectedValue, PathCredential};
use crate::percent::{self, form_decode};
use crate::secret::SecretString;

/// The largest request body kept for a retry after an upstream 401.
const MAX_REPLAY_BODY: usize = 64 * 1024;

/// A route's `inject`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectSettings {
    /// The stored credential's name.
    pub credential: String,
    /// A location that overrides the stored one.
    pub location: Option<Location>,
}

/// Injects a route's credential.
#[derive(Clone, Debug)]
pub struct InjectCredentialLayer {
    settings: Arc<InjectSettings>,
    credentials: Arc<Credentials>,
    max_body_bytes: usize,
}

impl InjectCredentialLayer {
    /// The layer for one route.
    pub fn new(
        settings: InjectSettings,
        credentials: Arc<Credentials>,
        max_body_bytes: u64,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            credentials,
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl Layer<HttpService> for InjectCredentialLayer {
    type Service = InjectCredential;

    fn layer(&self, inner: HttpService) -> Self::Service {
        InjectCredential {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`InjectCredentialLayer`].
#[derive(Clone, Debug)]
pub struct InjectCredential {
    inner: HttpService,
    layer: InjectCredentialLayer,
}

/// Why a request could not get its credential.
pub(crate) enum InjectionFailure {
    Unavailable(&'static str),
    BadBody(&'static str),
    TooLarge,
}

pub(crate) fn failure_response(
    failure: InjectionFailure,
    key: Option<&ExecutionKey>,
) -> Response<Body> {
    match failure {
        InjectionFailure::Unavailable(why) => json_error(
            StatusCode::BAD_GATEWAY,
            "upstream_credential_unavailable",
            why,
            key,
        ),
        InjectionFailure::BadBody(why) => {
            json_error(StatusCode::BAD_REQUEST, "invalid_request", why, key)
        }
        InjectionFailure::TooLarge => json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the gateway accepts",
            key,
        ),
    }
}

/// The value to write: the bare secret, or an `Authorization` value.
fn value_for(
    kind: &Kind,
    token: Option<&SecretString>,
    location: &Location,
) -> Option<SecretString> {
    let is_authorization =
        matches!(location, Location::Header(h) if h.eq_ignore_ascii_case("authorization"));
    match kind {
        Kind::ApiKey { value } | Kind::Secret { value } => Some(value.clone()),
        Kind::Basic { username, password } => {
            use base64::Engine;
            let pair = zeroize::Zeroizing::new(format!("{username}:{}", password.expose()));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            Some(SecretString::new(format!("Basic {encoded}")))
        }
        Kind::Bearer { token } => Some(if is_authorization {
            SecretString::new(format!("Bearer {}", token.expose()))
        } else {
            token.clone()
        }),
        Kind::Oauth2 { .. } => {
            let token = token?;
            Some(if is_authorization {
                SecretString::new(format!("Bearer {}", token.expose()))
            } else {
                token.clone()
            })
        }
    }
}

/// The query string without parameter `name`, with `name=value` appended.
fn replace_query(query: Option<&str>, name: &str, value: &str) -> String {
    // Names are compared decoded (`api%5Fkey` and `api+key` are names too),
    // so no spelling of the name keeps the client's value.
    // `;` separates parameters for some upstreams too.
    let mut pairs: Vec<&str> = query
        .unwrap_or("")
        .split(['&', ';'])
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            form_decode(key) != name.as_bytes()
        })
        .collect();
    let added = format!("{}={}", percent::encode(name), percent::encode(value));
    pairs.push(&added);
    pairs.join("&")
}

/// Writes `value` at `location` in `request` (the client's
/// `Authorization` goes in every case).
pub(crate) async fn apply(
    request: Request<Body>,
    location: &Location,
    value: &SecretString,
    max_body: usize,
) -> Result<Request<Body>, InjectionFailure> {
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(header::AUTHORIZATION);
    parts.extensions.insert(InjectedValue(value.clone()));
    let body = match location {
        Location::Header(name) => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                InjectionFailure::Unavailable("the credential's header name is invalid")
            })?;
            let mut header_value = HeaderValue::from_str(value.expose()).map_err(|_| {
                InjectionFailure::Unavailable("the credential cannot be a header value")
            })?;
            header_value.set_sensitive(true);
            parts.headers.insert(name, header_value);
            body
        }
        Location::Query(name) => {
            let query = replace_query(parts.uri.query(), name, value.expose());
            let path_and_query = format!("{}?{query}", parts.uri.path());
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.path_and_query = path_and_query.parse().ok();
            parts.uri = http::Uri::from_parts(uri_parts).map_err(|_| {
                InjectionFailure::Unavailable("the credential cannot go in the query")
            })?;
            body
        }
        Location::Path => {
            parts
                .extensions
                .insert(PathCredential(SecretString::new(percent::encode(
                    value.expose(),
                ))));
            body
        }
        Location::Body(field) => {
            let bytes = body::read_to_limit(body, max_body)
                .await
                .map_err(|err| match err {
                    body::ReadError::TooLarge(_) => InjectionFailure::TooLarge,
                    body::ReadError::Failed => {
                        InjectionFailure::BadBody("the request body could not be read")
                    }
                })?;
            // Only the top level is parsed: nested values stay raw text, so a
            // large body costs no tree in memory and numbers pass unchanged.
            let top: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_slice(&bytes).map_err(|_| {
                    InjectionFailure::BadBody("the request body must be a JSON object")
                })?;
            let mut out =
                String::with_capacity(bytes.len() + value.expose().len() + field.len() + 8);
            out.push('{');
            let mut first = true;
            for (name, raw) in &top {
                if name == field {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::Value::String(name.clone()).to_string());
                out.push(':');
                out.push_str(raw.get());
            }
            if !first {
                out.push(',');
            }
            out.push_str(&serde_json::Value::String(field.clone()).to_string());
            out.push(':');
            out.push_str(&serde_json::Value::String(value.expose().to_owned()).to_string());
            out.push('}');
            let rewritten = zeroize::Zeroizing::new(out.into_bytes());
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            body::full(Bytes::from(rewritten.to_vec()))
        }
    };
    Ok(Request::from_parts(parts, body))
}

/// A copy of a request that can be sent again.
pub(crate) struct Replay {
    parts: http::request::Parts,
    body: Bytes,
}

impl Replay {
    /// The request, once more.
    pub(crate) fn request(&self) -> Request<Body> {
        let mut request = Request::new(body::full(self.body.clone()));
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        *request.extensions_mut() = self.parts.extensions.clone();
        request
    }
}

/// Keeps a replayable copy when the body is empty or small and known.
pub(crate) async fn replayable(request: Request<Body>) -> (Request<Body>, Option<Replay>) {
    use http_body::Body as _;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let small = request.body().is_end_stream() || declared.is_some_and(|n| n <= MAX_REPLAY_BODY);
    if !small {
        return (request, None);
    }
    let (parts, body) = request.into_parts();
    match body::read_to_limit(body, MAX_REPLAY_BODY).await {
        Ok(bytes) => {
            let replay = Replay { parts, body: bytes };
            let request = replay.request();
            (request, Some(replay))
        }
        // The body failed while read; the upstream would fail it too.
        Err(_) => (Request::from_parts(parts, body::empty()), None),
    }
}

impl InjectCredential {
    async fn handle(self, request: Request<Body>) -> Response<Body> {
        let key = request.extensions().get::<ExecutionKey>().cloned();
        let settings = &self.layer.settings;
        let Some(credential) = self.layer.credentials.get(&settings.credential) else {
            tracing::warn!(credential = %settings.credential, "the route's credential is not in the store");
            return failure_response(
                InjectionFailure::Unavailable("the upstream credential is not configured"),
                key.as_ref(),
            );
        };
        let Some(location) = settings.location.clone().or_else(|| credential.location()) else {
            return failure_response(
                InjectionFailure::Unavailable("the credential has no location"),
                key.as_ref(),
            );
        };
        match &credential.kind {
            Kind::Oauth2 { .. } => self.with_token(request, credential, location, key).await,
            _ => {
                let Some(value) = value_for(&credential.kind, None, &location) else {
                    return failure_response(
                        InjectionFailure::Unavailable("no credential value"),
                        key.as_ref(),
                    );
                };
                match apply(request, &location, &value, self.layer.max_body_bytes).await {
                    Ok(request) => self.send(request).await,
                    Err(failure) => failure_response(failure, key.as_ref()),
                }
            }
        }
    }

    async fn send(&self, request: Request<Body>) -> Response<Body> {
        // The route stacks behind this layer are always ready.
        let mut inner = self.inner.clone();
        match inner.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// OAuth2: inject the current token; on an upstream 401, drop it and
    /// send once more with a fresh one when the request can be replayed.
    async fn with_token(
        &self,
        request: Request<Body>,
        credential: Arc<Credential>,
        location: Location,
        key: Option<ExecutionKey>,
    ) -> Response<Body> {
        let name = &self.layer.settings.credential;
        let Some(manager) = self.layer.credentials.token_manager(name, &credential) else {
            return failure_response(
                InjectionFailure::Unavailable("the OAuth2 client cannot be used"),
                key.as_ref(),
            );
        };
        let unavailable = |err: super::oauth2::TokenError| {
            tracing::warn!(credential = %name, error = %err, "no upstream access token");
            failure_response(
                InjectionFailure::Unavailable("no upstream access token could be obtained"),
                key.as_ref(),
            )
        };
        let token = match manager.token().await {
            Ok(token) => token,
            Err(err) => return unavailable(err),
        };
        let (request, replay) = replayable(request).await;
        let max = self.layer.max_body_bytes;
        let inject = |request, token: &SecretString| {
            let value = value_for(&credential.kind, Some(token), &location);
            let location = location.clone();
            async move {
                let value = value.ok_or(InjectionFailure::Unavailable("no credential value"))?;
                apply(request, &location, &value, max).await
            }
        };
        let first = match inject(request, &token).await {
            Ok(request) => self.send(request).await,
            Err(failure) => return failure_response(failure, key.as_ref()),
        };
        let Some(replay) = replay.filter(|_| first.status() == StatusCode::UNAUTHORIZED) else {
            return first;
        };
        if !manager.invalidate(&token).await {
            // A refresh was forced moments ago: the 401 stands.
            return first;
        }
        tracing::info!(credential = %name, "the upstream refused the access token; fetching a new one");
        let fresh = match manager.token().await {
            Ok(fresh) => fresh,
            Err(err) => return unavailable(err),
        };
        match inject(replay.request(), &fresh).await {
            Ok(request) => self.send(request).await,
            Err(failure) => failure_response(failure, key.as_ref()),
        }
    }
}

impl Service<Request<Body>> for InjectCredential {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_credentials_replace_client_values() {
        assert_eq!(
            replace_query(Some("a=1&api_key=client&b=2"), "api_key", "s/3"),
            "a=1&b=2&api_key=s%2F3"
        );
        assert_eq!(replace_query(None, "k", "v"), "k=v");
        assert_eq!(
            replace_query(Some("api%5Fkey=c&api%5fkey=d&a=1"), "api_key", "s"),
            "a=1&api_key=s"
        );
        assert_eq!(replace_query(Some("my+key=c"), "my key", "s"), "my%20key=s");
    }
}
