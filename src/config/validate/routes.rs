//! `[[routes]]` (with `upstream.rs`: the connection, health checks and upgrades): what each route matches, who may call it, what reaches its
//! upstream and how the gateway connects to it. A route with any problem is
//! left out (its problems are all reported), so the rules between routes
//! (duplicate names, overlapping matches) only compare valid ones; names are
//! the exception, compared over every route.
//!
//! [`build_route`] is a list of steps, one function each: matching (host,
//! prefix, methods), authentication and scopes, forwarded claims, the
//! upstream connection and health checks, credential injection, the upstream
//! URLs, the timeout. A new route key goes into the step it belongs to, or a
//! new step here; the steps run in the order the old single function checked
//! them, so problems at the same place keep their order.

use http::{Method, Uri};

use super::credentials::{CREDENTIAL_PLACEHOLDER, Injected, build_inject};
use super::report::{KeyPath, Report, check_scopes, duration, is_path_byte};
use super::shared_state::build_rate_limit;
use super::upstream::{build_connection, build_health, build_upgrades};
use super::upstream_token::build_upstream_token;
use crate::auth::forward::ForwardSettings;
use crate::auth::scopes::RouteAuthz;
use crate::config::ServerSettings;
use crate::config::file::{OneOrMany, RouteFile};
use crate::proxy::Upstream;
use crate::routes::{AuthMode, RouteKey, RouteSettings, normalize_path};

/// The valid routes, and the key path of each in the file.
pub(super) fn build_routes(
    report: &mut Report<'_>,
    files: Vec<(usize, RouteFile)>,
    server: &ServerSettings,
) -> (Vec<RouteSettings>, Vec<KeyPath>) {
    let mut routes: Vec<RouteSettings> = Vec::new();
    let mut paths: Vec<KeyPath> = Vec::new();
    // Names are compared over every route, valid or not, so a duplicate is
    // reported together with the route's other problems.
    let mut names: Vec<(String, KeyPath)> = Vec::new();
    for (index, file) in files {
        let path = KeyPath::default().key("routes").index(index);
        if let Some((_, other_path)) = names.iter().find(|(name, _)| *name == file.name) {
            report.problem(
                &path.key("name"),
                format!(
                    "duplicate route name {:?} (also {})",
                    file.name,
                    other_path.render()
                ),
                "give every route its own name: names label metrics and logs",
            );
        }
        names.push((file.name.clone(), path.clone()));
        if let Some(route) = build_route(report, &path, file, server) {
            for (other, other_path) in routes.iter().zip(&paths) {
                if other.name != route.name
                    && other.key.host == route.key.host
                    && other.key.path_prefix == route.key.path_prefix
                    && methods_overlap(&other.key.methods, &route.key.methods)
                {
                    report.problem(
                        &path.key("path_prefix"),
                        format!(
                            "route {:?} takes the same host, prefix {:?} and methods as route {:?} ({})",
                            route.name,
                            route.key.path_prefix,
                            other.name,
                            other_path.render()
                        ),
                        "give one of them other `methods`, another `host`, or merge them",
                    );
                }
            }
            routes.push(route);
            paths.push(path);
        }
    }
    (routes, paths)
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

/// One route at `path`, or `None` when anything in it is wrong.
fn build_route(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: RouteFile,
    server: &ServerSettings,
) -> Option<RouteSettings> {
    let before = report.problems.len();
    check_route_name(report, path, &file.name);
    let key = route_key(report, path, &file, before);
    let (auth, authz) = route_auth(report, path, &file);
    let forward = build_forward(report, path, &file);
    let connection = build_connection(report, path, &file);
    let upgrades = build_upgrades(report, path, &file);
    let health = build_health(report, path, &file);
    let (inject, inject_connection) = match file
        .inject
        .as_ref()
        .and_then(|inject| build_inject(report, &path.key("inject"), inject))
    {
        Some(Injected::Credential(credential)) => (Some(credential), None),
        Some(Injected::Connection(connection)) => (None, Some(connection)),
        None => (None, None),
    };
    if inject_connection.is_some() && auth != AuthMode::Jwt {
        report.problem(
            &path.key("inject").key("connection"),
            "injects the calling user's token, but the route is public: there is no user",
            "set auth = \"jwt\" on this route, or inject a service credential",
        );
    }
    check_credential_placeholder(report, path, &file, inject.is_some());
    let upstream_token = file.upstream_token.as_ref().and_then(|minted| {
        build_upstream_token(
            report,
            &path.key("upstream_token"),
            minted,
            auth == AuthMode::Jwt,
        )
    });
    let rate_limit = file.rate_limit.as_ref().and_then(|limit| {
        build_rate_limit(
            report,
            &path.key("rate_limit"),
            limit,
            auth == AuthMode::Jwt,
        )
    });
    let upstream = build_upstream(report, &path.key("upstream"), file.upstream);
    let timeout = duration(
        report,
        &path.key("timeout"),
        file.timeout.as_deref(),
        server.request_timeout,
    );
    if timeout > server.request_timeout {
        report.problem(
            &path.key("timeout"),
            "is longer than server.request_timeout, which caps every route",
            "shorten the route's timeout or raise server.request_timeout",
        );
    }
    if report.problems.len() != before {
        return None;
    }
    Some(RouteSettings {
        name: file.name,
        key: key?,
        upstream: upstream?,
        strip_prefix: file.strip_prefix.unwrap_or(false),
        timeout,
        auth,
        authz,
        forward,
        inject,
        inject_connection,
        upgrades,
        rate_limit,
        upstream_token,
        connection,
        health,
    })
}

fn check_route_name(report: &mut Report<'_>, path: &KeyPath, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        report.problem(
            &path.key("name"),
            format!("{name:?} is not a valid route name"),
            "use 1-64 characters of letters, digits, '-', '_' and '.'",
        );
    } else if name.starts_with("warden-") {
        report.problem(
            &path.key("name"),
            "names starting with \"warden-\" label the gateway's own endpoints",
            "give the route another name",
        );
    } else if name == crate::metrics::UNMATCHED_ROUTE {
        report.problem(
            &path.key("name"),
            "\"none\" is the route label of unmatched requests",
            "give the route another name",
        );
    }
}

