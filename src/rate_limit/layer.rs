//! [`RateLimitLayer`]: counts each request against its key's bucket and
//! answers 429 when it is empty, with `Retry-After` and the draft IETF
//! `RateLimit-Policy` / `RateLimit` headers on every answer of the route.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response, header};
use prometheus::IntCounter;
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

#[derive(Debug)]
struct Limit {
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

impl Layer<HttpService> for RateLimitLayer {
    type Service = RateLimit;

    fn layer(&self, inner: HttpService) -> RateLimit {
        RateLimit {
            inner,
            limit: self.inner.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit {
    inner: HttpService,
    limit: Arc<Limit>,
}

impl Service<Request<Body>> for RateLimit {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit.clone();
        let Some(limiter) = limit.limiter.clone() else {
            return Box::pin(async move {
                let mut response = inner.call(request).await?;
                let headers = response.headers_mut();
                if !headers.contains_key(&RATELIMIT_POLICY) {
                    headers.insert(RATELIMIT_POLICY.clone(), limit.policy_header.clone());
                }
                Ok(response)
            });
        };
        let key = limit.key_of(&request);
        let local = (!limiter.is_remote()).then(|| limiter.check_local(&key));
        Box::pin(async move {
            let decision = match local {
                Some(decision) => decision,
                None => limiter.check(&key).await,
            };
            if !decision.allowed {
                return Ok(limit.refuse(&request, &decision));
            }
            let mut response = inner.call(request).await?;
            limit.annotate(&mut response, &decision);
            Ok(response)
        })
    }
}

impl Limit {
    /// The bucket `request` counts in.
    fn key_of(&self, request: &Request<Body>) -> String {
        let principal = || request.extensions().get::<Arc<Principal>>();
        match &self.key {
            LimitKey::Route => String::new(),
            LimitKey::ClientIp => request
                .extensions()
                .get::<ConnectInfo>()
                .map(|c| c.remote.ip().to_string())
                .unwrap_or_default(),
            LimitKey::Header(name) => request
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
            LimitKey::Subject => principal().and_then(|p| p.sub.clone()).unwrap_or_default(),
            LimitKey::Claim(claim) => match principal().and_then(|p| p.claims.get(claim)) {
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
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
