//! Content encryption (RFC 7518 §5): AES-GCM, and AES-CBC with HMAC-SHA-2
//! (the composite of §5.2), both directions, from aws-lc-rs.
//!
//! Below `decrypt.rs` and `encrypt.rs`, above `alg.rs`. The AAD is what the
//! caller passes: for a compact JWE, the ASCII of the protected header
//! segment exactly as received. For CBC-HS the HMAC over AAD, IV,
//! ciphertext and the AAD's length in bits is compared in constant time
//! before anything is decrypted, so a padding error can never be observed
//! apart from a tag error.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use super::alg::Enc;
use super::error::{DecryptFailure, EncryptError};
use super::primitives::random_bytes;

/// A sealed content: IV, ciphertext and tag.
#[derive(Debug)]
pub(super) struct Sealed {
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

fn gcm_key(enc: Enc, cek: &[u8]) -> Option<LessSafeKey> {
    let algorithm = match enc {
        Enc::A128Gcm => &AES_128_GCM,
        Enc::A256Gcm => &AES_256_GCM,
        Enc::A128CbcHs256 | Enc::A256CbcHs512 => return None,
    };
    UnboundKey::new(algorithm, cek).ok().map(LessSafeKey::new)
}

/// The MAC key, the AES key and the HMAC of a CBC-HS CEK (RFC 7518 §5.2.2.1:
/// the first half authenticates, the second half encrypts).
fn cbc_keys(enc: Enc, cek: &[u8]) -> Option<(hmac::Key, UnboundCipherKey)> {
    let (mac, cipher) = match enc {
        Enc::A128CbcHs256 => (hmac::HMAC_SHA256, &AES_128),
        Enc::A256CbcHs512 => (hmac::HMAC_SHA512, &AES_256),
        Enc::A128Gcm | Enc::A256Gcm => return None,
    };
    let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
    Some((
        hmac::Key::new(mac, mac_key),
        UnboundCipherKey::new(cipher, enc_key).ok()?,
    ))
}

/// The CBC-HS tag: HMAC(MAC_KEY, A || IV || E || AL), truncated to T_LEN.
fn cbc_tag(enc: Enc, mac_key: &hmac::Key, aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let aad_bits = (aad.len() as u64).saturating_mul(8);
    let mut context = hmac::Context::with_key(mac_key);
    context.update(aad);
    context.update(iv);
    context.update(ciphertext);
    context.update(&aad_bits.to_be_bytes());
    let tag = context.sign();
    tag.as_ref()[..enc.tag_len()].to_vec()
}

/// Decrypts and authenticates. The caller has checked the lengths of the
/// CEK, IV and tag against `enc`; they are checked again here, so no input
/// can make aws-lc-rs misbehave.
pub(super) fn open(
    enc: Enc,
    cek: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, DecryptFailure> {
    if cek.len() != enc.key_len() {
        return Err(DecryptFailure::DecryptionFailed);
    }
    if iv.len() != enc.iv_len() {
        return Err(DecryptFailure::IvLength);
    }
    if tag.len() != enc.tag_len() {
        return Err(DecryptFailure::TagLength);
    }
    let failed = DecryptFailure::DecryptionFailed;
    match enc {
        Enc::A128Gcm | Enc::A256Gcm => {
            let key = gcm_key(enc, cek).ok_or(failed)?;
            let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| failed)?;
            let mut in_out = ciphertext.to_vec();
            let len = key
                .open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut in_out)
                .map_err(|_| failed)?
                .len();
            in_out.truncate(len);
            Ok(in_out)
        }
        Enc::A128CbcHs256 | Enc::A256CbcHs512 => {
            if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
                return Err(DecryptFailure::CiphertextLength);
            }
            let (mac_key, cipher_key) = cbc_keys(enc, cek).ok_or(failed)?;
            let expected = cbc_tag(enc, &mac_key, aad, iv, ciphertext);
            verify_slices_are_equal(&expected, tag).map_err(|_| failed)?;
            let iv: [u8; 16] = iv.try_into().map_err(|_| failed)?;
            let key = PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key).map_err(|_| failed)?;
            let mut in_out = ciphertext.to_vec();
            let context = DecryptionContext::Iv128(FixedLength::from(iv));
            let len = key.decrypt(&mut in_out, context).map_err(|_| failed)?.len();
            in_out.truncate(len);
            Ok(in_out)
        }
    }
}

