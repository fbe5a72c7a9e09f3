//! The codec's errors. [`DecodeError`] names the rule a packet broke (with the spec's normative
//! statement number where there is one) and where in the packet; [`DecodeError::class`] sorts
//! it into what the gateway answers: Malformed Packet (0x81), Protocol Error (0x82), Packet too
//! large (0x95), or a CONNECT refusal, with [`DecodeError::reason_code`] giving the code to put
//! in the CONNACK or DISCONNECT (an MQTT 3.1.1 connection is simply closed, except for the
//! CONNECT refusals that have a 3.1.1 return code).
//!
//! Normative statement numbers are MQTT 5.0's unless an error says otherwise; most rules carry
//! over from 3.1.1, sometimes under another number.

use crate::packet::PacketType;
use crate::properties::{PropertyContext, PropertyId};
use crate::reason::ReasonCode;
use crate::topic::TopicError;

/// How the gateway must react to a [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The bytes cannot be parsed as the packet they claim to be (0x81).
    MalformedPacket,
    /// Parsed, but breaks a rule of the protocol (0x82).
    ProtocolError,
    /// Larger than the limit (0x95).
    PacketTooLarge,
    /// CONNECT with a protocol name or level we do not speak (0x84, 3.1.1 return code 1).
    UnsupportedProtocolVersion,
    /// CONNECT whose client identifier the server must refuse (0x85, 3.1.1 return code 2).
    ClientIdentifierNotValid,
    /// A PUBLISH topic name that is not a valid topic name (0x90).
    TopicNameInvalid,
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter that is not a valid filter (0x8F).
    TopicFilterInvalid,
    /// A PUBLISH with Topic Alias 0 (0x94, spec 3.3.2.3.4).
    TopicAliasInvalid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("remaining length at offset {offset} continues past 4 bytes (spec 1.5.5)")]
    RemainingLengthTooLong { offset: usize },
    #[error("variable byte integer ({what}) at offset {offset} continues past 4 bytes (spec 1.5.5)")]
    VarIntTooLong { what: &'static str, offset: usize },
    #[error("{what} at offset {offset} is not in the fewest bytes possible (MQTT-1.5.5-1)")]
    NonMinimalVarInt { what: &'static str, offset: usize },
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes")]
    PacketTooLarge { size: usize, limit: usize },
    #[error("frame of {have} bytes is not the one {need}-byte packet its fixed header announces")]
    FrameLength { need: usize, have: usize },
    #[error("packet type {packet_type} is reserved in this protocol version (spec 2.1.2)")]
    ReservedPacketType { packet_type: u8 },
    #[error("{packet} fixed header flags {flags:#06b} must be {expected:#06b} (MQTT-2.1.3-1)")]
    ReservedFlags { packet: PacketType, flags: u8, expected: u8 },
    #[error("{what} at offset {offset} needs {need} bytes, only {have} remain")]
    Truncated { what: &'static str, offset: usize, need: usize, have: usize },
    #[error("{extra} bytes after the end of the {packet} at offset {offset}")]
    TrailingBytes { packet: PacketType, offset: usize, extra: usize },
    #[error("{what} at offset {offset} is not well-formed UTF-8 (MQTT-1.5.4-1)")]
    InvalidUtf8 { what: &'static str, offset: usize },
    #[error("{what} at offset {offset} contains U+0000 (MQTT-1.5.4-2)")]
    NullCharacter { what: &'static str, offset: usize },
    #[error("{what} is QoS 3, which does not exist (MQTT-3.3.1-4)")]
    InvalidQos { what: &'static str },
    #[error("QoS 0 PUBLISH has the DUP flag set (MQTT-3.3.1-2)")]
    DupWithQos0,
    #[error("{packet} has packet identifier 0; it must be non-zero (MQTT-2.2.1-3)")]
    ZeroPacketId { packet: PacketType },
    #[error("CONNECT protocol name is {found:?}, not \"MQTT\" (MQTT-3.1.2-1)")]
    ProtocolName { found: String },
    #[error("CONNECT protocol level {level} is neither 4 (3.1.1) nor 5 (5.0) (MQTT-3.1.2-2)")]
    UnsupportedProtocolLevel { level: u8 },
    #[error("CONNECT reserved flag bit 0 is set (MQTT-3.1.2-3)")]
    ConnectReservedFlag,
    #[error("CONNECT will flags: {rule}")]
    WillFlags { rule: &'static str },
    #[error("CONNECT password flag is set without the user name flag (MQTT-3.1.2-22)")]
    PasswordWithoutUsername,
    #[error("CONNECT has an empty client identifier and clean session 0 (MQTT-3.1.3-8)")]
    EmptyClientIdWithoutCleanSession,
    #[error("topic name at offset {offset}: {error}")]
    InvalidTopicName { offset: usize, error: TopicError },
    #[error("topic filter at offset {offset}: {error}")]
    InvalidTopicFilter { offset: usize, error: TopicError },
    #[error("PUBLISH has an empty topic name and no topic alias (spec 3.3.2.3.4)")]
    EmptyTopicWithoutAlias,
    #[error("{packet} has no entries; it needs at least one (MQTT-3.8.3-2, MQTT-3.10.3-2)")]
    NoEntries { packet: PacketType },
    #[error("subscription options {options:#04x} at offset {offset}: {rule}")]
    SubscriptionOptions { offset: usize, options: u8, rule: &'static str },
    #[error("unknown property identifier {id:#04x} at offset {offset} (spec 2.2.2.2)")]
    UnknownProperty { id: u32, offset: usize },
    #[error("{property} is not allowed in {context} (spec 2.2.2.2)")]
    PropertyNotAllowed { property: PropertyId, context: PropertyContext },
    #[error("{property} appears more than once in {context} (spec 2.2.2.2)")]
    DuplicateProperty { property: PropertyId, context: PropertyContext },
    #[error("{property} has the invalid value {value}")]
    InvalidPropertyValue { property: PropertyId, value: u32 },
    #[error("{context} has more than {limit} properties")]
    TooManyProperties { context: PropertyContext, limit: usize },
    #[error("{context} has more than {limit} user properties")]
    TooManyUserProperties { context: PropertyContext, limit: usize },
    #[error("{packet} has more than {limit} entries")]
    TooManyEntries { packet: PacketType, limit: usize },
    #[error("reason code {code:#04x} is not allowed in {packet}")]
    InvalidReasonCode { packet: PacketType, code: u8 },
    #[error("{packet} reserved bits {bits:#04x} are set")]
    ReservedBits { packet: PacketType, bits: u8 },
    #[error("{what}: {rule}")]
    Protocol { what: &'static str, rule: &'static str },
}

impl DecodeError {
    /// How the gateway must react; see [`ErrorClass`].
    pub fn class(&self) -> ErrorClass {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ErrorClass::PacketTooLarge,
            ProtocolName { .. } | UnsupportedProtocolLevel { .. } => ErrorClass::UnsupportedProtocolVersion,
            EmptyClientIdWithoutCleanSession => ErrorClass::ClientIdentifierNotValid,
            InvalidTopicName { .. } => ErrorClass::TopicNameInvalid,
            InvalidPropertyValue { property: PropertyId::TopicAlias, .. } => ErrorClass::TopicAliasInvalid,
            InvalidTopicFilter { .. } => ErrorClass::TopicFilterInvalid,
            DupWithQos0
            | EmptyTopicWithoutAlias
            | ZeroPacketId { .. }
            | PasswordWithoutUsername
            | NoEntries { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | Protocol { .. } => ErrorClass::ProtocolError,
            RemainingLengthTooLong { .. }
            | VarIntTooLong { .. }
            | NonMinimalVarInt { .. }
            | FrameLength { .. }
            | ReservedPacketType { .. }
            | ReservedFlags { .. }
            | Truncated { .. }
            | TrailingBytes { .. }
            | InvalidUtf8 { .. }
            | NullCharacter { .. }
            | InvalidQos { .. }
            | ConnectReservedFlag
            | WillFlags { .. }
            | SubscriptionOptions { .. }
            | UnknownProperty { .. }
            | PropertyNotAllowed { .. }
            | TooManyProperties { .. }
            | TooManyUserProperties { .. }
            | TooManyEntries { .. }
            | InvalidReasonCode { .. }
            | ReservedBits { .. } => ErrorClass::MalformedPacket,
        }
    }

    /// The MQTT 5 reason code for the CONNACK (when the packet was the CONNECT) or DISCONNECT
    /// the server sends before closing the connection.
    pub fn reason_code(&self) -> ReasonCode {
        match self.class() {
            ErrorClass::MalformedPacket => ReasonCode::MalformedPacket,
            ErrorClass::ProtocolError => ReasonCode::ProtocolError,
            ErrorClass::PacketTooLarge => ReasonCode::PacketTooLarge,
            ErrorClass::UnsupportedProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
            ErrorClass::ClientIdentifierNotValid => ReasonCode::ClientIdentifierNotValid,
            ErrorClass::TopicNameInvalid => ReasonCode::TopicNameInvalid,
            ErrorClass::TopicFilterInvalid => ReasonCode::TopicFilterInvalid,
            ErrorClass::TopicAliasInvalid => ReasonCode::TopicAliasInvalid,
        }
    }
}

/// Why a packet could not be encoded: a value the wire format cannot carry, or a packet whose
/// fields contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} of {len} bytes exceeds the {max}-byte maximum")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{packet} cannot be encoded: {rule}")]
    Invalid { packet: PacketType, rule: &'static str },
    #[error("{packet} does not exist in MQTT 3.1.1")]
    NotInV311 { packet: PacketType },
    #[error("{property} is not allowed in {context} (spec 2.2.2.2)")]
    PropertyNotAllowed { property: PropertyId, context: PropertyContext },
}
