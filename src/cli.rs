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
use crate::auth::jwe::{
    self, Curve, DECRYPT_ERROR_DESCRIPTION, DecryptionKey, ENCS, Enc, EncryptError, EncryptionKey,
    JweKeyError, KeyAlg, SUPPORTED_KEY_ALGS,
};
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

fn pretty(value: &Value) -> String {
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
    /// A private key (or a secret, for `secret_file`) written to this file
    /// (PEM or text, mode 0600).
    KeyFile(std::path::PathBuf),
    /// A secret to print: an HS secret (its ASCII bytes are the key), or an
    /// `A256KW`/`dir` secret as base64url (the text `secret_env` and
    /// `secret_file` hold).
    Secret(zeroize::Zeroizing<String>),
    /// A JWE key pair: the private key written to a file, and its public
    /// half for whoever encrypts to it.
    KeyPair(KeyPair),
}

/// A new JWE key pair (`RSA-OAEP-256`, `ECDH-ES*`).
#[derive(Debug)]
pub struct KeyPair {
    /// The private key's file (PKCS#8 PEM, mode 0600).
    pub private: PathBuf,
    /// The key-management algorithm.
    pub alg: KeyAlg,
    /// The curve of an ECDH key.
    pub curve: Option<Curve>,
    /// The kid the public JWK carries.
    pub kid: String,
    /// The public key as SPKI PEM (`BEGIN PUBLIC KEY`).
    pub public_pem: String,
    /// The public key as a JWK (`use: "enc"`, `alg`, `kid`).
    pub public_jwk: Value,
    /// Where `--public-out` wrote the public key, and in which form.
    pub public_file: Option<(PathBuf, PublicForm)>,
}

/// The form of a public key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicForm {
    /// SPKI PEM (`BEGIN PUBLIC KEY`).
    Pem,
    /// A JWK.
    Jwk,
}

impl KeyPair {
    /// What `warden keygen` prints: the files written, and the forms of the
    /// public key not written to a file.
    pub fn report(&self) -> String {
        let mut out = format!("wrote {} (mode 0600)\n", self.private.display());
        let written = self.public_file.as_ref().map(|(path, form)| {
            let what = match form {
                PublicForm::Pem => "SPKI PEM",
                PublicForm::Jwk => "JWK",
            };
            out.push_str(&format!(
                "wrote {} (the public key, {what})\n",
                path.display()
            ));
            *form
        });
        if written != Some(PublicForm::Jwk) {
            out.push_str(&format!(
                "public JWK (kid {:?}; give the [[keys]] entry the same kid):\n{}\n",
                self.kid, self.public_jwk
            ));
        }
        if written != Some(PublicForm::Pem) {
            out.push_str(&format!("public key (SPKI PEM):\n{}", self.public_pem));
        }
        out
    }
}

/// What `warden keygen` is asked for.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeygenOptions<'a> {
    /// The algorithm: a signing one, or a key-management one.
    pub alg: &'a str,
    /// Where the private key (or the secret) goes.
    pub out: Option<&'a Path>,
    /// `ECDH-ES*`: `P-256` (the default), `P-384` or `X25519`.
    pub curve: Option<&'a str>,
    /// `dir`: the content encryption the secret is for (its length);
    /// `A256GCM` by default.
    pub enc: Option<&'a str>,
    /// A JWE key pair: where the public key goes (a JWK when the name ends
    /// in `.json` or `.jwk`, else SPKI PEM), never over an existing file.
    pub public_out: Option<&'a Path>,
    /// A JWE key pair: the kid of the public JWK (default: the name of
    /// `out` without its extension).
    pub kid: Option<&'a str>,
}

/// Makes a new key for `alg`: asymmetric keys go to `out` as PKCS#8 PEM
/// (never over an existing file); HS secrets are returned to print, or
/// written to `out` for `secret_file`. Key-management algorithms as
/// [`keygen_with`] makes them, with its defaults.
pub fn keygen(alg: &str, out: Option<&Path>) -> Result<Generated, CliError> {
    keygen_with(&KeygenOptions {
        alg,
        out,
        ..KeygenOptions::default()
    })
}

