//! [`RateLimitLayer`]: counts each request against its key's bucket and
//! answers 429 when it is empty, with `Retry-After` and the draft IETF
//! `RateLimit-Policy` / `RateLimit` headers on every answer of the route.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response, header};
use prometheus::IntCounter;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use super::{LimitKey, RateLimitSettings};
use crate::auth::{AuthOutcome, Principal, Reason, bearer_token};
use crate::body::{Body, HttpService};
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;
use crate::extensions::ConnectInfo;
use crate::shared_state::RateLimiter;
use crate::shared_state::gcra::Decision;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One route's rate limit.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    inner: Arc<Limit>,
}

/// One route's limit, shared by its services and their futures.
#[derive(Debug)]
pub struct Limit {
    key: LimitKey,
    /// `None` for the outer copy of a limit counted after auth: it only
    /// puts `RateLimit-Policy` on auth's own refusals.
    limiter: Option<RateLimiter>,
    /// The route's name as a structured-field string: `"orders"`.
    name: String,
    /// `"<route>";q=<requests>;w=<seconds>`, made once.
    policy_header: HeaderValue,
    /// `warden_rate_limited_total{route}` of this route.
    refused: IntCounter,
    /// Whether a refusal is a token use to audit (jwt routes).
    audits_tokens: bool,
}

impl RateLimitLayer {
    /// The limit `settings` of route `route`, counted by `limiter`.
    pub fn new(
        route: &str,
        settings: &RateLimitSettings,
        limiter: RateLimiter,
        refused: IntCounter,
        audits_tokens: bool,
    ) -> Self {
        Self::build(route, settings, Some(limiter), refused, audits_tokens)
    }

    /// For a limit counted after auth, the layer in front of auth that puts
    /// `RateLimit-Policy` on its 401s and 403s too (every answer of a
    /// limited route carries it); it counts nothing.
    pub fn advertising(route: &str, settings: &RateLimitSettings, refused: IntCounter) -> Self {
        Self::build(route, settings, None, refused, false)
    }

    fn build(
        route: &str,
        settings: &RateLimitSettings,
        limiter: Option<RateLimiter>,
        refused: IntCounter,
        audits_tokens: bool,
    ) -> Self {
        let name = sf_string(route);
        let policy = &settings.policy;
        let policy_header = HeaderValue::try_from(format!(
            "{name};q={};w={}",
            policy.requests,
            policy.window_secs()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("\"route\""));
        Self {
            inner: Arc::new(Limit {
                key: settings.key.clone(),
                limiter,
                name,
                policy_header,
                refused,
                audits_tokens,
            }),
        }
    }
}

/// A structured-field string (RFC 8941 §3.3.3) of `text`, printable ASCII
/// only.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ') {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limit: self.inner.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limit: Arc<Limit>,
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.limit.clone();
        let Some(limiter) = limit.limiter.clone() else {
            return RateLimitFuture::inner(self.inner.call(request), limit, None);
        };
        if limiter.is_remote() {
            // The request waits for Redis: the inner service is called
            // (boxed, hence one type) once the decision is in.
            let key = limit.with_key(&request, str::to_owned);
            let clone = self.inner.clone();
            let mut inner: HttpService =
                BoxCloneSyncService::new(std::mem::replace(&mut self.inner, clone));
            return RateLimitFuture::Remote {
                future: Box::pin(async move {
                    let decision = limiter.check(&key).await;
                    if !decision.allowed {
                        return Ok(limit.refuse(&request, &decision));
                    }
                    let mut response = inner.call(request).await?;
                    limit.annotate(&mut response, &decision);
                    Ok(response)
                }),
            };
        }
        // In memory the decision is made here, on a borrowed key.
        let decision = limit.with_key(&request, |key| limiter.check_local(key));
        if !decision.allowed {
            let response = limit.refuse(&request, &decision);
            return RateLimitFuture::Refused {
                response: Some(response),
            };
        }
        RateLimitFuture::inner(self.inner.call(request), limit, Some(decision))
    }
}

pin_project_lite::pin_project! {
    /// The answer of a rate-limited route.
    #[project = RateLimitProj]
    pub enum RateLimitFuture<F> {
        /// Counted here: the inner answer, annotated when it arrives (with
        /// the policy only, when `decision` is `None`).
        Inner {
            #[pin]
            future: F,
            limit: Arc<Limit>,
            decision: Option<Decision>,
        },
        /// Refused here; taken at the first poll.
        Refused { response: Option<Response<Body>> },
        /// Counted in Redis.
        Remote { future: BoxFuture<'static, Result<Response<Body>, Infallible>> },
    }
}

impl<F> RateLimitFuture<F> {
    fn inner(future: F, limit: Arc<Limit>, decision: Option<Decision>) -> Self {
        RateLimitFuture::Inner {
            future,
            limit,
            decision,
        }
    }
}

impl<F> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitProj::Inner {
                future,
                limit,
                decision,
            } => {
                let Ok(mut response) = std::task::ready!(future.poll(cx));
                match decision {
                    Some(decision) => limit.annotate(&mut response, decision),
                    None => {
                        let headers = response.headers_mut();
                        if !headers.contains_key(&RATELIMIT_POLICY) {
                            headers.insert(RATELIMIT_POLICY.clone(), limit.policy_header.clone());
                        }
                    }
                }
                Poll::Ready(Ok(response))
            }
            RateLimitProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: a bug of the caller's.
                None => Poll::Ready(Ok(GatewayError::new(
                    ErrorCode::Internal,
                    "a rate-limit answer was polled twice",
                )
                .into_response(None))),
            },
            RateLimitProj::Remote { future } => future.as_mut().poll(cx),
        }
    }
}

