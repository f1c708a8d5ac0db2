//! `Config::from_toml` on arbitrary UTF-8: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden::crypto::install_providers();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = warden::Config::from_toml(text, "fuzz");
    }
});
