//! Metadata and DescribeCluster: which topics and partitions exist and which broker leads them
//! (always this one: Tidewater is a single node, leader epoch 0, replicas and ISR just itself),
//! at the advertised address of the listener the client came in on.
//!
//! Authorization as in Kafka: a listing of every topic leaves out those the principal may not
//! DESCRIBE; a topic asked for by name that may not be described answers
//! TOPIC_AUTHORIZATION_FAILED whether it exists or not (so its existence is not disclosed), and
//! one that would be auto-created needs CREATE on the cluster or the topic. DescribeCluster
//! needs nothing; DESCRIBE on the cluster only shows in its authorized operations.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use tidewater_kafka::kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use tidewater_kafka::kafka_protocol::messages::metadata_request::MetadataRequest;
use tidewater_kafka::kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use tidewater_kafka::kafka_protocol::messages::{BrokerId, TopicName};
use tidewater_kafka::{ListenerInfo, ResponseError};
use uuid::Uuid;

use super::{blocking, str_bytes};
use crate::acl::{Access, Operation, ResourceType, CLUSTER_NAME};
use crate::broker::{ApiError, Broker, Topic};

pub(super) async fn metadata(
    broker: Arc<Broker>,
    request: MetadataRequest,
    version: i16,
    listener: &ListenerInfo,
    access: Access,
) -> MetadataResponse {
    // Before v4 the field did not exist and auto-creation was always requested.
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let topic_operations = version >= 8 && request.include_topic_authorized_operations;
    let cluster_operations = (8..=10).contains(&version) && request.include_cluster_authorized_operations;
    let requested: Option<Vec<Result<String, (Uuid, ResponseError)>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| match topic.name {
                Some(name) => Ok(name.0.to_string()),
                // By topic id alone (v10+): KIP-848 consumers learn their assignment by id and
                // look the names up so. An id that names no topic is UNKNOWN_TOPIC_ID.
                None => broker
                    .topics()
                    .iter()
                    .find(|known| known.id == topic.topic_id && !topic.topic_id.is_nil())
                    .map(|known| known.name.clone())
                    .ok_or((topic.topic_id, ResponseError::UnknownTopicId))
                    // Refused by id, the name is not disclosed.
                    .and_then(|name| match access.allows(Operation::Describe, ResourceType::Topic, &name) {
                        true => Ok(name),
                        false => Err((topic.topic_id, ResponseError::TopicAuthorizationFailed)),
                    }),
            })
            .collect()
    });
    let topics = {
        let broker = broker.clone();
        let access = access.clone();
        blocking(move || {
            let described = |topic: &Topic| {
                let metadata = topic_metadata(&broker, topic);
                if topic_operations {
                    let operations = access.authorized_operations(ResourceType::Topic, &topic.name);
                    metadata.with_topic_authorized_operations(operations)
                } else {
                    metadata
                }
            };
            match requested {
                None => broker
                    .topics()
                    .iter()
                    .filter(|topic| access.allows(Operation::Describe, ResourceType::Topic, &topic.name))
                    .map(|topic| described(topic))
                    .collect(),
                Some(names) => names
                    .into_iter()
                    .map(|name| match name {
                        Ok(name) => match named_topic(&broker, &access, &name, allow_auto_create) {
                            Ok(topic) => described(&topic),
                            Err(error) => MetadataResponseTopic::default()
                                .with_name(Some(TopicName(str_bytes(name))))
                                .with_error_code(error.code.code()),
                        },
                        Err((topic_id, code)) => MetadataResponseTopic::default()
                            .with_topic_id(topic_id)
                            .with_error_code(code.code()),
                    })
                    .collect(),
            }
        })
        .await
    };
    let config = &broker.config;
    let response = if cluster_operations {
        MetadataResponse::default().with_cluster_authorized_operations(cluster_authorized_operations(&access))
    } else {
        MetadataResponse::default()
    };
    response
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(config.node_id))
            .with_host(str_bytes(listener.advertised_host.clone()))
            .with_port(i32::from(listener.advertised_port))])
        .with_cluster_id(Some(str_bytes(broker.cluster_id())))
        .with_controller_id(BrokerId(config.node_id))
        .with_topics(topics)
}

/// A topic Metadata names: refused unless it may be described, auto-created (where asked and
/// enabled) only for a principal that may create it.
fn named_topic(
    broker: &Broker,
    access: &Access,
    name: &str,
    allow_auto_create: bool,
) -> Result<Arc<Topic>, ApiError> {
    access.check(Operation::Describe, ResourceType::Topic, name)?;
    if let Some(topic) = broker.topic(name) {
        return Ok(topic);
    }
    if allow_auto_create && broker.config.auto_create_topics && !access.may_create_topic(name) {
        return Err(access.refusal(Operation::Create, ResourceType::Topic, name));
    }
    broker.topic_or_create(name, allow_auto_create)
}

/// The cluster's authorized operations, for a principal that may describe the cluster (0 for
/// one that may not), as Kafka reports them.
fn cluster_authorized_operations(access: &Access) -> i32 {
    if access.allows_cluster(Operation::Describe) {
        access.authorized_operations(ResourceType::Cluster, CLUSTER_NAME)
    } else {
        0
    }
}

fn topic_metadata(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let partitions = (0..topic.partitions.len() as i32)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}

pub(super) fn describe_cluster(
    broker: &Broker,
    request: DescribeClusterRequest,
    listener: &ListenerInfo,
    access: &Access,
) -> DescribeClusterResponse {
    let config = &broker.config;
    let response = if request.include_cluster_authorized_operations {
        DescribeClusterResponse::default()
            .with_cluster_authorized_operations(cluster_authorized_operations(access))
    } else {
        DescribeClusterResponse::default()
    };
    response
        .with_endpoint_type(1)
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(BrokerId(config.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(config.node_id))
            .with_host(str_bytes(listener.advertised_host.clone()))
            .with_port(i32::from(listener.advertised_port))])
}
