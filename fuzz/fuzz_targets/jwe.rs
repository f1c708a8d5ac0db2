//! `jwe::decrypt` on the input as a token, with one key of each family:
//! it never panics, and whatever it refuses, it refuses with the one text.
//! Inputs that start from a real token (the seed) reach the header checks,
//! the key unwrapping and the content decryption.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warden::auth::jwe::{self, Curve, DecryptionKey, Enc, KeyAlg};

fn keys() -> &'static Vec<DecryptionKey> {
    static KEYS: OnceLock<Vec<DecryptionKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        warden::crypto::install_providers();
        let private = |alg: KeyAlg, curve: Curve| {
            let der = jwe::generate_pkcs8(alg, curve).expect("a key");
            DecryptionKey::from_pkcs8_der(alg.name(), alg, &der).expect("a decryption key")
        };
        let secret = |alg: KeyAlg| {
            let bytes = jwe::generate_secret(alg, Enc::A256Gcm).expect("a secret");
            DecryptionKey::from_secret(alg.name(), alg, &bytes).expect("a secret key")
        };
        vec![
            private(KeyAlg::RsaOaep256, Curve::P256),
            private(KeyAlg::EcdhEsA256Kw, Curve::P256),
            private(KeyAlg::EcdhEs, Curve::X25519),
            secret(KeyAlg::A256Kw),
            secret(KeyAlg::Dir),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = jwe::decrypt(token, keys().iter()) {
        assert_eq!(err.to_string(), jwe::DECRYPT_ERROR_DESCRIPTION);
    }
});
