//! An `Authorization` header made from the input, read as a bearer token,
//! then parsed and verified against a fixed key set: the RFC 7515 A.1 HS256
//! key and the A.3 ES256 key, for issuer `joe` at a clock pinned before the
//! vectors' `exp`, so the seed tokens reach the claim checks.
#![no_main]

use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;
use warden::auth::jwt::{self, IssuerPolicy, KeySet, VerifyingKey};

const NOW: i64 = 1_300_819_300;
const LEEWAY: i64 = 30;

fn key(jwk: &str) -> DecodingKey {
    let jwk: Jwk = serde_json::from_str(jwk).expect("a JWK");
    DecodingKey::from_jwk(&jwk).expect("a usable JWK")
}

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        warden::crypto::install_providers();
        let issuer = Arc::new(IssuerPolicy {
            iss: "joe".into(),
            audiences: vec!["warden-fuzz".into()],
            accept_high_s: false,
        });
        KeySet::new(vec![
            VerifyingKey {
                kid: Some("hs-1".into()),
                alg: Algorithm::HS256,
                key: key(r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#),
                issuer: issuer.clone(),
            },
            VerifyingKey {
                kid: Some("es-1".into()),
                alg: Algorithm::ES256,
                key: key(r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#),
                issuer,
            },
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    let Ok(token) = warden::auth::bearer_token(&headers) else {
        return;
    };
    assert!(!token.is_empty() && !token.starts_with(' '));
    assert!(data.ends_with(token.as_bytes()));

    let parsed = jwt::parse(token);
    if let Ok(parsed) = &parsed {
        assert_eq!(
            format!("{}.{}", parsed.signing_input, parsed.signature),
            token
        );
        let _ = jwt::payload(parsed);
        let _ = jwt::verify_signature_in(parsed, keys);
    }
    if let Ok(principal) = jwt::verify(token, &[keys], NOW, LEEWAY) {
        assert!(parsed.is_ok(), "a token that does not parse verified");
        assert_eq!(principal.iss, "joe");
        assert!(NOW < principal.exp.saturating_add(LEEWAY));
    }
});
