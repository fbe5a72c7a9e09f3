//! The log's append and read throughput, each beside the ceiling this machine reaches without the
//! log, measured in the same run: `cargo bench -p tidewater-log --bench throughput`.
//!
//! The write ceiling is the disk's sequential-write rate as a program without a log sees it: the
//! same batch bytes written with plain `write()` calls into one file in the same directory, then
//! one fsync. Every append run ends the same way (an fsync covering the last byte), so a figure
//! and its ceiling time the same work: getting those bytes durable. Under `fsync = always` the
//! ceiling is out of reach by design, since every batch waits for an fsync whose cost hardly
//! depends on its size; the `bound` rows measure what the disk allows there: N batches written,
//! one `fdatasync`, repeated, which is the best a group commit of N waiting batches can do.
//!
//! The read ceiling is `pread` of the segment files in 1 MiB chunks from the page cache; the log's
//! figure is a sequential consumer using `Log::read` with a 1 MiB budget and one reused buffer.
//!
//! Each figure is the median of several runs; runs go round-robin over the cases, so a disk that
//! drifts during the bench moves every case alike, and each figure is measured right beside what
//! it is compared with, in alternating order, after an untimed warm-up write.
//! `TIDEWATER_BENCH_MB` sets the bytes per append run (default 1024; the reads go over the same
//! volume) and `TIDEWATER_BENCH_RUNS` the runs (default 4). Under `cargo test --all-targets` (no
//! `--bench` argument) it runs once on a few MiB as a smoke test and judges no goals. Everything
//! it writes lives in one temporary directory under the target directory (so on the same
//! filesystem throughout) and is removed at the end.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tidewater_log::batch::encode_batch;
use tidewater_log::{Clock, FsyncPolicy, Log, LogConfig, SystemClock, DEFAULT_MAX_BATCH_BYTES};

use common::{env_number, median, mib, settle, write_ceiling};

mod common;

/// Bytes per append run unless `TIDEWATER_BENCH_MB` says otherwise.
const DEFAULT_VOLUME_MB: u64 = 1024;
/// Even, so each case of a pair goes first equally often.
const DEFAULT_RUNS: usize = 4;
/// Volume and runs of the smoke run under `cargo test`.
const SMOKE_VOLUME_MB: u64 = 4;
const SMOKE_RUNS: usize = 1;
/// Value bytes of every record.
const RECORD_BYTES: usize = 1024;
/// Writers of the group-commit case, sharing one `Arc<Log>`.
const CONCURRENT_WRITERS: usize = 8;
/// Cases that fsync per batch (or per group of batches) are slow by design, so they write this
/// fraction of the volume to keep the bench within minutes: at the default volume that is still
/// thousands of fsyncs of 16 KiB batches, a steady rate.
const SINGLE_SYNC_VOLUME_DIVISOR: usize = 16;
const GROUP_SYNC_VOLUME_DIVISOR: usize = 4;
/// The `max_bytes` a consumer passes to `Log::read`, and the chunk of the read ceiling.
const READ_BUDGET_BYTES: usize = 1024 * 1024;

const MEGA: f64 = 1e6;
const GIGA: f64 = 1e9;

/// Goals from the issue that asked for this bench, for this 2-core machine.
const GOAL_NEVER_PERCENT: f64 = 90.0;
const GOAL_ALWAYS_CONCURRENT_PERCENT: f64 = 60.0;
const GOAL_READ_GB_PER_S: f64 = 2.0;

/// A batch size under test: `records` records of `RECORD_BYTES` each.
struct Shape {
    name: &'static str,
    records: usize,
}

const SHAPES: [Shape; 2] = [Shape { name: "16 KiB", records: 16 }, Shape { name: "1 MiB", records: 1024 }];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    /// `write()` of the same bytes into a plain file, one fsync at the end.
    Ceiling,
    /// `batches_per_fsync` batches written with `write()`, then `fdatasync`, over and over: the
    /// most any group commit can reach when that many batches wait for each fsync. With fsync
    /// cost nearly flat in size, this, not the ceiling, is what limits small synchronous batches.
    FsyncBound {
        batches_per_fsync: usize,
    },
    Append {
        fsync: FsyncPolicy,
        writers: usize,
    },
}

