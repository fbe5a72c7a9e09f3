//! Snapshots of one partition's producer and transaction state (Kafka's `.snapshot` files), so
//! that a restart reads a snapshot plus the batches after it instead of the whole log, and still
//! finds a transaction that is open however far back it began.
//!
//! A snapshot at offset `o` holds the state after every batch below `o`: each producer's epoch,
//! last write time and last five batches (`producers.rs`), and the first offset of each
//! transaction open at `o`. It is written when the partition's active segment has rolled since
//! the last one (and at a clean shutdown), at the log end offset of that moment, once every
//! offset below it is durable, so a crash can never leave a snapshot ahead of the log. Files are
//! named `{o:020}.snapshot` in the partition's directory; the newest `SNAPSHOTS_KEPT` stay.
//!
//! # Crash safety
//!
//! A snapshot is written to `{o:020}.snapshot.tmp`, fsynced, renamed to its name and the directory
//! fsynced: a crash leaves the old snapshots and perhaps a temporary file, which the next open
//! removes. Recovery takes the newest snapshot at or below the log end that decodes (magic,
//! version, CRC-32C, every count bounded by the bytes that hold it); one ahead of the log (only a
//! damaged disk or a log cut back as corrupt could leave that) or one that does not decode is
//! reported and removed, and the next older one is tried. With none, the whole log is read, as a
//! data directory written before snapshots existed is once.
//!
//! # Format (big-endian)
//!
//! ```text
//! magic "TWPS", version u16, offset i64, producer count u32, open transaction count u32,
//! per producer: id i64, epoch i16, last write ms i64, batch count u8,
//!               per batch: first sequence i32, last sequence i32, base offset i64, last offset i64
//! per open transaction: producer id i64, first offset i64
//! CRC-32C u32 of every byte before it
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::producers::{ProducerRecord, WrittenBatch, BATCHES_PER_PRODUCER};

const MAGIC: &[u8; 4] = b"TWPS";
const VERSION: u16 = 1;
/// The file suffixes of a snapshot and of one being written.
const SUFFIX: &str = ".snapshot";
const TEMP_SUFFIX: &str = ".snapshot.tmp";
/// Snapshots kept per partition: the newest, and one to fall back on.
pub(crate) const SNAPSHOTS_KEPT: usize = 2;
/// The largest snapshot file read (checked before allocating): a million producers with five
/// batches each fit.
pub(crate) const SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Bytes before the entries: magic, version, offset and the two counts.
const HEADER_BYTES: usize = 4 + 2 + 8 + 4 + 4;
/// Bytes of one producer without its batches, of one batch, of one open transaction, of the CRC.
const PRODUCER_BYTES: usize = 8 + 2 + 8 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8;
const OPEN_BYTES: usize = 8 + 8;
const CRC_BYTES: usize = 4;

/// A partition's producer and transaction state after every batch below `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerSnapshot {
    pub(crate) offset: i64,
    pub(crate) producers: Vec<ProducerRecord>,
    /// (producer id, first offset) of every transaction open at `offset`.
    pub(crate) open_transactions: Vec<(i64, i64)>,
}

/// Why snapshot bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("{have} bytes, fewer than a snapshot's {need}")]
    Short { need: usize, have: usize },
    #[error("CRC-32C {stored:#010x} does not match the contents' {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("not a producer snapshot (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("snapshot version {0} is not {VERSION}")]
    Version(u16),
    #[error("at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: String },
}

