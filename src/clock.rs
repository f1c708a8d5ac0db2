//! Wall-clock time as JWTs count it: whole seconds since the Unix epoch.
//!
//! A leaf: token checks, revocation expiry and credential timestamps all
//! read the clock here, so a test or a future monotonic source changes it
//! in one place.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
