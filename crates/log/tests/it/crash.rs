//! Crash tests: the real `tidewater-log-writer` binary is SIGKILLed at random moments, many times
//! over, and the log it leaves behind is reopened and held to what the writer promised.
//!
//! The writer prints `durable <base_offset> <thread> <seq>` after `wait_durable` returns for a
//! batch, and a batch's bytes follow from `(thread, seq)` alone. After every kill the test reopens
//! the log in this process (which runs recovery) and checks that:
//!
//! - every batch ever reported durable, in this cycle or an earlier one, is still at its offset
//!   with exactly the bytes the writer appended (base offset aside, which the log assigns);
//! - the log is gap-free: walking it from the log start, every batch begins where the previous one
//!   ended, and the walk ends at the log end offset, so nothing past a hole is exposed;
//! - `Log::verify` passes: every batch in every segment has a good CRC.
//!
//! A process kill leaves the page cache intact, so this exercises recovery (torn tails, a kill
//! in the middle of a segment roll or of recovery itself), not the power-loss guarantees of
//! fsync; those rest on `wait_durable` fsyncing before it returns.
//!
//! A second family of tests runs the writer in its compact mode: a compacted log of keyed
//! one-record batches, with a thread running cleaning passes back to back, so kills land in the
//! middle of a pass, of writing a cleaned segment, or of its swap. After every kill the log must
//! open and pass `Log::verify` (what `tidewater log verify` runs), every record in it must be one
//! the writer wrote, and no key may lose its latest record: for every key, the last write reported
//! durable must still be the latest record of that key, or be superseded by a later write, or (a
//! tombstone, or a value a later tombstone deleted) be gone with nothing older left in its place.
//!
//! The kill delays come from a seeded generator. The seed is printed; set
//! `TIDEWATER_CRASH_SEED` to replay a run.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewater_log::batch::{self, encode_batch, set_base_offset, validate, BATCH_BYTES_HARD_MAX};
use tidewater_log::{CleanupPolicy, FsyncPolicy, Log, LogConfig, SystemClock};

const WRITER: &str = env!("CARGO_BIN_EXE_tidewater-log-writer");
/// Kill cycles per test.
const KILL_CYCLES: usize = 25;
/// How long the writer runs before it is killed: drawn uniformly from this range.
const KILL_DELAY_MS_MIN: u64 = 20;
const KILL_DELAY_MS_MAX: u64 = 300;
/// Small segments, so the writer rolls many times per cycle and kills land inside rolls too.
const SEGMENT_BYTES: u64 = 4096;
/// Wall-clock budget of one test. Cycles stop early (and say so) rather than overrun it; the
/// delays above add up to about 4 s, so only a badly overloaded machine gets near it.
const TEST_BUDGET: Duration = Duration::from_secs(25);
/// Fewer cycles than this within the budget means the test did not test much: fail.
const KILL_CYCLES_MIN: usize = 5;
/// Bytes asked of each `read` while walking the log.
const WALK_READ_BYTES: usize = 1024 * 1024;

#[test]
fn sigkill_with_one_writer_loses_nothing_durable() {
    check_kill_cycles(1);
}

#[test]
fn sigkill_with_four_writers_loses_nothing_durable() {
    check_kill_cycles(4);
}

/// What the writer announced: the batch it appended as `seq` on thread `thread_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    thread_id: u32,
    seq: u64,
}

