//! TLS on the listener (HTTP/1.1 and h2 over ALPN, mTLS, bad certificates),
//! gRPC over h2c with trailers, HTTPS upstreams with a private CA, reloads
//! (under load, over the admin API, by SIGHUP), upstream health (passive and
//! active), and the connection limits (slowloris, `max_connections`).
//!
//! Every certificate is made here with rcgen: a CA, and leaves for
//! `localhost`/`127.0.0.1` (the gateway), `upstream.test` (an HTTPS
//! upstream) or a client. The TLS clients are rustls + tokio-rustls with
//! hyper's connection-level clients on top, so a test can say which root is
//! trusted, which client certificate is shown and which ALPN is offered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden::{Config, StartOptions};

// ---------------------------------------------------------------------------
// Certificates

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pem: String,
}

/// A certificate and its key, both PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses) with one extended key usage.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn server_leaf(&self, names: &[&str]) -> Leaf {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client_leaf(&self, name: &str) -> Leaf {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn file(&self) -> TempFile {
        TempFile::new("-ca.pem", &self.pem)
    }
}

impl Leaf {
    /// `(cert file, key file)`.
    fn files(&self) -> (TempFile, TempFile) {
        (
            TempFile::new("-cert.pem", &self.cert_pem),
            TempFile::new("-key.pem", &self.key_pem),
        )
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }

    /// A rustls server config with this certificate and `alpn`.
    fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key())
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// `[server.tls]` with these files (as the last thing of `[server]`).
fn tls_section(cert: &TempFile, key: &TempFile, client_ca: Option<&TempFile>) -> String {
    let mut section = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.path_str(),
        key.path_str()
    );
    if let Some(ca) = client_ca {
        section.push_str(&format!("client_ca_file = \"{}\"\n", ca.path_str()));
    }
    section
}

// ---------------------------------------------------------------------------
// TLS and HTTP/2 clients

/// A rustls client trusting `roots` only, showing `identity` when asked
/// for a client certificate, offering `alpn`.
fn tls_client(roots: &[&Ca], identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    warden::crypto::install_providers();
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain(), leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects to `addr` and completes the handshake for `name`.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(
        PATIENCE,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("the TLS handshake ends in time")
}

/// An error and its sources on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A reply with its trailers and HTTP version.
#[derive(Debug)]
struct FullReply {
    reply: Reply,
    trailers: Option<HeaderMap>,
    version: Version,
}

async fn read_reply(response: Response<Incoming>) -> Result<FullReply, String> {
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the response body ends in time")
        .map_err(|e| chain(&e))?;
    let trailers = collected.trailers().cloned();
    Ok(FullReply {
        reply: Reply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
        },
        trailers,
        version: parts.version,
    })
}

/// One HTTP/1.1 request on a new connection over `io`.
async fn h1_request<IO>(io: IO, request: Request<TestBody>) -> Result<FullReply, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| chain(&e))?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("the gateway answers in time")
        .map_err(|e| chain(&e))?;
    read_reply(response).await
}

/// One HTTP/2 request on a new connection over `io` (h2 after ALPN, or
/// h2c with prior knowledge).
async fn h2_request<IO>(io: IO, request: Request<TestBody>) -> Result<FullReply, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| chain(&e))?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("the gateway answers in time")
        .map_err(|e| chain(&e))?;
    read_reply(response).await
}

/// `GET path` over HTTP/1.1 on a new TLS connection: the handshake and
/// the request, either of which may fail.
async fn tls_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    path: &str,
) -> Result<FullReply, String> {
    let stream = tls_connect(addr, config, name)
        .await
        .map_err(|e| format!("handshake: {}", chain(&e)))?;
    h1_request(stream, get_request(path)).await
}

/// `GET path` with `Host: localhost`, for a connection-level client.
fn get_request(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", "localhost")
        .body(empty())
        .unwrap()
}

/// Reads until the peer closes (or `patience` is over); returns the bytes
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, false),
        }
    }
}

// ---------------------------------------------------------------------------
// A scriptable upstream: HTTP/1.1 and h2c, or TLS, or HTTP/2 only

/// One request a [`Backend`] received.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    version: Version,
}

#[derive(Clone, Default)]
struct BackendOptions {
    /// Bind this address instead of an ephemeral port.
    addr: Option<SocketAddr>,
    /// Serve TLS with this config.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Speak HTTP/2 only (prior knowledge).
    h2_only: bool,
    /// Answer with a gRPC-style body and trailers.
    grpc: bool,
    /// Wait this long before answering.
    delay: Duration,
}

struct BackendState {
    name: &'static str,
    options: BackendOptions,
    hits: Mutex<Vec<Hit>>,
    health: AtomicU16,
    health_checks: AtomicUsize,
}

/// An upstream that answers `x-backend: NAME`, records every request, and
/// answers `GET /health` with a status the test sets.
struct Backend {
    addr: SocketAddr,
    state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(name: &'static str) -> Self {
        Self::start_with(name, BackendOptions::default()).await
    }

    async fn start_with(name: &'static str, options: BackendOptions) -> Self {
        let bind = options
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(bind).await.expect("bind the backend");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            name,
            options,
            hits: Mutex::new(Vec::new()),
            health: AtomicU16::new(200),
            health_checks: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    match state.options.tls.clone() {
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_backend(stream, state).await;
                            }
                        }
                        None => serve_backend(stream, state).await,
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn name(&self) -> &'static str {
        self.state.name
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::SeqCst);
    }

    fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }
}

async fn serve_backend<IO>(io: IO, state: Arc<BackendState>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let h2_only = state.options.h2_only;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(backend_answer(&state, request).await) }
    });
    let io = TokioIo::new(io);
    if h2_only {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    }
}

async fn backend_answer(state: &BackendState, request: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut response = if parts.uri.path() == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(full("health\n"));
        *response.status_mut() = StatusCode::from_u16(state.health.load(Ordering::SeqCst)).unwrap();
        response
    } else {
        state.hits.lock().unwrap().push(Hit {
            path: parts
                .uri
                .path_and_query()
                .map_or_else(String::new, ToString::to_string),
            headers: parts.headers,
            body,
            version: parts.version,
        });
        if !state.options.delay.is_zero() {
            tokio::time::sleep(state.options.delay).await;
        }
        if state.options.grpc {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("done"));
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x05reply"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut response = Response::new(BoxBody::new(StreamBody::new(
                futures_util::stream::iter(frames),
            )));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            response
        } else {
            Response::new(full(format!("{}\n", state.name)))
        }
    };
    response
        .headers_mut()
        .insert("x-backend", HeaderValue::from_static(state.name));
    response
}

