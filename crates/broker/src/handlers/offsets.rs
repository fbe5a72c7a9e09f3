//! ListOffsets (earliest, latest, by timestamp, max timestamp) and OffsetForLeaderEpoch.
//!
//! Both need DESCRIBE on each topic (OffsetForLeaderEpoch also accepts CLUSTER_ACTION on the
//! cluster, what Kafka's followers have); a topic that may not be described answers
//! TOPIC_AUTHORIZATION_FAILED in each of its partitions.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use tidewater_kafka::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use tidewater_kafka::kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use tidewater_kafka::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use tidewater_kafka::ResponseError;

use super::blocking;
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::{ApiError, Broker};
use crate::error::log_error_code;

/// Kafka's special timestamps in ListOffsets.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// Kafka's isolation level for read_committed.
const READ_COMMITTED: i8 = 1;

pub(super) async fn list_offsets(
    broker: Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
    access: Access,
) -> ListOffsetsResponse {
    blocking(move || {
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let allowed = access.check(Operation::Describe, ResourceType::Topic, &topic.name);
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let response = ListOffsetsPartitionResponse::default()
                            .with_partition_index(partition.partition_index);
                        let read_committed = request.isolation_level == READ_COMMITTED;
                        let found = allowed.clone().and_then(|()| {
                            lookup(
                                &broker,
                                &topic.name.0,
                                partition.partition_index,
                                partition.timestamp,
                                read_committed,
                            )
                        });
                        match found {
                            Ok((offset, timestamp)) => {
                                let response = response.with_offset(offset).with_timestamp(timestamp);
                                if version >= 4 && offset >= 0 {
                                    response.with_leader_epoch(0)
                                } else {
                                    response
                                }
                            }
                            Err(error) => {
                                response.with_error_code(error.code.code()).with_offset(-1).with_timestamp(-1)
                            }
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    })
    .await
}

/// The offset and timestamp ListOffsets answers for one partition; (-1, -1) when no record
/// matches a timestamp.
fn lookup(
    broker: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64), ApiError> {
    let partition = broker.partition(topic, partition)?;
    let log = &partition.log;
    // "Latest" is as far as the isolation level may read.
    let high_watermark = broker.high_watermark(log);
    let high_watermark =
        if read_committed { partition.last_stable_offset(high_watermark) } else { high_watermark };
    let log_error = |error: tidewater_log::LogError| ApiError::new(log_error_code(&error), error.to_string());
    Ok(match timestamp {
        LATEST_TIMESTAMP => (high_watermark, -1),
        EARLIEST_TIMESTAMP => (log.log_start_offset(), -1),
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some((max_timestamp, offset)) if offset < high_watermark => (offset, max_timestamp),
            _ => (-1, -1),
        },
        timestamp if timestamp >= 0 => match log.offset_for_timestamp(timestamp).map_err(log_error)? {
            Some((offset, found)) if offset < high_watermark => (offset, found),
            _ => (-1, -1),
        },
        other => {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("unsupported ListOffsets timestamp {other}"),
            ))
        }
    })
}

/// Tidewater has one leader epoch, 0, so the end offset of epoch 0 is the log end offset; a
/// client asking about a later epoch gets the "undefined" answer, as from Kafka.
pub(super) fn offset_for_leader_epoch(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
    access: &Access,
) -> OffsetForLeaderEpochResponse {
    let every_topic = access.allows_cluster(Operation::ClusterAction);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let allowed = if every_topic {
                Ok(())
            } else {
                access.check(Operation::Describe, ResourceType::Topic, &topic.topic)
            };
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let response = EpochEndOffset::default().with_partition(partition.partition);
                    let found =
                        allowed.clone().and_then(|()| broker.partition(&topic.topic.0, partition.partition));
                    let log = match found {
                        Ok(partition) => partition.log.clone(),
                        Err(error) => {
                            return response
                                .with_error_code(error.code.code())
                                .with_leader_epoch(-1)
                                .with_end_offset(-1)
                        }
                    };
                    if partition.current_leader_epoch > 0 {
                        return response
                            .with_error_code(ResponseError::UnknownLeaderEpoch.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                    }
                    if partition.leader_epoch > 0 {
                        response.with_leader_epoch(-1).with_end_offset(-1)
                    } else {
                        response.with_leader_epoch(0).with_end_offset(log.end_offset())
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(topic.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
