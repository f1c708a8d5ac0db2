//! The key-management primitives of RFC 7518 §4, composed from aws-lc-rs:
//! RSAES-OAEP (§4.3), AES Key Wrap (§4.4) and ECDH-ES with the Concat KDF
//! (§4.6), for both directions.
//!
//! Below `decrypt.rs` and `encrypt.rs`, above `alg.rs`. Only these functions
//! touch a key-encryption key. An unwrap never fails on a wrong key or a
//! tampered encrypted key: it returns a random CEK of the right length
//! instead (RFC 7516 §11.5, RFC 3218 §2.3.2), so the caller goes on to the
//! content decryption, whose tag check then fails like any other. RSA-OAEP
//! with SHA-1 is here only so that RFC 7520's vectors can be checked; no
//! configured key can use it ([`super::KeyAlg`] has no such variant).

use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use aws_lc_rs::kdf::{SskdfDigestAlgorithmId, get_sskdf_digest_algorithm, sskdf_digest};
use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrap};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::alg::Curve;
use super::error::{DecryptFailure, EncryptError};

/// The hash of RSAES-OAEP (and of its MGF1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OaepHash {
    /// `RSA-OAEP`: only for RFC 7520's vectors, in the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Sha1,
    /// `RSA-OAEP-256`.
    Sha256,
}

impl OaepHash {
    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            OaepHash::Sha1 => &OAEP_SHA1_MGF1SHA1,
            OaepHash::Sha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// `len` bytes from the system's random source.
pub(super) fn random_bytes(len: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(bytes)
}

/// `unwrapped` when it is `Some` and `cek_len` long, else `fallback`; in
/// constant time as far as the bytes go (RFC 7516 §11.5: the random CEK is
/// made before the unwrap, and both paths copy the same bytes).
fn select_cek(
    unwrapped: Option<&[u8]>,
    fallback: Zeroizing<Vec<u8>>,
    cek_len: usize,
) -> Zeroizing<Vec<u8>> {
    let empty: &[u8] = &[];
    let candidate = unwrapped.unwrap_or(empty);
    let usable = subtle::Choice::from(u8::from(unwrapped.is_some()))
        & (candidate.len() as u64).ct_eq(&(cek_len as u64));
    let mut out = fallback;
    for (i, byte) in out.iter_mut().enumerate() {
        let unwrapped_byte = candidate.get(i).copied().unwrap_or(0);
        *byte = u8::conditional_select(byte, &unwrapped_byte, usable);
    }
    out
}

/// RSAES-OAEP decryption of the CEK (RFC 7518 §4.3). On any failure (a
/// wrong key, a tampered encrypted key, a CEK of another length than
/// `cek_len`) the CEK is random; `Err` only when the random source fails.
pub(super) fn rsa_oaep_unwrap(
    key: &PrivateDecryptingKey,
    hash: OaepHash,
    encrypted_key: &[u8],
    cek_len: usize,
) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    let fallback = random_bytes(cek_len).ok_or(DecryptFailure::DecryptionFailed)?;
    let oaep =
        OaepPrivateDecryptingKey::new(key.clone()).map_err(|_| DecryptFailure::DecryptionFailed)?;
    let mut out = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let unwrapped = oaep
        .decrypt(hash.algorithm(), encrypted_key, &mut out, None)
        .ok()
        .map(|plain| &*plain);
    Ok(select_cek(unwrapped, fallback, cek_len))
}

/// RSAES-OAEP encryption of the CEK to `key`.
pub(super) fn rsa_oaep_wrap(
    key: &PublicEncryptingKey,
    hash: OaepHash,
    cek: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let oaep = OaepPublicEncryptingKey::new(key.clone()).map_err(|_| EncryptError::Failed)?;
    let mut out = vec![0u8; oaep.ciphertext_size()];
    let len = oaep
        .encrypt(hash.algorithm(), cek, &mut out, None)
        .map_err(|_| EncryptError::Failed)?
        .len();
    out.truncate(len);
    Ok(out)
}

