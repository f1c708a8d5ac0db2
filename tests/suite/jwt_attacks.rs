//! Attacks on token verification, through [`jwt::verify`] with key sets of
//! real keys. Tokens are put together by hand (base64url(header) "."
//! base64url(payload) "." signature, signed with
//! `jsonwebtoken::crypto::sign`), so every header byte is the attacker's.

#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use warden::auth::jwt::{self, IssuerPolicy, KeySet, Principal, Reason, VerifyingKey};
use warden::auth::keys::{self, KeySettings, KeySource, alg_name};

/// The verifier's clock in every test.
const NOW: i64 = 1_700_000_000;
/// The verifier's allowed clock skew.
const LEEWAY: i64 = 30;
const ISS: &str = "https://gateway.example";
const AUD: &str = "orders-api";

/// A key pair (or HS secret) with its kid and algorithm.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_jwk: Option<Jwk>,
}

impl Key {
    /// A fresh key, made as `generate = true` makes one.
    fn generate(kid: &str, alg: Algorithm) -> Self {
        let loaded = keys::load(&KeySettings {
            kid: kid.to_owned(),
            alg,
            source: KeySource::Generate,
        })
        .unwrap();
        Self {
            kid: kid.to_owned(),
            alg,
            encoding: loaded.encoding.unwrap(),
            decoding: loaded.decoding,
            public_jwk: loaded.public_jwk,
        }
    }

    /// This key as the gateway holds it for `issuer`.
    fn verifying(&self, issuer: &Arc<IssuerPolicy>) -> VerifyingKey {
        VerifyingKey {
            kid: Some(self.kid.clone()),
            alg: self.alg,
            key: self.decoding.clone(),
            issuer: issuer.clone(),
        }
    }

    /// The usual header: `{"alg", "typ", "kid"}`.
    fn header(&self) -> Value {
        json!({"alg": alg_name(self.alg), "typ": "JWT", "kid": self.kid})
    }

    /// `header.payload.signature`, signed with this key's algorithm.
    fn sign(&self, header_b64: &str, payload_b64: &str) -> String {
        let input = format!("{header_b64}.{payload_b64}");
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).unwrap();
        let signature = warden::auth::ecdsa::low_s_segment(self.alg, &signature);
        format!("{input}.{signature}")
    }

    /// A token with this header and these claims, signed with this key.
    fn token(&self, header: &Value, claims: &Value) -> String {
        self.sign(&encode(header), &encode(claims))
    }

    /// A token with the usual header and `claims`.
    fn token_for(&self, claims: &Value) -> String {
        self.token(&self.header(), claims)
    }
}

/// An RS256 key with every form of its public half an attacker can read.
struct RsaKey {
    key: Key,
    public_pem: String,
    public_der: Vec<u8>,
    public_jwk_json: String,
}

/// One RSA key for every test (RSA key generation is the slow part).
fn rsa() -> &'static RsaKey {
    static RSA: OnceLock<RsaKey> = OnceLock::new();
    RSA.get_or_init(|| {
        warden::crypto::install_providers();
        let der = keys::generate_der(Algorithm::RS256).unwrap();
        let encoding = EncodingKey::from_rsa_pem(keys::pkcs8_pem(&der).as_bytes()).unwrap();
        let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
        let public_der = AsDer::<PublicKeyX509Der<'_>>::as_der(pair.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        let mut public_pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in STANDARD.encode(&public_der).as_bytes().chunks(64) {
            public_pem.push_str(std::str::from_utf8(line).unwrap());
            public_pem.push('\n');
        }
        public_pem.push_str("-----END PUBLIC KEY-----\n");
        let decoding = DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("rsa-1".into());
        RsaKey {
            public_jwk_json: serde_json::to_string(&jwk).unwrap(),
            key: Key {
                kid: "rsa-1".into(),
                alg: Algorithm::RS256,
                encoding,
                decoding,
                public_jwk: Some(jwk),
            },
            public_pem,
            public_der,
        }
    })
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn issuer() -> Arc<IssuerPolicy> {
    Arc::new(IssuerPolicy {
        iss: ISS.into(),
        audiences: vec![AUD.into(), "billing-api".into()],
        accept_high_s: false,
    })
}

fn set_of(keys: &[&Key]) -> KeySet {
    let issuer = issuer();
    KeySet::new(keys.iter().map(|k| k.verifying(&issuer)).collect())
}

