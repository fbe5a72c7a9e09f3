//! `tidewater bench consume`: consume throughput, reading a topic from its beginning as fast as
//! possible (librdkafka's `rdkafka_performance -C`).
//!
//! Each run is a fresh consumer that assigns every partition of the topic (no consumer group,
//! nothing committed) at its log start offset and reads until each partition reaches the high
//! watermark it had when the run began, or until `--count` records. The clock starts at the
//! assignment (the connection is already up: the watermark requests opened it) and stops at the
//! last record, so the figure is value bytes delivered to the application per second. Run right
//! after the topic was written, the broker reads it from the page cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::ClusterArgs;

use super::{Summary, MEGA};

use tidewater_cli::Connection;

/// How long one poll waits; a run fails after `--timeout-ms` without any record.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct ConsumeBenchArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    /// The topic to read.
    #[arg(long, short = 't', default_value = "tidewater-bench")]
    pub(crate) topic: String,
    /// Stop each run after this many records (over all partitions); the whole topic otherwise.
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Runs; the figures are their median.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

#[derive(Debug, Clone, Copy)]
struct RunResult {
    records: u64,
    bytes: u64,
    elapsed: Duration,
}

pub(crate) fn run(args: ConsumeBenchArgs) -> anyhow::Result<()> {
    super::check_runs(args.runs)?;
    let mut results = Vec::with_capacity(args.runs);
    for run_idx in 0..args.runs {
        let result = run_once(&args)?;
        eprintln!(
            "  run {}/{}: {} records, {} bytes in {:.2} s: {:.1} MB/s, {:.0} msgs/s",
            run_idx + 1,
            args.runs,
            result.records,
            result.bytes,
            result.elapsed.as_secs_f64(),
            result.bytes as f64 / MEGA / result.elapsed.as_secs_f64(),
            result.records as f64 / result.elapsed.as_secs_f64()
        );
        results.push(result);
    }
    let mb_per_s: Vec<f64> =
        results.iter().map(|result| result.bytes as f64 / MEGA / result.elapsed.as_secs_f64()).collect();
    let msgs_per_s: Vec<f64> =
        results.iter().map(|result| result.records as f64 / result.elapsed.as_secs_f64()).collect();
    let mut summary = Summary::default();
    summary
        .add("runs", args.runs)
        .add("records", results.first().map_or(0, |result| result.records))
        .add("bytes", results.first().map_or(0, |result| result.bytes))
        .add("mb_per_s", format!("{:.1}", crate::measure::median(&mb_per_s).unwrap_or(0.0)))
        .add("msgs_per_s", format!("{:.0}", crate::measure::median(&msgs_per_s).unwrap_or(0.0)));
    print!("{}", summary.render(args.kv));
    Ok(())
}

fn run_once(args: &ConsumeBenchArgs) -> anyhow::Result<RunResult> {
    let connect = &Connection::new(&args.connect)?;
    let topic = args.topic.as_str();
    let consumer = connect
        .assign_only_consumer(&[("client.id", "tidewater-bench"), ("group.id", "tidewater-bench-consume")])?;
    let partitions = tidewater_cli::topic_partitions(consumer.client(), connect, topic)?;
    // Per partition: the offset to read up to (its high watermark now).
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    let mut expected_records = 0u64;
    for partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id, connect.timeout())
            .with_context(|| format!("reading the offsets of {topic:?} partition {}", partition.id))?;
        if high > low {
            ends.insert(partition.id, high);
            assignment.add_partition_offset(topic, partition.id, Offset::Offset(low))?;
            expected_records += (high - low) as u64;
        }
    }
    anyhow::ensure!(expected_records > 0, "topic {topic:?} is empty: produce to it first");
    let limit = args.count.unwrap_or(u64::MAX);

    let started = Instant::now();
    consumer.assign(&assignment).with_context(|| format!("assigning the partitions of {topic:?}"))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while !ends.is_empty() && records < limit {
        let message = match consumer.poll(POLL_INTERVAL) {
            None => {
                anyhow::ensure!(
                    last_progress.elapsed() < connect.timeout(),
                    "no record from {topic:?} for {:?} after {records} records",
                    connect.timeout()
                );
                continue;
            }
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic:?}")),
        };
        last_progress = Instant::now();
        records += 1;
        bytes += message.payload_len() as u64;
        let partition = message.partition();
        if ends.get(&partition).is_some_and(|&end| message.offset() + 1 >= end) {
            ends.remove(&partition);
        }
    }
    Ok(RunResult { records, bytes, elapsed: started.elapsed() })
}
