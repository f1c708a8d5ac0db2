//! `warden verify`: a compact JWS checked with a key or a JWKS, and a compact
//! JWE decrypted first with `--decrypt-key`.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::CliError;
use crate::auth::alg::{SUPPORTED_ALGORITHMS, alg_name, parse_algorithm};
use crate::auth::jwe::{self, DECRYPT_ERROR_DESCRIPTION, DecryptionKey, JweKeyError, KeyAlg};
use crate::auth::jwk::parse_jwks;
use crate::auth::jwt::{self, IssuerPolicy, KeySet};
use crate::auth::keys::{self};

/// The keys `warden verify` checks a token with.
#[derive(Debug)]
pub enum VerifyWith<'a> {
    /// A JWKS file.
    Jwks(&'a Path),
    /// One key file and its algorithm name.
    Key(&'a Path, &'a str),
}

/// The key `warden verify` decrypts an encrypted token (a JWE) with.
#[derive(Debug, Clone, Copy)]
pub struct DecryptWith<'a> {
    /// A private key (PEM or JWK) or, for `A256KW` and `dir`, a file holding
    /// the secret as base64url (or an `oct` JWK).
    pub key: &'a Path,
    /// The key's key-management algorithm (`RSA-OAEP-256`, `ECDH-ES`, ...).
    pub alg: &'a str,
}

/// What `warden verify` found.
#[derive(Debug)]
pub struct VerifyReport {
    /// Whether the signature verifies.
    pub valid: bool,
    /// Lines for standard output.
    pub output: String,
}

fn decoded(segment: &str) -> Value {
    use base64::Engine;
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(format!("({} bytes, not JSON)", bytes.len()))),
        Err(_) => Value::String("(not base64url)".into()),
    }
}

/// The keys a signature is checked with.
enum Verifier {
    /// A JWKS: the token's `kid` picks the key.
    Set(KeySet),
    /// One key given: it is the key, whatever kid the token names.
    Single(jsonwebtoken::DecodingKey, Algorithm),
}

fn verifier(with: VerifyWith<'_>) -> Result<Verifier, CliError> {
    match with {
        VerifyWith::Jwks(path) => {
            let bytes = std::fs::read(path).map_err(|source| CliError::Read {
                path: path.to_owned(),
                source,
            })?;
            let policy = Arc::new(IssuerPolicy {
                iss: String::new(),
                audiences: Vec::new(),
                accept_high_s: false,
            });
            let all: Vec<Algorithm> = SUPPORTED_ALGORITHMS
                .split(", ")
                .filter_map(parse_algorithm)
                .collect();
            let (set, skipped) = parse_jwks(&bytes, &policy, &all);
            for reason in skipped {
                eprintln!("skipped a key: {reason}");
            }
            Ok(Verifier::Set(set))
        }
        VerifyWith::Key(path, alg) => {
            let alg =
                parse_algorithm(alg).ok_or_else(|| CliError::UnknownAlgorithm(alg.to_owned()))?;
            let key = keys::verifier_from_file(alg, path).map_err(CliError::KeyFile)?;
            Ok(Verifier::Single(key, alg))
        }
    }
}

pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Checks one compact JWS's signature (claims are shown, not judged), for
/// operators debugging a token and for the standard JOSE vectors.
pub fn verify(token: &str, with: VerifyWith<'_>) -> Result<VerifyReport, CliError> {
    verify_decrypting(token, with, None)
}

