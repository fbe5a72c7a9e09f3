//! A query job's reference inputs (Stream Analytics' reference data): tables the engine joins
//! streams with "as of now" (see `tidewater_sql`'s README, "Reference data"), declared by the
//! user as `NAME=topic:TOPIC` or `NAME=file:PATH`.
//!
//! - A **topic** is read like a Kafka table: the record key is the row's key, the latest value
//!   (a JSON object) is its row, a tombstone deletes it. Every partition is read from the
//!   beginning by assignment (no consumer group, read_committed), one thread per topic, so the
//!   end of each partition is known for certain (librdkafka's partition EOF names the partition
//!   only, and this consumer reads one topic).
//! - A **file** (JSON lines, a JSON array, or CSV with a header) is read once, at start; its rows
//!   are keyed by row number.
//!
//! [`ReferenceInputs::load`] returns once every table holds everything its topic held when the
//! job started: the runner calls it before it restores a checkpoint and before its first event,
//! at every start. Tables are not in checkpoints; reading them again at a restart is what keeps
//! them current. Afterwards the runner applies each update as it arrives ([`ReferenceInputs::next`]).
//!
//! A record that cannot be a row (no key, a value that is not a JSON object, a new key beyond
//! the table's `max_reference_rows`) is skipped with a warning and counted, and the table keeps
//! what it had.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use tidewater_client::{ClusterConfig, QuietContext};
use tidewater_metrics::{global, Counter, Gauge};
use tidewater_sql::{local, Job, REFERENCE_FILE_BYTES_MAX};

/// Updates read but not yet applied, per job: the follower threads wait when it is full.
const UPDATES_QUEUED_MAX: usize = 1024;
/// How long a follower waits for a record before it looks at its stop signal again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long looking up a reference topic's partitions may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a reference input's rows come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceLocation {
    Topic(String),
    File(PathBuf),
}

/// One reference input: the name the query JOINs and where its rows come from. In a
/// definition: `{"name": "thresholds", "topic": "device-thresholds"}` or `{"name": "sites",
/// "file": "/data/sites.csv"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceSource {
    pub name: String,
    #[serde(flatten)]
    pub location: ReferenceLocation,
}

impl ReferenceSource {
    /// `NAME=topic:TOPIC` or `NAME=file:PATH`.
    pub fn parse(text: &str) -> Result<ReferenceSource, String> {
        let usage = || format!("{text:?} is not NAME=topic:TOPIC or NAME=file:PATH");
        let (name, location) = text.split_once('=').ok_or_else(usage)?;
        let location = match location.split_once(':') {
            Some(("topic", topic)) if !topic.is_empty() => ReferenceLocation::Topic(topic.to_string()),
            Some(("file", path)) if !path.is_empty() => ReferenceLocation::File(PathBuf::from(path)),
            _ => return Err(usage()),
        };
        let source = ReferenceSource { name: name.trim().to_string(), location };
        source.validate()?;
        Ok(source)
    }

