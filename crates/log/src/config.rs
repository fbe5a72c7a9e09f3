//! Per-log configuration and the named limits that bound it.
//!
//! Every size and count the log reads from disk or accepts from a caller is bounded by a value
//! here, checked before anything is allocated. `LogConfig::validate` turns out-of-range settings
//! into a clear error at open time rather than odd behaviour later.
//!
//! The cleanup settings are Kafka's: `cleanup.policy` says whether closed segments are deleted
//! by retention, compacted by key (`cleaner.rs`), or both; the compaction settings say when a
//! log is worth cleaning and how long tombstones stay. The cleaner's memory (its offset map) and
//! I/O rate are bounded here too.

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
/// Kafka's `min.cleanable.dirty.ratio` default: clean once half the log is dirty.
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;
/// Kafka's `delete.retention.ms` default (1 day): how long a tombstone outlives its first cleaning.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// Kafka's `log.cleaner.dedupe.buffer.size` default: the largest offset map one pass allocates.
pub const DEFAULT_CLEANER_DEDUPE_BUFFER_BYTES: usize = 128 * 1024 * 1024;
/// The smallest offset map we accept: a few dozen keys. Tests use it to force passes that clean
/// only part of the dirty section.
pub const CLEANER_DEDUPE_BUFFER_BYTES_MIN: usize = 1024;
/// No offset map is larger than this, whatever the configuration says (16 GiB).
pub const CLEANER_DEDUPE_BUFFER_BYTES_MAX: usize = 16 * 1024 * 1024 * 1024;

/// When appended bytes are forced to disk. What each choice risks is in docs/operations.md.
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

/// What happens to closed segments (Kafka `cleanup.policy`): deleted by retention, compacted by
/// key, or both. At least one is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention (`retention_ms`, `retention_bytes`) deletes whole closed segments.
    pub delete: bool,
    /// The cleaner keeps only the latest record of each key in closed segments.
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: false };
    pub const COMPACT: CleanupPolicy = CleanupPolicy { delete: false, compact: true };
    pub const COMPACT_DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: true };
}

impl FromStr for CleanupPolicy {
    type Err = String;

    /// Parses Kafka's list form: `delete`, `compact`, or both separated by a comma, in any order.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut policy = CleanupPolicy { delete: false, compact: false };
        for item in text.split(',') {
            match item.trim() {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                other => {
                    return Err(format!("unknown cleanup policy {other:?}: expected delete, compact or both"))
                }
            }
        }
        Ok(policy)
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.compact, self.delete) {
            (true, true) => f.write_str("compact,delete"),
            (true, false) => f.write_str("compact"),
            _ => f.write_str("delete"),
        }
    }
}

/// The settings of one topic-partition log.
#[derive(Debug, Clone, PartialEq)]
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
    /// Delete by retention, compact by key, or both (Kafka `cleanup.policy`).
    pub cleanup_policy: CleanupPolicy,
    /// Clean once the dirty part (closed segments written since the last cleaning) is at least
    /// this fraction of the cleanable log (Kafka `min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// A record stays uncompacted for at least this long after its timestamp: a segment is only
    /// cleaned once its newest timestamp is this old (Kafka `min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// Clean regardless of the dirty ratio once the oldest dirty record is this old (Kafka
    /// `max.compaction.lag.ms`); `i64::MAX` means never forced.
    pub max_compaction_lag_ms: i64,
    /// A tombstone (a record with a key and no value) stays this long after the cleaning that
    /// first kept it as its key's latest record; the next cleaning after that removes it. Abort
    /// and commit markers whose transaction has no records left go the same way (Kafka
    /// `delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// The largest offset map one cleaning pass allocates (Kafka
    /// `log.cleaner.dedupe.buffer.size`). A dirty section with more keys than fit is cleaned in
    /// several passes.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// The cleaner reads and writes at most this many bytes per second (Kafka
    /// `log.cleaner.io.max.bytes.per.second`); `u64::MAX` means unthrottled.
    pub cleaner_io_max_bytes_per_second: u64,
    /// Whose time records carry: the producer's, or the broker's at append (Kafka
    /// `message.timestamp.type`). Applied by the broker before it appends.
    pub message_timestamp_type: TimestampType,
    /// A CreateTime batch whose timestamps are further than this from the broker's clock is
    /// refused (Kafka `message.timestamp.difference.max.ms`); `i64::MAX` accepts any.
    pub message_timestamp_difference_max_ms: i64,
}

