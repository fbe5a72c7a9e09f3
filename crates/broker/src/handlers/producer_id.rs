//! InitProducerId for idempotent producers: a fresh producer id at epoch 0, or, when a producer
//! asks with its current id and epoch (KIP-360, after a sequence error), the same id with the
//! epoch bumped so it can start its sequences again.
//!
//! With a transactional id, the transaction coordinator answers: the id's producer id with a new
//! epoch, which fences any older producer of the same id.
//!
//! Authorization as in Kafka: a transactional producer needs WRITE on its transactional id
//! (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED); an idempotent one IDEMPOTENT_WRITE on the
//! cluster or WRITE on some topic (else CLUSTER_AUTHORIZATION_FAILED).

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use tidewater_kafka::kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use tidewater_kafka::kafka_protocol::messages::ProducerId;

use super::blocking;
use crate::acl::{Access, Operation, ResourceType};
use crate::broker::Broker;

pub(super) async fn init_producer_id(
    broker: Arc<Broker>,
    request: InitProducerIdRequest,
    access: Access,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    let allowed = match &request.transactional_id {
        Some(transactional_id) => {
            access.check(Operation::Write, ResourceType::TransactionalId, transactional_id)
        }
        None if access.allows_some(Operation::Write, ResourceType::Topic) => Ok(()),
        None => access.check_cluster(Operation::IdempotentWrite),
    };
    if let Err(refusal) = allowed {
        return response.with_error_code(refusal.code.code());
    }
    if let Some(transactional_id) = request.transactional_id {
        let timeout_ms = request.transaction_timeout_ms;
        return match blocking(move || broker.init_transactional_producer(&transactional_id.0, timeout_ms))
            .await
        {
            Ok((id, epoch)) => response.with_producer_id(ProducerId(id)).with_producer_epoch(epoch),
            Err(error) => response.with_error_code(error.code()),
        };
    }
    let (current_id, current_epoch) = (request.producer_id.0, request.producer_epoch);
    if current_id >= 0 && (0..i16::MAX - 1).contains(&current_epoch) {
        return response.with_producer_id(ProducerId(current_id)).with_producer_epoch(current_epoch + 1);
    }
    match blocking(move || broker.allocate_producer_id()).await {
        Ok(id) => response.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(error) => response.with_error_code(error.code.code()),
    }
}