fn kek(key: &[u8]) -> Option<AesKek> {
    let cipher = match key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return None,
    };
    AesKek::new(cipher, key).ok()
}

/// AES Key Wrap (RFC 3394) unwrapping of the CEK with `kek_bytes` (16 or
/// 32 bytes). The caller has checked that `encrypted_key` is `cek_len + 8`
/// bytes (a public fact); an integrity failure yields a random CEK.
pub(super) fn aes_kw_unwrap(
    kek_bytes: &[u8],
    encrypted_key: &[u8],
    cek_len: usize,
) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    let fallback = random_bytes(cek_len).ok_or(DecryptFailure::DecryptionFailed)?;
    let kek = kek(kek_bytes).ok_or(DecryptFailure::DecryptionFailed)?;
    let mut out = Zeroizing::new(vec![0u8; encrypted_key.len().saturating_sub(8)]);
    let unwrapped = kek
        .unwrap(encrypted_key, &mut out)
        .ok()
        .map(|plain| &*plain);
    Ok(select_cek(unwrapped, fallback, cek_len))
}

/// AES Key Wrap of the CEK with `kek_bytes` (16 or 32 bytes).
pub(super) fn aes_kw_wrap(kek_bytes: &[u8], cek: &[u8]) -> Result<Vec<u8>, EncryptError> {
    let kek = kek(kek_bytes).ok_or(EncryptError::Failed)?;
    let mut out = vec![0u8; cek.len() + 8];
    let len = kek
        .wrap(cek, &mut out)
        .map_err(|_| EncryptError::Failed)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// The Concat KDF of RFC 7518 §4.6.2 (NIST SP 800-56A, with SHA-256): the
/// `OtherInfo` is AlgorithmID, PartyUInfo, PartyVInfo (each with a 32-bit
/// big-endian length) and SuppPubInfo (the key length in bits).
pub(super) fn concat_kdf(
    shared_secret: &[u8],
    algorithm_id: &str,
    apu: &[u8],
    apv: &[u8],
    key_len: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    let length = |bytes: &[u8]| u32::try_from(bytes.len()).ok().map(u32::to_be_bytes);
    let mut info = Vec::with_capacity(16 + algorithm_id.len() + apu.len() + apv.len());
    for part in [algorithm_id.as_bytes(), apu, apv] {
        info.extend_from_slice(&length(part)?);
        info.extend_from_slice(part);
    }
    let key_bits = u32::try_from(key_len.checked_mul(8)?).ok()?;
    info.extend_from_slice(&key_bits.to_be_bytes());
    let algorithm = get_sskdf_digest_algorithm(SskdfDigestAlgorithmId::Sha256)?;
    let mut out = Zeroizing::new(vec![0u8; key_len]);
    sskdf_digest(algorithm, shared_secret, &info, &mut out).ok()?;
    Some(out)
}

/// What the Concat KDF is given besides the shared secret.
#[derive(Clone, Copy, Debug)]
pub(super) struct KdfInput<'a> {
    /// `enc` for direct ECDH-ES, `alg` for ECDH-ES+AxxxKW.
    pub algorithm_id: &'a str,
    /// `apu`, decoded (empty when absent).
    pub apu: &'a [u8],
    /// `apv`, decoded (empty when absent).
    pub apv: &'a [u8],
    /// The length of the key to derive, in bytes.
    pub key_len: usize,
}

/// ECDH of `private` with the sender's `epk` (an uncompressed point for the
/// NIST curves, 32 bytes for X25519), then the Concat KDF. aws-lc-rs checks
/// that the point is on the curve, and refuses X25519's low-order points
/// (an all-zero shared secret).
pub(super) fn ecdh_derive(
    private: &agreement::PrivateKey,
    curve: Curve,
    epk: &[u8],
    kdf: KdfInput<'_>,
) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    let peer = UnparsedPublicKey::new(curve.agreement(), epk);
    agreement::agree(private, peer, DecryptFailure::InvalidEpk, |z| {
        concat_kdf(z, kdf.algorithm_id, kdf.apu, kdf.apv, kdf.key_len)
            .ok_or(DecryptFailure::DecryptionFailed)
    })
}

