//! The log follower that feeds the [`Hub`]: what MQTT subscribers and devices receive comes
//! from the cluster, never from another connection directly, so every gateway in front of the
//! same cluster delivers the same messages, and nothing is delivered that is not durable.
//!
//! One consumer, by assignment (no group: every gateway reads everything), reads four topics:
//!
//! | topic | from | becomes |
//! |---|---|---|
//! | pub/sub (`mqtt-messages`) | its end at start | live messages to subscribers |
//! | retained (`_tidewater_mqtt_retained`) | the beginning | the retained table; live once caught up |
//! | commands (`commands`) | the command time-to-live ago | commands waiting for devices |
//! | deliveries (`_tidewater_command_deliveries`) | the same time ago | commands no longer waiting |
//!
//! Reading commands and deliveries from one time-to-live back means a restarted gateway still
//! holds every command that has not expired and was not delivered. The topics are created
//! (one partition) if missing; partitions added later are not followed until a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tidewater_jobs::logging::QuietContext;
use tidewater_jobs::{ClusterConfig, KeyedTopic};

use crate::hub::{devicebound_topic, CommandId, Hub};
use crate::message::{from_record, Message};

/// The topics the gateway's MQTT side reads and writes besides telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubTopics {
    pub messages: String,
    pub retained: String,
    pub commands: String,
    pub deliveries: String,
    /// How long a command waits for its device when its record does not say.
    pub command_ttl: Duration,
}

impl Default for PubSubTopics {
    fn default() -> Self {
        PubSubTopics {
            messages: "mqtt-messages".into(),
            retained: "_tidewater_mqtt_retained".into(),
            commands: "commands".into(),
            deliveries: "_tidewater_command_deliveries".into(),
            command_ttl: Duration::from_secs(3600),
        }
    }
}

/// A delivery record's value: which command was delivered, and until when to remember it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
    pub delivered_at_ms: i64,
    pub expires_at_ms: i64,
}

/// How long the follower waits for a record before it looks at `stop` and sweeps.
const POLL: Duration = Duration::from_millis(100);
/// How often expired sessions and commands are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Creates the topics that do not exist yet: tables (retained, deliveries) keep every record.
pub async fn ensure_topics(
    cluster: &ClusterConfig,
    topics: &PubSubTopics,
    timeout: Duration,
) -> anyhow::Result<()> {
    let keep_forever: &[(&str, &str)] = &[("retention.ms", "-1")];
    for (topic, configs) in [
        (&topics.messages, &[][..]),
        (&topics.retained, keep_forever),
        (&topics.commands, &[][..]),
        (&topics.deliveries, &[][..]),
    ] {
        KeyedTopic::new(cluster.clone(), topic.clone(), "tidewater-gateway", timeout).ensure(configs).await?;
    }
    Ok(())
}