/// Claims that pass every check at [`NOW`].
fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "jti": "token-1",
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + 600,
        "scope": "orders:read orders:write",
    })
}

/// `claims()` with `changes` applied (`null` removes a claim).
fn claims_with(changes: &Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn verify(token: &str, set: &KeySet) -> Result<Principal, Reason> {
    warden::crypto::install_providers();
    jwt::verify(token, &[set], NOW, LEEWAY).map_err(|(rejection, _)| rejection.reason)
}

fn reason(token: &str, set: &KeySet) -> Reason {
    match verify(token, set) {
        Ok(principal) => panic!("accepted, as {principal:?}: {token}"),
        Err(reason) => reason,
    }
}

// ---------------------------------------------------------------- baseline

#[test]
fn a_good_token_from_each_kind_of_key_is_accepted_with_its_subject_and_scopes() {
    warden::crypto::install_providers();
    let keys = [
        Key::generate("hs-1", Algorithm::HS256),
        Key::generate("hs-384", Algorithm::HS384),
        Key::generate("es-1", Algorithm::ES256),
        Key::generate("es-384", Algorithm::ES384),
        Key::generate("ed-1", Algorithm::EdDSA),
    ];
    let mut all: Vec<&Key> = keys.iter().collect();
    all.push(&rsa().key);
    let set = set_of(&all);
    for key in &all {
        let principal = verify(&key.token_for(&claims()), &set)
            .unwrap_or_else(|r| panic!("{:?} token rejected: {r:?}", key.alg));
        assert_eq!(principal.sub.as_deref(), Some("alice"));
        assert_eq!(principal.iss, ISS);
        assert_eq!(principal.jti.as_deref(), Some("token-1"));
        assert_eq!(principal.exp, NOW + 600);
        assert_eq!(principal.scopes, ["orders:read", "orders:write"]);
        assert_eq!(principal.claims["aud"], AUD);
    }
}

#[test]
fn scopes_come_from_a_scope_string_and_an_scp_array() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let scopes = |changes: Value| verify(&hs.token_for(&claims_with(&changes)), &set).unwrap();

    let p = scopes(json!({"scope": "b a  c"}));
    assert_eq!(p.scopes, ["a", "b", "c"]);
    let p = scopes(json!({"scope": null, "scp": ["orders:read", "admin"]}));
    assert_eq!(p.scopes, ["admin", "orders:read"]);
    assert_eq!(p.sub.as_deref(), Some("alice"));
    let p = scopes(json!({"scope": "x y", "scp": ["y", "z"]}));
    assert_eq!(p.scopes, ["x", "y", "z"]);
    let p = scopes(json!({"scope": null}));
    assert!(p.scopes.is_empty());
    // A subject is optional; a service token may have none.
    let p = scopes(json!({"sub": null}));
    assert_eq!(p.sub, None);
}

#[test]
fn a_tampered_token_or_one_signed_by_another_key_with_the_same_kid_is_rejected() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let es = Key::generate("es-1", Algorithm::ES256);
    let set = set_of(&[&hs, &es]);
    // The payload swapped after signing.
    let good = hs.token_for(&claims());
    let (header, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged = encode(&claims_with(&json!({"sub": "root"})));
    assert_eq!(
        reason(&format!("{header}.{forged}.{signature}"), &set),
        Reason::SignatureInvalid
    );
    // Keys of the attacker's own, under the gateway's kids.
    for (mine, theirs) in [(&hs, Algorithm::HS256), (&es, Algorithm::ES256)] {
        let attacker = Key::generate(&mine.kid, theirs);
        assert_eq!(
            reason(&attacker.token_for(&claims()), &set),
            Reason::SignatureInvalid
        );
    }
}

// ---------------------------------------------------------------- alg

#[test]
fn alg_none_in_any_casing_is_rejected_with_or_without_a_signature() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs, &rsa().key]);
    let payload = encode(&claims());
    for alg in ["none", "None", "NONE", "nOnE"] {
        for kid in [None, Some("hs-1"), Some("rsa-1")] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let unsigned = format!("{}.{payload}", encode(&header));
            // Empty signature: not even a compact JWS.
            assert_eq!(
                reason(&format!("{unsigned}."), &set),
                Reason::Malformed,
                "{alg} {kid:?}"
            );
            // A signature, even a real HMAC of the input: `none` is no algorithm.
            let mac =
                jsonwebtoken::crypto::sign(unsigned.as_bytes(), &hs.encoding, hs.alg).unwrap();
            for signature in ["AAAA", mac.as_str()] {
                assert_eq!(
                    reason(&format!("{unsigned}.{signature}"), &set),
                    Reason::AlgNotAllowed,
                    "{alg} {kid:?}"
                );
            }
        }
    }
}

