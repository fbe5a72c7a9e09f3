//! An event as a CloudEvent 1.0, and the HTTP request bodies that carry one.
//!
//! A record that already is a CloudEvent keeps its attributes: in the Kafka binding's binary mode
//! they are `ce_*` headers with the content type in `content-type`; in structured mode the value
//! is the JSON event with `content-type: application/cloudevents+json`. Any other record becomes
//! a CloudEvent with `id` = `{topic}-{partition}-{offset}` (stable across redeliveries), `source`
//! = `/tidewater/topics/{topic}`, `type` = `com.tidewater.record`, `time` = the record
//! timestamp, `subject` and the `partitionkey` extension = the key.
//!
//! Over HTTP (the CloudEvents HTTP binding) an event goes out in binary mode (attributes as
//! `ce-*` headers, the data as the body), in structured mode (`application/cloudevents+json`),
//! or, for a batch, as `application/cloudevents-batch+json`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value as Json};

use crate::event::Event;

/// The `type` given to records that are not CloudEvents already.
pub const DEFAULT_TYPE: &str = "com.tidewater.record";
/// The content type of one structured-mode event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The content type of a batch.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// A CloudEvent's context attributes and data.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub time: Option<String>,
    pub subject: Option<String>,
    pub data_content_type: Option<String>,
    pub data_schema: Option<String>,
    /// Extension attributes, by lower-case name.
    pub extensions: Vec<(String, String)>,
    pub data: Option<Bytes>,
}

/// How a single event is sent over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// Attributes as `ce-*` headers, data as the body.
    #[default]
    Binary,
    /// The whole event as a JSON document.
    Structured,
}

