//! One topic-partition's log: a directory of segments with append, read, durability, recovery
//! and retention.
//!
//! # Appended versus durable
//!
//! `append` validates the batches (outside the lock, so CRC work runs in parallel across
//! writers), assigns offsets by rewriting each base offset, writes the bytes to the active
//! segment with one positioned write and returns. The bytes are then *appended*: readable through
//! the page cache, but not yet safe from a power failure. `wait_durable(offset)` returns only after
//! an fsync that covers `offset` has completed. Writers that wait at the same time share one
//! fsync: the first becomes the leader and syncs everything appended so far; those that arrive
//! while it runs wait, and the next leader covers all of them (group commit).
//!
//! # Failure
//!
//! A failed write is cut back with `set_len`, so nothing partial stays in the file; a full disk is
//! a clear, recoverable error. A failed fsync *poisons* the log: after one, Linux may have dropped
//! the dirty pages and cleared the error, so a retry could "succeed" without the data on disk. A
//! poisoned log refuses writes and never reports an offset durable that was not; reopening it
//! re-reads the files and starts from what is really there.
//!
//! # Recovery
//!
//! On open the active segment is always re-read and every CRC checked; a torn or corrupt tail is
//! truncated to the last valid batch and the cut is logged. Closed segments were fsynced when they
//! rolled, so only their indexes and their final batches are checked; a closed segment that does
//! not end where the next one begins is reported as corruption and the log does not open. Before
//! any of that, a cleaning that a crash interrupted is finished or discarded (`cleaner.rs`).
//!
//! # Compaction and retention
//!
//! What happens to closed segments is the cleanup policy's choice: retention deletes whole old
//! segments (`apply_retention`, from `tick`), and the cleaner rewrites them keeping the latest
//! record of each key (`clean`, in `cleaner.rs`, run by the caller on a thread of its own). The
//! two never run at once on one log: retention skips a tick while a cleaning pass holds the log's
//! cleaning lock. Neither holds the segment lock for longer than a few renames, so appends and
//! reads carry on throughout; a reader holding a segment's file keeps reading it even after the
//! cleaner or retention replaced or deleted it.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use crate::batch::{self, BatchError, BatchHeader, NO_TIMESTAMP};
use crate::cleaner::{self, Checkpoint};
use crate::clock::Clock;
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::LogError;
use crate::index::SegmentIndex;
use crate::segment::{self, HeaderWalk, SegmentPaths, SegmentSummary};

/// The file that holds a log start offset moved by `delete_records_before`, and its temporary name.
const START_OFFSET_FILE: &str = "log-start-offset";
const START_OFFSET_TEMP_FILE: &str = "log-start-offset.tmp";

/// A produce request's batches as [`Log::validate`] found them: each batch's position and header.
#[derive(Debug)]
pub struct ValidatedBatches {
    headers: Vec<(usize, BatchHeader)>,
    /// The length of the bytes validated.
    bytes: usize,
}

impl ValidatedBatches {
    pub fn headers(&self) -> impl Iterator<Item = &BatchHeader> {
        self.headers.iter().map(|(_, header)| header)
    }

    /// Stamps every batch with the broker's time (LogAppendTime), in `records` and in the
    /// headers the append goes by (its time index and retention read `max_timestamp`).
    pub fn set_log_append_time(&mut self, records: &mut [u8], now_ms: i64) {
        for (position, header) in &mut self.headers {
            header.crc = batch::set_log_append_time(&mut records[*position..], now_ms);
            header.attributes |= batch::ATTRIBUTE_LOG_APPEND_TIME;
            header.max_timestamp = now_ms;
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The log end offset after this append; pass it to `wait_durable`.
    pub next_offset: i64,
}

/// Whole batches of one segment, as a byte range of its data file. The broker can send these
/// bytes as they are (sendfile or a positioned read); the `Arc<File>` keeps the file readable
/// even if retention deletes the segment meanwhile.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
    /// Base offset of the first batch in the range (at or below the offset asked for).
    pub first_offset: i64,
    /// The offset after the last batch in the range: where the next read continues.
    pub next_offset: i64,
}

impl FileRange {
    /// Reads the range into memory. The buffer is not zeroed first: every byte of it is written
    /// by the read (a fetch's record sets are megabytes, and zeroing them cost as much again as
    /// a copy from the page cache).
    pub fn read_bytes(&self) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(self.len).map_err(|_| io::Error::other("file range too large"))?;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let filled = bytes.len();
            let unfilled = &mut bytes.spare_capacity_mut()[..len - filled];
            let offset = libc::off_t::try_from(self.position + filled as u64)
                .map_err(|_| io::Error::other("file position out of range"))?;
            // SAFETY: `unfilled` is the vector's spare capacity, writable for its length, which is
            // all `pread` may write; the descriptor is open while `self.file` is borrowed.
            let read = unsafe {
                libc::pread(self.file.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len(), offset)
            };
            match read {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its range")),
                read if read < 0 => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
                // SAFETY: `pread` initialised the first `read` bytes of the spare capacity.
                read => unsafe { bytes.set_len(filled + read as usize) },
            }
        }
        Ok(bytes)
    }
}

/// What `Log::verify` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub bytes: u64,
}

/// A topic-partition log. All methods take `&self`; share it with an `Arc`.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    /// Replaced whole by `set_config`; read through `config()`.
    config: RwLock<LogConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    segments: Mutex<Segments>,
    sync: Mutex<SyncState>,
    sync_done: Condvar,
    /// Mirrors `SyncState::poisoned` so `append` can refuse without taking the sync lock.
    poisoned: AtomicBool,
    /// Fault injection for tests: the next fsync fails with EIO instead of running.
    fail_next_sync: AtomicBool,
    /// Held by a cleaning pass from start to end; retention and `verify` stay out meanwhile.
    pub(crate) cleaning: Mutex<()>,
    /// Set by `close`, so a cleaning pass in progress gives up instead of making close wait.
    pub(crate) closing: AtomicBool,
}

