//! Per-user OAuth connections (SPEC §13), end to end: the real gateway in
//! front of a recording upstream, and a mock OAuth provider of this file
//! (an authorization endpoint that hands out codes bound to the PKCE
//! challenge and the user who "signed in", a token endpoint with the code
//! and rotating refresh-token grants, a switch to refuse refreshes, a
//! delay to make refreshes overlap). The test plays the browser: it follows
//! the provider's redirect to the gateway's callback.
//!
//! Two backends: the embedded vault (in-process gateways, restarted over
//! the same file) and Redis (two `warden` processes and a real
//! `redis-server`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::redis_server::{REDIS_PASSWORD, RedisServer};
use crate::common::*;
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use warden::StartOptions;
use warden::clock::unix_now;
use warden::credentials::store::{MasterKey, Store};

const ISS: &str = "https://warden.connections.test";
const CLIENT_ID: &str = "warden-client";
const CLIENT_SECRET: &str = "provider-client-secret-5f4e";
const PUBLIC_HOST: &str = "https://gateway.example.test";

// ---------------------------------------------------------------------------
// The mock provider

struct Code {
    user: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct ProviderState {
    codes: Mutex<HashMap<String, Code>>,
    /// Refresh tokens in force, by token: their user.
    refresh: Mutex<HashMap<String, String>>,
    /// Every access and refresh token handed out.
    issued: Mutex<Vec<String>>,
    next: AtomicUsize,
    code_grants: AtomicUsize,
    refreshes: AtomicUsize,
    pkce_failures: AtomicUsize,
    refuse_refresh: AtomicBool,
    /// Answers 401 `invalid_client` to everything (a rotated client secret).
    reject_client: AtomicBool,
    expires_in: AtomicU64,
    refresh_delay_ms: AtomicU64,
}

struct Provider {
    addr: SocketAddr,
    state: Arc<ProviderState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64url_sha256(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

fn pairs(text: &str) -> HashMap<String, String> {
    warden::percent::form_fields(text.as_bytes())
        .into_iter()
        .collect()
}

fn reply(status: u16, body: Value) -> Response<TestBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

impl Provider {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProviderState::default());
        state.expires_in.store(3600, Ordering::SeqCst);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
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
        Self { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }
}

fn issue(state: &ProviderState, user: &str) -> Value {
    let n = state.next.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("at-{user}-{n}-x7");
    let refresh = format!("rt-{user}-{n}-y8");
    state
        .refresh
        .lock()
        .unwrap()
        .insert(refresh.clone(), user.to_owned());
    state
        .issued
        .lock()
        .unwrap()
        .extend([access.clone(), refresh.clone()]);
    json!({
        "access_token": access,
        "token_type": "bearer",
        "refresh_token": refresh,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "scope": "repo read:user",
    })
}

async fn answer(state: &ProviderState, request: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    if parts.method == Method::GET && parts.uri.path() == "/authorize" {
        let query = pairs(parts.uri.query().unwrap_or(""));
        let ok = query.get("response_type").map(String::as_str) == Some("code")
            && query.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && query.get("code_challenge_method").map(String::as_str) == Some("S256")
            && query.get("scope").map(String::as_str) == Some("repo read:user");
        let (Some(redirect), Some(challenge), Some(user)) = (
            query.get("redirect_uri"),
            query.get("code_challenge"),
            query.get("login"),
        ) else {
            return reply(400, json!({"error": "invalid_request"}));
        };
        let location = if !ok {
            format!("{redirect}?error=invalid_request")
        } else if user == "refuses" {
            format!(
                "{redirect}?error=access_denied&state={}",
                query.get("state").cloned().unwrap_or_default()
            )
        } else {
            let code = format!("code-{}", state.next.fetch_add(1, Ordering::SeqCst));
            state.codes.lock().unwrap().insert(
                code.clone(),
                Code {
                    user: user.clone(),
                    challenge: challenge.clone(),
                    redirect_uri: redirect.clone(),
                },
            );
            format!(
                "{redirect}?code={code}&state={}",
                warden::percent::encode(query.get("state").map(String::as_str).unwrap_or(""))
            )
        };
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::FOUND;
        response
            .headers_mut()
            .insert("location", location.parse().unwrap());
        return response;
    }
    if parts.method != Method::POST || parts.uri.path() != "/token" {
        return reply(404, json!({"error": "not_found"}));
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
        || state.reject_client.load(Ordering::SeqCst)
    {
        return reply(401, json!({"error": "invalid_client"}));
    }
    let body = body.collect().await.unwrap().to_bytes();
    let form = pairs(std::str::from_utf8(&body).unwrap());
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form
                .get("code")
                .and_then(|c| state.codes.lock().unwrap().remove(c));
            let Some(code) = code else {
                return reply(400, json!({"error": "invalid_grant"}));
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            if b64url_sha256(&verifier) != code.challenge {
                state.pkce_failures.fetch_add(1, Ordering::SeqCst);
                return reply(400, json!({"error": "invalid_grant"}));
            }
            if form.get("redirect_uri") != Some(&code.redirect_uri) {
                return reply(400, json!({"error": "invalid_grant"}));
            }
            state.code_grants.fetch_add(1, Ordering::SeqCst);
            reply(200, issue(state, &code.user))
        }
        Some("refresh_token") => {
            let delay = state.refresh_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            state.refreshes.fetch_add(1, Ordering::SeqCst);
            if state.refuse_refresh.load(Ordering::SeqCst) {
                return reply(400, json!({"error": "invalid_grant"}));
            }
            // Rotation: a refresh token works once.
            let user = form
                .get("refresh_token")
                .and_then(|t| state.refresh.lock().unwrap().remove(t));
            match user {
                Some(user) => reply(200, issue(state, &user)),
                None => reply(400, json!({"error": "invalid_grant"})),
            }
        }
        _ => reply(400, json!({"error": "unsupported_grant_type"})),
    }
}

// ---------------------------------------------------------------------------
// The gateway

struct Setup {
    dir: TempDir,
    key: TestKey,
    key_file: TempFile,
    provider: Provider,
    upstream: RecordingUpstream,
}

impl Setup {
    async fn new() -> Self {
        warden::crypto::install_providers();
        let dir = TempDir::new("connections");
        let master = MasterKey::generate().unwrap();
        std::fs::write(dir.join("master.key"), master.to_base64().as_bytes()).unwrap();
        Store::new(dir.join("creds.store"), master)
            .create()
            .unwrap();
        std::fs::write(dir.join("client.secret"), CLIENT_SECRET).unwrap();
        let key = TestKey::generate("users-hs256", Algorithm::HS256);
        let key_file = key.file();
        Self {
            dir,
            key,
            key_file,
            provider: Provider::start().await,
            upstream: RecordingUpstream::start(Behaviour::ok()).await,
        }
    }

