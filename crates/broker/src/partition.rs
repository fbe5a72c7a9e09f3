//! One partition as the broker serves it: its log, the idempotent-producer state that decides
//! whether a batch is appended, acknowledged as a duplicate, or refused, and the transaction
//! state behind the last stable offset and the aborted-transaction list of read_committed
//! fetches.
//!
//! Transactions here: a transactional batch opens its producer's transaction in this partition
//! (remembering its first offset); a marker written by the transaction coordinator closes it,
//! and its epoch fences any older epoch of that producer here. The last stable offset is the
//! first offset of the oldest open transaction (or the high watermark when none is open).
//! Aborted transactions are kept in a small file beside the log, `aborted-transactions`, one
//! line each, so read_committed consumers can skip their records long after the fact. The file
//! is written after the marker, so an abort stays open here until its entry is written, and a
//! start restores the entry of an abort marker a crash left without one.
//!
//! Compaction: on a topic whose cleanup policy includes `compact`, records without a key are
//! refused (INVALID_RECORD, as Kafka does), and so are compressed batches, whose keys this broker
//! cannot read. `clean` runs one cleaning pass of the log, keeping each producer's last batch so
//! its sequence numbers survive. A pass may remove an abort marker once its transaction has no
//! records left; its entry then goes from the aborted-transaction list too, or a read_committed
//! consumer would keep skipping that producer's later transactions in a fetch that starts before
//! the marker was (Kafka drops such entries from its transaction index the same way). A crash
//! between the two is repaired on open.
//!
//! Restarts: producer and open-transaction state is snapshotted (`producer_snapshot.rs`) after
//! each segment roll and at a clean close, so opening reads the newest snapshot and only the
//! batches after it, and a transaction open since many segments ago is still open after a
//! restart, holding the last stable offset where it began.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tidewater_kafka::ResponseError;
use tidewater_log::batch::{self, BatchHeader};
use tidewater_log::{Appended, CleanOptions, CleanOutcome, Log, LogError};

use crate::broker::ApiError;
use crate::error::log_error_code;
use crate::fetch_waiters::FetchWaiters;
use crate::producer_snapshot::{self, ProducerSnapshot};
use crate::producers::{PartitionProducers, SequenceCheck};

/// The file of aborted transactions inside a partition's directory, and the name it is rewritten
/// under before replacing it.
const ABORTED_FILE_NAME: &str = "aborted-transactions";
const ABORTED_TEMP_FILE_NAME: &str = "aborted-transactions.tmp";

#[derive(Debug)]
pub struct Partition {
    pub log: Arc<Log>,
    producers: Mutex<PartitionProducers>,
    transactions: Mutex<PartitionTransactions>,
    /// The active segment's base offset when the last snapshot was taken: a different one means
    /// the log rolled since, and the next append takes a snapshot.
    snapshot_segment: Mutex<i64>,
    /// Held while a snapshot is written (outside the producer-state lock, so appends go on), so
    /// two are never written at once.
    snapshot_writes: Mutex<()>,
    /// Long-polling fetches waiting for this partition to move.
    pub(crate) fetch_waiters: FetchWaiters,
}

/// A transaction that was aborted in this partition: its records lie in
/// `[first_offset, last_offset]`, where `last_offset` is the abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortedTransaction {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl AbortedTransaction {
    /// The entry's line in the aborted-transaction file.
    fn line(&self) -> String {
        format!("{} {} {}\n", self.producer_id, self.first_offset, self.last_offset)
    }
}

#[derive(Debug)]
struct PartitionTransactions {
    /// Producer id to the first offset of its open transaction here.
    open: BTreeMap<i64, i64>,
    aborted: Vec<AbortedTransaction>,
    aborted_path: PathBuf,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    Appended(Appended),
    /// The batch was a producer's retry of one already in the log at this offset.
    Duplicate {
        base_offset: i64,
    },
}

impl Partition {
    /// Wraps an open log, rebuilding producer and transaction state from its newest snapshot
    /// and the batches after it (from the whole log when there is no snapshot, as in a data
    /// directory written before snapshots existed; a snapshot is then written at once).
    pub(crate) fn open(log: Arc<Log>, now_ms: i64) -> Result<Partition, LogError> {
        let snapshot = producer_snapshot::load_latest(log.dir(), log.end_offset()).map_err(|source| {
            LogError::Io { op: "read producer snapshots in", path: log.dir().to_path_buf(), source }
        })?;
        let had_snapshot = snapshot.is_some();
        let (mut producers, mut open, from) = match snapshot {
            Some(snapshot) => (
                PartitionProducers::restore(snapshot.producers),
                snapshot.open_transactions.into_iter().collect(),
                snapshot.offset,
            ),
            None => (PartitionProducers::default(), BTreeMap::new(), log.log_start_offset()),
        };
        // When the log's last batch is a marker that ended a transaction: (producer id, first
        // offset of the transaction, offset of the marker).
        let mut last_ended = None;
        log.for_each_batch(from, |header| {
            producers.record(header, now_ms);
            last_ended = track_open_transaction(&mut open, header)
                .map(|first_offset| (header.producer_id, first_offset, header.base_offset));
        })?;
        let aborted_path = log.dir().join(ABORTED_FILE_NAME);
        let mut aborted = read_aborted(&aborted_path, log.log_start_offset());
        if let Some((producer_id, first_offset, marker_offset)) = last_ended {
            restore_last_abort(&log, &aborted_path, &mut aborted, producer_id, first_offset, marker_offset)?;
        }
        let transactions = PartitionTransactions { open, aborted, aborted_path };
        let snapshot_segment = Mutex::new(log.recent_segments_start(0));
        let partition = Partition {
            log,
            producers: Mutex::new(producers),
            transactions: Mutex::new(transactions),
            snapshot_segment,
            snapshot_writes: Mutex::new(()),
            fetch_waiters: FetchWaiters::default(),
        };
        // A crash may have come between a cleaning that removed abort markers and the rewrite
        // of the list without them.
        partition.forget_aborts_without_markers()?;
        if !had_snapshot && partition.log.end_offset() > partition.log.log_start_offset() {
            partition.snapshot_now();
        }
        Ok(partition)
    }

