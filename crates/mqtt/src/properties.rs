//! MQTT 5 properties (spec 2.2.2): every property identifier with its data type, the packets
//! each may appear in, and [`Properties`], a block decoded into typed optional fields. Decoding
//! rejects an unknown identifier or one not allowed in the packet as a Malformed Packet, a
//! second copy of a non-repeatable property as a Protocol Error (spec 2.2.2.2), and values the
//! spec forbids (a Receive Maximum of 0, a boolean of 2). Encoding writes properties in
//! ascending identifier order, repeatable ones in the order given, which is also what paho does.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::frame::{put_varint, varint_len, VARINT_MAX};
use crate::limits::Limits;
use crate::packet::QoS;
use crate::string::Utf8Bytes;
use crate::wire::{put_binary, put_string, Reader};

/// The data type of a property's value (spec 1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyType {
    Byte,
    TwoByteInteger,
    FourByteInteger,
    VariableByteInteger,
    Utf8String,
    BinaryData,
    Utf8StringPair,
}

/// Where a property block sits: a packet type, or the will properties inside a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl std::fmt::Display for PropertyContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::Will => "CONNECT will properties",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        };
        formatter.write_str(name)
    }
}

macro_rules! contexts {
    ($($context:ident),*) => { 0 $(| PropertyContext::$context.bit())* };
}

const ALL_CONTEXTS: u16 = contexts!(
    Connect,
    ConnAck,
    Publish,
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth
);

macro_rules! property_ids {
    ($($name:ident = $value:literal, $text:literal, $kind:ident, $allowed:expr;)*) => {
        /// A property identifier (spec 2.2.2.2, table of properties).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum PropertyId {
            $(#[doc = $text] $name = $value,)*
        }

        impl PropertyId {
            /// Every property, in ascending identifier order.
            pub const ALL: &'static [PropertyId] = &[$(PropertyId::$name,)*];

            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// The spec's name for the property.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                }
            }

            pub fn value_type(self) -> PropertyType {
                match self {
                    $(Self::$name => PropertyType::$kind,)*
                }
            }

            fn allowed_mask(self) -> u16 {
                match self {
                    $(Self::$name => $allowed,)*
                }
            }
        }
    };
}

property_ids! {
    PayloadFormatIndicator = 0x01, "Payload Format Indicator", Byte, contexts!(Publish, Will);
    MessageExpiryInterval = 0x02, "Message Expiry Interval", FourByteInteger, contexts!(Publish, Will);
    ContentType = 0x03, "Content Type", Utf8String, contexts!(Publish, Will);
    ResponseTopic = 0x08, "Response Topic", Utf8String, contexts!(Publish, Will);
    CorrelationData = 0x09, "Correlation Data", BinaryData, contexts!(Publish, Will);
    SubscriptionIdentifier = 0x0b, "Subscription Identifier", VariableByteInteger,
        contexts!(Publish, Subscribe);
    SessionExpiryInterval = 0x11, "Session Expiry Interval", FourByteInteger,
        contexts!(Connect, ConnAck, Disconnect);
    AssignedClientIdentifier = 0x12, "Assigned Client Identifier", Utf8String, contexts!(ConnAck);
    ServerKeepAlive = 0x13, "Server Keep Alive", TwoByteInteger, contexts!(ConnAck);
    AuthenticationMethod = 0x15, "Authentication Method", Utf8String, contexts!(Connect, ConnAck, Auth);
    AuthenticationData = 0x16, "Authentication Data", BinaryData, contexts!(Connect, ConnAck, Auth);
    RequestProblemInformation = 0x17, "Request Problem Information", Byte, contexts!(Connect);
    WillDelayInterval = 0x18, "Will Delay Interval", FourByteInteger, contexts!(Will);
    RequestResponseInformation = 0x19, "Request Response Information", Byte, contexts!(Connect);
    ResponseInformation = 0x1a, "Response Information", Utf8String, contexts!(ConnAck);
    ServerReference = 0x1c, "Server Reference", Utf8String, contexts!(ConnAck, Disconnect);
    ReasonString = 0x1f, "Reason String", Utf8String,
        contexts!(ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth);
    ReceiveMaximum = 0x21, "Receive Maximum", TwoByteInteger, contexts!(Connect, ConnAck);
    TopicAliasMaximum = 0x22, "Topic Alias Maximum", TwoByteInteger, contexts!(Connect, ConnAck);
    TopicAlias = 0x23, "Topic Alias", TwoByteInteger, contexts!(Publish);
    MaximumQos = 0x24, "Maximum QoS", Byte, contexts!(ConnAck);
    RetainAvailable = 0x25, "Retain Available", Byte, contexts!(ConnAck);
    UserProperty = 0x26, "User Property", Utf8StringPair, ALL_CONTEXTS;
    MaximumPacketSize = 0x27, "Maximum Packet Size", FourByteInteger, contexts!(Connect, ConnAck);
    WildcardSubscriptionAvailable = 0x28, "Wildcard Subscription Available", Byte, contexts!(ConnAck);
    SubscriptionIdentifierAvailable = 0x29, "Subscription Identifier Available", Byte, contexts!(ConnAck);
    SharedSubscriptionAvailable = 0x2a, "Shared Subscription Available", Byte, contexts!(ConnAck);
}

