//! Prometheus metrics, registered into a [`Registry`] handed in at start-up
//! (no global statics), with bounded labels only: route names from the
//! config (`none` for unmatched requests), methods, status codes.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The gateway's metric families, shared: cloning is one reference count,
/// so request paths can hold them cheaply.
#[derive(Clone, Debug)]
pub struct Metrics(std::sync::Arc<MetricFamilies>);

impl std::ops::Deref for Metrics {
    type Target = MetricFamilies;

    fn deref(&self) -> &MetricFamilies {
        &self.0
    }
}

/// The metric families themselves.
#[derive(Debug)]
pub struct MetricFamilies {
    registry: Registry,
    requests_total: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    /// Requests being handled now.
    pub in_flight: IntGauge,
    /// `warden_auth_decisions_total{route,decision,reason}`.
    pub auth_decisions: IntCounterVec,
    /// `warden_token_cache_requests_total{result}`.
    pub token_cache_requests: IntCounterVec,
    /// `warden_jwks_refresh_total{issuer,result}`.
    pub jwks_refresh: IntCounterVec,
    /// `warden_tokens_issued_total{method}`.
    pub tokens_issued: IntCounterVec,
    /// `warden_login_failures_total{reason}`.
    pub login_failures: IntCounterVec,
    /// `warden_audit_events_dropped_total`.
    pub audit_dropped: prometheus::IntCounter,
    /// `warden_credential_refresh_total{credential,result}`.
    pub credential_refresh: IntCounterVec,
    /// `warden_connection_refresh_total{connection,result}`.
    pub connection_refresh: IntCounterVec,
    /// `warden_tunnels_active`.
    pub tunnels_active: IntGauge,
    /// `warden_tunnels_total{route,end}`.
    pub tunnels_total: IntCounterVec,
    /// `warden_upstream_up{route,target}`.
    pub upstream_up: prometheus::IntGaugeVec,
    /// `warden_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `warden_shared_state_up`.
    pub shared_state_up: IntGauge,
    /// `warden_shared_state_errors_total{operation}`.
    pub shared_state_errors: IntCounterVec,
    /// `warden_rate_limited_total{route}`.
    pub rate_limited: IntCounterVec,
    /// `warden_upstream_tokens_minted_total{route}`.
    pub upstream_tokens_minted: IntCounterVec,
}

/// The `route` label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "none";

