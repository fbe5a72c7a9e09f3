//! A small durable key-value journal on Tidewater's own log, for the broker's internal state
//! (committed offsets, transactions): the role Kafka's internal topics play.
//!
//! Each write is one uncompressed batch of key/value records, fsynced before `write` returns.
//! Opening replays every record in order; the caller folds them into its state, latest record
//! per key winning. Journals live in dot-directories of the data directory, which never parse
//! as `<topic>-<partition>`, so they are never mistaken for topics.
//!
//! Known cost: journals are not compacted yet, so they grow with every write and replay takes
//! longer as they do.

use std::path::Path;
use std::sync::Arc;

use tidewater_log::batch::{self, encode_batch};
use tidewater_log::{Clock, FsyncPolicy, Log, LogConfig, LogError};

/// Bytes read per step while replaying at startup.
const REPLAY_READ_BYTES: usize = 1024 * 1024;
/// Segment size of internal journals: small, they hold small records.
const JOURNAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// One journal record: key and value bytes (an empty value is a tombstone).
pub(crate) type JournalRecord = (Vec<u8>, Vec<u8>);

#[derive(Debug)]
pub(crate) struct Journal {
    log: Log,
}

impl Journal {
    /// Opens (creating if needed) the journal in `data_dir/dir_name` and returns it with every
    /// record in it, oldest first, as (key, value) pairs (an empty value is a tombstone).
    pub(crate) fn open(
        data_dir: &Path,
        dir_name: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<(Journal, Vec<JournalRecord>), LogError> {
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: JOURNAL_SEGMENT_BYTES,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let log = Log::open(data_dir.join(dir_name), config, clock)?;
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

    /// Appends `records` as one batch and waits until it is on disk.
    pub(crate) fn write(&self, timestamp_ms: i64, records: &[JournalRecord]) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let borrowed: Vec<(Option<&[u8]>, &[u8])> =
            records.iter().map(|(key, value)| (Some(key.as_slice()), value.as_slice())).collect();
        let mut batch = encode_batch(timestamp_ms, &borrowed);
        let appended = self.log.append(&mut batch)?;
        self.log.wait_durable(appended.next_offset)
    }

    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.log.close()
    }
}
