//! Nexmark benchmark of the tidewater-sql engine, single-threaded, over in-memory input.
//!
//! Run it with one command (release build):
//!
//! ```text
//! cargo bench -p tidewater-sql --bench nexmark
//! ```
//!
//! What it measures: `Job::push` for every event and `Job::finish` at the end, on one thread, so
//! events/s is events/s per core. Events are generated (deterministically, from a fixed seed) and
//! turned into `serde_json::Value` objects before the clock starts, so neither generation nor
//! JSON parsing is measured; the cost of parsing the same events from bytes is printed on its own
//! line, since a real job pays it too. Each query runs on a fresh job `RUNS` times over the same
//! events; the table shows the median run. A run is sized from a warm-up so it lasts about
//! `TARGET_RUN_SECONDS`. Output rows are counted (and their count printed) so the work is not
//! optimised away.
//!
//! How to read the table: `events/s` is input events per second of one core, that is per second
//! the benchmark's thread spent on a CPU (from /proc/thread-self/schedstat, so that time taken
//! by other processes on a shared machine does not count; `wall ev/s` is the same run per
//! wall-clock second, and the two are equal on an idle machine); `Flink 1.13` is the per-core
//! figure Flink published for the same Nexmark query; `goal 5x` is five times that; `vs goal`
//! is our figure divided by the goal (1.00 or more meets it). `w/ parse` is the rate
//! once parsing the events from JSON bytes on the same core is added (the two times add; the
//! parse rates are the last lines of the table). `outputs/run` is the number of output rows one
//! run produced. The memory lines give the job's state per key with 100,000 keys in open
//! windows: live heap bytes (a counting allocator, exact) and resident set growth (VmRSS from
//! /proc/self/status, what the operating system sees).
//!
//! The generator follows the Nexmark generator of Apache Beam and the Flink port (event numbers
//! split 1 person : 3 auctions : 46 bids per 50; hot auctions and hot bidders; prices
//! `10^(6u) * 100` cents), but only bid events are materialised and pushed: every query here
//! reads bids alone. Flink's figures count every generated event, including the persons and
//! auctions its `bid` view filters out, so comparing bid events/s with them is conservative.
//! Event time advances by `EVENT_SPACING_US` per generated event: 10,000 events per second of
//! event time, Beam's default first-event rate (Flink's runs used 10 million), so that windows
//! open and close many times within a run instead of only at `finish`.
//!
//! Environment knobs (all optional): `NEXMARK_EVENTS` (bids generated, default 2,500,000),
//! `NEXMARK_RUNS` (default 5), `NEXMARK_ONLY` (run only the queries whose name contains it).
//!
//! `cargo bench -p tidewater-sql --bench nexmark -- --write-jsonl DIR` (an absolute path: cargo
//! runs a bench in its crate's directory) measures nothing: it writes the generated bids and
//! readings as JSON lines (`DIR/bids.jsonl`, `DIR/telemetry.jsonl`), which is how
//! scripts/bench-flink gives Tidewater and Apache Flink the same events.
//!
//! Under `cargo test --all-targets` (no `--bench` argument, and a debug build) it is a smoke
//! test: every query once over `SMOKE_N_EVENTS` events and the memory measurement over
//! `SMOKE_MEMORY_KEYS` keys, which checks that each query still compiles and runs without event
//! errors; its figures mean nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Instant;

use serde_json::{json, Value};
use tidewater_sql::{compile, format_timestamp, Job, JobOptions};

/// Bids generated for the throughput runs (a run uses a prefix of them).
const DEFAULT_N_EVENTS: usize = 2_500_000;
/// Timed runs per query; the median is reported.
const DEFAULT_N_RUNS: usize = 5;
/// A run is sized from a warm-up to last about this long.
const TARGET_RUN_SECONDS: f64 = 1.2;
/// Events in the warm-up run that sizes the timed runs.
const WARMUP_EVENTS: usize = 100_000;
/// Distinct keys with open windows in the memory measurement.
const MEMORY_KEYS: usize = 100_000;
/// Events, runs and memory keys of the smoke run under `cargo test`.
const SMOKE_N_EVENTS: usize = 500;
const SMOKE_N_RUNS: usize = 1;
const SMOKE_MEMORY_KEYS: usize = 300;
/// Readings per key in the second memory measurement (state must not grow with them).
const MEMORY_READINGS_PER_KEY: usize = 5;
/// The event time of the first event: 2026-01-01T00:00:00Z.
const BASE_TIME_MS: i64 = 1_767_225_600_000;

