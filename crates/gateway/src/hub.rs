//! The MQTT sessions of one gateway and what flows to them: subscriptions, retained messages,
//! commands waiting for their device, and the QoS 1/2 exchanges of each session's outgoing
//! messages. No I/O: connections ([`crate::mqtt`]) and the log follower ([`crate::fanout`])
//! call in, and get back the packets to write, so every rule here is a unit test.
//!
//! # Sessions
//!
//! A session outlives its connection unless it is clean: MQTT 3.1.1 Clean Session 0, or MQTT 5
//! Session Expiry Interval above 0. While its client is away it keeps its subscriptions, the
//! QoS 1 and 2 messages matching them (at most [`HubConfig::max_queued_messages`]; QoS 0 ones
//! are not kept, as in Mosquitto), the messages sent but not acknowledged, and the QoS 2 packet
//! ids received but not released. On reconnect the unacknowledged ones are sent again with DUP
//! set, and PUBRELs owed are repeated (spec 4.4).
//!
//! # Persistence
//!
//! With [`HubConfig::persist_sessions`], every change that matters to a persistent session
//! (connect, subscribe, unsubscribe, messages sent and acknowledged, inbound QoS 2 ids,
//! disconnect) marks it dirty, and [`Hub::take_dirty`] hands out a [`SessionRecord`] of each
//! dirty session (or a tombstone for one that ended) for the caller to write to the cluster
//! (`crate::session_store`). The record holds positions in the pub/sub topic, not messages, so
//! each message handed in through [`Hub::publish_at`] carries its position. Records other
//! gateways wrote come back through [`Hub::apply_stored`]: a newer one takes the session over
//! from this gateway (its connection is told to close), and one for a client not connected here
//! is kept, so that the client's next CONNECT restores it ([`Hub::begin_restore`],
//! [`Hub::finish_restore`]).
//!
//! # Outgoing flow
//!
//! Messages wait in the session's queue in arrival order. [`Hub::pump`] moves them to the wire
//! while fewer than the client's Receive Maximum (and ours) QoS 1/2 messages are unacknowledged;
//! a PUBACK or PUBCOMP frees a slot. Expired messages (Message Expiry Interval) are dropped
//! from the queue, not sent.
//!
//! # Commands
//!
//! A command for a device waits in the hub, not in a session, until the device is connected
//! with a subscription matching its `devices/{id}/messages/devicebound/` topic; then it moves
//! into that session's queue. It is delivered when the device acknowledges it (PUBACK), which
//! the caller records in the cluster; if the session ends first it goes back to wait, in order.
//! A command past its time-to-live is dropped wherever it is.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tidewater_mqtt::topic::matches;
use tidewater_mqtt::{Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode};
use tokio::sync::Notify;

use crate::message::Message;
use crate::session_record::{
    owed_messages, Owed, Position, SessionRecord, StoredAwaiting, StoredInFlight, StoredSubscription,
    StoredWill,
};
use crate::subscriptions::{ClientKey, Subscribed, Subscriptions};

/// How far (in records of the pub/sub topic, summed over its partitions) the gateway may read
/// past the positions last written for an idle persistent session before it writes them again,
/// so that restoring the session does not re-read a long stretch of the topic for nothing.
pub const POSITION_REFRESH_RECORDS: i64 = 10_000;

/// A command's position in the commands topic: partition and offset.
pub type CommandId = (i32, i64);

/// Limits of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most messages a session queues beyond those in flight; more are dropped.
    pub max_queued_messages: usize,
    /// Most QoS 1/2 messages sent to one client and not yet acknowledged (with the client's own
    /// Receive Maximum, the lower wins).
    pub max_in_flight: u16,
    /// Most commands waiting for one device; more drop the oldest.
    pub max_pending_commands: usize,
    /// Most subscriptions one session holds; more are refused (Quota exceeded).
    pub max_subscriptions: usize,
    /// Track what persistent sessions must write to the cluster (see the module docs). Off in
    /// tests that run without a cluster.
    pub persist_sessions: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_queued_messages: 1000,
            max_in_flight: 64,
            max_pending_commands: 100,
            max_subscriptions: 100,
            persist_sessions: false,
        }
    }
}

/// How long a session outlives its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// Ends with the connection (Clean Session 1, or Session Expiry Interval 0).
    AtDisconnect,
    After(Duration),
    /// 3.1.1 Clean Session 0, or MQTT 5's 0xFFFFFFFF.
    Never,
}

impl SessionExpiry {
    /// From MQTT 5's Session Expiry Interval; 3.1.1 passes `None` with Clean Session 0.
    pub fn from_interval(secs: u32) -> SessionExpiry {
        match secs {
            0 => SessionExpiry::AtDisconnect,
            u32::MAX => SessionExpiry::Never,
            secs => SessionExpiry::After(Duration::from_secs(u64::from(secs))),
        }
    }
}

/// What a connecting client asked for.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub clean_start: bool,
    pub expiry: SessionExpiry,
    pub version: ProtocolVersion,
    /// The client's Receive Maximum (65,535 when it sent none).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size, if it set one.
    pub maximum_packet_size: Option<u32>,
    /// The device the session belongs to, for command delivery. A device's session is keyed by
    /// the device id itself, which is how a command finds it.
    pub device: Option<String>,
    /// Which topics the client may receive, for clients under topic rules
    /// ([`crate::topic_rules`]): a message whose topic it refuses is not queued, so a wildcard
    /// subscription does not carry what a more specific deny rule refuses. `None`: everything.
    pub may_receive: Option<ReceiveCheck>,
}

/// Whether a client may receive a message on a topic; asked under the hub's lock, so it must
/// be cheap and must not block.
#[derive(Clone)]
pub struct ReceiveCheck(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for ReceiveCheck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ReceiveCheck")
    }
}

impl ReceiveCheck {
    fn allows(check: &Option<ReceiveCheck>, topic: &str) -> bool {
        check.as_ref().is_none_or(|check| (check.0)(topic))
    }
}

/// One message waiting for, or on, the wire to one client.
#[derive(Debug, Clone)]
struct Queued {
    message: Arc<Message>,
    qos: QoS,
    retain: bool,
    identifiers: Vec<u32>,
    command: Option<CommandId>,
    /// Where it is in the pub/sub topic, for a message read from there.
    position: Option<Position>,
}

/// The packet an in-flight message waits for; named after it, hence the shared prefix.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    PubAck,
    PubRec,
    /// PUBREL sent; the message itself is delivered.
    PubComp,
}

#[derive(Debug)]
struct InFlight {
    packet_id: PacketId,
    queued: Queued,
    awaiting: Awaiting,
}

/// How a connection is reached from outside its task: woken when the hub queued something for
/// it, told that a newer connection took its client id over (here or at another gateway), or
/// that the gateway is stopping. One allocation per connection, shared by the hub and the
/// client id table, and one thing for the connection to wait on.
#[derive(Debug, Default)]
pub struct ConnectionSignal {
    notify: Notify,
    taken_over: AtomicBool,
    shutting_down: AtomicBool,
}

