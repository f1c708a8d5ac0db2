//! Edges users expect (issue 14, SPEC §15), over real sockets: the token
//! lifetime bound, the 403 that names a missing claim, gRPC-aware refusals
//! over h2c, and `client_secret_post` at the login route.
//!
//! One gateway per test, in process, with its own ES256 key, a trusted
//! identity provider (its JWKS served by a hyper server), a login route and
//! routes in front of recording upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use base64::Engine;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use warden::clock::unix_now;

const ISS: &str = "http://warden.test";
const IDP_ISS: &str = "https://idp.example";
const AUD: &str = "warden";
const CLIENT_ID: &str = "reporting-service";
const API_KEY: &str = "wk_test_edges_0a1b2c3d4e5f60718293a4b5c6d7e8f9";

struct Fixture {
    gateway: TestGateway,
    upstream: RecordingUpstream,
    /// The gateway's own signing key.
    own: TestKey,
    /// The trusted identity provider's key.
    idp: TestKey,
    _idp_server: ScriptedUpstream,
    _slow: RecordingUpstream,
    _files: Vec<TempFile>,
}

/// A gateway with `validation` in `[validation]`.
async fn fixture(validation: &str) -> Fixture {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let slow = RecordingUpstream::start(Behaviour::slow(Duration::from_secs(5))).await;
    let own = TestKey::generate("edges-es256", Algorithm::ES256);
    let idp = TestKey::generate("idp-es256", Algorithm::ES256);
    let jwks = json!({ "keys": [idp.public_jwk()] }).to_string();
    let idp_server =
        ScriptedUpstream::start(Arc::new(move |_: &Captured| (200, jwks.clone()))).await;
    let files = vec![own.file()];
    let rest = format!(
        r#"{own_entry}
[issuer]
iss = "{ISS}"
aud = ["{AUD}"]
signing_kid = "edges-es256"

[validation]
{validation}

[[trusted_issuers]]
iss = "{IDP_ISS}"
jwks_url = "{idp_url}/jwks.json"
aud = ["{AUD}"]
algs = ["ES256"]

[login]
path = "/auth"
api_key_header = "X-Api-Key"

[[login.api_keys]]
id = "{CLIENT_ID}"
key_sha256 = "{key_sha256}"
sub = "reporting-service"
scopes = ["orders:read"]

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{upstream}"
scopes = ["orders:read"]
require_claims = {{ tenant = ["acme"] }}

[[routes]]
name = "tenants"
path_prefix = "/tenants"
upstream = "{upstream}"
require_claims = {{ tenant = ["acme"] }}

[[routes]]
name = "grpc"
path_prefix = "/pkg.Orders"
upstream = "{upstream}"
scopes = ["orders:read"]

[[routes]]
name = "grpc-limited"
path_prefix = "/pkg.Limited"
upstream = "{upstream}"
auth = "none"
rate_limit = {{ requests = 1, per = "1h", key = "client_ip" }}

[[routes]]
name = "grpc-down"
path_prefix = "/pkg.Down"
upstream = "http://{refused}"
auth = "none"

[[routes]]
name = "grpc-slow"
path_prefix = "/pkg.Slow"
upstream = "{slow}"
auth = "none"
timeout = "200ms"
"#,
        own_entry = own.config_entry(&files[0]),
        idp_url = idp_server.url(),
        key_sha256 = sha256_hex(API_KEY.as_bytes()),
        upstream = upstream.url(),
        refused = refused_addr(),
        slow = slow.url(),
    );
    let gateway = spawn_gateway(&config("", &rest)).await;
    // The identity provider's keys are fetched at start-up: ready once held.
    let deadline = std::time::Instant::now() + PATIENCE;
    while get(&gateway.admin_url("/readyz")).await.status != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Fixture {
        gateway,
        upstream,
        own,
        idp,
        _idp_server: idp_server,
        _slow: slow,
        _files: files,
    }
}

/// Claims `iss`/`aud` for the gateway's own keys, valid for 10 minutes,
/// with `changes` applied (a `null` removes a claim).
fn claims(iss: &str, changes: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": iss,
        "aud": AUD,
        "sub": "alice",
        "iat": now - 10,
        "exp": now + 600,
        "scope": "orders:read",
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

fn assert_invalid_token(reply: &Reply, description: &str) {
    assert_json_error(reply, 401, "invalid_token");
    assert_eq!(reply.json()["error_description"], description);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{description}\""
            )
            .as_str()
        )
    );
}

