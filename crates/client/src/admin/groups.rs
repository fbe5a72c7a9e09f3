//! Consumer group requests: ListGroups with DescribeGroups, DescribeConsumerGroups (which asks
//! with KIP-848's ConsumerGroupDescribe first), ListConsumerGroupOffsets,
//! AlterConsumerGroupOffsets and DeleteGroups, as an administrator (never a member) sends them.

use std::ffi::{c_char, c_int};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdsys::rd_kafka_admin_op_t as Op;

use super::ffi::{
    c_string, c_text, entry_error, error_text, named, raw_slice, request, result_array, single, Operation,
    Owned,
};
use super::{AdminError, ErrorCode};
use crate::config::timeout_ms_for_librdkafka;

/// One consumer group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    /// The broker's error for this group (such as a coordinator still loading), if describing
    /// it failed; the other fields are then empty.
    pub error: Option<ErrorCode>,
    /// Kafka's name for it: Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
    /// "consumer" for consumer groups; empty for a group that only ever had offsets committed.
    pub protocol_type: String,
    /// The protocol the members agreed on: for consumer groups, the partition assignor
    /// ("range", "cooperative-sticky").
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// A member of a group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// The assignment the leader gave it, in the protocol's own encoding (for consumer groups,
    /// Kafka's ConsumerProtocolAssignment, see [`crate::assignment`]); empty while the group
    /// rebalances.
    pub assignment: Vec<u8>,
}

/// The groups `list_groups` found, and whether every broker answered.
#[derive(Debug)]
pub struct GroupListing {
    pub groups: Vec<GroupInfo>,
    /// False when some broker did not answer in time, so a group may be missing.
    pub complete: bool,
}

/// A committed offset of a group, or the outcome of committing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    /// The broker's error for this partition.
    pub error: Option<ErrorCode>,
}

const LIST_CONSUMER_GROUP_OFFSETS: Operation<rdsys::rd_kafka_ListConsumerGroupOffsets_t> = Operation::new(
    "ListConsumerGroupOffsets",
    Op::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
    rdsys::rd_kafka_ListConsumerGroupOffsets,
    rdsys::rd_kafka_event_ListConsumerGroupOffsets_result,
);
const ALTER_CONSUMER_GROUP_OFFSETS: Operation<rdsys::rd_kafka_AlterConsumerGroupOffsets_t> = Operation::new(
    "AlterConsumerGroupOffsets",
    Op::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS,
    rdsys::rd_kafka_AlterConsumerGroupOffsets,
    rdsys::rd_kafka_event_AlterConsumerGroupOffsets_result,
);
const DELETE_GROUPS: Operation<rdsys::rd_kafka_DeleteGroup_t> = Operation::new(
    "DeleteGroups",
    Op::RD_KAFKA_ADMIN_OP_DELETEGROUPS,
    rdsys::rd_kafka_DeleteGroups,
    rdsys::rd_kafka_event_DeleteGroups_result,
);

/// A group as librdkafka's DescribeConsumerGroups shows it: for a group of KIP-848's consumer
/// protocol (ConsumerGroupDescribe) each member's assignment and the target the broker moves it
/// towards; librdkafka does not hand on the epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    /// "consumer" (KIP-848), "classic", or "unknown" (a broker that does not say).
    pub group_type: String,
    /// The assignor: the broker's (uniform, range) for a consumer group.
    pub assignor: String,
    pub members: Vec<ConsumerGroupMember>,
}

/// A member of a [`ConsumerGroupDescription`]: partitions as (topic, partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, i32)>,
    /// Consumer groups only: where the broker is moving the member's assignment.
    pub target_assignment: Option<Vec<(String, i32)>>,
}

const DESCRIBE_CONSUMER_GROUPS: Operation<c_char> = Operation::new(
    "DescribeConsumerGroups",
    Op::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
    describe_groups,
    rdsys::rd_kafka_event_DescribeConsumerGroups_result,
);

/// DescribeConsumerGroups as the other requests are sent (`ffi::Submit`): its array is of
/// `const char *`.
///
/// # Safety
///
/// As `rd_kafka_DescribeConsumerGroups`: `groups` points to `count` live C strings.
unsafe extern "C" fn describe_groups(
    client: *mut rdsys::rd_kafka_t,
    groups: *mut *mut c_char,
    count: usize,
    options: *const rdsys::rd_kafka_AdminOptions_t,
    queue: *mut rdsys::rd_kafka_queue_t,
) {
    // SAFETY: the caller's contract; librdkafka only reads the strings.
    unsafe { rdsys::rd_kafka_DescribeConsumerGroups(client, groups.cast(), count, options, queue) }
}

