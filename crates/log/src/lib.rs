//! Tidewater's durable, partitioned log.
//!
//! A topic-partition is a directory of segments. Each segment is a data file of Kafka
//! RecordBatch v2 bytes stored verbatim, plus a sparse offset index and a time index. This crate
//! owns those files: appending (validation, offset assignment, group-committed fsync), reading
//! whole batches as file byte ranges, lookup by offset and by time, recovery after a crash,
//! retention, and key-based compaction (`cleaner.rs`, with its offset map in `offset_map.rs`).
//!
//! Architecture invariant: this crate knows nothing of sockets, async runtimes or Kafka requests.
//! It is plain blocking file I/O behind `&self` methods, so it can be tested (and crashed) without
//! a server, and the broker decides on which threads it runs.

pub mod batch;
mod cleaner;
mod clock;
mod config;
mod dir;
mod error;
mod index;
mod log;
mod offset_map;
mod segment;

pub use crate::cleaner::{CleanOptions, CleanOutcome, CleanReport, CleanStep};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::config::{
    CleanupPolicy, FsyncPolicy, LogConfig, TimestampType, CLEANER_DEDUPE_BUFFER_BYTES_MAX,
    CLEANER_DEDUPE_BUFFER_BYTES_MIN, DEFAULT_CLEANER_DEDUPE_BUFFER_BYTES, DEFAULT_DELETE_RETENTION_MS,
    DEFAULT_FSYNC_INTERVAL, DEFAULT_INDEX_INTERVAL_BYTES, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MIN_CLEANABLE_DIRTY_RATIO, DEFAULT_OPEN_SEGMENTS_MAX, DEFAULT_RETENTION_MS,
    DEFAULT_SEGMENT_BYTES, DEFAULT_SEGMENT_MS, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use crate::dir::{LogDir, TopicPartition, TOPIC_NAME_CHARS_MAX};
pub use crate::error::LogError;
pub use crate::log::{Appended, FileRange, Log, ValidatedBatches, VerifyReport};
