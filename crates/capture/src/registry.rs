//! Where captures are registered and how they report: two compacted one-partition topics on
//! the cluster itself, like the triggers' (see `tidewater_jobs::trigger::registry`).
//!
//! - `_tidewater_captures`: key = capture name, value = the definition as JSON, a tombstone for
//!   a deleted capture; the latest record per key wins. `tidewater serve` (and any other
//!   supervisor) follows it, so `capture create`, `pause`, `resume` and `delete` reach every
//!   instance without another channel.
//! - `_tidewater_capture_status`: every few seconds each instance publishes one record per
//!   capture (key = `{capture}/{instance}`) with its state, its latest error and its counters;
//!   `capture list` and `capture describe` read the latest of each. Records of instances gone
//!   for an hour are deleted by time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use tidewater_client::{ClusterConfig, KeyedTopic, QuietContext};
use tidewater_jobs::definitions::Named;

use crate::definition::CaptureDefinition;
pub use tidewater_jobs::definitions::STATUS_STALE_MS;
use tidewater_jobs::definitions::STATUS_TABLE_CONFIGS as STATUS_CONFIGS;

pub const CAPTURES_TOPIC: &str = "_tidewater_captures";
pub const STATUS_TOPIC: &str = "_tidewater_capture_status";
/// `client.id` of the registry's clients.
const REGISTRY_CLIENT_ID: &str = "tidewater-capture-registry";

impl Named for CaptureDefinition {
    fn name(&self) -> &str {
        &self.name
    }
}

/// An instance's report about one capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub capture: String,
    pub instance: String,
    /// `running`, `paused` or `failed`.
    pub state: String,
    /// The latest error (a write that is being retried, or why the capture failed).
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub counters: Counters,
    pub updated_at_ms: i64,
}

/// A snapshot of a runner's `CaptureStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub records_written: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub non_json_values: u64,
    pub type_conflicts: u64,
    pub records_skipped: u64,
}

/// Reads and writes the registry topics.
#[derive(Debug, Clone)]
pub struct Registry {
    cluster: ClusterConfig,
    captures: KeyedTopic,
    status: KeyedTopic,
}

impl Registry {
    pub fn new(cluster: ClusterConfig, timeout: Duration) -> Registry {
        let captures = KeyedTopic::new(cluster.clone(), CAPTURES_TOPIC, REGISTRY_CLIENT_ID, timeout);
        let status = KeyedTopic::new(cluster.clone(), STATUS_TOPIC, REGISTRY_CLIENT_ID, timeout);
        Registry { cluster, captures, status }
    }

    /// Creates the two topics if they do not exist.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        self.captures.ensure(&[]).await?;
        Ok(self.status.ensure(STATUS_CONFIGS).await?)
    }

    /// Every registered capture, as of now.
    pub fn load(&self) -> anyhow::Result<BTreeMap<String, CaptureDefinition>> {
        tidewater_jobs::definitions::load(&self.captures)
            .context("reading the capture registry (`tidewater capture create` creates it)")
    }

    /// One capture, or an error naming it.
    pub fn get(&self, name: &str) -> anyhow::Result<CaptureDefinition> {
        self.load()?.remove(name).with_context(|| format!("no capture named {name:?}"))
    }

    /// The latest status record of every (capture, instance).
    pub fn statuses(&self) -> anyhow::Result<Vec<StatusRecord>> {
        tidewater_jobs::definitions::latest_statuses(&self.status).context("reading the capture status topic")
    }

    /// Registers or replaces a capture, after checking it.
    pub async fn put(&self, definition: &CaptureDefinition) -> anyhow::Result<()> {
        definition.validate().map_err(|error| anyhow::anyhow!("capture {}: {error}", definition.name))?;
        let value = serde_json::to_vec(definition).context("encoding the definition")?;
        Ok(self.captures.write(&definition.name, Some(&value)).await?)
    }

    /// Removes a capture (a tombstone record).
    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.captures.write(name, None).await?)
    }

    /// Queues a status record without waiting: status is advisory and the next one follows.
    pub fn publish_status(
        &self,
        producer: &FutureProducer<QuietContext>,
        record: &StatusRecord,
    ) -> anyhow::Result<()> {
        let key = format!("{}/{}", record.capture, record.instance);
        tidewater_jobs::definitions::queue_status(producer, STATUS_TOPIC, &key, record)
    }

    pub fn producer(&self) -> anyhow::Result<FutureProducer<QuietContext>> {
        self.cluster.table_producer(REGISTRY_CLIENT_ID).context("creating the registry producer")
    }

    /// Follows the captures topic on a thread of its own (see `tidewater_jobs::definitions`).
    pub fn watch(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<tidewater_jobs::definitions::Watched<CaptureDefinition>> {
        tidewater_jobs::definitions::watch(&self.captures, "capture-registry", stop)
    }
}