    fn toml(&self, shared_state: &str) -> String {
        config(
            "",
            &format!(
                r#"{entry}
[issuer]
iss = "{ISS}"
aud = ["warden"]

[credentials]
store = "{store}"
master_key_file = "{master}"

{shared_state}

[[oauth_connections]]
name = "github"
authorize_url = "{authorize}"
token_url = "{token}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
scopes = ["repo", "read:user"]
redirect_url = "{PUBLIC_HOST}/oauth/github/callback"

[[oauth_connections]]
name = "gitlab"
authorize_url = "{authorize}"
token_url = "{token}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
scopes = ["repo", "read:user"]
redirect_url = "{PUBLIC_HOST}/oauth/gitlab/callback"

[[routes]]
name = "repos"
path_prefix = "/repos"
upstream = "{up}"
inject = {{ connection = "github" }}

[[routes]]
name = "projects"
path_prefix = "/projects"
upstream = "{up}"
inject = {{ connection = "gitlab", header = "X-Gitlab-Token" }}
"#,
                entry = self.key.config_entry(&self.key_file),
                store = self.dir.join_str("creds.store"),
                master = self.dir.join_str("master.key"),
                secret = self.dir.join_str("client.secret"),
                authorize = self.provider.url("/authorize"),
                token = self.provider.url("/token"),
                up = self.upstream.url(),
            ),
        )
    }

    fn token(&self, sub: &str) -> String {
        let now = unix_now();
        self.key.token(&json!({
            "iss": ISS, "aud": "warden", "sub": sub, "iat": now, "exp": now + 600,
        }))
    }

