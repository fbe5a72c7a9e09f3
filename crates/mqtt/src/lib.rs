//! A pure MQTT 3.1.1 and 5.0 codec with topic helpers, for the gateway's MQTT listener: bytes
//! in, typed packets out, typed packets in, bytes out. No I/O, no async, no session state.
//!
//! # Reading a connection
//!
//! 1. [`check`] looks at the buffered bytes without allocating: `Ok(None)` means read more,
//!    `Ok(Some(n))` means the first `n` bytes are one whole packet, an error means close the
//!    connection. A packet over the size limit is refused from its fixed header alone, before
//!    its body arrives.
//! 2. [`decode`] turns those `n` bytes (split off as [`bytes::Bytes`]) into a [`Packet`]. The
//!    first packet must be a CONNECT ([`decode_connect`] refuses anything else); it carries its
//!    protocol level, and every later packet is decoded with that [`ProtocolVersion`].
//!    Strings, binary fields and payloads are zero-copy slices of the frame.
//! 3. On error, [`DecodeError::reason_code`] gives the MQTT 5 reason code for the DISCONNECT
//!    (or CONNACK), e.g. Malformed Packet (0x81) versus Protocol Error (0x82); an MQTT 3.1.1
//!    connection is closed, except that a refused CONNECT gets its 3.1.1 return code through
//!    [`ConnectReturnCode::closest`] ([`connect_protocol_version`] tells which version a CONNECT
//!    that failed to decode was speaking). Each error names the rule broken, with the spec's
//!    normative statement number (`MQTT-3.1.2-3`) where it has one.
//!
//! [`Packet::encode`] writes any packet for either version, in one canonical form: properties in
//! ascending identifier order, repeatable ones in their given order, and a reason code or
//! property length left out where the spec allows. Clients' bytes may differ (mosquitto and
//! MQTT.js order properties their own way) and decode to the same packet. [`topic`] validates
//! topic names and filters, matches names against filters without allocating, and splits
//! shared subscriptions.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use tidewater_mqtt::{check, decode, decode_connect, Limits, Packet, ProtocolVersion};
//!
//! let limits = Limits::default();
//! // What a 3.1.1 client sent: CONNECT (client id "a"), then a QoS 0 PUBLISH of "hi" to "a/b".
//! let connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a";
//! let mut buffer = BytesMut::from(&connect[..]);
//! buffer.extend_from_slice(b"\x30\x07\x00\x03a/bhi");
//! let Ok(Some(len)) = check(&buffer, limits.max_packet_bytes) else { panic!("need more") };
//! let connect = decode_connect(buffer.split_to(len).freeze(), &limits)?;
//! let version = connect.protocol_version;
//! assert_eq!(version, ProtocolVersion::V311);
//!
//! let Ok(Some(len)) = check(&buffer, limits.max_packet_bytes) else { panic!("need more") };
//! let Packet::Publish(publish) = decode(buffer.split_to(len).freeze(), version, &limits)? else {
//!     panic!("not a PUBLISH")
//! };
//! assert_eq!((publish.topic.as_str(), publish.payload.as_ref()), ("a/b", &b"hi"[..]));
//! assert!(tidewater_mqtt::topic::matches(&publish.topic, "a/+"));
//! assert_eq!(check(&buffer, limits.max_packet_bytes), Ok(None));
//!
//! // And back: the same PUBLISH for a 5.0 connection carries an (empty) property block.
//! let bytes: Bytes = Packet::Publish(publish).to_bytes(ProtocolVersion::V5)?;
//! assert_eq!(bytes.as_ref(), b"\x30\x08\x00\x03a/b\x00hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Limits
//!
//! Everything a peer can make the decoder hold is bounded by [`Limits`], checked before the
//! memory is taken: the whole packet ([`DEFAULT_MAX_PACKET_BYTES`], 1 MiB, refused by [`check`]
//! from the header), properties per block ([`DEFAULT_MAX_PROPERTIES`]), user properties per
//! block ([`DEFAULT_MAX_USER_PROPERTIES`]), topic filters per SUBSCRIBE or UNSUBSCRIBE
//! ([`DEFAULT_MAX_SUBSCRIPTIONS_PER_PACKET`]) and topic length ([`topic::TOPIC_BYTES_MAX`],
//! 65,535 by spec). Decoding allocates only `Vec`s of those bounded entries; it never sizes an
//! allocation from a length read off the wire.
//!
//! # What it does not do
//!
//! - Session rules that need state: a second CONNECT (MQTT-3.1.0-2), topic alias
//!   ranges and mapping, packet identifiers in flight, Receive Maximum, keep-alive timing, the
//!   enhanced authentication exchange, and whether a packet may travel in the direction it came
//!   (a client sending CONNACK, or a Subscription Identifier in a client's PUBLISH,
//!   MQTT-3.3.4-6) are the gateway's. The decoder is direction-agnostic so that it also serves
//!   tests and a future client.
//! - MQTT 3.1 (protocol level 3, "MQIsdp"): refused as an unsupported protocol version.
//! - Payload checks: a Payload Format Indicator of 1 does not make the decoder validate UTF-8
//!   (the gateway may, and answer Payload format invalid).
//! - "SHOULD NOT" string rules (control characters, non-characters) are not enforced.
//! - Encoding trusts its input beyond what the wire cannot represent: it refuses strings over
//!   65,535 bytes, packets over 268,435,455 bytes, a property in a packet that does not allow
//!   it and a PUBLISH whose QoS and packet identifier disagree, but does not re-validate topics.

pub mod error;
pub mod frame;
pub mod limits;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod string;
pub mod topic;
mod wire;

pub use error::{DecodeError, EncodeError, ErrorClass};
pub use frame::check;
pub use limits::{
    Limits, DEFAULT_MAX_PACKET_BYTES, DEFAULT_MAX_PROPERTIES, DEFAULT_MAX_SUBSCRIPTIONS_PER_PACKET,
    DEFAULT_MAX_USER_PROPERTIES,
};
pub use packet::{
    connect_protocol_version, decode, decode_connect, reason_code_allowed, Auth, ConnAck, Connect,
    Disconnect, Packet, PacketId, PacketType, ProtocolVersion, PubResponse, Publish, QoS, RetainHandling,
    SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
pub use properties::{Properties, PropertyContext, PropertyId, PropertyType};
pub use reason::{ConnectReturnCode, ReasonCode};
pub use string::Utf8Bytes;
