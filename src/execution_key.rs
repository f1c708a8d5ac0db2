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
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The header that carries the execution key both ways.
pub static EXECUTION_KEY_HEADER: HeaderName = HeaderName::from_static("x-execution-key");

/// A request's execution key: a header value that is known to be
/// `[A-Za-z0-9._-]`, so it is also text; and the request's W3C trace id,
/// once the trace layer has continued or started its trace, so every log
/// line and audit event that names the key names the trace beside it.
/// Cheap to clone (shared buffers).
#[derive(Clone, PartialEq, Eq)]
pub struct ExecutionKey(HeaderValue, Option<std::sync::Arc<str>>);

impl ExecutionKey {
    /// A fresh key: a UUIDv7, so keys sort by time. Its random bits come
    /// from aws-lc-rs's generator, drawn a few kilobytes at a time (see
    /// [`random_bits`]).
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random_bits()).into_uuid();
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buffer);
        Self(
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-")),
            None,
        )
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
        Some(Self(value.clone(), None))
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

    /// Names the request's trace (32 lowercase hex digits) beside the key.
    pub fn set_trace_id(&mut self, trace_id: std::sync::Arc<str>) {
        self.1 = Some(trace_id);
    }

    /// The request's trace id, once known.
    pub fn trace_id(&self) -> Option<&str> {
        self.1.as_deref()
    }
}

/// Random bytes a key needs.
const KEY_RANDOM_BYTES: usize = 10;

/// How many keys' worth of random bytes a thread draws at once: one call
/// into the generator per 400 keys instead of one per key (the key is an
/// id, not a secret; what it needs is to be unique).
const POOL_KEYS: usize = 400;

struct RandomPool {
    bytes: [u8; KEY_RANDOM_BYTES * POOL_KEYS],
    next: usize,
}

thread_local! {
    static RANDOM_POOL: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool {
            bytes: [0; KEY_RANDOM_BYTES * POOL_KEYS],
            next: KEY_RANDOM_BYTES * POOL_KEYS,
        })
    };
}

/// Ten random bytes from this thread's pool, refilled from aws-lc-rs when
/// used up. Bytes are never handed out twice (unless the generator fails,
/// never seen, when keys fall back to zeros and only their time differs).
fn random_bits() -> [u8; KEY_RANDOM_BYTES] {
    random_id()
}

/// `N` random bytes for an id (an execution key, a trace or span id) from
/// this thread's pool: ids must be unique, not secret. `N` is at most the
/// pool's size.
pub fn random_id<const N: usize>() -> [u8; N] {
    const { assert!(N <= KEY_RANDOM_BYTES * POOL_KEYS) };
    RANDOM_POOL.with_borrow_mut(|pool| {
        if pool.next + N > pool.bytes.len() {
            // On failure (never seen) the key is still unique enough in time.
            if aws_lc_rs::rand::fill(&mut pool.bytes).is_err() {
                pool.bytes.fill(0);
            }
            pool.next = 0;
        }
        let mut out = [0; N];
        out.copy_from_slice(&pool.bytes[pool.next..pool.next + N]);
        pool.next += N;
        out
    })
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
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

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
        ResponseFuture {
            inner: self.inner.call(request),
            key: Some(key),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SetExecutionKey`]: sets the key on the response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        key: Option<ExecutionKey>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(key) = this.key.take() {
            response
                .headers_mut()
                .insert(EXECUTION_KEY_HEADER.clone(), key.0);
        }
        Poll::Ready(Ok(response))
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
    fn keys_stay_distinct_across_pool_refills() {
        let keys: std::collections::HashSet<String> = (0..3 * POOL_KEYS)
            .map(|_| ExecutionKey::generate().to_string())
            .collect();
        assert_eq!(keys.len(), 3 * POOL_KEYS);
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
