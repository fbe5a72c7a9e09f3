//! `tidewater-log-writer`: a load and crash-test tool for the log, not part of the broker.
//!
//! It opens one log and runs writer threads that append batches as fast as the log takes them,
//! until the process is killed. Each batch's bytes follow from its writer thread's id and
//! sequence number alone (`writer_batch`), so whoever reads the log afterwards can rebuild what
//! must be there. After `wait_durable` confirms a batch, the thread prints one line to stdout:
//!
//! ```text
//! durable <base_offset> <thread> <seq>
//! ```
//!
//! Every such line is a promise: that batch survives the process being killed at any moment.
//! The crash test (`tests/it/crash.rs`) runs this binary, SIGKILLs it at random times, reopens
//! the log and holds the log to every promise. A line is written with one `write` on a locked,
//! flushed stdout, so a reader sees whole lines only (pipe writes below `PIPE_BUF` are atomic).
//!
//! With a fifth argument `compact` the log is a compacted one and the process also runs cleaning
//! passes back to back on a thread of its own, so a kill lands anywhere in a pass or its swap.
//! Each batch is then one keyed record (`compact_record`): keys repeat, some records are
//! tombstones, and each value names the run, thread and sequence number that wrote it, a run being
//! the log end offset when the process opened the log. The crash test (`tests/it/crash.rs`) holds
//! such a log to never losing a key's latest record.
//!
//! Usage: `tidewater-log-writer <dir> <fsync> <threads> <segment_bytes> [compact]`, where
//! `<fsync>` is `always`, `never`, `interval` or `interval:<ms>`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use tidewater_log::batch::{encode_batch, encode_records};
use tidewater_log::{CleanOptions, CleanupPolicy, FsyncPolicy, Log, LogConfig, SystemClock};

const USAGE: &str = "usage: tidewater-log-writer <dir> <fsync: always|never|interval|interval:<ms>> \
                     <threads> <segment_bytes> [compact]";
/// More writer threads than this only measures the scheduler.
const THREADS_MAX: u32 = 64;
/// Keys of the compact mode.
const COMPACT_KEYS: u64 = 40;
/// The compact mode's offset map: room for every key (115 of them), so each pass cleans all that
/// is dirty and keeps up with the writers. (Passes that clean part of it are the model test's.)
const COMPACT_DEDUPE_BUFFER_BYTES: usize = 4096;
/// Every this many records of a thread, one is a tombstone.
const COMPACT_TOMBSTONE_EVERY: u64 = 11;

#[derive(Debug)]
struct Args {
    dir: PathBuf,
    fsync: FsyncPolicy,
    n_threads: u32,
    segment_bytes: u64,
    compact: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|args| run(&args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tidewater-log-writer: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (dir, fsync, n_threads, segment_bytes, compact) = match args {
        [dir, fsync, n_threads, segment_bytes] => (dir, fsync, n_threads, segment_bytes, false),
        [dir, fsync, n_threads, segment_bytes, mode] if mode == "compact" => {
            (dir, fsync, n_threads, segment_bytes, true)
        }
        _ => return Err(format!("expected 4 or 5 arguments, got {}\n{USAGE}", args.len())),
    };
    let fsync = fsync.parse::<FsyncPolicy>()?;
    let n_threads = match n_threads.parse::<u32>() {
        Ok(n_threads) if (1..=THREADS_MAX).contains(&n_threads) => n_threads,
        _ => return Err(format!("threads must be a number in [1, {THREADS_MAX}], got {n_threads:?}")),
    };
    // The log checks the range itself when it opens.
    let segment_bytes =
        segment_bytes.parse::<u64>().map_err(|error| format!("segment_bytes {segment_bytes:?}: {error}"))?;
    Ok(Args { dir: PathBuf::from(dir), fsync, n_threads, segment_bytes, compact })
}

/// The log config of the compact mode, which the crash test opens the log with too: every pass
/// cleans whatever is closed, and tombstones go on the pass after the one that first kept them.
fn compact_config(segment_bytes: u64, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes,
        fsync,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 0,
        cleaner_dedupe_buffer_bytes: COMPACT_DEDUPE_BUFFER_BYTES,
        ..LogConfig::default()
    }
}