/// [`verify`], for a token that may be encrypted: a compact JWE (five
/// segments) is decrypted with `decrypt` first, and the JWS inside it is
/// checked as [`verify`] checks one. The JWE header is shown, then the
/// inner header and payload. Every failure to decrypt reads the same, as
/// at the gateway ([`DECRYPT_ERROR_DESCRIPTION`]).
pub fn verify_decrypting(
    token: &str,
    with: VerifyWith<'_>,
    decrypt: Option<DecryptWith<'_>>,
) -> Result<VerifyReport, CliError> {
    crate::crypto::install_providers();
    let token = token.trim();
    let verifier = verifier(with)?;
    let mut output = String::new();
    if !jwe::is_compact_jwe(token) {
        if decrypt.is_some() {
            eprintln!("note: the token is not encrypted (not a JWE); --decrypt-key is not used");
        }
        let valid = check_jws(token, &verifier, &mut output);
        return Ok(VerifyReport { valid, output });
    }
    let invalid = |output: String| {
        Ok(VerifyReport {
            valid: false,
            output,
        })
    };
    let protected = token.split('.').next().unwrap_or_default();
    let jwe_header = decoded(protected);
    output.push_str(&format!("jwe header: {}\n", pretty(&jwe_header)));
    let Some(decrypt) = decrypt else {
        output.push_str(
            "invalid: the token is encrypted (a JWE); give --decrypt-key FILE and --decrypt-alg ALG\n",
        );
        return invalid(output);
    };
    // One key given: it is the key, whatever kid the token names.
    let kid = jwe_header.get("kid").and_then(Value::as_str).unwrap_or("-");
    let key = decryption_key_from_file(decrypt, kid)?;
    let decrypted = match jwe::decrypt(token, [&key]) {
        Ok(decrypted) => decrypted,
        Err(_) => {
            output.push_str(&format!("invalid: {DECRYPT_ERROR_DESCRIPTION}\n"));
            return invalid(output);
        }
    };
    output.push_str(&format!("decrypted: {}, {}\n", key.alg(), decrypted.enc));
    // A nested JWT, as the gateway requires (SPEC §12): bare claims are
    // refused, since anyone with the public key can encrypt some. Claims
    // are JSON, so never of a JWS's alphabet, whatever dots they hold.
    let cty_ok = decrypted
        .cty
        .as_deref()
        .is_none_or(|cty| cty.eq_ignore_ascii_case("JWT"));
    let inner = std::str::from_utf8(&decrypted.plaintext)
        .ok()
        .filter(|text| {
            cty_ok
                && text.split('.').count() == 3
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    let Some(inner) = inner else {
        let content = serde_json::from_slice(&decrypted.plaintext).unwrap_or_else(|_| {
            Value::String(format!("({} bytes, not JSON)", decrypted.plaintext.len()))
        });
        output.push_str(&format!("content: {}\n", pretty(&content)));
        output.push_str("invalid: token not signed\n");
        return invalid(output);
    };
    let valid = check_jws(inner, &verifier, &mut output);
    Ok(VerifyReport { valid, output })
}

/// A decryption key from the file `warden verify --decrypt-key` names,
/// with the kid the token asks for.
fn decryption_key_from_file(with: DecryptWith<'_>, kid: &str) -> Result<DecryptionKey, CliError> {
    let alg = KeyAlg::parse(with.alg)
        .ok_or_else(|| CliError::UnknownKeyAlgorithm(with.alg.to_owned()))?;
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(with.key).map_err(|source| CliError::Read {
            path: with.key.to_owned(),
            source,
        })?);
    let trimmed = bytes.trim_ascii_start();
    let key = if trimmed.starts_with(b"{") {
        let jwk: Value = serde_json::from_slice(trimmed)
            .map_err(|_| CliError::JweKey(JweKeyError::BadJwk("not JSON")))?;
        DecryptionKey::from_private_jwk(kid, alg, &jwk)
    } else if alg.is_symmetric() {
        let secret = secret_from_text(&String::from_utf8_lossy(&bytes)).ok_or_else(|| {
            CliError::Option(format!(
                "{} does not hold a base64url secret (the text `warden keygen --alg {alg}` prints)",
                with.key.display()
            ))
        })?;
        DecryptionKey::from_secret(kid, alg, &secret)
    } else {
        DecryptionKey::from_private_pem(kid, alg, &bytes)
    };
    key.map_err(CliError::JweKey)
}

/// A shared secret written as base64url, as `secret_env` and `secret_file`
/// hold it (padding and surrounding whitespace allowed).
fn secret_from_text(text: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    use base64::Engine;
    let trimmed = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
        .map(zeroize::Zeroizing::new)
}

/// Checks a compact JWS's signature; appends its header, payload and the
/// verdict to `output`.
fn check_jws(token: &str, verifier: &Verifier, output: &mut String) -> bool {
    let parsed = match jwt::parse(token) {
        Ok(parsed) => parsed,
        Err(rejection) => {
            output.push_str(&format!(
                "invalid: {} ({})\n",
                rejection.description,
                rejection.reason.as_str()
            ));
            return false;
        }
    };
    let header = Value::Object(parsed.header.clone());
    output.push_str(&format!("header: {}\n", pretty(&header)));
    output.push_str(&format!("payload: {}\n", pretty(&decoded(parsed.payload))));
    let verified = match verifier {
        Verifier::Single(key, alg) => {
            jwt::verify_signature(&parsed, key, *alg).map(|()| (*alg, parsed.kid.clone()))
        }
        Verifier::Set(set) => {
            jwt::verify_signature_in(&parsed, set).map(|key| (key.alg, key.kid.clone()))
        }
    };
    match verified {
        Ok((alg, kid)) => {
            output.push_str(&format!(
                "signature: valid ({}, kid {})\n",
                alg_name(alg),
                kid.as_deref().unwrap_or("-")
            ));
            true
        }
        Err(rejection) => {
            output.push_str(&format!(
                "signature: invalid: {} ({})\n",
                rejection.description,
                rejection.reason.as_str()
            ));
            false
        }
    }
}