// The Nexmark generator's constants (Beam `GeneratorConfig` / `NexmarkConfiguration` defaults).
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDER_RATIO: u64 = 4;
const AUCTION_ID_LEAD: u64 = 10;
const PERSON_ID_LEAD: u64 = 10;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Event time between two generated events (of any kind), in microseconds.
const EVENT_SPACING_US: u64 = 100;

/// The global allocator, counting live heap bytes while `COUNTING` is on (and only then, so the
/// throughput runs pay one relaxed load per allocation, not an atomic add).
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// SplitMix64: a small deterministic generator, so every run sees the same events.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0; the modulo bias is irrelevant here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The id (from 0) of the last person generated at or before event number `event_id`.
fn last_base0_person_id(event_id: u64) -> u64 {
    let epoch = event_id / TOTAL_PROPORTION;
    // Past this epoch's persons, the last person is its last one (Beam's `lastBase0PersonId`).
    let offset = match event_id % TOTAL_PROPORTION {
        offset if offset < PERSON_PROPORTION => offset,
        _ => PERSON_PROPORTION - 1,
    };
    epoch * PERSON_PROPORTION + offset
}

/// The id (from 0) of the last auction generated at or before event number `event_id`.
fn last_base0_auction_id(event_id: u64) -> u64 {
    let mut epoch = event_id / TOTAL_PROPORTION;
    let mut offset = event_id % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before this epoch's first auction: the last one is the previous epoch's.
        epoch = epoch.saturating_sub(1);
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A random auction among those still in flight (or a little ahead), as Beam's generator does.
fn next_base0_auction_id(event_id: u64, rng: &mut Rng) -> u64 {
    let max_auction = last_base0_auction_id(event_id);
    let min_auction = max_auction.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min_auction + rng.below(max_auction - min_auction + 1 + AUCTION_ID_LEAD)
}

/// A random person among the active ones (or a little ahead).
fn next_base0_person_id(event_id: u64, rng: &mut Rng) -> u64 {
    let n_people = last_base0_person_id(event_id) + 1;
    let n_active = n_people.min(NUM_ACTIVE_PEOPLE);
    n_people - n_active + rng.below(n_active + PERSON_ID_LEAD)
}

/// The Nexmark bid stream: the bid events among the generator's event numbers, in order.
struct BidGenerator {
    rng: Rng,
    event_id: u64,
}

impl BidGenerator {
    fn new() -> BidGenerator {
        BidGenerator { rng: Rng(0x4E45_584D_4152_4B21), event_id: 0 }
    }

    fn next_bid(&mut self) -> Value {
        // Skip the person and auction event numbers of each group of 50.
        while self.event_id % TOTAL_PROPORTION < PERSON_PROPORTION + AUCTION_PROPORTION {
            self.event_id += 1;
        }
        let event_id = self.event_id;
        self.event_id += 1;
        let rng = &mut self.rng;
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            last_base0_auction_id(event_id) / HOT_AUCTION_RATIO * HOT_AUCTION_RATIO
        } else {
            next_base0_auction_id(event_id, rng)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
            last_base0_person_id(event_id) / HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1
        } else {
            next_base0_person_id(event_id, rng)
        } + FIRST_PERSON_ID;
        let price = (10f64.powf(rng.unit() * 6.0) * 100.0).round() as u64;
        let channel_idx = rng.below(HOT_CHANNELS.len() as u64 * 2);
        let (channel, url) = match HOT_CHANNELS.get(channel_idx as usize) {
            Some(channel) => (channel.to_string(), format!("https://www.nexmark.com/{channel}/item.htm")),
            None => {
                let channel = format!("channel-{}", rng.below(10_000));
                let url = format!("https://www.nexmark.com/{channel}/item.htm?query=1");
                (channel, url)
            }
        };
        let date_time_ms = BASE_TIME_MS + (event_id * EVENT_SPACING_US / 1000) as i64;
        json!({
            "auction": auction,
            "bidder": bidder,
            "price": price,
            "channel": channel,
            "url": url,
            "dateTime": format_timestamp(date_time_ms),
            "extra": "",
        })
    }
}

