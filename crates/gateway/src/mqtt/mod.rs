//! The MQTT listener: one task per connection, reading packets and writing what the client is
//! owed, and the rules that make an acknowledgement mean "durable".
//!
//! # A connection
//!
//! The connection keeps a read buffer. [`tidewater_mqtt::check`] says whether a whole packet is there
//! (and refuses one over [`MqttConfig::limits`]' packet size from its fixed header, before its
//! body arrives); only then is it split off and decoded. The first packet must be a CONNECT,
//! within [`CONNECT_TIMEOUT`]; it is authenticated against the device registry
//! ([`crate::auth`]) and answered with a CONNACK. After that:
//!
//! - PUBLISH is routed ([`crate::route`]) and queued on the [`Appender`] in arrival order. Its
//!   acknowledgement (PUBACK for QoS 1, PUBREC for QoS 2) joins the queue to the client
//!   (`outbound.rs`) together with the pending append, and is written only once the append is
//!   durable. The queue goes out in order, so acknowledgements leave in the order the PUBLISHes
//!   came; those already durable together go out in one write.
//! - QoS 2: the packet id is remembered from the PUBLISH until its PUBREL. A PUBLISH that
//!   repeats a remembered id (a client resending before it saw our PUBREC) is acknowledged
//!   again but not appended again, which is what makes QoS 2 exactly-once on this hop.
//! - PINGREQ gets a PINGRESP; DISCONNECT ends the connection; silence longer than 1.5 times the
//!   keep-alive closes it (spec 3.1.2.10): the client's, at most
//!   [`MqttConfig::max_keep_alive_secs`]. A connection made with a SAS token ends when the token
//!   expires.
//! - A will message is appended like a PUBLISH (header `mqtt-will: true`) when the connection
//!   ends any way but a normal DISCONNECT; with an MQTT 5 Will Delay Interval, only if no new
//!   connection with the same client id arrives within it (or before the session ends), at
//!   this gateway or another.
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
//! connection (the connection stops reading when they are all taken, or when its queue to the
//! client holds twice that plus eight items: backpressure) and QoS 2
//! messages awaiting PUBREL per connection (more is Receive Maximum exceeded), subscriptions and
//! queued messages per session and topic aliases are all [`MqttConfig`] fields, and the MQTT 5
//! CONNACK tells the client those it can act on.
//!
//! # Memory
//!
//! An idle connection holds no read or write buffer: room to read into is made for each read
//! and given back when nothing came (`transport.rs`), the write buffer and the queue to the
//! client are given back once empty (`outbound.rs`), and the CONNECT, whose fields live as long
//! as the connection, is copied out of the chunk it was read into. What is left is its one task
//! (which both reads and writes, with one timer for every deadline: there is no writer task and
//! no channel), the signal the hub wakes it with, its socket's registration with Tokio, its
//! session in the hub (boxed, so the hub's table holds a pointer per session) and, over TLS,
//! rustls's state (which keeps a 4 KiB buffer of its own). A task keeps the largest state of
//! its future for the connection's life, so the CONNECT exchange, each packet's handling and
//! the end of the connection run in boxes of their own, allocated only while they run.
//! `tidewater bench mqtt idle` measures the resident memory per idle connection: 2.7 KiB over
//! plain TCP and 10.2 KiB over TLS (release build, 10,000 idle connections, medians of 3 runs;
//! it was 5.2 and 12.6 KiB with a writer task and a channel per connection, and 20.3 and 27.7
//! before the read buffers were given back).
//!
//! # Subscriptions, sessions, commands
//!
//! SUBSCRIBE, UNSUBSCRIBE and the acknowledgements of messages sent to the client go to the
//! [`Hub`], which keeps sessions across connections; what it queues for this connection wakes
//! the connection, which takes it into its queue to the client while that has room (otherwise
//! it stays in the hub, within [`MqttConfig::max_queued_messages`]). What subscribers receive comes from
//! the cluster ([`crate::fanout`]), so it is durable before anyone sees it. Which filters a
//! client may use is [`crate::route::may_subscribe`], and for users and anonymous clients the
//! topic rules ([`crate::topic_rules`], as the registry holds them when the packet arrives); a
//! refused one gets Not authorized in its SUBACK (3.1.1: 0x80).
//!
//! A PUBLISH the topic rules refuse gets Not authorized in its PUBACK or PUBREC on MQTT 5 (a
//! QoS 0 one is dropped); on 3.1.1, which has no way to say so, it is dropped and still
//! acknowledged, as Mosquitto does, so the client does not send it again forever. A will whose
//! topic the rules refuse refuses the CONNECT (Not authorized). Messages are checked once more
//! as they are queued for a client under rules, so a wildcard subscription never carries a
//! topic that a more specific deny rule refuses. The first refusal of a connection is logged
//! at info, the rest at debug; each is counted in `tidewater_mqtt_authorization_denied_total`. MQTT 5 topic aliases from the client are accepted up to
//! [`MqttConfig::topic_alias_maximum`], and the gateway sets its own on messages to a client
//! that allows them (first come, first served, never reassigned).
//!
//! A client over its quota ([`MqttConfig::device_quota`], or its device record's) stops being
//! read after the PUBLISH that put it over, for as long as its debt lasts
//! ([`crate::throttle`]); TCP flow control slows it, nothing is dropped, and the pause does not
//! count against its keep-alive.
//!
//! A second connection with the same client id takes over: the first is closed (MQTT 5:
//! Session taken over, 0x8E) once it has sent the acknowledgements it owes, and the session
//! passes to the new one.
//!
//! # Persistent sessions
//!
//! A persistent session (3.1.1 Clean Session 0, MQTT 5 Session Expiry Interval above 0) is kept
//! in the cluster too ([`crate::session_store`]): a CONNECT that finds no session in this
//! gateway but one in the sessions table restores it (re-reading the pub/sub topic from the
//! positions it names) before the CONNACK, which then says Session Present. Another gateway's
//! newer connection for the same client id takes the session over from here, as a second
//! connection to this gateway would. Wills waiting out their delay are kept there too, and
//! published by whichever gateway claims them first once due (`will.rs`).
//!
//! # Where
//!
//! This file holds the listener, its configuration and what every connection shares, including
//! the table of which connection holds each client id; `connection.rs` one connection from its
//! CONNECT to its end; `session.rs` the connection's loop over a connected client's packets;
//! `outbound.rs` what the client is owed and the writing of it; `will.rs` the will messages; `transport.rs` the byte streams a connection
//! runs over (TCP, TLS) and `websocket.rs` MQTT over WebSockets.
//!
//! # Transports
//!
//! Each [`Listen`] is plain TCP or TLS (the handshake bounded by
//! [`crate::listener::TLS_HANDSHAKE_TIMEOUT`]), carrying MQTT directly or inside WebSockets. On
//! TLS the client is asked for a certificate; a CONNECT without a password from a client that
//! presented one is an X.509 device ([`crate::auth::authenticate_certificate`]).

