//! How the gateway reaches a route's upstream: the connection (an extra CA,
//! the TLS name, HTTP/2), the health checks, and the upgrades it tunnels.

use super::report::{KeyPath, Report, duration};
use crate::config::file::RouteFile;
use crate::proxy::ConnectionSettings;
use crate::proxy::health::HealthSettings;
use crate::routes::normalize_path;

/// How the gateway connects to the upstream: an extra CA, the TLS name, h2.
pub(super) fn build_connection(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &RouteFile,
) -> ConnectionSettings {
    let connection = ConnectionSettings {
        ca_file: file.ca_file.as_deref().map(|p| report.resolve(p)),
        server_name: file.server_name.clone(),
        http2: file.upstream_http2.unwrap_or(false),
    };
    if let Some(ca) = &connection.ca_file
        && let Err(why) = crate::http_client::ca_certificates(ca)
    {
        report.problem(
            &path.key("ca_file"),
            why.to_string(),
            "give the PEM file of the upstream's CA",
        );
    }
    if let Some(name) = &connection.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        report.problem(
            &path.key("server_name"),
            format!("{name:?} is not a DNS name or IP address"),
            "give the name in the upstream's certificate",
        );
    }
    connection
}

/// Active health checks (`health_path`) and when a failing target is left
/// out (`max_failures`, `cooldown`).
pub(super) fn build_health(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &RouteFile,
) -> HealthSettings {
    let health = HealthSettings {
        path: file.health_path.clone(),
        interval: duration(
            report,
            &path.key("health_interval"),
            file.health_interval.as_deref(),
            std::time::Duration::from_secs(10),
        ),
        max_failures: file.max_failures.unwrap_or(3),
        cooldown: duration(
            report,
            &path.key("cooldown"),
            file.cooldown.as_deref(),
            std::time::Duration::from_secs(10),
        ),
    };
    report.require_positive(
        &path.key("max_failures"),
        u64::from(health.max_failures),
        "use e.g. 3",
    );
    if let Some(p) = &health.path
        && (!p.starts_with('/') || normalize_path(p).is_err())
    {
        report.problem(
            &path.key("health_path"),
            format!("{p:?} is not an absolute path"),
            "e.g. health_path = \"/healthz\"",
        );
    }
    health
}

/// `upgrades`: the protocol names (RFC 9110 §7.8 tokens) a client may
/// upgrade to on the route; `["websocket"]` when not given. An HTTP/2
/// upstream cannot take an HTTP/1.1 upgrade.
pub(super) fn build_upgrades(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &RouteFile,
) -> std::sync::Arc<[String]> {
    let Some(list) = &file.upgrades else {
        return if file.upstream_http2 == Some(true) {
            std::sync::Arc::from([])
        } else {
            std::sync::Arc::from(["websocket".to_owned()])
        };
    };
    let token = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    for protocol in list {
        if !token(protocol) {
            report.problem(
                &path.key("upgrades"),
                format!("{protocol:?} is not a protocol name"),
                "list protocol names such as \"websocket\"",
            );
        }
    }
    if !list.is_empty() && file.upstream_http2 == Some(true) {
        report.problem(
            &path.key("upgrades"),
            "an HTTP/2 upstream cannot take an HTTP/1.1 upgrade",
            "remove upgrades, or set upstream_http2 = false for this route",
        );
    }
    list.iter().map(|p| p.to_ascii_lowercase()).collect()
}
