//! An MQTT application message as the gateway keeps it in the log, and back.
//!
//! Plain MQTT pub/sub (clients that are not devices, publishing to topics outside `devices/`)
//! goes through the cluster like everything else: a PUBLISH is appended to the pub/sub topic
//! (key = MQTT topic, so one topic's messages stay in order), acknowledged once durable, and
//! every gateway following that topic delivers it to its subscribers. A retained PUBLISH goes
//! there too (marked `mqtt-retain`, so it keeps its place among the topic's other messages) and
//! also to the retained topic, a table keyed by MQTT topic that gateways load at start.
//!
//! The record's value is the payload; the MQTT envelope travels in headers:
//!
//! | header | meaning |
//! |---|---|
//! | `mqtt-topic` | the topic name |
//! | `mqtt-qos` | `0`, `1` or `2`, the QoS it was published with |
//! | `mqtt-retain` | `true` for a retained message |
//! | `mqtt-client` | the publishing session, for No Local subscriptions |
//! | `mqtt-message-expiry` | Message Expiry Interval, seconds after the record's timestamp |
//! | `mqtt-payload-format` | `utf-8` when the Payload Format Indicator said so |
//! | `mqtt-response-topic`, `mqtt-correlation-data` | MQTT 5 request/response |
//! | `content-type` | MQTT 5 Content Type |
//! | any other | an MQTT 5 user property |
//!
//! A command to a device is an ordinary record on the commands topic (key = device id); its
//! headers become user properties and `mqtt-message-expiry` sets its time-to-live.

use bytes::Bytes;
use tidewater_mqtt::{Properties, Publish, QoS, Utf8Bytes};

use crate::route::{CONTENT_TYPE_HEADER, DEVICE_ID_HEADER, MQTT_TOPIC_HEADER};

pub const QOS_HEADER: &str = "mqtt-qos";
pub const RETAIN_HEADER: &str = "mqtt-retain";
pub const CLIENT_HEADER: &str = "mqtt-client";
pub const EXPIRY_HEADER: &str = "mqtt-message-expiry";
pub const PAYLOAD_FORMAT_HEADER: &str = "mqtt-payload-format";
pub const RESPONSE_TOPIC_HEADER: &str = "mqtt-response-topic";
pub const CORRELATION_DATA_HEADER: &str = "mqtt-correlation-data";

/// One application message on its way to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: Utf8Bytes,
    pub payload: Bytes,
    /// The QoS it was published with; each subscriber gets at most its own.
    pub qos: QoS,
    /// Published with the retain flag. Subscribers see it set on a retained message sent
    /// because of a SUBSCRIBE, and on live messages to Retain As Published subscriptions.
    pub retain: bool,
    /// The publishing session, if known.
    pub publisher: Option<String>,
    /// Only message-level properties: payload format, content type, response topic,
    /// correlation data, user properties.
    pub properties: Properties,
    /// When it stops being delivered (Message Expiry Interval), in Unix milliseconds.
    pub expires_at_ms: Option<i64>,
}

impl Message {
    /// Stands for a QoS 2 message already released to the client (PUBREL sent) whose content
    /// is no longer needed: only its PUBREL is ever sent again.
    pub fn released() -> Message {
        Message {
            topic: Utf8Bytes::default(),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            publisher: None,
            properties: Properties::default(),
            expires_at_ms: None,
        }
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|deadline| deadline <= now_ms)
    }

    /// The Message Expiry Interval to send on: what is left, rounded up (spec 3.3.2.3.3).
    pub fn remaining_expiry_secs(&self, now_ms: i64) -> Option<u32> {
        self.expires_at_ms.map(|deadline| {
            let left_ms = (deadline - now_ms).max(0);
            u32::try_from((left_ms + 999) / 1000).unwrap_or(u32::MAX)
        })
    }
}

/// Whether a header is part of the gateway's envelope rather than a user property.
pub fn is_envelope_header(name: &str) -> bool {
    name == CONTENT_TYPE_HEADER || name == DEVICE_ID_HEADER || name.starts_with("mqtt-")
}

/// The record headers for a PUBLISH from `publisher` (see the module table).
pub fn headers_of(publish: &Publish, publisher: &str) -> Vec<(String, Bytes)> {
    let properties = &publish.properties;
    let mut headers = Vec::with_capacity(4 + properties.user_properties.len());
    headers.push((MQTT_TOPIC_HEADER.to_string(), publish.topic.clone().into_bytes()));
    headers.push((QOS_HEADER.to_string(), Bytes::from(vec![b'0' + publish.qos as u8])));
    headers.push((CLIENT_HEADER.to_string(), Bytes::copy_from_slice(publisher.as_bytes())));
    if publish.retain {
        headers.push((RETAIN_HEADER.to_string(), Bytes::from_static(b"true")));
    }
    if let Some(secs) = properties.message_expiry_interval_secs {
        headers.push((EXPIRY_HEADER.to_string(), Bytes::from(secs.to_string())));
    }
    if properties.payload_format_indicator == Some(true) {
        headers.push((PAYLOAD_FORMAT_HEADER.to_string(), Bytes::from_static(b"utf-8")));
    }
    if let Some(topic) = &properties.response_topic {
        headers.push((RESPONSE_TOPIC_HEADER.to_string(), topic.clone().into_bytes()));
    }
    if let Some(data) = &properties.correlation_data {
        headers.push((CORRELATION_DATA_HEADER.to_string(), data.clone()));
    }
    if let Some(content_type) = &properties.content_type {
        headers.push((CONTENT_TYPE_HEADER.to_string(), content_type.clone().into_bytes()));
    }
    for (name, value) in &properties.user_properties {
        if is_envelope_header(name.as_str()) {
            continue;
        }
        headers.push((name.as_str().to_string(), value.clone().into_bytes()));
    }
    headers
}

