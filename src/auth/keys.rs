//! Key material: the gateway's own keys (`[[keys]]`), loaded once at start-up.
//!
//! Private and public keys come from PEM files (PKCS#8, SPKI, and PKCS#1 for
//! RSA) or, for public keys, from a JWK file; HS secrets only from an
//! environment variable or a file (never the config itself), and must be at
//! least as long as the hash (RFC 7518 §3.2). `generate = true` makes an
//! ephemeral key at start-up, for demos. The algorithm of a key is fixed
//! here: a token never chooses it.
//!
//! Key bytes never reach a log line: [`LoadedKey`]'s `Debug` prints the kid
//! and algorithm only.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature as lc_sig;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use zeroize::Zeroizing;

pub use super::alg::{SUPPORTED_ALGORITHMS, alg_name, is_hmac, min_secret_len, parse_algorithm};

/// Where a key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A private key (PEM): signs, and verifies with its public half.
    PrivateFile(PathBuf),
    /// A public key (PEM or JWK): verifies only.
    PublicFile(PathBuf),
    /// An HS secret in an environment variable (its bytes, as HAProxy's `jwt_verify` uses them).
    SecretEnv(String),
    /// An HS secret in a file (its bytes, without a trailing newline).
    SecretFile(PathBuf),
    /// An ephemeral key made at start-up.
    Generate,
}

/// One `[[keys]]` entry, before loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySettings {
    /// Key id, unique across all keys.
    pub kid: String,
    /// The one algorithm this key is used with.
    pub alg: Algorithm,
    /// Where the key material comes from.
    pub source: KeySource,
}

/// A loaded key. Its `Debug` never shows key material.
#[derive(Clone)]
pub struct LoadedKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// Verifies signatures.
    pub decoding: DecodingKey,
    /// Signs, when the private half (or the secret) is held.
    pub encoding: Option<EncodingKey>,
    /// The public JWK (asymmetric keys only), for publishing.
    pub public_jwk: Option<Jwk>,
    /// Made at start-up rather than read.
    pub ephemeral: bool,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("can_sign", &self.encoding.is_some())
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be loaded; the message is safe to show (no key bytes).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct KeyError {
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

fn key_error(message: impl Into<String>, fix: impl Into<String>) -> KeyError {
    KeyError {
        message: message.into(),
        fix: fix.into(),
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    std::fs::read(path).map(Zeroizing::new).map_err(|err| {
        key_error(
            format!("cannot read {}: {err}", path.display()),
            "check the path (relative paths start at the config file's directory) and its permissions",
        )
    })
}

/// Loads one key.
pub fn load(settings: &KeySettings) -> Result<LoadedKey, KeyError> {
    let alg = settings.alg;
    let (decoding, encoding, ephemeral) = match &settings.source {
        KeySource::SecretEnv(var) => {
            let secret = std::env::var_os(var).ok_or_else(|| {
                key_error(
                    format!("the environment variable {var} is not set"),
                    format!("export {var} with a random secret of at least {} bytes (`warden keygen --alg {}` makes one)", min_secret_len(alg), alg_name(alg)),
                )
            })?;
            let secret = Zeroizing::new(secret.into_encoded_bytes());
            hmac_key(alg, &secret)?
        }
        KeySource::SecretFile(path) => {
            let mut secret = read_file(path)?;
            while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                secret.pop();
            }
            hmac_key(alg, &secret)?
        }
        KeySource::PrivateFile(path) => {
            if is_hmac(alg) {
                return Err(key_error(
                    "HS keys are secrets, not key files",
                    "use secret_env or secret_file for HS256/384/512",
                ));
            }
            let pem = read_file(path)?;
            let encoding = private_from_pem(alg, &pem).map_err(|err| {
                key_error(
                    format!("{} is not a {} private key in PEM ({err})", path.display(), alg_name(alg)),
                    "give a PKCS#8 PEM (\"BEGIN PRIVATE KEY\"; PKCS#1 \"BEGIN RSA PRIVATE KEY\" also for RSA); `warden keygen` writes one",
                )
            })?;
            let (decoding, _) = public_of(alg, &encoding)?;
            (decoding, Some(encoding), false)
        }
        KeySource::PublicFile(path) => {
            if is_hmac(alg) {
                return Err(key_error(
                    "HS keys are secrets, not public keys",
                    "use secret_env or secret_file for HS256/384/512",
                ));
            }
            let text = read_file(path)?;
            let decoding = public_from_bytes(alg, &text).map_err(|err| {
                key_error(
                    format!("{} is not a {} public key ({err})", path.display(), alg_name(alg)),
                    "give an SPKI PEM (\"BEGIN PUBLIC KEY\"; PKCS#1 \"BEGIN RSA PUBLIC KEY\" also for RSA) or a public JWK",
                )
            })?;
            (decoding, None, false)
        }
        KeySource::Generate => {
            let (decoding, encoding) = generate(alg)?;
            (decoding, Some(encoding), true)
        }
    };
    let public_jwk = match (&encoding, is_hmac(alg)) {
        (_, true) => None,
        (Some(encoding), false) => Some(public_of(alg, encoding)?.1),
        // A verify-only key is published too: during a rotation the retired
        // key stays in the JWKS until its tokens have expired.
        (None, false) => Jwk::from_decoding_key(&decoding, Some(alg)).ok(),
    };
    let public_jwk = public_jwk.map(|mut jwk| {
        jwk.common.key_id = Some(settings.kid.clone());
        jwk
    });
    Ok(LoadedKey {
        kid: settings.kid.clone(),
        alg,
        decoding,
        encoding,
        public_jwk,
        ephemeral,
    })
}

fn hmac_key(
    alg: Algorithm,
    secret: &[u8],
) -> Result<(DecodingKey, Option<EncodingKey>, bool), KeyError> {
    let min = min_secret_len(alg);
    if secret.len() < min {
        return Err(key_error(
            format!(
                "the {} secret is {} bytes; at least {min} are required (RFC 7518 §3.2)",
                alg_name(alg),
                secret.len()
            ),
            format!(
                "use a random secret of at least {min} bytes (`warden keygen --alg {}`)",
                alg_name(alg)
            ),
        ));
    }
    Ok((
        DecodingKey::from_secret(secret),
        Some(EncodingKey::from_secret(secret)),
        false,
    ))
}

fn private_from_pem(
    alg: Algorithm,
    pem: &[u8],
) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
}

