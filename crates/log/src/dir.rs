//! A data directory holding many topic-partition logs, one subdirectory each, named
//! `<topic>-<partition>` as in Kafka.
//!
//! Opening the directory opens and recovers every log in it. This is the "log manager" the
//! broker sits on; it holds no Kafka protocol state.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::log::{sync_dir, Log};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_CHARS_MAX: usize = 249;

/// A topic name and partition index, validated as Kafka validates them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Result<Self, LogError> {
        let topic = topic.into();
        let legal = !topic.is_empty()
            && topic.len() <= TOPIC_NAME_CHARS_MAX
            && topic != "."
            && topic != ".."
            && topic.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
        if !legal || partition < 0 {
            return Err(LogError::InvalidConfig {
                reason: format!(
                    "invalid topic-partition {topic:?}/{partition}: topic names are 1 to {TOPIC_NAME_CHARS_MAX} \
                     characters of [a-zA-Z0-9._-], partitions are non-negative"
                ),
            });
        }
        Ok(TopicPartition { topic, partition })
    }

    /// Parses a directory name `<topic>-<partition>`; topics may themselves contain '-'.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (topic, partition) = name.rsplit_once('-')?;
        TopicPartition::new(topic, partition.parse().ok()?).ok()
    }

    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// All logs under one data directory.
#[derive(Debug)]
pub struct LogDir {
    root: PathBuf,
    clock: Arc<dyn Clock>,
    logs: Mutex<BTreeMap<TopicPartition, Arc<Log>>>,
}

impl LogDir {
    /// Opens `root`, creating it if needed, and opens (recovering) every log found in it with
    /// `config_for` choosing each one's configuration.
    pub fn open(
        root: impl Into<PathBuf>,
        clock: Arc<dyn Clock>,
        config_for: impl Fn(&TopicPartition) -> LogConfig,
    ) -> Result<LogDir, LogError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|error| LogError::io("create data directory", &root, error))?;
        let mut logs = BTreeMap::new();
        let entries = fs::read_dir(&root).map_err(|error| LogError::io("list", &root, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| LogError::io("list", &root, error))?;
            let is_dir = entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false);
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(topic_partition) = TopicPartition::from_dir_name(&name).filter(|_| is_dir) else {
                continue;
            };
            let log = Log::open(entry.path(), config_for(&topic_partition), clock.clone())?;
            logs.insert(topic_partition, Arc::new(log));
        }
        Ok(LogDir { root, clock, logs: Mutex::new(logs) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn get(&self, topic_partition: &TopicPartition) -> Option<Arc<Log>> {
        self.lock().get(topic_partition).cloned()
    }

    /// The log of `topic_partition`, created with `config` if it does not exist yet.
    pub fn get_or_create(
        &self,
        topic_partition: &TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        let mut logs = self.lock();
        if let Some(log) = logs.get(topic_partition) {
            return Ok(log.clone());
        }
        let log =
            Arc::new(Log::open(self.root.join(topic_partition.dir_name()), config, self.clock.clone())?);
        sync_dir(&self.root)?;
        logs.insert(topic_partition.clone(), log.clone());
        Ok(log)
    }

    /// Stops managing a log and closes it (flushing what it has), leaving its files for the
    /// caller to delete. Readers that still hold the log get `LogError::Closed`.
    pub fn remove(&self, topic_partition: &TopicPartition) -> Option<Arc<Log>> {
        let log = self.lock().remove(topic_partition)?;
        if let Err(error) = log.close() {
            tracing::warn!(%topic_partition, %error, "closing a removed log failed");
        }
        Some(log)
    }

    pub fn logs(&self) -> Vec<(TopicPartition, Arc<Log>)> {
        self.lock().iter().map(|(topic_partition, log)| (topic_partition.clone(), log.clone())).collect()
    }

    /// Runs `Log::tick` on every log; a failing log is reported and does not stop the others.
    pub fn tick(&self) -> Vec<(TopicPartition, LogError)> {
        self.logs()
            .into_iter()
            .filter_map(|(topic_partition, log)| log.tick().err().map(|error| (topic_partition, error)))
            .collect()
    }

    /// Closes every log (flush and write indexes). Returns the first error after trying all.
    pub fn close(&self) -> Result<(), LogError> {
        let mut first_error = None;
        for (topic_partition, log) in self.logs() {
            if let Err(error) = log.close() {
                tracing::error!(%topic_partition, %error, "closing log failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, Arc<Log>>> {
        self.logs.lock().expect("log directory mutex poisoned by a panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_partition_names_round_trip_and_reject_bad_names() {
        let parsed = TopicPartition::from_dir_name("my-topic-3").expect("parses");
        assert_eq!(parsed, TopicPartition::new("my-topic", 3).expect("valid"));
        assert_eq!(parsed.dir_name(), "my-topic-3");
        for bad in ["", "a/b", "..", "sp ace"] {
            assert!(TopicPartition::new(bad, 0).is_err(), "{bad:?} accepted");
        }
        assert!(TopicPartition::new("x".repeat(TOPIC_NAME_CHARS_MAX + 1), 0).is_err());
        assert!(TopicPartition::new("ok", -1).is_err());
        assert_eq!(TopicPartition::from_dir_name("nodash"), None);
    }
}
