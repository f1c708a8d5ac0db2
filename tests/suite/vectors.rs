//! Published JOSE test vectors against warden's token verification.
//!
//! - RFC 7515 Appendix A (A.1 HS256, A.2 RS256, A.3 ES256, A.4 ES512, A.5 `none`);
//! - RFC 7520 §4 (the JOSE cookbook: RS256, PS384, ES512, HS256, JSON serializations);
//! - RFC 8037 A.4 (Ed25519);
//! - Wycheproof `json_web_signature_test.json` and `json_web_key_test.json`.
//!
//! The vectors are read at test time from `../shared/vectors/` when it exists,
//! otherwise from the copies in `tests/fixtures/vectors/` (see its README).
//! Signatures alone are checked through `warden verify` ([`cli::verify`]) and
//! through [`parse_jwks`] + [`jwt::verify_signature_in`], the path a trusted
//! issuer's JWKS takes; whole JWTs through [`jwt::verify`].

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use warden::auth::jwk::parse_jwks;
use warden::auth::jwt::{self, IssuerPolicy, KeySet, Reason, VerifyingKey};
use warden::auth::keys::parse_algorithm;
use warden::cli::{self, VerifyWith};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vectors");

/// Where the vectors are: the shared directory beside the checkout, or the
/// copies committed with the tests (a clean clone in CI has no `../shared`).
fn vectors_dir() -> PathBuf {
    let shared = Path::new(SHARED);
    if shared.is_dir() {
        shared.to_owned()
    } else {
        PathBuf::from(FIXTURES)
    }
}

fn vector(relative: &str) -> Value {
    let path = vectors_dir().join(relative);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
}

fn b64(value: &Value, key: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(str_of(value, key)).unwrap()
}

/// A file under the test target's scratch directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vectors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("key-{}.json", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A JWK without its private members, as a verifier would hold it.
fn public_jwk(jwk: &Value) -> Value {
    let mut public = jwk.clone();
    if let Some(obj) = public.as_object_mut()
        && obj.get("kty").and_then(Value::as_str) != Some("oct")
    {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
            obj.remove(private);
        }
    }
    public
}

/// `warden verify --key FILE --alg ALG`: whether the signature verifies.
/// `Err` when the command refuses the key or the algorithm.
fn verify_with_key(token: &str, jwk: &Value, alg: &str) -> Result<bool, String> {
    let file = TempFile::new(jwk.to_string().as_bytes());
    cli::verify(token, VerifyWith::Key(&file.0, alg))
        .map(|report| report.valid)
        .map_err(|err| err.to_string())
}

/// `warden verify --jwks FILE`: whether the signature verifies.
fn verify_with_jwks(token: &str, keys: &[Value]) -> bool {
    let file = TempFile::new(json!({ "keys": keys }).to_string().as_bytes());
    cli::verify(token, VerifyWith::Jwks(&file.0))
        .unwrap_or_else(|e| panic!("warden verify --jwks failed: {e}"))
        .valid
}

/// The rejection reason of a token that must not parse.
fn parse_reason(token: &str) -> Reason {
    match jwt::parse(token) {
        Ok(parsed) => panic!("{token:?} parsed, with header {:?}", parsed.header),
        Err(rejection) => rejection.reason,
    }
}

/// The asymmetric algorithms warden supports: what a trusted issuer may list
/// in `algs` (the config refuses HS* there).
fn issuer_algs() -> Vec<Algorithm> {
    warden::auth::keys::SUPPORTED_ALGORITHMS
        .split(", ")
        .filter_map(parse_algorithm)
        .filter(|alg| !warden::auth::keys::is_hmac(*alg))
        .collect()
}

// ---------------------------------------------------------------- RFC 7515

fn rfc7515(section: &str) -> Value {
    let doc = vector("rfc7515_appendix_a.json");
    doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["section"] == section)
        .unwrap_or_else(|| panic!("no RFC 7515 {section}"))
        .clone()
}