/// Why a public key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    /// It starts like JSON but is not.
    #[error("not a JWK: {0}")]
    NotJson(#[from] serde_json::Error),
    /// A JWK that fails the checks a remote JWKS gets.
    #[error(transparent)]
    Jwk(#[from] super::jwk::JwkError),
    /// Not a PEM public key of the algorithm's type.
    #[error("{0}")]
    Pem(#[from] jsonwebtoken::errors::Error),
}

/// Reads a public key from PEM or a JWK (text starting with `{`).
pub fn public_from_bytes(alg: Algorithm, bytes: &[u8]) -> Result<DecodingKey, PublicKeyError> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        // The checks of a remote JWKS apply: kty/alg/crv agree, RSA of at
        // least 2048 bits and not ROCA, EC points on the curve, no oct key.
        let jwk: serde_json::Value = serde_json::from_slice(trimmed)?;
        let policy = std::sync::Arc::new(super::jwt::IssuerPolicy {
            iss: String::new(),
            audiences: Vec::new(),
            accept_high_s: false,
        });
        let key = super::jwk::check_key(&jwk, &policy, &[alg])?;
        return Ok(key.key);
    }
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(bytes),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(bytes),
        _ => DecodingKey::from_rsa_pem(bytes),
    };
    Ok(key?)
}

/// The public half of a private key, as a decoding key and a JWK.
fn public_of(alg: Algorithm, encoding: &EncodingKey) -> Result<(DecodingKey, Jwk), KeyError> {
    let jwk = Jwk::from_encoding_key(encoding, alg).map_err(|err| {
        key_error(
            format!("cannot derive the public key ({err})"),
            "check that the key matches its `alg`",
        )
    })?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|err| {
        key_error(
            format!("cannot use the public key ({err})"),
            "check that the key matches its `alg`",
        )
    })?;
    Ok((decoding, jwk))
}

