//! Group metadata, durable: what Kafka keeps in `__consumer_offsets` as group metadata records,
//! so that a restarted broker still knows each group's generation (classic) or epochs (KIP-848)
//! and its members, and members carry on without rejoining.
//!
//! One record per group, keyed by the group id, in a journal of its own (`.consumer-groups`,
//! next to the offsets journal): the value is the whole group as JSON, with a format version;
//! an empty value (a tombstone) when the group is gone. A group id is one kind or the other,
//! so one key serves both. A second journal rather than a key prefix in the offsets journal:
//! commits (the hot path) fsync under the offsets lock, and a membership change should not
//! wait behind them or they behind it; the two never need to be written together.
//!
//! When records are written: the state machines (`coordinator.rs`, `consumer_group.rs`) mark a
//! group when something durable changes (a generation synced, a member left or expired, an
//! epoch or assignment moved) and hand out a snapshot of each marked group with
//! `Coordinator::take_changes`, under the group lock, numbered in the order taken. The caller
//! writes them after letting go of that lock; `GroupStore::write` skips a snapshot older than
//! one already written for its group, so two writers racing cannot leave an older state last.
//! A heartbeat that changes nothing marks nothing and writes nothing.
//!
//! A record that does not parse, or names a newer format version, is reported with its group
//! id and skipped: that group starts empty (its members rejoin), the others load.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tidewater_log::{Clock, LogError};
use uuid::Uuid;

use crate::internal_log::{Journal, JournalRecord};

/// The journal's directory inside the data directory.
pub const GROUPS_DIR_NAME: &str = ".consumer-groups";

/// The format version written. A reader takes every version up to its own; later versions add
/// fields with defaults, and a version it does not know is skipped with a report.
pub const GROUP_RECORD_VERSION: u16 = 1;

/// One group as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupRecord {
    Classic(ClassicGroupRecord),
    Consumer(ConsumerGroupRecord),
}

/// A classic group: its last synced generation, or a join phase that a member's departure
/// started (then members must rejoin after a restart, as they had to before it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassicGroupRecord {
    pub state: ClassicRecordState,
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<ClassicMemberRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassicRecordState {
    Stable,
    PreparingRebalance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassicMemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, subscription metadata), in the member's order of preference.
    pub protocols: Vec<(String, Base64Bytes)>,
    pub assignment: Base64Bytes,
}

/// A consumer-protocol group: its epochs, target assignment and every member's place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupRecord {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: Option<String>,
    /// The subscribed topics as last seen: (name, id, partition count).
    pub topics: Vec<(String, Uuid, i32)>,
    pub members: Vec<ConsumerMemberRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub regex_topics: Vec<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// `stable`, `unrevoked_partitions` or `unreleased_partitions`.
    pub state: String,
    pub assigned: Vec<TopicPartitions>,
    pub pending_revocation: Vec<TopicPartitions>,
    /// Its partitions in the group's target assignment.
    pub target: Vec<TopicPartitions>,
}

/// A topic's id and partitions, as an assignment is stored (each topic id once).
pub type TopicPartitions = (Uuid, Vec<i32>);

/// Opaque client bytes (subscription metadata, assignments), base64 in the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Bytes);

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map(|bytes| Base64Bytes(Bytes::from(bytes))).map_err(serde::de::Error::custom)
    }
}

/// A group's record to write (`None`: the group is gone, write a tombstone), numbered in the
/// order the snapshots were taken under the group lock.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupChange {
    pub group_id: String,
    pub sequence: u64,
    pub record: Option<GroupRecord>,
}

/// The stored form: the format version next to the group.
#[derive(Serialize)]
struct StoredRef<'a> {
    version: u16,
    #[serde(flatten)]
    group: &'a GroupRecord,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u16,
}

pub fn encode(record: &GroupRecord) -> Vec<u8> {
    serde_json::to_vec(&StoredRef { version: GROUP_RECORD_VERSION, group: record })
        .expect("a group record is plain data and always serializes")
}

/// Reads one stored value, or says why it cannot be used.
pub fn decode(value: &[u8]) -> Result<GroupRecord, String> {
    let version = serde_json::from_slice::<VersionOnly>(value)
        .map_err(|error| format!("no format version: {error}"))?
        .version;
    if version > GROUP_RECORD_VERSION {
        return Err(format!("format version {version} is newer than this broker's {GROUP_RECORD_VERSION}"));
    }
    // The version is read above; the group's fields ignore it.
    serde_json::from_slice::<GroupRecord>(value).map_err(|error| format!("format version {version}: {error}"))
}

/// The journal of group records, and which snapshot of each group was written last.
#[derive(Debug)]
pub struct GroupStore {
    journal: Journal,
    /// The sequence number of the last snapshot written per group, so an older one that lost
    /// a race is not written after it. One entry per group written since the start.
    written: HashMap<String, u64>,
}

