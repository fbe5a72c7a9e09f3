//! Subscriptions end to end over real sockets: plain pub/sub between anonymous clients,
//! retained messages, persistent sessions, topic aliases and commands to devices. The cluster is
//! the test's loopback appender, so a message is "read back from the log" the moment its append
//! is durable.

use std::num::NonZeroU16;
use std::sync::Arc;

use bytes::Bytes;
use tidewater_gateway::hub::devicebound_topic;
use tidewater_gateway::message::Message;
use tidewater_gateway::MqttConfig;
use tidewater_mqtt::{
    Connect, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions, Unsubscribe,
};
use tokio::net::TcpStream;

use super::{show, start, text, Client, Gateway, KEY};

fn anonymous() -> MqttConfig {
    MqttConfig { allow_anonymous: true, ..MqttConfig::default() }
}

/// A CONNECT with a 30 s keep-alive and no will, for tests to adjust.
fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    password: Option<&str>,
    clean_start: bool,
    properties: Properties,
) -> Connect {
    Connect {
        protocol_version: version,
        clean_start,
        keep_alive_secs: 30,
        client_id: text(client_id),
        will: None,
        username: password.map(|_| text(client_id)),
        password: password.map(|password| Bytes::copy_from_slice(password.as_bytes())),
        properties,
    }
}

/// Opens a connection, sends `connect` and returns the client with the gateway's answer.
async fn send_connect(gateway: &Gateway, connect: Connect) -> (Client, Packet) {
    let stream = TcpStream::connect(gateway.address).await.expect("connect");
    let mut client = Client { stream, buffer: Default::default(), version: connect.protocol_version };
    client.send(&Packet::Connect(Box::new(connect))).await;
    let connack = client.receive().await.expect("a CONNACK");
    (client, connack)
}

async fn connect_with(
    gateway: &Gateway,
    version: ProtocolVersion,
    client_id: &str,
    password: Option<&str>,
    clean_start: bool,
    properties: Properties,
) -> (Client, Packet) {
    send_connect(gateway, connect_packet(version, client_id, password, clean_start, properties)).await
}

fn session_present(connack: &Packet) -> bool {
    matches!(connack, Packet::ConnAck(connack) if connack.session_present)
}

async fn subscribe(
    client: &mut Client,
    packet_id: u16,
    filters: &[(&str, QoS)],
    identifier: Option<u32>,
) -> Vec<ReasonCode> {
    let subscribe = Subscribe {
        packet_id: NonZeroU16::new(packet_id).expect("non-zero"),
        properties: Properties {
            subscription_identifiers: identifier.into_iter().collect(),
            ..Properties::default()
        },
        subscriptions: filters
            .iter()
            .map(|(filter, qos)| Subscription {
                filter: text(filter),
                options: SubscriptionOptions::qos(*qos),
            })
            .collect(),
    };
    client.send(&Packet::Subscribe(subscribe)).await;
    match client.receive().await {
        Some(Packet::SubAck(suback)) => suback.reason_codes,
        other => panic!("expected a SUBACK, got {}", show(other)),
    }
}

/// The next PUBLISH, as `topic payload qos [retain] [dup]`, with its packet id.
async fn next_publish(client: &mut Client) -> (String, Option<NonZeroU16>, Properties) {
    match client.receive().await {
        Some(Packet::Publish(publish)) => (
            format!(
                "{} {} q{}{}{}",
                publish.topic.as_str(),
                String::from_utf8_lossy(&publish.payload),
                publish.qos as u8,
                if publish.retain { " retain" } else { "" },
                if publish.dup { " dup" } else { "" },
            ),
            publish.packet_id,
            publish.properties,
        ),
        other => panic!("expected a PUBLISH, got {}", show(other)),
    }
}

fn response(kind: fn(PubResponse) -> Packet, packet_id: NonZeroU16) -> Packet {
    kind(PubResponse { packet_id, reason_code: ReasonCode::Success, properties: Properties::default() })
}