mod connection;
mod outbound;
mod session;
mod transport;
pub mod websocket;
mod will;

pub use will::WILL_HEADER;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidewater_mqtt::{Limits, ReasonCode};

use crate::append::{AppendError, Appender, PendingAppend};
use crate::auth::Identity;
use crate::fanout::PubSubTopics;
use crate::hub::{ConnectionSignal, Hub, ReceiveCheck};
use crate::listener::{tls_handshake, LimitedListener, Listen};
use crate::registry::Directory;
use crate::route::{Destinations, DeviceMessage, Routed};
use crate::session_store::SessionStore;
use crate::topic_rules::{decide, Action, Client};

use self::connection::{run_connection, End};

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
pub const PACKET_BYTES_MAX: usize = 448 * 1024;
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
    /// How a client logging in as a SCRAM user is checked ([`crate::users`]); none by default.
    pub users: crate::users::UserCheck,
    /// What a device may send unless its record says otherwise, and what every MQTT user and
    /// anonymous client may ([`crate::throttle`]); unlimited by default.
    pub device_quota: crate::throttle::Quota,
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
            users: crate::users::UserCheck::None,
            device_quota: crate::throttle::Quota::UNLIMITED,
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
    /// Where persistent sessions are written ([`SessionStore::disabled`] keeps them in memory).
    store: Arc<SessionStore>,
    /// The connection currently holding each client id, to take it over (MQTT-3.1.4-3), and to
    /// tell it when the gateway stops.
    clients: std::sync::Mutex<HashMap<String, ClientSlot>>,
    /// The gateway is stopping: a connection that claims its client id now is told at once.
    stopping: AtomicBool,
    next_connection_id: AtomicU64,
    /// Wills waiting out their Will Delay Interval, by client id, with the connection they
    /// belong to; a new connection with that id cancels its will (spec 3.1.3.2.2).
    delayed_wills: std::sync::Mutex<HashMap<String, u64>>,
}

