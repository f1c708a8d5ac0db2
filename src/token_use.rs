//! The observers of auth: `token_use` audit events and
//! `warden_auth_decisions_total`, written from the [`AuthOutcome`] that auth
//! leaves on a response.
//!
//! [`TokenUseLayer`] sits just outside the JWT layer on every jwt route (and
//! in front of the built-in endpoints, where revocation leaves an outcome):
//! it notes what the audit needs of the request before it moves on, and when
//! the response comes back with an [`AuthOutcome`], counts the decision and
//! writes one `token_use` event for every request that presented a token,
//! accepted or not, and leaves the token's `sub` ([`TokenSubject`]) for the
//! access log when its signature verified. [`TokenUse`] is the one builder of that event; the admin
//! listener, which has no route stack, writes it directly.
//!
//! With `[audit] on_failure = "refuse"`, while the audit log cannot be
//! written ([`AuditLog::is_healthy`]), a request that presents a token is
//! answered here, before auth: 503 `audit_unavailable` with the execution
//! key, so no token is checked or used without a record. Its own
//! `token_use` event (`reason = "audit_unavailable"`) is still sent: it is
//! the write that finds the sink working again. Requests without a token
//! pass untouched.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, Uri};
use prometheus::{IntCounter, IntCounterVec};
use tower::{Layer, Service};

use crate::access_log::TokenSubject;
use crate::audit::{AuditLog, OnFailure};
use crate::auth::{AuthOutcome, Principal, Reason, bearer_token};
use crate::body::Body;
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;
use crate::extensions::ConnectInfo;
use crate::metrics::Metrics;

/// What the `token_use` audit event says about one request.
#[derive(Debug)]
pub struct TokenUse<'a> {
    /// The route (or endpoint) label.
    pub route: &'a str,
    /// The request's method.
    pub method: &'a http::Method,
    /// The request's path, without the query (which may carry secrets).
    pub path: &'a str,
    /// The client's address, when known.
    pub client_ip: Option<std::net::IpAddr>,
    /// The verified claims, when the signature verified.
    pub principal: Option<&'a Principal>,
    /// The status answered.
    pub status: StatusCode,
    /// Why it was denied; `None` when allowed.
    pub denied: Option<Refusal>,
    /// When the request reached the auth decision.
    pub started: Instant,
}

impl TokenUse<'_> {
    /// Writes the `token_use` audit event: for every request that presented
    /// a token, accepted or not, on any route or endpoint.
    pub fn audit(&self, audit: &AuditLog, key: Option<&ExecutionKey>) {
        /// The event's fields, borrowed: serialized without building a map.
        #[derive(serde::Serialize)]
        struct Event<'a> {
            #[serde(serialize_with = "crate::audit::as_text")]
            ts: humantime::Rfc3339Timestamp,
            event: &'static str,
            execution_key: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            trace_id: Option<&'a str>,
            jti: Option<&'a str>,
            sub: Option<&'a str>,
            iss: Option<&'a str>,
            scope: Option<SpaceSeparated<'a>>,
            route: &'a str,
            method: &'a str,
            path: &'a str,
            status: u16,
            decision: &'static str,
            reason: &'static str,
            client_ip: Option<std::net::IpAddr>,
            latency_ms: f64,
            /// Present (true) only for a token that came encrypted.
            #[serde(skip_serializing_if = "Option::is_none")]
            jwe: Option<bool>,
            /// The kid of the key that decrypted it.
            #[serde(skip_serializing_if = "Option::is_none")]
            jwe_kid: Option<&'a str>,
        }
        let principal = self.principal;
        audit.send(&Event {
            ts: crate::audit::now_rfc3339(),
            event: "token_use",
            execution_key: key.map(ExecutionKey::as_str),
            trace_id: key.and_then(ExecutionKey::trace_id),
            jti: principal.and_then(|p| p.jti.as_deref()),
            sub: principal.and_then(|p| p.sub.as_deref()),
            iss: principal.map(|p| p.iss.as_str()),
            scope: principal.map(|p| SpaceSeparated(&p.scopes)),
            route: self.route,
            method: self.method.as_str(),
            path: self.path,
            status: self.status.as_u16(),
            decision: if self.denied.is_some() {
                "deny"
            } else {
                "allow"
            },
            reason: self.denied.map_or("ok", Refusal::as_str),
            client_ip: self.client_ip,
            latency_ms: crate::access_log::millis(self.started.elapsed()),
            jwe: principal
                .and_then(|p| p.decrypted_with.as_ref())
                .map(|_| true),
            jwe_kid: principal.and_then(|p| p.decrypted_with.as_deref()),
        });
    }
}

