//! Tokens minted for upstreams (SPEC §12 `upstream_token`), over HTTP: the
//! upstream gets a JWS for itself alone, which the test verifies with the
//! gateway's published JWKS, never the client's token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use warden::clock::unix_now;

const ISS: &str = "https://warden.minting.test";

struct Fixture {
    gateway: TestGateway,
    upstream: RecordingUpstream,
    key: TestKey,
    _files: Vec<TempFile>,
}

async fn fixture(upstream_token: &str) -> Fixture {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let key = TestKey::generate("mint-es256", Algorithm::ES256);
    let file = key.file();
    let rest = format!(
        r#"{entry}
[issuer]
iss = "{ISS}"
aud = ["warden"]
signing_kid = "mint-es256"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{up}"
upstream_token = {upstream_token}

[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "{up}"
"#,
        entry = key.config_entry(&file),
        up = upstream.url(),
    );
    let gateway = spawn_gateway(&config("", &rest)).await;
    Fixture {
        gateway,
        upstream,
        key,
        _files: vec![file],
    }
}

impl Fixture {
    fn caller(&self, sub: &str, lifetime: i64) -> String {
        let now = unix_now();
        self.key.token(&json!({
            "iss": ISS, "aud": "warden", "sub": sub, "jti": uuid::Uuid::now_v7().to_string(),
            "iat": now, "nbf": now, "exp": now + lifetime,
            "scope": "orders:read", "tenant": "acme", "email": "a@example.com",
        }))
    }

    /// Verifies `token` with the gateway's JWKS, for audience `aud`.
    async fn verify(&self, token: &str, aud: &str) -> Value {
        let jwks: JwkSet = serde_json::from_value(
            get(&self.gateway.url("/.well-known/jwks.json"))
                .await
                .json(),
        )
        .unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("the kid is published");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[aud]);
        validation.set_issuer(&[ISS]);
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("the minted token verifies with the gateway's JWKS")
            .claims
    }
}

fn bearer_of(recorded: &Recorded) -> String {
    recorded
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("the upstream gets a bearer token")
        .to_owned()
}

#[tokio::test]
async fn the_upstream_gets_a_token_for_itself_with_the_listed_claims_and_the_execution_key() {
    warden::crypto::install_providers();
    let f =
        fixture(r#"{ aud = "orders-service", ttl = "60s", claims = ["sub", "scope", "tenant"] }"#)
            .await;
    let caller = f.caller("alice", 600);
    let reply = get_with(
        &f.gateway.url("/orders/1"),
        &[("authorization", &format!("Bearer {caller}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.requests().pop().unwrap();
    let minted = bearer_of(&seen);
    assert_ne!(
        minted, caller,
        "the client's own token never reaches the upstream"
    );
    let claims = f.verify(&minted, "orders-service").await;
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], "orders-service");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["tenant"], "acme");
    assert!(
        claims.get("email").is_none(),
        "unlisted claims stay out: {claims}"
    );
    assert_eq!(
        claims["txn"],
        reply.execution_key(),
        "txn is the minting request's key"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((59..=61).contains(&(exp - iat)), "ttl 60s: {claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));
}

#[tokio::test]
async fn a_minted_token_is_reused_for_the_same_caller_and_new_for_another() {
    warden::crypto::install_providers();
    let f = fixture(
        r#"{ aud = "orders-service", ttl = "60s", claims = ["sub"], header = "X-Upstream-Token" }"#,
    )
    .await;
    let alice = f.caller("alice", 600);
    let bob = f.caller("bob", 600);
    for token in [&alice, &alice, &alice, &bob] {
        let reply = get_with(
            &f.gateway.url("/orders/1"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let seen: Vec<String> = f
        .upstream
        .requests()
        .iter()
        .map(|r| {
            assert!(
                r.header("authorization").is_none(),
                "the client's token is stripped"
            );
            r.header("x-upstream-token")
                .expect("the named header")
                .to_owned()
        })
        .collect();
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    assert_ne!(seen[2], seen[3]);
    assert_eq!(f.verify(&seen[3], "orders-service").await["sub"], "bob");
    let metrics = scrape(f.gateway.admin).await;
    assert!(
        metrics.contains("warden_upstream_tokens_minted_total{route=\"orders\"} 2"),
        "{metrics}"
    );
    // A route without upstream_token forwards no minted token.
    get_with(
        &f.gateway.url("/plain/1"),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    let plain = f.upstream.requests().pop().unwrap();
    assert!(plain.header("x-upstream-token").is_none());
}

#[tokio::test]
async fn a_minted_token_never_outlives_the_callers() {
    warden::crypto::install_providers();
    let f = fixture(r#"{ aud = "orders-service", ttl = "10m" }"#).await;
    let caller = f.caller("carol", 30);
    get_with(
        &f.gateway.url("/orders/1"),
        &[("authorization", &format!("Bearer {caller}"))],
    )
    .await;
    let minted = bearer_of(&f.upstream.requests().pop().unwrap());
    let claims = f.verify(&minted, "orders-service").await;
    assert_eq!(claims["exp"], token_claims(&caller)["exp"]);
}

#[test]
fn upstream_token_config_errors_name_the_key_and_the_fix() {
    let key = TestKey::generate("mint-es256", Algorithm::ES256);
    let file = key.file();
    let issuer = format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"w\"]\nsigning_kid = \"mint-es256\"\n",
        key.config_entry(&file)
    );
    let verify_only = format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"w\"]\n",
        key.config_entry(&file)
    );
    let cases = [
        (
            &issuer,
            "auth = \"none\"\nupstream_token = { aud = \"x\" }",
            "routes[0].upstream_token",
            "set auth = \"jwt\"",
        ),
        (
            &issuer,
            "upstream_token = { aud = \"\" }",
            "routes[0].upstream_token.aud",
            "e.g. aud",
        ),
        (
            &issuer,
            "upstream_token = { aud = \"x\", ttl = \"2h\" }",
            "routes[0].upstream_token.ttl",
            "short-lived",
        ),
        (
            &issuer,
            "upstream_token = { aud = \"x\", claims = [\"exp\"] }",
            "routes[0].upstream_token.claims",
            "copy",
        ),
        (
            &issuer,
            "upstream_token = { aud = \"x\", header = \"bad header\" }",
            "routes[0].upstream_token.header",
            "X-Upstream-Token",
        ),
        (
            &verify_only,
            "upstream_token = { aud = \"x\" }",
            "routes[0].upstream_token",
            "signing_kid",
        ),
    ];
    for (head, route_extra, at, fix) in cases {
        let toml = config(
            "",
            &format!(
                "{head}\n[[routes]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"builtin:echo\"\n{route_extra}\n"
            ),
        );
        let err = warden::Config::from_toml(&toml, "gw.toml").expect_err(route_extra);
        let text = err.to_string();
        assert!(text.contains(&format!(": {at}: ")), "{route_extra}: {text}");
        assert!(text.contains(fix), "{route_extra}: {text}");
    }
}
