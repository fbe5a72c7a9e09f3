//! Authorization, API by API, through the real request path: each request is encoded as a
//! client would at its version, decoded by the protocol server's codec, handled by
//! `BrokerHandler` for a connection with a given principal and address, and its response
//! encoded at the same version and decoded again, so what is asserted is what a client reads.
//!
//! `the_acl_matrix` is the table in `handlers/mod.rs`, row by row: each API is refused with
//! Kafka's error code to a principal without ACLs, allowed with exactly the ACLs it needs (and
//! refused where part of them is missing), and allowed to a superuser and to everyone while
//! authorization is off.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request as ProtocolRequest, StrBytes};
use tidewater_kafka::kafka_protocol;
use tidewater_kafka::{
    decode_request, encode_response, ConnectionInfo, FileRecordSets, Handler, ListenerInfo, Reply,
    ResponseError, SecurityProtocol, TurnQueue,
};
use tidewater_log::{FsyncPolicy, LogConfig, ManualClock};

use super::BrokerHandler;
use crate::acl::AuthorizationConfig;
use crate::broker::{Broker, BrokerConfig};
use crate::groups::{CommittedOffset, GroupConfig};
use crate::test_support::{binding, transactional_batch};
use crate::topic_config::TopicConfigs;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNKNOWN_MEMBER_ID: i16 = 25;
const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const INVALID_REQUEST: i16 = 42;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TXN_DENIED: i16 = 53;
const MEMBER_ID_REQUIRED: i16 = 79;
const GROUP_ID_NOT_FOUND: i16 = 69;

#[test]
fn the_codes_are_kafkas() {
    let check = |constant: i16, error: ResponseError| assert_eq!(constant, error.code(), "{error:?}");
    check(UNKNOWN_TOPIC_OR_PARTITION, ResponseError::UnknownTopicOrPartition);
    check(UNKNOWN_MEMBER_ID, ResponseError::UnknownMemberId);
    check(TOPIC_DENIED, ResponseError::TopicAuthorizationFailed);
    check(GROUP_DENIED, ResponseError::GroupAuthorizationFailed);
    check(CLUSTER_DENIED, ResponseError::ClusterAuthorizationFailed);
    check(INVALID_REQUEST, ResponseError::InvalidRequest);
    check(TXN_DENIED, ResponseError::TransactionalIdAuthorizationFailed);
    check(MEMBER_ID_REQUIRED, ResponseError::MemberIdRequired);
    check(GROUP_ID_NOT_FOUND, ResponseError::GroupIdNotFound);
}

/// The principal the tests authorize, and the superuser.
const ALICE: &str = "User:alice";
const ADMIN: &str = "User:admin";
/// Where requests come from unless a test says otherwise.
const LOCALHOST: &str = "127.0.0.1";

/// A broker in a temporary directory with the topics `orders`, `logs` and
/// `_tidewater_devices`, and committed offsets of the group `app` on `orders` and `logs`.
struct Harness {
    dir: tempfile::TempDir,
    broker: Arc<Broker>,
    handler: BrokerHandler,
    runtime: tokio::runtime::Runtime,
}

fn config(dir: &Path, enabled: bool) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        node_id: 0,
        auto_create_topics: true,
        default_partitions: 1,
        // Durability is not what these tests are about, and they open hundreds of brokers.
        log_defaults: LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() },
        groups: GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() },
        offsets_retention_ms: i64::MAX,
        authorization: AuthorizationConfig { enabled, superusers: vec![ADMIN.parse().expect("principal")] },
        fetch_session_slots: crate::fetch_sessions::DEFAULT_SLOTS,
    }
}

impl Harness {
    fn new(enabled: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let harness = Harness::open(dir, enabled);
        for topic in ["orders", "logs", "_tidewater_devices"] {
            harness.broker.create_topic(topic, 1, TopicConfigs::new(), false).expect("create topic");
        }
        let committed =
            Some(CommittedOffset { offset: 1, leader_epoch: 0, metadata: None, commit_timestamp_ms: 1_000 });
        let offsets = vec![(("orders".into(), 0), committed.clone()), (("logs".into(), 0), committed)];
        harness.broker.lock_offsets().write("app", offsets).expect("commit");
        harness
    }

    /// The broker of an existing data directory.
    fn open(dir: tempfile::TempDir, enabled: bool) -> Harness {
        let broker = Broker::open(config(dir.path(), enabled), Arc::new(ManualClock::new(1_000_000)))
            .expect("open broker");
        let broker = Arc::new(broker);
        let handler = BrokerHandler::new(broker.clone());
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("test runtime");
        Harness { dir, broker, handler, runtime }
    }

    /// Closes the broker and opens its data directory again.
    fn reopen(self, enabled: bool) -> Harness {
        self.broker.close().expect("close");
        let Harness { dir, broker, handler, runtime } = self;
        drop((broker, handler, runtime));
        Harness::open(dir, enabled)
    }

    /// ALLOW bindings for alice from any host, written `TYPE:PATTERN:name OPERATION`.
    fn grant(&self, grants: &[&str]) {
        let bindings: Vec<_> = grants
            .iter()
            .map(|grant| {
                let (resource, operation) = grant.rsplit_once(' ').expect("resource and operation");
                binding(&format!("{resource} {ALICE}@* {operation} ALLOW"))
            })
            .collect();
        self.broker.acls.create(&bindings, 1_000).expect("grant");
    }

    /// Any bindings, written as `test_support::binding` reads them.
    fn add(&self, bindings: &[&str]) {
        let bindings: Vec<_> = bindings.iter().map(|text| binding(text)).collect();
        self.broker.acls.create(&bindings, 1_000).expect("add bindings");
    }

    fn call<R: ProtocolRequest>(&self, who: &str, version: i16, request: R) -> R::Response {
        self.call_from(who, LOCALHOST, version, request)
    }

    fn call_from<R: ProtocolRequest>(&self, who: &str, peer: &str, version: i16, request: R) -> R::Response {
        let api_key = ApiKey::try_from(R::KEY).expect("known api key");
        let mut payload = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("tests")))
            .encode(&mut payload, api_key.request_header_version(version))
            .expect("encode header");
        request.encode(&mut payload, version).expect("the request is encodable at its version");
        let request = decode_request(payload.freeze(), self.handler.supported_versions())
            .expect("the broker decodes it");
        let connection = ConnectionInfo {
            peer: SocketAddr::new(peer.parse::<IpAddr>().expect("peer address"), 50_000),
            connection_id: 1,
            turns: TurnQueue::default(),
            principal: Arc::new(who.parse().expect("principal")),
            listener: Arc::new(ListenerInfo {
                name: "PLAINTEXT".to_string(),
                protocol: SecurityProtocol::Plaintext,
                advertised_host: "127.0.0.1".to_string(),
                advertised_port: 9092,
            }),
            sends_files: true,
        };
        let (response, files) = match self.runtime.block_on(self.handler.handle(request, &connection)) {
            Reply::Response(response) => (response, FileRecordSets::default()),
            Reply::WithFiles(response, files) => (response, files),
            Reply::NoResponse => panic!("no response to {api_key:?}"),
        };
        let mut bytes: Bytes = encode_response(7, api_key, version, &response, &files)
            .expect("the response is encodable at the request's version")
            .into_contiguous()
            .expect("file record sets are readable")
            .slice(4..);
        ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
            .expect("response header");
        R::Response::decode(&mut bytes, version).expect("the response decodes")
    }

    /// The producer id and epoch of transactional id `tx`, initialized directly.
    fn transactional_producer(&self) -> (i64, i16) {
        self.broker.init_transactional_producer("tx", 60_000).expect("init tx")
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn topic(name: &str) -> TopicName {
    TopicName(text(name))
}

fn group(name: &str) -> GroupId {
    GroupId(text(name))
}

fn transactional_id(name: &str) -> TransactionalId {
    TransactionalId(text(name))
}

// The calls of the matrix: one request each, as `who`, returning every error code of the
// response in order.

fn produce(
    h: &Harness,
    who: &str,
    topic_name: &str,
    records: Vec<u8>,
    transactional: Option<&str>,
) -> Vec<i16> {
    let request = produce_request::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1_000)
        .with_transactional_id(transactional.map(transactional_id))
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic(topic_name))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let response = h.call(who, 9, request);
    response.responses.iter().flat_map(|topic| &topic.partition_responses).map(|p| p.error_code).collect()
}

fn plain_batch() -> Vec<u8> {
    tidewater_log::batch::encode_batch(1_000, &[(None, b"event".as_slice())])
}

fn produce_orders(h: &Harness, who: &str) -> Vec<i16> {
    produce(h, who, "orders", plain_batch(), None)
}

fn produce_new_topic(h: &Harness, who: &str) -> Vec<i16> {
    produce(h, who, "fresh", plain_batch(), None)
}

fn produce_transactional(h: &Harness, who: &str) -> Vec<i16> {
    let (producer_id, epoch) = h.transactional_producer();
    h.broker.add_partitions_to_txn("tx", producer_id, epoch, &[("orders".to_string(), 0)]);
    produce(h, who, "orders", transactional_batch(producer_id, epoch, 0, &[b"t"]), Some("tx"))
}

#[test]
fn transactional_batches_without_a_transactional_id_are_refused_where_acls_apply() {
    let check = |enabled: bool, who: &str, expected: &[i16]| {
        let harness = Harness::new(enabled);
        harness.grant(&[ORDERS_WRITE, TX_WRITE]);
        let (producer_id, epoch) = harness.transactional_producer();
        harness.broker.add_partitions_to_txn("tx", producer_id, epoch, &[("orders".to_string(), 0)]);
        let batch = transactional_batch(producer_id, epoch, 0, &[b"t"]);
        assert_eq!(produce(&harness, who, "orders", batch, None), expected, "{who}, authorization {enabled}");
    };
    check(true, ALICE, &[TXN_DENIED]);
    // As before ACLs existed.
    check(true, ADMIN, &[NONE]);
    check(false, ALICE, &[NONE]);
}

