//! The MQTT listener: one task per connection reading packets, one writing them, and the rules
//! that make an acknowledgement mean "durable".
//!
//! # A connection
//!
//! The reader keeps a buffer. [`tidewater_mqtt::check`] says whether a whole packet is there
//! (and refuses one over [`MqttConfig::limits`]' packet size from its fixed header, before its
//! body arrives); only then is it split off and decoded. The first packet must be a CONNECT,
//! within [`CONNECT_TIMEOUT`]; it is authenticated against the device registry
//! ([`crate::auth`]) and answered with a CONNACK. After that:
//!
//! - PUBLISH is routed ([`crate::route`]) and queued on the [`Appender`] in arrival order. Its
//!   acknowledgement (PUBACK for QoS 1, PUBREC for QoS 2) goes to the writer together with the
//!   pending append, and the writer sends it only once the append is durable. The writer takes
//!   items in order, so acknowledgements leave in the order the PUBLISHes came; those already
//!   durable together go out in one write.
//! - QoS 2: the packet id is remembered from the PUBLISH until its PUBREL. A PUBLISH that
//!   repeats a remembered id (a client resending before it saw our PUBREC) is acknowledged
//!   again but not appended again, which is what makes QoS 2 exactly-once on this hop.
//! - PINGREQ gets a PINGRESP; DISCONNECT ends the connection; silence longer than 1.5 times the
//!   keep-alive closes it (spec 3.1.2.10): the client's, at most
//!   [`MqttConfig::max_keep_alive_secs`]. A connection made with a SAS token ends when the token
//!   expires.
//! - A will message is appended like a PUBLISH (header `mqtt-will: true`) when the connection
//!   ends any way but a normal DISCONNECT; with an MQTT 5 Will Delay Interval, only if no new
//!   connection with the same client id arrives within it (or before the session ends).
//!
//! A packet that does not decode, or breaks the protocol, ends that connection only: an MQTT 5
//! client is sent a DISCONNECT with the reason code first (Malformed Packet, Protocol Error,
//! ...), a 3.1.1 client is simply disconnected, which is all 3.1.1 allows. Either way the
//! gateway then reads (and drops) what the client still sends for a moment before closing, so
//! the client gets the DISCONNECT rather than a reset. An append that fails ends the connection
//! without an acknowledgement, so the device sends the message again.
//!
//! # Limits
//!
//! Connections ([`MqttConfig::max_connections`], a semaphore taken before `accept`, so extra
//! clients wait in the listen backlog), packet size, QoS 1 appends awaiting durability per
//! connection (the reader stops reading when they are all taken: backpressure) and QoS 2
//! messages awaiting PUBREL per connection (more is Receive Maximum exceeded), subscriptions and
//! queued messages per session and topic aliases are all [`MqttConfig`] fields, and the MQTT 5
//! CONNACK tells the client those it can act on. An idle connection holds no read or write
//! buffer.
//!
//! # Subscriptions, sessions, commands
//!
//! SUBSCRIBE, UNSUBSCRIBE and the acknowledgements of messages sent to the client go to the
//! [`Hub`], which keeps sessions across connections; what it queues for this connection wakes
//! the reader, which writes it out through the same writer. What subscribers receive comes from
//! the cluster ([`crate::fanout`]), so it is durable before anyone sees it. Which filters a
//! client may use is [`crate::route::may_subscribe`]; a refused one gets Not authorized in its
//! SUBACK (3.1.1: 0x80). MQTT 5 topic aliases from the client are accepted up to
//! [`MqttConfig::topic_alias_maximum`], and the gateway sets its own on messages to a client
//! that allows them (first come, first served, never reassigned).
//!
//! A second connection with the same client id takes over: the first is closed (MQTT 5:
//! Session taken over, 0x8E) once it has sent the acknowledgements it owes, and the session
//! passes to the new one.
//!
//! # Not yet
//!
//! Sessions, and wills waiting out their delay, live in the gateway's memory: a restart ends
//! them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidewater_client::now_ms;
use tidewater_mqtt::{
    check, connect_protocol_version, decode, decode_connect, ConnAck, Connect, DecodeError, Disconnect,
    Limits, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Utf8Bytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use crate::append::{AppendError, Appender, PendingAppend};
use crate::auth::{authenticate, Identity};
use crate::fanout::{Delivery, PubSubTopics};
use crate::hub::{ConnectOptions, Hub, SessionExpiry};
use crate::listener::LimitedListener;
use crate::registry::Directory;
use crate::route::{may_subscribe, route, Destinations, DeviceMessage, Routed};
use crate::subscriptions::Subscribed;

/// Default most MQTT connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default most QoS 1 appends awaiting durability, and QoS 2 messages awaiting PUBREL, per
/// connection (MQTT 5's Receive Maximum).
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: u16 = 64;
/// Default largest MQTT packet, as IoT Hub's 256 KB device-to-cloud limit.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 256 * 1024;
/// The largest packet limit the gateway accepts. A record carries the payload plus, for plain
/// pub/sub, the topic twice (key and header), and must fit within Kafka's default
/// `message.max.bytes` of 1,000,000 bytes, the gateway producer's and most clusters' limit; a
/// larger packet could be accepted from the client and then never appended.
pub const MAX_PACKET_BYTES_LIMIT: usize = 448 * 1024;
/// Default most topic aliases per connection.
pub const DEFAULT_TOPIC_ALIAS_MAXIMUM: u16 = 32;
/// How long a new connection may take to send its CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write to a client may take before the connection is given up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a full producer queue is waited on between attempts.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);
/// How long shutdown waits for connections to send the acknowledgements they owe.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the MQTT listener behaves; see the module documentation for the limits.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub max_connections: usize,
    pub limits: Limits,
    pub max_in_flight_per_connection: u16,
    /// Accept clients without a password, with no device identity (off by default, as in
    /// Mosquitto 2).
    pub allow_anonymous: bool,
    /// Where device events go.
    pub telemetry_topic: String,
    /// Where plain pub/sub messages, retained messages, commands and their deliveries go.
    pub topics: PubSubTopics,
    /// Most messages a session queues beyond those in flight (as Mosquitto's
    /// max_queued_messages); more are dropped.
    pub max_queued_messages: usize,
    /// Most topic aliases a client may set (MQTT 5 Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Most subscriptions one session holds; more get Quota exceeded (3.1.1: 0x80).
    pub max_subscriptions_per_client: usize,
    /// The longest keep-alive a client may ask for, in seconds; a client asking for more (or for
    /// none) is told this one in the CONNACK (MQTT 5 Server Keep Alive; 3.1.1 clients are simply
    /// held to it). 65,535 allows anything but "none".
    pub max_keep_alive_secs: u16,
}

