//! A query job scaled out over instances that share its input partitions, still exactly once.
//!
//! Like Azure Stream Analytics' `PARTITION BY PartitionId` ("embarrassingly parallel") jobs, each
//! input partition number is processed on its own: partition N of every input feeds one engine
//! `Job` with its own state, watermark and checkpoint (key `{job}#{N}`). That is right for queries
//! whose groups live in one partition, such as per-device windows over a topic keyed by device
//! id; a query that combines partitions (a global count) gives one result per partition.
//!
//! Instances join the consumer group `tidewater-query-{job}` (range assignment, so partition N
//! of every input goes to the same instance) and each commits, per checkpoint interval, one Kafka
//! transaction holding its output rows, the checkpoints of its partitions, and its consumer
//! offsets (`send_offsets_to_transaction` with the consumer's group metadata, KIP-447). The
//! offsets the group resumes from and the state a new owner restores therefore always come from
//! the same commit. Before partitions are revoked the instance commits what it has; a zombie that
//! missed the rebalance cannot commit, because the broker refuses offsets from a finished
//! generation, so its transaction aborts. Any such failure ends the round: the instance drops
//! its state and joins again, restoring from the committed checkpoints.
//!
//! Reference inputs are read whole at the start of every round, before the instance joins the
//! group; each assigned partition's job gets its own copy of the tables (loaded before its
//! checkpoint is restored), and every later record is applied to all of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tidewater_client::{ClusterConfig, QuietContext};
use tidewater_sql::{local, Job, ReferenceError};
use tokio::sync::watch;

use super::delivery::Deliveries;
use super::metrics::QueryMetrics;
use super::reference::{ReferenceInputs, ReferenceTarget};

use super::runner::{
    blocking, caught_up, enqueue_checkpoint, ensure_checkpoint_topic, now_ms, read_latest_checkpoint,
    send_step, transactional_producer, CheckpointRecord, Counts, InputOffsets, QueryJobSettings,
    StartPosition, TRANSACTION_TIMEOUT,
};

/// How long an instance waits before it joins again after a failed round.
const REJOIN_DELAY: Duration = Duration::from_secs(1);
/// A killed instance's open transaction holds back read_committed readers until it times out;
/// shorter than librdkafka's default (60 s) so a takeover restores sooner.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// One input partition number's engine job.
struct PartitionJob {
    job: Job,
    /// The next offset of each input partition this job reads.
    next_offsets: InputOffsets,
    counts: Counts,
    /// Whether anything changed since the last checkpoint.
    dirty: bool,
}

/// What the loop and the rebalance callbacks share.
struct Shared {
    settings: QueryJobSettings,
    cluster: ClusterConfig,
    producer: FutureProducer<QuietContext>,
    /// Reports of the records in the open transaction, read before it commits.
    deliveries: Deliveries,
    metrics: QueryMetrics,
    jobs: BTreeMap<i32, PartitionJob>,
    /// The reference tables as their topics and files hold them now: what the job of a newly
    /// assigned partition is loaded with before its checkpoint is restored.
    tables: local::ReferenceTables,
    /// An error met inside a rebalance callback, for the loop to end the round with.
    failed: Option<anyhow::Error>,
}

/// A parallel instance's reference tables: every assigned partition's job holds its own copy
/// (the engine's jobs share nothing), and `tables` the copy new partitions start from.
struct Replicas<'a> {
    tables: &'a mut local::ReferenceTables,
    jobs: &'a mut BTreeMap<i32, PartitionJob>,
    max_rows: usize,
}

