//! The classic consumer group protocol as a state machine: members join, a leader is chosen and
//! assigns partitions, everyone syncs, heartbeats keep members alive, and any change of
//! membership starts a new generation (a rebalance).
//!
//! ```text
//!            join                      all joined / timeout             leader syncs
//!   Empty ──────────▶ PreparingRebalance ─────────────────▶ CompletingRebalance ─────▶ Stable
//!     ▲                 ▲          ▲ join, leave, expiry                  │  join, leave,  │
//!     │ last member     │          └──────────────────────────────────────┘  expiry        │
//!     └─ leaves ────────┴──────────────────────────────────────────────────────────────────┘
//! ```
//!
//! No I/O and no clock: every call takes `now_ms`, and `tick` handles timeouts, so tests drive
//! time. What must survive a restart leaves as snapshots (`take_changes`, see `metadata.rs`):
//! a classic group is stored when a generation's assignment is synced, when a static member
//! takes its place back under a new member id, and when a member leaves or expires (stored in
//! its join phase, members to rejoin); an emptied group, or one that never completed a
//! generation, is deleted. `restore` loads them with every session starting at load time. A JoinGroup or SyncGroup that must wait for other members parks a `oneshot` sender
//! here; the handler awaits the other end. Assignments and subscriptions are opaque bytes: the
//! client-side assignors (range, roundrobin, cooperative-sticky) work because the metadata passes
//! through exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use tidewater_kafka::ResponseError;
use tokio::sync::oneshot;

use super::consumer_group::{
    ConsumerGroupConfig, ConsumerGroups, Heartbeat, HeartbeatAnswer, HeartbeatRefusal, TopicMetadata,
};
use super::metadata::{
    Base64Bytes, ClassicGroupRecord, ClassicMemberRecord, ClassicRecordState, GroupChange, GroupRecord,
};

/// Timing settings, as in Kafka's group coordinator config.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// Members one group may have (`group.max.size`).
    pub max_members: usize,
    /// Groups of KIP-848's consumer protocol (`group.consumer.*`).
    pub consumer: ConsumerGroupConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_members: 1_000,
            consumer: ConsumerGroupConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka tools show.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ clients expect MEMBER_ID_REQUIRED on their first join.
    pub requires_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members and their metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// The answer to a SyncGroup: the member's assignment, or an error.
pub type SyncResult = Result<(Option<String>, Option<String>, Bytes), ResponseError>;

/// What DescribeGroups shows of a member.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// What DescribeGroups shows of a group.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    pending_join: Option<oneshot::Sender<JoinResult>>,
    pending_sync: Option<oneshot::Sender<SyncResult>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation_id: i32,
    protocol_type: String,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, with when they expire.
    pending_member_ids: HashMap<String, i64>,
    /// PreparingRebalance: the join phase ends at this time even if members are missing.
    rebalance_deadline_ms: i64,
    /// PreparingRebalance of a new group: no completion before this, to gather members.
    initial_delay_until_ms: i64,
    /// CompletingRebalance: the leader must sync by this time.
    sync_deadline_ms: i64,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: String::new(),
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending_member_ids: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            sync_deadline_ms: 0,
        }
    }

    /// The group's bookkeeping, checked after every change in debug builds (tests run every
    /// path of the state machine through it): a group is Empty exactly when it has no members;
    /// its leader, if any, is one of them; once a join phase completed (CompletingRebalance,
    /// Stable) there is a leader, a generation past 0 and no join waiting, and once Stable no
    /// sync waiting either; it never holds more members than allowed.
    fn debug_check(&self, max_members: usize) {
        if !cfg!(debug_assertions) {
            return;
        }
        debug_assert_eq!(self.state == GroupState::Empty, self.members.is_empty(), "{self:?}");
        debug_assert!(
            self.leader.as_ref().is_none_or(|leader| self.members.contains_key(leader)),
            "{self:?}"
        );
        debug_assert!(self.generation_id >= 0, "{self:?}");
        debug_assert!(self.members.len() <= max_members, "{self:?}");
        if matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable) {
            debug_assert!(self.leader.is_some() && self.generation_id > 0, "{self:?}");
            debug_assert!(self.members.values().all(|member| member.pending_join.is_none()), "{self:?}");
        }
        if self.state == GroupState::Stable {
            debug_assert!(self.members.values().all(|member| member.pending_sync.is_none()), "{self:?}");
        }
    }
}

/// What a classic group's stored record should be now.
enum Stored {
    Record(ClassicGroupRecord),
    /// Empty, or no generation ever completed: nothing a member could carry on with.
    Deleted,
    /// Between the end of a join phase and the leader's sync: the record stays as it was
    /// (the last generation, or the join phase a departure started) until the sync stores
    /// the new generation. A restart in between makes the members rejoin, as in Kafka.
    Unchanged,
}

impl Group {
    fn record(&self) -> Stored {
        let state = match self.state {
            GroupState::Empty => return Stored::Deleted,
            _ if self.generation_id == 0 => return Stored::Deleted,
            GroupState::CompletingRebalance => return Stored::Unchanged,
            GroupState::Stable => ClassicRecordState::Stable,
            GroupState::PreparingRebalance => ClassicRecordState::PreparingRebalance,
        };
        let members = self
            .members
            .iter()
            .map(|(member_id, member)| ClassicMemberRecord {
                member_id: member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols: member
                    .protocols
                    .iter()
                    .map(|(name, metadata)| (name.clone(), Base64Bytes(metadata.clone())))
                    .collect(),
                assignment: Base64Bytes(member.assignment.clone()),
            })
            .collect();
        Stored::Record(ClassicGroupRecord {
            state,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members,
        })
    }

    /// The group a record describes, as of `now_ms`: a Stable group carries on at its
    /// generation, a group stored in its join phase starts that phase again (members rejoin
    /// within their rebalance timeout or are dropped), and every session starts now.
    fn restore(record: ClassicGroupRecord, now_ms: i64) -> Result<Group, String> {
        if record.members.is_empty() || record.generation_id <= 0 {
            return Err(format!("{} members at generation {}", record.members.len(), record.generation_id));
        }
        let mut group = Group::new();
        group.generation_id = record.generation_id;
        group.protocol_type = record.protocol_type;
        group.protocol_name = record.protocol_name;
        for member in record.members {
            let restored = Member {
                group_instance_id: member.group_instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols: member.protocols.into_iter().map(|(name, metadata)| (name, metadata.0)).collect(),
                assignment: member.assignment.0,
                last_heartbeat_ms: now_ms,
                pending_join: None,
                pending_sync: None,
            };
            if group.members.insert(member.member_id.clone(), restored).is_some() {
                return Err(format!("member {} is stored twice", member.member_id));
            }
        }
        group.leader = record.leader.filter(|leader| group.members.contains_key(leader));
        match record.state {
            ClassicRecordState::Stable => {
                if group.leader.is_none() || group.protocol_name.is_none() {
                    return Err("a Stable group without its leader or protocol".to_string());
                }
                group.state = GroupState::Stable;
            }
            ClassicRecordState::PreparingRebalance => {
                // Not a new group: no initial delay, the join phase ends when everyone has
                // rejoined or the longest rebalance timeout has passed.
                group.state = GroupState::PreparingRebalance;
                let rebalance_timeout =
                    group.members.values().map(|member| member.rebalance_timeout_ms).max().unwrap_or(0);
                group.rebalance_deadline_ms = now_ms + i64::from(rebalance_timeout);
            }
        }
        Ok(group)
    }
}