#[tokio::test]
async fn anonymous_clients_publish_and_subscribe_at_every_qos() {
    let gateway = start(anonymous()).await;
    let (mut subscriber, _) = Client::connect(&gateway, ProtocolVersion::V5, "sub", None).await;
    let granted = subscribe(
        &mut subscriber,
        1,
        &[("plant/+/temp", QoS::ExactlyOnce), ("other", QoS::AtMostOnce)],
        Some(42),
    )
    .await;
    assert_eq!(granted, [ReasonCode::GrantedQos2, ReasonCode::Success]);
    let (mut publisher, _) = Client::connect(&gateway, ProtocolVersion::V311, "pub", None).await;
    publisher.publish("plant/a/temp", QoS::AtMostOnce, 0, "zero").await;
    publisher.publish("plant/b/temp", QoS::AtLeastOnce, 1, "one").await;
    assert_eq!(show(publisher.receive().await), "PUBACK 1 Success (0x00)");
    publisher.publish("plant/c/temp", QoS::ExactlyOnce, 2, "two").await;
    assert_eq!(show(publisher.receive().await), "PUBREC 2 Success (0x00)");
    publisher.publish("plant/c/pressure", QoS::AtLeastOnce, 3, "unmatched").await;
    assert_eq!(show(publisher.receive().await), "PUBACK 3 Success (0x00)");

    let (zero, _, properties) = next_publish(&mut subscriber).await;
    assert_eq!(zero, "plant/a/temp zero q0");
    assert_eq!(properties.subscription_identifiers, [42]);
    let (one, id, _) = next_publish(&mut subscriber).await;
    assert_eq!(one, "plant/b/temp one q1");
    subscriber.send(&response(Packet::PubAck, id.expect("an id"))).await;
    let (two, id, _) = next_publish(&mut subscriber).await;
    assert_eq!(two, "plant/c/temp two q2");
    let id = id.expect("an id");
    subscriber.send(&response(Packet::PubRec, id)).await;
    assert_eq!(show(subscriber.receive().await), "PubRel");
    subscriber.send(&response(Packet::PubComp, id)).await;

    // Unsubscribed: nothing more arrives.
    let unsubscribe = Unsubscribe {
        packet_id: NonZeroU16::new(5).expect("non-zero"),
        properties: Properties::default(),
        filters: vec![text("plant/+/temp"), text("never")],
    };
    subscriber.send(&Packet::Unsubscribe(unsubscribe)).await;
    match subscriber.receive().await {
        Some(Packet::UnsubAck(unsuback)) => {
            assert_eq!(unsuback.reason_codes, [ReasonCode::Success, ReasonCode::NoSubscriptionExisted])
        }
        other => panic!("expected an UNSUBACK, got {}", show(other)),
    }
    publisher.publish("plant/a/temp", QoS::AtLeastOnce, 4, "late").await;
    assert_eq!(show(publisher.receive().await), "PUBACK 4 Success (0x00)");
    subscriber.send(&Packet::PingReq).await;
    assert_eq!(show(subscriber.receive().await), "PingResp");
}

#[tokio::test]
async fn a_retained_message_reaches_later_subscribers_until_cleared() {
    let gateway = start(anonymous()).await;
    let (mut publisher, _) = Client::connect(&gateway, ProtocolVersion::V5, "pub", None).await;
    let retained = |payload: &str| Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: text("status/line-1"),
        packet_id: NonZeroU16::new(1),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    };
    publisher.send(&Packet::Publish(retained("running"))).await;
    assert_eq!(show(publisher.receive().await), "PUBACK 1 Success (0x00)");
    let (mut late, _) = Client::connect(&gateway, ProtocolVersion::V311, "late", None).await;
    subscribe(&mut late, 1, &[("status/#", QoS::AtMostOnce)], None).await;
    assert_eq!(next_publish(&mut late).await.0, "status/line-1 running q0 retain");
    publisher.send(&Packet::Publish(retained(""))).await;
    assert_eq!(show(publisher.receive().await), "PUBACK 1 Success (0x00)");
    // The clearing message itself goes to current subscribers, without the retain flag.
    assert_eq!(next_publish(&mut late).await.0, "status/line-1  q0");
    let (mut later, _) = Client::connect(&gateway, ProtocolVersion::V311, "later", None).await;
    subscribe(&mut later, 1, &[("status/#", QoS::AtMostOnce)], None).await;
    later.send(&Packet::PingReq).await;
    assert_eq!(show(later.receive().await), "PingResp", "no retained message any more");
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_messages_across_reconnects() {
    let gateway = start(anonymous()).await;
    let (mut client, connack) =
        connect_with(&gateway, ProtocolVersion::V311, "keeper", None, false, Properties::default()).await;
    assert!(!session_present(&connack));
    subscribe(&mut client, 1, &[("jobs/#", QoS::AtLeastOnce)], None).await;
    let (mut publisher, _) = Client::connect(&gateway, ProtocolVersion::V311, "pub", None).await;
    publisher.publish("jobs/1", QoS::AtLeastOnce, 1, "first").await;
    assert_eq!(show(publisher.receive().await), "PUBACK 1 Success (0x00)");
    // Received but never acknowledged, then the connection drops.
    assert_eq!(next_publish(&mut client).await.0, "jobs/1 first q1");
    drop(client);
    publisher.publish("jobs/2", QoS::AtLeastOnce, 2, "second").await;
    assert_eq!(show(publisher.receive().await), "PUBACK 2 Success (0x00)");
    publisher.publish("jobs/3", QoS::AtMostOnce, 0, "qos0-not-kept").await;
    publisher.send(&Packet::PingReq).await;
    assert_eq!(show(publisher.receive().await), "PingResp");

    let (mut client, connack) =
        connect_with(&gateway, ProtocolVersion::V311, "keeper", None, false, Properties::default()).await;
    assert!(session_present(&connack));
    let (first, id, _) = next_publish(&mut client).await;
    assert_eq!(first, "jobs/1 first q1 dup");
    client.send(&response(Packet::PubAck, id.expect("an id"))).await;
    let (second, id, _) = next_publish(&mut client).await;
    assert_eq!(second, "jobs/2 second q1");
    client.send(&response(Packet::PubAck, id.expect("an id"))).await;
    client.send(&Packet::PingReq).await;
    assert_eq!(show(client.receive().await), "PingResp");

    // A clean start throws it away.
    drop(client);
    let (_client, connack) =
        connect_with(&gateway, ProtocolVersion::V311, "keeper", None, true, Properties::default()).await;
    assert!(!session_present(&connack));
}

