//! A keyed table kept in a one-partition topic: the latest record per key is the current value
//! and a tombstone (null value) deletes the key, as in Kafka Connect's config topic. The trigger
//! registry and the gateway's device registry are both this shape; this module owns the Kafka
//! side of it (create the topic, write a record and wait for it, read to the end, follow live),
//! and callers own what the values mean.
//!
//! It is a compacted topic (`cleanup.policy=compact`, [`TABLE_CONFIGS`]), so its size follows its
//! live keys: the cluster keeps the latest record of each key and drops tombstones after
//! `delete.retention.ms`. One created before tables were compacted is upgraded when it is ensured
//! (`admin::ensure_table_topic`). Its writers never compress (a broker may refuse compressed
//! batches on a compacted topic), and its readers judge "read to the end" by the partition's end
//! (librdkafka's partition EOF), never by the offset of the last record seen: compaction leaves
//! gaps, and the last offsets of a table may hold no record at all (a tombstone past its time, a
//! batch emptied by the cleaner).
//!
//! It works against any Kafka-compatible cluster that offers compaction.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::admin::{ensure_table_topic_on, upgrade_table_topic_on, AdminError, NewTopic};
use crate::config::ClusterConfig;
use crate::logging::QuietContext;

/// How long the follower waits for a record before it looks at `stop` again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long the follower waits before asking again for a topic it could not read.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// The most records the follower applies between two calls of `caught_up`. Records already
/// fetched are applied together, because publishing the table after each one copies it whole
/// each time: a bulk registration of 10,000 devices cost 50 million device copies. The bound
/// keeps a steady stream of writes from holding the table back for long.
const FOLLOW_BATCH_MAX: usize = 10_000;

/// How long a table's active segment takes new records before it rolls (Kafka `segment.ms`):
/// the cleaner never touches the active segment, so this bounds how long superseded records of a
/// busy table wait to be cleaned.
pub const TABLE_SEGMENT_MS: &str = "600000";
/// What a table topic is created with, unless the caller's configs say otherwise.
pub const TABLE_CONFIGS: &[(&str, &str)] = &[("cleanup.policy", "compact"), ("segment.ms", TABLE_SEGMENT_MS)];

/// A one-partition table topic named `name`: [`TABLE_CONFIGS`], with `configs` added or
/// replacing them (a table that also deletes by time passes `cleanup.policy=compact,delete`).
pub fn table_topic(name: &str, configs: &[(&str, &str)]) -> NewTopic {
    let mut merged: Vec<(&str, &str)> = TABLE_CONFIGS
        .iter()
        .filter(|(key, _)| !configs.iter().any(|(given, _)| given == key))
        .copied()
        .collect();
    merged.extend_from_slice(configs);
    NewTopic::new(name, 1, &merged)
}

/// One keyed table topic on a cluster.
#[derive(Debug, Clone)]
pub struct KeyedTopic {
    cluster: ClusterConfig,
    topic: String,
    /// `client.id` and consumer `group.id` prefix, so the cluster's logs say who is reading.
    client_id: String,
    timeout: Duration,
}

