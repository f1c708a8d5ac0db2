//! JWE algorithm names (RFC 7518 §4 and §5) and what each needs of a key.
//!
//! The leaf of `jwe/`: every other file names algorithms through here, so a
//! header's `alg` and `enc` are read one way only. [`KeyAlg`] is exactly the
//! allow-list of SPEC §12 for a configured key: `RSA1_5`, `PBES2-*`,
//! `RSA-OAEP` (SHA-1), `A128KW` and the rest are not in it and never parse.

/// A key-management algorithm (`alg`) a `[[keys]]` entry may have (SPEC §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// RSAES-OAEP with SHA-256 and MGF1 with SHA-256.
    RsaOaep256,
    /// ECDH-ES, the agreed key used directly as the CEK.
    EcdhEs,
    /// ECDH-ES, the agreed key wrapping the CEK with AES-128 Key Wrap.
    EcdhEsA128Kw,
    /// ECDH-ES, the agreed key wrapping the CEK with AES-256 Key Wrap.
    EcdhEsA256Kw,
    /// AES-256 Key Wrap with a shared secret.
    A256Kw,
    /// The shared secret is the CEK.
    Dir,
}

/// Every [`KeyAlg`], in the order the SPEC lists them.
pub const KEY_ALGS: [KeyAlg; 6] = [
    KeyAlg::RsaOaep256,
    KeyAlg::EcdhEs,
    KeyAlg::EcdhEsA128Kw,
    KeyAlg::EcdhEsA256Kw,
    KeyAlg::A256Kw,
    KeyAlg::Dir,
];

/// The names of [`KEY_ALGS`], for messages.
pub const SUPPORTED_KEY_ALGS: &str =
    "RSA-OAEP-256, ECDH-ES, ECDH-ES+A128KW, ECDH-ES+A256KW, A256KW, dir";

impl KeyAlg {
    /// Parses an `alg` exactly as JOSE spells it; `None` for anything off the allow-list.
    pub fn parse(name: &str) -> Option<Self> {
        KEY_ALGS.into_iter().find(|alg| alg.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::RsaOaep256 => "RSA-OAEP-256",
            KeyAlg::EcdhEs => "ECDH-ES",
            KeyAlg::EcdhEsA128Kw => "ECDH-ES+A128KW",
            KeyAlg::EcdhEsA256Kw => "ECDH-ES+A256KW",
            KeyAlg::A256Kw => "A256KW",
            KeyAlg::Dir => "dir",
        }
    }

    /// Whether the key is an ECDH key (P-256, P-384 or X25519).
    pub fn is_ecdh(self) -> bool {
        matches!(
            self,
            KeyAlg::EcdhEs | KeyAlg::EcdhEsA128Kw | KeyAlg::EcdhEsA256Kw
        )
    }

    /// Whether the key is a shared secret (`A256KW`, `dir`): never published.
    pub fn is_symmetric(self) -> bool {
        matches!(self, KeyAlg::A256Kw | KeyAlg::Dir)
    }

    /// Whether a compact JWE of this algorithm carries an encrypted key
    /// (`dir` and direct `ECDH-ES` must have an empty one).
    pub fn has_encrypted_key(self) -> bool {
        !matches!(self, KeyAlg::Dir | KeyAlg::EcdhEs)
    }

    /// The AES Key Wrap key size in bytes, for the algorithms that wrap.
    pub(super) fn wrap_key_len(self) -> Option<usize> {
        match self {
            KeyAlg::EcdhEsA128Kw => Some(16),
            KeyAlg::EcdhEsA256Kw | KeyAlg::A256Kw => Some(32),
            KeyAlg::RsaOaep256 | KeyAlg::EcdhEs | KeyAlg::Dir => None,
        }
    }
}

