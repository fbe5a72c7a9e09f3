//! One partition as the broker serves it: its log plus the idempotent-producer state that
//! decides whether a batch is appended, acknowledged as a duplicate, or refused.

use std::sync::{Arc, Mutex};

use tidewater_kafka::ResponseError;
use tidewater_log::batch::{self, BatchHeader, BATCH_BYTES_HARD_MAX};
use tidewater_log::{Appended, Log, LogError};

use crate::broker::ApiError;
use crate::error::log_error_code;
use crate::producers::{PartitionProducers, SequenceCheck};

/// Segments scanned back from the active one to rebuild producer state after a restart. A
/// producer's retries reach back at most five batches, so recent history is enough; a producer
/// not seen there gets UNKNOWN_PRODUCER_ID and resets, as after Kafka expires its state.
const PRODUCER_STATE_SEGMENTS: usize = 2;

#[derive(Debug)]
pub struct Partition {
    pub log: Arc<Log>,
    producers: Mutex<PartitionProducers>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    Appended(Appended),
    /// The batch was a producer's retry of one already in the log at this offset.
    Duplicate {
        base_offset: i64,
    },
}

impl Partition {
    /// Wraps an open log, rebuilding producer state from its recent batches.
    pub(crate) fn open(log: Arc<Log>, now_ms: i64) -> Result<Partition, LogError> {
        let mut producers = PartitionProducers::default();
        let from = log.recent_segments_start(PRODUCER_STATE_SEGMENTS);
        log.for_each_batch(from, |header| producers.record(header, now_ms))?;
        Ok(Partition { log, producers: Mutex::new(producers) })
    }

    /// Appends a produce request's batches for this partition, applying the idempotent-producer
    /// checks. The producer state stays locked from check to record, so two requests cannot both
    /// pass the check for the same sequence.
    pub(crate) fn append(&self, records: &mut [u8], now_ms: i64) -> Result<AppendOutcome, ApiError> {
        let headers = batch_headers(records)?;
        let mut producers = self.producers.lock().expect("producer state mutex poisoned by a panic");
        let mut duplicate = None;
        for header in &headers {
            match producers.check(header).map_err(|(code, message)| ApiError::new(code, message))? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate { base_offset } => duplicate = Some(base_offset),
            }
        }
        if let Some(base_offset) = duplicate {
            if headers.len() == 1 {
                return Ok(AppendOutcome::Duplicate { base_offset });
            }
            // Producers send one batch per partition; a mix of new and repeated batches in one
            // request is not something a correct client does.
            return Err(ApiError::new(
                ResponseError::InvalidRecord,
                "a produce request mixes new and duplicate batches",
            ));
        }
        let appended = self
            .log
            .append(records)
            .map_err(|error| ApiError::new(log_error_code(&error), error.to_string()))?;
        let mut base_offset = appended.base_offset;
        for header in &headers {
            let header = BatchHeader { base_offset, ..*header };
            producers.record(&header, now_ms);
            base_offset = header.next_offset();
        }
        Ok(AppendOutcome::Appended(appended))
    }

    /// Forgets idle producers; returns how many.
    pub(crate) fn expire_producers(&self, now_ms: i64) -> usize {
        self.producers.lock().expect("producer state mutex poisoned by a panic").expire(now_ms)
    }
}

/// The headers of every batch in a produce request's records, checked for length and magic
/// only (the log checks everything else when it appends).
fn batch_headers(records: &[u8]) -> Result<Vec<BatchHeader>, ApiError> {
    let corrupt = |reason: String| ApiError::new(ResponseError::CorruptMessage, reason);
    let mut headers = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = batch::parse_header(&records[position..], BATCH_BYTES_HARD_MAX)
            .map_err(|error| corrupt(format!("batch at byte {position}: {error}")))?;
        position += header.total_bytes();
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(corrupt("no record batches".to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_log::{LogConfig, ManualClock};

    /// A v2 batch from producer `producer_id` at `epoch`, starting at `sequence`.
    fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
        let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|value| (None, *value)).collect();
        let mut bytes = batch::encode_batch(1_000, &records);
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn crc32c(bytes: &[u8]) -> u32 {
        // CRC-32C (Castagnoli), bitwise: small and only for building test batches.
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn open(dir: &std::path::Path) -> Partition {
        let log = Log::open(dir, LogConfig::default(), Arc::new(ManualClock::new(1_000))).expect("open log");
        Partition::open(Arc::new(log), 1_000).expect("open partition")
    }

    #[test]
    fn a_retried_batch_is_acknowledged_with_its_first_offset_and_not_written_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(dir.path());
        let first = partition.append(&mut idempotent_batch(5, 0, 0, &[b"a", b"b"]), 1_000).expect("append");
        assert!(matches!(first, AppendOutcome::Appended(appended) if appended.base_offset == 0));
        partition.append(&mut idempotent_batch(5, 0, 2, &[b"c"]), 1_000).expect("append");
        let retry = partition.append(&mut idempotent_batch(5, 0, 0, &[b"a", b"b"]), 1_000).expect("retry");
        assert_eq!(retry, AppendOutcome::Duplicate { base_offset: 0 });
        assert_eq!(partition.log.end_offset(), 3);
        let gap = partition.append(&mut idempotent_batch(5, 0, 7, &[b"x"]), 1_000).expect_err("gap");
        assert_eq!(gap.code, ResponseError::OutOfOrderSequenceNumber);
        assert_eq!(partition.log.end_offset(), 3);
    }

    #[test]
    fn producer_state_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut idempotent_batch(9, 2, 0, &[b"a"]), 1_000).expect("append");
            partition.append(&mut idempotent_batch(9, 2, 1, &[b"b"]), 1_000).expect("append");
        }
        let partition = open(dir.path());
        let retry = partition.append(&mut idempotent_batch(9, 2, 1, &[b"b"]), 1_000).expect("retry");
        assert_eq!(retry, AppendOutcome::Duplicate { base_offset: 1 });
        let next = partition.append(&mut idempotent_batch(9, 2, 2, &[b"c"]), 1_000).expect("next");
        assert!(matches!(next, AppendOutcome::Appended(appended) if appended.base_offset == 2));
        let stale = partition.append(&mut idempotent_batch(9, 1, 3, &[b"d"]), 1_000).expect_err("old epoch");
        assert_eq!(stale.code, ResponseError::InvalidProducerEpoch);
    }
}
