//! The one body type that flows through the stack, and the body wrappers the
//! stack needs: a size limit for request bodies and a byte counter for the
//! access log.
//!
//! Every layer speaks `Request<Body>` / `Response<Body>` so the per-route
//! stacks can be boxed ([`HttpService`]) and swapped; the boxing costs one
//! allocation per body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// The error type of bodies and of the upstream client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body type of every request and response inside the gateway.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A boxed service from request to response that never fails: what a
/// route's stack, a built-in endpoint and the whole gateway each are. Errors
/// are responses by the time they leave a layer.
pub type HttpService = tower::util::BoxCloneSyncService<
    http::Request<Body>,
    http::Response<Body>,
    std::convert::Infallible,
>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body made of one buffer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The request body grew past `server.max_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The configured limit.
    pub limit: u64,
}

impl BodyTooLarge {
    /// Whether `error`, or any error in its `source()` chain, is a [`BodyTooLarge`].
    ///
    /// The upstream client wraps the body error it hit while sending, so the
    /// proxy walks the chain to tell "client sent too much" (413) apart from
    /// "upstream failed" (502).
    pub fn is_cause_of(error: &(dyn std::error::Error + 'static)) -> bool {
        in_source_chain::<BodyTooLarge>(error)
    }
}

/// Reading the client's request body failed: chunked framing hyper refused
/// (a bad chunk size, a missing CRLF), a body cut short, a reset.
///
/// [`FromClient`] marks every error of the body hyper read from the client
/// with it, so that when the upstream client fails while sending that body,
/// the proxy can tell the client's fault (400) from the upstream's (502).
#[derive(Debug, thiserror::Error)]
#[error("the client's request body could not be read")]
pub struct ClientBodyError(#[source] BoxError);

impl ClientBodyError {
    /// Whether `error`, or any error in its `source()` chain, is a [`ClientBodyError`].
    pub fn is_cause_of(error: &(dyn std::error::Error + 'static)) -> bool {
        in_source_chain::<ClientBodyError>(error)
    }
}

/// Whether `error` or one of its sources is an `E`: the upstream client and
/// hyper each wrap the body error they hit, so it is never at the top.
fn in_source_chain<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        if err.is::<E>() {
            return true;
        }
        current = err.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// The body hyper reads from the client, whose errors all become
    /// [`ClientBodyError`]: whatever fails below this wrapper failed while
    /// reading the client's bytes.
    pub struct FromClient<B> {
        #[pin]
        inner: B,
    }
}

impl<B> FromClient<B> {
    /// Wraps the body of a request as it came off the connection.
    pub fn new(inner: B) -> Self {
        Self { inner }
    }
}

impl<B> http_body::Body for FromClient<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.project()
            .inner
            .poll_frame(cx)
            .map(|frame| frame.map(|result| result.map_err(|err| ClientBodyError(err.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reading a whole body failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is larger than allowed.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body stream failed.
    #[error("the body could not be read")]
    Failed,
}

/// Reads a whole body of at most `max` bytes into memory.
pub async fn read_to_limit<B>(body: B, max: usize) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            // The stream's own limit (max_body_bytes) is "too large" too.
            let err: BoxError = err.into();
            if BodyTooLarge::is_cause_of(&*err) {
                ReadError::TooLarge(max)
            } else {
                ReadError::Failed
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > max {
                return Err(ReadError::TooLarge(max));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTooLarge`] once more than `limit`
    /// bytes have passed, whether or not a `Content-Length` announced them
    /// (chunked bodies are limited too).
    pub struct Limited<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
    }
}

impl<B> Limited<B> {
    /// Wraps `inner`, allowing at most `limit` bytes through.
    pub fn new(inner: B, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: *this.limit,
                        }))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A shared count of the data bytes that passed through a [`Counted`] body.
#[derive(Clone, Debug, Default)]
pub struct ByteCount(Arc<AtomicU64>);

impl ByteCount {
    /// The bytes counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A body that counts its data bytes into a [`ByteCount`].
    pub struct Counted<B> {
        #[pin]
        inner: B,
        count: ByteCount,
    }
}

impl<B> Counted<B> {
    /// Wraps `inner`, adding every data frame's length to `count`.
    pub fn new(inner: B, count: ByteCount) -> Self {
        Self { inner, count }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.count.add(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(parts: &[&'static [u8]]) -> impl http_body::Body<Data = Bytes, Error = BoxError> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn limited_body_passes_exactly_the_limit() {
        let body = Limited::new(chunks(&[b"abc", b"de"]), 5);
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"abcde")));
    }

    #[tokio::test]
    async fn limited_body_fails_one_byte_past_the_limit() {
        let body = Limited::new(chunks(&[b"abc", b"def"]), 5);
        let err = body
            .collect()
            .await
            .err()
            .map(|e| BodyTooLarge::is_cause_of(&*e));
        assert_eq!(err, Some(true));
    }

    /// What the upstream client does with a body error: wraps it, as its source.
    #[derive(Debug, thiserror::Error)]
    #[error("sending the request failed")]
    struct SendFailed(#[source] BoxError);

    #[tokio::test]
    async fn a_client_body_error_is_found_under_the_errors_that_wrap_it() {
        let failing: Vec<Result<Frame<Bytes>, BoxError>> = vec![Err("invalid chunk size".into())];
        let body = FromClient::new(StreamBody::new(futures_util::stream::iter(failing)));
        let err = body.collect().await.err().map(|e| {
            let wrapped = SendFailed(Box::new(e));
            (
                ClientBodyError::is_cause_of(&wrapped),
                BodyTooLarge::is_cause_of(&wrapped),
            )
        });
        assert_eq!(err, Some((true, false)));
    }

    #[tokio::test]
    async fn counted_body_counts_data_bytes() {
        let count = ByteCount::default();
        let body = Counted::new(chunks(&[b"abc", b"defg"]), count.clone());
        let _ = body.collect().await;
        assert_eq!(count.get(), 7);
    }
}
