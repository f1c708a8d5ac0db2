//! The authority a request is for, checked once.
//!
//! The dispatcher matches host routes on it and hands it on as
//! [`RequestAuthority`](crate::extensions::RequestAuthority), which the header
//! policy sends as `X-Forwarded-Host`: one reading of the authority for both.

use http::{HeaderValue, Request, header};

/// The authority a request is for: the target URI's (absolute form, or
/// HTTP/2's `:authority`), else the one `Host` header (RFC 9112 §3.2.2).
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

/// [`effective_host`] as a header value: the `Host` header itself when that
/// is where the authority came from (no copy), else the URI's authority.
pub fn authority_value<B>(request: &Request<B>) -> Result<Option<HeaderValue>, &'static str> {
    let Some(authority) = effective_host(request)? else {
        return Ok(None);
    };
    if request.uri().authority().is_none() {
        return Ok(request.headers().get(header::HOST).cloned());
    }
    HeaderValue::from_str(authority)
        .map(Some)
        .map_err(|_| "the request's authority is not a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, hosts: &[&'static str], version: http::Version) -> Request<()> {
        let mut request = Request::builder()
            .uri(uri)
            .version(version)
            .body(())
            .unwrap_or_default();
        for host in hosts {
            request
                .headers_mut()
                .append(header::HOST, HeaderValue::from_static(host));
        }
        request
    }

    #[test]
    fn the_uri_authority_wins_over_the_host_header() {
        let r = request(
            "http://api.example:8443/x",
            &["other.example"],
            http::Version::HTTP_11,
        );
        assert_eq!(effective_host(&r), Ok(Some("api.example:8443")));
        let value = authority_value(&r).ok().flatten();
        assert_eq!(
            value.as_ref().and_then(|v| v.to_str().ok()),
            Some("api.example:8443")
        );
    }

    #[test]
    fn one_plain_host_header_is_the_authority() {
        let r = request("/x", &["api.example"], http::Version::HTTP_11);
        assert_eq!(effective_host(&r), Ok(Some("api.example")));
        let r = request("/x", &["[::1]:8080"], http::Version::HTTP_11);
        assert_eq!(effective_host(&r), Ok(Some("[::1]:8080")));
    }

    #[test]
    fn what_rfc_9112_answers_with_400_is_refused() {
        let two = request("/x", &["a.example", "b.example"], http::Version::HTTP_11);
        assert!(effective_host(&two).is_err());
        let none = request("/x", &[], http::Version::HTTP_11);
        assert!(effective_host(&none).is_err());
        for bad in [
            "user@a.example",
            "a.example:99999",
            "a.example,b.example",
            "[zz]:1",
            "",
        ] {
            let r = request("/x", &[bad], http::Version::HTTP_11);
            assert!(effective_host(&r).is_err(), "{bad:?}");
        }
        // HTTP/1.0 may omit Host.
        assert_eq!(
            effective_host(&request("/x", &[], http::Version::HTTP_10)),
            Ok(None)
        );
    }
}
