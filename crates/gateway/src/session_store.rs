//! Persistent MQTT sessions in the cluster: the compacted sessions topic
//! (`_tidewater_mqtt_sessions`, key = client id, value = a [`SessionRecord`], a tombstone when
//! the session ends), written from the [`Hub`]'s dirty sessions and followed by every gateway;
//! and the re-reading of the pub/sub topic a restored session needs.
//!
//! # Writing
//!
//! [`SessionStore::flush`] takes the hub's dirty records and queues them on an idempotent acks=all
//! producer, under one lock, so records reach the topic in the order they were taken and the
//! last one of a client is its latest state. The gateway flushes every [`FLUSH_INTERVAL`] (so
//! acknowledgements from subscribers cost a record per session per interval, not per message),
//! and at once, waiting for the cluster, before it answers what must not be lost: a SUBACK or
//! UNSUBACK of a persistent session, and the PUBREC and PUBCOMP of an inbound QoS 2 message (the
//! id awaiting PUBREL is what keeps a resent PUBLISH from being appended twice). A failed write
//! marks its sessions dirty again.
//!
//! # Following
//!
//! [`follow`] reads the topic from its beginning on a thread, handing every record to
//! [`Hub::apply_stored`]; the MQTT listener opens once it has read to the end, so a client
//! reconnecting to a restarted gateway, or to another gateway of the same cluster, finds its
//! session. A record another gateway writes later reaches this one within a fetch: its newer
//! connection takes the session over from here. A CONNECT that asks for its session waits until
//! the follower has read everything written before it ([`SessionStore::catch_up`]: one
//! ListOffsets round trip, then the follower's progress), so a client that left one gateway a
//! moment ago finds its session at the next one as that gateway left it.
//!
//! # Restoring
//!
//! [`SessionStore::replay`] reads the pub/sub partitions over the ranges
//! [`Hub::begin_restore`] gives, with a consumer of its own by assignment, and returns the
//! messages for [`Hub::finish_restore`]. It is bounded by [`REPLAY_RECORDS_MAX`] and the
//! cluster timeout; a replay that fails leaves the record as it was and the client is refused
//! as Server unavailable, so it tries again and nothing is lost.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::producer::Producer as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tidewater_client::{now_ms, ClusterConfig, KeyedTopic, QuietContext};

use crate::append::{AppendError, PendingAppend};
use crate::hub::{Hub, ReplayRanges};
use crate::message::{from_record, Message};
use crate::session_record::{Position, SessionRecord, StoredWill, WILL_KEY_PREFIX};

/// How often the gateway writes the records of sessions that changed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The most pub/sub records one restore re-reads; past it the session is restored with what was
/// read (its queue holds at most `max_queued_messages` anyway).
pub const REPLAY_RECORDS_MAX: usize = 1_000_000;
/// The longest a CONNECT waits for the sessions follower to reach the topic's end.
pub const CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(2);
/// `client.id` of the sessions topic's reader and writer.
const CLIENT_ID: &str = "tidewater-gateway-sessions";

/// Where a gateway keeps its persistent sessions; see the module docs.
pub struct SessionStore {
    inner: Option<Inner>,
}

struct Inner {
    cluster: ClusterConfig,
    producer: FutureProducer<QuietContext>,
    topic: String,
    messages_topic: String,
    timeout: Duration,
    /// Held from taking the dirty records to queuing them, so they are written in that order.
    order: Mutex<()>,
    /// The next offset of the sessions topic the follower will read.
    position: Arc<AtomicI64>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topic = self.inner.as_ref().map(|inner| inner.topic.as_str());
        formatter.debug_struct("SessionStore").field("topic", &topic).finish_non_exhaustive()
    }
}

impl SessionStore {
    /// A store that keeps nothing (the hub then tracks nothing either): sessions live in memory.
    pub fn disabled() -> SessionStore {
        SessionStore { inner: None }
    }

