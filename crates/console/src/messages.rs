//! Reading records for the console: `GET /api/topics/{topic}/messages` (a partition from an
//! offset or a time, or its newest records) and `POST /api/topics/{topic}/search` (the newest
//! records with a key). Each request assigns a fresh consumer of its own to the partitions it
//! reads (no group, nothing committed), reads a bounded number of records, and closes it.
//!
//! Limits: at most [`MESSAGES_COUNT_MAX`] records per page, [`SEARCH_SCANNED_MAX`] records
//! scanned per search, [`VALUE_BYTES_SHOWN_MAX`] bytes of a value or header shown, and
//! [`READ_TIMEOUT`] for the whole read. An offset past the high watermark is refused with the
//! watermark in the reason; one below the low watermark starts at the low watermark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use tidewater_client::{ClusterConfig, QuietContext};

use crate::api::{blocking, ApiError, KAFKA_TIMEOUT};
use crate::clients::ConsoleClient;
use crate::topics::partitions_of;

/// The most records one page of messages holds.
pub(crate) const MESSAGES_COUNT_MAX: usize = 500;
/// Records per page when the request does not say.
const MESSAGES_COUNT_DEFAULT: usize = 50;
/// The most records one key search reads, over all partitions (the newest of each).
pub(crate) const SEARCH_SCANNED_MAX: i64 = 20_000;
/// The most matches a key search returns.
const SEARCH_MATCHES_MAX: usize = 200;
/// The most bytes of a value or header value shown; a longer one is cut and says so.
pub(crate) const VALUE_BYTES_SHOWN_MAX: usize = 64 * 1024;
/// How long reading one page or one search may take.
const READ_TIMEOUT: Duration = Duration::from_secs(8);

/// Where a page of messages starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Offset(i64),
    /// The first record at or after this time (Unix ms).
    Timestamp(i64),
    /// The newest records.
    Newest,
}

/// The query string of `GET .../messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrowseQuery {
    partition: i32,
    start: Start,
    count: usize,
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::bad_request(format!("{name}={value:?} is not a number in range")))
}

impl BrowseQuery {
    pub(crate) fn parse(query: &str) -> Result<BrowseQuery, ApiError> {
        let mut parsed = BrowseQuery { partition: 0, start: Start::Newest, count: MESSAGES_COUNT_DEFAULT };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "partition" => parsed.partition = number(name, value)?,
                "offset" => parsed.start = Start::Offset(number(name, value)?),
                "timestamp" => parsed.start = Start::Timestamp(number(name, value)?),
                "count" => parsed.count = number(name, value)?,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {name:?}: messages take partition, offset or timestamp, and count"
                    )))
                }
            }
        }
        if parsed.partition < 0 {
            return Err(ApiError::bad_request(format!("partition {} is negative", parsed.partition)));
        }
        match parsed.start {
            Start::Offset(offset) if offset < 0 => {
                return Err(ApiError::bad_request(format!("offset {offset} is negative")))
            }
            Start::Timestamp(timestamp) if timestamp < 0 => {
                return Err(ApiError::bad_request(format!("timestamp {timestamp} is negative")))
            }
            _ => {}
        }
        if parsed.count == 0 || parsed.count > MESSAGES_COUNT_MAX {
            return Err(ApiError::bad_request(format!(
                "count {} is out of range: 1 to {MESSAGES_COUNT_MAX}",
                parsed.count
            )));
        }
        Ok(parsed)
    }
}

/// The body of `POST .../search`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySearch {
    key: String,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

impl KeySearch {
    pub(crate) fn parse(body: &[u8]) -> Result<KeySearch, ApiError> {
        let search: KeySearch = serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request(format!(
                "malformed JSON body ({error}); expected {{\"key\": \"...\", \"limit\": n}}"
            ))
        })?;
        if search.limit == 0 || search.limit > SEARCH_MATCHES_MAX {
            return Err(ApiError::bad_request(format!(
                "limit {} is out of range: 1 to {SEARCH_MATCHES_MAX}",
                search.limit
            )));
        }
        Ok(search)
    }
}

