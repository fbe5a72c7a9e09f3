//! Per-log configuration and the named limits that bound it.
//!
//! Every size and count the log reads from disk or accepts from a caller is bounded by a value
//! here, checked before anything is allocated. `LogConfig::validate` turns out-of-range settings
//! into a clear error at open time rather than odd behaviour later.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::batch::BATCH_BYTES_HARD_MAX;
use crate::error::LogError;

/// Kafka's `max.message.bytes` default: the largest batch one append accepts.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024 + 12;
/// Kafka's `segment.bytes` default.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Segment files address positions with `u32` in their index, so none may grow past this.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// The smallest segment we allow: one full-size batch must fit.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Kafka's `segment.ms` default (7 days).
pub const DEFAULT_SEGMENT_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `index.interval.bytes` default: one index entry per this many bytes of batches.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Kafka's `retention.ms` default (7 days); -1 means keep forever.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// How many closed segments of one log keep their data file and index open at once. Older ones
/// are reopened on demand, so file handles and index memory do not grow with the log's length.
pub const DEFAULT_OPEN_SEGMENTS_MAX: usize = 8;
/// How often `fsync = interval` flushes.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(1000);

/// When appended bytes are forced to disk. What each choice risks is in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A producer is acknowledged only after an fsync covering its batch. Concurrent writers share
    /// one fsync (group commit). Nothing acknowledged is lost on power failure.
    Always,
    /// A background tick fsyncs at most `interval` after an append. A power failure can lose up to
    /// one interval of acknowledged data; a process crash loses nothing (the page cache survives).
    Interval(Duration),
    /// Only segment rolls and clean shutdown fsync. Like Kafka's default: relies on the OS and, in
    /// a cluster, on replication. A power failure can lose everything since the last roll.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// Parses `always`, `never`, `interval` (the default interval) or `interval:<ms>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL)),
            _ => match text.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "unknown fsync policy {text:?}: expected always, never, interval or interval:<ms>"
                )),
            },
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(interval) => write!(f, "interval:{}", interval.as_millis()),
        }
    }
}

/// The settings of one topic-partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Largest batch one append accepts (Kafka `max.message.bytes`).
    pub max_batch_bytes: usize,
    /// Roll to a new segment before the active one would pass this size (Kafka `segment.bytes`).
    pub segment_bytes: u64,
    /// Roll a non-empty active segment once it is this old (Kafka `segment.ms`).
    pub segment_ms: i64,
    /// Bytes of batches between two sparse index entries (Kafka `index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Delete closed segments whose newest timestamp is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the log is larger than this; -1 means no limit.
    pub retention_bytes: i64,
    /// Closed segments kept open (file handle and index) at once; see `DEFAULT_OPEN_SEGMENTS_MAX`.
    pub open_segments_max: usize,
    pub fsync: FsyncPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: -1,
            open_segments_max: DEFAULT_OPEN_SEGMENTS_MAX,
            fsync: FsyncPolicy::Always,
        }
    }
}

impl LogConfig {
    /// Checks every setting against its limit; the log refuses to open with a bad config.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |reason: String| Err(LogError::InvalidConfig { reason });
        if self.max_batch_bytes < crate::batch::BATCH_HEADER_BYTES
            || self.max_batch_bytes > BATCH_BYTES_HARD_MAX
        {
            return invalid(format!(
                "max_batch_bytes {} outside [{}, {}]",
                self.max_batch_bytes,
                crate::batch::BATCH_HEADER_BYTES,
                BATCH_BYTES_HARD_MAX
            ));
        }
        if self.segment_bytes < SEGMENT_BYTES_MIN || self.segment_bytes > SEGMENT_BYTES_MAX {
            return invalid(format!(
                "segment_bytes {} outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            ));
        }
        if self.segment_ms <= 0 {
            return invalid(format!("segment_ms {} must be positive", self.segment_ms));
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be positive".to_string());
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return invalid("retention_ms and retention_bytes must be -1 or non-negative".to_string());
        }
        if self.open_segments_max == 0 {
            return invalid("open_segments_max must be at least 1".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_round_trips_through_text() {
        for text in ["always", "never", "interval:250"] {
            let policy: FsyncPolicy = text.parse().expect("parses");
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!("interval".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL)));
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn default_config_is_valid_and_limits_are_enforced() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let too_small = LogConfig { segment_bytes: SEGMENT_BYTES_MIN - 1, ..LogConfig::default() };
        assert!(too_small.validate().is_err());
        let too_big = LogConfig { max_batch_bytes: BATCH_BYTES_HARD_MAX + 1, ..LogConfig::default() };
        assert!(too_big.validate().is_err());
    }
}
