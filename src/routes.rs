//! Path normalisation and route matching.
//!
//! A request's path is normalised once ([`normalize_path`]): unreserved
//! characters are percent-decoded, other escapes get uppercase hex, duplicate
//! slashes collapse, and `.`/`..` segments are resolved. Matching and the
//! upstream both use that one normalised path, so no part of the gateway reads
//! a path differently from another. An encoded slash (`%2F`), an encoded NUL,
//! a broken escape or a `..` that climbs above the root is rejected.
//!
//! [`RouteTable`] picks a route by host (exact, case-insensitive; routes with a
//! `host` first, then host-less ones), then the longest `path_prefix` matched on
//! whole segments, then method. When the longest prefix matches but none of its
//! routes takes the method, the answer is 405: falling through to a shorter
//! prefix could send a request to a route with weaker rules.
//! Lookup walks the path's ancestors through a hash map, so it costs the
//! path's depth, not the number of routes.

use std::borrow::Cow;
use std::collections::HashMap;

use http::Method;

/// Why a path was refused. Each is a 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// `%2F` would make one path read as two different ones.
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `%00` has no place in a path.
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// A `..` segment climbs above `/`.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    /// A backslash, or a `.`/`..` segment with `;` parameters: some upstreams
    /// (IIS, Tomcat) read these as separators or dot segments, so the path
    /// they see would not be the path that was matched.
    #[error("the path contains a backslash or a dot segment with parameters")]
    Ambiguous,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether the path can be returned as it is: no escapes, no empty, `.` or
/// `..` segments. Most real paths take this branch and allocate nothing.
fn is_already_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.contains(&b'%') || bytes.contains(&b'\\') {
        return false;
    }
    for segment in path[1..].split('/') {
        if segment.starts_with('.') && matches!(segment.split(';').next(), Some("." | "..")) {
            return false;
        }
    }
    !path.contains("//")
}

/// Normalises a request path (without its query) as described in the module docs.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_already_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.contains('\\') {
        return Err(PathError::Ambiguous);
    }

    // Pass 1: decode the unreserved escapes, canonicalise the others. Only
    // ASCII is ever decoded, so the result stays valid UTF-8.
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let escape = rest.as_bytes();
        let value = match (escape.get(at + 1), escape.get(at + 2)) {
            (Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match value {
            None => return Err(PathError::BadEscape),
            Some(b'/') => return Err(PathError::EncodedSlash),
            Some(0) => return Err(PathError::EncodedNul),
            Some(b'\\') => return Err(PathError::Ambiguous),
            Some(v) if is_unreserved(v) => decoded.push(char::from(v)),
            Some(v) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                decoded.push('%');
                decoded.push(char::from(HEX[usize::from(v >> 4)]));
                decoded.push(char::from(HEX[usize::from(v & 0xF)]));
            }
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);

    // Pass 2: collapse empty segments and resolve dot segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded[1..].split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            other => {
                if matches!(other.split(';').next(), Some("." | "..")) {
                    return Err(PathError::Ambiguous);
                }
                segments.push(other);
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether a route requires a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid JWT is required (the default).
    Jwt,
    /// A public route: no token is read.
    None,
}

/// One `[[routes]]` entry, validated.
#[derive(Clone, Debug)]
pub struct RouteSettings {
    /// Unique name; the `route` label of metrics and logs.
    pub name: String,
    /// What the route is matched on.
    pub key: RouteKey,
    /// Where matched requests go.
    pub upstream: crate::proxy::Upstream,
    /// Remove `path_prefix` from the path sent upstream.
    pub strip_prefix: bool,
    /// How long the upstream may take to answer (capped by `request_timeout`).
    pub timeout: std::time::Duration,
    /// Whether a token is required.
    pub auth: AuthMode,
    /// What a token must hold to use the route.
    pub authz: crate::auth::RouteAuthz,
    /// Claims towards the upstream; the client's token kept or not.
    pub forward: crate::auth::forward::ForwardSettings,
    /// The upstream credential injected, if any.
    pub inject: Option<crate::credentials::inject::InjectSettings>,
    /// How the upstream is reached: extra trust root, TLS name, HTTP/2.
    pub connection: crate::proxy::ConnectionSettings,
    /// When a target counts as down, and how it is checked.
    pub health: crate::proxy::health::HealthSettings,
}

