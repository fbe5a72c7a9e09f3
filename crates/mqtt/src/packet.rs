//! The 15 MQTT control packets as typed values, and their decoding and encoding for protocol
//! level 4 (3.1.1) and 5 (5.0). [`decode`] takes exactly one packet, as [`crate::check`] cut it,
//! and checks every rule the bytes alone can show (see [`DecodeError`]); session rules (topic
//! alias ranges, packet identifiers in flight, receive maximum) are the gateway's. Strings,
//! binary data and payloads are zero-copy slices of the frame.
//!
//! A CONNECT carries its own protocol level, so it decodes whatever version is passed; every
//! later packet of the connection is decoded with the version the CONNECT gave.

use std::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::frame::{parse_header, put_varint, varint_len, VARINT_MAX};
use crate::limits::Limits;
use crate::properties::{Properties, PropertyContext};
use crate::reason::{ConnectReturnCode, ReasonCode};
use crate::string::Utf8Bytes;
use crate::topic::{parse_shared, validate_topic_filter, validate_topic_name};
use crate::wire::{put_binary, put_string, Reader};

/// How much of an unexpected CONNECT protocol name an error keeps.
const PROTOCOL_NAME_SHOWN_BYTES: usize = 16;

/// A packet identifier; MQTT never uses 0 (MQTT-2.2.1-3).
pub type PacketId = NonZeroU16;

/// The protocol level a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311 = 4,
    /// MQTT 5.0, protocol level 5.
    V5 = 5,
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// The packet type, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The fixed header flags every packet but PUBLISH must carry (spec 2.1.3).
    pub fn required_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        }
    }
}

impl std::fmt::Display for PacketType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The will message a CONNECT asks the server to publish if the connection dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: Utf8Bytes,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 will properties; empty in 3.1.1.
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol_version: ProtocolVersion,
    /// Clean Session in 3.1.1, Clean Start in 5.0.
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    /// May be empty: the server then assigns one (3.1.1 only with clean session).
    pub client_id: Utf8Bytes,
    pub will: Option<Will>,
    pub username: Option<Utf8Bytes>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// In 3.1.1 the return code, as its MQTT 5 equivalent; see [`ConnectReturnCode`].
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in MQTT 5 with a topic alias.
    pub topic: Utf8Bytes,
    /// Present exactly when `qos` is above 0.
    pub packet_id: Option<PacketId>,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: PacketId,
    /// Always Success in 3.1.1.
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

/// What a subscriber asks to have retained messages sent (spec 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RetainHandling {
    SendAtSubscribe = 0,
    SendAtNewSubscribe = 1,
    DoNotSend = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// MQTT 5 only, like the two fields after it; false and the default in 3.1.1.
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options a 3.1.1 subscription has: only a QoS.
    pub fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    fn to_byte(self) -> u8 {
        self.qos as u8
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling as u8) << 4
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// A valid topic filter, possibly `$share/{group}/{filter}`.
    pub filter: Utf8Bytes,
    pub options: SubscriptionOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// At least one.
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// One per subscription. In 3.1.1: Success (QoS 0), GrantedQos1, GrantedQos2, or
    /// UnspecifiedError for 0x80 (any other error is sent as 0x80).
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// At least one.
    pub filters: Vec<Utf8Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// One per filter in MQTT 5; 3.1.1 has none (and does not send them).
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Always Success (Normal disconnection) in 3.1.1.
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

/// MQTT 5 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: once per connection, and with its will the largest packet by far.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// Whether MQTT 5 allows `code` in a packet of type `packet` (spec 2.4 and each packet's
/// reason code table).
pub fn reason_code_allowed(packet: PacketType, code: ReasonCode) -> bool {
    let value = code as u8;
    match packet {
        PacketType::ConnAck => matches!(
            value,
            0x00 | 0x80..=0x8a | 0x8c | 0x90 | 0x95 | 0x97 | 0x99 | 0x9a | 0x9b | 0x9c | 0x9d | 0x9f
        ),
        PacketType::PubAck | PacketType::PubRec => {
            matches!(value, 0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99)
        }
        PacketType::PubRel | PacketType::PubComp => matches!(value, 0x00 | 0x92),
        PacketType::SubAck => {
            matches!(value, 0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8f | 0x91 | 0x97 | 0x9e | 0xa1 | 0xa2)
        }
        PacketType::UnsubAck => matches!(value, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8f | 0x91),
        PacketType::Disconnect => matches!(
            value,
            0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8b | 0x8d..=0x90 | 0x93..=0xa2
        ),
        PacketType::Auth => matches!(value, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}

fn reason_code(reader: &mut Reader<'_>, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    let code = reader.u8("reason code")?;
    ReasonCode::from_u8(code)
        .filter(|&reason| reason_code_allowed(packet, reason))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })
}