    async fn gateway(&self) -> (TestGateway, AuditCapture) {
        let (writer, audit) = audit_capture(1024);
        let options = StartOptions {
            audit_writer: Some(writer),
            ..StartOptions::default()
        };
        (spawn_gateway_with(&self.toml(""), options).await, audit)
    }
}

async fn call(
    base: &str,
    path: &str,
    method: Method,
    token: Option<&str>,
    accept_json: bool,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if accept_json {
        builder = builder.header("accept", "application/json");
    }
    send(builder.body(empty()).unwrap()).await
}

/// Runs the loop for the holder of `token` at connection `name`, signing
/// in at the provider as `login`; returns the callback's answer.
async fn run_loop(base: &str, provider: &Provider, name: &str, token: &str, login: &str) -> Reply {
    let started = call(
        base,
        &format!("/oauth/{name}/connect"),
        Method::POST,
        Some(token),
        false,
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    let authorize = started.json()["authorize_url"].as_str().unwrap().to_owned();
    assert!(
        authorize.starts_with(&provider.url("/authorize?")),
        "{authorize}"
    );
    let redirected = get(&format!("{authorize}&login={login}")).await;
    assert_eq!(redirected.status, StatusCode::FOUND);
    let location = redirected.header("location").unwrap().to_owned();
    let callback = location.strip_prefix(PUBLIC_HOST).unwrap_or_else(|| {
        panic!("the provider sends the browser to the redirect_url: {location}")
    });
    call(base, callback, Method::GET, None, true).await
}

fn bearer_seen(upstream: &RecordingUpstream) -> String {
    upstream
        .requests()
        .pop()
        .and_then(|r| r.header("authorization").map(str::to_owned))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The loop

#[tokio::test]
async fn two_users_connect_and_each_upstream_call_carries_their_own_token() {
    let setup = Setup::new().await;
    let (gateway, audit) = setup.gateway().await;
    let base = gateway.url("");
    let (alice, bob) = (setup.token("alice"), setup.token("bob"));

    // Before connecting: the client's cue to run the loop.
    let refused = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_json_error(&refused, 401, "connection_required");
    assert_eq!(refused.json()["connect"], "/oauth/github/connect");
    let challenge = refused.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"connection_required\""),
        "{challenge}"
    );
    assert!(
        setup.upstream.requests().is_empty(),
        "the upstream is never called without the token"
    );

    let linked = run_loop(&base, &setup.provider, "github", &alice, "alice-gh").await;
    assert_eq!(linked.status, StatusCode::OK, "{:?}", linked.body);
    assert_eq!(linked.json()["connected"], "github");
    assert!(!linked.execution_key().is_empty());
    let linked = run_loop(&base, &setup.provider, "github", &bob, "bob-gh").await;
    assert_eq!(linked.status, StatusCode::OK);
    assert_eq!(setup.provider.state.code_grants.load(Ordering::SeqCst), 2);
    assert_eq!(setup.provider.state.pkce_failures.load(Ordering::SeqCst), 0);

    let ok = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_eq!(ok.status, StatusCode::OK);
    let alice_token = bearer_seen(&setup.upstream);
    assert!(
        alice_token.starts_with("Bearer at-alice-gh-"),
        "{alice_token}"
    );
    let ok = call(&base, "/repos/1", Method::GET, Some(&bob), false).await;
    assert_eq!(ok.status, StatusCode::OK);
    let bob_token = bearer_seen(&setup.upstream);
    assert!(bob_token.starts_with("Bearer at-bob-gh-"), "{bob_token}");
    // The client's own token never reaches the upstream.
    assert!(
        !setup
            .upstream
            .heads()
            .iter()
            .any(|h| h.contains(&alice) || h.contains(&bob))
    );

    // The other connection is its own: not connected there yet.
    let other = call(&base, "/projects/1", Method::GET, Some(&alice), false).await;
    assert_json_error(&other, 401, "connection_required");
    assert_eq!(other.json()["connect"], "/oauth/gitlab/connect");

    audit
        .wait_for(|e| {
            e["event"] == "connection_linked" && e["sub"] == "bob" && e["connection"] == "github"
        })
        .await;
    audit
        .wait_for(|e| e["event"] == "connection_required" && e["connection"] == "gitlab")
        .await;

    // The admin list: names, subjects, times; never a token.
    let admin_token = setup.key.token(&json!({
        "iss": ISS, "aud": "warden", "sub": "ops", "scope": "warden:admin", "exp": unix_now() + 600,
    }));
    let listed = get_with(
        &gateway.admin_url("/admin/connections"),
        &[("authorization", &format!("Bearer {admin_token}"))],
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed_json = listed.json();
    let subjects: Vec<&str> = listed_json["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sub"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["alice", "bob"]);
    let text = String::from_utf8_lossy(&listed.body).to_string();
    let events = audit.lines().join("\n");
    for secret in setup.provider.issued() {
        assert!(!text.contains(&secret), "the admin answer shows a token");
        assert!(!events.contains(&secret), "an audit event holds a token");
    }
    assert!(!text.contains("sealed"));
}

#[tokio::test]
async fn a_state_works_once_for_its_own_connection_and_a_refusal_stores_nothing() {
    let setup = Setup::new().await;
    let (gateway, _audit) = setup.gateway().await;
    let base = gateway.url("");
    let alice = setup.token("alice");

    // Replayed: the second use of a callback URL is refused.
    let started = call(
        &base,
        "/oauth/github/connect",
        Method::POST,
        Some(&alice),
        false,
    )
    .await;
    let authorize = started.json()["authorize_url"].as_str().unwrap().to_owned();
    let location = get(&format!("{authorize}&login=alice-gh"))
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let callback = location.strip_prefix(PUBLIC_HOST).unwrap().to_owned();
    assert_eq!(
        call(&base, &callback, Method::GET, None, true).await.status,
        StatusCode::OK
    );
    let replayed = call(&base, &callback, Method::GET, None, true).await;
    assert_json_error(&replayed, 400, "invalid_state");

    // A browser gets a page, not JSON, and nothing of it is script.
    let page = call(&base, &callback, Method::GET, None, false).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));

