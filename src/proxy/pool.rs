//! Upstream connections, kept per worker.
//!
//! Each worker thread (see `server::workers`) has its own shard of idle
//! connections per target, so a request is sent on a connection that the
//! worker's own runtime drives: no hand-off to another thread, no task
//! that wakes a peer. Connections are hyper `client::conn` senders:
//!
//! - **HTTP/1.1**: one request at a time per connection. A connection goes
//!   back to its shard only once its response body has been read to the
//!   end; a response dropped half-read closes it (hyper cannot reuse it).
//!   Shards are LIFO, so a light load keeps few connections warm. At most
//!   [`MAX_IDLE_PER_TARGET`] idle connections per target and worker.
//! - **HTTP/2**: one multiplexed connection per target and worker.
//! - **Stale connections.** A pooled connection the upstream closed while
//!   it sat idle fails the next request, before it is written (that request
//!   is retried once on a fresh connection) or, when the close had not been
//!   seen yet, right after, with no answer. An idempotent request without a
//!   body (GET, HEAD, PUT or DELETE with none) is then sent once more on a
//!   fresh connection; any other is a 502, since the upstream may have
//!   acted on it.
//! - **Bursts.** A request that finds no idle connection connects, and
//!   takes a connection given back meanwhile if that comes first (the new
//!   one is then abandoned), so a burst of requests opens about as many
//!   connections as are really busy at once, not one per request.
//! - **Idle expiry.** A connection idle for `idle_timeout` is closed: at
//!   checkout, and by a sweeper task that looks every quarter of it.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;
use tower::ServiceExt as _;

use crate::body::{Body, BoxError};
use crate::http_client::HttpsConnector;

/// Idle HTTP/1.1 connections kept per target and worker.
pub const MAX_IDLE_PER_TARGET: usize = 1024;

/// Past this many requests waiting for a target's connection, the ones
/// that went away are dropped from the queue.
const WAITING_PRUNE_AT: usize = 64;