fn packet_id(reader: &mut Reader<'_>, packet: PacketType) -> Result<PacketId, DecodeError> {
    let value = reader.u16("packet identifier")?;
    PacketId::new(value).ok_or(DecodeError::ZeroPacketId { packet })
}

fn topic_name(
    reader: &mut Reader<'_>,
    what: &'static str,
    limits: &Limits,
) -> Result<Utf8Bytes, DecodeError> {
    let offset = reader.offset();
    let name = reader.string(what)?;
    validate_topic_name(&name, limits.max_topic_bytes)
        .map_err(|error| DecodeError::InvalidTopicName { offset, error })?;
    Ok(name)
}

fn topic_filter(reader: &mut Reader<'_>, limits: &Limits) -> Result<Utf8Bytes, DecodeError> {
    let offset = reader.offset();
    let filter = reader.string("topic filter")?;
    validate_topic_filter(&filter, limits.max_topic_bytes)
        .map_err(|error| DecodeError::InvalidTopicFilter { offset, error })?;
    Ok(filter)
}

fn decode_properties(
    reader: &mut Reader<'_>,
    version: ProtocolVersion,
    context: PropertyContext,
    limits: &Limits,
) -> Result<Properties, DecodeError> {
    match version {
        ProtocolVersion::V311 => Ok(Properties::default()),
        ProtocolVersion::V5 => Properties::decode(reader, context, limits),
    }
}

/// Checks that one more entry fits under the per-packet limit before it is read.
fn check_entries(n_entries: usize, packet: PacketType, limits: &Limits) -> Result<(), DecodeError> {
    if n_entries >= limits.max_subscriptions_per_packet {
        return Err(DecodeError::TooManyEntries { packet, limit: limits.max_subscriptions_per_packet });
    }
    Ok(())
}

/// Decodes `frame`, which must hold exactly one whole packet (as [`crate::check`] measured it),
/// for a connection speaking `version` (ignored for CONNECT, which carries its own).
pub fn decode(frame: Bytes, version: ProtocolVersion, limits: &Limits) -> Result<Packet, DecodeError> {
    let Some(header) = parse_header(&frame)? else {
        return Err(DecodeError::FrameLength { need: 2, have: frame.len() });
    };
    if header.packet_bytes() > limits.max_packet_bytes {
        return Err(DecodeError::PacketTooLarge {
            size: header.packet_bytes(),
            limit: limits.max_packet_bytes,
        });
    }
    if header.packet_bytes() != frame.len() {
        return Err(DecodeError::FrameLength { need: header.packet_bytes(), have: frame.len() });
    }
    let type_bits = header.first_byte >> 4;
    let flags = header.first_byte & 0x0f;
    let packet_type = match PacketType::from_u8(type_bits) {
        Some(PacketType::Auth) if version == ProtocolVersion::V311 => None,
        other => other,
    }
    .ok_or(DecodeError::ReservedPacketType { packet_type: type_bits })?;
    if let Some(expected) = packet_type.required_flags() {
        if flags != expected {
            return Err(DecodeError::ReservedFlags { packet: packet_type, flags, expected });
        }
    }
    let mut reader = Reader::new(&frame, header.header_bytes, frame.len());
    let packet = decode_body(&mut reader, packet_type, flags, version, limits)?;
    if !reader.is_empty() {
        return Err(DecodeError::TrailingBytes {
            packet: packet_type,
            offset: reader.offset(),
            extra: reader.remaining(),
        });
    }
    Ok(packet)
}

