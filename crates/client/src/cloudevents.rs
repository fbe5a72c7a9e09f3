//! CloudEvents 1.0 on Kafka records and HTTP requests, in both directions: the one place that
//! knows the bindings' header names, how each mode maps onto the others, and their
//! percent-encoding. Pure: no I/O.
//!
//! - **Kafka binding, binary mode**, the shape Tidewater stores: attributes as `ce_*` record
//!   headers, the data's content type as `content-type`, the data as the value.
//! - **Kafka binding, structured mode**: the value is the JSON-format event, with
//!   `content-type: application/cloudevents+json`.
//! - **HTTP binding**: binary mode (attributes as `ce-*` headers, percent-encoded), structured
//!   mode (`application/cloudevents+json`) and batch mode (`application/cloudevents-batch+json`,
//!   a JSON array of structured events).
//!
//! Into Kafka (the gateway's HTTP ingestion): [`kafka_headers_from_http`] turns an HTTP
//! binary-mode request's `ce-*` headers into `ce_*` record headers, and [`unpack_structured`]
//! turns a structured event into that same binary-mode shape, so consumers see one shape
//! whichever mode a device used. Both check the attribute names and the required attributes,
//! and refuse with a [`BindingError`] whose text a device can act on.
//!
//! Out of Kafka (triggers' webhooks): [`CloudEvent::from_record`] reads a record in either Kafka
//! mode, falling back to what the caller says a plain record stands for, and
//! [`CloudEvent::to_binary`], [`CloudEvent::to_structured`] and [`CloudEvent::to_batch`] make
//! HTTP bodies and headers of it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value as Json};

/// The only CloudEvents version spoken.
pub const SPEC_VERSION: &str = "1.0";
/// The prefix of attribute headers on Kafka records (the Kafka binding).
pub const KAFKA_HEADER_PREFIX: &str = "ce_";
/// The prefix of attribute headers on HTTP requests (the HTTP binding).
pub const HTTP_HEADER_PREFIX: &str = "ce-";
/// The header (on records and requests alike) carrying the data's content type in binary mode,
/// or the structured content type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// The content type of plain JSON data.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The content type of one structured-mode event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The content type of a batch.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// The attributes every event must have, in the order they are written.
pub const REQUIRED_ATTRIBUTES: [&str; 4] = ["specversion", "id", "source", "type"];
/// The longest attribute name accepted (the spec recommends at most 20).
pub const ATTRIBUTE_NAME_BYTES_MAX: usize = 64;

/// Why a request's event does not map onto a record: a sentence naming the attribute, header or
/// batch entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BindingError(pub String);

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

