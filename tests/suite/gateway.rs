//! The core gateway, end to end: streaming, header policy, routing and path
//! normalisation, upstream failures, limits, execution keys, the admin
//! listener, graceful shutdown and config errors.
//!
//! Every gateway and upstream listens on `127.0.0.1:0`; the binary's ports
//! are read from its `listening` log line.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

/// A gateway with one public route `name` at `prefix` to `upstream`.
async fn gateway_with_route(name: &str, prefix: &str, upstream: &str) -> TestGateway {
    spawn_gateway(&config("", &route(name, prefix, upstream, ""))).await
}

/// Sends a request that `gateway` must forward to `upstream`, and checks that
/// it is the only one the upstream has seen, not even in part. The gateway
/// answered the earlier requests before this one was sent, so had it
/// forwarded any of them, the upstream would have seen it first.
async fn barrier(upstream: &RecordingUpstream, gateway: &TestGateway, path: &str) {
    let reply = get_with(&gateway.url(path), &[("x-barrier", "1")]).await;
    assert_eq!(reply.status, StatusCode::OK, "the barrier request passes");
    let heads = upstream.heads();
    assert!(
        heads.len() == 1 && heads[0].ends_with(path),
        "only the barrier request reached the upstream: {heads:?}"
    );
    assert_eq!(upstream.requests()[0].header("x-barrier"), Some("1"));
}

// ---------------------------------------------------------------------------
// 1. Streaming

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_body_reaches_the_upstream_with_its_exact_length() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "max_body_bytes = 134217728",
        &route("big", "/upload", &upstream.url(), ""),
    ))
    .await;

    let size = 64 * MIB;
    let request = Request::post(gateway.url("/upload"))
        .header("content-length", size.to_string())
        .body(chunks(MIB, 64))
        .unwrap();
    let reply = send(request).await;

    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.next_request().await;
    assert_eq!(seen.body_len, size as u64);
    assert_eq!(seen.header("content-length"), Some("67108864"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_streams_to_the_upstream_before_the_client_has_sent_it_all() {
    let upstream = std::sync::Arc::new(RecordingUpstream::start(Behaviour::ok()).await);
    let gateway = spawn_gateway(&config(
        "max_body_bytes = 134217728",
        &route("big", "/upload", &upstream.url(), ""),
    ))
    .await;

    // The first MiB goes at once; the other 15 only once the upstream has
    // seen body bytes. A gateway that buffered the body would never get
    // there, and the request would time out.
    let first =
        futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'a'; MIB])))]);
    let waiting_upstream = upstream.clone();
    let rest = futures_util::stream::once(async move {
        waiting_upstream.body_started().await;
        futures_util::stream::iter(
            (0..15).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'b'; MIB])))),
        )
    })
    .flatten();
    let body: TestBody = BoxBody::new(StreamBody::new(first.chain(rest)));
    let reply = send(Request::post(gateway.url("/upload")).body(body).unwrap()).await;

    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.next_request().await;
    assert_eq!(seen.body_len, 16 * MIB as u64);
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_32_mib_streamed_response_reaches_the_client_intact() {
    let upstream = RecordingUpstream::start(Behaviour::streaming(MIB, 32)).await;
    let gateway = gateway_with_route("download", "/download", &upstream.url()).await;

    let reply = get(&gateway.url("/download")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 32 * MIB);
    assert!(reply.body.iter().all(|&b| b == b'x'));
}

// ---------------------------------------------------------------------------
// 2. Hop-by-hop headers

