//! Key-based compaction of one log (Kafka's `LogCleaner`): closed segments are rewritten keeping
//! only the latest record of each key, with every kept record at its original offset.
//!
//! # A pass
//!
//! `Log::clean` runs one pass, on the caller's thread, while appends and reads go on:
//!
//! 1. *Plan.* The log splits into a clean part, already compacted, and a dirty part from the
//!    checkpoint's `first_dirty` offset. The dirty part ends at the first uncleanable offset: the
//!    active segment (never cleaned), the first segment whose newest record is younger than
//!    `min_compaction_lag_ms`, and the first offset of any transaction still open, whichever
//!    comes first, rounded down to a segment boundary. The pass goes ahead when the dirty part is
//!    more than `min_cleanable_dirty_ratio` of the cleanable log, or when its oldest batch is
//!    older than `max_compaction_lag_ms`.
//! 2. *Transactions.* The batch headers from `first_dirty` to the log end are scanned for
//!    transaction markers, which give the offset ranges of aborted transactions, and the first
//!    offset of any transaction that has no marker yet.
//! 3. *Map.* The dirty part is read in offset order into the offset map (`offset_map.rs`): key
//!    to the offset of its latest record, skipping control batches, aborted batches and
//!    compressed batches (whose records this crate cannot read). If the map fills, the pass
//!    ends its dirty part at the last batch it mapped whole, as Kafka does; the rest waits for
//!    the next pass.
//! 4. *Rewrite.* Every closed segment from the log start up to where the map ends is rewritten,
//!    consecutive segments grouped into one while they fit in `segment_bytes`. A record is kept
//!    when it is its key's latest per the map (a key the map does not hold has nothing newer in
//!    the dirty part) and, for a tombstone, while its batch's delete horizon has not passed.
//!    Records without a key are dropped, as Kafka drops them. Aborted transactions' batches go
//!    whole. A transaction marker stays while any batch of its transaction stays; after that it
//!    gets a delete horizon like a tombstone and goes once that has passed. A batch that loses
//!    records is re-encoded (`batch::rebuild_batch`: same base offset, last offset delta,
//!    producer id, epoch and sequence, new CRC); one that keeps all of them is copied byte for
//!    byte. A compressed batch is kept whole. A group of one segment that nothing changed is not
//!    written at all.
//! 5. *Swap* each rewritten group in (below), then record in the checkpoint where the next pass's
//!    dirty part begins.
//!
//! Tombstones follow KIP-534: the first pass that keeps a tombstone as its key's latest record
//! stores `now + delete_retention_ms` in its batch (`batch::BatchHeader::delete_horizon_ms`), and
//! the first pass after that time removes it. So a tombstone lives at least `delete_retention_ms`
//! after the cleaning that first saw it, and the rule needs no file modification times.
//!
//! Batches that must stay even when all their records go are kept as empty headers
//! (`batch::encode_empty_header`): the last batch of each rewritten group, so that a closed
//! segment still ends exactly where the next one begins (reads of any offset find a batch, and
//! recovery's corruption check stays as strict as before), and the batches the caller names in
//! `CleanOptions::retain_batches_ending_at` (the broker's active producers' last batches, whose
//! sequence numbers producer state is rebuilt from, Kafka's rule).
//!
//! Memory is bounded by the offset map (`cleaner_dedupe_buffer_bytes`), one read buffer and one
//! write buffer (`IO_BUFFER_BYTES`, or one batch if larger) and the aborted-transaction ranges of
//! the scan (`ABORTED_RANGES_MAX`; past it the pass cleans only up to where it stopped counting).
//! I/O is bounded in rate by `cleaner_io_max_bytes_per_second`.
//!
//! # Why removed aborted records never come back
//!
//! The scan starts at `first_dirty`, so it cannot see a transaction whose records and marker both
//! lie in the clean part. That is safe because the pass that made that part clean had seen the
//! marker (the transaction was not open then, or the pass would have stopped before its first
//! offset) and removed the records if it was an abort. `first_dirty` moves only after every swap
//! of a pass is durable, so this holds across crashes too.
//!
//! # The swap, and recovery
//!
//! A rewritten group of segments `[b, ..., e)` (named after its first base offset `b`, ending where
//! the next segment begins) replaces the old ones so that a crash at any byte leaves either the old
//! segments or the new one, never a mix and never neither:
//!
//! 1. The group is written to `b.log.cleaned` with its indexes (`.index.cleaned`,
//!    `.timeindex.cleaned`), and the data file is fsynced. The indexes are not: one that a crash
//!    left short or empty is found inconsistent on load and rebuilt, or merely makes reads walk
//!    further.
//! 2. Once per pass, before the first swap, the checkpoint records that offsets may have gaps
//!    below the pass's end (`gaps_below`): recovery accepts a gap between batches only there, so
//!    damage to a base offset anywhere else is still found. The file is written, fsynced and
//!    renamed into place; the directory fsync of step 3 makes the rename durable.
//! 3. The indexes, then the data file, are renamed from `.cleaned` to `.swap`, and the directory
//!    is fsynced. **The rename of `b.log.swap` is the commit point.**
//! 4. The old segments after `b`, if the group merged any, are renamed to `.deleted` (reads that
//!    reopen them follow the new name), and the directory is fsynced: recovery must never find
//!    the cleaned segment in place beside a segment it replaced.
//! 5. `b.index.swap`, `b.timeindex.swap` and then `b.log.swap` are renamed over `b`'s old files
//!    and the in-memory segment list is switched. No fsync: a crash before one makes these
//!    renames durable leaves the `.swap` files, which recovery renames again.
//! 6. The `.deleted` files are removed.
//!
//! After the last swap of a pass the checkpoint's `first_dirty` moves in memory; the file gets
//! it with the next pass's step 2 or at `Log::close` (a crash before that only makes the next
//! pass map the same dirty part again). So a pass costs three fsyncs (four when it merges
//! segments) whatever its size, which matters to producers fsyncing beside it: each fsync
//! competes with theirs for the filesystem journal.
//!
//! Steps 4 and 5 hold the segment lock only for their renames; readers holding an old segment's
//! file keep reading it. `Log::open` first finishes what a crash interrupted
//! (`finish_interrupted_cleaning`): `.cleaned` files and index `.swap` files without a data
//! `.swap` are removed (the swap never committed); a `b.log.swap` is read whole (every CRC) to
//! learn where it ends, `e`, then every segment in `(b, e)` is removed, the swap files are renamed
//! into place and the checkpoint's `gaps_below` is raised to `e` (the step 2 rename may not have
//! survived the crash that the commit survived); then `.deleted` files are removed. So every
//! key's latest record is in the old segments or in the new one at every moment, and indexes are
//! either swapped with their data or rebuilt.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{self, BatchHeader, RecordView, BATCH_BYTES_HARD_MAX, LOG_OVERHEAD};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::log::{sync_dir, write_and_rename, write_durably, Log};
use crate::offset_map::OffsetMap;
use crate::segment::{self, SegmentPaths, SegmentSummary};

