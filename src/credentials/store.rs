//! The encrypted credential store: one file, AES-256-GCM-SIV (aws-lc-rs)
//! under a 32-byte master key, a fresh random nonce per write.
//!
//! File format, version 1:
//!
//! ```text
//! "WDNCRED" | version u8 (1) | algorithm u8 (1 = AES-256-GCM-SIV) | nonce [12] | ciphertext+tag
//! ```
//!
//! The 9-byte header is the AEAD's associated data, so a changed version or
//! algorithm byte fails authentication like any other change. The plaintext
//! is the JSON of [`StoreContents`]. Writes are atomic (temp file in the same
//! directory, mode 0600, fsync, rename, fsync of the directory) and happen
//! under an exclusive lock on `<store>.lock`, so concurrent writers never
//! lose each other's updates. A wrong key, a flipped byte, a truncated file
//! or an unknown version is a clear error naming the file.
//!
//! A crash between writing the temp file and renaming it leaves a full
//! copy of the store (`<store>.tmp.<uuid>`, under the key of its time)
//! beside it; [`Store::remove_leftovers`] removes those at the next start.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Credential;

const MAGIC: &[u8; 7] = b"WDNCRED";
const VERSION: u8 = 1;
const ALG_AES_256_GCM_SIV: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The 32-byte master key. Never printed.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<Self, StoreError> {
        use aws_lc_rs::rand::SecureRandom;
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| StoreError::Random)?;
        Ok(Self(key))
    }

    /// Reads the base64 text of a key (standard alphabet, padding optional,
    /// surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| StoreError::BadMasterKey("it is not base64".into()))?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            StoreError::BadMasterKey(format!("it is {} bytes; 32 are required", decoded.len()))
        })?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// The key as base64, to show once at `warden credentials init`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }

    /// Reads the key from an environment variable or a file.
    pub fn load(source: &MasterKeySource) -> Result<Self, StoreError> {
        match source {
            MasterKeySource::Env(var) => {
                let value = Zeroizing::new(std::env::var(var).map_err(|_| {
                    StoreError::BadMasterKey(format!("the environment variable {var} is not set"))
                })?);
                Self::from_base64(&value)
            }
            MasterKeySource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|err| {
                    StoreError::BadMasterKey(format!("cannot read {}: {err}", path.display()))
                })?);
                Self::from_base64(&text)
            }
        }
    }

    /// A key for another use of the master key, derived with HKDF-SHA256
    /// under `info` (so no two uses ever share key bytes).
    pub fn derive(&self, info: &'static [u8]) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
        struct Len32;
        impl KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = Salt::new(HKDF_SHA256, b"warden master key").extract(self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&[info], Len32)
            .and_then(|okm| okm.fill(out.as_mut()))
            .map_err(|_| StoreError::Random)?;
        Ok(out)
    }

    fn aead(&self) -> Result<RandomizedNonceKey, StoreError> {
        RandomizedNonceKey::new(&AES_256_GCM_SIV, self.0.as_ref()).map_err(|_| StoreError::Random)
    }
}

/// Where the master key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `master_key_env`.
    Env(String),
    /// `master_key_file`.
    File(PathBuf),
}

/// Everything in the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreContents {
    /// Credentials by name.
    pub credentials: BTreeMap<String, Credential>,
}

/// A store problem; messages name the file and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a credential store, or a damaged one.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not open the file, or the file was changed.
    #[error("{path}: cannot decrypt: the master key is wrong, or the file was modified or damaged")]
    Decrypt {
        /// The file.
        path: PathBuf,
    },
    /// The master key itself is unusable.
    #[error("the master key is unusable: {0}")]
    BadMasterKey(String),
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
}

