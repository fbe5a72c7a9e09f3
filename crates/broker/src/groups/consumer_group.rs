//! KIP-848's consumer group protocol as a state machine: members send ConsumerGroupHeartbeat,
//! the coordinator computes the assignment (server-side assignors, `assignor.rs`) and moves each
//! member towards it incrementally. No rebalance stops the group: a member keeps consuming the
//! partitions it keeps, gives up only what moves, and gets a partition only once its previous
//! owner said it has let go of it.
//!
//! Three epochs order everything:
//! - the **group epoch** goes up whenever what the assignment depends on changes (a member
//!   joins or leaves, a subscription or a subscribed topic's partition count changes);
//! - the **target assignment epoch** is the group epoch the current target was computed for;
//!   a heartbeat that finds it behind recomputes the target first;
//! - each **member epoch** is the target epoch the member has caught up with. Requests naming
//!   another epoch are fenced (FENCED_MEMBER_EPOCH), and commits of an old one are stale
//!   (STALE_MEMBER_EPOCH).
//!
//! Reconciling a member (Kafka's `CurrentAssignmentBuilder`), on each of its heartbeats:
//!
//! ```text
//!   Stable ──target moved──▶ partitions to give up? ──yes──▶ UnrevokedPartitions (same epoch,
//!     ▲                              │ no                       sent only what it keeps)
//!     │                              ▼                                │ heartbeat whose owned
//!     │     all its target free? ◀── new epoch, takes what is free ◀──┘ partitions left them
//!     └──────── yes                  │ no
//!                                    ▼
//!                         UnreleasedPartitions (gets the rest on later heartbeats, once
//!                         their previous owners released them)
//! ```
//!
//! A partition is *owned* by a member while it is in its assigned set or its set pending
//! revocation; it is given to a member only when no other member owns it. That is the one
//! invariant that keeps two consumers off one partition, checked after every change in debug
//! builds and by the model test below.
//!
//! Members leave with epoch -1; a static member (with an instance id) leaves with -2 and keeps
//! its place and partitions until its session times out, so the same instance id rejoining in
//! time takes them back without moving anything. Silent members are removed when their session
//! times out, members that do not give up partitions within their rebalance timeout too.
//!
//! A member subscribes by topic names, by a regular expression (RE2 syntax, matching whole topic
//! names), or both. A regular expression is resolved against the topics the member's heartbeat
//! may see (`TopicMetadata::names`: what its principal may describe, internal topics left out),
//! again on each of its heartbeats, so a topic created later is picked up.
//!
//! No I/O and no clock: `now_ms` is passed in, topic metadata through `TopicMetadata`, and
//! `tick` handles timeouts. Groups survive a broker restart as records (`metadata.rs`): a
//! heartbeat or expiry that changes an epoch, an assignment, a subscription or the membership
//! marks its group (`take_changed`), and the coordinator hands out its snapshot (`record`);
//! `restore` loads it with every session starting at load time, so members carry on at their
//! epochs. A heartbeat that changes nothing marks nothing.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use tidewater_kafka::ResponseError;
use uuid::Uuid;

use super::assignor::{Assignment, Assignor, MemberSubscription, TopicPartition};
use super::metadata::{ConsumerGroupRecord, ConsumerMemberRecord, TopicPartitions};

/// The member epoch of a member leaving the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// The member epoch of a static member leaving for now (it may come back with its instance id).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// The most topics one member may subscribe to by name: every heartbeat that changes a
/// subscription looks each of the group's topics up, so a subscription is bounded here rather
/// than only by the request size.
pub const MAX_SUBSCRIBED_TOPIC_NAMES: usize = 10_000;

/// The longest regular expression a member may subscribe with, and the most memory its
/// compiled form may take: a member's expression is matched against every topic name on each
/// of its heartbeats.
pub const MAX_TOPIC_REGEX_BYTES: usize = 1_000;
const TOPIC_REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// What the state machine needs to know of topics, from the broker.
pub trait TopicMetadata {
    /// A topic's id and partition count, or `None` when it does not exist.
    fn topic(&self, name: &str) -> Option<(Uuid, i32)>;
    /// The topics a regular expression of the heartbeating member may match.
    fn names(&self) -> Vec<String>;
}

/// Settings of consumer-protocol groups, as Kafka's `group.consumer.*` broker configs.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`: a member not heard from for this long is removed.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: how often members are told to heartbeat.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub max_members: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig { session_timeout_ms: 45_000, heartbeat_interval_ms: 5_000, max_members: 1_000 }
    }
}

/// A ConsumerGroupHeartbeat as the state machine needs it (topics by name, partitions by id).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; `None` when it did not say.
    pub owned: Option<Vec<TopicPartition>>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat that was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's whole assignment, when it changed (or the member asked in full).
    pub assignment: Option<Assignment>,
}

/// A refused heartbeat: the error code and what to tell the client.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatRefusal {
    pub error: ResponseError,
    pub message: String,
}

fn refuse(error: ResponseError, message: impl Into<String>) -> HeartbeatRefusal {
    HeartbeatRefusal { error, message: message.into() }
}

/// Where a member is in catching up with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// It must give up partitions before it moves to the new epoch.
    UnrevokedPartitions,
    /// It is at the new epoch but waits for partitions other members still own.
    UnreleasedPartitions,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    subscribed_topic_names: BTreeSet<String>,
    /// The regular expression as the member sent it, compiled to match whole names.
    subscribed_topic_regex: Option<(String, Regex)>,
    /// The topics the regular expression matched at the member's last heartbeat.
    regex_topics: BTreeSet<String>,
    server_assignor: Option<Assignor>,
    rebalance_timeout_ms: i32,
    member_epoch: i32,
    previous_member_epoch: i32,
    state: MemberState,
    assigned: Assignment,
    pending_revocation: Assignment,
    last_heartbeat_ms: i64,
    /// UnrevokedPartitions: by when the member must have given them up.
    revocation_deadline_ms: i64,
}

impl Member {
    /// The topics it subscribes to: by name, and those its regular expression matched.
    fn subscribed(&self) -> impl Iterator<Item = &String> {
        self.subscribed_topic_names.iter().chain(&self.regex_topics)
    }
}

/// A member's regular expression, matching whole topic names (as Kafka's `matches()`), or
/// INVALID_REGULAR_EXPRESSION.
fn compile_topic_regex(source: &str) -> Result<Regex, HeartbeatRefusal> {
    regex::RegexBuilder::new(&format!("^(?:{source})$"))
        .size_limit(TOPIC_REGEX_SIZE_LIMIT_BYTES)
        .build()
        .map_err(|error| {
            refuse(
                ResponseError::InvalidRegularExpression,
                format!("SubscribedTopicRegex {source:?}: {error}"),
            )
        })
}

#[derive(Debug, Default)]
struct Group {
    group_epoch: i32,
    assignment_epoch: i32,
    target: BTreeMap<String, Assignment>,
    members: BTreeMap<String, Member>,
    /// The subscribed topics as last seen: name to (id, partition count).
    topics: BTreeMap<String, (Uuid, i32)>,
    /// The assignor the current target was computed with.
    assignor: Option<Assignor>,
}

/// The state a consumer group shows in ListGroups and ConsumerGroupDescribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    /// The group epoch is ahead of the target: a heartbeat will compute the new target.
    Assigning,
    /// Some member has not caught up with the target.
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    /// The name Kafka tools show.
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// What ConsumerGroupDescribe shows of a member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub state: MemberState,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target_assignment: Assignment,
}

/// What ConsumerGroupDescribe shows of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDescription {
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: Assignor,
    pub members: Vec<MemberDescription>,
    /// Topic id to name, for the topics the group subscribes to.
    pub topic_names: BTreeMap<Uuid, String>,
}

/// Every consumer-protocol group this broker coordinates.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    config: ConsumerGroupConfig,
    groups: BTreeMap<String, Group>,
    /// Groups whose stored record is out of date.
    changed: BTreeSet<String>,
}