/// Decodes the first packet of a connection, which must be a CONNECT (MQTT-3.1.0-1); its
/// `protocol_version` is the version to decode the rest of the connection with.
pub fn decode_connect(frame: Bytes, limits: &Limits) -> Result<Connect, DecodeError> {
    let not_connect =
        DecodeError::Protocol { what: "first packet", rule: "must be a CONNECT (MQTT-3.1.0-1)" };
    if frame.first().is_none_or(|&first_byte| first_byte >> 4 != PacketType::Connect as u8) {
        return Err(not_connect);
    }
    // The version passed is ignored for a CONNECT.
    match decode(frame, ProtocolVersion::V5, limits)? {
        Packet::Connect(connect) => Ok(*connect),
        _ => Err(not_connect),
    }
}

/// The protocol level a CONNECT frame announces, read without decoding the rest, so that a
/// gateway refusing a CONNECT (a [`decode_connect`] error) answers in the client's version:
/// MQTT 5 clients get a CONNACK with a reason code, 3.1.1 clients one with a return code.
/// `None` when the frame is not a CONNECT or its protocol name or level is not one we speak.
pub fn connect_protocol_version(frame: &[u8]) -> Option<ProtocolVersion> {
    let header = parse_header(frame).ok()??;
    if header.first_byte >> 4 != PacketType::Connect as u8 {
        return None;
    }
    match frame.get(header.header_bytes..header.header_bytes + 7)? {
        [0, 4, b'M', b'Q', b'T', b'T', 4] => Some(ProtocolVersion::V311),
        [0, 4, b'M', b'Q', b'T', b'T', 5] => Some(ProtocolVersion::V5),
        _ => None,
    }
}

fn decode_body(
    reader: &mut Reader<'_>,
    packet_type: PacketType,
    flags: u8,
    version: ProtocolVersion,
    limits: &Limits,
) -> Result<Packet, DecodeError> {
    use ProtocolVersion::{V311, V5};
    Ok(match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(decode_connect_body(reader, limits)?)),
        PacketType::ConnAck => {
            let acknowledge_flags = reader.u8("connect acknowledge flags")?;
            if acknowledge_flags & 0xfe != 0 {
                return Err(DecodeError::ReservedBits {
                    packet: packet_type,
                    bits: acknowledge_flags & 0xfe,
                });
            }
            let reason_code = match version {
                V311 => {
                    let code = reader.u8("return code")?;
                    ConnectReturnCode::from_u8(code)
                        .ok_or(DecodeError::InvalidReasonCode { packet: packet_type, code })?
                        .to_reason_code()
                }
                V5 => reason_code(reader, packet_type)?,
            };
            let properties = decode_properties(reader, version, PropertyContext::ConnAck, limits)?;
            Packet::ConnAck(ConnAck { session_present: acknowledge_flags & 1 == 1, reason_code, properties })
        }
        PacketType::Publish => Packet::Publish(decode_publish(reader, flags, version, limits)?),
        PacketType::PubAck => Packet::PubAck(decode_pub_response(reader, packet_type, version, limits)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_response(reader, packet_type, version, limits)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_response(reader, packet_type, version, limits)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_response(reader, packet_type, version, limits)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(reader, version, limits)?),
        PacketType::SubAck => {
            let packet_id = packet_id(reader, packet_type)?;
            let properties = decode_properties(reader, version, PropertyContext::SubAck, limits)?;
            let mut reason_codes = Vec::new();
            while !reader.is_empty() {
                check_entries(reason_codes.len(), packet_type, limits)?;
                let reason = match version {
                    V311 => match reader.u8("return code")? {
                        0 => ReasonCode::Success,
                        1 => ReasonCode::GrantedQos1,
                        2 => ReasonCode::GrantedQos2,
                        0x80 => ReasonCode::UnspecifiedError,
                        code => return Err(DecodeError::InvalidReasonCode { packet: packet_type, code }),
                    },
                    V5 => reason_code(reader, packet_type)?,
                };
                reason_codes.push(reason);
            }
            if reason_codes.is_empty() {
                return Err(DecodeError::NoEntries { packet: packet_type });
            }
            Packet::SubAck(SubAck { packet_id, properties, reason_codes })
        }
        PacketType::Unsubscribe => {
            let packet_id = packet_id(reader, packet_type)?;
            let properties = decode_properties(reader, version, PropertyContext::Unsubscribe, limits)?;
            let mut filters = Vec::new();
            while !reader.is_empty() {
                check_entries(filters.len(), packet_type, limits)?;
                filters.push(topic_filter(reader, limits)?);
            }
            if filters.is_empty() {
                return Err(DecodeError::NoEntries { packet: packet_type });
            }
            Packet::Unsubscribe(Unsubscribe { packet_id, properties, filters })
        }
        PacketType::UnsubAck => {
            let packet_id = packet_id(reader, packet_type)?;
            let properties = decode_properties(reader, version, PropertyContext::UnsubAck, limits)?;
            let mut reason_codes = Vec::new();
            if version == V5 {
                while !reader.is_empty() {
                    check_entries(reason_codes.len(), packet_type, limits)?;
                    reason_codes.push(reason_code(reader, packet_type)?);
                }
                if reason_codes.is_empty() {
                    return Err(DecodeError::NoEntries { packet: packet_type });
                }
            }
            Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })
        }
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason_code, properties) = decode_reason_and_properties(
                reader,
                packet_type,
                version,
                PropertyContext::Disconnect,
                limits,
            )?;
            Packet::Disconnect(Disconnect { reason_code, properties })
        }
        PacketType::Auth => {
            let (reason_code, properties) =
                decode_reason_and_properties(reader, packet_type, version, PropertyContext::Auth, limits)?;
            Packet::Auth(Auth { reason_code, properties })
        }
    })
}