/// KIP-890 part 1: a transactional batch is appended only to a partition its ongoing
/// transaction added, under that transaction's producer id and epoch.
#[test]
fn a_transactional_batch_goes_only_to_a_partition_its_ongoing_transaction_added() {
    let harness = Harness::new(false);
    let h = &harness;
    let (producer_id, epoch) = h.transactional_producer();
    let batch = |sequence: i32| transactional_batch(producer_id, epoch, sequence, &[b"t"]);
    // Nothing added yet: refused, and nothing was appended.
    assert_eq!(produce(h, ADMIN, "orders", batch(0), Some("tx")), [INVALID_TXN_STATE]);
    h.broker.add_partitions_to_txn("tx", producer_id, epoch, &[("orders".to_string(), 0)]);
    assert_eq!(produce(h, ADMIN, "orders", batch(0), Some("tx")), [NONE]);
    // A newer epoch, or another producer, is not this transaction's; an older epoch is fenced.
    let other_epoch = transactional_batch(producer_id, epoch + 1, 1, &[b"t"]);
    assert_eq!(produce(h, ADMIN, "orders", other_epoch, Some("tx")), [INVALID_TXN_STATE]);
    let (_, newer) = h.transactional_producer();
    let zombie = transactional_batch(producer_id, epoch, 1, &[b"t"]);
    assert_eq!(produce(h, ADMIN, "orders", zombie, Some("tx")), [INVALID_PRODUCER_EPOCH]);
    h.broker.add_partitions_to_txn("tx", producer_id, newer, &[("orders".to_string(), 0)]);
    let epoch = newer;
    let batch = |sequence: i32| transactional_batch(producer_id, epoch, sequence, &[b"t"]);
    assert_eq!(produce(h, ADMIN, "orders", batch(0), Some("tx")), [NONE]);
    let other_producer = transactional_batch(producer_id + 1, epoch, 0, &[b"t"]);
    assert_eq!(produce(h, ADMIN, "orders", other_producer, Some("tx")), [INVALID_TXN_STATE]);
    // Once the transaction ended, a late batch of it is refused too.
    h.broker.end_txn("tx", producer_id, epoch, false).expect("abort");
    assert_eq!(produce(h, ADMIN, "orders", batch(1), Some("tx")), [INVALID_TXN_STATE]);
    // Plain batches are not concerned.
    assert_eq!(produce(h, ADMIN, "orders", plain_batch(), Some("tx")), [NONE]);
}

fn fetch_topic(h: &Harness, who: &str, topic_name: &str) -> Vec<i16> {
    let request = fetch_request::FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1_000_000)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic(topic_name))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1_000_000)])]);
    let response = h.call(who, 12, request);
    response.responses.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

fn fetch_orders(h: &Harness, who: &str) -> Vec<i16> {
    fetch_topic(h, who, "orders")
}

fn list_offsets(h: &Harness, who: &str) -> Vec<i16> {
    let request = list_offsets_request::ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let response = h.call(who, 7, request);
    response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

fn offset_for_leader_epoch(h: &Harness, who: &str) -> Vec<i16> {
    let request = offset_for_leader_epoch_request::OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
            .with_topic(topic("orders"))
            .with_partitions(vec![offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)])]);
    let response = h.call(who, 4, request);
    response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

fn metadata(h: &Harness, who: &str, topics: Option<&[&str]>) -> metadata_response::MetadataResponse {
    let request = metadata_request::MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_include_topic_authorized_operations(true)
        .with_topics(topics.map(|names| {
            names
                .iter()
                .map(|name| metadata_request::MetadataRequestTopic::default().with_name(Some(topic(name))))
                .collect()
        }));
    h.call(who, 12, request)
}

fn metadata_codes(h: &Harness, who: &str, name: &str) -> Vec<i16> {
    metadata(h, who, Some(&[name])).topics.iter().map(|topic| topic.error_code).collect()
}

fn metadata_orders(h: &Harness, who: &str) -> Vec<i16> {
    metadata_codes(h, who, "orders")
}

fn metadata_new_topic(h: &Harness, who: &str) -> Vec<i16> {
    metadata_codes(h, who, "fresh")
}

fn create_topic(h: &Harness, who: &str) -> Vec<i16> {
    let request =
        create_topics_request::CreateTopicsRequest::default().with_timeout_ms(1_000).with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic("fresh"))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let response = h.call(who, 7, request);
    response.topics.iter().flat_map(|topic| [topic.error_code, topic.topic_config_error_code]).collect()
}

fn delete_topic(h: &Harness, who: &str) -> Vec<i16> {
    let request =
        delete_topics_request::DeleteTopicsRequest::default().with_timeout_ms(1_000).with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_name(Some(topic("orders"))),
        ]);
    h.call(who, 6, request).responses.iter().map(|topic| topic.error_code).collect()
}

fn delete_topic_by_id(h: &Harness, who: &str) -> Vec<i16> {
    let topic_id = h.broker.topic("orders").expect("orders").id;
    let request = delete_topics_request::DeleteTopicsRequest::default()
        .with_timeout_ms(1_000)
        .with_topics(vec![delete_topics_request::DeleteTopicState::default().with_topic_id(topic_id)]);
    let response = h.call(who, 6, request);
    // Each topic's code, then whether its name was disclosed (1), which it is only to whoever
    // may describe it.
    response.responses.iter().flat_map(|topic| [topic.error_code, i16::from(topic.name.is_some())]).collect()
}

fn create_partitions(h: &Harness, who: &str) -> Vec<i16> {
    let request = create_partitions_request::CreatePartitionsRequest::default()
        .with_timeout_ms(1_000)
        .with_topics(vec![create_partitions_request::CreatePartitionsTopic::default()
            .with_name(topic("orders"))
            .with_count(2)]);
    h.call(who, 3, request).results.iter().map(|topic| topic.error_code).collect()
}

fn delete_records_request(
    topic_name: &str,
    partitions: &[i32],
) -> delete_records_request::DeleteRecordsRequest {
    let partitions = partitions
        .iter()
        .map(|index| {
            delete_records_request::DeleteRecordsPartition::default()
                .with_partition_index(*index)
                .with_offset(-1)
        })
        .collect();
    delete_records_request::DeleteRecordsRequest::default().with_timeout_ms(1_000).with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(topic(topic_name))
            .with_partitions(partitions),
    ])
}

fn delete_records_codes(h: &Harness, who: &str, topic_name: &str, partitions: &[i32]) -> Vec<i16> {
    let response = h.call(who, 2, delete_records_request(topic_name, partitions));
    response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

/// DeleteRecords up to the high watermark of `orders` (one record) and of its partition 1,
/// which does not exist; then the log start offset of `orders`, which only an authorized
/// request moves.
fn delete_records(h: &Harness, who: &str) -> Vec<i16> {
    let partition = h.broker.partition("orders", 0).expect("orders");
    partition.append(&mut plain_batch(), 1_000).expect("append");
    let mut codes = delete_records_codes(h, who, "orders", &[0, 1]);
    codes.push(i16::try_from(partition.log.log_start_offset()).expect("small offset"));
    codes
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn describe_configs(
    h: &Harness,
    who: &str,
    resources: &[(i8, &str)],
) -> describe_configs_response::DescribeConfigsResponse {
    let resources = resources
        .iter()
        .map(|(resource_type, name)| {
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(*resource_type)
                .with_resource_name(text(name))
                .with_configuration_keys(None)
        })
        .collect();
    h.call(who, 4, describe_configs_request::DescribeConfigsRequest::default().with_resources(resources))
}

fn describe_topic_configs(h: &Harness, who: &str) -> Vec<i16> {
    describe_configs(h, who, &[(RESOURCE_TOPIC, "orders")]).results.iter().map(|r| r.error_code).collect()
}

fn describe_broker_configs(h: &Harness, who: &str) -> Vec<i16> {
    describe_configs(h, who, &[(RESOURCE_BROKER, "0")]).results.iter().map(|r| r.error_code).collect()
}

fn alter_configs(h: &Harness, who: &str, resource_type: i8, name: &str) -> Vec<i16> {
    let request = alter_configs_request::AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(text("retention.ms"))
                .with_value(Some(text("60000")))]),
    ]);
    h.call(who, 2, request).responses.iter().map(|r| r.error_code).collect()
}

fn alter_topic_configs(h: &Harness, who: &str) -> Vec<i16> {
    alter_configs(h, who, RESOURCE_TOPIC, "orders")
}

fn alter_broker_configs(h: &Harness, who: &str) -> Vec<i16> {
    alter_configs(h, who, RESOURCE_BROKER, "0")
}