impl ConsumerGroups {
    pub fn new(config: ConsumerGroupConfig) -> Self {
        ConsumerGroups { config, groups: BTreeMap::new(), changed: BTreeSet::new() }
    }

    /// The groups changed since the last call (their records are `record`, or gone).
    pub(crate) fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// What is stored of a group, or `None` when it has no members.
    pub(crate) fn record(&self, group_id: &str) -> Option<ConsumerGroupRecord> {
        let group = self.groups.get(group_id)?;
        let members = group
            .members
            .iter()
            .map(|(member_id, member)| member_record(member_id, member, group.target.get(member_id)))
            .collect();
        Some(ConsumerGroupRecord {
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor: group.assignor.map(|assignor| assignor.name().to_string()),
            topics: group.topics.iter().map(|(name, (id, n))| (name.clone(), *id, *n)).collect(),
            members,
        })
    }

    /// Loads a stored group as of `now_ms` (every session, and every revocation deadline,
    /// starts now), or says why the record is not a valid group.
    pub(crate) fn restore(
        &mut self,
        group_id: &str,
        record: ConsumerGroupRecord,
        now_ms: i64,
    ) -> Result<(), String> {
        let assignor = |name: &Option<String>| -> Result<Option<Assignor>, String> {
            name.as_deref()
                .map(|name| Assignor::from_name(name).ok_or_else(|| format!("unknown assignor {name}")))
                .transpose()
        };
        let partitions = |topics: Vec<TopicPartitions>| -> Assignment {
            topics
                .into_iter()
                .flat_map(|(topic_id, partitions)| {
                    partitions.into_iter().map(move |partition| TopicPartition { topic_id, partition })
                })
                .collect()
        };
        let mut group = Group {
            group_epoch: record.group_epoch,
            assignment_epoch: record.assignment_epoch,
            assignor: assignor(&record.assignor)?,
            topics: record.topics.into_iter().map(|(name, id, n)| (name, (id, n))).collect(),
            ..Group::default()
        };
        for member in record.members {
            let state = match member.state.as_str() {
                "stable" => MemberState::Stable,
                "unrevoked_partitions" => MemberState::UnrevokedPartitions,
                "unreleased_partitions" => MemberState::UnreleasedPartitions,
                other => return Err(format!("member {} in unknown state {other}", member.member_id)),
            };
            let subscribed_topic_regex = match member.subscribed_topic_regex {
                Some(source) => {
                    let regex = compile_topic_regex(&source).map_err(|refusal| refusal.message)?;
                    Some((source, regex))
                }
                None => None,
            };
            let restored = Member {
                instance_id: member.instance_id,
                rack_id: member.rack_id,
                client_id: member.client_id,
                client_host: member.client_host,
                subscribed_topic_names: member.subscribed_topic_names.into_iter().collect(),
                subscribed_topic_regex,
                regex_topics: member.regex_topics.into_iter().collect(),
                server_assignor: assignor(&member.server_assignor)?,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                member_epoch: member.member_epoch,
                previous_member_epoch: member.previous_member_epoch,
                state,
                assigned: partitions(member.assigned),
                pending_revocation: partitions(member.pending_revocation),
                last_heartbeat_ms: now_ms,
                revocation_deadline_ms: now_ms + i64::from(member.rebalance_timeout_ms),
            };
            group.target.insert(member.member_id.clone(), partitions(member.target));
            if group.members.insert(member.member_id.clone(), restored).is_some() {
                return Err(format!("member {} is stored twice", member.member_id));
            }
        }
        if group.members.is_empty() {
            return Err("no members".to_string());
        }
        group.check()?;
        tracing::info!(group = %group_id, group_epoch = group.group_epoch, members = group.members.len(), "loaded consumer group");
        self.groups.insert(group_id.to_string(), group);
        Ok(())
    }

