//! The admin requests that change a cluster (CreateTopics, DeleteTopics, CreatePartitions,
//! IncrementalAlterConfigs) and the consumer group requests (ListGroups with DescribeGroups,
//! ListConsumerGroupOffsets, AlterConsumerGroupOffsets, DeleteGroups), sent through
//! librdkafka's C API.
//!
//! Why not the `rdkafka` crate's `AdminClient` methods: they keep only the error code of each
//! result and drop the broker's error message, which is the part that says *which* config value
//! was wrong and why; and the crate has no IncrementalAlterConfigs at all (its AlterConfigs
//! replaces every override of a topic, silently resetting the ones not named), nor any of the
//! group requests but the listing, whose `GroupInfo` drops each group's error.
//!
//! Everything unsafe in the client commands lives in this file, behind eight safe functions.
//! Each object librdkafka hands out is held by an [`Owned`] guard that destroys it exactly once;
//! librdkafka copies the request objects it is given, so they are destroyed after submitting.
//! Each request waits at most the caller's timeout (plus a margin for librdkafka to report its
//! own timeout) for its result.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use anyhow::Context;
use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};

use super::timeout_ms_for_librdkafka;

/// How long past its own request timeout we wait for librdkafka to deliver a result. librdkafka
/// always answers an admin request by its timeout, so this margin only guards against a bug.
const RESULT_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// Size of the buffers librdkafka writes argument errors into.
const ERRSTR_BYTES: usize = 512;

/// A topic to create. `-1` for `partitions` or `replication_factor` means the broker's default.
#[derive(Debug)]
pub(crate) struct NewTopic<'a> {
    pub(crate) name: &'a str,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i32,
    pub(crate) configs: Vec<(&'a str, &'a str)>,
}

/// One change of IncrementalAlterConfigs.
#[derive(Debug)]
pub(crate) enum ConfigChange<'a> {
    Set {
        name: &'a str,
        value: &'a str,
    },
    /// Removes the override, so the config reverts to its default.
    Delete {
        name: &'a str,
    },
}