    /// Takes a snapshot at the log end offset now (at a clean close, and after an open that had
    /// none). A failure is logged: it only costs the next open a longer read.
    pub(crate) fn snapshot_now(&self) {
        let snapshot = {
            let producers = self.producers.lock().expect("producer state mutex poisoned by a panic");
            let transactions = self.lock_transactions();
            self.take_snapshot(&producers, &transactions, self.log.end_offset())
        };
        self.write_snapshot(snapshot);
    }

    /// The state as of `offset`, which must be the log end offset while the caller holds the
    /// producer-state lock (every append does), so no batch can come in between.
    fn take_snapshot(
        &self,
        producers: &PartitionProducers,
        transactions: &PartitionTransactions,
        offset: i64,
    ) -> ProducerSnapshot {
        ProducerSnapshot {
            offset,
            producers: producers.snapshot(),
            open_transactions: transactions
                .open
                .iter()
                .map(|(&producer_id, &first)| (producer_id, first))
                .collect(),
        }
    }

    /// After an append, under the producer-state lock: a snapshot at `end_offset` if the log
    /// rolled since the last one, for the caller to write once it released the locks.
    fn snapshot_if_rolled(
        &self,
        producers: &PartitionProducers,
        transactions: &PartitionTransactions,
        end_offset: i64,
    ) -> Option<ProducerSnapshot> {
        let active_base = self.log.recent_segments_start(0);
        let mut snapshot_segment = self.snapshot_segment.lock().expect("snapshot mutex poisoned by a panic");
        if *snapshot_segment == active_base {
            return None;
        }
        *snapshot_segment = active_base;
        Some(self.take_snapshot(producers, transactions, end_offset))
    }

    /// Writes a snapshot once every offset below it is durable, so a crash can never leave a
    /// snapshot ahead of the log (see `producer_snapshot.rs`). A failure is logged, not returned:
    /// it only costs the next open a longer read.
    fn write_snapshot(&self, snapshot: ProducerSnapshot) {
        let _one_at_a_time = self.snapshot_writes.lock().expect("snapshot mutex poisoned by a panic");
        let written =
            self.log.wait_durable(snapshot.offset).map_err(|error| error.to_string()).and_then(|()| {
                producer_snapshot::write(self.log.dir(), &snapshot).map_err(|error| error.to_string())
            });
        match written {
            Ok(()) => {
                tracing::debug!(dir = %self.log.dir().display(), offset = snapshot.offset, "producer snapshot written")
            }
            Err(error) => tracing::warn!(
                dir = %self.log.dir().display(),
                offset = snapshot.offset,
                %error,
                "could not write a producer snapshot; the next start reads further back"
            ),
        }
    }

    /// One cleaning pass of the log (see `Log::clean`), keeping every known producer's last
    /// batch; then the aborted transactions whose markers it removed are forgotten.
    pub(crate) fn clean(&self) -> Result<CleanOutcome, LogError> {
        let retain_batches_ending_at: BTreeSet<i64> = self
            .producers
            .lock()
            .expect("producer state mutex poisoned by a panic")
            .last_batch_offsets()
            .into_iter()
            .collect();
        let outcome =
            self.log.clean(&CleanOptions { retain_batches_ending_at, ..CleanOptions::default() })?;
        if matches!(outcome, CleanOutcome::Cleaned(_)) {
            self.forget_aborts_without_markers()?;
        }
        Ok(outcome)
    }

    /// Drops the aborted-transaction entries whose abort marker compaction removed (only below
    /// `Log::compacted_below` can one be gone), rewriting the file if any went.
    fn forget_aborts_without_markers(&self) -> Result<(), LogError> {
        let compacted_below = self.log.compacted_below();
        let mut transactions = self.lock_transactions();
        let mut kept = Vec::with_capacity(transactions.aborted.len());
        for entry in &transactions.aborted {
            if entry.last_offset >= compacted_below || marker_present(&self.log, entry.last_offset)? {
                kept.push(*entry);
            }
        }
        if kept.len() == transactions.aborted.len() {
            return Ok(());
        }
        let path = transactions.aborted_path.clone();
        rewrite_aborted(&path, &kept).map_err(|source| LogError::Io {
            op: "rewrite",
            path: path.clone(),
            source,
        })?;
        tracing::info!(
            path = %path.display(),
            forgotten = transactions.aborted.len() - kept.len(),
            "forgot aborted transactions whose markers compaction removed"
        );
        transactions.aborted = kept;
        Ok(())
    }