// ---------------------------------------------------------------------------
// [validation] max_token_lifetime

#[tokio::test]
async fn a_token_living_longer_than_max_token_lifetime_is_refused_for_own_and_trusted_issuers() {
    let f = fixture("").await;
    let url = f.gateway.url("/orders/1");
    let now = unix_now();
    let day = 24 * 3600;

    // Within the default 24h: accepted, from either issuer.
    let fine = f.own.token(&claims(
        ISS,
        json!({"iat": now - 10, "exp": now - 10 + day}),
    ));
    assert_eq!(get_bearer(&url, &fine).await.status, StatusCode::OK);
    let idp_fine = f.idp.token(&claims(IDP_ISS, json!({"exp": now + 3600})));
    assert_eq!(get_bearer(&url, &idp_fine).await.status, StatusCode::OK);

    let too_long = [
        // 400 days, from the gateway's own key and from the trusted issuer.
        f.own.token(&claims(ISS, json!({"exp": now + 400 * day}))),
        f.idp
            .token(&claims(IDP_ISS, json!({"exp": now + 400 * day}))),
        // One second over 24h after iat.
        f.own.token(&claims(
            ISS,
            json!({"iat": now - 10, "exp": now - 10 + day + 1}),
        )),
        // Without iat, counted from now.
        f.idp.token(&claims(
            IDP_ISS,
            json!({"iat": null, "exp": now + day + 120}),
        )),
        // The largest time there is.
        f.idp.token(&claims(IDP_ISS, json!({"exp": 1e300}))),
        f.own
            .token(&claims(ISS, json!({"iat": null, "exp": 1e300}))),
    ];
    for token in &too_long {
        let reply = get_bearer(&url, token).await;
        assert_invalid_token(&reply, "token lifetime too long");
        // A repeat is refused too (never cached as verified).
        assert_eq!(
            get_bearer(&url, token).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        f.upstream.requests().len(),
        2,
        "only the two fine tokens got through"
    );

    scrape_until(
        f.gateway.admin,
        &["warden_auth_decisions_total{decision=\"deny\",reason=\"lifetime_too_long\",route=\"orders\"} 12"],
    )
    .await;
}

#[tokio::test]
async fn max_token_lifetime_is_configurable_and_checked() {
    let f = fixture("max_token_lifetime = \"1h\"").await;
    let now = unix_now();
    let two_hours = f.own.token(&claims(ISS, json!({"exp": now + 7200})));
    let reply = get_bearer(&f.gateway.url("/orders/1"), &two_hours).await;
    assert_invalid_token(&reply, "token lifetime too long");
    let half_hour = f.own.token(&claims(ISS, json!({"exp": now + 1800})));
    assert_eq!(
        get_bearer(&f.gateway.url("/orders/1"), &half_hour)
            .await
            .status,
        StatusCode::OK
    );

    let bad = |validation: &str, issuer_extra: &str| {
        let toml = config(
            "",
            &format!(
                "[[keys]]\nkid = \"k\"\nalg = \"ES256\"\ngenerate = true\n\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"k\"\n{issuer_extra}\n\n[validation]\n{validation}\n"
            ),
        );
        warden::Config::from_toml(&toml, "test.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let err = bad("max_token_lifetime = \"forever\"", "");
    assert!(err.contains("validation.max_token_lifetime"), "{err}");
    assert!(err.contains("is not a duration"), "{err}");
    let err = bad("max_token_lifetime = \"10s\"", "");
    assert!(err.contains("is shorter than a minute"), "{err}");
    let err = bad("max_token_lifetime = \"1h\"", "max_ttl = \"2h\"");
    assert!(err.contains("issuer.max_ttl"), "{err}");
    assert!(err.contains("max_token_lifetime"), "{err}");
    assert_eq!(bad("max_token_lifetime = \"2h\"", "max_ttl = \"2h\""), "");
}

// ---------------------------------------------------------------------------
// 403 for a missing scope or claim

#[tokio::test]
async fn a_403_names_the_missing_scopes_or_the_missing_claim_and_always_carries_scope() {
    let f = fixture("").await;

    // Scopes missing: insufficient_scope with the scopes needed.
    let no_scope = f.own.token(&claims(ISS, json!({"scope": "other"})));
    let reply = get_bearer(&f.gateway.url("/orders/1"), &no_scope).await;
    assert_json_error(&reply, 403, "insufficient_scope");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"orders:read\"")
    );

    // The claim missing, and another tenant: the claim named, scope= kept.
    for tenant in [Value::Null, json!("initech")] {
        let token = f.own.token(&claims(ISS, json!({ "tenant": tenant })));
        let reply = get_bearer(&f.gateway.url("/orders/1"), &token).await;
        assert_json_error(&reply, 403, "insufficient_scope");
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
        // A route without scopes: scope= is there, empty.
        let reply = get_bearer(&f.gateway.url("/tenants/1"), &token).await;
        assert_json_error(&reply, 403, "insufficient_scope");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(
                "Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"\", \
                 error_description=\"required claim 'tenant' is missing or not allowed\""
            )
        );
    }
    assert!(f.upstream.requests().is_empty());
}

