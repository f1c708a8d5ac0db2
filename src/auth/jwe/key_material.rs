//! Reading key material for `jwe/`'s keys: the checks an algorithm makes
//! of a key (its type, a secret's length, RSA's ROCA fingerprint), the
//! RFC 8410 PKCS#8 layout of X25519 keys, and a JWK's members.
//!
//! Above `alg.rs`, `base64url.rs` and `error.rs`; `encryption_key.rs`,
//! `decryption_key.rs` and `keygen.rs` use it. Nothing here keeps a key:
//! secrets pass through as `Zeroizing` buffers.

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsBigEndian, AsDer, Curve25519SeedBin};
use aws_lc_rs::rsa::{self, PublicEncryptingKey};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::alg::{Curve, ENCS, Enc, KeyAlg};
use super::base64url;
use super::error::JweKeyError;

pub(super) fn rejected(
    kind: &'static str,
) -> impl FnOnce(aws_lc_rs::error::KeyRejected) -> JweKeyError {
    move |err| JweKeyError::Rejected {
        kind,
        reason: err.to_string(),
    }
}

pub(super) fn wrong_type(alg: KeyAlg, found: &'static str) -> JweKeyError {
    JweKeyError::WrongKeyType {
        alg: alg.name(),
        found,
    }
}

/// `A256KW` takes 32 bytes; `dir` the CEK length of some `enc`.
pub(super) fn check_secret(alg: KeyAlg, secret: &[u8]) -> Result<(), JweKeyError> {
    let fits = match alg {
        KeyAlg::A256Kw => secret.len() == 32,
        KeyAlg::Dir => ENCS.iter().any(|enc| enc.key_len() == secret.len()),
        _ => {
            return Err(JweKeyError::WrongMaterial {
                alg: alg.name(),
                needs: "a key file, not a secret",
            });
        }
    };
    if !fits {
        return Err(JweKeyError::SecretLength {
            alg: alg.name(),
            found: secret.len(),
            expected: if alg == KeyAlg::A256Kw {
                "32"
            } else {
                "16, 32 or 64"
            },
        });
    }
    Ok(())
}

pub(super) fn needs_key_file(alg: KeyAlg) -> Result<(), JweKeyError> {
    if alg.is_symmetric() {
        return Err(JweKeyError::WrongMaterial {
            alg: alg.name(),
            needs: "a secret (secret_env or secret_file), not a key file",
        });
    }
    Ok(())
}

/// The modulus and exponent of an RSA public key (big-endian, no leading zeros).
pub(super) fn rsa_components(key: &PublicEncryptingKey) -> Result<(Vec<u8>, Vec<u8>), JweKeyError> {
    let unusable = || JweKeyError::Rejected {
        kind: "RSA",
        reason: "cannot read its public key".into(),
    };
    let spki = key.as_der().map_err(|_| unusable())?;
    let public = rsa::PublicKey::from_der(spki.as_ref()).map_err(rejected("RSA"))?;
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    Ok((n, e))
}

pub(super) fn check_roca(key: &PublicEncryptingKey) -> Result<(), JweKeyError> {
    let (n, _) = rsa_components(key)?;
    if super::super::jwk::has_roca_fingerprint(&n) {
        return Err(JweKeyError::Roca);
    }
    Ok(())
}

/// The RFC 8410 PKCS#8 prefix of an X25519 private key (v1, no public key).
const X25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

/// The same, v2 (RFC 5958 `OneAsymmetricKey`), followed by the seed and the
/// public key as `[1] BIT STRING`.
const X25519_PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

/// The seed of an X25519 PKCS#8 key, and the public key a v2 document
/// states, if `der` is one (aws-lc-rs reads no X25519 PKCS#8, so its fixed
/// RFC 8410 layout is matched here).
pub(super) fn x25519_seed(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if der.len() == 48 && der.starts_with(&X25519_PKCS8_V1_PREFIX) {
        return Some((&der[16..], None));
    }
    if der.len() == 83
        && der.starts_with(&X25519_PKCS8_V2_PREFIX)
        && der[48..51] == [0x81, 0x21, 0x00]
    {
        return Some((&der[16..48], Some(&der[51..])));
    }
    None
}

