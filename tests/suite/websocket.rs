//! WebSocket through the gateway (SPEC §15): the RFC 6455 handshake goes to
//! the upstream, and once it answers 101 the bytes go both ways, tunnelled.
//! A real WebSocket client (tokio-tungstenite) talks to the real gateway in
//! front of a real WebSocket echo server; the tunnel is authorised, counted,
//! audited and bounded like any request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use warden::StartOptions;
use warden::clock::unix_now;

const ISS: &str = "https://warden.websocket.test";

/// A WebSocket server that echoes every message and keeps the handshake
/// requests' headers.
struct EchoServer {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<http::HeaderMap>>>,
    connections: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let (seen, count) = (handshakes.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                let seen = seen.clone();
                tokio::spawn(async move {
                    let callback = |request: &WsRequest, response: WsResponse| {
                        seen.lock().unwrap().push(request.headers().clone());
                        Ok(response)
                    };
                    let Ok(mut socket) =
                        tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_close() {
                            break;
                        }
                        if socket.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            connections,
            task,
        }
    }

    fn handshakes(&self) -> Vec<http::HeaderMap> {
        self.handshakes.lock().unwrap().clone()
    }
}

struct Fixture {
    gateway: TestGateway,
    audit: AuditCapture,
    echo: EchoServer,
    key: TestKey,
    _key_file: TempFile,
}

async fn fixture(server_extra: &str) -> Fixture {
    warden::crypto::install_providers();
    let echo = EchoServer::start().await;
    let key = TestKey::generate("ws-hs256", Algorithm::HS256);
    let key_file = key.file();
    let up = format!("http://{}", echo.addr);
    let rest = format!(
        r#"{entry}
[issuer]
iss = "{ISS}"
aud = ["warden"]

[[routes]]
name = "ws"
path_prefix = "/ws"
upstream = "{up}"
scopes = ["chat"]

[[routes]]
name = "plain-only"
path_prefix = "/plain"
upstream = "{up}"
auth = "none"
upgrades = []
"#,
        entry = key.config_entry(&key_file),
    );
    let (writer, audit) = audit_capture(1024);
    let options = StartOptions {
        audit_writer: Some(writer),
        ..StartOptions::default()
    };
    let gateway = spawn_gateway_with(&config(server_extra, &rest), options).await;
    Fixture {
        gateway,
        audit,
        echo,
        key,
        _key_file: key_file,
    }
}

impl Fixture {
    fn token(&self, scope: &str) -> String {
        let now = unix_now();
        self.key.token(&json!({
            "iss": ISS, "aud": "warden", "sub": "alice", "iat": now, "exp": now + 600, "scope": scope,
        }))
    }