thread_local! {
    /// Which shard this thread's requests use: 0 for any thread that is
    /// not a worker, `1 + index` for worker `index`.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `index`: its requests use a shard of
/// their own.
pub fn enter_worker(index: usize) {
    SHARD.with(|shard| shard.set(index + 1));
}

/// The connections to every target of one client, one shard per worker.
#[derive(Debug)]
pub struct Pool {
    connector: HttpsConnector,
    http2: bool,
    idle_timeout: Duration,
    shards: Arc<Vec<Mutex<Shard>>>,
}

/// Where a connection goes: the target's scheme and authority, as the
/// config spells it (targets that differ only in case get pools of their
/// own, which is harmless).
#[derive(Clone, Debug)]
struct Key {
    https: bool,
    authority: Authority,
}

// By hand, on the authority's text in one piece: `Authority`'s own `Hash`
// feeds the hasher one lowercased byte at a time, which cost about 1,000
// instructions per lookup, three lookups per request.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.authority.as_str().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

#[derive(Debug, Default)]
struct Shard {
    http1: HashMap<Key, Vec<Parked>>,
    /// Requests connecting to a target, which take the first connection
    /// given back to it instead if it comes before theirs.
    waiting: HashMap<Key, VecDeque<oneshot::Sender<http1::SendRequest<Body>>>>,
    http2: HashMap<Key, Shared>,
}

#[derive(Debug)]
struct Parked {
    since: Instant,
    sender: http1::SendRequest<Body>,
}

#[derive(Debug)]
struct Shared {
    last_used: Instant,
    sender: http2::SendRequest<Body>,
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened (refused, timed out, TLS failed).
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] BoxError),
    /// The connection failed while the request was sent or answered.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl SendError {
    /// Whether no connection could be made (the target is unreachable).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl Pool {
    /// A pool for `workers` workers (and the threads that are not one).
    pub fn new(
        connector: HttpsConnector,
        http2: bool,
        idle_timeout: Duration,
        workers: usize,
    ) -> Self {
        let shards: Arc<Vec<Mutex<Shard>>> =
            Arc::new((0..=workers).map(|_| Mutex::default()).collect());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&shards), idle_timeout));
        }
        Self {
            connector,
            http2,
            idle_timeout,
            shards,
        }
    }

    fn shard(&self) -> &Mutex<Shard> {
        let index = SHARD.with(std::cell::Cell::get);
        &self.shards[index % self.shards.len()]
    }

    /// Sends `request` to `target` (its scheme and authority; the request's
    /// URI is origin-form for HTTP/1.1 and absolute for HTTP/2).
    pub async fn send(
        &self,
        target: &Uri,
        request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        let key = Key {
            https: target.scheme() == Some(&Scheme::HTTPS),
            authority: target
                .authority()
                .cloned()
                .ok_or_else(|| SendError::Connect("the upstream URL has no host".into()))?,
        };
        if self.http2 {
            let response = self.send_http2(&key, target, request).await?;
            Ok(response.map(|body| PooledBody::new(body, None)))
        } else {
            self.send_http1(key, target, request).await
        }
    }

    async fn send_http1(
        &self,
        key: Key,
        target: &Uri,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        // HTTP/1.1 sends the origin form, and the host in `Host`.
        if request.uri().authority().is_some() {
            let origin = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(origin);
        }
        if !request.headers().contains_key(http::header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(key.authority.as_str())
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let (mut sender, mut reused) = match self.checkout_http1(&key).await {
            Some(idle) => (idle, true),
            None => self.given_back_or_connect(&key, target).await?,
        };
        loop {
            // On a pooled connection the upstream may have closed just
            // before the request was written: a request that can be sent
            // again as it is (idempotent, no body) keeps a copy of its head.
            let again = reused.then(|| resendable(&request)).flatten();
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // A 101 hands the connection to a tunnel: it is not pooled.
                    let back =
                        (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| {
                            Return {
                                pool: self.shard_handle(),
                                key,
                                sender,
                            }
                        });
                    return Ok(response.map(|body| PooledBody::new(body, back)));
                }
                Err(mut err) => match err.take_message() {
                    // Never written: a stale pooled connection. Once more,
                    // on a fresh one.
                    Some(unsent) if reused => {
                        tracing::debug!(error = %err.error(), "a pooled upstream connection was closed; retrying on a new one");
                        request = unsent;
                        sender = Box::pin(self.connect_http1(target)).await?;
                        reused = false;
                    }
                    // Written, then the connection turned out closed
                    // before any answer: sent once more on a fresh one.
                    None if err.error().is_incomplete_message() && again.is_some() => {
                        tracing::debug!(
                            "a pooled upstream connection closed as the request was written; resending it on a new one"
                        );
                        let Some(copy) = again else {
                            return Err(SendError::Exchange(err.into_error()));
                        };
                        request = copy;
                        sender = Box::pin(self.connect_http1(target)).await?;
                        reused = false;
                    }
                    _ => return Err(SendError::Exchange(err.into_error())),
                },
            }
        }
    }

    /// An idle connection to `key` that is ready for a request, if any.
    async fn checkout_http1(&self, key: &Key) -> Option<http1::SendRequest<Body>> {
        loop {
            let mut sender = {
                let mut shard = self.shard().lock().ok()?;
                let idle = shard.http1.get_mut(key)?;
                let now = Instant::now();
                loop {
                    let parked = idle.pop()?;
                    if !parked.sender.is_closed()
                        && now.duration_since(parked.since) < self.idle_timeout
                    {
                        break parked.sender;
                    }
                }
            };
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A connection to `key`: one given back while this one connects
    /// (`true`: it was pooled), or the new one (`false`).
    async fn given_back_or_connect(
        &self,
        key: &Key,
        target: &Uri,
    ) -> Result<(http1::SendRequest<Body>, bool), SendError> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut shard) = self.shard().lock() {
            let waiting = shard.waiting.entry(key.clone()).or_default();
            if waiting.len() >= WAITING_PRUNE_AT {
                waiting.retain(|waiter| !waiter.is_closed());
            }
            waiting.push_back(tx);
        }
        // Boxed, as every connect: opening a connection is rare next to
        // reusing one, and its future (a TLS handshake, HTTP/2's
        // handshake) would otherwise size every request's future.
        let mut connect = Box::pin(self.connect_http1(target));
        tokio::select! {
            biased;
            given = rx => {
                if let Ok(mut sender) = given
                    && sender.ready().await.is_ok()
                {
                    return Ok((sender, true));
                }
                Ok((connect.await?, false))
            }
            connected = &mut connect => Ok((connected?, false)),
        }
    }

    async fn connect_http1(&self, target: &Uri) -> Result<http1::SendRequest<Body>, SendError> {
        let io = self.connect(target).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Exchange)?;
        // With upgrades: a 101 hands the connection to a tunnel.
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn send_http2(
        &self,
        key: &Key,
        target: &Uri,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let shared = self.shard().lock().ok().and_then(|mut shard| {
            let shared = shard.http2.get_mut(key)?;
            if shared.sender.is_closed() {
                return None;
            }
            shared.last_used = Instant::now();
            Some(shared.sender.clone())
        });
        let reused = shared.is_some();
        let mut sender = match shared {
            Some(sender) => sender,
            None => Box::pin(self.connect_http2(key, target)).await?,
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(mut err) => match err.take_message() {
                Some(unsent) if reused => {
                    tracing::debug!(error = %err.error(), "a pooled upstream connection was closed; retrying on a new one");
                    let mut sender = Box::pin(self.connect_http2(key, target)).await?;
                    Ok(sender.send_request(unsent).await?)
                }
                _ => Err(SendError::Exchange(err.into_error())),
            },
        }
    }

    async fn connect_http2(
        &self,
        key: &Key,
        target: &Uri,
    ) -> Result<http2::SendRequest<Body>, SendError> {
        let io = self.connect(target).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        if let Ok(mut shard) = self.shard().lock() {
            shard.http2.insert(
                key.clone(),
                Shared {
                    last_used: Instant::now(),
                    sender: sender.clone(),
                },
            );
        }
        Ok(sender)
    }

    async fn connect(
        &self,
        target: &Uri,
    ) -> Result<<HttpsConnector as tower::Service<Uri>>::Response, SendError> {
        self.connector
            .clone()
            .oneshot(target.clone())
            .await
            .map_err(SendError::Connect)
    }

    fn shard_handle(&self) -> ShardHandle {
        ShardHandle {
            shards: self.shards.clone(),
            index: SHARD.with(std::cell::Cell::get),
        }
    }
}