/// The keys of A.1–A.3 as the gateway would hold them for the issuer `joe`.
fn rfc7515_key_set(audiences: &[&str]) -> KeySet {
    // A.3's ES256 signature has a high s: joe is an issuer whose signer does
    // not normalise, let through with `accept_high_s`.
    let policy = Arc::new(IssuerPolicy {
        iss: "joe".into(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        accept_high_s: true,
    });
    let a1 = rfc7515("A.1");
    let a2 = rfc7515("A.2");
    let a3 = rfc7515("A.3");
    let key = |alg, key| VerifyingKey {
        kid: None,
        alg,
        key,
        issuer: policy.clone(),
    };
    KeySet::new(vec![
        key(
            Algorithm::HS256,
            DecodingKey::from_secret(&b64(&a1["key"], "k")),
        ),
        key(
            Algorithm::RS256,
            DecodingKey::from_rsa_components(str_of(&a2["key"], "n"), str_of(&a2["key"], "e"))
                .unwrap(),
        ),
        key(
            Algorithm::ES256,
            DecodingKey::from_ec_components(str_of(&a3["key"], "x"), str_of(&a3["key"], "y"))
                .unwrap(),
        ),
    ])
}

#[test]
fn rfc7515_a1_a2_and_a3_signatures_verify_with_their_keys() {
    for section in ["A.1", "A.2"] {
        let v = rfc7515(section);
        let token = str_of(&v, "compact");
        let alg = str_of(&v, "alg");
        assert_eq!(
            verify_with_key(token, &public_jwk(&v["key"]), alg),
            Ok(true),
            "RFC 7515 {section} ({alg}) must verify with its key"
        );
    }
    // A.3's published signature has a high s: refused as it is, while its
    // low-s twin (the same signature in the one accepted form) verifies.
    let a3 = rfc7515("A.3");
    let published = str_of(&a3, "compact");
    let low = warden::auth::ecdsa::low_s_token(Algorithm::ES256, published);
    assert_ne!(low, published, "A.3 is signed with a high s");
    assert_eq!(
        verify_with_key(published, &public_jwk(&a3["key"]), "ES256"),
        Ok(false)
    );
    assert_eq!(
        verify_with_key(&low, &public_jwk(&a3["key"]), "ES256"),
        Ok(true)
    );
    // The asymmetric ones also through a JWKS, as a trusted issuer's keys.
    for (section, token) in [
        ("A.2", str_of(&rfc7515("A.2"), "compact").to_owned()),
        ("A.3", low.clone()),
    ] {
        let v = rfc7515(section);
        let mut jwk = public_jwk(&v["key"]);
        jwk["alg"] = v["alg"].clone();
        assert!(
            verify_with_jwks(&token, &[jwk]),
            "RFC 7515 {section} must verify with its key in a JWKS"
        );
    }
}

#[test]
fn rfc7515_signatures_do_not_verify_with_another_vectors_key() {
    let a1 = rfc7515("A.1");
    let a2 = rfc7515("A.2");
    // A.2's signing input and payload, A.1's key: the alg differs, so no.
    assert_eq!(
        verify_with_key(str_of(&a2, "compact"), &a1["key"], "HS256"),
        Ok(false)
    );
    // A.1's token with a different HS256 secret.
    let other = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 64])});
    assert_eq!(
        verify_with_key(str_of(&a1, "compact"), &other, "HS256"),
        Ok(false)
    );
}

#[test]
fn rfc7515_a4_es512_is_not_supported_so_it_never_verifies() {
    let a4 = rfc7515("A.4");
    let token = str_of(&a4, "compact");
    let refused = verify_with_key(token, &public_jwk(&a4["key"]), "ES512");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("not a supported algorithm")),
        "warden verify --alg ES512 must be refused, got {refused:?}"
    );
    let mut jwk = public_jwk(&a4["key"]);
    jwk["alg"] = json!("ES512");
    assert!(!verify_with_jwks(token, &[jwk]));
    assert_eq!(parse_reason(token), Reason::AlgNotAllowed);
}