/// All groups this broker coordinates: classic groups here, consumer-protocol groups in
/// `consumer`. A group id is one or the other, as in Kafka 4.0: a JoinGroup to a consumer group
/// is refused with INCONSISTENT_GROUP_PROTOCOL, a ConsumerGroupHeartbeat to a classic group with
/// GROUP_ID_NOT_FOUND. An empty group of either kind is forgotten, so its id is free again.
#[derive(Debug, Default)]
pub struct Coordinator {
    config: GroupConfig,
    groups: HashMap<String, Group>,
    next_member_number: u64,
    consumer: ConsumerGroups,
    /// Classic groups whose stored record is out of date (`take_changes`).
    changed: BTreeSet<String>,
    /// The number of the last snapshot `take_changes` handed out.
    change_sequence: u64,
    /// Whether the SyncGroup answers of a completed generation wait in `held_sync_answers`
    /// until its record is stored (the broker's setting; tests of the state machine alone get
    /// them at once).
    hold_sync_answers: bool,
    held_sync_answers: Vec<HeldSyncAnswer>,
}

/// A member's SyncGroup answer, held until the generation it names is stored.
pub type HeldSyncAnswer = (oneshot::Sender<SyncResult>, SyncResult);

/// The commit version `check_any_commit` takes for a TxnOffsetCommit, whose member epoch is
/// checked whatever its version (as Kafka does).
pub const TRANSACTIONAL_COMMIT: i16 = i16::MAX;

impl Coordinator {
    pub fn new(config: GroupConfig) -> Self {
        Coordinator {
            config,
            groups: HashMap::new(),
            next_member_number: 0,
            consumer: ConsumerGroups::new(config.consumer),
            changed: BTreeSet::new(),
            change_sequence: 0,
            hold_sync_answers: false,
            held_sync_answers: Vec::new(),
        }
    }

    /// Holds the SyncGroup answers of each completed generation (every member's assignment)
    /// until the caller has stored the group's record and sends them (`take_held_sync_answers`),
    /// so that no member learns of a generation a crash could make the broker forget.
    pub fn hold_sync_answers_until_stored(mut self) -> Self {
        self.hold_sync_answers = true;
        self
    }

    /// The answers held since the last call, to send once `take_changes`' records are stored.
    pub fn take_held_sync_answers(&mut self) -> Vec<HeldSyncAnswer> {
        std::mem::take(&mut self.held_sync_answers)
    }

    /// A coordinator holding the groups of a previous run, as stored (`metadata.rs`), at
    /// `now_ms`: every member's session and every join phase starts now. A record that does
    /// not make a valid group is reported and left out (its members rejoin).
    pub fn restore(config: GroupConfig, records: BTreeMap<String, GroupRecord>, now_ms: i64) -> Self {
        let mut coordinator = Coordinator::new(config);
        let (mut n_classic, mut n_consumer) = (0usize, 0usize);
        for (group_id, record) in records {
            let restored = match record {
                GroupRecord::Classic(record) => Group::restore(record, now_ms).map(|group| {
                    n_classic += 1;
                    tracing::info!(group = %group_id, generation = group.generation_id, state = %group.state.name(), members = group.members.len(), "loaded classic group");
                    coordinator.groups.insert(group_id.clone(), group);
                }),
                GroupRecord::Consumer(record) => coordinator.consumer.restore(&group_id, record, now_ms).map(|()| {
                    n_consumer += 1;
                }),
            };
            if let Err(reason) = restored {
                tracing::warn!(group = %group_id, %reason, "a stored consumer group is not valid; it starts empty and its members rejoin");
            }
        }
        if n_classic + n_consumer > 0 {
            tracing::info!(classic = n_classic, consumer = n_consumer, "consumer groups loaded");
        }
        coordinator
    }

    /// Snapshots of the groups whose stored record changed since the last call, to be written
    /// (`GroupStore::write`) once the group lock is let go. Cheap when nothing changed.
    pub fn take_changes(&mut self) -> Vec<GroupChange> {
        let consumer_changed = self.consumer.take_changed();
        if self.changed.is_empty() && consumer_changed.is_empty() {
            return Vec::new();
        }
        let mut changed = std::mem::take(&mut self.changed);
        changed.extend(consumer_changed);
        let mut changes = Vec::new();
        for group_id in changed {
            let record = if let Some(record) = self.consumer.record(&group_id) {
                Some(GroupRecord::Consumer(record))
            } else {
                match self.groups.get(&group_id).map(Group::record) {
                    // Mid-rebalance with nothing new to store: the sync will store it.
                    Some(Stored::Unchanged) => continue,
                    Some(Stored::Record(record)) => Some(GroupRecord::Classic(record)),
                    Some(Stored::Deleted) | None => None,
                }
            };
            self.change_sequence += 1;
            changes.push(GroupChange { group_id, sequence: self.change_sequence, record });
        }
        changes
    }

    /// The consumer-protocol groups, for describing them.
    pub fn consumer(&self) -> &ConsumerGroups {
        &self.consumer
    }

    /// Handles a ConsumerGroupHeartbeat (see `consumer_group.rs`), unless the id names a
    /// classic group with members.
    pub fn consumer_heartbeat(
        &mut self,
        group_id: &str,
        request: Heartbeat,
        topics: &dyn TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatAnswer, HeartbeatRefusal> {
        if self.groups.get(group_id).is_some_and(|group| group.state != GroupState::Empty) {
            return Err(HeartbeatRefusal {
                error: ResponseError::GroupIdNotFound,
                message: format!("Group {group_id} is not a consumer group."),
            });
        }
        self.consumer.heartbeat(group_id, request, topics, now_ms)
    }

    /// Whether the group has members of either kind (then its offsets are in use: they are not
    /// expired, and the group may not be deleted).
    pub fn has_members(&self, group_id: &str) -> bool {
        self.state(group_id).is_some_and(|state| state != GroupState::Empty)
            || self.consumer.contains(group_id)
    }

    /// The OffsetCommit (or TxnOffsetCommit, with `TRANSACTIONAL_COMMIT`) check for a group of
    /// either kind: a consumer group checks the member epoch, a classic group the generation.
    pub fn check_any_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation_or_member_epoch: i32,
        commit_version: i16,
    ) -> Result<(), ResponseError> {
        match self.consumer.check_commit(group_id, member_id, generation_or_member_epoch, commit_version) {
            Some(outcome) => outcome,
            None => self.check_commit(group_id, member_id, generation_or_member_epoch),
        }
    }

