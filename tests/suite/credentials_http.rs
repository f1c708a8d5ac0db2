//! Upstream credentials (SPEC §6), through the real gateway and the real
//! `warden credentials` commands:
//!
//! - every kind and location, as a recording upstream receives it;
//! - OAuth2 clients against a real token endpoint (a small hyper server of
//!   this file that counts requests, checks the grant and the client's
//!   authentication, and can fail, be slow or rotate refresh tokens);
//! - the encrypted store, through the library and the CLI;
//! - the admin API;
//! - no secret in any log line of the real binary at level debug, nor in
//!   what `builtin:echo` shows the client.
//!
//! Stores are made here with the library, under a master key in a file
//! (`master_key_file`: environment variables are process-global and the
//! tests run in parallel).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use warden::StartOptions;
use warden::clock::unix_now;
use warden::credentials::store::{MasterKey, Store, StoreContents};
use warden::credentials::{
    ClientAuth, Credential, CredentialError, CredentialInput, Kind, Location,
};
use warden::secret::SecretString;

const ISS: &str = "https://warden.test";

// ---------------------------------------------------------------------------
// Stores

/// A store in a directory of its own, its master key in a file beside it.
struct Creds {
    dir: TempDir,
    key: MasterKey,
    store: Store,
}

impl Creds {
    /// An empty store under a new key.
    fn new() -> Self {
        let dir = TempDir::new("creds");
        let key = MasterKey::generate().unwrap();
        std::fs::write(dir.join("master.key"), key.to_base64().as_bytes()).unwrap();
        let store = Store::new(dir.join("creds.store"), key.clone());
        store.create().unwrap();
        Self { dir, key, store }
    }

    /// Stores `kind` as `name`, at `location` (or its kind's default).
    fn put(&self, name: &str, kind: Kind, location: Option<Location>) {
        let credential = Credential::new(kind, location);
        self.store
            .update(|c| c.credentials.insert(name.to_owned(), credential))
            .unwrap();
    }

    fn read(&self) -> StoreContents {
        self.store.read().unwrap()
    }

    fn store_path(&self) -> String {
        self.dir.join_str("creds.store")
    }

    fn key_path(&self) -> String {
        self.dir.join_str("master.key")
    }

    /// The `[credentials]` section for this store.
    fn section(&self) -> String {
        format!(
            "\n[credentials]\nstore = \"{}\"\nmaster_key_file = \"{}\"\n",
            self.store_path(),
            self.key_path()
        )
    }
}

fn api_key(value: &str) -> Kind {
    Kind::ApiKey {
        value: SecretString::new(value),
    }
}

fn secret(value: &str) -> Kind {
    Kind::Secret {
        value: SecretString::new(value),
    }
}

fn basic(username: &str, password: &str) -> Kind {
    Kind::Basic {
        username: username.into(),
        password: SecretString::new(password),
    }
}

fn bearer(token: &str) -> Kind {
    Kind::Bearer {
        token: SecretString::new(token),
    }
}

/// An OAuth2 client of `endpoint`, with its client id and secret.
fn oauth2(endpoint: &TokenEndpoint) -> Kind {
    Kind::Oauth2 {
        token_url: endpoint.url(),
        client_id: endpoint.state.client_id.clone(),
        client_secret: SecretString::new(endpoint.state.client_secret.clone()),
        scope: None,
        refresh_token: None,
        params: BTreeMap::new(),
        client_auth: if endpoint.state.form_auth {
            ClientAuth::Form
        } else {
            ClientAuth::Basic
        },
    }
}

/// `inject = { credential = "name", <extra> }`.
fn inject(name: &str, extra: &str) -> String {
    if extra.is_empty() {
        format!("inject = {{ credential = \"{name}\" }}")
    } else {
        format!("inject = {{ credential = \"{name}\", {extra} }}")
    }
}

/// A gateway on `creds` with `routes`.
async fn gateway_on(creds: &Creds, server_extra: &str, routes: &str) -> TestGateway {
    spawn_gateway(&config(
        server_extra,
        &format!("{}{routes}", creds.section()),
    ))
    .await
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `application/x-www-form-urlencoded` (and query) decoding.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_some() =>
            {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded pairs of a form body or query string.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// The decoded query pairs of a request target.
fn query_pairs(target: &str) -> Vec<(String, String)> {
    target
        .split_once('?')
        .map(|(_, q)| form_pairs(q))
        .unwrap_or_default()
}

/// `POST url` with a JSON (or any) body.
async fn post(url: &str, body: &str) -> Reply {
    send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(full(body.to_owned()))
            .unwrap(),
    )
    .await
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

// ---------------------------------------------------------------------------
// 1. Kinds and locations

#[tokio::test]
async fn an_api_key_arrives_as_x_api_key_replacing_the_one_the_client_sent() {
    let creds = Creds::new();
    creds.put("orders", api_key("ak-orders-123"), None);
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route("orders", "/orders", &upstream.url(), &inject("orders", "")),
    )
    .await;

    let reply = get_with(
        &gateway.url("/orders/7?x=1"),
        &[("x-api-key", "client-key"), ("x-api-key", "another")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = upstream.last();
    assert_eq!(seen.header_all("x-api-key"), vec!["ak-orders-123"]);
    assert_eq!(
        seen.target, "/orders/7?x=1",
        "the path and query are untouched"
    );
}

#[tokio::test]
async fn a_secret_arrives_in_its_custom_header_and_a_route_can_send_it_in_another() {
    let creds = Creds::new();
    creds.put(
        "partner",
        secret("partner-s3cret"),
        Some(Location::Header("X-Partner-Key".into())),
    );
    let upstream = ScriptedUpstream::ok().await;
    let routes = format!(
        "{}{}",
        route("stored", "/stored", &upstream.url(), &inject("partner", "")),
        route(
            "moved",
            "/moved",
            &upstream.url(),
            &inject("partner", "header = \"X-Other-Key\""),
        )
    );
    let gateway = gateway_on(&creds, "", &routes).await;

    let reply = get_with(
        &gateway.url("/stored"),
        &[("x-partner-key", "client-value")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(
        upstream.last().header_all("x-partner-key"),
        vec!["partner-s3cret"]
    );

    let reply = get_with(&gateway.url("/moved"), &[("x-other-key", "client-value")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = upstream.last();
    assert_eq!(seen.header_all("x-other-key"), vec!["partner-s3cret"]);
    assert_eq!(
        seen.header("x-partner-key"),
        None,
        "the route's location replaces the stored one"
    );
}

#[tokio::test]
async fn a_query_credential_replaces_the_clients_parameter_and_keeps_the_others() {
    let creds = Creds::new();
    creds.put(
        "maps",
        secret("q/s3cret v"),
        Some(Location::Query("api_key".into())),
    );
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route("maps", "/maps", &upstream.url(), &inject("maps", "")),
    )
    .await;

    let reply = get(&gateway.url("/maps/tiles?a=1&api_key=client&b=two%20words")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = upstream.last();
    assert!(seen.target.starts_with("/maps/tiles?"), "{}", seen.target);
    let pairs = query_pairs(&seen.target);
    assert_eq!(
        pairs,
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "two words".to_owned()),
            ("api_key".to_owned(), "q/s3cret v".to_owned()),
        ],
        "target {}",
        seen.target
    );

    // Without any query from the client, the parameter is added.
    get(&gateway.url("/maps/tiles")).await;
    assert_eq!(
        query_pairs(&upstream.last().target),
        vec![("api_key".to_owned(), "q/s3cret v".to_owned())]
    );
}

#[tokio::test]
async fn a_client_cannot_keep_its_own_query_value_by_percent_encoding_the_name() {
    let creds = Creds::new();
    creds.put(
        "maps",
        secret("the-real-key"),
        Some(Location::Query("api_key".into())),
    );
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route("maps", "/maps", &upstream.url(), &inject("maps", "")),
    )
    .await;

    // `api%5Fkey` is `api_key` to every query parser.
    let reply = get(&gateway.url("/maps?api%5Fkey=client-chosen&a=1")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = upstream.last();
    let values: Vec<String> = query_pairs(&seen.target)
        .into_iter()
        .filter(|(k, _)| k == "api_key")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        values,
        vec!["the-real-key"],
        "the upstream sees only the injected api_key (target {})",
        seen.target
    );
}

#[tokio::test]
async fn a_path_credential_fills_the_placeholder_percent_encoded() {
    let creds = Creds::new();
    creds.put("tenant", secret("acme/eu 1?x"), Some(Location::Path));
    let upstream = ScriptedUpstream::ok().await;
    let upstream_url = format!("{}/v1/{{credential}}/api", upstream.url());
    let gateway = gateway_on(
        &creds,
        "",
        &route("t", "/t", &upstream_url, &inject("tenant", "")),
    )
    .await;

    let reply = get(&gateway.url("/t/items?page=2")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(
        upstream.last().target,
        "/v1/acme%2Feu%201%3Fx/api/t/items?page=2"
    );
}

#[tokio::test]
async fn a_body_credential_sets_the_json_field_keeps_the_others_and_the_length_is_right() {
    let creds = Creds::new();
    creds.put("hook", api_key("body-s3cret-\u{e9}"), None);
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route(
            "hook",
            "/hook",
            &upstream.url(),
            &inject("hook", "body = \"token\""),
        ),
    )
    .await;

    let sent = json!({"token": "client-token", "order": 7, "items": [1, 2], "note": "hi"});
    let reply = post(&gateway.url("/hook"), &sent.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = upstream.last();
    assert_eq!(
        seen.json(),
        json!({"token": "body-s3cret-\u{e9}", "order": 7, "items": [1, 2], "note": "hi"})
    );
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string().as_str())
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.header("x-api-key"),
        None,
        "the body location replaces the header"
    );

    // A chunked body (no Content-Length from the client) gets one too.
    let pieces = ["{\"order\":", " 8, \"tok", "en\": null}"];
    let frames = futures_util::stream::iter(
        pieces.map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p.as_bytes())))),
    );
    let reply = send(
        Request::post(gateway.url("/hook"))
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = upstream.last();
    assert_eq!(
        seen.json(),
        json!({"order": 8, "token": "body-s3cret-\u{e9}"})
    );
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string().as_str())
    );
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_with_400_on_a_body_route() {
    let creds = Creds::new();
    creds.put(
        "hook",
        api_key("never-sent"),
        Some(Location::Body("token".into())),
    );
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route("hook", "/hook", &upstream.url(), &inject("hook", "")),
    )
    .await;

    for body in ["token=x&a=1", "[1, 2]", "\"a string\"", ""] {
        let reply = post(&gateway.url("/hook"), body).await;
        assert_json_error(&reply, 400, "invalid_request");
        assert!(!text(&reply).contains("never-sent"));
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream unchanged"
    );
}