    // Foreign: a state the gitlab loop issued, brought to github's callback.
    let started = call(
        &base,
        "/oauth/gitlab/connect",
        Method::POST,
        Some(&alice),
        false,
    )
    .await;
    let authorize = started.json()["authorize_url"].as_str().unwrap().to_owned();
    let location = get(&format!("{authorize}&login=alice-gl"))
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let foreign = location
        .strip_prefix(PUBLIC_HOST)
        .unwrap()
        .replace("/oauth/gitlab/callback", "/oauth/github/callback");
    let refused = call(&base, &foreign, Method::GET, None, true).await;
    assert_json_error(&refused, 400, "invalid_state");

    // Unknown and missing states.
    let unknown = call(
        &base,
        "/oauth/github/callback?code=code-1&state=forged",
        Method::GET,
        None,
        true,
    )
    .await;
    assert_json_error(&unknown, 400, "invalid_state");
    let missing = call(
        &base,
        "/oauth/github/callback?code=code-1",
        Method::GET,
        None,
        true,
    )
    .await;
    assert_json_error(&missing, 400, "invalid_request");

    // The provider says no: a page that says so, nothing stored.
    let refusal = run_loop(
        &base,
        &setup.provider,
        "github",
        &setup.token("carol"),
        "refuses",
    )
    .await;
    assert_json_error(&refusal, 400, "access_denied");
    let carol = call(
        &base,
        "/repos/1",
        Method::GET,
        Some(&setup.token("carol")),
        false,
    )
    .await;
    assert_json_error(&carol, 401, "connection_required");

    // Only the one good exchange reached the provider.
    assert_eq!(setup.provider.state.code_grants.load(Ordering::SeqCst), 1);

    // The loop's endpoints need the user's token and their own methods.
    let anonymous = call(&base, "/oauth/github/connect", Method::POST, None, false).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let wrong = call(
        &base,
        "/oauth/github/connect",
        Method::GET,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("POST"));
    let no_sub = setup
        .key
        .token(&json!({"iss": ISS, "aud": "warden", "exp": unix_now() + 600}));
    let refused = call(
        &base,
        "/oauth/github/connect",
        Method::POST,
        Some(&no_sub),
        false,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn twenty_requests_on_a_token_about_to_expire_share_one_refresh_and_a_restart_keeps_the_rotated_one()
 {
    let setup = Setup::new().await;
    let (gateway, audit) = setup.gateway().await;
    let base = gateway.url("");
    let alice = setup.token("alice");
    // Granted with three seconds to live: too little to inject.
    setup.provider.state.expires_in.store(3, Ordering::SeqCst);
    assert_eq!(
        run_loop(&base, &setup.provider, "github", &alice, "alice-gh")
            .await
            .status,
        StatusCode::OK
    );
    setup
        .provider
        .state
        .refresh_delay_ms
        .store(300, Ordering::SeqCst);

    let calls = (0..20).map(|_| {
        let (base, alice) = (base.clone(), alice.clone());
        tokio::spawn(async move { call(&base, "/repos/1", Method::GET, Some(&alice), false).await })
    });
    for reply in futures_util::future::join_all(calls).await {
        assert_eq!(reply.unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        setup.provider.state.refreshes.load(Ordering::SeqCst),
        1,
        "one refresh for 20 requests"
    );
    let seen: Vec<String> = setup
        .upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(seen.len(), 20);
    assert!(
        seen.iter().all(|t| t == &seen[0]),
        "all use the refreshed token: {seen:?}"
    );
    audit
        .wait_for(|e| e["event"] == "connection_refreshed" && e["sub"] == "alice")
        .await;
    let metrics = scrape(gateway.admin).await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"warden_connection_refresh_total{connection="github",result="ok"}"#
        ),
        1.0
    );
    gateway.shutdown().await;

    // The refreshed token lives three seconds too: after a restart the
    // stored record is refreshed again, with the refresh token the provider
    // rotated (the first one no longer works there).
    setup
        .provider
        .state
        .expires_in
        .store(3600, Ordering::SeqCst);
    let (gateway, _audit) = setup.gateway().await;
    let after = call(
        &gateway.url(""),
        "/repos/1",
        Method::GET,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
    assert_eq!(setup.provider.state.refreshes.load(Ordering::SeqCst), 2);
    assert_ne!(bearer_seen(&setup.upstream), seen[0]);
}

#[tokio::test]
async fn a_refused_refresh_answers_connection_required_and_removes_the_record() {
    let setup = Setup::new().await;
    let (gateway, audit) = setup.gateway().await;
    let base = gateway.url("");
    let alice = setup.token("alice");
    setup.provider.state.expires_in.store(3, Ordering::SeqCst);
    assert_eq!(
        run_loop(&base, &setup.provider, "github", &alice, "alice-gh")
            .await
            .status,
        StatusCode::OK
    );

    // The provider refuses warden itself (its client secret changed): not
    // the user's fault, so 502 and the record stays.
    setup
        .provider
        .state
        .reject_client
        .store(true, Ordering::SeqCst);
    let failed = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_json_error(&failed, 502, "upstream_credential_unavailable");
    setup
        .provider
        .state
        .reject_client
        .store(false, Ordering::SeqCst);
    let metrics = scrape(gateway.admin).await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"warden_connection_refresh_total{connection="github",result="error"}"#
        ),
        1.0
    );

