//! The MQTT listener end to end over real sockets, with devices in memory and an in-memory
//! appender: what a client sends, what it gets back, and what was appended. `session_model`
//! checks random packet sequences against a model of the session rules.

mod http;
mod pubsub;
mod session_model;

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicI64, Ordering};
use tidewater_client::now_ms;
use tidewater_gateway::append::{AppendError, PendingAppend};
use tidewater_gateway::fanout::{apply, PubSubTopics, Record};
use tidewater_gateway::hub::Hub;
use tidewater_gateway::mqtt::{serve, MqttConfig};
use tidewater_gateway::route::DeviceMessage;
use tidewater_gateway::{Appender, Device, MemoryAppender};
use tidewater_mqtt::{
    check, decode, Connect, Disconnect, Limits, Packet, Properties, ProtocolVersion, PubResponse, Publish,
    QoS, ReasonCode, Utf8Bytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const KEY: &str = "the-key";

struct Gateway {
    address: std::net::SocketAddr,
    appender: MemoryAppender,
    hub: Arc<Hub>,
    _stop: tokio::sync::watch::Sender<bool>,
    devices: tokio::sync::watch::Sender<Option<Arc<tidewater_gateway::RegistryView>>>,
}

async fn start(config: MqttConfig) -> Gateway {
    let appender = MemoryAppender::default();
    start_with(config, Arc::new(appender.clone()), appender).await
}

/// [`start`] with an appender of the test's own; `memory` is what `Gateway::appender` shows.
async fn start_with(config: MqttConfig, appender: Arc<dyn Appender>, memory: MemoryAppender) -> Gateway {
    let mut devices = BTreeMap::new();
    for id in ["pump-1", "pump-2"] {
        devices.insert(id.to_string(), Device::new(id, KEY, [9; 16], 0));
    }
    let mut disabled = Device::new("pump-off", KEY, [9; 16], 0);
    disabled.disabled = true;
    devices.insert("pump-off".to_string(), disabled);
    let (devices, directory) = tokio::sync::watch::channel(Some(Arc::new(tidewater_gateway::RegistryView {
        devices,
        ..Default::default()
    })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let hub = Arc::new(Hub::new(config.hub_config()));
    let appender = Arc::new(Loopback {
        inner: appender,
        hub: hub.clone(),
        topics: config.topics.clone(),
        offsets: AtomicI64::new(0),
    });
    tokio::spawn(serve(
        vec![tidewater_gateway::Listen::plain(listener)],
        config,
        directory,
        appender,
        hub.clone(),
        Arc::new(tidewater_gateway::SessionStore::disabled()),
        stopped,
    ));
    Gateway { address, appender: memory, hub, _stop: stop, devices }
}

/// Stands in for the cluster and the gateway's log follower: every append goes to the test's
/// appender and, once that says durable, straight to the hub as if read back from the log.
#[derive(Debug)]
struct Loopback {
    inner: Arc<dyn Appender>,
    hub: Arc<Hub>,
    topics: PubSubTopics,
    offsets: AtomicI64,
}

impl Appender for Loopback {
    fn append(&self, message: &DeviceMessage) -> Result<PendingAppend, AppendError> {
        let pending = self.inner.append(message)?;
        let (hub, topics, message) = (self.hub.clone(), self.topics.clone(), message.clone());
        let offset = self.offsets.fetch_add(1, Ordering::Relaxed);
        // Applied by a task of its own, so a QoS 0 message (whose append nobody waits for)
        // reaches subscribers too, as the real log follower would read it.
        let (done, outcome) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let appended = pending.await;
            if appended.is_ok() {
                let now = now_ms();
                let record = Record {
                    topic: &message.topic,
                    partition: 0,
                    offset,
                    key: Some(message.key.as_bytes()),
                    payload: Some(&message.payload),
                    headers: message
                        .headers
                        .iter()
                        .map(|(name, value)| (name.as_str(), Some(value.as_ref())))
                        .collect(),
                    timestamp_ms: now,
                };
                apply(&record, &topics, &hub, &Default::default(), now);
            }
            let _ = done.send(appended);
        });
        Ok(Box::pin(async move {
            outcome.await.unwrap_or_else(|_| {
                Err(AppendError::Failed { topic: String::new(), detail: "dropped".into() })
            })
        }))
    }
}

fn text(value: &str) -> Utf8Bytes {
    Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(value.as_bytes())).expect("utf-8")
}

