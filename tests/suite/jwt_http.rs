//! Token validation (SPEC §4) over HTTP, through the real gateway: every row
//! of the rejection table, the size limits, claim forwarding, the verified
//! token cache, the decision metrics, and a trusted identity provider whose
//! JWKS rotates and goes down.
//!
//! Tokens are minted here with the same key material the gateway reads from
//! its `[[keys]]` files (an HS256 secret and an ES256 key), or with the test
//! identity provider's keys, including deliberately bad ones. The upstream is
//! a [`RecordingUpstream`], so a test can say that a refused request never
//! reached it.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use warden::StartOptions;
use warden::clock::unix_now;

const ISS: &str = "https://warden.test";
const AUD: &str = "orders-api";

// ---------------------------------------------------------------------------
// The gateway under test

/// A gateway with an HS256 and an ES256 key, three routes in front of one
/// recording upstream, and its audit events captured.
struct Fixture {
    gateway: TestGateway,
    upstream: RecordingUpstream,
    audit: AuditCapture,
    hs: TestKey,
    es: TestKey,
    _files: Vec<TempFile>,
}

/// The routes every fixture has:
/// - `orders`: scopes, a POST scope, a required claim, forwarded claims;
/// - `reports`: any valid token, and the token itself goes upstream;
/// - `public`: no token needed, but it declares a forwarded claim header.
fn routes(upstream: &str) -> String {
    format!(
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{upstream}"
scopes = ["orders:read"]
method_scopes = {{ POST = ["orders:write"] }}
require_claims = {{ tenant = ["acme", "globex"] }}
forward_claims = {{ "X-User-Id" = "sub", "X-User-Role" = "role", "X-Tenant" = "tenant" }}

[[routes]]
name = "reports"
path_prefix = "/reports"
upstream = "{upstream}"
forward_authorization = true
forward_claims = {{ "X-User-Id" = "sub" }}

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "{upstream}"
auth = "none"
forward_claims = {{ "X-User-Id" = "sub" }}
"#
    )
}

/// A fixture with `server_extra` in `[server]` and `validation` as the
/// body of `[validation]`.
async fn fixture(server_extra: &str, validation: &str) -> Fixture {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let hs = TestKey::generate("hs-1", Algorithm::HS256);
    let es = TestKey::generate("es-1", Algorithm::ES256);
    let (hs_file, es_file) = (hs.file(), es.file());
    let rest = format!(
        "{}{}\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"es-1\"\n\n[validation]\n{validation}\n{}",
        hs.config_entry(&hs_file),
        es.config_entry(&es_file),
        routes(&upstream.url()),
    );
    let (writer, audit) = audit_capture(1024);
    let gateway = spawn_gateway_with(
        &config(server_extra, &rest),
        StartOptions {
            audit_writer: Some(writer),
            ..StartOptions::default()
        },
    )
    .await;
    Fixture {
        gateway,
        upstream,
        audit,
        hs,
        es,
        _files: vec![hs_file, es_file],
    }
}

/// Claims that pass every check of the `orders` route, with `changes`
/// applied (`null` removes a claim). Each call has its own `jti`.
fn claims(changes: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "jti": uuid::Uuid::now_v7().to_string(),
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 600,
        "scope": "orders:read orders:write",
        "role": "analyst",
        "tenant": "acme",
    });
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

async fn get_bearer(url: &str, token: &str) -> Reply {
    get_with(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Asserts an RFC 6750 rejection: status, the exact `WWW-Authenticate`, and
/// the JSON body with `error`, `error_description` and the execution key.
fn assert_rejected(reply: &Reply, status: u16, challenge: &str, error: &str, description: &str) {
    assert_json_error(reply, status, error);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(challenge),
        "the challenge of a {status} {error:?}"
    );
    assert_eq!(reply.json()["error_description"], description);
}

fn invalid_token(description: &str) -> String {
    format!("Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{description}\"")
}

fn insufficient_scope(scope: &str) -> String {
    format!("Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"{scope}\"")
}

/// The `token_use` audit event of the request answered with `reply`.
async fn token_use(audit: &AuditCapture, reply: &Reply) -> Value {
    let key = reply.execution_key().to_owned();
    audit
        .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == key.as_str())
        .await
}

