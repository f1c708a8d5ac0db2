//! `[server]` (with `[server.tls]`), `[log]` and `[audit]`: how the gateway
//! listens, logs and records token use. None of them depends on another
//! section, so a new key of one of them only touches its `build_*` function
//! (and `file.rs`).

use std::net::SocketAddr;

use super::report::{KeyPath, Report, duration};
use crate::audit::{AuditSettings, AuditSink, OnFailure};
use crate::config::ServerSettings;
use crate::config::file::{AuditFile, LogFile, ServerFile};
use crate::telemetry::{LogFormat, LogSettings};

pub(super) fn build_server(report: &mut Report<'_>, file: ServerFile) -> ServerSettings {
    let base = KeyPath::default().key("server");
    let defaults = ServerSettings::default();
    let listen = socket_addr(
        report,
        &base.key("listen"),
        file.listen.as_deref(),
        "127.0.0.1:8080",
    );
    let admin_listen = socket_addr(
        report,
        &base.key("admin_listen"),
        file.admin_listen.as_deref(),
        "127.0.0.1:9090",
    );
    let same_ip = listen.ip() == admin_listen.ip()
        || listen.ip().is_unspecified()
        || admin_listen.ip().is_unspecified();
    if same_ip && listen.port() == admin_listen.port() && listen.port() != 0 {
        report.problem(
            &base.key("admin_listen"),
            format!("{admin_listen} overlaps server.listen ({listen})"),
            "give the admin listener its own port, e.g. admin_listen = \"127.0.0.1:9090\"",
        );
    }
    let request_timeout = duration(
        report,
        &base.key("request_timeout"),
        file.request_timeout.as_deref(),
        defaults.request_timeout,
    );
    let max_header_bytes = file
        .max_header_bytes
        .unwrap_or(defaults.max_header_bytes as u64);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        report.problem(
            &base.key("max_header_bytes"),
            format!("{max_header_bytes} is outside 1024..=1048576"),
            "use a value such as 16384",
        );
    }
    let max_body_bytes = file.max_body_bytes.unwrap_or(defaults.max_body_bytes);
    report.require_positive(
        &base.key("max_body_bytes"),
        max_body_bytes,
        "use a value such as 10485760 (10 MiB)",
    );
    let max_connections = file.max_connections.unwrap_or(10_000);
    report.require_positive(
        &base.key("max_connections"),
        u64::from(max_connections),
        "use e.g. 10000",
    );
    let max_concurrent_streams = file.max_concurrent_streams.unwrap_or(128);
    report.require_positive(
        &base.key("max_concurrent_streams"),
        u64::from(max_concurrent_streams),
        "use e.g. 128",
    );
    let workers = match file.workers {
        None => defaults.workers,
        Some(n) if (1..=MAX_WORKERS).contains(&n) => n as usize,
        Some(n) => {
            report.problem(
                &base.key("workers"),
                format!("{n} is outside 1..={MAX_WORKERS}"),
                "use the number of cores to serve on, e.g. workers = 2, or leave it out for one per core",
            );
            defaults.workers
        }
    };
    let tls = file.tls.and_then(|tls| {
        let cert_file = report.resolve(&tls.cert_file);
        let key_file = report.resolve(&tls.key_file);
        let client_ca_file = tls.client_ca_file.as_deref().map(|p| report.resolve(p));
        match crate::tls::server_config(&cert_file, &key_file, client_ca_file.as_deref()) {
            Ok(config) => Some(crate::tls::TlsSettings {
                cert_file,
                key_file,
                client_ca_file,
                config,
            }),
            Err(why) => {
                report.problem(
                    &base.key("tls"),
                    why.to_string(),
                    "give a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1)",
                );
                None
            }
        }
    });
    ServerSettings {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_concurrent_streams,
        workers,
        tls,
        listen,
        admin_listen,
        shutdown_grace: duration(
            report,
            &base.key("shutdown_grace"),
            file.shutdown_grace.as_deref(),
            defaults.shutdown_grace,
        ),
        request_timeout,
        header_read_timeout: duration(
            report,
            &base.key("header_read_timeout"),
            file.header_read_timeout.as_deref(),
            defaults.header_read_timeout,
        ),
        idle_timeout: duration(
            report,
            &base.key("idle_timeout"),
            file.idle_timeout.as_deref(),
            defaults.idle_timeout,
        ),
        connect_timeout: duration(
            report,
            &base.key("connect_timeout"),
            file.connect_timeout.as_deref(),
            defaults.connect_timeout,
        ),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_body_bytes,
        trust_execution_key_header: file.trust_execution_key_header.unwrap_or(false),
        trusted_proxies: trusted_proxies(report, &base, file.trusted_proxies.as_deref()),
        tunnels: crate::proxy::tunnel::TunnelLimits {
            idle_timeout: duration(
                report,
                &base.key("tunnel_idle_timeout"),
                file.tunnel_idle_timeout.as_deref(),
                defaults.tunnels.idle_timeout,
            ),
            max_duration: duration(
                report,
                &base.key("tunnel_max_duration"),
                file.tunnel_max_duration.as_deref(),
                defaults.tunnels.max_duration,
            ),
            max_open: usize::try_from(max_connections).unwrap_or(usize::MAX),
        },
    }
}

