//! The MQTT listener end to end over real sockets, with devices in memory and an in-memory
//! appender: what a client sends, what it gets back, and what was appended.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidewater_gateway::mqtt::{serve, MqttConfig};
use tidewater_gateway::{Device, MemoryAppender};
use tidewater_mqtt::{
    check, decode, Connect, Limits, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, Utf8Bytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "the-key";

struct Gateway {
    address: std::net::SocketAddr,
    appender: MemoryAppender,
    _stop: tokio::sync::watch::Sender<bool>,
    devices: tokio::sync::watch::Sender<Option<Arc<BTreeMap<String, Device>>>>,
}

async fn start(config: MqttConfig) -> Gateway {
    let mut devices = BTreeMap::new();
    for id in ["pump-1", "pump-2"] {
        devices.insert(id.to_string(), Device::new(id, KEY, [9; 16], 0));
    }
    let mut disabled = Device::new("pump-off", KEY, [9; 16], 0);
    disabled.disabled = true;
    devices.insert("pump-off".to_string(), disabled);
    let (devices, directory) = tokio::sync::watch::channel(Some(Arc::new(devices)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let appender = MemoryAppender::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(listener, config, directory, Arc::new(appender.clone()), stopped));
    Gateway { address, appender, _stop: stop, devices }
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
    for (client_id, password, v5, v311) in cases {
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
            changed.remove("pump-1");
            *devices = Arc::new(changed);
        }
    });
    client.publish("devices/pump-1/messages/events/", QoS::AtLeastOnce, 1, "x").await;
    assert_eq!(show(client.receive().await), "DISCONNECT Not authorized (0x87)");
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