/// An HTTP request body with its headers (besides the signature's).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpContent {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl CloudEvent {
    /// The CloudEvent a record represents.
    pub fn from_event(event: &Event) -> CloudEvent {
        let content_type = header_text(event, "content-type");
        if content_type.as_deref().is_some_and(|value| value.starts_with(STRUCTURED_CONTENT_TYPE)) {
            if let Some(structured) =
                event.value.as_deref().and_then(|bytes| Self::from_structured(bytes, event))
            {
                return structured;
            }
        }
        let mut cloud_event = CloudEvent {
            id: event.id(),
            source: format!("/tidewater/topics/{}", event.topic),
            event_type: DEFAULT_TYPE.to_string(),
            time: event.timestamp_ms.map(crate::time_format::rfc3339_millis),
            subject: event.key_str().map(str::to_string),
            data_content_type: content_type.or_else(|| guess_content_type(event.value.as_deref())),
            data_schema: None,
            extensions: Vec::new(),
            data: event.value.clone(),
        };
        if let Some(key) = event.key_str() {
            cloud_event.extensions.push(("partitionkey".to_string(), key.to_string()));
        }
        // Kafka binding, binary mode: ce_ headers carry the attributes.
        if header_text(event, "ce_specversion").is_some() {
            cloud_event.subject = None;
            cloud_event.extensions.clear();
            for (name, value) in &event.headers {
                let Some(attribute) = name.strip_prefix("ce_") else { continue };
                let Some(value) = value.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()) else {
                    continue;
                };
                let value = value.to_string();
                match attribute {
                    "specversion" => {}
                    "id" => cloud_event.id = value,
                    "source" => cloud_event.source = value,
                    "type" => cloud_event.event_type = value,
                    "time" => cloud_event.time = Some(value),
                    "subject" => cloud_event.subject = Some(value),
                    "dataschema" => cloud_event.data_schema = Some(value),
                    "datacontenttype" => cloud_event.data_content_type = Some(value),
                    extension => cloud_event.extensions.push((extension.to_ascii_lowercase(), value)),
                }
            }
        }
        cloud_event
    }

    /// A structured-mode JSON event; `None` if the bytes are not one, so the caller falls back
    /// to treating the record as plain data.
    fn from_structured(bytes: &[u8], event: &Event) -> Option<CloudEvent> {
        let Json::Object(mut object) = serde_json::from_slice::<Json>(bytes).ok()? else { return None };
        let mut take = |name: &str| match object.remove(name) {
            Some(Json::String(text)) => Some(text),
            _ => None,
        };
        let id = take("id").unwrap_or_else(|| event.id());
        let source = take("source")?;
        let event_type = take("type")?;
        let time = take("time");
        let subject = take("subject");
        let data_content_type = take("datacontenttype");
        let data_schema = take("dataschema");
        object.remove("specversion");
        let data = match (object.remove("data"), object.remove("data_base64")) {
            (_, Some(Json::String(encoded))) => Some(Bytes::from(BASE64.decode(encoded).ok()?)),
            (Some(Json::String(text)), None) if !is_json(data_content_type.as_deref()) => {
                Some(Bytes::from(text))
            }
            (Some(value), _) => Some(Bytes::from(serde_json::to_vec(&value).ok()?)),
            (None, _) => None,
        };
        let extensions = object
            .into_iter()
            .map(|(name, value)| match value {
                Json::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect();
        Some(CloudEvent {
            id,
            source,
            event_type,
            time,
            subject,
            data_content_type,
            data_schema,
            extensions,
            data,
        })
    }

    /// Binary mode: `ce-*` headers (values percent-encoded as the HTTP binding requires) and the
    /// data as the body.
    pub fn to_binary(&self) -> HttpContent {
        let mut headers = vec![
            ("ce-specversion".to_string(), "1.0".to_string()),
            ("ce-id".to_string(), percent_encode(&self.id)),
            ("ce-source".to_string(), percent_encode(&self.source)),
            ("ce-type".to_string(), percent_encode(&self.event_type)),
        ];
        let optional =
            [("ce-time", &self.time), ("ce-subject", &self.subject), ("ce-dataschema", &self.data_schema)];
        for (name, value) in optional {
            if let Some(value) = value {
                headers.push((name.to_string(), percent_encode(value)));
            }
        }
        for (name, value) in &self.extensions {
            headers.push((format!("ce-{name}"), percent_encode(value)));
        }
        if let Some(content_type) = &self.data_content_type {
            headers.push(("content-type".to_string(), content_type.clone()));
        }
        HttpContent { headers, body: self.data.clone().unwrap_or_default() }
    }

    /// Structured mode: one JSON document.
    pub fn to_structured(&self) -> HttpContent {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        HttpContent {
            headers: vec![("content-type".to_string(), STRUCTURED_CONTENT_TYPE.to_string())],
            body: Bytes::from(body),
        }
    }

    /// Batch mode: a JSON array of structured events.
    pub fn to_batch(events: &[CloudEvent]) -> HttpContent {
        let array = Json::Array(events.iter().map(CloudEvent::to_json).collect());
        HttpContent {
            headers: vec![("content-type".to_string(), BATCH_CONTENT_TYPE.to_string())],
            body: Bytes::from(serde_json::to_vec(&array).unwrap_or_default()),
        }
    }

    /// The JSON format of CloudEvents: JSON data embedded as JSON, text as a string, anything
    /// else as `data_base64`.
    pub fn to_json(&self) -> Json {
        let mut object = Map::new();
        object.insert("specversion".to_string(), Json::from("1.0"));
        object.insert("id".to_string(), Json::from(self.id.as_str()));
        object.insert("source".to_string(), Json::from(self.source.as_str()));
        object.insert("type".to_string(), Json::from(self.event_type.as_str()));
        let optional = [
            ("time", &self.time),
            ("subject", &self.subject),
            ("datacontenttype", &self.data_content_type),
            ("dataschema", &self.data_schema),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                object.insert(name.to_string(), Json::from(value.as_str()));
            }
        }
        for (name, value) in &self.extensions {
            object.insert(name.clone(), Json::from(value.as_str()));
        }
        if let Some(data) = &self.data {
            let content_type = self.data_content_type.as_deref();
            let as_json = is_json(content_type).then(|| serde_json::from_slice::<Json>(data).ok()).flatten();
            let as_text = || {
                content_type
                    .is_some_and(|kind| kind.starts_with("text/"))
                    .then(|| std::str::from_utf8(data).ok())
                    .flatten()
            };
            if let Some(json) = as_json {
                object.insert("data".to_string(), json);
            } else if let Some(text) = as_text() {
                object.insert("data".to_string(), Json::from(text));
            } else {
                object.insert("data_base64".to_string(), Json::from(BASE64.encode(data)));
            }
        }
        Json::Object(object)
    }
}

fn header_text(event: &Event, name: &str) -> Option<String> {
    event.header(name).and_then(|bytes| std::str::from_utf8(bytes).ok()).map(str::to_string)
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|kind| {
        let essence = kind.split(';').next().unwrap_or("").trim();
        essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
    })
}

/// The content type of a record that does not declare one: JSON if it parses as JSON, text if it
/// is UTF-8, bytes otherwise.
fn guess_content_type(value: Option<&[u8]>) -> Option<String> {
    let value = value?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() {
        return Some("application/json".to_string());
    }
    if std::str::from_utf8(value).is_ok() {
        return Some("text/plain; charset=utf-8".to_string());
    }
    Some("application/octet-stream".to_string())
}