#[tokio::test]
async fn topic_aliases_set_and_used() {
    let gateway = start(anonymous()).await;
    let (mut subscriber, _) = Client::connect(&gateway, ProtocolVersion::V5, "sub", None).await;
    subscribe(&mut subscriber, 1, &[("alias/topic", QoS::AtMostOnce)], None).await;
    let (mut publisher, _) = Client::connect(&gateway, ProtocolVersion::V5, "pub", None).await;
    let publish = |topic: &str, alias: u16, payload: &str| Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: text(topic),
        packet_id: None,
        properties: Properties { topic_alias: Some(alias), ..Properties::default() },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    };
    publisher.send(&Packet::Publish(publish("alias/topic", 3, "set"))).await;
    publisher.send(&Packet::Publish(publish("", 3, "used"))).await;
    assert_eq!(next_publish(&mut subscriber).await.0, "alias/topic set q0");
    assert_eq!(next_publish(&mut subscriber).await.0, "alias/topic used q0");
    publisher.send(&Packet::Publish(publish("", 4, "unset"))).await;
    assert_eq!(show(publisher.receive().await), "DISCONNECT Protocol Error (0x82)");
}

#[tokio::test]
async fn devices_subscribe_only_to_their_own_commands_and_acknowledge_them() {
    let gateway = start(MqttConfig::default()).await;
    let (mut device, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    let granted = subscribe(
        &mut device,
        1,
        &[
            ("devices/pump-1/messages/devicebound/#", QoS::AtLeastOnce),
            ("devices/pump-2/messages/devicebound/#", QoS::AtLeastOnce),
            ("#", QoS::AtMostOnce),
        ],
        None,
    )
    .await;
    assert_eq!(granted, [ReasonCode::GrantedQos1, ReasonCode::NotAuthorized, ReasonCode::NotAuthorized]);
    let command = Message {
        topic: text(&devicebound_topic("pump-1")),
        payload: Bytes::from_static(b"reboot"),
        qos: QoS::AtLeastOnce,
        retain: false,
        publisher: None,
        properties: Properties::default(),
        expires_at_ms: None,
    };
    gateway.hub.command("pump-1", (0, 11), Arc::new(command), 0);
    let (delivered, id, _) = next_publish(&mut device).await;
    assert_eq!(delivered, "devices/pump-1/messages/devicebound/ reboot q1");
    assert_eq!(gateway.hub.pending_commands("pump-1"), 0);
    device.send(&response(Packet::PubAck, id.expect("an id"))).await;
    device.send(&Packet::PingReq).await;
    assert_eq!(show(device.receive().await), "PingResp");
    let deliveries: Vec<String> = gateway
        .appender
        .messages()
        .into_iter()
        .filter(|message| message.topic == "_tidewater_command_deliveries")
        .map(|message| format!("{} {}", message.key, String::from_utf8_lossy(&message.payload)))
        .collect();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    // Keyed per command, so compaction keeps every command's delivery; the device is in the value.
    assert!(
        deliveries[0].starts_with("pump-1/0/11 {\"device\":\"pump-1\",\"partition\":0,\"offset\":11,"),
        "{deliveries:?}"
    );
}

/// Connects an anonymous MQTT 5 client whose will (on `topic`) waits `delay_secs`, with a
/// session that outlives the connection by a minute.
async fn connect_with_delayed_will(
    gateway: &Gateway,
    client_id: &str,
    topic: &str,
    delay_secs: u32,
) -> Client {
    let will = tidewater_mqtt::Will {
        topic: text(topic),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties { will_delay_interval_secs: Some(delay_secs), ..Properties::default() },
    };
    let properties = Properties { session_expiry_interval_secs: Some(60), ..Properties::default() };
    let mut connect = connect_packet(ProtocolVersion::V5, client_id, None, true, properties);
    connect.will = Some(will);
    let (client, connack) = send_connect(gateway, connect).await;
    assert_eq!(show(Some(connack)), "CONNACK Success (0x00)");
    client
}

#[tokio::test]
async fn a_delayed_will_waits_and_a_reconnect_within_the_delay_cancels_it() {
    let gateway = start(anonymous()).await;
    let (mut watcher, _) = Client::connect(&gateway, ProtocolVersion::V5, "watcher", None).await;
    subscribe(&mut watcher, 1, &[("wills/#", QoS::AtLeastOnce)], None).await;

    let started = std::time::Instant::now();
    drop(connect_with_delayed_will(&gateway, "lost", "wills/lost", 1).await);
    let (will, id, _) = next_publish(&mut watcher).await;
    assert_eq!(will, "wills/lost gone q1");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "sent after its delay, not at once");
    watcher.send(&response(Packet::PubAck, id.expect("an id"))).await;

    drop(connect_with_delayed_will(&gateway, "back", "wills/back", 1).await);
    let (_back, _) =
        connect_with(&gateway, ProtocolVersion::V5, "back", None, false, Properties::default()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    watcher.send(&Packet::PingReq).await;
    assert_eq!(show(watcher.receive().await), "PingResp", "the client came back: no will");
}

#[tokio::test]
async fn the_gateway_sets_topic_aliases_for_a_client_that_allows_them() {
    let gateway = start(anonymous()).await;
    let properties = Properties { topic_alias_maximum: Some(1), ..Properties::default() };
    let (mut subscriber, _) =
        connect_with(&gateway, ProtocolVersion::V5, "sub", None, true, properties).await;
    subscribe(&mut subscriber, 1, &[("aliased/#", QoS::AtMostOnce)], None).await;
    let (mut publisher, _) = Client::connect(&gateway, ProtocolVersion::V5, "pub", None).await;
    for topic in ["aliased/a", "aliased/a", "aliased/b"] {
        publisher.publish(topic, QoS::AtMostOnce, 0, topic).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (text, _, properties) = next_publish(&mut subscriber).await;
        seen.push(format!("{text} alias={:?}", properties.topic_alias));
    }
    assert_eq!(
        seen,
        [
            "aliased/a aliased/a q0 alias=Some(1)",
            " aliased/a q0 alias=Some(1)",
            // Only one alias allowed, and it is taken: the topic goes in full.
            "aliased/b aliased/b q0 alias=None",
        ]
    );
}

#[tokio::test]
async fn a_keep_alive_over_the_maximum_is_cut_to_it_and_the_client_told() {
    let gateway = start(MqttConfig { max_keep_alive_secs: 60, ..anonymous() }).await;
    // `connect_with` asks for 30 s: within the maximum, nothing is said.
    let (_within, connack) =
        connect_with(&gateway, ProtocolVersion::V5, "a", None, true, Properties::default()).await;
    assert!(
        matches!(connack, Packet::ConnAck(connack) if connack.properties.server_keep_alive_secs.is_none())
    );
    let mut connect = connect_packet(ProtocolVersion::V5, "b", None, true, Properties::default());
    connect.keep_alive_secs = 120;
    match send_connect(&gateway, connect).await.1 {
        Packet::ConnAck(connack) => assert_eq!(connack.properties.server_keep_alive_secs, Some(60)),
        other => panic!("expected a CONNACK, got {}", show(Some(other))),
    }
}

#[tokio::test]
async fn subscriptions_beyond_the_limit_get_quota_exceeded() {
    let gateway = start(MqttConfig { max_subscriptions_per_client: 2, ..anonymous() }).await;
    let (mut v5, _) = Client::connect(&gateway, ProtocolVersion::V5, "five", None).await;
    let filters = [("a", QoS::AtMostOnce), ("b", QoS::AtLeastOnce), ("c", QoS::AtMostOnce)];
    assert_eq!(
        subscribe(&mut v5, 1, &filters, None).await,
        [ReasonCode::Success, ReasonCode::GrantedQos1, ReasonCode::QuotaExceeded]
    );
    let (mut v311, _) = Client::connect(&gateway, ProtocolVersion::V311, "three", None).await;
    // 3.1.1 has one failure code, 0x80.
    assert_eq!(
        subscribe(&mut v311, 1, &filters, None).await,
        [ReasonCode::Success, ReasonCode::GrantedQos1, ReasonCode::UnspecifiedError]
    );
}
