//! Where a PUBLISH goes, and what a client may subscribe to.
//!
//! A device publishes to `devices/{device}/messages/events` and everything below it, the Azure
//! IoT Hub device-to-cloud topic; that goes to the telemetry topic with key = device id, so one
//! device's events stay in order in one partition. A device subscribes only to its own
//! `devices/{device}/messages/devicebound/...` topics, where its commands arrive.
//!
//! A SCRAM user, and an anonymous client (where allowed), do plain MQTT pub/sub between applications: any topic
//! outside `devices/` goes to the pub/sub topic keyed by MQTT topic, and if retained also to the
//! retained table ([`crate::message`] has the record layout); it may subscribe to any filter not
//! starting with `devices/`.
//!
//! The record is stamped with the *authenticated* device id (header `device-id`): the topic's
//! `{device}` must be that id, so a device cannot publish as another, and a user property cannot
//! forge the stamp either (user properties with a reserved header name are dropped).

use bytes::Bytes;
use tidewater_mqtt::topic::parse_shared;
use tidewater_mqtt::{Publish, ReasonCode};

use crate::auth::Identity;
use crate::message::{headers_of, is_envelope_header};

/// The topics PUBLISHes are appended to.
#[derive(Debug, Clone, Copy)]
pub struct Destinations<'a> {
    /// Device events, keyed by device id.
    pub telemetry: &'a str,
    /// Plain pub/sub, keyed by MQTT topic.
    pub messages: &'a str,
    /// Retained plain pub/sub messages, keyed by MQTT topic.
    pub retained: &'a str,
}

/// Where one PUBLISH goes: its record, and for a retained pub/sub message the same record for
/// the retained table. Both must be durable before the PUBLISH is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub message: DeviceMessage,
    pub retained: Option<DeviceMessage>,
}

/// The topic prefix reserved for devices.
const DEVICES_PREFIX: &str = "devices/";

/// Header with the authenticated device id.
pub const DEVICE_ID_HEADER: &str = "device-id";
/// Header with the MQTT topic the message was published to.
pub const MQTT_TOPIC_HEADER: &str = "mqtt-topic";
/// Header with an MQTT 5 Content Type property.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// One device message ready to append to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMessage {
    pub topic: String,
    pub key: String,
    pub payload: Bytes,
    /// In order: the gateway's own headers first, then the MQTT 5 user properties.
    pub headers: Vec<(String, Bytes)>,
}

/// The largest record the gateway appends, key, value and headers together, with room to spare
/// under Kafka's default `message.max.bytes` (1,000,000) for the record's own framing. A
/// message the cluster would refuse is refused to the client instead (HTTP 413), rather than
/// acknowledged never, which a device would take as "send it again" forever.
pub const RECORD_BYTES_MAX: usize = 960_000;

impl DeviceMessage {
    /// Key, value and header bytes: what counts against the cluster's message size limit.
    pub fn record_bytes(&self) -> usize {
        self.key.len()
            + self.payload.len()
            + self.headers.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>()
    }
}

/// The device id a topic publishes for, if it is an events topic:
/// `devices/{id}/messages/events` or anything below it.
pub fn events_topic_device(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("devices/")?;
    let (device, rest) = rest.split_once('/')?;
    let below = rest.strip_prefix("messages/events")?;
    (below.is_empty() || below.starts_with('/')).then_some(device)
}

/// Whether `identity` may subscribe to `filter` (which may be `$share/...`): Not authorized
/// otherwise. A device may subscribe to its own devicebound topics only, without sharing; an
/// anonymous client to anything outside `devices/`.
pub fn may_subscribe(identity: &Identity, filter: &str) -> Result<(), ReasonCode> {
    let shared = parse_shared(filter).ok().flatten();
    let inner = shared.map_or(filter, |shared| shared.filter);
    let allowed = match identity {
        Identity::Device(id) => {
            shared.is_none()
                && inner
                    .strip_prefix(DEVICES_PREFIX)
                    .and_then(|rest| rest.strip_prefix(id.as_str()))
                    .is_some_and(|rest| rest.starts_with("/messages/devicebound/"))
        }
        Identity::User(_) | Identity::Anonymous => !inner.starts_with(DEVICES_PREFIX),
    };
    if allowed {
        Ok(())
    } else {
        Err(ReasonCode::NotAuthorized)
    }
}