/// Follows the topics on a thread of its own until `stop`; join it after `stop` to know its
/// consumer has left. `ready` is sent once every topic is assigned: from then on, every message
/// appended is delivered, so the MQTT listener waits for it before it accepts clients.
pub fn follow(
    cluster: &ClusterConfig,
    topics: PubSubTopics,
    hub: Arc<Hub>,
    timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer<QuietContext> = cluster
        .client_config(&[
            ("client.id", "tidewater-gateway-fanout"),
            ("group.id", "tidewater-gateway-fanout"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "latest"),
            // Subscribers wait on this consumer: ask the broker to answer as soon as a record is
            // there.
            ("fetch.wait.max.ms", "20"),
            ("fetch.error.backoff.ms", "50"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the gateway's pub/sub consumer")?;
    std::thread::Builder::new()
        .name("mqtt-fanout".into())
        .spawn(move || {
            let started = loop {
                match assign(&consumer, &topics, timeout) {
                    Ok(started) => break started,
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "the MQTT pub/sub follower cannot read its topics yet; retrying");
                        if *stop.borrow() {
                            return;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            };
            let _ = ready.send(());
            run(&consumer, &topics, &hub, started, &stop);
        })
        .context("starting the mqtt-fanout thread")
}

/// Where the retained table ended when following began: records before it are history.
pub type RetainedEnds = HashMap<i32, i64>;

fn partitions(
    consumer: &BaseConsumer<QuietContext>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|entry| entry.name() == topic && entry.error().is_none())
        .flat_map(|entry| entry.partitions().iter().map(|partition| partition.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions yet");
    Ok(partitions)
}

fn assign(
    consumer: &BaseConsumer<QuietContext>,
    topics: &PubSubTopics,
    timeout: Duration,
) -> anyhow::Result<RetainedEnds> {
    let mut assignment = TopicPartitionList::new();
    // The end as of now, not `Offset::End`: that would be looked up at the first fetch, and a
    // message appended in between would reach no one.
    for partition in partitions(consumer, &topics.messages, timeout)? {
        let (_, high) = consumer.fetch_watermarks(&topics.messages, partition, timeout)?;
        assignment.add_partition_offset(&topics.messages, partition, Offset::Offset(high))?;
    }
    let mut retained_ends = RetainedEnds::new();
    for partition in partitions(consumer, &topics.retained, timeout)? {
        let (_, high) = consumer.fetch_watermarks(&topics.retained, partition, timeout)?;
        retained_ends.insert(partition, high);
        assignment.add_partition_offset(&topics.retained, partition, Offset::Beginning)?;
    }
    // Commands and deliveries from one time-to-live ago.
    let since = now_ms() - i64::try_from(topics.command_ttl.as_millis()).unwrap_or(i64::MAX);
    let mut by_time = TopicPartitionList::new();
    for topic in [&topics.commands, &topics.deliveries] {
        for partition in partitions(consumer, topic, timeout)? {
            by_time.add_partition_offset(topic, partition, Offset::Offset(since))?;
        }
    }
    let resolved = consumer.offsets_for_times(by_time, timeout).context("finding recent commands")?;
    for element in resolved.elements() {
        // No record at or after that time: start at the end as of now.
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Offset(consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?.1),
        };
        assignment.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    consumer.assign(&assignment).context("assigning the pub/sub topics")?;
    Ok(retained_ends)
}

fn run(
    consumer: &BaseConsumer<QuietContext>,
    topics: &PubSubTopics,
    hub: &Hub,
    retained_ends: RetainedEnds,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    let mut last_sweep = Instant::now();
    while !*stop.borrow() {
        match consumer.poll(POLL) {
            Some(Ok(record)) => {
                let now = now_ms();
                apply(&Record::of(&record, now), topics, hub, &retained_ends, now);
            }
            Some(Err(error)) => tracing::debug!(%error, "reading the pub/sub topics"),
            None => {}
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            hub.sweep(Instant::now(), now_ms());
            last_sweep = Instant::now();
        }
    }
}

/// One record read from the cluster, as [`apply`] needs it.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub timestamp_ms: i64,
}

impl<'a> Record<'a> {
    fn of(record: &'a BorrowedMessage<'a>, now: i64) -> Record<'a> {
        Record {
            topic: record.topic(),
            partition: record.partition(),
            offset: record.offset(),
            key: record.key(),
            payload: record.payload(),
            headers: record
                .headers()
                .map(|headers| headers.iter().map(|header| (header.key, header.value)).collect())
                .unwrap_or_default(),
            timestamp_ms: record.timestamp().to_millis().unwrap_or(now),
        }
    }
}

/// Hands one record to the hub according to its topic (see the module table). Retained
/// records at offsets below `retained_ends` are history: they fill the table and go to no one.
pub fn apply(record: &Record<'_>, topics: &PubSubTopics, hub: &Hub, retained_ends: &RetainedEnds, now: i64) {
    let headers = || record.headers.iter().copied();
    if record.topic == topics.messages {
        if let Some(message) = from_record(headers(), record.payload, None, record.timestamp_ms, None) {
            hub.publish(Arc::new(message), now);
        }
    } else if record.topic == topics.retained {
        let Some(mut message) = from_record(headers(), record.payload, None, record.timestamp_ms, None)
        else {
            return;
        };
        message.retain = true;
        let message = Arc::new(message);
        hub.set_retained(message.clone());
        let live = retained_ends.get(&record.partition).is_none_or(|&end| record.offset >= end);
        if live {
            hub.publish(message, now);
        }
    } else if record.topic == topics.commands {
        let Some(device) = record.key.and_then(|key| std::str::from_utf8(key).ok()) else {
            tracing::warn!(offset = record.offset, "a command without a device id as its key was ignored");
            return;
        };
        let devicebound = devicebound_topic(device);
        let ttl_ms = i64::try_from(topics.command_ttl.as_millis()).unwrap_or(i64::MAX);
        let Some(message) =
            from_record(headers(), record.payload, Some(&devicebound), record.timestamp_ms, Some(ttl_ms))
        else {
            return;
        };
        let message = Message { qos: tidewater_mqtt::QoS::AtLeastOnce, ..message };
        let id: CommandId = (record.partition, record.offset);
        hub.command(device, id, Arc::new(message), now);
    } else if record.topic == topics.deliveries {
        let device = record.key.and_then(|key| std::str::from_utf8(key).ok());
        let delivery = record.payload.and_then(|value| serde_json::from_slice::<Delivery>(value).ok());
        if let (Some(device), Some(delivery)) = (device, delivery) {
            hub.command_delivered(device, (delivery.partition, delivery.offset), delivery.expires_at_ms);
        }
    }
}
