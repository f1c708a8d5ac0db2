//! `[[keys]]` entries whose `alg` is a key-management algorithm (SPEC §12):
//! the gateway's decryption keys (a private key or a shared secret), and
//! the public keys of upstreams that `upstream_token.encrypt_to` names.
//! `auth.rs` hands such an entry here once it has read its `alg`.

use std::sync::Arc;

use base64::Engine;
use zeroize::Zeroizing;

use super::report::{KeyPath, Report};
use crate::auth::jwe::{Curve, DecryptionKey, EncryptionKey, JweKeyError, KeyAlg};
use crate::config::file::KeyFile;

/// The JWE keys of `[[keys]]`.
#[derive(Debug, Default)]
pub(super) struct JweKeys {
    pub decryption: Vec<Arc<DecryptionKey>>,
    pub encryption: Vec<Arc<EncryptionKey>>,
    /// The kids of decryption keys made at start-up (`generate = true`).
    pub generated: Vec<String>,
}

impl JweKeys {
    pub(super) fn has(&self, kid: &str) -> bool {
        self.decryption.iter().any(|k| k.kid() == kid)
            || self.encryption.iter().any(|k| k.kid() == kid)
    }
}

/// Loads one entry with key-management algorithm `alg` into `keys`.
pub(super) fn load_jwe_key(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &KeyFile,
    alg: KeyAlg,
    keys: &mut JweKeys,
) {
    let sources = [
        file.private_key_file.is_some(),
        file.public_key_file.is_some(),
        file.secret_env.is_some(),
        file.secret_file.is_some(),
        file.generate == Some(true),
    ];
    if sources.iter().filter(|set| **set).count() != 1 {
        report.problem(
            path,
            format!("key {:?} needs exactly one source", file.kid),
            "set one of private_key_file, public_key_file, secret_env, secret_file or generate = true",
        );
        return;
    }
    let kid = file.kid.clone();
    let loaded = if let Some(p) = &file.private_key_file {
        read(report, path, &report.resolve(p))
            .map(|pem| DecryptionKey::from_private_pem(kid, alg, &pem).map(Loaded::Decrypt))
    } else if let Some(p) = &file.public_key_file {
        read(report, path, &report.resolve(p))
            .map(|bytes| EncryptionKey::from_public_bytes(kid, alg, &bytes).map(Loaded::Encrypt))
    } else if let Some(var) = &file.secret_env {
        match std::env::var(var) {
            Ok(text) => secret(report, path, &text)
                .map(|bytes| DecryptionKey::from_secret(kid, alg, &bytes).map(Loaded::Decrypt)),
            Err(_) => {
                report.problem(
                    path,
                    format!("the environment variable {var} is not set (or not UTF-8)"),
                    "export it with the key's base64url text (warden keygen prints one)",
                );
                None
            }
        }
    } else if let Some(p) = &file.secret_file {
        read(report, path, &report.resolve(p)).and_then(|bytes| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            secret(report, path, &text)
                .map(|bytes| DecryptionKey::from_secret(kid, alg, &bytes).map(Loaded::Decrypt))
        })
    } else {
        keys.generated.push(kid.clone());
        Some(generate(kid, alg).map(Loaded::Decrypt))
    };
    match loaded {
        Some(Ok(Loaded::Decrypt(key))) => keys.decryption.push(Arc::new(key)),
        Some(Ok(Loaded::Encrypt(key))) => keys.encryption.push(Arc::new(key)),
        Some(Err(err)) => report.problem(path, err.to_string(), err.fix()),
        None => {}
    }
}

enum Loaded {
    Decrypt(DecryptionKey),
    Encrypt(EncryptionKey),
}

fn read(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &std::path::Path,
) -> Option<Zeroizing<Vec<u8>>> {
    match std::fs::read(file) {
        Ok(bytes) => Some(Zeroizing::new(bytes)),
        Err(err) => {
            report.problem(
                path,
                format!("cannot read {}: {err}", file.display()),
                "check the path (relative paths start at the config file's directory)",
            );
            None
        }
    }
}

/// A shared secret, written as base64url (padding and surrounding
/// whitespace allowed): raw random bytes do not fit an environment variable.
fn secret(report: &mut Report<'_>, path: &KeyPath, text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let trimmed = text.trim().trim_end_matches('=');
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed) {
        Ok(bytes) => Some(Zeroizing::new(bytes)),
        Err(_) => {
            report.problem(
                path,
                "the secret is not base64url",
                "write the key's bytes as base64url, e.g. the text `warden keygen --alg A256KW` prints",
            );
            None
        }
    }
}

/// A key made at start-up (demos): P-256 for ECDH, RSA 2048 for RSA-OAEP,
/// random bytes for secrets.
fn generate(kid: String, alg: KeyAlg) -> Result<DecryptionKey, JweKeyError> {
    if alg.is_symmetric() {
        let enc = crate::auth::jwe::Enc::A256Gcm;
        let secret = crate::auth::jwe::generate_secret(alg, enc)?;
        return DecryptionKey::from_secret(kid, alg, &secret);
    }
    let der = crate::auth::jwe::generate_pkcs8(alg, Curve::P256)?;
    DecryptionKey::from_pkcs8_der(kid, alg, &der)
}