impl PropertyId {
    /// Whether the property may appear in a block of `context` (spec 2.2.2.2).
    pub fn allowed_in(self, context: PropertyContext) -> bool {
        self.allowed_mask() & context.bit() != 0
    }

    /// Whether the property may appear more than once there: user properties anywhere,
    /// subscription identifiers in a PUBLISH (one per matching subscription, spec 3.3.2.3.8).
    pub fn repeatable_in(self, context: PropertyContext) -> bool {
        match self {
            Self::UserProperty => true,
            Self::SubscriptionIdentifier => context == PropertyContext::Publish,
            _ => false,
        }
    }
}

impl std::fmt::Display for PropertyId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} ({:#04x})", self.name(), *self as u8)
    }
}

/// A property block with one typed field per property; `None` (or empty) when absent.
/// Which fields may be set depends on the packet, see [`PropertyId::allowed_in`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// `true`: the payload is UTF-8 (value 1); `false`: unspecified bytes (value 0).
    pub payload_format_indicator: Option<bool>,
    pub message_expiry_interval_secs: Option<u32>,
    pub content_type: Option<Utf8Bytes>,
    pub response_topic: Option<Utf8Bytes>,
    pub correlation_data: Option<Bytes>,
    /// In wire order; at most one in a SUBSCRIBE. Each is 1 to 268,435,455.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval_secs: Option<u32>,
    pub assigned_client_identifier: Option<Utf8Bytes>,
    pub server_keep_alive_secs: Option<u16>,
    pub authentication_method: Option<Utf8Bytes>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<bool>,
    pub will_delay_interval_secs: Option<u32>,
    pub request_response_information: Option<bool>,
    pub response_information: Option<Utf8Bytes>,
    pub server_reference: Option<Utf8Bytes>,
    pub reason_string: Option<Utf8Bytes>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    /// Only QoS 0 or 1 (spec 3.2.2.3.4).
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    /// Name and value pairs in wire order; a name may repeat.
    pub user_properties: Vec<(Utf8Bytes, Utf8Bytes)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
}

fn set_once<T>(slot: &mut Option<T>, value: T) {
    // Duplicates were rejected before the value was read, so the slot is empty here.
    debug_assert!(slot.is_none());
    *slot = Some(value);
}

fn boolean(property: PropertyId, value: u8) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue { property, value: u32::from(value) }),
    }
}