/// A fresh ephemeral key on `curve`, agreed with the recipient's public
/// key: the derived key, and the ephemeral public key (uncompressed point,
/// or 32 bytes for X25519) for the header's `epk`.
pub(super) fn ecdh_ephemeral(
    curve: Curve,
    recipient: &agreement::ParsedPublicKey,
    kdf: KdfInput<'_>,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), EncryptError> {
    let ephemeral =
        agreement::PrivateKey::generate(curve.agreement()).map_err(|_| EncryptError::Failed)?;
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| EncryptError::Failed)?
        .as_ref()
        .to_vec();
    let derived = agreement::agree(&ephemeral, recipient.clone(), EncryptError::Failed, |z| {
        concat_kdf(z, kdf.algorithm_id, kdf.apu, kdf.apv, kdf.key_len).ok_or(EncryptError::Failed)
    })?;
    Ok((derived, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn concat_kdf_matches_rfc_7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES with A128GCM, apu "Alice", apv "Bob".
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let key = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 16).expect("derives");
        assert_eq!(
            key.as_slice(),
            [
                86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167, 16, 26
            ]
        );
    }

    #[test]
    fn aes_key_wrap_matches_rfc_3394() {
        // RFC 3394 §4.6: 256-bit KEK, 256-bit key data.
        let kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let data = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let wrapped = aes_kw_wrap(&kek, &data).expect("wraps");
        assert_eq!(
            wrapped,
            hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
        );
        let unwrapped = aes_kw_unwrap(&kek, &wrapped, 32).expect("random source");
        assert_eq!(unwrapped.as_slice(), data);
    }

    #[test]
    fn a_failed_unwrap_yields_a_random_cek_of_the_right_length() {
        let kek = [7u8; 32];
        let mut wrapped = aes_kw_wrap(&kek, &[1u8; 32]).expect("wraps");
        wrapped[3] ^= 1;
        let first = aes_kw_unwrap(&kek, &wrapped, 32).expect("random source");
        let second = aes_kw_unwrap(&kek, &wrapped, 32).expect("random source");
        assert_eq!(first.len(), 32);
        assert_ne!(first.as_slice(), [1u8; 32]);
        assert_ne!(
            first.as_slice(),
            second.as_slice(),
            "fresh randomness each time"
        );
        // A CEK of the wrong length is replaced as well.
        let wrapped = aes_kw_wrap(&kek, &[1u8; 16]).expect("wraps");
        assert_eq!(aes_kw_unwrap(&kek, &wrapped, 32).expect("random").len(), 32);
    }

    #[test]
    fn rsa_oaep_round_trips_and_fails_to_a_random_cek() {
        let key =
            PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generates");
        let cek = [9u8; 32];
        let wrapped = rsa_oaep_wrap(&key.public_key(), OaepHash::Sha256, &cek).expect("wraps");
        let unwrapped = rsa_oaep_unwrap(&key, OaepHash::Sha256, &wrapped, 32).expect("random");
        assert_eq!(unwrapped.as_slice(), cek);
        // The wrong hash, a wrong length, a flipped bit: random CEKs.
        let other = rsa_oaep_unwrap(&key, OaepHash::Sha1, &wrapped, 32).expect("random");
        assert_ne!(other.as_slice(), cek);
        let short = rsa_oaep_unwrap(&key, OaepHash::Sha256, &wrapped, 16).expect("random");
        assert_eq!(short.len(), 16);
        assert_ne!(short.as_slice(), &cek[..16]);
        let mut flipped = wrapped.clone();
        flipped[10] ^= 0x80;
        let bad = rsa_oaep_unwrap(&key, OaepHash::Sha256, &flipped, 32).expect("random");
        assert_ne!(bad.as_slice(), cek);
        let truncated = rsa_oaep_unwrap(&key, OaepHash::Sha256, &wrapped[1..], 32);
        assert_eq!(truncated.expect("random").len(), 32);
    }
}
