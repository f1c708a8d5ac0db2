//! Route matching: host, then the longest whole-segment prefix, then method.
//!
//! [`RouteTable`] picks a route by host (exact, case-insensitive; routes with a
//! `host` first, then host-less ones), then the longest `path_prefix` matched on
//! whole segments, then method. When the longest prefix matches but none of its
//! routes takes the method, the answer is 405: falling through to a shorter
//! prefix could send a request to a route with weaker rules.
//! Lookup walks the path's ancestors through a hash map, so it costs the
//! path's depth, not the number of routes. The path it is given is already
//! normalised ([`super::path::normalize_path`]).

use std::collections::HashMap;

use http::Method;

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
