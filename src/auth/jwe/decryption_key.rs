//! [`DecryptionKey`]: a `[[keys]]` entry with a key-management `alg` (SPEC
//! §12): its private key or shared secret.
//!
//! Above `key_material.rs` and `encryption_key.rs`; `decrypt.rs` and
//! `keygen.rs` use it. Key material is read once, here: PEM (PKCS#8;
//! PKCS#1 for RSA; SEC 1 for P-256/P-384), PKCS#8 DER, a private JWK, or
//! raw secret bytes. The algorithm is fixed when the key is built and must
//! fit the key: RSA for `RSA-OAEP-256`, P-256, P-384 or X25519 for
//! `ECDH-ES*`, 32 bytes for `A256KW`, the length of one `enc`'s CEK for
//! `dir`. RSA keys need 2048 bits and no ROCA fingerprint. Its `Debug`
//! shows the kid and algorithm only, and secrets are zeroized when dropped.

use std::fmt;

use aws_lc_rs::agreement::{self, ParsedPublicKey, UnparsedPublicKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{self, PrivateDecryptingKey, PublicKeyComponents};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::alg::{Curve, Enc, KeyAlg};
use super::base64url;
use super::encryption_key::{EncryptionKey, Recipient};
use super::error::JweKeyError;
use super::key_material::{
    JwkMembers, check_roca, check_secret, needs_key_file, rejected, rsa_components, wrong_type,
    x25519_seed,
};

/// The private half of a [`DecryptionKey`].
pub(super) enum Private {
    /// For `RSA-OAEP-256`.
    Rsa(PrivateDecryptingKey),
    /// For `ECDH-ES*`: the key, its curve, and its public key (an
    /// uncompressed point, or 32 bytes for X25519).
    Ecdh {
        key: agreement::PrivateKey,
        curve: Curve,
        public: Vec<u8>,
    },
    /// For `A256KW` and `dir`.
    Secret(Zeroizing<Vec<u8>>),
}

/// A key that decrypts JWEs: one `[[keys]]` entry. Not `Clone` (aws-lc-rs
/// keys are not); share it behind an `Arc`.
pub struct DecryptionKey {
    kid: String,
    alg: KeyAlg,
    /// The one `enc` this key decrypts, when it is pinned.
    enc: Option<Enc>,
    pub(super) private: Private,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("curve", &self.curve())
            .field("enc", &self.enc)
            .finish_non_exhaustive()
    }
}

fn ecdh_private(key: agreement::PrivateKey, curve: Curve) -> Result<Private, JweKeyError> {
    let public = key
        .compute_public_key()
        .map_err(|_| JweKeyError::Rejected {
            kind: curve.name(),
            reason: "cannot compute its public key".into(),
        })?
        .as_ref()
        .to_vec();
    Ok(Private::Ecdh { key, curve, public })
}

/// Reads a private key of any supported type from PKCS#8 DER.
fn private_from_pkcs8(der: &[u8]) -> Result<Private, JweKeyError> {
    if let Some((seed, stated)) = x25519_seed(der) {
        let key = agreement::PrivateKey::from_private_key(&agreement::X25519, seed)
            .map_err(rejected("X25519"))?;
        let private = ecdh_private(key, Curve::X25519)?;
        if let (Private::Ecdh { public, .. }, Some(stated)) = (&private, stated)
            && public.as_slice() != stated
        {
            return Err(JweKeyError::Rejected {
                kind: "X25519",
                reason: "its public key does not match the private key".into(),
            });
        }
        return Ok(private);
    }
    if let Ok(key) = PrivateDecryptingKey::from_pkcs8(der) {
        return Ok(Private::Rsa(key));
    }
    private_from_sec1_or_pkcs8_ec(der).map_err(|_| JweKeyError::NotPem {
        expected: "RSA, P-256, P-384 or X25519 private key",
    })
}