struct Client {
    stream: TcpStream,
    buffer: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    async fn connect(
        gateway: &Gateway,
        version: ProtocolVersion,
        client_id: &str,
        password: Option<&str>,
    ) -> (Client, Packet) {
        let stream = TcpStream::connect(gateway.address).await.expect("connect");
        let mut client = Client { stream, buffer: BytesMut::new(), version };
        let connect = Connect {
            protocol_version: version,
            clean_start: true,
            keep_alive_secs: 30,
            client_id: text(client_id),
            will: None,
            username: password.map(|_| text(client_id)),
            password: password.map(|password| Bytes::copy_from_slice(password.as_bytes())),
            properties: Properties::default(),
        };
        client.send(&Packet::Connect(Box::new(connect))).await;
        let connack = client.receive().await.expect("a CONNACK");
        (client, connack)
    }

    async fn send(&mut self, packet: &Packet) {
        let bytes = packet.to_bytes(self.version).expect("encode");
        self.stream.write_all(&bytes).await.expect("write");
    }

    /// The next packet, or `None` once the server closed the connection.
    async fn receive(&mut self) -> Option<Packet> {
        loop {
            if let Some(len) = check(&self.buffer, usize::MAX).expect("a valid frame") {
                let frame = self.buffer.split_to(len).freeze();
                return Some(decode(frame, self.version, &Limits::default()).expect("a valid packet"));
            }
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buffer))
                .await
                .expect("an answer within 5 s");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16, payload: &str) {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: text(topic),
            packet_id: NonZeroU16::new(packet_id),
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        };
        self.send(&Packet::Publish(publish)).await;
    }
}

/// A packet in a short, stable form for assertions.
fn show(packet: Option<Packet>) -> String {
    match packet {
        None => "closed".to_string(),
        Some(Packet::ConnAck(connack)) => format!("CONNACK {}", connack.reason_code),
        Some(Packet::PubAck(response)) => format!("PUBACK {} {}", response.packet_id, response.reason_code),
        Some(Packet::PubRec(response)) => format!("PUBREC {} {}", response.packet_id, response.reason_code),
        Some(Packet::PubComp(response)) => format!("PUBCOMP {} {}", response.packet_id, response.reason_code),
        Some(Packet::Disconnect(disconnect)) => format!("DISCONNECT {}", disconnect.reason_code),
        Some(other) => format!("{:?}", other.packet_type()),
    }
}

fn pubrel(packet_id: u16) -> Packet {
    Packet::PubRel(PubResponse {
        packet_id: NonZeroU16::new(packet_id).expect("non-zero"),
        reason_code: ReasonCode::Success,
        properties: Properties::default(),
    })
}

