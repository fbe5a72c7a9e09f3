//! Tidewater's durable, partitioned log.
//!
//! A topic-partition is a directory of segments. Each segment is a data file of Kafka
//! RecordBatch v2 bytes stored verbatim, plus a sparse offset index and a time index. This crate
//! owns those files: appending (validation, offset assignment, group-committed fsync), reading
//! whole batches as file byte ranges, lookup by offset and by time, recovery after a crash, and
//! retention.
//!
//! Architecture invariant: this crate knows nothing of sockets, async runtimes or Kafka requests.
//! It is plain blocking file I/O behind `&self` methods, so it can be tested (and crashed) without
//! a server, and the broker decides on which threads it runs.

pub mod batch;
mod clock;
mod config;
mod dir;
mod error;
mod index;
mod log;
mod segment;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::config::{
    FsyncPolicy, LogConfig, DEFAULT_FSYNC_INTERVAL, DEFAULT_INDEX_INTERVAL_BYTES, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_OPEN_SEGMENTS_MAX, DEFAULT_RETENTION_MS, DEFAULT_SEGMENT_BYTES, DEFAULT_SEGMENT_MS,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use crate::dir::{LogDir, TopicPartition, TOPIC_NAME_MAX_CHARS};
pub use crate::error::LogError;
pub use crate::log::{Appended, FileRange, Log, VerifyReport};