fn incremental_alter_configs(h: &Harness, who: &str) -> Vec<i16> {
    use incremental_alter_configs_request as request;
    let request = request::IncrementalAlterConfigsRequest::default().with_resources(vec![
        request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text("orders"))
            .with_configs(vec![request::AlterableConfig::default()
                .with_name(text("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(text("60000")))]),
    ]);
    h.call(who, 1, request).responses.iter().map(|r| r.error_code).collect()
}

/// IncrementalAlterConfigs' APPEND (2) or SUBTRACT (3) of `item` on the list config
/// `cleanup.policy` of `orders`, set to `initial` first; then whether the policy changed (1),
/// which it does only for an authorized request.
fn edit_cleanup_policy(h: &Harness, who: &str, initial: &str, operation: i8, item: &str) -> Vec<i16> {
    use incremental_alter_configs_request as request;
    let policy = || h.broker.topic("orders").expect("orders").configs.get("cleanup.policy").cloned();
    let configs = TopicConfigs::from([("cleanup.policy".to_string(), initial.to_string())]);
    h.broker.set_topic_configs("orders", configs, false).expect("set cleanup.policy");
    let request = request::IncrementalAlterConfigsRequest::default().with_resources(vec![
        request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text("orders"))
            .with_configs(vec![request::AlterableConfig::default()
                .with_name(text("cleanup.policy"))
                .with_config_operation(operation)
                .with_value(Some(text(item)))]),
    ]);
    let response = h.call(who, 1, request);
    let mut codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    codes.push(i16::from(policy().as_deref() != Some(initial)));
    codes
}

fn append_cleanup_policy(h: &Harness, who: &str) -> Vec<i16> {
    edit_cleanup_policy(h, who, "delete", 2, "compact")
}

fn subtract_cleanup_policy(h: &Harness, who: &str) -> Vec<i16> {
    edit_cleanup_policy(h, who, "compact,delete", 3, "delete")
}

fn find_coordinator(h: &Harness, who: &str, key_type: i8, key: &str) -> Vec<i16> {
    let request = find_coordinator_request::FindCoordinatorRequest::default()
        .with_key_type(key_type)
        .with_coordinator_keys(vec![text(key)]);
    let response = h.call(who, 4, request);
    for coordinator in &response.coordinators {
        // A refusal names no node.
        let refused = coordinator.error_code != NONE;
        assert_eq!(coordinator.node_id.0 == -1, refused, "{coordinator:?}");
    }
    response.coordinators.iter().map(|c| c.error_code).collect()
}

fn find_group_coordinator(h: &Harness, who: &str) -> Vec<i16> {
    find_coordinator(h, who, 0, "app")
}

fn find_transaction_coordinator(h: &Harness, who: &str) -> Vec<i16> {
    find_coordinator(h, who, 1, "tx")
}

fn join_group(h: &Harness, who: &str) -> Vec<i16> {
    let request = join_group_request::JoinGroupRequest::default()
        .with_group_id(group("app"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default().with_name(text("range"))
        ]);
    vec![h.call(who, 7, request).error_code]
}

fn sync_group(h: &Harness, who: &str) -> Vec<i16> {
    let request = sync_group_request::SyncGroupRequest::default()
        .with_group_id(group("app"))
        .with_generation_id(1)
        .with_member_id(text("someone"));
    vec![h.call(who, 5, request).error_code]
}

fn heartbeat(h: &Harness, who: &str) -> Vec<i16> {
    let request = heartbeat_request::HeartbeatRequest::default()
        .with_group_id(group("app"))
        .with_generation_id(1)
        .with_member_id(text("someone"));
    vec![h.call(who, 4, request).error_code]
}

/// A member joining group `app` over KIP-848's protocol, subscribed to `orders`.
fn consumer_group_heartbeat(h: &Harness, who: &str) -> Vec<i16> {
    vec![h.call(who, 1, consumer_join("app", "m1")).error_code]
}

fn consumer_join(
    group_id: &str,
    member: &str,
) -> consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest {
    consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(text(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(10_000)
        .with_subscribed_topic_names(Some(vec![topic("orders")]))
        .with_topic_partitions(Some(Vec::new()))
}

fn consumer_group_describe(h: &Harness, who: &str) -> Vec<i16> {
    let request = consumer_group_describe_request::ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![group("app")]);
    h.call(who, 0, request).groups.iter().map(|g| g.error_code).collect()
}

/// ConsumerGroupDescribe of a group whose member (joined by the superuser) subscribes to
/// `orders`: the topic's name is shown only to who may describe it.
fn describe_subscribed_consumer_group(h: &Harness, who: &str) -> Vec<i16> {
    h.call(ADMIN, 1, consumer_join("app", "m1"));
    consumer_group_describe(h, who)
}

fn leave_group(h: &Harness, who: &str) -> Vec<i16> {
    let request = leave_group_request::LeaveGroupRequest::default()
        .with_group_id(group("app"))
        .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(text("someone"))]);
    let response = h.call(who, 5, request);
    std::iter::once(response.error_code).chain(response.members.iter().map(|m| m.error_code)).collect()
}

fn offset_commit(h: &Harness, who: &str) -> Vec<i16> {
    let request = offset_commit_request::OffsetCommitRequest::default()
        .with_group_id(group("app"))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let response = h.call(who, 8, request);
    response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

/// OffsetFetch v8 for group `app`: the group's code, then each partition's.
fn offset_fetch(
    h: &Harness,
    who: &str,
    topics: Option<&[&str]>,
) -> offset_fetch_response::OffsetFetchResponse {
    let topics = topics.map(|names| {
        names
            .iter()
            .map(|name| {
                offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(topic(name))
                    .with_partition_indexes(vec![0])
            })
            .collect()
    });
    let request = offset_fetch_request::OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(group("app"))
            .with_topics(topics),
    ]);
    h.call(who, 8, request)
}

fn offset_fetch_orders(h: &Harness, who: &str) -> Vec<i16> {
    let response = offset_fetch(h, who, Some(&["orders"]));
    let groups = response.groups.iter();
    groups
        .flat_map(|group| {
            let partitions = group.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code);
            std::iter::once(group.error_code).chain(partitions)
        })
        .collect()
}

/// OffsetFetch v7 (one group, its error at the top) for group `app` and topic `orders`.
fn offset_fetch_v7(h: &Harness, who: &str) -> Vec<i16> {
    let request = offset_fetch_request::OffsetFetchRequest::default()
        .with_group_id(group("app"))
        .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(topic("orders"))
            .with_partition_indexes(vec![0])]));
    let response = h.call(who, 7, request);
    let partitions = response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code);
    std::iter::once(response.error_code).chain(partitions).collect()
}

/// OffsetFetch v1, which has no group error: every partition carries it.
fn offset_fetch_v1(h: &Harness, who: &str) -> Vec<i16> {
    let request = offset_fetch_request::OffsetFetchRequest::default()
        .with_group_id(group("app"))
        .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(topic("orders"))
            .with_partition_indexes(vec![0])]));
    let response = h.call(who, 1, request);
    response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

fn describe_groups(h: &Harness, who: &str) -> Vec<i16> {
    let request = describe_groups_request::DescribeGroupsRequest::default().with_groups(vec![group("app")]);
    h.call(who, 5, request).groups.iter().map(|g| g.error_code).collect()
}

fn delete_groups(h: &Harness, who: &str) -> Vec<i16> {
    let request = delete_groups_request::DeleteGroupsRequest::default().with_groups_names(vec![group("app")]);
    h.call(who, 2, request).results.iter().map(|r| r.error_code).collect()
}

fn offset_delete(h: &Harness, who: &str) -> Vec<i16> {
    let request = offset_delete_request::OffsetDeleteRequest::default()
        .with_group_id(group("app"))
        .with_topics(vec![offset_delete_request::OffsetDeleteRequestTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![
                offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let response = h.call(who, 0, request);
    let partitions = response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code);
    std::iter::once(response.error_code).chain(partitions).collect()
}

fn init_producer_id(h: &Harness, who: &str, transactional: Option<&str>) -> Vec<i16> {
    let request = init_producer_id_request::InitProducerIdRequest::default()
        .with_transactional_id(transactional.map(transactional_id))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    vec![h.call(who, 4, request).error_code]
}

fn init_transactional_producer(h: &Harness, who: &str) -> Vec<i16> {
    init_producer_id(h, who, Some("tx"))
}

fn init_idempotent_producer(h: &Harness, who: &str) -> Vec<i16> {
    init_producer_id(h, who, None)
}

fn add_partitions_to_txn(h: &Harness, who: &str) -> Vec<i16> {
    let (producer_id, epoch) = h.transactional_producer();
    let request = add_partitions_to_txn_request::AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(transactional_id("tx"))
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![0])]);
    let response = h.call(who, 3, request);
    let topics = response.results_by_topic_v3_and_below.iter();
    topics.flat_map(|topic| &topic.results_by_partition).map(|p| p.partition_error_code).collect()
}

fn add_offsets_to_txn(h: &Harness, who: &str) -> Vec<i16> {
    let (producer_id, epoch) = h.transactional_producer();
    let request = add_offsets_to_txn_request::AddOffsetsToTxnRequest::default()
        .with_transactional_id(transactional_id("tx"))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_group_id(group("app"));
    vec![h.call(who, 3, request).error_code]
}

fn txn_offset_commit(h: &Harness, who: &str) -> Vec<i16> {
    let (producer_id, epoch) = h.transactional_producer();
    h.broker.add_offsets_to_txn("tx", producer_id, epoch, "app").expect("add offsets");
    let request = txn_offset_commit_request::TxnOffsetCommitRequest::default()
        .with_transactional_id(transactional_id("tx"))
        .with_group_id(group("app"))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(3)])]);
    let response = h.call(who, 3, request);
    response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
}

fn end_txn(h: &Harness, who: &str) -> Vec<i16> {
    let (producer_id, epoch) = h.transactional_producer();
    h.broker.add_partitions_to_txn("tx", producer_id, epoch, &[("orders".to_string(), 0)]);
    let request = end_txn_request::EndTxnRequest::default()
        .with_transactional_id(transactional_id("tx"))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_committed(false);
    vec![h.call(who, 3, request).error_code]
}

fn describe_transactions(h: &Harness, who: &str) -> Vec<i16> {
    h.transactional_producer();
    let request = describe_transactions_request::DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![transactional_id("tx")]);
    h.call(who, 0, request).transaction_states.iter().map(|state| state.error_code).collect()
}

fn describe_cluster(h: &Harness, who: &str) -> Vec<i16> {
    let request = describe_cluster_request::DescribeClusterRequest::default();
    vec![h.call(who, 1, request).error_code]
}

fn acl_creation(text: &str) -> create_acls_request::AclCreation {
    let binding = binding(text);
    use crate::acl::Coded;
    create_acls_request::AclCreation::default()
        .with_resource_type(binding.pattern.resource_type.code())
        .with_resource_name(StrBytes::from_string(binding.pattern.name.clone()))
        .with_resource_pattern_type(binding.pattern.pattern_type.code())
        .with_principal(StrBytes::from_string(binding.entry.principal.to_string()))
        .with_host(StrBytes::from_string(binding.entry.host.to_string()))
        .with_operation(binding.entry.operation.code())
        .with_permission_type(binding.entry.permission.code())
}