/// The tail of MQTT 5 DISCONNECT, AUTH and the publish acknowledgements: a reason code and a
/// property block, each omitted when the rest is (Success and no properties). Nothing in 3.1.1.
fn decode_reason_and_properties(
    reader: &mut Reader<'_>,
    packet_type: PacketType,
    version: ProtocolVersion,
    context: PropertyContext,
    limits: &Limits,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if version == ProtocolVersion::V311 || reader.is_empty() {
        return Ok((ReasonCode::Success, Properties::default()));
    }
    let reason = reason_code(reader, packet_type)?;
    if reader.is_empty() {
        return Ok((reason, Properties::default()));
    }
    Ok((reason, Properties::decode(reader, context, limits)?))
}

fn decode_pub_response(
    reader: &mut Reader<'_>,
    packet_type: PacketType,
    version: ProtocolVersion,
    limits: &Limits,
) -> Result<PubResponse, DecodeError> {
    let context = match packet_type {
        PacketType::PubAck => PropertyContext::PubAck,
        PacketType::PubRec => PropertyContext::PubRec,
        PacketType::PubRel => PropertyContext::PubRel,
        _ => PropertyContext::PubComp,
    };
    let packet_id = packet_id(reader, packet_type)?;
    let (reason_code, properties) =
        decode_reason_and_properties(reader, packet_type, version, context, limits)?;
    Ok(PubResponse { packet_id, reason_code, properties })
}

