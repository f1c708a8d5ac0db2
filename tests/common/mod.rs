//! The shared harness of the integration tests.
//!
//! - [`spawn_gateway`] runs the library's [`Gateway`] in this process, on
//!   `127.0.0.1:0` for both listeners;
//! - [`spawn_warden`] runs the `warden` binary with a config file, reads its
//!   JSON log lines, and learns its ports from the `listening` line; every
//!   JSON line is checked for a repeated key ([`check_line`]), and the test
//!   fails if one repeats;
//! - [`RecordingUpstream`] is a small hyper server that records every request
//!   it gets and can be slow, stream a big answer, or add headers;
//! - [`send`], [`get`] and [`raw_request`] are the clients: hyper-util's
//!   pooled client for ordinary requests, raw HTTP/1.1 over a `TcpStream` for
//!   bytes a client library would normalise or refuse to send.
//!
//! - [`redis_server::RedisServer`] is a `redis-server` of the test's own,
//!   for the shared-state tests.
//!
//! Nothing waits for a port by sleeping: every listener is bound before its
//! address is handed out.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod redis_server;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use warden::{Config, Gateway};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the test client sends.
pub type TestBody = BoxBody<Bytes, BoxError>;

// ---------------------------------------------------------------------------
// Configs

/// A `[server]` section on ephemeral ports, followed by `rest` (more
/// `[server]` keys first, then other sections).
pub fn config(server_extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n{rest}"
    )
}

/// A public `[[routes]]` table.
pub fn route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\nauth = \"none\"\n{extra}\n"
    )
}

// ---------------------------------------------------------------------------
// The gateway, in process

/// A gateway serving in a background task.
#[derive(Debug)]
pub struct TestGateway {
    /// The main listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    /// `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://{admin}{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Triggers the shutdown and waits until `serve` has drained and returned.
    pub async fn shutdown(mut self) {
        if let Some(trigger) = self.shutdown.take() {
            let _ = trigger.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("the gateway drains within the test's patience")
                .expect("the serve task does not panic");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(trigger) = self.shutdown.take() {
            let _ = trigger.send(());
        }
    }
}

/// Parses `toml`, binds the gateway on its (ephemeral) ports and serves it.
pub async fn spawn_gateway(toml: &str) -> TestGateway {
    let config = match Config::from_toml(toml, "test.toml") {
        Ok(config) => config,
        Err(err) => panic!("the test config is invalid:\n{err}\n---\n{toml}"),
    };
    let gateway = Gateway::bind(config, prometheus::Registry::new())
        .await
        .expect("the gateway binds 127.0.0.1:0");
    let addr = gateway.local_addr().expect("main listener address");
    let admin = gateway.admin_addr().expect("admin listener address");
    let (trigger, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(async move {
        let _ = stop.await;
    }));
    TestGateway {
        addr,
        admin,
        shutdown: Some(trigger),
        task: Some(task),
    }
}

/// An address on which nothing listens, and nothing can start to: a
/// socket is bound to it but never listens, so a connection to it is
/// refused (RST), and the port is held until the test binary exits, so no
/// other test's listener can be given it (a port bound and released could
/// be).
pub fn refused_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("local address");
    // Held on purpose for the life of the process: a few per test binary.
    std::mem::forget(socket);
    addr
}

/// An address nothing listens on right now, for a test that binds it
/// itself later: bound, read, released, so another socket could take it in
/// between. Where nothing should ever answer, use [`refused_addr`].
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

// ---------------------------------------------------------------------------
// The recording upstream

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// The request target: path and query, exactly as sent.
    pub target: String,
    pub headers: HeaderMap,
    /// The number of body bytes received.
    pub body_len: u64,
}

impl Recorded {
    /// The one value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the recording upstream does once it has read a request.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Waits this long before answering (after recording the request).
    pub delay: Duration,
    /// Extra response headers.
    pub headers: Vec<(&'static str, &'static str)>,
    /// Answers with `count` chunks of `size` bytes, without Content-Length.
    pub stream: Option<(usize, usize)>,
}