/// In pairs: each figure beside what it is compared with. Within a pair the order alternates from
/// run to run, so whatever the case before leaves behind (dirty journal, a disk still busy) does
/// not always fall on the same side.
const CASES: [Case; 6] = [
    Case::Ceiling,
    Case::Append { fsync: FsyncPolicy::Never, writers: 1 },
    Case::FsyncBound { batches_per_fsync: 1 },
    Case::Append { fsync: FsyncPolicy::Always, writers: 1 },
    Case::FsyncBound { batches_per_fsync: CONCURRENT_WRITERS },
    Case::Append { fsync: FsyncPolicy::Always, writers: CONCURRENT_WRITERS },
];

impl Case {
    fn label(self) -> String {
        match self {
            Case::Ceiling => "ceiling: write() + 1 fsync".to_string(),
            Case::FsyncBound { batches_per_fsync } => {
                format!("bound: {batches_per_fsync} write() + fdatasync")
            }
            Case::Append { fsync, writers } => {
                let who = if writers == 1 { "1 writer".to_string() } else { format!("{writers} writers") };
                format!("append fsync={fsync}, {who}")
            }
        }
    }

    /// Batches this case writes per run, out of the shape's full count.
    fn batch_count(self, full_count: usize) -> usize {
        let divisor = match self {
            Case::Ceiling | Case::Append { fsync: FsyncPolicy::Never, .. } => 1,
            Case::Append { writers: 1, .. } | Case::FsyncBound { batches_per_fsync: 1 } => {
                SINGLE_SYNC_VOLUME_DIVISOR
            }
            Case::Append { .. } | Case::FsyncBound { .. } => GROUP_SYNC_VOLUME_DIVISOR,
        };
        // Still whole multiples of the writer count.
        (full_count / divisor / CONCURRENT_WRITERS * CONCURRENT_WRITERS).max(CONCURRENT_WRITERS)
    }
}

struct Settings {
    volume_bytes: u64,
    runs: usize,
    /// Run under `cargo test`: tiny, and no goals judged.
    smoke: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let smoke = common::is_smoke_run();
        let (default_mb, default_runs) =
            if smoke { (SMOKE_VOLUME_MB, SMOKE_RUNS) } else { (DEFAULT_VOLUME_MB, DEFAULT_RUNS) };
        let volume_mb = env_number("TIDEWATER_BENCH_MB", default_mb);
        let runs = env_number("TIDEWATER_BENCH_RUNS", default_runs as u64) as usize;
        assert!(volume_mb > 0 && runs > 0, "TIDEWATER_BENCH_MB and TIDEWATER_BENCH_RUNS must be positive");
        Settings { volume_bytes: volume_mb * 1024 * 1024, runs, smoke }
    }
}

/// The medians of one shape's cases and reads.
struct ShapeResult {
    batch_bytes: usize,
    /// Per case: batches written per run and the median duration.
    appends: Vec<(Case, usize, Duration)>,
    read_ceiling: Duration,
    read_log: Duration,
    read_bytes: u64,
}

fn main() {
    let settings = Settings::from_env();
    let root = tempfile::Builder::new()
        .prefix("tidewater-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a temporary directory under the target directory");
    eprintln!(
        "tidewater-log throughput: {} MiB per append run, {} run(s), in {}",
        settings.volume_bytes >> 20,
        settings.runs,
        root.path().display()
    );
    let results: Vec<ShapeResult> =
        SHAPES.iter().map(|shape| measure_shape(shape, &settings, root.path())).collect();
    print_report(&settings, root.path(), &results);
    // `root` is removed on drop, with whatever a failed run may have left.
}

