//! The consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete.
//!
//! This broker coordinates every group itself (one node). JoinGroup and SyncGroup may wait for
//! other members: the coordinator parks a `oneshot` sender and the handler awaits it, so a
//! waiting member holds no thread.
//!
//! A call that changed what is stored of a group (a synced generation, a departure) takes the
//! group's snapshot under the group lock and writes it once the lock is let go, before it
//! answers (`store_changes`): a member told of a new generation finds it again after a
//! restart. The SyncGroup answers of a completed generation, the followers' too, are held by
//! the coordinator and sent once the leader's call has stored it, from the blocking task that
//! stores it, so they go out even if the leader's connection is gone by then.
//!
//! Authorization as in Kafka, before anything changes: the membership APIs (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) and OffsetCommit need READ on the group, OffsetFetch and
//! DescribeGroups DESCRIBE, DeleteGroups and OffsetDelete DELETE, all refused with
//! GROUP_AUTHORIZATION_FAILED; the topics of OffsetCommit and OffsetDelete need READ and those
//! of OffsetFetch DESCRIBE (TOPIC_AUTHORIZATION_FAILED for their partitions, or left out of a
//! fetch of every offset). FindCoordinator needs DESCRIBE on the group or transactional id it
//! names. ListGroups lists every group for DESCRIBE on the cluster, otherwise the groups the
//! principal may DESCRIBE.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use tidewater_kafka::kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use tidewater_kafka::kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use tidewater_kafka::kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use tidewater_kafka::kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use tidewater_kafka::kafka_protocol::messages::find_coordinator_response::{
    Coordinator, FindCoordinatorResponse,
};
use tidewater_kafka::kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use tidewater_kafka::kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use tidewater_kafka::kafka_protocol::messages::join_group_request::JoinGroupRequest;
use tidewater_kafka::kafka_protocol::messages::join_group_response::{
    JoinGroupResponse, JoinGroupResponseMember,
};
use tidewater_kafka::kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use tidewater_kafka::kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use tidewater_kafka::kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use tidewater_kafka::kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use tidewater_kafka::kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use tidewater_kafka::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use tidewater_kafka::kafka_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use tidewater_kafka::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use tidewater_kafka::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use tidewater_kafka::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use tidewater_kafka::kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use tidewater_kafka::kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use tidewater_kafka::kafka_protocol::messages::{BrokerId, GroupId, TopicName};
use tidewater_kafka::kafka_protocol::protocol::StrBytes;
use tidewater_kafka::{ConnectionInfo, ListenerInfo, ResponseError};
use tokio::sync::oneshot;

use super::{blocking, str_bytes};
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::{ApiError, Broker};
use crate::groups::coordinator::{JoinRequest, JoinResult};
use crate::groups::metadata::GroupChange;
use crate::groups::{CommittedOffset, GroupState};

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub(super) fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
    listener: &ListenerInfo,
    access: &Access,
) -> FindCoordinatorResponse {
    let config = &broker.config;
    // This broker coordinates groups and transactions alike, for whoever may describe them;
    // a refusal names no node (Kafka's Node.noNode).
    let answer = |key: &str| -> (BrokerId, StrBytes, i32, i16, Option<StrBytes>) {
        let resource_type = match request.key_type {
            KEY_TYPE_GROUP => Ok(ResourceType::Group),
            KEY_TYPE_TRANSACTION => Ok(ResourceType::TransactionalId),
            other => Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            )),
        };
        match resource_type.and_then(|resource_type| access.check(Operation::Describe, resource_type, key)) {
            Ok(()) => (
                BrokerId(config.node_id),
                str_bytes(listener.advertised_host.clone()),
                i32::from(listener.advertised_port),
                0,
                None,
            ),
            Err(error) => {
                (BrokerId(-1), str_bytes(""), -1, error.code.code(), Some(str_bytes(error.message)))
            }
        }
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (node_id, host, port, error, message) = answer(&key);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(error)
                    .with_error_message(message)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (node_id, host, port, error, message) = answer(&request.key);
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_error_message(message)
        .with_node_id(node_id)
        .with_host(host)
        .with_port(port)
}

