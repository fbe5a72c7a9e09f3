//! The Kafka API handlers: one module per group of APIs, each turning a typed request into a
//! typed response against the `Broker`. This file holds the version table and the dispatch.
//!
//! Every request is authorized by its handler, before it changes anything, through the
//! request's `Access` (its principal, its host and the ACLs as they stood when it arrived).
//! What each API needs, as in Kafka's `KafkaApis` (tested API by API in `tests.rs`):
//!
//! | API | needs | refused with |
//! |---|---|---|
//! | Produce | WRITE topic; with transactional batches, WRITE transactional id; auto-creating a topic, CREATE cluster or topic | TOPIC_, TRANSACTIONAL_ID_AUTHORIZATION_FAILED (auto-creation: UNKNOWN_TOPIC_OR_PARTITION) |
//! | Fetch | READ topic | TOPIC_AUTHORIZATION_FAILED |
//! | ListOffsets | DESCRIBE topic | TOPIC_AUTHORIZATION_FAILED |
//! | OffsetForLeaderEpoch | DESCRIBE topic, or CLUSTER_ACTION cluster | TOPIC_AUTHORIZATION_FAILED |
//! | Metadata | DESCRIBE topic (others left out of a full listing); auto-creating, CREATE cluster or topic | TOPIC_AUTHORIZATION_FAILED |
//! | DescribeCluster | nothing (DESCRIBE cluster shows in its authorized operations) | - |
//! | CreateTopics | CREATE cluster or topic (its configs shown with DESCRIBE_CONFIGS topic) | TOPIC_AUTHORIZATION_FAILED |
//! | DeleteTopics | DELETE topic (and DESCRIBE topic when named by id) | TOPIC_AUTHORIZATION_FAILED |
//! | CreatePartitions | ALTER topic | TOPIC_AUTHORIZATION_FAILED |
//! | DeleteRecords | DELETE topic | TOPIC_AUTHORIZATION_FAILED |
//! | DescribeConfigs | DESCRIBE_CONFIGS topic, or cluster for the broker | TOPIC_, CLUSTER_AUTHORIZATION_FAILED |
//! | AlterConfigs, IncrementalAlterConfigs | ALTER_CONFIGS topic, or cluster for the broker | TOPIC_, CLUSTER_AUTHORIZATION_FAILED |
//! | FindCoordinator | DESCRIBE group or transactional id | GROUP_, TRANSACTIONAL_ID_AUTHORIZATION_FAILED |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup | READ group | GROUP_AUTHORIZATION_FAILED |
//! | ConsumerGroupHeartbeat | READ group, DESCRIBE every topic subscribed by name (a regular expression matches only describable topics) | GROUP_, TOPIC_AUTHORIZATION_FAILED |
//! | ConsumerGroupDescribe | DESCRIBE group | GROUP_AUTHORIZATION_FAILED |
//! | OffsetCommit | READ group, READ topic | GROUP_, TOPIC_AUTHORIZATION_FAILED |
//! | OffsetFetch | DESCRIBE group, DESCRIBE topic (others left out of a fetch of every offset) | GROUP_, TOPIC_AUTHORIZATION_FAILED |
//! | ListGroups | DESCRIBE cluster lists every group, else the groups with DESCRIBE group | - (filtered) |
//! | DescribeGroups | DESCRIBE group | GROUP_AUTHORIZATION_FAILED |
//! | DeleteGroups | DELETE group | GROUP_AUTHORIZATION_FAILED |
//! | OffsetDelete | DELETE group, READ topic | GROUP_, TOPIC_AUTHORIZATION_FAILED |
//! | InitProducerId | transactional: WRITE transactional id; idempotent: IDEMPOTENT_WRITE cluster or WRITE on some topic | TRANSACTIONAL_ID_, CLUSTER_AUTHORIZATION_FAILED |
//! | AddPartitionsToTxn | WRITE transactional id, WRITE topic | TRANSACTIONAL_ID_, TOPIC_AUTHORIZATION_FAILED |
//! | AddOffsetsToTxn | WRITE transactional id, READ group | TRANSACTIONAL_ID_, GROUP_AUTHORIZATION_FAILED |
//! | TxnOffsetCommit | WRITE transactional id, READ group, READ topic | TRANSACTIONAL_ID_, GROUP_, TOPIC_AUTHORIZATION_FAILED |
//! | EndTxn | WRITE transactional id | TRANSACTIONAL_ID_AUTHORIZATION_FAILED |
//! | DescribeTransactions | DESCRIBE transactional id (its topics shown with DESCRIBE topic) | TRANSACTIONAL_ID_AUTHORIZATION_FAILED |
//! | ListTransactions | DESCRIBE transactional id | - (filtered) |
//! | CreateAcls, DeleteAcls | ALTER cluster | CLUSTER_AUTHORIZATION_FAILED |
//! | DescribeAcls | DESCRIBE cluster | CLUSTER_AUTHORIZATION_FAILED |
//! | AlterUserScramCredentials | ALTER cluster | CLUSTER_AUTHORIZATION_FAILED |
//! | DescribeUserScramCredentials | DESCRIBE cluster | CLUSTER_AUTHORIZATION_FAILED |
//! | ApiVersions, SaslHandshake, SaslAuthenticate | nothing (answered by the protocol server) | - |
//!
//! Topics named `_tidewater_*` are for superusers only: for anyone else every operation on
//! them is refused, whatever the ACLs say.