/// Which connection holds a client id, and how to tell it that it was taken over.
#[derive(Debug)]
struct ClientSlot {
    connection_id: u64,
    signal: Arc<ConnectionSignal>,
}

/// A connection's claim on its client id, released when the connection ends unless a newer
/// connection took the id meanwhile.
struct ClientClaim {
    shared: Arc<Shared>,
    client_id: String,
    connection_id: u64,
    /// The connection's signal, which the hub wakes it with too.
    signal: Arc<ConnectionSignal>,
}

impl ClientClaim {
    /// Claims `client_id`, telling the connection that held it (if any) to close with Session
    /// taken over. Devices reconnecting after a network failure rely on this: the old
    /// connection may be half-open for a whole keep-alive.
    fn take(shared: &Arc<Shared>, client_id: &str) -> ClientClaim {
        let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        shared.lock_delayed_wills().remove(client_id);
        // A will waiting in the cluster is cancelled there too.
        if shared.hub.cancel_will(client_id) {
            let written = shared.store.write_will(client_id, None);
            let client = client_id.to_string();
            tokio::spawn(async move {
                if let Err(error) = written.await {
                    tracing::warn!(%error, client, "cancelling a delayed will in the cluster failed; it may still be sent");
                }
            });
        }
        let signal = Arc::new(ConnectionSignal::default());
        let slot = ClientSlot { connection_id, signal: signal.clone() };
        let previous = {
            let mut clients = shared.lock_clients();
            // Read under the lock `stop_connections` takes after setting it: either it sees
            // this slot, or this sees the flag.
            if shared.stopping.load(Ordering::SeqCst) {
                signal.shut_down();
            }
            clients.insert(client_id.to_string(), slot)
        };
        if let Some(previous) = previous {
            // Kept for the old connection if it is not waiting right now.
            previous.signal.take_over();
        }
        ClientClaim { shared: shared.clone(), client_id: client_id.to_string(), connection_id, signal }
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
/// Whether the topic rules in `directory` let `identity` (as `client_id`) `action` (publish or
/// subscribe) `topic` (a topic name, or a filter to subscribe to). Devices are not under topic
/// rules; without any rule everything is as it was; before the registry is read, nothing is.
pub(crate) fn rules_allow(
    directory: &Directory,
    identity: &Identity,
    client_id: &str,
    action: Action,
    topic: &str,
) -> bool {
    if identity.device_id().is_some() {
        return true;
    }
    let registry = directory.borrow();
    let Some(view) = registry.as_ref() else { return false };
    if view.rules.is_empty() {
        return true;
    }
    decide(view.rules.values(), Client { user: identity.user(), client_id }, action, topic).allowed()
}

/// What a client under topic rules may receive: topics it could subscribe to exactly, as
/// the rules stand when the message is queued. `None` for devices.
fn receive_check(shared: &Shared, identity: &Identity, client_id: &str) -> Option<ReceiveCheck> {
    if identity.device_id().is_some() {
        return None;
    }
    let (directory, identity, client_id) =
        (shared.directory.clone(), identity.clone(), client_id.to_string());
    Some(ReceiveCheck(Arc::new(move |topic: &str| {
        rules_allow(&directory, &identity, &client_id, Action::Subscribe, topic)
    })))
}

/// Accepts MQTT connections on every listener (plain and TLS; one client id table across them,
/// so a device reconnecting over another listener takes its old connection over) until `stop`
/// turns true, then tells each connection to finish (MQTT 5 clients get Server shutting down
/// after the acknowledgements they are owed) and waits up to [`SHUTDOWN_GRACE`] for them.
/// [`MqttConfig::max_connections`] applies to each listener.
pub async fn serve(
    listeners: Vec<Listen>,
    config: MqttConfig,
    directory: Directory,
    appender: Arc<dyn Appender>,
    hub: Arc<Hub>,
    store: Arc<SessionStore>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        config,
        directory,
        appender,
        hub,
        store,
        clients: std::sync::Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        next_connection_id: AtomicU64::new(0),
        delayed_wills: std::sync::Mutex::new(HashMap::new()),
    });
    let mut accepting = tokio::task::JoinSet::new();
    accepting.spawn(will::wills_loop(shared.clone(), stop.clone()));
    accepting.spawn(stop_connections(shared.clone(), stop.clone()));
    for listen in listeners {
        accepting.spawn(accept_loop(listen, shared.clone(), stop.clone()));
    }
    while accepting.join_next().await.is_some() {}
}