impl MqttConfig {
    /// The hub's limits, from this configuration.
    pub fn hub_config(&self) -> crate::hub::HubConfig {
        crate::hub::HubConfig {
            max_queued_messages: self.max_queued_messages,
            max_in_flight: self.max_in_flight_per_connection.max(1),
            max_subscriptions: self.max_subscriptions_per_client,
            ..crate::hub::HubConfig::default()
        }
    }

    fn destinations(&self) -> Destinations<'_> {
        Destinations {
            telemetry: &self.telemetry_topic,
            messages: &self.topics.messages,
            retained: &self.topics.retained,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: Limits { max_packet_bytes: DEFAULT_MAX_PACKET_BYTES, ..Limits::default() },
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            allow_anonymous: false,
            telemetry_topic: "telemetry".to_string(),
            topics: PubSubTopics::default(),
            max_queued_messages: 1000,
            topic_alias_maximum: DEFAULT_TOPIC_ALIAS_MAXIMUM,
            max_subscriptions_per_client: 100,
            max_keep_alive_secs: u16::MAX,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    config: MqttConfig,
    directory: Directory,
    appender: Arc<dyn Appender>,
    hub: Arc<Hub>,
    /// The connection currently holding each client id, to take it over (MQTT-3.1.4-3).
    clients: std::sync::Mutex<HashMap<String, ClientSlot>>,
    next_connection_id: AtomicU64,
    /// Wills waiting out their Will Delay Interval, by client id, with the connection they
    /// belong to; a new connection with that id cancels its will (spec 3.1.3.2.2).
    delayed_wills: std::sync::Mutex<HashMap<String, u64>>,
}

/// Which connection holds a client id, and how to tell it that it was taken over.
#[derive(Debug)]
struct ClientSlot {
    connection_id: u64,
    taken_over: Arc<Notify>,
}

/// A connection's claim on its client id, released when the connection ends unless a newer
/// connection took the id meanwhile.
struct ClientClaim {
    shared: Arc<Shared>,
    client_id: String,
    connection_id: u64,
    taken_over: Arc<Notify>,
}

impl ClientClaim {
    /// Claims `client_id`, telling the connection that held it (if any) to close with Session
    /// taken over. Devices reconnecting after a network failure rely on this: the old
    /// connection may be half-open for a whole keep-alive.
    fn take(shared: &Arc<Shared>, client_id: &str) -> ClientClaim {
        let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        shared.lock_delayed_wills().remove(client_id);
        let taken_over = Arc::new(Notify::new());
        let slot = ClientSlot { connection_id, taken_over: taken_over.clone() };
        let previous = shared.lock_clients().insert(client_id.to_string(), slot);
        if let Some(previous) = previous {
            // `notify_one` keeps a permit if the old reader is not waiting right now.
            previous.taken_over.notify_one();
        }
        ClientClaim { shared: shared.clone(), client_id: client_id.to_string(), connection_id, taken_over }
    }
}

impl Drop for ClientClaim {
    fn drop(&mut self) {
        let mut clients = self.shared.lock_clients();
        if clients.get(&self.client_id).is_some_and(|slot| slot.connection_id == self.connection_id) {
            clients.remove(&self.client_id);
        }
    }
}

impl Shared {
    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClientSlot>> {
        // A poisoned lock only means a connection task panicked; the map is still consistent.
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_delayed_wills(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.delayed_wills.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `message` on the appender, waiting while the producer's queue is full.
    async fn append(&self, message: &DeviceMessage) -> Result<PendingAppend, End> {
        loop {
            match self.appender.append(message) {
                Ok(pending) => return Ok(pending),
                Err(AppendError::QueueFull) => tokio::time::sleep(QUEUE_FULL_BACKOFF).await,
                Err(error) => {
                    tracing::warn!(%error, "could not queue a device message");
                    return Err(End::Because(ReasonCode::UnspecifiedError, error.to_string()));
                }
            }
        }
    }

    /// Queues a routed PUBLISH: the retained table's copy first, if any, then the message; the
    /// result resolves once both are durable.
    async fn append_routed(&self, routed: &Routed) -> Result<PendingAppend, End> {
        let Some(table_copy) = &routed.retained else { return self.append(&routed.message).await };
        let in_table = self.append(table_copy).await?;
        let message = self.append(&routed.message).await?;
        Ok(Box::pin(async move {
            in_table.await?;
            message.await
        }))
    }
}

/// Accepts MQTT connections on `listener` until `stop` turns true, then tells each connection
/// to finish (MQTT 5 clients get Server shutting down after the acknowledgements they are owed)
/// and waits up to [`SHUTDOWN_GRACE`] for them.
pub async fn serve(
    listener: TcpListener,
    config: MqttConfig,
    directory: Directory,
    appender: Arc<dyn Appender>,
    hub: Arc<Hub>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let listener = LimitedListener::new(listener, config.max_connections, "MQTT");
    let shared = Arc::new(Shared {
        config,
        directory,
        appender,
        hub,
        clients: std::sync::Mutex::new(HashMap::new()),
        next_connection_id: AtomicU64::new(0),
        delayed_wills: std::sync::Mutex::new(HashMap::new()),
    });
    while let Some((stream, peer, permit)) = listener.accept(&mut stop).await {
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            run_connection(stream, peer, shared, stop).await;
        });
    }
    listener.close(SHUTDOWN_GRACE).await;
}

/// What the reader hands the writer, in the order it must go out.
///
/// Kept small: the queue allocates its slots up front, per connection, and nearly every item is
/// an acknowledgement.
enum Outgoing {
    /// Boxed: rarer than acknowledgements, and a whole packet is hundreds of bytes.
    Packet(Box<Packet>),
    /// `ack` once `pending` is durable; `permit` holds a QoS 1 in-flight slot until then.
    AfterAppend { pending: PendingAppend, ack: Ack, permit: Option<OwnedSemaphorePermit> },
    /// Write nothing more.
    Close,
}

impl Outgoing {
    fn packet(packet: Packet) -> Outgoing {
        Outgoing::Packet(Box::new(packet))
    }
}

/// A successful PUBACK (QoS 1) or PUBREC (QoS 2), built when it is written.
#[derive(Debug, Clone, Copy)]
struct Ack {
    qos: QoS,
    packet_id: PacketId,
}

impl Ack {
    fn packet(self) -> Packet {
        let response = PubResponse {
            packet_id: self.packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        };
        match self.qos {
            QoS::ExactlyOnce => Packet::PubRec(response),
            _ => Packet::PubAck(response),
        }
    }
}

/// Why the reader ended a connection; the DISCONNECT reason for MQTT 5 where there is one.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT with this reason code.
    Disconnected(ReasonCode),
    /// The stream ended or the writer gave up.
    Quietly,
    /// Tell an MQTT 5 client why, then close.
    Because(ReasonCode, String),
}

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let limits = shared.config.limits;
    let mut buffer = BytesMut::with_capacity(4096);

    let connect =
        match tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut reader, &mut buffer, &limits)).await {
            Ok(Ok(Some(frame))) => match decode_connect(frame.clone(), &limits) {
                Ok(connect) => connect,
                Err(error) => {
                    tracing::debug!(%peer, %error, "refused a CONNECT that does not decode");
                    // A CONNACK only if we know which version to say it in; an "MQTT" CONNECT of
                    // a level we do not speak gets 3.1.1's "unacceptable protocol version"
                    // (MQTT-3.1.2-2), which every version's client can read.
                    let version = connect_protocol_version(&frame).or_else(|| {
                        matches!(error, DecodeError::UnsupportedProtocolLevel { .. })
                            .then_some(ProtocolVersion::V311)
                    });
                    if let Some(version) = version {
                        let _ = write_packet(
                            &mut writer,
                            version,
                            &connack(error.reason_code(), Properties::default()),
                        )
                        .await;
                    }
                    return;
                }
            },
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "closed a connection before CONNECT");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no CONNECT within {CONNECT_TIMEOUT:?}; closed");
                return;
            }
        };
    let version = connect.protocol_version;
    let devices = shared.directory.borrow().clone();
    let identity = authenticate(
        devices.as_deref(),
        connect.client_id.as_str(),
        connect.password.as_deref(),
        shared.config.allow_anonymous,
    );
    // The key the device proved it holds, as its hash: a rotated key ends the connection too.
    let key_hash = match (&identity, &devices) {
        (Ok(Identity::Device(id)), Some(devices)) => devices.get(id).map(|device| device.key_hash.clone()),
        _ => None,
    };
    // A connection made with a SAS token ends when the token expires, as IoT Hub's do.
    let credentials_expire_at = connect
        .password
        .as_deref()
        .filter(|password| crate::token::is_token(password))
        .and_then(|password| crate::token::parse(password).ok())
        .map(|token| {
            let left = token.expiry_unix_secs.saturating_sub(crate::auth::unix_now_secs());
            tokio::time::Instant::now() + Duration::from_secs(left)
        });
    let identity = match identity {
        Ok(identity) => identity,
        Err(code) => {
            tracing::info!(%peer, client_id = connect.client_id.as_str(), reason = %code, "refused an MQTT connection");
            let _ = write_packet(&mut writer, version, &connack(code, Properties::default())).await;
            return;
        }
    };
    let properties = connack_properties(&connect, &shared.config);
    let client_id = match &properties.assigned_client_identifier {
        Some(assigned) => assigned.as_str(),
        None => connect.client_id.as_str(),
    };
    // Anonymous clients claim ids of their own kind, so one cannot push a device off by naming
    // itself after it.
    let claimed_id = match &identity {
        Identity::Device(id) => id.clone(),
        Identity::Anonymous => format!("anonymous/{client_id}"),
    };
    let claim = ClientClaim::take(&shared, &claimed_id);
    let expiry = match (version, connect.clean_start) {
        (ProtocolVersion::V5, _) => {
            SessionExpiry::from_interval(connect.properties.session_expiry_interval_secs.unwrap_or(0))
        }
        (ProtocolVersion::V311, true) => SessionExpiry::AtDisconnect,
        (ProtocolVersion::V311, false) => SessionExpiry::Never,
    };
    let wake = Arc::new(Notify::new());
    let options = ConnectOptions {
        clean_start: connect.clean_start,
        expiry,
        version,
        receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
        maximum_packet_size: connect.properties.maximum_packet_size,
        device: identity.device_id().map(str::to_string),
    };
    let (session_present, owed) =
        shared.hub.connect(&claimed_id, options, claim.connection_id, wake.clone(), now_ms());
    let connack = Packet::ConnAck(ConnAck { session_present, reason_code: ReasonCode::Success, properties });
    if write_packet(&mut writer, version, &connack).await.is_err() {
        shared.hub.disconnect(&claimed_id, claim.connection_id, None);
        return;
    }
    tracing::debug!(%peer, client_id = connect.client_id.as_str(), ?version, session_present, "MQTT client connected");

    let max_in_flight = usize::from(shared.config.max_in_flight_per_connection.max(1));
    let (outgoing, queue) = mpsc::channel(max_in_flight * 2 + 8);
    let writer_task = tokio::spawn(write_loop(writer, queue, version));
    let mut session = Session {
        shared: shared.clone(),
        version,
        identity,
        client: claimed_id.clone(),
        connection_id: claim.connection_id,
        key_hash,
        keep_alive: keep_alive_deadline(granted_keep_alive(connect.keep_alive_secs, &shared.config)),
        qos1_slots: Arc::new(Semaphore::new(max_in_flight)),
        max_in_flight,
        outgoing,
        wake,
        topic_aliases: HashMap::new(),
        outbound_aliases: HashMap::new(),
        client_topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
        credentials_expire_at,
        expiry_at_disconnect: None,
    };
    for (device, (partition, offset)) in owed.delivered {
        session.record_delivery(device, partition, offset);
    }
    let end = match session.send_all(owed.packets).await {
        Ok(()) => session.read_loop(&mut reader, &mut buffer, stop, &claim.taken_over).await,
        Err(end) => end,
    };
    if let End::Because(code, detail) = &end {
        tracing::info!(%peer, client_id = connect.client_id.as_str(), reason = %code, detail, "closing an MQTT connection");
        if version == ProtocolVersion::V5 {
            let disconnect =
                Packet::Disconnect(Disconnect { reason_code: *code, properties: Properties::default() });
            let _ = session.outgoing.send(Outgoing::packet(disconnect)).await;
        }
    }
    shared.hub.disconnect(&claimed_id, claim.connection_id, session.expiry_at_disconnect);
    // The will goes out unless the client said goodbye without asking for it (spec 3.1.2.5).
    let publish_will =
        !matches!(end, End::Disconnected(code) if code != ReasonCode::DisconnectWithWillMessage);
    if let (true, Some(will)) = (publish_will, &connect.will) {
        let session_expiry = session.expiry_at_disconnect.unwrap_or(expiry);
        let will = Will {
            shared: shared.clone(),
            identity: session.identity.clone(),
            client: claimed_id.clone(),
            will: will.clone(),
        };
        match will_delay(&will.will, version, session_expiry) {
            None => will.publish().await,
            Some(delay) => will.publish_after(delay, claim.connection_id),
        }
    }
    let _ = session.outgoing.send(Outgoing::Close).await;
    drop(session);
    let _ = writer_task.await;
    if matches!(end, End::Because(..)) {
        linger(&mut reader, &mut buffer).await;
    }
}