#[tokio::test]
async fn hop_by_hop_request_headers_and_those_connection_names_never_reach_the_upstream() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("hop", "/", &upstream.url()).await;

    let reply = raw_request(
        gateway.addr,
        b"GET /hop HTTP/1.1\r\n\
          Host: gateway.test\r\n\
          Connection: close, X-Foo\r\n\
          Connection: x-other\r\n\
          X-Foo: 1\r\n\
          X-Other: 2\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Upgrade: websocket\r\n\
          Trailer: X-Checksum\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\n\
          Accept: application/json\r\n\
          \r\n",
    )
    .await;

    assert_eq!(reply.status, 200);
    let seen = upstream.next_request().await;
    for name in [
        "connection",
        "x-foo",
        "x-other",
        "keep-alive",
        "te",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(
            seen.header(name),
            None,
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
    assert_eq!(seen.header("accept"), Some("application/json"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_and_those_connection_names_never_reach_the_client() {
    let upstream = RecordingUpstream::start(Behaviour::with_headers(vec![
        ("connection", "X-Bar"),
        ("x-bar", "secret"),
        ("keep-alive", "timeout=5"),
        ("proxy-authenticate", "Basic realm=\"upstream\""),
        ("x-kept", "yes"),
    ]))
    .await;
    let gateway = gateway_with_route("hop", "/", &upstream.url()).await;

    let reply = get(&gateway.url("/hop")).await;

    assert_eq!(reply.status, StatusCode::OK);
    for name in ["x-bar", "keep-alive", "proxy-authenticate", "connection"] {
        assert_eq!(
            reply.header(name),
            None,
            "{name} reached the client: {:?}",
            reply.headers
        );
    }
    assert_eq!(reply.header("x-kept"), Some("yes"));
}

// ---------------------------------------------------------------------------
// 3. X-Forwarded-*

#[tokio::test]
async fn x_forwarded_for_is_appended_and_proto_and_host_describe_the_client_request() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("fwd", "/", &upstream.url()).await;

    let reply = get_with(
        &gateway.url("/fwd"),
        &[
            ("host", "shop.example:8443"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
        ],
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.next_request().await;
    assert_eq!(seen.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example:8443"));
    // The upstream is addressed by its own authority, not the client's Host.
    assert_eq!(
        seen.header("host"),
        Some(upstream.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn several_x_forwarded_for_lines_are_joined_in_order_before_the_client_address() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("fwd", "/", &upstream.url()).await;

    let reply = raw_get(
        gateway.addr,
        "/fwd",
        &[
            "X-Forwarded-For: 10.0.0.1",
            "X-Forwarded-For: 10.0.0.2, 10.0.0.3",
        ],
    )
    .await;

    assert_eq!(reply.status, 200);
    let seen = upstream.next_request().await;
    let values: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(values, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-host"), Some("gateway.test"));
}

// ---------------------------------------------------------------------------
// 4. Route precedence

/// Routes that tell themselves apart by their upstream's base path.
async fn precedence_gateway(upstream: &RecordingUpstream) -> TestGateway {
    let up = upstream.url();
    let routes = [
        route("root", "/", &format!("{up}/r-root"), ""),
        route("api", "/api", &format!("{up}/r-api"), ""),
        route(
            "admin",
            "/api/admin",
            &format!("{up}/r-admin"),
            "methods = [\"GET\", \"PUT\"]",
        ),
        route(
            "internal",
            "/api",
            &format!("{up}/r-internal"),
            "host = \"internal.example\"",
        ),
    ]
    .concat();
    spawn_gateway(&config("", &routes)).await
}

#[tokio::test]
async fn the_longest_whole_segment_prefix_wins() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = precedence_gateway(&upstream).await;

    for (path, expected) in [
        ("/api/users", "/r-api/api/users"),
        ("/api", "/r-api/api"),
        ("/api/", "/r-api/api/"),
        ("/apix", "/r-root/apix"),
        ("/api/admin", "/r-admin/api/admin"),
        ("/api/admin/x", "/r-admin/api/admin/x"),
        ("/api/adminx", "/r-api/api/adminx"),
        ("/", "/r-root/"),
        ("/other/x", "/r-root/other/x"),
    ] {
        let reply = get(&gateway.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(upstream.next_request().await.target, expected, "{path}");
    }
}

#[tokio::test]
async fn host_routes_are_matched_before_host_less_ones() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = precedence_gateway(&upstream).await;

    for (host, path, expected) in [
        ("internal.example", "/api/x", "/r-internal/api/x"),
        ("Internal.EXAMPLE:8443", "/api/x", "/r-internal/api/x"),
        // The host's own /api beats the longer host-less /api/admin.
        ("internal.example", "/api/admin", "/r-internal/api/admin"),
        // A path the host's routes do not cover falls back to host-less ones.
        ("internal.example", "/other", "/r-root/other"),
        ("public.example", "/api/x", "/r-api/api/x"),
    ] {
        let reply = get_with(&gateway.url(path), &[("host", host)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{host} {path}");
        assert_eq!(
            upstream.next_request().await.target,
            expected,
            "{host} {path}"
        );
    }
}

#[tokio::test]
async fn a_method_the_longest_prefix_does_not_take_is_405_with_allow_not_a_fallthrough() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = precedence_gateway(&upstream).await;

    let reply = send(
        Request::delete(gateway.url("/api/admin/x"))
            .body(empty())
            .unwrap(),
    )
    .await;

    assert_json_error(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET, PUT"));
    barrier(&upstream, &gateway, "/api/admin/x").await;
}

// ---------------------------------------------------------------------------
// 5. Path normalisation

#[tokio::test]
async fn the_upstream_receives_exactly_the_normalised_path_it_was_routed_by() {
    let api = RecordingUpstream::start(Behaviour::ok()).await;
    let admin = RecordingUpstream::start(Behaviour::ok()).await;
    let routes = [
        route("api", "/api", &api.url(), ""),
        route("admin", "/admin", &admin.url(), ""),
    ]
    .concat();
    let gateway = spawn_gateway(&config("", &routes)).await;

    for (sent, upstream, expected) in [
        ("/api/../admin", &admin, "/admin"),
        ("/api/%2e%2e/admin", &admin, "/admin"),
        ("/api/%2E%2E/admin/x", &admin, "/admin/x"),
        ("/api/.%2e/admin", &admin, "/admin"),
        ("/%61dmin", &admin, "/admin"),
        ("//api/x", &api, "/api/x"),
        ("/api//x///y", &api, "/api/x/y"),
        ("/api/./x/", &api, "/api/x/"),
        ("/api/x/..", &api, "/api/"),
        ("/api/%7euser", &api, "/api/~user"),
        ("/api/a%20b", &api, "/api/a%20b"),
        ("/api/a%3fb", &api, "/api/a%3Fb"),
        ("http://gateway.test/api/../admin", &admin, "/admin"),
    ] {
        let reply = raw_get(gateway.addr, sent, &[]).await;
        assert_eq!(reply.status, 200, "{sent}: {:?}", reply.json());
        assert_eq!(upstream.next_request().await.target, expected, "{sent}");
    }
    assert_eq!(api.requests().len(), 7);
    assert_eq!(admin.requests().len(), 6);
}

#[tokio::test]
async fn the_query_string_passes_unchanged() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("api", "/api", &upstream.url()).await;

    for (sent, expected) in [
        ("/api/x?b=2&a=%2e%2e&c=/../", "/api/x?b=2&a=%2e%2e&c=/../"),
        ("/api/../api/x?q=%2F&q=%41", "/api/x?q=%2F&q=%41"),
        ("/api?", "/api?"),
    ] {
        let reply = raw_get(gateway.addr, sent, &[]).await;
        assert_eq!(reply.status, 200, "{sent}");
        assert_eq!(upstream.next_request().await.target, expected, "{sent}");
    }
}

#[tokio::test]
async fn an_encoded_slash_or_a_climb_above_the_root_is_400_and_reaches_no_upstream() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("all", "/", &upstream.url()).await;

    for sent in [
        "/api/%2Fadmin",
        "/api/%2fadmin",
        "/..",
        "/../x",
        "/api/../../etc/passwd",
        "/%2e%2e/x",
        "/a%00b",
        "/a%zz",
    ] {
        let reply = raw_get(gateway.addr, sent, &[]).await;
        reply.assert_json_error(400, "invalid_request");
    }
    barrier(&upstream, &gateway, "/fine").await;
}

#[tokio::test]
async fn path_case_is_preserved_so_upper_case_does_not_match_a_lower_case_prefix() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("api", "/api", &upstream.url()).await;

    for sent in ["/API", "/Api/x", "/%41PI"] {
        let reply = raw_get(gateway.addr, sent, &[]).await;
        reply.assert_json_error(404, "not_found");
    }
    let reply = raw_get(gateway.addr, "/api/MiXeD/%41", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.next_request().await.target, "/api/MiXeD/A");
}

// ---------------------------------------------------------------------------
// 6. strip_prefix and base paths

#[tokio::test]
async fn strip_prefix_and_an_upstream_base_path_combine() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let up = upstream.url();
    let routes = [
        route(
            "stripped",
            "/svc",
            &format!("{up}/base"),
            "strip_prefix = true",
        ),
        route(
            "kept",
            "/keep",
            &format!("{up}/base/"),
            "strip_prefix = false",
        ),
        route("bare", "/bare", &up, "strip_prefix = true"),
    ]
    .concat();
    let gateway = spawn_gateway(&config("", &routes)).await;

    for (sent, expected) in [
        ("/svc/items?x=1", "/base/items?x=1"),
        ("/svc/a/b/", "/base/a/b/"),
        ("/svc/", "/base/"),
        ("/svc/../svc/items", "/base/items"),
        ("/keep/items", "/base/keep/items"),
        ("/bare/x", "/x"),
        ("/bare", "/"),
    ] {
        let reply = raw_get(gateway.addr, sent, &[]).await;
        assert_eq!(reply.status, 200, "{sent}");
        assert_eq!(upstream.next_request().await.target, expected, "{sent}");
    }
    // A prefix is stripped on whole segments only: /svcx is no /svc request.
    raw_get(gateway.addr, "/svcx", &[])
        .await
        .assert_json_error(404, "not_found");
}

// ---------------------------------------------------------------------------
// 7. Round robin

#[tokio::test]
async fn round_robin_alternates_between_two_upstreams() {
    let a = RecordingUpstream::start(Behaviour::ok()).await;
    let b = RecordingUpstream::start(Behaviour::ok()).await;
    let routes = format!(
        "\n[[routes]]\nname = \"rr\"\npath_prefix = \"/\"\nupstream = [\"{}\", \"{}\"]\nauth = \"none\"\n",
        a.url(),
        b.url()
    );
    let gateway = spawn_gateway(&config("", &routes)).await;

    for i in 0..6 {
        let reply = get(&gateway.url(&format!("/rr/{i}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    let served = |upstream: &RecordingUpstream, i: usize| {
        let target = format!("/rr/{i}");
        upstream.requests().iter().any(|r| r.target == target)
    };
    let order: Vec<char> = (0..6)
        .map(|i| match (served(&a, i), served(&b, i)) {
            (true, false) => 'a',
            (false, true) => 'b',
            other => panic!("request {i} was served by (a, b) = {other:?}"),
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "requests alternate: {order:?}"
    );
    assert_eq!(a.requests().len(), 3);
    assert_eq!(b.requests().len(), 3);
}

// ---------------------------------------------------------------------------
// 8. 404

#[tokio::test]
async fn an_unmatched_request_is_404_json_carrying_the_execution_key() {
    let gateway = gateway_with_route("echo", "/echo", "builtin:echo").await;

    let reply = get(&gateway.url("/nowhere")).await;

    assert_json_error(&reply, 404, "not_found");
    assert_uuid_v7(reply.execution_key());
}

// ---------------------------------------------------------------------------
// 9. Upstream failures

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_502_bad_gateway() {
    let refused = refused_addr();
    let gateway = gateway_with_route("down", "/", &format!("http://{refused}")).await;

    let reply = get(&gateway.url("/x")).await;

    assert_json_error(&reply, 502, "bad_gateway");
}

#[tokio::test]
async fn an_upstream_slower_than_the_route_timeout_is_504_upstream_timeout() {
    let upstream = RecordingUpstream::start(Behaviour::slow(Duration::from_secs(2))).await;
    let gateway = spawn_gateway(&config(
        "",
        &route("slow", "/", &upstream.url(), "timeout = \"200ms\""),
    ))
    .await;

    let started = Instant::now();
    let reply = get(&gateway.url("/slow")).await;
    let took = started.elapsed();

    assert_json_error(&reply, 504, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert_eq!(upstream.requests().len(), 1, "the request did reach it");
}

// ---------------------------------------------------------------------------
// 10. Body limit

#[tokio::test]
async fn a_content_length_over_the_limit_is_413_before_reaching_the_upstream() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "max_body_bytes = 4096",
        &route("up", "/", &upstream.url(), ""),
    ))
    .await;

    let reply = send(
        Request::post(gateway.url("/upload"))
            .body(full(vec![b'z'; 4097]))
            .unwrap(),
    )
    .await;

    assert_json_error(&reply, 413, "payload_too_large");

    // A declared 1 GiB body is refused on its Content-Length alone: only
    // 1 KiB of it is ever sent, so an answer proves the gateway did not wait
    // for the body (nor forward the head).
    let mut request = b"POST /upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'z'; 1024]);
    raw_request(gateway.addr, &request)
        .await
        .assert_json_error(413, "payload_too_large");
    assert!(upstream.heads().is_empty(), "{:?}", upstream.heads());

    // Exactly the limit passes.
    let reply = send(
        Request::post(gateway.url("/upload"))
            .body(full(vec![b'z'; 4096]))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.heads().len(), 1, "only the second request arrived");
    assert_eq!(upstream.requests()[0].body_len, 4096);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "max_body_bytes = 4096",
        &route("up", "/", &upstream.url(), ""),
    ))
    .await;

    let reply = send(
        Request::post(gateway.url("/upload"))
            .body(chunks(1024, 8))
            .unwrap(),
    )
    .await;

    assert_json_error(&reply, 413, "payload_too_large");
    assert!(
        upstream.requests().iter().all(|r| r.body_len <= 4096),
        "no body over the limit arrived whole"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_from_the_builtin_echo_too() {
    let gateway = spawn_gateway(&config(
        "max_body_bytes = 4096",
        &route("echo", "/", "builtin:echo", ""),
    ))
    .await;

    let reply = send(
        Request::post(gateway.url("/upload"))
            .body(chunks(1024, 8))
            .unwrap(),
    )
    .await;

    assert_json_error(&reply, 413, "payload_too_large");
}

// ---------------------------------------------------------------------------
// 11. Header limit

#[tokio::test]
async fn a_20_kb_header_over_max_header_bytes_is_431() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "max_header_bytes = 16384",
        &route("up", "/", &upstream.url(), ""),
    ))
    .await;

    let big = format!("X-Big: {}", "a".repeat(20 * 1024));
    let reply = raw_get(gateway.addr, "/x", &[&big]).await;

    assert_eq!(reply.status, 431);
    barrier(&upstream, &gateway, "/fine").await;
}

#[tokio::test]
async fn headers_just_over_a_small_max_header_bytes_are_431_json() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "max_header_bytes = 4096",
        &route("up", "/", &upstream.url(), ""),
    ))
    .await;

    // Several headers that only together exceed the limit (but not hyper's
    // own 8 KiB buffer), so the gateway's exact check answers.
    let lines: Vec<String> = (0..5)
        .map(|i| format!("X-Part-{i}: {}", "b".repeat(1000)))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let reply = raw_get(gateway.addr, "/x", &lines).await;

    reply.assert_json_error(431, "request_header_fields_too_large");
    barrier(&upstream, &gateway, "/fine").await;
}

// ---------------------------------------------------------------------------
// 12. Graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_refuses_new_connections_and_exits_0() {
    let upstream = RecordingUpstream::start(Behaviour::slow(Duration::from_secs(1))).await;
    let mut warden = spawn_warden(&config(
        "shutdown_grace = \"10s\"",
        &format!(
            "[log]\nformat = \"json\"\n{}",
            route("slow", "/", &upstream.url(), "")
        ),
    ))
    .await;
    let addr = warden.addr;

    let url = format!("http://{addr}/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    upstream.next_request().await;
    warden.sigterm();

    // The listener is closed before draining starts: no new connections,
    // while the request is still in flight.
    warden
        .next_line(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
        })
        .await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a new connection is refused while draining"
    );
    assert!(
        !in_flight.is_finished(),
        "the slow request is still running"
    );

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "upstream ok\n");
    let status = warden.wait_exit().await;
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------
// 13. Config errors