/// A copy of `request` to send again, when that is safe: an idempotent
/// method (RFC 9110 §9.2.2) and no body.
fn resendable(request: &Request<Body>) -> Option<Request<Body>> {
    use http_body::Body as _;
    if !request.method().is_idempotent() || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Closes connections idle longer than `idle_timeout`, until the pool is gone.
async fn sweep(shards: Weak<Vec<Mutex<Shard>>>, idle_timeout: Duration) {
    let every = (idle_timeout / 4).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(shards) = shards.upgrade() else {
            return;
        };
        let now = Instant::now();
        for shard in shards.iter() {
            let Ok(mut shard) = shard.lock() else {
                continue;
            };
            shard.http1.retain(|_, idle| {
                idle.retain(|parked| {
                    !parked.sender.is_closed() && now.duration_since(parked.since) < idle_timeout
                });
                !idle.is_empty()
            });
            shard.http2.retain(|_, shared| {
                !shared.sender.is_closed() && now.duration_since(shared.last_used) < idle_timeout
            });
        }
    }
}

/// The shard a connection came from, to give it back to.
#[derive(Debug)]
struct ShardHandle {
    shards: Arc<Vec<Mutex<Shard>>>,
    index: usize,
}

/// An HTTP/1.1 connection to give back once its response has been read.
#[derive(Debug)]
struct Return {
    pool: ShardHandle,
    key: Key,
    sender: http1::SendRequest<Body>,
}

