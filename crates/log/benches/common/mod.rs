//! What the log's benchmarks share: settings from the environment, the disk's write ceiling,
//! settling the filesystem between timed runs, medians and sizes. Each bench includes this module
//! (`mod common;`) and uses what it needs.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// True when run by `cargo test --all-targets` rather than `cargo bench` (which passes
/// `--bench`): then a bench runs once on a few MiB as a smoke test and judges no goals.
pub(crate) fn is_smoke_run() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|error| panic!("{name}={text:?}: {error}")),
        Err(_) => default,
    }
}

/// The ceiling: `count` copies of `batch` written with `write()` into a new file, then one fsync.
pub(crate) fn write_ceiling(dir: &Path, batch: &[u8], count: usize) -> Duration {
    let path = dir.join("ceiling.bin");
    let mut file = File::create(&path).expect("create the ceiling file");
    let started = Instant::now();
    for _ in 0..count {
        file.write_all(batch).expect("write the ceiling file");
    }
    file.sync_all().expect("fsync the ceiling file");
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(&path).expect("remove the ceiling file");
    elapsed
}

/// Commits the deletes of the run before to disk, outside any timed region. Otherwise the next
/// case's first fsync would wait for that journal commit (and, on a filesystem mounted with
/// `discard`, for the freed gigabyte to be trimmed), charging one case for another's cleanup.
pub(crate) fn settle(dir: &Path) {
    let handle = File::open(dir).expect("open the bench directory");
    // SAFETY: `syncfs` only reads the file descriptor, which `handle` keeps open for the call.
    let result = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&handle)) };
    assert_eq!(result, 0, "syncfs: {}", std::io::Error::last_os_error());
}

pub(crate) fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib < 10.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{mib:.0} MiB")
    }
}

pub(crate) fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort_unstable();
    let middle = durations.len() / 2;
    if durations.len() % 2 == 0 {
        (durations[middle - 1] + durations[middle]) / 2
    } else {
        durations[middle]
    }
}
