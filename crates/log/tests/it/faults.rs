//! Fault tests: a full disk, and a segment roll that fails half way. ENOSPC must be a clear,
//! recoverable error (`is_storage_full`) that leaves no partial bytes behind and loses nothing
//! that was acknowledged, whether it hits the data write of an append or the index writes of a
//! segment roll.
//!
//! Each disk-full test mounts its own small tmpfs, which fills up quickly and exactly: tmpfs
//! hands out whole pages, so writing a filler file a page at a time until ENOSPC leaves not one
//! byte free.
//! Mounting needs root or CAP_SYS_ADMIN (these tests run as root locally and in CI); without it
//! they fail loudly rather than pass without testing anything. A failed fsync is covered in
//! `basics.rs` through `Log::inject_fsync_failure`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tidewater_log::batch::encode_batch;
use tidewater_log::{Log, LogConfig, LogError, ManualClock};

/// Size of each test's tmpfs: big enough for a few hundred small batches, small enough to fill
/// in milliseconds.
const TMPFS_SIZE: &str = "512k";
const TMPFS_BYTES: u64 = 512 * 1024;
/// tmpfs allocates in pages; filling with page-sized writes ends exactly at zero free bytes.
const PAGE_BYTES: usize = 4096;
/// Room taken by a filler file before the log starts, so deleting it frees space again.
const FILLER_BYTES: usize = 64 * 1024;
/// No append loop here may run longer than this many batches: the disk must fill well before.
const APPENDS_MAX: usize = 2_000;

/// A tmpfs mounted at a fresh temporary directory for one test, unmounted on drop. Declare it
/// before the log so the log (and its open files) is dropped first.
struct Tmpfs {
    mount_point: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let mount_point = tempfile::tempdir().expect("tempdir for the mount point");
        let path = mount_point.path();
        let needs = "this test mounts a tmpfs and needs root or CAP_SYS_ADMIN (it runs as root in CI)";
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|error| panic!("could not run `mount`: {error}; {needs}"));
        assert!(
            output.status.success(),
            "`mount -t tmpfs` at {} failed ({}): {}; {needs}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs { mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.mount_point.path();
        let unmounted = Command::new("umount").arg(path).status().is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds a file open (a failing test can leave one behind): detach
            // the mount anyway so no test leaves a mount behind.
            let lazy =
                Command::new("umount").arg("-l").arg(path).status().is_ok_and(|status| status.success());
            if !lazy {
                eprintln!("could not unmount the tmpfs at {}", path.display());
            }
        }
    }
}

fn is_enospc(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}

/// Writes `bytes` of filler to a new file at `path`.
fn write_filler(path: &Path, bytes: usize) {
    fs::write(path, vec![0xf1u8; bytes]).expect("write filler file");
}

/// Appends whole pages to the file at `path` until the file system is full, leaving no free
/// page; returns how many bytes that took.
fn fill_to_the_brim(path: &Path) -> u64 {
    let mut file = OpenOptions::new().create(true).append(true).open(path).expect("open filler file");
    let page = [0xf2u8; PAGE_BYTES];
    let mut written = 0u64;
    while written <= TMPFS_BYTES {
        match file.write(&page) {
            Ok(n_bytes) if n_bytes == PAGE_BYTES => written += PAGE_BYTES as u64,
            Ok(_) => break,
            Err(error) if is_enospc(&error) => break,
            Err(error) => panic!("fill {}: {error}", path.display()),
        }
    }
    assert!(written <= TMPFS_BYTES, "the tmpfs took more than its size; is it really mounted?");
    written
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config, Arc::new(ManualClock::new(1_000))).expect("open log")
}

/// Batch number `index` of these tests: one record of `value_bytes` bytes, all from `index`.
fn batch(index: usize, value_bytes: usize) -> Vec<u8> {
    let value: Vec<u8> = (0..value_bytes).map(|byte_idx| (index * 7 + byte_idx) as u8).collect();
    encode_batch(1_000 + index as i64, &[(None, value.as_slice())])
}

/// Bytes of all segment data files in `dir`: must equal `size_bytes`, or a failed append left
/// partial bytes behind.
fn data_file_bytes(dir: &Path) -> u64 {
    let entries = fs::read_dir(dir).expect("list log dir");
    entries
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .map(|path| fs::metadata(&path).expect("stat segment").len())
        .sum()
}