/// What a route is matched on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteKey {
    /// Exact host, lowercase, without port; `None` matches any host.
    pub host: Option<String>,
    /// A normalised path with no trailing slash (except `/` itself).
    pub path_prefix: String,
    /// The methods the route takes; `None` takes all.
    pub methods: Option<Vec<Method>>,
}

impl RouteKey {
    fn takes(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Match<'a, T> {
    /// The route that takes the request.
    Found(&'a T),
    /// The path matches routes, none of which takes the method; the methods they take.
    MethodNotAllowed(Vec<Method>),
    /// No route's host and prefix match.
    NotFound,
}

#[derive(Debug, Default)]
struct PrefixIndex {
    by_prefix: HashMap<String, Vec<usize>>,
}

/// Routes of type `T`, indexed by their [`RouteKey`].
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<(RouteKey, T)>,
    by_host: HashMap<String, PrefixIndex>,
    any_host: PrefixIndex,
}

impl<T> RouteTable<T> {
    /// Builds the index. Order matters only among routes with the same host and
    /// prefix: the first that takes the method wins (config validation
    /// refuses overlapping methods there).
    pub fn new(routes: Vec<(RouteKey, T)>) -> Self {
        let mut by_host: HashMap<String, PrefixIndex> = HashMap::new();
        let mut any_host = PrefixIndex::default();
        for (index, (key, _)) in routes.iter().enumerate() {
            let target = match &key.host {
                Some(host) => by_host.entry(host.clone()).or_default(),
                None => &mut any_host,
            };
            target
                .by_prefix
                .entry(key.path_prefix.clone())
                .or_default()
                .push(index);
        }
        Self {
            routes,
            by_host,
            any_host,
        }
    }

    /// All routes, in configuration order.
    pub fn routes(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|(_, route)| route)
    }

    /// Finds the route for a normalised `path`, a request `host` (may carry a
    /// port; matched case-insensitively) and a `method`.
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &Method) -> Match<'_, T> {
        // Most tables have no host routes: no host key is made for them.
        if !self.by_host.is_empty()
            && let Some(index) = host.and_then(|h| self.by_host.get(&host_key(h)))
            && let Some(found) = self.lookup_in(index, path, method)
        {
            return found;
        }
        self.lookup_in(&self.any_host, path, method)
            .unwrap_or(Match::NotFound)
    }

    fn lookup_in(&self, index: &PrefixIndex, path: &str, method: &Method) -> Option<Match<'_, T>> {
        let mut candidate = match path.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => stripped,
            _ => path,
        };
        loop {
            if let Some(indices) = index.by_prefix.get(candidate) {
                let mut allowed = Vec::new();
                for &i in indices {
                    let (key, route) = &self.routes[i];
                    if key.takes(method) {
                        return Some(Match::Found(route));
                    }
                    allowed.extend(key.methods.iter().flatten().cloned());
                }
                return Some(Match::MethodNotAllowed(allowed));
            }
            if candidate == "/" {
                return None;
            }
            candidate = match candidate.rfind('/') {
                Some(0) => "/",
                Some(cut) => &candidate[..cut],
                None => return None,
            };
        }
    }
}