impl Behaviour {
    /// Answers 200 at once.
    pub fn ok() -> Self {
        Self::default()
    }

    /// Answers 200 after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Streams `count` chunks of `size` bytes.
    pub fn streaming(size: usize, count: usize) -> Self {
        Self {
            stream: Some((size, count)),
            ..Self::default()
        }
    }

    /// Adds response headers.
    pub fn with_headers(headers: Vec<(&'static str, &'static str)>) -> Self {
        Self {
            headers,
            ..Self::default()
        }
    }
}

/// A hyper server on `127.0.0.1:0` that records each request and answers 200.
#[derive(Debug)]
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    records: Arc<Mutex<Vec<Recorded>>>,
    arrivals: tokio::sync::Mutex<mpsc::UnboundedReceiver<Recorded>>,
    first_body_bytes: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct UpstreamState {
    behaviour: Behaviour,
    heads: Arc<Mutex<Vec<String>>>,
    records: Arc<Mutex<Vec<Recorded>>>,
    arrivals: mpsc::UnboundedSender<Recorded>,
    first_body_bytes: Arc<Notify>,
}

impl RecordingUpstream {
    /// Binds and serves an upstream that behaves as `behaviour` says.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let records = Arc::new(Mutex::new(Vec::new()));
        let (sender, arrivals) = mpsc::unbounded_channel();
        let first_body_bytes = Arc::new(Notify::new());
        let state = Arc::new(UpstreamState {
            behaviour,
            heads: heads.clone(),
            records: records.clone(),
            arrivals: sender,
            first_body_bytes: first_body_bytes.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            heads,
            records,
            arrivals: tokio::sync::Mutex::new(arrivals),
            first_body_bytes,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The target of every request whose head arrived, complete or not,
    /// oldest first.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Every request received in full so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    /// The next request to arrive (in full, body included).
    pub async fn next_request(&self) -> Recorded {
        let mut arrivals = self.arrivals.lock().await;
        tokio::time::timeout(PATIENCE, arrivals.recv())
            .await
            .expect("a request reaches the upstream")
            .expect("the upstream is running")
    }

    /// Resolves once the first body bytes of some request have arrived.
    pub async fn body_started(&self) {
        tokio::time::timeout(PATIENCE, self.first_body_bytes.notified())
            .await
            .expect("body bytes reach the upstream");
    }
}

async fn answer(state: &UpstreamState, request: Request<Incoming>) -> Response<TestBody> {
    let (parts, mut body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(String::new, ToString::to_string);
    state.heads.lock().unwrap().push(target.clone());
    let mut body_len = 0u64;
    // Counted frame by frame: a 64 MiB body is never held in memory.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The sender gave up half-way: not a request that arrived.
            return Response::new(empty());
        };
        if let Some(data) = frame.data_ref() {
            if body_len == 0 && !data.is_empty() {
                state.first_body_bytes.notify_one();
            }
            body_len += data.len() as u64;
        }
    }
    let recorded = Recorded {
        method: parts.method,
        target,
        headers: parts.headers,
        body_len,
    };
    state.records.lock().unwrap().push(recorded.clone());
    let _ = state.arrivals.send(recorded);

    let behaviour = &state.behaviour;
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    let mut response = match behaviour.stream {
        Some((size, count)) => {
            let chunk = Bytes::from(vec![b'x'; size]);
            let frames = futures_util::stream::iter(
                (0..count).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
            );
            Response::new(BoxBody::new(StreamBody::new(frames)))
        }
        None => Response::new(full("upstream ok\n")),
    };
    for (name, value) in &behaviour.headers {
        response.headers_mut().append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

// ---------------------------------------------------------------------------
// The HTTP client

/// An empty request body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body of one buffer (with a Content-Length).
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body of `count` chunks of `size` bytes. Without a
/// Content-Length header it goes out chunked.
pub fn chunks(size: usize, count: usize) -> TestBody {
    let chunk = Bytes::from(vec![b'y'; size]);
    let frames = futures_util::stream::iter(
        (0..count).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    BoxBody::new(StreamBody::new(frames))
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client that speaks HTTP/2 over cleartext (prior knowledge).
pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response, its body read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The one value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "the body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `X-Execution-Key` response header.
    pub fn execution_key(&self) -> &str {
        self.header("x-execution-key")
            .expect("every response carries X-Execution-Key")
    }
}

/// Sends `request` on a new HTTP/1.1 client and reads the whole response.
pub async fn send(request: Request<TestBody>) -> Reply {
    send_on(&client(), request).await
}

/// Sends `request` on `client` and reads the whole response.
pub async fn send_on(
    client: &Client<HttpConnector, TestBody>,
    request: Request<TestBody>,
) -> Reply {
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the gateway answers in time")
        .expect("the request gets a response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the response body ends in time")
        .expect("the response body reads")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send(Request::get(url).body(empty()).unwrap()).await
}

/// `GET url` with extra headers (appended, so a name may repeat).
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url).body(empty()).unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    send(request).await
}

/// Asserts the JSON error answer of SPEC §3: status, `error` code,
/// `application/json`, and an `execution_key` equal to the header's.
pub fn assert_json_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "body: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(
        body["execution_key"].as_str(),
        Some(reply.execution_key()),
        "the body's execution_key is the header's"
    );
}

