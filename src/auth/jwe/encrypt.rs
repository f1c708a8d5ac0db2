//! [`encrypt`]: a compact JWE to an [`EncryptionKey`], for the tokens
//! warden mints for upstreams (SPEC §12, `encrypt_to`) and for tests.
//!
//! The top of `jwe/` with `decrypt.rs`: it uses `encryption_key.rs`, `primitives.rs`
//! and `content.rs`. The CEK, the IV and ECDH's ephemeral key are fresh
//! from aws-lc-rs's random source for every token. The header names the
//! key's `alg`, the `enc`, the key's `kid`, the `cty` (`JWT` for a nested
//! token) and, for ECDH, the `epk`; its encoded segment is the AAD.

use serde_json::{Map, Value};

use super::alg::{Curve, Enc, KeyAlg};
use super::base64url;
use super::content;
use super::encryption_key::{EncryptionKey, Recipient};
use super::error::EncryptError;
use super::primitives::{self, KdfInput, OaepHash};

/// A nested JWT to `key`: `A256GCM`, `cty: "JWT"`, the key's `kid`.
/// `plaintext` is the compact JWS.
pub fn encrypt(key: &EncryptionKey, plaintext: &[u8]) -> Result<String, EncryptError> {
    encrypt_with(key, Enc::A256Gcm, Some("JWT"), plaintext)
}

/// A compact JWE to `key` with the given `enc` and `cty`.
pub fn encrypt_with(
    key: &EncryptionKey,
    enc: Enc,
    cty: Option<&str>,
    plaintext: &[u8],
) -> Result<String, EncryptError> {
    let alg = key.alg();
    let mut header = Map::new();
    header.insert("alg".into(), alg.name().into());
    header.insert("enc".into(), enc.name().into());
    header.insert("kid".into(), key.kid().into());
    if let Some(cty) = cty {
        header.insert("cty".into(), cty.into());
    }
    let random_cek = || primitives::random_bytes(enc.key_len()).ok_or(EncryptError::Failed);
    let (cek, encrypted_key) = match (&key.recipient, alg) {
        (Recipient::Rsa(public), KeyAlg::RsaOaep256) => {
            let cek = random_cek()?;
            let wrapped = primitives::rsa_oaep_wrap(public, OaepHash::Sha256, &cek)?;
            (cek, wrapped)
        }
        (Recipient::Ecdh { key, curve }, _) => {
            let (algorithm_id, key_len) = match alg.wrap_key_len() {
                Some(wrap_len) => (alg.name(), wrap_len),
                None => (enc.name(), enc.key_len()),
            };
            let kdf = KdfInput {
                algorithm_id,
                apu: &[],
                apv: &[],
                key_len,
            };
            let (derived, epk) = primitives::ecdh_ephemeral(*curve, key, kdf)?;
            header.insert("epk".into(), epk_jwk(*curve, &epk)?);
            if alg.wrap_key_len().is_some() {
                let cek = random_cek()?;
                let wrapped = primitives::aes_kw_wrap(&derived, &cek)?;
                (cek, wrapped)
            } else {
                (derived, Vec::new())
            }
        }
        (Recipient::Secret(secret), KeyAlg::A256Kw) => {
            let cek = random_cek()?;
            let wrapped = primitives::aes_kw_wrap(secret, &cek)?;
            (cek, wrapped)
        }
        (Recipient::Secret(secret), KeyAlg::Dir) => {
            if secret.len() != enc.key_len() {
                return Err(EncryptError::EncNotForKey);
            }
            (secret.clone(), Vec::new())
        }
        // An EncryptionKey is built with an algorithm that fits it (`encryption_key.rs`).
        _ => return Err(EncryptError::Failed),
    };
    let protected = base64url::encode(Value::Object(header).to_string().as_bytes());
    let sealed = content::seal(enc, &cek, protected.as_bytes(), plaintext)?;
    Ok([
        protected.as_str(),
        &base64url::encode(&encrypted_key),
        &base64url::encode(&sealed.iv),
        &base64url::encode(&sealed.ciphertext),
        &base64url::encode(&sealed.tag),
    ]
    .join("."))
}

/// The header's `epk`: the ephemeral public key as a JWK.
fn epk_jwk(curve: Curve, public: &[u8]) -> Result<Value, EncryptError> {
    let mut jwk = Map::new();
    jwk.insert("kty".into(), curve.kty().into());
    jwk.insert("crv".into(), curve.name().into());
    match curve {
        Curve::X25519 => {
            jwk.insert("x".into(), base64url::encode(public).into());
        }
        Curve::P256 | Curve::P384 => {
            let coordinates = public.get(1..).ok_or(EncryptError::Failed)?;
            if coordinates.len() != 2 * curve.coordinate_len() {
                return Err(EncryptError::Failed);
            }
            let (x, y) = coordinates.split_at(curve.coordinate_len());
            jwk.insert("x".into(), base64url::encode(x).into());
            jwk.insert("y".into(), base64url::encode(y).into());
        }
    }
    Ok(Value::Object(jwk))
}