#[derive(Debug)]
pub(crate) struct Segments {
    pub(crate) active: ActiveSegment,
    pub(crate) closed: BTreeMap<i64, ClosedSegment>,
    /// Base offsets of closed segments whose file and index are loaded, least recently used first.
    loaded: VecDeque<i64>,
    last_sync_ms: i64,
    pub(crate) is_closed: bool,
    /// Where the cleaner stands: what it has compacted, and where the dirty part begins.
    pub(crate) checkpoint: Checkpoint,
    /// What `cleaner-checkpoint` on disk says; behind `checkpoint` after a pass until the next
    /// pass's swap or `close` writes it.
    pub(crate) checkpoint_on_disk: Checkpoint,
    /// The log start offset `delete_records_before` set, when it is past the first segment's
    /// base (`i64::MIN` otherwise): reads below it are out of range.
    start_offset: i64,
}

#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) summary: SegmentSummary,
    pub(crate) file: Arc<File>,
    paths: SegmentPaths,
    created_ms: i64,
}

#[derive(Debug)]
pub(crate) struct ClosedSegment {
    pub(crate) base_offset: i64,
    pub(crate) next_offset: i64,
    pub(crate) size: u64,
    pub(crate) max_timestamp: i64,
    offset_of_max_timestamp: i64,
    pub(crate) paths: SegmentPaths,
    loaded: Option<Arc<LoadedSegment>>,
}

#[derive(Debug)]
pub(crate) struct LoadedSegment {
    pub(crate) file: Arc<File>,
    pub(crate) index: SegmentIndex,
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on disk.
    durable_offset: i64,
    sync_in_progress: bool,
    poisoned: Option<String>,
}

/// A segment to walk, captured under the lock so the walk itself runs without it.
struct SegmentCursor {
    file: Arc<File>,
    path: PathBuf,
    start_position: u64,
    end_position: u64,
}

