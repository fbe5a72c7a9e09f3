//! The transaction coordinator (KIP-98): which transactional ids exist, their producer id and
//! epoch, and the state of each one's current transaction, kept in an internal journal.
//!
//! ```text
//!   Empty ─AddPartitions/AddOffsets─▶ Ongoing ─EndTxn(commit)─▶ PrepareCommit ─markers─▶ CompleteCommit
//!                                        │                                                  │
//!                                        └─EndTxn(abort), timeout, new InitProducerId─▶ PrepareAbort ─markers─▶ CompleteAbort
//! ```
//!
//! A transaction's decision is made durable (Prepare*) before any marker is written, and the
//! markers before it is Complete*: after a crash, `Broker::open` finds every Prepare* and writes
//! its markers again (a repeated marker is harmless), so no transaction hangs. Offsets committed
//! inside a transaction (TxnOffsetCommit) are kept with it and applied only on commit.
//!
//! This module is the state and its persistence; the broker drives the markers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidewater_kafka::ResponseError;
use tidewater_log::{Clock, LogError};

use crate::groups::CommittedOffset;
use crate::internal_log::Journal;

/// The journal's directory inside the data directory.
pub const TRANSACTIONS_DIR_NAME: &str = ".transactions";
/// Kafka's `transaction.max.timeout.ms` default: the longest timeout a producer may ask for.
pub const TRANSACTION_TIMEOUT_MS_MAX: i32 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    /// The name Kafka's tools show.
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }
}

/// A committed offset staged in a transaction: (group, topic, partition, offset).
pub type StagedOffset = (String, String, i32, CommittedOffset);

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub staged_offsets: Vec<StagedOffset>,
    pub start_ms: i64,
    pub updated_ms: i64,
}

impl TxnMetadata {
    /// Checks that a request comes from the current producer of this transactional id.
    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if producer_epoch < self.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if producer_epoch > self.producer_epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        Ok(())
    }

    /// Checks the transaction may take new partitions or groups now.
    pub fn check_can_add(&self) -> Result<(), ResponseError> {
        match self.status {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => Err(ResponseError::ConcurrentTransactions),
            _ => Ok(()),
        }
    }

    /// Moves to Ongoing on the first addition of a transaction.
    pub fn begin_if_needed(&mut self, now_ms: i64) {
        if self.status != TxnStatus::Ongoing {
            self.status = TxnStatus::Ongoing;
            self.start_ms = now_ms;
            self.partitions.clear();
            self.groups.clear();
            self.staged_offsets.clear();
        }
        self.updated_ms = now_ms;
    }
}

/// Every transactional id this broker coordinates, durable.
#[derive(Debug)]
pub struct TxnStore {
    journal: Journal,
    transactions: HashMap<String, TxnMetadata>,
}

impl TxnStore {
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<TxnStore, LogError> {
        let (journal, records) = Journal::open(data_dir, TRANSACTIONS_DIR_NAME, clock)?;
        let mut transactions = HashMap::new();
        for (key, value) in records {
            let Ok(transactional_id) = String::from_utf8(key) else { continue };
            if value.is_empty() {
                transactions.remove(&transactional_id);
                continue;
            }
            match serde_json::from_slice::<TxnMetadata>(&value) {
                Ok(metadata) => {
                    transactions.insert(transactional_id, metadata);
                }
                Err(error) => {
                    tracing::warn!(%transactional_id, %error, "skipping an unreadable transaction record")
                }
            }
        }
        Ok(TxnStore { journal, transactions })
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.transactions.get(transactional_id)
    }

    /// Durably replaces a transactional id's state.
    pub fn put(&mut self, transactional_id: &str, metadata: TxnMetadata) -> Result<(), LogError> {
        let value = serde_json::to_vec(&metadata).unwrap_or_default();
        self.journal.write(metadata.updated_ms, &[(transactional_id.as_bytes().to_vec(), value)])?;
        self.transactions.insert(transactional_id.to_string(), metadata);
        Ok(())
    }

    pub fn all(&self) -> BTreeMap<&str, &TxnMetadata> {
        self.transactions.iter().map(|(id, metadata)| (id.as_str(), metadata)).collect()
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

    fn metadata(status: TxnStatus) -> TxnMetadata {
        TxnMetadata {
            producer_id: 7,
            producer_epoch: 2,
            timeout_ms: 60_000,
            status,
            partitions: [("t".to_string(), 0)].into(),
            groups: BTreeSet::new(),
            staged_offsets: Vec::new(),
            start_ms: 1_000,
            updated_ms: 1_000,
        }
    }

    #[test]
    fn state_survives_a_restart_and_the_latest_record_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        {
            let mut store = TxnStore::open(dir.path(), clock.clone()).expect("open");
            store.put("a", metadata(TxnStatus::Ongoing)).expect("put");
            store.put("a", metadata(TxnStatus::PrepareCommit)).expect("put");
            store.put("b", metadata(TxnStatus::Empty)).expect("put");
        }
        let store = TxnStore::open(dir.path(), clock).expect("reopen");
        assert_eq!(store.get("a").map(|m| m.status), Some(TxnStatus::PrepareCommit));
        assert_eq!(store.all().len(), 2);
    }

    #[test]
    fn only_the_current_producer_epoch_may_act() {
        let current = metadata(TxnStatus::Ongoing);
        assert_eq!(current.check_producer(7, 2), Ok(()));
        assert_eq!(current.check_producer(7, 1), Err(ResponseError::ProducerFenced));
        assert_eq!(current.check_producer(8, 2), Err(ResponseError::InvalidProducerIdMapping));
        assert_eq!(
            metadata(TxnStatus::PrepareAbort).check_can_add(),
            Err(ResponseError::ConcurrentTransactions)
        );
    }
}