/// What a failed append must leave as it found: offsets, sizes, segments, and files on disk.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    end_offset: i64,
    size_bytes: u64,
    data_file_bytes: u64,
    segment_count: usize,
}

fn snapshot(log: &Log) -> Snapshot {
    Snapshot {
        end_offset: log.end_offset(),
        size_bytes: log.size_bytes(),
        data_file_bytes: data_file_bytes(log.dir()),
        segment_count: log.segment_count(),
    }
}

/// Every acknowledged batch (bytes as stored, base offset included) reads back identically, the
/// log holds nothing else, and every CRC checks out.
fn check_acked(log: &Log, acked: &[Vec<u8>]) {
    let mut next_offset = 0;
    for (index, expected) in acked.iter().enumerate() {
        let range = log.read(next_offset, 1, i64::MAX).expect("read").expect("an acknowledged batch");
        assert_eq!(range.first_offset, next_offset, "acknowledged batch {index}");
        assert!(range.read_bytes().expect("read bytes") == *expected, "acknowledged batch {index} differs");
        next_offset = range.next_offset;
    }
    assert_eq!(log.end_offset(), next_offset, "the log holds more than was acknowledged");
    let report = log.verify().expect("verify");
    assert_eq!(report.bytes, log.size_bytes());
}

/// Appends `batch(index, value_bytes)` for rising `index` until one fails; returns that error.
fn append_until_error(log: &Log, acked: &mut Vec<Vec<u8>>, value_bytes: usize) -> LogError {
    for _ in 0..APPENDS_MAX {
        let mut records = batch(acked.len(), value_bytes);
        let before = snapshot(log);
        match log.append_durable(&mut records) {
            Ok(_) => acked.push(records),
            Err(error) => {
                assert_eq!(snapshot(log), before, "the failed append changed the log: {error}");
                return error;
            }
        }
    }
    panic!("{APPENDS_MAX} appends of {value_bytes}-byte values fit in a {TMPFS_SIZE} tmpfs");
}

#[test]
fn a_full_disk_fails_the_append_cleanly_and_loses_nothing() {
    let tmpfs = Tmpfs::mount();
    let filler = tmpfs.path().join("filler");
    write_filler(&filler, FILLER_BYTES);
    let log_dir = tmpfs.path().join("log");
    // Segments larger than the disk: the data write itself runs out of space, part way through
    // a batch that straddles a page, so the cut-back of a partial write is exercised.
    let log = open(&log_dir, LogConfig::default());
    let mut acked = Vec::new();
    let error = append_until_error(&log, &mut acked, 1_000);
    assert!(error.is_storage_full(), "expected a storage-full error, got: {error}");
    assert!(error.to_string().contains("No space left on device"), "unclear error: {error}");
    assert!(acked.len() > 100, "only {} batches fit before the disk filled", acked.len());
    check_acked(&log, &acked);

    // Free space: the same append now succeeds, and so do more.
    fs::remove_file(&filler).expect("delete filler");
    for _ in 0..10 {
        let mut records = batch(acked.len(), 1_000);
        log.append_durable(&mut records).expect("append after freeing space");
        acked.push(records);
    }
    check_acked(&log, &acked);

    // Nothing acknowledged is lost across a reopen (unclean: the log is just dropped).
    drop(log);
    let log = open(&log_dir, LogConfig::default());
    check_acked(&log, &acked);
}

