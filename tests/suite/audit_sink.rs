//! Audit sink failures and leftovers (SPEC §16), over real sockets and
//! real files: `[audit] on_failure` with a sink that cannot be written
//! (`/dev/full`, a removed directory), one log line per outage, the file
//! sink following its path through rotation and SIGHUP, and the temporary
//! copies of the credential store a crash left behind.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use http::Request;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use warden::credentials::store::{MasterKey, Store};

const ISS: &str = "https://warden.test";
const AUD: &str = "warden";

/// An issuer key, a jwt route and a public route (both `builtin:echo`),
/// and `audit` as the `[audit]` section.
fn toml(key: &TestKey, file: &TempFile, audit: &str) -> String {
    config(
        "",
        &format!(
            "[audit]\n{audit}\n{}\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"{}\"\n\
             \n[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nupstream = \"builtin:echo\"\n{}",
            key.config_entry(file),
            key.kid,
            route("public", "/public", "builtin:echo", ""),
        ),
    )
}

/// A valid token of the gateway's own issuer, with `warden:admin`.
fn token(key: &TestKey) -> String {
    let now = unix_now();
    key.token(&json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "jti": uuid::Uuid::now_v7().to_string(),
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 300,
        "scope": "warden:admin",
    }))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn get_bearer(url: &str, token: &str) -> Reply {
    get_with(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Retries `request` until its answer has `status`, within the patience.
async fn until_status<F, Fut>(status: u16, request: F) -> Reply
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let reply = request().await;
        if reply.status.as_u16() == status {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {status}; last {} {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `warden_audit_events_dropped_total`, once it is at least `at_least`.
async fn dropped_at_least(admin: std::net::SocketAddr, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let value = metric_value(&scrape(admin).await, "warden_audit_events_dropped_total");
        if value >= at_least {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dropped stayed at {value}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The audit events in the file at `path` (none when it does not exist).
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits until the file at `path` holds the `token_use` event of `reply`.
async fn lands_in(path: &Path, reply: &Reply) -> Value {
    let key = reply.execution_key().to_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let found = events(path)
            .into_iter()
            .find(|e| e["event"] == "token_use" && e["execution_key"] == key.as_str());
        if let Some(event) = found {
            return event;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the event of {key} never reached {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_event_of(path: &Path, reply: &Reply) -> bool {
    events(path)
        .iter()
        .any(|e| e["execution_key"] == reply.execution_key())
}

// ---------------------------------------------------------------------------
// on_failure

#[tokio::test]
async fn a_grpc_call_refused_while_the_audit_log_fails_gets_grpc_status_unavailable() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let gateway = spawn_gateway(&toml(
        &key,
        &file,
        "sink = \"file\"\npath = \"/dev/full\"\non_failure = \"refuse\"",
    ))
    .await;
    let orders = gateway.url("/orders/1");
    let valid = token(&key);
    until_status(503, || get_bearer(&orders, &valid)).await;

    // The 503 audit_unavailable, the gRPC way (issue 14): 14 UNAVAILABLE.
    let call = send_on(
        &h2c_client(),
        Request::post(&orders)
            .header("content-type", "application/grpc")
            .header("authorization", format!("Bearer {valid}"))
            .body(full(vec![0u8; 5]))
            .unwrap(),
    )
    .await;
    assert_eq!(call.status, 503);
    assert_eq!(call.header("grpc-status"), Some("14"));
    assert_eq!(call.header("content-type"), Some("application/grpc"));
    assert!(
        call.header("grpc-message")
            .is_some_and(|m| m.starts_with("the audit log cannot be written")),
        "{:?}",
        call.headers
    );
    assert!(call.body.is_empty(), "trailers-only: no body");
    assert!(call.header("x-execution-key").is_some());
}

#[tokio::test]
async fn with_refuse_a_failing_sink_makes_token_requests_503_audit_unavailable_and_public_ones_pass()
 {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let gateway = spawn_gateway(&toml(
        &key,
        &file,
        "sink = \"file\"\npath = \"/dev/full\"\non_failure = \"refuse\"",
    ))
    .await;
    let orders = gateway.url("/orders/1");
    let valid = token(&key);

    // Served while the sink is thought healthy; its event is the first
    // write that fails (ENOSPC), and from then on tokens are refused.
    let refused = until_status(503, || get_bearer(&orders, &valid)).await;
    assert_json_error(&refused, 503, "audit_unavailable");
    assert_eq!(refused.header("cache-control"), Some("no-store"));

    // Any token, valid or not, is refused before it is checked.
    let forged = get_bearer(&orders, "not.a.token").await;
    assert_json_error(&forged, 503, "audit_unavailable");
    // No token: unaffected, on a jwt route (its usual 401) and a public one.
    let bare = get(&orders).await;
    assert_eq!(bare.status, 401);
    let public = get(&gateway.url("/public/x")).await;
    assert_eq!(public.status, 200);
    let public_with_token = get_bearer(&gateway.url("/public/x"), &valid).await;
    assert_eq!(
        public_with_token.status, 200,
        "a public route does not read tokens"
    );

    // The admin listener's token uses too.
    let admin = get_bearer(&gateway.admin_url("/admin/credentials"), &valid).await;
    assert_json_error(&admin, 503, "audit_unavailable");
    let metrics = get(&gateway.admin_url("/metrics")).await;
    assert_eq!(metrics.status, 200, "probes and scrapes carry no token");

    let text = scrape(gateway.admin).await;
    assert!(
        metric_value(
            &text,
            "warden_auth_decisions_total{decision=\"deny\",reason=\"audit_unavailable\",route=\"orders\"}"
        ) >= 2.0,
        "{text}"
    );
    // Every token use was an event that could not be written.
    dropped_at_least(gateway.admin, 4.0).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn with_drop_a_failing_sink_keeps_serving_and_counts_every_lost_event() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let gateway = spawn_gateway(&toml(&key, &file, "sink = \"file\"\npath = \"/dev/full\"")).await;
    let valid = token(&key);
    for _ in 0..20 {
        let reply = get_bearer(&gateway.url("/orders/1"), &valid).await;
        assert_eq!(reply.status, 200);
    }
    let dropped = dropped_at_least(gateway.admin, 20.0).await;
    assert_eq!(dropped, 20.0, "exactly the events of the 20 token uses");
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------
// One log line per outage, and the end of an outage

#[tokio::test]
async fn an_outage_is_logged_once_when_it_begins_and_once_when_it_ends() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let dir = TempDir::new("audit-outage");
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let path = logs.join("audit.log");
    let warden = spawn_warden_captured(&toml(
        &key,
        &file,
        &format!(
            "sink = \"file\"\npath = \"{}\"\non_failure = \"refuse\"",
            path.display()
        ),
    ))
    .await;
    let orders = format!("http://{}/orders/1", warden.addr);
    let public = format!("http://{}/public/x", warden.addr);
    let valid = token(&key);

    let before = get_bearer(&orders, &valid).await;
    assert_eq!(before.status, 200);
    lands_in(&path, &before).await;

    // The file goes with its directory: the path cannot be opened again.
    std::fs::remove_dir_all(&logs).unwrap();
    // The writer checks its path once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    until_status(503, || get_bearer(&orders, &valid)).await;
    for _ in 0..10 {
        let refused = get_bearer(&orders, &valid).await;
        assert_json_error(&refused, 503, "audit_unavailable");
        assert_eq!(get(&public).await.status, 200);
    }
    dropped_at_least(warden.admin, 11.0).await;

    // The path can be opened again: the next refusal's event is written,
    // and that ends the outage.
    std::fs::create_dir(&logs).unwrap();
    let served = until_status(200, || get_bearer(&orders, &valid)).await;
    lands_in(&path, &served).await;
    assert!(
        events(&path)
            .iter()
            .any(|e| e["event"] == "token_use" && e["reason"] == "audit_unavailable"),
        "the refusal that found the sink working again is on record"
    );

    let output = warden.stop().await;
    let began: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("cannot write the audit log"))
        .collect();
    let ended: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("the audit log is being written again"))
        .collect();
    assert_eq!(began.len(), 1, "one error for the whole outage:\n{output}");
    assert!(began[0].contains("\"level\":\"ERROR\""), "{}", began[0]);
    assert_eq!(ended.len(), 1, "one line when it ends:\n{output}");
    assert!(!output.contains(&valid), "no token in the log");
}

// ---------------------------------------------------------------------------
// Rotation

#[tokio::test]
async fn a_file_rotated_away_is_followed_by_a_new_file_at_the_configured_path() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let dir = TempDir::new("audit-rotate");
    let path = dir.join("audit.log");
    let gateway = spawn_gateway(&toml(
        &key,
        &file,
        &format!("sink = \"file\"\npath = \"{}\"", path.display()),
    ))
    .await;
    let valid = token(&key);
    let first = get_bearer(&gateway.url("/orders/1"), &valid).await;
    lands_in(&path, &first).await;

    let rotated = dir.join("audit.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    // Noticed within a second, without a signal.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = get_bearer(&gateway.url("/orders/1"), &valid).await;
    assert_eq!(second.status, 200);
    lands_in(&path, &second).await;
    assert!(has_event_of(&rotated, &first));
    assert!(
        !has_event_of(&rotated, &second),
        "nothing more goes to the rotated file"
    );
    assert_eq!(
        metric_value(
            &scrape(gateway.admin).await,
            "warden_audit_events_dropped_total"
        ),
        0.0
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn sighup_reopens_the_audit_file() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let dir = TempDir::new("audit-hup");
    let path = dir.join("audit.log");
    let mut warden = spawn_warden(&toml(
        &key,
        &file,
        &format!("sink = \"file\"\npath = \"{}\"", path.display()),
    ))
    .await;
    let orders = format!("http://{}/orders/1", warden.addr);
    let valid = token(&key);
    let first = get_bearer(&orders, &valid).await;
    lands_in(&path, &first).await;

    let rotated = dir.join("audit.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &warden.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    warden
        .next_line(|line| line["message"] == "config reloaded")
        .await;
    let second = get_bearer(&orders, &valid).await;
    assert_eq!(second.status, 200);
    lands_in(&path, &second).await;
    assert!(has_event_of(&rotated, &first));
    assert!(!has_event_of(&rotated, &second));
}

// ---------------------------------------------------------------------------
// Leftovers beside the credential store

#[tokio::test]
async fn copies_of_the_store_a_crash_left_are_removed_at_start_and_by_the_cli() {
    let dir = TempDir::new("leftovers");
    let key = MasterKey::generate().unwrap();
    std::fs::write(dir.join("master.key"), key.to_base64().as_bytes()).unwrap();
    let store = Store::new(dir.join("creds.store"), key);
    store.create().unwrap();
    let copy = std::fs::read(dir.join("creds.store")).unwrap();
    let leftovers = [
        dir.join(&format!(
            "creds.store.tmp.{}",
            uuid::Uuid::now_v7().simple()
        )),
        dir.join(&format!(
            "creds.store.tmp.{}",
            uuid::Uuid::new_v4().simple()
        )),
    ];
    let unrelated = [
        dir.join("creds.store.tmp.keep-me"),
        dir.join("notes.txt"),
        dir.join(&format!(
            "other.store.tmp.{}",
            uuid::Uuid::now_v7().simple()
        )),
    ];
    for path in leftovers.iter().chain(&unrelated) {
        std::fs::write(path, &copy).unwrap();
    }
    let credentials = format!(
        "[credentials]\nstore = \"{}\"\nmaster_key_file = \"{}\"\n",
        dir.join_str("creds.store"),
        dir.join_str("master.key")
    );
    let toml = config(
        "",
        &format!(
            "{credentials}{}",
            route("public", "/public", "builtin:echo", "")
        ),
    );
    let mut warden = spawn_warden(&toml).await;
    let line = warden
        .next_line(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("temporary copies of the credential store"))
        })
        .await;
    assert_eq!(line["removed"], 2, "{line}");
    for path in &leftovers {
        assert!(!path.exists(), "{} is removed", path.display());
    }
    for path in &unrelated {
        assert!(path.exists(), "{} stays", path.display());
    }
    assert!(dir.join("creds.store").exists());
    assert_eq!(
        get(&format!("http://{}/public/x", warden.addr))
            .await
            .status,
        200
    );
    warden.sigterm();
    warden.wait_exit().await;

    // `warden credentials` commands that open the store do the same.
    let another = dir.join(&format!(
        "creds.store.tmp.{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&another, &copy).unwrap();
    let file = ConfigFile::new(&toml);
    let listed = warden_command(&["credentials", "list", "--config", file.path_str()])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert!(!another.exists());
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(stderr.contains("removed 1 temporary copy"), "{stderr}");
    for path in &unrelated {
        assert!(path.exists(), "{} stays", path.display());
    }
}

#[tokio::test]
async fn no_token_no_refusal_even_with_refuse_and_a_failing_sink() {
    let key = TestKey::generate("hs-1", Algorithm::HS256);
    let file = key.file();
    let gateway = spawn_gateway(&toml(
        &key,
        &file,
        "sink = \"file\"\npath = \"/dev/full\"\non_failure = \"refuse\"",
    ))
    .await;
    // Break the sink with one token use, then send only tokenless requests.
    let valid = token(&key);
    let orders = gateway.url("/orders/1");
    until_status(503, || get_bearer(&orders, &valid)).await;
    let basic = send(
        Request::get(gateway.url("/orders/1"))
            .header("authorization", "Basic YTpi")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, 401, "another scheme presents no token");
    assert_eq!(get(&gateway.url("/public/x")).await.status, 200);
    gateway.shutdown().await;
}