/// How long a connection the gateway closes keeps reading (and discarding) what the client
/// still sends, and how much of it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// After the gateway closed a connection (its DISCONNECT and FIN are sent), reads what the client
/// still sends until it closes too. Closing a socket with unread bytes makes the kernel send a
/// reset instead, and a reset can destroy the DISCONNECT before the client reads its reason code.
async fn linger(reader: &mut OwnedReadHalf, buffer: &mut BytesMut) {
    let drain = async {
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            buffer.clear();
            match reader.read_buf(buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The keep-alive the gateway holds a client to: what it asked for, at most
/// [`MqttConfig::max_keep_alive_secs`] (and not "none" when there is a maximum).
fn granted_keep_alive(requested: u16, config: &MqttConfig) -> u16 {
    if config.max_keep_alive_secs == u16::MAX {
        return requested;
    }
    if requested == 0 {
        config.max_keep_alive_secs
    } else {
        requested.min(config.max_keep_alive_secs)
    }
}

/// Header marking a will message, as IoT Hub marks its will telemetry.
pub const WILL_HEADER: &str = "mqtt-will";

/// How long a will waits: MQTT 5's Will Delay Interval, cut short by the end of the session
/// (spec 3.1.3.2.2); `None` to send it now.
fn will_delay(
    will: &tidewater_mqtt::Will,
    version: ProtocolVersion,
    session: SessionExpiry,
) -> Option<Duration> {
    let delay = match (version, will.properties.will_delay_interval_secs) {
        (ProtocolVersion::V5, Some(secs)) if secs > 0 => Duration::from_secs(u64::from(secs)),
        _ => return None,
    };
    match session {
        SessionExpiry::AtDisconnect => None,
        SessionExpiry::After(expiry) => Some(delay.min(expiry)).filter(|delay| !delay.is_zero()),
        SessionExpiry::Never => Some(delay),
    }
}

/// A connection's will message and whose it is.
struct Will {
    shared: Arc<Shared>,
    identity: Identity,
    client: String,
    will: tidewater_mqtt::Will,
}

impl Will {
    /// Publishes the will once `delay` has passed, unless a new connection with the same client
    /// id arrives first. A gateway stopping meanwhile drops it.
    fn publish_after(self, delay: Duration, connection_id: u64) {
        self.shared.lock_delayed_wills().insert(self.client.clone(), connection_id);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due = {
                let mut delayed = self.shared.lock_delayed_wills();
                let due = delayed.get(&self.client) == Some(&connection_id);
                if due {
                    delayed.remove(&self.client);
                }
                due
            };
            if due {
                self.publish().await;
            }
        });
    }

    /// Appends the will, routed like any PUBLISH of its identity (so a device's will must name
    /// its own events topic; an anonymous client's reaches subscribers), with header
    /// `mqtt-will: true`, and waits until it is durable.
    async fn publish(&self) {
        let will = &self.will;
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic.clone(),
            packet_id: None,
            properties: Properties { will_delay_interval_secs: None, ..will.properties.clone() },
            payload: will.payload.clone(),
        };
        let mut routed = match route(
            &self.identity,
            &self.client,
            &publish,
            self.shared.config.destinations(),
        ) {
            Ok(routed) => routed,
            Err(code) => {
                tracing::info!(identity = ?self.identity, topic = will.topic.as_str(), reason = %code, "will message dropped");
                return;
            }
        };
        for message in std::iter::once(&mut routed.message).chain(routed.retained.as_mut()) {
            message.headers.push((WILL_HEADER.to_string(), Bytes::from_static(b"true")));
        }
        let appended = match self.shared.append_routed(&routed).await {
            Ok(pending) => tokio::time::timeout(WRITE_TIMEOUT, pending).await,
            Err(_) => return,
        };
        if !matches!(appended, Ok(Ok(()))) {
            tracing::warn!(identity = ?self.identity, "a will message could not be appended");
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// 1.5 times the keep-alive, or no deadline for a keep-alive of 0 (spec 3.1.2.10).
fn keep_alive_deadline(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500))
}

/// A CONNACK refusing the connection, or accepting one without a session.
fn connack(reason_code: ReasonCode, properties: Properties) -> Packet {
    Packet::ConnAck(ConnAck { session_present: false, reason_code, properties })
}

/// What an MQTT 5 CONNACK tells the client about this server (dropped for 3.1.1).
fn connack_properties(connect: &Connect, config: &MqttConfig) -> Properties {
    let assigned = connect.client_id.is_empty().then(|| {
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        let id: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        Utf8Bytes::try_from_bytes(Bytes::from(format!("anonymous-{id}"))).unwrap_or_default()
    });
    Properties {
        receive_maximum: Some(config.max_in_flight_per_connection.max(1)),
        maximum_packet_size: Some(u32::try_from(config.limits.max_packet_bytes).unwrap_or(u32::MAX)),
        assigned_client_identifier: assigned,
        server_keep_alive_secs: (granted_keep_alive(connect.keep_alive_secs, config)
            != connect.keep_alive_secs)
            .then(|| granted_keep_alive(connect.keep_alive_secs, config)),
        topic_alias_maximum: Some(config.topic_alias_maximum),
        wildcard_subscription_available: Some(true),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(true),
        retain_available: Some(true),
        ..Properties::default()
    }
}

/// Why reading a packet failed.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed in the middle of a packet")]
    Truncated,
}

