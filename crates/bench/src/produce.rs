//! `tidewater bench produce`: produce throughput, as librdkafka's `rdkafka_performance -P` measures
//! it.
//!
//! One producer sends records of `--record-bytes` value bytes (no key, no headers, compression
//! none unless asked) as fast as librdkafka takes them, for `--count` records or
//! `--duration-secs`, then flushes. A run's clock starts at the first record handed over and
//! stops when the last one is acknowledged, so the figure is acknowledged bytes per second: with
//! `--acks all` against `tidewater serve` under its default `fsync = always`, bytes on disk. The
//! run is repeated `--runs` times on one producer (its connections are set up by a metadata
//! request before the first run) and the median is reported beside every run's figure. Any
//! record that fails makes the command fail: a throughput of lost records means nothing.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tidewater_client::ClusterArgs;

use super::{Deliveries, Summary, MEGA};
use tidewater_cli::produce::{acks_name, Acks, Compression};
use tidewater_cli::Connection;

/// Records handed to librdkafka between two polls for delivery reports. Delivered records stay
/// in librdkafka's bounded queue until their report is served, so this keeps the queue moving.
const POLL_EVERY_RECORDS: u64 = 1024;

#[derive(Debug, Args)]
pub struct ProduceBenchArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    /// The topic to write to; created with --partitions partitions if it does not exist.
    #[arg(long, short = 't', default_value = "tidewater-bench")]
    pub(crate) topic: String,
    /// Value bytes of every record (no key, no headers).
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(super::RECORD_BYTES_MAX)))]
    pub(crate) record_bytes: u32,
    /// Records per run; without it, each run sends for --duration-secs.
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Seconds each run sends for, when --count is not given.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration_secs: f64,
    /// Acknowledgements each record waits for: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub(crate) acks: Acks,
    /// librdkafka linger.ms: how long a batch waits for more records before it is sent.
    #[arg(long, default_value_t = 5)]
    pub(crate) linger_ms: u32,
    /// librdkafka batch.size: the most bytes in one partition's batch.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) batch_bytes: u32,
    /// Partitions of the topic if it has to be created. Records carry no key, so librdkafka's
    /// partitioner spreads them over every partition of the topic.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub(crate) partitions: i32,
    /// Compression of record batches.
    #[arg(long, short = 'z', default_value = "none")]
    pub(crate) compression: Compression,
    /// Runs; the figures are their median.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

/// One run's outcome.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    records: u64,
    elapsed: Duration,
}

pub(crate) fn run(args: ProduceBenchArgs) -> anyhow::Result<()> {
    let duration = super::check_seconds("--duration-secs", args.duration_secs, false)?;
    super::check_runs(args.runs)?;
    let connect = Connection::new(&args.connect)?;
    let config =
        super::producer_config(&connect, args.acks, args.linger_ms, args.batch_bytes, args.compression);
    let producer: BaseProducer<Deliveries> =
        config.create_with_context(Deliveries::default()).context("creating the Kafka producer")?;
    let partitions = super::ensure_topic(producer.client(), &connect, &args.topic, args.partitions)?;
    let payload = super::payload(args.record_bytes as usize);
    let limit = match args.count {
        Some(count) => format!("{count} records"),
        None => format!("{} s", args.duration_secs),
    };
    eprintln!(
        "bench produce: topic {:?} ({} partitions), {} B records, acks={}, linger.ms={}, batch.size={}, \
         {limit} per run, {} runs",
        args.topic,
        partitions.len(),
        args.record_bytes,
        acks_name(args.acks),
        args.linger_ms,
        args.batch_bytes,
        args.runs
    );

    let mut results = Vec::with_capacity(args.runs);
    for run_idx in 0..args.runs {
        let result = run_once(&producer, &args, &payload, duration, partitions.len() == 1)?;
        let bytes = result.records as f64 * f64::from(args.record_bytes);
        eprintln!(
            "  run {}/{}: {} records in {:.2} s: {:.1} MB/s, {:.0} msgs/s",
            run_idx + 1,
            args.runs,
            result.records,
            result.elapsed.as_secs_f64(),
            bytes / MEGA / result.elapsed.as_secs_f64(),
            result.records as f64 / result.elapsed.as_secs_f64()
        );
        results.push(result);
    }

    let mb_per_s: Vec<f64> = results
        .iter()
        .map(|result| {
            result.records as f64 * f64::from(args.record_bytes) / MEGA / result.elapsed.as_secs_f64()
        })
        .collect();
    let msgs_per_s: Vec<f64> =
        results.iter().map(|result| result.records as f64 / result.elapsed.as_secs_f64()).collect();
    let mut summary = Summary::default();
    summary
        .add("record_bytes", args.record_bytes)
        .add("acks", acks_name(args.acks))
        .add("linger_ms", args.linger_ms)
        .add("partitions", partitions.len())
        .add("runs", args.runs)
        .add("records", results.iter().map(|result| result.records).sum::<u64>())
        .add("mb_per_s", format!("{:.1}", crate::measure::median(&mb_per_s).unwrap_or(0.0)))
        .add("msgs_per_s", format!("{:.0}", crate::measure::median(&msgs_per_s).unwrap_or(0.0)))
        .add("mb_per_s_runs", join(&mb_per_s, 1))
        .add("msgs_per_s_runs", join(&msgs_per_s, 0));
    print!("{}", summary.render(args.kv));
    Ok(())
}

/// Sends one run's records and waits for every acknowledgement.
fn run_once(
    producer: &BaseProducer<Deliveries>,
    args: &ProduceBenchArgs,
    payload: &[u8],
    duration: Duration,
    single_partition: bool,
) -> anyhow::Result<RunResult> {
    let delivered_before = producer.context().delivered();
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let done = match args.count {
            Some(count) => sent >= count,
            // Reading the clock every few records is plenty at these rates.
            None => sent % 64 == 0 && started.elapsed() >= duration,
        };
        if done {
            break;
        }
        // With one partition the record names it; otherwise the partitioner picks.
        let mut record = BaseRecord::<(), [u8]>::to(&args.topic).payload(payload);
        if single_partition {
            record = record.partition(0);
        }
        super::send(producer, record)?;
        sent += 1;
        if sent % POLL_EVERY_RECORDS == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    super::flush(producer, args.connect.timeout())?;
    let elapsed = started.elapsed();
    producer.context().check_no_failures()?;
    let delivered = producer.context().delivered() - delivered_before;
    anyhow::ensure!(
        delivered == sent && producer.in_flight_count() == 0,
        "{sent} records sent but {delivered} acknowledged"
    );
    Ok(RunResult { records: sent, elapsed })
}

/// `1.5,2.25` with `decimals` digits after the point.
fn join(values: &[f64], decimals: usize) -> String {
    values.iter().map(|value| format!("{value:.decimals$}")).collect::<Vec<_>>().join(",")
}