    pub fn contains(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// Handles a ConsumerGroupHeartbeat.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        request: Heartbeat,
        topics: &dyn TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatAnswer, HeartbeatRefusal> {
        validate(group_id, &request)?;
        // What is stored of this member and the group before, to know whether the record must
        // be written again (most heartbeats change nothing).
        let member_id = request.member_id.clone();
        let before = self.groups.get(group_id).map(|group| group.durable_view(&member_id));
        let result = self.heartbeat_unrecorded(group_id, request, topics, now_ms);
        let after = self.groups.get(group_id).map(|group| group.durable_view(&member_id));
        if before != after {
            self.changed.insert(group_id.to_string());
        }
        result
    }

    fn heartbeat_unrecorded(
        &mut self,
        group_id: &str,
        request: Heartbeat,
        topics: &dyn TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatAnswer, HeartbeatRefusal> {
        let config = self.config;
        if request.member_epoch < 0 {
            let group = self
                .groups
                .get_mut(group_id)
                .ok_or_else(|| refuse(ResponseError::UnknownMemberId, "no such member"))?;
            let answer = leave(group, &request, config)?;
            group.debug_check();
            if group.members.is_empty() {
                self.groups.remove(group_id);
            }
            return Ok(answer);
        }
        if request.member_epoch > 0 && !self.groups.contains_key(group_id) {
            // The group is gone (its members expired, or its record could not be loaded after
            // a restart): the member rejoins.
            return Err(refuse(
                ResponseError::UnknownMemberId,
                format!("group {group_id} has no member {}", request.member_id),
            ));
        }
        let group = self.groups.entry(group_id.to_string()).or_default();
        let result = heartbeat(group, request, topics, now_ms, config);
        group.debug_check();
        if group.members.is_empty() {
            self.groups.remove(group_id);
        }
        result
    }

    /// Handles time: members whose session expired, and members that did not give up their
    /// partitions within their rebalance timeout, are removed.
    pub fn tick(&mut self, now_ms: i64) {
        let session_timeout_ms = i64::from(self.config.session_timeout_ms);
        for (group_id, group) in self.groups.iter_mut() {
            let expired: Vec<(String, &'static str)> = group
                .members
                .iter()
                .filter_map(|(id, member)| {
                    if now_ms - member.last_heartbeat_ms > session_timeout_ms {
                        Some((id.clone(), "session expired"))
                    } else if member.state == MemberState::UnrevokedPartitions
                        && now_ms > member.revocation_deadline_ms
                    {
                        Some((id.clone(), "did not revoke its partitions within its rebalance timeout"))
                    } else {
                        None
                    }
                })
                .collect();
            for (member_id, why) in expired {
                tracing::info!(group = %group_id, member = %member_id, "consumer group member removed: {why}");
                remove_member(group, &member_id);
                self.changed.insert(group_id.clone());
            }
            group.debug_check();
        }
        self.groups.retain(|_, group| !group.members.is_empty());
    }

    /// Whether an OffsetCommit (or TxnOffsetCommit) from `member_id` at `member_epoch` is
    /// accepted. `None` when `group_id` is not a consumer group.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        version: i16,
    ) -> Option<Result<(), ResponseError>> {
        let group = self.groups.get(group_id)?;
        // Commits from outside group management (the admin client, a consumer that assigns
        // itself) are only for an empty group, which this one is not (empty groups are
        // forgotten).
        if member_epoch < 0 && member_id.is_empty() {
            return Some(Err(ResponseError::UnknownMemberId));
        }
        let Some(member) = group.members.get(member_id) else {
            return Some(Err(ResponseError::UnknownMemberId));
        };
        // Before v9 a commit carries a generation id, which means nothing in this protocol.
        if version < 9 {
            return Some(Err(ResponseError::UnsupportedVersion));
        }
        if member_epoch != member.member_epoch {
            return Some(Err(ResponseError::StaleMemberEpoch));
        }
        Some(Ok(()))
    }

    /// Whether an OffsetFetch v9+ naming a member is accepted; fetches naming no member (the
    /// admin client, tools) always are. `None` when `group_id` is not a consumer group.
    pub fn check_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Option<Result<(), ResponseError>> {
        let group = self.groups.get(group_id)?;
        let Some(member_id) = member_id.filter(|id| !id.is_empty()) else { return Some(Ok(())) };
        if member_epoch < 0 {
            return Some(Ok(()));
        }
        let Some(member) = group.members.get(member_id) else {
            return Some(Err(ResponseError::UnknownMemberId));
        };
        if member_epoch != member.member_epoch {
            return Some(Err(ResponseError::StaleMemberEpoch));
        }
        Some(Ok(()))
    }

    pub fn state(&self, group_id: &str) -> Option<ConsumerGroupState> {
        self.groups.get(group_id).map(Group::state)
    }

    /// Every group with its state.
    pub fn list(&self) -> Vec<(String, ConsumerGroupState)> {
        self.groups.iter().map(|(id, group)| (id.clone(), group.state())).collect()
    }

    /// Every group with its number of members.
    pub fn member_counts(&self) -> Vec<(String, usize)> {
        self.groups.iter().map(|(id, group)| (id.clone(), group.members.len())).collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.groups.get(group_id)?;
        let members = group
            .members
            .iter()
            .map(|(id, member)| MemberDescription {
                member_id: id.clone(),
                instance_id: member.instance_id.clone(),
                rack_id: member.rack_id.clone(),
                member_epoch: member.member_epoch,
                state: member.state,
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                subscribed_topic_names: member.subscribed_topic_names.iter().cloned().collect(),
                subscribed_topic_regex: member
                    .subscribed_topic_regex
                    .as_ref()
                    .map(|(source, _)| source.clone()),
                assignment: member.assigned.clone(),
                target_assignment: group.target.get(id).cloned().unwrap_or_default(),
            })
            .collect();
        Some(GroupDescription {
            state: group.state(),
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor: group.assignor.unwrap_or(Assignor::Uniform),
            members,
            topic_names: group.topics.iter().map(|(name, (id, _))| (*id, name.clone())).collect(),
        })
    }
}

/// The request checks Kafka makes before looking at the group (INVALID_REQUEST and
/// UNSUPPORTED_ASSIGNOR, both fatal to the client, so they name what is wrong).
fn validate(group_id: &str, request: &Heartbeat) -> Result<(), HeartbeatRefusal> {
    let invalid = |message: &str| Err(refuse(ResponseError::InvalidRequest, message));
    if group_id.is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if request.member_id.is_empty() {
        // Since v1 the member makes up its own id (KIP-1082).
        return invalid("MemberId can't be empty.");
    }
    if request.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if request.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if request.member_epoch == 0 {
        if request.rebalance_timeout_ms <= 0 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if request.owned.as_ref().is_some_and(|owned| !owned.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
            return invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
        }
    }
    if request.subscribed_topic_names.as_ref().is_some_and(|names| names.len() > MAX_SUBSCRIBED_TOPIC_NAMES) {
        return Err(refuse(
            ResponseError::InvalidRequest,
            format!("SubscribedTopicNames names more than {MAX_SUBSCRIBED_TOPIC_NAMES} topics."),
        ));
    }
    if request.subscribed_topic_regex.as_ref().is_some_and(|regex| regex.len() > MAX_TOPIC_REGEX_BYTES) {
        return Err(refuse(
            ResponseError::InvalidRegularExpression,
            format!("SubscribedTopicRegex is longer than {MAX_TOPIC_REGEX_BYTES} bytes."),
        ));
    }
    if let Some(name) = &request.server_assignor {
        if Assignor::from_name(name).is_none() {
            return Err(refuse(
                ResponseError::UnsupportedAssignor,
                format!("ServerAssignor {name} is not supported; supported assignors: uniform, range."),
            ));
        }
    }
    Ok(())
}

/// A member leaving: for good (-1), or a static member for now (-2).
fn leave(
    group: &mut Group,
    request: &Heartbeat,
    config: ConsumerGroupConfig,
) -> Result<HeartbeatAnswer, HeartbeatRefusal> {
    let member_id = if group.members.contains_key(&request.member_id) {
        request.member_id.clone()
    } else {
        // A static member may leave under an id it no longer has (it restarted): by instance id.
        request
            .instance_id
            .as_ref()
            .and_then(|instance| group.member_by_instance(instance))
            .ok_or_else(|| refuse(ResponseError::UnknownMemberId, "no such member"))?
    };
    let member = group.members.get_mut(&member_id).expect("found above");
    if request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && member.instance_id.is_some() {
        // Its partitions stay its own until its session expires or the instance comes back.
        if member.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            member.previous_member_epoch = member.member_epoch;
        }
        member.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
    } else {
        remove_member(group, &member_id);
    }
    Ok(HeartbeatAnswer {
        member_id: request.member_id.clone(),
        member_epoch: request.member_epoch,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        assignment: None,
    })
}

fn heartbeat(
    group: &mut Group,
    request: Heartbeat,
    topics: &dyn TopicMetadata,
    now_ms: i64,
    config: ConsumerGroupConfig,
) -> Result<HeartbeatAnswer, HeartbeatRefusal> {
    // Compiled before anything changes, so that a bad expression leaves the group as it was
    // (a member that would have joined is not left behind). Clients send the expression only
    // when it changes.
    let regex = match request.subscribed_topic_regex.as_deref() {
        Some(source) if !source.is_empty() => Some(compile_topic_regex(source)?),
        _ => None,
    };
    let member_id = request.member_id.clone();
    let mut group_changed = false;
    let mut full_answer = false;
    if request.member_epoch == 0 {
        full_answer = true;
        let by_instance =
            request.instance_id.as_ref().and_then(|instance| group.member_by_instance(instance));
        match by_instance {
            Some(previous) if previous != member_id => {
                // A static member back under a new member id takes its old place, partitions
                // and all, if that place was left (-2); otherwise two processes claim the
                // same instance id.
                if group.members[&previous].member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                    return Err(refuse(
                        ResponseError::UnreleasedInstanceId,
                        format!(
                            "instance id {} is in use by member {previous}",
                            request.instance_id.unwrap_or_default()
                        ),
                    ));
                }
                let member = group.members.remove(&previous).expect("found by instance");
                if let Some(target) = group.target.remove(&previous) {
                    group.target.insert(member_id.clone(), target);
                }
                group.members.insert(member_id.clone(), member);
            }
            _ => {}
        }
        match group.members.get_mut(&member_id) {
            Some(member) if member.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
                // Rejoining static member: it gets back what it had at its old epoch.
            }
            Some(member) => {
                // A member rejoining with epoch 0 has dropped whatever it owned (it was fenced
                // or lost its session): its partitions are free for their target owners.
                member.assigned.clear();
                member.pending_revocation.clear();
                member.state = MemberState::Stable;
                member.previous_member_epoch = member.member_epoch;
                member.member_epoch = 0;
            }
            None => {
                if group.members.len() >= config.max_members {
                    return Err(refuse(
                        ResponseError::GroupMaxSizeReached,
                        format!("the group has reached its maximum of {} members", config.max_members),
                    ));
                }
                group.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: request.instance_id.clone(),
                        rack_id: None,
                        client_id: String::new(),
                        client_host: String::new(),
                        subscribed_topic_names: BTreeSet::new(),
                        subscribed_topic_regex: None,
                        regex_topics: BTreeSet::new(),
                        server_assignor: None,
                        rebalance_timeout_ms: request.rebalance_timeout_ms,
                        member_epoch: 0,
                        previous_member_epoch: -1,
                        state: MemberState::Stable,
                        assigned: Assignment::new(),
                        pending_revocation: Assignment::new(),
                        last_heartbeat_ms: now_ms,
                        revocation_deadline_ms: 0,
                    },
                );
                group_changed = true;
            }
        }
    } else {
        let member = group.members.get(&member_id).ok_or_else(|| {
            refuse(ResponseError::UnknownMemberId, format!("member {member_id} is not in the group"))
        })?;
        check_member_epoch(member, request.member_epoch, request.owned.as_deref())?;
    }

    let member = group.members.get_mut(&member_id).expect("present by now");
    member.last_heartbeat_ms = now_ms;
    if request.rebalance_timeout_ms > 0 {
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
    }
    member.client_id = request.client_id;
    member.client_host = request.client_host;
    if request.rack_id.is_some() {
        member.rack_id = request.rack_id;
    }
    if request.instance_id.is_some() {
        member.instance_id = request.instance_id;
    }
    if let Some(names) = request.subscribed_topic_names {
        let names: BTreeSet<String> = names.into_iter().collect();
        if names != member.subscribed_topic_names {
            member.subscribed_topic_names = names;
            group_changed = true;
        }
    }
    match (request.subscribed_topic_regex.as_deref(), regex) {
        // librdkafka sends an empty expression for "none".
        (Some(""), _) => member.subscribed_topic_regex = None,
        (Some(source), Some(regex))
            if member.subscribed_topic_regex.as_ref().is_none_or(|(old, _)| old != source) =>
        {
            member.subscribed_topic_regex = Some((source.to_string(), regex));
        }
        _ => {}
    }
    let regex_topics: BTreeSet<String> = match &member.subscribed_topic_regex {
        Some((_, regex)) => topics.names().into_iter().filter(|name| regex.is_match(name)).collect(),
        None => BTreeSet::new(),
    };
    if regex_topics != member.regex_topics {
        member.regex_topics = regex_topics;
        group_changed = true;
    }
    if let Some(name) = request.server_assignor {
        let assignor = Assignor::from_name(&name);
        if assignor != member.server_assignor {
            member.server_assignor = assignor;
            group_changed = true;
        }
    }
    // What the subscribed topics look like now: a topic created, deleted or grown changes the
    // assignment as much as a member does.
    let now_topics: BTreeMap<String, (Uuid, i32)> = group
        .subscribed_topic_names()
        .into_iter()
        .filter_map(|name| Some((name.clone(), topics.topic(&name)?)))
        .collect();
    if now_topics != group.topics {
        group.topics = now_topics;
        group_changed = true;
    }
    if group_changed {
        group.group_epoch += 1;
    }
    if group.group_epoch > group.assignment_epoch {
        compute_target(group);
    }

    let before = group.members[&member_id].assigned.clone();
    reconcile(group, &member_id, request.owned.as_deref(), now_ms);
    let member = &group.members[&member_id];
    let owned_differs = request
        .owned
        .as_ref()
        .is_some_and(|owned| owned.iter().copied().collect::<Assignment>() != member.assigned);
    let assignment =
        (full_answer || before != member.assigned || owned_differs).then(|| member.assigned.clone());
    Ok(HeartbeatAnswer {
        member_id,
        member_epoch: member.member_epoch,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        assignment,
    })
}