#[test]
fn an_algorithm_name_is_matched_exactly_and_must_be_a_string() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let payload = encode(&claims());
    for alg in [
        "hs256",
        "Hs256",
        "HS256 ",
        " HS256",
        "HS256\u{0}",
        "HS-256",
        "ES512",
        "RSA1_5",
    ] {
        let header = encode(&json!({"alg": alg, "kid": "hs-1"}));
        assert_eq!(
            reason(&hs.sign(&header, &payload), &set),
            Reason::AlgNotAllowed,
            "{alg:?}"
        );
    }
    for alg in [
        json!(null),
        json!(256),
        json!(["HS256"]),
        json!({"name": "HS256"}),
    ] {
        let header = encode(&json!({"alg": alg, "kid": "hs-1"}));
        assert_eq!(
            reason(&hs.sign(&header, &payload), &set),
            Reason::Malformed,
            "{alg}"
        );
    }
    let header = encode(&json!({"kid": "hs-1"}));
    assert_eq!(reason(&hs.sign(&header, &payload), &set), Reason::Malformed);
}

#[test]
fn a_key_verifies_only_its_own_algorithm() {
    warden::crypto::install_providers();
    let es = Key::generate("es-1", Algorithm::ES256);
    let set = set_of(&[&es, &rsa().key]);
    let payload = encode(&claims());
    // PKCS#1 v1.5 key, PSS signature by the same private key.
    let pss = Key {
        kid: "rsa-1".into(),
        alg: Algorithm::PS256,
        encoding: rsa().key.encoding.clone(),
        decoding: rsa().key.decoding.clone(),
        public_jwk: None,
    };
    assert_eq!(
        reason(&pss.sign(&encode(&pss.header()), &payload), &set),
        Reason::AlgNotAllowed
    );
    // The same token, now claiming RS256: the signature is PSS, so invalid.
    let pss_token = pss.sign(&encode(&pss.header()), &payload);
    let signature = pss_token.rsplit_once('.').unwrap().1;
    let header = encode(&rsa().key.header());
    assert_eq!(
        reason(&format!("{header}.{payload}.{signature}"), &set),
        Reason::SignatureInvalid
    );
    // An ES256 kid with alg ES384.
    let header = encode(&json!({"alg": "ES384", "kid": "es-1"}));
    let es384 = Key::generate("es-1", Algorithm::ES384);
    assert_eq!(
        reason(&es384.sign(&header, &payload), &set),
        Reason::AlgNotAllowed
    );
}

