//! The log follower that feeds the [`Hub`]: what MQTT subscribers and devices receive comes
//! from the cluster, never from another connection directly, so every gateway in front of the
//! same cluster delivers the same messages, and nothing is delivered that is not durable.
//!
//! One consumer, by assignment (no group: every gateway reads everything), reads four topics:
//!
//! | topic | from | becomes |
//! |---|---|---|
//! | pub/sub (`mqtt-messages`) | its end at start | live messages to subscribers; retained ones also update the table |
//! | retained (`_tidewater_mqtt_retained`) | the beginning, to where it ended at start | the retained table as it was |
//! | commands (`commands`) | the command time-to-live ago | commands waiting for devices |
//! | deliveries (`_tidewater_command_deliveries`) | the same time ago | commands no longer waiting |
//!
//! Reading commands and deliveries from one time-to-live back means a restarted gateway still
//! holds every command that has not expired and was not delivered. The topics are created
//! (one partition) if missing; partitions added later are not followed until a restart.
//!
//! The retained and deliveries topics are tables, compacted: the latest retained message per
//! MQTT topic, the latest delivery record per command (keyed `{device}/{partition}/{offset}` of
//! the command; the device is in the value too). Deliveries also go by time
//! (`compact,delete`, the cluster's retention), as they matter for one command time-to-live only.
//! Compaction leaves gaps, and the last offsets of the retained table may hold no record (a batch
//! the cleaner emptied), so its load is finished when the fetch reaches the partition's end
//! (librdkafka's partition EOF), not when a record at its last offset arrives. librdkafka names
//! only the partition in that event, so the other topics are paused until the retained table is
//! loaded: their records then all come after the table's history, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tidewater_client::admin::{ensure_topic_on, NewTopic};
use tidewater_client::{now_ms, ClusterConfig, KeyedTopic, QuietContext};

use crate::hub::{devicebound_topic, CommandId, Hub};
use crate::message::{from_record, Message};

/// The topics the gateway's MQTT side reads and writes besides telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubTopics {
    pub messages: String,
    pub retained: String,
    pub commands: String,
    pub deliveries: String,
    /// Persistent MQTT sessions, a compacted table keyed by client id (`crate::session_store`).
    pub sessions: String,
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
            sessions: "_tidewater_mqtt_sessions".into(),
            command_ttl: Duration::from_secs(3600),
        }
    }
}

/// A delivery record's value: which command was delivered, to which device, and until when to
/// remember it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The device; records written before deliveries were keyed per command carry it only as
    /// their key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub partition: i32,
    pub offset: i64,
    pub delivered_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Delivery {
    /// The delivery record's key: one per command, so compaction keeps every command's
    /// delivery (a key per device would keep only the device's last one).
    pub fn key(device: &str, partition: i32, offset: i64) -> String {
        format!("{device}/{partition}/{offset}")
    }
}

/// How long the follower waits for a record before it looks at `stop` and sweeps.
const POLL: Duration = Duration::from_millis(100);
/// How often expired sessions and commands are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// `client.id` of the gateway's admin requests.
const ADMIN_CLIENT_ID: &str = "tidewater-gateway";

/// Creates the topics that do not exist yet (one partition each): the pub/sub and commands
/// topics as streams, the retained, deliveries and sessions topics as compacted tables (see the
/// module docs), upgrading tables created before they were compacted.
pub async fn ensure_topics(
    cluster: &ClusterConfig,
    topics: &PubSubTopics,
    timeout: Duration,
) -> anyhow::Result<()> {
    for stream in [&topics.messages, &topics.commands] {
        let topic = NewTopic::new(stream, 1, &[]);
        ensure_topic_on(cluster, ADMIN_CLIENT_ID, topic, timeout)
            .await
            .with_context(|| format!("creating {stream} at {}", cluster.bootstrap_servers))?;
    }
    KeyedTopic::new(cluster.clone(), topics.retained.clone(), ADMIN_CLIENT_ID, timeout).ensure(&[]).await?;
    KeyedTopic::new(cluster.clone(), topics.deliveries.clone(), ADMIN_CLIENT_ID, timeout)
        .ensure(&[("cleanup.policy", "compact,delete")])
        .await?;
    crate::session_store::ensure_topic(cluster, &topics.sessions, timeout).await?;
    Ok(())
}

