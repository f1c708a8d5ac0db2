//! Published JWE test vectors against warden's JWE core (`auth::jwe`), and
//! the properties SPEC §12 asks of it.
//!
//! - RFC 7520 §5 (the JOSE cookbook): the vectors whose algorithms SPEC §12
//!   allows decrypt (5.4 ECDH-ES+A128KW on P-384 with A128GCM, 5.5 ECDH-ES
//!   on P-256 with A128CBC-HS256, 5.6 dir with A128GCM); `RSA1_5` (5.1),
//!   `PBES2` (5.3), `A256GCMKW` (5.7), `A128KW` (5.8) and `zip` (5.9) are
//!   refused with their reason; every JSON serialization is refused. 5.2 and
//!   §6 use `RSA-OAEP` (SHA-1), which no key may be configured with: the
//!   unit tests of `src/auth/jwe/decrypt.rs` check them with the primitives.
//! - RFC 8037 (X25519 with ECDH-ES and A128GCM).
//! - Wycheproof `json_web_crypto_test.json`, its JWE groups: every `valid`
//!   case decrypts, every `invalid` one is refused; none is skipped.
//! - Tampering: a flipped byte anywhere is refused with the one error, and
//!   past the header always as `DecryptionFailed` (no oracle); a header that
//!   means the same but is encoded otherwise is refused (the AAD is the
//!   received segment).
//! - Round trips for every key family and `enc`, key selection, and the
//!   checks that need no secret.
//!
//! The vectors are read from the copies in `tests/fixtures/jose/` (see its
//! README); when `../shared/vectors/` exists, the copies are checked
//! against it.

use std::path::Path;

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::PrivateDecryptingKey;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use warden::auth::jwe::{
    self, Curve, DECRYPT_ERROR_DESCRIPTION, DecryptError, DecryptFailure, Decrypted, DecryptionKey,
    ENCS, Enc, EncryptionKey, KeyAlg,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jose");
const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");

fn fixture(relative: &str) -> Value {
    let path = Path::new(FIXTURES).join(relative);
    let bytes = std::fs::read(&path).expect("the fixture is readable");
    serde_json::from_slice(&bytes).expect("the fixture is JSON")
}

fn string<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, name| &v[name])
        .as_str()
        .expect("a string member")
}

fn reason(result: Result<Decrypted<'_>, DecryptError>) -> DecryptFailure {
    let error = result.expect_err("the token is refused");
    assert_eq!(error.to_string(), DECRYPT_ERROR_DESCRIPTION);
    error.reason()
}

