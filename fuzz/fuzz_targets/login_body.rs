//! The public parsers of a login body: the form codec (`form_fields`,
//! `form_decode`, `encode`). Parsed fields re-encode to the same fields, and
//! decoding undoes encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::percent::{encode, form_decode, form_encode, form_fields};

fuzz_target!(|data: &[u8]| {
    let fields = form_fields(data);
    assert!(fields.len() <= data.iter().filter(|&&b| b == b'&').count() + 1);
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(form_fields(form_encode(&pairs).as_bytes()), fields);

    let text = String::from_utf8_lossy(data);
    assert!(form_decode(&text).len() <= text.len());
    assert_eq!(form_decode(&encode(&text)), text.as_bytes());
});