/// Runs the writers until one fails (the process is normally killed long before that).
fn run(args: &Args) -> Result<(), String> {
    let config = if args.compact {
        compact_config(args.segment_bytes, args.fsync)
    } else {
        LogConfig { segment_bytes: args.segment_bytes, fsync: args.fsync, ..LogConfig::default() }
    };
    let log = Log::open(&args.dir, config, Arc::new(SystemClock))
        .map_err(|error| format!("open {}: {error}", args.dir.display()))?;
    let log = Arc::new(log);
    let run_id = log.end_offset();
    let (failed_tx, failed_rx) = mpsc::channel::<String>();
    for thread_id in 0..args.n_threads {
        let log = log.clone();
        let failed_tx = failed_tx.clone();
        let compact = args.compact;
        std::thread::Builder::new()
            .name(format!("writer-{thread_id}"))
            .spawn(move || {
                let make_batch = |seq| {
                    if compact {
                        compact_record(run_id, thread_id, seq)
                    } else {
                        writer_batch(thread_id, seq)
                    }
                };
                let Err(message) = write_forever(&log, thread_id, make_batch);
                // The receiver lives as long as the process; nothing to do if it is gone.
                let _ = failed_tx.send(format!("writer {thread_id}: {message}"));
            })
            .map_err(|error| format!("spawn writer {thread_id}: {error}"))?;
    }
    if args.compact {
        let log = log.clone();
        let failed_tx = failed_tx.clone();
        std::thread::Builder::new()
            .name("cleaner".to_string())
            .spawn(move || loop {
                if let Err(error) = log.clean(&CleanOptions::default()) {
                    let _ = failed_tx.send(format!("cleaner: {error}"));
                    return;
                }
            })
            .map_err(|error| format!("spawn cleaner: {error}"))?;
    }
    drop(failed_tx);
    // Writers only ever stop by failing; the first failure ends the process.
    match failed_rx.recv() {
        Ok(message) => Err(message),
        Err(mpsc::RecvError) => Err("every writer thread ended without a report".to_string()),
    }
}

/// Appends this thread's batches one after another, announcing each once it is durable.
/// Returns only on failure, including a closed stdout: whoever was listening is gone.
fn write_forever(
    log: &Log,
    thread_id: u32,
    make_batch: impl Fn(u64) -> Vec<u8>,
) -> Result<std::convert::Infallible, String> {
    let stdout = std::io::stdout();
    for seq in 0u64.. {
        let mut batch = make_batch(seq);
        let appended = log.append(&mut batch).map_err(|error| format!("append seq {seq}: {error}"))?;
        log.wait_durable(appended.next_offset)
            .map_err(|error| format!("wait_durable({}): {error}", appended.next_offset))?;
        // Format first, then write the line in one call so it reaches the pipe whole.
        let line = format!("durable {} {thread_id} {seq}\n", appended.base_offset);
        let mut out = stdout.lock();
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|error| format!("write to stdout: {error}"))?;
    }
    Err("sequence numbers ran out".to_string())
}

/// The batch writer `thread_id` appends as its `seq`-th: 1 to 3 records of 16 to 115 bytes,
/// keyed `t<thread>-s<seq>`, every byte a function of the two numbers.
///
/// The crash test rebuilds these bytes with its own copy of this function; if the two ever
/// differ, the first durable batch it checks fails to match, so drift cannot pass unnoticed.
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

/// The one-record batch writer `thread_id` appends as its `seq`-th in the compact mode of run
/// `run_id`: key `k<n>` with `n` cycling through `COMPACT_KEYS`, a tombstone every
/// `COMPACT_TOMBSTONE_EVERY` records, otherwise a value `<run>/<thread>/<seq>/` padded to 40 to
/// 140 bytes. The crash test rebuilds it with its own copy (`compact_record` there).
fn compact_record(run_id: i64, thread_id: u32, seq: u64) -> Vec<u8> {
    let key = format!("k{}", (seq * 7 + u64::from(thread_id) * 3) % COMPACT_KEYS);
    let value = (seq % COMPACT_TOMBSTONE_EVERY != COMPACT_TOMBSTONE_EVERY - 1).then(|| {
        let mut value = format!("{run_id}/{thread_id}/{seq}/").into_bytes();
        value.resize(40 + (seq % 101) as usize, b'.');
        value
    });
    encode_records(1_700_000_000_000 + seq as i64, &[(Some(key.as_bytes()), value.as_deref())], None)
}
