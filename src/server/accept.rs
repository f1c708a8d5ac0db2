//! Serving the connections one listener accepts: the accept loop of a
//! worker (see [`super::workers`]), the admission at `max_connections`, the
//! TLS handshake, and hyper's HTTP/1.1 + h2c auto builder on each
//! connection. Everything here runs on the accepting worker's own runtime:
//! a connection, its requests and its upstream exchanges stay on one thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower::Service as _;

use super::connections::{Admission, Connections, Tracked};
use super::deadline::FirstByteDeadline;
use super::generation::Live;
use crate::body;
use crate::body::HttpService;
use crate::extensions::ConnectInfo;

/// What every worker's accept loop shares: the connection limit, the
/// generation in force, and how connections are served.
pub(super) struct Acceptor {
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub connections: Connections,
    pub live: Arc<Live>,
    /// The main listener's address, as [`ConnectInfo`] reports it.
    pub local: SocketAddr,
    /// How long a client has for its TLS handshake and first byte.
    pub handshake_timeout: Duration,
}

impl Acceptor {
    /// Accepts connections on `listener` until `stop` resolves, each served
    /// in a task of the current runtime.
    pub async fn accept_until(
        &self,
        listener: &TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                () = &mut stop => return,
                accepted = listener.accept() => accepted,
            };
            let Some((stream, remote)) = accepted_or_log(accepted).await else {
                continue;
            };
            let admission = tokio::select! {
                () = &mut stop => return,
                admission = self.connections.admit() => admission,
            };
            let tls = self.live.tls.load_full();
            let info = ConnectInfo::new(remote, self.local, tls.is_some());
            let service = ConnectionService::new(self.live.clone(), info);
            match tls {
                None => serve_connection(
                    &self.builder,
                    &self.connections,
                    admission,
                    FirstByteDeadline::new(stream, self.handshake_timeout),
                    service,
                ),
                Some(acceptor) => serve_tls_connection(
                    &self.builder,
                    &self.connections,
                    admission,
                    TlsHandshake {
                        acceptor,
                        timeout: self.handshake_timeout,
                        remote,
                    },
                    stream,
                    service,
                ),
            }
        }
    }
}

/// The service of one client connection. The generation in force is looked
/// up per request, so a reload reaches keep-alive connections at their next
/// request; its stack is cloned only when the generation has changed, not
/// per request. Every stack is always ready (see [`crate::routes::dispatch`]), so it
/// is called without `poll_ready`. Between requests the connection holds
/// the stack it last used, so an old generation lives until its idle
/// connections send another request or close.
struct ConnectionService {
    live: Arc<Live>,
    info: ConnectInfo,
    /// The generation this connection last used, and its stack.
    current: std::cell::RefCell<(Arc<HttpService>, HttpService)>,
}

impl ConnectionService {
    fn new(live: Arc<Live>, info: ConnectInfo) -> Self {
        let generation = live.service.load_full();
        let stack = (*generation).clone();
        Self {
            live,
            info,
            current: std::cell::RefCell::new((generation, stack)),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = http::Response<body::Body>;
    type Error = std::convert::Infallible;
    type Future = <HttpService as tower::Service<Request<body::Body>>>::Future;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut request = request.map(body::boxed);
        request.extensions_mut().insert(self.info.clone());
        let mut current = self.current.borrow_mut();
        let in_force = self.live.service.load();
        if !Arc::ptr_eq(&current.0, &in_force) {
            *current = (Arc::clone(&in_force), (**in_force).clone());
        }
        current.1.call(request)
    }
}

/// What serves one connection's requests: a hyper service answering with
/// the gateway's body type, which may move to a task of its own.
pub(super) trait ConnectionHandler:
    hyper::service::Service<
        Request<Incoming>,
        Response = http::Response<body::Body>,
        Future: Send + 'static,
        Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    > + Send
    + 'static
{
}

impl<S> ConnectionHandler for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = http::Response<body::Body>,
            Future: Send + 'static,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + 'static
{
}

/// A connection's byte stream, plain or TLS.
pub(super) trait ConnectionIo:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}

impl<I> ConnectionIo for I where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}

/// What a TLS connection needs before it can be served.
struct TlsHandshake {
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
    /// A client gets as long for the handshake as for its headers.
    timeout: Duration,
    remote: SocketAddr,
}

/// Completes the TLS handshake, then serves the connection like any other.
fn serve_tls_connection<S>(
    builder: &Arc<auto::Builder<TokioExecutor>>,
    connections: &Connections,
    admission: Admission,
    handshake: TlsHandshake,
    stream: TcpStream,
    service: S,
) where
    S: ConnectionHandler,
{
    let builder = builder.clone();
    let connections = connections.clone();
    tokio::spawn(async move {
        let TlsHandshake {
            acceptor,
            timeout,
            remote,
        } = handshake;
        let activity = admission.activity();
        let handshake = tokio::select! {
            handshake = tokio::time::timeout(timeout, acceptor.accept(stream)) => handshake,
            // Evicted or drained while still in the handshake: nothing to finish.
            () = activity.asked_to_close() => return,
        };
        match handshake {
            Ok(Ok(tls_stream)) => {
                // The request must start as promptly after the handshake.
                let io = FirstByteDeadline::new(tls_stream, timeout);
                drive(&builder, &connections, admission, io, service).await;
            }
            Ok(Err(err)) => tracing::debug!(error = %err, %remote, "TLS handshake failed"),
            Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
        }
    });
}

/// Logs an accept error and backs off briefly, so a full file table
/// (EMFILE) does not turn into a busy loop.
pub(super) async fn accepted_or_log(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok((stream, remote)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, remote))
        }
        Err(err) => {
            tracing::warn!(error = %err, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

pub(super) fn serve_connection<I, S>(
    builder: &Arc<auto::Builder<TokioExecutor>>,
    connections: &Connections,
    admission: Admission,
    stream: I,
    service: S,
) where
    I: ConnectionIo,
    S: ConnectionHandler,
{
    let builder = builder.clone();
    let connections = connections.clone();
    tokio::spawn(async move {
        drive(&builder, &connections, admission, stream, service).await;
    });
}

/// Serves one connection, plain or TLS, to its end: closed when idle too
/// long or when asked to (at the limit, at shutdown, after in-flight
/// requests finish); its place is given back when it ends.
async fn drive<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    connections: &Connections,
    admission: Admission,
    io: I,
    service: S,
) where
    I: ConnectionIo,
    S: ConnectionHandler,
{
    let activity = admission.activity();
    let service = Tracked::new(service, activity.clone());
    // With upgrades: a WebSocket handshake's 101 hands the connection over
    // to its tunnel (`proxy::tunnel`), which outlives this task.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let ended = connections.drive(&activity, connection).await;
    drop(admission);
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}
