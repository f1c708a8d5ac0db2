//! Several replicas sharing state in Redis (SPEC §10, §11): two `warden`
//! processes started with `[shared_state] backend = "redis"` against a real
//! `redis-server` on an ephemeral port of 127.0.0.1.
//!
//! These tests need Debian's `redis-server` on the PATH (`apt-get install -y
//! redis-server`; `.ci/run` installs it). Without it they fail: they never
//! pass by skipping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::redis_server::{REDIS_PASSWORD, RedisServer, free_port};
use crate::common::*;
use http::StatusCode;
use jsonwebtoken::Algorithm;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use warden::clock::unix_now;

const ISS: &str = "http://warden.fleet.test";
const API_KEY: &str = "wk_fleet_0123456789abcdef0123456789abcdef";
/// Two replicas and what they share.
struct Fleet {
    a: WardenProcess,
    b: WardenProcess,
    key: TestKey,
    redis: RedisServer,
    _key_file: TempFile,
}

/// The config of one replica: the shared signing key, login with one API
/// key, `max_failures` failed logins a minute, a jwt route `orders` and a
/// jwt route `limited` with `limit` as its rate limit.
fn replica_config(
    key: &TestKey,
    key_file: &TempFile,
    upstream: &str,
    max_failures: u32,
    limit: &str,
) -> String {
    let rest = format!(
        r#"[log]
format = "json"
level = "info"

[audit]
sink = "stdout"

[shared_state]
backend = "redis"
url_env = "FLEET_REDIS_URL"
key_prefix = "fleet-test:"
timeout = "200ms"
{key_entry}
[issuer]
iss = "{ISS}"
aud = ["fleet"]
signing_kid = "{kid}"
ttl = "15m"

[login]
path = "/auth"
api_key_header = "X-Api-Key"
max_failures_per_minute = {max_failures}

[[login.api_keys]]
id = "fleet-client"
key_sha256 = "{key_sha256}"
sub = "fleet-client"
scopes = ["orders:read"]

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{upstream}"
scopes = ["orders:read"]

[[routes]]
name = "limited"
path_prefix = "/limited"
upstream = "{upstream}"
rate_limit = {limit}
"#,
        key_entry = key.config_entry(key_file),
        kid = key.kid,
        key_sha256 = sha256_hex(API_KEY.as_bytes()),
    );
    config("", &rest)
}

async fn fleet(max_failures: u32, limit: &str) -> (Fleet, RecordingUpstream) {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let redis = RedisServer::start().await;
    let key = TestKey::generate("fleet-es256", Algorithm::ES256);
    let key_file = key.file();
    let toml = replica_config(&key, &key_file, &upstream.url(), max_failures, limit);
    let url = redis.url();
    let env = [("FLEET_REDIS_URL", url.as_str())];
    let a = spawn_warden_with_env(&toml, &env).await;
    let b = spawn_warden_with_env(&toml, &env).await;
    let fleet = Fleet {
        a,
        b,
        key,
        redis,
        _key_file: key_file,
    };
    // Both replicas subscribe before the tests revoke anything.
    fleet.wait_shared_state_up().await;
    (fleet, upstream)
}

impl Fleet {
    /// A token of the fleet's issuer for `sub`, with a `jti`.
    fn token(&self, sub: &str, jti: &str) -> String {
        let now = unix_now();
        self.key.token(&json!({
            "iss": ISS, "aud": "fleet", "sub": sub, "jti": jti,
            "scope": "orders:read", "iat": now, "nbf": now, "exp": now + 600,
        }))
    }