pub(super) async fn join_group(
    broker: Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    connection: ConnectionInfo,
    client_id: String,
    access: Access,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    if let Err(refusal) = access.check(Operation::Read, ResourceType::Group, &group_id) {
        return JoinGroupResponse::default()
            .with_error_code(refusal.code.code())
            .with_generation_id(-1)
            .with_protocol_name(Some(str_bytes("")).filter(|_| version < 7));
    }
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id,
        client_host: format!("/{}", connection.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 had no rebalance timeout: it was the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        requires_known_member_id: version >= 4,
    };
    let (respond, result) = oneshot::channel();
    let changes = {
        let mut groups = broker.lock_groups();
        groups.join(&group_id, join, broker.now_ms(), respond);
        groups.take_changes()
    };
    store_changes(&broker, changes).await;
    let result = result.await.unwrap_or_else(|_| JoinResult {
        error: Some(ResponseError::RebalanceInProgress),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: String::new(),
        members: Vec::new(),
    });
    let members = result
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(instance_id.map(str_bytes))
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(result.error.map_or(0, |error| error.code()))
        .with_generation_id(result.generation_id)
        .with_protocol_type(result.protocol_type.map(str_bytes))
        // Before v7 the field is not nullable: an empty name stands for "none".
        .with_protocol_name(
            Some(str_bytes(result.protocol_name.unwrap_or_default()))
                .filter(|name| version < 7 || !name.is_empty()),
        )
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(members)
}

pub(super) async fn sync_group(
    broker: Arc<Broker>,
    request: SyncGroupRequest,
    access: Access,
) -> SyncGroupResponse {
    if let Err(refusal) = access.check(Operation::Read, ResourceType::Group, &request.group_id) {
        return SyncGroupResponse::default().with_error_code(refusal.code.code());
    }
    let (respond, result) = oneshot::channel();
    let assignments = request
        .assignments
        .into_iter()
        .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
        .collect();
    let (changes, answers) = {
        let mut groups = broker.lock_groups();
        groups.sync(
            &request.group_id.0,
            &request.member_id,
            request.generation_id,
            assignments,
            broker.now_ms(),
            respond,
        );
        (groups.take_changes(), groups.take_held_sync_answers())
    };
    if !changes.is_empty() || !answers.is_empty() {
        let broker = broker.clone();
        blocking(move || {
            broker.store_group_changes(changes);
            for (respond, answer) in answers {
                let _ = respond.send(answer);
            }
        })
        .await;
    }
    match result.await.unwrap_or(Err(ResponseError::RebalanceInProgress)) {
        Ok((protocol_type, protocol_name, assignment)) => SyncGroupResponse::default()
            .with_protocol_type(protocol_type.map(str_bytes))
            .with_protocol_name(protocol_name.map(str_bytes))
            .with_assignment(assignment),
        Err(error) => SyncGroupResponse::default().with_error_code(error.code()),
    }
}

pub(super) fn heartbeat(broker: &Broker, request: HeartbeatRequest, access: &Access) -> HeartbeatResponse {
    let outcome = access
        .check(Operation::Read, ResourceType::Group, &request.group_id)
        .map_err(|refusal| refusal.code)
        .and_then(|()| {
            broker.lock_groups().heartbeat(
                &request.group_id.0,
                &request.member_id,
                request.generation_id,
                broker.now_ms(),
            )
        });
    HeartbeatResponse::default().with_error_code(outcome.err().map_or(0, |error| error.code()))
}

/// Writes group snapshots taken under the group lock (`Coordinator::take_changes`), on the
/// blocking pool; nothing to do, and no lock taken, when nothing changed.
pub(super) async fn store_changes(broker: &Arc<Broker>, changes: Vec<GroupChange>) {
    if changes.is_empty() {
        return;
    }
    let broker = broker.clone();
    blocking(move || broker.store_group_changes(changes)).await;
}

pub(super) async fn leave_group(
    broker: Arc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
    access: Access,
) -> LeaveGroupResponse {
    if let Err(refusal) = access.check(Operation::Read, ResourceType::Group, &request.group_id) {
        return LeaveGroupResponse::default().with_error_code(refusal.code.code());
    }
    let now = broker.now_ms();
    let (response, changes) = {
        let mut groups = broker.lock_groups();
        let response = leave_members(&mut groups, request, version, now);
        (response, groups.take_changes())
    };
    store_changes(&broker, changes).await;
    response
}