/// Kafka's epoch check: a member ahead of the coordinator, or behind it other than by one lost
/// response (the previous epoch, owning no more than it was assigned), is fenced.
fn check_member_epoch(
    member: &Member,
    received: i32,
    owned: Option<&[TopicPartition]>,
) -> Result<(), HeartbeatRefusal> {
    let fenced = || {
        refuse(
            ResponseError::FencedMemberEpoch,
            format!(
                "the member epoch {received} is not the group coordinator's {}; the member must give up its partitions and rejoin",
                member.member_epoch
            ),
        )
    };
    if received > member.member_epoch {
        return Err(fenced());
    }
    if received < member.member_epoch {
        let owned_within_assigned =
            owned.is_some_and(|owned| owned.iter().all(|tp| member.assigned.contains(tp)));
        if received != member.previous_member_epoch || !owned_within_assigned {
            return Err(fenced());
        }
    }
    Ok(())
}

/// Recomputes the target assignment for the group epoch, with the assignor most members ask
/// for (the default, uniform, when none asks or on a tie with it).
fn compute_target(group: &mut Group) {
    let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
    for member in group.members.values() {
        if let Some(assignor) = member.server_assignor {
            *votes.entry(assignor).or_default() += 1;
        }
    }
    let assignor = Assignor::ALL
        .into_iter()
        .max_by_key(|assignor| (votes.get(assignor).copied().unwrap_or(0), std::cmp::Reverse(*assignor)))
        .unwrap_or(Assignor::Uniform);
    let topic_ids: BTreeMap<&str, Uuid> =
        group.topics.iter().map(|(name, (id, _))| (name.as_str(), *id)).collect();
    let members: BTreeMap<String, MemberSubscription> = group
        .members
        .iter()
        .map(|(id, member)| {
            let subscription = MemberSubscription {
                topics: member
                    .subscribed()
                    .filter_map(|name| topic_ids.get(name.as_str()).copied())
                    .collect(),
                previous: group.target.get(id).cloned().unwrap_or_default(),
            };
            (id.clone(), subscription)
        })
        .collect();
    let partition_counts: BTreeMap<Uuid, i32> = group.topics.values().copied().collect();
    group.target = assignor.assign(&members, &partition_counts);
    group.assignor = Some(assignor);
    group.assignment_epoch = group.group_epoch;
}

/// Moves one member towards its target, as far as the other members' ownership allows.
/// `owned` is what the member reported owning in this heartbeat, if it did.
fn reconcile(group: &mut Group, member_id: &str, owned: Option<&[TopicPartition]>, now_ms: i64) {
    let target_epoch = group.assignment_epoch;
    let target = group.target.get(member_id).cloned().unwrap_or_default();
    let owned_by_others: BTreeSet<TopicPartition> = group
        .members
        .iter()
        .filter(|(id, _)| id.as_str() != member_id)
        .flat_map(|(_, member)| member.assigned.iter().chain(&member.pending_revocation).copied())
        .collect();
    let member = group.members.get_mut(member_id).expect("reconciling a member");
    if member.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        // A static member that rejoined: its partitions are still its own, at the target epoch.
        member.member_epoch = member.previous_member_epoch.max(0);
    }
    // Whether the member still holds any of `partitions` (when it did not say, it does).
    let still_owns = |partitions: &Assignment| match owned {
        None => true,
        Some(owned) => owned.iter().any(|tp| partitions.contains(tp)),
    };
    match member.state {
        MemberState::UnrevokedPartitions => {
            if still_owns(&member.pending_revocation) {
                return;
            }
            // Revocation acknowledged: those partitions are free for their new owners.
            member.pending_revocation.clear();
        }
        MemberState::Stable if member.member_epoch == target_epoch => return,
        MemberState::Stable | MemberState::UnreleasedPartitions => {}
    }
    let kept: Assignment = member.assigned.intersection(&target).copied().collect();
    let to_revoke: Assignment = member.assigned.difference(&target).copied().collect();
    let to_add: Vec<TopicPartition> = target.difference(&member.assigned).copied().collect();
    if !to_revoke.is_empty() && still_owns(&to_revoke) {
        // Give up first; the epoch moves only once the member says it has.
        member.assigned = kept;
        member.pending_revocation = to_revoke;
        member.state = MemberState::UnrevokedPartitions;
        member.revocation_deadline_ms = now_ms + i64::from(member.rebalance_timeout_ms);
        return;
    }
    let mut assigned = kept;
    let mut unreleased = false;
    for tp in to_add {
        if owned_by_others.contains(&tp) {
            unreleased = true;
        } else {
            assigned.insert(tp);
        }
    }
    member.assigned = assigned;
    member.pending_revocation.clear();
    if member.member_epoch != target_epoch {
        member.previous_member_epoch = member.member_epoch;
        member.member_epoch = target_epoch;
    }
    member.state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
}

