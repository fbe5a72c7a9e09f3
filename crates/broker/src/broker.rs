//! The broker's state: topics and their partitions over the log directory, the broker's
//! metadata file, and the high watermark each partition exposes to consumers.
//!
//! All methods here are blocking (file I/O, fsync); the API handlers call them from
//! `spawn_blocking`. Admin changes (create, delete, add partitions, alter configs) are serialised
//! by the metadata store's lock and always save the metadata file before touching partition
//! directories.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tidewater_kafka::ResponseError;
use tidewater_log::{Clock, FsyncPolicy, Log, LogConfig, LogDir, TopicPartition};
use uuid::Uuid;

use crate::acl::{AuthorizationConfig, Authorizer};
use crate::cleaner::{CleanTarget, Cleaner};
use crate::credentials::CredentialStore;
use crate::error::BrokerError;
use crate::groups::metadata::{GroupChange, GROUPS_DIR_NAME};
use crate::groups::offsets::OFFSETS_DIR_NAME;
use crate::groups::{Coordinator, GroupConfig, GroupStore, OffsetStore};
use crate::meta::{MetaStore, TopicMeta};
use crate::metrics::TopicMetrics;
use crate::partition::Partition;
use crate::topic_config::{self, TopicConfigs};
use crate::transactions::{TxnStore, TRANSACTIONS_DIR_NAME};

/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Producer ids reserved in the metadata file at a time. Ids are never reused: after a restart
/// allocation continues from the next block, skipping what was reserved but not handed out.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Suffix a partition directory gets while its topic is being deleted; cleaned up on start.
const DELETING_SUFFIX: &str = ".deleting";

/// Settings of the broker as a whole.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where the metadata file and every partition directory live.
    pub data_dir: std::path::PathBuf,
    pub node_id: i32,
    /// Create a topic when a producer or a metadata request names one that does not exist.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of a created one that asks for the default.
    pub default_partitions: i32,
    /// Log settings of every topic that does not override them.
    pub log_defaults: LogConfig,
    /// Consumer group timing and limits.
    pub groups: GroupConfig,
    /// Committed offsets of a group with no members are deleted after this long without a
    /// commit (Kafka offsets.retention.minutes, 7 days by default).
    pub offsets_retention_ms: i64,
    /// Whether requests are authorized against ACLs, and who bypasses them.
    pub authorization: AuthorizationConfig,
    /// The most fetch sessions (KIP-227) kept at once (Kafka's
    /// max.incremental.fetch.session.cache.slots); 0 answers every fetch without one.
    pub fetch_session_slots: usize,
}

/// An error for one topic or partition in a response: a Kafka code and a message for humans.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

/// One topic as the broker serves it. Replaced whole (copy on write) when it changes.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: TopicConfigs,
    pub partitions: Vec<Arc<Partition>>,
    /// Its produce and fetch counters (found once here, so the hot paths only add).
    pub metrics: TopicMetrics,
}

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    logs: LogDir,
    meta: Mutex<MetaStore>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    cluster_id: String,
    clock: Arc<dyn Clock>,
    /// The consumer group coordinator (membership, generations, assignments).
    pub(crate) groups: Mutex<Coordinator>,
    /// The groups' membership and assignments, durable (`store_group_changes`). Taken only
    /// when a group changed, never while `groups` is held.
    group_store: Mutex<GroupStore>,
    /// Committed offsets of every group, durable.
    pub(crate) offsets: Mutex<OffsetStore>,
    /// Users' SCRAM credentials, durable; what SASL listeners authenticate against.
    pub credentials: Arc<CredentialStore>,
    /// Transactional ids and their transactions, durable.
    pub(crate) transactions: Mutex<TxnStore>,
    /// The ACLs and who may do what, durable.
    pub(crate) acls: Authorizer,
    /// The current block of producer ids: next to hand out, and the end of the block.
    producer_ids: Mutex<(i64, i64)>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Compaction of the partitions whose cleanup policy includes `compact`, started by `tick`.
    pub(crate) cleaner: Cleaner,
    /// Consumers' fetch sessions (KIP-227).
    pub(crate) fetch_sessions: crate::fetch_sessions::FetchSessions,
}