fn utf8(bytes: &[u8]) -> Option<Utf8Bytes> {
    Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(bytes)).ok()
}

/// Reads a record back into a message. `topic` is the MQTT topic to use when the record has no
/// `mqtt-topic` header (commands); `timestamp_ms` is the record's timestamp, from which the
/// expiry counts; `default_ttl_ms` applies when the record carries no expiry. Headers that are
/// not valid UTF-8 cannot be user properties and are left out. `None` if the topic is not
/// UTF-8.
pub fn from_record<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    payload: Option<&[u8]>,
    topic: Option<&str>,
    timestamp_ms: i64,
    default_ttl_ms: Option<i64>,
) -> Option<Message> {
    let mut message = Message {
        topic: topic.and_then(|topic| utf8(topic.as_bytes())).unwrap_or_default(),
        payload: Bytes::copy_from_slice(payload.unwrap_or_default()),
        qos: QoS::AtLeastOnce,
        retain: false,
        publisher: None,
        properties: Properties::default(),
        expires_at_ms: default_ttl_ms.map(|ttl| timestamp_ms.saturating_add(ttl)),
    };
    let mut has_topic = topic.is_some();
    for (name, value) in headers {
        let value = value.unwrap_or_default();
        match name {
            MQTT_TOPIC_HEADER => {
                message.topic = utf8(value)?;
                has_topic = true;
            }
            QOS_HEADER => {
                message.qos = value
                    .first()
                    .and_then(|digit| QoS::from_u8(digit.wrapping_sub(b'0')))
                    .unwrap_or(QoS::AtMostOnce)
            }
            CLIENT_HEADER => message.publisher = std::str::from_utf8(value).ok().map(str::to_string),
            RETAIN_HEADER => message.retain = value == b"true",
            EXPIRY_HEADER => {
                if let Some(secs) = std::str::from_utf8(value).ok().and_then(|text| text.parse::<i64>().ok())
                {
                    message.expires_at_ms = Some(timestamp_ms.saturating_add(secs.saturating_mul(1000)));
                }
            }
            PAYLOAD_FORMAT_HEADER => message.properties.payload_format_indicator = Some(true),
            RESPONSE_TOPIC_HEADER => message.properties.response_topic = utf8(value),
            CORRELATION_DATA_HEADER => {
                message.properties.correlation_data = Some(Bytes::copy_from_slice(value))
            }
            CONTENT_TYPE_HEADER => message.properties.content_type = utf8(value),
            name if is_envelope_header(name) => {}
            name => {
                if let (Some(name), Some(value)) = (utf8(name.as_bytes()), utf8(value)) {
                    message.properties.user_properties.push((name, value));
                }
            }
        }
    }
    has_topic.then_some(message)
}

/// A message as the unit tests of the hub and the session records make them.
#[cfg(test)]
pub(crate) fn test_message(topic: &str, payload: &str, qos: QoS) -> std::sync::Arc<Message> {
    std::sync::Arc::new(Message {
        topic: Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(topic.as_bytes())).unwrap_or_default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        publisher: Some("publisher".into()),
        properties: Properties::default(),
        expires_at_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Utf8Bytes {
        utf8(value.as_bytes()).unwrap_or_default()
    }

    #[test]
    fn a_publish_survives_the_round_trip_through_record_headers() {
        let publish = Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: text("plant/line-1/temp"),
            packet_id: std::num::NonZeroU16::new(3),
            properties: Properties {
                payload_format_indicator: Some(true),
                message_expiry_interval_secs: Some(60),
                content_type: Some(text("application/json")),
                response_topic: Some(text("replies/1")),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                user_properties: vec![(text("site"), text("north")), (text("mqtt-qos"), text("0"))],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"{\"t\":21}"),
        };
        let headers = headers_of(&publish, "anonymous/app-1");
        let message = from_record(
            headers.iter().map(|(name, value)| (name.as_str(), Some(value.as_ref()))),
            Some(b"{\"t\":21}"),
            None,
            1_000,
            None,
        )
        .expect("a topic header");
        assert_eq!(message.topic.as_str(), "plant/line-1/temp");
        assert_eq!(message.qos, QoS::ExactlyOnce);
        assert_eq!(message.publisher.as_deref(), Some("anonymous/app-1"));
        assert_eq!(message.expires_at_ms, Some(61_000));
        assert_eq!(message.remaining_expiry_secs(30_500), Some(31));
        assert_eq!(message.properties.content_type, Some(text("application/json")));
        assert_eq!(message.properties.response_topic, Some(text("replies/1")));
        assert_eq!(message.properties.correlation_data.as_deref(), Some(&b"\x01\x02"[..]));
        assert_eq!(message.properties.payload_format_indicator, Some(true));
        // A user property cannot pose as part of the envelope.
        assert_eq!(message.properties.user_properties, vec![(text("site"), text("north"))]);
    }

    #[test]
    fn a_command_record_takes_its_topic_from_the_caller_and_a_default_time_to_live() {
        let message = from_record(
            [("tidewater-trigger", Some(&b"t1"[..]))],
            Some(b"reboot"),
            Some("devices/pump-1/messages/devicebound/"),
            5_000,
            Some(3_600_000),
        )
        .expect("a topic");
        assert_eq!(message.topic.as_str(), "devices/pump-1/messages/devicebound/");
        assert_eq!(message.qos, QoS::AtLeastOnce);
        assert_eq!(message.expires_at_ms, Some(3_605_000));
        assert!(message.is_expired(3_605_000));
        assert_eq!(message.properties.user_properties, vec![(text("tidewater-trigger"), text("t1"))]);
        assert!(from_record([], Some(b"x"), None, 0, None).is_none(), "no topic anywhere");
    }
}