/// A host header value as a lookup key: lowercase, without port.
fn host_key(host: &str) -> String {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matrix() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/api/users", Ok("/api/users")),
            ("/api/users/", Ok("/api/users/")),
            ("//api", Ok("/api")),
            ("/api//users///x", Ok("/api/users/x")),
            ("/api/../admin", Ok("/admin")),
            ("/api/./users", Ok("/api/users")),
            ("/api/%2e%2e/admin", Ok("/admin")),
            ("/api/%2E%2E/admin", Ok("/admin")),
            ("/api/.%2e/admin", Ok("/admin")),
            ("/%61pi", Ok("/api")),
            ("/api/%7euser", Ok("/api/~user")),
            ("/api/a%20b", Ok("/api/a%20b")),
            ("/api/a%3fb", Ok("/api/a%3Fb")),
            ("/API/Users", Ok("/API/Users")),
            ("/api/..", Ok("/")),
            ("/api/x/..", Ok("/api/")),
            ("/.well-known/jwks.json", Ok("/.well-known/jwks.json")),
            ("/api/%2Fadmin", Err(PathError::EncodedSlash)),
            ("/api/%2fadmin", Err(PathError::EncodedSlash)),
            ("/..", Err(PathError::AboveRoot)),
            ("/api/../../etc/passwd", Err(PathError::AboveRoot)),
            ("/%2e%2e/x", Err(PathError::AboveRoot)),
            ("/a%00b", Err(PathError::EncodedNul)),
            ("/a%zz", Err(PathError::BadEscape)),
            ("/a%2", Err(PathError::BadEscape)),
            ("/a%ff", Ok("/a%FF")),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("api", Err(PathError::NotAbsolute)),
            ("/api\\..\\admin", Err(PathError::Ambiguous)),
            ("/api/%5C../admin", Err(PathError::Ambiguous)),
            ("/api/..;/admin", Err(PathError::Ambiguous)),
            ("/api/.;x/admin", Err(PathError::Ambiguous)),
            ("/api/a;b/c", Ok("/api/a;b/c")),
            ("/api/...", Ok("/api/...")),
        ];
        for (raw, expected) in cases {
            let got = normalize_path(raw);
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "for {raw:?}");
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        for raw in ["/a/./b/../c//d/", "/%7e/x%2e/%41", "/x/%20/y"] {
            let once = normalize_path(raw).map(Cow::into_owned);
            let twice = once
                .as_deref()
                .map(|p| normalize_path(p).map(Cow::into_owned));
            assert_eq!(twice.ok().and_then(Result::ok), once.ok(), "{raw}");
        }
    }

    fn key(host: Option<&str>, prefix: &str, methods: Option<&[Method]>) -> RouteKey {
        RouteKey {
            host: host.map(str::to_owned),
            path_prefix: prefix.into(),
            methods: methods.map(<[Method]>::to_vec),
        }
    }

    fn table() -> RouteTable<&'static str> {
        RouteTable::new(vec![
            (key(None, "/", None), "root"),
            (key(None, "/api", None), "api"),
            (key(None, "/api/admin", Some(&[Method::GET])), "admin-read"),
            (
                key(None, "/api/admin", Some(&[Method::POST])),
                "admin-write",
            ),
            (key(Some("internal.example"), "/api", None), "internal-api"),
        ])
    }

    fn found(m: Match<'_, &'static str>) -> Option<&'static str> {
        match m {
            Match::Found(name) => Some(*name),
            _ => None,
        }
    }

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let t = table();
        assert_eq!(
            found(t.lookup(None, "/api/users", &Method::GET)),
            Some("api")
        );
        assert_eq!(found(t.lookup(None, "/api", &Method::GET)), Some("api"));
        assert_eq!(found(t.lookup(None, "/api/", &Method::GET)), Some("api"));
        assert_eq!(found(t.lookup(None, "/apix", &Method::GET)), Some("root"));
        assert_eq!(
            found(t.lookup(None, "/api/admin/x", &Method::GET)),
            Some("admin-read")
        );
        assert_eq!(
            found(t.lookup(None, "/api/admin", &Method::POST)),
            Some("admin-write")
        );
    }

    #[test]
    fn method_mismatch_on_longest_prefix_is_405_not_a_fallthrough() {
        let t = table();
        match t.lookup(None, "/api/admin", &Method::DELETE) {
            Match::MethodNotAllowed(allowed) => {
                assert_eq!(allowed, vec![Method::GET, Method::POST])
            }
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn host_routes_come_first_and_ignore_case_and_port() {
        let t = table();
        assert_eq!(
            found(t.lookup(Some("Internal.Example:8443"), "/api/x", &Method::GET)),
            Some("internal-api")
        );
        assert_eq!(
            found(t.lookup(Some("internal.example"), "/other", &Method::GET)),
            Some("root")
        );
        assert_eq!(
            found(t.lookup(Some("public.example"), "/api/x", &Method::GET)),
            Some("api")
        );
    }

    #[test]
    fn no_matching_prefix_is_not_found() {
        let t = RouteTable::new(vec![(key(None, "/only", None), "only")]);
        assert!(matches!(
            t.lookup(None, "/other", &Method::GET),
            Match::NotFound
        ));
        assert!(matches!(t.lookup(None, "/", &Method::GET), Match::NotFound));
    }
}
