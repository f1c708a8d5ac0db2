//! New JWE keys, for `warden keygen --alg RSA-OAEP-256 | ECDH-ES | ... | dir`
//! and for `generate = true`: PKCS#8 DER for key pairs (as `auth/keys.rs`
//! makes signing keys; `keys::pkcs8_pem` wraps it as PEM), random bytes for
//! shared secrets.
//!
//! Above `key_material.rs` (for the X25519 PKCS#8 layout, which aws-lc-rs
//! does not write). RSA keys are 2048 bits, as the gateway's signing keys are.

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use zeroize::Zeroizing;

use super::alg::{Curve, Enc, KeyAlg};
use super::error::JweKeyError;
use super::key_material::{x25519_pkcs8, x25519_seed_of};
use super::primitives::random_bytes;

/// A fresh private key for `alg` as PKCS#8 DER: RSA 2048 for
/// `RSA-OAEP-256` (`curve` is not used), a key on `curve` for `ECDH-ES*`.
/// Shared-secret algorithms take [`generate_secret`] instead.
pub fn generate_pkcs8(alg: KeyAlg, curve: Curve) -> Result<Zeroizing<Vec<u8>>, JweKeyError> {
    let failed = |_| JweKeyError::Random;
    match alg {
        KeyAlg::RsaOaep256 => {
            let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(failed)?;
            let der: Pkcs8V1Der<'_> = key.as_der().map_err(failed)?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        KeyAlg::EcdhEs | KeyAlg::EcdhEsA128Kw | KeyAlg::EcdhEsA256Kw => {
            let key = agreement::PrivateKey::generate(curve.agreement()).map_err(failed)?;
            if curve == Curve::X25519 {
                let seed = x25519_seed_of(&key).ok_or(JweKeyError::Random)?;
                return Ok(x25519_pkcs8(&seed));
            }
            let der: Pkcs8V1Der<'_> = key.as_der().map_err(failed)?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        KeyAlg::A256Kw | KeyAlg::Dir => Err(JweKeyError::WrongMaterial {
            alg: alg.name(),
            needs: "a secret (`generate_secret`), not a key pair",
        }),
    }
}

/// A fresh shared secret: 32 bytes for `A256KW` (`enc` is not used), the
/// CEK length of `enc` for `dir`.
pub fn generate_secret(alg: KeyAlg, enc: Enc) -> Result<Zeroizing<Vec<u8>>, JweKeyError> {
    let len = match alg {
        KeyAlg::A256Kw => 32,
        KeyAlg::Dir => enc.key_len(),
        KeyAlg::RsaOaep256 | KeyAlg::EcdhEs | KeyAlg::EcdhEsA128Kw | KeyAlg::EcdhEsA256Kw => {
            return Err(JweKeyError::WrongMaterial {
                alg: alg.name(),
                needs: "a key pair (`generate_pkcs8`), not a secret",
            });
        }
    };
    random_bytes(len).ok_or(JweKeyError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwe::{DecryptionKey, KEY_ALGS};

    #[test]
    fn every_algorithm_has_a_generator_and_only_one() {
        for alg in KEY_ALGS {
            let pair = generate_pkcs8(alg, Curve::X25519);
            let secret = generate_secret(alg, Enc::A128Gcm);
            assert_ne!(pair.is_ok(), secret.is_ok(), "{alg}");
            let key = match (pair, secret) {
                (Ok(der), _) => DecryptionKey::from_pkcs8_der("k", alg, &der),
                (_, Ok(secret)) => DecryptionKey::from_secret("k", alg, &secret),
                _ => continue,
            };
            assert_eq!(key.expect("the new key loads").alg(), alg);
        }
        let x25519 = generate_pkcs8(KeyAlg::EcdhEs, Curve::X25519).expect("generates");
        assert_eq!(x25519.len(), 48, "PKCS#8 v1 (RFC 8410)");
        let two = generate_secret(KeyAlg::A256Kw, Enc::A128Gcm).expect("random");
        assert_eq!(two.len(), 32);
        assert_ne!(
            *two,
            *generate_secret(KeyAlg::A256Kw, Enc::A128Gcm).expect("random")
        );
    }
}
