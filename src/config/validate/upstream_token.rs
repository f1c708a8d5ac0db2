//! A route's `upstream_token` (SPEC §12): the token warden mints for the
//! route's upstream. The rule that needs `[issuer]` (a signing key) is
//! checked in `mod.rs`, which sees both sections.

use std::time::Duration;

use super::report::{KeyPath, Report, duration};
use crate::auth::upstream_token::UpstreamTokenSettings;
use crate::config::file::UpstreamTokenFile;

/// The longest lifetime a minted upstream token may have.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// The route's `upstream_token` at `path`; `jwt` tells whether the route
/// verifies a caller (the token is minted from the caller's claims).
pub(super) fn build_upstream_token(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &UpstreamTokenFile,
    jwt: bool,
) -> Option<UpstreamTokenSettings> {
    let before = report.problems.len();
    if !jwt {
        report.problem(
            path,
            "is minted from the caller's verified token, but the route takes none",
            "set auth = \"jwt\" on the route, or remove upstream_token",
        );
    }
    if file.aud.trim().is_empty() {
        report.problem(
            &path.key("aud"),
            "must name the upstream",
            "e.g. aud = \"orders-service\"",
        );
    }
    let ttl = duration(
        report,
        &path.key("ttl"),
        file.ttl.as_deref(),
        Duration::from_secs(60),
    );
    if ttl > MAX_TTL || ttl < Duration::from_secs(5) {
        report.problem(
            &path.key("ttl"),
            "must be between 5s and 1h",
            "keep tokens for upstreams short-lived, e.g. ttl = \"60s\"",
        );
    }
    const MINTED: &[&str] = &["iss", "aud", "iat", "nbf", "exp", "jti", "txn"];
    let claims = file.claims.clone().unwrap_or_default();
    for claim in &claims {
        if MINTED.contains(&claim.as_str()) {
            report.problem(
                &path.key("claims"),
                format!("{claim:?} is set by warden on every minted token"),
                "list only claims to copy from the caller's token, such as \"sub\", \"scope\" or \"tenant\"",
            );
        }
    }
    let header = match file.header.as_deref() {
        None => http::header::AUTHORIZATION,
        Some(name) => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => header,
            Err(_) => {
                report.problem(
                    &path.key("header"),
                    format!("{name:?} is not a header name"),
                    "use \"Authorization\" (sent as Bearer) or a header such as \"X-Upstream-Token\"",
                );
                http::header::AUTHORIZATION
            }
        },
    };
    if report.problems.len() != before {
        return None;
    }
    Some(UpstreamTokenSettings {
        aud: file.aud.clone(),
        ttl,
        claims,
        header,
        encrypt_to: file.encrypt_to.clone(),
    })
}