/// Asserts that `key` is a UUID of version 7.
pub fn assert_uuid_v7(key: &str) {
    let uuid = uuid::Uuid::parse_str(key).unwrap_or_else(|err| panic!("{key:?}: {err}"));
    assert_eq!(uuid.get_version_num(), 7, "{key} is not a UUIDv7");
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names lowercased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "the body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the JSON error answer: status, code, and the execution key
    /// in the body equal to the header's.
    pub fn assert_json_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert_eq!(
            body["execution_key"].as_str(),
            self.header("x-execution-key"),
            "the body's execution_key is the header's"
        );
    }
}

/// `GET target` over a raw socket, with `Connection: close` and `headers`
/// (each a full `Name: value` line).
pub async fn raw_get(addr: SocketAddr, target: &str, headers: &[&str]) -> RawReply {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: gateway.test\r\n");
    for line in headers {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).await
}

/// Writes `request` as it is and reads the response until the server closes.
/// The request should ask for `Connection: close`.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.split();
    let mut received = Vec::new();
    // Read while writing: a server that refuses a large request answers and
    // closes before it has read all of it.
    let writing = async {
        let _ = write.write_all(request).await;
        let _ = write.flush().await;
    };
    let reading = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived still leaves the answer.
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(PATIENCE, async { tokio::join!(writing, reading) })
        .await
        .expect("the server answers and closes in time");
    parse_raw(&received)
}

