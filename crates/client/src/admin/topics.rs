//! Topic requests: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! IncrementalAlterConfigs, DeleteRecords, and "ensure" (create unless it exists), the one way Tidewater's
//! components create the topics they need. Each waits until the broker answered, and reports the
//! broker's own message.
//!
//! Tables (Tidewater's own state: devices, triggers, checkpoints and so on) are compacted topics,
//! and [`ensure_table_topic`] also upgrades one created before they were: a topic whose
//! `cleanup.policy` lacks `compact` is switched to the table's policy, and the table's other
//! configs are set where the topic does not override them (an operator's own setting stays). A
//! cluster that refuses the change (no ALTER_CONFIGS permission, no IncrementalAlterConfigs) leaves
//! the topic as it is, with a warning: the table still works, it only keeps every record.

use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaErrorCode;
use rdsys::rd_kafka_admin_op_t as Op;

use super::ffi::{
    c_string, c_text, check_resp_err, named, owned_error, raw_slice, request, resource_outcome, result_array,
    single, topic_outcomes, ErrBuf, Operation, Owned,
};
use super::{AdminError, ErrorCode};
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

/// One config of a topic as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigEntry {
    pub name: String,
    /// `None` for a sensitive config, or one without a value.
    pub value: Option<String>,
    /// The cluster's default, not set on the topic.
    pub is_default: bool,
}

/// A config [`ensure_table_topic`] changes on an existing topic: from what to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUpgrade {
    pub name: String,
    pub from: Option<String>,
    pub to: String,
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
const DESCRIBE_CONFIGS: Operation<rdsys::rd_kafka_ConfigResource_t> = Operation::new(
    "DescribeConfigs",
    Op::RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS,
    rdsys::rd_kafka_DescribeConfigs,
    rdsys::rd_kafka_event_DescribeConfigs_result,
);
const DELETE_RECORDS: Operation<rdsys::rd_kafka_DeleteRecords_t> = Operation::new(
    "DeleteRecords",
    Op::RD_KAFKA_ADMIN_OP_DELETERECORDS,
    rdsys::rd_kafka_DeleteRecords,
    rdsys::rd_kafka_event_DeleteRecords_result,
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

/// Creates the table topic `topic` unless it exists, and upgrades an existing one to the
/// table's configs (see the module docs and [`table_upgrades`]). `topic.configs` must name the
/// table's `cleanup.policy`. Only creating can fail: an upgrade the cluster refuses is logged as a
/// warning and the topic is used as it is. Returns the configs it changed.
pub fn ensure_table_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &NewTopic,
    timeout: Duration,
) -> Result<Vec<ConfigUpgrade>, AdminError> {
    match create_topic(client, topic, timeout) {
        Ok(()) => Ok(Vec::new()),
        Err(error) if error.code().is_some_and(|code| code.is(RDKafkaErrorCode::TopicAlreadyExists)) => {
            Ok(upgrade_table_topic(client, topic, timeout))
        }
        Err(error) => Err(error),
    }
}

