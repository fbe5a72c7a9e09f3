//! Idempotent producers (KIP-98): producer ids, and per partition the state that turns a
//! producer's retries into duplicates instead of second copies.
//!
//! A producer gets an id and an epoch from InitProducerId and numbers its batches per partition
//! with sequence numbers. For each partition the broker remembers, per producer, its epoch and
//! its last five batches (Kafka's limit of in-flight requests for an idempotent producer): a
//! batch whose sequence range matches one of those is a retry of something already written and
//! is acknowledged with the original offset, not appended again; a batch that does not follow
//! the last one is out of order and refused.
//!
//! The state is rebuilt after a restart from the partition's latest snapshot
//! (`producer_snapshot.rs`) and the batch headers after it, which carry the producer id, epoch
//! and sequences. This module is a state machine with no I/O: the broker feeds it headers and
//! asks it questions, and takes and restores its snapshots.

use std::collections::{HashMap, VecDeque};

use tidewater_kafka::ResponseError;
use tidewater_log::batch::BatchHeader;

/// Batches remembered per producer and partition: Kafka's max in-flight for idempotence.
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;
/// Kafka's `producer.id.expiration.ms` default: forget producers idle this long.
pub(crate) const PRODUCER_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;
/// Sequence numbers wrap from i32::MAX to 0.
const SEQUENCE_MODULUS: i64 = i32::MAX as i64 + 1;

/// One batch a producer wrote here: its sequence range and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrittenBatch {
    pub(crate) first_sequence: i32,
    pub(crate) last_sequence: i32,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<WrittenBatch>,
    last_write_ms: i64,
}

/// One producer's state as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerRecord {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) last_write_ms: i64,
    /// Oldest first, at most `BATCHES_PER_PRODUCER`.
    pub(crate) batches: Vec<WrittenBatch>,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not seen before and in order: append it.
    Append,
    /// A retry of a batch already written at this base offset: acknowledge, do not append.
    Duplicate { base_offset: i64 },
}

/// Producer state of one partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionProducers {
    producers: HashMap<i64, ProducerEntry>,
}

