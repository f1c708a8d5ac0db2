//! Claims towards the upstream, and the client's token away from it.
//!
//! [`ForwardClaimsLayer`] sits after auth in every route stack, `auth =
//! "none"` routes included. It first removes every client-sent header that
//! any route's `forward_claims` names (so a client cannot forge them, not
//! even through a route that does not forward them), then sets the route's from
//! the verified [`Principal`] when there is one, and removes the client's
//! `Authorization` unless the route sets `forward_authorization = true`.
//! A claim that is a string is sent as it is; numbers and booleans as text;
//! arrays and objects as compact JSON. A value that cannot be a header value
//! (control characters) is left out.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, header};
use serde_json::Value;
use tower::{Layer, Service};

use super::jwt::Principal;

/// A route's forwarding rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardSettings {
    /// Header name → claim name.
    pub claims: Vec<(HeaderName, String)>,
    /// Keep the client's `Authorization` header.
    pub authorization: bool,
}

/// Applies [`ForwardSettings`].
#[derive(Clone, Debug)]
pub struct ForwardClaimsLayer {
    settings: Arc<ForwardSettings>,
    strip: Arc<[HeaderName]>,
}

impl ForwardClaimsLayer {
    /// The layer for one route; `strip` names every header any route fills
    /// from claims.
    pub fn new(settings: ForwardSettings, strip: Arc<[HeaderName]>) -> Self {
        Self {
            settings: Arc::new(settings),
            strip,
        }
    }
}

impl<S> Layer<S> for ForwardClaimsLayer {
    type Service = ForwardClaims<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardClaims {
            inner,
            settings: self.settings.clone(),
            strip: self.strip.clone(),
        }
    }
}

/// The service made by [`ForwardClaimsLayer`].
#[derive(Clone, Debug)]
pub struct ForwardClaims<S> {
    inner: S,
    settings: Arc<ForwardSettings>,
    strip: Arc<[HeaderName]>,
}

fn header_value(claim: &Value) -> Option<HeaderValue> {
    let text = match claim {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

impl<S, B> Service<Request<B>> for ForwardClaims<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let principal = request.extensions().get::<Arc<Principal>>().cloned();
        let headers = request.headers_mut();
        for name in self.strip.iter() {
            headers.remove(name);
        }
        for (name, _) in &self.settings.claims {
            headers.remove(name);
        }
        if let Some(principal) = principal {
            for (name, claim) in &self.settings.claims {
                if let Some(value) = principal.claims.get(claim).and_then(header_value) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        if !self.settings.authorization {
            headers.remove(header::AUTHORIZATION);
        }
        self.inner.call(request)
    }
}