#[tokio::test]
async fn connect_outcomes_in_both_versions() {
    let gateway = start(MqttConfig::default()).await;
    let cases = [
        ("pump-1", Some(KEY), "CONNACK Success (0x00)", "CONNACK Success (0x00)"),
        (
            "pump-1",
            Some("wrong"),
            "CONNACK Bad User Name or Password (0x86)",
            "CONNACK Bad User Name or Password (0x86)",
        ),
        (
            "nobody",
            Some(KEY),
            "CONNACK Bad User Name or Password (0x86)",
            "CONNACK Bad User Name or Password (0x86)",
        ),
        ("pump-off", Some(KEY), "CONNACK Not authorized (0x87)", "CONNACK Not authorized (0x87)"),
        ("pump-1", None, "CONNACK Not authorized (0x87)", "CONNACK Not authorized (0x87)"),
    ];
    let now = tidewater_gateway::auth::unix_now_secs();
    let token = |id: &str, expiry: u64| tidewater_gateway::token::mint(id, KEY, expiry);
    let (valid, expired, of_pump_2) =
        (token("pump-1", now + 600), token("pump-1", now - 1), token("pump-2", now + 600));
    let bad = "CONNACK Bad User Name or Password (0x86)";
    let token_cases = [
        ("pump-1", Some(valid.as_str()), "CONNACK Success (0x00)", "CONNACK Success (0x00)"),
        ("pump-1", Some(expired.as_str()), bad, bad),
        ("pump-1", Some(of_pump_2.as_str()), bad, bad),
        ("pump-1", Some("SharedAccessSignature se=1"), bad, bad),
    ];
    for (client_id, password, v5, v311) in cases.into_iter().chain(token_cases) {
        let (_, connack) = Client::connect(&gateway, ProtocolVersion::V5, client_id, password).await;
        assert_eq!(show(Some(connack)), v5, "{client_id} {password:?} over 5.0");
        // The 3.1.1 decoder gives the return code as its MQTT 5 equivalent.
        let (_, connack) = Client::connect(&gateway, ProtocolVersion::V311, client_id, password).await;
        assert_eq!(show(Some(connack)), v311, "{client_id} {password:?} over 3.1.1");
    }
}

#[tokio::test]
async fn anonymous_clients_only_when_allowed_and_never_as_a_device() {
    let gateway = start(MqttConfig { allow_anonymous: true, ..MqttConfig::default() }).await;
    let (mut client, connack) = Client::connect(&gateway, ProtocolVersion::V5, "", None).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(client.receive().await), "PUBACK 1 Not authorized (0x87)");
    assert!(gateway.appender.messages().is_empty());
}

