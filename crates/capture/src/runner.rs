//! Runs one capture: a consumer group member that cuts each assigned partition's records into
//! files and commits a partition's offset only after its file is visible.
//!
//! The exactly-once argument, step by step:
//!
//! 1. Records of a partition gather in one open file (in memory) until its time window, its
//!    size window or the hour of its records' timestamps ends it.
//! 2. Closing encodes the file and `Destination::publish`es it under its offset range's name,
//!    whole or not at all (a failure is retried with backoff, the records kept).
//! 3. Only then is the partition's offset committed, to one past the file's last offset.
//! 4. A process killed between 2 and 3 leaves a visible file whose records the group will hand
//!    out again. So before a partition's first record is used, the capture lists the files
//!    already there for the partition and skips every offset up to the highest last offset
//!    found (and commits past it). A file is never written twice with different contents for
//!    the same offsets, and no offset is in two files.
//! 5. A revoked partition's open file is dropped without writing or committing: its next owner
//!    reads those records again. A rebalance waits for this loop to poll, and the loop polls
//!    only between whole steps, so two instances never write the same partition at once while
//!    both are in the group (one that overran `max.poll.interval.ms` is the exception; see
//!    docs/capture.md).
//!
//! Memory is bounded by the size window per assigned partition (the records of open files),
//! plus librdkafka's own fetch queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::{now_ms, ClusterConfig, QuietContext};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::definition::CaptureDefinition;
use crate::destination::{Destination, DestinationError};
use crate::encode::{encode_file, CapturedRecord, EncodeStats, JsonSchemaMemory};
use crate::layout::{self, HourBucket};

/// The first wait after a failed write or listing; it doubles up to `RETRY_BACKOFF_MAX`.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest error message kept for logs and status: an object store's error can carry a whole
/// XML response body.
const ERROR_MESSAGE_BYTES_MAX: usize = 2_000;
/// How often open files are checked against their time window, at most.
const WINDOW_CHECK_INTERVAL_MAX: Duration = Duration::from_secs(1);

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

/// The consumer context: remembers revoked partitions for the loop, which drops their open
/// files before it uses the next record.
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
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let assigned: Vec<i32> =
                partitions.elements().iter().map(|element| element.partition()).collect();
            tracing::info!(?assigned, "partitions assigned");
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
    records: Vec<CapturedRecord>,
    size_bytes: u64,
    opened_at: Instant,
}

/// What the loop knows of one assigned partition.
#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets up to this one are already in a visible file (from the listing at assignment).
    visible_through: Option<i64>,
    open: Option<OpenFile>,
}

/// Everything the loop needs besides the consumer.
struct Capture {
    definition: CaptureDefinition,
    destination: Destination,
    stats: Arc<CaptureStats>,
    json_memory: Option<JsonSchemaMemory>,
    partitions: HashMap<i32, PartitionState>,
}

/// Runs `definition` until `stop` turns true; files open then are written and committed first.
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
        .client_config(&[
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
    };
    'read: loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = window_check.tick() => {
                // A revocation may have come during a poll this tick interrupted: never write a
                // partition that is no longer ours.
                capture.drop_revoked(&revoked);
                let expired: Vec<i32> = capture
                    .partitions
                    .iter()
                    .filter(|(_, state)| state.open.as_ref().is_some_and(|open| open.opened_at.elapsed() >= window))
                    .map(|(partition, _)| *partition)
                    .collect();
                for partition in expired {
                    if !capture.close_file(&consumer, partition, &mut stop).await {
                        break 'read;
                    }
                }
            }
            message = consumer.recv() => {
                // Revocations happen inside `recv`, before the records of a new assignment.
                capture.drop_revoked(&revoked);
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::debug!(%error, "consumer error");
                        continue;
                    }
                };
                let record = CapturedRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: message.timestamp().to_millis(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers: message
                        .headers()
                        .map(|headers| headers.iter().map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec))).collect())
                        .unwrap_or_default(),
                };
                if !capture.add_record(&consumer, record, &mut stop).await {
                    break;
                }
            }
        }
    }
    // Stopping: what is open is written and committed, so a restart rereads nothing.
    let open: Vec<i32> = capture
        .partitions
        .iter()
        .filter(|(_, state)| state.open.is_some())
        .map(|(partition, _)| *partition)
        .collect();
    // One attempt each: a receiver whose sender is gone reads as "stop" at once, so a write that
    // fails now is not retried (its records are not committed; the next run reads them again).
    let (_, mut stop_now) = watch::channel(false);
    for partition in open {
        capture.close_file(&consumer, partition, &mut stop_now).await;
    }
    consumer.unsubscribe();
    tracing::info!(capture = %capture.definition.name, "capture stopped");
    Ok(())
}