impl ConnectionSignal {
    /// Something was queued for the connection. A wake while it is busy is kept until it next
    /// waits ([`Notify::notify_one`]'s permit).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// A newer connection took the client id over: the connection is to end.
    pub fn take_over(&self) {
        self.taken_over.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether [`ConnectionSignal::take_over`] was called.
    pub fn is_taken_over(&self) -> bool {
        self.taken_over.load(Ordering::Acquire)
    }

    /// The gateway is stopping: the connection is to end.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether [`ConnectionSignal::shut_down`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Resolves at the next [`ConnectionSignal::wake`], [`ConnectionSignal::take_over`] or
    /// [`ConnectionSignal::shut_down`] (or at once if one came while nobody waited).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// Which connection is attached to a session, and how to reach it.
#[derive(Debug)]
struct Attachment {
    connection_id: u64,
    signal: Arc<ConnectionSignal>,
}

#[derive(Debug)]
struct Session {
    device: Option<String>,
    may_receive: Option<ReceiveCheck>,
    subscriptions: BTreeMap<String, Subscribed>,
    queue: VecDeque<Queued>,
    /// In the order sent.
    in_flight: VecDeque<InFlight>,
    next_packet_id: u16,
    inbound_qos2: HashSet<PacketId>,
    attached: Option<Attachment>,
    expiry: SessionExpiry,
    /// Set while detached with a finite expiry.
    expires_at: Option<Instant>,
    version: ProtocolVersion,
    window: usize,
    maximum_packet_size: Option<u32>,
    /// A record of this session may be in the cluster, so its end must write a tombstone.
    recorded: bool,
    /// When its current (or last) connection was accepted, in Unix milliseconds.
    connected_at_ms: i64,
    /// Per pub/sub partition, the offset of the last message sent to the client.
    sent: BTreeMap<i32, i64>,
    /// The sum of the hub's read positions when its record was last taken.
    written_at_read: i64,
}

impl Session {
    fn new(options: &ConnectOptions, max_in_flight: u16) -> Session {
        Session {
            device: options.device.clone(),
            may_receive: options.may_receive.clone(),
            subscriptions: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_packet_id: 1,
            inbound_qos2: HashSet::new(),
            attached: None,
            expiry: options.expiry,
            expires_at: None,
            version: options.version,
            window: usize::from(options.receive_maximum.min(max_in_flight).max(1)),
            maximum_packet_size: options.maximum_packet_size,
            recorded: false,
            connected_at_ms: 0,
            sent: BTreeMap::new(),
            written_at_read: 0,
        }
    }

    /// Whether the cluster must hear of this session's changes.
    fn persists(&self) -> bool {
        self.expiry != SessionExpiry::AtDisconnect || self.recorded
    }

    /// Per pub/sub partition, the offset from which it may be owed messages: its oldest queued
    /// or unacknowledged message's, or `read` (where the hub has read to) if it has none there.
    fn positions(&self, read: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
        let mut positions = read.clone();
        let held = self.in_flight.iter().map(|flight| &flight.queued).chain(&self.queue);
        for (partition, offset) in held.filter_map(|queued| queued.position) {
            let entry = positions.entry(partition).or_insert(offset);
            *entry = (*entry).min(offset);
        }
        positions
    }

    /// The record of this session (see [`SessionRecord`]).
    fn record(&self, gateway: &str, read: &BTreeMap<i32, i64>, now: Instant, now_ms: i64) -> SessionRecord {
        let expires_at_ms = match (&self.attached, self.expires_at) {
            (None, Some(at)) => Some(now_ms.saturating_add(
                i64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX),
            )),
            _ => None,
        };
        let in_flight = self
            .in_flight
            .iter()
            .filter_map(|flight| {
                let (partition, offset) = flight.queued.position?;
                Some(StoredInFlight {
                    partition,
                    offset,
                    packet_id: flight.packet_id.get(),
                    qos: flight.queued.qos as u8,
                    awaiting: match flight.awaiting {
                        Awaiting::PubAck => StoredAwaiting::PubAck,
                        Awaiting::PubRec => StoredAwaiting::PubRec,
                        Awaiting::PubComp => StoredAwaiting::PubComp,
                    },
                    retain: flight.queued.retain,
                    identifiers: flight.queued.identifiers.clone(),
                })
            })
            .collect();
        let mut inbound_qos2: Vec<u16> = self.inbound_qos2.iter().map(|id| id.get()).collect();
        inbound_qos2.sort_unstable();
        SessionRecord {
            version: crate::session_record::RECORD_VERSION,
            gateway: gateway.to_string(),
            connected_at_ms: self.connected_at_ms,
            connected: self.attached.is_some(),
            expiry_secs: match self.expiry {
                SessionExpiry::AtDisconnect => Some(0),
                SessionExpiry::After(after) => Some(after.as_secs()),
                SessionExpiry::Never => None,
            },
            expires_at_ms,
            protocol_level: match self.version {
                ProtocolVersion::V311 => 4,
                ProtocolVersion::V5 => 5,
            },
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(filter, subscribed)| StoredSubscription::of(filter, subscribed))
                .collect(),
            positions: self.positions(read),
            sent: self.sent.clone(),
            in_flight,
            inbound_qos2,
            next_packet_id: self.next_packet_id,
        }
    }

    /// The next packet id not used by a message in flight.
    fn allocate_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let candidate = PacketId::new(self.next_packet_id);
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = candidate {
                if !self.in_flight.iter().any(|flight| flight.packet_id == id) {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The QoS a command is sent at, if this session takes commands on `topic`: the best
    /// matching subscription's, at most 1.
    fn command_qos(&self, topic: &str) -> Option<QoS> {
        self.subscriptions
            .iter()
            .filter(|(filter, _)| matches(topic, filter))
            .map(|(_, subscribed)| subscribed.options.qos.min(QoS::AtLeastOnce))
            .max()
    }

    fn wake(&self) {
        if let Some(attached) = &self.attached {
            attached.signal.wake();
        }
    }
}

/// The devicebound topic of a device, where its commands are published.
pub fn devicebound_topic(device: &str) -> String {
    format!("devices/{device}/messages/devicebound/")
}

/// A command waiting for its device.
#[derive(Debug, Clone)]
struct PendingCommand {
    id: CommandId,
    message: Arc<Message>,
}

/// What [`Hub::pump`] gives a connection to write.
#[derive(Debug, Default, PartialEq)]
pub struct Pumped {
    pub packets: Vec<Packet>,
    /// Commands sent at QoS 0 (the device subscribed at QoS 0): delivered once written, as
    /// there will be no PUBACK; to record like acknowledged ones.
    pub delivered: Vec<(String, CommandId)>,
}

/// What an acknowledgement from the client led to.
#[derive(Debug, Default, PartialEq)]
pub struct AckOutcome {
    /// PUBREL for a PUBREC.
    pub reply: Option<Packet>,
    /// A command now delivered, to record: the device and the command.
    pub delivered: Option<(String, CommandId)>,
}

#[derive(Debug, Default)]
struct HubState {
    /// Boxed: a session is some 300 bytes, and a hash table keeps an eighth or more of its
    /// slots empty (up to half just after it grew), each as large as an entry.
    sessions: HashMap<ClientKey, Box<Session>>,
    subscriptions: Subscriptions,
    retained: BTreeMap<String, Arc<Message>>,
    commands: HashMap<String, VecDeque<PendingCommand>>,
    /// Commands known delivered (by any gateway), until their expiry, so that one read again
    /// after its delivery record is not queued again.
    delivered: HashMap<CommandId, i64>,
    /// Messages dropped because a session's queue was full.
    dropped: u64,
    /// Per pub/sub partition, the next offset the hub will be handed (see [`Hub::publish_at`]).
    read: BTreeMap<i32, i64>,
    /// Records of sessions this gateway does not hold, as other gateways (or an earlier run of
    /// this one) wrote them.
    stored: HashMap<ClientKey, SessionRecord>,
    /// Sessions whose record must be written; one that no longer exists gets a tombstone if it
    /// is in `ended_recorded`.
    dirty: HashSet<ClientKey>,
    ended_recorded: HashSet<ClientKey>,
    /// Wills waiting out their delay in the sessions topic, by client, as last read (or
    /// written here).
    wills: HashMap<ClientKey, StoredWill>,
    /// Wills this gateway claimed, to claim each once.
    wills_claimed: HashSet<(ClientKey, i64)>,
    /// Wills whose claim this gateway won, to publish.
    wills_won: Vec<(ClientKey, StoredWill)>,
}

/// All MQTT sessions of one gateway; see the module documentation.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    /// This gateway process, in the records it writes.
    instance: String,
    state: Mutex<HubState>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(HubConfig::default())
    }
}

/// A session record to write: the client id, and the record or `None` for a tombstone.
pub type RecordToWrite = (ClientKey, Option<SessionRecord>);

/// The pub/sub offsets a restoring session must re-read: per partition, from and until.
pub type ReplayRanges = BTreeMap<i32, (i64, i64)>;

/// The PUBLISH for a queued message.
fn publish_packet(queued: &Queued, packet_id: Option<PacketId>, dup: bool, now_ms: i64) -> Publish {
    let message = &queued.message;
    let mut properties = message.properties.clone();
    properties.message_expiry_interval_secs = message.remaining_expiry_secs(now_ms);
    properties.subscription_identifiers = queued.identifiers.clone();
    Publish {
        dup,
        qos: queued.qos,
        retain: queued.retain,
        topic: message.topic.clone(),
        packet_id,
        properties,
        payload: message.payload.clone(),
    }
}

