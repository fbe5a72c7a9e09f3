//! Committed consumer offsets, durable: every commit is a record in Tidewater's own internal
//! log (the role of Kafka's `__consumer_offsets`), fsynced before the commit is acknowledged,
//! and replayed into memory when the broker starts.
//!
//! Records: key = JSON `[group, topic, partition]`, value = JSON of the committed offset, or an
//! empty value as a tombstone (group or offsets deleted, or expired). The latest record per key
//! wins. The log is kept uncompressed so replay needs no codecs.
//!
//! Known cost: the log is never compacted yet, so it grows with every commit (around 100 bytes
//! each) and replay time grows with it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidewater_log::batch::{self, encode_batch};
use tidewater_log::{Clock, FsyncPolicy, Log, LogConfig, LogError};

/// The internal log's directory inside the data directory. Its name is not `<topic>-<n>`, so
/// it is never mistaken for a topic.
pub const OFFSETS_DIR_NAME: &str = ".consumer-offsets";
/// Bytes read per step while replaying the log at startup.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// One partition's committed position, as OffsetCommit stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

type PartitionKey = (String, i32);

#[derive(Debug)]
pub struct OffsetStore {
    log: Log,
    offsets: HashMap<String, BTreeMap<PartitionKey, CommittedOffset>>,
}

impl OffsetStore {
    /// Opens (creating if needed) the internal log under `data_dir` and replays it.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<OffsetStore, LogError> {
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 * 1024 * 1024,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let log = Log::open(data_dir.join(OFFSETS_DIR_NAME), config, clock)?;
        let mut offsets: HashMap<String, BTreeMap<PartitionKey, CommittedOffset>> = HashMap::new();
        let mut position = log.log_start_offset();
        let end = log.end_offset();
        let mut skipped = 0usize;
        while position < end {
            let Some(range) = log.read(position, REPLAY_READ_BYTES, end)? else { break };
            let bytes = range.read_bytes().map_err(|source| LogError::Io {
                op: "read",
                path: log.dir().to_path_buf(),
                source,
            })?;
            let mut cursor = &bytes[..];
            while !cursor.is_empty() {
                let total =
                    batch::peek_total_bytes(cursor, batch::BATCH_BYTES_HARD_MAX).map_err(|error| {
                        LogError::Corrupt {
                            path: log.dir().to_path_buf(),
                            position: 0,
                            reason: error.to_string(),
                        }
                    })?;
                for record in batch::records(&cursor[..total]).unwrap_or_default() {
                    if !apply(&mut offsets, record.key, record.value) {
                        skipped += 1;
                    }
                }
                cursor = &cursor[total..];
            }
            position = range.next_offset;
        }
        if skipped > 0 {
            tracing::warn!(skipped, "unreadable records in the consumer offsets log were skipped");
        }
        Ok(OffsetStore { log, offsets })
    }

    /// Appends commits (or deletions, with `None`) for one group and waits until they are on
    /// disk, then applies them. Nothing is applied if the write fails.
    pub fn write(
        &mut self,
        group: &str,
        entries: Vec<(PartitionKey, Option<CommittedOffset>)>,
    ) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|((topic, partition), committed)| {
                let key = serde_json::to_vec(&(group, topic, partition)).unwrap_or_default();
                let value = committed
                    .as_ref()
                    .map(|committed| serde_json::to_vec(committed).unwrap_or_default())
                    .unwrap_or_default();
                (key, value)
            })
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            encoded.iter().map(|(key, value)| (Some(key.as_slice()), value.as_slice())).collect();
        let timestamp = entries
            .iter()
            .filter_map(|(_, committed)| committed.as_ref())
            .map(|c| c.commit_timestamp_ms)
            .max()
            .unwrap_or(0);
        let mut batch = encode_batch(timestamp, &records);
        let appended = self.log.append(&mut batch)?;
        self.log.wait_durable(appended.next_offset)?;
        let group_offsets = self.offsets.entry(group.to_string()).or_default();
        for (key, committed) in entries {
            match committed {
                Some(committed) => {
                    group_offsets.insert(key, committed);
                }
                None => {
                    group_offsets.remove(&key);
                }
            }
        }
        if group_offsets.is_empty() {
            self.offsets.remove(group);
        }
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(group)?.get(&(topic.to_string(), partition))
    }

    /// Every committed offset of a group, by topic and partition.
    pub fn group(&self, group: &str) -> Vec<(&str, i32, &CommittedOffset)> {
        self.offsets
            .get(group)
            .map(|offsets| {
                offsets
                    .iter()
                    .map(|((topic, partition), committed)| (topic.as_str(), *partition, committed))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.offsets.keys().cloned().collect()
    }

    /// The newest commit time among a group's offsets.
    pub fn last_commit_ms(&self, group: &str) -> Option<i64> {
        self.offsets.get(group)?.values().map(|committed| committed.commit_timestamp_ms).max()
    }

    pub fn close(&self) -> Result<(), LogError> {
        self.log.close()
    }
}

/// Applies one record of the log to the map; false if it could not be read.
fn apply(
    offsets: &mut HashMap<String, BTreeMap<PartitionKey, CommittedOffset>>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> bool {
    let Some(Ok((group, topic, partition))) = key.map(serde_json::from_slice::<(String, String, i32)>) else {
        return false;
    };
    match value.filter(|value| !value.is_empty()) {
        Some(value) => match serde_json::from_slice::<CommittedOffset>(value) {
            Ok(committed) => {
                offsets.entry(group).or_default().insert((topic, partition), committed);
                true
            }
            Err(_) => false,
        },
        None => {
            if let Some(group_offsets) = offsets.get_mut(&group) {
                group_offsets.remove(&(topic, partition));
                if group_offsets.is_empty() {
                    offsets.remove(&group);
                }
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_log::ManualClock;

    fn committed(offset: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: 0,
            metadata: Some("m".into()),
            commit_timestamp_ms: 1_000,
        })
    }

    #[test]
    fn commits_and_deletions_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        {
            let mut store = OffsetStore::open(dir.path(), clock.clone()).expect("open");
            store
                .write("g1", vec![(("t".into(), 0), committed(5)), (("t".into(), 1), committed(7))])
                .expect("commit");
            store.write("g1", vec![(("t".into(), 0), committed(9))]).expect("commit");
            store.write("g2", vec![(("t".into(), 0), committed(1))]).expect("commit");
            store.write("g2", vec![(("t".into(), 0), None)]).expect("delete");
        }
        let store = OffsetStore::open(dir.path(), clock).expect("reopen");
        assert_eq!(store.get("g1", "t", 0).map(|c| c.offset), Some(9));
        assert_eq!(store.get("g1", "t", 1).map(|c| c.offset), Some(7));
        assert_eq!(store.get("g1", "t", 1).and_then(|c| c.metadata.clone()), Some("m".to_string()));
        assert_eq!(store.get("g2", "t", 0), None);
        assert_eq!(store.groups(), vec!["g1".to_string()]);
    }
}