impl PartitionProducers {
    /// Decides what to do with `header`'s batch. Batches without a producer id always append.
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, (ResponseError, String)> {
        if header.producer_id < 0 || header.is_control() {
            return Ok(SequenceCheck::Append);
        }
        let last_sequence = last_sequence(header);
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err((
                    ResponseError::UnknownProducerId,
                    format!(
                        "producer {} is unknown here and its batch starts at sequence {}, not 0",
                        header.producer_id, header.base_sequence
                    ),
                ))
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err((
                ResponseError::InvalidProducerEpoch,
                format!(
                    "producer {} epoch {} is older than {}",
                    header.producer_id, header.producer_epoch, entry.epoch
                ),
            ));
        }
        if header.producer_epoch > entry.epoch {
            // A new epoch starts its sequences again at 0.
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err((
                    ResponseError::OutOfOrderSequenceNumber,
                    format!(
                        "new epoch {} must start at sequence 0, not {}",
                        header.producer_epoch, header.base_sequence
                    ),
                ))
            };
        }
        if let Some(written) = entry.recent.iter().find(|written| {
            written.first_sequence == header.base_sequence && written.last_sequence == last_sequence
        }) {
            return Ok(SequenceCheck::Duplicate { base_offset: written.base_offset });
        }
        let expected = entry.recent.back().map_or(0, |written| next_sequence(written.last_sequence));
        if header.base_sequence != expected {
            return Err((
                ResponseError::OutOfOrderSequenceNumber,
                format!(
                    "producer {} sent sequence {} but {} was expected",
                    header.producer_id, header.base_sequence, expected
                ),
            ));
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that was appended (or found in the log on recovery) at `header.base_offset`.
    pub(crate) fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        if header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            self.record_marker(header.producer_id, header.producer_epoch, now_ms);
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_insert_with(|| ProducerEntry {
            epoch: header.producer_epoch,
            recent: VecDeque::with_capacity(BATCHES_PER_PRODUCER),
            last_write_ms: now_ms,
        });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == BATCHES_PER_PRODUCER {
            entry.recent.pop_front();
        }
        entry.recent.push_back(WrittenBatch {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
    }

    /// Records a transaction marker the coordinator wrote for `producer_id` at `producer_epoch`.
    /// Markers carry no sequence, but their epoch counts: when the coordinator fences a producer
    /// (a new instance with the same transactional id, or a transaction past its timeout) it
    /// writes the abort marker at a newer epoch, and from then on only that epoch may write
    /// here. Without this a fenced producer could keep appending to a partition it had already
    /// added, and its records would open a transaction here that no coordinator knows of (or be
    /// committed by its successor's marker). As Kafka's `ProducerStateEntry.update`.
    pub(crate) fn record_marker(&mut self, producer_id: i64, producer_epoch: i16, now_ms: i64) {
        let entry = self.producers.entry(producer_id).or_insert_with(|| ProducerEntry {
            epoch: producer_epoch,
            recent: VecDeque::with_capacity(BATCHES_PER_PRODUCER),
            last_write_ms: now_ms,
        });
        if producer_epoch > entry.epoch {
            // The new epoch starts its sequences at 0; the old epoch's batches no longer count.
            entry.epoch = producer_epoch;
            entry.recent.clear();
        }
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
    }

    /// The last offset of each known producer's last batch: the batches compaction must keep
    /// (emptied if need be), because producer state is rebuilt from their sequence numbers after
    /// a restart (Kafka keeps the same batches).
    pub(crate) fn last_batch_offsets(&self) -> Vec<i64> {
        self.producers
            .values()
            .filter_map(|entry| entry.recent.back().map(|batch| batch.last_offset))
            .collect()
    }

    /// Every producer's state, ordered by producer id, for a snapshot.
    pub(crate) fn snapshot(&self) -> Vec<ProducerRecord> {
        let mut records: Vec<ProducerRecord> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ProducerRecord {
                producer_id,
                epoch: entry.epoch,
                last_write_ms: entry.last_write_ms,
                batches: entry.recent.iter().copied().collect(),
            })
            .collect();
        records.sort_unstable_by_key(|record| record.producer_id);
        records
    }

    /// The state a snapshot holds (the snapshot codec bounds each producer's batches).
    pub(crate) fn restore(records: Vec<ProducerRecord>) -> PartitionProducers {
        let producers = records
            .into_iter()
            .map(|record| {
                let mut recent: VecDeque<WrittenBatch> = record.batches.into_iter().collect();
                while recent.len() > BATCHES_PER_PRODUCER {
                    recent.pop_front();
                }
                let entry =
                    ProducerEntry { epoch: record.epoch, recent, last_write_ms: record.last_write_ms };
                (record.producer_id, entry)
            })
            .collect();
        PartitionProducers { producers }
    }

    /// Forgets producers that have not written for `PRODUCER_EXPIRATION_MS`.
    pub(crate) fn expire(&mut self, now_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| now_ms - entry.last_write_ms < PRODUCER_EXPIRATION_MS);
        before - self.producers.len()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }
}

