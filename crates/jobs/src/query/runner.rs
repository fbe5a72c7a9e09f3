//! Runs a streaming SQL job against a Kafka-compatible cluster, exactly once or at least once.
//!
//! The job (a `tidewater_sql::Job`, deterministic and I/O-free) reads its inputs from topics of
//! the same names (JSON values, event time by `TIMESTAMP BY` or else the record timestamp) and
//! writes each output row as a JSON record to the topic named by its `INTO`.
//!
//! Exactly-once works like Flink's Kafka sink, with Kafka transactions as the two-phase commit:
//! every `checkpoint_interval` the runner writes a checkpoint record (the job's state and the
//! next offset of every input partition) to `_tidewater_query_checkpoints` inside the same
//! transaction as the output rows produced since the previous checkpoint, then commits. A crash
//! aborts the open transaction (the next instance's `init_transactions` fences and aborts it),
//! and the restarted job restores the last committed checkpoint and reads on from its offsets:
//! consumers reading the outputs with `isolation.level=read_committed` see every row exactly
//! once, the same rows a clean run produces.
//!
//! At least once (`Delivery::AtLeastOnce`) trades that for latency: each row is produced as the
//! engine emits it, with an idempotent producer and no transaction, so it is readable at once.
//! The checkpoint record (state and input offsets, the same record) is written only after every
//! record produced before it has been acknowledged (`Deliveries::settle`), so the restored job
//! never skips an input whose rows were lost; it repeats the rows produced since its last
//! checkpoint. A failed delivery fails the job with the broker's reason, before any checkpoint
//! past it.
//!
//! One instance runs a job (it reads every partition of its inputs by assignment); a second
//! exactly-once instance with the same name fences the first (its transactional id is the
//! job's). `--parallel` scales a job out over instances that share the partitions (`parallel`),
//! in either mode.

pub(super) use tidewater_client::now_ms;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tidewater_sql::{Job, JobOptions, Step};
use tokio::sync::watch;

use tidewater_client::admin::ensure_table_topic_on;
use tidewater_client::keyed_topic::table_topic;
use tidewater_client::{ClusterConfig, QuietContext};

use super::delivery::{Deliveries, Delivery};
use super::metrics::QueryMetrics;
use super::reference::{reference_names, ReferenceInputs, ReferenceSource};

/// The topic checkpoints are written to, one record per checkpoint, key = job name (or
/// `{job}#{partition}` for a parallel job). It is compacted: only the latest checkpoint of each
/// key matters, and it stays however long the job is idle or stopped (a time retention would
/// drop the checkpoint of a job whose input is quiet, and its restart would then replay or skip
/// its input).
pub const CHECKPOINT_TOPIC: &str = "_tidewater_query_checkpoints";
/// Largest checkpoint record (the job's whole state), and the topic's `max.message.bytes`.
pub const CHECKPOINT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long transactional calls (init, commit) may take before the job fails.
pub(super) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Version of the checkpoint record's envelope (the engine versions its own state).
pub(super) const CHECKPOINT_ENVELOPE_VERSION: u32 = 1;

/// How to run one query job.
#[derive(Debug, Clone)]
pub struct QueryJobSettings {
    /// The job's name: its transactional id and its checkpoints' key.
    pub name: String,
    pub sql: String,
    pub options: JobOptions,
    /// Where inputs start when the job has no checkpoint.
    pub start_from: StartPosition,
    pub checkpoint_interval: Duration,
    /// Late events go here (the event as it came, with the reason in headers), if set.
    pub late_topic: Option<String>,
    /// Process each input partition number on its own, so several instances can share the
    /// partitions (see `parallel`).
    pub parallel: bool,
    /// Reference inputs (tables joined as of now), loaded before the first event and at every
    /// restart; their names become `options.reference_inputs`.
    pub references: Vec<ReferenceSource>,
    /// Exactly once (rows visible at checkpoints) or at least once (rows visible as produced).
    pub delivery: Delivery,
}

/// Where a job without a checkpoint starts reading its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Every record still in the topic: a replay.
    #[default]
    Earliest,
    /// Only records produced after the job started.
    Latest,
    /// The first record whose timestamp is at or after this time (epoch ms).
    Timestamp(i64),
}

