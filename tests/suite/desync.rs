//! Request framing over real sockets (SPEC §16), and the HTTP desync vectors
//! of AWS's http_desync_guardian, vendored with their LICENSE and NOTICE in
//! `tests/fixtures/http_desync_guardian/`.
//!
//! Each vector is a request line and headers with a verdict (`Compliant`,
//! `Acceptable`, `Ambiguous`, `Severe`). The vectors carry no body, so the
//! test adds one: a compliant request gets the body its framing announces;
//! a doubtful one gets a probe that a chunked reader ends at once and that
//! then holds a second request (`GET /smuggled`), padded to the largest
//! length any `...length` header names, so every reading of the framing
//! finds a complete message. The test also adds `Host` (when the vector has
//! none: RFC 9112 makes it a 400 otherwise) and `Connection: close`, so the
//! only way the probe's second request can reach the upstream is inside the
//! bytes the gateway forwarded for the first: a desync.
//!
//! The upstream is a raw `TcpListener` that frames each request itself and
//! records what it read: the head, the body its framing says, and any bytes
//! left over past it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{RecordingUpstream, config, raw_request, route, spawn_gateway};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest one read from the gateway may take: every case is answered
/// at once, so a case that waits this long has hung.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/http_desync_guardian"
);

const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: desync.test\r\n\r\n";

// ---------------------------------------------------------------------------
// Framing regressions

fn framing_gateway(upstream: &str) -> String {
    config("", &route("public", "/", upstream, ""))
}