fn last_sequence(header: &BatchHeader) -> i32 {
    ((i64::from(header.base_sequence) + i64::from(header.last_offset_delta)) % SEQUENCE_MODULUS) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    ((i64::from(sequence) + 1) % SEQUENCE_MODULUS) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: i32,
        base_offset: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records,
        }
    }

    /// Runs `steps` of (batch, expected check) and records each batch that appends.
    fn check(steps: &[(BatchHeader, Result<SequenceCheck, ResponseError>)]) {
        let mut producers = PartitionProducers::default();
        for (index, (header, expected)) in steps.iter().enumerate() {
            let actual = producers.check(header).map_err(|(code, _)| code);
            assert_eq!(&actual, expected, "step {index}");
            if actual == Ok(SequenceCheck::Append) {
                producers.record(header, 0);
            }
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        check(&[
            (batch(7, 0, 0, 3, 100), Ok(SequenceCheck::Append)),
            (batch(7, 0, 3, 2, 103), Ok(SequenceCheck::Append)),
            (batch(7, 0, 0, 3, 999), Ok(SequenceCheck::Duplicate { base_offset: 100 })),
            (batch(7, 0, 3, 2, 999), Ok(SequenceCheck::Duplicate { base_offset: 103 })),
            (batch(7, 0, 5, 1, 105), Ok(SequenceCheck::Append)),
        ]);
    }

    #[test]
    fn gaps_old_epochs_and_unknown_producers_are_refused() {
        check(&[
            (batch(7, 1, 0, 1, 0), Ok(SequenceCheck::Append)),
            (batch(7, 1, 2, 1, 1), Err(ResponseError::OutOfOrderSequenceNumber)),
            (batch(7, 0, 1, 1, 1), Err(ResponseError::InvalidProducerEpoch)),
            (batch(8, 0, 5, 1, 1), Err(ResponseError::UnknownProducerId)),
            (batch(7, 2, 3, 1, 1), Err(ResponseError::OutOfOrderSequenceNumber)),
            (batch(7, 2, 0, 1, 1), Ok(SequenceCheck::Append)),
            (batch(-1, -1, -1, 1, 2), Ok(SequenceCheck::Append)),
        ]);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut steps: Vec<_> = (0..6)
            .map(|index| (batch(1, 0, index, 1, i64::from(index)), Ok(SequenceCheck::Append)))
            .collect();
        // The first batch fell out of the window: its retry is now out of order.
        steps.push((batch(1, 0, 0, 1, 99), Err(ResponseError::OutOfOrderSequenceNumber)));
        steps.push((batch(1, 0, 1, 1, 99), Ok(SequenceCheck::Duplicate { base_offset: 1 })));
        check(&steps);
        check(&[(batch(2, 0, 0, 1, 0), Ok(SequenceCheck::Append))]);
        let mut producers = PartitionProducers::default();
        let near_end = batch(3, 0, i32::MAX - 1, 2, 0);
        producers.record(&near_end, 0);
        assert_eq!(producers.check(&batch(3, 0, 0, 1, 2)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn a_marker_at_a_newer_epoch_fences_the_older_epoch() {
        let mut producers = PartitionProducers::default();
        producers.record(&batch(4, 0, 0, 2, 0), 0);
        // The coordinator fenced epoch 0 and aborted its transaction with a marker at epoch 1.
        producers.record_marker(4, 1, 0);
        assert_eq!(
            producers.check(&batch(4, 0, 2, 1, 3)).map_err(|(code, _)| code),
            Err(ResponseError::InvalidProducerEpoch),
            "the fenced producer's next batch"
        );
        assert_eq!(producers.check(&batch(4, 1, 0, 1, 3)), Ok(SequenceCheck::Append), "its successor");
        // A marker at the producer's own epoch (a plain commit) changes nothing.
        producers.record(&batch(4, 1, 0, 1, 3), 0);
        producers.record_marker(4, 1, 0);
        assert_eq!(producers.check(&batch(4, 1, 1, 1, 5)), Ok(SequenceCheck::Append));
        // A marker for a producer that never wrote here still fences its older epochs.
        producers.record_marker(9, 3, 0);
        assert_eq!(
            producers.check(&batch(9, 2, 0, 1, 6)).map_err(|(code, _)| code),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(producers.check(&batch(9, 3, 0, 1, 6)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn a_snapshot_restores_the_same_decisions() {
        let mut producers = PartitionProducers::default();
        for index in 0..7 {
            producers.record(&batch(1, 0, index, 1, i64::from(index)), 5);
        }
        producers.record(&batch(2, 3, 0, 4, 7), 6);
        producers.record_marker(3, 2, 7);
        let restored = PartitionProducers::restore(producers.snapshot());
        assert_eq!(restored.snapshot(), producers.snapshot());
        for header in [
            batch(1, 0, 6, 1, 99),
            batch(1, 0, 1, 1, 99),
            batch(1, 0, 2, 1, 99),
            batch(1, 0, 7, 1, 99),
            batch(2, 3, 4, 1, 99),
            batch(2, 2, 4, 1, 99),
            batch(3, 1, 0, 1, 99),
            batch(3, 2, 0, 1, 99),
        ] {
            assert_eq!(restored.check(&header), producers.check(&header), "{header:?}");
        }
    }

    #[test]
    fn idle_producers_expire() {
        let mut producers = PartitionProducers::default();
        producers.record(&batch(1, 0, 0, 1, 0), 0);
        producers.record(&batch(2, 0, 0, 1, 1), PRODUCER_EXPIRATION_MS);
        assert_eq!(producers.expire(PRODUCER_EXPIRATION_MS), 1);
        assert_eq!(producers.len(), 1);
    }
}
