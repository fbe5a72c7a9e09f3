//! The transaction coordinator's operations on the broker: InitProducerId with a transactional
//! id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn, plus transaction
//! timeouts and the completion of transactions a crash left half done.
//!
//! Completing a transaction (`complete`) is the core: make the decision durable (Prepare*),
//! write a marker to every partition the transaction touched (each fsynced), apply its staged
//! offsets on commit, then record it Complete*. All of it holds the transaction store's lock, so
//! one transactional id never has two completions racing.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use tidewater_kafka::ResponseError;

use crate::broker::Broker;
use crate::groups::offsets::OffsetChange;
use crate::groups::CommittedOffset;
use crate::transactions::{TxnMetadata, TxnStatus, TxnStore, TRANSACTION_TIMEOUT_MS_MAX};

impl Broker {
    /// InitProducerId with a transactional id: fences any older producer of that id (aborting
    /// its open transaction) and returns the producer id and the new epoch.
    pub(crate) fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<(i64, i16), ResponseError> {
        if !(1..=TRANSACTION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let now = self.now_ms();
        let mut store = self.lock_transactions();
        let metadata = match store.get(transactional_id).cloned() {
            None => {
                let producer_id =
                    self.allocate_producer_id().map_err(|_| ResponseError::CoordinatorNotAvailable)?;
                new_metadata(producer_id, 0, timeout_ms, now)
            }
            Some(mut metadata) => {
                let (producer_id, epoch) = if metadata.producer_epoch >= i16::MAX - 1 {
                    (self.allocate_producer_id().map_err(|_| ResponseError::CoordinatorNotAvailable)?, 0)
                } else {
                    (metadata.producer_id, metadata.producer_epoch + 1)
                };
                match metadata.status {
                    // The old producer's transaction is aborted under the new epoch, which fences it.
                    TxnStatus::Ongoing => {
                        metadata.producer_epoch = metadata.producer_epoch.max(epoch.min(i16::MAX - 1));
                        self.complete(&mut store, transactional_id, metadata.clone(), false)?;
                    }
                    TxnStatus::PrepareCommit => {
                        self.complete(&mut store, transactional_id, metadata.clone(), true)?;
                    }
                    TxnStatus::PrepareAbort => {
                        self.complete(&mut store, transactional_id, metadata.clone(), false)?;
                    }
                    TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {}
                }
                new_metadata(producer_id, epoch, timeout_ms, now)
            }
        };
        let answer = (metadata.producer_id, metadata.producer_epoch);
        store.put(transactional_id, metadata).map_err(|error| storage_error(&error))?;
        Ok(answer)
    }

    /// AddPartitionsToTxn: the partitions this transaction will write to. Each partition gets
    /// its own result; any unknown partition fails the request and the others are not added.
    pub(crate) fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<((String, i32), Option<ResponseError>)> {
        let unknown: Vec<bool> =
            partitions.iter().map(|(topic, index)| self.partition(topic, *index).is_err()).collect();
        let outcome = if unknown.iter().any(|unknown| *unknown) {
            Err(ResponseError::OperationNotAttempted)
        } else {
            self.update_transaction(transactional_id, producer_id, producer_epoch, |metadata| {
                metadata.partitions.extend(partitions.iter().cloned());
                Ok(())
            })
        };
        partitions
            .iter()
            .zip(unknown)
            .map(|(partition, unknown)| {
                let error = match (&outcome, unknown) {
                    (Ok(()), _) => None,
                    (Err(_), true) => Some(ResponseError::UnknownTopicOrPartition),
                    (Err(error), false) => Some(*error),
                };
                (partition.clone(), error)
            })
            .collect()
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    pub(crate) fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
    ) -> Result<(), ResponseError> {
        self.update_transaction(transactional_id, producer_id, producer_epoch, |metadata| {
            metadata.groups.insert(group.to_string());
            Ok(())
        })
    }

    /// TxnOffsetCommit: stages offsets that become committed only if the transaction commits.
    pub(crate) fn txn_offset_commit(
        &self,
        transactional_id: &str,
        group: &str,
        producer_id: i64,
        producer_epoch: i16,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), ResponseError> {
        let mut store = self.lock_transactions();
        let mut metadata =
            store.get(transactional_id).cloned().ok_or(ResponseError::InvalidProducerIdMapping)?;
        metadata.check_producer(producer_id, producer_epoch)?;
        if metadata.status != TxnStatus::Ongoing || !metadata.groups.contains(group) {
            return Err(ResponseError::InvalidTxnState);
        }
        for (topic, partition, committed) in offsets {
            metadata.staged_offsets.retain(|(g, t, p, _)| !(g == group && *t == topic && *p == partition));
            metadata.staged_offsets.push((group.to_string(), topic, partition, committed));
        }
        metadata.updated_ms = self.now_ms();
        store.put(transactional_id, metadata).map_err(|error| storage_error(&error))
    }

    /// EndTxn: commits or aborts the ongoing transaction. A retry of a completed decision
    /// succeeds again; the opposite decision is INVALID_TXN_STATE.
    pub(crate) fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let mut store = self.lock_transactions();
        let metadata = store.get(transactional_id).cloned().ok_or(ResponseError::InvalidProducerIdMapping)?;
        metadata.check_producer(producer_id, producer_epoch)?;
        match (metadata.status, commit) {
            (TxnStatus::Ongoing, _) => {
                self.complete(&mut store, transactional_id, metadata, commit).map(|_| ())
            }
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => Ok(()),
            (TxnStatus::PrepareCommit, _) | (TxnStatus::PrepareAbort, _) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Aborts transactions open longer than their timeout, fencing their producer with a new
    /// epoch, as Kafka's coordinator does.
    pub fn tick_transactions(&self) {
        let now = self.now_ms();
        let mut store = self.lock_transactions();
        let expired: Vec<(String, TxnMetadata)> = store
            .all()
            .into_iter()
            .filter(|(_, metadata)| {
                metadata.status == TxnStatus::Ongoing
                    && now - metadata.start_ms > i64::from(metadata.timeout_ms)
            })
            .map(|(id, metadata)| (id.to_string(), metadata.clone()))
            .collect();
        for (transactional_id, mut metadata) in expired {
            metadata.producer_epoch = (metadata.producer_epoch + 1).min(i16::MAX - 1);
            match self.complete(&mut store, &transactional_id, metadata, false) {
                Ok(_) => tracing::info!(%transactional_id, "aborted a transaction that passed its timeout"),
                Err(error) => {
                    tracing::error!(%transactional_id, ?error, "could not abort a timed-out transaction")
                }
            }
        }
    }

    /// Finishes transactions whose decision was recorded but whose markers a crash may have cut
    /// short. Called once when the broker opens.
    pub(crate) fn recover_transactions(&self) {
        let mut store = self.lock_transactions();
        let pending: Vec<(String, TxnMetadata)> = store
            .all()
            .into_iter()
            .filter(|(_, metadata)| {
                matches!(metadata.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
            })
            .map(|(id, metadata)| (id.to_string(), metadata.clone()))
            .collect();
        for (transactional_id, metadata) in pending {
            let commit = metadata.status == TxnStatus::PrepareCommit;
            match self.complete(&mut store, &transactional_id, metadata, commit) {
                Ok(_) => {
                    tracing::info!(%transactional_id, commit, "completed a transaction interrupted by a restart")
                }
                Err(error) => {
                    tracing::error!(%transactional_id, ?error, "could not complete an interrupted transaction")
                }
            }
        }
    }

    /// Applies `change` to an ongoing (or starting) transaction after checking the producer.
    fn update_transaction(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        change: impl FnOnce(&mut TxnMetadata) -> Result<(), ResponseError>,
    ) -> Result<(), ResponseError> {
        let mut store = self.lock_transactions();
        let mut metadata =
            store.get(transactional_id).cloned().ok_or(ResponseError::InvalidProducerIdMapping)?;
        metadata.check_producer(producer_id, producer_epoch)?;
        metadata.check_can_add()?;
        metadata.begin_if_needed(self.now_ms());
        change(&mut metadata)?;
        store.put(transactional_id, metadata).map_err(|error| storage_error(&error))
    }

    /// Prepare, markers, offsets, complete; see the module docs.
    fn complete(
        &self,
        store: &mut TxnStore,
        transactional_id: &str,
        mut metadata: TxnMetadata,
        commit: bool,
    ) -> Result<TxnMetadata, ResponseError> {
        let now = self.now_ms();
        metadata.status = if commit { TxnStatus::PrepareCommit } else { TxnStatus::PrepareAbort };
        metadata.updated_ms = now;
        store.put(transactional_id, metadata.clone()).map_err(|error| storage_error(&error))?;
        for (topic, index) in &metadata.partitions {
            // A partition deleted since has nothing left to mark.
            if let Ok(partition) = self.partition(topic, *index) {
                partition
                    .write_marker(metadata.producer_id, metadata.producer_epoch, commit, now)
                    .map_err(|error| storage_error(&error))?;
            }
        }
        if commit {
            let mut by_group: BTreeMap<&str, Vec<OffsetChange>> = BTreeMap::new();
            for (group, topic, partition, committed) in &metadata.staged_offsets {
                by_group
                    .entry(group)
                    .or_default()
                    .push(((topic.clone(), *partition), Some(committed.clone())));
            }
            let mut offsets = self.lock_offsets();
            for (group, entries) in by_group {
                offsets.write(group, entries).map_err(|error| storage_error(&error))?;
            }
        }
        metadata.status = if commit { TxnStatus::CompleteCommit } else { TxnStatus::CompleteAbort };
        metadata.partitions.clear();
        metadata.groups.clear();
        metadata.staged_offsets.clear();
        metadata.updated_ms = now;
        store.put(transactional_id, metadata.clone()).map_err(|error| storage_error(&error))?;
        Ok(metadata)
    }

    pub(crate) fn lock_transactions(&self) -> MutexGuard<'_, TxnStore> {
        self.transactions.lock().expect("transaction store mutex poisoned by a panic")
    }
}

fn new_metadata(producer_id: i64, producer_epoch: i16, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
    TxnMetadata {
        producer_id,
        producer_epoch,
        timeout_ms,
        status: TxnStatus::Empty,
        partitions: Default::default(),
        groups: Default::default(),
        staged_offsets: Vec::new(),
        start_ms: now_ms,
        updated_ms: now_ms,
    }
}

/// A storage failure in the coordinator: the client retries, as it would against a coordinator
/// that moved.
fn storage_error(error: &dyn std::fmt::Display) -> ResponseError {
    tracing::error!(%error, "transaction coordinator storage error");
    ResponseError::CoordinatorNotAvailable
}
