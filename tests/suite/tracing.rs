//! Tracing (SPEC §15): a W3C `traceparent` from the client is continued (the
//! same trace id, the gateway's own span id towards the upstream), one is
//! started when absent or malformed, the trace id is beside the execution
//! key in the audit events and the log lines, and with `[log]
//! otlp_endpoint` the request's span reaches an OTLP/HTTP collector (a
//! small hyper server of this file that keeps what it is sent).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::net::TcpListener;
use warden::StartOptions;
use warden::clock::unix_now;

const ISS: &str = "https://warden.tracing.test";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent_parts(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

struct Setup {
    upstream: RecordingUpstream,
    key: TestKey,
    key_file: TempFile,
}

impl Setup {
    async fn new() -> Self {
        warden::crypto::install_providers();
        let key = TestKey::generate("trace-hs256", Algorithm::HS256);
        let key_file = key.file();
        Self {
            upstream: RecordingUpstream::start(Behaviour::ok()).await,
            key,
            key_file,
        }
    }

    fn toml(&self, log: &str) -> String {
        config(
            "",
            &format!(
                "{entry}\n[issuer]\niss = \"{ISS}\"\naud = [\"warden\"]\n\n[log]\n{log}\n\n[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nupstream = \"{up}\"\n",
                entry = self.key.config_entry(&self.key_file),
                up = self.upstream.url(),
            ),
        )
    }

    fn token(&self) -> String {
        let now = unix_now();
        self.key.token(
            &json!({"iss": ISS, "aud": "warden", "sub": "alice", "iat": now, "exp": now + 600}),
        )
    }
}

#[tokio::test]
async fn a_clients_trace_is_continued_to_the_upstream_and_named_in_the_audit() {
    let setup = Setup::new().await;
    let (writer, audit) = audit_capture(256);
    let options = StartOptions {
        audit_writer: Some(writer),
        ..StartOptions::default()
    };
    let gateway = spawn_gateway_with(&setup.toml(""), options).await;
    let token = setup.token();
    let reply = get_with(
        &gateway.url("/orders/1"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = setup.upstream.requests().pop().unwrap();
    let (trace, span, flags) = traceparent_parts(seen.header("traceparent").unwrap());
    assert_eq!(trace, TRACE_ID, "the same trace");
    assert_ne!(span, CLIENT_SPAN, "the gateway's own span");
    assert_eq!(span.len(), 16);
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), Some("vendor=opaque"));
    let event = audit
        .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == reply.execution_key())
        .await;
    assert_eq!(event["trace_id"], TRACE_ID);
}

#[tokio::test]
async fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
    let setup = Setup::new().await;
    let gateway = spawn_gateway(&setup.toml("")).await;
    let token = setup.token();
    let bearer = format!("Bearer {token}");
    let mut traces = Vec::new();
    for traceparent in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let mut headers = vec![("authorization", bearer.as_str())];
        if let Some(value) = traceparent {
            headers.push(("traceparent", value));
            headers.push(("tracestate", "vendor=stale"));
        }
        assert_eq!(
            get_with(&gateway.url("/orders/1"), &headers).await.status,
            StatusCode::OK
        );
        let seen = setup.upstream.requests().pop().unwrap();
        let (trace, span, _) = traceparent_parts(seen.header("traceparent").unwrap());
        assert_eq!(trace.len(), 32);
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(trace.to_ascii_lowercase(), TRACE_ID);
        assert_eq!(span.len(), 16);
        assert!(
            seen.header("tracestate").is_none(),
            "a tracestate goes with its trace"
        );
        traces.push(trace);
    }
    // Two traceparents are none (W3C §3.2): a new trace, flags of its own.
    let valid = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let headers = [
        ("authorization", bearer.as_str()),
        ("traceparent", valid.as_str()),
        ("traceparent", valid.as_str()),
    ];
    assert_eq!(
        get_with(&gateway.url("/orders/1"), &headers).await.status,
        StatusCode::OK
    );
    let seen = setup.upstream.requests().pop().unwrap();
    let (trace, _, _) = traceparent_parts(seen.header("traceparent").unwrap());
    assert_ne!(trace, TRACE_ID);
    traces.push(trace);
    // Flags version 00 does not define are not passed on.
    let odd_flags = format!("00-{TRACE_ID}-{CLIENT_SPAN}-ff");
    let headers = [
        ("authorization", bearer.as_str()),
        ("traceparent", odd_flags.as_str()),
    ];
    assert_eq!(
        get_with(&gateway.url("/orders/1"), &headers).await.status,
        StatusCode::OK
    );
    let seen = setup.upstream.requests().pop().unwrap();
    let (trace, _, flags) = traceparent_parts(seen.header("traceparent").unwrap());
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "01"));
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 5, "a new trace each time");
}

#[tokio::test]
async fn log_lines_carry_the_trace_id_beside_the_execution_key() {
    let setup = Setup::new().await;
    let mut warden = spawn_warden(&setup.toml("format = \"json\"\nlevel = \"info\"")).await;
    let reply = get_with(
        &format!("http://{}/orders/1", warden.addr),
        &[
            ("authorization", &format!("Bearer {}", setup.token())),
            ("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let key = reply.execution_key().to_owned();
    let line = warden
        .next_line(|l| l["target"] == "warden::access" && l["execution_key"] == key.as_str())
        .await;
    assert_eq!(line["trace_id"], TRACE_ID);
}

/// An OTLP/HTTP collector: keeps the bodies posted to /v1/traces.
struct Collector {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<(String, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let sink = bodies.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let content_type = request
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            sink.lock()
                                .unwrap()
                                .push((format!("{path} {content_type}"), body));
                            Ok::<_, Infallible>(hyper::Response::new(full(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, bodies, task }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn with_otlp_endpoint_the_requests_span_reaches_the_collector() {
    let setup = Setup::new().await;
    let collector = Collector::start().await;
    let log = format!(
        "otlp_endpoint = \"http://{}\"\notlp_service_name = \"warden-under-test\"",
        collector.addr
    );
    let gateway = spawn_gateway(&setup.toml(&log)).await;
    let reply = get_with(
        &gateway.url("/orders/1"),
        &[
            ("authorization", &format!("Bearer {}", setup.token())),
            ("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let upstream_parent = setup.upstream.requests().pop().unwrap();
    let (_, gateway_span, _) = traceparent_parts(upstream_parent.header("traceparent").unwrap());
    // A shutdown sends what the batch still holds.
    gateway.shutdown().await;

    let bodies = collector.bodies.lock().unwrap().clone();
    let (what, body) = bodies.first().expect("the collector got an export");
    assert_eq!(what, "/v1/traces application/x-protobuf");
    let hex_bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
            .collect()
    };
    assert!(
        contains(body, &hex_bytes(TRACE_ID)),
        "the client's trace id"
    );
    assert!(
        contains(body, &hex_bytes(&gateway_span)),
        "the span id the upstream got as its parent"
    );
    assert!(
        contains(body, &hex_bytes(CLIENT_SPAN)),
        "the client's span as the parent"
    );
    assert!(contains(body, b"warden-under-test"), "the service name");
    assert!(contains(body, b"orders"), "the route");
    assert!(
        contains(body, reply.execution_key().as_bytes()),
        "the execution key"
    );
}