/// `group` through librdkafka's DescribeConsumerGroups: ConsumerGroupDescribe for a group of
/// KIP-848's protocol, DescribeGroups (librdkafka falls back) for a classic one.
pub fn describe_consumer_group<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<ConsumerGroupDescription, AdminError> {
    let names = [c_string(group)?];
    // SAFETY (read): the result is live during the call; its entries are group descriptions,
    // each with `member_count` members whose strings and partition lists live as long as it.
    request(client, &DESCRIBE_CONSUMER_GROUPS, timeout, &names, |result| unsafe {
        let descriptions = result_array(result, rdsys::rd_kafka_DescribeConsumerGroups_result_groups);
        let outcomes = descriptions
            .iter()
            .map(|&description| {
                let name = c_text(rdsys::rd_kafka_ConsumerGroupDescription_group_id(description));
                if let Some(error) = entry_error(rdsys::rd_kafka_ConsumerGroupDescription_error(description))
                {
                    return (name, Err(error));
                }
                (name, Ok(read_consumer_group(description)))
            })
            .collect();
        single(outcomes, group)
    })
}

/// One description of a DescribeConsumerGroups result, copied out.
///
/// # Safety
///
/// `description` must be a live group description.
unsafe fn read_consumer_group(
    description: *const rdsys::rd_kafka_ConsumerGroupDescription_t,
) -> ConsumerGroupDescription {
    // SAFETY: the caller's contract; members are indexed below their count, and each member's
    // strings and assignments live as long as the description.
    unsafe {
        let group_type = c_text(rdsys::rd_kafka_consumer_group_type_name(
            rdsys::rd_kafka_ConsumerGroupDescription_type(description),
        ))
        .to_lowercase();
        let assignor = c_text(rdsys::rd_kafka_ConsumerGroupDescription_partition_assignor(description));
        let members = (0..rdsys::rd_kafka_ConsumerGroupDescription_member_count(description))
            .map(|index| {
                let member = rdsys::rd_kafka_ConsumerGroupDescription_member(description, index);
                let instance_id = rdsys::rd_kafka_MemberDescription_group_instance_id(member);
                ConsumerGroupMember {
                    member_id: c_text(rdsys::rd_kafka_MemberDescription_consumer_id(member)),
                    instance_id: (!instance_id.is_null()).then(|| c_text(instance_id)),
                    client_id: c_text(rdsys::rd_kafka_MemberDescription_client_id(member)),
                    host: c_text(rdsys::rd_kafka_MemberDescription_host(member)),
                    assignment: member_partitions(rdsys::rd_kafka_MemberDescription_assignment(member))
                        .unwrap_or_default(),
                    target_assignment: member_partitions(
                        rdsys::rd_kafka_MemberDescription_target_assignment(member),
                    ),
                }
            })
            .collect();
        ConsumerGroupDescription { group_type, assignor, members }
    }
}

/// A member assignment's partitions; `None` for a null assignment (a classic group's target).
///
/// # Safety
///
/// `assignment` must be null or a live member assignment.
unsafe fn member_partitions(
    assignment: *const rdsys::rd_kafka_MemberAssignment_t,
) -> Option<Vec<(String, i32)>> {
    if assignment.is_null() {
        return None;
    }
    // SAFETY: the caller's contract; a non-null list holds `cnt` entries.
    unsafe {
        let list = rdsys::rd_kafka_MemberAssignment_partitions(assignment);
        if list.is_null() {
            return Some(Vec::new());
        }
        Some(
            raw_slice((*list).elems, (*list).cnt).iter().map(|tp| (c_text(tp.topic), tp.partition)).collect(),
        )
    }
}