/// What is stored of a member (`metadata.rs`).
fn member_record(member_id: &str, member: &Member, target: Option<&Assignment>) -> ConsumerMemberRecord {
    // An assignment is ordered by topic id, then partition: one entry per topic.
    let pairs = |assignment: &Assignment| -> Vec<TopicPartitions> {
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for tp in assignment {
            match topics.last_mut() {
                Some((topic_id, partitions)) if *topic_id == tp.topic_id => partitions.push(tp.partition),
                _ => topics.push((tp.topic_id, vec![tp.partition])),
            }
        }
        topics
    };
    ConsumerMemberRecord {
        member_id: member_id.to_string(),
        instance_id: member.instance_id.clone(),
        rack_id: member.rack_id.clone(),
        client_id: member.client_id.clone(),
        client_host: member.client_host.clone(),
        subscribed_topic_names: member.subscribed_topic_names.iter().cloned().collect(),
        subscribed_topic_regex: member.subscribed_topic_regex.as_ref().map(|(source, _)| source.clone()),
        regex_topics: member.regex_topics.iter().cloned().collect(),
        server_assignor: member.server_assignor.map(|assignor| assignor.name().to_string()),
        rebalance_timeout_ms: member.rebalance_timeout_ms,
        member_epoch: member.member_epoch,
        previous_member_epoch: member.previous_member_epoch,
        state: member.state.name().to_string(),
        assigned: pairs(&member.assigned),
        pending_revocation: pairs(&member.pending_revocation),
        target: target.map(pairs).unwrap_or_default(),
    }
}

/// What one heartbeat can change of a group's stored record: the group's epochs and size, and
/// the heartbeating member's record (a change to the target moves the epochs; a static member
/// back under a new id is a member that was not there before).
type DurableView = (i32, i32, usize, Option<ConsumerMemberRecord>);

/// Removes a member for good: its partitions are free, and the group's assignment must change.
fn remove_member(group: &mut Group, member_id: &str) {
    if group.members.remove(member_id).is_some() {
        group.target.remove(member_id);
        group.group_epoch += 1;
    }
}

impl Group {
    fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|member| {
            member.state != MemberState::Stable
                || (member.member_epoch != self.assignment_epoch
                    && member.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Every topic some member subscribes to, by name or by its regular expression.
    fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|member| member.subscribed().cloned()).collect()
    }

    fn durable_view(&self, member_id: &str) -> DurableView {
        (
            self.group_epoch,
            self.assignment_epoch,
            self.members.len(),
            self.members
                .get(member_id)
                .map(|member| member_record(member_id, member, self.target.get(member_id))),
        )
    }