impl SegmentCursor {
    fn walk(&self) -> HeaderWalk<'_> {
        HeaderWalk {
            file: &self.file,
            path: &self.path,
            position: self.start_position,
            end: self.end_position,
        }
    }
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, and recovers it (see the module docs).
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig, clock: Arc<dyn Clock>) -> Result<Log, LogError> {
        config.validate()?;
        let dir = dir.into();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|error| LogError::io("create log directory", &dir, error))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let checkpoint = cleaner::read_checkpoint(&dir);
        let checkpoint = cleaner::finish_interrupted_cleaning(&dir, checkpoint, config.index_interval_bytes)?;
        let mut bases = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|error| LogError::io("list", &dir, error))?;
        let mut others = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| LogError::io("list", &dir, error))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match segment::base_offset_of(&name) {
                Some(base) => bases.push(base),
                None => others.push(name),
            }
        }
        bases.sort_unstable();
        // Index files whose data file is gone were left by a retention delete cut short.
        for name in others {
            let stem = name.strip_suffix(".index").or_else(|| name.strip_suffix(".timeindex"));
            if let Some(stem) = stem {
                let orphan = stem.parse::<i64>().map_or(true, |base| bases.binary_search(&base).is_err());
                if orphan {
                    let path = dir.join(&name);
                    fs::remove_file(&path)
                        .map_err(|error| LogError::io("remove orphan index", &path, error))?;
                }
            }
        }
        if bases.is_empty() {
            bases.push(0);
        }
        let now = clock.now_ms();
        let mut closed = BTreeMap::new();
        for pair in bases.windows(2) {
            let segment = open_closed_segment(
                &dir,
                pair[0],
                pair[1],
                config.index_interval_bytes,
                checkpoint.gaps_below,
            )?;
            closed.insert(pair[0], segment);
        }
        let active_base = bases[bases.len() - 1];
        let active = open_active_segment(&dir, active_base, config.index_interval_bytes, now)?;
        let end_offset = active.summary.next_offset;
        let mut start_offset = read_start_offset(&dir);
        if start_offset > end_offset {
            // Only under fsync=never or interval can a crash take back records below a start
            // offset DeleteRecords set; the log then starts at its end.
            tracing::warn!(dir = %dir.display(), start_offset, end_offset, "log start offset past the log end after recovery");
            start_offset = end_offset;
        }
        Ok(Log {
            dir,
            config: RwLock::new(config),
            clock,
            segments: Mutex::new(Segments {
                active,
                closed,
                loaded: VecDeque::new(),
                last_sync_ms: now,
                is_closed: false,
                checkpoint,
                checkpoint_on_disk: checkpoint,
                start_offset,
            }),
            sync: Mutex::new(SyncState {
                durable_offset: end_offset,
                sync_in_progress: false,
                poisoned: None,
            }),
            sync_done: Condvar::new(),
            poisoned: AtomicBool::new(false),
            fail_next_sync: AtomicBool::new(false),
            cleaning: Mutex::new(()),
            closing: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current configuration (a copy: `set_config` may replace it at any time).
    pub fn config(&self) -> LogConfig {
        self.config.read().expect("log config lock poisoned by a panic").clone()
    }

    /// Replaces the configuration of an open log, as a topic config change does. Size, age and
    /// retention limits apply from the next append or tick; the fsync policy and index interval
    /// cannot change while the log is open (they shape what is already on disk and in flight).
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        let mut current = self.config.write().expect("log config lock poisoned by a panic");
        if config.fsync != current.fsync || config.index_interval_bytes != current.index_interval_bytes {
            return Err(LogError::InvalidConfig {
                reason: "fsync and index_interval_bytes cannot change while the log is open".to_string(),
            });
        }
        *current = config;
        Ok(())
    }

    /// Appends one or more whole v2 batches (a Kafka produce request's `records` for one
    /// partition). Every batch is validated first; if any is bad, nothing is written. Offsets are
    /// assigned by rewriting each batch's base offset in `records`. The result is appended, not
    /// yet durable: see `wait_durable` and `append_durable`.
    pub fn append(&self, records: &mut [u8]) -> Result<Appended, LogError> {
        let batches = self.validate(records)?;
        self.append_validated(records, batches)
    }

    /// Checks a produce request's batches as `append` would (lengths, CRC, record counts, this
    /// log's batch size limit), so that a caller can do it before taking a lock of its own and
    /// append with [`Log::append_validated`] without checking them again.
    pub fn validate(&self, records: &[u8]) -> Result<ValidatedBatches, LogError> {
        let headers = self.validate_batches(records)?;
        Ok(ValidatedBatches { headers, bytes: records.len() })
    }

    /// `append` of batches [`Log::validate`] checked. `records` must be the bytes it checked,
    /// changed only through [`ValidatedBatches`].
    pub fn append_validated(
        &self,
        records: &mut [u8],
        batches: ValidatedBatches,
    ) -> Result<Appended, LogError> {
        assert_eq!(records.len(), batches.bytes, "append_validated given other bytes than were validated");
        let headers = batches.headers;
        let now = self.clock.now_ms();
        let mut segments = self.lock_segments();
        if segments.is_closed {
            return Err(LogError::Closed);
        }
        self.check_not_poisoned()?;
        let offset_count: i64 =
            headers.iter().map(|(_, header)| i64::from(header.last_offset_delta) + 1).sum();
        if self.needs_roll(&segments.active, records.len() as u64, offset_count, now) {
            self.roll(&mut segments, now)?;
        }
        let active = &mut segments.active;
        let base_offset = active.summary.next_offset;
        // Nothing is durable that was not appended (lock order: segments, then sync).
        debug_assert!(lock(&self.sync).durable_offset <= base_offset);
        let mut next_offset = base_offset;
        for (position, header) in &headers {
            batch::set_base_offset(&mut records[*position..], next_offset);
            next_offset += i64::from(header.last_offset_delta) + 1;
        }
        let write_position = active.summary.size;
        if let Err(error) = active.file.write_all_at(records, write_position) {
            // Cut off whatever part of the write landed so no partial batch stays in the file.
            if let Err(truncate_error) = active.file.set_len(write_position) {
                self.poison(format!("could not cut back a failed write: {truncate_error}"));
            }
            return Err(LogError::io("append to", &active.paths.data, error));
        }
        let mut batch_offset = base_offset;
        for (_, header) in &headers {
            let header = BatchHeader { base_offset: batch_offset, ..*header };
            active.summary.observe(&header);
            batch_offset = header.next_offset();
        }
        // The segment's summary must describe exactly the bytes in its file: reads and the
        // indexes are served from it, so a disagreement would hand out wrong byte ranges.
        assert_eq!(active.summary.next_offset, next_offset, "offsets assigned and offsets observed disagree");
        assert_eq!(
            active.summary.size,
            write_position + records.len() as u64,
            "bytes written and bytes observed disagree"
        );
        Ok(Appended { base_offset, last_offset: next_offset - 1, next_offset })
    }

    /// `append`, then, under `fsync = always`, `wait_durable`: what a producer with acks=1 or
    /// acks=all is answered after.
    pub fn append_durable(&self, records: &mut [u8]) -> Result<Appended, LogError> {
        let appended = self.append(records)?;
        if self.config().fsync == FsyncPolicy::Always {
            self.wait_durable(appended.next_offset)?;
        }
        Ok(appended)
    }

    /// Blocks until every offset below `offset` is on disk, fsyncing if no one else is (group
    /// commit). Errors if an fsync failed, now or before: the log is then poisoned.
    pub fn wait_durable(&self, offset: i64) -> Result<(), LogError> {
        let mut state = lock(&self.sync);
        loop {
            if let Some(reason) = &state.poisoned {
                return Err(LogError::Poisoned { reason: reason.clone() });
            }
            if state.durable_offset >= offset {
                return Ok(());
            }
            if state.sync_in_progress {
                state = self.sync_done.wait(state).expect("log sync mutex poisoned by a panic");
                continue;
            }
            // Become the leader: sync everything appended so far, for every waiter.
            state.sync_in_progress = true;
            drop(state);
            let result = self.sync_active_segment();
            state = lock(&self.sync);
            state.sync_in_progress = false;
            match result {
                Ok(synced_to) => state.durable_offset = state.durable_offset.max(synced_to),
                Err(error) => {
                    let reason = error.to_string();
                    state.poisoned = Some(reason);
                    self.poisoned.store(true, Ordering::SeqCst);
                }
            }
            self.sync_done.notify_all();
        }
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<(), LogError> {
        self.wait_durable(self.end_offset())
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch, even a
    /// larger one, so a consumer always makes progress, as in KIP-74) and only batches that end
    /// below `max_offset` (the broker's high watermark). The range stays within one segment.
    /// `Ok(None)` when there is nothing to read yet.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Option<FileRange>, LogError> {
        let (cursor, upper) = {
            let mut segments = self.lock_segments();
            if segments.is_closed {
                return Err(LogError::Closed);
            }
            let (log_start_offset, log_end_offset) =
                (segments.log_start_offset(), segments.active.summary.next_offset);
            if offset < log_start_offset || offset > log_end_offset {
                return Err(LogError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
            }
            let upper = max_offset.min(log_end_offset);
            if offset >= upper {
                return Ok(None);
            }
            match self.cursor_for_offset(&mut segments, offset)? {
                Some(cursor) => (cursor, upper),
                None => return Ok(None),
            }
        };
        let mut walk = cursor.walk();
        let mut range: Option<FileRange> = None;
        while let Some((position, header)) = walk.next_batch()? {
            if header.last_offset() >= upper {
                break;
            }
            match &mut range {
                None if header.last_offset() < offset => continue,
                None => {
                    range = Some(FileRange {
                        file: cursor.file.clone(),
                        position,
                        len: header.total_bytes() as u64,
                        first_offset: header.base_offset,
                        next_offset: header.next_offset(),
                    })
                }
                Some(range) => {
                    if range.len + header.total_bytes() as u64 > max_bytes as u64 {
                        break;
                    }
                    range.len += header.total_bytes() as u64;
                    range.next_offset = header.next_offset();
                }
            }
        }
        Ok(range)
    }

    /// The first record whose timestamp is at or after `timestamp`: its offset and timestamp
    /// (Kafka ListOffsets by time). See `batch::first_record_at_or_after` for compressed batches.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        // Segments are tried in order from the first whose newest timestamp reaches `timestamp`;
        // usually the first has the answer, but one the cleaner emptied of such records has not.
        let mut from_base = i64::MIN;
        loop {
            let cursor = {
                let mut segments = self.lock_segments();
                let first_newer = segments
                    .closed
                    .range(from_base..)
                    .map(|(_, segment)| segment)
                    .find(|segment| segment.max_timestamp >= timestamp)
                    .map(|segment| segment.base_offset);
                match first_newer {
                    Some(base) => {
                        let loaded = self.load_closed(&mut segments, base)?;
                        let segment = &segments.closed[&base];
                        let relative = loaded.index.offset_for_timestamp(timestamp);
                        from_base = base + 1;
                        SegmentCursor {
                            file: loaded.file.clone(),
                            path: segment.paths.data.clone(),
                            start_position: u64::from(loaded.index.position_for(relative)),
                            end_position: segment.size,
                        }
                    }
                    None if segments.active.summary.max_timestamp >= timestamp
                        && from_base <= segments.active.summary.base_offset =>
                    {
                        let active = &segments.active;
                        let relative = active.summary.index.offset_for_timestamp(timestamp);
                        from_base = i64::MAX;
                        SegmentCursor {
                            file: active.file.clone(),
                            path: active.paths.data.clone(),
                            start_position: u64::from(active.summary.index.position_for(relative)),
                            end_position: active.summary.size,
                        }
                    }
                    None => return Ok(None),
                }
            };
            let mut walk = cursor.walk();
            while let Some((position, header)) = walk.next_batch()? {
                if header.max_timestamp >= timestamp && header.records_count > 0 {
                    let mut bytes = vec![0u8; header.total_bytes()];
                    cursor
                        .file
                        .read_exact_at(&mut bytes, position)
                        .map_err(|error| LogError::io("read", &cursor.path, error))?;
                    if let Some(found) = batch::first_record_at_or_after(&bytes, timestamp) {
                        return Ok(Some(found));
                    }
                }
            }
        }
    }

    /// The largest timestamp in the log and the base offset of the batch that first reached it
    /// (Kafka ListOffsets MAX_TIMESTAMP), or `None` if no batch carries a timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let segments = self.lock_segments();
        let active = &segments.active.summary;
        let closed =
            segments.closed.values().map(|segment| (segment.max_timestamp, segment.offset_of_max_timestamp));
        closed
            .chain(std::iter::once((active.max_timestamp, active.offset_of_max_timestamp)))
            .filter(|(timestamp, _)| *timestamp != NO_TIMESTAMP)
            // On equal timestamps keep the earliest offset: `max_by_key` keeps the last maximum.
            .max_by_key(|(timestamp, offset)| (*timestamp, -offset))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock_segments().log_start_offset()
    }

    /// Moves the log start offset up to `offset` (Kafka's DeleteRecords): reads below it are out
    /// of range from now on, and the closed segments wholly below it are deleted, now or, if a
    /// cleaning pass is running, at the next tick. The new start is durable before this returns.
    /// `offset` may not pass the log end; one at or below the current start changes nothing.
    /// Returns the log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let (log_start_offset, log_end_offset) = {
            let segments = self.lock_segments();
            if segments.is_closed {
                return Err(LogError::Closed);
            }
            (segments.log_start_offset(), segments.active.summary.next_offset)
        };
        if offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        if offset <= log_start_offset {
            return Ok(log_start_offset);
        }
        write_durably(&self.dir, START_OFFSET_FILE, START_OFFSET_TEMP_FILE, &format!("{offset}\n"))?;
        {
            let mut segments = self.lock_segments();
            segments.start_offset = segments.start_offset.max(offset);
        }
        tracing::info!(dir = %self.dir.display(), log_start_offset = offset, "deleted records");
        self.apply_retention()?;
        Ok(self.log_start_offset())
    }

    /// Below this offset the cleaner may have removed records (and transaction markers); at and
    /// above it the log holds everything appended. `i64::MIN` for a log never cleaned.
    pub fn compacted_below(&self) -> i64 {
        self.lock_segments().checkpoint.gaps_below
    }

    /// The offset the next append gets (Kafka's log end offset).
    pub fn end_offset(&self) -> i64 {
        self.lock_segments().active.summary.next_offset
    }

    /// Every offset below this is on disk.
    pub fn durable_offset(&self) -> i64 {
        lock(&self.sync).durable_offset
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        let segments = self.lock_segments();
        segments.closed.values().map(|segment| segment.size).sum::<u64>() + segments.active.summary.size
    }

    pub fn segment_count(&self) -> usize {
        self.lock_segments().closed.len() + 1
    }

    /// The base offset of the segment `n` segments back from the active one (0 is the active
    /// segment itself), or the log start offset when there are fewer. Used to bound scans that
    /// only need recent history, such as rebuilding producer state.
    pub fn recent_segments_start(&self, n: usize) -> i64 {
        let segments = self.lock_segments();
        if n == 0 {
            return segments.active.summary.base_offset;
        }
        segments.closed.keys().rev().nth(n - 1).copied().unwrap_or_else(|| segments.log_start_offset())
    }

    /// Calls `visit` with the header of every batch that ends at or after `from_offset`, in
    /// offset order, up to the log end offset as it is now. Reads headers only (no CRC checks);
    /// a header that is not where one must be is reported as corruption.
    pub fn for_each_batch(
        &self,
        from_offset: i64,
        mut visit: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let mut offset = from_offset.max(self.log_start_offset());
        loop {
            let cursor = {
                let mut segments = self.lock_segments();
                if offset >= segments.active.summary.next_offset {
                    return Ok(());
                }
                match self.cursor_for_offset(&mut segments, offset)? {
                    Some(cursor) => cursor,
                    None => return Ok(()),
                }
            };
            let mut walk = cursor.walk();
            let before = offset;
            while let Some((_, header)) = walk.next_batch()? {
                if header.last_offset() >= offset {
                    visit(&header);
                    offset = header.next_offset();
                }
            }
            if offset == before {
                // The segment holds nothing at or after `offset`: continue in the next one.
                offset = self.next_segment_base(offset).unwrap_or(i64::MAX);
            }
        }
    }

    /// Periodic housekeeping, called by the server about once a second: rolls an active segment
    /// older than `segment_ms`, fsyncs under `fsync = interval` when the interval has passed, and
    /// applies retention. Returns how many segments retention deleted.
    pub fn tick(&self) -> Result<usize, LogError> {
        let now = self.clock.now_ms();
        let due_for_sync = {
            let mut segments = self.lock_segments();
            if segments.is_closed {
                return Ok(0);
            }
            let active = &segments.active;
            if !active.summary.is_empty() && now - active.created_ms >= self.config().segment_ms {
                self.roll(&mut segments, now)?;
            }
            match self.config().fsync {
                FsyncPolicy::Interval(interval)
                    if now - segments.last_sync_ms >= interval.as_millis() as i64 =>
                {
                    segments.last_sync_ms = now;
                    true
                }
                _ => false,
            }
        };
        if due_for_sync {
            self.flush()?;
        }
        self.apply_retention()
    }

    /// Deletes whole closed segments that retention no longer keeps, oldest first: by time (the
    /// segment's newest timestamp is older than `retention_ms`) and by size (the log is larger than
    /// `retention_bytes` even without the segment), both only under a cleanup policy that
    /// includes `delete`, and whatever the policy those wholly below the start offset
    /// `delete_records_before` set. The active segment is never deleted. The log start offset
    /// moves to the first remaining segment (or stays where DeleteRecords put it). While a
    /// cleaning pass runs, retention waits for the next call.
    pub fn apply_retention(&self) -> Result<usize, LogError> {
        let now = self.clock.now_ms();
        let config = self.config();
        let _not_cleaning = match self.cleaning.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(0),
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("log cleaning mutex poisoned by a panic"),
        };
        let mut segments = self.lock_segments();
        let mut total_size: u64 =
            segments.closed.values().map(|segment| segment.size).sum::<u64>() + segments.active.summary.size;
        let mut deleted = 0;
        while let Some((&base, oldest)) = segments.closed.first_key_value() {
            let newest_ms = if oldest.max_timestamp == NO_TIMESTAMP {
                modified_ms(&oldest.paths.data).unwrap_or(now)
            } else {
                oldest.max_timestamp
            };
            let by_policy = config.cleanup_policy.delete;
            let expired = by_policy && config.retention_ms >= 0 && now - newest_ms > config.retention_ms;
            let oversized = by_policy
                && config.retention_bytes >= 0
                && total_size - oldest.size >= config.retention_bytes as u64;
            // Below the start offset DeleteRecords set, whatever the policy.
            let deleted_records = oldest.next_offset <= segments.start_offset;
            if !(expired || oversized || deleted_records) {
                break;
            }
            total_size -= oldest.size;
            let paths = oldest.paths.clone();
            segments.closed.remove(&base);
            segments.loaded.retain(|loaded| *loaded != base);
            // The data file goes first: an index without its data file is cleaned up on open,
            // while a data file without its index would only be rebuilt.
            for path in [&paths.data, &paths.offset_index, &paths.time_index] {
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(LogError::io("delete segment file", path, error)),
                }
            }
            tracing::info!(dir = %self.dir.display(), base_offset = base, "retention deleted segment");
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }

    /// Re-reads every segment and checks every batch's CRC and offset continuity. Recovery on
    /// open checks only the active segment this thoroughly; this finds damage anywhere.
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        self.verify_with_progress(|_| {})
    }

    /// [`Log::verify`], calling `progress` with the bytes verified so far after each segment.
    pub fn verify_with_progress(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, LogError> {
        // No cleaning pass may rename segments under the walk.
        let _not_cleaning = lock(&self.cleaning);
        let (closed, active_base, active_size, gaps_below) = {
            let segments = self.lock_segments();
            let closed: Vec<(i64, i64, PathBuf)> = segments
                .closed
                .values()
                .map(|segment| (segment.base_offset, segment.next_offset, segment.paths.data.clone()))
                .collect();
            let active = &segments.active.summary;
            (closed, active.base_offset, active.size, segments.checkpoint.gaps_below)
        };
        let mut report = VerifyReport { segments: 0, bytes: 0 };
        let index_interval_bytes = self.config().index_interval_bytes;
        for (base, next_offset, path) in closed {
            let file = File::open(&path).map_err(|error| LogError::io("open", &path, error))?;
            let summary =
                check_whole_segment(&file, &path, base, next_offset, index_interval_bytes, gaps_below)?;
            report.segments += 1;
            report.bytes += summary.size;
            progress(report.bytes);
        }
        let path = SegmentPaths::new(&self.dir, active_base).data;
        let file = File::open(&path).map_err(|error| LogError::io("open", &path, error))?;
        let (summary, damage) = segment::recover(&file, active_base, index_interval_bytes, i64::MIN)
            .map_err(|error| LogError::io("read", &path, error))?;
        if let Some(damage) = damage.filter(|damage| damage.position < active_size) {
            return Err(LogError::Corrupt { path, position: damage.position, reason: damage.reason });
        }
        report.segments += 1;
        report.bytes += summary.size.min(active_size);
        Ok(report)
    }

    /// Flushes, writes the active segment's indexes and refuses further use. A cleaning pass in
    /// progress is abandoned first (its temporary files removed). Dropping a log without closing
    /// it is like a crash: the next open recovers.
    pub fn close(&self) -> Result<(), LogError> {
        self.closing.store(true, Ordering::SeqCst);
        let _not_cleaning = lock(&self.cleaning);
        self.flush()?;
        self.persist_checkpoint()?;
        let mut segments = self.lock_segments();
        let active = &mut segments.active;
        active.summary.push_time_entry();
        active.summary.index.write(&active.paths.offset_index, &active.paths.time_index)?;
        segments.is_closed = true;
        Ok(())
    }

    /// For tests: the next fsync fails with EIO, as a failing disk would make it.
    #[doc(hidden)]
    pub fn inject_fsync_failure(&self) {
        self.fail_next_sync.store(true, Ordering::SeqCst);
    }

    fn validate_batches(&self, records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        let limit = self.config().max_batch_bytes;
        let mut headers = Vec::new();
        let mut position = 0;
        while position < records.len() {
            let bytes = &records[position..];
            let header = batch::validate(bytes, limit).map_err(|source| match source {
                BatchError::BadLength { batch_length, .. } if batch_length > limit as i64 => {
                    LogError::BatchTooLarge { size: batch_length as usize + batch::LOG_OVERHEAD, limit }
                }
                source => LogError::InvalidBatch { position, source },
            })?;
            position += header.total_bytes();
            headers.push((position - header.total_bytes(), header));
        }
        Ok(headers)
    }

    fn needs_roll(&self, active: &ActiveSegment, append_bytes: u64, offset_count: i64, now: i64) -> bool {
        if active.summary.is_empty() {
            return false;
        }
        let config = self.config();
        let too_big = active.summary.size + append_bytes > config.segment_bytes;
        let too_old = now - active.created_ms >= config.segment_ms;
        // Index entries hold offsets relative to the segment's base as u32.
        let offsets_overflow =
            active.summary.next_offset + offset_count - active.summary.base_offset > i64::from(u32::MAX);
        too_big || too_old || offsets_overflow
    }

    /// Closes the active segment and starts a new one at the log end offset. The old segment is
    /// fsynced and its indexes written first, so every closed segment is whole on disk: only the
    /// active segment can ever have a torn tail.
    fn roll(&self, segments: &mut Segments, now: i64) -> Result<(), LogError> {
        let new_base = segments.active.summary.next_offset;
        {
            let old = &mut segments.active;
            if let Err(error) = self.sync_file(&old.file, &old.paths.data) {
                self.poison(error.to_string());
                return Err(error);
            }
            old.summary.push_time_entry();
            old.summary.index.write(&old.paths.offset_index, &old.paths.time_index)?;
        }
        let new_active = create_segment(&self.dir, new_base, self.config().index_interval_bytes, now)
            .inspect_err(|error| {
                // The next segment's file exists, but creating it failed (its directory fsync, say).
                // Left like that, every later roll would fail on the existing file while appends
                // small enough to skip the roll went on into the old segment past `new_base`, which
                // the next open rejects as corrupt. So poison, as a failed fsync does anywhere:
                // reopening finds the old segment closed at `new_base` and the new one empty.
                if SegmentPaths::new(&self.dir, new_base).data.exists() {
                    self.poison(format!("segment roll failed after creating the next segment: {error}"));
                }
            })?;
        let old = std::mem::replace(&mut segments.active, new_active);
        let summary = old.summary;
        segments.closed.insert(
            summary.base_offset,
            ClosedSegment {
                base_offset: summary.base_offset,
                next_offset: summary.next_offset,
                size: summary.size,
                max_timestamp: summary.max_timestamp,
                offset_of_max_timestamp: summary.offset_of_max_timestamp,
                paths: old.paths,
                loaded: Some(Arc::new(LoadedSegment { file: old.file, index: summary.index })),
            },
        );
        segments.touch_loaded(summary.base_offset, self.config().open_segments_max);
        let mut state = lock(&self.sync);
        state.durable_offset = state.durable_offset.max(new_base);
        // The closed segment was fsynced up to `new_base`, and nothing past it was appended yet.
        assert_eq!(state.durable_offset, new_base, "durable offset ahead of the appended end");
        tracing::debug!(dir = %self.dir.display(), base_offset = new_base, "rolled segment");
        Ok(())
    }

    fn sync_active_segment(&self) -> Result<i64, LogError> {
        let (file, path, end_offset) = {
            let segments = self.lock_segments();
            let active = &segments.active;
            (active.file.clone(), active.paths.data.clone(), active.summary.next_offset)
        };
        self.sync_file(&file, &path)?;
        Ok(end_offset)
    }

    fn sync_file(&self, file: &File, path: &Path) -> Result<(), LogError> {
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(LogError::io("fsync", path, io::Error::from_raw_os_error(libc::EIO)));
        }
        let started = std::time::Instant::now();
        let synced = file.sync_data().map_err(|error| LogError::io("fsync", path, error));
        fsync_latency().observe_since(started);
        synced
    }

    pub(crate) fn poison(&self, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "log failed; it accepts no writes until reopened");
        let mut state = lock(&self.sync);
        state.poisoned.get_or_insert(reason);
        self.poisoned.store(true, Ordering::SeqCst);
        self.sync_done.notify_all();
    }

    fn check_not_poisoned(&self) -> Result<(), LogError> {
        if self.poisoned.load(Ordering::SeqCst) {
            let reason = lock(&self.sync).poisoned.clone().unwrap_or_default();
            return Err(LogError::Poisoned { reason });
        }
        Ok(())
    }

    /// Finds the segment holding `offset` and the indexed position to start walking from.
    fn cursor_for_offset(
        &self,
        segments: &mut Segments,
        offset: i64,
    ) -> Result<Option<SegmentCursor>, LogError> {
        let active = &segments.active;
        if offset >= active.summary.base_offset {
            let relative = active.summary.relative(offset);
            return Ok(Some(SegmentCursor {
                file: active.file.clone(),
                path: active.paths.data.clone(),
                start_position: u64::from(active.summary.index.position_for(relative)),
                end_position: active.summary.size,
            }));
        }
        let Some((&base, _)) = segments.closed.range(..=offset).next_back() else {
            return Ok(None);
        };
        let loaded = self.load_closed(segments, base)?;
        let segment = &segments.closed[&base];
        let relative = (offset - base) as u32;
        Ok(Some(SegmentCursor {
            file: loaded.file.clone(),
            path: segment.paths.data.clone(),
            start_position: u64::from(loaded.index.position_for(relative)),
            end_position: segment.size,
        }))
    }

    /// The open file and index of a closed segment, opening them if they were evicted.
    fn load_closed(&self, segments: &mut Segments, base: i64) -> Result<Arc<LoadedSegment>, LogError> {
        let segment = segments.closed.get_mut(&base).ok_or_else(|| LogError::Corrupt {
            path: self.dir.clone(),
            position: 0,
            reason: format!("no segment with base offset {base}"),
        })?;
        let loaded = match &segment.loaded {
            Some(loaded) => loaded.clone(),
            None => {
                let paths = &segment.paths;
                let file =
                    File::open(&paths.data).map_err(|error| LogError::io("open", &paths.data, error))?;
                let relative_end = (segment.next_offset - segment.base_offset) as u64;
                let index = match SegmentIndex::load(
                    &paths.offset_index,
                    &paths.time_index,
                    segment.size,
                    relative_end,
                ) {
                    Some(index) => index,
                    None => {
                        let summary = check_whole_segment(
                            &file,
                            &paths.data,
                            base,
                            segment.next_offset,
                            self.config().index_interval_bytes,
                            segments.checkpoint.gaps_below,
                        )?;
                        summary.index.write(&paths.offset_index, &paths.time_index)?;
                        summary.index
                    }
                };
                let loaded = Arc::new(LoadedSegment { file: Arc::new(file), index });
                segment.loaded = Some(loaded.clone());
                loaded
            }
        };
        segments.touch_loaded(base, self.config().open_segments_max);
        Ok(loaded)
    }

    fn lock_segments(&self) -> MutexGuard<'_, Segments> {
        lock(&self.segments)
    }

    /// Runs `change` under the segment lock; for the cleaner, which keeps it only this short.
    pub(crate) fn with_segments<T>(&self, change: impl FnOnce(&mut Segments) -> T) -> T {
        change(&mut self.lock_segments())
    }

    /// The cleaner's step 4: renames the files of the closed segments `bases` to `retired(base)`
    /// and points their entries there, under the segment lock so a read that reopens one of
    /// them (an evicted segment) finds it under its new name.
    pub(crate) fn retire_segments(
        &self,
        bases: &[i64],
        retired: impl Fn(i64) -> SegmentPaths,
    ) -> Result<(), LogError> {
        let mut segments = self.lock_segments();
        for base in bases {
            let Some(segment) = segments.closed.get_mut(base) else { continue };
            let to = retired(*base);
            for (from, to) in segment.paths.all().into_iter().zip(to.all()) {
                match fs::rename(from, to) {
                    Ok(()) => {}
                    // An index that was never written.
                    Err(error) if error.kind() == io::ErrorKind::NotFound && from != segment.paths.data => {}
                    Err(error) => return Err(LogError::io("rename", from, error)),
                }
            }
            segment.paths = to;
        }
        Ok(())
    }

    /// The cleaner's step 5: under the segment lock, `rename` puts the cleaned files in place and
    /// the closed segments `replaced` give way to the cleaned one, already loaded. Readers that
    /// hold a replaced segment's file keep reading it.
    pub(crate) fn install_segment(
        &self,
        replaced: &[i64],
        cleaned: cleaner::CleanedSegment,
        rename: impl FnOnce() -> Result<SegmentPaths, LogError>,
    ) -> Result<(), LogError> {
        let mut segments = self.lock_segments();
        let paths = rename()?;
        for base in replaced {
            segments.closed.remove(base);
        }
        segments.loaded.retain(|loaded| !replaced.contains(loaded));
        let summary = cleaned.summary;
        let base = summary.base_offset;
        segments.closed.insert(
            base,
            ClosedSegment {
                base_offset: base,
                next_offset: cleaned.next_offset,
                size: summary.size,
                max_timestamp: summary.max_timestamp,
                offset_of_max_timestamp: summary.offset_of_max_timestamp,
                paths,
                loaded: Some(Arc::new(LoadedSegment { file: cleaned.file, index: summary.index })),
            },
        );
        segments.touch_loaded(base, self.config().open_segments_max);
        Ok(())
    }

    /// The base offset of the first segment that starts after `offset`.
    fn next_segment_base(&self, offset: i64) -> Option<i64> {
        let segments = self.lock_segments();
        let active_base = segments.active.summary.base_offset;
        segments
            .closed
            .range(offset + 1..)
            .next()
            .map(|(base, _)| *base)
            .or((active_base > offset).then_some(active_base))
    }
}

