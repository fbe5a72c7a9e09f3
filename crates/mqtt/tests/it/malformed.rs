//! One test per rule a packet can break, each through one `check` helper that decodes the hex
//! and asserts the exact [`DecodeError`] and the [`ErrorClass`] (so the reason code) the
//! gateway answers with. Offsets count from the packet's first byte.

use tidewater_mqtt::topic::TopicError;
use tidewater_mqtt::{
    ConnectReturnCode, DecodeError, ErrorClass, PacketType, PropertyContext, PropertyId, ProtocolVersion,
    ReasonCode,
};

use crate::{decode, from_hex};

use ProtocolVersion::{V311, V5};

/// Decodes `hex` as one packet of a `version` connection and asserts the error and its class.
#[track_caller]
fn check(hex: &str, version: ProtocolVersion, expected: DecodeError, class: ErrorClass) {
    let bytes = from_hex(hex);
    match decode(&bytes, version) {
        Ok(packet) => panic!("{hex} decoded as {packet:?}, expected {expected}"),
        Err(error) => {
            assert_eq!(error, expected, "{hex}");
            assert_eq!(error.class(), class, "{hex}: {error}");
        }
    }
}

const MALFORMED: ErrorClass = ErrorClass::MalformedPacket;
const PROTOCOL: ErrorClass = ErrorClass::ProtocolError;

#[test]
fn reserved_fixed_header_flags() {
    let subscribe_flags_0 = "80 08 0001 0003 612f62 00";
    let expected = DecodeError::ReservedFlags { packet: PacketType::Subscribe, flags: 0, expected: 2 };
    check(subscribe_flags_0, V311, expected.clone(), MALFORMED);
    check(subscribe_flags_0, V5, expected, MALFORMED);
    check(
        "60 02 0001",
        V5,
        DecodeError::ReservedFlags { packet: PacketType::PubRel, flags: 0, expected: 2 },
        MALFORMED,
    );
    check(
        "c1 00",
        V311,
        DecodeError::ReservedFlags { packet: PacketType::PingReq, flags: 1, expected: 0 },
        MALFORMED,
    );
    check(
        "a0 05 0001 000161",
        V311,
        DecodeError::ReservedFlags { packet: PacketType::Unsubscribe, flags: 0, expected: 2 },
        MALFORMED,
    );
}

#[test]
fn reserved_packet_types() {
    check("00 00", V5, DecodeError::ReservedPacketType { packet_type: 0 }, MALFORMED);
    // AUTH (15) only exists from MQTT 5 on.
    check("f0 00", V311, DecodeError::ReservedPacketType { packet_type: 15 }, MALFORMED);
}

#[test]
fn remaining_length_with_a_fifth_byte() {
    let hex = "30 ff ff ff ff 01";
    check(hex, V5, DecodeError::RemainingLengthTooLong { offset: 1 }, MALFORMED);
    assert_eq!(
        tidewater_mqtt::check(&from_hex(hex), usize::MAX),
        Err(DecodeError::RemainingLengthTooLong { offset: 1 })
    );
}

#[test]
fn remaining_length_not_minimal() {
    check("c0 80 00", V311, DecodeError::NonMinimalVarInt { what: "remaining length", offset: 1 }, MALFORMED);
}

#[test]
fn frame_not_exactly_one_packet() {
    check("c0 00 c0", V311, DecodeError::FrameLength { need: 2, have: 3 }, MALFORMED);
    check("30 05 0003 61", V311, DecodeError::FrameLength { need: 7, have: 5 }, MALFORMED);
    check("c0", V311, DecodeError::FrameLength { need: 2, have: 1 }, MALFORMED);
}

#[test]
fn truncated_string() {
    // The topic says 10 bytes; 3 follow.
    check(
        "30 05 000a 612f62",
        V311,
        DecodeError::Truncated { what: "topic name", offset: 4, need: 10, have: 3 },
        MALFORMED,
    );
    // The string length itself is cut: one byte where two are needed.
    check(
        "82 03 0001 00",
        V311,
        DecodeError::Truncated { what: "topic filter", offset: 4, need: 2, have: 1 },
        MALFORMED,
    );
}

#[test]
fn truncated_property_block() {
    check(
        "30 06 0003 612f62 09",
        V5,
        DecodeError::Truncated { what: "properties", offset: 8, need: 9, have: 0 },
        MALFORMED,
    );
    // A Message Expiry Interval with two of its four bytes.
    check(
        "30 09 0003 612f62 03 02 0000",
        V5,
        DecodeError::Truncated { what: "Message Expiry Interval", offset: 9, need: 4, have: 2 },
        MALFORMED,
    );
}

