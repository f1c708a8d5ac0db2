//! The last stage: send the request to the route's upstream and stream the
//! answer back.
//!
//! [`Proxy`] is the innermost service of every route stack. It rewrites the
//! URI (the normalised path, `strip_prefix`, the upstream's base path), picks
//! a target round-robin, and sends the request on one of the current
//! worker's keep-alive connections ([`UpstreamClient`], [`pool`]). Bodies
//! stream both ways. Failures become responses: refused/reset → 502
//! `bad_gateway`, a request
//! body that grew past `max_body_bytes` while streaming → 413, a request
//! body the client framed wrong or cut short → 400 `bad_request`. No answer
//! within the route's timeout is a 504 `upstream_timeout` from the route's
//! request deadline, which arms the one timer of the request.
//!
//! It reads [`ExecutionKey`] from the request extensions and writes
//! [`UpstreamTiming`] into the response extensions.

mod echo;
pub mod headers;
pub mod health;
pub mod pool;
pub mod tunnel;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use tower::Service;

use crate::access_log::UpstreamTiming;
use crate::body::{self, Body, BodyTooLarge, ClientBodyError};
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;

pub use headers::ForwardHeadersLayer;
use health::Targets;
use tunnel::{Tunnels, UpgradeRequested};

/// Where a route's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// The built-in echo upstream.
    Echo,
    /// One or more HTTP(S) base URLs, used round-robin.
    Http(Vec<Uri>),
}

/// How a route reaches its upstream, beyond the URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionSettings {
    /// An extra trust root (PEM) for a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the upstream's certificate must carry, when not the URL's host.
    pub server_name: Option<String>,
    /// HTTP/2 to the upstream: h2 via ALPN over TLS, prior-knowledge h2c
    /// over plain TCP (gRPC, trailers included).
    pub http2: bool,
}

/// Keep-alive connections to upstreams (HTTP and HTTPS, rustls with the
/// webpki roots), kept per worker ([`pool`]), shared by every route with
/// the same [`ConnectionSettings`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    pool: Arc<pool::Pool>,
    http2: bool,
}

/// How long an upstream connection may sit idle before it is closed.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl UpstreamClient {
    /// A client with `settings` for `workers` workers, whose connection
    /// attempts give up after `connect_timeout`.
    pub fn new(
        connect_timeout: Duration,
        settings: &ConnectionSettings,
        workers: usize,
    ) -> Result<Self, crate::http_client::ClientError> {
        let connector = crate::http_client::connector(&crate::http_client::ClientOptions {
            ca_file: settings.ca_file.as_deref(),
            server_name: settings.server_name.as_deref(),
            http2: settings.http2,
            connect_timeout: Some(connect_timeout),
        })?;
        Ok(Self {
            pool: Arc::new(pool::Pool::new(
                connector,
                settings.http2,
                UPSTREAM_IDLE_TIMEOUT,
                workers,
            )),
            http2: settings.http2,
        })
    }

    /// Sends `request` to `target` (scheme and authority) on one of the
    /// current worker's connections.
    pub async fn send(
        &self,
        target: &Uri,
        request: Request<Body>,
    ) -> Result<Response<pool::PooledBody>, pool::SendError> {
        self.pool.send(target, request).await
    }
}

/// The upstream side of one route.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<ProxyInner>,
}

#[derive(Debug)]
struct ProxyInner {
    /// `None` for the built-in echo.
    targets: Option<Arc<Targets>>,
    /// `Some(prefix)` when the route strips its prefix.
    strip_prefix: Option<String>,
    client: UpstreamClient,
    /// Where upgraded connections go, and the route's name for them.
    tunnels: Option<(Arc<Tunnels>, Arc<str>)>,
}

impl Proxy {
    /// The upstream stage of a route; `targets` is `None` for `builtin:echo`.
    pub fn new(
        targets: Option<Arc<Targets>>,
        strip_prefix: Option<String>,
        client: UpstreamClient,
    ) -> Self {
        Self {
            inner: Arc::new(ProxyInner {
                targets,
                strip_prefix,
                client,
                tunnels: None,
            }),
        }
    }