fn fits(publish: &Publish, version: ProtocolVersion, maximum_packet_size: Option<u32>) -> bool {
    let Some(maximum) = maximum_packet_size else { return true };
    Packet::Publish(publish.clone())
        .to_bytes(version)
        .is_ok_and(|bytes| u32::try_from(bytes.len()).is_ok_and(|len| len <= maximum))
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        let instance = random.iter().map(|byte| format!("{byte:02x}")).collect();
        Hub { config, instance, state: Mutex::new(HubState::default()) }
    }

    /// This gateway process's id in the session records it writes.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A poisoned lock means a connection task panicked mid-update; the maps stay usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Attaches connection `connection_id` to `client`'s session, starting a new one if asked
    /// or if there is none. Returns whether a session was present, and the packets owed from
    /// before (PUBLISH with DUP, PUBREL) followed by whatever is queued (with the commands that
    /// sending delivers, as [`Hub::pump`]). `signal` is woken whenever something is queued for
    /// the connection, and told if another gateway's newer connection takes the session over.
    pub fn connect(
        &self,
        client: &str,
        options: ConnectOptions,
        connection_id: u64,
        signal: Arc<ConnectionSignal>,
        now_ms: i64,
    ) -> (bool, Pumped) {
        let mut state = self.lock();
        let existing = state.sessions.contains_key(client);
        if options.clean_start && existing {
            state.end_session(client);
        }
        // A session another gateway left in the cluster and the caller did not restore: this
        // connection's record replaces it.
        let stored = state.stored.remove(client).is_some();
        let present = existing && !options.clean_start;
        let max_in_flight = self.config.max_in_flight;
        let session = state
            .sessions
            .entry(client.to_string())
            .or_insert_with(|| Box::new(Session::new(&options, max_in_flight)));
        session.recorded |= stored;
        session.connected_at_ms = now_ms;
        session.expiry = options.expiry;
        session.expires_at = None;
        session.version = options.version;
        session.window = usize::from(options.receive_maximum.min(max_in_flight).max(1));
        // A smaller window than before (a lower Receive Maximum) leaves the extra messages in
        // flight; they are resent below and no new one goes out until the window has room.
        debug_assert!((1..=usize::from(max_in_flight.max(1))).contains(&session.window));
        session.maximum_packet_size = options.maximum_packet_size;
        session.device = options.device.clone();
        session.may_receive = options.may_receive.clone();
        session.attached = Some(Attachment { connection_id, signal });
        let mut packets = Vec::new();
        for flight in &session.in_flight {
            packets.push(match flight.awaiting {
                Awaiting::PubAck | Awaiting::PubRec => {
                    Packet::Publish(publish_packet(&flight.queued, Some(flight.packet_id), true, now_ms))
                }
                Awaiting::PubComp => Packet::PubRel(PubResponse {
                    packet_id: flight.packet_id,
                    reason_code: ReasonCode::Success,
                    properties: Default::default(),
                }),
            });
        }
        state.take_commands(client);
        let pumped = state.pump(client, connection_id, now_ms);
        packets.extend(pumped.packets);
        self.touch(&mut state, client);
        (present, Pumped { packets, delivered: pumped.delivered })
    }

    /// Marks `client`'s session dirty if its record must be written (see the module docs).
    fn touch(&self, state: &mut HubState, client: &str) {
        // Checked before inserting: this runs on every acknowledgement, and the key is a copy.
        if self.config.persist_sessions
            && !state.dirty.contains(client)
            && state.sessions.get(client).is_some_and(|session| session.persists())
        {
            state.dirty.insert(client.to_string());
        }
    }

    /// Whether `client`'s session is persisted, so that a change to it is written before it
    /// is acknowledged (inbound QoS 2 ids).
    pub fn persists(&self, client: &str) -> bool {
        self.config.persist_sessions
            && self.lock().sessions.get(client).is_some_and(|session| session.persists())
    }

    /// The records to write now: one per dirty session, or a tombstone for one that ended. A
    /// record taken here is the session as it is now, so writing them in the order taken keeps
    /// the latest one last.
    pub fn take_dirty(&self, now: Instant, now_ms: i64) -> Vec<RecordToWrite> {
        let mut state = self.lock();
        let state = &mut *state;
        let read_sum: i64 = state.read.values().sum();
        let mut records = Vec::with_capacity(state.dirty.len());
        for client in state.dirty.drain() {
            match state.sessions.get_mut(&client) {
                Some(session) if session.persists() => {
                    session.recorded = true;
                    session.written_at_read = read_sum;
                    state.ended_recorded.remove(&client);
                    let record = session.record(&self.instance, &state.read, now, now_ms);
                    records.push((client, Some(record)));
                }
                _ => {
                    if state.ended_recorded.remove(&client) {
                        records.push((client, None));
                    }
                }
            }
        }
        records
    }

    /// Marks sessions dirty again after their records could not be written.
    pub fn retouch(&self, clients: impl IntoIterator<Item = ClientKey>) {
        let mut state = self.lock();
        for client in clients {
            let tombstone = state.ended_recorded.contains(&client);
            if tombstone || state.sessions.get(&client).is_some_and(|session| session.persists()) {
                state.dirty.insert(client);
            }
        }
    }

    /// Where the follower starts reading pub/sub partition `partition`.
    pub fn start_reading(&self, partition: i32, offset: i64) {
        self.lock().read.insert(partition, offset);
    }

    /// A record of the sessions topic (`None`: a tombstone). Another gateway's newer record
    /// takes the session over: a connection holding it here is told to close and the session is
    /// dropped without a tombstone. Records this process wrote are skipped.
    pub fn apply_stored(&self, client: &str, record: Option<SessionRecord>) {
        let mut state = self.lock();
        let Some(record) = record else {
            state.stored.remove(client);
            return;
        };
        if record.gateway == self.instance {
            return;
        }
        if let Some(session) = state.sessions.get(client) {
            if session.connected_at_ms > record.connected_at_ms {
                // An older connection's record, written elsewhere before ours: ours stands.
                return;
            }
            if let Some(attached) = &session.attached {
                attached.signal.take_over();
            }
            tracing::info!(client, gateway = record.gateway, "the session was taken over by another gateway");
            // Its record is the other gateway's now: no tombstone from here.
            if let Some(session) = state.sessions.get_mut(client) {
                session.recorded = false;
            }
            state.end_session(client);
            state.dirty.remove(client);
        }
        state.stored.insert(client.to_string(), record);
    }

    /// A will record of the sessions topic (`None`: a tombstone), this gateway's own included:
    /// a new will waits; the first claim of a waiting will wins, and if it is this gateway's
    /// the will is handed out by [`Hub::take_won_wills`]; later claims lose.
    pub fn apply_will(&self, client: &str, will: Option<StoredWill>) {
        let mut state = self.lock();
        let Some(will) = will else {
            state.wills.remove(client);
            return;
        };
        match &will.claimed_by {
            None => {
                // A repeat of the waiting will (this gateway inserted it before writing it)
                // keeps what is known of its claims.
                if !state.wills.get(client).is_some_and(|waiting| waiting.is_same_will(&will)) {
                    state.wills.insert(client.to_string(), will);
                }
            }
            Some(claimant) => {
                let Some(waiting) = state.wills.get_mut(client) else { return };
                if waiting.claimed_by.is_some() || !waiting.is_same_will(&will) {
                    return;
                }
                waiting.claimed_by = Some(claimant.clone());
                if *claimant == self.instance {
                    state.wills_won.push((client.to_string(), will));
                }
            }
        }
    }

    /// Claims for the wills that are due and not claimed yet, each once, to write.
    pub fn claim_due_wills(&self, now_ms: i64) -> Vec<(ClientKey, StoredWill)> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut claims = Vec::new();
        for (client, will) in &state.wills {
            if will.claimed_by.is_none()
                && will.due_at_ms <= now_ms
                && state.wills_claimed.insert((client.clone(), will.ended_at_ms))
            {
                claims.push((
                    client.clone(),
                    StoredWill { claimed_by: Some(self.instance.clone()), ..will.clone() },
                ));
            }
        }
        claims
    }

    /// The wills this gateway won the claim of: to publish, then to remove with a tombstone.
    pub fn take_won_wills(&self) -> Vec<(ClientKey, StoredWill)> {
        let mut state = self.lock();
        let HubState { wills, wills_claimed, wills_won, .. } = &mut *state;
        wills_claimed.retain(|(client, _)| wills.contains_key(client));
        std::mem::take(wills_won)
    }

    /// A claim that could not be written: it may be made again.
    pub fn claim_failed(&self, client: &str, ended_at_ms: i64) {
        self.lock().wills_claimed.remove(&(client.to_string(), ended_at_ms));
    }

    /// A new connection of `client` cancels its waiting will unless it is claimed already;
    /// whether there was one (the caller then writes the tombstone).
    pub fn cancel_will(&self, client: &str) -> bool {
        let mut state = self.lock();
        let waiting = state.wills.get(client).is_some_and(|will| will.claimed_by.is_none());
        if waiting {
            state.wills.remove(client);
        }
        waiting
    }

    /// The record to restore `client`'s session from, if this gateway does not hold it and the
    /// cluster does.
    pub fn restorable(&self, client: &str, now_ms: i64) -> Option<SessionRecord> {
        let state = self.lock();
        if state.sessions.contains_key(client) {
            return None;
        }
        state.stored.get(client).filter(|record| !record.is_expired(now_ms)).cloned()
    }

    /// Starts restoring `client`'s session from `record`: the session exists from now on with
    /// its subscriptions, detached, so messages read meanwhile queue in it. Returns the offsets
    /// to re-read before [`Hub::finish_restore`], or `None` if a session appeared meanwhile.
    pub fn begin_restore(
        &self,
        client: &str,
        record: &SessionRecord,
        options: &ConnectOptions,
    ) -> Option<ReplayRanges> {
        let mut state = self.lock();
        let state = &mut *state;
        if state.sessions.contains_key(client) {
            return None;
        }
        state.stored.remove(client);
        let mut session = Session::new(options, self.config.max_in_flight);
        session.recorded = true;
        session.connected_at_ms = record.connected_at_ms;
        session.next_packet_id = record.next_packet_id.max(1);
        session.inbound_qos2 = record.inbound_qos2.iter().filter_map(|&id| PacketId::new(id)).collect();
        session.sent = record.sent.clone();
        for (filter, subscribed) in record.subscriptions.iter().filter_map(StoredSubscription::subscribed) {
            if session.subscriptions.len() >= self.config.max_subscriptions {
                break;
            }
            state.subscriptions.subscribe(client, &filter, subscribed);
            session.subscriptions.insert(filter, subscribed);
        }
        state.sessions.insert(client.to_string(), Box::new(session));
        let ranges = state
            .read
            .iter()
            .map(|(&partition, &until)| {
                let from = record.positions.get(&partition).copied().unwrap_or(until).min(until);
                (partition, (from, until))
            })
            .collect();
        Some(ranges)
    }

    /// Finishes a restore: what the session owes from `replayed` (the pub/sub records in the
    /// ranges [`Hub::begin_restore`] gave) goes ahead of what was queued meanwhile.
    pub fn finish_restore(
        &self,
        client: &str,
        record: &SessionRecord,
        replayed: &[(Position, Arc<Message>)],
        now_ms: i64,
    ) {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(client) else { return };
        let owed = owed_messages(record, client, replayed, self.config.max_queued_messages, now_ms);
        let mut queue = VecDeque::with_capacity(owed.len() + session.queue.len());
        for owed in owed {
            match owed {
                Owed::InFlight { stored_idx, position, message } => {
                    let stored = &record.in_flight[stored_idx];
                    let Some(packet_id) = PacketId::new(stored.packet_id) else { continue };
                    let awaiting = match stored.awaiting {
                        StoredAwaiting::PubAck => Awaiting::PubAck,
                        StoredAwaiting::PubRec => Awaiting::PubRec,
                        StoredAwaiting::PubComp => Awaiting::PubComp,
                    };
                    let queued = Queued {
                        message: message.unwrap_or_else(|| Arc::new(Message::released())),
                        qos: QoS::from_u8(stored.qos).unwrap_or(QoS::AtLeastOnce),
                        retain: stored.retain,
                        identifiers: stored.identifiers.clone(),
                        command: None,
                        position: Some(position),
                    };
                    if session.in_flight.iter().all(|flight| flight.packet_id != packet_id) {
                        session.in_flight.push_back(InFlight { packet_id, queued, awaiting });
                    }
                }
                // Checked against the topic rules as a message queued live is: a restored
                // wildcard subscription must not carry what the rules now refuse.
                Owed::Queued { message, .. }
                    if !ReceiveCheck::allows(&session.may_receive, message.topic.as_str()) => {}
                Owed::Queued { position, message, qos, retain, identifiers } => {
                    queue.push_back(Queued {
                        message,
                        qos,
                        retain,
                        identifiers,
                        command: None,
                        position: Some(position),
                    });
                }
            }
        }
        queue.extend(session.queue.drain(..));
        queue.truncate(self.config.max_queued_messages);
        session.queue = queue;
    }

    /// Gives up a restore that could not re-read what the session owes: the session is removed
    /// again and its record kept, so the next attempt starts over and nothing is lost.
    pub fn abandon_restore(&self, client: &str, record: SessionRecord) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.remove(client) {
            for filter in session.subscriptions.keys() {
                state.subscriptions.unsubscribe(client, filter);
            }
        }
        state.dirty.remove(client);
        state.stored.insert(client.to_string(), record);
    }

    /// Detaches `connection_id` from `client`'s session (if it is still the one attached) and
    /// ends the session if it does not outlive its connection. `expiry` is an MQTT 5
    /// DISCONNECT's new Session Expiry Interval.
    pub fn disconnect(&self, client: &str, connection_id: u64, expiry: Option<SessionExpiry>) {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(client) else { return };
        if session.attached.as_ref().is_none_or(|attached| attached.connection_id != connection_id) {
            return;
        }
        session.attached = None;
        if let Some(expiry) = expiry {
            session.expiry = expiry;
        }
        match session.expiry {
            SessionExpiry::AtDisconnect => state.end_session(client),
            SessionExpiry::After(after) => session.expires_at = Some(Instant::now() + after),
            SessionExpiry::Never => {}
        }
        self.touch(&mut state, client);
    }

    /// Records `client`'s subscriptions and queues the retained messages they ask for (and,
    /// for a device subscribing to its devicebound topic, its waiting commands). Returns, per
    /// subscription, whether it replaced an existing one, or `Err(())` if it would have been one
    /// more than [`HubConfig::max_subscriptions`].
    pub fn subscribe(
        &self,
        client: &str,
        subscriptions: &[(String, Subscribed)],
        now_ms: i64,
    ) -> Vec<Result<bool, ()>> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(session) = state.sessions.get_mut(client) else {
            return vec![Ok(false); subscriptions.len()];
        };
        let mut existed = Vec::with_capacity(subscriptions.len());
        for (filter, subscribed) in subscriptions {
            if !session.subscriptions.contains_key(filter)
                && session.subscriptions.len() >= self.config.max_subscriptions
            {
                existed.push(Err(()));
                continue;
            }
            session.subscriptions.insert(filter.clone(), *subscribed);
            let replaced = state.subscriptions.subscribe(client, filter, *subscribed);
            existed.push(Ok(replaced));
            let shared = filter.starts_with(tidewater_mqtt::topic::SHARED_PREFIX);
            let send_retained = match subscribed.options.retain_handling {
                tidewater_mqtt::RetainHandling::SendAtSubscribe => true,
                tidewater_mqtt::RetainHandling::SendAtNewSubscribe => !replaced,
                tidewater_mqtt::RetainHandling::DoNotSend => false,
            };
            // Retained messages are not sent for shared subscriptions (spec 4.8.2).
            if send_retained && !shared {
                for message in state.retained.values() {
                    if matches(message.topic.as_str(), filter)
                        && !message.is_expired(now_ms)
                        && ReceiveCheck::allows(&session.may_receive, message.topic.as_str())
                    {
                        session.queue.push_back(Queued {
                            message: message.clone(),
                            qos: message.qos.min(subscribed.options.qos),
                            retain: true,
                            identifiers: subscribed.identifier.into_iter().collect(),
                            command: None,
                            position: None,
                        });
                    }
                }
            }
        }
        state.take_commands(client);
        self.touch(state, client);
        existed
    }

    /// Removes `client`'s subscriptions to `filters`; per filter, whether there was one.
    pub fn unsubscribe(&self, client: &str, filters: &[String]) -> Vec<bool> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(session) = state.sessions.get_mut(client) else { return vec![false; filters.len()] };
        let existed = filters
            .iter()
            .map(|filter| {
                session.subscriptions.remove(filter);
                state.subscriptions.unsubscribe(client, filter)
            })
            .collect();
        self.touch(state, client);
        existed
    }

    /// The packets connection `connection_id` of `client` can send now: queued messages, as
    /// far as the window allows. Nothing for a connection that was taken over, so that messages
    /// do not go out on a socket that is closing.
    pub fn pump(&self, client: &str, connection_id: u64, now_ms: i64) -> Pumped {
        let mut state = self.lock();
        let pumped = state.pump(client, connection_id, now_ms);
        if !pumped.packets.is_empty() {
            self.touch(&mut state, client);
        }
        pumped
    }

    /// Handles the client's PUBACK, PUBREC or PUBCOMP for `packet_id`.
    pub fn acknowledged(&self, client: &str, packet: &Packet) -> AckOutcome {
        let mut state = self.lock();
        let outcome = self.acknowledged_locked(&mut state, client, packet);
        self.touch(&mut state, client);
        outcome
    }

    fn acknowledged_locked(&self, state: &mut HubState, client: &str, packet: &Packet) -> AckOutcome {
        let Some(session) = state.sessions.get_mut(client) else { return AckOutcome::default() };
        let (response, expect) = match packet {
            Packet::PubAck(response) => (response, Awaiting::PubAck),
            Packet::PubRec(response) => (response, Awaiting::PubRec),
            Packet::PubComp(response) => (response, Awaiting::PubComp),
            _ => return AckOutcome::default(),
        };
        let position = session
            .in_flight
            .iter()
            .position(|flight| flight.packet_id == response.packet_id && flight.awaiting == expect);
        let Some(position) = position else {
            // A PUBREC for nothing we sent still gets its PUBREL, saying so (spec 4.3.3).
            let reply = (expect == Awaiting::PubRec).then(|| {
                Packet::PubRel(PubResponse {
                    packet_id: response.packet_id,
                    reason_code: ReasonCode::PacketIdentifierNotFound,
                    properties: Default::default(),
                })
            });
            return AckOutcome { reply, delivered: None };
        };
        match expect {
            Awaiting::PubRec if !response.reason_code.is_error() => {
                session.in_flight[position].awaiting = Awaiting::PubComp;
                let reply = Packet::PubRel(PubResponse {
                    packet_id: response.packet_id,
                    reason_code: ReasonCode::Success,
                    properties: Default::default(),
                });
                AckOutcome { reply: Some(reply), delivered: None }
            }
            _ => {
                // An error PUBACK or PUBREC also ends the exchange: the client refused the
                // message, and sending it again would be refused again.
                let flight = session.in_flight.remove(position).expect("the position was just found");
                let delivered = flight.queued.command.zip(session.device.clone());
                let Some((command, device)) = delivered else { return AckOutcome::default() };
                state.delivered.insert(command, flight.queued.message.expires_at_ms.unwrap_or(i64::MAX));
                AckOutcome { reply: None, delivered: Some((device, command)) }
            }
        }
    }

    /// Whether `client` already has QoS 2 message `packet_id` awaiting its PUBREL.
    pub fn inbound_qos2_pending(&self, client: &str, packet_id: PacketId) -> bool {
        self.lock().sessions.get(client).is_some_and(|session| session.inbound_qos2.contains(&packet_id))
    }

    /// How many QoS 2 messages from `client` await their PUBREL.
    pub fn inbound_qos2_count(&self, client: &str) -> usize {
        self.lock().sessions.get(client).map_or(0, |session| session.inbound_qos2.len())
    }

    pub fn inbound_qos2_received(&self, client: &str, packet_id: PacketId) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.get_mut(client) {
            session.inbound_qos2.insert(packet_id);
        }
        self.touch(&mut state, client);
    }

    /// Forgets QoS 2 message `packet_id` on its PUBREL; whether it was known.
    pub fn inbound_qos2_released(&self, client: &str, packet_id: PacketId) -> bool {
        let mut state = self.lock();
        let known =
            state.sessions.get_mut(client).is_some_and(|session| session.inbound_qos2.remove(&packet_id));
        if known {
            self.touch(&mut state, client);
        }
        known
    }

    /// Queues a live message for every matching subscription and wakes their connections.
    pub fn publish(&self, message: Arc<Message>, now_ms: i64) {
        let mut state = self.lock();
        self.publish_locked(&mut state, message, None, now_ms);
    }

    /// Queues record `offset` of pub/sub partition `partition` (`None` if it holds no MQTT
    /// message) as [`Hub::publish`] does, remembering its position: the hub has now read the
    /// partition up to it, and a persistent session's record names what it is owed by position.
    pub fn publish_at(&self, partition: i32, offset: i64, message: Option<Arc<Message>>, now_ms: i64) {
        let mut state = self.lock();
        let next = state.read.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        if let Some(message) = message {
            self.publish_locked(&mut state, message, Some((partition, offset)), now_ms);
        }
    }

    fn publish_locked(
        &self,
        state: &mut HubState,
        message: Arc<Message>,
        position: Option<Position>,
        now_ms: i64,
    ) {
        if message.is_expired(now_ms) {
            return;
        }
        let sessions = &state.sessions;
        let targets = state.subscriptions.matching(message.topic.as_str(), |client| {
            sessions.get(client).is_some_and(|session| session.attached.is_some())
        });
        for target in targets {
            if target.no_local && message.publisher.as_deref() == Some(target.client.as_str()) {
                continue;
            }
            let Some(session) = state.sessions.get_mut(&target.client) else { continue };
            if !ReceiveCheck::allows(&session.may_receive, message.topic.as_str()) {
                continue;
            }
            let qos = message.qos.min(target.qos);
            // A session whose client is away keeps QoS 1 and 2 messages only.
            if session.attached.is_none() && qos == QoS::AtMostOnce {
                continue;
            }
            if session.queue.len() >= self.config.max_queued_messages {
                state.dropped += 1;
                tracing::debug!(client = target.client, "a session's queue is full; message dropped");
                continue;
            }
            session.queue.push_back(Queued {
                message: message.clone(),
                qos,
                retain: message.retain && target.retain_as_published,
                identifiers: target.identifiers,
                command: None,
                position,
            });
            session.wake();
        }
    }

    /// Replaces the retained message of its topic; an empty payload removes it (spec 3.3.1.3).
    pub fn set_retained(&self, message: Arc<Message>) {
        let mut state = self.lock();
        let topic = message.topic.as_str().to_string();
        if message.payload.is_empty() {
            state.retained.remove(&topic);
        } else {
            state.retained.insert(topic, message);
        }
    }

    /// A command for `device` read from the commands topic.
    pub fn command(&self, device: &str, id: CommandId, message: Arc<Message>, now_ms: i64) {
        if message.is_expired(now_ms) {
            return;
        }
        let mut state = self.lock();
        if state.delivered.contains_key(&id) {
            return;
        }
        let pending = state.commands.entry(device.to_string()).or_default();
        if pending.iter().any(|command| command.id == id) {
            return;
        }
        if pending.len() >= self.config.max_pending_commands {
            let dropped = pending.pop_front();
            tracing::warn!(device, dropped = ?dropped.map(|command| command.id), "too many commands waiting for a device; the oldest was dropped");
        }
        pending.push_back(PendingCommand { id, message });
        // A device's session is keyed by its id; `take_commands` checks it is connected and
        // subscribed.
        state.take_commands(device);
    }

    /// A command delivered, maybe by another gateway: it no longer waits here.
    pub fn command_delivered(&self, device: &str, id: CommandId, expires_at_ms: i64) {
        let mut state = self.lock();
        state.delivered.insert(id, expires_at_ms);
        if let Some(pending) = state.commands.get_mut(device) {
            pending.retain(|command| command.id != id);
        }
    }

    /// Commands waiting for `device`.
    pub fn pending_commands(&self, device: &str) -> usize {
        self.lock().commands.get(device).map_or(0, VecDeque::len)
    }

    /// Ends sessions whose expiry passed, and forgets expired commands.
    pub fn sweep(&self, now: Instant, now_ms: i64) {
        let mut state = self.lock();
        let expired: Vec<ClientKey> = state
            .sessions
            .iter()
            .filter(|(_, session)| session.expires_at.is_some_and(|at| at <= now))
            .map(|(client, _)| client.clone())
            .collect();
        for client in expired {
            state.end_session(&client);
        }
        // Sessions left in the cluster by a gateway that is gone end here when they expire.
        let expired: Vec<ClientKey> = state
            .stored
            .iter()
            .filter(|(_, record)| record.is_expired(now_ms))
            .map(|(client, _)| client.clone())
            .collect();
        for client in expired {
            state.stored.remove(&client);
            state.ended_recorded.insert(client.clone());
            state.dirty.insert(client);
        }
        // An idle persistent session's positions fall behind what the hub read: write them again
        // now and then, so a restore does not re-read all of that.
        if self.config.persist_sessions {
            let read_sum: i64 = state.read.values().sum();
            let behind: Vec<ClientKey> = state
                .sessions
                .iter()
                .filter(|(_, session)| {
                    session.persists() && read_sum - session.written_at_read >= POSITION_REFRESH_RECORDS
                })
                .map(|(client, _)| client.clone())
                .collect();
            state.dirty.extend(behind);
        }
        state.commands.retain(|_, pending| {
            pending.retain(|command| !command.message.is_expired(now_ms));
            !pending.is_empty()
        });
        state.delivered.retain(|_, expires_at_ms| *expires_at_ms > now_ms);
    }

    /// How many sessions exist, and how many have a connection.
    pub fn session_counts(&self) -> (usize, usize) {
        let state = self.lock();
        let attached = state.sessions.values().filter(|session| session.attached.is_some()).count();
        (state.sessions.len(), attached)
    }
}