impl KeyedTopic {
    pub fn new(
        cluster: ClusterConfig,
        topic: impl Into<String>,
        client_id: impl Into<String>,
        timeout: Duration,
    ) -> KeyedTopic {
        KeyedTopic { cluster, topic: topic.into(), client_id: client_id.into(), timeout }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// Creates the topic as a table ([`table_topic`] with `configs`) unless it exists, and
    /// upgrades one that exists to a compacted table (see `admin::ensure_table_topic`).
    pub async fn ensure(&self, configs: &[(&str, &str)]) -> Result<(), TableError> {
        let topic = table_topic(&self.topic, configs);
        ensure_table_topic_on(&self.cluster, &self.client_id, topic, self.timeout).await.map(drop).map_err(
            |error| {
                TableFailure::Create {
                    topic: self.topic.clone(),
                    bootstrap_servers: self.cluster.bootstrap_servers.clone(),
                    error,
                }
                .into()
            },
        )
    }

    /// Upgrades the topic, if it exists, to a compacted table ([`table_topic`] with `configs`),
    /// best effort (see `admin::upgrade_table_topic`): for a component that reads a table it does
    /// not create.
    pub async fn upgrade(&self, configs: &[(&str, &str)]) {
        upgrade_table_topic_on(
            &self.cluster,
            &self.client_id,
            table_topic(&self.topic, configs),
            self.timeout,
        )
        .await;
    }

    /// Writes `key` = `value` (`None`: a tombstone) and returns once the cluster acknowledged it
    /// with acks=all.
    pub async fn write(&self, key: &str, value: Option<&[u8]>) -> Result<(), TableError> {
        self.write_many(&[(key, value)]).await
    }

    /// Writes every `(key, value)` in order through one producer and returns once the cluster
    /// acknowledged them all with acks=all (the producer is idempotent, so they land in this
    /// order). Many records are queued before the first acknowledgement is awaited: a bulk
    /// import costs a few batches, not a producer and a round trip per record.
    pub async fn write_many(&self, records: &[(&str, Option<&[u8]>)]) -> Result<(), TableError> {
        let producer = self
            .cluster
            .table_producer(&self.client_id)
            .map_err(|error| TableFailure::Client { what: "producer", error })?;
        let failed = |error: KafkaError| TableFailure::Write {
            topic: self.topic.clone(),
            bootstrap_servers: self.cluster.bootstrap_servers.clone(),
            error,
        };
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, value) in records {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).key(*key);
            if let Some(value) = value {
                record = record.payload(*value);
            }
            // `send` waits (up to the timeout) for room when librdkafka's queue is full, so a
            // write larger than the queue still goes through.
            let delivery = producer.send_result(record);
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    for delivery in deliveries.drain(..) {
                        await_delivery(delivery).await.map_err(failed)?;
                    }
                    producer.send_result(record).map_err(|(error, _)| failed(error))?
                }
                Err((error, _)) => return Err(failed(error).into()),
            };
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            await_delivery(delivery).await.map_err(failed)?;
        }
        Ok(())
    }

    /// Reads the topic from the beginning to its current end, calling `each` with every
    /// record's key and value in offset order.
    pub fn read_to_end(&self, mut each: impl FnMut(Option<&[u8]>, Option<&[u8]>)) -> Result<(), TableError> {
        let topic = &self.topic;
        let consumer = self.assigned_consumer()?;
        let (low, high) =
            consumer.fetch_watermarks(topic, 0, self.timeout).map_err(|error| TableFailure::Unreachable {
                topic: topic.clone(),
                bootstrap_servers: self.cluster.bootstrap_servers.clone(),
                error,
            })?;
        let deadline = std::time::Instant::now() + self.timeout;
        let mut next = low;
        while next < high {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if remaining.is_zero() {
                return Err(TableFailure::TimedOut {
                    topic: topic.clone(),
                    offset: next,
                    high_watermark: high,
                }
                .into());
            }
            match consumer.poll(remaining.min(FOLLOW_POLL)) {
                Some(Ok(message)) => {
                    next = message.offset() + 1;
                    each(message.key(), message.payload());
                }
                // The fetch reached the partition's end, at or past `high`: the offsets between
                // the last record seen and `high` hold no record (see the module docs).
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(error)) => return Err(TableFailure::Read { topic: topic.clone(), error }.into()),
                None => {}
            }
        }
        Ok(())
    }

    /// Follows the topic on a thread of its own until `stop` turns true. `apply` sees every
    /// record in order; `caught_up` is called after each batch of records (those already
    /// fetched, at most [`FOLLOW_BATCH_MAX`]) once everything that existed when following began
    /// has been read (and once at the start if the topic was empty), so a caller never
    /// publishes a prefix of the table as if it were the whole. Join the returned
    /// thread after `stop` to know its consumer has left the cluster.
    pub fn follow(
        &self,
        thread_name: &str,
        stop: tokio::sync::watch::Receiver<bool>,
        mut apply: impl FnMut(Option<&[u8]>, Option<&[u8]>) + Send + 'static,
        mut caught_up: impl FnMut() + Send + 'static,
    ) -> Result<std::thread::JoinHandle<()>, TableError> {
        let consumer = self.assigned_consumer()?;
        let topic = self.topic.clone();
        let timeout = self.timeout;
        std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || {
                let (low, high) = loop {
                    match consumer.fetch_watermarks(&topic, 0, timeout) {
                        Ok(watermarks) => break watermarks,
                        Err(error) => {
                            tracing::debug!(%error, "reading {topic}; retrying");
                            if *stop.borrow() {
                                return;
                            }
                            std::thread::sleep(FOLLOW_RETRY);
                        }
                    }
                };
                let mut is_caught_up = low >= high;
                if is_caught_up {
                    caught_up();
                }
                while !*stop.borrow() {
                    // Wait for one record, then take those already fetched without waiting.
                    let mut n_applied = 0;
                    // Whether the partition's end was reached in this round for the first time,
                    // which publishes what earlier rounds applied even if this one applied nothing.
                    let mut reached_end = false;
                    let mut next = consumer.poll(FOLLOW_POLL);
                    while let Some(result) = next {
                        match result {
                            Ok(message) => {
                                apply(message.key(), message.payload());
                                n_applied += 1;
                                if message.offset() + 1 >= high {
                                    is_caught_up = true;
                                }
                            }
                            // The end as of this fetch, at or past `high`, even where the last
                            // offsets hold no record (see the module docs).
                            Err(KafkaError::PartitionEOF(_)) => {
                                reached_end = !is_caught_up;
                                is_caught_up = true;
                            }
                            Err(error) => tracing::debug!(%error, "reading {topic}"),
                        }
                        next =
                            if n_applied < FOLLOW_BATCH_MAX { consumer.poll(Duration::ZERO) } else { None };
                    }
                    if is_caught_up && (n_applied > 0 || reached_end) {
                        caught_up();
                    }
                }
            })
            .map_err(|error| TableFailure::Thread { thread_name: thread_name.to_string(), error }.into())
    }

    /// A consumer reading partition 0 from the beginning, by assignment: no group membership,
    /// no committed offsets.
    fn assigned_consumer(&self) -> Result<BaseConsumer<QuietContext>, TableError> {
        let group_id = format!("{}-reader", self.client_id);
        let consumer: BaseConsumer<QuietContext> = self
            .cluster
            .consumer_config(&[
                ("client.id", &self.client_id),
                ("group.id", &group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                // "Read to the end" is judged by the end of the partition (see the module docs).
                ("enable.partition.eof", "true"),
            ])
            .create_with_context(QuietContext::default())
            .map_err(|error| TableFailure::Client { what: "consumer", error })?;
        let assigning = |error| TableFailure::Assign { topic: self.topic.clone(), error };
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, 0, Offset::Beginning).map_err(assigning)?;
        consumer.assign(&assignment).map_err(assigning)?;
        Ok(consumer)
    }
}

