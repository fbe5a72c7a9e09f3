//! The cleaner's throughput beside the disk's ceiling, and produce throughput with and without a
//! cleaner running, measured in the same run: `cargo bench -p tidewater-log --bench cleaner`.
//!
//! *Cleaner throughput* is the bytes of log a forced pass goes through per second (what Kafka's
//! cleaner reports as "cleaned MB/s"): a compacted log of 16 KiB batches of 1 KiB keyed records is
//! written and closed, the filesystem settled, and one pass timed from start to its last swap,
//! every write of it fsynced. Three shapes: keys drawn at random (seeded) from a tenth of as many
//! keys as records, so about a tenth of the records are their key's latest, spread over every
//! segment with more towards the end; from half as many keys (about 43% kept); and every key
//! written once (nothing to remove: a pass reads everything and writes nothing). The
//! ceiling beside it is the disk's sequential write rate as in the throughput bench: the same
//! volume written with `write()` into one file, then one fsync. The input was just written, so it
//! is read from the page cache, as a cleaner usually finds recent segments.
//!
//! *Produce throughput* is the append rate of keyed 16 KiB batches into a compacted log with
//! 16 MiB segments, with no cleaner and with a thread cleaning that same log back to back
//! (`min_cleanable_dirty_ratio` 0, the busiest it can be; at nice 10, as the broker runs it), in
//! two loads: 8 writers under
//! `fsync = always` (group commit, the broker's default) and one writer under `fsync = never`.
//!
//! Each figure is the median of several runs; the with/without runs alternate their order.
//! `TIDEWATER_BENCH_MB` sets the volume of a cleaned log and of a produce run (default 512) and
//! `TIDEWATER_BENCH_RUNS` the runs (default 3); `TIDEWATER_BENCH_PART=clean` or `produce` runs
//! only that half. Under `cargo test --all-targets` it runs once on a
//! few MiB as a smoke test and judges no goals. Everything lives in one temporary directory under
//! the target directory and is removed at the end.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tidewater_log::batch::{encode_records, KeyValue};
use tidewater_log::{
    CleanOptions, CleanOutcome, CleanupPolicy, Clock, FsyncPolicy, Log, LogConfig, ManualClock, SystemClock,
};

use common::{env_number, median, mib, settle, write_ceiling};

mod common;

const DEFAULT_VOLUME_MB: u64 = 512;
const DEFAULT_RUNS: usize = 3;
const SMOKE_VOLUME_MB: u64 = 4;
const SMOKE_RUNS: usize = 1;
/// Value bytes of every record, and records per batch.
const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
/// Segments of the cleaned logs, and of the produce runs (small enough that the cleaner has
/// closed segments to clean within a run).
const CLEAN_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const PRODUCE_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
const SMOKE_SEGMENT_BYTES: u64 = 1024 * 1024;
/// Writers of the group-commit produce load.
const CONCURRENT_WRITERS: usize = 8;
/// Distinct keys of the produce runs: records overwrite each other, so the cleaner has work.
const PRODUCE_KEYS: usize = 4096;
/// Batches each produce writer cycles through.
const BATCHES_PER_WRITER: usize = 16;
/// The nice value of the cleaning thread, as the broker's.
const CLEANER_NICE: libc::c_int = 10;
/// How long the cleaner waits when a pass found nothing to clean.
const CLEANER_IDLE: Duration = Duration::from_millis(5);

const MEGA: f64 = 1e6;
/// Goals from issue 18.
const GOAL_CLEANER_PERCENT: f64 = 50.0;
const GOAL_PRODUCE_PERCENT: f64 = 90.0;

struct Settings {
    volume_bytes: u64,
    runs: usize,
    smoke: bool,
    clean: bool,
    produce: bool,
}

/// A cleaned-log shape: how many records there are per key. With more than one, each record's
/// key is drawn at random from `records / writes_per_key` keys.
struct Shape {
    name: &'static str,
    writes_per_key: usize,
}

const SHAPES: [Shape; 3] = [
    Shape { name: "random keys, 10 records per key", writes_per_key: 10 },
    Shape { name: "random keys, 2 records per key", writes_per_key: 2 },
    Shape { name: "unique keys", writes_per_key: 1 },
];

/// A produce load.
#[derive(Clone, Copy)]
struct Load {
    fsync: FsyncPolicy,
    writers: usize,
}

const LOADS: [Load; 2] = [
    Load { fsync: FsyncPolicy::Always, writers: CONCURRENT_WRITERS },
    Load { fsync: FsyncPolicy::Never, writers: 1 },
];

