//! Where triggers are registered and how they report: two topics on the cluster itself.
//!
//! - `_tidewater_triggers`: one record per change, key = trigger name, value = the definition as
//!   JSON, a null value (tombstone) for a deleted trigger. The latest record per key wins, as in
//!   Kafka Connect's config topic. Every runner (inside `tidewater serve`, or standalone
//!   `tidewater trigger run`) reads it from the beginning and follows it, so `trigger create`,
//!   `pause`, `resume` and `delete` reach every instance without any other channel.
//! - `_tidewater_trigger_status`: each runner instance publishes, every few seconds, one record
//!   per trigger with its state and counters (key = `{trigger}/{instance}`); `trigger describe`
//!   and `trigger list` read the latest of each.
//!
//! Both are ordinary topics with one partition, so this works against any Kafka-compatible
//! cluster. The triggers topic keeps its records forever (`retention.ms=-1`): it is small, and
//! compaction would be the better policy where the cluster offers it (Tidewater's log has no
//! compaction yet). Webhook secrets are stored in it as given, like Kafka Connect stores
//! connector configs: protect the topic as you would the secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::definition::TriggerDefinition;
use super::stats::StatsSnapshot;
use crate::cluster::ClusterConfig;
use crate::logging::QuietContext;

pub const TRIGGERS_TOPIC: &str = "_tidewater_triggers";
pub const STATUS_TOPIC: &str = "_tidewater_trigger_status";
/// How long status records are kept.
const STATUS_RETENTION_MS: &str = "3600000";
/// Status records older than this describe an instance that is gone.
pub const STATUS_STALE_MS: i64 = 30_000;

/// A runner instance's report about one trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub trigger: String,
    pub instance: String,
    /// `running`, `paused`, `disabled`, `failed` or `stopped`.
    pub state: String,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub stats: StatsSnapshot,
    pub updated_at_ms: i64,
}

/// Reads and writes the registry topics.
#[derive(Debug, Clone)]
pub struct Registry {
    cluster: ClusterConfig,
    timeout: Duration,
}

impl Registry {
    pub fn new(cluster: ClusterConfig, timeout: Duration) -> Registry {
        Registry { cluster, timeout }
    }

