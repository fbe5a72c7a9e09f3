//! A persistent MQTT session as it is kept in the cluster: one JSON record per client id in the
//! compacted sessions topic (`_tidewater_mqtt_sessions`), a tombstone when the session ends.
//! Pure: the record's shape, and which replayed messages a restored session still owes.
//!
//! The record stores no message. It stores, per partition of the pub/sub topic, the *position*
//! from which the session may still be owed something (the offset of its oldest queued or
//! unacknowledged message, or the offset the gateway had read to when it had none), and the
//! messages on the wire by their offset, with their packet ids and what they await. A gateway
//! that restores the session re-reads the pub/sub topic from those positions
//! ([`owed_messages`]): a record it finds among the in-flight ones goes out again under its packet
//! id with DUP set (or, awaiting PUBCOMP, only its PUBREL), one below the last in-flight offset
//! of its partition that is not in flight was acknowledged, and every later one matching the
//! subscriptions is queued, as it would have been had the gateway stayed up.
//!
//! Which record is newest across gateways is decided by `connected_at_ms` (the connection that
//! wrote it), so a gateway reading another's newer record knows its own connection was taken
//! over. Records it wrote itself carry its `gateway` instance id and are skipped by its reader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidewater_mqtt::topic::{matches, SHARED_PREFIX};
use tidewater_mqtt::{QoS, RetainHandling, SubscriptionOptions};

use crate::message::Message;
use crate::subscriptions::Subscribed;

/// A message's place in the pub/sub topic: partition and offset.
pub type Position = (i32, i64);

/// The record format's version, written in every record; a reader skips a newer one.
pub const RECORD_VERSION: u32 = 1;

/// What a gateway keeps of a persistent session in the sessions topic (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(default = "default_version")]
    pub version: u32,
    /// The gateway process that wrote it (a random id made at its start).
    pub gateway: String,
    /// When the connection that wrote it was accepted: the newest connection owns the session.
    pub connected_at_ms: i64,
    /// Whether a connection held it when the record was written. A gateway that stopped
    /// without writing again leaves it true; the session is then kept until its client returns
    /// (or a clean start replaces it), and its expiry counts from that next disconnect.
    #[serde(default)]
    pub connected: bool,
    /// The Session Expiry Interval in seconds; `None` for never (3.1.1 Clean Session 0).
    pub expiry_secs: Option<u64>,
    /// When the session ends if no client connects: set while no connection holds it.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// The MQTT protocol level of its last connection (4 or 5).
    pub protocol_level: u8,
    #[serde(default)]
    pub subscriptions: Vec<StoredSubscription>,
    /// Per pub/sub partition, the offset from which the session may be owed messages.
    #[serde(default)]
    pub positions: BTreeMap<i32, i64>,
    /// Per pub/sub partition, the offset of the last message sent to the client: one at or
    /// below it that is not in flight was acknowledged.
    #[serde(default)]
    pub sent: BTreeMap<i32, i64>,
    /// Messages sent and not yet acknowledged, in the order they were sent.
    #[serde(default)]
    pub in_flight: Vec<StoredInFlight>,
    /// QoS 2 packet ids received from the client and not yet released.
    #[serde(default)]
    pub inbound_qos2: Vec<u16>,
    #[serde(default)]
    pub next_packet_id: u16,
}

fn default_version() -> u32 {
    RECORD_VERSION
}

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    pub filter: String,
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
    #[serde(default)]
    pub retain_handling: u8,
    #[serde(default)]
    pub identifier: Option<u32>,
}

/// What an in-flight message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredAwaiting {
    PubAck,
    PubRec,
    PubComp,
}

/// A message sent to the client and not yet acknowledged, by its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInFlight {
    pub partition: i32,
    pub offset: i64,
    pub packet_id: u16,
    pub qos: u8,
    pub awaiting: StoredAwaiting,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub identifiers: Vec<u32>,
}

impl StoredSubscription {
    pub fn of(filter: &str, subscribed: &Subscribed) -> StoredSubscription {
        StoredSubscription {
            filter: filter.to_string(),
            qos: subscribed.options.qos as u8,
            no_local: subscribed.options.no_local,
            retain_as_published: subscribed.options.retain_as_published,
            retain_handling: subscribed.options.retain_handling as u8,
            identifier: subscribed.identifier,
        }
    }

    /// The subscription, or `None` if a field is out of range (a damaged record).
    pub fn subscribed(&self) -> Option<(String, Subscribed)> {
        let retain_handling = match self.retain_handling {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtNewSubscribe,
            2 => RetainHandling::DoNotSend,
            _ => return None,
        };
        let options = SubscriptionOptions {
            qos: QoS::from_u8(self.qos)?,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling,
        };
        Some((self.filter.clone(), Subscribed { options, identifier: self.identifier }))
    }
}