impl Metrics {
    /// Registers every family (and the process collector) into `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let requests_total = IntCounterVec::new(
            Opts::new(
                "warden_requests_total",
                "Requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "warden_request_duration_seconds",
                "Time from request to the end of the response body, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "warden_upstream_duration_seconds",
                "Time from sending a request upstream to its response head, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let in_flight = IntGauge::new("warden_in_flight_requests", "Requests being handled now.")?;
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "warden_auth_decisions_total",
                "Token checks on jwt routes, by route, decision (allow/deny) and reason.",
            ),
            &["route", "decision", "reason"],
        )?;
        let token_cache_requests = IntCounterVec::new(
            Opts::new(
                "warden_token_cache_requests_total",
                "Lookups in the verified-token cache, by result (hit/miss).",
            ),
            &["result"],
        )?;
        let jwks_refresh = IntCounterVec::new(
            Opts::new(
                "warden_jwks_refresh_total",
                "JWKS fetches of trusted issuers, by issuer and result (ok/error).",
            ),
            &["issuer", "result"],
        )?;
        let tokens_issued = IntCounterVec::new(
            Opts::new(
                "warden_tokens_issued_total",
                "Tokens issued by the login route, by method.",
            ),
            &["method"],
        )?;
        let login_failures = IntCounterVec::new(
            Opts::new("warden_login_failures_total", "Failed logins, by reason."),
            &["reason"],
        )?;
        let audit_dropped = prometheus::IntCounter::new(
            "warden_audit_events_dropped_total",
            "Audit events dropped because the audit writer fell behind.",
        )?;
        let credential_refresh = IntCounterVec::new(
            Opts::new(
                "warden_credential_refresh_total",
                "OAuth2 access-token requests for upstream credentials, by credential and result.",
            ),
            &["credential", "result"],
        )?;
        registry.register(Box::new(credential_refresh.clone()))?;
        let connection_refresh = IntCounterVec::new(
            Opts::new(
                "warden_connection_refresh_total",
                "Refreshes of users' OAuth connection tokens, by connection and result (ok/refused/error).",
            ),
            &["connection", "result"],
        )?;
        registry.register(Box::new(connection_refresh.clone()))?;
        let tunnels_active = IntGauge::new(
            "warden_tunnels_active",
            "Upgraded connections (WebSocket tunnels) open now.",
        )?;
        registry.register(Box::new(tunnels_active.clone()))?;
        let tunnels_total = IntCounterVec::new(
            Opts::new(
                "warden_tunnels_total",
                "Upgraded connections (WebSocket tunnels) that ended, by route and how (closed, idle, max_duration, shutdown, error).",
            ),
            &["route", "end"],
        )?;
        registry.register(Box::new(tunnels_total.clone()))?;
        let upstream_up = prometheus::IntGaugeVec::new(
            Opts::new(
                "warden_upstream_up",
                "1 while an upstream target is used, 0 while it is skipped as down.",
            ),
            &["route", "target"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "warden_config_reloads_total",
                "Config reloads, by result (ok/error).",
            ),
            &["result"],
        )?;
        let shared_state_up = IntGauge::new(
            "warden_shared_state_up",
            "1 while the shared state (Redis, or this process's memory) answers, 0 during an outage.",
        )?;
        let shared_state_errors = IntCounterVec::new(
            Opts::new(
                "warden_shared_state_errors_total",
                "Shared-state (Redis) operations that failed or timed out, by operation.",
            ),
            &["operation"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "warden_rate_limited_total",
                "Requests refused with 429 by a route's rate limit, by route.",
            ),
            &["route"],
        )?;
        let upstream_tokens_minted = IntCounterVec::new(
            Opts::new(
                "warden_upstream_tokens_minted_total",
                "Tokens signed for upstreams (upstream_token), by route; reused ones are not counted.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(upstream_tokens_minted.clone()))?;
        registry.register(Box::new(shared_state_up.clone()))?;
        registry.register(Box::new(shared_state_errors.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(upstream_up.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(login_failures.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        registry.register(Box::new(auth_decisions.clone()))?;
        registry.register(Box::new(token_cache_requests.clone()))?;
        registry.register(Box::new(jwks_refresh.clone()))?;
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self(std::sync::Arc::new(MetricFamilies {
            registry,
            requests_total,
            request_duration,
            upstream_duration,
            in_flight,
            auth_decisions,
            token_cache_requests,
            jwks_refresh,
            tokens_issued,
            login_failures,
            audit_dropped,
            credential_refresh,
            connection_refresh,
            tunnels_active,
            tunnels_total,
            upstream_up,
            config_reloads,
            shared_state_up,
            shared_state_errors,
            rate_limited,
            upstream_tokens_minted,
        })))
    }

    /// The registry, for other modules' families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handles for one route, resolved once when the route stack is built.
    pub fn for_route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            upstream_duration: Some(self.upstream_duration.with_label_values(&[route])),
            ..self.for_endpoint(route)
        }
    }

    /// Handles for a route or endpoint that never calls an upstream (the
    /// login, revocation and JWKS endpoints, `builtin:echo`): no
    /// `warden_upstream_duration_seconds` series, which would stay empty.
    pub fn for_endpoint(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            request_duration: self.request_duration.with_label_values(&[route]),
            upstream_duration: None,
            requests: Arc::new(RequestCounters {
                route: route.into(),
                family: self.requests_total.clone(),
                handles: [const { OnceLock::new() }; METHOD_LABELS],
            }),
        }
    }

    /// Counts one answered request.
    pub fn count_request(&self, route: &str, method: &http::Method, status: http::StatusCode) {
        self.requests_total
            .with_label_values(&[route, method_label(method).1, status.as_str()])
            .inc();
    }

    /// The text exposition format (0.0.4) of every registered family.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a failure would be a bug in
        // a collector, and an empty scrape says so loudly enough.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

/// `warden_requests_total{route,method,status}` of one route. The handle of a
/// (method, status) pair is resolved at its first use and kept, so counting
/// a request with a common status does not hash its labels.
#[derive(Debug)]
pub struct RequestCounters {
    route: Box<str>,
    family: IntCounterVec,
    /// Per method label, the handles of the common statuses, allocated at
    /// the first request with that method: a route costs 160 bytes here,
    /// plus about 300 per method it is used with.
    handles: [OnceLock<StatusHandles>; METHOD_LABELS],
}

type StatusHandles = Box<[OnceLock<IntCounter>; COMMON_STATUSES.len()]>;

/// The statuses whose handles are kept; others are looked up each time.
const COMMON_STATUSES: [u16; 18] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 413, 429, 500, 502, 503, 504,
];