fn non_zero_u16(property: PropertyId, value: u16) -> Result<u16, DecodeError> {
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue { property, value: 0 });
    }
    Ok(value)
}

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads a property block (its Variable Byte Integer length and the properties) for a
    /// packet of `context`.
    pub(crate) fn decode(
        reader: &mut Reader<'_>,
        context: PropertyContext,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        use PropertyId as Id;
        let len = reader.varint("property length")?;
        let mut block = reader.split(len as usize, "properties")?;
        let mut properties = Properties::default();
        let mut seen: u64 = 0;
        let mut n_properties = 0usize;
        while !block.is_empty() {
            n_properties += 1;
            if n_properties > limits.max_properties {
                return Err(DecodeError::TooManyProperties { context, limit: limits.max_properties });
            }
            let offset = block.offset();
            let id = block.varint("property identifier")?;
            let property = Id::from_u32(id).ok_or(DecodeError::UnknownProperty { id, offset })?;
            if !property.allowed_in(context) {
                return Err(DecodeError::PropertyNotAllowed { property, context });
            }
            let bit = 1u64 << (property as u8);
            if seen & bit != 0 && !property.repeatable_in(context) {
                return Err(DecodeError::DuplicateProperty { property, context });
            }
            seen |= bit;
            let what = property.name();
            match property {
                Id::PayloadFormatIndicator => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.payload_format_indicator, value);
                }
                Id::MessageExpiryInterval => {
                    set_once(&mut properties.message_expiry_interval_secs, block.u32(what)?)
                }
                Id::ContentType => set_once(&mut properties.content_type, block.string(what)?),
                Id::ResponseTopic => {
                    let offset = block.offset();
                    let topic = block.string(what)?;
                    // A Response Topic is a topic name (spec 3.3.2.3.5).
                    crate::topic::validate_topic_name(&topic, limits.max_topic_bytes)
                        .map_err(|error| DecodeError::InvalidTopicName { offset, error })?;
                    set_once(&mut properties.response_topic, topic);
                }
                Id::CorrelationData => set_once(&mut properties.correlation_data, block.binary(what)?),
                Id::SubscriptionIdentifier => {
                    let value = block.varint(what)?;
                    if value == 0 {
                        return Err(DecodeError::InvalidPropertyValue { property, value });
                    }
                    // Bounded by max_properties, checked above.
                    properties.subscription_identifiers.push(value);
                }
                Id::SessionExpiryInterval => {
                    set_once(&mut properties.session_expiry_interval_secs, block.u32(what)?)
                }
                Id::AssignedClientIdentifier => {
                    set_once(&mut properties.assigned_client_identifier, block.string(what)?)
                }
                Id::ServerKeepAlive => set_once(&mut properties.server_keep_alive_secs, block.u16(what)?),
                Id::AuthenticationMethod => {
                    set_once(&mut properties.authentication_method, block.string(what)?)
                }
                Id::AuthenticationData => set_once(&mut properties.authentication_data, block.binary(what)?),
                Id::RequestProblemInformation => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.request_problem_information, value);
                }
                Id::WillDelayInterval => set_once(&mut properties.will_delay_interval_secs, block.u32(what)?),
                Id::RequestResponseInformation => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.request_response_information, value);
                }
                Id::ResponseInformation => {
                    set_once(&mut properties.response_information, block.string(what)?)
                }
                Id::ServerReference => set_once(&mut properties.server_reference, block.string(what)?),
                Id::ReasonString => set_once(&mut properties.reason_string, block.string(what)?),
                Id::ReceiveMaximum => {
                    let value = non_zero_u16(property, block.u16(what)?)?;
                    set_once(&mut properties.receive_maximum, value);
                }
                Id::TopicAliasMaximum => set_once(&mut properties.topic_alias_maximum, block.u16(what)?),
                Id::TopicAlias => {
                    let value = non_zero_u16(property, block.u16(what)?)?;
                    set_once(&mut properties.topic_alias, value);
                }
                Id::MaximumQos => {
                    let value = match block.u8(what)? {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        other => {
                            return Err(DecodeError::InvalidPropertyValue {
                                property,
                                value: u32::from(other),
                            })
                        }
                    };
                    set_once(&mut properties.maximum_qos, value);
                }
                Id::RetainAvailable => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.retain_available, value);
                }
                Id::UserProperty => {
                    if properties.user_properties.len() >= limits.max_user_properties {
                        return Err(DecodeError::TooManyUserProperties {
                            context,
                            limit: limits.max_user_properties,
                        });
                    }
                    let name = block.string("User Property name")?;
                    let value = block.string("User Property value")?;
                    properties.user_properties.push((name, value));
                }
                Id::MaximumPacketSize => {
                    let value = block.u32(what)?;
                    if value == 0 {
                        return Err(DecodeError::InvalidPropertyValue { property, value });
                    }
                    set_once(&mut properties.maximum_packet_size, value);
                }
                Id::WildcardSubscriptionAvailable => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.wildcard_subscription_available, value);
                }
                Id::SubscriptionIdentifierAvailable => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.subscription_identifiers_available, value);
                }
                Id::SharedSubscriptionAvailable => {
                    let value = boolean(property, block.u8(what)?)?;
                    set_once(&mut properties.shared_subscription_available, value);
                }
            }
        }
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::Protocol {
                what: "properties",
                rule: "Authentication Data without an Authentication Method (spec 3.1.2.11.10)",
            });
        }
        Ok(properties)
    }

    /// Writes the block: its length, then every property set, in ascending identifier order.
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let mut body = BytesMut::new();
        self.encode_body(&mut body)?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len <= VARINT_MAX)
            .ok_or(EncodeError::TooLong { what: "properties", len: body.len(), max: VARINT_MAX as usize })?;
        out.reserve(varint_len(len) + body.len());
        put_varint(out, len);
        out.extend_from_slice(&body);
        Ok(())
    }

    fn encode_body(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        use PropertyId as Id;
        fn byte(out: &mut BytesMut, id: PropertyId, value: Option<u8>) {
            if let Some(value) = value {
                out.put_u8(id as u8);
                out.put_u8(value);
            }
        }
        fn two(out: &mut BytesMut, id: PropertyId, value: Option<u16>) {
            if let Some(value) = value {
                out.put_u8(id as u8);
                out.put_u16(value);
            }
        }
        fn four(out: &mut BytesMut, id: PropertyId, value: Option<u32>) {
            if let Some(value) = value {
                out.put_u8(id as u8);
                out.put_u32(value);
            }
        }
        fn string(out: &mut BytesMut, id: PropertyId, value: &Option<Utf8Bytes>) -> Result<(), EncodeError> {
            if let Some(value) = value {
                out.put_u8(id as u8);
                put_string(out, id.name(), value)?;
            }
            Ok(())
        }
        fn binary(out: &mut BytesMut, id: PropertyId, value: &Option<Bytes>) -> Result<(), EncodeError> {
            if let Some(value) = value {
                out.put_u8(id as u8);
                put_binary(out, id.name(), value)?;
            }
            Ok(())
        }
        let flag = |value: Option<bool>| value.map(u8::from);

        byte(out, Id::PayloadFormatIndicator, flag(self.payload_format_indicator));
        four(out, Id::MessageExpiryInterval, self.message_expiry_interval_secs);
        string(out, Id::ContentType, &self.content_type)?;
        string(out, Id::ResponseTopic, &self.response_topic)?;
        binary(out, Id::CorrelationData, &self.correlation_data)?;
        for &identifier in &self.subscription_identifiers {
            if identifier == 0 || identifier > VARINT_MAX {
                return Err(EncodeError::TooLong {
                    what: "Subscription Identifier",
                    len: identifier as usize,
                    max: VARINT_MAX as usize,
                });
            }
            out.put_u8(Id::SubscriptionIdentifier as u8);
            put_varint(out, identifier);
        }
        four(out, Id::SessionExpiryInterval, self.session_expiry_interval_secs);
        string(out, Id::AssignedClientIdentifier, &self.assigned_client_identifier)?;
        two(out, Id::ServerKeepAlive, self.server_keep_alive_secs);
        string(out, Id::AuthenticationMethod, &self.authentication_method)?;
        binary(out, Id::AuthenticationData, &self.authentication_data)?;
        byte(out, Id::RequestProblemInformation, flag(self.request_problem_information));
        four(out, Id::WillDelayInterval, self.will_delay_interval_secs);
        byte(out, Id::RequestResponseInformation, flag(self.request_response_information));
        string(out, Id::ResponseInformation, &self.response_information)?;
        string(out, Id::ServerReference, &self.server_reference)?;
        string(out, Id::ReasonString, &self.reason_string)?;
        two(out, Id::ReceiveMaximum, self.receive_maximum);
        two(out, Id::TopicAliasMaximum, self.topic_alias_maximum);
        two(out, Id::TopicAlias, self.topic_alias);
        byte(out, Id::MaximumQos, self.maximum_qos.map(|qos| qos as u8));
        byte(out, Id::RetainAvailable, flag(self.retain_available));
        for (name, value) in &self.user_properties {
            out.put_u8(Id::UserProperty as u8);
            put_string(out, "User Property name", name)?;
            put_string(out, "User Property value", value)?;
        }
        four(out, Id::MaximumPacketSize, self.maximum_packet_size);
        byte(out, Id::WildcardSubscriptionAvailable, flag(self.wildcard_subscription_available));
        byte(out, Id::SubscriptionIdentifierAvailable, flag(self.subscription_identifiers_available));
        byte(out, Id::SharedSubscriptionAvailable, flag(self.shared_subscription_available));
        Ok(())
    }

    /// The properties set, by identifier (once per property, repeatable ones included once),
    /// for checking a block against a context before encoding it.
    pub fn present(&self) -> impl Iterator<Item = PropertyId> + '_ {
        PropertyId::ALL.iter().copied().filter(move |&id| self.has(id))
    }

    fn has(&self, id: PropertyId) -> bool {
        use PropertyId as Id;
        match id {
            Id::PayloadFormatIndicator => self.payload_format_indicator.is_some(),
            Id::MessageExpiryInterval => self.message_expiry_interval_secs.is_some(),
            Id::ContentType => self.content_type.is_some(),
            Id::ResponseTopic => self.response_topic.is_some(),
            Id::CorrelationData => self.correlation_data.is_some(),
            Id::SubscriptionIdentifier => !self.subscription_identifiers.is_empty(),
            Id::SessionExpiryInterval => self.session_expiry_interval_secs.is_some(),
            Id::AssignedClientIdentifier => self.assigned_client_identifier.is_some(),
            Id::ServerKeepAlive => self.server_keep_alive_secs.is_some(),
            Id::AuthenticationMethod => self.authentication_method.is_some(),
            Id::AuthenticationData => self.authentication_data.is_some(),
            Id::RequestProblemInformation => self.request_problem_information.is_some(),
            Id::WillDelayInterval => self.will_delay_interval_secs.is_some(),
            Id::RequestResponseInformation => self.request_response_information.is_some(),
            Id::ResponseInformation => self.response_information.is_some(),
            Id::ServerReference => self.server_reference.is_some(),
            Id::ReasonString => self.reason_string.is_some(),
            Id::ReceiveMaximum => self.receive_maximum.is_some(),
            Id::TopicAliasMaximum => self.topic_alias_maximum.is_some(),
            Id::TopicAlias => self.topic_alias.is_some(),
            Id::MaximumQos => self.maximum_qos.is_some(),
            Id::RetainAvailable => self.retain_available.is_some(),
            Id::UserProperty => !self.user_properties.is_empty(),
            Id::MaximumPacketSize => self.maximum_packet_size.is_some(),
            Id::WildcardSubscriptionAvailable => self.wildcard_subscription_available.is_some(),
            Id::SubscriptionIdentifierAvailable => self.subscription_identifiers_available.is_some(),
            Id::SharedSubscriptionAvailable => self.shared_subscription_available.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of spec 2.2.2.2 read the other way round: each packet's own section lists the
    /// properties it may carry (3.1.2.11, 3.1.3.2, 3.2.2.3, ...). Both views must agree.
    #[test]
    fn allowed_properties_match_each_packets_section_of_the_spec() {
        use PropertyContext as C;
        let sections: &[(PropertyContext, &[u8])] = &[
            (C::Connect, &[0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16]),
            (C::Will, &[0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26]),
            (
                C::ConnAck,
                &[
                    0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1f, 0x26, 0x28, 0x29, 0x2a, 0x13, 0x1a, 0x1c,
                    0x15, 0x16,
                ],
            ),
            (C::Publish, &[0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0b, 0x03]),
            (C::PubAck, &[0x1f, 0x26]),
            (C::PubRec, &[0x1f, 0x26]),
            (C::PubRel, &[0x1f, 0x26]),
            (C::PubComp, &[0x1f, 0x26]),
            (C::Subscribe, &[0x0b, 0x26]),
            (C::SubAck, &[0x1f, 0x26]),
            (C::Unsubscribe, &[0x26]),
            (C::UnsubAck, &[0x1f, 0x26]),
            (C::Disconnect, &[0x11, 0x1f, 0x26, 0x1c]),
            (C::Auth, &[0x15, 0x16, 0x1f, 0x26]),
        ];
        for &(context, listed) in sections {
            let mut listed = listed.to_vec();
            listed.sort_unstable();
            let allowed: Vec<u8> =
                PropertyId::ALL.iter().filter(|id| id.allowed_in(context)).map(|&id| id as u8).collect();
            assert_eq!(allowed, listed, "{context}");
        }
    }

    #[test]
    fn every_identifier_has_its_spec_data_type() {
        use PropertyType as T;
        let table: &[(u8, PropertyType)] = &[
            (0x01, T::Byte),
            (0x02, T::FourByteInteger),
            (0x03, T::Utf8String),
            (0x08, T::Utf8String),
            (0x09, T::BinaryData),
            (0x0b, T::VariableByteInteger),
            (0x11, T::FourByteInteger),
            (0x12, T::Utf8String),
            (0x13, T::TwoByteInteger),
            (0x15, T::Utf8String),
            (0x16, T::BinaryData),
            (0x17, T::Byte),
            (0x18, T::FourByteInteger),
            (0x19, T::Byte),
            (0x1a, T::Utf8String),
            (0x1c, T::Utf8String),
            (0x1f, T::Utf8String),
            (0x21, T::TwoByteInteger),
            (0x22, T::TwoByteInteger),
            (0x23, T::TwoByteInteger),
            (0x24, T::Byte),
            (0x25, T::Byte),
            (0x26, T::Utf8StringPair),
            (0x27, T::FourByteInteger),
            (0x28, T::Byte),
            (0x29, T::Byte),
            (0x2a, T::Byte),
        ];
        assert_eq!(PropertyId::ALL.len(), table.len());
        for &(id, value_type) in table {
            let property = PropertyId::from_u32(u32::from(id));
            assert_eq!(property.map(PropertyId::value_type), Some(value_type), "{id:#04x}");
        }
        assert_eq!(PropertyId::from_u32(0x04), None);
    }
}
