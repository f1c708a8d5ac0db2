//! The open connections of one listener: the limit, idle connections closed
//! first, the idle timeout, and the drain at shutdown (SPEC §8, §16).
//!
//! A connection is *busy* while a request is in flight on it (from the
//! moment hyper hands the request over until its response body has been
//! sent or dropped) and *idle* otherwise. Bytes alone are not activity: an
//! HTTP/2 peer that only answers pings, or one that sent its preface and
//! nothing else, is idle. So:
//!
//! - a connection idle for `server.idle_timeout` is shut down gracefully
//!   (HTTP/2: GOAWAY; HTTP/1.1: closed between requests);
//! - at the limit, a new connection is admitted by shutting down the
//!   connection that has been idle the longest; only when every connection
//!   is busy does it wait, so idle peers can never lock out a working client.
//!   An idle connection asked to close that has carried no HTTP/2 request is
//!   closed at once: HTTP/1.1 has no GOAWAY, and hyper's graceful shutdown
//!   would wait for a request head begun and never ended (a slowloris peer)
//!   until `header_read_timeout`, holding up the admission all that time;
//! - at shutdown every connection is asked to finish its in-flight requests
//!   and close, and [`Connections::drained`] resolves when all have.
//!
//! The request path touches this module once per request, through
//! [`Tracked`], which counts the request in and its response body out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

use crate::body::{self, Body, BoxError};

/// The open connections of one listener.
#[derive(Clone, Debug)]
pub struct Connections {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max: usize,
    idle_timeout: Duration,
    /// What `idle_since` counts from.
    epoch: Instant,
    table: Mutex<Table>,
    /// A connection ended or became idle: an admission may go on, the
    /// drain may be over.
    freed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<Activity>>,
}

/// What one connection's requests report, and how it is asked to close.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Microseconds after the epoch when the connection last became idle.
    idle_since: AtomicU64,
    /// Set once the connection has been asked to close.
    closing: AtomicBool,
    /// Set once the connection has carried an HTTP/2 request: asked to
    /// close, it gets a GOAWAY and may take a round trip to end.
    http2: AtomicBool,
    /// Whether any request has been served on it (a slowloris peer has none).
    served: AtomicBool,
    close: Notify,
    epoch: Instant,
    /// The listener's: told when this connection becomes idle, so an
    /// admission waiting at the limit can make room.
    idle: Arc<Notify>,
}

impl Activity {
    fn new(epoch: Instant, idle: Arc<Notify>) -> Self {
        let activity = Self {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            served: AtomicBool::new(false),
            close: Notify::new(),
            epoch,
            idle,
        };
        activity
            .idle_since
            .store(activity.now_us(), Ordering::Relaxed);
        activity
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
    }

    fn end(&self) {
        // The idle clock starts before the count reaches zero, so a reader
        // that sees zero never sees an older idle_since.
        self.idle_since.store(self.now_us(), Ordering::Release);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// How long the connection has been idle; `None` while it is busy.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since.load(Ordering::Acquire);
        Some(Duration::from_micros(self.now_us().saturating_sub(since)))
    }

    /// Resolves when the connection is asked to close (at once if it was).
    pub async fn asked_to_close(&self) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        self.close.notified().await;
    }

    fn ask_to_close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            // notify_one keeps a permit when the driver is not waiting yet.
            self.close.notify_one();
        }
    }
}

/// A connection's place among the open ones; it is given back when dropped.
#[derive(Debug)]
pub struct Admission {
    id: u64,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
}

impl Admission {
    /// What the connection's requests report to.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Ok(mut table) = self.shared.table.lock() {
            table.open.remove(&self.id);
        }
        self.shared.freed.notify_waiters();
    }
}

