//! A small durable key-value journal on Tidewater's own log, for the broker's internal state
//! (committed offsets, transactions): the role Kafka's internal topics play.
//!
//! Each write is one uncompressed batch of key/value records, fsynced before `write` returns.
//! Opening replays every record in order; the caller folds them into its state, latest record
//! per key winning. Journals live in dot-directories of the data directory, which never parse
//! as `<topic>-<partition>`, so they are never mistaken for topics.
//!
//! A journal is a compacted log (`cleanup.policy=compact`), cleaned by the broker's cleaner with
//! the compacted topics: only the latest record of each key stays, and a deletion (written as a
//! tombstone, a null value) goes `delete.retention.ms` after the cleaning that first kept it. So
//! what a start replays is bounded by the live keys (the clean part), the dirty part the cleaner
//! has not reached (at most about as large again, by the dirty ratio) and the active segment
//! (`JOURNAL_SEGMENT_BYTES`), not by every write ever made.

use std::path::Path;
use std::sync::Arc;

use tidewater_log::batch::{self, encode_records};
use tidewater_log::{CleanupPolicy, Clock, FsyncPolicy, Log, LogConfig, LogError};

/// Bytes read per step while replaying at startup.
const REPLAY_READ_BYTES: usize = 1024 * 1024;
/// Segment size of internal journals. The active segment is never cleaned, so this bounds what a
/// start replays beyond the live keys; small enough to reach the cleaner soon, large enough that
/// a busy journal (every offset commit is a write) does not roll every few seconds.
const JOURNAL_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// One journal record: key and value bytes (an empty value is a tombstone).
pub(crate) type JournalRecord = (Vec<u8>, Vec<u8>);

#[derive(Debug)]
pub(crate) struct Journal {
    log: Arc<Log>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `data_dir/dir_name` and returns it with every
    /// record in it, oldest first, as (key, value) pairs (an empty value is a tombstone).
    pub(crate) fn open(
        data_dir: &Path,
        dir_name: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<(Journal, Vec<JournalRecord>), LogError> {
        Journal::open_with_segments(data_dir, dir_name, clock, JOURNAL_SEGMENT_BYTES)
    }

    /// `open` with segments of `segment_bytes` (tests use small ones).
    fn open_with_segments(
        data_dir: &Path,
        dir_name: &str,
        clock: Arc<dyn Clock>,
        segment_bytes: u64,
    ) -> Result<(Journal, Vec<JournalRecord>), LogError> {
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes,
            retention_ms: -1,
            cleanup_policy: CleanupPolicy::COMPACT,
            ..LogConfig::default()
        };
        let log = Arc::new(Log::open(data_dir.join(dir_name), config, clock)?);
        let corrupt =
            |reason: String| LogError::Corrupt { path: log.dir().to_path_buf(), position: 0, reason };
        let mut records = Vec::new();
        let mut position = log.log_start_offset();
        let end = log.end_offset();
        while position < end {
            let Some(range) = log.read(position, REPLAY_READ_BYTES, end)? else { break };
            let bytes = range.read_bytes().map_err(|source| LogError::Io {
                op: "read",
                path: log.dir().to_path_buf(),
                source,
            })?;
            let mut cursor = &bytes[..];
            while !cursor.is_empty() {
                let total = batch::peek_total_bytes(cursor, batch::BATCH_BYTES_HARD_MAX)
                    .map_err(|error| corrupt(error.to_string()))?;
                let decoded = batch::records(&cursor[..total])
                    .ok_or_else(|| corrupt("a journal batch is compressed or malformed".to_string()))?;
                for record in decoded {
                    records.push((
                        record.key.unwrap_or_default().to_vec(),
                        record.value.unwrap_or_default().to_vec(),
                    ));
                }
                cursor = &cursor[total..];
            }
            position = range.next_offset;
        }
        Ok((Journal { log }, records))
    }

    /// Appends `records` as one batch and waits until it is on disk. An empty value is written
    /// as a tombstone (a null value), which compaction removes in time; replay reads it back as
    /// an empty value either way.
    pub(crate) fn write(&self, timestamp_ms: i64, records: &[JournalRecord]) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let borrowed: Vec<batch::KeyValue<'_>> = records
            .iter()
            .map(|(key, value)| (Some(key.as_slice()), (!value.is_empty()).then_some(value.as_slice())))
            .collect();
        let mut batch = encode_records(timestamp_ms, &borrowed, None);
        let appended = self.log.append(&mut batch)?;
        self.log.wait_durable(appended.next_offset)
    }

    /// The journal's log, for the broker's cleaner.
    pub(crate) fn log(&self) -> Arc<Log> {
        self.log.clone()
    }

    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.log.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_log::{CleanOptions, CleanOutcome, ManualClock};

    /// Regression guard for bounded restarts: a journal written many times over a few keys
    /// replays, once cleaned, little more than the latest record of each key.
    #[test]
    fn a_cleaned_journal_replays_only_the_latest_record_of_each_key() {
        const SEGMENT_BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        let value = vec![7u8; 1024];
        let open = || Journal::open_with_segments(dir.path(), ".test", clock.clone(), SEGMENT_BYTES);
        let mut n_written = 0;
        {
            let (journal, records) = open().expect("open");
            assert!(records.is_empty());
            while n_written < 4 * SEGMENT_BYTES as usize / value.len() {
                let records: Vec<JournalRecord> =
                    (0..8).map(|index| (format!("key-{}", index % 4).into_bytes(), value.clone())).collect();
                journal.write(1_000, &records).expect("write");
                n_written += records.len();
            }
            journal.write(1_000, &[(b"key-3".to_vec(), Vec::new())]).expect("delete");
            let log = journal.log();
            assert!(log.segment_count() > 3, "{} segments", log.segment_count());
            let cleaned = log.clean(&CleanOptions::default()).expect("clean");
            assert!(matches!(cleaned, CleanOutcome::Cleaned(_)), "{cleaned:?}");
            journal.close().expect("close");
        }
        let (journal, records) = open().expect("reopen");
        // The latest record of every key, and the superseded ones of the active segment only
        // (it is never cleaned).
        let replayed_bytes: usize = records.iter().map(|(key, value)| key.len() + value.len()).sum();
        assert!(
            replayed_bytes < SEGMENT_BYTES as usize + 8 * value.len(),
            "replayed {replayed_bytes} bytes of the {} written",
            n_written * value.len()
        );
        let latest: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = records.into_iter().collect();
        let keys: Vec<&[u8]> = latest.keys().map(Vec::as_slice).collect();
        assert_eq!(keys, [b"key-0".as_slice(), b"key-1", b"key-2", b"key-3"]);
        assert_eq!(
            latest.get(b"key-3".as_slice()),
            Some(&Vec::new()),
            "a deletion reads back as an empty value"
        );
        assert_eq!(latest.get(b"key-0".as_slice()), Some(&value));
        journal.close().expect("close");
    }
}
