//! InitProducerId for idempotent producers: a fresh producer id at epoch 0, or, when a producer
//! asks with its current id and epoch (KIP-360, after a sequence error), the same id with the
//! epoch bumped so it can start its sequences again.
//!
//! Transactional producers (a transactional id) are refused until the transaction coordinator
//! exists.

use std::sync::Arc;

use tidewater_kafka::kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use tidewater_kafka::kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use tidewater_kafka::kafka_protocol::messages::ProducerId;
use tidewater_kafka::ResponseError;

use super::blocking;
use crate::broker::Broker;

pub(super) async fn init_producer_id(
    broker: Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(transactional_id) = &request.transactional_id {
        tracing::warn!(transactional_id = %transactional_id.0.as_str(), "refused a transactional producer: transactions are not supported yet");
        return response.with_error_code(ResponseError::InvalidRequest.code());
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
