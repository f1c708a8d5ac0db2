//! No timing oracle in decryption (SPEC §12): a JWE whose wrapped key does
//! not unwrap and one whose tag does not verify are refused with the same
//! error, after the same work, because a failed unwrap goes on with a
//! random content key (RFC 7516 §11.5). Measured with `A256KW`, where the
//! shortcut this guards against would be visible: unwrapping is cheap, so
//! returning early would make the first kind several times faster.
//!
//! The check compares medians of interleaved batches with a wide band, so
//! that a loaded machine does not fail it while a skipped step would.

use std::time::Instant;

use warden::auth::jwe::{self, DecryptionKey, Enc, KeyAlg};

/// Changes one base64url character of segment `index` of `token`.
fn tamper(token: &str, index: usize) -> String {
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    let segment = &mut segments[index];
    let middle = segment.len() / 2;
    let replacement = if &segment[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    segment.replace_range(middle..=middle, replacement);
    segments.join(".")
}

fn median_ns(token: &str, key: &DecryptionKey, rounds: usize) -> u128 {
    let mut times: Vec<u128> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let refused = jwe::decrypt(std::hint::black_box(token), [key]);
            let elapsed = started.elapsed().as_nanos();
            assert!(refused.is_err());
            elapsed
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

#[test]
fn a_key_that_does_not_unwrap_and_a_tag_that_does_not_verify_take_the_same_time_and_answer() {
    warden::crypto::install_providers();
    let secret = jwe::generate_secret(KeyAlg::A256Kw, Enc::A256Gcm).expect("a secret");
    let key = DecryptionKey::from_secret("timing", KeyAlg::A256Kw, &secret).expect("a key");
    let public = key.encryption_key().expect("the same secret");
    // A realistic nested JWT size.
    let token = jwe::encrypt(&public, "x".repeat(600).as_bytes()).expect("a JWE");
    let bad_key = tamper(&token, 1);
    let bad_tag = tamper(&token, 4);

    let first = jwe::decrypt(&bad_key, [&key]).expect_err("refused");
    let second = jwe::decrypt(&bad_tag, [&key]).expect_err("refused");
    assert_eq!(first.to_string(), second.to_string(), "one answer");
    assert_eq!(first.to_string(), jwe::DECRYPT_ERROR_DESCRIPTION);
    assert_eq!(
        first.reason(),
        second.reason(),
        "not even the log line tells them apart"
    );

    let (mut key_medians, mut tag_medians) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        key_medians.push(median_ns(&bad_key, &key, 400));
        tag_medians.push(median_ns(&bad_tag, &key, 400));
    }
    key_medians.sort_unstable();
    tag_medians.sort_unstable();
    let (unwrap_failed, tag_failed) = (key_medians[4] as f64, tag_medians[4] as f64);
    let ratio = unwrap_failed / tag_failed;
    eprintln!(
        "A256KW refusal: bad wrapped key {unwrap_failed:.0} ns, bad tag {tag_failed:.0} ns (ratio {ratio:.2})"
    );
    assert!(
        (0.6..=1.67).contains(&ratio),
        "a failed unwrap takes {ratio:.2}x the time of a failed tag: the failing step shows"
    );
}