/// How much room a read makes in the buffer.
const READ_CHUNK_BYTES: usize = 4096;

/// Reads until a whole packet is buffered and returns it, or `None` at a clean end of stream.
/// The buffer grows with the bytes received, never with the length a header announces, and an
/// empty buffer is given back before waiting, so an idle connection holds none.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Bytes>, ReadError> {
    loop {
        if let Some(len) = check(buffer, limits.max_packet_bytes)? {
            return Ok(Some(buffer.split_to(len).freeze()));
        }
        if buffer.is_empty() && buffer.capacity() > 0 {
            *buffer = BytesMut::new();
        }
        // Cancel-safe: `readable` takes nothing, and `try_read_buf` does not wait.
        reader.readable().await?;
        buffer.reserve(READ_CHUNK_BYTES);
        match reader.try_read_buf(buffer) {
            Ok(0) => return if buffer.is_empty() { Ok(None) } else { Err(ReadError::Truncated) },
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error.into()),
        }
    }
}

async fn write_packet(
    writer: &mut OwnedWriteHalf,
    version: ProtocolVersion,
    packet: &Packet,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out).map_err(std::io::Error::other)?;
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&out)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// Most bytes gathered before they are written: acknowledgements that became ready together
/// (one fsync makes many appends durable at once) go out in one write, not one each.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// The write buffer a connection keeps between writes; a larger one is given back.
const WRITE_BUFFER_KEPT_BYTES: usize = 4096;