#[tokio::test]
async fn qos_1_and_2_are_appended_once_and_acknowledged_in_order() {
    let gateway = start(MqttConfig::default()).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let topic = "devices/pump-1/messages/events/";
    client.publish(topic, QoS::AtLeastOnce, 1, "a").await;
    client.publish(topic, QoS::AtLeastOnce, 2, "b").await;
    client.publish(topic, QoS::ExactlyOnce, 3, "c").await;
    // The same QoS 2 message again before PUBREL: acknowledged, not appended twice.
    client.publish(topic, QoS::ExactlyOnce, 3, "c").await;
    client.send(&pubrel(3)).await;
    client.send(&pubrel(4)).await;
    client.publish(topic, QoS::AtMostOnce, 0, "d").await;
    client.send(&Packet::PingReq).await;
    let mut answers = Vec::new();
    for _ in 0..7 {
        answers.push(show(client.receive().await));
    }
    assert_eq!(
        answers,
        [
            "PUBACK 1 Success (0x00)",
            "PUBACK 2 Success (0x00)",
            "PUBREC 3 Success (0x00)",
            "PUBREC 3 Success (0x00)",
            "PUBCOMP 3 Success (0x00)",
            "PUBCOMP 4 Packet Identifier not found (0x92)",
            "PingResp",
        ]
    );
    let payloads: Vec<String> = gateway
        .appender
        .messages()
        .iter()
        .map(|message| String::from_utf8_lossy(&message.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["a", "b", "c", "d"]);
    let first = &gateway.appender.messages()[0];
    assert_eq!((first.topic.as_str(), first.key.as_str()), ("telemetry", "pump-1"));
}

#[tokio::test]
async fn publishing_as_another_device_is_refused() {
    let gateway = start(MqttConfig::default()).await;
    let other = "devices/pump-2/messages/events/";
    let (mut v5, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    v5.publish(other, QoS::AtLeastOnce, 1, "x").await;
    v5.publish(other, QoS::ExactlyOnce, 2, "x").await;
    assert_eq!(show(v5.receive().await), "PUBACK 1 Not authorized (0x87)");
    assert_eq!(show(v5.receive().await), "PUBREC 2 Not authorized (0x87)");
    let (mut v311, _) = Client::connect(&gateway, ProtocolVersion::V311, "pump-1", Some(KEY)).await;
    v311.publish(other, QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(v311.receive().await), "closed");
    assert!(gateway.appender.messages().is_empty());
}

#[tokio::test]
async fn a_malformed_packet_closes_only_its_connection() {
    let gateway = start(MqttConfig::default()).await;
    let (mut bad, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let (mut good, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-2", Some(KEY)).await;
    // PUBLISH with QoS 3, a reserved value.
    bad.stream.write_all(b"\x36\x05\x00\x01a\x00\x01").await.expect("write");
    assert_eq!(show(bad.receive().await), "DISCONNECT Malformed Packet (0x81)");
    assert_eq!(show(bad.receive().await), "closed");
    good.publish("devices/pump-2/messages/events/", QoS::AtLeastOnce, 9, "still here").await;
    assert_eq!(show(good.receive().await), "PUBACK 9 Success (0x00)");
}

#[tokio::test]
async fn a_packet_over_the_limit_is_refused_from_its_header() {
    let limits = Limits { max_packet_bytes: 64, ..Limits::default() };
    let gateway = start(MqttConfig { limits, ..MqttConfig::default() }).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    // Exactly at the limit: accepted.
    let topic = "devices/pump-1/messages/events/";
    let fits = "x".repeat(64 - 2 - 2 - topic.len() - 2 - 1);
    client.publish(topic, QoS::AtLeastOnce, 1, &fits).await;
    assert_eq!(show(client.receive().await), "PUBACK 1 Success (0x00)");
    // One byte over: refused before the body is read.
    client.stream.write_all(b"\x32\x3f").await.expect("write");
    assert_eq!(show(client.receive().await), "DISCONNECT Packet too large (0x95)");
}

#[tokio::test]
async fn a_device_disabled_while_connected_is_cut_off_at_its_next_message() {
    let gateway = start(MqttConfig::default()).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    gateway.devices.send_modify(|devices| {
        if let Some(devices) = devices {
            let mut changed = (**devices).clone();
            changed.devices.remove("pump-1");
            *devices = Arc::new(changed);
        }
    });
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(client.receive().await), "DISCONNECT Not authorized (0x87)");
}

#[tokio::test]
async fn a_connection_made_with_a_token_ends_when_the_token_expires() {
    let gateway = start(MqttConfig::default()).await;
    let token = tidewater_gateway::token::mint("pump-1", KEY, tidewater_gateway::auth::unix_now_secs() + 2);
    let (mut client, connack) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(&token)).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "while valid").await;
    assert_eq!(show(client.receive().await), "PUBACK 1 Success (0x00)");
    // Within 5 s (`receive`'s limit) the token runs out and the gateway says so.
    assert_eq!(show(client.receive().await), "DISCONNECT Not authorized (0x87)");
    assert_eq!(show(client.receive().await), "closed");
}

#[tokio::test]
async fn a_device_connected_with_a_token_is_cut_off_when_its_key_is_rotated() {
    let gateway = start(MqttConfig::default()).await;
    let token = tidewater_gateway::token::mint("pump-1", KEY, tidewater_gateway::auth::unix_now_secs() + 600);
    let (mut client, connack) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(&token)).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    gateway.devices.send_modify(|devices| {
        if let Some(devices) = devices {
            let mut changed = (**devices).clone();
            if let Some(device) = changed.devices.get_mut("pump-1") {
                device.set_key("new-key", [1; 16], 1);
            }
            *devices = Arc::new(changed);
        }
    });
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(client.receive().await), "DISCONNECT Not authorized (0x87)");
    let (_, connack) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(&token)).await;
    assert_eq!(show(Some(connack)), "CONNACK Bad User Name or Password (0x86)");
}