/// Waits for one delivery report.
async fn await_delivery(delivery: rdkafka::producer::DeliveryFuture) -> Result<(), KafkaError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error),
        // The producer is alive until every report was awaited, so this means it was purged.
        Err(_canceled) => Err(KafkaError::Canceled),
    }
}

/// Why a keyed table could not be created, written or read (boxed: errors travel up through
/// every caller, and the failure with its names and librdkafka's error is large).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TableError(Box<TableFailure>);

impl TableError {
    pub fn failure(&self) -> &TableFailure {
        &self.0
    }
}

impl From<TableFailure> for TableError {
    fn from(failure: TableFailure) -> TableError {
        TableError(Box::new(failure))
    }
}

/// What failed, naming the topic (and the cluster, where it was unreachable).
#[derive(Debug, thiserror::Error)]
pub enum TableFailure {
    #[error("creating a {what}: {error}")]
    Client { what: &'static str, error: KafkaError },
    #[error("creating {topic} at {bootstrap_servers}: {error}")]
    Create { topic: String, bootstrap_servers: String, error: AdminError },
    #[error("writing to {topic} at {bootstrap_servers}: {error}")]
    Write { topic: String, bootstrap_servers: String, error: KafkaError },
    #[error("assigning {topic}: {error}")]
    Assign { topic: String, error: KafkaError },
    #[error("reading {topic} at {bootstrap_servers}: {error} (is the cluster up?)")]
    Unreachable { topic: String, bootstrap_servers: String, error: KafkaError },
    #[error("reading {topic}: timed out at offset {offset} of {high_watermark}")]
    TimedOut { topic: String, offset: i64, high_watermark: i64 },
    #[error("reading {topic}: {error}")]
    Read { topic: String, error: KafkaError },
    #[error("starting the {thread_name} thread: {error}")]
    Thread { thread_name: String, error: std::io::Error },
}
