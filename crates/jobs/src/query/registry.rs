//! Query jobs registered in the cluster, in two tables like the triggers' (see
//! `crate::trigger::registry`):
//!
//! - `_tidewater_queries`: key = job name, value = the definition as JSON, a tombstone for a
//!   deleted job. `tidewater query create|start|stop|delete` write it; the supervisor inside
//!   `tidewater serve` follows it and runs every job that is not stopped.
//! - `_tidewater_query_status`: every few seconds each supervisor publishes one record per job
//!   (key = `{job}/{instance}`) with the job's state there, its latest error and the events it
//!   read, so that `query list` and `query describe` show what a job's log would, from any
//!   machine. Records of instances gone for an hour are deleted by time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use tidewater_client::{ClusterConfig, KeyedTopic, QuietContext};
use tidewater_sql::{JobOptions, LatePolicy};

use super::delivery::Delivery;
use super::metrics::JobFailure;
use super::reference::{reference_names, validate_sources, ReferenceSource};
use super::runner::{QueryJobSettings, StartPosition};
use crate::definitions::Named;
use crate::definitions::STATUS_TABLE_CONFIGS;

pub const QUERIES_TOPIC: &str = "_tidewater_queries";
pub const STATUS_TOPIC: &str = "_tidewater_query_status";
/// `client.id` of the registry's clients.
const REGISTRY_CLIENT_ID: &str = "tidewater-query-registry";
/// Longest job name: it becomes part of a transactional id.
pub const NAME_BYTES_MAX: usize = 200;

/// A registered query job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryDefinition {
    pub name: String,
    /// The query text (Azure Stream Analytics SQL).
    pub sql: String,
    #[serde(default)]
    pub out_of_order_tolerance_ms: i64,
    #[serde(default)]
    pub late_arrival_tolerance_ms: i64,
    /// `adjust` (default) or `drop`.
    #[serde(default)]
    pub late_policy: LatePolicyName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_partition_timeout_ms: Option<i64>,
    /// Inputs read with `TIMESTAMP BY ... OVER key`: how long a silent key stays open
    /// (`JobOptions::idle_key_timeout_ms`; absent: the engine's default, five minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_key_timeout_ms: Option<i64>,
    /// Where inputs start on the job's first run: `"earliest"` (default), `"latest"` or
    /// `{"timestamp": EPOCH_MS}`.
    #[serde(default)]
    pub start_from: StartPosition,
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_topic: Option<String>,
    /// Process each input partition number on its own so that several servers or `query run
    /// --parallel` instances share the partitions.
    #[serde(default)]
    pub parallel: bool,
    /// `"exactly-once"` (default: rows visible at checkpoints) or `"at-least-once"` (rows
    /// visible as produced; a crash may repeat some).
    #[serde(default)]
    pub delivery: Delivery,
    /// A stopped job keeps its definition and its last checkpoint; `start` resumes from it.
    #[serde(default)]
    pub stopped: bool,
    /// Reference inputs: `[{"name": "thresholds", "topic": "thresholds"}, {"name": "sites",
    /// "file": "/data/sites.csv"}]` (a file is read by the process that runs the job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ReferenceSource>,
}

/// The late-arrival policy as it is written in a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatePolicyName {
    #[default]
    Adjust,
    Drop,
}

fn default_checkpoint_interval_ms() -> u64 {
    1000
}

impl Named for QueryDefinition {
    fn name(&self) -> &str {
        &self.name
    }
}

impl QueryDefinition {
    pub fn options(&self) -> JobOptions {
        JobOptions {
            out_of_order_tolerance_ms: self.out_of_order_tolerance_ms,
            late_arrival_tolerance_ms: self.late_arrival_tolerance_ms,
            late_policy: match self.late_policy {
                LatePolicyName::Adjust => LatePolicy::Adjust,
                LatePolicyName::Drop => LatePolicy::Drop,
            },
            idle_partition_timeout_ms: self.idle_partition_timeout_ms,
            idle_key_timeout_ms: self
                .idle_key_timeout_ms
                .unwrap_or(tidewater_sql::DEFAULT_IDLE_KEY_TIMEOUT_MS),
            reference_inputs: reference_names(&self.references),
            ..JobOptions::default()
        }
    }

    pub fn settings(&self) -> QueryJobSettings {
        QueryJobSettings {
            name: self.name.clone(),
            sql: self.sql.clone(),
            options: self.options(),
            start_from: self.start_from,
            checkpoint_interval: Duration::from_millis(self.checkpoint_interval_ms.max(10)),
            late_topic: self.late_topic.clone(),
            parallel: self.parallel,
            references: self.references.clone(),
            delivery: self.delivery,
        }
    }

