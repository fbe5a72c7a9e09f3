//! One segment: a data file of verbatim v2 batches plus its sparse indexes.
//!
//! Files are named after the segment's base offset, zero-padded to 20 digits as in Kafka, so a
//! directory listing sorts in offset order: `00000000000000000000.log`, `.index`, `.timeindex`.
//!
//! This module holds the two walks over a data file. `recover` reads every byte and checks every
//! CRC: it is what runs on the active segment after a crash, and what `Log::verify` runs on all.
//! Offsets run on without gaps from batch to batch, except below the point the cleaner has
//! compacted (`gaps_allowed_below`, see `cleaner.rs`), where removed records leave gaps.
//! `HeaderWalk` reads only batch headers with positioned reads, trusting the CRCs checked before:
//! it is how reads and timestamp lookups get from an index entry to the batch they want.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, BATCH_BYTES_HARD_MAX, BATCH_HEADER_BYTES, LOG_OVERHEAD, NO_TIMESTAMP};
use crate::index::{OffsetEntry, SegmentIndex, TimeEntry};

/// Read buffer for the recovery walk: large enough that a sequential scan runs at disk speed.
const RECOVERY_READ_BUFFER_BYTES: usize = 1024 * 1024;

/// The three files of the segment starting at `base_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentPaths {
    pub(crate) data: PathBuf,
    pub(crate) offset_index: PathBuf,
    pub(crate) time_index: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(dir: &Path, base_offset: i64) -> Self {
        Self::with_suffix(dir, base_offset, "")
    }

    /// The same three names with `suffix` appended (`.cleaned`, `.swap`, `.deleted`): the names a
    /// segment has at each step of the cleaner's swap.
    pub(crate) fn with_suffix(dir: &Path, base_offset: i64, suffix: &str) -> Self {
        let stem = format!("{base_offset:020}");
        SegmentPaths {
            data: dir.join(format!("{stem}.log{suffix}")),
            offset_index: dir.join(format!("{stem}.index{suffix}")),
            time_index: dir.join(format!("{stem}.timeindex{suffix}")),
        }
    }

    pub(crate) fn all(&self) -> [&Path; 3] {
        [&self.data, &self.offset_index, &self.time_index]
    }
}