impl SessionRecord {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record read from the sessions topic, or why it is skipped.
    pub fn decode(value: &[u8]) -> Result<SessionRecord, String> {
        let record: SessionRecord = serde_json::from_slice(value).map_err(|error| error.to_string())?;
        if record.version > RECORD_VERSION {
            return Err(format!(
                "record version {} is newer than this gateway's {RECORD_VERSION}",
                record.version
            ));
        }
        Ok(record)
    }

    /// Whether the session has ended by its expiry at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// Where a will waiting out its Will Delay Interval is kept in the sessions topic: key
/// `will/{client}` beside the client's session. No client key contains "will/" at its start
/// (devices have no '/', anonymous clients are `anonymous/...`).
pub const WILL_KEY_PREFIX: &str = "will/";

/// A will waiting out its delay, as kept in the sessions topic (see `crate::session_store`).
/// The gateway whose connection ended writes it; once it is due, any gateway may claim it by
/// writing it again with `claimed_by` set, and the first claim in the topic after it wins: that
/// gateway publishes it and writes a tombstone. A new connection of the client writes the
/// tombstone first, which cancels it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWill {
    #[serde(default = "default_version")]
    pub version: u32,
    /// The gateway whose connection ended, and when: together they name this will.
    pub gateway: String,
    pub ended_at_ms: i64,
    pub due_at_ms: i64,
    /// The device it belongs to; `None` for an anonymous client.
    #[serde(default)]
    pub device: Option<String>,
    pub topic: String,
    pub payload_base64: String,
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub payload_format_utf8: bool,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub message_expiry_secs: Option<u32>,
    #[serde(default)]
    pub user_properties: Vec<(String, String)>,
    /// The gateway that claims to publish it.
    #[serde(default)]
    pub claimed_by: Option<String>,
}