fn create_acls(h: &Harness, who: &str) -> Vec<i16> {
    let request = create_acls_request::CreateAclsRequest::default()
        .with_creations(vec![acl_creation("TOPIC:LITERAL:logs User:bob@* READ ALLOW")]);
    h.call(who, 3, request).results.iter().map(|r| r.error_code).collect()
}

/// A DescribeAcls or DeleteAcls filter: (resource type, name, pattern type, principal, host,
/// operation, permission), with Kafka's codes.
type Filter<'a> = (i8, Option<&'a str>, i8, Option<&'a str>, Option<&'a str>, i8, i8);
const EVERY_ACL: Filter<'static> = (1, None, 1, None, None, 1, 1);

fn describe_acls_request(filter: Filter) -> describe_acls_request::DescribeAclsRequest {
    let (resource_type, name, pattern_type, principal, host, operation, permission) = filter;
    describe_acls_request::DescribeAclsRequest::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(name.map(text))
        .with_pattern_type_filter(pattern_type)
        .with_principal_filter(principal.map(text))
        .with_host_filter(host.map(text))
        .with_operation(operation)
        .with_permission_type(permission)
}

fn delete_acls_filter(filter: Filter) -> delete_acls_request::DeleteAclsFilter {
    let (resource_type, name, pattern_type, principal, host, operation, permission) = filter;
    delete_acls_request::DeleteAclsFilter::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(name.map(text))
        .with_pattern_type_filter(pattern_type)
        .with_principal_filter(principal.map(text))
        .with_host_filter(host.map(text))
        .with_operation(operation)
        .with_permission_type(permission)
}

fn describe_acls(h: &Harness, who: &str) -> Vec<i16> {
    vec![h.call(who, 3, describe_acls_request(EVERY_ACL)).error_code]
}

fn delete_acls(h: &Harness, who: &str) -> Vec<i16> {
    let request =
        delete_acls_request::DeleteAclsRequest::default().with_filters(vec![delete_acls_filter(EVERY_ACL)]);
    h.call(who, 3, request).filter_results.iter().map(|r| r.error_code).collect()
}

fn describe_scram_credentials(h: &Harness, who: &str) -> Vec<i16> {
    let request = describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest::default()
        .with_users(None);
    vec![h.call(who, 0, request).error_code]
}

fn alter_scram_credentials(h: &Harness, who: &str) -> Vec<i16> {
    use alter_user_scram_credentials_request as request;
    let upsertion = request::ScramCredentialUpsertion::default()
        .with_name(text("bob"))
        .with_mechanism(1)
        .with_iterations(4096)
        .with_salt(Bytes::from_static(b"some salt"))
        .with_salted_password(Bytes::from(vec![7; 32]));
    let request = request::AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
    h.call(who, 0, request).results.iter().map(|result| result.error_code).collect()
}

/// One row of the table in `handlers/mod.rs`.
struct Case {
    api: &'static str,
    call: fn(&Harness, &str) -> Vec<i16>,
    /// The codes for alice without ACLs.
    refused: &'static [i16],
    /// The ACLs alice needs, `TYPE:PATTERN:name OPERATION`, and the codes she then gets (a
    /// superuser gets them too, and so does everyone while authorization is off).
    needs: &'static [&'static str],
    allowed: &'static [i16],
    /// Other sets of ACLs (part of what is needed, or another way to it) and their codes.
    also: &'static [(&'static [&'static str], &'static [i16])],
}

fn check(case: &Case) {
    let api = case.api;
    let run = |enabled: bool, who: &str, grants: &[&str]| {
        let harness = Harness::new(enabled);
        harness.grant(grants);
        (case.call)(&harness, who)
    };
    assert_eq!(run(true, ALICE, &[]), case.refused, "{api}: alice without ACLs");
    assert_eq!(run(true, ALICE, case.needs), case.allowed, "{api}: alice with {:?}", case.needs);
    for (grants, expected) in case.also {
        assert_eq!(run(true, ALICE, grants), *expected, "{api}: alice with {grants:?}");
    }
    assert_eq!(run(true, ADMIN, &[]), case.allowed, "{api}: a superuser");
    assert_eq!(run(false, ALICE, &[]), case.allowed, "{api}: alice with authorization off");
}

const ORDERS_WRITE: &str = "TOPIC:LITERAL:orders WRITE";
const ORDERS_READ: &str = "TOPIC:LITERAL:orders READ";
const ORDERS_DESCRIBE: &str = "TOPIC:LITERAL:orders DESCRIBE";
const APP_READ: &str = "GROUP:LITERAL:app READ";
const APP_DESCRIBE: &str = "GROUP:LITERAL:app DESCRIBE";
const APP_DELETE: &str = "GROUP:LITERAL:app DELETE";
const TX_WRITE: &str = "TRANSACTIONAL_ID:LITERAL:tx WRITE";

