//! [`decrypt`]: a compact JWE and the gateway's decryption keys in, the
//! plaintext (and which key opened it) or one [`DecryptError`] out. A pure
//! function, no I/O.
//!
//! The top of `jwe/` with `encrypt.rs`: it uses `header.rs` (syntax and
//! allow-list), `decryption_key.rs`, `primitives.rs` (the CEK) and `content.rs` (the
//! AAD-bound decryption). The key is chosen by `kid` when the header has
//! one (its `alg` must be the header's), else every key of the header's
//! `alg` is tried in turn. Every check that needs no secret (lengths of the
//! encrypted key, IV and tag; the `epk`'s curve) runs before any key is
//! used. A failed key unwrap does not end the decryption: it goes on with a
//! random CEK (RFC 7516 §11.5), so a wrong key, a tampered encrypted key, a
//! tampered ciphertext and a tampered tag all do the same work and end in
//! the same [`DecryptFailure::DecryptionFailed`].

use super::alg::{Enc, KeyAlg};
use super::content;
use super::decryption_key::{DecryptionKey, Private};
use super::error::{DecryptError, DecryptFailure};
use super::header::{self, Compact, Header};
use super::primitives::{self, KdfInput, OaepHash};

/// A decrypted JWE. Its `Debug` shows the plaintext's length, not the
/// plaintext (for a nested JWT, a bearer token).
pub struct Decrypted<'k> {
    /// The plaintext: for a nested JWT (`cty: "JWT"`), the compact JWS.
    pub plaintext: Vec<u8>,
    /// The header's `cty`.
    pub cty: Option<String>,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The header's `enc`.
    pub enc: Enc,
    /// The key that decrypted it.
    pub key: &'k DecryptionKey,
}

impl std::fmt::Debug for Decrypted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("plaintext_len", &self.plaintext.len())
            .field("cty", &self.cty)
            .field("kid", &self.kid)
            .field("enc", &self.enc)
            .field("key", &self.key.kid())
            .finish()
    }
}

/// Whether `token` has the shape of a compact JWE (five segments) rather
/// than of a JWS (three): which of [`decrypt`] and the JWS verifier to call.
pub fn is_compact_jwe(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 4
}

/// Decrypts a compact JWE with one of `keys` (SPEC §12).
pub fn decrypt<'k, I>(token: &str, keys: I) -> Result<Decrypted<'k>, DecryptError>
where
    I: IntoIterator<Item = &'k DecryptionKey>,
{
    let compact = header::split(token)?;
    let header = header::read_header(&compact.header)?;
    let candidates: Vec<&'k DecryptionKey> = match &header.kid {
        Some(kid) => {
            let key = keys
                .into_iter()
                .find(|key| key.kid() == kid)
                .ok_or(DecryptFailure::UnknownKid)?;
            if key.alg() != header.alg {
                return Err(DecryptFailure::AlgMismatch.into());
            }
            vec![key]
        }
        None => keys
            .into_iter()
            .filter(|key| key.alg() == header.alg)
            .collect(),
    };
    if candidates.is_empty() {
        return Err(DecryptFailure::NoKeyForAlg.into());
    }
    // One failure for all the keys tried: the reason they share, else the
    // one that says nothing about which step failed.
    let mut failure: Option<DecryptFailure> = None;
    for key in candidates {
        match decrypt_with(key, &compact, &header) {
            Ok(plaintext) => {
                return Ok(Decrypted {
                    plaintext,
                    cty: header.cty,
                    kid: header.kid,
                    enc: header.enc,
                    key,
                });
            }
            Err(reason) => {
                failure = match failure {
                    Some(seen) if seen != reason => Some(DecryptFailure::DecryptionFailed),
                    _ => Some(reason),
                };
            }
        }
    }
    Err(failure.unwrap_or(DecryptFailure::DecryptionFailed).into())
}