/// The cleaner's state file in each log directory.
const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
const CHECKPOINT_TEMP_FILE: &str = "cleaner-checkpoint.tmp";
/// First line of the checkpoint file; a different one means a format this code does not know.
const CHECKPOINT_HEADER: &str = "tidewater-cleaner-checkpoint 1";
/// Suffixes of a segment's files during a swap (see the module docs).
const CLEANED_SUFFIX: &str = ".cleaned";
const SWAP_SUFFIX: &str = ".swap";
const DELETED_SUFFIX: &str = ".deleted";
/// Read and write buffers of a pass (Kafka's `log.cleaner.io.buffer.size` is 512 KiB per buffer).
const IO_BUFFER_BYTES: usize = 1024 * 1024;
/// The smallest a record can be in a v2 batch (length, attributes, timestamp and offset deltas,
/// key and value lengths, header count: one byte each): sizes the offset map for a dirty part.
const RECORD_BYTES_MIN: u64 = 7;
/// Aborted transactions one pass tracks. Past this the pass cleans only up to where the scan
/// stopped, so the ranges it holds cover everything it cleans.
const ABORTED_RANGES_MAX: usize = 1 << 20;
/// The longest a throttled pass sleeps before looking whether the log is closing.
const THROTTLE_SLEEP_MAX: Duration = Duration::from_millis(100);

/// What the cleaner has done to one log, kept in `cleaner-checkpoint` beside its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Batches that start at or below this offset may follow a gap: the cleaner removed records
    /// before them. Above it the log's offsets are contiguous, as appends wrote them.
    pub(crate) gaps_below: i64,
    /// The dirty part of the log, which the next pass maps, starts here.
    pub(crate) first_dirty: i64,
}

impl Checkpoint {
    const NEVER_CLEANED: Checkpoint = Checkpoint { gaps_below: i64::MIN, first_dirty: 0 };
}

/// What a caller asks of one cleaning pass.
#[derive(Debug, Clone, Default)]
pub struct CleanOptions {
    /// Batches whose last offset is listed here stay, as an empty header if none of their records
    /// does: the broker passes the last batch of each producer it still tracks, so the producer's
    /// sequence numbers can be rebuilt from the log (Kafka's rule).
    pub retain_batches_ending_at: BTreeSet<i64>,
    /// Clean even when the dirty ratio is below `min_cleanable_dirty_ratio`.
    pub force: bool,
    /// For crash tests: stop right after this step, leaving the files as a crash there would.
    #[doc(hidden)]
    pub stop_after: Option<CleanStep>,
}

/// The steps of the swap a crash test can stop after (see the module docs).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanStep {
    /// The first group's `.cleaned` files are written and fsynced.
    Written,
    /// Its `.swap` files are in place: the commit point.
    Committed,
    /// The old segments after its first are renamed `.deleted`.
    OldRetired,
    /// The swap files are renamed into place; the `.deleted` files are still there.
    Swapped,
}

/// What `Log::clean` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CleanOutcome {
    /// The log's cleanup policy does not include `compact`.
    NotCompacted,
    /// No closed segment is dirty and cleanable yet (all clean, too young, or behind an open
    /// transaction).
    NothingToClean,
    /// The dirty part is too small a share of the log, and nothing in it is past
    /// `max_compaction_lag_ms`.
    NotDirtyEnough {
        dirty_ratio: f64,
    },
    Cleaned(CleanReport),
    /// `CleanOptions::stop_after` stopped the pass (tests only).
    #[doc(hidden)]
    Stopped,
}

/// Figures of one pass, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanReport {
    /// Where the dirty part began.
    pub first_dirty_offset: i64,
    /// The first offset this pass did not compact: where the next pass's dirty part begins.
    pub end_offset: i64,
    pub dirty_ratio: f64,
    /// Keys in the offset map, and whether it filled before the dirty part ended.
    pub keys_mapped: usize,
    pub map_full: bool,
    /// Bytes the offset map took (at most; pages it never touched are not resident).
    pub map_bytes: usize,
    /// Bytes of segments read while rewriting, and written in their place.
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    /// Segments rewritten, and the segments that replaced them.
    pub segments_rewritten: usize,
    pub segments_written: usize,
    pub tombstones_removed: u64,
    pub aborted_batches_removed: u64,
    pub markers_removed: u64,
    /// Compressed batches kept whole: the log has no codecs to look inside them.
    pub compressed_batches_kept: u64,
}

/// A closed segment as the pass sees it, captured under the segment lock at the start.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) base_offset: i64,
    pub(crate) next_offset: i64,
    pub(crate) size: u64,
    pub(crate) max_timestamp: i64,
    pub(crate) paths: SegmentPaths,
}

/// Everything a pass needs from the log's state, read once under the segment lock.
#[derive(Debug)]
pub(crate) struct CleanSnapshot {
    pub(crate) closed: Vec<SegmentInfo>,
    pub(crate) active_base: i64,
    pub(crate) active_file: Arc<File>,
    pub(crate) active_path: PathBuf,
    pub(crate) active_size: u64,
    pub(crate) checkpoint: Checkpoint,
}

/// The cleaned file of one group, ready to be swapped in.
#[derive(Debug)]
pub(crate) struct CleanedSegment {
    pub(crate) file: Arc<File>,
    pub(crate) summary: SegmentSummary,
    /// Where the group ends: the base offset of the segment after it.
    pub(crate) next_offset: i64,
}

impl Log {
    /// Runs one cleaning pass (see the module docs) if the log's policy includes `compact` and
    /// the log is dirty enough. Blocking, possibly for a long time on a large log; appends and
    /// reads carry on meanwhile. Returns what it did; errors leave the log as it was, or, past the
    /// commit point of a swap, poison it so the next open finishes the swap.
    pub fn clean(&self, options: &CleanOptions) -> Result<CleanOutcome, LogError> {
        let _cleaning = self.cleaning.lock().expect("log cleaning mutex poisoned by a panic");
        let config = self.config();
        if !config.cleanup_policy.compact {
            return Ok(CleanOutcome::NotCompacted);
        }
        let now = self.clock.now_ms();
        let snapshot = self.clean_snapshot()?;
        let mut pass = Pass::new(self, &config, &snapshot, options, now);
        pass.run()
    }
}

/// One cleaning pass over one log.
struct Pass<'a> {
    log: &'a Log,
    config: &'a LogConfig,
    snapshot: &'a CleanSnapshot,
    options: &'a CleanOptions,
    now: i64,
    throttle: Throttle,
    report: CleanReport,
}

/// The transactions the scan found: aborted ranges per producer, in offset order.
#[derive(Debug, Default)]
struct Transactions {
    /// Producer id to `(first offset, abort marker offset)` of each aborted transaction whose
    /// first batch is at or after `first_dirty`.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
}

impl Transactions {
    fn is_aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.aborted.get(&header.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(first, marker)| *first <= header.base_offset && header.base_offset < *marker)
            })
    }
}

impl<'a> Pass<'a> {
    fn new(
        log: &'a Log,
        config: &'a LogConfig,
        snapshot: &'a CleanSnapshot,
        options: &'a CleanOptions,
        now: i64,
    ) -> Self {
        Pass {
            log,
            config,
            snapshot,
            options,
            now,
            throttle: Throttle::new(config.cleaner_io_max_bytes_per_second),
            report: CleanReport::default(),
        }
    }