#[test]
fn the_acl_matrix() {
    let cases = [
        Case {
            api: "Produce",
            call: produce_orders,
            refused: &[TOPIC_DENIED],
            needs: &[ORDERS_WRITE],
            allowed: &[NONE],
            also: &[(&[ORDERS_READ], &[TOPIC_DENIED])],
        },
        Case {
            api: "Produce, auto-creating",
            call: produce_new_topic,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:fresh WRITE", "TOPIC:LITERAL:fresh CREATE"],
            allowed: &[NONE],
            also: &[
                (&["TOPIC:LITERAL:fresh WRITE"], &[UNKNOWN_TOPIC_OR_PARTITION]),
                (&["TOPIC:LITERAL:fresh WRITE", "CLUSTER:LITERAL:kafka-cluster CREATE"], &[NONE]),
            ],
        },
        Case {
            api: "Produce, transactional",
            call: produce_transactional,
            refused: &[TXN_DENIED],
            needs: &[TX_WRITE, ORDERS_WRITE],
            allowed: &[NONE],
            also: &[(&[ORDERS_WRITE], &[TXN_DENIED]), (&[TX_WRITE], &[TOPIC_DENIED])],
        },
        Case {
            api: "Fetch",
            call: fetch_orders,
            refused: &[TOPIC_DENIED],
            needs: &[ORDERS_READ],
            allowed: &[NONE],
            also: &[(&[ORDERS_WRITE], &[TOPIC_DENIED])],
        },
        Case {
            api: "ListOffsets",
            call: list_offsets,
            refused: &[TOPIC_DENIED],
            needs: &[ORDERS_DESCRIBE],
            allowed: &[NONE],
            also: &[(&[ORDERS_READ], &[NONE])],
        },
        Case {
            api: "OffsetForLeaderEpoch",
            call: offset_for_leader_epoch,
            refused: &[TOPIC_DENIED],
            needs: &[ORDERS_DESCRIBE],
            allowed: &[NONE],
            also: &[(&["CLUSTER:LITERAL:kafka-cluster CLUSTER_ACTION"], &[NONE])],
        },
        Case {
            api: "Metadata",
            call: metadata_orders,
            refused: &[TOPIC_DENIED],
            needs: &[ORDERS_DESCRIBE],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "Metadata, auto-creating",
            call: metadata_new_topic,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:fresh DESCRIBE", "TOPIC:LITERAL:fresh CREATE"],
            allowed: &[NONE],
            also: &[
                (&["TOPIC:LITERAL:fresh DESCRIBE"], &[TOPIC_DENIED]),
                (&["TOPIC:LITERAL:fresh DESCRIBE", "CLUSTER:LITERAL:kafka-cluster CREATE"], &[NONE]),
            ],
        },
        Case {
            api: "DescribeCluster",
            call: describe_cluster,
            refused: &[NONE],
            needs: &[],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "CreateTopics",
            call: create_topic,
            refused: &[TOPIC_DENIED, TOPIC_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster CREATE", "TOPIC:PREFIXED:fr DESCRIBE_CONFIGS"],
            allowed: &[NONE, NONE],
            also: &[
                (&["CLUSTER:LITERAL:kafka-cluster CREATE"], &[NONE, TOPIC_DENIED]),
                (&["TOPIC:LITERAL:fresh CREATE"], &[NONE, TOPIC_DENIED]),
                (&["TOPIC:LITERAL:other CREATE"], &[TOPIC_DENIED, TOPIC_DENIED]),
            ],
        },
        Case {
            api: "DeleteTopics",
            call: delete_topic,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:orders DELETE"],
            allowed: &[NONE],
            also: &[(&[ORDERS_DESCRIBE], &[TOPIC_DENIED])],
        },
        Case {
            api: "DeleteTopics, by id",
            call: delete_topic_by_id,
            refused: &[TOPIC_DENIED, 0],
            needs: &["TOPIC:LITERAL:orders DELETE"],
            allowed: &[NONE, 1],
            also: &[(&[ORDERS_DESCRIBE], &[TOPIC_DENIED, 1])],
        },
        Case {
            api: "CreatePartitions",
            call: create_partitions,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:orders ALTER"],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "DeleteRecords",
            call: delete_records,
            // A refused topic's partitions are refused alike, existing or not.
            refused: &[TOPIC_DENIED, TOPIC_DENIED, 0],
            needs: &["TOPIC:LITERAL:orders DELETE"],
            allowed: &[NONE, UNKNOWN_TOPIC_OR_PARTITION, 1],
            also: &[
                (&[ORDERS_DESCRIBE, ORDERS_WRITE], &[TOPIC_DENIED, TOPIC_DENIED, 0]),
                (&["TOPIC:PREFIXED:ord DELETE"], &[NONE, UNKNOWN_TOPIC_OR_PARTITION, 1]),
                (&["CLUSTER:LITERAL:kafka-cluster ALL"], &[TOPIC_DENIED, TOPIC_DENIED, 0]),
            ],
        },
        Case {
            api: "DescribeConfigs, topic",
            call: describe_topic_configs,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:orders DESCRIBE_CONFIGS"],
            allowed: &[NONE],
            also: &[
                (&["TOPIC:LITERAL:orders ALTER_CONFIGS"], &[NONE]),
                (&[ORDERS_DESCRIBE], &[TOPIC_DENIED]),
            ],
        },
        Case {
            api: "DescribeConfigs, broker",
            call: describe_broker_configs,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster DESCRIBE_CONFIGS"],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "AlterConfigs, topic",
            call: alter_topic_configs,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:orders ALTER_CONFIGS"],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "AlterConfigs, broker (refused for what it is once authorized)",
            call: alter_broker_configs,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster ALTER_CONFIGS"],
            allowed: &[INVALID_REQUEST],
            also: &[],
        },
        Case {
            api: "IncrementalAlterConfigs",
            call: incremental_alter_configs,
            refused: &[TOPIC_DENIED],
            needs: &["TOPIC:LITERAL:orders ALTER_CONFIGS"],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "IncrementalAlterConfigs, APPEND to a list",
            call: append_cleanup_policy,
            refused: &[TOPIC_DENIED, 0],
            needs: &["TOPIC:LITERAL:orders ALTER_CONFIGS"],
            allowed: &[NONE, 1],
            also: &[(
                &["TOPIC:LITERAL:orders DESCRIBE_CONFIGS", "TOPIC:LITERAL:orders ALTER"],
                &[TOPIC_DENIED, 0],
            )],
        },
        Case {
            api: "IncrementalAlterConfigs, SUBTRACT from a list",
            call: subtract_cleanup_policy,
            refused: &[TOPIC_DENIED, 0],
            needs: &["TOPIC:LITERAL:orders ALTER_CONFIGS"],
            allowed: &[NONE, 1],
            also: &[],
        },
        Case {
            api: "FindCoordinator, group",
            call: find_group_coordinator,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE],
            allowed: &[NONE],
            also: &[(&[APP_READ], &[NONE])],
        },
        Case {
            api: "FindCoordinator, transaction",
            call: find_transaction_coordinator,
            refused: &[TXN_DENIED],
            needs: &["TRANSACTIONAL_ID:LITERAL:tx DESCRIBE"],
            allowed: &[NONE],
            also: &[(&[TX_WRITE], &[NONE])],
        },
        Case {
            api: "JoinGroup",
            call: join_group,
            refused: &[GROUP_DENIED],
            needs: &[APP_READ],
            allowed: &[MEMBER_ID_REQUIRED],
            also: &[(&[APP_DESCRIBE], &[GROUP_DENIED])],
        },
        Case {
            api: "SyncGroup",
            call: sync_group,
            refused: &[GROUP_DENIED],
            needs: &[APP_READ],
            allowed: &[UNKNOWN_MEMBER_ID],
            also: &[],
        },
        Case {
            api: "Heartbeat",
            call: heartbeat,
            refused: &[GROUP_DENIED],
            needs: &[APP_READ],
            allowed: &[UNKNOWN_MEMBER_ID],
            also: &[],
        },
        Case {
            api: "ConsumerGroupHeartbeat",
            call: consumer_group_heartbeat,
            refused: &[GROUP_DENIED],
            needs: &[APP_READ, ORDERS_DESCRIBE],
            allowed: &[NONE],
            also: &[(&[APP_READ], &[TOPIC_DENIED]), (&[ORDERS_DESCRIBE], &[GROUP_DENIED])],
        },
        Case {
            api: "ConsumerGroupDescribe",
            call: consumer_group_describe,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE],
            // `app` has only offsets: not a consumer group.
            allowed: &[GROUP_ID_NOT_FOUND],
            also: &[(&[APP_READ], &[GROUP_ID_NOT_FOUND])],
        },
        Case {
            api: "ConsumerGroupDescribe, a member subscribed to a topic",
            call: describe_subscribed_consumer_group,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE, ORDERS_DESCRIBE],
            allowed: &[NONE],
            also: &[(&[APP_DESCRIBE], &[TOPIC_DENIED])],
        },
        Case {
            api: "LeaveGroup",
            call: leave_group,
            refused: &[GROUP_DENIED],
            needs: &[APP_READ],
            allowed: &[NONE, UNKNOWN_MEMBER_ID],
            also: &[],
        },
        Case {
            api: "OffsetCommit",
            call: offset_commit,
            refused: &[GROUP_DENIED],
            needs: &[APP_READ, ORDERS_READ],
            allowed: &[NONE],
            also: &[(&[APP_READ], &[TOPIC_DENIED]), (&[ORDERS_READ], &[GROUP_DENIED])],
        },
        Case {
            api: "OffsetFetch",
            call: offset_fetch_orders,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE, ORDERS_DESCRIBE],
            allowed: &[NONE, NONE],
            also: &[(&[APP_DESCRIBE], &[NONE, TOPIC_DENIED])],
        },
        Case {
            api: "OffsetFetch v7",
            call: offset_fetch_v7,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE, ORDERS_DESCRIBE],
            allowed: &[NONE, NONE],
            also: &[(&[APP_DESCRIBE], &[NONE, TOPIC_DENIED])],
        },
        Case {
            api: "OffsetFetch v1",
            call: offset_fetch_v1,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE, ORDERS_DESCRIBE],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "DescribeGroups",
            call: describe_groups,
            refused: &[GROUP_DENIED],
            needs: &[APP_DESCRIBE],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "DeleteGroups",
            call: delete_groups,
            refused: &[GROUP_DENIED],
            needs: &[APP_DELETE],
            allowed: &[NONE],
            also: &[(&[APP_READ], &[GROUP_DENIED])],
        },
        Case {
            api: "OffsetDelete",
            call: offset_delete,
            refused: &[GROUP_DENIED],
            needs: &[APP_DELETE, ORDERS_READ],
            allowed: &[NONE, NONE],
            also: &[(&[APP_DELETE], &[NONE, TOPIC_DENIED])],
        },
        Case {
            api: "InitProducerId, transactional",
            call: init_transactional_producer,
            refused: &[TXN_DENIED],
            needs: &[TX_WRITE],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "InitProducerId, idempotent",
            call: init_idempotent_producer,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster IDEMPOTENT_WRITE"],
            allowed: &[NONE],
            also: &[
                (&[ORDERS_WRITE], &[NONE]),
                (&["TOPIC:PREFIXED:ord WRITE"], &[NONE]),
                (&[ORDERS_READ], &[CLUSTER_DENIED]),
                (&["TOPIC:LITERAL:_tidewater_devices WRITE"], &[CLUSTER_DENIED]),
            ],
        },
        Case {
            api: "AddPartitionsToTxn",
            call: add_partitions_to_txn,
            refused: &[TXN_DENIED],
            needs: &[TX_WRITE, ORDERS_WRITE],
            allowed: &[NONE],
            also: &[(&[TX_WRITE], &[TOPIC_DENIED])],
        },
        Case {
            api: "AddOffsetsToTxn",
            call: add_offsets_to_txn,
            refused: &[TXN_DENIED],
            needs: &[TX_WRITE, APP_READ],
            allowed: &[NONE],
            also: &[(&[TX_WRITE], &[GROUP_DENIED]), (&[APP_READ], &[TXN_DENIED])],
        },
        Case {
            api: "TxnOffsetCommit",
            call: txn_offset_commit,
            refused: &[TXN_DENIED],
            needs: &[TX_WRITE, APP_READ, ORDERS_READ],
            allowed: &[NONE],
            also: &[(&[TX_WRITE, APP_READ], &[TOPIC_DENIED]), (&[TX_WRITE], &[GROUP_DENIED])],
        },
        Case {
            api: "EndTxn",
            call: end_txn,
            refused: &[TXN_DENIED],
            needs: &[TX_WRITE],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "DescribeTransactions",
            call: describe_transactions,
            refused: &[TXN_DENIED],
            needs: &["TRANSACTIONAL_ID:LITERAL:tx DESCRIBE"],
            allowed: &[NONE],
            also: &[(&[TX_WRITE], &[NONE])],
        },
        Case {
            api: "CreateAcls",
            call: create_acls,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster ALTER"],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "DescribeAcls",
            call: describe_acls,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster DESCRIBE"],
            allowed: &[NONE],
            also: &[(&["CLUSTER:LITERAL:kafka-cluster ALTER"], &[NONE])],
        },
        Case {
            api: "DescribeUserScramCredentials",
            call: describe_scram_credentials,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster DESCRIBE"],
            allowed: &[NONE],
            also: &[],
        },
        Case {
            api: "AlterUserScramCredentials",
            call: alter_scram_credentials,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster ALTER"],
            allowed: &[NONE],
            also: &[(&["CLUSTER:LITERAL:kafka-cluster DESCRIBE"], &[CLUSTER_DENIED])],
        },
        Case {
            api: "DeleteAcls",
            call: delete_acls,
            refused: &[CLUSTER_DENIED],
            needs: &["CLUSTER:LITERAL:kafka-cluster ALTER"],
            allowed: &[NONE],
            also: &[],
        },
    ];
    for case in &cases {
        check(case);
    }
}

/// Every binding below is about to be tried against an internal topic: everything, for
/// everyone, from everywhere.
const OPEN_EVERYTHING: &[&str] = &[
    "TOPIC:LITERAL:* User:*@* ALL ALLOW",
    "TOPIC:PREFIXED:_tidewater_ User:alice@* ALL ALLOW",
    "TOPIC:LITERAL:_tidewater_devices User:alice@* ALL ALLOW",
    "CLUSTER:LITERAL:kafka-cluster User:*@* ALL ALLOW",
];