fn check_kill_cycles(n_threads: u32) {
    let seed = seed();
    println!(
        "crash test with {n_threads} writer thread(s): seed {seed} (set TIDEWATER_CRASH_SEED to replay)"
    );
    let mut rng = SplitMix64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let started = Instant::now();
    // Every offset ever reported durable, across all cycles.
    let mut durable: BTreeMap<i64, Durable> = BTreeMap::new();
    let mut cycles = 0;
    while cycles < KILL_CYCLES && started.elapsed() < TEST_BUDGET {
        let delay = Duration::from_millis(rng.in_range(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX));
        let reported = run_and_kill(&log_dir, dir.path(), n_threads, delay, cycles, &[]);
        for (base_offset, batch) in reported {
            if let Some(earlier) = durable.insert(base_offset, batch) {
                panic!(
                    "cycle {cycles}: offset {base_offset} reported durable twice, as {earlier:?} and then as \
                     {batch:?}: the log lost it in between (seed {seed})"
                );
            }
        }
        check_log(&log_dir, &durable, cycles, seed);
        cycles += 1;
    }
    println!(
        "{cycles} kill cycles, {} batches reported durable, {:.1} s",
        durable.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(cycles >= KILL_CYCLES_MIN, "only {cycles} kill cycles fit in {TEST_BUDGET:?}");
    assert!(!durable.is_empty(), "the writer never reported a durable batch in {cycles} cycles");
}

/// Runs the writer for `delay`, SIGKILLs it and returns what it reported durable before dying.
fn run_and_kill(
    log_dir: &Path,
    scratch: &Path,
    n_threads: u32,
    delay: Duration,
    cycle: usize,
    extra_args: &[&str],
) -> Vec<(i64, Durable)> {
    // stderr goes to a file, not a pipe, so a chatty writer can never block on it.
    let stderr_path = scratch.join(format!("writer-{cycle}.stderr"));
    let stderr = File::create(&stderr_path).expect("create stderr file");
    let child = Command::new(WRITER)
        .arg(log_dir)
        .arg("always")
        .arg(n_threads.to_string())
        .arg(SEGMENT_BYTES.to_string())
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn tidewater-log-writer");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let reader = spawn_reader(stdout);
    std::thread::sleep(delay);
    if let Some(status) = child.0.try_wait().expect("try_wait") {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("cycle {cycle}: the writer exited on its own with {status} before the kill: {stderr}");
    }
    child.kill_and_wait();
    // The pipe's write end died with the child, so the reader is at end of file.
    reader.join().expect("stdout reader thread")
}

/// Reads the writer's `durable` lines until its stdout closes. A line cut short by the kill (no
/// newline) is dropped; any other line that does not parse is a failure.
fn spawn_reader(stdout: ChildStdout) -> JoinHandle<Vec<(i64, Durable)>> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut reported = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n_bytes = reader.read_line(&mut line).expect("read writer stdout");
            if n_bytes == 0 || !line.ends_with('\n') {
                return reported;
            }
            reported.push(parse_durable_line(line.trim_end()));
        }
    })
}

fn parse_durable_line(line: &str) -> (i64, Durable) {
    let fields: Vec<&str> = line.split(' ').collect();
    let parsed = match fields.as_slice() {
        ["durable", base_offset, thread_id, seq] => {
            base_offset.parse().ok().zip(thread_id.parse().ok()).zip(seq.parse().ok())
        }
        _ => None,
    };
    let ((base_offset, thread_id), seq) =
        parsed.unwrap_or_else(|| panic!("unexpected line from the writer: {line:?}"));
    (base_offset, Durable { thread_id, seq })
}