    /// Checks the name and settings, and that the query compiles; the error lists every
    /// diagnostic as `LINE:COLUMN: message`.
    pub fn validate(&self) -> Result<(), String> {
        validate_job_name(&self.name)?;
        if !(10..=3_600_000).contains(&self.checkpoint_interval_ms) {
            return Err("checkpoint_interval_ms must be between 10 and 3600000".to_string());
        }
        validate_sources(&self.references)?;
        let job = tidewater_sql::compile(&self.sql, self.options()).map_err(|diagnostics| {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            format!("the query does not compile:\n{}", lines.join("\n"))
        })?;
        validate_topics(&job, self.late_topic.as_deref())
    }
}

/// The job's inputs, outputs and late-events topic are topics: a name Kafka would refuse is
/// refused before the job starts, rather than at its first checkpoint.
pub fn validate_topics(job: &tidewater_sql::Job, late_topic: Option<&str>) -> Result<(), String> {
    for topic in job.inputs().iter().chain(&job.outputs()).map(String::as_str).chain(late_topic) {
        validate_topic_name(topic)?;
    }
    Ok(())
}

/// A Kafka topic name: 1 to 249 letters, digits, `.`, `_` and `-`, and not `.` or `..`.
pub fn validate_topic_name(topic: &str) -> Result<(), String> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if topic.is_empty() || topic.len() > 249 || !topic.bytes().all(allowed) || topic == "." || topic == ".." {
        return Err(format!(
            "{topic:?} is not a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-' (and not '.' or '..')"
        ));
    }
    Ok(())
}