impl StartPosition {
    /// `earliest`, `latest`, or `@` and a time (epoch milliseconds or ISO-8601).
    pub fn parse(text: &str) -> Result<StartPosition, String> {
        match text {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            _ => text
                .strip_prefix('@')
                .and_then(|time| time.parse::<i64>().ok().or_else(|| tidewater_sql::parse_timestamp(time)))
                .map(StartPosition::Timestamp)
                .ok_or_else(|| format!("{text:?} is not earliest, latest, @EPOCH_MS or @ISO-8601")),
        }
    }
}

/// What the checkpoint topic stores per checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub version: u32,
    /// `(topic, partition, next offset)` of every input partition read so far.
    pub offsets: Vec<(String, i32, i64)>,
    /// When the checkpoint was written (wall clock, ms).
    #[serde(default)]
    pub written_at_ms: i64,
    /// The job's counters over its whole life, as of this checkpoint.
    #[serde(default)]
    pub counts: Counts,
    pub state: serde_json::Value,
}

impl CheckpointRecord {
    /// A checkpoint of `job` having read up to `offsets`, taken at `now_ms`.
    pub(super) fn new(job: &Job, offsets: &InputOffsets, counts: Counts, now_ms: i64) -> CheckpointRecord {
        CheckpointRecord {
            version: CHECKPOINT_ENVELOPE_VERSION,
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| (topic.to_string(), partition, offset))
                .collect(),
            written_at_ms: now_ms,
            counts,
            state: job.checkpoint(),
        }
    }
}

/// The next offset to read of every input partition a job has read: what its checkpoints store
/// and, on the per-record path, updated without allocating (a topic's name is stored once).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct InputOffsets(BTreeMap<String, BTreeMap<i32, i64>>);

impl InputOffsets {
    pub(super) fn from_checkpoint(offsets: &[(String, i32, i64)]) -> InputOffsets {
        let mut restored = InputOffsets::default();
        for (topic, partition, offset) in offsets {
            restored.advance(topic, *partition, *offset);
        }
        restored
    }

    /// Records that `offset` is the next to read in `topic`/`partition`.
    pub(super) fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        match self.0.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, offset);
            }
            None => {
                self.0.insert(topic.to_string(), BTreeMap::from([(partition, offset)]));
            }
        }
    }

    pub(super) fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic)?.get(&partition).copied()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> + '_ {
        self.0.iter().flat_map(|(topic, partitions)| {
            partitions.iter().map(move |(partition, offset)| (topic.as_str(), *partition, *offset))
        })
    }
}

/// A job's counters: input records read, output rows written, late events, event errors.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub events: u64,
    pub outputs: u64,
    pub late: u64,
    pub errors: u64,
}

