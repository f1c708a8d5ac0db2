//! Commands other than `run` and `check`: tools for operators.
//!
//! Each returns its output as a value, and `main.rs` prints it, so tests can
//! run the commands without a process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::auth::alg::{SUPPORTED_ALGORITHMS, alg_name, parse_algorithm};
use crate::auth::issue::IssueError;
use crate::auth::jwk::parse_jwks;
use crate::auth::jwt::{self, IssuerPolicy, KeySet};
use crate::auth::keys::{self, KeyError};
use crate::credentials::store::StoreError;

/// Why an operator command failed; its text is printed to the operator as it is.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An algorithm name warden does not sign or verify with.
    #[error("{0:?} is not a supported algorithm; use one of {SUPPORTED_ALGORITHMS}")]
    UnknownAlgorithm(String),
    /// A file that could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file that cannot be used, and how to fix it.
    #[error("{0} ({fix})", fix = .0.fix)]
    KeyFile(KeyError),
    /// A key that could not be made.
    #[error("{0}")]
    Keygen(KeyError),
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
    /// A private key needs somewhere to go.
    #[error("give --out FILE for the private key")]
    NoOutFile,
    /// A directory that could not be made.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A private key file that could not be created (it is never overwritten).
    #[error("cannot create {} (it must not exist yet): {source}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config lacks what the command needs.
    #[error("the config has no {0}")]
    NotConfigured(&'static str),
    /// `issuer.signing_kid` names no key.
    #[error("no [[keys]] entry has kid {0:?}")]
    UnknownKid(String),
    /// The signing key holds no private half.
    #[error("the signing key cannot sign")]
    CannotSign,
    /// Signing failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The credential store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not a credential name.
    #[error("{0:?} is not a credential name (1-64 of letters, digits, '-', '_', '.')")]
    CredentialName(String),
    /// A credential as given is incomplete or inconsistent.
    #[error(transparent)]
    Credential(#[from] crate::credentials::CredentialError),
    /// No credential of that name is stored.
    #[error("no credential named {0:?}")]
    NoSuchCredential(String),
}

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
pub fn verify(token: &str, with: VerifyWith<'_>) -> Result<VerifyReport, CliError> {
    crate::crypto::install_providers();
    let token = token.trim();
    let mut single_key = None;
    let set = match with {
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
            set
        }
        VerifyWith::Key(path, alg) => {
            let alg =
                parse_algorithm(alg).ok_or_else(|| CliError::UnknownAlgorithm(alg.to_owned()))?;
            let key = keys::verifier_from_file(alg, path).map_err(CliError::KeyFile)?;
            // One key given: it is the key, whatever kid the token names.
            single_key = Some((key, alg));
            KeySet::default()
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
    let verified = match &single_key {
        Some((key, alg)) => {
            jwt::verify_signature(&parsed, key, *alg).map(|()| (*alg, parsed.kid.clone()))
        }
        None => jwt::verify_signature_in(&parsed, &set).map(|key| (key.alg, key.kid.clone())),
    };
    let valid = match verified {
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
    };
    Ok(VerifyReport { valid, output })
}

/// A new random API key and the config line with its SHA-256.
pub fn gen_api_key() -> Result<(String, String), CliError> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| CliError::Random)?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref());
    let hex = crate::crypto::sha256_hex(key.as_bytes());
    Ok((key, format!("key_sha256 = \"{hex}\"")))
}

/// What `warden keygen` made.
#[derive(Debug)]
pub enum Generated {
    /// A private key written to this file (PKCS#8 PEM, mode 0600).
    KeyFile(std::path::PathBuf),
    /// An HS secret (printable, its ASCII bytes are the key).
    Secret(zeroize::Zeroizing<String>),
}