/// Creates one topic and waits until the broker has created it (or refused).
pub(crate) fn create_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &NewTopic<'_>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let name = c_string(topic.name)?;
    let mut errstr = [0 as c_char; ERRSTR_BYTES];
    // SAFETY: `name` and `errstr` outlive the call; librdkafka copies the name.
    let new_topic = unsafe {
        Owned::new(
            rdsys::rd_kafka_NewTopic_new(
                name.as_ptr(),
                topic.partitions,
                topic.replication_factor,
                errstr.as_mut_ptr(),
                errstr.len(),
            ),
            rdsys::rd_kafka_NewTopic_destroy,
        )
    }
    .ok_or_else(|| anyhow::anyhow!("{}", errstr_text(&errstr)))?;
    for (config_name, value) in &topic.configs {
        let (config_name_c, value_c) = (c_string(config_name)?, c_string(value)?);
        // SAFETY: the topic is live and owned by us; librdkafka copies both strings.
        let error = unsafe {
            rdsys::rd_kafka_NewTopic_set_config(new_topic.as_ptr(), config_name_c.as_ptr(), value_c.as_ptr())
        };
        check_resp_err(error).with_context(|| format!("config {config_name}={value}"))?;
    }
    let request = Request::new(client, rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout)?;
    let mut topics = [new_topic.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the topic objects.
    unsafe {
        rdsys::rd_kafka_CreateTopics(
            client.native_ptr(),
            topics.as_mut_ptr(),
            topics.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: the event is live; the result (null for an event of another type) and its topic
    // array belong to the event, which outlives their use in `topic_results`.
    unsafe {
        let result = rdsys::rd_kafka_event_CreateTopics_result(event.as_ptr());
        anyhow::ensure!(!result.is_null(), "librdkafka answered CreateTopics with another event");
        let mut count = 0;
        let results = rdsys::rd_kafka_CreateTopics_result_topics(result, &mut count);
        single(topic_results(results, count), topic.name)
    }
}

/// Deletes one topic and waits for the broker's answer.
pub(crate) fn delete_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let name = c_string(topic)?;
    // SAFETY: `name` outlives the call; librdkafka copies it.
    let delete = unsafe {
        Owned::new(rdsys::rd_kafka_DeleteTopic_new(name.as_ptr()), rdsys::rd_kafka_DeleteTopic_destroy)
    }
    .context("librdkafka refused the DeleteTopics request")?;
    let request = Request::new(client, rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout)?;
    let mut topics = [delete.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the request objects.
    unsafe {
        rdsys::rd_kafka_DeleteTopics(
            client.native_ptr(),
            topics.as_mut_ptr(),
            topics.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: as in `create_topic`: the result borrows from the live event.
    unsafe {
        let result = rdsys::rd_kafka_event_DeleteTopics_result(event.as_ptr());
        anyhow::ensure!(!result.is_null(), "librdkafka answered DeleteTopics with another event");
        let mut count = 0;
        let results = rdsys::rd_kafka_DeleteTopics_result_topics(result, &mut count);
        single(topic_results(results, count), topic)
    }
}

/// Grows `topic` to `total` partitions.
pub(crate) fn create_partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    total: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let name = c_string(topic)?;
    let mut errstr = [0 as c_char; ERRSTR_BYTES];
    // SAFETY: `name` and `errstr` outlive the call; librdkafka copies the name.
    let new_partitions = unsafe {
        Owned::new(
            rdsys::rd_kafka_NewPartitions_new(name.as_ptr(), total, errstr.as_mut_ptr(), errstr.len()),
            rdsys::rd_kafka_NewPartitions_destroy,
        )
    }
    .ok_or_else(|| anyhow::anyhow!("{}", errstr_text(&errstr)))?;
    let request =
        Request::new(client, rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEPARTITIONS, timeout)?;
    let mut requests = [new_partitions.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the request objects.
    unsafe {
        rdsys::rd_kafka_CreatePartitions(
            client.native_ptr(),
            requests.as_mut_ptr(),
            requests.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: as in `create_topic`: the result borrows from the live event.
    unsafe {
        let result = rdsys::rd_kafka_event_CreatePartitions_result(event.as_ptr());
        anyhow::ensure!(!result.is_null(), "librdkafka answered CreatePartitions with another event");
        let mut count = 0;
        let results = rdsys::rd_kafka_CreatePartitions_result_topics(result, &mut count);
        single(topic_results(results, count), topic)
    }
}

/// Applies `changes` to `topic`'s configs in one IncrementalAlterConfigs request; configs not
/// named keep their values. The broker applies all of them or none.
pub(crate) fn alter_topic_configs<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    changes: &[ConfigChange<'_>],
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdsys::rd_kafka_AlterConfigOpType_t::{
        RD_KAFKA_ALTER_CONFIG_OP_TYPE_DELETE as DELETE, RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET as SET,
    };
    let name = c_string(topic)?;
    // SAFETY: `name` outlives the call; librdkafka copies it.
    let resource = unsafe {
        Owned::new(
            rdsys::rd_kafka_ConfigResource_new(
                rdsys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                name.as_ptr(),
            ),
            rdsys::rd_kafka_ConfigResource_destroy,
        )
    }
    .context("librdkafka refused the config resource")?;
    for change in changes {
        let (config_name, op, value) = match change {
            ConfigChange::Set { name, value } => (*name, SET, Some(c_string(value)?)),
            ConfigChange::Delete { name } => (*name, DELETE, None),
        };
        let config_name_c = c_string(config_name)?;
        // SAFETY: the resource is live and ours; librdkafka copies the strings; a null value is
        // what it expects for DELETE.
        let error = unsafe {
            rdsys::rd_kafka_ConfigResource_add_incremental_config(
                resource.as_ptr(),
                config_name_c.as_ptr(),
                op,
                value.as_ref().map_or(std::ptr::null(), |value| value.as_ptr()),
            )
        };
        // SAFETY: a non-null error is ours to read and destroy.
        if let Some(error) = unsafe { Owned::new(error, rdsys::rd_kafka_error_destroy) } {
            // SAFETY: the error is live; its string lives as long as it does.
            let text = unsafe { c_text(rdsys::rd_kafka_error_string(error.as_ptr())) };
            anyhow::bail!("config {config_name}: {text}");
        }
    }
    let request =
        Request::new(client, rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS, timeout)?;
    let mut resources = [resource.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the resources.
    unsafe {
        rdsys::rd_kafka_IncrementalAlterConfigs(
            client.native_ptr(),
            resources.as_mut_ptr(),
            resources.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: the result and its resource array borrow from the live event.
    unsafe {
        let result = rdsys::rd_kafka_event_IncrementalAlterConfigs_result(event.as_ptr());
        anyhow::ensure!(!result.is_null(), "librdkafka answered IncrementalAlterConfigs with another event");
        let mut count = 0;
        let results = rdsys::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
        let results = if results.is_null() { &[][..] } else { std::slice::from_raw_parts(results, count) };
        let outcomes = results
            .iter()
            .map(|&resource| {
                let name = c_text(rdsys::rd_kafka_ConfigResource_name(resource));
                let error = rdsys::rd_kafka_ConfigResource_error(resource);
                let outcome = if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Ok(())
                } else {
                    Err(error_text(error, rdsys::rd_kafka_ConfigResource_error_string(resource)))
                };
                (name, outcome)
            })
            .collect();
        single(outcomes, topic)
    }
}

/// One consumer group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    pub(crate) name: String,
    /// The broker's error for this group (such as a coordinator still loading), if describing
    /// it failed; the other fields are then empty.
    pub(crate) error: Option<ErrorCode>,
    /// Kafka's name for it: Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub(crate) state: String,
    /// "consumer" for consumer groups; empty for a group that only ever had offsets committed.
    pub(crate) protocol_type: String,
    /// The protocol the members agreed on: for consumer groups, the partition assignor
    /// ("range", "cooperative-sticky").
    pub(crate) protocol: String,
    pub(crate) members: Vec<GroupMember>,
}

/// A member of a group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMember {
    pub(crate) member_id: String,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// The assignment the leader gave it, in the protocol's own encoding (for consumer groups,
    /// Kafka's ConsumerProtocolAssignment); empty while the group rebalances.
    pub(crate) assignment: Vec<u8>,
}

/// The groups `list_groups` found, and whether every broker answered.
#[derive(Debug)]
pub(crate) struct GroupListing {
    pub(crate) groups: Vec<GroupInfo>,
    /// False when some broker did not answer in time, so a group may be missing.
    pub(crate) complete: bool,
}

/// A committed offset of a group, or the outcome of committing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupOffset {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// -1 when nothing is committed.
    pub(crate) offset: i64,
    /// The broker's error for this partition.
    pub(crate) error: Option<ErrorCode>,
}

/// A Kafka error code as a broker sent it, which may be one this librdkafka has no name for.
/// It prints as librdkafka's text ("Broker: Unknown member id").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorCode(pub(crate) i32);

impl ErrorCode {
    fn from_raw(code: i32) -> Option<ErrorCode> {
        (code != 0).then_some(ErrorCode(code))
    }

    pub(crate) fn is(self, known: rdkafka::types::RDKafkaErrorCode) -> bool {
        self.0 == known as i32
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&code_text(self.0))
    }
}

/// Every group of the cluster, or only `group`, with its state and members: ListGroups to every
/// broker, then DescribeGroups of what they list (librdkafka's `rd_kafka_list_groups`). A group
/// no broker lists is not in the answer.
///
/// Why not the `rdkafka` crate's `fetch_group_list`: its `GroupInfo` drops each group's error
/// code and panics on a name that is not UTF-8; this keeps the error and converts lossily.
pub(crate) fn list_groups<C: ClientContext>(
    client: &Client<C>,
    group: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<GroupListing> {
    let group = group.map(c_string).transpose()?;
    let mut list: *const rdsys::rd_kafka_group_list = std::ptr::null();
    // SAFETY: the client handle and `group` are live for the call; librdkafka writes `list` only
    // when it returns NO_ERROR or PARTIAL, and then the list is ours to destroy.
    let error = unsafe {
        rdsys::rd_kafka_list_groups(
            client.native_ptr(),
            group.as_ref().map_or(std::ptr::null(), |group| group.as_ptr()),
            &mut list,
            timeout_ms_for_librdkafka(timeout),
        )
    };
    let complete = match error {
        rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => true,
        rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTIAL => false,
        // No broker answered at all (librdkafka found none within the timeout).
        rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT => {
            anyhow::bail!("no answer within {} ms", timeout.as_millis())
        }
        // SAFETY: a null message is allowed.
        error => anyhow::bail!("{}", unsafe { error_text(error, std::ptr::null()) }),
    };
    // SAFETY: as above: a non-null list is ours, and `destroy_group_list` frees it.
    let Some(list) = (unsafe { Owned::new(list.cast_mut(), destroy_group_list) }) else {
        return Ok(GroupListing { groups: Vec::new(), complete });
    };
    // SAFETY: the list is live until `list` drops, after the strings and bytes are copied out.
    // Counts come from librdkafka, which allocated exactly that many entries; error codes are
    // read as integers because a broker may send one this librdkafka has no name for.
    let groups = unsafe {
        let list = &*list.as_ptr();
        raw_slice(list.groups, list.group_cnt)
            .iter()
            .map(|info| GroupInfo {
                name: c_text(info.group),
                error: ErrorCode::from_raw(std::ptr::addr_of!(info.err).cast::<i32>().read()),
                state: c_text(info.state),
                protocol_type: c_text(info.protocol_type),
                protocol: c_text(info.protocol),
                members: raw_slice(info.members, info.member_cnt)
                    .iter()
                    .map(|member| GroupMember {
                        member_id: c_text(member.member_id),
                        client_id: c_text(member.client_id),
                        client_host: c_text(member.client_host),
                        assignment: raw_slice(
                            member.member_assignment.cast::<u8>(),
                            member.member_assignment_size,
                        )
                        .to_vec(),
                    })
                    .collect(),
            })
            .collect()
    };
    Ok(GroupListing { groups, complete })
}

/// Every offset `group` has committed (OffsetFetch for all partitions, through librdkafka's
/// ListConsumerGroupOffsets), including those of topics that no longer exist.
pub(crate) fn list_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<GroupOffset>> {
    let name = c_string(group)?;
    // SAFETY: `name` outlives the call and librdkafka copies it; null partitions means "all".
    let list = unsafe {
        Owned::new(
            rdsys::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), std::ptr::null()),
            rdsys::rd_kafka_ListConsumerGroupOffsets_destroy,
        )
    }
    .context("librdkafka refused the ListConsumerGroupOffsets request")?;
    let request = Request::new(
        client,
        rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        timeout,
    )?;
    let mut lists = [list.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the request objects.
    unsafe {
        rdsys::rd_kafka_ListConsumerGroupOffsets(
            client.native_ptr(),
            lists.as_mut_ptr(),
            lists.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: the result and its group array borrow from the live event.
    unsafe {
        let result = rdsys::rd_kafka_event_ListConsumerGroupOffsets_result(event.as_ptr());
        anyhow::ensure!(!result.is_null(), "librdkafka answered ListConsumerGroupOffsets with another event");
        let mut count = 0;
        let results = rdsys::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        single_group(group_results(results, count), group)
    }
}

/// Commits `offsets` ((topic, partition, offset)) for `group` as an admin would: an OffsetCommit
/// with no member id and generation -1 (librdkafka's AlterConsumerGroupOffsets). Kafka accepts
/// it only while the group has no active members. Returns each partition's outcome.
pub(crate) fn alter_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    offsets: &[(String, i32, i64)],
    timeout: Duration,
) -> anyhow::Result<Vec<GroupOffset>> {
    let mut partitions = rdkafka::TopicPartitionList::with_capacity(offsets.len());
    for (topic, partition, offset) in offsets {
        partitions
            .add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
            .with_context(|| format!("offset {offset} of {topic:?} partition {partition}"))?;
    }
    let name = c_string(group)?;
    // SAFETY: `name` and `partitions` outlive the call; librdkafka copies both.
    let alter = unsafe {
        Owned::new(
            rdsys::rd_kafka_AlterConsumerGroupOffsets_new(name.as_ptr(), partitions.ptr()),
            rdsys::rd_kafka_AlterConsumerGroupOffsets_destroy,
        )
    }
    .context("librdkafka refused the AlterConsumerGroupOffsets request")?;
    let request = Request::new(
        client,
        rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS,
        timeout,
    )?;
    let mut alters = [alter.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the request objects.
    unsafe {
        rdsys::rd_kafka_AlterConsumerGroupOffsets(
            client.native_ptr(),
            alters.as_mut_ptr(),
            alters.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: the result and its group array borrow from the live event.
    unsafe {
        let result = rdsys::rd_kafka_event_AlterConsumerGroupOffsets_result(event.as_ptr());
        anyhow::ensure!(
            !result.is_null(),
            "librdkafka answered AlterConsumerGroupOffsets with another event"
        );
        let mut count = 0;
        let results = rdsys::rd_kafka_AlterConsumerGroupOffsets_result_groups(result, &mut count);
        single_group(group_results(results, count), group)
    }
}

/// Deletes `group` and its committed offsets (DeleteGroups). Kafka refuses while the group has
/// active members.
pub(crate) fn delete_group<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let name = c_string(group)?;
    // SAFETY: `name` outlives the call; librdkafka copies it.
    let delete = unsafe {
        Owned::new(rdsys::rd_kafka_DeleteGroup_new(name.as_ptr()), rdsys::rd_kafka_DeleteGroup_destroy)
    }
    .context("librdkafka refused the DeleteGroups request")?;
    let request = Request::new(client, rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEGROUPS, timeout)?;
    let mut groups = [delete.as_ptr()];
    // SAFETY: every pointer is live for the call; librdkafka copies the request objects.
    unsafe {
        rdsys::rd_kafka_DeleteGroups(
            client.native_ptr(),
            groups.as_mut_ptr(),
            groups.len(),
            request.options.as_ptr(),
            request.queue.as_ptr(),
        );
    }
    let event = request.wait(timeout)?;
    // SAFETY: the result and its group array borrow from the live event.
    unsafe {
        let result = rdsys::rd_kafka_event_DeleteGroups_result(event.as_ptr());
        anyhow::ensure!(!result.is_null(), "librdkafka answered DeleteGroups with another event");
        let mut count = 0;
        let results = rdsys::rd_kafka_DeleteGroups_result_groups(result, &mut count);
        single_group(group_results(results, count), group).map(|_| ())
    }
}

/// An object from librdkafka that this code owns and destroys when dropped.
struct Owned<T> {
    pointer: NonNull<T>,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    /// `None` for a null pointer.
    ///
    /// # Safety
    ///
    /// A non-null `pointer` must be a live object that nothing else will destroy, and `destroy`
    /// must be the librdkafka function that frees that kind of object.
    unsafe fn new(pointer: *mut T, destroy: unsafe extern "C" fn(*mut T)) -> Option<Owned<T>> {
        NonNull::new(pointer).map(|pointer| Owned { pointer, destroy })
    }

    fn as_ptr(&self) -> *mut T {
        self.pointer.as_ptr()
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `new`'s contract: we own the object and `destroy` frees it; drop runs once.
        unsafe { (self.destroy)(self.pointer.as_ptr()) }
    }
}

/// The options and the private result queue of one admin request.
struct Request {
    options: Owned<rdsys::rd_kafka_AdminOptions_t>,
    queue: Owned<rdsys::rd_kafka_queue_t>,
}

impl Request {
    fn new<C: ClientContext>(
        client: &Client<C>,
        operation: rdsys::rd_kafka_admin_op_t,
        timeout: Duration,
    ) -> anyhow::Result<Request> {
        let timeout_ms = timeout_ms_for_librdkafka(timeout);
        // SAFETY: the client handle is live for the whole call (and longer: `client` is borrowed).
        let options = unsafe {
            Owned::new(
                rdsys::rd_kafka_AdminOptions_new(client.native_ptr(), operation),
                rdsys::rd_kafka_AdminOptions_destroy,
            )
        }
        .context("librdkafka refused the admin options")?;
        let mut errstr = [0 as c_char; ERRSTR_BYTES];
        // SAFETY: `options` is live and ours; `errstr` outlives the call.
        let error = unsafe {
            rdsys::rd_kafka_AdminOptions_set_request_timeout(
                options.as_ptr(),
                timeout_ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        anyhow::ensure!(
            error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            "request timeout: {}",
            errstr_text(&errstr)
        );
        // CreateTopics, DeleteTopics and CreatePartitions also tell the broker how long to wait
        // for the change to complete before answering; other requests have no such field.
        let has_operation_timeout = matches!(
            operation,
            rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS
                | rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETETOPICS
                | rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEPARTITIONS
        );
        if has_operation_timeout {
            // SAFETY: as above.
            let error = unsafe {
                rdsys::rd_kafka_AdminOptions_set_operation_timeout(
                    options.as_ptr(),
                    timeout_ms,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            };
            anyhow::ensure!(
                error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                "operation timeout: {}",
                errstr_text(&errstr)
            );
        }
        // SAFETY: as above; the queue is destroyed before the client (it is dropped first).
        let queue = unsafe {
            Owned::new(rdsys::rd_kafka_queue_new(client.native_ptr()), rdsys::rd_kafka_queue_destroy)
        }
        .context("librdkafka could not create a result queue")?;
        Ok(Request { options, queue })
    }

    /// Waits for the request's result event; an error if the request as a whole failed (no
    /// broker reachable, timed out). Callers drop the event before the request.
    fn wait(&self, timeout: Duration) -> anyhow::Result<Owned<rdsys::rd_kafka_event_t>> {
        let wait_ms = timeout_ms_for_librdkafka(timeout.saturating_add(RESULT_WAIT_MARGIN));
        // SAFETY: the queue is live; a returned event is ours to destroy.
        let event = unsafe {
            Owned::new(
                rdsys::rd_kafka_queue_poll(self.queue.as_ptr(), wait_ms),
                rdsys::rd_kafka_event_destroy,
            )
        }
        .with_context(|| format!("no answer from librdkafka within {} ms", wait_ms))?;
        // SAFETY: the event is live; its error string lives as long as it does.
        unsafe {
            let error = rdsys::rd_kafka_event_error(event.as_ptr());
            if error != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                anyhow::bail!("{}", error_text(error, rdsys::rd_kafka_event_error_string(event.as_ptr())));
            }
        }
        Ok(event)
    }
}

/// Name and outcome of each entry of a CreateTopics, DeleteTopics or CreatePartitions result.
///
/// # Safety
///
/// `results` must be null or point to `count` live topic results.
unsafe fn topic_results(
    results: *mut *const rdsys::rd_kafka_topic_result_t,
    count: usize,
) -> Vec<(String, Result<(), String>)> {
    if results.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's contract.
    let results = unsafe { std::slice::from_raw_parts(results, count) };
    results
        .iter()
        .map(|&result| {
            // SAFETY: each entry is a live topic result whose strings live as long as it does.
            unsafe {
                let name = c_text(rdsys::rd_kafka_topic_result_name(result));
                let error = rdsys::rd_kafka_topic_result_error(result);
                let outcome = if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Ok(())
                } else {
                    Err(error_text(error, rdsys::rd_kafka_topic_result_error_string(result)))
                };
                (name, outcome)
            }
        })
        .collect()
}

/// The outcome for `name` from a result that should hold exactly that one entry.
fn single(outcomes: Vec<(String, Result<(), String>)>, name: &str) -> anyhow::Result<()> {
    match outcomes.into_iter().find(|(result_name, _)| result_name == name) {
        Some((_, Ok(()))) => Ok(()),
        Some((_, Err(message))) => Err(anyhow::anyhow!(message)),
        None => anyhow::bail!("the answer did not mention {name:?}"),
    }
}

/// "Broker: Invalid config: retention.ms: ..." from an error code and the broker's message.
///
/// # Safety
///
/// `message` must be null or a live NUL-terminated string.
unsafe fn error_text(error: rdsys::rd_kafka_resp_err_t, message: *const c_char) -> String {
    // SAFETY: rd_kafka_err2str returns a static string for every code.
    let code_text = unsafe { c_text(rdsys::rd_kafka_err2str(error)) };
    // SAFETY: the caller's contract.
    let message = unsafe { c_text(message) };
    if message.is_empty() || message == code_text {
        code_text
    } else {
        format!("{code_text}: {message}")
    }
}

/// A C string as Rust text; empty for null.
///
/// # Safety
///
/// `text` must be null or a live NUL-terminated string.
unsafe fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

fn errstr_text(errstr: &[c_char]) -> String {
    // librdkafka writes a NUL-terminated message; a buffer it never touched is all zeroes.
    let bytes: Vec<u8> = errstr.iter().take_while(|&&byte| byte != 0).map(|&byte| byte as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check_resp_err(error: rdsys::rd_kafka_resp_err_t) -> anyhow::Result<()> {
    if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    // SAFETY: a null message is allowed; err2str covers every code.
    anyhow::bail!("{}", unsafe { error_text(error, std::ptr::null()) })
}

fn c_string(text: &str) -> anyhow::Result<CString> {
    CString::new(text).with_context(|| format!("{text:?} contains a NUL byte"))
}

/// `rd_kafka_group_list_destroy` takes a const pointer; [`Owned`] holds a mutable one.
///
/// # Safety
///
/// `list` must be a live group list that nothing else will destroy.
unsafe extern "C" fn destroy_group_list(list: *mut rdsys::rd_kafka_group_list) {
    // SAFETY: the caller's contract.
    unsafe { rdsys::rd_kafka_group_list_destroy(list) }
}

/// Name and outcome of each entry of a ListConsumerGroupOffsets, AlterConsumerGroupOffsets or
/// DeleteGroups result: the group's partitions (none for DeleteGroups), or the group's error.
///
/// # Safety
///
/// `results` must be null or point to `count` live group results.
unsafe fn group_results(
    results: *mut *const rdsys::rd_kafka_group_result_t,
    count: usize,
) -> Vec<(String, Result<Vec<GroupOffset>, String>)> {
    if results.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's contract.
    let results = unsafe { std::slice::from_raw_parts(results, count) };
    results
        .iter()
        .map(|&result| {
            // SAFETY: each entry is a live group result; its name, error and partition list live
            // as long as it does. The partition list holds `cnt` entries, and error codes are
            // read as integers because a broker may send one this librdkafka has no name for.
            unsafe {
                let name = c_text(rdsys::rd_kafka_group_result_name(result));
                let error = rdsys::rd_kafka_group_result_error(result);
                if !error.is_null() {
                    return (name, Err(c_text(rdsys::rd_kafka_error_string(error))));
                }
                let partitions = rdsys::rd_kafka_group_result_partitions(result);
                let partitions = if partitions.is_null() {
                    &[][..]
                } else {
                    raw_slice((*partitions).elems, (*partitions).cnt)
                };
                let offsets = partitions
                    .iter()
                    .map(|partition| GroupOffset {
                        topic: c_text(partition.topic),
                        partition: partition.partition,
                        offset: partition.offset,
                        error: ErrorCode::from_raw(std::ptr::addr_of!(partition.err).cast::<i32>().read()),
                    })
                    .collect();
                (name, Ok(offsets))
            }
        })
        .collect()
}

/// The partitions for `name` from a group result that should hold exactly that one group.
fn single_group(
    outcomes: Vec<(String, Result<Vec<GroupOffset>, String>)>,
    name: &str,
) -> anyhow::Result<Vec<GroupOffset>> {
    match outcomes.into_iter().find(|(result_name, _)| result_name == name) {
        Some((_, Ok(offsets))) => Ok(offsets),
        Some((_, Err(message))) => Err(anyhow::anyhow!(message)),
        None => anyhow::bail!("the answer did not mention group {name:?}"),
    }
}

/// `count` items at `items`; empty for a null pointer or a count below one.
///
/// # Safety
///
/// A non-null `items` with a positive `count` must point to `count` live items that outlive `'a`.
unsafe fn raw_slice<'a, T>(items: *const T, count: c_int) -> &'a [T] {
    match usize::try_from(count) {
        // SAFETY: the caller's contract.
        Ok(count) if count > 0 && !items.is_null() => unsafe { std::slice::from_raw_parts(items, count) },
        _ => &[],
    }
}

/// librdkafka's text for an error code read as a plain integer, such as "Broker: The group is
/// not empty"; the number itself for a code this librdkafka does not know.
fn code_text(code: i32) -> String {
    match rdsys::rd_kafka_resp_err_t::try_from(code) {
        // SAFETY: a null message is allowed; err2str covers every known code.
        Ok(error) => unsafe { error_text(error, std::ptr::null()) },
        Err(_) => format!("error code {code}"),
    }
}
