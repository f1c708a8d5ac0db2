//! `warden keygen`: signing keys, encryption key pairs (with their public
//! halves as JWK and SPKI PEM) and shared secrets, written without
//! overwriting anything.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::CliError;
use super::verify::pretty;
use crate::auth::alg::parse_algorithm;
use crate::auth::jwe::{
    self, Curve, DecryptionKey, Enc, EncryptionKey, JweKeyError, KeyAlg, SUPPORTED_KEY_ALGS,
};
use crate::auth::keys::{self};

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