/// Makes a new key for `alg`: asymmetric keys go to `out` as PKCS#8 PEM
/// (never over an existing file); HS secrets are returned to print, or
/// written to `out` for `secret_file`.
pub fn keygen(alg: &str, out: Option<&Path>) -> Result<Generated, CliError> {
    use base64::Engine;
    let alg = parse_algorithm(alg).ok_or_else(|| CliError::UnknownAlgorithm(alg.to_owned()))?;
    let der = keys::generate_der(alg).map_err(CliError::Keygen)?;
    let text = if keys::is_hmac(alg) {
        // 64 random bytes as base64url: 86 printable bytes, more than any HS hash needs.
        zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*der))
    } else {
        keys::pkcs8_pem(&der)
    };
    match out {
        None if keys::is_hmac(alg) => Ok(Generated::Secret(text)),
        None => Err(CliError::NoOutFile),
        Some(path) => {
            write_private_file(path, text.as_bytes())?;
            Ok(Generated::KeyFile(path.to_owned()))
        }
    }
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| CliError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| CliError::CreateFile {
            path: path.to_owned(),
            source,
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| CliError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Signs a token offline with the config's signing key (`warden token`).
pub fn token(
    config: &crate::Config,
    sub: &str,
    scope: &str,
    ttl: Option<std::time::Duration>,
) -> Result<String, CliError> {
    crate::crypto::install_providers();
    let settings = config
        .issuer
        .as_ref()
        .ok_or(CliError::NotConfigured("[issuer]"))?;
    let kid = settings
        .signing_kid
        .as_ref()
        .ok_or(CliError::NotConfigured("issuer.signing_kid"))?;
    let key = config
        .keys
        .iter()
        .find(|k| &k.kid == kid)
        .ok_or_else(|| CliError::UnknownKid(kid.clone()))?;
    if key.ephemeral {
        eprintln!(
            "warning: key {kid:?} is generated at start-up, so a running gateway holds another key and will refuse this token"
        );
    }
    let issuer = crate::auth::issue::TokenIssuer::new(settings, key).ok_or(CliError::CannotSign)?;
    let scopes: Vec<String> = scope.split_ascii_whitespace().map(str::to_owned).collect();
    let grant = crate::auth::issue::Grant {
        sub,
        scopes: &scopes,
        ttl,
        ..Default::default()
    };
    issuer
        .issue(&grant)
        .map(|issued| issued.token)
        .map_err(CliError::from)
}

/// The store of `config`'s `[credentials]`, opened with its master key.
pub fn credential_store(
    config: &crate::Config,
) -> Result<crate::credentials::store::Store, CliError> {
    use crate::credentials::store::{MasterKey, Store};
    let settings = config
        .credentials
        .as_ref()
        .ok_or(CliError::NotConfigured("[credentials] section"))?;
    let key = MasterKey::load(&settings.master_key)?;
    let store = Store::new(settings.store.clone(), key);
    // As at the gateway's start: copies of the store that an interrupted
    // write left behind hold its secrets, so they go at the first chance.
    match store.remove_leftovers() {
        Ok(0) => {}
        Ok(removed) => eprintln!(
            "removed {removed} temporary cop{} of the credential store left by an interrupted write",
            if removed == 1 { "y" } else { "ies" }
        ),
        Err(err) => {
            eprintln!("warning: cannot remove temporary copies of the credential store: {err}")
        }
    }
    Ok(store)
}

/// `warden credentials init`: creates an empty store under a new master
/// key and returns the key's base64, to be shown once.
pub fn credentials_init(config: &crate::Config) -> Result<zeroize::Zeroizing<String>, CliError> {
    use crate::credentials::store::{MasterKey, Store};
    let settings = config
        .credentials
        .as_ref()
        .ok_or(CliError::NotConfigured("[credentials] section"))?;
    let key = MasterKey::generate()?;
    Store::new(settings.store.clone(), key.clone()).create()?;
    Ok(key.to_base64())
}

/// `warden credentials set`: stores (or replaces) a credential.
pub fn credentials_set(
    config: &crate::Config,
    name: &str,
    input: crate::credentials::CredentialInput,
) -> Result<serde_json::Value, CliError> {
    if !crate::server::admin::is_credential_name(name) {
        return Err(CliError::CredentialName(name.to_owned()));
    }
    let store = credential_store(config)?;
    let existing = store.read()?.credentials.get(name).cloned();
    let credential = input.build(existing.as_ref()).map_err(CliError::from)?;
    let summary = credential.summary(name);
    store.update(|contents| contents.credentials.insert(name.to_owned(), credential))?;
    Ok(summary)
}

/// `warden credentials list`: one line per credential, never a secret.
pub fn credentials_list(config: &crate::Config) -> Result<String, CliError> {
    let store = credential_store(config)?;
    let contents = store.read()?;
    let mut out = format!(
        "{:<24} {:<8} {:<28} {:<20} {:<20}\n",
        "NAME", "KIND", "LOCATION", "CREATED", "UPDATED"
    );
    let time = |secs: i64| {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    for (name, credential) in &contents.credentials {
        let location = credential
            .location()
            .map_or_else(|| "-".to_owned(), |l| l.to_string());
        out.push_str(&format!(
            "{:<24} {:<8} {:<28} {:<20} {:<20}\n",
            name,
            credential.kind.name(),
            location,
            time(credential.created),
            time(credential.updated)
        ));
    }
    Ok(out)
}

/// `warden credentials remove`.
pub fn credentials_remove(config: &crate::Config, name: &str) -> Result<(), CliError> {
    let store = credential_store(config)?;
    let removed = store.update(|contents| contents.credentials.remove(name))?;
    removed
        .map(|_| ())
        .ok_or_else(|| CliError::NoSuchCredential(name.to_owned()))
}

/// `warden credentials rotate-master-key`: re-encrypts the store under a
/// new key and returns its base64, to be shown once.
pub fn credentials_rotate(config: &crate::Config) -> Result<zeroize::Zeroizing<String>, CliError> {
    use crate::credentials::store::MasterKey;
    let store = credential_store(config)?;
    let key = MasterKey::generate()?;
    store.rotate(key.clone())?;
    Ok(key.to_base64())
}
