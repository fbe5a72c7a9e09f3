//! What a record means to a trigger's webhook: the CloudEvent 1.0 it carries (the bindings are
//! `tidewater_client::cloudevents`), or, for a record that is not a CloudEvent already, one made
//! from its position: `id` = `{topic}-{partition}-{offset}` (stable across redeliveries),
//! `source` = `/tidewater/topics/{topic}`, `type` = `com.tidewater.record`, `time` = the record
//! timestamp, `subject` and the `partitionkey` extension = the key.

use tidewater_client::cloudevents::CloudEvent;

use crate::event::Event;

/// The `type` given to records that are not CloudEvents already.
pub const DEFAULT_TYPE: &str = "com.tidewater.record";

/// The CloudEvent a record represents.
pub fn from_event(event: &Event) -> CloudEvent {
    let plain = CloudEvent {
        id: event.id(),
        source: format!("/tidewater/topics/{}", event.topic),
        event_type: DEFAULT_TYPE.to_string(),
        time: event.timestamp_ms.map(crate::time_format::rfc3339_millis),
        subject: event.key_str().map(str::to_string),
        data_content_type: None,
        data_schema: None,
        extensions: event
            .key_str()
            .map(|key| ("partitionkey".to_string(), key.to_string()))
            .into_iter()
            .collect(),
        data: None,
    };
    CloudEvent::from_record(&event.headers, event.value.as_ref(), plain)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value as Json;
    use tidewater_client::cloudevents::HttpContent;

    use super::*;

    fn header<'a>(content: &'a HttpContent, name: &str) -> Option<&'a str> {
        content.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    #[test]
    fn a_plain_json_record_becomes_a_cloudevent() {
        let event = Event::for_test(2, 41, Some("sensor-7"), r#"{"temperature":71}"#);
        let cloud_event = from_event(&event);
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
        let cloud_event = from_event(&event);
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
        let cloud_event = from_event(&event);
        assert_eq!(cloud_event.id, "x1");
        assert_eq!(cloud_event.extensions, vec![("traceparent".to_string(), "00-abc".to_string())]);
        assert_eq!(cloud_event.data.as_deref(), Some(&br#"{"a":1}"#[..]));
    }

    #[test]
    fn binary_data_travels_as_base64_in_json() {
        let mut event = Event::for_test(0, 1, None, "");
        event.value = Some(Bytes::from_static(&[0xff, 0x00, 0x80]));
        let cloud_event = from_event(&event);
        assert_eq!(cloud_event.data_content_type.as_deref(), Some("application/octet-stream"));
        let batch: Json =
            serde_json::from_slice(&CloudEvent::to_batch(&[cloud_event]).body).unwrap_or_default();
        assert_eq!(batch[0]["data_base64"], "/wCA");
    }
}