impl GroupStore {
    /// Opens (creating if needed) the journal under `data_dir` and returns it with the latest
    /// readable record of each live group. Unreadable records are reported and left out.
    pub fn open(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(GroupStore, BTreeMap<String, GroupRecord>), LogError> {
        let (journal, records) = Journal::open(data_dir, GROUPS_DIR_NAME, clock)?;
        Ok((GroupStore { journal, written: HashMap::new() }, latest_groups(records)))
    }

    /// Writes the changes not already superseded by a later snapshot of their group, as one
    /// batch, and waits until it is on disk.
    pub fn write(&mut self, changes: Vec<GroupChange>, timestamp_ms: i64) -> Result<(), LogError> {
        let mut newest: BTreeMap<String, GroupChange> = BTreeMap::new();
        for change in changes {
            let superseded = self.written.get(&change.group_id).is_some_and(|&last| last >= change.sequence)
                || newest.get(&change.group_id).is_some_and(|other| other.sequence >= change.sequence);
            if !superseded {
                newest.insert(change.group_id.clone(), change);
            }
        }
        let records: Vec<JournalRecord> = newest
            .values()
            .map(|change| {
                let value = change.record.as_ref().map(encode).unwrap_or_default();
                (change.group_id.as_bytes().to_vec(), value)
            })
            .collect();
        self.journal.write(timestamp_ms, &records)?;
        for (group_id, change) in newest {
            self.written.insert(group_id, change.sequence);
        }
        Ok(())
    }

    pub fn close(&self) -> Result<(), LogError> {
        self.journal.close()
    }

    /// The journal's log, for the broker's cleaner.
    pub(crate) fn journal_log(&self) -> Arc<tidewater_log::Log> {
        self.journal.log()
    }
}

/// Folds the journal's records (oldest first) into the latest of each group, dropping deleted
/// groups and reporting (and dropping) records that cannot be read.
fn latest_groups(records: Vec<JournalRecord>) -> BTreeMap<String, GroupRecord> {
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (key, value) in records {
        let Ok(group_id) = String::from_utf8(key) else {
            tracing::warn!("a group record whose key is not a group id was skipped");
            continue;
        };
        latest.insert(group_id, value);
    }
    latest
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(group_id, value)| match decode(&value) {
            Ok(record) => Some((group_id, record)),
            Err(reason) => {
                tracing::warn!(group = %group_id, %reason, "a stored consumer group could not be read; it starts empty and its members rejoin");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_log::ManualClock;

    fn classic(generation_id: i32) -> GroupRecord {
        GroupRecord::Classic(ClassicGroupRecord {
            state: ClassicRecordState::Stable,
            generation_id,
            protocol_type: "consumer".into(),
            protocol_name: Some("range".into()),
            leader: Some("m".into()),
            members: vec![ClassicMemberRecord {
                member_id: "m".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 20_000,
                protocols: vec![("range".into(), Base64Bytes(Bytes::from_static(b"\x00\x01sub")))],
                assignment: Base64Bytes(Bytes::from_static(b"\x00\x01assigned")),
            }],
        })
    }

    fn change(group_id: &str, sequence: u64, record: Option<GroupRecord>) -> GroupChange {
        GroupChange { group_id: group_id.into(), sequence, record }
    }

    #[test]
    fn records_round_trip_and_the_latest_snapshot_wins_a_race() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        {
            let (mut store, loaded) = GroupStore::open(dir.path(), clock.clone()).expect("open");
            assert!(loaded.is_empty());
            store
                .write(vec![change("a", 1, Some(classic(1))), change("b", 2, Some(classic(1)))], 0)
                .expect("write");
            // Snapshot 4 is written before snapshot 3, which lost the race: 3 is not written.
            store.write(vec![change("a", 4, Some(classic(3)))], 0).expect("write");
            store.write(vec![change("a", 3, Some(classic(2)))], 0).expect("write");
            store.write(vec![change("b", 5, None)], 0).expect("delete");
            store.close().expect("close");
        }
        let (_store, loaded) = GroupStore::open(dir.path(), clock).expect("reopen");
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["a"], "b was deleted");
        assert_eq!(loaded["a"], classic(3));
    }

    #[test]
    fn an_unreadable_record_or_a_newer_version_is_skipped_and_the_rest_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        {
            let (journal, _) = Journal::open(dir.path(), GROUPS_DIR_NAME, clock.clone()).expect("open");
            let newer =
                serde_json::to_vec(&serde_json::json!({"version": 99, "kind": "classic"})).expect("json");
            journal
                .write(
                    0,
                    &[
                        (b"good".to_vec(), encode(&classic(7))),
                        (b"garbage".to_vec(), b"{not json".to_vec()),
                        (b"newer".to_vec(), newer),
                        (b"wrong-shape".to_vec(), br#"{"version":1,"kind":"classic"}"#.to_vec()),
                    ],
                )
                .expect("write");
            journal.close().expect("close");
        }
        let (_store, loaded) = GroupStore::open(dir.path(), clock).expect("reopen");
        assert_eq!(loaded.into_iter().collect::<Vec<_>>(), [("good".to_string(), classic(7))]);
        assert!(decode(br#"{"version":2,"kind":"classic"}"#).expect_err("newer").contains("newer"));
    }
}