const BAD_CONFIG: &str = r#"[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:18080"

[log]
format = "json"
colour = "blue"

[[routes]]
name = "orders"
path_prefix = "orders"
upstream = "ftp://x"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "builtin:echo"
auth = "magic"

[[routes]]
name = "echo"
path_prefix = "/echo"
upstream = "builtin:echo"
auth = "none"

[[routes]]
name = "echo"
path_prefix = "/echo2"
upstream = "builtin:echo"
auth = "none"
"#;

fn expected_problems(origin: &str) -> String {
    format!(
        "6 problems in the configuration:
{origin}:3:16: server.admin_listen: 127.0.0.1:18080 overlaps server.listen (127.0.0.1:18080)
  fix: give the admin listener its own port, e.g. admin_listen = \"127.0.0.1:9090\"
{origin}:7:1: log: unknown field `colour`, expected one of `level`, `format`, `otlp_endpoint`, `otlp_service_name`
  fix: see docs/configuration.md#log
{origin}:11:15: routes[0].path_prefix: \"orders\" is not a normalised absolute path
  fix: start it with '/', without '.' or '..' segments, '//', '?', '#', spaces or escapes of plain characters (write %7E as ~), e.g. \"/orders\"
{origin}:12:12: routes[0].upstream: \"ftp://x\" is not a usable upstream URL: the scheme must be http or https
  fix: use http://host:port or https://host:port, optionally with a base path, or \"builtin:echo\"
{origin}:18:8: routes[1].auth: unknown value \"magic\"
  fix: use \"jwt\" (a valid token is required) or \"none\" (a public route)
{origin}:27:8: routes[3].name: duplicate route name \"echo\" (also routes[2])
  fix: give every route its own name: names label metrics and logs
"
    )
}