    /// A name the query can JOIN: letters, digits, `_`, `-` and `.`, not empty.
    pub fn validate(&self) -> Result<(), String> {
        let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
        if self.name.is_empty() || !self.name.bytes().all(allowed) {
            return Err(format!(
                "reference input name {:?} must be letters, digits, '.', '_' or '-'",
                self.name
            ));
        }
        match &self.location {
            ReferenceLocation::Topic(topic) if topic.is_empty() => {
                Err("a reference topic needs a name".into())
            }
            ReferenceLocation::File(path) if path.as_os_str().is_empty() => {
                Err("a reference file needs a path".into())
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for ReferenceSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            ReferenceLocation::Topic(topic) => write!(formatter, "{}=topic:{topic}", self.name),
            ReferenceLocation::File(path) => write!(formatter, "{}=file:{}", self.name, path.display()),
        }
    }
}

/// Checks every source and that no name is declared twice.
pub fn validate_sources(sources: &[ReferenceSource]) -> Result<(), String> {
    for (index, source) in sources.iter().enumerate() {
        source.validate()?;
        if sources[..index].iter().any(|earlier| earlier.name.eq_ignore_ascii_case(&source.name)) {
            return Err(format!("reference input {:?} is declared twice", source.name));
        }
    }
    Ok(())
}

/// The names of `sources`, for `JobOptions::reference_inputs`.
pub fn reference_names(sources: &[ReferenceSource]) -> Vec<String> {
    sources.iter().map(|source| source.name.clone()).collect()
}

/// Reads a reference file's rows: at most `REFERENCE_FILE_BYTES_MAX` bytes, CSV when its name
/// ends in `.csv`, JSON lines or a JSON array otherwise. Errors name the file (and the line).
pub fn read_reference_file(path: &std::path::Path) -> anyhow::Result<Vec<tidewater_sql::ReferenceRow>> {
    let shown = path.display();
    let size = std::fs::metadata(path).with_context(|| format!("reference file {shown}"))?.len();
    anyhow::ensure!(
        size <= REFERENCE_FILE_BYTES_MAX,
        "reference file {shown} is {size} bytes, more than {REFERENCE_FILE_BYTES_MAX}"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("reading reference file {shown}"))?;
    let csv = tidewater_sql::is_csv_file_name(&path.to_string_lossy());
    tidewater_sql::parse_reference_file(&text, csv)
        .map_err(|error| anyhow::anyhow!("reference file {shown}: {error}"))
}

/// The reference tables of the file sources, as `local::ReferenceTables` (rows keyed by row
/// number): what `query test` and a job's start load.
pub fn file_tables(sources: &[ReferenceSource]) -> anyhow::Result<local::ReferenceTables> {
    let mut tables = local::ReferenceTables::default();
    for source in sources {
        if let ReferenceLocation::File(path) = &source.location {
            tables.add_file_rows(&source.name, read_reference_file(path)?);
        }
    }
    Ok(tables)
}

/// One record of a reference topic, for [`ReferenceInputs::apply`].
#[derive(Debug)]
pub struct ReferenceUpdate(Update);

/// A record of a reference topic, or the news that a topic has been read to its end as of when
/// its follower started.
#[derive(Debug)]
enum Update {
    Record { name: Arc<str>, key: Option<Vec<u8>>, value: Option<Vec<u8>> },
    Loaded,
}

/// What reference updates are applied to: one engine job, or (in a parallel job) the job of
/// every assigned partition together with the copy that newly assigned partitions start from.
pub trait ReferenceTarget {
    /// Sets or (with `None`) deletes a row, as `Job::update_reference` does.
    fn update_reference(
        &mut self,
        name: &str,
        key: &[u8],
        row: Option<&serde_json::Value>,
    ) -> Result<(), tidewater_sql::ReferenceError>;

    /// The rows reference input `name` holds.
    fn reference_rows(&self, name: &str) -> usize;
}

impl ReferenceTarget for Job {
    fn update_reference(
        &mut self,
        name: &str,
        key: &[u8],
        row: Option<&serde_json::Value>,
    ) -> Result<(), tidewater_sql::ReferenceError> {
        Job::update_reference(self, name, key, row)
    }

    fn reference_rows(&self, name: &str) -> usize {
        Job::reference_rows(self, name).unwrap_or(0)
    }
}

/// Per reference input: its row count and refused records on `/metrics`.
struct ReferenceMetrics {
    name: String,
    rows: Arc<Gauge>,
    refused: Arc<Counter>,
}

/// A running job's reference inputs: the file tables loaded once, the topics followed.
pub struct ReferenceInputs {
    job_name: String,
    /// The rows of the file sources, loaded by `load`.
    files: local::ReferenceTables,
    updates: mpsc::Receiver<Update>,
    n_topics: usize,
    followers: Vec<std::thread::JoinHandle<()>>,
    metrics: Vec<ReferenceMetrics>,
}

impl std::fmt::Debug for ReferenceInputs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.metrics.iter().map(|metrics| metrics.name.as_str()).collect();
        formatter
            .debug_struct("ReferenceInputs")
            .field("job_name", &self.job_name)
            .field("references", &names)
            .field("n_topics", &self.n_topics)
            .finish()
    }
}