mod acls;
mod admin;
mod configs;
mod consumer_groups;
mod delete_records;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod scram;
#[cfg(test)]
mod tests;
mod transactions;

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tidewater_kafka::kafka_protocol::protocol::StrBytes;
use tidewater_kafka::{
    ApiRange, ConnectionInfo, Handler, Reply, ReplyFuture, Request, SupportedVersions, Turn,
};

use crate::broker::Broker;

pub use self::fetch::FETCH_MAX_WAIT_MS_MAX;

/// The APIs and versions this broker implements, sized to what librdkafka 2.x, kafka-python,
/// aiokafka and kafkajs use. Fetch stays below v13, where requests name topics by id.
const SUPPORTED: &[ApiRange] = &[
    ApiRange { api_key: ApiKey::Produce, min: 3, max: 11 },
    ApiRange { api_key: ApiKey::Fetch, min: 4, max: 12 },
    ApiRange { api_key: ApiKey::ListOffsets, min: 1, max: 7 },
    ApiRange { api_key: ApiKey::Metadata, min: 1, max: 12 },
    ApiRange { api_key: ApiKey::CreateTopics, min: 2, max: 7 },
    ApiRange { api_key: ApiKey::DeleteTopics, min: 1, max: 6 },
    ApiRange { api_key: ApiKey::CreatePartitions, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::DeleteRecords, min: 0, max: 2 },
    ApiRange { api_key: ApiKey::DescribeConfigs, min: 1, max: 4 },
    ApiRange { api_key: ApiKey::AlterConfigs, min: 0, max: 2 },
    ApiRange { api_key: ApiKey::IncrementalAlterConfigs, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::DescribeCluster, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::OffsetForLeaderEpoch, min: 2, max: 4 },
    ApiRange { api_key: ApiKey::InitProducerId, min: 0, max: 4 },
    ApiRange { api_key: ApiKey::FindCoordinator, min: 0, max: 4 },
    ApiRange { api_key: ApiKey::JoinGroup, min: 0, max: 7 },
    ApiRange { api_key: ApiKey::SyncGroup, min: 0, max: 5 },
    ApiRange { api_key: ApiKey::Heartbeat, min: 0, max: 4 },
    ApiRange { api_key: ApiKey::LeaveGroup, min: 0, max: 5 },
    // v9 of both: the member epoch of consumer-protocol groups (the wire is v8's).
    ApiRange { api_key: ApiKey::OffsetCommit, min: 2, max: 9 },
    ApiRange { api_key: ApiKey::OffsetFetch, min: 1, max: 9 },
    ApiRange { api_key: ApiKey::ListGroups, min: 0, max: 5 },
    ApiRange { api_key: ApiKey::DescribeGroups, min: 0, max: 5 },
    ApiRange { api_key: ApiKey::DeleteGroups, min: 0, max: 2 },
    ApiRange { api_key: ApiKey::OffsetDelete, min: 0, max: 0 },
    // KIP-848. Heartbeat v0 had the coordinator make up member ids; librdkafka sends only v1.
    ApiRange { api_key: ApiKey::ConsumerGroupHeartbeat, min: 1, max: 1 },
    ApiRange { api_key: ApiKey::ConsumerGroupDescribe, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::AddPartitionsToTxn, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::AddOffsetsToTxn, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::TxnOffsetCommit, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::EndTxn, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::DescribeTransactions, min: 0, max: 0 },
    ApiRange { api_key: ApiKey::ListTransactions, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::DescribeAcls, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::CreateAcls, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::DeleteAcls, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::DescribeUserScramCredentials, min: 0, max: 0 },
    ApiRange { api_key: ApiKey::AlterUserScramCredentials, min: 0, max: 0 },
];