impl ReferenceTarget for Replicas<'_> {
    fn update_reference(
        &mut self,
        name: &str,
        key: &[u8],
        row: Option<&serde_json::Value>,
    ) -> Result<(), ReferenceError> {
        let map = match row {
            None => None,
            Some(serde_json::Value::Object(map)) => Some(map.clone()),
            Some(other) => {
                let found = if other.is_array() { "an array" } else { "a JSON value that is not an object" };
                return Err(ReferenceError::NotAnObject { name: name.to_string(), found: found.to_string() });
            }
        };
        // Refused as an engine table would refuse it, also while no partition is assigned.
        if map.is_some() && !self.tables.contains(name, key) && self.tables.rows(name) >= self.max_rows {
            return Err(ReferenceError::Full {
                name: name.to_string(),
                max_rows: self.max_rows,
                key: String::from_utf8_lossy(key).into_owned(),
            });
        }
        for partition_job in self.jobs.values_mut() {
            partition_job.job.update_reference(name, key, row)?;
        }
        self.tables.update(name, key, map);
        Ok(())
    }

    fn reference_rows(&self, name: &str) -> usize {
        self.tables.rows(name)
    }
}

struct ParallelContext {
    shared: Arc<Mutex<Shared>>,
    quiet: QuietContext,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl rdkafka::client::ClientContext for ParallelContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.quiet.log(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.quiet.error(error, reason);
    }
}

impl ConsumerContext for ParallelContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else { return };
        let mut shared = lock(&self.shared);
        // Commit while the generation that owns the partitions is still current; the next
        // owner resumes exactly from this commit.
        if let Some(metadata) = consumer.group_metadata() {
            if let Err(error) = commit_round(&mut shared, &metadata) {
                shared.failed.get_or_insert(error);
            }
        }
        for element in partitions.elements() {
            shared.jobs.remove(&element.partition());
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(partitions) = rebalance else { return };
        let mut shared = lock(&self.shared);
        for element in partitions.elements() {
            let partition = element.partition();
            if shared.jobs.contains_key(&partition) {
                continue;
            }
            match restore(&shared.settings, &shared.cluster, partition, &shared.tables) {
                Ok(job) => {
                    shared.jobs.insert(partition, job);
                }
                Err(error) => {
                    shared.failed.get_or_insert(error);
                }
            }
        }
        // Each assigned (input, partition) holds its job's watermark until it is read from or
        // found empty (`Job::expect_partition`).
        for element in partitions.elements() {
            if let Some(partition_job) = shared.jobs.get_mut(&element.partition()) {
                partition_job.job.expect_partition(element.topic(), element.partition());
            }
        }
    }
}

fn checkpoint_key(name: &str, partition: i32) -> String {
    format!("{name}#{partition}")
}

fn compile(settings: &QueryJobSettings) -> anyhow::Result<Job> {
    tidewater_sql::compile(&settings.sql, settings.options.clone()).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the query does not compile:\n{}", lines.join("\n"))
    })
}

/// Partition `partition`'s job from its last committed checkpoint, or a fresh one, its
/// reference tables loaded first.
fn restore(
    settings: &QueryJobSettings,
    cluster: &ClusterConfig,
    partition: i32,
    tables: &local::ReferenceTables,
) -> anyhow::Result<PartitionJob> {
    let mut job = compile(settings)?;
    tables.load_into(&mut job).map_err(|error| anyhow::anyhow!("loading reference data: {error}"))?;
    let key = checkpoint_key(&settings.name, partition);
    let mut counts = Counts::default();
    let mut next_offsets = InputOffsets::default();
    if let Some(record) = read_latest_checkpoint(cluster, &key)? {
        job.restore(&record.state).map_err(|error| anyhow::anyhow!("restoring {key}: {error}"))?;
        counts = record.counts;
        next_offsets = InputOffsets::from_checkpoint(&record.offsets);
    }
    tracing::info!(job = %settings.name, partition, events = counts.events, "partition assigned");
    Ok(PartitionJob { job, next_offsets, counts, dirty: false })
}