#[test]
fn invalid_utf8() {
    for bad in
        ["ff", "c0af" /* overlong '/' */, "eda080" /* UTF-16 surrogate */, "e282" /* cut */]
    {
        let len = bad.len() / 2 + 1;
        let hex = format!("30 {:02x} {:04x} 61{bad}", len + 2, len);
        check(&hex, V311, DecodeError::InvalidUtf8 { what: "topic name", offset: 2 }, MALFORMED);
    }
    // In a user property too.
    check(
        "30 0d 0003 612f62 07 26 0001 ff 0001 61",
        V5,
        DecodeError::InvalidUtf8 { what: "User Property name", offset: 9 },
        MALFORMED,
    );
}

#[test]
fn null_character_in_a_string() {
    check("30 05 0003 610062", V311, DecodeError::NullCharacter { what: "topic name", offset: 2 }, MALFORMED);
    check(
        "10 0e 0004 4d515454 04 02 003c 0002 6100",
        V311,
        DecodeError::NullCharacter { what: "client identifier", offset: 12 },
        MALFORMED,
    );
}

#[test]
fn wildcard_in_topic_name() {
    for (topic, error) in [("612f23", TopicError::WildcardInName), ("2b2f62", TopicError::WildcardInName)] {
        let hex = format!("30 05 0003 {topic}");
        let expected = DecodeError::InvalidTopicName { offset: 2, error };
        check(&hex, V311, expected.clone(), ErrorClass::TopicNameInvalid);
        check(&format!("30 06 0003 {topic} 00"), V5, expected, ErrorClass::TopicNameInvalid);
    }
    let error = DecodeError::InvalidTopicName { offset: 2, error: TopicError::WildcardInName };
    assert_eq!(error.reason_code(), ReasonCode::TopicNameInvalid);
}

#[test]
fn empty_topic_name() {
    check(
        "30 02 0000",
        V311,
        DecodeError::InvalidTopicName { offset: 2, error: TopicError::Empty },
        ErrorClass::TopicNameInvalid,
    );
    // MQTT 5 allows it only with a Topic Alias.
    check("30 03 0000 00", V5, DecodeError::EmptyTopicWithoutAlias, PROTOCOL);
    assert!(decode(&from_hex("30 06 0000 03 230001"), V5).is_ok());
}

#[test]
fn qos_3() {
    check("36 07 0003 612f62 0001", V311, DecodeError::InvalidQos { what: "PUBLISH QoS" }, MALFORMED);
    check(
        "82 09 0001 00 0003 612f62 03",
        V5,
        DecodeError::InvalidQos { what: "subscription QoS" },
        MALFORMED,
    );
    check(
        "10 0d 0004 4d515454 04 1e 003c 0001 61",
        V311,
        DecodeError::InvalidQos { what: "CONNECT will QoS" },
        MALFORMED,
    );
}

#[test]
fn dup_on_qos_0() {
    check("38 05 0003 612f62", V311, DecodeError::DupWithQos0, PROTOCOL);
}

#[test]
fn packet_identifier_0() {
    check(
        "32 07 0003 612f62 0000",
        V311,
        DecodeError::ZeroPacketId { packet: PacketType::Publish },
        PROTOCOL,
    );
    check(
        "82 08 0000 0003 612f62 00",
        V311,
        DecodeError::ZeroPacketId { packet: PacketType::Subscribe },
        PROTOCOL,
    );
    check(
        "a2 07 0000 0003 612f62",
        V311,
        DecodeError::ZeroPacketId { packet: PacketType::Unsubscribe },
        PROTOCOL,
    );
    check("40 02 0000", V5, DecodeError::ZeroPacketId { packet: PacketType::PubAck }, PROTOCOL);
}

#[test]
fn empty_subscribe_and_unsubscribe() {
    check("82 02 0001", V311, DecodeError::NoEntries { packet: PacketType::Subscribe }, PROTOCOL);
    check("82 03 0001 00", V5, DecodeError::NoEntries { packet: PacketType::Subscribe }, PROTOCOL);
    check("a2 02 0001", V311, DecodeError::NoEntries { packet: PacketType::Unsubscribe }, PROTOCOL);
}