/// Encodes `snapshot` (pure).
pub(crate) fn encode(snapshot: &ProducerSnapshot) -> Vec<u8> {
    let n_batches: usize = snapshot.producers.iter().map(|producer| producer.batches.len()).sum();
    let mut bytes = Vec::with_capacity(
        HEADER_BYTES
            + snapshot.producers.len() * PRODUCER_BYTES
            + n_batches * BATCH_BYTES
            + snapshot.open_transactions.len() * OPEN_BYTES
            + CRC_BYTES,
    );
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.extend_from_slice(&snapshot.offset.to_be_bytes());
    bytes.extend_from_slice(&(snapshot.producers.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&(snapshot.open_transactions.len() as u32).to_be_bytes());
    for producer in &snapshot.producers {
        debug_assert!(producer.batches.len() <= BATCHES_PER_PRODUCER);
        bytes.extend_from_slice(&producer.producer_id.to_be_bytes());
        bytes.extend_from_slice(&producer.epoch.to_be_bytes());
        bytes.extend_from_slice(&producer.last_write_ms.to_be_bytes());
        bytes.push(producer.batches.len() as u8);
        for batch in &producer.batches {
            bytes.extend_from_slice(&batch.first_sequence.to_be_bytes());
            bytes.extend_from_slice(&batch.last_sequence.to_be_bytes());
            bytes.extend_from_slice(&batch.base_offset.to_be_bytes());
            bytes.extend_from_slice(&batch.last_offset.to_be_bytes());
        }
    }
    for (producer_id, first_offset) in &snapshot.open_transactions {
        bytes.extend_from_slice(&producer_id.to_be_bytes());
        bytes.extend_from_slice(&first_offset.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// Decodes snapshot bytes, checking the CRC before anything else is read and every count against
/// the bytes left before allocating for it (pure).
pub(crate) fn decode(bytes: &[u8]) -> Result<ProducerSnapshot, SnapshotError> {
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(SnapshotError::Short { need: HEADER_BYTES + CRC_BYTES, have: bytes.len() });
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let mut reader = Reader { bytes: body, position: 0 };
    let magic: [u8; 4] = [reader.u8()?, reader.u8()?, reader.u8()?, reader.u8()?];
    if &magic != MAGIC {
        return Err(SnapshotError::Magic(magic));
    }
    let version = reader.u16()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let offset = reader.i64()?;
    let n_producers = reader.u32()? as usize;
    let n_open = reader.u32()? as usize;
    let smallest =
        n_producers.saturating_mul(PRODUCER_BYTES).saturating_add(n_open.saturating_mul(OPEN_BYTES));
    if smallest > reader.left() {
        return Err(reader.invalid(format!(
            "{n_producers} producers and {n_open} open transactions need at least {smallest} bytes, {} are left",
            reader.left()
        )));
    }
    let mut producers = Vec::with_capacity(n_producers);
    for _ in 0..n_producers {
        let producer_id = reader.i64()?;
        let epoch = reader.i16()?;
        let last_write_ms = reader.i64()?;
        let n_batches = usize::from(reader.u8()?);
        if n_batches > BATCHES_PER_PRODUCER {
            return Err(reader.invalid(format!(
                "producer {producer_id} has {n_batches} batches, more than {BATCHES_PER_PRODUCER}"
            )));
        }
        let mut batches = Vec::with_capacity(n_batches);
        for _ in 0..n_batches {
            let batch = WrittenBatch {
                first_sequence: reader.i32()?,
                last_sequence: reader.i32()?,
                base_offset: reader.i64()?,
                last_offset: reader.i64()?,
            };
            if batch.base_offset > batch.last_offset || batch.last_offset >= offset {
                return Err(reader.invalid(format!(
                    "producer {producer_id}'s batch [{}, {}] is not below the snapshot's offset {offset}",
                    batch.base_offset, batch.last_offset
                )));
            }
            batches.push(batch);
        }
        producers.push(ProducerRecord { producer_id, epoch, last_write_ms, batches });
    }
    let mut open_transactions = Vec::with_capacity(n_open);
    for _ in 0..n_open {
        let producer_id = reader.i64()?;
        let first_offset = reader.i64()?;
        if first_offset >= offset {
            return Err(reader.invalid(format!(
                "producer {producer_id}'s open transaction starts at {first_offset}, not below {offset}"
            )));
        }
        open_transactions.push((producer_id, first_offset));
    }
    if reader.left() != 0 {
        return Err(reader.invalid(format!("{} bytes after the last entry", reader.left())));
    }
    Ok(ProducerSnapshot { offset, producers, open_transactions })
}

/// A cursor over snapshot bytes whose reads fail, naming the position, past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn invalid(&self, reason: String) -> SnapshotError {
        SnapshotError::Invalid { offset: self.position, reason }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let Some(bytes) = self.bytes.get(self.position..self.position + N) else {
            return Err(self.invalid(format!("{N} bytes needed, {} left", self.left())));
        };
        self.position += N;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

/// The file name of a snapshot at `offset`.
fn file_name(offset: i64) -> String {
    format!("{offset:020}{SUFFIX}")
}

/// The offset a snapshot file is named after, if `name` is one.
fn offset_of(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The snapshots in `dir`, newest first, removing temporary files a crash left.
fn list(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(TEMP_SUFFIX) {
            tracing::info!(path = %entry.path().display(), "removing a producer snapshot a crash left half written");
            remove_if_exists(&entry.path())?;
        } else if let Some(offset) = offset_of(&name) {
            snapshots.push((offset, entry.path()));
        }
    }
    // Newest first.
    snapshots.sort_unstable_by_key(|(offset, _)| std::cmp::Reverse(*offset));
    Ok(snapshots)
}

/// Writes `snapshot` into `dir` crash-safely (write the temporary file, fsync, rename, fsync the
/// directory), then removes all but the newest `SNAPSHOTS_KEPT`. The caller makes sure every
/// offset below `snapshot.offset` is durable first.
pub(crate) fn write(dir: &Path, snapshot: &ProducerSnapshot) -> io::Result<()> {
    let name = file_name(snapshot.offset);
    let temp = dir.join(format!("{name}.tmp"));
    let target = dir.join(&name);
    {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&encode(snapshot))?;
        file.sync_all()?;
    }
    fs::rename(&temp, &target)?;
    fs::File::open(dir)?.sync_all()?;
    for (_, stale) in list(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        remove_if_exists(&stale)?;
    }
    Ok(())
}

/// The newest snapshot in `dir` at or below `log_end_offset` that reads and decodes; snapshots
/// past the log end and unreadable ones are reported and removed (see the module docs).
pub(crate) fn load_latest(dir: &Path, log_end_offset: i64) -> io::Result<Option<ProducerSnapshot>> {
    for (offset, path) in list(dir)? {
        let outcome = if offset > log_end_offset {
            Err(format!("it is past the log end offset {log_end_offset}"))
        } else {
            read(&path).and_then(|snapshot| {
                if snapshot.offset == offset {
                    Ok(snapshot)
                } else {
                    Err(format!("it holds offset {} but is named after {offset}", snapshot.offset))
                }
            })
        };
        match outcome {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring and removing a producer snapshot");
                remove_if_exists(&path)?;
            }
        }
    }
    Ok(None)
}

/// Reads and decodes one snapshot file, bounded by `SNAPSHOT_BYTES_MAX`.
fn read(path: &Path) -> Result<ProducerSnapshot, String> {
    let length = fs::metadata(path).map_err(|error| error.to_string())?.len();
    if length > SNAPSHOT_BYTES_MAX {
        return Err(format!("it is {length} bytes, more than {SNAPSHOT_BYTES_MAX}"));
    }
    let bytes = fs::read(path).map_err(|error| error.to_string())?;
    decode(&bytes).map_err(|error| error.to_string())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot(offset: i64, n_producers: i64) -> ProducerSnapshot {
        ProducerSnapshot {
            offset,
            producers: (0..n_producers)
                .map(|producer_id| ProducerRecord {
                    producer_id,
                    epoch: (producer_id % 3) as i16,
                    last_write_ms: 1_000 + producer_id,
                    batches: (0..(producer_id % 6))
                        .map(|index| WrittenBatch {
                            first_sequence: index as i32 * 2,
                            last_sequence: index as i32 * 2 + 1,
                            base_offset: index * 2,
                            last_offset: index * 2 + 1,
                        })
                        .collect(),
                })
                .collect(),
            open_transactions: vec![(1, 3), (4, 0)],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_named() {
        let original = snapshot(100, 12);
        let bytes = encode(&original);
        assert_eq!(decode(&bytes), Ok(original));
        assert_eq!(
            decode(&bytes[..10]),
            Err(SnapshotError::Short { need: HEADER_BYTES + CRC_BYTES, have: 10 })
        );
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(decode(&flipped), Err(SnapshotError::Checksum { .. })));
        // A well-formed file whose counts promise more than it holds (the CRC is right: a bug
        // or a hostile file, not a torn write).
        let mut lying = bytes[..bytes.len() - CRC_BYTES].to_vec();
        lying[14..18].copy_from_slice(&u32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&lying);
        lying.extend_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(decode(&lying), Err(SnapshotError::Invalid { offset: 22, .. })),
            "{:?}",
            decode(&lying)
        );
    }

    #[test]
    fn entries_must_lie_below_the_snapshots_offset() {
        let mut ahead = snapshot(10, 0);
        ahead.open_transactions = vec![(1, 10)];
        assert!(matches!(decode(&encode(&ahead)), Err(SnapshotError::Invalid { .. })));
    }

    #[test]
    fn files_are_written_whole_the_newest_kept_and_leftovers_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        for offset in [10, 20, 30] {
            write(dir.path(), &snapshot(offset, 3)).expect("write");
        }
        let names = |dir: &Path| {
            let mut names: Vec<String> = fs::read_dir(dir)
                .expect("list")
                .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(dir.path()), [file_name(20), file_name(30)]);
        // A crash mid-write leaves a temporary file; a damaged newest snapshot falls back to the
        // one before it; one past the log end (cut back after a crash) is not used.
        fs::write(dir.path().join(format!("{}.tmp", file_name(40))), b"half").expect("write");
        assert_eq!(load_latest(dir.path(), 25).expect("load").map(|s| s.offset), Some(20));
        assert_eq!(names(dir.path()), [file_name(20)]);
        write(dir.path(), &snapshot(30, 3)).expect("write");
        fs::write(dir.path().join(file_name(30)), b"garbage").expect("damage");
        assert_eq!(load_latest(dir.path(), 100).expect("load").map(|s| s.offset), Some(20));
        fs::write(dir.path().join(file_name(50)), encode(&snapshot(20, 1))).expect("misnamed");
        assert_eq!(load_latest(dir.path(), 100).expect("load").map(|s| s.offset), Some(20));
        assert_eq!(names(dir.path()), [file_name(20)]);
    }

    proptest! {
        /// Any bytes decode to a snapshot or an error, never a panic or an allocation larger
        /// than the input promises; any single flipped bit of a real snapshot is an error.
        #[test]
        fn damaged_snapshots_are_refused(n_producers in 0i64..20, flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let bytes = encode(&snapshot(1_000, n_producers));
            let mut damaged = bytes.clone();
            let at = flip.index(damaged.len());
            damaged[at] ^= 1 << bit;
            prop_assert!(decode(&damaged).is_err());
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
