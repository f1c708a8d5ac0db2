//! Rate limits (SPEC §11) over HTTP, through the real gateway with the
//! memory backend: the 429 and its headers, which key each bucket is
//! counted by, where the limit sits relative to token verification (a
//! `client_ip` flood costs no signature check; a forged token drains no
//! subject's bucket), the audit events and metrics of a refusal, the config
//! rules of `rate_limit`, and a reload that keeps a route's counters.
//!
//! Every policy here has a long emission interval (`per = "1h"`), so no
//! request is let through by a refill while a test runs: what passes is
//! exactly `1 + burst` per bucket.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use crate::common::*;
use http::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use warden::StartOptions;
use warden::clock::unix_now;

const ISS: &str = "https://warden.test";
const AUD: &str = "rate-limit-tests";

// ---------------------------------------------------------------------------
// The gateway under test

/// A gateway with one HS256 key, `routes` (made from the upstream's URL) in
/// front of a recording upstream, and its audit events captured.
struct Fixture {
    gateway: TestGateway,
    upstream: RecordingUpstream,
    audit: AuditCapture,
    /// The key the gateway verifies with.
    key: TestKey,
    /// A key with the same `kid` but another secret: its tokens are forged.
    forger: TestKey,
    _files: Vec<TempFile>,
}

/// The `[[keys]]` and `[issuer]` sections of every fixture.
fn key_sections(key: &TestKey, file: &TempFile) -> String {
    format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"{}\"\n",
        key.config_entry(file),
        key.kid
    )
}

async fn fixture(routes: impl FnOnce(&str) -> String) -> Fixture {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let forger = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let rest = format!("{}{}", key_sections(&key, &file), routes(&upstream.url()));
    let (writer, audit) = audit_capture(4096);
    let gateway = spawn_gateway_with(
        &config("", &rest),
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
        key,
        forger,
        _files: vec![file],
    }
}

/// A jwt `[[routes]]` table.
fn jwt_route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\nauth = \"jwt\"\n{extra}\n"
    )
}

/// Claims the gateway accepts, for subject `sub` of tenant `tenant`, each
/// call with its own `jti`.
fn claims(sub: &str, tenant: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": sub,
        "jti": uuid::Uuid::now_v7().to_string(),
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 600,
        "scope": "things:read",
        "tenant": tenant,
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_bearer(url: &str, token: &str) -> Reply {
    get_with(url, &[("authorization", &bearer(token))]).await
}

/// A pooled client whose connections leave from `ip` (any 127.0.0.0/8
/// address is this host), so the gateway sees another client address.
fn client_from(ip: [u8; 4]) -> Client<HttpConnector, TestBody> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::from(ip)));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn get_from(client: &Client<HttpConnector, TestBody>, url: &str) -> Reply {
    send_on(client, Request::get(url).body(empty()).unwrap()).await
}

/// The `token_use` audit event of the request answered with `reply`.
async fn token_use(audit: &AuditCapture, reply: &Reply) -> Value {
    let key = reply.execution_key().to_owned();
    audit
        .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == key.as_str())
        .await
}

/// Asserts the 429 of SPEC §11: the JSON error with the execution key, an
/// integer `Retry-After` of at least one second, and the route's
/// `RateLimit-Policy` and an empty `RateLimit`.
fn assert_rate_limited(reply: &Reply, route: &str, policy: &str) {
    assert_json_error(reply, 429, "rate_limited");
    let retry_after = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("a 429 carries Retry-After: {:?}", reply.headers));
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is whole seconds: {retry_after:?}"));
    assert!(seconds >= 1, "Retry-After {seconds}");
    assert_eq!(reply.header("ratelimit-policy"), Some(policy));
    let state = reply.header("ratelimit").expect("a 429 carries RateLimit");
    assert!(
        state.starts_with(&format!("\"{route}\";r=0;t=")),
        "RateLimit of a 429: {state}"
    );
}

/// `(r, t)` of a `RateLimit: "<route>";r=<n>;t=<s>` header.
fn remaining_and_reset(reply: &Reply, route: &str) -> (u64, u64) {
    let value = reply
        .header("ratelimit")
        .unwrap_or_else(|| panic!("no RateLimit header: {:?}", reply.headers));
    let rest = value
        .strip_prefix(&format!("\"{route}\";r="))
        .unwrap_or_else(|| panic!("RateLimit {value:?} does not name route {route:?}"));
    let (r, t) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("RateLimit {value:?} has no t"));
    (r.parse().unwrap(), t.parse().unwrap())
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(|r| r.status.as_u16()).collect()
}

