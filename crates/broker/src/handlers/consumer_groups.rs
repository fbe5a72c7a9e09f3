//! KIP-848's consumer group APIs: ConsumerGroupHeartbeat (v1, the version librdkafka 2.12+
//! sends; the member makes up its own id) and ConsumerGroupDescribe (v0-v1), over the state
//! machine in `groups::consumer_group`. Also the classic forms of a consumer group that older
//! tools read: DescribeGroups answers for one with its members' subscriptions and assignments
//! encoded as the classic consumer protocol's bytes, as Kafka 4.0 does.
//!
//! Authorization as in Kafka: ConsumerGroupHeartbeat needs READ on the group
//! (GROUP_AUTHORIZATION_FAILED) and DESCRIBE on every topic it subscribes to by name
//! (TOPIC_AUTHORIZATION_FAILED), and a regular expression matches only topics the member may
//! describe; ConsumerGroupDescribe (and DescribeGroups of a consumer group) needs DESCRIBE on
//! the group and on every topic its members subscribe to or are assigned.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tidewater_kafka::kafka_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use tidewater_kafka::kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, ConsumerGroupDescribeResponse,
};
use tidewater_kafka::kafka_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use tidewater_kafka::kafka_protocol::messages::consumer_group_heartbeat_response::{
    self as heartbeat, ConsumerGroupHeartbeatResponse,
};
use tidewater_kafka::kafka_protocol::messages::consumer_protocol_assignment::{
    self as protocol_assignment, ConsumerProtocolAssignment,
};
use tidewater_kafka::kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use tidewater_kafka::kafka_protocol::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use tidewater_kafka::kafka_protocol::messages::TopicName;
use tidewater_kafka::kafka_protocol::protocol::Encodable;
use tidewater_kafka::{ConnectionInfo, ResponseError};
use uuid::Uuid;

use super::str_bytes;
use crate::acl::{is_internal_topic, Access, Operation, ResourceType};
use crate::broker::Broker;
use crate::groups::assignor::{Assignment, TopicPartition};
use crate::groups::consumer_group::{GroupDescription, Heartbeat, TopicMetadata};

/// ConsumerGroupDescribe's member type of a consumer-protocol member (v1).
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub(super) async fn heartbeat(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    connection: &ConnectionInfo,
    client_id: String,
    access: &Access,
) -> ConsumerGroupHeartbeatResponse {
    let refused = |error: ResponseError, message: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if let Err(refusal) = access.check(Operation::Read, ResourceType::Group, &request.group_id) {
        return refused(refusal.code, refusal.message);
    }
    let names: Option<Vec<String>> = request
        .subscribed_topic_names
        .map(|names| names.into_iter().map(|name| name.0.to_string()).collect());
    // A member may only learn of topics it may describe, so a subscription naming another is
    // refused as a whole, as Kafka does.
    if let Some(denied) =
        names.iter().flatten().find(|name| !access.allows(Operation::Describe, ResourceType::Topic, name))
    {
        return refused(
            ResponseError::TopicAuthorizationFailed,
            format!("not allowed to describe subscribed topic {denied}"),
        );
    }
    let owned = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|topic| {
                let topic_id = topic.topic_id;
                topic.partitions.into_iter().map(move |partition| TopicPartition { topic_id, partition })
            })
            .collect()
    });
    let request_heartbeat = Heartbeat {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|id| id.to_string()),
        rack_id: request.rack_id.map(|id| id.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: names,
        subscribed_topic_regex: request.subscribed_topic_regex.map(|regex| regex.to_string()),
        server_assignor: request.server_assignor.map(|name| name.to_string()),
        owned,
        client_id,
        client_host: format!("/{}", connection.peer.ip()),
    };
    let now = broker.now_ms();
    let (outcome, changes) = {
        let topics = BrokerTopics { broker, access };
        let mut groups = broker.lock_groups();
        let outcome = groups.consumer_heartbeat(&request.group_id, request_heartbeat, &topics, now);
        (outcome, groups.take_changes())
    };
    // A new epoch or assignment is on disk before the member hears of it.
    super::groups::store_changes(broker, changes).await;
    match outcome {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
            .with_assignment(answer.assignment.map(|assignment| {
                let topic_partitions = by_topic(&assignment)
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        heartbeat::TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_partitions(partitions)
                    })
                    .collect();
                heartbeat::Assignment::default().with_topic_partitions(topic_partitions)
            })),
        Err(refusal) => refused(refusal.error, refusal.message),
    }
}