/// Why a token use was denied: by auth, or because it could not be audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Auth refused the token.
    Auth(Reason),
    /// `[audit] on_failure = "refuse"` while the audit log cannot be written.
    AuditUnavailable,
}

impl Refusal {
    /// The stable reason code, in metrics and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Auth(reason) => reason.as_str(),
            Refusal::AuditUnavailable => "audit_unavailable",
        }
    }
}

impl From<Reason> for Refusal {
    fn from(reason: Reason) -> Self {
        Refusal::Auth(reason)
    }
}

/// Whether a request with `headers` must be refused unaudited: the policy
/// is refuse, the audit log is failing, and the request presents a token
/// (a bearer token, or something in `Authorization` that auth would judge;
/// exactly the requests that get a `token_use` event).
pub fn refuse_unaudited(
    on_failure: OnFailure,
    audit: &AuditLog,
    headers: &http::HeaderMap,
) -> bool {
    on_failure == OnFailure::Refuse
        && !audit.is_healthy()
        && !matches!(bearer_token(headers), Err(r) if r.reason == Reason::MissingToken)
}

/// The answer to a request refused by [`refuse_unaudited`].
pub fn audit_unavailable(key: Option<&ExecutionKey>) -> Response<Body> {
    GatewayError::new(
        ErrorCode::AuditUnavailable,
        "the audit log cannot be written; requests with a token are refused until it can",
    )
    .into_response(key)
}

/// Scopes as one space-separated string (RFC 6749 §3.3), written straight
/// into the event without an intermediate `String`.
struct SpaceSeparated<'a>(&'a [String]);

impl std::fmt::Display for SpaceSeparated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
        }
        Ok(())
    }
}

impl serde::Serialize for SpaceSeparated<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `warden_auth_decisions_total` of one route.
#[derive(Clone, Debug)]
struct DecisionCounters {
    family: IntCounterVec,
    /// `{route,"allow","ok"}`, resolved once: the common case costs no
    /// label lookup.
    allowed: IntCounter,
}

/// Audits token use (and counts auth decisions) from the response's [`AuthOutcome`].
#[derive(Clone, Debug)]
pub struct TokenUseLayer {
    inner: Arc<Observer>,
}

#[derive(Debug)]
struct Observer {
    route: Arc<str>,
    audit: AuditLog,
    on_failure: OnFailure,
    decisions: Option<DecisionCounters>,
}

impl TokenUseLayer {
    /// For a jwt route: audits and counts its decisions.
    pub fn for_route(
        route: &str,
        metrics: &Metrics,
        audit: AuditLog,
        on_failure: OnFailure,
    ) -> Self {
        let decisions = DecisionCounters {
            family: metrics.auth_decisions.clone(),
            allowed: metrics
                .auth_decisions
                .with_label_values(&[route, "allow", "ok"]),
        };
        Self::new(route, audit, on_failure, Some(decisions))
    }

    /// For a built-in endpoint: audits only (its decisions are not the
    /// routes' auth decisions).
    pub fn for_endpoint(route: &str, audit: AuditLog, on_failure: OnFailure) -> Self {
        Self::new(route, audit, on_failure, None)
    }

    fn new(
        route: &str,
        audit: AuditLog,
        on_failure: OnFailure,
        decisions: Option<DecisionCounters>,
    ) -> Self {
        Self {
            inner: Arc::new(Observer {
                route: route.into(),
                audit,
                on_failure,
                decisions,
            }),
        }
    }
}

impl<S> Layer<S> for TokenUseLayer {
    type Service = TokenUseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenUseService {
            inner,
            observer: self.inner.clone(),
        }
    }
}

