//! Login and token issuing (SPEC §5) and the audit log and metrics around
//! them (SPEC §7), over HTTP through the real gateway.
//!
//! The gateway signs with an ES256 key written by the test (and also holds an
//! RS256 key and an HS256 secret, to check what its JWKS publishes). Audit
//! events are read from the test's end of a pipe handed to the gateway as
//! its audit writer, so a test can follow one token from its login to every
//! request it made.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Request, StatusCode};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use warden::clock::unix_now;
use warden::shared_state::InMemoryState;
use warden::{AuditWriter, StartOptions};

const ISS: &str = "http://warden.test";
const API_KEY: &str = "wk_test_9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const CLIENT_ID: &str = "reporting-service";
const PASSWORD: &str = "correct horse battery staple";
const WRONG_PASSWORD: &str = "incorrect donkey battery staple";

/// The argon2id hash of [`PASSWORD`], made once (argon2 is slow on purpose).
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| warden::auth::login::hash_password(PASSWORD.as_bytes()).unwrap())
}

/// A gateway with login enabled, an `orders` route in front of a recording
/// upstream, and the key its tokens are signed with.
struct Fixture {
    gateway: TestGateway,
    upstream: RecordingUpstream,
    /// The signing key (`main-es256`), to mint tokens the gateway accepts.
    es: TestKey,
    /// The config as written, for `warden token --config`.
    toml: String,
    _files: Vec<TempFile>,
}

/// Starts a gateway whose `[login]` allows `max_failures` failures a window
/// and whose `[validation]` holds `validation`, with `options`.
async fn start(max_failures: u32, validation: &str, options: StartOptions) -> Fixture {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let es = TestKey::generate("main-es256", Algorithm::ES256);
    let rs = TestKey::generate("old-rs256", Algorithm::RS256);
    let hs = TestKey::generate("internal-hs256", Algorithm::HS256);
    let files = vec![es.file(), rs.file(), hs.file()];
    let rest = format!(
        r#"{es_entry}{rs_entry}{hs_entry}
[issuer]
iss = "{ISS}"
aud = ["warden"]
signing_kid = "main-es256"
ttl = "15m"

[validation]
{validation}

[login]
path = "/auth"
api_key_header = "X-Api-Key"
max_failures_per_minute = {max_failures}

[[login.api_keys]]
id = "{CLIENT_ID}"
key_sha256 = "{key_sha256}"
sub = "reporting-service"
role = "service"
scopes = ["orders:read", "orders:write"]
claims = {{ tenant = "acme" }}

[[login.users]]
username = "alice"
password_argon2 = "{hash}"
role = "admin"
scopes = ["orders:read", "orders:write", "warden:admin"]

[[login.users]]
username = "bob"
password_argon2 = "{hash}"
role = "clerk"
scopes = ["orders:read"]

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{upstream}"
scopes = ["orders:read"]
method_scopes = {{ POST = ["orders:write"] }}
forward_claims = {{ "X-User-Id" = "sub", "X-User-Role" = "role", "X-Tenant" = "tenant" }}
"#,
        es_entry = es.config_entry(&files[0]),
        rs_entry = rs.config_entry(&files[1]),
        hs_entry = hs.config_entry(&files[2]),
        key_sha256 = sha256_hex(API_KEY.as_bytes()),
        hash = password_hash(),
        upstream = upstream.url(),
    );
    let toml = config("", &rest);
    let gateway = spawn_gateway_with(&toml, options).await;
    Fixture {
        gateway,
        upstream,
        es,
        toml,
        _files: files,
    }
}

/// The usual fixture: 10 failures a minute, the default validation, and
/// the audit events captured.
async fn fixture() -> (Fixture, AuditCapture) {
    let (writer, audit) = audit_capture(1024);
    let fixture = start(
        10,
        "",
        StartOptions {
            audit_writer: Some(writer),
            ..StartOptions::default()
        },
    )
    .await;
    (fixture, audit)
}

fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{secret}")))
}

/// How a client logs in.
#[derive(Clone, Copy, Debug)]
enum Method {
    ApiKey,
    Basic,
    ClientCredentials,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::ApiKey => "api_key",
            Method::Basic => "basic",
            Method::ClientCredentials => "client_credentials",
        }
    }
}