/// The broker's topics as the state machine sees them for one heartbeat: a regular expression
/// matches only topics the member's principal may describe, never internal ones (as Kafka leaves
/// its internal topics out of pattern subscriptions).
struct BrokerTopics<'a> {
    broker: &'a Broker,
    access: &'a Access,
}

impl TopicMetadata for BrokerTopics<'_> {
    fn topic(&self, name: &str) -> Option<(Uuid, i32)> {
        let topic = self.broker.topic(name)?;
        Some((topic.id, i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX)))
    }

    fn names(&self) -> Vec<String> {
        self.broker
            .topics()
            .iter()
            .map(|topic| topic.name.clone())
            .filter(|name| !is_internal_topic(name))
            .filter(|name| self.access.allows(Operation::Describe, ResourceType::Topic, name))
            .collect()
    }
}

/// An assignment as the protocol lists it: partitions grouped by topic id.
fn by_topic(assignment: &Assignment) -> BTreeMap<Uuid, Vec<i32>> {
    let mut topics: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for tp in assignment {
        topics.entry(tp.topic_id).or_default().push(tp.partition);
    }
    topics
}

/// Topic ids to names, for every topic of the broker (assignments may name a topic that the
/// group's subscriptions no longer do).
fn topic_names(broker: &Broker) -> BTreeMap<Uuid, String> {
    broker.topics().iter().map(|topic| (topic.id, topic.name.clone())).collect()
}

pub(super) fn describe(
    broker: &Broker,
    request: ConsumerGroupDescribeRequest,
    version: i16,
    access: &Access,
) -> ConsumerGroupDescribeResponse {
    let names = topic_names(broker);
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            let answer = describe::DescribedGroup::default().with_group_id(group_id.clone());
            if let Err(refusal) = access.check(Operation::Describe, ResourceType::Group, &group_id) {
                return answer
                    .with_error_code(refusal.code.code())
                    .with_error_message(Some(str_bytes(refusal.message)));
            }
            let Some(description) = broker.lock_groups().consumer().describe(&group_id) else {
                // Kafka answers so for a classic group and for one that does not exist alike.
                return answer
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(format!(
                        "Group {} is not a consumer group.",
                        group_id.0
                    ))))
                    .with_group_state(str_bytes("Dead"));
            };
            if let Some(topic) = undescribable_topic(&description, &names, access) {
                return answer
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(format!(
                        "not allowed to describe a topic of the group: {topic}"
                    ))));
            }
            let answer = if request.include_authorized_operations {
                answer
                    .with_authorized_operations(access.authorized_operations(ResourceType::Group, &group_id))
            } else {
                answer
            };
            described_group(answer, description, &names, version)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// A topic the group's members subscribe to or are assigned that `access` may not describe: the
/// group is then refused with TOPIC_AUTHORIZATION_FAILED, as Kafka does, rather than reveal the
/// name.
fn undescribable_topic(
    description: &GroupDescription,
    names: &BTreeMap<Uuid, String>,
    access: &Access,
) -> Option<String> {
    description
        .members
        .iter()
        .flat_map(|member| {
            let assigned = [&member.assignment, &member.target_assignment]
                .into_iter()
                .flat_map(|assignment| assignment.iter().filter_map(|tp| names.get(&tp.topic_id)));
            member.subscribed_topic_names.iter().chain(assigned)
        })
        .find(|name| !access.allows(Operation::Describe, ResourceType::Topic, name))
        .cloned()
}