#[test]
fn invalid_topic_filters() {
    for (filter, error) in [
        ("612f232f62", TopicError::MultiLevelWildcardMisplaced), // a/#/b
        ("6123", TopicError::MultiLevelWildcardMisplaced),       // a#
        ("612b", TopicError::SingleLevelWildcardMisplaced),      // a+
        ("24736861726500", TopicError::NullCharacter),           // never reaches the topic check
        ("247368617265202b2f78", TopicError::SingleLevelWildcardMisplaced),
        ("247368617265 2f 2b 2f 78", TopicError::InvalidShareName), // $share/+/x
        ("247368617265 2f 67", TopicError::EmptySharedFilter),      // $share/g
    ] {
        let bytes = from_hex(filter);
        let hex = format!("82 {:02x} 0001 {:04x} {filter} 00", bytes.len() + 5, bytes.len());
        let expected = if error == TopicError::NullCharacter {
            check(&hex, V311, DecodeError::NullCharacter { what: "topic filter", offset: 4 }, MALFORMED);
            continue;
        } else {
            DecodeError::InvalidTopicFilter { offset: 4, error }
        };
        check(&hex, V311, expected, ErrorClass::TopicFilterInvalid);
    }
}

#[test]
fn subscription_options_reserved_bits() {
    // 3.1.1: only the QoS bits exist.
    check(
        "82 08 0001 0003 612f62 04",
        V311,
        DecodeError::SubscriptionOptions {
            offset: 9,
            options: 4,
            rule: "reserved bits are set (MQTT-3.8.3-4 in 3.1.1, MQTT-3.8.3-5 in 5.0)",
        },
        MALFORMED,
    );
    check(
        "82 09 0001 00 0003 612f62 40",
        V5,
        DecodeError::SubscriptionOptions {
            offset: 10,
            options: 0x40,
            rule: "reserved bits are set (MQTT-3.8.3-4 in 3.1.1, MQTT-3.8.3-5 in 5.0)",
        },
        MALFORMED,
    );
}

#[test]
fn retain_handling_3_and_no_local_on_shared_subscription() {
    check(
        "82 09 0001 00 0003 612f62 30",
        V5,
        DecodeError::Protocol {
            what: "subscription options",
            rule: "Retain Handling 3 is reserved (spec 3.8.3.1)",
        },
        PROTOCOL,
    );
    // $share/g/a with No Local.
    check(
        "82 10 0001 00 000a 247368617265 2f 67 2f 61 04",
        V5,
        DecodeError::Protocol {
            what: "subscription options",
            rule: "No Local on a shared subscription (MQTT-3.8.3-4)",
        },
        PROTOCOL,
    );
}

#[test]
fn duplicate_property() {
    check(
        "30 0a 0003 612f62 04 0101 0101",
        V5,
        DecodeError::DuplicateProperty {
            property: PropertyId::PayloadFormatIndicator,
            context: PropertyContext::Publish,
        },
        PROTOCOL,
    );
    // A second Subscription Identifier: repeatable in PUBLISH, not in SUBSCRIBE.
    check(
        "82 0d 0001 04 0b01 0b02 0003 612f62 00",
        V5,
        DecodeError::DuplicateProperty {
            property: PropertyId::SubscriptionIdentifier,
            context: PropertyContext::Subscribe,
        },
        PROTOCOL,
    );
    assert_eq!(
        DecodeError::DuplicateProperty {
            property: PropertyId::TopicAlias,
            context: PropertyContext::Publish
        }
        .reason_code(),
        ReasonCode::ProtocolError
    );
}

#[test]
fn property_not_allowed_in_the_packet() {
    // Session Expiry Interval belongs to CONNECT, CONNACK and DISCONNECT, not PUBLISH. The spec
    // (2.2.2.2) calls an identifier not valid for its packet type a Malformed Packet.
    check(
        "30 0b 0003 612f62 05 11 0000000a",
        V5,
        DecodeError::PropertyNotAllowed {
            property: PropertyId::SessionExpiryInterval,
            context: PropertyContext::Publish,
        },
        MALFORMED,
    );
    // Will Delay Interval belongs to the will properties, not the CONNECT's own.
    check(
        "10 13 0004 4d515454 05 02 003c 05 18 0000000a 0001 61",
        V5,
        DecodeError::PropertyNotAllowed {
            property: PropertyId::WillDelayInterval,
            context: PropertyContext::Connect,
        },
        MALFORMED,
    );
    // Topic Alias in a PUBACK.
    check(
        "40 07 0001 00 03 230001",
        V5,
        DecodeError::PropertyNotAllowed {
            property: PropertyId::TopicAlias,
            context: PropertyContext::PubAck,
        },
        MALFORMED,
    );
}