struct CleanResult {
    bytes_read: u64,
    bytes_written: u64,
    elapsed: Duration,
}

struct ProduceResult {
    bytes: u64,
    alone: Duration,
    beside_cleaner: Duration,
    /// Passes that cleaned and bytes they went through, over all runs beside the cleaner.
    passes: u64,
    cleaned_bytes: u64,
}

fn main() {
    let smoke = common::is_smoke_run();
    let (default_mb, default_runs) =
        if smoke { (SMOKE_VOLUME_MB, SMOKE_RUNS) } else { (DEFAULT_VOLUME_MB, DEFAULT_RUNS) };
    let part = std::env::var("TIDEWATER_BENCH_PART").unwrap_or_default();
    assert!(
        matches!(part.as_str(), "" | "clean" | "produce"),
        "TIDEWATER_BENCH_PART={part:?}: clean or produce"
    );
    let settings = Settings {
        volume_bytes: env_number("TIDEWATER_BENCH_MB", default_mb) * 1024 * 1024,
        runs: env_number("TIDEWATER_BENCH_RUNS", default_runs as u64) as usize,
        smoke,
        clean: part != "produce",
        produce: part != "clean",
    };
    assert!(
        settings.volume_bytes > 0 && settings.runs > 0,
        "TIDEWATER_BENCH_MB and TIDEWATER_BENCH_RUNS must be positive"
    );
    let root = tempfile::Builder::new()
        .prefix("tidewater-cleaner-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a temporary directory under the target directory");
    eprintln!(
        "tidewater-log cleaner: {} MiB per log, {} run(s), in {}",
        settings.volume_bytes >> 20,
        settings.runs,
        root.path().display()
    );
    let batch_count = (settings.volume_bytes as usize / (RECORDS_PER_BATCH * (RECORD_BYTES + 32))).max(1);
    let ceiling_batch = keyed_batch(0, 0);
    let mut ceiling_samples = Vec::new();
    let mut clean_samples: Vec<Vec<CleanResult>> = SHAPES.iter().map(|_| Vec::new()).collect();
    for run in 0..settings.runs {
        settle(root.path());
        ceiling_samples.push(write_ceiling(root.path(), &ceiling_batch, batch_count));
        if !settings.clean {
            continue;
        }
        settle(root.path());
        for (shape_idx, shape) in SHAPES.iter().enumerate() {
            let result = clean_run(
                &root.path().join(format!("clean-{run}-{shape_idx}")),
                shape,
                batch_count,
                &settings,
            );
            eprintln!(
                "  run {}/{}: clean, {}: {} read, {} written in {:.2} s",
                run + 1,
                settings.runs,
                shape.name,
                mib(result.bytes_read),
                mib(result.bytes_written),
                result.elapsed.as_secs_f64()
            );
            clean_samples[shape_idx].push(result);
        }
    }
    let produce: Vec<ProduceResult> = if settings.produce {
        LOADS.iter().map(|load| produce_runs(root.path(), *load, batch_count, &settings)).collect()
    } else {
        Vec::new()
    };
    print_report(
        &settings,
        batch_count * ceiling_batch.len(),
        median(ceiling_samples),
        clean_samples,
        &produce,
    );
}

/// A batch of `RECORDS_PER_BATCH` records, the `n`-th of them keyed `key_of(first_record + n)`.
fn batch_keyed_by(first_record: usize, key_of: impl Fn(usize) -> usize) -> Vec<u8> {
    let value = vec![b'v'; RECORD_BYTES];
    let keys: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
        .map(|index| format!("key-{:010}", key_of(first_record + index)).into_bytes())
        .collect();
    let records: Vec<KeyValue<'_>> =
        keys.iter().map(|key| (Some(key.as_slice()), Some(value.as_slice()))).collect();
    encode_records(SystemClock.now_ms(), &records, None)
}

/// A batch whose keys are `first_key` onwards, modulo `keys`.
fn keyed_batch(first_key: usize, keys: usize) -> Vec<u8> {
    batch_keyed_by(first_key, |key| if keys == 0 { key } else { key % keys })
}