impl Segments {
    fn log_start_offset(&self) -> i64 {
        self.closed.keys().next().copied().unwrap_or(self.active.summary.base_offset).max(self.start_offset)
    }

    /// Marks `base` most recently used and evicts the least recently used loaded segments beyond
    /// `open_segments_max`. Readers holding an evicted segment's `Arc<File>` keep it open.
    fn touch_loaded(&mut self, base: i64, open_segments_max: usize) {
        self.loaded.retain(|loaded| *loaded != base);
        self.loaded.push_back(base);
        while self.loaded.len() > open_segments_max {
            if let Some(evicted) = self.loaded.pop_front() {
                if let Some(segment) = self.closed.get_mut(&evicted) {
                    segment.loaded = None;
                }
            }
        }
    }
}

/// Opens a closed segment found on disk, checking it ends exactly where the next one starts.
/// Its index is loaded only to check it; a missing or inconsistent one is rebuilt from the data.
fn open_closed_segment(
    dir: &Path,
    base: i64,
    next_base: i64,
    index_interval_bytes: u32,
    gaps_below: i64,
) -> Result<ClosedSegment, LogError> {
    let paths = SegmentPaths::new(dir, base);
    let file = File::open(&paths.data).map_err(|error| LogError::io("open", &paths.data, error))?;
    let size = file.metadata().map_err(|error| LogError::io("stat", &paths.data, error))?.len();
    let relative_end = (next_base - base) as u64;
    let (max_timestamp, offset_of_max_timestamp) = match SegmentIndex::load(
        &paths.offset_index,
        &paths.time_index,
        size,
        relative_end,
    ) {
        Some(index) => {
            // Walk from the last index entry to the end: the segment must end in a whole batch
            // whose next offset is the next segment's base.
            let start = index.offsets.last().map_or(0, |entry| u64::from(entry.position));
            let mut walk = HeaderWalk { file: &file, path: &paths.data, position: start, end: size };
            let mut next_offset = None;
            let mut newest = index.times.last().map_or((NO_TIMESTAMP, base), |entry| {
                (entry.timestamp, base + i64::from(entry.relative_offset))
            });
            while let Some((_, header)) = walk.next_batch()? {
                next_offset = Some(header.next_offset());
                if header.max_timestamp > newest.0 {
                    newest = (header.max_timestamp, header.base_offset);
                }
            }
            if next_offset != Some(next_base) {
                return Err(LogError::Corrupt {
                    path: paths.data.clone(),
                    position: size,
                    reason: format!(
                        "segment ends at offset {next_offset:?}, but the next segment starts at {next_base}"
                    ),
                });
            }
            newest
        }
        None => {
            tracing::warn!(segment = %paths.data.display(), "index missing or inconsistent; rebuilding it");
            let summary =
                check_whole_segment(&file, &paths.data, base, next_base, index_interval_bytes, gaps_below)?;
            summary.index.write(&paths.offset_index, &paths.time_index)?;
            (summary.max_timestamp, summary.offset_of_max_timestamp)
        }
    };
    Ok(ClosedSegment {
        base_offset: base,
        next_offset: next_base,
        size,
        max_timestamp,
        offset_of_max_timestamp,
        paths,
        loaded: None,
    })
}

