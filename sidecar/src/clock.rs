//! Wall-clock time in unix milliseconds: due times are stored on disk and
//! must mean the same thing after a restart, so they cannot be `Instant`s.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