/// `POST /auth` the way `method` does it, asking for `scope` if given.
fn login_request(gateway: &TestGateway, method: Method, scope: Option<&str>) -> Request<TestBody> {
    let builder = Request::post(gateway.url("/auth"));
    match method {
        Method::ApiKey => {
            let builder = builder.header("x-api-key", API_KEY);
            match scope {
                Some(scope) => builder
                    .header("content-type", "application/json")
                    .body(full(json!({ "scope": scope }).to_string())),
                None => builder.body(empty()),
            }
        }
        Method::Basic => {
            let builder = builder.header("authorization", basic("alice", PASSWORD));
            match scope {
                Some(scope) => builder
                    .header("content-type", "application/json")
                    .body(full(json!({ "scope": scope }).to_string())),
                None => builder.body(empty()),
            }
        }
        Method::ClientCredentials => {
            let mut form = "grant_type=client_credentials".to_owned();
            if let Some(scope) = scope {
                form.push_str("&scope=");
                form.push_str(&scope.replace(':', "%3A").replace(' ', "+"));
            }
            builder
                .header("authorization", basic(CLIENT_ID, API_KEY))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full(form))
        }
    }
    .unwrap()
}

/// Logs in and returns the reply and its token, after checking the answer
/// SPEC §5 promises.
async fn login(gateway: &TestGateway, method: Method, scope: Option<&str>) -> (Reply, String) {
    let reply = send(login_request(gateway, method, scope)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{method:?}: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.header("authorization"),
        Some(format!("Bearer {token}").as_str()),
        "the Authorization response header carries the body's token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].is_u64(), "{body}");
    assert!(body["scope"].is_string(), "{body}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let exposed = reply
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        exposed
            .split(',')
            .any(|h| h.trim().eq_ignore_ascii_case("authorization")),
        "Access-Control-Expose-Headers: {exposed:?}"
    );
    assert_uuid_v7(reply.execution_key());
    (reply, token)
}

async fn get_bearer(url: &str, token: &str) -> Reply {
    get_with(url, &[("authorization", &format!("Bearer {token}"))]).await
}

fn post_bearer(url: &str, token: &str, body: &str) -> Request<TestBody> {
    Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(full(body.to_owned()))
        .unwrap()
}

/// Runs `warden ARGS` off the async workers; returns the exit code and stdout.
async fn run_warden(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = warden_command(&args).output().expect("run warden");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// Round trips

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_method_gets_a_token_that_reaches_the_upstream_traced_by_the_audit_log() {
    let (f, audit) = fixture().await;
    let cases = [
        (
            Method::ApiKey,
            "reporting-service",
            "service",
            Some("acme"),
            "orders:read orders:write",
        ),
        (
            Method::Basic,
            "alice",
            "admin",
            None,
            "orders:read orders:write warden:admin",
        ),
        (
            Method::ClientCredentials,
            "reporting-service",
            "service",
            Some("acme"),
            "orders:read orders:write",
        ),
    ];

    for (method, sub, role, tenant, scope) in cases {
        let (login_reply, token) = login(&f.gateway, method, None).await;
        let login_key = login_reply.execution_key().to_owned();
        let body = login_reply.json();
        assert_eq!(body["expires_in"], 900, "{method:?}");
        assert_eq!(body["scope"], scope, "{method:?}");

        let claims = token_claims(&token);
        assert_eq!(claims["iss"], ISS);
        assert_eq!(claims["sub"], sub);
        assert_eq!(claims["aud"], "warden");
        assert_eq!(claims["scope"], scope);
        assert_eq!(claims["role"], role);
        assert_eq!(claims["tenant"].as_str(), tenant);
        assert_eq!(
            claims["txn"],
            login_key.as_str(),
            "txn is the login's execution key"
        );
        let iat = claims["iat"].as_i64().unwrap();
        assert_eq!(claims["nbf"].as_i64(), Some(iat));
        assert_eq!(claims["exp"].as_i64(), Some(iat + 900));
        assert!((iat - unix_now()).abs() <= 5);
        let jti = claims["jti"].as_str().unwrap().to_owned();
        assert_uuid_v7(&jti);
        let payload = claims.to_string();
        for secret in [API_KEY, PASSWORD, password_hash()] {
            assert!(
                !payload.contains(secret),
                "{method:?}: a secret in the token"
            );
        }

        // The token opens the protected route; the upstream sees its claims.
        let call = get_bearer(&f.gateway.url("/orders/42"), &token).await;
        assert_eq!(call.status, StatusCode::OK, "{method:?}");
        let seen = f.upstream.next_request().await;
        assert_eq!(seen.header("x-user-id"), Some(sub));
        assert_eq!(seen.header("x-user-role"), Some(role));
        assert_eq!(seen.header("x-tenant"), tenant);
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.header("x-execution-key"), Some(call.execution_key()));

        // The audit log ties the call to the token, and the token to its login.
        let call_key = call.execution_key().to_owned();
        let used = audit
            .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == call_key.as_str())
            .await;
        assert_eq!(used["jti"], jti.as_str(), "{used}");
        assert_eq!(used["sub"], sub);
        assert_eq!(used["iss"], ISS);
        assert_eq!(used["decision"], "allow");
        assert_eq!(used["reason"], "ok");
        assert_eq!(used["status"], 200);
        assert_eq!(used["route"], "orders");
        assert_eq!(used["method"], "GET");
        assert_eq!(used["path"], "/orders/42");
        assert_eq!(used["client_ip"], "127.0.0.1");
        assert!(used["latency_ms"].is_number(), "{used}");
        assert!(used["ts"].is_string(), "{used}");
        let issued = audit
            .wait_for(|e| e["event"] == "token_issued" && e["jti"] == jti.as_str())
            .await;
        assert_eq!(issued["execution_key"], login_key.as_str(), "{issued}");
        assert_eq!(issued["method"], method.name());
        assert_eq!(issued["sub"], sub);
        assert_eq!(issued["scope"], scope);
        assert_eq!(issued["exp"], claims["exp"]);
    }

    scrape_until(
        f.gateway.admin,
        &[
            "warden_tokens_issued_total{method=\"api_key\"} 1",
            "warden_tokens_issued_total{method=\"basic\"} 1",
            "warden_tokens_issued_total{method=\"client_credentials\"} 1",
            "warden_auth_decisions_total{decision=\"allow\",reason=\"ok\",route=\"orders\"} 3",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_issued_token_verifies_with_warden_verify_against_the_published_jwks_which_holds_only_public_keys()
 {
    let (f, _audit) = fixture().await;
    let (_, token) = login(&f.gateway, Method::ApiKey, None).await;

    let reply = get(&f.gateway.url("/.well-known/jwks.json")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let cache_control = reply.header("cache-control").unwrap_or_default();
    assert!(cache_control.contains("max-age="), "{cache_control:?}");
    let jwks = reply.json();
    let keys = jwks["keys"].as_array().unwrap();
    let allowed = ["kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"];
    for key in keys {
        for field in key.as_object().unwrap().keys() {
            assert!(
                allowed.contains(&field.as_str()),
                "{field:?} published: {key}"
            );
        }
        assert_eq!(key["use"], "sig", "{key}");
    }
    let mut kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    kids.sort_unstable();
    assert_eq!(kids, ["main-es256", "old-rs256"], "never the HS256 secret");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "main-es256");
    assert_eq!(header["alg"], "ES256");

    let file = TempFile::new(".json", reply.body.as_ref());
    let (code, stdout, stderr) = run_warden(vec![
        "verify".into(),
        "--jwks".into(),
        file.path_str().into(),
        token.clone(),
    ])
    .await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("main-es256"), "{stdout}");

    // One changed byte of the payload, and it no longer verifies.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let claims = token_claims(&token);
    let mut forged = claims.clone();
    forged["scope"] = "orders:read orders:write warden:admin".into();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    let (code, stdout, _) = run_warden(vec![
        "verify".into(),
        "--jwks".into(),
        file.path_str().into(),
        parts.join("."),
    ])
    .await;
    assert_eq!(code, Some(1), "{stdout}");
}

// ---------------------------------------------------------------------------
// Scopes

#[tokio::test]
async fn a_client_may_ask_for_fewer_scopes_but_not_for_more_and_a_narrow_token_cannot_post() {
    let (f, _audit) = fixture().await;

    let (reply, narrow) = login(&f.gateway, Method::ApiKey, Some("orders:read")).await;
    assert_eq!(reply.json()["scope"], "orders:read");
    assert_eq!(token_claims(&narrow)["scope"], "orders:read");
    let (reply, form_narrow) =
        login(&f.gateway, Method::ClientCredentials, Some("orders:read")).await;
    assert_eq!(reply.json()["scope"], "orders:read");
    assert_eq!(token_claims(&form_narrow)["scope"], "orders:read");

    for method in [Method::ApiKey, Method::ClientCredentials] {
        let reply = send(login_request(
            &f.gateway,
            method,
            Some("orders:read warden:admin"),
        ))
        .await;
        assert_json_error(&reply, 400, "invalid_scope");
        assert!(reply.header("authorization").is_none());
    }

    let url = f.gateway.url("/orders/1");
    assert_eq!(get_bearer(&url, &narrow).await.status, StatusCode::OK);
    let reply = send(post_bearer(&url, &narrow, "{}")).await;
    assert_json_error(&reply, 403, "insufficient_scope");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            "Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"orders:read orders:write\""
        )
    );
    let (_, wide) = login(&f.gateway, Method::ApiKey, None).await;
    assert_eq!(
        send(post_bearer(&url, &wide, "{}")).await.status,
        StatusCode::OK
    );
    assert_eq!(f.upstream.requests().len(), 2);
}