#[test]
fn internal_topics_are_for_superusers_whatever_the_acls_say() {
    type Call = fn(&Harness, &str) -> Vec<i16>;
    let check = |api: &str, call: Call, refused: &[i16], allowed: &[i16]| {
        let harness = Harness::new(true);
        harness.add(OPEN_EVERYTHING);
        assert_eq!(call(&harness, ALICE), refused, "{api}: alice");
        let harness = Harness::new(true);
        assert_eq!(call(&harness, ADMIN), allowed, "{api}: a superuser");
    };
    check(
        "Produce",
        |h, who| produce(h, who, "_tidewater_devices", plain_batch(), None),
        &[TOPIC_DENIED],
        &[NONE],
    );
    check("Fetch", |h, who| fetch_topic(h, who, "_tidewater_devices"), &[TOPIC_DENIED], &[NONE]);
    check("Metadata", |h, who| metadata_codes(h, who, "_tidewater_devices"), &[TOPIC_DENIED], &[NONE]);
    check(
        "Metadata, auto-creating",
        |h, who| metadata_codes(h, who, "_tidewater_new"),
        &[TOPIC_DENIED],
        &[NONE],
    );
    check(
        "DescribeConfigs",
        |h, who| {
            let response = describe_configs(h, who, &[(RESOURCE_TOPIC, "_tidewater_devices")]);
            response.results.iter().map(|result| result.error_code).collect()
        },
        &[TOPIC_DENIED],
        &[NONE],
    );
    check(
        "AlterConfigs",
        |h, who| alter_configs(h, who, RESOURCE_TOPIC, "_tidewater_devices"),
        &[TOPIC_DENIED],
        &[NONE],
    );
    check(
        "CreateTopics",
        |h, who| {
            let request = create_topics_request::CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic("_tidewater_new"))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]);
            h.call(who, 7, request).topics.iter().map(|topic| topic.error_code).collect()
        },
        &[TOPIC_DENIED],
        &[NONE],
    );
    check(
        "DeleteTopics",
        |h, who| {
            let request = delete_topics_request::DeleteTopicsRequest::default()
                .with_topic_names(vec![topic("_tidewater_devices")]);
            h.call(who, 5, request).responses.iter().map(|topic| topic.error_code).collect()
        },
        &[TOPIC_DENIED],
        &[NONE],
    );
    check(
        "DeleteRecords",
        |h, who| delete_records_codes(h, who, "_tidewater_devices", &[0]),
        &[TOPIC_DENIED],
        &[NONE],
    );
    check(
        "OffsetCommit",
        |h, who| {
            h.grant(&[APP_READ]);
            let request = offset_commit_request::OffsetCommitRequest::default()
                .with_group_id(group("app"))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic("_tidewater_devices"))
                    .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()])]);
            let response = h.call(who, 8, request);
            response.topics.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect()
        },
        &[TOPIC_DENIED],
        &[NONE],
    );
    // A full listing leaves them out.
    let harness = Harness::new(true);
    harness.add(OPEN_EVERYTHING);
    let listed: Vec<_> = metadata(&harness, ALICE, None).topics.into_iter().filter_map(|t| t.name).collect();
    assert_eq!(listed, [topic("logs"), topic("orders")]);
}

#[test]
fn patterns_principals_and_hosts_decide_as_in_kafka() {
    let check = |bindings: &[&str], who: &str, peer: &str, expected: i16| {
        let harness = Harness::new(true);
        harness.add(bindings);
        let request = fetch_request::FetchRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            fetch_request::FetchTopic::default().with_topic(topic("orders")).with_partitions(vec![
                fetch_request::FetchPartition::default().with_partition_max_bytes(1024),
            ]),
        ]);
        let response = harness.call_from(who, peer, 12, request);
        let codes: Vec<i16> =
            response.responses.iter().flat_map(|topic| &topic.partitions).map(|p| p.error_code).collect();
        assert_eq!(codes, [expected], "{who} from {peer} under {bindings:?}");
    };
    let allow = "TOPIC:LITERAL:orders User:alice@* READ ALLOW";
    check(&[allow], ALICE, LOCALHOST, NONE);
    check(&[allow], "User:bob", LOCALHOST, TOPIC_DENIED);
    // Prefixed and literal patterns.
    check(&["TOPIC:PREFIXED:ord User:alice@* READ ALLOW"], ALICE, LOCALHOST, NONE);
    check(&["TOPIC:PREFIXED:orders- User:alice@* READ ALLOW"], ALICE, LOCALHOST, TOPIC_DENIED);
    check(&["TOPIC:LITERAL:ord User:alice@* READ ALLOW"], ALICE, LOCALHOST, TOPIC_DENIED);
    check(&["TOPIC:LITERAL:* User:alice@* READ ALLOW"], ALICE, LOCALHOST, NONE);
    // Deny over allow, from any pattern and for the wildcard principal.
    check(&[allow, "TOPIC:LITERAL:orders User:alice@* READ DENY"], ALICE, LOCALHOST, TOPIC_DENIED);
    check(&[allow, "TOPIC:PREFIXED:o User:*@* ALL DENY"], ALICE, LOCALHOST, TOPIC_DENIED);
    check(
        &["TOPIC:LITERAL:* User:*@* ALL ALLOW", "TOPIC:LITERAL:orders User:alice@* READ DENY"],
        "User:bob",
        LOCALHOST,
        NONE,
    );
    // The wildcard principal and hosts.
    check(&["TOPIC:LITERAL:orders User:*@* READ ALLOW"], "User:bob", LOCALHOST, NONE);
    check(&["TOPIC:LITERAL:orders User:alice@10.0.0.5 READ ALLOW"], ALICE, "10.0.0.5", NONE);
    check(&["TOPIC:LITERAL:orders User:alice@10.0.0.5 READ ALLOW"], ALICE, "::ffff:10.0.0.5", NONE);
    check(&["TOPIC:LITERAL:orders User:alice@10.0.0.5 READ ALLOW"], ALICE, LOCALHOST, TOPIC_DENIED);
    check(&[allow, "TOPIC:LITERAL:orders User:alice@10.0.0.6 READ DENY"], ALICE, "10.0.0.6", TOPIC_DENIED);
    check(&[allow, "TOPIC:LITERAL:orders User:alice@10.0.0.6 READ DENY"], ALICE, "10.0.0.7", NONE);
    check(&["TOPIC:LITERAL:orders User:alice@::1 READ ALLOW"], ALICE, "::1", NONE);
    // Superusers bypass even a DENY for everyone.
    check(&["TOPIC:LITERAL:orders User:*@* ALL DENY"], ADMIN, LOCALHOST, NONE);
}

#[test]
fn listings_leave_out_what_may_not_be_described() {
    let harness = || {
        let harness = Harness::new(true);
        let committed =
            Some(CommittedOffset { offset: 1, leader_epoch: 0, metadata: None, commit_timestamp_ms: 1_000 });
        harness.broker.lock_offsets().write("other", vec![(("logs".into(), 0), committed)]).expect("commit");
        let (producer_id, epoch) = harness.transactional_producer();
        let partitions = [("orders".to_string(), 0), ("logs".to_string(), 0)];
        harness.broker.add_partitions_to_txn("tx", producer_id, epoch, &partitions);
        harness.broker.init_transactional_producer("ty", 60_000).expect("init ty");
        harness
    };
    let check = |grants: &[&str], who: &str, expected: &str| {
        let harness = harness();
        harness.grant(grants);
        let topics: Vec<String> = metadata(&harness, who, None)
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref())
            .map(|n| n.to_string())
            .collect();
        let groups = harness.call(who, 4, list_groups_request::ListGroupsRequest::default()).groups;
        let mut groups: Vec<String> = groups.iter().map(|g| g.group_id.to_string()).collect();
        groups.sort();
        let offsets = offset_fetch(&harness, who, None);
        let offsets: Vec<String> = offsets
            .groups
            .iter()
            .flat_map(|group| {
                let topics = group.topics.iter().map(|topic| topic.name.to_string());
                std::iter::once(format!("code {}", group.error_code)).chain(topics)
            })
            .collect();
        let configs = describe_configs(
            &harness,
            who,
            &[(RESOURCE_TOPIC, "orders"), (RESOURCE_TOPIC, "logs"), (RESOURCE_BROKER, "0")],
        );
        let configs: Vec<String> = configs
            .results
            .iter()
            .map(|r| format!("{}={}/{}", r.resource_name.as_str(), r.error_code, r.configs.len().min(1)))
            .collect();
        let transactions =
            harness.call(who, 1, list_transactions_request::ListTransactionsRequest::default());
        let transactions: Vec<String> =
            transactions.transaction_states.iter().map(|state| state.transactional_id.to_string()).collect();
        let described = harness.call(
            who,
            0,
            describe_transactions_request::DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![transactional_id("tx")]),
        );
        let described: Vec<String> = described
            .transaction_states
            .iter()
            .flat_map(|state| {
                let topics = state.topics.iter().map(|topic| topic.topic.to_string());
                std::iter::once(format!("code {}", state.error_code)).chain(topics)
            })
            .collect();
        let actual = format!(
            "topics {topics:?}\ngroups {groups:?}\noffsets of app {offsets:?}\nconfigs {configs:?}\ntransactions {transactions:?}\ntx {described:?}"
        );
        assert_eq!(actual, expected.trim(), "{who} with {grants:?}");
    };
    check(
        &[],
        ALICE,
        r#"
topics []
groups []
offsets of app ["code 30"]
configs ["orders=29/0", "logs=29/0", "0=31/0"]
transactions []
tx ["code 53"]"#,
    );
    check(
        &[
            ORDERS_DESCRIBE,
            APP_DESCRIBE,
            "TOPIC:LITERAL:orders DESCRIBE_CONFIGS",
            "TRANSACTIONAL_ID:LITERAL:tx DESCRIBE",
        ],
        ALICE,
        r#"
topics ["orders"]
groups ["app"]
offsets of app ["code 0", "orders"]
configs ["orders=0/1", "logs=29/0", "0=31/0"]
transactions ["tx"]
tx ["code 0", "orders"]"#,
    );
    check(
        &[
            "TOPIC:LITERAL:* DESCRIBE",
            "CLUSTER:LITERAL:kafka-cluster DESCRIBE",
            "GROUP:LITERAL:app READ",
            "TRANSACTIONAL_ID:PREFIXED:t DESCRIBE",
        ],
        ALICE,
        r#"
topics ["logs", "orders"]
groups ["app", "other"]
offsets of app ["code 0", "logs", "orders"]
configs ["orders=29/0", "logs=29/0", "0=31/0"]
transactions ["tx", "ty"]
tx ["code 0", "logs", "orders"]"#,
    );
    check(
        &[],
        ADMIN,
        r#"
topics ["_tidewater_devices", "logs", "orders"]
groups ["app", "other"]
offsets of app ["code 0", "logs", "orders"]
configs ["orders=0/1", "logs=0/1", "0=0/1"]
transactions ["tx", "ty"]
tx ["code 0", "logs", "orders"]"#,
    );
}