#[test]
fn warden_check_reports_every_problem_with_file_line_column_and_key_and_exits_1() {
    let file = ConfigFile::new(BAD_CONFIG);
    let output = warden_command(&["check", "--config", file.path_str()])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        expected_problems(file.path_str())
    );
}

#[test]
fn config_from_toml_reports_the_same_problems_in_file_order() {
    let err = warden::Config::from_toml(BAD_CONFIG, "gw.toml").unwrap_err();

    assert_eq!(err.problems.len(), 6);
    assert_eq!(err.to_string(), expected_problems("gw.toml"));
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.admin_listen",
            "log",
            "routes[0].path_prefix",
            "routes[0].upstream",
            "routes[1].auth",
            "routes[3].name"
        ]
    );
}

#[test]
fn a_valid_config_checks_ok() {
    let file = ConfigFile::new(&config("", &route("echo", "/", "builtin:echo", "")));
    let output = warden_command(&["check", "--config", file.path_str()])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}: ok (1 routes)\n", file.path_str())
    );
}

#[test]
fn a_duplicate_route_name_is_reported_even_when_both_routes_have_other_problems() {
    // Found by these tests: the duplicate check only compares routes that
    // were valid otherwise, so fixing one problem reveals another.
    let text = r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "ftp://x"

[[routes]]
name = "orders"
path_prefix = "/orders2"
upstream = "builtin:echo"
auth = "magic"
"#;
    let err = warden::Config::from_toml(text, "gw.toml").unwrap_err();
    let rendered: Vec<String> = err.problems.iter().map(ToString::to_string).collect();

    assert!(
        rendered.iter().any(|p| p.starts_with(
            "gw.toml:8:8: routes[1].name: duplicate route name \"orders\" (also routes[0])"
        )),
        "{rendered:#?}"
    );
    assert_eq!(err.problems.len(), 3, "{rendered:#?}");
}

