//! Strict base64url (RFC 7515 §2): no padding, no `+` or `/`, no whitespace,
//! and zero trailing bits, so one byte string has one encoding.
//!
//! A leaf of `jwe/`: the compact segments, the header's `apu`/`apv`/`epk`
//! and JWK members are all read through [`decode`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Decodes `text`, or `None` when it is not canonical base64url.
pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Encodes `bytes` without padding.
pub(super) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_base64url_decodes() {
        assert_eq!(decode("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("AQ"), Some(vec![1]));
        for bad in ["AQ==", "AR", "A+B/", "AQ AB", "AQAB\n", "A"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
    }
}