impl ReferenceInputs {
    /// Reads the file sources and starts following the topic sources (each must exist).
    /// Followers stop when `stop` turns true or this is dropped.
    pub fn start(
        job_name: &str,
        sources: &[ReferenceSource],
        cluster: &ClusterConfig,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<ReferenceInputs> {
        let files = file_tables(sources)?;
        let (sender, updates) = mpsc::channel(UPDATES_QUEUED_MAX);
        let mut followers = Vec::new();
        for source in sources {
            if let ReferenceLocation::Topic(topic) = &source.location {
                let consumer = assigned_consumer(cluster, job_name, topic)?;
                let name: Arc<str> = Arc::from(source.name.as_str());
                let (sender, stop) = (sender.clone(), stop.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("reference-{}", source.name))
                    .spawn(move || follow(&consumer, &name, &sender, &stop))
                    .context("starting a reference topic follower")?;
                followers.push(thread);
            }
        }
        let gauges = global().gauges(
            "tidewater_query_reference_rows",
            "Rows a query job's reference table holds.",
            &["job", "reference"],
        );
        let refused = global().counters(
            "tidewater_query_reference_refused_total",
            "Reference records a query job skipped: no key, not a JSON object, or a new key beyond the table's row limit.",
            &["job", "reference"],
        );
        let metrics = sources
            .iter()
            .map(|source| ReferenceMetrics {
                name: source.name.clone(),
                rows: gauges.series(&[job_name, &source.name]),
                refused: refused.series(&[job_name, &source.name]),
            })
            .collect();
        Ok(ReferenceInputs {
            job_name: job_name.to_string(),
            files,
            updates,
            n_topics: followers.len(),
            followers,
            metrics,
        })
    }

    /// Loads the files' rows into `target`, then applies updates until every topic has been
    /// read to where it ended when following began. Returns the number of records refused
    /// meanwhile; a file that does not fit is an error.
    pub async fn load(&mut self, target: &mut impl ReferenceTarget) -> anyhow::Result<u64> {
        for (name, key, row) in self.files.iter() {
            let row = serde_json::Value::Object(row.clone());
            target
                .update_reference(name, key, Some(&row))
                .map_err(|error| anyhow::anyhow!("loading reference file rows: {error}"))?;
        }
        let mut n_loaded = 0;
        let mut n_refused = 0;
        while n_loaded < self.n_topics {
            match self.updates.recv().await {
                Some(Update::Loaded) => n_loaded += 1,
                Some(record) => n_refused += u64::from(!self.apply_record(target, record)),
                None => anyhow::bail!(
                    "the reference topics were not read to their end: the job was stopped while loading them"
                ),
            }
        }
        self.show_rows(target);
        let tables: Vec<String> = self
            .metrics
            .iter()
            .map(|metrics| format!("{}: {} rows", metrics.name, target.reference_rows(&metrics.name)))
            .collect();
        tracing::info!(job = %self.job_name, ?tables, "reference data loaded");
        Ok(n_refused)
    }

    /// Waits for the next update of a topic; `None` when the followers stopped. With no topic
    /// to follow, it waits forever.
    pub async fn recv(&mut self) -> Option<ReferenceUpdate> {
        if self.n_topics == 0 {
            return std::future::pending().await;
        }
        self.updates.recv().await.map(ReferenceUpdate)
    }

    /// Applies one update; false when it was refused (logged and counted).
    pub fn apply(&self, target: &mut impl ReferenceTarget, update: ReferenceUpdate) -> bool {
        let applied = self.apply_record(target, update.0);
        self.show_rows(target);
        applied
    }

    fn apply_record(&self, target: &mut impl ReferenceTarget, update: Update) -> bool {
        let Update::Record { name, key, value } = update else { return true };
        let refused = |reason: &str| {
            tracing::warn!(job = %self.job_name, reference = %name, reason, "a reference record was skipped");
            if let Some(metrics) = self.metrics.iter().find(|metrics| *metrics.name == *name) {
                metrics.refused.inc();
            }
            false
        };
        let Some(key) = key else {
            return refused("the record has no key: a reference topic is keyed by the row's key");
        };
        let row = match value.as_deref().map(serde_json::from_slice::<serde_json::Value>) {
            None => None,
            Some(Ok(row)) => Some(row),
            Some(Err(error)) => return refused(&format!("the value is not JSON: {error}")),
        };
        match target.update_reference(&name, &key, row.as_ref()) {
            Ok(()) => true,
            Err(error) => refused(&error.to_string()),
        }
    }

    fn show_rows(&self, target: &impl ReferenceTarget) {
        for metrics in &self.metrics {
            metrics.rows.set(target.reference_rows(&metrics.name) as f64);
        }
    }

    /// Waits (off the async threads) for the followers to leave after the stop signal.
    pub async fn join(self) {
        let ReferenceInputs { followers, updates, .. } = self;
        // A follower blocked on a full queue sees it closed and returns.
        drop(updates);
        let _ = tokio::task::spawn_blocking(move || {
            for follower in followers {
                let _ = follower.join();
            }
        })
        .await;
    }
}

/// A read_committed consumer assigned every partition of `topic` from the beginning.
fn assigned_consumer(
    cluster: &ClusterConfig,
    job_name: &str,
    topic: &str,
) -> anyhow::Result<BaseConsumer<QuietContext>> {
    let client_id = format!("tidewater-query-{job_name}-reference");
    let consumer: BaseConsumer<QuietContext> = cluster
        .consumer_config(&[
            ("client.id", &client_id),
            ("group.id", &client_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            // "Read to the end" is judged by each partition's end, never by offsets seen: a
            // compacted topic's last offsets may hold no record.
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating a reference topic reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .with_context(|| format!("looking up reference topic {topic}"))?;
    let found = metadata.topics().iter().find(|found| found.name() == topic);
    let partitions = found.map_or(0, |found| found.partitions().len());
    anyhow::ensure!(
        partitions > 0 && found.is_some_and(|found| found.error().is_none()),
        "reference topic {topic:?} does not exist"
    );
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment).with_context(|| format!("assigning reference topic {topic}"))?;
    Ok(consumer)
}

/// Reads one reference topic until `stop` or until the job that reads the updates is gone (its
/// receiver dropped: a failed round or start must not wait for a quiet topic's next record),
/// sending each record, and `Loaded` once every partition has reached its end for the first time.
fn follow(
    consumer: &BaseConsumer<QuietContext>,
    name: &Arc<str>,
    sender: &mpsc::Sender<Update>,
    stop: &watch::Receiver<bool>,
) {
    let n_partitions = consumer.assignment().map_or(0, |assignment| assignment.count());
    let mut at_end = vec![false; n_partitions];
    let mut loaded = false;
    while !*stop.borrow() && !sender.is_closed() {
        let update = match consumer.poll(FOLLOW_POLL) {
            None => continue,
            Some(Ok(message)) => Update::Record {
                name: name.clone(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
            },
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(flag) = usize::try_from(partition).ok().and_then(|index| at_end.get_mut(index)) {
                    *flag = true;
                }
                if loaded || !at_end.iter().all(|flag| *flag) {
                    continue;
                }
                loaded = true;
                Update::Loaded
            }
            Some(Err(error)) => {
                tracing::debug!(reference = %name, %error, "reading a reference topic");
                continue;
            }
        };
        if sender.blocking_send(update).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_print_and_round_trip_as_json() {
        let topic = ReferenceSource::parse("thresholds=topic:device-thresholds")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(topic.location, ReferenceLocation::Topic("device-thresholds".into()));
        assert_eq!(topic.to_string(), "thresholds=topic:device-thresholds");
        let json = serde_json::to_value(&topic).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"name": "thresholds", "topic": "device-thresholds"}));
        let file =
            ReferenceSource::parse("sites=file:/data/a=b.csv").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(file.location, ReferenceLocation::File("/data/a=b.csv".into()));
        let back: ReferenceSource = serde_json::from_value(serde_json::to_value(&file).unwrap_or_default())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(back, file);
        for bad in ["thresholds", "thresholds=kafka:t", "thresholds=topic:", "=topic:t", "a b=topic:t"] {
            assert!(ReferenceSource::parse(bad).is_err(), "{bad} parsed");
        }
        let twice = [topic.clone(), ReferenceSource { name: "THRESHOLDS".into(), ..file }];
        assert!(validate_sources(&twice).is_err_and(|error| error.contains("twice")));
    }

    #[test]
    fn records_that_cannot_be_rows_are_refused_and_the_row_is_kept() {
        let (_sender, updates) = mpsc::channel(1);
        let inputs = ReferenceInputs {
            job_name: "test".into(),
            files: local::ReferenceTables::default(),
            updates,
            n_topics: 0,
            followers: Vec::new(),
            metrics: Vec::new(),
        };
        let options = tidewater_sql::JobOptions { reference_inputs: vec!["t".into()], ..Default::default() };
        let mut job = tidewater_sql::compile("SELECT s.k, t.v INTO o FROM s JOIN t ON s.k = t.k", options)
            .unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
        let record = |key: Option<&[u8]>, value: Option<&[u8]>| {
            ReferenceUpdate(Update::Record {
                name: Arc::from("t"),
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
            })
        };
        assert!(inputs.apply(&mut job, record(Some(b"a"), Some(br#"{"k": 1, "v": "kept"}"#))));
        assert!(!inputs.apply(&mut job, record(None, Some(br#"{"k": 2}"#))), "a record without a key");
        assert!(!inputs.apply(&mut job, record(Some(b"a"), Some(b"not json"))));
        assert!(!inputs.apply(&mut job, record(Some(b"a"), Some(b"[1]"))));
        assert_eq!(job.reference_rows("t"), Some(1));
        let step = job.push("s", 0, &serde_json::json!({"k": 1}), 0);
        assert_eq!(step.outputs[0].row, serde_json::json!({"k": 1, "v": "kept"}));
        assert!(inputs.apply(&mut job, record(Some(b"a"), None)), "a tombstone");
        assert_eq!(job.reference_rows("t"), Some(0));
    }
}
