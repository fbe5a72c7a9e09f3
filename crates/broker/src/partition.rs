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
