//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! DescribeTransactions and ListTransactions. (InitProducerId with a transactional id is in
//! `producer_id.rs`.) The coordinator logic is in `transaction_coordinator.rs`.

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
use crate::broker::Broker;
use crate::groups::CommittedOffset;

fn code(outcome: Result<(), ResponseError>) -> i16 {
    outcome.err().map_or(0, |error| error.code())
}

pub(super) async fn add_partitions(
    broker: Arc<Broker>,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    blocking(move || {
        let partitions: Vec<(String, i32)> = request
            .v3_and_below_topics
            .iter()
            .flat_map(|topic| topic.partitions.iter().map(|partition| (topic.name.0.to_string(), *partition)))
            .collect();
        let results = broker.add_partitions_to_txn(
            &request.v3_and_below_transactional_id.0,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &partitions,
        );
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
) -> AddOffsetsToTxnResponse {
    blocking(move || {
        let outcome = broker.add_offsets_to_txn(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            &request.group_id.0,
        );
        AddOffsetsToTxnResponse::default().with_error_code(code(outcome))
    })
    .await
}

pub(super) async fn txn_offset_commit(
    broker: Arc<Broker>,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    blocking(move || {
        let now = broker.now_ms();
        let offsets = request
            .topics
            .iter()
            .flat_map(|topic| {
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
        let fenced = if request.generation_id >= 0 || !request.member_id.is_empty() {
            broker
                .lock_groups()
                .check_commit(&request.group_id.0, &request.member_id, request.generation_id)
                .err()
        } else {
            None
        };
        let outcome = match fenced {
            Some(error) => Err(error),
            None => broker.txn_offset_commit(
                &request.transactional_id.0,
                &request.group_id.0,
                request.producer_id.0,
                request.producer_epoch,
                offsets,
            ),
        };
        let error = code(outcome);
        let topics = request
            .topics
            .iter()
            .map(|topic| {
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

pub(super) async fn end_txn(broker: Arc<Broker>, request: EndTxnRequest) -> EndTxnResponse {
    blocking(move || {
        let outcome = broker.end_txn(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        );
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
) -> DescribeTransactionsResponse {
    let store = broker.lock_transactions();
    let states = request
        .transactional_ids
        .into_iter()
        .map(|transactional_id| match store.get(&transactional_id.0) {
            Some(metadata) => {
                let mut topics: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                for (topic, partition) in &metadata.partitions {
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
            None => TransactionState::default()
                .with_transactional_id(transactional_id)
                .with_error_code(ResponseError::TransactionalIdNotFound.code()),
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(super) fn list(broker: &Broker, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let store = broker.lock_transactions();
    let states = store
        .all()
        .into_iter()
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