    /// Sessions in `topic` of `cluster`; restores re-read `messages_topic`.
    pub fn new(
        cluster: &ClusterConfig,
        topic: &str,
        messages_topic: &str,
        timeout: Duration,
    ) -> anyhow::Result<SessionStore> {
        let producer = cluster.table_producer(CLIENT_ID).context("creating the sessions producer")?;
        Ok(SessionStore {
            inner: Some(Inner {
                cluster: cluster.clone(),
                producer,
                topic: topic.to_string(),
                messages_topic: messages_topic.to_string(),
                timeout,
                order: Mutex::new(()),
                position: Arc::new(AtomicI64::new(0)),
            }),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues the hub's dirty records (see the module docs); the result resolves once the
    /// cluster has them all.
    pub fn flush(&self, hub: &Arc<Hub>) -> PendingAppend {
        let Some(inner) = &self.inner else { return Box::pin(async { Ok(()) }) };
        let mut deliveries = Vec::new();
        {
            let _order = inner.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (client, record) in hub.take_dirty(Instant::now(), now_ms()) {
                let value = record.as_ref().map(SessionRecord::encode);
                let mut message: FutureRecord<'_, str, [u8]> = FutureRecord::to(&inner.topic).key(&client);
                if let Some(value) = &value {
                    message = message.payload(value);
                }
                match inner.producer.send_result(message) {
                    Ok(delivery) => deliveries.push((client, Some(delivery))),
                    Err((error, _)) => {
                        tracing::warn!(%error, client, "could not queue a session record; will retry");
                        deliveries.push((client, None));
                    }
                }
            }
        }
        let hub = hub.clone();
        let topic = inner.topic.clone();
        Box::pin(async move {
            let mut failed = Vec::new();
            let mut detail = String::new();
            for (client, delivery) in deliveries {
                let outcome = match delivery {
                    Some(delivery) => match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((error, _))) => Err(error.to_string()),
                        Err(_) => Err("the producer was dropped".to_string()),
                    },
                    None => Err("the producer's queue refused it".to_string()),
                };
                if let Err(error) = outcome {
                    detail = error;
                    failed.push(client);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            tracing::warn!(n_sessions = failed.len(), detail, "writing session records failed; will retry");
            hub.retouch(failed);
            Err(AppendError::Failed { topic, detail })
        })
    }

    /// Writes `client`'s will record (`None`: its tombstone); resolves once the cluster has it.
    pub fn write_will(&self, client: &str, will: Option<&StoredWill>) -> PendingAppend {
        let Some(inner) = &self.inner else { return Box::pin(async { Ok(()) }) };
        let key = format!("{WILL_KEY_PREFIX}{client}");
        let value = will.map(StoredWill::encode);
        let mut message: FutureRecord<'_, str, [u8]> = FutureRecord::to(&inner.topic).key(&key);
        if let Some(value) = &value {
            message = message.payload(value);
        }
        let topic = inner.topic.clone();
        let queued = {
            let _order = inner.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            inner.producer.send_result(message).map_err(|(error, _)| error.to_string())
        };
        Box::pin(async move {
            let detail = match queued {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err((error, _))) => error.to_string(),
                    Err(_) => "the producer was dropped".to_string(),
                },
                Err(error) => error,
            };
            Err(AppendError::Failed { topic, detail })
        })
    }

    /// Waits until the follower has read every record written to the sessions topic before
    /// now, so that a CONNECT sees the session as the last gateway left it (another gateway may
    /// have written it a moment ago). Bounded by [`CATCH_UP_WAIT_MAX`]: past it (the cluster is
    /// slow, or compaction left the topic's last offsets empty) the CONNECT goes on with what is
    /// known.
    pub async fn catch_up(&self) {
        let Some(inner) = &self.inner else { return };
        let producer = inner.producer.clone();
        let topic = inner.topic.clone();
        let timeout = inner.timeout.min(CATCH_UP_WAIT_MAX);
        let high =
            tokio::task::spawn_blocking(move || producer.client().fetch_watermarks(&topic, 0, timeout)).await;
        let Ok(Ok((_, high))) = high else {
            tracing::debug!("could not read the end of the sessions topic; going on with what is known");
            return;
        };
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT_MAX;
        while inner.position.load(Ordering::Acquire) < high {
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(high, "the sessions follower did not reach the topic's end in time");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Re-reads the pub/sub topic over `ranges` for a restoring session (see the module docs),
    /// on a blocking thread.
    pub async fn replay(&self, ranges: ReplayRanges) -> anyhow::Result<Vec<(Position, Arc<Message>)>> {
        let Some(inner) = &self.inner else { return Ok(Vec::new()) };
        if ranges.values().all(|(from, until)| from >= until) {
            return Ok(Vec::new());
        }
        let cluster = inner.cluster.clone();
        let topic = inner.messages_topic.clone();
        let timeout = inner.timeout;
        tokio::task::spawn_blocking(move || replay(&cluster, &topic, &ranges, timeout))
            .await
            .context("the replay thread failed")?
    }
}

/// Creates the sessions topic (a compacted table) unless it exists.
pub async fn ensure_topic(cluster: &ClusterConfig, topic: &str, timeout: Duration) -> anyhow::Result<()> {
    Ok(KeyedTopic::new(cluster.clone(), topic, CLIENT_ID, timeout).ensure(&[]).await?)
}

/// Follows the sessions topic on a thread until `stop` (see the module docs); `loaded` is sent
/// once it has been read to where it ended at start. Join the thread after `stop`.
pub fn follow(
    store: &SessionStore,
    hub: Arc<Hub>,
    stop: tokio::sync::watch::Receiver<bool>,
    loaded: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(inner) = &store.inner else { return Ok(None) };
    let consumer: BaseConsumer<QuietContext> = inner
        .cluster
        .consumer_config(&[
            ("client.id", CLIENT_ID),
            ("group.id", "tidewater-gateway-sessions-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            // A record another gateway wrote should reach this one before its client does.
            ("fetch.wait.max.ms", "20"),
            ("fetch.error.backoff.ms", "50"),
            // "Read to the end" is the partition's end: compaction leaves gaps.
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the sessions reader")?;
    let topic = inner.topic.clone();
    let timeout = inner.timeout;
    let position = inner.position.clone();
    let thread = std::thread::Builder::new()
        .name("mqtt-sessions".into())
        .spawn(move || {
            let high = loop {
                let assigned = TopicPartitionList::from_topic_map(
                    &[((topic.clone(), 0), Offset::Beginning)].into_iter().collect(),
                )
                .and_then(|assignment| consumer.assign(&assignment))
                .and_then(|()| consumer.fetch_watermarks(&topic, 0, timeout));
                match assigned {
                    Ok((_, high)) => break high,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read {topic} yet; retrying");
                        if *stop.borrow() {
                            return;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            };
            let mut loaded = Some(loaded);
            if high == 0 {
                let _ = loaded.take().map(|loaded| loaded.send(()));
            }
            while !*stop.borrow() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(record)) => {
                        apply(&hub, record.key(), record.payload());
                        position.store(record.offset() + 1, Ordering::Release);
                        if record.offset() + 1 >= high {
                            let _ = loaded.take().map(|loaded| loaded.send(()));
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        let _ = loaded.take().map(|loaded| loaded.send(()));
                    }
                    Some(Err(error)) => tracing::debug!(%error, "reading {topic}"),
                    None => {}
                }
            }
        })
        .context("starting the mqtt-sessions thread")?;
    Ok(Some(thread))
}

/// Hands one record of the sessions topic to the hub.
fn apply(hub: &Hub, key: Option<&[u8]>, value: Option<&[u8]>) {
    let Some(client) = key.and_then(|key| std::str::from_utf8(key).ok()) else { return };
    if let Some(client) = client.strip_prefix(WILL_KEY_PREFIX) {
        match value.map(StoredWill::decode) {
            None => hub.apply_will(client, None),
            Some(Ok(will)) => hub.apply_will(client, Some(will)),
            Some(Err(error)) => tracing::warn!(client, error, "a will record does not decode; skipped"),
        }
        return;
    }
    let record = match value.map(SessionRecord::decode) {
        None => None,
        Some(Ok(record)) => Some(record),
        Some(Err(error)) => {
            tracing::warn!(client, error, "a session record does not decode; skipped");
            return;
        }
    };
    hub.apply_stored(client, record);
}

/// Reads `topic`'s partitions over `ranges` (from inclusive, until exclusive).
fn replay(
    cluster: &ClusterConfig,
    topic: &str,
    ranges: &ReplayRanges,
    timeout: Duration,
) -> anyhow::Result<Vec<(Position, Arc<Message>)>> {
    let consumer: BaseConsumer<QuietContext> = cluster
        .consumer_config(&[
            ("client.id", CLIENT_ID),
            ("group.id", "tidewater-gateway-session-replay"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Records gone by retention are gone; what is left is read.
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the session replay consumer")?;
    let mut assignment = TopicPartitionList::new();
    let mut open: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    for (&partition, &(from, until)) in ranges {
        if from < until {
            assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
            open.insert(partition, until);
        }
    }
    consumer.assign(&assignment).context("assigning the pub/sub partitions to replay")?;
    let deadline = Instant::now() + timeout;
    let mut replayed = Vec::new();
    let mut n_read = 0usize;
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "re-reading {topic} for a session took longer than {timeout:?}");
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(record)) => {
                let partition = record.partition();
                let Some(&until) = open.get(&partition) else { continue };
                if record.offset() >= until {
                    open.remove(&partition);
                    continue;
                }
                if record.offset() + 1 >= until {
                    open.remove(&partition);
                }
                n_read += 1;
                let headers: Vec<(&str, Option<&[u8]>)> = record
                    .headers()
                    .map(|headers| headers.iter().map(|header| (header.key, header.value)).collect())
                    .unwrap_or_default();
                let timestamp_ms = record.timestamp().to_millis().unwrap_or_else(now_ms);
                if let Some(message) = from_record(headers, record.payload(), None, timestamp_ms, None) {
                    replayed.push(((partition, record.offset()), Arc::new(message)));
                }
                if n_read >= REPLAY_RECORDS_MAX {
                    tracing::warn!(topic, n_read, "a session restore stopped re-reading at its limit");
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => tracing::debug!(%error, "re-reading {topic} for a session"),
            None => {}
        }
    }
    Ok(replayed)
}
