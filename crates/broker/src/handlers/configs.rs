//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics; broker configs are
//! described (read-only) but set on the command line.
//!
//! Authorization as in Kafka: DESCRIBE_CONFIGS (to describe) or ALTER_CONFIGS (to alter) on the
//! topic, or on the cluster for the broker's configs; a resource that may not be described or
//! altered answers TOPIC_ or CLUSTER_AUTHORIZATION_FAILED alone, with no configs.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::alter_configs_request::AlterConfigsRequest;
use tidewater_kafka::kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use tidewater_kafka::kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use tidewater_kafka::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use tidewater_kafka::kafka_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use tidewater_kafka::kafka_protocol::messages::incremental_alter_configs_response as incremental;
use tidewater_kafka::kafka_protocol::messages::incremental_alter_configs_response::IncrementalAlterConfigsResponse;
use tidewater_kafka::ResponseError;

use super::admin::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::{blocking, str_bytes};
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::{ApiError, Broker};
use crate::topic_config::{self, TopicConfigs, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config source code for a broker setting from its startup configuration.
const SOURCE_STATIC_BROKER: i8 = 4;
/// Kafka's ConfigType codes (DescribeConfigs v3+).
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;
const TYPE_BOOLEAN: i8 = 1;
/// IncrementalAlterConfigs operations.
const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
const OPERATION_APPEND: i8 = 2;
const OPERATION_SUBTRACT: i8 = 3;

pub(super) fn describe(
    broker: &Broker,
    request: DescribeConfigsRequest,
    version: i16,
    access: &Access,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|key| key.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let allowed = authorize(
                access,
                Operation::DescribeConfigs,
                resource.resource_type,
                &resource.resource_name,
            );
            if let Err(refusal) = allowed {
                return result
                    .with_error_code(refusal.code.code())
                    .with_error_message(Some(str_bytes(refusal.message)));
            }
            let entries: Vec<(String, String, i8, i8, bool)> = match resource.resource_type {
                RESOURCE_TOPIC => match broker.topic(&resource.resource_name) {
                    Some(topic) => topic_config::describe(&broker.config.log_defaults, &topic.configs)
                        .into_iter()
                        .map(|(name, value, is_default)| {
                            let source = if is_default { SOURCE_DEFAULT } else { SOURCE_TOPIC };
                            (name.to_string(), value, source, config_type(name), false)
                        })
                        .collect(),
                    None => {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "topic {} does not exist",
                                resource.resource_name.as_str()
                            ))))
                    }
                },
                RESOURCE_BROKER
                    if resource.resource_name.is_empty()
                        || resource.resource_name.as_str() == broker.config.node_id.to_string() =>
                {
                    broker_configs(broker)
                }
                _ => {
                    return result.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(
                        Some(str_bytes("only topic and broker configs can be described")),
                    )
                }
            };
            let configs = entries
                .into_iter()
                .filter(|(name, ..)| wanted(name))
                .map(|(name, value, source, kind, read_only)| {
                    let documentation = TOPIC_CONFIGS
                        .iter()
                        .find(|(known, _)| *known == name)
                        .map(|(_, doc)| str_bytes(*doc));
                    let mut entry = DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(value)))
                        .with_read_only(read_only)
                        .with_config_source(source);
                    if version >= 3 {
                        entry = entry.with_config_type(kind);
                        if request.include_documentation {
                            entry = entry.with_documentation(documentation);
                        }
                    }
                    entry
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" => TYPE_LIST,
        "segment.bytes" | "max.message.bytes" | "index.interval.bytes" => TYPE_INT,
        "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
        _ => TYPE_LONG,
    }
}

/// The broker-wide settings, read-only over the protocol.
fn broker_configs(broker: &Broker) -> Vec<(String, String, i8, i8, bool)> {
    let config = &broker.config;
    let defaults = &config.log_defaults;
    [
        ("auto.create.topics.enable", config.auto_create_topics.to_string(), TYPE_BOOLEAN),
        ("num.partitions", config.default_partitions.to_string(), TYPE_INT),
        ("log.retention.ms", defaults.retention_ms.to_string(), TYPE_LONG),
        ("log.retention.bytes", defaults.retention_bytes.to_string(), TYPE_LONG),
        ("log.segment.bytes", defaults.segment_bytes.to_string(), TYPE_INT),
        ("log.cleanup.policy", defaults.cleanup_policy.to_string(), TYPE_LIST),
        ("message.max.bytes", defaults.max_batch_bytes.to_string(), TYPE_INT),
        ("tidewater.fsync", defaults.fsync.to_string(), TYPE_LIST),
    ]
    .into_iter()
    .map(|(name, value, kind)| (name.to_string(), value, SOURCE_STATIC_BROKER, kind, true))
    .collect()
}

/// Whether the request may do `operation` on a config resource's configs: the topic's, or the
/// cluster's for the broker (other types are refused later, as unsupported).
fn authorize(
    access: &Access,
    operation: Operation,
    resource_type: i8,
    resource_name: &str,
) -> Result<(), ApiError> {
    match resource_type {
        RESOURCE_TOPIC => access.check(operation, ResourceType::Topic, resource_name),
        RESOURCE_BROKER => access.check_cluster(operation),
        _ => Ok(()),
    }
}

