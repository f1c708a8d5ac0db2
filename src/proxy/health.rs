//! Upstream targets and their health.
//!
//! A route's targets are used round-robin, skipping a target that is down:
//! - **passively**, after `max_failures` consecutive connection failures it is
//!   skipped for `cooldown`, then tried again (one success resets it);
//! - **actively**, when the route sets `health_path`, a background task asks
//!   every target for it each `health_interval`; a non-2xx answer or no
//!   answer marks the target down until a check succeeds.
//!
//! When every target is down the request is answered 502 at once, rather
//! than waiting for a connect timeout. `warden_upstream_up{route,target}`
//! is 1 for a target in use, 0 for one that is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Uri};
use prometheus::IntGauge;

/// A route's health rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// The path of the active check; `None` for passive checks only.
    pub path: Option<String>,
    /// How often the active check runs.
    pub interval: Duration,
    /// Consecutive connection failures before a target is skipped.
    pub max_failures: u32,
    /// How long a failing target is skipped.
    pub cooldown: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            path: None,
            interval: Duration::from_secs(10),
            max_failures: 3,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// One upstream target.
#[derive(Debug)]
pub struct Target {
    /// Its base URL.
    pub uri: Uri,
    /// The `Host` header an HTTP/1.1 request to it carries, made once:
    /// the host, and the port unless it is the scheme's default.
    pub host: Option<http::HeaderValue>,
    /// `scheme://host:port`, as the access log and metrics name it.
    pub address: std::sync::Arc<str>,
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`Targets::epoch`] until which it is skipped.
    skipped_until: AtomicU64,
    active_down: AtomicBool,
    up: IntGauge,
}

fn host_header(uri: &Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let text = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    http::HeaderValue::try_from(text).ok()
}

/// A route's targets, in round-robin order.
#[derive(Debug)]
pub struct Targets {
    targets: Vec<Target>,
    next: AtomicUsize,
    settings: HealthSettings,
    epoch: Instant,
}

impl Targets {
    /// The targets of route `route`, with `warden_upstream_up` gauges from `up`.
    pub fn new(
        route: &str,
        uris: &[Uri],
        settings: HealthSettings,
        up: &prometheus::IntGaugeVec,
    ) -> Self {
        let targets = uris
            .iter()
            .map(|uri| {
                let gauge = up.with_label_values(&[route, &target_label(uri)]);
                gauge.set(1);
                Target {
                    uri: uri.clone(),
                    host: host_header(uri),
                    address: target_label(uri).into(),
                    consecutive_failures: AtomicU32::new(0),
                    skipped_until: AtomicU64::new(0),
                    active_down: AtomicBool::new(false),
                    up: gauge,
                }
            })
            .collect();
        Self {
            targets,
            next: AtomicUsize::new(0),
            settings,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn usable(&self, target: &Target, now: u64) -> bool {
        !target.active_down.load(Ordering::Relaxed)
            && target.skipped_until.load(Ordering::Relaxed) <= now
    }

    /// The next usable target, round-robin; `None` when all are down.
    pub fn pick(&self) -> Option<&Target> {
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.targets.len())
            .map(|offset| &self.targets[(start + offset) % self.targets.len()])
            .find(|target| self.usable(target, now))
    }

    /// The target answered: its failure count starts again, and it shows
    /// as up again if it was skipped.
    pub fn succeeded(&self, target: &Target) {
        target.consecutive_failures.store(0, Ordering::Relaxed);
        if target.up.get() == 0 {
            self.refresh_gauge(target);
        }
    }

    /// Connecting to the target failed.
    pub fn failed(&self, target: &Target) {
        let failures = target.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.settings.max_failures {
            let until = self.now_ms()
                + u64::try_from(self.settings.cooldown.as_millis()).unwrap_or(u64::MAX);
            target.skipped_until.store(until, Ordering::Relaxed);
            target.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %target.uri, cooldown_ms = until - self.now_ms(), "upstream target skipped after repeated connection failures");
            target.up.set(0);
        }
    }

    fn refresh_gauge(&self, target: &Target) {
        target.up.set(i64::from(self.usable(target, self.now_ms())));
    }

    /// Runs the active check forever (when the route has one), through the
    /// route's own client: its trust root, TLS name and HTTP version.
    pub async fn check_forever(self: Arc<Self>, client: super::UpstreamClient) {
        let Some(path) = self.settings.path.clone() else {
            return;
        };
        let version = if client.http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        loop {
            for target in &self.targets {
                let base = target.uri.path().trim_end_matches('/');
                let url = format!(
                    "{}://{}{base}{path}",
                    target.uri.scheme_str().unwrap_or("http"),
                    target.uri.authority().map_or("", |a| a.as_str())
                );
                let request = Request::get(url)
                    .version(version)
                    .body(crate::body::empty());
                let healthy = match request {
                    Ok(request) => matches!(
                        tokio::time::timeout(
                            self.settings.interval.min(Duration::from_secs(5)),
                            client.send(&target.uri, request)
                        )
                        .await,
                        Ok(Ok(response)) if response.status().is_success()
                    ),
                    Err(_) => false,
                };
                let was_down = target.active_down.swap(!healthy, Ordering::Relaxed);
                if was_down == healthy {
                    tracing::info!(upstream = %target.uri, healthy, "upstream health check changed");
                }
                self.refresh_gauge(target);
            }
            tokio::time::sleep(self.settings.interval).await;
        }
    }

    /// The `warden_upstream_up` labels of these targets.
    pub fn labels(&self, route: &str) -> Vec<(String, String)> {
        self.targets
            .iter()
            .map(|t| (route.to_owned(), target_label(&t.uri)))
            .collect()
    }
}

/// A target's label: scheme, host and port (never a path, which may hold a
/// `{credential}` placeholder).
fn target_label(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_drops_only_the_default_port() {
        let host = |uri: &'static str| {
            host_header(&Uri::from_static(uri)).map(|v| v.to_str().unwrap_or_default().to_owned())
        };
        assert_eq!(
            host("http://10.0.0.1:9001/v1").as_deref(),
            Some("10.0.0.1:9001")
        );
        assert_eq!(
            host("http://api.internal:80").as_deref(),
            Some("api.internal")
        );
        assert_eq!(
            host("https://api.internal:443/").as_deref(),
            Some("api.internal")
        );
        assert_eq!(
            host("https://api.internal:80").as_deref(),
            Some("api.internal:80")
        );
        assert_eq!(host("http://[::1]:8080").as_deref(), Some("[::1]:8080"));
    }
}