/// Runs the job until `stop` turns true, checkpointing and committing a last time on the way out.
/// Needs tokio's multi-threaded runtime: librdkafka's transactional calls block, and run on the
/// worker thread through `block_in_place`.
pub async fn run_query_job(
    settings: QueryJobSettings,
    cluster: ClusterConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut settings = settings;
    settings.options.reference_inputs = reference_names(&settings.references);
    if settings.parallel {
        return super::parallel::run_parallel_query_job(settings, cluster, stop).await;
    }
    let compile = || {
        tidewater_sql::compile(&settings.sql, settings.options.clone()).map_err(|diagnostics| {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the query does not compile:\n{}", lines.join("\n"))
        })
    };
    let mut job = compile()?;
    super::registry::validate_topics(&job, settings.late_topic.as_deref()).map_err(anyhow::Error::msg)?;
    let inputs = job.inputs();
    let outputs = job.outputs();
    let metrics = QueryMetrics::of(&settings.name, &job);
    ensure_checkpoint_topic(&cluster).await?;

    let transactional_id = format!("tidewater-query-{}", settings.name);
    let producer = job_producer(&cluster, &transactional_id, settings.delivery)?;
    let exactly_once = settings.delivery == Delivery::ExactlyOnce;
    let mut deliveries = Deliveries::default();

    // Reference tables are not in checkpoints: they are read again, whole, at every start,
    // before the checkpoint is restored and before the first event.
    let mut references =
        ReferenceInputs::start(&settings.name, &settings.references, &cluster, stop.clone())?;
    let refused = references.load(&mut job).await?;

    let mut counts = Counts::default();
    let (offsets, restored) = match read_latest_checkpoint(&cluster, &settings.name)? {
        Some(record) => {
            counts = record.counts;
            job.restore(&record.state).map_err(|error| {
                anyhow::anyhow!(
                    "restoring job {} from its checkpoint: {error} (was the query changed?)",
                    settings.name
                )
            })?;
            (InputOffsets::from_checkpoint(&record.offsets), true)
        }
        None => (InputOffsets::default(), false),
    };
    counts.errors += refused;
    let consumer: StreamConsumer<QuietContext> = cluster
        .consumer_config(&[
            ("group.id", &transactional_id),
            ("client.id", &transactional_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            (
                "auto.offset.reset",
                if settings.start_from == StartPosition::Latest { "latest" } else { "earliest" },
            ),
            // Reaching a partition's end tells the job that it has nothing more to wait for
            // there (`Job::caught_up`).
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the job's consumer")?;
    let mut assignment = TopicPartitionList::new();
    let mut next_offsets = InputOffsets::default();
    for input in &inputs {
        let metadata = consumer
            .fetch_metadata(Some(input), Duration::from_secs(30))
            .with_context(|| format!("looking up input topic {input}"))?;
        let topic = metadata.topics().iter().find(|topic| topic.name() == input.as_str());
        let partitions = topic.map(|topic| topic.partitions().len()).unwrap_or(0);
        anyhow::ensure!(
            partitions > 0 && topic.is_some_and(|topic| topic.error().is_none()),
            "input topic {input:?} does not exist"
        );
        for partition in 0..partitions as i32 {
            let offset = match offsets.get(input, partition) {
                Some(offset) => {
                    next_offsets.advance(input, partition, offset);
                    Offset::Offset(offset)
                }
                None => match settings.start_from {
                    StartPosition::Earliest => Offset::Beginning,
                    StartPosition::Latest => Offset::End,
                    // Resolved below, for all partitions in one request.
                    StartPosition::Timestamp(timestamp_ms) => Offset::Offset(timestamp_ms),
                },
            };
            assignment.add_partition_offset(input, partition, offset)?;
        }
    }
    if let StartPosition::Timestamp(timestamp_ms) = settings.start_from {
        // Partitions restored from the checkpoint keep their offsets; the others start at the
        // first record at or after the timestamp (the end, if there is none).
        let mut by_time = TopicPartitionList::new();
        for element in assignment.elements() {
            if next_offsets.get(element.topic(), element.partition()).is_none() {
                by_time.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(timestamp_ms),
                )?;
            }
        }
        if by_time.count() > 0 {
            let resolved = blocking(|| consumer.offsets_for_times(by_time, Duration::from_secs(30)))
                .context("looking up input offsets by timestamp")?;
            for element in resolved.elements() {
                let offset = match element.offset() {
                    Offset::Offset(offset) => Offset::Offset(offset),
                    _ => Offset::End,
                };
                assignment.set_partition_offset(element.topic(), element.partition(), offset)?;
            }
        }
    }
    consumer.assign(&assignment).context("assigning the input partitions")?;
    for element in assignment.elements() {
        job.expect_partition(element.topic(), element.partition());
    }
    tracing::info!(job = %settings.name, ?inputs, ?outputs, restored, delivery = %settings.delivery, "query job running");

    if exactly_once {
        blocking(|| producer.begin_transaction()).context("beginning a transaction")?;
    }
    let (mut checkpointed_events, mut checkpointed_outputs) = (counts.events, counts.outputs);
    let mut checkpoint_timer = tokio::time::interval(settings.checkpoint_interval);
    // The first tick is due at once but fires only at the timer driver's next turn, which under
    // load comes after the first events: it measures the input lag and takes no checkpoint, so
    // the first checkpoint is one interval after the start.
    let mut first_tick = true;
    checkpoint_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Measured at the first tick, then every INPUT_LAG_INTERVAL.
    let mut lag_measured = std::time::Instant::now() - INPUT_LAG_INTERVAL;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            _ = checkpoint_timer.tick() => {
                let step = job.advance_processing_time(now_ms());
                send_step(&producer, &mut deliveries, &settings, &metrics, step, &mut counts)?;
                metrics.watermarks([&job]);
                if lag_measured.elapsed() >= INPUT_LAG_INTERVAL {
                    lag_measured = std::time::Instant::now();
                    if let Some(lag) = blocking(|| input_lag(&consumer, &assignment, &next_offsets)) {
                        metrics.set_input_lag(lag);
                    }
                }
                // An idle job writes no checkpoints: nothing it would say has changed.
                let changed = counts.events != checkpointed_events || counts.outputs != checkpointed_outputs;
                let first = std::mem::take(&mut first_tick);
                if changed && !first {
                    let started = std::time::Instant::now();
                    blocking(|| checkpoint(&producer, &mut deliveries, &settings, &job, &next_offsets, counts))?;
                    metrics.checkpointed(started);
                    (checkpointed_events, checkpointed_outputs) = (counts.events, counts.outputs);
                    tracing::debug!(job = %settings.name, ?counts, "checkpoint committed");
                }
            }
            update = references.recv() => match update {
                Some(update) => counts.errors += u64::from(!references.apply(&mut job, update)),
                None => anyhow::bail!("job {}: a reference topic follower stopped", settings.name),
            },
            message = consumer.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(KafkaError::PartitionEOF(partition)) => {
                        let step = caught_up(&mut job, &inputs, partition);
                        send_step(&producer, &mut deliveries, &settings, &metrics, step, &mut counts)?;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(job = %settings.name, %error, "reading inputs");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                next_offsets.advance(message.topic(), message.partition(), message.offset() + 1);
                counts.events += 1;
                metrics.events.inc();
                let arrival_ms = message.timestamp().to_millis().unwrap_or_else(now_ms);
                let Some(payload) = message.payload() else { continue };
                // Only the fields the query reads are decoded (`Job::push_json_bytes`).
                let step = match job.push_json_bytes(message.topic(), message.partition(), payload, arrival_ms) {
                    Ok(step) => step,
                    Err(error) => {
                        counts.errors += 1;
                        tracing::warn!(job = %settings.name, topic = message.topic(), partition = message.partition(),
                            offset = message.offset(), %error, "an input record is not JSON; skipped");
                        continue;
                    }
                };
                send_step(&producer, &mut deliveries, &settings, &metrics, step, &mut counts)?;
            }
        }
    }
    let step = job.advance_processing_time(now_ms());
    send_step(&producer, &mut deliveries, &settings, &metrics, step, &mut counts)?;
    blocking(|| checkpoint(&producer, &mut deliveries, &settings, &job, &next_offsets, counts))?;
    if exactly_once {
        blocking(|| producer.abort_transaction(TRANSACTION_TIMEOUT)).ok();
    } else {
        // The last checkpoint is acknowledged before the job says it stopped.
        blocking(|| deliveries.settle(&producer))?;
    }
    references.join().await;
    tracing::info!(job = %settings.name, events = counts.events, outputs = counts.outputs, late = counts.late,
        errors = counts.errors, "query job stopped");
    Ok(())
}