// ---------------------------------------------------------------------------
// Revocation and expiry

#[tokio::test]
async fn a_token_revoked_by_its_holder_is_refused_from_then_on() {
    let (f, audit) = fixture().await;
    let (_, token) = login(&f.gateway, Method::ApiKey, None).await;
    let url = f.gateway.url("/orders/1");
    assert_eq!(get_bearer(&url, &token).await.status, StatusCode::OK);

    let reply = send(post_bearer(&f.gateway.url("/auth/revoke"), &token, "")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let jti = token_claims(&token)["jti"].clone();
    assert_eq!(reply.json()["jti"], jti);

    let reply = get_bearer(&url, &token).await;
    assert_json_error(&reply, 401, "invalid_token");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"token revoked\""
        )
    );
    assert_eq!(reply.json()["error_description"], "token revoked");
    let revoked = audit
        .wait_for(|e| e["event"] == "token_revoked" && e["jti"] == jti)
        .await;
    assert!(revoked["execution_key"].is_string(), "{revoked}");
    assert_eq!(f.upstream.requests().len(), 1);

    // Other tokens of the same client are not affected.
    let (_, fresh) = login(&f.gateway, Method::ApiKey, None).await;
    assert_eq!(get_bearer(&url, &fresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_revoke_endpoint_needs_the_warden_admin_scope_and_audits_the_revocation() {
    let (f, audit) = fixture().await;
    let (_, service) = login(&f.gateway, Method::ApiKey, None).await;
    let (_, admin) = login(&f.gateway, Method::Basic, None).await;
    let url = f.gateway.url("/orders/1");
    assert_eq!(get_bearer(&url, &service).await.status, StatusCode::OK);
    let victim = token_claims(&service);
    let body = json!({ "jti": victim["jti"], "exp": victim["exp"] }).to_string();
    let revoke_url = f.gateway.admin_url("/admin/revoke");

    let reply = send(post_bearer(&revoke_url, &service, &body)).await;
    assert_json_error(&reply, 403, "insufficient_scope");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"warden:admin\"")
    );
    let reply = send(
        Request::post(&revoke_url)
            .header("content-type", "application/json")
            .body(full(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_bearer(&url, &service).await.status, StatusCode::OK);

    let reply = send(post_bearer(&revoke_url, &admin, &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["jti"], victim["jti"]);

    let refused = get_bearer(&url, &service).await;
    assert_json_error(&refused, 401, "invalid_token");
    assert_eq!(refused.json()["error_description"], "token revoked");
    let event = audit
        .wait_for(|e| e["event"] == "token_revoked" && e["jti"] == victim["jti"])
        .await;
    assert_eq!(event["by"], "alice", "{event}");
    assert_eq!(event["execution_key"], answer["execution_key"], "{event}");
    // The operator's own token still works.
    assert_eq!(get_bearer(&url, &admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_token_is_refused_whether_minted_long_ago_or_by_warden_token_with_a_short_ttl() {
    let (writer, _audit) = audit_capture(1024);
    let options = StartOptions {
        audit_writer: Some(writer),
        ..StartOptions::default()
    };
    let f = start(10, "leeway = \"0s\"", options).await;
    let url = f.gateway.url("/orders/1");
    let now = unix_now();
    let old = f.es.token(&json!({
        "iss": ISS, "aud": "warden", "sub": "ops", "scope": "orders:read",
        "jti": uuid::Uuid::now_v7().to_string(),
        "iat": now - 1000, "nbf": now - 1000, "exp": now - 100,
    }));
    let reply = get_bearer(&url, &old).await;
    assert_json_error(&reply, 401, "invalid_token");
    assert_eq!(reply.json()["error_description"], "token expired");

    // The offline tool signs with the same key: a normal token passes...
    let config = ConfigFile::new(&f.toml);
    let token_args = |ttl: &str| {
        [
            "token",
            "--config",
            config.path_str(),
            "--sub",
            "ops",
            "--scope",
            "orders:read",
            "--ttl",
            ttl,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let (code, stdout, stderr) = run_warden(token_args("5m")).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(get_bearer(&url, stdout.trim()).await.status, StatusCode::OK);

    // ...and one of 1 s is refused once its second is over (a real wait).
    let (code, stdout, stderr) = run_warden(token_args("1s")).await;
    assert_eq!(code, Some(0), "{stderr}");
    let short = stdout.trim().to_owned();
    let exp = token_claims(&short)["exp"].as_i64().unwrap();
    while unix_now() < exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = get_bearer(&url, &short).await;
    assert_json_error(&reply, 401, "invalid_token");
    assert_eq!(reply.json()["error_description"], "token expired");
    assert_eq!(f.upstream.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// Failed logins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer_after_the_same_work() {
    let (f, audit) = fixture().await;
    let attempt = |user: &'static str| {
        let request = Request::post(f.gateway.url("/auth"))
            .header("authorization", basic(user, WRONG_PASSWORD))
            .body(empty())
            .unwrap();
        async move {
            let started = Instant::now();
            let reply = send(request).await;
            (reply, started.elapsed())
        }
    };

    let (wrong, wrong_took) = attempt("alice").await;
    let (unknown, unknown_took) = attempt("mallory").await;

    assert_json_error(&wrong, 401, "invalid_client");
    assert_eq!(wrong.status, unknown.status);
    let comparable = |reply: &Reply| {
        let mut headers: Vec<(String, String)> = reply
            .headers
            .iter()
            .filter(|(name, _)| *name != "date" && *name != "x-execution-key")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        let mut body = reply.json();
        body.as_object_mut().unwrap().remove("execution_key");
        (headers, body)
    };
    assert_eq!(comparable(&wrong), comparable(&unknown));
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Basic realm=\"warden\"")
    );
    // Both ran argon2 (a wrong user is checked against a dummy hash).
    let floor = Duration::from_millis(5);
    assert!(
        wrong_took >= floor && unknown_took >= floor,
        "wrong password {wrong_took:?}, unknown user {unknown_took:?}"
    );

    let failed_for = |reply: &Reply| {
        let key = reply.execution_key().to_owned();
        let audit = &audit;
        async move {
            audit
                .wait_for(|e| e["event"] == "login_failed" && e["execution_key"] == key.as_str())
                .await
        }
    };
    let wrong_event = failed_for(&wrong).await;
    assert_eq!(wrong_event["reason"], "bad_password");
    assert_eq!(wrong_event["identity"], "alice");
    assert_eq!(wrong_event["client_ip"], "127.0.0.1");
    let unknown_event = failed_for(&unknown).await;
    assert_eq!(unknown_event["reason"], "unknown_user");
    assert!(
        unknown_event["identity"].is_null(),
        "an identity that does not exist is not logged: {unknown_event}"
    );

    // An unknown client and a wrong client secret look alike too.
    let client_attempt = |user: &str, secret: &str| {
        Request::post(f.gateway.url("/auth"))
            .header("authorization", basic(user, secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full("grant_type=client_credentials"))
            .unwrap()
    };
    let wrong_secret = send(client_attempt(CLIENT_ID, "not-the-key")).await;
    let unknown_client = send(client_attempt("no-such-client", "not-the-key")).await;
    assert_json_error(&wrong_secret, 401, "invalid_client");
    assert_eq!(comparable(&wrong_secret), comparable(&unknown_client));
    let bad_key = send(
        Request::post(f.gateway.url("/auth"))
            .header("x-api-key", "wk_test_not-a-key")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_json_error(&bad_key, 401, "invalid_client");

    scrape_until(
        f.gateway.admin,
        &[
            "warden_login_failures_total{reason=\"bad_password\"} 1",
            "warden_login_failures_total{reason=\"unknown_user\"} 1",
            "warden_login_failures_total{reason=\"bad_client_secret\"} 1",
            "warden_login_failures_total{reason=\"unknown_client\"} 1",
            "warden_login_failures_total{reason=\"bad_api_key\"} 1",
        ],
    )
    .await;
}

#[tokio::test]
async fn after_max_failures_even_correct_credentials_get_429_until_the_window_passes() {
    let state = Arc::new(InMemoryState::with_window(
        1000,
        1000,
        Duration::from_millis(800),
    ));
    let (writer, audit) = audit_capture(1024);
    let f = start(
        3,
        "",
        StartOptions {
            auth_state: Some(state),
            audit_writer: Some(writer),
            ..StartOptions::default()
        },
    )
    .await;
    let bad_key = || {
        Request::post(f.gateway.url("/auth"))
            .header("x-api-key", "wk_test_guess")
            .body(empty())
            .unwrap()
    };
    for _ in 0..3 {
        assert_json_error(&send(bad_key()).await, 401, "invalid_client");
    }

    for method in [Method::ApiKey, Method::Basic] {
        let reply = send(login_request(&f.gateway, method, None)).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{method:?}");
        let retry_after: u64 = reply
            .header("retry-after")
            .expect("a 429 says when to retry")
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "Retry-After: {retry_after}");
        assert!(reply.header("authorization").is_none());
        let body = reply.json();
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(body["execution_key"].as_str(), Some(reply.execution_key()));
        let key = reply.execution_key().to_owned();
        let event = audit
            .wait_for(|e| e["event"] == "login_failed" && e["execution_key"] == key.as_str())
            .await;
        assert_eq!(event["reason"], "throttled");
    }

    // A real wait: the failure window is 800 ms.
    tokio::time::sleep(Duration::from_millis(900)).await;
    login(&f.gateway, Method::ApiKey, None).await;

    scrape_until(
        f.gateway.admin,
        &[
            "warden_login_failures_total{reason=\"bad_api_key\"} 3",
            "warden_login_failures_total{reason=\"throttled\"} 2",
            "warden_tokens_issued_total{method=\"api_key\"} 1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_password_guesses_cannot_get_past_max_failures_per_minute() {
    let (writer, _audit) = audit_capture(1024);
    let options = StartOptions {
        audit_writer: Some(writer),
        ..StartOptions::default()
    };
    let f = start(3, "", options).await;

    // Twelve guesses at once, as a brute-force client would send them.
    let guesses = (0..12).map(|i| {
        let request = Request::post(f.gateway.url("/auth"))
            .header("authorization", basic("alice", &format!("guess-{i}")))
            .body(empty())
            .unwrap();
        async move { send(request).await.status }
    });
    let statuses = futures_util::future::join_all(guesses).await;

    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + throttled, 12, "{statuses:?}");
    assert!(
        checked <= 3,
        "{checked} of 12 concurrent guesses had their password checked with max_failures_per_minute = 3: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------
// The audit log

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_audit_sink_drops_and_counts_events_but_never_holds_up_a_request() {
    // The gateway's end of a 64-byte pipe whose other end is never read.
    let (gateway_end, _never_read) = tokio::io::duplex(64);
    let f = start(
        10,
        "",
        StartOptions {
            audit_writer: Some(AuditWriter {
                writer: Box::new(gateway_end),
                capacity: 4,
            }),
            ..StartOptions::default()
        },
    )
    .await;
    let now = unix_now();
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            f.es.token(&json!({
                "iss": ISS, "aud": "warden", "sub": format!("client-{i}"),
                "scope": "orders:read", "jti": uuid::Uuid::now_v7().to_string(),
                "iat": now, "exp": now + 300,
            }))
        })
        .collect();

    let started = Instant::now();
    let calls = tokens.iter().enumerate().map(|(i, token)| {
        let url = f.gateway.url(&format!("/orders/{i}"));
        async move { get_bearer(&url, token).await.status }
    });
    let statuses = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("every request completes although the audit sink is blocked");

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = scrape(f.gateway.admin).await;
    let dropped = metric_value(&text, "warden_audit_events_dropped_total");
    assert!(dropped > 0.0, "no dropped events counted:\n{text}");
    assert_eq!(f.upstream.requests().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_never_contain_a_password_an_api_key_or_a_token() {
    let (f, audit) = fixture().await;
    let mut tokens = Vec::new();
    for method in [Method::ApiKey, Method::Basic, Method::ClientCredentials] {
        tokens.push(login(&f.gateway, method, None).await.1);
    }
    let (_, narrow) = login(&f.gateway, Method::ApiKey, Some("orders:read")).await;
    tokens.push(narrow.clone());
    // Failures, with secrets close to the real ones.
    let near_key = format!("{API_KEY}x");
    let failures = [
        ("authorization", basic("alice", WRONG_PASSWORD)),
        ("authorization", basic("mallory", PASSWORD)),
        ("authorization", basic(CLIENT_ID, API_KEY)),
        ("x-api-key", near_key.clone()),
    ];
    for (name, value) in &failures {
        let reply = send(
            Request::post(f.gateway.url("/auth"))
                .header(*name, value)
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
    }
    // Uses, allowed and denied, and a revocation.
    let url = f.gateway.url("/orders/1");
    for token in &tokens {
        assert_eq!(get_bearer(&url, token).await.status, StatusCode::OK);
    }
    assert_eq!(
        send(post_bearer(&url, &narrow, "{}")).await.status,
        StatusCode::FORBIDDEN
    );
    let mut tampered = tokens[0].clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'Q' } else { 'A' });
    assert_eq!(
        get_bearer(&url, &tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    let revoke = send(post_bearer(&f.gateway.url("/auth/revoke"), &tokens[0], "")).await;
    assert_eq!(revoke.status, StatusCode::OK);
    audit.wait_for(|e| e["event"] == "token_revoked").await;
    // 4 issued + 4 failed + 6 uses + 1 revocation: wait for all of them.
    let deadline = Instant::now() + PATIENCE;
    while audit.lines().len() < 15 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let lines = audit.lines();
    assert!(lines.len() >= 15, "{lines:#?}");
    let mut secrets: Vec<String> = vec![
        API_KEY.into(),
        near_key,
        PASSWORD.into(),
        WRONG_PASSWORD.into(),
        password_hash().into(),
        sha256_hex(API_KEY.as_bytes()),
        tampered.clone(),
    ];
    secrets.extend(failures.iter().map(|(_, v)| v.clone()));
    for token in &tokens {
        secrets.push(token.clone());
        // Nor the signature alone.
        secrets.push(token.rsplit('.').next().unwrap().to_owned());
    }
    for line in &lines {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "an audit line holds a secret ({secret:.12}...): {line}"
            );
        }
        let event: Value = serde_json::from_str(line).unwrap();
        for field in ["ts", "event", "execution_key"] {
            assert!(event.get(field).is_some(), "no {field}: {line}");
        }
    }
}

/// The `token_use` audit event of the request answered with `reply`.
async fn use_of(audit: &AuditCapture, reply: &Reply) -> Value {
    let key = reply.execution_key().to_owned();
    audit
        .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == key.as_str())
        .await
}

#[tokio::test]
async fn a_revoked_token_presented_again_is_traced_by_its_jti_in_the_audit_log() {
    let (f, audit) = fixture().await;
    let (_, token) = login(&f.gateway, Method::ApiKey, None).await;
    let jti = token_claims(&token)["jti"].clone();
    let reply = send(post_bearer(&f.gateway.url("/auth/revoke"), &token, "")).await;
    assert_eq!(reply.status, StatusCode::OK);

    let refused = get_bearer(&f.gateway.url("/orders/1"), &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let event = use_of(&audit, &refused).await;
    assert_eq!(event["decision"], "deny", "{event}");
    assert_eq!(event["reason"], "token_revoked", "{event}");
    assert_eq!(event["jti"], jti, "{event}");
    assert_eq!(event["sub"], "reporting-service", "{event}");
}

#[tokio::test]
async fn an_expired_token_with_a_good_signature_presented_again_is_traced_by_its_jti() {
    let (f, audit) = fixture().await;
    let now = unix_now();
    let jti = uuid::Uuid::now_v7().to_string();
    let expired = f.es.token(&json!({
        "iss": ISS, "aud": "warden", "sub": "ops", "scope": "orders:read",
        "jti": jti, "iat": now - 1000, "nbf": now - 1000, "exp": now - 100,
    }));

    let refused = get_bearer(&f.gateway.url("/orders/1"), &expired).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // The signature verified, so the claims are the issuer's, not a forger's:
    // the replay of this token is part of its trail (SPEC §1.3, §7).
    let event = use_of(&audit, &refused).await;
    assert_eq!(event["reason"], "token_expired", "{event}");
    assert_eq!(event["jti"], jti.as_str(), "{event}");
    assert_eq!(event["sub"], "ops", "{event}");
}

#[tokio::test]
async fn requests_to_the_revoke_endpoints_are_audited_as_token_use_like_any_request_presenting_a_token()
 {
    let (f, audit) = fixture().await;
    let (_, service) = login(&f.gateway, Method::ApiKey, None).await;
    let (_, admin) = login(&f.gateway, Method::Basic, None).await;
    let service_jti = token_claims(&service)["jti"].clone();
    let admin_jti = token_claims(&admin)["jti"].clone();
    let body = json!({ "jti": "some-token", "exp": unix_now() + 60 }).to_string();
    let revoke_url = f.gateway.admin_url("/admin/revoke");

    // An operator call with a token that lacks warden:admin, then one with it.
    let denied = send(post_bearer(&revoke_url, &service, &body)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let allowed = send(post_bearer(&revoke_url, &admin, &body)).await;
    assert_eq!(allowed.status, StatusCode::OK);
    // A holder revoking a token that is already expired.
    let now = unix_now();
    let stale = f.es.token(&json!({
        "iss": ISS, "aud": "warden", "sub": "ops", "scope": "orders:read",
        "jti": uuid::Uuid::now_v7().to_string(), "iat": now - 1000, "exp": now - 100,
    }));
    let refused = send(post_bearer(&f.gateway.url("/auth/revoke"), &stale, "")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused_key = refused.execution_key().to_owned();

    // Look for the three token_use events, for a while.
    let keys = [
        denied.json()["execution_key"].clone(),
        allowed.json()["execution_key"].clone(),
        json!(refused_key),
    ];
    let find = |events: &[Value], key: &Value| {
        events
            .iter()
            .find(|e| e["event"] == "token_use" && e["execution_key"] == *key)
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut events = audit.events();
    while keys.iter().any(|k| find(&events, k).is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        events = audit.events();
    }
    let [denied_use, allowed_use, refused_use] = keys.map(|k| find(&events, &k));
    assert!(
        denied_use
            .as_ref()
            .is_some_and(|e| e["decision"] == "deny" && e["jti"] == service_jti)
            && allowed_use
                .as_ref()
                .is_some_and(|e| e["decision"] == "allow" && e["jti"] == admin_jti)
            && refused_use
                .as_ref()
                .is_some_and(|e| e["decision"] == "deny"),
        "token_use for the 403 admin call: {denied_use:?}\nfor the 200 admin call: {allowed_use:?}\nfor the 401 /auth/revoke: {refused_use:?}\nall events: {events:#?}"
    );
}