    fn run(&mut self) -> Result<CleanOutcome, LogError> {
        let log_start =
            self.snapshot.closed.first().map_or(self.snapshot.active_base, |first| first.base_offset);
        let first_dirty = self.snapshot.checkpoint.first_dirty.max(log_start);
        // Without the open-transaction bound first; the scan can only lower it.
        let Some(upper) = self.first_uncleanable_by_segments(first_dirty) else {
            return Ok(CleanOutcome::NothingToClean);
        };
        let (dirty_ratio, forced) = self.dirty_ratio(first_dirty, upper)?;
        if !(self.options.force || forced || dirty_ratio > self.config.min_cleanable_dirty_ratio) {
            return Ok(CleanOutcome::NotDirtyEnough { dirty_ratio });
        }
        let (transactions, first_unstable) = self.scan_transactions(first_dirty)?;
        let first_uncleanable = self.round_down_to_segment(upper.min(first_unstable));
        if first_uncleanable <= first_dirty {
            return Ok(CleanOutcome::NothingToClean);
        }
        self.report.first_dirty_offset = first_dirty;
        self.report.dirty_ratio = dirty_ratio;
        let (map, end) = self.build_map(first_dirty, first_uncleanable, &transactions)?;
        self.report.end_offset = end;
        self.report.keys_mapped = map.len();
        self.report.map_bytes = map.allocated_bytes();
        let segments: Vec<SegmentInfo> =
            self.snapshot.closed.iter().filter(|segment| segment.base_offset < end).cloned().collect();
        let mut state = RewriteState::default();
        let mut checkpoint_written = false;
        let mut next_idx = 0;
        while next_idx < segments.len() {
            let (group_len, cleaned) =
                self.rewrite_group(&segments[next_idx..], end, &map, &transactions, &mut state)?;
            let group = &segments[next_idx..next_idx + group_len];
            next_idx += group_len;
            let Some(cleaned) = cleaned else { continue };
            if !checkpoint_written {
                // Made durable by the commit's directory fsync; recovery covers a crash that
                // keeps the commit and loses this (see `finish_interrupted_cleaning`).
                let checkpoint = Checkpoint {
                    gaps_below: self.snapshot.checkpoint.gaps_below.max(end),
                    first_dirty: self.snapshot.checkpoint.first_dirty,
                };
                self.log.write_checkpoint(checkpoint)?;
                checkpoint_written = true;
            }
            if self.options.stop_after == Some(CleanStep::Written) {
                return Ok(CleanOutcome::Stopped);
            }
            self.report.segments_rewritten += group.len();
            self.report.segments_written += 1;
            if !self.log.swap_in(group, cleaned, self.options.stop_after)? {
                return Ok(CleanOutcome::Stopped);
            }
        }
        let checkpoint = Checkpoint {
            gaps_below: if checkpoint_written {
                self.snapshot.checkpoint.gaps_below.max(end)
            } else {
                self.snapshot.checkpoint.gaps_below
            },
            first_dirty: end,
        };
        // Kept in memory until the next pass's swap or `close` writes it: a crash before then
        // only makes the next pass map this dirty part again.
        self.log.with_segments(|segments| segments.checkpoint = checkpoint);
        tracing::info!(
            dir = %self.log.dir.display(),
            first_dirty,
            end,
            bytes_read = self.report.bytes_read,
            bytes_written = self.report.bytes_written,
            keys = self.report.keys_mapped,
            "cleaned log"
        );
        Ok(CleanOutcome::Cleaned(std::mem::take(&mut self.report)))
    }

    /// The first offset a pass may not clean, from segments alone: the active segment, and the
    /// first segment past `first_dirty` too young for `min_compaction_lag_ms`. `None` when that
    /// leaves nothing dirty.
    fn first_uncleanable_by_segments(&self, first_dirty: i64) -> Option<i64> {
        let lag_limit = self.now.saturating_sub(self.config.min_compaction_lag_ms);
        let too_young = self
            .snapshot
            .closed
            .iter()
            .filter(|segment| segment.next_offset > first_dirty)
            .find(|segment| segment.max_timestamp > lag_limit)
            .map(|segment| segment.base_offset);
        let upper = too_young.unwrap_or(self.snapshot.active_base);
        let dirty = self.snapshot.closed.iter().any(|segment| {
            segment.next_offset > first_dirty && segment.base_offset < upper && segment.next_offset <= upper
        });
        dirty.then_some(upper)
    }

    /// The dirty share of the cleanable log, and whether the oldest dirty batch is past
    /// `max_compaction_lag_ms` (which makes cleaning due whatever the ratio).
    fn dirty_ratio(&self, first_dirty: i64, upper: i64) -> Result<(f64, bool), LogError> {
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        let mut first_dirty_segment = None;
        for segment in self.snapshot.closed.iter().filter(|segment| segment.next_offset <= upper) {
            if segment.next_offset <= first_dirty {
                clean_bytes += segment.size;
            } else {
                dirty_bytes += segment.size;
                first_dirty_segment.get_or_insert(segment);
            }
        }
        let total = clean_bytes + dirty_bytes;
        let ratio = if total == 0 { 0.0 } else { dirty_bytes as f64 / total as f64 };
        let forced = match (first_dirty_segment, self.config.max_compaction_lag_ms) {
            (_, i64::MAX) | (None, _) => false,
            (Some(segment), max_lag) => {
                // Kafka compares the first dirty batch's timestamp.
                let file = open_read(&segment.paths.data)?;
                let mut walk = segment::HeaderWalk {
                    file: &file,
                    path: &segment.paths.data,
                    position: 0,
                    end: segment.size,
                };
                let mut oldest = None;
                while let Some((_, header)) = walk.next_batch()? {
                    if header.last_offset() >= first_dirty {
                        oldest = Some(header.max_timestamp);
                        break;
                    }
                }
                oldest.is_some_and(|timestamp| timestamp >= 0 && timestamp < self.now.saturating_sub(max_lag))
            }
        };
        Ok((ratio, forced))
    }