#[test]
fn an_hs256_token_keyed_with_the_rs256_public_key_is_never_accepted() {
    warden::crypto::install_providers();
    let rsa = rsa();
    let other_hs = Key::generate("hs-1", Algorithm::HS256);
    let only_rsa = set_of(&[&rsa.key]);
    let rsa_and_hs = set_of(&[&rsa.key, &other_hs]);
    let payload = encode(&claims_with(&json!({"sub": "root", "scope": "admin"})));
    let secrets: [(&str, Vec<u8>); 5] = [
        ("PEM", rsa.public_pem.clone().into_bytes()),
        (
            "PEM without its last newline",
            rsa.public_pem.trim_end().as_bytes().to_vec(),
        ),
        ("DER", rsa.public_der.clone()),
        ("JWK JSON", rsa.public_jwk_json.clone().into_bytes()),
        (
            "the JWK's n",
            serde_json::to_value(rsa.key.public_jwk.as_ref().unwrap()).unwrap()["n"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
        ),
    ];
    for (what, secret) in &secrets {
        let attacker = Key {
            kid: "rsa-1".into(),
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            public_jwk: None,
        };
        for kid in [Some("rsa-1"), None] {
            let mut header = json!({"alg": "HS256", "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let token = attacker.sign(&encode(&header), &payload);
            // The forgery is a real HMAC with that secret.
            let (input, signature) = token.rsplit_once('.').unwrap();
            assert!(
                jsonwebtoken::crypto::verify(
                    signature,
                    input.as_bytes(),
                    &attacker.decoding,
                    Algorithm::HS256
                )
                .unwrap()
            );
            let expected = if kid.is_some() {
                Reason::AlgNotAllowed
            } else {
                Reason::UnknownKid
            };
            assert_eq!(reason(&token, &only_rsa), expected, "{what}, kid {kid:?}");
            // With an HS256 key also held: the kid still names the RSA key;
            // without a kid, the HS key is the only candidate and the MAC fails.
            let expected = if kid.is_some() {
                Reason::AlgNotAllowed
            } else {
                Reason::SignatureInvalid
            };
            assert_eq!(reason(&token, &rsa_and_hs), expected, "{what}, kid {kid:?}");
        }
    }
}

// ---------------------------------------------------------------- signatures

#[test]
fn an_es256_signature_of_zeros_is_invalid() {
    let es = Key::generate("es-1", Algorithm::ES256);
    let set = set_of(&[&es]);
    let input = format!("{}.{}", encode(&es.header()), encode(&claims()));
    // r = s = 0, as 64 raw bytes (CVE-2022-21449, "psychic signatures").
    let zeros = URL_SAFE_NO_PAD.encode([0u8; 64]);
    assert_eq!(
        reason(&format!("{input}.{zeros}"), &set),
        Reason::SignatureInvalid
    );
    // r = s = 0 as DER, and other wrong lengths.
    for signature in [
        URL_SAFE_NO_PAD.encode([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]),
        URL_SAFE_NO_PAD.encode([0u8; 32]),
        URL_SAFE_NO_PAD.encode([0u8; 96]),
        URL_SAFE_NO_PAD.encode([0xffu8; 64]),
    ] {
        assert_eq!(
            reason(&format!("{input}.{signature}"), &set),
            Reason::SignatureInvalid
        );
    }
    // And the same r = s = 0 for an EdDSA key.
    let ed = Key::generate("ed-1", Algorithm::EdDSA);
    let set = set_of(&[&ed]);
    let input = format!("{}.{}", encode(&ed.header()), encode(&claims()));
    assert_eq!(
        reason(&format!("{input}.{zeros}"), &set),
        Reason::SignatureInvalid
    );
}

// ---------------------------------------------------------------- kid

#[test]
fn odd_kids_are_unknown_and_never_panic() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs, &rsa().key]);
    let huge = "k".repeat(1 << 20);
    let kids = [
        "../../etc/passwd",
        "/dev/null",
        "a\u{0}b",
        "hs-1\u{0}",
        "HS-1",
        " hs-1",
        "",
        "*",
        "' OR '1'='1",
        "hs-1\n",
        "\u{202e}1-sh",
        huge.as_str(),
    ];
    for kid in kids {
        let header = json!({"alg": "HS256", "kid": kid});
        let token = hs.token(&header, &claims());
        assert_eq!(
            reason(&token, &set),
            Reason::UnknownKid,
            "kid {:?}",
            kid.chars().take(20).collect::<String>()
        );
    }
    // A kid that is not a string is malformed.
    for kid in [
        json!(1),
        json!(null),
        json!(["hs-1"]),
        json!({"kid": "hs-1"}),
        json!(true),
    ] {
        let header = json!({"alg": "HS256", "kid": kid});
        assert_eq!(
            reason(&hs.token(&header, &claims()), &set),
            Reason::Malformed,
            "{kid}"
        );
    }
}

#[test]
fn without_a_kid_a_token_is_accepted_only_when_exactly_one_key_has_its_algorithm() {
    let first = Key::generate("hs-1", Algorithm::HS256);
    let second = Key::generate("hs-2", Algorithm::HS256);
    let es = Key::generate("es-1", Algorithm::ES256);
    let no_kid = json!({"alg": "HS256", "typ": "JWT"});

    let two = set_of(&[&first, &second, &es]);
    assert_eq!(
        reason(&first.token(&no_kid, &claims()), &two),
        Reason::UnknownKid
    );
    // With its kid, the same key's token is fine.
    let p = verify(&first.token_for(&claims()), &two).unwrap();
    assert_eq!(p.sub.as_deref(), Some("alice"));

    let one = set_of(&[&first, &es]);
    let p = verify(&first.token(&no_kid, &claims()), &one).unwrap();
    assert_eq!(p.sub.as_deref(), Some("alice"));
    assert_eq!(p.scopes, ["orders:read", "orders:write"]);
    // The one key of that algorithm must still have signed it.
    assert_eq!(
        reason(&second.token(&no_kid, &claims()), &one),
        Reason::SignatureInvalid
    );
    // No key of that algorithm at all.
    let none = set_of(&[&es]);
    assert_eq!(
        reason(&first.token(&no_kid, &claims()), &none),
        Reason::UnknownKid
    );
}