impl Return {
    fn park(self) {
        let Return { pool, key, sender } = self;
        if sender.is_closed() {
            return;
        }
        let shard = &pool.shards[pool.index % pool.shards.len()];
        if let Ok(mut shard) = shard.lock() {
            let mut sender = sender;
            // A request connecting to the same target takes it first.
            if let Some(waiting) = shard.waiting.get_mut(&key) {
                while let Some(waiter) = waiting.pop_front() {
                    match waiter.send(sender) {
                        Ok(()) => return,
                        Err(back) => sender = back,
                    }
                }
            }
            let idle = shard.http1.entry(key).or_default();
            if idle.len() < MAX_IDLE_PER_TARGET {
                idle.push(Parked {
                    since: Instant::now(),
                    sender,
                });
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body. Read to its end, it gives its HTTP/1.1
    /// connection back to the pool; dropped before, the connection closes.
    #[derive(Debug)]
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        back: Option<Return>,
    }
}

impl PooledBody {
    fn new(inner: Incoming, back: Option<Return>) -> Self {
        let mut body = Self { inner, back };
        // An empty body (204, 304, HEAD, `Content-Length: 0`) may never be
        // polled: it is read to its end already.
        if http_body::Body::is_end_stream(&body.inner) {
            body.park();
        }
        body
    }

    fn park(&mut self) {
        if let Some(back) = self.back.take() {
            back.park();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            // A reader may stop at the last frame without polling again.
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                // A broken body: the connection is not reused.
                this.back.take();
                false
            }
            Poll::Pending => false,
        };
        if ended && let Some(back) = this.back.take() {
            back.park();
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
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An upstream that answers one request per connection it is given, and
    /// reports when the client closes the connection.
    async fn upstream() -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<usize>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("bind: {err}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("addr: {err}"));
        let (closed, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                conn += 1;
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if stream.write_all(answer).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = closed.send(conn);
                });
            }
        });
        (addr, rx)
    }

    /// A one-shard HTTP/1.1 pool with `idle` as its idle timeout, and the
    /// target `addr` as a URI.
    fn plain_pool(addr: std::net::SocketAddr, idle: Duration) -> (Pool, Uri) {
        let connector =
            crate::http_client::connector(&crate::http_client::ClientOptions::default())
                .unwrap_or_else(|err| panic!("connector: {err}"));
        let target = format!("http://{addr}")
            .parse()
            .unwrap_or_else(|err| panic!("uri: {err}"));
        (Pool::new(connector, false, idle, 1), target)
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_once_its_idle_timeout_runs_out() {
        let (addr, mut closed) = upstream().await;
        let (pool, target) = plain_pool(addr, Duration::from_millis(200));
        let request = Request::get(format!("http://{addr}/"))
            .body(crate::body::empty())
            .unwrap_or_else(|err| panic!("request: {err}"));
        let response = pool
            .send(&target, request)
            .await
            .unwrap_or_else(|err| panic!("send: {err}"));
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|err| panic!("body: {err}"))
            .to_bytes();
        assert_eq!(&body[..], b"ok");
        let parked = pool
            .shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.http1.len()))
            .sum::<usize>();
        assert_eq!(parked, 1, "read to its end, the connection is pooled");
        // Nothing else uses the pool: the sweeper closes the connection.
        let conn = tokio::time::timeout(Duration::from_secs(10), closed.recv()).await;
        assert!(
            matches!(conn, Ok(Some(1))),
            "the idle connection was closed: {conn:?}"
        );
    }

    /// The upstream closes a pooled connection while it sits idle, and the
    /// worker has not run since, so the connection still looks ready: the
    /// next GET is written to it and answered by the close. Without the
    /// resend this is a 502 (`IncompleteMessage`).
    #[tokio::test]
    async fn a_get_written_to_a_connection_the_upstream_just_closed_is_sent_again() {
        use std::io::{Read as _, Write as _};
        // A blocking upstream on its own thread, so closing its side does
        // not let this runtime run the connection's task.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|err| panic!("bind: {err}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("addr: {err}"));
        let (close, closing) = std::sync::mpsc::channel::<()>();
        let (closed, was_closed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut conn = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                conn += 1;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1");
                if conn == 1 {
                    let _ = closing.recv();
                    drop(stream);
                    let _ = closed.send(());
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        let (pool, target) = plain_pool(addr, Duration::from_secs(60));
        let get = || {
            Request::get(format!("http://{addr}/"))
                .body(crate::body::empty())
                .unwrap_or_else(|err| panic!("request: {err}"))
        };
        let first = pool
            .send(&target, get())
            .await
            .unwrap_or_else(|err| panic!("first: {err}"));
        let _ = first.into_body().collect().await;
        // Closed, and this thread blocked until it is: no task has run.
        let _ = close.send(());
        let _ = was_closed.recv();
        let second = pool.send(&target, get()).await;
        assert!(
            matches!(&second, Ok(response) if response.status() == http::StatusCode::OK),
            "the stale connection's refusal was retried: {second:?}"
        );
    }
}