/// A fresh private key for `alg`, as PKCS#8 DER (HS: the raw secret).
pub fn generate_der(alg: Algorithm) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let failed = |what: &str| {
        key_error(
            format!("cannot generate a {what} key"),
            "check the system's random source",
        )
    };
    let der = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let mut secret = vec![0u8; 64];
            rng.fill(&mut secret).map_err(|_| failed("HS"))?;
            secret
        }
        Algorithm::ES256 => {
            lc_sig::EcdsaKeyPair::generate_pkcs8(&lc_sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| failed("ES256"))?
                .as_ref()
                .to_vec()
        }
        Algorithm::ES384 => {
            lc_sig::EcdsaKeyPair::generate_pkcs8(&lc_sig::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .map_err(|_| failed("ES384"))?
                .as_ref()
                .to_vec()
        }
        // Publishing an Ed25519 key as a JWK needs the PKCS#8 v1 form.
        Algorithm::EdDSA => lc_sig::Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(|_| failed("Ed25519"))?
            .as_ref()
            .to_vec(),
        _ => {
            let pair = lc_sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| failed("RSA"))?;
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&pair)
                .map_err(|_| failed("RSA"))?
                .as_ref()
                .to_vec()
        }
    };
    Ok(Zeroizing::new(der))
}

fn generate(alg: Algorithm) -> Result<(DecodingKey, EncodingKey), KeyError> {
    let der = generate_der(alg)?;
    let encoding = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Ok((
                DecodingKey::from_secret(&der),
                EncodingKey::from_secret(&der),
            ));
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&der),
        Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
        _ => {
            // jsonwebtoken reads RSA private keys from PEM only.
            let pem = pkcs8_pem(&der);
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|err| {
                key_error(format!("cannot read the generated RSA key ({err})"), "")
            })?
        }
    };
    let (decoding, _) = public_of(alg, &encoding)?;
    Ok((decoding, encoding))
}

/// PKCS#8 DER wrapped as PEM (`BEGIN PRIVATE KEY`), as `warden keygen` writes it.
pub fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Zeroizing::new(pem)
}

/// A verifying key from a file, for `warden verify --key F --alg A`: for HS
/// algorithms the file holds the secret (its bytes, or an `oct` JWK); for the
/// others a public key (PEM or JWK) or a private PEM, whose public half is used.
pub fn verifier_from_file(alg: Algorithm, path: &Path) -> Result<DecodingKey, KeyError> {
    let bytes = read_file(path)?;
    let looks_like_jwk = bytes.trim_ascii_start().starts_with(b"{");
    if is_hmac(alg) {
        let secret: Zeroizing<Vec<u8>> = if looks_like_jwk {
            let jwk: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                key_error(
                    format!("{} is not JSON ({e})", path.display()),
                    "give an oct JWK or the raw secret",
                )
            })?;
            let k = jwk
                .get("k")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| {
                    key_error(
                        format!("{} is not an oct JWK", path.display()),
                        "give an oct JWK (with \"k\") or the raw secret",
                    )
                })?;
            use base64::Engine;
            Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(k)
                    .map_err(|_| {
                        key_error(
                            format!("{}: \"k\" is not base64url", path.display()),
                            "give an oct JWK or the raw secret",
                        )
                    })?,
            )
        } else {
            let mut raw = bytes.clone();
            while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                raw.pop();
            }
            raw
        };
        return hmac_key(alg, &secret).map(|(decoding, _, _)| decoding);
    }
    if !looks_like_jwk && bytes.windows(11).any(|w| w == b"PRIVATE KEY") {
        let settings = KeySettings {
            kid: String::new(),
            alg,
            source: KeySource::PrivateFile(path.to_owned()),
        };
        return load(&settings).map(|key| key.decoding);
    }
    public_from_bytes(alg, &bytes).map_err(|err| {
        key_error(
            format!("{} is not a {} key ({err})", path.display(), alg_name(alg)),
            "give a public key (PEM or JWK) or a private PEM",
        )
    })
}