/// A fresh consumer for one read, by assignment: it joins no group and commits nothing. The
/// `group.id` is a throwaway because librdkafka refuses `assign` without one (as in `tidewater
/// consume`).
fn reader(cluster: &ClusterConfig) -> Result<BaseConsumer<QuietContext>, ApiError> {
    cluster
        .client_config(&[
            ("client.id", "tidewater-console-reader"),
            ("group.id", "tidewater-console-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ])
        .create_with_context(QuietContext::default())
        .map_err(|error| ApiError::unavailable(format!("creating a Kafka consumer: {error}")))
}

fn shown_bytes(bytes: &[u8]) -> serde_json::Value {
    let cut = &bytes[..bytes.len().min(VALUE_BYTES_SHOWN_MAX)];
    match std::str::from_utf8(cut) {
        Ok(text) => serde_json::json!({ "text": text }),
        Err(_) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(cut) }),
    }
}

/// A record as the API shows it: the value as JSON when it parses as JSON, else as text or
/// base64.
fn record_json(message: &BorrowedMessage<'_>) -> serde_json::Value {
    let headers: Vec<serde_json::Value> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    serde_json::json!({
                        "key": header.key,
                        "value": header.value.map(shown_bytes),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let value = message.payload().map(|payload| {
        let parsed = (payload.len() <= VALUE_BYTES_SHOWN_MAX)
            .then(|| serde_json::from_slice::<serde_json::Value>(payload).ok())
            .flatten();
        match parsed {
            Some(json) => serde_json::json!({ "json": json }),
            None => shown_bytes(payload),
        }
    });
    serde_json::json!({
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp_ms": message.timestamp().to_millis(),
        "key": message.key().map(shown_bytes),
        "headers": headers,
        "value": value,
        "value_bytes": message.payload().map_or(0, <[u8]>::len),
        "truncated": message.payload().is_some_and(|payload| payload.len() > VALUE_BYTES_SHOWN_MAX),
    })
}

/// Reads every record of `ranges` (`(partition, from, to)`, `to` exclusive), handing each to
/// `keep`, until all are read or [`READ_TIMEOUT`] passes. Says whether it finished.
fn read_ranges(
    consumer: &BaseConsumer<QuietContext>,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    mut keep: impl FnMut(&BorrowedMessage<'_>),
) -> Result<bool, ApiError> {
    let mut assignment = TopicPartitionList::new();
    let mut left: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    for &(partition, from, to) in ranges.iter().filter(|(_, from, to)| from < to) {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        left.insert(partition, to);
    }
    if left.is_empty() {
        return Ok(true);
    }
    consumer.assign(&assignment).map_err(|error| ApiError::unavailable(format!("assigning: {error}")))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !left.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        match consumer.poll(deadline - now) {
            None => continue,
            Some(Err(error)) => return Err(ApiError::unavailable(format!("reading {topic}: {error}"))),
            Some(Ok(message)) => {
                let partition = message.partition();
                let Some(&to) = left.get(&partition) else { continue };
                if message.offset() < to {
                    keep(&message);
                }
                // A compacted or transactional partition may have no record at `to - 1`.
                if message.offset() + 1 >= to {
                    left.remove(&partition);
                }
            }
        }
    }
    Ok(true)
}

/// The record at `offset` of `topic`/`partition`, or a 404 saying why there is none.
pub(crate) fn read_one(
    client: &ConsoleClient,
    cluster: &ClusterConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<rdkafka::message::OwnedMessage, ApiError> {
    let partitions = partitions_of(client, topic)?;
    if !partitions.contains(&partition) {
        return Err(ApiError::not_found(format!("topic {topic:?} has no partition {partition}")));
    }
    let (low, high) = client
        .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
        .map_err(|error| ApiError::unavailable(format!("watermarks of {topic}/{partition}: {error}")))?;
    if offset < low || offset >= high {
        return Err(ApiError::not_found(format!(
            "no record at offset {offset} of {topic}/{partition} (its records are {low} to {})",
            high - 1
        )));
    }
    let consumer = reader(cluster)?;
    let mut found = None;
    read_ranges(&consumer, topic, &[(partition, offset, offset + 1)], |message| {
        if message.offset() == offset {
            found = Some(message.detach());
        }
    })?;
    found.ok_or_else(|| ApiError::not_found(format!("no record at offset {offset} of {topic}/{partition}")))
}

pub(crate) async fn browse(
    client: Arc<ConsoleClient>,
    cluster: ClusterConfig,
    topic: String,
    query: BrowseQuery,
) -> Result<serde_json::Value, ApiError> {
    blocking(move || {
        let partitions = partitions_of(&client, &topic)?;
        if !partitions.contains(&query.partition) {
            return Err(ApiError::not_found(format!(
                "topic {topic:?} has no partition {} (it has {})",
                query.partition,
                partitions.len()
            )));
        }
        let (low, high) =
            client.fetch_watermarks(&topic, query.partition, KAFKA_TIMEOUT).map_err(|error| {
                ApiError::unavailable(format!("watermarks of {topic}/{}: {error}", query.partition))
            })?;
        let count = query.count as i64;
        let from = match query.start {
            Start::Offset(offset) if offset > high => {
                return Err(ApiError::bad_request(format!(
                    "offset {offset} is past the high watermark {high} of {topic}/{}",
                    query.partition
                )))
            }
            Start::Offset(offset) => offset.max(low),
            Start::Newest => (high - count).max(low),
            Start::Timestamp(timestamp) => {
                let mut wanted = TopicPartitionList::new();
                wanted
                    .add_partition_offset(&topic, query.partition, Offset::Offset(timestamp))
                    .map_err(|error| ApiError::bad_request(error.to_string()))?;
                let found = client.offsets_for_times(wanted, KAFKA_TIMEOUT).map_err(|error| {
                    ApiError::unavailable(format!("offset for time {timestamp}: {error}"))
                })?;
                match found.find_partition(&topic, query.partition).map(|element| element.offset()) {
                    Some(Offset::Offset(offset)) => offset.max(low),
                    // No record at or after that time.
                    _ => high,
                }
            }
        };
        let to = (from.saturating_add(count)).min(high);
        let consumer = reader(&cluster)?;
        let mut records = Vec::new();
        let complete = read_ranges(&consumer, &topic, &[(query.partition, from, to)], |message| {
            records.push(record_json(message));
        })?;
        Ok(serde_json::json!({
            "topic": topic,
            "partition": query.partition,
            "low_watermark": low,
            "high_watermark": high,
            "from_offset": from,
            "complete": complete,
            "records": records,
        }))
    })
    .await
}

pub(crate) async fn search(
    client: Arc<ConsoleClient>,
    cluster: ClusterConfig,
    topic: String,
    search: KeySearch,
) -> Result<serde_json::Value, ApiError> {
    blocking(move || {
        let partitions = partitions_of(&client, &topic)?;
        let per_partition = (SEARCH_SCANNED_MAX / partitions.len().max(1) as i64).max(1);
        let mut ranges = Vec::new();
        for &partition in &partitions {
            let (low, high) = client.fetch_watermarks(&topic, partition, KAFKA_TIMEOUT).map_err(|error| {
                ApiError::unavailable(format!("watermarks of {topic}/{partition}: {error}"))
            })?;
            ranges.push((partition, (high - per_partition).max(low), high));
        }
        let consumer = reader(&cluster)?;
        let key = search.key.as_bytes();
        let mut matches = Vec::new();
        let complete = read_ranges(&consumer, &topic, &ranges, |message| {
            if message.key() == Some(key) {
                let order = (message.timestamp().to_millis().unwrap_or(0), message.offset());
                matches.push((order, record_json(message)));
            }
        })?;
        // Newest first, then the limit.
        matches.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        matches.truncate(search.limit);
        let records: Vec<serde_json::Value> = matches.into_iter().map(|(_, record)| record).collect();
        Ok(serde_json::json!({
            "topic": topic,
            "key": search.key,
            "scanned_per_partition": per_partition,
            "complete": complete,
            "records": records,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{BrowseQuery, KeySearch, Start};

    #[test]
    fn browse_queries_are_checked() {
        assert_eq!(
            BrowseQuery::parse("partition=2&offset=10&count=5").expect("accepted"),
            BrowseQuery { partition: 2, start: Start::Offset(10), count: 5 }
        );
        for bad in [
            "offset=-1",
            "offset=99999999999999999999999",
            "count=0",
            "count=501",
            "partition=-3",
            "offset=abc",
            "timestamp=-5",
            "colour=blue",
        ] {
            assert_eq!(BrowseQuery::parse(bad).expect_err("refused").status, 400, "{bad}");
        }
    }

    #[test]
    fn search_bodies_are_checked() {
        assert_eq!(KeySearch::parse(br#"{"key": "d1"}"#).expect("accepted").limit, 50);
        for bad in
            [&b"{not json"[..], b"[]", br#"{"key": 3}"#, br#"{"key": "a", "limit": 0}"#, br#"{"kee": "a"}"#]
        {
            assert_eq!(KeySearch::parse(bad).expect_err("refused").status, 400);
        }
    }
}