#[tokio::test]
async fn silence_beyond_one_and_a_half_keep_alives_closes_the_connection() {
    let gateway = start(MqttConfig::default()).await;
    let stream = TcpStream::connect(gateway.address).await.expect("connect");
    let mut client = Client { stream, buffer: BytesMut::new(), version: ProtocolVersion::V5 };
    let connect = Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive_secs: 1,
        client_id: text("pump-1"),
        will: None,
        username: Some(text("pump-1")),
        password: Some(Bytes::from_static(KEY.as_bytes())),
        properties: Properties::default(),
    };
    client.send(&Packet::Connect(Box::new(connect))).await;
    assert_eq!(show(client.receive().await), "CONNACK Success (0x00)");
    let started = std::time::Instant::now();
    assert_eq!(show(client.receive().await), "DISCONNECT Keep Alive timeout (0x8d)");
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());
}

/// An appender whose appends become durable only when the test says so, one at a time in any
/// order, or fail.
#[derive(Debug, Default)]
struct GatedAppender {
    gates: std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<Result<(), AppendError>>>>,
}

impl GatedAppender {
    fn n_waiting(&self) -> usize {
        self.gates.lock().expect("lock").len()
    }

    /// Resolves the `idx`-th append still waiting.
    fn resolve(&self, idx: usize, outcome: Result<(), AppendError>) {
        let gate = self.gates.lock().expect("lock").remove(idx);
        let _ = gate.send(outcome);
    }
}

impl Appender for GatedAppender {
    fn append(&self, _message: &DeviceMessage) -> Result<PendingAppend, AppendError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.gates.lock().expect("lock").push(sender);
        Ok(Box::pin(async move {
            receiver.await.unwrap_or(Err(AppendError::Failed { topic: "t".into(), detail: "dropped".into() }))
        }))
    }
}

async fn wait_for_appends(appender: &GatedAppender, n_appends: usize) {
    for _ in 0..500 {
        if appender.n_waiting() >= n_appends {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} appends waiting, expected {n_appends}", appender.n_waiting());
}

/// Nothing more from the server within a short while.
async fn assert_silent(client: &mut Client) {
    let read =
        tokio::time::timeout(Duration::from_millis(200), client.stream.read_buf(&mut client.buffer)).await;
    assert!(read.is_err(), "the server sent {:?}", client.buffer);
}

#[tokio::test]
async fn acknowledgements_wait_for_durability_and_keep_their_order() {
    let appender = Arc::new(GatedAppender::default());
    let gateway = start_with(MqttConfig::default(), appender.clone(), MemoryAppender::default()).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let topic = "devices/pump-1/messages/events/";
    client.publish(topic, QoS::AtLeastOnce, 1, "a").await;
    client.publish(topic, QoS::ExactlyOnce, 2, "b").await;
    client.publish(topic, QoS::AtLeastOnce, 3, "c").await;
    wait_for_appends(&appender, 3).await;
    assert_silent(&mut client).await;
    // The later appends become durable first: still nothing, the first is owed first.
    appender.resolve(2, Ok(()));
    appender.resolve(1, Ok(()));
    assert_silent(&mut client).await;
    appender.resolve(0, Ok(()));
    assert_eq!(show(client.receive().await), "PUBACK 1 Success (0x00)");
    assert_eq!(show(client.receive().await), "PUBREC 2 Success (0x00)");
    assert_eq!(show(client.receive().await), "PUBACK 3 Success (0x00)");
}

#[tokio::test]
async fn a_failed_append_closes_the_connection_without_an_acknowledgement() {
    let appender = Arc::new(GatedAppender::default());
    let gateway = start_with(MqttConfig::default(), appender.clone(), MemoryAppender::default()).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "a").await;
    wait_for_appends(&appender, 1).await;
    appender.resolve(0, Err(AppendError::Failed { topic: "telemetry".into(), detail: "broker down".into() }));
    assert_eq!(show(client.receive().await), "DISCONNECT Unspecified error (0x80)");
    assert_eq!(show(client.receive().await), "closed");
}

