//! Produce: append each partition's batches to its log and answer once they are durable.
//!
//! The data path: the request's `records` for a partition are copied once (the log rewrites the
//! base offset in place), validated and appended by `Log::append`, then, under `fsync = always`,
//! `Log::wait_durable` blocks until an fsync covers them; concurrent producers share that fsync.
//! Only then does the high watermark move, fetchers wake, and the producer get its answer. With
//! acks=0 the same happens but nothing is sent back.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::produce_request::ProduceRequest;
use tidewater_kafka::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use tidewater_kafka::kafka_protocol::messages::ResponseKind;
use tidewater_kafka::{Reply, ResponseError};
use tidewater_log::FsyncPolicy;

use super::str_bytes;
use crate::broker::{ApiError, Broker};
use crate::error::log_error_code;

pub(super) async fn handle(broker: Arc<Broker>, request: ProduceRequest, version: i16) -> Reply {
    let acks = request.acks;
    let mut pending = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let mut partitions = Vec::new();
        for partition_data in topic_data.partition_data {
            let index = partition_data.index;
            let broker = broker.clone();
            let name = name.clone();
            let result = if matches!(acks, -1..=1) {
                let records = partition_data.records.unwrap_or_default();
                tokio::task::spawn_blocking(move || append(&broker, &name, index, &records))
            } else {
                let error = ApiError::new(
                    ResponseError::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, not {acks}"),
                );
                tokio::task::spawn_blocking(move || Err(error))
            };
            partitions.push((index, result));
        }
        pending.push((topic_data.name, partitions));
    }
    let mut responses = Vec::new();
    for (name, partitions) in pending {
        let mut partition_responses = Vec::new();
        for (index, result) in partitions {
            let result = match result.await {
                Ok(result) => result,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => Err(ApiError::new(ResponseError::UnknownServerError, error.to_string())),
            };
            let response = PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1);
            partition_responses.push(match result {
                Ok((base_offset, log_start_offset)) => {
                    response.with_base_offset(base_offset).with_log_start_offset(log_start_offset)
                }
                Err(error) => response
                    .with_error_code(error.code.code())
                    .with_base_offset(-1)
                    .with_error_message((version >= 8).then(|| str_bytes(error.message))),
            });
        }
        responses.push(
            TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses),
        );
    }
    broker.data_arrived.notify_waiters();
    if acks == 0 {
        return Reply::NoResponse;
    }
    Reply::Response(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
}

/// Appends one partition's batches; returns the base offset and the log start offset.
fn append(broker: &Broker, topic: &str, partition: i32, records: &[u8]) -> Result<(i64, i64), ApiError> {
    let topic = broker.topic_or_create(topic, true)?;
    let log =
        usize::try_from(partition).ok().and_then(|index| topic.partitions.get(index)).ok_or_else(|| {
            ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("{}-{partition} does not exist", topic.name),
            )
        })?;
    let log_error = |error: tidewater_log::LogError| ApiError::new(log_error_code(&error), error.to_string());
    let mut records = records.to_vec();
    let appended = log.append(&mut records).map_err(log_error)?;
    if log.config().fsync == FsyncPolicy::Always {
        log.wait_durable(appended.next_offset).map_err(log_error)?;
    }
    Ok((appended.base_offset, log.log_start_offset()))
}