    /// The offset below which no transaction is still open: what read_committed may read.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        let transactions = self.lock_transactions();
        transactions.open.values().copied().min().map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Aborted transactions with records in `[from, to)`: what a read_committed fetch of that
    /// range must skip, as (producer id, first offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let transactions = self.lock_transactions();
        transactions
            .aborted
            .iter()
            .filter(|aborted| aborted.last_offset >= from && aborted.first_offset < to)
            .map(|aborted| (aborted.producer_id, aborted.first_offset))
            .collect()
    }

    /// Producers with a transaction open here.
    pub fn open_transactions(&self) -> Vec<i64> {
        self.lock_transactions().open.keys().copied().collect()
    }

    /// Writes the marker that commits or aborts `producer_id`'s transaction here and waits until
    /// it is durable. Written by the transaction coordinator, never by clients.
    pub(crate) fn write_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let (appended, snapshot) = {
            let mut producers = self.producers.lock().expect("producer state mutex poisoned by a panic");
            let mut transactions = self.lock_transactions();
            let mut marker = batch::encode_control_batch(producer_id, producer_epoch, commit, now_ms);
            let appended = self.log.append(&mut marker)?;
            // The marker's epoch fences older epochs of this producer here (see
            // `PartitionProducers::record_marker`).
            producers.record_marker(producer_id, producer_epoch, now_ms);
            let first_offset = transactions.open.get(&producer_id).copied();
            if let (false, Some(first_offset)) = (commit, first_offset) {
                let aborted =
                    AbortedTransaction { producer_id, first_offset, last_offset: appended.base_offset };
                // If the entry cannot be written the transaction stays open here, so the last
                // stable offset keeps read_committed consumers before its records instead of
                // serving them as committed; the next start restores the entry from the marker
                // (`restore_last_abort`).
                append_aborted(&transactions.aborted_path, &aborted).map_err(|source| LogError::Io {
                    op: "append to",
                    path: transactions.aborted_path.clone(),
                    source,
                })?;
                transactions.aborted.push(aborted);
            }
            transactions.open.remove(&producer_id);
            let snapshot = self.snapshot_if_rolled(&producers, &transactions, appended.next_offset);
            (appended, snapshot)
        };
        if let Some(snapshot) = snapshot {
            self.write_snapshot(snapshot);
        }
        let durable = self.log.wait_durable(appended.next_offset);
        // The last stable offset moved: read_committed fetches waiting here may answer.
        self.fetch_waiters.wake_all();
        durable
    }

    fn lock_transactions(&self) -> std::sync::MutexGuard<'_, PartitionTransactions> {
        self.transactions.lock().expect("partition transaction mutex poisoned by a panic")
    }

    /// Appends a produce request's batches for this partition, applying the idempotent-producer
    /// checks. The producer state stays locked from check to record, so two requests cannot both
    /// pass the check for the same sequence.
    pub(crate) fn append(&self, records: &mut [u8], now_ms: i64) -> Result<AppendOutcome, ApiError> {
        // Checked in full (CRC included) before the producer lock, so that appends to one
        // partition overlap in their most expensive part; the log then appends without
        // parsing the headers again.
        let log_error =
            |error: tidewater_log::LogError| ApiError::new(log_error_code(&error), error.to_string());
        let mut batches = self.log.validate(records).map_err(log_error)?;
        let headers: Vec<BatchHeader> = batches.headers().copied().collect();
        let mut producers = self.producers.lock().expect("producer state mutex poisoned by a panic");
        let mut duplicate = None;
        for header in &headers {
            match producers.check(header).map_err(|(code, message)| ApiError::new(code, message))? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate { base_offset } => duplicate = Some(base_offset),
            }
        }
        if let Some(base_offset) = duplicate {
            if headers.len() == 1 {
                return Ok(AppendOutcome::Duplicate { base_offset });
            }
            // Producers send one batch per partition; a mix of new and repeated batches in one
            // request is not something a correct client does.
            return Err(ApiError::new(
                ResponseError::InvalidRecord,
                "a produce request mixes new and duplicate batches",
            ));
        }
        if headers.iter().any(BatchHeader::is_control) {
            return Err(ApiError::new(ResponseError::InvalidRecord, "clients may not write control batches"));
        }
        let config = self.log.config();
        if config.cleanup_policy.compact {
            check_keyed(records, &headers)?;
        }
        check_timestamps(&headers, &config, now_ms)?;
        if config.message_timestamp_type == tidewater_log::TimestampType::LogAppendTime {
            batches.set_log_append_time(records, now_ms);
        }
        let appended = self.log.append_validated(records, batches).map_err(log_error)?;
        let mut transactions = self.lock_transactions();
        let mut base_offset = appended.base_offset;
        for header in &headers {
            let header = BatchHeader { base_offset, ..*header };
            producers.record(&header, now_ms);
            track_open_transaction(&mut transactions.open, &header);
            base_offset = header.next_offset();
        }
        let snapshot = self.snapshot_if_rolled(&producers, &transactions, appended.next_offset);
        drop(transactions);
        drop(producers);
        if let Some(snapshot) = snapshot {
            self.write_snapshot(snapshot);
        }
        Ok(AppendOutcome::Appended(appended))
    }

    /// Forgets aborted transactions whose records retention has deleted, so the list a
    /// read_committed fetch scans stays as long as the log, not as long as the partition's
    /// history. (The file keeps them until the next open, which drops them the same way.)
    pub(crate) fn forget_deleted_aborts(&self) {
        let log_start_offset = self.log.log_start_offset();
        self.lock_transactions().aborted.retain(|aborted| aborted.last_offset >= log_start_offset);
    }

    /// Forgets idle producers; returns how many.
    pub(crate) fn expire_producers(&self, now_ms: i64) -> usize {
        self.producers.lock().expect("producer state mutex poisoned by a panic").expire(now_ms)
    }
}