/// `warden keygen`: a signing key as [`keygen`] makes it; for a
/// key-management algorithm, a key pair (`RSA-OAEP-256`: RSA 2048;
/// `ECDH-ES*`: on `curve`) written to `out` with its public half returned,
/// or a shared secret (`A256KW`: 32 bytes; `dir`: the CEK length of `enc`)
/// as base64url, returned to print or written to `out`.
pub fn keygen_with(options: &KeygenOptions<'_>) -> Result<Generated, CliError> {
    let Some(alg) = KeyAlg::parse(options.alg) else {
        if parse_algorithm(options.alg).is_none() {
            return Err(CliError::UnknownKeygenAlgorithm(options.alg.to_owned()));
        }
        let jwe_only = [
            ("--curve", options.curve.is_some()),
            ("--enc", options.enc.is_some()),
            ("--public-out", options.public_out.is_some()),
            ("--kid", options.kid.is_some()),
        ];
        if let Some((flag, _)) = jwe_only.iter().find(|(_, given)| *given) {
            return Err(CliError::Option(format!(
                "{flag} is for the encryption algorithms ({SUPPORTED_KEY_ALGS}), not {}",
                options.alg
            )));
        }
        return signing_keygen(options.alg, options.out);
    };
    if alg.is_symmetric() {
        jwe_secret(alg, options)
    } else {
        jwe_key_pair(alg, options)
    }
}

fn signing_keygen(alg: &str, out: Option<&Path>) -> Result<Generated, CliError> {
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

/// An `A256KW` or `dir` secret, as base64url.
fn jwe_secret(alg: KeyAlg, options: &KeygenOptions<'_>) -> Result<Generated, CliError> {
    use base64::Engine;
    for (flag, given) in [
        ("--curve", options.curve.is_some()),
        ("--public-out", options.public_out.is_some()),
        ("--kid", options.kid.is_some()),
    ] {
        if given {
            return Err(CliError::Option(format!(
                "{flag} is for key pairs: an {alg} key is a shared secret, which has no public half"
            )));
        }
    }
    let enc = match (alg, options.enc) {
        (KeyAlg::Dir, Some(name)) => {
            Enc::parse(name).ok_or_else(|| CliError::UnknownEnc(name.to_owned()))?
        }
        (_, Some(_)) => {
            return Err(CliError::Option(
                "--enc is for dir (the secret is the content key): an A256KW secret is always 32 bytes".into(),
            ));
        }
        (_, None) => Enc::A256Gcm,
    };
    let secret = jwe::generate_secret(alg, enc).map_err(CliError::JweKey)?;
    let text =
        zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*secret));
    match options.out {
        None => Ok(Generated::Secret(text)),
        Some(path) => {
            write_private_file(path, text.as_bytes())?;
            Ok(Generated::KeyFile(path.to_owned()))
        }
    }
}

