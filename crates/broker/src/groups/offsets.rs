//! Committed consumer offsets, durable: every commit is a record in an internal journal (the
//! role of Kafka's `__consumer_offsets`), fsynced before the commit is acknowledged, and
//! replayed into memory when the broker starts.
//!
//! Records: key = JSON `[group, topic, partition]`, value = JSON of the committed offset, or an
//! empty value as a tombstone (group or offsets deleted, or expired).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidewater_log::{Clock, LogError};

use crate::internal_log::Journal;

/// The journal's directory inside the data directory.
pub const OFFSETS_DIR_NAME: &str = ".consumer-offsets";

/// One partition's committed position, as OffsetCommit stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// A topic and partition, the key of a committed offset within its group.
pub type PartitionKey = (String, i32);
/// A commit (`Some`) or deletion (`None`) of one partition's offset, as `OffsetStore::write` takes.
pub type OffsetChange = (PartitionKey, Option<CommittedOffset>);

#[derive(Debug)]
pub struct OffsetStore {
    journal: Journal,
    offsets: HashMap<String, BTreeMap<PartitionKey, CommittedOffset>>,
}

impl OffsetStore {
    /// Opens (creating if needed) the journal under `data_dir` and replays it.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<OffsetStore, LogError> {
        let (journal, records) = Journal::open(data_dir, OFFSETS_DIR_NAME, clock)?;
        let mut store = OffsetStore { journal, offsets: HashMap::new() };
        let mut skipped = 0usize;
        for (key, value) in records {
            let decoded = serde_json::from_slice::<(String, String, i32)>(&key).ok().and_then(
                |(group, topic, partition)| {
                    let committed =
                        if value.is_empty() { None } else { Some(serde_json::from_slice(&value).ok()?) };
                    Some((group, (topic, partition), committed))
                },
            );
            match decoded {
                Some((group, key, committed)) => store.apply(&group, key, committed),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(skipped, "unreadable records in the consumer offsets journal were skipped");
        }
        Ok(store)
    }

    /// Writes commits (or deletions, with `None`) for one group and waits until they are on
    /// disk, then applies them. Nothing is applied if the write fails.
    pub fn write(
        &mut self,
        group: &str,
        entries: Vec<(PartitionKey, Option<CommittedOffset>)>,
    ) -> Result<(), LogError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|((topic, partition), committed)| {
                let key = serde_json::to_vec(&(group, topic, partition)).unwrap_or_default();
                let value =
                    committed.as_ref().map(|committed| serde_json::to_vec(committed).unwrap_or_default());
                (key, value.unwrap_or_default())
            })
            .collect();
        let timestamp = entries
            .iter()
            .filter_map(|(_, committed)| committed.as_ref())
            .map(|c| c.commit_timestamp_ms)
            .max();
        self.journal.write(timestamp.unwrap_or(0), &records)?;
        for (key, committed) in entries {
            self.apply(group, key, committed);
        }
        Ok(())
    }

    fn apply(&mut self, group: &str, key: PartitionKey, committed: Option<CommittedOffset>) {
        let group_offsets = self.offsets.entry(group.to_string()).or_default();
        match committed {
            Some(committed) => {
                group_offsets.insert(key, committed);
            }
            None => {
                group_offsets.remove(&key);
            }
        }
        if group_offsets.is_empty() {
            self.offsets.remove(group);
        }
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
        self.journal.close()
    }

    /// The journal's log, for the broker's cleaner.
    pub(crate) fn journal_log(&self) -> Arc<tidewater_log::Log> {
        self.journal.log()
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