/// Percent-encodes what the CloudEvents HTTP binding says must be (3.1.3.2): space, double quote,
/// percent, and anything outside printable ASCII (as UTF-8 bytes).
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(content: &'a HttpContent, name: &str) -> Option<&'a str> {
        content.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    #[test]
    fn a_plain_json_record_becomes_a_cloudevent() {
        let event = Event::for_test(2, 41, Some("sensor-7"), r#"{"temperature":71}"#);
        let cloud_event = CloudEvent::from_event(&event);
        assert_eq!(cloud_event.id, "events-2-41");
        assert_eq!(cloud_event.source, "/tidewater/topics/events");
        assert_eq!(cloud_event.time.as_deref(), Some("2023-11-14T22:13:20.000Z"));
        let binary = cloud_event.to_binary();
        assert_eq!(header(&binary, "ce-specversion"), Some("1.0"));
        assert_eq!(header(&binary, "ce-type"), Some(DEFAULT_TYPE));
        assert_eq!(header(&binary, "ce-subject"), Some("sensor-7"));
        assert_eq!(header(&binary, "ce-partitionkey"), Some("sensor-7"));
        assert_eq!(header(&binary, "content-type"), Some("application/json"));
        assert_eq!(&binary.body[..], br#"{"temperature":71}"#);
        let structured: Json = serde_json::from_slice(&cloud_event.to_structured().body).unwrap_or_default();
        assert_eq!(structured["data"]["temperature"], 71);
        assert_eq!(structured["specversion"], "1.0");
    }

    #[test]
    fn kafka_binary_mode_attributes_are_kept() {
        let mut event = Event::for_test(0, 1, Some("k"), "hello");
        event.headers = vec![
            ("ce_specversion".to_string(), Some(Bytes::from_static(b"1.0"))),
            ("ce_id".to_string(), Some(Bytes::from_static(b"A234-1234"))),
            ("ce_source".to_string(), Some(Bytes::from_static(b"/mycontext"))),
            ("ce_type".to_string(), Some(Bytes::from_static(b"com.example.someevent"))),
            ("ce_comexampleextension1".to_string(), Some(Bytes::from_static(b"value with space"))),
            ("content-type".to_string(), Some(Bytes::from_static(b"text/plain"))),
        ];
        let cloud_event = CloudEvent::from_event(&event);
        let binary = cloud_event.to_binary();
        assert_eq!(header(&binary, "ce-id"), Some("A234-1234"));
        assert_eq!(header(&binary, "ce-type"), Some("com.example.someevent"));
        assert_eq!(header(&binary, "ce-comexampleextension1"), Some("value%20with%20space"));
        assert_eq!(header(&binary, "content-type"), Some("text/plain"));
        assert_eq!(header(&binary, "ce-subject"), None);
        let structured: Json = serde_json::from_slice(&cloud_event.to_structured().body).unwrap_or_default();
        assert_eq!(structured["data"], "hello");
    }

    #[test]
    fn kafka_structured_mode_is_unpacked() {
        let mut event = Event::for_test(
            0,
            1,
            None,
            r#"{"specversion":"1.0","id":"x1","source":"/s","type":"t","datacontenttype":"application/json",
                "data":{"a":1},"traceparent":"00-abc"}"#,
        );
        event.headers =
            vec![("content-type".to_string(), Some(Bytes::from_static(b"application/cloudevents+json")))];
        let cloud_event = CloudEvent::from_event(&event);
        assert_eq!(cloud_event.id, "x1");
        assert_eq!(cloud_event.extensions, vec![("traceparent".to_string(), "00-abc".to_string())]);
        assert_eq!(cloud_event.data.as_deref(), Some(&br#"{"a":1}"#[..]));
    }

    #[test]
    fn binary_data_travels_as_base64_in_json() {
        let mut event = Event::for_test(0, 1, None, "");
        event.value = Some(Bytes::from_static(&[0xff, 0x00, 0x80]));
        let cloud_event = CloudEvent::from_event(&event);
        assert_eq!(cloud_event.data_content_type.as_deref(), Some("application/octet-stream"));
        let batch: Json =
            serde_json::from_slice(&CloudEvent::to_batch(&[cloud_event]).body).unwrap_or_default();
        assert_eq!(batch[0]["data_base64"], "/wCA");
    }
}