/// Emits what processing time closes, then commits every changed partition's checkpoint and the
/// consumer offsets with the outputs in one transaction, and opens the next.
fn commit_round(shared: &mut Shared, metadata: &ConsumerGroupMetadata) -> anyhow::Result<()> {
    let Shared { settings, producer, deliveries, metrics, jobs, .. } = shared;
    let now = now_ms();
    for partition_job in jobs.values_mut() {
        let step = partition_job.job.advance_processing_time(now);
        if !step.outputs.is_empty() || !step.late.is_empty() {
            partition_job.dirty = true;
        }
        send_step(producer, deliveries, settings, metrics, step, &mut partition_job.counts)?;
    }
    metrics.watermarks(jobs.values().map(|partition_job| &partition_job.job));
    let mut offsets = TopicPartitionList::new();
    let mut changed = false;
    for (partition, partition_job) in jobs.iter_mut() {
        for (topic, input_partition, offset) in partition_job.next_offsets.iter() {
            offsets.add_partition_offset(topic, input_partition, Offset::Offset(offset))?;
        }
        if !partition_job.dirty {
            continue;
        }
        let record =
            CheckpointRecord::new(&partition_job.job, &partition_job.next_offsets, partition_job.counts, now);
        enqueue_checkpoint(producer, deliveries, &checkpoint_key(&settings.name, *partition), &record)?;
        partition_job.dirty = false;
        changed = true;
    }
    if !changed {
        return Ok(());
    }
    if offsets.count() > 0 {
        producer
            .send_offsets_to_transaction(&offsets, metadata, TRANSACTION_TIMEOUT)
            .context("committing consumer offsets in the transaction")?;
    }
    let started = std::time::Instant::now();
    // A record the broker refused fails the round with its reason, before the commit would
    // fail with only a count of failed messages.
    deliveries.settle(producer).context("writing a checkpoint transaction")?;
    producer.commit_transaction(TRANSACTION_TIMEOUT).context("committing a checkpoint transaction")?;
    metrics.checkpointed(started);
    producer.begin_transaction().context("beginning a transaction")?;
    Ok(())
}