#[test]
fn when_two_issuers_share_a_kid_the_signature_decides_not_the_claimed_issuer() {
    let ours = Key::generate("shared", Algorithm::ES256);
    let theirs = Key::generate("shared", Algorithm::ES256);
    let partner = Arc::new(IssuerPolicy {
        iss: "https://partner.example".into(),
        audiences: vec![AUD.into()],
        accept_high_s: false,
    });
    let own_set = set_of(&[&ours]);
    let partner_set = KeySet::new(vec![theirs.verifying(&partner)]);
    let sets = [&own_set, &partner_set];
    let check = |token: &str| {
        warden::crypto::install_providers();
        jwt::verify(token, &sets, NOW, LEEWAY).map_err(|(r, _)| r.reason)
    };
    // Each issuer's own tokens pass.
    assert_eq!(check(&ours.token_for(&claims())).unwrap().iss, ISS);
    let partner_claims = claims_with(&json!({"iss": "https://partner.example"}));
    assert_eq!(
        check(&theirs.token_for(&partner_claims)).unwrap().iss,
        "https://partner.example"
    );
    // Our key claiming to be the partner: the partner's key is chosen and fails.
    assert_eq!(
        check(&ours.token_for(&partner_claims)),
        Err(Reason::SignatureInvalid)
    );
    // The partner's key claiming to be us: our key is chosen and fails.
    assert_eq!(
        check(&theirs.token_for(&claims())),
        Err(Reason::SignatureInvalid)
    );
}

// ---------------------------------------------------------------- header keys

#[test]
fn an_embedded_jwk_or_x5c_carrying_the_attackers_key_is_ignored() {
    let ours = Key::generate("es-1", Algorithm::ES256);
    let set = set_of(&[&ours]);
    let attacker = Key::generate("attacker", Algorithm::ES256);
    let attacker_jwk = serde_json::to_value(attacker.public_jwk.as_ref().unwrap()).unwrap();
    assert_eq!(attacker_jwk["kid"], "attacker");
    let cases = [
        (
            json!({"alg": "ES256", "kid": "es-1", "jwk": attacker_jwk}),
            Reason::SignatureInvalid,
        ),
        (
            json!({"alg": "ES256", "jwk": attacker_jwk}),
            Reason::SignatureInvalid,
        ),
        (
            json!({"alg": "ES256", "kid": "attacker", "jwk": attacker_jwk}),
            Reason::UnknownKid,
        ),
        (
            json!({"alg": "ES256", "kid": "es-1", "x5c": [URL_SAFE_NO_PAD.encode(b"attacker cert")]}),
            Reason::SignatureInvalid,
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(
            reason(&attacker.token(&header, &claims()), &set),
            expected,
            "{header}"
        );
    }
}

#[test]
fn jku_and_x5u_urls_in_a_token_are_never_fetched() {
    let ours = Key::generate("es-1", Algorithm::ES256);
    let set = set_of(&[&ours]);
    let attacker = Key::generate("attacker", Algorithm::ES256);
    // A listener that would see any fetch: it must never get a connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cases = [
        (
            json!({"alg": "ES256", "kid": "attacker", "jku": format!("{base}/jwks.json")}),
            Reason::UnknownKid,
        ),
        (
            json!({"alg": "ES256", "kid": "attacker", "x5u": format!("{base}/cert.pem")}),
            Reason::UnknownKid,
        ),
        (
            json!({"alg": "ES256", "kid": "es-1", "jku": format!("{base}/jwks.json")}),
            Reason::SignatureInvalid,
        ),
        (
            json!({"alg": "ES256", "jku": format!("{base}/jwks.json")}),
            Reason::SignatureInvalid,
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(
            reason(&attacker.token(&header, &claims()), &set),
            expected,
            "{header}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the verifier connected to the token's URL: {other:?}"),
    }
}

#[test]
fn critical_header_parameters_are_not_supported() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let with = |extra: Value| {
        let mut header = hs.header();
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        reason(&hs.token(&header, &claims()), &set)
    };
    assert_eq!(
        with(json!({"crit": ["exp"], "exp": NOW + 600})),
        Reason::CritUnsupported
    );
    assert_eq!(with(json!({"crit": ["exp"]})), Reason::CritUnsupported);
    assert_eq!(
        with(json!({"crit": ["b64"], "b64": false})),
        Reason::CritUnsupported
    );
    assert_eq!(
        with(json!({"crit": ["b64"], "b64": true})),
        Reason::CritUnsupported
    );
    assert_eq!(with(json!({"crit": ["b64"]})), Reason::CritUnsupported);
    assert_eq!(
        with(json!({"crit": ["exp", "b64"]})),
        Reason::CritUnsupported
    );
    // A crit that is not a non-empty list of names is malformed.
    assert_eq!(with(json!({"crit": []})), Reason::Malformed);
    assert_eq!(with(json!({"crit": "exp"})), Reason::Malformed);
    assert_eq!(with(json!({"crit": [1]})), Reason::Malformed);
    // b64, enc and zip, even without crit: not a JWS warden verifies.
    assert_eq!(with(json!({"b64": false})), Reason::Malformed);
    assert_eq!(with(json!({"enc": "A256GCM"})), Reason::Malformed);
    assert_eq!(with(json!({"zip": "DEF"})), Reason::Malformed);
}

