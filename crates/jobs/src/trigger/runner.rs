//! Runs one trigger: a consumer group member that delivers each event and commits only what is
//! done.
//!
//! The loop owns all scheduling state and reacts to four things: a record read (filtered, then
//! queued by key), a delivery finished (its keys freed, its offsets marked done), a timer (commit
//! the offsets that moved, flush a waiting batch), and the stop signal. Deliveries run as tasks;
//! each retries on its own with backoff and ends acknowledged, dead-lettered, gone (410) or
//! abandoned (stopping).
//!
//! The delivery contract is at-least-once. An offset is committed only when every event before
//! it in its partition was acknowledged, dead-lettered (and the dead-letter record acknowledged
//! by the cluster), or filtered out. Whatever was in flight when the process died, or when a
//! rebalance moved the partition, is delivered again by whoever owns the partition next.
//!
//! Memory is bounded: once `BUFFERED_EVENTS_MAX` events wait in the queue the loop pauses the
//! assigned partitions (still polling, so the group does not evict it) until the queue drains to
//! half. The bound is that plus what librdkafka had already fetched, itself bounded by its
//! `queued.max.messages.kbytes`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::{now_ms, ClusterConfig, QuietContext};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::action::{Attempt, Executor};
use super::definition::TriggerDefinition;
use super::dispatch::{DeliveryId, KeyedQueue};
use super::filter::Filter;
use super::metrics::TriggerMetrics;
use super::offsets::OffsetTracker;
use super::retry::{Jitter, RetryPolicy};
use super::stats::TriggerStats;
use crate::event::Event;

/// Events read but not yet delivering, per trigger, before the loop pauses its partitions.
pub const BUFFERED_EVENTS_MAX: usize = 10_000;
/// How often moved offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a stopping trigger waits for deliveries already in progress.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a trigger's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Asked to stop.
    Stopped,
    /// The receiver answered 410 Gone: the trigger must not run again until resumed.
    Disabled { reason: String },
}

/// An event waiting for delivery, with the assignment generation it was read under.
#[derive(Debug)]
struct Pending {
    event: Event,
    generation: u64,
}

/// How a delivery ended.
#[derive(Debug)]
enum Outcome {
    Delivered,
    DeadLettered,
    Gone(String),
    /// Stopping: neither delivered nor dead-lettered, so not committed.
    Abandoned,
}

#[derive(Debug)]
struct Finished {
    id: DeliveryId,
    keys: Vec<Bytes>,
    positions: Vec<(i32, i64, u64)>,
    outcome: Outcome,
}

/// The consumer context: on a revocation, commits what is done in the revoked partitions before
/// they move (so the next owner redelivers as little as possible) and tells the loop to drop
/// their queued events.
struct TriggerContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
    revoked: mpsc::UnboundedSender<Vec<i32>>,
    quiet: QuietContext,
}

impl rdkafka::client::ClientContext for TriggerContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.quiet.log(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.quiet.error(error, reason);
    }
}

impl ConsumerContext for TriggerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else { return };
        let revoked: Vec<i32> = partitions.elements().iter().map(|element| element.partition()).collect();
        let positions = {
            let mut tracker = lock(&self.tracker);
            let positions = tracker.positions(revoked.iter().copied());
            for partition in &revoked {
                tracker.revoke(*partition);
            }
            positions
        };
        if !positions.is_empty() {
            let list = commit_list(&self.topic, &positions);
            if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
                tracing::warn!(%error, "committing offsets of revoked partitions failed; they will be redelivered");
            }
        }
        let _ = self.revoked.send(revoked);
    }
}