    /// Reads the batch headers from `first_dirty` to the log end as it was at the snapshot:
    /// returns the aborted transactions found and the first offset the pass must stop before (the
    /// first offset of a transaction still open, or where the scan stopped counting ranges).
    fn scan_transactions(&mut self, first_dirty: i64) -> Result<(Transactions, i64), LogError> {
        let mut transactions = Transactions::default();
        let mut open: HashMap<i64, i64> = HashMap::new();
        let mut ranges = 0usize;
        let mut files: Vec<(Arc<File>, PathBuf, u64)> = Vec::new();
        for segment in self.snapshot.closed.iter().filter(|segment| segment.next_offset > first_dirty) {
            files.push((Arc::new(open_read(&segment.paths.data)?), segment.paths.data.clone(), segment.size));
        }
        files.push((
            self.snapshot.active_file.clone(),
            self.snapshot.active_path.clone(),
            self.snapshot.active_size,
        ));
        let mut stopped_at = i64::MAX;
        let mut marker_bytes = Vec::new();
        'files: for (file, path, size) in &files {
            // Headers only (the map and the rewrite read the records): a positioned read of each
            // header, and of the whole batch only for a marker, which is a few dozen bytes.
            let mut walk = segment::HeaderWalk { file, path, position: 0, end: *size };
            while let Some((position, header)) = walk.next_batch()? {
                self.check_not_closing()?;
                if header.last_offset() < first_dirty || header.producer_id < 0 {
                    continue;
                }
                if !header.is_control() {
                    if header.is_transactional() {
                        open.entry(header.producer_id).or_insert(header.base_offset);
                    }
                    continue;
                }
                let first = open.remove(&header.producer_id);
                marker_bytes.resize(header.total_bytes(), 0);
                file.read_exact_at(&mut marker_bytes, position)
                    .map_err(|error| LogError::io("read", path, error))?;
                if let (Some(false), Some(first)) = (batch::control_marker(&marker_bytes), first) {
                    if ranges == ABORTED_RANGES_MAX {
                        stopped_at = header.base_offset;
                        open.insert(header.producer_id, first);
                        break 'files;
                    }
                    transactions
                        .aborted
                        .entry(header.producer_id)
                        .or_default()
                        .push((first, header.base_offset));
                    ranges += 1;
                }
            }
        }
        let first_open = open.values().copied().min().unwrap_or(i64::MAX);
        Ok((transactions, first_open.min(stopped_at)))
    }

    /// The base offset of the segment holding `offset` (or `offset` itself past every segment).
    fn round_down_to_segment(&self, offset: i64) -> i64 {
        if offset >= self.snapshot.active_base {
            return self.snapshot.active_base;
        }
        self.snapshot
            .closed
            .iter()
            .rev()
            .find(|segment| segment.base_offset <= offset)
            .map_or(offset, |segment| segment.base_offset)
    }

    /// Maps the dirty part `[first_dirty, first_uncleanable)`: each key to its latest offset.
    /// Returns the map and the end of what it covers, the first offset not mapped.
    fn build_map(
        &mut self,
        first_dirty: i64,
        first_uncleanable: i64,
        transactions: &Transactions,
    ) -> Result<(OffsetMap, i64), LogError> {
        let dirty: Vec<&SegmentInfo> = self
            .snapshot
            .closed
            .iter()
            .filter(|segment| segment.next_offset > first_dirty && segment.next_offset <= first_uncleanable)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|segment| segment.size).sum();
        let expected_keys = usize::try_from(dirty_bytes / RECORD_BYTES_MIN).unwrap_or(usize::MAX);
        let mut map = OffsetMap::new(self.config.cleaner_dedupe_buffer_bytes, expected_keys);
        // Every offset below `end` is mapped: it grows batch by batch, and to the next
        // segment's base once a segment is done (the segment may end in a gap).
        let mut end = first_dirty;
        for segment in dirty {
            let file = open_read(&segment.paths.data)?;
            let mut reader = BatchReader::new(&file, &segment.paths.data, segment.size);
            while let Some((_, bytes)) = reader.next_batch()? {
                self.check_not_closing()?;
                self.throttle.account(bytes.len() as u64, &self.log.closing)?;
                let header = validate_stored(bytes, &segment.paths.data)?;
                if header.last_offset() < first_dirty {
                    continue;
                }
                let mappable =
                    !header.is_control() && !header.is_compressed() && !transactions.is_aborted(&header);
                if mappable {
                    for view in records_of(bytes, &header, &segment.paths.data)? {
                        let view =
                            view.map_err(|error| corrupt(&segment.paths.data, header.base_offset, error))?;
                        let Some(key) = view.record.key else { continue };
                        if !map.put(key, view.record.offset) {
                            self.report.map_full = true;
                            if end <= first_dirty {
                                return Err(LogError::InvalidConfig {
                                    reason: format!(
                                        "cleaner_dedupe_buffer_bytes {} cannot hold the keys of the batch at offset {} of {}",
                                        self.config.cleaner_dedupe_buffer_bytes,
                                        header.base_offset,
                                        self.log.dir.display()
                                    ),
                                });
                            }
                            return Ok((map, end));
                        }
                    }
                }
                end = header.next_offset();
            }
            end = segment.next_offset;
        }
        Ok((map, end))
    }

    /// Rewrites the next group of `segments` into `<base>.log.cleaned` and its indexes. A group
    /// starts with `segments[0]` and takes in the next segment while what it has written so far
    /// and that segment's size fit in `segment_bytes` and their offsets in one segment's index:
    /// the sizes after cleaning decide, so segments that cleaning shrank merge. Returns how many
    /// segments the group took, and the cleaned segment, or `None` when the group is one segment
    /// that nothing changed: then nothing is written.
    fn rewrite_group(
        &mut self,
        segments: &[SegmentInfo],
        end: i64,
        map: &OffsetMap,
        transactions: &Transactions,
        state: &mut RewriteState,
    ) -> Result<(usize, Option<CleanedSegment>), LogError> {
        let base = segments[0].base_offset;
        let paths = SegmentPaths::with_suffix(&self.log.dir, base, CLEANED_SUFFIX);
        let mut output = Output::new(paths, base, self.config.index_interval_bytes);
        let result = self.rewrite_into(segments, end, map, transactions, state, &mut output);
        let finished = result.and_then(|group_len| {
            let group = &segments[..group_len];
            output.finish(group).map(|cleaned| (group_len, cleaned))
        });
        match finished {
            Ok((group_len, cleaned)) => {
                self.report.bytes_written += cleaned.as_ref().map_or(0, |cleaned| cleaned.summary.size);
                Ok((group_len, cleaned))
            }
            Err(error) => {
                output.discard();
                Err(error)
            }
        }
    }

    /// The body of `rewrite_group`; returns how many segments the group took.
    fn rewrite_into(
        &mut self,
        segments: &[SegmentInfo],
        end: i64,
        map: &OffsetMap,
        transactions: &Transactions,
        state: &mut RewriteState,
        output: &mut Output,
    ) -> Result<usize, LogError> {
        let base = segments[0].base_offset;
        let mut rebuilt = Vec::new();
        // The last batch of the segment just done, when nothing else would keep it: it stays
        // as an empty header if the group ends there (so the segment ends where the next begins),
        // and goes if the group takes in the next segment.
        let mut pending_last: Option<BatchHeader> = None;
        let mut group_len = 0;
        for (segment_idx, segment) in segments.iter().enumerate() {
            if segment_idx > 0 {
                let fits = output.summary.size + segment.size <= self.config.segment_bytes
                    && segment.next_offset - base <= i64::from(u32::MAX);
                if !fits {
                    break;
                }
                output.merge()?;
                pending_last = None;
            }
            group_len += 1;
            let file = open_read(&segment.paths.data)?;
            output.start_segment(&file);
            let mut reader = BatchReader::new(&file, &segment.paths.data, segment.size);
            while let Some((position, bytes)) = reader.next_batch()? {
                self.check_not_closing()?;
                self.throttle.account(bytes.len() as u64, &self.log.closing)?;
                self.report.bytes_read += bytes.len() as u64;
                let header = validate_stored(bytes, &segment.paths.data)?;
                let is_last = position + bytes.len() as u64 == segment.size;
                let must_keep = self.options.retain_batches_ending_at.contains(&header.last_offset());
                rebuilt.clear();
                let decision = if header.base_offset >= end {
                    // Past what the map covers: untouched, as Kafka keeps records past its map.
                    Decision::Copy
                } else if header.is_control() {
                    self.decide_marker(bytes, &header, state, must_keep, &mut rebuilt, &segment.paths.data)?
                } else {
                    self.decide_data(
                        bytes,
                        &header,
                        map,
                        transactions,
                        must_keep,
                        &mut rebuilt,
                        &segment.paths.data,
                    )?
                };
                if header.is_transactional() && !header.is_control() && decision != Decision::Drop {
                    state.kept_in_transaction.insert(header.producer_id);
                }
                match decision {
                    Decision::Copy => output.copy(bytes, &header)?,
                    Decision::Write => {
                        self.throttle.account(rebuilt.len() as u64, &self.log.closing)?;
                        output.write(&rebuilt)?
                    }
                    Decision::Drop => {
                        output.drop_batch()?;
                        if is_last {
                            pending_last = Some(header);
                        }
                    }
                }
            }
        }
        if let Some(header) = pending_last {
            rebuilt.clear();
            batch::encode_empty_header(&header, &mut rebuilt);
            output.write(&rebuilt)?;
            if header.is_transactional() && !header.is_control() {
                state.kept_in_transaction.insert(header.producer_id);
            }
        }
        Ok(group_len)
    }

    /// A transaction marker stays while any batch of its transaction stays; once none does, it
    /// gets a delete horizon and goes after it, as a tombstone does (Kafka's rules).
    fn decide_marker(
        &mut self,
        bytes: &[u8],
        header: &BatchHeader,
        state: &mut RewriteState,
        must_keep: bool,
        rebuilt: &mut Vec<u8>,
        path: &Path,
    ) -> Result<Decision, LogError> {
        let transaction_kept = state.kept_in_transaction.remove(&header.producer_id);
        if header.records_count == 0 {
            // Emptied by an earlier pass and kept only as long as something needed it.
            return Ok(if must_keep { Decision::Copy } else { Decision::Drop });
        }
        if transaction_kept {
            return Ok(Decision::Copy);
        }
        Ok(match header.delete_horizon_ms() {
            Some(horizon) if horizon <= self.now => {
                self.report.markers_removed += 1;
                if must_keep {
                    batch::encode_empty_header(header, rebuilt);
                    Decision::Write
                } else {
                    Decision::Drop
                }
            }
            Some(_) => Decision::Copy,
            None => {
                let mut records = Vec::with_capacity(1);
                for view in records_of(bytes, header, path)? {
                    records.push(view.map_err(|error| corrupt(path, header.base_offset, error))?);
                }
                let horizon = self.now.saturating_add(self.config.delete_retention_ms);
                batch::rebuild_batch(header, &records, Some(horizon), rebuilt);
                Decision::Write
            }
        })
    }

    /// Which records of a data batch stay: see the module docs.
    #[allow(clippy::too_many_arguments)]
    fn decide_data(
        &mut self,
        bytes: &[u8],
        header: &BatchHeader,
        map: &OffsetMap,
        transactions: &Transactions,
        must_keep: bool,
        rebuilt: &mut Vec<u8>,
        path: &Path,
    ) -> Result<Decision, LogError> {
        if transactions.is_aborted(header) {
            self.report.aborted_batches_removed += 1;
            self.report.records_read += header.records_count as u64;
            return Ok(if must_keep && header.records_count > 0 {
                batch::encode_empty_header(header, rebuilt);
                Decision::Write
            } else if must_keep {
                Decision::Copy
            } else {
                Decision::Drop
            });
        }
        if header.records_count == 0 {
            // Emptied by an earlier pass and kept only as long as something needed it.
            return Ok(if must_keep { Decision::Copy } else { Decision::Drop });
        }
        if header.is_compressed() {
            self.report.compressed_batches_kept += 1;
            return Ok(Decision::Copy);
        }
        let tombstones_stay = header.delete_horizon_ms().is_none_or(|horizon| self.now < horizon);
        let mut kept: Vec<RecordView<'_>> = Vec::with_capacity(header.records_count.max(0) as usize);
        let mut has_tombstone = false;
        for view in records_of(bytes, header, path)? {
            let view = view.map_err(|error| corrupt(path, header.base_offset, error))?;
            self.report.records_read += 1;
            let record = view.record;
            let Some(key) = record.key else { continue };
            let latest = map.get(key).is_none_or(|latest| record.offset >= latest);
            if !latest {
                continue;
            }
            if record.value.is_none() {
                if !tombstones_stay {
                    self.report.tombstones_removed += 1;
                    continue;
                }
                has_tombstone = true;
            }
            kept.push(view);
        }
        self.report.records_kept += kept.len() as u64;
        let needs_horizon = has_tombstone && header.delete_horizon_ms().is_none();
        if kept.len() == header.records_count as usize && !needs_horizon {
            return Ok(Decision::Copy);
        }
        if kept.is_empty() {
            return Ok(if must_keep {
                batch::encode_empty_header(header, rebuilt);
                Decision::Write
            } else {
                Decision::Drop
            });
        }
        let horizon = match header.delete_horizon_ms() {
            Some(horizon) => Some(horizon),
            None if has_tombstone => Some(self.now.saturating_add(self.config.delete_retention_ms)),
            None => None,
        };
        batch::rebuild_batch(header, &kept, horizon, rebuilt);
        Ok(Decision::Write)
    }

    fn check_not_closing(&self) -> Result<(), LogError> {
        if self.log.closing.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        Ok(())
    }
}