#[test]
fn a_repeated_header_name_takes_the_last_value_as_rfc_7515_allows() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let payload = encode(&claims());
    // RFC 7515 §5.2: reject, or take the lexically last member. serde_json
    // takes the last, so the last `alg` is the one checked.
    let last_none = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"hs-1","alg":"none"}"#);
    assert_eq!(
        reason(&hs.sign(&last_none, &payload), &set),
        Reason::AlgNotAllowed
    );
    let last_hs = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"hs-1","alg":"HS256"}"#);
    assert!(verify(&hs.sign(&last_hs, &payload), &set).is_ok());
    let last_unknown_kid = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"hs-1","kid":"other"}"#);
    assert_eq!(
        reason(&hs.sign(&last_unknown_kid, &payload), &set),
        Reason::UnknownKid
    );
}

// ---------------------------------------------------------------- claims

#[test]
fn time_claims_that_are_not_numbers_are_malformed_not_absent() {
    // CVE-2026-25537: a string `exp` must not count as "no exp".
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let check = |changes: Value| reason(&hs.token_for(&claims_with(&changes)), &set);
    assert_eq!(check(json!({"exp": "9999999999"})), Reason::Malformed);
    assert_eq!(
        check(json!({"exp": (NOW + 600).to_string()})),
        Reason::Malformed
    );
    assert_eq!(check(json!({"exp": [NOW + 600]})), Reason::Malformed);
    assert_eq!(check(json!({"exp": true})), Reason::Malformed);
    assert_eq!(
        check(json!({"exp": {"value": NOW + 600}})),
        Reason::Malformed
    );
    assert_eq!(check(json!({"nbf": "9999999999"})), Reason::Malformed);
    assert_eq!(check(json!({"nbf": "0"})), Reason::Malformed);
    assert_eq!(check(json!({"iat": "0"})), Reason::Malformed);
    // Missing exp: refused too (the gateway takes no token without an end).
    assert_eq!(check(json!({"exp": null})), Reason::Malformed);
    let mut explicit_null = claims();
    explicit_null["exp"] = Value::Null;
    assert_eq!(
        reason(&hs.token_for(&explicit_null), &set),
        Reason::Malformed
    );
    // Other claims of the wrong type.
    assert_eq!(check(json!({"sub": 42})), Reason::Malformed);
    assert_eq!(
        check(json!({"iss": ["https://gateway.example"]})),
        Reason::Malformed
    );
    assert_eq!(check(json!({"jti": 1})), Reason::Malformed);
    // A fractional NumericDate is a number: accepted, rounded down.
    let p = verify(
        &hs.token_for(&claims_with(&json!({"exp": NOW as f64 + 600.75}))),
        &set,
    )
    .unwrap();
    assert_eq!(p.exp, NOW + 600);
}