#[test]
fn authorized_operations_are_reported_as_kafka_reports_them() {
    // Bit = operation code: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
    // CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
    let bits = |operations: &[i32]| operations.iter().fold(0, |bits, operation| bits | 1 << operation);
    let check = |grants: &[&str],
                 who: &str,
                 topic_operations: i32,
                 group_operations: i32,
                 cluster_operations: i32| {
        let harness = Harness::new(true);
        harness.grant(grants);
        let response = metadata(&harness, who, Some(&["orders"]));
        assert_eq!(
            response.topics[0].topic_authorized_operations, topic_operations,
            "topic, {who} with {grants:?}"
        );
        let request = describe_groups_request::DescribeGroupsRequest::default()
            .with_groups(vec![group("app")])
            .with_include_authorized_operations(true);
        let response = harness.call(who, 5, request);
        let expected = if group_operations == 0 { i32::MIN } else { group_operations };
        assert_eq!(response.groups[0].authorized_operations, expected, "group, {who} with {grants:?}");
        let request = describe_cluster_request::DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(true);
        let response = harness.call(who, 1, request);
        assert_eq!(
            response.cluster_authorized_operations, cluster_operations,
            "cluster, {who} with {grants:?}"
        );
    };
    check(&[ORDERS_READ, APP_DESCRIBE], ALICE, bits(&[3, 8]), bits(&[8]), 0);
    check(
        &["TOPIC:LITERAL:orders ALL", "GROUP:LITERAL:app READ", "CLUSTER:LITERAL:kafka-cluster DESCRIBE"],
        ALICE,
        bits(&[3, 4, 5, 6, 7, 8, 10, 11]),
        bits(&[3, 8]),
        bits(&[8]),
    );
    check(
        &[],
        ADMIN,
        bits(&[3, 4, 5, 6, 7, 8, 10, 11]),
        bits(&[3, 6, 8, 10, 11]),
        bits(&[5, 7, 8, 9, 10, 11, 12]),
    );
}

fn described_acls(h: &Harness, who: &str, version: i16, filter: Filter) -> Vec<String> {
    let response = h.call(who, version, describe_acls_request(filter));
    if response.error_code != NONE {
        let message = response.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
        return vec![format!("error {}: {message}", response.error_code)];
    }
    response
        .resources
        .iter()
        .map(|resource| {
            let acls: Vec<String> = resource
                .acls
                .iter()
                .map(|acl| {
                    format!(
                        "{}@{} {} {}",
                        acl.principal.as_str(),
                        acl.host.as_str(),
                        acl.operation,
                        acl.permission_type
                    )
                })
                .collect();
            format!(
                "{}:{}:{} {}",
                resource.resource_type,
                resource.pattern_type,
                resource.resource_name.as_str(),
                acls.join(", ")
            )
        })
        .collect()
}

#[test]
fn acls_are_created_described_and_deleted_with_kafkas_filters() {
    let harness = Harness::new(true);
    let created = harness.call(
        ADMIN,
        3,
        create_acls_request::CreateAclsRequest::default().with_creations(vec![
            acl_creation("TOPIC:LITERAL:orders User:alice@* READ ALLOW"),
            acl_creation("TOPIC:LITERAL:orders User:bob@10.0.0.1 WRITE DENY"),
            acl_creation("TOPIC:PREFIXED:ord User:alice@* DESCRIBE ALLOW"),
            acl_creation("TOPIC:LITERAL:* User:*@* DESCRIBE ALLOW"),
            acl_creation("GROUP:LITERAL:app User:alice@* READ ALLOW"),
            // Creating one that exists is no error.
            acl_creation("TOPIC:LITERAL:orders User:alice@* READ ALLOW"),
        ]),
    );
    assert!(created.results.iter().all(|result| result.error_code == NONE), "{created:?}");
    // Type 2 is TOPIC, 3 GROUP; pattern 3 LITERAL, 4 PREFIXED; operations READ 3, WRITE 4,
    // DESCRIBE 8; permissions DENY 2, ALLOW 3.
    let check = |version: i16, filter: Filter, expected: &[&str]| {
        assert_eq!(described_acls(&harness, ADMIN, version, filter), expected, "v{version} {filter:?}");
    };
    // In order of resource type, name and pattern type.
    check(
        3,
        EVERY_ACL,
        &[
            "2:3:* User:*@* 8 3",
            "2:4:ord User:alice@* 8 3",
            "2:3:orders User:alice@* 3 3, User:bob@10.0.0.1 4 2",
            "3:3:app User:alice@* 3 3",
        ],
    );
    check(
        3,
        (2, Some("orders"), 1, None, None, 1, 1),
        &["2:3:orders User:alice@* 3 3, User:bob@10.0.0.1 4 2"],
    );
    check(
        3,
        (2, Some("orders"), 2, None, None, 1, 1),
        &[
            "2:3:* User:*@* 8 3",
            "2:4:ord User:alice@* 8 3",
            "2:3:orders User:alice@* 3 3, User:bob@10.0.0.1 4 2",
        ],
    );
    check(3, (1, None, 4, None, None, 1, 1), &["2:4:ord User:alice@* 8 3"]);
    check(3, (1, None, 1, Some("User:bob"), Some("10.0.0.1"), 4, 2), &["2:3:orders User:bob@10.0.0.1 4 2"]);
    check(3, (1, None, 1, Some("User:*"), None, 1, 1), &["2:3:* User:*@* 8 3"]);
    check(3, (0, None, 1, None, None, 1, 1), &["error 42: unknown resource type 0"]);
    // Version 0 has no pattern type: its filters are LITERAL (a v0 client can send no other),
    // so prefixed ACLs stay out of them.
    check(
        0,
        (1, None, 3, None, None, 1, 1),
        &[
            "2:3:* User:*@* 8 3",
            "2:3:orders User:alice@* 3 3, User:bob@10.0.0.1 4 2",
            "3:3:app User:alice@* 3 3",
        ],
    );
    check(1, (1, None, 4, None, None, 1, 1), &["2:4:ord User:alice@* 8 3"]);

    // Each filter reports what it matched; a binding two filters match is deleted once.
    let deleted = harness.call(
        ADMIN,
        3,
        delete_acls_request::DeleteAclsRequest::default().with_filters(vec![
            delete_acls_filter((2, Some("orders"), 2, None, None, 1, 1)),
            delete_acls_filter((2, None, 1, Some("User:alice"), None, 1, 1)),
            delete_acls_filter((2, None, 9, None, None, 1, 1)),
            delete_acls_filter((3, Some("nothing"), 3, None, None, 1, 1)),
        ]),
    );
    let results: Vec<String> = deleted
        .filter_results
        .iter()
        .map(|result| {
            let matched: Vec<String> = result
                .matching_acls
                .iter()
                .map(|acl| {
                    format!(
                        "{}:{}:{} {} {}",
                        acl.resource_type,
                        acl.pattern_type,
                        acl.resource_name.as_str(),
                        acl.principal.as_str(),
                        acl.operation
                    )
                })
                .collect();
            let message = result.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            format!("{} {message} {matched:?}", result.error_code)
        })
        .collect();
    assert_eq!(
        results,
        [
            r#"0  ["2:3:* User:* 8", "2:4:ord User:alice 8", "2:3:orders User:alice 3", "2:3:orders User:bob 4"]"#,
            r#"0  ["2:4:ord User:alice 8", "2:3:orders User:alice 3"]"#,
            r#"42 unknown pattern type 9 []"#,
            r#"0  []"#,
        ]
    );
    check(3, EVERY_ACL, &["3:3:app User:alice@* 3 3"]);
}

#[test]
fn invalid_bindings_are_refused_one_by_one_with_the_reason() {
    let harness = Harness::new(true);
    let creation = |resource_type: i8,
                    name: &str,
                    pattern_type: i8,
                    principal: &str,
                    host: &str,
                    operation: i8,
                    permission: i8| {
        create_acls_request::AclCreation::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_resource_pattern_type(pattern_type)
            .with_principal(text(principal))
            .with_host(text(host))
            .with_operation(operation)
            .with_permission_type(permission)
    };
    let response = harness.call(
        ADMIN,
        3,
        create_acls_request::CreateAclsRequest::default().with_creations(vec![
            creation(2, "orders", 3, "User:alice", "*", 3, 3),
            creation(1, "orders", 3, "User:alice", "*", 3, 3),
            creation(2, "orders", 2, "User:alice", "*", 3, 3),
            creation(2, "orders", 3, "alice", "*", 3, 3),
            creation(2, "orders", 3, "User:alice", "*", 1, 3),
            creation(2, "", 3, "User:alice", "*", 3, 3),
            creation(4, "my-cluster", 3, "User:alice", "*", 3, 3),
            creation(2, "orders", 3, "User:alice", "somehost", 3, 3),
        ]),
    );
    let results: Vec<String> = response
        .results
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            "0 ",
            "42 resource type 1 is a filter value; an ACL needs a concrete resource type",
            "42 pattern type 2 is a filter value; an ACL needs a concrete pattern type",
            "42 \"alice\" is not a principal: expected Type:name, such as User:alice",
            "42 operation 1 is a filter value; an ACL needs a concrete operation",
            "42 the resource name must not be empty",
            "42 the only valid name for the CLUSTER resource is kafka-cluster, not \"my-cluster\"",
            "42 host \"somehost\" is neither * nor an IP address (ACLs match the client's address, not names)",
        ]
    );
    assert_eq!(described_acls(&harness, ADMIN, 3, EVERY_ACL), ["2:3:orders User:alice@* 3 3"]);
    // Version 0 creates LITERAL bindings whatever the (absent) field would say.
    let response = harness.call(
        ADMIN,
        0,
        create_acls_request::CreateAclsRequest::default().with_creations(vec![creation(
            3,
            "app",
            3,
            "User:alice",
            "*",
            3,
            3,
        )]),
    );
    assert_eq!(response.results[0].error_code, NONE);
    assert_eq!(
        described_acls(&harness, ADMIN, 3, (3, None, 1, None, None, 1, 1)),
        ["3:3:app User:alice@* 3 3"]
    );
}

