//! Who may log in, and how their secrets are checked.
//!
//! - API keys are stored as SHA-256 digests and compared in constant time,
//!   against every key, so timing does not tell which key (if any) matched.
//! - Passwords are argon2id PHC strings. An unknown user is checked against
//!   a dummy hash, so it costs what a wrong password costs. Verification
//!   runs on blocking threads, at most one per core at once
//!   ([`PasswordChecker`], on the pool of [`super::hashing`]): argon2 is
//!   slow and takes 19 MiB by design.
//!
//! Also `warden hash-password` ([`hash_password`]) and the start-up warning
//! about demo credentials ([`demo_credentials`]).
//!
//! Produces no responses and reads no extensions: the login flow turns the
//! outcome of a check into an answer.

use std::sync::OnceLock;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::LoginSettings;
use crate::crypto::sha256;

/// An API key that may log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    /// The key's id (the client id for client credentials).
    pub id: String,
    /// SHA-256 of the key.
    pub key_sha256: [u8; 32],
    /// `sub` of its tokens.
    pub sub: String,
    /// `role` of its tokens.
    pub role: Option<String>,
    /// The scopes it may have.
    pub scopes: Vec<String>,
    /// Extra claims for its tokens.
    pub claims: Map<String, Value>,
}

/// A user who may log in with Basic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    /// The user name (and `sub` of the user's tokens).
    pub username: String,
    /// The argon2id PHC string.
    pub password_argon2: String,
    /// `role` of the user's tokens.
    pub role: Option<String>,
    /// The scopes the user may have.
    pub scopes: Vec<String>,
    /// Extra claims for the user's tokens.
    pub claims: Map<String, Value>,
}

/// The demo API key of the repo's `gateway.toml` (never for production).
pub const DEMO_API_KEY: &str = "demo-api-key-not-for-production";
/// The password of the demo user `demo` in the repo's `gateway.toml`.
pub const DEMO_PASSWORD: &str = "demo-password";

/// Warnings for demo credentials left in a config: an API key whose digest
/// is that of [`DEMO_API_KEY`], a user `demo` whose password is [`DEMO_PASSWORD`].
pub fn demo_credentials(settings: &LoginSettings) -> Vec<String> {
    let mut found = Vec::new();
    let demo_digest = sha256(DEMO_API_KEY.as_bytes());
    for key in &settings.api_keys {
        if bool::from(key.key_sha256.ct_eq(&demo_digest)) {
            found.push(format!(
                "API key {:?} is the demo key {DEMO_API_KEY:?}",
                key.id
            ));
        }
    }
    for user in settings.users.iter().filter(|u| u.username == "demo") {
        if verify_password(DEMO_PASSWORD.as_bytes(), &user.password_argon2) {
            found.push(format!(
                "user \"demo\" has the demo password {DEMO_PASSWORD:?}"
            ));
        }
    }
    found
}

/// Why [`hash_password`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HashPasswordError {
    /// No salt could be drawn.
    #[error("the system's random source failed")]
    Random,
    /// argon2 refused the input or its parameters.
    #[error(transparent)]
    Argon2(#[from] argon2::password_hash::Error),
}

/// Hashes a password the way `warden hash-password` does: argon2id with
/// OWASP's parameters (m = 19 MiB, t = 2, p = 1), salt from aws-lc-rs.
pub fn hash_password(password: &[u8]) -> Result<String, HashPasswordError> {
    use argon2::PasswordHasher;
    use aws_lc_rs::rand::SecureRandom;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| HashPasswordError::Random)?;
    let hash = argon2::Argon2::default().hash_password_with_salt(password, &salt)?;
    Ok(hash.to_string())
}

/// A hash of no one's password, so an unknown user costs what a wrong
/// password costs.
/// Verifies on the calling thread, with a buffer of its own: for the
/// start-up check of demo credentials, never for a request.
fn verify_password(password: &[u8], phc: &str) -> bool {
    super::hashing::verify_with(&mut Vec::new(), password, phc)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"warden: no such user").unwrap_or_default())
}

/// Verifies passwords off the async workers on the bounded pool of
/// [`super::hashing`], no more waiting at once than there are pool threads,
/// so a burst of logins can neither starve the proxy nor grow memory.
#[derive(Debug)]
pub(super) struct PasswordChecker {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl PasswordChecker {
    pub(super) fn new() -> Self {
        // Warm the dummy hash now, not on the first unknown user.
        let _ = dummy_hash();
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(super::hashing::WORKERS)),
        }
    }

    /// Whether `password` is `user`'s. With no such user it is checked
    /// against the dummy hash (and is never right), at the same cost.
    pub(super) async fn verify(
        &self,
        user: Option<&UserIdentity>,
        password: Zeroizing<String>,
    ) -> bool {
        let phc = user.map_or_else(|| dummy_hash().to_owned(), |u| u.password_argon2.clone());
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return false;
        };
        let ok = super::hashing::verify(password, phc, slot).await;
        ok && user.is_some()
    }
}

/// The API key that `secret` is. Every key is compared, without stopping at
/// a match, so the time taken does not tell which one matched.
pub(super) fn api_key_by_secret<'a>(
    keys: &'a [ApiKeyIdentity],
    secret: &[u8],
) -> Option<&'a ApiKeyIdentity> {
    let digest = sha256(secret);
    let mut found = None;
    for identity in keys {
        if bool::from(identity.key_sha256.ct_eq(&digest)) {
            found = Some(identity);
        }
    }
    found
}

/// Whether `secret` is the key of `client`. An unknown client is compared
/// against an all-zero digest, so it costs what a wrong secret costs.
pub(super) fn client_secret_matches(client: Option<&ApiKeyIdentity>, secret: &[u8]) -> bool {
    let expected = client.map_or([0u8; 32], |k| k.key_sha256);
    bool::from(expected.ct_eq(&sha256(secret))) && client.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_verify_and_wrong_passwords_do_not() {
        let hash = hash_password(b"correct horse").unwrap_or_default();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(b"correct horse", &hash));
        assert!(!verify_password(b"battery staple", &hash));
    }
}
