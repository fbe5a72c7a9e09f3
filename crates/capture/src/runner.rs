//! Runs one capture: a consumer group member that cuts each assigned partition's records into
//! files and commits a partition's offset only after its file is visible.
//!
//! The exactly-once argument, step by step:
//!
//! 1. Records of a partition gather in one open file (Arrow builders in memory) until its time
//!    window, its size window or the hour of its records' timestamps ends it.
//! 2. A closed file is encoded to Parquet on a blocking thread while the loop goes on polling,
//!    one file at a time and in the order files closed. The loop then `Destination::publish`es
//!    it under its offset range's name, whole or not at all. Files are published in the order
//!    they closed, so a partition's file is visible only after every earlier one of the
//!    partition; a failed publish is retried with backoff, and the files behind it wait.
//! 3. Only then is the partition's offset committed, to one past the file's last offset.
//! 4. A process killed between 2 and 3 leaves a visible file whose records the group will hand
//!    out again. So before a partition's first record is used, the capture lists the files
//!    already there for the partition and skips every offset up to the highest last offset
//!    found (and commits past it). Step 2's order makes that highest offset a safe mark: no
//!    file after a missing one is ever visible.
//! 5. A revoked partition's open file and its files not yet visible are dropped without
//!    writing or committing: its next owner reads those records again. Revocations happen
//!    inside `recv` (librdkafka's rebalance callback), and a publish never runs during `recv`:
//!    the loop publishes only between polls, after dropping what was revoked. So a file is
//!    never made visible for a partition this instance no longer owns, and the next owner's
//!    listing sees every file this one published (one that overran `max.poll.interval.ms` is
//!    the exception; polling goes on during retries, so only a single publish attempt that
//!    long could overrun it).
//!
//! Backpressure, and polling during retries: while `PENDING_FILES_MAX` closed files wait to be
//! encoded or published and nothing is failing, the loop stops reading records until the encoder
//! catches up (a wait of one encode, well within `max.poll.interval.ms`). Polling never waits
//! for a write to succeed, though: while a listing or a write is failing, the loop reads on, and
//! a partition is paused (librdkafka stops fetching it, and the group still sees this member
//! alive) while `PENDING_FILES_PER_PARTITION_MAX` of its files wait, or while its files were
//! not listed yet. Pausing is kept to those cases because it is not free: librdkafka drops what
//! it prefetched for the partition and fetches it again on resume. Memory is bounded by the
//! waiting files plus the open one per assigned partition, plus librdkafka's own fetch queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::{now_ms, ClusterConfig, QuietContext};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::definition::CaptureDefinition;
use crate::destination::{Destination, DestinationError};
use crate::encode::{
    encode_file, CapturedRecord, EncodeError, EncodeStats, EncodedFile, FileBuilder, JsonSchemaMemory,
};
use crate::layout::{self, HourBucket};

/// The first wait after a failed write or listing; it doubles up to `RETRY_BACKOFF_MAX`.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest error message kept for logs and status: an object store's error can carry a whole
/// XML response body.
const ERROR_MESSAGE_BYTES_MAX: usize = 2_000;
/// How often open files are checked against their time window, at most.
const WINDOW_CHECK_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// Closed files (of all partitions) that may wait to be encoded or published before the loop
/// stops reading: one being encoded while the one before it is published keeps both busy.
pub const PENDING_FILES_MAX: usize = 2;
/// Records taken from librdkafka's queue in one round of the loop, at most.
const DRAIN_RECORDS_MAX: usize = 1_000;
/// Closed files of one partition that may wait while writes are failing before the partition is
/// paused.
pub const PENDING_FILES_PER_PARTITION_MAX: usize = 2;