/// An HTTP request body with its headers.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpContent {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl CloudEvent {
    /// The CloudEvent a record (its `headers`, in record order, and `value`) carries. A record in
    /// structured mode is unpacked (its `id` defaults to `plain`'s); in binary mode the `ce_*`
    /// headers give the attributes over `plain`'s (and replace its subject and extensions).
    /// Any other record is `plain`, the event the caller says a record without attributes
    /// stands for, with the record's value as data and its `content-type` (or, without one, a
    /// guess: JSON, text or bytes) as the data's content type.
    pub fn from_record(
        headers: &[(String, Option<Bytes>)],
        value: Option<&Bytes>,
        plain: CloudEvent,
    ) -> CloudEvent {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.as_deref())
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
        };
        let content_type = header(CONTENT_TYPE_HEADER).map(str::to_string);
        if content_type.as_deref().is_some_and(|value| value.starts_with(STRUCTURED_CONTENT_TYPE)) {
            if let Some(structured) = value.and_then(|bytes| Self::from_structured(bytes, &plain.id)) {
                return structured;
            }
        }
        let mut cloud_event = plain;
        cloud_event.data_content_type =
            content_type.or_else(|| guess_content_type(value.map(|value| &value[..])));
        cloud_event.data = value.cloned();
        if header("ce_specversion").is_none() {
            return cloud_event;
        }
        cloud_event.subject = None;
        cloud_event.extensions.clear();
        for (name, value) in headers {
            let Some(attribute) = name.strip_prefix(KAFKA_HEADER_PREFIX) else { continue };
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
        cloud_event
    }

    /// A structured-mode JSON event, read leniently (a record is already stored, so there is no
    /// one to refuse): `None` if the bytes are not one, so the caller falls back to treating the
    /// record as plain data.
    fn from_structured(bytes: &[u8], default_id: &str) -> Option<CloudEvent> {
        let Json::Object(mut object) = serde_json::from_slice::<Json>(bytes).ok()? else { return None };
        let mut take = |name: &str| match object.remove(name) {
            Some(Json::String(text)) => Some(text),
            _ => None,
        };
        let id = take("id").unwrap_or_else(|| default_id.to_string());
        let source = take("source")?;
        let event_type = take("type")?;
        let time = take("time");
        let subject = take("subject");
        let data_content_type = take("datacontenttype");
        let data_schema = take("dataschema");
        object.remove("specversion");
        // `data_base64` wins over `data`, and one that is not a string is not there.
        let data_base64 = object.remove("data_base64").filter(Json::is_string);
        let data = object.remove("data").filter(|_| data_base64.is_none());
        let data =
            json_data(data, data_base64, data_content_type.as_deref()).ok()?.map(EventData::into_bytes);
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

    /// HTTP binary mode: `ce-*` headers (values percent-encoded as the HTTP binding requires) and
    /// the data as the body.
    pub fn to_binary(&self) -> HttpContent {
        let mut headers = vec![
            ("ce-specversion".to_string(), SPEC_VERSION.to_string()),
            ("ce-id".to_string(), percent_encode(&self.id, is_header_safe)),
            ("ce-source".to_string(), percent_encode(&self.source, is_header_safe)),
            ("ce-type".to_string(), percent_encode(&self.event_type, is_header_safe)),
        ];
        let optional = [("time", &self.time), ("subject", &self.subject), ("dataschema", &self.data_schema)];
        let extensions = self.extensions.iter().map(|(name, value)| (name.as_str(), Some(value)));
        for (name, value) in
            optional.into_iter().map(|(name, value)| (name, value.as_ref())).chain(extensions)
        {
            if let Some(value) = value {
                headers.push((format!("{HTTP_HEADER_PREFIX}{name}"), percent_encode(value, is_header_safe)));
            }
        }
        if let Some(content_type) = &self.data_content_type {
            headers.push((CONTENT_TYPE_HEADER.to_string(), content_type.clone()));
        }
        HttpContent { headers, body: self.data.clone().unwrap_or_default() }
    }

    /// HTTP structured mode: one JSON document.
    pub fn to_structured(&self) -> HttpContent {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        HttpContent {
            headers: vec![(CONTENT_TYPE_HEADER.to_string(), STRUCTURED_CONTENT_TYPE.to_string())],
            body: Bytes::from(body),
        }
    }

    /// HTTP batch mode: a JSON array of structured events.
    pub fn to_batch(events: &[CloudEvent]) -> HttpContent {
        let array = Json::Array(events.iter().map(CloudEvent::to_json).collect());
        HttpContent {
            headers: vec![(CONTENT_TYPE_HEADER.to_string(), BATCH_CONTENT_TYPE.to_string())],
            body: Bytes::from(serde_json::to_vec(&array).unwrap_or_default()),
        }
    }

    /// The JSON format of CloudEvents: JSON data embedded as JSON, text as a string, anything
    /// else as `data_base64`.
    pub fn to_json(&self) -> Json {
        let mut object = Map::new();
        object.insert("specversion".to_string(), Json::from(SPEC_VERSION));
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

/// HTTP binary mode into Kafka binary mode: every `ce-*` header (names as HTTP libraries give
/// them, lower case) as a `ce_*` record header, percent-decoded, in request order. Refused
/// when a name is not a valid attribute name, a value does not decode, or a required attribute
/// is missing or empty.
pub fn kafka_headers_from_http<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<(String, Bytes)>, BindingError> {
    let mut attributes = Vec::new();
    for (name, value) in headers {
        let Some(attribute) = name.strip_prefix(HTTP_HEADER_PREFIX) else { continue };
        check_attribute_name(attribute)?;
        let value = percent_decode(value)
            .ok_or_else(|| BindingError(format!("header {name} is not valid percent-encoded UTF-8")))?;
        attributes.push((format!("{KAFKA_HEADER_PREFIX}{attribute}"), Bytes::from(value)));
    }
    check_required(&attributes, "")?;
    Ok(attributes)
}

/// A structured event unpacked into the Kafka binding's binary mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    /// `ce_*` headers: the required attributes first, then the rest in the event's order.
    pub attributes: Vec<(String, Bytes)>,
    /// The record's `content-type`: `datacontenttype`, or JSON for JSON data without one.
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// Unpacks one JSON-format event (structured mode, or one entry of a batch); `index` names its
/// place in a batch for errors. Refused when it is not an object, an attribute is not a scalar or
/// is misnamed, a required attribute is missing, or its data is in both or neither form.
pub fn unpack_structured(json: Json, index: Option<usize>) -> Result<Unpacked, BindingError> {
    let at = index.map(|index| format!("event {index}: ")).unwrap_or_default();
    let refuse = |problem: String| BindingError(format!("{at}{problem}"));
    let Json::Object(mut object) = json else {
        return Err(refuse("a CloudEvent must be a JSON object".to_string()));
    };
    let data = object.remove("data");
    let data_base64 = object.remove("data_base64");
    let content_type = match object.remove("datacontenttype") {
        None => None,
        Some(Json::String(text)) => Some(text),
        Some(_) => return Err(refuse("datacontenttype must be a string".to_string())),
    };
    let mut attributes = Vec::with_capacity(object.len());
    for (name, value) in object_in_spec_order(object) {
        check_attribute_name(&name).map_err(|error| refuse(error.0))?;
        let text = match value {
            Json::String(text) => text,
            Json::Number(number) => number.to_string(),
            Json::Bool(flag) => flag.to_string(),
            Json::Null => continue,
            Json::Array(_) | Json::Object(_) => {
                return Err(refuse(format!("CloudEvents attribute {name:?} must be a scalar")))
            }
        };
        attributes.push((format!("{KAFKA_HEADER_PREFIX}{name}"), Bytes::from(text)));
    }
    check_required(&attributes, &at)?;
    let (data, content_type) = match json_data(data, data_base64, content_type.as_deref()).map_err(refuse)? {
        None => (Bytes::new(), content_type),
        // Bytes have no implied content type; only a declared one is kept.
        Some(EventData::Binary(bytes)) => (bytes, content_type),
        // JSON data without a declared content type is JSON (the JSON format's rule).
        // FIXME: so is a JSON string, which is stored as its bare text under application/json.
        Some(EventData::Text(bytes) | EventData::Json(bytes)) => {
            let content_type =
                content_type.or_else(|| (!bytes.is_empty()).then(|| JSON_CONTENT_TYPE.to_string()));
            (bytes, content_type)
        }
    };
    Ok(Unpacked { attributes, content_type, data })
}

/// The data of a JSON-format event, by the form it took.
enum EventData {
    /// From `data_base64`.
    Binary(Bytes),
    /// A JSON string as its text, for a content type that is not JSON.
    Text(Bytes),
    /// Any other `data`, as JSON.
    Json(Bytes),
}

impl EventData {
    fn into_bytes(self) -> Bytes {
        match self {
            EventData::Binary(bytes) | EventData::Text(bytes) | EventData::Json(bytes) => bytes,
        }
    }
}

/// An event's data from its `data` and `data_base64` members; `None` if it has neither.
fn json_data(
    data: Option<Json>,
    data_base64: Option<Json>,
    content_type: Option<&str>,
) -> Result<Option<EventData>, String> {
    Ok(Some(match (data, data_base64) {
        (Some(_), Some(_)) => return Err("an event has either data or data_base64, not both".to_string()),
        (None, Some(Json::String(encoded))) => EventData::Binary(Bytes::from(
            BASE64.decode(encoded).map_err(|error| format!("data_base64: {error}"))?,
        )),
        (None, Some(_)) => return Err("data_base64 must be a string".to_string()),
        (Some(Json::String(text)), None) if !is_json(content_type) => EventData::Text(Bytes::from(text)),
        (Some(value), None) => EventData::Json(Bytes::from(value.to_string())),
        (None, None) => return Ok(None),
    }))
}

/// Checks that an attribute name is lower-case letters and digits, within the length limit.
fn check_attribute_name(name: &str) -> Result<(), BindingError> {
    let valid = !name.is_empty()
        && name.len() <= ATTRIBUTE_NAME_BYTES_MAX
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    if valid {
        return Ok(());
    }
    Err(BindingError(format!(
        "CloudEvents attribute name {name:?} must be 1 to {ATTRIBUTE_NAME_BYTES_MAX} lower-case letters or digits"
    )))
}

/// Checks the required attributes among `ce_*` headers; `at` prefixes the error.
fn check_required(attributes: &[(String, Bytes)], at: &str) -> Result<(), BindingError> {
    let lookup = |wanted: &str| {
        attributes
            .iter()
            .find(|(name, _)| name.strip_prefix(KAFKA_HEADER_PREFIX) == Some(wanted))
            .map(|(_, value)| value.as_ref())
    };
    for name in REQUIRED_ATTRIBUTES {
        match lookup(name) {
            None => return Err(BindingError(format!("{at}missing required CloudEvents attribute {name:?}"))),
            Some([]) => return Err(BindingError(format!("{at}CloudEvents attribute {name:?} is empty"))),
            Some(_) => {}
        }
    }
    if lookup("specversion") != Some(SPEC_VERSION.as_bytes()) {
        return Err(BindingError(format!(
            "{at}only CloudEvents specversion \"{SPEC_VERSION}\" is supported"
        )));
    }
    Ok(())
}

/// The required attributes first, so records look alike, then the rest as the map holds them.
fn object_in_spec_order(mut object: Map<String, Json>) -> Vec<(String, Json)> {
    let mut ordered = Vec::with_capacity(object.len());
    for name in REQUIRED_ATTRIBUTES {
        if let Some(value) = object.remove(name) {
            ordered.push((name.to_string(), value));
        }
    }
    ordered.extend(object);
    ordered
}

/// The media type of a content type, lower-case, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether a content type is JSON: `application/json`, `text/json` or any `+json`.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|kind| {
        let essence = essence(kind);
        essence == JSON_CONTENT_TYPE || essence.ends_with("+json") || essence == "text/json"
    })
}

