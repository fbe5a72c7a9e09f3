//! What a JOIN with reference data costs the engine, single-threaded, over in-memory input.
//!
//! ```text
//! cargo bench -p tidewater-sql --bench reference
//! ```
//!
//! - Throughput: the per-device threshold alert (`JOIN thresholds t ON r.deviceId = t.deviceId
//!   WHERE r.temperature > t.threshold`) against the same query with the threshold a constant
//!   and no JOIN, over readings of `DEVICES` devices, with a table of as many rows and with one
//!   of `BIG_TABLE_ROWS` rows. Events are `serde_json::Value`s built before the clock starts;
//!   events/s is per second on the benchmark thread's CPU (/proc/thread-self/schedstat), so
//!   other processes on a shared machine do not count. The median of `RUNS` runs is printed.
//! - The table: rows loaded per second through `Job::update_reference` (new keys), updates of
//!   existing keys per second, and live heap bytes per row (a counting allocator, exact) for a
//!   row of three fields (`{"deviceId": "device-123456", "threshold": 35.5, "site": "north"}`).
//!
//! Under `cargo test --all-targets` (no `--bench`) it is a smoke run over a few hundred events
//! and rows, checking that the queries run without errors; its figures mean nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use serde_json::{json, Value};
use tidewater_sql::{compile, Job, JobOptions};

const DEVICES: usize = 10_000;
const BIG_TABLE_ROWS: usize = 1_000_000;
const EVENTS: usize = 2_000_000;
const RUNS: usize = 5;
const SMOKE_DEVICES: usize = 100;
const SMOKE_EVENTS: usize = 500;
const SMOKE_BIG_TABLE_ROWS: usize = 300;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|field| field.parse().ok()))
        .unwrap_or(0)
}

fn job(sql: &str, max_reference_rows: usize) -> Job {
    let options = JobOptions {
        reference_inputs: vec!["thresholds".to_string()],
        max_reference_rows,
        ..JobOptions::default()
    };
    compile(sql, options).unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"))
}

fn device(index: usize) -> String {
    format!("device-{index:06}")
}

fn threshold_row(index: usize) -> Value {
    json!({"deviceId": device(index), "threshold": 35.5, "site": "north"})
}

const JOIN_SQL: &str = "SELECT r.deviceId, r.temperature, t.threshold INTO alerts \
     FROM readings r TIMESTAMP BY ts JOIN thresholds t ON r.deviceId = t.deviceId \
     WHERE r.temperature > t.threshold";
const CONSTANT_SQL: &str = "SELECT deviceId, temperature, 35.5 AS threshold INTO alerts \
     FROM readings TIMESTAMP BY ts WHERE temperature > 35.5";

/// Median events per CPU-second of `runs` runs of `sql` over `readings`, the table holding
/// `table_rows` rows (loaded before the clock starts), and the outputs of one run.
fn throughput(sql: &str, readings: &[Value], table_rows: usize, runs: usize) -> (f64, usize) {
    let mut rates = Vec::new();
    let mut n_outputs = 0;
    for _ in 0..runs {
        let mut job = job(sql, table_rows.max(1));
        if sql.contains("JOIN") {
            for index in 0..table_rows {
                let key = device(index);
                job.update_reference("thresholds", key.as_bytes(), Some(&threshold_row(index)))
                    .unwrap_or_else(|error| panic!("{error}"));
            }
        }
        let started = thread_cpu_ns();
        n_outputs = 0;
        for reading in readings {
            let step = job.push("readings", 0, reading, 0);
            assert!(step.errors.is_empty(), "{:?}", step.errors);
            n_outputs += step.outputs.len();
        }
        n_outputs += job.finish().outputs.len();
        let seconds = (thread_cpu_ns() - started) as f64 / 1e9;
        rates.push(readings.len() as f64 / seconds.max(1e-9));
    }
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], n_outputs)
}

fn main() {
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    let (devices, events, big_rows, runs) = if smoke {
        (SMOKE_DEVICES, SMOKE_EVENTS, SMOKE_BIG_TABLE_ROWS, 1)
    } else {
        (DEVICES, EVENTS, BIG_TABLE_ROWS, RUNS)
    };
    // One reading per device in turn, a second apart; 1 in 100 passes 35.5.
    let readings: Vec<Value> = (0..events)
        .map(|index| {
            let temperature = if index % 100 == 0 { 40.0 } else { 20.0 + (index % 15) as f64 };
            json!({"deviceId": device(index % devices), "temperature": temperature, "ts": 1_767_225_600_000i64 + index as i64})
        })
        .collect();

    println!("{:<44} {:>14} {:>10}", "query", "events/s", "outputs");
    let (constant, constant_outputs) = throughput(CONSTANT_SQL, &readings, 0, runs);
    println!("{:<44} {:>14.0} {:>10}", "constant threshold, no JOIN", constant, constant_outputs);
    let (small, small_outputs) = throughput(JOIN_SQL, &readings, devices, runs);
    println!("{:<44} {:>14.0} {:>10}", format!("JOIN, table of {devices} rows"), small, small_outputs);
    let (big, big_outputs) = throughput(JOIN_SQL, &readings, big_rows, runs);
    println!("{:<44} {:>14.0} {:>10}", format!("JOIN, table of {big_rows} rows"), big, big_outputs);
    assert_eq!(small_outputs, constant_outputs, "the JOIN must alert exactly where the constant does");
    println!(
        "JOIN cost per event: {:.0} ns (small table), {:.0} ns (big table)",
        1e9 / small - 1e9 / constant,
        1e9 / big - 1e9 / constant
    );

    // The table itself: loading, updating, and its memory.
    let rows: Vec<(String, Value)> =
        (0..big_rows).map(|index| (device(index), threshold_row(index))).collect();
    let mut table_job = job(JOIN_SQL, big_rows);
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let started = thread_cpu_ns();
    for (key, row) in &rows {
        table_job
            .update_reference("thresholds", key.as_bytes(), Some(row))
            .unwrap_or_else(|error| panic!("{error}"));
    }
    let load_seconds = (thread_cpu_ns() - started) as f64 / 1e9;
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let started = thread_cpu_ns();
    for (key, row) in &rows {
        table_job
            .update_reference("thresholds", key.as_bytes(), Some(row))
            .unwrap_or_else(|error| panic!("{error}"));
    }
    let update_seconds = (thread_cpu_ns() - started) as f64 / 1e9;
    println!(
        "table of {big_rows} rows: loaded at {:.0} rows/s, updated at {:.0} rows/s, {:.0} heap bytes per row",
        big_rows as f64 / load_seconds.max(1e-9),
        big_rows as f64 / update_seconds.max(1e-9),
        bytes as f64 / big_rows as f64
    );
    assert_eq!(table_job.reference_rows("thresholds"), Some(big_rows));
}