/// What happens to one batch of a rewritten segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Kept byte for byte.
    Copy,
    /// Replaced by the bytes built into the rewrite buffer.
    Write,
    /// Removed.
    Drop,
}

/// Transaction state carried from group to group through one pass.
#[derive(Debug, Default)]
struct RewriteState {
    /// Producers whose current transaction has a batch kept by this pass.
    kept_in_transaction: std::collections::HashSet<i64>,
}

/// The cleaned file a group is written into. A group starts in pass-through mode: while every
/// batch of its first segment is kept as it is, nothing is written; at the first change (or when
/// a second segment joins) the bytes kept so far are copied from the source and writing goes on
/// from there.
struct Output {
    paths: SegmentPaths,
    writer: Option<BufWriter<File>>,
    /// What the output holds so far (also in pass-through mode).
    summary: SegmentSummary,
    /// The segment being read while in pass-through mode, and how much of it the output is.
    source: Option<File>,
    identical_up_to: u64,
    changed: bool,
}

impl Output {
    fn new(paths: SegmentPaths, base: i64, index_interval_bytes: u32) -> Self {
        Output {
            paths,
            writer: None,
            summary: SegmentSummary::empty(base, index_interval_bytes),
            source: None,
            identical_up_to: 0,
            changed: false,
        }
    }

