//! [`FirstByteDeadline`]: a connection must tell its protocol in time.
//!
//! hyper's `header_read_timeout` runs once an HTTP/1.1 request has begun,
//! but hyper-util's auto builder first waits, without a limit, for the
//! bytes that tell HTTP/1.1 from HTTP/2: the 24-byte HTTP/2 preface, or
//! the first byte that differs from it. A client that connects and sends
//! nothing, or the start of the preface and then nothing, would hold the
//! connection forever. This wrapper fails the read when the protocol is not
//! known by the deadline; once it is (a byte that is not the preface's, or
//! the whole preface), it does nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::time::Sleep;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project_lite::pin_project! {
    /// A stream whose first read must return data within a deadline.
    pub struct FirstByteDeadline<S> {
        #[pin]
        inner: S,
        // How many bytes of the HTTP/2 preface have been seen so far.
        preface_seen: usize,
        // Boxed: `Sleep` is not `Unpin`, and hyper wants an `Unpin` stream.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<S> FirstByteDeadline<S> {
    /// Wraps `inner`; its first byte must arrive within `within`.
    pub fn new(inner: S, within: Duration) -> Self {
        Self {
            inner,
            preface_seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead> AsyncRead for FirstByteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if this.deadline.is_none() {
            return polled;
        }
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                for &byte in &buf.filled()[before..] {
                    if PREFACE.get(*this.preface_seen) == Some(&byte) {
                        *this.preface_seen += 1;
                    } else {
                        // Not HTTP/2: from here hyper's own timeouts apply.
                        *this.deadline = None;
                        break;
                    }
                }
                if *this.preface_seen >= PREFACE.len() {
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing before header_read_timeout",
                ))),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for FirstByteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
