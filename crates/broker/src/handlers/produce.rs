//! Produce: append each partition's batches to its log and answer once they are durable.
//!
//! The data path, in two phases:
//! 1. *Append, in request order.* The handler holds its connection's turn (`Turn`) while it
//!    appends, so a producer's pipelined requests land in the order it sent them, as Kafka
//!    guarantees. Each partition's `records` are copied once (the log rewrites base offsets in
//!    place), validated in full (headers parsed once, CRC checked) before the partition's
//!    producer lock is taken, then checked against idempotent-producer state and appended.
//! 2. *Wait for durability, concurrently.* The turn is released, then, under `fsync = always`,
//!    `Log::wait_durable` blocks until an fsync covers the batches. Requests waiting at the same
//!    time, from this connection or others, share one fsync (group commit). Only then do the high
//!    watermarks move, the fetches waiting on those partitions (and only those) wake and the
//!    producer get its answer. With acks=0 the same happens but nothing is sent back.
//!
//! Authorization comes first, per topic (WRITE), and, for a request carrying transactional
//! batches, on its transactional id (WRITE) for every partition at once, as in Kafka. A topic
//! is auto-created only for a principal that may create it.
//!
//! A transactional batch is appended only to a partition its transaction added
//! (AddPartitionsToTxn) and while that transaction is ongoing under the batch's producer id and
//! epoch (KIP-890 part 1); otherwise INVALID_TXN_STATE. Without it, a batch that outlived its
//! transaction (a producer's late retry after an abort) would open a transaction no coordinator
//! knows, holding the last stable offset until the partition's timeout.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::produce_request::ProduceRequest;
use tidewater_kafka::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use tidewater_kafka::kafka_protocol::messages::ResponseKind;
use tidewater_kafka::{Reply, ResponseError, Turn};
use tidewater_log::{batch, FsyncPolicy};

use super::{blocking, str_bytes};
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::{ApiError, Broker};
use crate::error::log_error_code;
use crate::partition::{AppendOutcome, Partition};