/// How often a job asks for its inputs' high watermarks to know its lag (a ListOffsets request
/// per partition, so not at every checkpoint).
const INPUT_LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long that request may take before the lag is left as it was.
const INPUT_LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// Records in the assigned input partitions after the next offsets to read; `None` when a
/// partition's watermarks could not be had in time.
fn input_lag<C: rdkafka::consumer::ConsumerContext>(
    consumer: &StreamConsumer<C>,
    assignment: &TopicPartitionList,
    next_offsets: &InputOffsets,
) -> Option<u64> {
    let mut lag = 0u64;
    for element in assignment.elements() {
        let (low, high) =
            consumer.fetch_watermarks(element.topic(), element.partition(), INPUT_LAG_TIMEOUT).ok()?;
        // Before its first record, a partition's next offset is where it was assigned to start.
        let next = next_offsets.get(element.topic(), element.partition()).unwrap_or(match element.offset() {
            Offset::Offset(offset) => offset,
            Offset::End => high,
            _ => low,
        });
        lag += u64::try_from(high - next).unwrap_or(0);
    }
    Some(lag)
}

/// The job's reader reached the end of `partition` of one of `inputs`. librdkafka does not say
/// of which topic, so every input's partition of that number counts as caught up: exact for a
/// job with one input; with several, a partition of another input that has yet to deliver its
/// first event stops holding the watermark back a little early.
pub(super) fn caught_up(job: &mut Job, inputs: &[String], partition: i32) -> Step {
    let mut step = Step::default();
    for input in inputs {
        step.extend(job.caught_up(input, partition));
    }
    step
}