fn lock(tracker: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    // A poisoned lock means a delivery report panicked; the offsets are still consistent.
    tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn commit_list(topic: &str, positions: &[(i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in positions {
        // Adding a partition to a fresh list with a valid offset cannot fail.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

/// What every delivery task shares.
struct DeliveryContext {
    trigger: String,
    executor: Executor,
    dead_letter: DeadLetter,
    retry: RetryPolicy,
    stats: Arc<TriggerStats>,
    metrics: TriggerMetrics,
}

/// Runs `definition` until `stop` turns true or the receiver says 410 Gone.
pub async fn run_trigger(
    definition: TriggerDefinition,
    cluster: ClusterConfig,
    stats: Arc<TriggerStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<RunEnd> {
    definition.validate().map_err(|error| anyhow::anyhow!("trigger {}: {error}", definition.name))?;
    let filter = definition.filter.as_deref().map(Filter::parse).transpose()?;
    let producer = cluster
        .reliable_producer(&format!("tidewater-trigger-{}", definition.name))
        .context("creating the trigger's producer")?;
    let batch_max_events = definition.batch.map_or(1, |batch| batch.max_events);
    let executor =
        Executor::new(&definition.name, &definition.action, producer.clone(), definition.batch.is_some())
            .map_err(|error| anyhow::anyhow!("trigger {}: {error}", definition.name))?;
    let context = Arc::new(DeliveryContext {
        trigger: definition.name.clone(),
        executor,
        dead_letter: DeadLetter { producer, topic: definition.dead_letter_topic() },
        retry: definition.retry,
        stats: stats.clone(),
        metrics: TriggerMetrics::of(&definition.name),
    });

    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let (revoked_sender, mut revoked_receiver) = mpsc::unbounded_channel();
    let group_id = definition.group_id();
    let client_id = format!("tidewater-trigger-{}", definition.name);
    let consumer: StreamConsumer<TriggerContext> = cluster
        .group_consumer_config(&[
            ("group.id", &group_id),
            ("client.id", &client_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", definition.start_from.as_offset_reset()),
        ])
        .create_with_context(TriggerContext {
            tracker: tracker.clone(),
            topic: definition.topic.clone(),
            revoked: revoked_sender,
            quiet: QuietContext::default(),
        })
        .context("creating the trigger's consumer")?;
    consumer.subscribe(&[&definition.topic]).context("subscribing to the trigger's topic")?;
    tracing::info!(trigger = %definition.name, topic = %definition.topic, group = %group_id, "trigger running");

    let mut queue: KeyedQueue<Pending> = KeyedQueue::new(definition.concurrency);
    let mut deliveries: JoinSet<Finished> = JoinSet::new();
    let mut commit_timer = tokio::time::interval(COMMIT_INTERVAL);
    commit_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch_deadline: Option<Instant> = None;
    let mut partitions_paused = false;
    let mut end = RunEnd::Stopped;
    // Delivery tasks watch their own stop signal, raised both when the trigger is stopped and
    // when it disables itself.
    let (stop_deliveries, deliveries_stop) = watch::channel(false);

    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            Some(joined) = deliveries.join_next(), if !deliveries.is_empty() => {
                let finished = match joined {
                    Ok(finished) => finished,
                    Err(error) => anyhow::bail!("a delivery task of trigger {} failed: {error}", definition.name),
                };
                if let Outcome::Gone(reason) = &finished.outcome {
                    tracing::warn!(trigger = %definition.name, %reason, "the receiver is gone (410); disabling the trigger");
                    end = RunEnd::Disabled { reason: reason.clone() };
                    queue.finish(finished.id, &finished.keys);
                    break;
                }
                record_finished(&finished, &mut queue, &tracker);
            }
            // Timers come before reading: with a backlog, a record is always ready, and commits
            // and partial batches must not wait for the backlog to drain.
            _ = commit_timer.tick() => commit(&consumer, &definition.topic, &tracker, CommitMode::Async),
            _ = sleep_until(batch_deadline), if batch_deadline.is_some() => {}
            Some(revoked) = revoked_receiver.recv() => {
                let revoked: HashSet<i32> = revoked.into_iter().collect();
                let dropped = queue.purge(|pending| revoked.contains(&pending.event.partition));
                tracing::debug!(trigger = %definition.name, ?revoked, dropped, "partitions revoked");
                // Partitions assigned next start unpaused while others may still be paused:
                // resume them all and let the check below pause everything again if the queue
                // is still full.
                if partitions_paused {
                    if let Ok(assignment) = consumer.assignment() {
                        let _ = consumer.resume(&assignment);
                    }
                    partitions_paused = false;
                }
            }
            message = consumer.recv() => {
                match message {
                    Ok(message) => {
                        let event = Event::from_message(&message);
                        let generation = lock(&tracker).read(event.partition, event.offset);
                        if filter.as_ref().is_some_and(|filter| !filter.matches(&event)) {
                            stats.filtered_out.fetch_add(1, Ordering::Relaxed);
                            lock(&tracker).finish(event.partition, event.offset, generation);
                        } else {
                            queue.push(event.key.clone(), Pending { event, generation });
                        }
                    }
                    Err(error) => {
                        tracing::debug!(trigger = %definition.name, %error, "consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }

        // Start whatever may start now.
        let batching = definition.batch.is_some();
        let flush_due = batch_deadline.is_some_and(|deadline| deadline <= Instant::now());
        while !batching || flush_due || queue.ready_events() >= batch_max_events {
            let Some(delivery) = queue.next_delivery(batch_max_events) else { break };
            let keys = delivery.keys().to_vec();
            let pendings = delivery.events;
            stats.in_flight.fetch_add(pendings.len() as i64, Ordering::Relaxed);
            deliveries.spawn(deliver(delivery.id, keys, pendings, context.clone(), deliveries_stop.clone()));
        }
        if let Some(batch) = definition.batch {
            batch_deadline = match (queue.ready_events(), batch_deadline) {
                (0, _) => None,
                (_, Some(deadline)) if !flush_due => Some(deadline),
                _ => Some(Instant::now() + Duration::from_millis(batch.max_wait_ms)),
            };
        }

        // Backpressure: stop fetching when the queue fills, start again once it is half empty,
        // and keep polling meanwhile. Pausing is not free (librdkafka drops what it prefetched
        // for the partition and fetches it again on resume), so it happens once per fill, not
        // per event.
        let buffered = queue.buffered_events();
        if !partitions_paused && buffered >= BUFFERED_EVENTS_MAX {
            if let Ok(assignment) = consumer.assignment() {
                partitions_paused = consumer.pause(&assignment).is_ok();
            }
        } else if partitions_paused && buffered <= BUFFERED_EVENTS_MAX / 2 {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            partitions_paused = false;
        }
    }

    // Stopping: let deliveries in progress finish (those waiting to retry give up at once),
    // then commit what is done and leave the group.
    let _ = stop_deliveries.send(true);
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    while !deliveries.is_empty() {
        tokio::select! {
            Some(Ok(finished)) = deliveries.join_next() => {
                if !matches!(finished.outcome, Outcome::Gone(_)) {
                    record_finished(&finished, &mut queue, &tracker);
                }
            }
            _ = &mut grace => {
                tracing::warn!(trigger = %definition.name, in_flight = deliveries.len(),
                    "deliveries still running after the stop grace period; they will be redelivered");
                deliveries.abort_all();
                break;
            }
        }
    }
    commit(&consumer, &definition.topic, &tracker, CommitMode::Sync);
    stats.in_flight.store(0, Ordering::Relaxed);
    consumer.unsubscribe();
    tracing::info!(trigger = %definition.name, ?end, "trigger stopped");
    Ok(end)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn record_finished(finished: &Finished, queue: &mut KeyedQueue<Pending>, tracker: &Mutex<OffsetTracker>) {
    queue.finish(finished.id, &finished.keys);
    if matches!(finished.outcome, Outcome::Delivered | Outcome::DeadLettered) {
        let mut tracker = lock(tracker);
        for (partition, offset, generation) in &finished.positions {
            tracker.finish(*partition, *offset, *generation);
        }
    }
}

fn commit(
    consumer: &StreamConsumer<TriggerContext>,
    topic: &str,
    tracker: &Mutex<OffsetTracker>,
    mode: CommitMode,
) {
    let positions = lock(tracker).take_commits();
    if positions.is_empty() {
        return;
    }
    if let Err(error) = consumer.commit(&commit_list(topic, &positions), mode) {
        // Not fatal: the next commit carries a later position, and whatever is not committed
        // is delivered again after a restart.
        tracing::debug!(%error, "offset commit failed");
    }
}

/// Delivers one unit (an event or a batch) until it is acknowledged, dead-lettered, gone, or
/// abandoned because the trigger is stopping.
async fn deliver(
    id: DeliveryId,
    keys: Vec<Bytes>,
    pendings: Vec<Pending>,
    context: Arc<DeliveryContext>,
    mut stop: watch::Receiver<bool>,
) -> Finished {
    let positions: Vec<(i32, i64, u64)> = pendings
        .iter()
        .map(|pending| (pending.event.partition, pending.event.offset, pending.generation))
        .collect();
    let events: Vec<Event> = pendings.into_iter().map(|pending| pending.event).collect();
    let count = events.len() as u64;
    let mut jitter = Jitter::from_entropy();
    let mut attempt = 1;
    let outcome = loop {
        let result = context.executor.attempt(&events, attempt).await;
        let (reason, retry_after) = match result {
            Attempt::Acknowledged => {
                let now_ms = now_ms();
                for event in &events {
                    let latency = event.timestamp_ms.map_or(0, |sent| now_ms.saturating_sub(sent).max(0));
                    context.stats.record_latency(latency as u64);
                    context.metrics.acknowledged_after(latency as u64);
                }
                context.stats.delivered.fetch_add(count, Ordering::Relaxed);
                context.metrics.delivered.add(count);
                break Outcome::Delivered;
            }
            Attempt::Gone { reason } => break Outcome::Gone(reason),
            Attempt::Reject { reason } => {
                break dead_letter(&context, &events, &reason, attempt, &mut stop, &mut jitter).await;
            }
            Attempt::Retry { reason, retry_after } => (reason, retry_after),
        };
        if attempt >= context.retry.max_attempts {
            let reason = format!("gave up after {attempt} attempts: {reason}");
            break dead_letter(&context, &events, &reason, attempt, &mut stop, &mut jitter).await;
        }
        tracing::debug!(trigger = %context.trigger, event = %events[0].id(), attempt, %reason, "delivery failed; will retry");
        let delay = context.retry.delay(attempt, retry_after, jitter.next_unit());
        if !sleep_unless_stopped(delay, &mut stop).await {
            break Outcome::Abandoned;
        }
        context.stats.retried.fetch_add(count, Ordering::Relaxed);
        context.metrics.retries.add(count);
        attempt += 1;
    };
    context.stats.in_flight.fetch_sub(count as i64, Ordering::Relaxed);
    Finished { id, keys, positions, outcome }
}

/// Sleeps for `delay`; false if the trigger was told to stop meanwhile.
async fn sleep_unless_stopped(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.wait_for(|stopping| *stopping) => false,
    }
}

async fn dead_letter(
    context: &DeliveryContext,
    events: &[Event],
    reason: &str,
    attempts: u32,
    stop: &mut watch::Receiver<bool>,
    jitter: &mut Jitter,
) -> Outcome {
    tracing::info!(trigger = %context.trigger, event = %events[0].id(), %reason, "dead-lettering");
    let mut try_number = 1;
    loop {
        match context.dead_letter.send(&context.trigger, events, reason, attempts).await {
            Ok(()) => {
                context.stats.dead_lettered.fetch_add(events.len() as u64, Ordering::Relaxed);
                context.metrics.dead_lettered.add(events.len() as u64);
                return Outcome::DeadLettered;
            }
            Err(error) => {
                tracing::warn!(trigger = %context.trigger, topic = %context.dead_letter.topic, %error,
                    "writing to the dead-letter topic failed; retrying");
                let delay = context.retry.delay(try_number, None, jitter.next_unit());
                if !sleep_unless_stopped(delay, stop).await {
                    return Outcome::Abandoned;
                }
                try_number = try_number.saturating_add(1);
            }
        }
    }
}

/// The dead-letter topic: failed events, verbatim, with why and where from in headers.
struct DeadLetter {
    producer: FutureProducer<QuietContext>,
    topic: String,
}

/// Headers added to a dead-lettered record (its own headers are kept before them).
pub const DEAD_LETTER_REASON: &str = "tidewater-dead-letter-reason";
pub const DEAD_LETTER_ATTEMPTS: &str = "tidewater-dead-letter-attempts";
pub const DEAD_LETTER_TRIGGER: &str = "tidewater-dead-letter-trigger";
pub const DEAD_LETTER_SOURCE: &str = "tidewater-dead-letter-source";

impl DeadLetter {
    /// Writes every event and waits until the cluster acknowledged all of them.
    async fn send(&self, trigger: &str, events: &[Event], reason: &str, attempts: u32) -> anyhow::Result<()> {
        let attempts = attempts.to_string();
        let mut sends = Vec::with_capacity(events.len());
        for event in events {
            let source = format!("{}/{}/{}", event.topic, event.partition, event.offset);
            let headers = event
                .owned_headers()
                .insert(Header { key: DEAD_LETTER_REASON, value: Some(reason.as_bytes()) })
                .insert(Header { key: DEAD_LETTER_ATTEMPTS, value: Some(attempts.as_bytes()) })
                .insert(Header { key: DEAD_LETTER_TRIGGER, value: Some(trigger.as_bytes()) })
                .insert(Header { key: DEAD_LETTER_SOURCE, value: Some(source.as_bytes()) });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = event.key.as_deref() {
                record = record.key(key);
            }
            if let Some(value) = event.value.as_deref() {
                record = record.payload(value);
            }
            if let Some(timestamp) = event.timestamp_ms {
                record = record.timestamp(timestamp);
            }
            sends.push(self.producer.send_result(record).map_err(|(error, _)| anyhow::anyhow!("{error}"))?);
        }
        for send in sends {
            match send.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => anyhow::bail!("{error}"),
                Err(_) => anyhow::bail!("the producer shut down"),
            }
        }
        Ok(())
    }
}
