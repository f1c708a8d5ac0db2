//! Criterion benchmarks of encrypted tokens (SPEC §12): decrypting a nested
//! JWT and verifying the ES256 JWS inside it, per key-management family,
//! against verifying the same JWS alone; and a decryption failure against
//! a success (the same work, so timing tells nothing).
//!
//! Run with `cargo bench --bench jwe`. Figures are only comparable within
//! one run on one machine.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use warden::auth::issue::{Grant, IssuerSettings, TokenIssuer};
use warden::auth::jwe::{self, Curve, DecryptionKey, Enc, KeyAlg};
use warden::auth::jwt::{self, IssuerPolicy, KeySet, VerifyingKey};
use warden::auth::keys::{self, KeySettings, KeySource};
use warden::clock::unix_now;

const ISS: &str = "https://issuer.bench.local";
const AUD: &str = "bench-api";

/// An ES256 key set and a token it verifies.
fn signed() -> (KeySet, String) {
    let loaded = Arc::new(
        keys::load(&KeySettings {
            kid: "bench-es256".into(),
            alg: Algorithm::ES256,
            source: KeySource::Generate,
        })
        .expect("a generated key"),
    );
    let settings = IssuerSettings {
        iss: ISS.into(),
        audiences: vec![AUD.into()],
        signing_kid: Some("bench-es256".into()),
        ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(3600),
    };
    let issuer = TokenIssuer::new(&settings, &loaded).expect("a signing key");
    let scopes = vec!["orders:read".to_owned()];
    let token = issuer
        .issue(&Grant {
            sub: "bench-client",
            scopes: &scopes,
            ..Default::default()
        })
        .expect("a token")
        .token;
    let set = KeySet::new(vec![VerifyingKey {
        kid: Some("bench-es256".into()),
        alg: Algorithm::ES256,
        key: loaded.decoding.clone(),
        issuer: Arc::new(IssuerPolicy {
            iss: ISS.into(),
            audiences: vec![AUD.into()],
            accept_high_s: false,
        }),
    }]);
    (set, token)
}

/// A decryption key of each family, with the `enc` its tokens use.
fn families() -> Vec<(&'static str, DecryptionKey, Enc)> {
    let private = |alg: KeyAlg, curve: Curve| {
        let der = jwe::generate_pkcs8(alg, curve).expect("a key");
        DecryptionKey::from_pkcs8_der(format!("{}-{}", alg.name(), curve.name()), alg, &der)
            .expect("a decryption key")
    };
    let secret = |alg: KeyAlg, enc: Enc| {
        let bytes = jwe::generate_secret(alg, enc).expect("a secret");
        DecryptionKey::from_secret(alg.name(), alg, &bytes).expect("a secret key")
    };
    vec![
        (
            "RSA-OAEP-256+A256GCM",
            private(KeyAlg::RsaOaep256, Curve::P256),
            Enc::A256Gcm,
        ),
        (
            "ECDH-ES+A256KW(P-256)+A256GCM",
            private(KeyAlg::EcdhEsA256Kw, Curve::P256),
            Enc::A256Gcm,
        ),
        (
            "ECDH-ES(X25519)+A256GCM",
            private(KeyAlg::EcdhEs, Curve::X25519),
            Enc::A256Gcm,
        ),
        (
            "A256KW+A128CBC-HS256",
            secret(KeyAlg::A256Kw, Enc::A128CbcHs256),
            Enc::A128CbcHs256,
        ),
        (
            "dir+A256GCM",
            secret(KeyAlg::Dir, Enc::A256Gcm),
            Enc::A256Gcm,
        ),
    ]
}

fn decrypt_and_verify(c: &mut Criterion) {
    warden::crypto::install_providers();
    let (set, jws) = signed();
    let now = unix_now();
    let mut group = c.benchmark_group("jwe");
    group.bench_function("verify only (ES256)", |b| {
        b.iter(|| jwt::verify(black_box(&jws), &[&set], now, 30).expect("valid"));
    });
    for (name, key, enc) in families() {
        let public = key.encryption_key().expect("its public half");
        let token = jwe::encrypt_with(&public, enc, Some("JWT"), jws.as_bytes()).expect("a JWE");
        group.bench_with_input(
            BenchmarkId::new("decrypt + verify", name),
            &token,
            |b, token| {
                b.iter(|| {
                    let decrypted = jwe::decrypt(black_box(token), [&key]).expect("decrypts");
                    let inner = std::str::from_utf8(&decrypted.plaintext).expect("text");
                    jwt::verify(inner, &[&set], now, 30).expect("valid")
                });
            },
        );
        // A tag that does not verify: the same work up to the last check.
        // (A character in the middle: the last one also holds padding
        // bits, which the strict decoder refuses before any key is used.)
        let tampered = {
            let (rest, tag) = token.rsplit_once('.').expect("five segments");
            let mut tag = tag.to_owned();
            let middle = tag.len() / 2;
            let swapped = if &tag[middle..=middle] == "A" {
                "B"
            } else {
                "A"
            };
            tag.replace_range(middle..=middle, swapped);
            format!("{rest}.{tag}")
        };
        group.bench_with_input(
            BenchmarkId::new("refused (bad tag)", name),
            &tampered,
            |b, token| {
                b.iter(|| jwe::decrypt(black_box(token), [&key]).expect_err("refused"));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, decrypt_and_verify);
criterion_main!(benches);
