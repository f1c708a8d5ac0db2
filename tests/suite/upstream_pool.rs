//! The upstream connections of the serving model (issue 15): keep-alive
//! reuse, a connection the upstream closed while idle, a response not read
//! to its end, and `[server] workers`.
//!
//! The upstream here is a raw HTTP/1.1 server over `TcpListener`, so the
//! test sees which upstream connection carried each request and when the
//! gateway closed one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::{PATIENCE, config, get, route, spawn_gateway};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the raw upstream saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// A request for `path` on connection `conn`.
    Request { conn: usize, path: String },
    /// The gateway closed connection `conn` (the upstream read EOF or
    /// failed to write).
    ClosedByGateway { conn: usize },
    /// The upstream closed connection `conn` itself, after answering.
    ClosedByUpstream { conn: usize },
}

/// A raw HTTP/1.1 upstream. Paths:
/// - `/ok`: 200 `ok`, keep-alive;
/// - `/then-close`: 200 `ok` (keep-alive, as far as its headers say), then
///   the upstream closes the connection, as one whose idle timeout ran out;
/// - `/big`: 200 with a 64 MiB `Content-Length`, written until the gateway
///   stops reading.
struct RawUpstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                next += 1;
                tokio::spawn(serve(stream, next, tx.clone(), shared.clone()));
            }
        });
        Self { addr, seen, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next event.
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("the upstream sees something in time")
            .expect("the upstream runs")
    }

    fn requests(&self) -> Vec<(usize, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|seen| match seen {
                Seen::Request { conn, path } => Some((*conn, path.clone())),
                _ => None,
            })
            .collect()
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    tx: mpsc::UnboundedSender<Seen>,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let report = |seen: Seen| {
        log.lock().unwrap().push(seen.clone());
        let _ = tx.send(seen);
    };
    let mut buffer = Vec::new();
    loop {
        // One request head (the gateway sends these GETs without a body).
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    report(Seen::ClosedByGateway { conn });
                    return;
                }
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        report(Seen::Request {
            conn,
            path: path.clone(),
        });
        match path.as_str() {
            "/big" => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 67108864\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    report(Seen::ClosedByGateway { conn });
                    return;
                }
                let chunk = vec![b'z'; 64 * 1024];
                for _ in 0..1024 {
                    if stream.write_all(&chunk).await.is_err() {
                        report(Seen::ClosedByGateway { conn });
                        return;
                    }
                }
                return;
            }
            "/then-close" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
                drop(stream);
                report(Seen::ClosedByUpstream { conn });
                return;
            }
            _ => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    report(Seen::ClosedByGateway { conn });
                    return;
                }
            }
        }
    }
}

fn one_worker(upstream: &RawUpstream) -> String {
    config("workers = 1", &route("svc", "/", &upstream.url(), ""))
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let upstream = RawUpstream::start().await;
    let gateway = spawn_gateway(&one_worker(&upstream)).await;
    for _ in 0..5 {
        // A new client connection each time: the upstream connection is
        // the worker's, not the client connection's.
        let reply = get(&gateway.url("/ok")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], b"ok");
    }
    let conns: Vec<usize> = upstream.requests().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, vec![1; 5], "one keep-alive upstream connection");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let mut upstream = RawUpstream::start().await;
    let gateway = spawn_gateway(&one_worker(&upstream)).await;
    for round in 0..20 {
        let reply = get(&gateway.url("/then-close")).await;
        assert_eq!(reply.status, StatusCode::OK, "round {round}");
        // Wait until the upstream has closed it: the gateway's pooled
        // connection is stale from here on.
        loop {
            if let Seen::ClosedByUpstream { .. } = upstream.next().await {
                break;
            }
        }
        // The next request either finds the connection closed, or is
        // refused by it before a byte is written and retried on a new one:
        // never a 502.
        let reply = get(&gateway.url("/ok")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "round {round}: {:?}",
            reply.body
        );
    }
    // No request went to a connection after the upstream closed it.
    let log = upstream.log.lock().unwrap().clone();
    let mut closed = std::collections::HashSet::new();
    for seen in log {
        match seen {
            Seen::ClosedByUpstream { conn } => {
                closed.insert(conn);
            }
            Seen::Request { conn, path } => {
                assert!(!closed.contains(&conn), "{path} sent on closed {conn}")
            }
            Seen::ClosedByGateway { .. } => {}
        }
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_response_not_read_to_its_end_closes_its_upstream_connection() {
    let mut upstream = RawUpstream::start().await;
    let gateway = spawn_gateway(&one_worker(&upstream)).await;
    // A client that reads the head of a big answer and goes away.
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let n = tokio::time::timeout(PATIENCE, client.read(&mut head))
        .await
        .expect("the head arrives")
        .unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    drop(client);
    assert_eq!(
        upstream.next().await,
        Seen::Request {
            conn: 1,
            path: "/big".into()
        }
    );
    // The half-read upstream connection is closed, not pooled...
    assert_eq!(upstream.next().await, Seen::ClosedByGateway { conn: 1 });
    // ...so the next request goes on a new one.
    let reply = get(&gateway.url("/ok")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        upstream.next().await,
        Seen::Request {
            conn: 2,
            path: "/ok".into()
        }
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn several_workers_serve_concurrent_connections_and_drain() {
    let upstream = RawUpstream::start().await;
    let gateway = spawn_gateway(&config(
        "workers = 3",
        &route("svc", "/", &upstream.url(), ""),
    ))
    .await;
    let url = gateway.url("/ok");
    let replies = futures_util::future::join_all((0..32).map(|_| get(&url))).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(upstream.requests().len(), 32);
    // Each worker keeps its own upstream connections, so there are at most
    // as many as concurrent requests, and at least one.
    let conns: std::collections::HashSet<usize> =
        upstream.requests().iter().map(|(c, _)| *c).collect();
    assert!(!conns.is_empty() && conns.len() <= 32);
    let addr = gateway.addr;
    gateway.shutdown().await;
    // Drained: every worker's listening socket is closed.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn workers_outside_the_range_are_refused_with_the_fix() {
    for bad in ["0", "5000"] {
        let toml = config(&format!("workers = {bad}"), "");
        let err = warden::Config::from_toml(&toml, "gateway.toml")
            .expect_err("an out-of-range worker count is refused")
            .to_string();
        assert!(err.contains("server.workers"), "{err}");
        assert!(err.contains("1..=1024"), "{err}");
        assert!(err.contains("gateway.toml:4"), "names the line: {err}");
    }
}

#[tokio::test]
async fn several_workers_do_not_join_a_port_another_gateway_serves() {
    // Held by another gateway with several workers: bound with
    // SO_REUSEPORT, so a second SO_REUSEPORT socket of the same user would
    // join it and take half its connections.
    let taken = tokio::net::TcpSocket::new_v4().unwrap();
    taken.set_reuseport(true).unwrap();
    taken.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let taken = taken.listen(16).unwrap();
    let addr = taken.local_addr().unwrap();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 2\n{}",
        route("svc", "/", "http://127.0.0.1:9", "")
    );
    let config = warden::Config::from_toml(&toml, "test.toml").unwrap();
    let err = warden::Gateway::bind(config, prometheus::Registry::new())
        .await
        .expect_err("a port another gateway serves is refused, not shared")
        .to_string();
    assert!(
        err.contains("server.listen") && err.contains(&addr.to_string()),
        "{err}"
    );
}