#[tokio::test]
async fn qos_1_backpressure_and_the_qos_2_receive_maximum() {
    let appender = Arc::new(GatedAppender::default());
    let config = MqttConfig { max_in_flight_per_connection: 2, ..MqttConfig::default() };
    let gateway = start_with(config, appender.clone(), MemoryAppender::default()).await;
    let (mut client, connack) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let Packet::ConnAck(connack) = connack else { panic!("not a CONNACK") };
    assert_eq!(connack.properties.receive_maximum, Some(2));
    let topic = "devices/pump-1/messages/events/";
    // QoS 1: two in flight; the third is not read until one is durable.
    for packet_id in 1..=3 {
        client.publish(topic, QoS::AtLeastOnce, packet_id, "x").await;
    }
    wait_for_appends(&appender, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(appender.n_waiting(), 2);
    appender.resolve(0, Ok(()));
    assert_eq!(show(client.receive().await), "PUBACK 1 Success (0x00)");
    wait_for_appends(&appender, 2).await;
    appender.resolve(0, Ok(()));
    appender.resolve(0, Ok(()));
    assert_eq!(show(client.receive().await), "PUBACK 2 Success (0x00)");
    assert_eq!(show(client.receive().await), "PUBACK 3 Success (0x00)");
    // QoS 2: two awaiting PUBREL is the limit; a third is Receive Maximum exceeded.
    for packet_id in 4..=5 {
        client.publish(topic, QoS::ExactlyOnce, packet_id, "x").await;
        wait_for_appends(&appender, 1).await;
        appender.resolve(0, Ok(()));
        assert_eq!(show(client.receive().await), format!("PUBREC {packet_id} Success (0x00)"));
    }
    client.publish(topic, QoS::ExactlyOnce, 6, "x").await;
    assert_eq!(show(client.receive().await), "DISCONNECT Receive Maximum exceeded (0x93)");
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let gateway = start(MqttConfig { max_connections: 1, ..MqttConfig::default() }).await;
    let (mut first, connack) = Client::connect(&gateway, ProtocolVersion::V311, "pump-1", Some(KEY)).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    let second = tokio::spawn({
        let address = gateway.address;
        async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            let connect = Packet::Connect(Box::new(Connect {
                protocol_version: ProtocolVersion::V311,
                clean_start: true,
                keep_alive_secs: 30,
                client_id: text("pump-2"),
                will: None,
                username: Some(text("pump-2")),
                password: Some(Bytes::from_static(KEY.as_bytes())),
                properties: Properties::default(),
            }));
            stream.write_all(&connect.to_bytes(ProtocolVersion::V311).expect("encode")).await.expect("write");
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack).await.expect("a CONNACK");
            connack
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second client was served while the first held the only slot");
    first
        .send(&Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        }))
        .await;
    let connack = tokio::time::timeout(Duration::from_secs(5), second).await.expect("served").expect("task");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
}

#[tokio::test]
async fn a_new_connection_with_the_same_client_id_takes_over() {
    let gateway = start(MqttConfig::default()).await;
    let (mut old, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let (mut new, connack) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    assert_eq!(show(old.receive().await), "DISCONNECT Session taken over (0x8e)");
    assert_eq!(show(old.receive().await), "closed");
    // The old connection's end does not release the id the new one holds: a third takes over
    // from the second, not from nobody.
    new.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(new.receive().await), "PUBACK 1 Success (0x00)");
    let (_third, _) = Client::connect(&gateway, ProtocolVersion::V311, "pump-1", Some(KEY)).await;
    assert_eq!(show(new.receive().await), "DISCONNECT Session taken over (0x8e)");
}