    fn start_segment(&mut self, file: &File) {
        if !self.changed {
            self.source = file.try_clone().ok();
            self.identical_up_to = 0;
        }
    }

    /// A second segment joins the group: from here on the output is written.
    fn merge(&mut self) -> Result<(), LogError> {
        self.diverge()
    }

    /// Switches from pass-through to writing, copying the bytes kept unchanged so far.
    fn diverge(&mut self) -> Result<(), LogError> {
        if self.changed {
            return Ok(());
        }
        self.changed = true;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.paths.data)
            .map_err(|error| LogError::io("create cleaned segment", &self.paths.data, error))?;
        let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, file);
        if self.identical_up_to > 0 {
            let Some(source) = self.source.take() else {
                return Err(LogError::io("copy", &self.paths.data, io::Error::other("no source segment")));
            };
            let mut buffer = vec![0u8; IO_BUFFER_BYTES.min(self.identical_up_to as usize)];
            let mut position = 0u64;
            while position < self.identical_up_to {
                let chunk = (self.identical_up_to - position).min(buffer.len() as u64) as usize;
                source
                    .read_exact_at(&mut buffer[..chunk], position)
                    .map_err(|error| LogError::io("read", &self.paths.data, error))?;
                writer
                    .write_all(&buffer[..chunk])
                    .map_err(|error| LogError::io("write", &self.paths.data, error))?;
                position += chunk as u64;
            }
        }
        self.writer = Some(writer);
        Ok(())
    }

    fn copy(&mut self, bytes: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        self.summary.observe(header);
        if !self.changed {
            self.identical_up_to += bytes.len() as u64;
            return Ok(());
        }
        self.write_bytes(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.diverge()?;
        let header = batch::parse_header(bytes, BATCH_BYTES_HARD_MAX)
            .map_err(|error| corrupt(&self.paths.data, 0, error))?;
        self.summary.observe(&header);
        self.write_bytes(bytes)
    }

    fn drop_batch(&mut self) -> Result<(), LogError> {
        self.diverge()
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let writer = self.writer.as_mut().expect("a changed output has a writer");
        writer.write_all(bytes).map_err(|error| LogError::io("write", &self.paths.data, error))
    }

    /// Flushes, fsyncs and writes the indexes. `None` if nothing changed.
    fn finish(&mut self, group: &[SegmentInfo]) -> Result<Option<CleanedSegment>, LogError> {
        if !self.changed {
            return Ok(None);
        }
        let writer = self.writer.take().expect("a changed output has a writer");
        let file = writer
            .into_inner()
            .map_err(|error| LogError::io("write", &self.paths.data, error.into_error()))?;
        file.sync_all().map_err(|error| LogError::io("fsync", &self.paths.data, error))?;
        self.summary.push_time_entry();
        self.summary.index.write_with(&self.paths.offset_index, &self.paths.time_index, false)?;
        let next_offset = group[group.len() - 1].next_offset;
        if self.summary.next_offset != next_offset {
            return Err(LogError::Corrupt {
                path: self.paths.data.clone(),
                position: self.summary.size,
                reason: format!(
                    "cleaned segment ends at offset {}, not at the next segment's base {next_offset}",
                    self.summary.next_offset
                ),
            });
        }
        Ok(Some(CleanedSegment { file: Arc::new(file), summary: self.summary.clone(), next_offset }))
    }

    /// Removes whatever was written, after an error or when the log is closing.
    fn discard(&mut self) {
        self.writer = None;
        for path in self.paths.all() {
            let _ = fs::remove_file(path);
        }
    }
}

impl Log {
    /// What a pass needs, read under the segment lock.
    fn clean_snapshot(&self) -> Result<CleanSnapshot, LogError> {
        self.with_segments(|segments| {
            if segments.is_closed {
                return Err(LogError::Closed);
            }
            let closed = segments
                .closed
                .values()
                .map(|segment| SegmentInfo {
                    base_offset: segment.base_offset,
                    next_offset: segment.next_offset,
                    size: segment.size,
                    max_timestamp: segment.max_timestamp,
                    paths: segment.paths.clone(),
                })
                .collect();
            let active = &segments.active;
            Ok(CleanSnapshot {
                closed,
                active_base: active.summary.base_offset,
                active_file: active.file.clone(),
                active_path: SegmentPaths::new(&self.dir, active.summary.base_offset).data,
                active_size: active.summary.size,
                checkpoint: segments.checkpoint,
            })
        })
    }

    /// Writes the checkpoint file (temp, fsync, rename) and the copy in memory. The rename is
    /// durable with the next directory fsync, which the swap's commit does.
    fn write_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), LogError> {
        write_and_rename(&self.dir, CHECKPOINT_FILE, CHECKPOINT_TEMP_FILE, &checkpoint_text(&checkpoint))?;
        self.with_segments(|segments| {
            segments.checkpoint = checkpoint;
            segments.checkpoint_on_disk = checkpoint;
        });
        Ok(())
    }

    /// Writes the checkpoint durably if the one in memory moved past the file (at `close`).
    pub(crate) fn persist_checkpoint(&self) -> Result<(), LogError> {
        let checkpoint = self.with_segments(|segments| segments.checkpoint);
        if self.with_segments(|segments| segments.checkpoint_on_disk) == checkpoint {
            return Ok(());
        }
        write_durably(&self.dir, CHECKPOINT_FILE, CHECKPOINT_TEMP_FILE, &checkpoint_text(&checkpoint))?;
        self.with_segments(|segments| segments.checkpoint_on_disk = checkpoint);
        Ok(())
    }

    /// Steps 3 to 6 of the swap (module docs). Returns false if `stop_after` stopped it.
    fn swap_in(
        &self,
        group: &[SegmentInfo],
        cleaned: CleanedSegment,
        stop_after: Option<CleanStep>,
    ) -> Result<bool, LogError> {
        let base = group[0].base_offset;
        let cleaned_paths = SegmentPaths::with_suffix(&self.dir, base, CLEANED_SUFFIX);
        let swap_paths = SegmentPaths::with_suffix(&self.dir, base, SWAP_SUFFIX);
        // Step 3: indexes first, the data file last; its rename commits.
        for (from, to) in [
            (&cleaned_paths.offset_index, &swap_paths.offset_index),
            (&cleaned_paths.time_index, &swap_paths.time_index),
            (&cleaned_paths.data, &swap_paths.data),
        ] {
            fs::rename(from, to).map_err(|error| LogError::io("rename", from, error))?;
        }
        sync_dir(&self.dir)?;
        if stop_after == Some(CleanStep::Committed) {
            return Ok(false);
        }
        // Past the commit point a failure leaves disk and memory apart: poison, and let the next
        // open finish the swap from the files.
        let result = self.finish_swap(group, cleaned, stop_after);
        if let Err(error) = &result {
            self.poison(format!("a cleaned segment's swap failed past its commit point: {error}"));
        }
        result
    }

    fn finish_swap(
        &self,
        group: &[SegmentInfo],
        cleaned: CleanedSegment,
        stop_after: Option<CleanStep>,
    ) -> Result<bool, LogError> {
        let base = group[0].base_offset;
        let retired: Vec<i64> = group[1..].iter().map(|segment| segment.base_offset).collect();
        // Step 4, durable before step 5's rename can be: recovery must never find the cleaned
        // segment in place beside a segment it replaced.
        if !retired.is_empty() {
            self.retire_segments(&retired, |old| SegmentPaths::with_suffix(&self.dir, old, DELETED_SUFFIX))?;
            sync_dir(&self.dir)?;
        }
        if stop_after == Some(CleanStep::OldRetired) {
            return Ok(false);
        }
        // Step 5.
        let swap_paths = SegmentPaths::with_suffix(&self.dir, base, SWAP_SUFFIX);
        let final_paths = SegmentPaths::new(&self.dir, base);
        let group_bases: Vec<i64> = group.iter().map(|segment| segment.base_offset).collect();
        self.install_segment(&group_bases, cleaned, || {
            for (from, to) in [
                (&swap_paths.offset_index, &final_paths.offset_index),
                (&swap_paths.time_index, &final_paths.time_index),
                (&swap_paths.data, &final_paths.data),
            ] {
                fs::rename(from, to).map_err(|error| LogError::io("rename", from, error))?;
            }
            Ok(final_paths.clone())
        })?;
        // No fsync: until one makes these renames durable, a crash leaves the `.swap` files,
        // and recovery renames them again.
        if stop_after == Some(CleanStep::Swapped) {
            return Ok(false);
        }
        // Step 6.
        for old in retired {
            remove_segment_files(&SegmentPaths::with_suffix(&self.dir, old, DELETED_SUFFIX))?;
        }
        Ok(true)
    }
}