/// Keeps `open` up to date with one batch: a transactional batch opens its producer's
/// transaction (if not open yet), a marker closes it. Returns the first offset of the
/// transaction a marker closed.
fn track_open_transaction(open: &mut BTreeMap<i64, i64>, header: &BatchHeader) -> Option<i64> {
    if header.is_control() {
        return open.remove(&header.producer_id);
    }
    if header.is_transactional() {
        open.entry(header.producer_id).or_insert(header.base_offset);
    }
    None
}

/// Adds the aborted-transaction entry of the log's last batch if that batch is an abort marker
/// the file does not know. `write_marker` appends the marker to the log before the entry to the
/// file, so a crash between the two leaves a marker that closes the transaction (a restart no
/// longer sees it open, and the coordinator's repeated marker records nothing) with no entry:
/// read_committed consumers would then be served the aborted records as committed. Both happen
/// under the producer-state lock, which every append takes, so only the last batch can be such
/// a marker.
fn restore_last_abort(
    log: &Log,
    aborted_path: &std::path::Path,
    aborted: &mut Vec<AbortedTransaction>,
    producer_id: i64,
    first_offset: i64,
    marker_offset: i64,
) -> Result<(), LogError> {
    let entry = AbortedTransaction { producer_id, first_offset, last_offset: marker_offset };
    if aborted.contains(&entry) {
        return Ok(());
    }
    let Some(range) = log.read(marker_offset, 1, marker_offset + 1)? else { return Ok(()) };
    let io_error = |op, source| LogError::Io { op, path: aborted_path.to_path_buf(), source };
    let marker = range.read_bytes().map_err(|source| io_error("read", source))?;
    if batch::control_marker(&marker) != Some(false) {
        return Ok(());
    }
    tracing::warn!(
        path = %aborted_path.display(),
        producer_id,
        first_offset,
        marker_offset,
        "restoring an aborted transaction whose entry a crash kept out of the aborted-transaction file"
    );
    append_aborted(aborted_path, &entry).map_err(|source| io_error("append to", source))?;
    aborted.push(entry);
    Ok(())
}

/// Whether the batch at `offset` is still a transaction marker with its record: compaction may
/// have removed it, or emptied it to a bare header.
fn marker_present(log: &Log, offset: i64) -> Result<bool, LogError> {
    let range = match log.read(offset, 1, offset + 1) {
        Ok(Some(range)) => range,
        Ok(None) | Err(LogError::OffsetOutOfRange { .. }) => return Ok(false),
        Err(error) => return Err(error),
    };
    if range.first_offset != offset {
        return Ok(false);
    }
    let bytes = range.read_bytes().map_err(|source| LogError::Io {
        op: "read",
        path: log.dir().to_path_buf(),
        source,
    })?;
    Ok(batch::control_marker(&bytes).is_some())
}

/// Refuses what a compacted topic cannot hold, as Kafka does: a record without a key (compaction
/// keeps the latest record per key, and drops those with none). Compressed batches are refused
/// too: their keys cannot be read here.
fn check_keyed(records: &[u8], headers: &[BatchHeader]) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::new(ResponseError::InvalidRecord, message);
    let mut position = 0;
    for header in headers {
        let batch = &records[position..position + header.total_bytes().min(records.len() - position)];
        position += batch.len();
        if header.is_compressed() {
            return Err(invalid(
                "compressed batches are not accepted on a compacted topic: this broker cannot read their keys; \
                 produce uncompressed"
                    .to_string(),
            ));
        }
        let Some(parsed) = batch::records(batch) else {
            return Err(ApiError::new(ResponseError::CorruptMessage, "a batch's records do not parse"));
        };
        if let Some(record) = parsed.iter().find(|record| record.key.is_none()) {
            return Err(invalid(format!(
                "compacted topic cannot accept a record without a key (offset delta {} of its batch)",
                record.offset - header.base_offset
            )));
        }
    }
    Ok(())
}