fn decode(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(segment).expect("base64url")
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `token` with segment `index` replaced.
fn with_segment(token: &str, index: usize, segment: &str) -> String {
    let mut segments: Vec<&str> = token.split('.').collect();
    segments[index] = segment;
    segments.join(".")
}

fn header_of(token: &str) -> Map<String, Value> {
    let segment = token.split('.').next().expect("a header");
    serde_json::from_slice(&decode(segment)).expect("a JSON header")
}

/// The members of `header` in reverse order, as compact JSON (a `Map`
/// would sort them again).
fn reversed(header: &Map<String, Value>) -> String {
    let members: Vec<String> = header
        .iter()
        .rev()
        .map(|(name, value)| format!("{}:{value}", Value::from(name.as_str())))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// `token` with its header replaced by `header`, serialized as given.
fn with_header(token: &str, header: &str) -> String {
    with_segment(token, 0, &encode(header.as_bytes()))
}

// --- RFC 7520 and RFC 8037 ---

#[test]
fn rfc_7520_and_rfc_8037_vectors_of_allowed_algorithms_decrypt() {
    let cases = [
        (
            "rfc7520/5_4.key_agreement_with_key_wrapping_using_ecdh-es_and_aes-keywrap_with_aes-gcm.json",
            KeyAlg::EcdhEsA128Kw,
            Enc::A128Gcm,
        ),
        (
            "rfc7520/5_5.key_agreement_using_ecdh-es_with_aes-cbc-hmac-sha2.json",
            KeyAlg::EcdhEs,
            Enc::A128CbcHs256,
        ),
        (
            "rfc7520/5_6.direct_encryption_using_aes-gcm.json",
            KeyAlg::Dir,
            Enc::A128Gcm,
        ),
        ("rfc8037/x25519_ecdh-es.json", KeyAlg::EcdhEs, Enc::A128Gcm),
    ];
    for (file, alg, enc) in cases {
        let vector = fixture(file);
        let jwk = &vector["input"]["key"];
        let kid = string(jwk, &["kid"]);
        let key = DecryptionKey::from_private_jwk(kid, alg, jwk).expect("the vector's key");
        let token = string(&vector, &["output", "compact"]);
        let decrypted = jwe::decrypt(token, [&key]).expect(file);
        assert_eq!(
            decrypted.plaintext,
            string(&vector, &["input", "plaintext"]).as_bytes(),
            "{file}"
        );
        assert_eq!(decrypted.enc, enc, "{file}");
        assert_eq!(decrypted.kid.as_deref(), Some(kid), "{file}");
        assert_eq!(decrypted.key.kid(), kid, "{file}");
        // The same JWE in the JSON serializations is refused.
        for form in ["json", "json_flat"] {
            let json = vector["output"][form].to_string();
            assert_eq!(
                reason(jwe::decrypt(&json, [&key])),
                DecryptFailure::JsonSerialization,
                "{file} {form}"
            );
        }
    }
}

#[test]
fn rfc_7520_vectors_of_refused_algorithms_are_refused_with_their_reason() {
    // A key set that would fit, were the algorithms allowed.
    let keys = [
        DecryptionKey::from_secret(
            "81b20965-8332-43d9-a468-82160ad91ac8",
            KeyAlg::A256Kw,
            &[1; 32],
        )
        .expect("a key"),
        DecryptionKey::from_secret(
            "18ec08e1-bfa9-4d95-b205-2b4dd1d4321d",
            KeyAlg::A256Kw,
            &[1; 32],
        )
        .expect("a key"),
    ];
    let cases = [
        (
            "5_1.key_encryption_using_rsa_v15_and_aes-hmac-sha2.json",
            DecryptFailure::Rsa15Refused,
        ),
        (
            "5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json",
            DecryptFailure::AlgNotAllowed,
        ),
        (
            "5_3.key_wrap_using_pbes2-aes-keywrap_with-aes-cbc-hmac-sha2.json",
            DecryptFailure::Pbes2Refused,
        ),
        (
            "5_7.key_wrap_using_aes-gcm_keywrap_with_aes-cbc-hmac-sha2.json",
            DecryptFailure::AlgNotAllowed,
        ),
        (
            "5_8.key_wrap_using_aes-keywrap_with_aes-gcm.json",
            DecryptFailure::AlgNotAllowed,
        ),
        ("5_9.compressed_content.json", DecryptFailure::ZipRefused),
    ];
    for (file, expected) in cases {
        let vector = fixture(&format!("rfc7520/{file}"));
        let token = string(&vector, &["output", "compact"]);
        assert_eq!(reason(jwe::decrypt(token, &keys)), expected, "{file}");
    }
    let nested = fixture("rfc7520/6.nesting_signatures_and_encryption.json");
    let token = string(&nested, &["encrypt", "output", "compact"]);
    assert_eq!(
        reason(jwe::decrypt(token, &keys)),
        DecryptFailure::AlgNotAllowed
    );
}

#[test]
fn rfc_7520_vectors_in_the_json_serialization_only_are_refused() {
    for file in [
        "5_10.including_additional_authentication_data.json",
        "5_11.protecting_specific_header_fields.json",
        "5_12.protecting_content_only.json",
        "5_13.encrypting_to_multiple_recipients.json",
    ] {
        let vector = fixture(&format!("rfc7520/{file}"));
        let output = vector["output"].as_object().expect("outputs");
        assert!(
            !output.contains_key("compact"),
            "{file} has no compact form"
        );
        for (form, jwe_json) in output {
            let text = jwe_json.to_string();
            assert_eq!(
                reason(jwe::decrypt(&text, std::iter::empty())),
                DecryptFailure::JsonSerialization,
                "{file} {form}"
            );
        }
    }
}

#[test]
fn a_cookbook_header_encoded_otherwise_is_refused() {
    // The AAD is the received header segment: the same JSON with other
    // whitespace or member order authenticates nothing.
    let vector = fixture("rfc7520/5_5.key_agreement_using_ecdh-es_with_aes-cbc-hmac-sha2.json");
    let jwk = &vector["input"]["key"];
    let key = DecryptionKey::from_private_jwk(string(jwk, &["kid"]), KeyAlg::EcdhEs, jwk)
        .expect("the vector's key");
    let token = string(&vector, &["output", "compact"]);
    assert!(jwe::decrypt(token, [&key]).is_ok());
    let header = Value::Object(header_of(token));
    for re_encoded in [
        serde_json::to_string_pretty(&header).expect("JSON"),
        reversed(&header_of(token)),
        format!("{} ", header),
    ] {
        assert_eq!(
            reason(jwe::decrypt(&with_header(token, &re_encoded), [&key])),
            DecryptFailure::DecryptionFailed,
            "{re_encoded}"
        );
    }
}

// --- Wycheproof ---

#[test]
fn wycheproof_jwe_cases_decrypt_when_valid_and_are_refused_when_invalid() {
    let file = fixture("wycheproof/json_web_crypto_jwe_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().expect("groups") {
        let jwk = &group["private"];
        let alg = KeyAlg::parse(string(jwk, &["alg"])).expect("an allowed alg");
        let key = DecryptionKey::from_private_jwk(string(jwk, &["kid"]), alg, jwk)
            .expect("the group's key");
        for case in group["tests"].as_array().expect("cases") {
            let id = &case["tcId"];
            let comment = string(case, &["comment"]);
            let token = match &case["jwe"] {
                Value::String(token) => token.clone(),
                other => other.to_string(),
            };
            let result = jwe::decrypt(&token, [&key]);
            match string(case, &["result"]) {
                "valid" => {
                    valid += 1;
                    result.unwrap_or_else(|e| panic!("tc {id} {comment}: {:?}", e.reason()));
                }
                "invalid" => {
                    invalid += 1;
                    let why = reason(result);
                    let expected = match comment {
                        "rejectsModifiedAuthenticationTag"
                        | "rejectsModifiedCiphertext"
                        | "rejectsModifiedIv"
                        | "rejectsModifiedEncryptedKey" => Some(DecryptFailure::DecryptionFailed),
                        "rejectsInvalidCurvePoint" => Some(DecryptFailure::InvalidEpk),
                        "rejectsValidJsonSerialization" => Some(DecryptFailure::JsonSerialization),
                        _ => None,
                    };
                    if let Some(expected) = expected {
                        assert_eq!(why, expected, "tc {id} {comment}");
                    }
                }
                other => panic!("tc {id}: unknown result {other}"),
            }
        }
    }
    assert_eq!((valid, invalid), (2, 32), "tc 50-83, none skipped");
}

#[test]
fn without_a_kid_every_key_of_the_alg_is_tried_and_all_fail_alike() {
    let file = fixture("wycheproof/json_web_crypto_jwe_test.json");
    let group = &file["testGroups"][1];
    assert_eq!(group["comment"], "jwe_ec");
    let jwk = &group["private"];
    let right = DecryptionKey::from_private_jwk("right", KeyAlg::EcdhEsA128Kw, jwk).expect("key");
    let token = string(&group["tests"][0], &["jwe"]);
    assert!(!header_of(token).contains_key("kid"));
    let other = || {
        let der = jwe::generate_pkcs8(KeyAlg::EcdhEsA128Kw, Curve::P256).expect("generates");
        DecryptionKey::from_pkcs8_der("other", KeyAlg::EcdhEsA128Kw, &der).expect("loads")
    };
    let unrelated = DecryptionKey::from_secret("unrelated", KeyAlg::A256Kw, &[3; 32]).expect("key");
    let keys = [unrelated, other(), right];
    let decrypted = jwe::decrypt(token, &keys).expect("the right key is found");
    assert_eq!(decrypted.key.kid(), "right");
    let wrong = [other(), other()];
    assert_eq!(
        reason(jwe::decrypt(token, &wrong)),
        DecryptFailure::DecryptionFailed
    );
    let none_of_the_alg = [DecryptionKey::from_secret("s", KeyAlg::A256Kw, &[3; 32]).expect("key")];
    assert_eq!(
        reason(jwe::decrypt(token, &none_of_the_alg)),
        DecryptFailure::NoKeyForAlg
    );
}

// --- Keys of every family ---

/// One decryption key of each family, with a kid naming it.
fn every_key() -> Vec<DecryptionKey> {
    let mut keys = Vec::new();
    let der = jwe::generate_pkcs8(KeyAlg::RsaOaep256, Curve::P256).expect("generates");
    keys.push(DecryptionKey::from_pkcs8_der("rsa", KeyAlg::RsaOaep256, &der).expect("loads"));
    for alg in [KeyAlg::EcdhEs, KeyAlg::EcdhEsA128Kw, KeyAlg::EcdhEsA256Kw] {
        for curve in [Curve::P256, Curve::P384, Curve::X25519] {
            let der = jwe::generate_pkcs8(alg, curve).expect("generates");
            let kid = format!("{alg}/{}", curve.name());
            keys.push(DecryptionKey::from_pkcs8_der(kid, alg, &der).expect("loads"));
        }
    }
    let secret = jwe::generate_secret(KeyAlg::A256Kw, Enc::A128Gcm).expect("random");
    keys.push(DecryptionKey::from_secret("a256kw", KeyAlg::A256Kw, &secret).expect("loads"));
    for len in [16, 32, 64] {
        let secret = vec![len as u8; len];
        keys.push(
            DecryptionKey::from_secret(format!("dir/{len}"), KeyAlg::Dir, &secret).expect("loads"),
        );
    }
    keys
}

#[test]
fn every_key_family_and_enc_round_trips() {
    let keys = every_key();
    let mut trips = 0;
    for key in &keys {
        let to = key.encryption_key().expect("its public half");
        for enc in ENCS.into_iter().filter(|enc| key.accepts_enc(*enc)) {
            for plaintext in [&b""[..], b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"] {
                let token = jwe::encrypt_with(&to, enc, Some("JWT"), plaintext).expect("encrypts");
                assert!(jwe::is_compact_jwe(&token));
                let decrypted = jwe::decrypt(&token, &keys).expect("decrypts");
                assert_eq!(decrypted.plaintext, plaintext, "{key:?} {enc}");
                assert_eq!(decrypted.enc, enc);
                assert_eq!(decrypted.cty.as_deref(), Some("JWT"));
                assert_eq!(decrypted.kid.as_deref(), Some(key.kid()));
                assert_eq!(decrypted.key.kid(), key.kid());
                trips += 1;
            }
        }
    }
    // RSA, 9 ECDH keys and A256KW take all four encs; dir one or two each.
    assert_eq!(trips, 2 * (11 * 4 + 1 + 2 + 1));
}

#[test]
fn a_flipped_byte_anywhere_is_refused_and_past_the_header_always_alike() {
    let keys = every_key();
    let chosen = [
        "rsa",
        "ECDH-ES/P-256",
        "ECDH-ES+A128KW/P-384",
        "ECDH-ES+A256KW/X25519",
        "a256kw",
        "dir/32",
    ];
    for key in keys.iter().filter(|key| chosen.contains(&key.kid())) {
        let to = key.encryption_key().expect("its public half");
        for enc in [Enc::A256Gcm, Enc::A128CbcHs256] {
            let token =
                jwe::encrypt_with(&to, enc, Some("JWT"), b"a nested token").expect("encrypts");
            assert!(jwe::decrypt(&token, &keys).is_ok());
            for index in 0..5 {
                let segment = decode(token.split('.').nth(index).expect("five segments"));
                for at in 0..segment.len() {
                    let mut flipped = segment.clone();
                    flipped[at] ^= 0x01;
                    let tampered = with_segment(&token, index, &encode(&flipped));
                    let why = reason(jwe::decrypt(&tampered, &keys));
                    if index > 0 {
                        assert_eq!(
                            why,
                            DecryptFailure::DecryptionFailed,
                            "{} {enc}: segment {index}, byte {at}",
                            key.kid()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_header_encoded_otherwise_is_refused_for_every_family() {
    let keys = every_key();
    for key in &keys {
        let to = key.encryption_key().expect("its public half");
        let enc = ENCS
            .into_iter()
            .find(|enc| key.accepts_enc(*enc))
            .expect("an enc");
        let token = jwe::encrypt_with(&to, enc, Some("JWT"), b"payload").expect("encrypts");
        let header = header_of(&token);
        assert_ne!(reversed(&header), Value::Object(header.clone()).to_string());
        for re_encoded in [
            serde_json::to_string_pretty(&Value::Object(header.clone())).expect("JSON"),
            reversed(&header),
            format!(" {}", Value::Object(header.clone())),
        ] {
            assert_eq!(
                reason(jwe::decrypt(&with_header(&token, &re_encoded), &keys)),
                DecryptFailure::DecryptionFailed,
                "{}: {re_encoded}",
                key.kid()
            );
        }
    }
}

fn key<'a>(keys: &'a [DecryptionKey], kid: &str) -> &'a DecryptionKey {
    keys.iter()
        .find(|key| key.kid() == kid)
        .expect("a key of that kid")
}

fn token_for(keys: &[DecryptionKey], kid: &str, enc: Enc) -> String {
    let to = key(keys, kid).encryption_key().expect("its public half");
    jwe::encrypt_with(&to, enc, Some("JWT"), b"payload").expect("encrypts")
}

#[test]
fn lengths_fixed_by_alg_and_enc_are_checked_before_any_key_is_used() {
    let keys = every_key();
    let dir = token_for(&keys, "dir/16", Enc::A128Gcm);
    assert_eq!(
        reason(jwe::decrypt(&with_segment(&dir, 1, "AAAA"), &keys)),
        DecryptFailure::UnexpectedEncryptedKey
    );
    let ecdh_es = token_for(&keys, "ECDH-ES/P-256", Enc::A256Gcm);
    assert_eq!(
        reason(jwe::decrypt(&with_segment(&ecdh_es, 1, "AAAA"), &keys)),
        DecryptFailure::UnexpectedEncryptedKey
    );
    for kid in ["rsa", "a256kw", "ECDH-ES+A256KW/P-384"] {
        let token = token_for(&keys, kid, Enc::A256Gcm);
        let encrypted_key = decode(token.split('.').nth(1).expect("a key"));
        for wrong in [
            Vec::new(),
            encrypted_key[8..].to_vec(),
            [&encrypted_key[..], &[0; 8]].concat(),
        ] {
            assert_eq!(
                reason(jwe::decrypt(
                    &with_segment(&token, 1, &encode(&wrong)),
                    &keys
                )),
                DecryptFailure::EncryptedKeyLength,
                "{kid}"
            );
        }
    }
    for enc in ENCS {
        let token = token_for(&keys, "a256kw", enc);
        let iv = decode(token.split('.').nth(2).expect("an IV"));
        let tag = decode(token.split('.').nth(4).expect("a tag"));
        let short_iv = with_segment(&token, 2, &encode(&iv[1..]));
        assert_eq!(
            reason(jwe::decrypt(&short_iv, &keys)),
            DecryptFailure::IvLength,
            "{enc}"
        );
        let long_iv = with_segment(&token, 2, &encode(&[&iv[..], &[0]].concat()));
        assert_eq!(
            reason(jwe::decrypt(&long_iv, &keys)),
            DecryptFailure::IvLength,
            "{enc}"
        );
        let short_tag = with_segment(&token, 4, &encode(&tag[..tag.len() - 1]));
        assert_eq!(
            reason(jwe::decrypt(&short_tag, &keys)),
            DecryptFailure::TagLength,
            "{enc}"
        );
        let no_tag = with_segment(&token, 4, "");
        assert_eq!(
            reason(jwe::decrypt(&no_tag, &keys)),
            DecryptFailure::TagLength,
            "{enc}"
        );
    }
    let cbc = token_for(&keys, "a256kw", Enc::A256CbcHs512);
    let ciphertext = decode(cbc.split('.').nth(3).expect("a ciphertext"));
    let ragged = with_segment(&cbc, 3, &encode(&ciphertext[1..]));
    assert_eq!(
        reason(jwe::decrypt(&ragged, &keys)),
        DecryptFailure::CiphertextLength
    );
    assert_eq!(
        reason(jwe::decrypt(&with_segment(&cbc, 3, ""), &keys)),
        DecryptFailure::CiphertextLength
    );
}

#[test]
fn the_key_the_kid_selects_must_fit_the_header() {
    let keys = every_key();
    let token = token_for(&keys, "ECDH-ES/P-256", Enc::A256Gcm);
    let others = |kid: &str, alg: KeyAlg, curve: Curve| {
        let der = jwe::generate_pkcs8(alg, curve).expect("generates");
        vec![DecryptionKey::from_pkcs8_der(kid, alg, &der).expect("loads")]
    };
    assert_eq!(
        reason(jwe::decrypt(
            &token,
            &others("ECDH-ES/P-256", KeyAlg::EcdhEs, Curve::P384)
        )),
        DecryptFailure::EpkWrongCurve
    );
    assert_eq!(
        reason(jwe::decrypt(
            &token,
            &others("ECDH-ES/P-256", KeyAlg::EcdhEsA128Kw, Curve::P256)
        )),
        DecryptFailure::AlgMismatch
    );
    assert_eq!(
        reason(jwe::decrypt(
            &token,
            &others("someone-else", KeyAlg::EcdhEs, Curve::P256)
        )),
        DecryptFailure::UnknownKid
    );
    // A wrong key of the right kind: the tag fails, as any tampering does.
    assert_eq!(
        reason(jwe::decrypt(
            &token,
            &others("ECDH-ES/P-256", KeyAlg::EcdhEs, Curve::P256)
        )),
        DecryptFailure::DecryptionFailed
    );
    let dir = token_for(&keys, "dir/32", Enc::A256Gcm);
    let short = [DecryptionKey::from_secret("dir/32", KeyAlg::Dir, &[1; 16]).expect("a key")];
    assert_eq!(
        reason(jwe::decrypt(&dir, &short)),
        DecryptFailure::EncNotForKey
    );
    let pinned = [DecryptionKey::from_secret("dir/32", KeyAlg::Dir, &[32; 32])
        .expect("a key")
        .only_enc(Enc::A128CbcHs256)
        .expect("32 bytes")];
    assert_eq!(
        reason(jwe::decrypt(&dir, &pinned)),
        DecryptFailure::EncNotForKey
    );
}

/// A change to a token's header.
type HeaderEdit = dyn Fn(&mut Map<String, Value>);

#[test]
fn a_header_that_the_allow_list_refuses_is_refused_before_any_key_is_used() {
    let keys = every_key();
    let token = token_for(&keys, "ECDH-ES+A256KW/P-256", Enc::A256Gcm);
    let header = header_of(&token);
    let edited = |edit: &HeaderEdit| {
        let mut header = header.clone();
        edit(&mut header);
        with_header(&token, &Value::Object(header).to_string())
    };
    let cases: [(&HeaderEdit, DecryptFailure); 7] = [
        (
            &|h| {
                h.remove("epk");
            },
            DecryptFailure::InvalidEpk,
        ),
        (
            &|h| {
                h.insert("epk".into(), json!({"kty": "EC", "crv": "P-256"}));
            },
            DecryptFailure::InvalidEpk,
        ),
        (
            &|h| {
                h.insert("zip".into(), "DEF".into());
            },
            DecryptFailure::ZipRefused,
        ),
        (
            &|h| {
                h.insert("crit".into(), json!(["exp"]));
            },
            DecryptFailure::CritRefused,
        ),
        (
            &|h| {
                h.insert("alg".into(), "RSA1_5".into());
            },
            DecryptFailure::Rsa15Refused,
        ),
        (
            &|h| {
                h.insert("enc".into(), "A192GCM".into());
            },
            DecryptFailure::EncNotAllowed,
        ),
        (
            &|h| {
                h.insert("apu".into(), "not base64url!".into());
            },
            DecryptFailure::Malformed,
        ),
    ];
    for (edit, expected) in cases {
        assert_eq!(reason(jwe::decrypt(&edited(edit), &keys)), expected);
    }
}

#[test]
fn no_input_makes_decrypt_panic() {
    let keys = every_key();
    let token = token_for(&keys, "ECDH-ES+A128KW/X25519", Enc::A128CbcHs256);
    for end in 0..token.len() {
        assert!(jwe::decrypt(&token[..end], &keys).is_err());
        assert!(jwe::decrypt(&token[end..], &keys).is_err() || end == 0);
    }
    let mut junk = vec![0u8; 64];
    for _ in 0..200 {
        aws_lc_rs::rand::fill(&mut junk).expect("random");
        let text = String::from_utf8_lossy(&junk);
        assert!(jwe::decrypt(&text, &keys).is_err());
        let dotted = format!(
            "{}.{}.{}.{}.{}",
            encode(&junk[..8]),
            encode(&junk[8..40]),
            encode(&junk[40..52]),
            encode(&junk[52..56]),
            encode(&junk[56..])
        );
        assert!(jwe::decrypt(&dotted, &keys).is_err());
        let header = format!(
            r#"{{"alg":"ECDH-ES","enc":"A128GCM","epk":{{"kty":"OKP","crv":"X25519","x":"{}"}}}}"#,
            encode(&junk[..32])
        );
        let forged = format!(
            "{}..{}.{}.{}",
            encode(header.as_bytes()),
            encode(&junk[32..44]),
            encode(&junk[44..48]),
            encode(&junk[48..64])
        );
        assert!(jwe::decrypt(&forged, &keys).is_err());
    }
}

// --- Encrypting to a public key ---

fn spki_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("ASCII"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// The SPKI of a generated PKCS#8 key, read with aws-lc-rs directly.
fn spki_of(alg: KeyAlg, curve: Curve, pkcs8: &[u8]) -> Vec<u8> {
    if alg == KeyAlg::RsaOaep256 {
        let key = PrivateDecryptingKey::from_pkcs8(pkcs8).expect("RSA");
        let spki: PublicKeyX509Der<'_> = key.public_key().as_der().expect("SPKI");
        return spki.as_ref().to_vec();
    }
    let private = match curve {
        Curve::P256 => agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, pkcs8),
        Curve::P384 => agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P384, pkcs8),
        // RFC 8410: the seed is the last 32 bytes of a v1 document.
        Curve::X25519 => agreement::PrivateKey::from_private_key(&agreement::X25519, &pkcs8[16..]),
    }
    .expect("an ECDH key");
    let public = private.compute_public_key().expect("public");
    let spki: PublicKeyX509Der<'_> = public.as_der().expect("SPKI");
    spki.as_ref().to_vec()
}

#[test]
fn encrypt_makes_a_nested_jwt_to_a_public_key_from_pem_or_jwk() {
    let cases = [
        (KeyAlg::RsaOaep256, Curve::P256),
        (KeyAlg::EcdhEsA256Kw, Curve::P256),
        (KeyAlg::EcdhEsA256Kw, Curve::P384),
        (KeyAlg::EcdhEsA256Kw, Curve::X25519),
    ];
    for (alg, curve) in cases {
        let pkcs8 = jwe::generate_pkcs8(alg, curve).expect("generates");
        let private = DecryptionKey::from_pkcs8_der("upstream-enc", alg, &pkcs8).expect("loads");
        let pem = spki_pem(&spki_of(alg, curve, &pkcs8));
        let jwk = private.public_jwk().expect("a public JWK");
        let recipients = [
            EncryptionKey::from_public_pem("upstream-enc", alg, pem.as_bytes()).expect("SPKI PEM"),
            EncryptionKey::from_public_bytes("upstream-enc", alg, pem.as_bytes())
                .expect("a PEM file"),
            EncryptionKey::from_public_jwk("upstream-enc", alg, &jwk).expect("a JWK"),
            EncryptionKey::from_public_bytes("upstream-enc", alg, jwk.to_string().as_bytes())
                .expect("a JWK file"),
        ];
        for to in &recipients {
            let jws = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
            let token = jwe::encrypt(to, jws).expect("encrypts");
            let again = jwe::encrypt(to, jws).expect("encrypts");
            assert_ne!(token, again, "fresh CEK, IV and ephemeral key every time");
            let header = header_of(&token);
            assert_eq!(header["alg"], alg.name());
            assert_eq!(header["enc"], "A256GCM");
            assert_eq!(header["cty"], "JWT");
            assert_eq!(header["kid"], "upstream-enc");
            if alg.is_ecdh() {
                let epk = header["epk"].as_object().expect("an epk");
                assert_eq!(epk["crv"], curve.name());
                assert_eq!(epk["kty"], curve.kty());
                assert!(!epk.contains_key("d"));
            } else {
                assert!(!header.contains_key("epk"));
            }
            let decrypted = jwe::decrypt(&token, [&private]).expect("the recipient decrypts");
            assert_eq!(decrypted.plaintext, jws);
            assert_eq!(decrypted.cty.as_deref(), Some("JWT"));
        }
        // A public key of another type than the algorithm's is refused.
        let other = if alg == KeyAlg::RsaOaep256 {
            KeyAlg::EcdhEs
        } else {
            KeyAlg::RsaOaep256
        };
        assert!(EncryptionKey::from_public_pem("x", other, pem.as_bytes()).is_err());
    }
}

#[test]
fn a_dir_key_encrypts_only_with_the_enc_of_its_length() {
    let to = EncryptionKey::from_secret("d", KeyAlg::Dir, &[5; 16]).expect("a key");
    assert!(jwe::encrypt_with(&to, Enc::A128Gcm, None, b"x").is_ok());
    assert_eq!(
        jwe::encrypt(&to, b"x"),
        Err(jwe::EncryptError::EncNotForKey)
    );
}

// --- The copies ---

#[test]
fn the_jwe_fixture_copies_match_the_shared_vectors() {
    let shared = Path::new(SHARED);
    if !shared.is_dir() {
        return;
    }
    let fixtures = Path::new(FIXTURES);
    let mut copies: Vec<(String, String)> = vec![
        ("rfc7520/LICENSE".into(), "rfc7520_cookbook/LICENSE".into()),
        ("rfc8037/LICENSE".into(), "rfc7520_cookbook/LICENSE".into()),
        (
            "rfc8037/x25519_ecdh-es.json".into(),
            "rfc8037/x25519_ecdh-es.json".into(),
        ),
        ("wycheproof/LICENSE".into(), "wycheproof/LICENSE".into()),
        (
            "rfc7520/6.nesting_signatures_and_encryption.json".into(),
            "rfc7520_cookbook/6.nesting_signatures_and_encryption.json".into(),
        ),
    ];
    for entry in
        std::fs::read_dir(shared.join("rfc7520_cookbook/jwe")).expect("the shared JWE vectors")
    {
        let name = entry
            .expect("an entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        copies.push((
            format!("rfc7520/{name}"),
            format!("rfc7520_cookbook/jwe/{name}"),
        ));
    }
    assert_eq!(copies.len(), 5 + 13, "RFC 7520 §5.1-5.13");
    for (copy, source) in copies {
        let copy_bytes = std::fs::read(fixtures.join(&copy)).expect("the copy exists");
        let source_bytes = std::fs::read(shared.join(&source)).expect("the source exists");
        assert!(
            copy_bytes == source_bytes,
            "tests/fixtures/jose/{copy} differs from {source}"
        );
    }
    // The Wycheproof copy is the JWE groups of the published file.
    let published: Value = serde_json::from_slice(
        &std::fs::read(shared.join("wycheproof/json_web_crypto_test.json")).expect("published"),
    )
    .expect("JSON");
    let jwe_groups: Vec<&Value> = published["testGroups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["comment"].as_str().is_some_and(|c| c.starts_with("jwe_")))
        .collect();
    let copy = fixture("wycheproof/json_web_crypto_jwe_test.json");
    let copied: Vec<&Value> = copy["testGroups"]
        .as_array()
        .expect("groups")
        .iter()
        .collect();
    assert_eq!(copied, jwe_groups);
    assert_eq!(copy["header"], published["header"]);
}
