//! The credential store decoder: a store file holding the input, opened with
//! a fixed master key. No input may decrypt (that would be a forgery), and
//! none may panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warden::credentials::store::{MasterKey, Store};

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("warden-fuzz-store-{}", std::process::id()));
        let key = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .expect("a 32-byte key");
        Store::new(path, key)
    })
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    std::fs::write(store.path(), data).expect("the temp store is writable");
    assert!(
        store.read().is_err(),
        "bytes not sealed with the key decrypted"
    );
});