/// Simulated device readings for the seed query: `n_devices` devices in turn, one reading every
/// `spacing_ms` of event time, temperatures between 40 and 90 so some groups pass the HAVING.
fn telemetry(n_events: usize, n_devices: usize, spacing_ms: i64, rng: &mut Rng) -> Vec<Value> {
    (0..n_events)
        .map(|event_idx| {
            let time_ms = BASE_TIME_MS + event_idx as i64 * spacing_ms;
            reading(event_idx % n_devices, time_ms, rng)
        })
        .collect()
}

fn reading(device_idx: usize, time_ms: i64, rng: &mut Rng) -> Value {
    let temperature = 40.0 + (rng.unit() * 500.0).round() / 10.0;
    json!({
        "deviceId": format!("device-{device_idx}"),
        "temperature": temperature,
        "ts": format_timestamp(time_ms),
    })
}

struct Query {
    name: &'static str,
    input: &'static str,
    /// Flink 1.13's published events/s per core, where there is one.
    flink_per_core: Option<f64>,
    sql: &'static str,
}

const SEED_SQL: &str = "SELECT deviceId, AVG(temperature) AS avg_temp INTO alerts \
     FROM telemetry TIMESTAMP BY ts \
     GROUP BY deviceId, HoppingWindow(second, 30, 10) HAVING AVG(temperature) > 70";

/// The seed query with one window per device instead of three, to show the cost of one group.
const SEED_TUMBLING_SQL: &str = "SELECT deviceId, AVG(temperature) AS avg_temp INTO alerts \
     FROM telemetry TIMESTAMP BY ts \
     GROUP BY deviceId, TumblingWindow(second, 30) HAVING AVG(temperature) > 70";

const QUERIES: [Query; 8] = [
    Query {
        name: "q0 pass-through",
        input: "bid",
        flink_per_core: Some(155_000.0),
        sql: "SELECT * INTO out FROM bid TIMESTAMP BY dateTime",
    },
    Query {
        name: "q1 currency",
        input: "bid",
        flink_per_core: Some(158_000.0),
        sql: "SELECT auction, bidder, 0.908 * price AS price, dateTime INTO out \
              FROM bid TIMESTAMP BY dateTime",
    },
    Query {
        name: "q2 selection",
        input: "bid",
        flink_per_core: Some(175_000.0),
        sql: "SELECT auction, price INTO out FROM bid TIMESTAMP BY dateTime \
              WHERE auction % 123 = 0",
    },
    // Flink: count bids per auction in 10 s windows hopping by 2 s, then keep the auctions whose
    // count is the window's highest (a join of the counts with their per-window maximum).
    Query {
        name: "q5 hot items",
        input: "bid",
        flink_per_core: Some(22_000.0),
        sql: "WITH AuctionBids AS ( \
                  SELECT auction, COUNT(*) AS num FROM bid TIMESTAMP BY dateTime \
                  GROUP BY auction, HoppingWindow(second, 10, 2)), \
              MaxBids AS ( \
                  SELECT MAX(num) AS maxn FROM AuctionBids GROUP BY TumblingWindow(second, 2)) \
              SELECT a.auction, a.num INTO out \
              FROM AuctionBids a JOIN MaxBids m \
              ON DATEDIFF(millisecond, a, m) BETWEEN 0 AND 0 AND a.num >= m.maxn",
    },
    // Flink: the bids whose price is the highest of their 10 s tumbling window (a join of the
    // bids with the per-window maximum, bid time within [window end - 10 s, window end]).
    Query {
        name: "q7 highest bid",
        input: "bid",
        flink_per_core: Some(12_000.0),
        sql: "WITH MaxPrice AS ( \
                  SELECT MAX(price) AS maxprice FROM bid TIMESTAMP BY dateTime \
                  GROUP BY TumblingWindow(second, 10)) \
              SELECT b.auction, b.price, b.bidder, b.dateTime INTO out \
              FROM bid b TIMESTAMP BY dateTime JOIN MaxPrice m \
              ON DATEDIFF(millisecond, b, m) BETWEEN 0 AND 10000 AND b.price = m.maxprice",
    },
    // The same question in one window statement with ASA's TopOne (one bid per window; ties
    // keep the earliest), for comparison with the join form.
    Query {
        name: "q7 via TopOne",
        input: "bid",
        flink_per_core: Some(12_000.0),
        sql: "SELECT TopOne() OVER (ORDER BY price DESC) AS highest INTO out \
              FROM bid TIMESTAMP BY dateTime GROUP BY TumblingWindow(second, 10)",
    },
    Query { name: "seed avg (1k dev)", input: "telemetry", flink_per_core: None, sql: SEED_SQL },
    // Not a Nexmark query (Flink's published figures have none): MATCH_RECOGNIZE over the same
    // bids, three bids in a row on one auction, each higher than the one before, within 10 s.
    Query {
        name: "match rising bids",
        input: "bid",
        flink_per_core: None,
        sql: "SELECT * INTO out FROM bid TIMESTAMP BY dateTime MATCH_RECOGNIZE ( \
              LIMIT DURATION(second, 10) PARTITION BY auction \
              MEASURES FIRST(A.price) AS fromPrice, LAST(C.price) AS toPrice \
              PATTERN (A B C) DEFINE B AS B.price > A.price, C AS C.price > B.price) AS m",
    },
];

