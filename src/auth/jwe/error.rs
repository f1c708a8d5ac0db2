//! What can go wrong in `jwe/`: [`DecryptError`] (one text for every cause,
//! the cause itself only for logs and tests), [`JweKeyError`] (key material
//! that cannot be used) and [`EncryptError`].
//!
//! A leaf of `jwe/`. A failed decryption must not tell the client which step
//! failed (RFC 7516 §11.4 and §11.5: no padding, tag or key-unwrap oracle),
//! so [`DecryptError`]'s `Display` is the same for every [`DecryptFailure`].

/// Why a JWE was refused. For logs and tests only: callers show
/// [`DecryptError`]'s one description, never this.
///
/// A failed key unwrap (RSA-OAEP, AES-KW) is not a reason of its own: the
/// decryption goes on with a random CEK (RFC 7516 §11.5) and fails where a
/// wrong tag fails, as [`DecryptFailure::DecryptionFailed`], so that not even
/// a log or a metric built from the reason can become an oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecryptFailure {
    /// Not five base64url segments, a header that is not a JSON object
    /// (or has a member twice), or a header member of the wrong type.
    Malformed,
    /// The JWE JSON serialization, which is never accepted.
    JsonSerialization,
    /// `alg` is `RSA1_5` (RFC 3218 / Bleichenbacher).
    Rsa15Refused,
    /// `alg` is one of `PBES2-*` (a password, and a cost the sender picks).
    Pbes2Refused,
    /// `alg` is missing, or not one of SPEC §12's.
    AlgNotAllowed,
    /// `enc` is missing, or not one of SPEC §12's.
    EncNotAllowed,
    /// `zip` is present: compressed content is never accepted.
    ZipRefused,
    /// `crit` is present: no critical header parameter is implemented.
    CritRefused,
    /// No decryption key has the header's `kid`.
    UnknownKid,
    /// The key the `kid` selects has another `alg` than the header.
    AlgMismatch,
    /// No `kid`, and no decryption key has the header's `alg`.
    NoKeyForAlg,
    /// A `dir` key used with an `enc` of another key length.
    EncNotForKey,
    /// ECDH without an `epk`, or an `epk` that is not a public key.
    InvalidEpk,
    /// An `epk` on another curve than the key's.
    EpkWrongCurve,
    /// An encrypted key for `dir` or direct `ECDH-ES`.
    UnexpectedEncryptedKey,
    /// An encrypted key of the wrong length (none where one is required).
    EncryptedKeyLength,
    /// An IV of another length than the `enc`'s (12 for GCM, 16 for CBC).
    IvLength,
    /// A tag of another length than the `enc`'s (16, or 32 for A256CBC-HS512).
    TagLength,
    /// A CBC ciphertext that is not a whole number of blocks.
    CiphertextLength,
    /// The tag did not verify (after a failed unwrap too, see above).
    DecryptionFailed,
}

impl DecryptFailure {
    /// A stable code for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DecryptFailure::Malformed => "jwe_malformed",
            DecryptFailure::JsonSerialization => "jwe_json_serialization",
            DecryptFailure::Rsa15Refused => "jwe_rsa1_5_refused",
            DecryptFailure::Pbes2Refused => "jwe_pbes2_refused",
            DecryptFailure::AlgNotAllowed => "jwe_alg_not_allowed",
            DecryptFailure::EncNotAllowed => "jwe_enc_not_allowed",
            DecryptFailure::ZipRefused => "jwe_zip_refused",
            DecryptFailure::CritRefused => "jwe_crit_refused",
            DecryptFailure::UnknownKid => "jwe_unknown_kid",
            DecryptFailure::AlgMismatch => "jwe_alg_mismatch",
            DecryptFailure::NoKeyForAlg => "jwe_no_key_for_alg",
            DecryptFailure::EncNotForKey => "jwe_enc_not_for_key",
            DecryptFailure::InvalidEpk => "jwe_invalid_epk",
            DecryptFailure::EpkWrongCurve => "jwe_epk_wrong_curve",
            DecryptFailure::UnexpectedEncryptedKey => "jwe_unexpected_encrypted_key",
            DecryptFailure::EncryptedKeyLength => "jwe_encrypted_key_length",
            DecryptFailure::IvLength => "jwe_iv_length",
            DecryptFailure::TagLength => "jwe_tag_length",
            DecryptFailure::CiphertextLength => "jwe_ciphertext_length",
            DecryptFailure::DecryptionFailed => "jwe_decryption_failed",
        }
    }
}

/// The one description every refused JWE gets.
pub const DECRYPT_ERROR_DESCRIPTION: &str = "the token could not be decrypted";

