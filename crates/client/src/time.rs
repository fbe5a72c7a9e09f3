//! The wall clock as Unix milliseconds: the one `now_ms` of the gateway, the jobs runtime and
//! the binary (record timestamps, expiries, status records). Pure code takes the time as an
//! argument instead, so its tests control it.

/// Milliseconds since the Unix epoch by the wall clock (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}
