//! JOSE algorithm names (RFC 7518 §3.1) and what each requires of a key.
//!
//! A leaf of `auth`: the gateway's keys, the verifier and remote JWKS all
//! name algorithms through here, so a token's `alg` is read one way only.

use std::str::FromStr;

use jsonwebtoken::Algorithm;

/// The algorithms warden signs and verifies with (SPEC §2).
pub const SUPPORTED_ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Parses an algorithm name exactly as JOSE spells it; `none` is never one.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Algorithm::from_str(name)
        .ok()
        .filter(|alg| alg_name(*alg) == name)
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        // jsonwebtoken's enum is non-exhaustive; a new variant is unsupported
        // until warden names it here.
        _ => "unsupported",
    }
}

/// Whether `alg` is an HMAC algorithm.
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The shortest HS secret allowed for `alg`: the hash's output size.
pub fn min_secret_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}
