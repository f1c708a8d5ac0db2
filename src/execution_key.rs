//! The execution key: one id per request, for tracing a request (and the token
//! it carried) through the gateway, the upstream and the audit log.
//!
//! [`ExecutionKeyLayer`] sits outermost in the stack, so every response,
//! including the gateway's own rejections, carries the key. It:
//!
//! - makes a UUIDv7, or reuses a valid inbound `X-Execution-Key` when
//!   `server.trust_execution_key_header` is set (1–128 chars of
//!   `[A-Za-z0-9._-]`; anything else is replaced, never echoed);
//! - stores [`ExecutionKey`] in the request extensions;
//! - sets `X-Execution-Key` on the request (for the upstream) and the response.

use std::fmt;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The header that carries the execution key both ways.
pub static EXECUTION_KEY_HEADER: HeaderName = HeaderName::from_static("x-execution-key");

/// A request's execution key: a header value that is known to be
/// `[A-Za-z0-9._-]`, so it is also text. Cheap to clone (one shared buffer).
#[derive(Clone, PartialEq, Eq)]
pub struct ExecutionKey(HeaderValue);

impl ExecutionKey {
    /// A fresh key: a UUIDv7, so keys sort by time. Its random bits come
    /// from aws-lc-rs's generator, which needs no system call per key.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 10];
        // On failure (never seen) the key is still unique enough in time.
        let _ = aws_lc_rs::rand::fill(&mut random);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buffer);
        Self(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-")))
    }

    /// An inbound key, if it is 1–128 chars of `[A-Za-z0-9._-]`.
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let valid = (1..=128).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return None;
        }
        Some(Self(value.clone()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `generate` and `parse`).
        self.0.to_str().unwrap_or_default()
    }

    /// The key as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for ExecutionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ExecutionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExecutionKey").field(&self.as_str()).finish()
    }
}

/// Adds an [`ExecutionKey`] to every request and its response.
#[derive(Clone, Copy, Debug)]
pub struct ExecutionKeyLayer {
    trust_inbound: bool,
}

impl ExecutionKeyLayer {
    /// `trust_inbound`: reuse a valid inbound `X-Execution-Key`.
    pub fn new(trust_inbound: bool) -> Self {
        Self { trust_inbound }
    }
}

impl<S> Layer<S> for ExecutionKeyLayer {
    type Service = SetExecutionKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetExecutionKey {
            inner,
            trust_inbound: self.trust_inbound,
        }
    }
}

/// The service made by [`ExecutionKeyLayer`].
#[derive(Clone, Debug)]
pub struct SetExecutionKey<S> {
    inner: S,
    trust_inbound: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetExecutionKey<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let inbound = if self.trust_inbound {
            request
                .headers()
                .get(&EXECUTION_KEY_HEADER)
                .and_then(ExecutionKey::parse)
        } else {
            None
        };
        let key = inbound.unwrap_or_else(ExecutionKey::generate);
        request
            .headers_mut()
            .insert(EXECUTION_KEY_HEADER.clone(), key.header_value().clone());
        request.extensions_mut().insert(key.clone());
        self.inner
            .call(request)
            .map(move |result| {
                result.map(|mut response| {
                    response
                        .headers_mut()
                        .insert(EXECUTION_KEY_HEADER.clone(), key.header_value().clone());
                    response
                })
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_uuid_v7() {
        let key = ExecutionKey::generate();
        let parsed = uuid::Uuid::parse_str(key.as_str()).ok();
        assert_eq!(parsed.map(|u| u.get_version_num()), Some(7));
    }

    #[test]
    fn inbound_keys_must_be_short_and_plain() {
        let ok = HeaderValue::from_static("job-42.retry_1");
        assert_eq!(
            ExecutionKey::parse(&ok).map(|k| k.to_string()),
            Some("job-42.retry_1".into())
        );
        for bad in ["", "has space", "semi;colon", "ünïcode", &"x".repeat(129)] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).ok();
            assert!(
                value.and_then(|v| ExecutionKey::parse(&v)).is_none(),
                "{bad:?} accepted"
            );
        }
    }
}