// ---------------------------------------------------------------------------
// gRPC-aware refusals

/// A gRPC call over h2c: `POST path` with `content-type: application/grpc`
/// and one empty message; returns the head and whether the stream ended
/// with the headers (trailers-only), plus any body bytes and trailers.
async fn grpc_call(
    gateway: &TestGateway,
    path: &str,
    token: Option<&str>,
) -> (
    http::response::Parts,
    bool,
    Vec<u8>,
    Option<http::HeaderMap>,
) {
    let mut request = Request::post(gateway.url(path))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(full(vec![0u8, 0, 0, 0, 0])).unwrap();
    let response = tokio::time::timeout(PATIENCE, h2c_client().request(request))
        .await
        .expect("an answer in time")
        .expect("a response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (parts, mut body) = response.into_parts();
    let ended_with_headers = http_body::Body::is_end_stream(&body);
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body reads");
        if let Some(bytes) = frame.data_ref() {
            data.extend_from_slice(bytes);
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    (parts, ended_with_headers, data, trailers)
}

fn assert_grpc_refusal(
    answer: &(
        http::response::Parts,
        bool,
        Vec<u8>,
        Option<http::HeaderMap>,
    ),
    status: u16,
    grpc_status: &str,
) {
    let (parts, ended, data, trailers) = answer;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(parts.status.as_u16(), status, "{parts:?}");
    assert_eq!(header("grpc-status"), Some(grpc_status), "{parts:?}");
    assert!(
        header("grpc-message").is_some_and(|m| !m.is_empty()),
        "{parts:?}"
    );
    assert_eq!(
        header("content-type"),
        Some("application/grpc"),
        "{parts:?}"
    );
    assert!(header("x-execution-key").is_some(), "{parts:?}");
    assert!(*ended, "trailers-only: the stream ends with the headers");
    assert!(data.is_empty(), "no body: {data:?}");
    assert!(trailers.is_none(), "no separate trailers");
}

#[tokio::test]
async fn gateway_refusals_of_grpc_calls_are_trailers_only_grpc_statuses_beside_the_http_status() {
    let f = fixture("").await;

    // 401 without a token: UNAUTHENTICATED, the challenge kept.
    let answer = grpc_call(&f.gateway, "/pkg.Orders/Get", None).await;
    assert_grpc_refusal(&answer, 401, "16");
    assert_eq!(
        answer.0.headers.get("www-authenticate").unwrap(),
        "Bearer realm=\"warden\""
    );
    assert_eq!(
        answer.0.headers.get("grpc-message").unwrap(),
        "a bearer token is required"
    );

    // 401 for a bad token, with its description percent-encoded as gRPC wants.
    let expired = f.own.token(&claims(
        ISS,
        json!({"iat": unix_now() - 7200, "exp": unix_now() - 3600}),
    ));
    let answer = grpc_call(&f.gateway, "/pkg.Orders/Get", Some(&expired)).await;
    assert_grpc_refusal(&answer, 401, "16");
    assert_eq!(
        answer.0.headers.get("grpc-message").unwrap(),
        "token expired"
    );
    assert!(
        answer.0.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    // 403 PERMISSION_DENIED.
    let no_scope = f.own.token(&claims(ISS, json!({"scope": "other"})));
    let answer = grpc_call(&f.gateway, "/pkg.Orders/Get", Some(&no_scope)).await;
    assert_grpc_refusal(&answer, 403, "7");
    assert!(answer.0.headers.contains_key("www-authenticate"));

    // 429 RESOURCE_EXHAUSTED (the second call of a one-call budget).
    let first = grpc_call(&f.gateway, "/pkg.Limited/Get", None).await;
    assert_eq!(first.0.status, StatusCode::OK);
    assert!(
        first.0.headers.get("grpc-status").is_none(),
        "the upstream's answer is untouched"
    );
    let answer = grpc_call(&f.gateway, "/pkg.Limited/Get", None).await;
    assert_grpc_refusal(&answer, 429, "8");
    assert!(answer.0.headers.contains_key("retry-after"));

    // 502 UNAVAILABLE, 504 DEADLINE_EXCEEDED.
    let answer = grpc_call(&f.gateway, "/pkg.Down/Get", None).await;
    assert_grpc_refusal(&answer, 502, "14");
    let answer = grpc_call(&f.gateway, "/pkg.Slow/Get", None).await;
    assert_grpc_refusal(&answer, 504, "4");

    // A valid call reaches the upstream and comes back as it answered.
    let token = f.own.token(&claims(ISS, json!({})));
    let answer = grpc_call(&f.gateway, "/pkg.Orders/Get", Some(&token)).await;
    assert_eq!(answer.0.status, StatusCode::OK);
    assert_eq!(answer.2, b"upstream ok\n");

    // The same refusal to a client that is not gRPC stays JSON.
    let reply = get(&f.gateway.url("/pkg.Orders/Get")).await;
    assert_json_error(&reply, 401, "missing_token");
    assert!(reply.header("grpc-status").is_none());
}

// ---------------------------------------------------------------------------
// client_secret_post

fn token_request(form: &str, basic: Option<(&str, &str)>) -> Request<TestBody> {
    let mut request = Request::post("http://placeholder/auth")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((user, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    request.body(full(form.to_owned())).unwrap()
}

async fn post_token(gateway: &TestGateway, form: &str, basic: Option<(&str, &str)>) -> Reply {
    let mut request = token_request(form, basic);
    *request.uri_mut() = gateway.url("/auth").parse().unwrap();
    send(request).await
}

#[tokio::test]
async fn a_client_may_post_its_secret_in_the_form_but_not_beside_basic() {
    let f = fixture("").await;
    let form = |id: &str, secret: &str| {
        format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=orders%3Aread"
        )
    };

    // client_secret_post: a token, usable at the route.
    let reply = post_token(&f.gateway, &form(CLIENT_ID, API_KEY), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "orders:read");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token_claims(token)["sub"], "reporting-service");

    // A wrong secret, and an unknown client: the same invalid_client.
    let wrong = post_token(&f.gateway, &form(CLIENT_ID, "wk_wrong"), None).await;
    let unknown = post_token(&f.gateway, &form("nobody", API_KEY), None).await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json()["error"], "invalid_client");
        assert_eq!(
            reply.json()["error_description"],
            wrong.json()["error_description"]
        );
    }

    // Both Basic and the body: invalid_request, even with the right secret.
    let both = post_token(
        &f.gateway,
        &form(CLIENT_ID, API_KEY),
        Some((CLIENT_ID, API_KEY)),
    )
    .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.json()["error"], "invalid_request");
    assert!(!String::from_utf8_lossy(&both.body).contains(API_KEY));
    // A body client_id that is not Basic's is a second method too.
    let other_id = post_token(
        &f.gateway,
        "grant_type=client_credentials&client_id=someone-else",
        Some((CLIENT_ID, API_KEY)),
    )
    .await;
    assert_eq!(other_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(other_id.json()["error"], "invalid_request");

    // Basic alone still works, with the same client_id repeated in the body too.
    let basic = post_token(
        &f.gateway,
        "grant_type=client_credentials",
        Some((CLIENT_ID, API_KEY)),
    )
    .await;
    assert_eq!(basic.status, StatusCode::OK);
    let repeated = post_token(
        &f.gateway,
        &format!("grant_type=client_credentials&client_id={CLIENT_ID}"),
        Some((CLIENT_ID, API_KEY)),
    )
    .await;
    assert_eq!(repeated.status, StatusCode::OK);

    // Posted credentials need the client-credentials grant.
    let no_grant = post_token(
        &f.gateway,
        &format!("client_id={CLIENT_ID}&client_secret={API_KEY}"),
        None,
    )
    .await;
    assert_eq!(no_grant.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_grant.json()["error"], "invalid_request");

    scrape_until(
        f.gateway.admin,
        &[
            "warden_tokens_issued_total{method=\"client_credentials\"} 3",
            "warden_login_failures_total{reason=\"bad_client_secret\"} 1",
            "warden_login_failures_total{reason=\"unknown_client\"} 1",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------
// OIDC discovery for trusted issuers

/// An identity provider serving its discovery document (whose `issuer` is
/// `claimed(its own URL)`) and its JWKS.
async fn discovery_provider(key: &TestKey, claimed: fn(&str) -> String) -> ScriptedUpstream {
    let own_url = Arc::new(std::sync::Mutex::new(String::new()));
    let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
    let url = own_url.clone();
    let server = ScriptedUpstream::start(Arc::new(move |request: &Captured| {
        let base = url.lock().unwrap().clone();
        match request.target.as_str() {
            "/.well-known/openid-configuration" => {
                let issuer = claimed(&base);
                (
                    200,
                    json!({ "issuer": issuer, "jwks_uri": format!("{base}/oauth/keys") })
                        .to_string(),
                )
            }
            "/oauth/keys" => (200, jwks.clone()),
            _ => (404, "not found".to_owned()),
        }
    }))
    .await;
    *own_url.lock().unwrap() = server.url();
    server
}

async fn discovery_gateway(iss: &str, upstream: &RecordingUpstream) -> TestGateway {
    spawn_gateway(&config(
        "",
        &format!(
            "[[trusted_issuers]]\niss = \"{iss}\"\ndiscovery = true\naud = [\"{AUD}\"]\nalgs = [\"ES256\"]\n\n[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
    ))
    .await
}

#[tokio::test]
async fn a_trusted_issuer_with_discovery_gets_its_keys_from_the_discovery_documents_jwks_uri() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("idp-discovered", Algorithm::ES256);
    let idp = discovery_provider(&key, |own| own.to_owned()).await;
    let gateway = discovery_gateway(&idp.url(), &upstream).await;

    // /readyz waits for the keys, which come through the document.
    let deadline = std::time::Instant::now() + PATIENCE;
    while get(&gateway.admin_url("/readyz")).await.status != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fetched: Vec<String> = idp.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        fetched,
        ["/.well-known/openid-configuration", "/oauth/keys"]
    );

    let token = key.token(&claims(&idp.url(), json!({})));
    let reply = get_bearer(&gateway.url("/orders/1"), &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused_and_its_keys_never_fetched() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("idp-impostor", Algorithm::ES256);
    // The document claims another issuer; or the same URL with a trailing
    // slash, which must not pass either (the match is exact).
    let other = discovery_provider(&key, |_| "https://other.example".to_owned()).await;
    let slash = discovery_provider(&key, |own| format!("{own}/")).await;
    for provider in [&other, &slash] {
        let issuer = provider.url();
        let gateway = discovery_gateway(&issuer, &upstream).await;
        scrape_until(
            gateway.admin,
            &[&format!(
                "warden_jwks_refresh_total{{issuer=\"{issuer}\",result=\"error\"}} 1"
            )],
        )
        .await;
        assert_eq!(
            get(&gateway.admin_url("/readyz")).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let fetched: Vec<String> = provider.requests().into_iter().map(|r| r.target).collect();
        assert_eq!(
            fetched,
            ["/.well-known/openid-configuration"],
            "no JWKS fetch"
        );
        let token = key.token(&claims(&issuer, json!({})));
        let reply = get_bearer(&gateway.url("/orders/1"), &token).await;
        assert_json_error(&reply, 401, "invalid_token");
    }
    assert!(upstream.requests().is_empty());
}

#[test]
fn discovery_is_checked_in_the_config() {
    let entry = |extra: &str| {
        config(
            "",
            &format!(
                "[[trusted_issuers]]\niss = \"https://idp.example\"\naud = [\"a\"]\nalgs = [\"ES256\"]\n{extra}\n"
            ),
        )
    };
    let err = |toml: String| {
        warden::Config::from_toml(&toml, "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err(entry("discovery = true")).is_empty());
    let both = err(entry(
        "discovery = true\njwks_url = \"https://idp.example/jwks\"",
    ));
    assert!(both.contains("is set together with jwks_url"), "{both}");
    let neither = err(entry(""));
    assert!(
        neither.contains("needs jwks_url or discovery = true"),
        "{neither}"
    );
    let plain = err(config(
        "",
        "[[trusted_issuers]]\niss = \"http://idp.example\"\ndiscovery = true\naud = [\"a\"]\nalgs = [\"ES256\"]\n",
    ));
    assert!(plain.contains("trusted_issuers[0].discovery"), "{plain}");
    assert!(plain.contains("loopback"), "{plain}");
}