#[test]
fn unknown_property_identifier() {
    check("30 08 0003 612f62 02 0400", V5, DecodeError::UnknownProperty { id: 4, offset: 8 }, MALFORMED);
}

#[test]
fn invalid_property_values() {
    check(
        "30 08 0003 612f62 02 0102",
        V5,
        DecodeError::InvalidPropertyValue { property: PropertyId::PayloadFormatIndicator, value: 2 },
        PROTOCOL,
    );
    check(
        "30 09 0003 612f62 03 230000",
        V5,
        DecodeError::InvalidPropertyValue { property: PropertyId::TopicAlias, value: 0 },
        ErrorClass::TopicAliasInvalid,
    );
    check(
        "10 11 0004 4d515454 05 02 003c 03 210000 0001 61",
        V5,
        DecodeError::InvalidPropertyValue { property: PropertyId::ReceiveMaximum, value: 0 },
        PROTOCOL,
    );
    check(
        "82 0b 0001 02 0b00 0003 612f62 00",
        V5,
        DecodeError::InvalidPropertyValue { property: PropertyId::SubscriptionIdentifier, value: 0 },
        PROTOCOL,
    );
}

#[test]
fn authentication_data_without_method() {
    check(
        "10 13 0004 4d515454 05 02 003c 05 16 0002 0102 0001 61",
        V5,
        DecodeError::Protocol {
            what: "properties",
            rule: "Authentication Data without an Authentication Method (spec 3.1.2.11.10)",
        },
        PROTOCOL,
    );
}

#[test]
fn invalid_reason_codes() {
    check(
        "40 03 0001 05",
        V5,
        DecodeError::InvalidReasonCode { packet: PacketType::PubAck, code: 5 },
        MALFORMED,
    );
    // No matching subscribers is a PUBACK code, not a DISCONNECT one.
    check(
        "e0 01 10",
        V5,
        DecodeError::InvalidReasonCode { packet: PacketType::Disconnect, code: 0x10 },
        MALFORMED,
    );
    check(
        "20 02 00 06",
        V311,
        DecodeError::InvalidReasonCode { packet: PacketType::ConnAck, code: 6 },
        MALFORMED,
    );
    check(
        "90 03 0001 03",
        V311,
        DecodeError::InvalidReasonCode { packet: PacketType::SubAck, code: 3 },
        MALFORMED,
    );
}

#[test]
fn connack_reserved_bits() {
    check("20 02 02 00", V311, DecodeError::ReservedBits { packet: PacketType::ConnAck, bits: 2 }, MALFORMED);
}

#[test]
fn trailing_bytes() {
    check(
        "c0 01 00",
        V311,
        DecodeError::TrailingBytes { packet: PacketType::PingReq, offset: 2, extra: 1 },
        MALFORMED,
    );
    check(
        "40 03 0001 00",
        V311,
        DecodeError::TrailingBytes { packet: PacketType::PubAck, offset: 4, extra: 1 },
        MALFORMED,
    );
    check(
        "e0 01 00",
        V311,
        DecodeError::TrailingBytes { packet: PacketType::Disconnect, offset: 2, extra: 1 },
        MALFORMED,
    );
}

/// A valid 3.1.1 CONNECT: clean session, keep alive 60, client id "a"; each test below changes
/// one field of it.
const CONNECT_V311: &str = "10 0d 0004 4d515454 04 02 003c 0001 61";

#[test]
fn connect_baseline_is_valid() {
    assert!(decode(&from_hex(CONNECT_V311), V311).is_ok());
}

