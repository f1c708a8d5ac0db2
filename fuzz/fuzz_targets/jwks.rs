//! `parse_jwks` on the input, with every supported algorithm allowed: each
//! key of the document is either usable or skipped with a reason.
#![no_main]

use std::sync::{Arc, OnceLock};

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden::auth::jwk::parse_jwks;
use warden::auth::jwt::IssuerPolicy;
use warden::auth::keys::{SUPPORTED_ALGORITHMS, parse_algorithm};

fn setup() -> &'static (Arc<IssuerPolicy>, Vec<Algorithm>) {
    static SETUP: OnceLock<(Arc<IssuerPolicy>, Vec<Algorithm>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        warden::crypto::install_providers();
        let policy = Arc::new(IssuerPolicy {
            iss: "https://issuer.example".into(),
            audiences: vec!["warden-fuzz".into()],
            accept_high_s: false,
        });
        let all = SUPPORTED_ALGORITHMS
            .split(", ")
            .filter_map(parse_algorithm)
            .collect();
        (policy, all)
    })
}

fuzz_target!(|data: &[u8]| {
    let (policy, allowed) = setup();
    let (set, skipped) = parse_jwks(data, policy, allowed);
    let listed = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(doc)) => doc.get("keys").and_then(Value::as_array).map(Vec::len),
        _ => None,
    };
    match listed {
        Some(n) => assert_eq!(set.len() + skipped.len(), n),
        None => assert!(set.is_empty() && skipped.len() == 1),
    }
});
