//! The log lines, as a log pipeline reads them (issue 14): the `warden`
//! binary runs with JSON logs captured, several paths are provoked (an
//! upstream failure, a 401, a 404, a login, proxied JWT requests over
//! HTTP/1.1 and HTTP/2), and every line it wrote is parsed with a check
//! that no key repeats in any object; then the access-log line of a
//! proxied JWT request is read field by field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use http::{Request, StatusCode};
use jsonwebtoken::Algorithm;
use serde_json::Value;

const API_KEY: &str = "wk_test_logs_4c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f";

#[test]
fn the_repeated_key_check_refuses_a_repeat_at_any_depth_and_passes_a_clean_line() {
    assert!(check_line(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
    // The line issue 14 found: the upstream URL and the tracing target.
    let old = r#"{"timestamp":"t","level":"WARN","target":"http://127.0.0.1:9","message":"upstream request failed","target":"warden::proxy"}"#;
    let err = check_line(old).unwrap_err();
    assert!(err.contains("\"target\" repeats"), "{err}");
    assert!(check_line(r#"{"span":{"x":1,"x":2}}"#).is_err());
    assert!(check_line(r#"[{"a":1},{"a":1,"a":1}]"#).is_err());
    assert!(check_line("plain text").is_err());
}

/// The number text of `"field":` in the raw line, as written.
fn raw_number<'a>(line: &'a str, field: &str) -> &'a str {
    let marker = format!("\"{field}\":");
    let start = line
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        + marker.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    &rest[..end]
}

fn assert_three_decimals_at_most(line: &str, field: &str) {
    let text = raw_number(line, field);
    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(
        decimals <= 3 && !text.contains('e'),
        "{field} = {text} is not milliseconds with 3 decimals: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_repeats_a_key_and_the_access_log_says_who_what_where_and_how_long() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let grpc = RecordingUpstream::start(Behaviour::with_headers(vec![
        ("content-type", "application/grpc"),
        ("grpc-status", "5"),
        ("grpc-message", "not found"),
    ]))
    .await;
    let key = TestKey::generate("logs-es256", Algorithm::ES256);
    let key_file = key.file();
    let toml = config(
        "",
        &format!(
            r#"[log]
format = "json"
level = "info"
{key_entry}
[issuer]
iss = "http://warden.test"
aud = ["warden"]
signing_kid = "logs-es256"

[login]
path = "/auth"
api_key_header = "X-Api-Key"

[[login.api_keys]]
id = "reporting"
key_sha256 = "{key_sha256}"
sub = "reporting-service"
scopes = ["orders:read"]

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{upstream}"
scopes = ["orders:read"]

[[routes]]
name = "grpc"
path_prefix = "/pkg.Service"
upstream = "{grpc}"
scopes = ["orders:read"]
{down}"#,
            key_entry = key.config_entry(&key_file),
            key_sha256 = sha256_hex(API_KEY.as_bytes()),
            upstream = upstream.url(),
            grpc = grpc.url(),
            down = route("down", "/down", &format!("http://{}", refused_addr()), ""),
        ),
    );
    let warden = spawn_warden_captured(&toml).await;
    let url = |path: &str| format!("http://{}{path}", warden.addr);

    // An upstream failure, a missing token, no route.
    assert_eq!(get(&url("/down/x")).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        get(&url("/orders/1")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&url("/nowhere")).await.status, StatusCode::NOT_FOUND);
    // A login.
    let login = send(
        Request::post(url("/auth"))
            .header("x-api-key", API_KEY)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    // A proxied JWT request over HTTP/1.1, and one over HTTP/2.
    let http1 = send(
        Request::get(url("/orders/7?secret=x"))
            .header("authorization", &bearer)
            .header("user-agent", "logs-test/1.0")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(http1.status, StatusCode::OK);
    let http2 = send_on(
        &h2c_client(),
        Request::get(url("/orders/8"))
            .header("authorization", &bearer)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(http2.status, StatusCode::OK);
    let grpc_call = send_on(
        &h2c_client(),
        Request::post(url("/pkg.Service/Get"))
            .header("authorization", &bearer)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(vec![0u8, 0, 0, 0, 0]))
            .unwrap(),
    )
    .await;
    assert_eq!(grpc_call.status, StatusCode::OK);

    // Every request's access line is written when its body ends: wait for
    // the last one before stopping.
    let grpc_key = grpc_call.execution_key().to_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !warden
        .output()
        .lines()
        .any(|l| l.contains(&grpc_key) && l.contains("warden::access"))
    {
        assert!(std::time::Instant::now() < deadline, "no access line");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let gateway_addr = warden.addr.to_string();
    let output = warden.stop().await;

    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 9, "too few lines:\n{output}");
    for line in &lines {
        if let Err(err) = check_line(line) {
            panic!("a log line fails the check ({err}):\n{line}");
        }
    }
    let parsed: Vec<(&str, Value)> = lines
        .iter()
        .map(|l| (*l, serde_json::from_str(l).unwrap()))
        .collect();
    let failure = parsed
        .iter()
        .find(|(_, v)| v["message"] == "upstream request failed")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no upstream failure line:\n{output}"));
    assert_eq!(failure["target"], "warden::proxy", "{failure}");
    assert!(
        failure["upstream"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{failure}"
    );
    let access = |key: &str| -> (&str, &Value) {
        parsed
            .iter()
            .find(|(_, v)| v["target"] == "warden::access" && v["execution_key"] == key)
            .map(|(l, v)| (*l, v))
            .unwrap_or_else(|| panic!("no access line for {key}:\n{output}"))
    };

    let (raw, line) = access(http1.execution_key());
    assert_eq!(line["message"], "request");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(line["host"], gateway_addr, "{line}");
    assert_eq!(line["user_agent"], "logs-test/1.0", "{line}");
    assert_eq!(line["protocol"], "HTTP/1.1", "{line}");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/orders/7", "no query string: {line}");
    assert_eq!(line["route"], "orders");
    assert_eq!(line["sub"], "reporting-service", "{line}");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream_addr"], upstream.url(), "{line}");
    assert_eq!(line["bytes_in"], 0);
    assert_eq!(line["bytes_out"], "upstream ok\n".len());
    assert!(line.get("grpc_status").is_none(), "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
    assert_three_decimals_at_most(raw, "duration_ms");
    assert_three_decimals_at_most(raw, "upstream_ms");
    assert!(!raw.contains("secret"), "{raw}");
    assert!(!raw.contains(&token), "the token is never logged");

    let (raw, line) = access(http2.execution_key());
    assert_eq!(line["protocol"], "HTTP/2", "{line}");
    assert_eq!(line["host"], gateway_addr, "{line}");
    assert!(line.get("user_agent").is_none(), "{line}");
    assert_eq!(line["sub"], "reporting-service", "{line}");
    assert_three_decimals_at_most(raw, "duration_ms");

    let (_, line) = access(&grpc_key);
    assert_eq!(line["grpc_status"], 5, "{line}");
    assert_eq!(line["route"], "grpc");
    assert_eq!(line["upstream_addr"], grpc.url(), "{line}");

    // No token verified, no upstream reached: neither is in the line.
    let unauthorized = parsed
        .iter()
        .find(|(_, v)| v["target"] == "warden::access" && v["status"] == 401)
        .map(|(_, v)| v)
        .unwrap();
    assert!(unauthorized.get("sub").is_none(), "{unauthorized}");
    assert!(
        unauthorized.get("upstream_addr").is_none(),
        "{unauthorized}"
    );
    assert!(!output.contains(API_KEY), "the API key is never logged");
}

/// An HTTP/2 (h2c) upstream that answers every call as gRPC does: one
/// empty message, then `grpc-status: 7` in the trailers.
async fn grpc_upstream_with_trailers() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("7"));
                        trailers.insert("grpc-message", http::HeaderValue::from_static("denied"));
                        let frames = futures_util::stream::iter([
                            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&[
                                0, 0, 0, 0, 0,
                            ]))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(frames))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_takes_the_grpc_status_from_the_upstreams_trailers() {
    let (upstream, task) = grpc_upstream_with_trailers().await;
    let toml = config(
        "",
        &format!(
            "[log]\nformat = \"json\"\n{}",
            route(
                "grpc",
                "/pkg.Orders",
                &format!("http://{upstream}"),
                "upstream_http2 = true"
            )
        ),
    );
    let mut warden = spawn_warden(&toml).await;
    let response = h2c_client()
        .request(
            Request::post(format!("http://{}/pkg.Orders/Get", warden.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(full(vec![0u8, 0, 0, 0, 0]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("grpc-status").is_none(),
        "in the trailers only"
    );
    let key = response.headers()["x-execution-key"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "7");
    let line = warden
        .next_line(|l| l["target"] == "warden::access" && l["execution_key"] == key)
        .await;
    assert_eq!(line["grpc_status"], 7, "{line}");
    assert_eq!(line["protocol"], "HTTP/2", "{line}");
    assert_eq!(
        line["upstream_addr"],
        format!("http://{upstream}"),
        "{line}"
    );
    task.abort();
}