/// Queues one step's output rows (and late events): in the open transaction, or at least once
/// straight away; their delivery reports go to `deliveries`.
pub(super) fn send_step(
    producer: &FutureProducer<QuietContext>,
    deliveries: &mut Deliveries,
    settings: &QueryJobSettings,
    metrics: &QueryMetrics,
    step: Step,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    for output in step.outputs {
        let value = serde_json::to_vec(&output.row).context("encoding an output row")?;
        let record =
            FutureRecord::<(), [u8]>::to(&output.name).payload(&value).timestamp(output.timestamp_ms);
        deliveries.send(producer, record)?;
        counts.outputs += 1;
        metrics.row_written(&output.name);
    }
    for late in step.late {
        counts.late += 1;
        metrics.late.inc();
        if let Some(topic) = &settings.late_topic {
            let value = serde_json::to_vec(&late.event).context("encoding a late event")?;
            let watermark = late.watermark_ms.to_string();
            let headers = rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header {
                    key: "tidewater-late-input",
                    value: Some(late.input.as_bytes()),
                })
                .insert(rdkafka::message::Header {
                    key: "tidewater-late-watermark-ms",
                    value: Some(watermark.as_bytes()),
                });
            let record = FutureRecord::<(), [u8]>::to(topic).payload(&value).headers(headers);
            deliveries.send(producer, record)?;
        }
    }
    for error in step.errors {
        counts.errors += 1;
        tracing::warn!(job = %settings.name, %error, "an event could not be processed; skipped");
    }
    Ok(())
}

/// The job's producer, which writes its output rows and its checkpoints.
///
/// Exactly once: transactional, with the job's transactional id; `init_transactions` fences any
/// earlier instance of the job and aborts its open transaction, so the checkpoint read next is
/// the last one that really committed.
///
/// At least once: idempotent (a retry never duplicates a row) with no transaction, lingering
/// 1 ms rather than 5 since latency is what the mode is for. An earlier exactly-once instance
/// of the job is fenced first, with a transactional producer of the same id made for that
/// alone: its open transaction would otherwise hold back read_committed readers of the outputs
/// (and of the checkpoints) until it timed out.
fn job_producer(
    cluster: &ClusterConfig,
    transactional_id: &str,
    delivery: Delivery,
) -> anyhow::Result<FutureProducer<QuietContext>> {
    match delivery {
        Delivery::ExactlyOnce => transactional_producer(cluster, transactional_id, &[]),
        Delivery::AtLeastOnce => {
            drop(
                transactional_producer(cluster, transactional_id, &[])
                    .context("fencing an earlier exactly-once instance of the job")?,
            );
            at_least_once_producer(cluster, transactional_id)
        }
    }
}