impl HubState {
    /// Removes a session and its subscriptions; commands it held go back to wait for the
    /// device, in their order, ahead of newer ones.
    fn end_session(&mut self, client: &str) {
        let Some(session) = self.sessions.remove(client).map(|session| *session) else { return };
        for filter in session.subscriptions.keys() {
            self.subscriptions.unsubscribe(client, filter);
        }
        if session.recorded {
            self.ended_recorded.insert(client.to_string());
            self.dirty.insert(client.to_string());
        }
        let Some(device) = session.device else { return };
        let held: Vec<PendingCommand> = session
            .in_flight
            .into_iter()
            .map(|flight| flight.queued)
            .chain(session.queue)
            .filter_map(|queued| queued.command.map(|id| PendingCommand { id, message: queued.message }))
            .filter(|command| !self.delivered.contains_key(&command.id))
            .collect();
        if !held.is_empty() {
            let pending = self.commands.entry(device).or_default();
            for command in held.into_iter().rev() {
                pending.push_front(command);
            }
        }
    }

    /// Moves the commands waiting for `client`'s device into its queue, if it is connected and
    /// subscribed to them.
    fn take_commands(&mut self, client: &str) {
        let Some(session) = self.sessions.get_mut(client) else { return };
        let (Some(device), true) = (session.device.clone(), session.attached.is_some()) else { return };
        let Some(qos) = session.command_qos(&devicebound_topic(&device)) else { return };
        let Some(pending) = self.commands.remove(&device) else { return };
        for command in pending {
            session.queue.push_back(Queued {
                message: command.message,
                qos,
                retain: false,
                identifiers: Vec::new(),
                command: Some(command.id),
                position: None,
            });
        }
        session.wake();
    }