#[tokio::test]
async fn a_chunked_body_over_max_body_bytes_on_a_body_route_is_413() {
    let creds = Creds::new();
    creds.put("hook", api_key("k"), Some(Location::Body("token".into())));
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "max_body_bytes = 1024",
        &route("hook", "/hook", &upstream.url(), &inject("hook", "")),
    )
    .await;

    // 2 KiB of a JSON object, streamed without a Content-Length.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(2048));
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = big
        .as_bytes()
        .chunks(256)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let reply = send(
        Request::post(gateway.url("/hook"))
            .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                chunks,
            ))))
            .unwrap(),
    )
    .await;
    assert_json_error(&reply, 413, "payload_too_large");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn basic_credentials_arrive_as_authorization_basic_of_user_and_password() {
    let creds = Creds::new();
    creds.put("legacy", basic("svc-user", "p@ss:w0rd"), None);
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route("legacy", "/legacy", &upstream.url(), &inject("legacy", "")),
    )
    .await;

    let reply = get(&gateway.url("/legacy")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let expected = format!("Basic {}", b64("svc-user:p@ss:w0rd"));
    assert_eq!(
        upstream.last().header_all("authorization"),
        vec![expected.clone()]
    );
}

#[tokio::test]
async fn bearer_credentials_arrive_as_authorization_bearer() {
    let creds = Creds::new();
    creds.put("bt", bearer("static-token-42"), None);
    creds.put("bt-header", bearer("static-token-43"), None);
    let upstream = ScriptedUpstream::ok().await;
    let routes = format!(
        "{}{}",
        route("bt", "/bt", &upstream.url(), &inject("bt", "")),
        route(
            "bare",
            "/bare",
            &upstream.url(),
            &inject("bt-header", "header = \"X-Token\""),
        )
    );
    let gateway = gateway_on(&creds, "", &routes).await;

    let reply = get_with(&gateway.url("/bt"), &[("authorization", "Bearer client")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(
        upstream.last().header_all("authorization"),
        vec!["Bearer static-token-42"]
    );

    // In another header the token goes bare.
    get(&gateway.url("/bare")).await;
    let seen = upstream.last();
    assert_eq!(seen.header("x-token"), Some("static-token-43"));
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn the_clients_authorization_never_reaches_an_upstream_that_gets_a_credential() {
    let creds = Creds::new();
    creds.put("k", api_key("hdr-key"), None);
    creds.put(
        "q",
        secret("query-key"),
        Some(Location::Query("key".into())),
    );
    creds.put("p", secret("path-key"), Some(Location::Path));
    creds.put("b", secret("body-key"), Some(Location::Body("key".into())));
    let upstream = ScriptedUpstream::ok().await;
    let keep = "forward_authorization = true\n";
    let path_url = format!("{}/{{credential}}", upstream.url());
    let routes = [
        route(
            "h",
            "/h",
            &upstream.url(),
            &format!("{keep}{}", inject("k", "")),
        ),
        route(
            "q",
            "/q",
            &upstream.url(),
            &format!("{keep}{}", inject("q", "")),
        ),
        route("p", "/p", &path_url, &format!("{keep}{}", inject("p", ""))),
        route(
            "b",
            "/b",
            &upstream.url(),
            &format!("{keep}{}", inject("b", "")),
        ),
        // The control: no credential, and the route keeps the client's token.
        route("plain", "/plain", &upstream.url(), keep),
    ]
    .concat();
    let gateway = gateway_on(&creds, "", &routes).await;
    let client_auth = ("authorization", "Bearer client-own-token");

    let reply = get_with(&gateway.url("/plain"), &[client_auth]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        upstream.last().header("authorization"),
        Some("Bearer client-own-token"),
        "the control route forwards it"
    );

    for path in ["/h", "/q", "/p"] {
        let reply = get_with(&gateway.url(path), &[client_auth]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", text(&reply));
        let seen = upstream.last();
        assert_eq!(seen.header("authorization"), None, "{path}: {seen:?}");
    }
    let reply = send(
        Request::post(gateway.url("/b"))
            .header("authorization", "Bearer client-own-token")
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(upstream.last().header("authorization"), None);
    assert_eq!(upstream.last().json(), json!({"key": "body-key"}));
}

#[tokio::test]
async fn a_missing_credential_is_502_upstream_credential_unavailable_with_the_execution_key() {
    let creds = Creds::new();
    let upstream = ScriptedUpstream::ok().await;
    let path_url = format!("{}/{{credential}}", upstream.url());
    let routes = format!(
        "{}{}",
        route("gone", "/gone", &upstream.url(), &inject("not-stored", "")),
        route(
            "gone-path",
            "/gp",
            &path_url,
            &inject("not-stored", "path = true")
        )
    );
    let gateway = gateway_on(&creds, "", &routes).await;

    for path in ["/gone/x", "/gp"] {
        let reply = get(&gateway.url(path)).await;
        assert_json_error(&reply, 502, "upstream_credential_unavailable");
        assert_uuid_v7(reply.execution_key());
    }
    assert!(upstream.requests().is_empty());
}

// ---------------------------------------------------------------------------
// 2. OAuth2 against a real token endpoint

/// One request the token endpoint received.
#[derive(Clone, Debug)]
struct TokenRequest {
    form: Vec<(String, String)>,
    authorization: Option<String>,
    content_type: Option<String>,
}

impl TokenRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct TokenState {
    client_id: String,
    client_secret: String,
    form_auth: bool,
    access_prefix: String,
    refresh_prefix: String,
    requests: Mutex<Vec<TokenRequest>>,
    issued: AtomicUsize,
    fail: AtomicBool,
    delay_ms: AtomicU64,
    expires_in: AtomicU64,
    rotate: AtomicBool,
}

/// A token endpoint on `127.0.0.1:0`: it checks the grant and the client's
/// authentication and answers `{"access_token": "tok-N", ...}`, N counting
/// the tokens it issued.
#[derive(Debug)]
struct TokenEndpoint {
    addr: SocketAddr,
    state: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    /// An endpoint for client `client_id`/`client_secret`, authenticated
    /// with Basic (or in the form, with `form_auth`).
    async fn start(client_id: &str, client_secret: &str, form_auth: bool) -> Self {
        Self::start_with(client_id, client_secret, form_auth, "tok-", "rt-").await
    }

    async fn start_with(
        client_id: &str,
        client_secret: &str,
        form_auth: bool,
        access_prefix: &str,
        refresh_prefix: &str,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(TokenState {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            form_auth,
            access_prefix: access_prefix.into(),
            refresh_prefix: refresh_prefix.into(),
            requests: Mutex::new(Vec::new()),
            issued: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            expires_in: AtomicU64::new(3600),
            rotate: AtomicBool::new(false),
        });
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
                        async move { Ok::<_, Infallible>(token_answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    fn fail(&self, fail: bool) {
        self.state.fail.store(fail, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    fn rotate(&self, rotate: bool) {
        self.state.rotate.store(rotate, Ordering::SeqCst);
    }
}

fn json_response(status: u16, body: &Value) -> Response<TestBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// Whether the request authenticates the endpoint's client as configured.
fn client_authenticated(state: &TokenState, request: &TokenRequest) -> bool {
    if state.form_auth {
        return request.authorization.is_none()
            && request.param("client_id") == Some(state.client_id.as_str())
            && request.param("client_secret") == Some(state.client_secret.as_str());
    }
    // RFC 6749 §2.3.1: Basic of the form-encoded id and secret.
    let Some(encoded) = request
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let Some((id, secret)) = decoded.split_once(':') else {
        return false;
    };
    form_decode(id) == state.client_id
        && form_decode(secret) == state.client_secret
        && request.param("client_secret").is_none()
}

async fn token_answer(state: &TokenState, request: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let recorded = TokenRequest {
        form: form_pairs(&String::from_utf8_lossy(&body)),
        authorization: header("authorization"),
        content_type: header("content-type"),
    };
    state.requests.lock().unwrap().push(recorded.clone());
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.fail.load(Ordering::SeqCst) {
        return json_response(500, &json!({"error": "temporarily_unavailable"}));
    }
    if parts.method != http::Method::POST {
        return json_response(405, &json!({"error": "invalid_request"}));
    }
    match recorded.param("grant_type") {
        Some("client_credentials") => {}
        Some("refresh_token")
            if recorded
                .param("refresh_token")
                .is_some_and(|t| !t.is_empty()) => {}
        Some("refresh_token") => return json_response(400, &json!({"error": "invalid_grant"})),
        _ => return json_response(400, &json!({"error": "unsupported_grant_type"})),
    }
    if !client_authenticated(state, &recorded) {
        return json_response(401, &json!({"error": "invalid_client"}));
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let mut answer = json!({
        "access_token": format!("{}{n}", state.access_prefix),
        "token_type": "Bearer",
        "expires_in": state.expires_in.load(Ordering::SeqCst),
    });
    if state.rotate.load(Ordering::SeqCst) {
        answer["refresh_token"] = format!("{}{n}", state.refresh_prefix).into();
    }
    json_response(200, &answer)
}

/// An OAuth2 client `api` of `endpoint` (changed by `change`), a route
/// `/api` injecting it into `upstream`, and the gateway.
async fn oauth_gateway(
    endpoint: &TokenEndpoint,
    upstream: &ScriptedUpstream,
    change: impl FnOnce(&mut Kind),
) -> (Creds, TestGateway) {
    let creds = Creds::new();
    let mut kind = oauth2(endpoint);
    change(&mut kind);
    creds.put("api", kind, None);
    let gateway = gateway_on(
        &creds,
        "",
        &route("api", "/api", &upstream.url(), &inject("api", "")),
    )
    .await;
    (creds, gateway)
}

/// The bearer tokens the upstream received, in order.
fn bearers(upstream: &ScriptedUpstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("(none)").to_owned())
        .collect()
}

fn refresh_sample(name: &str, result: &str) -> String {
    format!("warden_credential_refresh_total{{credential=\"{name}\",result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_on_a_cold_token_cause_exactly_one_token_request() {
    let endpoint = TokenEndpoint::start("orders-client", "cl:ient/s3cret+", false).await;
    endpoint.delay(Duration::from_millis(300));
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;

    let url = gateway.url("/api/orders");
    let replies = futures_util::future::join_all((0..100).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await })
    }))
    .await;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    }
    assert_eq!(endpoint.count(), 1, "one token request for all 100");
    let request = &endpoint.requests()[0];
    assert_eq!(request.param("grant_type"), Some("client_credentials"));
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        request
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "{request:?}"
    );
    let seen = bearers(&upstream);
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|b| b == "Bearer tok-1"), "{seen:?}");
    let metrics = scrape(gateway.admin).await;
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "ok")), 1.0);
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "error")), 0.0);
}