// ---------------------------------------------------------------------------
// Metrics

/// The value of `sample` in a scrape; `None` when the sample is absent.
fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(sample)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// `warden_upstream_up{route,target}`.
fn upstream_up(route: &str, target: &str) -> String {
    format!("warden_upstream_up{{route=\"{route}\",target=\"{target}\"}}")
}

fn reloads(result: &str) -> String {
    format!("warden_config_reloads_total{{result=\"{result}\"}}")
}

// ===========================================================================
// 1. TLS on the listener

struct TlsFixture {
    ca: Ca,
    gateway: TestGateway,
    upstream: RecordingUpstream,
    _files: Vec<TempFile>,
}

async fn tls_fixture(server_extra: &str, client_ca: Option<&Ca>) -> TlsFixture {
    let ca = Ca::new("warden test CA");
    let (cert, key) = ca.server_leaf(&["localhost", "127.0.0.1"]).files();
    let client_ca_file = client_ca.map(Ca::file);
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let server = format!(
        "{server_extra}\n{}",
        tls_section(&cert, &key, client_ca_file.as_ref())
    );
    let gateway = spawn_gateway(&config(&server, &route("api", "/api", &upstream.url(), ""))).await;
    let mut files = vec![cert, key];
    files.extend(client_ca_file);
    TlsFixture {
        ca,
        gateway,
        upstream,
        _files: files,
    }
}