/// Reads a closed segment in full; any damage, or an end that is not `next_base`, is corruption.
/// Offsets may skip only below `gaps_below`, where the cleaner removed records.
pub(crate) fn check_whole_segment(
    file: &File,
    path: &Path,
    base: i64,
    next_base: i64,
    index_interval_bytes: u32,
    gaps_below: i64,
) -> Result<SegmentSummary, LogError> {
    let (mut summary, damage) = segment::recover(file, base, index_interval_bytes, gaps_below)
        .map_err(|error| LogError::io("read", path, error))?;
    if let Some(damage) = damage {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            position: damage.position,
            reason: damage.reason,
        });
    }
    if summary.next_offset != next_base {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            position: summary.size,
            reason: format!(
                "segment ends at offset {}, but the next segment starts at {next_base}",
                summary.next_offset
            ),
        });
    }
    summary.push_time_entry();
    Ok(summary)
}

/// Opens the last segment for appending: re-reads it, truncates a torn or corrupt tail, and
/// fsyncs, so everything it holds afterwards is durable.
fn open_active_segment(
    dir: &Path,
    base: i64,
    index_interval_bytes: u32,
    now: i64,
) -> Result<ActiveSegment, LogError> {
    let paths = SegmentPaths::new(dir, base);
    if !paths.data.exists() {
        return create_segment(dir, base, index_interval_bytes, now);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&paths.data)
        .map_err(|error| LogError::io("open", &paths.data, error))?;
    // The active segment is never cleaned: its offsets run on without gaps.
    let (summary, damage) = segment::recover(&file, base, index_interval_bytes, i64::MIN)
        .map_err(|error| LogError::io("read", &paths.data, error))?;
    if let Some(damage) = damage {
        let file_size = file.metadata().map_err(|error| LogError::io("stat", &paths.data, error))?.len();
        tracing::warn!(
            segment = %paths.data.display(),
            position = damage.position,
            bytes_cut = file_size - damage.position,
            kept_up_to_offset = summary.next_offset,
            reason = %damage.reason,
            "recovery truncated the active segment to its last valid batch"
        );
        file.set_len(summary.size).map_err(|error| LogError::io("truncate", &paths.data, error))?;
    }
    file.sync_all().map_err(|error| LogError::io("fsync", &paths.data, error))?;
    Ok(ActiveSegment { summary, file: Arc::new(file), paths, created_ms: now })
}