/// A running capture's counters and latest error, for logs and `capture describe`.
#[derive(Debug, Default)]
pub struct CaptureStats {
    pub records_written: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub non_json_values: AtomicU64,
    pub type_conflicts: AtomicU64,
    /// Records skipped because a file already held them (a restart after a crash).
    pub records_skipped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl CaptureStats {
    /// The latest write or listing error, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    fn add_encode_stats(&self, stats: EncodeStats) {
        self.non_json_values.fetch_add(stats.non_json_values, Ordering::Relaxed);
        self.type_conflicts.fetch_add(stats.type_conflicts, Ordering::Relaxed);
    }
}

/// The consumer context: remembers revoked partitions for the loop, which drops their files
/// before it publishes anything.
struct CaptureContext {
    revoked: Arc<Mutex<Vec<i32>>>,
    quiet: QuietContext,
}

impl rdkafka::client::ClientContext for CaptureContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.quiet.log(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.quiet.error(error, reason);
    }
}

impl ConsumerContext for CaptureContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let assigned: Vec<i32> =
                partitions.elements().iter().map(|element| element.partition()).collect();
            tracing::info!(?assigned, "partitions assigned");
            // A partition this instance paused before it was revoked starts its new assignment
            // unpaused: the loop pauses only partitions it knows, and knows none of these yet.
            if let Err(error) = consumer.resume(partitions) {
                tracing::debug!(%error, "resuming newly assigned partitions");
            }
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else { return };
        let mut revoked = self.revoked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        revoked.extend(partitions.elements().iter().map(|element| element.partition()));
    }
}

/// A file being gathered for one partition.
#[derive(Debug)]
struct OpenFile {
    hour: HourBucket,
    builder: FileBuilder,
    opened_at: Instant,
}

/// Which file a closed file is: enough to name, publish and commit it.
#[derive(Debug, Clone, Copy)]
struct FileId {
    partition: i32,
    /// The partition's assignment the file belongs to (`PartitionState::epoch`): a file of an
    /// earlier assignment is dropped, never published.
    epoch: u64,
    hour: HourBucket,
    first_offset: i64,
    last_offset: i64,
    n_records: usize,
}

/// What an encode on the blocking thread gives back.
type EncodeOutcome = (FileId, Result<EncodedFile, EncodeError>, JsonSchemaMemory);

/// What the loop knows of one assigned partition.
#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    /// Whether its files were listed; until then its records wait in `held`.
    listed: bool,
    /// Records that came before the listing, in offset order.
    held: Vec<CapturedRecord>,
    /// Offsets up to this one are already in a visible file (from the listing).
    visible_through: Option<i64>,
    open: Option<OpenFile>,
    /// Closed files not yet visible.
    pending_files: usize,
    /// Whether this loop asked librdkafka to stop fetching it.
    paused: bool,
}

/// The next attempt at what failed last (a listing or a publish), with its backoff.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    backoff: Duration,
}

/// Everything the loop needs besides the consumer.
struct Capture {
    definition: CaptureDefinition,
    destination: Destination,
    stats: Arc<CaptureStats>,
    /// The JSON types so far; `None` while an encode holds it.
    json_memory: Option<JsonSchemaMemory>,
    partitions: HashMap<i32, PartitionState>,
    next_epoch: u64,
    /// Closed files waiting for the encoder, in the order they closed.
    to_encode: VecDeque<(FileId, FileBuilder)>,
    /// Encoded files waiting to be published, in the order they closed.
    to_publish: VecDeque<(FileId, EncodedFile)>,
    /// Partitions whose files are to be listed, in the order their first records came.
    unlisted: VecDeque<i32>,
    /// Set after a failed listing or publish: nothing is attempted before `at`.
    retry: Option<Retry>,
}