#[tokio::test]
async fn an_https_request_over_http1_reaches_the_upstream_with_x_forwarded_proto_https() {
    let f = tls_fixture("", None).await;
    let stream = tls_connect(
        f.gateway.addr,
        tls_client(&[&f.ca], None, &[b"http/1.1"]),
        "localhost",
    )
    .await
    .expect("a client trusting the CA completes the handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let reply = h1_request(stream, get_request("/api/one")).await.unwrap();
    assert_eq!(reply.reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(&reply.reply.body[..], b"upstream ok\n");
    let seen = f.upstream.next_request().await;
    assert_eq!(seen.target, "/api/one");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn an_h2_request_over_tls_negotiates_h2_by_alpn_and_is_served() {
    let f = tls_fixture("", None).await;
    // The certificate also names 127.0.0.1.
    let stream = tls_connect(
        f.gateway.addr,
        tls_client(&[&f.ca], None, &[b"h2", b"http/1.1"]),
        "127.0.0.1",
    )
    .await
    .expect("the handshake for the IP address succeeds");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN picks h2 when the client offers it"
    );
    let request = Request::get("https://localhost/api/two")
        .body(empty())
        .unwrap();
    let reply = h2_request(stream, request).await.unwrap();
    assert_eq!(reply.reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(&reply.reply.body[..], b"upstream ok\n");
    let seen = f.upstream.next_request().await;
    assert_eq!(seen.target, "/api/two");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_or_asks_for_another_name_fails_the_handshake() {
    let f = tls_fixture("", None).await;
    let stranger = Ca::new("some other CA");
    let err = tls_connect(
        f.gateway.addr,
        tls_client(&[&stranger], None, &[b"http/1.1"]),
        "localhost",
    )
    .await
    .expect_err("a client that does not trust the CA refuses the certificate");
    assert!(
        chain(&err).contains("UnknownIssuer"),
        "the client refuses an unknown issuer: {}",
        chain(&err)
    );
    let err = tls_connect(
        f.gateway.addr,
        tls_client(&[&f.ca], None, &[b"http/1.1"]),
        "not-the-gateway.test",
    )
    .await
    .expect_err("the certificate does not name not-the-gateway.test");
    assert!(
        chain(&err).contains("not valid for name"),
        "{}",
        chain(&err)
    );
    assert!(f.upstream.requests().is_empty());
}

/// A TLS 1.1 ClientHello without extensions (so no supported_versions):
/// what a client that speaks nothing newer sends.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // two AES-CBC-SHA suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0, 0, u8::try_from(body.len()).unwrap()];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0, u8::try_from(handshake.len()).unwrap()];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn neither_a_tls_1_1_client_nor_a_plain_http_request_is_served_on_the_tls_port() {
    let f = tls_fixture("", None).await;

    let mut tls11 = TcpStream::connect(f.gateway.addr).await.unwrap();
    tls11.write_all(&tls11_client_hello()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut tls11, PATIENCE).await;
    assert!(closed, "the gateway closes the TLS 1.1 connection");
    assert_ne!(
        answer.first(),
        Some(&0x16),
        "no ServerHello for a TLS 1.1 client: {answer:02x?}"
    );
    if let Some(first) = answer.first() {
        assert_eq!(*first, 0x15, "only an alert: {answer:02x?}");
    }

    let mut plain = TcpStream::connect(f.gateway.addr).await.unwrap();
    plain
        .write_all(b"GET /api/plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut plain, PATIENCE).await;
    assert!(closed, "the gateway closes the plain-HTTP connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP is not answered on the TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(f.upstream.requests().is_empty());
}

// ===========================================================================
// 2. mTLS

#[tokio::test]
async fn with_client_ca_file_only_a_client_with_a_certificate_from_that_ca_is_served() {
    let client_ca = Ca::new("client CA");
    let f = tls_fixture("", Some(&client_ca)).await;
    let alice = client_ca.client_leaf("alice");
    let mallory = Ca::new("another CA").client_leaf("mallory");

    let served = tls_get(
        f.gateway.addr,
        tls_client(&[&f.ca], Some(&alice), &[b"http/1.1"]),
        "localhost",
        "/api/mtls",
    )
    .await
    .expect("a client with a certificate from client_ca_file is served");
    assert_eq!(served.reply.status, StatusCode::OK);
    assert_eq!(f.upstream.next_request().await.target, "/api/mtls");

    // With TLS 1.3 the client may finish its side of the handshake before
    // the server refuses the certificate; the refusal then arrives as an
    // alert on the first read. Either way there is no answer.
    let anonymous = tls_get(
        f.gateway.addr,
        tls_client(&[&f.ca], None, &[b"http/1.1"]),
        "localhost",
        "/api/anonymous",
    )
    .await;
    let err = anonymous.expect_err("a client without a certificate is refused");
    assert!(
        err.contains("CertificateRequired") || err.contains("HandshakeFailure"),
        "refused in the handshake: {err}"
    );

    let foreign = tls_get(
        f.gateway.addr,
        tls_client(&[&f.ca], Some(&mallory), &[b"http/1.1"]),
        "localhost",
        "/api/foreign",
    )
    .await;
    let err = foreign.expect_err("a certificate from another CA is refused");
    assert!(
        err.contains("UnknownCA")
            || err.contains("BadCertificate")
            || err.contains("DecryptError")
            || err.contains("HandshakeFailure"),
        "refused in the handshake: {err}"
    );

    assert_eq!(
        f.upstream.requests().len(),
        1,
        "only the client with a valid certificate got through"
    );
}

// ===========================================================================
// 3. Bad certificates are config errors

#[tokio::test]
async fn a_bad_certificate_or_key_is_a_config_error_naming_the_file() {
    let ca = Ca::new("warden test CA");
    let leaf = ca.server_leaf(&["localhost"]);
    let other = ca.server_leaf(&["localhost"]);
    let (cert, key) = leaf.files();
    let (_, other_key) = other.files();
    let garbage = TempFile::new("-garbage.pem", "this is not a certificate\n");
    let garbage_key = TempFile::new(
        "-garbage-key.pem",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );

    let cases: [(&str, &TempFile, &TempFile, &TempFile); 3] = [
        ("garbage certificate", &garbage, &key, &garbage),
        ("garbage key", &cert, &garbage_key, &garbage_key),
        ("key of another certificate", &cert, &other_key, &other_key),
    ];
    for (what, cert_file, key_file, named) in cases {
        let toml = config(&tls_section(cert_file, key_file, None), "");
        let err = Config::from_toml(&toml, "test.toml")
            .expect_err(&format!("a {what} is refused at start"));
        let text = err.to_string();
        assert!(text.contains("server.tls"), "{what}: {text}");
        assert!(
            text.contains(named.path_str()),
            "{what}: the message names {}: {text}",
            named.path_str()
        );

        // `warden check` says the same and fails.
        let file = ConfigFile::new(&toml);
        let output = warden_command(&["check", "--config", file.path_str()])
            .output()
            .expect("run warden check");
        assert!(!output.status.success(), "{what}: warden check fails");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named.path_str()),
            "{what}: warden check names the file: {stderr}"
        );
    }
    // The good pair is accepted.
    Config::from_toml(&config(&tls_section(&cert, &key, None), ""), "test.toml")
        .expect("a matching certificate and key are a valid config");
}

// ===========================================================================
// 4. gRPC over h2c: trailers both ways

#[tokio::test]
async fn a_grpc_call_over_h2c_gets_the_body_and_trailers_and_the_upstream_gets_te_trailers() {
    let grpc = Backend::start_with(
        "grpc",
        BackendOptions {
            h2_only: true,
            grpc: true,
            ..BackendOptions::default()
        },
    )
    .await;
    let gateway = spawn_gateway(&config(
        "",
        &route("grpc", "/acme.Orders", &grpc.url(), "upstream_http2 = true"),
    ))
    .await;

    let message = Bytes::from_static(b"\0\0\0\0\x05hello");
    let request = Request::post(format!("http://{}/acme.Orders/Get", gateway.addr))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(full(message.clone()))
        .unwrap();
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let reply = h2_request(tcp, request)
        .await
        .expect("the h2c call is answered");
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.reply.status, StatusCode::OK);
    assert_eq!(reply.reply.header("content-type"), Some("application/grpc"));
    assert_eq!(&reply.reply.body[..], b"\0\0\0\0\x05reply");
    let trailers = reply
        .trailers
        .expect("the upstream's trailers reach the client");
    assert_eq!(
        trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
        Some("0")
    );
    assert_eq!(
        trailers.get("grpc-message").and_then(|v| v.to_str().ok()),
        Some("done")
    );

    let hits = grpc.hits();
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(
        hit.version,
        Version::HTTP_2,
        "the upstream is spoken to in h2c"
    );
    assert_eq!(hit.path, "/acme.Orders/Get");
    assert_eq!(
        hit.headers.get("te").and_then(|v| v.to_str().ok()),
        Some("trailers")
    );
    assert_eq!(
        hit.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/grpc")
    );
    assert_eq!(hit.body, message, "the request body arrives whole");
}

// ===========================================================================
// 5. HTTPS upstreams with a private CA

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_needs_the_routes_ca_file_and_server_name() {
    let upstream_ca = Ca::new("upstream CA");
    let leaf = upstream_ca.server_leaf(&["upstream.test"]);
    let secure = Backend::start_with(
        "secure",
        BackendOptions {
            tls: Some(leaf.server_config(&[b"http/1.1"])),
            ..BackendOptions::default()
        },
    )
    .await;
    let ca_file = upstream_ca.file();
    let url = format!("https://{}", secure.addr);
    let routes = [
        route(
            "trusted",
            "/trusted",
            &url,
            &format!(
                "ca_file = \"{}\"\nserver_name = \"upstream.test\"",
                ca_file.path_str()
            ),
        ),
        route(
            "untrusted",
            "/untrusted",
            &url,
            "server_name = \"upstream.test\"",
        ),
        route(
            "wrong-name",
            "/wrong-name",
            &url,
            &format!("ca_file = \"{}\"", ca_file.path_str()),
        ),
    ]
    .concat();
    let gateway = spawn_gateway(&config("", &routes)).await;

    let reply = get(&gateway.url("/trusted/item")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.header("x-backend"), Some("secure"));
    assert_eq!(secure.hits().len(), 1);
    assert_eq!(secure.hits()[0].path, "/trusted/item");

    let reply = get(&gateway.url("/untrusted/item")).await;
    assert_json_error(&reply, 502, "bad_gateway");
    // The certificate names upstream.test, not 127.0.0.1.
    let reply = get(&gateway.url("/wrong-name/item")).await;
    assert_json_error(&reply, 502, "bad_gateway");
    assert_eq!(
        secure.hits().len(),
        1,
        "no request passed an unverified TLS"
    );
}

#[tokio::test]
async fn a_grpc_upstream_over_tls_is_reached_with_h2_by_alpn_and_its_trailers_come_back() {
    let upstream_ca = Ca::new("upstream CA");
    let leaf = upstream_ca.server_leaf(&["upstream.test"]);
    let grpc = Backend::start_with(
        "grpc-tls",
        BackendOptions {
            tls: Some(leaf.server_config(&[b"h2"])),
            h2_only: true,
            grpc: true,
            ..BackendOptions::default()
        },
    )
    .await;
    let ca_file = upstream_ca.file();
    let gateway = spawn_gateway(&config(
        "",
        &route(
            "grpc",
            "/acme.Orders",
            &format!("https://{}", grpc.addr),
            &format!(
                "ca_file = \"{}\"\nserver_name = \"upstream.test\"\nupstream_http2 = true",
                ca_file.path_str()
            ),
        ),
    ))
    .await;
    let request = Request::post(format!("http://{}/acme.Orders/List", gateway.addr))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(full(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let reply = h2_request(tcp, request).await.unwrap();
    assert_eq!(reply.reply.status, StatusCode::OK, "{:?}", reply.reply.body);
    assert_eq!(
        reply
            .trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok()),
        Some("0"),
        "the trailers come back through TLS and the gateway"
    );
    let hits = grpc.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].version, Version::HTTP_2);
    assert_eq!(
        hits[0].headers.get("te").and_then(|v| v.to_str().ok()),
        Some("trailers")
    );
    assert_eq!(&hits[0].body[..], b"\0\0\0\0\x02hi");
}

#[tokio::test]
async fn an_active_health_check_of_an_https_upstream_uses_the_routes_ca_file_and_server_name() {
    let upstream_ca = Ca::new("upstream CA");
    let leaf = upstream_ca.server_leaf(&["upstream.test"]);
    let secure = Backend::start_with(
        "secure",
        BackendOptions {
            tls: Some(leaf.server_config(&[b"http/1.1"])),
            ..BackendOptions::default()
        },
    )
    .await;
    let ca_file = upstream_ca.file();
    let url = format!("https://{}", secure.addr);
    let gateway = spawn_gateway(&config(
        "",
        &route(
            "secure",
            "/secure",
            &url,
            &format!(
                "ca_file = \"{}\"\nserver_name = \"upstream.test\"\nhealth_path = \"/health\"\nhealth_interval = \"100ms\"",
                ca_file.path_str()
            ),
        ),
    ))
    .await;
    // A few check rounds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = get(&gateway.url("/secure/x")).await;
    let text = scrape(gateway.admin).await;
    assert!(
        secure.health_checks() > 0,
        "the health check reaches the HTTPS upstream it proxies to (it answers 200); \
         the request got {} {:?}, {} = {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.body),
        upstream_up("secure", &url),
        sample(&text, &upstream_up("secure", &url)),
    );
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(sample(&text, &upstream_up("secure", &url)), Some(1.0));
}

#[tokio::test]
async fn an_active_health_check_of_an_h2c_upstream_speaks_http2() {
    let grpc = Backend::start_with(
        "grpc",
        BackendOptions {
            h2_only: true,
            ..BackendOptions::default()
        },
    )
    .await;
    let gateway = spawn_gateway(&config(
        "",
        &route(
            "grpc",
            "/grpc",
            &grpc.url(),
            "upstream_http2 = true\nhealth_path = \"/health\"\nhealth_interval = \"100ms\"",
        ),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = get(&gateway.url("/grpc/x")).await;
    assert!(
        grpc.health_checks() > 0,
        "the health check of an HTTP/2-only upstream gets an answer (it answers 200); \
         the request got {} {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.body),
    );
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn a_route_ca_file_that_holds_no_certificate_is_a_config_error_naming_the_file() {
    let garbage = TempFile::new("-garbage-ca.pem", "this is not a certificate\n");
    let toml = config(
        "",
        &route(
            "secure",
            "/secure",
            "https://127.0.0.1:1",
            &format!(
                "ca_file = \"{}\"\nserver_name = \"upstream.test\"",
                garbage.path_str()
            ),
        ),
    );
    match Config::from_toml(&toml, "test.toml") {
        Err(err) => {
            let text = err.to_string();
            assert!(text.contains("routes[0].ca_file"), "{text}");
            assert!(text.contains(garbage.path_str()), "{text}");
        }
        Ok(config) => {
            // Not refused by the config check: at least the start must fail.
            let started = warden::Gateway::bind(config, prometheus::Registry::new()).await;
            panic!(
                "a ca_file without a certificate is accepted by the config check, and the \
                 gateway {}",
                match started {
                    Ok(_) => "starts with it (trusting only the public roots)".to_owned(),
                    Err(err) => format!("fails only at start: {err}"),
                }
            );
        }
    }
}

// ===========================================================================
// 6. Reloads

/// The routes of the reload tests: `/svc` to `upstream`, and `/extra`
/// (the built-in echo) when `extra`.
fn reload_config(upstream: &str, extra: bool, rest: &str) -> String {
    let mut routes = route("svc", "/svc", upstream, "");
    if extra {
        routes.push_str(&route("extra", "/extra", "builtin:echo", ""));
    }
    config("", &format!("{rest}\n{routes}"))
}

/// One request of the load.
struct Sent {
    started: Instant,
    finished: Instant,
    status: Result<StatusCode, String>,
    backend: Option<String>,
}

#[tokio::test]
async fn ten_reloads_under_continuous_load_fail_no_request_and_each_takes_effect_at_once() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let text = reload_config(&a.url(), false, "");
    let file = ConfigFile::new(&text);
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, sent) = (stop.clone(), sent.clone());
        let url = gateway.url(&format!("/svc/load/{worker}"));
        load.push(tokio::spawn(async move {
            // One pooled keep-alive client per worker.
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let request = Request::get(&url).body(empty()).unwrap();
                let outcome = tokio::time::timeout(PATIENCE, async {
                    let response = client.request(request).await.map_err(|e| chain(&e))?;
                    let (parts, body) = response.into_parts();
                    body.collect().await.map_err(|e| chain(&e))?;
                    Ok::<_, String>(parts)
                })
                .await
                .unwrap_or_else(|_| Err("no answer in time".into()));
                let (status, backend) = match outcome {
                    Ok(parts) => (
                        Ok(parts.status),
                        parts
                            .headers
                            .get("x-backend")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                    ),
                    Err(err) => (Err(err), None),
                };
                sent.lock().unwrap().push(Sent {
                    started,
                    finished: Instant::now(),
                    status,
                    backend,
                });
            }
        }));
    }

    // (reload begun, reload done, the backend in force after it)
    let begin = Instant::now();
    let mut epochs: Vec<(Instant, Instant, &str)> = vec![(begin, begin, "a")];
    for round in 1..=10 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (target, extra) = if round % 2 == 1 {
            (&b, true)
        } else {
            (&a, false)
        };
        let text = reload_config(&target.url(), extra, "");
        std::fs::write(&file.path, &text).unwrap();
        let begun = Instant::now();
        let hash = reloader
            .reload()
            .await
            .unwrap_or_else(|err| panic!("reload {round} of a valid config fails: {err}"));
        let done = Instant::now();
        assert_eq!(hash, sha256_hex(text.as_bytes()), "reload {round}");
        epochs.push((begun, done, target.name()));

        // At once, a new request follows the new routes.
        let reply = get(&gateway.url("/svc/after")).await;
        assert_eq!(reply.status, StatusCode::OK, "round {round}");
        assert_eq!(
            reply.header("x-backend"),
            Some(target.name()),
            "after reload {round} /svc goes to {}",
            target.name()
        );
        let reply = get(&gateway.url("/extra/ping")).await;
        let wanted = if extra { 200 } else { 404 };
        assert_eq!(
            reply.status.as_u16(),
            wanted,
            "after reload {round} /extra is {}",
            if extra { "routed" } else { "gone" }
        );
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in load {
        worker.await.expect("a load worker does not panic");
    }

    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let failed: Vec<String> = sent
        .iter()
        .filter(|s| s.status.as_ref().map_or(true, |st| *st != StatusCode::OK))
        .map(|s| format!("{:?}", s.status))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests under reload failed: {failed:?}",
        failed.len(),
        sent.len()
    );
    assert!(sent.len() >= 40, "the load ran: {} requests", sent.len());
    // A request made after a reload returned (begun after it, and done
    // before the next began) went to the upstream that reload put in force.
    let mut checked = 0;
    for s in &sent {
        let Some(at) = epochs.iter().rposition(|(_, done, _)| *done <= s.started) else {
            continue;
        };
        if epochs
            .get(at + 1)
            .is_some_and(|(begun, _, _)| *begun <= s.finished)
        {
            continue; // in flight during a reload: either generation is right
        }
        checked += 1;
        assert_eq!(
            s.backend.as_deref(),
            Some(epochs[at].2),
            "a request begun {:?} after reload {at} went to the old upstream",
            s.started - epochs[at].1
        );
    }
    assert!(
        checked >= 20,
        "enough requests fell between reloads: {checked}"
    );

    let text = scrape(gateway.admin).await;
    assert_eq!(sample(&text, &reloads("ok")), Some(10.0));
    assert_eq!(sample(&text, &reloads("error")), Some(0.0));
}

