//! Topic requests: CreateTopics, DeleteTopics, CreatePartitions, IncrementalAlterConfigs, and
//! "ensure" (create unless it exists), the one way Tidewater's components create the topics
//! they need. Each waits until the broker answered, and reports the broker's own message.

use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaErrorCode;
use rdsys::rd_kafka_admin_op_t as Op;

use super::ffi::{
    c_string, check_resp_err, named, owned_error, request, resource_outcome, result_array, single,
    topic_outcomes, ErrBuf, Operation, Owned,
};
use super::AdminError;
use crate::config::ClusterConfig;
use crate::logging::QuietContext;

/// A topic to create. `-1` for `partitions` or `replication_factor` means the broker's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic of `partitions` partitions with the broker's default replication factor and
    /// `configs` (such as `retention.ms=-1`).
    pub fn new(name: impl Into<String>, partitions: i32, configs: &[(&str, &str)]) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: configs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        }
    }
}

/// One change of IncrementalAlterConfigs.
#[derive(Debug)]
pub enum ConfigChange<'a> {
    Set {
        name: &'a str,
        value: &'a str,
    },
    /// Removes the override, so the config reverts to its default.
    Delete {
        name: &'a str,
    },
}

const CREATE_TOPICS: Operation<rdsys::rd_kafka_NewTopic_t> = Operation::new(
    "CreateTopics",
    Op::RD_KAFKA_ADMIN_OP_CREATETOPICS,
    rdsys::rd_kafka_CreateTopics,
    rdsys::rd_kafka_event_CreateTopics_result,
);
const DELETE_TOPICS: Operation<rdsys::rd_kafka_DeleteTopic_t> = Operation::new(
    "DeleteTopics",
    Op::RD_KAFKA_ADMIN_OP_DELETETOPICS,
    rdsys::rd_kafka_DeleteTopics,
    rdsys::rd_kafka_event_DeleteTopics_result,
);
const CREATE_PARTITIONS: Operation<rdsys::rd_kafka_NewPartitions_t> = Operation::new(
    "CreatePartitions",
    Op::RD_KAFKA_ADMIN_OP_CREATEPARTITIONS,
    rdsys::rd_kafka_CreatePartitions,
    rdsys::rd_kafka_event_CreatePartitions_result,
);
const INCREMENTAL_ALTER_CONFIGS: Operation<rdsys::rd_kafka_ConfigResource_t> = Operation::new(
    "IncrementalAlterConfigs",
    Op::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
    rdsys::rd_kafka_IncrementalAlterConfigs,
    rdsys::rd_kafka_event_IncrementalAlterConfigs_result,
);

/// Creates one topic and waits until the broker has created it (or refused).
pub fn create_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &NewTopic,
    timeout: Duration,
) -> Result<(), AdminError> {
    let name = c_string(&topic.name)?;
    let mut errstr = ErrBuf::new();
    // SAFETY: `name` and `errstr` outlive the call; librdkafka copies the name.
    let new_topic = unsafe {
        Owned::made(
            rdsys::rd_kafka_NewTopic_new(
                name.as_ptr(),
                topic.partitions,
                topic.replication_factor,
                errstr.ptr(),
                errstr.len(),
            ),
            rdsys::rd_kafka_NewTopic_destroy,
            || errstr.text(),
        )
    }?;
    for (config_name, value) in &topic.configs {
        let (config_name_c, value_c) = (c_string(config_name)?, c_string(value)?);
        // SAFETY: the topic is live and owned by us; librdkafka copies both strings.
        let error = unsafe {
            rdsys::rd_kafka_NewTopic_set_config(new_topic.as_ptr(), config_name_c.as_ptr(), value_c.as_ptr())
        };
        check_resp_err(error, &format!("config {config_name}={value}"))?;
    }
    // SAFETY (read): the result is live during the call; its entries are topic results.
    request(client, &CREATE_TOPICS, timeout, &[new_topic], |result| unsafe {
        single(topic_outcomes(result_array(result, rdsys::rd_kafka_CreateTopics_result_topics)), &topic.name)
    })
}

/// Creates `topic` unless it exists: a topic that already exists is success, whatever its
/// partitions and configs. What components call for the topics they need.
pub fn ensure_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &NewTopic,
    timeout: Duration,
) -> Result<(), AdminError> {
    match create_topic(client, topic, timeout) {
        Err(error) if error.code().is_some_and(|code| code.is(RDKafkaErrorCode::TopicAlreadyExists)) => {
            Ok(())
        }
        outcome => outcome,
    }
}