fn described_group(
    answer: describe::DescribedGroup,
    description: GroupDescription,
    names: &BTreeMap<Uuid, String>,
    version: i16,
) -> describe::DescribedGroup {
    let listed = |assignment: &Assignment| {
        let topic_partitions = by_topic(assignment)
            .into_iter()
            .map(|(topic_id, partitions)| {
                describe::TopicPartitions::default()
                    .with_topic_id(topic_id)
                    .with_topic_name(TopicName(str_bytes(names.get(&topic_id).cloned().unwrap_or_default())))
                    .with_partitions(partitions)
            })
            .collect();
        describe::Assignment::default().with_topic_partitions(topic_partitions)
    };
    let members = description
        .members
        .iter()
        .map(|member| {
            let described = describe::Member::default()
                .with_member_id(str_bytes(member.member_id.clone()))
                .with_instance_id(member.instance_id.clone().map(str_bytes))
                .with_rack_id(member.rack_id.clone().map(str_bytes))
                .with_member_epoch(member.member_epoch)
                .with_client_id(str_bytes(member.client_id.clone()))
                .with_client_host(str_bytes(member.client_host.clone()))
                .with_subscribed_topic_names(
                    member
                        .subscribed_topic_names
                        .iter()
                        .map(|name| TopicName(str_bytes(name.clone())))
                        .collect(),
                )
                .with_assignment(listed(&member.assignment))
                .with_target_assignment(listed(&member.target_assignment));
            if version >= 1 {
                described.with_member_type(MEMBER_TYPE_CONSUMER)
            } else {
                described
            }
        })
        .collect();
    answer
        .with_group_state(str_bytes(description.state.name()))
        .with_group_epoch(description.group_epoch)
        .with_assignment_epoch(description.assignment_epoch)
        .with_assignor_name(str_bytes(description.assignor.name()))
        .with_members(members)
}

/// A consumer group as the classic DescribeGroups shows it (Kafka 4.0's form): protocol type
/// "consumer", the assignor as the protocol, and each member's subscription and assignment in
/// the classic consumer protocol's encoding, so tools that decode those work unchanged.
pub(super) fn classic_description(
    broker: &Broker,
    group: DescribedGroup,
    description: GroupDescription,
    access: &Access,
) -> DescribedGroup {
    let names = topic_names(broker);
    if undescribable_topic(&description, &names, access).is_some() {
        return group
            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
            .with_group_state(str_bytes(""));
    }
    let members = description
        .members
        .iter()
        .map(|member| {
            let subscription = ConsumerProtocolSubscription::default().with_topics(
                member.subscribed_topic_names.iter().map(|name| str_bytes(name.clone())).collect(),
            );
            let assigned = by_topic(&member.assignment)
                .into_iter()
                .filter_map(|(topic_id, partitions)| {
                    let name = names.get(&topic_id)?;
                    Some(
                        protocol_assignment::TopicPartition::default()
                            .with_topic(TopicName(str_bytes(name.clone())))
                            .with_partitions(partitions),
                    )
                })
                .collect();
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(assigned);
            DescribedGroupMember::default()
                .with_member_id(str_bytes(member.member_id.clone()))
                .with_group_instance_id(member.instance_id.clone().map(str_bytes))
                .with_client_id(str_bytes(member.client_id.clone()))
                .with_client_host(str_bytes(member.client_host.clone()))
                .with_member_metadata(versioned(&subscription))
                .with_member_assignment(versioned(&assignment))
        })
        .collect();
    group
        .with_group_state(str_bytes(description.state.name()))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocol_data(str_bytes(description.assignor.name()))
        .with_members(members)
}

/// The classic consumer protocol's encoding: a version (0, which every client reads) and the
/// message in that version.
fn versioned(message: &impl Encodable) -> Bytes {
    let mut bytes = BytesMut::new();
    bytes.put_i16(0);
    // Encoding into a growable buffer fails only for a message that version cannot carry,
    // which these, built above from version 0 fields, are not.
    if let Err(error) = message.encode(&mut bytes, 0) {
        tracing::error!(%error, "could not encode a consumer protocol message");
        return Bytes::new();
    }
    bytes.freeze()
}