/// Record `record`'s key among `keys`, at random (SplitMix64 of the record number).
fn random_key(record: usize, keys: usize) -> usize {
    let mut mixed = (record as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((mixed ^ (mixed >> 31)) % keys as u64) as usize
}

fn compacted_config(segment_bytes: u64, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes,
        fsync,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

/// Writes a compacted log of `batch_count` batches shaped by `shape`, closes every segment, and
/// times one forced pass over it.
fn clean_run(dir: &Path, shape: &Shape, batch_count: usize, settings: &Settings) -> CleanResult {
    let segment_bytes = if settings.smoke { SMOKE_SEGMENT_BYTES } else { CLEAN_SEGMENT_BYTES };
    let config = compacted_config(segment_bytes, FsyncPolicy::Never);
    let clock = ManualClock::new(SystemClock.now_ms());
    let log = Log::open(dir, config.clone(), Arc::new(clock.clone())).expect("open the log to clean");
    let records = batch_count * RECORDS_PER_BATCH;
    let keys = (records / shape.writes_per_key).max(1);
    for batch_idx in 0..batch_count {
        let first = batch_idx * RECORDS_PER_BATCH;
        let mut batch = if shape.writes_per_key == 1 {
            keyed_batch(first, 0)
        } else {
            batch_keyed_by(first, |record| random_key(record, keys))
        };
        log.append(&mut batch).expect("append");
    }
    // Close the last segment: the cleaner never touches the active one.
    clock.advance(config.segment_ms);
    log.tick().expect("roll");
    log.close().expect("close");
    drop(log);
    let log = Log::open(dir, config, Arc::new(clock)).expect("reopen");
    settle(dir);
    let started = Instant::now();
    let outcome = log.clean(&CleanOptions { force: true, ..CleanOptions::default() }).expect("clean");
    let elapsed = started.elapsed();
    let CleanOutcome::Cleaned(report) = outcome else { panic!("the pass did not clean: {outcome:?}") };
    drop(log);
    std::fs::remove_dir_all(dir).expect("remove the cleaned log");
    CleanResult { bytes_read: report.bytes_read, bytes_written: report.bytes_written, elapsed }
}

/// Produce runs of `load`, alone and beside a cleaner, alternating which goes first.
fn produce_runs(root: &Path, load: Load, batch_count: usize, settings: &Settings) -> ProduceResult {
    let mut alone = Vec::new();
    let mut beside = Vec::new();
    let (mut passes, mut cleaned_bytes) = (0, 0);
    let batch_count = batch_count / load.writers * load.writers;
    for run in 0..settings.runs {
        for with_cleaner in if run % 2 == 0 { [false, true] } else { [true, false] } {
            let dir = root.join(format!("produce-{run}-{with_cleaner}"));
            settle(root);
            let (elapsed, run_passes, run_bytes) =
                produce_run(&dir, load, batch_count, with_cleaner, settings);
            eprintln!(
                "  run {}/{}: produce fsync={}, {} writer(s), {} cleaner: {:.2} s ({run_passes} passes)",
                run + 1,
                settings.runs,
                load.fsync,
                load.writers,
                if with_cleaner { "with" } else { "no" },
                elapsed.as_secs_f64()
            );
            if with_cleaner {
                beside.push(elapsed);
                passes += run_passes;
                cleaned_bytes += run_bytes;
            } else {
                alone.push(elapsed);
            }
            std::fs::remove_dir_all(&dir).expect("remove the produce log");
        }
    }
    ProduceResult {
        bytes: (batch_count * keyed_batch(0, PRODUCE_KEYS).len()) as u64,
        alone: median(alone),
        beside_cleaner: median(beside),
        passes,
        cleaned_bytes,
    }
}

/// `load.writers` threads `append_durable` their share of `batch_count` keyed batches; the clock
/// stops once everything is durable. With `with_cleaner` a thread cleans the same log back to
/// back meanwhile. Returns the time, and the cleaner's passes and bytes.
fn produce_run(
    dir: &Path,
    load: Load,
    batch_count: usize,
    with_cleaner: bool,
    settings: &Settings,
) -> (Duration, u64, u64) {
    let segment_bytes = if settings.smoke { SMOKE_SEGMENT_BYTES } else { PRODUCE_SEGMENT_BYTES };
    let log = Arc::new(
        Log::open(dir, compacted_config(segment_bytes, load.fsync), Arc::new(SystemClock)).expect("open"),
    );
    let done = Arc::new(AtomicBool::new(false));
    let cleaner = with_cleaner.then(|| {
        let (log, done) = (log.clone(), done.clone());
        thread::spawn(move || {
            // As the broker's cleaning thread runs (`crates/broker/src/cleaner.rs`).
            // SAFETY: `gettid` has no preconditions; `setpriority` only reads its arguments.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, CLEANER_NICE) };
            let (mut passes, mut bytes) = (0u64, 0u64);
            while !done.load(Ordering::SeqCst) {
                match log.clean(&CleanOptions::default()).expect("clean beside producers") {
                    CleanOutcome::Cleaned(report) => {
                        passes += 1;
                        bytes += report.bytes_read;
                    }
                    _ => thread::sleep(CLEANER_IDLE),
                }
            }
            (passes, bytes)
        })
    });
    let start_line = Arc::new(Barrier::new(load.writers + 1));
    let per_writer = batch_count / load.writers;
    let writers: Vec<_> = (0..load.writers)
        .map(|writer| {
            let (log, start_line) = (log.clone(), start_line.clone());
            let mut batches: Vec<Vec<u8>> = (0..BATCHES_PER_WRITER)
                .map(|index| {
                    keyed_batch((writer * BATCHES_PER_WRITER + index) * RECORDS_PER_BATCH, PRODUCE_KEYS)
                })
                .collect();
            thread::spawn(move || {
                start_line.wait();
                for index in 0..per_writer {
                    log.append_durable(&mut batches[index % BATCHES_PER_WRITER]).expect("append");
                }
            })
        })
        .collect();
    start_line.wait();
    let started = Instant::now();
    for writer in writers {
        writer.join().expect("writer thread panicked");
    }
    log.flush().expect("flush");
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (passes, bytes) = cleaner.map_or((0, 0), |cleaner| cleaner.join().expect("cleaner thread panicked"));
    (elapsed, passes, bytes)
}

fn print_report(
    settings: &Settings,
    ceiling_bytes: usize,
    ceiling: Duration,
    clean_samples: Vec<Vec<CleanResult>>,
    produce: &[ProduceResult],
) {
    let ceiling_rate = ceiling_bytes as f64 / ceiling.as_secs_f64();
    println!();
    println!(
        "tidewater-log cleaner: median of {} run(s), {} CPUs; MB = 10^6 bytes; 16 KiB batches of 1 KiB keyed records",
        settings.runs,
        thread::available_parallelism().map_or(0, |count| count.get())
    );
    println!(
        "ceiling = the disk's sequential write rate: the same volume via write() into one file + one fsync"
    );
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>9} {:>13} {:>9}",
        "clean (one forced pass)", "read", "written", "MB/s", "ceiling MB/s", "% ceiling"
    );
    let mut goals: Vec<(String, String, bool)> = Vec::new();
    for (shape, samples) in SHAPES.iter().zip(clean_samples).filter(|(_, samples)| !samples.is_empty()) {
        let (read, written) = (samples[0].bytes_read, samples[0].bytes_written);
        let elapsed = median(samples.iter().map(|sample| sample.elapsed).collect());
        let rate = read as f64 / elapsed.as_secs_f64();
        let percent = 100.0 * rate / ceiling_rate;
        println!(
            "{:<34} {:>10} {:>10} {:>9.0} {:>13.0} {:>8.0}%",
            shape.name,
            mib(read),
            mib(written),
            rate / MEGA,
            ceiling_rate / MEGA,
            percent
        );
        goals.push((
            format!("cleaner >= {GOAL_CLEANER_PERCENT:.0}% of the disk ceiling, {}", shape.name),
            format!("{percent:.0}%"),
            percent >= GOAL_CLEANER_PERCENT,
        ));
    }
    println!();
    println!(
        "{:<34} {:>10} {:>12} {:>14} {:>9} {:>22}",
        "produce into a compacted log",
        "volume",
        "alone MB/s",
        "cleaner MB/s",
        "% alone",
        "cleaner passes, read"
    );
    for (load, result) in LOADS.iter().zip(produce) {
        let alone = result.bytes as f64 / result.alone.as_secs_f64();
        let beside = result.bytes as f64 / result.beside_cleaner.as_secs_f64();
        let percent = 100.0 * beside / alone;
        let label = format!("fsync={}, {} writer(s)", load.fsync, load.writers);
        println!(
            "{:<34} {:>10} {:>12.0} {:>14.0} {:>8.0}% {:>22}",
            label,
            mib(result.bytes),
            alone / MEGA,
            beside / MEGA,
            percent,
            format!("{}, {}", result.passes, mib(result.cleaned_bytes))
        );
        goals.push((
            format!("produce beside the cleaner >= {GOAL_PRODUCE_PERCENT:.0}% of alone, {label}"),
            format!("{percent:.0}%"),
            percent >= GOAL_PRODUCE_PERCENT,
        ));
    }
    println!();
    if settings.smoke {
        println!("smoke run (no --bench argument): goals not judged");
        return;
    }
    println!("{:<72} {:>8}  met", "goal", "figure");
    for (goal, figure, met) in goals {
        println!("{goal:<72} {figure:>8}  {}", if met { "yes" } else { "NO" });
    }
}
