//! Append, read, roll, lookup and retention through the public API, on a real directory.

use std::sync::Arc;

use tidewater_log::batch::encode_batch;
use tidewater_log::{FsyncPolicy, Log, LogConfig, LogError, ManualClock};

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 256, ..LogConfig::default() }
}

fn batch_of(timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|value| (None, *value)).collect();
    encode_batch(timestamp, &records)
}

fn open(dir: &std::path::Path, config: LogConfig, clock: &ManualClock) -> Log {
    Log::open(dir, config, Arc::new(clock.clone())).expect("open log")
}

#[test]
fn append_assigns_consecutive_offsets_and_read_returns_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), small_config(), &clock);
    let mut first = batch_of(1_000, &[b"a", b"b", b"c"]);
    let mut second = batch_of(1_001, &[b"d"]);
    let appended = log.append_durable(&mut first).expect("append");
    assert_eq!((appended.base_offset, appended.last_offset, appended.next_offset), (0, 2, 3));
    let appended = log.append_durable(&mut second).expect("append");
    assert_eq!((appended.base_offset, appended.last_offset), (3, 3));
    assert_eq!(log.durable_offset(), 4);

    let range = log.read(0, 1 << 20, i64::MAX).expect("read").expect("some");
    let mut expected = first.clone();
    expected.extend_from_slice(&second);
    assert_eq!(range.read_bytes().expect("bytes"), expected);
    assert_eq!((range.first_offset, range.next_offset), (0, 4));

    // An offset inside a batch returns that whole batch.
    let range = log.read(1, 1 << 20, i64::MAX).expect("read").expect("some");
    assert_eq!(range.first_offset, 0);
    // The upper bound (high watermark) hides batches that end at or past it.
    let range = log.read(0, 1 << 20, 3).expect("read").expect("some");
    assert_eq!(range.next_offset, 3);
    assert!(log.read(4, 1 << 20, i64::MAX).expect("read").is_none());
    assert!(matches!(log.read(5, 1, i64::MAX), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn byte_budget_returns_whole_batches_and_at_least_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), LogConfig::default(), &clock);
    let mut sizes = Vec::new();
    for index in 0..5u8 {
        let mut batch = batch_of(1_000, &[&[index; 100]]);
        sizes.push(batch.len() as u64);
        log.append(&mut batch).expect("append");
    }
    let range = log.read(0, 1, i64::MAX).expect("read").expect("some");
    assert_eq!(range.len, sizes[0], "one whole batch even over budget");
    let range = log.read(0, (sizes[0] * 2 + 10) as usize, i64::MAX).expect("read").expect("some");
    assert_eq!(range.len, sizes[0] * 2);
    assert_eq!(range.next_offset, 2);
}

#[test]
fn segments_roll_by_size_and_reads_cross_them_through_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), small_config(), &clock);
    let mut batches = Vec::new();
    for index in 0..100u32 {
        let mut batch =
            batch_of(1_000 + i64::from(index), &[&index.to_be_bytes(), b"payload-payload-payload"]);
        let appended = log.append_durable(&mut batch).expect("append");
        assert_eq!(appended.base_offset, i64::from(index) * 2);
        batches.push(batch);
    }
    assert!(log.segment_count() > 3, "expected rolls, got {} segments", log.segment_count());
    for (index, batch) in batches.iter().enumerate() {
        let offset = index as i64 * 2 + 1;
        let range = log.read(offset, 1, i64::MAX).expect("read").expect("some");
        assert_eq!(&range.read_bytes().expect("bytes"), batch, "batch {index}");
    }
    // Everything survives a clean close and reopen, and again an unclean one.
    log.close().expect("close");
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.end_offset(), 200);
    let range = log.read(101, 1, i64::MAX).expect("read").expect("some");
    assert_eq!(range.read_bytes().expect("bytes"), batches[50]);
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.end_offset(), 200);
    assert_eq!(log.verify().expect("verify").segments, log.segment_count());
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let config = LogConfig { segment_ms: 60_000, ..LogConfig::default() };
    let log = open(dir.path(), config, &clock);
    log.append(&mut batch_of(1_000, &[b"a"])).expect("append");
    clock.advance(59_999);
    log.tick().expect("tick");
    assert_eq!(log.segment_count(), 1);
    clock.advance(1);
    log.tick().expect("tick");
    assert_eq!(log.segment_count(), 2);
    // An empty active segment does not roll however old it is.
    clock.advance(120_000);
    log.tick().expect("tick");
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), small_config(), &clock);
    for index in 0..60i64 {
        log.append(&mut batch_of(10_000 + index * 10, &[b"x", b"y"])).expect("append");
    }
    assert!(log.segment_count() > 1);
    let check = |timestamp: i64, expected: Option<(i64, i64)>| {
        assert_eq!(log.offset_for_timestamp(timestamp).expect("lookup"), expected, "timestamp {timestamp}");
    };
    check(0, Some((0, 10_000)));
    check(10_000, Some((0, 10_000)));
    check(10_001, Some((2, 10_010)));
    check(10_250, Some((50, 10_250)));
    check(10_590, Some((118, 10_590)));
    check(10_591, None);
    assert_eq!(log.max_timestamp(), Some((10_590, 118)));
}