/// [`ensure_topic`] through a client of its own (with `client_id`), off the async threads: the
/// request blocks for up to `timeout`.
pub async fn ensure_topic_on(
    cluster: &ClusterConfig,
    client_id: &str,
    topic: NewTopic,
    timeout: Duration,
) -> Result<(), AdminError> {
    let config = cluster.client_config(&[("client.id", client_id)]);
    let ensured = tokio::task::spawn_blocking(move || {
        let admin: AdminClient<QuietContext> = config
            .create_with_context(QuietContext::default())
            .map_err(|error| AdminError::Client { error })?;
        ensure_topic(admin.inner(), &topic, timeout)
    });
    ensured.await.map_err(|error| AdminError::Unexpected(format!("the admin task failed: {error}")))?
}

/// Deletes one topic and waits for the broker's answer.
pub fn delete_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<(), AdminError> {
    // SAFETY: `rd_kafka_DeleteTopic_destroy` frees what `rd_kafka_DeleteTopic_new` makes.
    let delete =
        unsafe { named(topic, rdsys::rd_kafka_DeleteTopic_new, rdsys::rd_kafka_DeleteTopic_destroy) }?;
    // SAFETY (read): the result is live during the call; its entries are topic results.
    request(client, &DELETE_TOPICS, timeout, &[delete], |result| unsafe {
        single(topic_outcomes(result_array(result, rdsys::rd_kafka_DeleteTopics_result_topics)), topic)
    })
}

/// Grows `topic` to `total` partitions.
pub fn create_partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    total: usize,
    timeout: Duration,
) -> Result<(), AdminError> {
    let name = c_string(topic)?;
    let mut errstr = ErrBuf::new();
    // SAFETY: `name` and `errstr` outlive the call; librdkafka copies the name.
    let new_partitions = unsafe {
        Owned::made(
            rdsys::rd_kafka_NewPartitions_new(name.as_ptr(), total, errstr.ptr(), errstr.len()),
            rdsys::rd_kafka_NewPartitions_destroy,
            || errstr.text(),
        )
    }?;
    // SAFETY (read): the result is live during the call; its entries are topic results.
    request(client, &CREATE_PARTITIONS, timeout, &[new_partitions], |result| unsafe {
        single(topic_outcomes(result_array(result, rdsys::rd_kafka_CreatePartitions_result_topics)), topic)
    })
}

/// Applies `changes` to `topic`'s configs in one IncrementalAlterConfigs request; configs not
/// named keep their values. The broker applies all of them or none.
pub fn alter_topic_configs<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    changes: &[ConfigChange<'_>],
    timeout: Duration,
) -> Result<(), AdminError> {
    use rdsys::rd_kafka_AlterConfigOpType_t::{
        RD_KAFKA_ALTER_CONFIG_OP_TYPE_DELETE as DELETE, RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET as SET,
    };
    let name = c_string(topic)?;
    // SAFETY: `name` outlives the call; librdkafka copies it.
    let resource = unsafe {
        Owned::made(
            rdsys::rd_kafka_ConfigResource_new(
                rdsys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                name.as_ptr(),
            ),
            rdsys::rd_kafka_ConfigResource_destroy,
            || "librdkafka refused the config resource".to_string(),
        )
    }?;
    for change in changes {
        let (config_name, op, value) = match change {
            ConfigChange::Set { name, value } => (*name, SET, Some(c_string(value)?)),
            ConfigChange::Delete { name } => (*name, DELETE, None),
        };
        let config_name_c = c_string(config_name)?;
        // SAFETY: the resource is live and ours; librdkafka copies the strings; a null value is
        // what it expects for DELETE; the returned error (if any) is ours to destroy.
        unsafe {
            let error = rdsys::rd_kafka_ConfigResource_add_incremental_config(
                resource.as_ptr(),
                config_name_c.as_ptr(),
                op,
                value.as_ref().map_or(std::ptr::null(), |value| value.as_ptr()),
            );
            owned_error(error, &format!("config {config_name}"))?;
        }
    }
    // SAFETY (read): the result is live during the call; its entries are config resources.
    request(client, &INCREMENTAL_ALTER_CONFIGS, timeout, &[resource], |result| unsafe {
        let resources = result_array(result, rdsys::rd_kafka_IncrementalAlterConfigs_result_resources);
        single(resources.iter().map(|&resource| resource_outcome(resource)).collect(), topic)
    })
}