/// Writes what the reader queued, in order, holding each acknowledgement until its append is
/// durable. A failed append ends the connection unacknowledged, so the client sends it again.
///
/// Items already queued whose appends are already durable are encoded into one buffer and
/// written together; the loop waits for an append only after writing everything before it.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Outgoing>,
    version: ProtocolVersion,
) {
    let mut out = BytesMut::new();
    let mut next = queue.recv().await;
    while let Some(item) = next.take() {
        let packet = match item {
            Outgoing::Close => break,
            Outgoing::Packet(packet) => *packet,
            Outgoing::AfterAppend { mut pending, ack, permit } => {
                let appended = match ready_now(&mut pending) {
                    Some(appended) => appended,
                    None => {
                        if flush(&mut writer, &mut out).await.is_err() {
                            return;
                        }
                        pending.await
                    }
                };
                drop(permit);
                match appended {
                    Ok(()) => ack.packet(),
                    Err(error) => {
                        tracing::warn!(%error, "an append failed; closing the connection without acknowledging");
                        if version == ProtocolVersion::V5 {
                            let disconnect = Packet::Disconnect(Disconnect {
                                reason_code: ReasonCode::UnspecifiedError,
                                properties: Properties::default(),
                            });
                            let _ = disconnect.encode(version, &mut out);
                        }
                        break;
                    }
                }
            }
        };
        if let Err(error) = packet.encode(version, &mut out) {
            tracing::warn!(%error, "encoding a packet for an MQTT client");
            break;
        }
        next = if out.len() < WRITE_BATCH_BYTES { queue.try_recv().ok() } else { None };
        if next.is_none() {
            if flush(&mut writer, &mut out).await.is_err() {
                return;
            }
            next = queue.recv().await;
        }
    }
    let _ = flush(&mut writer, &mut out).await;
    let _ = writer.shutdown().await;
}