/// Reads the checkpoint of the log in `dir`. A missing file means never cleaned. An unreadable
/// one is reported and read as "gaps may be anywhere in closed segments, everything is dirty":
/// the log still opens (with weaker checks of closed segments' base offsets) and the next pass
/// cleans it all again.
pub(crate) fn read_checkpoint(dir: &Path) -> Checkpoint {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Checkpoint::NEVER_CLEANED,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the cleaner checkpoint; treating every closed segment as cleaned and dirty");
            return Checkpoint { gaps_below: i64::MAX, first_dirty: 0 };
        }
    };
    match parse_checkpoint(&text) {
        Some(checkpoint) => checkpoint,
        None => {
            tracing::warn!(path = %path.display(), "unreadable cleaner checkpoint; treating every closed segment as cleaned and dirty");
            Checkpoint { gaps_below: i64::MAX, first_dirty: 0 }
        }
    }
}

fn parse_checkpoint(text: &str) -> Option<Checkpoint> {
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_HEADER {
        return None;
    }
    let mut field =
        |name: &str| -> Option<i64> { lines.next()?.strip_prefix(name)?.strip_prefix(' ')?.parse().ok() };
    let checkpoint = Checkpoint { gaps_below: field("gaps_below")?, first_dirty: field("first_dirty")? };
    lines.next().is_none().then_some(checkpoint)
}

/// A file of a log directory that takes part in a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwapFile {
    Cleaned,
    /// `true` for the data file, `false` for an index.
    Swap {
        data: bool,
    },
    Deleted,
}

/// Parses `<20 digits>.{log,index,timeindex}{.cleaned,.swap,.deleted}`.
fn parse_swap_name(name: &str) -> Option<(i64, SwapFile)> {
    let (rest, kind) = if let Some(rest) = name.strip_suffix(CLEANED_SUFFIX) {
        (rest, SwapFile::Cleaned)
    } else if let Some(rest) = name.strip_suffix(SWAP_SUFFIX) {
        (rest, SwapFile::Swap { data: rest.ends_with(".log") })
    } else if let Some(rest) = name.strip_suffix(DELETED_SUFFIX) {
        (rest, SwapFile::Deleted)
    } else {
        return None;
    };
    let stem = rest
        .strip_suffix(".log")
        .or_else(|| rest.strip_suffix(".index"))
        .or_else(|| rest.strip_suffix(".timeindex"))?;
    let base = segment::base_offset_of(&format!("{stem}.log"))?;
    Some((base, kind))
}

/// Finishes or discards a cleaning that a crash interrupted, before the log's segments are
/// listed (see the module docs). `index_interval_bytes` rebuilds the summary of a swap file read
/// to learn where it ends. Returns the checkpoint, its `gaps_below` raised to the end of any swap
/// finished here (the checkpoint written before the swap's commit shares the commit's directory
/// fsync, so a crash may keep the commit and lose it).
pub(crate) fn finish_interrupted_cleaning(
    dir: &Path,
    mut checkpoint: Checkpoint,
    index_interval_bytes: u32,
) -> Result<Checkpoint, LogError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(checkpoint),
        Err(error) => return Err(LogError::io("list", dir, error)),
    };
    let mut data_swaps = BTreeSet::new();
    let mut leftovers = Vec::new();
    let mut index_swaps = Vec::new();
    let mut segment_bases = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|error| LogError::io("list", dir, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == CHECKPOINT_TEMP_FILE {
            leftovers.push(dir.join(&name));
            continue;
        }
        if let Some(base) = segment::base_offset_of(&name) {
            segment_bases.insert(base);
            continue;
        }
        match parse_swap_name(&name) {
            Some((base, SwapFile::Swap { data: true })) => {
                data_swaps.insert(base);
            }
            Some((_, SwapFile::Cleaned | SwapFile::Deleted)) => leftovers.push(dir.join(&name)),
            // Index swaps are renamed with their data swap, or are leftovers of one that never
            // committed: removed below, after every data swap took its own.
            Some((_, SwapFile::Swap { data: false })) => index_swaps.push(dir.join(&name)),
            None => {}
        }
    }
    let mut changed = !leftovers.is_empty();
    for base in &data_swaps {
        let swap = SegmentPaths::with_suffix(dir, *base, SWAP_SUFFIX);
        let file = open_read(&swap.data)?;
        // Every CRC is checked; gaps are the cleaner's, anywhere in the file.
        let (summary, damage) = segment::recover(&file, *base, index_interval_bytes, i64::MAX)
            .map_err(|error| LogError::io("read", &swap.data, error))?;
        if let Some(damage) = damage {
            return Err(LogError::Corrupt {
                path: swap.data,
                position: damage.position,
                reason: damage.reason,
            });
        }
        let swap_end = summary.next_offset;
        tracing::warn!(
            dir = %dir.display(),
            base_offset = base,
            end_offset = swap_end,
            "finishing a cleaned segment's swap that a crash interrupted"
        );
        for replaced in segment_bases.range(base + 1..swap_end) {
            remove_segment_files(&SegmentPaths::new(dir, *replaced))?;
        }
        sync_dir(dir)?;
        let target = SegmentPaths::new(dir, *base);
        for (from, to) in [(&swap.offset_index, &target.offset_index), (&swap.time_index, &target.time_index)]
        {
            match fs::rename(from, to) {
                Ok(()) => {}
                // Renamed before the crash, or never written: an index that is not the swap's is
                // removed, and rebuilt from the data on open.
                Err(error) if error.kind() == io::ErrorKind::NotFound => remove_if_exists(to)?,
                Err(error) => return Err(LogError::io("rename", from, error)),
            }
        }
        fs::rename(&swap.data, &target.data).map_err(|error| LogError::io("rename", &swap.data, error))?;
        changed = true;
        checkpoint.gaps_below = checkpoint.gaps_below.max(swap_end);
    }
    changed |= !index_swaps.is_empty();
    for path in leftovers.iter().chain(&index_swaps) {
        remove_if_exists(path)?;
    }
    if changed {
        sync_dir(dir)?;
    }
    if !data_swaps.is_empty() {
        write_durably(dir, CHECKPOINT_FILE, CHECKPOINT_TEMP_FILE, &checkpoint_text(&checkpoint))?;
    }
    Ok(checkpoint)
}

