//! Appending device messages to the cluster. [`Appender`] separates "queued, in this
//! connection's order" (the synchronous [`Appender::append`]) from "durable" (the
//! [`PendingAppend`] it returns), so a connection can queue many messages in order and send each
//! acknowledgement only when its append is durable.
//!
//! [`KafkaAppender`] is an idempotent producer with acks=all: a delivery report means every
//! in-sync replica has the record, and `tidewater serve` (fsync=always) fsyncs before it
//! acknowledges. Idempotence also keeps one connection's records in queue order through
//! librdkafka's retries. Records for the gateway's tables (retained messages, deliveries), which
//! are compacted topics, go through a second such producer that never compresses, whatever
//! compression the user's client properties ask of the others. [`MemoryAppender`] records in
//! memory for tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tidewater_client::{ClusterConfig, QuietContext};

use crate::route::DeviceMessage;

/// Resolves once the append is durable, or failed.
pub type PendingAppend = Pin<Box<dyn Future<Output = Result<(), AppendError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The producer's queue is full; try again shortly (backpressure, not failure).
    #[error("the producer queue is full")]
    QueueFull,
    #[error("appending to {topic}: {detail}")]
    Failed { topic: String, detail: String },
}

/// Where accepted device messages go.
pub trait Appender: Send + Sync + std::fmt::Debug + 'static {
    /// Queues `message` behind everything queued before it and returns what resolves once it is
    /// durable. Never blocks.
    fn append(&self, message: &DeviceMessage) -> Result<PendingAppend, AppendError>;
}

/// Appends to a Kafka-compatible cluster.
pub struct KafkaAppender {
    producer: FutureProducer<QuietContext>,
    /// For `table_topics`: compacted topics, written uncompressed.
    table_producer: FutureProducer<QuietContext>,
    table_topics: Vec<String>,
}

impl std::fmt::Debug for KafkaAppender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("KafkaAppender").finish_non_exhaustive()
    }
}

impl KafkaAppender {
    /// An appender to `cluster`, where `table_topics` are the compacted ones.
    pub fn new(cluster: &ClusterConfig, table_topics: Vec<String>) -> anyhow::Result<KafkaAppender> {
        let producer = cluster
            .reliable_producer("tidewater-gateway")
            .map_err(|error| anyhow::anyhow!("creating the gateway's producer: {error}"))?;
        let table_producer = cluster
            .table_producer("tidewater-gateway-tables")
            .map_err(|error| anyhow::anyhow!("creating the gateway's table producer: {error}"))?;
        Ok(KafkaAppender { producer, table_producer, table_topics })
    }
}

impl Appender for KafkaAppender {
    fn append(&self, message: &DeviceMessage) -> Result<PendingAppend, AppendError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (name, value) in &message.headers {
            headers = headers.insert(Header { key: name, value: Some(value.as_ref()) });
        }
        let record = FutureRecord::to(&message.topic)
            .key(message.key.as_bytes())
            .payload(message.payload.as_ref())
            .headers(headers);
        let topic = message.topic.clone();
        let producer =
            if self.table_topics.contains(&message.topic) { &self.table_producer } else { &self.producer };
        match producer.send_result(record) {
            Ok(delivery) => Ok(Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(AppendError::Failed { topic, detail: error.to_string() }),
                    Err(_canceled) => {
                        Err(AppendError::Failed { topic, detail: "the producer was dropped".to_string() })
                    }
                }
            })),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(AppendError::QueueFull)
            }
            Err((error, _)) => Err(AppendError::Failed { topic, detail: error.to_string() }),
        }
    }
}

/// Keeps appended messages in memory, durable at once; for tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryAppender {
    pub messages: Arc<Mutex<Vec<DeviceMessage>>>,
}

impl MemoryAppender {
    pub fn messages(&self) -> Vec<DeviceMessage> {
        self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Appender for MemoryAppender {
    fn append(&self, message: &DeviceMessage) -> Result<PendingAppend, AppendError> {
        self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(message.clone());
        Ok(Box::pin(async { Ok(()) }))
    }
}
