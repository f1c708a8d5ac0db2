//! Commands other than `run` and `check`: tools for operators.
//!
//! Each returns its output as a value, and `main.rs` prints it, so tests can
//! run the commands without a process.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::auth::jwks::parse_jwks;
use crate::auth::jwt::{self, IssuerPolicy, KeySet, VerifyingKey};
use crate::auth::keys::{self, SUPPORTED_ALGORITHMS, alg_name, parse_algorithm};

/// The keys `warden verify` checks a token with.
#[derive(Debug)]
pub enum VerifyWith<'a> {
    /// A JWKS file.
    Jwks(&'a Path),
    /// One key file and its algorithm name.
    Key(&'a Path, &'a str),
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

/// Checks one compact JWS's signature (claims are shown, not judged), for
/// operators debugging a token and for the standard JOSE vectors.
pub fn verify(token: &str, with: VerifyWith<'_>) -> Result<VerifyReport, String> {
    crate::install_crypto_providers();
    let token = token.trim();
    let set = match with {
        VerifyWith::Jwks(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let policy = Arc::new(IssuerPolicy {
                iss: String::new(),
                audiences: Vec::new(),
            });
            let all: Vec<Algorithm> = SUPPORTED_ALGORITHMS
                .split(", ")
                .filter_map(parse_algorithm)
                .collect();
            let (set, skipped) = parse_jwks(&bytes, &policy, &all);
            for reason in skipped {
                eprintln!("skipped a key: {reason}");
            }
            set
        }
        VerifyWith::Key(path, alg) => {
            let alg = parse_algorithm(alg).ok_or_else(|| {
                format!("{alg:?} is not a supported algorithm; use one of {SUPPORTED_ALGORITHMS}")
            })?;
            let key =
                keys::verifier_from_file(alg, path).map_err(|e| format!("{e} ({})", e.fix))?;
            KeySet::new(vec![VerifyingKey {
                kid: None,
                alg,
                key,
                issuer: Arc::new(IssuerPolicy {
                    iss: String::new(),
                    audiences: Vec::new(),
                }),
            }])
        }
    };
    let mut output = String::new();
    let parsed = match jwt::parse(token) {
        Ok(parsed) => parsed,
        Err(rejection) => {
            output.push_str(&format!(
                "invalid: {} ({})\n",
                rejection.description,
                rejection.reason.as_str()
            ));
            return Ok(VerifyReport {
                valid: false,
                output,
            });
        }
    };
    let header = Value::Object(parsed.header.clone());
    output.push_str(&format!(
        "header: {}\n",
        serde_json::to_string_pretty(&header).unwrap_or_default()
    ));
    output.push_str(&format!(
        "payload: {}\n",
        serde_json::to_string_pretty(&decoded(parsed.payload)).unwrap_or_default()
    ));
    let valid = match jwt::verify_signature_in(&parsed, &set) {
        Ok(key) => {
            output.push_str(&format!(
                "signature: valid ({}, kid {})\n",
                alg_name(key.alg),
                key.kid.as_deref().unwrap_or("-")
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
    };
    Ok(VerifyReport { valid, output })
}
