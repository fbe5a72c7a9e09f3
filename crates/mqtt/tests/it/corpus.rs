//! Corpus tests: packets as real clients send them, captured by `tests/corpus/capture.py` from
//! paho-mqtt 2.2 (`paho-*.hex`), mosquitto_pub/mosquitto_sub 2.0 (`mosquitto-*.hex`) and MQTT.js
//! 5 (`mqttjs-*.hex`), and as the spec describes the server's side (`spec-*.hex`, written by hand
//! with comments). Every file must pass `check` as one whole packet (and `Ok(None)` for each
//! shorter prefix), decode, and re-encode to the same bytes; the packets below are also checked
//! field by field.
//!
//! The encoder writes one canonical form: properties in ascending identifier order, reason
//! codes and property lengths omitted when the spec allows. A client that sends another form
//! (mosquitto and MQTT.js order properties their own way; MQTT.js sends an explicit empty
//! property block on DISCONNECT) has a `<name>.reencoded.hex` beside its capture holding the
//! canonical bytes, which must decode to the same packet.

use std::num::NonZeroU16;
use std::path::PathBuf;

use bytes::Bytes;
use tidewater_mqtt::{
    check, ConnAck, Packet, PacketType, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode,
    RetainHandling, SubscriptionOptions, DEFAULT_MAX_PACKET_BYTES,
};

use crate::{decode, from_hex};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load(name: &str) -> Vec<u8> {
    let path = corpus_dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    from_hex(&text)
}

fn version_of(name: &str) -> ProtocolVersion {
    if name.contains("-v311-") {
        ProtocolVersion::V311
    } else {
        assert!(name.contains("-v5-"), "{name}: corpus names say their version");
        ProtocolVersion::V5
    }
}