/// Kafka's `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    #[default]
    CreateTime,
    /// Every record gets the broker's time when its batch is appended.
    LogAppendTime,
}

impl std::str::FromStr for TimestampType {
    type Err = String;

    fn from_str(text: &str) -> Result<TimestampType, String> {
        match text.trim() {
            "CreateTime" => Ok(TimestampType::CreateTime),
            "LogAppendTime" => Ok(TimestampType::LogAppendTime),
            other => Err(format!("{other:?} is neither CreateTime nor LogAppendTime")),
        }
    }
}

impl std::fmt::Display for TimestampType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        })
    }
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
            cleanup_policy: CleanupPolicy::DELETE,
            min_cleanable_dirty_ratio: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            cleaner_dedupe_buffer_bytes: DEFAULT_CLEANER_DEDUPE_BUFFER_BYTES,
            cleaner_io_max_bytes_per_second: u64::MAX,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_difference_max_ms: i64::MAX,
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
        if self.message_timestamp_difference_max_ms < 0 {
            return invalid("message_timestamp_difference_max_ms must not be negative".to_string());
        }
        if self.open_segments_max == 0 {
            return invalid("open_segments_max must be at least 1".to_string());
        }
        if !self.cleanup_policy.delete && !self.cleanup_policy.compact {
            return invalid("cleanup_policy must delete, compact or both".to_string());
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return invalid(format!(
                "min_cleanable_dirty_ratio {} outside [0, 1]",
                self.min_cleanable_dirty_ratio
            ));
        }
        if self.min_compaction_lag_ms < 0 || self.max_compaction_lag_ms < 1 || self.delete_retention_ms < 0 {
            return invalid(
                "min_compaction_lag_ms and delete_retention_ms must be non-negative, max_compaction_lag_ms positive"
                    .to_string(),
            );
        }
        if !(CLEANER_DEDUPE_BUFFER_BYTES_MIN..=CLEANER_DEDUPE_BUFFER_BYTES_MAX)
            .contains(&self.cleaner_dedupe_buffer_bytes)
        {
            return invalid(format!(
                "cleaner_dedupe_buffer_bytes {} outside [{CLEANER_DEDUPE_BUFFER_BYTES_MIN}, {CLEANER_DEDUPE_BUFFER_BYTES_MAX}]",
                self.cleaner_dedupe_buffer_bytes
            ));
        }
        if self.cleaner_io_max_bytes_per_second == 0 {
            return invalid("cleaner_io_max_bytes_per_second must be positive".to_string());
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
    fn cleanup_policy_parses_kafka_lists() {
        let check = |text: &str, expected: Result<CleanupPolicy, ()>| {
            assert_eq!(text.parse::<CleanupPolicy>().map_err(|_| ()), expected, "{text:?}");
        };
        check("delete", Ok(CleanupPolicy::DELETE));
        check("compact", Ok(CleanupPolicy::COMPACT));
        check("compact,delete", Ok(CleanupPolicy::COMPACT_DELETE));
        check("delete, compact", Ok(CleanupPolicy::COMPACT_DELETE));
        check("compact,compact", Ok(CleanupPolicy::COMPACT));
        check("", Err(()));
        check("compact,", Err(()));
        check("shred", Err(()));
        assert_eq!(CleanupPolicy::COMPACT_DELETE.to_string(), "compact,delete");
    }

    #[test]
    fn default_config_is_valid_and_limits_are_enforced() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let too_small = LogConfig { segment_bytes: SEGMENT_BYTES_MIN - 1, ..LogConfig::default() };
        assert!(too_small.validate().is_err());
        let too_big = LogConfig { max_batch_bytes: BATCH_BYTES_HARD_MAX + 1, ..LogConfig::default() };
        assert!(too_big.validate().is_err());
        let ratio = LogConfig { min_cleanable_dirty_ratio: 1.5, ..LogConfig::default() };
        assert!(ratio.validate().is_err());
        let small_map = LogConfig {
            cleaner_dedupe_buffer_bytes: CLEANER_DEDUPE_BUFFER_BYTES_MIN - 1,
            ..LogConfig::default()
        };
        assert!(small_map.validate().is_err());
        let neither = LogConfig {
            cleanup_policy: CleanupPolicy { delete: false, compact: false },
            ..LogConfig::default()
        };
        assert!(neither.validate().is_err());
    }
}