#[test]
fn a_full_disk_during_a_segment_roll_fails_the_append_cleanly_and_loses_nothing() {
    let tmpfs = Tmpfs::mount();
    let log_dir = tmpfs.path().join("log");
    // A segment holds a few batches and its offset index has entries, so closing one writes two
    // non-empty index files, each needing a page of its own.
    let config = LogConfig { segment_bytes: 1024, index_interval_bytes: 256, ..LogConfig::default() };
    let value_bytes = 150;
    let batch_bytes = batch(0, value_bytes).len();
    let batches_per_segment = 1024 / batch_bytes;
    assert!(batches_per_segment >= 3, "batches of {batch_bytes} bytes leave no room for index entries");
    let log = open(&log_dir, config.clone());
    let mut acked = Vec::new();
    // Roll twice, then fill the active segment so that the next append must roll.
    while log.segment_count() < 3 {
        let mut records = batch(acked.len(), value_bytes);
        log.append_durable(&mut records).expect("append");
        acked.push(records);
    }
    for _ in 1..batches_per_segment {
        let mut records = batch(acked.len(), value_bytes);
        log.append_durable(&mut records).expect("append");
        acked.push(records);
    }
    assert_eq!(log.segment_count(), 3, "the active segment took fewer batches than expected");

    let filler = tmpfs.path().join("filler");
    let filled = fill_to_the_brim(&filler);
    assert!(filled > 0, "the tmpfs was already full");
    let error = append_until_error(&log, &mut acked, value_bytes);
    assert!(error.is_storage_full(), "expected a storage-full error, got: {error}");
    // The first append after filling must be the one that failed, and in the roll: writing the
    // closing segment's index, not data.
    assert_eq!(acked.len(), 3 * batches_per_segment, "appends succeeded on the full disk");
    let failed_path = match &error {
        LogError::Io { path, .. } => path.clone(),
        other => panic!("expected an I/O error, got: {other}"),
    };
    assert!(is_index_file(&failed_path), "ENOSPC hit {} rather than the roll's index", failed_path.display());
    check_acked(&log, &acked);

    // A crash now (dropping without close) and a reopen on the still full disk loses nothing.
    drop(log);
    let log = open(&log_dir, config.clone());
    assert_eq!(log.segment_count(), 3);
    check_acked(&log, &acked);

    // With space again the roll goes through and appends continue in the new segment.
    fs::remove_file(&filler).expect("delete filler");
    for _ in 0..batches_per_segment * 2 {
        let mut records = batch(acked.len(), value_bytes);
        log.append_durable(&mut records).expect("append after freeing space");
        acked.push(records);
    }
    assert!(log.segment_count() >= 5, "only {} segments", log.segment_count());
    check_acked(&log, &acked);
    drop(log);
    let log = open(&log_dir, config);
    check_acked(&log, &acked);
}

fn is_index_file(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "index" || extension == "timeindex")
}

/// Regression: a roll that failed after creating the next segment's file (its directory fsync
/// failed) left the file behind and the log writable. Appends small enough to skip the roll then
/// went on into the old segment past the new file's base offset, and the next open refused the
/// log as corrupt. A stray file at the next base offset is the same state without needing a
/// failing disk; the log must now refuse writes until reopened, and reopen cleanly.
#[test]
fn a_roll_that_leaves_the_next_segment_file_behind_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { segment_bytes: 1024, ..LogConfig::default() };
    let log = open(dir.path(), config.clone());
    let (big_value_bytes, small_value_bytes) = (300, 1);
    let (big_bytes, small_bytes) = (batch(0, big_value_bytes).len(), batch(0, small_value_bytes).len());
    let big_per_segment = 1024 / big_bytes;
    assert!(big_per_segment * big_bytes + small_bytes <= 1024, "a small batch must fit without a roll");
    let mut acked = Vec::new();
    for _ in 0..big_per_segment {
        let mut records = batch(acked.len(), big_value_bytes);
        log.append_durable(&mut records).expect("append");
        acked.push(records);
    }
    let stray = dir.path().join(format!("{:020}.log", log.end_offset()));
    fs::File::create(&stray).expect("create stray segment file");

    let error = log.append_durable(&mut batch(acked.len(), big_value_bytes)).expect_err("the roll fails");
    assert!(matches!(error, LogError::Io { .. }), "{error}");
    let error = log.append_durable(&mut batch(acked.len(), small_value_bytes)).expect_err("poisoned");
    assert!(
        matches!(error, LogError::Poisoned { .. }),
        "a small append went on past the stray file: {error}"
    );
    check_acked(&log, &acked);

    drop(log);
    let log = open(dir.path(), config);
    assert_eq!(log.segment_count(), 2, "the stray file is the new, empty active segment");
    check_acked(&log, &acked);
    let mut records = batch(acked.len(), big_value_bytes);
    log.append_durable(&mut records).expect("append after reopen");
    acked.push(records);
    check_acked(&log, &acked);
}