/// More serving threads than this is a typo, not a machine.
const MAX_WORKERS: u32 = 1024;

fn socket_addr(
    report: &mut Report<'_>,
    path: &KeyPath,
    value: Option<&str>,
    default: &str,
) -> SocketAddr {
    let text = value.unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        report.problem(
            path,
            format!("{text:?} is not an IP address and port"),
            "write it as \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)",
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

pub(super) fn build_log(report: &mut Report<'_>, file: LogFile) -> LogSettings {
    let base = KeyPath::default().key("log");
    let level = file.level.unwrap_or_else(|| "info".into());
    if !is_log_filter(&level) {
        report.problem(
            &base.key("level"),
            format!("{level:?} is not a log level or filter"),
            "use one of \"error\", \"warn\", \"info\", \"debug\", \"trace\" (or a filter like \"info,warden=debug\")",
        );
    }
    let format = match file.format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        Some(other) => {
            report.problem(
                &base.key("format"),
                format!("unknown value {other:?}"),
                "use \"json\" (one JSON object a line) or \"pretty\" (for humans)",
            );
            LogFormat::Json
        }
    };
    let otlp = file.otlp_endpoint.map(|endpoint| {
        let at = base.key("otlp_endpoint");
        if crate::credentials::check_token_url(&endpoint).is_err()
            && !endpoint.starts_with("http://")
        {
            report.problem(
                &at,
                format!("{endpoint:?} is not an http:// or https:// URL"),
                "give the collector's OTLP/HTTP address, e.g. \"http://otel-collector:4318\"",
            );
        } else if endpoint
            .parse::<http::Uri>()
            .map_or(true, |u| u.host().is_none())
        {
            report.problem(
                &at,
                "is not a URL with a host",
                "e.g. \"http://otel-collector:4318\"",
            );
        }
        // The collector's base address gets the traces path, as the
        // OTEL_EXPORTER_OTLP_ENDPOINT convention has it.
        let base_url = endpoint.trim_end_matches('/');
        let traces_url = if base_url.ends_with("/v1/traces") {
            base_url.to_owned()
        } else {
            format!("{base_url}/v1/traces")
        };
        crate::trace::OtlpSettings {
            traces_url,
            service_name: file
                .otlp_service_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "warden".into()),
        }
    });
    if otlp.is_none() && file.otlp_service_name.is_some() {
        report.problem(
            &base.key("otlp_service_name"),
            "is set, but otlp_endpoint is not: nothing is exported",
            "add otlp_endpoint, or remove otlp_service_name",
        );
    }
    LogSettings {
        level,
        format,
        otlp,
    }
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A level, or an `EnvFilter` whose every directive ends in a level: a bare
/// word that is not a level (`"warning"`) would silently filter everything.
fn is_log_filter(filter: &str) -> bool {
    let level_ok = |level: &str| LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str());
    !filter.trim().is_empty()
        && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
        && filter
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level.trim()),
                None => level_ok(directive.trim()),
            })
}