#[test]
fn expiry_not_before_and_issued_at_are_checked_with_the_leeway() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let check = |changes: Value| verify(&hs.token_for(&claims_with(&changes)), &set).map(|p| p.exp);

    assert_eq!(check(json!({"exp": NOW - 3600})), Err(Reason::TokenExpired));
    assert_eq!(
        check(json!({"exp": NOW - LEEWAY - 1})),
        Err(Reason::TokenExpired)
    );
    assert_eq!(
        check(json!({"exp": NOW - LEEWAY})),
        Err(Reason::TokenExpired)
    );
    assert_eq!(
        check(json!({"exp": NOW - LEEWAY + 1})),
        Ok(NOW - LEEWAY + 1)
    );
    assert_eq!(check(json!({"exp": NOW - 10})), Ok(NOW - 10));
    assert_eq!(check(json!({"exp": NOW})), Ok(NOW));

    let not_yet = Err(Reason::TokenNotYetValid);
    assert_eq!(check(json!({"nbf": NOW + 3600})), not_yet);
    assert_eq!(check(json!({"nbf": NOW + LEEWAY + 1})), not_yet);
    assert_eq!(check(json!({"nbf": NOW + LEEWAY})), Ok(NOW + 600));
    assert_eq!(check(json!({"nbf": NOW + 10})), Ok(NOW + 600));

    assert_eq!(check(json!({"iat": NOW + 3600})), not_yet);
    assert_eq!(check(json!({"iat": NOW + LEEWAY + 1})), not_yet);
    assert_eq!(check(json!({"iat": NOW + 10})), Ok(NOW + 600));

    // A token valid "forever" is the issuer's choice, and the clock at its extremes.
    assert_eq!(check(json!({"exp": i64::MAX})), Ok(i64::MAX));
    assert_eq!(check(json!({"exp": i64::MIN})), Err(Reason::TokenExpired));
    assert_eq!(check(json!({"exp": 1e300})), Ok(i64::MAX));
    assert_eq!(check(json!({"exp": -1e300})), Err(Reason::TokenExpired));
}

#[test]
fn a_token_of_another_issuer_is_rejected() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let check = |changes: Value| reason(&hs.token_for(&claims_with(&changes)), &set);
    assert_eq!(
        check(json!({"iss": "https://evil.example"})),
        Reason::IssuerMismatch
    );
    assert_eq!(
        check(json!({"iss": "https://gateway.example/"})),
        Reason::IssuerMismatch
    );
    assert_eq!(
        check(json!({"iss": "HTTPS://GATEWAY.EXAMPLE"})),
        Reason::IssuerMismatch
    );
    assert_eq!(check(json!({"iss": ""})), Reason::IssuerMismatch);
    assert_eq!(check(json!({"iss": null})), Reason::IssuerMismatch);
}

#[test]
fn the_audience_must_name_one_of_the_issuers_audiences() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let check = |aud: Value| verify(&hs.token_for(&claims_with(&json!({"aud": aud}))), &set);
    let missing = Err(Reason::AudienceMismatch);
    assert_eq!(check(Value::Null), missing, "no aud");
    assert_eq!(check(json!("other-api")), missing);
    assert_eq!(check(json!("ORDERS-API")), missing);
    assert_eq!(check(json!("")), missing);
    assert_eq!(check(json!(["other-api", "another-api"])), missing);
    assert_eq!(check(json!([])), missing);
    assert_eq!(check(json!(42)), missing);
    assert_eq!(check(json!({"aud": AUD})), missing);

    let accepted = |aud: Value| {
        let p = check(aud.clone()).unwrap_or_else(|r| panic!("aud {aud} rejected: {r:?}"));
        assert_eq!(p.sub.as_deref(), Some("alice"));
        assert_eq!(p.scopes, ["orders:read", "orders:write"]);
        assert_eq!(p.claims["aud"], aud);
    };
    accepted(json!(AUD));
    accepted(json!("billing-api"));
    accepted(json!(["other-api", AUD]));
    accepted(json!([AUD]));
    accepted(json!([42, "billing-api"]));
}

// ---------------------------------------------------------------- syntax

/// A header of `key` whose base64url, at some alignment, holds `-` or `_`
/// (so its standard base64 holds `+` or `/`).
fn header_needing_url_safe_characters(key: &Key) -> (String, String) {
    for pad in 0..3 {
        let header = json!({"alg": alg_name(key.alg), "kid": key.kid, "x": format!("{}???>>>", "a".repeat(pad))});
        let url_safe = encode(&header);
        let standard = STANDARD_NO_PAD.encode(header.to_string());
        if url_safe != standard {
            return (url_safe, standard);
        }
    }
    panic!("no alignment gave + or /")
}