impl Limit {
    /// Calls `f` with the bucket `request` counts in, borrowed where it
    /// can be (a client address is written on the stack).
    fn with_key<R>(&self, request: &Request<Body>, f: impl FnOnce(&str) -> R) -> R {
        let principal = || request.extensions().get::<Arc<Principal>>();
        match &self.key {
            LimitKey::Route => f(""),
            LimitKey::ClientIp => match request.extensions().get::<ConnectInfo>() {
                Some(info) => f(IpText::new(info.client).as_str()),
                None => f(""),
            },
            LimitKey::Header(name) => match request.headers().get(name) {
                Some(value) => f(&String::from_utf8_lossy(value.as_bytes())),
                None => f(""),
            },
            LimitKey::Subject => f(principal().and_then(|p| p.sub.as_deref()).unwrap_or("")),
            LimitKey::Claim(claim) => match principal().and_then(|p| p.claims.get(claim)) {
                Some(serde_json::Value::String(text)) => f(text),
                Some(other) => f(&other.to_string()),
                None => f(""),
            },
        }
    }

    /// The 429, audited as a token use when a token was presented.
    fn refuse(&self, request: &Request<Body>, decision: &Decision) -> Response<Body> {
        self.refused.inc();
        let key = request.extensions().get::<ExecutionKey>();
        let wait = whole_seconds(decision.retry_after).max(1);
        tracing::info!(retry_after = wait, "rate limit reached");
        let mut response = GatewayError::new(
            ErrorCode::RateLimited,
            format!("the route's rate limit is reached; retry in {wait} s"),
        )
        .into_response(key);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        self.annotate(&mut response, decision);
        if self.audits_tokens {
            let principal = request.extensions().get::<Arc<Principal>>().cloned();
            let presented = principal.is_some()
                || !matches!(bearer_token(request.headers()), Err(r) if r.reason == Reason::MissingToken);
            if presented {
                let outcome = AuthOutcome::denied(Reason::RateLimited, principal);
                response.extensions_mut().insert(outcome);
            }
        }
        response
    }

    /// `RateLimit-Policy` and `RateLimit` on an answer of the route.
    fn annotate(&self, response: &mut Response<Body>, decision: &Decision) {
        let state = format!(
            "{};r={};t={}",
            self.name,
            decision.remaining,
            whole_seconds(decision.reset)
        );
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY.clone(), self.policy_header.clone());
        if let Ok(value) = HeaderValue::try_from(state) {
            headers.insert(RATELIMIT.clone(), value);
        }
    }
}

/// An IP address as text, on the stack (the longest IPv6 text is 45 bytes).
struct IpText {
    bytes: [u8; 48],
    len: usize,
}

impl IpText {
    fn new(address: std::net::IpAddr) -> Self {
        use std::io::Write as _;
        let mut bytes = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut bytes[..]);
        let _ = write!(cursor, "{address}");
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        Self { bytes, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// `duration` rounded up to whole seconds.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_structured_field_strings() {
        assert_eq!(sf_string("orders"), "\"orders\"");
        assert_eq!(sf_string("a\"b\\c\n"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn addresses_are_written_whole() {
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("an IPv6 address");
        assert_eq!(IpText::new(v6).as_str(), v6.to_string());
        let v4: std::net::IpAddr = "192.0.2.10".parse().expect("an IPv4 address");
        assert_eq!(IpText::new(v4).as_str(), "192.0.2.10");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn keys_parse() {
        assert_eq!(LimitKey::parse("sub"), Some(LimitKey::Subject));
        assert_eq!(
            LimitKey::parse("claim:tenant"),
            Some(LimitKey::Claim("tenant".into()))
        );
        assert_eq!(
            LimitKey::parse("header:X-Api-Key"),
            Some(LimitKey::Header(HeaderName::from_static("x-api-key")))
        );
        assert_eq!(LimitKey::parse("claim:"), None);
        assert_eq!(LimitKey::parse("header:bad header"), None);
        assert_eq!(LimitKey::parse("ip"), None);
    }
}
