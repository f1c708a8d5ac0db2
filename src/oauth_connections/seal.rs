//! Sealing of connection records: AES-256-GCM (aws-lc-rs) under a key
//! derived from the master key for this use alone, a random nonce per
//! seal, and the record's identity as the associated data, so a record
//! copied under another connection, issuer or subject does not open.
//!
//! Sealed form: `nonce [12] | ciphertext | tag [16]`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use zeroize::Zeroizing;

use crate::credentials::store::MasterKey;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What the master key is expanded with for this use.
const KEY_INFO: &[u8] = b"warden oauth connection records v1";

/// Why a record cannot be sealed or opened. Holds nothing of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key could not be made, or the random source failed.
    #[error("the record key could not be made from the master key")]
    Key,
    /// Wrong key, another record's identity, or a changed byte.
    #[error("the record does not open: another master key, another user's record, or modified")]
    Open,
}

/// Seals and opens records under the master key in force.
pub struct Sealer {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// The associated data of a record: its kind and identity, each part
/// length-prefixed so no two identities share a byte string.
pub fn associated_data(kind: &str, parts: &[&str]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"warden-connection/1");
    for part in std::iter::once(kind).chain(parts.iter().copied()) {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

impl Sealer {
    /// The sealer of `master`.
    pub fn new(master: &MasterKey) -> Result<Self, SealError> {
        let bytes = master.derive(KEY_INFO).map_err(|_| SealError::Key)?;
        let key =
            RandomizedNonceKey::new(&AES_256_GCM, bytes.as_ref()).map_err(|_| SealError::Key)?;
        Ok(Self { key })
    }

    /// Seals `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
            .map_err(|_| SealError::Key)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        zeroize::Zeroize::zeroize(&mut in_out);
        Ok(sealed)
    }

    /// Opens what [`Sealer::seal`] made with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), in_out.as_mut())
            .map_err(|_| SealError::Open)?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&MasterKey::from_base64(&"A".repeat(43)).expect("key")).expect("sealer")
    }

    #[test]
    fn a_record_opens_only_under_its_own_identity_and_key() {
        let sealer = sealer();
        let alice = associated_data("record", &["github", "iss", "alice"]);
        let bob = associated_data("record", &["github", "iss", "bob"]);
        let sealed = sealer.seal(&alice, b"tokens").expect("seal");
        assert_eq!(
            sealer.open(&alice, &sealed).expect("open").as_slice(),
            b"tokens"
        );
        assert_eq!(sealer.open(&bob, &sealed), Err(SealError::Open));
        let other = Sealer::new(&MasterKey::generate().expect("key")).expect("sealer");
        assert_eq!(other.open(&alice, &sealed), Err(SealError::Open));
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(sealer.open(&alice, &flipped), Err(SealError::Open));
        assert_eq!(sealer.open(&alice, &sealed[..10]), Err(SealError::Open));
    }

    #[test]
    fn identities_do_not_run_into_each_other() {
        assert_ne!(
            associated_data("record", &["a", "bc"]),
            associated_data("record", &["ab", "c"])
        );
    }
}