fn create_segment(
    dir: &Path,
    base: i64,
    index_interval_bytes: u32,
    now: i64,
) -> Result<ActiveSegment, LogError> {
    let paths = SegmentPaths::new(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&paths.data)
        .map_err(|error| LogError::io("create segment", &paths.data, error))?;
    // The new file's directory entry must be on disk before anything in it can count as durable.
    sync_dir(dir)?;
    Ok(ActiveSegment {
        summary: SegmentSummary::empty(base, index_interval_bytes),
        file: Arc::new(file),
        paths,
        created_ms: now,
    })
}

/// Replaces `dir/name` with `text`: written to `dir/temp_name`, fsynced, renamed over, and the
/// directory fsynced, so a crash leaves the old file or the new one.
pub(crate) fn write_durably(dir: &Path, name: &str, temp_name: &str, text: &str) -> Result<(), LogError> {
    write_and_rename(dir, name, temp_name, text)?;
    sync_dir(dir)
}

/// `write_durably` without the directory fsync: the rename is durable only once something
/// fsyncs the directory; until then a crash may leave the old file (never a partial new one).
pub(crate) fn write_and_rename(dir: &Path, name: &str, temp_name: &str, text: &str) -> Result<(), LogError> {
    let temp = dir.join(temp_name);
    let write = || -> io::Result<()> {
        let mut file = File::create(&temp)?;
        io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|error| LogError::io("write", &temp, error))?;
    let path = dir.join(name);
    fs::rename(&temp, &path).map_err(|error| LogError::io("rename", &path, error))
}

