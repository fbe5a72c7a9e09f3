//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! DescribeTransactions and ListTransactions. (InitProducerId with a transactional id is in
//! `producer_id.rs`.) The coordinator logic is in `transaction_coordinator.rs`.
//!
//! Authorization as in Kafka: everything a producer sends needs WRITE on its transactional id
//! (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED throughout), plus WRITE on the topics it adds
//! and READ on the group (and the topics) whose offsets it commits. DescribeTransactions needs
//! DESCRIBE on each id and shows only the topics the principal may DESCRIBE; ListTransactions
//! lists only the ids it may DESCRIBE.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use tidewater_kafka::kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use tidewater_kafka::kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnRequest;
use tidewater_kafka::kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnTopicResult,
};
use tidewater_kafka::kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use tidewater_kafka::kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use tidewater_kafka::kafka_protocol::messages::end_txn_request::EndTxnRequest;
use tidewater_kafka::kafka_protocol::messages::end_txn_response::EndTxnResponse;
use tidewater_kafka::kafka_protocol::messages::list_transactions_request::ListTransactionsRequest;
use tidewater_kafka::kafka_protocol::messages::list_transactions_response::{
    self as list_response, ListTransactionsResponse,
};
use tidewater_kafka::kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use tidewater_kafka::kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use tidewater_kafka::kafka_protocol::messages::{ProducerId, TopicName, TransactionalId};
use tidewater_kafka::ResponseError;

use super::{blocking, str_bytes};
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::{ApiError, Broker};
use crate::groups::coordinator::TRANSACTIONAL_COMMIT;
use crate::groups::CommittedOffset;

fn code(outcome: Result<(), ResponseError>) -> i16 {
    outcome.err().map_or(0, |error| error.code())
}

/// The error code of a refusal (or 0).
fn refused(allowed: Result<(), ApiError>) -> Result<(), ResponseError> {
    allowed.map_err(|refusal| refusal.code)
}

