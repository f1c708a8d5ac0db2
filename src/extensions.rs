//! Request-scoped types that cross concerns, carried in the request's
//! extensions.
//!
//! A leaf, so that the concern that writes one and the concern that reads it
//! need not know each other. Each type says who writes it and who reads it.
//! (The execution key, the matched route's label and the verified
//! `Principal` live with their owners: [`crate::execution_key`],
//! [`crate::access_log`] and [`crate::auth`].)

use std::net::SocketAddr;

use http::HeaderValue;

use crate::secret::SecretString;

/// Facts about the connection a request came on.
///
/// Written by the server for every request of a connection; `client` is
/// rewritten per request by the client-address layer when the peer is a
/// trusted proxy. Read by the header policy (`X-Forwarded-For`,
/// `X-Forwarded-Proto`), login throttling, rate limits and the audit log
/// (the client address).
#[derive(Clone, Debug)]
pub struct ConnectInfo {
    /// The peer's address: the client's, or a proxy's.
    pub remote: SocketAddr,
    /// The client's address: the peer's, or, when the peer is one of
    /// `[server] trusted_proxies`, the one they forwarded.
    pub client: std::net::IpAddr,
    /// The listener's address.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer's IP address as text, made once per connection for
    /// `X-Forwarded-For`.
    pub remote_ip: HeaderValue,
}

impl ConnectInfo {
    /// What is known of a connection from `remote` to `local`.
    pub fn new(remote: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        let remote_ip = HeaderValue::try_from(remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            remote,
            client: remote.ip(),
            local,
            tls,
            remote_ip,
        }
    }
}

/// The authority the request is for (RFC 9112 §3.2.2), already checked.
///
/// Written by the route dispatcher, which matched the route on it; read by
/// the header policy for `X-Forwarded-Host`, so the two cannot disagree and
/// the authority is worked out once.
#[derive(Clone, Debug)]
pub struct RequestAuthority(pub HeaderValue);

/// The credential for `{credential}` in the upstream URL, already
/// percent-encoded.
///
/// Written by credential injection; read by the proxy when it builds the
/// upstream URI.
#[derive(Clone)]
pub struct PathCredential(pub SecretString);

impl std::fmt::Debug for PathCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathCredential([redacted])")
    }
}

/// The value injected into a request.
///
/// Written by credential injection; read by `builtin:echo`, which answers the
/// client directly and so must redact it.
#[derive(Clone)]
pub struct InjectedValue(pub SecretString);

impl std::fmt::Debug for InjectedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InjectedValue([redacted])")
    }
}

/// Until when (seconds since the epoch) the request's verified token is
/// valid: set by the JWT layer, read by whatever outlives the request (a
/// WebSocket tunnel ends when its token would have expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthorizedUntil(pub i64);