#[test]
fn retention_deletes_old_closed_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(100_000);
    let config = LogConfig { retention_ms: 10_000, ..small_config() };
    let log = open(dir.path(), config, &clock);
    for index in 0..60i64 {
        log.append(&mut batch_of(100_000 + index * 1_000, &[b"payload-payload-payload-payload"]))
            .expect("append");
    }
    let segments_before = log.segment_count();
    assert!(segments_before > 2);
    clock.set(100_000 + 59 * 1_000);
    let deleted = log.apply_retention().expect("retention");
    assert!(deleted > 0 && deleted < segments_before, "deleted {deleted} of {segments_before}");
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(log.read(0, 1, i64::MAX), Err(LogError::OffsetOutOfRange { .. })));
    let range = log.read(start, 1, i64::MAX).expect("read").expect("some");
    assert_eq!(range.first_offset, start);
    // The surviving first segment holds a record within retention.
    drop(log);
    let log = open(dir.path(), LogConfig { retention_ms: 10_000, ..small_config() }, &clock);
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn retention_by_size_keeps_the_log_under_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let config = LogConfig { retention_bytes: 8192, retention_ms: -1, ..small_config() };
    let log = open(dir.path(), config, &clock);
    for _ in 0..100 {
        log.append(&mut batch_of(1_000, &[&[1u8; 200]])).expect("append");
    }
    log.apply_retention().expect("retention");
    assert!(log.size_bytes() <= 8192 + 1024, "size {}", log.size_bytes());
    assert!(log.log_start_offset() > 0);
}

#[test]
fn a_bad_batch_is_rejected_whole_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), LogConfig::default(), &clock);
    let good = batch_of(1_000, &[b"good"]);
    let mut corrupt = batch_of(1_000, &[b"bad"]);
    let last = corrupt.len() - 2;
    corrupt[last] ^= 1;
    let mut both = good.clone();
    both.extend_from_slice(&corrupt);
    let error = log.append(&mut both).expect_err("corrupt second batch");
    assert!(matches!(error, LogError::InvalidBatch { position, .. } if position == good.len()), "{error}");
    assert_eq!(log.end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    assert!(matches!(log.append(&mut []), Err(LogError::EmptyAppend)));

    let config = LogConfig { max_batch_bytes: 100, ..LogConfig::default() };
    let small = tempfile::tempdir().expect("tempdir");
    let log = open(small.path(), config, &clock);
    let mut big = batch_of(1_000, &[&[0u8; 200]]);
    assert!(matches!(log.append(&mut big), Err(LogError::BatchTooLarge { limit: 100, .. })));
}

#[test]
fn a_failed_fsync_poisons_the_log_until_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), LogConfig::default(), &clock);
    log.append_durable(&mut batch_of(1_000, &[b"kept"])).expect("append");
    let appended = log.append(&mut batch_of(1_000, &[b"not durable"])).expect("append");
    log.inject_fsync_failure();
    let error = log.wait_durable(appended.next_offset).expect_err("fsync fails");
    assert!(matches!(error, LogError::Poisoned { .. }), "{error}");
    assert_eq!(log.durable_offset(), 1, "never reported durable");
    assert!(matches!(log.append(&mut batch_of(1_000, &[b"x"])), Err(LogError::Poisoned { .. })));
    assert!(matches!(log.flush(), Err(LogError::Poisoned { .. })));
    drop(log);
    let log = open(dir.path(), LogConfig::default(), &clock);
    log.append_durable(&mut batch_of(1_000, &[b"after reopen"])).expect("append after reopen");
}

