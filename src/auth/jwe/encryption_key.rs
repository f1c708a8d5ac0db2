//! [`EncryptionKey`]: whom a JWE is encrypted to. A public key (an
//! upstream's, for the tokens an `upstream_token` with `encrypt_to` sends),
//! from SPKI DER or PEM or a JWK; or a shared secret (`A256KW`, `dir`).
//!
//! Above `key_material.rs`; `decryption_key.rs` (a key's public half) and
//! `encrypt.rs` use it. RSA keys need 2048 bits and no ROCA fingerprint; EC
//! points must be on their curve. Its `Debug` shows the kid and algorithm
//! only.

use std::fmt;

use aws_lc_rs::agreement::{self, ParsedPublicKey, UnparsedPublicKey};
use aws_lc_rs::rsa::{PublicEncryptingKey, PublicKeyComponents};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use zeroize::Zeroizing;

use super::alg::{Curve, KeyAlg};
use super::error::JweKeyError;
use super::key_material::{
    JwkMembers, check_roca, check_secret, needs_key_file, rejected, wrong_type,
};

/// The recipient half of an [`EncryptionKey`].
#[derive(Clone)]
pub(super) enum Recipient {
    /// For `RSA-OAEP-256`.
    Rsa(PublicEncryptingKey),
    /// For `ECDH-ES*`.
    Ecdh { key: ParsedPublicKey, curve: Curve },
    /// For `A256KW` and `dir`.
    Secret(Zeroizing<Vec<u8>>),
}

/// Whom a JWE is encrypted to: a public key (an upstream's, for minted
/// tokens), or a shared secret. Its `Debug` shows the kid and algorithm only.
#[derive(Clone)]
pub struct EncryptionKey {
    kid: String,
    alg: KeyAlg,
    pub(super) recipient: Recipient,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    pub(super) fn new(kid: String, alg: KeyAlg, recipient: Recipient) -> Result<Self, JweKeyError> {
        match (&recipient, alg) {
            (Recipient::Rsa(key), KeyAlg::RsaOaep256) => check_roca(key)?,
            (Recipient::Ecdh { .. }, alg) if alg.is_ecdh() => {}
            (Recipient::Secret(secret), alg) => check_secret(alg, secret)?,
            (Recipient::Rsa(_), alg) => return Err(wrong_type(alg, "RSA")),
            (Recipient::Ecdh { curve, .. }, alg) => return Err(wrong_type(alg, curve.name())),
        }
        Ok(Self {
            kid,
            alg,
            recipient,
        })
    }

    /// A public key from SPKI DER (RSA, P-256, P-384 or X25519).
    pub fn from_public_der(
        kid: impl Into<String>,
        alg: KeyAlg,
        spki: &[u8],
    ) -> Result<Self, JweKeyError> {
        needs_key_file(alg)?;
        if let Ok(key) = PublicEncryptingKey::from_der(spki) {
            return Self::new(kid.into(), alg, Recipient::Rsa(key));
        }
        for curve in [Curve::P256, Curve::P384, Curve::X25519] {
            if let Ok(key) =
                ParsedPublicKey::try_from(UnparsedPublicKey::new(curve.agreement(), spki))
                && key.format() == agreement::ParsedPublicKeyFormat::X509
            {
                return Self::new(kid.into(), alg, Recipient::Ecdh { key, curve });
            }
        }
        Err(JweKeyError::NotPem {
            expected: "RSA (2048 bits or more), P-256, P-384 or X25519 public key",
        })
    }

    /// A public key from PEM (`BEGIN PUBLIC KEY`, SPKI).
    pub fn from_public_pem(
        kid: impl Into<String>,
        alg: KeyAlg,
        pem: &[u8],
    ) -> Result<Self, JweKeyError> {
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| JweKeyError::NotPem {
                expected: "public key (\"BEGIN PUBLIC KEY\")",
            })?;
        Self::from_public_der(kid, alg, der.as_ref())
    }

    /// A public key from a JWK (`RSA` with `n`, `e`; `EC` with `crv`, `x`,
    /// `y`; `OKP` X25519 with `x`). A `use` other than `enc`, an `alg` other
    /// than `alg`, or private members are refused.
    pub fn from_public_jwk(
        kid: impl Into<String>,
        alg: KeyAlg,
        jwk: &Value,
    ) -> Result<Self, JweKeyError> {
        let jwk = JwkMembers::new(jwk, alg)?;
        if ["d", "p", "q", "k"]
            .iter()
            .any(|name| jwk.members.contains_key(*name))
        {
            return Err(JweKeyError::BadJwk(
                "a public key must not hold private members",
            ));
        }
        let recipient = match jwk.kty()? {
            "RSA" => {
                let components = PublicKeyComponents {
                    n: jwk.unsigned("n")?,
                    e: jwk.unsigned("e")?,
                };
                let key: PublicEncryptingKey =
                    components.try_into().map_err(|_| JweKeyError::Rejected {
                        kind: "RSA",
                        reason: "not a key of 2048 to 8192 bits".into(),
                    })?;
                Recipient::Rsa(key)
            }
            "EC" | "OKP" => {
                let curve = jwk.curve()?;
                let point = jwk.point(curve)?;
                let key =
                    ParsedPublicKey::try_from(UnparsedPublicKey::new(curve.agreement(), &point))
                        .map_err(rejected(curve.name()))?;
                Recipient::Ecdh { key, curve }
            }
            _ => return Err(JweKeyError::BadJwk("kty is not RSA, EC or OKP")),
        };
        Self::new(kid.into(), alg, recipient)
    }

    /// A public key from a file's bytes: a JWK when the text starts with
    /// `{`, else PEM.
    pub fn from_public_bytes(
        kid: impl Into<String>,
        alg: KeyAlg,
        bytes: &[u8],
    ) -> Result<Self, JweKeyError> {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"{") {
            let jwk: Value =
                serde_json::from_slice(trimmed).map_err(|_| JweKeyError::BadJwk("not JSON"))?;
            return Self::from_public_jwk(kid, alg, &jwk);
        }
        Self::from_public_pem(kid, alg, bytes)
    }

    /// A shared secret (`A256KW`, `dir`), as [`super::DecryptionKey::from_secret`].
    pub fn from_secret(
        kid: impl Into<String>,
        alg: KeyAlg,
        secret: &[u8],
    ) -> Result<Self, JweKeyError> {
        check_secret(alg, secret)?;
        Self::new(
            kid.into(),
            alg,
            Recipient::Secret(Zeroizing::new(secret.to_vec())),
        )
    }

    /// The key id the header names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key-management algorithm.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }
}
