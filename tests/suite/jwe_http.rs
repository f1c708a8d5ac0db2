//! Encrypted tokens (SPEC §12) over HTTP, through the real gateway: nested
//! JWTs for every key-management family and content encryption, the public
//! halves in the JWKS (and encryption to what the JWKS publishes), one
//! answer for every failed decryption, bare claims and refused algorithms,
//! key roles, every §4 rule on the inner JWS, the verified-token cache, the
//! audit fields `jwe`/`jwe_kid`, the decision metrics, and `upstream_token`
//! with `encrypt_to`.
//!
//! The gateway reads its decryption keys from files the test writes; the
//! test keeps the same material as [`DecryptionKey`]s to encrypt to them (or
//! builds [`EncryptionKey`]s from the published JWKS). The upstream's
//! private key exists only here: the gateway holds its public half.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::PrivateDecryptingKey;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use warden::StartOptions;
use warden::auth::jwe::{
    self, Curve, DECRYPT_ERROR_DESCRIPTION, DecryptionKey, ENCS, Enc, EncryptionKey, KeyAlg,
};
use warden::clock::unix_now;

const ISS: &str = "https://warden.jwe.test";
const AUD: &str = "orders-api";
const ORDERS: &str = "/orders/1";

// ---------------------------------------------------------------------------
// Keys

/// One of the gateway's decryption keys, as the test knows it.
struct GatewayKey {
    kid: &'static str,
    key: DecryptionKey,
}

/// A key pair for `alg`: the key, and its `[[keys]]` entry read from a PEM file.
fn key_pair(kid: &'static str, alg: KeyAlg, curve: Curve) -> (GatewayKey, TempFile, String) {
    let der = jwe::generate_pkcs8(alg, curve).expect("a key pair");
    let file = TempFile::new(".pem", warden::auth::keys::pkcs8_pem(&der).as_bytes());
    let key = DecryptionKey::from_pkcs8_der(kid, alg, &der).expect("the new key loads");
    let entry = format!(
        "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{}\"\nprivate_key_file = \"{}\"\n",
        alg.name(),
        file.path_str()
    );
    (GatewayKey { kid, key }, file, entry)
}

/// A shared secret for `alg` (of `enc`'s CEK length for `dir`), in a
/// `secret_file` as base64url text.
fn shared_secret(kid: &'static str, alg: KeyAlg, enc: Enc) -> (GatewayKey, TempFile, String) {
    let secret = jwe::generate_secret(alg, enc).expect("a secret");
    let file = TempFile::new(".b64", URL_SAFE_NO_PAD.encode(&*secret));
    let key = DecryptionKey::from_secret(kid, alg, &secret).expect("the secret loads");
    let entry = format!(
        "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{}\"\nsecret_file = \"{}\"\n",
        alg.name(),
        file.path_str()
    );
    (GatewayKey { kid, key }, file, entry)
}

