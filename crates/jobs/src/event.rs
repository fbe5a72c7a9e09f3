//! `Event`: one record read from a topic, owned, with the position it was read at.
//!
//! Triggers hand events between the consumer loop and delivery tasks, so an event owns its bytes
//! (`Bytes`, cheap to clone) rather than borrowing librdkafka's message buffer.

use std::sync::Arc;

use bytes::Bytes;

/// One record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (CreateTime or LogAppendTime), if it has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Headers in record order; a header may repeat and may have a null value.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Event {
    /// The value of the first header called `name`, compared case-sensitively as Kafka does.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(key, _)| key == name).and_then(|(_, value)| value.as_deref())
    }

    /// The key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|key| std::str::from_utf8(key).ok())
    }

    /// A stable identity for the record: the same event read again (after a crash or a
    /// rebalance) gets the same id, which is what webhook receivers deduplicate on.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.topic, self.partition, self.offset)
    }

    /// The event's headers as librdkafka's, to copy them onto a record derived from it.
    pub fn owned_headers(&self) -> rdkafka::message::OwnedHeaders {
        let mut headers = rdkafka::message::OwnedHeaders::new_with_capacity(self.headers.len() + 4);
        for (name, value) in &self.headers {
            headers = headers.insert(rdkafka::message::Header { key: name, value: value.as_deref() });
        }
        headers
    }

    /// Converts a message borrowed from librdkafka into an owned event.
    pub fn from_message<M: rdkafka::Message>(message: &M) -> Event {
        use rdkafka::message::Headers;
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_string(), header.value.map(Bytes::copy_from_slice)))
                    .collect()
            })
            .unwrap_or_default();
        Event {
            topic: Arc::from(message.topic()),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(Bytes::copy_from_slice),
            value: message.payload().map(Bytes::copy_from_slice),
            headers,
        }
    }

    /// A small event for tests.
    #[cfg(test)]
    pub(crate) fn for_test(partition: i32, offset: i64, key: Option<&str>, value: &str) -> Event {
        Event {
            topic: Arc::from("events"),
            partition,
            offset,
            timestamp_ms: Some(1_700_000_000_000),
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Vec::new(),
        }
    }
}
