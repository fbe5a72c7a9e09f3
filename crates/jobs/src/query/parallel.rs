//! A query job scaled out over instances that share its input partitions, exactly once or at
//! least once.
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
//! At least once (`Delivery::AtLeastOnce`) there is no transaction: rows are produced as the
//! engine emits them, and at each checkpoint interval the instance waits until the broker has
//! acknowledged every row produced so far (the single runner's `settle_rows`), then writes its
//! changed partitions' checkpoints, waits for those too, and only then commits its consumer
//! offsets. A crash at any point leaves the last checkpoint of each partition behind the rows
//! already written: the next owner repeats rows, never skips input. The checkpoint, one record
//! holding both the state and the offsets it has read to, is where a partition resumes: when
//! partitions are assigned, the instance restores their checkpoints and, before librdkafka
//! fetches the group's offsets, commits the checkpoints' offsets (`resume_positions`). Without
//! that, the group's offsets could be ahead of the checkpoint (a zombie that lost its partitions
//! can still write a checkpoint, which only its offset commit is fenced from), and the state
//! restored would miss the input in between. A zombie's late checkpoint is still a consistent
//! pair of state and offsets, so it costs repeated rows only.
//!
//! Reference inputs are read whole at the start of every round, before the instance joins the
//! group; each assigned partition's job gets its own copy of the tables (loaded before its
//! checkpoint is restored), and every later record is applied to all of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tidewater_client::{ClusterConfig, QuietContext};
use tidewater_sql::{local, Job, ReferenceError};
use tokio::sync::watch;

use super::delivery::{Deliveries, Delivery};
use super::metrics::QueryMetrics;
use super::reference::{ReferenceInputs, ReferenceTarget};

use super::runner::{
    at_least_once_producer, blocking, caught_up, commit_and_begin, enqueue_checkpoint,
    ensure_checkpoint_topic, now_ms, read_latest_checkpoint, send_step, settle_rows, transactional_producer,
    CheckpointRecord, Counts, InputOffsets, QueryJobSettings, StartPosition, TRANSACTION_TIMEOUT,
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
    /// Transactional exactly once, idempotent without transactions at least once.
    producer: FutureProducer<QuietContext>,
    /// Reports of the records produced since the last commit, read before the next.
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
        let mut shared = lock(&self.shared);
        match rebalance {
            Rebalance::Revoke(partitions) => {
                // Commit while the generation that owns the partitions is still current; the
                // next owner resumes from this commit.
                if let Err(error) = commit_round(&mut shared, consumer) {
                    shared.failed.get_or_insert(error);
                }
                for element in partitions.elements() {
                    shared.jobs.remove(&element.partition());
                }
            }
            // Before librdkafka's assign, which fetches the group's offsets: at least once,
            // those must first be set to the restored checkpoints'.
            Rebalance::Assign(partitions) => {
                if let Err(error) = assign(&mut shared, consumer, partitions) {
                    for element in partitions.elements() {
                        shared.jobs.remove(&element.partition());
                    }
                    shared.failed.get_or_insert(error);
                }
            }
            Rebalance::Error(_) => {}
        }
    }
}

