//! Encrypted tokens (JWE, RFC 7516), compact serialization only (SPEC §12):
//! decryption with the gateway's keys, encryption to an upstream's public
//! key, and new keys for `warden keygen`.
//!
//! A pure library under `auth`: no I/O, no config, no tower. The caller
//! (the authenticator, for a bearer token of five segments) passes the
//! token and its [`DecryptionKey`]s to [`decrypt`], and gets the plaintext
//! (for a nested JWT, the JWS to verify as SPEC §4 says), the header's
//! `cty` and `kid`, and the key that decrypted it; or a [`DecryptError`],
//! whose text is the same for every cause and whose
//! [`DecryptError::reason`] is for the log line. [`encrypt`] makes the
//! nested JWT that an `upstream_token` with `encrypt_to` sends.
//!
//! Accepted: `alg` [`KeyAlg`] (`RSA-OAEP-256`, `ECDH-ES`, `ECDH-ES+A128KW`,
//! `ECDH-ES+A256KW` on P-256, P-384 or X25519, `A256KW`, `dir`), `enc`
//! [`Enc`] (`A128GCM`, `A256GCM`, `A128CBC-HS256`, `A256CBC-HS512`).
//! Never: `RSA1_5`, `PBES2-*`, any other `alg` or `enc`, `zip`, `crit`,
//! the JSON serialization. The AAD is the protected header's segment
//! exactly as received.
//!
//! Files, in the order they import each other (each uses only those above):
//!
//! - `alg.rs`: the algorithm names and their sizes;
//! - `error.rs`: [`DecryptError`] and [`DecryptFailure`], [`JweKeyError`], [`EncryptError`];
//! - `base64url.rs`: the one strict base64url;
//! - `primitives.rs`: RSA-OAEP, AES Key Wrap, ECDH-ES and the Concat KDF;
//! - `content.rs`: AES-GCM and AES-CBC-HMAC-SHA2;
//! - `key_material.rs`: what an algorithm requires of a key, X25519's PKCS#8, JWK members;
//! - `encryption_key.rs`: [`EncryptionKey`], from SPKI (PEM or DER), a public JWK or a secret;
//! - `decryption_key.rs`: [`DecryptionKey`], from PEM, PKCS#8 DER, a private JWK or a secret;
//! - `header.rs`: the compact serialization and the header's checks;
//! - `keygen.rs`: [`generate_pkcs8`] and [`generate_secret`];
//! - `decrypt.rs` and `encrypt.rs`: [`decrypt`] and [`encrypt`].

mod alg;
mod base64url;
mod content;
mod decrypt;
mod decryption_key;
mod encrypt;
mod encryption_key;
mod error;
mod header;
mod key_material;
mod keygen;
mod primitives;

pub use alg::{Curve, ENCS, Enc, KEY_ALGS, KeyAlg, SUPPORTED_KEY_ALGS};
pub use decrypt::{Decrypted, decrypt, is_compact_jwe};
pub use decryption_key::DecryptionKey;
pub use encrypt::{encrypt, encrypt_with};
pub use encryption_key::EncryptionKey;
pub use error::{
    DECRYPT_ERROR_DESCRIPTION, DecryptError, DecryptFailure, EncryptError, JweKeyError,
};
pub use keygen::{generate_pkcs8, generate_secret};