#[test]
fn rfc7515_a5_unsecured_jws_is_always_rejected() {
    let a5 = rfc7515("A.5");
    let token = str_of(&a5, "compact");
    // As published (empty signature): not even a well-formed token.
    assert_eq!(parse_reason(token), Reason::Malformed);
    // With a signature bolted on: `none` is not an algorithm warden knows.
    assert_eq!(parse_reason(&format!("{token}AAAA")), Reason::AlgNotAllowed);
    for (section, alg) in [("A.1", "HS256"), ("A.2", "RS256"), ("A.3", "ES256")] {
        let key = public_jwk(&rfc7515(section)["key"]);
        assert_eq!(verify_with_key(token, &key, alg), Ok(false));
    }
    let set = rfc7515_key_set(&["https://api.example"]);
    let (rejection, _) = jwt::verify(token, &[&set], 1_300_819_000, 30).unwrap_err();
    assert_eq!(rejection.reason, Reason::Malformed);
}

#[test]
fn rfc7515_jwts_are_rejected_as_expired_at_the_current_time() {
    warden::crypto::install_providers();
    let set = rfc7515_key_set(&["https://api.example"]);
    let now = warden::clock::unix_now();
    for section in ["A.1", "A.2", "A.3"] {
        let token = rfc7515(section)["compact"].as_str().unwrap().to_owned();
        let (rejection, unverified) = jwt::verify(&token, &[&set], now, 30).unwrap_err();
        assert_eq!(
            rejection.reason,
            Reason::TokenExpired,
            "RFC 7515 {section} expired in 2011"
        );
        assert_eq!(unverified.iss.as_deref(), Some("joe"));
    }
}

#[test]
fn rfc7515_jwts_with_the_clock_pinned_before_expiry_are_refused_for_lack_of_an_audience() {
    warden::crypto::install_providers();
    // exp is 1300819380 (2011-03-22T18:43:00Z); the signature, the time and
    // the issuer all pass, but the tokens have no `aud` and the gateway
    // always requires one of the issuer's audiences.
    let set = rfc7515_key_set(&["https://api.example"]);
    let pinned = 1_300_819_000;
    for section in ["A.1", "A.2", "A.3"] {
        let token = rfc7515(section)["compact"].as_str().unwrap().to_owned();
        let (rejection, _) = jwt::verify(&token, &[&set], pinned, 30).unwrap_err();
        assert_eq!(
            rejection.reason,
            Reason::AudienceMismatch,
            "RFC 7515 {section} with the clock pinned"
        );
        // Within the leeway after exp, the same; beyond it, expired.
        let (rejection, _) = jwt::verify(&token, &[&set], 1_300_819_380 + 29, 30).unwrap_err();
        assert_eq!(rejection.reason, Reason::AudienceMismatch);
        let (rejection, _) = jwt::verify(&token, &[&set], 1_300_819_380 + 30, 30).unwrap_err();
        assert_eq!(rejection.reason, Reason::TokenExpired);
    }
    // With an issuer other than `joe` for the same keys: the issuer is wrong.
    let a1 = rfc7515("A.1");
    let other = KeySet::new(vec![VerifyingKey {
        kid: None,
        alg: Algorithm::HS256,
        key: DecodingKey::from_secret(&b64(&a1["key"], "k")),
        issuer: Arc::new(IssuerPolicy {
            iss: "https://idp.example".into(),
            audiences: vec!["https://api.example".into()],
            accept_high_s: false,
        }),
    }]);
    let (rejection, _) = jwt::verify(str_of(&a1, "compact"), &[&other], pinned, 30).unwrap_err();
    assert_eq!(rejection.reason, Reason::IssuerMismatch);
}

/// A DER length.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

/// A DER INTEGER holding the unsigned big-endian `value`.
fn der_uint(value: &[u8], out: &mut Vec<u8>) {
    let start = value.iter().position(|b| *b != 0).unwrap_or(value.len());
    let mut content = value[start..].to_vec();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    out.push(0x02);
    der_length(content.len(), out);
    out.extend_from_slice(&content);
}

/// A PKCS#1 `RSAPrivateKey` from a private RSA JWK.
fn rsa_private_key_der(jwk: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    der_uint(&[0], &mut body);
    for member in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        der_uint(&b64(jwk, member), &mut body);
    }
    let mut der = vec![0x30];
    der_length(body.len(), &mut der);
    der.extend_from_slice(&body);
    der
}