/// A P-256 or P-384 key from PKCS#8 or SEC 1 DER.
fn private_from_sec1_or_pkcs8_ec(der: &[u8]) -> Result<Private, JweKeyError> {
    for curve in [Curve::P256, Curve::P384] {
        if let Ok(key) = agreement::PrivateKey::from_private_key_der(curve.agreement(), der) {
            return ecdh_private(key, curve);
        }
    }
    Err(JweKeyError::NotPem {
        expected: "P-256 or P-384 private key",
    })
}

impl Private {
    fn kind(&self) -> &'static str {
        match self {
            Private::Rsa(_) => "RSA",
            Private::Ecdh { curve, .. } => curve.name(),
            Private::Secret(_) => "symmetric",
        }
    }
}

impl DecryptionKey {
    fn new(kid: String, alg: KeyAlg, private: Private) -> Result<Self, JweKeyError> {
        match (&private, alg) {
            (Private::Rsa(key), KeyAlg::RsaOaep256) => check_roca(&key.public_key())?,
            (Private::Ecdh { .. }, alg) if alg.is_ecdh() => {}
            (Private::Secret(secret), alg) => check_secret(alg, secret)?,
            (other, alg) => return Err(wrong_type(alg, other.kind())),
        }
        Ok(Self {
            kid,
            alg,
            enc: None,
            private,
        })
    }

    /// The same key, decrypting only JWEs with this `enc` (a `dir` key's
    /// secret must be as long as its CEK).
    pub fn only_enc(mut self, enc: Enc) -> Result<Self, JweKeyError> {
        if let (Private::Secret(secret), KeyAlg::Dir) = (&self.private, self.alg)
            && secret.len() != enc.key_len()
        {
            return Err(JweKeyError::SecretLength {
                alg: enc.name(),
                found: secret.len(),
                expected: "its CEK length",
            });
        }
        self.enc = Some(enc);
        Ok(self)
    }

