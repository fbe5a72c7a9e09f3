//! Named limits on everything a packet can make the decoder hold. Each is checked before the
//! memory for it is taken: the packet size by [`crate::check`] from the fixed header alone, the
//! counts as entries are read (a `Vec` grows only to the limit), so a hostile peer costs at most
//! these bounds whatever it announces.

use crate::topic::TOPIC_BYTES_MAX;

/// Default largest packet (fixed header included) a connection may send. Devices send small
/// telemetry; 1 MiB leaves room for firmware chunks while bounding the buffer per connection.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Default most properties in one property block, user properties included.
pub const DEFAULT_MAX_PROPERTIES: usize = 64;
/// Default most user properties in one property block.
pub const DEFAULT_MAX_USER_PROPERTIES: usize = 32;
/// Default most topic filters in one SUBSCRIBE or UNSUBSCRIBE (and reason codes in their acks).
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_PACKET: usize = 64;

/// The limits one connection is decoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole packet, in bytes; see [`DEFAULT_MAX_PACKET_BYTES`].
    pub max_packet_bytes: usize,
    /// Most properties in one property block; see [`DEFAULT_MAX_PROPERTIES`].
    pub max_properties: usize,
    /// Most user properties in one property block; see [`DEFAULT_MAX_USER_PROPERTIES`].
    pub max_user_properties: usize,
    /// Longest topic name or filter, in bytes; at most [`TOPIC_BYTES_MAX`], the spec's bound.
    pub max_topic_bytes: usize,
    /// Most entries in a SUBSCRIBE, UNSUBSCRIBE, SUBACK or UNSUBACK; see
    /// [`DEFAULT_MAX_SUBSCRIPTIONS_PER_PACKET`].
    pub max_subscriptions_per_packet: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_properties: DEFAULT_MAX_PROPERTIES,
            max_user_properties: DEFAULT_MAX_USER_PROPERTIES,
            max_topic_bytes: TOPIC_BYTES_MAX,
            max_subscriptions_per_packet: DEFAULT_MAX_SUBSCRIPTIONS_PER_PACKET,
        }
    }
}