#[tokio::test]
async fn warden_run_with_an_invalid_config_exits_1_without_binding_its_port() {
    let port = free_addr();
    let text = format!(
        "[server]\nlisten = \"{port}\"\nadmin_listen = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"x\"\npath_prefix = \"/\"\nupstream = \"ftp://x\"\n"
    );
    let file = ConfigFile::new(&text);
    let output = warden_command(&["run", "--config", file.path_str()])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "1 problem in the configuration:\n{}:8:12: routes[0].upstream: \"ftp://x\" is not a usable upstream URL: the scheme must be http or https\n  fix: use http://host:port or https://host:port, optionally with a base path, or \"builtin:echo\"\n",
            file.path_str()
        )
    );
    // Nothing took the port.
    std::net::TcpListener::bind(port).expect("the configured port is still free");
}

// ---------------------------------------------------------------------------
// 14. Execution key

#[tokio::test]
async fn the_response_and_the_upstream_request_carry_the_same_uuid_v7_execution_key() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("up", "/", &upstream.url()).await;

    let first = get(&gateway.url("/a")).await;
    let seen = upstream.next_request().await;
    let second = get(&gateway.url("/b")).await;

    assert_uuid_v7(first.execution_key());
    assert_eq!(seen.header("x-execution-key"), Some(first.execution_key()));
    assert_ne!(first.execution_key(), second.execution_key());
}