/// What the route matches: host, path prefix and methods. `before` is the
/// route's first problem: an empty `methods` is reported only when nothing
/// before it in the route was wrong, since a bad name or prefix says more.
fn route_key(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &RouteFile,
    before: usize,
) -> Option<RouteKey> {
    let prefix = file.path_prefix.as_str();
    // A prefix must already be in normal form: otherwise it could never match
    // a normalised request path, or would match one the author did not mean.
    let path_prefix = match normalize_path(prefix) {
        Ok(normal) if normal == prefix && prefix.bytes().all(is_path_byte) => {
            let trimmed = prefix.trim_end_matches('/');
            Some(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }
        _ => None,
    };
    if path_prefix.is_none() {
        report.problem(
            &path.key("path_prefix"),
            format!("{prefix:?} is not a normalised absolute path"),
            "start it with '/', without '.' or '..' segments, '//', '?', '#', spaces or escapes of plain characters (write %7E as ~), e.g. \"/orders\"",
        );
    }

    let methods = file.methods.as_ref().map(|list| {
        list.iter()
            .filter_map(|m| {
                parse_method(
                    report,
                    &path.key("methods"),
                    m,
                    "use upper-case method names such as \"GET\" and \"POST\"",
                )
            })
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(Vec::is_empty) && report.problems.len() == before {
        report.problem(
            &path.key("methods"),
            "is empty, so the route could never match",
            "list the methods, or remove the key to take every method",
        );
    }

    let host = file.host.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !valid {
            report.problem(
                &path.key("host"),
                format!("{h:?} is not a host name"),
                "give the bare host name, without scheme or port, e.g. \"api.example.com\"",
            );
        }
    }
    Some(RouteKey {
        host,
        path_prefix: path_prefix?,
        methods,
    })
}

/// An upper-case HTTP method, as `methods` and `method_scopes` list them;
/// the two keys word their `fix` differently.
fn parse_method(report: &mut Report<'_>, path: &KeyPath, text: &str, fix: &str) -> Option<Method> {
    let upper = !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase());
    match Method::from_bytes(text.as_bytes()) {
        Ok(method) if upper => Some(method),
        _ => {
            report.problem(path, format!("{text:?} is not an HTTP method"), fix);
            None
        }
    }
}

/// Whether the route needs a token (`auth`), and what the token must grant:
/// scopes, per-method scopes and required claim values.
fn route_auth(report: &mut Report<'_>, path: &KeyPath, file: &RouteFile) -> (AuthMode, RouteAuthz) {
    const SCOPE_FIX: &str =
        "a scope is one word of printable ASCII, without spaces, quotes or backslashes";
    let auth = match file.auth.as_deref() {
        None | Some("jwt") => AuthMode::Jwt,
        Some("none") => AuthMode::None,
        Some(other) => {
            report.problem(
                &path.key("auth"),
                format!("unknown value {other:?}"),
                "use \"jwt\" (a valid token is required) or \"none\" (a public route)",
            );
            AuthMode::Jwt
        }
    };
    let scopes = file.scopes.clone().unwrap_or_default();
    check_scopes(report, &path.key("scopes"), &scopes, SCOPE_FIX);
    let mut method_scopes = Vec::new();
    for (method, list) in file.method_scopes.iter().flatten() {
        check_scopes(report, &path.key("method_scopes"), list, SCOPE_FIX);
        let fix = "use upper-case method names such as POST";
        if let Some(m) = parse_method(report, &path.key("method_scopes"), method, fix) {
            method_scopes.push((m, list.clone()));
        }
    }
    let require_claims: Vec<(String, Vec<String>)> = file
        .require_claims
        .iter()
        .flatten()
        .map(|(claim, values)| (claim.clone(), values.clone()))
        .collect();
    if require_claims.iter().any(|(_, values)| values.is_empty()) {
        report.problem(
            &path.key("require_claims"),
            "a claim lists no allowed value, so no token could pass",
            "list the allowed values, e.g. { tenant = [\"acme\"] }",
        );
    }
    let has_rules = !scopes.is_empty() || !method_scopes.is_empty() || !require_claims.is_empty();
    if has_rules && auth == AuthMode::None {
        report.problem(
            &path.key("auth"),
            "is \"none\", but the route sets scopes or required claims, which need a token",
            "remove the scopes, or set auth = \"jwt\"",
        );
    }
    let authz = RouteAuthz {
        scopes,
        method_scopes,
        require_claims,
    };
    (auth, authz)
}

/// Claims forwarded to the upstream as headers, and whether the client's
/// `Authorization` goes along.
fn build_forward(report: &mut Report<'_>, path: &KeyPath, file: &RouteFile) -> ForwardSettings {
    let mut claims = Vec::new();
    for (name, claim) in file.forward_claims.iter().flatten() {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if !is_reserved_header(&header) => claims.push((header, claim.clone())),
            Ok(_) => report.problem(
                &path.key("forward_claims"),
                format!("{name:?} is a header the gateway sets itself"),
                "forward the claim in a header of its own, e.g. \"X-User-Id\"",
            ),
            Err(_) => report.problem(
                &path.key("forward_claims"),
                format!("{name:?} is not a header name"),
                "use a header name such as \"X-User-Id\"",
            ),
        }
    }
    ForwardSettings {
        claims,
        authorization: file.forward_authorization.unwrap_or(false),
    }
}