    fn pump(&mut self, client: &str, connection_id: u64, now_ms: i64) -> Pumped {
        let Some(session) = self.sessions.get_mut(client) else { return Pumped::default() };
        if session.attached.as_ref().is_none_or(|attached| attached.connection_id != connection_id) {
            return Pumped::default();
        }
        let mut packets = Vec::new();
        let mut delivered = Vec::new();
        while let Some(front) = session.queue.front() {
            if front.qos != QoS::AtMostOnce && session.in_flight.len() >= session.window {
                break;
            }
            let queued = session.queue.pop_front().expect("front exists");
            if queued.message.is_expired(now_ms) {
                continue;
            }
            if queued.qos == QoS::AtMostOnce {
                let publish = publish_packet(&queued, None, false, now_ms);
                if fits(&publish, session.version, session.maximum_packet_size) {
                    packets.push(Packet::Publish(publish));
                }
                // A command sent at QoS 0 counts as delivered once written.
                if let (Some(command), Some(device)) = (queued.command, &session.device) {
                    self.delivered.insert(command, queued.message.expires_at_ms.unwrap_or(i64::MAX));
                    delivered.push((device.clone(), command));
                }
                continue;
            }
            let Some(packet_id) = session.allocate_packet_id() else {
                session.queue.push_front(queued);
                break;
            };
            let publish = publish_packet(&queued, Some(packet_id), false, now_ms);
            // Too big for the client: discarded as if sent (spec 3.1.2.11.4).
            if !fits(&publish, session.version, session.maximum_packet_size) {
                tracing::debug!(client, "a message over the client's Maximum Packet Size was dropped");
                continue;
            }
            let awaiting = if queued.qos == QoS::ExactlyOnce { Awaiting::PubRec } else { Awaiting::PubAck };
            // The window: a QoS 1 or 2 message goes out only into a free slot, under an id no
            // other message in flight holds (an acknowledgement must find exactly one).
            debug_assert!(session.in_flight.len() < session.window);
            debug_assert!(session.in_flight.iter().all(|flight| flight.packet_id != packet_id));
            if let Some((partition, offset)) = queued.position {
                let sent = session.sent.entry(partition).or_insert(offset);
                *sent = (*sent).max(offset);
            }
            session.in_flight.push_back(InFlight { packet_id, queued, awaiting });
            packets.push(Packet::Publish(publish));
        }
        Pumped { packets, delivered }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tidewater_mqtt::{Properties, SubscriptionOptions};

    use crate::message::test_message as message;

    fn options(clean_start: bool, expiry: SessionExpiry) -> ConnectOptions {
        ConnectOptions {
            clean_start,
            expiry,
            version: ProtocolVersion::V5,
            receive_maximum: 2,
            maximum_packet_size: None,
            device: None,
            may_receive: None,
        }
    }

    fn at(qos: QoS) -> Subscribed {
        Subscribed { options: SubscriptionOptions::qos(qos), identifier: None }
    }

    /// Each packet as `PUBLISH id topic payload [dup] [retain]`, `PUBREL id`, ...
    fn describe(packets: &[Packet]) -> Vec<String> {
        packets
            .iter()
            .map(|packet| match packet {
                Packet::Publish(publish) => format!(
                    "PUBLISH {} {} {}{}{}",
                    publish.packet_id.map_or(0, |id| id.get()),
                    publish.topic.as_str(),
                    String::from_utf8_lossy(&publish.payload),
                    if publish.dup { " dup" } else { "" },
                    if publish.retain { " retain" } else { "" },
                ),
                Packet::PubRel(response) => format!("PUBREL {}", response.packet_id),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn ack(kind: fn(PubResponse) -> Packet, id: u16) -> Packet {
        kind(PubResponse {
            packet_id: PacketId::new(id).expect("non-zero"),
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        })
    }

    #[test]
    fn the_window_bounds_unacknowledged_messages_and_an_ack_frees_a_slot() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("a", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        hub.subscribe("a", &[("t/#".into(), at(QoS::AtLeastOnce))], 0);
        for n in 0..3 {
            hub.publish(message("t/x", &n.to_string(), QoS::AtLeastOnce), 0);
        }
        hub.publish(message("t/x", "q0", QoS::AtMostOnce), 0);
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 1 t/x 0", "PUBLISH 2 t/x 1"]);
        assert_eq!(hub.acknowledged("a", &ack(Packet::PubAck, 1)), AckOutcome::default());
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 3 t/x 2", "PUBLISH 0 t/x q0"]);
    }

    #[test]
    fn qos2_goes_pubrec_pubrel_pubcomp_and_unknown_pubrec_is_answered() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("a", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        hub.subscribe("a", &[("t".into(), at(QoS::ExactlyOnce))], 0);
        hub.publish(message("t", "m", QoS::ExactlyOnce), 0);
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 1 t m"]);
        let outcome = hub.acknowledged("a", &ack(Packet::PubRec, 1));
        assert_eq!(describe(&outcome.reply.into_iter().collect::<Vec<_>>()), ["PUBREL 1"]);
        // A PUBACK does not end a QoS 2 exchange.
        hub.acknowledged("a", &ack(Packet::PubAck, 1));
        hub.acknowledged("a", &ack(Packet::PubComp, 1));
        let unknown = hub.acknowledged("a", &ack(Packet::PubRec, 9));
        assert!(matches!(
            unknown.reply,
            Some(Packet::PubRel(PubResponse { reason_code: ReasonCode::PacketIdentifierNotFound, .. }))
        ));
    }

    #[test]
    fn a_persistent_session_queues_while_away_and_resends_unacknowledged_with_dup() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("a", options(true, SessionExpiry::Never), 1, Arc::default(), 0);
        hub.subscribe("a", &[("t".into(), at(QoS::ExactlyOnce))], 0);
        hub.publish(message("t", "sent", QoS::AtLeastOnce), 0);
        hub.publish(message("t", "released", QoS::ExactlyOnce), 0);
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 1 t sent", "PUBLISH 2 t released"]);
        hub.acknowledged("a", &ack(Packet::PubRec, 2));
        hub.disconnect("a", 1, None);
        hub.publish(message("t", "while-away", QoS::AtLeastOnce), 0);
        hub.publish(message("t", "qos0-not-kept", QoS::AtMostOnce), 0);
        // A late disconnect of an older connection changes nothing.
        hub.disconnect("a", 0, None);
        let (present, owed) = hub.connect("a", options(false, SessionExpiry::Never), 2, Arc::default(), 0);
        assert!(present);
        assert_eq!(describe(&owed.packets), ["PUBLISH 1 t sent dup", "PUBREL 2"]);
        hub.acknowledged("a", &ack(Packet::PubAck, 1));
        assert_eq!(describe(&hub.pump("a", 2, 0).packets), ["PUBLISH 3 t while-away"]);
        // Clean start throws the session away.
        let (present, owed) =
            hub.connect("a", options(true, SessionExpiry::AtDisconnect), 3, Arc::default(), 0);
        assert!(!present);
        assert!(owed.packets.is_empty());
        hub.publish(message("t", "unsubscribed", QoS::AtLeastOnce), 0);
        assert!(hub.pump("a", 3, 0).packets.is_empty());
        hub.disconnect("a", 3, None);
        assert_eq!(hub.session_counts(), (0, 0));
    }

    #[test]
    fn a_connection_that_was_taken_over_is_given_nothing_more_to_send() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("a", options(true, SessionExpiry::Never), 1, Arc::default(), 0);
        hub.subscribe("a", &[("t".into(), at(QoS::AtLeastOnce))], 0);
        hub.connect("a", options(false, SessionExpiry::Never), 2, Arc::default(), 0);
        hub.publish(message("t", "m", QoS::AtLeastOnce), 0);
        assert!(hub.pump("a", 1, 0).packets.is_empty());
        assert_eq!(describe(&hub.pump("a", 2, 0).packets), ["PUBLISH 1 t m"]);
        // The old connection's end leaves the new one attached.
        hub.disconnect("a", 1, None);
        assert_eq!(hub.session_counts(), (1, 1));
    }

    fn persisting() -> Hub {
        Hub::new(HubConfig { persist_sessions: true, ..HubConfig::default() })
    }

    /// The dirty records as `client: tombstone` or `client: connected subscriptions`.
    fn written(hub: &Hub) -> Vec<String> {
        let mut records: Vec<String> = hub
            .take_dirty(Instant::now(), 0)
            .into_iter()
            .map(|(client, record)| match record {
                None => format!("{client}: tombstone"),
                Some(record) => format!(
                    "{client}: {} {:?}",
                    if record.connected { "connected" } else { "away" },
                    record.subscriptions.iter().map(|sub| sub.filter.as_str()).collect::<Vec<_>>()
                ),
            })
            .collect();
        records.sort();
        records
    }

    #[test]
    fn persistent_sessions_are_written_when_they_change_and_leave_a_tombstone_when_they_end() {
        let hub = persisting();
        hub.connect("clean", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        hub.subscribe("clean", &[("t".into(), at(QoS::AtLeastOnce))], 0);
        hub.connect("kept", options(true, SessionExpiry::Never), 2, Arc::default(), 0);
        assert_eq!(written(&hub), ["kept: connected []"], "a clean session writes nothing");
        assert!(written(&hub).is_empty(), "nothing changed since");
        hub.subscribe("kept", &[("t".into(), at(QoS::AtLeastOnce))], 0);
        hub.disconnect("kept", 2, None);
        hub.disconnect("clean", 1, None);
        assert_eq!(written(&hub), ["kept: away [\"t\"]"]);
        // A clean start ends it: a tombstone, and nothing for the clean session that follows.
        hub.connect("kept", options(true, SessionExpiry::AtDisconnect), 3, Arc::default(), 0);
        assert_eq!(written(&hub), ["kept: tombstone"]);
        hub.disconnect("kept", 3, None);
        assert!(written(&hub).is_empty());
    }

    #[test]
    fn acknowledged_messages_move_the_position_and_a_restore_owes_only_the_rest() {
        let hub = persisting();
        hub.start_reading(0, 100);
        hub.connect("a", options(true, SessionExpiry::Never), 1, Arc::default(), 0);
        hub.subscribe("a", &[("t".into(), at(QoS::AtLeastOnce))], 0);
        for offset in 100..104 {
            hub.publish_at(0, offset, Some(message("t", &offset.to_string(), QoS::AtLeastOnce)), 0);
        }
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 1 t 100", "PUBLISH 2 t 101"]);
        hub.acknowledged("a", &ack(Packet::PubAck, 2));
        let records = hub.take_dirty(Instant::now(), 0);
        let record = records[0].1.clone().expect("a record");
        assert_eq!(record.positions, [(0, 100)].into(), "100 is still unacknowledged");
        assert_eq!(record.sent, [(0, 101)].into());
        assert_eq!(
            record.in_flight.iter().map(|flight| (flight.offset, flight.packet_id)).collect::<Vec<_>>(),
            [(100, 1)]
        );

        // Another gateway, after this one died, restores it from the record.
        let other = persisting();
        other.start_reading(0, 105);
        other.apply_stored("a", Some(record.clone()));
        let restored = other.restorable("a", 0).expect("restorable");
        let ranges =
            other.begin_restore("a", &restored, &options(false, SessionExpiry::Never)).expect("ranges");
        assert_eq!(ranges, [(0, (100, 105))].into());
        // A message read live meanwhile queues after what is re-read.
        other.publish_at(0, 105, Some(message("t", "105", QoS::AtLeastOnce)), 0);
        let replayed: Vec<(Position, Arc<Message>)> = (100..105)
            .map(|offset| ((0, offset), message("t", &offset.to_string(), QoS::AtLeastOnce)))
            .collect();
        other.finish_restore("a", &restored, &replayed, 0);
        let (present, owed) = other.connect("a", options(false, SessionExpiry::Never), 7, Arc::default(), 0);
        assert!(present);
        // Packet ids go on from the record's, so none is reused while the client may hold it.
        assert_eq!(describe(&owed.packets), ["PUBLISH 1 t 100 dup", "PUBLISH 3 t 102"]);
        other.acknowledged("a", &ack(Packet::PubAck, 1));
        assert_eq!(describe(&other.pump("a", 7, 0).packets), ["PUBLISH 4 t 103"]);
        other.acknowledged("a", &ack(Packet::PubAck, 3));
        assert_eq!(describe(&other.pump("a", 7, 0).packets), ["PUBLISH 5 t 104"]);
        other.acknowledged("a", &ack(Packet::PubAck, 4));
        assert_eq!(describe(&other.pump("a", 7, 0).packets), ["PUBLISH 6 t 105"]);
    }

    #[test]
    fn a_restored_session_under_topic_rules_is_not_owed_what_it_may_not_receive() {
        let hub = persisting();
        hub.start_reading(0, 100);
        hub.connect("a", options(true, SessionExpiry::Never), 1, Arc::default(), 0);
        hub.subscribe("a", &[("#".into(), at(QoS::AtLeastOnce))], 0);
        let record = hub.take_dirty(Instant::now(), 0)[0].1.clone().expect("a record");

        let other = persisting();
        other.start_reading(0, 102);
        other.apply_stored("a", Some(record));
        let restored = other.restorable("a", 0).expect("restorable");
        let check = ReceiveCheck(Arc::new(|topic: &str| !topic.starts_with("secret/")));
        let ruled = ConnectOptions { may_receive: Some(check), ..options(false, SessionExpiry::Never) };
        other.begin_restore("a", &restored, &ruled).expect("ranges");
        let replayed: Vec<(Position, Arc<Message>)> = vec![
            ((0, 100), message("secret/1", "s", QoS::AtLeastOnce)),
            ((0, 101), message("open/1", "o", QoS::AtLeastOnce)),
        ];
        other.finish_restore("a", &restored, &replayed, 0);
        let (present, owed) = other.connect("a", ruled, 7, Arc::default(), 0);
        assert!(present);
        assert_eq!(describe(&owed.packets), ["PUBLISH 1 open/1 o"]);
    }

    #[test]
    fn a_newer_record_from_another_gateway_takes_the_session_over_and_an_older_one_does_not() {
        let hub = persisting();
        let signal = Arc::new(ConnectionSignal::default());
        hub.connect("a", options(true, SessionExpiry::Never), 1, signal.clone(), 1_000);
        let _ = written(&hub);
        let mut record = hub.take_dirty(Instant::now(), 0);
        assert!(record.is_empty());
        hub.subscribe("a", &[("t".into(), at(QoS::AtLeastOnce))], 0);
        record = hub.take_dirty(Instant::now(), 0);
        let mut elsewhere = record[0].1.clone().expect("a record");
        elsewhere.gateway = "other".into();
        elsewhere.connected_at_ms = 999;
        hub.apply_stored("a", Some(elsewhere.clone()));
        assert_eq!(hub.session_counts(), (1, 1), "an older connection's record changes nothing");
        let mine = SessionRecord {
            gateway: hub.instance().to_string(),
            connected_at_ms: 5_000,
            ..elsewhere.clone()
        };
        hub.apply_stored("a", Some(mine));
        assert_eq!(hub.session_counts(), (1, 1), "this gateway's own records are skipped");
        elsewhere.connected_at_ms = 2_000;
        hub.apply_stored("a", Some(elsewhere));
        assert_eq!(hub.session_counts(), (0, 0));
        assert!(written(&hub).is_empty(), "no tombstone: the session lives on at the other gateway");
        // The connection was told (a permit is waiting for it).
        assert!(signal.is_taken_over());
        let told = tokio::runtime::Builder::new_current_thread().enable_time().build().map(|runtime| {
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), signal.notified()).await.is_ok()
            })
        });
        assert!(matches!(told, Ok(true)));
        assert!(hub.restorable("a", 0).is_some(), "the client may come back here");
    }

    #[test]
    fn a_stored_session_past_its_expiry_is_ended_with_a_tombstone() {
        let hub = persisting();
        let record = SessionRecord {
            version: crate::session_record::RECORD_VERSION,
            gateway: "gone".into(),
            connected_at_ms: 0,
            connected: false,
            expiry_secs: Some(60),
            expires_at_ms: Some(60_000),
            protocol_level: 5,
            subscriptions: Vec::new(),
            positions: BTreeMap::new(),
            sent: BTreeMap::new(),
            in_flight: Vec::new(),
            inbound_qos2: Vec::new(),
            next_packet_id: 1,
        };
        hub.apply_stored("a", Some(record));
        hub.sweep(Instant::now(), 59_999);
        assert!(written(&hub).is_empty());
        assert!(hub.restorable("a", 59_999).is_some());
        hub.sweep(Instant::now(), 60_000);
        assert_eq!(written(&hub), ["a: tombstone"]);
        assert!(hub.restorable("a", 60_000).is_none());
    }

    #[test]
    fn a_due_will_is_claimed_once_and_published_by_the_first_claimant_only() {
        let will = tidewater_mqtt::Will {
            topic: tidewater_mqtt::Utf8Bytes::default(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        };
        let waiting = StoredWill::of(&will, None, "writer", 1, 5_000);
        let (here, there) = (persisting(), persisting());
        for hub in [&here, &there] {
            hub.apply_will("a", Some(waiting.clone()));
            assert!(hub.claim_due_wills(4_999).is_empty(), "not due yet");
        }
        let claim_here = here.claim_due_wills(5_000);
        let claim_there = there.claim_due_wills(5_000);
        assert_eq!(claim_here.len(), 1);
        assert!(here.claim_due_wills(6_000).is_empty(), "claimed once");
        // Both read the two claims in the topic's order: the first wins everywhere.
        for hub in [&here, &there] {
            hub.apply_will("a", Some(claim_there[0].1.clone()));
            hub.apply_will("a", Some(claim_here[0].1.clone()));
        }
        assert!(here.take_won_wills().is_empty());
        assert_eq!(there.take_won_wills().len(), 1);
        assert!(!there.cancel_will("a"), "a claimed will is no longer cancelled");
        // A reconnect before the will is due cancels it.
        let later = StoredWill::of(&will, None, "writer", 2, 9_000);
        here.apply_will("a", Some(later));
        assert!(here.cancel_will("a"));
        assert!(here.claim_due_wills(10_000).is_empty());
    }

    #[test]
    fn a_session_expires_after_its_interval() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("a", options(true, SessionExpiry::After(Duration::from_secs(60))), 1, Arc::default(), 0);
        hub.disconnect("a", 1, None);
        hub.sweep(Instant::now(), 0);
        assert_eq!(hub.session_counts(), (1, 0));
        hub.sweep(Instant::now() + Duration::from_secs(61), 0);
        assert_eq!(hub.session_counts(), (0, 0));
    }

    #[test]
    fn retained_messages_follow_retain_handling_and_are_cleared_by_an_empty_payload() {
        let hub = Hub::new(HubConfig::default());
        let mut retained = (*message("r/1", "one", QoS::AtLeastOnce)).clone();
        retained.retain = true;
        hub.set_retained(Arc::new(retained.clone()));
        hub.set_retained(message("r/2", "two", QoS::AtMostOnce));
        hub.connect("a", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        hub.subscribe("a", &[("r/#".into(), at(QoS::ExactlyOnce))], 0);
        assert_eq!(
            describe(&hub.pump("a", 1, 0).packets),
            ["PUBLISH 1 r/1 one retain", "PUBLISH 0 r/2 two retain"]
        );
        let mut new_only = at(QoS::AtMostOnce);
        new_only.options.retain_handling = tidewater_mqtt::RetainHandling::SendAtNewSubscribe;
        hub.subscribe("a", &[("r/#".into(), new_only)], 0);
        assert!(hub.pump("a", 1, 0).packets.is_empty(), "not a new subscription");
        // A live retained message keeps its flag only for Retain As Published.
        hub.publish(Arc::new(retained), 0);
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 0 r/1 one"]);
        hub.set_retained(message("r/1", "", QoS::AtMostOnce));
        hub.subscribe("a", &[("r/1".into(), at(QoS::AtMostOnce))], 0);
        assert!(hub.pump("a", 1, 0).packets.is_empty());
    }

    #[test]
    fn a_client_under_topic_rules_is_not_sent_what_it_may_not_receive() {
        let hub = Hub::new(HubConfig::default());
        let mut retained = (*message("secret/1", "s", QoS::AtLeastOnce)).clone();
        retained.retain = true;
        hub.set_retained(Arc::new(retained));
        let check = ReceiveCheck(Arc::new(|topic: &str| !topic.starts_with("secret/")));
        let ruled = ConnectOptions { may_receive: Some(check), ..options(true, SessionExpiry::AtDisconnect) };
        hub.connect("a", ruled, 1, Arc::default(), 0);
        hub.connect("b", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        for client in ["a", "b"] {
            hub.subscribe(client, &[("#".into(), at(QoS::AtLeastOnce))], 0);
        }
        hub.publish(message("secret/2", "s2", QoS::AtLeastOnce), 0);
        hub.publish(message("open/1", "o", QoS::AtLeastOnce), 0);
        assert_eq!(describe(&hub.pump("a", 1, 0).packets), ["PUBLISH 1 open/1 o"]);
        assert_eq!(
            describe(&hub.pump("b", 1, 0).packets),
            ["PUBLISH 1 secret/1 s retain", "PUBLISH 2 secret/2 s2"]
        );
    }

    #[test]
    fn subscriptions_past_the_limit_are_refused_but_replacing_one_is_not() {
        let hub = Hub::new(HubConfig { max_subscriptions: 2, ..HubConfig::default() });
        hub.connect("a", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        let outcomes = hub.subscribe(
            "a",
            &[
                ("x".into(), at(QoS::AtMostOnce)),
                ("y".into(), at(QoS::AtMostOnce)),
                ("z".into(), at(QoS::AtMostOnce)),
            ],
            0,
        );
        assert_eq!(outcomes, [Ok(false), Ok(false), Err(())]);
        assert_eq!(hub.subscribe("a", &[("y".into(), at(QoS::AtLeastOnce))], 0), [Ok(true)]);
        hub.unsubscribe("a", &["x".into()]);
        assert_eq!(hub.subscribe("a", &[("z".into(), at(QoS::AtMostOnce))], 0), [Ok(false)]);
    }

    #[test]
    fn no_local_withholds_a_clients_own_messages() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("publisher", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        let mut own = at(QoS::AtMostOnce);
        own.options.no_local = true;
        hub.subscribe("publisher", &[("t".into(), own)], 0);
        hub.publish(message("t", "mine", QoS::AtMostOnce), 0);
        assert!(hub.pump("publisher", 1, 0).packets.is_empty());
    }

    #[test]
    fn expired_messages_are_not_sent() {
        let hub = Hub::new(HubConfig::default());
        hub.connect("a", options(true, SessionExpiry::AtDisconnect), 1, Arc::default(), 0);
        hub.subscribe("a", &[("t".into(), at(QoS::AtLeastOnce))], 0);
        let mut expiring = (*message("t", "soon", QoS::AtLeastOnce)).clone();
        expiring.expires_at_ms = Some(10_000);
        hub.publish(Arc::new(expiring), 0);
        assert!(hub.pump("a", 1, 10_000).packets.is_empty());
    }

    #[test]
    fn a_command_waits_for_its_device_and_returns_to_wait_if_the_session_ends_unacknowledged() {
        let hub = Hub::new(HubConfig::default());
        let device =
            || ConnectOptions { device: Some("pump-1".into()), ..options(true, SessionExpiry::AtDisconnect) };
        let topic = devicebound_topic("pump-1");
        hub.command("pump-1", (0, 7), message(&topic, "reboot", QoS::AtLeastOnce), 0);
        hub.command("pump-1", (0, 7), message(&topic, "reboot", QoS::AtLeastOnce), 0);
        assert_eq!(hub.pending_commands("pump-1"), 1, "the same command read twice waits once");
        hub.connect("pump-1", device(), 1, Arc::default(), 0);
        assert!(hub.pump("pump-1", 1, 0).packets.is_empty(), "not subscribed yet");
        hub.subscribe("pump-1", &[("devices/pump-1/messages/devicebound/#".into(), at(QoS::AtLeastOnce))], 0);
        assert_eq!(
            describe(&hub.pump("pump-1", 1, 0).packets),
            ["PUBLISH 1 devices/pump-1/messages/devicebound/ reboot"]
        );
        hub.disconnect("pump-1", 1, None);
        assert_eq!(hub.pending_commands("pump-1"), 1, "unacknowledged: it waits again");
        hub.connect("pump-1", device(), 2, Arc::default(), 0);
        hub.subscribe("pump-1", &[("devices/pump-1/messages/devicebound/#".into(), at(QoS::AtLeastOnce))], 0);
        assert_eq!(
            describe(&hub.pump("pump-1", 2, 0).packets),
            ["PUBLISH 1 devices/pump-1/messages/devicebound/ reboot"]
        );
        let outcome = hub.acknowledged("pump-1", &ack(Packet::PubAck, 1));
        assert_eq!(outcome.delivered, Some(("pump-1".to_string(), (0, 7))));
        hub.disconnect("pump-1", 2, None);
        assert_eq!(hub.pending_commands("pump-1"), 0);
        // Read again (a restart re-reads recent commands): known delivered, not queued.
        hub.command("pump-1", (0, 7), message(&topic, "reboot", QoS::AtLeastOnce), 0);
        assert_eq!(hub.pending_commands("pump-1"), 0);
    }

    #[test]
    fn a_command_to_a_qos_0_subscription_counts_as_delivered_once_written() {
        let hub = Hub::new(HubConfig::default());
        let device =
            ConnectOptions { device: Some("pump-1".into()), ..options(true, SessionExpiry::AtDisconnect) };
        hub.connect("pump-1", device, 1, Arc::default(), 0);
        hub.subscribe("pump-1", &[("devices/pump-1/messages/devicebound/#".into(), at(QoS::AtMostOnce))], 0);
        hub.command("pump-1", (0, 3), message(&devicebound_topic("pump-1"), "stop", QoS::AtLeastOnce), 0);
        let pumped = hub.pump("pump-1", 1, 0);
        assert_eq!(describe(&pumped.packets), ["PUBLISH 0 devices/pump-1/messages/devicebound/ stop"]);
        assert_eq!(pumped.delivered, [("pump-1".to_string(), (0, 3))]);
        // A persistent session's QoS 0 subscription takes a command waiting at reconnect: that
        // delivery is reported by `connect`.
        let persistent =
            || ConnectOptions { device: Some("pump-2".into()), ..options(false, SessionExpiry::Never) };
        hub.connect("pump-2", persistent(), 1, Arc::default(), 0);
        hub.subscribe("pump-2", &[("devices/pump-2/messages/devicebound/#".into(), at(QoS::AtMostOnce))], 0);
        hub.disconnect("pump-2", 1, None);
        hub.command("pump-2", (0, 4), message(&devicebound_topic("pump-2"), "start", QoS::AtLeastOnce), 0);
        let (present, owed) = hub.connect("pump-2", persistent(), 2, Arc::default(), 0);
        assert!(present);
        assert_eq!(owed.delivered, [("pump-2".to_string(), (0, 4))]);
    }

    #[test]
    fn a_command_delivered_elsewhere_stops_waiting_and_expired_ones_are_swept() {
        let hub = Hub::new(HubConfig::default());
        let topic = devicebound_topic("pump-1");
        hub.command("pump-1", (0, 1), message(&topic, "a", QoS::AtLeastOnce), 0);
        let mut expiring = (*message(&topic, "b", QoS::AtLeastOnce)).clone();
        expiring.expires_at_ms = Some(5_000);
        hub.command("pump-1", (0, 2), Arc::new(expiring), 0);
        hub.command_delivered("pump-1", (0, 1), i64::MAX);
        assert_eq!(hub.pending_commands("pump-1"), 1);
        hub.sweep(Instant::now(), 5_000);
        assert_eq!(hub.pending_commands("pump-1"), 0);
    }
}
