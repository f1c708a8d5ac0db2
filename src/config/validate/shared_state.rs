//! `[shared_state]` (SPEC §10) and a route's `rate_limit` (SPEC §11): where
//! the state every replica shares lives, and what the routes count in it.

use std::time::Duration;

use super::report::{KeyPath, Report, duration};
use crate::config::file::{RateLimitFile, SharedStateFile};
use crate::rate_limit::{LimitKey, RateLimitSettings};
use crate::shared_state::gcra::Policy;
use crate::shared_state::{Backend, SharedStateSettings};

/// The longest an empty bucket may take to fill again.
const MAX_REFILL: Duration = Duration::from_secs(86_400);

/// The environment variable a Redis URL is read from by default.
const DEFAULT_URL_ENV: &str = "WARDEN_REDIS_URL";

pub(super) fn build_shared_state(
    report: &mut Report<'_>,
    file: SharedStateFile,
) -> SharedStateSettings {
    let base = KeyPath::default().key("shared_state");
    let defaults = SharedStateSettings::default();
    let backend = match file.backend.as_deref().unwrap_or("memory") {
        "memory" => {
            if file.url_env.is_some() {
                report.problem(
                    &base.key("url_env"),
                    "is set, but backend is \"memory\"",
                    "set backend = \"redis\" to share state through Redis, or remove url_env",
                );
            }
            Backend::Memory
        }
        "redis" => {
            let url_env = file.url_env.unwrap_or_else(|| DEFAULT_URL_ENV.into());
            if !is_env_name(&url_env) {
                // Not quoted back: it may be the URL itself, password and all.
                report.problem(
                    &base.key("url_env"),
                    "is not an environment variable name (letters, digits and _)",
                    "name the variable that holds the URL, e.g. url_env = \"WARDEN_REDIS_URL\" (the URL itself, with its password, never goes in the file)",
                );
            }
            Backend::Redis { url_env }
        }
        other => {
            report.problem(
                &base.key("backend"),
                format!("unknown backend {other:?}"),
                "use \"memory\" (this process only) or \"redis\" (shared by every replica)",
            );
            Backend::Memory
        }
    };
    let key_prefix = file.key_prefix.unwrap_or(defaults.key_prefix);
    if key_prefix.len() > 64 || key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
        report.problem(
            &base.key("key_prefix"),
            "must be at most 64 printable ASCII characters without spaces",
            "e.g. key_prefix = \"warden:\"",
        );
    }
    let timeout = duration(
        report,
        &base.key("timeout"),
        file.timeout.as_deref(),
        defaults.timeout,
    );
    if timeout > Duration::from_secs(5) {
        report.problem(
            &base.key("timeout"),
            "is longer than 5s: requests would wait that long on a Redis outage",
            "keep it short, e.g. timeout = \"100ms\"; an unreachable Redis is a degraded mode, not a wait",
        );
    }
    SharedStateSettings {
        backend,
        key_prefix,
        timeout,
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A route's `rate_limit` at `path`; `jwt` tells whether the route verifies
/// tokens (keys taken from the token need it).
pub(super) fn build_rate_limit(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &RateLimitFile,
    jwt: bool,
) -> Option<RateLimitSettings> {
    let before = report.problems.len();
    if file.requests == 0 {
        report.problem(
            &path.key("requests"),
            "must be at least 1",
            "e.g. rate_limit = { requests = 100, per = \"1m\", key = \"sub\" }",
        );
    }
    let per = duration(
        report,
        &path.key("per"),
        Some(&file.per),
        Duration::from_secs(60),
    );
    if per > Duration::from_secs(86_400) {
        report.problem(
            &path.key("per"),
            "is longer than a day",
            "count over at most \"1d\", e.g. per = \"1m\"",
        );
    } else if per.subsec_nanos() != 0 {
        // RateLimit-Policy advertises the window in whole seconds.
        report.problem(
            &path.key("per"),
            "must be a whole number of seconds",
            "e.g. per = \"1s\", \"10s\" or \"1m\" (for 5 a second over 500ms, write requests = 10, per = \"1s\")",
        );
    }
    if u128::from(file.requests) > per.as_micros() {
        report.problem(
            &path.key("requests"),
            "is more than 1,000,000 a second, the finest rate counted",
            "limit to at most 1,000,000 requests a second",
        );
    }
    let burst = file.burst.unwrap_or(0);
    let policy = Policy {
        requests: file.requests.max(1),
        per,
        burst,
    };
    if policy.refill() > MAX_REFILL {
        report.problem(
            &path.key("burst"),
            format!(
                "an empty bucket would take {} to fill again (burst + 1 requests at one per {})",
                humantime::format_duration(Duration::from_secs(policy.refill().as_secs())),
                humantime::format_duration(Duration::from_micros(policy.interval_micros())),
            ),
            "keep (burst + 1) × per / requests within a day: lower burst, or raise requests",
        );
    }
    let key = LimitKey::parse(&file.key);
    match &key {
        None => report.problem(
            &path.key("key"),
            format!("{:?} is not a rate-limit key", file.key),
            "use \"sub\", \"client_ip\", \"claim:NAME\", \"header:NAME\" or \"route\"",
        ),
        Some(key) if key.needs_token() && !jwt => report.problem(
            &path.key("key"),
            format!("{:?} is read from the token, but the route takes none", file.key),
            "use \"client_ip\", \"header:NAME\" or \"route\" on a public route, or set auth = \"jwt\"",
        ),
        Some(_) => {}
    }
    if report.problems.len() != before {
        return None;
    }
    Some(RateLimitSettings { policy, key: key? })
}