/// The checks that need no secret: what the key takes, and the lengths the
/// `alg` and `enc` fix.
fn check_shape(key: &DecryptionKey, compact: &Compact<'_>, enc: Enc) -> Result<(), DecryptFailure> {
    if !key.accepts_enc(enc) {
        return Err(DecryptFailure::EncNotForKey);
    }
    let encrypted_key = compact.encrypted_key.len();
    let alg = key.alg();
    if !alg.has_encrypted_key() {
        if encrypted_key != 0 {
            return Err(DecryptFailure::UnexpectedEncryptedKey);
        }
    } else {
        let expected = match &key.private {
            Private::Rsa(rsa) => rsa.key_size_bytes(),
            Private::Ecdh { .. } | Private::Secret(_) => enc.key_len() + 8,
        };
        if encrypted_key != expected {
            return Err(DecryptFailure::EncryptedKeyLength);
        }
    }
    if compact.iv.len() != enc.iv_len() {
        return Err(DecryptFailure::IvLength);
    }
    if compact.tag.len() != enc.tag_len() {
        return Err(DecryptFailure::TagLength);
    }
    Ok(())
}

/// The CEK, as `key` and the header determine it. A failed unwrap yields
/// a random CEK, not an error.
fn content_key(
    key: &DecryptionKey,
    compact: &Compact<'_>,
    header: &Header,
) -> Result<zeroize::Zeroizing<Vec<u8>>, DecryptFailure> {
    let enc = header.enc;
    let alg = key.alg();
    match (&key.private, alg) {
        (Private::Rsa(rsa), KeyAlg::RsaOaep256) => primitives::rsa_oaep_unwrap(
            rsa,
            OaepHash::Sha256,
            &compact.encrypted_key,
            enc.key_len(),
        ),
        (Private::Ecdh { key, curve, .. }, _) => {
            let epk = header::epk_point(header.epk.as_ref(), *curve)?;
            let (algorithm_id, key_len) = match alg.wrap_key_len() {
                Some(wrap_len) => (alg.name(), wrap_len),
                None => (enc.name(), enc.key_len()),
            };
            let kdf = KdfInput {
                algorithm_id,
                apu: &header.apu,
                apv: &header.apv,
                key_len,
            };
            let derived = primitives::ecdh_derive(key, *curve, &epk, kdf)?;
            if alg.wrap_key_len().is_some() {
                primitives::aes_kw_unwrap(&derived, &compact.encrypted_key, enc.key_len())
            } else {
                Ok(derived)
            }
        }
        (Private::Secret(secret), KeyAlg::A256Kw) => {
            primitives::aes_kw_unwrap(secret, &compact.encrypted_key, enc.key_len())
        }
        (Private::Secret(secret), KeyAlg::Dir) => Ok(secret.clone()),
        // A key is built with an algorithm that fits it (see `decryption_key.rs`).
        _ => Err(DecryptFailure::DecryptionFailed),
    }
}