/// The broker as the protocol server sees it.
#[derive(Debug)]
pub struct BrokerHandler {
    broker: Arc<Broker>,
    supported: SupportedVersions,
}

impl BrokerHandler {
    pub fn new(broker: Arc<Broker>) -> Self {
        BrokerHandler { broker, supported: SupportedVersions::new(SUPPORTED) }
    }
}

impl Handler for BrokerHandler {
    fn supported_versions(&self) -> &SupportedVersions {
        &self.supported
    }

    fn handle(&self, request: Request, connection: &ConnectionInfo) -> ReplyFuture {
        let broker = self.broker.clone();
        // Appends keep the connection's request order: take the turn now, while requests are
        // still handed over one by one.
        let turn = matches!(request.body, RequestKind::Produce(_)).then(|| connection.turns.take());
        let connection = connection.clone();
        Box::pin(async move { dispatch(broker, request, turn, connection).await })
    }
}

async fn dispatch(
    broker: Arc<Broker>,
    request: Request,
    turn: Option<Turn>,
    connection: ConnectionInfo,
) -> Reply {
    let version = request.api_version;
    let client_id = request.header.client_id.as_ref().map(|id| id.to_string()).unwrap_or_default();
    let access = broker.acls.access(connection.principal.clone(), connection.peer.ip());
    let response =
        match (request.body, turn) {
            (RequestKind::Produce(body), Some(turn)) => {
                return produce::handle(broker, body, version, turn, access).await
            }
            (RequestKind::Fetch(body), _) => {
                let (response, files) =
                    fetch::handle(broker, body, version, access, connection.sends_files).await;
                let response = ResponseKind::Fetch(response);
                return if files.is_empty() {
                    Reply::Response(response)
                } else {
                    Reply::WithFiles(response, files)
                };
            }
            (RequestKind::DeleteRecords(body), _) => {
                ResponseKind::DeleteRecords(delete_records::handle(broker, body, access).await)
            }
            (RequestKind::ListOffsets(body), _) => {
                ResponseKind::ListOffsets(offsets::list_offsets(broker, body, version, access).await)
            }
            (RequestKind::OffsetForLeaderEpoch(body), _) => {
                ResponseKind::OffsetForLeaderEpoch(offsets::offset_for_leader_epoch(&broker, body, &access))
            }
            (RequestKind::InitProducerId(body), _) => {
                ResponseKind::InitProducerId(producer_id::init_producer_id(broker, body, access).await)
            }
            (RequestKind::AddPartitionsToTxn(body), _) => {
                ResponseKind::AddPartitionsToTxn(transactions::add_partitions(broker, body, access).await)
            }
            (RequestKind::AddOffsetsToTxn(body), _) => {
                ResponseKind::AddOffsetsToTxn(transactions::add_offsets(broker, body, access).await)
            }
            (RequestKind::TxnOffsetCommit(body), _) => {
                ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(broker, body, access).await)
            }
            (RequestKind::EndTxn(body), _) => {
                ResponseKind::EndTxn(transactions::end_txn(broker, body, access).await)
            }
            (RequestKind::DescribeTransactions(body), _) => {
                ResponseKind::DescribeTransactions(transactions::describe(&broker, body, &access))
            }
            (RequestKind::ListTransactions(body), _) => {
                ResponseKind::ListTransactions(transactions::list(&broker, body, &access))
            }
            (RequestKind::FindCoordinator(body), _) => ResponseKind::FindCoordinator(
                groups::find_coordinator(&broker, body, version, &connection.listener, &access),
            ),
            (RequestKind::JoinGroup(body), _) => ResponseKind::JoinGroup(
                groups::join_group(broker, body, version, connection, client_id, access).await,
            ),
            (RequestKind::SyncGroup(body), _) => {
                ResponseKind::SyncGroup(groups::sync_group(broker, body, access).await)
            }
            (RequestKind::Heartbeat(body), _) => {
                ResponseKind::Heartbeat(groups::heartbeat(&broker, body, &access))
            }
            (RequestKind::LeaveGroup(body), _) => {
                ResponseKind::LeaveGroup(groups::leave_group(broker, body, version, access).await)
            }
            (RequestKind::OffsetCommit(body), _) => {
                ResponseKind::OffsetCommit(groups::offset_commit(broker, body, version, access).await)
            }
            (RequestKind::ConsumerGroupHeartbeat(body), _) => ResponseKind::ConsumerGroupHeartbeat(
                consumer_groups::heartbeat(&broker, body, &connection, client_id, &access).await,
            ),
            (RequestKind::ConsumerGroupDescribe(body), _) => ResponseKind::ConsumerGroupDescribe(
                consumer_groups::describe(&broker, body, version, &access),
            ),
            (RequestKind::OffsetFetch(body), _) => {
                ResponseKind::OffsetFetch(groups::offset_fetch(&broker, body, version, &access))
            }
            (RequestKind::ListGroups(body), _) => {
                ResponseKind::ListGroups(groups::list_groups(&broker, body, &access))
            }
            (RequestKind::DescribeGroups(body), _) => {
                ResponseKind::DescribeGroups(groups::describe_groups(&broker, body, &access))
            }
            (RequestKind::DeleteGroups(body), _) => {
                ResponseKind::DeleteGroups(groups::delete_groups(broker, body, access).await)
            }
            (RequestKind::OffsetDelete(body), _) => {
                ResponseKind::OffsetDelete(groups::offset_delete(broker, body, access).await)
            }
            (RequestKind::Metadata(body), _) => ResponseKind::Metadata(
                metadata::metadata(broker, body, version, &connection.listener, access).await,
            ),
            (RequestKind::DescribeCluster(body), _) => ResponseKind::DescribeCluster(
                metadata::describe_cluster(&broker, body, &connection.listener, &access),
            ),
            (RequestKind::CreateTopics(body), _) => {
                ResponseKind::CreateTopics(admin::create_topics(broker, body, version, access).await)
            }
            (RequestKind::DeleteTopics(body), _) => {
                ResponseKind::DeleteTopics(admin::delete_topics(broker, body, version, access).await)
            }
            (RequestKind::CreatePartitions(body), _) => {
                ResponseKind::CreatePartitions(admin::create_partitions(broker, body, access).await)
            }
            (RequestKind::DescribeConfigs(body), _) => {
                ResponseKind::DescribeConfigs(configs::describe(&broker, body, version, &access))
            }
            (RequestKind::AlterConfigs(body), _) => {
                ResponseKind::AlterConfigs(configs::alter(broker, body, access).await)
            }
            (RequestKind::IncrementalAlterConfigs(body), _) => {
                ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(broker, body, access).await)
            }
            (RequestKind::CreateAcls(body), _) => {
                ResponseKind::CreateAcls(acls::create(broker, body, version, access).await)
            }
            (RequestKind::DescribeAcls(body), _) => {
                ResponseKind::DescribeAcls(acls::describe(&broker, body, version, &access))
            }
            (RequestKind::DeleteAcls(body), _) => {
                ResponseKind::DeleteAcls(acls::delete(broker, body, version, access).await)
            }
            (RequestKind::DescribeUserScramCredentials(body), _) => {
                ResponseKind::DescribeUserScramCredentials(scram::describe(&broker, body, &access))
            }
            (RequestKind::AlterUserScramCredentials(body), _) => {
                ResponseKind::AlterUserScramCredentials(scram::alter(broker, body, &access).await)
            }
            // The protocol server only passes on APIs in `SUPPORTED`, all matched above.
            (other, _) => {
                tracing::error!(api_key = ?request.api_key, "no handler for a supported API");
                debug_assert!(false, "no handler for {other:?}");
                return Reply::NoResponse;
            }
        };
    Reply::Response(response)
}

/// Runs blocking broker work (file I/O, fsync) on the blocking pool. A panic there is a bug: it
/// is re-raised so the protocol server closes this connection (and only this one).
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("blocking broker task cancelled: {error}"),
    }
}

fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}