fn checkpoint_text(checkpoint: &Checkpoint) -> String {
    format!(
        "{CHECKPOINT_HEADER}\ngaps_below {}\nfirst_dirty {}\n",
        checkpoint.gaps_below, checkpoint.first_dirty
    )
}

fn remove_segment_files(paths: &SegmentPaths) -> Result<(), LogError> {
    // The data file goes first: an index without its data file is cleaned up on open.
    for path in paths.all() {
        remove_if_exists(path)?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LogError::io("remove", path, error)),
    }
}

fn open_read(path: &Path) -> Result<File, LogError> {
    File::open(path).map_err(|error| LogError::io("open", path, error))
}

fn corrupt(path: &Path, offset: i64, error: batch::BatchError) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: format!("batch at offset {offset}: {error}"),
    }
}

/// Checks the CRC of a batch before the cleaner copies or re-encodes it: a new CRC must never
/// be computed over damaged bytes.
fn validate_stored(bytes: &[u8], path: &Path) -> Result<BatchHeader, LogError> {
    batch::validate_stored(bytes, BATCH_BYTES_HARD_MAX).map_err(|error| corrupt(path, -1, error))
}

fn records_of<'b>(
    bytes: &'b [u8],
    header: &BatchHeader,
    path: &Path,
) -> Result<batch::RecordViews<'b>, LogError> {
    batch::record_views(bytes).ok_or_else(|| LogError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: format!("batch at offset {}: records cannot be read", header.base_offset),
    })
}

/// Reads the whole batches of one segment file in order, through one buffer: sequential reads of
/// `IO_BUFFER_BYTES`, grown to one batch when a batch is larger.
struct BatchReader<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    buffer: Vec<u8>,
    /// The file position of `buffer[0]`.
    buffer_start: u64,
    /// Bytes of `buffer` filled, and consumed by batches returned.
    filled: usize,
    consumed: usize,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a File, path: &'a Path, end: u64) -> Self {
        BatchReader { file, path, end, buffer: Vec::new(), buffer_start: 0, filled: 0, consumed: 0 }
    }

    /// The next batch and its position in the file, or `None` at the end.
    fn next_batch(&mut self) -> Result<Option<(u64, &[u8])>, LogError> {
        let position = self.buffer_start + self.consumed as u64;
        if position >= self.end {
            return Ok(None);
        }
        self.fill(LOG_OVERHEAD)?;
        let total = batch::peek_total_bytes(&self.buffer[self.consumed..self.filled], BATCH_BYTES_HARD_MAX)
            .map_err(|error| LogError::Corrupt {
            path: self.path.to_path_buf(),
            position,
            reason: error.to_string(),
        })?;
        self.fill(total)?;
        let start = self.consumed;
        self.consumed += total;
        Ok(Some((position, &self.buffer[start..start + total])))
    }

    /// Makes at least `need` unconsumed bytes available, or reports the segment cut short.
    fn fill(&mut self, need: usize) -> Result<(), LogError> {
        if self.filled - self.consumed >= need {
            return Ok(());
        }
        let position = self.buffer_start + self.consumed as u64;
        if self.end - position < need as u64 {
            return Err(LogError::Corrupt {
                path: self.path.to_path_buf(),
                position,
                reason: format!("batch of {need} bytes runs past the end of the segment"),
            });
        }
        self.buffer.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.buffer_start = position;
        self.consumed = 0;
        // No more than the file still holds: segments are often far smaller than the buffer.
        let capacity = IO_BUFFER_BYTES.max(need).min((self.end - position) as usize);
        if self.buffer.len() < capacity {
            let mut grown = vec![0u8; capacity];
            grown[..self.filled].copy_from_slice(&self.buffer[..self.filled]);
            self.buffer = grown;
        }
        let want = ((self.end - position) as usize).min(self.buffer.len()) - self.filled;
        self.file
            .read_exact_at(&mut self.buffer[self.filled..self.filled + want], position + self.filled as u64)
            .map_err(|error| LogError::io("read", self.path, error))?;
        self.filled += want;
        Ok(())
    }
}

/// Keeps a pass's I/O under `cleaner_io_max_bytes_per_second` by sleeping once it is ahead.
#[derive(Debug)]
struct Throttle {
    bytes_per_second: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(bytes_per_second: u64) -> Self {
        Throttle { bytes_per_second, started: Instant::now(), bytes: 0 }
    }

    fn account(&mut self, bytes: u64, closing: &std::sync::atomic::AtomicBool) -> Result<(), LogError> {
        if self.bytes_per_second == u64::MAX {
            return Ok(());
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64);
        loop {
            if closing.load(Ordering::SeqCst) {
                return Err(LogError::Closed);
            }
            let elapsed = self.started.elapsed();
            if elapsed >= due {
                return Ok(());
            }
            std::thread::sleep((due - elapsed).min(THROTTLE_SLEEP_MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_text_round_trips_and_rejects_anything_else() {
        let checkpoint = Checkpoint { gaps_below: 120, first_dirty: 340 };
        let text = format!("{CHECKPOINT_HEADER}\ngaps_below 120\nfirst_dirty 340\n");
        assert_eq!(parse_checkpoint(&text), Some(checkpoint));
        for bad in [
            "",
            "tidewater-cleaner-checkpoint 2\ngaps_below 1\nfirst_dirty 2\n",
            "tidewater-cleaner-checkpoint 1\ngaps_below 1\n",
            "tidewater-cleaner-checkpoint 1\ngaps_below x\nfirst_dirty 2\n",
            "tidewater-cleaner-checkpoint 1\ngaps_below 1\nfirst_dirty 2\nextra\n",
        ] {
            assert_eq!(parse_checkpoint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn swap_file_names_parse() {
        let check = |name: &str, expected: Option<(i64, SwapFile)>| {
            assert_eq!(parse_swap_name(name), expected, "{name}")
        };
        check("00000000000000000042.log.swap", Some((42, SwapFile::Swap { data: true })));
        check("00000000000000000042.index.swap", Some((42, SwapFile::Swap { data: false })));
        check("00000000000000000042.timeindex.cleaned", Some((42, SwapFile::Cleaned)));
        check("00000000000000000042.log.deleted", Some((42, SwapFile::Deleted)));
        check("00000000000000000042.log", None);
        check("42.log.swap", None);
        check("aborted-transactions", None);
    }
}