fn decrypt_with(
    key: &DecryptionKey,
    compact: &Compact<'_>,
    header: &Header,
) -> Result<Vec<u8>, DecryptFailure> {
    check_shape(key, compact, header.enc)?;
    let cek = content_key(key, compact, header)?;
    content::open(
        header.enc,
        &cek,
        &compact.iv,
        compact.protected.as_bytes(),
        &compact.ciphertext,
        &compact.tag,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwe::JweKeyError;
    use serde_json::Value;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/jose/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture is readable");
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
        path.iter()
            .fold(value, |v, name| &v[name])
            .as_str()
            .expect("a string member")
    }

    /// RSA-OAEP (SHA-1) is not a configurable `alg`; its vectors are checked
    /// with the primitives, through the same split and AAD as `decrypt`.
    fn open_rsa_oaep_sha1(token: &str, jwk: &Value) -> (Vec<u8>, Option<String>) {
        // The JWK says `"alg": "RSA-OAEP"`, which no DecryptionKey takes.
        let mut jwk = jwk.clone();
        if let Some(members) = jwk.as_object_mut() {
            members.remove("alg");
        }
        let key =
            DecryptionKey::from_private_jwk("k", KeyAlg::RsaOaep256, &jwk).expect("an RSA key");
        let Private::Rsa(rsa) = &key.private else {
            panic!("an RSA key");
        };
        let compact = header::split(token).expect("compact");
        assert_eq!(compact.header["alg"], "RSA-OAEP");
        assert_eq!(
            header::read_header(&compact.header).err(),
            Some(DecryptFailure::AlgNotAllowed),
            "RSA-OAEP is refused by the allow-list"
        );
        let enc = Enc::parse(compact.header["enc"].as_str().expect("enc")).expect("an enc");
        let cek =
            primitives::rsa_oaep_unwrap(rsa, OaepHash::Sha1, &compact.encrypted_key, enc.key_len())
                .expect("random source");
        let plaintext = content::open(
            enc,
            &cek,
            &compact.iv,
            compact.protected.as_bytes(),
            &compact.ciphertext,
            &compact.tag,
        )
        .expect("the vector decrypts");
        let cty = compact
            .header
            .get("cty")
            .and_then(Value::as_str)
            .map(str::to_owned);
        (plaintext, cty)
    }

    #[test]
    fn rfc_7520_5_2_rsa_oaep_a256gcm_decrypts_with_the_primitives() {
        let vector = fixture("rfc7520/5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json");
        let token = text(&vector, &["output", "compact"]);
        let (plaintext, _) = open_rsa_oaep_sha1(token, &vector["input"]["key"]);
        assert_eq!(plaintext, text(&vector, &["input", "plaintext"]).as_bytes());
        // A JWK of alg RSA-OAEP is no DecryptionKey; and `decrypt` refuses
        // the token even when the key is configured as RSA-OAEP-256.
        let jwk = &vector["input"]["key"];
        let refused = DecryptionKey::from_private_jwk("k", KeyAlg::RsaOaep256, jwk).err();
        assert_eq!(refused, Some(JweKeyError::JwkNotFor("RSA-OAEP-256")));
        let mut jwk = jwk.clone();
        jwk.as_object_mut().expect("an object").remove("alg");
        let key = DecryptionKey::from_private_jwk(
            "samwise.gamgee@hobbiton.example",
            KeyAlg::RsaOaep256,
            &jwk,
        )
        .expect("an RSA key");
        let refused = decrypt(token, [&key]).err().map(|e| e.reason());
        assert_eq!(refused, Some(DecryptFailure::AlgNotAllowed));
    }

    #[test]
    fn rfc_7520_6_nested_jwt_decrypts_to_the_jws_which_verifies() {
        let vector = fixture("rfc7520/6.nesting_signatures_and_encryption.json");
        let token = text(&vector, &["encrypt", "output", "compact"]);
        let (plaintext, cty) = open_rsa_oaep_sha1(token, &vector["encrypt"]["input"]["key"]);
        assert_eq!(cty.as_deref(), Some("JWT"));
        let jws = String::from_utf8(plaintext).expect("a JWS is ASCII");
        assert_eq!(jws, text(&vector, &["sign", "output", "compact"]));
        let signer = &vector["sign"]["input"]["key"];
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
            text(signer, &["n"]),
            text(signer, &["e"]),
        )
        .expect("an RSA public key");
        crate::crypto::install_providers();
        let parsed = crate::auth::jwt::parse(&jws).expect("a compact JWS");
        crate::auth::jwt::verify_signature(&parsed, &decoding, jsonwebtoken::Algorithm::PS256)
            .expect("the nested signature verifies");
    }

    #[test]
    fn rfc_7520_5_8_a128kw_decrypts_with_the_primitives_but_is_refused() {
        let vector = fixture("rfc7520/5_8.key_wrap_using_aes-keywrap_with_aes-gcm.json");
        let token = text(&vector, &["output", "compact"]);
        let compact = header::split(token).expect("compact");
        assert_eq!(compact.header["alg"], "A128KW");
        let kek =
            crate::auth::jwe::base64url::decode(text(&vector, &["input", "key", "k"])).expect("k");
        let cek = primitives::aes_kw_unwrap(&kek, &compact.encrypted_key, 16).expect("random");
        let plaintext = content::open(
            Enc::A128Gcm,
            &cek,
            &compact.iv,
            compact.protected.as_bytes(),
            &compact.ciphertext,
            &compact.tag,
        )
        .expect("decrypts");
        assert_eq!(plaintext, text(&vector, &["input", "plaintext"]).as_bytes());
        assert_eq!(
            header::read_header(&compact.header).err(),
            Some(DecryptFailure::AlgNotAllowed)
        );
    }

    #[test]
    fn is_compact_jwe_counts_segments() {
        assert!(is_compact_jwe("a.b.c.d.e"));
        assert!(is_compact_jwe("a..c.d.e"));
        assert!(!is_compact_jwe("a.b.c"));
        assert!(!is_compact_jwe("a.b.c.d.e.f"));
    }
}
