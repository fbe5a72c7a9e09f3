//! Fetch: whole batches from each partition, up to the high watermark, with long polling.
//!
//! A fetch that finds fewer than `min_bytes` waits, up to `max_wait_ms`, for a produce or a
//! transaction marker in one of its own partitions (each partition's `fetch_waiters`; appends
//! elsewhere do not wake it), then reads again. Byte limits follow Kafka: each
//! partition gets at most `partition_max_bytes` and the response at most `max_bytes`, and never
//! more than `FETCH_RESPONSE_BYTES_MAX` whatever the client asks, except that the first batch is
//! always whole even when it is larger, so a consumer can never get stuck behind one big batch
//! (KIP-74). Batches are sent as the log stores them, never re-encoded.
//!
//! Fetch sessions (KIP-227, v7 and later; [`crate::fetch_sessions`]): a full fetch may open one,
//! and an incremental fetch reads every partition of its session but is answered only with those
//! that have something new. read_uncommitted reads up to the high watermark; read_committed up to the
//! last stable offset, with the aborted transactions in the range listed for the client to skip.
//!
//! Where the server sends files (plaintext listeners of `serve --kafka-sendfile true`;
//! `ConnectionInfo::sends_files`) a record set of 4 KiB or more is not read at all: the response gets a
//! placeholder and the file range it stands for, which the protocol server sends with `sendfile`
//! (`tidewater_kafka::file_records`). Through TLS, record sets are read into memory (one copy).
//!
//! Each topic needs READ, checked once when the request arrives (not again on each pass of the
//! long poll), for the session's topics as for the request's; the partitions of a topic that may
//! not be read answer TOPIC_AUTHORIZATION_FAILED.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidewater_kafka::kafka_protocol::messages::fetch_request::FetchRequest;
use tidewater_kafka::kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use tidewater_kafka::kafka_protocol::messages::{ProducerId, TopicName};
use tidewater_kafka::kafka_protocol::protocol::StrBytes;
use tidewater_kafka::{FileRecordSets, FileRecords, ResponseError};
use tidewater_log::FileRange;

use super::blocking;
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::Broker;
use crate::error::log_error_code;
use crate::fetch_sessions::{FetchContext, PartitionFetch, PartitionKey, FINAL_EPOCH};
use crate::fetch_waiters::FetchWaker;

/// The longest a fetch may wait for data, whatever the client asks, so a request cannot park a
/// connection's queue slot forever.
pub const FETCH_MAX_WAIT_MS_MAX: i32 = 60_000;
/// Kafka's isolation level for read_committed.
const READ_COMMITTED: i8 = 1;
/// The most record bytes one fetch response carries, whatever the client asks for: Kafka's
/// broker-side `fetch.max.bytes` default. A response is read into memory before it is sent, so
/// without this a consumer asking for a gigabyte (librdkafka allows `fetch.max.bytes` up to 2 GiB)
/// made the broker hold a gigabyte (measured: 2.1 GB resident for one such consumer, 160 MB
/// otherwise). As always the first batch is sent whole (KIP-74); batches are bounded by
/// `max_batch_bytes`.
pub(crate) const FETCH_RESPONSE_BYTES_MAX: usize = 55 * 1024 * 1024;