fn parse_raw(bytes: &[u8]) -> RawReply {
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
    let head = String::from_utf8_lossy(&bytes[..text_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &bytes[text_end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size_text = String::from_utf8_lossy(&bytes[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return body;
        }
        let start = eol + 2;
        let end = (start + size).min(bytes.len());
        body.extend_from_slice(&bytes[start..end]);
        bytes = bytes.get(end + 2..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------
// The admin listener

/// `GET /metrics` on the admin listener, as text.
pub async fn scrape(admin: SocketAddr) -> String {
    let reply = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8(reply.body.to_vec()).expect("metrics are UTF-8")
}

/// Scrapes until every line of `wanted` is in the output. The access log and
/// metrics are recorded when the response body ends on the server side, a
/// moment after the client has read it, so one scrape may be early.
pub async fn scrape_until(admin: SocketAddr, wanted: &[&str]) -> String {
    scrape_until_within(admin, wanted, PATIENCE).await
}

/// [`scrape_until`], giving up after `patience`.
pub async fn scrape_until_within(admin: SocketAddr, wanted: &[&str], patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    loop {
        let text = scrape(admin).await;
        if wanted.iter().all(|w| text.lines().any(|line| line == *w)) {
            return text;
        }
        if Instant::now() >= deadline {
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("warden_") && !l.contains("_bucket{"))
                .collect();
            panic!(
                "metrics never showed {wanted:?}; the warden_ samples:\n{}",
                samples.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// The binary

/// A config file under the test target's temporary directory, removed on drop.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "warden-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, text).expect("write the config file");
        Self { path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `warden ARGS`: the binary under test, with `RUST_LOG` cleared so the
/// config decides the log level.
pub fn warden_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    command.args(args).env_remove("RUST_LOG");
    command
}

/// A `warden run` process whose stdout is read line by line.
#[derive(Debug)]
pub struct WardenProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Lines read but not yet asked for.
    seen: VecDeque<Value>,
    /// JSON lines that repeat a key, with why.
    unreadable: Arc<Mutex<Vec<String>>>,
    _config: ConfigFile,
}

/// Starts `warden run --config <file with toml>` (which must log JSON) and
/// waits for its `listening` line.
pub async fn spawn_warden(toml: &str) -> WardenProcess {
    spawn_warden_with_env(toml, &[]).await
}

/// [`spawn_warden`], with `env` set for the process (a Redis URL, say).
pub async fn spawn_warden_with_env(toml: &str, env: &[(&str, &str)]) -> WardenProcess {
    let config = ConfigFile::new(toml);
    let mut child = warden_command(&["run", "--config", config.path_str()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the warden binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = mpsc::unbounded_channel();
    let unreadable = Arc::new(Mutex::new(Vec::new()));
    let found = unreadable.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Every JSON line of every test: no key may repeat (issue 14).
            if line.starts_with('{')
                && let Err(err) = check_line(&line)
            {
                found.lock().unwrap().push(format!("{err}: {line}"));
            }
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if sender.send(value).is_err() {
                break;
            }
        }
    });
    let mut process = WardenProcess {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        child,
        lines,
        seen: VecDeque::new(),
        unreadable,
        _config: config,
    };
    let listening = process
        .next_line(|line| line["message"] == "listening")
        .await;
    let address = |field: &str| -> SocketAddr {
        listening[field]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {field} address in {listening}"))
    };
    process.addr = address("listen");
    process.admin = address("admin_listen");
    process
}

impl WardenProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// The first log line (from the start, lines already returned excluded)
    /// that satisfies `wanted`; lines skipped over stay available.
    pub async fn next_line(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        self.assert_lines_readable();
        if let Some(at) = self.seen.iter().position(&wanted) {
            return self.seen.remove(at).expect("position is in range");
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no such log line; lines seen: {:?}", self.seen))
                .unwrap_or_else(|| panic!("stdout closed; lines seen: {:?}", self.seen));
            if wanted(&line) {
                return line;
            }
            self.seen.push_back(line);
        }
    }

    /// Every line logged so far (returned by [`Self::next_line`] or not
    /// excepted: those are gone), without waiting.
    pub fn lines_so_far(&mut self) -> Vec<Value> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push_back(line);
        }
        self.seen.iter().cloned().collect()
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "warden did not exit in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl WardenProcess {
    /// Fails the test if a JSON log line so far repeated a key.
    pub fn assert_lines_readable(&self) {
        let unreadable = self.unreadable.lock().unwrap();
        assert!(
            unreadable.is_empty(),
            "log lines with a repeated key:\n{}",
            unreadable.join("\n")
        );
    }
}

impl Drop for WardenProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            self.assert_lines_readable();
        }
    }
}

// ---------------------------------------------------------------------------
// The gateway with start options (audit writer, auth state)

/// [`spawn_gateway`], started with `options` through [`Gateway::bind_with`]
/// (an audit writer of the test's, an auth state with a short window...).
pub async fn spawn_gateway_with(toml: &str, options: warden::StartOptions) -> TestGateway {
    let config = match Config::from_toml(toml, "test.toml") {
        Ok(config) => config,
        Err(err) => panic!("the test config is invalid:\n{err}\n---\n{toml}"),
    };
    let gateway = Gateway::bind_with(config, options)
        .await
        .expect("the gateway binds 127.0.0.1:0");
    let addr = gateway.local_addr().expect("main listener address");
    let admin = gateway.admin_addr().expect("admin listener address");
    let (trigger, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(async move {
        let _ = stop.await;
    }));
    TestGateway {
        addr,
        admin,
        shutdown: Some(trigger),
        task: Some(task),
    }
}

// ---------------------------------------------------------------------------
// Audit events, captured

/// The audit lines a gateway wrote to the test's end of a pipe.
#[derive(Debug)]
pub struct AuditCapture {
    lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuditCapture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An audit writer for [`warden::StartOptions`] (one end of a 1 MiB pipe,
/// `capacity` events queued at most) and the capture reading the other end.
pub fn audit_capture(capacity: usize) -> (warden::AuditWriter, AuditCapture) {
    let (gateway_end, test_end) = tokio::io::duplex(1 << 20);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let task = tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(test_end);
        loop {
            let mut line = String::new();
            match tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => sink.lock().unwrap().push(line.trim_end().to_owned()),
            }
        }
    });
    let writer = warden::AuditWriter {
        writer: Box::new(gateway_end),
        capacity,
    };
    (writer, AuditCapture { lines, task })
}

impl AuditCapture {
    /// Every line read so far, as written.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every event read so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("an audit line is not JSON ({err}): {line}"))
            })
            .collect()
    }

    /// The first event that satisfies `wanted`, waiting for it if need be
    /// (events are written by a task of their own, a moment after the answer).
    pub async fn wait_for(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(event) = self.events().into_iter().find(&wanted) {
                return event;
            }
            if Instant::now() >= deadline {
                panic!("no such audit event; the events: {:#?}", self.events());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Keys, tokens and files for the auth tests

/// A file under the test target's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    /// Writes `contents` to a new file whose name ends with `suffix`.
    pub fn new(suffix: &str, contents: impl AsRef<[u8]>) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "warden-test-{}-{}{suffix}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, contents).expect("write the temporary file");
        Self { path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A key that signs the test's tokens, with its kid and algorithm.
pub struct TestKey {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    pub encoding: jsonwebtoken::EncodingKey,
    /// PKCS#8 PEM of an asymmetric key; the secret of an HS key.
    pub material: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// A new key for `alg` (ES256, ES384, RS*, PS*, EdDSA or HS*), made the way
    /// `warden keygen` makes one.
    pub fn generate(kid: &str, alg: jsonwebtoken::Algorithm) -> Self {
        use jsonwebtoken::{Algorithm, EncodingKey};
        warden::crypto::install_providers();
        let der = warden::auth::keys::generate_der(alg).expect("generate a key");
        let (encoding, material) = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // A printable secret, so it can live in a file as text.
                let secret = hex(&der);
                (EncodingKey::from_secret(secret.as_bytes()), secret)
            }
            Algorithm::ES256 | Algorithm::ES384 => (
                EncodingKey::from_ec_der(&der),
                warden::auth::keys::pkcs8_pem(&der).to_string(),
            ),
            Algorithm::EdDSA => (
                EncodingKey::from_ed_der(&der),
                warden::auth::keys::pkcs8_pem(&der).to_string(),
            ),
            _ => {
                let pem = warden::auth::keys::pkcs8_pem(&der).to_string();
                (
                    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("an RSA PEM"),
                    pem,
                )
            }
        };
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            material,
        }
    }

    /// The key material in a temporary file: `private_key_file` or `secret_file`.
    pub fn file(&self) -> TempFile {
        TempFile::new(".key", &self.material)
    }

    /// A `[[keys]]` table for this key, read from `file`.
    pub fn config_entry(&self, file: &TempFile) -> String {
        let source = if warden::auth::keys::is_hmac(self.alg) {
            "secret_file"
        } else {
            "private_key_file"
        };
        format!(
            "\n[[keys]]\nkid = \"{}\"\nalg = \"{}\"\n{source} = \"{}\"\n",
            self.kid,
            warden::auth::keys::alg_name(self.alg),
            file.path_str()
        )
    }

    /// The public JWK, as an identity provider publishes it (kid, alg, use).
    pub fn public_jwk(&self) -> Value {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding, self.alg)
            .expect("a public JWK");
        jwk.common.key_id = Some(self.kid.clone());
        let mut value = serde_json::to_value(&jwk).expect("a JWK serialises");
        value["use"] = "sig".into();
        value
    }

    /// `header.claims.signature`, with exactly this header and these claims.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        use base64::Engine;
        let encode = |value: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let input = format!("{}.{}", encode(header), encode(claims));
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg)
            .expect("the key signs");
        // ECDSA in the one form the gateway accepts (SPEC §16).
        let signature = warden::auth::ecdsa::low_s_segment(self.alg, &signature);
        format!("{input}.{signature}")
    }

    /// A token with the usual header (`alg`, `typ`, this `kid`) and `claims`.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&self.header(), claims)
    }

    /// The usual header: `{"alg", "typ": "JWT", "kid"}`.
    pub fn header(&self) -> Value {
        serde_json::json!({
            "alg": warden::auth::keys::alg_name(self.alg),
            "typ": "JWT",
            "kid": self.kid,
        })
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, as lowercase hex (the form of `key_sha256`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The payload of a compact JWS, decoded without any check.
pub fn token_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("a base64url payload");
    serde_json::from_slice(&bytes).expect("a JSON payload")
}

/// The value of one sample (`name{labels}` as the text format writes it,
/// labels sorted by name) in a scrape; 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// Temporary directories

/// A directory under the test target's temporary directory, removed (with
/// everything in it) on drop.
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// A new, empty directory whose name ends with `suffix`.
    pub fn new(suffix: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "warden-test-{}-{}-{suffix}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        Self { path }
    }

    /// `path/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `path/name`, as text.
    pub fn join_str(&self, name: &str) -> String {
        self.join(name).to_str().expect("a UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// An upstream that keeps bodies and answers as the test says

/// One request as the scripted upstream received it, body included.
#[derive(Clone, Debug)]
pub struct Captured {
    pub method: Method,
    /// The request target: path and query, exactly as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request (body included) had arrived.
    pub at: Instant,
}

impl Captured {
    /// The one value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "the upstream's body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How the scripted upstream answers: a status and a body, given the request.
pub type Script = Arc<dyn Fn(&Captured) -> (u16, String) + Send + Sync>;

/// A hyper server on `127.0.0.1:0` that keeps every request with its body
/// and answers as its [`Script`] says.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Captured>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ScriptedUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedUpstream {
    /// An upstream that answers 200 `upstream ok` to everything.
    pub async fn ok() -> Self {
        Self::start(Arc::new(|_: &Captured| (200, "upstream ok\n".to_owned()))).await
    }

    /// Binds and serves an upstream that answers as `script` says.
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sink = sink.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let sink = sink.clone();
                        let script = script.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let Ok(body) = body else {
                                return Ok::<_, Infallible>(Response::new(empty()));
                            };
                            let captured = Captured {
                                method: parts.method,
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map_or_else(String::new, ToString::to_string),
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                            };
                            let (status, text) = script(&captured);
                            sink.lock().unwrap().push(captured);
                            let mut response = Response::new(full(text));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            records,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Captured> {
        self.records.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Captured {
        self.requests()
            .pop()
            .expect("a request reached the upstream")
    }
}

// ---------------------------------------------------------------------------
// The binary, every byte of its output kept

/// A `warden run` process whose stdout and stderr are both kept, as text.
#[derive(Debug)]
pub struct CapturedWarden {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _config: ConfigFile,
}

/// Starts `warden run --config <file with toml>` (which must log JSON) with
/// stdout and stderr captured, and waits for its `listening` line.
pub async fn spawn_warden_captured(toml: &str) -> CapturedWarden {
    let config = ConfigFile::new(toml);
    let mut child = warden_command(&["run", "--config", config.path_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the warden binary");
    let output = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for stream in [stdout, stderr] {
        let sink = output.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        }));
    }
    let deadline = Instant::now() + PATIENCE;
    let listening = loop {
        let found = output.lock().unwrap().lines().find_map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(|v| v["message"] == "listening")
        });
        if let Some(line) = found {
            break line;
        }
        if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
            panic!(
                "warden never logged `listening`; its output:\n{}",
                output.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let address = |field: &str| -> SocketAddr {
        listening[field]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {field} address in {listening}"))
    };
    CapturedWarden {
        addr: address("listen"),
        admin: address("admin_listen"),
        child,
        output,
        readers,
        _config: config,
    }
}

impl CapturedWarden {
    /// Everything written so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Stops the process with SIGTERM, waits for it and for the end of its
    /// output, and returns all of it.
    pub async fn stop(mut self) -> String {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "warden did not exit in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.output()
    }
}

impl Drop for CapturedWarden {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Reloads

/// [`spawn_gateway_with`], reading the config from the file at `path` and
/// started with it as `config_path`, so it can be reloaded; also returns
/// the gateway's reloader.
pub async fn spawn_gateway_from_file(
    path: &std::path::Path,
    mut options: warden::StartOptions,
) -> (TestGateway, Arc<warden::server::generation::Reloader>) {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => panic!("the test config is invalid:\n{err}"),
    };
    options.config_path = Some(path.to_owned());
    let gateway = Gateway::bind_with(config, options)
        .await
        .expect("the gateway binds 127.0.0.1:0");
    let reloader = gateway
        .reloader()
        .expect("a gateway started with a config path has a reloader");
    let addr = gateway.local_addr().expect("main listener address");
    let admin = gateway.admin_addr().expect("admin listener address");
    let (trigger, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(async move {
        let _ = stop.await;
    }));
    let gateway = TestGateway {
        addr,
        admin,
        shutdown: Some(trigger),
        task: Some(task),
    };
    (gateway, reloader)
}

impl WardenProcess {
    /// The config file the process was started with (rewrite it, then
    /// send SIGHUP to reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self._config.path
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

// ---------------------------------------------------------------------------
// Log lines a pipeline can read: JSON objects, no key repeated

/// A JSON value in which no object repeats a key (checked while parsing:
/// `serde_json::Value` would keep the last value and hide the repeat).
struct NoRepeatedKeys;

impl<'de> serde::de::Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: serde::de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoRepeatedKeysVisitor)
    }
}

struct NoRepeatedKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoRepeatedKeysVisitor {
    type Value = NoRepeatedKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoRepeatedKeys>()?.is_some() {}
        Ok(NoRepeatedKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("the key {key:?} repeats")));
            }
            map.next_value::<NoRepeatedKeys>()?;
        }
        Ok(NoRepeatedKeys)
    }
}

/// Whether a log `line` is one JSON object with no key repeated at any depth.
pub fn check_line(line: &str) -> Result<(), String> {
    if !line.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_str::<NoRepeatedKeys>(line)
        .map(|_| ())
        .map_err(|err| err.to_string())
}