/// Replaces the aborted-transaction file with `entries`: write a temporary file, fsync, rename.
fn rewrite_aborted(path: &std::path::Path, entries: &[AbortedTransaction]) -> std::io::Result<()> {
    let temp = path.with_file_name(ABORTED_TEMP_FILE_NAME);
    let mut text = String::new();
    for entry in entries {
        text.push_str(&entry.line());
    }
    let mut file = fs::File::create(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the aborted-transaction file, keeping entries that still have records in the log.
/// Unreadable lines are reported and skipped: losing one costs a read_committed consumer an
/// aborted record it should have skipped, which the log line makes visible.
fn read_aborted(path: &std::path::Path, log_start_offset: i64) -> Vec<AbortedTransaction> {
    let Ok(text) = fs::read_to_string(path) else { return Vec::new() };
    let mut aborted: Vec<AbortedTransaction> = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<Option<i64>> = line.split_whitespace().map(|field| field.parse().ok()).collect();
        match fields.as_slice() {
            [Some(producer_id), Some(first_offset), Some(last_offset)] => {
                let entry = AbortedTransaction {
                    producer_id: *producer_id,
                    first_offset: *first_offset,
                    last_offset: *last_offset,
                };
                if entry.last_offset >= log_start_offset && !aborted.contains(&entry) {
                    aborted.push(entry);
                }
            }
            _ => {
                tracing::warn!(path = %path.display(), line, "skipping an unreadable aborted-transaction entry")
            }
        }
    }
    aborted
}

fn append_aborted(path: &std::path::Path, aborted: &AbortedTransaction) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(aborted.line().as_bytes())?;
    file.sync_data()
}