/// The SPKI PEM of an RSA PKCS#8 key.
fn rsa_spki_pem(pkcs8: &[u8]) -> String {
    let key = PrivateDecryptingKey::from_pkcs8(pkcs8).expect("RSA");
    let spki: PublicKeyX509Der<'_> = key.public_key().as_der().expect("SPKI");
    let body = STANDARD.encode(spki.as_ref());
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

// The kids of the fixture's decryption keys, in config order: RSA-OAEP-256,
// ECDH-ES+A256KW on P-256, ECDH-ES+A128KW on P-384, ECDH-ES on X25519,
// A256KW and dir (32 bytes: A256GCM and A128CBC-HS256).
const RSA: &str = "rsa-enc";
const P256: &str = "p256-enc";
const P384: &str = "p384-enc";
const X25519: &str = "x25519-enc";
const KW: &str = "kw-enc";
const DIR: &str = "dir-enc";
/// Made at start-up: only its published public half is known to the test.
const GENERATED: &str = "gen-enc";
/// The upstreams' public keys (`public_key_file`).
const UPSTREAM_EC: &str = "upstream-ec";
const UPSTREAM_RSA: &str = "upstream-rsa";

// ---------------------------------------------------------------------------
// The gateway under test

struct Fixture {
    gateway: TestGateway,
    upstream: RecordingUpstream,
    audit: AuditCapture,
    /// The gateway's signing key (`issuer.signing_kid`), which also signs
    /// the test's inner tokens.
    sig: TestKey,
    /// The gateway's decryption keys, as the test knows them.
    keys: Vec<GatewayKey>,
    /// The upstreams' private keys: the gateway holds the public halves.
    upstream_ec: DecryptionKey,
    upstream_rsa: DecryptionKey,
    _files: Vec<TempFile>,
}

fn routes(up: &str) -> String {
    format!(
        r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "{up}"
scopes = ["orders:read"]
forward_claims = {{ "X-User-Id" = "sub", "X-Tenant" = "tenant" }}

[[routes]]
name = "reports"
path_prefix = "/reports"
upstream = "{up}"
forward_authorization = true

[[routes]]
name = "minted"
path_prefix = "/minted"
upstream = "{up}"
upstream_token = {{ aud = "orders-service", ttl = "60s", claims = ["sub", "scope", "tenant"], encrypt_to = "{UPSTREAM_EC}" }}

[[routes]]
name = "sealed"
path_prefix = "/sealed"
upstream = "{up}"
upstream_token = {{ aud = "billing-service", ttl = "60s", claims = ["sub"], header = "X-Upstream-Token", encrypt_to = "{UPSTREAM_RSA}" }}
"#
    )
}

async fn fixture() -> Fixture {
    warden::crypto::install_providers();
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let sig = TestKey::generate("es-1", Algorithm::ES256);
    let sig_file = sig.file();
    let mut entries = sig.config_entry(&sig_file);
    let mut files = vec![sig_file];
    let mut keys = Vec::new();
    for (key, file, entry) in [
        key_pair(RSA, KeyAlg::RsaOaep256, Curve::P256),
        key_pair(P256, KeyAlg::EcdhEsA256Kw, Curve::P256),
        key_pair(P384, KeyAlg::EcdhEsA128Kw, Curve::P384),
        key_pair(X25519, KeyAlg::EcdhEs, Curve::X25519),
        shared_secret(KW, KeyAlg::A256Kw, Enc::A256Gcm),
        // 32 bytes: A256GCM and A128CBC-HS256.
        shared_secret(DIR, KeyAlg::Dir, Enc::A256Gcm),
    ] {
        keys.push(key);
        files.push(file);
        entries.push_str(&entry);
    }
    entries.push_str(&format!(
        "\n[[keys]]\nkid = \"{GENERATED}\"\nalg = \"ECDH-ES+A256KW\"\ngenerate = true\n"
    ));

    // The upstreams' keys: a P-256 key whose public JWK the gateway reads,
    // and an RSA key whose SPKI PEM it reads.
    let ec_der = jwe::generate_pkcs8(KeyAlg::EcdhEsA256Kw, Curve::P256).unwrap();
    let upstream_ec =
        DecryptionKey::from_pkcs8_der(UPSTREAM_EC, KeyAlg::EcdhEsA256Kw, &ec_der).unwrap();
    let ec_public = TempFile::new(
        ".jwk",
        upstream_ec.public_jwk().expect("a public JWK").to_string(),
    );
    let rsa_der = jwe::generate_pkcs8(KeyAlg::RsaOaep256, Curve::P256).unwrap();
    let upstream_rsa =
        DecryptionKey::from_pkcs8_der(UPSTREAM_RSA, KeyAlg::RsaOaep256, &rsa_der).unwrap();
    let rsa_public = TempFile::new(".pub.pem", rsa_spki_pem(&rsa_der));
    entries.push_str(&format!(
        "\n[[keys]]\nkid = \"{UPSTREAM_EC}\"\nalg = \"ECDH-ES+A256KW\"\npublic_key_file = \"{}\"\n\
         \n[[keys]]\nkid = \"{UPSTREAM_RSA}\"\nalg = \"RSA-OAEP-256\"\npublic_key_file = \"{}\"\n",
        ec_public.path_str(),
        rsa_public.path_str()
    ));
    files.push(ec_public);
    files.push(rsa_public);

    let rest = format!(
        "{entries}\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"es-1\"\n{}",
        routes(&upstream.url())
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
    Fixture {
        gateway,
        upstream,
        audit,
        sig,
        keys,
        upstream_ec,
        upstream_rsa,
        _files: files,
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

impl Fixture {
    fn key(&self, kid: &str) -> &DecryptionKey {
        &self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .unwrap_or_else(|| panic!("no key {kid}"))
            .key
    }

    /// What encrypts to the gateway's key `kid`.
    fn to(&self, kid: &str) -> EncryptionKey {
        self.key(kid).encryption_key().expect("an encryption key")
    }

    /// An inner JWS signed by the gateway's signing key.
    fn jws(&self, changes: Value) -> String {
        self.sig.token(&claims(changes))
    }

    /// A nested JWT: a JWS with `changes`, encrypted to `kid` with `A256GCM`.
    fn nested(&self, kid: &str, changes: Value) -> String {
        jwe::encrypt(&self.to(kid), self.jws(changes).as_bytes()).expect("encrypts")
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        get_bearer(&self.gateway.url(path), token).await
    }

    async fn token_use(&self, reply: &Reply) -> Value {
        let key = reply.execution_key().to_owned();
        self.audit
            .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == key.as_str())
            .await
    }

    async fn jwks(&self) -> Vec<Value> {
        let reply = get(&self.gateway.url("/.well-known/jwks.json")).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()["keys"]
            .as_array()
            .expect("a keys array")
            .clone()
    }

    /// Verifies a minted token with the gateway's JWKS (its signing key).
    async fn verify_minted(&self, token: &str, aud: &str) -> Value {
        let published = json!({ "keys": self.jwks().await });
        let sig_only: Vec<Value> = published["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["use"] == "sig")
            .cloned()
            .collect();
        let jwks: JwkSet = serde_json::from_value(json!({ "keys": sig_only })).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        let jwk = jwks
            .find(header.kid.as_deref().expect("a kid"))
            .expect("the kid is published as a signing key");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[aud]);
        validation.set_issuer(&[ISS]);
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("the minted token verifies with the gateway's JWKS")
            .claims
    }
}

async fn get_bearer(url: &str, token: &str) -> Reply {
    get_with(url, &[("authorization", &format!("Bearer {token}"))]).await
}

fn invalid_token(description: &str) -> String {
    format!("Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{description}\"")
}

/// Asserts a 401 `invalid_token` with `description`, in the challenge and the body.
fn assert_invalid_token(reply: &Reply, description: &str, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_json_error(reply, 401, "invalid_token");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(invalid_token(description).as_str()),
        "{what}"
    );
    assert_eq!(reply.json()["error_description"], description, "{what}");
}

/// The whole answer a client sees, but the execution key (new per request).
fn answer(reply: &Reply) -> (StatusCode, Option<String>, Option<String>, Value) {
    let mut body = reply.json();
    assert_eq!(
        body["execution_key"].as_str(),
        Some(reply.execution_key()),
        "the body's execution_key is the header's"
    );
    body.as_object_mut().unwrap().remove("execution_key");
    (
        reply.status,
        reply.header("www-authenticate").map(str::to_owned),
        reply.header("content-type").map(str::to_owned),
        body,
    )
}

/// The answer every refused JWE gets.
fn decryption_answer() -> (StatusCode, Option<String>, Option<String>, Value) {
    (
        StatusCode::UNAUTHORIZED,
        Some(invalid_token(DECRYPT_ERROR_DESCRIPTION)),
        Some("application/json".into()),
        json!({"error": "invalid_token", "error_description": DECRYPT_ERROR_DESCRIPTION}),
    )
}

fn decision(reason: &str, route: &str, n: u32) -> String {
    let verdict = if reason == "ok" { "allow" } else { "deny" };
    format!(
        "warden_auth_decisions_total{{decision=\"{verdict}\",reason=\"{reason}\",route=\"{route}\"}} {n}"
    )
}

/// A compact JWE with this header and random segments of these lengths.
fn crafted(header: &Value, lengths: [usize; 4]) -> String {
    let mut segments = vec![URL_SAFE_NO_PAD.encode(header.to_string())];
    for len in lengths {
        let mut bytes = vec![0u8; len];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        segments.push(URL_SAFE_NO_PAD.encode(&bytes));
    }
    segments.join(".")
}

/// `token` with the character at `index` of segment `segment` changed to
/// another (always canonical) base64url character.
fn flip(token: &str, segment: usize, index: usize) -> String {
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = segments[segment].clone().into_bytes();
    bytes[index] = if bytes[index] == b'A' { b'Q' } else { b'A' };
    segments[segment] = String::from_utf8(bytes).unwrap();
    segments.join(".")
}

// ---------------------------------------------------------------------------
// 1. Nested JWTs for every family and content encryption

#[tokio::test]
async fn a_nested_jwt_is_accepted_for_every_key_family_and_content_encryption() {
    let f = fixture().await;
    let mut accepted = 0;
    let mut encs_seen = std::collections::HashSet::new();
    for kid in [RSA, P256, P384, X25519, KW, DIR] {
        let to = f.to(kid);
        for enc in ENCS {
            if !f.key(kid).accepts_enc(enc) {
                // A 32-byte dir secret is the CEK of A256GCM and A128CBC-HS256 only.
                assert_eq!(kid, DIR, "{kid} takes every enc");
                continue;
            }
            let sub = format!("{kid}-{enc}");
            let inner = f.jws(json!({ "sub": sub }));
            let token = jwe::encrypt_with(&to, enc, Some("JWT"), inner.as_bytes()).unwrap();
            assert_eq!(token.split('.').count(), 5, "a compact JWE");
            let reply = f.get(ORDERS, &token).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{kid} with {enc}: {:?}",
                String::from_utf8_lossy(&reply.body)
            );
            let seen = f.upstream.requests().pop().unwrap();
            assert_eq!(seen.header("x-user-id"), Some(sub.as_str()), "{kid} {enc}");
            assert_eq!(seen.header("x-tenant"), Some("acme"));
            assert_eq!(
                seen.header("authorization"),
                None,
                "the client's token never reaches the upstream"
            );
            for (name, value) in &seen.headers {
                let value = value.to_str().unwrap_or_default();
                assert!(
                    !value.contains(&token) && !value.contains(&inner),
                    "header {name} carries the token"
                );
            }
            let event = f.token_use(&reply).await;
            assert_eq!(event["decision"], "allow", "{event}");
            assert_eq!(event["jwe"], true, "{event}");
            assert_eq!(event["jwe_kid"], kid, "{event}");
            assert_eq!(event["sub"], sub.as_str(), "{event}");
            encs_seen.insert(enc);
            accepted += 1;
        }
    }
    assert_eq!(accepted, 5 * 4 + 2);
    assert_eq!(encs_seen.len(), 4, "every content encryption was used");

    // A route with forward_authorization passes the token on as presented:
    // the JWE, not what it holds.
    let token = f.nested(P256, json!({}));
    let reply = f.get("/reports/q3", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.requests().pop().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );

    scrape_until(
        f.gateway.admin,
        &[&decision("ok", "orders", 22), &decision("ok", "reports", 1)],
    )
    .await;
}

// ---------------------------------------------------------------------------
// 2. The JWKS

#[tokio::test]
async fn the_jwks_publishes_the_public_halves_of_decryption_keys_and_encrypting_to_them_works() {
    let f = fixture().await;
    let published = f.jwks().await;
    let kids: Vec<&str> = published
        .iter()
        .map(|k| k["kid"].as_str().expect("every key has a kid"))
        .collect();
    assert_eq!(
        kids,
        ["es-1", RSA, P256, P384, X25519, GENERATED],
        "the signing key, then every asymmetric decryption key; never a \
         shared secret, never an upstream's key"
    );
    for jwk in &published {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(jwk.get(private).is_none(), "{private} published: {jwk}");
        }
    }
    let by_kid = |kid: &str| published.iter().find(|k| k["kid"] == kid).unwrap();
    let sig = by_kid("es-1");
    assert_eq!(sig["use"], "sig");
    assert_eq!(sig["alg"], "ES256");
    for (kid, alg, kty, crv) in [
        (RSA, "RSA-OAEP-256", "RSA", None),
        (P256, "ECDH-ES+A256KW", "EC", Some("P-256")),
        (P384, "ECDH-ES+A128KW", "EC", Some("P-384")),
        (X25519, "ECDH-ES", "OKP", Some("X25519")),
        (GENERATED, "ECDH-ES+A256KW", "EC", Some("P-256")),
    ] {
        let jwk = by_kid(kid);
        assert_eq!(jwk["use"], "enc", "{jwk}");
        assert_eq!(jwk["alg"], alg, "{jwk}");
        assert_eq!(jwk["kty"], kty, "{jwk}");
        assert_eq!(jwk["crv"].as_str(), crv, "{jwk}");
        if kid != GENERATED {
            assert_eq!(
                *jwk,
                f.key(kid).public_jwk().unwrap(),
                "the published key is the configured key's public half"
            );
        }
    }

    // A client that knows only the JWKS encrypts to each published key;
    // the key made at start-up is known by its JWK alone.
    for jwk in published.iter().filter(|k| k["use"] == "enc") {
        let kid = jwk["kid"].as_str().unwrap();
        let alg = KeyAlg::parse(jwk["alg"].as_str().unwrap()).expect("an allowed alg");
        let to = EncryptionKey::from_public_jwk(kid, alg, jwk).expect("a usable public key");
        let sub = format!("via-jwks-{kid}");
        let inner = f.jws(json!({ "sub": sub }));
        let token = jwe::encrypt(&to, inner.as_bytes()).unwrap();
        let reply = f.get(ORDERS, &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{kid}: {:?}", reply.body);
        let seen = f.upstream.requests().pop().unwrap();
        assert_eq!(seen.header("x-user-id"), Some(sub.as_str()));
        assert_eq!(f.token_use(&reply).await["jwe_kid"], kid);
    }
    // The signing key is no encryption key.
    assert!(EncryptionKey::from_public_jwk("es-1", KeyAlg::EcdhEsA256Kw, sig).is_err());
}

// ---------------------------------------------------------------------------
// 3. Tampering: one answer

#[tokio::test]
async fn a_tampered_jwe_gets_the_one_decryption_answer_whatever_segment_was_changed() {
    let f = fixture().await;
    let expected = decryption_answer();
    let mut refused = 0u32;
    for kid in [RSA, P256] {
        let token = f.nested(kid, json!({}));
        assert_eq!(f.get(ORDERS, &token).await.status, StatusCode::OK, "{kid}");
        let lengths: Vec<usize> = token.split('.').map(str::len).collect();
        for (segment, &len) in lengths.iter().enumerate() {
            assert!(len > 0, "{kid}: segment {segment} is empty");
            for index in [0, len / 2, len - 1] {
                let tampered = flip(&token, segment, index);
                assert_ne!(tampered, token);
                let reply = f.get(ORDERS, &tampered).await;
                let what = format!("{kid}, segment {segment}, character {index}");
                assert_eq!(answer(&reply), expected, "{what}");
                let event = f.token_use(&reply).await;
                assert_eq!(event["decision"], "deny", "{what}: {event}");
                if segment == 0 {
                    // A header that no longer parses or names another alg
                    // may be told apart in the metrics, never in the answer.
                    let reason = event["reason"].as_str().unwrap();
                    assert!(
                        ["decrypt_failed", "alg_not_allowed"].contains(&reason),
                        "{what}: {event}"
                    );
                } else {
                    assert_eq!(event["reason"], "decrypt_failed", "{what}: {event}");
                }
                assert!(event.get("jwe_kid").is_none(), "{what}: {event}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2 * 5 * 3);

    // A token for the right kid but another key, and a token cut short, get
    // the same answer too.
    let stranger = {
        let der = jwe::generate_pkcs8(KeyAlg::RsaOaep256, Curve::P256).unwrap();
        DecryptionKey::from_pkcs8_der(RSA, KeyAlg::RsaOaep256, &der).unwrap()
    };
    let inner = f.jws(json!({}));
    let wrong_key = jwe::encrypt(&stranger.encryption_key().unwrap(), inner.as_bytes()).unwrap();
    let token = f.nested(RSA, json!({}));
    let (head, _) = token.rsplit_once('.').unwrap();
    let no_tag = format!("{head}.");
    for (what, token) in [("another key", wrong_key), ("no tag", no_tag)] {
        assert_eq!(answer(&f.get(ORDERS, &token).await), expected, "{what}");
    }
    assert_eq!(
        f.upstream.requests().len(),
        2,
        "only the two untampered tokens passed"
    );
}

// ---------------------------------------------------------------------------
// 4. Bare claims are not a token

#[tokio::test]
async fn a_jwe_of_bare_claims_or_of_anything_but_a_jws_is_token_not_signed() {
    let f = fixture().await;
    // Claims as a client would send them: `iss` is a URL, so the JSON holds
    // dots; the number of dots must not matter.
    let bare = claims(json!({})).to_string();
    assert_eq!(bare.matches('.').count(), 2, "{bare}");
    let no_dot = claims(json!({"iss": "warden"})).to_string();
    let three_dots = claims(json!({"iss": "https://a.warden.jwe.test"})).to_string();
    let inner = f.jws(json!({}));
    let to = f.to(P256);
    let double = jwe::encrypt(&to, f.nested(RSA, json!({})).as_bytes()).unwrap();
    let cases = [
        (
            "bare claims without a dot",
            jwe::encrypt_with(&to, Enc::A256Gcm, Some("JWT"), no_dot.as_bytes()).unwrap(),
        ),
        (
            "bare claims with three dots",
            jwe::encrypt_with(&to, Enc::A256Gcm, Some("JWT"), three_dots.as_bytes()).unwrap(),
        ),
        (
            "bare claims with two dots (an https iss), cty JWT",
            jwe::encrypt_with(&to, Enc::A256Gcm, Some("JWT"), bare.as_bytes()).unwrap(),
        ),
        (
            "bare claims, no cty",
            jwe::encrypt_with(&f.to(RSA), Enc::A128CbcHs256, None, bare.as_bytes()).unwrap(),
        ),
        (
            "bare claims with a shared secret",
            jwe::encrypt_with(&f.to(DIR), Enc::A256Gcm, Some("JWT"), bare.as_bytes()).unwrap(),
        ),
        (
            "a JWS, cty json",
            jwe::encrypt_with(&to, Enc::A256Gcm, Some("json"), inner.as_bytes()).unwrap(),
        ),
        ("a JWE in a JWE", double),
    ];
    for (what, token) in &cases {
        let reply = f.get(ORDERS, token).await;
        assert_invalid_token(&reply, "token not signed", what);
        let event = f.token_use(&reply).await;
        assert_eq!(event["reason"], "not_signed", "{what}: {event}");
        assert_eq!(event["decision"], "deny");
    }
    // The same JWS, with cty JWT or without, is accepted.
    for cty in [Some("JWT"), Some("jwt"), None] {
        let token = jwe::encrypt_with(&to, Enc::A256Gcm, cty, inner.as_bytes()).unwrap();
        assert_eq!(
            f.get(ORDERS, &token).await.status,
            StatusCode::OK,
            "{cty:?}"
        );
    }
    // An unsecured JWT inside is refused as it is outside.
    let unsecured = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(&bare)
    );
    let outside = f.get(ORDERS, &unsecured).await;
    assert_eq!(outside.status, StatusCode::UNAUTHORIZED);
    let token = jwe::encrypt(&to, unsecured.as_bytes()).unwrap();
    let inside = f.get(ORDERS, &token).await;
    assert_eq!(answer(&inside), answer(&outside), "alg none, encrypted");
    assert_eq!(f.upstream.requests().len(), 3);
    scrape_until(f.gateway.admin, &[&decision("not_signed", "orders", 7)]).await;
}

// ---------------------------------------------------------------------------
// 5. Refused algorithms

#[tokio::test]
async fn rsa1_5_pbes2_unknown_encs_and_zip_are_refused_with_the_decryption_answer() {
    let f = fixture().await;
    let expected = decryption_answer();
    let by_name = [
        (
            "RSA1_5",
            crafted(
                &json!({"alg": "RSA1_5", "enc": "A128CBC-HS256"}),
                [256, 16, 48, 16],
            ),
        ),
        (
            "RSA1_5 with the RSA key's kid",
            crafted(
                &json!({"alg": "RSA1_5", "enc": "A128CBC-HS256", "kid": RSA}),
                [256, 16, 48, 16],
            ),
        ),
        (
            "PBES2",
            crafted(
                &json!({"alg": "PBES2-HS512+A256KW", "enc": "A256GCM",
                        "p2s": URL_SAFE_NO_PAD.encode([7u8; 16]), "p2c": 10_000_000}),
                [40, 12, 48, 16],
            ),
        ),
        (
            "RSA-OAEP (SHA-1)",
            crafted(
                &json!({"alg": "RSA-OAEP", "enc": "A256GCM"}),
                [256, 12, 48, 16],
            ),
        ),
        (
            "A192GCM",
            crafted(
                &json!({"alg": "RSA-OAEP-256", "enc": "A192GCM", "kid": RSA}),
                [256, 12, 48, 16],
            ),
        ),
    ];
    for (what, token) in &by_name {
        let reply = f.get(ORDERS, token).await;
        assert_eq!(answer(&reply), expected, "{what}");
        let event = f.token_use(&reply).await;
        assert_eq!(event["reason"], "alg_not_allowed", "{what}: {event}");
    }

    // zip, on a token that is otherwise authentic (dir, A256GCM, the
    // gateway's secret): refused before any decryption.
    let secret = dir_secret(&f);
    let inner = f.jws(json!({}));
    let zipped = seal_dir(
        &secret,
        &json!({"alg": "dir", "enc": "A256GCM", "kid": DIR, "cty": "JWT", "zip": "DEF"}),
        inner.as_bytes(),
    );
    let plain = seal_dir(
        &secret,
        &json!({"alg": "dir", "enc": "A256GCM", "kid": DIR, "cty": "JWT"}),
        inner.as_bytes(),
    );
    assert_eq!(
        f.get(ORDERS, &plain).await.status,
        StatusCode::OK,
        "the hand-made token is authentic"
    );
    // Without a kid, the one key of the header's alg opens it.
    let kidless = seal_dir(
        &secret,
        &json!({"alg": "dir", "enc": "A256GCM", "cty": "JWT"}),
        inner.as_bytes(),
    );
    assert_eq!(
        f.get(ORDERS, &kidless).await.status,
        StatusCode::OK,
        "no kid"
    );
    let reply = f.get(ORDERS, &zipped).await;
    assert_eq!(answer(&reply), expected, "zip");
    assert_eq!(f.token_use(&reply).await["decision"], "deny");
    // crit likewise.
    let critical = seal_dir(
        &secret,
        &json!({"alg": "dir", "enc": "A256GCM", "kid": DIR, "cty": "JWT",
                "crit": ["exp"], "exp": unix_now() + 60}),
        inner.as_bytes(),
    );
    assert_eq!(answer(&f.get(ORDERS, &critical).await), expected, "crit");
    // The JSON serialization is never read as a token either.
    let json_form = json!({"protected": "eyJ9", "iv": "", "ciphertext": "", "tag": ""}).to_string();
    assert_eq!(
        f.get(ORDERS, &json_form).await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(f.upstream.requests().len(), 2, "only the authentic tokens");
    scrape_until(
        f.gateway.admin,
        &[&decision("alg_not_allowed", "orders", 5)],
    )
    .await;
}

/// The `dir` key's secret, read back from the file the gateway reads (the
/// files are the signing key's, then one per decryption key, in order).
fn dir_secret(f: &Fixture) -> Vec<u8> {
    let index = f.keys.iter().position(|k| k.kid == DIR).unwrap();
    let text = std::fs::read_to_string(&f._files[1 + index].path).unwrap();
    URL_SAFE_NO_PAD.decode(text.trim()).unwrap()
}

/// A compact JWE with exactly `header`, sealed with AES-256-GCM under the
/// `dir` secret (what a sender that honours whatever header it writes makes).
fn seal_dir(secret: &[u8], header: &Value, plaintext: &[u8]) -> String {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let protected = URL_SAFE_NO_PAD.encode(header.to_string());
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, secret).unwrap());
    let mut iv = [0u8; 12];
    aws_lc_rs::rand::fill(&mut iv).unwrap();
    let mut sealed = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(protected.as_bytes()),
            &mut sealed,
        )
        .unwrap();
    format!(
        "{protected}..{}.{}.{}",
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(&sealed),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

// ---------------------------------------------------------------------------
// 6. Key roles

#[tokio::test]
async fn signing_keys_and_encryption_keys_are_not_interchangeable() {
    let f = fixture().await;
    // A JWS whose kid names a decryption key: no signing key has that kid.
    for kid in [RSA, P256, KW, UPSTREAM_EC] {
        let mut header = f.sig.header();
        header["kid"] = kid.into();
        let token = f.sig.sign(&header, &claims(json!({})));
        let reply = f.get(ORDERS, &token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "JWS with kid {kid}");
        assert_json_error(&reply, 401, "invalid_token");
        assert_eq!(f.token_use(&reply).await["reason"], "unknown_kid", "{kid}");
    }
    // A JWE whose kid names the signing key: encrypted to a real decryption
    // key's public half, but labelled with the signing key's kid.
    let published = f.jwks().await;
    let p256 = published.iter().find(|k| k["kid"] == P256).unwrap();
    let mislabelled = EncryptionKey::from_public_jwk("es-1", KeyAlg::EcdhEsA256Kw, p256).unwrap();
    let inner = f.jws(json!({}));
    let token = jwe::encrypt(&mislabelled, inner.as_bytes()).unwrap();
    let reply = f.get(ORDERS, &token).await;
    assert_eq!(answer(&reply), decryption_answer(), "a JWE with kid es-1");
    assert_eq!(f.token_use(&reply).await["reason"], "decrypt_failed");
    // An upstream's public key decrypts nothing at the gateway: a token
    // encrypted to it (with the upstream's own public half) is refused.
    let to_upstream = f.upstream_ec.encryption_key().unwrap();
    let token = jwe::encrypt(&to_upstream, inner.as_bytes()).unwrap();
    assert_eq!(
        answer(&f.get(ORDERS, &token).await),
        decryption_answer(),
        "a JWE to the upstream's key"
    );
    assert!(f.upstream.requests().is_empty());

    // signing_kid naming a decryption key is a config error.
    let (_enc, _file, entry) = key_pair("enc-1", KeyAlg::RsaOaep256, Curve::P256);
    let sig_file = f.sig.file();
    let toml = config(
        "",
        &format!(
            "{}{entry}\n[issuer]\niss = \"{ISS}\"\naud = [\"w\"]\nsigning_kid = \"enc-1\"\n",
            f.sig.config_entry(&sig_file)
        ),
    );
    let text = warden::Config::from_toml(&toml, "gw.toml")
        .expect_err("signing_kid names an encryption key")
        .to_string();
    assert!(text.contains(": issuer.signing_kid: "), "{text}");
    assert!(text.contains("is an encryption key"), "{text}");
    assert!(text.contains("enc-1"), "{text}");
}

// ---------------------------------------------------------------------------
// 7. The inner JWS gets every §4 rule

#[tokio::test]
async fn the_inner_jws_gets_every_rule_of_section_4() {
    let f = fixture().await;
    let now = unix_now();
    let stranger = TestKey::generate("es-1", Algorithm::ES256);
    let mut bad_signature = f.jws(json!({})).into_bytes();
    // The signature's first character, changed (canonical either way).
    let at = bad_signature.iter().rposition(|b| *b == b'.').unwrap() + 1;
    bad_signature[at] = if bad_signature[at] == b'A' {
        b'Q'
    } else {
        b'A'
    };
    let bad_signature = String::from_utf8(bad_signature).unwrap();
    let cases = [
        (
            "expired",
            f.jws(json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200})),
            "token expired",
            "token_expired",
        ),
        (
            "for another audience",
            f.jws(json!({"aud": "billing-api"})),
            "audience not accepted",
            "audience_mismatch",
        ),
        (
            "from another issuer",
            f.jws(json!({"iss": "https://elsewhere.test"})),
            "issuer not accepted",
            "issuer_mismatch",
        ),
        (
            "with a bad signature",
            bad_signature,
            "signature invalid",
            "signature_invalid",
        ),
        (
            "signed by another key with the same kid",
            stranger.token(&claims(json!({}))),
            "signature invalid",
            "signature_invalid",
        ),
    ];
    let to = f.to(RSA);
    for (what, inner, description, reason) in &cases {
        // Outside first: the rule's own answer, as SPEC §4 gives it.
        let outside = f.get(ORDERS, inner).await;
        assert_eq!(outside.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_invalid_token(&outside, description, what);
        let token = jwe::encrypt(&to, inner.as_bytes()).unwrap();
        let reply = f.get(ORDERS, &token).await;
        assert_eq!(
            answer(&reply),
            answer(&outside),
            "{what}: the same answer encrypted or not"
        );
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let event = f.token_use(&reply).await;
        assert_eq!(event["reason"], *reason, "{what}: {event}");
        assert_eq!(event["decision"], "deny");
    }
    // Scopes and claims hold for the inner token too.
    let token = f.nested(P384, json!({"scope": "orders:write"}));
    let reply = f.get(ORDERS, &token).await;
    assert_json_error(&reply, 403, "insufficient_scope");
    assert_eq!(f.token_use(&reply).await["reason"], "insufficient_scope");
    assert!(
        f.upstream.requests().is_empty(),
        "nothing refused got through"
    );

    // Accepted: audited as encrypted, with the key that decrypted it; a
    // plain JWS is not.
    let inner = f.jws(json!({"sub": "dora"}));
    let token = jwe::encrypt(&to, inner.as_bytes()).unwrap();
    let reply = f.get(ORDERS, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let event = f.token_use(&reply).await;
    assert_eq!(event["decision"], "allow");
    assert_eq!(event["jwe"], true, "{event}");
    assert_eq!(event["jwe_kid"], RSA, "{event}");
    assert_eq!(event["sub"], "dora");
    assert_eq!(event["jti"], token_claims(&inner)["jti"]);
    let plain = f.get(ORDERS, &f.jws(json!({}))).await;
    assert_eq!(plain.status, StatusCode::OK);
    let event = f.token_use(&plain).await;
    assert!(event.get("jwe").is_none(), "{event}");
    assert!(event.get("jwe_kid").is_none(), "{event}");

    // Revoked: the operator's own token comes encrypted too.
    let mine = token_claims(&inner);
    let operator = f.nested(KW, json!({"sub": "ops", "scope": "warden:admin"}));
    let revoke = Request::post(f.gateway.admin_url("/admin/revoke"))
        .header("authorization", format!("Bearer {operator}"))
        .header("content-type", "application/json")
        .body(full(
            json!({"jti": mine["jti"], "exp": mine["exp"]}).to_string(),
        ))
        .unwrap();
    let revoked = send(revoke).await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    for (what, token) in [("encrypted", &token), ("bare", &inner)] {
        let reply = f.get(ORDERS, token).await;
        assert_invalid_token(&reply, "token revoked", what);
        assert_eq!(f.token_use(&reply).await["reason"], "token_revoked");
    }
    assert_eq!(f.upstream.requests().len(), 2);
}

// ---------------------------------------------------------------------------
// 8. The verified-token cache

#[tokio::test]
async fn a_repeated_jwe_is_served_from_the_verified_token_cache_keyed_on_the_outer_token() {
    let f = fixture().await;
    let inner = f.jws(json!({}));
    let token = jwe::encrypt(&f.to(P256), inner.as_bytes()).unwrap();
    let cache = |result: &str, n: u32| {
        format!("warden_token_cache_requests_total{{result=\"{result}\"}} {n}")
    };
    // As for a JWS: verified and remembered, verified and cached, then a hit.
    let mut keys = Vec::new();
    for (n, (miss, hit)) in [(1, 0), (2, 0), (2, 1)].into_iter().enumerate() {
        let reply = f.get(ORDERS, &token).await;
        assert_eq!(reply.status, StatusCode::OK, "use {}", n + 1);
        keys.push(reply.execution_key().to_owned());
        scrape_until(f.gateway.admin, &[&cache("miss", miss), &cache("hit", hit)]).await;
    }
    // Served from the cache, it is still audited as encrypted.
    let key = keys.last().unwrap().clone();
    let event = f
        .audit
        .wait_for(|e| e["event"] == "token_use" && e["execution_key"] == key.as_str())
        .await;
    assert_eq!(event["jwe"], true, "{event}");
    assert_eq!(event["jwe_kid"], P256, "{event}");

    // The inner JWS bare, and the same JWS encrypted again, are other tokens.
    assert_eq!(f.get(ORDERS, &inner).await.status, StatusCode::OK);
    let again = jwe::encrypt(&f.to(P256), inner.as_bytes()).unwrap();
    assert_ne!(again, token);
    let reply = f.get(ORDERS, &again).await;
    assert_eq!(reply.status, StatusCode::OK);
    scrape_until(f.gateway.admin, &[&cache("miss", 4), &cache("hit", 1)]).await;
    let event = f.token_use(&reply).await;
    assert_eq!(event["jwe_kid"], P256);
    // The bare JWS, verified twice now (the cache knows it by its own hash),
    // hits as a bare JWS: no jwe mark.
    f.get(ORDERS, &inner).await;
    let reply = f.get(ORDERS, &inner).await;
    scrape_until(f.gateway.admin, &[&cache("hit", 2)]).await;
    let event = f.token_use(&reply).await;
    assert!(event.get("jwe").is_none(), "{event}");
}

// ---------------------------------------------------------------------------
// 9. upstream_token with encrypt_to

#[tokio::test]
async fn an_upstream_token_with_encrypt_to_reaches_the_upstream_as_a_jwe_only_it_can_read() {
    let f = fixture().await;
    // The caller's token may itself come encrypted.
    let caller = f.nested(X25519, json!({"sub": "erin", "email": "e@example.com"}));
    let reply = f.get("/minted/1", &caller).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let seen = f.upstream.requests().pop().unwrap();
    let minted = seen
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("the upstream gets a bearer token")
        .to_owned();
    assert_ne!(minted, caller);
    assert_eq!(minted.split('.').count(), 5, "a compact JWE: {minted}");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(minted.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], UPSTREAM_EC, "{header}");
    assert_eq!(header["alg"], "ECDH-ES+A256KW", "{header}");
    assert_eq!(header["cty"], "JWT", "{header}");
    // The gateway cannot read it (it has only the public half); the upstream can.
    assert_eq!(
        answer(&f.get(ORDERS, &minted).await),
        decryption_answer(),
        "the gateway holds no private key for the upstream"
    );
    let opened = jwe::decrypt(&minted, [&f.upstream_ec]).expect("the upstream decrypts it");
    let jws = String::from_utf8(opened.plaintext).unwrap();
    assert_eq!(jws.split('.').count(), 3, "a JWS inside");
    let claims = f.verify_minted(&jws, "orders-service").await;
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], "orders-service");
    assert_eq!(claims["sub"], "erin");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["tenant"], "acme");
    assert!(claims.get("email").is_none(), "{claims}");
    assert_eq!(claims["txn"], reply.execution_key());
    // Another upstream's private key does not open it.
    assert!(jwe::decrypt(&minted, [&f.upstream_rsa]).is_err());

    // RSA, from an SPKI PEM, in a header of the route's choosing.
    let caller = f.jws(json!({"sub": "frank"}));
    let reply = f.get("/sealed/1", &caller).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = f.upstream.requests().pop().unwrap();
    assert!(seen.header("authorization").is_none());
    let minted = seen.header("x-upstream-token").expect("the named header");
    assert_eq!(minted.split('.').count(), 5);
    let opened = jwe::decrypt(minted, [&f.upstream_rsa]).expect("the RSA upstream decrypts it");
    assert_eq!(opened.key.kid(), UPSTREAM_RSA);
    let jws = String::from_utf8(opened.plaintext).unwrap();
    let claims = f.verify_minted(&jws, "billing-service").await;
    assert_eq!(claims["sub"], "frank");
    assert_eq!(claims["aud"], "billing-service");
    assert!(jwe::decrypt(minted, [&f.upstream_ec]).is_err());
}