/// The store file and its key.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    key: MasterKey,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// The store at `path`, opened with `key`.
    pub fn new(path: impl Into<PathBuf>, key: MasterKey) -> Self {
        Self {
            path: path.into(),
            key,
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Creates an empty store; refuses to overwrite an existing one.
    pub fn create(&self) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        if self.path.exists() {
            return Err(StoreError::Format {
                path: self.path.clone(),
                reason: "already exists; remove it first if you mean to start over".into(),
            });
        }
        self.write_unlocked(&StoreContents::default())
    }

    /// Reads and decrypts the store.
    pub fn read(&self) -> Result<StoreContents, StoreError> {
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&self.path))?;
        self.decrypt(bytes)
    }

    fn decrypt(&self, mut bytes: Vec<u8>) -> Result<StoreContents, StoreError> {
        let format = |reason: &str| StoreError::Format {
            path: self.path.clone(),
            reason: reason.into(),
        };
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(format("too short to be a credential store (truncated?)"));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(format("not a warden credential store"));
        }
        if bytes[MAGIC.len()] != VERSION {
            return Err(format(&format!(
                "store format version {} is not supported (this warden reads version {VERSION})",
                bytes[MAGIC.len()]
            )));
        }
        if bytes[MAGIC.len() + 1] != ALG_AES_256_GCM_SIV {
            return Err(format("unknown encryption algorithm"));
        }
        let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN]
            .try_into()
            .map_err(|_| format("damaged header"))?;
        let nonce = Nonce::try_assume_unique_for_key(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN])
            .map_err(|_| format("damaged nonce"))?;
        let ciphertext = &mut bytes[HEADER_LEN + NONCE_LEN..];
        let plaintext = self
            .key
            .aead()?
            .open_in_place(nonce, Aad::from(header), ciphertext)
            .map_err(|_| StoreError::Decrypt {
                path: self.path.clone(),
            })?;
        let plaintext = Zeroizing::new(plaintext.to_vec());
        bytes.fill(0);
        serde_json::from_slice(&plaintext)
            .map_err(|_| format("the decrypted contents are not a store"))
    }

    fn encrypt(&self, contents: &StoreContents) -> Result<Vec<u8>, StoreError> {
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()] = VERSION;
        header[MAGIC.len() + 1] = ALG_AES_256_GCM_SIV;
        let mut data =
            Zeroizing::new(
                serde_json::to_vec(contents).map_err(|e| StoreError::Format {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?,
            );
        let nonce = self
            .key
            .aead()?
            .seal_in_place_append_tag(Aad::from(header), &mut *data)
            .map_err(|_| StoreError::Random)?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + data.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&data);
        Ok(out)
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    }

    /// Reads, changes and writes the store under the lock, so concurrent
    /// writers (other processes included) never lose an update.
    pub fn update<T>(&self, change: impl FnOnce(&mut StoreContents) -> T) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut contents = self.read()?;
        let result = change(&mut contents);
        self.write_unlocked(&contents)?;
        Ok(result)
    }

    /// Re-encrypts the store under `new_key`; returns the store with it.
    pub fn rotate(&self, new_key: MasterKey) -> Result<Store, StoreError> {
        let _lock = self.lock()?;
        let contents = self.read()?;
        let rotated = Store::new(self.path.clone(), new_key);
        rotated.write_unlocked(&contents)?;
        Ok(rotated)
    }

    /// Removes the temp files that interrupted writes left beside the store
    /// (`<store>.tmp.<uuid>`, each a full copy of the store, possibly under
    /// an old master key) and returns how many. Only regular files whose
    /// name is exactly that pattern, in the store's own directory. Under
    /// the lock, so a write in progress (another process's) keeps its file.
    pub fn remove_leftovers(&self) -> Result<usize, StoreError> {
        let Some(store_name) = self.path.file_name().and_then(|n| n.to_str()) else {
            return Ok(0);
        };
        let prefix = format!("{store_name}.tmp.");
        let dir = self.dir();
        let leftovers = || -> Result<Vec<PathBuf>, StoreError> {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let entry = entry.map_err(io(&dir))?;
                let name = entry.file_name();
                let is_leftover = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(&prefix))
                    .is_some_and(is_simple_uuid);
                // `file_type` does not follow symlinks: a link is not a leftover.
                if is_leftover && entry.file_type().is_ok_and(|t| t.is_file()) {
                    found.push(entry.path());
                }
            }
            Ok(found)
        };
        // Looked for without the lock first: a store on a read-only mount
        // (a Kubernetes Secret) has none, and cannot take the lock file.
        if leftovers()?.is_empty() {
            return Ok(0);
        }
        let _lock = self.lock()?;
        let mut removed = 0;
        for path in leftovers()? {
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The directory the store (and its temp files) live in.
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Writes atomically: temp file, fsync, rename, fsync of the directory.
    fn write_unlocked(&self, contents: &StoreContents) -> Result<(), StoreError> {
        let bytes = self.encrypt(contents)?;
        let dir = self.dir();
        let mut temp_name = self.path.as_os_str().to_owned();
        temp_name.push(format!(".tmp.{}", uuid::Uuid::now_v7().simple()));
        let temp = PathBuf::from(temp_name);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io(&self.path))
    }
}

