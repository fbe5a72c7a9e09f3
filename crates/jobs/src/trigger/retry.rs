//! When to try a failed delivery again: exponential backoff with full jitter, or the receiver's
//! `Retry-After` when it gave one.
//!
//! Full jitter (a uniformly random delay between zero and the exponential bound) spreads the
//! retries of many events that failed together, so a receiver that recovers is not hit by all
//! of them at the same instant. The random source is passed in, so tests are deterministic.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The retry settings of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts per event, the first included; after the last failed one the event goes to the
    /// dead-letter topic.
    pub max_attempts: u32,
    /// The backoff bound after the first failed attempt; it doubles with every attempt.
    pub initial_backoff_ms: u64,
    /// The largest backoff bound, and the largest `Retry-After` honoured.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 10, initial_backoff_ms: 500, max_backoff_ms: 60_000 }
    }
}

/// Most attempts a trigger may configure: with a 60 s ceiling, 100 attempts is well over an hour
/// of retrying one event while the events behind it (same key) wait.
pub const ATTEMPTS_MAX: u32 = 100;

impl RetryPolicy {
    /// Checks the settings make sense, with a message naming the one that does not.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=ATTEMPTS_MAX).contains(&self.max_attempts) {
            return Err(format!("max_attempts must be between 1 and {ATTEMPTS_MAX}"));
        }
        if self.initial_backoff_ms == 0 || self.initial_backoff_ms > self.max_backoff_ms {
            return Err("initial_backoff_ms must be at least 1 and at most max_backoff_ms".to_string());
        }
        Ok(())
    }

    /// How long to wait after failed attempt number `attempt` (1 for the first), given a
    /// `Retry-After` from the receiver and a uniform random number in [0, 1).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, random_unit: f64) -> Duration {
        let ceiling = Duration::from_millis(self.max_backoff_ms);
        if let Some(retry_after) = retry_after {
            return retry_after.min(ceiling);
        }
        let exponent = attempt.saturating_sub(1).min(32);
        let bound_ms = self.initial_backoff_ms.saturating_mul(1u64 << exponent).min(self.max_backoff_ms);
        Duration::from_millis((bound_ms as f64 * random_unit.clamp(0.0, 1.0)) as u64)
    }
}

/// A small, fast random source for jitter (SplitMix64). Not for anything secret.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// Seeded from the clock and the address of a local: different per process and per call site.
    pub fn from_entropy() -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        let local = 0u8;
        Jitter(nanos ^ (&local as *const u8 as u64).rotate_left(32))
    }

    /// A uniform number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        (mixed >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parses an HTTP `Retry-After` value: seconds, or an HTTP date (RFC 9110) relative to `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate_to_system_time(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The IMF-fixdate form of an HTTP date, `Sun, 06 Nov 1994 08:49:37 GMT`, the only form senders
/// may generate (RFC 9110 5.6.7).
fn httpdate_to_system_time(value: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: u64 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|name| name == month)? as u64
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut clock = time.split(':').map(|part| part.parse::<u64>().ok());
    let (hours, minutes, seconds) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=31).contains(&day) || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    let days = tidewater_sql::days_from_civil(year, i64::try_from(month).ok()?, i64::try_from(day).ok()?);
    let seconds = u64::try_from(days).ok()? * 86_400 + hours * 3600 + minutes * 60 + seconds;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_jitters_below_it() {
        let policy = RetryPolicy { max_attempts: 10, initial_backoff_ms: 100, max_backoff_ms: 1000 };
        assert_eq!(policy.delay(1, None, 0.999_999), Duration::from_millis(99));
        assert_eq!(policy.delay(2, None, 0.5), Duration::from_millis(100));
        assert_eq!(policy.delay(3, None, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(30, None, 0.5), Duration::from_millis(500));
        assert_eq!(policy.delay(3, None, 0.0), Duration::ZERO);
        // Retry-After wins over the backoff, capped by the ceiling.
        assert_eq!(policy.delay(1, Some(Duration::from_millis(700)), 0.1), Duration::from_millis(700));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600)), 0.1), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_is_uniform_enough() {
        let mut jitter = Jitter::new(42);
        let samples: Vec<f64> = (0..10_000).map(|_| jitter.next_unit()).collect();
        assert!(samples.iter().all(|sample| (0.0..1.0).contains(sample)));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn settings_are_validated() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(RetryPolicy { max_attempts: 0, ..RetryPolicy::default() }.validate().is_err());
        assert!(RetryPolicy { initial_backoff_ms: 0, ..RetryPolicy::default() }.validate().is_err());
        assert!(RetryPolicy { initial_backoff_ms: 10, max_backoff_ms: 5, ..RetryPolicy::default() }
            .validate()
            .is_err());
    }
}