fn leave_members(
    groups: &mut crate::groups::Coordinator,
    request: LeaveGroupRequest,
    version: i16,
    now: i64,
) -> LeaveGroupResponse {
    if version < 3 {
        let outcome = groups.leave(&request.group_id.0, &request.member_id, None, now);
        return LeaveGroupResponse::default().with_error_code(outcome.err().map_or(0, |error| error.code()));
    }
    let members = request
        .members
        .into_iter()
        .map(|member| {
            let outcome = groups.leave(
                &request.group_id.0,
                &member.member_id,
                member.group_instance_id.as_deref(),
                now,
            );
            MemberResponse::default()
                .with_member_id(member.member_id)
                .with_group_instance_id(member.group_instance_id)
                .with_error_code(outcome.err().map_or(0, |error| error.code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// A partition index and the error its commit got, if any.
type PartitionOutcome = (i32, Option<ResponseError>);

pub(super) async fn offset_commit(
    broker: Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
    access: Access,
) -> OffsetCommitResponse {
    blocking(move || {
        let group_id = request.group_id.0.to_string();
        let now = broker.now_ms();
        let group_allowed =
            access.check(Operation::Read, ResourceType::Group, &group_id).map_err(|refusal| refusal.code);
        let member_checked = group_allowed.and_then(|()| {
            broker.lock_groups().check_any_commit(
                &group_id,
                &request.member_id,
                request.generation_id_or_member_epoch,
                version,
            )
        });
        let mut entries = Vec::new();
        let mut results: Vec<(TopicName, Vec<PartitionOutcome>)> = Vec::new();
        for topic in &request.topics {
            // Refusals of the group, then of the topic, come before what the coordinator says.
            let check = group_allowed
                .and_then(|()| {
                    access
                        .check(Operation::Read, ResourceType::Topic, &topic.name)
                        .map_err(|refusal| refusal.code)
                })
                .and(member_checked);
            let mut partitions = Vec::new();
            for partition in &topic.partitions {
                let error = match &check {
                    Err(error) => Some(*error),
                    Ok(()) if broker.partition(&topic.name.0, partition.partition_index).is_err() => {
                        Some(ResponseError::UnknownTopicOrPartition)
                    }
                    Ok(()) => {
                        entries.push((
                            (topic.name.0.to_string(), partition.partition_index),
                            Some(CommittedOffset {
                                offset: partition.committed_offset,
                                leader_epoch: partition.committed_leader_epoch,
                                metadata: partition
                                    .committed_metadata
                                    .as_ref()
                                    .map(|metadata| metadata.to_string()),
                                commit_timestamp_ms: now,
                            }),
                        ));
                        None
                    }
                };
                partitions.push((partition.partition_index, error));
            }
            results.push((topic.name.clone(), partitions));
        }
        let written = broker.lock_offsets().write(&group_id, entries);
        if let Err(error) = &written {
            tracing::error!(group = %group_id, %error, "could not store committed offsets");
        }
        let topics = results
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, error)| {
                        let error =
                            error.or(written.as_ref().err().map(|_| ResponseError::KafkaStorageError));
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(error.map_or(0, |error| error.code()))
                    })
                    .collect();
                OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    })
    .await
}

/// A committed offset as OffsetFetch reports it: (offset, leader epoch, metadata); -1 and no
/// metadata when nothing was committed.
fn committed_for(broker: &Broker, group: &str, topic: &str, partition: i32) -> (i64, i32, Option<String>) {
    match broker.lock_offsets().get(group, topic, partition) {
        Some(committed) => (committed.offset, committed.leader_epoch, committed.metadata.clone()),
        None => (-1, -1, Some(String::new())),
    }
}

/// The partitions OffsetFetch asked about, or every partition the group committed when `None`.
fn requested_partitions(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<i32>)> {
    match topics {
        Some(topics) => topics,
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for (topic, partition, _) in broker.lock_offsets().group(group) {
                by_topic.entry(topic.to_string()).or_default().push(partition);
            }
            by_topic.into_iter().collect()
        }
    }
}

/// One partition's committed offset as OffsetFetch reports it.
struct FetchedOffset {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    error: i16,
}

/// The committed offsets OffsetFetch answers for one group, by topic, whatever the version, or
/// the group's refusal. Topics that may not be described answer TOPIC_AUTHORIZATION_FAILED
/// when named and are left out of a fetch of every offset.
fn fetch_group_offsets(
    broker: &Broker,
    access: &Access,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, ApiError> {
    access.check(Operation::Describe, ResourceType::Group, group)?;
    let every_topic = wanted.is_none();
    let fetched = requested_partitions(broker, group, wanted)
        .into_iter()
        .filter_map(|(topic, partitions)| {
            if every_topic && !access.allows(Operation::Describe, ResourceType::Topic, &topic) {
                return None;
            }
            let allowed = access.check(Operation::Describe, ResourceType::Topic, &topic);
            let offsets = partitions
                .into_iter()
                .map(|partition| match &allowed {
                    Ok(()) => {
                        let (offset, leader_epoch, metadata) =
                            committed_for(broker, group, &topic, partition);
                        FetchedOffset { partition, offset, leader_epoch, metadata, error: 0 }
                    }
                    Err(refusal) => FetchedOffset {
                        partition,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: Some(String::new()),
                        error: refusal.code.code(),
                    },
                })
                .collect();
            Some((topic, offsets))
        })
        .collect();
    Ok(fetched)
}

pub(super) fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
    access: &Access,
) -> OffsetFetchResponse {
    // v8 and later ask about several groups at once, in their own response types.
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                let wanted = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                        .collect()
                });
                let response = OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone());
                let fetched = match fetch_group_offsets(broker, access, &group.group_id.0, wanted) {
                    Ok(fetched) => fetched,
                    Err(refusal) => return response.with_error_code(refusal.code.code()),
                };
                // v9: a member of a consumer-protocol group fetches at its member epoch.
                let member_checked = broker.lock_groups().consumer().check_fetch(
                    &group.group_id.0,
                    group.member_id.as_deref(),
                    group.member_epoch,
                );
                if let Some(Err(error)) = member_checked {
                    return response.with_error_code(error.code());
                }
                let topics = fetched
                    .into_iter()
                    .map(|(topic, offsets)| {
                        let partitions = offsets
                            .into_iter()
                            .map(|fetched| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(fetched.partition)
                                    .with_committed_offset(fetched.offset)
                                    .with_committed_leader_epoch(fetched.leader_epoch)
                                    .with_metadata(fetched.metadata.map(str_bytes))
                                    .with_error_code(fetched.error)
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
                response.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics.into_iter().map(|topic| (topic.name.0.to_string(), topic.partition_indexes)).collect()
    });
    let (fetched, group_error) =
        match fetch_group_offsets(broker, access, &request.group_id.0, wanted.clone()) {
            Ok(fetched) => (fetched, 0),
            // v2 and later carry a group's error at the top; v1 has only the partitions' codes.
            Err(refusal) if version >= 2 => (Vec::new(), refusal.code.code()),
            Err(refusal) => {
                let refused = |partition| FetchedOffset {
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                    error: refusal.code.code(),
                };
                let topics = wanted.unwrap_or_default().into_iter();
                (
                    topics
                        .map(|(topic, partitions)| (topic, partitions.into_iter().map(refused).collect()))
                        .collect(),
                    0,
                )
            }
        };
    let topics = fetched
        .into_iter()
        .map(|(topic, offsets)| {
            let partitions = offsets
                .into_iter()
                .map(|fetched| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(fetched.partition)
                        .with_committed_offset(fetched.offset)
                        .with_committed_leader_epoch(fetched.leader_epoch)
                        .with_metadata(fetched.metadata.map(str_bytes))
                        .with_error_code(fetched.error)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_error_code(group_error).with_topics(topics)
}

pub(super) fn list_groups(
    broker: &Broker,
    request: ListGroupsRequest,
    access: &Access,
) -> ListGroupsResponse {
    let every_group = access.allows_cluster(Operation::Describe);
    // (id, protocol type, state, group type): classic groups, then consumer-protocol groups
    // (KIP-848, type "consumer" in v5; their protocol type is "consumer" as in Kafka 4.0).
    let mut listed: Vec<(String, String, &'static str, &'static str)> = {
        let groups = broker.lock_groups();
        let mut listed: Vec<_> = groups
            .list()
            .into_iter()
            .map(|(id, protocol_type, state)| (id, protocol_type, state.name(), GROUP_TYPE_CLASSIC))
            .collect();
        listed.extend(
            groups
                .consumer()
                .list()
                .into_iter()
                .map(|(id, state)| (id, "consumer".to_string(), state.name(), GROUP_TYPE_CONSUMER)),
        );
        listed
    };
    // Groups with only committed offsets are listed as Empty, as Kafka lists them.
    for group in broker.lock_offsets().groups() {
        if !listed.iter().any(|(id, ..)| *id == group) {
            listed.push((group, "consumer".to_string(), GroupState::Empty.name(), GROUP_TYPE_CLASSIC));
        }
    }
    let groups = listed
        .into_iter()
        .filter(|(_, _, state, _)| {
            request.states_filter.is_empty()
                || request.states_filter.iter().any(|wanted| wanted.eq_ignore_ascii_case(state))
        })
        .filter(|(.., group_type)| {
            request.types_filter.is_empty()
                || request.types_filter.iter().any(|wanted| wanted.eq_ignore_ascii_case(group_type))
        })
        .filter(|(id, ..)| every_group || access.allows(Operation::Describe, ResourceType::Group, id))
        .map(|(id, protocol_type, state, group_type)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(str_bytes(state))
                .with_group_type(str_bytes(group_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// ListGroups v5's group types.
const GROUP_TYPE_CLASSIC: &str = "classic";
const GROUP_TYPE_CONSUMER: &str = "consumer";

pub(super) fn describe_groups(
    broker: &Broker,
    request: DescribeGroupsRequest,
    access: &Access,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            if let Err(refusal) = access.check(Operation::Describe, ResourceType::Group, &group_id) {
                return DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(refusal.code.code())
                    .with_group_state(str_bytes(""));
            }
            let described = broker.lock_groups().describe(&group_id.0);
            let has_offsets = !broker.lock_offsets().group(&group_id.0).is_empty();
            let group = DescribedGroup::default().with_group_id(group_id.clone());
            let group = if request.include_authorized_operations {
                group.with_authorized_operations(access.authorized_operations(ResourceType::Group, &group_id))
            } else {
                group
            };
            let consumer_group = broker.lock_groups().consumer().describe(&group_id.0);
            if let Some(description) = consumer_group {
                return super::consumer_groups::classic_description(broker, group, description, access);
            }
            match described {
                Some(description) => {
                    let members = description
                        .members
                        .into_iter()
                        .map(|member| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(member.member_id))
                                .with_group_instance_id(member.group_instance_id.map(str_bytes))
                                .with_client_id(str_bytes(member.client_id))
                                .with_client_host(str_bytes(member.client_host))
                                .with_member_metadata(member.metadata)
                                .with_member_assignment(member.assignment)
                        })
                        .collect();
                    group
                        .with_group_state(str_bytes(description.state.name()))
                        .with_protocol_type(str_bytes(description.protocol_type))
                        .with_protocol_data(str_bytes(description.protocol_name))
                        .with_members(members)
                }
                None if has_offsets => {
                    group.with_group_state(str_bytes("Empty")).with_protocol_type(str_bytes("consumer"))
                }
                None => group.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete_groups(
    broker: Arc<Broker>,
    request: DeleteGroupsRequest,
    access: Access,
) -> DeleteGroupsResponse {
    blocking(move || {
        let results = request
            .groups_names
            .into_iter()
            .map(|group_id| {
                let error = match access.check(Operation::Delete, ResourceType::Group, &group_id) {
                    Ok(()) => delete_group(&broker, &group_id.0),
                    Err(refusal) => Some(refusal.code),
                };
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(error.map_or(0, |error| error.code()))
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    })
    .await
}

fn delete_group(broker: &Broker, group: &str) -> Option<ResponseError> {
    if broker.lock_groups().has_members(group) {
        return Some(ResponseError::NonEmptyGroup);
    }
    let mut offsets = broker.lock_offsets();
    let keys: Vec<_> = offsets
        .group(group)
        .into_iter()
        .map(|(topic, partition, _)| ((topic.to_string(), partition), None))
        .collect();
    if keys.is_empty() {
        return Some(ResponseError::GroupIdNotFound);
    }
    offsets.write(group, keys).err().map(|_| ResponseError::KafkaStorageError)
}

pub(super) async fn offset_delete(
    broker: Arc<Broker>,
    request: OffsetDeleteRequest,
    access: Access,
) -> OffsetDeleteResponse {
    blocking(move || {
        let group = request.group_id.0.to_string();
        if let Err(refusal) = access.check(Operation::Delete, ResourceType::Group, &group) {
            return OffsetDeleteResponse::default().with_error_code(refusal.code.code());
        }
        if broker.lock_groups().has_members(&group) {
            // Kafka refuses only for topics the group subscribes to; members' subscriptions are
            // opaque here, so any active group refuses.
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupSubscribedToTopic.code());
        }
        if broker.lock_offsets().group(&group).is_empty() {
            return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code());
        }
        // Offsets of topics that may not be read are not deleted.
        let readable: Vec<Result<(), ApiError>> = request
            .topics
            .iter()
            .map(|topic| access.check(Operation::Read, ResourceType::Topic, &topic.name))
            .collect();
        let keys: Vec<_> = request
            .topics
            .iter()
            .zip(&readable)
            .filter(|(_, readable)| readable.is_ok())
            .flat_map(|(topic, _)| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| ((topic.name.0.to_string(), partition.partition_index), None))
            })
            .collect();
        let written = broker.lock_offsets().write(&group, keys);
        let error = written.err().map_or(0, |_| ResponseError::KafkaStorageError.code());
        let topics = request
            .topics
            .into_iter()
            .zip(readable)
            .map(|(topic, readable)| {
                let error = readable.map_or_else(|refusal| refusal.code.code(), |()| error);
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default().with_name(topic.name).with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    })
    .await
}