pub(super) async fn handle(
    broker: Arc<Broker>,
    request: ProduceRequest,
    version: i16,
    mut turn: Turn,
    access: Access,
) -> Reply {
    turn.wait().await;
    let acks = request.acks;
    let responses = {
        let broker = broker.clone();
        blocking(move || {
            let now = broker.now_ms();
            let staged = append_all(&broker, request, turn, &access, now);
            staged
                .into_iter()
                .map(|(name, partitions)| {
                    let partition_responses = partitions
                        .into_iter()
                        .map(|(index, staged)| {
                            let durable = staged.and_then(|staged| make_durable(staged, now));
                            partition_response(index, durable, version)
                        })
                        .collect();
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(partition_responses)
                })
                .collect::<Vec<_>>()
        })
        .await
    };
    if acks == 0 {
        return Reply::NoResponse;
    }
    Reply::Response(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
}

type Staged = Result<(Arc<Partition>, AppendOutcome), ApiError>;

/// Phase 1: every partition's append, in order, while this connection's turn is held.
fn append_all(
    broker: &Broker,
    request: ProduceRequest,
    turn: Turn,
    access: &Access,
    now: i64,
) -> Vec<(tidewater_kafka::kafka_protocol::messages::TopicName, Vec<(i32, Staged)>)> {
    let acks = request.acks;
    let transactional_refusal = transactional_refusal(&request, access);
    let transactional_id = request.transactional_id.as_ref().map(|id| id.to_string());
    let staged = request
        .topic_data
        .into_iter()
        .map(|topic_data| {
            let name = topic_data.name.0.to_string();
            let allowed = match &transactional_refusal {
                Some(refusal) => Err(refusal.clone()),
                None => access.check(Operation::Write, ResourceType::Topic, &name),
            };
            let partitions = topic_data
                .partition_data
                .into_iter()
                .map(|partition_data| {
                    let index = partition_data.index;
                    if !matches!(acks, -1..=1) {
                        let message = format!("acks must be -1, 0 or 1, not {acks}");
                        return (index, Err(ApiError::new(ResponseError::InvalidRequiredAcks, message)));
                    }
                    let records = partition_data.records.unwrap_or_default();
                    let staged = allowed
                        .clone()
                        .and_then(|()| {
                            check_in_transaction(broker, transactional_id.as_deref(), &name, index, &records)
                        })
                        .and_then(|()| append_one(broker, access, &name, index, &records, now));
                    (index, staged)
                })
                .collect();
            (topic_data.name, partitions)
        })
        .collect();
    drop(turn);
    staged
}

/// Why a request carrying transactional batches may not write them, if it may not: Kafka's
/// check (on the first batch of each partition) that the request's transactional id exists and
/// may be written.
fn transactional_refusal(request: &ProduceRequest, access: &Access) -> Option<ApiError> {
    let transactional = request.topic_data.iter().flat_map(|topic| &topic.partition_data).any(|partition| {
        partition.records.as_ref().is_some_and(|records| {
            batch::parse_header(records, batch::BATCH_BYTES_HARD_MAX)
                .is_ok_and(|header| header.is_transactional())
        })
    });
    if !transactional {
        return None;
    }
    match &request.transactional_id {
        Some(id) => access.check(Operation::Write, ResourceType::TransactionalId, id).err(),
        // No id, nothing to authorize: Kafka refuses such a request outright; the ACLs refuse
        // it here, where they apply (off, or for a superuser, it is appended as before).
        None if access.bound_by_acls() => Some(ApiError::new(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactional batches need the request's transactional id",
        )),
        None => None,
    }
}

/// KIP-890 part 1: a transactional batch goes only to a partition its ongoing transaction added.
/// Requests without a transactional id are left to `transactional_refusal` and, past it, to the
/// partition's producer state, as before.
fn check_in_transaction(
    broker: &Broker,
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: &[u8],
) -> Result<(), ApiError> {
    let Some(transactional_id) = transactional_id else { return Ok(()) };
    let Ok(header) = batch::parse_header(records, batch::BATCH_BYTES_HARD_MAX) else { return Ok(()) };
    if !header.is_transactional() {
        return Ok(());
    }
    let transactions = broker.lock_transactions();
    let metadata = transactions.get(transactional_id);
    if let Some(metadata) = metadata.filter(|metadata| metadata.producer_id == header.producer_id) {
        // A zombie (an older epoch of this producer) is told what the partition tells it, as
        // Kafka's produce path does: INVALID_PRODUCER_EPOCH, which clients take as fatal fencing.
        if header.producer_epoch < metadata.producer_epoch {
            return Err(ApiError::new(
                ResponseError::InvalidProducerEpoch,
                format!(
                    "producer {} epoch {} of {transactional_id} is fenced by epoch {}",
                    header.producer_id, header.producer_epoch, metadata.producer_epoch
                ),
            ));
        }
    }
    let added = metadata.is_some_and(|metadata| {
        metadata.status == crate::transactions::TxnStatus::Ongoing
            && metadata.producer_id == header.producer_id
            && metadata.producer_epoch == header.producer_epoch
            && metadata.partitions.contains(&(topic.to_string(), partition))
    });
    if added {
        return Ok(());
    }
    Err(ApiError::new(
        ResponseError::InvalidTxnState,
        format!(
            "{topic}-{partition} is not in an ongoing transaction of {transactional_id} (producer {} epoch {}): AddPartitionsToTxn first",
            header.producer_id, header.producer_epoch
        ),
    ))
}

fn append_one(
    broker: &Broker,
    access: &Access,
    topic: &str,
    partition: i32,
    records: &[u8],
    now: i64,
) -> Staged {
    let topic = broker.topic_or_create(topic, access.may_create_topic(topic))?;
    let partition =
        usize::try_from(partition).ok().and_then(|index| topic.partitions.get(index)).cloned().ok_or_else(
            || {
                ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("{}-{partition} does not exist", topic.name),
                )
            },
        )?;
    let mut records = records.to_vec();
    let outcome = partition.append(&mut records, now)?;
    if let AppendOutcome::Appended(appended) = &outcome {
        topic.metrics.records_produced.add((appended.next_offset - appended.base_offset) as u64);
        topic.metrics.bytes_produced.add(records.len() as u64);
    }
    Ok((partition, outcome))
}

/// What a partition's answer says of a durable append: base offset, log start offset, and the
/// time the broker stamped the records with (-1 unless the topic uses LogAppendTime).
type Durable = (i64, i64, i64);

/// Phase 2: waits until the batch (or, for a duplicate, the original) is on disk.
fn make_durable(
    (partition, outcome): (Arc<Partition>, AppendOutcome),
    now: i64,
) -> Result<Durable, ApiError> {
    let log = &partition.log;
    let log_append_time =
        if log.config().message_timestamp_type == tidewater_log::TimestampType::LogAppendTime {
            now
        } else {
            -1
        };
    let (base_offset, durable_target, log_append_time) = match outcome {
        AppendOutcome::Appended(appended) => (appended.base_offset, appended.next_offset, log_append_time),
        // The original may still be waiting for its fsync; durable offsets fall on batch
        // boundaries, so passing its base offset means the whole batch is on disk. Its stamp is
        // the original's, which is not at hand: -1.
        AppendOutcome::Duplicate { base_offset } => (base_offset, base_offset + 1, -1),
    };
    if log.config().fsync == FsyncPolicy::Always {
        let durable = log.wait_durable(durable_target);
        partition.fetch_waiters.wake_all();
        durable.map_err(|error| ApiError::new(log_error_code(&error), error.to_string()))?;
    } else {
        partition.fetch_waiters.wake_all();
    }
    Ok((base_offset, log.log_start_offset(), log_append_time))
}

fn partition_response(
    index: i32,
    result: Result<Durable, ApiError>,
    version: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1);
    match result {
        Ok((base_offset, log_start_offset, log_append_time)) => response
            .with_base_offset(base_offset)
            .with_log_start_offset(log_start_offset)
            .with_log_append_time_ms(log_append_time),
        Err(error) => response
            .with_error_code(error.code.code())
            .with_base_offset(-1)
            .with_error_message((version >= 8).then(|| str_bytes(error.message))),
    }
}