    /// The same stage, joining upgraded connections (a 101 to an upgrade
    /// the header policy let through) in `tunnels`, labelled `route`.
    pub fn with_tunnels(mut self, tunnels: Arc<Tunnels>, route: &str) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.tunnels = Some((tunnels, route.into()));
        }
        self
    }
}

/// The path the upstream sees below its base path: the normalised request
/// path without the route's prefix when it is stripped. Empty when the
/// request was for the prefix itself, so `/svc` maps to the base path as it
/// is (`/base`, or `/` without a base) and `/svc/` to `/base/`.
fn upstream_path<'a>(path: &'a str, strip_prefix: Option<&str>) -> &'a str {
    match strip_prefix {
        Some("/") | None => path,
        Some(prefix) => match path.strip_prefix(prefix) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => path,
        },
    }
}

/// `{credential}` in an upstream URL, as the URL holds it.
pub const ENCODED_CREDENTIAL_PLACEHOLDER: &str = "%7Bcredential%7D";

/// The target with `{credential}` replaced by the injected path credential;
/// `None` when the URL needs one and none was injected.
fn with_path_credential<'a, B>(
    target: &'a Uri,
    request: &Request<B>,
) -> Option<std::borrow::Cow<'a, Uri>> {
    use std::borrow::Cow;
    if !target.path().contains(ENCODED_CREDENTIAL_PLACEHOLDER) {
        return Some(Cow::Borrowed(target));
    }
    let credential = request
        .extensions()
        .get::<crate::extensions::PathCredential>()?;
    let path = target
        .path()
        .replace(ENCODED_CREDENTIAL_PLACEHOLDER, credential.0.expose());
    let mut parts = target.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(path).ok();
    Uri::from_parts(parts).ok().map(Cow::Owned)
}

/// The URI a request for `request_uri` has at the upstream `base`. When the
/// upstream has no base path and the route strips nothing, the request's own
/// path and query are reused as they are (no copy).
fn upstream_uri(
    base: &Uri,
    request_uri: &Uri,
    strip_prefix: Option<&str>,
) -> Result<Uri, http::Error> {
    let path = upstream_path(request_uri.path(), strip_prefix);
    let unchanged = path.len() == request_uri.path().len() && !path.is_empty();
    match request_uri.path_and_query() {
        Some(path_and_query) if unchanged && matches!(base.path(), "" | "/") => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(base.scheme().cloned().unwrap_or(Scheme::HTTP));
            parts.authority = base.authority().cloned();
            parts.path_and_query = Some(path_and_query.clone());
            Ok(Uri::from_parts(parts)?)
        }
        _ => target_uri(base, path, request_uri.query()),
    }
}