    /// Handles a JoinGroup. The result arrives on `respond`, now or when the rebalance completes.
    pub fn join(
        &mut self,
        group_id: &str,
        request: JoinRequest,
        now_ms: i64,
        respond: oneshot::Sender<JoinResult>,
    ) {
        let config = self.config;
        if self.consumer.contains(group_id) {
            // Kafka 4.0 lets classic members join a consumer group only while upgrading it;
            // here a group is one kind or the other.
            let _ =
                respond.send(JoinResult::error(ResponseError::InconsistentGroupProtocol, &request.member_id));
            return;
        }
        if request.session_timeout_ms < config.min_session_timeout_ms
            || request.session_timeout_ms > config.max_session_timeout_ms
        {
            let _ = respond.send(JoinResult::error(ResponseError::InvalidSessionTimeout, &request.member_id));
            return;
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            let _ =
                respond.send(JoinResult::error(ResponseError::InconsistentGroupProtocol, &request.member_id));
            return;
        }
        let member_number = self.next_member_number;
        let group = self.groups.entry(group_id.to_string()).or_insert_with(Group::new);
        if !group.members.is_empty() {
            let shared = request.protocols.iter().any(|(name, _)| {
                group.members.values().all(|member| member.protocols.iter().any(|(other, _)| other == name))
            });
            if request.protocol_type != group.protocol_type || !shared {
                let _ = respond
                    .send(JoinResult::error(ResponseError::InconsistentGroupProtocol, &request.member_id));
                return;
            }
        }
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            // A static member that restarts takes over its old identity.
            let previous = request.group_instance_id.as_ref().and_then(|instance| {
                group
                    .members
                    .iter()
                    .find(|(_, member)| member.group_instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone())
            });
            if let Some(previous) = previous {
                if rejoins_unchanged(group, &previous, &request) {
                    self.next_member_number += 1;
                    let member_id = format!("{}-{}-{member_number}", request.client_id, now_ms);
                    let _ =
                        respond.send(rejoin_without_rebalance(group, &previous, member_id, request, now_ms));
                    group.debug_check(config.max_members);
                    self.changed.insert(group_id.to_string());
                    return;
                }
                if let Some(mut old) = group.members.remove(&previous) {
                    if let Some(join) = old.pending_join.take() {
                        let _ = join.send(JoinResult::error(ResponseError::FencedInstanceId, &previous));
                    }
                    if group.leader.as_deref() == Some(previous.as_str()) {
                        group.leader = None;
                    }
                    // The old member id is gone for good; its successor joins below.
                    self.changed.insert(group_id.to_string());
                }
            }
            self.next_member_number += 1;
            member_id = format!("{}-{}-{member_number}", request.client_id, now_ms);
            if request.requires_known_member_id && request.group_instance_id.is_none() {
                // Ids handed out but not used yet count against the group's size too, so a
                // client that keeps asking cannot grow this table without bound.
                if group.members.len() + group.pending_member_ids.len() >= config.max_members {
                    let _ = respond.send(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
                    return;
                }
                group
                    .pending_member_ids
                    .insert(member_id.clone(), now_ms + i64::from(request.session_timeout_ms));
                let _ = respond.send(JoinResult::error(ResponseError::MemberIdRequired, &member_id));
                return;
            }
        } else if !group.members.contains_key(&member_id)
            && group.pending_member_ids.remove(&member_id).is_none()
        {
            let _ = respond.send(JoinResult::error(ResponseError::UnknownMemberId, &member_id));
            return;
        }
        if !group.members.contains_key(&member_id) && group.members.len() >= config.max_members {
            let _ = respond.send(JoinResult::error(ResponseError::GroupMaxSizeReached, &member_id));
            return;
        }
        let member = group.members.entry(member_id.clone()).or_insert_with(|| Member {
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_heartbeat_ms: now_ms,
            pending_join: None,
            pending_sync: None,
        });
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms.max(request.session_timeout_ms);
        member.last_heartbeat_ms = now_ms;
        if let Some(stale) = member.pending_join.replace(respond) {
            let _ = stale.send(JoinResult::error(ResponseError::UnknownMemberId, &member_id));
        }
        group.protocol_type = request.protocol_type;
        if group.state != GroupState::PreparingRebalance {
            prepare_rebalance(group, now_ms, config.initial_rebalance_delay_ms);
        }
        maybe_complete_join(group, now_ms);
        group.debug_check(config.max_members);
    }