#[test]
fn rfc7515_a1_and_a2_signing_reproduces_the_published_signatures() {
    warden::crypto::install_providers();
    let signing_input = |v: &Value| {
        let token = str_of(v, "compact");
        let (input, signature) = token.rsplit_once('.').unwrap();
        (input.to_owned(), signature.to_owned())
    };
    let a1 = rfc7515("A.1");
    let (input, signature) = signing_input(&a1);
    let key = EncodingKey::from_secret(&b64(&a1["key"], "k"));
    assert_eq!(
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap(),
        signature
    );
    // PKCS#1 v1.5 is deterministic: the same key signs the same bytes.
    let a2 = rfc7515("A.2");
    let (input, signature) = signing_input(&a2);
    let key = EncodingKey::from_rsa_der(&rsa_private_key_der(&a2["key"]));
    assert_eq!(
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap(),
        signature
    );
}

// ---------------------------------------------------------------- RFC 7520

fn rfc7520(file: &str) -> Value {
    vector(&format!("rfc7520_cookbook/jws/{file}.json"))
}

#[test]
fn rfc7520_4_1_rs256_4_2_ps384_and_4_4_hs256_verify_with_the_cookbook_keys() {
    warden::crypto::install_providers();
    // The RSA key from a JWKS, chosen by the token's kid.
    for file in ["4_1.rsa_v15_signature", "4_2.rsa-pss_signature"] {
        let v = rfc7520(file);
        let mut jwk = public_jwk(&v["input"]["key"]);
        jwk["alg"] = v["input"]["alg"].clone();
        assert!(
            verify_with_jwks(str_of(&v["output"], "compact"), &[jwk]),
            "RFC 7520 {file} from a JWKS"
        );
    }
    // The HS key as one of the gateway's own keys, with the cookbook's kid.
    let v = rfc7520("4_4.hmac-sha2_integrity_protection");
    let token = str_of(&v["output"], "compact");
    assert!(signature_verifies(
        token,
        &own_hmac_key_set(&v["input"]["key"])
    ));
    // Tampered: one payload byte changed.
    let tampered = token.replacen(".SXTi", ".SXTj", 1);
    assert!(!signature_verifies(
        &tampered,
        &own_hmac_key_set(&v["input"]["key"])
    ));
}

/// Regression test (src/cli.rs): `warden verify --key FILE --alg ALG` uses
/// the given key whatever kid the token names, so a token signed with that
/// key verifies and does not fail with `unknown_kid`. Every RFC 7520 token
/// carries a kid.
#[test]
fn warden_verify_with_a_key_file_verifies_a_token_that_names_a_kid() {
    for file in [
        "4_1.rsa_v15_signature",
        "4_2.rsa-pss_signature",
        "4_4.hmac-sha2_integrity_protection",
    ] {
        let v = rfc7520(file);
        let token = str_of(&v["output"], "compact");
        let alg = str_of(&v["input"], "alg");
        assert_eq!(
            verify_with_key(token, &public_jwk(&v["input"]["key"]), alg),
            Ok(true),
            "warden verify --key <RFC 7520 {file} key> --alg {alg} <its token>"
        );
    }
}

#[test]
fn rfc7520_4_2_ps384_does_not_verify_as_ps256_or_rs384() {
    let v = rfc7520("4_2.rsa-pss_signature");
    let token = str_of(&v["output"], "compact");
    let key = public_jwk(&v["input"]["key"]);
    for alg in ["PS256", "PS512", "RS384"] {
        assert_eq!(verify_with_key(token, &key, alg), Ok(false), "as {alg}");
    }
}

#[test]
fn rfc7520_4_3_es512_is_not_supported_so_it_never_verifies() {
    let v = rfc7520("4_3.ecdsa_signature");
    let token = str_of(&v["output"], "compact");
    let key = public_jwk(&v["input"]["key"]);
    assert!(verify_with_key(token, &key, "ES512").is_err());
    let mut jwk = key.clone();
    jwk["alg"] = json!("ES512");
    assert!(!verify_with_jwks(token, &[jwk]));
    assert_eq!(parse_reason(token), Reason::AlgNotAllowed);
}