/// Encrypts with a fresh random IV.
pub(super) fn seal(
    enc: Enc,
    cek: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, EncryptError> {
    if cek.len() != enc.key_len() {
        return Err(EncryptError::Failed);
    }
    let iv = random_bytes(enc.iv_len())
        .ok_or(EncryptError::Failed)?
        .to_vec();
    match enc {
        Enc::A128Gcm | Enc::A256Gcm => {
            let key = gcm_key(enc, cek).ok_or(EncryptError::Failed)?;
            let nonce = Nonce::try_assume_unique_for_key(&iv).map_err(|_| EncryptError::Failed)?;
            let mut ciphertext = plaintext.to_vec();
            let tag = key
                .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut ciphertext)
                .map_err(|_| EncryptError::Failed)?;
            Ok(Sealed {
                iv,
                ciphertext,
                tag: tag.as_ref().to_vec(),
            })
        }
        Enc::A128CbcHs256 | Enc::A256CbcHs512 => {
            let (mac_key, cipher_key) = cbc_keys(enc, cek).ok_or(EncryptError::Failed)?;
            let key = PaddedBlockEncryptingKey::cbc_pkcs7(cipher_key)
                .map_err(|_| EncryptError::Failed)?;
            let block: [u8; 16] = iv.as_slice().try_into().map_err(|_| EncryptError::Failed)?;
            let mut ciphertext = plaintext.to_vec();
            let context = EncryptionContext::Iv128(FixedLength::from(block));
            key.less_safe_encrypt(&mut ciphertext, context)
                .map_err(|_| EncryptError::Failed)?;
            let tag = cbc_tag(enc, &mac_key, aad, &iv, &ciphertext);
            Ok(Sealed {
                iv,
                ciphertext,
                tag,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwe::alg::ENCS;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn a128cbc_hs256_matches_rfc_7518_appendix_b1() {
        let key = hex("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
             10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f");
        let plaintext = hex("41 20 63 69 70 68 65 72 20 73 79 73 74 65 6d 20
             6d 75 73 74 20 6e 6f 74 20 62 65 20 72 65 71 75
             69 72 65 64 20 74 6f 20 62 65 20 73 65 63 72 65
             74 2c 20 61 6e 64 20 69 74 20 6d 75 73 74 20 62
             65 20 61 62 6c 65 20 74 6f 20 66 61 6c 6c 20 69
             6e 74 6f 20 74 68 65 20 68 61 6e 64 73 20 6f 66
             20 74 68 65 20 65 6e 65 6d 79 20 77 69 74 68 6f
             75 74 20 69 6e 63 6f 6e 76 65 6e 69 65 6e 63 65");
        let iv = hex("1a f3 8c 2d c2 b9 6f fd d8 66 94 09 23 41 bc 04");
        let aad = hex("54 68 65 20 73 65 63 6f 6e 64 20 70 72 69 6e 63
             69 70 6c 65 20 6f 66 20 41 75 67 75 73 74 65 20
             4b 65 72 63 6b 68 6f 66 66 73");
        let ciphertext = hex("c8 0e df a3 2d df 39 d5 ef 00 c0 b4 68 83 42 79
             a2 e4 6a 1b 80 49 f7 92 f7 6b fe 54 b9 03 a9 c9
             a9 4a c9 b4 7a d2 65 5c 5f 10 f9 ae f7 14 27 e2
             fc 6f 9b 3f 39 9a 22 14 89 f1 63 62 c7 03 23 36
             09 d4 5a c6 98 64 e3 32 1c f8 29 35 ac 40 96 c8
             6e 13 33 14 c5 40 19 e8 ca 79 80 df a4 b9 cf 1b
             38 4c 48 6f 3a 54 c5 10 78 15 8e e5 d7 9d e5 9f
             bd 34 d8 48 b3 d6 95 50 a6 76 46 34 44 27 ad e5
             4b 88 51 ff b5 98 f7 f8 00 74 b9 47 3c 82 e2 db");
        let tag = hex("65 2c 3f a3 6b 0a 7c 5b 32 19 fa b3 a3 0b c1 c4");
        let opened = open(Enc::A128CbcHs256, &key, &iv, &aad, &ciphertext, &tag);
        assert_eq!(opened.expect("opens"), plaintext);
        // The MAC comes first: a flipped tag bit is a tag failure.
        let mut bad_tag = tag.clone();
        bad_tag[15] ^= 1;
        let refused = open(Enc::A128CbcHs256, &key, &iv, &aad, &ciphertext, &bad_tag);
        assert_eq!(refused, Err(DecryptFailure::DecryptionFailed));
        let mut bad_aad = aad.clone();
        bad_aad.push(b' ');
        let refused = open(Enc::A128CbcHs256, &key, &iv, &bad_aad, &ciphertext, &tag);
        assert_eq!(refused, Err(DecryptFailure::DecryptionFailed));
    }

    #[test]
    fn every_enc_round_trips_and_refuses_wrong_lengths() {
        for enc in ENCS {
            let cek = random_bytes(enc.key_len()).expect("random");
            for plaintext in [&b""[..], b"x", &[7u8; 16], &[8u8; 100]] {
                let sealed = seal(enc, &cek, b"header", plaintext).expect("seals");
                let opened = open(
                    enc,
                    &cek,
                    &sealed.iv,
                    b"header",
                    &sealed.ciphertext,
                    &sealed.tag,
                );
                assert_eq!(opened.expect("opens"), plaintext, "{enc}");
                let short_tag = &sealed.tag[..sealed.tag.len() - 1];
                let refused = open(
                    enc,
                    &cek,
                    &sealed.iv,
                    b"header",
                    &sealed.ciphertext,
                    short_tag,
                );
                assert_eq!(refused, Err(DecryptFailure::TagLength), "{enc}");
                let long_iv = [sealed.iv.as_slice(), &[0]].concat();
                let refused = open(
                    enc,
                    &cek,
                    &long_iv,
                    b"header",
                    &sealed.ciphertext,
                    &sealed.tag,
                );
                assert_eq!(refused, Err(DecryptFailure::IvLength), "{enc}");
                let refused = open(
                    enc,
                    &cek[1..],
                    &sealed.iv,
                    b"header",
                    &sealed.ciphertext,
                    &sealed.tag,
                );
                assert_eq!(refused, Err(DecryptFailure::DecryptionFailed), "{enc}");
            }
        }
    }
}