fn measure_shape(shape: &Shape, settings: &Settings, root: &Path) -> ShapeResult {
    let value: Vec<u8> = (0..RECORD_BYTES).map(|index| (index * 31 % 251) as u8).collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = (0..shape.records).map(|_| (None, value.as_slice())).collect();
    let batch = encode_batch(SystemClock.now_ms(), &records);
    // Whole multiples of the writer count, so every case writes exactly the same bytes, and no
    // more than the volume, so with the default 1 GiB segment the log does not roll mid-run.
    let full_count = ((settings.volume_bytes / batch.len() as u64) as usize / CONCURRENT_WRITERS
        * CONCURRENT_WRITERS)
        .max(CONCURRENT_WRITERS);

    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); CASES.len()];
    let read_dir = root.join(format!("read-{}", shape.records));
    settle(root);
    for run in 0..settings.runs {
        // On the virtual disk this was written on, the first gigabyte written after a burst of
        // fsyncs (the previous round's last cases) can take several times as long as the next.
        // An untimed ceiling-sized write takes that hit, so the first pair starts from steady state.
        let warm_up = write_ceiling(root, &batch, full_count);
        settle(root);
        eprintln!(
            "  run {}/{}: {} batches, untimed warm-up write: {:.2} s",
            run + 1,
            settings.runs,
            shape.name,
            warm_up.as_secs_f64()
        );
        for case_idx in run_order(run) {
            let case = &CASES[case_idx];
            let count = case.batch_count(full_count);
            let started = Instant::now();
            let elapsed = match *case {
                Case::Ceiling => write_ceiling(root, &batch, count),
                Case::FsyncBound { batches_per_fsync } => {
                    write_fsync_bound(root, &batch, count, batches_per_fsync)
                }
                Case::Append { fsync, writers } => {
                    let dir = root.join(format!("append-{}-{fsync}-{writers}", shape.records));
                    let elapsed = append_run(&dir, &batch, count, fsync, writers);
                    // The last run's fsync=never log is the one the reads go over.
                    let keep = run + 1 == settings.runs && fsync == FsyncPolicy::Never;
                    if keep {
                        fs::rename(&dir, &read_dir).expect("keep the log for reading");
                    } else {
                        fs::remove_dir_all(&dir).expect("remove the log");
                    }
                    elapsed
                }
            };
            eprintln!(
                "  run {}/{}: {} batches, {}: {:.2} s ({:.2} s with setup)",
                run + 1,
                settings.runs,
                shape.name,
                case.label(),
                elapsed.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            settle(root);
            samples[case_idx].push(elapsed);
        }
    }
    let appends = CASES
        .iter()
        .zip(samples)
        .map(|(case, durations)| (*case, case.batch_count(full_count), median(durations)))
        .collect();

    let log = Log::open(&read_dir, log_config(&batch, FsyncPolicy::Never), Arc::new(SystemClock))
        .expect("reopen the log for reading");
    let segment_files = segment_files(&read_dir);
    let mut buffer = vec![0u8; READ_BUDGET_BYTES.max(batch.len())];
    // One untimed pass of each, so both start from a warm page cache.
    let read_bytes = read_files(&segment_files, &mut buffer);
    assert_eq!(read_log(&log, &mut buffer), read_bytes, "the log reads back every byte of its files");
    let mut ceiling_samples = Vec::new();
    let mut log_samples = Vec::new();
    for _ in 0..settings.runs {
        let started = Instant::now();
        read_files(&segment_files, &mut buffer);
        ceiling_samples.push(started.elapsed());
        let started = Instant::now();
        read_log(&log, &mut buffer);
        log_samples.push(started.elapsed());
    }
    drop(log);
    fs::remove_dir_all(&read_dir).expect("remove the read log");
    ShapeResult {
        batch_bytes: batch.len(),
        appends,
        read_ceiling: median(ceiling_samples),
        read_log: median(log_samples),
        read_bytes,
    }
}

fn log_config(batch: &[u8], fsync: FsyncPolicy) -> LogConfig {
    // The 1024-record batch is a little over Kafka's default 1 MiB limit.
    LogConfig { max_batch_bytes: DEFAULT_MAX_BATCH_BYTES.max(batch.len()), fsync, ..LogConfig::default() }
}

/// The fsync bound: `count` copies of `batch` written with `write()` into a new file, with an
/// `fdatasync` (what the log calls) after every `batches_per_fsync`.
fn write_fsync_bound(dir: &Path, batch: &[u8], count: usize, batches_per_fsync: usize) -> Duration {
    let path = dir.join("fsync-bound.bin");
    let mut file = File::create(&path).expect("create the bound file");
    let started = Instant::now();
    for _ in 0..count / batches_per_fsync {
        for _ in 0..batches_per_fsync {
            file.write_all(batch).expect("write the bound file");
        }
        file.sync_data().expect("fdatasync the bound file");
    }
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(&path).expect("remove the bound file");
    elapsed
}