fn is_reserved_header(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "x-execution-key"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    )
}

/// An upstream URL holding `{credential}` needs a credential to put there,
/// and cannot be health-checked without one.
fn check_credential_placeholder(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &RouteFile,
    injects: bool,
) {
    let placeholder = match &file.upstream {
        OneOrMany::One(url) => url.contains(CREDENTIAL_PLACEHOLDER),
        OneOrMany::Many(urls) => urls.iter().any(|u| u.contains(CREDENTIAL_PLACEHOLDER)),
    };
    if placeholder && file.health_path.is_some() {
        report.problem(
            &path.key("health_path"),
            "cannot check an upstream whose URL holds {credential}",
            "remove health_path from this route (passive checks still apply)",
        );
    }
    if placeholder && !injects {
        report.problem(
            &path.key("upstream"),
            "holds {credential}, but the route injects no credential",
            "add inject = { credential = \"...\", path = true }, or remove {credential}",
        );
    }
}

/// `upstream`: the built-in echo, or one or more http(s) URLs.
fn build_upstream(report: &mut Report<'_>, path: &KeyPath, file: OneOrMany) -> Option<Upstream> {
    let list = match file {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    };
    if list.is_empty() {
        report.problem(path, "is an empty list", "give at least one upstream URL");
        return None;
    }
    if list.iter().any(|u| u == "builtin:echo") {
        if list.len() > 1 {
            report.problem(
                path,
                "\"builtin:echo\" cannot be mixed with other upstreams",
                "use either upstream = \"builtin:echo\" or a list of URLs",
            );
            return None;
        }
        return Some(Upstream::Echo);
    }
    let mut targets = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let item_path = if list.len() > 1 {
            path.index(i)
        } else {
            path.clone()
        };
        match parse_upstream_url(text) {
            Ok(uri) => targets.push(uri),
            Err(why) => report.problem(
                &item_path,
                format!("{text:?} is not a usable upstream URL: {why}"),
                "use http://host:port or https://host:port, optionally with a base path, or \"builtin:echo\"",
            ),
        }
    }
    (targets.len() == list.len()).then_some(Upstream::Http(targets))
}