pub(super) async fn add_partitions(
    broker: Arc<Broker>,
    request: AddPartitionsToTxnRequest,
    access: Access,
) -> AddPartitionsToTxnResponse {
    blocking(move || {
        let transactional_id = &request.v3_and_below_transactional_id;
        let txn_allowed =
            refused(access.check(Operation::Write, ResourceType::TransactionalId, transactional_id));
        // (topic, partition, WRITE allowed on the topic)
        let partitions: Vec<(String, i32, Result<(), ResponseError>)> = request
            .v3_and_below_topics
            .iter()
            .flat_map(|topic| {
                let allowed = refused(access.check(Operation::Write, ResourceType::Topic, &topic.name));
                topic.partitions.iter().map(move |partition| (topic.name.0.to_string(), *partition, allowed))
            })
            .collect();
        let results: Vec<((String, i32), Option<ResponseError>)> = match txn_allowed {
            Err(refusal) => {
                partitions.into_iter().map(|(topic, index, _)| ((topic, index), Some(refusal))).collect()
            }
            // As in Kafka, one refused topic fails the request: the others are not attempted.
            Ok(()) if partitions.iter().any(|(_, _, allowed)| allowed.is_err()) => partitions
                .into_iter()
                .map(|(topic, index, allowed)| {
                    let error = match allowed {
                        Err(refusal) => refusal,
                        Ok(()) if broker.partition(&topic, index).is_err() => {
                            ResponseError::UnknownTopicOrPartition
                        }
                        Ok(()) => ResponseError::OperationNotAttempted,
                    };
                    ((topic, index), Some(error))
                })
                .collect(),
            Ok(()) => {
                let partitions: Vec<(String, i32)> =
                    partitions.into_iter().map(|(topic, index, _)| (topic, index)).collect();
                broker.add_partitions_to_txn(
                    &transactional_id.0,
                    request.v3_and_below_producer_id.0,
                    request.v3_and_below_producer_epoch,
                    &partitions,
                )
            }
        };
        let topics = request
            .v3_and_below_topics
            .iter()
            .map(|topic| {
                let partitions = results
                    .iter()
                    .filter(|((name, _), _)| name.as_str() == topic.name.0.as_str())
                    .map(|((_, index), error)| {
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(*index)
                            .with_partition_error_code(error.map_or(0, |error| error.code()))
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_results_by_partition(partitions)
            })
            .collect();
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
    })
    .await
}

pub(super) async fn add_offsets(
    broker: Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    access: Access,
) -> AddOffsetsToTxnResponse {
    blocking(move || {
        let outcome =
            refused(access.check(Operation::Write, ResourceType::TransactionalId, &request.transactional_id))
                .and_then(|()| refused(access.check(Operation::Read, ResourceType::Group, &request.group_id)))
                .and_then(|()| {
                    broker.add_offsets_to_txn(
                        &request.transactional_id.0,
                        request.producer_id.0,
                        request.producer_epoch,
                        &request.group_id.0,
                    )
                });
        AddOffsetsToTxnResponse::default().with_error_code(code(outcome))
    })
    .await
}

pub(super) async fn txn_offset_commit(
    broker: Arc<Broker>,
    request: TxnOffsetCommitRequest,
    access: Access,
) -> TxnOffsetCommitResponse {
    blocking(move || {
        let now = broker.now_ms();
        let allowed =
            refused(access.check(Operation::Write, ResourceType::TransactionalId, &request.transactional_id))
                .and_then(|()| {
                    refused(access.check(Operation::Read, ResourceType::Group, &request.group_id))
                });
        // Per topic: the refusal of the id or group, or of the topic itself (READ).
        let readable: Vec<Result<(), ResponseError>> = request
            .topics
            .iter()
            .map(|topic| {
                allowed
                    .and_then(|()| refused(access.check(Operation::Read, ResourceType::Topic, &topic.name)))
            })
            .collect();
        let offsets: Vec<_> = request
            .topics
            .iter()
            .zip(&readable)
            .filter(|(_, readable)| readable.is_ok())
            .flat_map(|(topic, _)| {
                topic.partitions.iter().map(move |partition| {
                    let committed = CommittedOffset {
                        offset: partition.committed_offset,
                        leader_epoch: partition.committed_leader_epoch,
                        metadata: partition.committed_metadata.as_ref().map(|metadata| metadata.to_string()),
                        commit_timestamp_ms: now,
                    };
                    (topic.name.0.to_string(), partition.partition_index, committed)
                })
            })
            .collect();
        // KIP-447: a producer that sends its consumer's group metadata (TxnOffsetCommit v3) is
        // checked like an OffsetCommit, so a zombie of an older generation, whose partitions
        // have moved, cannot commit offsets (and its transaction, unable to commit, aborts).
        // Without metadata (generation -1, no member) the commit is not tied to a generation.
        let fenced = if offsets.is_empty() {
            None
        } else if request.generation_id >= 0 || !request.member_id.is_empty() {
            broker
                .lock_groups()
                .check_any_commit(
                    &request.group_id.0,
                    &request.member_id,
                    request.generation_id,
                    TRANSACTIONAL_COMMIT,
                )
                .err()
        } else {
            None
        };
        let outcome = match fenced {
            Some(error) => Err(error),
            // Nothing is left to commit once every topic was refused.
            None if offsets.is_empty() => Ok(()),
            None => broker.txn_offset_commit(
                &request.transactional_id.0,
                &request.group_id.0,
                request.producer_id.0,
                request.producer_epoch,
                offsets,
            ),
        };
        let topics = request
            .topics
            .iter()
            .zip(readable)
            .map(|(topic, readable)| {
                let error = code(readable.and(outcome));
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    })
    .await
}

pub(super) async fn end_txn(broker: Arc<Broker>, request: EndTxnRequest, access: Access) -> EndTxnResponse {
    blocking(move || {
        let outcome =
            refused(access.check(Operation::Write, ResourceType::TransactionalId, &request.transactional_id))
                .and_then(|()| {
                    broker.end_txn(
                        &request.transactional_id.0,
                        request.producer_id.0,
                        request.producer_epoch,
                        request.committed,
                    )
                });
        EndTxnResponse::default()
            .with_error_code(code(outcome))
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch)
    })
    .await
}

pub(super) fn describe(
    broker: &Broker,
    request: DescribeTransactionsRequest,
    access: &Access,
) -> DescribeTransactionsResponse {
    let store = broker.lock_transactions();
    let states = request
        .transactional_ids
        .into_iter()
        .map(|transactional_id| {
            let allowed = access.check(Operation::Describe, ResourceType::TransactionalId, &transactional_id);
            (transactional_id, allowed)
        })
        .map(|(transactional_id, allowed)| match (allowed, store.get(&transactional_id.0)) {
            (Err(refusal), _) => TransactionState::default()
                .with_transactional_id(transactional_id)
                .with_error_code(refusal.code.code()),
            (Ok(()), Some(metadata)) => {
                // Only the topics the principal may describe.
                let mut topics: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                let visible = metadata
                    .partitions
                    .iter()
                    .filter(|(topic, _)| access.allows(Operation::Describe, ResourceType::Topic, topic));
                for (topic, partition) in visible {
                    topics.entry(topic).or_default().push(*partition);
                }
                TransactionState::default()
                    .with_transactional_id(transactional_id)
                    .with_transaction_state(str_bytes(metadata.status.name()))
                    .with_transaction_timeout_ms(metadata.timeout_ms)
                    .with_transaction_start_time_ms(metadata.start_ms)
                    .with_producer_id(ProducerId(metadata.producer_id))
                    .with_producer_epoch(metadata.producer_epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                TopicData::default()
                                    .with_topic(TopicName(str_bytes(topic)))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    )
            }
            (Ok(()), None) => TransactionState::default()
                .with_transactional_id(transactional_id)
                .with_error_code(ResponseError::TransactionalIdNotFound.code()),
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(super) fn list(
    broker: &Broker,
    request: ListTransactionsRequest,
    access: &Access,
) -> ListTransactionsResponse {
    let store = broker.lock_transactions();
    let states = store
        .all()
        .into_iter()
        .filter(|(id, _)| access.allows(Operation::Describe, ResourceType::TransactionalId, id))
        .filter(|(_, metadata)| {
            request.state_filters.is_empty()
                || request.state_filters.iter().any(|state| state.as_str() == metadata.status.name())
        })
        .filter(|(_, metadata)| {
            request.producer_id_filters.is_empty()
                || request.producer_id_filters.iter().any(|id| id.0 == metadata.producer_id)
        })
        .map(|(id, metadata)| {
            list_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(id)))
                .with_producer_id(ProducerId(metadata.producer_id))
                .with_transaction_state(str_bytes(metadata.status.name()))
        })
        .collect();
    ListTransactionsResponse::default().with_transaction_states(states)
}
