//! [`ClientAddressLayer`]: which address a request comes from, when warden
//! runs behind load balancers or an ingress (`[server] trusted_proxies`).
//!
//! Login throttling, rate limits by `client_ip` and the audit log's
//! `client_ip` all count the *client*. Behind a proxy the TCP peer is the
//! proxy, so every client would share one address (and ten failed logins
//! from anyone would throttle everyone). When the peer is a trusted proxy,
//! the client is the right-most address of `X-Forwarded-For` that is not
//! itself a trusted proxy: entries to its left were written by the client
//! and prove nothing. Nothing changes for a peer that is not trusted, so a
//! client cannot pick its address by sending the header.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use http::header::HeaderName;
use ipnet::IpNet;
use tower::{Layer, Service};

use crate::extensions::ConnectInfo;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Sets [`ConnectInfo::client`] from `X-Forwarded-For` for trusted peers.
#[derive(Clone, Debug)]
pub struct ClientAddressLayer {
    trusted: Arc<[IpNet]>,
}

impl ClientAddressLayer {
    /// The layer for `trusted` proxies; `None` when there are none (the
    /// peer is the client, and nothing needs to run).
    pub fn new(trusted: &[IpNet]) -> Option<Self> {
        (!trusted.is_empty()).then(|| Self {
            trusted: trusted.into(),
        })
    }
}

impl<S> Layer<S> for ClientAddressLayer {
    type Service = ClientAddress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddress {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// The service made by [`ClientAddressLayer`].
#[derive(Clone, Debug)]
pub struct ClientAddress<S> {
    inner: S,
    trusted: Arc<[IpNet]>,
}

impl<S, B> Service<Request<B>> for ClientAddress<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        let peer = request
            .extensions()
            .get::<ConnectInfo>()
            .map(|info| info.remote.ip());
        if let Some(peer) = peer
            && is_trusted(&self.trusted, peer)
        {
            let client = forwarded_client(&self.trusted, peer, request.headers());
            if let Some(info) = request.extensions_mut().get_mut::<ConnectInfo>() {
                info.client = client;
            }
        }
        self.inner.call(request)
    }
}

fn is_trusted(trusted: &[IpNet], address: IpAddr) -> bool {
    let address = canonical(address);
    trusted.iter().any(|net| net.contains(&address))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind trusted `peer`: the right-most `X-Forwarded-For` hop
/// that is not a trusted proxy. An entry that is not an address ends the
/// walk (the hop to its right wrote it, and is the best known).
fn forwarded_client(trusted: &[IpNet], peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
    let mut client = canonical(peer);
    let values: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    for hop in values.iter().rev().flat_map(|value| value.rsplit(',')) {
        let Some(address) = parse_hop(hop.trim()) else {
            break;
        };
        client = address;
        if !is_trusted(trusted, address) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `2001:db8::1`, `192.0.2.1:443` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| n.parse().expect("a CIDR block"))
            .collect()
    }

    fn client(trusted: &[&str], peer: &str, xff: &[&str]) -> String {
        let mut headers = http::HeaderMap::new();
        for value in xff {
            headers.append(&X_FORWARDED_FOR, value.parse().expect("a header value"));
        }
        forwarded_client(&nets(trusted), peer.parse().expect("an address"), &headers).to_string()
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let lb = ["10.0.0.0/8"];
        assert_eq!(client(&lb, "10.0.0.5", &["203.0.113.7"]), "203.0.113.7");
        // The client's own claims to the left are ignored.
        assert_eq!(
            client(&lb, "10.0.0.5", &["1.2.3.4, 203.0.113.7"]),
            "203.0.113.7"
        );
        // Chains of trusted proxies are walked, across header lines too.
        assert_eq!(
            client(&lb, "10.0.0.5", &["1.2.3.4, 203.0.113.7", "10.1.1.1"]),
            "203.0.113.7"
        );
        assert_eq!(
            client(&lb, "10.0.0.5", &["[2001:db8::1]:443"]),
            "2001:db8::1"
        );
    }

    #[test]
    fn without_a_usable_header_the_peer_or_the_last_good_hop_stays() {
        let lb = ["10.0.0.0/8"];
        assert_eq!(client(&lb, "10.0.0.5", &[]), "10.0.0.5");
        assert_eq!(client(&lb, "10.0.0.5", &["garbage"]), "10.0.0.5");
        assert_eq!(
            client(&lb, "10.0.0.5", &["203.0.113.9, unknown, 10.2.2.2"]),
            "10.2.2.2"
        );
        assert_eq!(client(&lb, "10.0.0.5", &["10.3.3.3"]), "10.3.3.3");
    }

    #[test]
    fn mapped_addresses_are_compared_as_ipv4() {
        assert!(is_trusted(
            &nets(&["127.0.0.1/32"]),
            "::ffff:127.0.0.1".parse().expect("an address")
        ));
    }
}