/// Parses a data file name back into its base offset; `None` for any other file.
pub(crate) fn base_offset_of(file_name: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What a segment's batches add up to: its size, offsets, timestamps and index. Kept up to date
/// by every append to the active segment and rebuilt by `recover`; the same `observe` does both,
/// so an index rebuilt after a crash is the one the appends would have built.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSummary {
    pub(crate) base_offset: i64,
    /// Bytes of whole batches; the file holds exactly these.
    pub(crate) size: u64,
    /// The offset after the last batch (`base_offset` while empty).
    pub(crate) next_offset: i64,
    /// Highest batch max timestamp seen, or `NO_TIMESTAMP`.
    pub(crate) max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`.
    pub(crate) offset_of_max_timestamp: i64,
    pub(crate) index: SegmentIndex,
    index_interval_bytes: u32,
    bytes_since_index_entry: u64,
}

impl SegmentSummary {
    pub(crate) fn empty(base_offset: i64, index_interval_bytes: u32) -> Self {
        SegmentSummary {
            base_offset,
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            index: SegmentIndex::default(),
            index_interval_bytes,
            bytes_since_index_entry: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Accounts for one batch written at `self.size`. Adds a sparse index entry when
    /// `index_interval_bytes` have passed since the last one, as Kafka does.
    pub(crate) fn observe(&mut self, header: &BatchHeader) {
        let position = self.size;
        // Offsets strictly increase: a batch starts at or past where the last one ended (past it
        // only where the cleaner removed batches) and holds at least one offset.
        debug_assert!(
            header.base_offset >= self.next_offset,
            "batch at {} overlaps offset {}",
            header.base_offset,
            self.next_offset - 1
        );
        debug_assert!(header.next_offset() > header.base_offset);
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index_entry >= u64::from(self.index_interval_bytes) {
            let entry =
                OffsetEntry { relative_offset: self.relative(header.base_offset), position: position as u32 };
            // An index entry points inside this segment, after the entry before it: a lookup
            // binary-searches the entries and then reads from the position.
            debug_assert!(
                position <= u64::from(u32::MAX),
                "segment position {position} does not fit an index entry"
            );
            debug_assert!(self.index.offsets.last().is_none_or(|last| {
                last.relative_offset < entry.relative_offset && last.position < entry.position
            }));
            self.index.offsets.push(entry);
            self.push_time_entry();
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes() as u64;
        self.size += header.total_bytes() as u64;
        self.next_offset = header.next_offset();
    }

    /// Adds a time index entry for the newest max timestamp if the index does not have it yet.
    /// Called for each offset entry and once more when the segment is closed, so a closed
    /// segment's last time entry is its max timestamp.
    pub(crate) fn push_time_entry(&mut self) {
        let newest = self.index.times.last().map_or(NO_TIMESTAMP, |entry| entry.timestamp);
        if self.max_timestamp > newest {
            let relative_offset = self.relative(self.offset_of_max_timestamp);
            self.index.times.push(TimeEntry { timestamp: self.max_timestamp, relative_offset });
        }
    }

    pub(crate) fn relative(&self, offset: i64) -> u32 {
        debug_assert!(offset >= self.base_offset && offset - self.base_offset <= i64::from(u32::MAX));
        (offset - self.base_offset) as u32
    }
}

/// Where and why a recovery walk stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) position: u64,
    pub(crate) reason: String,
}

/// Reads the whole data file from the start, checking every batch's length, magic, CRC and
/// offset continuity, and rebuilds the summary and index of the valid prefix. Stops at the first
/// batch that is torn or corrupt and reports where: the caller decides whether to truncate there
/// (the active segment after a crash) or refuse (a closed segment). A batch may start past where
/// the previous one ended only if it starts at or below `gaps_allowed_below`: the cleaner removed
/// the records in between (pass `i64::MIN` where nothing was ever cleaned).
pub(crate) fn recover(
    file: &File,
    base_offset: i64,
    index_interval_bytes: u32,
    gaps_allowed_below: i64,
) -> std::io::Result<(SegmentSummary, Option<Damage>)> {
    let file_size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(RECOVERY_READ_BUFFER_BYTES, file);
    let mut summary = SegmentSummary::empty(base_offset, index_interval_bytes);
    let mut batch_bytes = Vec::new();
    loop {
        let position = summary.size;
        if position == file_size {
            return Ok((summary, None));
        }
        let damage = |reason: String| Ok((summary.clone(), Some(Damage { position, reason })));
        let remaining = file_size - position;
        if remaining < LOG_OVERHEAD as u64 {
            return damage(format!("torn batch: {remaining} trailing bytes"));
        }
        batch_bytes.resize(LOG_OVERHEAD, 0);
        reader.read_exact(&mut batch_bytes)?;
        let total = match batch::peek_total_bytes(&batch_bytes, BATCH_BYTES_HARD_MAX) {
            Ok(total) => total,
            Err(error) => return damage(error.to_string()),
        };
        if total as u64 > remaining {
            return damage(format!("torn batch: length says {total} bytes, {remaining} remain"));
        }
        batch_bytes.resize(total, 0);
        reader.read_exact(&mut batch_bytes[LOG_OVERHEAD..])?;
        let header = match batch::validate_stored(&batch_bytes, BATCH_BYTES_HARD_MAX) {
            Ok(header) => header,
            Err(error) => return damage(error.to_string()),
        };
        // The log assigns offsets with no gaps, so each batch starts exactly where the last one
        // ended, unless the cleaner removed what was in between. The base offset is outside the
        // CRC: this is its only check, and an overlap, or a gap where nothing was cleaned, means
        // it was damaged.
        let follows = header.base_offset == summary.next_offset
            || (header.base_offset > summary.next_offset && header.base_offset <= gaps_allowed_below);
        if !follows || header.next_offset() - base_offset > i64::from(u32::MAX) {
            return damage(format!(
                "batch base offset {} does not follow offset {}",
                header.base_offset,
                summary.next_offset - 1
            ));
        }
        summary.observe(&header);
    }
}

/// Walks batch headers of one data file with positioned reads, from a known batch boundary up to
/// `end` (the bytes that were whole when the walk began). It checks lengths and magic, not CRCs.
#[derive(Debug)]
pub(crate) struct HeaderWalk<'a> {
    pub(crate) file: &'a File,
    pub(crate) path: &'a Path,
    pub(crate) position: u64,
    pub(crate) end: u64,
}

impl HeaderWalk<'_> {
    /// The next batch's header and position, or `None` at `end`. An error means the bytes are not
    /// a batch where one must be: corruption the caller reports, never skips.
    pub(crate) fn next_batch(&mut self) -> Result<Option<(u64, BatchHeader)>, crate::LogError> {
        if self.position >= self.end {
            return Ok(None);
        }
        let corrupt = |position: u64, reason: String| crate::LogError::Corrupt {
            path: self.path.to_path_buf(),
            position,
            reason,
        };
        let mut bytes = [0u8; BATCH_HEADER_BYTES];
        if self.end - self.position < BATCH_HEADER_BYTES as u64 {
            return Err(corrupt(self.position, "batch header runs past the end of the segment".into()));
        }
        self.file.read_exact_at(&mut bytes, self.position).map_err(|error| match error.kind() {
            ErrorKind::UnexpectedEof => corrupt(self.position, "segment shorter than expected".into()),
            _ => crate::LogError::io("read", self.path, error),
        })?;
        let header = batch::parse_header(&bytes, BATCH_BYTES_HARD_MAX)
            .map_err(|error| corrupt(self.position, error.to_string()))?;
        let position = self.position;
        if position + header.total_bytes() as u64 > self.end {
            return Err(corrupt(position, "batch runs past the end of the segment".into()));
        }
        self.position += header.total_bytes() as u64;
        Ok(Some((position, header)))
    }
}