    /// Handles a SyncGroup. The result arrives on `respond` once the leader's assignment is in.
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
        respond: oneshot::Sender<SyncResult>,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            let _ = respond.send(Err(ResponseError::UnknownMemberId));
            return;
        };
        let Some(member) = group.members.get_mut(member_id) else {
            let _ = respond.send(Err(ResponseError::UnknownMemberId));
            return;
        };
        if generation_id != group.generation_id {
            let _ = respond.send(Err(ResponseError::IllegalGeneration));
            return;
        }
        member.last_heartbeat_ms = now_ms;
        let answer = (Some(group.protocol_type.clone()), group.protocol_name.clone());
        match group.state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                let _ = respond.send(Err(ResponseError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let _ = respond.send(Ok((answer.0, answer.1, member.assignment.clone())));
            }
            GroupState::CompletingRebalance => {
                member.pending_sync = Some(respond);
                if group.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in group.members.iter_mut() {
                        member.assignment = assignments.remove(id).unwrap_or_default();
                        if let Some(waiting) = member.pending_sync.take() {
                            let synced = Ok((answer.0.clone(), answer.1.clone(), member.assignment.clone()));
                            if self.hold_sync_answers {
                                self.held_sync_answers.push((waiting, synced));
                            } else {
                                let _ = waiting.send(synced);
                            }
                        }
                    }
                    group.state = GroupState::Stable;
                    self.changed.insert(group_id.to_string());
                }
            }
        }
        group.debug_check(self.config.max_members);
    }

    /// Handles a Heartbeat: keeps the member alive and tells it whether to rejoin.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let group = self.groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let member = group.members.get_mut(member_id).ok_or(ResponseError::UnknownMemberId)?;
        member.last_heartbeat_ms = now_ms;
        if group.state == GroupState::PreparingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if generation_id != group.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a LeaveGroup for one member, named by member id or (static) instance id.
    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let group = self.groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let member_id = if member_id.is_empty() {
            let instance = instance_id.ok_or(ResponseError::UnknownMemberId)?;
            group
                .members
                .iter()
                .find(|(_, member)| member.group_instance_id.as_deref() == Some(instance))
                .map(|(id, _)| id.clone())
                .ok_or(ResponseError::UnknownMemberId)?
        } else {
            member_id.to_string()
        };
        if group.members.contains_key(&member_id) {
            self.changed.insert(group_id.to_string());
        }
        remove_member(group, &member_id, ResponseError::UnknownMemberId);
        after_membership_change(group, now_ms, self.config.initial_rebalance_delay_ms);
        group.debug_check(self.config.max_members);
        Ok(())
    }

    /// Handles time: expired sessions, a join phase whose time is up, a leader that never synced.
    pub fn tick(&mut self, now_ms: i64) {
        self.consumer.tick(now_ms);
        let delay = self.config.initial_rebalance_delay_ms;
        let max_members = self.config.max_members;
        for (group_id, group) in self.groups.iter_mut() {
            group.pending_member_ids.retain(|_, expires| *expires > now_ms);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, member)| {
                    member.pending_join.is_none()
                        && now_ms - member.last_heartbeat_ms > i64::from(member.session_timeout_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in &expired {
                tracing::info!(group = %group_id, member = %member_id, "member session expired");
                remove_member(group, member_id, ResponseError::UnknownMemberId);
            }
            if !expired.is_empty() {
                after_membership_change(group, now_ms, delay);
                self.changed.insert(group_id.clone());
            }
            if group.state == GroupState::CompletingRebalance && now_ms >= group.sync_deadline_ms {
                tracing::info!(group = %group_id, "leader did not sync in time; rebalancing again");
                prepare_rebalance(group, now_ms, delay);
            }
            let was_empty = group.state == GroupState::Empty;
            maybe_complete_join(group, now_ms);
            if group.state == GroupState::Empty && !was_empty {
                // Nobody rejoined in time: the stored group goes.
                self.changed.insert(group_id.clone());
            }
            group.debug_check(max_members);
        }
        // Forget groups with nothing left in them; committed offsets live elsewhere.
        self.groups
            .retain(|_, group| group.state != GroupState::Empty || !group.pending_member_ids.is_empty());
    }

    /// The group's state, or `None` when it has no members (Kafka shows such a group as Empty
    /// if it has committed offsets, and as Dead otherwise).
    pub fn state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|group| group.state)
    }

    /// Whether `member_id` of `generation_id` may commit offsets now: the check OffsetCommit makes.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        let group = self.groups.get(group_id);
        let active = group.filter(|group| group.state != GroupState::Empty);
        if generation_id < 0 && member_id.is_empty() {
            // A commit from a consumer that manages its own assignment: allowed while no group
            // members are active, as in Kafka.
            return match active {
                None => Ok(()),
                Some(_) => Err(ResponseError::UnknownMemberId),
            };
        }
        let group = active.ok_or(ResponseError::UnknownMemberId)?;
        if !group.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation_id != group.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        // As in Kafka: during the join phase the current generation still owns its partitions
        // (the members learn of the rebalance from their heartbeats), so its commits count;
        // refusing them makes the next owner process those records again, and kafkajs treats
        // the refusal of a manual commit as fatal. Once the join phase is over the partitions
        // are being handed out anew, so no commit is taken until the assignment is synced.
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.groups.get(group_id)?;
        let protocol_name = group.protocol_name.clone().unwrap_or_default();
        let members = group
            .members
            .iter()
            .map(|(id, member)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: member
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol_name)
                    .map(|(_, metadata)| metadata.clone())
                    .unwrap_or_default(),
                assignment: if group.state == GroupState::Stable {
                    member.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        Some(GroupDescription {
            state: group.state,
            protocol_type: group.protocol_type.clone(),
            protocol_name,
            members,
        })
    }

    /// Every group with its number of members (the consumer_group_members metric).
    pub fn member_counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> =
            self.groups.iter().map(|(id, group)| (id.clone(), group.members.len())).collect();
        counts.extend(self.consumer.member_counts());
        counts
    }

    /// Every group with members: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups.iter().map(|(id, group)| (id.clone(), group.protocol_type.clone(), group.state)).collect()
    }
}

/// Whether a static member rejoining under a new member id can take its old place without a
/// rebalance (KIP-345): the group is Stable and the member's metadata for the group's protocol
/// is what it was, so its assignment still holds. A changed subscription rebalances as usual.
fn rejoins_unchanged(group: &Group, previous: &str, request: &JoinRequest) -> bool {
    let (Some(protocol), Some(old)) = (&group.protocol_name, group.members.get(previous)) else {
        return false;
    };
    let metadata_of = |protocols: &[(String, Bytes)]| {
        protocols.iter().find(|(name, _)| name == protocol).map(|(_, metadata)| metadata.clone())
    };
    group.state == GroupState::Stable
        && metadata_of(&request.protocols).is_some()
        && metadata_of(&request.protocols) == metadata_of(&old.protocols)
}

/// Moves a static member's place (its assignment, leadership) to `member_id` and answers its
/// JoinGroup with the current generation. As Kafka does, the answer names the leader as it was,
/// so a restarted leader acts as a follower and does not compute an assignment that a Stable
/// group would not hand out; it gets its old one from SyncGroup.
fn rejoin_without_rebalance(
    group: &mut Group,
    previous: &str,
    member_id: String,
    request: JoinRequest,
    now_ms: i64,
) -> JoinResult {
    let leader_before = group.leader.clone().unwrap_or_default();
    let mut member = group.members.remove(previous).expect("checked by rejoins_unchanged");
    if let Some(waiting) = member.pending_join.take() {
        let _ = waiting.send(JoinResult::error(ResponseError::FencedInstanceId, previous));
    }
    if let Some(waiting) = member.pending_sync.take() {
        let _ = waiting.send(Err(ResponseError::FencedInstanceId));
    }
    member.client_id = request.client_id;
    member.client_host = request.client_host;
    member.session_timeout_ms = request.session_timeout_ms;
    member.rebalance_timeout_ms = request.rebalance_timeout_ms.max(request.session_timeout_ms);
    member.protocols = request.protocols;
    member.last_heartbeat_ms = now_ms;
    if group.leader.as_deref() == Some(previous) {
        group.leader = Some(member_id.clone());
    }
    group.members.insert(member_id.clone(), member);
    JoinResult {
        error: None,
        generation_id: group.generation_id,
        protocol_type: Some(group.protocol_type.clone()),
        protocol_name: group.protocol_name.clone(),
        leader: leader_before,
        member_id,
        members: Vec::new(),
    }
}

