//! Header policy towards the upstream: hop-by-hop headers out, `X-Forwarded-*` in.
//!
//! [`ForwardHeadersLayer`] sits after auth in each route's stack (so a
//! rejected request is never rewritten) and before the upstream client. It
//! reads [`ConnectInfo`](crate::extensions::ConnectInfo) for the client address
//! and whether the connection was TLS.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tower::{Layer, Service};

use crate::execution_key::{EXECUTION_KEY_HEADER, ExecutionKey};
use crate::extensions::{ConnectInfo, RequestAuthority};

/// RFC 9110 §7.6.1 and the old proxy headers that are hop-by-hop in practice.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Other proxies' forwarding headers: only the gateway's own go upstream.
const FORWARDING: [HeaderName; 4] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::TRANSFER_ENCODING
}

fn is_ambiguous(name: &HeaderName) -> bool {
    FORWARDING.contains(name) || name.as_str().contains('_')
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers, including every header `Connection` names.
/// `Transfer-Encoding` goes too: the next hop frames the body itself.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages hold none: one pass over the names is cheaper than a
    // lookup per hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Client headers an upstream could read as something the gateway vouches
/// for: other proxies' forwarding headers, and any name with `_` (CGI-style
/// servers map `X_User_Id` and `X-User-Id` to the same variable, and some
/// let the underscore one win), as nginx drops them by default.
pub fn remove_ambiguous(headers: &mut HeaderMap) {
    if !headers.keys().any(is_ambiguous) {
        return;
    }
    for name in &FORWARDING {
        headers.remove(name);
    }
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(name);
    }
}

/// Applies the header policy to requests on their way upstream.
#[derive(Clone, Debug, Default)]
pub struct ForwardHeadersLayer {
    http2_upstream: bool,
    upgrades: Option<Arc<[String]>>,
}

impl ForwardHeadersLayer {
    /// The policy for a route; `http2_upstream` keeps `TE: trailers`, which
    /// gRPC over HTTP/2 needs (and which an HTTP/1.1 hop must not get).
    pub fn new(http2_upstream: bool) -> Self {
        Self {
            http2_upstream,
            upgrades: None,
        }
    }

    /// Lets an HTTP/1.1 `Upgrade` to one of `protocols` through (with
    /// `Connection: upgrade`) to an HTTP/1.1 upstream; any other `Upgrade`
    /// goes as the hop-by-hop header it is, so the request arrives as
    /// plain HTTP (RFC 9110 §7.8 lets a server ignore an upgrade).
    pub fn with_upgrades(mut self, protocols: Arc<[String]>) -> Self {
        if !self.http2_upstream && !protocols.is_empty() {
            self.upgrades = Some(protocols);
        }
        self
    }
}

impl<S> Layer<S> for ForwardHeadersLayer {
    type Service = ForwardHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardHeaders {
            inner,
            http2_upstream: self.http2_upstream,
            upgrades: self.upgrades.clone(),
        }
    }
}

/// The service made by [`ForwardHeadersLayer`].
#[derive(Clone, Debug)]
pub struct ForwardHeaders<S> {
    inner: S,
    http2_upstream: bool,
    upgrades: Option<Arc<[String]>>,
}

impl<S, B> Service<Request<B>> for ForwardHeaders<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let connection = request.extensions().get::<ConnectInfo>().cloned();
        let execution_key = request
            .extensions()
            .get::<ExecutionKey>()
            .map(|k| k.header_value().clone());
        // Checked, and worked out once, by the dispatcher.
        let host = request
            .extensions()
            .get::<RequestAuthority>()
            .map(|authority| authority.0.clone());
        // `TE: trailers` is the one TE an HTTP/2 upstream may get: gRPC needs it.
        let wants_trailers = self.http2_upstream
            && request
                .headers()
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        let upgrade = match &self.upgrades {
            Some(allowed) if request.version() == http::Version::HTTP_11 => {
                super::tunnel::requested_upgrade(request.headers(), allowed)
            }
            _ => None,
        };
        if let Some(protocol) = &upgrade {
            request
                .extensions_mut()
                .insert(super::tunnel::UpgradeRequested(protocol.clone()));
        }
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        if let Some(protocol) = upgrade {
            headers.insert(header::UPGRADE, protocol);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        remove_ambiguous(headers);
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // Host is the upstream's own, set by the proxy from the target URL.
        headers.remove(header::HOST);
        // The gateway has already answered (or not) the client's 100-continue.
        headers.remove(header::EXPECT);
        // Room for the four headers set below, grown at most once.
        headers.reserve(4);

        if let Some(info) = connection {
            let previous: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let value = if previous.is_empty() {
                Some(info.remote_ip.clone())
            } else {
                let client_ip = info.remote_ip.to_str().unwrap_or_default();
                HeaderValue::from_str(&format!("{}, {client_ip}", previous.join(", "))).ok()
            };
            if let Some(value) = value {
                headers.insert(X_FORWARDED_FOR.clone(), value);
            }
            let proto = if info.tls { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        }
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
        // Set again after the Connection-named headers went: a client cannot
        // hide the request's key from the upstream.
        if let Some(key) = execution_key {
            headers.insert(EXECUTION_KEY_HEADER.clone(), key);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed_with_the_fixed_list() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, X-Foo"));
        headers.insert("x-foo", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-bar", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-bar"]);
    }
}
