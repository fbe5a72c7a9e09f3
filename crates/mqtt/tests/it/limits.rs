//! Every named limit at its boundary: the last value accepted and the first refused, and the
//! packet-size limit enforced from the fixed header before the body has arrived.

use std::num::NonZeroU16;

use bytes::Bytes;
use tidewater_mqtt::{
    check, DecodeError, ErrorClass, Limits, Packet, PacketType, Properties, PropertyContext, ProtocolVersion,
    Publish, QoS, Subscribe, Subscription, SubscriptionOptions, DEFAULT_MAX_PACKET_BYTES,
};

use crate::decode_measured;

fn publish(topic: &str, payload_bytes: usize, properties: Properties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        packet_id: None,
        properties,
        payload: Bytes::from(vec![7u8; payload_bytes]),
    })
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Bytes {
    packet.to_bytes(version).unwrap_or_else(|error| panic!("encode: {error}"))
}

#[test]
fn oversized_packet_is_refused_from_the_fixed_header_alone() {
    // A PUBLISH announcing 2 MiB: only its first four bytes have arrived.
    let header = [0x30, 0x80, 0x80, 0x80, 0x01];
    let announced = 1 + 4 + (1 << 21);
    assert_eq!(
        check(&header, DEFAULT_MAX_PACKET_BYTES),
        Err(DecodeError::PacketTooLarge { size: announced, limit: DEFAULT_MAX_PACKET_BYTES })
    );
    assert_eq!(check(&header[..4], DEFAULT_MAX_PACKET_BYTES), Ok(None), "length still arriving");
    let error = DecodeError::PacketTooLarge { size: announced, limit: DEFAULT_MAX_PACKET_BYTES };
    assert_eq!(error.class(), ErrorClass::PacketTooLarge);
}

#[test]
fn packet_size_limit_boundary() {
    let packet = encode(&publish("a/b", 100, Properties::default()), ProtocolVersion::V311);
    let size = packet.len();
    assert_eq!(check(&packet, size), Ok(Some(size)));
    assert_eq!(check(&packet, size - 1), Err(DecodeError::PacketTooLarge { size, limit: size - 1 }));
    let limits = Limits { max_packet_bytes: size - 1, ..Limits::default() };
    let (result, _) = decode_measured(packet.clone(), ProtocolVersion::V311, &limits);
    assert_eq!(result, Err(DecodeError::PacketTooLarge { size, limit: size - 1 }));
    let limits = Limits { max_packet_bytes: size, ..Limits::default() };
    assert!(decode_measured(packet, ProtocolVersion::V311, &limits).0.is_ok());
}

fn with_user_properties(n: usize) -> Properties {
    Properties {
        user_properties: (0..n).map(|idx| (format!("k{idx}").into(), "v".into())).collect(),
        ..Properties::default()
    }
}

#[test]
fn user_property_limit_boundary() {
    let limits = Limits { max_user_properties: 3, ..Limits::default() };
    let at_limit = encode(&publish("a", 0, with_user_properties(3)), ProtocolVersion::V5);
    assert!(decode_measured(at_limit, ProtocolVersion::V5, &limits).0.is_ok());
    let over = encode(&publish("a", 0, with_user_properties(4)), ProtocolVersion::V5);
    assert_eq!(
        decode_measured(over, ProtocolVersion::V5, &limits).0,
        Err(DecodeError::TooManyUserProperties { context: PropertyContext::Publish, limit: 3 })
    );
}

#[test]
fn property_count_limit_boundary() {
    let limits = Limits { max_properties: 4, ..Limits::default() };
    let mut properties = with_user_properties(3);
    properties.message_expiry_interval_secs = Some(5);
    let at_limit = encode(&publish("a", 0, properties.clone()), ProtocolVersion::V5);
    assert!(decode_measured(at_limit, ProtocolVersion::V5, &limits).0.is_ok());
    properties.content_type = Some("text/plain".into());
    let over = encode(&publish("a", 0, properties), ProtocolVersion::V5);
    assert_eq!(
        decode_measured(over, ProtocolVersion::V5, &limits).0,
        Err(DecodeError::TooManyProperties { context: PropertyContext::Publish, limit: 4 })
    );
}

fn subscribe(n_filters: usize) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::MIN,
        properties: Properties::default(),
        subscriptions: (0..n_filters)
            .map(|idx| Subscription {
                filter: format!("f/{idx}/#").into(),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            })
            .collect(),
    })
}