/// An X25519 seed as PKCS#8 v1 DER (RFC 8410), as `warden keygen` writes it.
pub(super) fn x25519_pkcs8(seed: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut der = Zeroizing::new(Vec::with_capacity(48));
    der.extend_from_slice(&X25519_PKCS8_V1_PREFIX);
    der.extend_from_slice(seed);
    der
}

/// A JWK's members, checked for `use` and `alg`; and the `enc` a `dir`
/// key's `alg` names.
pub(super) struct JwkMembers<'a> {
    pub(super) members: &'a Map<String, Value>,
    pub(super) enc: Option<Enc>,
}

impl<'a> JwkMembers<'a> {
    pub(super) fn new(jwk: &'a Value, alg: KeyAlg) -> Result<Self, JweKeyError> {
        let members = jwk
            .as_object()
            .ok_or(JweKeyError::BadJwk("not a JSON object"))?;
        match members.get("use") {
            None => {}
            Some(Value::String(u)) if u == "enc" => {}
            Some(_) => return Err(JweKeyError::JwkNotFor("encryption (`use` is not \"enc\")")),
        }
        let enc = match members.get("alg") {
            None => None,
            Some(Value::String(a)) if a == alg.name() => None,
            Some(Value::String(a)) if alg == KeyAlg::Dir && Enc::parse(a).is_some() => {
                Enc::parse(a)
            }
            Some(_) => return Err(JweKeyError::JwkNotFor(alg.name())),
        };
        Ok(Self { members, enc })
    }

    pub(super) fn kty(&self) -> Result<&'a str, JweKeyError> {
        self.members
            .get("kty")
            .and_then(Value::as_str)
            .ok_or(JweKeyError::BadJwk("no kty"))
    }

    pub(super) fn bytes(&self, name: &'static str) -> Result<Vec<u8>, JweKeyError> {
        self.members
            .get(name)
            .and_then(Value::as_str)
            .and_then(base64url::decode)
            .ok_or(JweKeyError::BadJwk(name))
    }

    pub(super) fn secret(&self, name: &'static str) -> Result<Zeroizing<Vec<u8>>, JweKeyError> {
        self.bytes(name).map(Zeroizing::new)
    }

    /// A public integer (`n`, `e`), without leading zeros as aws-lc-rs wants it.
    pub(super) fn unsigned(&self, name: &'static str) -> Result<Vec<u8>, JweKeyError> {
        let bytes = self.bytes(name)?;
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Ok(bytes[start..].to_vec())
    }

    pub(super) fn curve(&self) -> Result<Curve, JweKeyError> {
        let curve = self
            .members
            .get("crv")
            .and_then(Value::as_str)
            .and_then(Curve::parse)
            .ok_or(JweKeyError::BadJwk("crv is not P-256, P-384 or X25519"))?;
        if self.kty()? != curve.kty() {
            return Err(JweKeyError::BadJwk("kty does not fit crv"));
        }
        Ok(curve)
    }

    /// The public point: `0x04 || x || y`, or `x` for X25519.
    pub(super) fn point(&self, curve: Curve) -> Result<Vec<u8>, JweKeyError> {
        let x = self.bytes("x")?;
        if x.len() != curve.coordinate_len() {
            return Err(JweKeyError::BadJwk("x is not of the curve's size"));
        }
        if curve == Curve::X25519 {
            return Ok(x);
        }
        let y = self.bytes("y")?;
        if y.len() != curve.coordinate_len() {
            return Err(JweKeyError::BadJwk("y is not of the curve's size"));
        }
        Ok([&[0x04][..], &x, &y].concat())
    }
}

/// The seed of an X25519 key, for `warden keygen`.
pub(super) fn x25519_seed_of(key: &agreement::PrivateKey) -> Option<Zeroizing<Vec<u8>>> {
    let seed: Curve25519SeedBin<'_> = key.as_be_bytes().ok()?;
    Some(Zeroizing::new(seed.as_ref().to_vec()))
}