/// Reads the log start offset `delete_records_before` stored; `i64::MIN` when none was. An
/// unreadable file is reported and ignored: the log then starts at its first segment, which
/// exposes records deleted by DeleteRecords but loses none.
fn read_start_offset(dir: &Path) -> i64 {
    let path = dir.join(START_OFFSET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "unreadable log start offset; starting at the first segment");
            i64::MIN
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => i64::MIN,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the log start offset; starting at the first segment");
            i64::MIN
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| LogError::io("fsync directory", dir, error))
}

fn modified_ms(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock is a bug that may have left the log inconsistent;
    // carrying on would risk writing wrong data, so the panic spreads.
    mutex.lock().expect("log mutex poisoned by a panic")
}

/// The latency of the fsyncs that make appends durable (one per group commit), for
/// `tidewater_log_fsync_latency_seconds`.
fn fsync_latency() -> &'static tidewater_metrics::Histogram {
    static FSYNC_LATENCY: std::sync::OnceLock<std::sync::Arc<tidewater_metrics::Histogram>> =
        std::sync::OnceLock::new();
    FSYNC_LATENCY.get_or_init(|| {
        tidewater_metrics::global().histogram(
            "tidewater_log_fsync_latency_seconds",
            "Time an fsync that makes appended records durable takes (one per group commit).",
        )
    })
}