#[tokio::test]
async fn a_token_is_reused_then_refreshed_30_seconds_before_it_expires() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    // 32 s of life: refreshed at the latest 30 s before exp, after 2 s.
    endpoint.expires_in(32);
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;
    let url = gateway.url("/api");

    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(endpoint.count(), 1, "the token is cached");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(endpoint.count(), 2, "the token was refreshed");
    assert_eq!(
        bearers(&upstream),
        vec!["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    );
}

#[tokio::test]
async fn a_short_lived_token_is_reused_until_80_percent_of_its_life_then_refreshed() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.expires_in(2);
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;
    let url = gateway.url("/api");

    let started = Instant::now();
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(
        bearers(&upstream),
        vec!["Bearer tok-1", "Bearer tok-1"],
        "a token with 2 s to live is used again right away (token requests: {})",
        endpoint.count()
    );
    // 80 % of 2 s.
    tokio::time::sleep(Duration::from_millis(1700).saturating_sub(started.elapsed())).await;
    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(
        upstream.last().header("authorization"),
        Some("Bearer tok-2")
    );
    assert_eq!(endpoint.count(), 2);
}

#[tokio::test]
async fn the_token_endpoint_down_on_a_cold_token_is_502_and_the_route_recovers_with_it() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.fail(true);
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;
    let url = gateway.url("/api");

    let reply = get(&url).await;
    assert_json_error(&reply, 502, "upstream_credential_unavailable");
    assert!(
        upstream.requests().is_empty(),
        "no request went without a token"
    );
    let metrics = scrape(gateway.admin).await;
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "error")), 1.0);
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "ok")), 0.0);

    endpoint.fail(false);
    let reply = get(&url).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(bearers(&upstream), vec!["Bearer tok-1"]);
    let metrics = scrape(gateway.admin).await;
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "error")), 1.0);
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "ok")), 1.0);
}

#[tokio::test]
async fn a_token_due_for_refresh_still_serves_while_the_endpoint_is_down() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.expires_in(32);
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;
    let url = gateway.url("/api");

    assert_eq!(get(&url).await.status, StatusCode::OK);
    endpoint.fail(true);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    // Due for refresh (30 s before exp), but far from expiry.
    let reply = get(&url).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(bearers(&upstream), vec!["Bearer tok-1", "Bearer tok-1"]);
    assert_eq!(endpoint.count(), 2, "the refresh was tried");
    let metrics = scrape(gateway.admin).await;
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "ok")), 1.0);
    assert_eq!(metric_value(&metrics, &refresh_sample("api", "error")), 1.0);
}