#[test]
fn segments_must_be_strict_base64url() {
    let hs = Key::generate("hs-1", Algorithm::HS256);
    let set = set_of(&[&hs]);
    let payload = encode(&claims());
    let good = hs.token_for(&claims());
    assert!(verify(&good, &set).is_ok());
    let (header, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();

    // The same header in standard base64 (`+`, `/`), signed as it stands.
    let (url_safe, standard) = header_needing_url_safe_characters(&hs);
    assert!(verify(&hs.sign(&url_safe, &payload), &set).is_ok());
    assert!(standard.contains(['+', '/']));
    assert_eq!(
        reason(&hs.sign(&standard, &payload), &set),
        Reason::Malformed
    );
    // Padded: a header whose length needs `=`, signed with the padding.
    let mut padded = None;
    for pad in 0..3 {
        let h = json!({"alg": "HS256", "kid": "hs-1", "x": "a".repeat(pad)});
        let encoded = STANDARD.encode(h.to_string());
        if encoded.ends_with('=') {
            padded = Some(encoded.replace('+', "-").replace('/', "_"));
            break;
        }
    }
    let padded = padded.unwrap();
    assert_eq!(reason(&hs.sign(&padded, &payload), &set), Reason::Malformed);
    assert_eq!(reason(&format!("{good}="), &set), Reason::Malformed);
    assert_eq!(
        reason(&format!("{header}.{payload}=.{signature}"), &set),
        Reason::Malformed
    );

    // Whitespace anywhere.
    let (left, right) = header.split_at(10);
    for space in [" ", "\t", "\n", "\r\n"] {
        let spaced = format!("{left}{space}{right}");
        assert_eq!(
            reason(&hs.sign(&spaced, &payload), &set),
            Reason::Malformed,
            "{space:?}"
        );
        assert_eq!(
            reason(&format!("{good}{space}"), &set),
            Reason::Malformed,
            "{space:?}"
        );
        assert_eq!(
            reason(&format!("{space}{good}"), &set),
            Reason::Malformed,
            "{space:?}"
        );
    }

    // Not exactly three non-empty segments.
    for token in [
        format!("{good}.e30"),
        format!("{good}."),
        format!("{header}.{payload}"),
        format!(".{payload}.{signature}"),
        format!("{header}..{signature}"),
        format!("{header}.{payload}."),
        String::new(),
        "..".into(),
        "...".into(),
        header.to_owned(),
    ] {
        assert_eq!(reason(&token, &set), Reason::Malformed, "{token:?}");
    }

    // Non-zero unused bits in the last character: not canonical.
    let mut noncanonical = None;
    for pad in 0..4 {
        let h = encode(&json!({"alg": "HS256", "kid": "hs-1", "x": "a".repeat(pad)}));
        if h.len() % 4 == 2 {
            let last = h.chars().last().unwrap();
            let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let index = alphabet.find(last).unwrap();
            let changed = alphabet.chars().nth(index | 1).unwrap();
            noncanonical = Some(format!("{}{changed}", &h[..h.len() - 1]));
            break;
        }
    }
    let noncanonical = noncanonical.unwrap();
    assert_eq!(
        reason(&hs.sign(&noncanonical, &payload), &set),
        Reason::Malformed
    );

    // A header or payload that is not a JSON object.
    for not_an_object in ["[]", "null", "\"HS256\"", "{", "{\"alg\":\"HS256\"} x"] {
        let h = URL_SAFE_NO_PAD.encode(not_an_object);
        assert_eq!(
            reason(&hs.sign(&h, &payload), &set),
            Reason::Malformed,
            "{not_an_object}"
        );
        let p = URL_SAFE_NO_PAD.encode(not_an_object);
        assert_eq!(
            reason(&hs.sign(&encode(&hs.header()), &p), &set),
            Reason::Malformed,
            "{not_an_object}"
        );
    }
    // Bytes that are not UTF-8 in the header.
    let binary = URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'{', b'}']);
    assert_eq!(reason(&hs.sign(&binary, &payload), &set), Reason::Malformed);
}