#[tokio::test]
async fn the_access_log_line_carries_the_execution_key_and_the_request_facts() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let mut warden = spawn_warden(&config(
        "",
        &format!(
            "[log]\nformat = \"json\"\n{}",
            route("items", "/items", &upstream.url(), "")
        ),
    ))
    .await;

    let reply = send(
        Request::post(format!("http://{}/items/7?token=secret", warden.addr))
            .body(full("hello"))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let key = reply.execution_key().to_owned();
    assert_uuid_v7(&key);
    assert_eq!(
        upstream.next_request().await.header("x-execution-key"),
        Some(key.as_str())
    );

    let line = warden
        .next_line(|line| line["target"] == "warden::access" && line["execution_key"] == key)
        .await;
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/items/7", "no query string in the log");
    assert_eq!(line["route"], "items");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], "upstream ok\n".len());
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
    assert!(!line.to_string().contains("secret"), "{line}");
}

#[tokio::test]
async fn an_inbound_execution_key_is_replaced_when_not_trusted() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("up", "/", &upstream.url()).await;

    let reply = get_with(&gateway.url("/x"), &[("x-execution-key", "job-42.retry_1")]).await;

    assert_ne!(reply.execution_key(), "job-42.retry_1");
    assert_uuid_v7(reply.execution_key());
    let seen = upstream.next_request().await;
    let values: Vec<_> = seen.headers.get_all("x-execution-key").iter().collect();
    assert_eq!(values, [reply.execution_key()]);
}

#[tokio::test]
async fn a_trusted_inbound_execution_key_is_kept_when_valid_and_replaced_when_not() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = spawn_gateway(&config(
        "trust_execution_key_header = true",
        &route("up", "/", &upstream.url(), ""),
    ))
    .await;

    let kept = get_with(&gateway.url("/x"), &[("x-execution-key", "job-42.retry_1")]).await;
    assert_eq!(kept.execution_key(), "job-42.retry_1");
    assert_eq!(
        upstream.next_request().await.header("x-execution-key"),
        Some("job-42.retry_1")
    );

    let replaced = get_with(&gateway.url("/x"), &[("x-execution-key", "bad key!")]).await;
    assert_uuid_v7(replaced.execution_key());
    assert_eq!(
        upstream.next_request().await.header("x-execution-key"),
        Some(replaced.execution_key())
    );

    let too_long = "k".repeat(129);
    let replaced = get_with(&gateway.url("/x"), &[("x-execution-key", &too_long)]).await;
    assert_uuid_v7(replaced.execution_key());
    upstream.next_request().await;

    // The key on a gateway's own answer is the trusted one too.
    let not_found = spawn_gateway(&config(
        "trust_execution_key_header = true",
        &route("up", "/only", &upstream.url(), ""),
    ))
    .await;
    let reply = get_with(&not_found.url("/x"), &[("x-execution-key", "trace-7")]).await;
    assert_json_error(&reply, 404, "not_found");
    assert_eq!(reply.execution_key(), "trace-7");
}