#[test]
fn encrypt_to_must_name_an_upstreams_public_key() {
    warden::crypto::install_providers();
    let sig = TestKey::generate("es-1", Algorithm::ES256);
    let sig_file = sig.file();
    let (_private, _private_file, private_entry) =
        key_pair("gw-enc", KeyAlg::EcdhEsA256Kw, Curve::P256);
    let (_secret, _secret_file, secret_entry) =
        shared_secret("gw-kw", KeyAlg::A256Kw, Enc::A256Gcm);
    let (upstream, _, _) = key_pair("up-enc", KeyAlg::EcdhEsA256Kw, Curve::P256);
    let public_file = TempFile::new(".jwk", upstream.key.public_jwk().unwrap().to_string());
    let keys = format!(
        "{}{private_entry}{secret_entry}\n[[keys]]\nkid = \"up-enc\"\nalg = \"ECDH-ES+A256KW\"\npublic_key_file = \"{}\"\n\
         \n[issuer]\niss = \"{ISS}\"\naud = [\"w\"]\nsigning_kid = \"es-1\"\n",
        sig.config_entry(&sig_file),
        public_file.path_str()
    );
    let route = |encrypt_to: &str| {
        format!(
            "{keys}\n[[routes]]\nname = \"plain\"\npath_prefix = \"/plain\"\nupstream = \"builtin:echo\"\n\
             \n[[routes]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"builtin:echo\"\n\
             upstream_token = {{ aud = \"x\", encrypt_to = \"{encrypt_to}\" }}\n"
        )
    };
    warden::Config::from_toml(&config("", &route("up-enc")), "gw.toml")
        .expect("the upstream's public key is what encrypt_to names");
    for (kid, says) in [
        (
            "nope",
            &["no [[keys]] entry with a public encryption key"][..],
        ),
        ("gw-enc", &["one of the gateway's own decryption keys"]),
        ("es-1", &["no [[keys]] entry with a public encryption key"]),
        // A shared secret is the gateway's (it decrypts); either word will do.
        (
            "gw-kw",
            &["shared secret", "one of the gateway's own decryption keys"],
        ),
    ] {
        let text = warden::Config::from_toml(&config("", &route(kid)), "gw.toml")
            .expect_err(kid)
            .to_string();
        assert!(
            text.contains(": routes[1].upstream_token.encrypt_to: "),
            "{kid}: {text}"
        );
        assert!(text.contains(&format!("{kid:?}")), "{kid}: {text}");
        assert!(says.iter().any(|s| text.contains(s)), "{kid}: {text}");
        assert!(text.contains("public key"), "{kid}: the fix: {text}");
    }
}