/// Runs `definition` until `stop` turns true; files open then are written and committed first.
/// An error ends it only when it cannot start, or when a file cannot be encoded (a bug; nothing
/// past the committed offsets is lost, and a restart reads it again).
pub async fn run_capture(
    definition: CaptureDefinition,
    cluster: ClusterConfig,
    stats: Arc<CaptureStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    definition.validate().map_err(|error| anyhow::anyhow!("capture {}: {error}", definition.name))?;
    let destination = Destination::parse(&definition.to)?;
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let group_id = definition.group_id();
    let client_id = format!("tidewater-capture-{}", definition.name);
    let consumer: StreamConsumer<CaptureContext> = cluster
        .group_consumer_config(&[
            ("group.id", &group_id),
            ("client.id", &client_id),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .create_with_context(CaptureContext { revoked: revoked.clone(), quiet: QuietContext::default() })
        .context("creating the capture's consumer")?;
    consumer.subscribe(&[&definition.topic]).context("subscribing to the capture's topic")?;
    tracing::info!(capture = %definition.name, topic = %definition.topic, to = %destination.url(),
        group = %group_id, "capture running");

    let window = Duration::from_secs(definition.window_secs);
    let mut window_check =
        tokio::time::interval((window / 4).clamp(Duration::from_millis(100), WINDOW_CHECK_INTERVAL_MAX));
    window_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut capture = Capture {
        json_memory: Some(JsonSchemaMemory::default()),
        definition,
        destination,
        stats,
        partitions: HashMap::new(),
        next_epoch: 0,
        to_encode: VecDeque::new(),
        to_publish: VecDeque::new(),
        unlisted: VecDeque::new(),
        retry: None,
    };
    // The encode in progress, outside `capture` so that the loop can wait on it and still
    // borrow `capture` in the other branches.
    let mut encoding: Option<JoinHandle<EncodeOutcome>> = None;
    loop {
        // Revocations happen inside `recv`, also one that another branch cut short: drop what
        // was revoked before anything is published or appended.
        capture.drop_revoked(&revoked);
        let failing = capture.retry.is_some();
        capture.advance(&consumer).await?;
        if capture.retry.is_some() != failing {
            // Failing or not decides whether waiting files pause their partitions.
            capture.update_pauses(&consumer);
        }
        if encoding.is_none() {
            encoding = capture.start_encode();
        }
        let reading = capture.may_read(encoding.is_some());
        let retry_at = capture.retry.map(|retry| retry.at);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            encoded = wait_for(&mut encoding) => {
                encoding = None;
                capture.encoded(encoded)?;
            }
            _ = sleep_until(retry_at) => {}
            _ = window_check.tick() => {
                capture.drop_revoked(&revoked);
                capture.close_expired(&consumer, window);
            }
            message = consumer.recv(), if reading => {
                capture.drop_revoked(&revoked);
                match message {
                    Ok(message) => capture.add_message(&consumer, &message)?,
                    Err(error) => tracing::debug!(%error, "consumer error"),
                }
                // What librdkafka has already fetched is taken without a round of the select
                // per record (most of a record's cost otherwise), up to a bound so that
                // encodes, windows and stops are looked at in between. Each record still
                // follows a `drop_revoked`, since a rebalance can happen inside any `recv`.
                for _ in 1..DRAIN_RECORDS_MAX {
                    if !capture.may_read(encoding.is_some()) {
                        break;
                    }
                    let Some(message) = consumer.recv().now_or_never() else { break };
                    capture.drop_revoked(&revoked);
                    match message {
                        Ok(message) => capture.add_message(&consumer, &message)?,
                        Err(error) => tracing::debug!(%error, "consumer error"),
                    }
                }
            }
        }
    }
    // Stopping: what is open is written and committed, so a restart rereads nothing.
    capture.drop_revoked(&revoked);
    capture.finish(&consumer, encoding).await?;
    consumer.unsubscribe();
    tracing::info!(capture = %capture.definition.name, "capture stopped");
    Ok(())
}

/// The encode's outcome, or never when none runs.
async fn wait_for(
    encoding: &mut Option<JoinHandle<EncodeOutcome>>,
) -> Result<EncodeOutcome, tokio::task::JoinError> {
    match encoding {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Wakes at `at`, or never.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Capture {
    /// Whether the loop takes records now: not while `PENDING_FILES_MAX` closed files wait and
    /// nothing is failing (backpressure; see the module documentation).
    fn may_read(&self, encoding: bool) -> bool {
        self.retry.is_some()
            || self.to_encode.len() + self.to_publish.len() + usize::from(encoding) < PENDING_FILES_MAX
    }

    /// Forgets the partitions revoked since the last call, with their open, held and pending
    /// files: their next owner reads those records again from the committed offset.
    fn drop_revoked(&mut self, revoked: &Mutex<Vec<i32>>) {
        let revoked_now: Vec<i32> =
            std::mem::take(&mut *revoked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for partition in revoked_now {
            let Some(state) = self.partitions.remove(&partition) else { continue };
            self.to_encode.retain(|(file, _)| file.partition != partition);
            self.to_publish.retain(|(file, _)| file.partition != partition);
            self.unlisted.retain(|unlisted| *unlisted != partition);
            let dropped = state.open.map_or(0, |open| open.builder.len()) + state.held.len();
            tracing::info!(
                partition,
                dropped,
                pending_files = state.pending_files,
                "partition revoked; its open and unpublished files are left to the next owner"
            );
        }
    }

    /// Adds one record from the consumer to its partition: held until the partition's files
    /// are listed, then into its open file, closing files as windows end.
    fn add_message(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), EncodeError> {
        let partition = message.partition();
        if !self.partitions.contains_key(&partition) {
            // A partition's first record: list its files before using any (runner step 4), and
            // fetch no more of it meanwhile.
            self.next_epoch += 1;
            self.partitions.insert(
                partition,
                PartitionState {
                    epoch: self.next_epoch,
                    listed: false,
                    held: Vec::new(),
                    visible_through: None,
                    open: None,
                    pending_files: 0,
                    paused: false,
                },
            );
            self.unlisted.push_back(partition);
            self.update_pause(consumer, partition);
        }
        let Some(state) = self.partitions.get_mut(&partition) else { return Ok(()) };
        let timestamp_ms = message.timestamp().to_millis();
        if !state.listed {
            state.held.push(CapturedRecord {
                partition,
                offset: message.offset(),
                timestamp_ms,
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
            return Ok(());
        }
        let headers = message.headers();
        let headers =
            headers.iter().flat_map(|headers| headers.iter()).map(|header| (header.key, header.value));
        let offset = message.offset();
        self.append(consumer, partition, offset, timestamp_ms, |builder| {
            builder.append(offset, timestamp_ms, message.key(), message.payload(), headers)
        })
    }

    /// Appends one record of a listed partition to its open file (through `write`, which gets
    /// the builder), skipping what a visible file already holds and closing the file first if
    /// the record belongs to another hour, and after if the size window is full.
    fn append(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        write: impl FnOnce(&mut FileBuilder) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let window_bytes = self.definition.window_bytes;
        let Some(state) = self.partitions.get_mut(&partition) else { return Ok(()) };
        if state.visible_through.is_some_and(|last_offset| offset <= last_offset) {
            self.stats.records_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let hour = HourBucket::of_timestamp_ms(timestamp_ms.unwrap_or_else(now_ms));
        if state.open.as_ref().is_some_and(|open| open.hour != hour) {
            self.close_file(consumer, partition);
        }
        let Some(state) = self.partitions.get_mut(&partition) else { return Ok(()) };
        let open = state.open.get_or_insert_with(|| OpenFile {
            hour,
            builder: FileBuilder::new(partition, window_bytes),
            opened_at: Instant::now(),
        });
        write(&mut open.builder)?;
        if open.builder.size_bytes() >= window_bytes {
            self.close_file(consumer, partition);
        }
        Ok(())
    }

    /// Closes the open files whose time window has passed.
    fn close_expired(&mut self, consumer: &StreamConsumer<CaptureContext>, window: Duration) {
        let expired: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.open.as_ref().is_some_and(|open| open.opened_at.elapsed() >= window))
            .map(|(partition, _)| *partition)
            .collect();
        for partition in expired {
            self.close_file(consumer, partition);
        }
    }

    /// Queues the partition's open file for the encoder.
    fn close_file(&mut self, consumer: &StreamConsumer<CaptureContext>, partition: i32) {
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        let Some(open) = state.open.take() else { return };
        let (Some(first_offset), Some(last_offset)) =
            (open.builder.first_offset(), open.builder.last_offset())
        else {
            return;
        };
        let file = FileId {
            partition,
            epoch: state.epoch,
            hour: open.hour,
            first_offset,
            last_offset,
            n_records: open.builder.len(),
        };
        state.pending_files += 1;
        self.to_encode.push_back((file, open.builder));
        self.update_pause(consumer, partition);
    }

    /// `update_pause` for every partition.
    fn update_pauses(&mut self, consumer: &StreamConsumer<CaptureContext>) {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            self.update_pause(consumer, partition);
        }
    }

    /// Pauses or resumes the partition's fetching to match what it waits for.
    fn update_pause(&mut self, consumer: &StreamConsumer<CaptureContext>, partition: i32) {
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        let pause =
            !state.listed || (self.retry.is_some() && state.pending_files >= PENDING_FILES_PER_PARTITION_MAX);
        if pause == state.paused {
            return;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.definition.topic, partition);
        let result = if pause { consumer.pause(&list) } else { consumer.resume(&list) };
        match result {
            Ok(()) => state.paused = pause,
            Err(error) => tracing::warn!(%error, partition, pause, "pausing or resuming a partition failed"),
        }
    }

    /// Hands the next closed file to a blocking thread for encoding, when the encoder is idle.
    fn start_encode(&mut self) -> Option<JoinHandle<EncodeOutcome>> {
        if self.to_encode.is_empty() {
            return None;
        }
        let mut memory = self.json_memory.take()?;
        let (file, builder) = self.to_encode.pop_front()?;
        let topic = self.definition.topic.clone();
        let mode = self.definition.columns;
        Some(tokio::task::spawn_blocking(move || {
            let encoded = encode_file(&topic, builder, mode, &mut memory);
            (file, encoded, memory)
        }))
    }

    /// Takes an encode's outcome: the file goes to the publish queue, unless its partition was
    /// revoked meanwhile. An encode that failed ends the capture (see `run_capture`).
    fn encoded(&mut self, outcome: Result<EncodeOutcome, tokio::task::JoinError>) -> anyhow::Result<()> {
        let (file, encoded, memory) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => anyhow::bail!("encoding a file panicked: {error}"),
        };
        self.json_memory = Some(memory);
        let encoded = encoded.with_context(|| {
            format!(
                "encoding partition {}'s file of offsets {}-{}",
                file.partition, file.first_offset, file.last_offset
            )
        })?;
        if self.partitions.get(&file.partition).is_some_and(|state| state.epoch == file.epoch) {
            self.to_publish.push_back((file, encoded));
        }
        Ok(())
    }

    /// Does the listings and publishes that are due, in order, each attempted once; the first
    /// failure sets the next attempt's time and ends the round. A round that ends with nothing
    /// left failing clears the latest error and the backoff. Never runs during `recv`.
    async fn advance(&mut self, consumer: &StreamConsumer<CaptureContext>) -> Result<(), EncodeError> {
        if self.retry.is_some_and(|retry| Instant::now() < retry.at) {
            return Ok(());
        }
        while let Some(&partition) = self.unlisted.front() {
            let result = self.list(partition).await;
            let what = format!("listing partition {partition}'s files");
            let Some(visible_through) = self.settle(&what, result) else { return Ok(()) };
            self.unlisted.pop_front();
            self.listed(consumer, partition, visible_through)?;
        }
        while let Some((file, bytes)) = self.to_publish.pop_front() {
            let (path, result) = self.publish(&file, &bytes).await;
            if self.settle(&format!("writing {path}"), result).is_none() {
                self.to_publish.push_front((file, bytes));
                return Ok(());
            }
            self.published(consumer, file, &path, &bytes);
        }
        if self.retry.take().is_some() {
            self.stats.set_last_error(None);
        }
        Ok(())
    }

    /// Makes a closed file visible under its final name (through its staging name); returns
    /// that name and how it went.
    async fn publish(&self, file: &FileId, encoded: &EncodedFile) -> (String, Result<(), DestinationError>) {
        let topic = &self.definition.topic;
        let path = layout::file_path(topic, file.hour, file.partition, file.first_offset, file.last_offset);
        let staging = layout::staging_path(topic, file.partition, file.first_offset);
        let result = self.destination.publish(&path, &staging, encoded.bytes.clone()).await;
        (path, result)
    }

    /// Records an attempt's outcome: a failure is logged, kept for `capture describe`, and
    /// schedules the next attempt after a backoff that doubles while failures go on.
    fn settle<T>(&mut self, what: &str, result: Result<T, DestinationError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                let backoff =
                    self.retry.map_or(RETRY_BACKOFF_MIN, |retry| (retry.backoff * 2).min(RETRY_BACKOFF_MAX));
                let message = one_line(&format!("{what}: {error}"));
                tracing::error!(retry_in_ms = backoff.as_millis() as u64, "{message}");
                self.stats.set_last_error(Some(message));
                self.retry = Some(Retry { at: Instant::now() + backoff, backoff });
                None
            }
        }
    }

    /// Lists the partition's visible files and removes its staging leftovers; the highest
    /// offset already captured.
    async fn list(&self, partition: i32) -> Result<Option<i64>, DestinationError> {
        let topic = &self.definition.topic;
        self.destination.remove_staging_leftovers(topic, partition).await?;
        let ranges = self.destination.list_files(topic, partition).await?;
        Ok(ranges.iter().map(|range| range.last_offset).max())
    }

    /// The partition's files are listed: commit past what they hold, use the held records and
    /// fetch again.
    fn listed(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        partition: i32,
        visible_through: Option<i64>,
    ) -> Result<(), EncodeError> {
        let Some(state) = self.partitions.get_mut(&partition) else { return Ok(()) };
        state.listed = true;
        state.visible_through = visible_through;
        let held = std::mem::take(&mut state.held);
        if let (Some(last_offset), Some(first)) = (visible_through, held.first()) {
            if last_offset >= first.offset {
                tracing::info!(
                    partition,
                    last_offset,
                    "records already captured; skipping to the next offset"
                );
                commit(consumer, &self.definition.topic, partition, last_offset + 1);
            }
        }
        for record in &held {
            self.append(consumer, partition, record.offset, record.timestamp_ms, |builder| {
                builder.append_record(record)
            })?;
        }
        self.update_pause(consumer, partition);
        Ok(())
    }

    /// A file is visible: count it, remember it, commit past it and fetch its partition again
    /// if it was waiting for room.
    fn published(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        file: FileId,
        path: &str,
        encoded: &EncodedFile,
    ) {
        let n_bytes = encoded.bytes.len() as u64;
        self.stats.add_encode_stats(encoded.stats);
        self.stats.records_written.fetch_add(file.n_records as u64, Ordering::Relaxed);
        self.stats.files_written.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_written.fetch_add(n_bytes, Ordering::Relaxed);
        let n_records = file.n_records;
        if encoded.stats == EncodeStats::default() {
            tracing::debug!(%path, n_records, n_bytes, "file visible");
        } else {
            // Counted per file, so a reader of the log sees which file holds values that are not
            // JSON objects (they are in `value` only) or fields written as text.
            tracing::info!(%path, n_records, n_bytes, non_json_values = encoded.stats.non_json_values,
                type_conflicts = encoded.stats.type_conflicts, "file visible");
        }
        if let Some(state) = self.partitions.get_mut(&file.partition) {
            state.visible_through = Some(file.last_offset);
            state.pending_files = state.pending_files.saturating_sub(1);
        }
        commit(consumer, &self.definition.topic, file.partition, file.last_offset + 1);
        self.update_pause(consumer, file.partition);
    }

    /// Stopping: closes the open files, encodes every closed one and publishes each once, in
    /// order; after a partition's first failure its later files are dropped (not committed).
    async fn finish(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        mut encoding: Option<JoinHandle<EncodeOutcome>>,
    ) -> anyhow::Result<()> {
        let open: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.open.is_some())
            .map(|(partition, _)| *partition)
            .collect();
        for partition in open {
            self.close_file(consumer, partition);
        }
        loop {
            if let Some(handle) = encoding.take() {
                self.encoded(handle.await)?;
            }
            encoding = self.start_encode();
            if encoding.is_none() {
                break;
            }
        }
        let mut failed: Vec<i32> = Vec::new();
        while let Some((file, encoded)) = self.to_publish.pop_front() {
            if failed.contains(&file.partition) {
                continue;
            }
            let (path, result) = self.publish(&file, &encoded).await;
            // The retry time is not waited for: a failure now is not retried, and its records
            // are read again by the next run.
            self.retry = None;
            match self.settle(&format!("writing {path}"), result) {
                Some(()) => self.published(consumer, file, &path, &encoded),
                None => failed.push(file.partition),
            }
        }
        Ok(())
    }
}

/// Commits `next_offset` for one partition and waits for the answer. A failure is only logged:
/// the file is visible, so a restart skips its records through the listing (runner step 4).
///
/// The wait happens in `block_in_place`, which hands this worker's other duties (its queued
/// tasks, and the I/O driver if it holds it) to another thread first: in `tidewater serve` the
/// broker that must answer the commit runs on the same runtime, and a worker blocked in
/// librdkafka's synchronous commit could otherwise leave it unpolled. On a single-threaded
/// runtime, where that is impossible, the commit is sent without waiting.
fn commit(consumer: &StreamConsumer<CaptureContext>, topic: &str, partition: i32, next_offset: i64) {
    let mut list = TopicPartitionList::new();
    if let Err(error) = list.add_partition_offset(topic, partition, Offset::Offset(next_offset)) {
        tracing::warn!(%error, partition, next_offset, "offset out of range; not committed");
        return;
    }
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let result = if multi_thread {
        tokio::task::block_in_place(|| consumer.commit(&list, CommitMode::Sync))
    } else {
        consumer.commit(&list, CommitMode::Async)
    };
    if let Err(error) = result {
        tracing::warn!(%error, partition, next_offset, "committing after a visible file failed; a restart skips it by listing");
    }
}

/// `message` on one line (runs of whitespace, newlines included, as one space), at most
/// `ERROR_MESSAGE_BYTES_MAX` bytes, so a log line and a status detail stay one readable line.
fn one_line(message: &str) -> String {
    let mut line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > ERROR_MESSAGE_BYTES_MAX {
        let mut cut = ERROR_MESSAGE_BYTES_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_become_one_bounded_line() {
        assert_eq!(
            one_line("listing: 404 Not Found: <?xml?>\n<Error>\n  <Code>NoSuchBucket</Code>"),
            "listing: 404 Not Found: <?xml?> <Error> <Code>NoSuchBucket</Code>"
        );
        let long = one_line(&"é".repeat(ERROR_MESSAGE_BYTES_MAX));
        assert!(long.len() <= ERROR_MESSAGE_BYTES_MAX + 3 && long.ends_with("..."), "{}", long.len());
    }
}