/// Removes a member, answering anything it was waiting for with `error`.
fn remove_member(group: &mut Group, member_id: &str, error: ResponseError) {
    if let Some(mut member) = group.members.remove(member_id) {
        if let Some(join) = member.pending_join.take() {
            let _ = join.send(JoinResult::error(error, member_id));
        }
        if let Some(sync) = member.pending_sync.take() {
            let _ = sync.send(Err(error));
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

fn after_membership_change(group: &mut Group, now_ms: i64, initial_delay_ms: i64) {
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.generation_id += 1;
        group.protocol_name = None;
        group.leader = None;
    } else if group.state != GroupState::PreparingRebalance {
        prepare_rebalance(group, now_ms, initial_delay_ms);
    }
}

/// Starts a join phase: every member must rejoin; waiting syncs are told to.
fn prepare_rebalance(group: &mut Group, now_ms: i64, initial_delay_ms: i64) {
    let was_empty = group.state == GroupState::Empty;
    group.state = GroupState::PreparingRebalance;
    let rebalance_timeout =
        group.members.values().map(|member| member.rebalance_timeout_ms).max().unwrap_or(0);
    group.rebalance_deadline_ms = now_ms + i64::from(rebalance_timeout);
    group.initial_delay_until_ms =
        if was_empty { now_ms + initial_delay_ms.min(i64::from(rebalance_timeout)) } else { 0 };
    for member in group.members.values_mut() {
        if let Some(sync) = member.pending_sync.take() {
            let _ = sync.send(Err(ResponseError::RebalanceInProgress));
        }
    }
}

/// Ends the join phase when every member has rejoined (and a new group's initial delay is over),
/// or when time is up, dropping members that did not rejoin.
fn maybe_complete_join(group: &mut Group, now_ms: i64) {
    if group.state != GroupState::PreparingRebalance {
        return;
    }
    let all_joined = group.members.values().all(|member| member.pending_join.is_some());
    let ready =
        (all_joined && now_ms >= group.initial_delay_until_ms) || now_ms >= group.rebalance_deadline_ms;
    if !ready {
        return;
    }
    let missing: Vec<String> = group
        .members
        .iter()
        .filter(|(_, member)| member.pending_join.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    for member_id in missing {
        remove_member(group, &member_id, ResponseError::UnknownMemberId);
    }
    // The new generation is exactly the members that rejoined in this phase.
    debug_assert!(group.members.values().all(|member| member.pending_join.is_some()));
    group.generation_id += 1;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.leader = None;
        group.protocol_name = None;
        return;
    }
    group.protocol_name = select_protocol(group);
    if group.leader.as_ref().is_none_or(|leader| !group.members.contains_key(leader)) {
        group.leader = group.members.keys().next().cloned();
    }
    let leader = group.leader.clone().unwrap_or_default();
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let roster: Vec<(String, Option<String>, Bytes)> = group
        .members
        .iter()
        .map(|(id, member)| {
            let metadata = member
                .protocols
                .iter()
                .find(|(name, _)| *name == protocol)
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            (id.clone(), member.group_instance_id.clone(), metadata)
        })
        .collect();
    group.state = GroupState::CompletingRebalance;
    let sync_timeout = group.members.values().map(|member| member.rebalance_timeout_ms).max().unwrap_or(0);
    group.sync_deadline_ms = now_ms + i64::from(sync_timeout);
    for (id, member) in group.members.iter_mut() {
        member.last_heartbeat_ms = now_ms;
        if let Some(join) = member.pending_join.take() {
            let _ = join.send(JoinResult {
                error: None,
                generation_id: group.generation_id,
                protocol_type: Some(group.protocol_type.clone()),
                protocol_name: group.protocol_name.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader { roster.clone() } else { Vec::new() },
            });
        }
    }
}

/// The protocol every member supports that most members prefer, as Kafka chooses it.
fn select_protocol(group: &Group) -> Option<String> {
    let mut candidates: Vec<&str> =
        group.members.values().next()?.protocols.iter().map(|(name, _)| name.as_str()).collect();
    candidates.retain(|name| {
        group.members.values().all(|member| member.protocols.iter().any(|(other, _)| other == name))
    });
    let candidate_set: HashSet<&str> = candidates.iter().copied().collect();
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for member in group.members.values() {
        if let Some((name, _)) =
            member.protocols.iter().find(|(name, _)| candidate_set.contains(name.as_str()))
        {
            *votes.entry(name.as_str()).or_default() += 1;
        }
    }
    // Ties go to the earlier candidate in the first member's order.
    candidates
        .iter()
        .max_by_key(|name| {
            (
                votes.get(*name).copied().unwrap_or(0),
                std::cmp::Reverse(candidates.iter().position(|c| c == *name)),
            )
        })
        .map(|name| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: i64 = 3_000;

    fn coordinator() -> Coordinator {
        Coordinator::new(GroupConfig { initial_rebalance_delay_ms: DELAY, ..GroupConfig::default() })
    }

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".to_string(),
            protocols: protocols
                .iter()
                .map(|name| (name.to_string(), Bytes::from(format!("meta-{name}"))))
                .collect(),
            requires_known_member_id: true,
        }
    }

    /// Joins with an empty member id, answers MEMBER_ID_REQUIRED, joins again; returns the
    /// member id and the pending second join.
    fn join_new(
        coordinator: &mut Coordinator,
        group: &str,
        protocols: &[&str],
        now: i64,
    ) -> (String, oneshot::Receiver<JoinResult>) {
        let (respond, mut first) = oneshot::channel();
        coordinator.join(group, request("", protocols), now, respond);
        let first = first.try_recv().expect("answered at once");
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let (respond, second) = oneshot::channel();
        coordinator.join(group, request(&first.member_id, protocols), now, respond);
        (first.member_id, second)
    }

    fn sync(
        coordinator: &mut Coordinator,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> oneshot::Receiver<SyncResult> {
        let (respond, result) = oneshot::channel();
        coordinator.sync(group, member, generation, assignments, now, respond);
        result
    }

    #[test]
    fn two_members_form_a_group_after_the_initial_delay_and_sync_the_leaders_assignment() {
        let mut coordinator = coordinator();
        let (first, mut first_join) = join_new(&mut coordinator, "g", &["range"], 0);
        let (second, mut second_join) = join_new(&mut coordinator, "g", &["range"], 100);
        assert!(first_join.try_recv().is_err(), "a new group waits for the initial delay");
        coordinator.tick(DELAY - 1);
        assert!(first_join.try_recv().is_err());
        coordinator.tick(DELAY);
        let leader = first_join.try_recv().expect("joined");
        let follower = second_join.try_recv().expect("joined");
        assert_eq!((leader.error, leader.generation_id, leader.leader.as_str()), (None, 1, first.as_str()));
        assert_eq!(leader.protocol_name.as_deref(), Some("range"));
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        assert!(follower.members.is_empty(), "followers see none");
        assert_eq!(coordinator.state("g"), Some(GroupState::CompletingRebalance));

        let mut follower_sync = sync(&mut coordinator, "g", &second, 1, Vec::new(), DELAY);
        assert!(follower_sync.try_recv().is_err(), "waits for the leader");
        let assignments =
            vec![(first.clone(), Bytes::from_static(b"a0")), (second.clone(), Bytes::from_static(b"a1"))];
        let mut leader_sync = sync(&mut coordinator, "g", &first, 1, assignments, DELAY);
        assert_eq!(leader_sync.try_recv().expect("synced").expect("ok").2, Bytes::from_static(b"a0"));
        assert_eq!(follower_sync.try_recv().expect("synced").expect("ok").2, Bytes::from_static(b"a1"));
        assert_eq!(coordinator.state("g"), Some(GroupState::Stable));
        assert_eq!(coordinator.heartbeat("g", &second, 1, DELAY + 10), Ok(()));
        assert_eq!(coordinator.heartbeat("g", &second, 0, DELAY + 10), Err(ResponseError::IllegalGeneration));
        assert_eq!(coordinator.heartbeat("g", "nobody", 1, DELAY + 10), Err(ResponseError::UnknownMemberId));
    }

    /// A group of one member, Stable at generation 1; returns its member id.
    fn stable_group_of_one(coordinator: &mut Coordinator, group: &str) -> String {
        let (member, mut join) = join_new(coordinator, group, &["range"], 0);
        coordinator.tick(DELAY);
        assert_eq!(join.try_recv().expect("joined").generation_id, 1);
        sync(coordinator, group, &member, 1, vec![(member.clone(), Bytes::from_static(b"all"))], DELAY);
        assert_eq!(coordinator.state(group), Some(GroupState::Stable));
        member
    }

    fn static_request(member_id: &str, instance: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest { group_instance_id: Some(instance.to_string()), ..request(member_id, protocols) }
    }

    #[test]
    fn a_static_member_restarting_gets_its_assignment_back_without_a_rebalance() {
        let mut coordinator = coordinator();
        let (respond, mut first_join) = oneshot::channel();
        coordinator.join("g", static_request("", "a", &["range"]), 0, respond);
        let (respond, mut second_join) = oneshot::channel();
        coordinator.join("g", static_request("", "b", &["range"]), 0, respond);
        coordinator.tick(DELAY);
        let (first, second) =
            (first_join.try_recv().expect("joined"), second_join.try_recv().expect("joined"));
        let leader = first.leader.clone();
        let assignments = vec![
            (first.member_id.clone(), Bytes::from_static(b"p0")),
            (second.member_id.clone(), Bytes::from_static(b"p1")),
        ];
        sync(&mut coordinator, "g", &leader, 1, assignments, DELAY);
        let follower =
            if leader == first.member_id { second.member_id.clone() } else { first.member_id.clone() };
        sync(&mut coordinator, "g", &follower, 1, Vec::new(), DELAY);
        assert_eq!(coordinator.state("g"), Some(GroupState::Stable));

        // Both restart (the leader too): a new member id each, the same generation, no rebalance.
        for (instance, old_id, assignment) in
            [("a", &first.member_id, b"p0"), ("b", &second.member_id, b"p1")]
        {
            let (respond, mut rejoin) = oneshot::channel();
            coordinator.join("g", static_request("", instance, &["range"]), DELAY + 100, respond);
            let rejoined = rejoin.try_recv().expect("answered at once");
            assert_eq!((rejoined.error, rejoined.generation_id), (None, 1), "{instance}");
            assert_ne!(&rejoined.member_id, old_id);
            assert!(rejoined.members.is_empty(), "no member computes a new assignment");
            assert_ne!(rejoined.leader, rejoined.member_id, "a restarted leader acts as a follower");
            assert_eq!(coordinator.state("g"), Some(GroupState::Stable));
            let mut synced = sync(&mut coordinator, "g", &rejoined.member_id, 1, Vec::new(), DELAY + 100);
            assert_eq!(synced.try_recv().expect("synced").expect("ok").2, Bytes::from_static(assignment));
            assert_eq!(coordinator.heartbeat("g", &rejoined.member_id, 1, DELAY + 200), Ok(()));
            assert_eq!(
                coordinator.heartbeat("g", old_id, 1, DELAY + 200),
                Err(ResponseError::UnknownMemberId)
            );
        }
        assert_eq!(coordinator.describe("g").expect("group").members.len(), 2);

        // A changed subscription (other metadata for the protocol) is a rebalance, as for any
        // member.
        let mut changed = static_request("", "a", &["range"]);
        changed.protocols = vec![("range".to_string(), Bytes::from_static(b"another subscription"))];
        let (respond, _rejoin) = oneshot::channel();
        coordinator.join("g", changed, DELAY + 300, respond);
        assert_eq!(coordinator.state("g"), Some(GroupState::PreparingRebalance));
    }

    #[test]
    fn a_new_member_makes_the_others_rejoin_through_their_heartbeats() {
        let mut coordinator = coordinator();
        let first = stable_group_of_one(&mut coordinator, "g");
        let (_second, mut second_join) = join_new(&mut coordinator, "g", &["range"], 5_000);
        assert_eq!(coordinator.heartbeat("g", &first, 1, 5_001), Err(ResponseError::RebalanceInProgress));
        let (respond, mut rejoin) = oneshot::channel();
        coordinator.join("g", request(&first, &["range"]), 5_002, respond);
        // Not a new group: no initial delay once everyone has rejoined.
        assert_eq!(rejoin.try_recv().expect("joined").generation_id, 2);
        assert_eq!(second_join.try_recv().expect("joined").generation_id, 2);
    }

    #[test]
    fn commits_count_during_the_join_phase_and_wait_for_the_synced_assignment_after_it() {
        let mut coordinator = coordinator();
        let first = stable_group_of_one(&mut coordinator, "g");
        let (second, mut second_join) = join_new(&mut coordinator, "g", &["range"], 5_000);
        assert_eq!(coordinator.state("g"), Some(GroupState::PreparingRebalance));
        // Regression: these were refused with REBALANCE_IN_PROGRESS, which Kafka accepts; a
        // kafkajs member committing by hand crashed on it when another member's session expired.
        assert_eq!(coordinator.check_commit("g", &first, 1), Ok(()));
        let (respond, mut rejoin) = oneshot::channel();
        coordinator.join("g", request(&first, &["range"]), 5_001, respond);
        assert_eq!(rejoin.try_recv().expect("joined").generation_id, 2);
        second_join.try_recv().expect("joined");
        assert_eq!(coordinator.state("g"), Some(GroupState::CompletingRebalance));
        assert_eq!(coordinator.check_commit("g", &first, 2), Err(ResponseError::RebalanceInProgress));
        assert_eq!(coordinator.check_commit("g", &first, 1), Err(ResponseError::IllegalGeneration));
        let assignments =
            vec![(first.clone(), Bytes::from_static(b"a0")), (second.clone(), Bytes::from_static(b"a1"))];
        sync(&mut coordinator, "g", &first, 2, assignments, 5_002);
        assert_eq!(coordinator.state("g"), Some(GroupState::Stable));
        assert_eq!(coordinator.check_commit("g", &second, 2), Ok(()));
    }

    #[test]
    fn a_silent_member_is_expired_and_the_rest_rebalance() {
        let mut coordinator = coordinator();
        let (first, mut first_join) = join_new(&mut coordinator, "g", &["range"], 0);
        let (second, mut second_join) = join_new(&mut coordinator, "g", &["range"], 0);
        coordinator.tick(DELAY);
        first_join.try_recv().expect("joined");
        second_join.try_recv().expect("joined");
        sync(&mut coordinator, "g", &first, 1, Vec::new(), DELAY);
        // Only the first keeps heartbeating.
        assert_eq!(coordinator.heartbeat("g", &first, 1, DELAY + 9_000), Ok(()));
        coordinator.tick(DELAY + 10_001);
        assert_eq!(coordinator.state("g"), Some(GroupState::PreparingRebalance));
        assert_eq!(
            coordinator.heartbeat("g", &second, 1, DELAY + 10_002),
            Err(ResponseError::UnknownMemberId)
        );
        let (respond, mut rejoin) = oneshot::channel();
        coordinator.join("g", request(&first, &["range"]), DELAY + 10_003, respond);
        let result = rejoin.try_recv().expect("joined");
        assert_eq!((result.generation_id, result.members.len()), (2, 1));
    }

    #[test]
    fn the_last_member_leaving_empties_the_group_and_allows_simple_commits() {
        let mut coordinator = coordinator();
        let member = stable_group_of_one(&mut coordinator, "g");
        assert_eq!(coordinator.check_commit("g", "", -1), Err(ResponseError::UnknownMemberId));
        assert_eq!(coordinator.check_commit("g", &member, 1), Ok(()));
        assert_eq!(coordinator.leave("g", &member, None, DELAY + 1), Ok(()));
        assert_eq!(coordinator.state("g"), Some(GroupState::Empty));
        assert_eq!(coordinator.check_commit("g", "", -1), Ok(()));
        assert_eq!(coordinator.check_commit("g", &member, 1), Err(ResponseError::UnknownMemberId));
        coordinator.tick(DELAY + 2);
        assert_eq!(coordinator.state("g"), None, "forgotten once empty");
    }

    #[test]
    fn joins_that_cannot_work_are_refused() {
        let mut coordinator = coordinator();
        let check = |coordinator: &mut Coordinator, request: JoinRequest, expected: ResponseError| {
            let (respond, mut result) = oneshot::channel();
            coordinator.join("g", request, 0, respond);
            assert_eq!(result.try_recv().expect("answered").error, Some(expected));
        };
        check(
            &mut coordinator,
            JoinRequest { session_timeout_ms: 10, ..request("", &["range"]) },
            ResponseError::InvalidSessionTimeout,
        );
        check(&mut coordinator, request("made-up", &["range"]), ResponseError::UnknownMemberId);
        stable_group_of_one(&mut coordinator, "g");
        check(
            &mut coordinator,
            JoinRequest { requires_known_member_id: false, ..request("", &["roundrobin"]) },
            ResponseError::InconsistentGroupProtocol,
        );
    }

    #[test]
    fn member_ids_handed_out_but_unused_are_bounded_by_the_group_size() {
        let mut coordinator = Coordinator::new(GroupConfig {
            max_members: 3,
            initial_rebalance_delay_ms: DELAY,
            ..GroupConfig::default()
        });
        let ask = |coordinator: &mut Coordinator| {
            let (respond, mut result) = oneshot::channel();
            coordinator.join("g", request("", &["range"]), 0, respond);
            result.try_recv().expect("answered at once").error
        };
        for _ in 0..3 {
            assert_eq!(ask(&mut coordinator), Some(ResponseError::MemberIdRequired));
        }
        assert_eq!(ask(&mut coordinator), Some(ResponseError::GroupMaxSizeReached));
        // Unused ids expire with the session timeout, making room again.
        coordinator.tick(10_001);
        assert_eq!(ask(&mut coordinator), Some(ResponseError::MemberIdRequired));
    }

    /// The journal as a map: the changes taken so far, folded in through the stored bytes
    /// (a tombstone removes the group), as a restart reads them.
    fn store(coordinator: &mut Coordinator, journal: &mut BTreeMap<String, GroupRecord>) -> usize {
        let changes = coordinator.take_changes();
        for change in &changes {
            match &change.record {
                Some(record) => {
                    let decoded = crate::groups::metadata::decode(&crate::groups::metadata::encode(record))
                        .expect("decodes");
                    assert_eq!(&decoded, record);
                    journal.insert(change.group_id.clone(), decoded);
                }
                None => {
                    journal.remove(&change.group_id);
                }
            }
        }
        changes.len()
    }

    /// A Stable group of two, leader first, at generation 1 with assignments a0 and a1.
    fn stable_group_of_two(coordinator: &mut Coordinator) -> (String, String) {
        let (first, mut first_join) = join_new(coordinator, "g", &["range"], 0);
        let (second, mut second_join) = join_new(coordinator, "g", &["range"], 0);
        coordinator.tick(DELAY);
        assert_eq!(first_join.try_recv().expect("joined").leader, first);
        second_join.try_recv().expect("joined");
        let assignments =
            vec![(first.clone(), Bytes::from_static(b"a0")), (second.clone(), Bytes::from_static(b"a1"))];
        sync(coordinator, "g", &first, 1, assignments, DELAY);
        sync(coordinator, "g", &second, 1, Vec::new(), DELAY);
        assert_eq!(coordinator.state("g"), Some(GroupState::Stable));
        (first, second)
    }

    #[test]
    fn a_synced_generation_is_stored_and_carries_on_after_a_restart_without_a_rebalance() {
        let mut coordinator = coordinator();
        let mut journal = BTreeMap::new();
        let (respond, _pending) = oneshot::channel();
        coordinator.join("g", request("", &["range"]), 0, respond);
        assert_eq!(store(&mut coordinator, &mut journal), 0, "nothing stored before a generation is synced");
        let (first, second) = stable_group_of_two(&mut coordinator);
        assert_eq!(store(&mut coordinator, &mut journal), 1);
        // Heartbeats and commits change nothing stored.
        assert_eq!(coordinator.heartbeat("g", &second, 1, DELAY + 1), Ok(()));
        assert_eq!(store(&mut coordinator, &mut journal), 0, "a heartbeat writes nothing");

        let restart = 1_000_000;
        let mut restored = Coordinator::restore(coordinator.config, journal.clone(), restart);
        assert_eq!(restored.state("g"), Some(GroupState::Stable));
        for member in [&first, &second] {
            assert_eq!(restored.check_commit("g", member, 1), Ok(()), "the old generation commits");
            assert_eq!(restored.heartbeat("g", member, 1, restart + 1), Ok(()));
        }
        assert_eq!(restored.heartbeat("g", &second, 2, restart + 1), Err(ResponseError::IllegalGeneration));
        let mut synced = sync(&mut restored, "g", &second, 1, Vec::new(), restart + 2);
        let (protocol_type, protocol_name, assignment) = synced.try_recv().expect("answered").expect("ok");
        assert_eq!((protocol_type.as_deref(), protocol_name.as_deref()), (Some("consumer"), Some("range")));
        assert_eq!(assignment, Bytes::from_static(b"a1"));
        let before = coordinator.describe("g").expect("group");
        let after = restored.describe("g").expect("group");
        assert_eq!(
            (after.state, &after.protocol_type, &after.protocol_name),
            (before.state, &before.protocol_type, &before.protocol_name)
        );
        let members = |description: &GroupDescription| -> Vec<(String, String, String, Bytes, Bytes)> {
            description
                .members
                .iter()
                .map(|member| {
                    (
                        member.member_id.clone(),
                        member.client_id.clone(),
                        member.client_host.clone(),
                        member.metadata.clone(),
                        member.assignment.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(members(&after), members(&before));
        assert_eq!(store(&mut restored, &mut journal), 0, "loading writes nothing");

        // The next rebalance continues from the stored generation.
        let (_third, mut third_join) = join_new(&mut restored, "g", &["range"], restart + 3);
        for member in [&first, &second] {
            let (respond, _rejoin) = oneshot::channel();
            restored.join("g", request(member, &["range"]), restart + 4, respond);
        }
        assert_eq!(third_join.try_recv().expect("joined").generation_id, 2);
    }

    #[test]
    fn sync_answers_can_wait_until_the_generation_is_stored() {
        let mut coordinator = coordinator().hold_sync_answers_until_stored();
        let (first, mut first_join) = join_new(&mut coordinator, "g", &["range"], 0);
        let (second, mut second_join) = join_new(&mut coordinator, "g", &["range"], 0);
        coordinator.tick(DELAY);
        first_join.try_recv().expect("joined");
        second_join.try_recv().expect("joined");
        let mut follower = sync(&mut coordinator, "g", &second, 1, Vec::new(), DELAY);
        let assignments =
            vec![(first.clone(), Bytes::from_static(b"a0")), (second.clone(), Bytes::from_static(b"a1"))];
        let mut leader = sync(&mut coordinator, "g", &first, 1, assignments, DELAY);
        assert_eq!(coordinator.state("g"), Some(GroupState::Stable));
        assert!(follower.try_recv().is_err() && leader.try_recv().is_err(), "held until stored");
        assert_eq!(coordinator.take_changes().len(), 1);
        for (respond, answer) in coordinator.take_held_sync_answers() {
            let _ = respond.send(answer);
        }
        assert_eq!(follower.try_recv().expect("answered").expect("ok").2, Bytes::from_static(b"a1"));
        assert_eq!(leader.try_recv().expect("answered").expect("ok").2, Bytes::from_static(b"a0"));
        assert!(coordinator.take_held_sync_answers().is_empty());
    }

    #[test]
    fn a_group_stored_in_its_join_phase_loads_in_it_and_its_members_rejoin() {
        let mut coordinator = coordinator();
        let mut journal = BTreeMap::new();
        let (first, second) = stable_group_of_two(&mut coordinator);
        store(&mut coordinator, &mut journal);
        assert_eq!(coordinator.leave("g", &second, None, DELAY + 10), Ok(()));
        assert_eq!(store(&mut coordinator, &mut journal), 1, "a departure is stored");
        let GroupRecord::Classic(record) = &journal["g"] else { panic!("classic") };
        assert_eq!(
            (record.state, record.generation_id, record.members.len()),
            (ClassicRecordState::PreparingRebalance, 1, 1)
        );

        let restart = 1_000_000;
        let mut restored = Coordinator::restore(coordinator.config, journal.clone(), restart);
        assert_eq!(restored.state("g"), Some(GroupState::PreparingRebalance));
        assert_eq!(restored.check_commit("g", &first, 1), Ok(()), "the current generation still commits");
        assert_eq!(restored.check_commit("g", &second, 1), Err(ResponseError::UnknownMemberId));
        assert_eq!(restored.heartbeat("g", &first, 1, restart + 1), Err(ResponseError::RebalanceInProgress));
        let (respond, mut rejoin) = oneshot::channel();
        restored.join("g", request(&first, &["range"]), restart + 2, respond);
        let rejoined = rejoin.try_recv().expect("no initial delay: not a new group");
        assert_eq!((rejoined.generation_id, rejoined.leader.as_str()), (2, first.as_str()));

        // Emptied: the stored group goes too.
        assert_eq!(restored.leave("g", &first, None, restart + 3), Ok(()));
        assert_eq!(store(&mut restored, &mut journal), 1);
        assert!(journal.is_empty(), "{journal:?}");
    }

    #[test]
    fn a_loaded_group_whose_members_never_come_back_expires_from_load_time() {
        let mut coordinator = coordinator();
        let mut journal = BTreeMap::new();
        let (first, _second) = stable_group_of_two(&mut coordinator);
        store(&mut coordinator, &mut journal);
        let restart = 1_000_000;
        let mut restored = Coordinator::restore(coordinator.config, journal.clone(), restart);
        // Sessions (10 s) start at load time, however old the stored heartbeats are.
        restored.tick(restart + 10_000);
        assert_eq!(restored.state("g"), Some(GroupState::Stable));
        assert_eq!(store(&mut restored, &mut journal), 0);
        // Only the first comes back; the second expires and the group rebalances as usual.
        assert_eq!(restored.heartbeat("g", &first, 1, restart + 9_000), Ok(()));
        restored.tick(restart + 10_001);
        assert_eq!(restored.state("g"), Some(GroupState::PreparingRebalance));
        assert_eq!(store(&mut restored, &mut journal), 1, "the expiry is stored");
        let GroupRecord::Classic(record) = &journal["g"] else { panic!("classic") };
        assert_eq!(
            record.members.iter().map(|member| member.member_id.as_str()).collect::<Vec<_>>(),
            [first.as_str()]
        );
        // And nobody rejoining within the rebalance timeout empties it, stored as gone.
        restored.tick(restart + 10_001 + 20_000);
        assert_eq!(restored.state("g"), None);
        assert_eq!(store(&mut restored, &mut journal), 1);
        assert!(journal.is_empty(), "{journal:?}");
    }

    #[test]
    fn a_stored_group_that_is_not_valid_is_skipped_and_the_others_load() {
        let mut coordinator = coordinator();
        let mut journal = BTreeMap::new();
        stable_group_of_two(&mut coordinator);
        store(&mut coordinator, &mut journal);
        let GroupRecord::Classic(mut broken) = journal["g"].clone() else { panic!("classic") };
        broken.leader = Some("nobody".to_string());
        journal.insert("broken".to_string(), GroupRecord::Classic(broken.clone()));
        broken.members.clear();
        journal.insert("no-members".to_string(), GroupRecord::Classic(broken));
        let restored = Coordinator::restore(coordinator.config, journal, 1_000_000);
        assert_eq!(restored.state("g"), Some(GroupState::Stable));
        assert_eq!(restored.state("broken"), None, "a Stable group whose leader is not a member");
        assert_eq!(restored.state("no-members"), None);
    }

    #[test]
    fn a_static_member_taking_its_place_back_is_stored_under_its_new_id() {
        let mut coordinator = coordinator();
        let mut journal = BTreeMap::new();
        let (respond, mut join) = oneshot::channel();
        coordinator.join("g", static_request("", "a", &["range"]), 0, respond);
        coordinator.tick(DELAY);
        let old = join.try_recv().expect("joined").member_id;
        sync(&mut coordinator, "g", &old, 1, vec![(old.clone(), Bytes::from_static(b"p0"))], DELAY);
        store(&mut coordinator, &mut journal);
        let (respond, mut rejoin) = oneshot::channel();
        coordinator.join("g", static_request("", "a", &["range"]), DELAY + 1, respond);
        let new = rejoin.try_recv().expect("answered").member_id;
        assert_eq!(store(&mut coordinator, &mut journal), 1);
        let restored = Coordinator::restore(coordinator.config, journal, 1_000_000);
        assert_eq!(restored.check_commit("g", &new, 1), Ok(()));
        assert_eq!(restored.check_commit("g", &old, 1), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn the_protocol_most_members_prefer_among_those_all_support_wins() {
        let mut coordinator = coordinator();
        let (_, mut first) = join_new(&mut coordinator, "g", &["cooperative-sticky", "range"], 0);
        let (_, _second) = join_new(&mut coordinator, "g", &["range", "cooperative-sticky"], 0);
        let (_, _third) = join_new(&mut coordinator, "g", &["range"], 0);
        coordinator.tick(DELAY);
        assert_eq!(first.try_recv().expect("joined").protocol_name.as_deref(), Some("range"));
    }
}