#[test]
fn subscriptions_per_packet_limit_boundary() {
    let limits = Limits { max_subscriptions_per_packet: 5, ..Limits::default() };
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        assert!(decode_measured(encode(&subscribe(5), version), version, &limits).0.is_ok());
        assert_eq!(
            decode_measured(encode(&subscribe(6), version), version, &limits).0,
            Err(DecodeError::TooManyEntries { packet: PacketType::Subscribe, limit: 5 })
        );
    }
}

#[test]
fn topic_length_limit_boundary() {
    let limits = Limits { max_topic_bytes: 8, ..Limits::default() };
    let at_limit = encode(&publish("abcd/efg", 0, Properties::default()), ProtocolVersion::V311);
    assert!(decode_measured(at_limit, ProtocolVersion::V311, &limits).0.is_ok());
    let over = encode(&publish("abcd/efgh", 0, Properties::default()), ProtocolVersion::V311);
    assert_eq!(
        decode_measured(over, ProtocolVersion::V311, &limits).0,
        Err(DecodeError::InvalidTopicName {
            offset: 2,
            error: tidewater_mqtt::topic::TopicError::TooLong { len: 9, limit: 8 }
        })
    );
    // The spec's own bound: a 65,535-byte topic is fine with the default limits.
    let longest = "t".repeat(tidewater_mqtt::topic::TOPIC_BYTES_MAX);
    let packet = encode(&publish(&longest, 0, Properties::default()), ProtocolVersion::V311);
    assert!(decode_measured(packet, ProtocolVersion::V311, &Limits::default()).0.is_ok());
}

#[test]
fn a_large_payload_is_not_copied() {
    let packet =
        encode(&publish("a/b", DEFAULT_MAX_PACKET_BYTES - 100, Properties::default()), ProtocolVersion::V5);
    let (result, largest_allocation) = decode_measured(packet, ProtocolVersion::V5, &Limits::default());
    assert!(result.is_ok());
    assert!(largest_allocation < 1024, "decoding allocated {largest_allocation} bytes at once");
}

#[test]
fn a_full_subscribe_allocates_only_its_bounded_vec() {
    let limits = Limits::default();
    let packet = encode(&subscribe(limits.max_subscriptions_per_packet), ProtocolVersion::V5);
    let (result, largest_allocation) = decode_measured(packet, ProtocolVersion::V5, &limits);
    assert!(result.is_ok());
    let bound = 2 * limits.max_subscriptions_per_packet * std::mem::size_of::<Subscription>();
    assert!(largest_allocation <= bound, "{largest_allocation} bytes at once, bound {bound}");
}

#[test]
fn encoding_refuses_what_the_wire_cannot_carry() {
    use tidewater_mqtt::{Auth, EncodeError, PubResponse, ReasonCode};

    let long_topic = "t".repeat(65_536);
    assert_eq!(
        publish(&long_topic, 0, Properties::default()).to_bytes(ProtocolVersion::V5),
        Err(EncodeError::TooLong { what: "topic name", len: 65_536, max: 65_535 })
    );
    let Packet::Publish(mut qos1_without_id) = publish("a", 0, Properties::default()) else { unreachable!() };
    qos1_without_id.qos = QoS::AtLeastOnce;
    assert_eq!(
        Packet::Publish(qos1_without_id).to_bytes(ProtocolVersion::V311),
        Err(EncodeError::Invalid {
            packet: PacketType::Publish,
            rule: "a packet identifier is needed exactly when QoS is above 0",
        })
    );
    let auth = Packet::Auth(Auth { reason_code: ReasonCode::Success, properties: Properties::default() });
    assert_eq!(
        auth.to_bytes(ProtocolVersion::V311),
        Err(EncodeError::NotInV311 { packet: PacketType::Auth })
    );
    let puback = Packet::PubAck(PubResponse {
        packet_id: NonZeroU16::MIN,
        reason_code: ReasonCode::Success,
        properties: Properties { topic_alias: Some(1), ..Properties::default() },
    });
    assert_eq!(
        puback.to_bytes(ProtocolVersion::V5),
        Err(EncodeError::PropertyNotAllowed {
            property: tidewater_mqtt::PropertyId::TopicAlias,
            context: PropertyContext::PubAck,
        })
    );
    // 3.1.1 has no properties: they are dropped, not refused.
    assert_eq!(puback.to_bytes(ProtocolVersion::V311).ok().as_deref(), Some(&[0x40, 0x02, 0x00, 0x01][..]));
    assert_eq!(
        subscribe(0).to_bytes(ProtocolVersion::V5),
        Err(EncodeError::Invalid { packet: PacketType::Subscribe, rule: "no subscriptions" })
    );
}
