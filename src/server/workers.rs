//! Thread-per-core serving (`[server] workers`).
//!
//! Each worker is an OS thread running its own current-thread tokio
//! runtime with its own listening socket on the main address. With more
//! than one worker the sockets share the port through `SO_REUSEPORT`, and
//! the kernel spreads new connections across them. A connection is accepted,
//! served, proxied (through the worker's own upstream connections, see
//! [`crate::proxy::pool`]) and answered on the one thread that accepted it:
//! no request crosses threads, no task is stolen, no lock is contended.
//!
//! The caller's runtime keeps what is not per request: the admin listener,
//! health checks, reloads, the audit writer, the shared-state connections.
//!
//! Shutdown has two steps, so the drain can happen in between:
//! [`Workers::stop_accepting`] closes every listener (new connections are
//! refused by the kernel, in-flight ones go on), and [`Workers::finish`]
//! ends the runtimes once the caller has drained what it waits for. Dropping
//! [`Workers`] does both at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use super::accept::Acceptor;

/// The listening backlog of each worker's socket.
const BACKLOG: u32 = 1024;

/// How long a worker's runtime may take to end its blocking tasks when the
/// worker finishes.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// Binds `workers` listening sockets on `addr`, and returns them with the
/// address they share (the real port when `addr` asked for port 0).
///
/// With more than one worker, the sockets are bound with `SO_REUSEPORT`,
/// and the first of them holds the port while the others join it: the port
/// is never free in between, so no other socket (an outgoing connection's
/// source port, another gateway) can take it.
///
/// - A port asked for by number is first bound once without `SO_REUSEPORT`
///   and released, so that two gateways started on one port by mistake fail
///   as they would without it (`address in use`).
/// - Port 0 needs no such probe: Linux shares a port between `SO_REUSEPORT`
///   sockets only when it is asked for by number, never an ephemeral one.
pub(super) fn bind(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    if workers <= 1 {
        let only = listen(addr, false)?;
        return Ok((only.local_addr()?, vec![only.into_std()?]));
    }
    if addr.port() != 0 {
        drop(listen(addr, false)?);
    }
    let first = listen(addr, true)?;
    let local = first.local_addr()?;
    let mut listeners = Vec::with_capacity(workers);
    listeners.push(first.into_std()?);
    for _ in 1..workers {
        listeners.push(listen(local, true)?.into_std()?);
    }
    Ok((local, listeners))
}

fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The running workers.
pub(super) struct Workers {
    stop_accepting: watch::Sender<bool>,
    finish: watch::Sender<bool>,
    /// One per worker: resolves when it has closed its listener.
    closed: Vec<oneshot::Receiver<()>>,
    /// One per worker: resolves when its thread is done.
    exited: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one worker per listener, each accepting with `acceptor`. A
    /// worker whose thread cannot be started is logged and skipped (its
    /// socket is closed, so the kernel sends its connections to the others).
    pub fn start(listeners: Vec<std::net::TcpListener>, acceptor: Arc<Acceptor>) -> Workers {
        let (stop_accepting, stop_rx) = watch::channel(false);
        let (finish, finish_rx) = watch::channel(false);
        let mut workers = Workers {
            stop_accepting,
            finish,
            closed: Vec::new(),
            exited: Vec::new(),
        };
        for (index, listener) in listeners.into_iter().enumerate() {
            let (closed_tx, closed_rx) = oneshot::channel();
            let (exited_tx, exited_rx) = oneshot::channel();
            let worker = Worker {
                index,
                listener,
                acceptor: acceptor.clone(),
                stop: stop_rx.clone(),
                finish: finish_rx.clone(),
                closed: closed_tx,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("warden-worker-{index}"))
                .spawn(move || {
                    worker.run();
                    let _ = exited_tx.send(());
                });
            match spawned {
                Ok(_) => {
                    workers.closed.push(closed_rx);
                    workers.exited.push(exited_rx);
                }
                Err(err) => {
                    tracing::error!(worker = index, error = %err, "cannot start a worker thread; serving without it")
                }
            }
        }
        if workers.exited.is_empty() {
            tracing::error!("no worker thread could be started: nothing serves the main listener");
        }
        workers
    }

    /// Closes every worker's listener; in-flight connections go on.
    pub async fn stop_accepting(&mut self) {
        let _ = self.stop_accepting.send(true);
        for closed in self.closed.drain(..) {
            let _ = closed.await;
        }
    }

    /// Ends every worker's runtime (and what still runs on it) and waits
    /// for their threads.
    pub async fn finish(mut self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.finish.send(true);
        for exited in self.exited.drain(..) {
            let _ = exited.await;
        }
    }
}

/// One worker thread's share.
struct Worker {
    index: usize,
    listener: std::net::TcpListener,
    acceptor: Arc<Acceptor>,
    stop: watch::Receiver<bool>,
    finish: watch::Receiver<bool>,
    closed: oneshot::Sender<()>,
}

impl Worker {
    fn run(self) {
        let Worker {
            index,
            listener,
            acceptor,
            mut stop,
            mut finish,
            closed,
        } = self;
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(error = %err, "cannot start a worker's runtime; serving without it");
                return;
            }
        };
        crate::proxy::pool::enter_worker(index);
        runtime.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    // A dropped sender (the gateway went away) stops it too.
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    acceptor.accept_until(&listener, stopped).await;
                }
                Err(err) => tracing::error!(error = %err, "a worker cannot use its listener"),
            }
            let _ = closed.send(());
            let _ = finish.wait_for(|finish| *finish).await;
        });
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// What `bind` relies on for port 0: the kernel never hands one
    /// gateway's ephemeral `SO_REUSEPORT` port to another, so two gateways
    /// started on port 0 at once (as the tests do) never share a port.
    #[tokio::test]
    async fn gateways_on_port_zero_never_share_a_port() {
        let mut held = Vec::new();
        let mut ports = std::collections::HashSet::new();
        for _ in 0..64 {
            let (local, listeners) = bind(loopback_any_port(), 2).expect("binds port 0");
            assert_eq!(listeners.len(), 2);
            for listener in &listeners {
                assert_eq!(listener.local_addr().expect("bound").port(), local.port());
            }
            assert!(ports.insert(local.port()), "port {local} handed out twice");
            held.push(listeners);
        }
    }

    /// The port is held from the first socket on: a socket without
    /// `SO_REUSEPORT` (an outgoing connection's source port, a plain
    /// listener) cannot take it.
    #[tokio::test]
    async fn the_shared_port_is_held_against_plain_sockets() {
        let (local, _listeners) = bind(loopback_any_port(), 3).expect("binds port 0");
        let taken = std::net::TcpListener::bind(local);
        assert_eq!(
            taken.expect_err("the port is held").kind(),
            std::io::ErrorKind::AddrInUse
        );
    }

    /// A port asked for by number that another `SO_REUSEPORT` group holds
    /// is refused, not joined.
    #[tokio::test]
    async fn a_numbered_port_held_by_another_group_is_refused() {
        let (local, _first) = bind(loopback_any_port(), 2).expect("binds port 0");
        let second = bind(local, 2);
        assert_eq!(
            second.expect_err("the port is taken").kind(),
            std::io::ErrorKind::AddrInUse
        );
    }
}