// ---------------------------------------------------------------------------
// 15. Admin listener

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_the_admin_listener_only() {
    let gateway = gateway_with_route("echo", "/echo", "builtin:echo").await;

    let health = get(&gateway.admin_url("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = get(&gateway.admin_url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["ready"], true);

    // The main listener does not serve them: no route matches.
    assert_json_error(&get(&gateway.url("/healthz")).await, 404, "not_found");
    assert_json_error(&get(&gateway.url("/metrics")).await, 404, "not_found");
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status_with_none_for_unmatched() {
    let gateway = gateway_with_route("echo", "/echo", "builtin:echo").await;

    assert_eq!(get(&gateway.url("/echo/x")).await.status, StatusCode::OK);
    assert_eq!(get(&gateway.url("/echo/y")).await.status, StatusCode::OK);
    assert_eq!(
        get(&gateway.url("/nope")).await.status,
        StatusCode::NOT_FOUND
    );

    let text = scrape_until(
        gateway.admin,
        &[
            "warden_requests_total{method=\"GET\",route=\"echo\",status=\"200\"} 2",
            "warden_requests_total{method=\"GET\",route=\"none\",status=\"404\"} 1",
            "warden_in_flight_requests 0",
        ],
    )
    .await;
    assert!(
        text.contains("warden_request_duration_seconds_count{route=\"echo\"} 2"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("process_")),
        "the process collector is registered:\n{text}"
    );
    assert!(
        !text.contains("/echo/x") && !text.contains("/nope"),
        "no path in a label"
    );

    let reply = get(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
}

#[tokio::test]
async fn a_request_in_flight_shows_in_the_in_flight_gauge() {
    let upstream = RecordingUpstream::start(Behaviour::slow(Duration::from_millis(500))).await;
    let gateway = gateway_with_route("slow", "/", &upstream.url()).await;

    let url = gateway.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    upstream.next_request().await;
    let text = scrape(gateway.admin).await;
    assert!(
        text.lines().any(|l| l == "warden_in_flight_requests 1"),
        "{text}"
    );
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    scrape_until(gateway.admin, &["warden_in_flight_requests 0"]).await;
}

// ---------------------------------------------------------------------------
// 16. Auth fails closed

#[tokio::test]
async fn a_jwt_route_answers_401_with_a_bearer_challenge_and_never_reaches_the_upstream() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let up = upstream.url();
    // An ephemeral key, so that tokens could be verified at all; `auth`
    // left out means "jwt".
    let rest = format!(
        r#"
[[keys]]
kid = "test-es256"
alg = "ES256"
generate = true

[issuer]
iss = "http://warden.test"
aud = ["warden"]
signing_kid = "test-es256"
{public}
[[routes]]
name = "default"
path_prefix = "/default"
upstream = "{up}"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{up}"
auth = "jwt"
"#,
        public = route("public", "/public", &up, ""),
    );
    let gateway = spawn_gateway(&config("", &rest)).await;

    for path in ["/orders", "/orders/1", "/default/x"] {
        let reply = get(&gateway.url(path)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"warden\""),
            "{path}"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.json()["execution_key"].as_str(),
            Some(reply.execution_key())
        );
    }
    // A made-up token does not get through either.
    let reply = get_with(
        &gateway.url("/orders/1"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer realm=\"warden\"")),
        "{:?}",
        reply.headers
    );

    barrier(&upstream, &gateway, "/public/x").await;
}

#[tokio::test]
async fn a_gateway_shut_down_in_process_stops_accepting() {
    let gateway = gateway_with_route("echo", "/", "builtin:echo").await;
    let addr = gateway.addr;
    assert_eq!(get(&gateway.url("/x")).await.status, StatusCode::OK);

    gateway.shutdown().await;

    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_method_list_route_answers_other_methods_405() {
    let gateway = spawn_gateway(&config(
        "",
        &route("ro", "/ro", "builtin:echo", "methods = [\"GET\"]"),
    ))
    .await;

    let reply = send(
        Request::builder()
            .method(Method::POST)
            .uri(gateway.url("/ro/x"))
            .body(full("x"))
            .unwrap(),
    )
    .await;

    assert_json_error(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET"));
}

// ---------------------------------------------------------------------------
// More upstream failures, shutdown and protocol cases

#[tokio::test]
async fn an_upstream_that_closes_the_connection_without_answering_is_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            drop(stream);
        }
    });
    let gateway = gateway_with_route("rude", "/", &format!("http://{upstream}")).await;

    let reply = get(&gateway.url("/x")).await;

    assert_json_error(&reply, 502, "bad_gateway");
    closer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_waiting_after_shutdown_grace_and_still_exits_0() {
    let upstream = RecordingUpstream::start(Behaviour::slow(Duration::from_secs(5))).await;
    let mut warden = spawn_warden(&config(
        "shutdown_grace = \"300ms\"",
        &format!(
            "[log]\nformat = \"json\"\n{}",
            route("slow", "/", &upstream.url(), "")
        ),
    ))
    .await;

    let url = format!("http://{}/slow", warden.addr);
    let in_flight = tokio::spawn(async move {
        client()
            .request(Request::get(url).body(empty()).unwrap())
            .await
    });
    upstream.next_request().await;
    let signalled = Instant::now();
    warden.sigterm();
    let status = warden.wait_exit().await;

    assert_eq!(status.code(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM"
    );
    // The request that outlived the grace period was cut off, not answered.
    assert!(in_flight.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_do_not_hold_up_shutdown() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let mut warden = spawn_warden(&config(
        "shutdown_grace = \"10s\"",
        &format!(
            "[log]\nformat = \"json\"\n{}",
            route("up", "/", &upstream.url(), "")
        ),
    ))
    .await;

    // One connection that never sends a byte, one pooled keep-alive
    // connection that has served a request and sits idle.
    let _silent = TcpStream::connect(warden.addr).await.unwrap();
    let pooled = client();
    let reply = send_on(
        &pooled,
        Request::get(format!("http://{}/x", warden.addr))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let signalled = Instant::now();
    warden.sigterm();
    let status = warden.wait_exit().await;

    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exit took {:?}: idle connections held up the drain",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_disconnects_before_the_answer_is_still_counted_and_leaves_the_in_flight_gauge()
 {
    let upstream = RecordingUpstream::start(Behaviour::slow(Duration::from_millis(300))).await;
    let gateway = gateway_with_route("slow", "/", &upstream.url()).await;

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /slow HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
    )
    .await
    .unwrap();
    upstream.next_request().await;
    drop(stream);

    // The upstream answers 300 ms after the request arrived; by then the
    // request is over one way or another.
    let text = scrape_until_within(
        gateway.admin,
        &["warden_in_flight_requests 0"],
        Duration::from_secs(3),
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("warden_requests_total{")),
        "the abandoned request is counted:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_normalised_routed_and_forwarded_like_http_1_1() {
    let api = RecordingUpstream::start(Behaviour::ok()).await;
    let admin = RecordingUpstream::start(Behaviour::ok()).await;
    let routes = [
        route("api", "/api", &api.url(), ""),
        route("admin", "/admin", &admin.url(), ""),
    ]
    .concat();
    let gateway = spawn_gateway(&config("max_header_bytes = 16384", &routes)).await;
    let h2 = h2c_client();

    let reply = send_on(
        &h2,
        Request::post(gateway.url("/api/%2e%2e/admin/x?q=1"))
            .header("x-forwarded-for", "10.0.0.1")
            .header("te", "trailers")
            .body(full("abc"))
            .unwrap(),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_uuid_v7(reply.execution_key());
    let seen = admin.next_request().await;
    assert_eq!(seen.target, "/admin/x?q=1");
    assert_eq!(seen.body_len, 3);
    assert_eq!(seen.header("x-execution-key"), Some(reply.execution_key()));
    assert_eq!(seen.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(gateway.addr.to_string().as_str())
    );
    assert_eq!(seen.header("te"), None);
    assert!(api.heads().is_empty());

    let big = "a".repeat(20 * 1024);
    let reply = send_on(
        &h2c_client(),
        Request::get(gateway.url("/api/x"))
            .header("x-big", big)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 431);
    assert!(api.heads().is_empty());
}

// ---------------------------------------------------------------------------
// Host handling (RFC 9112 §3.2)

/// A host-less `/api` and an `/api` for `internal.example`, told apart by
/// their upstream's base path.
async fn host_gateway(upstream: &RecordingUpstream) -> TestGateway {
    let up = upstream.url();
    let routes = [
        route("public", "/api", &format!("{up}/pub"), ""),
        route(
            "internal",
            "/api",
            &format!("{up}/int"),
            "host = \"internal.example\"",
        ),
    ]
    .concat();
    spawn_gateway(&config("", &routes)).await
}

#[tokio::test]
async fn routing_and_x_forwarded_host_agree_on_the_host_of_an_absolute_form_request() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = host_gateway(&upstream).await;

    // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
    let reply = raw_request(
        gateway.addr,
        b"GET http://internal.example/api/x HTTP/1.1\r\n\
          Host: public.example\r\n\
          Connection: close\r\n\r\n",
    )
    .await;

    assert_eq!(reply.status, 200);
    let seen = upstream.next_request().await;
    assert_eq!(
        seen.target, "/int/api/x",
        "routed by the target's authority"
    );
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some("internal.example"),
        "the upstream is told the host the request was routed by"
    );
}

#[tokio::test]
async fn an_http_1_1_request_with_no_host_or_an_ambiguous_host_is_400() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = host_gateway(&upstream).await;

    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) ... to
    // any HTTP/1.1 request message that lacks a Host header field and to any
    // request message that contains more than one Host header field line or a
    // Host header field with an invalid field value."
    for request in [
        &b"GET /api/x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/x HTTP/1.1\r\nHost: internal.example, public.example\r\nConnection: close\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let reply = raw_request(gateway.addr, request).await;
        assert_eq!(
            reply.status,
            400,
            "{:?} was answered {}",
            String::from_utf8_lossy(request),
            reply.status
        );
    }
    assert_eq!(upstream.heads(), Vec::<String>::new());
}

#[tokio::test]
async fn underscored_and_foreign_forwarding_headers_never_reach_the_upstream() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let gateway = gateway_with_route("fwd", "/", &upstream.url()).await;

    let reply = get_with(
        &gateway.url("/fwd"),
        &[
            ("x_forwarded_for", "6.6.6.6"),
            ("x_user_id", "admin"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-kept", "yes"),
        ],
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.next_request().await;
    for name in [
        "x_forwarded_for",
        "x_user_id",
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}