/// AlterConfigs replaces a topic's whole set of overrides.
pub(super) async fn alter(
    broker: Arc<Broker>,
    request: AlterConfigsRequest,
    access: Access,
) -> AlterConfigsResponse {
    blocking(move || {
        let responses = request
            .resources
            .iter()
            .map(|resource| {
                let allowed = authorize(
                    &access,
                    Operation::AlterConfigs,
                    resource.resource_type,
                    &resource.resource_name,
                );
                let outcome = allowed
                    .and_then(|()| topic_name(resource.resource_type, &resource.resource_name))
                    .and_then(|name| {
                        let mut configs = TopicConfigs::new();
                        for config in &resource.configs {
                            if let Some(value) = &config.value {
                                configs.insert(config.name.to_string(), value.to_string());
                            }
                        }
                        check_all(&configs)?;
                        broker.set_topic_configs(name, configs, request.validate_only)
                    });
                let response = AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                match outcome {
                    Ok(()) => response,
                    Err(error) => response
                        .with_error_code(error.code.code())
                        .with_error_message(Some(str_bytes(error.message))),
                }
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    })
    .await
}

/// IncrementalAlterConfigs sets or deletes single overrides and leaves the rest alone.
pub(super) async fn incremental_alter(
    broker: Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
    access: Access,
) -> IncrementalAlterConfigsResponse {
    blocking(move || {
        let responses = request
            .resources
            .iter()
            .map(|resource| {
                let allowed =
                    authorize(&access, Operation::AlterConfigs, resource.resource_type, &resource.resource_name);
                let outcome = allowed.and_then(|()| topic_name(resource.resource_type, &resource.resource_name)).and_then(|name| {
                    let topic = broker.topic(name).ok_or_else(|| {
                        ApiError::new(ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist"))
                    })?;
                    let mut configs = topic.configs.clone();
                    for config in &resource.configs {
                        match (config.config_operation, &config.value) {
                            (OPERATION_SET, Some(value)) => {
                                configs.insert(config.name.to_string(), value.to_string());
                            }
                            (OPERATION_DELETE, _) => {
                                configs.remove(config.name.as_str());
                            }
                            (operation @ (OPERATION_APPEND | OPERATION_SUBTRACT), Some(value))
                                if config_type(config.name.as_str()) == TYPE_LIST =>
                            {
                                let current = topic_config::describe(&broker.config.log_defaults, &configs)
                                    .into_iter()
                                    .find(|(name, ..)| *name == config.name.as_str())
                                    .map(|(_, value, _)| value)
                                    .unwrap_or_default();
                                let changed = edit_list(&current, value.as_str(), operation == OPERATION_APPEND);
                                configs.insert(config.name.to_string(), changed);
                            }
                            (operation, _) => {
                                return Err(ApiError::new(
                                    ResponseError::InvalidRequest,
                                    format!("operation {operation} on {} is not supported; use SET (0) with a value, DELETE (1), or APPEND (2) and SUBTRACT (3) with a value on a list config", config.name.as_str()),
                                ))
                            }
                        }
                    }
                    check_all(&configs)?;
                    broker.set_topic_configs(name, configs, request.validate_only)
                });
                let response = incremental::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                match outcome {
                    Ok(()) => response,
                    Err(error) => response.with_error_code(error.code.code()).with_error_message(Some(str_bytes(error.message))),
                }
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    })
    .await
}

/// IncrementalAlterConfigs' APPEND and SUBTRACT on a list config: `items` (comma-separated) added
/// to `current` where missing, or removed from it.
fn edit_list(current: &str, items: &str, append: bool) -> String {
    let mut list: Vec<&str> = current.split(',').map(str::trim).filter(|item| !item.is_empty()).collect();
    for item in items.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        if append && !list.contains(&item) {
            list.push(item);
        } else if !append {
            list.retain(|kept| *kept != item);
        }
    }
    list.join(",")
}

fn topic_name(resource_type: i8, resource_name: &str) -> Result<&str, ApiError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(resource_name),
        RESOURCE_BROKER => Err(ApiError::new(
            ResponseError::InvalidRequest,
            "broker configs are set on the tidewater command line, not over the protocol",
        )),
        other => {
            Err(ApiError::new(ResponseError::InvalidRequest, format!("unsupported resource type {other}")))
        }
    }
}

fn check_all(configs: &TopicConfigs) -> Result<(), ApiError> {
    for (name, value) in configs {
        topic_config::validate(name, value)
            .map_err(|reason| ApiError::new(ResponseError::InvalidConfig, reason))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_subtract_edit_a_list_config() {
        let check = |current: &str, items: &str, append: bool, expected: &str| {
            assert_eq!(edit_list(current, items, append), expected, "{current:?} {items:?} append={append}");
        };
        check("delete", "compact", true, "delete,compact");
        check("delete", "delete", true, "delete");
        check("compact,delete", "delete", false, "compact");
        check("compact", "delete", false, "compact");
        check("", "compact, delete", true, "compact,delete");
    }
}
