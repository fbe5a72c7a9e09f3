//! Metadata and DescribeCluster: which topics and partitions exist and which broker leads them
//! (always this one: Tidewater is a single node, leader epoch 0, replicas and ISR just itself),
//! at the advertised address of the listener the client came in on.

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

use super::{blocking, str_bytes};
use crate::broker::{Broker, Topic};

pub(super) async fn metadata(
    broker: Arc<Broker>,
    request: MetadataRequest,
    version: i16,
    listener: &ListenerInfo,
) -> MetadataResponse {
    // Before v4 the field did not exist and auto-creation was always requested.
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let requested: Option<Vec<Result<String, ResponseError>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| match topic.name {
                Some(name) => Ok(name.0.to_string()),
                // Lookups by topic id alone (v10+) are not supported yet.
                None => Err(ResponseError::UnknownTopicId),
            })
            .collect()
    });
    let topics = {
        let broker = broker.clone();
        blocking(move || match requested {
            None => broker.topics().iter().map(|topic| topic_metadata(&broker, topic)).collect(),
            Some(names) => names
                .into_iter()
                .map(|name| match name {
                    Ok(name) => match broker.topic_or_create(&name, allow_auto_create) {
                        Ok(topic) => topic_metadata(&broker, &topic),
                        Err(error) => MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(name))))
                            .with_error_code(error.code.code()),
                    },
                    Err(code) => MetadataResponseTopic::default().with_error_code(code.code()),
                })
                .collect(),
        })
        .await
    };
    let config = &broker.config;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(config.node_id))
            .with_host(str_bytes(listener.advertised_host.clone()))
            .with_port(i32::from(listener.advertised_port))])
        .with_cluster_id(Some(str_bytes(broker.cluster_id())))
        .with_controller_id(BrokerId(config.node_id))
        .with_topics(topics)
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
    _request: DescribeClusterRequest,
    listener: &ListenerInfo,
) -> DescribeClusterResponse {
    let config = &broker.config;
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(BrokerId(config.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(config.node_id))
            .with_host(str_bytes(listener.advertised_host.clone()))
            .with_port(i32::from(listener.advertised_port))])
}