#[test]
fn connect_protocol_name() {
    let error = DecodeError::ProtocolName { found: "MQTX".into() };
    check(
        "10 0d 0004 4d515458 04 02 003c 0001 61",
        V311,
        error.clone(),
        ErrorClass::UnsupportedProtocolVersion,
    );
    assert_eq!(error.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    // MQTT 3.1's name and level.
    check(
        "10 0f 0006 4d5149736470 03 02 003c 0001 61",
        V311,
        DecodeError::ProtocolName { found: "MQIsdp".into() },
        ErrorClass::UnsupportedProtocolVersion,
    );
}

#[test]
fn connect_protocol_name_in_the_error_is_bounded() {
    // 65,535 bytes of invalid UTF-8 as the protocol name: the error keeps only the first few.
    let mut bytes = vec![0x10, 0x88, 0x80, 0x04, 0xff, 0xff];
    bytes.extend(std::iter::repeat_n(0xffu8, 65_535));
    bytes.extend_from_slice(&[0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, 0x61]);
    let error = decode(&bytes, V311).err();
    assert_eq!(error, Some(DecodeError::ProtocolName { found: "\u{fffd}".repeat(16) }));
}

#[test]
fn connect_protocol_level() {
    let error = DecodeError::UnsupportedProtocolLevel { level: 3 };
    check(
        "10 0d 0004 4d515454 03 02 003c 0001 61",
        V5,
        error.clone(),
        ErrorClass::UnsupportedProtocolVersion,
    );
    assert_eq!(
        ConnectReturnCode::closest(error.reason_code()),
        ConnectReturnCode::UnacceptableProtocolVersion,
        "a 3.1.1 client hears return code 1"
    );
    check(
        "10 0d 0004 4d515454 06 02 003c 0001 61",
        V5,
        DecodeError::UnsupportedProtocolLevel { level: 6 },
        ErrorClass::UnsupportedProtocolVersion,
    );
}

#[test]
fn connect_reserved_flag() {
    check("10 0d 0004 4d515454 04 03 003c 0001 61", V311, DecodeError::ConnectReservedFlag, MALFORMED);
}

#[test]
fn connect_will_flags_without_will() {
    check(
        "10 0d 0004 4d515454 04 0a 003c 0001 61",
        V311,
        DecodeError::WillFlags {
            rule: "will QoS is set without the will flag (MQTT-3.1.2-11 in 5.0, MQTT-3.1.2-13 in 3.1.1)",
        },
        MALFORMED,
    );
    check(
        "10 0d 0004 4d515454 04 22 003c 0001 61",
        V311,
        DecodeError::WillFlags {
            rule: "will retain is set without the will flag (MQTT-3.1.2-13 in 5.0, MQTT-3.1.2-15 in 3.1.1)",
        },
        MALFORMED,
    );
}

#[test]
fn connect_password_without_username() {
    check(
        "10 0f 0004 4d515454 04 42 003c 0001 61 0000",
        V311,
        DecodeError::PasswordWithoutUsername,
        PROTOCOL,
    );
    // MQTT 5 allows it (3.1.2.9).
    let Ok(tidewater_mqtt::Packet::Connect(connect)) =
        decode(&from_hex("10 10 0004 4d515454 05 42 003c 00 0001 61 0000"), V5)
    else {
        panic!("MQTT 5 CONNECT with only a password")
    };
    assert_eq!((connect.username, connect.password.map(|password| password.len())), (None, Some(0)));
}

#[test]
fn connect_empty_client_id_without_clean_session() {
    let error = DecodeError::EmptyClientIdWithoutCleanSession;
    check("10 0c 0004 4d515454 04 00 003c 0000", V311, error.clone(), ErrorClass::ClientIdentifierNotValid);
    assert_eq!(ConnectReturnCode::closest(error.reason_code()), ConnectReturnCode::IdentifierRejected);
    // MQTT 5 lets the server assign one whatever Clean Start says.
    assert!(decode(&from_hex("10 0d 0004 4d515454 05 00 003c 00 0000"), V5).is_ok());
}

#[test]
fn connect_will_topic_with_wildcard() {
    check(
        "10 14 0004 4d515454 04 06 003c 0001 61 0003 612f23 0000",
        V311,
        DecodeError::InvalidTopicName { offset: 15, error: TopicError::WildcardInName },
        ErrorClass::TopicNameInvalid,
    );
}

#[test]
fn connect_cut_short() {
    check(
        "10 0b 0004 4d515454 04 82 003c 0001 61",
        V311,
        DecodeError::FrameLength { need: 13, have: 15 },
        MALFORMED,
    );
    // The user name flag promises a user name that is not there.
    check(
        "10 0d 0004 4d515454 04 82 003c 0001 61",
        V311,
        DecodeError::Truncated { what: "user name", offset: 15, need: 2, have: 0 },
        MALFORMED,
    );
}

#[test]
fn not_authorized_and_bad_credentials_in_both_versions() {
    for (reason, return_code) in [
        (ReasonCode::NotAuthorized, ConnectReturnCode::NotAuthorized),
        (ReasonCode::BadUserNameOrPassword, ConnectReturnCode::BadUserNameOrPassword),
        (ReasonCode::ClientIdentifierNotValid, ConnectReturnCode::IdentifierRejected),
        (ReasonCode::UnsupportedProtocolVersion, ConnectReturnCode::UnacceptableProtocolVersion),
        (ReasonCode::ServerUnavailable, ConnectReturnCode::ServerUnavailable),
        (ReasonCode::Success, ConnectReturnCode::Accepted),
    ] {
        assert_eq!(ConnectReturnCode::exact(reason), Some(return_code));
        assert_eq!(return_code.to_reason_code(), reason);
    }
    assert_eq!(ReasonCode::NotAuthorized as u8, 0x87);
    assert_eq!(ConnectReturnCode::NotAuthorized as u8, 5);
    assert_eq!(ReasonCode::BadUserNameOrPassword as u8, 0x86);
    assert_eq!(ConnectReturnCode::BadUserNameOrPassword as u8, 4);
    assert_eq!(ConnectReturnCode::closest(ReasonCode::Banned), ConnectReturnCode::NotAuthorized);
    assert_eq!(ConnectReturnCode::closest(ReasonCode::ServerBusy), ConnectReturnCode::ServerUnavailable);
    assert_eq!(ReasonCode::NotAuthorized.name(), "Not authorized");

    // Encoding one CONNACK for both versions gives each its own code.
    let connack = tidewater_mqtt::Packet::ConnAck(tidewater_mqtt::ConnAck {
        session_present: false,
        reason_code: ReasonCode::NotAuthorized,
        properties: Default::default(),
    });
    assert_eq!(connack.to_bytes(V311).ok().as_deref(), Some(&[0x20, 0x02, 0x00, 0x05][..]));
    assert_eq!(connack.to_bytes(V5).ok().as_deref(), Some(&[0x20, 0x03, 0x00, 0x87, 0x00][..]));
}

#[test]
fn first_packet_must_be_connect() {
    let limits = tidewater_mqtt::Limits::default();
    let not_connect =
        DecodeError::Protocol { what: "first packet", rule: "must be a CONNECT (MQTT-3.1.0-1)" };
    for hex in ["c0 00", "30 05 0003 612f62", ""] {
        let frame = bytes::Bytes::from(from_hex(hex));
        let error = tidewater_mqtt::decode_connect(frame, &limits).err();
        assert_eq!(error.as_ref(), Some(&not_connect), "{hex:?}");
        assert_eq!(error.map(|error| error.class()), Some(PROTOCOL));
    }
    let connect = tidewater_mqtt::decode_connect(bytes::Bytes::from(from_hex(CONNECT_V311)), &limits);
    assert_eq!(connect.map(|connect| connect.protocol_version), Ok(V311));
    // A CONNECT's own errors come through unchanged.
    let bad_level = bytes::Bytes::from(from_hex("10 0d 0004 4d515454 03 02 003c 0001 61"));
    assert_eq!(
        tidewater_mqtt::decode_connect(bad_level, &limits).err(),
        Some(DecodeError::UnsupportedProtocolLevel { level: 3 })
    );
}

#[test]
fn a_refused_connect_still_tells_its_version() {
    use tidewater_mqtt::connect_protocol_version;
    // A 5.0 CONNECT whose properties are malformed: the CONNACK must be a 5.0 one.
    let bad_v5 = from_hex("10 13 0004 4d515454 05 02 003c 05 18 0000000a 0001 61");
    assert!(decode(&bad_v5, V5).is_err());
    assert_eq!(connect_protocol_version(&bad_v5), Some(V5));
    assert_eq!(connect_protocol_version(&from_hex(CONNECT_V311)), Some(V311));
    // 3.1 (MQIsdp, level 3), a level we do not know, a non-CONNECT and a cut frame.
    assert_eq!(connect_protocol_version(&from_hex("10 0f 0006 4d5149736470 03 02 003c 0001 61")), None);
    assert_eq!(connect_protocol_version(&from_hex("10 0d 0004 4d515454 06 02 003c 0001 61")), None);
    assert_eq!(connect_protocol_version(&from_hex("c0 00")), None);
    assert_eq!(connect_protocol_version(&from_hex("10 0d 0004 4d51")), None);
}