/// The service made by [`TokenUseLayer`].
#[derive(Clone, Debug)]
pub struct TokenUseService<S> {
    inner: S,
    observer: Arc<Observer>,
}

/// What the event needs of the request, kept before the request moves on.
struct RequestFacts {
    started: Instant,
    key: Option<ExecutionKey>,
    method: Method,
    /// A clone of the URI shares its buffer: no copy of the path.
    uri: Uri,
    client_ip: Option<IpAddr>,
}

impl<S> Service<Request<Body>> for TokenUseService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TokenUseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let facts = RequestFacts {
            started: Instant::now(),
            key: request.extensions().get::<ExecutionKey>().cloned(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            client_ip: request.extensions().get::<ConnectInfo>().map(|c| c.client),
        };
        let observer = self.observer.clone();
        if refuse_unaudited(observer.on_failure, &observer.audit, request.headers()) {
            // Answered before auth: the token is neither checked nor used.
            let response = audit_unavailable(facts.key.as_ref());
            observer.record_refusal(&facts, response.status());
            return TokenUseFuture {
                state: State::Refused {
                    response: Some(response),
                },
                facts: None,
                observer,
            };
        }
        TokenUseFuture {
            state: State::Inner {
                future: self.inner.call(request),
            },
            facts: Some(facts),
            observer,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response, observed when it arrives (or the refusal).
    pub struct TokenUseFuture<F> {
        #[pin]
        state: State<F>,
        facts: Option<RequestFacts>,
        observer: Arc<Observer>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// The inner service is answering.
        Inner { #[pin] future: F },
        /// Refused unaudited; taken at the first poll.
        Refused { response: Option<Response<Body>> },
    }
}

impl<F> Future for TokenUseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let future = match this.state.project() {
            StateProj::Inner { future } => future,
            StateProj::Refused { response } => {
                return match response.take() {
                    Some(response) => Poll::Ready(Ok(response)),
                    // Polled after completion: a bug of the caller's.
                    None => Poll::Ready(Ok(audit_unavailable(None))),
                };
            }
        };
        let Ok(mut response) = std::task::ready!(future.poll(cx));
        if let (Some(outcome), Some(facts)) = (
            response.extensions().get::<AuthOutcome>(),
            this.facts.take(),
        ) {
            this.observer.record(outcome, &facts, response.status());
            // Shared, not copied: the access log reads its `sub` (when it
            // is written at all).
            let logged = tracing::enabled!(target: "warden::access", tracing::Level::INFO);
            if let Some(principal) = outcome.principal.clone().filter(|_| logged) {
                response.extensions_mut().insert(TokenSubject(principal));
            }
        }
        Poll::Ready(Ok(response))
    }
}

impl Observer {
    /// Counts and audits a request refused by [`refuse_unaudited`].
    fn record_refusal(&self, facts: &RequestFacts, status: StatusCode) {
        let refusal = Refusal::AuditUnavailable;
        if let Some(decisions) = &self.decisions {
            decisions
                .family
                .with_label_values(&[&*self.route, "deny", refusal.as_str()])
                .inc();
        }
        let usage = TokenUse {
            route: &self.route,
            method: &facts.method,
            path: facts.uri.path(),
            client_ip: facts.client_ip,
            principal: None,
            status,
            denied: Some(refusal),
            started: facts.started,
        };
        usage.audit(&self.audit, facts.key.as_ref());
    }

    fn record(&self, outcome: &AuthOutcome, facts: &RequestFacts, status: StatusCode) {
        if let Some(decisions) = &self.decisions {
            match outcome.denied {
                None => decisions.allowed.inc(),
                Some(reason) => decisions
                    .family
                    .with_label_values(&[&*self.route, "deny", reason.as_str()])
                    .inc(),
            }
        }
        // A request without a bearer token presented none to audit.
        if outcome.presented_token() {
            let usage = TokenUse {
                route: &self.route,
                method: &facts.method,
                path: facts.uri.path(),
                client_ip: facts.client_ip,
                principal: outcome.principal.as_deref(),
                status,
                denied: outcome.denied.map(Refusal::Auth),
                started: facts.started,
            };
            usage.audit(&self.audit, facts.key.as_ref());
        }
    }
}