/// A job name: letters, digits, `.`, `_` and `-`, as topic names.
pub fn validate_job_name(name: &str) -> Result<(), String> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.bytes().all(allowed) {
        return Err(format!(
            "job name {name:?} must be 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// A supervisor's report about one job it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryStatus {
    pub job: String,
    pub instance: String,
    /// `running`, `restarting` (it failed and starts again shortly) or `stopped`.
    pub state: String,
    /// The job's latest failure in this instance, even once it runs again.
    #[serde(default)]
    pub last_failure: Option<JobFailure>,
    /// Input records the job read in this instance.
    #[serde(default)]
    pub events: u64,
    pub updated_at_ms: i64,
}

/// Reads and writes `_tidewater_queries` and `_tidewater_query_status`.
#[derive(Debug, Clone)]
pub struct QueryRegistry {
    table: KeyedTopic,
    status: KeyedTopic,
}

impl QueryRegistry {
    pub fn new(cluster: ClusterConfig, timeout: Duration) -> QueryRegistry {
        QueryRegistry {
            table: KeyedTopic::new(cluster.clone(), QUERIES_TOPIC, REGISTRY_CLIENT_ID, timeout),
            status: KeyedTopic::new(cluster, STATUS_TOPIC, REGISTRY_CLIENT_ID, timeout),
        }
    }

    pub fn cluster(&self) -> &ClusterConfig {
        self.table.cluster()
    }

    /// Creates the registry topic (a compacted table) unless it exists.
    pub async fn ensure_topic(&self) -> anyhow::Result<()> {
        Ok(self.table.ensure(&[]).await?)
    }

    /// Upgrades the registry topic, if it exists, to a compacted table, best effort: what the
    /// runner of registered jobs does at start (it creates nothing).
    pub async fn upgrade_topic(&self) {
        self.table.upgrade(&[]).await;
    }

    /// Creates the status topic unless it exists: the supervisor does at start.
    pub async fn ensure_status_topic(&self) -> anyhow::Result<()> {
        Ok(self.status.ensure(STATUS_TABLE_CONFIGS).await?)
    }

    /// The latest status record of every (job, instance); none before a supervisor first ran.
    pub fn statuses(&self) -> anyhow::Result<Vec<QueryStatus>> {
        crate::definitions::latest_statuses(&self.status).context("reading the query status topic")
    }

    /// Queues a status record without waiting: status is advisory and the next one follows.
    pub fn publish_status(
        &self,
        producer: &FutureProducer<QuietContext>,
        record: &QueryStatus,
    ) -> anyhow::Result<()> {
        let key = format!("{}/{}", record.job, record.instance);
        crate::definitions::queue_status(producer, STATUS_TOPIC, &key, record)
    }

    pub fn producer(&self) -> anyhow::Result<FutureProducer<QuietContext>> {
        self.cluster().table_producer(REGISTRY_CLIENT_ID).context("creating the registry producer")
    }

    pub fn load(&self) -> anyhow::Result<BTreeMap<String, QueryDefinition>> {
        crate::definitions::load(&self.table)
            .context("reading the query registry (`tidewater query create` creates it)")
    }

    pub fn get(&self, name: &str) -> anyhow::Result<QueryDefinition> {
        self.load()?.remove(name).with_context(|| format!("no query job named {name:?}"))
    }

    /// Registers or replaces a job, after checking it compiles.
    pub async fn put(&self, definition: &QueryDefinition) -> anyhow::Result<()> {
        definition.validate().map_err(|error| anyhow::anyhow!("query job {}: {error}", definition.name))?;
        let value = serde_json::to_vec(definition).context("encoding the definition")?;
        Ok(self.table.write(&definition.name, Some(&value)).await?)
    }

    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.table.write(name, None).await?)
    }

    pub fn watch(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<crate::definitions::Watched<QueryDefinition>> {
        crate::definitions::watch(&self.table, "query-registry", stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse_and_round_trip() {
        assert_eq!(StartPosition::parse("earliest"), Ok(StartPosition::Earliest));
        assert_eq!(StartPosition::parse("latest"), Ok(StartPosition::Latest));
        assert_eq!(StartPosition::parse("@1767225600000"), Ok(StartPosition::Timestamp(1_767_225_600_000)));
        assert_eq!(
            StartPosition::parse("@2026-01-01T00:00:00Z"),
            Ok(StartPosition::Timestamp(1_767_225_600_000))
        );
        assert!(StartPosition::parse("yesterday").is_err());
        let json = serde_json::to_value(StartPosition::Timestamp(5)).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"timestamp": 5}));
        assert_eq!(serde_json::from_value::<StartPosition>(json).ok(), Some(StartPosition::Timestamp(5)));
    }

    #[test]
    fn a_minimal_definition_gets_defaults_and_is_checked() {
        let definition: QueryDefinition = serde_json::from_value(serde_json::json!({
            "name": "alerts", "sql": "SELECT * INTO out FROM input"
        }))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(definition.start_from, StartPosition::Earliest);
        assert_eq!(definition.checkpoint_interval_ms, 1000);
        assert_eq!(definition.delivery, Delivery::ExactlyOnce);
        // The mode is kept in the registry under its CLI spelling, with or without --parallel.
        let fast: QueryDefinition = serde_json::from_value(serde_json::json!({
            "name": "alerts", "sql": "SELECT * INTO out FROM input", "delivery": "at-least-once"
        }))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(fast.delivery, Delivery::AtLeastOnce);
        assert_eq!(fast.settings().delivery, Delivery::AtLeastOnce);
        assert_eq!(serde_json::to_value(&fast).unwrap_or_default()["delivery"], "at-least-once");
        assert_eq!(fast.validate(), Ok(()));
        let parallel = QueryDefinition { parallel: true, ..fast.clone() };
        assert_eq!(parallel.validate(), Ok(()));
        assert!(parallel.settings().parallel && parallel.settings().delivery == Delivery::AtLeastOnce);
        assert_eq!(Delivery::parse("at-least-once"), Ok(Delivery::AtLeastOnce));
        assert_eq!(Delivery::parse(Delivery::ExactlyOnce.as_str()), Ok(Delivery::ExactlyOnce));
        assert!(Delivery::parse("at-most-once").is_err());
        assert_eq!(definition.options().idle_key_timeout_ms, tidewater_sql::DEFAULT_IDLE_KEY_TIMEOUT_MS);
        assert_eq!(definition.validate(), Ok(()));
        let broken =
            QueryDefinition { sql: "SELECT frob(x) INTO out FROM input".to_string(), ..definition.clone() };
        assert!(broken.validate().is_err_and(|error| error.contains("1:8")));
        let badly_named = QueryDefinition { name: "a b".to_string(), ..definition.clone() };
        assert!(badly_named.validate().is_err_and(|error| error.contains("job name")));
        // Inputs, outputs and the late topic must be names Kafka takes.
        for (sql, late) in [
            ("SELECT * INTO [bad topic!] FROM input", None),
            ("SELECT * INTO out FROM [in/put]", None),
            ("SELECT * INTO out FROM input", Some("..")),
        ] {
            let refused = QueryDefinition {
                sql: sql.to_string(),
                late_topic: late.map(str::to_string),
                ..definition.clone()
            };
            assert!(
                refused.validate().is_err_and(|error| error.contains("is not a Kafka topic name")),
                "{sql}"
            );
        }
    }
}
