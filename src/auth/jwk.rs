//! JSON Web Keys (RFC 7517) checked before use: a JWKS document, or one key.
//!
//! Pure functions, no I/O: a remote issuer's fetched set
//! ([`super::jwks`]) and a public key read from a JWK file
//! ([`super::keys`]) get the same checks. A key's `kty`, `alg`, `crv` and
//! `use` must agree; RSA keys need 2,048 bits and no ROCA fingerprint; EC
//! points must be on their curve; symmetric (`oct`) keys are never taken.

use std::sync::Arc;

use aws_lc_rs::signature as lc_sig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::alg::{alg_name, parse_algorithm};
use super::jwt::{IssuerPolicy, KeySet, VerifyingKey};

/// Whether `alg` fits a key of type `kty` (and curve `crv`).
fn alg_fits(alg: Algorithm, kty: &str, crv: Option<&str>) -> bool {
    match (kty, crv) {
        ("RSA", _) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        ("EC", Some("P-256")) => alg == Algorithm::ES256,
        ("EC", Some("P-384")) => alg == Algorithm::ES384,
        ("OKP", Some("Ed25519")) => alg == Algorithm::EdDSA,
        _ => false,
    }
}

fn b64_len(value: Option<&Value>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value?.as_str()?).ok()
}

/// Why a JWK was refused. The text goes into the log line of a skipped key
/// (with its kid, never key material) and into config errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The JWK is not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// No `kty`.
    #[error("no kty")]
    NoKty,
    /// `kid` is not a string.
    #[error("kid is not a string")]
    KidNotAString,
    /// An `oct` key: a shared secret has no place in a published set.
    #[error("symmetric keys are never taken from a JWKS")]
    Symmetric,
    /// `use` is not `sig`.
    #[error("`use` is not \"sig\"")]
    NotForSignatures,
    /// `key_ops` without `verify`.
    #[error("key_ops does not include \"verify\"")]
    NotForVerifying,
    /// An `alg` warden does not verify with.
    #[error("alg {0:?} is not supported")]
    UnsupportedAlg(String),
    /// An `alg` that does not fit the key type and curve.
    #[error("alg {alg} does not fit kty {kty}")]
    AlgDoesNotFit {
        /// The key's `alg`.
        alg: String,
        /// The key's `kty`.
        kty: String,
    },
    /// `alg` is not a string.
    #[error("alg is not a string")]
    AlgNotAString,
    /// No `alg`, and more than one (or none) of the allowed ones fits.
    #[error("no alg, and the issuer's algs do not settle it")]
    AlgUnsettled,
    /// An algorithm the issuer does not allow.
    #[error("alg {0} is not in the issuer's algs")]
    AlgNotAllowed(&'static str),
    /// A key parameter that is missing or not base64url.
    #[error("bad {0}")]
    BadParameter(&'static str),
    /// An RSA modulus under 2,048 bits.
    #[error("RSA key of about {0} bits; at least 2048 are required")]
    RsaTooShort(usize),
    /// An RSA key with the ROCA fingerprint.
    #[error("RSA key with the ROCA weakness (CVE-2017-15361): its private key can be recovered")]
    Roca,
    /// EC coordinates of another size than the curve's.
    #[error("EC coordinates of the wrong size")]
    EcCoordinateSize,
    /// An Ed25519 key of another size than 32 bytes.
    #[error("Ed25519 key of the wrong size")]
    Ed25519Size,
    /// A `kty` warden does not verify with.
    #[error("kty {0:?} is not supported")]
    UnsupportedKty(String),
    /// jsonwebtoken could not read the JWK.
    #[error("not a JWK ({0})")]
    NotAJwk(String),
    /// jsonwebtoken could not make a key of it.
    #[error("unusable ({0})")]
    Unusable(String),
    /// An EC point that is not on its curve.
    #[error("the EC point is not on the curve")]
    NotOnCurve,
}

/// Checks one JWK and builds its verifying key. Also used for public keys
/// read from a JWK file, which get the same checks.
pub(crate) fn check_key(
    jwk: &Value,
    policy: &Arc<IssuerPolicy>,
    allowed: &[Algorithm],
) -> Result<VerifyingKey, JwkError> {
    let obj = jwk.as_object().ok_or(JwkError::NotAnObject)?;
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(JwkError::NoKty)?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwkError::KidNotAString),
    };
    if kty == "oct" {
        return Err(JwkError::Symmetric);
    }
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err(JwkError::NotForSignatures),
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err(JwkError::NotForVerifying);
        }
    }
    let crv = obj.get("crv").and_then(Value::as_str);
    let alg = match obj.get("alg") {
        Some(Value::String(name)) => {
            let alg =
                parse_algorithm(name).ok_or_else(|| JwkError::UnsupportedAlg(name.clone()))?;
            if !alg_fits(alg, kty, crv) {
                return Err(JwkError::AlgDoesNotFit {
                    alg: name.clone(),
                    kty: kty.to_owned(),
                });
            }
            alg
        }
        Some(_) => return Err(JwkError::AlgNotAString),
        None => {
            let mut fitting = allowed.iter().filter(|a| alg_fits(**a, kty, crv));
            match (fitting.next(), fitting.next()) {
                (Some(alg), None) => *alg,
                _ => return Err(JwkError::AlgUnsettled),
            }
        }
    };
    if !allowed.contains(&alg) {
        return Err(JwkError::AlgNotAllowed(alg_name(alg)));
    }
    match kty {
        "RSA" => {
            let n = b64_len(obj.get("n")).ok_or(JwkError::BadParameter("n"))?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(JwkError::RsaTooShort(bits));
            }
            if has_roca_fingerprint(&n) {
                return Err(JwkError::Roca);
            }
            b64_len(obj.get("e")).ok_or(JwkError::BadParameter("e"))?;
        }
        "EC" => {
            let size = if crv == Some("P-384") { 48 } else { 32 };
            let x = b64_len(obj.get("x")).ok_or(JwkError::BadParameter("x"))?;
            let y = b64_len(obj.get("y")).ok_or(JwkError::BadParameter("y"))?;
            if x.len() != size || y.len() != size {
                return Err(JwkError::EcCoordinateSize);
            }
        }
        "OKP" => {
            let x = b64_len(obj.get("x")).ok_or(JwkError::BadParameter("x"))?;
            if x.len() != 32 {
                return Err(JwkError::Ed25519Size);
            }
        }
        other => return Err(JwkError::UnsupportedKty(other.to_owned())),
    }
    let parsed: Jwk =
        serde_json::from_value(jwk.clone()).map_err(|e| JwkError::NotAJwk(e.to_string()))?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|e| JwkError::Unusable(e.to_string()))?;
    // Refuse points that are not on the curve now, not at the first token.
    let point_check: Option<&'static lc_sig::EcdsaVerificationAlgorithm> = match alg {
        Algorithm::ES256 => Some(&lc_sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&lc_sig::ECDSA_P384_SHA384_FIXED),
        _ => None,
    };
    if let Some(algorithm) = point_check {
        let bytes = key
            .try_get_as_bytes()
            .map_err(|e| JwkError::Unusable(e.to_string()))?;
        lc_sig::ParsedPublicKey::new(algorithm, bytes).map_err(|_| JwkError::NotOnCurve)?;
    }
    Ok(VerifyingKey {
        kid,
        alg,
        key,
        issuer: policy.clone(),
    })
}