/// `base` (scheme, authority, optional base path) joined with the request path and query.
fn target_uri(base: &Uri, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
    let base_path = base.path().trim_end_matches('/');
    let mut path_and_query =
        String::with_capacity(base_path.len() + path.len() + 1 + query.map_or(0, str::len));
    path_and_query.push_str(base_path);
    path_and_query.push_str(path);
    if path_and_query.is_empty() {
        path_and_query.push('/');
    }
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(base.scheme().cloned().unwrap_or(Scheme::HTTP));
    parts.authority = base.authority().cloned();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
    Ok(Uri::from_parts(parts)?)
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let key = request.extensions().get::<ExecutionKey>().cloned();
            let strip_prefix = inner.strip_prefix.as_deref();
            let Some(targets) = &inner.targets else {
                let uri = upstream_uri(
                    &Uri::from_static("http://echo"),
                    request.uri(),
                    strip_prefix,
                );
                if let Ok(uri) = uri {
                    *request.uri_mut() = uri;
                }
                return Ok(echo::respond(request).await);
            };
            let Some(chosen) = targets.pick() else {
                return Ok(GatewayError::new(
                    ErrorCode::BadGateway,
                    "no upstream target is healthy",
                )
                .into_response(key.as_ref()));
            };
            let target = match with_path_credential(&chosen.uri, &request) {
                Some(target) => target,
                None => {
                    return Ok(crate::error::json_error(
                        http::StatusCode::BAD_GATEWAY,
                        "upstream_credential_unavailable",
                        "the upstream URL needs a credential that was not injected",
                        key.as_ref(),
                    ));
                }
            };
            let uri = match upstream_uri(&target, request.uri(), strip_prefix) {
                Ok(uri) => uri,
                Err(_) => {
                    return Ok(GatewayError::new(
                        ErrorCode::BadRequest,
                        "the request path cannot be forwarded",
                    )
                    .into_response(key.as_ref()));
                }
            };
            *request.uri_mut() = uri;
            // An upgrade the header policy let through: the client's side
            // of the connection is taken now, joined once the upstream
            // answers 101.
            let upgrade = request.extensions_mut().remove::<UpgradeRequested>();
            let mut client_upgrade = None;
            if let (Some(requested), Some((tunnels, _))) = (upgrade, &inner.tunnels) {
                let Some(place) = tunnels.reserve() else {
                    return Ok(crate::error::json_error(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "too_many_tunnels",
                        "the gateway holds as many open tunnels as it allows; retry later",
                        key.as_ref(),
                    ));
                };
                client_upgrade = Some(PendingUpgrade {
                    place,
                    protocol: requested.0,
                    until: request
                        .extensions()
                        .get::<crate::extensions::AuthorizedUntil>()
                        .map(|a| a.0),
                    client: hyper::upgrade::on(&mut request),
                });
            }
            if inner.client.http2 {
                *request.version_mut() = Version::HTTP_2;
            } else {
                *request.version_mut() = Version::HTTP_11;
                // Made once per target, so the client need not format it.
                if let Some(host) = &chosen.host {
                    request
                        .headers_mut()
                        .insert(http::header::HOST, host.clone());
                }
            }

            let started = Instant::now();
            // No timer here: the route's timeout is folded into its
            // request deadline (`server::request_deadline`).
            let sent = inner.client.send(&target, request).await;
            let elapsed = started.elapsed();
            let timing = UpstreamTiming {
                elapsed,
                address: chosen.address.clone(),
            };
            let response = match sent {
                Ok(response) => {
                    targets.succeeded(chosen);
                    response
                }
                Err(err) if BodyTooLarge::is_cause_of(&err) => {
                    return Ok(GatewayError::new(
                        ErrorCode::PayloadTooLarge,
                        "the request body is larger than the gateway accepts",
                    )
                    .into_response(key.as_ref()));
                }
                // The client's body broke while it streamed upstream (a bad
                // chunk, cut short): hyper-util reports a failed send, but the
                // upstream did nothing wrong, so the target is not marked failed.
                Err(err) if ClientBodyError::is_cause_of(&err) => {
                    tracing::debug!(error = %error_chain(&err), "the client's request body could not be read");
                    let mut response = GatewayError::new(
                        ErrorCode::BadFraming,
                        "the request body does not match its framing",
                    )
                    .into_response(key.as_ref());
                    response.extensions_mut().insert(timing);
                    return Ok(response);
                }
                Err(err) => {
                    if err.is_connect() {
                        targets.failed(chosen);
                    }
                    tracing::warn!(error = %error_chain(&err), upstream = %chosen.uri, "upstream request failed");
                    let description = if err.is_connect() {
                        "the upstream could not be reached"
                    } else {
                        "the upstream connection failed"
                    };
                    let mut response = GatewayError::new(ErrorCode::BadGateway, description)
                        .into_response(key.as_ref());
                    response.extensions_mut().insert(timing);
                    return Ok(response);
                }
            };
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                return Ok(switch_protocols(
                    response,
                    client_upgrade,
                    inner.tunnels.as_ref(),
                    key,
                    timing,
                ));
            }
            let (mut parts, incoming) = response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers);
            parts.extensions.insert(timing);
            Ok(Response::from_parts(parts, body::boxed(incoming)))
        })
    }
}

/// An upgrade sent upstream, waiting for its 101.
struct PendingUpgrade {
    /// Its place among the tunnels.
    place: tunnel::Reservation,
    /// The one protocol asked for.
    protocol: http::HeaderValue,
    /// When the request's token expires.
    until: Option<i64>,
    /// The client's side of the connection, once hyper hands it over.
    client: hyper::upgrade::OnUpgrade,
}