impl std::fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A content-encryption algorithm (`enc`) warden accepts (SPEC §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Enc {
    /// AES-128 in GCM mode.
    A128Gcm,
    /// AES-256 in GCM mode.
    A256Gcm,
    /// AES-128 in CBC mode with HMAC-SHA-256, tag truncated to 16 bytes.
    A128CbcHs256,
    /// AES-256 in CBC mode with HMAC-SHA-512, tag truncated to 32 bytes.
    A256CbcHs512,
}

/// Every [`Enc`].
pub const ENCS: [Enc; 4] = [
    Enc::A128Gcm,
    Enc::A256Gcm,
    Enc::A128CbcHs256,
    Enc::A256CbcHs512,
];

impl Enc {
    /// Parses an `enc` exactly as JOSE spells it.
    pub fn parse(name: &str) -> Option<Self> {
        ENCS.into_iter().find(|enc| enc.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Enc::A128Gcm => "A128GCM",
            Enc::A256Gcm => "A256GCM",
            Enc::A128CbcHs256 => "A128CBC-HS256",
            Enc::A256CbcHs512 => "A256CBC-HS512",
        }
    }

    /// The CEK length in bytes (for CBC-HS, the MAC key and the AES key together).
    pub fn key_len(self) -> usize {
        match self {
            Enc::A128Gcm => 16,
            Enc::A256Gcm | Enc::A128CbcHs256 => 32,
            Enc::A256CbcHs512 => 64,
        }
    }

    /// The IV length in bytes: 96 bits for GCM, one AES block for CBC.
    pub fn iv_len(self) -> usize {
        match self {
            Enc::A128Gcm | Enc::A256Gcm => 12,
            Enc::A128CbcHs256 | Enc::A256CbcHs512 => 16,
        }
    }

    /// The authentication tag length in bytes (for CBC-HS, the truncated HMAC).
    pub fn tag_len(self) -> usize {
        match self {
            Enc::A128Gcm | Enc::A256Gcm | Enc::A128CbcHs256 => 16,
            Enc::A256CbcHs512 => 32,
        }
    }
}

impl std::fmt::Display for Enc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The curve of an ECDH key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// X25519 (RFC 8037).
    X25519,
}

impl Curve {
    /// The JWK `crv`.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::X25519 => "X25519",
        }
    }

    /// Parses a JWK `crv`.
    pub fn parse(name: &str) -> Option<Self> {
        [Curve::P256, Curve::P384, Curve::X25519]
            .into_iter()
            .find(|curve| curve.name() == name)
    }

    /// The JWK `kty`: `EC` for the NIST curves, `OKP` for X25519.
    pub fn kty(self) -> &'static str {
        match self {
            Curve::P256 | Curve::P384 => "EC",
            Curve::X25519 => "OKP",
        }
    }

    /// The size of one coordinate (and of the private scalar) in bytes.
    pub(super) fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::X25519 => 32,
            Curve::P384 => 48,
        }
    }

    /// The aws-lc-rs agreement algorithm.
    pub(super) fn agreement(self) -> &'static aws_lc_rs::agreement::Algorithm {
        match self {
            Curve::P256 => &aws_lc_rs::agreement::ECDH_P256,
            Curve::P384 => &aws_lc_rs::agreement::ECDH_P384,
            Curve::X25519 => &aws_lc_rs::agreement::X25519,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_is_exactly_the_spec_list() {
        for alg in KEY_ALGS {
            assert_eq!(KeyAlg::parse(alg.name()), Some(alg));
        }
        for refused in [
            "RSA1_5",
            "RSA-OAEP",
            "RSA-OAEP-384",
            "A128KW",
            "A192KW",
            "A128GCMKW",
            "A256GCMKW",
            "PBES2-HS256+A128KW",
            "PBES2-HS512+A256KW",
            "ECDH-ES+A192KW",
            "DIR",
            "none",
            "",
        ] {
            assert_eq!(KeyAlg::parse(refused), None, "{refused}");
        }
        assert_eq!(
            KEY_ALGS.map(KeyAlg::name).join(", "),
            SUPPORTED_KEY_ALGS,
            "the message lists every algorithm"
        );
    }

    #[test]
    fn encs_are_exactly_the_four_of_the_spec() {
        for enc in ENCS {
            assert_eq!(Enc::parse(enc.name()), Some(enc));
        }
        for refused in ["A192GCM", "A192CBC-HS384", "a128gcm", "A128CBC-H256"] {
            assert_eq!(Enc::parse(refused), None, "{refused}");
        }
    }
}