/// The outcome of `pending` if it is already known, without waiting.
fn ready_now(pending: &mut PendingAppend) -> Option<Result<(), AppendError>> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match pending.as_mut().poll(&mut context) {
        std::task::Poll::Ready(outcome) => Some(outcome),
        std::task::Poll::Pending => None,
    }
}

/// Writes `out` and empties it (giving back a large buffer, so idle connections stay small).
async fn flush(writer: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let written = match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(out)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    };
    if out.capacity() > WRITE_BUFFER_KEPT_BYTES {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
    if let Err(error) = &written {
        tracing::debug!(%error, "writing to an MQTT client");
    }
    written
}

/// One connected client's state, owned by its reader.
struct Session {
    shared: Arc<Shared>,
    version: ProtocolVersion,
    identity: Identity,
    /// The session's key in the hub: the claimed client id.
    client: String,
    /// This connection, as the hub knows it.
    connection_id: u64,
    /// The hash of the key the device authenticated with (`None` for anonymous clients).
    key_hash: Option<String>,
    keep_alive: Option<Duration>,
    /// QoS 1 appends awaiting durability.
    qos1_slots: Arc<Semaphore>,
    max_in_flight: usize,
    outgoing: mpsc::Sender<Outgoing>,
    /// Notified when the hub queued something for this client.
    wake: Arc<Notify>,
    /// MQTT 5 topic aliases the client set on this connection.
    topic_aliases: HashMap<u16, Utf8Bytes>,
    /// Topic aliases the gateway set for messages to the client, up to the client's maximum.
    outbound_aliases: HashMap<Utf8Bytes, u16>,
    client_topic_alias_maximum: u16,
    /// A Session Expiry Interval the client's DISCONNECT set.
    expiry_at_disconnect: Option<SessionExpiry>,
    /// When the SAS token the client connected with expires.
    credentials_expire_at: Option<tokio::time::Instant>,
}

