//! The librdkafka context every Tidewater client uses: librdkafka's log lines go to the debug
//! log, and errors it reports outside any request (a broker unreachable, retried by librdkafka
//! itself) are a warning the first time and debug lines after, so a long-running job does not
//! flood its log and a command shows why it is slow without a screenful of the same line.
//! End-of-partition notices are not errors at all and are dropped.

use std::collections::HashSet;
use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, Default)]
pub struct QuietContext {
    /// Error codes (as numbers: the type is not `Hash`) already reported as warnings.
    reported: Mutex<HashSet<i32>>,
}

impl ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, facility, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().map_or(-1, |code| code as i32);
        if code == RDKafkaErrorCode::PartitionEOF as i32 {
            return;
        }
        // A poisoned lock only means another thread panicked while reporting; keep reporting.
        let first = self.reported.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(code);
        if first {
            tracing::warn!(target: "librdkafka", "{reason}");
        } else {
            tracing::debug!(target: "librdkafka", "{reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}