fn compile_or_exit(sql: &str) -> Job {
    match compile(sql, JobOptions::default()) {
        Ok(job) => job,
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                eprintln!("{}:{}: {}", diagnostic.line, diagnostic.column, diagnostic.message);
            }
            eprintln!("in query: {sql}");
            std::process::exit(2);
        }
    }
}

/// Nanoseconds this thread has spent on a CPU, from /proc/thread-self/schedstat (Linux).
fn thread_cpu_ns() -> Option<u64> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    schedstat.split_whitespace().next()?.parse().ok()
}

/// Wall-clock and on-CPU time since it was started. The machine is shared, so rates are per
/// second on the CPU (what "per core" means): time spent descheduled is not the engine's.
struct Stopwatch {
    wall: Instant,
    cpu_ns: Option<u64>,
}

/// Seconds of wall-clock and of CPU (the wall time where CPU time cannot be read).
#[derive(Clone, Copy)]
struct Elapsed {
    wall_seconds: f64,
    cpu_seconds: f64,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch { wall: Instant::now(), cpu_ns: thread_cpu_ns() }
    }

    fn elapsed(&self) -> Elapsed {
        let wall_seconds = self.wall.elapsed().as_secs_f64();
        let cpu_seconds = match (self.cpu_ns, thread_cpu_ns()) {
            (Some(start_ns), Some(end_ns)) => end_ns.saturating_sub(start_ns) as f64 / 1e9,
            _ => wall_seconds,
        };
        Elapsed { wall_seconds, cpu_seconds }
    }
}

/// One run: a fresh job, every event pushed, then `finish`. Returns the time taken and the
/// number of output rows. Per-event errors would mean the query is wrong, so they end the run.
fn run_once(sql: &str, input: &str, events: &[Value]) -> (Elapsed, usize) {
    let mut job = compile_or_exit(sql);
    let mut n_outputs = 0;
    let mut n_errors = 0;
    let stopwatch = Stopwatch::start();
    for (arrival_ms, event) in events.iter().enumerate() {
        let step = job.push(input, 0, event, arrival_ms as i64);
        n_outputs += step.outputs.len();
        n_errors += step.errors.len();
        black_box(step);
    }
    let step = job.finish();
    n_outputs += step.outputs.len();
    n_errors += step.errors.len();
    black_box(step);
    let elapsed = stopwatch.elapsed();
    if n_errors > 0 {
        eprintln!("{n_errors} event errors in query: {sql}");
        std::process::exit(2);
    }
    (elapsed, n_outputs)
}

struct Measured {
    /// Per second on the CPU.
    events_per_second: f64,
    /// Per second of wall-clock time, in the same (median) run.
    wall_events_per_second: f64,
    n_events: usize,
    n_outputs: usize,
}

/// Sizes the run from a warm-up, then takes the median of `n_runs` timed runs.
fn measure(sql: &str, input: &str, events: &[Value], n_runs: usize) -> Measured {
    let warmup = &events[..WARMUP_EVENTS.min(events.len())];
    let (warmup_time, _) = run_once(sql, input, warmup);
    let rate = warmup.len() as f64 / warmup_time.cpu_seconds;
    let n_events = ((rate * TARGET_RUN_SECONDS) as usize).clamp(warmup.len(), events.len());
    let mut runs: Vec<(Elapsed, usize)> =
        (0..n_runs).map(|_| run_once(sql, input, &events[..n_events])).collect();
    runs.sort_by(|left, right| left.0.cpu_seconds.total_cmp(&right.0.cpu_seconds));
    let (elapsed, n_outputs) = runs[runs.len() / 2];
    Measured {
        events_per_second: n_events as f64 / elapsed.cpu_seconds,
        wall_events_per_second: n_events as f64 / elapsed.wall_seconds,
        n_events,
        n_outputs,
    }
}

