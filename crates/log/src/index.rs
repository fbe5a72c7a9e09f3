//! Sparse offset and time indexes of one segment.
//!
//! The offset index maps a batch's base offset (relative to the segment's base) to its byte
//! position, one entry per `index_interval_bytes` of batches, so a read finds its batch with a
//! binary search and a short walk instead of scanning the segment. The time index maps the
//! segment's highest timestamp so far to the offset that first reached it, so a lookup by time
//! skips every batch that is certainly older.
//!
//! The active segment keeps its indexes in memory only; they are written to disk when the segment
//! is closed (rolled, or the log shut down cleanly). After a crash recovery rebuilds them from the
//! data file, so the indexes are never on the durable path of an append.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::LogError;

/// One offset index entry on disk: relative offset (u32) and byte position (u32), big-endian.
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
/// One time index entry on disk: timestamp (i64) and relative offset (u32), big-endian.
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) relative_offset: u32,
}

/// Both indexes of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// The byte position to start walking from to find `relative_offset`: the position of the
    /// last indexed batch whose base offset is at or below it (0 when none is).
    pub(crate) fn position_for(&self, relative_offset: u32) -> u32 {
        let after = self.offsets.partition_point(|entry| entry.relative_offset <= relative_offset);
        if after == 0 {
            0
        } else {
            self.offsets[after - 1].position
        }
    }

    /// The relative offset to start walking from to find the first batch whose max timestamp is
    /// at or above `timestamp`: every batch before the returned offset is certainly older.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> u32 {
        let after = self.times.partition_point(|entry| entry.timestamp < timestamp);
        if after == 0 {
            0
        } else {
            self.times[after - 1].relative_offset
        }
    }

    /// Writes both index files, replacing what was there, and fsyncs them.
    pub(crate) fn write(&self, offset_path: &Path, time_path: &Path) -> Result<(), LogError> {
        self.write_with(offset_path, time_path, true)
    }

    /// `write`, fsyncing the files only with `sync`. The cleaner's indexes skip it: a crash
    /// can leave such a file short or empty, which `load` finds inconsistent (then the index is
    /// rebuilt) or harmless (fewer entries: reads walk further).
    pub(crate) fn write_with(
        &self,
        offset_path: &Path,
        time_path: &Path,
        sync: bool,
    ) -> Result<(), LogError> {
        let mut bytes = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for entry in &self.offsets {
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&entry.position.to_be_bytes());
        }
        write_file(offset_path, &bytes, sync)?;
        let mut bytes = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for entry in &self.times {
            bytes.extend_from_slice(&entry.timestamp.to_be_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        write_file(time_path, &bytes, sync)
    }

    /// Loads both index files of a segment whose data file has `segment_size` bytes and whose
    /// offsets end before `relative_end`. Returns `None` (rebuild it) when a file is missing or
    /// its entries are not consistent with the segment: out of order, or pointing past its end.
    pub(crate) fn load(
        offset_path: &Path,
        time_path: &Path,
        segment_size: u64,
        relative_end: u64,
    ) -> Option<SegmentIndex> {
        let offset_bytes = fs::read(offset_path).ok()?;
        let time_bytes = fs::read(time_path).ok()?;
        if offset_bytes.len() % OFFSET_ENTRY_BYTES != 0 || time_bytes.len() % TIME_ENTRY_BYTES != 0 {
            return None;
        }
        let offsets: Vec<OffsetEntry> = offset_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|chunk| OffsetEntry {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            })
            .collect();
        let times: Vec<TimeEntry> = time_bytes
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|chunk| {
                let mut timestamp = [0u8; 8];
                timestamp.copy_from_slice(&chunk[0..8]);
                TimeEntry {
                    timestamp: i64::from_be_bytes(timestamp),
                    relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
                }
            })
            .collect();
        let offsets_ordered = offsets.windows(2).all(|pair| {
            pair[0].relative_offset < pair[1].relative_offset && pair[0].position < pair[1].position
        });
        let offsets_in_range = offsets.iter().all(|entry| {
            u64::from(entry.position) < segment_size && u64::from(entry.relative_offset) < relative_end
        });
        let times_ordered = times.windows(2).all(|pair| {
            pair[0].timestamp <= pair[1].timestamp && pair[0].relative_offset <= pair[1].relative_offset
        });
        let times_in_range = times.iter().all(|entry| u64::from(entry.relative_offset) < relative_end);
        if offsets_ordered && offsets_in_range && times_ordered && times_in_range {
            Some(SegmentIndex { offsets, times })
        } else {
            None
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<(), LogError> {
    let mut file = fs::File::create(path).map_err(|error| LogError::io("create index", path, error))?;
    file.write_all(bytes).map_err(|error| LogError::io("write index", path, error))?;
    if sync {
        file.sync_all().map_err(|error| LogError::io("fsync index", path, error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> SegmentIndex {
        SegmentIndex {
            offsets: vec![
                OffsetEntry { relative_offset: 0, position: 0 },
                OffsetEntry { relative_offset: 10, position: 4096 },
                OffsetEntry { relative_offset: 20, position: 8192 },
            ],
            times: vec![
                TimeEntry { timestamp: 100, relative_offset: 0 },
                TimeEntry { timestamp: 200, relative_offset: 10 },
                TimeEntry { timestamp: 300, relative_offset: 20 },
            ],
        }
    }

    #[test]
    fn position_lookup_picks_the_last_entry_at_or_below() {
        let index = index();
        let check = |relative_offset, expected| assert_eq!(index.position_for(relative_offset), expected);
        check(0, 0);
        check(9, 0);
        check(10, 4096);
        check(25, 8192);
        assert_eq!(SegmentIndex::default().position_for(5), 0);
    }

    #[test]
    fn time_lookup_skips_only_strictly_older_entries() {
        let index = index();
        let check = |timestamp, expected| assert_eq!(index.offset_for_timestamp(timestamp), expected);
        check(50, 0);
        check(100, 0);
        check(150, 0);
        check(200, 0);
        check(201, 10);
        check(1000, 20);
    }

    #[test]
    fn write_then_load_round_trips_and_rejects_inconsistent_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (offset_path, time_path) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
        let index = index();
        index.write(&offset_path, &time_path).expect("write");
        assert_eq!(SegmentIndex::load(&offset_path, &time_path, 10_000, 30), Some(index.clone()));
        // An entry pointing past the end of the segment means the index is stale.
        assert_eq!(SegmentIndex::load(&offset_path, &time_path, 8192, 30), None);
        // A torn entry.
        fs::write(&offset_path, [0u8; 9]).expect("write");
        assert_eq!(SegmentIndex::load(&offset_path, &time_path, 10_000, 30), None);
        fs::remove_file(&offset_path).expect("remove");
        assert_eq!(SegmentIndex::load(&offset_path, &time_path, 10_000, 30), None);
    }
}
