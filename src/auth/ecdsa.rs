//! ECDSA signatures in one encoding: low `s` only (SPEC §16).
//!
//! For every valid ECDSA signature `(r, s)` the pair `(r, n − s)` is valid
//! too, so one signed token has two encodings that both verify: a cache, a
//! replay check or a deny-list keyed on the token's bytes sees two tokens.
//! warden refuses the high-`s` twin (`s > n/2`) of ES256/ES384 signatures,
//! and signs its own tokens with the low `s`, so they always pass. A trusted
//! issuer whose signer does not normalise (most do not) is let through only
//! with `accept_high_s = true`.

use jsonwebtoken::Algorithm;

/// The order of the P-256 group (FIPS 186-5, SEC 2).
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The order of the P-384 group.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// `⌊n/2⌋` of a big-endian `n`, made at compile time: the largest low `s`.
const fn half<const N: usize>(n: [u8; N]) -> [u8; N] {
    let mut half = [0u8; N];
    let mut carry = 0u8;
    let mut i = 0;
    while i < N {
        half[i] = (carry << 7) | (n[i] >> 1);
        carry = n[i] & 1;
        i += 1;
    }
    half
}

const P256_HALF_ORDER: [u8; 32] = half(P256_ORDER);
const P384_HALF_ORDER: [u8; 48] = half(P384_ORDER);

/// The group order and its half for an ECDSA algorithm (each the size of
/// `r` and `s`).
fn order(alg: Algorithm) -> Option<(&'static [u8], &'static [u8])> {
    match alg {
        Algorithm::ES256 => Some((&P256_ORDER, &P256_HALF_ORDER)),
        Algorithm::ES384 => Some((&P384_ORDER, &P384_HALF_ORDER)),
        _ => None,
    }
}

/// Whether `signature` (JOSE's fixed `r || s`) is an ES256/ES384 signature
/// with a high `s`. Any other algorithm, or a signature of the wrong length
/// (which the verifier refuses anyway), is not.
pub fn has_high_s(alg: Algorithm, signature: &[u8]) -> bool {
    let Some((n, half)) = order(alg) else {
        return false;
    };
    if signature.len() != 2 * n.len() {
        return false;
    }
    // Equal lengths make the byte-wise comparison a numeric one.
    &signature[n.len()..] > half
}

/// Rewrites a high `s` of an ES256/ES384 `signature` as `n − s`, the same
/// signature in its low form. Anything else is left as it is.
pub fn to_low_s(alg: Algorithm, signature: &mut [u8]) {
    if !has_high_s(alg, signature) {
        return;
    }
    let Some((n, _)) = order(alg) else {
        return;
    };
    let s = &mut signature[n.len()..];
    let mut borrow = 0i16;
    for i in (0..n.len()).rev() {
        let mut digit = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = 0;
        if digit < 0 {
            digit += 256;
            borrow = 1;
        }
        s[i] = u8::try_from(digit).unwrap_or(0);
    }
}

/// A compact JWS's signature segment (base64url) in its low-`s` form: the
/// segment as it is for any other algorithm, or if it does not decode.
pub fn low_s_segment(alg: Algorithm, segment: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match URL_SAFE_NO_PAD.decode(segment) {
        Ok(mut signature) if has_high_s(alg, &signature) => {
            to_low_s(alg, &mut signature);
            URL_SAFE_NO_PAD.encode(signature)
        }
        _ => segment.to_owned(),
    }
}

/// A compact JWS with its signature in the low-`s` form.
pub fn low_s_token(alg: Algorithm, token: &str) -> String {
    match token.rsplit_once('.') {
        Some((input, segment)) => format!("{input}.{}", low_s_segment(alg, segment)),
        None => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(alg: Algorithm, s: &[u8]) -> Vec<u8> {
        let len = order(alg).map_or(0, |(n, _)| n.len());
        let mut sig = vec![0x11; len];
        let mut padded = vec![0u8; len - s.len()];
        padded.extend_from_slice(s);
        sig.extend_from_slice(&padded);
        sig
    }

    #[test]
    fn the_boundary_is_half_the_group_order() {
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            let n = order(alg).map_or(&[][..], |(n, _)| n).to_vec();
            // ⌊n/2⌋ worked out here on its own, not read from the constant.
            let mut half = vec![0u8; n.len()];
            let mut carry = 0;
            for (i, &b) in n.iter().enumerate() {
                half[i] = (carry << 7) | (b >> 1);
                carry = b & 1;
            }
            assert!(
                !has_high_s(alg, &signature(alg, &half)),
                "{alg:?}: n/2 is low"
            );
            let mut above = half.clone();
            if let Some(last) = above.last_mut() {
                *last += 1;
            }
            assert!(
                has_high_s(alg, &signature(alg, &above)),
                "{alg:?}: n/2 + 1 is high"
            );
            assert!(!has_high_s(alg, &signature(alg, &[1])), "{alg:?}: 1 is low");
        }
    }

    #[test]
    fn the_low_form_of_a_high_s_is_n_minus_s_and_is_low() {
        let alg = Algorithm::ES256;
        let n = P256_ORDER;
        // s = n − 1 is the highest s; its twin is 1.
        let mut high = n;
        high[31] -= 1;
        let mut sig = signature(alg, &high);
        assert!(has_high_s(alg, &sig));
        to_low_s(alg, &mut sig);
        assert_eq!(sig[32..].to_vec(), signature(alg, &[1])[32..].to_vec());
        assert!(!has_high_s(alg, &sig));
        // A low s is left alone, and so is r.
        let before = sig.clone();
        to_low_s(alg, &mut sig);
        assert_eq!(sig, before);
    }

    #[test]
    fn other_algorithms_and_odd_lengths_are_not_judged() {
        assert!(!has_high_s(Algorithm::RS256, &[0xff; 64]));
        assert!(!has_high_s(Algorithm::ES256, &[0xff; 63]));
    }
}
