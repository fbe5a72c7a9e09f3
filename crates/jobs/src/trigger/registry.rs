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
//! Both are compacted topics with one partition (`tidewater_client::KeyedTopic`), so this works
//! against any Kafka-compatible cluster that compacts. The triggers topic keeps the latest
//! definition of each trigger (`cleanup.policy=compact`). The status topic keeps the latest
//! record of each runner instance and, since an instance's name is new with each process, also
//! deletes by time (`compact,delete`, one hour): a live instance reports every few seconds, so
//! only the records of instances gone for an hour go. Webhook secrets are stored in the triggers
//! topic as given, like Kafka Connect stores connector configs: protect the topic as you would
//! the secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use tidewater_client::{ClusterConfig, KeyedTopic, QuietContext};

use super::definition::TriggerDefinition;
use super::stats::StatsSnapshot;
pub use crate::definitions::STATUS_STALE_MS;
use crate::definitions::STATUS_TABLE_CONFIGS as STATUS_CONFIGS;

pub const TRIGGERS_TOPIC: &str = "_tidewater_triggers";
pub const STATUS_TOPIC: &str = "_tidewater_trigger_status";

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

/// Reads and writes the registry topics, each a [`KeyedTopic`].
#[derive(Debug, Clone)]
pub struct Registry {
    cluster: ClusterConfig,
    triggers: KeyedTopic,
    status: KeyedTopic,
}

/// `client.id` of the registry's clients, and the prefix of its readers' group id.
const REGISTRY_CLIENT_ID: &str = "tidewater-trigger-registry";

impl Registry {
    pub fn new(cluster: ClusterConfig, timeout: Duration) -> Registry {
        let triggers = KeyedTopic::new(cluster.clone(), TRIGGERS_TOPIC, REGISTRY_CLIENT_ID, timeout);
        let status = KeyedTopic::new(cluster.clone(), STATUS_TOPIC, REGISTRY_CLIENT_ID, timeout);
        Registry { cluster, triggers, status }
    }

    /// Creates the two topics if they do not exist (upgrading ones an older version made).
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        self.triggers.ensure(&[]).await?;
        Ok(self.status.ensure(STATUS_CONFIGS).await?)
    }

    /// Upgrades the two topics where they exist to compacted tables, best effort: what a runner
    /// following the registry does at start, so that the tables of a data directory an older
    /// version made are compacted once it runs (it creates neither).
    pub async fn upgrade_topics(&self) {
        self.triggers.upgrade(&[]).await;
        self.status.upgrade(STATUS_CONFIGS).await;
    }

    /// Every registered trigger, as of now.
    pub fn load(&self) -> anyhow::Result<BTreeMap<String, TriggerDefinition>> {
        crate::definitions::load(&self.triggers)
            .context("reading the trigger registry (`tidewater trigger create` or a runner creates it)")
    }

    /// One trigger, or an error naming it if it is not registered.
    pub fn get(&self, name: &str) -> anyhow::Result<TriggerDefinition> {
        self.load()?.remove(name).with_context(|| format!("no trigger named {name:?}"))
    }

    /// The latest status record of every (trigger, instance).
    pub fn statuses(&self) -> anyhow::Result<Vec<StatusRecord>> {
        crate::definitions::latest_statuses(&self.status)
            .context("reading the trigger registry (`tidewater trigger create` or a runner creates it)")
    }

    /// Registers or replaces a trigger, after checking it.
    pub async fn put(&self, definition: &TriggerDefinition) -> anyhow::Result<()> {
        definition.validate().map_err(|error| anyhow::anyhow!("trigger {}: {error}", definition.name))?;
        let value = serde_json::to_vec(definition).context("encoding the definition")?;
        Ok(self.triggers.write(&definition.name, Some(&value)).await?)
    }

    /// Removes a trigger (a tombstone record).
    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.triggers.write(name, None).await?)
    }

    /// Queues a status record. It is not waited for: status is advisory, the next one follows in
    /// seconds, and a cluster that is down must not stall the caller for a delivery timeout.
    pub fn publish_status(
        &self,
        producer: &FutureProducer<QuietContext>,
        record: &StatusRecord,
    ) -> anyhow::Result<()> {
        let key = format!("{}/{}", record.trigger, record.instance);
        crate::definitions::queue_status(producer, STATUS_TOPIC, &key, record)
    }

    pub fn producer(&self) -> anyhow::Result<FutureProducer<QuietContext>> {
        self.cluster.table_producer(REGISTRY_CLIENT_ID).context("creating the registry producer")
    }

    /// Follows the triggers topic on a thread of its own, sending the full set of definitions
    /// each time it changes, until `stop` turns true. The first set sent is complete (everything
    /// that existed when following began), never a prefix, which would stop triggers not yet
    /// read.
    pub fn watch(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<crate::definitions::Watched<TriggerDefinition>> {
        crate::definitions::watch(&self.triggers, "trigger-registry", stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::apply;

    #[test]
    fn the_latest_record_per_name_wins_and_tombstones_delete() {
        let mut definitions: BTreeMap<String, TriggerDefinition> = BTreeMap::new();
        let first = br#"{"name":"a","topic":"t","action":{"type":"command","program":"true"}}"#;
        let second =
            br#"{"name":"a","topic":"t","paused":true,"action":{"type":"command","program":"true"}}"#;
        apply(&mut definitions, Some(b"a"), Some(first));
        apply(&mut definitions, Some(b"b"), Some(b"not json"));
        apply(&mut definitions, Some(b"c"), Some(first));
        assert_eq!(definitions.keys().collect::<Vec<_>>(), vec!["a"]);
        apply(&mut definitions, Some(b"a"), Some(second));
        assert!(definitions.get("a").is_some_and(|definition| definition.paused));
        apply(&mut definitions, Some(b"a"), None);
        assert!(definitions.is_empty());
    }
}
