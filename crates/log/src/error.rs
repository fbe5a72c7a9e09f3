//! The log's domain errors. Each carries the context an operator needs (which file, which
//! offset) and maps onto one Kafka error code in the broker.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch handed to `append` is malformed; nothing of that append was written.
    #[error("invalid batch at byte {position} of the append: {source}")]
    InvalidBatch { position: usize, source: BatchError },
    /// The append is larger than `max_batch_bytes` allows for one batch.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: usize, limit: usize },
    /// An append with no batches in it.
    #[error("empty append: no batches")]
    EmptyAppend,
    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    /// Bytes on disk are not what the log wrote, found somewhere recovery does not repair
    /// (a closed segment). The log refuses to guess; an operator must decide.
    #[error("corrupt segment {path}: at byte {position}: {reason}")]
    Corrupt { path: PathBuf, position: u64, reason: String },
    /// An fsync failed earlier. After that the kernel may have dropped the dirty pages, so the log
    /// cannot know what is on disk: it refuses further writes and durability claims until it is
    /// reopened (which re-reads and verifies the files).
    #[error("log is failed after an earlier fsync error and accepts no writes until reopened: {reason}")]
    Poisoned { reason: String },
    /// An I/O call failed. `StorageFull` (ENOSPC) is recoverable: nothing partial stays behind.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("invalid log config: {reason}")]
    InvalidConfig { reason: String },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io { op, path: path.into(), source }
    }

    /// True for a full disk (ENOSPC, or EDQUOT for a quota).
    pub fn is_storage_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }
}

impl PartialEq for LogError {
    /// Compares by rendered message; enough for tests, which is what this is for.
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}