#[test]
fn rfc7520_json_serializations_and_detached_content_are_not_bearer_tokens() {
    let files = [
        "4_1.rsa_v15_signature",
        "4_2.rsa-pss_signature",
        "4_3.ecdsa_signature",
        "4_4.hmac-sha2_integrity_protection",
        "4_5.signature_with_detached_content",
        "4_6.protecting_specific_header_fields",
        "4_7.protecting_content_only",
        "4_8.multiple_signatures",
    ];
    let hs_key = rfc7520("4_4.hmac-sha2_integrity_protection")["input"]["key"].clone();
    let mut checked = 0;
    for file in files {
        let v = rfc7520(file);
        for form in ["json", "json_flat"] {
            let Some(serialized) = v["output"].get(form) else {
                continue;
            };
            let token = serialized.to_string();
            assert_eq!(parse_reason(&token), Reason::Malformed, "{file} {form}");
            assert_eq!(
                verify_with_key(&token, &hs_key, "HS256"),
                Ok(false),
                "{file} {form}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 15, "7 files with both JSON forms, 4.8 with one");
    // 4.5: a compact JWS with detached content has an empty payload segment.
    let detached = rfc7520("4_5.signature_with_detached_content");
    let token = str_of(&detached["output"], "compact");
    assert!(token.contains(".."));
    assert_eq!(parse_reason(token), Reason::Malformed);
    assert_eq!(verify_with_key(token, &hs_key, "HS256"), Ok(false));
}

// ---------------------------------------------------------------- RFC 8037

#[test]
fn rfc8037_a4_ed25519_verifies_with_eddsa_and_signing_reproduces_it() {
    warden::crypto::install_providers();
    let v = vector("rfc8037/ed25519_jws_rfc8037_A4.json");
    let token = str_of(&v["output"], "compact");
    let jwk = public_jwk(&v["input"]["key"]);
    assert_eq!(verify_with_key(token, &jwk, "EdDSA"), Ok(true));
    // An OKP Ed25519 key can only be EdDSA: no alg is needed in the JWKS.
    assert!(verify_with_jwks(token, std::slice::from_ref(&jwk)));
    // The curve's name is not an algorithm.
    let (_, rest) = token.split_once('.').unwrap();
    let ed25519 = URL_SAFE_NO_PAD.encode(br#"{"alg":"Ed25519"}"#);
    assert_eq!(
        parse_reason(&format!("{ed25519}.{rest}")),
        Reason::AlgNotAllowed
    );

    // Ed25519 is deterministic: PKCS#8 v1 of the seed `d` reproduces it.
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&b64(&v["input"]["key"], "d"));
    let key = EncodingKey::from_ed_der(&pkcs8);
    let (input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::EdDSA).unwrap(),
        signature
    );
}

// ---------------------------------------------------------------- Wycheproof JWS

/// Wycheproof cases skipped: byte-identical to the valid tc 357 but
/// labelled invalid (upstream issue #236).
const WYCHEPROOF_JWS_SKIPPED: &[u64] = &[367, 370];

/// Labelled valid, but a segment holds `?`, which is not base64url: a strict
/// decoder rejects them, and so must the gateway.
const WYCHEPROOF_JWS_RELABELLED_INVALID: &[u64] = &[372, 373];

/// Labelled valid; warden says invalid, deliberately.
const WYCHEPROOF_JWS_STRICTER: &[(u64, &str)] = &[
    (259, EMPTY_PAYLOAD),
    (264, EMPTY_PAYLOAD),
    (268, EMPTY_PAYLOAD),
    (272, EMPTY_PAYLOAD),
    (320, EMPTY_PAYLOAD),
    (325, EMPTY_PAYLOAD),
    (
        346,
        "RFC 7520 Figure 20 is signed PS384, but the group's key says \"alg\": \"PS256\"; \
         a key verifies with its one algorithm, never the token's",
    ),
    (347, "ES512 (P-521) is not supported"),
    (
        18,
        "its ES256 signature has a high s: only the low-s form of an ECDSA signature \
         is accepted, so one token has one encoding (SPEC §16)",
    ),
    (
        350,
        "as 346: a PS256 key (key_ops verify) does not verify a PS384 token",
    ),
    (351, "ES512 (P-521) is not supported"),
];

const EMPTY_PAYLOAD: &str = "an empty payload segment: a JWS may have one, a JWT may not, and \
     warden's parser refuses every empty segment";

/// An HS key as the gateway holds its own `[[keys]]`: with its kid and
/// its one algorithm (a JWKS never carries a secret).
fn own_hmac_key_set(jwk: &Value) -> KeySet {
    let alg = parse_algorithm(str_of(jwk, "alg")).unwrap();
    KeySet::new(vec![VerifyingKey {
        kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
        alg,
        key: DecodingKey::from_secret(&b64(jwk, "k")),
        issuer: Arc::new(IssuerPolicy {
            iss: "https://gateway.example".into(),
            audiences: vec!["https://api.example".into()],
            accept_high_s: false,
        }),
    }])
}

/// Whether the signature of `token` verifies with a key of `set`.
fn signature_verifies(token: &str, set: &KeySet) -> bool {
    jwt::parse(token).is_ok_and(|parsed| jwt::verify_signature_in(&parsed, set).is_ok())
}

/// The verdict on one Wycheproof JWS case, with the key built from the
/// group's JWK: the asymmetric ones through `warden verify --jwks FILE`, as
/// a trusted issuer's JWKS; an HS key as one of the gateway's own keys, with
/// its kid (a JWKS never carries a secret).
fn wycheproof_verdict(group: &Value, token: &str) -> bool {
    warden::crypto::install_providers();
    let jwk = group
        .get("public")
        .or_else(|| group.get("private"))
        .unwrap();
    if jwk["kty"] == "oct" {
        signature_verifies(token, &own_hmac_key_set(jwk))
    } else {
        verify_with_jwks(token, std::slice::from_ref(jwk))
    }
}

/// Whether the algorithm in the token's header is one warden supports.
fn header_alg_supported(token: &str) -> bool {
    let Some((header, _)) = token.split_once('.') else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|alg| parse_algorithm(&alg).is_some())
}

#[test]
fn every_wycheproof_jws_case_gets_the_expected_verdict() {
    let doc = vector("wycheproof/json_web_signature_test.json");
    let mut seen = 0;
    let mut checked = 0;
    let mut by_result: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let key_alg = group
            .get("public")
            .or_else(|| group.get("private"))
            .and_then(|k| k.get("alg"))
            .and_then(Value::as_str);
        for case in group["tests"].as_array().unwrap() {
            seen += 1;
            let tc = case["tcId"].as_u64().unwrap();
            if WYCHEPROOF_JWS_SKIPPED.contains(&tc) {
                continue;
            }
            let token = match &case["jws"] {
                Value::String(token) => token.clone(),
                // JSON serialization (tc 17): what a client would send.
                other => other.to_string(),
            };
            let result = str_of(case, "result");
            *by_result.entry(result.to_owned()).or_default() += 1;
            let verdict = wycheproof_verdict(group, &token);
            if WYCHEPROOF_JWS_STRICTER.iter().any(|(id, _)| *id == tc) {
                assert_eq!(
                    result, "valid",
                    "tc {tc} is listed as warden being stricter"
                );
            }
            let supported = header_alg_supported(&token)
                && key_alg.is_none_or(|a| parse_algorithm(a).is_some());
            let expected = if WYCHEPROOF_JWS_RELABELLED_INVALID.contains(&tc)
                || WYCHEPROOF_JWS_STRICTER.iter().any(|(id, _)| *id == tc)
                || !supported
            {
                Some(false)
            } else {
                match result {
                    "valid" => Some(true),
                    "invalid" => Some(false),
                    "acceptable" => None,
                    other => panic!("tc {tc}: unknown result {other:?}"),
                }
            };
            if let Some(expected) = expected
                && verdict != expected
            {
                wrong.push(format!(
                    "tc {tc} ({}, group {}, labelled {result}): warden says {}, expected {}\n  jws: {token}",
                    case["comment"],
                    group["comment"],
                    if verdict { "valid" } else { "invalid" },
                    if expected { "valid" } else { "invalid" },
                ));
            }
            checked += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(doc["numberOfTests"], 401);
    assert_eq!(seen, 401, "every case in the file was looked at");
    assert_eq!(checked, 399, "every case but the two data bugs was checked");
    assert_eq!(
        by_result,
        BTreeMap::from([("invalid".to_owned(), 353), ("valid".to_owned(), 46)])
    );
}

// ---------------------------------------------------------------- Wycheproof JWK

/// Labelled valid; warden says invalid, deliberately.
const WYCHEPROOF_JWK_STRICTER: &[(u64, &str)] = &[
    (2, "symmetric keys are never taken from a JWKS"),
    (13, "symmetric keys are never taken from a JWKS"),
    (14, "symmetric keys are never taken from a JWKS"),
    (15, "symmetric keys are never taken from a JWKS"),
];

#[test]
fn every_wycheproof_key_set_case_gets_the_expected_verdict() {
    warden::crypto::install_providers();
    let doc = vector("wycheproof/json_web_key_test.json");
    let policy = Arc::new(IssuerPolicy {
        iss: "https://idp.example".into(),
        audiences: vec!["https://api.example".into()],
        accept_high_s: false,
    });
    let algs = issuer_algs();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let set_json = group
            .get("public")
            .or_else(|| group.get("private"))
            .unwrap();
        let (set, skipped) = parse_jwks(set_json.to_string().as_bytes(), &policy, &algs);
        for case in group["tests"].as_array().unwrap() {
            let tc = case["tcId"].as_u64().unwrap();
            let token = str_of(case, "jws");
            let verdict = jwt::parse(token)
                .and_then(|parsed| jwt::verify_signature_in(&parsed, &set).map(|_| ()));
            let result = str_of(case, "result");
            let stricter = WYCHEPROOF_JWK_STRICTER.iter().any(|(id, _)| *id == tc);
            if stricter {
                assert_eq!(
                    result, "valid",
                    "tc {tc} is listed as warden being stricter"
                );
            }
            let expected = !stricter && result == "valid";
            if verdict.is_ok() != expected {
                wrong.push(format!(
                    "tc {tc} ({}, group {}, labelled {result}): warden says {:?}, expected {}\n  skipped keys: {skipped:?}\n  jws: {token}",
                    case["comment"],
                    group["comment"],
                    verdict.map_err(|r| r.reason),
                    if expected { "valid" } else { "invalid" },
                ));
            }
            checked += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(doc["numberOfTests"], 26);
    assert_eq!(checked, 26);
}

/// The group and the case of a Wycheproof test, by its tcId.
fn wycheproof_case(file: &str, tc: u64) -> (Value, Value) {
    let doc = vector(file);
    for group in doc["testGroups"].as_array().unwrap() {
        for case in group["tests"].as_array().unwrap() {
            if case["tcId"] == tc {
                return (group.clone(), case.clone());
            }
        }
    }
    panic!("no tc {tc} in {file}")
}

/// Regression test (src/auth/jwt.rs `parse`/`verify_signature_in`, hence
/// `warden verify`): Wycheproof tc 375 has the payload segment `AB`, whose
/// last character carries non-zero unused bits (not canonical base64url),
/// with a correct MAC over those bytes. Both the gateway's full verification
/// and signature-only verification (`jwt::parse` +
/// `jwt::verify_signature_in`, what `warden verify` runs) must refuse it:
/// the module promises canonical segments.
#[test]
fn signature_only_verification_rejects_a_payload_that_is_not_canonical_base64url() {
    warden::crypto::install_providers();
    let (group, case) = wycheproof_case("wycheproof/json_web_signature_test.json", 375);
    let token = str_of(&case, "jws");
    assert_eq!(token.split('.').nth(1), Some("AB"));
    assert!(
        URL_SAFE_NO_PAD.decode("AB").is_err(),
        "`AB` is not canonical"
    );
    let set = own_hmac_key_set(&group["private"]);
    let (rejection, _) = jwt::verify(token, &[&set], 1_700_000_000, 30).unwrap_err();
    assert_eq!(
        rejection.reason,
        Reason::Malformed,
        "the gateway refuses it"
    );
    assert!(
        !signature_verifies(token, &set),
        "signature-only verification accepts tc 375 ({token}), which Wycheproof labels invalid"
    );
}

/// Regression test (src/auth/jwks.rs `check_key`): Wycheproof tc 7
/// publishes a 2048-bit RSA key with the ROCA weakness (its private key can
/// be recovered from the public one) and a token signed with it; Wycheproof
/// expects the key to be refused. `parse_jwks` must skip a key with the ROCA
/// fingerprint (`has_roca_fingerprint`), not just check the modulus length,
/// so the token never verifies.
#[test]
fn a_jwks_rsa_key_with_the_roca_weakness_is_never_used() {
    warden::crypto::install_providers();
    let file = "wycheproof/json_web_key_test.json";
    let (group, case) = wycheproof_case(file, 7);
    let roca = &group["public"]["keys"][0];
    assert!(
        warden::auth::jwk::has_roca_fingerprint(&b64(roca, "n")),
        "tc 7's key is a ROCA key"
    );
    let (healthy, _) = wycheproof_case(file, 5);
    assert!(!warden::auth::jwk::has_roca_fingerprint(&b64(
        &healthy["public"]["keys"][0],
        "n"
    )));

    let policy = Arc::new(IssuerPolicy {
        iss: "https://idp.example".into(),
        audiences: vec!["https://api.example".into()],
        accept_high_s: false,
    });
    let (set, skipped) = parse_jwks(
        group["public"].to_string().as_bytes(),
        &policy,
        &issuer_algs(),
    );
    let token = str_of(&case, "jws");
    assert!(
        !signature_verifies(token, &set),
        "the ROCA key (kid kid-rsa-roca-sign) was taken from the JWKS (skipped: {skipped:?}) \
         and verifies tc 7, which Wycheproof labels invalid"
    );
}

// ---------------------------------------------------------------- fixtures

#[test]
fn the_fixture_copies_match_the_shared_vectors_byte_for_byte() {
    let fixtures = Path::new(FIXTURES);
    let copies = [
        ("rfc7515_appendix_a.json", "rfc7515_appendix_a.json"),
        ("rfc7520_cookbook/LICENSE", "rfc7520_cookbook/LICENSE"),
        (
            "rfc8037/ed25519_jws_rfc8037_A4.json",
            "rfc8037/ed25519_jws_rfc8037_A4.json",
        ),
        ("rfc8037/LICENSE", "rfc7520_cookbook/LICENSE"),
        ("wycheproof/LICENSE", "wycheproof/LICENSE"),
        (
            "wycheproof/json_web_signature_test.json",
            "wycheproof/json_web_signature_test.json",
        ),
        (
            "wycheproof/json_web_key_test.json",
            "wycheproof/json_web_key_test.json",
        ),
    ];
    let jws: Vec<String> = std::fs::read_dir(fixtures.join("rfc7520_cookbook/jws"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(jws.len(), 8, "RFC 7520 §4.1–4.8");
    let jws_paths: Vec<String> = jws
        .iter()
        .map(|f| format!("rfc7520_cookbook/jws/{f}"))
        .collect();
    let all = copies
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .chain(jws_paths.iter().map(|p| (p.clone(), p.clone())));
    let shared = Path::new(SHARED);
    for (copy, source) in all {
        let copy_bytes = std::fs::read(fixtures.join(&copy))
            .unwrap_or_else(|e| panic!("tests/fixtures/vectors/{copy} is missing: {e}"));
        if shared.is_dir() {
            let source_bytes = std::fs::read(shared.join(&source)).unwrap();
            assert!(
                copy_bytes == source_bytes,
                "{copy} differs from ../shared/vectors/{source}"
            );
        }
    }
}