impl Broker {
    /// Opens the data directory: reads the metadata file, recovers every partition log, creates
    /// partitions the metadata names but the disk lacks, and finishes interrupted deletes.
    pub fn open(config: BrokerConfig, clock: Arc<dyn Clock>) -> Result<Broker, BrokerError> {
        let root = config.data_dir.clone();
        fs::create_dir_all(&root)
            .map_err(|error| BrokerError::Meta { path: root.clone(), reason: error.to_string() })?;
        remove_interrupted_deletes(&root);
        let meta = MetaStore::open(&root)?;
        let topic_log_config = |topic: &str| -> LogConfig {
            meta.meta
                .topics
                .get(topic)
                .and_then(|topic| topic_config::log_config(&config.log_defaults, &topic.configs).ok())
                .unwrap_or_else(|| config.log_defaults.clone())
        };
        let logs =
            LogDir::open(&root, clock.clone(), |topic_partition| topic_log_config(&topic_partition.topic))?;
        let mut topics = BTreeMap::new();
        for (name, topic_meta) in &meta.meta.topics {
            let log_config = topic_log_config(name);
            let mut partitions = Vec::new();
            for index in 0..topic_meta.partitions {
                let topic_partition = TopicPartition::new(name.clone(), index)?;
                let log = logs.get_or_create(&topic_partition, log_config.clone())?;
                partitions.push(Arc::new(Partition::open(log, clock.now_ms())?));
            }
            let topic = Topic {
                name: name.clone(),
                id: topic_meta.topic_id,
                configs: topic_meta.configs.clone(),
                partitions,
                metrics: TopicMetrics::of(name),
            };
            topics.insert(name.clone(), Arc::new(topic));
        }
        for (topic_partition, _) in logs.logs() {
            if !topics.contains_key(&topic_partition.topic) {
                tracing::warn!(%topic_partition, "partition directory belongs to no known topic; it is kept but not served");
            }
        }
        let cluster_id = meta.meta.cluster_id.clone();
        let offsets = OffsetStore::open(&root, clock.clone())?;
        let (group_store, stored_groups) = GroupStore::open(&root, clock.clone())?;
        let groups = Coordinator::restore(config.groups, stored_groups, clock.now_ms())
            .hold_sync_answers_until_stored();
        let transactions = TxnStore::open(&root, clock.clone())?;
        let acls = Authorizer::open(&config.authorization, &root, clock.clone())?;
        let credentials = Arc::new(CredentialStore::open(&root, clock.clone())?);
        let fetch_sessions = crate::fetch_sessions::FetchSessions::new(config.fetch_session_slots);
        let broker = Broker {
            credentials,
            config,
            logs,
            meta: Mutex::new(meta),
            topics: RwLock::new(topics),
            cluster_id,
            clock,
            producer_ids: Mutex::new((0, 0)),
            groups: Mutex::new(groups),
            group_store: Mutex::new(group_store),
            offsets: Mutex::new(offsets),
            transactions: Mutex::new(transactions),
            acls,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            cleaner: Cleaner::default(),
            fetch_sessions,
        };
        broker.recover_transactions();
        Ok(broker)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_topics().get(name).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.read_topics().values().cloned().collect()
    }