const ISS: &str = "https://warden.test";

/// `[[keys]]` and `[issuer]` of the gateway's own tokens, signed by `key`.
fn issuer_section(key: &TestKey, file: &TempFile) -> String {
    format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"warden\"]\n",
        key.config_entry(file)
    )
}

fn operator_token(key: &TestKey, scope: &str) -> String {
    let now = warden::clock::unix_now();
    key.token(&json!({
        "iss": ISS,
        "aud": "warden",
        "sub": "ops",
        "jti": uuid::Uuid::now_v7().to_string(),
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 300,
        "scope": scope,
    }))
}

async fn admin_reload(gateway: &TestGateway, token: Option<&str>) -> Reply {
    let mut request = Request::post(gateway.admin_url("/admin/reload"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request.body(empty()).unwrap()).await
}

#[tokio::test]
async fn post_admin_reload_reloads_and_a_broken_config_is_refused_with_422_while_the_old_routes_serve()
 {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let key = TestKey::generate("ops-1", jsonwebtoken::Algorithm::ES256);
    let key_file = key.file();
    let keys = issuer_section(&key, &key_file);
    let file = ConfigFile::new(&reload_config(&a.url(), false, &keys));
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;
    assert_eq!(
        get(&gateway.url("/svc/x")).await.header("x-backend"),
        Some("a")
    );

    // Only an operator may reload.
    let text = reload_config(&b.url(), true, &keys);
    std::fs::write(&file.path, &text).unwrap();
    assert_eq!(admin_reload(&gateway, None).await.status, 401);
    let reader = operator_token(&key, "orders:read");
    assert_eq!(admin_reload(&gateway, Some(&reader)).await.status, 403);
    assert_eq!(
        get(&gateway.url("/svc/x")).await.header("x-backend"),
        Some("a"),
        "a refused reload changes nothing"
    );

    let admin = operator_token(&key, "warden:admin");
    let reply = admin_reload(&gateway, Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["reloaded"], true);
    assert_eq!(body["config_sha256"], sha256_hex(text.as_bytes()));
    let reply = get(&gateway.url("/svc/x")).await;
    assert_eq!(
        reply.header("x-backend"),
        Some("b"),
        "the reload is in force"
    );
    assert_eq!(get(&gateway.url("/extra/x")).await.status, StatusCode::OK);
    let metrics = scrape(gateway.admin).await;
    assert_eq!(sample(&metrics, &reloads("ok")), Some(1.0));
    assert_eq!(sample(&metrics, &reloads("error")), Some(0.0));

    // Broken TOML: 422 with the problems; the old routes keep serving.
    std::fs::write(&file.path, "[[routes]\nname = \"svc\"\n").unwrap();
    let reply = admin_reload(&gateway, Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = reply.json();
    assert_eq!(body["error"], "invalid_config", "{body}");
    let problems = body["problems"].as_array().expect("a list of problems");
    assert!(!problems.is_empty(), "{body}");
    assert!(
        problems
            .iter()
            .all(|p| p.as_str().is_some_and(|p| p.contains(file.path_str()))),
        "each problem names the file: {body}"
    );
    let metrics = scrape(gateway.admin).await;
    assert_eq!(sample(&metrics, &reloads("error")), Some(1.0));
    assert_eq!(sample(&metrics, &reloads("ok")), Some(1.0));
    let reply = get(&gateway.url("/svc/x")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-backend"), Some("b"), "the old routes serve");
    assert_eq!(get(&gateway.url("/extra/x")).await.status, StatusCode::OK);

    // Valid TOML, invalid config: the problem names the key.
    std::fs::write(&file.path, reload_config("ftp://127.0.0.1:1", false, &keys)).unwrap();
    let reply = admin_reload(&gateway, Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = reply.json();
    assert!(
        body["problems"].to_string().contains("routes[0].upstream"),
        "{body}"
    );
    // The reloader itself says so too.
    assert!(reloader.reload().await.is_err());
    let metrics = scrape(gateway.admin).await;
    assert_eq!(sample(&metrics, &reloads("error")), Some(3.0));
    assert_eq!(sample(&metrics, &reloads("ok")), Some(1.0));
    assert_eq!(
        get(&gateway.url("/svc/x")).await.header("x-backend"),
        Some("b")
    );
}

#[tokio::test]
async fn readyz_shows_the_sha256_of_the_config_in_force_and_it_changes_on_reload() {
    let a = Backend::start("a").await;
    let first = reload_config(&a.url(), false, "");
    let file = ConfigFile::new(&first);
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;
    let ready = get(&gateway.admin_url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.json()["config_sha256"],
        sha256_hex(first.as_bytes()),
        "/readyz: {}",
        ready.json()
    );

    let second = reload_config(&a.url(), true, "");
    std::fs::write(&file.path, &second).unwrap();
    reloader.reload().await.unwrap();
    let ready = get(&gateway.admin_url("/readyz")).await;
    assert_eq!(
        ready.json()["config_sha256"],
        sha256_hex(second.as_bytes()),
        "/readyz after the reload: {}",
        ready.json()
    );

    // A refused reload leaves the hash of the config in force.
    std::fs::write(&file.path, "not = [toml").unwrap();
    assert!(reloader.reload().await.is_err());
    let ready = get(&gateway.admin_url("/readyz")).await;
    assert_eq!(ready.json()["config_sha256"], sha256_hex(second.as_bytes()));
}

#[tokio::test]
async fn a_reload_puts_a_new_server_certificate_in_force_and_a_broken_one_is_refused() {
    let (ca1, ca2) = (Ca::new("first CA"), Ca::new("second CA"));
    let (cert1, key1) = ca1.server_leaf(&["localhost"]).files();
    let (cert2, key2) = ca2.server_leaf(&["localhost"]).files();
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let routes = route("api", "/api", &upstream.url(), "");
    let file = ConfigFile::new(&config(&tls_section(&cert1, &key1, None), &routes));
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;
    let trusts = |ca: &Ca| tls_client(&[ca], None, &[b"http/1.1"]);

    let reply = tls_get(gateway.addr, trusts(&ca1), "localhost", "/api/1").await;
    assert_eq!(reply.unwrap().reply.status, StatusCode::OK);
    // A connection opened before the reload stays open on the old certificate.
    let kept = tls_connect(gateway.addr, trusts(&ca1), "localhost")
        .await
        .unwrap();

    std::fs::write(
        &file.path,
        config(&tls_section(&cert2, &key2, None), &routes),
    )
    .unwrap();
    reloader.reload().await.expect("the new certificate loads");
    let reply = tls_get(gateway.addr, trusts(&ca2), "localhost", "/api/2").await;
    assert_eq!(
        reply
            .expect("new connections get the new certificate")
            .reply
            .status,
        StatusCode::OK
    );
    assert!(
        tls_get(gateway.addr, trusts(&ca1), "localhost", "/api/3")
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    let reply = h1_request(kept, get_request("/api/kept")).await;
    assert_eq!(reply.unwrap().reply.status, StatusCode::OK);

    // A broken certificate: the reload is refused, the one in force stays.
    let garbage = TempFile::new("-garbage.pem", "not a certificate\n");
    std::fs::write(
        &file.path,
        config(&tls_section(&garbage, &key2, None), &routes),
    )
    .unwrap();
    let err = reloader
        .reload()
        .await
        .expect_err("a broken certificate is refused");
    assert!(err.to_string().contains(garbage.path_str()), "{err}");
    let reply = tls_get(gateway.addr, trusts(&ca2), "localhost", "/api/4").await;
    assert_eq!(reply.unwrap().reply.status, StatusCode::OK);
}

#[tokio::test]
async fn sighup_reloads_the_config_file_of_the_binary_and_it_keeps_running() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let log = "[log]\nformat = \"json\"\n";
    let first = route("one", "/one", &upstream.url(), "");
    let mut warden = spawn_warden(&config("", &format!("{log}{first}"))).await;
    let addr = warden.addr;
    let url = |path: &str| format!("http://{addr}{path}");
    assert_eq!(get(&url("/one/x")).await.status, StatusCode::OK);
    assert_eq!(get(&url("/two/x")).await.status, StatusCode::NOT_FOUND);

    let second = format!("{first}{}", route("two", "/two", &upstream.url(), ""));
    std::fs::write(warden.config_path(), config("", &format!("{log}{second}"))).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &warden.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    warden
        .next_line(|line| line["message"] == "config reloaded")
        .await;
    assert!(warden.is_running(), "SIGHUP does not stop warden");
    assert_eq!(get(&url("/two/x")).await.status, StatusCode::OK);
    assert_eq!(get(&url("/one/x")).await.status, StatusCode::OK);

    // A broken file on SIGHUP: logged, and the routes in force stay.
    std::fs::write(warden.config_path(), "[[routes]\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &warden.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    warden
        .next_line(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload refused"))
        })
        .await;
    assert!(warden.is_running());
    assert_eq!(get(&url("/two/x")).await.status, StatusCode::OK);
}

// ===========================================================================
// 7. Upstream health

/// A public route over several upstream targets.
fn pool_route(name: &str, prefix: &str, targets: &[String], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = [{}]\nauth = \"none\"\n{extra}\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn a_refusing_target_is_skipped_after_max_failures_and_used_again_after_the_cooldown() {
    let live = Backend::start("live").await;
    let dead_addr = free_addr();
    let dead_url = format!("http://{dead_addr}");
    let cooldown = Duration::from_millis(1000);
    let gateway = spawn_gateway(&config(
        "",
        &pool_route(
            "pool",
            "/pool",
            &[live.url(), dead_url.clone()],
            "max_failures = 2\ncooldown = \"1s\"",
        ),
    ))
    .await;
    let client = client();
    let url = gateway.url("/pool/x");

    // Round-robin: every other request goes to the dead target and fails,
    // until it has failed twice.
    let mut failures = 0;
    let mut sent = 0;
    while failures < 2 {
        sent += 1;
        assert!(sent <= 6, "the dead target was tried twice in 4 requests");
        let reply = send_on(&client, Request::get(&url).body(empty()).unwrap()).await;
        if reply.status == StatusCode::BAD_GATEWAY {
            assert_json_error(&reply, 502, "bad_gateway");
            failures += 1;
        } else {
            assert_eq!(reply.header("x-backend"), Some("live"));
        }
    }
    let skipped_at = Instant::now();
    for _ in 0..10 {
        let reply = send_on(&client, Request::get(&url).body(empty()).unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "the skipped target gets no request: {:?}",
            reply.body
        );
        assert_eq!(reply.header("x-backend"), Some("live"));
    }
    let metrics = scrape(gateway.admin).await;
    assert!(
        skipped_at.elapsed() < cooldown,
        "the machine is too slow for the test's cooldown"
    );
    assert_eq!(sample(&metrics, &upstream_up("pool", &dead_url)), Some(0.0));
    assert_eq!(
        sample(&metrics, &upstream_up("pool", &live.url())),
        Some(1.0)
    );

    // The dead port comes back; after the cooldown it is used again.
    let revived = Backend::start_with(
        "revived",
        BackendOptions {
            addr: Some(dead_addr),
            ..BackendOptions::default()
        },
    )
    .await;
    tokio::time::sleep(cooldown.saturating_sub(skipped_at.elapsed()) + Duration::from_millis(50))
        .await;
    for _ in 0..4 {
        let reply = send_on(&client, Request::get(&url).body(empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    assert!(
        !revived.hits().is_empty(),
        "the target is used again after its cooldown"
    );
    let metrics = scrape(gateway.admin).await;
    assert_eq!(
        sample(&metrics, &upstream_up("pool", &dead_url)),
        Some(1.0),
        "warden_upstream_up is 1 again for the target in use"
    );
}

#[tokio::test]
async fn an_active_check_takes_a_target_answering_500_out_and_puts_it_back_when_it_answers_200() {
    let sick = Backend::start("sick").await;
    let well = Backend::start("well").await;
    sick.set_health(500);
    let gateway = spawn_gateway(&config(
        "",
        &pool_route(
            "pool",
            "/pool",
            &[sick.url(), well.url()],
            "health_path = \"/health\"\nhealth_interval = \"200ms\"",
        ),
    ))
    .await;
    let sick_up = upstream_up("pool", &sick.url());
    let well_up = upstream_up("pool", &well.url());
    scrape_until(
        gateway.admin,
        &[&format!("{sick_up} 0"), &format!("{well_up} 1")],
    )
    .await;

    let client = client();
    let url = gateway.url("/pool/x");
    for _ in 0..10 {
        let reply = send_on(&client, Request::get(&url).body(empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-backend"), Some("well"));
    }
    assert!(
        sick.hits().is_empty(),
        "a target failing its check gets nothing"
    );

    sick.set_health(200);
    scrape_until(gateway.admin, &[&format!("{sick_up} 1")]).await;
    for _ in 0..10 {
        let reply = send_on(&client, Request::get(&url).body(empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert!(
        sick.hits().len() >= 4,
        "a target passing its check again shares the load: {} of 10",
        sick.hits().len()
    );
}

#[tokio::test]
async fn when_every_target_is_down_the_answer_is_502_at_once() {
    // Active: both targets fail their check; they would take 5 s to answer.
    let slow = BackendOptions {
        delay: Duration::from_secs(5),
        ..BackendOptions::default()
    };
    let one = Backend::start_with("one", slow.clone()).await;
    let two = Backend::start_with("two", slow).await;
    one.set_health(503);
    two.set_health(500);
    let dead = [refused_addr(), refused_addr()];
    let routes = [
        pool_route(
            "active",
            "/active",
            &[one.url(), two.url()],
            "health_path = \"/health\"\nhealth_interval = \"200ms\"\ntimeout = \"8s\"",
        ),
        pool_route(
            "passive",
            "/passive",
            &[format!("http://{}", dead[0]), format!("http://{}", dead[1])],
            "max_failures = 1\ncooldown = \"30s\"\ntimeout = \"8s\"",
        ),
    ]
    .concat();
    let gateway = spawn_gateway(&config("request_timeout = \"10s\"", &routes)).await;
    scrape_until(
        gateway.admin,
        &[
            &format!("{} 0", upstream_up("active", &one.url())),
            &format!("{} 0", upstream_up("active", &two.url())),
        ],
    )
    .await;
    let started = Instant::now();
    let reply = get(&gateway.url("/active/x")).await;
    assert_json_error(&reply, 502, "bad_gateway");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once, not after the upstream or the route timeout: {:?}",
        started.elapsed()
    );
    assert!(one.hits().is_empty() && two.hits().is_empty());

    // Passive: each refusing target fails once and is skipped; then 502 at once.
    for _ in 0..2 {
        assert_json_error(&get(&gateway.url("/passive/x")).await, 502, "bad_gateway");
    }
    let started = Instant::now();
    let reply = get(&gateway.url("/passive/x")).await;
    assert_json_error(&reply, 502, "bad_gateway");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        reply.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("healthy")),
        "{}",
        reply.json()
    );
}

#[tokio::test]
async fn a_target_removed_by_a_reload_no_longer_has_a_warden_upstream_up_series() {
    let live = Backend::start("live").await;
    let dead_url = format!("http://{}", refused_addr());
    let with_dead = |targets: &[String]| {
        config(
            "",
            &pool_route(
                "pool",
                "/pool",
                targets,
                "max_failures = 1\ncooldown = \"30s\"",
            ),
        )
    };
    let file = ConfigFile::new(&with_dead(&[dead_url.clone(), live.url()]));
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;
    // The dead target fails once and is skipped.
    assert_json_error(&get(&gateway.url("/pool/x")).await, 502, "bad_gateway");
    let text = scrape(gateway.admin).await;
    assert_eq!(sample(&text, &upstream_up("pool", &dead_url)), Some(0.0));

    // The operator removes it.
    std::fs::write(&file.path, with_dead(&[live.url()])).unwrap();
    reloader.reload().await.unwrap();
    assert_eq!(get(&gateway.url("/pool/x")).await.status, StatusCode::OK);
    let text = scrape(gateway.admin).await;
    assert_eq!(sample(&text, &upstream_up("pool", &live.url())), Some(1.0));
    assert_eq!(
        sample(&text, &upstream_up("pool", &dead_url)),
        None,
        "a target that is no longer configured has no warden_upstream_up series \
         (a stale 0 keeps a 'target down' alert firing forever)"
    );
}

// ===========================================================================
// 8. Slow clients

#[tokio::test]
async fn a_client_sending_one_header_byte_every_300ms_is_cut_off_after_header_read_timeout() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "header_read_timeout = \"1s\"",
        &route("api", "/api", &upstream.url(), ""),
    ))
    .await;
    let addr = gateway.addr;
    let slow = tokio::spawn(async move {
        let request =
            b"GET /api/slow HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        for byte in request {
            if stream.write_all(&[*byte]).await.is_err() {
                return (started.elapsed(), answer);
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), answer),
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        panic!("the whole request was sent over {:?}", started.elapsed());
    });
    // Meanwhile other clients are served.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let started = Instant::now();
        let reply = get(&gateway.url(&format!("/api/fast/{i}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let (cut_after, answer) = slow.await.unwrap();
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_millis(3000),
        "cut off after about header_read_timeout: {cut_after:?}"
    );
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(
        upstream.heads().iter().all(|t| !t.contains("slow")),
        "the slow request never reached the upstream"
    );
}

#[tokio::test]
async fn a_tls_client_that_never_sends_its_client_hello_is_dropped_after_header_read_timeout() {
    let f = tls_fixture("header_read_timeout = \"1s\"", None).await;
    let mut silent = TcpStream::connect(f.gateway.addr).await.unwrap();
    let started = Instant::now();
    // Meanwhile a TLS client is served.
    let reply = tls_get(
        f.gateway.addr,
        tls_client(&[&f.ca], None, &[b"http/1.1"]),
        "localhost",
        "/api/meanwhile",
    )
    .await
    .unwrap();
    assert_eq!(reply.reply.status, StatusCode::OK);
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(closed, "the silent TLS connection is closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3000),
        "closed after about header_read_timeout: {after:?}"
    );
}

#[tokio::test]
async fn a_plain_client_that_connects_and_sends_nothing_is_dropped_after_header_read_timeout() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "header_read_timeout = \"1s\"",
        &route("api", "/api", &upstream.url(), ""),
    ))
    .await;
    let mut silent = TcpStream::connect(gateway.addr).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(
        closed,
        "a connection that sends no byte is closed after header_read_timeout (1s); still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(3000));
}

#[tokio::test]
async fn a_tls_client_that_completes_the_handshake_and_sends_no_request_is_dropped_after_header_read_timeout()
 {
    let f = tls_fixture("header_read_timeout = \"1s\"", None).await;
    let mut idle = tls_connect(
        f.gateway.addr,
        tls_client(&[&f.ca], None, &[b"http/1.1"]),
        "localhost",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(4), idle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "a TLS connection without a request is closed; still open after {:?}",
        started.elapsed()
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3000),
        "closed after about header_read_timeout: {after:?}"
    );
}

#[tokio::test]
async fn a_client_that_sends_the_start_of_the_h2_preface_and_stops_is_dropped_after_header_read_timeout()
 {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "header_read_timeout = \"1s\"",
        &route("api", "/api", &upstream.url(), ""),
    ))
    .await;
    // 16 of the 24 bytes that tell HTTP/2 from HTTP/1.1, then silence.
    let mut stalled = TcpStream::connect(gateway.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(4)).await;
    assert!(
        closed,
        "a connection stalled inside the HTTP/2 preface is closed after header_read_timeout (1s); \
         still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(3000));
}

// ===========================================================================
// 9. max_connections

/// A keep-alive HTTP/1.1 connection: its sender and its connection task.
type KeptAlive = (
    hyper::client::conn::http1::SendRequest<TestBody>,
    tokio::task::JoinHandle<()>,
);

async fn keep_alive(addr: SocketAddr) -> KeptAlive {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

#[tokio::test]
async fn with_max_connections_2_a_third_connection_closes_the_one_idle_longest() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "max_connections = 2\nheader_read_timeout = \"20s\"",
        &route("api", "/api", &upstream.url(), ""),
    ))
    .await;

    let mut first = keep_alive(gateway.addr).await;
    let mut second = keep_alive(gateway.addr).await;
    for (i, (sender, _)) in [&mut first, &mut second].into_iter().enumerate() {
        let response = sender
            .send_request(get_request(&format!("/api/idle/{i}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
    // Both are idle now, and open; the first has been idle longer.

    // SPEC §16: idle connections never lock out a working client.
    let (mut third_sender, _third_task) = keep_alive(gateway.addr).await;
    let response = tokio::time::timeout(
        PATIENCE,
        third_sender.send_request(get_request("/api/third")),
    )
    .await
    .expect("the third connection is served at once")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    assert_eq!(upstream.requests().len(), 3);

    // The first, idle the longest, was closed to make room.
    let (_sender, first_task) = first;
    tokio::time::timeout(PATIENCE, first_task)
        .await
        .expect("the connection idle the longest is closed")
        .unwrap();
    // The second still works.
    let (sender, _) = &mut second;
    let response = sender
        .send_request(get_request("/api/again"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_max_connections_2_a_third_connection_waits_while_both_are_busy() {
    let upstream = RecordingUpstream::start(Behaviour::slow(Duration::from_millis(1500))).await;
    let gateway = spawn_gateway(&config(
        "max_connections = 2\nheader_read_timeout = \"20s\"",
        &route("api", "/api", &upstream.url(), ""),
    ))
    .await;
    let mut busy = Vec::new();
    for i in 0..2 {
        let (mut sender, task) = keep_alive(gateway.addr).await;
        busy.push(tokio::spawn(async move {
            let response = sender
                .send_request(get_request(&format!("/api/slow/{i}")))
                .await
                .map_err(|e| chain(&e))?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| chain(&e))?;
            Ok::<_, String>((status, sender, task))
        }));
    }
    // Both requests are in flight before the third connection comes.
    upstream.next_request().await;
    upstream.next_request().await;
    let started = Instant::now();
    let (mut third_sender, _third_task) = keep_alive(gateway.addr).await;
    let response = tokio::time::timeout(
        PATIENCE,
        third_sender.send_request(get_request("/api/third")),
    )
    .await
    .expect("the third request is served once a busy connection is idle")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the third connection waited for a busy one to finish ({:?})",
        started.elapsed()
    );
    for task in busy {
        let (status, _, _) = task.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "a busy connection is never cut off");
    }
}