/// Reopens the log (running recovery) and checks it against everything reported durable so far.
fn check_log(log_dir: &Path, durable: &BTreeMap<i64, Durable>, cycle: usize, seed: u64) {
    let context = format!("cycle {cycle}, seed {seed}");
    // The writer may have been killed before it created the directory.
    if !log_dir.exists() {
        assert!(durable.is_empty(), "{context}: the log directory is gone");
        return;
    }
    let config = LogConfig { segment_bytes: SEGMENT_BYTES, ..LogConfig::default() };
    let log = Log::open(log_dir, config, Arc::new(SystemClock))
        .unwrap_or_else(|error| panic!("{context}: reopen after kill: {error}"));
    log.verify().unwrap_or_else(|error| panic!("{context}: verify after kill: {error}"));

    // Walk every batch from the log start; each must begin where the previous one ended.
    let log_start = log.log_start_offset();
    let log_end = log.end_offset();
    assert_eq!(log_start, 0, "{context}: nothing deletes segments here");
    let mut batches: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut next_offset = log_start;
    while next_offset < log_end {
        let range = log
            .read(next_offset, WALK_READ_BYTES, i64::MAX)
            .unwrap_or_else(|error| panic!("{context}: read at {next_offset}: {error}"))
            .unwrap_or_else(|| panic!("{context}: nothing to read at {next_offset} below end {log_end}"));
        assert_eq!(range.first_offset, next_offset, "{context}: gap before offset {}", range.first_offset);
        let bytes = range.read_bytes().expect("read range bytes");
        let mut position = 0;
        while position < bytes.len() {
            let header = validate(&bytes[position..], BATCH_BYTES_HARD_MAX)
                .unwrap_or_else(|error| panic!("{context}: batch at offset {next_offset}: {error}"));
            assert_eq!(header.base_offset, next_offset, "{context}: batch out of sequence");
            batches.insert(header.base_offset, bytes[position..position + header.total_bytes()].to_vec());
            next_offset = header.next_offset();
            position += header.total_bytes();
        }
        assert_eq!(next_offset, range.next_offset, "{context}: range end disagrees with its batches");
    }
    assert_eq!(next_offset, log_end, "{context}: walk ended past the log end");

    // Every promise, old and new, is kept byte for byte.
    for (&base_offset, reported) in durable {
        let Some(stored) = batches.get(&base_offset) else {
            panic!(
                "{context}: durable batch {reported:?} at offset {base_offset} is gone (log end {log_end})"
            );
        };
        let mut expected = writer_batch(reported.thread_id, reported.seq);
        set_base_offset(&mut expected, base_offset);
        assert!(stored == &expected, "{context}: durable batch {reported:?} at offset {base_offset} changed");
    }
    // Dropped without `close`, as the writer was: the next writer recovers it again.
}

/// Must match `writer_batch` in `src/bin/tidewater-log-writer.rs` (see there for the format).
/// Drift fails the first byte comparison above; it cannot make the test pass.
fn writer_batch(thread_id: u32, seq: u64) -> Vec<u8> {
    let n_records = 1 + (seq % 3) as usize;
    let value_bytes = 16 + ((seq * 7 + u64::from(thread_id) * 13) % 100) as usize;
    let key = format!("t{thread_id}-s{seq}");
    let values: Vec<Vec<u8>> = (0..n_records as u64)
        .map(|record_idx| {
            (0..value_bytes as u64)
                .map(|byte_idx| (u64::from(thread_id) * 31 + seq * 17 + record_idx * 7 + byte_idx) as u8)
                .collect()
        })
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|value| (Some(key.as_bytes()), value.as_slice())).collect();
    encode_batch(1_700_000_000_000 + seq as i64, &records)
}

/// Kills the child when dropped, so a failing assertion never leaves a writer running.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill_and_wait(&mut self) {
        // `Child::kill` sends SIGKILL; it fails only if the child was already reaped.
        let _ = self.0.kill();
        self.0.wait().expect("wait for killed writer");
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn seed() -> u64 {
    match std::env::var("TIDEWATER_CRASH_SEED") {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("TIDEWATER_CRASH_SEED={text:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0),
    }
}

/// SplitMix64: a tiny, good-enough generator whose whole state is the seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// Uniform enough in `[low, high]` for picking delays.
    fn in_range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Killing a writer that cleans.

/// Must match `COMPACT_KEYS`, `COMPACT_TOMBSTONE_EVERY`, `COMPACT_DEDUPE_BUFFER_BYTES` and `compact_config` in
/// `src/bin/tidewater-log-writer.rs`. Drift fails the record checks below; it cannot make the
/// test pass.
const COMPACT_KEYS: u64 = 40;
const COMPACT_TOMBSTONE_EVERY: u64 = 11;
const COMPACT_DEDUPE_BUFFER_BYTES: usize = 4096;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        fsync: FsyncPolicy::Always,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 0,
        cleaner_dedupe_buffer_bytes: COMPACT_DEDUPE_BUFFER_BYTES,
        ..LogConfig::default()
    }
}