/// Waits for `stop`, then tells every connected client's connection (through its signal, which
/// it waits on anyway: a watch receiver's wait in each would cost every idle connection 120
/// bytes more).
async fn stop_connections(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // A dropped sender stops the gateway too.
    let _ = stop.wait_for(|stopping| *stopping).await;
    shared.stopping.store(true, Ordering::SeqCst);
    for slot in shared.lock_clients().values() {
        slot.signal.shut_down();
    }
}

/// One listener's accept loop; each connection runs in a task of its own, which for a TLS
/// listener starts with the handshake.
async fn accept_loop(listen: Listen, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let what = match (listen.tls.is_some(), listen.websocket) {
        (false, false) => "MQTT",
        (true, false) => "MQTT over TLS",
        (false, true) => "MQTT over WebSockets",
        (true, true) => "MQTT over secure WebSockets",
    };
    let websocket = listen.websocket;
    let listener = LimitedListener::new(listen.socket, shared.config.max_connections, what);
    while let Some((stream, peer, permit)) = listener.accept(&mut stop).await {
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        // One spawn per kind of connection, so each task is as large as its own future: a plain
        // connection's must not carry the room a TLS handshake or a WebSocket needs.
        match (listen.tls.clone(), websocket) {
            (None, false) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    run_connection(stream, peer, None, shared).await;
                });
            }
            (None, true) => {
                tokio::spawn(websocket::serve_connection(stream, peer, None, shared, permit));
            }
            (Some(config), websocket) => {
                tokio::spawn(async move {
                    let Some((stream, certificates)) =
                        Box::pin(tls_handshake(stream, &config, peer, "MQTT")).await
                    else {
                        return;
                    };
                    if websocket {
                        Box::pin(websocket::serve_connection(stream, peer, certificates, shared, permit))
                            .await;
                    } else {
                        let _permit = permit;
                        // Boxed: rustls's connection is over a kilobyte, and the future of an
                        // async function keeps its arguments twice.
                        run_connection(Box::new(stream), peer, certificates, shared).await;
                    }
                });
            }
        }
    }
    listener.close(SHUTDOWN_GRACE).await;
}