impl Capture {
    /// Forgets the partitions revoked since the last call, with their open files: their next
    /// owner reads those records again from the committed offset.
    fn drop_revoked(&mut self, revoked: &Mutex<Vec<i32>>) {
        let revoked_now: Vec<i32> =
            std::mem::take(&mut *revoked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for partition in revoked_now {
            if let Some(state) = self.partitions.remove(&partition) {
                let dropped = state.open.map_or(0, |open| open.records.len());
                tracing::info!(
                    partition,
                    dropped,
                    "partition revoked; its open file is left to the next owner"
                );
            }
        }
    }

    /// Adds one record to its partition's open file, closing files as windows end. Returns
    /// false when asked to stop while retrying.
    async fn add_record(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        record: CapturedRecord,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let partition = record.partition;
        if !self.partitions.contains_key(&partition) {
            let Some(visible_through) = self.recover(partition, stop).await else { return false };
            if let Some(last_offset) = visible_through {
                if last_offset >= record.offset {
                    tracing::info!(
                        partition,
                        last_offset,
                        "records already captured; skipping to the next offset"
                    );
                    commit(consumer, &self.definition.topic, partition, last_offset + 1);
                }
            }
            self.partitions.insert(partition, PartitionState { visible_through, open: None });
        }
        let Some(state) = self.partitions.get_mut(&partition) else { return true };
        if state.visible_through.is_some_and(|last_offset| record.offset <= last_offset) {
            self.stats.records_skipped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let hour = HourBucket::of_timestamp_ms(record.timestamp_ms.unwrap_or_else(now_ms));
        if state.open.as_ref().is_some_and(|open| open.hour != hour)
            && !self.close_file(consumer, partition, stop).await
        {
            return false;
        }
        let Some(state) = self.partitions.get_mut(&partition) else { return true };
        let open = state.open.get_or_insert_with(|| OpenFile {
            hour,
            records: Vec::new(),
            size_bytes: 0,
            opened_at: Instant::now(),
        });
        open.size_bytes += record.size_bytes() as u64;
        open.records.push(record);
        if open.size_bytes >= self.definition.window_bytes {
            return self.close_file(consumer, partition, stop).await;
        }
        true
    }

    /// Lists the partition's visible files and removes its staging leftovers, retrying with
    /// backoff. `None` when asked to stop; otherwise the highest offset already captured.
    async fn recover(&mut self, partition: i32, stop: &mut watch::Receiver<bool>) -> Option<Option<i64>> {
        let topic = self.definition.topic.clone();
        let destination = self.destination.clone();
        let result = retry(&self.stats, stop, &format!("listing partition {partition}'s files"), || async {
            destination.remove_staging_leftovers(&topic, partition).await?;
            destination.list_files(&topic, partition).await
        })
        .await?;
        Some(result.iter().map(|range| range.last_offset).max())
    }

    /// Encodes, publishes and commits the partition's open file. Returns false when asked to
    /// stop while retrying (nothing is committed then).
    async fn close_file(
        &mut self,
        consumer: &StreamConsumer<CaptureContext>,
        partition: i32,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let Some(open) = self.partitions.get_mut(&partition).and_then(|state| state.open.take()) else {
            return true;
        };
        let (Some(first), Some(last)) = (open.records.first(), open.records.last()) else { return true };
        let (first_offset, last_offset, n_records) = (first.offset, last.offset, open.records.len());
        let topic = self.definition.topic.clone();
        let mode = self.definition.columns;
        let mut memory = self.json_memory.take().unwrap_or_default();
        let encode_topic = topic.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            let encoded = encode_file(&encode_topic, &open.records, mode, &mut memory);
            (encoded, memory)
        })
        .await;
        let (encoded, memory) = match encoded {
            Ok(done) => done,
            Err(error) => {
                // Encoding panicked: a bug. Nothing is committed, so the records come again.
                tracing::error!(%error, partition, "encoding a file failed");
                return true;
            }
        };
        self.json_memory = Some(memory);
        let file = match encoded {
            Ok(file) => file,
            Err(error) => {
                tracing::error!(%error, partition, first_offset, "encoding a file failed; its records are not committed");
                self.stats.set_last_error(Some(error.to_string()));
                return true;
            }
        };
        let path = layout::file_path(&topic, open.hour, partition, first_offset, last_offset);
        let staging = layout::staging_path(&topic, partition, first_offset);
        let n_bytes = file.bytes.len() as u64;
        let destination = self.destination.clone();
        let bytes = Arc::new(file.bytes);
        let published = retry(&self.stats, stop, &format!("writing {path}"), || {
            let (destination, bytes, path, staging) =
                (destination.clone(), bytes.clone(), path.clone(), staging.clone());
            async move { destination.publish(&path, &staging, bytes.to_vec()).await }
        })
        .await;
        if published.is_none() {
            return false;
        }
        self.stats.add_encode_stats(file.stats);
        self.stats.records_written.fetch_add(n_records as u64, Ordering::Relaxed);
        self.stats.files_written.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_written.fetch_add(n_bytes, Ordering::Relaxed);
        if file.stats == EncodeStats::default() {
            tracing::debug!(%path, n_records, n_bytes, "file visible");
        } else {
            // Counted per file, so a reader of the log sees which file holds values that are not
            // JSON objects (they are in `value` only) or fields written as text.
            tracing::info!(%path, n_records, n_bytes, non_json_values = file.stats.non_json_values,
                type_conflicts = file.stats.type_conflicts, "file visible");
        }
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.visible_through = Some(last_offset);
        }
        commit(consumer, &topic, partition, last_offset + 1);
        true
    }
}