/// Why an upstream URL cannot be used; the text completes
/// "... is not a usable upstream URL: ".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum UpstreamUrlError {
    #[error("it does not parse as a URL")]
    Unparsable,
    #[error("{{credential}} can only be in the path")]
    PlaceholderOutsidePath,
    #[error("the scheme must be http or https")]
    NotHttp,
    #[error("it has no scheme")]
    NoScheme,
    #[error("it has no host")]
    NoHost,
    #[error("credentials in the URL are not allowed: they would reach logs and every target")]
    UserInfo,
    #[error("it has a query string")]
    Query,
}

fn parse_upstream_url(text: &str) -> Result<Uri, UpstreamUrlError> {
    // `{credential}` is kept in its percent-encoded form, which a URI can
    // hold; the proxy puts the credential there.
    let text = text.replace(
        CREDENTIAL_PLACEHOLDER,
        crate::proxy::ENCODED_CREDENTIAL_PLACEHOLDER,
    );
    let uri: Uri = text.parse().map_err(|_| UpstreamUrlError::Unparsable)?;
    if uri.authority().is_some_and(|a| {
        a.as_str()
            .contains(crate::proxy::ENCODED_CREDENTIAL_PLACEHOLDER)
    }) {
        return Err(UpstreamUrlError::PlaceholderOutsidePath);
    }
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(UpstreamUrlError::NotHttp),
        None => return Err(UpstreamUrlError::NoScheme),
    }
    let authority = uri.authority().ok_or(UpstreamUrlError::NoHost)?;
    if authority.host().is_empty() {
        return Err(UpstreamUrlError::NoHost);
    }
    if authority.as_str().contains('@') {
        return Err(UpstreamUrlError::UserInfo);
    }
    if uri.query().is_some() {
        return Err(UpstreamUrlError::Query);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_errors_keep_their_wording() {
        let why = |url: &str| parse_upstream_url(url).map_err(|e| e.to_string());
        assert_eq!(
            why("http://a:8080/base").map(|u| u.to_string()),
            Ok("http://a:8080/base".into())
        );
        assert_eq!(
            why("ftp://a"),
            Err("the scheme must be http or https".into())
        );
        assert_eq!(why("http://a?x=1"), Err("it has a query string".into()));
        assert_eq!(
            why("http://{credential}@a"),
            Err("{credential} can only be in the path".into())
        );
    }

    #[test]
    fn methods_must_be_upper_case_and_not_empty() {
        let mut report = Report::new("test", std::path::Path::new("."), "");
        let path = KeyPath::default().key("methods");
        assert_eq!(
            parse_method(&mut report, &path, "GET", "fix"),
            Some(Method::GET)
        );
        assert_eq!(parse_method(&mut report, &path, "get", "fix"), None);
        assert_eq!(parse_method(&mut report, &path, "", "fix"), None);
        assert_eq!(report.problems.len(), 2);
        assert_eq!(report.problems[0].message, "\"get\" is not an HTTP method");
    }
}