/// The median rate of parsing the events from their JSON bytes, as a job reading a topic must.
fn measure_parse(events: &[Value], n_runs: usize) -> f64 {
    let lines: Vec<Vec<u8>> = events.iter().map(|event| event.to_string().into_bytes()).collect();
    let mut rates: Vec<f64> = (0..n_runs)
        .map(|_| {
            let stopwatch = Stopwatch::start();
            for line in &lines {
                let parsed: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
                black_box(parsed);
            }
            lines.len() as f64 / stopwatch.elapsed().cpu_seconds
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Resident set size of this process, from /proc/self/status (0 where that is unavailable).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

struct MemoryFigures {
    heap_bytes_per_key: f64,
    rss_bytes_per_key: f64,
}

/// Opens windows for `n_keys` devices with the seed query: every reading is at 5 s of event
/// time, inside the windows ending at 10, 20 and 30 s, so no 30 s window hopping by 10 s closes
/// and each device holds 3 groups (1 with `SEED_TUMBLING_SQL`). Readings are generated one at a time, so only the job's state
/// (and the generator's transient garbage, freed at once) is allocated while counting.
fn measure_memory(sql: &str, n_keys: usize, readings_per_key: usize) -> MemoryFigures {
    let n_events = n_keys * readings_per_key;
    let time_ms = BASE_TIME_MS + 5_000;
    let mut rng = Rng(7);
    let mut job = compile_or_exit(sql);
    let rss_before = resident_bytes();
    LIVE_BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let mut n_outputs = 0;
    for event_idx in 0..n_events {
        let event = reading(event_idx % n_keys, time_ms, &mut rng);
        let step = job.push("telemetry", 0, &event, 0);
        n_outputs += step.outputs.len();
    }
    COUNTING.store(false, Ordering::Relaxed);
    let heap_bytes = LIVE_BYTES.load(Ordering::Relaxed);
    let rss_after = resident_bytes();
    assert_eq!(n_outputs, 0, "no window may close while memory is measured");
    drop(job);
    MemoryFigures {
        heap_bytes_per_key: heap_bytes as f64 / n_keys as f64,
        rss_bytes_per_key: rss_after.saturating_sub(rss_before) as f64 / n_keys as f64,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|text| text.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

/// `-- --write-jsonl DIR`: writes the bids and the readings the table measures (`NEXMARK_EVENTS`
/// of each, from the same seeds) to `DIR/bids.jsonl` and `DIR/telemetry.jsonl`, one JSON object
/// per line, for scripts/bench-flink to feed Tidewater and Apache Flink the same file.
fn write_jsonl(dir: &std::path::Path, n_events: usize) -> std::io::Result<()> {
    use std::io::Write;
    let write = |name: &str, events: &mut dyn Iterator<Item = Value>| -> std::io::Result<()> {
        let path = dir.join(name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for event in events {
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        println!("wrote {n_events} events to {}", path.display());
        Ok(())
    };
    let mut generator = BidGenerator::new();
    write("bids.jsonl", &mut (0..n_events).map(|_| generator.next_bid()))?;
    write("telemetry.jsonl", &mut telemetry(n_events, 1000, 1, &mut Rng(42)).into_iter())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|arg| arg == "--write-jsonl") {
        let Some(dir) = args.get(position + 1) else {
            eprintln!("--write-jsonl needs a directory");
            std::process::exit(2);
        };
        let n_events = env_usize("NEXMARK_EVENTS", DEFAULT_N_EVENTS);
        if let Err(error) = write_jsonl(std::path::Path::new(dir), n_events) {
            eprintln!("writing the events to {dir}: {error}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it.
    let smoke = !args.iter().any(|arg| arg == "--bench");
    let (n_events, n_runs, n_memory_keys) = if smoke {
        (SMOKE_N_EVENTS, SMOKE_N_RUNS, SMOKE_MEMORY_KEYS)
    } else {
        (
            env_usize("NEXMARK_EVENTS", DEFAULT_N_EVENTS),
            env_usize("NEXMARK_RUNS", DEFAULT_N_RUNS),
            MEMORY_KEYS,
        )
    };
    let only = std::env::var("NEXMARK_ONLY").unwrap_or_default();

    // Memory first, while the heap is fresh: freed blocks from the throughput runs would be
    // reused and hide growth from VmRSS.
    let memory_one = measure_memory(SEED_SQL, n_memory_keys, 1);
    let memory_many = measure_memory(SEED_SQL, n_memory_keys, MEMORY_READINGS_PER_KEY);
    let memory_tumbling = measure_memory(SEED_TUMBLING_SQL, n_memory_keys, 1);

    let mut generator = BidGenerator::new();
    let bids: Vec<Value> = (0..n_events).map(|_| generator.next_bid()).collect();
    // 1,000 devices, one reading each per second of event time.
    let readings = telemetry(n_events, 1000, 1, &mut Rng(42));

    // What it costs to parse the same events from JSON bytes, as a job reading a topic must.
    let parse_sample = 500_000.min(n_events);
    let bid_parse_rate = measure_parse(&bids[..parse_sample], n_runs);
    let reading_parse_rate = measure_parse(&readings[..parse_sample], n_runs);

    println!();
    println!(
        "Nexmark on tidewater-sql: one thread, events pre-parsed in memory, median of {n_runs} runs; \
         events/s per second on the CPU"
    );
    println!();
    println!(
        "{:<20} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10} {:>11}",
        "query",
        "events/s",
        "Flink 1.13",
        "goal 5x",
        "vs goal",
        "w/ parse",
        "wall ev/s",
        "events/run",
        "outputs/run"
    );
    for query in &QUERIES {
        if !query.name.contains(only.as_str()) {
            continue;
        }
        let (events, parse_rate) =
            if query.input == "bid" { (&bids, bid_parse_rate) } else { (&readings, reading_parse_rate) };
        let measured = measure(query.sql, query.input, events, n_runs);
        let (anchor, goal, versus) = match query.flink_per_core {
            Some(anchor) => (
                format!("{:.0}k", anchor / 1e3),
                format!("{:.0}k", anchor * 5.0 / 1e3),
                format!("{:.2}", measured.events_per_second / (anchor * 5.0)),
            ),
            None => ("-".to_string(), "-".to_string(), "-".to_string()),
        };
        // Parsing and the engine run one after the other on the same core: their times add.
        let with_parse = 1.0 / (1.0 / measured.events_per_second + 1.0 / parse_rate);
        println!(
            "{:<20} {:>10.0} {:>10} {:>8} {:>8} {:>10.0} {:>10.0} {:>10} {:>11}",
            query.name,
            measured.events_per_second,
            anchor,
            goal,
            versus,
            with_parse,
            measured.wall_events_per_second,
            measured.n_events,
            measured.n_outputs
        );
    }
    for (label, events, rate) in
        [("bids", &bids, bid_parse_rate), ("readings", &readings, reading_parse_rate)]
    {
        println!(
            "{:<20} {:>10.0}  (serde_json::from_slice, ~{} bytes per event)",
            format!("JSON parse, {label}"),
            rate,
            events[0].to_string().len()
        );
    }
    println!();
    println!(
        "Memory, seed query, {n_memory_keys} device ids each in 3 open hopping windows ({} groups):",
        n_memory_keys * 3
    );
    // VmRSS only means something for the first measurement: the later ones reuse the heap
    // pages the first one freed.
    for (label, memory, n_groups_per_key) in [
        ("1 reading per key", &memory_one, 3.0),
        ("5 readings per key", &memory_many, 3.0),
        ("tumbling 30 s instead", &memory_tumbling, 1.0),
    ] {
        let rss = if std::ptr::eq(memory, &memory_one) {
            format!("VmRSS growth {:>5.0} bytes/key", memory.rss_bytes_per_key)
        } else {
            "VmRSS growth -  (reuses the freed heap)".to_string()
        };
        println!(
            "  {label:<22} live heap {:>5.0} bytes/key ({:>3.0} per group)   {rss}",
            memory.heap_bytes_per_key,
            memory.heap_bytes_per_key / n_groups_per_key,
        );
    }
    if smoke {
        println!("smoke run (no --bench argument): every query ran; the figures mean nothing");
    }
}