fn decode_connect_body(reader: &mut Reader<'_>, limits: &Limits) -> Result<Connect, DecodeError> {
    let protocol_name = reader.binary("protocol name")?;
    if protocol_name.as_ref() != b"MQTT" {
        // Only the first bytes go into the error: a lossy conversion of 65,535 invalid bytes
        // would triple them.
        let shown = &protocol_name[..protocol_name.len().min(PROTOCOL_NAME_SHOWN_BYTES)];
        return Err(DecodeError::ProtocolName { found: String::from_utf8_lossy(shown).into_owned() });
    }
    let level = reader.u8("protocol level")?;
    let version = match level {
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocolLevel { level }),
    };
    let flags = reader.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQos { what: "CONNECT will QoS" })?;
    if !will_flag && will_qos_bits != 0 {
        return Err(DecodeError::WillFlags {
            rule: "will QoS is set without the will flag (MQTT-3.1.2-11 in 5.0, MQTT-3.1.2-13 in 3.1.1)",
        });
    }
    if !will_flag && will_retain {
        return Err(DecodeError::WillFlags {
            rule: "will retain is set without the will flag (MQTT-3.1.2-13 in 5.0, MQTT-3.1.2-15 in 3.1.1)",
        });
    }
    if version == ProtocolVersion::V311 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive_secs = reader.u16("keep alive")?;
    let properties = decode_properties(reader, version, PropertyContext::Connect, limits)?;
    let client_id = reader.string("client identifier")?;
    if version == ProtocolVersion::V311 && client_id.is_empty() && !clean_start {
        return Err(DecodeError::EmptyClientIdWithoutCleanSession);
    }
    let will = if will_flag {
        let properties = decode_properties(reader, version, PropertyContext::Will, limits)?;
        let topic = topic_name(reader, "will topic", limits)?;
        let payload = reader.binary("will payload")?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if username_flag { Some(reader.string("user name")?) } else { None };
    let password = if password_flag { Some(reader.binary("password")?) } else { None };
    Ok(Connect {
        protocol_version: version,
        clean_start,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_publish(
    reader: &mut Reader<'_>,
    flags: u8,
    version: ProtocolVersion,
    limits: &Limits,
) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQos { what: "PUBLISH QoS" })?;
    if qos == QoS::AtMostOnce && dup {
        return Err(DecodeError::DupWithQos0);
    }
    let topic_offset = reader.offset();
    let topic = reader.string("topic name")?;
    // MQTT 5 allows an empty topic name when a topic alias stands in for it; checked below,
    // once the properties are known.
    if !(topic.is_empty() && version == ProtocolVersion::V5) {
        validate_topic_name(&topic, limits.max_topic_bytes)
            .map_err(|error| DecodeError::InvalidTopicName { offset: topic_offset, error })?;
    }
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(packet_id(reader, PacketType::Publish)?) };
    let properties = decode_properties(reader, version, PropertyContext::Publish, limits)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicWithoutAlias);
    }
    let payload = reader.rest();
    Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
}

fn decode_subscribe(
    reader: &mut Reader<'_>,
    version: ProtocolVersion,
    limits: &Limits,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(reader, PacketType::Subscribe)?;
    let properties = decode_properties(reader, version, PropertyContext::Subscribe, limits)?;
    let mut subscriptions = Vec::new();
    while !reader.is_empty() {
        check_entries(subscriptions.len(), PacketType::Subscribe, limits)?;
        let filter = topic_filter(reader, limits)?;
        let offset = reader.offset();
        let options = reader.u8("subscription options")?;
        let reserved_mask = match version {
            ProtocolVersion::V311 => 0b1111_1100,
            ProtocolVersion::V5 => 0b1100_0000,
        };
        if options & reserved_mask != 0 {
            return Err(DecodeError::SubscriptionOptions {
                offset,
                options,
                rule: "reserved bits are set (MQTT-3.8.3-4 in 3.1.1, MQTT-3.8.3-5 in 5.0)",
            });
        }
        let qos = QoS::from_u8(options & 0b11).ok_or(DecodeError::InvalidQos { what: "subscription QoS" })?;
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtNewSubscribe,
            2 => RetainHandling::DoNotSend,
            _ => {
                return Err(DecodeError::Protocol {
                    what: "subscription options",
                    rule: "Retain Handling 3 is reserved (spec 3.8.3.1)",
                })
            }
        };
        let no_local = options & 0b100 != 0;
        if no_local && matches!(parse_shared(&filter), Ok(Some(_))) {
            return Err(DecodeError::Protocol {
                what: "subscription options",
                rule: "No Local on a shared subscription (MQTT-3.8.3-4)",
            });
        }
        let options = SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: options & 0b1000 != 0,
            retain_handling,
        };
        subscriptions.push(Subscription { filter, options });
    }
    if subscriptions.is_empty() {
        return Err(DecodeError::NoEntries { packet: PacketType::Subscribe });
    }
    Ok(Subscribe { packet_id, properties, subscriptions })
}