    /// A key from a private key in PEM: PKCS#8 (`BEGIN PRIVATE KEY`, any
    /// supported type), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC 1
    /// (`BEGIN EC PRIVATE KEY`).
    pub fn from_private_pem(
        kid: impl Into<String>,
        alg: KeyAlg,
        pem: &[u8],
    ) -> Result<Self, JweKeyError> {
        needs_key_file(alg)?;
        let der = Zeroizing::new(PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            JweKeyError::NotPem {
                expected: "private key",
            }
        })?);
        let private = match &*der {
            PrivateKeyDer::Pkcs8(pkcs8) => private_from_pkcs8(pkcs8.secret_pkcs8_der())?,
            PrivateKeyDer::Pkcs1(pkcs1) => {
                let pair =
                    rsa::KeyPair::from_der(pkcs1.secret_pkcs1_der()).map_err(rejected("RSA"))?;
                let pkcs8: Pkcs8V1Der<'_> = pair.as_der().map_err(|_| JweKeyError::NotPem {
                    expected: "RSA private key",
                })?;
                let key =
                    PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).map_err(rejected("RSA"))?;
                Private::Rsa(key)
            }
            PrivateKeyDer::Sec1(sec1) => private_from_sec1_or_pkcs8_ec(sec1.secret_sec1_der())?,
            _ => {
                return Err(JweKeyError::NotPem {
                    expected: "private key",
                });
            }
        };
        Self::new(kid.into(), alg, private)
    }

    /// A key from PKCS#8 DER, as [`super::generate_pkcs8`] makes it.
    pub fn from_pkcs8_der(
        kid: impl Into<String>,
        alg: KeyAlg,
        der: &[u8],
    ) -> Result<Self, JweKeyError> {
        needs_key_file(alg)?;
        Self::new(kid.into(), alg, private_from_pkcs8(der)?)
    }

    /// A shared-secret key (`A256KW`: 32 bytes; `dir`: 16, 32 or 64, the CEK
    /// length of the `enc`s it will decrypt). The bytes are copied.
    pub fn from_secret(
        kid: impl Into<String>,
        alg: KeyAlg,
        secret: &[u8],
    ) -> Result<Self, JweKeyError> {
        check_secret(alg, secret)?;
        Self::new(
            kid.into(),
            alg,
            Private::Secret(Zeroizing::new(secret.to_vec())),
        )
    }

    /// A key from a private JWK (RFC 7518 §6: `RSA` with `n`, `e`, `d`,
    /// `p`, `q`, `dp`, `dq`, `qi`; `EC` with `crv`, `x`, `y`, `d`; `OKP`
    /// X25519 with `x`, `d`; `oct` with `k`). A `use` other than `enc`, or
    /// an `alg` other than `alg`, is refused; except that a `dir` key's
    /// JWK may name its `enc` as its `alg` (RFC 7520 §5.6 does), which then
    /// pins it ([`DecryptionKey::only_enc`]).
    pub fn from_private_jwk(
        kid: impl Into<String>,
        alg: KeyAlg,
        jwk: &Value,
    ) -> Result<Self, JweKeyError> {
        let jwk = JwkMembers::new(jwk, alg)?;
        let private = match jwk.kty()? {
            "RSA" => {
                let components = rsa::KeyPairComponents {
                    public_key: PublicKeyComponents {
                        n: jwk.unsigned("n")?,
                        e: jwk.unsigned("e")?,
                    },
                    d: jwk.secret("d")?,
                    p: jwk.secret("p")?,
                    q: jwk.secret("q")?,
                    dP: jwk.secret("dp")?,
                    dQ: jwk.secret("dq")?,
                    qInv: jwk.secret("qi")?,
                };
                if jwk.members.contains_key("oth") {
                    return Err(JweKeyError::BadJwk(
                        "multi-prime RSA keys are not supported",
                    ));
                }
                let pair = rsa::KeyPair::from_components(&components).map_err(rejected("RSA"))?;
                let pkcs8: Pkcs8V1Der<'_> =
                    pair.as_der().map_err(|_| JweKeyError::BadJwk("RSA"))?;
                Private::Rsa(
                    PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).map_err(rejected("RSA"))?,
                )
            }
            "EC" | "OKP" => {
                let curve = jwk.curve()?;
                let d = jwk.secret("d")?;
                if d.len() != curve.coordinate_len() {
                    return Err(JweKeyError::BadJwk("d is not of the curve's size"));
                }
                let key = agreement::PrivateKey::from_private_key(curve.agreement(), &d)
                    .map_err(rejected(curve.name()))?;
                let private = ecdh_private(key, curve)?;
                if let Private::Ecdh { public, .. } = &private
                    && *public != jwk.point(curve)?
                {
                    return Err(JweKeyError::BadJwk("the public key does not match d"));
                }
                private
            }
            "oct" => Private::Secret(jwk.secret("k")?),
            _ => return Err(JweKeyError::BadJwk("kty is not RSA, EC, OKP or oct")),
        };
        let key = Self::new(kid.into(), alg, private)?;
        match jwk.enc {
            Some(enc) => key.only_enc(enc),
            None => Ok(key),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key decrypts.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The curve of an ECDH key.
    pub fn curve(&self) -> Option<Curve> {
        match &self.private {
            Private::Ecdh { curve, .. } => Some(*curve),
            Private::Rsa(_) | Private::Secret(_) => None,
        }
    }

    /// Whether a JWE with this `enc` can be decrypted with this key: every
    /// `enc` (or the one of [`DecryptionKey::only_enc`]) but, for `dir`,
    /// only those whose CEK is as long as the secret.
    pub fn accepts_enc(&self, enc: Enc) -> bool {
        if self.enc.is_some_and(|only| only != enc) {
            return false;
        }
        match (&self.private, self.alg) {
            (Private::Secret(secret), KeyAlg::Dir) => secret.len() == enc.key_len(),
            _ => true,
        }
    }

    /// The public half as a JWK for the JWKS (`kty`, `crv`/`x`/`y` or
    /// `n`/`e`, `use: "enc"`, `alg`, `kid`); `None` for a shared secret,
    /// which is never published.
    pub fn public_jwk(&self) -> Option<Value> {
        let mut jwk = Map::new();
        match &self.private {
            Private::Rsa(key) => {
                let (n, e) = rsa_components(&key.public_key()).ok()?;
                jwk.insert("kty".into(), "RSA".into());
                jwk.insert("n".into(), base64url::encode(&n).into());
                jwk.insert("e".into(), base64url::encode(&e).into());
            }
            Private::Ecdh { curve, public, .. } => {
                jwk.insert("kty".into(), curve.kty().into());
                jwk.insert("crv".into(), curve.name().into());
                match curve {
                    Curve::X25519 => {
                        jwk.insert("x".into(), base64url::encode(public).into());
                    }
                    Curve::P256 | Curve::P384 => {
                        let (x, y) = public.get(1..)?.split_at_checked(curve.coordinate_len())?;
                        jwk.insert("x".into(), base64url::encode(x).into());
                        jwk.insert("y".into(), base64url::encode(y).into());
                    }
                }
            }
            Private::Secret(_) => return None,
        }
        jwk.insert("use".into(), "enc".into());
        jwk.insert("alg".into(), self.alg.name().into());
        jwk.insert("kid".into(), self.kid.clone().into());
        Some(Value::Object(jwk))
    }

    /// What encrypts to this key (its public half, or the same secret), with
    /// the same kid: for tests, and for tokens the gateway sends itself.
    pub fn encryption_key(&self) -> Result<EncryptionKey, JweKeyError> {
        let recipient = match &self.private {
            Private::Rsa(key) => Recipient::Rsa(key.public_key()),
            Private::Ecdh { curve, public, .. } => Recipient::Ecdh {
                key: ParsedPublicKey::try_from(UnparsedPublicKey::new(curve.agreement(), public))
                    .map_err(rejected(curve.name()))?,
                curve: *curve,
            },
            Private::Secret(secret) => Recipient::Secret(secret.clone()),
        };
        EncryptionKey::new(self.kid.clone(), self.alg, recipient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwe::{generate_pkcs8, generate_secret};
    use crate::auth::keys::pkcs8_pem;

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn member<'a>(jwk: &'a Value, name: &str) -> &'a str {
        jwk[name].as_str().expect("a string member")
    }

    #[test]
    fn generated_keys_load_from_pkcs8_der_and_pem_and_publish_their_public_half() {
        let cases = [
            (KeyAlg::RsaOaep256, Curve::P256, "RSA", None),
            (KeyAlg::EcdhEs, Curve::P256, "EC", Some("P-256")),
            (KeyAlg::EcdhEsA128Kw, Curve::P384, "EC", Some("P-384")),
            (KeyAlg::EcdhEsA256Kw, Curve::X25519, "OKP", Some("X25519")),
        ];
        for (alg, curve, kty, crv) in cases {
            let der = generate_pkcs8(alg, curve).expect("generates");
            let from_der = DecryptionKey::from_pkcs8_der("k1", alg, &der).expect("loads DER");
            let from_pem = DecryptionKey::from_private_pem("k1", alg, pkcs8_pem(&der).as_bytes())
                .expect("loads PEM");
            let jwk = from_der
                .public_jwk()
                .expect("asymmetric keys are published");
            assert_eq!(Some(jwk.clone()), from_pem.public_jwk(), "{alg}");
            assert_eq!(member(&jwk, "kty"), kty);
            assert_eq!(jwk.get("crv").and_then(Value::as_str), crv);
            assert_eq!(member(&jwk, "use"), "enc");
            assert_eq!(member(&jwk, "alg"), alg.name());
            assert_eq!(member(&jwk, "kid"), "k1");
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(jwk.get(private).is_none(), "{alg}: {private} is private");
            }
            // The published JWK is a key one can encrypt to.
            let to = EncryptionKey::from_public_jwk("k1", alg, &jwk).expect("a public JWK");
            assert_eq!((to.kid(), to.alg()), ("k1", alg));
        }
    }

    #[test]
    fn rsa_pkcs1_and_ec_sec1_pems_load_too() {
        let der = generate_pkcs8(KeyAlg::RsaOaep256, Curve::P256).expect("generates");
        // An RSA PKCS#8 document is a fixed 26-byte wrapper around PKCS#1.
        assert_eq!(der[4..7], [0x02, 0x01, 0x00]);
        assert_eq!(der[22..24], [0x04, 0x82]);
        let pkcs1 = pem("RSA PRIVATE KEY", &der[26..]);
        let key = DecryptionKey::from_private_pem("r", KeyAlg::RsaOaep256, pkcs1.as_bytes())
            .expect("PKCS#1 loads");
        let pkcs8 = DecryptionKey::from_pkcs8_der("r", KeyAlg::RsaOaep256, &der).expect("loads");
        assert_eq!(key.public_jwk(), pkcs8.public_jwk());

        let ec = agreement::PrivateKey::generate(&agreement::ECDH_P384).expect("generates");
        let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'_> = ec.as_der().expect("SEC 1");
        let sec1 = pem("EC PRIVATE KEY", sec1.as_ref());
        let key = DecryptionKey::from_private_pem("e", KeyAlg::EcdhEs, sec1.as_bytes())
            .expect("SEC 1 loads");
        assert_eq!(key.curve(), Some(Curve::P384));
    }

    #[test]
    fn public_keys_load_from_spki_pem_and_der() {
        let rsa = PrivateDecryptingKey::generate(rsa::KeySize::Rsa2048).expect("generates");
        let spki = rsa.public_key().as_der().expect("SPKI");
        let key = EncryptionKey::from_public_pem(
            "r",
            KeyAlg::RsaOaep256,
            pem("PUBLIC KEY", spki.as_ref()).as_bytes(),
        )
        .expect("an RSA SPKI");
        assert!(matches!(key.recipient, Recipient::Rsa(_)));
        for curve in [Curve::P256, Curve::P384, Curve::X25519] {
            let private = agreement::PrivateKey::generate(curve.agreement()).expect("generates");
            let public = private.compute_public_key().expect("public");
            let spki: aws_lc_rs::encoding::PublicKeyX509Der<'_> = public.as_der().expect("SPKI");
            let key = EncryptionKey::from_public_der("e", KeyAlg::EcdhEsA256Kw, spki.as_ref())
                .expect("an EC SPKI");
            assert!(matches!(key.recipient, Recipient::Ecdh { curve: c, .. } if c == curve));
            // A raw point is not SPKI.
            let raw = EncryptionKey::from_public_der("e", KeyAlg::EcdhEsA256Kw, public.as_ref());
            assert!(raw.is_err(), "{curve:?}");
        }
        let text = pem("PUBLIC KEY", spki.as_ref());
        assert!(EncryptionKey::from_public_bytes("r", KeyAlg::RsaOaep256, text.as_bytes()).is_ok());
        let refused = EncryptionKey::from_public_pem("r", KeyAlg::RsaOaep256, b"not a PEM");
        assert!(matches!(refused, Err(JweKeyError::NotPem { .. })));
    }

    #[test]
    fn a_key_must_fit_its_algorithm() {
        let rsa = generate_pkcs8(KeyAlg::RsaOaep256, Curve::P256).expect("generates");
        let ec = generate_pkcs8(KeyAlg::EcdhEs, Curve::P256).expect("generates");
        let wrong = DecryptionKey::from_pkcs8_der("k", KeyAlg::EcdhEs, &rsa).err();
        assert_eq!(wrong, Some(wrong_type(KeyAlg::EcdhEs, "RSA")));
        let wrong = DecryptionKey::from_pkcs8_der("k", KeyAlg::RsaOaep256, &ec).err();
        assert_eq!(wrong, Some(wrong_type(KeyAlg::RsaOaep256, "P-256")));
        for alg in [KeyAlg::A256Kw, KeyAlg::Dir] {
            let refused = DecryptionKey::from_pkcs8_der("k", alg, &ec).err();
            assert!(
                matches!(refused, Some(JweKeyError::WrongMaterial { .. })),
                "{alg}"
            );
        }
        let refused = DecryptionKey::from_secret("k", KeyAlg::RsaOaep256, &[0; 32]).err();
        assert!(matches!(refused, Some(JweKeyError::WrongMaterial { .. })));
        for (alg, len) in [
            (KeyAlg::A256Kw, 16),
            (KeyAlg::A256Kw, 33),
            (KeyAlg::Dir, 24),
            (KeyAlg::Dir, 0),
        ] {
            let refused = DecryptionKey::from_secret("k", alg, &vec![1; len]).err();
            assert!(
                matches!(refused, Some(JweKeyError::SecretLength { .. })),
                "{alg} {len}"
            );
        }
        let dir = DecryptionKey::from_secret("k", KeyAlg::Dir, &[1; 32]).expect("a dir key");
        assert!(dir.accepts_enc(Enc::A256Gcm) && dir.accepts_enc(Enc::A128CbcHs256));
        assert!(!dir.accepts_enc(Enc::A128Gcm) && !dir.accepts_enc(Enc::A256CbcHs512));
        assert!(dir.public_jwk().is_none(), "a secret is never published");
        let pinned = dir.only_enc(Enc::A256Gcm).expect("the length fits");
        assert!(pinned.accepts_enc(Enc::A256Gcm) && !pinned.accepts_enc(Enc::A128CbcHs256));
        let dir = DecryptionKey::from_secret("k", KeyAlg::Dir, &[1; 32]).expect("a dir key");
        assert!(dir.only_enc(Enc::A128Gcm).is_err());
        let refused = EncryptionKey::from_secret("k", KeyAlg::EcdhEs, &[1; 32]).err();
        assert!(matches!(refused, Some(JweKeyError::WrongMaterial { .. })));
    }

    #[test]
    fn jwks_for_something_else_are_refused() {
        let key = DecryptionKey::from_pkcs8_der(
            "k",
            KeyAlg::EcdhEs,
            &generate_pkcs8(KeyAlg::EcdhEs, Curve::P256).expect("generates"),
        )
        .expect("loads");
        let public = key.public_jwk().expect("a JWK");
        let with = |name: &str, value: Value| {
            let mut jwk = public.clone();
            jwk[name] = value;
            EncryptionKey::from_public_jwk("k", KeyAlg::EcdhEs, &jwk).err()
        };
        assert!(matches!(
            with("use", "sig".into()),
            Some(JweKeyError::JwkNotFor(_))
        ));
        assert!(matches!(
            with("alg", "ECDH-ES+A256KW".into()),
            Some(JweKeyError::JwkNotFor(_))
        ));
        assert!(matches!(
            with("crv", "P-384".into()),
            Some(JweKeyError::BadJwk(_))
        ));
        assert!(matches!(
            with("kty", "OKP".into()),
            Some(JweKeyError::BadJwk(_))
        ));
        assert!(matches!(
            with("d", "AAAA".into()),
            Some(JweKeyError::BadJwk(_))
        ));
        assert!(matches!(
            with("x", "AAAA".into()),
            Some(JweKeyError::BadJwk(_))
        ));
        // Not on the curve.
        let off_curve = base64url::encode(&[1u8; 32]);
        assert!(matches!(
            with("y", off_curve.into()),
            Some(JweKeyError::Rejected { .. })
        ));
        assert!(EncryptionKey::from_public_jwk("k", KeyAlg::EcdhEs, &public).is_ok());
        let oct = serde_json::json!({"kty": "oct", "k": base64url::encode(&[1; 32])});
        assert!(EncryptionKey::from_public_jwk("k", KeyAlg::A256Kw, &oct).is_err());
        let from_jwk =
            DecryptionKey::from_private_jwk("k", KeyAlg::A256Kw, &oct).expect("an oct JWK");
        assert!(from_jwk.public_jwk().is_none());
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let secret = [0xabu8; 32];
        let key = DecryptionKey::from_secret("the-kid", KeyAlg::A256Kw, &secret).expect("a key");
        let to = EncryptionKey::from_secret("the-kid", KeyAlg::A256Kw, &secret).expect("a key");
        for printed in [format!("{key:?}"), format!("{to:?}")] {
            assert!(
                printed.contains("the-kid") && printed.contains("A256Kw"),
                "{printed}"
            );
            assert!(
                !printed.contains("171") && !printed.to_lowercase().contains("abab"),
                "{printed}"
            );
        }
        let generated = generate_secret(KeyAlg::Dir, Enc::A256CbcHs512).expect("random");
        assert_eq!(generated.len(), 64);
    }
}