pub(super) fn build_audit(report: &mut Report<'_>, file: AuditFile) -> AuditSettings {
    let base = KeyPath::default().key("audit");
    let sink = match (file.sink.as_deref(), file.path) {
        (None | Some("stdout"), None) => AuditSink::Stdout,
        (Some("file"), Some(path)) => AuditSink::File(report.resolve(&path)),
        (Some("file"), None) => {
            report.problem(
                &base.key("path"),
                "is required with sink = \"file\"",
                "set path = \"audit.log\"",
            );
            AuditSink::Stdout
        }
        (None | Some("stdout"), Some(_)) => {
            report.problem(
                &base.key("path"),
                "is only used with sink = \"file\"",
                "set sink = \"file\", or remove path",
            );
            AuditSink::Stdout
        }
        (Some(other), _) => {
            report.problem(
                &base.key("sink"),
                format!("unknown value {other:?}"),
                "use \"stdout\" or \"file\"",
            );
            AuditSink::Stdout
        }
    };
    let on_failure = match file.on_failure.as_deref() {
        None | Some("drop") => OnFailure::Drop,
        Some("refuse") => OnFailure::Refuse,
        Some(other) => {
            report.problem(
                &base.key("on_failure"),
                format!("unknown value {other:?}"),
                "use \"drop\" (keep serving while audit events are lost) or \"refuse\" (503 to requests with a token until events can be written)",
            );
            OnFailure::Drop
        }
    };
    AuditSettings { sink, on_failure }
}

/// `trusted_proxies`: addresses or CIDR blocks (`10.0.0.0/8`, `::1`).
fn trusted_proxies(
    report: &mut Report<'_>,
    base: &KeyPath,
    entries: Option<&[String]>,
) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for entry in entries.unwrap_or_default() {
        let parsed = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) if net.prefix_len() == 0 => report.problem(
                &base.key("trusted_proxies"),
                format!("{entry:?} trusts every address"),
                "list only your load balancers' addresses: with every peer trusted, any client can choose its own address",
            ),
            Ok(net) => nets.push(net.trunc()),
            Err(_) => report.problem(
                &base.key("trusted_proxies"),
                format!("{entry:?} is not an IP address or a CIDR block"),
                "e.g. trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.10\"]",
            ),
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use crate::audit::OnFailure;
    use crate::config::Config;

    fn audit(body: &str) -> Result<OnFailure, Vec<String>> {
        let text = format!(
            "[audit]\n{body}\n[[routes]]\nname = \"echo\"\npath_prefix = \"/\"\nupstream = \"builtin:echo\"\nauth = \"none\"\n"
        );
        Config::from_toml(&text, "gw.toml")
            .map(|config| config.audit.on_failure)
            .map_err(|err| err.problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn on_failure_is_drop_by_default_and_refuse_when_asked() {
        assert_eq!(audit(""), Ok(OnFailure::Drop));
        assert_eq!(audit("on_failure = \"drop\""), Ok(OnFailure::Drop));
        assert_eq!(audit("on_failure = \"refuse\""), Ok(OnFailure::Refuse));
    }

    #[test]
    fn an_unknown_on_failure_is_located_and_says_the_values() {
        let found = audit("sink = \"stdout\"\non_failure = \"block\"")
            .err()
            .unwrap_or_default();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("gw.toml:3:14: audit.on_failure: unknown value \"block\""),
            "{}",
            found[0]
        );
        assert!(found[0].contains("fix: use \"drop\""), "{}", found[0]);
        assert!(found[0].contains("or \"refuse\""), "{}", found[0]);
    }
}