/// An at-least-once job's producer (also a parallel instance's): idempotent, no transaction,
/// acks from every in-sync replica, lingering 1 ms.
pub(super) fn at_least_once_producer(
    cluster: &ClusterConfig,
    client_id: &str,
) -> anyhow::Result<FutureProducer<QuietContext>> {
    let max_message_bytes = CHECKPOINT_BYTES_MAX.to_string();
    cluster
        .table_client_config(&[
            ("client.id", client_id),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.max.bytes", &max_message_bytes),
            ("linger.ms", "1"),
            // A record the broker has not taken in this time fails the job (which restarts from
            // its last checkpoint) with the reason, rather than after librdkafka's default of
            // five minutes.
            ("message.timeout.ms", "30000"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the job's producer")
}

/// A transactional producer of id `transactional_id` (with `extra` settings), its transactions
/// initialised: any earlier producer of that id is fenced and its open transaction aborted.
/// Checkpoints go to a compacted topic in the outputs' transactions, so nothing it writes is
/// compressed.
pub(super) fn transactional_producer(
    cluster: &ClusterConfig,
    transactional_id: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<FutureProducer<QuietContext>> {
    let max_message_bytes = CHECKPOINT_BYTES_MAX.to_string();
    let mut settings = vec![
        ("client.id", transactional_id),
        ("transactional.id", transactional_id),
        ("enable.idempotence", "true"),
        ("message.max.bytes", max_message_bytes.as_str()),
        ("linger.ms", "5"),
    ];
    settings.extend_from_slice(extra);
    let producer: FutureProducer<QuietContext> = cluster
        .table_client_config(&settings)
        .create_with_context(QuietContext::default())
        .context("creating the job's transactional producer")?;
    blocking(|| producer.init_transactions(TRANSACTION_TIMEOUT)).context("initialising transactions")?;
    Ok(producer)
}

/// Writes a checkpoint of `job` having read up to `next_offsets`. Blocks (librdkafka's
/// transactional calls and flush do).
///
/// Exactly once: the checkpoint joins the open transaction, every record of the transaction is
/// checked as acknowledged (a failed one fails the job with the broker's reason rather than as
/// the commit's count of failed messages), then the transaction commits and the next opens.
///
/// At least once: every record produced before this point must be acknowledged before the
/// checkpoint that says its input was handled is written; the checkpoint's own report is read
/// with the next checkpoint's (or on the way out).
fn checkpoint(
    producer: &FutureProducer<QuietContext>,
    deliveries: &mut Deliveries,
    settings: &QueryJobSettings,
    job: &Job,
    next_offsets: &InputOffsets,
    counts: Counts,
) -> anyhow::Result<()> {
    let record = CheckpointRecord::new(job, next_offsets, counts, now_ms());
    match settings.delivery {
        Delivery::ExactlyOnce => {
            enqueue_checkpoint(producer, deliveries, &settings.name, &record)?;
            commit_and_begin(producer, deliveries)?;
        }
        Delivery::AtLeastOnce => {
            settle_rows(producer, deliveries)?;
            enqueue_checkpoint(producer, deliveries, &settings.name, &record)?;
        }
    }
    Ok(())
}

/// Exactly once: commits the open transaction once every record in it is acknowledged (a record
/// the broker refused fails with its reason, where the commit would fail with only a count of
/// failed messages), and opens the next. Blocks.
pub(super) fn commit_and_begin(
    producer: &FutureProducer<QuietContext>,
    deliveries: &mut Deliveries,
) -> anyhow::Result<()> {
    deliveries.settle(producer).context("writing a checkpoint transaction")?;
    producer.commit_transaction(TRANSACTION_TIMEOUT).context("committing a checkpoint transaction")?;
    producer.begin_transaction().context("beginning a transaction")?;
    Ok(())
}

/// At least once, before a checkpoint is written: waits until the broker has acknowledged every
/// record produced so far, so no checkpoint says an input was handled while a row derived from
/// it may still be lost. Blocks.
pub(super) fn settle_rows(
    producer: &FutureProducer<QuietContext>,
    deliveries: &mut Deliveries,
) -> anyhow::Result<()> {
    deliveries.settle(producer).context(
        "a record produced since the last checkpoint was not written, so no checkpoint is taken past it",
    )
}

/// Queues a checkpoint record, keyed `key` (in the open transaction, if there is one).
pub(super) fn enqueue_checkpoint(
    producer: &FutureProducer<QuietContext>,
    deliveries: &mut Deliveries,
    key: &str,
    record: &CheckpointRecord,
) -> anyhow::Result<()> {
    let value = serde_json::to_vec(record).context("encoding the checkpoint")?;
    anyhow::ensure!(
        value.len() <= CHECKPOINT_BYTES_MAX,
        "the job's state is {} bytes, more than a checkpoint may hold ({CHECKPOINT_BYTES_MAX})",
        value.len()
    );
    deliveries.send(producer, FutureRecord::to(CHECKPOINT_TOPIC).key(key).payload(&value[..]))
}

/// Runs a blocking librdkafka call without stalling the async worker's other tasks.
pub(super) fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// Creates the checkpoint topic, a compacted table, unless it exists; one created with a time
/// retention (before checkpoints were compacted) is switched to compaction.
pub(super) async fn ensure_checkpoint_topic(cluster: &ClusterConfig) -> anyhow::Result<()> {
    let max_message_bytes = CHECKPOINT_BYTES_MAX.to_string();
    let topic = table_topic(CHECKPOINT_TOPIC, &[("max.message.bytes", &max_message_bytes)]);
    ensure_table_topic_on(cluster, "tidewater-query-admin", topic, Duration::from_secs(30))
        .await
        .map(drop)
        .context("creating the checkpoint topic")
}

/// How many records back from the end the checkpoint search starts; it widens fourfold each time
/// the job's key is not found, so a busy shared checkpoint topic is read from near its end.
const CHECKPOINT_SEARCH_START: i64 = 64;

/// The latest committed checkpoint of job `name`, if any. The checkpoint topic is shared by
/// every job and gains a record per job per checkpoint, so it is searched backwards from its end
/// in widening windows rather than read from the beginning.
pub fn read_latest_checkpoint(
    cluster: &ClusterConfig,
    name: &str,
) -> anyhow::Result<Option<CheckpointRecord>> {
    let consumer: BaseConsumer<QuietContext> = cluster
        .consumer_config(&[
            ("group.id", "tidewater-query-checkpoint-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            // The topic is compacted: its last offsets may hold no record to see (see
            // `latest_in_range`).
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(QuietContext::default())
        .context("creating the checkpoint reader")?;
    let timeout = Duration::from_secs(30);
    let (low, high) = consumer
        .fetch_watermarks(CHECKPOINT_TOPIC, 0, timeout)
        .with_context(|| format!("reading the end of {CHECKPOINT_TOPIC}"))?;
    let mut window = CHECKPOINT_SEARCH_START;
    let mut end = high;
    while end > low {
        let start = (end - window).max(low);
        if let Some(value) = latest_in_range(&consumer, name, start, end)? {
            let record: CheckpointRecord =
                serde_json::from_slice(&value).context("decoding the latest checkpoint")?;
            anyhow::ensure!(
                record.version == CHECKPOINT_ENVELOPE_VERSION,
                "checkpoint version {} is not {CHECKPOINT_ENVELOPE_VERSION}",
                record.version
            );
            return Ok(Some(record));
        }
        end = start;
        window = window.saturating_mul(4);
    }
    Ok(None)
}

/// The value of the last committed record keyed `name` in offsets `[start, end)`.
fn latest_in_range(
    consumer: &BaseConsumer<QuietContext>,
    name: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(CHECKPOINT_TOPIC, 0, Offset::Offset(start))?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut latest = None;
    // read_committed skips aborted records and transaction markers, and compaction leaves gaps
    // and emptied batches, so progress is judged by the consumer's position, a record at or past
    // `end`, or the partition's end (the range's last offsets may hold nothing to see), never by
    // the offsets of the records seen alone.
    while position(consumer)? < end {
        anyhow::ensure!(std::time::Instant::now() < deadline, "reading {CHECKPOINT_TOPIC} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if message.offset() >= end {
                    break;
                }
                if message.key() == Some(name.as_bytes()) {
                    latest = message.payload().map(<[u8]>::to_vec);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(error)) => anyhow::bail!("reading {CHECKPOINT_TOPIC}: {error}"),
            None => {}
        }
    }
    Ok(latest)
}

fn position(consumer: &BaseConsumer<QuietContext>) -> anyhow::Result<i64> {
    let positions = consumer.position().context("reading the checkpoint reader's position")?;
    Ok(positions
        .find_partition(CHECKPOINT_TOPIC, 0)
        .and_then(|element| match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
        .unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_offsets_advance_and_round_trip_through_a_checkpoint() {
        let mut offsets = InputOffsets::default();
        offsets.advance("b", 1, 10);
        offsets.advance("a", 0, 5);
        offsets.advance("b", 1, 11);
        offsets.advance("b", 0, 3);
        assert_eq!(offsets.get("b", 1), Some(11));
        assert_eq!(offsets.get("c", 0), None);
        let stored: Vec<(String, i32, i64)> =
            offsets.iter().map(|(topic, partition, offset)| (topic.to_string(), partition, offset)).collect();
        assert_eq!(stored, vec![("a".to_string(), 0, 5), ("b".to_string(), 0, 3), ("b".to_string(), 1, 11)]);
        assert_eq!(InputOffsets::from_checkpoint(&stored), offsets);
    }
}