    async fn wait_shared_state_up(&self) {
        for replica in [&self.a, &self.b] {
            scrape_until(replica.admin, &["warden_shared_state_up 1"]).await;
        }
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn get_orders(replica: &WardenProcess, token: &str) -> Reply {
    get_with(
        &url(replica.addr, "/orders/1"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

async fn revoke(replica: &WardenProcess, token: &str) -> Reply {
    let request = http::Request::post(url(replica.addr, "/auth/revoke"))
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap();
    send(request).await
}

async fn login(replica: &WardenProcess, key: &str) -> Reply {
    let request = http::Request::post(url(replica.addr, "/auth"))
        .header("x-api-key", key)
        .body(empty())
        .unwrap();
    send(request).await
}

/// Polls `replica` until `token` is refused, and returns how long it took.
async fn until_refused(replica: &WardenProcess, token: &str, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = get_orders(replica, token).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_json_error(&reply, 401, "invalid_token");
            return started.elapsed();
        }
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
        assert!(
            started.elapsed() < patience,
            "the revoked token was still accepted after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other_within_a_second() {
    let (fleet, _upstream) = fleet(10, r#"{ requests = 100, per = "1h", key = "route" }"#).await;
    let mut delays = Vec::new();
    for i in 0..5 {
        let token = fleet.token("alice", &format!("jti-propagation-{i}"));
        assert_eq!(get_orders(&fleet.b, &token).await.status, StatusCode::OK);
        let revoked = revoke(&fleet.a, &token).await;
        assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.json());
        assert_eq!(revoked.json()["revoked"], true);
        delays.push(until_refused(&fleet.b, &token, Duration::from_secs(1)).await);
        // On the replica that revoked it, at once.
        assert_eq!(
            get_orders(&fleet.a, &token).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    delays.sort();
    eprintln!(
        "revocation propagation A -> B: min {:?}, median {:?}, max {:?}",
        delays[0], delays[2], delays[4]
    );
}

#[tokio::test]
async fn a_replica_started_after_a_revocation_learns_it_from_redis() {
    let (fleet, upstream) = fleet(10, r#"{ requests = 100, per = "1h", key = "route" }"#).await;
    let token = fleet.token("bob", "jti-before-c-started");
    assert_eq!(revoke(&fleet.a, &token).await.status, StatusCode::OK);
    let toml = replica_config(
        &fleet.key,
        &fleet._key_file,
        &upstream.url(),
        10,
        r#"{ requests = 100, per = "1h", key = "route" }"#,
    );
    let url = fleet.redis.url();
    let c = spawn_warden_with_env(&toml, &[("FLEET_REDIS_URL", url.as_str())]).await;
    scrape_until(c.admin, &["warden_shared_state_up 1"]).await;
    until_refused(&c, &token, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn login_failures_are_counted_across_replicas() {
    let (fleet, _upstream) = fleet(3, r#"{ requests = 100, per = "1h", key = "route" }"#).await;
    // Three failures, spread over both replicas, from one client address.
    for replica in [&fleet.a, &fleet.b, &fleet.a] {
        let reply = login(replica, "wk_fleet_wrong_key_000000000000000000000").await;
        assert_json_error(&reply, 401, "invalid_client");
    }
    // The fourth is throttled on either replica, even with the right key.
    for replica in [&fleet.b, &fleet.a] {
        let reply = login(replica, API_KEY).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{:?}",
            reply.json()
        );
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
}

#[tokio::test]
async fn a_rate_limit_holds_for_the_fleet() {
    // 10 at once (1 + burst 9), then one every 6 minutes: nothing refills
    // during the test.
    let (fleet, upstream) = fleet(
        10,
        r#"{ requests = 10, per = "1h", burst = 9, key = "sub" }"#,
    )
    .await;
    let token = fleet.token("carol", "jti-rate");
    let other = fleet.token("dave", "jti-rate-other");
    let mut passed = 0;
    let mut refused = 0;
    for i in 0..40 {
        let replica = if i % 2 == 0 { &fleet.a } else { &fleet.b };
        let reply = get_with(
            &url(replica.addr, "/limited/x"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"limited\";q=10;w=3600")
        );
        match reply.status {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_json_error(&reply, 429, "rate_limited");
                assert!(reply.header("retry-after").is_some());
                assert!(
                    reply
                        .header("ratelimit")
                        .unwrap()
                        .starts_with("\"limited\";r=0;t=")
                );
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    eprintln!("fleet-wide limit 1 + burst 9 over two replicas: {passed} of 40 passed");
    // Exact with Redis up: one bucket for the fleet, not one per replica
    // (which would let 20 through).
    assert_eq!((passed, refused), (10, 30));
    let limited_seen = upstream
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/limited/"))
        .count();
    assert_eq!(
        limited_seen, 10,
        "refused requests never reach the upstream"
    );
    // Another subject has its own bucket.
    let reply = get_with(
        &url(fleet.b.addr, "/limited/x"),
        &[("authorization", &format!("Bearer {other}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let metrics = scrape(fleet.a.admin).await;
    assert!(
        metrics.contains("warden_rate_limited_total{route=\"limited\"} 15"),
        "{metrics}"
    );
}

#[tokio::test]
async fn redis_down_is_degraded_not_dead_and_recovers_without_a_restart() {
    let (mut fleet, upstream) = fleet(10, r#"{ requests = 100, per = "1h", key = "route" }"#).await;
    let revoked_before = fleet.token("erin", "jti-revoked-before-outage");
    assert_eq!(
        revoke(&fleet.a, &revoked_before).await.status,
        StatusCode::OK
    );
    until_refused(&fleet.b, &revoked_before, Duration::from_secs(1)).await;
    let valid = fleet.token("erin", "jti-valid-through-outage");

    fleet.redis.kill();

    // Valid tokens keep verifying, revoked ones stay refused, readiness holds.
    for replica in [&fleet.a, &fleet.b] {
        assert_eq!(get_orders(replica, &valid).await.status, StatusCode::OK);
        assert_eq!(
            get_orders(replica, &revoked_before).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&url(replica.admin, "/readyz")).await.status,
            StatusCode::OK
        );
    }
    // A revocation the other replicas would not see is not reported as done...
    let during: Vec<String> = (0..3)
        .map(|i| fleet.token("erin", &format!("jti-revoked-during-outage-{i}")))
        .collect();
    for token in &during {
        let reply = revoke(&fleet.a, token).await;
        assert_json_error(&reply, 503, "shared_state_unavailable");
        // ...but this replica refuses the token at once, retries included.
        assert_eq!(
            get_orders(&fleet.a, token).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_json_error(&revoke(&fleet.a, token).await, 401, "invalid_token");
        // The other one cannot know yet.
        assert_eq!(get_orders(&fleet.b, token).await.status, StatusCode::OK);
    }
    // Logins still work, throttled by local counters.
    assert_eq!(login(&fleet.b, API_KEY).await.status, StatusCode::OK);
    let metrics = scrape_until(fleet.a.admin, &["warden_shared_state_up 0"]).await;
    assert!(
        metrics.contains("warden_shared_state_errors_total{operation=\"revoke\"} 3"),
        "{metrics}"
    );

    // Redis comes back (empty: it kept nothing) on the same address.
    let port = fleet.redis.port;
    fleet.redis = RedisServer::start_on(port, &[])
        .await
        .expect("redis-server restarts on its port");
    // Both replicas reconnect by themselves (the revocation mirror
    // resubscribes and resynchronises), then revocations are fleet-wide again.
    fleet.wait_shared_state_up().await;
    let again = fleet.token("erin", "jti-revoked-after-outage");
    let reply = revoke(&fleet.a, &again).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    // B hears about it, and about the revocations A kept for Redis during
    // the outage.
    until_refused(&fleet.b, &again, Duration::from_secs(2)).await;
    for token in &during {
        until_refused(&fleet.b, token, Duration::from_secs(3)).await;
    }
    // Redis came back empty; the replicas wrote back what they held, so a
    // replica started now still refuses the token revoked before the outage.
    let toml = replica_config(
        &fleet.key,
        &fleet._key_file,
        &upstream.url(),
        10,
        r#"{ requests = 100, per = "1h", key = "route" }"#,
    );
    let url = fleet.redis.url();
    let late = spawn_warden_with_env(&toml, &[("FLEET_REDIS_URL", url.as_str())]).await;
    scrape_until(late.admin, &["warden_shared_state_up 1"]).await;
    until_refused(&late, &revoked_before, Duration::from_secs(2)).await;

    // One warning per outage per replica, and the password in no line.
    for replica in [&mut fleet.a, &mut fleet.b] {
        let lines = replica.lines_so_far();
        let outages = lines
            .iter()
            .filter(|l| {
                l["level"] == "WARN" && l.to_string().contains("shared state (Redis) unreachable")
            })
            .count();
        assert_eq!(
            outages, 1,
            "one outage line, not one per failure: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.to_string().contains("reachable again")),
            "the recovery is logged"
        );
        let leaked: Vec<&Value> = lines
            .iter()
            .filter(|l| l.to_string().contains(REDIS_PASSWORD))
            .collect();
        assert!(
            leaked.is_empty(),
            "the Redis password was logged: {leaked:#?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_redis_password_is_reported_without_the_password() {
    let redis = RedisServer::start().await;
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("fleet-es256", Algorithm::ES256);
    let key_file = key.file();
    let toml = replica_config(
        &key,
        &key_file,
        &upstream.url(),
        10,
        r#"{ requests = 1, per = "1h", key = "route" }"#,
    );
    let wrong = "not-the-fleet-password-42";
    let bad_url = format!("redis://:{wrong}@127.0.0.1:{}/0", redis.port);
    let mut replica = spawn_warden_with_env(&toml, &[("FLEET_REDIS_URL", bad_url.as_str())]).await;
    // It serves, degraded: the rate limit counts locally.
    let token = {
        let now = unix_now();
        key.token(&json!({"iss": ISS, "aud": "fleet", "sub": "x", "jti": "j", "iat": now, "exp": now + 60}))
    };
    let auth = format!("Bearer {token}");
    let first = get_with(&url(replica.addr, "/limited/"), &[("authorization", &auth)]).await;
    assert_eq!(first.status, StatusCode::OK);
    let second = get_with(&url(replica.addr, "/limited/"), &[("authorization", &auth)]).await;
    assert_json_error(&second, 429, "rate_limited");
    let warning = replica
        .next_line(|l| l.to_string().contains("shared state (Redis) unreachable"))
        .await;
    assert!(
        warning.to_string().contains("authentication failed"),
        "{warning}"
    );
    scrape_until(replica.admin, &["warden_shared_state_up 0"]).await;
    for line in replica.lines_so_far() {
        assert!(
            !line.to_string().contains(wrong),
            "the password was logged: {line}"
        );
    }
}

#[tokio::test]
async fn a_missing_redis_url_stops_the_start_with_a_clear_error() {
    let key = TestKey::generate("fleet-es256", Algorithm::ES256);
    let key_file = key.file();
    let toml = replica_config(
        &key,
        &key_file,
        "http://127.0.0.1:9",
        10,
        r#"{ requests = 1, per = "1h", key = "route" }"#,
    );
    let file = ConfigFile::new(&toml);
    let output = warden_command(&["run", "--config", file.path_str()])
        .env_remove("FLEET_REDIS_URL")
        .output()
        .expect("run warden");
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("FLEET_REDIS_URL"), "{text}");
    assert!(text.contains("not set"), "{text}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files.
fn tls_files() -> (TempFile, TempFile, TempFile) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "fleet test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "redis.fleet.test");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_pem = leaf.signed_by(&leaf_key, &issuer).unwrap().pem();
    (
        TempFile::new("-ca.pem", ca_pem),
        TempFile::new("-redis.pem", leaf_pem),
        TempFile::new("-redis.key", leaf_key.serialize_pem()),
    )
}

#[tokio::test]
async fn replicas_share_state_over_rediss_and_refuse_an_untrusted_server() {
    let (ca, cert, key_pem) = tls_files();
    let tls_port = free_port();
    let tls_port_text = tls_port.to_string();
    let tls_args = [
        "--tls-port",
        tls_port_text.as_str(),
        "--tls-cert-file",
        cert.path_str(),
        "--tls-key-file",
        key_pem.path_str(),
        "--tls-auth-clients",
        "no",
    ];
    // Its plain port only tells the test it is up; the gateways use TLS.
    let _redis = RedisServer::start_with(&tls_args).await;
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("fleet-es256", Algorithm::ES256);
    let key_file = key.file();
    let limit = r#"{ requests = 100, per = "1h", key = "route" }"#;
    let toml = replica_config(&key, &key_file, &upstream.url(), 10, limit);
    let url = format!("rediss://:{REDIS_PASSWORD}@127.0.0.1:{tls_port}/0");
    // The test CA is trusted the way an operator trusts a private CA.
    let env = [
        ("FLEET_REDIS_URL", url.as_str()),
        ("SSL_CERT_FILE", ca.path_str()),
    ];
    let a = spawn_warden_with_env(&toml, &env).await;
    let b = spawn_warden_with_env(&toml, &env).await;
    for replica in [&a, &b] {
        scrape_until(replica.admin, &["warden_shared_state_up 1"]).await;
    }
    let now = unix_now();
    let token = key.token(&json!({
        "iss": ISS, "aud": "fleet", "sub": "tls", "jti": "jti-over-tls",
        "scope": "orders:read", "iat": now, "nbf": now, "exp": now + 600,
    }));
    assert_eq!(get_orders(&b, &token).await.status, StatusCode::OK);
    assert_eq!(revoke(&a, &token).await.status, StatusCode::OK);
    until_refused(&b, &token, Duration::from_secs(1)).await;

    // Without the CA, the server's certificate is not trusted: degraded.
    let untrusted = [("FLEET_REDIS_URL", url.as_str())];
    let mut c = spawn_warden_with_env(&toml, &untrusted).await;
    scrape_until(c.admin, &["warden_shared_state_up 0"]).await;
    assert_eq!(
        get_orders(&c, &token).await.status,
        StatusCode::OK,
        "it never heard of the revocation"
    );
    assert_json_error(&revoke(&c, &token).await, 503, "shared_state_unavailable");
    for line in c.lines_so_far() {
        assert!(
            !line.to_string().contains(REDIS_PASSWORD),
            "the password was logged: {line}"
        );
    }
}
