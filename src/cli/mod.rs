//! Commands other than `run` and `check`: tools for operators.
//!
//! Each returns its output as a value, and `main.rs` prints it, so tests can
//! run the commands without a process.

mod connections;
mod keygen;
mod verify;

pub use connections::{connections_list, connections_remove};

pub use keygen::{Generated, KeyPair, KeygenOptions, PublicForm, keygen, keygen_with};
pub use verify::{DecryptWith, VerifyReport, VerifyWith, verify, verify_decrypting};

use std::path::PathBuf;

use crate::auth::alg::SUPPORTED_ALGORITHMS;
use crate::auth::issue::IssueError;
use crate::auth::jwe::{self, ENCS, Enc, EncryptError, JweKeyError, SUPPORTED_KEY_ALGS};
use crate::auth::keys::KeyError;
use crate::credentials::store::StoreError;

/// Why an operator command failed; its text is printed to the operator as it is.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An algorithm name warden does not sign or verify with.
    #[error("{0:?} is not a supported algorithm; use one of {SUPPORTED_ALGORITHMS}")]
    UnknownAlgorithm(String),
    /// An algorithm name `warden keygen` makes no key for.
    #[error(
        "{0:?} is not a supported algorithm; use one of {SUPPORTED_ALGORITHMS} to sign, or {SUPPORTED_KEY_ALGS} to encrypt"
    )]
    UnknownKeygenAlgorithm(String),
    /// A key-management algorithm name warden does not decrypt with.
    #[error("{0:?} is not a supported key-management algorithm; use one of {SUPPORTED_KEY_ALGS}")]
    UnknownKeyAlgorithm(String),
    /// A content-encryption algorithm name warden does not use.
    #[error(
        "{0:?} is not a supported content encryption; use one of A128GCM, A256GCM, A128CBC-HS256, A256CBC-HS512"
    )]
    UnknownEnc(String),
    /// A curve name warden makes no ECDH key on.
    #[error("{0:?} is not a supported curve; use P-256, P-384 or X25519")]
    UnknownCurve(String),
    /// An option that does not go with the others given.
    #[error("{0}")]
    Option(String),
    /// A JWE key that cannot be made or used, and how to fix it.
    #[error("{0} ({fix})", fix = .0.fix())]
    JweKey(JweKeyError),
    /// A token that could not be encrypted.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// `--encrypt-to` names a key that signs or verifies.
    #[error(
        "key {0:?} is a signing key: it never encrypts; give the kid of a [[keys]] entry with a key-management alg ({SUPPORTED_KEY_ALGS})"
    )]
    NotAnEncryptionKey(String),
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
    /// The connection vault failed.
    #[error("connection vault: {0}")]
    Vault(String),
    /// No record to remove.
    #[error("connection {0:?} has no record for subject {1:?}")]
    NoSuchConnection(String, String),
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
    if let Some(asked) = ttl.filter(|t| *t > settings.max_ttl) {
        eprintln!(
            "warning: --ttl {} is longer than issuer.max_ttl; the token lives {} (raise issuer.max_ttl for longer tokens)",
            humantime::format_duration(asked),
            humantime::format_duration(settings.max_ttl)
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

/// `warden token --encrypt-to KID`: `jws` (a token [`token`] signed)
/// encrypted to the `[[keys]]` entry `kid`, as a nested JWT (`cty: "JWT"`):
/// to an upstream's public key (`public_key_file`), as an `upstream_token`
/// with `encrypt_to` sends it, or to one of the gateway's own decryption
/// keys (its public half; for `A256KW` and `dir`, the shared secret), so
/// the gateway accepts it. The content is encrypted with `A256GCM`, except
/// with a `dir` secret of another length: then the `enc` of that length.
pub fn encrypt_token(config: &crate::Config, kid: &str, jws: &str) -> Result<String, CliError> {
    crate::crypto::install_providers();
    if let Some(key) = config.encryption_keys.iter().find(|k| k.kid() == kid) {
        return jwe::encrypt(key, jws.as_bytes()).map_err(CliError::from);
    }
    if let Some(own) = config.decryption_keys.iter().find(|k| k.kid() == kid) {
        let key = own.encryption_key().map_err(CliError::JweKey)?;
        let enc = [Enc::A256Gcm]
            .into_iter()
            .chain(ENCS)
            .find(|enc| own.accepts_enc(*enc))
            .ok_or(CliError::Encrypt(EncryptError::EncNotForKey))?;
        return jwe::encrypt_with(&key, enc, Some("JWT"), jws.as_bytes()).map_err(CliError::from);
    }
    if config.keys.iter().any(|k| k.kid == kid) {
        return Err(CliError::NotAnEncryptionKey(kid.to_owned()));
    }
    Err(CliError::UnknownKid(kid.to_owned()))
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
    let old = config
        .credentials
        .as_ref()
        .map(|c| MasterKey::load(&c.master_key))
        .ok_or(CliError::NotConfigured("[credentials] section"))??;
    let key = MasterKey::generate()?;
    // The users' connection records are sealed under the same key.
    connections::reseal_then(config, &old, &key, || {
        store.rotate(key.clone()).map(drop).map_err(CliError::from)
    })?;
    Ok(key.to_base64())
}