impl Session {
    async fn read_loop(
        &mut self,
        reader: &mut OwnedReadHalf,
        buffer: &mut BytesMut,
        mut stop: tokio::sync::watch::Receiver<bool>,
        taken_over: &Notify,
    ) -> End {
        let limits = self.shared.config.limits;
        // Keep-alive counts from the last packet received, not from the last wake-up.
        let mut deadline = self.keep_alive.map(|keep_alive| tokio::time::Instant::now() + keep_alive);
        loop {
            let read = async {
                match deadline {
                    Some(deadline) => {
                        tokio::time::timeout_at(deadline, read_frame(reader, buffer, &limits)).await.ok()
                    }
                    None => Some(read_frame(reader, buffer, &limits).await),
                }
            };
            // `read_frame` can be dropped at any await: what it read stays in `buffer`.
            let frame = tokio::select! {
                read = read => read,
                _ = self.wake.notified() => {
                    if let Err(end) = self.pump().await {
                        return end;
                    }
                    continue;
                }
                _ = self.outgoing.closed() => return End::Quietly,
                _ = stop.changed() => return End::Because(ReasonCode::ServerShuttingDown, "the gateway is stopping".into()),
                _ = sleep_until_or_never(self.credentials_expire_at) => {
                    return End::Because(ReasonCode::NotAuthorized, "the SAS token expired".into())
                }
                _ = taken_over.notified() => {
                    return End::Because(ReasonCode::SessionTakenOver, "a new connection with the same client id".into())
                }
            };
            let frame = match frame {
                None => {
                    return End::Because(
                        ReasonCode::KeepAliveTimeout,
                        "no packet within 1.5 x keep-alive".into(),
                    )
                }
                Some(Ok(Some(frame))) => frame,
                Some(Ok(None)) => return End::Quietly,
                Some(Err(ReadError::Decode(error))) => {
                    return End::Because(error.reason_code(), error.to_string())
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "reading from an MQTT client");
                    return End::Quietly;
                }
            };
            deadline = self.keep_alive.map(|keep_alive| tokio::time::Instant::now() + keep_alive);
            let packet = match decode(frame, self.version, &limits) {
                Ok(packet) => packet,
                Err(error) => return End::Because(error.reason_code(), error.to_string()),
            };
            let handled = match packet {
                Packet::Publish(publish) => self.publish(publish).await,
                Packet::PubRel(release) => self.release(release).await,
                Packet::PingReq => self.send(Outgoing::packet(Packet::PingResp)).await,
                Packet::Disconnect(disconnect) => {
                    self.expiry_at_disconnect =
                        disconnect.properties.session_expiry_interval_secs.map(SessionExpiry::from_interval);
                    return End::Disconnected(disconnect.reason_code);
                }
                Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
                Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
                ack @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {
                    self.acknowledged(&ack).await
                }
                Packet::Connect(_) => {
                    Err(End::Because(ReasonCode::ProtocolError, "a second CONNECT (MQTT-3.1.0-2)".into()))
                }
                Packet::Auth(_) => Err(End::Because(
                    ReasonCode::ProtocolError,
                    "AUTH without an authentication method".into(),
                )),
                other => Err(End::Because(
                    ReasonCode::ProtocolError,
                    format!("{} is a packet servers send, not clients", other.packet_type().name()),
                )),
            };
            if let Err(end) = handled {
                return end;
            }
        }
    }

    async fn send(&self, item: Outgoing) -> Result<(), End> {
        self.outgoing.send(item).await.map_err(|_| End::Quietly)
    }

    async fn send_all(&mut self, packets: Vec<Packet>) -> Result<(), End> {
        for mut packet in packets {
            if let Packet::Publish(publish) = &mut packet {
                self.apply_outbound_alias(publish);
            }
            self.send(Outgoing::packet(packet)).await?;
        }
        Ok(())
    }

    /// Uses a topic alias for a message to the client where it allows them (spec 3.3.2.3.4):
    /// the first message on a topic sets one, later ones send it instead of the topic. Aliases
    /// are given out first come, first served, and never reassigned.
    fn apply_outbound_alias(&mut self, publish: &mut Publish) {
        if self.version != ProtocolVersion::V5 || self.client_topic_alias_maximum == 0 {
            return;
        }
        if let Some(&alias) = self.outbound_aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = Utf8Bytes::default();
        } else if let Ok(next) = u16::try_from(self.outbound_aliases.len() + 1) {
            if next <= self.client_topic_alias_maximum {
                self.outbound_aliases.insert(publish.topic.clone(), next);
                publish.properties.topic_alias = Some(next);
            }
        }
    }

    /// Writes what the hub has queued for this client, as far as its window allows.
    async fn pump(&mut self) -> Result<(), End> {
        let pumped = self.shared.hub.pump(&self.client, self.connection_id, now_ms());
        for (device, (partition, offset)) in pumped.delivered {
            self.record_delivery(device, partition, offset);
        }
        self.send_all(pumped.packets).await
    }

    fn ack(&self, qos: QoS, packet_id: PacketId, reason_code: ReasonCode) -> Packet {
        let response = PubResponse { packet_id, reason_code, properties: Properties::default() };
        match qos {
            QoS::ExactlyOnce => Packet::PubRec(response),
            _ => Packet::PubAck(response),
        }
    }

    /// Resolves an MQTT 5 topic alias (spec 3.3.2.3.4): a PUBLISH with a topic and an alias
    /// sets the alias, one with an alias and no topic uses it.
    fn resolve_topic_alias(&mut self, publish: &mut Publish) -> Result<(), End> {
        let Some(alias) = publish.properties.topic_alias.take() else { return Ok(()) };
        if alias == 0 || alias > self.shared.config.topic_alias_maximum {
            return Err(End::Because(
                ReasonCode::TopicAliasInvalid,
                format!("topic alias {alias} is outside 1..={}", self.shared.config.topic_alias_maximum),
            ));
        }
        if publish.topic.is_empty() {
            match self.topic_aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(End::Because(
                        ReasonCode::ProtocolError,
                        format!("topic alias {alias} was never set on this connection"),
                    ))
                }
            }
        } else {
            self.topic_aliases.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    async fn publish(&mut self, mut publish: Publish) -> Result<(), End> {
        self.resolve_topic_alias(&mut publish)?;
        // A device disabled, removed or given a new key while connected is cut off at its next
        // message.
        if let Identity::Device(id) = &self.identity {
            let allowed = self.shared.directory.borrow().as_ref().is_some_and(|devices| {
                devices.get(id).is_some_and(|device| {
                    !device.disabled && Some(&device.key_hash) == self.key_hash.as_ref()
                })
            });
            if !allowed {
                return Err(End::Because(
                    ReasonCode::NotAuthorized,
                    format!("device {id} was disabled, removed or re-keyed"),
                ));
            }
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        let hub = &self.shared.hub;
        if let (QoS::ExactlyOnce, Some(packet_id)) = (qos, packet_id) {
            if hub.inbound_qos2_pending(&self.client, packet_id) {
                // A resend of a message already appended: acknowledge, do not append again.
                return self.send(Outgoing::packet(self.ack(qos, packet_id, ReasonCode::Success))).await;
            }
        }
        let routed = match route(&self.identity, &self.client, &publish, self.shared.config.destinations()) {
            Ok(routed) => routed,
            Err(code) => {
                let detail = format!("may not publish to {:?}", publish.topic.as_str());
                return match (self.version, packet_id) {
                    (ProtocolVersion::V5, Some(packet_id)) => {
                        tracing::info!(identity = ?self.identity, reason = %code, detail, "refused a PUBLISH");
                        self.send(Outgoing::packet(self.ack(qos, packet_id, code))).await
                    }
                    (ProtocolVersion::V5, None) => {
                        tracing::info!(identity = ?self.identity, reason = %code, detail, "dropped a QoS 0 PUBLISH");
                        Ok(())
                    }
                    (ProtocolVersion::V311, _) => Err(End::Because(code, detail)),
                };
            }
        };
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => {
                // Fire and forget: the delivery report is not waited for.
                self.shared.append_routed(&routed).await.map(drop)
            }
            (QoS::AtLeastOnce, Some(packet_id)) => {
                let permit = tokio::select! {
                    permit = self.qos1_slots.clone().acquire_owned() => permit.map_err(|_| End::Quietly)?,
                    _ = self.outgoing.closed() => return Err(End::Quietly),
                };
                let pending = self.shared.append_routed(&routed).await?;
                self.send(Outgoing::AfterAppend {
                    pending,
                    ack: Ack { qos, packet_id },
                    permit: Some(permit),
                })
                .await
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                if hub.inbound_qos2_count(&self.client) >= self.max_in_flight {
                    return Err(End::Because(
                        ReasonCode::ReceiveMaximumExceeded,
                        format!("more than {} QoS 2 messages awaiting PUBREL", self.max_in_flight),
                    ));
                }
                let pending = self.shared.append_routed(&routed).await?;
                hub.inbound_qos2_received(&self.client, packet_id);
                self.send(Outgoing::AfterAppend { pending, ack: Ack { qos, packet_id }, permit: None }).await
            }
        }
    }

    async fn release(&mut self, release: PubResponse) -> Result<(), End> {
        let reason_code = if self.shared.hub.inbound_qos2_released(&self.client, release.packet_id) {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        let complete =
            PubResponse { packet_id: release.packet_id, reason_code, properties: Properties::default() };
        self.send(Outgoing::packet(Packet::PubComp(complete))).await
    }

    /// Grants what this client may subscribe to, answers with the SUBACK, then sends the
    /// retained messages (and waiting commands) the new subscriptions bring.
    async fn subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let identifier = subscribe.properties.subscription_identifiers.first().copied();
        let mut allowed = Vec::new();
        // Each subscription's answer: a refusal now, or `None` until the hub had its say.
        let mut refusals: Vec<Option<ReasonCode>> = Vec::with_capacity(subscribe.subscriptions.len());
        for subscription in &subscribe.subscriptions {
            let filter = subscription.filter.as_str();
            match may_subscribe(&self.identity, filter) {
                Ok(()) => {
                    allowed
                        .push((filter.to_string(), Subscribed { options: subscription.options, identifier }));
                    refusals.push(None);
                }
                Err(code) => {
                    tracing::info!(identity = ?self.identity, filter, reason = %code, "refused a subscription");
                    refusals.push(Some(code));
                }
            }
        }
        let outcomes = self.shared.hub.subscribe(&self.client, &allowed, now_ms());
        let mut answers = allowed.iter().zip(outcomes).map(|((filter, subscribed), outcome)| match outcome {
            Err(()) => {
                tracing::info!(client = self.client, filter, "refused a subscription over the limit");
                ReasonCode::QuotaExceeded
            }
            Ok(_) => match subscribed.options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                QoS::ExactlyOnce => ReasonCode::GrantedQos2,
            },
        });
        let reason_codes = refusals
            .into_iter()
            .map(|refusal| refusal.or_else(|| answers.next()).unwrap_or(ReasonCode::UnspecifiedError))
            .collect();
        let answer = Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::default(),
            reason_codes,
        });
        self.send(Outgoing::packet(answer)).await?;
        self.pump().await
    }

    async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), End> {
        let filters: Vec<String> =
            unsubscribe.filters.iter().map(|filter| filter.as_str().to_string()).collect();
        let reason_codes = self
            .shared
            .hub
            .unsubscribe(&self.client, &filters)
            .into_iter()
            .map(|existed| if existed { ReasonCode::Success } else { ReasonCode::NoSubscriptionExisted })
            .collect();
        let answer = Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Properties::default(),
            reason_codes,
        });
        self.send(Outgoing::packet(answer)).await
    }

    /// A PUBACK, PUBREC or PUBCOMP for a message sent to this client: answers a PUBREC with
    /// PUBREL, records a command's delivery in the cluster, and sends what the freed slot
    /// allows.
    async fn acknowledged(&mut self, ack: &Packet) -> Result<(), End> {
        let outcome = self.shared.hub.acknowledged(&self.client, ack);
        if let Some(reply) = outcome.reply {
            self.send(Outgoing::packet(reply)).await?;
        }
        if let Some((device, (partition, offset))) = outcome.delivered {
            self.record_delivery(device, partition, offset);
        }
        self.pump().await
    }

    /// Appends a command's delivery record, so every gateway stops holding it and a restart
    /// does not send it again. Not waited for: losing it means the command may be sent twice,
    /// which at-least-once allows.
    fn record_delivery(&self, device: String, partition: i32, offset: i64) {
        let topics = &self.shared.config.topics;
        let delivered_at_ms = now_ms();
        let ttl_ms = i64::try_from(topics.command_ttl.as_millis()).unwrap_or(i64::MAX);
        let delivery = Delivery {
            device: Some(device.clone()),
            partition,
            offset,
            delivered_at_ms,
            expires_at_ms: delivered_at_ms.saturating_add(ttl_ms),
        };
        let record = DeviceMessage {
            topic: topics.deliveries.clone(),
            key: Delivery::key(&device, partition, offset),
            payload: Bytes::from(serde_json::to_vec(&delivery).unwrap_or_default()),
            headers: Vec::new(),
        };
        tracing::debug!(device, partition, offset, "command delivered");
        match self.shared.appender.append(&record) {
            Ok(pending) => {
                tokio::spawn(async move {
                    if let Err(error) = pending.await {
                        tracing::warn!(%error, device, "recording a command's delivery failed; it may be sent again");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, device, "recording a command's delivery failed; it may be sent again")
            }
        }
    }
}