// ---------------------------------------------------------------------------
// The rejection table

#[tokio::test]
async fn no_token_a_basic_header_or_a_token_in_the_query_gets_a_bare_bearer_challenge() {
    let f = fixture("", "").await;
    let good = f.es.token(&claims(json!({})));

    let replies = [
        get(&f.gateway.url("/orders/1")).await,
        get_with(
            &f.gateway.url("/orders/1"),
            &[("authorization", "Basic YWxpY2U6c2VjcmV0")],
        )
        .await,
        get(&f.gateway.url(&format!("/orders/1?access_token={good}"))).await,
        get(&f.gateway.url(&format!("/orders/1?token={good}"))).await,
    ];

    for reply in &replies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"warden\""),
            "no error attribute when no token was presented (RFC 6750 §3.1)"
        );
        let body = reply.json();
        assert!(body["error"].is_string(), "{body}");
        assert!(body["error_description"].is_string(), "{body}");
        assert_eq!(body["execution_key"].as_str(), Some(reply.execution_key()));
    }
    assert!(f.upstream.heads().is_empty(), "{:?}", f.upstream.heads());
    scrape_until(
        f.gateway.admin,
        &["warden_auth_decisions_total{decision=\"deny\",reason=\"missing_token\",route=\"orders\"} 4"],
    )
    .await;

    // The scheme is case-insensitive: the same token in the header passes.
    let reply = get_with(
        &f.gateway.url("/orders/1"),
        &[("authorization", &format!("bEaReR {good}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(f.upstream.requests().len(), 1);
}

#[tokio::test]
async fn two_authorization_headers_are_400_invalid_request_even_when_both_are_valid() {
    let f = fixture("", "").await;
    let token = f.es.token(&claims(json!({})));
    let line = format!("Authorization: Bearer {token}");

    let reply = raw_get(f.gateway.addr, "/orders/1", &[&line, &line]).await;

    reply.assert_json_error(400, "invalid_request");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"invalid_request\"")
    );
    assert!(reply.json()["error_description"].is_string());

    let reply = raw_get(
        f.gateway.addr,
        "/orders/1",
        &[&line, "Authorization: Basic YWxpY2U6c2VjcmV0"],
    )
    .await;
    reply.assert_json_error(400, "invalid_request");

    // The same over HTTP/2.
    let mut request = Request::get(f.gateway.url("/orders/1"))
        .body(empty())
        .unwrap();
    for _ in 0..2 {
        request
            .headers_mut()
            .append("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let reply = send_on(&h2c_client(), request).await;
    assert_json_error(&reply, 400, "invalid_request");
    assert!(f.upstream.heads().is_empty(), "{:?}", f.upstream.heads());
}

#[tokio::test]
async fn each_kind_of_bad_token_is_401_invalid_token_saying_what_failed() {
    let f = fixture("", "").await;
    let now = unix_now();
    let impostor = TestKey::generate("hs-1", Algorithm::HS256);
    let good = f.es.token(&claims(json!({})));
    // The payload of a token with more scopes, under the good token's signature.
    let elevated = {
        let other =
            f.es.token(&claims(json!({"scope": "orders:read warden:admin"})));
        let parts: Vec<&str> = good.split('.').collect();
        let payload = other.split('.').nth(1).unwrap();
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": "es-1"});

    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "malformed",
            "not-a-jwt".into(),
            "token is not a compact JWS",
            "malformed",
        ),
        (
            "signed with another secret under the gateway's kid",
            impostor.token(&claims(json!({}))),
            "signature invalid",
            "signature_invalid",
        ),
        (
            "a payload swapped under a good signature",
            elevated,
            "signature invalid",
            "signature_invalid",
        ),
        (
            "expired",
            f.hs.token(&claims(
                json!({"exp": now - 120, "iat": now - 900, "nbf": now - 900}),
            )),
            "token expired",
            "token_expired",
        ),
        (
            "not yet valid",
            f.es.token(&claims(json!({"nbf": now + 600, "exp": now + 1200}))),
            "token not yet valid",
            "token_not_yet_valid",
        ),
        (
            "of another issuer",
            f.hs.token(&claims(json!({"iss": "https://evil.test"}))),
            "issuer not accepted",
            "issuer_mismatch",
        ),
        (
            "for another audience",
            f.es.token(&claims(json!({"aud": ["billing-api"]}))),
            "audience not accepted",
            "audience_mismatch",
        ),
        (
            "naming an unknown key",
            TestKey::generate("nobody", Algorithm::ES256).token(&claims(json!({}))),
            "unknown key",
            "unknown_kid",
        ),
        (
            "alg none",
            f.es.sign(&none_header, &claims(json!({})))
                .rsplit_once('.')
                .map(|(input, _)| format!("{input}.AAAA"))
                .unwrap(),
            "algorithm not allowed",
            "alg_not_allowed",
        ),
        (
            "without exp",
            f.es.token(&claims(json!({"exp": null}))),
            "token has no exp",
            "malformed",
        ),
    ];

    for (what, token, description, reason) in &cases {
        let reply = get_bearer(&f.gateway.url("/orders/1"), token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "a token {what}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_rejected(
            &reply,
            401,
            &invalid_token(description),
            "invalid_token",
            description,
        );
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains(token.as_str()), "the body echoes the token");
        let event = token_use(&f.audit, &reply).await;
        assert_eq!(event["decision"], "deny", "{event}");
        assert_eq!(event["reason"], *reason, "a token {what}: {event}");
        assert_eq!(event["status"], 401);
        assert_eq!(event["route"], "orders");
    }
    assert!(
        f.upstream.heads().is_empty(),
        "a refused request reached the upstream: {:?}",
        f.upstream.heads()
    );

    let line = |reason: &str, n: u32| {
        format!(
            "warden_auth_decisions_total{{decision=\"deny\",reason=\"{reason}\",route=\"orders\"}} {n}"
        )
    };
    let wanted = [
        line("malformed", 2),
        line("signature_invalid", 2),
        line("token_expired", 1),
        line("token_not_yet_valid", 1),
        line("issuer_mismatch", 1),
        line("audience_mismatch", 1),
        line("unknown_kid", 1),
        line("alg_not_allowed", 1),
    ];
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    scrape_until(f.gateway.admin, &wanted).await;

    // The good token the swapped payload came from still passes.
    let reply = get_bearer(&f.gateway.url("/orders/1"), &good).await;
    assert_eq!(reply.status, StatusCode::OK);
    scrape_until(
        f.gateway.admin,
        &["warden_auth_decisions_total{decision=\"allow\",reason=\"ok\",route=\"orders\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn a_valid_token_without_the_routes_scope_or_claim_is_403_insufficient_scope() {
    let f = fixture("", "").await;
    let url = f.gateway.url("/orders/1");

    let write_only = f.es.token(&claims(json!({"scope": "orders:write"})));
    let reply = get_bearer(&url, &write_only).await;
    assert_rejected(
        &reply,
        403,
        &insufficient_scope("orders:read"),
        "insufficient_scope",
        "the token lacks a required scope",
    );
    let event = token_use(&f.audit, &reply).await;
    assert_eq!(event["decision"], "deny");
    assert_eq!(event["reason"], "insufficient_scope");
    assert_eq!(event["sub"], "alice");

    // POST needs orders:write besides orders:read.
    let read_only = f.es.token(&claims(json!({"scope": "orders:read"})));
    let post = |token: &str| {
        Request::post(&url)
            .header("authorization", format!("Bearer {token}"))
            .body(full("{}"))
            .unwrap()
    };
    let reply = send(post(&read_only)).await;
    assert_rejected(
        &reply,
        403,
        &insufficient_scope("orders:read orders:write"),
        "insufficient_scope",
        "the token lacks a required scope",
    );
    // The same token may GET.
    assert_eq!(get_bearer(&url, &read_only).await.status, StatusCode::OK);

    // A tenant the route does not allow, and no tenant at all.
    for tenant in [json!("initech"), Value::Null] {
        let token = f.hs.token(&claims(json!({ "tenant": tenant })));
        let reply = get_bearer(&url, &token).await;
        assert_json_error(&reply, 403, "insufficient_scope");
        // SPEC §15: the route's scopes, and the claim by its name.
        assert_eq!(
            reply.header("www-authenticate"),
            Some(
                "Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"orders:read\", \
                 error_description=\"required claim 'tenant' is missing or not allowed\""
            )
        );
        assert_eq!(
            reply.json()["error_description"],
            "required claim 'tenant' is missing or not allowed"
        );
        assert_eq!(
            token_use(&f.audit, &reply).await["reason"],
            "claim_mismatch"
        );
    }

    // Only the GET with the right scope went through.
    let seen = f.upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::GET);

    // Scopes from an scp array count as well; then a POST with both scopes passes.
    let scp = f.es.token(&claims(
        json!({"scope": null, "scp": ["orders:read", "orders:write"]}),
    ));
    assert_eq!(send(post(&scp)).await.status, StatusCode::OK);
    assert_eq!(f.upstream.requests().len(), 2);

    scrape_until(
        f.gateway.admin,
        &[
            "warden_auth_decisions_total{decision=\"deny\",reason=\"insufficient_scope\",route=\"orders\"} 2",
            "warden_auth_decisions_total{decision=\"deny\",reason=\"claim_mismatch\",route=\"orders\"} 2",
            "warden_auth_decisions_total{decision=\"allow\",reason=\"ok\",route=\"orders\"} 2",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_token_revoked_through_the_admin_api_is_refused_even_though_it_was_cached() {
    let f = fixture("", "").await;
    let url = f.gateway.url("/orders/1");
    let token = f.es.token(&claims(json!({})));
    assert_eq!(get_bearer(&url, &token).await.status, StatusCode::OK);

    let mine = token_claims(&token);
    let revoke = |bearer: &str| {
        Request::post(f.gateway.admin_url("/admin/revoke"))
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json")
            .body(full(
                json!({"jti": mine["jti"], "exp": mine["exp"]}).to_string(),
            ))
            .unwrap()
    };
    // The token's own holder is no operator.
    let reply = send(revoke(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(insufficient_scope("warden:admin").as_str())
    );
    // Verified a second time by the refused revocation above, the token is
    // now in the verified-token cache: this request is a hit.
    assert_eq!(get_bearer(&url, &token).await.status, StatusCode::OK);

    let operator =
        f.hs.token(&claims(json!({"sub": "ops", "scope": "warden:admin"})));
    let reply = send(revoke(&operator)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["jti"], mine["jti"]);

    let reply = get_bearer(&url, &token).await;
    assert_rejected(
        &reply,
        401,
        &invalid_token("token revoked"),
        "invalid_token",
        "token revoked",
    );
    assert_eq!(token_use(&f.audit, &reply).await["reason"], "token_revoked");
    let revoked = f.audit.wait_for(|e| e["event"] == "token_revoked").await;
    assert_eq!(revoked["jti"], mine["jti"]);
    assert_eq!(
        f.upstream.requests().len(),
        2,
        "only the two early requests passed"
    );
}

// ---------------------------------------------------------------------------
// Size limits

/// A token signed by `key` whose claims carry `padding` bytes of filler.
fn padded_token(key: &TestKey, padding: usize) -> String {
    key.token(&claims(json!({ "pad": "p".repeat(padding) })))
}

#[tokio::test]
async fn an_800_kb_token_is_refused_at_once_by_the_header_limit_and_never_reaches_the_upstream() {
    let f = fixture("", "").await;
    let token = padded_token(&f.es, 600 * 1024);
    assert!(token.len() > 790 * 1024, "{}", token.len());
    let line = format!("Authorization: Bearer {token}");

    let started = Instant::now();
    let reply = raw_get(f.gateway.addr, "/orders/1", &[&line]).await;

    assert_eq!(reply.status, 431);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // The gateway still serves, and nothing of the big request got through.
    let fine = f.es.token(&claims(json!({})));
    assert_eq!(
        get_bearer(&f.gateway.url("/orders/2"), &fine).await.status,
        StatusCode::OK
    );
    assert_eq!(f.upstream.heads(), vec!["/orders/2".to_owned()]);
}

#[tokio::test]
async fn with_a_raised_header_limit_an_800_kb_token_is_401_token_too_large_without_a_signature_check()
 {
    let f = fixture("max_header_bytes = 1048576", "").await;
    let token = padded_token(&f.es, 600 * 1024);

    let started = Instant::now();
    let reply = get_bearer(&f.gateway.url("/orders/1"), &token).await;

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_rejected(
        &reply,
        401,
        &invalid_token("token too large"),
        "invalid_token",
        "token too large",
    );
    assert!(f.upstream.heads().is_empty());
    scrape_until(
        f.gateway.admin,
        &[
            "warden_auth_decisions_total{decision=\"deny\",reason=\"token_too_large\",route=\"orders\"} 1",
            "warden_token_cache_requests_total{result=\"miss\"} 0",
        ],
    )
    .await;
}

/// A valid token of exactly `len` bytes: filler in the payload and in the
/// header's `typ` (base64url never makes some lengths from one segment alone).
fn token_of_length(key: &TestKey, len: usize) -> String {
    for typ_extra in 0..4 {
        let mut header = key.header();
        header["typ"] = format!("JWT{}", "t".repeat(typ_extra)).into();
        for padding in 0..len {
            let token = key.sign(&header, &claims(json!({ "pad": "p".repeat(padding) })));
            match token.len().cmp(&len) {
                std::cmp::Ordering::Equal => return token,
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => {}
            }
        }
    }
    panic!("no token of {len} bytes");
}

#[tokio::test]
async fn a_token_of_max_token_bytes_passes_and_one_byte_more_is_401_token_too_large() {
    let f = fixture("", "max_token_bytes = 1024").await;

    let at_limit = token_of_length(&f.hs, 1024);
    let reply = get_bearer(&f.gateway.url("/orders/1"), &at_limit).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    let over = token_of_length(&f.hs, 1025);
    let reply = get_bearer(&f.gateway.url("/orders/2"), &over).await;
    assert_rejected(
        &reply,
        401,
        &invalid_token("token too large"),
        "invalid_token",
        "token too large",
    );
    assert_eq!(f.upstream.heads(), vec!["/orders/1".to_owned()]);
}

// ---------------------------------------------------------------------------
// What the upstream gets

#[tokio::test]
async fn the_upstream_gets_the_tokens_claims_and_neither_forged_claim_headers_nor_the_token() {
    let f = fixture("", "").await;
    let token = f.es.token(&claims(
        json!({"sub": "alice", "role": "analyst", "tenant": "globex"}),
    ));

    let reply = get_with(
        &f.gateway.url("/orders/1"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "mallory"),
            ("X-User-Role", "admin"),
            ("x-tenant", "acme"),
            ("x-tenant", "initech"),
        ],
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.next_request().await;
    let all = |name: &str| -> Vec<&str> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-user-id"), vec!["alice"]);
    assert_eq!(all("x-user-role"), vec!["analyst"]);
    assert_eq!(all("x-tenant"), vec!["globex"]);
    assert_eq!(
        seen.header("authorization"),
        None,
        "the token stays at the gateway"
    );
    assert_eq!(seen.header("x-execution-key"), Some(reply.execution_key()));
}

#[tokio::test]
async fn a_route_with_forward_authorization_passes_the_clients_token_on() {
    let f = fixture("", "").await;
    let token =
        f.hs.token(&claims(json!({"sub": "bob", "scope": "reports:read"})));

    let reply = get_with(
        &f.gateway.url("/reports/q3"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "mallory"),
        ],
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.next_request().await;
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(seen.header("x-user-id"), Some("bob"));
}

#[tokio::test]
async fn a_public_route_that_declares_forward_claims_drops_client_sent_claim_headers() {
    let f = fixture("", "").await;
    let token = f.es.token(&claims(json!({})));

    let reply = get_with(&f.gateway.url("/public/a"), &[("x-user-id", "mallory")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.next_request().await;
    assert_eq!(seen.header("x-user-id"), None);

    // A token on a public route is not checked, so it forwards no claim either.
    let reply = get_with(
        &f.gateway.url("/public/b"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "mallory"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.next_request().await;
    assert_eq!(seen.target, "/public/b");
    assert_eq!(seen.header("x-user-id"), None);
}

// ---------------------------------------------------------------------------
// The verified-token cache

#[tokio::test]
async fn a_token_is_cached_at_its_second_use_and_then_served_from_the_cache() {
    let f = fixture("", "").await;
    let token = f.es.token(&claims(json!({})));

    // The first use is verified and remembered, the second verified and
    // cached (a one-use token never fills the cache), the third a hit.
    for path in ["/orders/1", "/orders/2", "/orders/3"] {
        let reply = get_bearer(&f.gateway.url(path), &token).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    scrape_until(
        f.gateway.admin,
        &[
            "warden_token_cache_requests_total{result=\"miss\"} 2",
            "warden_token_cache_requests_total{result=\"hit\"} 1",
        ],
    )
    .await;
    let other = f.es.token(&claims(json!({})));
    assert_eq!(
        get_bearer(&f.gateway.url("/orders/4"), &other).await.status,
        StatusCode::OK
    );
    scrape_until(
        f.gateway.admin,
        &["warden_token_cache_requests_total{result=\"miss\"} 3"],
    )
    .await;
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    let f = fixture("", "leeway = \"0s\"").await;
    let exp = unix_now() + 2;
    let token = f.es.token(&claims(json!({ "exp": exp })));
    let url = f.gateway.url("/orders/1");

    for _ in 0..3 {
        assert_eq!(get_bearer(&url, &token).await.status, StatusCode::OK);
    }
    scrape_until(
        f.gateway.admin,
        &["warden_token_cache_requests_total{result=\"hit\"} 1"],
    )
    .await;

    // A real wait: the token's own clock has to run out.
    while unix_now() < exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = get_bearer(&url, &token).await;
    assert_rejected(
        &reply,
        401,
        &invalid_token("token expired"),
        "invalid_token",
        "token expired",
    );
    assert_eq!(f.upstream.requests().len(), 3);
}

// ---------------------------------------------------------------------------
// A trusted identity provider

const IDP_ISS: &str = "https://idp.test/";

/// A JWKS server on 127.0.0.1:0 that counts the fetches of `/jwks.json`, can
/// answer 500, and can stop listening altogether.
struct IdentityProvider {
    addr: SocketAddr,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

struct IdpState {
    jwks: Mutex<Value>,
    failing: AtomicBool,
    fetches: AtomicUsize,
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IdentityProvider {
    async fn start(keys: &[&TestKey], failing: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState {
            jwks: Mutex::new(jwks(keys)),
            failing: AtomicBool::new(failing),
            fetches: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve_jwks(&state, &request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Closes the listener and every open connection.
    fn stop(&self) {
        self.task.abort();
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

fn serve_jwks(
    state: &IdpState,
    request: &Request<hyper::body::Incoming>,
) -> http::Response<TestBody> {
    if request.uri().path() != "/jwks.json" {
        return http::Response::builder()
            .status(404)
            .body(full("not found"))
            .unwrap();
    }
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return http::Response::builder()
            .status(500)
            .body(full("identity provider trouble"))
            .unwrap();
    }
    let body = state.jwks.lock().unwrap().to_string();
    http::Response::builder()
        .header("content-type", "application/jwk-set+json")
        .body(full(body))
        .unwrap()
}

/// A gateway that trusts each `(iss, provider)` (and has no keys of its
/// own), with one route that needs `orders:read`.
async fn idp_gateway(
    providers: &[(&str, &IdentityProvider)],
    upstream: &RecordingUpstream,
) -> TestGateway {
    let mut rest = String::new();
    for (iss, idp) in providers {
        rest.push_str(&format!(
            "\n[[trusted_issuers]]\niss = \"{iss}\"\njwks_url = \"{}\"\naud = [\"{AUD}\"]\nalgs = [\"ES256\", \"RS256\"]\nrefresh = \"1h\"\n",
            idp.url()
        ));
    }
    rest.push_str(&format!(
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{}"
scopes = ["orders:read"]
forward_claims = {{ "X-User-Id" = "sub" }}
"#,
        upstream.url()
    ));
    let (writer, _audit) = audit_capture(1024);
    // The capture is dropped: events to a closed pipe are simply lost.
    spawn_gateway_with(
        &config("", &rest),
        StartOptions {
            audit_writer: Some(writer),
            ..StartOptions::default()
        },
    )
    .await
}

/// A token of the identity provider `iss`, signed by `key`.
fn idp_token(key: &TestKey, iss: &str, sub: &str) -> String {
    let now = unix_now();
    key.token(&json!({
        "iss": iss,
        "aud": AUD,
        "sub": sub,
        "jti": uuid::Uuid::now_v7().to_string(),
        "iat": now - 5,
        "exp": now + 300,
        "scp": ["orders:read"],
    }))
}

/// A key with a made-up kid that no provider publishes.
fn made_up(kid: &str, like: &TestKey) -> TestKey {
    TestKey {
        kid: kid.to_owned(),
        alg: like.alg,
        encoding: like.encoding.clone(),
        material: String::new(),
    }
}

/// Polls `/readyz` until it answers `status`, or fails after the patience.
async fn readyz_becomes(gateway: &TestGateway, status: StatusCode) -> Reply {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = get(&gateway.admin_url("/readyz")).await;
        if reply.status == status {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}; last: {} {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn refresh_sample(text: &str, iss: &str, result: &str) -> f64 {
    metric_value(
        text,
        &format!("warden_jwks_refresh_total{{issuer=\"{iss}\",result=\"{result}\"}}"),
    )
}

#[tokio::test]
async fn readyz_is_503_until_the_identity_providers_jwks_has_been_fetched_then_its_tokens_pass() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("idp-es", Algorithm::ES256);
    let idp = IdentityProvider::start(&[&key], true).await;
    let gateway = idp_gateway(&[(IDP_ISS, &idp)], &upstream).await;

    until("the first fetch", || idp.fetches() >= 1).await;
    let reply = get(&gateway.admin_url("/readyz")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = reply.json();
    assert_eq!(body["ready"], false);
    assert!(body["waiting_for"].to_string().contains(IDP_ISS), "{body}");
    assert_eq!(
        get(&gateway.admin_url("/healthz")).await.status,
        StatusCode::OK
    );
    // Without its keys, the provider's tokens cannot pass.
    let reply = get_bearer(
        &gateway.url("/orders/1"),
        &idp_token(&key, IDP_ISS, "carol"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    idp.fail(false);
    // The refresh task retries after a short backoff.
    readyz_becomes(&gateway, StatusCode::OK).await;

    let reply = get_bearer(
        &gateway.url("/orders/1"),
        &idp_token(&key, IDP_ISS, "carol"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        upstream.next_request().await.header("x-user-id"),
        Some("carol")
    );
    let text = scrape(gateway.admin).await;
    assert!(refresh_sample(&text, IDP_ISS, "error") >= 1.0, "{text}");
    assert_eq!(refresh_sample(&text, IDP_ISS, "ok"), 1.0);
}

/// One gateway, three providers, one 10 s wait (unknown-kid fetches are at
/// most one per 10 s per issuer, and the start-up fetch counts as one):
/// - `rotating` adds a key: the new kid is fetched once, for 20 concurrent
///   tokens, and 1,000 made-up kids then fetch at most once more;
/// - `failing` answers 500 and `gone` stops listening: the fetch a new kid
///   triggers fails, and the keys already held keep verifying new tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kid_is_fetched_once_made_up_kids_hardly_ever_and_held_keys_outlive_their_provider() {
    const ROTATING: &str = "https://rotating.idp.test/";
    const FAILING: &str = "https://failing.idp.test/";
    const GONE: &str = "https://gone.idp.test/";
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let old = TestKey::generate("rot-es", Algorithm::ES256);
    let new = TestKey::generate("rot-rsa-2", Algorithm::RS256);
    let failing_key = TestKey::generate("fail-es", Algorithm::ES256);
    let gone_key = TestKey::generate("gone-es", Algorithm::ES256);
    let rotating = IdentityProvider::start(&[&old], false).await;
    let failing = IdentityProvider::start(&[&failing_key], false).await;
    let gone = IdentityProvider::start(&[&gone_key], false).await;
    let gateway = idp_gateway(
        &[(ROTATING, &rotating), (FAILING, &failing), (GONE, &gone)],
        &upstream,
    )
    .await;
    readyz_becomes(&gateway, StatusCode::OK).await;
    let ready_at = Instant::now();
    for idp in [&rotating, &failing, &gone] {
        assert_eq!(idp.fetches(), 1);
    }
    let url = gateway.url("/orders/1");
    for (key, iss) in [(&old, ROTATING), (&failing_key, FAILING), (&gone_key, GONE)] {
        let reply = get_bearer(&url, &idp_token(key, iss, "carol")).await;
        assert_eq!(reply.status, StatusCode::OK, "{iss}");
    }
    failing.fail(true);
    gone.stop();

    // Within 10 s of the start-up fetch, a made-up kid fetches nothing.
    let reply = get_bearer(&url, &idp_token(&made_up("early", &old), ROTATING, "eve")).await;
    assert_json_error(&reply, 401, "invalid_token");
    assert_eq!(reply.json()["error_description"], "unknown key");
    assert_eq!(rotating.fetches(), 1);

    // A real wait: the 10 s interval has to pass.
    tokio::time::sleep_until((ready_at + Duration::from_millis(10_300)).into()).await;

    // 20 different tokens with the new kid at once: one fetch serves them all.
    rotating.publish(&[&old, &new]);
    let calls = (0..20).map(|i| {
        let url = gateway.url(&format!("/orders/new-{i}"));
        let token = idp_token(&new, ROTATING, "dave");
        async move { get_bearer(&url, &token).await.status }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        rotating.fetches(),
        2,
        "the new kid caused exactly one fetch"
    );

    // 1,000 tokens with made-up kids, 50 at a time.
    let client = client();
    let flood_url = gateway.url("/orders/flood");
    let statuses: Vec<StatusCode> = futures_util::stream::iter(0..1000)
        .map(|i| {
            let forged = made_up(&format!("made-up-{i}"), &old);
            let request = Request::get(&flood_url)
                .header(
                    "authorization",
                    format!("Bearer {}", idp_token(&forged, ROTATING, "eve")),
                )
                .body(empty())
                .unwrap();
            let client = client.clone();
            async move { send_on(&client, request).await.status }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert!(
        rotating.fetches() <= 3,
        "{} fetches after 1,000 made-up kids",
        rotating.fetches()
    );
    for (key, sub) in [(&old, "carol"), (&new, "dave")] {
        let reply = get_bearer(&url, &idp_token(key, ROTATING, sub)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    // The failing and the gone provider: a new kid makes the gateway try,
    // the try fails, and the keys it holds still verify tokens it has never
    // seen (so not from the token cache).
    for (idp, key, iss) in [(&failing, &failing_key, FAILING), (&gone, &gone_key, GONE)] {
        let reply = get_bearer(&url, &idp_token(&made_up("rotated", key), iss, "eve")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{iss}");
        let text = scrape(gateway.admin).await;
        assert_eq!(refresh_sample(&text, iss, "error"), 1.0, "{iss}: {text}");
        let reply = get_bearer(&url, &idp_token(key, iss, "carol")).await;
        assert_eq!(reply.status, StatusCode::OK, "{iss}");
        if iss == FAILING {
            assert_eq!(idp.fetches(), 2, "the failed fetch reached the provider");
        }
    }
    assert_eq!(
        get(&gateway.admin_url("/readyz")).await.status,
        StatusCode::OK
    );
    assert!(
        !upstream.heads().iter().any(|h| h == "/orders/flood"),
        "a forged token reached the upstream"
    );
}