#[tokio::test]
async fn a_transfer_encoding_other_than_exactly_chunked_is_400_and_never_reaches_the_upstream() {
    let upstream = RecordingUpstream::start(crate::common::Behaviour::ok()).await;
    let gateway = spawn_gateway(&framing_gateway(&upstream.url())).await;
    for te in [
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: CHUNKED, Chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: xchunked",
    ] {
        let request = format!(
            "POST /orders HTTP/1.1\r\nHost: gw.test\r\n{te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let reply = raw_request(gateway.addr, request.as_bytes()).await;
        assert_eq!(reply.status, 400, "{te:?}");
        // What hyper lets through, warden answers with its own JSON.
        if reply.header("x-execution-key").is_some() {
            reply.assert_json_error(400, "bad_request");
        }
    }
    let plain = "POST /orders HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let reply = raw_request(gateway.addr, plain.as_bytes()).await;
    assert_eq!(
        reply.status, 200,
        "one plain chunked, in any case, is proxied"
    );
    let heads = upstream.heads();
    assert_eq!(
        heads,
        vec!["/orders".to_owned()],
        "only the plain one arrived"
    );
}

/// Writes `request`, closes the write side, and reads the answer (if any)
/// until the gateway closes.
async fn send_and_half_close(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut received = Vec::new();
    let _ = tokio::time::timeout(crate::common::PATIENCE, stream.read_to_end(&mut received)).await;
    received
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_bad_request_and_never_502() {
    let upstream = RecordingUpstream::start(crate::common::Behaviour::ok()).await;
    let gateway = spawn_gateway(&framing_gateway(&upstream.url())).await;
    let head = "POST /orders HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    for (what, body) in [
        ("a chunk size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "a chunk size too large for 64 bits",
            "fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("a chunk without its CRLF", "5\r\nhelloXX0\r\n\r\n"),
        ("a chunk longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
        ("a size line without CRLF", "5 x\r\nhello\r\n0\r\n\r\n"),
    ] {
        // A first chunk that arrives whole, so the request is on its way
        // upstream when the bad one is read.
        let request = format!("{head}2\r\nok\r\n{body}");
        let reply = raw_request(gateway.addr, request.as_bytes()).await;
        reply.assert_json_error(400, "bad_request");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            text.contains("framing"),
            "{what}: the description names the framing: {text}"
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "no malformed body reached the upstream in full"
    );
}

#[tokio::test]
async fn a_body_cut_short_is_never_answered_502() {
    let upstream = RecordingUpstream::start(crate::common::Behaviour::ok()).await;
    let gateway = spawn_gateway(&framing_gateway(&upstream.url())).await;
    for request in [
        "POST /orders HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "POST /orders HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\nonly a few bytes",
    ] {
        let received = send_and_half_close(gateway.addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&received);
        // hyper may close without answering a client that went away; when
        // it does answer, the fault is the client's.
        if !received.is_empty() {
            assert!(text.starts_with("HTTP/1.1 400"), "{request:?}: {text}");
            assert!(text.contains("\"bad_request\""), "{text}");
        }
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_still_413() {
    let upstream = RecordingUpstream::start(crate::common::Behaviour::ok()).await;
    let toml = config(
        "max_body_bytes = 16",
        &route("public", "/", &upstream.url(), ""),
    );
    let gateway = spawn_gateway(&toml).await;
    let request = "POST /orders HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    let reply = raw_request(gateway.addr, request.as_bytes()).await;
    reply.assert_json_error(413, "payload_too_large");
}

// ---------------------------------------------------------------------------
// The vectors

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
enum Tier {
    Compliant,
    Acceptable,
    Ambiguous,
    Severe,
}

#[derive(Debug, Deserialize)]
struct VectorHeader {
    name: String,
    #[serde(default)]
    value: serde_yaml_ng::Value,
}

#[derive(Debug, Deserialize)]
struct VectorExpected {
    tier: Tier,
}

#[derive(Debug, Deserialize)]
struct Vector {
    name: String,
    uri: String,
    method: String,
    version: String,
    #[serde(default)]
    headers: Option<Vec<VectorHeader>>,
    expected: VectorExpected,
}

/// One vector, as bytes for the wire.
#[derive(Debug)]
struct Case {
    file: String,
    name: String,
    tier: Tier,
    method: Vec<u8>,
    uri: Vec<u8>,
    version: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// YAML escapes such as `\x01` and `\xa0` stand for one byte each, so a
/// character up to U+00FF is that byte (obs-text); a wider one (`ſ`, `―`,
/// Cyrillic) is its UTF-8.
fn wire_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(byte) => out.push(byte),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

fn value_text(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::Bool(b) => b.to_string(),
        serde_yaml_ng::Value::Null => String::new(),
        other => panic!("a header value that is not a scalar: {other:?}"),
    }
}

fn load_cases() -> Vec<Case> {
    let mut files: Vec<_> = std::fs::read_dir(FIXTURES)
        .expect("the vendored vectors")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a vector file");
        let vectors: Vec<Vector> = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for vector in vectors {
            cases.push(Case {
                file: file.clone(),
                name: vector.name,
                tier: vector.expected.tier,
                method: wire_bytes(&vector.method),
                uri: wire_bytes(&vector.uri),
                version: wire_bytes(&vector.version),
                headers: vector
                    .headers
                    .unwrap_or_default()
                    .iter()
                    .map(|h| (wire_bytes(&h.name), wire_bytes(&value_text(&h.value))))
                    .collect(),
            });
        }
    }
    cases
}

impl Case {
    fn header_named(&self, wanted: &str) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(wanted.as_bytes()))
            .map(|(_, value)| value.as_slice())
    }

    /// The body a compliant request of this framing carries.
    fn honest_body(&self) -> (Vec<u8>, Vec<u8>) {
        if self.header_named("transfer-encoding").next().is_some() {
            return (b"5\r\nhello\r\n0\r\n\r\n".to_vec(), b"hello".to_vec());
        }
        let length = self
            .header_named("content-length")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let body = vec![b'a'; length];
        (body.clone(), body)
    }

    /// A probe every reading of the framing finds complete: a chunked
    /// reader ends after `0\r\n\r\n`, a length reader reads up to the
    /// largest length any `...length` header names.
    fn probe_body(&self) -> Vec<u8> {
        let longest = self
            .headers
            .iter()
            .filter(|(name, _)| name.to_ascii_lowercase().ends_with(b"length"))
            .filter_map(|(_, value)| {
                let digits: Vec<u8> = value
                    .iter()
                    .copied()
                    .skip_while(|b| !b.is_ascii_digit())
                    .take_while(u8::is_ascii_digit)
                    .collect();
                std::str::from_utf8(&digits).ok()?.parse::<usize>().ok()
            })
            .filter(|&n| n <= 100_000)
            .max()
            .unwrap_or(0);
        let mut body = b"0\r\n\r\n".to_vec();
        body.extend_from_slice(SMUGGLED);
        if body.len() < longest {
            body.resize(longest, b'x');
        }
        body
    }

    /// The request target as an upstream gets it: a fragment is not part
    /// of a request target (RFC 9112 §3.2), and hyper drops it.
    fn target_sent(&self) -> &[u8] {
        self.uri.split(|&b| b == b'#').next().unwrap_or_default()
    }

    fn wire(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.uri);
        if !self.version.is_empty() {
            out.push(b' ');
            out.extend_from_slice(&self.version);
        }
        out.extend_from_slice(b"\r\n");
        if self.header_named("host").next().is_none() {
            out.extend_from_slice(b"Host: desync.test\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(body);
        out
    }

    /// Why warden refuses a request the vectors call `Compliant` or
    /// `Acceptable`; `None` when it must be proxied.
    fn refused_because(&self) -> Option<&'static str> {
        let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if self.version != b"HTTP/1.1" && self.version != b"HTTP/1.0" {
            return Some("hyper: only HTTP/1.0 and HTTP/1.1");
        }
        if self
            .headers
            .iter()
            .any(|(name, _)| name.is_empty() || !name.iter().all(is_tchar))
        {
            return Some("hyper: a header name that is not a token");
        }
        if self
            .headers
            .iter()
            .any(|(_, value)| value.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f))
        {
            return Some("hyper: a control character in a header value");
        }
        let mut te = self.header_named("transfer-encoding");
        match (te.next(), te.next()) {
            (Some(value), None) if value.trim_ascii().eq_ignore_ascii_case(b"chunked") => {}
            (None, _) => {}
            _ => return Some("SPEC §16: a Transfer-Encoding other than exactly chunked"),
        }
        // http's URI parser takes visible ASCII but `"`, `<`, `>`, `\`, `^`,
        // `` ` ``, `{`, `|`, `}`; it takes bytes above 0x7F too, and
        // anything after a `#` (a fragment, which it drops).
        let uri_ok = |b: &u8| *b >= 0x80 || b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(b);
        if self.uri.is_empty() || !self.target_sent().iter().all(uri_ok) {
            return Some("hyper: a request target that is not a URI");
        }
        // SPEC §16's path rules: `;`, raw non-ASCII, double encoding.
        let target = self.target_sent();
        let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
        let double_encoded = path.windows(5).any(|w| {
            w[0] == b'%'
                && w[1] == b'2'
                && w[2] == b'5'
                && w[3].is_ascii_hexdigit()
                && w[4].is_ascii_hexdigit()
        });
        if path.iter().any(|&b| b == b';' || b >= 0x80) || double_encoded {
            return Some("SPEC §16: a path with ';', raw non-ASCII or double encoding");
        }
        None
    }
}

/// What the upstream read for one request.
#[derive(Clone, Debug)]
struct Forwarded {
    method: String,
    target: String,
    content_lengths: usize,
    transfer_encodings: usize,
    /// The body as its framing delimits it (chunks decoded).
    body: Vec<u8>,
    /// `Err` when the bytes did not follow the framing the head announced.
    framing: Result<(), String>,
    /// Bytes that were already there past the end of the message.
    leftover: usize,
}

enum Parsed {
    Incomplete,
    Bad(String),
    Done { consumed: usize, body: Vec<u8> },
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_chunked(bytes: &[u8]) -> Parsed {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(&bytes[at..], b"\r\n") else {
            return Parsed::Incomplete;
        };
        let line = &bytes[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
        else {
            return Parsed::Bad(format!(
                "chunk size line {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        at += line_end + 2;
        if size == 0 {
            // No trailers are expected: the gateway adds none.
            return match bytes.get(at..at + 2) {
                Some(b"\r\n") => Parsed::Done {
                    consumed: at + 2,
                    body,
                },
                Some(_) => Parsed::Bad("trailers after the last chunk".into()),
                None => Parsed::Incomplete,
            };
        }
        let Some(data) = bytes.get(at..at + size + 2) else {
            return Parsed::Incomplete;
        };
        if &data[size..] != b"\r\n" {
            return Parsed::Bad("a chunk without its CRLF".into());
        }
        body.extend_from_slice(&data[..size]);
        at += size + 2;
    }
}

/// Frames one request at the start of `bytes`, as a strict origin would.
fn parse_request(bytes: &[u8]) -> Result<(Forwarded, usize), Parsed> {
    let Some(head_len) = find(bytes, b"\r\n\r\n") else {
        return Err(Parsed::Incomplete);
    };
    let head = String::from_utf8_lossy(&bytes[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.to_ascii_lowercase(), value.trim().to_owned()),
            None => (line.to_owned(), String::new()),
        })
        .collect();
    let count = |wanted: &str| headers.iter().filter(|(n, _)| n == wanted).count();
    let content_lengths = count("content-length");
    let transfer_encodings = count("transfer-encoding");
    let rest = &bytes[head_len + 4..];
    let mut framing = Ok(());
    if content_lengths + transfer_encodings > 1 {
        framing = Err("more than one framing header".to_owned());
    }
    let parsed = if transfer_encodings > 0 {
        parse_chunked(rest)
    } else if content_lengths > 0 {
        let declared = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        match declared {
            None => Parsed::Bad("a Content-Length that is not a number".into()),
            Some(n) if rest.len() >= n => Parsed::Done {
                consumed: n,
                body: rest[..n].to_vec(),
            },
            Some(_) => Parsed::Incomplete,
        }
    } else {
        Parsed::Done {
            consumed: 0,
            body: Vec::new(),
        }
    };
    let (consumed, body) = match parsed {
        Parsed::Done { consumed, body } => (consumed, body),
        Parsed::Bad(reason) => {
            framing = Err(reason);
            (rest.len(), Vec::new())
        }
        Parsed::Incomplete => return Err(Parsed::Incomplete),
    };
    let total = head_len + 4 + consumed;
    let forwarded = Forwarded {
        method,
        target,
        content_lengths,
        transfer_encodings,
        body,
        framing,
        leftover: bytes.len() - total,
    };
    Ok((forwarded, total))
}

/// A raw upstream that records every request it frames and answers 200.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Forwarded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_raw(stream, record.clone()));
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<Forwarded> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_raw(mut stream: TcpStream, seen: Arc<Mutex<Vec<Forwarded>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let (forwarded, consumed) = loop {
            match parse_request(&buffer) {
                Ok(done) => break done,
                Err(Parsed::Incomplete) => match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        if !buffer.is_empty() && find(&buffer, b"\r\n\r\n").is_none() {
                            // Bytes that never became a request head: record
                            // them, they may be a smuggled request's start.
                            seen.lock().unwrap().push(Forwarded {
                                method: String::new(),
                                target: String::from_utf8_lossy(&buffer).into_owned(),
                                content_lengths: 0,
                                transfer_encodings: 0,
                                body: Vec::new(),
                                framing: Err("a partial head".into()),
                                leftover: 0,
                            });
                        }
                        return;
                    }
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                },
                Err(_) => return,
            }
        };
        let head_only = forwarded.method == "HEAD";
        let broken = forwarded.framing.is_err();
        seen.lock().unwrap().push(forwarded);
        if broken {
            return;
        }
        buffer.drain(..consumed);
        let answer: &[u8] = if head_only {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// How the gateway answered one case.
#[derive(Debug)]
struct Answer {
    /// `None` when it closed without a status line.
    status: Option<u16>,
    /// Whether warden answered (its answers carry the execution key), as
    /// opposed to hyper's bare 400 from its parser.
    by_warden: bool,
    text: String,
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // The gateway may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Err(_) => {
                return Err(format!(
                    "no close within {READ_TIMEOUT:?}; read {:?}",
                    String::from_utf8_lossy(&received)
                ));
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let by_warden = text.to_ascii_lowercase().contains("\r\nx-execution-key:");
    Ok(Answer {
        status,
        by_warden,
        text,
    })
}

#[derive(Default)]
struct Tally {
    proxied: usize,
    refused_by_hyper: usize,
    refused_by_warden: usize,
    closed: usize,
    stricter: BTreeMap<&'static str, usize>,
}

#[tokio::test]
async fn every_http_desync_guardian_vector_is_refused_or_forwarded_with_one_framing() {
    let cases = load_cases();
    assert!(
        cases.len() > 100,
        "the vendored vectors load: {}",
        cases.len()
    );
    let upstream = RawUpstream::start().await;
    let toml = config(
        "",
        &route(
            "public",
            "/",
            &format!("http://{}", upstream.addr),
            "timeout = \"2s\"",
        ),
    );
    let gateway = spawn_gateway(&toml).await;

    let mut tallies: BTreeMap<Tier, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let label = format!("{} / {:?} / {}", case.file, case.tier, case.name);
        let doubtful = matches!(case.tier, Tier::Ambiguous | Tier::Severe);
        let (body, expected_body) = if doubtful {
            (case.probe_body(), Vec::new())
        } else {
            case.honest_body()
        };
        let before = upstream.seen().len();
        let answer = match exchange(gateway.addr, &case.wire(&body)).await {
            Ok(answer) => answer,
            Err(err) => {
                failures.push(format!("{label}: {err}"));
                continue;
            }
        };
        let arrived: Vec<Forwarded> = upstream.seen().split_off(before);
        let tally = tallies.entry(case.tier).or_default();
        let refused = match answer.status {
            Some(400) => {
                if answer.by_warden {
                    tally.refused_by_warden += 1;
                } else {
                    tally.refused_by_hyper += 1;
                }
                true
            }
            None => {
                tally.closed += 1;
                true
            }
            Some(_) => false,
        };
        if refused && !arrived.is_empty() {
            failures.push(format!(
                "{label}: refused, but the upstream got {arrived:?}"
            ));
            continue;
        }
        let one_framing = |f: &Forwarded| {
            f.framing.is_ok()
                && f.leftover == 0
                && f.content_lengths + f.transfer_encodings <= 1
                && !f.target.contains("smuggled")
        };
        match case.tier {
            Tier::Severe if !refused => failures.push(format!(
                "{label}: answered {:?}, upstream got {arrived:?}",
                answer.status
            )),
            Tier::Severe => {}
            Tier::Ambiguous if refused => {}
            Tier::Ambiguous => {
                let ok = answer.status.is_some_and(|s| (200..300).contains(&s))
                    && arrived.len() == 1
                    && arrived.iter().all(one_framing);
                if ok {
                    tally.proxied += 1;
                } else {
                    failures.push(format!(
                        "{label}: answered {:?}, upstream got {arrived:?}",
                        answer.status
                    ));
                }
            }
            Tier::Compliant | Tier::Acceptable => match case.refused_because() {
                Some(reason) if refused => *tally.stricter.entry(reason).or_default() += 1,
                Some(reason) => failures.push(format!(
                    "{label}: expected a refusal ({reason}), answered {:?}, upstream got {arrived:?}",
                    answer.status
                )),
                None => {
                    let method = String::from_utf8_lossy(&case.method).into_owned();
                    let target = String::from_utf8_lossy(case.target_sent()).into_owned();
                    let ok = answer.status.is_some_and(|s| (200..300).contains(&s))
                        && arrived.len() == 1
                        && arrived.iter().all(|f| {
                            one_framing(f)
                                && f.method == method
                                && f.target == target
                                && f.body == expected_body
                        });
                    if ok {
                        tally.proxied += 1;
                    } else {
                        failures.push(format!(
                            "{label}: answered {:?} {:?}, upstream got {arrived:?}",
                            answer.status,
                            answer.text.lines().last()
                        ));
                    }
                }
            },
        }
    }
    for (tier, t) in &tallies {
        let refused = t.refused_by_hyper + t.refused_by_warden + t.closed;
        let stricter: Vec<String> = t.stricter.iter().map(|(r, n)| format!("{n} {r}")).collect();
        println!(
            "desync {tier:?}: {} cases, {} proxied, {refused} refused ({} by hyper's parser, {} by warden, {} closed){}",
            t.proxied + refused,
            t.proxied,
            t.refused_by_hyper,
            t.refused_by_warden,
            t.closed,
            if stricter.is_empty() {
                String::new()
            } else {
                format!(
                    "; refused though the vectors accept them: {}",
                    stricter.join(", ")
                )
            }
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Nothing arrived late, after its own case was checked.
    let proxied: usize = tallies.values().map(|t| t.proxied).sum();
    assert_eq!(upstream.seen().len(), proxied, "{:?}", upstream.seen());
}