/// The one-record batch of `(run, thread, seq)`; see `compact_record` in the writer.
fn compact_record(run_id: i64, thread_id: u32, seq: u64) -> (String, Option<Vec<u8>>) {
    let key = format!("k{}", (seq * 7 + u64::from(thread_id) * 3) % COMPACT_KEYS);
    let value = (seq % COMPACT_TOMBSTONE_EVERY != COMPACT_TOMBSTONE_EVERY - 1).then(|| {
        let mut value = format!("{run_id}/{thread_id}/{seq}/").into_bytes();
        value.resize(40 + (seq % 101) as usize, b'.');
        value
    });
    (key, value)
}

/// A write of the compact mode: which run, thread and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Write {
    run_id: i64,
    thread_id: u32,
    seq: u64,
}

#[test]
fn sigkill_while_cleaning_loses_no_keys_latest_record() {
    const N_THREADS: u32 = 2;
    let seed = seed();
    println!("compaction crash test: seed {seed} (set TIDEWATER_CRASH_SEED to replay)");
    let mut rng = SplitMix64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let started = Instant::now();
    // Every write reported durable, by offset, and the last one reported per run and thread.
    let mut durable: BTreeMap<i64, Write> = BTreeMap::new();
    let mut last_reported: HashMap<(i64, u32), u64> = HashMap::new();
    let mut runs = Vec::new();
    let mut cycles = 0;
    let mut cleaned_away = 0;
    while cycles < KILL_CYCLES && started.elapsed() < TEST_BUDGET {
        // The writer's run id is the log end offset it finds, which this process saw last.
        let run_id = if log_dir.exists() {
            Log::open(&log_dir, compact_config(), Arc::new(SystemClock)).expect("open").end_offset()
        } else {
            0
        };
        runs.push(run_id);
        let delay = Duration::from_millis(rng.in_range(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX));
        for (offset, reported) in run_and_kill(&log_dir, dir.path(), N_THREADS, delay, cycles, &["compact"]) {
            let write = Write { run_id, thread_id: reported.thread_id, seq: reported.seq };
            assert!(durable.insert(offset, write).is_none(), "offset {offset} reported twice (seed {seed})");
            let last = last_reported.entry((run_id, reported.thread_id)).or_insert(0);
            *last = (*last).max(reported.seq);
        }
        cleaned_away =
            check_compacted_log(&log_dir, &durable, &last_reported, &runs, N_THREADS, cycles, seed);
        cycles += 1;
    }
    println!(
        "{cycles} kill cycles, {} writes reported durable, {cleaned_away} of them cleaned away, {:.1} s",
        durable.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(cycles >= KILL_CYCLES_MIN, "only {cycles} kill cycles fit in {TEST_BUDGET:?}");
    assert!(cleaned_away > 0, "the cleaner never removed a record in {cycles} cycles");
}

/// Reopens the compacted log, verifies it and holds it to every key's latest durable write.
/// Returns how many durable writes are no longer in the log.
fn check_compacted_log(
    log_dir: &Path,
    durable: &BTreeMap<i64, Write>,
    last_reported: &HashMap<(i64, u32), u64>,
    runs: &[i64],
    n_threads: u32,
    cycle: usize,
    seed: u64,
) -> usize {
    let context = format!("cycle {cycle}, seed {seed}");
    if !log_dir.exists() {
        assert!(durable.is_empty(), "{context}: the log directory is gone");
        return 0;
    }
    let log = Log::open(log_dir, compact_config(), Arc::new(SystemClock))
        .unwrap_or_else(|error| panic!("{context}: reopen after kill: {error}"));
    log.verify().unwrap_or_else(|error| panic!("{context}: verify after kill: {error}"));
    // Every record, by offset: its key and value.
    let mut records: BTreeMap<i64, (String, Option<Vec<u8>>)> = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while let Some(range) = log
        .read(offset, WALK_READ_BYTES, i64::MAX)
        .unwrap_or_else(|error| panic!("{context}: read at {offset}: {error}"))
    {
        let bytes = range.read_bytes().expect("read range bytes");
        let mut position = 0;
        while position < bytes.len() {
            let header = batch::validate_stored(&bytes[position..], BATCH_BYTES_HARD_MAX)
                .unwrap_or_else(|error| panic!("{context}: batch in the range at {offset}: {error}"));
            let whole = &bytes[position..position + header.total_bytes()];
            for record in batch::records(whole).unwrap_or_else(|| panic!("{context}: records at {offset}")) {
                let key = String::from_utf8(record.key.expect("every record has a key").to_vec())
                    .expect("utf-8 key");
                records.insert(record.offset, (key, record.value.map(<[u8]>::to_vec)));
            }
            position += header.total_bytes();
        }
        offset = range.next_offset;
    }
    assert_eq!(offset, log.end_offset(), "{context}: reads ended before the log end");
    // Every record is one the writer wrote: its value names the write, which gives the key.
    for (offset, (key, value)) in &records {
        if let Some(write) = durable.get(offset) {
            assert_eq!(
                (key, value),
                (
                    &compact_record(write.run_id, write.thread_id, write.seq).0,
                    &compact_record(write.run_id, write.thread_id, write.seq).1
                ),
                "{context}: record at {offset}"
            );
        } else if let Some(value) = value {
            let text = String::from_utf8_lossy(value);
            let fields: Vec<&str> = text.split('/').collect();
            let write = match fields.as_slice() {
                [run, thread, seq, _] => Write {
                    run_id: run.parse().expect("run"),
                    thread_id: thread.parse().expect("thread"),
                    seq: seq.parse().expect("seq"),
                },
                _ => panic!("{context}: record at {offset} has a value no write had: {text:?}"),
            };
            let expected = compact_record(write.run_id, write.thread_id, write.seq);
            assert_eq!(
                (key, Some(value)),
                (&expected.0, expected.1.as_ref()),
                "{context}: record at {offset}"
            );
        }
    }
    // The latest record of each key in the log, and the last durable write of each key.
    let mut latest_in_log: HashMap<&str, i64> = HashMap::new();
    for (offset, (key, _)) in &records {
        latest_in_log.insert(key, *offset);
    }
    let mut last_durable: HashMap<String, (i64, Write)> = HashMap::new();
    for (offset, write) in durable {
        last_durable.insert(compact_record(write.run_id, write.thread_id, write.seq).0, (*offset, *write));
    }
    // Writes that may have happened unreported: each thread's one after its last reported, in
    // every run (a thread appends its next record only after reporting the last).
    let unreported_tombstones: Vec<String> = runs
        .iter()
        .flat_map(|run_id| (0..n_threads).map(move |thread_id| (*run_id, thread_id)))
        .map(|(run_id, thread_id)| {
            let next = last_reported.get(&(run_id, thread_id)).map_or(0, |last| last + 1);
            compact_record(run_id, thread_id, next)
        })
        .filter(|(_, value)| value.is_none())
        .map(|(key, _)| key)
        .collect();
    for (key, (offset, write)) in &last_durable {
        let is_tombstone = compact_record(write.run_id, write.thread_id, write.seq).1.is_none();
        match latest_in_log.get(key.as_str()) {
            Some(latest) => assert!(
                latest >= offset,
                "{context}: the latest record of {key} is at {latest}, older than its last durable write at {offset}"
            ),
            None => assert!(
                is_tombstone || unreported_tombstones.contains(key),
                "{context}: {key} is gone, but its last durable write at {offset} was a value"
            ),
        }
    }
    durable.keys().filter(|offset| !records.contains_key(offset)).count()
}