fn packet_id(value: u16) -> NonZeroU16 {
    NonZeroU16::new(value).unwrap_or_else(|| panic!("packet id {value} is zero"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes re-encoding must give: the capture itself, or its `.reencoded.hex` companion.
fn expected_reencoding(name: &str) -> Vec<u8> {
    let companion = corpus_dir().join(format!("{name}.reencoded.hex"));
    match std::fs::read_to_string(&companion) {
        Ok(text) => from_hex(&text),
        Err(_) => load(name),
    }
}

/// Decodes a corpus file and checks it re-encodes to the expected bytes.
fn decode_file(name: &str) -> Packet {
    let bytes = load(name);
    let version = version_of(name);
    let packet = decode(&bytes, version).unwrap_or_else(|error| panic!("{name}: {error}"));
    let encoded = packet.to_bytes(version).unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(hex(&encoded), hex(&expected_reencoding(name)), "{name}: re-encoding differs");
    packet
}

#[test]
fn every_corpus_file_is_one_packet_that_reencodes_to_the_same_bytes() {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap_or_else(|error| panic!("corpus dir: {error}"))
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            entry.file_name().to_str().and_then(|name| name.strip_suffix(".hex")).map(String::from)
        })
        .filter(|name| !name.ends_with(".reencoded"))
        .collect();
    names.sort();
    assert!(names.len() >= 55, "the corpus lost files: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let bytes = load(name);
        for prefix_len in 0..bytes.len() {
            if check(&bytes[..prefix_len], DEFAULT_MAX_PACKET_BYTES) != Ok(None) {
                failures.push(format!("{name}: prefix of {prefix_len} bytes is not Ok(None)"));
            }
        }
        let mut with_next = bytes.clone();
        with_next.extend_from_slice(&[0xc0, 0x00]);
        if check(&with_next, DEFAULT_MAX_PACKET_BYTES) != Ok(Some(bytes.len())) {
            failures.push(format!("{name}: check does not find one packet of {} bytes", bytes.len()));
        }
        let version = version_of(name);
        let expected = expected_reencoding(name);
        match decode(&bytes, version) {
            Err(error) => failures.push(format!("{name}: {error}")),
            Ok(packet) => {
                match packet.to_bytes(version) {
                    Ok(encoded) if encoded.as_ref() == expected.as_slice() => {}
                    Ok(encoded) => failures.push(format!("{name}: re-encoded as {}", hex(&encoded))),
                    Err(error) => failures.push(format!("{name}: encode: {error}")),
                }
                if expected != bytes {
                    // A companion must hold a different form of the very same packet.
                    match decode(&expected, version) {
                        Ok(canonical) if canonical == packet => {}
                        other => failures.push(format!("{name}: its .reencoded.hex decodes as {other:?}")),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn paho_v311_connect_with_will_and_credentials() {
    let Packet::Connect(connect) = decode_file("paho-v311-basic-0-connect") else { panic!("not a CONNECT") };
    assert_eq!(connect.protocol_version, ProtocolVersion::V311);
    assert!(connect.clean_start);
    assert_eq!(connect.keep_alive_secs, 30);
    assert_eq!(connect.client_id, "tw-v311-basic");
    assert_eq!(connect.username.as_deref(), Some("device-17"));
    assert_eq!(connect.password.as_deref(), Some(&b"s3cret"[..]));
    let will = connect.will.as_ref().unwrap_or_else(|| panic!("no will"));
    assert_eq!(will.topic, "devices/17/status");
    assert_eq!(will.payload.as_ref(), b"offline");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(will.retain);
    assert!(will.properties.is_empty());
    assert!(connect.properties.is_empty());
}

#[test]
fn paho_v311_subscribe_publish_unsubscribe() {
    let Packet::Subscribe(subscribe) = decode_file("paho-v311-basic-1-subscribe") else { panic!() };
    assert_eq!(subscribe.packet_id, packet_id(1));
    let filters: Vec<(&str, QoS)> =
        subscribe.subscriptions.iter().map(|sub| (sub.filter.as_str(), sub.options.qos)).collect();
    assert_eq!(
        filters,
        [
            ("sport/tennis/+", QoS::AtMostOnce),
            ("sport/#", QoS::AtLeastOnce),
            ("$SYS/broker/load", QoS::ExactlyOnce)
        ]
    );
    assert!(subscribe
        .subscriptions
        .iter()
        .all(|sub| sub.options == SubscriptionOptions::qos(sub.options.qos)));

    let Packet::Publish(publish) = decode_file("paho-v311-basic-2-publish") else { panic!() };
    assert_eq!(
        (publish.qos, publish.packet_id, publish.retain, publish.dup),
        (QoS::AtMostOnce, None, false, false)
    );
    assert_eq!(publish.topic, "sport/tennis/player1");
    assert_eq!(publish.payload.as_ref(), b"score 15-0");

    let Packet::Publish(publish) = decode_file("paho-v311-basic-3-publish") else { panic!() };
    assert_eq!((publish.qos, publish.packet_id), (QoS::AtLeastOnce, Some(packet_id(3))));
    assert_eq!(publish.payload.as_ref(), b"score 30-0");

    let Packet::Publish(publish) = decode_file("paho-v311-basic-4-publish") else { panic!() };
    assert_eq!(
        (publish.qos, publish.packet_id, publish.retain),
        (QoS::ExactlyOnce, Some(packet_id(4)), true)
    );
    assert_eq!(publish.payload.as_ref(), b"game");

    let Packet::Unsubscribe(unsubscribe) = decode_file("paho-v311-basic-5-unsubscribe") else { panic!() };
    assert_eq!(unsubscribe.packet_id, packet_id(5));
    assert_eq!(unsubscribe.filters, ["sport/#"]);

    let Packet::PubRel(pubrel) = decode_file("paho-v311-basic-6-pubrel") else { panic!() };
    assert_eq!(
        pubrel,
        PubResponse {
            packet_id: packet_id(4),
            reason_code: ReasonCode::Success,
            properties: Properties::default()
        }
    );

    assert!(matches!(decode_file("paho-v311-basic-7-disconnect"), Packet::Disconnect(_)));
}

#[test]
fn paho_v5_connect_with_properties_and_will_properties() {
    let Packet::Connect(connect) = decode_file("paho-v5-rich-0-connect") else { panic!("not a CONNECT") };
    assert_eq!(connect.protocol_version, ProtocolVersion::V5);
    assert!(connect.clean_start);
    assert_eq!(connect.keep_alive_secs, 30);
    assert_eq!(connect.client_id, "tw-v5-rich");
    assert_eq!(connect.username.as_deref(), Some("device-42"));
    assert_eq!(connect.password.as_deref(), Some(&b"\x00\x01binary-pw"[..]));
    let properties = &connect.properties;
    assert_eq!(properties.session_expiry_interval_secs, Some(3600));
    assert_eq!(properties.receive_maximum, Some(20));
    assert_eq!(properties.maximum_packet_size, Some(65536));
    assert_eq!(properties.topic_alias_maximum, Some(10));
    assert_eq!(properties.request_response_information, Some(true));
    assert_eq!(properties.user_properties, [("region".into(), "eu-west".into())]);
    let will = connect.will.as_ref().unwrap_or_else(|| panic!("no will"));
    assert_eq!(will.topic, "devices/42/status");
    assert_eq!(will.payload.as_ref(), b"gone");
    assert_eq!((will.qos, will.retain), (QoS::ExactlyOnce, false));
    assert_eq!(will.properties.will_delay_interval_secs, Some(10));
    assert_eq!(will.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(will.properties.user_properties, [("reason".into(), "power".into())]);

    let Packet::Connect(minimal) = decode_file("paho-v5-minimal-0-connect") else { panic!() };
    assert!(!minimal.clean_start);
    assert_eq!(
        (minimal.will.is_none(), minimal.username.is_none(), minimal.password.is_none()),
        (true, true, true)
    );
    assert!(minimal.properties.is_empty());
}

#[test]
fn paho_v5_subscribe_with_options_and_a_shared_subscription() {
    let Packet::Subscribe(subscribe) = decode_file("paho-v5-rich-1-subscribe") else { panic!() };
    assert_eq!(subscribe.packet_id, packet_id(1));
    assert_eq!(subscribe.properties.subscription_identifiers, [7]);
    let [tennis, shared] = subscribe.subscriptions.as_slice() else { panic!("two subscriptions") };
    assert_eq!(tennis.filter, "sport/tennis/+");
    assert_eq!(
        tennis.options,
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendAtNewSubscribe,
        }
    );
    assert_eq!(shared.filter, "$share/group1/sensors/#");
    assert_eq!(shared.options, SubscriptionOptions::qos(QoS::ExactlyOnce));
    let parsed = tidewater_mqtt::topic::parse_shared(&shared.filter);
    assert_eq!(
        parsed.map(|shared| shared.map(|shared| (shared.group, shared.filter))),
        Ok(Some(("group1", "sensors/#")))
    );
}

#[test]
fn paho_v5_publish_with_user_properties_in_order() {
    let Packet::Publish(publish) = decode_file("paho-v5-rich-2-publish") else { panic!() };
    assert_eq!((publish.qos, publish.packet_id), (QoS::AtLeastOnce, Some(packet_id(2))));
    assert_eq!(publish.topic, "sensors/42/temp");
    assert_eq!(publish.payload.as_ref(), br#"{"c":21.5}"#);
    let properties = &publish.properties;
    assert_eq!(properties.payload_format_indicator, Some(true));
    assert_eq!(properties.message_expiry_interval_secs, Some(120));
    assert_eq!(properties.content_type.as_deref(), Some("application/json"));
    assert_eq!(properties.response_topic.as_deref(), Some("replies/42"));
    assert_eq!(properties.correlation_data.as_deref(), Some(&[1u8, 2, 3][..]));
    let user: Vec<(&str, &str)> =
        properties.user_properties.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    assert_eq!(user, [("k1", "v1"), ("k1", "v2"), ("trace", "abc")]);

    let Packet::Publish(alias) = decode_file("paho-v5-rich-3-publish") else { panic!() };
    assert_eq!((alias.qos, alias.packet_id), (QoS::ExactlyOnce, Some(packet_id(3))));
    assert_eq!(alias.properties.topic_alias, Some(3));
    assert_eq!(alias.payload.as_ref(), b"40");

    let Packet::Publish(empty) = decode_file("paho-v5-rich-4-publish") else { panic!() };
    assert_eq!(empty.topic, "sensors/42/plain");
    assert!(empty.payload.is_empty() && empty.properties.is_empty());
}

#[test]
fn paho_v5_unsubscribe_and_disconnect_with_properties() {
    let Packet::Unsubscribe(unsubscribe) = decode_file("paho-v5-rich-5-unsubscribe") else { panic!() };
    assert_eq!(unsubscribe.filters, ["sport/tennis/+", "$share/group1/sensors/#"]);
    assert_eq!(unsubscribe.properties.user_properties, [("why".into(), "done".into())]);

    let Packet::Disconnect(disconnect) = decode_file("paho-v5-rich-7-disconnect") else { panic!() };
    assert_eq!(disconnect.reason_code, ReasonCode::Success);
    assert_eq!(disconnect.properties.session_expiry_interval_secs, Some(0));
    assert_eq!(disconnect.properties.reason_string.as_deref(), Some("bye"));
}

#[test]
fn payloads_and_strings_are_slices_of_the_frame_not_copies() {
    let bytes = Bytes::from(load("paho-v5-rich-2-publish"));
    let frame_range = bytes.as_ptr_range();
    let packet = tidewater_mqtt::decode(bytes.clone(), ProtocolVersion::V5, &Default::default());
    let Ok(Packet::Publish(publish)) = packet else { panic!("{packet:?}") };
    assert!(frame_range.contains(&publish.payload.as_ptr()));
    assert!(frame_range.contains(&publish.topic.as_bytes().as_ptr()));
}

#[test]
fn server_side_packets_from_the_spec() {
    let Packet::ConnAck(connack) = decode_file("spec-v5-connack-properties") else { panic!() };
    assert!(connack.session_present);
    assert_eq!(connack.reason_code, ReasonCode::Success);
    let properties = &connack.properties;
    assert_eq!(properties.session_expiry_interval_secs, Some(60));
    assert_eq!(properties.assigned_client_identifier.as_deref(), Some("auto-1"));
    assert_eq!(properties.server_keep_alive_secs, Some(30));
    assert_eq!(properties.reason_string.as_deref(), Some("ok"));
    assert_eq!(properties.receive_maximum, Some(100));
    assert_eq!(properties.topic_alias_maximum, Some(16));
    assert_eq!(properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(properties.retain_available, Some(false));
    assert_eq!(properties.user_properties, [("node".into(), "a".into())]);
    assert_eq!(properties.maximum_packet_size, Some(1_048_576));
    assert_eq!(properties.wildcard_subscription_available, Some(true));
    assert_eq!(properties.subscription_identifiers_available, Some(true));
    assert_eq!(properties.shared_subscription_available, Some(true));

    let Packet::ConnAck(refused) = decode_file("spec-v311-connack-not-authorized") else { panic!() };
    assert_eq!(
        refused,
        ConnAck {
            session_present: false,
            reason_code: ReasonCode::NotAuthorized,
            properties: Properties::default()
        }
    );

    let Packet::SubAck(suback) = decode_file("spec-v311-suback-mixed") else { panic!() };
    assert_eq!(
        suback.reason_codes,
        [ReasonCode::Success, ReasonCode::GrantedQos1, ReasonCode::UnspecifiedError]
    );
    let Packet::SubAck(suback) = decode_file("spec-v5-suback") else { panic!() };
    assert_eq!(
        suback.reason_codes,
        [ReasonCode::GrantedQos1, ReasonCode::GrantedQos2, ReasonCode::SharedSubscriptionsNotSupported]
    );

    let Packet::PubAck(puback) = decode_file("spec-v5-puback-reason-string") else { panic!() };
    assert_eq!(puback.reason_code, ReasonCode::NotAuthorized);
    assert_eq!(puback.properties.reason_string.as_deref(), Some("bad"));
    let Packet::PubComp(pubcomp) = decode_file("spec-v5-pubcomp-not-found") else { panic!() };
    assert_eq!(pubcomp.reason_code, ReasonCode::PacketIdentifierNotFound);

    let Packet::UnsubAck(unsuback) = decode_file("spec-v5-unsuback") else { panic!() };
    assert_eq!(unsuback.reason_codes, [ReasonCode::Success, ReasonCode::NoSubscriptionExisted]);
    let Packet::UnsubAck(unsuback) = decode_file("spec-v311-unsuback") else { panic!() };
    assert!(unsuback.reason_codes.is_empty());

    let Packet::Disconnect(moved) = decode_file("spec-v5-disconnect-server-moved") else { panic!() };
    assert_eq!(moved.reason_code, ReasonCode::ServerMoved);
    assert_eq!(moved.properties.server_reference.as_deref(), Some("other:1883"));

    let Packet::Auth(auth) = decode_file("spec-v5-auth-continue") else { panic!() };
    assert_eq!(auth.reason_code, ReasonCode::ContinueAuthentication);
    assert_eq!(auth.properties.authentication_method.as_deref(), Some("SCRAM-SHA-1"));
    assert_eq!(auth.properties.authentication_data.as_deref(), Some(&[1u8, 2][..]));

    let Packet::Publish(publish) = decode_file("spec-v5-publish-server-subscription-ids") else { panic!() };
    assert_eq!(publish.properties.subscription_identifiers, [1, 300]);
    assert_eq!(publish.properties.topic_alias, Some(2));

    assert_eq!(decode_file("spec-v311-pingreq"), Packet::PingReq);
    assert_eq!(decode_file("spec-v311-pingresp"), Packet::PingResp);
    assert_eq!(decode_file("spec-v5-pingreq").packet_type(), PacketType::PingReq);
}

#[test]
fn mosquitto_pub_v311_with_will_and_retained_qos1() {
    let Packet::Connect(connect) = decode_file("mosquitto-v311-pub-0-connect") else { panic!() };
    assert_eq!(
        (connect.protocol_version, connect.clean_start, connect.keep_alive_secs),
        (ProtocolVersion::V311, true, 45)
    );
    assert_eq!(connect.client_id, "tw-mosq-pub");
    assert_eq!(connect.username.as_deref(), Some("meter-9"));
    assert_eq!(connect.password.as_deref(), Some(&b"pw"[..]));
    let will = connect.will.as_ref().unwrap_or_else(|| panic!("no will"));
    assert_eq!((will.topic.as_str(), will.payload.as_ref()), ("meters/9/lwt", &b"dead"[..]));
    assert_eq!((will.qos, will.retain), (QoS::ExactlyOnce, false));

    let Packet::Publish(publish) = decode_file("mosquitto-v311-pub-1-publish") else { panic!() };
    assert_eq!(
        (publish.qos, publish.retain, publish.packet_id),
        (QoS::AtLeastOnce, true, Some(packet_id(1)))
    );
    assert_eq!((publish.topic.as_str(), publish.payload.as_ref()), ("meters/9/kwh", &b"12.5"[..]));
}

#[test]
fn mosquitto_pub_v5_with_publish_properties() {
    let Packet::Connect(connect) = decode_file("mosquitto-v5-pub-0-connect") else { panic!() };
    assert_eq!((connect.clean_start, connect.keep_alive_secs), (false, 60));
    assert_eq!(connect.properties.session_expiry_interval_secs, Some(300));
    assert_eq!(connect.properties.receive_maximum, Some(5));
    assert_eq!(connect.properties.user_properties, [("fw".into(), "1.2.3".into())]);

    let Packet::Publish(publish) = decode_file("mosquitto-v5-pub-1-publish") else { panic!() };
    assert_eq!((publish.qos, publish.packet_id), (QoS::ExactlyOnce, Some(packet_id(1))));
    assert_eq!(publish.properties.payload_format_indicator, Some(true));
    assert_eq!(publish.properties.message_expiry_interval_secs, Some(60));
    assert_eq!(publish.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(publish.properties.user_properties, [("unit".into(), "kWh".into())]);
    assert_eq!(publish.payload.as_ref(), b"12.5");
}

#[test]
fn mosquitto_sub_v5_with_subscription_identifier_and_will_disconnect() {
    let Packet::Subscribe(subscribe) = decode_file("mosquitto-v5-sub-1-subscribe") else { panic!() };
    assert_eq!(subscribe.properties.subscription_identifiers, [42]);
    let filters: Vec<(&str, QoS)> =
        subscribe.subscriptions.iter().map(|sub| (sub.filter.as_str(), sub.options.qos)).collect();
    assert_eq!(filters, [("meters/+/kwh", QoS::AtLeastOnce), ("$share/billing/meters/#", QoS::AtLeastOnce)]);

    // mosquitto_sub -W ends with "Disconnect with Will Message".
    let Packet::Disconnect(disconnect) = decode_file("mosquitto-v5-sub-2-disconnect") else { panic!() };
    assert_eq!(disconnect.reason_code, ReasonCode::DisconnectWithWillMessage);
}

#[test]
fn mqttjs_v5_session() {
    let Packet::Connect(connect) = decode_file("mqttjs-v5-client-0-connect") else { panic!() };
    assert_eq!((connect.clean_start, connect.keep_alive_secs), (true, 20));
    assert_eq!(connect.client_id, "tw-mqttjs");
    assert_eq!((connect.username.as_deref(), connect.password.as_deref()), (Some("dev"), Some(&b"pw"[..])));
    let properties = &connect.properties;
    assert_eq!(properties.session_expiry_interval_secs, Some(120));
    assert_eq!(properties.receive_maximum, Some(10));
    assert_eq!(properties.topic_alias_maximum, Some(4));
    assert_eq!(properties.request_problem_information, Some(false));
    assert_eq!(properties.user_properties, [("app".into(), "tw".into())]);
    let will = connect.will.as_ref().unwrap_or_else(|| panic!("no will"));
    assert_eq!(
        (will.topic.as_str(), will.payload.as_ref(), will.qos),
        ("dev/1/will", &b"bye"[..], QoS::AtLeastOnce)
    );
    assert_eq!(will.properties.will_delay_interval_secs, Some(5));
    assert_eq!(will.properties.message_expiry_interval_secs, Some(30));

    let Packet::Subscribe(subscribe) = decode_file("mqttjs-v5-client-1-subscribe") else { panic!() };
    assert_eq!(subscribe.packet_id, packet_id(0x551f));
    assert_eq!(subscribe.properties.subscription_identifiers, [9]);
    let [subscription] = subscribe.subscriptions.as_slice() else { panic!("one subscription") };
    assert_eq!(subscription.filter, "cmd/1/#");
    assert_eq!(
        subscription.options,
        SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::DoNotSend,
        }
    );

    let Packet::Publish(publish) = decode_file("mqttjs-v5-client-2-publish") else { panic!() };
    assert_eq!((publish.qos, publish.packet_id), (QoS::AtLeastOnce, Some(packet_id(0x5520))));
    assert_eq!(publish.topic, "tele/1/state");
    assert_eq!(publish.properties.response_topic.as_deref(), Some("cmd/1/resp"));
    assert_eq!(publish.properties.correlation_data.as_deref(), Some(&[9u8, 8][..]));
    let user: Vec<(&str, &str)> = publish
        .properties
        .user_properties
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(user, [("a", "1"), ("b", "2"), ("b", "3")]);
    assert_eq!(publish.payload.as_ref(), br#"{"on":true}"#);

    let Packet::Unsubscribe(unsubscribe) = decode_file("mqttjs-v5-client-3-unsubscribe") else { panic!() };
    assert_eq!(
        (unsubscribe.packet_id, unsubscribe.filters.as_slice()),
        (packet_id(0x5521), &["cmd/1/#".into()][..])
    );

    let Packet::Disconnect(disconnect) = decode_file("mqttjs-v5-client-4-disconnect") else { panic!() };
    assert_eq!((disconnect.reason_code, disconnect.properties.is_empty()), (ReasonCode::Success, true));
}