/// Under CreateTime with `message.timestamp.difference.max.ms`, refuses a batch whose first or
/// newest timestamp is further from the broker's clock than allowed (records in between are not
/// decoded, so a compressed batch costs nothing here).
fn check_timestamps(
    headers: &[BatchHeader],
    config: &tidewater_log::LogConfig,
    now_ms: i64,
) -> Result<(), ApiError> {
    let limit = config.message_timestamp_difference_max_ms;
    if config.message_timestamp_type != tidewater_log::TimestampType::CreateTime || limit == i64::MAX {
        return Ok(());
    }
    for header in headers {
        for timestamp in [header.base_timestamp, header.max_timestamp] {
            if timestamp.abs_diff(now_ms) > limit.unsigned_abs() {
                return Err(ApiError::new(
                    ResponseError::InvalidTimestamp,
                    format!(
                        "timestamp {timestamp} is more than message.timestamp.difference.max.ms ({limit} ms) \
                         from the broker's time {now_ms}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{idempotent_batch, transactional_batch};
    use tidewater_log::batch::{encode_records, ProducerFields};
    use tidewater_log::{CleanupPolicy, LogConfig, ManualClock};

    #[test]
    fn open_transactions_hold_back_the_last_stable_offset_and_aborts_are_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut idempotent_batch(1, 0, 0, &[b"plain"]), 1_000).expect("append");
            partition.append(&mut transactional_batch(5, 0, 0, &[b"t1", b"t2"]), 1_000).expect("append");
            assert_eq!(partition.last_stable_offset(3), 1, "held at the open transaction's first offset");
            partition.append(&mut transactional_batch(6, 0, 0, &[b"u1"]), 1_000).expect("append");
            partition.write_marker(5, 0, false, 1_000).expect("abort");
            assert_eq!(partition.last_stable_offset(5), 3, "still held by producer 6");
            partition.write_marker(6, 0, true, 1_000).expect("commit");
            assert_eq!(partition.last_stable_offset(6), 6);
            assert_eq!(partition.aborted_between(0, 6), vec![(5, 1)]);
            assert_eq!(partition.aborted_between(5, 6), Vec::new());
        }
        let partition = open(dir.path());
        assert_eq!(partition.aborted_between(0, 6), vec![(5, 1)], "remembered across a restart");
        assert!(partition.open_transactions().is_empty());
    }

    fn open(dir: &std::path::Path) -> Partition {
        let log = Log::open(dir, LogConfig::default(), Arc::new(ManualClock::new(1_000))).expect("open log");
        Partition::open(Arc::new(log), 1_000).expect("open partition")
    }

    #[test]
    fn a_retried_batch_is_acknowledged_with_its_first_offset_and_not_written_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(dir.path());
        let first = partition.append(&mut idempotent_batch(5, 0, 0, &[b"a", b"b"]), 1_000).expect("append");
        assert!(matches!(first, AppendOutcome::Appended(appended) if appended.base_offset == 0));
        partition.append(&mut idempotent_batch(5, 0, 2, &[b"c"]), 1_000).expect("append");
        let retry = partition.append(&mut idempotent_batch(5, 0, 0, &[b"a", b"b"]), 1_000).expect("retry");
        assert_eq!(retry, AppendOutcome::Duplicate { base_offset: 0 });
        assert_eq!(partition.log.end_offset(), 3);
        let gap = partition.append(&mut idempotent_batch(5, 0, 7, &[b"x"]), 1_000).expect_err("gap");
        assert_eq!(gap.code, ResponseError::OutOfOrderSequenceNumber);
        assert_eq!(partition.log.end_offset(), 3);
    }

    /// Regression: the coordinator fenced a producer (a new instance with the same
    /// transactional id) and aborted its transaction with a marker at the new epoch, but the
    /// partition kept accepting the old epoch, so the zombie's next batch opened a transaction
    /// no coordinator knew of, which its successor's commit marker then committed.
    #[test]
    fn a_producer_fenced_by_an_abort_marker_cannot_append_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut transactional_batch(5, 0, 0, &[b"t1"]), 1_000).expect("append");
            partition.write_marker(5, 1, false, 1_000).expect("abort at the fencing epoch");
            let zombie =
                partition.append(&mut transactional_batch(5, 0, 1, &[b"zombie"]), 1_000).expect_err("fenced");
            assert_eq!(zombie.code, ResponseError::InvalidProducerEpoch);
            assert!(partition.open_transactions().is_empty());
            assert_eq!(partition.last_stable_offset(2), 2);
        }
        // The marker's epoch is rebuilt from the log after a restart.
        let partition = open(dir.path());
        let zombie =
            partition.append(&mut transactional_batch(5, 0, 1, &[b"zombie"]), 1_000).expect_err("fenced");
        assert_eq!(zombie.code, ResponseError::InvalidProducerEpoch);
        let successor =
            partition.append(&mut transactional_batch(5, 1, 0, &[b"next"]), 1_000).expect("append");
        assert!(matches!(successor, AppendOutcome::Appended(appended) if appended.base_offset == 2));
    }

    /// Regression: the broker was killed after an abort marker reached the log but before its
    /// entry reached the aborted-transaction file; after the restart read_committed consumers
    /// were served the aborted records as committed.
    #[test]
    fn an_abort_marker_whose_entry_a_crash_lost_is_restored_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut idempotent_batch(1, 0, 0, &[b"plain"]), 1_000).expect("append");
            partition.append(&mut transactional_batch(5, 0, 0, &[b"t1", b"t2"]), 1_000).expect("append");
            // The marker, written as write_marker writes it, and then the crash.
            partition.log.append(&mut batch::encode_control_batch(5, 0, false, 1_000)).expect("marker");
            partition.log.flush().expect("flush");
            assert_eq!(partition.aborted_between(0, 4), Vec::new());
        }
        let partition = open(dir.path());
        assert_eq!(partition.aborted_between(0, 4), vec![(5, 1)]);
        assert_eq!(partition.last_stable_offset(4), 4);
        // It is in the file now, and a commit marker last in the log restores nothing.
        partition.append(&mut transactional_batch(6, 0, 0, &[b"u1"]), 1_000).expect("append");
        partition.log.append(&mut batch::encode_control_batch(6, 0, true, 1_000)).expect("marker");
        partition.log.flush().expect("flush");
        drop(partition);
        let partition = open(dir.path());
        assert_eq!(partition.aborted_between(0, 6), vec![(5, 1)]);
    }

    #[test]
    fn an_abort_whose_entry_cannot_be_written_keeps_its_records_from_read_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut transactional_batch(5, 0, 0, &[b"t1", b"t2"]), 1_000).expect("append");
            // A directory where the file should be: appending to it fails.
            fs::create_dir(dir.path().join(ABORTED_FILE_NAME)).expect("mkdir");
            partition.write_marker(5, 0, false, 1_000).expect_err("the entry cannot be written");
            assert_eq!(partition.last_stable_offset(3), 0, "still held before the aborted records");
            assert_eq!(partition.open_transactions(), vec![5]);
        }
        fs::remove_dir(dir.path().join(ABORTED_FILE_NAME)).expect("rmdir");
        let partition = open(dir.path());
        assert_eq!(partition.aborted_between(0, 3), vec![(5, 0)], "restored from the marker");
        assert_eq!(partition.last_stable_offset(3), 3);
    }

    #[test]
    fn aborted_transactions_are_forgotten_once_retention_deletes_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        // One batch per segment, and retention keeping only what fits in two of them.
        let config = LogConfig {
            segment_bytes: 1024,
            retention_bytes: 2048,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config, Arc::new(ManualClock::new(1_000))).expect("open log");
        let partition = Partition::open(Arc::new(log), 1_000).expect("open partition");
        partition.append(&mut transactional_batch(5, 0, 0, &[&[1u8; 600]]), 1_000).expect("append");
        partition.write_marker(5, 0, false, 1_000).expect("abort");
        assert_eq!(partition.aborted_between(0, 2), vec![(5, 0)]);
        for sequence in 0..4 {
            partition.append(&mut idempotent_batch(6, 0, sequence, &[&[2u8; 600]]), 1_000).expect("append");
        }
        partition.log.apply_retention().expect("retention");
        assert!(partition.log.log_start_offset() > 1, "the aborted records are gone");
        partition.forget_deleted_aborts();
        assert_eq!(partition.aborted_between(0, i64::MAX), Vec::new());
    }

    #[test]
    fn producer_state_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut idempotent_batch(9, 2, 0, &[b"a"]), 1_000).expect("append");
            partition.append(&mut idempotent_batch(9, 2, 1, &[b"b"]), 1_000).expect("append");
        }
        let partition = open(dir.path());
        let retry = partition.append(&mut idempotent_batch(9, 2, 1, &[b"b"]), 1_000).expect("retry");
        assert_eq!(retry, AppendOutcome::Duplicate { base_offset: 1 });
        let next = partition.append(&mut idempotent_batch(9, 2, 2, &[b"c"]), 1_000).expect("next");
        assert!(matches!(next, AppendOutcome::Appended(appended) if appended.base_offset == 2));
        let stale = partition.append(&mut idempotent_batch(9, 1, 3, &[b"d"]), 1_000).expect_err("old epoch");
        assert_eq!(stale.code, ResponseError::InvalidProducerEpoch);
    }

    /// A partition whose segments hold one 600-byte batch each, so every append rolls.
    fn open_small_segments(dir: &std::path::Path) -> Partition {
        let config = LogConfig { segment_bytes: 1024, retention_ms: -1, ..LogConfig::default() };
        let log = Log::open(dir, config, Arc::new(ManualClock::new(1_000))).expect("open log");
        Partition::open(Arc::new(log), 1_000).expect("open partition")
    }

    fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".snapshot"))
            .collect();
        names.sort();
        names
    }

    /// Regression (the FIXME this replaced): producer state was rebuilt from the last two
    /// segments only, so a transaction whose first batch lay further back was not open after a
    /// restart, and read_committed consumers were served its records (and everything after
    /// them) as if it had committed.
    #[test]
    fn an_open_transaction_many_segments_back_is_still_open_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = [3u8; 600];
        {
            let partition = open_small_segments(dir.path());
            partition.append(&mut idempotent_batch(1, 0, 0, &[&big]), 1_000).expect("append");
            partition.append(&mut transactional_batch(5, 0, 0, &[&big]), 1_000).expect("append");
            for sequence in 1..20 {
                partition.append(&mut idempotent_batch(1, 0, sequence, &[&big]), 1_000).expect("append");
            }
            assert!(partition.log.segment_count() > 10);
            assert_eq!(partition.last_stable_offset(21), 1);
            // Dropped without `close`: a crash.
        }
        assert_eq!(snapshot_files(dir.path()).len(), producer_snapshot::SNAPSHOTS_KEPT);
        let partition = open_small_segments(dir.path());
        assert_eq!(partition.open_transactions(), vec![5]);
        assert_eq!(partition.last_stable_offset(21), 1, "read_committed stays before the open transaction");
        // Producer 1's sequence numbers survived too: a retry is a duplicate, the next one appends.
        let retry = partition.append(&mut idempotent_batch(1, 0, 19, &[&big]), 1_000).expect("retry");
        assert_eq!(retry, AppendOutcome::Duplicate { base_offset: 20 });
        partition.write_marker(5, 0, false, 1_000).expect("abort");
        assert_eq!(partition.last_stable_offset(22), 22);
        assert_eq!(partition.aborted_between(0, 22), vec![(5, 1)]);
    }

    /// A crash while a snapshot was being written leaves a temporary file, or (on a damaged
    /// disk) a snapshot that does not decode: the next open ignores both and falls back to the
    /// snapshot before, or to the whole log, losing nothing.
    #[test]
    fn a_snapshot_cut_short_by_a_crash_loses_nothing() {
        let big = [3u8; 600];
        for damage in ["temporary file", "torn newest", "every snapshot torn"] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let partition = open_small_segments(dir.path());
                partition.append(&mut transactional_batch(5, 0, 0, &[&big]), 1_000).expect("append");
                for sequence in 0..6 {
                    partition.append(&mut idempotent_batch(1, 0, sequence, &[&big]), 1_000).expect("append");
                }
            }
            let snapshots = snapshot_files(dir.path());
            match damage {
                "temporary file" => {
                    fs::write(dir.path().join("00000000000000000007.snapshot.tmp"), b"TWPS\0").expect("write")
                }
                "torn newest" => {
                    let newest = dir.path().join(snapshots.last().expect("a snapshot"));
                    let bytes = fs::read(&newest).expect("read");
                    fs::write(&newest, &bytes[..bytes.len() / 2]).expect("tear");
                }
                _ => {
                    for name in &snapshots {
                        fs::write(dir.path().join(name), b"").expect("tear");
                    }
                }
            }
            let partition = open_small_segments(dir.path());
            assert_eq!(partition.open_transactions(), vec![5], "{damage}");
            assert_eq!(partition.last_stable_offset(7), 0, "{damage}");
            let next = partition.append(&mut idempotent_batch(1, 0, 6, &[&big]), 1_000).expect(damage);
            assert!(
                matches!(next, AppendOutcome::Appended(appended) if appended.base_offset == 7),
                "{damage}"
            );
            assert!(snapshot_files(dir.path()).iter().all(|name| !name.ends_with(".tmp")), "{damage}");
        }
    }

    /// A clean close snapshots the end of the log, so the next open reads no batch at all.
    #[test]
    fn a_clean_close_leaves_a_snapshot_at_the_log_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let partition = open(dir.path());
            partition.append(&mut transactional_batch(5, 0, 0, &[b"t1"]), 1_000).expect("append");
            partition.append(&mut idempotent_batch(9, 0, 0, &[b"a"]), 1_000).expect("append");
            partition.snapshot_now();
        }
        assert_eq!(snapshot_files(dir.path()), ["00000000000000000002.snapshot"]);
        let partition = open(dir.path());
        assert_eq!(partition.open_transactions(), vec![5]);
        let retry = partition.append(&mut idempotent_batch(9, 0, 0, &[b"a"]), 1_000).expect("retry");
        assert_eq!(retry, AppendOutcome::Duplicate { base_offset: 1 });
    }

    /// A compacted partition with one-second segments and tombstones and markers that go on the
    /// pass after the one that first kept them.
    fn open_compacted(dir: &std::path::Path, clock: &ManualClock) -> Partition {
        let config = LogConfig {
            cleanup_policy: CleanupPolicy::COMPACT,
            segment_ms: 1_000,
            min_cleanable_dirty_ratio: 0.0,
            delete_retention_ms: 0,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config, Arc::new(clock.clone())).expect("open log");
        Partition::open(Arc::new(log), 1_000).expect("open partition")
    }

    fn keyed(key: Option<&[u8]>, producer: Option<(i64, i32, bool)>) -> Vec<u8> {
        let producer = producer.map(|(producer_id, base_sequence, transactional)| ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
            transactional,
        });
        encode_records(1_000, &[(key, Some(b"value"))], producer)
    }

    /// Producer 5 writes `k1` in a transaction it aborts (offsets 0 and 1), then `k2` in one it
    /// commits (offsets 2 and 3).
    fn abort_then_commit(partition: &Partition) {
        partition.append(&mut keyed(Some(b"k1"), Some((5, 0, true))), 1_000).expect("append");
        partition.write_marker(5, 0, false, 1_000).expect("abort");
        partition.append(&mut keyed(Some(b"k2"), Some((5, 1, true))), 1_000).expect("append");
        partition.write_marker(5, 0, true, 1_000).expect("commit");
    }

    #[test]
    fn a_compacted_topic_refuses_records_without_a_key_and_compressed_batches() {
        let check = |policy: CleanupPolicy, mut records: Vec<u8>, expected: Result<(), ResponseError>| {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = LogConfig { cleanup_policy: policy, ..LogConfig::default() };
            let log = Log::open(dir.path(), config, Arc::new(ManualClock::new(1_000))).expect("open log");
            let partition = Partition::open(Arc::new(log), 1_000).expect("open partition");
            let actual = partition.append(&mut records, 1_000).map(|_| ()).map_err(|error| error.code);
            assert_eq!(actual, expected, "{policy}");
        };
        let compressed = {
            // The gzip bit set on a keyed batch (its bytes are not gzip: refused before that matters).
            let mut batch = keyed(Some(b"k"), None);
            batch[22] |= 1;
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            batch
        };
        check(CleanupPolicy::DELETE, keyed(None, None), Ok(()));
        check(CleanupPolicy::COMPACT, keyed(None, None), Err(ResponseError::InvalidRecord));
        check(CleanupPolicy::COMPACT_DELETE, keyed(None, None), Err(ResponseError::InvalidRecord));
        check(CleanupPolicy::COMPACT, keyed(Some(b"k"), None), Ok(()));
        check(CleanupPolicy::COMPACT, keyed(Some(b""), None), Ok(()));
        check(CleanupPolicy::COMPACT, compressed.clone(), Err(ResponseError::InvalidRecord));
        check(CleanupPolicy::DELETE, compressed, Ok(()));
    }

    /// Regression guard: once compaction removes an abort marker, its entry must go from the
    /// aborted list too, or a read_committed consumer would skip the producer's later
    /// transactions in any fetch that starts before where the marker was.
    #[test]
    fn cleaning_forgets_aborted_transactions_whose_markers_it_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000);
        {
            let partition = open_compacted(dir.path(), &clock);
            abort_then_commit(&partition);
            partition.append(&mut keyed(Some(b"k1"), None), 1_000).expect("append");
            clock.advance(1_000);
            partition.log.tick().expect("roll");
            partition.append(&mut keyed(Some(b"k3"), None), 2_000).expect("append");
            assert_eq!(partition.aborted_between(0, 6), vec![(5, 0)]);
            // The first pass removes the aborted records and gives the marker a horizon.
            assert!(matches!(partition.clean(), Ok(CleanOutcome::Cleaned(_))));
            assert_eq!(partition.aborted_between(0, 6), vec![(5, 0)], "the marker is still there");
            clock.advance(1_000);
            partition.log.tick().expect("roll");
            // The next pass, past the horizon, removes the marker, and the entry goes with it.
            assert!(matches!(partition.clean(), Ok(CleanOutcome::Cleaned(_))));
            assert_eq!(partition.aborted_between(0, 6), Vec::new());
            // The producer's last batch stays for its sequence numbers.
            let range = partition.log.read(2, 1, i64::MAX).expect("read").expect("a batch");
            assert_eq!(range.first_offset, 2);
        }
        let partition = open_compacted(dir.path(), &clock);
        assert_eq!(partition.aborted_between(0, 6), Vec::new(), "forgotten across a restart");
    }

    #[test]
    fn an_abort_entry_whose_marker_a_crash_left_removed_is_forgotten_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_000);
        {
            let partition = open_compacted(dir.path(), &clock);
            abort_then_commit(&partition);
            for _ in 0..2 {
                clock.advance(1_000);
                partition.log.tick().expect("roll");
                partition.append(&mut keyed(Some(b"k3"), None), 2_000).expect("append");
                // The log's own pass, as if the broker died before forgetting the entry.
                partition.log.clean(&CleanOptions::default()).expect("clean");
            }
            assert_eq!(partition.aborted_between(0, 6), vec![(5, 0)], "not forgotten yet");
        }
        let partition = open_compacted(dir.path(), &clock);
        assert_eq!(partition.aborted_between(0, 6), Vec::new());
    }
}