    async fn connect(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<
        (
            tokio_tungstenite::WebSocketStream<TcpStream>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        WsError,
    > {
        let mut request = format!("ws://{}{path}", self.gateway.addr)
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let stream = TcpStream::connect(self.gateway.addr).await.unwrap();
        tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("the handshake ends within the test's patience")
    }
}

#[tokio::test]
async fn an_authorised_websocket_is_tunnelled_both_ways_counted_and_audited() {
    let f = fixture("").await;
    let token = f.token("chat");
    let (mut socket, response) = f
        .connect("/ws/room/1", Some(&token))
        .await
        .expect("the handshake");
    assert_eq!(response.status(), 101);
    let key = response
        .headers()
        .get("x-execution-key")
        .and_then(|v| v.to_str().ok())
        .expect("the 101 carries the execution key")
        .to_owned();

    socket.send(Message::text("hello")).await.unwrap();
    let echoed = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hello"));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    socket.send(Message::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data().as_ref(), big.as_slice());

    // The upstream's handshake: no client token, the request's key.
    let handshake = f
        .echo
        .handshakes()
        .pop()
        .expect("the upstream got the handshake");
    assert!(handshake.get("authorization").is_none());
    assert_eq!(
        handshake
            .get("x-execution-key")
            .and_then(|v| v.to_str().ok()),
        Some(key.as_str())
    );
    assert!(handshake.get("sec-websocket-key").is_some());

    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    drop(socket);
    let metrics = scrape_until(
        f.gateway.admin,
        &[r#"warden_tunnels_total{end="closed",route="ws"} 1"#],
    )
    .await;
    assert!(metrics.contains("warden_tunnels_active 0"), "{metrics}");
    f.audit
        .wait_for(|e| e["event"] == "token_use" && e["status"] == 101 && e["execution_key"] == key)
        .await;
}

#[tokio::test]
async fn a_handshake_without_a_valid_token_or_scope_never_reaches_the_upstream() {
    let f = fixture("").await;
    match f.connect("/ws/room/1", None).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert!(response.headers().get("www-authenticate").is_some());
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let weak = f.token("read");
    match f.connect("/ws/room/1", Some(&weak)).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(*f.echo.connections.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_route_that_allows_no_upgrade_passes_the_request_on_as_plain_http() {
    let f = fixture("").await;
    match f.connect("/plain/x", None).await {
        Err(WsError::Http(response)) => assert_ne!(response.status(), 101),
        other => panic!("expected no upgrade, got {other:?}"),
    }
    let handshake = f.echo.handshakes();
    assert!(
        handshake.is_empty(),
        "the upstream saw no WebSocket handshake"
    );
    // It did see the request: as plain HTTP, which it would not upgrade.
    assert_eq!(*f.echo.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let f = fixture("tunnel_idle_timeout = \"300ms\"").await;
    let token = f.token("chat");
    let (mut socket, _) = f
        .connect("/ws/room/1", Some(&token))
        .await
        .expect("the handshake");
    let started = Instant::now();
    // Nothing is sent: the gateway closes the tunnel, and the stream ends.
    let next = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("the tunnel closes");
    assert!(!matches!(next, Some(Ok(Message::Text(_)))), "{next:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    scrape_until(
        f.gateway.admin,
        &[r#"warden_tunnels_total{end="idle",route="ws"} 1"#],
    )
    .await;
}

#[tokio::test]
async fn a_shutdown_lets_tunnels_run_through_the_grace_period_then_closes_them() {
    let f = fixture("shutdown_grace = \"400ms\"").await;
    let token = f.token("chat");
    let (mut socket, _) = f
        .connect("/ws/room/1", Some(&token))
        .await
        .expect("the handshake");
    let Fixture { gateway, .. } = f;
    let started = Instant::now();
    let stopping = tokio::spawn(gateway.shutdown());
    // Within the grace period the tunnel still carries messages.
    socket.send(Message::text("still there?")).await.unwrap();
    let echoed = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("still there?"));
    // Then it is closed, and the gateway's shutdown completes.
    let next = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("the tunnel closes");
    assert!(!matches!(next, Some(Ok(Message::Text(_)))), "{next:?}");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(350));
}

#[tokio::test]
async fn tunnels_are_bounded_by_max_connections_and_end_with_their_token() {
    let f = fixture("max_connections = 2").await;
    let token = f.token("chat");
    let (_first, _) = f
        .connect("/ws/a", Some(&token))
        .await
        .expect("the first tunnel");
    let (_second, _) = f
        .connect("/ws/b", Some(&token))
        .await
        .expect("the second tunnel");
    match f.connect("/ws/c", Some(&token)).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected a 503 at the limit, got {other:?}"),
    }
    drop((_first, _second));
    scrape_until(f.gateway.admin, &["warden_tunnels_active 0"]).await;

    // A token that expires in two seconds: so does its tunnel.
    let now = unix_now();
    let short = f.key.token(&json!({
        "iss": ISS, "aud": "warden", "sub": "alice", "iat": now, "exp": now + 2, "scope": "chat",
    }));
    let (mut socket, _) = f
        .connect("/ws/d", Some(&short))
        .await
        .expect("the handshake");
    socket.send(Message::text("ping")).await.unwrap();
    let mut ended = false;
    while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, socket.next()).await {
        if !matches!(message, Ok(Message::Text(_))) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the tunnel ended with its token");
    scrape_until(
        f.gateway.admin,
        &[r#"warden_tunnels_total{end="max_duration",route="ws"} 1"#],
    )
    .await;
}

#[tokio::test]
async fn only_the_allowed_protocol_goes_upstream_and_a_101_to_another_is_a_502() {
    let f = fixture("").await;
    let token = f.token("chat");
    // The client offers websocket and h2c: the upstream hears of websocket only.
    let request = format!(
        "GET /ws/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let head = response_head(f.gateway.addr, &request).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let handshake = f
        .echo
        .handshakes()
        .pop()
        .expect("the upstream got the handshake");
    assert_eq!(
        handshake.get("upgrade").and_then(|v| v.to_str().ok()),
        Some("websocket")
    );

    // An upstream that switches to h2c instead.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let odd = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
                    .await;
                let _ = stream.read(&mut buffer).await;
            });
        }
    });
    let key = TestKey::generate("odd-hs256", Algorithm::HS256);
    let key_file = key.file();
    let toml = config(
        "",
        &format!(
            "{entry}\n[issuer]\niss = \"{ISS}\"\naud = [\"warden\"]\n\n[[routes]]\nname = \"odd\"\npath_prefix = \"/odd\"\nupstream = \"http://{odd}\"\n",
            entry = key.config_entry(&key_file),
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    let now = unix_now();
    let token = key.token(&json!({"iss": ISS, "aud": "warden", "sub": "a", "exp": now + 60}));
    let request = format!(
        "GET /odd/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let head = response_head(gateway.addr, &request).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
}

/// Sends `request` and reads the response head (the connection may stay open).
async fn response_head(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}