impl StoredWill {
    pub fn of(
        will: &tidewater_mqtt::Will,
        device: Option<&str>,
        gateway: &str,
        ended_at_ms: i64,
        due_at_ms: i64,
    ) -> StoredWill {
        use base64::Engine as _;
        let properties = &will.properties;
        StoredWill {
            version: RECORD_VERSION,
            gateway: gateway.to_string(),
            ended_at_ms,
            due_at_ms,
            device: device.map(str::to_string),
            topic: will.topic.as_str().to_string(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(&will.payload),
            qos: will.qos as u8,
            retain: will.retain,
            payload_format_utf8: properties.payload_format_indicator == Some(true),
            content_type: properties.content_type.as_ref().map(|value| value.as_str().to_string()),
            message_expiry_secs: properties.message_expiry_interval_secs,
            user_properties: properties
                .user_properties
                .iter()
                .map(|(name, value)| (name.as_str().to_string(), value.as_str().to_string()))
                .collect(),
            claimed_by: None,
        }
    }

    /// The will as the CONNECT carried it (the properties kept above), or `None` if a field is
    /// damaged.
    pub fn will(&self) -> Option<tidewater_mqtt::Will> {
        use base64::Engine as _;
        let utf8 = |text: &str| {
            tidewater_mqtt::Utf8Bytes::try_from_bytes(bytes::Bytes::copy_from_slice(text.as_bytes())).ok()
        };
        let payload = base64::engine::general_purpose::STANDARD.decode(&self.payload_base64).ok()?;
        let mut properties = tidewater_mqtt::Properties {
            payload_format_indicator: self.payload_format_utf8.then_some(true),
            message_expiry_interval_secs: self.message_expiry_secs,
            ..Default::default()
        };
        if let Some(content_type) = &self.content_type {
            properties.content_type = Some(utf8(content_type)?);
        }
        for (name, value) in &self.user_properties {
            properties.user_properties.push((utf8(name)?, utf8(value)?));
        }
        Some(tidewater_mqtt::Will {
            topic: utf8(&self.topic)?,
            payload: bytes::Bytes::from(payload),
            qos: QoS::from_u8(self.qos)?,
            retain: self.retain,
            properties,
        })
    }

    /// Whether `other` is this will (a claim of it), not a later one of the same client.
    pub fn is_same_will(&self, other: &StoredWill) -> bool {
        self.gateway == other.gateway && self.ended_at_ms == other.ended_at_ms
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(value: &[u8]) -> Result<StoredWill, String> {
        let will: StoredWill = serde_json::from_slice(value).map_err(|error| error.to_string())?;
        if will.version > RECORD_VERSION {
            return Err(format!(
                "will record version {} is newer than this gateway's {RECORD_VERSION}",
                will.version
            ));
        }
        Ok(will)
    }
}

/// One message a restored session owes its client.
#[derive(Debug, Clone, PartialEq)]
pub enum Owed {
    /// Sent before under `packet_id` and not acknowledged (or, for `PubComp`, released by us
    /// and not completed): to repeat.
    InFlight { stored_idx: usize, position: Position, message: Option<Arc<Message>> },
    /// Not sent yet: queued at `qos`.
    Queued { position: Position, message: Arc<Message>, qos: QoS, retain: bool, identifiers: Vec<u32> },
}

/// Which of the messages re-read from the record's positions (`replayed`, in offset order per
/// partition) the session still owes: see the module docs. In-flight messages come first, in
/// the order they were sent (those awaiting PUBCOMP without their message, which the PUBREL does
/// not need; one whose record is gone is dropped), then the queued ones, at most `max_queued`.
/// Shared subscriptions are not replayed: their messages went to one member of the group,
/// possibly on another gateway.
pub fn owed_messages(
    record: &SessionRecord,
    client: &str,
    replayed: &[(Position, Arc<Message>)],
    max_queued: usize,
    now_ms: i64,
) -> Vec<Owed> {
    let in_flight: HashMap<Position, usize> = record
        .in_flight
        .iter()
        .enumerate()
        .map(|(idx, flight)| ((flight.partition, flight.offset), idx))
        .collect();
    let mut last_sent: HashMap<i32, i64> =
        record.sent.iter().map(|(&partition, &offset)| (partition, offset)).collect();
    for flight in &record.in_flight {
        let last = last_sent.entry(flight.partition).or_insert(flight.offset);
        *last = (*last).max(flight.offset);
    }
    let subscriptions: Vec<(String, Subscribed)> = record
        .subscriptions
        .iter()
        .filter_map(StoredSubscription::subscribed)
        .filter(|(filter, _)| !filter.starts_with(SHARED_PREFIX))
        .collect();
    let mut found: Vec<Option<Arc<Message>>> = vec![None; record.in_flight.len()];
    let mut queued = Vec::new();
    for (position, message) in replayed {
        if let Some(&idx) = in_flight.get(position) {
            found[idx] = Some(message.clone());
            continue;
        }
        if last_sent.get(&position.0).is_some_and(|&last| position.1 <= last) {
            // Sent, and not in flight: acknowledged.
            continue;
        }
        if queued.len() >= max_queued || message.is_expired(now_ms) {
            continue;
        }
        let mut best: Option<(QoS, Vec<u32>, bool, bool)> = None;
        for (filter, subscribed) in &subscriptions {
            if !matches(message.topic.as_str(), filter) {
                continue;
            }
            let entry = best.get_or_insert((QoS::AtMostOnce, Vec::new(), false, true));
            entry.0 = entry.0.max(subscribed.options.qos);
            entry.1.extend(subscribed.identifier);
            entry.2 |= subscribed.options.retain_as_published;
            entry.3 &= subscribed.options.no_local;
        }
        let Some((qos, identifiers, retain_as_published, no_local)) = best else { continue };
        if no_local && message.publisher.as_deref() == Some(client) {
            continue;
        }
        let qos = message.qos.min(qos);
        // A session whose client is away keeps QoS 1 and 2 messages only.
        if qos == QoS::AtMostOnce {
            continue;
        }
        queued.push(Owed::Queued {
            position: *position,
            message: message.clone(),
            qos,
            retain: message.retain && retain_as_published,
            identifiers,
        });
    }
    let mut owed: Vec<Owed> = Vec::with_capacity(record.in_flight.len() + queued.len());
    for (idx, (flight, message)) in record.in_flight.iter().zip(found).enumerate() {
        let position = (flight.partition, flight.offset);
        match (flight.awaiting, message) {
            (StoredAwaiting::PubComp, message) => {
                owed.push(Owed::InFlight { stored_idx: idx, position, message })
            }
            (_, Some(message)) => {
                owed.push(Owed::InFlight { stored_idx: idx, position, message: Some(message) })
            }
            (_, None) => {
                tracing::debug!(client, ?position, "an unacknowledged message is no longer in the log")
            }
        }
    }
    owed.extend(queued);
    owed
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tidewater_mqtt::{Properties, Utf8Bytes};

    use crate::message::test_message as message;

    fn record(in_flight: Vec<StoredInFlight>) -> SessionRecord {
        SessionRecord {
            version: RECORD_VERSION,
            gateway: "g".into(),
            connected_at_ms: 1,
            connected: false,
            expiry_secs: None,
            expires_at_ms: None,
            protocol_level: 5,
            subscriptions: vec![StoredSubscription::of(
                "t/#",
                &Subscribed { options: SubscriptionOptions::qos(QoS::AtLeastOnce), identifier: Some(7) },
            )],
            positions: [(0, 10)].into(),
            sent: [(0, 11)].into(),
            in_flight,
            inbound_qos2: vec![3],
            next_packet_id: 9,
        }
    }

    fn flight(offset: i64, packet_id: u16, awaiting: StoredAwaiting) -> StoredInFlight {
        StoredInFlight {
            partition: 0,
            offset,
            packet_id,
            qos: 1,
            awaiting,
            retain: false,
            identifiers: vec![7],
        }
    }

    /// Each owed message as `inflight OFFSET` or `queued OFFSET qosN`.
    fn describe(owed: &[Owed]) -> Vec<String> {
        owed.iter()
            .map(|owed| match owed {
                Owed::InFlight { position, message, .. } => {
                    format!("inflight {}{}", position.1, if message.is_none() { " pubrel" } else { "" })
                }
                Owed::Queued { position, qos, .. } => format!("queued {} qos{}", position.1, *qos as u8),
            })
            .collect()
    }

    #[test]
    fn a_will_round_trips_with_its_properties() {
        let will = tidewater_mqtt::Will {
            topic: Utf8Bytes::try_from_bytes(Bytes::from_static(b"status/pump")).unwrap_or_default(),
            payload: Bytes::from_static(b"\x00offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                content_type: Utf8Bytes::try_from_bytes(Bytes::from_static(b"text/plain")).ok(),
                message_expiry_interval_secs: Some(60),
                ..Properties::default()
            },
        };
        let stored = StoredWill::of(&will, Some("pump-1"), "g", 5, 10);
        let decoded = StoredWill::decode(&stored.encode()).expect("decodes");
        assert_eq!(decoded.will(), Some(will));
        assert!(decoded.is_same_will(&StoredWill { claimed_by: Some("h".into()), ..stored.clone() }));
        assert!(!decoded.is_same_will(&StoredWill { ended_at_ms: 6, ..stored }));
    }

    #[test]
    fn a_record_round_trips_and_a_newer_version_is_refused() {
        let record = record(vec![flight(10, 1, StoredAwaiting::PubAck)]);
        assert_eq!(SessionRecord::decode(&record.encode()), Ok(record.clone()));
        let newer = SessionRecord { version: RECORD_VERSION + 1, ..record };
        assert!(SessionRecord::decode(&newer.encode()).is_err_and(|error| error.contains("newer")));
        assert!(SessionRecord::decode(b"{").is_err());
    }

    #[test]
    fn replay_repeats_in_flight_skips_acknowledged_and_queues_the_rest() {
        let record = record(vec![
            flight(10, 1, StoredAwaiting::PubAck),
            flight(13, 2, StoredAwaiting::PubComp),
            flight(12, 3, StoredAwaiting::PubAck),
        ]);
        let replayed: Vec<(Position, Arc<Message>)> = vec![
            ((0, 10), message("t/a", "in flight", QoS::AtLeastOnce)),
            ((0, 11), message("t/a", "acknowledged", QoS::AtLeastOnce)),
            ((0, 12), message("t/a", "in flight too", QoS::AtLeastOnce)),
            ((0, 14), message("other", "not subscribed", QoS::AtLeastOnce)),
            ((0, 15), message("t/b", "qos 0 is not kept", QoS::AtMostOnce)),
            ((0, 16), message("t/b", "owed", QoS::ExactlyOnce)),
            ((0, 17), message("t/b", "over the limit", QoS::AtLeastOnce)),
        ];
        let owed = owed_messages(&record, "me", &replayed, 1, 0);
        assert_eq!(describe(&owed), ["inflight 10", "inflight 13 pubrel", "inflight 12", "queued 16 qos1"]);
    }

    #[test]
    fn an_in_flight_message_gone_from_the_log_is_dropped_and_no_local_is_kept() {
        let mut record = record(vec![flight(10, 1, StoredAwaiting::PubAck)]);
        record.subscriptions[0].no_local = true;
        let replayed = vec![((0, 12), message("t/a", "mine", QoS::AtLeastOnce))];
        assert!(owed_messages(&record, "publisher", &replayed, 10, 0).is_empty());
        assert_eq!(describe(&owed_messages(&record, "someone else", &replayed, 10, 0)), ["queued 12 qos1"]);
    }
}