fn put_properties(
    out: &mut BytesMut,
    version: ProtocolVersion,
    properties: &Properties,
    context: PropertyContext,
) -> Result<(), EncodeError> {
    if version == ProtocolVersion::V311 {
        // 3.1.1 has no properties; what the caller set for a 5.0 peer is dropped.
        return Ok(());
    }
    if let Some(property) = properties.present().find(|property| !property.allowed_in(context)) {
        return Err(EncodeError::PropertyNotAllowed { property, context });
    }
    properties.encode(out)
}

fn put_reason_and_properties(
    out: &mut BytesMut,
    version: ProtocolVersion,
    reason_code: ReasonCode,
    properties: &Properties,
    context: PropertyContext,
) -> Result<(), EncodeError> {
    if version == ProtocolVersion::V311 || (reason_code == ReasonCode::Success && properties.is_empty()) {
        return Ok(());
    }
    out.put_u8(reason_code as u8);
    if !properties.is_empty() {
        put_properties(out, version, properties, context)?;
    }
    Ok(())
}

impl Packet {
    /// Appends the packet's bytes to `out` for a connection speaking `version` (a CONNECT uses
    /// its own `protocol_version`). What 3.1.1 cannot carry is dropped: properties, reason codes
    /// of acknowledgements and DISCONNECT; a CONNACK reason code becomes the closest return code
    /// and a SUBACK failure 0x80. Values are trusted otherwise: encode what decode would accept.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        // Everything but a PUBLISH payload goes through `body` first, to learn the Remaining
        // Length; the payload, possibly large, is copied once, straight into `out`.
        let mut body = BytesMut::new();
        let mut payload: &[u8] = &[];
        let packet_type = self.packet_type();
        let mut flags = packet_type.required_flags().unwrap_or(0);
        match self {
            Packet::Connect(connect) => encode_connect(connect, &mut body)?,
            Packet::ConnAck(connack) => {
                body.put_u8(u8::from(connack.session_present));
                match version {
                    ProtocolVersion::V311 => {
                        body.put_u8(ConnectReturnCode::closest(connack.reason_code) as u8)
                    }
                    ProtocolVersion::V5 => body.put_u8(connack.reason_code as u8),
                }
                put_properties(&mut body, version, &connack.properties, PropertyContext::ConnAck)?;
            }
            Packet::Publish(publish) => {
                flags = u8::from(publish.dup) << 3 | (publish.qos as u8) << 1 | u8::from(publish.retain);
                put_string(&mut body, "topic name", &publish.topic)?;
                match (publish.qos, publish.packet_id) {
                    (QoS::AtMostOnce, None) => {}
                    (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(packet_id)) => body.put_u16(packet_id.get()),
                    _ => {
                        return Err(EncodeError::Invalid {
                            packet: packet_type,
                            rule: "a packet identifier is needed exactly when QoS is above 0",
                        })
                    }
                }
                put_properties(&mut body, version, &publish.properties, PropertyContext::Publish)?;
                payload = &publish.payload;
            }
            Packet::PubAck(response)
            | Packet::PubRec(response)
            | Packet::PubRel(response)
            | Packet::PubComp(response) => {
                let context = match packet_type {
                    PacketType::PubAck => PropertyContext::PubAck,
                    PacketType::PubRec => PropertyContext::PubRec,
                    PacketType::PubRel => PropertyContext::PubRel,
                    _ => PropertyContext::PubComp,
                };
                body.put_u16(response.packet_id.get());
                put_reason_and_properties(
                    &mut body,
                    version,
                    response.reason_code,
                    &response.properties,
                    context,
                )?;
            }
            Packet::Subscribe(subscribe) => {
                if subscribe.subscriptions.is_empty() {
                    return Err(EncodeError::Invalid { packet: packet_type, rule: "no subscriptions" });
                }
                body.put_u16(subscribe.packet_id.get());
                put_properties(&mut body, version, &subscribe.properties, PropertyContext::Subscribe)?;
                for subscription in &subscribe.subscriptions {
                    put_string(&mut body, "topic filter", &subscription.filter)?;
                    let options = match version {
                        ProtocolVersion::V311 => subscription.options.qos as u8,
                        ProtocolVersion::V5 => subscription.options.to_byte(),
                    };
                    body.put_u8(options);
                }
            }
            Packet::SubAck(suback) => {
                body.put_u16(suback.packet_id.get());
                put_properties(&mut body, version, &suback.properties, PropertyContext::SubAck)?;
                for &code in &suback.reason_codes {
                    let byte = match (version, code) {
                        (ProtocolVersion::V5, _) => code as u8,
                        (ProtocolVersion::V311, ReasonCode::Success) => 0,
                        (ProtocolVersion::V311, ReasonCode::GrantedQos1) => 1,
                        (ProtocolVersion::V311, ReasonCode::GrantedQos2) => 2,
                        (ProtocolVersion::V311, _) => 0x80,
                    };
                    body.put_u8(byte);
                }
            }
            Packet::Unsubscribe(unsubscribe) => {
                if unsubscribe.filters.is_empty() {
                    return Err(EncodeError::Invalid { packet: packet_type, rule: "no topic filters" });
                }
                body.put_u16(unsubscribe.packet_id.get());
                put_properties(&mut body, version, &unsubscribe.properties, PropertyContext::Unsubscribe)?;
                for filter in &unsubscribe.filters {
                    put_string(&mut body, "topic filter", filter)?;
                }
            }
            Packet::UnsubAck(unsuback) => {
                body.put_u16(unsuback.packet_id.get());
                if version == ProtocolVersion::V5 {
                    put_properties(&mut body, version, &unsuback.properties, PropertyContext::UnsubAck)?;
                    for &code in &unsuback.reason_codes {
                        body.put_u8(code as u8);
                    }
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(disconnect) => put_reason_and_properties(
                &mut body,
                version,
                disconnect.reason_code,
                &disconnect.properties,
                PropertyContext::Disconnect,
            )?,
            Packet::Auth(auth) => {
                if version == ProtocolVersion::V311 {
                    return Err(EncodeError::NotInV311 { packet: packet_type });
                }
                put_reason_and_properties(
                    &mut body,
                    version,
                    auth.reason_code,
                    &auth.properties,
                    PropertyContext::Auth,
                )?
            }
        }
        let remaining_bytes = body.len().saturating_add(payload.len());
        let remaining = u32::try_from(remaining_bytes)
            .ok()
            .filter(|&len| len <= VARINT_MAX)
            .ok_or(EncodeError::TooLong { what: "packet", len: remaining_bytes, max: VARINT_MAX as usize })?;
        out.reserve(1 + varint_len(remaining) + remaining_bytes);
        out.put_u8((packet_type as u8) << 4 | flags);
        put_varint(out, remaining);
        out.extend_from_slice(&body);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The packet's bytes as a new buffer; see [`Packet::encode`].
    pub fn to_bytes(&self, version: ProtocolVersion) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(version, &mut out)?;
        Ok(out.freeze())
    }
}

fn encode_connect(connect: &Connect, body: &mut BytesMut) -> Result<(), EncodeError> {
    let version = connect.protocol_version;
    if version == ProtocolVersion::V311 && connect.password.is_some() && connect.username.is_none() {
        return Err(EncodeError::Invalid {
            packet: PacketType::Connect,
            rule: "a 3.1.1 password needs a user name (MQTT-3.1.2-22)",
        });
    }
    put_string(body, "protocol name", "MQTT")?;
    body.put_u8(version as u8);
    let mut flags = u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= 0x04 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
    }
    flags |= u8::from(connect.password.is_some()) << 6 | u8::from(connect.username.is_some()) << 7;
    body.put_u8(flags);
    body.put_u16(connect.keep_alive_secs);
    put_properties(body, version, &connect.properties, PropertyContext::Connect)?;
    put_string(body, "client identifier", &connect.client_id)?;
    if let Some(will) = &connect.will {
        put_properties(body, version, &will.properties, PropertyContext::Will)?;
        put_string(body, "will topic", &will.topic)?;
        put_binary(body, "will payload", &will.payload)?;
    }
    if let Some(username) = &connect.username {
        put_string(body, "user name", username)?;
    }
    if let Some(password) = &connect.password {
        put_binary(body, "password", password)?;
    }
    Ok(())
}