    /// One partition, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, ApiError> {
        self.topic(topic)
            .and_then(|topic| {
                usize::try_from(partition).ok().and_then(|index| topic.partitions.get(index).cloned())
            })
            .ok_or_else(|| {
                ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("{topic}-{partition} does not exist"),
                )
            })
    }

    /// The topic, auto-created with the default partition count if allowed and missing.
    pub fn topic_or_create(&self, name: &str, allow_auto_create: bool) -> Result<Arc<Topic>, ApiError> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        if !(allow_auto_create && self.config.auto_create_topics) {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            ));
        }
        match self.create_topic(name, -1, TopicConfigs::new(), false) {
            Ok(topic) => Ok(topic),
            // Another request created it meanwhile.
            Err(error) if error.code == ResponseError::TopicAlreadyExists => self.topic(name).ok_or(error),
            Err(error) => Err(error),
        }
    }

    /// The offset up to which consumers may read. Under `fsync = always` that is what is on disk,
    /// so a consumer never sees a record that a crash could take back; otherwise it is the log
    /// end offset, as in Kafka with a single replica.
    pub fn high_watermark(&self, log: &Log) -> i64 {
        match log.config().fsync {
            FsyncPolicy::Always => log.durable_offset(),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => log.end_offset(),
        }
    }

    /// Creates a topic. `partitions` of -1 means the default. With `validate_only` nothing changes.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<Arc<Topic>, ApiError> {
        TopicPartition::new(name, 0)
            .map_err(|error| ApiError::new(ResponseError::InvalidTopicException, error.to_string()))?;
        let partitions = if partitions == -1 { self.config.default_partitions } else { partitions };
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("partition count {partitions} is outside 1..={PARTITIONS_PER_TOPIC_MAX}"),
            ));
        }
        let log_config = topic_config::log_config(&self.config.log_defaults, &configs)
            .map_err(|reason| ApiError::new(ResponseError::InvalidConfig, reason))?;
        let mut meta = self.lock_meta();
        if meta.meta.topics.contains_key(name) {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        let topic_id = Uuid::new_v4();
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_string(),
                id: topic_id,
                configs,
                partitions: Vec::new(),
                metrics: TopicMetrics::of(name),
            }));
        }
        meta.meta
            .topics
            .insert(name.to_string(), TopicMeta { topic_id, partitions, configs: configs.clone() });
        if let Err(error) = meta.save() {
            meta.meta.topics.remove(name);
            return Err(storage_error(error));
        }
        let mut logs = Vec::new();
        for index in 0..partitions {
            logs.push(self.open_partition(name, index, &log_config)?);
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id: topic_id,
            configs,
            partitions: logs,
            metrics: TopicMetrics::of(name),
        });
        self.write_topics().insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, ApiError> {
        let mut meta = self.lock_meta();
        let Some(removed) = meta.meta.topics.remove(name) else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            ));
        };
        if let Err(error) = meta.save() {
            meta.meta.topics.insert(name.to_string(), removed);
            return Err(storage_error(error));
        }
        self.write_topics().remove(name);
        for index in 0..removed.partitions {
            let Ok(topic_partition) = TopicPartition::new(name, index) else { continue };
            if let Some(log) = self.logs.remove(&topic_partition) {
                // Rename first so a crash mid-delete leaves a directory the next start removes.
                let dir = log.dir().to_path_buf();
                let mut deleting = dir.clone().into_os_string();
                deleting.push(DELETING_SUFFIX);
                if let Err(error) = fs::rename(&dir, &deleting).and_then(|()| fs::remove_dir_all(&deleting)) {
                    tracing::warn!(%topic_partition, %error, "could not remove a deleted partition's files");
                }
            }
        }
        TopicMetrics::forget(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(removed.topic_id)
    }

    /// Raises a topic's partition count to `count`.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), ApiError> {
        let mut meta = self.lock_meta();
        let Some(topic_meta) = meta.meta.topics.get(name).cloned() else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            ));
        };
        if count <= topic_meta.partitions || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic {name} has {} partitions; the new count must be larger and at most {PARTITIONS_PER_TOPIC_MAX}, not {count}",
                    topic_meta.partitions
                ),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic_config::log_config(&self.config.log_defaults, &topic_meta.configs)
            .map_err(|reason| ApiError::new(ResponseError::InvalidConfig, reason))?;
        meta.meta.topics.insert(name.to_string(), TopicMeta { partitions: count, ..topic_meta.clone() });
        if let Err(error) = meta.save() {
            meta.meta.topics.insert(name.to_string(), topic_meta);
            return Err(storage_error(error));
        }
        let Some(old) = self.topic(name) else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name} vanished"),
            ));
        };
        let mut partitions = old.partitions.clone();
        for index in old.partitions.len() as i32..count {
            partitions.push(self.open_partition(name, index, &log_config)?);
        }
        let topic = Topic {
            name: old.name.clone(),
            id: old.id,
            configs: old.configs.clone(),
            partitions,
            metrics: old.metrics.clone(),
        };
        self.write_topics().insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides with `configs` (already merged by the caller).
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let log_config = topic_config::log_config(&self.config.log_defaults, &configs)
            .map_err(|reason| ApiError::new(ResponseError::InvalidConfig, reason))?;
        let mut meta = self.lock_meta();
        let Some(topic_meta) = meta.meta.topics.get(name).cloned() else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            ));
        };
        if validate_only {
            return Ok(());
        }
        meta.meta
            .topics
            .insert(name.to_string(), TopicMeta { configs: configs.clone(), ..topic_meta.clone() });
        if let Err(error) = meta.save() {
            meta.meta.topics.insert(name.to_string(), topic_meta);
            return Err(storage_error(error));
        }
        let Some(old) = self.topic(name) else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {name} vanished"),
            ));
        };
        for partition in &old.partitions {
            partition.log.set_config(log_config.clone()).map_err(|error| storage_error(error.into()))?;
        }
        let topic = Topic {
            name: old.name.clone(),
            id: old.id,
            configs,
            partitions: old.partitions.clone(),
            metrics: old.metrics.clone(),
        };
        self.write_topics().insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, "changed topic configs");
        Ok(())
    }

    /// Moves a partition's log start offset to `offset` (DeleteRecords); -1 means the high
    /// watermark. Returns the new log start offset (Kafka's low watermark). An offset past the
    /// high watermark is OFFSET_OUT_OF_RANGE, as in Kafka.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, ApiError> {
        let partition = self.partition(topic, partition)?;
        let high_watermark = self.high_watermark(&partition.log);
        let target = if offset == -1 { high_watermark } else { offset };
        if !(0..=high_watermark).contains(&target) {
            return Err(ApiError::new(
                ResponseError::OffsetOutOfRange,
                format!("offset {offset} is not between 0 and the high watermark {high_watermark}"),
            ));
        }
        let log_start_offset = partition
            .log
            .delete_records_before(target)
            .map_err(|error| ApiError::new(crate::error::log_error_code(&error), error.to_string()))?;
        partition.forget_deleted_aborts();
        Ok(log_start_offset)
    }

    /// A producer id no producer has had before (InitProducerId).
    pub fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        let mut block = self.producer_ids.lock().expect("producer id mutex poisoned by a panic");
        if block.0 >= block.1 {
            let mut meta = self.lock_meta();
            let start = meta.meta.next_producer_id_block;
            meta.meta.next_producer_id_block = start + PRODUCER_ID_BLOCK;
            if let Err(error) = meta.save() {
                meta.meta.next_producer_id_block = start;
                return Err(storage_error(error));
            }
            *block = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Makes long-polling fetches answer now instead of waiting out their time, for shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        for topic in self.topics() {
            for partition in &topic.partitions {
                partition.fetch_waiters.wake_all();
            }
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Housekeeping for every partition: segment age, interval fsync, retention, and a round of
    /// compaction on a thread of its own unless one is still running.
    pub fn tick(&self) {
        for (topic_partition, error) in self.logs.tick() {
            tracing::error!(%topic_partition, %error, "housekeeping failed");
        }
        let now = self.clock.now_ms();
        let mut compacted = Vec::new();
        for topic in self.topics() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                partition.expire_producers(now);
                partition.forget_deleted_aborts();
                if partition.log.config().cleanup_policy.compact {
                    compacted
                        .push((format!("{}-{index}", topic.name), CleanTarget::Partition(partition.clone())));
                }
            }
        }
        // The journals a start replays, so that it reads their live keys, not their history.
        compacted
            .push((OFFSETS_DIR_NAME.to_string(), CleanTarget::Journal(self.lock_offsets().journal_log())));
        compacted
            .push((GROUPS_DIR_NAME.to_string(), CleanTarget::Journal(self.lock_group_store().journal_log())));
        compacted.push((
            TRANSACTIONS_DIR_NAME.to_string(),
            CleanTarget::Journal(self.lock_transactions().journal_log()),
        ));
        self.cleaner.start_round(compacted, now);
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Consumer group and transaction timeouts: expired sessions, join phases whose time is up,
    /// offsets of empty groups past retention, transactions past their timeout. Called several
    /// times a second.
    pub fn tick_groups(&self) {
        self.tick_transactions();
        let now = self.clock.now_ms();
        let mut groups = self.lock_groups();
        groups.tick(now);
        // Expiries, and anything a handler marked but did not write (it writes what it marked,
        // so this is usually nothing).
        let changes = groups.take_changes();
        let held_answers = groups.take_held_sync_answers();
        let expired: Vec<String> = {
            let offsets = self.lock_offsets();
            offsets
                .groups()
                .into_iter()
                .filter(|group| !groups.has_members(group))
                .filter(|group| {
                    offsets
                        .last_commit_ms(group)
                        .is_some_and(|last| now - last > self.config.offsets_retention_ms)
                })
                .collect()
        };
        drop(groups);
        self.store_group_changes(changes);
        for (respond, answer) in held_answers {
            let _ = respond.send(answer);
        }
        for group in expired {
            let mut offsets = self.lock_offsets();
            let keys: Vec<_> = offsets
                .group(&group)
                .into_iter()
                .map(|(topic, partition, _)| ((topic.to_string(), partition), None))
                .collect();
            match offsets.write(&group, keys) {
                Ok(()) => tracing::info!(%group, "expired the committed offsets of an empty group"),
                Err(error) => tracing::error!(%group, %error, "could not expire offsets"),
            }
        }
    }

    pub(crate) fn lock_groups(&self) -> MutexGuard<'_, Coordinator> {
        self.groups.lock().expect("group coordinator mutex poisoned by a panic")
    }

    /// Writes group snapshots taken with `Coordinator::take_changes` (after the group lock was
    /// let go) and waits until they are on disk. A failure is logged: the group carries on in
    /// memory, and a restart before its next successful write loads its previous record (its
    /// members are then refused and rejoin, as they did before groups were stored).
    pub(crate) fn store_group_changes(&self, changes: Vec<GroupChange>) {
        if changes.is_empty() {
            return;
        }
        let groups: Vec<String> = changes.iter().map(|change| change.group_id.clone()).collect();
        if let Err(error) = self.lock_group_store().write(changes, self.clock.now_ms()) {
            tracing::error!(?groups, %error, "could not store consumer group metadata");
        }
    }

    fn lock_group_store(&self) -> MutexGuard<'_, GroupStore> {
        self.group_store.lock().expect("group store mutex poisoned by a panic")
    }

    pub(crate) fn lock_offsets(&self) -> MutexGuard<'_, OffsetStore> {
        self.offsets.lock().expect("offset store mutex poisoned by a panic")
    }

    /// Flushes and closes every partition log and the internal journals. A cleaning pass in
    /// progress gives up when its log closes.
    pub fn close(&self) -> Result<(), BrokerError> {
        // Producer state as of the end of each partition, so the next start reads no batch to
        // rebuild it.
        for topic in self.topics() {
            for partition in &topic.partitions {
                partition.snapshot_now();
            }
        }
        self.lock_transactions().close()?;
        self.lock_offsets().close()?;
        self.lock_group_store().close()?;
        self.acls.close()?;
        self.credentials.close()?;
        let closed = self.logs.close();
        self.cleaner.stop();
        Ok(closed?)
    }

    /// Creates (or opens) one partition's log and its producer state.
    fn open_partition(
        &self,
        topic: &str,
        index: i32,
        log_config: &LogConfig,
    ) -> Result<Arc<Partition>, ApiError> {
        let topic_partition =
            TopicPartition::new(topic, index).map_err(|error| storage_error(error.into()))?;
        let log = self
            .logs
            .get_or_create(&topic_partition, log_config.clone())
            .map_err(|error| storage_error(error.into()))?;
        let partition =
            Partition::open(log, self.clock.now_ms()).map_err(|error| storage_error(error.into()))?;
        Ok(Arc::new(partition))
    }

    fn lock_meta(&self) -> MutexGuard<'_, MetaStore> {
        self.meta.lock().expect("broker metadata mutex poisoned by a panic")
    }

    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().expect("topic table lock poisoned by a panic")
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.write().expect("topic table lock poisoned by a panic")
    }
}

fn storage_error(error: BrokerError) -> ApiError {
    tracing::error!(%error, "storage error during an admin operation");
    ApiError::new(ResponseError::KafkaStorageError, error.to_string())
}

/// Removes partition directories left half-deleted by a crash during DeleteTopics.
fn remove_interrupted_deletes(root: &std::path::Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(DELETING_SUFFIX) {
            if let Err(error) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "could not finish deleting");
            }
        }
    }
}
