//! The Kafka API handlers: one module per group of APIs, each turning a typed request into a
//! typed response against the `Broker`. This file holds the version table and the dispatch.

mod admin;
mod configs;
mod delete_records;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod scram;
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
    ApiRange { api_key: ApiKey::OffsetCommit, min: 2, max: 8 },
    ApiRange { api_key: ApiKey::OffsetFetch, min: 1, max: 8 },
    ApiRange { api_key: ApiKey::ListGroups, min: 0, max: 4 },
    ApiRange { api_key: ApiKey::DescribeGroups, min: 0, max: 5 },
    ApiRange { api_key: ApiKey::DeleteGroups, min: 0, max: 2 },
    ApiRange { api_key: ApiKey::OffsetDelete, min: 0, max: 0 },
    ApiRange { api_key: ApiKey::AddPartitionsToTxn, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::AddOffsetsToTxn, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::TxnOffsetCommit, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::EndTxn, min: 0, max: 3 },
    ApiRange { api_key: ApiKey::DescribeTransactions, min: 0, max: 0 },
    ApiRange { api_key: ApiKey::ListTransactions, min: 0, max: 1 },
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
    let response = match (request.body, turn) {
        (RequestKind::Produce(body), Some(turn)) => {
            return produce::handle(broker, body, version, turn).await
        }
        (RequestKind::Fetch(body), _) => ResponseKind::Fetch(fetch::handle(broker, body, version).await),
        (RequestKind::DeleteRecords(body), _) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, body).await)
        }
        (RequestKind::ListOffsets(body), _) => {
            ResponseKind::ListOffsets(offsets::list_offsets(broker, body, version).await)
        }
        (RequestKind::OffsetForLeaderEpoch(body), _) => {
            ResponseKind::OffsetForLeaderEpoch(offsets::offset_for_leader_epoch(&broker, body))
        }
        (RequestKind::InitProducerId(body), _) => {
            ResponseKind::InitProducerId(producer_id::init_producer_id(broker, body).await)
        }
        (RequestKind::AddPartitionsToTxn(body), _) => {
            ResponseKind::AddPartitionsToTxn(transactions::add_partitions(broker, body).await)
        }
        (RequestKind::AddOffsetsToTxn(body), _) => {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets(broker, body).await)
        }
        (RequestKind::TxnOffsetCommit(body), _) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(broker, body).await)
        }
        (RequestKind::EndTxn(body), _) => ResponseKind::EndTxn(transactions::end_txn(broker, body).await),
        (RequestKind::DescribeTransactions(body), _) => {
            ResponseKind::DescribeTransactions(transactions::describe(&broker, body))
        }
        (RequestKind::ListTransactions(body), _) => {
            ResponseKind::ListTransactions(transactions::list(&broker, body))
        }
        (RequestKind::FindCoordinator(body), _) => ResponseKind::FindCoordinator(groups::find_coordinator(
            &broker,
            body,
            version,
            &connection.listener,
        )),
        (RequestKind::JoinGroup(body), _) => {
            ResponseKind::JoinGroup(groups::join_group(broker, body, version, connection, client_id).await)
        }
        (RequestKind::SyncGroup(body), _) => ResponseKind::SyncGroup(groups::sync_group(broker, body).await),
        (RequestKind::Heartbeat(body), _) => ResponseKind::Heartbeat(groups::heartbeat(&broker, body)),
        (RequestKind::LeaveGroup(body), _) => {
            ResponseKind::LeaveGroup(groups::leave_group(&broker, body, version))
        }
        (RequestKind::OffsetCommit(body), _) => {
            ResponseKind::OffsetCommit(groups::offset_commit(broker, body).await)
        }
        (RequestKind::OffsetFetch(body), _) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(&broker, body, version))
        }
        (RequestKind::ListGroups(body), _) => ResponseKind::ListGroups(groups::list_groups(&broker, body)),
        (RequestKind::DescribeGroups(body), _) => {
            ResponseKind::DescribeGroups(groups::describe_groups(&broker, body))
        }
        (RequestKind::DeleteGroups(body), _) => {
            ResponseKind::DeleteGroups(groups::delete_groups(broker, body).await)
        }
        (RequestKind::OffsetDelete(body), _) => {
            ResponseKind::OffsetDelete(groups::offset_delete(broker, body).await)
        }
        (RequestKind::Metadata(body), _) => {
            ResponseKind::Metadata(metadata::metadata(broker, body, version, &connection.listener).await)
        }
        (RequestKind::DescribeCluster(body), _) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(&broker, body, &connection.listener))
        }
        (RequestKind::CreateTopics(body), _) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, body, version).await)
        }
        (RequestKind::DeleteTopics(body), _) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, body, version).await)
        }
        (RequestKind::CreatePartitions(body), _) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, body).await)
        }
        (RequestKind::DescribeConfigs(body), _) => {
            ResponseKind::DescribeConfigs(configs::describe(&broker, body, version))
        }
        (RequestKind::AlterConfigs(body), _) => {
            ResponseKind::AlterConfigs(configs::alter(broker, body).await)
        }
        (RequestKind::IncrementalAlterConfigs(body), _) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(broker, body).await)
        }
        (RequestKind::DescribeUserScramCredentials(body), _) => {
            ResponseKind::DescribeUserScramCredentials(scram::describe(&broker, body))
        }
        (RequestKind::AlterUserScramCredentials(body), _) => {
            ResponseKind::AlterUserScramCredentials(scram::alter(broker, body).await)
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