/// Whether an RSA modulus has the ROCA fingerprint (CVE-2017-15361: keys
/// made by some Infineon chips, whose private key can be computed from the
/// public one): for every small prime p, n mod p lies in the subgroup that
/// 65537 generates mod p (Nemec et al., CCS 2017). A random modulus passes
/// this for all 38 primes with negligible probability.
pub fn has_roca_fingerprint(modulus: &[u8]) -> bool {
    const PRIMES: [u64; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = modulus
            .iter()
            .fold(0u64, |acc, byte| (acc * 256 + u64::from(*byte)) % p);
        let generator = 65537 % p;
        let mut power = 1;
        (0..p).any(|_| {
            let hit = power == residue;
            power = power * generator % p;
            hit
        })
    })
}

/// Reads a JWKS document. Returns the usable keys and, for each skipped
/// key, why (with its kid, never key material).
pub fn parse_jwks(
    bytes: &[u8],
    policy: &Arc<IssuerPolicy>,
    allowed: &[Algorithm],
) -> (KeySet, Vec<String>) {
    let mut skipped = Vec::new();
    let keys = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(doc)) => match doc.get("keys") {
            Some(Value::Array(keys)) => keys.clone(),
            _ => {
                skipped.push("the document has no \"keys\" array".to_owned());
                Vec::new()
            }
        },
        _ => {
            skipped.push("the document is not a JSON object".to_owned());
            Vec::new()
        }
    };
    let mut usable: Vec<VerifyingKey> = Vec::new();
    for jwk in &keys {
        let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("(no kid)");
        match check_key(jwk, policy, allowed) {
            Ok(key) => {
                if key.kid.is_some() && usable.iter().any(|k| k.kid == key.kid) {
                    skipped.push(format!("kid {kid:?}: a second key with the same kid"));
                } else {
                    usable.push(key);
                }
            }
            Err(reason) => skipped.push(format!("kid {kid:?}: {reason}")),
        }
    }
    (KeySet::new(usable), skipped)
}