/// A JWE that could not be decrypted. Its `Display` is
/// [`DECRYPT_ERROR_DESCRIPTION`] whatever the cause; [`DecryptError::reason`]
/// is for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the token could not be decrypted")]
pub struct DecryptError(DecryptFailure);

impl DecryptError {
    /// Why, for logs and tests.
    pub fn reason(&self) -> DecryptFailure {
        self.0
    }
}

impl From<DecryptFailure> for DecryptError {
    fn from(reason: DecryptFailure) -> Self {
        Self(reason)
    }
}

/// Key material that cannot be used. The text is safe to show (never key
/// bytes); [`JweKeyError::fix`] says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JweKeyError {
    /// Not a PEM document of a key of this kind.
    #[error("not a {expected} in PEM")]
    NotPem {
        /// What was expected.
        expected: &'static str,
    },
    /// The key's type does not fit the algorithm.
    #[error("a {found} key cannot be used with {alg}")]
    WrongKeyType {
        /// The algorithm asked for.
        alg: &'static str,
        /// What the key is.
        found: &'static str,
    },
    /// aws-lc-rs refused the key (an RSA key under 2048 bits, a scalar that
    /// is not in range, a point not on the curve, inconsistent components).
    #[error("the {kind} key is not usable ({reason})")]
    Rejected {
        /// The key type.
        kind: &'static str,
        /// aws-lc-rs's reason.
        reason: String,
    },
    /// An RSA key with the ROCA weakness (CVE-2017-15361).
    #[error("RSA key with the ROCA weakness (CVE-2017-15361): its private key can be recovered")]
    Roca,
    /// A secret of the wrong length for the algorithm.
    #[error("the {alg} secret is {found} bytes; it must be {expected}")]
    SecretLength {
        /// The algorithm.
        alg: &'static str,
        /// Its length.
        found: usize,
        /// The lengths allowed.
        expected: &'static str,
    },
    /// A shared secret given where a key pair is needed, or the reverse.
    #[error("{alg} takes {needs}")]
    WrongMaterial {
        /// The algorithm.
        alg: &'static str,
        /// What it takes.
        needs: &'static str,
    },
    /// A JWK that is missing a member or has one of the wrong form.
    #[error("bad JWK: {0}")]
    BadJwk(&'static str),
    /// A JWK whose `alg` or `use` says it is for something else.
    #[error("the JWK is not for {0}")]
    JwkNotFor(&'static str),
    /// The system's random source failed.
    #[error("cannot generate a key: the random source failed")]
    Random,
}

impl JweKeyError {
    /// How to fix it.
    pub fn fix(&self) -> &'static str {
        match self {
            JweKeyError::NotPem { .. } | JweKeyError::Rejected { .. } => {
                "give a PKCS#8 PEM (\"BEGIN PRIVATE KEY\"; PKCS#1 \"BEGIN RSA PRIVATE KEY\" also for RSA, SEC 1 \"BEGIN EC PRIVATE KEY\" for P-256/P-384) or, for a public key, an SPKI PEM (\"BEGIN PUBLIC KEY\"); `warden keygen` writes one"
            }
            JweKeyError::WrongKeyType { .. } => {
                "RSA-OAEP-256 takes an RSA key; ECDH-ES, ECDH-ES+A128KW and ECDH-ES+A256KW take a P-256, P-384 or X25519 key"
            }
            JweKeyError::Roca => "make a new key (`warden keygen`) and retire this one",
            JweKeyError::SecretLength { .. } => {
                "A256KW takes 32 random bytes; dir takes 16 (A128GCM), 32 (A256GCM or A128CBC-HS256) or 64 (A256CBC-HS512)"
            }
            JweKeyError::WrongMaterial { .. } => {
                "A256KW and dir keys are secrets (secret_env or secret_file); the others are key files"
            }
            JweKeyError::BadJwk(_) | JweKeyError::JwkNotFor(_) => {
                "give a JWK with the members of its kty (RFC 7518 §6), `use` \"enc\" or none, and `alg` equal to the key's or none"
            }
            JweKeyError::Random => "check the system's random source",
        }
    }
}

/// Why a token could not be encrypted: never because of the plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// A `dir` key asked for an `enc` whose CEK is of another length.
    #[error("the key cannot encrypt with this enc")]
    EncNotForKey,
    /// The system's random source failed, or aws-lc-rs refused an operation.
    #[error("the token could not be encrypted")]
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_prints_the_same_description() {
        for reason in [
            DecryptFailure::Malformed,
            DecryptFailure::Rsa15Refused,
            DecryptFailure::DecryptionFailed,
            DecryptFailure::TagLength,
        ] {
            let error = DecryptError::from(reason);
            assert_eq!(error.to_string(), DECRYPT_ERROR_DESCRIPTION);
            assert_eq!(error.reason(), reason);
        }
    }
}