    fn member_by_instance(&self, instance: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, member)| member.instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.clone())
    }

    /// The invariants, checked after every change in debug builds: no partition is owned by
    /// two members; a member's pending revocations are not also assigned to it; epochs never
    /// run ahead of the target; only Unrevoked members have partitions pending revocation.
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            if let Err(broken) = self.check() {
                panic!("{broken}: {self:?}");
            }
        }
    }

    /// The invariants `debug_check` asserts, also checked of a group loaded from disk.
    fn check(&self) -> Result<(), String> {
        let mut owners: BTreeMap<TopicPartition, &str> = BTreeMap::new();
        for (id, member) in &self.members {
            for tp in member.assigned.iter().chain(&member.pending_revocation) {
                if let Some(other) = owners.insert(*tp, id) {
                    return Err(format!("{tp:?} owned by both {other} and {id}"));
                }
            }
            if member.member_epoch > self.assignment_epoch {
                return Err(format!("member {id} is at epoch {} past the target's", member.member_epoch));
            }
            if !member.pending_revocation.is_empty() && member.state != MemberState::UnrevokedPartitions {
                return Err(format!("member {id} has partitions pending revocation but is not revoking"));
            }
        }
        if self.assignment_epoch > self.group_epoch {
            return Err("the target assignment is ahead of the group epoch".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SESSION_MS: i32 = 10_000;
    const TOPIC: &str = "events";

    fn topic_id(name: &str) -> Uuid {
        Uuid::from_u128(name.bytes().fold(7u128, |hash, byte| hash * 31 + u128::from(byte)))
    }

    /// Topics `events` (6 partitions) and `audit` (3).
    fn topics(name: &str) -> Option<(Uuid, i32)> {
        match name {
            "events" => Some((topic_id(name), 6)),
            "audit" => Some((topic_id(name), 3)),
            _ => None,
        }
    }

    /// `topics` for the state machine; regular expressions see both topics.
    struct Topics;

    impl TopicMetadata for Topics {
        fn topic(&self, name: &str) -> Option<(Uuid, i32)> {
            topics(name)
        }

        fn names(&self) -> Vec<String> {
            vec!["audit".to_string(), "events".to_string()]
        }
    }

    fn groups() -> ConsumerGroups {
        ConsumerGroups::new(ConsumerGroupConfig {
            session_timeout_ms: SESSION_MS,
            heartbeat_interval_ms: 1_000,
            max_members: 10,
        })
    }

    fn join_request(member: &str) -> Heartbeat {
        Heartbeat {
            member_id: member.to_string(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec![TOPIC.to_string()]),
            owned: Some(Vec::new()),
            ..Heartbeat::default()
        }
    }

    fn partitions(assignment: &Assignment) -> Vec<i32> {
        assignment.iter().map(|tp| tp.partition).collect()
    }

    fn owned(numbers: &[i32]) -> Option<Vec<TopicPartition>> {
        Some(
            numbers
                .iter()
                .map(|partition| TopicPartition { topic_id: topic_id(TOPIC), partition: *partition })
                .collect(),
        )
    }

    /// A heartbeat of an already joined member at `epoch`, reporting `owning` if given.
    fn beat(
        groups: &mut ConsumerGroups,
        member: &str,
        epoch: i32,
        owning: Option<&[i32]>,
        now: i64,
    ) -> Result<HeartbeatAnswer, HeartbeatRefusal> {
        let request = Heartbeat {
            member_id: member.to_string(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: owning.and_then(owned),
            ..Heartbeat::default()
        };
        groups.heartbeat("g", request, &Topics, now)
    }

    /// The group as a restart reads it back: its record through the stored bytes, loaded into
    /// a new state machine at `now`.
    fn restarted(groups: &ConsumerGroups, now: i64) -> ConsumerGroups {
        use crate::groups::metadata::{decode, encode, GroupRecord};
        let mut restored = super::tests::groups();
        if let Some(record) = groups.record("g") {
            let GroupRecord::Consumer(record) =
                decode(&encode(&GroupRecord::Consumer(record))).expect("decodes")
            else {
                panic!("a consumer group record")
            };
            restored.restore("g", record, now).expect("a valid group");
        }
        restored
    }

    #[test]
    fn a_group_restored_mid_reconciliation_carries_on_at_its_epochs() {
        let mut groups = groups();
        groups.heartbeat("g", join_request("a"), &Topics, 0).expect("a");
        let regex = Heartbeat {
            subscribed_topic_names: Some(Vec::new()),
            subscribed_topic_regex: Some("ev.*".to_string()),
            ..join_request("b")
        };
        groups.heartbeat("g", regex, &Topics, 0).expect("b");
        // a is asked to give up half its partitions and has not yet.
        let a = beat(&mut groups, "a", 1, None, 10).expect("asked to revoke");
        assert_eq!(a.assignment.as_ref().map(partitions), Some(vec![0, 1, 2]));
        assert_eq!(groups.take_changed().into_iter().collect::<Vec<_>>(), ["g"]);
        assert!(beat(&mut groups, "a", 1, None, 20).is_ok());
        assert!(groups.take_changed().is_empty(), "a heartbeat that changes nothing marks nothing");

        let restart = 1_000_000;
        let mut restored = restarted(&groups, restart);
        assert_eq!(restored.describe("g"), groups.describe("g"));
        assert!(restored.take_changed().is_empty(), "loading marks nothing");
        // b may not have a's partitions before a lets go of them, restart or not.
        let b = beat(&mut restored, "b", 2, None, restart + 1).expect("b at its epoch");
        assert_eq!(b.member_epoch, 2);
        assert!(restored.describe("g").expect("group").members[1].assignment.is_empty());
        assert_eq!(restored.check_commit("g", "a", 1, 9), Some(Ok(())));
        let a = beat(&mut restored, "a", 1, Some(&[0, 1, 2]), restart + 2).expect("a acknowledges");
        assert_eq!(a.member_epoch, 2);
        let b = beat(&mut restored, "b", 2, None, restart + 3).expect("b");
        assert_eq!(b.assignment.as_ref().map(partitions), Some(vec![3, 4, 5]));
        assert_eq!(restored.state("g"), Some(ConsumerGroupState::Stable));

        // Sessions start at load time: silent members expire a session after it, and the
        // emptied group is marked so that its record goes.
        let mut silent = restarted(&groups, restart);
        silent.tick(restart + i64::from(SESSION_MS));
        assert_eq!(silent.state("g"), Some(ConsumerGroupState::Reconciling));
        silent.tick(restart + i64::from(SESSION_MS) + 1);
        assert_eq!(silent.state("g"), None);
        assert_eq!(silent.take_changed().into_iter().collect::<Vec<_>>(), ["g"]);
        assert_eq!(silent.record("g"), None);
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_acknowledged_the_revocation() {
        let mut groups = groups();
        let a = groups.heartbeat("g", join_request("a"), &Topics, 0).expect("a joins");
        assert_eq!(
            (a.member_epoch, partitions(&a.assignment.expect("full answer"))),
            (1, vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(groups.state("g"), Some(ConsumerGroupState::Stable));

        // b joins: epoch 2, but a still owns everything, so b gets nothing yet.
        let b = groups.heartbeat("g", join_request("b"), &Topics, 10).expect("b joins");
        assert_eq!((b.member_epoch, b.assignment.as_ref().map(partitions)), (2, Some(vec![])));
        assert_eq!(groups.state("g"), Some(ConsumerGroupState::Reconciling));

        // a learns what it keeps, at its old epoch, and is waiting to revoke the rest.
        let a = beat(&mut groups, "a", 1, None, 20).expect("a heartbeats");
        assert_eq!((a.member_epoch, a.assignment.as_ref().map(partitions)), (1, Some(vec![0, 1, 2])));
        // Until it says it let go, b still gets nothing, and a heartbeat that does not say so
        // changes nothing.
        assert_eq!(beat(&mut groups, "b", 2, None, 30).expect("b").assignment, None);
        assert_eq!(beat(&mut groups, "a", 1, None, 40).expect("a").member_epoch, 1);
        assert_eq!(beat(&mut groups, "a", 1, Some(&[0, 1, 2, 3]), 50).expect("a").member_epoch, 1);

        // a acknowledges: it moves to epoch 2, and b gets the released partitions next time.
        let a = beat(&mut groups, "a", 1, Some(&[0, 1, 2]), 60).expect("a acknowledges");
        assert_eq!((a.member_epoch, a.assignment), (2, None));
        let b = beat(&mut groups, "b", 2, None, 70).expect("b");
        assert_eq!(b.assignment.as_ref().map(partitions), Some(vec![3, 4, 5]));
        assert_eq!(groups.state("g"), Some(ConsumerGroupState::Stable));
        let described = groups.describe("g").expect("group");
        assert_eq!(
            (described.group_epoch, described.assignment_epoch, described.assignor),
            (2, 2, Assignor::Uniform)
        );
    }

    /// Three members sharing `events`, all Stable: returns their partitions by member.
    fn three_members(groups: &mut ConsumerGroups) -> BTreeMap<String, Vec<i32>> {
        let mut now = 0;
        let mut epochs: BTreeMap<String, i32> = BTreeMap::new();
        let mut owning: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for member in ["a", "b", "c"] {
            let answer = groups.heartbeat("g", join_request(member), &Topics, now).expect("joins");
            epochs.insert(member.to_string(), answer.member_epoch);
            owning.insert(member.to_string(), partitions(&answer.assignment.expect("full")));
        }
        // Everyone heartbeats, acknowledging what they own, until nothing changes.
        for _ in 0..5 {
            for member in ["a", "b", "c"] {
                now += 10;
                let answer = beat(groups, member, epochs[member], Some(&owning[member]), now).expect("beat");
                epochs.insert(member.to_string(), answer.member_epoch);
                if let Some(assignment) = answer.assignment {
                    owning.insert(member.to_string(), partitions(&assignment));
                }
            }
        }
        assert_eq!(groups.state("g"), Some(ConsumerGroupState::Stable));
        assert!(epochs.values().all(|epoch| *epoch == 3), "{epochs:?}");
        owning
    }

    #[test]
    fn epochs_out_of_step_are_fenced_and_unknown_members_told_so() {
        let mut groups = groups();
        three_members(&mut groups);
        let fenced = beat(&mut groups, "a", 4, None, 100).expect_err("ahead of the coordinator");
        assert_eq!(fenced.error, ResponseError::FencedMemberEpoch);
        let fenced = beat(&mut groups, "a", 1, None, 100).expect_err("behind, not by one lost answer");
        assert_eq!(fenced.error, ResponseError::FencedMemberEpoch);
        assert_eq!(
            beat(&mut groups, "z", 3, None, 100).expect_err("unknown").error,
            ResponseError::UnknownMemberId
        );
        assert_eq!(
            groups.heartbeat("other", join_request("").clone(), &Topics, 0).expect_err("no id").error,
            ResponseError::InvalidRequest
        );
        let unknown_assignor = Heartbeat { server_assignor: Some("sticky".to_string()), ..join_request("d") };
        assert_eq!(
            groups.heartbeat("g", unknown_assignor, &Topics, 0).expect_err("assignor").error,
            ResponseError::UnsupportedAssignor
        );
        let too_many = Heartbeat {
            subscribed_topic_names: Some(vec![TOPIC.to_string(); MAX_SUBSCRIBED_TOPIC_NAMES + 1]),
            ..join_request("e")
        };
        assert_eq!(
            groups.heartbeat("g", too_many, &Topics, 0).expect_err("bounded").error,
            ResponseError::InvalidRequest
        );
        let at_the_limit = Heartbeat {
            subscribed_topic_names: Some(vec![TOPIC.to_string(); MAX_SUBSCRIBED_TOPIC_NAMES]),
            ..join_request("e")
        };
        assert!(groups.heartbeat("g", at_the_limit, &Topics, 0).is_ok());
        let regex = Heartbeat { subscribed_topic_regex: Some("(".to_string()), ..join_request("f") };
        assert_eq!(
            groups.heartbeat("g", regex, &Topics, 0).expect_err("not an expression").error,
            ResponseError::InvalidRegularExpression
        );
        let regex = Heartbeat {
            subscribed_topic_regex: Some("e".repeat(MAX_TOPIC_REGEX_BYTES + 1)),
            ..join_request("f")
        };
        assert_eq!(
            groups.heartbeat("g", regex, &Topics, 0).expect_err("too long").error,
            ResponseError::InvalidRegularExpression
        );
        // A refused join leaves nothing behind: no member counting towards the group's size.
        let members: Vec<String> =
            groups.describe("g").expect("group").members.into_iter().map(|member| member.member_id).collect();
        assert!(!members.iter().any(|id| id == "d" || id == "f"), "refused joins left {members:?}");
        // A group that is gone (a broker restart) answers a member UNKNOWN_MEMBER_ID, so it rejoins.
        assert_eq!(
            beat(&mut ConsumerGroups::default(), "a", 3, None, 0).expect_err("no group").error,
            ResponseError::UnknownMemberId
        );
    }

    #[test]
    fn commits_and_fetches_are_checked_against_the_member_epoch() {
        let mut groups = groups();
        three_members(&mut groups);
        assert_eq!(groups.check_commit("g", "a", 3, 9), Some(Ok(())));
        assert_eq!(groups.check_commit("g", "a", 2, 9), Some(Err(ResponseError::StaleMemberEpoch)));
        assert_eq!(groups.check_commit("g", "a", 3, 8), Some(Err(ResponseError::UnsupportedVersion)));
        assert_eq!(groups.check_commit("g", "z", 3, 9), Some(Err(ResponseError::UnknownMemberId)));
        assert_eq!(groups.check_commit("g", "", -1, 9), Some(Err(ResponseError::UnknownMemberId)));
        assert_eq!(groups.check_commit("classic", "a", 3, 9), None);
        assert_eq!(groups.check_fetch("g", Some("a"), 2), Some(Err(ResponseError::StaleMemberEpoch)));
        assert_eq!(groups.check_fetch("g", None, -1), Some(Ok(())));
        assert_eq!(groups.check_fetch("g", Some("a"), 3), Some(Ok(())));
    }

    #[test]
    fn a_leaving_member_frees_its_partitions_and_a_silent_one_is_expired() {
        let mut groups = groups();
        let before = three_members(&mut groups);
        let left = beat(&mut groups, "c", LEAVE_GROUP_MEMBER_EPOCH, None, 1_000).expect("leaves");
        assert_eq!(left.member_epoch, LEAVE_GROUP_MEMBER_EPOCH);
        let a = beat(&mut groups, "a", 3, None, 1_010).expect("a");
        // a keeps its own and takes one of c's at once: c is gone, nobody owns them.
        let a_now = partitions(&a.assignment.expect("grew"));
        assert_eq!(a.member_epoch, 4);
        assert!(before["a"].iter().all(|partition| a_now.contains(partition)), "{before:?} {a_now:?}");
        assert_eq!(a_now.len(), 3);

        // b falls silent: after the session timeout it is removed, and a gets everything.
        beat(&mut groups, "b", 3, None, 1_020).expect("b");
        beat(&mut groups, "a", 4, None, 1_020 + i64::from(SESSION_MS)).expect("a");
        groups.tick(1_021 + i64::from(SESSION_MS));
        assert_eq!(groups.describe("g").expect("group").members.len(), 1);
        let a = beat(&mut groups, "a", 4, None, 1_030 + i64::from(SESSION_MS)).expect("a");
        assert_eq!(a.assignment.as_ref().map(partitions), Some(vec![0, 1, 2, 3, 4, 5]));
        beat(&mut groups, "a", LEAVE_GROUP_MEMBER_EPOCH, None, 20_000).expect("leaves");
        assert_eq!(groups.state("g"), None, "an empty group is forgotten");
    }

    #[test]
    fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
        let mut groups = groups();
        let first = Heartbeat { rebalance_timeout_ms: 5_000, ..join_request("a") };
        groups.heartbeat("g", first, &Topics, 0).expect("a");
        groups.heartbeat("g", join_request("b"), &Topics, 0).expect("b");
        beat(&mut groups, "a", 1, None, 100).expect("asked to revoke");
        beat(&mut groups, "b", 2, None, 4_000).expect("b");
        beat(&mut groups, "a", 1, None, 4_000).expect("a, still not revoking");
        groups.tick(5_101);
        assert_eq!(
            beat(&mut groups, "a", 1, None, 5_200).expect_err("removed").error,
            ResponseError::UnknownMemberId
        );
        let b = beat(&mut groups, "b", 2, None, 5_300).expect("b");
        assert_eq!(b.assignment.as_ref().map(partitions), Some(vec![0, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn a_static_member_back_in_time_takes_its_partitions_back_without_moving_anything() {
        let mut groups = groups();
        let static_join = |member: &str, instance: &str| Heartbeat {
            instance_id: Some(instance.to_string()),
            ..join_request(member)
        };
        groups.heartbeat("g", static_join("a1", "a"), &Topics, 0).expect("a");
        groups.heartbeat("g", join_request("b"), &Topics, 0).expect("b");
        beat(&mut groups, "a1", 1, None, 10).expect("asked to revoke");
        beat(&mut groups, "a1", 1, Some(&[0, 1, 2]), 20).expect("acknowledges");
        let b = beat(&mut groups, "b", 2, None, 30).expect("b");
        assert_eq!(b.assignment.as_ref().map(partitions), Some(vec![3, 4, 5]));
        let epoch = groups.describe("g").expect("group").group_epoch;

        // a restarts: leaves with -2, comes back as another member id with the same instance.
        let left = groups.heartbeat(
            "g",
            Heartbeat { instance_id: Some("a".into()), ..join_request("a1") }.with_epoch(-2),
            &Topics,
            40,
        );
        assert_eq!(left.expect("static leave").member_epoch, LEAVE_GROUP_STATIC_MEMBER_EPOCH);
        assert_eq!(beat(&mut groups, "b", 2, None, 50).expect("b").assignment, None, "b sees no change");
        let back = groups.heartbeat("g", static_join("a2", "a"), &Topics, 60).expect("back");
        assert_eq!((back.member_epoch, back.assignment.as_ref().map(partitions)), (2, Some(vec![0, 1, 2])));
        assert_eq!(groups.describe("g").expect("group").group_epoch, epoch, "no new group epoch");
        assert_eq!(groups.state("g"), Some(ConsumerGroupState::Stable));
        // While it is in the group, the instance id is not another process's to take.
        let thief = groups.heartbeat("g", static_join("a3", "a"), &Topics, 70).expect_err("in use");
        assert_eq!(thief.error, ResponseError::UnreleasedInstanceId);
    }

    #[test]
    fn a_regular_expression_subscribes_to_every_whole_name_it_matches() {
        let mut groups = groups();
        let by_regex = |member: &str, regex: &str| Heartbeat {
            subscribed_topic_names: Some(Vec::new()),
            subscribed_topic_regex: Some(regex.to_string()),
            ..join_request(member)
        };
        // librdkafka combines its "^" subscriptions into one expression like this.
        let a = groups.heartbeat("g", by_regex("a", "(^aud.*)|(^nothing)"), &Topics, 0).expect("a");
        assert_eq!(a.assignment.as_ref().map(Assignment::len), Some(3), "audit's three partitions");
        // A whole name must match: "vent" alone matches no topic, ".*vents" does.
        let b = groups.heartbeat("g", by_regex("b", "vent"), &Topics, 0).expect("b");
        assert_eq!(b.assignment.as_ref().map(Assignment::len), Some(0));
        let b = groups
            .heartbeat(
                "g",
                Heartbeat { member_epoch: b.member_epoch, ..by_regex("b", ".*vents") },
                &Topics,
                10,
            )
            .expect("b resubscribes");
        assert_eq!(b.assignment.as_ref().map(Assignment::len), Some(6), "events' six partitions");
        let described = groups.describe("g").expect("group");
        assert_eq!(described.members[1].subscribed_topic_regex.as_deref(), Some(".*vents"));
        // An empty expression (librdkafka's "none") drops it.
        let b = groups
            .heartbeat("g", Heartbeat { member_epoch: b.member_epoch, ..by_regex("b", "") }, &Topics, 20)
            .expect("b unsubscribes");
        assert_eq!(b.assignment.as_ref().map(Assignment::len), Some(0));
    }

    #[test]
    fn the_assignor_most_members_name_is_used() {
        let mut groups = groups();
        let with_assignor = |member: &str, assignor: &str| Heartbeat {
            server_assignor: Some(assignor.to_string()),
            ..join_request(member)
        };
        groups.heartbeat("g", with_assignor("a", "range"), &Topics, 0).expect("a");
        groups.heartbeat("g", with_assignor("b", "range"), &Topics, 0).expect("b");
        groups.heartbeat("g", join_request("c"), &Topics, 0).expect("c");
        assert_eq!(groups.describe("g").expect("group").assignor, Assignor::Range);
        let target: Vec<Vec<i32>> = groups
            .describe("g")
            .expect("group")
            .members
            .iter()
            .map(|member| partitions(&member.target_assignment))
            .collect();
        assert_eq!(target, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    }

    impl Heartbeat {
        fn with_epoch(self, member_epoch: i32) -> Heartbeat {
            Heartbeat { member_epoch, ..self }
        }
    }

    /// One client as the model plays it, the way librdkafka behaves: it takes an assignment as
    /// soon as it arrives (dropping what is no longer in it), acknowledges changes on its next
    /// heartbeat, and rejoins with epoch 0 owning nothing when fenced or unknown.
    #[derive(Debug, Clone)]
    struct Client {
        member_id: String,
        epoch: i32,
        owned: Assignment,
        must_acknowledge: bool,
        subscription: Vec<String>,
        assignor: Option<String>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            slot: usize,
            topics: u8,
            assignor: u8,
        },
        Heartbeat {
            slot: usize,
            report_owned: bool,
        },
        Leave {
            slot: usize,
        },
        Crash {
            slot: usize,
        },
        Resubscribe {
            slot: usize,
            topics: u8,
        },
        ExpireCrashed,
        /// The broker restarts: the group is what its last record says.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 1..4u8, 0..3u8).prop_map(|(slot, topics, assignor)| Op::Join {
                slot,
                topics,
                assignor
            }),
            (0..4usize, any::<bool>()).prop_map(|(slot, report_owned)| Op::Heartbeat { slot, report_owned }),
            (0..4usize, any::<bool>()).prop_map(|(slot, report_owned)| Op::Heartbeat { slot, report_owned }),
            (0..4usize, any::<bool>()).prop_map(|(slot, report_owned)| Op::Heartbeat { slot, report_owned }),
            (0..4usize).prop_map(|slot| Op::Leave { slot }),
            (0..4usize).prop_map(|slot| Op::Crash { slot }),
            (0..4usize, 1..4u8).prop_map(|(slot, topics)| Op::Resubscribe { slot, topics }),
            Just(Op::ExpireCrashed),
            Just(Op::Restart),
        ]
    }

    fn subscription(bits: u8) -> Vec<String> {
        [(1u8, "events"), (2, "audit")]
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, name)| name.to_string())
            .collect()
    }

    struct Model {
        groups: ConsumerGroups,
        clients: Vec<Option<Client>>,
        /// Crashed clients whose members the coordinator has not expired yet: a zombie may still
        /// be consuming what it owned, so nobody else may have it.
        zombies: Vec<Client>,
        now: i64,
        next_id: usize,
    }

    impl Model {
        fn heartbeat(&mut self, slot: usize, report_owned: bool) {
            let Some(client) = self.clients[slot].as_mut() else { return };
            self.now += 1;
            let request = Heartbeat {
                member_id: client.member_id.clone(),
                member_epoch: client.epoch,
                rebalance_timeout_ms: if client.epoch == 0 { 100 * SESSION_MS } else { -1 },
                subscribed_topic_names: (client.epoch == 0).then(|| client.subscription.clone()),
                server_assignor: client.assignor.clone(),
                owned: (client.epoch == 0 || report_owned || client.must_acknowledge)
                    .then(|| client.owned.iter().copied().collect()),
                ..Heartbeat::default()
            };
            match self.groups.heartbeat("g", request, &Topics, self.now) {
                Ok(answer) => {
                    client.epoch = answer.member_epoch;
                    client.must_acknowledge = false;
                    if let Some(assignment) = answer.assignment {
                        client.must_acknowledge = assignment != client.owned;
                        client.owned = assignment;
                    }
                }
                Err(refusal) => {
                    assert!(
                        matches!(
                            refusal.error,
                            ResponseError::FencedMemberEpoch | ResponseError::UnknownMemberId
                        ),
                        "{refusal:?}"
                    );
                    client.owned.clear();
                    client.epoch = 0;
                }
            }
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Join { slot, topics, assignor } => {
                    if self.clients[slot].is_some() {
                        return;
                    }
                    self.next_id += 1;
                    self.clients[slot] = Some(Client {
                        member_id: format!("m{}", self.next_id),
                        epoch: 0,
                        owned: Assignment::new(),
                        must_acknowledge: false,
                        subscription: subscription(topics),
                        assignor: match assignor {
                            0 => None,
                            1 => Some("uniform".to_string()),
                            _ => Some("range".to_string()),
                        },
                    });
                    self.heartbeat(slot, true);
                }
                Op::Heartbeat { slot, report_owned } => self.heartbeat(slot, report_owned),
                Op::Leave { slot } => {
                    if let Some(client) = self.clients[slot].take() {
                        // The client drops its partitions before it says it leaves.
                        let request = Heartbeat {
                            member_id: client.member_id,
                            member_epoch: -1,
                            ..Heartbeat::default()
                        };
                        let _ = self.groups.heartbeat("g", request, &Topics, self.now);
                    }
                }
                Op::Crash { slot } => {
                    if let Some(client) = self.clients[slot].take() {
                        self.zombies.push(client);
                    }
                }
                Op::Resubscribe { slot, topics: bits } => {
                    let Some(client) = self.clients[slot].as_mut() else { return };
                    if client.epoch == 0 {
                        return;
                    }
                    self.now += 1;
                    let request = Heartbeat {
                        member_id: client.member_id.clone(),
                        member_epoch: client.epoch,
                        rebalance_timeout_ms: -1,
                        subscribed_topic_names: Some(subscription(bits)),
                        ..Heartbeat::default()
                    };
                    client.subscription = subscription(bits);
                    match self.groups.heartbeat("g", request, &Topics, self.now) {
                        Ok(answer) => {
                            client.epoch = answer.member_epoch;
                            if let Some(assignment) = answer.assignment {
                                client.must_acknowledge = assignment != client.owned;
                                client.owned = assignment;
                            }
                        }
                        Err(_) => {
                            client.owned.clear();
                            client.epoch = 0;
                        }
                    }
                }
                Op::Restart => {
                    self.groups = restarted(&self.groups, self.now);
                }
                Op::ExpireCrashed => {
                    // Half a session, everyone alive heartbeats, another half: only the crashed
                    // members' sessions have run out.
                    for _ in 0..2 {
                        self.now += i64::from(SESSION_MS) / 2 + 1;
                        for slot in 0..self.clients.len() {
                            self.heartbeat(slot, true);
                        }
                        self.groups.tick(self.now);
                    }
                    self.zombies.clear();
                }
            }
        }

        /// No partition is owned by two clients, counting zombies.
        fn check_exclusive(&self) -> Result<(), TestCaseError> {
            let mut seen = BTreeSet::new();
            for client in self.clients.iter().flatten().chain(&self.zombies) {
                for tp in &client.owned {
                    prop_assert!(
                        seen.insert(*tp),
                        "{:?} owned twice: {:?} {:?}",
                        tp,
                        self.clients,
                        self.zombies
                    );
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any interleaving of joins, heartbeats (acknowledging or not), leaves, crashes and
        /// subscription changes never has two clients owning one partition; once everyone
        /// heartbeats for a while, every subscribed partition is owned by exactly one live
        /// client and the group is Stable.
        #[test]
        fn no_partition_is_ever_owned_twice_and_the_group_converges(ops in proptest::collection::vec(op(), 1..60)) {
            let mut model = Model { groups: groups(), clients: vec![None, None, None, None], zombies: Vec::new(), now: 0, next_id: 0 };
            for op in ops {
                model.apply(op);
                model.check_exclusive()?;
            }
            model.apply(Op::ExpireCrashed);
            model.check_exclusive()?;
            for _ in 0..6 {
                for slot in 0..4 {
                    model.heartbeat(slot, false);
                    model.check_exclusive()?;
                }
            }
            let live: Vec<&Client> = model.clients.iter().flatten().collect();
            let owned: BTreeSet<TopicPartition> = live.iter().flat_map(|client| client.owned.iter().copied()).collect();
            let subscribed: BTreeSet<String> = live.iter().flat_map(|client| client.subscription.iter().cloned()).collect();
            let expected: BTreeSet<TopicPartition> = subscribed
                .iter()
                .flat_map(|name| {
                    let (topic_id, n) = topics(name).expect("known topic");
                    (0..n).map(move |partition| TopicPartition { topic_id, partition })
                })
                .collect();
            prop_assert_eq!(owned, expected);
            if live.is_empty() {
                prop_assert_eq!(model.groups.state("g"), None);
            } else {
                prop_assert_eq!(model.groups.state("g"), Some(ConsumerGroupState::Stable));
                let epoch = model.groups.describe("g").expect("group").assignment_epoch;
                prop_assert!(live.iter().all(|client| client.epoch == epoch), "{:?}", live);
            }
        }
    }
}