/// Runs the job as one of possibly many instances until `stop` turns true.
pub async fn run_parallel_query_job(
    settings: QueryJobSettings,
    cluster: ClusterConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    compile(&settings)?;
    anyhow::ensure!(
        !matches!(settings.start_from, StartPosition::Timestamp(_)),
        "a parallel job starts from earliest or latest"
    );
    ensure_checkpoint_topic(&cluster).await?;
    loop {
        match run_round(&settings, &cluster, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::warn!(job = %settings.name, error = %format!("{error:#}"),
                    "this instance's round ended; joining again from the committed checkpoints");
                tokio::select! {
                    _ = tokio::time::sleep(REJOIN_DELAY) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    }
}

/// One membership of the group: from joining to stopping or failing.
async fn run_round(
    settings: &QueryJobSettings,
    cluster: &ClusterConfig,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let transactional_id = format!("tidewater-query-{}-{}", settings.name, &instance[..12]);
    let producer = transactional_producer(
        cluster,
        &transactional_id,
        &[("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)],
    )?;
    blocking(|| producer.begin_transaction()).context("beginning a transaction")?;
    // Every round reads the reference tables anew before it joins the group, so that no
    // partition's job sees an event before its tables are whole.
    let max_rows = settings.options.max_reference_rows;
    let mut references = ReferenceInputs::start(&settings.name, &settings.references, cluster, stop.clone())?;
    let mut tables = local::ReferenceTables::default();
    references.load(&mut Replicas { tables: &mut tables, jobs: &mut BTreeMap::new(), max_rows }).await?;
    let shared = Arc::new(Mutex::new(Shared {
        settings: settings.clone(),
        cluster: cluster.clone(),
        producer,
        deliveries: Deliveries::default(),
        metrics: QueryMetrics::of(&settings.name, &compile(settings)?),
        jobs: BTreeMap::new(),
        tables,
        failed: None,
    }));
    let group_id = format!("tidewater-query-{}", settings.name);
    let consumer: StreamConsumer<ParallelContext> = cluster
        .client_config(&[
            ("group.id", &group_id),
            ("client.id", &transactional_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            ("partition.assignment.strategy", "range"),
            (
                "auto.offset.reset",
                if settings.start_from == StartPosition::Latest { "latest" } else { "earliest" },
            ),
            // Reaching a partition's end tells its job there is nothing more to wait for there.
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(ParallelContext { shared: shared.clone(), quiet: QuietContext::default() })
        .context("creating the job's consumer")?;
    let probe = compile(settings)?;
    let inputs: Vec<String> = probe.inputs();
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).context("subscribing to the inputs")?;
    tracing::info!(job = %settings.name, instance = %transactional_id, ?inputs, "parallel query job instance running");

    let mut checkpoint_timer = tokio::time::interval(settings.checkpoint_interval);
    checkpoint_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        if let Some(error) = lock(&shared).failed.take() {
            break Err(error);
        }
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break Ok(());
                }
            }
            _ = checkpoint_timer.tick() => {
                let Some(metadata) = consumer.group_metadata() else { continue };
                let mut guard = lock(&shared);
                if let Err(error) = blocking(|| commit_round(&mut guard, &metadata)) {
                    break Err(error);
                }
            }
            update = references.recv() => {
                let Some(update) = update else {
                    break Err(anyhow::anyhow!("a reference topic follower stopped"));
                };
                let mut guard = lock(&shared);
                let Shared { tables, jobs, .. } = &mut *guard;
                references.apply(&mut Replicas { tables, jobs, max_rows }, update);
            }
            message = consumer.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(KafkaError::PartitionEOF(partition)) => {
                        let mut guard = lock(&shared);
                        let shared = &mut *guard;
                        let Some(partition_job) = shared.jobs.get_mut(&partition) else { continue };
                        let step = caught_up(&mut partition_job.job, &inputs, partition);
                        if let Err(error) = send_step(&shared.producer, &mut shared.deliveries, &shared.settings, &shared.metrics, step, &mut partition_job.counts) {
                            break Err(error);
                        }
                        continue;
                    }
                    Err(error) => {
                        tracing::debug!(job = %settings.name, %error, "reading inputs");
                        continue;
                    }
                };
                let mut guard = lock(&shared);
                let shared = &mut *guard;
                let Some(partition_job) = shared.jobs.get_mut(&message.partition()) else { continue };
                partition_job.next_offsets.advance(message.topic(), message.partition(), message.offset() + 1);
                partition_job.counts.events += 1;
                shared.metrics.events.inc();
                partition_job.dirty = true;
                let arrival_ms = message.timestamp().to_millis().unwrap_or_else(now_ms);
                let Some(payload) = message.payload() else { continue };
                // Only the fields the query reads are decoded (`Job::push_json_bytes`).
                let step = match partition_job.job.push_json_bytes(message.topic(), message.partition(), payload, arrival_ms) {
                    Ok(step) => step,
                    Err(error) => {
                        partition_job.counts.errors += 1;
                        tracing::warn!(job = %settings.name, topic = message.topic(), partition = message.partition(),
                            offset = message.offset(), %error, "an input record is not JSON; skipped");
                        continue;
                    }
                };
                if let Err(error) = send_step(&shared.producer, &mut shared.deliveries, &shared.settings, &shared.metrics, step, &mut partition_job.counts) {
                    break Err(error);
                }
            }
        }
    };
    match &result {
        Ok(()) => {
            // A last commit, then leave the group (the revocation commits nothing new).
            if let Some(metadata) = consumer.group_metadata() {
                let mut guard = lock(&shared);
                blocking(|| commit_round(&mut guard, &metadata))?;
            }
        }
        Err(_) => {
            let mut guard = lock(&shared);
            guard.deliveries.clear();
            let _ = blocking(|| guard.producer.abort_transaction(TRANSACTION_TIMEOUT));
        }
    }
    lock(&shared).jobs.clear();
    consumer.unsubscribe();
    references.join().await;
    result
}