/// The temp files' suffix: a UUID in its simple form, as `write_unlocked`
/// names them (32 lowercase hex digits).
fn is_simple_uuid(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, Kind, Location};
    use crate::secret::SecretString;

    fn temp_store() -> (tempdir::Dir, Store) {
        let dir = tempdir::Dir::new();
        let store = Store::new(
            dir.path.join("creds.store"),
            MasterKey::generate().expect("key"),
        );
        (dir, store)
    }

    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir()
                    .join(format!("warden-store-{}", uuid::Uuid::now_v7().simple()));
                std::fs::create_dir_all(&path).expect("temp dir");
                Self { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn api_key(value: &str) -> Credential {
        Credential::new(
            Kind::ApiKey {
                value: SecretString::new(value),
            },
            None,
        )
    }

    #[test]
    fn round_trip_and_no_plaintext_on_disk() {
        let (_dir, store) = temp_store();
        store.create().expect("create");
        store
            .update(|c| {
                c.credentials
                    .insert("orders".into(), api_key("s3cret-value"))
            })
            .expect("update");
        let back = store.read().expect("read");
        let stored = back.credentials.get("orders").map(|c| c.kind.clone());
        assert_eq!(
            stored,
            Some(Kind::ApiKey {
                value: SecretString::new("s3cret-value")
            })
        );
        let raw = std::fs::read(store.path()).expect("raw");
        assert!(!raw.windows(12).any(|w| w == b"s3cret-value"));
        let mode = std::fs::metadata(store.path())
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let _ = Location::Header("x".into());
    }

    #[test]
    fn wrong_key_flipped_byte_and_truncation_are_clear_errors() {
        let (_dir, store) = temp_store();
        store.create().expect("create");
        store
            .update(|c| c.credentials.insert("a".into(), api_key("v")))
            .expect("update");
        let wrong = Store::new(store.path(), MasterKey::generate().expect("key"));
        assert!(matches!(wrong.read(), Err(StoreError::Decrypt { .. })));

        let good = std::fs::read(store.path()).expect("raw");
        for at in [3, 7, HEADER_LEN + 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(store.path(), &bad).expect("write");
            let err = store
                .read()
                .map(|_| ())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with(&store.path().display().to_string()),
                "{err}"
            );
        }
        std::fs::write(store.path(), &good[..20]).expect("write");
        assert!(matches!(store.read(), Err(StoreError::Format { .. })));
    }

    #[test]
    fn every_write_uses_a_fresh_nonce() {
        let (_dir, store) = temp_store();
        store.create().expect("create");
        let first = std::fs::read(store.path()).expect("raw");
        store.update(|_| ()).expect("update");
        let second = std::fs::read(store.path()).expect("raw");
        assert_ne!(
            first[HEADER_LEN..HEADER_LEN + NONCE_LEN],
            second[HEADER_LEN..HEADER_LEN + NONCE_LEN]
        );
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let (_dir, store) = temp_store();
        store.create().expect("create");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for j in 0..5 {
                        store
                            .update(|c| c.credentials.insert(format!("c{i}-{j}"), api_key("v")))
                            .expect("update");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(store.read().expect("read").credentials.len(), 40);
    }

    #[test]
    fn without_leftovers_the_lock_is_not_taken() {
        // A store on a read-only mount cannot create its lock file: the
        // start-up clean-up must not need it when there is nothing to do.
        let (dir, store) = temp_store();
        store.create().expect("create");
        let lock = dir.path.join("creds.store.lock");
        let _ = std::fs::remove_file(&lock);
        assert_eq!(store.remove_leftovers().expect("nothing to remove"), 0);
        assert!(!lock.exists(), "the lock file was created");
    }

    #[test]
    fn leftovers_of_interrupted_writes_are_removed_and_nothing_else() {
        let (dir, store) = temp_store();
        store.create().expect("create");
        let name = |suffix: &str| dir.path.join(format!("creds.store{suffix}"));
        let uuid = uuid::Uuid::now_v7().simple().to_string();
        let leftovers = [
            name(&format!(".tmp.{uuid}")),
            name(&format!(".tmp.{}", "0".repeat(32))),
        ];
        let kept = [
            name(".tmp.notauuid"),
            name(&format!(".tmp.{uuid}.bak")),
            name(&format!(".tmp.{}", uuid.to_uppercase())),
            dir.path.join(format!("other.store.tmp.{uuid}")),
            dir.path.join("notes.txt"),
        ];
        for path in leftovers.iter().chain(&kept) {
            std::fs::write(path, b"x").expect("write");
        }
        assert_eq!(store.remove_leftovers().expect("remove"), 2);
        for path in &leftovers {
            assert!(!path.exists(), "{} is removed", path.display());
        }
        for path in &kept {
            assert!(path.exists(), "{} stays", path.display());
        }
        assert!(store.read().is_ok(), "the store itself stays");
        assert_eq!(store.remove_leftovers().expect("remove"), 0);
    }
}