/// Routes a PUBLISH from `identity` (whose session is `client`) to a record, or refuses it
/// with the MQTT 5 reason code for the acknowledgement: Not authorized for another device's
/// topic, for a device publishing outside its events topic, and for an anonymous client
/// publishing under `devices/`; Payload format invalid for a payload declared UTF-8 that is not.
pub fn route(
    identity: &Identity,
    client: &str,
    publish: &Publish,
    destinations: Destinations<'_>,
) -> Result<Routed, ReasonCode> {
    let properties = &publish.properties;
    // A payload declared UTF-8 (MQTT 5 Payload Format Indicator 1) must be, so that consumers
    // can trust the declaration (spec 3.3.2.3.2).
    if properties.payload_format_indicator == Some(true) && std::str::from_utf8(&publish.payload).is_err() {
        return Err(ReasonCode::PayloadFormatInvalid);
    }
    let Some(device_id) = identity.device_id() else {
        let topic = publish.topic.as_str();
        if topic.starts_with(DEVICES_PREFIX) {
            return Err(ReasonCode::NotAuthorized);
        }
        let message = DeviceMessage {
            topic: destinations.messages.to_string(),
            key: topic.to_string(),
            payload: publish.payload.clone(),
            headers: headers_of(publish, client),
        };
        let retained = publish
            .retain
            .then(|| DeviceMessage { topic: destinations.retained.to_string(), ..message.clone() });
        return Ok(Routed { message, retained });
    };
    let topic_device = events_topic_device(publish.topic.as_str()).ok_or(ReasonCode::NotAuthorized)?;
    if topic_device != device_id {
        return Err(ReasonCode::NotAuthorized);
    }
    let mut headers = Vec::with_capacity(3 + properties.user_properties.len());
    headers.push((DEVICE_ID_HEADER.to_string(), Bytes::copy_from_slice(device_id.as_bytes())));
    headers.push((MQTT_TOPIC_HEADER.to_string(), publish.topic.clone().into_bytes()));
    if let Some(content_type) = &properties.content_type {
        headers.push((CONTENT_TYPE_HEADER.to_string(), content_type.clone().into_bytes()));
    }
    for (name, value) in &properties.user_properties {
        if is_envelope_header(name.as_str()) {
            tracing::debug!(device_id, name = name.as_str(), "user property with a reserved name dropped");
            continue;
        }
        headers.push((name.as_str().to_string(), value.clone().into_bytes()));
    }
    let message = DeviceMessage {
        topic: destinations.telemetry.to_string(),
        key: device_id.to_string(),
        payload: publish.payload.clone(),
        headers,
    };
    Ok(Routed { message, retained: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewater_mqtt::{Properties, QoS, Utf8Bytes};

    const DESTINATIONS: Destinations<'static> =
        Destinations { telemetry: "telemetry", messages: "mqtt-messages", retained: "retained" };

    fn text(value: &str) -> Utf8Bytes {
        Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(value.as_bytes())).unwrap_or_default()
    }

    fn check(identity: &Identity, topic: &str, user_properties: &[(&str, &str)]) -> String {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: text(topic),
            packet_id: std::num::NonZeroU16::new(1),
            properties: Properties {
                user_properties: user_properties
                    .iter()
                    .map(|(name, value)| (text(name), text(value)))
                    .collect(),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"{}"),
        };
        match route(identity, "client", &publish, DESTINATIONS).map(|routed| routed.message) {
            Ok(message) => {
                let headers: Vec<String> = message
                    .headers
                    .iter()
                    .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value)))
                    .collect();
                format!("{} key={} {}", message.topic, message.key, headers.join(" "))
            }
            Err(code) => code.to_string(),
        }
    }

    #[test]
    fn a_payload_declared_utf8_must_be() {
        let pump = Identity::Device("pump-1".into());
        let mut publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: text("devices/pump-1/messages/events/"),
            packet_id: std::num::NonZeroU16::new(1),
            properties: Properties { payload_format_indicator: Some(true), ..Properties::default() },
            payload: Bytes::from_static(b"\xff\xfe"),
        };
        assert_eq!(
            route(&pump, "pump-1", &publish, DESTINATIONS).err(),
            Some(ReasonCode::PayloadFormatInvalid)
        );
        publish.payload = Bytes::from_static("température".as_bytes());
        assert!(route(&pump, "pump-1", &publish, DESTINATIONS).is_ok());
        publish.properties.payload_format_indicator = Some(false);
        publish.payload = Bytes::from_static(b"\xff\xfe");
        assert!(route(&pump, "pump-1", &publish, DESTINATIONS).is_ok());
    }

    #[test]
    fn routes() {
        let pump = Identity::Device("pump-1".into());
        assert_eq!(
            check(&pump, "devices/pump-1/messages/events/", &[]),
            "telemetry key=pump-1 device-id=pump-1 mqtt-topic=devices/pump-1/messages/events/"
        );
        assert_eq!(
            check(&pump, "devices/pump-1/messages/events", &[("site", "north"), ("device-id", "pump-9")]),
            "telemetry key=pump-1 device-id=pump-1 mqtt-topic=devices/pump-1/messages/events site=north"
        );
        assert_eq!(
            check(&pump, "devices/pump-1/messages/events/a/b", &[]).split(' ').nth(1),
            Some("key=pump-1")
        );
        assert_eq!(check(&pump, "devices/pump-2/messages/events/", &[]), "Not authorized (0x87)");
        assert_eq!(check(&pump, "devices/pump-1/messages/eventsx", &[]), "Not authorized (0x87)");
        assert_eq!(check(&pump, "devices/pump-1/twin", &[]), "Not authorized (0x87)");
        assert_eq!(check(&pump, "other", &[]), "Not authorized (0x87)");
        assert_eq!(
            check(&Identity::Anonymous, "devices/pump-1/messages/events/", &[]),
            "Not authorized (0x87)"
        );
        assert_eq!(
            check(&Identity::Anonymous, "plant/line-1", &[("site", "north")]),
            "mqtt-messages key=plant/line-1 mqtt-topic=plant/line-1 mqtt-qos=1 mqtt-client=client site=north"
        );
    }

    #[test]
    fn subscriptions_allowed() {
        let pump = Identity::Device("pump-1".into());
        assert_eq!(may_subscribe(&pump, "devices/pump-1/messages/devicebound/#"), Ok(()));
        assert_eq!(may_subscribe(&pump, "devices/pump-1/messages/devicebound/x/+"), Ok(()));
        assert!(may_subscribe(&pump, "devices/pump-2/messages/devicebound/#").is_err());
        assert!(may_subscribe(&pump, "devices/pump-1x/messages/devicebound/#").is_err());
        assert!(may_subscribe(&pump, "devices/+/messages/devicebound/#").is_err());
        assert!(may_subscribe(&pump, "#").is_err());
        assert!(may_subscribe(&pump, "$share/g/devices/pump-1/messages/devicebound/#").is_err());
        assert_eq!(may_subscribe(&Identity::Anonymous, "plant/#"), Ok(()));
        assert_eq!(may_subscribe(&Identity::Anonymous, "$share/g/plant/#"), Ok(()));
        assert!(may_subscribe(&Identity::Anonymous, "devices/pump-1/messages/devicebound/#").is_err());
    }
}