/// Upgrades the existing table topic `topic` to the table's configs (see the module docs and
/// [`table_upgrades`]); a topic that does not exist is left for whoever creates it. Best effort:
/// a refusal is logged as a warning and the topic is used as it is. Returns the configs it
/// changed. What a component calls at start for a table it reads but does not create (a runner
/// following a registry `trigger create` or `query create` made, perhaps with an older version).
pub fn upgrade_table_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &NewTopic,
    timeout: Duration,
) -> Vec<ConfigUpgrade> {
    let upgrade = || -> Result<Vec<ConfigUpgrade>, AdminError> {
        let current = describe_topic_configs(client, &topic.name, timeout)?;
        let upgrades = table_upgrades(&topic.configs, &current);
        if !upgrades.is_empty() {
            let changes: Vec<ConfigChange<'_>> = upgrades
                .iter()
                .map(|upgrade| ConfigChange::Set { name: &upgrade.name, value: &upgrade.to })
                .collect();
            alter_topic_configs(client, &topic.name, &changes, timeout)?;
        }
        Ok(upgrades)
    };
    match upgrade() {
        Ok(upgrades) => {
            for upgrade in &upgrades {
                tracing::info!(
                    topic = %topic.name,
                    config = %upgrade.name,
                    from = upgrade.from.as_deref().unwrap_or("(none)"),
                    to = %upgrade.to,
                    "upgraded a table topic created before tables were compacted"
                );
            }
            upgrades
        }
        Err(error) if error.code().is_some_and(|code| code.is(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            Vec::new()
        }
        Err(error) => {
            tracing::warn!(
                topic = %topic.name,
                %error,
                "could not check or upgrade the table topic's configs; it is used as it is (if it is not \
                 compacted it keeps every record)"
            );
            Vec::new()
        }
    }
}

/// [`upgrade_table_topic`] through a client of its own (with `client_id`), off the async
/// threads. A client that cannot be made is logged like a refused upgrade.
pub async fn upgrade_table_topic_on(
    cluster: &ClusterConfig,
    client_id: &str,
    topic: NewTopic,
    timeout: Duration,
) -> Vec<ConfigUpgrade> {
    let config = cluster.client_config(&[("client.id", client_id)]);
    let name = topic.name.clone();
    let upgraded = tokio::task::spawn_blocking(move || {
        match config.create_with_context(QuietContext::default()) {
            Ok(admin) => {
                let admin: AdminClient<QuietContext> = admin;
                upgrade_table_topic(admin.inner(), &topic, timeout)
            }
            Err(error) => {
                tracing::warn!(topic = %topic.name, %error, "could not make a client to upgrade the table topic");
                Vec::new()
            }
        }
    });
    upgraded.await.unwrap_or_else(|error| {
        tracing::warn!(topic = %name, %error, "the table upgrade task failed");
        Vec::new()
    })
}

/// [`ensure_table_topic`] through a client of its own (with `client_id`), off the async threads.
pub async fn ensure_table_topic_on(
    cluster: &ClusterConfig,
    client_id: &str,
    topic: NewTopic,
    timeout: Duration,
) -> Result<Vec<ConfigUpgrade>, AdminError> {
    let config = cluster.client_config(&[("client.id", client_id)]);
    let ensured = tokio::task::spawn_blocking(move || {
        let admin: AdminClient<QuietContext> = config
            .create_with_context(QuietContext::default())
            .map_err(|error| AdminError::Client { error })?;
        ensure_table_topic(admin.inner(), &topic, timeout)
    });
    ensured.await.map_err(|error| AdminError::Unexpected(format!("the admin task failed: {error}")))?
}

/// What turns an existing topic into the table `wanted` describes, given its `current` configs
/// (pure). `cleanup.policy` changes whenever the topic's lacks `compact`, whoever set it: a table
/// is compacted by design. Every other wanted config changes only where the topic does not
/// override it (its value is the cluster's default), so an operator's setting stays; a config the
/// cluster does not report is left alone.
pub fn table_upgrades(wanted: &[(String, String)], current: &[TopicConfigEntry]) -> Vec<ConfigUpgrade> {
    let mut upgrades = Vec::new();
    for (name, value) in wanted {
        let Some(entry) = current.iter().find(|entry| &entry.name == name) else { continue };
        if entry.value.as_deref() == Some(value.as_str()) {
            continue;
        }
        let needed = if name == "cleanup.policy" {
            let compacted = entry
                .value
                .as_deref()
                .is_some_and(|policy| policy.split(',').any(|item| item.trim() == "compact"));
            !compacted
        } else {
            entry.is_default
        };
        if needed {
            upgrades.push(ConfigUpgrade { name: name.clone(), from: entry.value.clone(), to: value.clone() });
        }
    }
    upgrades
}

/// Every config of `topic` as the cluster reports it.
pub fn describe_topic_configs<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<TopicConfigEntry>, AdminError> {
    let resource = topic_resource(topic)?;
    // SAFETY (read): the result is live during the call; its entries are config resources, whose
    // config entries and their strings live as long as they do.
    request(client, &DESCRIBE_CONFIGS, timeout, &[resource], |result| unsafe {
        let resources = result_array(result, rdsys::rd_kafka_DescribeConfigs_result_resources);
        let Some(&resource) = resources
            .iter()
            .find(|&&resource| c_text(rdsys::rd_kafka_ConfigResource_name(resource)) == topic)
        else {
            return Err(AdminError::Unexpected(format!("the answer did not mention {topic:?}")));
        };
        resource_outcome(resource).1?;
        let entries = result_array(resource, rdsys::rd_kafka_ConfigResource_configs);
        Ok(entries
            .iter()
            .map(|&entry| {
                let value = rdsys::rd_kafka_ConfigEntry_value(entry);
                TopicConfigEntry {
                    name: c_text(rdsys::rd_kafka_ConfigEntry_name(entry)),
                    value: (!value.is_null()).then(|| c_text(value)),
                    is_default: rdsys::rd_kafka_ConfigEntry_is_default(entry) != 0,
                }
            })
            .collect())
    })
}

/// A config resource naming `topic`.
fn topic_resource(topic: &str) -> Result<Owned<rdsys::rd_kafka_ConfigResource_t>, AdminError> {
    let name = c_string(topic)?;
    // SAFETY: `name` outlives the call; librdkafka copies it.
    unsafe {
        Owned::made(
            rdsys::rd_kafka_ConfigResource_new(
                rdsys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                name.as_ptr(),
            ),
            rdsys::rd_kafka_ConfigResource_destroy,
            || "librdkafka refused the config resource".to_string(),
        )
    }
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

/// What DeleteRecords did to one partition: its new log start offset (the low watermark), or
/// the broker's error for it (such as OFFSET_OUT_OF_RANGE for an offset past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedRecords {
    pub partition: i32,
    pub low_watermark: i64,
    pub error: Option<ErrorCode>,
}

/// Deletes the records of `topic` before the given offset of each partition (DeleteRecords, as
/// `kafka-delete-records.sh` sends it; -1 means the high watermark, so everything). Offsets never
/// change: the partition's log start offset moves up to the given one. Returns each partition's
/// outcome.
pub fn delete_records<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    before_offsets: &[(i32, i64)],
    timeout: Duration,
) -> Result<Vec<DeletedRecords>, AdminError> {
    let mut partitions = rdkafka::TopicPartitionList::with_capacity(before_offsets.len());
    for &(partition, offset) in before_offsets {
        let position = if offset == -1 { rdkafka::Offset::End } else { rdkafka::Offset::Offset(offset) };
        partitions.add_partition_offset(topic, partition, position).map_err(|error| {
            AdminError::Invalid(format!("offset {offset} of {topic:?} partition {partition}: {error}"))
        })?;
    }
    // SAFETY: `partitions` outlives the call; librdkafka copies it.
    let delete = unsafe {
        Owned::made(
            rdsys::rd_kafka_DeleteRecords_new(partitions.ptr()),
            rdsys::rd_kafka_DeleteRecords_destroy,
            || "librdkafka refused the DeleteRecords request".to_string(),
        )
    }?;
    // SAFETY (read): the result is live during the call, and so is its partition list, which
    // holds `cnt` entries; error codes are read as integers because a broker may send one this
    // librdkafka has no name for.
    request(client, &DELETE_RECORDS, timeout, &[delete], |result| unsafe {
        let offsets = rdsys::rd_kafka_DeleteRecords_result_offsets(result);
        if offsets.is_null() {
            return Err(AdminError::Unexpected("DeleteRecords answered without partitions".to_string()));
        }
        Ok(raw_slice((*offsets).elems, (*offsets).cnt)
            .iter()
            .map(|entry| DeletedRecords {
                partition: entry.partition,
                low_watermark: entry.offset,
                error: ErrorCode::from_raw(std::ptr::addr_of!(entry.err).cast::<i32>().read()),
            })
            .collect())
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
    let resource = topic_resource(topic)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `table_upgrades` for the wanted configs against `current` entries written as
    /// `name=value` (`*` after the value: the cluster's default) and compares the upgrades,
    /// written `name: from -> to`.
    fn check(wanted: &[(&str, &str)], current: &[&str], expected: &[&str]) {
        let wanted: Vec<(String, String)> =
            wanted.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        let current: Vec<TopicConfigEntry> = current
            .iter()
            .map(|text| {
                let (name, value) = text.split_once('=').unwrap_or((text, ""));
                let (value, is_default) = match value.strip_suffix('*') {
                    Some(value) => (value, true),
                    None => (value, false),
                };
                TopicConfigEntry { name: name.to_string(), value: Some(value.to_string()), is_default }
            })
            .collect();
        let actual: Vec<String> = table_upgrades(&wanted, &current)
            .iter()
            .map(|upgrade| {
                format!("{}: {} -> {}", upgrade.name, upgrade.from.as_deref().unwrap_or("-"), upgrade.to)
            })
            .collect();
        assert_eq!(actual, expected, "current {current:?}");
    }

    #[test]
    fn an_existing_topic_becomes_a_table_but_keeps_an_operators_settings() {
        let table = [("cleanup.policy", "compact"), ("segment.ms", "600000")];
        // Created by an older Tidewater with retention.ms=-1 and the default policy: upgraded.
        check(
            &table,
            &["cleanup.policy=delete*", "retention.ms=-1", "segment.ms=604800000*"],
            &["cleanup.policy: delete -> compact", "segment.ms: 604800000 -> 600000"],
        );
        // A policy set to delete on the topic is still switched: a table is compacted by design.
        check(
            &table,
            &["cleanup.policy=delete", "segment.ms=3600000"],
            &["cleanup.policy: delete -> compact"],
        );
        // Already compacted, whatever else the policy says: nothing to do.
        check(&table, &["cleanup.policy=compact,delete", "segment.ms=600000*"], &[]);
        check(&table, &["cleanup.policy=delete, compact"], &[]);
        // A table that also deletes by time gets both.
        check(
            &[("cleanup.policy", "compact,delete"), ("retention.ms", "3600000")],
            &["cleanup.policy=delete*", "retention.ms=3600000"],
            &["cleanup.policy: delete -> compact,delete"],
        );
        // A config the cluster does not report is not sent (it may not know it).
        check(&table, &["cleanup.policy=compact"], &[]);
    }
}