// ---------------------------------------------------------------------------
// 10. The decision metrics

#[tokio::test]
async fn decrypt_failed_and_not_signed_are_counted_per_route() {
    let f = fixture().await;
    let token = f.nested(RSA, json!({}));
    let tampered = flip(&token, 3, 5);
    let bare = jwe::encrypt(&f.to(P256), claims(json!({})).to_string().as_bytes()).unwrap();
    for (path, token, n) in [
        (ORDERS, &tampered, 3),
        ("/reports/1", &tampered, 1),
        (ORDERS, &bare, 2),
        ("/reports/1", &bare, 1),
    ] {
        for _ in 0..n {
            assert_eq!(f.get(path, token).await.status, StatusCode::UNAUTHORIZED);
        }
    }
    scrape_until(
        f.gateway.admin,
        &[
            &decision("decrypt_failed", "orders", 3),
            &decision("decrypt_failed", "reports", 1),
            &decision("not_signed", "orders", 2),
            &decision("not_signed", "reports", 1),
        ],
    )
    .await;
    let metrics = scrape(f.gateway.admin).await;
    for forbidden in ["jwe_", "decryption_failed"] {
        assert!(
            !metrics
                .lines()
                .filter(|l| l.starts_with("warden_auth_decisions_total"))
                .any(|l| l.contains(forbidden)),
            "a decision label tells the cause apart ({forbidden}): {metrics}"
        );
    }
}
