//! CreateTopics, DeleteTopics and CreatePartitions.
//!
//! Authorization as in Kafka: creating a topic needs CREATE on the cluster or on the topic (and
//! its configs are reported only with DESCRIBE_CONFIGS on it); deleting one needs DELETE on it,
//! and, when it is named by id, DESCRIBE, or its name is not disclosed; adding partitions needs
//! ALTER. A refusal is TOPIC_AUTHORIZATION_FAILED for that topic alone.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use tidewater_kafka::kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use tidewater_kafka::kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use tidewater_kafka::kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use tidewater_kafka::kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use tidewater_kafka::kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use tidewater_kafka::kafka_protocol::messages::TopicName;
use tidewater_kafka::ResponseError;

use super::{blocking, str_bytes};
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::{ApiError, Broker};
use crate::topic_config::{self, TopicConfigs};

/// Kafka's config source code for a config set on the topic.
pub(super) const SOURCE_TOPIC: i8 = 1;
/// Kafka's config source code for a default.
pub(super) const SOURCE_DEFAULT: i8 = 5;

pub(super) async fn create_topics(
    broker: Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
    access: Access,
) -> CreateTopicsResponse {
    blocking(move || {
        let mut seen = std::collections::HashSet::new();
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let name = topic.name.0.to_string();
                let result = CreatableTopicResult::default().with_name(topic.name.clone());
                // Kafka refuses a request that names a topic twice, for both entries.
                let created = if !seen.insert(name.clone()) {
                    Err(ApiError::new(
                        ResponseError::InvalidRequest,
                        format!("topic {name} appears twice in the request"),
                    ))
                } else if !access.may_create_topic(&name) {
                    Err(access.refusal(Operation::Create, ResourceType::Topic, &name))
                } else {
                    create_one(&broker, topic, request.validate_only)
                };
                let configs_visible = access.allows(Operation::DescribeConfigs, ResourceType::Topic, &name);
                let result = if version >= 5 && !configs_visible {
                    result.with_topic_config_error_code(ResponseError::TopicAuthorizationFailed.code())
                } else {
                    result
                };
                match created {
                    Ok((topic, partition_count)) => {
                        let mut result = result
                            .with_topic_id(topic.id)
                            .with_num_partitions(partition_count)
                            .with_replication_factor(1);
                        if version >= 5 && configs_visible {
                            result = result.with_configs(Some(
                                topic_config::describe(&broker.config.log_defaults, &topic.configs)
                                    .into_iter()
                                    .map(|(name, value, is_default)| {
                                        CreatableTopicConfigs::default()
                                            .with_name(str_bytes(name))
                                            .with_value(Some(str_bytes(value)))
                                            .with_config_source(if is_default {
                                                SOURCE_DEFAULT
                                            } else {
                                                SOURCE_TOPIC
                                            })
                                    })
                                    .collect(),
                            ));
                        }
                        result
                    }
                    Err(error) => result
                        .with_error_code(error.code.code())
                        .with_error_message(Some(str_bytes(error.message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                }
            })
            .collect();
        CreateTopicsResponse::default().with_topics(topics)
    })
    .await
}

/// Creates (or with `validate_only`, checks) one topic; returns it and its partition count.
fn create_one(
    broker: &Broker,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<(Arc<crate::broker::Topic>, i32), ApiError> {
    if !matches!(topic.replication_factor, -1 | 1) {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is impossible on a single broker; use 1 (or -1)",
                topic.replication_factor
            ),
        ));
    }
    let node = broker.config.node_id;
    if topic.assignments.iter().any(|assignment| assignment.broker_ids.iter().any(|id| id.0 != node)) {
        return Err(ApiError::new(
            ResponseError::InvalidReplicaAssignment,
            format!("replica assignments may only name broker {node}"),
        ));
    }
    let partitions =
        if topic.assignments.is_empty() { topic.num_partitions } else { topic.assignments.len() as i32 };
    let mut configs = TopicConfigs::new();
    for config in &topic.configs {
        let Some(value) = &config.value else { continue };
        topic_config::validate(&config.name, value)
            .map_err(|reason| ApiError::new(ResponseError::InvalidConfig, reason))?;
        configs.insert(config.name.to_string(), value.to_string());
    }
    let partitions = if partitions == -1 { broker.config.default_partitions } else { partitions };
    let created = broker.create_topic(&topic.name.0, partitions, configs, validate_only)?;
    Ok((created, partitions))
}

pub(super) async fn delete_topics(
    broker: Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
    access: Access,
) -> DeleteTopicsResponse {
    blocking(move || {
        // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
        let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
            request.topics.iter().map(|topic| (topic.name.clone(), topic.topic_id)).collect()
        } else {
            request.topic_names.iter().map(|name| (Some(name.clone()), uuid::Uuid::nil())).collect()
        };
        let responses = targets
            .into_iter()
            .map(|(name, topic_id)| {
                let name = name.or_else(|| {
                    broker
                        .topics()
                        .iter()
                        .find(|topic| topic.id == topic_id)
                        .map(|topic| TopicName(str_bytes(topic.name.clone())))
                });
                let result = DeletableTopicResult::default().with_name(name.clone()).with_topic_id(topic_id);
                let Some(name) = name else {
                    return result
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_error_message(Some(str_bytes(format!("no topic has id {topic_id}"))));
                };
                // A topic named by id keeps its name from whoever may not describe it.
                let allowed = if topic_id.is_nil() {
                    Ok(())
                } else {
                    access.check(Operation::Describe, ResourceType::Topic, &name)
                };
                if let Err(error) = allowed {
                    return result.with_name(None).with_error_code(error.code.code()).with_error_message(
                        Some(str_bytes(format!("not allowed to describe topic id {topic_id}"))),
                    );
                }
                let deleted = access
                    .check(Operation::Delete, ResourceType::Topic, &name)
                    .and_then(|()| broker.delete_topic(&name.0));
                match deleted {
                    Ok(deleted_id) => result.with_topic_id(deleted_id),
                    Err(error) => result
                        .with_error_code(error.code.code())
                        .with_error_message(Some(str_bytes(error.message))),
                }
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    })
    .await
}

pub(super) async fn create_partitions(
    broker: Arc<Broker>,
    request: CreatePartitionsRequest,
    access: Access,
) -> CreatePartitionsResponse {
    blocking(move || {
        let results = request
            .topics
            .iter()
            .map(|topic| {
                let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
                let assigned_elsewhere =
                    topic.assignments.iter().flatten().any(|assignment| {
                        assignment.broker_ids.iter().any(|id| id.0 != broker.config.node_id)
                    });
                let allowed = access.check(Operation::Alter, ResourceType::Topic, &topic.name);
                let outcome = if let Err(refusal) = allowed {
                    Err(refusal)
                } else if assigned_elsewhere {
                    Err(ApiError::new(
                        ResponseError::InvalidReplicaAssignment,
                        "assignments may only name this broker",
                    ))
                } else {
                    broker.create_partitions(&topic.name.0, topic.count, request.validate_only)
                };
                match outcome {
                    Ok(()) => result,
                    Err(error) => result
                        .with_error_code(error.code.code())
                        .with_error_message(Some(str_bytes(error.message))),
                }
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    })
    .await
}