    // The provider refuses the user's grant: the user must connect again.
    setup
        .provider
        .state
        .refuse_refresh
        .store(true, Ordering::SeqCst);

    let refused = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_json_error(&refused, 401, "connection_required");
    assert!(
        setup.upstream.requests().is_empty(),
        "never an expired token injected"
    );
    audit
        .wait_for(|e| e["event"] == "connection_required" && e["reason"] == "refresh_refused")
        .await;
    audit
        .wait_for(|e| e["event"] == "connection_removed" && e["by"] == "provider")
        .await;
    // Gone: the next call does not ask the provider again.
    let again = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_json_error(&again, 401, "connection_required");
    assert_eq!(setup.provider.state.refreshes.load(Ordering::SeqCst), 1);
    let metrics = scrape(gateway.admin).await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"warden_connection_refresh_total{connection="github",result="refused"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_user_unlinks_and_a_record_copied_to_another_subject_does_not_open() {
    let setup = Setup::new().await;
    let (gateway, audit) = setup.gateway().await;
    let base = gateway.url("");
    let (alice, mallory) = (setup.token("alice"), setup.token("mallory"));
    assert_eq!(
        run_loop(&base, &setup.provider, "github", &alice, "alice-gh")
            .await
            .status,
        StatusCode::OK
    );
    gateway.shutdown().await;

    // Mallory copies Alice's record under her own name in the vault file,
    // once relabelled as hers, once byte for byte (under Trudy's key).
    let trudy = setup.token("trudy");
    let path = {
        use warden::oauth_connections::vault::{RecordId, Vault, embedded_path};
        let path = embedded_path(&setup.dir.join("creds.store"));
        let runtime_vault = Vault::open_embedded(&path).unwrap();
        let mut record = runtime_vault.list().await.unwrap().pop().unwrap();
        assert_eq!(record.id.sub, "alice");
        record.id = RecordId {
            sub: "mallory".into(),
            ..record.id
        };
        runtime_vault.put(&record).await.unwrap();
        path
    };
    {
        use redb::ReadableTable;
        const TABLE: redb::TableDefinition<'static, &str, &[u8]> =
            redb::TableDefinition::new("connections");
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .open(&path)
            .unwrap();
        let write = db.begin_write().unwrap();
        {
            let mut table = write.open_table(TABLE).unwrap();
            let alice_key = json!(["github", ISS, "alice"]).to_string();
            let bytes = table
                .get(alice_key.as_str())
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let trudy_key = json!(["github", ISS, "trudy"]).to_string();
            table.insert(trudy_key.as_str(), bytes.as_slice()).unwrap();
        }
        write.commit().unwrap();
    }
    let (gateway, audit2) = setup.gateway().await;
    let base = gateway.url("");
    let copied = call(&base, "/repos/1", Method::GET, Some(&mallory), false).await;
    assert_json_error(&copied, 401, "connection_required");
    let verbatim = call(&base, "/repos/1", Method::GET, Some(&trudy), false).await;
    assert_json_error(&verbatim, 401, "connection_required");
    assert!(setup.upstream.requests().is_empty());
    let ok = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "the restart kept Alice's connection"
    );