pub(super) async fn handle(
    broker: Arc<Broker>,
    request: FetchRequest,
    version: i16,
    access: Access,
    sends_files: bool,
) -> (FetchResponse, FileRecordSets) {
    let (context, topics) = match plan(&broker, &request, version) {
        Ok(plan) => plan,
        Err(code) => {
            broker.fetch_metrics().session_error();
            let response = FetchResponse::default().with_error_code(code.code()).with_session_id(0);
            return (response, FileRecordSets::default());
        }
    };
    broker.fetch_metrics().request(context, request_partitions(&request));
    let fetch = Arc::new(PlannedFetch {
        topics,
        isolation_level: request.isolation_level,
        max_bytes: request.max_bytes,
    });
    let readable: Arc<Vec<bool>> = Arc::new(
        fetch
            .topics
            .iter()
            .map(|topic| access.check(Operation::Read, ResourceType::Topic, &topic.topic).is_ok())
            .collect(),
    );
    let wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_MAX_WAIT_MS_MAX) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    // Woken by appends (and markers) to the partitions this fetch reads, which register it
    // before reading them, so a produce landing between the read and the wait is not missed.
    let waker = FetchWaker::default();
    loop {
        let (mut response, files, bytes, has_error) = {
            let broker = broker.clone();
            let fetch = fetch.clone();
            let readable = readable.clone();
            let waker = waker.clone();
            blocking(move || {
                let mut files = sends_files.then(FileRecordSets::default);
                let (response, bytes, has_error) =
                    read_partitions(&broker, &fetch, version, &readable, &waker, files.as_mut());
                (response, files.unwrap_or_default(), bytes, has_error)
            })
            .await
        };
        let expired = tokio::time::Instant::now() >= deadline;
        if bytes >= min_bytes || has_error || expired || broker.is_shutting_down() {
            count_fetched_bytes(&broker, &response);
            broker.fetch_sessions.finish(context, &mut response);
            return (response, files);
        }
        tokio::select! {
            _ = waker.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The partitions a request names (what a client sends: all of them in a full fetch, the
/// changed ones in an incremental one).
fn request_partitions(request: &FetchRequest) -> usize {
    request.topics.iter().map(|topic| topic.partitions.len()).sum()
}

/// How the fetch is answered and what it reads: the request's partitions, or its session's.
/// A fetch that wants no session (before v7, or epoch -1 naming none, as librdkafka sends) is
/// read straight from the request, without the session cache's keys.
fn plan(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
) -> Result<(FetchContext, Vec<TopicFetch>), ResponseError> {
    let fetch_of = |partition: &tidewater_kafka::kafka_protocol::messages::fetch_request::FetchPartition| {
        PartitionFetch {
            fetch_offset: partition.fetch_offset,
            partition_max_bytes: partition.partition_max_bytes,
            current_leader_epoch: partition.current_leader_epoch,
        }
    };
    if version < 7 || (request.session_id == 0 && request.session_epoch == FINAL_EPOCH) {
        let topics = request
            .topics
            .iter()
            .map(|topic| TopicFetch {
                topic: topic.topic.clone(),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| (partition.partition, fetch_of(partition)))
                    .collect(),
            })
            .collect();
        return Ok((FetchContext::Sessionless, topics));
    }
    let requested: Vec<(PartitionKey, PartitionFetch)> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| ((topic.topic.0.to_string(), partition.partition), fetch_of(partition)))
        })
        .collect();
    let forgotten = request
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(|&partition| (topic.topic.0.to_string(), partition)))
        .collect();
    let plan = broker.fetch_sessions.plan(
        request.session_id,
        request.session_epoch,
        requested,
        forgotten,
        std::time::Instant::now(),
    )?;
    Ok((plan.context, group_by_topic(plan.partitions)))
}

/// A fetch's partitions grouped by topic, in order, with the request's limits.
struct PlannedFetch {
    topics: Vec<TopicFetch>,
    isolation_level: i8,
    max_bytes: i32,
}

struct TopicFetch {
    topic: TopicName,
    partitions: Vec<(i32, PartitionFetch)>,
}

fn group_by_topic(partitions: Vec<(PartitionKey, PartitionFetch)>) -> Vec<TopicFetch> {
    let mut topics: Vec<TopicFetch> = Vec::new();
    for ((topic, partition), fetch) in partitions {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partitions.push((partition, fetch)),
            _ => topics.push(TopicFetch {
                topic: TopicName(StrBytes::from_string(topic)),
                partitions: vec![(partition, fetch)],
            }),
        }
    }
    topics
}

/// Adds what a response carries to its topics' fetched-bytes counters. Counted here, on the
/// response that is sent, because a long poll may read the partitions several times.
fn count_fetched_bytes(broker: &Broker, response: &FetchResponse) {
    for topic in &response.responses {
        let bytes: usize =
            topic.partitions.iter().map(|partition| partition.records.as_ref().map_or(0, Bytes::len)).sum();
        if bytes > 0 {
            if let Some(found) = broker.topic(&topic.topic.0) {
                found.metrics.bytes_fetched.add(bytes as u64);
            }
        }
    }
}