/// Commits `next_offset` for one partition, synchronously. A failure is only logged: the file
/// is visible, so a restart skips its records through the listing (runner step 4).
fn commit(consumer: &StreamConsumer<CaptureContext>, topic: &str, partition: i32, next_offset: i64) {
    let mut list = TopicPartitionList::new();
    if let Err(error) = list.add_partition_offset(topic, partition, Offset::Offset(next_offset)) {
        tracing::warn!(%error, partition, next_offset, "offset out of range; not committed");
        return;
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
        tracing::warn!(%error, partition, next_offset, "committing after a visible file failed; a restart skips it by listing");
    }
}

/// Runs `attempt` until it succeeds, with doubling backoff, logging each failure and keeping
/// the latest in `stats`. `None` when `stop` turned true first.
async fn retry<T, F, Fut>(
    stats: &CaptureStats,
    stop: &mut watch::Receiver<bool>,
    what: &str,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DestinationError>>,
{
    let mut backoff = RETRY_BACKOFF_MIN;
    loop {
        match attempt().await {
            Ok(value) => {
                stats.set_last_error(None);
                return Some(value);
            }
            Err(error) => {
                let message = one_line(&format!("{what}: {error}"));
                tracing::error!(retry_in_ms = backoff.as_millis() as u64, "{message}");
                stats.set_last_error(Some(message));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return None,
        }
        if *stop.borrow() {
            return None;
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
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