#[tokio::test]
async fn a_device_whose_key_is_rotated_is_cut_off_at_its_next_message() {
    let gateway = start(MqttConfig::default()).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V311, "pump-1", Some(KEY)).await;
    let (mut other, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-2", Some(KEY)).await;
    gateway.devices.send_modify(|devices| {
        if let Some(devices) = devices {
            let mut changed = (**devices).clone();
            if let Some(device) = changed.devices.get_mut("pump-1") {
                device.set_key("a-new-key", [1; 16], 1);
            }
            *devices = Arc::new(changed);
        }
    });
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(client.receive().await), "closed");
    // Other devices are not affected.
    other.publish("devices/pump-2/messages/events/", QoS::AtLeastOnce, 1, "y").await;
    assert_eq!(show(other.receive().await), "PUBACK 1 Success (0x00)");
}

/// Connects as pump-1 with a will on `will_topic`.
async fn connect_with_will(gateway: &Gateway, version: ProtocolVersion, will_topic: &str) -> Client {
    let stream = TcpStream::connect(gateway.address).await.expect("connect");
    let mut client = Client { stream, buffer: BytesMut::new(), version };
    let connect = Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive_secs: 30,
        client_id: text("pump-1"),
        will: Some(tidewater_mqtt::Will {
            topic: text(will_topic),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: Some(text("pump-1")),
        password: Some(Bytes::from_static(KEY.as_bytes())),
        properties: Properties::default(),
    };
    client.send(&Packet::Connect(Box::new(connect))).await;
    assert_eq!(show(client.receive().await), "CONNACK Success (0x00)");
    client
}

/// The will messages appended so far, once the connection tasks had time to finish.
async fn wills(gateway: &Gateway) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway
        .appender
        .messages()
        .iter()
        .filter(|message| {
            message.headers.iter().any(|(name, value)| name == "mqtt-will" && value.as_ref() == b"true")
        })
        .map(|message| format!("{} {}", message.key, String::from_utf8_lossy(&message.payload)))
        .collect()
}

#[tokio::test]
async fn the_will_is_appended_when_a_device_vanishes_and_not_after_a_normal_disconnect() {
    let own = "devices/pump-1/messages/events/";
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let gateway = start(MqttConfig::default()).await;
        drop(connect_with_will(&gateway, version, own).await);
        assert_eq!(wills(&gateway).await, ["pump-1 offline"], "{version:?}");

        let gateway = start(MqttConfig::default()).await;
        let mut client = connect_with_will(&gateway, version, own).await;
        let normal = Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() };
        client.send(&Packet::Disconnect(normal)).await;
        assert_eq!(show(client.receive().await), "closed");
        assert!(wills(&gateway).await.is_empty(), "{version:?}");
    }
    // MQTT 5 can ask for the will on a normal disconnect.
    let gateway = start(MqttConfig::default()).await;
    let mut client = connect_with_will(&gateway, ProtocolVersion::V5, own).await;
    let with_will =
        Disconnect { reason_code: ReasonCode::DisconnectWithWillMessage, properties: Properties::default() };
    client.send(&Packet::Disconnect(with_will)).await;
    assert_eq!(show(client.receive().await), "closed");
    assert_eq!(wills(&gateway).await, ["pump-1 offline"]);
    // A will is routed like a PUBLISH: not to another device's topic.
    let gateway = start(MqttConfig::default()).await;
    drop(connect_with_will(&gateway, ProtocolVersion::V5, "devices/pump-2/messages/events/").await);
    assert!(wills(&gateway).await.is_empty());
}

#[tokio::test]
async fn an_anonymous_client_cannot_take_over_a_device_by_naming_itself_after_it() {
    let gateway = start(MqttConfig { allow_anonymous: true, ..MqttConfig::default() }).await;
    let (mut device, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let (_anonymous, connack) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", None).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    device.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(device.receive().await), "PUBACK 1 Success (0x00)");
}