#[test]
fn concurrent_writers_share_fsyncs_and_all_become_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log =
        Arc::new(open(dir.path(), LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() }, &clock));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let log = log.clone();
            std::thread::spawn(move || {
                for index in 0..50u8 {
                    let appended =
                        log.append_durable(&mut batch_of(1_000, &[&[writer, index]])).expect("append");
                    assert!(log.durable_offset() >= appended.next_offset);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    assert_eq!(log.end_offset(), 400);
    assert_eq!(log.durable_offset(), 400);
}

#[test]
fn retention_by_size_deletes_a_segment_exactly_when_the_rest_still_reaches_the_limit() {
    // Kafka deletes the oldest segment while `size - segment.size >= retention.bytes`.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let batch = batch_of(1_000, &[&[7u8; 1_000]]);
    let batch_bytes = batch.len() as i64;
    // One batch per segment: each append after the first rolls.
    let config = |retention_bytes| LogConfig {
        segment_bytes: batch.len() as u64 + 1,
        retention_bytes,
        retention_ms: -1,
        ..small_config()
    };
    let log = open(dir.path(), config(-1), &clock);
    for _ in 0..3 {
        log.append(&mut batch.clone()).expect("append");
    }
    assert_eq!(log.segment_count(), 3);
    // Without the oldest segment the log holds 2 batches: at the limit, so it goes.
    log.set_config(config(2 * batch_bytes)).expect("config");
    assert_eq!(log.apply_retention().expect("retention"), 1);
    // Now without the oldest it would hold 1 batch, below the limit: it stays.
    assert_eq!(log.apply_retention().expect("retention"), 0);
    log.set_config(config(batch_bytes + 1)).expect("config");
    assert_eq!(log.apply_retention().expect("retention"), 0);
    assert_eq!(log.log_start_offset(), 1);
}

#[test]
fn for_each_batch_visits_every_batch_from_an_offset_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let log = open(dir.path(), small_config(), &clock);
    for index in 0..40u8 {
        log.append(&mut batch_of(1_000, &[&[index; 40], &[index; 40]])).expect("append");
    }
    assert!(log.segment_count() > 2);
    let mut bases = Vec::new();
    log.for_each_batch(11, |header| bases.push(header.base_offset)).expect("walk");
    // Offset 11 is inside the batch at 10; every batch from there on, in order.
    assert_eq!(bases, (5..40).map(|index| index * 2).collect::<Vec<i64>>());
    assert!(log.recent_segments_start(0) > log.recent_segments_start(1));
    assert_eq!(log.recent_segments_start(1000), 0);
}

/// DeleteRecords: the log start offset moves up to the offset asked for, reads below it are out
/// of range, segments wholly below it go (whatever the cleanup policy), and all of it survives
/// a crash. Offsets past the log end are refused; ones below the start change nothing.
#[test]
fn delete_records_moves_the_log_start_and_drops_the_segments_below_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000);
    let config = LogConfig { retention_ms: -1, ..small_config() };
    let log = open(dir.path(), config.clone(), &clock);
    for index in 0..40u8 {
        log.append_durable(&mut batch_of(1_000, &[&[index; 100], &[index; 100]])).expect("append");
    }
    let segments = log.segment_count();
    assert!(segments > 4, "{segments} segments");
    let check = |log: &Log, start: i64| {
        assert_eq!(log.log_start_offset(), start);
        assert!(matches!(log.read(start - 1, 1, i64::MAX), Err(LogError::OffsetOutOfRange { .. })));
        let range = log.read(start, 1, i64::MAX).expect("read").expect("a batch");
        // The batch holding the start offset is served whole, as Kafka serves it.
        assert!(range.first_offset <= start && start < range.next_offset);
    };
    assert_eq!(log.delete_records_before(31).expect("delete"), 31);
    check(&log, 31);
    assert!(log.segment_count() < segments, "segments below the start are gone");
    assert_eq!(log.delete_records_before(10).expect("below the start"), 31);
    assert!(matches!(log.delete_records_before(81), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);
    let log = open(dir.path(), config.clone(), &clock);
    check(&log, 31);
    log.verify().expect("verify");
    // Up to the end: every closed segment goes, and the log goes on from there.
    assert_eq!(log.delete_records_before(80).expect("delete"), 80);
    assert_eq!(log.segment_count(), 1);
    log.append(&mut batch_of(1_000, &[b"next"])).expect("append");
    check(&log, 80);
    drop(log);
    let log = open(dir.path(), config, &clock);
    assert_eq!((log.log_start_offset(), log.end_offset()), (80, 81));
}