    /// Creates the two topics if they do not exist.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<QuietContext> = self
            .cluster
            .client_config(&[("client.id", "tidewater-trigger-registry")])
            .create_with_context(QuietContext::default())
            .context("creating the admin client")?;
        let triggers =
            NewTopic::new(TRIGGERS_TOPIC, 1, TopicReplication::Fixed(-1)).set("retention.ms", "-1");
        let status = NewTopic::new(STATUS_TOPIC, 1, TopicReplication::Fixed(-1))
            .set("retention.ms", STATUS_RETENTION_MS)
            .set("segment.ms", STATUS_RETENTION_MS);
        let options =
            AdminOptions::new().operation_timeout(Some(self.timeout)).request_timeout(Some(self.timeout));
        let results = admin
            .create_topics([&triggers, &status], &options)
            .await
            .with_context(|| format!("creating {TRIGGERS_TOPIC} and {STATUS_TOPIC}"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
            }
        }
        Ok(())
    }

    /// Every registered trigger, as of now.
    pub fn load(&self) -> anyhow::Result<BTreeMap<String, TriggerDefinition>> {
        let mut definitions = BTreeMap::new();
        self.read_to_end(TRIGGERS_TOPIC, |key, value| apply_record(&mut definitions, key, value))?;
        Ok(definitions)
    }

    /// One trigger, or an error naming it if it is not registered.
    pub fn get(&self, name: &str) -> anyhow::Result<TriggerDefinition> {
        self.load()?.remove(name).with_context(|| format!("no trigger named {name:?}"))
    }

    /// The latest status record of every (trigger, instance).
    pub fn statuses(&self) -> anyhow::Result<Vec<StatusRecord>> {
        let mut latest: BTreeMap<String, StatusRecord> = BTreeMap::new();
        self.read_to_end(STATUS_TOPIC, |key, value| {
            if let (Some(key), Some(value)) = (key, value) {
                if let Ok(record) = serde_json::from_slice::<StatusRecord>(value) {
                    latest.insert(String::from_utf8_lossy(key).into_owned(), record);
                }
            }
        })?;
        Ok(latest.into_values().collect())
    }

    /// Registers or replaces a trigger, after checking it.
    pub async fn put(&self, definition: &TriggerDefinition) -> anyhow::Result<()> {
        definition.validate().map_err(|error| anyhow::anyhow!("trigger {}: {error}", definition.name))?;
        let value = serde_json::to_vec(definition).context("encoding the definition")?;
        self.write(TRIGGERS_TOPIC, &definition.name, Some(&value)).await
    }

    /// Removes a trigger (a tombstone record).
    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.write(TRIGGERS_TOPIC, name, None).await
    }

    /// Queues a status record. It is not waited for: status is advisory, the next one follows in
    /// seconds, and a cluster that is down must not stall the caller for a delivery timeout.
    pub fn publish_status(
        &self,
        producer: &FutureProducer<QuietContext>,
        record: &StatusRecord,
    ) -> anyhow::Result<()> {
        let key = format!("{}/{}", record.trigger, record.instance);
        let value = serde_json::to_vec(record).context("encoding a status record")?;
        producer
            .send_result(FutureRecord::to(STATUS_TOPIC).key(key.as_bytes()).payload(&value))
            .map(drop)
            .map_err(|(error, _)| anyhow::anyhow!("queueing trigger status: {error}"))
    }

    pub fn producer(&self) -> anyhow::Result<FutureProducer<QuietContext>> {
        self.cluster.reliable_producer("tidewater-trigger-registry").context("creating the registry producer")
    }

    async fn write(&self, topic: &str, key: &str, value: Option<&[u8]>) -> anyhow::Result<()> {
        let producer = self.producer()?;
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record, self.timeout).await.map(|_| ()).map_err(|(error, _)| {
            anyhow::anyhow!("writing to {topic} at {}: {error}", self.cluster.bootstrap_servers)
        })
    }

    /// Reads partition 0 of `topic` from the beginning to its current end.
    fn read_to_end(
        &self,
        topic: &str,
        mut each: impl FnMut(Option<&[u8]>, Option<&[u8]>),
    ) -> anyhow::Result<()> {
        let consumer = self.assigned_consumer(topic)?;
        let (low, high) = consumer.fetch_watermarks(topic, 0, self.timeout).map_err(|error| {
            anyhow::anyhow!(
                "reading {topic} at {}: {error} (is the cluster up, and has `tidewater trigger create` or a \
                 runner created it?)",
                self.cluster.bootstrap_servers
            )
        })?;
        let deadline = std::time::Instant::now() + self.timeout;
        let mut next = low;
        while next < high {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            anyhow::ensure!(!remaining.is_zero(), "reading {topic}: timed out at offset {next} of {high}");
            match consumer.poll(remaining.min(Duration::from_millis(200))) {
                Some(Ok(message)) => {
                    next = message.offset() + 1;
                    each(message.key(), message.payload());
                }
                Some(Err(error)) => anyhow::bail!("reading {topic}: {error}"),
                None => {}
            }
        }
        Ok(())
    }

    fn assigned_consumer(&self, topic: &str) -> anyhow::Result<BaseConsumer<QuietContext>> {
        let consumer: BaseConsumer<QuietContext> = self
            .cluster
            .client_config(&[
                ("group.id", "tidewater-trigger-registry-reader"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
            ])
            .create_with_context(QuietContext::default())
            .context("creating the registry consumer")?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .context("assigning the registry topic")?;
        consumer.assign(&assignment).context("assigning the registry topic")?;
        Ok(consumer)
    }

    /// Follows the triggers topic on a thread of its own, sending the full set of definitions
    /// each time it changes, until `stop` turns true.
    pub fn watch(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<tokio::sync::watch::Receiver<Option<BTreeMap<String, TriggerDefinition>>>> {
        let consumer = self.assigned_consumer(TRIGGERS_TOPIC)?;
        let timeout = self.timeout;
        let (sender, receiver) = tokio::sync::watch::channel(None);
        std::thread::Builder::new()
            .name("trigger-registry".to_string())
            .spawn(move || {
                let mut definitions = BTreeMap::new();
                // Caught up = read everything that existed when we started, so the first set sent
                // is complete rather than a prefix (which would stop triggers not yet read).
                let high = loop {
                    match consumer.fetch_watermarks(TRIGGERS_TOPIC, 0, timeout) {
                        Ok((_, high)) => break high,
                        Err(error) => {
                            // Usually: no trigger was ever created, so the topic does not exist.
                            tracing::debug!(%error, "reading {TRIGGERS_TOPIC}; retrying");
                            if *stop.borrow() {
                                return;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                };
                let mut caught_up = high == 0;
                if caught_up {
                    let _ = sender.send(Some(definitions.clone()));
                }
                while !*stop.borrow() {
                    let mut changed = false;
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(message)) => {
                            apply_record(&mut definitions, message.key(), message.payload());
                            changed = true;
                            if message.offset() + 1 >= high {
                                caught_up = true;
                            }
                        }
                        Some(Err(error)) => tracing::debug!(%error, "reading {TRIGGERS_TOPIC}"),
                        None => {}
                    }
                    if changed && caught_up {
                        let _ = sender.send(Some(definitions.clone()));
                    }
                }
            })
            .context("starting the registry reader thread")?;
        Ok(receiver)
    }
}

/// Applies one record of the triggers topic: a definition, or a tombstone deleting one. A record
/// that does not decode is skipped with a warning (a newer version's, or damaged).
fn apply_record(
    definitions: &mut BTreeMap<String, TriggerDefinition>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(name) = key.and_then(|key| std::str::from_utf8(key).ok()) else { return };
    match value {
        None => {
            definitions.remove(name);
        }
        Some(value) => match serde_json::from_slice::<TriggerDefinition>(value) {
            Ok(definition) if definition.name == name => {
                definitions.insert(name.to_string(), definition);
            }
            Ok(_) => tracing::warn!(name, "a definition's name differs from its key; skipped"),
            Err(error) => tracing::warn!(name, %error, "a trigger definition does not decode; skipped"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_record_per_name_wins_and_tombstones_delete() {
        let mut definitions = BTreeMap::new();
        let first = br#"{"name":"a","topic":"t","action":{"type":"command","program":"true"}}"#;
        let second =
            br#"{"name":"a","topic":"t","paused":true,"action":{"type":"command","program":"true"}}"#;
        apply_record(&mut definitions, Some(b"a"), Some(first));
        apply_record(&mut definitions, Some(b"b"), Some(b"not json"));
        apply_record(&mut definitions, Some(b"c"), Some(first));
        assert_eq!(definitions.keys().collect::<Vec<_>>(), vec!["a"]);
        apply_record(&mut definitions, Some(b"a"), Some(second));
        assert!(definitions.get("a").is_some_and(|definition| definition.paused));
        apply_record(&mut definitions, Some(b"a"), None);
        assert!(definitions.is_empty());
    }
}