/// The upstream's 101: the answer to the upgrade the client asked for (its
/// `Upgrade`, `Connection: upgrade`, the protocol's own headers), with the
/// two connections joined in a tunnel once hyper hands them over. A 101
/// the client did not ask for, or to another protocol, is a 502.
fn switch_protocols(
    mut response: Response<pool::PooledBody>,
    pending: Option<PendingUpgrade>,
    tunnels: Option<&(Arc<Tunnels>, Arc<str>)>,
    key: Option<ExecutionKey>,
    timing: UpstreamTiming,
) -> Response<Body> {
    let (Some(pending), Some((tunnels, route))) = (pending, tunnels) else {
        tracing::warn!("the upstream switched protocols without being asked to");
        return GatewayError::new(ErrorCode::BadGateway, "the upstream answered 101 unasked")
            .into_response(key.as_ref());
    };
    let answered = response.headers().get(http::header::UPGRADE);
    let same = answered
        .and_then(|v| v.to_str().ok())
        .zip(pending.protocol.to_str().ok())
        .is_some_and(|(answered, asked)| answered.trim().eq_ignore_ascii_case(asked));
    if !same {
        tracing::warn!("the upstream switched to a protocol the client did not ask for");
        return GatewayError::new(
            ErrorCode::BadGateway,
            "the upstream switched to another protocol",
        )
        .into_response(key.as_ref());
    }
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(http::header::UPGRADE, pending.protocol);
    parts.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    parts.extensions.insert(timing);
    let tunnel = tunnel::Tunnel {
        route: route.clone(),
        key,
        until: pending.until,
    };
    tunnels.open(pending.place, tunnel, pending.client, upstream);
    Response::from_parts(parts, body::empty())
}

/// An error and its sources on one line, for the log.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        assert_eq!(upstream_path("/orders/12", Some("/orders")), "/12");
        assert_eq!(upstream_path("/orders", Some("/orders")), "");
        assert_eq!(upstream_path("/orders/", Some("/orders")), "/");
        assert_eq!(upstream_path("/ordersx", Some("/orders")), "/ordersx");
        assert_eq!(upstream_path("/orders/12", None), "/orders/12");
        assert_eq!(upstream_path("/x", Some("/")), "/x");
    }

    #[test]
    fn upstream_uri_reuses_or_rebuilds_the_path() {
        let request = Uri::from_static("/orders/12?a=1");
        let at = |base: &'static str, strip: Option<&str>| {
            upstream_uri(&Uri::from_static(base), &request, strip)
                .map(|u| u.to_string())
                .ok()
        };
        assert_eq!(
            at("http://h:1", None).as_deref(),
            Some("http://h:1/orders/12?a=1")
        );
        assert_eq!(
            at("http://h:1/", None).as_deref(),
            Some("http://h:1/orders/12?a=1")
        );
        assert_eq!(
            at("https://h/v1", None).as_deref(),
            Some("https://h/v1/orders/12?a=1")
        );
        assert_eq!(
            at("http://h", Some("/orders")).as_deref(),
            Some("http://h/12?a=1")
        );
        let bare = upstream_uri(
            &Uri::from_static("http://h"),
            &Uri::from_static("/orders"),
            Some("/orders"),
        );
        assert_eq!(
            bare.map(|u| u.to_string()).ok().as_deref(),
            Some("http://h/")
        );
    }

    #[test]
    fn target_uri_joins_base_path_and_query() {
        let base = Uri::from_static("http://10.0.0.1:9001/v1/");
        let uri = target_uri(&base, "/items", Some("a=1")).map(|u| u.to_string());
        assert_eq!(
            uri.ok().as_deref(),
            Some("http://10.0.0.1:9001/v1/items?a=1")
        );
        let bare = target_uri(&base, "", None).map(|u| u.to_string());
        assert_eq!(bare.ok().as_deref(), Some("http://10.0.0.1:9001/v1"));
        let root = target_uri(&Uri::from_static("http://h"), "", None).map(|u| u.to_string());
        assert_eq!(root.ok().as_deref(), Some("http://h/"));
    }
}