/// `writers` threads share one log and each `append_durable`s its share of `count` batches; the
/// clock stops once every batch is durable (under fsync=never, after a final `flush`).
fn append_run(dir: &Path, batch: &[u8], count: usize, fsync: FsyncPolicy, writers: usize) -> Duration {
    let log = Arc::new(Log::open(dir, log_config(batch, fsync), Arc::new(SystemClock)).expect("open log"));
    let start_line = Arc::new(Barrier::new(writers + 1));
    let per_writer = count / writers;
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let log = Arc::clone(&log);
            let start_line = Arc::clone(&start_line);
            // Each writer's own copy: `append` rewrites the base offset in place, which is outside
            // the CRC, so one buffer serves every append.
            let mut records = batch.to_vec();
            thread::spawn(move || {
                start_line.wait();
                for _ in 0..per_writer {
                    log.append_durable(&mut records).expect("append");
                }
            })
        })
        .collect();
    start_line.wait();
    let started = Instant::now();
    for thread in threads {
        thread.join().expect("writer thread panicked");
    }
    log.flush().expect("flush");
    let elapsed = started.elapsed();
    assert_eq!(log.size_bytes(), (per_writer * writers * batch.len()) as u64);
    assert_eq!(log.durable_offset(), log.end_offset());
    elapsed
}

/// A sequential consumer: `Log::read` with a 1 MiB budget, each range read into one buffer.
fn read_log(log: &Log, buffer: &mut Vec<u8>) -> u64 {
    let mut offset = log.log_start_offset();
    let mut bytes = 0;
    while let Some(range) = log.read(offset, READ_BUDGET_BYTES, i64::MAX).expect("read") {
        let len = range.len as usize;
        if buffer.len() < len {
            buffer.resize(len, 0);
        }
        range.file.read_exact_at(&mut buffer[..len], range.position).expect("read range");
        bytes += range.len;
        offset = range.next_offset;
    }
    assert_eq!(offset, log.end_offset(), "the reads reached the log end");
    bytes
}