#[tokio::test]
async fn an_expired_token_is_never_injected_when_the_endpoint_is_down() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.expires_in(2);
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;
    let url = gateway.url("/api");

    assert_eq!(get(&url).await.status, StatusCode::OK);
    endpoint.fail(true);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let reply = get(&url).await;
    assert_json_error(&reply, 502, "upstream_credential_unavailable");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_refresh_that_fails_after_the_token_expired_does_not_let_the_expired_token_through() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.expires_in(2);
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;
    let url = gateway.url("/api");

    let before_first = Instant::now();
    assert_eq!(get(&url).await.status, StatusCode::OK);
    // tok-1 is due for refresh at 80 % of its 2 s life (1.6 s) and expires
    // at 2 s. A refresh begun at 1.7 s that fails 1.6 s later ends after
    // tok-1 expired.
    tokio::time::sleep(Duration::from_millis(1700).saturating_sub(before_first.elapsed())).await;
    endpoint.fail(true);
    endpoint.delay(Duration::from_millis(1600));
    let reply = get(&url).await;
    let late = upstream
        .requests()
        .iter()
        .skip(1)
        .map(|r| {
            format!(
                "{:?} at +{:?}",
                r.header("authorization"),
                r.at.duration_since(before_first)
            )
        })
        .collect::<Vec<_>>();
    assert!(
        late.is_empty(),
        "tok-1 expired by +2 s, yet the failed refresh sent it upstream: {late:?}"
    );
    assert_json_error(&reply, 502, "upstream_credential_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_failing_token_request() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.fail(true);
    endpoint.delay(Duration::from_millis(500));
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;

    let url = gateway.url("/api");
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await })
    }))
    .await;
    let elapsed = started.elapsed();
    for reply in replies {
        assert_json_error(&reply.unwrap(), 502, "upstream_credential_unavailable");
    }
    assert!(
        endpoint.count() <= 2,
        "6 concurrent requests made {} token requests, one after another, in {elapsed:?}",
        endpoint.count()
    );
}

/// An upstream that refuses `tok-1` with 401 and accepts any other token.
fn refuses_tok_1() -> Script {
    Arc::new(|c: &Captured| {
        if c.header("authorization") == Some("Bearer tok-1") {
            (401, "expired token\n".into())
        } else {
            (200, "upstream ok\n".into())
        }
    })
}

#[tokio::test]
async fn an_upstream_401_fetches_a_new_token_and_retries_once() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    let upstream = ScriptedUpstream::start(refuses_tok_1()).await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;

    let reply = get(&gateway.url("/api/orders?page=1")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(endpoint.count(), 2);
    assert_eq!(bearers(&upstream), vec!["Bearer tok-1", "Bearer tok-2"]);
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, vec!["/api/orders?page=1", "/api/orders?page=1"]);
}