impl Connections {
    /// At most `max` open connections; an idle one lives `idle_timeout`.
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                max: max.max(1),
                idle_timeout,
                epoch: Instant::now(),
                table: Mutex::new(Table::default()),
                freed: Arc::new(Notify::new()),
            }),
        }
    }

    /// A place for a new connection. At the limit, the connection idle the
    /// longest is asked to close; when none is idle, this waits until one
    /// ends.
    pub async fn admit(&self) -> Admission {
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            // Registered before the table is read, so an end in between is
            // not missed.
            freed.as_mut().enable();
            {
                let Ok(mut table) = self.shared.table.lock() else {
                    // A poisoned table: admit without tracking the limit
                    // rather than refuse every connection from now on.
                    return self.untracked();
                };
                if table.open.len() < self.shared.max {
                    table.next_id += 1;
                    let id = table.next_id;
                    let activity =
                        Arc::new(Activity::new(self.shared.epoch, self.shared.freed.clone()));
                    table.open.insert(id, activity.clone());
                    return Admission {
                        id,
                        activity,
                        shared: self.shared.clone(),
                    };
                }
                // A connection already closing will give its place back:
                // asking another to close too would evict more than needed.
                let closing = table
                    .open
                    .values()
                    .filter(|a| a.closing.load(Ordering::Acquire))
                    .count();
                if closing == 0 {
                    // Ties (idle since the same microsecond) go to the
                    // older connection, not to the map's order.
                    let longest_idle = table
                        .open
                        .iter()
                        .filter_map(|(id, a)| a.idle_for().map(|idle| (idle, *id, a)))
                        .max_by_key(|(idle, id, _)| (*idle, std::cmp::Reverse(*id)));
                    if let Some((_, _, activity)) = longest_idle {
                        activity.ask_to_close();
                    }
                }
            }
            freed.await;
        }
    }

    fn untracked(&self) -> Admission {
        Admission {
            id: u64::MAX,
            activity: Arc::new(Activity::new(self.shared.epoch, self.shared.freed.clone())),
            shared: self.shared.clone(),
        }
    }

    /// Open connections.
    pub fn count(&self) -> usize {
        self.shared.table.lock().map_or(0, |t| t.open.len())
    }

    /// Asks every open connection to finish its in-flight requests and close.
    pub fn close_all(&self) {
        if let Ok(table) = self.shared.table.lock() {
            for activity in table.open.values() {
                activity.ask_to_close();
            }
        }
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            freed.await;
        }
    }

    /// Serves `connection` until it ends, shutting it down gracefully when
    /// it has been idle for the idle timeout or when it is asked to close.
    pub async fn drive<C>(&self, activity: &Activity, connection: C) -> Result<(), C::Error>
    where
        C: GracefulConnection,
    {
        let idle_timeout = self.shared.idle_timeout;
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            // Busy: look again after a whole timeout. Idle: when it runs out.
            // Closing: a peer that never completes the shutdown (an HTTP/2
            // peer that acknowledges keep-alive pings but not the GOAWAY's)
            // is dropped once nothing is in flight, after CLOSE_GRACE.
            let wait = match (closing, activity.idle_for()) {
                (true, _) => CLOSE_GRACE,
                (false, Some(idle)) => idle_timeout.saturating_sub(idle),
                (false, None) => idle_timeout,
            };
            tokio::select! {
                ended = connection.as_mut() => return ended,
                () = activity.close.notified(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                    // An idle HTTP/1.1 connection that never served a request
                    // (a half-sent head) or whose last response has long been
                    // flushed is dropped now rather than waited for: no
                    // request can begin in between (requests start and end
                    // inside this task's polls of `connection`).
                    let settled = match activity.idle_for() {
                        Some(idle) => idle >= SETTLED || !activity.served.load(Ordering::Acquire),
                        None => false,
                    };
                    if settled && !activity.http2.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(wait) => {
                    if closing {
                        if activity.idle_for().is_some() {
                            tracing::debug!("dropping a connection that did not finish its shutdown");
                            return Ok(());
                        }
                    } else if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                        tracing::debug!(idle_ms = idle_timeout.as_millis() as u64, "closing an idle connection");
                        closing = true;
                        activity.closing.store(true, Ordering::Release);
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// How long a connection asked to close may take to finish its shutdown
/// once nothing is in flight on it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long an HTTP/1.1 connection must have been idle to be dropped at
/// once when asked to close: its last response has long been flushed.
const SETTLED: Duration = Duration::from_millis(250);

/// A connection's service that reports its requests' activity.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// `inner`, reporting to `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if request.version() == http::Version::HTTP_2 {
            self.activity.http2.store(true, Ordering::Release);
        }
        self.activity.begin();
        TrackedFuture {
            inner: self.inner.call(request),
            guard: Some(InFlight(self.activity.clone())),
        }
    }
}

/// One request in flight; counted out when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project_lite::pin_project! {
    /// The response of a tracked request: the request stays counted in
    /// until its body has been sent or dropped.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(
            response.map(|inner| body::boxed(TrackedBody { inner, guard }))
        ))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request out when it ends or is dropped.
    struct TrackedBody {
        #[pin]
        inner: Body,
        guard: Option<InFlight>,
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
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

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_is_asked_to_close() {
        let connections = Connections::new(2, Duration::from_secs(60));
        let first = connections.admit().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = connections.admit().await;
        // The second is busy; the first is idle and older.
        second.activity.begin();
        let third = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        tokio::time::timeout(Duration::from_secs(5), first.activity.close.notified())
            .await
            .unwrap_or_else(|_| panic!("the idle connection was not asked to close"));
        assert!(!second.activity.closing.load(Ordering::Acquire));
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), third).await;
        assert!(
            matches!(third, Ok(Ok(_))),
            "the new connection got the freed place"
        );
        assert_eq!(connections.count(), 2);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_a_new_one_waits() {
        let connections = Connections::new(1, Duration::from_secs(60));
        let only = connections.admit().await;
        only.activity.begin();
        let waiting = tokio::time::timeout(Duration::from_millis(100), connections.admit()).await;
        assert!(
            waiting.is_err(),
            "no place while the only connection is busy"
        );
        assert!(!only.activity.closing.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn the_drain_ends_when_the_last_connection_does() {
        let connections = Connections::new(4, Duration::from_secs(60));
        let a = connections.admit().await;
        let b = connections.admit().await;
        connections.close_all();
        assert!(a.activity.closing.load(Ordering::Acquire));
        assert!(b.activity.closing.load(Ordering::Acquire));
        let drained = tokio::spawn({
            let connections = connections.clone();
            async move { connections.drained().await }
        });
        drop(a);
        drop(b);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), drained)
                .await
                .is_ok()
        );
    }

    #[test]
    fn a_request_counts_in_and_out_and_restarts_the_idle_clock() {
        let activity = Activity::new(Instant::now(), Arc::new(Notify::new()));
        assert!(activity.idle_for().is_some());
        activity.begin();
        assert!(
            activity.idle_for().is_none(),
            "busy while a request is in flight"
        );
        activity.end();
        assert!(
            activity
                .idle_for()
                .is_some_and(|idle| idle < Duration::from_secs(1))
        );
    }
}