/// Restores the job of every newly assigned partition number from its checkpoint and, at least
/// once, commits the offsets the jobs have read to as the group's, so the partitions are read
/// from there.
fn assign(
    shared: &mut Shared,
    consumer: &BaseConsumer<ParallelContext>,
    partitions: &TopicPartitionList,
) -> anyhow::Result<()> {
    for element in partitions.elements() {
        let partition = element.partition();
        if !shared.jobs.contains_key(&partition) {
            let job = restore(&shared.settings, &shared.cluster, partition, &shared.tables)?;
            shared.jobs.insert(partition, job);
        }
    }
    // Each assigned (input, partition) holds its job's watermark until it is read from or found
    // empty (`Job::expect_partition`).
    for element in partitions.elements() {
        if let Some(partition_job) = shared.jobs.get_mut(&element.partition()) {
            partition_job.job.expect_partition(element.topic(), element.partition());
        }
    }
    // Exactly once the group's offsets and the checkpoints come from the same transactions.
    if shared.settings.delivery == Delivery::AtLeastOnce {
        let elements = partitions.elements();
        let assigned: Vec<(&str, i32)> =
            elements.iter().map(|element| (element.topic(), element.partition())).collect();
        let mut positions = TopicPartitionList::new();
        for (topic, partition, offset) in resume_positions(&assigned, &shared.jobs) {
            positions.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        if positions.count() > 0 {
            consumer
                .commit(&positions, CommitMode::Sync)
                .context("setting the group's offsets to the restored checkpoints")?;
        }
    }
    Ok(())
}

/// Where each assigned input partition resumes at least once: the next offset its partition
/// number's job has read to (as restored from its checkpoint, or as held in memory), one entry
/// per assigned `(input, partition)` the job has an offset for. A partition its job never read
/// from is left to the group's offsets and `auto.offset.reset`: at least once an offset is
/// committed only after a checkpoint holding it, so there is none ahead of the job's.
fn resume_positions<'a>(
    assigned: &[(&'a str, i32)],
    jobs: &BTreeMap<i32, PartitionJob>,
) -> Vec<(&'a str, i32, i64)> {
    assigned
        .iter()
        .filter_map(|&(topic, partition)| {
            let offset = jobs.get(&partition)?.next_offsets.get(topic, partition)?;
            Some((topic, partition, offset))
        })
        .collect()
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
/// consumer offsets: exactly once with the outputs in one transaction (and opens the next); at
/// least once after every row produced so far is acknowledged, the offsets last, once the
/// checkpoints are acknowledged too.
fn commit_round<C: Consumer<ParallelContext>>(shared: &mut Shared, consumer: &C) -> anyhow::Result<()> {
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
    if !jobs.values().any(|partition_job| partition_job.dirty) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    if settings.delivery == Delivery::AtLeastOnce {
        settle_rows(producer, deliveries)?;
    }
    let mut offsets = TopicPartitionList::new();
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
    }
    match settings.delivery {
        Delivery::ExactlyOnce => {
            let metadata = consumer.group_metadata().context("the job's consumer has no group metadata")?;
            if offsets.count() > 0 {
                producer
                    .send_offsets_to_transaction(&offsets, &metadata, TRANSACTION_TIMEOUT)
                    .context("committing consumer offsets in the transaction")?;
            }
            commit_and_begin(producer, deliveries)?;
        }
        Delivery::AtLeastOnce => {
            // An offset committed ahead of a checkpoint that was lost would resume a partition
            // with no state for the input before it.
            deliveries.settle(producer).context("writing the partitions' checkpoints")?;
            if offsets.count() > 0 {
                // Refused once this instance's generation is over (it lost the partitions).
                consumer.commit(&offsets, CommitMode::Sync).context("committing consumer offsets")?;
            }
        }
    }
    metrics.checkpointed(started);
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
    let producer = match settings.delivery {
        Delivery::ExactlyOnce => {
            let producer = transactional_producer(
                cluster,
                &transactional_id,
                &[("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)],
            )?;
            blocking(|| producer.begin_transaction()).context("beginning a transaction")?;
            producer
        }
        Delivery::AtLeastOnce => at_least_once_producer(cluster, &transactional_id)?,
    };
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
        .group_consumer_config(&[
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
    tracing::info!(job = %settings.name, instance = %transactional_id, ?inputs, delivery = %settings.delivery,
        "parallel query job instance running");

    // The first commit is one interval after the start, as in the single runner.
    let mut checkpoint_timer = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.checkpoint_interval,
        settings.checkpoint_interval,
    );
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
                let mut guard = lock(&shared);
                if let Err(error) = blocking(|| commit_round(&mut guard, &consumer)) {
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
            let mut guard = lock(&shared);
            blocking(|| commit_round(&mut guard, &consumer))?;
        }
        Err(_) => {
            // Exactly once the open transaction is aborted; at least once the rows are out
            // already, and the next owner writes again those its checkpoint does not cover.
            let mut guard = lock(&shared);
            guard.deliveries.clear();
            if settings.delivery == Delivery::ExactlyOnce {
                let _ = blocking(|| guard.producer.abort_transaction(TRANSACTION_TIMEOUT));
            }
        }
    }
    lock(&shared).jobs.clear();
    consumer.unsubscribe();
    references.join().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition_job(offsets: &[(&str, i32, i64)]) -> PartitionJob {
        let job = tidewater_sql::compile("SELECT * INTO out FROM a", tidewater_sql::JobOptions::default())
            .unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
        let mut next_offsets = InputOffsets::default();
        for (topic, partition, offset) in offsets {
            next_offsets.advance(topic, *partition, *offset);
        }
        PartitionJob { job, next_offsets, counts: Counts::default(), dirty: false }
    }

    #[test]
    fn assigned_partitions_resume_where_their_jobs_checkpoint_says_and_nowhere_else() {
        // Partition 0's job has read inputs a and b; partition 1's only a; partition 2 has no
        // job (its restore failed, or it is not this instance's).
        let jobs = BTreeMap::from([
            (0, partition_job(&[("a", 0, 17), ("b", 0, 3)])),
            (1, partition_job(&[("a", 1, 40)])),
        ]);
        let assigned = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)];
        // b/1 was never read by its job: the group's offset (none ahead of a checkpoint) or
        // auto.offset.reset decide; a/2 has no job to say.
        assert_eq!(resume_positions(&assigned, &jobs), vec![("a", 0, 17), ("b", 0, 3), ("a", 1, 40)]);
        // A job's offset of another partition number is never used for this one.
        let stray = BTreeMap::from([(0, partition_job(&[("a", 1, 99)]))]);
        assert_eq!(resume_positions(&[("a", 1)], &stray), vec![]);
        assert_eq!(resume_positions(&[], &jobs), vec![]);
    }
}