#[tokio::test]
async fn an_upstream_401_retry_replays_a_small_post_body_intact() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    let upstream = ScriptedUpstream::start(refuses_tok_1()).await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;

    let body = json!({"order": 7, "lines": ["a", "b"], "note": "x".repeat(2000)}).to_string();
    let reply = post(&gateway.url("/api/orders"), &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(endpoint.count(), 2);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.body, Bytes::from(body.clone()));
        assert_eq!(
            request.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
    assert_eq!(bearers(&upstream), vec!["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn a_second_upstream_401_goes_back_to_the_client_without_another_retry() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    let upstream = ScriptedUpstream::start(Arc::new(|_: &Captured| (401, "never\n".into()))).await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |_| {}).await;

    let reply = get(&gateway.url("/api")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(text(&reply), "never\n", "the upstream's own answer");
    assert_eq!(endpoint.count(), 2);
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn the_scope_and_extra_parameters_reach_the_token_endpoint_with_form_client_auth() {
    let endpoint = TokenEndpoint::start("form-client", "form s3cret&=", true).await;
    let upstream = ScriptedUpstream::ok().await;
    let (_creds, gateway) = oauth_gateway(&endpoint, &upstream, |kind| {
        if let Kind::Oauth2 { scope, params, .. } = kind {
            *scope = Some("orders:read orders:write".into());
            params.insert("audience".into(), "https://orders.example/api".into());
            params.insert("resource".into(), "urn:orders".into());
        }
    })
    .await;

    let reply = get(&gateway.url("/api")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.param("grant_type"), Some("client_credentials"));
    assert_eq!(request.param("scope"), Some("orders:read orders:write"));
    assert_eq!(
        request.param("audience"),
        Some("https://orders.example/api")
    );
    assert_eq!(request.param("resource"), Some("urn:orders"));
    assert_eq!(request.param("client_id"), Some("form-client"));
    assert_eq!(request.param("client_secret"), Some("form s3cret&="));
    assert_eq!(request.authorization, None);
    assert_eq!(bearers(&upstream), vec!["Bearer tok-1"]);
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_and_used_after_a_restart() {
    let endpoint = TokenEndpoint::start("c", "s", false).await;
    endpoint.rotate(true);
    let upstream = ScriptedUpstream::ok().await;
    let (creds, gateway) = oauth_gateway(&endpoint, &upstream, |kind| {
        if let Kind::Oauth2 { refresh_token, .. } = kind {
            *refresh_token = Some(SecretString::new("rt-0"));
        }
    })
    .await;

    assert_eq!(get(&gateway.url("/api")).await.status, StatusCode::OK);
    let first = &endpoint.requests()[0];
    assert_eq!(first.param("grant_type"), Some("refresh_token"));
    assert_eq!(first.param("refresh_token"), Some("rt-0"));

    let stored = creds.read().credentials["api"].kind.clone();
    let Kind::Oauth2 { refresh_token, .. } = stored else {
        panic!("not an oauth2 credential: {stored:?}");
    };
    assert_eq!(
        refresh_token.as_ref().map(SecretString::expose),
        Some("rt-1"),
        "the rotated refresh token is in the store"
    );

    gateway.shutdown().await;
    let again = gateway_on(
        &creds,
        "",
        &route("api", "/api", &upstream.url(), &inject("api", "")),
    )
    .await;
    assert_eq!(get(&again.url("/api")).await.status, StatusCode::OK);
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].param("grant_type"), Some("refresh_token"));
    assert_eq!(requests[1].param("refresh_token"), Some("rt-1"));
    assert_eq!(bearers(&upstream), vec!["Bearer tok-1", "Bearer tok-2"]);
}

// ---------------------------------------------------------------------------
// 3. The store, through the library and the CLI

/// A config file for the CLI on `creds`.
fn cli_config(creds: &Creds) -> ConfigFile {
    ConfigFile::new(&config("", &creds.section()))
}

/// `warden --config <config> ARGS` with `stdin` written and closed.
fn cli_spawn(config: &ConfigFile, args: &[&str], stdin: &str) -> Child {
    let mut all = vec!["--config", config.path_str()];
    all.extend_from_slice(args);
    let mut child = warden_command(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child
}

fn cli(config: &ConfigFile, args: &[&str], stdin: &str) -> Output {
    cli_spawn(config, args, stdin).wait_with_output().unwrap()
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn err(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        out(output),
        err(output)
    );
}

/// The key printed by `init` or `rotate-master-key`: its last line.
fn printed_key(output: &Output) -> String {
    out(output)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn the_store_round_trips_every_kind_and_holds_no_plaintext() {
    let creds = Creds::new();
    let mut client = oauth2_kind_for_store();
    if let Kind::Oauth2 { refresh_token, .. } = &mut client {
        *refresh_token = Some(SecretString::new("refresh-plain-0001"));
    }
    let all = [
        ("a", api_key("apikey-plain-0001"), None),
        (
            "s",
            secret("secret-plain-0001"),
            Some(Location::Query("k".into())),
        ),
        ("b", basic("user", "password-plain-0001"), None),
        ("t", bearer("bearer-plain-0001"), None),
        ("o", client, Some(Location::Header("X-Token".into()))),
    ];
    for (name, kind, location) in all.clone() {
        creds.put(name, kind, location);
    }
    let back = Store::new(creds.store_path(), creds.key.clone())
        .read()
        .unwrap();
    assert_eq!(back.credentials.len(), 5);
    for (name, kind, location) in all {
        let stored = &back.credentials[name];
        assert_eq!(stored.kind, kind);
        assert_eq!(stored.location, location);
        assert!(stored.created > 0 && stored.updated >= stored.created);
    }
    let raw = std::fs::read(creds.store_path()).unwrap();
    let raw_text = String::from_utf8_lossy(&raw);
    for plain in [
        "plain-0001",
        "apikey",
        "password",
        "client-secret-plain",
        "\"kind\"",
    ] {
        assert!(!raw_text.contains(plain), "{plain:?} is on disk in clear");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(creds.store_path()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

fn oauth2_kind_for_store() -> Kind {
    Kind::Oauth2 {
        token_url: "https://idp.example/token".into(),
        client_id: "client".into(),
        client_secret: SecretString::new("client-secret-plain-0001"),
        scope: Some("a b".into()),
        refresh_token: None,
        params: BTreeMap::from([("audience".to_owned(), "x".to_owned())]),
        client_auth: ClientAuth::Form,
    }
}

#[test]
fn the_cli_sets_lists_and_removes_credentials_and_never_shows_a_value() {
    let dir = TempDir::new("cli");
    let store = dir.join_str("creds.store");
    let key_file = dir.join_str("master.key");
    let config = ConfigFile::new(&config(
        "",
        &format!("[credentials]\nstore = \"{store}\"\nmaster_key_file = \"{key_file}\"\n"),
    ));

    let init = cli(&config, &["credentials", "init"], "");
    assert_ok(&init);
    let key = printed_key(&init);
    std::fs::write(&key_file, &key).unwrap();
    // init never overwrites a store.
    let again = cli(&config, &["credentials", "init"], "");
    assert!(!again.status.success());
    assert!(err(&again).contains("already exists"), "{}", err(&again));

    let sets: [(&[&str], &str); 5] = [
        (&["orders-key", "--kind", "api_key"], "cli-apikey-9f2e\n"),
        (
            &["legacy", "--kind", "basic", "--username", "svc"],
            "cli-password-31ab\n",
        ),
        (
            &["maps", "--kind", "secret", "--query", "key"],
            "cli-secret-77c0\n",
        ),
        (
            &["static", "--kind", "bearer", "--header", "X-Token"],
            "cli-bearer-5d1a\n",
        ),
        (
            &[
                "idp",
                "--kind",
                "oauth2",
                "--token-url",
                "https://idp.example/token",
                "--client-id",
                "warden",
                "--scope",
                "orders:read",
                "--param",
                "audience=https://orders.example",
                "--client-auth",
                "form",
                "--refresh-token",
            ],
            "cli-clientsecret-0c4b\ncli-refresh-e61d\n",
        ),
    ];
    let secrets = [
        "cli-apikey-9f2e",
        "cli-password-31ab",
        "cli-secret-77c0",
        "cli-bearer-5d1a",
        "cli-clientsecret-0c4b",
        "cli-refresh-e61d",
    ];
    let mut shown = String::new();
    for (args, stdin) in sets {
        let mut all = vec!["credentials", "set"];
        all.extend_from_slice(args);
        let output = cli(&config, &all, stdin);
        assert_ok(&output);
        shown.push_str(&out(&output));
        shown.push_str(&err(&output));
    }

    let list = cli(&config, &["credentials", "list"], "");
    assert_ok(&list);
    let listed = out(&list);
    shown.push_str(&listed);
    shown.push_str(&err(&list));
    let rows: Vec<&str> = listed.lines().collect();
    assert!(
        rows[0]
            .split_whitespace()
            .eq(["NAME", "KIND", "LOCATION", "CREATED", "UPDATED"]),
        "{listed}"
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{listed}"))
            .to_string()
    };
    for (name, kind, location) in [
        ("orders-key", "api_key", "header X-Api-Key"),
        ("legacy", "basic", "header Authorization"),
        ("maps", "secret", "query key"),
        ("static", "bearer", "header X-Token"),
        ("idp", "oauth2", "header Authorization"),
    ] {
        let line = row(name);
        assert!(line.contains(kind), "{line}");
        assert!(line.contains(location), "{line}");
        let times: Vec<&str> = line.split_whitespace().rev().take(2).collect();
        for time in times {
            let at = humantime::parse_rfc3339(time)
                .unwrap_or_else(|e| panic!("{time:?} in {line:?}: {e}"));
            let age = std::time::SystemTime::now()
                .duration_since(at)
                .unwrap_or_default();
            assert!(age < Duration::from_secs(120), "{line}");
        }
    }
    for secret in secrets {
        assert!(!shown.contains(secret), "the CLI showed {secret}:\n{shown}");
    }

    // What the CLI stored, read back with the library.
    let key = MasterKey::from_base64(&key).unwrap();
    let contents = Store::new(&store, key.clone()).read().unwrap();
    assert_eq!(
        contents.credentials["orders-key"].kind,
        api_key("cli-apikey-9f2e")
    );
    assert_eq!(
        contents.credentials["legacy"].kind,
        basic("svc", "cli-password-31ab")
    );
    assert_eq!(
        contents.credentials["idp"].kind,
        Kind::Oauth2 {
            token_url: "https://idp.example/token".into(),
            client_id: "warden".into(),
            client_secret: SecretString::new("cli-clientsecret-0c4b"),
            scope: Some("orders:read".into()),
            refresh_token: Some(SecretString::new("cli-refresh-e61d")),
            params: BTreeMap::from([("audience".to_owned(), "https://orders.example".to_owned())]),
            client_auth: ClientAuth::Form,
        }
    );

    // Replacing keeps `created`.
    let created = contents.credentials["orders-key"].created;
    let output = cli(
        &config,
        &["credentials", "set", "orders-key", "--kind", "api_key"],
        "cli-apikey-new\n",
    );
    assert_ok(&output);
    let contents = Store::new(&store, key.clone()).read().unwrap();
    assert_eq!(contents.credentials["orders-key"].created, created);
    assert_eq!(
        contents.credentials["orders-key"].kind,
        api_key("cli-apikey-new")
    );

    let removed = cli(&config, &["credentials", "remove", "maps"], "");
    assert_ok(&removed);
    let listed = out(&cli(&config, &["credentials", "list"], ""));
    assert!(!listed.contains("maps"), "{listed}");
    assert!(listed.contains("orders-key"), "{listed}");
    let missing = cli(&config, &["credentials", "remove", "maps"], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err(&missing).contains("no credential named"),
        "{}",
        err(&missing)
    );

    // Bad input is refused and changes nothing.
    let bad = cli(
        &config,
        &["credentials", "set", "x", "--kind", "secret"],
        "v\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(err(&bad).contains("location"), "{}", err(&bad));
    let empty = cli(
        &config,
        &["credentials", "set", "x", "--kind", "api_key"],
        "\n",
    );
    assert_eq!(empty.status.code(), Some(1));
    let contents = Store::new(&store, key).read().unwrap();
    assert!(!contents.credentials.contains_key("x"));
}

#[tokio::test]
async fn a_wrong_key_a_flipped_byte_and_a_truncated_file_are_clear_errors() {
    let creds = Creds::new();
    creds.put("a", api_key("v"), None);
    let path = creds.store_path();
    let good = std::fs::read(&path).unwrap();
    let config = cli_config(&creds);

    // The wrong key, through the library, the CLI and the gateway.
    let wrong = Store::new(&path, MasterKey::generate().unwrap());
    let message = wrong.read().unwrap_err().to_string();
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("cannot decrypt"), "{message}");

    let other = MasterKey::generate().unwrap();
    std::fs::write(creds.key_path(), other.to_base64().as_bytes()).unwrap();
    let listed = cli(&config, &["credentials", "list"], "");
    assert_eq!(listed.status.code(), Some(1));
    assert!(err(&listed).contains(&path), "{}", err(&listed));
    assert!(err(&listed).contains("cannot decrypt"), "{}", err(&listed));
    let toml = config_text_with_route(&creds);
    let started = warden::Gateway::bind(
        warden::Config::from_toml(&toml, "test.toml").unwrap(),
        prometheus::Registry::new(),
    )
    .await;
    let message = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("cannot decrypt"), "{message}");
    std::fs::write(creds.key_path(), creds.key.to_base64().as_bytes()).unwrap();
    assert_ok(&cli(&config, &["credentials", "list"], ""));

    // Any flipped byte: header, nonce, ciphertext, tag.
    for at in [0, 7, 8, 12, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let message = creds.store.read().unwrap_err().to_string();
        assert!(message.starts_with(&path), "byte {at}: {message}");
        let listed = cli(&config, &["credentials", "list"], "");
        assert_eq!(listed.status.code(), Some(1), "byte {at}");
        assert!(err(&listed).contains(&path), "{}", err(&listed));
        assert!(out(&listed).is_empty(), "nothing listed: {}", out(&listed));
    }
    // Truncated: to a few bytes, to nothing, by one byte.
    for keep in [20, 0, good.len() - 1] {
        std::fs::write(&path, &good[..keep]).unwrap();
        let message = creds.store.read().unwrap_err().to_string();
        assert!(message.starts_with(&path), "{keep} bytes: {message}");
        let listed = cli(&config, &["credentials", "list"], "");
        assert_eq!(listed.status.code(), Some(1));
    }
    let message = {
        std::fs::write(&path, &good[..20]).unwrap();
        creds.store.read().unwrap_err().to_string()
    };
    assert!(message.contains("truncated"), "{message}");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(creds.read().credentials["a"].kind, api_key("v"));
}

fn config_text_with_route(creds: &Creds) -> String {
    config(
        "",
        &format!(
            "{}{}",
            creds.section(),
            route("a", "/a", "builtin:echo", &inject("a", ""))
        ),
    )
}

#[test]
fn rotate_master_key_prints_a_new_key_that_alone_opens_the_store() {
    let creds = Creds::new();
    creds.put("a", api_key("rotated-value"), None);
    let config = cli_config(&creds);

    let rotated = cli(&config, &["credentials", "rotate-master-key"], "");
    assert_ok(&rotated);
    let new_key = printed_key(&rotated);
    assert_ne!(new_key, creds.key.to_base64().as_str());
    assert!(!out(&rotated).contains("rotated-value"));

    // The old key (still in the key file) opens it no more.
    let old = creds.store.read().unwrap_err().to_string();
    assert!(old.contains("cannot decrypt"), "{old}");
    let listed = cli(&config, &["credentials", "list"], "");
    assert_eq!(listed.status.code(), Some(1));
    assert!(err(&listed).contains("cannot decrypt"), "{}", err(&listed));

    let key = MasterKey::from_base64(&new_key).unwrap();
    let contents = Store::new(creds.store_path(), key).read().unwrap();
    assert_eq!(contents.credentials["a"].kind, api_key("rotated-value"));
    std::fs::write(creds.key_path(), &new_key).unwrap();
    let listed = cli(&config, &["credentials", "list"], "");
    assert_ok(&listed);
    assert!(out(&listed).contains("api_key"));
}

#[test]
fn concurrent_writers_lose_no_update() {
    let creds = Creds::new();
    // Threads of this process, each with its own Store value.
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let store = Store::new(creds.store_path(), creds.key.clone());
            std::thread::spawn(move || {
                for j in 0..5 {
                    store
                        .update(|c| {
                            c.credentials.insert(
                                format!("t{i}-{j}"),
                                Credential::new(api_key(&format!("v{i}-{j}")), None),
                            )
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    // And CLI processes at the same time.
    let config = cli_config(&creds);
    let processes: Vec<Child> = (0..6)
        .map(|i| {
            cli_spawn(
                &config,
                &["credentials", "set", &format!("p{i}"), "--kind", "api_key"],
                &format!("pv{i}\n"),
            )
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for process in processes {
        assert_ok(&process.wait_with_output().unwrap());
    }
    let contents = creds.read();
    assert_eq!(
        contents.credentials.len(),
        36,
        "{:?}",
        contents.credentials.keys()
    );
    for i in 0..6 {
        assert_eq!(
            contents.credentials[&format!("p{i}")].kind,
            api_key(&format!("pv{i}"))
        );
        for j in 0..5 {
            assert_eq!(
                contents.credentials[&format!("t{i}-{j}")].kind,
                api_key(&format!("v{i}-{j}"))
            );
        }
    }
}

fn stray_temp_files(creds: &Creds) -> Vec<String> {
    std::fs::read_dir(&creds.dir.path)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("creds.store.tmp."))
        .collect()
}

#[test]
fn a_crash_between_write_and_rename_leaves_the_old_store_intact() {
    let creds = Creds::new();
    creds.put("old", api_key("old-value"), None);
    let before = std::fs::read(creds.store_path()).unwrap();
    let config = cli_config(&creds);

    // A writer killed while writing its temp file (file size limit 0:
    // SIGXFSZ on the first byte), after it has created it.
    let mut args = vec!["--config", config.path_str()];
    args.extend_from_slice(&["credentials", "set", "new", "--kind", "api_key"]);
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 0; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_warden"))
        .args(&args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"new-value\n")
        .unwrap();
    let crashed = child.wait_with_output().unwrap();
    assert!(!crashed.status.success(), "the writer was stopped");
    assert_eq!(
        std::fs::read(creds.store_path()).unwrap(),
        before,
        "the store file is untouched"
    );
    let strays = stray_temp_files(&creds);
    assert_eq!(
        strays.len(),
        1,
        "the crashed writer left its temp file: {strays:?}"
    );

    // And a stray temp file with garbage in it, as a crash mid-write leaves.
    std::fs::write(
        creds
            .dir
            .join("creds.store.tmp.0190aaaabbbbccccddddeeeeffff0000"),
        &before[..before.len() / 2],
    )
    .unwrap();

    let contents = creds.read();
    assert_eq!(contents.credentials.len(), 1);
    assert_eq!(contents.credentials["old"].kind, api_key("old-value"));
    assert_ok(&cli(&config, &["credentials", "list"], ""));

    // Writes still work, through the library and the CLI.
    creds.put("lib", api_key("lib-value"), None);
    assert_ok(&cli(
        &config,
        &["credentials", "set", "new", "--kind", "api_key"],
        "new-value\n",
    ));
    let contents = creds.read();
    let names: Vec<&String> = contents.credentials.keys().collect();
    assert_eq!(names, ["lib", "new", "old"]);
    assert_eq!(contents.credentials["new"].kind, api_key("new-value"));
}

#[test]
fn credential_input_is_checked_before_anything_is_stored() {
    let input = |value: Value| serde_json::from_value::<CredentialInput>(value);
    // Unknown fields are refused (a typo never stores a half credential).
    assert!(input(json!({"kind": "api_key", "value": "v", "hedaer": "X"})).is_err());
    let build = |value: Value| input(value).unwrap().build(None);
    let refused = |value: Value| build(value).err();
    assert_eq!(
        refused(json!({"kind": "api_key"})),
        Some(CredentialError::Required("the key"))
    );
    assert_eq!(
        refused(json!({"kind": "secret", "value": "v"})),
        Some(CredentialError::NoLocation)
    );
    assert_eq!(
        refused(json!({"kind": "basic", "value": "p", "username": "a:b"})),
        Some(CredentialError::Username)
    );
    assert_eq!(
        refused(json!({"kind": "basic", "value": "p", "username": "a", "query": "q"})),
        Some(CredentialError::BasicOutsideHeader)
    );
    assert_eq!(
        refused(json!({"kind": "api_key", "value": "v", "header": "X", "query": "q"})),
        Some(CredentialError::TwoLocations)
    );
    let insecure = refused(json!({
        "kind": "oauth2", "value": "s", "client_id": "c",
        "token_url": "http://idp.example/token",
    }));
    assert!(
        insecure.is_some_and(|err| err.to_string().contains("must be https://")),
        "an OAuth2 token URL over plain HTTP to another host is refused"
    );
    let ok = build(json!({
        "kind": "oauth2", "value": "s", "client_id": "c",
        "token_url": "http://127.0.0.1:1/token",
    }))
    .unwrap();
    assert_eq!(
        ok.location(),
        Some(Location::Header("Authorization".into()))
    );
}

// ---------------------------------------------------------------------------
// 4. The admin API

/// A gateway with the issuer whose tokens operate it, an empty store, a
/// route injecting `made`, and its audit captured.
struct AdminFixture {
    gateway: TestGateway,
    upstream: ScriptedUpstream,
    audit: AuditCapture,
    key: TestKey,
    creds: Creds,
    _files: Vec<TempFile>,
}

async fn admin_fixture() -> AdminFixture {
    let creds = Creds::new();
    let upstream = ScriptedUpstream::ok().await;
    let key = TestKey::generate("hs-admin", Algorithm::HS256);
    let file = key.file();
    let rest = format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"warden\"]\nsigning_kid = \"hs-admin\"\n{}{}",
        key.config_entry(&file),
        creds.section(),
        route("made", "/made", &upstream.url(), &inject("made", ""))
    );
    let (writer, audit) = audit_capture(1024);
    let gateway = spawn_gateway_with(
        &config("", &rest),
        StartOptions {
            audit_writer: Some(writer),
            ..StartOptions::default()
        },
    )
    .await;
    AdminFixture {
        gateway,
        upstream,
        audit,
        key,
        creds,
        _files: vec![file],
    }
}

fn operator_token(key: &TestKey, scope: &str) -> String {
    let now = unix_now();
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

async fn admin_call(
    f: &AdminFixture,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(f.gateway.admin_url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => full(body.to_string()),
        None => empty(),
    };
    send(
        request
            .header("content-type", "application/json")
            .body(body)
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_admin_api_stores_lists_updates_and_deletes_credentials_that_take_effect_at_once() {
    let f = admin_fixture().await;
    let admin = operator_token(&f.key, "warden:admin");
    let no_scope = operator_token(&f.key, "orders:read");
    let mut replies = Vec::new();

    // Before: the route has no credential.
    let reply = get(&f.gateway.url("/made")).await;
    assert_json_error(&reply, 502, "upstream_credential_unavailable");

    // Without a token, 401; without the scope, 403; nothing is stored.
    let put_body = json!({"kind": "api_key", "value": "admin-s3cret-v1"});
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        None,
        Some(put_body.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", text(&reply));
    replies.push(reply);
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        Some(&no_scope),
        Some(put_body.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", text(&reply));
    replies.push(reply);
    let reply = admin_call(&f, http::Method::GET, "/admin/credentials", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = admin_call(
        &f,
        http::Method::GET,
        "/admin/credentials",
        Some(&no_scope),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = admin_call(
        &f,
        http::Method::DELETE,
        "/admin/credentials/made",
        Some(&no_scope),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(f.creds.read().credentials.is_empty());

    // PUT: 201, and the route uses it right away.
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        Some(&admin),
        Some(put_body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    assert_eq!(reply.json()["name"], "made");
    assert_eq!(reply.json()["kind"], "api_key");
    assert_eq!(reply.json()["location"], "header X-Api-Key");
    let created = reply.json()["created"].as_i64().unwrap();
    replies.push(reply);
    let reply = get(&f.gateway.url("/made")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(
        f.upstream.last().header("x-api-key"),
        Some("admin-s3cret-v1")
    );
    assert_eq!(
        f.creds.read().credentials["made"].kind,
        api_key("admin-s3cret-v1"),
        "it is in the store"
    );

    // GET lists it, never its value.
    let reply = admin_call(
        &f,
        http::Method::GET,
        "/admin/credentials",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let list = reply.json()["credentials"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "made");
    assert_eq!(list[0]["kind"], "api_key");
    assert!(list[0]["created"].is_i64() && list[0]["updated"].is_i64());
    replies.push(reply);

    // PUT again: 200, updated, `created` kept, in effect at once.
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        Some(&admin),
        Some(json!({"kind": "secret", "value": "admin-s3cret-v2", "query": "key"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(reply.json()["created"].as_i64(), Some(created));
    assert_eq!(reply.json()["location"], "query key");
    replies.push(reply);
    let reply = get(&f.gateway.url("/made")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.last();
    assert_eq!(seen.target, "/made?key=admin-s3cret-v2");
    assert_eq!(seen.header("x-api-key"), None);

    // A bad body: 400, nothing changes.
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        Some(&admin),
        Some(json!({"kind": "api_key", "value": "admin-s3cret-v3", "oops": 1})),
    )
    .await;
    assert_json_error(&reply, 400, "invalid_request");
    replies.push(reply);

    // DELETE: 200, then the route gets 502; again: 404.
    let reply = admin_call(
        &f,
        http::Method::DELETE,
        "/admin/credentials/made",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    replies.push(reply);
    let reply = get(&f.gateway.url("/made")).await;
    assert_json_error(&reply, 502, "upstream_credential_unavailable");
    assert!(f.creds.read().credentials.is_empty());
    let reply = admin_call(
        &f,
        http::Method::DELETE,
        "/admin/credentials/made",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Audited: created, updated, deleted; no secret anywhere.
    for (action, kind) in [
        ("created", "api_key"),
        ("updated", "secret"),
        ("deleted", "secret"),
    ] {
        let event = f
            .audit
            .wait_for(|e| e["event"] == "credential_changed" && e["action"] == action)
            .await;
        assert_eq!(event["name"], "made", "{event}");
        assert_eq!(event["kind"], kind, "{event}");
        assert_eq!(event["by"], "ops", "{event}");
        assert!(event["execution_key"].is_string(), "{event}");
    }
    let changes = f
        .audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "credential_changed")
        .count();
    assert_eq!(
        changes, 3,
        "refused calls change nothing and audit no change"
    );
    let audit = f.audit.lines().join("\n");
    for reply in &replies {
        let body = text(reply);
        for secret in ["admin-s3cret-v1", "admin-s3cret-v2", "admin-s3cret-v3"] {
            assert!(!body.contains(secret), "{body}");
            assert!(!audit.contains(secret), "{audit}");
        }
    }
}

#[tokio::test]
async fn the_admin_api_manages_an_oauth2_client_whose_changes_apply_at_once() {
    let f = admin_fixture().await;
    let admin = operator_token(&f.key, "warden:admin");
    let endpoint = TokenEndpoint::start("c1", "first-secret", false).await;
    let put = |secret: &str| {
        json!({
            "kind": "oauth2", "token_url": endpoint.url(), "client_id": "c1",
            "value": secret, "scope": "orders:read",
        })
    };
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        Some(&admin),
        Some(put("first-secret")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    assert!(!text(&reply).contains("first-secret"));
    assert_eq!(get(&f.gateway.url("/made")).await.status, StatusCode::OK);
    assert_eq!(
        f.upstream.last().header("authorization"),
        Some("Bearer tok-1")
    );

    // A changed client (here its scope) gets a token of its own at once.
    let reply = admin_call(
        &f,
        http::Method::PUT,
        "/admin/credentials/made",
        Some(&admin),
        Some(json!({
            "kind": "oauth2", "token_url": endpoint.url(), "client_id": "c1",
            "value": "first-secret", "scope": "orders:write",
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(get(&f.gateway.url("/made")).await.status, StatusCode::OK);
    let requests = endpoint.requests();
    assert_eq!(
        requests.len(),
        2,
        "the changed client fetched its own token"
    );
    assert_eq!(requests[0].param("scope"), Some("orders:read"));
    assert_eq!(requests[1].param("scope"), Some("orders:write"));
    assert_eq!(
        f.upstream.last().header("authorization"),
        Some("Bearer tok-2")
    );
    let audit = f.audit.lines().join("\n");
    assert!(!audit.contains("first-secret"), "{audit}");
}

// ---------------------------------------------------------------------------
// 5. No secret in any log line or echo

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_logs_at_debug_nor_in_what_the_echo_shows() {
    const API_KEY: &str = "apikey-7d1f0c5e9b";
    const USER: &str = "svc-reporter";
    const PASSWORD: &str = "pw-4be2a9c771";
    const BEARER: &str = "bearer-e0c93a51f2";
    const CLIENT_ID: &str = "warden-client";
    const CLIENT_SECRET: &str = "cs-91ab44d0e7";
    const REFRESH: &str = "rt-seed-5c7e30";
    const FAIL_SECRET: &str = "cs-fail-77e1ab";
    const QUERY_SECRET: &str = "qsecret-0a9f42";
    const PATH_SECRET: &str = "path/secret 31c8";
    const BODY_SECRET: &str = "bodysecret-2f6e";
    const ADMIN_SECRET: &str = "adminput-6b2d8e";

    let good =
        TokenEndpoint::start_with(CLIENT_ID, CLIENT_SECRET, false, "at-5e1d9-", "rr-9c3b7-").await;
    good.rotate(true);
    let bad = TokenEndpoint::start(CLIENT_ID, FAIL_SECRET, true).await;
    bad.fail(true);
    // The upstream refuses the first access token, so the retry path runs.
    let upstream = ScriptedUpstream::start(Arc::new(|c: &Captured| {
        if c.header("authorization") == Some("Bearer at-5e1d9-1") {
            (401, "refused\n".into())
        } else {
            (200, "ok\n".into())
        }
    }))
    .await;
    let refused = refused_addr();

    let creds = Creds::new();
    creds.put("key", api_key(API_KEY), None);
    creds.put("basic", basic(USER, PASSWORD), None);
    creds.put("bearer", bearer(BEARER), None);
    let mut oauth = oauth2(&good);
    if let Kind::Oauth2 { refresh_token, .. } = &mut oauth {
        *refresh_token = Some(SecretString::new(REFRESH));
    }
    creds.put("oauth", oauth, None);
    creds.put("failing", oauth2(&bad), None);
    creds.put(
        "q",
        secret(QUERY_SECRET),
        Some(Location::Query("key".into())),
    );
    creds.put("p", secret(PATH_SECRET), Some(Location::Path));
    creds.put("b", secret(BODY_SECRET), Some(Location::Body("key".into())));

    let key = TestKey::generate("hs-logs", Algorithm::HS256);
    let key_file = key.file();
    let up = upstream.url();
    let down = format!("http://{refused}");
    let mut routes = String::new();
    for (name, credential, upstream) in [
        ("key", "key", up.clone()),
        ("basic", "basic", up.clone()),
        ("bearer", "bearer", up.clone()),
        ("oauth", "oauth", up.clone()),
        ("failing", "failing", up.clone()),
        ("q", "q", up.clone()),
        ("p", "p", format!("{up}/{{credential}}")),
        ("b", "b", up.clone()),
        ("qdown", "q", down.clone()),
        ("pdown", "p", format!("{down}/x/{{credential}}")),
        ("admin-made", "admin-made", up.clone()),
    ] {
        routes.push_str(&route(
            name,
            &format!("/{name}"),
            &upstream,
            &inject(credential, ""),
        ));
    }
    for credential in ["key", "basic", "bearer", "oauth", "q", "b"] {
        routes.push_str(&route(
            &format!("echo-{credential}"),
            &format!("/echo/{credential}"),
            "builtin:echo",
            &inject(credential, ""),
        ));
    }
    routes.push_str(&route(
        "echo-key-query",
        "/echo/key-query",
        "builtin:echo",
        &inject("key", "query = \"api_key\""),
    ));
    let toml = config(
        "",
        &format!(
            "[log]\nformat = \"json\"\nlevel = \"debug\"\n{}\n[issuer]\niss = \"{ISS}\"\naud = [\"warden\"]\nsigning_kid = \"hs-logs\"\n{}{routes}",
            key.config_entry(&key_file),
            creds.section(),
        ),
    );
    let warden = spawn_warden_captured(&toml).await;
    let url = |path: &str| format!("http://{}{path}", warden.addr);

    // Through every credential, with client values to replace.
    let client_headers = [
        ("authorization", "Bearer client-token"),
        ("x-api-key", "client-key"),
    ];
    for path in [
        "/key",
        "/basic",
        "/bearer",
        "/oauth",
        "/q?key=client",
        "/p/x",
    ] {
        let reply = get_with(&url(path), &client_headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", text(&reply));
    }
    let reply = post(&url("/b"), "{\"key\": \"client\", \"n\": 1}").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let reply = post(&url("/b"), "not json").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = get(&url("/failing")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    for path in ["/qdown", "/pdown"] {
        let reply = get(&url(path)).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}");
    }
    assert_eq!(
        good.count(),
        2,
        "a token, and another after the upstream's 401"
    );
    assert!(bad.count() >= 1);

    // Through the admin API too.
    let admin = operator_token(&key, "warden:admin");
    let reply = send(
        Request::put(format!(
            "http://{}/admin/credentials/admin-made",
            warden.admin
        ))
        .header("authorization", format!("Bearer {admin}"))
        .body(full(
            json!({"kind": "api_key", "value": ADMIN_SECRET}).to_string(),
        ))
        .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    assert_eq!(get(&url("/admin-made")).await.status, StatusCode::OK);
    let listed = send(
        Request::get(format!("http://{}/admin/credentials", warden.admin))
            .header("authorization", format!("Bearer {admin}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK);

    // What the upstream got, to know what must not leak.
    let access_tokens = ["at-5e1d9-1", "at-5e1d9-2"];
    let rotated = ["rr-9c3b7-1", "rr-9c3b7-2"];
    let basic_pair = format!("{USER}:{PASSWORD}");
    let mut forbidden: Vec<String> = [
        API_KEY,
        PASSWORD,
        BEARER,
        CLIENT_SECRET,
        REFRESH,
        FAIL_SECRET,
        QUERY_SECRET,
        PATH_SECRET,
        "path%2Fsecret%2031c8",
        BODY_SECRET,
        ADMIN_SECRET,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    forbidden.extend(access_tokens.iter().map(|s| (*s).to_owned()));
    forbidden.extend(rotated.iter().map(|s| (*s).to_owned()));
    forbidden.push(b64(&basic_pair));
    forbidden.push(b64(&format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    forbidden.push(b64(PASSWORD));
    let seen = upstream.requests();
    assert!(
        seen.iter()
            .any(|r| r.header("authorization")
                == Some(format!("Basic {}", b64(&basic_pair)).as_str())),
        "the basic route's request arrived: {seen:?}"
    );

    // The echo shows the client neither a value nor its encodings.
    for path in [
        "/echo/key",
        "/echo/basic",
        "/echo/bearer",
        "/echo/oauth",
        "/echo/q?key=client",
        "/echo/key-query?api_key=client&a=1",
    ] {
        let reply = get_with(&url(path), &client_headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", text(&reply));
        let body = text(&reply);
        assert!(body.contains("[redacted]"), "{path}: {body}");
        for secret in &forbidden {
            assert!(
                !body.contains(secret.as_str()),
                "{path} shows {secret}: {body}"
            );
        }
    }
    let reply = post(&url("/echo/b"), "{\"key\": \"client\"}").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert!(!text(&reply).contains(BODY_SECRET));

    // Every reply the client got is clean too.
    for reply in [&reply, &listed] {
        for secret in &forbidden {
            assert!(!text(reply).contains(secret.as_str()), "{}", text(reply));
        }
    }

    let output = warden.stop().await;
    assert!(
        output.contains("\"level\":\"DEBUG\""),
        "debug lines are captured:\n{output}"
    );
    assert!(
        output.contains("OAuth2 token refresh failed"),
        "the error path logged:\n{output}"
    );
    assert!(
        output.contains("refused the access token"),
        "the 401 path logged:\n{output}"
    );
    assert!(
        output.contains("credential_changed"),
        "the audit line is there"
    );
    for secret in &forbidden {
        if let Some(line) = output.lines().find(|l| l.contains(secret.as_str())) {
            panic!("{secret} is in the output: {line}");
        }
    }
}

#[tokio::test]
async fn a_body_credential_leaves_big_numbers_and_nested_values_exactly_as_sent() {
    let creds = Creds::new();
    creds.put("hook", api_key("body-s3cret"), None);
    let upstream = ScriptedUpstream::ok().await;
    let gateway = gateway_on(
        &creds,
        "",
        &route(
            "hook",
            "/hook",
            &upstream.url(),
            &inject("hook", "body = \"token\""),
        ),
    )
    .await;

    let sent = r#"{"amount": 12345678901234567890123, "ratio": 1.10, "nested": {"deep": [1, {"x": null}]}}"#;
    let reply = post(&gateway.url("/hook"), sent).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let body = String::from_utf8_lossy(&upstream.last().body).into_owned();
    assert!(body.contains("12345678901234567890123"), "{body}");
    assert!(body.contains("1.10"), "{body}");
    assert!(body.contains(r#"{"deep": [1, {"x": null}]}"#), "{body}");
    assert!(body.contains(r#""token":"body-s3cret""#), "{body}");
}