// ---------------------------------------------------------------------------
// The 429 and its headers

#[tokio::test]
async fn a_public_route_lets_one_plus_burst_through_then_answers_429_with_retry_after_and_ratelimit_headers()
 {
    let f = fixture(|up| {
        format!(
            "{}{}",
            route(
                "pub",
                "/pub",
                up,
                r#"rate_limit = { requests = 60, per = "1h", burst = 2, key = "client_ip" }"#,
            ),
            route("free", "/free", up, ""),
        )
    })
    .await;
    let policy = "\"pub\";q=60;w=3600";

    // T = 1h / 60 = 60 s: three at once, then the bucket is empty.
    let mut passed = Vec::new();
    for i in 0..3 {
        let reply = get(&f.gateway.url(&format!("/pub/{i}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(policy),
            "request {i}"
        );
        passed.push(remaining_and_reset(&reply, "pub"));
    }
    let remaining: Vec<u64> = passed.iter().map(|(r, _)| *r).collect();
    assert_eq!(remaining, [2, 1, 0], "r counts down");
    // t: until the bucket is full again, one interval per request taken.
    let resets: Vec<u64> = passed.iter().map(|(_, t)| *t).collect();
    assert_eq!(resets, [60, 120, 180], "t grows by one interval a request");
    assert_eq!(f.upstream.requests().len(), 3);

    let refused = get(&f.gateway.url("/pub/refused")).await;
    assert_rate_limited(&refused, "pub", policy);
    assert_eq!(refused.header("retry-after"), Some("60"), "one interval");
    assert_eq!(remaining_and_reset(&refused, "pub"), (0, 180));
    // And it stays refused; none of the refused reached the upstream.
    let again = get(&f.gateway.url("/pub/refused-again")).await;
    assert_rate_limited(&again, "pub", policy);
    let targets: Vec<String> = f
        .upstream
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/pub/0", "/pub/1", "/pub/2"]);

    // A route without a limit carries no rate-limit headers, and is not limited.
    for _ in 0..5 {
        let free = get(&f.gateway.url("/free")).await;
        assert_eq!(free.status, StatusCode::OK);
        assert_eq!(free.header("ratelimit-policy"), None);
        assert_eq!(free.header("ratelimit"), None);
    }

    scrape_until(
        f.gateway.admin,
        &["warden_rate_limited_total{route=\"pub\"} 2"],
    )
    .await;
    let text = scrape_until(
        f.gateway.admin,
        &["warden_requests_total{method=\"GET\",route=\"pub\",status=\"429\"} 2"],
    )
    .await;
    assert_eq!(
        metric_value(&text, "warden_rate_limited_total{route=\"free\"}"),
        0.0
    );
}

#[tokio::test]
async fn client_ip_buckets_are_per_client_address() {
    let f = fixture(|up| {
        route(
            "pub",
            "/pub",
            up,
            r#"rate_limit = { requests = 1, per = "1h", key = "client_ip" }"#,
        )
    })
    .await;
    let (one, two) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let url = f.gateway.url("/pub");

    assert_eq!(get_from(&one, &url).await.status, StatusCode::OK);
    assert_eq!(
        get_from(&one, &url).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another address has its own bucket, full.
    assert_eq!(get_from(&two, &url).await.status, StatusCode::OK);
    assert_eq!(
        get_from(&two, &url).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A new connection from the first address is still the first client.
    assert_eq!(
        get_from(&client_from([127, 0, 0, 2]), &url).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(f.upstream.requests().len(), 2);
}

// ---------------------------------------------------------------------------
// Before and after token verification

#[tokio::test]
async fn a_client_ip_limit_is_checked_before_the_token_so_a_flood_of_forged_tokens_costs_no_signature_check_once_the_bucket_is_empty()
 {
    let f = fixture(|up| {
        jwt_route(
            "api",
            "/api",
            up,
            r#"rate_limit = { requests = 1, per = "1h", burst = 4, key = "client_ip" }"#,
        )
    })
    .await;
    let policy = "\"api\";q=1;w=3600";
    let forged = f.forger.token(&claims("mallory", "acme"));
    let url = f.gateway.url("/api/things");

    // Twenty at once: five take the bucket (and are checked, and refused
    // as forged); the other fifteen never reach the signature check.
    let flood = (0..20).map(|_| get_bearer(&url, &forged));
    let replies = futures_util::future::join_all(flood).await;
    let mut codes = statuses(&replies);
    codes.sort_unstable();
    assert_eq!(
        codes,
        [[401; 5].as_slice(), &[429; 15]].concat(),
        "{codes:?}"
    );
    for reply in &replies {
        // Every answer of the limited route carries its policy, 401s too.
        assert_eq!(reply.header("ratelimit-policy"), Some(policy));
        match reply.status.as_u16() {
            401 => assert_json_error(reply, 401, "invalid_token"),
            _ => assert_rate_limited(reply, "api", policy),
        }
    }
    assert!(f.upstream.requests().is_empty());

    // Five signature checks, not twenty: each forged token was a cache miss
    // (a token that fails is not cached), the refused ones no lookup at all.
    let text = scrape_until(
        f.gateway.admin,
        &["warden_rate_limited_total{route=\"api\"} 15"],
    )
    .await;
    assert_eq!(
        metric_value(&text, "warden_token_cache_requests_total{result=\"miss\"}"),
        5.0
    );
    assert_eq!(
        metric_value(&text, "warden_token_cache_requests_total{result=\"hit\"}"),
        0.0
    );

    // A valid token from the same address is refused too: the bucket is
    // the address's, and still no token is verified.
    let valid = f.key.token(&claims("alice", "acme"));
    let refused = get_bearer(&url, &valid).await;
    assert_rate_limited(&refused, "api", policy);
    // A request without a token is counted the same way.
    let anonymous = get(&url).await;
    assert_rate_limited(&anonymous, "api", policy);

    // The token uses: denied, rate_limited, and nothing named from a token
    // that was never verified.
    let forged_429 = replies.iter().find(|r| r.status == 429).unwrap();
    for reply in [forged_429, &refused] {
        let event = token_use(&f.audit, reply).await;
        assert_eq!(event["reason"], "rate_limited", "{event}");
        assert_eq!(event["decision"], "deny", "{event}");
        assert_eq!(event["status"], 429, "{event}");
        assert_eq!(event["route"], "api", "{event}");
        assert_eq!(event["path"], "/api/things", "{event}");
        assert_eq!(event["client_ip"], "127.0.0.1", "{event}");
        assert!(
            event["sub"].is_null(),
            "an unverified token names no one: {event}"
        );
        assert!(event["jti"].is_null(), "{event}");
    }
    let forged_401 = replies.iter().find(|r| r.status == 401).unwrap();
    let event = token_use(&f.audit, forged_401).await;
    assert_eq!(event["reason"], "signature_invalid", "{event}");

    let text = scrape_until(
        f.gateway.admin,
        &[
            "warden_rate_limited_total{route=\"api\"} 17",
            "warden_auth_decisions_total{decision=\"deny\",reason=\"rate_limited\",route=\"api\"} 16",
            "warden_auth_decisions_total{decision=\"deny\",reason=\"signature_invalid\",route=\"api\"} 5",
        ],
    )
    .await;
    assert_eq!(
        metric_value(&text, "warden_token_cache_requests_total{result=\"miss\"}"),
        5.0,
        "the valid token was never verified either"
    );
    // A request without a token uses none: no token_use event for it.
    let anonymous_key = anonymous.execution_key().to_owned();
    assert!(
        !f.audit
            .events()
            .iter()
            .any(|e| e["execution_key"] == anonymous_key.as_str()),
        "no token_use for a request without a token"
    );
}

#[tokio::test]
async fn a_sub_limit_counts_after_verification_so_forged_tokens_do_not_drain_the_subjects_bucket() {
    let f = fixture(|up| {
        jwt_route(
            "me",
            "/me",
            up,
            r#"rate_limit = { requests = 1, per = "1h", burst = 1, key = "sub" }"#,
        )
    })
    .await;
    let policy = "\"me\";q=1;w=3600";
    let url = f.gateway.url("/me");

    // Someone floods with tokens for alice that they could not sign.
    for _ in 0..10 {
        let forged = f.forger.token(&claims("alice", "acme"));
        let reply = get_bearer(&url, &forged).await;
        assert_json_error(&reply, 401, "invalid_token");
    }
    assert!(f.upstream.requests().is_empty());

    // Alice's bucket is whole: two pass (1 + burst), each with its own token.
    let mut alice = Vec::new();
    for _ in 0..2 {
        let reply = get_bearer(&url, &f.key.token(&claims("alice", "acme"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit-policy"), Some(policy));
        alice.push(remaining_and_reset(&reply, "me").0);
    }
    assert_eq!(alice, [1, 0]);
    // The bucket is the subject's, not the token's: a third token is refused.
    let third = claims("alice", "acme");
    let refused = get_bearer(&url, &f.key.token(&third)).await;
    assert_rate_limited(&refused, "me", policy);

    // Bob has a bucket of his own.
    for _ in 0..2 {
        let reply = get_bearer(&url, &f.key.token(&claims("bob", "acme"))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let bob_refused = get_bearer(&url, &f.key.token(&claims("bob", "acme"))).await;
    assert_rate_limited(&bob_refused, "me", policy);
    assert_eq!(f.upstream.requests().len(), 4);

    // Forged tokens are still refused as forged once the bucket is empty
    // (auth answers first), not as rate limited.
    let forged = get_bearer(&url, &f.forger.token(&claims("alice", "acme"))).await;
    assert_json_error(&forged, 401, "invalid_token");

    // The refusal is a token use of alice's verified token.
    let event = token_use(&f.audit, &refused).await;
    assert_eq!(event["reason"], "rate_limited", "{event}");
    assert_eq!(event["decision"], "deny", "{event}");
    assert_eq!(event["status"], 429, "{event}");
    assert_eq!(event["sub"], "alice", "{event}");
    assert_eq!(event["jti"], third["jti"], "{event}");
    assert_eq!(event["iss"], ISS, "{event}");
    assert_eq!(event["route"], "me", "{event}");

    scrape_until(
        f.gateway.admin,
        &[
            "warden_rate_limited_total{route=\"me\"} 2",
            "warden_auth_decisions_total{decision=\"deny\",reason=\"rate_limited\",route=\"me\"} 2",
            "warden_auth_decisions_total{decision=\"deny\",reason=\"signature_invalid\",route=\"me\"} 11",
            "warden_auth_decisions_total{decision=\"allow\",reason=\"ok\",route=\"me\"} 4",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------
// The other keys

#[tokio::test]
async fn a_claim_limit_counts_per_claim_value_across_subjects() {
    let f = fixture(|up| {
        jwt_route(
            "tenants",
            "/t",
            up,
            r#"rate_limit = { requests = 1, per = "1h", key = "claim:tenant" }"#,
        )
    })
    .await;
    let url = f.gateway.url("/t");

    let alice = get_bearer(&url, &f.key.token(&claims("alice", "acme"))).await;
    assert_eq!(alice.status, StatusCode::OK);
    // Bob is another subject of the same tenant: the tenant's bucket is empty.
    let bob = get_bearer(&url, &f.key.token(&claims("bob", "acme"))).await;
    assert_rate_limited(&bob, "tenants", "\"tenants\";q=1;w=3600");
    // Carol's tenant has its own.
    let carol = get_bearer(&url, &f.key.token(&claims("carol", "globex"))).await;
    assert_eq!(carol.status, StatusCode::OK);
    let carol_again = get_bearer(&url, &f.key.token(&claims("carol", "globex"))).await;
    assert_eq!(carol_again.status, StatusCode::TOO_MANY_REQUESTS);
    // A forged token naming the empty tenant's bucket is refused as forged.
    let forged = get_bearer(&url, &f.forger.token(&claims("dave", "initech"))).await;
    assert_json_error(&forged, 401, "invalid_token");
    let initech = get_bearer(&url, &f.key.token(&claims("dave", "initech"))).await;
    assert_eq!(
        initech.status,
        StatusCode::OK,
        "the forged token drained nothing"
    );

    let event = token_use(&f.audit, &bob).await;
    assert_eq!(
        (&event["reason"], &event["sub"]),
        (&json!("rate_limited"), &json!("bob")),
        "{event}"
    );
    assert_eq!(f.upstream.requests().len(), 3);
}

#[tokio::test]
async fn a_header_limit_counts_per_header_value() {
    let f = fixture(|up| {
        route(
            "hdr",
            "/h",
            up,
            r#"rate_limit = { requests = 1, per = "1h", key = "header:X-Client" }"#,
        )
    })
    .await;
    let url = f.gateway.url("/h");
    let from = |client: &'static str| {
        let url = url.clone();
        async move { get_with(&url, &[("x-client", client)]).await }
    };

    assert_eq!(from("a").await.status, StatusCode::OK);
    let refused = from("a").await;
    assert_rate_limited(&refused, "hdr", "\"hdr\";q=1;w=3600");
    assert_eq!(from("b").await.status, StatusCode::OK);
    assert_eq!(from("b").await.status, StatusCode::TOO_MANY_REQUESTS);
    // Header names are case-insensitive: the same client.
    let upper = get_with(&url, &[("X-CLIENT", "a")]).await;
    assert_eq!(upper.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(f.upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_route_limit_is_one_bucket_for_every_client() {
    let f = fixture(|up| {
        route(
            "one",
            "/one",
            up,
            r#"rate_limit = { requests = 1, per = "1h", burst = 1, key = "route" }"#,
        )
    })
    .await;
    let url = f.gateway.url("/one");
    let (one, two, three) = (
        client_from([127, 0, 0, 2]),
        client_from([127, 0, 0, 3]),
        client_from([127, 0, 0, 4]),
    );

    assert_eq!(get_from(&one, &url).await.status, StatusCode::OK);
    assert_eq!(get_from(&two, &url).await.status, StatusCode::OK);
    let refused = get_from(&three, &url).await;
    assert_rate_limited(&refused, "one", "\"one\";q=1;w=3600");
    let with_header = get_with(&url, &[("x-client", "someone-else")]).await;
    assert_eq!(with_header.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(f.upstream.requests().len(), 2);
}

#[tokio::test]
async fn each_route_has_its_own_buckets() {
    let limit = r#"rate_limit = { requests = 1, per = "1h", key = "client_ip" }"#;
    let f = fixture(|up| {
        format!(
            "{}{}",
            route("a", "/a", up, limit),
            route("b", "/b", up, limit)
        )
    })
    .await;

    assert_eq!(get(&f.gateway.url("/a")).await.status, StatusCode::OK);
    assert_eq!(
        get(&f.gateway.url("/a")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(get(&f.gateway.url("/b")).await.status, StatusCode::OK);
    let refused = get(&f.gateway.url("/b")).await;
    assert_rate_limited(&refused, "b", "\"b\";q=1;w=3600");
}

// ---------------------------------------------------------------------------
// Config

/// The problems of a config whose only route is `route_table`, rendered,
/// and the line (1-based) of its `rate_limit`.
fn problems_and_line(route_table: &str) -> (Vec<String>, usize) {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let toml = config("", &format!("{}{route_table}", key_sections(&key, &file)));
    let line = toml
        .lines()
        .position(|l| l.starts_with("rate_limit"))
        .map_or(0, |at| at + 1);
    match warden::Config::from_toml(&toml, "gw.toml") {
        Ok(_) => panic!("the config is accepted:\n{toml}"),
        Err(err) => (err.problems.iter().map(ToString::to_string).collect(), line),
    }
}

/// The problems of a config whose only route is `route_table`, rendered.
fn problems(route_table: &str) -> Vec<String> {
    problems_and_line(route_table).0
}

/// Asserts that some problem is at `key`, says `says`, and has a fix
/// that mentions `fix`.
fn assert_problem(problems: &[String], key: &str, says: &str, fix: &str) {
    let found = problems.iter().find(|p| p.contains(&format!(": {key}: ")));
    let Some(problem) = found else {
        panic!("no problem at {key}: {problems:#?}");
    };
    assert!(problem.contains(says), "{problem}");
    let (_, advice) = problem
        .split_once("\n  fix: ")
        .unwrap_or_else(|| panic!("no fix: {problem}"));
    assert!(advice.contains(fix), "{problem}");
}

fn public(rate_limit: &str) -> String {
    route(
        "r",
        "/r",
        "builtin:echo",
        &format!("rate_limit = {rate_limit}"),
    )
}

#[test]
fn a_limit_by_token_on_a_public_route_is_refused() {
    for key in ["sub", "claim:tenant"] {
        let found = problems(&public(&format!(
            r#"{{ requests = 10, per = "1m", key = "{key}" }}"#
        )));
        assert_problem(
            &found,
            "routes[0].rate_limit.key",
            "is read from the token, but the route takes none",
            "auth = \"jwt\"",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
    }
}

#[test]
fn an_unknown_key_is_refused_with_the_keys_there_are() {
    for key in ["ip", "claim:", "header:bad header", "Sub", ""] {
        let found = problems(&public(&format!(
            r#"{{ requests = 10, per = "1m", key = "{key}" }}"#
        )));
        assert_problem(
            &found,
            "routes[0].rate_limit.key",
            "is not a rate-limit key",
            "\"client_ip\"",
        );
    }
}

#[test]
fn requests_must_be_at_least_one() {
    let found = problems(&public(
        r#"{ requests = 0, per = "1m", key = "client_ip" }"#,
    ));
    assert_problem(
        &found,
        "routes[0].rate_limit.requests",
        "at least 1",
        "requests = ",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn per_must_be_whole_seconds_of_at_most_a_day() {
    let cases = [
        ("soon", "is not a duration"),
        ("0s", "longer than zero"),
        ("2d", "longer than a day"),
        ("500ms", "whole number of seconds"),
        ("1500ms", "whole number of seconds"),
    ];
    for (per, says) in cases {
        let found = problems(&public(&format!(
            r#"{{ requests = 10, per = "{per}", key = "client_ip" }}"#
        )));
        assert_problem(&found, "routes[0].rate_limit.per", says, "");
        assert_eq!(found.len(), 1, "per = {per:?}: {found:#?}");
    }
}

#[test]
fn a_burst_whose_bucket_takes_over_a_day_to_fill_is_refused() {
    let found = problems(&public(
        r#"{ requests = 10, per = "1h", burst = 240, key = "client_ip" }"#,
    ));
    assert_problem(
        &found,
        "routes[0].rate_limit.burst",
        "to fill again",
        "lower burst",
    );
    // 239 + 1 at one per 6 minutes is exactly a day: allowed.
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let limit = r#"{ requests = 10, per = "1h", burst = 239, key = "client_ip" }"#;
    let toml = config(
        "",
        &format!("{}{}", key_sections(&key, &file), public(limit)),
    );
    if let Err(err) = warden::Config::from_toml(&toml, "gw.toml") {
        panic!("a refill of exactly a day is refused: {err}");
    }
}

#[test]
fn every_problem_of_one_rate_limit_is_reported_at_once() {
    let found = problems(&public(r#"{ requests = 0, per = "often", key = "ip" }"#));
    assert_problem(&found, "routes[0].rate_limit.requests", "at least 1", "");
    assert_problem(&found, "routes[0].rate_limit.per", "is not a duration", "");
    assert_problem(
        &found,
        "routes[0].rate_limit.key",
        "is not a rate-limit key",
        "",
    );
}

#[test]
fn an_unknown_field_in_rate_limit_is_refused_where_it_is_written() {
    let (found, line) = problems_and_line(&public(
        r#"{ requests = 10, per = "1m", key = "client_ip", brust = 5 }"#,
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    let problem = &found[0];
    // The key path is the route's (serde reports no deeper path); the
    // location is the rate_limit line, and the message names the field
    // and the ones there are.
    assert!(
        problem.starts_with(&format!("gw.toml:{line}:")),
        "at the rate_limit line {line}: {problem}"
    );
    assert!(problem.contains("routes[0]"), "{problem}");
    assert!(problem.contains("unknown field `brust`"), "{problem}");
    assert!(
        problem.contains("`burst`"),
        "the known fields are listed: {problem}"
    );
    assert!(problem.contains("\n  fix: "), "{problem}");
}

#[test]
fn a_missing_field_in_rate_limit_is_refused() {
    let (found, line) = problems_and_line(&public(r#"{ requests = 10, per = "1m" }"#));
    assert_eq!(found.len(), 1, "{found:#?}");
    let problem = &found[0];
    assert!(
        problem.starts_with(&format!("gw.toml:{line}:")),
        "{problem}"
    );
    assert!(problem.contains("missing field `key`"), "{problem}");
}

#[test]
fn valid_limits_are_accepted() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let routes = [
        public(r#"{ requests = 100, per = "1m", burst = 20, key = "client_ip" }"#),
        route(
            "h",
            "/h",
            "builtin:echo",
            r#"rate_limit = { requests = 5, per = "1s", key = "header:X-Api-Key" }"#,
        ),
        route(
            "o",
            "/o",
            "builtin:echo",
            r#"rate_limit = { requests = 1, per = "1d", key = "route" }"#,
        ),
        jwt_route(
            "s",
            "/s",
            "builtin:echo",
            r#"rate_limit = { requests = 100, per = "1m", burst = 20, key = "sub" }"#,
        ),
        jwt_route(
            "c",
            "/c",
            "builtin:echo",
            r#"rate_limit = { requests = 100, per = "1m", key = "claim:tenant" }"#,
        ),
    ]
    .concat();
    let toml = config("", &format!("{}{routes}", key_sections(&key, &file)));
    if let Err(err) = warden::Config::from_toml(&toml, "gw.toml") {
        panic!("valid limits are refused:\n{err}");
    }
}

// ---------------------------------------------------------------------------
// Edges

/// A limit whose full-bucket time, `(1 + burst) × per / requests`, is
/// beyond 1000 years (here 400,001 days): `warden check` accepts it.
const HUGE_BURST: &str = r#"{ requests = 1, per = "1d", burst = 400000, key = "route" }"#;

#[tokio::test]

async fn a_limit_with_a_huge_burst_is_refused_by_the_config_or_served() {
    let route_table = route(
        "big",
        "/big",
        "builtin:echo",
        &format!("rate_limit = {HUGE_BURST}"),
    );
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let toml = config("", &format!("{}{route_table}", key_sections(&key, &file)));
    match warden::Config::from_toml(&toml, "gw.toml") {
        // Either the config names the problem...
        Err(err) => assert!(
            err.problems
                .iter()
                .any(|p| p.key.starts_with("routes[0].rate_limit")),
            "{err}"
        ),
        // ...or the gateway starts (not a panic) and the route serves.
        Ok(_) => {
            let gateway = spawn_gateway(&toml).await;
            let reply = get(&gateway.url("/big")).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.header("ratelimit-policy"),
                Some("\"big\";q=1;w=86400")
            );
        }
    }
}

#[tokio::test]

async fn a_reload_to_a_huge_burst_does_not_break_later_reloads() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let key_file = key.file();
    let limit = r#"{ requests = 1, per = "1h", burst = 1, key = "client_ip" }"#;
    let file = ConfigFile::new(&reload_text(&upstream.url(), &key, &key_file, limit, false));
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;

    std::fs::write(
        &file.path,
        reload_text(&upstream.url(), &key, &key_file, HUGE_BURST, false),
    )
    .unwrap();
    // Whatever this reload does (refused, or in force), it returns.
    let huge = reloader.clone();
    let outcome = tokio::spawn(async move { huge.reload().await.map(drop) }).await;
    assert!(outcome.is_ok(), "the reload panicked: {outcome:?}");

    // And a valid config reloads afterwards.
    std::fs::write(
        &file.path,
        reload_text(&upstream.url(), &key, &key_file, limit, true),
    )
    .unwrap();
    if let Err(err) = reloader.reload().await {
        panic!("a valid reload after it fails: {err}");
    }
    assert_eq!(get(&gateway.url("/extra")).await.status, StatusCode::OK);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------
// Reload

fn reload_text(up: &str, key: &TestKey, file: &TempFile, limit: &str, extra_route: bool) -> String {
    let mut routes = route("pub", "/pub", up, &format!("rate_limit = {limit}"));
    if extra_route {
        routes.push_str(&route("extra", "/extra", "builtin:echo", ""));
    }
    config("", &format!("{}{routes}", key_sections(key, file)))
}

#[tokio::test]
async fn a_reload_that_keeps_a_routes_limit_keeps_its_counters_and_a_changed_limit_starts_afresh() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let key_file = key.file();
    let limit = r#"{ requests = 1, per = "1h", burst = 1, key = "client_ip" }"#;
    let file = ConfigFile::new(&reload_text(&upstream.url(), &key, &key_file, limit, false));
    let (gateway, reloader) = spawn_gateway_from_file(&file.path, StartOptions::default()).await;
    let url = gateway.url("/pub");

    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(get(&url).await.status, StatusCode::TOO_MANY_REQUESTS);

    // Another route comes, this one's limit stays: its bucket stays empty.
    std::fs::write(
        &file.path,
        reload_text(&upstream.url(), &key, &key_file, limit, true),
    )
    .unwrap();
    reloader.reload().await.expect("the reload succeeds");
    assert_eq!(
        get(&gateway.url("/extra")).await.status,
        StatusCode::OK,
        "the reload is in force"
    );
    let refused = get(&url).await;
    assert_rate_limited(&refused, "pub", "\"pub\";q=1;w=3600");

    // A reload that changes the limit counts by the new policy, from full.
    let changed = r#"{ requests = 2, per = "1h", burst = 1, key = "client_ip" }"#;
    std::fs::write(
        &file.path,
        reload_text(&upstream.url(), &key, &key_file, changed, true),
    )
    .unwrap();
    reloader.reload().await.expect("the reload succeeds");
    let first = get(&url).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("ratelimit-policy"), Some("\"pub\";q=2;w=3600"));
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(get(&url).await.status, StatusCode::TOO_MANY_REQUESTS);

    // A failed reload changes nothing either.
    std::fs::write(&file.path, "this is not toml [").unwrap();
    assert!(reloader.reload().await.is_err());
    assert_eq!(get(&url).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.requests().len(), 4);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------
// Behind load balancers

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted_and_audited() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let limit = r#"rate_limit = { requests = 1, per = "1h", key = "client_ip" }"#;
    let rest = format!(
        "{}{}",
        key_sections(&key, &file),
        jwt_route("api", "/api", &upstream.url(), limit)
    );
    let (writer, audit) = audit_capture(1024);
    let gateway = spawn_gateway_with(
        &config(r#"trusted_proxies = ["127.0.0.2/32"]"#, &rest),
        StartOptions {
            audit_writer: Some(writer),
            ..StartOptions::default()
        },
    )
    .await;
    let token = key.token(&claims("alice", "acme"));
    let url = gateway.url("/api/x");
    let via = |client: Client<HttpConnector, TestBody>, forwarded: &str| {
        let request = Request::get(&url)
            .header("authorization", bearer(&token))
            .header("x-forwarded-for", forwarded)
            .body(empty())
            .unwrap();
        async move { send_on(&client, request).await }
    };
    let proxy = client_from([127, 0, 0, 2]);

    // Two clients behind the one proxy: a bucket each.
    let first = via(proxy.clone(), "198.51.100.7").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_rate_limited(
        &via(proxy.clone(), "198.51.100.7").await,
        "api",
        "\"api\";q=1;w=3600",
    );
    assert_eq!(
        via(proxy.clone(), "198.51.100.8").await.status,
        StatusCode::OK
    );
    // What the client wrote to the left of the proxy's entry changes nothing.
    assert_eq!(
        via(proxy.clone(), "203.0.113.1, 198.51.100.7").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The audit names the client, not the proxy.
    let event = token_use(&audit, &first).await;
    assert_eq!(event["client_ip"], "198.51.100.7", "{event}");

    // A peer that is not a trusted proxy is the client, whatever it sends.
    let direct = client_from([127, 0, 0, 3]);
    assert_eq!(
        via(direct.clone(), "198.51.100.20").await.status,
        StatusCode::OK
    );
    assert_eq!(
        via(direct.clone(), "198.51.100.21").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The upstream still sees the whole chain, with the peer appended.
    let seen = upstream.requests();
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("198.51.100.7, 127.0.0.2")
    );
}

#[test]
fn trusted_proxies_must_be_addresses_or_blocks_and_never_everyone() {
    for (list, says) in [
        (r#"["10.0.0.0/33"]"#, "not an IP address or a CIDR block"),
        (r#"["lb.internal"]"#, "not an IP address or a CIDR block"),
        (r#"["0.0.0.0/0"]"#, "trusts every address"),
        (r#"["::/0"]"#, "trusts every address"),
    ] {
        let toml = config(&format!("trusted_proxies = {list}"), "");
        let err = warden::Config::from_toml(&toml, "gw.toml").expect_err(list);
        let text = err.to_string();
        assert!(text.contains("server.trusted_proxies"), "{text}");
        assert!(text.contains(says), "{list}: {text}");
    }
    let toml = config(
        r#"trusted_proxies = ["10.0.0.0/8", "192.0.2.10", "fd00::/8"]"#,
        "",
    );
    if let Err(err) = warden::Config::from_toml(&toml, "gw.toml") {
        panic!("valid proxies refused: {err}");
    }
}