    // Alice unlinks: her next call needs the loop again.
    let removed = call(
        &base,
        "/oauth/github/connection",
        Method::DELETE,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.json()["removed"], true);
    let after = call(&base, "/repos/1", Method::GET, Some(&alice), false).await;
    assert_json_error(&after, 401, "connection_required");
    let twice = call(
        &base,
        "/oauth/github/connection",
        Method::DELETE,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    audit2
        .wait_for(|e| {
            e["event"] == "connection_removed" && e["by"] == "user" && e["sub"] == "alice"
        })
        .await;
    drop(audit);
}

#[test]
fn the_config_check_refuses_connections_that_cannot_work() {
    let bad = |snippet: &str, wanted: &str| {
        let toml = format!(
            r#"[server]
listen = "127.0.0.1:0"
[[keys]]
kid = "k"
alg = "HS256"
secret_file = "/dev/null"
[issuer]
iss = "https://i"
aud = ["a"]
{snippet}"#
        );
        let err = warden::Config::from_toml(&toml, "gateway.toml")
            .expect_err(wanted)
            .to_string();
        assert!(err.contains(wanted), "wanted {wanted:?} in:\n{err}");
    };
    let connection = |extra: &str| {
        format!(
            r#"[credentials]
store = "c.store"
master_key_env = "UNUSED_MASTER"
[[oauth_connections]]
name = "gh"
authorize_url = "https://p.example/authorize"
token_url = "https://p.example/token"
client_id = "c"
client_secret_env = "PATH"
{extra}"#
        )
    };
    bad(
        &connection(r#"redirect_url = "https://gw.example/elsewhere""#),
        "its path must be /oauth/gh/callback",
    );
    bad(
        &connection(
            "redirect_url = \"https://gw.example/oauth/gh/callback\"\nauthorize_params = { state = \"x\" }",
        ),
        "\"state\" is set by warden itself",
    );
    bad(
        &connection(
            "redirect_url = \"https://gw.example/oauth/gh/callback\"\ntoken_endpoint_auth = \"private_key_jwt\"",
        ),
        "not a client authentication method",
    );
    bad(
        &connection(r#"redirect_url = "http://gw.example/oauth/gh/callback""#),
        "must be an https:// URL",
    );
    bad(
        &connection(
            "redirect_url = \"https://gw.example/oauth/gh/callback\"\n[[routes]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"none\"\ninject = { connection = \"gh\" }",
        ),
        "the route is public",
    );
    bad(
        &connection(
            "redirect_url = \"https://gw.example/oauth/gh/callback\"\n[[routes]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"http://127.0.0.1:1\"\ninject = { connection = \"gitlab\" }",
        ),
        "no [[oauth_connections]] entry is named \"gitlab\"",
    );
    bad(
        "[[oauth_connections]]\nname = \"gh\"\nauthorize_url = \"https://p.example/a\"\ntoken_url = \"https://p.example/t\"\nclient_id = \"c\"\nclient_secret_env = \"WARDEN_TEST_SURELY_UNSET_SECRET\"\nredirect_url = \"https://gw.example/oauth/gh/callback\"",
        "WARDEN_TEST_SURELY_UNSET_SECRET is not set",
    );
    bad(
        "[[oauth_connections]]\nname = \"gh\"\nauthorize_url = \"https://p.example/a\"\ntoken_url = \"https://p.example/t\"\nclient_id = \"c\"\nclient_secret_env = \"PATH\"\nredirect_url = \"https://gw.example/oauth/gh/callback\"",
        "[credentials] is not configured",
    );
}

// ---------------------------------------------------------------------------
// The fleet: two warden processes on one Redis

#[tokio::test]
async fn with_redis_a_connection_made_through_one_replica_is_used_by_the_other() {
    let setup = Setup::new().await;
    let redis = RedisServer::start().await;
    let toml = setup.toml(
        "[shared_state]\nbackend = \"redis\"\nurl_env = \"CONNECTIONS_REDIS_URL\"\nkey_prefix = \"conn-test:\"\ntimeout = \"500ms\"\n\n[log]\nlevel = \"debug\"\nformat = \"json\"",
    );
    let url = redis.url();
    let env = [("CONNECTIONS_REDIS_URL", url.as_str())];
    let mut a = spawn_warden_with_env(&toml, &env).await;
    let mut b = spawn_warden_with_env(&toml, &env).await;
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let alice = setup.token("alice");

    // The loop starts on A and ends on B: the state is in Redis.
    let started = call(
        &base_a,
        "/oauth/github/connect",
        Method::POST,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(started.status, StatusCode::OK);
    let authorize = started.json()["authorize_url"].as_str().unwrap().to_owned();
    let location = get(&format!("{authorize}&login=alice-gh"))
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let callback = location.strip_prefix(PUBLIC_HOST).unwrap().to_owned();
    let linked = call(&base_b, &callback, Method::GET, None, true).await;
    assert_eq!(linked.status, StatusCode::OK, "{:?}", linked.body);
    // And it is single-use fleet-wide.
    assert_json_error(
        &call(&base_a, &callback, Method::GET, None, true).await,
        400,
        "invalid_state",
    );

    // An expired loop: Redis lets the state's key expire (its TTL cut to
    // 1 ms here, instead of waiting ten minutes); the callback refuses it.
    let bob = setup.token("bob");
    let started = call(
        &base_a,
        "/oauth/github/connect",
        Method::POST,
        Some(&bob),
        false,
    )
    .await;
    let authorize = started.json()["authorize_url"].as_str().unwrap().to_owned();
    let state = pairs(authorize.split_once('?').unwrap().1)["state"].clone();
    let key = format!(
        "conn-test:connections:pending:{}",
        crate::common::sha256_hex(state.as_bytes())
    );
    assert_eq!(redis.command(&["PEXPIRE", &key, "1"]).await, ":1");
    while redis.command(&["EXISTS", &key]).await != ":0" {
        tokio::task::yield_now().await;
    }
    let location = get(&format!("{authorize}&login=bob-gh"))
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let callback = location.strip_prefix(PUBLIC_HOST).unwrap().to_owned();
    assert_json_error(
        &call(&base_b, &callback, Method::GET, None, true).await,
        400,
        "invalid_state",
    );

    for base in [&base_a, &base_b] {
        let ok = call(base, "/repos/1", Method::GET, Some(&alice), false).await;
        assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
        assert!(bearer_seen(&setup.upstream).starts_with("Bearer at-alice-gh-"));
    }
    // Unlinked on B: B refuses at once (A within a minute, when it reads the vault again).
    let removed = call(
        &base_b,
        "/oauth/github/connection",
        Method::DELETE,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK);
    let fresh = setup.token("alice");
    let on_b = call(&base_b, "/repos/1", Method::GET, Some(&fresh), false).await;
    assert_json_error(&on_b, 401, "connection_required");

    // No token, and not the Redis password, in any log line of either.
    a.sigterm();
    b.sigterm();
    a.wait_exit().await;
    b.wait_exit().await;
    let lines: Vec<String> = a
        .lines_so_far()
        .into_iter()
        .chain(b.lines_so_far())
        .map(|l| l.to_string())
        .collect();
    assert!(lines.len() > 4, "the replicas logged");
    for secret in setup
        .provider
        .issued()
        .iter()
        .map(String::as_str)
        .chain([REDIS_PASSWORD, CLIENT_SECRET])
    {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "a log line holds a secret"
        );
    }
}

// The CLI over the embedded vault.
#[tokio::test]
async fn warden_connections_lists_and_removes_without_showing_a_token() {
    let setup = Setup::new().await;
    let (gateway, _audit) = setup.gateway().await;
    let base = gateway.url("");
    let alice = setup.token("alice");
    assert_eq!(
        run_loop(&base, &setup.provider, "github", &alice, "alice-gh")
            .await
            .status,
        StatusCode::OK
    );
    let file = ConfigFile::new(&setup.toml(""));
    let listed = warden_command(&["connections", "list", "--config", file.path_str()])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let out = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(out.contains("github") && out.contains("alice"), "{out}");
    for secret in setup.provider.issued() {
        assert!(!out.contains(&secret));
    }
    let removed = warden_command(&[
        "connections",
        "remove",
        "github",
        "alice",
        "--config",
        file.path_str(),
    ])
    .output()
    .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let again = warden_command(&[
        "connections",
        "remove",
        "github",
        "alice",
        "--config",
        file.path_str(),
    ])
    .output()
    .unwrap();
    assert!(!again.status.success());
}

#[tokio::test]
async fn an_upstream_401_refreshes_once_and_a_rotated_master_key_still_opens_every_record() {
    let setup = Setup::new().await;
    // The upstream refuses the first token it sees, and takes any other.
    let refused_once: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = refused_once.clone();
    let upstream = ScriptedUpstream::start(Arc::new(move |request: &Captured| {
        let token = request.header("authorization").unwrap_or("").to_owned();
        let mut first = seen.lock().unwrap();
        match first.as_ref() {
            None => {
                *first = Some(token);
                (401, "token revoked at the provider\n".into())
            }
            Some(refused) if *refused == token => (401, "token revoked at the provider\n".into()),
            Some(_) => (200, "ok\n".into()),
        }
    }))
    .await;
    let toml = setup
        .toml("")
        .replace(&setup.upstream.url(), &upstream.url());
    let (writer, _audit) = audit_capture(1024);
    let options = StartOptions {
        audit_writer: Some(writer),
        ..StartOptions::default()
    };
    let gateway = spawn_gateway_with(&toml, options).await;
    let base = gateway.url("");
    let alice = setup.token("alice");
    assert_eq!(
        run_loop(&base, &setup.provider, "github", &alice, "alice-gh")
            .await
            .status,
        StatusCode::OK
    );

    let reply = call(&base, "/repos/1", Method::POST, Some(&alice), false).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "sent again with a refreshed token"
    );
    assert_eq!(setup.provider.state.refreshes.load(Ordering::SeqCst), 1);
    let tokens: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    gateway.shutdown().await;

    // Rotate the master key with the CLI: the records are re-sealed.
    let file = ConfigFile::new(&toml);
    let rotated = warden_command(&[
        "credentials",
        "rotate-master-key",
        "--config",
        file.path_str(),
    ])
    .output()
    .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let out = String::from_utf8_lossy(&rotated.stdout).to_string();
    let new_key = out.lines().last().unwrap().trim().to_owned();
    std::fs::write(setup.dir.join("master.key"), &new_key).unwrap();
    let gateway = spawn_gateway(&toml).await;
    let after = call(
        &gateway.url(""),
        "/repos/1",
        Method::GET,
        Some(&alice),
        false,
    )
    .await;
    assert_eq!(
        after.status,
        StatusCode::OK,
        "the record opens under the new key: {:?}",
        after.body
    );
    assert_eq!(
        setup.provider.state.refreshes.load(Ordering::SeqCst),
        1,
        "no new loop, no refresh"
    );
}

#[tokio::test]
async fn a_user_cannot_start_more_than_ten_sign_ins_in_ten_minutes() {
    let setup = Setup::new().await;
    let (gateway, _audit) = setup.gateway().await;
    let base = gateway.url("");
    let alice = setup.token("alice");
    for _ in 0..10 {
        let started = call(
            &base,
            "/oauth/github/connect",
            Method::POST,
            Some(&alice),
            false,
        )
        .await;
        assert_eq!(started.status, StatusCode::OK);
    }
    let refused = call(
        &base,
        "/oauth/github/connect",
        Method::POST,
        Some(&alice),
        false,
    )
    .await;
    assert_json_error(&refused, 429, "too_many_pending_connections");
    assert_eq!(refused.header("retry-after"), Some("600"));
    // Another user is not held back.
    let bob = call(
        &base,
        "/oauth/github/connect",
        Method::POST,
        Some(&setup.token("bob")),
        false,
    )
    .await;
    assert_eq!(bob.status, StatusCode::OK);
}

#[tokio::test]
async fn with_redis_two_replicas_refreshing_the_same_user_ask_the_provider_once() {
    let setup = Setup::new().await;
    let redis = RedisServer::start().await;
    let toml = setup.toml(
        "[shared_state]\nbackend = \"redis\"\nurl_env = \"CONNECTIONS_REDIS_URL\"\nkey_prefix = \"conn-race:\"\ntimeout = \"500ms\"",
    );
    let url = redis.url();
    let env = [("CONNECTIONS_REDIS_URL", url.as_str())];
    let a = spawn_warden_with_env(&toml, &env).await;
    let b = spawn_warden_with_env(&toml, &env).await;
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let alice = setup.token("alice");
    // Linked with three seconds to live: too little to inject, on both.
    setup.provider.state.expires_in.store(3, Ordering::SeqCst);
    let linked = run_loop(&base_a, &setup.provider, "github", &alice, "alice-gh").await;
    assert_eq!(linked.status, StatusCode::OK);
    setup
        .provider
        .state
        .expires_in
        .store(3600, Ordering::SeqCst);
    setup
        .provider
        .state
        .refresh_delay_ms
        .store(600, Ordering::SeqCst);

    let (on_a, on_b) = tokio::join!(
        call(&base_a, "/repos/1", Method::GET, Some(&alice), false),
        call(&base_b, "/repos/1", Method::GET, Some(&alice), false),
    );
    assert_eq!(on_a.status, StatusCode::OK, "{:?}", on_a.body);
    assert_eq!(on_b.status, StatusCode::OK, "{:?}", on_b.body);
    assert_eq!(
        setup.provider.state.refreshes.load(Ordering::SeqCst),
        1,
        "one refresh for the fleet"
    );
    let tokens: Vec<String> = setup
        .upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[0], tokens[1],
        "both replicas use the one refreshed token"
    );
}