/// The content type of a record that does not declare one: JSON if it parses as JSON, text if it
/// is UTF-8, bytes otherwise.
fn guess_content_type(value: Option<&[u8]>) -> Option<String> {
    let value = value?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() {
        return Some(JSON_CONTENT_TYPE.to_string());
    }
    if std::str::from_utf8(value).is_ok() {
        return Some("text/plain; charset=utf-8".to_string());
    }
    Some("application/octet-stream".to_string())
}

/// What the HTTP binding leaves unencoded in a header value (3.1.3.2): printable ASCII except
/// space, double quote and percent.
pub fn is_header_safe(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%'
}

/// Percent-encodes (upper-case hex) every byte of `text`'s UTF-8 that `keep` does not keep:
/// [`is_header_safe`] for the HTTP binding's header values; other callers (SAS tokens) pass
/// RFC 3986's unreserved characters.
pub fn percent_encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if keep(byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes `%XX` escapes; `None` if an escape is broken or the result is not UTF-8. Nothing else
/// is special (a `+` stays a `+`), which is what both the CloudEvents HTTP binding and IoT Hub's
/// tokens mean.
pub fn percent_decode(value: &[u8]) -> Option<String> {
    let mut decoded = Vec::with_capacity(value.len());
    let mut index = 0;
    while index < value.len() {
        if value[index] == b'%' {
            let hex = value.get(index + 1..index + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(value[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_percent_encoded_as_the_http_binding_says() {
        assert_eq!(percent_encode("value with space", is_header_safe), "value%20with%20space");
        assert_eq!(percent_encode("\"100%\" é", is_header_safe), "%22100%25%22%20%C3%A9");
        assert_eq!(percent_encode("/a:b+c=d", is_header_safe), "/a:b+c=d");
        let text = "x/y+z=é \"%";
        assert_eq!(percent_decode(percent_encode(text, is_header_safe).as_bytes()).as_deref(), Some(text));
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%2"), None);
        assert_eq!(percent_decode(b"%ff"), None);
    }

    /// An HTTP binary-mode request's headers, through Kafka binary mode and back out as a
    /// webhook's: the attributes arrive as they left.
    #[test]
    fn binary_mode_round_trips_from_http_through_kafka_to_http() {
        let request = [
            ("ce-specversion", &b"1.0"[..]),
            ("ce-id", b"A-1"),
            ("ce-source", b"/pumps/7"),
            ("ce-type", b"reading"),
            ("ce-traceparent", b"00-x%20y"),
            ("host", b"gateway"),
        ];
        let record_headers = kafka_headers_from_http(request);
        let rendered = record_headers.as_ref().map(|headers| {
            headers
                .iter()
                .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value)))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            rendered,
            Ok([
                "ce_specversion=1.0",
                "ce_id=A-1",
                "ce_source=/pumps/7",
                "ce_type=reading",
                "ce_traceparent=00-x y"
            ]
            .map(str::to_string)
            .to_vec())
        );
        let mut headers: Vec<(String, Option<Bytes>)> =
            record_headers.unwrap_or_default().into_iter().map(|(name, value)| (name, Some(value))).collect();
        headers.push((CONTENT_TYPE_HEADER.to_string(), Some(Bytes::from_static(b"text/plain"))));
        let plain = CloudEvent {
            id: "t-0-0".to_string(),
            source: "/tidewater/topics/t".to_string(),
            event_type: "record".to_string(),
            time: None,
            subject: Some("key".to_string()),
            data_content_type: None,
            data_schema: None,
            extensions: vec![("partitionkey".to_string(), "key".to_string())],
            data: None,
        };
        let value = Bytes::from_static(b"71 degrees");
        let webhook = CloudEvent::from_record(&headers, Some(&value), plain).to_binary();
        assert_eq!(
            webhook.headers,
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "A-1"),
                ("ce-source", "/pumps/7"),
                ("ce-type", "reading"),
                ("ce-traceparent", "00-x%20y"),
                ("content-type", "text/plain"),
            ]
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .to_vec()
        );
        assert_eq!(webhook.body, value);
    }
}
