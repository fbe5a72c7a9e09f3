//! The ACL bindings, durable: every CreateAcls and DeleteAcls is one batch in an internal
//! journal at `<data-dir>/.acls`, fsynced before the change is applied or acknowledged, and
//! replayed when the broker opens.
//!
//! Records: key = JSON `[resource type, name, pattern type, principal, host, operation,
//! permission]` (Kafka's wire codes and the text as written back by the broker), value = `1`
//! for a binding that exists or empty for one deleted. Replay re-validates each key as a new
//! binding. A record that does not decode stops the broker from opening: a lost DENY would
//! silently widen access, so the broker fails closed and names the journal.
//!
//! A change too large for one batch (`ACL_BATCH_BYTES_MAX`) is written as several, each
//! fsynced; a crash between them keeps the first part of the change, unacknowledged, and the
//! client's retry completes it (creating and deleting ACLs are idempotent).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tidewater_log::{Clock, LogError};

use super::model::{AclBinding, Coded};
use crate::error::BrokerError;
use crate::internal_log::{Journal, JournalRecord};

/// The journal's directory inside the data directory.
pub const ACLS_DIR_NAME: &str = ".acls";
/// The value of a record whose binding exists; a deleted one's value is empty.
const PRESENT: &[u8] = b"1";
/// The most record bytes written as one journal batch: well inside the journal's batch limit
/// (the log's default `max_batch_bytes`, 1 MiB), whatever the size of one binding (at most
/// three fields of `ACL_TEXT_BYTES_MAX`).
const ACL_BATCH_BYTES_MAX: usize = 512 * 1024;
/// Bytes a record adds to a batch besides its key and value (lengths, deltas, attributes).
const RECORD_OVERHEAD_BYTES: usize = 32;

/// A binding as the journal keys it.
type StoredBinding = (i8, String, i8, String, String, i8, i8);

#[derive(Debug)]
pub(crate) struct AclStore {
    journal: Journal,
}

impl AclStore {
    /// Opens (creating if needed) the journal under `data_dir` and replays it into the set of
    /// bindings that exist.
    pub(crate) fn open(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(AclStore, BTreeSet<AclBinding>), BrokerError> {
        let (journal, records) = Journal::open(data_dir, ACLS_DIR_NAME, clock)?;
        let mut bindings = BTreeSet::new();
        for (position, (key, value)) in records.into_iter().enumerate() {
            let binding = decode(&key).map_err(|reason| BrokerError::Acls {
                path: data_dir.join(ACLS_DIR_NAME),
                reason: format!(
                    "record {position} is unreadable ({reason}); refusing to start without every ACL"
                ),
            })?;
            if value.is_empty() {
                bindings.remove(&binding);
            } else {
                bindings.insert(binding);
            }
        }
        Ok((AclStore { journal }, bindings))
    }

    /// Records that `added` exist and `removed` do not, in as few batches as fit, and waits
    /// until they are on disk.
    pub(crate) fn write(
        &self,
        now_ms: i64,
        added: &[AclBinding],
        removed: &[AclBinding],
    ) -> Result<(), LogError> {
        let records = added
            .iter()
            .map(|binding| (encode(binding), PRESENT.to_vec()))
            .chain(removed.iter().map(|binding| (encode(binding), Vec::new())));
        let mut batch: Vec<JournalRecord> = Vec::new();
        let mut batch_bytes = 0;
        for record in records {
            let record_bytes = record.0.len() + record.1.len() + RECORD_OVERHEAD_BYTES;
            if batch_bytes + record_bytes > ACL_BATCH_BYTES_MAX && !batch.is_empty() {
                self.journal.write(now_ms, &std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
            batch.push(record);
            batch_bytes += record_bytes;
        }
        self.journal.write(now_ms, &batch)
    }

    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.journal.close()
    }
}

fn encode(binding: &AclBinding) -> Vec<u8> {
    let AclBinding { pattern, entry } = binding;
    let stored: StoredBinding = (
        pattern.resource_type.code(),
        pattern.name.clone(),
        pattern.pattern_type.code(),
        entry.principal.to_string(),
        entry.host.to_string(),
        entry.operation.code(),
        entry.permission.code(),
    );
    // A tuple of integers and strings always serializes.
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode(key: &[u8]) -> Result<AclBinding, String> {
    let (resource_type, name, pattern_type, principal, host, operation, permission): StoredBinding =
        serde_json::from_slice(key).map_err(|error| error.to_string())?;
    AclBinding::from_wire(resource_type, &name, pattern_type, &principal, &host, operation, permission)
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_log::ManualClock;

    fn binding(name: &str, permission: i8) -> AclBinding {
        AclBinding::from_wire(2, name, 3, "User:alice", "::ffff:10.0.0.1", 3, permission).expect("valid")
    }

    #[test]
    fn bindings_survive_a_reopen_and_deletions_stay_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        {
            let (store, bindings) = AclStore::open(dir.path(), clock.clone()).expect("open");
            assert!(bindings.is_empty());
            store.write(1_000, &[binding("a", 3), binding("b", 2), binding("c", 3)], &[]).expect("write");
            store.write(1_001, &[], &[binding("b", 2)]).expect("delete");
            store.write(1_002, &[binding("b", 3)], &[binding("c", 3)]).expect("both");
            store.close().expect("close");
        }
        let (_store, bindings) = AclStore::open(dir.path(), clock).expect("reopen");
        let expected: BTreeSet<AclBinding> = [binding("a", 3), binding("b", 3)].into_iter().collect();
        assert_eq!(bindings, expected);
    }

    #[test]
    fn a_change_larger_than_a_batch_is_written_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        // Each binding about 4 KiB: some 400 of them are several batches.
        let bindings: Vec<AclBinding> =
            (0..400).map(|index| binding(&format!("{index:04}{}", "x".repeat(4000)), 3)).collect();
        {
            let (store, _) = AclStore::open(dir.path(), clock.clone()).expect("open");
            store.write(1_000, &bindings, &[]).expect("write");
            store.write(1_001, &[], &bindings[..200]).expect("delete half");
        }
        let (_store, replayed) = AclStore::open(dir.path(), clock).expect("reopen");
        assert_eq!(replayed, bindings[200..].iter().cloned().collect::<BTreeSet<_>>());
    }

    #[test]
    fn an_unreadable_record_stops_the_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        {
            let (store, _) = AclStore::open(dir.path(), clock.clone()).expect("open");
            store.journal.write(1_000, &[(b"[2,\"t\",9]".to_vec(), PRESENT.to_vec())]).expect("write");
            store.close().expect("close");
        }
        let error = AclStore::open(dir.path(), clock).map(|_| ()).expect_err("must refuse");
        let message = error.to_string();
        assert!(message.contains("record 0 is unreadable"), "{message}");
        assert!(message.contains(".acls"), "{message}");
    }
}