/// Follows the topics on a thread of its own until `stop`; join it after `stop` to know its
/// consumer has left. `ready` is sent once every topic is assigned and the retained table is
/// read to where it ended: from then on every message appended is delivered and every retained
/// message is in the table, so the MQTT listener waits for it before it accepts clients.
pub fn follow(
    cluster: &ClusterConfig,
    topics: PubSubTopics,
    hub: Arc<Hub>,
    timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer<QuietContext> = cluster
        .consumer_config(&[
            ("client.id", "tidewater-gateway-fanout"),
            ("group.id", "tidewater-gateway-fanout"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "latest"),
            // Subscribers wait on this consumer: ask the broker to answer as soon as a record is
            // there.
            ("fetch.wait.max.ms", "20"),
            ("fetch.error.backoff.ms", "50"),
            // The retained table's load ends at the partition's end (see the module docs).
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the gateway's pub/sub consumer")?;
    std::thread::Builder::new()
        .name("mqtt-fanout".into())
        .spawn(move || {
            let started = loop {
                match assign(&consumer, &topics, &hub, timeout) {
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
            run(&consumer, &topics, &hub, started, &stop, ready);
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
    hub: &Hub,
    timeout: Duration,
) -> anyhow::Result<RetainedEnds> {
    let mut assignment = TopicPartitionList::new();
    // The end as of now, not `Offset::End`: that would be looked up at the first fetch, and a
    // message appended in between would reach no one.
    for partition in partitions(consumer, &topics.messages, timeout)? {
        let (_, high) = consumer.fetch_watermarks(&topics.messages, partition, timeout)?;
        assignment.add_partition_offset(&topics.messages, partition, Offset::Offset(high))?;
        hub.start_reading(partition, high);
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
    // Until the retained table is loaded only its partitions are read, so a partition's end
    // (which librdkafka reports by partition number alone) is the table's.
    if retained_ends.values().any(|&end| end > 0) {
        consumer.pause(&others(&assignment, &topics.retained)).context("pausing the pub/sub topics")?;
    }
    Ok(retained_ends)
}

/// The partitions of `assignment` that are not `topic`'s.
fn others(assignment: &TopicPartitionList, topic: &str) -> TopicPartitionList {
    let mut others = TopicPartitionList::new();
    for element in assignment.elements().iter().filter(|element| element.topic() != topic) {
        others.add_partition(element.topic(), element.partition());
    }
    others
}

fn run(
    consumer: &BaseConsumer<QuietContext>,
    topics: &PubSubTopics,
    hub: &Hub,
    retained_ends: RetainedEnds,
    stop: &tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut last_sweep = Instant::now();
    // Retained partitions not yet read to where they ended at start.
    let mut loading: HashMap<i32, i64> =
        retained_ends.iter().filter(|(_, &end)| end > 0).map(|(&partition, &end)| (partition, end)).collect();
    let mut ready = Some(ready);
    while !*stop.borrow() {
        if loading.is_empty() {
            if let Some(ready) = ready.take() {
                if !retained_ends.values().all(|&end| end == 0) {
                    resume_others(consumer, &topics.retained);
                }
                let _ = ready.send(());
            }
        }
        match consumer.poll(POLL) {
            Some(Ok(record)) => {
                let now = now_ms();
                if record.topic() == topics.retained
                    && loading.get(&record.partition()).is_some_and(|&end| record.offset() + 1 >= end)
                {
                    loading.remove(&record.partition());
                }
                apply(&Record::of(&record, now), topics, hub, &retained_ends, now);
            }
            // While loading, only the retained table's partitions are read (see `assign`).
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                loading.remove(&partition);
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

/// Resumes the partitions `assign` paused until the retained table (`retained`) was loaded.
fn resume_others(consumer: &BaseConsumer<QuietContext>, retained: &str) {
    let resumed =
        consumer.assignment().and_then(|assignment| consumer.resume(&others(&assignment, retained)));
    if let Err(error) = resumed {
        tracing::error!(%error, "could not resume the pub/sub topics after loading the retained table");
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

/// Hands one record to the hub according to its topic (see the module table). Records of the
/// retained topic below `retained_ends` fill the table; later ones came through the pub/sub
/// topic too, which is where a gateway takes them from (in their place among that MQTT topic's
/// other messages), so they are skipped.
pub fn apply(record: &Record<'_>, topics: &PubSubTopics, hub: &Hub, retained_ends: &RetainedEnds, now: i64) {
    let headers = || record.headers.iter().copied();
    if record.topic == topics.messages {
        let message = from_record(headers(), record.payload, None, record.timestamp_ms, None).map(Arc::new);
        if let Some(message) = message.as_ref().filter(|message| message.retain) {
            hub.set_retained(message.clone());
        }
        hub.publish_at(record.partition, record.offset, message, now);
    } else if record.topic == topics.retained {
        let history = retained_ends.get(&record.partition).is_some_and(|&end| record.offset < end);
        if !history {
            return;
        }
        if let Some(mut message) = from_record(headers(), record.payload, None, record.timestamp_ms, None) {
            message.retain = true;
            hub.set_retained(Arc::new(message));
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
        let Some(delivery) = record.payload.and_then(|value| serde_json::from_slice::<Delivery>(value).ok())
        else {
            return;
        };
        // Records written before deliveries were keyed per command are keyed by the device.
        let device = match &delivery.device {
            Some(device) => Some(device.as_str()),
            None => record.key.and_then(|key| std::str::from_utf8(key).ok()),
        };
        if let Some(device) = device {
            hub.command_delivered(device, (delivery.partition, delivery.offset), delivery.expires_at_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ConnectOptions, HubConfig, SessionExpiry};
    use crate::subscriptions::Subscribed;
    use tidewater_mqtt::{Packet, ProtocolVersion, QoS, SubscriptionOptions};

    fn record<'a>(
        topic: &'a str,
        offset: i64,
        payload: &'a [u8],
        headers: &[(&'a str, &'a [u8])],
    ) -> Record<'a> {
        Record {
            topic,
            partition: 0,
            offset,
            key: None,
            payload: Some(payload),
            headers: headers.iter().map(|(name, value)| (*name, Some(*value))).collect(),
            timestamp_ms: 0,
        }
    }

    /// What a new subscriber to `#` is sent: (topic, payload, retain) of each PUBLISH.
    fn retained_seen_by_a_new_subscriber(hub: &Hub, client: &str) -> Vec<(String, String, bool)> {
        let options = ConnectOptions {
            clean_start: true,
            expiry: SessionExpiry::AtDisconnect,
            version: ProtocolVersion::V5,
            receive_maximum: 10,
            maximum_packet_size: None,
            device: None,
            may_receive: None,
        };
        hub.connect(client, options, 1, Arc::default(), 0);
        let everything = Subscribed { options: SubscriptionOptions::qos(QoS::AtMostOnce), identifier: None };
        hub.subscribe(client, &[("#".into(), everything)], 0);
        hub.pump(client, 1, 0)
            .packets
            .into_iter()
            .filter_map(|packet| match packet {
                Packet::Publish(publish) => Some((
                    publish.topic.as_str().to_string(),
                    String::from_utf8_lossy(&publish.payload).into_owned(),
                    publish.retain,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_retained_table_loads_from_its_topic_and_then_follows_the_pub_sub_topic() {
        let topics = PubSubTopics::default();
        let hub = Hub::new(HubConfig::default());
        let ends: RetainedEnds = [(0, 2)].into();
        let retained = topics.retained.clone();
        let messages = topics.messages.clone();
        let topic_a: &[(&str, &[u8])] = &[("mqtt-topic", b"a"), ("mqtt-qos", b"0")];
        let retained_b: &[(&str, &[u8])] =
            &[("mqtt-topic", b"b"), ("mqtt-qos", b"0"), ("mqtt-retain", b"true")];
        // History: offsets 0 and 1 of the table, from before the start.
        apply(&record(&retained, 0, b"old", topic_a), &topics, &hub, &ends, 0);
        apply(&record(&retained, 1, b"current", topic_a), &topics, &hub, &ends, 0);
        // Since the start: the table's copy is skipped, the pub/sub topic's record counts.
        apply(&record(&retained, 2, b"table copy", retained_b), &topics, &hub, &ends, 0);
        assert_eq!(retained_seen_by_a_new_subscriber(&hub, "first"), [("a".into(), "current".into(), true)]);
        apply(&record(&messages, 0, b"live", retained_b), &topics, &hub, &ends, 0);
        apply(&record(&messages, 1, b"not retained", topic_a), &topics, &hub, &ends, 0);
        assert_eq!(
            retained_seen_by_a_new_subscriber(&hub, "second"),
            [("a".into(), "current".into(), true), ("b".into(), "live".into(), true)]
        );
    }

    /// Deliveries are keyed per command (so compaction keeps each one), with the device in the
    /// value; records of older gateways, keyed by the device alone, still count.
    #[test]
    fn a_delivery_record_of_either_layout_stops_its_command() {
        let topics = PubSubTopics::default();
        let hub = Hub::new(HubConfig::default());
        let delivered = |key: &str, delivery: &Delivery| {
            let value = serde_json::to_vec(delivery).expect("json");
            let record = Record { key: Some(key.as_bytes()), ..record(&topics.deliveries, 0, &value, &[]) };
            apply(&record, &topics, &hub, &RetainedEnds::new(), 0);
        };
        for offset in [5, 6] {
            let mut record = record(&topics.commands, offset, b"reboot", &[]);
            record.key = Some(b"pump-1");
            apply(&record, &topics, &hub, &RetainedEnds::new(), 0);
        }
        assert_eq!(hub.pending_commands("pump-1"), 2);
        let new_layout = Delivery {
            device: Some("pump-1".into()),
            partition: 0,
            offset: 5,
            delivered_at_ms: 0,
            expires_at_ms: i64::MAX,
        };
        assert_eq!(Delivery::key("pump-1", 0, 5), "pump-1/0/5");
        delivered(&Delivery::key("pump-1", 0, 5), &new_layout);
        assert_eq!(hub.pending_commands("pump-1"), 1);
        let old_layout = Delivery { device: None, offset: 6, ..new_layout };
        delivered("pump-1", &old_layout);
        assert_eq!(hub.pending_commands("pump-1"), 0);
    }
}