#[test]
fn acl_changes_apply_from_the_next_request_and_survive_a_restart() {
    let harness = Harness::new(true);
    assert_eq!(fetch_orders(&harness, ALICE), [TOPIC_DENIED]);
    let grant = create_acls_request::CreateAclsRequest::default()
        .with_creations(vec![acl_creation("TOPIC:PREFIXED:ord User:alice@* READ ALLOW")]);
    assert_eq!(harness.call(ADMIN, 2, grant).results[0].error_code, NONE);
    assert_eq!(fetch_orders(&harness, ALICE), [NONE]);
    let deny = create_acls_request::CreateAclsRequest::default()
        .with_creations(vec![acl_creation("TOPIC:LITERAL:orders User:alice@* READ DENY")]);
    assert_eq!(harness.call(ADMIN, 1, deny).results[0].error_code, NONE);
    assert_eq!(fetch_orders(&harness, ALICE), [TOPIC_DENIED]);

    let harness = harness.reopen(true);
    assert_eq!(fetch_orders(&harness, ALICE), [TOPIC_DENIED], "the DENY survived");
    let remove_deny = delete_acls_request::DeleteAclsRequest::default()
        .with_filters(vec![delete_acls_filter((2, Some("orders"), 3, Some(ALICE), Some("*"), 3, 2))]);
    assert_eq!(harness.call(ADMIN, 3, remove_deny).filter_results[0].matching_acls.len(), 1);
    assert_eq!(fetch_orders(&harness, ALICE), [NONE], "the ALLOW survived");

    let harness = harness.reopen(true);
    assert_eq!(fetch_orders(&harness, ALICE), [NONE], "the deletion survived");
    assert_eq!(described_acls(&harness, ADMIN, 3, EVERY_ACL), ["2:4:ord User:alice@* 3 3"]);
    // ACLs kept while authorization is off are the ones in force once it is on.
    let harness = harness.reopen(false);
    assert_eq!(fetch_topic(&harness, ALICE, "logs"), [NONE], "off: everything is allowed");
    assert_eq!(described_acls(&harness, ALICE, 3, EVERY_ACL), ["2:4:ord User:alice@* 3 3"]);
    let harness = harness.reopen(true);
    assert_eq!(fetch_topic(&harness, ALICE, "logs"), [TOPIC_DENIED]);
}

/// An OffsetCommit of `orders` partition 0 for `group_id` at `version`; the partition's code.
fn commit_as(h: &Harness, group_id: &str, member: &str, epoch: i32, version: i16) -> i16 {
    let request = offset_commit_request::OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(text(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    h.call(ADMIN, version, request).topics[0].partitions[0].error_code
}

#[test]
fn a_group_is_classic_or_consumer_protocol_and_both_kinds_are_listed_and_described() {
    let h = Harness::new(false);
    let joined = h.call(ADMIN, 1, consumer_join("new", "m1"));
    assert_eq!((joined.error_code, joined.member_epoch), (NONE, 1));
    let orders_id = h.broker.topic("orders").expect("orders").id;
    let assigned: Vec<(uuid::Uuid, Vec<i32>)> = joined
        .assignment
        .expect("a joining member gets its assignment")
        .topic_partitions
        .into_iter()
        .map(|tp| (tp.topic_id, tp.partitions))
        .collect();
    assert_eq!(assigned, vec![(orders_id, vec![0])]);

    // The classic protocol may not join it, and its commits need v9 and the member epoch.
    let join = join_group_request::JoinGroupRequest::default()
        .with_group_id(group("new"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default().with_name(text("range"))
        ]);
    assert_eq!(h.call(ADMIN, 7, join.clone()).error_code, ResponseError::InconsistentGroupProtocol.code());
    assert_eq!(commit_as(&h, "new", "m1", 1, 9), NONE);
    assert_eq!(commit_as(&h, "new", "m1", 0, 9), ResponseError::StaleMemberEpoch.code());
    assert_eq!(commit_as(&h, "new", "m1", 1, 8), ResponseError::UnsupportedVersion.code());
    assert_eq!(commit_as(&h, "new", "other", 1, 9), UNKNOWN_MEMBER_ID);

    // A classic group with a member refuses the consumer protocol.
    let first = h.call(ADMIN, 7, join.clone().with_group_id(group("old")));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let second = h.call(ADMIN, 7, join.with_group_id(group("old")).with_member_id(first.member_id));
    assert_eq!(second.error_code, NONE);
    assert_eq!(h.call(ADMIN, 1, consumer_join("old", "m2")).error_code, GROUP_ID_NOT_FOUND);

    // ListGroups v5 tells the kinds apart, and filters by them.
    let listed = |types: &[&str]| {
        let request = list_groups_request::ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|name| text(name)).collect());
        let mut groups: Vec<(String, String, String)> = h
            .call(ADMIN, 5, request)
            .groups
            .into_iter()
            .map(|g| (g.group_id.to_string(), g.group_type.to_string(), g.group_state.to_string()))
            .collect();
        groups.sort();
        groups
    };
    let new = ("new".to_string(), "consumer".to_string(), "Stable".to_string());
    assert_eq!(listed(&["consumer"]), vec![new.clone()]);
    assert!(listed(&[]).contains(&new));
    assert!(listed(&["classic"]).iter().any(|(id, kind, _)| id == "old" && kind == "classic"));

    // ConsumerGroupDescribe shows the member and its epoch; a classic group is not found.
    let request = consumer_group_describe_request::ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![group("new"), group("old")]);
    let described = h.call(ADMIN, 1, request).groups;
    assert_eq!(described[0].error_code, NONE);
    assert_eq!((described[0].group_epoch, described[0].assignment_epoch), (1, 1));
    let member = &described[0].members[0];
    assert_eq!((member.member_id.as_str(), member.member_epoch, member.member_type), ("m1", 1, 1));
    assert_eq!(member.assignment.topic_partitions[0].topic_name.as_str(), "orders");
    assert_eq!(described[1].error_code, GROUP_ID_NOT_FOUND);

    // DescribeGroups answers in the classic form: the assignment in the consumer protocol's bytes.
    let request = describe_groups_request::DescribeGroupsRequest::default().with_groups(vec![group("new")]);
    let described = h.call(ADMIN, 5, request).groups.remove(0);
    assert_eq!((described.protocol_type.as_str(), described.protocol_data.as_str()), ("consumer", "uniform"));
    let mut bytes = described.members[0].member_assignment.clone();
    assert_eq!(bytes.split_to(2).as_ref(), &[0, 0], "version 0");
    let assignment =
        consumer_protocol_assignment::ConsumerProtocolAssignment::decode(&mut bytes, 0).expect("decodes");
    assert_eq!(assignment.assigned_partitions[0].topic.as_str(), "orders");
    assert_eq!(assignment.assigned_partitions[0].partitions, vec![0]);

    // Metadata by topic id (v12), as KIP-848 consumers look their assignment up.
    let request = metadata_request::MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(None).with_topic_id(orders_id),
    ]));
    let topics = h.call(ADMIN, 12, request).topics;
    assert_eq!(
        (topics[0].error_code, topics[0].name.as_ref().map(|name| name.as_str())),
        (NONE, Some("orders"))
    );
}

/// Regression guard for durable groups: a classic member (JoinGroup, SyncGroup) and a
/// consumer-protocol member are still in their groups after the broker reopens its data
/// directory, at their generation and member epoch, where before they were unknown.
#[test]
fn members_of_both_kinds_of_group_carry_on_after_the_broker_reopens() {
    let h = Harness::new(false);
    let join = join_group_request::JoinGroupRequest::default()
        .with_group_id(group("old"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(Bytes::from_static(b"subscription"))]);
    let first = h.call(ADMIN, 7, join.clone());
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let member = first.member_id.clone();
    let joined = h.call(ADMIN, 7, join.with_member_id(member.clone()));
    assert_eq!((joined.error_code, joined.generation_id), (NONE, 1));
    let sync = sync_group_request::SyncGroupRequest::default()
        .with_group_id(group("old"))
        .with_generation_id(1)
        .with_member_id(member.clone())
        .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
            .with_member_id(member.clone())
            .with_assignment(Bytes::from_static(b"assignment"))]);
    assert_eq!(h.call(ADMIN, 5, sync.clone()).error_code, NONE);
    assert_eq!(h.call(ADMIN, 1, consumer_join("new", "m1")).member_epoch, 1);

    let h = h.reopen(false);
    let heartbeat = heartbeat_request::HeartbeatRequest::default()
        .with_group_id(group("old"))
        .with_generation_id(1)
        .with_member_id(member.clone());
    assert_eq!(h.call(ADMIN, 4, heartbeat).error_code, NONE);
    assert_eq!(commit_as(&h, "old", &member, 1, 8), NONE);
    let synced = h.call(ADMIN, 5, sync.with_assignments(Vec::new()));
    assert_eq!((synced.error_code, synced.assignment.as_ref()), (NONE, b"assignment".as_slice()));
    assert_eq!(commit_as(&h, "new", "m1", 1, 9), NONE);
    let beat = consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group("new"))
        .with_member_id(text("m1"))
        .with_member_epoch(1);
    let answered = h.call(ADMIN, 1, beat);
    assert_eq!((answered.error_code, answered.member_epoch), (NONE, 1));
}
