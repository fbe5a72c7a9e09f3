//! Broker errors and their Kafka error codes.

use std::path::PathBuf;

use tidewater_kafka::ResponseError;
use tidewater_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker metadata {path}: {reason}")]
    Meta { path: PathBuf, reason: String },
    #[error("ACL journal {path}: {reason}")]
    Acls { path: PathBuf, reason: String },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    InvalidRequest(String),
}

/// The Kafka error code a client gets for a log error on a partition.
pub(crate) fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::InvalidBatch { .. } | LogError::EmptyAppend => ResponseError::CorruptMessage,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        // The partition is being deleted or the broker is shutting down: the client should
        // refresh its metadata and retry, as after a leader change.
        LogError::Closed => ResponseError::NotLeaderOrFollower,
        LogError::Corrupt { .. } | LogError::Poisoned { .. } | LogError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
    }
}