/// One pass over every requested partition. Returns the response, the record bytes in it and
/// whether any partition had an error (which ends the long poll at once, as in Kafka).
/// `readable` says, topic by topic, whether the request may read it. `waker` is registered with
/// each partition before it is read. With `files`, record sets are left in their files where
/// they can be ([`record_set`]).
fn read_partitions(
    broker: &Broker,
    request: &PlannedFetch,
    version: i16,
    readable: &[bool],
    waker: &FetchWaker,
    mut files: Option<&mut FileRecordSets>,
) -> (FetchResponse, usize, bool) {
    let response_budget = response_budget(request.max_bytes);
    let mut total_bytes = 0usize;
    let mut has_error = false;
    let mut responses = Vec::with_capacity(request.topics.len());
    for (topic, readable) in request.topics.iter().zip(readable) {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_index, fetch) in &topic.partitions {
            let mut data = PartitionData::default().with_partition_index(*partition_index);
            if version >= 4 {
                data = data
                    .with_aborted_transactions((request.isolation_level == READ_COMMITTED).then(Vec::new));
            }
            let error = |data: PartitionData, code: ResponseError| {
                data.with_error_code(code.code())
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
            };
            if !readable {
                has_error = true;
                partitions.push(error(data, ResponseError::TopicAuthorizationFailed));
                continue;
            }
            let partition = match broker.partition(&topic.topic.0, *partition_index) {
                Ok(partition) => partition,
                Err(api_error) => {
                    has_error = true;
                    partitions.push(error(data, api_error.code));
                    continue;
                }
            };
            partition.fetch_waiters.register(waker);
            let log = &partition.log;
            if fetch.current_leader_epoch > 0 {
                // We are always at leader epoch 0; a client claiming a newer one knows something
                // we do not.
                has_error = true;
                partitions.push(error(data, ResponseError::UnknownLeaderEpoch));
                continue;
            }
            let high_watermark = broker.high_watermark(log);
            let last_stable_offset = partition.last_stable_offset(high_watermark);
            // read_committed stops at the last stable offset: nothing of a still-open
            // transaction is visible, and aborted ones are listed so the client skips them.
            let read_committed = request.isolation_level == READ_COMMITTED;
            let upper = if read_committed { last_stable_offset } else { high_watermark };
            data = data
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(last_stable_offset)
                .with_log_start_offset(log.log_start_offset());
            let remaining = response_budget.saturating_sub(total_bytes);
            if remaining == 0 && total_bytes > 0 {
                partitions.push(data.with_records(Some(Bytes::new())));
                continue;
            }
            let budget = (fetch.partition_max_bytes.max(0) as usize).min(remaining);
            let read = log.read(fetch.fetch_offset, budget, upper).and_then(|range| match range {
                Some(range) => {
                    let bytes = record_set(&range, files.as_deref_mut()).map_err(|source| {
                        tidewater_log::LogError::Io { op: "read", path: log.dir().to_path_buf(), source }
                    })?;
                    Ok((bytes, range.first_offset, range.next_offset))
                }
                None => Ok((Bytes::new(), fetch.fetch_offset, fetch.fetch_offset)),
            });
            match read {
                Ok((records, first_offset, next_offset)) => {
                    total_bytes += records.len();
                    if read_committed && version >= 4 {
                        let aborted = partition
                            .aborted_between(first_offset, next_offset)
                            .into_iter()
                            .map(|(producer_id, first_offset)| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(producer_id))
                                    .with_first_offset(first_offset)
                            })
                            .collect();
                        data = data.with_aborted_transactions(Some(aborted));
                    }
                    partitions.push(data.with_records(Some(records)));
                }
                Err(log_error) => {
                    has_error = true;
                    if !matches!(log_error, tidewater_log::LogError::OffsetOutOfRange { .. }) {
                        tracing::error!(topic = %topic.topic.0, partition = partition_index, error = %log_error, "fetch failed");
                    }
                    partitions.push(
                        data.with_error_code(log_error_code(&log_error).code())
                            .with_records(Some(Bytes::new())),
                    );
                }
            }
        }
        responses.push(
            FetchableTopicResponse::default().with_topic(topic.topic.clone()).with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_session_id(0).with_responses(responses), total_bytes, has_error)
}

/// The bytes of `range` for the response. With `files` (a connection that sends files), a
/// placeholder for the range, unless the range is small, the response's placeholders are used
/// up, or the file is shorter than the range (truncated behind the broker's back: then the read
/// fails here, and the partition answers with an error, rather than the response being cut
/// short on the wire). Otherwise the bytes, read.
fn record_set(range: &FileRange, files: Option<&mut FileRecordSets>) -> std::io::Result<Bytes> {
    if let Some(files) = files {
        if range.file.metadata()?.len() >= range.position + range.len {
            let records = FileRecords { file: range.file.clone(), position: range.position, len: range.len };
            if let Some(placeholder) = files.placeholder_for(records) {
                return Ok(placeholder);
            }
        }
    }
    range.read_bytes().map(Bytes::from)
}

/// The record bytes a response may carry for a request's `max_bytes` (0 or less: no client limit).
fn response_budget(max_bytes: i32) -> usize {
    match usize::try_from(max_bytes) {
        Ok(max_bytes) if max_bytes > 0 => max_bytes.min(FETCH_RESPONSE_BYTES_MAX),
        _ => FETCH_RESPONSE_BYTES_MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_budget_is_the_clients_up_to_the_brokers_limit() {
        let check =
            |max_bytes: i32, expected: usize| assert_eq!(response_budget(max_bytes), expected, "{max_bytes}");
        check(1, 1);
        check(52_428_800, 52_428_800);
        check(FETCH_RESPONSE_BYTES_MAX as i32, FETCH_RESPONSE_BYTES_MAX);
        check(FETCH_RESPONSE_BYTES_MAX as i32 + 1, FETCH_RESPONSE_BYTES_MAX);
        check(i32::MAX, FETCH_RESPONSE_BYTES_MAX);
        check(0, FETCH_RESPONSE_BYTES_MAX);
        check(-1, FETCH_RESPONSE_BYTES_MAX);
    }
}