impl RequestCounters {
    /// Counts one answered request.
    pub fn count(&self, method: &http::Method, status: http::StatusCode) {
        let (method_index, method) = method_label(method);
        let status_index = COMMON_STATUSES.iter().position(|&s| s == status.as_u16());
        let counter = match (status_index, self.handles.get(method_index)) {
            (Some(status_index), Some(by_status)) => {
                let handles = by_status.get_or_init(|| Box::new([const { OnceLock::new() }; _]));
                handles[status_index].get_or_init(|| self.resolve(method, status))
            }
            _ => &self.resolve(method, status),
        };
        counter.inc();
    }

    fn resolve(&self, method: &str, status: http::StatusCode) -> IntCounter {
        self.family
            .with_label_values(&[&*self.route, method, status.as_str()])
    }
}

/// Per-route metric handles.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// `warden_requests_total{route,...}`.
    pub requests: Arc<RequestCounters>,
    /// `warden_request_duration_seconds{route}`.
    pub request_duration: Histogram,
    /// `warden_upstream_duration_seconds{route}`; `None` where no upstream
    /// can ever be called.
    pub upstream_duration: Option<Histogram>,
}

/// Methods outside the standard set share one label value, so a client
/// cannot grow the label set.
fn method_label(method: &http::Method) -> (usize, &'static str) {
    match *method {
        http::Method::GET => (0, "GET"),
        http::Method::POST => (1, "POST"),
        http::Method::PUT => (2, "PUT"),
        http::Method::DELETE => (3, "DELETE"),
        http::Method::PATCH => (4, "PATCH"),
        http::Method::HEAD => (5, "HEAD"),
        http::Method::OPTIONS => (6, "OPTIONS"),
        http::Method::CONNECT => (7, "CONNECT"),
        http::Method::TRACE => (8, "TRACE"),
        _ => (9, "other"),
    }
}

/// How many values the `method` label takes.
const METHOD_LABELS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};

    #[test]
    fn route_counters_count_common_and_rare_statuses_under_the_right_labels() {
        let metrics = Metrics::new(Registry::new()).expect("metrics");
        let route = metrics.for_route("orders");
        route.requests.count(&Method::GET, StatusCode::OK);
        route.requests.count(&Method::GET, StatusCode::OK);
        route.requests.count(&Method::POST, StatusCode::CREATED);
        route.requests.count(&Method::GET, StatusCode::IM_A_TEAPOT);
        let extension = Method::from_bytes(b"PURGE").expect("a method");
        route.requests.count(&extension, StatusCode::OK);
        let value = |method: &str, status: &str| {
            metrics
                .requests_total
                .with_label_values(&["orders", method, status])
                .get()
        };
        assert_eq!(value("GET", "200"), 2);
        assert_eq!(value("POST", "201"), 1);
        assert_eq!(value("GET", "418"), 1);
        assert_eq!(value("other", "200"), 1);
        assert_eq!(value("POST", "200"), 0);
    }
}