/// An `RSA-OAEP-256` or `ECDH-ES*` key pair.
fn jwe_key_pair(alg: KeyAlg, options: &KeygenOptions<'_>) -> Result<Generated, CliError> {
    let out = options.out.ok_or(CliError::NoOutFile)?;
    if options.enc.is_some() {
        return Err(CliError::Option(format!(
            "--enc is for dir secrets: an {alg} key encrypts content with any enc"
        )));
    }
    let curve = match (alg.is_ecdh(), options.curve) {
        (true, None) => Some(Curve::P256),
        (true, Some(name)) => {
            Some(Curve::parse(name).ok_or_else(|| CliError::UnknownCurve(name.to_owned()))?)
        }
        (false, Some(_)) => {
            return Err(CliError::Option(format!(
                "--curve is for ECDH-ES, ECDH-ES+A128KW and ECDH-ES+A256KW: an {alg} key is RSA (2048 bits)"
            )));
        }
        (false, None) => None,
    };
    let kid = match options.kid {
        Some(kid) => kid.to_owned(),
        None => out
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|stem| !stem.is_empty())
            .unwrap_or(alg.name())
            .to_owned(),
    };
    if kid.is_empty() || kid.len() > 128 || kid.chars().any(char::is_control) {
        return Err(CliError::Option(
            "--kid must be 1-128 printable characters".into(),
        ));
    }
    let public_form = options.public_out.map(|path| {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("json") || ext.eq_ignore_ascii_case("jwk") {
            PublicForm::Jwk
        } else {
            PublicForm::Pem
        }
    });
    if let Some(path) = options.public_out {
        // Checked before the private key is written, so a refusal leaves nothing behind.
        if path == out || path.symlink_metadata().is_ok() {
            return Err(CliError::CreateFile {
                path: path.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
    }
    let der = jwe::generate_pkcs8(alg, curve.unwrap_or(Curve::P256)).map_err(CliError::JweKey)?;
    // Read back as the config reads it: the key is checked as any would be.
    let key = DecryptionKey::from_pkcs8_der(kid.clone(), alg, &der).map_err(CliError::JweKey)?;
    let public_jwk = key.public_jwk().ok_or_else(unusable_public_half)?;
    let spki = public_spki(curve, &der)?;
    // And the public half as an encrypting party reads it.
    EncryptionKey::from_public_der(kid.clone(), alg, &spki).map_err(CliError::JweKey)?;
    let public_pem = pem("PUBLIC KEY", &spki);
    write_private_file(out, keys::pkcs8_pem(&der).as_bytes())?;
    let public_file = match (options.public_out, public_form) {
        (Some(path), Some(form)) => {
            let text = match form {
                PublicForm::Pem => public_pem.clone(),
                PublicForm::Jwk => format!("{}\n", pretty(&public_jwk)),
            };
            write_public_file(path, text.as_bytes())?;
            Some((path.to_owned(), form))
        }
        _ => None,
    };
    Ok(Generated::KeyPair(KeyPair {
        private: out.to_owned(),
        alg,
        curve,
        kid,
        public_pem,
        public_jwk,
        public_file,
    }))
}

fn unusable_public_half() -> CliError {
    CliError::JweKey(JweKeyError::Rejected {
        kind: "new",
        reason: "cannot compute its public key".into(),
    })
}

/// The SubjectPublicKeyInfo DER of a PKCS#8 key as `jwe::generate_pkcs8`
/// makes it: RSA, or a key on `curve`.
fn public_spki(curve: Option<Curve>, pkcs8: &[u8]) -> Result<Vec<u8>, CliError> {
    use aws_lc_rs::agreement;
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    let spki: PublicKeyX509Der<'static> = match curve {
        None => aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(pkcs8)
            .ok()
            .and_then(|key| key.public_key().as_der().ok()),
        Some(curve) => {
            let key = match curve {
                Curve::P256 => {
                    agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, pkcs8)
                }
                Curve::P384 => {
                    agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P384, pkcs8)
                }
                // RFC 8410 PKCS#8 v1, as `generate_pkcs8` writes it: 16 bytes, then the seed.
                Curve::X25519 => match pkcs8.get(16..).filter(|seed| seed.len() == 32) {
                    Some(seed) => agreement::PrivateKey::from_private_key(&agreement::X25519, seed),
                    None => return Err(unusable_public_half()),
                },
            };
            key.ok()
                .and_then(|key| key.compute_public_key().ok())
                .and_then(|public| public.as_der().ok())
        }
    }
    .ok_or_else(unusable_public_half)?;
    Ok(spki.as_ref().to_vec())
}

/// DER as PEM with this label, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Writes a public key file (mode 0644), never over an existing file.
fn write_public_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_new_file(path, bytes, 0o644)
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_new_file(path, bytes, 0o600)
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
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
        .mode(mode)
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
    let key = MasterKey::generate()?;
    store.rotate(key.clone())?;
    Ok(key.to_base64())
}