/// The read ceiling: the same files read with `pread` in chunks of the read budget.
fn read_files(paths: &[PathBuf], buffer: &mut [u8]) -> u64 {
    let chunk = &mut buffer[..READ_BUDGET_BYTES];
    let mut bytes = 0;
    for path in paths {
        let file = File::open(path).expect("open segment");
        let size = file.metadata().expect("stat segment").len();
        let mut position = 0;
        while position < size {
            let len = (size - position).min(chunk.len() as u64) as usize;
            file.read_exact_at(&mut chunk[..len], position).expect("read segment");
            position += len as u64;
        }
        bytes += size;
    }
    bytes
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list the log")
        .map(|entry| entry.expect("list the log").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    paths.sort();
    paths
}

/// Indexes into `CASES` for one run: the pairs in order, each pair swapped on odd runs.
fn run_order(run: usize) -> impl Iterator<Item = usize> {
    (0..CASES.len()).map(move |case_idx| if run % 2 == 0 { case_idx } else { case_idx ^ 1 })
}

fn print_report(settings: &Settings, root: &Path, results: &[ShapeResult]) {
    println!();
    println!(
        "tidewater-log throughput: {} MiB per append run, median of {} run(s), {} CPUs, files in {}",
        settings.volume_bytes >> 20,
        settings.runs,
        thread::available_parallelism().map_or(0, |count| count.get()),
        root.parent().unwrap_or(root).display()
    );
    println!("MB = 10^6 bytes, GB = 10^9 bytes; records of {RECORD_BYTES} B values. Every write figure ends");
    println!("with its bytes fsynced. ceiling = the same bytes via write() into one file + one fsync;");
    println!("bound N = N batches per write()+fdatasync round, the best a group commit of N waiting");
    println!("batches can do on this disk (% bound is against the bound of the row's writer count).");
    println!();
    println!(
        "{:<34} {:>18} {:>8} {:>9} {:>10} {:>13} {:>9} {:>8}",
        "write", "batch", "volume", "MB/s", "batches/s", "ceiling MB/s", "% ceiling", "% bound"
    );
    let mut goals: Vec<(String, String, bool)> = Vec::new();
    for (shape, result) in SHAPES.iter().zip(results) {
        let rate_of = |wanted: Case| {
            result
                .appends
                .iter()
                .find(|(case, _, _)| *case == wanted)
                .map(|(_, count, elapsed)| (*count * result.batch_bytes) as f64 / elapsed.as_secs_f64())
        };
        let ceiling_rate = rate_of(Case::Ceiling).expect("the ceiling is measured");
        for (case, count, elapsed) in &result.appends {
            let bytes = (*count * result.batch_bytes) as f64;
            let rate = bytes / elapsed.as_secs_f64();
            let percent = 100.0 * rate / ceiling_rate;
            let (ceiling_text, percent_text) = match case {
                Case::Ceiling => ("-".to_string(), "-".to_string()),
                _ => (format!("{:.0}", ceiling_rate / MEGA), format!("{percent:.0}%")),
            };
            let bound_text = match case {
                Case::Append { fsync: FsyncPolicy::Always, writers } => {
                    rate_of(Case::FsyncBound { batches_per_fsync: *writers })
                        .map_or("-".to_string(), |bound| format!("{:.0}%", 100.0 * rate / bound))
                }
                _ => "-".to_string(),
            };
            println!(
                "{:<34} {:>18} {:>8} {:>9.0} {:>10.0} {:>13} {:>9} {:>8}",
                case.label(),
                format!("{} ({} B)", shape.name, result.batch_bytes),
                mib(bytes as u64),
                rate / MEGA,
                *count as f64 / elapsed.as_secs_f64(),
                ceiling_text,
                percent_text,
                bound_text
            );
            match case {
                Case::Append { fsync: FsyncPolicy::Never, .. } => goals.push((
                    format!("fsync=never >= {GOAL_NEVER_PERCENT:.0}% of ceiling, {} batches", shape.name),
                    format!("{percent:.0}%"),
                    percent >= GOAL_NEVER_PERCENT,
                )),
                Case::Append { fsync: FsyncPolicy::Always, writers } if *writers == CONCURRENT_WRITERS => {
                    goals.push((
                        format!(
                            "fsync=always, {writers} writers >= {GOAL_ALWAYS_CONCURRENT_PERCENT:.0}% of ceiling, {} batches",
                            shape.name
                        ),
                        format!("{percent:.0}%"),
                        percent >= GOAL_ALWAYS_CONCURRENT_PERCENT,
                    ))
                }
                _ => {}
            }
        }
    }
    println!();
    println!(
        "{:<34} {:>18} {:>8} {:>9} {:>10} {:>13} {:>9}",
        "read (page cache)", "batch", "volume", "GB/s", "batches/s", "ceiling GB/s", "% ceiling"
    );
    for (shape, result) in SHAPES.iter().zip(results) {
        let bytes = result.read_bytes as f64;
        let batches = bytes / result.batch_bytes as f64;
        let ceiling_rate = bytes / result.read_ceiling.as_secs_f64();
        let rate = bytes / result.read_log.as_secs_f64();
        let batch = format!("{} ({} B)", shape.name, result.batch_bytes);
        let volume = mib(result.read_bytes);
        println!(
            "{:<34} {:>18} {:>8} {:>9.2} {:>10.0} {:>13} {:>9}",
            "ceiling: pread 1 MiB chunks",
            batch,
            volume,
            ceiling_rate / GIGA,
            batches / result.read_ceiling.as_secs_f64(),
            "-",
            "-"
        );
        println!(
            "{:<34} {:>18} {:>8} {:>9.2} {:>10.0} {:>13.2} {:>8.0}%",
            "Log::read 1 MiB budget + pread",
            batch,
            volume,
            rate / GIGA,
            batches / result.read_log.as_secs_f64(),
            ceiling_rate / GIGA,
            100.0 * rate / ceiling_rate
        );
        goals.push((
            format!("reads >= {GOAL_READ_GB_PER_S:.0} GB/s, {} batches", shape.name),
            format!("{:.2} GB/s", rate / GIGA),
            rate / GIGA >= GOAL_READ_GB_PER_S,
        ));
    }
    println!();
    if settings.smoke {
        println!("smoke run (no --bench argument): goals not judged");
        return;
    }
    println!("{:<62} {:>10}  met", "goal", "figure");
    for (goal, figure, met) in goals {
        println!("{goal:<62} {figure:>10}  {}", if met { "yes" } else { "NO" });
    }
}