/// Every group of the cluster, or only `group`, with its state and members: ListGroups to every
/// broker, then DescribeGroups of what they list (librdkafka's `rd_kafka_list_groups`, a
/// blocking call of its own rather than an admin request). A group no broker lists is not in the
/// answer.
///
/// Why not the `rdkafka` crate's `fetch_group_list`: its `GroupInfo` drops each group's error
/// code and panics on a name that is not UTF-8; this keeps the error and converts lossily.
pub fn list_groups<C: ClientContext>(
    client: &Client<C>,
    group: Option<&str>,
    timeout: Duration,
) -> Result<GroupListing, AdminError> {
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
            return Err(AdminError::Refused {
                code: ErrorCode(error as c_int),
                message: format!("no answer within {} ms", timeout.as_millis()),
            })
        }
        error => {
            // SAFETY: a null message is allowed.
            let message = unsafe { error_text(error as c_int, std::ptr::null()) };
            return Err(AdminError::Refused { code: ErrorCode(error as c_int), message });
        }
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
pub fn list_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<Vec<GroupOffset>, AdminError> {
    let name = c_string(group)?;
    // SAFETY: `name` outlives the call and librdkafka copies it; null partitions means "all".
    let list = unsafe {
        Owned::made(
            rdsys::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), std::ptr::null()),
            rdsys::rd_kafka_ListConsumerGroupOffsets_destroy,
            || "librdkafka refused the ListConsumerGroupOffsets request".to_string(),
        )
    }?;
    // SAFETY (read): the result is live during the call; its entries are group results.
    request(client, &LIST_CONSUMER_GROUP_OFFSETS, timeout, &[list], |result| unsafe {
        single(
            group_outcomes(result_array(result, rdsys::rd_kafka_ListConsumerGroupOffsets_result_groups)),
            group,
        )
    })
}

/// Commits `offsets` ((topic, partition, offset)) for `group` as an admin would: an OffsetCommit
/// with no member id and generation -1 (librdkafka's AlterConsumerGroupOffsets). Kafka accepts
/// it only while the group has no active members. Returns each partition's outcome.
pub fn alter_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    offsets: &[(String, i32, i64)],
    timeout: Duration,
) -> Result<Vec<GroupOffset>, AdminError> {
    let mut partitions = rdkafka::TopicPartitionList::with_capacity(offsets.len());
    for (topic, partition, offset) in offsets {
        partitions.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset)).map_err(
            |error| {
                AdminError::Invalid(format!("offset {offset} of {topic:?} partition {partition}: {error}"))
            },
        )?;
    }
    let name = c_string(group)?;
    // SAFETY: `name` and `partitions` outlive the call; librdkafka copies both.
    let alter = unsafe {
        Owned::made(
            rdsys::rd_kafka_AlterConsumerGroupOffsets_new(name.as_ptr(), partitions.ptr()),
            rdsys::rd_kafka_AlterConsumerGroupOffsets_destroy,
            || "librdkafka refused the AlterConsumerGroupOffsets request".to_string(),
        )
    }?;
    // SAFETY (read): the result is live during the call; its entries are group results.
    request(client, &ALTER_CONSUMER_GROUP_OFFSETS, timeout, &[alter], |result| unsafe {
        single(
            group_outcomes(result_array(result, rdsys::rd_kafka_AlterConsumerGroupOffsets_result_groups)),
            group,
        )
    })
}

/// Deletes `group` and its committed offsets (DeleteGroups). Kafka refuses while the group has
/// active members.
pub fn delete_group<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<(), AdminError> {
    // SAFETY: `rd_kafka_DeleteGroup_destroy` frees what `rd_kafka_DeleteGroup_new` makes.
    let delete =
        unsafe { named(group, rdsys::rd_kafka_DeleteGroup_new, rdsys::rd_kafka_DeleteGroup_destroy) }?;
    // SAFETY (read): the result is live during the call; its entries are group results.
    request(client, &DELETE_GROUPS, timeout, &[delete], |result| unsafe {
        single(group_outcomes(result_array(result, rdsys::rd_kafka_DeleteGroups_result_groups)), group)
            .map(drop)
    })
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
/// Every entry must be a live group result.
unsafe fn group_outcomes(
    results: &[*const rdsys::rd_kafka_group_result_t],
) -> Vec<(String, Result<Vec<GroupOffset>, AdminError>)> {
    results
        .iter()
        .map(|&result| {
            // SAFETY: each entry is a live group result; its name, error and partition list live
            // as long as it does. The partition list holds `cnt` entries, and error codes are
            // read as integers because a broker may send one this librdkafka has no name for.
            unsafe {
                let name = c_text(rdsys::rd_kafka_group_result_name(result));
                if let Some(error) = entry_error(rdsys::rd_kafka_group_result_error(result)) {
                    return (name, Err(error));
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
